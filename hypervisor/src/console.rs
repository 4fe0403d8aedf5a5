//! The hypervisor's console: the physical PL011 UART, polled, one line at a time under a lock
//! so that lines from different CPUs and from the guest never interleave.

use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};
use spin::Mutex;

/// PL011 data register offset.
const UART_DR: usize = 0x00;
/// PL011 flag register offset and its "transmit FIFO full" bit.
const UART_FR: usize = 0x18;
const UART_FR_TXFF: u32 = 1 << 5;

/// A polled PL011 transmitter.
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    fn put_byte(&mut self, byte: u8) {
        // SAFETY: `base` is the PL011 from the platform's device tree, identity-mapped as
        // device memory; FR and DR are 32-bit registers at these offsets.
        unsafe {
            while read_volatile((self.base + UART_FR) as *const u32) & UART_FR_TXFF != 0 {
                crate::stats::STATS.console_busy_polls.inc();
            }
            write_volatile((self.base + UART_DR) as *mut u32, byte as u32);
        }
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.put_byte(b'\r');
            }
            self.put_byte(byte);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Pl011>> = Mutex::new(None);

/// Start using the PL011 at `base` (from the device tree).
pub fn init(base: usize) {
    *CONSOLE.lock() = Some(Pl011 { base });
}

/// Print one line with the given prefix. Lines are atomic with respect to each other.
pub fn print_line(prefix: &str, args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    if let Some(uart) = console.as_mut() {
        let _ = uart.write_str(prefix);
        let _ = uart.write_fmt(args);
        let _ = uart.write_str("\n");
    } else {
        drop(console);
        crate::semihosting::write_line(prefix, args);
    }
}

/// Print a line without taking the console lock: for the panic path only, where the lock may
/// be held by the code that failed.
pub fn print_line_emergency(prefix: &str, args: fmt::Arguments) {
    // Try the lock a bounded number of times, then fall back to semihosting, which needs none.
    for _ in 0..1_000_000 {
        if let Some(mut console) = CONSOLE.try_lock() {
            if let Some(uart) = console.as_mut() {
                let _ = uart.write_str(prefix);
                let _ = uart.write_fmt(args);
                let _ = uart.write_str("\n");
                return;
            }
            break;
        }
    }
    crate::semihosting::write_line(prefix, args);
}

/// `println!` for the hypervisor's own lines, prefixed with `[hyp] `.
#[macro_export]
macro_rules! hyp_println {
    ($($arg:tt)*) => {
        $crate::console::print_line(asyncpf_contract::runner::HYP_LINE_PREFIX, format_args!($($arg)*))
    };
}
