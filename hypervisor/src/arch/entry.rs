//! The EL2 exception vectors, and the switch between the hypervisor and its guest.
//!
//! `enter_guest` saves the hypervisor's callee-saved registers on its own stack, loads the
//! guest's general-purpose registers, PC and PSTATE from a [`GuestRegs`], and `eret`s. Any
//! exception from the guest lands in a lower-EL vector, which stores the guest registers back
//! into the same `GuestRegs`, restores the hypervisor's registers and returns from
//! `enter_guest` with an [`ExitKind`]. EL1 system registers and the FP/SIMD registers are never
//! touched: each vCPU is pinned to its own physical CPU and the hypervisor is built for a
//! soft-float target, so they stay live in hardware.
//!
//! Exceptions taken from EL2 itself are hypervisor bugs: they go to `hyp_exception`, which
//! prints a diagnostic and ends the machine.

use core::arch::global_asm;

/// The guest's general-purpose registers, program counter and PSTATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub x: [u64; 31],
    pub pc: u64,
    pub pstate: u64,
}

/// Why `enter_guest` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ExitKind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
}

impl ExitKind {
    fn from_raw(raw: u64) -> Self {
        match raw {
            0 => Self::Sync,
            1 => Self::Irq,
            2 => Self::Fiq,
            _ => Self::SError,
        }
    }
}

/// Byte offset of the saved `GuestRegs` pointer in the hypervisor frame `enter_guest` pushes.
const FRAME_CTX: usize = 96;
/// Size of that frame.
const FRAME_BYTES: usize = 112;

global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 2048",
    ".global hyp_vectors",
    "hyp_vectors:",
    // Current EL with SP_EL0, then with SP_ELx: never expected.
    ".balign 0x80", "mov x0, #0", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #1", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #2", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #3", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #4", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #5", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #6", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #7", "b {hyp_fault}",
    // Lower EL, AArch64: the guest exits.
    ".balign 0x80", "stp x0, x1, [sp, #-16]!", "mov x1, #0", "b guest_exit",
    ".balign 0x80", "stp x0, x1, [sp, #-16]!", "mov x1, #1", "b guest_exit",
    ".balign 0x80", "stp x0, x1, [sp, #-16]!", "mov x1, #2", "b guest_exit",
    ".balign 0x80", "stp x0, x1, [sp, #-16]!", "mov x1, #3", "b guest_exit",
    // Lower EL, AArch32: the guest cannot run AArch32 (HCR_EL2.RW = 1).
    ".balign 0x80", "mov x0, #12", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #13", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #14", "b {hyp_fault}",
    ".balign 0x80", "mov x0, #15", "b {hyp_fault}",
    "",
    ".section .text, \"ax\"",
    ".global enter_guest",
    "enter_guest:",
    "    sub sp, sp, #{frame}",
    "    stp x19, x20, [sp, #0]",
    "    stp x21, x22, [sp, #16]",
    "    stp x23, x24, [sp, #32]",
    "    stp x25, x26, [sp, #48]",
    "    stp x27, x28, [sp, #64]",
    "    stp x29, x30, [sp, #80]",
    "    str x0, [sp, #{ctx}]",
    "    ldp x1, x2, [x0, #248]",
    "    msr elr_el2, x1",
    "    msr spsr_el2, x2",
    "    ldp x2, x3, [x0, #16]",
    "    ldp x4, x5, [x0, #32]",
    "    ldp x6, x7, [x0, #48]",
    "    ldp x8, x9, [x0, #64]",
    "    ldp x10, x11, [x0, #80]",
    "    ldp x12, x13, [x0, #96]",
    "    ldp x14, x15, [x0, #112]",
    "    ldp x16, x17, [x0, #128]",
    "    ldp x18, x19, [x0, #144]",
    "    ldp x20, x21, [x0, #160]",
    "    ldp x22, x23, [x0, #176]",
    "    ldp x24, x25, [x0, #192]",
    "    ldp x26, x27, [x0, #208]",
    "    ldp x28, x29, [x0, #224]",
    "    ldr x30, [x0, #240]",
    "    ldp x0, x1, [x0, #0]",
    "    eret",
    "",
    // x1 = exit kind; the guest's x0 and x1 are on top of the stack, above them the frame.
    "guest_exit:",
    "    ldr x0, [sp, #16 + {ctx}]",
    "    stp x2, x3, [x0, #16]",
    "    stp x4, x5, [x0, #32]",
    "    stp x6, x7, [x0, #48]",
    "    stp x8, x9, [x0, #64]",
    "    stp x10, x11, [x0, #80]",
    "    stp x12, x13, [x0, #96]",
    "    stp x14, x15, [x0, #112]",
    "    stp x16, x17, [x0, #128]",
    "    stp x18, x19, [x0, #144]",
    "    stp x20, x21, [x0, #160]",
    "    stp x22, x23, [x0, #176]",
    "    stp x24, x25, [x0, #192]",
    "    stp x26, x27, [x0, #208]",
    "    stp x28, x29, [x0, #224]",
    "    str x30, [x0, #240]",
    "    ldp x2, x3, [sp], #16",
    "    stp x2, x3, [x0, #0]",
    "    mrs x2, elr_el2",
    "    mrs x3, spsr_el2",
    "    stp x2, x3, [x0, #248]",
    "    mov x0, x1",
    "    ldp x19, x20, [sp, #0]",
    "    ldp x21, x22, [sp, #16]",
    "    ldp x23, x24, [sp, #32]",
    "    ldp x25, x26, [sp, #48]",
    "    ldp x27, x28, [sp, #64]",
    "    ldp x29, x30, [sp, #80]",
    "    add sp, sp, #{frame}",
    "    ret",
    frame = const FRAME_BYTES,
    ctx = const FRAME_CTX,
    hyp_fault = sym crate::panic::hyp_exception,
);

unsafe extern "C" {
    /// The vector table (2 KiB aligned), for VBAR_EL2.
    pub static hyp_vectors: u8;
    fn enter_guest(regs: *mut GuestRegs) -> u64;
}

/// Run the guest described by `regs` until its next exception to EL2.
///
/// The caller must have set up stage 2, the trap configuration and VBAR_EL2 on this CPU.
pub fn run_guest(regs: &mut GuestRegs) -> ExitKind {
    const _: () = assert!(core::mem::size_of::<GuestRegs>() == 264);
    // SAFETY: `enter_guest` saves and restores every callee-saved register and the stack
    // pointer; the guest runs at EL1 behind stage-2 translation, which maps only guest memory,
    // so it cannot touch hypervisor memory; `regs` is exclusively borrowed for the duration.
    ExitKind::from_raw(unsafe { enter_guest(regs) })
}
