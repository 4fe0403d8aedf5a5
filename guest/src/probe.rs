//! Deliberately faulting instructions: a per-CPU "probe in progress" marker that lets the
//! synchronous exception handler record the exception, skip the instruction and return.
//! A synchronous exception with no probe armed stays fatal.

use crate::exceptions::TrapFrame;
use crate::{arch, percpu};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const NOTHING_CAUGHT: u64 = u64::MAX;

/// The marker and what the handler saw.
pub struct ProbeState {
    armed: AtomicBool,
    caught_ec: AtomicU64,
}

impl ProbeState {
    /// Not armed.
    pub const fn new() -> Self {
        Self { armed: AtomicBool::new(false), caught_ec: AtomicU64::new(NOTHING_CAUGHT) }
    }
}

/// Runs `f`, which must consist of one possibly-faulting instruction (plus code that cannot
/// fault), with the marker armed and IRQs masked (so the task cannot move to another CPU).
/// Returns the exception class the instruction raised, or `None` if it completed.
pub fn run(f: impl FnOnce()) -> Option<u64> {
    let irq = arch::irq_save_disable();
    let probe = &percpu::this().probe;
    probe.caught_ec.store(NOTHING_CAUGHT, Ordering::Relaxed);
    probe.armed.store(true, Ordering::Relaxed);
    f();
    probe.armed.store(false, Ordering::Relaxed);
    let ec = probe.caught_ec.load(Ordering::Relaxed);
    arch::irq_restore(irq);
    (ec != NOTHING_CAUGHT).then_some(ec)
}

/// Called for every synchronous exception from EL1: if a probe is armed on this CPU, records
/// the exception class, steps over the faulting instruction and disarms (a second fault is
/// fatal). Returns false when no probe was armed.
pub fn catch(frame: &mut TrapFrame) -> bool {
    let probe = &percpu::this().probe;
    if !probe.armed.swap(false, Ordering::Relaxed) {
        return false;
    }
    probe.caught_ec.store(arch::esr() >> 26, Ordering::Relaxed);
    frame.elr += 4;
    true
}
