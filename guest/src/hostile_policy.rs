//! Which SMCCC calls the `hostile` scenario may make, and how it draws them.
//!
//! The scenario fuzzes the hypervisor's `hvc`/`smc` handling with pseudo-random function IDs
//! and arguments, but must not change the machine's power state or plant state that would
//! later call back into the guest at a random address. The rules here are pure so they can be
//! checked on the host.

use crate::rng::SplitMix64;
use asyncpf_contract::smccc;

/// PSCI function numbers that change a power state: CPU_SUSPEND, CPU_OFF, CPU_ON, SYSTEM_OFF,
/// SYSTEM_RESET, CPU_FREEZE, CPU_DEFAULT_SUSPEND, NODE_HW_STATE, SYSTEM_SUSPEND,
/// SYSTEM_RESET2.
const PSCI_POWER_FUNCTIONS: [u32; 10] = [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x12];

/// SDEI (also standard-service owner) function numbers that only query: VERSION, EVENT_STATUS,
/// EVENT_GET_INFO, FEATURES. The others register handlers, unmask or signal events, which
/// with random arguments could make the hypervisor enter the guest at a random address later.
const SDEI_QUERIES: [u32; 4] = [0x20, 0x28, 0x29, 0x30];
const SDEI_FIRST: u32 = 0x20;
const SDEI_LAST: u32 = 0x3F;

/// True if the call may be made with arbitrary arguments. Only `w0` selects the function
/// (SMCCC ignores x0[63:32]); reserved bits 23:16 are ignored here on purpose, so a lax
/// implementation that masks them cannot turn a "harmless" ID into a power-off.
pub fn is_allowed(function_id: u32) -> bool {
    if smccc::owner(function_id) != smccc::OWNER_STANDARD {
        return true;
    }
    let number = smccc::function_number(function_id);
    if PSCI_POWER_FUNCTIONS.contains(&number) {
        return false;
    }
    if (SDEI_FIRST..=SDEI_LAST).contains(&number) {
        return SDEI_QUERIES.contains(&number);
    }
    true
}

/// Draws a function ID: a mix of fully random values and IDs aimed at the architecture,
/// standard (PSCI/SDEI/TRNG) and vendor-hypervisor services, in both calling conventions.
/// Returns the full 64-bit x0 (upper half sometimes random) of an allowed call.
pub fn draw_function_id(rng: &mut SplitMix64) -> u64 {
    loop {
        let conv = if rng.below(2) == 0 { 0 } else { smccc::CONV_64 };
        let fast = smccc::FAST_CALL;
        let w0: u32 = match rng.below(8) {
            0 | 1 => rng.next_u64() as u32,
            2 | 3 => fast | conv | (smccc::OWNER_STANDARD << 24) | rng.below(0x60) as u32,
            4 => fast | conv | (smccc::OWNER_VENDOR_HYP << 24) | rng.below(0x20) as u32,
            5 => fast | (smccc::OWNER_VENDOR_HYP << 24) | (0xFF00 + rng.below(4) as u32),
            6 => fast | (smccc::OWNER_ARCH << 24) | [0, 1, 2, 0x3FFF, 0x7FFF, 0x8000][rng.below(6) as usize],
            _ => fast | conv | ((rng.below(64) as u32) << 24) | rng.below(0x10000) as u32,
        };
        if !is_allowed(w0) {
            continue;
        }
        let high = if rng.below(4) == 0 { rng.next_u64() << 32 } else { 0 };
        return high | u64::from(w0);
    }
}

/// Draws an argument register value: often small (0..16, which is where validation bugs
/// hide), otherwise random; never inside `forbidden` (the guest's own RAM), so that no call
/// can make the hypervisor write over the running guest.
pub fn draw_argument(rng: &mut SplitMix64, forbidden: &[(u64, u64)]) -> u64 {
    loop {
        let v = match rng.below(4) {
            0 => rng.below(16),
            1 => rng.next_u64() & 0xFFFF_FFFF,
            _ => rng.next_u64(),
        };
        if !forbidden.iter().any(|&(base, size)| v >= base && v - base < size) {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncpf_contract::{hypcall, psci};

    #[test]
    fn power_functions_are_never_allowed() {
        for id in [
            psci::CPU_SUSPEND_32,
            psci::CPU_SUSPEND_64,
            psci::CPU_OFF,
            psci::CPU_ON_32,
            psci::CPU_ON_64,
            psci::SYSTEM_OFF,
            psci::SYSTEM_RESET,
            0x8400_0012,
            0xC400_0012,
            0x8400_000E,
            0x0400_0008,
            0x84FF_0008,
        ] {
            assert!(!is_allowed(id), "{id:#x}");
        }
        for id in [psci::PSCI_VERSION, psci::AFFINITY_INFO_64, psci::PSCI_FEATURES, hypcall::CALL_UID, 0xC400_0020] {
            assert!(is_allowed(id), "{id:#x}");
        }
        assert!(!is_allowed(0xC400_0021), "SDEI_EVENT_REGISTER");
    }

    #[test]
    fn drawn_calls_are_allowed_and_arguments_avoid_ram() {
        let mut rng = SplitMix64::new(3);
        let ram = [(0x4000_0000u64, 0x1000_0000u64)];
        for _ in 0..100_000 {
            assert!(is_allowed(draw_function_id(&mut rng) as u32));
            let a = draw_argument(&mut rng, &ram);
            assert!(!(0x4000_0000..0x5000_0000).contains(&a));
        }
    }
}
