//! Register offsets and bit fields of the GICv3 distributor and redistributor
//! (Arm IHI 0069, chapter 12: 12.8 "The GIC Distributor register map", 12.10 "The GIC
//! Redistributor register map", and the register descriptions in 12.9 and 12.11).
//!
//! The offsets are not written here: they are taken with [`core::mem::offset_of!`] from
//! `arm_gic::gicv3::registers` (`Gicd`, `Gicr`, `Sgi`, `GicrSgi`), the `#[repr(C)]` register
//! blocks through which the hypervisor drives the physical GIC and the guest kernel its
//! emulated one, so the emulation's decode table and the drivers cannot disagree. The host
//! tests below pin them to the architected values.

use arm_gic::gicv3::registers::{GicdCtlr, GicrCtlr, Waker};

/// The byte offset of field `$field` of register block `$block`, as a `u64`.
macro_rules! at {
    ($block:ty, $field:ident) => {
        core::mem::offset_of!($block, $field) as u64
    };
}

/// The byte offset just past field `$field` of register block `$block` (an array of registers).
macro_rules! end {
    ($block:ty, $field:ident) => {
        at!($block, $field) + super::field_size(|block: &$block| &block.$field) as u64
    };
}

/// The size of the field that `field` selects (never called: only its type is used).
const fn field_size<B, F, T>(field: F) -> usize
where
    F: Fn(&B) -> &T,
{
    // A closure has nothing to drop, but a `const fn` may not drop a generic value.
    core::mem::forget(field);
    core::mem::size_of::<T>()
}

/// Offsets in the distributor page (GICD_*) and, for the banked interrupt registers that share
/// their layout, in the redistributor's SGI_base frame (GICR_* n = 0).
pub mod gicd {
    use arm_gic::gicv3::registers::Gicd;

    pub const CTLR: u64 = at!(Gicd, ctlr);
    pub const TYPER: u64 = at!(Gicd, typer);
    pub const IIDR: u64 = at!(Gicd, iidr);
    pub const TYPER2: u64 = at!(Gicd, typer2);
    pub const IGROUPR: u64 = at!(Gicd, igroupr);
    pub const ISENABLER: u64 = at!(Gicd, isenabler);
    pub const ICENABLER: u64 = at!(Gicd, icenabler);
    pub const ISPENDR: u64 = at!(Gicd, ispendr);
    pub const ICPENDR: u64 = at!(Gicd, icpendr);
    pub const ISACTIVER: u64 = at!(Gicd, isactiver);
    pub const ICACTIVER: u64 = at!(Gicd, icactiver);
    pub const IPRIORITYR: u64 = at!(Gicd, ipriorityr);
    /// End (exclusive) of the IPRIORITYR block.
    pub const IPRIORITYR_END: u64 = end!(Gicd, ipriorityr);
    /// `GICD_ITARGETSR<n>`: RAZ/WI when affinity routing is enabled.
    pub const ITARGETSR: u64 = at!(Gicd, itargetsr);
    pub const ITARGETSR_END: u64 = end!(Gicd, itargetsr);
    pub const ICFGR: u64 = at!(Gicd, icfgr);
    pub const ICFGR_END: u64 = end!(Gicd, icfgr);
    /// `GICD_IGRPMODR<n>`: RAZ/WI with a single Security state (GICD_CTLR.DS == 1).
    pub const IGRPMODR: u64 = at!(Gicd, igrpmodr);
    pub const IGRPMODR_END: u64 = end!(Gicd, igrpmodr);
    /// `GICD_NSACR<n>`: RAZ/WI with a single Security state.
    pub const NSACR: u64 = at!(Gicd, nsacr);
    pub const NSACR_END: u64 = end!(Gicd, nsacr);
    /// GICD_SGIR: WI when affinity routing is enabled.
    pub const SGIR: u64 = at!(Gicd, sigr);
    /// `GICD_CPENDSGIR<n>` and `GICD_SPENDSGIR<n>`: RAZ/WI when affinity routing is enabled.
    pub const CPENDSGIR: u64 = at!(Gicd, cpendsgir);
    pub const SPENDSGIR_END: u64 = end!(Gicd, spendsgir);
    /// `GICD_IROUTER<n>`, 64 bits per INTID: where n = 0 would be. Only n = 32..=1019 exist
    /// (`Gicd::irouter` starts at n = 32); the offsets below are reserved.
    pub const IROUTER: u64 = at!(Gicd, irouter) - 8 * super::super::FIRST_SPI as u64;
    pub const IROUTER_END: u64 = at!(Gicd, irouter_e);
    /// Peripheral ID register 2 (ArchRev in bits 7:4): the seventh of the ID registers
    /// (PIDR4..PIDR7, PIDR0..PIDR3, CIDR0..CIDR3).
    pub const PIDR2: u64 = at!(Gicd, id_registers) + 4 * 6;

    /// Each bitmap register bank (IGROUPR, ISENABLER, ...) is this many bytes.
    pub const BITMAP_BLOCK: u64 = end!(Gicd, igroupr) - IGROUPR;
}

/// Offsets in a redistributor: RD_base frame, then SGI_base frame at [`gicr::SGI_BASE`].
pub mod gicr {
    use arm_gic::gicv3::registers::{Gicr, GicrSgi};

    pub const CTLR: u64 = at!(Gicr, ctlr);
    pub const IIDR: u64 = at!(Gicr, iidr);
    /// 64-bit.
    pub const TYPER: u64 = at!(Gicr, typer);
    pub const WAKER: u64 = at!(Gicr, waker);
    /// As in the distributor: the seventh ID register.
    pub const PIDR2: u64 = at!(Gicr, id_registers) + 4 * 6;
    /// Start of the SGI_base frame; its interrupt registers use the `gicd` offsets with n = 0
    /// (checked below against `Sgi`).
    pub const SGI_BASE: u64 = at!(GicrSgi, sgi);
}

/// The SGI_base frame's interrupt registers lie where the distributor's register block n = 0
/// does, which is what lets `bank::BankReg::decode` serve both.
mod sgi_frame_matches_distributor {
    use super::gicd;
    use arm_gic::gicv3::registers::Sgi;

    const _: () = {
        assert!(at!(Sgi, igroupr) == gicd::IGROUPR);
        assert!(at!(Sgi, isenabler) == gicd::ISENABLER);
        assert!(at!(Sgi, icenabler) == gicd::ICENABLER);
        assert!(at!(Sgi, ispendr) == gicd::ISPENDR);
        assert!(at!(Sgi, icpendr) == gicd::ICPENDR);
        assert!(at!(Sgi, isactiver) == gicd::ISACTIVER);
        assert!(at!(Sgi, icactiver) == gicd::ICACTIVER);
        assert!(at!(Sgi, ipriorityr) == gicd::IPRIORITYR);
        assert!(at!(Sgi, icfgr) == gicd::ICFGR);
        assert!(at!(Sgi, igrpmodr) == gicd::IGRPMODR);
        assert!(at!(Sgi, nsacr) == gicd::NSACR);
    };
}

/// GICD_CTLR, single Security state layout (GICD_CTLR.DS == 1, IHI 0069 12.9.4). arm-gic names
/// the bits after the Secure view of a GIC with two Security states; with one, bit 4 is ARE and
/// bit 1 EnableGrp1.
pub mod ctlr {
    use super::GicdCtlr;

    pub const ENABLE_GRP0: u32 = GicdCtlr::EnableGrp0.bits();
    /// EnableGrp1; the same bit is EnableGrp1NS (EnableGrp1A) in the two-Security-state
    /// Non-secure view, so guests written for either view enable Group 1 with it.
    pub const ENABLE_GRP1: u32 = GicdCtlr::EnableGrp1NS.bits();
    /// ARE: affinity routing, RAO/WI here (arm-gic's ARE_S, bit 4; ARE_NS in the Non-secure
    /// view of a GIC with two Security states).
    pub const ARE: u32 = GicdCtlr::ARE_S.bits();
    /// DS: Non-secure accesses are permitted to access and modify registers that control
    /// Group 0 interrupts; RAO/WI (single Security state).
    pub const DS: u32 = GicdCtlr::DS.bits();
    /// Register Write Pending: always 0, writes take effect at once.
    pub const RWP: u32 = GicdCtlr::RWP.bits();
}

/// GICR_CTLR fields (IHI 0069 12.11.2).
pub mod gicr_ctlr {
    use super::GicrCtlr;

    /// Register Write Pending (for GICR_ICENABLER0 and the LPI enable).
    pub const RWP: u32 = GicrCtlr::RWP.bits();
}

/// GICD_TYPER fields (IHI 0069 12.9.38).
pub mod typer {
    /// ITLinesNumber, bits 4:0: supported INTIDs = 32 * (N + 1).
    pub const IT_LINES_MASK: u32 = 0x1f;
    /// CPUNumber, bits 7:5.
    pub const CPU_NUMBER_SHIFT: u32 = 5;
    pub const CPU_NUMBER_MAX: u32 = 7;
    /// IDbits, bits 23:19: INTID bits minus one.
    pub const ID_BITS_SHIFT: u32 = 19;
    /// 10 INTID bits (INTIDs 0..=1023, no LPIs).
    pub const ID_BITS: u32 = 10;
    /// A3V: Aff3 is supported in GICD_IROUTER.
    pub const A3V: u32 = 1 << 24;
    /// No1N: 1 of N SPI routing is not supported.
    pub const NO1N: u32 = 1 << 25;
}

/// GICD_IIDR / GICR_IIDR value fields (IHI 0069 12.9.24).
pub mod iidr {
    /// Implementer, bits 11:0: JEP106 code of Arm (0x43b), as KVM's vGIC reports.
    pub const IMPLEMENTER_ARM: u32 = 0x43b;
    /// ProductID, bits 31:24: 'A' for asyncpf (no real GIC uses it, so no guest quirk fires).
    pub const PRODUCT_ID_SHIFT: u32 = 24;
    pub const PRODUCT_ID_ASYNCPF: u32 = b'A' as u32;
}

/// GICD_PIDR2 / GICR_PIDR2: ArchRev in bits 7:4.
pub mod pidr2 {
    pub const ARCH_REV_SHIFT: u32 = 4;
    /// GICv3.
    pub const ARCH_REV_GICV3: u32 = 3;
}

/// `GICD_IROUTER<n>` fields (IHI 0069 12.9.22).
pub mod irouter {
    /// Interrupt_Routing_Mode (bit 31): RAZ/WI here because GICD_TYPER.No1N is 1.
    pub const IRM: u64 = 1 << 31;
}

/// GICR_TYPER fields (IHI 0069 12.11.35).
pub mod gicr_typer {
    /// Last: this is the last redistributor in the region.
    pub const LAST: u64 = 1 << 4;
    /// Processor_Number, bits 23:8.
    pub const PROCESSOR_NUMBER_SHIFT: u32 = 8;
    /// Affinity_Value, bits 63:32 (Aff3:Aff2:Aff1:Aff0).
    pub const AFFINITY_SHIFT: u32 = 32;
}

/// GICR_WAKER fields (IHI 0069 12.11.40).
pub mod waker {
    use super::Waker;

    /// ProcessorSleep: the PE is (entering) a low-power state; the redistributor forwards no
    /// interrupt to it.
    pub const PROCESSOR_SLEEP: u32 = Waker::PROCESSOR_SLEEP.bits();
    /// ChildrenAsleep (read-only): the interface to the PE is quiescent.
    pub const CHILDREN_ASLEEP: u32 = Waker::CHILDREN_ASLEEP.bits();
}

/// `GICD_ICFGR<n>` / `GICR_ICFGR<n>`: two bits per interrupt, `Int_config[1]` (the odd bit) is
/// 1 for edge-triggered; `Int_config[0]` is RES0.
pub mod icfgr {
    /// The edge bit of every interrupt in one register.
    pub const EDGE_BITS: u32 = 0xaaaa_aaaa;
    /// Interrupts per ICFGR register.
    pub const PER_REGISTER: u32 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vgic::{Distributor, Redistributor, GICD_SIZE, GICR_FRAME_SIZE};
    use arm_gic::gicv3::registers::{GicrTyper, Typer};
    use zerocopy::FromBytes;

    /// IHI 0069 12.8, Table 12-25: the distributor register map.
    #[test]
    fn distributor_offsets_are_architected() {
        let expected = [
            (gicd::CTLR, 0x0000),
            (gicd::TYPER, 0x0004),
            (gicd::IIDR, 0x0008),
            (gicd::TYPER2, 0x000c),
            (gicd::IGROUPR, 0x0080),
            (gicd::ISENABLER, 0x0100),
            (gicd::ICENABLER, 0x0180),
            (gicd::ISPENDR, 0x0200),
            (gicd::ICPENDR, 0x0280),
            (gicd::ISACTIVER, 0x0300),
            (gicd::ICACTIVER, 0x0380),
            (gicd::IPRIORITYR, 0x0400),
            (gicd::IPRIORITYR_END, 0x0800),
            (gicd::ITARGETSR, 0x0800),
            (gicd::ITARGETSR_END, 0x0c00),
            (gicd::ICFGR, 0x0c00),
            (gicd::ICFGR_END, 0x0d00),
            (gicd::IGRPMODR, 0x0d00),
            (gicd::IGRPMODR_END, 0x0d80),
            (gicd::NSACR, 0x0e00),
            (gicd::NSACR_END, 0x0f00),
            (gicd::SGIR, 0x0f00),
            (gicd::CPENDSGIR, 0x0f10),
            (gicd::SPENDSGIR_END, 0x0f30),
            (gicd::IROUTER, 0x6000),
            (gicd::IROUTER_END, 0x8000),
            (gicd::PIDR2, 0xffe8),
            (gicd::BITMAP_BLOCK, 0x80),
            (GICD_SIZE, 0x1_0000),
        ];
        for (i, (offset, architected)) in expected.into_iter().enumerate() {
            assert_eq!(offset, architected, "entry {i}");
        }
        // GICD_IROUTER<32>, the first that exists, is arm-gic's `irouter[0]`.
        assert_eq!(core::mem::offset_of!(arm_gic::gicv3::registers::Gicd, irouter), 0x6100);
    }

    /// IHI 0069 12.10, Tables 12-27 and 12-29: the redistributor's two frames.
    #[test]
    fn redistributor_offsets_are_architected() {
        assert_eq!(gicr::CTLR, 0x0000);
        assert_eq!(gicr::IIDR, 0x0004);
        assert_eq!(gicr::TYPER, 0x0008);
        assert_eq!(gicr::WAKER, 0x0014);
        assert_eq!(gicr::PIDR2, 0xffe8);
        assert_eq!(gicr::SGI_BASE, 0x1_0000);
        assert_eq!(GICR_FRAME_SIZE, 0x2_0000);
        // GICR_IGROUPR0 .. GICR_NSACR, relative to SGI_base.
        use arm_gic::gicv3::registers::Sgi;
        use core::mem::offset_of;
        assert_eq!(offset_of!(Sgi, igroupr), 0x0080);
        assert_eq!(offset_of!(Sgi, isenabler), 0x0100);
        assert_eq!(offset_of!(Sgi, icenabler), 0x0180);
        assert_eq!(offset_of!(Sgi, ispendr), 0x0200);
        assert_eq!(offset_of!(Sgi, icpendr), 0x0280);
        assert_eq!(offset_of!(Sgi, isactiver), 0x0300);
        assert_eq!(offset_of!(Sgi, icactiver), 0x0380);
        assert_eq!(offset_of!(Sgi, ipriorityr), 0x0400);
        assert_eq!(offset_of!(Sgi, icfgr), 0x0c00);
        assert_eq!(offset_of!(Sgi, igrpmodr), 0x0d00);
        assert_eq!(offset_of!(Sgi, nsacr), 0x0e00);
    }

    /// IHI 0069 12.9.4, 12.11.2 and 12.11.40.
    #[test]
    fn control_bits_are_architected() {
        assert_eq!(ctlr::ENABLE_GRP0, 1 << 0);
        assert_eq!(ctlr::ENABLE_GRP1, 1 << 1);
        assert_eq!(ctlr::ARE, 1 << 4);
        assert_eq!(ctlr::DS, 1 << 6);
        assert_eq!(ctlr::RWP, 1 << 31);
        assert_eq!(gicr_ctlr::RWP, 1 << 3);
        assert_eq!(waker::PROCESSOR_SLEEP, 1 << 1);
        assert_eq!(waker::CHILDREN_ASLEEP, 1 << 2);
    }

    /// What the emulation reports in GICD_TYPER and GICR_TYPER reads back through arm-gic's
    /// accessors as what a driver built on them expects.
    #[test]
    fn typer_values_decode_with_arm_gic() {
        let dist = Distributor::new(64, 4);
        let typer = dist.read(gicd::TYPER, 4).unwrap() as u32;
        let typer = Typer::read_from_bytes(&typer.to_le_bytes()).unwrap();
        assert_eq!(typer.num_spis(), 64);
        assert_eq!(typer.num_cpus(), 3);
        assert_eq!(typer.id_bits(), typer::ID_BITS);
        assert!(typer.affinity_3_supported());
        assert!(!typer.one_of_n_supported());
        assert!(!typer.lpis_supported());
        assert!(!typer.espi_supported());

        let mpidr = 0x12_0000_3456;
        for last in [false, true] {
            let rd = Redistributor::new(mpidr, 5, last);
            let value = rd.read(gicr::TYPER, 8).unwrap();
            let typer = GicrTyper::read_from_bytes(&value.to_le_bytes()).unwrap();
            assert_eq!(typer.core_mpidr(), mpidr);
            assert_eq!(typer.processor_number(), 5);
            assert_eq!(typer.last_redistributor(), last);
            assert!(!typer.physical_lpis_supported() && !typer.virtual_lpis_supported());
        }
    }
}
