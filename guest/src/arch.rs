//! Small typed wrappers around AArch64 system registers, barriers and cache maintenance.
//!
//! Only registers whose access has no effect beyond what the function's name says are
//! wrapped as safe functions; anything that can break memory safety (translation, vectors)
//! lives, unsafe, in the module that owns that concept.

use core::arch::asm;

/// Defines a safe reader for a system register whose read has no side effects.
macro_rules! read_only_sysreg {
    ($(#[$doc:meta])* $fn:ident, $reg:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $fn() -> u64 {
            let value: u64;
            // SAFETY: reading this register has no side effects and touches no memory.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            value
        }
    };
}

read_only_sysreg!(
    /// MPIDR_EL1: this CPU's affinity (compare with the DT `reg` of `/cpus/cpu@N`).
    mpidr, "mpidr_el1");
read_only_sysreg!(
    /// CNTFRQ_EL0: the generic timer frequency in Hz.
    counter_frequency, "cntfrq_el0");
read_only_sysreg!(
    /// ESR_EL1: syndrome of the last exception taken to EL1.
    esr, "esr_el1");
read_only_sysreg!(
    /// FAR_EL1: faulting virtual address of the last abort taken to EL1.
    far, "far_el1");
read_only_sysreg!(
    /// ID_AA64MMFR0_EL1: memory model features (PARange).
    id_aa64mmfr0, "id_aa64mmfr0_el1");
read_only_sysreg!(
    /// CurrentEL (bits 3:2 hold the exception level).
    current_el, "currentel");
read_only_sysreg!(
    /// VBAR_EL1: the exception vector base.
    vbar, "vbar_el1");

/// MPIDR affinity fields Aff3.Aff2.Aff1.Aff0 packed as the DT `/cpus/cpu@N` `reg` and PSCI
/// use them (Aff3 at bits 39:32).
pub fn mpidr_affinity() -> u64 {
    mpidr() & 0xFF_00FF_FFFF
}

/// CNTVCT_EL0, the virtual counter, read after an ISB so it is not speculated early.
#[inline(always)]
pub fn virtual_count() -> u64 {
    let value: u64;
    // SAFETY: the ISB and the counter read have no side effects on memory.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The spin-wait hint, once per try of a spin loop: `yield`. Under QEMU's TCG round robin (as
/// with `-icount`) it ends this vCPU's turn, so that a lock holder descheduled inside its
/// critical section runs instead of this CPU spinning for the rest of its time slice
/// (`core::hint::spin_loop` is `isb` on arm64, which QEMU does not treat as a yield).
#[inline(always)]
pub fn spin_hint() {
    // SAFETY: `yield` is a hint with no architectural effect.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// The logical index of the running CPU, kept in TPIDR_EL1 since boot.
#[inline(always)]
pub fn cpu_index() -> usize {
    let value: u64;
    // SAFETY: TPIDR_EL1 is a plain software register; reading it has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value as usize
}

/// Saved PSTATE.DAIF, to restore interrupt masking after a critical section.
#[derive(Clone, Copy)]
pub struct IrqState(u64);

// The four DAIF writers below are compiler barriers (no `nomem`): a lock taken in a section
// with IRQs masked must not have its atomics moved before the mask or after the unmask.

/// Masks IRQs and returns the previous mask state.
#[inline(always)]
pub fn irq_save_disable() -> IrqState {
    let daif: u64;
    // SAFETY: masking IRQs only delays interrupt delivery; it cannot break memory safety.
    unsafe { asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack, preserves_flags)) };
    IrqState(daif)
}

/// Restores the IRQ mask saved by [`irq_save_disable`].
#[inline(always)]
pub fn irq_restore(state: IrqState) {
    // SAFETY: restoring a DAIF value previously read from DAIF puts back a valid mask state.
    unsafe { asm!("msr daif, {}", in(reg) state.0, options(nostack, preserves_flags)) };
}

/// Unmasks IRQs.
#[inline(always)]
pub fn irq_enable() {
    // SAFETY: every interrupt handler is installed before any CPU unmasks IRQs.
    unsafe { asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
}

/// Masks IRQs.
#[inline(always)]
pub fn irq_disable() {
    // SAFETY: masking IRQs only delays interrupt delivery.
    unsafe { asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// True when IRQs are masked on this CPU.
pub fn irqs_masked() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effects.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif & (1 << 7) != 0
}

/// Waits for an interrupt (or any other wake-up event).
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: WFI only suspends execution until an interrupt is pending.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Smallest data cache line size in bytes (CTR_EL0.DminLine), for cache maintenance loops.
pub fn dcache_line_size() -> usize {
    let ctr: u64;
    // SAFETY: CTR_EL0 is a read-only identification register.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xF)
}

/// Invalidates the data cache lines covering `[start, start + len)` to the point of coherency.
///
/// # Safety
/// Any dirty data in the range is discarded: the caller must know that memory holds the
/// current contents (e.g. it was written with the MMU and caches off).
pub unsafe fn invalidate_dcache_range(start: usize, len: usize) {
    let line = dcache_line_size();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: the caller guarantees that discarding the line loses no data.
        unsafe { asm!("dc ivac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier has no effect besides ordering.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
