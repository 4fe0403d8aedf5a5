//! The pager lock's protocol: taking it (spinning, then sleeping until the holder's kick),
//! releasing it (the deferred work after the unlock, in its order: lock sleepers, page_ready,
//! the doorbell, woken vCPUs), and the disk poll that an interrupt leaves to the holder. The
//! hand-over rules are `asyncpf_core::handoff`'s, model-checked there.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{fence, Ordering};

use asyncpf_core::latency::TimeBase;

use super::{AsyncCompletion, Locked, Pager, APF_DONE_BATCH, LOCK_SPINS, SLEEP_LOCK};
use crate::backing::{clock, Ticks};
use crate::sync::MutexGuard;
use crate::{arch, gic, vcpus, vgic};

impl Pager {
    /// Handle `intid` if it is the pager's (the disk's SPI or the EL2 timer); false otherwise.
    /// Called from every `gic::drain` loop of a CPU that runs a vCPU.
    pub fn handle_interrupt(&self, intid: u32) -> bool {
        if intid == self.disk_intid {
            // Lower the line first (acknowledged before the used ring is read, so a later
            // completion raises it again); then poll, or leave that to the lock's holder.
            self.disk_registers.acknowledge_interrupt();
            self.device_irqs.fetch_add(1, Ordering::Relaxed);
        } else if intid == gic::PPI_HYP_TIMER {
            // Level-sensitive: lower it here. If the lock is taken, its holder polls, and arms
            // its own timer for the next deadline; a waiting CPU re-arms its own anyway.
            clock::set_el2_timer(None);
            self.timer_irqs.fetch_add(1, Ordering::Relaxed);
        } else {
            return false;
        }
        self.poll_wanted.store(true, Ordering::Relaxed);
        self.poll();
        true
    }

    /// Run `f` on the backing disk under the pager's lock (the trace's write-out, when the
    /// machine ends).
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub fn with_disk<R>(&self, f: impl FnOnce(&mut crate::backing::BackingStore) -> R) -> R {
        f(&mut self.lock().disk)
    }

    /// Take the lock, spinning for it (before the VM runs, and at its end).
    pub(super) fn lock(&self) -> PagerGuard<'_> {
        PagerGuard { pager: self, locked: Some(self.locked.lock()) }
    }

    /// Take the lock; if it stays taken for [`LOCK_SPINS`] tries, sleep in `wfi` until its
    /// holder kicks this CPU on release ([`Self::lock_sleepers`]), handling the interrupts that
    /// arrive meanwhile (the pager's here, the others with `on_interrupt`).
    pub(super) fn lock_or_sleep(&self, on_interrupt: &mut impl FnMut(u32)) -> PagerGuard<'_> {
        let me = arch::cpu_index();
        loop {
            for _ in 0..LOCK_SPINS {
                if let Some(locked) = self.locked.try_lock() {
                    return PagerGuard { pager: self, locked: Some(locked) };
                }
                arch::spin_hint();
            }
            // Announce the sleep, then look once more: with the releaser's fence between its
            // unlock and its read of the sleepers, it sees this bit or this `try_lock` sees the
            // lock released.
            self.lock_sleepers.announce(me);
            if let Some(locked) = self.locked.try_lock() {
                self.lock_sleepers.withdraw(me);
                return PagerGuard { pager: self, locked: Some(locked) };
            }
            // A listed virtual interrupt would end `wfi` at once (see `vgic::park`).
            let saved = vgic::park();
            let before = clock::now();
            self.idle_wfi();
            self.count_sleep(SLEEP_LOCK, clock::now().saturating_sub(before).0);
            vgic::unpark(saved);
            self.lock_sleepers.withdraw(me);
            gic::drain(|intid| {
                if !self.handle_interrupt(intid) {
                    on_interrupt(intid)
                }
            });
        }
    }

    /// Poll the disk if someone asked for it ([`Self::poll_wanted`]) and the lock is free; if
    /// it is taken, its holder polls after releasing it.
    pub(super) fn poll(&self) {
        loop {
            // A requester stores the flag and then gets here; a holder releases the lock and
            // then gets here. With a fence between each one's store and load, the holder sees
            // the flag or the requester's `try_lock` sees the lock released (or a later
            // holder's): no request is lost.
            fence(Ordering::SeqCst);
            if !self.poll_wanted.load(Ordering::Relaxed) {
                return;
            }
            let Some(mut locked) = self.locked.try_lock() else {
                self.poll_contended.fetch_add(1, Ordering::Relaxed);
                return;
            };
            self.poll_wanted.store(false, Ordering::Relaxed);
            self.process_completions(&mut locked);
            self.release(locked);
        }
    }

    /// Release the lock, then ring the disk's doorbell for requests queued under it and kick
    /// the vCPUs woken under it.
    pub(super) fn release(&self, mut locked: MutexGuard<'_, Locked>) {
        // Virtual time: requests go to the device here, and what it finished comes off the
        // virtqueue; what that costs depends on the host, and with `hide` it is hidden (up to
        // the doorbell, below).
        let mut device_ticks = 0;
        let doorbell = if self.time_base == TimeBase::Virtual {
            let start = clock::now();
            locked.disk.take_finished();
            let doorbell = locked.disk.take_doorbell();
            device_ticks = clock::now().saturating_sub(start).0;
            doorbell
        } else {
            locked.disk.take_doorbell()
        };
        let due = locked.disk.earliest_due().map_or(u64::MAX, |t| t.0);
        self.earliest_due.store(due, Ordering::Release);
        self.unreadable_pages.store(locked.engine.unreadable_pages() as u64, Ordering::Release);
        if self.time_base == TimeBase::Virtual && !self.hide {
            // Every outstanding deadline is covered by a timer (the earliest one, on the CPU
            // that last released the lock), or by none while time is held.
            // While model time is pinned the timer waits: `close_window` arms it (a timer armed
            // now would not know the ticks hidden meanwhile, and could fire at once, again and
            // again).
            let pinned = self.pinned.load(Ordering::Acquire) != u64::MAX;
            let at = (due != u64::MAX && !pinned).then_some(Ticks(due));
            self.set_timer(at);
        }
        let mut apf_done = [0u32; APF_DONE_BATCH];
        let count = locked.apf_done.len().min(APF_DONE_BATCH);
        apf_done[..count].copy_from_slice(&locked.apf_done[..count]);
        locked.apf_done.drain(..count);
        let more_done = !locked.apf_done.is_empty();
        drop(locked);
        if more_done {
            // The rest goes out with the next release: ask for one.
            self.poll_wanted.store(true, Ordering::Relaxed);
        }
        // Sleepers for the lock first: they wait for the lock, not for what follows. The fence
        // in `after_release` pairs with `lock_or_sleep`'s announcement (`asyncpf_core::handoff`).
        let me = arch::cpu_index();
        self.wake_cpus(self.lock_sleepers.after_release(), me);
        if count > 0 {
            if let Some(complete) = self.async_completion.get() {
                // Posting page_ready costs the same in every run: charged (`close_window`,
                // `leave_held`).
                let started = (self.hide || self.hold_hiding).then(clock::now);
                for &waiter in &apf_done[..count] {
                    complete(self, waiter);
                }
                if let Some(started) = started {
                    self.charge.fetch_add(clock::now().saturating_sub(started).0, Ordering::Relaxed);
                }
            }
        }
        // (Timed whether or not there is anything to ring: whether there is depends on the host.)
        let start = self.hide.then(clock::now);
        if let Some(queue) = doorbell {
            self.disk_registers.notify_queue(queue);
        }
        if let Some(start) = start {
            device_ticks += clock::now().saturating_sub(start).0;
        }
        if self.hide && self.pinned.load(Ordering::Acquire) == u64::MAX {
            // (While pinned, the window hides it anyway.)
            self.hidden.fetch_add(device_ticks, Ordering::AcqRel);
        }
        let mut vcpus = self.kicks.take();
        let mut cpus = 0;
        while vcpus != 0 {
            let vcpu = vcpus.trailing_zeros() as usize;
            vcpus &= vcpus - 1;
            cpus |= 1 << vcpus::pcpu_of(vcpu);
        }
        self.wake_cpus(cpus, me);
    }

    /// Kick the physical CPUs in `cpus` (bit `n`: CPU `n`) other than `me`.
    pub(super) fn wake_cpus(&self, mut cpus: u64, me: usize) {
        while cpus != 0 {
            let cpu = cpus.trailing_zeros() as usize;
            cpus &= cpus - 1;
            if cpu != me {
                gic::kick(self.cpu_mpidrs[cpu]);
            }
        }
    }

    /// Hand asynchronous completions to `complete` from now on (the APF service, which sits
    /// above the pager: see the module documentation). Set once, before the vCPUs run.
    pub fn on_async_completion(&self, complete: AsyncCompletion) {
        self.async_completion.call_once(|| complete);
    }

    /// Kick every other vCPU when the lock is released (to hold or to resume).
    pub(super) fn kick_all(&self) {
        let all = if self.waits.len() >= 64 { u64::MAX } else { (1u64 << self.waits.len()) - 1 };
        self.kicks.add(all);
    }
}

/// The pager's lock, held. Dropping it releases the lock ([`Pager::release`]: the vCPUs woken
/// under it are kicked), then polls the disk if a timer interrupt asked for it meanwhile.
pub(super) struct PagerGuard<'a> {
    pager: &'a Pager,
    /// `Some` until the drop.
    locked: Option<MutexGuard<'a, Locked>>,
}

impl Deref for PagerGuard<'_> {
    type Target = Locked;
    fn deref(&self) -> &Locked {
        self.locked.as_ref().expect("held until dropped")
    }
}

impl DerefMut for PagerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Locked {
        self.locked.as_mut().expect("held until dropped")
    }
}

impl Drop for PagerGuard<'_> {
    fn drop(&mut self) {
        if let Some(locked) = self.locked.take() {
            self.pager.release(locked);
            self.pager.poll();
        }
    }
}
