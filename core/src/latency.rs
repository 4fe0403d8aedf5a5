//! The backing store's latency model in time: when the hypervisor's EL2 timer must fire, and
//! whether time must stand still because the device is late.
//!
//! Every backing request has a deadline, L after the model accepted it: it is reported no
//! earlier. What happens when the real device (QEMU's virtio-blk, which runs in host time) has
//! not finished a request by its deadline depends on what the counter measures ([`TimeBase`]):
//!
//! - [`TimeBase::Host`]: the counter is the host's clock; the request is reported when the
//!   device's interrupt comes. The timer covers only requests the device has finished (held
//!   until their deadline); a waiting CPU also polls at an interval.
//! - [`TimeBase::Virtual`] (QEMU `-icount`, `sleep=off`): the counter counts instructions, and
//!   when every CPU sleeps QEMU jumps it to the earliest armed timer. Any timer armed while the
//!   device is late therefore turns host slowness into virtual time. So the timer covers every
//!   outstanding request's deadline, and when one has passed with the device not done, the
//!   request is [`Schedule::late`]: no timer at all, every CPU sleeps, QEMU has nothing to jump
//!   to, and virtual time stands still until the device's interrupt. A request then completes at
//!   exactly its deadline, however slow the host.

/// What the counter measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBase {
    /// The host's clock (QEMU without `-icount`).
    Host,
    /// Instructions (QEMU `-icount`): virtual time, which must not depend on the host.
    Virtual,
}

/// One request that was accepted and not yet reported, as the clock sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// No earlier than this count may it be reported.
    pub deadline: u64,
    /// The device has finished it (it is held until its deadline).
    pub device_done: bool,
}

/// When to look at the device next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Fire the EL2 timer at this count; `None`: no timer.
    pub timer: Option<u64>,
    /// ([`TimeBase::Virtual`] only) a deadline has passed and the device has not finished that
    /// request: every CPU must sleep with no timer armed until the device's interrupt.
    pub late: bool,
}

/// The schedule after a poll at `now` that reported every finished request whose deadline had
/// passed: `outstanding` are the requests left.
pub fn schedule(now: u64, outstanding: impl IntoIterator<Item = Outstanding>, base: TimeBase) -> Schedule {
    let mut held = None::<u64>;
    let mut earliest = None::<u64>;
    let mut late = false;
    for request in outstanding {
        earliest = Some(earliest.map_or(request.deadline, |e| e.min(request.deadline)));
        if request.device_done {
            held = Some(held.map_or(request.deadline, |h| h.min(request.deadline)));
        } else if request.deadline <= now {
            late = true;
        }
    }
    match base {
        TimeBase::Host => Schedule { timer: held, late: false },
        TimeBase::Virtual if late => Schedule { timer: None, late: true },
        TimeBase::Virtual => Schedule { timer: earliest, late: false },
    }
}

/// When a CPU that waits for a page (its vCPU blocked) fires its EL2 timer before it sleeps,
/// `earliest_due` being the earliest deadline of any outstanding request and `poll` the polling
/// interval. `None`: sleep with no timer (virtual time is held: [`Schedule::late`]).
///
/// - Host time: at the earliest deadline if it is ahead, but at least every `poll` (a lost or
///   late interrupt stalls the vCPU no longer than that).
/// - Virtual time: exactly at the earliest deadline (at once if it has passed: the poll then
///   reports it or finds the device late); nothing while `late`; one poll interval ahead if
///   nothing is outstanding (which a waiting CPU does not expect). But when the deadline has
///   passed and `poll_owed` (this CPU's poll found the lock taken, so its holder polls when it
///   releases it, and the releaser's own timer covers the deadlines after that), nothing
///   either: a timer in the past fires at once, again and again, and with several vCPUs under
///   QEMU's round robin (the holder descheduled) that spins away whole time slices of
///   virtual time (measured: 11 million timer interrupts in one 4-vCPU synchronous run).
pub fn wait_timer(
    now: u64,
    earliest_due: Option<u64>,
    poll: u64,
    late: bool,
    poll_owed: bool,
    base: TimeBase,
) -> Option<u64> {
    let next_poll = now.saturating_add(poll);
    match (base, earliest_due) {
        (TimeBase::Host, Some(due)) if due > now => Some(due.min(next_poll)),
        (TimeBase::Host, _) => Some(next_poll),
        (TimeBase::Virtual, _) if late => None,
        (TimeBase::Virtual, Some(due)) if due <= now && poll_owed => None,
        (TimeBase::Virtual, Some(due)) => Some(due),
        (TimeBase::Virtual, None) => Some(next_poll),
    }
}

/// Virtual time: how far a CPU's sleep in `wfi` overshot the timer that ended it, in counter
/// ticks, to be hidden from model time so that the sleep ends exactly at that timer's deadline.
///
/// Under `-icount` with `sleep=off`, when every CPU sleeps, QEMU jumps virtual time to the
/// earliest armed timer. But the jump is made by QEMU's main-loop thread
/// (`icount_start_warp_timer` in `main_loop_wait`, which runs whenever the host wakes that
/// thread, e.g. for a disk completion) from its view of the clock, and the instructions the CPU
/// executed since it last synchronised the clock (the `wfi` itself at least; a guest's idle
/// path since its last counter read) reach that view only when the CPU's thread gets back to
/// its loop. A jump made in between lands that many instructions past the deadline. Whether it
/// happens depends on how the host schedules QEMU's two threads (measured: about 10 of 160,000
/// waits per run, 8 ns each, on a busy host), and those nanoseconds move every later event.
///
/// `before`: the counter right before `wfi`; `after`: right after it; `deadlines`: the compare
/// values, in counter ticks, of the timers armed across the sleep (`None`: not armed). Only a
/// deadline still ahead at `before` can have ended the sleep, and QEMU jumps to the earliest:
/// the overshoot is how far `after` is past it (the few instructions from the deadline to
/// `after` included, which are the same in every run). Zero when no deadline was ahead, or
/// the CPU woke before it (an interrupt already pending, or a timer this does not know of):
/// then nothing is hidden, and model time never goes backwards.
pub fn wake_overshoot(before: u64, after: u64, deadlines: impl IntoIterator<Item = Option<u64>>) -> u64 {
    deadlines
        .into_iter()
        .flatten()
        .filter(|&deadline| deadline > before)
        .min()
        .map_or(0, |expected| after.saturating_sub(expected))
}

/// Virtual time with several vCPUs: which of the `cpus` CPUs that run vCPUs are held while a
/// request is late (asleep with no timer, or polling the device, running no guest
/// instruction), and since when all of them are. Such a span runs no guest instruction, so it
/// can be hidden from model time and from every guest's counter without any guest clock going
/// backwards; it is what the CPUs do while the host is late (polls woken by the device's
/// interrupt each time it finishes another request), which depends on the host.
///
/// A span starts when the last CPU becomes held while a request is late, and ends when a CPU
/// stops being held or the device catches up; its ticks, less what was charged meanwhile (work
/// that costs the same in every run, such as completing requests), are to be hidden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldSpan {
    cpus: u32,
    held: u32,
    late: bool,
    since: Option<u64>,
}

impl HoldSpan {
    /// No CPU held, nothing late.
    pub const fn new(cpus: u32) -> Self {
        HoldSpan { cpus, held: 0, late: false, since: None }
    }

    /// A request is late (`true`), or the device caught up (`false`, which ends a span: the
    /// ticks to hide are returned; `charge` gives the ticks charged since the span began).
    pub fn set_late(&mut self, late: bool, now: u64, charge: impl FnOnce() -> u64) -> u64 {
        self.late = late;
        if late {
            0
        } else {
            self.end(now, charge)
        }
    }

    /// A CPU is held from `now`. Returns whether that started a span (every CPU held while a
    /// request is late): the caller then starts counting what it charges from zero.
    pub fn enter(&mut self, now: u64) -> bool {
        self.held = self.held.saturating_add(1).min(self.cpus);
        let starts = self.held == self.cpus && self.late && self.since.is_none();
        if starts {
            self.since = Some(now);
        }
        starts
    }

    /// A CPU is no longer held, at `now`: a span ends; the ticks to hide are returned.
    pub fn leave(&mut self, now: u64, charge: impl FnOnce() -> u64) -> u64 {
        let hidden = self.end(now, charge);
        self.held = self.held.saturating_sub(1);
        hidden
    }

    fn end(&mut self, now: u64, charge: impl FnOnce() -> u64) -> u64 {
        match self.since.take() {
            Some(since) => now.saturating_sub(since).saturating_sub(charge()),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn req(deadline: u64, device_done: bool) -> Outstanding {
        Outstanding { deadline, device_done }
    }

    #[test]
    fn nothing_outstanding_no_timer() {
        for base in [TimeBase::Host, TimeBase::Virtual] {
            assert_eq!(schedule(100, [], base), Schedule { timer: None, late: false });
        }
    }

    #[test]
    fn host_time_covers_only_finished_requests() {
        // One still at the device, one held: the timer is for the held one; a late device is
        // never "late" in host time (its interrupt reports it).
        let s = schedule(100, [req(50, false), req(150, true)], TimeBase::Host);
        assert_eq!(s, Schedule { timer: Some(150), late: false });
        assert_eq!(schedule(100, [req(120, false)], TimeBase::Host).timer, None);
    }

    #[test]
    fn virtual_time_covers_every_deadline() {
        // The device has not finished the earliest yet, but its deadline is ahead: fire then.
        let s = schedule(100, [req(300, true), req(120, false), req(200, false)], TimeBase::Virtual);
        assert_eq!(s, Schedule { timer: Some(120), late: false });
    }

    #[test]
    fn virtual_time_stops_for_a_late_device() {
        let s = schedule(100, [req(100, false), req(150, true)], TimeBase::Virtual);
        assert_eq!(s, Schedule { timer: None, late: true });
        let s = schedule(100, [req(99, false)], TimeBase::Virtual);
        assert!(s.late && s.timer.is_none());
        // A finished request past its deadline is not late (the poll reports it).
        assert!(!schedule(100, [req(90, true)], TimeBase::Virtual).late);
    }

    #[test]
    fn wait_timers() {
        // Host: the deadline if ahead, capped by the poll; past or none: the poll.
        assert_eq!(wait_timer(100, Some(150), 100, false, false, TimeBase::Host), Some(150));
        assert_eq!(wait_timer(100, Some(500), 100, false, false, TimeBase::Host), Some(200));
        assert_eq!(wait_timer(100, Some(80), 100, false, false, TimeBase::Host), Some(200));
        assert_eq!(wait_timer(100, None, 100, false, false, TimeBase::Host), Some(200));
        // Virtual: exactly the deadline, never a poll that would let time run on.
        assert_eq!(wait_timer(100, Some(500), 100, false, false, TimeBase::Virtual), Some(500));
        assert_eq!(wait_timer(100, Some(80), 100, false, false, TimeBase::Virtual), Some(80));
        assert_eq!(wait_timer(100, Some(500), 100, true, false, TimeBase::Virtual), None);
        assert_eq!(wait_timer(100, None, 100, false, false, TimeBase::Virtual), Some(200));
        assert_eq!(wait_timer(u64::MAX, None, 100, false, false, TimeBase::Virtual), Some(u64::MAX));
        // A passed deadline whose poll the lock's holder owes: no timer (it would fire at
        // once, forever, while the holder does not run); one still ahead is armed as usual.
        assert_eq!(wait_timer(100, Some(80), 100, false, true, TimeBase::Virtual), None);
        assert_eq!(wait_timer(100, Some(100), 100, false, true, TimeBase::Virtual), None);
        assert_eq!(wait_timer(100, Some(500), 100, false, true, TimeBase::Virtual), Some(500));
        // Host time polls on regardless.
        assert_eq!(wait_timer(100, Some(80), 100, false, true, TimeBase::Host), Some(200));
    }

    #[test]
    fn wake_overshoot_ends_the_sleep_at_the_earliest_deadline_ahead() {
        // Woken 3 ticks past the earliest deadline ahead (the later one and the unarmed one do
        // not count): those 3 are hidden.
        assert_eq!(wake_overshoot(100, 503, [Some(900), Some(500), None]), 3);
        // A jump that overshot by 8 more: the same model time afterwards.
        assert_eq!(503 - wake_overshoot(100, 503, [Some(500)]), 511 - wake_overshoot(100, 511, [Some(500)]));
        // Deadlines at or before `before` had fired already (masked, or their interrupt taken
        // into account): not what ended the sleep.
        assert_eq!(wake_overshoot(100, 503, [Some(100), Some(40), Some(500)]), 3);
        // Nothing ahead, or woken before it (an interrupt already pending): nothing hidden.
        assert_eq!(wake_overshoot(100, 503, [Some(100), None]), 0);
        assert_eq!(wake_overshoot(100, 104, [Some(500)]), 0);
        assert_eq!(wake_overshoot(100, 104, []), 0);
    }

    #[test]
    fn hold_span_hides_only_while_every_cpu_is_held_and_late() {
        let mut h = HoldSpan::new(2);
        assert!(!h.enter(10), "one of two CPUs held: nothing hidden");
        assert_eq!(h.leave(20, || 0), 0);
        // Held before anything is late (cannot happen in the pager, but must hide nothing).
        h.enter(30);
        assert!(!h.enter(31));
        assert_eq!(h.leave(40, || 0), 0);
        assert_eq!(h.leave(41, || 0), 0);
        // Late, then both held: a span from the second enter to the first leave, less charge.
        h.set_late(true, 50, || 0);
        assert!(!h.enter(60));
        assert!(h.enter(70));
        assert_eq!(h.leave(100, || 5), 25);
        // The other one leaves: no span runs any more.
        assert_eq!(h.leave(110, || 0), 0);
        // Both held again, the device catches up: that ends the span.
        assert!(!h.enter(120));
        assert!(h.enter(130));
        assert_eq!(h.set_late(false, 150, || 0), 20);
        assert_eq!(h.leave(160, || 0), 0);
        assert_eq!(h.leave(170, || 0), 0);
        // A charge larger than the span hides nothing; more leaves than enters do not wrap.
        h.set_late(true, 200, || 0);
        h.enter(210);
        h.enter(220);
        assert_eq!(h.leave(230, || 50), 0);
        assert_eq!((h.leave(240, || 0), h.leave(250, || 0)), (0, 0));
        assert!(!h.enter(260), "one held after the extra leave");
    }

    proptest! {
        /// Whatever the order of events, the ticks hidden never exceed the time during which
        /// every CPU was held while a request was late (no guest instruction ran), so no guest
        /// clock can go backwards.
        #[test]
        fn hold_span_never_hides_a_running_cpu(cpus in 1u32..5,
                                               events in proptest::collection::vec((0u8..4, 0u64..50), 0..80)) {
            let mut h = HoldSpan::new(cpus);
            let (mut now, mut held, mut late) = (0u64, 0u32, false);
            let (mut hidden, mut safe, mut all_since) = (0u64, 0u64, None::<u64>);
            for (kind, step) in events {
                now += step;
                match kind {
                    0 if held < cpus => { held += 1; h.enter(now); }
                    1 if held > 0 => { hidden += h.leave(now, || 0); held -= 1; }
                    2 => { late = true; hidden += h.set_late(true, now, || 0); }
                    3 => { late = false; hidden += h.set_late(false, now, || 0); }
                    _ => continue,
                }
                let all = held == cpus && late;
                match (all, all_since) {
                    (true, None) => all_since = Some(now),
                    (false, Some(since)) => { safe += now - since; all_since = None; }
                    _ => {}
                }
                prop_assert!(hidden <= safe, "hid {} of {} safe ticks", hidden, safe);
            }
        }
    }

    proptest! {
        /// The sleep's model end never goes backwards (at or after `before`) and, when a
        /// deadline ahead ended it, is that deadline whatever the overshoot.
        #[test]
        fn wake_overshoot_is_monotonic_and_exact(before in 0u64..1000, slept in 0u64..2000,
                                                 deadlines in proptest::collection::vec(proptest::option::of(0u64..3000), 0..6)) {
            let after = before + slept;
            let hidden = wake_overshoot(before, after, deadlines.iter().copied());
            prop_assert!(after - hidden >= before);
            let expected = deadlines.iter().flatten().copied().filter(|&d| d > before).min();
            match expected {
                Some(e) if after >= e => prop_assert_eq!(after - hidden, e),
                _ => prop_assert_eq!(hidden, 0),
            }
        }
    }

    proptest! {
        /// In virtual time, the timer never lets time pass an unfinished request's deadline:
        /// either it fires no later than every outstanding deadline, or there is none at all.
        #[test]
        fn virtual_time_never_passes_a_deadline(now in 0u64..1000,
                                                 requests in proptest::collection::vec((0u64..2000, any::<bool>()), 0..40)) {
            let requests: Vec<Outstanding> = requests.into_iter().map(|(d, done)| req(d, done)).collect();
            let s = schedule(now, requests.iter().copied(), TimeBase::Virtual);
            let late = requests.iter().any(|r| !r.device_done && r.deadline <= now);
            prop_assert_eq!(s.late, late);
            if late {
                prop_assert_eq!(s.timer, None);
            } else {
                prop_assert_eq!(s.timer, requests.iter().map(|r| r.deadline).min());
            }
            // Host time: only held requests, never late.
            let h = schedule(now, requests.iter().copied(), TimeBase::Host);
            prop_assert!(!h.late);
            prop_assert_eq!(h.timer, requests.iter().filter(|r| r.device_done).map(|r| r.deadline).min());
        }
    }
}
