//! Waiting for pages, and the model clock the waits run on: a blocked vCPU's wait, the idle
//! and held sleeps, the EL2 timer for the next latency deadline, and how virtual time is kept
//! free of host time (`-icount`, see the module documentation of `pager`).

use core::sync::atomic::Ordering;

use aarch64_cpu::registers::{Readable, Writeable, CNTVOFF_EL2, CNTV_CTL_EL0};
use asyncpf_core::latency;

use super::{Pager, Resolution, Stamp, CNTV_CTL_ENABLE, MIN_WAIT_POLL_US, SLEEP_HELD, SLEEP_WAIT};
use crate::backing::{clock, Ticks};
use crate::trace::trace_event;
use crate::{arch, gic, vgic};

impl Pager {
    /// Park `vcpu` (the caller's own) until its blocked fault is resolved. Its physical CPU
    /// sleeps; `on_interrupt` is given every other physical interrupt that arrives meanwhile
    /// (the pager's own are handled here).
    pub fn wait(&self, vcpu: usize, on_interrupt: impl FnMut(u32)) -> Resolution {
        trace_event!(WaitStart);
        let started = self.now();
        let saved = vgic::park();
        let resolution = self.wait_parked(vcpu, on_interrupt);
        vgic::unpark(saved);
        self.waits[vcpu].waited.fetch_add(self.now().saturating_sub(started), Ordering::Relaxed);
        trace_event!(WaitEnd, aux = u16::from(resolution == Resolution::Abort));
        resolution
    }

    /// Model time now, and the model ticks `vcpu` has spent waiting for pages so far: two
    /// stamps give the time between them that was not spent waiting.
    pub fn stamp(&self, vcpu: usize) -> Stamp {
        Stamp { at: self.now(), waited: self.waits[vcpu].waited.load(Ordering::Relaxed) }
    }

    pub(super) fn wait_parked(&self, vcpu: usize, mut on_interrupt: impl FnMut(u32)) -> Resolution {
        let wait = &self.waits[vcpu];
        // Held for a late request (the drain's polls included: see `HoldSpan`).
        let mut held = false;
        loop {
            gic::drain(|intid| {
                if !self.handle_interrupt(intid) {
                    on_interrupt(intid)
                }
            });
            // Interrupts first, then the cell (`asyncpf_core::handoff`): a resolution that
            // comes later brings a kick, which ends the `wfi` below.
            let taken = wait.cell.take();
            let late = self.is_late();
            if held && (!late || taken.is_some()) {
                self.leave_held();
                held = false;
            }
            match taken {
                Some(resolution) => return resolution,
                // A kick (a completion processed elsewhere), the disk or the timer wakes us.
                None if late => {
                    if !held {
                        self.enter_held();
                        held = true;
                    }
                    self.frozen_wfi()
                }
                None => {
                    // Model time runs on while the CPU sleeps, and the vCPU's virtual timer
                    // counts it.
                    self.close_window();
                    self.arm_wait_timer();
                    let before = clock::now();
                    self.timed_wfi();
                    self.count_sleep(SLEEP_WAIT, clock::now().saturating_sub(before).0);
                }
            }
        }
    }

    /// Before a waiting CPU sleeps: fire this CPU's EL2 timer when the earliest outstanding
    /// request can complete (its latency deadline). In host time, if that has passed and the
    /// device is late, one polling interval from now (the latency, at least
    /// [`MIN_WAIT_POLL_US`]): the poll bounds how long a lost or late device interrupt can
    /// stall a vCPU. In virtual time exactly at the deadline: a poll there would let QEMU's
    /// `-icount` jump time forward by the interval whenever the host is slow; a late device
    /// holds time instead ([`Self::frozen_wfi`]). See `asyncpf_core::latency::wait_timer`.
    pub(super) fn arm_wait_timer(&self) {
        let now = self.model_now();
        let poll = Ticks::from_micros(self.latency_us.max(MIN_WAIT_POLL_US));
        let due = self.earliest_due.load(Ordering::Acquire);
        let due = (due != u64::MAX).then_some(due);
        // (The flag is read after this CPU's own poll attempt, in `wait_parked`'s drain.)
        let owed = self.poll_wanted.load(Ordering::Relaxed);
        let at = latency::wait_timer(now.0, due, poll.0, self.is_late(), owed, self.time_base);
        if at.is_none() && !self.is_late() {
            self.wait_timer_deferred.fetch_add(1, Ordering::Relaxed);
        }
        self.set_timer(at.map(Ticks));
    }

    /// The moving average of backing reads' latency in model ticks, once a read completed
    /// (`asyncpf_core::apf::cost`).
    pub fn expected_read_ticks(&self) -> Option<u64> {
        Some(self.read_latency_avg.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Guest RAM's pages (= the disk slots the pager uses, from 0).
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub fn guest_pages(&self) -> u64 {
        self.guest_mib * asyncpf_core::overcommit::PAGES_PER_MIB as u64
    }

    /// Model time now, in counter ticks (see [`Self::model_now`]).
    pub fn now(&self) -> u64 {
        self.model_now().0
    }

    /// Model time: the counter in host time; in virtual time the counter minus what was hidden
    /// (held at the moment a request became late, while it is).
    pub(super) fn model_now(&self) -> Ticks {
        match self.pinned.load(Ordering::Acquire) {
            u64::MAX => clock::now().saturating_sub(Ticks(self.hidden.load(Ordering::Acquire))),
            pinned => Ticks(pinned),
        }
    }

    /// Fire this CPU's EL2 timer at model time `at` (`None`: stop it).
    pub(super) fn set_timer(&self, at: Option<Ticks>) {
        let hidden = Ticks(self.hidden.load(Ordering::Acquire));
        clock::set_el2_timer(at.map(|at| at.saturating_add(hidden)));
    }

    /// Virtual time with one vCPU, right before the guest runs again or the CPU sleeps: let
    /// model time run on from where a poll (and a hold) pinned it, hiding the counter ticks
    /// spent meanwhile, and give the guest's virtual counter the same view (CNTVOFF_EL2 = the
    /// hidden ticks). So the instructions the hypervisor executed for a poll, which depend on
    /// what the device had finished, cost the guest no time, and a late device none either.
    /// The guest sees every completion at the model time its poll started.
    pub fn close_window(&self) {
        if self.hold_hiding {
            // Several vCPUs: the guest's counter leaves out the spans hidden meanwhile.
            let hidden = self.hidden.load(Ordering::Acquire);
            if CNTVOFF_EL2.get() != hidden {
                CNTVOFF_EL2.set(hidden);
                arch::isb();
            }
            return;
        }
        if !self.hide || self.is_late() {
            return;
        }
        let pinned = self.pinned.load(Ordering::Acquire);
        let reopen = pinned != u64::MAX;
        if reopen {
            // Model time goes on from where it was pinned plus what is charged.
            let charge = self.charge.swap(0, Ordering::Relaxed);
            let hidden = clock::now().saturating_sub(Ticks(pinned)).0.saturating_sub(charge);
            self.hidden.store(hidden, Ordering::Release);
            self.pinned.store(u64::MAX, Ordering::Release);
        }
        // When ticks were hidden (which happens at instants that do not depend on the host):
        // the guest's counter and this CPU's timer follow (`release` does not arm it with
        // `hide`).
        let hidden = self.hidden.load(Ordering::Acquire);
        if !reopen && CNTVOFF_EL2.get() == hidden {
            return;
        }
        CNTVOFF_EL2.set(hidden);
        if reopen {
            CNTV_CTL_EL0.set(self.saved_cntv.load(Ordering::Relaxed));
        }
        arch::isb();
        let due = self.earliest_due.load(Ordering::Acquire);
        self.set_timer((due != u64::MAX).then_some(Ticks(due)));
    }

    /// Sleep in `wfi` until an interrupt, with the timers armed as they are: model time runs
    /// on. Virtual time with one vCPU: a sleep that a timer ended ends, in model time, exactly
    /// at that timer's deadline. QEMU's `-icount` jump to the deadline can overshoot it by
    /// instructions the CPU had executed but not yet accounted when QEMU's main loop made the
    /// jump, which depends on the host (`asyncpf_core::latency::wake_overshoot`); the overshoot
    /// is hidden like a poll, and the guest's counter (CNTVOFF_EL2) and the EL2 timer (its
    /// deadline is in model time) follow at once, before any interrupt is looked at. Model time
    /// must be running (not pinned: a window hides the sleep anyway), and no request late
    /// (then [`Self::frozen_wfi`]).
    pub fn timed_wfi(&self) {
        if !self.hide {
            arch::wait_for_interrupt();
            return;
        }
        let before = clock::now();
        arch::wait_for_interrupt();
        let after = clock::now();
        if self.pinned.load(Ordering::Acquire) != u64::MAX {
            return;
        }
        let deadlines = clock::armed_deadlines();
        let overshoot = latency::wake_overshoot(before.0, after.0, deadlines);
        if overshoot == 0 {
            return;
        }
        let hidden = self.hidden.fetch_add(overshoot, Ordering::AcqRel) + overshoot;
        CNTVOFF_EL2.set(hidden);
        // (Re-armed whether it fired or not: it is then pending exactly when model time has
        // reached its deadline, as in a run without the overshoot.)
        if let Some(el2) = deadlines[0] {
            clock::set_el2_timer(Some(Ticks(el2.saturating_add(overshoot))));
        }
        arch::isb();
    }

    /// Whether the guest's WFI is to sleep in the hypervisor ([`Self::timed_wfi`]): virtual time
    /// with one vCPU, where a sleep's end must not depend on the host.
    pub fn sleeps_guest_wfi(&self) -> bool {
        self.hide
    }

    /// With several vCPUs in virtual time: this CPU is held for a late request (it runs no
    /// guest instruction until [`Self::leave_held`]). When every CPU that runs a vCPU is, a
    /// span of hidden time starts ([`HoldSpan`]).
    pub(super) fn enter_held(&self) {
        if !self.hold_hiding {
            return;
        }
        if self.hold.lock().enter(clock::now().0) {
            // Completions charged from here on are the span's: they cost the same in every
            // run, so they are not hidden (see `leave_held`).
            self.charge.store(0, Ordering::Relaxed);
        }
    }

    /// This CPU is no longer held ([`Self::enter_held`]): a span of hidden time ends; model
    /// time and the guests' counters leave out its ticks, less what the completions processed
    /// in it cost.
    pub(super) fn leave_held(&self) {
        if !self.hold_hiding {
            return;
        }
        let hide = self.hold.lock().leave(clock::now().0, || self.charge.swap(0, Ordering::Relaxed));
        self.hidden.fetch_add(hide, Ordering::AcqRel);
    }

    pub(super) fn count_sleep(&self, kind: usize, ticks: u64) {
        if let Some(cpu) = self.sleep_ticks.get(arch::cpu_index()) {
            cpu[kind].fetch_add(ticks, Ordering::Relaxed);
        }
    }

    /// Virtual time only: whether a request is late and time is held.
    pub fn is_late(&self) -> bool {
        self.late.load(Ordering::Acquire)
    }

    /// Sleep until an interrupt with no timer armed that QEMU's `-icount` could advance virtual
    /// time to: this CPU's EL2 timer off, the guest's virtual timer disabled (an enabled one is
    /// a QEMU timer even when masked or already fired) and restored afterwards. The caller has
    /// parked the virtual CPU interface or does it around this.
    pub(super) fn frozen_wfi(&self) {
        let cntv = CNTV_CTL_EL0.get();
        CNTV_CTL_EL0.set(cntv & !CNTV_CTL_ENABLE);
        clock::set_el2_timer(None);
        let before = clock::now();
        arch::wait_for_interrupt();
        let slept = clock::now().saturating_sub(before).0;
        self.held_sleep_ticks.fetch_add(slept, Ordering::Relaxed);
        self.count_sleep(SLEEP_HELD, slept);
        self.held_sleeps.fetch_add(1, Ordering::Relaxed);
        CNTV_CTL_EL0.set(cntv);
        arch::isb();
    }

    /// Virtual time only: while a backing request is late (its deadline passed, the device not
    /// done), keep this CPU asleep with no timer armed, so that virtual time stands still until
    /// the device's interrupt. `on_interrupt` gets the interrupts that are not the pager's.
    /// Called before entering the guest; the CPU that finds the device late kicks the others.
    pub fn hold_while_late(&self, mut on_interrupt: impl FnMut(u32)) {
        if !self.is_late() {
            return;
        }
        let saved = vgic::park();
        self.enter_held();
        while self.is_late() {
            self.frozen_wfi();
            gic::drain(|intid| {
                if !self.handle_interrupt(intid) {
                    on_interrupt(intid)
                }
            });
        }
        self.leave_held();
        vgic::unpark(saved);
    }

    /// An idle CPU (its vCPU off) sleeps: with no timer armed while a request is late.
    pub fn idle_wfi(&self) {
        if self.is_late() {
            self.enter_held();
            self.frozen_wfi();
            self.leave_held();
        } else {
            self.close_window();
            self.timed_wfi();
        }
    }
}
