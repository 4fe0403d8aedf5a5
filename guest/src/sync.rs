//! A spin lock that also masks IRQs on the local CPU while held, so that an interrupt handler
//! on the same CPU can never spin on a lock its interrupted code holds.

use crate::arch::{self, IrqState};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// Mutual exclusion between CPUs and against local interrupt handlers.
pub struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one holder at a time, so sharing the lock
// between CPUs is sound whenever the data itself may move between CPUs.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(data: T) -> Self {
        Self { locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
    }

    /// Masks IRQs and spins until the lock is ours.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        let irq = arch::irq_save_disable();
        let mut spins = 0u64;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            arch::spin_hint();
        }
        if spins != 0 {
            crate::percpu::count_lock_spins(spins);
        }
        SpinGuard { lock: self, irq }
    }
}

/// Access to the locked data; unlocks and restores the IRQ mask when dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    irq: IrqState,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock, so no one else accesses the data.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: holding the guard means holding the lock, so no one else accesses the data.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        arch::irq_restore(self.irq);
    }
}

/// A value written once during boot (before other CPUs look at it) and read-only afterwards.
pub struct BootOnce<T> {
    set: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is written once, before `set` is published with Release ordering, and only
// read after `set` is observed with Acquire ordering; it is never written again.
unsafe impl<T: Sync + Send> Sync for BootOnce<T> {}

impl<T> BootOnce<T> {
    /// Not yet set.
    pub const fn new() -> Self {
        Self { set: AtomicBool::new(false), value: UnsafeCell::new(None) }
    }

    /// Stores the value; panics if called twice.
    pub fn set(&self, value: T) {
        assert!(!self.set.load(Ordering::Acquire), "BootOnce set twice");
        // SAFETY: `set` is false, so no reader has been given a reference yet, and only the boot
        // CPU calls `set` (before any other CPU runs).
        unsafe { *self.value.get() = Some(value) };
        self.set.store(true, Ordering::Release);
    }

    /// The value, if set.
    pub fn get(&self) -> Option<&T> {
        if self.set.load(Ordering::Acquire) {
            // SAFETY: once `set` is true the value is never written again.
            unsafe { (*self.value.get()).as_ref() }
        } else {
            None
        }
    }
}
