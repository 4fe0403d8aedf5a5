//! The EL0 system call interface: `svc #0` with the number in x8, arguments in x0..x1 and
//! the result in x0.

use crate::exceptions::TrapFrame;
use crate::{console, mm, sched, timer};

/// Give up the CPU; returns 0.
pub const SYS_YIELD: u64 = 0;
/// Sleep for x0 nanoseconds; returns 0.
pub const SYS_SLEEP_NS: u64 = 1;
/// End the task; does not return.
pub const SYS_EXIT: u64 = 2;
/// Write x1 bytes at x0 to the console; returns the count, or `EFAULT` for a bad buffer.
pub const SYS_WRITE: u64 = 3;
/// Monotonic time in nanoseconds.
pub const SYS_TIME_NS: u64 = 4;

/// Returned for a buffer EL0 may not read.
pub const EFAULT: u64 = -14i64 as u64;
/// Returned for an unknown call number.
pub const ENOSYS: u64 = -38i64 as u64;

/// Handles an `svc` from EL0 (IRQs masked, on the task's kernel stack).
pub fn dispatch(frame: &mut TrapFrame) {
    let (a0, a1) = (frame.x[0], frame.x[1]);
    frame.x[0] = match frame.x[8] {
        SYS_YIELD => {
            sched::schedule(sched::Reason::Yield);
            0
        }
        SYS_SLEEP_NS => {
            sched::sleep_ns(a0);
            0
        }
        SYS_EXIT => sched::exit_current(),
        SYS_WRITE => {
            if mm::user_readable(a0, a1) {
                // SAFETY: `user_readable` checked that the whole range lies in memory EL0 may
                // read, which is mapped for the kernel too and never unmapped.
                console::write_bytes(unsafe { core::slice::from_raw_parts(a0 as *const u8, a1 as usize) });
                a1
            } else {
                EFAULT
            }
        }
        SYS_TIME_NS => timer::now_ns(),
        _ => ENOSYS,
    };
}

/// The calls as EL0 code makes them. Everything here runs at EL0.
pub mod user {
    use core::arch::asm;

    #[inline(always)]
    fn syscall(number: u64, a0: u64, a1: u64) -> u64 {
        let ret;
        // SAFETY: `svc` enters the kernel, which preserves every register except x0.
        unsafe { asm!("svc #0", inlateout("x0") a0 => ret, in("x1") a1, in("x8") number, options(nostack)) };
        ret
    }

    /// Gives up the CPU.
    #[inline(always)]
    pub fn yield_now() {
        syscall(super::SYS_YIELD, 0, 0);
    }

    /// Sleeps for at least `ns` nanoseconds.
    #[inline(always)]
    pub fn sleep_ns(ns: u64) {
        syscall(super::SYS_SLEEP_NS, ns, 0);
    }

    /// Ends the task.
    #[inline(always)]
    pub fn exit() -> ! {
        syscall(super::SYS_EXIT, 0, 0);
        // The kernel never returns from exit; trap if it ever did.
        // SAFETY: `udf` raises an exception and has no other effect.
        unsafe { asm!("udf #0", options(noreturn)) }
    }

    /// Writes `text` to the console.
    #[inline(always)]
    pub fn write(text: &str) -> u64 {
        syscall(super::SYS_WRITE, text.as_ptr() as u64, text.len() as u64)
    }

    /// Monotonic nanoseconds.
    #[inline(always)]
    pub fn time_ns() -> u64 {
        syscall(super::SYS_TIME_NS, 0, 0)
    }
}
