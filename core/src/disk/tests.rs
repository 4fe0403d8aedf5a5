//! The request table against a naive reference (a `Vec` of the outstanding requests, scanned
//! in full for every question), driven as the hypervisor's driver drives it: submissions, a
//! device with a queue of 16 descriptors that finishes requests in any order and reuses its
//! tokens, refusals at once, and reports at model times that only go forward, in order mode
//! (virtual time) and not.

use super::*;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const N: usize = 32;
const QUEUE_DEPTH: usize = 16;
type Table = RequestTable<u8, N>;

#[test]
fn a_request_goes_round() {
    let mut t = Table::new();
    assert_eq!(t.earliest_due(), None);
    let a = t.allocate(100).unwrap();
    let b = t.allocate(50).unwrap();
    assert_eq!((a, b), (0, 1));
    assert_eq!((t.in_flight(), t.queued(), t.at_device()), (2, 2, 0));
    assert_eq!(t.earliest_due(), Some(50));
    assert_eq!(t.next_queued(), Some(b));
    t.started(b, 7);
    assert_eq!(t.next_queued(), Some(a));
    t.started(a, 3);
    assert_eq!(t.next_queued(), None);
    assert_eq!((t.slot_of_token(7), t.slot_of_token(3), t.slot_of_token(4)), (Some(b), Some(a), None));
    assert_eq!(t.next_deadline(), None);
    t.finished(a, 1);
    assert_eq!(t.next_deadline(), Some(100));
    let mut out = Vec::new();
    // In order: b (deadline 50) is not finished, so a waits behind it.
    t.report_due(200, true, |i, r| out.push((i, r)));
    assert!(out.is_empty());
    t.report_due(200, false, |i, r| out.push((i, r)));
    assert_eq!(out, [(a, 1)]);
    assert_eq!(t.state(a), State::Free);
    assert_eq!(t.earliest_due(), Some(50));
    t.finished(b, 2);
    t.report_due(49, true, |i, r| out.push((i, r)));
    assert_eq!(out.len(), 1);
    t.report_due(50, true, |i, r| out.push((i, r)));
    assert_eq!(out, [(a, 1), (b, 2)]);
    assert_eq!((t.in_flight(), t.earliest_due()), (0, None));
}

#[test]
fn ties_go_by_slot_and_a_full_table_refuses() {
    let mut t = Table::new();
    for i in 0..N {
        assert_eq!(t.allocate(10), Some(i));
    }
    assert_eq!(t.allocate(10), None);
    t.unqueue(5);
    assert_eq!(t.in_flight(), N - 1);
    assert_eq!(t.next_queued(), Some(0));
    assert_eq!(t.allocate(10), Some(5));
    for token in 0..4 {
        let i = t.next_queued().unwrap();
        t.started(i, token);
        t.finished(i, token as u8);
    }
    let mut out = Vec::new();
    t.report_due(10, false, |i, r| out.push((i, r)));
    assert_eq!(out, [(0, 0), (1, 1), (2, 2), (3, 3)]);
}

/// What the reference knows of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ref {
    slot: usize,
    deadline: u64,
    state: State<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A submission with deadline `now + latency`.
    Submit { latency: u64 },
    /// The device refuses the queued request number `pick` at once (host time).
    Refuse { pick: usize },
    /// Queued requests go to the device while it has room, with token `token` if free.
    Start { token: u16 },
    /// The device finishes the request number `pick` at it.
    Finish { pick: usize, result: u8 },
    /// Model time moves on by `by`; the due requests are reported.
    Report { by: u64, in_order: bool },
    /// The hypervisor asks for the earliest deadline (and caches it).
    Earliest,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::sample::select(vec![0u64, 1, 5, 50, 100]).prop_map(|latency| Op::Submit { latency }),
        1 => any::<usize>().prop_map(|pick| Op::Refuse { pick }),
        4 => prop::sample::select(vec![0u16, 1, 2, 3, 7, 15, 63, 64, 200]).prop_map(|token| Op::Start { token }),
        5 => (any::<usize>(), any::<u8>()).prop_map(|(pick, result)| Op::Finish { pick, result }),
        4 => (0u64..60, any::<bool>()).prop_map(|(by, in_order)| Op::Report { by, in_order }),
        2 => Just(Op::Earliest),
    ]
}

struct Model {
    table: Table,
    reference: Vec<Ref>,
    now: u64,
    reported: usize,
}

impl Model {
    fn of(&self, state: fn(&State<u8>) -> bool) -> Vec<usize> {
        let mut v: Vec<usize> = self.reference.iter().filter(|r| state(&r.state)).map(|r| r.slot).collect();
        v.sort();
        v
    }

    fn find(&mut self, slot: usize) -> &mut Ref {
        self.reference.iter_mut().find(|r| r.slot == slot).unwrap()
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Submit { latency } => {
                let deadline = self.now + latency;
                let expected = (0..N).find(|s| self.reference.iter().all(|r| r.slot != *s));
                let got = self.table.allocate(deadline);
                assert_eq!(got, expected, "the lowest free slot");
                if let Some(slot) = got {
                    self.reference.push(Ref { slot, deadline, state: State::Queued });
                }
            }
            Op::Refuse { pick } => {
                let queued = self.of(|s| matches!(s, State::Queued));
                if let Some(&slot) = queued.get(pick % queued.len().max(1)) {
                    self.table.unqueue(slot);
                    self.reference.retain(|r| r.slot != slot);
                }
            }
            Op::Start { token } => {
                let at_device = self.of(|s| matches!(s, State::AtDevice { .. }));
                let taken = self.reference.iter().any(|r| r.state == State::AtDevice { token });
                if at_device.len() >= QUEUE_DEPTH || taken {
                    return;
                }
                let expected = self
                    .reference
                    .iter()
                    .filter(|r| r.state == State::Queued)
                    .min_by_key(|r| (r.deadline, r.slot))
                    .map(|r| r.slot);
                assert_eq!(self.table.next_queued(), expected, "earliest deadline first, ties by slot");
                if let Some(slot) = expected {
                    self.table.started(slot, token);
                    self.find(slot).state = State::AtDevice { token };
                }
            }
            Op::Finish { pick, result } => {
                let at_device = self.of(|s| matches!(s, State::AtDevice { .. }));
                if let Some(&slot) = at_device.get(pick % at_device.len().max(1)) {
                    let State::AtDevice { token } = self.find(slot).state else { unreachable!() };
                    assert_eq!(self.table.slot_of_token(token), Some(slot), "token {token}");
                    self.table.finished(slot, result);
                    self.find(slot).state = State::Held { result };
                }
            }
            Op::Report { by, in_order } => {
                self.now += by;
                let now = self.now;
                let mut due: Vec<Ref> = self
                    .reference
                    .iter()
                    .filter(|r| {
                        r.deadline <= now && if in_order { true } else { matches!(r.state, State::Held { .. }) }
                    })
                    .copied()
                    .collect();
                due.sort_by_key(|r| (r.deadline, r.slot));
                let expected: Vec<(usize, u8)> = due
                    .iter()
                    .map_while(|r| match r.state {
                        State::Held { result } => Some((r.slot, result)),
                        _ => None,
                    })
                    .collect();
                let mut got = Vec::new();
                self.table.report_due(now, in_order, |slot, result| got.push((slot, result)));
                assert_eq!(got, expected, "reported at {now} (in order: {in_order})");
                self.reference.retain(|r| !expected.iter().any(|&(slot, _)| slot == r.slot));
                self.reported += got.len();
            }
            Op::Earliest => {
                let expected = self.reference.iter().map(|r| r.deadline).min();
                assert_eq!(self.table.earliest_due(), expected);
            }
        }
        self.check();
    }

    fn check(&self) {
        let t = &self.table;
        let count = |f: fn(&State<u8>) -> bool| self.reference.iter().filter(|r| f(&r.state)).count();
        assert_eq!(t.in_flight(), self.reference.len());
        assert_eq!(t.queued(), count(|s| matches!(s, State::Queued)));
        assert_eq!(t.at_device(), count(|s| matches!(s, State::AtDevice { .. })));
        for slot in 0..N {
            match self.reference.iter().find(|r| r.slot == slot) {
                Some(r) => {
                    assert_eq!(t.state(slot), r.state, "slot {slot}");
                    assert_eq!(t.deadline(slot), r.deadline);
                }
                None => assert_eq!(t.state(slot), State::Free, "slot {slot}"),
            }
        }
        let held = self.reference.iter().filter(|r| matches!(r.state, State::Held { .. }));
        assert_eq!(t.next_deadline(), held.map(|r| r.deadline).min());
        let outstanding: Vec<(u64, bool)> = t.outstanding().collect();
        let mut expected: Vec<&Ref> = self.reference.iter().collect();
        expected.sort_by_key(|r| r.slot);
        let expected: Vec<(u64, bool)> =
            expected.iter().map(|r| (r.deadline, matches!(r.state, State::Held { .. }))).collect();
        assert_eq!(outstanding, expected);
        // The cached earliest deadline is the real one (asked on a clone: asking caches it).
        assert_eq!(t.clone().earliest_due(), self.reference.iter().map(|r| r.deadline).min());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn request_table_matches_the_reference(ops in prop::collection::vec(op(), 0..400)) {
        let mut m = Model { table: Table::new(), reference: Vec::new(), now: 0, reported: 0 };
        for op in ops {
            m.step(op);
        }
        // Drain: everything goes to the device, finishes, and is reported.
        for _ in 0..N {
            for token in 0..16 {
                m.step(Op::Start { token });
            }
            m.step(Op::Finish { pick: 0, result: 9 });
        }
        m.step(Op::Report { by: 1000, in_order: true });
        prop_assert_eq!(m.table.in_flight(), 0);
        prop_assert_eq!(m.table.earliest_due(), None);
    }
}
