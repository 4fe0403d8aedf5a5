//! The hypervisor's spin lock: `spin::Mutex` relaxing with the `yield` hint
//! ([`crate::arch::spin_hint`]), so that under QEMU's round robin a CPU waiting for a lock lets
//! the holder run instead of spinning for the rest of its time slice; and each lock has its
//! place in the lock hierarchy (`asyncpf_core::lockorder`, docs/architecture.md "Locks"), checked
//! at every acquisition.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use asyncpf_core::lockorder::{Held, Inversion, Level};

use crate::arch;
use crate::arch::boot::MAX_CPUS;

/// Relax by [`crate::arch::spin_hint`].
pub struct YieldHint;

impl spin::RelaxStrategy for YieldHint {
    #[inline(always)]
    fn relax() {
        crate::arch::spin_hint();
    }
}

/// The levels each physical CPU holds ([`Held`]'s bits), written by that CPU only. The
/// hypervisor runs with interrupts masked, so nothing interleaves on one CPU.
static HELD: [AtomicU16; MAX_CPUS] = [const { AtomicU16::new(0) }; MAX_CPUS];

/// Whether acquisitions are checked (hypervisor option `lockcheck`, default on): set by CPU 0
/// before the other CPUs start, then never changed.
static CHECK: AtomicBool = AtomicBool::new(true);

/// Check the lock hierarchy from now on, or not (`lockcheck=0`: the measured runs, where the
/// check's cost, about 550 instructions per asynchronous fault, would count in the figures).
/// Called once, on CPU 0, while no lock is held.
pub fn set_lock_check(on: bool) {
    CHECK.store(on, Ordering::Relaxed);
}

/// This CPU's entry of [`HELD`].
#[inline(always)]
fn held_here() -> &'static AtomicU16 {
    &HELD[arch::cpu_index() % MAX_CPUS]
}

/// Record that this CPU takes a lock of `level`; stop the machine on an inversion.
#[inline(always)]
fn note_acquire(level: Level) {
    if !CHECK.load(Ordering::Relaxed) {
        return;
    }
    let here = held_here();
    match Held::from_bits(here.load(Ordering::Relaxed)).acquire(level) {
        Ok(held) => here.store(held.bits(), Ordering::Relaxed),
        Err(inversion) => inverted(here, inversion),
    }
}

/// Stop the machine on a lock-order inversion (kept out of line: it never happens in a correct
/// hypervisor, and the formatting would bloat every lock site).
#[cold]
#[inline(never)]
fn inverted(here: &AtomicU16, inversion: Inversion) -> ! {
    // The panic handler prints with the console's unordered `try_lock`, so this cannot recurse.
    here.store(0, Ordering::Relaxed);
    panic!("{inversion}")
}

/// A spin lock whose waiters yield ([`YieldHint`]), at `level` in the lock hierarchy.
pub struct Mutex<T> {
    level: Level,
    inner: spin::mutex::Mutex<T, YieldHint>,
}

/// Holds a [`Mutex`]; releases it, and its level, when dropped.
pub struct MutexGuard<'a, T> {
    level: Level,
    inner: spin::mutex::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    pub const fn new(level: Level, value: T) -> Self {
        Mutex { level, inner: spin::mutex::Mutex::new(value) }
    }

    /// Take the lock, spinning; the hierarchy is checked first, so an inversion stops the
    /// machine instead of deadlocking it.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        note_acquire(self.level);
        MutexGuard { level: self.level, inner: self.inner.lock() }
    }

    /// Take the lock if it is free. Checked like [`Self::lock`]: a loop of `try_lock` waits as
    /// surely as `lock` does.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        note_acquire(self.level);
        match self.inner.try_lock() {
            Some(inner) => Some(MutexGuard { level: self.level, inner }),
            None if !CHECK.load(Ordering::Relaxed) => None,
            None => {
                let here = held_here();
                here.store(Held::from_bits(here.load(Ordering::Relaxed)).release(self.level).bits(), Ordering::Relaxed);
                None
            }
        }
    }

    /// Take the lock if it is free, without the hierarchy: only for the panic path, which must
    /// print whatever this CPU holds.
    pub fn try_lock_unordered(&self) -> Option<spin::mutex::MutexGuard<'_, T>> {
        self.inner.try_lock()
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if !CHECK.load(Ordering::Relaxed) {
            return;
        }
        let here = held_here();
        here.store(Held::from_bits(here.load(Ordering::Relaxed)).release(self.level).bits(), Ordering::Relaxed);
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}
