use super::*;
use core::cell::RefCell;
use proptest::prelude::*;
use std::vec::Vec;

const RAM: core::ops::Range<u64> = 0x4000_0000..0x4800_0000;

/// Two vCPUs (MPIDR 0 and 1); records every power-on request.
struct FakeMachine {
    power: RefCell<[PowerState; 2]>,
    power_ons: RefCell<Vec<(usize, u64, u64)>>,
}

impl FakeMachine {
    fn new() -> Self {
        Self { power: RefCell::new([PowerState::On, PowerState::Off]), power_ons: RefCell::new(Vec::new()) }
    }
}

impl Machine for FakeMachine {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        match mpidr & 0xff_00ff_ffff {
            0 => Some(0),
            1 => Some(1),
            _ => None,
        }
    }
    fn power_state(&self, vcpu: usize) -> PowerState {
        self.power.borrow()[vcpu]
    }
    fn is_guest_ram(&self, address: u64, len: u64) -> bool {
        address >= RAM.start && address.checked_add(len).is_some_and(|end| end <= RAM.end)
    }
    fn request_power_on(&self, vcpu: usize, entry: u64, context: u64) -> Result<(), PowerState> {
        let mut power = self.power.borrow_mut();
        match power[vcpu] {
            PowerState::Off => {
                power[vcpu] = PowerState::OnPending;
                self.power_ons.borrow_mut().push((vcpu, entry, context));
                Ok(())
            }
            other => Err(other),
        }
    }
}

fn x0(answer: Answer) -> i64 {
    match answer.outcome {
        Outcome::Return([Some(x0), ..]) => x0 as i64,
        other => panic!("expected a return value, got {other:?}"),
    }
}

fn call(m: &FakeMachine, args: [u64; 4]) -> Answer {
    handle(m, 0, args)
}

#[test]
fn discovery() {
    let m = FakeMachine::new();
    assert_eq!(x0(call(&m, [smccc::SMCCC_VERSION as u64, 0, 0, 0])), 0x1_0001);
    assert_eq!(x0(call(&m, [smccc::SMCCC_ARCH_FEATURES as u64, smccc::SMCCC_VERSION as u64, 0, 0])), 0);
    assert_eq!(x0(call(&m, [smccc::SMCCC_ARCH_FEATURES as u64, 0x8000_7fff, 0, 0])), -1);
    assert_eq!(x0(call(&m, [psci::PSCI_VERSION as u64, 0, 0, 0])), 0x1_0001);
    for f in PSCI_IMPLEMENTED {
        assert_eq!(x0(call(&m, [psci::PSCI_FEATURES as u64, f as u64, 0, 0])), 0, "{f:#x}");
    }
    assert_eq!(x0(call(&m, [psci::PSCI_FEATURES as u64, 0x8400_000E, 0, 0])), -1);
    let uid = call(&m, [hypcall::CALL_UID as u64, 0, 0, 0]);
    let [a, b, c, d] = hypcall::UID.map(|w| Some(w as u64));
    assert_eq!(uid.outcome, Outcome::Return([a, b, c, d]));
    assert_eq!(call(&m, [hypcall::REVISION as u64, 0, 0, 0]).outcome, Outcome::Return([Some(0), Some(1), None, None]));
}

#[test]
fn malformed_or_unknown_calls_are_not_supported() {
    let m = FakeMachine::new();
    for (immediate, fid) in [
        (1, psci::PSCI_VERSION), // hvc #1
        (0, 0x0400_0000),        // yielding call
        (0, 0x8401_0000),        // reserved bits 23:16 set
        (0, 0x8400_00ff),        // PSCI function that does not exist
        (0, 0x8600_0001),        // vendor service function that does not exist
        (0, 0xb000_0000),        // trusted OS owner
        (0, 0x8200_0000),        // SiP owner
    ] {
        let answer = handle(&m, immediate, [fid as u64, 0, 0, 0]);
        assert_eq!(x0(answer), -1, "{immediate} {fid:#x}");
        assert_eq!(answer.verdict, Verdict::Unknown);
    }
}

#[test]
fn cpu_on_validates_every_argument() {
    let m = FakeMachine::new();
    let on = |mpidr: u64, entry: u64| x0(call(&m, [psci::CPU_ON_64 as u64, mpidr, entry, 7]));
    assert_eq!(on(5, RAM.start), psci::INVALID_PARAMETERS);
    assert_eq!(on(1, RAM.start + 2), psci::INVALID_ADDRESS);
    assert_eq!(on(1, 0x1000), psci::INVALID_ADDRESS);
    assert_eq!(on(1, RAM.end - 2), psci::INVALID_ADDRESS);
    assert_eq!(on(0, RAM.start), psci::ALREADY_ON);
    assert!(m.power_ons.borrow().is_empty(), "no power-on for a rejected call");
    assert_eq!(on(1, RAM.start + 0x100), psci::SUCCESS);
    assert_eq!(*m.power_ons.borrow(), [(1, RAM.start + 0x100, 7)]);
    // The target is still on its way up (OnPending): PSCI sees it on, as KVM reports it.
    assert_eq!(on(1, RAM.start), psci::ALREADY_ON);
    assert_eq!(x0(call(&m, [psci::AFFINITY_INFO_64 as u64, 1, 0, 0])), psci::AFFINITY_ON);
    assert_eq!(m.power_ons.borrow().len(), 1, "the second CPU_ON changed nothing");
}

/// While the target of a successful CPU_ON is still starting, a second CPU_ON answers
/// ALREADY_ON and AFFINITY_INFO answers ON, from both calling conventions, as on KVM.
#[test]
fn concurrent_cpu_on_answers_as_kvm() {
    let m = FakeMachine::new();
    assert_eq!(x0(call(&m, [psci::CPU_ON_64 as u64, 1, RAM.start, 0])), psci::SUCCESS);
    assert_eq!(m.power.borrow()[1], PowerState::OnPending);
    for (on, info) in [(psci::CPU_ON_64, psci::AFFINITY_INFO_64), (psci::CPU_ON_32, psci::AFFINITY_INFO_32)] {
        assert_eq!(x0(call(&m, [on as u64, 1, RAM.start, 0])), psci::ALREADY_ON);
        assert_eq!(x0(call(&m, [info as u64, 1, 0, 0])), psci::AFFINITY_ON);
    }
    // Bad arguments are still checked first.
    assert_eq!(x0(call(&m, [psci::CPU_ON_64 as u64, 1, RAM.start + 2, 0])), psci::INVALID_ADDRESS);
    assert_eq!(psci_view(PowerState::OnPending), PowerState::On);
    assert_eq!(psci_view(PowerState::Off), PowerState::Off);
    assert_eq!(psci_view(PowerState::On), PowerState::On);
}

#[test]
fn smc32_arguments_are_truncated() {
    let m = FakeMachine::new();
    // MPIDR 1 with garbage in the upper half: a 32-bit call sees MPIDR 1.
    let answer = call(&m, [psci::CPU_ON_32 as u64, 0xdead_0000_0000_0001, RAM.start, 0]);
    assert_eq!(x0(answer), psci::SUCCESS);
    // A 64-bit call sees the upper bits, which PSCI requires to be zero.
    let answer = call(&m, [psci::AFFINITY_INFO_64 as u64, 0xdead_0000_0000_0001, 0, 0]);
    assert_eq!(x0(answer), psci::INVALID_PARAMETERS);
    let answer = call(&m, [psci::AFFINITY_INFO_64 as u64, 0x8000_0001, 0, 0]);
    assert_eq!(x0(answer), psci::INVALID_PARAMETERS, "bit 31 (RES1 in MPIDR) is not an affinity bit");
}

#[test]
fn affinity_info_levels() {
    let m = FakeMachine::new();
    assert_eq!(x0(call(&m, [psci::AFFINITY_INFO_64 as u64, 0, 0, 0])), psci::AFFINITY_ON);
    assert_eq!(x0(call(&m, [psci::AFFINITY_INFO_64 as u64, 1, 0, 0])), psci::AFFINITY_OFF);
    assert_eq!(x0(call(&m, [psci::AFFINITY_INFO_64 as u64, 0, 1, 0])), psci::INVALID_PARAMETERS);
}

#[test]
fn power_functions() {
    let m = FakeMachine::new();
    assert_eq!(call(&m, [psci::CPU_OFF as u64, 0, 0, 0]).outcome, Outcome::CpuOff);
    assert_eq!(call(&m, [psci::CPU_SUSPEND_64 as u64, 0, 0, 0]).outcome, Outcome::Suspend);
    assert_eq!(call(&m, [psci::SYSTEM_OFF as u64, 0, 0, 0]).outcome, Outcome::SystemOff);
    assert_eq!(call(&m, [psci::SYSTEM_RESET as u64, 0, 0, 0]).outcome, Outcome::SystemReset);
    assert_eq!(x0(call(&m, [psci::MIGRATE_INFO_TYPE as u64, 0, 0, 0])), psci::MIGRATE_NOT_REQUIRED);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any call gets an answer; only CPU_ON can start a vCPU, and only at an aligned entry point
    /// inside guest RAM; anything outside the three implemented services is NOT_SUPPORTED.
    #[test]
    fn any_call_is_answered_safely(immediate in prop_oneof![Just(0u16), any::<u16>()], fid in any::<u64>(), a1 in any::<u64>(), a2 in any::<u64>(), a3 in any::<u64>()) {
        let m = FakeMachine::new();
        let answer = handle(&m, immediate, [fid, a1, a2, a3]);
        let function = fid as u32;
        for &(_, entry, _) in m.power_ons.borrow().iter() {
            prop_assert!(function == psci::CPU_ON_64 || function == psci::CPU_ON_32);
            prop_assert!(entry % 4 == 0 && RAM.contains(&entry));
        }
        let owner = smccc::owner(function);
        let known_owner = [smccc::OWNER_ARCH, smccc::OWNER_STANDARD, smccc::OWNER_VENDOR_HYP].contains(&owner);
        if immediate != 0 || !smccc::is_well_formed_fast(function) || !known_owner {
            prop_assert_eq!(answer.verdict, Verdict::Unknown);
            prop_assert_eq!(x0(answer), -1);
        }
        if answer.verdict == Verdict::Unknown {
            prop_assert_eq!(answer.outcome, value(smccc::NOT_SUPPORTED));
        }
    }
}

/// One step of a guest (and its hypervisor) in the hotplug property below.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// CPU_ON of vCPU 1 (64-bit or 32-bit convention).
    CpuOn(bool),
    /// AFFINITY_INFO of vCPU 1.
    AffinityInfo(bool),
    /// vCPU 1's physical CPU starts it (OnPending becomes On), if it is starting.
    ComesUp,
    /// vCPU 1 calls CPU_OFF, if it is on.
    GoesOff,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(Step::CpuOn),
        any::<bool>().prop_map(Step::AffinityInfo),
        Just(Step::ComesUp),
        Just(Step::GoesOff),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Whatever the interleaving of CPU_ON, AFFINITY_INFO, the target coming up and going off
    /// again, the guest gets KVM's answers: CPU_ON succeeds exactly when the vCPU is off and is
    /// ALREADY_ON otherwise (also while it starts); AFFINITY_INFO is OFF or ON, never
    /// ON_PENDING, and ON from the moment a CPU_ON succeeded.
    #[test]
    fn hotplug_answers_are_kvms(steps in proptest::collection::vec(step(), 1..64)) {
        let m = FakeMachine::new();
        let mut accepted = 0;
        for step in steps {
            let before = m.power.borrow()[1];
            match step {
                Step::CpuOn(is_64) => {
                    let f = if is_64 { psci::CPU_ON_64 } else { psci::CPU_ON_32 };
                    let answer = x0(call(&m, [f as u64, 1, RAM.start, 0]));
                    let want = if before == PowerState::Off { psci::SUCCESS } else { psci::ALREADY_ON };
                    prop_assert_eq!(answer, want);
                    accepted += usize::from(answer == psci::SUCCESS);
                    prop_assert!(m.power.borrow()[1] != PowerState::Off, "on after CPU_ON");
                }
                Step::AffinityInfo(is_64) => {
                    let f = if is_64 { psci::AFFINITY_INFO_64 } else { psci::AFFINITY_INFO_32 };
                    let answer = x0(call(&m, [f as u64, 1, 0, 0]));
                    let want = if before == PowerState::Off { psci::AFFINITY_OFF } else { psci::AFFINITY_ON };
                    prop_assert_eq!(answer, want);
                }
                Step::ComesUp if before == PowerState::OnPending => m.power.borrow_mut()[1] = PowerState::On,
                Step::GoesOff if before == PowerState::On => m.power.borrow_mut()[1] = PowerState::Off,
                Step::ComesUp | Step::GoesOff => {}
            }
        }
        prop_assert_eq!(m.power_ons.borrow().len(), accepted, "one power-on per successful CPU_ON");
    }
}

/// SMCCC's function ID is W0: whatever x0[63:32] holds, the call is the same one, for PSCI as
/// for the SDEI and vendor services (which the hypervisor routes with the same `function_id`).
#[test]
fn upper_half_of_x0_is_ignored() {
    let m = FakeMachine::new();
    let plain = handle(&m, 0, [u64::from(asyncpf_contract::psci::PSCI_VERSION), 0, 0, 0]);
    let dirty = handle(&m, 0, [0xdead_beef_0000_0000 | u64::from(asyncpf_contract::psci::PSCI_VERSION), 0, 0, 0]);
    assert_eq!(plain, dirty);
    assert_eq!(function_id(0xffff_ffff_c600_0001), asyncpf_contract::apf::FEATURES);
    assert_eq!(function_id(0x1_c400_0020), 0xc400_0020);
}
