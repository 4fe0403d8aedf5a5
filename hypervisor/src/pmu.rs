//! The guest's PMU: the physical CPU's PMUv3, given to the vCPU that owns the CPU
//! (`asyncpf_core::pmu` decides what is offered and MDCR_EL2). The hypervisor never uses the
//! PMU itself, so its registers need no save and restore at exits: they only change at the
//! vCPU's power transitions, where [`reset`] puts them in a quiet reset state (as KVM resets a
//! vCPU's PMU at CPU_ON), so that nothing counts, and no overflow interrupt is raised, for a
//! vCPU that is off or just started.
//!
//! `aarch64-cpu` has MDCR_EL2 but none of the PMU registers; those used here are wrapped
//! below, one function each.

use core::arch::asm;

use aarch64_cpu::registers::{Writeable, MDCR_EL2};
use asyncpf_core::pmu::{self, pmcr};

use crate::arch;

/// ID_AA64DFR0_EL1 (op0 3, op1 0, CRn 0, CRm 5, op2 0).
fn aa64dfr0() -> u64 {
    arch::read_id_register(5, 0).unwrap_or(0)
}

/// Whether this CPU's PMU is given to the guest (a PMUv3).
pub fn offered() -> bool {
    pmu::offered(aa64dfr0())
}

/// PMCR_EL0 as EL2 reads it (N is the hardware's number of event counters).
fn pmcr_el0() -> u64 {
    let v: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effects (MDCR_EL3 does not trap it on the
    // `virt` machine, which has no EL3 firmware).
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

macro_rules! write_pmu_register {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        fn $name(value: u64) {
            // SAFETY: the PMU belongs to the vCPU of this CPU, which is not running (the
            // hypervisor is); the write changes only counting and the PMU's own interrupt.
            unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nomem, nostack, preserves_flags)) };
        }
    };
}

write_pmu_register!(
    /// PMCR_EL0: enable (E), reset the event counters (P) and the cycle counter (C).
    set_pmcr_el0, "pmcr_el0"
);
write_pmu_register!(
    /// PMCNTENCLR_EL0: disable the counters whose bits are set.
    disable_counters, "pmcntenclr_el0"
);
write_pmu_register!(
    /// PMINTENCLR_EL1: disable the overflow interrupts whose bits are set.
    disable_overflow_interrupts, "pmintenclr_el1"
);
write_pmu_register!(
    /// PMOVSCLR_EL0: clear the overflow flags whose bits are set.
    clear_overflows, "pmovsclr_el0"
);
write_pmu_register!(
    /// PMUSERENR_EL0: what EL0 may access.
    set_pmuserenr_el0, "pmuserenr_el0"
);
write_pmu_register!(
    /// PMCCFILTR_EL0: where the cycle counter counts.
    set_pmccfiltr_el0, "pmccfiltr_el0"
);
write_pmu_register!(
    /// PMSELR_EL0: the event counter PMXEVTYPER_EL0 reaches.
    set_pmselr_el0, "pmselr_el0"
);
write_pmu_register!(
    /// PMXEVTYPER_EL0: the selected counter's event and filter.
    set_pmxevtyper_el0, "pmxevtyper_el0"
);

/// Give this CPU's PMU to its vCPU (once per CPU, with the other traps): MDCR_EL2 from
/// `asyncpf_core::pmu::mdcr_el2` (no traps and HPMN = N for a PMUv3; everything trapped
/// otherwise), then the PMU in its reset state.
pub fn configure_el2() {
    let dfr0 = aa64dfr0();
    let pmcr = if pmu::version(dfr0) != 0 { pmcr_el0() } else { 0 };
    MDCR_EL2.set(pmu::mdcr_el2(dfr0, pmcr));
    arch::isb();
    reset();
}

/// The guest's PMU at a vCPU power transition (CPU_OFF, and CPU_ON or the first power-on): all
/// counting stopped, counters zeroed, overflow flags and interrupts cleared, EL0 access off,
/// filters and event types 0. The values the architecture leaves UNKNOWN after a reset are
/// these zeros; PMCR_EL0.E is 0 as after a Warm reset.
pub fn reset() {
    if !offered() {
        return;
    }
    const ALL: u64 = 0xffff_ffff;
    set_pmcr_el0(pmcr::P | pmcr::C);
    disable_counters(ALL);
    disable_overflow_interrupts(ALL);
    clear_overflows(ALL);
    set_pmuserenr_el0(0);
    set_pmccfiltr_el0(0);
    for n in 0..pmu::counters(pmcr_el0()) {
        set_pmselr_el0(n);
        arch::isb();
        set_pmxevtyper_el0(0);
    }
    set_pmselr_el0(0);
    arch::isb();
}

/// The guest's PMU overflow interrupt request (level): what the physical PPI 23 follows.
pub fn overflow_output() -> bool {
    if !offered() {
        return false;
    }
    let (intenset, ovsset): (u64, u64);
    // SAFETY: reading PMINTENSET_EL1 and PMOVSSET_EL0 at EL2 has no side effects.
    unsafe {
        asm!("mrs {}, pmintenset_el1", "mrs {}, pmovsset_el0", out(reg) intenset, out(reg) ovsset,
             options(nomem, nostack, preserves_flags))
    };
    pmu::overflow_output(pmcr_el0(), intenset, ovsset)
}
