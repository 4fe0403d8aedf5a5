//! Park or wait: whether a fault that must wait for its page is worth an asynchronous page
//! fault, judged from measured costs (docs/abi.md §8.3).
//!
//! Parking a task costs the guest a delivery (the stage-2 exit, the SDEI entry, its handler,
//! SDEI_EVENT_COMPLETE_AND_RESUME and the switch to another task) and later a wake (the
//! page_ready interrupt, the ring, the switch back). Waiting synchronously costs the vCPU the
//! fetch itself. So a fault is delivered asynchronously only when the expected fetch is longer
//! than parking and waking:
//!
//! ```text
//!   park  ⇔  expected read latency  >  2 × delivery cost
//! ```
//!
//! Both are exponentially weighted moving averages on the hypervisor's (model) counter:
//! * the **read latency**, from a backing-store read's submission to its completion being
//!   processed (the pager records every read);
//! * the **delivery cost**, from the moment the pager has started the fetch (its work until
//!   then, eviction and submission, is the same for a fault that waits) to the hypervisor's
//!   handling of the handler's SDEI_EVENT_COMPLETE_AND_RESUME (the part of parking the
//!   hypervisor can see: the SDEI entry, the guest's handler, the answer's exit),
//!   less the time the vCPU waited meanwhile for pages of the handler's path
//!   ([`ParkOrWait::delivered`]).
//!   The wake side has no exit (the guest drains the ring in its interrupt handler), so the
//!   rule takes it to cost as much as the delivery: the factor 2, [`PARK_AND_WAKE`].
//!
//! Until both have a sample, faults are delivered (that is how the delivery cost is learnt).
//! After that a fast store (or latency 0) keeps faults synchronous, and if the store slows
//! down the read latency grows and faults are delivered again: reads go on being measured
//! whichever way faults are resolved. The delivery cost is measured only when a fault is
//! delivered, so while the rule says wait, one fault in [`EXPLORE_EVERY`] is delivered anyway
//! ([`ParkOrWait`]): the first deliveries of a run are the dearest (the guest's handler path
//! is not resident yet), and an estimate frozen there would keep faults waiting that are
//! worth parking. The count is deterministic, so runs under `-icount` still repeat.
//! Zero-fill faults never wait, so the rule never sees them.

/// The weight of a new sample: 1 / 2^[`EWMA_SHIFT`] (an 8-sample memory).
pub const EWMA_SHIFT: u32 = 3;

/// Parking and waking cost this many deliveries (see the module's documentation).
pub const PARK_AND_WAKE: u64 = 2;

/// While the rule says wait, every this many faults one is delivered anyway, to keep the
/// delivery cost measured: 0.4 % of them. At latency 0 each such delivery costs the guest a
/// few tens of µs more than its wait; at 1 in 64 that made the fault-bound phases 1.6 % slower
/// than without APF.
pub const EXPLORE_EVERY: u32 = 256;

/// An exponentially weighted moving average of counter ticks, in integers: the first sample
/// sets it, each later one moves it by (sample − average) / 2^[`EWMA_SHIFT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ewma {
    /// The average times 2^[`EWMA_SHIFT`] (keeps the fractional bits), if sampled.
    scaled: Option<u64>,
    samples: u64,
}

impl Ewma {
    /// No samples yet.
    pub const fn new() -> Self {
        Ewma { scaled: None, samples: 0 }
    }

    /// Adds a sample. Saturates instead of overflowing (a sample of 2^60 ticks is centuries).
    pub fn record(&mut self, ticks: u64) {
        let sample = ticks.min(u64::MAX >> (EWMA_SHIFT + 1)) << EWMA_SHIFT;
        self.scaled = Some(match self.scaled {
            None => sample,
            Some(avg) => avg - (avg >> EWMA_SHIFT) + (sample >> EWMA_SHIFT),
        });
        self.samples += 1;
    }

    /// The average, if there was a sample.
    pub fn get(&self) -> Option<u64> {
        self.scaled.map(|s| s >> EWMA_SHIFT)
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// The rule (see the module's documentation), given the two averages: whether a fault that
/// waits for a read is worth parking its task. Yes while either cost is unknown.
pub fn worth_parking(read_latency: Option<u64>, delivery: Option<u64>) -> bool {
    match (read_latency, delivery) {
        (Some(read), Some(delivery)) => read > delivery.saturating_mul(PARK_AND_WAKE),
        _ => true,
    }
}

/// One vCPU's side of the rule: its delivery cost, and the faults that waited since the last
/// delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParkOrWait {
    delivery: Ewma,
    waits: u32,
}

impl ParkOrWait {
    /// Nothing measured yet.
    pub const fn new() -> Self {
        ParkOrWait { delivery: Ewma::new(), waits: 0 }
    }

    /// Whether a fault that waits for a read should be parked, given the average read latency:
    /// [`worth_parking`], or, when that says wait, every [`EXPLORE_EVERY`]th time.
    pub fn decide(&mut self, read_latency: Option<u64>) -> bool {
        if worth_parking(read_latency, self.delivery.get()) {
            self.waits = 0;
            return true;
        }
        self.waits += 1;
        if self.waits >= EXPLORE_EVERY {
            self.waits = 0;
            return true;
        }
        false
    }

    /// A delivery took `elapsed` ticks (from the started fetch to the handler's answer), of
    /// which the vCPU spent `waited` waiting synchronously for pages its handler path touched.
    /// Those waits are left out: they come from how often the handler runs (a path used once
    /// in 64 faults has been paged out meanwhile, one used at every fault stays resident), not
    /// from what parking costs, and counting them would keep the rule from ever parking again.
    pub fn delivered(&mut self, elapsed: u64, waited: u64) {
        self.delivery.record(elapsed.saturating_sub(waited));
    }

    /// The average delivery cost, if one was measured.
    pub fn delivery_cost(&self) -> Option<u64> {
        self.delivery.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_sample_sets_the_average_and_later_ones_move_it_by_an_eighth() {
        let mut e = Ewma::new();
        assert_eq!(e.get(), None);
        e.record(800);
        assert_eq!((e.get(), e.samples()), (Some(800), 1));
        e.record(0);
        assert_eq!(e.get(), Some(700));
        e.record(1600);
        assert_eq!(e.get(), Some(812)); // 700 + (1600 - 700) / 8 = 812.5
    }

    #[test]
    fn parks_until_both_costs_are_known() {
        assert!(worth_parking(None, None));
        assert!(worth_parking(Some(1), None), "no delivery measured yet: deliver to learn its cost");
        assert!(worth_parking(None, Some(1_000_000)), "no read measured yet");
    }

    #[test]
    fn a_fast_store_waits_and_a_slow_one_parks() {
        let delivery = Some(10_000); // 10 µs at 1 GHz
        assert!(!worth_parking(Some(6_000), delivery), "latency 0: only the request's own overhead");
        assert!(worth_parking(Some(1_000_000), delivery), "L = 1 ms");
        // Exactly at the break-even point waiting wins: parking would gain nothing.
        assert!(!worth_parking(Some(20_000), delivery));
        assert!(worth_parking(Some(20_001), delivery));
        assert!(worth_parking(Some(1), Some(0)), "a free delivery is always worth it");
        assert!(!worth_parking(Some(u64::MAX), Some(u64::MAX)), "no overflow");
    }

    #[test]
    fn a_store_that_slows_down_is_parked_for_again() {
        let (mut read, delivery) = (Ewma::new(), Some(10_000));
        read.record(5_000);
        assert!(!worth_parking(read.get(), delivery));
        let mut reads = 0;
        while !worth_parking(read.get(), delivery) {
            read.record(1_000_000);
            reads += 1;
        }
        assert_eq!(reads, 1, "one slow read moves the average past 20 µs");
    }

    #[test]
    fn while_waiting_wins_one_fault_in_256_is_delivered_to_keep_measuring() {
        let mut rule = ParkOrWait::new();
        assert!(rule.decide(Some(5_000)), "nothing measured: deliver");
        rule.delivered(200_000, 0); // a dear first delivery
        let parked = (0..1024).filter(|_| rule.decide(Some(100_000))).count();
        assert_eq!(parked, 4);
        // Cheap deliveries measured meanwhile bring the estimate down until parking wins.
        let mut exploring = 0;
        while !rule.decide(Some(100_000)) || rule.delivery_cost() > Some(50_000) {
            rule.delivered(30_000, 0);
            exploring += 1;
            assert!(exploring < 256, "the estimate does not converge: {:?}", rule.delivery_cost());
        }
        assert!(rule.decide(Some(100_000)));
    }

    #[test]
    fn waits_for_the_handlers_pages_are_not_a_cost_of_parking() {
        let mut rule = ParkOrWait::new();
        rule.delivered(1_030_000, 1_000_000); // one page-in of the handler's stack at L = 1 ms
        assert_eq!(rule.delivery_cost(), Some(30_000));
        rule.delivered(5, 10); // cannot go below zero
        assert_eq!(rule.delivery_cost(), Some(26_250));
    }

    proptest! {
        #[test]
        fn the_average_stays_between_the_smallest_and_largest_sample(samples in prop::collection::vec(0u64..1 << 40, 1..64)) {
            let mut e = Ewma::new();
            for &s in &samples {
                e.record(s);
            }
            let (lo, hi) = (*samples.iter().min().unwrap(), *samples.iter().max().unwrap());
            let avg = e.get().unwrap();
            // Integer rounding can leave the average up to one tick per sample below the least.
            prop_assert!(avg + samples.len() as u64 >= lo && avg <= hi, "{avg} not in [{lo}, {hi}]");
            prop_assert_eq!(e.samples(), samples.len() as u64);
        }

        #[test]
        fn a_constant_store_settles_on_one_answer(first in 0u64..1 << 30, read in 0u64..1 << 30, delivery in 1u64..1 << 30) {
            let mut average = Ewma::new();
            average.record(first);
            for _ in 0..512 {
                average.record(read);
            }
            prop_assert_eq!(worth_parking(average.get(), Some(delivery)), average.get().unwrap() > 2 * delivery);
            // The average has converged to within a few ticks of the constant.
            prop_assert!(average.get().unwrap().abs_diff(read) <= 8, "{:?} vs {read}", average.get());
        }

        #[test]
        fn huge_samples_do_not_overflow(samples in prop::collection::vec(any::<u64>(), 1..16)) {
            let mut e = Ewma::new();
            for &s in &samples {
                e.record(s);
            }
            prop_assert!(e.get().is_some());
        }
    }
}
