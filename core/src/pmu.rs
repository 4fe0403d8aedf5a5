//! The guest's Performance Monitors Unit (PMUv3, Arm ARM D13): what the hypervisor offers and
//! what it writes to MDCR_EL2 for it.
//!
//! Each vCPU owns its physical CPU for its whole life, so the guest is given the CPU's PMU
//! itself, as it is given the timers: nothing traps (MDCR_EL2.TPM and TPMCR clear), every event
//! counter is the guest's (MDCR_EL2.HPMN = PMCR_EL0.N, so the guest reads the hardware's N),
//! and nothing counts while the CPU is at EL2, whatever the guest writes to the filters
//! (`PMEVTYPER<n>_EL0.NSH` and PMCCFILTR_EL0.NSH ask for EL2 to be counted):
//! * MDCR_EL2.HPMD (FEAT_PMUv3p1) prohibits the event counters below HPMN from counting at EL2,
//!   and the cycle counter too while PMCR_EL0.DP is set;
//! * MDCR_EL2.HCCD (FEAT_PMUv3p5) prohibits the cycle counter at EL2 whatever PMCR_EL0.DP says.
//!   Without FEAT_PMUv3p5 (e.g. QEMU's `a64fx`, PMUv3p1), a guest that sets PMCCFILTR_EL0.NSH
//!   and clears PMCR_EL0.DP counts the hypervisor's cycles in PMCCNTR_EL0 (docs/abi.md §6).
//!
//! The overflow interrupt (PPI 7, INTID 23, as on QEMU's `virt` and KVM) is the physical one,
//! handed to the guest through a hardware list register like the timers' (level-sensitive:
//! [`overflow_output`]).
//!
//! A PMU whose ID field says IMPLEMENTATION DEFINED (0xF) is not a PMUv3: it is hidden
//! (PMUVer reads as 0) and its registers trap and are UNDEFINED, as on a CPU without a PMU.

/// ID_AA64DFR0_EL1.PMUVer: bits 11:8.
pub const PMUVER_SHIFT: u32 = 8;
/// ID_DFR0_EL1.PerfMon (the AArch32 view): bits 27:24.
pub const PERFMON_SHIFT: u32 = 24;
/// PMUVer / PerfMon value of an IMPLEMENTATION DEFINED PMU (not PMUv3).
pub const IMPDEF: u64 = 0xf;
/// PMUVer of FEAT_PMUv3p1 (MDCR_EL2.HPMD) and FEAT_PMUv3p5 (MDCR_EL2.HCCD).
pub const PMUV3P1: u64 = 4;
pub const PMUV3P5: u64 = 6;

/// The PMU overflow interrupt: PPI 7, INTID 23 (QEMU's `virt` wires the CPU's PMU there, and
/// KVM guests' device trees name it).
pub const OVERFLOW_PPI: u32 = 7;
pub const OVERFLOW_INTID: u32 = 16 + OVERFLOW_PPI;

/// PMCR_EL0 fields.
pub mod pmcr {
    /// E: enable the counters below MDCR_EL2.HPMN (all of them here) and PMCCNTR_EL0.
    pub const E: u64 = 1 << 0;
    /// P: reset the event counters (write-only, reads as 0).
    pub const P: u64 = 1 << 1;
    /// C: reset the cycle counter (write-only, reads as 0).
    pub const C: u64 = 1 << 2;
    /// DP: disable the cycle counter where event counting is prohibited.
    pub const DP: u64 = 1 << 5;
    /// LC: the cycle counter overflows at 64 bits.
    pub const LC: u64 = 1 << 6;
    /// N: the number of event counters, bits 15:11.
    pub const N_SHIFT: u32 = 11;
    pub const N_MASK: u64 = 0x1f;
}

/// MDCR_EL2 fields the PMU uses.
pub mod mdcr {
    /// HPMN: counters below it are EL1's (bits 4:0).
    pub const HPMN_MASK: u64 = 0x1f;
    /// TPMCR: trap PMCR_EL0 accesses.
    pub const TPMCR: u64 = 1 << 5;
    /// TPM: trap every PMU register access.
    pub const TPM: u64 = 1 << 6;
    /// HPMD: event counting prohibited at EL2 (FEAT_PMUv3p1).
    pub const HPMD: u64 = 1 << 17;
    /// HCCD: the cycle counter prohibited at EL2 (FEAT_PMUv3p5).
    pub const HCCD: u64 = 1 << 23;
}

/// The PMU version field (PMUVer) of ID_AA64DFR0_EL1 `dfr0`.
pub const fn version(aa64dfr0: u64) -> u64 {
    (aa64dfr0 >> PMUVER_SHIFT) & 0xf
}

/// Whether the guest is given the PMU: the CPU has a PMUv3 (PMUVer 1..=0xE).
pub const fn offered(aa64dfr0: u64) -> bool {
    let v = version(aa64dfr0);
    v != 0 && v != IMPDEF
}

/// PMCR_EL0.N of the hardware's `pmcr`.
pub const fn counters(pmcr: u64) -> u64 {
    (pmcr >> pmcr::N_SHIFT) & pmcr::N_MASK
}

/// MDCR_EL2 for the guest, given the hardware's ID_AA64DFR0_EL1 and PMCR_EL0 (as read at EL2,
/// where PMCR_EL0.N is the hardware's). Only the PMU's fields are set; the debug traps stay
/// clear. Without a PMUv3 the registers trap (and the guest gets UNDEFINED).
pub const fn mdcr_el2(aa64dfr0: u64, pmcr: u64) -> u64 {
    let hpmn = counters(pmcr) & mdcr::HPMN_MASK;
    if !offered(aa64dfr0) {
        return mdcr::TPM | mdcr::TPMCR | hpmn;
    }
    let v = version(aa64dfr0);
    let hpmd = if v >= PMUV3P1 { mdcr::HPMD } else { 0 };
    let hccd = if v >= PMUV3P5 { mdcr::HCCD } else { 0 };
    hpmn | hpmd | hccd
}

/// The PMU's overflow interrupt request, as the guest's PMU raises it (all counters are below
/// HPMN, so PMCR_EL0.E enables them all): some counter whose overflow interrupt is enabled
/// (PMINTENSET_EL1) has overflowed (PMOVSSET_EL0). Level-sensitive: it stays high until the
/// guest clears the overflow, disables the interrupt or the PMU.
pub const fn overflow_output(pmcr: u64, pmintenset: u64, pmovsset: u64) -> bool {
    pmcr & pmcr::E != 0 && pmintenset & pmovsset != 0
}

/// The value the guest reads from the PMU field at `shift` of an ID register: the hardware's,
/// except that an IMPLEMENTATION DEFINED PMU reads as none (it is not offered).
pub const fn guest_pmu_field(value: u64, shift: u32) -> u64 {
    if (value >> shift) & 0xf == IMPDEF {
        value & !(0xf << shift)
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10's `a64fx`: ID_AA64DFR0_EL1 0x10305408 (PMUv3p1), PMCR_EL0 0x46014040 (N = 8).
    const A64FX_DFR0: u64 = 0x1030_5408;
    const A64FX_PMCR: u64 = 0x4601_4040;

    #[test]
    fn a64fx_gets_its_pmu_with_el2_event_counting_prohibited() {
        assert_eq!(version(A64FX_DFR0), PMUV3P1);
        assert!(offered(A64FX_DFR0));
        assert_eq!(counters(A64FX_PMCR), 8);
        // HPMN = 8, HPMD; no HCCD (PMUv3p5 only); no traps.
        assert_eq!(mdcr_el2(A64FX_DFR0, A64FX_PMCR), 8 | mdcr::HPMD);
    }

    #[test]
    fn pmuv3p5_also_keeps_the_cycle_counter_out_of_el2() {
        for v in PMUV3P5..IMPDEF {
            let dfr0 = v << PMUVER_SHIFT;
            let m = mdcr_el2(dfr0, 6 << pmcr::N_SHIFT);
            assert_eq!(m, 6 | mdcr::HPMD | mdcr::HCCD, "PMUVer {v:#x}");
            assert_eq!(m & (mdcr::TPM | mdcr::TPMCR), 0);
        }
        // PMUv3 (8.0): neither HPMD nor HCCD exists (RES0).
        assert_eq!(mdcr_el2(1 << PMUVER_SHIFT, 6 << pmcr::N_SHIFT), 6);
    }

    #[test]
    fn no_pmuv3_traps_everything() {
        for v in [0, IMPDEF] {
            let dfr0 = v << PMUVER_SHIFT;
            assert!(!offered(dfr0));
            assert_eq!(mdcr_el2(dfr0, 4 << pmcr::N_SHIFT), mdcr::TPM | mdcr::TPMCR | 4);
        }
    }

    #[test]
    fn id_fields_pass_through_unless_implementation_defined() {
        assert_eq!(guest_pmu_field(A64FX_DFR0, PMUVER_SHIFT), A64FX_DFR0);
        assert_eq!(guest_pmu_field(0x1_1000_ff06, PMUVER_SHIFT), 0x1_1000_f006);
        assert_eq!(guest_pmu_field(0x1_1000_f906, PMUVER_SHIFT), 0x1_1000_f906);
        assert_eq!(guest_pmu_field(0x3303_0066, PERFMON_SHIFT), 0x3303_0066);
        assert_eq!(guest_pmu_field(0x3f03_0066, PERFMON_SHIFT), 0x3003_0066);
    }

    #[test]
    fn overflow_interrupt_is_a_level() {
        assert!(overflow_output(pmcr::E, 1, 1));
        assert!(overflow_output(pmcr::E, 1 << 31, 1 << 31 | 1));
        assert!(!overflow_output(0, 1, 1), "PMU disabled");
        assert!(!overflow_output(pmcr::E, 1, 2), "the overflowed counter's interrupt is disabled");
        assert!(!overflow_output(pmcr::E, 0, u64::MAX));
    }
}
