//! The guest's `hvc #0` / `smc #0` calls: SMCCC 1.1 discovery (Arm DEN0028), PSCI 1.1
//! (Arm DEN0022) and the asyncpf vendor-specific hypervisor service. Every call gets an answer;
//! function IDs that are not implemented get NOT_SUPPORTED, bad arguments get the error code
//! the specification names.

use asyncpf_contract::{hypcall, psci, smccc};

use crate::stats::STATS;
use crate::vm::{PowerState, Vm};

/// What the vCPU does after the call.
pub enum Outcome {
    /// Return to the guest with these values in x0..x3 (`None` leaves a register unchanged).
    Return([Option<u64>; 4]),
    /// The calling vCPU turned itself off (PSCI CPU_OFF).
    CpuOff,
    /// Wait for an interrupt, then return SUCCESS (PSCI CPU_SUSPEND, implemented as standby).
    Suspend,
    /// Power off the machine (PSCI SYSTEM_OFF).
    SystemOff,
    /// Reset the machine (PSCI SYSTEM_RESET).
    SystemReset,
}

fn ret(x0: i64) -> Outcome {
    Outcome::Return([Some(x0 as u64), None, None, None])
}

/// Answer a call with function ID `x0` and arguments `x1..x3`.
/// `immediate` is the `hvc`/`smc` immediate: SMCCC uses only #0.
pub fn handle(vm: &Vm, immediate: u16, args: [u64; 4]) -> Outcome {
    STATS.hvc_calls.inc();
    // SMCCC passes the function ID in w0. Only `#0` immediates, fast calls and IDs whose
    // reserved bits 23:16 are zero are valid; the hypervisor implements no yielding calls.
    let function = args[0] as u32;
    if immediate != 0 || !smccc::is_well_formed_fast(function) {
        return unknown();
    }
    match smccc::owner(function) {
        smccc::OWNER_ARCH => arch_call(function, args),
        smccc::OWNER_STANDARD => {
            STATS.psci_calls.inc();
            psci_call(vm, function, args)
        }
        smccc::OWNER_VENDOR_HYP => vendor_call(function),
        _ => unknown(),
    }
}

fn unknown() -> Outcome {
    STATS.unknown_calls.inc();
    ret(smccc::NOT_SUPPORTED)
}

fn invalid(code: i64) -> Outcome {
    STATS.invalid_arguments.inc();
    ret(code)
}

/// SMCCC architecture calls (DEN0028 section 7).
fn arch_call(function: u32, args: [u64; 4]) -> Outcome {
    match function {
        smccc::SMCCC_VERSION => ret(smccc::VERSION_1_1 as i64),
        smccc::SMCCC_ARCH_FEATURES => match args[1] as u32 {
            smccc::SMCCC_VERSION | smccc::SMCCC_ARCH_FEATURES => ret(smccc::SUCCESS),
            _ => ret(smccc::NOT_SUPPORTED),
        },
        _ => unknown(),
    }
}

/// The asyncpf vendor-specific hypervisor service.
fn vendor_call(function: u32) -> Outcome {
    match function {
        hypcall::CALL_UID => {
            let [a, b, c, d] = hypcall::UID;
            Outcome::Return([Some(a as u64), Some(b as u64), Some(c as u64), Some(d as u64)])
        }
        hypcall::REVISION => Outcome::Return([
            Some(hypcall::REVISION_MAJOR as u64),
            Some(hypcall::REVISION_MINOR as u64),
            None,
            None,
        ]),
        hypcall::CALL_COUNT => ret(hypcall::FUNCTION_COUNT as i64),
        _ => unknown(),
    }
}

/// PSCI functions, and whether PSCI_FEATURES reports them.
const PSCI_IMPLEMENTED: [u32; 12] = [
    psci::PSCI_VERSION,
    psci::CPU_SUSPEND_32,
    psci::CPU_SUSPEND_64,
    psci::CPU_OFF,
    psci::CPU_ON_32,
    psci::CPU_ON_64,
    psci::AFFINITY_INFO_32,
    psci::AFFINITY_INFO_64,
    psci::MIGRATE_INFO_TYPE,
    psci::SYSTEM_OFF,
    psci::SYSTEM_RESET,
    psci::PSCI_FEATURES,
];

fn psci_call(vm: &Vm, function: u32, args: [u64; 4]) -> Outcome {
    // SMC32/HVC32 calls pass 32-bit arguments; the upper halves are ignored.
    let is_64 = function & smccc::CONV_64 != 0;
    let arg = |i: usize| if is_64 { args[i] } else { args[i] & 0xffff_ffff };
    match function {
        psci::PSCI_VERSION => ret(psci::VERSION_1_1 as i64),
        psci::PSCI_FEATURES => {
            if PSCI_IMPLEMENTED.contains(&(arg(1) as u32)) || arg(1) as u32 == smccc::SMCCC_VERSION {
                // CPU_SUSPEND's feature flags: original power_state format, no OS-initiated mode.
                ret(psci::SUCCESS)
            } else {
                ret(psci::NOT_SUPPORTED)
            }
        }
        psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => Outcome::Suspend,
        psci::CPU_OFF => Outcome::CpuOff,
        psci::CPU_ON_32 | psci::CPU_ON_64 => cpu_on(vm, arg(1), arg(2), arg(3)),
        psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
            if arg(2) != 0 {
                // Only affinity level 0 (single cores) exists in this VM.
                return invalid(psci::INVALID_PARAMETERS);
            }
            match vm.vcpu_by_mpidr(arg(1)) {
                None => invalid(psci::INVALID_PARAMETERS),
                Some(target) => ret(match vm.vcpus[target].power() {
                    PowerState::On => psci::AFFINITY_ON,
                    PowerState::Off => psci::AFFINITY_OFF,
                    PowerState::OnPending => psci::AFFINITY_ON_PENDING,
                }),
            }
        }
        psci::MIGRATE_INFO_TYPE => ret(psci::MIGRATE_NOT_REQUIRED),
        psci::SYSTEM_OFF => Outcome::SystemOff,
        psci::SYSTEM_RESET => Outcome::SystemReset,
        _ => unknown(),
    }
}

fn cpu_on(vm: &Vm, target_mpidr: u64, entry: u64, context: u64) -> Outcome {
    let Some(target) = vm.vcpu_by_mpidr(target_mpidr) else {
        return invalid(psci::INVALID_PARAMETERS);
    };
    if !vm.is_guest_ram(entry, 4) || entry % 4 != 0 {
        return invalid(psci::INVALID_ADDRESS);
    }
    match vm.request_power_on(target, entry, context) {
        Ok(()) => ret(psci::SUCCESS),
        Err(PowerState::On) => invalid(psci::ALREADY_ON),
        Err(_) => invalid(psci::ON_PENDING),
    }
}
