//! Randomized runs of one vCPU's APF state (the producer) against the guest's consumer
//! ([`drain`]) over one record, interleaved at random: faults, handler answers, completions
//! in any order, consumer drains and stalls, backlog flushes, disables, power-offs, re-enables,
//! and a guest that writes garbage into `ring_tail`.
//!
//! The model mirrors what the host must write: every token released (completed after its
//! handler accepted) and every wake-all, in release order, minus the tokens a wake-all or a
//! new session dropped. After every step it checks:
//! * the host writes exactly that sequence into the ring, each entry once, and its backlog is
//!   exactly the part not written yet; it writes only host fields, inside the record (the
//!   test memory panics otherwise), and with the barriers in place ([`super::tests::HostView`]);
//! * the host never overwrites an entry the consumer has not consumed, and never has more
//!   than 64 entries unconsumed;
//! * tokens are never 0 or `TOKEN_WAKE_ALL` and never issued twice; tokens in flight never
//!   exceed the limit;
//! * the consumer sees every token in release order, exactly once, and only for a task that
//!   is parked on it (no duplicate or spurious wake-up); a wake-all comes only after a
//!   disable or power-off, after every token posted before it, and nothing is issued after it
//!   until the next session.
//!
//! A garbage `ring_tail` that the host can detect (ahead of the head, or more than 64 behind)
//! makes the ring unusable: the host posts nothing while it is there, reports it, and queues
//! completions (up to the limit); once the guest writes its real tail back, delivery goes on
//! and all of the above still holds. A garbage tail that looks plausible cannot be detected;
//! the hostile runs ([`hostile`]) write any value into any field of the record at any time,
//! and check only what the host guarantees then: no panic, writes only to host fields inside
//! the record, the exact posting sequence, a bounded backlog, and that everything is posted
//! once the guest makes room again.
//!
//! At the end of each run the guest repairs its tail, every page comes back and the consumer
//! drains until nothing is left: then no task may still be parked (no lost wake-up).

use super::tests::TestMemory;
use super::*;
use asyncpf_contract::apf::{FLAG_USER_ONLY, RING_ENTRIES, TOKEN_NONE, TOKEN_WAKE_ALL};
use proptest::prelude::*;
use std::collections::{BTreeSet, VecDeque};
use std::vec;
use std::vec::Vec;

/// Guest RAM of the runs.
const RAM: core::ops::Range<u64> = 0x4000_0000..0x4100_0000;
/// Steps allowed to settle at the end of a run.
const SETTLE_STEPS: usize = 1000;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A fault on the vCPU, with these dispatch inputs; refused faults are resolved
    /// synchronously (nothing to model).
    Fault { from_el0: bool, irqs_masked: bool, sdei_ready: bool, page_unreadable: bool },
    /// `faults` faults from EL0 in a row, each accepted at once, then every page fetched so
    /// far back: the common path, in bulk.
    Burst { faults: u8 },
    /// The handler of the page_not_present being delivered accepts or declines.
    Answer { accept: bool },
    /// The page of token number `pick` (modulo their count) among those whose page is not
    /// back yet is back; or, if `stale`, of a token declined or dropped (which must be
    /// refused).
    Complete { pick: usize, stale: bool },
    /// The consumer drains the ring (unless it stalls).
    Drain,
    /// The consumer does not drain for the next `steps` drains.
    Stall { steps: u8 },
    /// The hypervisor retries the backlog.
    Flush,
    /// The guest writes garbage into `ring_tail`: `ahead` of the head, or more than 64
    /// behind it, by `by`; in hostile runs, `by` itself, or `by` into any field (`field`).
    Garbage { ahead: bool, by: u64, field: u8 },
    /// The guest writes its real `ring_tail` back.
    Repair,
    /// `APF_DISABLE`.
    Disable,
    /// PSCI CPU_OFF: the session ends at once; a wake-all that does not fit is dropped.
    PowerOff,
    /// `APF_ENABLE` when disabled, or also when enabled if `renew`; at a fresh record whose
    /// `ring_tail` starts at `tail` if `fresh`.
    Enable { renew: bool, fresh: bool, tail: u64 },
}

struct Model {
    vcpu: ApfVcpu,
    mem: TestMemory,
    record: Record,
    /// Hostile guest: any value in any field; only the host's guarantees are checked.
    hostile: bool,
    enabled: bool,
    /// Every token ever issued.
    issued: BTreeSet<u64>,
    /// Tokens whose page is not back yet (outstanding).
    fetching: Vec<Token>,
    /// Tokens that were dropped or declined: their completions must be refused.
    stale: Vec<Token>,
    /// The token being delivered, and whether its page is back already.
    delivering: Option<(Token, bool)>,
    /// Tasks parked on a token (accepted, not woken).
    parked: BTreeSet<u64>,
    /// What the host must still write into the ring, in order (its backlog).
    host_expect: VecDeque<u64>,
    /// How many of `mem.host_entries` were checked already.
    host_checked: usize,
    /// What the consumer may see next, in order: tokens and wake-alls.
    guest_expect: VecDeque<u64>,
    /// Tokens the consumer saw.
    delivered: BTreeSet<u64>,
    /// The consumer's real `ring_tail` (while `ring_tail` holds garbage, what it will write
    /// back).
    consumed: u64,
    /// `ring_tail` holds garbage.
    garbage: bool,
    stall: u8,
    /// What the counters must say.
    tally: Counters,
    /// Entries the host wrote to earlier records (of earlier sessions).
    old_entries: u64,
    /// Garbage the guest wrote.
    garbage_writes: u64,
    /// [`ApfVcpu::take_ring_error`] gave an error in this session.
    error_reported: bool,
    /// [`Counters::ring_errors`] when this session began.
    session_errors_base: u64,
}

impl Model {
    fn new(limit: usize, granule: u64, user_only: bool, tail: u64, hostile: bool) -> Self {
        let layout = Layout::new(granule).unwrap();
        let flags = if user_only { FLAG_USER_ONLY } else { 0 };
        let record = validate_enable(RAM.start + 4 * granule, flags, layout, RAM).unwrap();
        let mut mem = TestMemory::new(layout);
        mem.set(layout.ring_tail(), tail);
        let mut vcpu = ApfVcpu::new(5, limit).unwrap();
        vcpu.enable(record, &mut mem.host());
        Model {
            vcpu,
            mem,
            record,
            hostile,
            enabled: true,
            issued: BTreeSet::new(),
            fetching: Vec::new(),
            stale: Vec::new(),
            delivering: None,
            parked: BTreeSet::new(),
            host_expect: VecDeque::new(),
            host_checked: 0,
            guest_expect: VecDeque::new(),
            delivered: BTreeSet::new(),
            consumed: tail,
            garbage: false,
            stall: 0,
            tally: Counters::default(),
            old_entries: 0,
            garbage_writes: 0,
            error_reported: false,
            session_errors_base: 0,
        }
    }

    fn layout(&self) -> Layout {
        self.mem.layout
    }

    /// The unconsumed entries: (position, token).
    fn unconsumed(&self) -> Vec<(u64, u64)> {
        let head = self.mem.head();
        let used = head.wrapping_sub(self.consumed);
        assert!(used <= RING_ENTRIES, "{used} entries unconsumed");
        (0..used)
            .map(|i| {
                let position = self.consumed.wrapping_add(i);
                (position, self.mem.get(self.layout().ring_entry(position)))
            })
            .collect()
    }

    /// A token became postable: the host must write it after everything before it.
    fn release(&mut self, token: Token) {
        self.host_expect.push_back(token.get());
        self.guest_expect.push_back(token.get());
    }

    /// Every token in flight is dropped (disable, power-off, new session).
    fn drop_all(&mut self) {
        self.tally.dropped += self.vcpu.in_flight() as u64;
        self.stale.append(&mut self.fetching);
        self.stale.extend(self.delivering.take().map(|(token, _)| token));
        self.host_expect.clear();
    }

    fn step(&mut self, op: Op) {
        let before = if self.hostile { Vec::new() } else { self.unconsumed() };
        let entries_before = self.mem.host_entries.len();
        let mut new_session = false;
        match op {
            Op::Fault { from_el0, irqs_masked, sdei_ready, page_unreadable } => {
                let inputs =
                    DispatchInputs { sdei_ready, from_el0, irqs_masked, page_unreadable, cheaper_to_wait: false };
                let expected = self.expected_refusal(inputs);
                assert_eq!(self.vcpu.may_dispatch(inputs), expected.map_or(Ok(()), Err));
                let address = 0x1000 * (self.issued.len() as u64 + 1);
                match self.vcpu.start(inputs, address, &mut self.mem.host()) {
                    Ok(token) => {
                        assert_eq!(expected, None);
                        assert!(token.get() != TOKEN_NONE && token.get() != TOKEN_WAKE_ALL);
                        assert_eq!(token.vcpu(), 5);
                        assert!(self.issued.insert(token.get()), "{token} issued twice");
                        let slot = read_not_present(self.layout(), &mut self.mem.guest());
                        assert_eq!(slot, NotPresent { token: token.get(), address });
                        self.fetching.push(token);
                        self.delivering = Some((token, false));
                        self.tally.dispatched += 1;
                    }
                    Err(refusal) => assert_eq!(Some(refusal), expected),
                }
            }
            Op::Burst { faults } => {
                for _ in 0..faults {
                    self.step(Op::Fault {
                        from_el0: true,
                        irqs_masked: false,
                        sdei_ready: true,
                        page_unreadable: false,
                    });
                    self.step(Op::Answer { accept: true });
                }
                while !self.fetching.is_empty() {
                    self.step(Op::Complete { pick: 0, stale: false });
                }
                // The steps checked everything; the entries to compare are theirs.
                return;
            }
            Op::Answer { accept } => {
                let Some((token, ready)) = self.delivering.take() else {
                    return self.check(&before, entries_before, false);
                };
                if accept {
                    self.parked.insert(token.get());
                    let posted = self.vcpu.accept(token, &mut self.mem.host()).unwrap();
                    assert_eq!(posted, self.mem.host_entries.len() - entries_before);
                    self.tally.accepted += 1;
                    if ready {
                        self.release(token);
                    } else {
                        assert_eq!(posted, 0);
                    }
                } else {
                    assert_eq!(self.vcpu.decline(token), Ok(()));
                    self.tally.declined += 1;
                    self.fetching.retain(|&t| t != token);
                    self.stale.push(token);
                }
            }
            Op::Complete { pick, stale: true } => {
                if !self.stale.is_empty() {
                    let token = self.stale[pick % self.stale.len()];
                    assert_eq!(self.vcpu.complete(token, &mut self.mem.host()), Err(TokenError::Unknown(token)));
                    self.tally.stale += 1;
                }
            }
            Op::Complete { pick, stale: false } => {
                if self.fetching.is_empty() {
                    return self.check(&before, entries_before, false);
                }
                let token = self.fetching.swap_remove(pick % self.fetching.len());
                let delivery = self.vcpu.complete(token, &mut self.mem.host()).unwrap();
                assert_eq!(delivery.posted, self.mem.host_entries.len() - entries_before);
                self.tally.completed += 1;
                match &mut self.delivering {
                    Some((delivering, ready)) if *delivering == token => {
                        assert_eq!(delivery, Delivery { fate: Fate::Held, posted: 0 });
                        *ready = true;
                    }
                    _ => {
                        self.release(token);
                        let fate = if self.vcpu.backlog().len() == 0 { Fate::Posted } else { Fate::Queued };
                        assert_eq!(delivery.fate, fate);
                    }
                }
            }
            Op::Drain => {
                if self.stall > 0 {
                    self.stall -= 1;
                } else {
                    self.drain();
                }
            }
            Op::Stall { steps } => self.stall = steps,
            Op::Flush => {
                let posted = self.vcpu.flush_backlog(&mut self.mem.host());
                assert_eq!(posted, self.mem.host_entries.len() - entries_before);
            }
            Op::Garbage { ahead, by, field } => {
                let layout = self.layout();
                self.garbage_writes += 1;
                if self.hostile {
                    let offset = match field % 4 {
                        0 | 1 => layout.ring_tail(),
                        2 => layout.ring_head(),
                        _ => layout.ring_entry(by),
                    };
                    self.mem.set(offset, by);
                } else {
                    // Detectable relative to the host's head, which stays put while the tail
                    // is garbage (nothing is posted).
                    let head = self.mem.head();
                    let by = by % (1 << 62);
                    let tail = if ahead { head.wrapping_add(1 + by) } else { head.wrapping_sub(RING_ENTRIES + 1 + by) };
                    self.mem.set(layout.ring_tail(), tail);
                    self.garbage = true;
                }
            }
            Op::Repair => self.repair(),
            Op::Disable | Op::PowerOff => {
                let was_enabled = self.enabled;
                let in_flight = self.vcpu.in_flight();
                if was_enabled {
                    self.drop_all();
                    self.host_expect.push_back(TOKEN_WAKE_ALL);
                    self.guest_expect.push_back(TOKEN_WAKE_ALL);
                    self.tally.wake_alls += 1;
                    self.enabled = false;
                }
                let session = self.vcpu.status() != Status::Disabled;
                let posted = match op {
                    Op::Disable => self.vcpu.disable(&mut self.mem.host()),
                    _ => {
                        let off = self.vcpu.power_off(&mut self.mem.host());
                        assert_eq!(off.dropped, if was_enabled { in_flight } else { 0 });
                        assert_eq!(self.vcpu.status(), Status::Disabled, "off: the record is let go");
                        self.tally.power_offs += u64::from(session);
                        self.tally.power_offs_with_tokens += u64::from(off.dropped > 0);
                        // What the wake-all covers (the tasks parked so far) is the guest's to
                        // wake if it was dropped, as at a new session.
                        if off.wake_all_lost {
                            assert!(session);
                            self.tally.wake_alls_lost += 1;
                            assert_eq!(self.host_expect.pop_back(), Some(TOKEN_WAKE_ALL));
                            assert_eq!(self.guest_expect.pop_back(), Some(TOKEN_WAKE_ALL));
                            if !self.hostile {
                                // Only what is in the ring still comes: the dropped tokens'
                                // tasks the guest wakes itself.
                                let in_ring: Vec<u64> = self.unconsumed().iter().map(|&(_, t)| t).collect();
                                self.guest_expect.retain(|t| in_ring.contains(t));
                            }
                            let expect = &self.guest_expect;
                            self.parked.retain(|t| expect.contains(t));
                        }
                        off.posted
                    }
                };
                assert_eq!(posted, self.mem.host_entries.len() - entries_before);
                if was_enabled && !self.hostile {
                    // The wake-all is posted at once iff the ring is usable and not full.
                    let room = !self.garbage && (before.len() as u64) < RING_ENTRIES;
                    assert_eq!(posted, usize::from(room));
                    let closing = matches!(op, Op::Disable) && !room;
                    assert_eq!(self.vcpu.status() == Status::Closing(self.record), closing);
                }
            }
            Op::Enable { renew, fresh, tail } => {
                if self.enabled && !renew {
                    return self.check(&before, entries_before, false);
                }
                // The guest sets its record up; its earlier session's tasks it wakes itself.
                self.repair();
                self.drop_all();
                self.guest_expect.clear();
                self.parked.clear();
                self.session_errors_base = self.vcpu.counters().ring_errors;
                self.error_reported = false;
                if fresh {
                    self.old_entries += self.mem.host_entries.len() as u64;
                    self.mem = TestMemory::new(self.layout());
                    self.host_checked = 0;
                    self.mem.set(self.layout().ring_tail(), tail);
                    self.consumed = tail;
                }
                self.vcpu.enable(self.record, &mut self.mem.host());
                assert_eq!(self.mem.head(), self.mem.tail(), "a new session starts empty");
                self.enabled = true;
                new_session = true;
            }
        }
        self.check(&before, entries_before, new_session);
    }

    /// What [`ApfVcpu::may_dispatch`] must answer, by the decision table.
    fn expected_refusal(&self, inputs: DispatchInputs) -> Option<Refusal> {
        if !self.enabled {
            Some(Refusal::NotEnabled)
        } else if inputs.page_unreadable {
            Some(Refusal::PageUnreadable)
        } else if !inputs.sdei_ready {
            Some(Refusal::SdeiNotReady)
        } else if self.delivering.is_some() {
            Some(Refusal::Delivering)
        } else if !inputs.from_el0 && self.record.user_only() {
            Some(Refusal::UserOnly)
        } else if !inputs.from_el0 && inputs.irqs_masked {
            Some(Refusal::IrqsMasked)
        } else if self.fetching.len() + self.host_expect.len() >= self.vcpu.limit() {
            // In flight: the outstanding tokens (all fetching, as none is being delivered)
            // plus the backlog (which holds no wake-all while enabled).
            Some(Refusal::AtLimit)
        } else if inputs.cheaper_to_wait && !self.record.always_deliver() {
            Some(Refusal::CheaperToWait)
        } else {
            None
        }
    }

    fn repair(&mut self) {
        if self.hostile {
            // Make the ring empty as the host sees it.
            self.mem.set(self.layout().ring_tail(), self.mem.head_written());
            self.consumed = self.mem.head_written();
        } else {
            self.mem.set(self.layout().ring_tail(), self.consumed);
        }
        self.garbage = false;
    }

    fn drain(&mut self) {
        let layout = self.layout();
        let mut seen = Vec::new();
        let result = drain(layout, &mut self.mem.guest(), |token| seen.push(token));
        if self.hostile {
            // Anything may come out; nothing may panic.
            self.consumed = self.mem.tail();
            return;
        }
        if self.garbage {
            assert!(result.is_err(), "drain took entries over a garbage tail");
            assert!(seen.is_empty());
            return;
        }
        assert_eq!(result, Ok(seen.len()));
        for token in seen {
            if token == TOKEN_WAKE_ALL {
                // Everything up to the wake-all is covered; nothing can follow it.
                let position = self.guest_expect.iter().position(|&t| t == TOKEN_WAKE_ALL);
                let position = position.expect("a wake-all without a disable or power-off");
                self.guest_expect.drain(..=position);
                assert!(self.guest_expect.is_empty(), "a token after a wake-all");
                self.parked.clear();
            } else {
                assert_eq!(self.guest_expect.pop_front(), Some(token), "out of order, duplicated or spurious");
                assert!(self.parked.remove(&token), "page_ready for a task not parked: {token:#x}");
                assert!(self.delivered.insert(token), "{token:#x} delivered twice");
            }
        }
        self.consumed = self.mem.tail();
    }

    fn check(&mut self, before: &[(u64, u64)], entries_before: usize, new_session: bool) {
        self.vcpu.check_invariants();
        // The host wrote exactly what it had to, in order; the rest is its backlog.
        let written = &self.mem.host_entries[self.host_checked..];
        for &entry in written {
            assert_eq!(Some(entry), self.host_expect.pop_front(), "the host posted out of order");
        }
        self.host_checked = self.mem.host_entries.len();
        assert_eq!(self.vcpu.backlog().collect::<VecDeque<_>>(), self.host_expect, "backlog");
        assert!(self.vcpu.backlog().len() <= self.vcpu.limit() + 1);
        assert_eq!(self.vcpu.is_enabled(), self.enabled);
        assert_eq!(self.vcpu.delivering(), self.delivering.map(|(token, _)| token));
        if self.garbage {
            assert_eq!(self.mem.host_entries.len(), entries_before, "posted over a garbage tail");
        }
        if !self.hostile && !new_session {
            // Entries unconsumed before and after the step are unchanged (and at most 64 are
            // unconsumed: `unconsumed` checks).
            let after = self.unconsumed();
            for &(position, token) in before {
                let index = position.wrapping_sub(self.consumed);
                if index < after.len() as u64 {
                    assert_eq!(after[index as usize], (position, token), "an unconsumed entry was overwritten");
                }
            }
        }
        if let Some(error) = self.vcpu.take_ring_error() {
            assert!(!self.error_reported, "a ring error reported twice in one session");
            self.error_reported = true;
            assert!(ring_used(error.head, error.tail).is_err());
            assert!(self.hostile || self.garbage_writes > 0, "a ring error without garbage");
        }
        let c = *self.vcpu.counters();
        let t = &self.tally;
        assert_eq!(
            (c.dispatched, c.accepted, c.declined, c.completed, c.stale, c.wake_alls, c.dropped),
            (t.dispatched, t.accepted, t.declined, t.completed, t.stale, t.wake_alls, t.dropped)
        );
        assert_eq!(
            (c.power_offs, c.power_offs_with_tokens, c.wake_alls_lost),
            (t.power_offs, t.power_offs_with_tokens, t.wake_alls_lost)
        );
        assert_eq!(c.posted, self.old_entries + self.mem.host_entries.len() as u64);
        assert!(c.ring_errors <= self.garbage_writes);
        // The first ring error of each session is reported.
        assert_eq!(c.ring_errors > self.session_errors_base, self.error_reported);
    }

    /// The guest repairs its tail and keeps draining, every page comes back, handlers
    /// accept: then everything released is delivered and no task is left parked.
    fn settle(&mut self) {
        self.repair();
        self.stall = 0;
        for _ in 0..SETTLE_STEPS {
            if self.delivering.is_some() {
                self.step(Op::Answer { accept: true });
            } else if !self.fetching.is_empty() {
                self.step(Op::Complete { pick: 0, stale: false });
            } else if self.vcpu.backlog().len() > 0 || self.mem.head_written() != self.mem.tail() {
                self.step(Op::Flush);
                if self.hostile {
                    self.repair();
                } else {
                    self.step(Op::Drain);
                }
            } else {
                break;
            }
        }
        assert_eq!(self.vcpu.backlog().len(), 0, "the backlog did not drain");
        assert!(self.host_expect.is_empty(), "not everything was posted");
        assert_eq!(self.vcpu.in_flight(), 0);
        assert!(!matches!(self.vcpu.status(), Status::Closing(_)), "a wake-all was never posted");
        if !self.hostile {
            assert!(self.guest_expect.is_empty(), "not everything was delivered: {:?}", self.guest_expect);
            assert!(self.parked.is_empty(), "lost wake-up: {:?} still parked", self.parked);
        }
    }
}

/// An operation; `drain_weight` sets how busy the consumer is (the others weigh 10 to 40).
fn op(hostile: bool, drain_weight: u32) -> impl Strategy<Value = Op> {
    let garbage_weight = if hostile { 20 } else { 2 };
    prop_oneof![
        40 => (any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.9), prop::bool::weighted(0.05))
            .prop_map(|(from_el0, irqs_masked, sdei_ready, page_unreadable)| Op::Fault {
                from_el0,
                irqs_masked,
                sdei_ready,
                page_unreadable
            }),
        5 => (1..40u8).prop_map(|faults| Op::Burst { faults }),
        40 => prop::bool::weighted(0.9).prop_map(|accept| Op::Answer { accept }),
        40 => (any::<usize>(), prop::bool::weighted(0.05)).prop_map(|(pick, stale)| Op::Complete { pick, stale }),
        drain_weight => Just(Op::Drain),
        2 => (1..30u8).prop_map(|steps| Op::Stall { steps }),
        10 => Just(Op::Flush),
        garbage_weight => (any::<bool>(), any::<u64>(), any::<u8>())
            .prop_map(|(ahead, by, field)| Op::Garbage { ahead, by, field }),
        8 => Just(Op::Repair),
        1 => Just(Op::Disable),
        1 => Just(Op::PowerOff),
        4 => (prop::bool::weighted(0.2), any::<bool>(), any::<u64>())
            .prop_map(|(renew, fresh, tail)| Op::Enable { renew, fresh, tail }),
    ]
}

/// A run's operations, with a consumer that is busy (drains often) to sluggish.
fn ops(hostile: bool, len: core::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![Just(2u32), Just(8), Just(30)]
        .prop_flat_map(move |drain_weight| prop::collection::vec(op(hostile, drain_weight), len.clone()))
}

fn run(limit: usize, granule: u64, user_only: bool, tail: u64, hostile: bool, ops: &[Op]) -> Counters {
    let mut model = Model::new(limit, granule, user_only, tail, hostile);
    for &op in ops {
        model.step(op);
    }
    model.settle();
    *model.vcpu.counters()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A well-behaved consumer that stalls, and sometimes writes a detectable garbage tail
    /// and later repairs it.
    #[test]
    fn producer_and_consumer(
        limit in 1..=MAX_LIMIT,
        granule in prop::sample::select(vec![16u64, 64, 256, 2048]),
        user_only in any::<bool>(),
        tail in prop_oneof![Just(0u64), any::<u64>(), Just(u64::MAX - 20)],
        ops in ops(false, 1..1500),
    ) {
        run(limit, granule, user_only, tail, false, &ops);
    }

    /// A hostile guest: any value in `ring_tail`, `ring_head` or ring entries at any time.
    #[test]
    fn hostile_guest(
        limit in 1..=MAX_LIMIT,
        granule in prop::sample::select(vec![16u64, 64, 2048]),
        tail in any::<u64>(),
        ops in ops(true, 1..1000),
    ) {
        run(limit, granule, false, tail, true, &ops);
    }
}

/// The runs reach the interesting states: a full ring, a backlog, held completions, garbage.
#[test]
fn runs_reach_full_rings_backlogs_and_garbage() {
    let mut ops = Vec::new();
    for _ in 0..70 {
        ops.push(Op::Fault { from_el0: true, irqs_masked: false, sdei_ready: true, page_unreadable: false });
        ops.push(Op::Answer { accept: true });
        ops.push(Op::Complete { pick: 0, stale: false });
    }
    ops.push(Op::Garbage { ahead: true, by: 3, field: 0 });
    ops.push(Op::Fault { from_el0: true, irqs_masked: false, sdei_ready: true, page_unreadable: false });
    ops.push(Op::Complete { pick: 0, stale: false }); // held
    ops.push(Op::Answer { accept: true });
    ops.push(Op::Drain); // refused: garbage
    ops.push(Op::Repair);
    ops.push(Op::Disable);
    let counters = run(MAX_LIMIT, 64, false, 0, false, &ops);
    // 64 posted, 6 queued behind a full ring, 1 held then queued behind the garbage tail;
    // the disable drops those 7 and queues its wake-all until the consumer makes room.
    let Counters { posted, queued, dropped, ring_errors, wake_alls, .. } = counters;
    assert_eq!((posted, queued, dropped, ring_errors, wake_alls), (65, 8, 7, 1, 1), "{counters:?}");
}
