//! The token slots: each transition on its own, the waiter ids, and a model of the
//! hypervisor's use of them ([`model`]): vCPUs that fault, a pager whose engine waits for the
//! faults that block and completes them in any order, deliveries, declines, and sessions that
//! end (APF_DISABLE, CPU_OFF) and begin again.

use super::*;
use crate::apf::tests::TestMemory;
use crate::apf::{drain, validate_enable, ApfVcpu, DispatchInputs, Layout, Record, TokenError};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::vec::Vec;

fn token(raw: u64) -> Token {
    Token::from_raw(raw).unwrap()
}

#[test]
fn reserve_hands_out_the_lowest_free_slot_until_none_is_left() {
    let mut slots = TokenSlots::new();
    for i in 0..SLOTS_PER_VCPU {
        assert_eq!(slots.reserve(), Some(i));
        assert_eq!(slots.get(i), Slot::Reserved);
    }
    assert_eq!(slots.busy(), SLOTS_PER_VCPU);
    assert_eq!(slots.reserve(), None);
    slots.release(5);
    assert_eq!(slots.reserve(), Some(5));
}

#[test]
fn release_frees_a_reserved_slot() {
    let mut slots = TokenSlots::new();
    let slot = slots.reserve().unwrap();
    slots.release(slot);
    assert_eq!(slots.get(slot), Slot::Free);
    assert_eq!(slots.busy(), 0);
}

#[test]
fn completion_after_delivery_hands_back_the_token_and_frees_the_slot() {
    let mut slots = TokenSlots::new();
    let slot = slots.reserve().unwrap();
    assert!(!slots.take_ready(slot));
    slots.deliver(slot, token(0x1_0003));
    assert_eq!(slots.get(slot), Slot::InFlight(token(0x1_0003)));
    assert_eq!(slots.complete(slot), Completion::Token(token(0x1_0003)));
    assert_eq!(slots.get(slot), Slot::Free);
}

#[test]
fn completion_before_delivery_makes_the_slot_ready_and_the_delivery_finds_the_page_back() {
    let mut slots = TokenSlots::new();
    let slot = slots.reserve().unwrap();
    assert_eq!(slots.complete(slot), Completion::Early);
    assert_eq!(slots.get(slot), Slot::Ready);
    // Not free yet: the vCPU still has to look.
    assert_eq!(slots.reserve(), Some(slot + 1));
    assert!(slots.take_ready(slot));
    assert_eq!(slots.get(slot), Slot::Free);
}

#[test]
fn an_orphan_is_freed_by_its_completion_without_a_token() {
    let mut slots = TokenSlots::new();
    let slot = slots.reserve().unwrap();
    slots.orphan(slot);
    assert_eq!(slots.get(slot), Slot::Orphan);
    assert_eq!(slots.reserve(), Some(slot + 1));
    assert_eq!(slots.complete(slot), Completion::Nothing);
    assert_eq!(slots.get(slot), Slot::Free);
}

#[test]
fn a_completion_for_a_free_slot_hands_back_nothing() {
    let mut slots = TokenSlots::new();
    assert_eq!(slots.complete(3), Completion::Nothing);
    assert_eq!(slots.get(3), Slot::Free);
}

#[test]
fn waiter_ids_follow_the_vcpus_own() {
    let ids = WaiterIds::new(4);
    assert_eq!(ids.count(), 4 * 17);
    assert_eq!(ids.slot(0, 0), 4);
    assert_eq!(ids.slot(1, 0), 4 + 16);
    assert_eq!(ids.slot(3, 15), 4 * 17 - 1);
    assert_eq!(ids.decode(2), Some(WaiterOf::Vcpu(2)));
    assert_eq!(ids.decode(4 + 16 + 7), Some(WaiterOf::Slot { vcpu: 1, slot: 7 }));
    assert_eq!(ids.decode(4 * 17), None);
    assert_eq!(ids.decode(u32::MAX), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn waiter_ids_round_trip(vcpus in 1usize..=512, vcpu in 0usize..512, slot in 0..SLOTS_PER_VCPU, other in any::<u32>()) {
        let ids = WaiterIds::new(vcpus);
        let vcpu = vcpu % vcpus;
        let id = ids.slot(vcpu, slot);
        prop_assert!(id >= vcpus as u32 && id < ids.count());
        prop_assert_eq!(ids.decode(id), Some(WaiterOf::Slot { vcpu, slot }));
        prop_assert_eq!(ids.decode(vcpu as u32), Some(WaiterOf::Vcpu(vcpu)));
        match ids.decode(other) {
            None => prop_assert!(other >= ids.count()),
            Some(WaiterOf::Vcpu(v)) => prop_assert!(other == v as u32 && v < vcpus),
            Some(WaiterOf::Slot { vcpu, slot }) => prop_assert_eq!(ids.slot(vcpu, slot), other),
        }
    }
}

/// The model: the hypervisor's `Apf` (hypervisor/src/apf.rs) over [`TokenSlots`] and
/// [`ApfVcpu`], driven as the hypervisor drives it, against a reference of what each slot must
/// be. After every step: the slots are the reference's, no waiter id is waited for twice by the
/// engine, and a completion hands a token back only from an InFlight slot, and it is posted
/// only if its token is live in the vCPU's current session. At the end every vCPU finishes
/// what it does, the engine completes everything: every slot is free, and freed exactly as
/// often as it was reserved.
mod model {
    use super::*;

    const RAM: core::ops::Range<u64> = 0x4000_0000..0x4100_0000;

    #[derive(Clone, Copy, Debug)]
    pub(super) enum Op {
        /// A stage-2 fault of vCPU `v` (when it runs guest code): `Apf::prepare`.
        Prepare {
            v: usize,
        },
        /// The pager answers the prepared fault: it blocks (the engine waits with its waiter
        /// id) or it does not (`Apf::release`).
        Pager {
            v: usize,
            blocks: bool,
        },
        /// `Apf::deliver` for the blocked fault: delivered, refused by `ApfVcpu::start`
        /// (`start_refuses`), or refused by the SDEI dispatcher after `start` (declined).
        Deliver {
            v: usize,
            start_refuses: bool,
            sdei_refuses: bool,
        },
        /// The guest's handler answers (`Apf::handler_done`).
        Answer {
            v: usize,
            accept: bool,
        },
        /// The engine completes the waiter number `pick` among those it waits for
        /// (`Apf::completed`).
        Complete {
            pick: usize,
        },
        /// The guest drains its ring and the host flushes its backlog.
        Drain {
            v: usize,
        },
        /// APF_DISABLE, CPU_OFF, APF_ENABLE of vCPU `v`.
        Disable {
            v: usize,
        },
        PowerOff {
            v: usize,
        },
        Enable {
            v: usize,
        },
    }

    /// What a vCPU is doing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Phase {
        /// Runs guest code.
        Running,
        /// Its fault holds a reserved slot; the pager has not answered.
        Prepared(usize),
        /// Its fault blocked; not delivered yet.
        Blocked(usize),
        /// Its handler runs for this token.
        Delivering(Token),
    }

    /// What a slot must be.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Ref {
        Free,
        Reserved,
        Ready,
        InFlight(Token),
        Orphan,
    }

    struct Vcpu {
        slots: TokenSlots,
        apf: ApfVcpu,
        mem: TestMemory,
        record: Record,
        phase: Phase,
        reference: [Ref; SLOTS_PER_VCPU],
        reserved: [u64; SLOTS_PER_VCPU],
        freed: [u64; SLOTS_PER_VCPU],
        /// Tokens of the current session that were not declined (their completions may post).
        live: BTreeSet<Token>,
    }

    pub(super) struct Model {
        ids: WaiterIds,
        vcpus: Vec<Vcpu>,
        /// Waiter ids the engine waits for (in the order it took them).
        engine: Vec<u32>,
        /// Completions that handed back a token, and those that posted page_ready or held it.
        pub tokens_back: u64,
        pub early: u64,
    }

    fn inputs(sdei_ready: bool) -> DispatchInputs {
        DispatchInputs {
            sdei_ready,
            from_el0: true,
            irqs_masked: false,
            page_unreadable: false,
            cheaper_to_wait: false,
        }
    }

    impl Model {
        pub(super) fn new(vcpus: usize) -> Self {
            let layout = Layout::new(64).unwrap();
            let ids = WaiterIds::new(vcpus);
            let vcpus = (0..vcpus)
                .map(|v| {
                    let record = validate_enable(RAM.start + 0x1000 * v as u64, 0, layout, RAM).unwrap();
                    let mut mem = TestMemory::new(layout);
                    let mut apf = ApfVcpu::new(v as u16, SLOTS_PER_VCPU).unwrap();
                    apf.enable(record, &mut mem.host());
                    Vcpu {
                        slots: TokenSlots::new(),
                        apf,
                        mem,
                        record,
                        phase: Phase::Running,
                        reference: [Ref::Free; SLOTS_PER_VCPU],
                        reserved: [0; SLOTS_PER_VCPU],
                        freed: [0; SLOTS_PER_VCPU],
                        live: BTreeSet::new(),
                    }
                })
                .collect();
            Model { ids, vcpus, engine: Vec::new(), tokens_back: 0, early: 0 }
        }

        fn free(&mut self, v: usize, slot: usize) {
            let vcpu = &mut self.vcpus[v];
            vcpu.reference[slot] = Ref::Free;
            vcpu.freed[slot] += 1;
            assert_eq!(vcpu.freed[slot], vcpu.reserved[slot], "slot {slot} of vCPU {v} freed twice");
        }

        pub(super) fn step(&mut self, op: Op) {
            let n = self.vcpus.len();
            match op {
                Op::Prepare { v } => {
                    let vcpu = &mut self.vcpus[v % n];
                    if vcpu.phase != Phase::Running
                        || !vcpu.apf.is_enabled()
                        || vcpu.apf.may_dispatch(inputs(true)).is_err()
                    {
                        return;
                    }
                    let expected = vcpu.reference.iter().position(|&r| r == Ref::Free);
                    let got = vcpu.slots.reserve();
                    assert_eq!(got, expected, "reserve must hand out the lowest free slot");
                    if let Some(slot) = got {
                        vcpu.reference[slot] = Ref::Reserved;
                        vcpu.reserved[slot] += 1;
                        vcpu.phase = Phase::Prepared(slot);
                        let id = self.ids.slot(v % n, slot);
                        assert_eq!(self.ids.decode(id), Some(WaiterOf::Slot { vcpu: v % n, slot }));
                    }
                }
                Op::Pager { v, blocks } => {
                    let Phase::Prepared(slot) = self.vcpus[v % n].phase else { return };
                    if blocks {
                        let id = self.ids.slot(v % n, slot);
                        assert!(!self.engine.contains(&id), "waiter {id} handed out twice");
                        self.engine.push(id);
                        self.vcpus[v % n].phase = Phase::Blocked(slot);
                    } else {
                        self.vcpus[v % n].slots.release(slot);
                        self.free(v % n, slot);
                        self.vcpus[v % n].phase = Phase::Running;
                    }
                }
                Op::Deliver { v, start_refuses, sdei_refuses } => {
                    let Phase::Blocked(slot) = self.vcpus[v % n].phase else { return };
                    let vcpu = &mut self.vcpus[v % n];
                    vcpu.phase = Phase::Running;
                    if vcpu.slots.take_ready(slot) {
                        assert_eq!(vcpu.reference[slot], Ref::Ready);
                        self.free(v % n, slot);
                        return;
                    }
                    assert_eq!(vcpu.reference[slot], Ref::Reserved);
                    let Vcpu { apf, mem, .. } = vcpu;
                    match apf.start(inputs(!start_refuses), 0x1000, &mut mem.host()) {
                        Err(_) => {
                            assert!(start_refuses);
                            vcpu.slots.orphan(slot);
                            vcpu.reference[slot] = Ref::Orphan;
                        }
                        Ok(token) if sdei_refuses => {
                            apf.decline(token).unwrap();
                            vcpu.slots.orphan(slot);
                            vcpu.reference[slot] = Ref::Orphan;
                        }
                        Ok(token) => {
                            vcpu.slots.deliver(slot, token);
                            vcpu.reference[slot] = Ref::InFlight(token);
                            vcpu.live.insert(token);
                            vcpu.phase = Phase::Delivering(token);
                        }
                    }
                }
                Op::Answer { v, accept } => {
                    let vcpu = &mut self.vcpus[v % n];
                    let Phase::Delivering(token) = vcpu.phase else { return };
                    vcpu.phase = Phase::Running;
                    if accept {
                        vcpu.apf.accept(token, &mut vcpu.mem.host()).unwrap();
                    } else {
                        vcpu.apf.decline(token).unwrap();
                        vcpu.live.remove(&token);
                    }
                }
                Op::Complete { pick } => {
                    if self.engine.is_empty() {
                        return;
                    }
                    let id = self.engine.remove(pick % self.engine.len());
                    self.complete(id);
                }
                Op::Drain { v } => {
                    let vcpu = &mut self.vcpus[v % n];
                    let layout = vcpu.mem.layout;
                    let _ = drain(layout, &mut vcpu.mem.guest(), |_| {});
                    vcpu.apf.flush_backlog(&mut vcpu.mem.host());
                }
                Op::Disable { v } | Op::PowerOff { v } | Op::Enable { v } => {
                    let vcpu = &mut self.vcpus[v % n];
                    // The vCPU's own call: it runs guest code, or its handler does.
                    if !matches!(vcpu.phase, Phase::Running | Phase::Delivering(_)) {
                        return;
                    }
                    let before = vcpu.slots.clone();
                    match op {
                        Op::Disable { .. } => {
                            vcpu.apf.disable(&mut vcpu.mem.host());
                        }
                        Op::PowerOff { .. } => {
                            vcpu.apf.power_off(&mut vcpu.mem.host());
                        }
                        _ => {
                            // A new record at the guest's tail, as a guest would give.
                            let tail = vcpu.mem.tail();
                            vcpu.mem = TestMemory::new(vcpu.mem.layout);
                            vcpu.mem.set(vcpu.mem.layout.ring_tail(), tail);
                            vcpu.apf.enable(vcpu.record, &mut vcpu.mem.host());
                        }
                    }
                    // Sessions leave the slots alone: their completions still come.
                    assert_eq!(vcpu.slots, before);
                    vcpu.live.clear();
                    vcpu.phase = Phase::Running;
                }
            }
        }

        /// `Apf::completed(id)`.
        fn complete(&mut self, id: u32) {
            let Some(WaiterOf::Slot { vcpu: v, slot }) = self.ids.decode(id) else {
                panic!("the engine waited for {id}, not a slot's id");
            };
            let vcpu = &mut self.vcpus[v];
            let completion = vcpu.slots.complete(slot);
            match (vcpu.reference[slot], completion) {
                (Ref::Reserved, Completion::Early) => {
                    vcpu.reference[slot] = Ref::Ready;
                    self.early += 1;
                }
                (Ref::InFlight(expected), Completion::Token(token)) => {
                    assert_eq!(token, expected);
                    self.tokens_back += 1;
                    let live = vcpu.live.remove(&token);
                    match vcpu.apf.complete(token, &mut vcpu.mem.host()) {
                        Ok(_) => assert!(live, "{token} of an ended session or declined was posted"),
                        Err(TokenError::Unknown(_)) => assert!(!live, "{token} is live but unknown"),
                        Err(e) => panic!("{e:?}"),
                    }
                    self.free(v, slot);
                }
                (Ref::Orphan, Completion::Nothing) => self.free(v, slot),
                (reference, completion) => {
                    panic!("slot {slot} of vCPU {v}: {reference:?} completed as {completion:?}")
                }
            }
        }

        /// Every vCPU finishes its fault, the engine completes everything.
        pub(super) fn settle(&mut self) {
            for _ in 0..4 {
                for v in 0..self.vcpus.len() {
                    self.step(Op::Pager { v, blocks: true });
                    self.step(Op::Deliver { v, start_refuses: false, sdei_refuses: false });
                    self.step(Op::Answer { v, accept: true });
                }
                while let Some(id) = self.engine.pop() {
                    self.complete(id);
                }
            }
            for (v, vcpu) in self.vcpus.iter().enumerate() {
                assert_eq!(vcpu.phase, Phase::Running);
                assert_eq!(vcpu.slots.busy(), 0, "vCPU {v}: {:?}", vcpu.slots);
                assert!(vcpu.reference.iter().all(|&r| r == Ref::Free));
                assert_eq!(vcpu.reserved, vcpu.freed, "vCPU {v}: every reserved slot freed exactly once");
            }
        }

        pub(super) fn reserved(&self) -> u64 {
            self.vcpus.iter().flat_map(|v| v.reserved).sum()
        }
    }

    pub(super) fn op() -> impl Strategy<Value = Op> {
        let v = 0usize..8;
        prop_oneof![
            6 => v.clone().prop_map(|v| Op::Prepare { v }),
            6 => (v.clone(), prop::bool::weighted(0.7)).prop_map(|(v, blocks)| Op::Pager { v, blocks }),
            5 => (v.clone(), prop::bool::weighted(0.1), prop::bool::weighted(0.05))
                .prop_map(|(v, start_refuses, sdei_refuses)| Op::Deliver { v, start_refuses, sdei_refuses }),
            4 => (v.clone(), prop::bool::weighted(0.85)).prop_map(|(v, accept)| Op::Answer { v, accept }),
            6 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
            2 => v.clone().prop_map(|v| Op::Drain { v }),
            1 => v.clone().prop_map(|v| Op::Disable { v }),
            1 => v.clone().prop_map(|v| Op::PowerOff { v }),
            1 => v.prop_map(|v| Op::Enable { v }),
        ]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn token_slots_model(vcpus in 1usize..=4, ops in prop::collection::vec(model::op(), 0..300)) {
        let mut m = model::Model::new(vcpus);
        for op in ops {
            m.step(op);
        }
        m.settle();
    }
}

/// The model reaches every transition: completions before and after delivery, orphans.
#[test]
fn token_slots_model_reaches_every_path() {
    use model::Op::*;
    let mut m = model::Model::new(1);
    for op in [
        Prepare { v: 0 },
        Pager { v: 0, blocks: true },
        Complete { pick: 0 },
        Deliver { v: 0, start_refuses: false, sdei_refuses: false },
        Prepare { v: 0 },
        Pager { v: 0, blocks: true },
        Deliver { v: 0, start_refuses: false, sdei_refuses: false },
        Answer { v: 0, accept: true },
        Prepare { v: 0 },
        Pager { v: 0, blocks: true },
        Deliver { v: 0, start_refuses: true, sdei_refuses: false },
        Complete { pick: 0 },
        Complete { pick: 0 },
        Prepare { v: 0 },
        Pager { v: 0, blocks: true },
        Deliver { v: 0, start_refuses: false, sdei_refuses: false },
        PowerOff { v: 0 },
        Complete { pick: 0 },
        Enable { v: 0 },
    ] {
        m.step(op);
    }
    assert_eq!((m.early, m.tokens_back, m.reserved()), (1, 2, 4));
    m.settle();
}
