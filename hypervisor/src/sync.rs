//! The hypervisor's spin lock: `spin::Mutex` relaxing with the `yield` hint
//! ([`crate::arch::spin_hint`]), so that under QEMU's round robin a CPU waiting for a lock lets
//! the holder run instead of spinning for the rest of its time slice.

/// Relax by [`crate::arch::spin_hint`].
pub struct YieldHint;

impl spin::RelaxStrategy for YieldHint {
    #[inline(always)]
    fn relax() {
        crate::arch::spin_hint();
    }
}

/// A spin lock whose waiters yield ([`YieldHint`]).
pub type Mutex<T> = spin::mutex::Mutex<T, YieldHint>;
pub use spin::mutex::MutexGuard;
