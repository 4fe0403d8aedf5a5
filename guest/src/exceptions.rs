//! Exception vectors (VBAR_EL1), the trap frame, and dispatch to the syscall, interrupt,
//! guarded-access and probe handlers. Anything unexpected is fatal: diagnostic, failed
//! `@result`, power off.

use crate::{arch, gic, guard, probe, report, sched, syscall};
use core::arch::{asm, global_asm};

/// Registers saved on exception entry, on the kernel stack of the interrupted task.
/// The layout is shared with the assembly below.
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub sp_el0: u64,
    pub elr: u64,
    pub spsr: u64,
    /// FP/SIMD registers: the target lets the compiler use them anywhere, so an interrupt
    /// must preserve them for the interrupted task.
    pub q: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

/// Size of [`TrapFrame`] as the assembly uses it.
pub const FRAME_SIZE: usize = 800;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == FRAME_SIZE);

/// Which vector was taken (passed from the assembly stubs).
#[repr(u64)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Vector {
    El1Sync = 0,
    El1Irq = 1,
    El1Fiq = 2,
    El1SError = 3,
    El0Sync = 4,
    El0Irq = 5,
    El0Fiq = 6,
    El0SError = 7,
    // 8: EL1 with SP_EL0, or AArch32 EL0; never used by this kernel, so always fatal.
}

/// ESR_EL1.EC values the kernel handles.
pub mod ec {
    pub const UNKNOWN: u64 = 0x00;
    pub const SVC64: u64 = 0x15;
    pub const DATA_ABORT_SAME_EL: u64 = 0x25;
}

global_asm!(
    r#"
.macro VECTOR kind
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    mov x0, #\kind
    b exception_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global exception_vectors
exception_vectors:
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8

exception_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, sp_el0
    stp x30, x2, [sp, #240]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x2, x3, [sp, #256]
    add x2, sp, #272
    stp q0, q1, [x2, #0]
    stp q2, q3, [x2, #32]
    stp q4, q5, [x2, #64]
    stp q6, q7, [x2, #96]
    stp q8, q9, [x2, #128]
    stp q10, q11, [x2, #160]
    stp q12, q13, [x2, #192]
    stp q14, q15, [x2, #224]
    stp q16, q17, [x2, #256]
    stp q18, q19, [x2, #288]
    stp q20, q21, [x2, #320]
    stp q22, q23, [x2, #352]
    stp q24, q25, [x2, #384]
    stp q26, q27, [x2, #416]
    stp q28, q29, [x2, #448]
    stp q30, q31, [x2, #480]
    mrs x3, fpcr
    mrs x4, fpsr
    add x2, x2, #512
    stp x3, x4, [x2]
    mov x1, x0
    mov x0, sp
    mov x29, #0
    bl {dispatch}

.global exception_return
exception_return:
    add x2, sp, #272
    add x3, x2, #512
    ldp x3, x4, [x3]
    msr fpcr, x3
    msr fpsr, x4
    ldp q0, q1, [x2, #0]
    ldp q2, q3, [x2, #32]
    ldp q4, q5, [x2, #64]
    ldp q6, q7, [x2, #96]
    ldp q8, q9, [x2, #128]
    ldp q10, q11, [x2, #160]
    ldp q12, q13, [x2, #192]
    ldp q14, q15, [x2, #224]
    ldp q16, q17, [x2, #256]
    ldp q18, q19, [x2, #288]
    ldp q20, q21, [x2, #320]
    ldp q22, q23, [x2, #352]
    ldp q24, q25, [x2, #384]
    ldp q26, q27, [x2, #416]
    ldp q28, q29, [x2, #448]
    ldp q30, q31, [x2, #480]
    ldp x2, x3, [sp, #256]
    msr elr_el1, x2
    msr spsr_el1, x3
    ldp x30, x2, [sp, #240]
    msr sp_el0, x2
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    add sp, sp, #{frame}
    eret

// enter_frame(frame): continue at the state in `frame` (x0), which lies at the top of the
// current task's kernel stack; used to start EL0 tasks.
.global enter_frame
enter_frame:
    mov sp, x0
    b exception_return
"#,
    frame = const FRAME_SIZE,
    dispatch = sym exception_dispatch,
);

extern "C" {
    static exception_vectors: u8;
    /// Restores the state saved in the frame at `frame` and returns from the exception.
    pub fn enter_frame(frame: *const TrapFrame) -> !;
}

/// Points VBAR_EL1 at the vector table on this CPU.
pub fn install() {
    let vectors = core::ptr::addr_of!(exception_vectors) as u64;
    // SAFETY: the table is 2 KiB aligned and its handlers are complete; pointing VBAR_EL1 at it
    // only changes where exceptions go.
    unsafe { asm!("msr vbar_el1, {}", "isb", in(reg) vectors, options(nostack)) };
}

extern "C" fn exception_dispatch(frame: &mut TrapFrame, vector: u64) {
    match vector {
        v if v == Vector::El1Sync as u64 => {
            if !guard::catch(frame) && !probe::catch(frame) {
                fatal(frame, "synchronous exception at EL1");
            }
        }
        v if v == Vector::El0Sync as u64 => {
            if arch::esr() >> 26 == ec::SVC64 {
                syscall::dispatch(frame);
            } else {
                fatal(frame, "synchronous exception at EL0");
            }
        }
        v if v == Vector::El1Irq as u64 || v == Vector::El0Irq as u64 => {
            gic::handle_interrupts();
            crate::apf::park_if_pending();
            sched::preempt_if_needed();
        }
        v if v == Vector::El1Fiq as u64 || v == Vector::El0Fiq as u64 => fatal(frame, "FIQ"),
        v if v == Vector::El1SError as u64 || v == Vector::El0SError as u64 => fatal(frame, "SError"),
        _ => fatal(frame, "exception from an unused vector"),
    }
}

/// Prints the exception state and ends the run with a failed result.
fn fatal(frame: &TrapFrame, what: &str) -> ! {
    let esr = arch::esr();
    report::fail(format_args!(
        "{what} on cpu {}: ESR={esr:#x} (EC={:#x}) FAR={:#x} ELR={:#x} SPSR={:#x}",
        arch::cpu_index(),
        esr >> 26,
        arch::far(),
        frame.elr,
        frame.spsr
    ));
}
