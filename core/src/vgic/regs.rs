//! Register offsets and bit fields of the GICv3 distributor and redistributor
//! (Arm IHI 0069, chapter 12: 12.8 "The GIC Distributor register map", 12.10 "The GIC
//! Redistributor register map", and the register descriptions in 12.9 and 12.11).

/// Offsets in the distributor page (GICD_*) and, for the banked interrupt registers that share
/// their layout, in the redistributor's SGI_base frame (GICR_* n = 0).
pub mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const TYPER2: u64 = 0x000c;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    /// End (exclusive) of the IPRIORITYR block.
    pub const IPRIORITYR_END: u64 = 0x0800;
    /// `GICD_ITARGETSR<n>`: RAZ/WI when affinity routing is enabled.
    pub const ITARGETSR: u64 = 0x0800;
    pub const ITARGETSR_END: u64 = 0x0c00;
    pub const ICFGR: u64 = 0x0c00;
    pub const ICFGR_END: u64 = 0x0d00;
    /// `GICD_IGRPMODR<n>`: RAZ/WI with a single Security state (GICD_CTLR.DS == 1).
    pub const IGRPMODR: u64 = 0x0d00;
    pub const IGRPMODR_END: u64 = 0x0d80;
    /// `GICD_NSACR<n>`: RAZ/WI with a single Security state.
    pub const NSACR: u64 = 0x0e00;
    pub const NSACR_END: u64 = 0x0f00;
    /// GICD_SGIR: WI when affinity routing is enabled.
    pub const SGIR: u64 = 0x0f00;
    /// `GICD_CPENDSGIR<n>` and `GICD_SPENDSGIR<n>`: RAZ/WI when affinity routing is enabled.
    pub const CPENDSGIR: u64 = 0x0f10;
    pub const SPENDSGIR_END: u64 = 0x0f30;
    /// `GICD_IROUTER<n>`, 64 bits per INTID, n = 32..=1019 (offsets below 0x6100 are reserved).
    pub const IROUTER: u64 = 0x6000;
    pub const IROUTER_END: u64 = 0x8000;
    /// Peripheral ID register 2: ArchRev in bits 7:4.
    pub const PIDR2: u64 = 0xffe8;

    /// Each bitmap register bank (IGROUPR, ISENABLER, ...) is this many bytes.
    pub const BITMAP_BLOCK: u64 = 0x80;
}

/// Offsets in a redistributor: RD_base frame, then SGI_base frame at [`gicr::SGI_BASE`].
pub mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    /// 64-bit.
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    /// Start of the SGI_base frame; its interrupt registers use the `gicd` offsets with n = 0.
    pub const SGI_BASE: u64 = 0x1_0000;
}

/// GICD_CTLR, single Security state layout (GICD_CTLR.DS == 1, IHI 0069 12.9.4).
pub mod ctlr {
    pub const ENABLE_GRP0: u32 = 1 << 0;
    /// EnableGrp1; the same bit is EnableGrp1NS (EnableGrp1A) in the two-Security-state
    /// Non-secure view, so guests written for either view enable Group 1 with it.
    pub const ENABLE_GRP1: u32 = 1 << 1;
    /// ARE: affinity routing, RAO/WI here.
    pub const ARE: u32 = 1 << 4;
    /// DS: Non-secure accesses are permitted to access and modify registers that control
    /// Group 0 interrupts; RAO/WI (single Security state).
    pub const DS: u32 = 1 << 6;
    /// Register Write Pending: always 0, writes take effect at once.
    pub const RWP: u32 = 1 << 31;
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
    /// ProcessorSleep: the PE is (entering) a low-power state; the redistributor forwards no
    /// interrupt to it.
    pub const PROCESSOR_SLEEP: u32 = 1 << 1;
    /// ChildrenAsleep (read-only): the interface to the PE is quiescent.
    pub const CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// `GICD_ICFGR<n>` / `GICR_ICFGR<n>`: two bits per interrupt, `Int_config[1]` (the odd bit) is
/// 1 for edge-triggered; `Int_config[0]` is RES0.
pub mod icfgr {
    /// The edge bit of every interrupt in one register.
    pub const EDGE_BITS: u32 = 0xaaaa_aaaa;
    /// Interrupts per ICFGR register.
    pub const PER_REGISTER: u32 = 16;
}
