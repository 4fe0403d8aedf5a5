//! The hypervisor's console: the physical PL011 UART, polled, one line at a time under a lock
//! so that lines from different CPUs and from the guest never interleave. Only the hypervisor
//! writes it: the guest's console is the emulated PL011 (`vuart`), whose lines arrive here framed
//! with the `[guest] ` prefix.

use crate::sync::Mutex;
use asyncpf_core::lockorder::Level;
use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicUsize, Ordering};

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
        // SAFETY: `base` is the PL011 from the platform's device tree (before it is read, the
        // `virt` machine's fixed UART), identity-mapped as device memory by the EL2 tables (or
        // accessed with the MMU off, which is Device-nGnRnE); FR and DR are 32-bit registers at
        // these offsets, and writing DR only transmits a byte.
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

/// The UART of QEMU's `virt` machine, used only until the device tree has been read (a failure
/// to read it is itself reported here).
const VIRT_UART_BASE: usize = 0x0900_0000;

static CONSOLE: Mutex<Pl011> = Mutex::new(Level::Console, Pl011 { base: VIRT_UART_BASE });
/// The UART's base for the emergency path, which cannot rely on the lock.
static BASE: AtomicUsize = AtomicUsize::new(VIRT_UART_BASE);

/// Start using the PL011 at `base` (from the device tree).
pub fn init(base: usize) {
    CONSOLE.lock().base = base;
    BASE.store(base, Ordering::Relaxed);
}

fn write_line(uart: &mut Pl011, prefix: &str, args: fmt::Arguments) {
    let _ = uart.write_str(prefix);
    let _ = uart.write_fmt(args);
    let _ = uart.write_str("\n");
}

/// Print one line with the given prefix. Lines are atomic with respect to each other.
pub fn print_line(prefix: &str, args: fmt::Arguments) {
    write_line(&mut CONSOLE.lock(), prefix, args);
}

/// Print a line without waiting for the console lock: for the panic path only, where the lock
/// may be held by the code that failed. After a bounded number of tries the line is written
/// without the lock (it may then interleave with another CPU's line).
pub fn print_line_emergency(prefix: &str, args: fmt::Arguments) {
    for _ in 0..1_000_000 {
        if let Some(mut uart) = CONSOLE.try_lock_unordered() {
            write_line(&mut uart, prefix, args);
            return;
        }
    }
    write_line(&mut Pl011 { base: BASE.load(Ordering::Relaxed) }, prefix, args);
}

/// `println!` for the hypervisor's own lines, prefixed with `[hyp] `.
#[macro_export]
macro_rules! hyp_println {
    ($($arg:tt)*) => {
        $crate::console::print_line(asyncpf_contract::runner::HYP_LINE_PREFIX, format_args!($($arg)*))
    };
}
