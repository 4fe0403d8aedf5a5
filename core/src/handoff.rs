//! How the pager hands work between CPUs without losing a wake-up: a blocked vCPU's wait for
//! its page ([`WaitCell`]), the vCPUs to kick once the pager lock is released ([`CpuSet`]),
//! and the CPUs that sleep until it is released ([`LockSleepers`]).
//!
//! A CPU that waits sleeps in `wfi`, and is woken by an SGI (a *kick*) that stays pending until
//! it is taken, so a kick sent before the `wfi` still ends it. The hypervisor's loops follow
//! two rules, which the loom models below check under the C11 memory model (`cargo test` with
//! `RUSTFLAGS="--cfg loom"`, run by `cargo xtask test`'s host tests):
//!
//! * **The waiter** takes its pending interrupts first, then looks at its [`WaitCell`], and
//!   sleeps only if the fault is still unresolved. **The completer** resolves the cell under
//!   the pager lock, notes the vCPU in the kick set, and kicks it after releasing the lock. A
//!   resolution that lands after the waiter looked comes with a kick that ends its `wfi`.
//! * **A lock sleeper** announces itself in [`LockSleepers`], tries the lock once more, and
//!   sleeps only if it is still taken. **The releaser** unlocks, then takes the sleepers
//!   ([`LockSleepers::after_release`], a `SeqCst` fence first) and kicks them. With the fence
//!   between the announcement and the retry on one side and between the unlock and the read of
//!   the sleepers on the other, either the sleeper's retry finds the lock free or the releaser
//!   finds the sleeper.
//!
//! The tests also show that the models catch the mistakes these rules prevent: a waiter that
//! takes its interrupts after looking at its cell, and a releaser that reads the sleepers
//! before unlocking, both lose a wake-up there.

#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

/// How a blocked fault ended, for the vCPU that waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Retry the access: the page is mapped (or the fault is taken again).
    Retry,
    /// The page could not be read back: inject a synchronous external abort for the access.
    Abort,
}

const RUNNING: u8 = 0;
const WAITING: u8 = 1;
const RESUME: u8 = 2;
const ABORT: u8 = 3;

/// One vCPU's blocked fault: `Running` (no fault waits) → `Waiting` (set by the vCPU under the
/// pager lock when its fault blocks) → resolved (set by whichever CPU completes the page,
/// under the lock) → `Running` again when the vCPU takes the resolution.
pub struct WaitCell(AtomicU8);

impl WaitCell {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        WaitCell(AtomicU8::new(RUNNING))
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        WaitCell(AtomicU8::new(RUNNING))
    }

    /// The vCPU's fault blocked (under the pager lock, before it is released).
    pub fn block(&self) {
        self.0.store(WAITING, Ordering::Release);
    }

    /// The page of the vCPU's fault is back, or failed for good (under the pager lock). The
    /// caller then kicks the vCPU once the lock is released ([`CpuSet`]).
    pub fn resolve(&self, resolution: Resolution) {
        let state = match resolution {
            Resolution::Retry => RESUME,
            Resolution::Abort => ABORT,
        };
        self.0.store(state, Ordering::Release);
    }

    /// The waiting vCPU looks (after taking its pending interrupts): the resolution, which
    /// ends the wait, or `None` if it must sleep until a kick.
    pub fn take(&self) -> Option<Resolution> {
        let resolution = match self.0.load(Ordering::Acquire) {
            RESUME => Resolution::Retry,
            ABORT => Resolution::Abort,
            _ => return None,
        };
        self.0.store(RUNNING, Ordering::Relaxed);
        Some(resolution)
    }
}

#[cfg(not(loom))]
impl Default for WaitCell {
    fn default() -> Self {
        Self::new()
    }
}

/// A set of CPUs (or vCPUs), bit `n` for number `n` < 64: those to kick once the pager lock is
/// released. Filled under the lock, taken by the releaser after it unlocked.
pub struct CpuSet(AtomicU64);

impl CpuSet {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        CpuSet(AtomicU64::new(0))
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        CpuSet(AtomicU64::new(0))
    }

    /// Add the numbers in `mask`.
    pub fn add(&self, mask: u64) {
        self.0.fetch_or(mask, Ordering::Relaxed);
    }

    /// Take every number added so far, leaving the set empty.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::AcqRel)
    }
}

#[cfg(not(loom))]
impl Default for CpuSet {
    fn default() -> Self {
        Self::new()
    }
}

/// The physical CPUs sleeping until the pager lock is released (bit `n`: CPU `n`).
pub struct LockSleepers(AtomicU64);

impl LockSleepers {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        LockSleepers(AtomicU64::new(0))
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        LockSleepers(AtomicU64::new(0))
    }

    /// CPU `cpu` is about to sleep for the lock. It must try the lock once more afterwards,
    /// and sleep only if that fails.
    pub fn announce(&self, cpu: usize) {
        self.0.fetch_or(1 << cpu, Ordering::SeqCst);
    }

    /// CPU `cpu` got the lock after all, or woke up.
    pub fn withdraw(&self, cpu: usize) {
        self.0.fetch_and(!(1 << cpu), Ordering::Relaxed);
    }

    /// The releaser, after unlocking: the CPUs to kick.
    pub fn after_release(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.0.swap(0, Ordering::AcqRel)
    }
}

#[cfg(not(loom))]
impl Default for LockSleepers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, loom))]
mod models {
    //! The hand-over protocols against loom's exploration of every interleaving and every
    //! outcome the memory model allows. A kick is an SGI: a per-CPU pending flag set by the
    //! kicker (the GIC orders it after the kicker's earlier stores, as `dsb` + `msr icc_sgi1r`
    //! do) and cleared when the CPU takes its interrupts; `wfi` returns once one is pending.
    //! A lost wake-up leaves a CPU in `wfi` forever, which loom reports as a deadlock, and the
    //! test fails.
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::{Condvar, Mutex};
    use loom::thread;
    use std::boxed::Box;

    /// Each CPU's pending kick. The GIC's pending state is not memory that could be seen late,
    /// so it is modelled behind a lock, with a condition variable for `wfi`; the lock also
    /// orders the kicker's earlier stores before the kick, as `dsb` before `msr icc_sgi1r` does.
    struct Gic {
        pending: [Mutex<bool>; 2],
        raised: [Condvar; 2],
    }

    impl Gic {
        fn new() -> Self {
            Gic { pending: [Mutex::new(false), Mutex::new(false)], raised: [Condvar::new(), Condvar::new()] }
        }
        /// Send CPU `cpu` a kick SGI: it becomes pending, and ends the CPU's `wfi`.
        fn kick(&self, cpu: usize) {
            *self.pending[cpu].lock().unwrap() = true;
            self.raised[cpu].notify_all();
        }
        /// Take this CPU's pending interrupts (`gic::drain`).
        fn drain(&self, cpu: usize) {
            *self.pending[cpu].lock().unwrap() = false;
        }
        /// Sleep until an interrupt is pending (it stays pending until drained).
        fn wfi(&self, cpu: usize) {
            let mut pending = self.pending[cpu].lock().unwrap();
            while !*pending {
                pending = self.raised[cpu].wait(pending).unwrap();
            }
        }
    }

    struct Pager {
        lock: Mutex<()>,
        cell: WaitCell,
        kicks: CpuSet,
        gic: Gic,
    }

    /// The waiter (vCPU 0 on CPU 0): its fault blocked under the lock; it waits, taking its
    /// interrupts before it looks at the cell (or after, with `drain_first` false: the bug).
    fn wait(p: &Pager, drain_first: bool) -> Resolution {
        loop {
            if drain_first {
                p.gic.drain(0);
            }
            let taken = p.cell.take();
            if !drain_first {
                p.gic.drain(0);
            }
            if let Some(resolution) = taken {
                return resolution;
            }
            p.gic.wfi(0);
        }
    }

    /// The completer (CPU 1): resolves the cell under the lock, kicks after releasing it.
    fn complete(p: &Pager) {
        let guard = p.lock.lock().unwrap();
        p.cell.resolve(Resolution::Retry);
        p.kicks.add(1 << 0);
        drop(guard);
        let mut kicks = p.kicks.take();
        while kicks != 0 {
            let vcpu = kicks.trailing_zeros() as usize;
            kicks &= kicks - 1;
            p.gic.kick(vcpu);
        }
    }

    /// Shared state lives for the whole run and threads are detached, so that a deadlock's
    /// panic unwinds through nothing of loom's (its handles cannot be dropped then).
    fn leak<T>(value: T) -> &'static T {
        Box::leak(Box::new(value))
    }

    fn wait_and_complete(drain_first: bool) {
        loom::model(move || {
            let p = leak(Pager { lock: Mutex::new(()), cell: WaitCell::new(), kicks: CpuSet::new(), gic: Gic::new() });
            {
                let _guard = p.lock.lock().unwrap();
                p.cell.block();
            }
            let done = leak(AtomicBool::new(false));
            drop(thread::spawn(move || {
                complete(p);
                done.store(true, Ordering::Release);
            }));
            assert_eq!(wait(p, drain_first), Resolution::Retry);
            assert_eq!(p.cell.take(), None, "the waiter took the resolution");
        });
    }

    #[test]
    fn a_resolved_wait_always_ends() {
        wait_and_complete(true);
    }

    #[test]
    #[should_panic]
    fn a_waiter_that_looks_before_taking_its_interrupts_can_sleep_forever() {
        wait_and_complete(false);
    }

    struct Lock {
        lock: Mutex<()>,
        sleepers: LockSleepers,
        gic: Gic,
    }

    /// CPU 1 wants the lock: it tries, announces, tries again, sleeps until kicked.
    fn lock_or_sleep(l: &Lock) {
        loop {
            if l.lock.try_lock().is_ok() {
                return;
            }
            l.sleepers.announce(1);
            if l.lock.try_lock().is_ok() {
                l.sleepers.withdraw(1);
                return;
            }
            l.gic.wfi(1);
            l.sleepers.withdraw(1);
            l.gic.drain(1);
        }
    }

    fn hold_and_release(read_sleepers_first: bool) {
        loom::model(move || {
            let l = leak(Lock { lock: Mutex::new(()), sleepers: LockSleepers::new(), gic: Gic::new() });
            let guard = l.lock.lock().unwrap();
            let got = leak(AtomicBool::new(false));
            let wants = thread::spawn(move || {
                lock_or_sleep(l);
                got.store(true, Ordering::Release);
            });
            drop(wants);
            // CPU 0 releases the lock, then kicks the sleepers (or reads them first: the bug);
            // it may be preempted in between (`yield_now`).
            let sleepers = if read_sleepers_first {
                let sleepers = l.sleepers.after_release();
                thread::yield_now();
                drop(guard);
                sleepers
            } else {
                drop(guard);
                thread::yield_now();
                l.sleepers.after_release()
            };
            if sleepers & (1 << 1) != 0 {
                l.gic.kick(1);
            }
        });
    }

    #[test]
    fn a_lock_sleeper_always_gets_the_lock() {
        hold_and_release(false);
    }

    #[test]
    #[should_panic]
    fn a_releaser_that_reads_the_sleepers_before_unlocking_can_lose_one() {
        hold_and_release(true);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_wait_goes_round_once() {
        let cell = WaitCell::new();
        assert_eq!(cell.take(), None, "nothing waits");
        cell.block();
        assert_eq!(cell.take(), None, "not resolved yet");
        cell.resolve(Resolution::Abort);
        assert_eq!(cell.take(), Some(Resolution::Abort));
        assert_eq!(cell.take(), None, "taken once");
        cell.block();
        cell.resolve(Resolution::Retry);
        assert_eq!(cell.take(), Some(Resolution::Retry));
    }

    #[test]
    fn sets_are_taken_whole() {
        let kicks = CpuSet::new();
        kicks.add(1 << 3);
        kicks.add(1 << 0 | 1 << 3);
        assert_eq!(kicks.take(), 0b1001);
        assert_eq!(kicks.take(), 0);
        let sleepers = LockSleepers::new();
        sleepers.announce(2);
        sleepers.announce(5);
        sleepers.withdraw(2);
        assert_eq!(sleepers.after_release(), 1 << 5);
        assert_eq!(sleepers.after_release(), 0);
    }
}
