//! The GICv3 CPU interface registers that `aarch64-cpu` does not provide, as used at EL2 for
//! the *physical* interface (with HCR_EL2.IMO set, the same encodings at EL1 reach the guest's
//! virtual interface instead; at EL2 they reach the physical one), and numbered access to the
//! list registers, which it does provide (ICH_LR<n>_EL2, one type each).

use core::arch::asm;

use aarch64_cpu::registers::{
    Readable, Writeable, ICH_LR0_EL2, ICH_LR10_EL2, ICH_LR11_EL2, ICH_LR12_EL2, ICH_LR13_EL2, ICH_LR14_EL2,
    ICH_LR15_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2, ICH_LR5_EL2, ICH_LR6_EL2, ICH_LR7_EL2,
    ICH_LR8_EL2, ICH_LR9_EL2,
};

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

/// The list registers ICH_LR0_EL2..ICH_LR15_EL2, as `aarch64-cpu` defines them: one register
/// type each, so [`read_lr`] and [`write_lr`] pick one by number.
macro_rules! list_register_accessors {
    ($($n:literal => $register:ident),+ $(,)?) => {
        /// Read list register `n` (ICH_LR<n>_EL2).
        ///
        /// Inline: read for every list register at every guest entry (`vgic::flush`,
        /// `vgic::has_pending`), where an outlined call costs about 33 instructions per exit,
        /// which LLVM's inlining heuristics otherwise decide differently from build to build.
        #[inline(always)]
        pub fn read_lr(n: usize) -> u64 {
            match n {
                $($n => $register.get(),)+
                _ => panic!("list register {n} does not exist"),
            }
        }

        /// Write list register `n` (ICH_LR<n>_EL2). List registers hold virtual interrupt
        /// state for the guest on this CPU; writing them cannot affect the hypervisor's memory.
        pub fn write_lr(n: usize, value: u64) {
            match n {
                $($n => $register.set(value),)+
                _ => panic!("list register {n} does not exist"),
            }
        }
    };
}

list_register_accessors!(
    0 => ICH_LR0_EL2,
    1 => ICH_LR1_EL2,
    2 => ICH_LR2_EL2,
    3 => ICH_LR3_EL2,
    4 => ICH_LR4_EL2,
    5 => ICH_LR5_EL2,
    6 => ICH_LR6_EL2,
    7 => ICH_LR7_EL2,
    8 => ICH_LR8_EL2,
    9 => ICH_LR9_EL2,
    10 => ICH_LR10_EL2,
    11 => ICH_LR11_EL2,
    12 => ICH_LR12_EL2,
    13 => ICH_LR13_EL2,
    14 => ICH_LR14_EL2,
    15 => ICH_LR15_EL2,
);
