//! Software-signalled events (SDEI_EVENT_SIGNAL) waiting for delivery, one bit per vCPU.
//!
//! The signaller sets the target's bit after the dispatcher's model accepted the signal; the
//! target takes it before it enters the guest and tries to dispatch event 0. The bit is taken
//! (cleared) *before* the dispatch, and put back only if the dispatch is refused for now
//! (masked, not enabled, a handler running): a signal that arrives while the dispatch is in
//! progress, on another vCPU, then stays pending and is delivered later. Clearing after the
//! dispatch instead would erase it without its delivery.

use core::sync::atomic::{AtomicU64, Ordering};

/// Pending software signals of up to 64 vCPUs.
#[derive(Debug, Default)]
pub struct PendingSignals(AtomicU64);

impl PendingSignals {
    pub const fn new() -> Self {
        PendingSignals(AtomicU64::new(0))
    }

    /// A signal for `vcpu` (several before its delivery count as one, as SDEI's pending state).
    pub fn signal(&self, vcpu: usize) {
        self.0.fetch_or(1 << vcpu, Ordering::Release);
    }

    /// Take `vcpu`'s pending signal, if it has one: the caller dispatches it, and calls
    /// [`Self::keep`] if the dispatch was refused for now.
    pub fn take(&self, vcpu: usize) -> bool {
        let bit = 1 << vcpu;
        // The cheap check first: this runs before every guest entry.
        self.0.load(Ordering::Acquire) & bit != 0 && self.0.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Put back a signal that [`Self::take`] took but could not deliver yet.
    pub fn keep(&self, vcpu: usize) {
        self.signal(vcpu);
    }

    /// Drop `vcpu`'s pending signal (its SDEI state was reset).
    pub fn clear(&self, vcpu: usize) {
        self.0.fetch_and(!(1 << vcpu), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_during_a_dispatch_is_kept() {
        let s = PendingSignals::new();
        s.signal(3);
        assert!(s.take(3), "taken for the dispatch");
        s.signal(3); // another vCPU signals while the first is being delivered
        assert!(s.take(3), "the second signal is still pending after the first delivery");
        assert!(!s.take(3));
    }

    #[test]
    fn refused_signals_are_kept_and_others_untouched() {
        let s = PendingSignals::new();
        s.signal(0);
        s.signal(63);
        assert!(s.take(0));
        s.keep(0); // masked: try again later
        assert!(s.take(0) && s.take(63));
        s.signal(5);
        s.clear(5);
        assert!(!s.take(5));
    }

    /// Signallers and a deliverer on threads: every signal sent after the deliverer's last
    /// `take` is still pending at the end, so none is lost.
    #[test]
    fn no_signal_is_lost_between_threads() {
        extern crate std;
        use core::sync::atomic::AtomicUsize;
        use std::thread;
        let s = PendingSignals::new();
        let sent = AtomicUsize::new(0);
        let delivered = AtomicUsize::new(0);
        thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..10_000 {
                    // Wait until the previous signal was delivered, then send the next one.
                    while delivered.load(Ordering::Acquire) < sent.load(Ordering::Acquire) {
                        core::hint::spin_loop();
                    }
                    sent.fetch_add(1, Ordering::AcqRel);
                    s.signal(1);
                }
            });
            scope.spawn(|| {
                while delivered.load(Ordering::Acquire) < 10_000 {
                    if s.take(1) {
                        delivered.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
        });
        assert_eq!(delivered.load(Ordering::Acquire), 10_000);
    }
}
