//! The CPU features a guest may use, and what EL2 must set so that the ones its ID registers
//! advertise really work (a feature the ID registers promise but EL2 leaves trapped or disabled
//! makes a guest die on its first use: e.g. glibc's memcpy with FEAT_MOPS).
//!
//! The guest reads the hardware's ID registers (HCR_EL2.TID3 traps them only to hide a PMU that
//! is not a PMUv3, see `trap::guest_id_register` and `pmu`); for each feature below the
//! hypervisor turns the matching enable on:
//! * FEAT_MOPS (ID_AA64ISAR2_EL1.MOPS): HCRX_EL2.MSCEn, or the CPY*/SET* instructions are
//!   UNDEFINED at EL1 and EL0. HCRX_EL2 exists with FEAT_HCX (ID_AA64MMFR1_EL1.HCX), which
//!   FEAT_MOPS requires.
//! * FEAT_SVE (ID_AA64PFR0_EL1.SVE): CPTR_EL2.TZ = 0 and ZCR_EL2.LEN at its maximum, so the
//!   guest can choose any vector length the CPU implements (ZCR_EL2 resets to an unknown
//!   length, 128 bits on QEMU, which would cap an a64fx guest's 512-bit vectors).
//! * FEAT_SME (ID_AA64PFR1_EL1.SME): CPTR_EL2.TSM = 0.

/// The ID register values the decisions need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegisters {
    pub aa64pfr0: u64,
    pub aa64pfr1: u64,
    pub aa64isar2: u64,
    pub aa64mmfr1: u64,
}

/// What EL2 writes for the guest's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enables {
    /// CPTR_EL2 (nVHE layout): RES1 bits, TZ and TSM set only for features that are absent.
    pub cptr_el2: u64,
    /// HCRX_EL2, when FEAT_HCX exists.
    pub hcrx_el2: Option<u64>,
    /// ZCR_EL2, when FEAT_SVE exists.
    pub zcr_el2: Option<u64>,
}

/// CPTR_EL2's RES1 bits in the nVHE layout (bits 7:0, 9 and 13; bit 8 is TZ, 12 TSM).
const CPTR_RES1: u64 = 0xff | 1 << 9 | 1 << 13;
const CPTR_TZ: u64 = 1 << 8;
const CPTR_TSM: u64 = 1 << 12;
/// HCRX_EL2.MSCEn: memory copy and set instructions enabled at EL1 and EL0.
pub const HCRX_MSCEN: u64 = 1 << 11;
/// ZCR_EL2.LEN at its maximum: the effective length is the largest the CPU implements.
pub const ZCR_LEN_MAX: u64 = 0xf;

fn field(value: u64, shift: u32) -> u64 {
    value >> shift & 0xf
}

/// The enables for a CPU with these ID registers.
pub fn enables(id: IdRegisters) -> Enables {
    let sve = field(id.aa64pfr0, 32) != 0;
    let sme = field(id.aa64pfr1, 24) != 0;
    let hcx = field(id.aa64mmfr1, 40) != 0;
    let mops = field(id.aa64isar2, 16) != 0;
    let mut cptr_el2 = CPTR_RES1 | 1 << 8 | 1 << 12;
    if sve {
        cptr_el2 &= !CPTR_TZ;
    }
    if sme {
        cptr_el2 &= !CPTR_TSM;
    }
    Enables {
        cptr_el2,
        hcrx_el2: hcx.then_some(if mops { HCRX_MSCEN } else { 0 }),
        zcr_el2: sve.then_some(ZCR_LEN_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's `-cpu max` (10.0): SVE, SME, HCX and MOPS.
    const MAX: IdRegisters = IdRegisters {
        aa64pfr0: 0x1201_1111_1111_1111 | 1 << 32,
        aa64pfr1: 0x1 << 24,
        aa64isar2: 0x1 << 16,
        aa64mmfr1: 0x1 << 40,
    };

    #[test]
    fn every_advertised_feature_is_enabled() {
        let e = enables(MAX);
        assert_eq!(e.cptr_el2 & (CPTR_TZ | CPTR_TSM), 0, "SVE and SME not trapped");
        assert_eq!(e.cptr_el2 & CPTR_RES1, CPTR_RES1);
        assert_eq!(e.hcrx_el2, Some(HCRX_MSCEN));
        assert_eq!(e.zcr_el2, Some(ZCR_LEN_MAX));
    }

    #[test]
    fn absent_features_stay_trapped_or_untouched() {
        let e = enables(IdRegisters::default());
        assert_eq!(e.cptr_el2, CPTR_RES1 | CPTR_TZ | CPTR_TSM);
        assert_eq!((e.hcrx_el2, e.zcr_el2), (None, None));
        // HCX without MOPS: HCRX_EL2 is written, with nothing enabled.
        let hcx_only = IdRegisters { aa64mmfr1: 1 << 40, ..Default::default() };
        assert_eq!(enables(hcx_only).hcrx_el2, Some(0));
        // SVE alone (a64fx: no SME).
        let sve = IdRegisters { aa64pfr0: 1 << 32, ..Default::default() };
        let e = enables(sve);
        assert_eq!((e.cptr_el2 & CPTR_TZ, e.cptr_el2 & CPTR_TSM), (0, CPTR_TSM));
    }
}
