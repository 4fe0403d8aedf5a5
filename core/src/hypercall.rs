//! The answers to a guest's `hvc #0` / `smc #0` calls: SMCCC 1.1 discovery (Arm DEN0028),
//! PSCI 1.1 (Arm DEN0022) and the asyncpf vendor-specific hypervisor service.
//!
//! Every call gets an answer: function IDs that are not implemented get NOT_SUPPORTED, bad
//! arguments get the error code the specification names. The VM's state is reached through the
//! [`Machine`] trait, so the whole decision table is tested on the host with a fake machine.

use asyncpf_contract::{hypcall, psci, smccc};

/// A vCPU's power state in the hypervisor. `OnPending` is the hypervisor's own: CPU_ON has
/// accepted the vCPU but its physical CPU has not started it yet. The guest never sees it
/// (see [`psci_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PowerState {
    Off = 0,
    OnPending = 1,
    On = 2,
}

/// What a call may ask of the VM.
pub trait Machine {
    /// The vCPU whose MPIDR affinity is `mpidr` (other bits ignored).
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize>;
    fn power_state(&self, vcpu: usize) -> PowerState;
    /// Whether `[address, address + len)` is guest RAM.
    fn is_guest_ram(&self, address: u64, len: u64) -> bool;
    /// Turn `vcpu` on at `entry` with `context` in x0, if it is off; otherwise its state.
    fn request_power_on(&self, vcpu: usize, entry: u64, context: u64) -> Result<(), PowerState>;
}

/// What the calling vCPU does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// How a call was answered, for the hypervisor's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An implemented function, answered normally (including PSCI "not supported" feature
    /// queries, which are answers, not errors).
    Served,
    /// A function ID the hypervisor does not implement: NOT_SUPPORTED.
    Unknown,
    /// An implemented function with bad arguments: an error code.
    InvalidArguments,
}

/// The answer to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub verdict: Verdict,
    /// Whether the call was to the PSCI (standard service) range.
    pub psci: bool,
}

fn value(x0: i64) -> Outcome {
    Outcome::Return([Some(x0 as u64), None, None, None])
}

fn served(outcome: Outcome) -> Answer {
    Answer { outcome, verdict: Verdict::Served, psci: false }
}

fn unknown() -> Answer {
    Answer { outcome: value(smccc::NOT_SUPPORTED), verdict: Verdict::Unknown, psci: false }
}

fn invalid(code: i64) -> Answer {
    Answer { outcome: value(code), verdict: Verdict::InvalidArguments, psci: false }
}

/// The function ID of a call whose x0 is `x0`: SMCCC passes it in W0, so bits 63:32 of x0 are
/// ignored, for every service alike (PSCI, SDEI, the vendor service), as KVM does.
pub const fn function_id(x0: u64) -> u32 {
    x0 as u32
}

/// Answer a call with function ID `args[0]` and arguments `args[1..4]`. `immediate` is the
/// `hvc`/`smc` immediate: SMCCC uses only `#0`.
pub fn handle(machine: &impl Machine, immediate: u16, args: [u64; 4]) -> Answer {
    // Only `#0` immediates, fast calls and IDs whose reserved bits 23:16 are zero are valid;
    // the hypervisor implements no yielding calls.
    let function = function_id(args[0]);
    if immediate != 0 || !smccc::is_well_formed_fast(function) {
        return unknown();
    }
    match smccc::owner(function) {
        smccc::OWNER_ARCH => arch_call(function, args),
        smccc::OWNER_STANDARD => Answer { psci: true, ..psci_call(machine, function, args) },
        smccc::OWNER_VENDOR_HYP => vendor_call(function),
        _ => unknown(),
    }
}

/// SMCCC architecture calls (DEN0028 section 7).
fn arch_call(function: u32, args: [u64; 4]) -> Answer {
    match function {
        smccc::SMCCC_VERSION => served(value(smccc::VERSION_1_1 as i64)),
        smccc::SMCCC_ARCH_FEATURES => served(value(match args[1] as u32 {
            smccc::SMCCC_VERSION | smccc::SMCCC_ARCH_FEATURES => smccc::SUCCESS,
            _ => smccc::NOT_SUPPORTED,
        })),
        _ => unknown(),
    }
}

/// The asyncpf vendor-specific hypervisor service.
fn vendor_call(function: u32) -> Answer {
    match function {
        hypcall::CALL_UID => {
            let [a, b, c, d] = hypcall::UID;
            served(Outcome::Return([Some(a as u64), Some(b as u64), Some(c as u64), Some(d as u64)]))
        }
        hypcall::REVISION => served(Outcome::Return([
            Some(hypcall::REVISION_MAJOR as u64),
            Some(hypcall::REVISION_MINOR as u64),
            None,
            None,
        ])),
        hypcall::CALL_COUNT => served(value(hypcall::FUNCTION_COUNT as i64)),
        _ => unknown(),
    }
}

/// The PSCI functions the hypervisor implements (what PSCI_FEATURES reports).
pub const PSCI_IMPLEMENTED: [u32; 12] = [
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

fn psci_call(machine: &impl Machine, function: u32, args: [u64; 4]) -> Answer {
    // SMC32/HVC32 calls pass 32-bit arguments; the upper halves are ignored.
    let is_64 = function & smccc::CONV_64 != 0;
    let arg = |i: usize| if is_64 { args[i] } else { args[i] & 0xffff_ffff };
    match function {
        psci::PSCI_VERSION => served(value(psci::VERSION_1_1 as i64)),
        psci::PSCI_FEATURES => {
            let queried = arg(1) as u32;
            // CPU_SUSPEND's feature flags are 0: original power_state format, no OS-initiated
            // mode.
            let implemented = PSCI_IMPLEMENTED.contains(&queried) || queried == smccc::SMCCC_VERSION;
            served(value(if implemented { psci::SUCCESS } else { psci::NOT_SUPPORTED }))
        }
        psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => served(Outcome::Suspend),
        psci::CPU_OFF => served(Outcome::CpuOff),
        psci::CPU_ON_32 | psci::CPU_ON_64 => cpu_on(machine, arg(1), arg(2), arg(3)),
        psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
            // Only affinity level 0 (single cores) exists in this VM.
            if arg(2) != 0 {
                return invalid(psci::INVALID_PARAMETERS);
            }
            match target_vcpu(machine, arg(1)) {
                None => invalid(psci::INVALID_PARAMETERS),
                Some(target) => served(value(match psci_view(machine.power_state(target)) {
                    PowerState::Off => psci::AFFINITY_OFF,
                    _ => psci::AFFINITY_ON,
                })),
            }
        }
        psci::MIGRATE_INFO_TYPE => served(value(psci::MIGRATE_NOT_REQUIRED)),
        psci::SYSTEM_OFF => served(Outcome::SystemOff),
        psci::SYSTEM_RESET => served(Outcome::SystemReset),
        _ => unknown(),
    }
}

/// The vCPU a PSCI `target_cpu` argument names. PSCI requires every bit outside the affinity
/// fields to be zero (DEN0022, "target_cpu"): anything else names no CPU.
fn target_vcpu(machine: &impl Machine, target_cpu: u64) -> Option<usize> {
    if target_cpu & !crate::mpidr::AFFINITY_MASK != 0 {
        return None;
    }
    machine.vcpu_by_mpidr(target_cpu)
}

fn cpu_on(machine: &impl Machine, target_mpidr: u64, entry: u64, context: u64) -> Answer {
    let Some(target) = target_vcpu(machine, target_mpidr) else {
        return invalid(psci::INVALID_PARAMETERS);
    };
    if !entry.is_multiple_of(4) || !machine.is_guest_ram(entry, 4) {
        return invalid(psci::INVALID_ADDRESS);
    }
    match machine.request_power_on(target, entry, context).map_err(psci_view) {
        Ok(()) => served(value(psci::SUCCESS)),
        // Off cannot be refused; whatever the machine says, the vCPU is not off then.
        Err(_) => invalid(psci::ALREADY_ON),
    }
}

/// The power state PSCI reports for a vCPU in `state`, as KVM reports it: a vCPU is on from the
/// moment CPU_ON accepted it (KVM marks the vCPU runnable at once), so a vCPU still on its way
/// up (`OnPending`) is ON for AFFINITY_INFO and ALREADY_ON for a second CPU_ON. ON_PENDING and
/// AFFINITY_INFO's ON_PENDING are never answered: a guest written for KVM, which waits for
/// AFFINITY_INFO = ON or treats ALREADY_ON as success, works unchanged.
pub const fn psci_view(state: PowerState) -> PowerState {
    match state {
        PowerState::Off => PowerState::Off,
        PowerState::OnPending | PowerState::On => PowerState::On,
    }
}

#[cfg(test)]
mod tests;
