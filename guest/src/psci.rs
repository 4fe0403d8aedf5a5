//! PSCI calls through the conduit the device tree's `/psci` node names.

use crate::sync::BootOnce;
use asyncpf_contract::psci;
use core::arch::asm;

/// How PSCI (and other SMCCC services) are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

static CONDUIT: BootOnce<Conduit> = BootOnce::new();

/// Records the conduit from the device tree.
pub fn init(conduit: Conduit) {
    CONDUIT.set(conduit);
}

/// Makes an SMCCC fast call with up to three arguments and returns x0.
///
/// # Safety
/// The call must be one whose effects the caller has accounted for (e.g. CPU_ON with an
/// entry point that is ready to run).
pub unsafe fn call(conduit: Conduit, function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let mut x0 = u64::from(function);
    // SAFETY: an SMCCC 1.1 call preserves x18 and up; x0-x17 are declared clobbered. The effect
    // of the function is the caller's responsibility.
    unsafe {
        match conduit {
            Conduit::Hvc => asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            Conduit::Smc => asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
        }
    }
    x0 as i64
}

/// Makes an SMCCC fast call with up to five arguments (x1..x5) and returns x0..x3.
///
/// # Safety
/// As [`call`].
pub unsafe fn call_wide(conduit: Conduit, function: u32, args: [u64; 5]) -> [u64; 4] {
    let [a1, a2, a3, a4, a5] = args;
    let (mut x0, mut x1, mut x2, mut x3) = (u64::from(function), a1, a2, a3);
    // SAFETY: as in `call`: SMCCC 1.1 preserves x18 and up, x0-x17 are declared clobbered.
    unsafe {
        match conduit {
            Conduit::Hvc => asm!("hvc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                inout("x4") a4 => _, inout("x5") a5 => _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            Conduit::Smc => asm!("smc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                inout("x4") a4 => _, inout("x5") a5 => _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
        }
    }
    [x0, x1, x2, x3]
}

fn conduit() -> Conduit {
    *CONDUIT.get().expect("PSCI conduit read from the device tree at boot")
}

/// The conduit, once the device tree has been read (the panic path may run before that).
pub fn conduit_if_known() -> Option<Conduit> {
    CONDUIT.get().copied()
}

/// PSCI_VERSION as (major, minor).
pub fn version() -> (u16, u16) {
    // SAFETY: PSCI_VERSION is a read-only query.
    let v = unsafe { call(conduit(), psci::PSCI_VERSION, 0, 0, 0) } as u32;
    ((v >> 16) as u16, v as u16)
}

/// Starts the CPU with affinity `target` at physical address `entry`, passing `context` in x0.
///
/// # Safety
/// `entry` must be code that can run with the MMU off on a fresh CPU, and `context` must be
/// what it expects.
pub unsafe fn cpu_on(target: u64, entry: usize, context: u64) -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { call(conduit(), psci::CPU_ON_64, target, entry as u64, context) }
}

/// Turns the calling CPU off (CPU_OFF). Returns only if PSCI refuses, with its answer.
///
/// # Safety
/// Nothing may be live on this CPU that another CPU still needs: its tasks are elsewhere, and
/// its stack and registers are abandoned (a later CPU_ON starts it afresh at an entry point).
pub unsafe fn cpu_off() -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { call(conduit(), psci::CPU_OFF, 0, 0, 0) }
}

/// AFFINITY_INFO for the CPU with affinity `target` at `lowest_level` (0: that one CPU):
/// 0 on, 1 off, 2 on pending, or a negative error.
pub fn affinity_info(target: u64, lowest_level: u64) -> i64 {
    // SAFETY: AFFINITY_INFO is a read-only query.
    unsafe { call(conduit(), psci::AFFINITY_INFO_64, target, lowest_level, 0) }
}

/// Powers the machine off; never returns.
pub fn system_off() -> ! {
    if let Some(conduit) = conduit_if_known() {
        // SAFETY: SYSTEM_OFF ends the machine, which is what the caller asked for.
        unsafe { call(conduit, psci::SYSTEM_OFF, 0, 0, 0) };
    }
    loop {
        crate::arch::wait_for_interrupt();
    }
}
