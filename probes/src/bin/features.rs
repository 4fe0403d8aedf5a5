//! The features probe: every CPU feature that the ID registers advertise works at EL1, the way
//! a guest kernel would first use it (what EL2 must enable for it is in `asyncpf_core::features`).
//!
//! It prints the ID registers it read (`features probe: id pfr0=… …`) and then one line:
//! `features probe: advertised A; failed F; sve_vl_bytes V sme_vl_bytes S; exceptions E`,
//! where A lists the features found in the ID registers (in [`FEATURES`]' order) and F those of
//! them whose first use took an exception or gave a wrong result (`none` when all worked):
//! * `mops` (ID_AA64ISAR2_EL1.MOPS): a SETP/SETM/SETE memset and a CPYFP/CPYFM/CPYFE memcpy
//!   (what glibc's string functions use when the CPU says it has them);
//! * `sve` (ID_AA64PFR0_EL1.SVE): RDVL after asking for the largest vector length;
//! * `sme` (ID_AA64PFR1_EL1.SME): SMSTART/RDSVL/SMSTOP after asking for the largest streaming
//!   vector length; `sme-fa64` (ID_AA64SMFR0_EL1.FA64): an Advanced SIMD instruction in
//!   streaming mode; `sme2` (SME ≥ 2): ZERO { ZT0 } with ZA on;
//! * `pauth` (ID_AA64ISAR1/2_EL1 APA, API, GPA, GPI, APA3, GPA3): a key write and PACGA;
//! * `mte` (ID_AA64PFR1_EL1.MTE): IRG, and with FEAT_MTE2 GCR_EL1;
//! * `fpmr` (ID_AA64PFR2_EL1.FPMR), `tcr2` and `sctlr2` (ID_AA64MMFR3_EL1.TCRX, SCTLRX),
//!   `gcs` (ID_AA64PFR1_EL1.GCS), `s1pie`, `s1poe` (ID_AA64MMFR3_EL1), `nmi`
//!   (ID_AA64PFR1_EL1.NMI), `the` (ID_AA64PFR1_EL1.THE), `lor` (ID_AA64MMFR1_EL1.LO), `ras`
//!   (ID_AA64PFR0_EL1.RAS), `ecv` (ID_AA64MMFR0_EL1.ECV), `rng` (ID_AA64ISAR0_EL1.RNDR): a
//!   read of the feature's EL1 system register (FPMR, TCR2_EL1, SCTLR2_EL1, GCSCR_EL1,
//!   PIR_EL1, POR_EL1, ALLINT, RCWMASK_EL1, LORID_EL1, ERRIDR_EL1, CNTVCTSS_EL0, RNDR), which
//!   traps to EL2 unless the hypervisor enabled it.
#![no_std]
#![no_main]

use core::arch::asm;

use asyncpf_probes::{exceptions, probe, Env};

/// Reads a system register by name or `S3_…` encoding.
macro_rules! mrs {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reads a system register; an access that traps is UNDEFINED for the guest and
        // stepped over by the probe's vectors (`v` is then the register's old content).
        unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// The ID registers the probe reads.
#[derive(Clone, Copy)]
struct Ids {
    pfr0: u64,
    pfr1: u64,
    pfr2: u64,
    isar0: u64,
    isar1: u64,
    isar2: u64,
    mmfr0: u64,
    mmfr1: u64,
    mmfr2: u64,
    mmfr3: u64,
    dfr0: u64,
    zfr0: u64,
    smfr0: u64,
}

impl Ids {
    fn read() -> Ids {
        Ids {
            pfr0: mrs!("id_aa64pfr0_el1"),
            pfr1: mrs!("id_aa64pfr1_el1"),
            pfr2: mrs!("S3_0_C0_C4_2"),
            isar0: mrs!("id_aa64isar0_el1"),
            isar1: mrs!("id_aa64isar1_el1"),
            isar2: mrs!("S3_0_C0_C6_2"),
            mmfr0: mrs!("id_aa64mmfr0_el1"),
            mmfr1: mrs!("id_aa64mmfr1_el1"),
            mmfr2: mrs!("id_aa64mmfr2_el1"),
            mmfr3: mrs!("S3_0_C0_C7_3"),
            dfr0: mrs!("id_aa64dfr0_el1"),
            zfr0: mrs!("S3_0_C0_C4_4"),
            smfr0: mrs!("S3_0_C0_C4_5"),
        }
    }
}

/// A 4-bit ID register field.
fn field(value: u64, shift: u32) -> u64 {
    value >> shift & 0xf
}

/// The features checked, in the order the result line lists them: name, whether the ID
/// registers advertise it, and its check (true: it worked).
type Feature = (&'static str, fn(&Ids) -> bool, fn(&Ids, &mut Lengths) -> bool);

/// Vector lengths found on the way.
#[derive(Default)]
struct Lengths {
    sve: u64,
    sme: u64,
}

const FEATURES: &[Feature] = &[
    ("mops", |i| field(i.isar2, 16) != 0, |_, _| mops()),
    ("sve", |i| field(i.pfr0, 32) != 0, |_, l| sve(l)),
    ("sme", |i| field(i.pfr1, 24) != 0, |_, l| sme(l)),
    ("sme-fa64", |i| field(i.pfr1, 24) != 0 && i.smfr0 >> 63 != 0, |_, _| sme_fa64()),
    ("sme2", |i| field(i.pfr1, 24) >= 2, |_, _| sme2()),
    (
        "pauth",
        |i| i.isar1 & 0xff00_0ff0 != 0 || i.isar2 & 0xff00 != 0,
        |_, _| {
            let pac: u64;
            // SAFETY: sets the generic authentication key and computes a PAC of two values;
            // nothing else uses the key.
            unsafe {
                asm!(".arch_extension pauth", "msr S3_0_C2_C3_0, {k}", "msr S3_0_C2_C3_1, {k}", "isb",
                     "pacga {p}, {a}, {b}", k = in(reg) 0x0123_4567_89ab_cdefu64, a = in(reg) 0x1234u64,
                     b = in(reg) 0x5678u64, p = out(reg) pac, options(nomem, nostack))
            };
            pac >> 32 != 0
        },
    ),
    (
        "mte",
        |i| field(i.pfr1, 8) != 0,
        |i, _| {
            let tagged: u64;
            // SAFETY: IRG only computes a tagged pointer value; nothing is accessed.
            unsafe {
                asm!(".arch_extension memtag", "irg {t}, {p}", t = out(reg) tagged, p = in(reg) 0x4000_0000u64,
                     options(nomem, nostack))
            };
            let _ = tagged;
            if field(i.pfr1, 8) >= 2 {
                let _ = mrs!("S3_0_C1_C0_6"); // GCR_EL1
            }
            true
        },
    ),
    ("fpmr", |i| field(i.pfr2, 32) != 0, |_, _| read_only(|| mrs!("S3_3_C4_C4_2"))),
    ("tcr2", |i| field(i.mmfr3, 0) != 0, |_, _| read_only(|| mrs!("S3_0_C2_C0_3"))),
    ("sctlr2", |i| field(i.mmfr3, 4) != 0, |_, _| read_only(|| mrs!("S3_0_C1_C0_3"))),
    ("gcs", |i| field(i.pfr1, 44) != 0, |_, _| read_only(|| mrs!("S3_0_C2_C5_0"))),
    ("s1pie", |i| field(i.mmfr3, 8) != 0, |_, _| read_only(|| mrs!("S3_0_C10_C2_3"))),
    ("s1poe", |i| field(i.mmfr3, 16) != 0, |_, _| read_only(|| mrs!("S3_0_C10_C2_4"))),
    ("nmi", |i| field(i.pfr1, 36) != 0, |_, _| read_only(|| mrs!("S3_0_C4_C3_0"))),
    ("the", |i| field(i.pfr1, 48) != 0, |_, _| read_only(|| mrs!("S3_0_C13_C0_6"))),
    ("lor", |i| field(i.mmfr1, 16) != 0, |_, _| read_only(|| mrs!("S3_0_C10_C4_7"))),
    ("ras", |i| field(i.pfr0, 28) != 0, |_, _| read_only(|| mrs!("S3_0_C5_C3_0"))),
    ("ecv", |i| field(i.mmfr0, 60) != 0, |_, _| read_only(|| mrs!("S3_3_C14_C0_6"))),
    ("rng", |i| field(i.isar0, 60) != 0, |_, _| read_only(|| mrs!("S3_3_C2_C4_0"))),
];

/// Runs `f` (a register read); the check is that it took no exception, counted by the caller.
fn read_only(f: impl FnOnce() -> u64) -> bool {
    let _ = f();
    true
}

/// memset and memcpy with the FEAT_MOPS instructions.
fn mops() -> bool {
    let mut a = [0u8; 200];
    let (mut dst, mut len) = (a[3..190].as_mut_ptr(), 187usize);
    // SAFETY: the three instructions write exactly `len` bytes from `dst`, inside `a`; if they
    // are UNDEFINED the probe's vectors step over each and `a` keeps its contents.
    unsafe {
        asm!(".arch_extension mops", "setp [{d}]!, {n}!, {v}", "setm [{d}]!, {n}!, {v}", "sete [{d}]!, {n}!, {v}",
             d = inout(reg) dst, n = inout(reg) len, v = in(reg) 0x5au64, options(nostack))
    };
    let _ = (dst, len);
    let set =
        a[..3].iter().all(|&b| b == 0) && a[3..190].iter().all(|&b| b == 0x5a) && a[190..].iter().all(|&b| b == 0);
    let src: [u8; 150] = core::array::from_fn(|i| i as u8 ^ 0xa5);
    let mut out = [0u8; 150];
    let (mut d, mut s, mut n) = (out.as_mut_ptr(), src.as_ptr(), 150usize);
    // SAFETY: copies `n` bytes between two distinct buffers of that length; UNDEFINED
    // instructions are stepped over and change nothing.
    unsafe {
        asm!(".arch_extension mops", "cpyfp [{d}]!, [{s}]!, {n}!", "cpyfm [{d}]!, [{s}]!, {n}!", "cpyfe [{d}]!, [{s}]!, {n}!",
             d = inout(reg) d, s = inout(reg) s, n = inout(reg) n, options(nostack))
    };
    let _ = (d, s, n);
    set && out == src
}

/// The SVE vector length after asking for the largest (ZCR_EL1.LEN = 15), read with RDVL.
fn sve(lengths: &mut Lengths) -> bool {
    let bytes: u64;
    // SAFETY: CPACR_EL1.ZEN = 0b11 lets EL1 use SVE; ZCR_EL1.LEN = 15 asks for the largest
    // length; RDVL only reads it. The probe has no other SVE state.
    unsafe {
        asm!(
            ".arch_extension sve",
            "mrs {t}, cpacr_el1",
            "orr {t}, {t}, #(3 << 16)",
            "msr cpacr_el1, {t}",
            "isb",
            "mov {t}, #15",
            "msr S3_0_C1_C2_0, {t}", // ZCR_EL1
            "isb",
            "rdvl {b}, #1",
            t = out(reg) _,
            b = out(reg) bytes,
            options(nostack),
        )
    };
    lengths.sve = bytes;
    bytes >= 16
}

/// SMCR_EL1: LEN = 15 (the largest streaming vector length), FA64 (bit 31), EZT0 (bit 30).
const SMCR_EL1_ALL: u64 = 15 | 1 << 31 | 1 << 30;

/// Lets EL1 use SME (CPACR_EL1.SMEN = 0b11) and asks for everything in SMCR_EL1.
fn sme_on() {
    // SAFETY: CPACR_EL1.SMEN and SMCR_EL1 only govern this probe's own use of SME.
    unsafe {
        asm!(
            "mrs {t}, cpacr_el1",
            "orr {t}, {t}, #(3 << 24)",
            "msr cpacr_el1, {t}",
            "isb",
            "msr S3_0_C1_C2_6, {s}", // SMCR_EL1
            "isb",
            t = out(reg) _,
            s = in(reg) SMCR_EL1_ALL,
            options(nostack),
        )
    };
}

/// The streaming vector length, read with RDSVL in streaming mode.
fn sme(lengths: &mut Lengths) -> bool {
    sme_on();
    let bytes: u64;
    // SAFETY: enters and leaves streaming mode around RDSVL; no other code runs in between.
    unsafe {
        asm!(".arch_extension sme", "smstart sm", "rdsvl {b}, #1", "smstop sm", b = out(reg) bytes, options(nostack))
    };
    lengths.sme = bytes;
    bytes >= 16
}

/// An Advanced SIMD instruction in streaming mode (legal only with FEAT_SME_FA64 enabled at
/// every EL: SMCR_EL1, SMCR_EL2).
fn sme_fa64() -> bool {
    sme_on();
    // SAFETY: enters streaming mode, adds v0 to itself (a scratch register declared clobbered),
    // and leaves it.
    unsafe {
        asm!(".arch_extension sme", "smstart sm", "add v0.16b, v0.16b, v0.16b", "smstop sm", out("v0") _,
             options(nostack))
    };
    true
}

/// ZERO { ZT0 } with ZA on (FEAT_SME2; legal only with SMCR_EL1.EZT0 and SMCR_EL2.EZT0).
fn sme2() -> bool {
    sme_on();
    // SAFETY: turns ZA storage on, zeroes ZT0 and turns ZA off again.
    unsafe { asm!(".arch_extension sme2", "smstart za", "zero {{zt0}}", "smstop za", options(nostack)) };
    true
}

fn features(env: &Env) -> ! {
    let before = exceptions();
    let ids = Ids::read();
    env.println(format_args!(
        "features probe: id pfr0={:#x} pfr1={:#x} pfr2={:#x} isar0={:#x} isar1={:#x} isar2={:#x} mmfr0={:#x} \
         mmfr1={:#x} mmfr2={:#x} mmfr3={:#x} dfr0={:#x} zfr0={:#x} smfr0={:#x}",
        ids.pfr0,
        ids.pfr1,
        ids.pfr2,
        ids.isar0,
        ids.isar1,
        ids.isar2,
        ids.mmfr0,
        ids.mmfr1,
        ids.mmfr2,
        ids.mmfr3,
        ids.dfr0,
        ids.zfr0,
        ids.smfr0
    ));
    let mut lengths = Lengths::default();
    let mut advertised: [&str; 32] = [""; 32];
    let mut failed: [&str; 32] = [""; 32];
    let (mut na, mut nf) = (0, 0);
    for &(name, has, check) in FEATURES {
        if !has(&ids) {
            continue;
        }
        advertised[na] = name;
        na += 1;
        let start = exceptions();
        let worked = check(&ids, &mut lengths);
        if !worked || exceptions() != start {
            failed[nf] = name;
            nf += 1;
        }
    }
    let list = |names: &[&str]| -> ListOf {
        let mut out = ListOf { bytes: [0; 256], len: 0 };
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(",");
            }
            out.push(n);
        }
        if names.is_empty() {
            out.push("none");
        }
        out
    };
    env.println(format_args!(
        "features probe: advertised {}; failed {}; sve_vl_bytes {} sme_vl_bytes {}; exceptions {}",
        list(&advertised[..na]).as_str(),
        list(&failed[..nf]).as_str(),
        lengths.sve,
        lengths.sme,
        exceptions() - before
    ));
    env.system_off()
}

/// A short comma-separated list built without an allocator.
struct ListOf {
    bytes: [u8; 256],
    len: usize,
}

impl ListOf {
    fn push(&mut self, s: &str) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

probe!(features);
