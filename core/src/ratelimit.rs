//! Rate limits for diagnostics a guest can provoke.
//!
//! A guest must not be able to flood the hypervisor's console (Hafnium's rule: errors caused by
//! a VM are not logged during normal operation). Each kind of diagnostic has a [`LogLimiter`]:
//! every occurrence is counted, the first [`LogLimiter::FIRST`] are printed, and after that only
//! the occurrences whose number is a power of two, so that `n` occurrences print at most
//! `FIRST + log2(n)` lines (a million print 24) and the count still shows how often it happened.
//! The limit counts events, not time, so it behaves the same under `-icount` as on the host's
//! clock.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counts one kind of diagnostic and says which occurrences to print.
#[derive(Debug, Default)]
pub struct LogLimiter {
    count: AtomicU64,
}

/// An occurrence that is to be printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Its number, from 1.
    pub occurrence: u64,
    /// Some occurrences before it were not printed (say so in the line).
    pub after_suppressed: bool,
}

impl LogLimiter {
    /// Occurrences printed before the limit starts.
    pub const FIRST: u64 = 8;

    pub const fn new() -> Self {
        LogLimiter { count: AtomicU64::new(0) }
    }

    /// Count one occurrence; `Some` if it is to be printed.
    pub fn admit(&self) -> Option<Admitted> {
        let occurrence = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        Self::prints(occurrence).then_some(Admitted { occurrence, after_suppressed: occurrence > Self::FIRST + 1 })
    }

    /// Whether occurrence `n` (from 1) is printed.
    pub fn prints(n: u64) -> bool {
        n <= Self::FIRST || n.is_power_of_two()
    }

    /// Occurrences so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ones_then_powers_of_two() {
        let limiter = LogLimiter::new();
        let printed: alloc::vec::Vec<u64> = (0..1000).filter_map(|_| limiter.admit()).map(|a| a.occurrence).collect();
        assert_eq!(printed, [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512]);
        assert_eq!(limiter.count(), 1000);
    }

    #[test]
    fn suppression_is_announced() {
        let limiter = LogLimiter::new();
        let admitted: alloc::vec::Vec<Admitted> = (0..20).filter_map(|_| limiter.admit()).collect();
        assert!(admitted[..8].iter().all(|a| !a.after_suppressed));
        assert_eq!(admitted[8], Admitted { occurrence: 16, after_suppressed: true });
    }

    /// The bound: at most FIRST + log2(n) lines for n occurrences.
    #[test]
    fn lines_grow_logarithmically() {
        for n in [1u64, 7, 8, 9, 100, 10_000, 1_000_000] {
            let lines = (1..=n).filter(|&i| LogLimiter::prints(i)).count() as u64;
            assert!(lines <= LogLimiter::FIRST + u64::from(64 - n.leading_zeros()), "{n}: {lines}");
        }
        assert_eq!((1..=1_000_000u64).filter(|&i| LogLimiter::prints(i)).count(), 8 + 16);
    }
}
