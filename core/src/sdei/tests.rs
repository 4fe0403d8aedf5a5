use super::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::vec::Vec;

const PNP: u32 = abi::EVENT_PAGE_NOT_PRESENT;
const ENTRY: u64 = 0xffff_8000_0010_0000;
const RESUME: u64 = 0xffff_8000_0000_0280;

/// vCPU `i` has MPIDR affinity `i` (Aff0 only).
struct Guest {
    vcpus: usize,
}

impl GuestState for Guest {
    fn vcpu_by_mpidr(&self, affinity: u64) -> Option<usize> {
        usize::try_from(affinity).ok().filter(|&i| i < self.vcpus)
    }
}

fn call(s: &mut Sdei, vcpu: usize, function: u32, args: &[u64]) -> SdeiAnswer {
    let mut full = [0; 5];
    full[..args.len()].copy_from_slice(args);
    s.call(vcpu, function, full, &Guest { vcpus: s.vcpus() })
}

/// x0 of a plain return, as a signed SDEI result.
fn x0(answer: SdeiAnswer) -> i64 {
    match answer {
        SdeiAnswer::Return([Some(x0), None, None, None]) => x0 as i64,
        other => panic!("expected a plain return, got {other:?}"),
    }
}

fn x0_of(s: &mut Sdei, vcpu: usize, function: u32, args: &[u64]) -> i64 {
    x0(call(s, vcpu, function, args))
}

/// A context whose every field is different and derived from `seed`.
fn context(seed: u64) -> Context {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut x = [0; SAVED_REGS];
    x.iter_mut().for_each(|r| *r = next());
    Context { x, pc: next(), pstate: next() }
}

/// Register `event` on `vcpu` with argument `event + 100`, enable it and unmask the vCPU.
fn ready(s: &mut Sdei, vcpu: usize, event: u32) {
    assert_eq!(x0_of(s, vcpu, abi::EVENT_REGISTER, &[event.into(), ENTRY, u64::from(event) + 100, 0, 0]), 0);
    assert_eq!(x0_of(s, vcpu, abi::EVENT_ENABLE, &[event.into()]), 0);
    x0_of(s, vcpu, abi::PE_UNMASK, &[]);
}

fn status(s: &mut Sdei, vcpu: usize, event: u32) -> i64 {
    x0_of(s, vcpu, abi::EVENT_STATUS, &[event.into()])
}

const REGISTERED: i64 = abi::STATUS_REGISTERED as i64;
const ENABLED: i64 = abi::STATUS_ENABLED as i64;
const RUNNING: i64 = abi::STATUS_RUNNING as i64;

#[test]
fn version_is_1_1_vendor_0() {
    let mut s = Sdei::new(1);
    let version = x0_of(&mut s, 0, abi::VERSION, &[]) as u64;
    assert_eq!(version, 0x0001_0001_0000_0000);
    assert_eq!((version >> 48) & 0x7fff, 1, "major");
    assert_eq!((version >> 32) & 0xffff, 1, "minor");
    assert_eq!(version & 0xffff_ffff, 0, "vendor");
}

#[test]
fn function_range() {
    assert!(is_sdei_function(abi::VERSION));
    assert!(is_sdei_function(abi::SHARED_RESET));
    assert!(is_sdei_function(0xC400_003F));
    assert!(!is_sdei_function(0xC400_0040));
    assert!(!is_sdei_function(0xC400_001F));
    assert!(!is_sdei_function(0x8400_0020), "SMC32 form");
}

#[test]
fn unknown_functions_are_not_supported() {
    let mut s = Sdei::new(1);
    let unknown = [0xC400_0033, 0xC400_003F, 0x8400_0020, 0x8400_0021, 0xC400_0000, 0xC600_0001, 0, u32::MAX];
    for function in unknown {
        assert_eq!(x0_of(&mut s, 0, function, &[0, ENTRY]), abi::NOT_SUPPORTED, "{function:#x}");
    }
    assert_eq!(s.counters().not_supported, unknown.len() as u64);
    assert_eq!(s.counters().errors, 0);
    assert_eq!(s.counters().calls, unknown.len() as u64);
}

#[test]
fn vcpus_start_masked() {
    let mut s = Sdei::new(2);
    assert!(s.is_masked(0) && s.is_masked(1));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[PNP.into(), ENTRY, 1, 0, 0]), 0);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), 0);
    assert_eq!(s.dispatch(0, PNP, context(1)), Err(Refusal::Masked));
    assert_eq!(x0_of(&mut s, 0, abi::PE_MASK, &[]), 0, "already masked: no effect");
    assert_eq!(x0_of(&mut s, 0, abi::PE_UNMASK, &[]), 0);
    assert!(!s.is_masked(0));
    assert!(s.is_masked(1), "masks are per vCPU");
    assert_eq!(s.check_dispatch(0, PNP), Ok(()));
    assert_eq!(x0_of(&mut s, 0, abi::PE_MASK, &[]), 1, "this call masked the vCPU");
    assert_eq!(x0_of(&mut s, 0, abi::PE_MASK, &[]), 0);
    assert_eq!(s.dispatch(0, PNP, context(1)), Err(Refusal::Masked));
    assert_eq!(x0_of(&mut s, 0, abi::PE_UNMASK, &[]), 0);
    assert_eq!(x0_of(&mut s, 0, abi::PE_UNMASK, &[]), 0, "unmasking twice is fine");
    assert!(s.dispatch(0, PNP, context(1)).is_ok());
}

#[test]
fn register_and_its_errors() {
    let mut s = Sdei::new(2);
    let register = |s: &mut Sdei, event: u64, entry: u64, flags: u64| {
        x0_of(s, 0, abi::EVENT_REGISTER, &[event, entry, 7, flags, 0xdead_beef])
    };
    assert_eq!(register(&mut s, 5, ENTRY, 0), abi::INVALID_PARAMETERS, "unknown event");
    assert_eq!(register(&mut s, PNP.into(), ENTRY + 2, 0), abi::INVALID_PARAMETERS, "misaligned entry point");
    assert_eq!(register(&mut s, PNP.into(), ENTRY, REGISTER_FLAG_RELATIVE), abi::INVALID_PARAMETERS);
    assert_eq!(register(&mut s, PNP.into(), ENTRY, 1 << 2), abi::INVALID_PARAMETERS, "reserved flag");
    assert_eq!(register(&mut s, PNP.into(), ENTRY, 1 << 63), abi::INVALID_PARAMETERS, "reserved flag");
    assert_eq!(status(&mut s, 0, PNP), 0, "nothing registered by a failed call");
    assert_eq!(s.counters().errors, 5);

    // RM_PE with any affinity is accepted and ignored for a private event.
    assert_eq!(register(&mut s, PNP.into(), ENTRY, REGISTER_FLAG_ROUTING_PE), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED);
    assert_eq!(
        s.registration(0, PNP),
        Some(Registration { entry_point: ENTRY, argument: 7, flags: REGISTER_FLAG_ROUTING_PE })
    );
    assert_eq!(register(&mut s, PNP.into(), ENTRY, 0), abi::DENIED, "registered twice");
    assert_eq!(status(&mut s, 1, PNP), 0, "private: vCPU 1 is not registered");
    assert_eq!(status(&mut s, 0, 0), 0, "event 0 is separate");
    assert_eq!(register(&mut s, 0, 0, 0), 0, "event 0 registers; 0 is an aligned entry point");
}

#[test]
fn enable_and_disable() {
    let mut s = Sdei::new(1);
    for function in [abi::EVENT_ENABLE, abi::EVENT_DISABLE] {
        assert_eq!(x0_of(&mut s, 0, function, &[PNP.into()]), abi::DENIED, "unregistered");
        assert_eq!(x0_of(&mut s, 0, function, &[3]), abi::INVALID_PARAMETERS, "unknown event");
    }
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[PNP.into(), ENTRY, 0, 0, 0]), 0);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_DISABLE, &[PNP.into()]), 0, "disabling a disabled event");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), 0);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), 0, "enabling twice");
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | ENABLED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_DISABLE, &[PNP.into()]), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED);
    assert_eq!(x0_of(&mut s, 0, abi::PE_UNMASK, &[]), 0);
    assert_eq!(s.dispatch(0, PNP, context(0)), Err(Refusal::NotEnabled));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), 0);
    assert_eq!(status(&mut s, 0, PNP), 0, "unregistering disables");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), abi::DENIED, "not registered");
}

#[test]
fn dispatch_enters_the_handler_and_saves_the_context() {
    let mut s = Sdei::new(2);
    ready(&mut s, 1, PNP);
    let interrupted = context(42);
    let entry = s.dispatch(1, PNP, interrupted).unwrap();
    assert_eq!(entry.pc, ENTRY);
    assert_eq!(entry.x, [u64::from(PNP), u64::from(PNP) + 100, interrupted.pc, interrupted.pstate]);
    assert_eq!(entry.pstate, 0x3c5, "EL1h, DAIF masked");
    assert_eq!(s.running_event(1), Some(PNP));
    assert_eq!(s.running_event(0), None);
    assert_eq!(status(&mut s, 1, PNP), REGISTERED | ENABLED | RUNNING);
    for (i, &saved) in interrupted.x.iter().enumerate() {
        assert_eq!(x0_of(&mut s, 1, abi::EVENT_CONTEXT, &[i as u64]) as u64, saved, "x{i}");
    }
    assert_eq!(x0_of(&mut s, 1, abi::EVENT_CONTEXT, &[SAVED_REGS as u64]), abi::INVALID_PARAMETERS);
    assert_eq!(x0_of(&mut s, 1, abi::EVENT_CONTEXT, &[u64::from(u32::MAX)]), abi::INVALID_PARAMETERS);
    // param_id is 32 bits wide: the upper half of x1 is ignored.
    assert_eq!(x0_of(&mut s, 1, abi::EVENT_CONTEXT, &[(1 << 32) | 3]) as u64, interrupted.x[3]);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_CONTEXT, &[0]), abi::DENIED, "no handler on vCPU 0");
    assert_eq!(s.counters().dispatches, 1);
}

#[test]
fn dispatch_refusals() {
    let mut s = Sdei::new(1);
    assert_eq!(s.dispatch(0, 12345, context(0)), Err(Refusal::UnknownEvent));
    assert_eq!(s.dispatch(0, PNP, context(0)), Err(Refusal::NotRegistered));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[PNP.into(), ENTRY, 0, 0, 0]), 0);
    assert_eq!(s.dispatch(0, PNP, context(0)), Err(Refusal::NotEnabled));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), 0);
    assert_eq!(s.dispatch(0, PNP, context(0)), Err(Refusal::Masked));
    ready(&mut s, 0, 0);
    let first = context(1);
    s.dispatch(0, PNP, first).unwrap();
    assert_eq!(s.dispatch(0, PNP, context(2)), Err(Refusal::Running), "same event: no nesting");
    assert_eq!(s.dispatch(0, 0, context(2)), Err(Refusal::Running), "other event: no preemption");
    assert_eq!(s.check_dispatch(0, 0), Err(Refusal::Running));
    assert_eq!(s.counters().refusals, 6);
    assert_eq!(s.counters().dispatches, 1);
    // The refused dispatches did not overwrite the saved context.
    match call(&mut s, 0, abi::EVENT_COMPLETE, &[STATUS_HANDLED]) {
        SdeiAnswer::Complete { restore, .. } => assert_eq!(restore, first),
        other => panic!("{other:?}"),
    }
}

#[test]
fn complete_restores_the_saved_context() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    let interrupted = context(7);
    s.dispatch(0, PNP, interrupted).unwrap();
    let answer = call(&mut s, 0, abi::EVENT_COMPLETE, &[STATUS_FAILED]);
    assert_eq!(answer, SdeiAnswer::Complete { event: PNP, status: STATUS_FAILED, restore: interrupted });
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | ENABLED, "still registered and enabled");
    assert_eq!(s.running_event(0), None);
    assert_eq!(s.counters().completes, 1);
    // Delivered again, with the new context.
    let second = context(8);
    s.dispatch(0, PNP, second).unwrap();
    assert_eq!(
        call(&mut s, 0, abi::EVENT_COMPLETE, &[STATUS_HANDLED]),
        SdeiAnswer::Complete { event: PNP, status: STATUS_HANDLED, restore: second }
    );
}

#[test]
fn complete_outside_a_handler_is_denied() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_COMPLETE, &[0]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_COMPLETE_AND_RESUME, &[RESUME]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_CONTEXT, &[0]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_CONTEXT, &[99]), abi::DENIED, "DENIED before INVALID_PARAMETERS");
    assert_eq!(s.counters().completes + s.counters().resumes, 0);
    // And after a completion the handler is over: a second COMPLETE is denied too.
    s.dispatch(0, PNP, context(1)).unwrap();
    assert!(matches!(call(&mut s, 0, abi::EVENT_COMPLETE, &[0]), SdeiAnswer::Complete { .. }));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_COMPLETE, &[0]), abi::DENIED);
}

#[test]
fn complete_and_resume_enters_the_resume_address_as_an_irq() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    let interrupted = context(9);
    s.dispatch(0, PNP, interrupted).unwrap();
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_COMPLETE_AND_RESUME, &[RESUME + 1]), abi::DENIED, "misaligned");
    assert_eq!(s.running_event(0), Some(PNP), "a refused completion leaves the handler running");
    assert_eq!(
        call(&mut s, 0, abi::EVENT_COMPLETE_AND_RESUME, &[RESUME]),
        SdeiAnswer::CompleteAndResume {
            event: PNP,
            restore: interrupted,
            resume: Resume { pc: RESUME, pstate: 0x3c5, elr_el1: interrupted.pc, spsr_el1: interrupted.pstate },
        }
    );
    assert_eq!(s.running_event(0), None);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | ENABLED);
    assert_eq!(s.counters().resumes, 1);
    assert_eq!(s.counters().completes, 0);
}

#[test]
fn unregister_while_running_is_pending_until_completion() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    let interrupted = context(3);
    s.dispatch(0, PNP, interrupted).unwrap();
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), abi::PENDING);
    assert_eq!(status(&mut s, 0, PNP), RUNNING, "running only: unregistered and disabled");
    assert_eq!(s.registration(0, PNP), None);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), abi::PENDING, "still pending");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[PNP.into(), ENTRY, 0, 0, 0]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_DISABLE, &[PNP.into()]), abi::DENIED);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_CONTEXT, &[5]) as u64, interrupted.x[5], "the handler still runs");
    assert_eq!(s.dispatch(0, PNP, context(4)), Err(Refusal::NotRegistered));
    assert_eq!(
        call(&mut s, 0, abi::EVENT_COMPLETE, &[0]),
        SdeiAnswer::Complete { event: PNP, status: 0, restore: interrupted }
    );
    assert_eq!(status(&mut s, 0, PNP), 0, "the unregistration took effect");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), abi::DENIED);
    assert_eq!(s.dispatch(0, PNP, context(4)), Err(Refusal::NotRegistered));
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[PNP.into(), ENTRY, 0, 0, 0]), 0, "can register again");
}

#[test]
fn disable_and_enable_while_running() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    s.dispatch(0, PNP, context(1)).unwrap();
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_DISABLE, &[PNP.into()]), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | RUNNING);
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_ENABLE, &[PNP.into()]), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | ENABLED | RUNNING);
    assert_eq!(x0_of(&mut s, 0, abi::PE_MASK, &[]), 1, "masking inside a handler");
    assert!(matches!(call(&mut s, 0, abi::EVENT_COMPLETE, &[0]), SdeiAnswer::Complete { .. }));
    assert_eq!(s.dispatch(0, PNP, context(2)), Err(Refusal::Masked));
}

#[test]
fn unknown_event_numbers_are_invalid() {
    let mut s = Sdei::new(1);
    for event in [1u64, 2, 0x4150_4600, u64::from(PNP) + 1, u64::from(u32::MAX), 0x8000_0000] {
        for function in [
            abi::EVENT_ENABLE,
            abi::EVENT_DISABLE,
            abi::EVENT_UNREGISTER,
            abi::EVENT_STATUS,
            abi::EVENT_GET_INFO,
            abi::EVENT_ROUTING_SET,
            abi::INTERRUPT_RELEASE,
            abi::EVENT_SIGNAL,
        ] {
            assert_eq!(x0_of(&mut s, 0, function, &[event, 0, 0, 0, 0]), abi::INVALID_PARAMETERS, "{function:#x}");
        }
        assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[event, ENTRY, 0, 0, 0]), abi::INVALID_PARAMETERS);
    }
    // Event numbers are 32 bits wide: the upper half of x1 is ignored.
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_REGISTER, &[(7 << 32) | u64::from(PNP), ENTRY, 0, 0, 0]), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED);
}

#[test]
fn get_info_answers() {
    let mut s = Sdei::new(1);
    let info = |s: &mut Sdei, event: u32, info: u64| x0_of(s, 0, abi::EVENT_GET_INFO, &[event.into(), info]);
    for event in [0, PNP] {
        assert_eq!(info(&mut s, event, abi::INFO_TYPE), abi::TYPE_PRIVATE as i64);
        assert_eq!(info(&mut s, event, abi::INFO_PRIORITY), abi::PRIORITY_NORMAL as i64);
        assert_eq!(info(&mut s, event, abi::INFO_ROUTING_MODE), abi::INVALID_PARAMETERS);
        assert_eq!(info(&mut s, event, abi::INFO_ROUTING_AFF), abi::INVALID_PARAMETERS);
        assert_eq!(info(&mut s, event, 5), abi::INVALID_PARAMETERS);
        assert_eq!(info(&mut s, event, u64::from(u32::MAX)), abi::INVALID_PARAMETERS);
    }
    assert_eq!(info(&mut s, 0, abi::INFO_SIGNALED), 1, "event 0 can be signalled");
    assert_eq!(info(&mut s, PNP, abi::INFO_SIGNALED), 0, "page_not_present cannot");
    assert_eq!(info(&mut s, 0, (1 << 32) | abi::INFO_SIGNALED), 1, "info is 32 bits wide");
}

#[test]
fn routing_set_on_private_events_is_invalid() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    x0_of(&mut s, 0, abi::EVENT_DISABLE, &[PNP.into()]);
    for flags in [0, REGISTER_FLAG_ROUTING_PE] {
        assert_eq!(x0_of(&mut s, 0, abi::EVENT_ROUTING_SET, &[PNP.into(), flags, 0]), abi::INVALID_PARAMETERS);
        assert_eq!(x0_of(&mut s, 0, abi::EVENT_ROUTING_SET, &[0, flags, 0]), abi::INVALID_PARAMETERS);
    }
    assert_eq!(status(&mut s, 0, PNP), REGISTERED);
}

#[test]
fn features() {
    let mut s = Sdei::new(1);
    assert_eq!(x0_of(&mut s, 0, abi::FEATURES, &[FEATURE_BIND_SLOTS.into()]), 0, "no bind slots");
    assert_eq!(x0_of(&mut s, 0, abi::FEATURES, &[FEATURE_RELATIVE_MODE.into()]), 0, "no relative mode");
    assert_eq!(x0_of(&mut s, 0, abi::FEATURES, &[2]), abi::INVALID_PARAMETERS);
    assert_eq!(x0_of(&mut s, 0, abi::FEATURES, &[u64::MAX]), abi::INVALID_PARAMETERS);
}

#[test]
fn interrupt_binding_is_unsupported() {
    let mut s = Sdei::new(1);
    for intid in [0u64, 1, 15, 1020, 1023, 4096, u64::from(u32::MAX)] {
        assert_eq!(x0_of(&mut s, 0, abi::INTERRUPT_BIND, &[intid]), abi::INVALID_PARAMETERS, "{intid}");
    }
    for intid in [16u64, 22, 31, 32, 1019] {
        assert_eq!(x0_of(&mut s, 0, abi::INTERRUPT_BIND, &[intid]), abi::OUT_OF_RESOURCE, "{intid}");
    }
    for event in [0, u64::from(PNP), 100] {
        assert_eq!(x0_of(&mut s, 0, abi::INTERRUPT_RELEASE, &[event]), abi::INVALID_PARAMETERS);
    }
}

#[test]
fn signal() {
    let mut s = Sdei::new(3);
    assert_eq!(call(&mut s, 0, abi::EVENT_SIGNAL, &[0, 2]), SdeiAnswer::Signal { target: 2 });
    assert_eq!(call(&mut s, 1, abi::EVENT_SIGNAL, &[0, 1]), SdeiAnswer::Signal { target: 1 }, "to itself");
    assert_eq!(call(&mut s, 0, abi::EVENT_SIGNAL, &[0, 0x8000_0002]), SdeiAnswer::Signal { target: 2 }, "bit 31");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_SIGNAL, &[0, 3]), abi::INVALID_PARAMETERS, "no vCPU 3");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_SIGNAL, &[0, 0x100]), abi::INVALID_PARAMETERS, "Aff1 = 1");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_SIGNAL, &[PNP.into(), 1]), abi::INVALID_PARAMETERS, "not signalable");
    assert_eq!(s.counters().signals, 3);
    assert_eq!(s.counters().errors, 3);
    // The signal itself changes nothing: the hypervisor dispatches it.
    assert_eq!(s.running_event(2), None);
}

#[test]
fn signal_trusts_no_out_of_range_vcpu() {
    struct Liar;
    impl GuestState for Liar {
        fn vcpu_by_mpidr(&self, _: u64) -> Option<usize> {
            Some(5)
        }
    }
    let mut s = Sdei::new(2);
    assert_eq!(x0(s.call(0, abi::EVENT_SIGNAL, [0, 5, 0, 0, 0], &Liar)), abi::INVALID_PARAMETERS);
}

#[test]
fn private_reset() {
    let mut s = Sdei::new(2);
    ready(&mut s, 0, PNP);
    ready(&mut s, 0, 0);
    ready(&mut s, 1, PNP);
    assert_eq!(x0_of(&mut s, 0, abi::PRIVATE_RESET, &[]), 0);
    assert_eq!((status(&mut s, 0, PNP), status(&mut s, 0, 0)), (0, 0));
    assert_eq!(status(&mut s, 1, PNP), REGISTERED | ENABLED, "other vCPUs keep theirs");
    assert!(!s.is_masked(0), "the mask is not touched");
    assert_eq!(x0_of(&mut s, 0, abi::PRIVATE_RESET, &[]), 0, "nothing registered: still SUCCESS");

    // With a handler running: everything is unregistered, the running event pending, DENIED.
    ready(&mut s, 0, PNP);
    ready(&mut s, 0, 0);
    let interrupted = context(11);
    s.dispatch(0, 0, interrupted).unwrap();
    assert_eq!(x0_of(&mut s, 0, abi::PRIVATE_RESET, &[]), abi::DENIED);
    assert_eq!(status(&mut s, 0, 0), RUNNING);
    assert_eq!(status(&mut s, 0, PNP), 0);
    assert_eq!(
        call(&mut s, 0, abi::EVENT_COMPLETE, &[0]),
        SdeiAnswer::Complete { event: 0, status: 0, restore: interrupted }
    );
    assert_eq!(status(&mut s, 0, 0), 0);
}

#[test]
fn shared_reset_touches_no_private_event() {
    let mut s = Sdei::new(1);
    ready(&mut s, 0, PNP);
    assert_eq!(x0_of(&mut s, 0, abi::SHARED_RESET, &[]), 0);
    assert_eq!(status(&mut s, 0, PNP), REGISTERED | ENABLED);
}

#[test]
fn reset_vcpu_forgets_everything_of_that_vcpu() {
    let mut s = Sdei::new(2);
    ready(&mut s, 0, PNP);
    ready(&mut s, 1, PNP);
    s.dispatch(0, PNP, context(1)).unwrap();
    s.reset_vcpu(0);
    assert_eq!(s.running_event(0), None);
    assert_eq!(s.status(0, PNP), Some(EventStatus::default()));
    assert_eq!(s.registration(0, PNP), None);
    assert!(s.is_masked(0), "a reset vCPU starts masked");
    assert_eq!(x0_of(&mut s, 0, abi::EVENT_COMPLETE, &[0]), abi::DENIED, "the handler is gone");
    assert_eq!(s.status(1, PNP), Some(EventStatus { registered: true, enabled: true, running: false }));
    assert!(!s.is_masked(1));
    assert_eq!(s.status(0, 99), None);
}

#[test]
fn status_bits() {
    assert_eq!(EventStatus { registered: true, enabled: false, running: false }.bits(), 1);
    assert_eq!(EventStatus { registered: false, enabled: true, running: false }.bits(), 2);
    assert_eq!(EventStatus { registered: false, enabled: false, running: true }.bits(), 4);
    assert_eq!(EventStatus { registered: true, enabled: true, running: true }.bits(), 7);
}

#[test]
fn event_number_is_a_valid_sdei_event_number() {
    // Positive as a signed 32-bit value, within the 24-bit event number field, not event 0.
    assert_eq!(PNP >> 24, 0);
    assert_ne!(PNP, 0);
    assert_eq!(EVENTS.iter().filter(|e| e.signalable).count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Random runs against a shadow model.

#[derive(Clone, Copy, Debug, Default)]
struct ShadowEvent {
    registered: bool,
    enabled: bool,
    entry: u64,
    argument: u64,
}

/// The shadow of one vCPU, written as the state table of the module documentation.
#[derive(Clone, Copy, Debug)]
struct ShadowVcpu {
    masked: bool,
    /// Event 0, then page_not_present.
    events: [ShadowEvent; 2],
    /// The running event's shadow index and the context the test passed at its dispatch.
    running: Option<(usize, Context)>,
}

impl ShadowVcpu {
    const RESET: Self = Self {
        masked: true,
        events: [ShadowEvent { registered: false, enabled: false, entry: 0, argument: 0 }; 2],
        running: None,
    };
}

const SHADOW_NUMBERS: [u32; 2] = [0, PNP];

fn shadow_index(event: u32) -> Option<usize> {
    SHADOW_NUMBERS.iter().position(|&n| n == event)
}

fn ret(x0: i64) -> SdeiAnswer {
    SdeiAnswer::Return([Some(x0 as u64), None, None, None])
}

/// What the dispatcher must answer, and the shadow's new state.
fn shadow_call(shadow: &mut [ShadowVcpu], vcpu: usize, function: u32, a: [u64; 5]) -> SdeiAnswer {
    let vcpus = shadow.len() as u64;
    let me = &mut shadow[vcpu];
    let event = shadow_index(a[0] as u32);
    let running = me.running.map(|(i, _)| i);
    match (function, event) {
        (abi::VERSION, _) => ret(0x0001_0001_0000_0000),
        (abi::EVENT_REGISTER, Some(i)) if a[1].is_multiple_of(4) && a[3] <= 1 => {
            if me.events[i].registered || running == Some(i) {
                ret(abi::DENIED)
            } else {
                me.events[i] = ShadowEvent { registered: true, enabled: false, entry: a[1], argument: a[2] };
                ret(0)
            }
        }
        (abi::EVENT_ENABLE | abi::EVENT_DISABLE, Some(i)) => {
            if me.events[i].registered {
                me.events[i].enabled = function == abi::EVENT_ENABLE;
                ret(0)
            } else {
                ret(abi::DENIED)
            }
        }
        (abi::EVENT_UNREGISTER, Some(i)) => {
            let was = me.events[i].registered;
            me.events[i] = ShadowEvent::default();
            ret(if running == Some(i) {
                abi::PENDING
            } else if was {
                0
            } else {
                abi::DENIED
            })
        }
        (abi::EVENT_STATUS, Some(i)) => ret(i64::from(me.events[i].registered)
            | i64::from(me.events[i].enabled) << 1
            | i64::from(running == Some(i)) << 2),
        (abi::EVENT_GET_INFO, Some(i)) => match a[1] as u32 {
            0 | 2 => ret(0),
            1 => ret(i64::from(i == 0)),
            _ => ret(abi::INVALID_PARAMETERS),
        },
        (abi::EVENT_CONTEXT, _) => match me.running {
            None => ret(abi::DENIED),
            Some((_, saved)) if (a[0] as u32) < 18 => ret(saved.x[a[0] as u32 as usize] as i64),
            Some(_) => ret(abi::INVALID_PARAMETERS),
        },
        (abi::EVENT_COMPLETE, _) => match me.running.take() {
            None => ret(abi::DENIED),
            Some((i, saved)) => SdeiAnswer::Complete { event: SHADOW_NUMBERS[i], status: a[0], restore: saved },
        },
        (abi::EVENT_COMPLETE_AND_RESUME, _) => match me.running {
            Some((i, saved)) if a[0].is_multiple_of(4) => {
                me.running = None;
                SdeiAnswer::CompleteAndResume {
                    event: SHADOW_NUMBERS[i],
                    restore: saved,
                    resume: Resume { pc: a[0], pstate: 0x3c5, elr_el1: saved.pc, spsr_el1: saved.pstate },
                }
            }
            _ => ret(abi::DENIED),
        },
        (abi::PE_MASK, _) => {
            let changed = !me.masked;
            me.masked = true;
            ret(i64::from(changed))
        }
        (abi::PE_UNMASK, _) => {
            me.masked = false;
            ret(0)
        }
        (abi::INTERRUPT_BIND, _) => {
            ret(if (16..1020).contains(&(a[0] as u32)) { abi::OUT_OF_RESOURCE } else { abi::INVALID_PARAMETERS })
        }
        (abi::EVENT_SIGNAL, _) => {
            let affinity = a[1] & 0xff_00ff_ffff;
            if a[0] as u32 == 0 && affinity < vcpus {
                SdeiAnswer::Signal { target: affinity as usize }
            } else {
                ret(abi::INVALID_PARAMETERS)
            }
        }
        (abi::FEATURES, _) => ret(if (a[0] as u32) < 2 { 0 } else { abi::INVALID_PARAMETERS }),
        (abi::PRIVATE_RESET, _) => {
            me.events = [ShadowEvent::default(); 2];
            ret(if running.is_some() { abi::DENIED } else { 0 })
        }
        (abi::SHARED_RESET, _) => ret(0),
        (
            abi::EVENT_REGISTER
            | abi::EVENT_ENABLE
            | abi::EVENT_DISABLE
            | abi::EVENT_UNREGISTER
            | abi::EVENT_STATUS
            | abi::EVENT_GET_INFO
            | abi::EVENT_ROUTING_SET
            | abi::INTERRUPT_RELEASE,
            _,
        ) => ret(abi::INVALID_PARAMETERS),
        _ => ret(abi::NOT_SUPPORTED),
    }
}

fn shadow_dispatch(shadow: &mut ShadowVcpu, event: u32, interrupted: Context) -> Result<Entry, Refusal> {
    let i = shadow_index(event).ok_or(Refusal::UnknownEvent)?;
    let e = shadow.events[i];
    if !e.registered {
        Err(Refusal::NotRegistered)
    } else if !e.enabled {
        Err(Refusal::NotEnabled)
    } else if shadow.masked {
        Err(Refusal::Masked)
    } else if shadow.running.is_some() {
        Err(Refusal::Running)
    } else {
        shadow.running = Some((i, interrupted));
        Ok(Entry { pc: e.entry, x: [event.into(), e.argument, interrupted.pc, interrupted.pstate], pstate: 0x3c5 })
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Call { vcpu: usize, function: u32, args: [u64; 5] },
    Dispatch { vcpu: usize, event: u32, seed: u64 },
    Reset { vcpu: usize },
}

/// What a run reached, to show that the properties do not hold vacuously.
#[derive(Debug, Default)]
struct Reached {
    dispatched: u64,
    refused: [u64; 5],
    completed: u64,
    resumed: u64,
    pending: u64,
    denied: u64,
    invalid: u64,
    context_read: u64,
    signalled: u64,
    reset_denied: u64,
}

const ALL_FUNCTIONS: [u32; 19] = [
    abi::VERSION,
    abi::EVENT_REGISTER,
    abi::EVENT_ENABLE,
    abi::EVENT_DISABLE,
    abi::EVENT_CONTEXT,
    abi::EVENT_COMPLETE,
    abi::EVENT_COMPLETE_AND_RESUME,
    abi::EVENT_UNREGISTER,
    abi::EVENT_STATUS,
    abi::EVENT_GET_INFO,
    abi::EVENT_ROUTING_SET,
    abi::PE_MASK,
    abi::PE_UNMASK,
    abi::INTERRUPT_BIND,
    abi::INTERRUPT_RELEASE,
    abi::EVENT_SIGNAL,
    abi::FEATURES,
    abi::PRIVATE_RESET,
    abi::SHARED_RESET,
];

/// Functions a well-behaved client calls, weighted towards the ones that build up state
/// (register, enable, unmask, then complete a handler) over the ones that undo it.
const CLIENT_FUNCTIONS: [u32; 29] = [
    abi::EVENT_REGISTER,
    abi::EVENT_REGISTER,
    abi::EVENT_REGISTER,
    abi::EVENT_REGISTER,
    abi::EVENT_ENABLE,
    abi::EVENT_ENABLE,
    abi::EVENT_ENABLE,
    abi::EVENT_ENABLE,
    abi::PE_UNMASK,
    abi::PE_UNMASK,
    abi::PE_UNMASK,
    abi::EVENT_COMPLETE,
    abi::EVENT_COMPLETE,
    abi::EVENT_COMPLETE,
    abi::EVENT_COMPLETE_AND_RESUME,
    abi::EVENT_COMPLETE_AND_RESUME,
    abi::EVENT_CONTEXT,
    abi::EVENT_CONTEXT,
    abi::EVENT_CONTEXT,
    abi::EVENT_UNREGISTER,
    abi::EVENT_DISABLE,
    abi::EVENT_STATUS,
    abi::EVENT_GET_INFO,
    abi::PE_MASK,
    abi::PRIVATE_RESET,
    abi::EVENT_SIGNAL,
    abi::FEATURES,
    abi::INTERRUPT_BIND,
    abi::VERSION,
];

/// Mostly sensible arguments for `function`, with a few wrong ones mixed in.
fn client_args(function: u32, r: [u64; 5]) -> [u64; 5] {
    let event = |r: u64| match r % 8 {
        0..=3 => u64::from(PNP),
        4..=6 => 0,
        _ => r >> 3,
    };
    let address = |r: u64| if r.is_multiple_of(8) { r | 2 } else { r & !3 };
    match function {
        abi::EVENT_REGISTER => [event(r[0]), address(r[1]), r[2], r[3] % 3, r[4]],
        abi::EVENT_CONTEXT => [r[0] % 20, 0, 0, 0, 0],
        abi::EVENT_COMPLETE => [r[0] % 2, 0, 0, 0, 0],
        abi::EVENT_COMPLETE_AND_RESUME => [address(r[0]), 0, 0, 0, 0],
        abi::EVENT_GET_INFO => [event(r[0]), r[1] % 6, 0, 0, 0],
        abi::EVENT_SIGNAL => [u64::from(r[0].is_multiple_of(4)), r[1] % 6, 0, 0, 0],
        abi::FEATURES => [r[0] % 3, 0, 0, 0, 0],
        abi::INTERRUPT_BIND => [r[0] % 1100, 0, 0, 0, 0],
        _ => [event(r[0]), r[1], r[2], r[3], r[4]],
    }
}

/// A vCPU index, vCPU 0 more often than the others so that its state builds up (registered,
/// enabled, unmasked, running) despite the calls that undo it.
fn vcpu(vcpus: usize) -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(0), 1 => 0..vcpus]
}

fn op(vcpus: usize) -> impl Strategy<Value = Op> {
    let client = (vcpu(vcpus), prop::sample::select(CLIENT_FUNCTIONS.to_vec()), any::<[u64; 5]>())
        .prop_map(|(vcpu, function, r)| Op::Call { vcpu, function, args: client_args(function, r) });
    let wild = (
        vcpu(vcpus),
        prop_oneof![prop::sample::select(ALL_FUNCTIONS.to_vec()), 0xC400_0020..=0xC400_003Fu32, any::<u32>()],
        any::<[u64; 5]>(),
    )
        .prop_map(|(vcpu, function, args)| Op::Call { vcpu, function, args });
    let dispatch = (vcpu(vcpus), prop_oneof![4 => Just(PNP), 3 => Just(0u32), 1 => any::<u32>()], any::<u64>())
        .prop_map(|(vcpu, event, seed)| Op::Dispatch { vcpu, event, seed });
    // Resets are rare: they undo everything a client did on that vCPU.
    prop_oneof![
        40 => client,
        6 => wild,
        24 => dispatch,
        1 => (0..vcpus).prop_map(|vcpu| Op::Reset { vcpu }),
    ]
}

fn run_strategy() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1..=4usize).prop_flat_map(|vcpus| (Just(vcpus), prop::collection::vec(op(vcpus), 1..400)))
}

/// Run `ops` on `vcpus` vCPUs, checking every answer against the shadow and the invariants.
fn run(vcpus: usize, ops: &[Op]) -> Reached {
    let mut sdei = Sdei::new(vcpus);
    let mut shadow = vec![ShadowVcpu::RESET; vcpus];
    let guest = Guest { vcpus };
    let mut reached = Reached::default();
    let mut expected_counters = Counters::default();
    for (step, &op) in ops.iter().enumerate() {
        match op {
            Op::Call { vcpu, function, args } => {
                let running_before = shadow[vcpu].running;
                let answer = sdei.call(vcpu, function, args, &guest);
                let expected = shadow_call(&mut shadow, vcpu, function, args);
                assert_eq!(answer, expected, "step {step}: {op:?}");
                expected_counters.calls += 1;
                match answer {
                    SdeiAnswer::Complete { restore, .. } | SdeiAnswer::CompleteAndResume { restore, .. } => {
                        // Completion restores exactly what was saved at dispatch.
                        assert_eq!(Some(restore), running_before.map(|(_, c)| c), "step {step}");
                        if matches!(answer, SdeiAnswer::Complete { .. }) {
                            expected_counters.completes += 1;
                            reached.completed += 1;
                        } else {
                            expected_counters.resumes += 1;
                            reached.resumed += 1;
                        }
                    }
                    SdeiAnswer::Signal { .. } => {
                        expected_counters.signals += 1;
                        reached.signalled += 1;
                    }
                    SdeiAnswer::Return([Some(x0), ..]) => {
                        let code = x0 as i64;
                        // EVENT_CONTEXT returns register values, which may look like error
                        // codes; every other implemented function's results are non-negative.
                        let error = if function == abi::EVENT_CONTEXT {
                            running_before.is_none() || args[0] as u32 >= 18
                        } else {
                            code < 0
                        };
                        if !ALL_FUNCTIONS.contains(&function) {
                            assert_eq!(code, abi::NOT_SUPPORTED);
                            expected_counters.not_supported += 1;
                        } else if error {
                            expected_counters.errors += 1;
                            reached.pending += u64::from(code == abi::PENDING);
                            reached.denied += u64::from(code == abi::DENIED);
                            reached.invalid += u64::from(code == abi::INVALID_PARAMETERS);
                            reached.reset_denied += u64::from(function == abi::PRIVATE_RESET);
                        } else if function == abi::EVENT_CONTEXT {
                            reached.context_read += 1;
                        }
                    }
                    SdeiAnswer::Return(other) => panic!("step {step}: x0 not written: {other:?}"),
                }
            }
            Op::Dispatch { vcpu, event, seed } => {
                let interrupted = context(seed);
                let before = shadow[vcpu];
                let result = sdei.dispatch(vcpu, event, interrupted);
                assert_eq!(result, shadow_dispatch(&mut shadow[vcpu], event, interrupted), "step {step}: {op:?}");
                match result {
                    Ok(entry) => {
                        // A dispatch happens only when registered, enabled, unmasked and idle.
                        let i = shadow_index(event).expect("dispatched an unknown event");
                        assert!(before.events[i].registered && before.events[i].enabled, "step {step}");
                        assert!(!before.masked && before.running.is_none(), "step {step}");
                        assert_eq!(entry.x[2..], [interrupted.pc, interrupted.pstate]);
                        expected_counters.dispatches += 1;
                        reached.dispatched += 1;
                    }
                    Err(refusal) => {
                        expected_counters.refusals += 1;
                        reached.refused[refusal as usize] += 1;
                    }
                }
            }
            Op::Reset { vcpu } => {
                sdei.reset_vcpu(vcpu);
                shadow[vcpu] = ShadowVcpu::RESET;
            }
        }
        for (vcpu, s) in shadow.iter().enumerate() {
            assert_eq!(sdei.is_masked(vcpu), s.masked, "step {step}, vCPU {vcpu}");
            assert_eq!(sdei.running_event(vcpu), s.running.map(|(i, _)| SHADOW_NUMBERS[i]), "step {step}");
            for (i, e) in s.events.iter().enumerate() {
                let status = sdei.status(vcpu, SHADOW_NUMBERS[i]).unwrap();
                let running = s.running.is_some_and(|(r, _)| r == i);
                assert_eq!(
                    status,
                    EventStatus { registered: e.registered, enabled: e.enabled, running },
                    "step {step}, vCPU {vcpu}"
                );
                assert!(!status.enabled || status.registered, "enabled only while registered");
            }
        }
    }
    assert_eq!(*sdei.counters(), expected_counters);
    reached
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random calls with arbitrary arguments, dispatches and resets on 1 to 4 vCPUs: every
    /// answer matches the shadow model, nothing panics, a dispatch happens only when the event
    /// is registered and enabled and the vCPU unmasked and idle, and every completion restores
    /// exactly the context saved at dispatch.
    #[test]
    fn random_runs_match_the_shadow((vcpus, ops) in run_strategy()) {
        run(vcpus, &ops);
    }

    /// No argument values make any call panic, in any state a handler may be in.
    #[test]
    fn any_call_in_a_handler_is_answered(function in any::<u32>(), args in any::<[u64; 5]>(), pending in any::<bool>()) {
        let mut s = Sdei::new(2);
        ready(&mut s, 0, PNP);
        s.dispatch(0, PNP, context(5)).unwrap();
        if pending {
            prop_assert_eq!(x0_of(&mut s, 0, abi::EVENT_UNREGISTER, &[PNP.into()]), abi::PENDING);
        }
        let answer = s.call(0, function, args, &Guest { vcpus: 2 });
        if !is_sdei_function(function) {
            prop_assert_eq!(answer, ret(abi::NOT_SUPPORTED));
        }
        if let SdeiAnswer::Complete { restore, .. } | SdeiAnswer::CompleteAndResume { restore, .. } = answer {
            prop_assert_eq!(restore, context(5));
        }
    }
}

/// The random runs reach every path: a fixed-seed sample whose summed counts must show every
/// kind of outcome (otherwise the properties above could hold vacuously).
#[test]
fn random_runs_reach_every_path() {
    let mut runner = TestRunner::deterministic();
    let mut total = Reached::default();
    for _ in 0..64 {
        let (vcpus, ops) = run_strategy().new_tree(&mut runner).unwrap().current();
        let r = run(vcpus, &ops);
        total.dispatched += r.dispatched;
        total.completed += r.completed;
        total.resumed += r.resumed;
        total.pending += r.pending;
        total.denied += r.denied;
        total.invalid += r.invalid;
        total.context_read += r.context_read;
        total.signalled += r.signalled;
        total.reset_denied += r.reset_denied;
        for (t, n) in total.refused.iter_mut().zip(r.refused) {
            *t += n;
        }
    }
    assert!(total.dispatched > 0, "{total:?}");
    assert!(total.refused.iter().all(|&n| n > 0), "every refusal: {total:?}");
    assert!(total.completed > 0 && total.resumed > 0, "{total:?}");
    assert!(total.pending > 0 && total.reset_denied > 0, "{total:?}");
    assert!(total.denied > 0 && total.invalid > 0, "{total:?}");
    assert!(total.context_read > 0 && total.signalled > 0, "{total:?}");
}
