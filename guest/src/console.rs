//! The PL011 console named by `/chosen/stdout-path`: polled output only.

use crate::mmio;
use crate::sync::SpinLock;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Data register.
const UARTDR: usize = 0x00;
/// Flag register; bit 5 = transmit FIFO full.
const UARTFR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// MMIO base of the PL011; 0 until the device tree has been read (output is dropped).
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Serialises whole `print!` calls so that lines from different CPUs do not interleave.
static LOCK: SpinLock<()> = SpinLock::new(());

/// Uses the PL011 at `base` (already mapped as device memory) from now on.
pub fn init(base: usize) {
    BASE.store(base, Ordering::Release);
}

fn put_byte(base: usize, byte: u8) {
    // SAFETY: `base` is the PL011 from the device tree, mapped as device memory by `mm`;
    // FR and DR are aligned 32-bit registers.
    unsafe {
        while mmio::read32(base + UARTFR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        mmio::write32(base + UARTDR, u32::from(byte));
    }
}

/// Unlocked writer; use through [`print!`] or, in the panic path, directly.
pub struct RawConsole;

impl Write for RawConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let base = BASE.load(Ordering::Acquire);
        if base != 0 {
            s.bytes().for_each(|b| put_byte(base, b));
        }
        Ok(())
    }
}

/// Prints under the console lock.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = RawConsole.write_fmt(args);
}

/// Runs `f` with the console to itself (for output that must stay on one line).
pub fn with_lock(f: impl FnOnce(&mut RawConsole)) {
    let _guard = LOCK.lock();
    f(&mut RawConsole);
}

/// Prints raw bytes (from the console-write syscall) under the console lock.
pub fn write_bytes(bytes: &[u8]) {
    let _guard = LOCK.lock();
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        bytes.iter().for_each(|&b| put_byte(base, b));
    }
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
