//! Deliberately faulting instructions: a per-CPU "probe in progress" marker that lets the
//! synchronous exception handler record the exception, skip the instruction and return.
//! A synchronous exception with no probe armed stays fatal.
//!
//! [`run_nested`] also makes the exception handler itself take a second, nested synchronous
//! exception (a read of an address that aborts) before it returns: a fault in the exception
//! path, which must leave the first exception's return state intact.

use crate::exceptions::TrapFrame;
use crate::{arch, percpu};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const NOTHING_CAUGHT: u64 = u64::MAX;

/// The marker and what the handler saw.
pub struct ProbeState {
    armed: AtomicBool,
    /// ESR_EL1 of the caught exception.
    caught_esr: AtomicU64,
    /// An address the handler reads (a nested fault) after catching; 0: none.
    nested_read: AtomicU64,
    /// ESR_EL1 of the nested exception, if the nested read raised one.
    nested_esr: AtomicU64,
}

impl ProbeState {
    /// Not armed.
    pub const fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            caught_esr: AtomicU64::new(NOTHING_CAUGHT),
            nested_read: AtomicU64::new(0),
            nested_esr: AtomicU64::new(NOTHING_CAUGHT),
        }
    }
}

/// Runs `f`, which must consist of one possibly-faulting instruction (plus code that cannot
/// fault), with the marker armed and IRQs masked (so the task cannot move to another CPU).
/// Returns the exception's ESR_EL1, or `None` if the instruction completed.
pub fn run_esr(f: impl FnOnce()) -> Option<u64> {
    let irq = arch::irq_save_disable();
    let probe = &percpu::this().probe;
    probe.caught_esr.store(NOTHING_CAUGHT, Ordering::Relaxed);
    probe.armed.store(true, Ordering::Relaxed);
    f();
    probe.armed.store(false, Ordering::Relaxed);
    let esr = probe.caught_esr.load(Ordering::Relaxed);
    arch::irq_restore(irq);
    (esr != NOTHING_CAUGHT).then_some(esr)
}

/// As [`run_esr`], but returns the exception class only.
pub fn run(f: impl FnOnce()) -> Option<u64> {
    run_esr(f).map(|esr| esr >> 26)
}

/// As [`run_esr`]; if `f` faults, the handler reads `address` (which must be device memory
/// whose reads have no effect) before it returns. Returns the ESRs of both exceptions.
pub fn run_nested(address: u64, f: impl FnOnce()) -> (Option<u64>, Option<u64>) {
    let probe = &percpu::this().probe;
    let irq = arch::irq_save_disable();
    probe.nested_esr.store(NOTHING_CAUGHT, Ordering::Relaxed);
    probe.nested_read.store(address, Ordering::Relaxed);
    let outer = run_esr(f);
    probe.nested_read.store(0, Ordering::Relaxed);
    let nested = probe.nested_esr.load(Ordering::Relaxed);
    arch::irq_restore(irq);
    (outer, (nested != NOTHING_CAUGHT).then_some(nested))
}

/// Called for every synchronous exception from EL1: if a probe is armed on this CPU, records
/// the exception, steps over the faulting instruction and disarms (a second fault is fatal,
/// but for the nested read asked for by [`run_nested`]). Returns false when no probe was armed.
pub fn catch(frame: &mut TrapFrame) -> bool {
    let probe = &percpu::this().probe;
    if !probe.armed.swap(false, Ordering::Relaxed) {
        return false;
    }
    let esr = arch::esr();
    frame.elr += 4;
    let nested = probe.nested_read.swap(0, Ordering::Relaxed);
    if nested != 0 {
        // The nested exception saves and restores its own frame (below this one) and
        // clobbers only ESR/FAR/ELR/SPSR_EL1, whose values for this exception are in `esr`
        // and `frame`.
        probe.caught_esr.store(NOTHING_CAUGHT, Ordering::Relaxed);
        probe.armed.store(true, Ordering::Relaxed);
        // SAFETY: `nested` is device memory whose reads have no effect (run_nested's contract);
        // if the read aborts, this very function catches it (armed above) and skips it.
        unsafe { asm!("ldr {tmp:w}, [{addr}]", addr = in(reg) nested, tmp = out(reg) _, options(nostack, readonly)) };
        probe.armed.store(false, Ordering::Relaxed);
        probe.nested_esr.store(probe.caught_esr.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    probe.caught_esr.store(esr, Ordering::Relaxed);
    true
}
