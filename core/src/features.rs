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
//! * FEAT_SME (ID_AA64PFR1_EL1.SME): CPTR_EL2.TSM = 0 and SMCR_EL2.LEN at its maximum (the
//!   largest streaming vector length; QEMU resets it to 128 bits, where `max` has 2048), with
//!   SMCR_EL2.FA64 for FEAT_SME_FA64 (ID_AA64SMFR0_EL1.FA64: the full A64 instruction set in
//!   streaming mode) and SMCR_EL2.EZT0 for FEAT_SME2 (SME ≥ 2: ZT0).
//! * FEAT_PAuth (ID_AA64ISAR1_EL1 APA, API, GPA, GPI; ID_AA64ISAR2_EL1 APA3, GPA3):
//!   HCR_EL2.API and APK, or the PAC instructions and key registers trap to EL2.
//!
//! Features whose enables the hypervisor does not set are hidden instead ([`HIDDEN`]): the
//! guest reads their ID register fields as zero (`trap::guest_id_register`).
//!
//! [`ENABLED`] and [`HIDDEN`] are the lists docs/abi.md §6 mirrors (checked by a test), and the
//! `kvm-compat/features` test checks on QEMU that every feature the guest's ID registers
//! advertise works at EL1 and that they differ from the CPU's only in the [`HIDDEN`] fields.

/// The ID register values the decisions need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegisters {
    pub aa64pfr0: u64,
    pub aa64pfr1: u64,
    pub aa64isar1: u64,
    pub aa64isar2: u64,
    pub aa64mmfr1: u64,
    pub aa64smfr0: u64,
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
    /// SMCR_EL2, when FEAT_SME exists.
    pub smcr_el2: Option<u64>,
    /// HCR_EL2.API and APK (pointer authentication not trapped), when FEAT_PAuth exists.
    pub pauth: bool,
}

/// CPTR_EL2's RES1 bits in the nVHE layout (bits 7:0, 9 and 13; bit 8 is TZ, 12 TSM).
const CPTR_RES1: u64 = 0xff | 1 << 9 | 1 << 13;
const CPTR_TZ: u64 = 1 << 8;
const CPTR_TSM: u64 = 1 << 12;
/// HCRX_EL2.MSCEn: memory copy and set instructions enabled at EL1 and EL0.
pub const HCRX_MSCEN: u64 = 1 << 11;
/// ZCR_EL2.LEN at its maximum: the effective length is the largest the CPU implements.
pub const ZCR_LEN_MAX: u64 = 0xf;
/// SMCR_EL2.LEN at its maximum (the largest streaming vector length), FA64 and EZT0.
pub const SMCR_LEN_MAX: u64 = 0xf;
pub const SMCR_FA64: u64 = 1 << 31;
pub const SMCR_EZT0: u64 = 1 << 30;

/// An ID register of the feature space (op0 = 3, op1 = 0, CRn = 0) by its CRm and op2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdReg {
    pub name: &'static str,
    pub crm: u8,
    pub op2: u8,
}

pub const ID_PFR1_EL1: IdReg = IdReg { name: "ID_PFR1_EL1", crm: 1, op2: 1 };
pub const ID_AA64PFR0_EL1: IdReg = IdReg { name: "ID_AA64PFR0_EL1", crm: 4, op2: 0 };
pub const ID_AA64PFR1_EL1: IdReg = IdReg { name: "ID_AA64PFR1_EL1", crm: 4, op2: 1 };
pub const ID_AA64PFR2_EL1: IdReg = IdReg { name: "ID_AA64PFR2_EL1", crm: 4, op2: 2 };
pub const ID_AA64ISAR1_EL1: IdReg = IdReg { name: "ID_AA64ISAR1_EL1", crm: 6, op2: 1 };
pub const ID_AA64ISAR2_EL1: IdReg = IdReg { name: "ID_AA64ISAR2_EL1", crm: 6, op2: 2 };
pub const ID_AA64MMFR3_EL1: IdReg = IdReg { name: "ID_AA64MMFR3_EL1", crm: 7, op2: 3 };

/// A 4-bit ID register field the guest reads as zero: register, field name, shift, and why.
pub type HiddenField = (IdReg, &'static str, u32, &'static str);

/// The ID register fields hidden from the guest: features it cannot have (EL2 and Secure EL2
/// are the hypervisor's, as on KVM without nested virtualization) and features whose EL2 enable
/// (HCRX_EL2) the hypervisor does not set. None of the latter is implemented by QEMU 10.0's
/// `max` or `a64fx`; hiding them keeps a newer CPU model's guest from dying on its first use.
pub const HIDDEN: &[HiddenField] = &[
    (ID_AA64PFR0_EL1, "EL2", 8, "the guest has no EL2"),
    (ID_AA64PFR0_EL1, "SEL2", 36, "the guest has no Secure EL2"),
    (ID_PFR1_EL1, "Virtualization", 12, "the guest has no EL2 (AArch32 view)"),
    (ID_AA64PFR1_EL1, "GCS", 44, "HCRX_EL2.GCSEn not set"),
    (ID_AA64PFR2_EL1, "FPMR", 32, "HCRX_EL2.EnFPM not set"),
    (ID_AA64MMFR3_EL1, "TCRX", 0, "HCRX_EL2.TCR2En not set"),
    (ID_AA64MMFR3_EL1, "SCTLRX", 4, "HCRX_EL2.SCTLR2En not set"),
    (ID_AA64MMFR3_EL1, "S1PIE", 8, "needs TCR2_EL1 (TCRX hidden)"),
    (ID_AA64MMFR3_EL1, "S1POE", 16, "needs TCR2_EL1 (TCRX hidden)"),
    (ID_AA64MMFR3_EL1, "D128", 32, "HCRX_EL2.D128En not set"),
    (ID_AA64ISAR1_EL1, "LS64", 60, "HCRX_EL2.EnALS, EnASR, EnAS0 not set"),
    (ID_AA64ISAR2_EL1, "SYSREG_128", 32, "HCRX_EL2.EnIDCP128 not set"),
];

/// The features whose EL2 enables the hypervisor sets when the CPU has them: name (as the
/// features probe prints it), the ID register field that advertises it, and what EL2 sets.
pub const ENABLED: &[(&str, &str, &str)] = &[
    ("mops", "ID_AA64ISAR2_EL1.MOPS", "HCRX_EL2.MSCEn"),
    ("sve", "ID_AA64PFR0_EL1.SVE", "CPTR_EL2.TZ = 0, ZCR_EL2.LEN = 15"),
    ("sme", "ID_AA64PFR1_EL1.SME", "CPTR_EL2.TSM = 0, SMCR_EL2.LEN = 15"),
    ("sme-fa64", "ID_AA64SMFR0_EL1.FA64", "SMCR_EL2.FA64"),
    ("sme2", "ID_AA64PFR1_EL1.SME >= 2", "SMCR_EL2.EZT0"),
    ("pauth", "ID_AA64ISAR1_EL1.{APA,API,GPA,GPI}, ID_AA64ISAR2_EL1.{APA3,GPA3}", "HCR_EL2.API, HCR_EL2.APK"),
];

/// The value the guest reads from ID register (`crm`, `op2`), given the hardware's: the
/// [`HIDDEN`] fields cleared.
pub fn hide_fields(crm: u8, op2: u8, value: u64) -> u64 {
    HIDDEN
        .iter()
        .filter(|(reg, ..)| reg.crm == crm && reg.op2 == op2)
        .fold(value, |v, &(_, _, shift, _)| v & !(0xf << shift))
}

fn field(value: u64, shift: u32) -> u64 {
    value >> shift & 0xf
}

/// The enables for a CPU with these ID registers.
pub fn enables(id: IdRegisters) -> Enables {
    let sve = field(id.aa64pfr0, 32) != 0;
    let sme = field(id.aa64pfr1, 24) != 0;
    let hcx = field(id.aa64mmfr1, 40) != 0;
    let mops = field(id.aa64isar2, 16) != 0;
    let sme_level = field(id.aa64pfr1, 24);
    let fa64 = id.aa64smfr0 >> 63 != 0;
    // APA, API (ISAR1 7:4, 11:8), GPA, GPI (27:24, 31:28); APA3, GPA3 (ISAR2 15:12, 11:8).
    let pauth = id.aa64isar1 & 0xff00_0ff0 != 0 || id.aa64isar2 & 0xff00 != 0;
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
        smcr_el2: sme
            .then_some(SMCR_LEN_MAX | if fa64 { SMCR_FA64 } else { 0 } | if sme_level >= 2 { SMCR_EZT0 } else { 0 }),
        pauth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    /// QEMU's `-cpu max` (10.0) as its guest reads it at EL1 (the features probe's values):
    /// SVE, SME with FA64, PAuth, HCX and MOPS.
    const MAX: IdRegisters = IdRegisters {
        aa64pfr0: 0x1301_0011_2111_0222,
        aa64pfr1: 0x10_0100_0121,
        aa64isar1: 0x0111_2111_1021_1502,
        aa64isar2: 0x11_0012,
        aa64mmfr1: 0x0110_1120_1031_2122,
        aa64smfr0: 0x80f1_00fd_0000_0000,
    };
    /// QEMU's `-cpu a64fx`: SVE only.
    const A64FX: IdRegisters = IdRegisters {
        aa64pfr0: 0x1_0111_0111,
        aa64pfr1: 0,
        aa64isar1: 0x1_0001,
        aa64isar2: 0,
        aa64mmfr1: 0x1121_2100,
        aa64smfr0: 0,
    };

    #[test]
    fn every_advertised_feature_is_enabled() {
        let e = enables(MAX);
        assert_eq!(e.cptr_el2 & (CPTR_TZ | CPTR_TSM), 0, "SVE and SME not trapped");
        assert_eq!(e.cptr_el2 & CPTR_RES1, CPTR_RES1);
        assert_eq!(e.hcrx_el2, Some(HCRX_MSCEN));
        assert_eq!(e.zcr_el2, Some(ZCR_LEN_MAX));
        assert_eq!(e.smcr_el2, Some(SMCR_LEN_MAX | SMCR_FA64), "SME 1 with FA64: no ZT0");
        assert!(e.pauth);
        let sme2 = IdRegisters { aa64pfr1: 2 << 24, aa64smfr0: 0, ..MAX };
        assert_eq!(enables(sme2).smcr_el2, Some(SMCR_LEN_MAX | SMCR_EZT0));
        // PAuth through ISAR2's APA3 alone.
        assert!(enables(IdRegisters { aa64isar2: 1 << 12, ..Default::default() }).pauth);
    }

    #[test]
    fn a64fx_gets_sve_only() {
        let e = enables(A64FX);
        assert_eq!((e.cptr_el2 & CPTR_TZ, e.cptr_el2 & CPTR_TSM), (0, CPTR_TSM));
        assert_eq!((e.hcrx_el2, e.zcr_el2, e.smcr_el2, e.pauth), (None, Some(ZCR_LEN_MAX), None, false));
    }

    #[test]
    fn hidden_fields_read_as_zero_and_nothing_else_changes() {
        // EL2 and SEL2 of max's ID_AA64PFR0_EL1 go; EL0, EL1, SVE and the rest stay.
        assert_eq!(hide_fields(4, 0, MAX.aa64pfr0), 0x1301_0001_2111_0022);
        assert_eq!(hide_fields(4, 1, MAX.aa64pfr1), MAX.aa64pfr1, "max has no GCS");
        assert_eq!(hide_fields(4, 1, 0xf << 44 | 0x121), 0x121);
        assert_eq!(hide_fields(7, 3, u64::MAX), 0xffff_fff0_fff0_0000 | 0xf << 12);
        assert_eq!(hide_fields(6, 1, u64::MAX), 0x0fff_ffff_ffff_ffff);
        assert_eq!(hide_fields(4, 2, u64::MAX), !(0xf << 32));
        assert_eq!(hide_fields(1, 1, 0x1031), 0x0031);
        // Registers without hidden fields are untouched.
        assert_eq!(hide_fields(6, 0, u64::MAX), u64::MAX);
        // Every hidden field is a 4-bit field inside its register, named once.
        for (i, (reg, name, shift, _)) in HIDDEN.iter().enumerate() {
            assert!(*shift <= 60 && shift % 4 == 0, "{name}");
            assert!(!HIDDEN[..i].iter().any(|(r, n, ..)| r == reg && n == name), "{name} twice");
        }
    }

    /// docs/abi.md §6 lists exactly [`ENABLED`] and [`HIDDEN`]: its table `| feature | ID
    /// register field | … |` has a row `| `name` | `ID field` | enabled: … |` per enabled feature and
    /// `| … | `REG.FIELD` | hidden: … |` per hidden field.
    #[test]
    fn abi_md_lists_every_enabled_and_hidden_feature() {
        let abi = include_str!("../../docs/abi.md");
        let section = abi.split("\n## 6.").nth(1).expect("abi.md has a §6");
        let section = section.split("\n## ").next().unwrap();
        let table = section.split("| feature | ID register field |").nth(1).expect("§6 has the CPU feature table");
        let (mut enabled, mut hidden) = (Vec::new(), Vec::new());
        for line in table.lines().map(str::trim).skip(1).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = |c: &str| c.strip_prefix('`').and_then(|c| c.strip_suffix('`')).map(str::to_string);
            match (cells.get(2).copied().and_then(code), cells.get(3)) {
                (Some(id_field), Some(what)) if what.starts_with("enabled") => {
                    enabled.push((code(cells[1]).unwrap_or_default(), id_field))
                }
                (Some(id_field), Some(what)) if what.starts_with("hidden") => hidden.push(id_field),
                _ => {}
            }
        }
        let want_enabled: Vec<(String, String)> =
            ENABLED.iter().map(|(n, f, _)| (n.to_string(), f.to_string())).collect();
        let want_hidden: Vec<String> = HIDDEN.iter().map(|(r, f, ..)| alloc::format!("{}.{f}", r.name)).collect();
        assert_eq!(enabled, want_enabled, "docs/abi.md §6 and features::ENABLED differ");
        assert_eq!(hidden, want_hidden, "docs/abi.md §6 and features::HIDDEN differ");
    }

    #[test]
    fn absent_features_stay_trapped_or_untouched() {
        let e = enables(IdRegisters::default());
        assert_eq!(e.cptr_el2, CPTR_RES1 | CPTR_TZ | CPTR_TSM);
        assert_eq!((e.hcrx_el2, e.zcr_el2, e.smcr_el2, e.pauth), (None, None, None, false));
        // HCX without MOPS: HCRX_EL2 is written, with nothing enabled.
        let hcx_only = IdRegisters { aa64mmfr1: 1 << 40, ..Default::default() };
        assert_eq!(enables(hcx_only).hcrx_el2, Some(0));
        // SVE alone (a64fx: no SME).
        let sve = IdRegisters { aa64pfr0: 1 << 32, ..Default::default() };
        let e = enables(sve);
        assert_eq!((e.cptr_el2 & CPTR_TZ, e.cptr_el2 & CPTR_TSM), (0, CPTR_TSM));
    }
}
