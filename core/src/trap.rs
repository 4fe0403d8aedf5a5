//! Decoding what a guest exit reports, and encoding what the hypervisor injects back
//! (Arm ARM D17.2.37 ESR_EL2, D1.10 exception entry). Pure bit manipulation, host-tested.

use aarch64_cpu::registers::ESR_EL2;

/// Exception classes (ESR_ELx.EC, bits 31:26) the hypervisor uses, as `aarch64-cpu` names them.
pub mod ec {
    use aarch64_cpu::registers::ESR_EL2::EC::Value;

    pub const UNKNOWN: u64 = Value::Unknown as u64;
    pub const WFX: u64 = Value::TrappedWFIorWFE as u64;
    pub const HVC64: u64 = Value::HVC64 as u64;
    pub const SMC64: u64 = Value::SMC64 as u64;
    pub const SYSREG: u64 = Value::TrappedMsrMrs as u64;
    pub const IABT_LOWER: u64 = Value::InstrAbortLowerEL as u64;
    pub const IABT_SAME: u64 = Value::InstrAbortCurrentEL as u64;
    pub const DABT_LOWER: u64 = Value::DataAbortLowerEL as u64;
    pub const DABT_SAME: u64 = Value::DataAbortCurrentEL as u64;
}

const EC_SHIFT: usize = ESR_EL2::EC.shift;
const EC_MASK: u64 = ESR_EL2::EC.mask;
/// ESR.IL: the trapped instruction was 32 bits long.
pub const ESR_IL: u64 = ESR_EL2::IL::SET.value;
const ISS_MASK: u64 = ESR_EL2::ISS.mask;

/// The exception class of an ESR value.
pub const fn exception_class(esr: u64) -> u64 {
    (esr >> EC_SHIFT) & EC_MASK
}

/// The length of the trapped instruction in bytes: 2 for a 16-bit T32 instruction (ESR.IL = 0,
/// possible from an AArch32 EL0), 4 otherwise. The emulated instruction is stepped over by it.
pub const fn instruction_bytes(esr: u64) -> u64 {
    if esr & ESR_IL != 0 {
        4
    } else {
        2
    }
}

/// The instruction-specific syndrome of an ESR value.
pub const fn iss(esr: u64) -> u64 {
    esr & ISS_MASK
}

/// Data abort ISS fields (ESR_EL2.ISS for EC 0x24; `aarch64-cpu` does not define them).
mod dabt {
    pub const ISV: u64 = 1 << 24;
    pub const SAS_SHIFT: u32 = 22;
    pub const SSE: u64 = 1 << 21;
    pub const SRT_SHIFT: u32 = 16;
    pub const SF: u64 = 1 << 15;
    pub const WNR: u64 = 1 << 6;
}

/// The zero register's number in the SRT/Rt fields.
pub const XZR: usize = 31;

/// A load or store that a data abort describes (when its syndrome is valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub is_write: bool,
    /// The transfer register (31 = xzr/wzr).
    pub register: usize,
    /// Loads: sign-extend the value to the register width.
    pub sign_extend: bool,
    /// Loads: the register is 64-bit (X) rather than 32-bit (W).
    pub sixty_four: bool,
}

impl MmioAccess {
    /// Decode a data abort's ISS; `None` when the syndrome is not valid (ISV = 0, e.g. a load
    /// pair), in which case the access cannot be emulated.
    pub fn decode(iss: u64) -> Option<Self> {
        if iss & dabt::ISV == 0 {
            return None;
        }
        Some(Self {
            size: 1 << ((iss >> dabt::SAS_SHIFT) & 0x3),
            is_write: iss & dabt::WNR != 0,
            register: ((iss >> dabt::SRT_SHIFT) & 0x1f) as usize,
            sign_extend: iss & dabt::SSE != 0,
            sixty_four: iss & dabt::SF != 0,
        })
    }

    fn mask(&self) -> u64 {
        if self.size == 8 {
            u64::MAX
        } else {
            (1u64 << (self.size as u32 * 8)) - 1
        }
    }

    /// The value a store writes, from the transfer register's content.
    pub fn store_value(&self, register_value: u64) -> u64 {
        if self.register == XZR {
            0
        } else {
            register_value & self.mask()
        }
    }

    /// What a load puts into the transfer register, from the device's `value`: truncated to
    /// the access size, sign-extended if asked, and limited to 32 bits for a W register.
    pub fn load_result(&self, value: u64) -> u64 {
        let mask = self.mask();
        let mut result = value & mask;
        let top_bit = (self.size as u32) * 8 - 1;
        if self.sign_extend && self.size < 8 && (result >> top_bit) & 1 != 0 {
            result |= !mask;
        }
        if !self.sixty_four {
            result &= 0xffff_ffff;
        }
        result
    }

    /// Converts between the guest's byte order and the device's (little-endian registers):
    /// a big-endian guest (SCTLR_EL1.EE at EL1, .E0E at EL0) stores and loads device registers
    /// byte-reversed within the access size, as the hardware would present them on the bus
    /// (KVM's `vcpu_data_guest_to_host`). The swap is its own inverse; loads are swapped before
    /// [`Self::load_result`] sign-extends them.
    pub fn device_order(&self, value: u64, big_endian: bool) -> u64 {
        if big_endian {
            (value & self.mask()).swap_bytes() >> (64 - self.size as u32 * 8)
        } else {
            value
        }
    }

    /// ESR.WnR to report back to the guest with an abort for this access.
    pub fn write_not_read_bit(iss: u64) -> u64 {
        iss & dabt::WNR
    }
}

/// A trapped `mrs`/`msr` (ESR_EL2.ISS for EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregAccess {
    pub id: SysregId,
    pub register: usize,
    pub is_read: bool,
}

/// A system register encoding: (op0, op1, CRn, CRm, op2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregId {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

/// ICC_SGI1R_EL1: S3_0_C12_C11_5.
pub const ICC_SGI1R_EL1: SysregId = SysregId { op0: 3, op1: 0, crn: 12, crm: 11, op2: 5 };

impl SysregAccess {
    pub fn decode(iss: u64) -> Self {
        let field = |shift: u32, bits: u32| ((iss >> shift) & ((1 << bits) - 1)) as u8;
        Self {
            id: SysregId {
                op0: field(20, 2),
                op2: field(17, 3),
                op1: field(14, 3),
                crn: field(10, 4),
                crm: field(1, 4),
            },
            register: field(5, 5) as usize,
            is_read: iss & 1 != 0,
        }
    }
}

/// The feature ID registers that HCR_EL2.TID3 traps: op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7
/// (the AArch32 and AArch64 ID registers and their reserved encodings, which read as zero).
pub fn is_id_register(id: SysregId) -> bool {
    id.op0 == 3 && id.op1 == 0 && id.crn == 0 && (1..=7).contains(&id.crm)
}

/// ID register fields that describe the PMU, as (CRm, op2, field shift): the guest is given a
/// PMUv3 as the hardware has it and reads these fields as they are, except that an
/// IMPLEMENTATION DEFINED PMU reads as none (`crate::pmu`).
const PMU_ID_FIELDS: [(u8, u8, u32); 2] = [
    (5, 0, crate::pmu::PMUVER_SHIFT),  // ID_AA64DFR0_EL1.PMUVer
    (1, 2, crate::pmu::PERFMON_SHIFT), // ID_DFR0_EL1.PerfMon (AArch32 view)
];

/// The value the guest reads from the ID register `id`, given the hardware's `value`: an
/// IMPLEMENTATION DEFINED PMU reads as none, and the fields of `features::HIDDEN` as zero.
pub fn guest_id_register(id: SysregId, value: u64) -> u64 {
    let value = PMU_ID_FIELDS
        .iter()
        .filter(|&&(crm, op2, _)| id.crm == crm && id.op2 == op2)
        .fold(value, |v, &(_, _, shift)| crate::pmu::guest_pmu_field(v, shift));
    crate::features::hide_fields(id.crm, id.op2, value)
}

/// PSTATE fields used to choose an exception vector.
const PSTATE_EL_SHIFT: u32 = 2;
const PSTATE_SP_ELX: u64 = 1;
/// PSTATE.nRW (SPSR bit 4): the context ran in AArch32 (only EL0 can, HCR_EL2.RW being 1).
const PSTATE_AARCH32: u64 = 1 << 4;
/// PSTATE for EL1h with D, A, I and F masked: how EL1 is entered on an exception (and by PSCI).
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// The synchronous external abort fault status code (DFSC/IFSC).
pub const FSC_SYNC_EXTERNAL: u64 = 0x10;

/// Whether `pstate` is at EL0.
pub const fn from_el0(pstate: u64) -> bool {
    (pstate >> PSTATE_EL_SHIFT) & 0x3 == 0
}

/// Whether data accesses of a context with `pstate` are big-endian, given SCTLR_EL1: its E0E
/// bit (24) for EL0, EE (25) for EL1.
pub const fn big_endian_data(pstate: u64, sctlr_el1: u64) -> bool {
    let bit = if from_el0(pstate) { 24 } else { 25 };
    sctlr_el1 & (1 << bit) != 0
}

/// Offset from VBAR_EL1 of the synchronous exception vector for an exception taken to EL1
/// from a context with this `pstate`.
pub const fn sync_vector_offset(pstate: u64) -> u64 {
    if pstate & PSTATE_AARCH32 != 0 {
        0x600 // lower EL, AArch32 (an AArch32 EL0 task)
    } else if from_el0(pstate) {
        0x400 // lower EL, AArch64
    } else if pstate & PSTATE_SP_ELX != 0 {
        0x200 // current EL with SP_ELx
    } else {
        0x000 // current EL with SP_EL0
    }
}

/// The kind of abort to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    Instruction,
    /// A data abort; `write` sets ESR.WnR.
    Data {
        write: bool,
    },
}

/// ESR_EL1 for a synchronous external abort injected into a guest running with `pstate`.
pub fn external_abort_esr(kind: AbortKind, pstate: u64) -> u64 {
    let same_el = !from_el0(pstate);
    let (class, wnr) = match kind {
        AbortKind::Instruction => (if same_el { ec::IABT_SAME } else { ec::IABT_LOWER }, 0),
        AbortKind::Data { write } => {
            (if same_el { ec::DABT_SAME } else { ec::DABT_LOWER }, if write { dabt::WNR } else { 0 })
        }
    };
    class << EC_SHIFT | ESR_IL | wnr | FSC_SYNC_EXTERNAL
}

/// What a stage-2 abort (EC 0x20 or 0x24 taken to EL2) reports in its fault status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// No valid descriptor at this translation level (DFSC/IFSC 0b0001LL).
    Translation { level: u8 },
    /// A valid descriptor with AF clear (0b0010LL).
    AccessFlag { level: u8 },
    /// The access is not allowed by the descriptor's permissions (0b0011LL).
    Permission { level: u8 },
    /// Anything else (external aborts, address size, alignment, TLB conflict, ...).
    Other(u8),
}

/// A stage-2 abort on memory, decoded from its ISS (Arm ARM D24.2.40, ESR_EL2 for EC 0x20/0x24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Abort {
    pub status: FaultStatus,
    /// The page must be made writable to resolve the fault: the access writes (ISS.WnR,
    /// never for an instruction abort), or the fault is a permission fault on the guest's
    /// stage-1 table walk. Such a walk writes: a walk that only reads is not refused by a
    /// read-only stage-2 mapping, so one that faults on permission needs to write the
    /// descriptor (the hardware's access flag or dirty state updates, TCR_EL1.HA/HD), and it
    /// does so whether the access it translates is a load, a store or an instruction fetch.
    /// ISS.WnR does not say so (QEMU reports 0). This is KVM's rule (`kvm_is_write_fault`); a
    /// translation fault on a walk is a read, so a table page is mapped read-only first and
    /// made writable only when the walk needs it.
    pub write: bool,
    /// The fault happened on the guest's stage-1 translation table walk (ISS.S1PTW).
    pub on_table_walk: bool,
}

/// ISS.S1PTW: the abort happened on a stage-2 translation of a stage-1 table walk.
const ISS_S1PTW: u64 = 1 << 7;

impl Stage2Abort {
    /// Decodes the ISS of a lower-EL data (`instruction == false`) or instruction abort.
    pub const fn decode(iss: u64, instruction: bool) -> Self {
        let fsc = (iss & 0x3f) as u8;
        let level = fsc & 0b11;
        let status = match fsc >> 2 {
            0b0001 => FaultStatus::Translation { level },
            0b0010 => FaultStatus::AccessFlag { level },
            0b0011 => FaultStatus::Permission { level },
            _ => FaultStatus::Other(fsc),
        };
        let on_table_walk = iss & ISS_S1PTW != 0;
        let write = if on_table_walk {
            matches!(status, FaultStatus::Permission { .. })
        } else {
            !instruction && iss & dabt::WNR != 0
        };
        Stage2Abort { status, write, on_table_walk }
    }
}

/// ESR_EL1 for an UNDEFINED instruction ("unknown reason", EC 0).
pub const fn undefined_esr() -> u64 {
    ec::UNKNOWN << EC_SHIFT | ESR_IL
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aarch64-cpu's ESR_EL2 definitions are the architected ones (Arm ARM D17.2.37).
    #[test]
    fn esr_fields_are_architected() {
        let classes = [
            (ec::UNKNOWN, 0x00),
            (ec::WFX, 0x01),
            (ec::HVC64, 0x16),
            (ec::SMC64, 0x17),
            (ec::SYSREG, 0x18),
            (ec::IABT_LOWER, 0x20),
            (ec::IABT_SAME, 0x21),
            (ec::DABT_LOWER, 0x24),
            (ec::DABT_SAME, 0x25),
        ];
        for (class, architected) in classes {
            assert_eq!(class, architected);
        }
        assert_eq!(exception_class(0x9600_0010 | 1 << 32), 0x25);
        assert_eq!(ESR_IL, 1 << 25);
        assert_eq!(iss(u64::MAX), 0x1ff_ffff);
    }

    #[test]
    fn data_abort_decoding() {
        // ldr w3, [x1] : ISV, SAS=2 (4 bytes), SRT=3, no SF
        let iss = dabt::ISV | 2 << dabt::SAS_SHIFT | 3 << dabt::SRT_SHIFT;
        let a = MmioAccess::decode(iss).unwrap();
        assert_eq!(a, MmioAccess { size: 4, is_write: false, register: 3, sign_extend: false, sixty_four: false });
        assert_eq!(a.load_result(0x1_2345_6789), 0x2345_6789);
        // ldrsb x5 : size 1, sign extended to 64 bits
        let a = MmioAccess::decode(dabt::ISV | dabt::SSE | dabt::SF | 5 << dabt::SRT_SHIFT).unwrap();
        assert_eq!(a.load_result(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(a.load_result(0x7f), 0x7f);
        // ldrsh w5 : sign extended but only to 32 bits
        let a = MmioAccess::decode(dabt::ISV | 1 << dabt::SAS_SHIFT | dabt::SSE).unwrap();
        assert_eq!(a.load_result(0x8000), 0xffff_8000);
        // str x9 of 8 bytes; str wzr
        let a = MmioAccess::decode(dabt::ISV | 3 << dabt::SAS_SHIFT | dabt::WNR | 9 << dabt::SRT_SHIFT).unwrap();
        assert!(a.is_write);
        assert_eq!(a.store_value(u64::MAX), u64::MAX);
        let a = MmioAccess::decode(dabt::ISV | 2 << dabt::SAS_SHIFT | dabt::WNR | 31 << dabt::SRT_SHIFT).unwrap();
        assert_eq!(a.store_value(0x1234), 0, "xzr stores zero");
        let a = MmioAccess::decode(dabt::ISV | dabt::WNR | 2 << dabt::SRT_SHIFT).unwrap();
        assert_eq!(a.store_value(0x1234), 0x34, "a byte store keeps the low byte");
        assert_eq!(MmioAccess::decode(dabt::WNR), None, "no syndrome, no emulation");
    }

    #[test]
    fn big_endian_guests_see_device_registers_byte_reversed() {
        let access = |size_log2: u64| MmioAccess::decode(dabt::ISV | size_log2 << dabt::SAS_SHIFT).unwrap();
        assert_eq!(access(0).device_order(0xab, true), 0xab);
        assert_eq!(access(1).device_order(0x1234, true), 0x3412);
        assert_eq!(access(2).device_order(0x1122_3344, true), 0x4433_2211);
        assert_eq!(access(3).device_order(0x1122_3344_5566_7788, true), 0x8877_6655_4433_2211);
        assert_eq!(access(2).device_order(0x1122_3344, false), 0x1122_3344);
        // Bits above the access size do not leak in.
        assert_eq!(access(1).device_order(0xffff_1234, true), 0x3412);
        // A sign-extending halfword load of a big-endian register: swapped, then extended.
        let ldrsh = MmioAccess::decode(dabt::ISV | 1 << dabt::SAS_SHIFT | dabt::SSE | dabt::SF).unwrap();
        assert_eq!(ldrsh.load_result(ldrsh.device_order(0x0080, true)), 0xffff_ffff_ffff_8000);
        assert!(big_endian_data(0x3c5, 1 << 25) && !big_endian_data(0x3c5, 1 << 24));
        assert!(big_endian_data(0x0, 1 << 24) && !big_endian_data(0x0, 1 << 25), "EL0 follows E0E");
        for size in 0..4 {
            let a = access(size);
            let v = 0x0102_0304_0506_0708 & a.mask();
            assert_eq!(a.device_order(a.device_order(v, true), true), v, "an involution");
        }
    }

    #[test]
    fn sysreg_decoding() {
        // msr icc_sgi1r_el1, x7: Op0=3 Op2=5 Op1=0 CRn=12 Rt=7 CRm=11 write
        let iss = 3 << 20 | 5 << 17 | 12 << 10 | 7 << 5 | 11 << 1;
        let access = SysregAccess::decode(iss);
        assert_eq!(access, SysregAccess { id: ICC_SGI1R_EL1, register: 7, is_read: false });
        assert!(SysregAccess::decode(iss | 1).is_read);
    }

    #[test]
    fn id_registers_show_the_pmu() {
        let dfr0 = SysregId { op0: 3, op1: 0, crn: 0, crm: 5, op2: 0 };
        let mmfr0 = SysregId { op0: 3, op1: 0, crn: 0, crm: 7, op2: 0 };
        assert!(is_id_register(dfr0) && is_id_register(mmfr0));
        assert!(!is_id_register(ICC_SGI1R_EL1));
        assert!(!is_id_register(SysregId { op0: 3, op1: 0, crn: 0, crm: 0, op2: 5 }), "MPIDR_EL1 is not in group 3");
        // A PMUv3 (PMUVer 6) is shown as it is; an IMPLEMENTATION DEFINED one (0xF) is hidden.
        assert_eq!(guest_id_register(dfr0, 0x1_1000_f606), 0x1_1000_f606);
        assert_eq!(guest_id_register(dfr0, 0x1_1000_ff06), 0x1_1000_f006);
        assert_eq!(guest_id_register(mmfr0, 0x1_1000_ff06), 0x1_1000_ff06);
        let aarch32_dfr0 = SysregId { op0: 3, op1: 0, crn: 0, crm: 1, op2: 2 };
        assert_eq!(guest_id_register(aarch32_dfr0, 0x3303_0066), 0x3303_0066);
        assert_eq!(guest_id_register(aarch32_dfr0, 0x3f03_0066), 0x3003_0066);
    }

    #[test]
    fn stage2_abort_decoding() {
        // A write translation fault at level 3: DFSC 0b000111, WnR.
        let a = Stage2Abort::decode(0b000111 | dabt::WNR, false);
        assert_eq!(a, Stage2Abort { status: FaultStatus::Translation { level: 3 }, write: true, on_table_walk: false });
        // A permission fault at level 3 during a stage-1 walk, as QEMU reports a walk that
        // sets an access flag in a read-only table page (WnR = 0): the walk writes, for a
        // load, a store and an instruction fetch alike. (Decoding it as a read maps the table
        // page read-only again and the same fault repeats forever.)
        for (iss, instruction) in [(0, false), (dabt::WNR, false), (0, true)] {
            let a = Stage2Abort::decode(0b001111 | ISS_S1PTW | iss, instruction);
            assert_eq!(a.status, FaultStatus::Permission { level: 3 });
            assert!(a.write && a.on_table_walk, "{iss:#x} {instruction}");
        }
        // A translation or access flag fault on a walk is a read: map the table page
        // read-only first, even if the access itself is a store.
        for fsc in [0b000111, 0b001011] {
            let a = Stage2Abort::decode(fsc | ISS_S1PTW | dabt::WNR, false);
            assert!(!a.write && a.on_table_walk, "{fsc:#b}");
        }
        assert_eq!(Stage2Abort::decode(0b001011, false).status, FaultStatus::AccessFlag { level: 3 });
        // Instruction aborts never write, whatever bit 6 holds.
        assert!(!Stage2Abort::decode(0b000101 | dabt::WNR, true).write);
        assert_eq!(Stage2Abort::decode(FSC_SYNC_EXTERNAL, false).status, FaultStatus::Other(0x10));
        assert_eq!(Stage2Abort::decode(0b000000, false).status, FaultStatus::Other(0), "address size fault");
    }

    #[test]
    fn vectors_and_syndromes() {
        let el0 = 0x0;
        let el1t = 0x4;
        let el1h = 0x5;
        assert_eq!(sync_vector_offset(el0), 0x400);
        // AArch32 user mode (M = 0b10000) and its Thumb state: lower EL using AArch32.
        assert_eq!(sync_vector_offset(0x10), 0x600);
        assert_eq!(sync_vector_offset(0x30), 0x600);
        assert!(from_el0(0x10));
        assert_eq!(instruction_bytes(ESR_IL | ec::DABT_LOWER << EC_SHIFT), 4);
        assert_eq!(instruction_bytes(ec::DABT_LOWER << EC_SHIFT), 2, "16-bit T32");
        assert_eq!(sync_vector_offset(el1t), 0x000);
        assert_eq!(sync_vector_offset(el1h), 0x200);
        assert_eq!(external_abort_esr(AbortKind::Data { write: true }, el1h), 0x25 << 26 | 1 << 25 | 1 << 6 | 0x10);
        assert_eq!(external_abort_esr(AbortKind::Data { write: false }, el0), 0x24 << 26 | 1 << 25 | 0x10);
        assert_eq!(external_abort_esr(AbortKind::Instruction, el1h), 0x21 << 26 | 1 << 25 | 0x10);
        assert_eq!(external_abort_esr(AbortKind::Instruction, el0), 0x20 << 26 | 1 << 25 | 0x10);
        assert_eq!(undefined_esr(), 1 << 25);
        assert_eq!(exception_class(0x5a00_0000), 0x16);
        assert_eq!(iss(0x5a00_1234), 0x1234);
    }
}
