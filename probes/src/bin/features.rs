//! The features probe: CPU features that the ID registers advertise work at EL1.
//! * FEAT_MOPS (ID_AA64ISAR2_EL1.MOPS): a SETP/SETM/SETE memset and a CPYFP/CPYFM/CPYFE memcpy
//!   (what glibc's string functions use when the CPU says it has them);
//! * FEAT_SVE (ID_AA64PFR0_EL1.SVE): the vector length the guest gets when it asks for the
//!   largest (ZCR_EL1.LEN = 15), read with RDVL.
//!
//! It prints one line: `features probe: mops advertised A memset M memcpy C, sve advertised S
//! vl_bytes V, exceptions E`.
#![no_std]
#![no_main]

use core::arch::asm;

use asyncpf_probes::{exceptions, probe, Env};

fn id_aa64isar2() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, S3_0_C0_C6_2", out(reg) v, options(nomem, nostack)) };
    v
}

fn id_aa64pfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// memset(buf, value, len) with the FEAT_MOPS instructions.
fn mops_set(buf: &mut [u8], value: u8) {
    let (mut dst, mut len) = (buf.as_mut_ptr(), buf.len());
    // SAFETY: the three instructions write exactly `len` bytes from `dst`, inside `buf`; if
    // they are UNDEFINED the probe's vectors step over each and `buf` keeps its contents.
    unsafe {
        asm!(".arch_extension mops", "setp [{d}]!, {n}!, {v}", "setm [{d}]!, {n}!, {v}", "sete [{d}]!, {n}!, {v}",
             d = inout(reg) dst, n = inout(reg) len, v = in(reg) u64::from(value), options(nostack))
    };
    let _ = (dst, len);
}

/// memcpy(dst, src) (same length) with the FEAT_MOPS instructions.
fn mops_copy(dst: &mut [u8], src: &[u8]) {
    let (mut d, mut s, mut n) = (dst.as_mut_ptr(), src.as_ptr(), dst.len().min(src.len()));
    // SAFETY: copies `n` bytes between two distinct buffers of at least that length; UNDEFINED
    // instructions are stepped over and change nothing.
    unsafe {
        asm!(".arch_extension mops", "cpyfp [{d}]!, [{s}]!, {n}!", "cpyfm [{d}]!, [{s}]!, {n}!", "cpyfe [{d}]!, [{s}]!, {n}!",
             d = inout(reg) d, s = inout(reg) s, n = inout(reg) n, options(nostack))
    };
    let _ = (d, s, n);
}

/// The SVE vector length in bytes after asking for the largest.
fn sve_vector_bytes() -> u64 {
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
    bytes
}

fn features(env: &Env) -> ! {
    let before = exceptions();
    let mops = (id_aa64isar2() >> 16) & 0xf != 0;
    let (mut memset_ok, mut memcpy_ok) = (false, false);
    if mops {
        let mut a = [0u8; 200];
        mops_set(&mut a[3..190], 0x5a);
        memset_ok =
            a[..3].iter().all(|&b| b == 0) && a[3..190].iter().all(|&b| b == 0x5a) && a[190..].iter().all(|&b| b == 0);
        let src: [u8; 150] = core::array::from_fn(|i| i as u8 ^ 0xa5);
        let mut dst = [0u8; 150];
        mops_copy(&mut dst, &src);
        memcpy_ok = dst == src;
    }
    let sve = (id_aa64pfr0() >> 32) & 0xf != 0;
    let vl = if sve { sve_vector_bytes() } else { 0 };
    env.println(format_args!(
        "features probe: mops advertised {mops} memset {memset_ok} memcpy {memcpy_ok}, sve advertised {sve} vl_bytes {vl}, exceptions {}",
        exceptions() - before
    ));
    env.system_off()
}

probe!(features);
