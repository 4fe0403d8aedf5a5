//! The GICv3 CPU interface registers that `aarch64-cpu` does not provide, as used at EL2 for
//! the *physical* interface (with HCR_EL2.IMO set, the same encodings at EL1 reach the guest's
//! virtual interface instead; at EL2 they reach the physical one).

use core::arch::asm;

/// Spurious interrupt ID: nothing pending.
pub const INTID_SPURIOUS: u32 = 1023;

/// Acknowledge the highest-priority pending group-1 interrupt (ICC_IAR1_EL1).
pub fn ack_group1() -> u32 {
    let intid: u64;
    // SAFETY: acknowledging an interrupt changes only GIC state, which this hypervisor owns.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nostack, preserves_flags)) };
    (intid & 0xff_ffff) as u32
}

/// Drop the running priority of an interrupt this CPU acknowledged (ICC_EOIR1_EL1; with
/// EOImode 1, see [`split_priority_drop`], it stays active until [`deactivate`]).
pub fn end_of_interrupt(intid: u32) {
    // SAFETY: ends an interrupt this CPU acknowledged; affects only GIC state.
    unsafe { asm!("msr icc_eoir1_el1, {}", in(reg) intid as u64, options(nostack, preserves_flags)) };
}

/// Deactivate an interrupt whose priority was dropped (ICC_DIR_EL1, EOImode 1).
pub fn deactivate(intid: u32) {
    // SAFETY: deactivates an interrupt this CPU acknowledged; affects only GIC state.
    unsafe { asm!("msr icc_dir_el1, {}", in(reg) intid as u64, options(nostack, preserves_flags)) };
}

/// ICC_CTLR_EL1.EOImode = 1 at EL2: ICC_EOIR1_EL1 only drops the priority and ICC_DIR_EL1
/// deactivates, so an interrupt handed to the guest through a hardware list register (the
/// timers) stays active until the guest deactivates its virtual twin.
pub fn split_priority_drop() {
    // SAFETY: sets EOImode of the physical CPU interface, which the hypervisor owns; every
    // path that ends interrupts (`gic::drain`) deactivates them explicitly from then on.
    unsafe {
        asm!("mrs {t}, icc_ctlr_el1", "orr {t}, {t}, #2", "msr icc_ctlr_el1, {t}", "isb", t = out(reg) _,
             options(nostack, preserves_flags))
    };
}

/// Set the priority mask (ICC_PMR_EL1): interrupts with priority lower than this are masked.
pub fn set_priority_mask(mask: u8) {
    // SAFETY: writes a GIC CPU interface register owned by the hypervisor.
    unsafe { asm!("msr icc_pmr_el1, {}", in(reg) mask as u64, options(nostack, preserves_flags)) };
}

/// Enable or disable group-1 interrupts at the physical CPU interface (ICC_IGRPEN1_EL1).
pub fn set_group1_enabled(enabled: bool) {
    // SAFETY: writes a GIC CPU interface register owned by the hypervisor.
    unsafe { asm!("msr icc_igrpen1_el1, {}", in(reg) enabled as u64, options(nostack, preserves_flags)) };
    super::isb();
}

/// Binary point register for group 1 (ICC_BPR1_EL1): 0 for full preemption granularity.
pub fn set_binary_point1(value: u8) {
    // SAFETY: writes a GIC CPU interface register owned by the hypervisor.
    unsafe { asm!("msr icc_bpr1_el1, {}", in(reg) value as u64, options(nostack, preserves_flags)) };
}

/// Generate a group-1 SGI (ICC_SGI1R_EL1) with an already-encoded register value.
pub fn send_sgi1(value: u64) {
    super::dsb_ish();
    // SAFETY: raising an SGI only signals another CPU's interrupt controller.
    unsafe { asm!("msr icc_sgi1r_el1, {}", in(reg) value, options(nostack, preserves_flags)) };
    super::isb();
}

/// Read list register `n` (ICH_LR<n>_EL2).
///
/// Inline: read for every list register at every guest entry (`vgic::flush`,
/// `vgic::has_pending`), where an outlined call costs about 33 instructions per exit, which
/// LLVM's inlining heuristics otherwise decide differently from build to build.
pub fn read_lr(n: usize) -> u64 {
    let value: u64;
    macro_rules! rd {
        ($reg:literal) => {
            // SAFETY: reading a list register has no side effects.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) }
        };
    }
    match n {
        0 => rd!("ich_lr0_el2"),
        1 => rd!("ich_lr1_el2"),
        2 => rd!("ich_lr2_el2"),
        3 => rd!("ich_lr3_el2"),
        4 => rd!("ich_lr4_el2"),
        5 => rd!("ich_lr5_el2"),
        6 => rd!("ich_lr6_el2"),
        7 => rd!("ich_lr7_el2"),
        8 => rd!("ich_lr8_el2"),
        9 => rd!("ich_lr9_el2"),
        10 => rd!("ich_lr10_el2"),
        11 => rd!("ich_lr11_el2"),
        12 => rd!("ich_lr12_el2"),
        13 => rd!("ich_lr13_el2"),
        14 => rd!("ich_lr14_el2"),
        15 => rd!("ich_lr15_el2"),
        _ => panic!("list register {n} does not exist"),
    }
    value
}

/// Write list register `n` (ICH_LR<n>_EL2).
pub fn write_lr(n: usize, value: u64) {
    macro_rules! wr {
        ($reg:literal) => {
            // SAFETY: list registers hold virtual interrupt state for the guest on this CPU;
            // writing them cannot affect the hypervisor's memory.
            unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nomem, nostack, preserves_flags)) }
        };
    }
    match n {
        0 => wr!("ich_lr0_el2"),
        1 => wr!("ich_lr1_el2"),
        2 => wr!("ich_lr2_el2"),
        3 => wr!("ich_lr3_el2"),
        4 => wr!("ich_lr4_el2"),
        5 => wr!("ich_lr5_el2"),
        6 => wr!("ich_lr6_el2"),
        7 => wr!("ich_lr7_el2"),
        8 => wr!("ich_lr8_el2"),
        9 => wr!("ich_lr9_el2"),
        10 => wr!("ich_lr10_el2"),
        11 => wr!("ich_lr11_el2"),
        12 => wr!("ich_lr12_el2"),
        13 => wr!("ich_lr13_el2"),
        14 => wr!("ich_lr14_el2"),
        15 => wr!("ich_lr15_el2"),
        _ => panic!("list register {n} does not exist"),
    }
}
