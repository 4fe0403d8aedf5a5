//! A fixed-size, allocation-free latency histogram (log-linear buckets, HDR style), for the
//! hypervisor's fault-stall statistics: how many nanoseconds a vCPU waited for a page.
//!
//! Count, sum, minimum, maximum and mean are exact. Percentiles are answered from buckets:
//!
//! * values `0..32` each have a bucket of their own (exact);
//! * every power-of-two range `[2^e, 2^(e+1))` with `5 <= e < 40` is split into
//!   [`SUB_BUCKETS`] = 16 equal buckets of width `2^(e-4)`;
//! * values from [`LIMIT`] = 2^40 ns (about 18 minutes) up share one overflow bucket.
//!
//! That is 593 buckets of `u64`, under 5 KiB in all, and [`Histogram::new`] is a `const fn`, so a
//! histogram can live in a `static` or inside a `spin::Mutex`.
//!
//! # Error bound
//!
//! [`Histogram::percentile`] finds the bucket holding the exact nearest-rank sample `x` and
//! answers the midpoint of that bucket's range narrowed to `[min, max]`. A bucket's width is at
//! most 1/16 of its lower bound, so the answer `r` satisfies
//!
//! ```text
//! |r - x| <= x / 32        (relative error at most 3.125 %, no absolute slack)
//! ```
//!
//! whenever `x < LIMIT`; below 32 it is exact, and the 0th and 1000th per mille (the rank-1 and
//! rank-n samples) are the exact minimum and maximum. If `x >= LIMIT` the answer only lies in
//! `[LIMIT, max]`.
//!
//! (Answering a bucket's midpoint halves the error of answering its upper bound, so 16 buckets
//! per power of two give the 3.125 % that 32 buckets and upper bounds would, at half the size.)

use core::fmt;

/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 4;
/// Buckets per power-of-two range.
pub const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// log2 of [`LIMIT`].
const LIMIT_BITS: u32 = 40;
/// Values from here on (2^40 ns, about 18.3 minutes) land in the overflow bucket, where the
/// relative error bound no longer holds.
pub const LIMIT: u64 = 1 << LIMIT_BITS;
/// The bucket of every value `>= LIMIT`: one past the bucket of `LIMIT - 1`.
const OVERFLOW: usize = (LIMIT_BITS - SUB_BITS) as usize * SUB_BUCKETS + SUB_BUCKETS;
/// Number of buckets, the overflow bucket included.
const BUCKETS: usize = OVERFLOW + 1;

/// The bucket of `value`.
///
/// With `e = floor(log2 value)` and `shift = max(e, 4) - 4`, the bucket is
/// `16 * shift + (value >> shift)`: `value >> shift` is the value itself below 32 and lies in
/// `16..32` above, so consecutive power-of-two ranges take consecutive runs of 16 buckets.
fn bucket_of(value: u64) -> usize {
    if value >= LIMIT {
        return OVERFLOW;
    }
    let e = 63 - (value | 1).leading_zeros();
    let shift = e.saturating_sub(SUB_BITS);
    (shift as usize) * SUB_BUCKETS + (value >> shift) as usize
}

/// The smallest and largest value of bucket `index` (inclusive).
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index >= OVERFLOW {
        return (LIMIT, u64::MAX);
    }
    let shift = (index / SUB_BUCKETS).saturating_sub(1);
    let low = ((index - shift * SUB_BUCKETS) as u64) << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A latency histogram; see the [module documentation](self) for its buckets and accuracy.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum: u128,
    /// `u64::MAX` while empty.
    min: u64,
    /// 0 while empty.
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self { counts: [0; BUCKETS], count: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    /// Records one sample.
    pub fn record(&mut self, value: u64) {
        let bucket = &mut self.counts[bucket_of(value)];
        *bucket = bucket.saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(u128::from(value));
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every sample of `other`, as if each had been recorded here.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all samples (exact: a `u128` cannot overflow from `u64` samples in practice).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// Smallest sample, exact.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest sample, exact.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean of the samples, exact up to rounding down (`sum / count`).
    pub fn mean(&self) -> Option<u64> {
        // The mean lies between min and max, so it fits in a u64.
        (self.count > 0).then(|| (self.sum / u128::from(self.count)) as u64)
    }

    /// The `per_mille`/1000 percentile (990 for p99), by the nearest-rank definition: the
    /// sample of rank `max(1, ceil(per_mille * count / 1000))` in ascending order, within the
    /// error bound of the [module documentation](self). `per_mille` above 1000 counts as 1000.
    /// `None` if the histogram is empty.
    pub fn percentile(&self, per_mille: u32) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let per_mille = u128::from(per_mille.min(1000));
        let rank = ((per_mille * u128::from(self.count)).div_ceil(1000) as u64).max(1);
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                let (low, high) = (low.max(self.min), high.min(self.max));
                return Some(low + (high - low) / 2);
            }
        }
        // Only reachable if bucket counts saturated.
        Some(self.max)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("mean", &self.mean())
            .field("p50", &self.percentile(500))
            .field("p99", &self.percentile(990))
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const PER_MILLES: [u32; 6] = [0, 500, 900, 990, 999, 1000];

    /// The exact nearest-rank percentile of `sorted` (ascending, not empty).
    fn exact_percentile(sorted: &[u64], per_mille: u32) -> u64 {
        let n = sorted.len() as u64;
        let rank = (u64::from(per_mille) * n).div_ceil(1000).max(1);
        sorted[(rank - 1) as usize]
    }

    fn histogram_of(values: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record(v);
        }
        h
    }

    /// Checks `h` (built from `values`) against the exact reference; `Err` names the mismatch.
    fn check_against_reference(h: &Histogram, values: &[u64]) -> Result<(), alloc::string::String> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len() as u64;
        let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
        let expect = |what: &str, got: Option<u64>, want: u64| {
            if got == Some(want) {
                Ok(())
            } else {
                Err(alloc::format!("{what}: got {got:?}, want {want}"))
            }
        };
        if h.count() != n || h.sum() != sum {
            return Err(alloc::format!("count/sum: got {}/{}, want {n}/{sum}", h.count(), h.sum()));
        }
        expect("min", h.min(), sorted[0])?;
        expect("max", h.max(), sorted[sorted.len() - 1])?;
        expect("mean", h.mean(), (sum / u128::from(n)) as u64)?;
        for per_mille in PER_MILLES {
            let exact = exact_percentile(&sorted, per_mille);
            let got = h.percentile(per_mille).unwrap();
            let ok = if exact < LIMIT {
                // |r - x| <= x / 32, in integers: 32 |r - x| <= x.
                32 * u128::from(got.abs_diff(exact)) <= u128::from(exact)
            } else {
                (LIMIT..=sorted[sorted.len() - 1]).contains(&got)
            };
            if !ok {
                return Err(alloc::format!("p{per_mille}/1000: got {got}, exact {exact}"));
            }
        }
        Ok(())
    }

    #[test]
    fn size_and_static() {
        static IN_A_STATIC: Histogram = Histogram::new();
        assert_eq!(IN_A_STATIC.count(), 0);
        assert_eq!(BUCKETS, 593);
        assert!(core::mem::size_of::<Histogram>() <= 5 * 1024, "{}", core::mem::size_of::<Histogram>());
    }

    #[test]
    fn empty() {
        let h = Histogram::new();
        assert_eq!(h, Histogram::default());
        assert_eq!(h.count(), 0);
        assert_eq!(h.sum(), 0);
        assert_eq!((h.min(), h.max(), h.mean()), (None, None, None));
        for per_mille in PER_MILLES {
            assert_eq!(h.percentile(per_mille), None);
        }
    }

    #[test]
    fn single_value() {
        for v in [0, 1, 31, 32, 33, 1000, 999_999_999, 10_000_000_000, LIMIT - 1, LIMIT, u64::MAX] {
            let h = histogram_of(&[v]);
            assert_eq!((h.count(), h.sum()), (1, u128::from(v)));
            assert_eq!((h.min(), h.max(), h.mean()), (Some(v), Some(v), Some(v)));
            for per_mille in PER_MILLES.into_iter().chain([1, 250, 5000, u32::MAX]) {
                assert_eq!(h.percentile(per_mille), Some(v), "{v} p{per_mille}");
            }
        }
    }

    /// Below 32 every value has a bucket of its own, so every percentile is exact.
    #[test]
    fn small_values_exact() {
        let mut values = Vec::new();
        for v in 0..32u64 {
            for _ in 0..(v % 5 + 1) {
                values.push(v);
            }
        }
        let h = histogram_of(&values);
        values.sort_unstable();
        for per_mille in 0..=1000 {
            assert_eq!(h.percentile(per_mille), Some(exact_percentile(&values, per_mille)), "p{per_mille}");
        }
    }

    #[test]
    fn min_max_mean_exact() {
        let h = histogram_of(&[3, 1_000_000_007, 42, 10_000_000_000]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 11_000_000_052);
        assert_eq!(h.min(), Some(3));
        assert_eq!(h.max(), Some(10_000_000_000));
        assert_eq!(h.mean(), Some(2_750_000_013)); // 11_000_000_052 / 4
        let h = histogram_of(&[1, 2]);
        assert_eq!(h.mean(), Some(1)); // rounds down
                                       // The sum does not overflow.
        let h = histogram_of(&[u64::MAX, u64::MAX, u64::MAX]);
        assert_eq!(h.sum(), 3 * u128::from(u64::MAX));
        assert_eq!(h.mean(), Some(u64::MAX));
    }

    #[test]
    fn nearest_rank() {
        // 1..=1000: the exact p50 is 500, p99 990, p99.9 999.
        let values: Vec<u64> = (1..=1000).collect();
        let h = histogram_of(&values);
        check_against_reference(&h, &values).unwrap();
        assert_eq!(h.percentile(0), Some(1));
        assert_eq!(h.percentile(1000), Some(1000));
        // Rank 990 of 1000: 990 lies in bucket [960, 991] (width 2^(9-4) = 32), midpoint 975.
        assert_eq!(h.percentile(990), Some(975));
        // 100 samples, one of them an outlier: p99 is rank 99, not the outlier.
        let mut values = alloc::vec![1000u64; 99];
        values.push(5_000_000_000);
        let h = histogram_of(&values);
        // Rank 99 is 1000, in bucket [992, 1023], narrowed to [min, max] = [1000, 1023]: 1011.
        assert_eq!(h.percentile(990), Some(1011));
        assert_eq!(h.percentile(999), Some(5_000_000_000));
        check_against_reference(&h, &values).unwrap();
    }

    /// A million heavy-tailed samples (log-uniform from 1 ns to about 17 s, from a fixed xorshift
    /// sequence) against the exact reference.
    #[test]
    fn million_samples() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let values: Vec<u64> = (0..1_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 6) >> (57 - (state & 63) % 34)
            })
            .collect();
        let h = histogram_of(&values);
        check_against_reference(&h, &values).unwrap();
    }

    #[test]
    fn overflow_bucket() {
        let values = [5, LIMIT, LIMIT + 7, u64::MAX];
        let h = histogram_of(&values);
        check_against_reference(&h, &values).unwrap();
        assert_eq!(h.percentile(250), Some(5));
        assert!((LIMIT..=u64::MAX).contains(&h.percentile(500).unwrap()));
        assert!((LIMIT..=u64::MAX).contains(&h.percentile(750).unwrap()));
        assert_eq!(h.percentile(1000), Some(u64::MAX));
    }

    #[test]
    fn merge() {
        let a = [0u64, 17, 40, 1_000_000, 9_999_999_999];
        let b = [3u64, 17, 123_456_789, LIMIT + 1];
        let mut merged = histogram_of(&a);
        merged.merge(&histogram_of(&b));
        let all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(merged, histogram_of(&all));
        check_against_reference(&merged, &all).unwrap();
        // Merging an empty histogram, either way round, changes nothing.
        let mut h = histogram_of(&a);
        h.merge(&Histogram::new());
        assert_eq!(h, histogram_of(&a));
        let mut h = Histogram::new();
        h.merge(&histogram_of(&a));
        assert_eq!(h, histogram_of(&a));
    }

    /// The buckets tile `0..=u64::MAX` in order, every value maps to the bucket whose bounds hold
    /// it, and every bucket below `LIMIT` is at most 1/16 as wide as its lower bound.
    #[test]
    fn bucket_scheme() {
        let mut next = 0u64;
        for index in 0..BUCKETS {
            let (low, high) = bucket_bounds(index);
            assert_eq!(low, next, "bucket {index} starts after a gap or overlap");
            assert!(low <= high);
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high), index);
            if index < OVERFLOW {
                let width = high - low + 1;
                assert!(width.is_power_of_two());
                assert!(low < 32 && width == 1 || width * 16 <= low, "bucket {index}: [{low}, {high}]");
            }
            next = high.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(bucket_bounds(OVERFLOW - 1).1, LIMIT - 1);
        for e in 1..=LIMIT_BITS {
            let v = 1u64 << e;
            assert_eq!(bucket_of(v - 1) + 1, bucket_of(v), "2^{e}");
        }
    }

    /// Latencies as the hypervisor sees them: many small, some huge (up to about 1.7e10 ns), and
    /// values right at power-of-two boundaries. (One mapped strategy rather than `prop_oneof!`,
    /// which is many times slower to generate in unoptimised test builds.)
    fn latency() -> impl Strategy<Value = u64> {
        (0u8..5, any::<u64>()).prop_map(|(kind, r)| match kind {
            0 => r % 64,
            1 => r % 100_000,
            2 => r % 10_000_000_001,
            // Log-uniform: below 2^(bits+1), bits in 0..34.
            3 => (r >> 6) >> (57 - (r & 63) % 34),
            // 2^e - 1, 2^e, 2^e + 1 for e in 1..=35.
            _ => (1u64 << (1 + r % 35)) + (r >> 8) % 3 - 1,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn matches_exact_reference(values in prop::collection::vec(latency(), 1..2000)) {
            let h = histogram_of(&values);
            prop_assert_eq!(check_against_reference(&h, &values), Ok(()));
        }

        #[test]
        fn matches_exact_reference_full_range(values in prop::collection::vec(any::<u64>(), 1..64)) {
            let h = histogram_of(&values);
            prop_assert_eq!(check_against_reference(&h, &values), Ok(()));
        }

        #[test]
        fn merge_is_recording_both(a in prop::collection::vec(latency(), 0..300),
                                   b in prop::collection::vec(latency(), 0..300)) {
            let mut merged = histogram_of(&a);
            merged.merge(&histogram_of(&b));
            let all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(&merged, &histogram_of(&all));
        }

        #[test]
        fn percentile_is_monotonic(values in prop::collection::vec(latency(), 1..500)) {
            let h = histogram_of(&values);
            let mut previous = 0;
            for per_mille in 0..=1000 {
                let p = h.percentile(per_mille).unwrap();
                prop_assert!(p >= previous, "p{} = {} < {}", per_mille, p, previous);
                previous = p;
            }
        }
    }
}
