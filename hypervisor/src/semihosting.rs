//! Arm semihosting (QEMU `-semihosting`): the hypervisor's exit status channel to the runner,
//! and a console of last resort before the UART is known.

use core::arch::asm;
use core::fmt::{self, Write};

const SYS_WRITE0: u64 = 0x04;
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// ADP_Stopped_ApplicationExit: the reason code for a normal application exit.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn call(operation: u64, parameter: u64) -> u64 {
    let result: u64;
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting trap; QEMU reads only the parameter
    // block that `parameter` points to, which the caller keeps alive for the call.
    unsafe {
        asm!("hlt #0xf000", inlateout("x0") operation => result, in("x1") parameter,
             options(nostack, preserves_flags))
    };
    result
}

/// End the whole machine with `code` as QEMU's exit status.
pub fn exit(code: u32) -> ! {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    call(SYS_EXIT_EXTENDED, block.as_ptr() as u64);
    // Without semihosting QEMU ignores the call: power off through PSCI instead.
    crate::arch::smc_call(asyncpf_contract::psci::SYSTEM_OFF, 0, 0, 0);
    loop {
        crate::arch::wait_for_interrupt();
    }
}

/// A line on the semihosting console (QEMU's stderr), at most 255 bytes.
pub fn write_line(prefix: &str, args: fmt::Arguments) {
    struct Buf {
        bytes: [u8; 256],
        len: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                if self.len < self.bytes.len() - 2 {
                    self.bytes[self.len] = b;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }
    let mut buf = Buf { bytes: [0; 256], len: 0 };
    let _ = buf.write_str(prefix);
    let _ = buf.write_fmt(args);
    let _ = buf.write_str("\n");
    buf.bytes[buf.len] = 0;
    call(SYS_WRITE0, buf.bytes.as_ptr() as u64);
}
