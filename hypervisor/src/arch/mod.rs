//! The arm64 parts of the hypervisor: boot code, exception vectors, guest entry and exit,
//! and the few system registers that `aarch64-cpu` does not wrap.

pub mod boot;
pub mod entry;
pub mod gicv3_sysregs;

use core::arch::asm;

/// Data synchronization barrier over the inner-shareable domain.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Data synchronization barrier over the full system (before MMU or TLB changes are relied on).
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Data memory barrier over the outer-shareable domain, for stores: a device (an observer
/// outside the inner-shareable domain that `dmb ish` and acquire/release cover) sees the
/// CPU's earlier stores, e.g. a virtqueue's rings, before a later one, e.g. its doorbell.
/// Linux's `writel` puts the same barrier before its store (`__iowmb`).
#[inline(always)]
pub fn dmb_oshst() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { asm!("dmb oshst", options(nostack, preserves_flags)) };
}

/// Instruction synchronization barrier: later instructions see earlier system register writes.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Wait for an interrupt. Interrupts stay masked at EL2: the hypervisor polls the GIC after
/// waking, so a wake-up never diverts control flow.
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only suspends execution until a wake-up event.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// The spin-wait hint, once per try of every spin loop (`crate::sync::Mutex` and the pager's
/// lock): `yield`. On hardware it is a hint to an SMT core; under QEMU's TCG round robin (one
/// host thread runs every vCPU in turn, as with `-icount`) it ends this vCPU's turn at once, so
/// the lock's holder, descheduled in the middle of its critical section, runs instead of this
/// CPU spinning away its whole time slice. `core::hint::spin_loop` is `isb` on arm64, which
/// QEMU does not treat as a yield: measured on 4 vCPUs under `-icount`, a third of the
/// asynchronous run's virtual time went to spinning on the vGIC's distributor lock.
#[inline(always)]
pub fn spin_hint() {
    // SAFETY: `yield` is a hint with no architectural effect.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Wait for an event (`sev` from another CPU, or an interrupt).
#[inline(always)]
pub fn wait_for_event() {
    // SAFETY: `wfe` only suspends execution until an event or a wake-up.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Wake every CPU waiting in `wfe`, after the caller's stores (`dsb` first).
pub fn send_event() {
    // SAFETY: barriers and an event signal; no memory is changed.
    unsafe { asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Invalidate all stage-1 and stage-2 EL1&0 TLB entries of the current VMID, inner shareable.
pub fn tlbi_vmalls12e1is() {
    dsb_ish();
    // SAFETY: TLB maintenance cannot break memory safety; it only drops cached translations.
    unsafe { asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) };
    dsb_ish();
    isb();
}

/// Invalidate all EL2 stage-1 TLB entries on this CPU.
pub fn tlbi_alle2() {
    dsb_sy();
    // SAFETY: TLB maintenance cannot break memory safety; it only drops cached translations.
    unsafe { asm!("tlbi alle2", options(nostack, preserves_flags)) };
    dsb_sy();
    isb();
}

/// Clean the data cache to the point of coherency over `[start, start + len)`, so that a guest
/// that starts with its MMU and caches off reads what the hypervisor wrote through its caches.
pub fn clean_dcache_to_poc(start: usize, len: usize) {
    let line = dcache_line_bytes();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: cleaning a cache line by VA writes dirty data back; the address is mapped
        // (it lies in memory the caller owns) and no data changes.
        unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    dsb_sy();
}

/// Invalidate the whole instruction cache to the point of unification (inner shareable).
pub fn invalidate_icache() {
    // SAFETY: instruction cache invalidation has no effect on data.
    unsafe { asm!("ic ialluis", options(nostack, preserves_flags)) };
    dsb_ish();
    isb();
}

/// CTR_EL0, the cache type register.
pub fn ctr_el0() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The smallest data cache line of this CPU in bytes (CTR_EL0.DminLine).
pub fn dcache_line_bytes() -> usize {
    4 << ((ctr_el0() >> 16) & 0xf)
}

/// The cache writeback granule of this CPU in bytes, as the asynchronous page fault record is
/// laid out by it (`asyncpf_core::apf::cwg_bytes`: CTR_EL0.CWG 0, "not reported", or a
/// reserved value means the architectural maximum, 2 KiB; at least 16 bytes).
pub fn writeback_granule_bytes() -> usize {
    asyncpf_core::apf::cwg_bytes(writeback_granule_cwg()) as usize
}

/// This CPU's CTR_EL0.CWG field (log2 of the writeback granule in words; 0: not reported).
pub fn writeback_granule_cwg() -> u64 {
    (ctr_el0() >> 24) & 0xf
}

/// This physical CPU's index, set by `boot` in TPIDR_EL2.
pub fn cpu_index() -> usize {
    let value: u64;
    // SAFETY: reading TPIDR_EL2 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value as usize
}

/// Record this physical CPU's index in TPIDR_EL2.
pub fn set_cpu_index(index: usize) {
    // SAFETY: TPIDR_EL2 is a scratch register owned by the hypervisor.
    unsafe { asm!("msr tpidr_el2, {}", in(reg) index as u64, options(nomem, nostack, preserves_flags)) };
}

/// An SMCCC fast call to the firmware (QEMU's built-in PSCI) through `smc #0`.
pub fn smc_call(function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let result: i64;
    // SAFETY: QEMU implements PSCI at the smc conduit; the call clobbers only x0-x17 as SMCCC
    // 1.1 allows, which we declare.
    unsafe {
        asm!("smc #0",
            inlateout("x0") function as u64 => result,
            inlateout("x1") a1 => _, inlateout("x2") a2 => _, inlateout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack))
    };
    result
}

/// Read the feature ID register S3_0_C0_C<crm>_<op2> (CRm 1 to 7: the registers HCR_EL2.TID3
/// traps, including reserved encodings, which read as zero). `None` for other encodings.
pub fn read_id_register(crm: u8, op2: u8) -> Option<u64> {
    let value: u64;
    macro_rules! read {
        ($reg:literal) => {
            // SAFETY: reading an ID register (or a reserved, read-as-zero encoding of that
            // space) has no side effects.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) }
        };
    }
    match (crm, op2) {
        (1, 0) => read!("S3_0_C0_C1_0"),
        (1, 1) => read!("S3_0_C0_C1_1"),
        (1, 2) => read!("S3_0_C0_C1_2"),
        (1, 3) => read!("S3_0_C0_C1_3"),
        (1, 4) => read!("S3_0_C0_C1_4"),
        (1, 5) => read!("S3_0_C0_C1_5"),
        (1, 6) => read!("S3_0_C0_C1_6"),
        (1, 7) => read!("S3_0_C0_C1_7"),
        (2, 0) => read!("S3_0_C0_C2_0"),
        (2, 1) => read!("S3_0_C0_C2_1"),
        (2, 2) => read!("S3_0_C0_C2_2"),
        (2, 3) => read!("S3_0_C0_C2_3"),
        (2, 4) => read!("S3_0_C0_C2_4"),
        (2, 5) => read!("S3_0_C0_C2_5"),
        (2, 6) => read!("S3_0_C0_C2_6"),
        (2, 7) => read!("S3_0_C0_C2_7"),
        (3, 0) => read!("S3_0_C0_C3_0"),
        (3, 1) => read!("S3_0_C0_C3_1"),
        (3, 2) => read!("S3_0_C0_C3_2"),
        (3, 3) => read!("S3_0_C0_C3_3"),
        (3, 4) => read!("S3_0_C0_C3_4"),
        (3, 5) => read!("S3_0_C0_C3_5"),
        (3, 6) => read!("S3_0_C0_C3_6"),
        (3, 7) => read!("S3_0_C0_C3_7"),
        (4, 0) => read!("S3_0_C0_C4_0"),
        (4, 1) => read!("S3_0_C0_C4_1"),
        (4, 2) => read!("S3_0_C0_C4_2"),
        (4, 3) => read!("S3_0_C0_C4_3"),
        (4, 4) => read!("S3_0_C0_C4_4"),
        (4, 5) => read!("S3_0_C0_C4_5"),
        (4, 6) => read!("S3_0_C0_C4_6"),
        (4, 7) => read!("S3_0_C0_C4_7"),
        (5, 0) => read!("S3_0_C0_C5_0"),
        (5, 1) => read!("S3_0_C0_C5_1"),
        (5, 2) => read!("S3_0_C0_C5_2"),
        (5, 3) => read!("S3_0_C0_C5_3"),
        (5, 4) => read!("S3_0_C0_C5_4"),
        (5, 5) => read!("S3_0_C0_C5_5"),
        (5, 6) => read!("S3_0_C0_C5_6"),
        (5, 7) => read!("S3_0_C0_C5_7"),
        (6, 0) => read!("S3_0_C0_C6_0"),
        (6, 1) => read!("S3_0_C0_C6_1"),
        (6, 2) => read!("S3_0_C0_C6_2"),
        (6, 3) => read!("S3_0_C0_C6_3"),
        (6, 4) => read!("S3_0_C0_C6_4"),
        (6, 5) => read!("S3_0_C0_C6_5"),
        (6, 6) => read!("S3_0_C0_C6_6"),
        (6, 7) => read!("S3_0_C0_C6_7"),
        (7, 0) => read!("S3_0_C0_C7_0"),
        (7, 1) => read!("S3_0_C0_C7_1"),
        (7, 2) => read!("S3_0_C0_C7_2"),
        (7, 3) => read!("S3_0_C0_C7_3"),
        (7, 4) => read!("S3_0_C0_C7_4"),
        (7, 5) => read!("S3_0_C0_C7_5"),
        (7, 6) => read!("S3_0_C0_C7_6"),
        (7, 7) => read!("S3_0_C0_C7_7"),
        _ => return None,
    }
    Some(value)
}
