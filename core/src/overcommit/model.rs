//! Randomized runs of the engine against a shadow model of everything around it: the guest's
//! vCPUs and their accesses, the stage-2 tables, the frames' and disk slots' contents, and a
//! disk that completes requests in any order and fails some.
//!
//! Contents are modelled as version numbers: every guest write gives the page a new version;
//! a frame holds the version last put into it; a disk slot holds the version last written to
//! it (or nothing). A failed transfer leaves [`GARBAGE`] at its destination. After every step
//! the model checks:
//! * every access the guest makes through a mapping sees the page's latest version, and every
//!   mapping the engine asks for points at a frame holding the latest version (no data loss,
//!   nothing returned wrong, across failed reads and failed writes);
//! * no page is mapped while it has I/O in flight, and a write-back is submitted only after
//!   its page was unmapped;
//! * no frame is used by two pages (mapped or in I/O), and the engine's page states agree
//!   with the model's stage 2 and device queue;
//! * a page is written back only if it was mapped writable since its disk copy was made (a
//!   clean page is never written), and a page is dropped only if it was not (every dirty page
//!   is written before its frame is reused);
//! * a read is started only for a slot that holds the page's latest version (a never-written
//!   page is never read);
//! * every wake-up is for a blocked vCPU (no duplicates), the engine's idea of who waits
//!   matches the model's, and once all I/O has completed no vCPU is left blocked (no lost
//!   wake-ups);
//! * the counters match what the model saw, and with `R >= G` there is no I/O at all.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

/// The contents of a page that was never written (all zeros).
const ZERO: u64 = 0;
/// What a failed transfer leaves behind; never a version the guest wrote.
const GARBAGE: u64 = u64::MAX;
/// Steps allowed to drain the device and finish every pending access at the end of a run.
const SETTLE_STEPS: usize = 100_000;
/// Faults one access may take before it completes (e.g. read fault, then write upgrade, then
/// a stale-TLB map) when nothing blocks it.
const FAULTS_PER_ACCESS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// vCPU `vcpu` (modulo the vCPU count) accesses `page` (modulo the page count); a vCPU
    /// that was woken first retries its pending access instead. Blocked vCPUs do nothing.
    Access { vcpu: u32, page: u32, write: bool },
    /// The device completes in-flight request number `pick` (modulo their count).
    Complete { pick: usize, ok: bool },
    /// The hypervisor's access-flag scan, with pseudo-random flags.
    Scan { seed: u64 },
    /// The hypervisor pins `page` (if resident; it then maps it read-write), or unpins it.
    Pin { page: u32, pin: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    page: PageNo,
    write: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Vcpu {
    /// The access the vCPU is blocked in, or must retry after being resumed.
    pending: Option<Access>,
    blocked: bool,
}

/// What the model counted, to compare with [`Counters`].
#[derive(Debug, Default)]
struct Tally {
    reads_submitted: u64,
    writes_submitted: u64,
    reads_ok: u64,
    writes_ok: u64,
    failed: u64,
    resubmitted: u64,
    zero_fills: u64,
    aborts: u64,
    /// The most requests ever in flight at once.
    max_in_flight: usize,
    /// The most clean pages one fault dropped.
    max_dropped: usize,
    /// Pins taken.
    pins: u64,
}

struct Model {
    oc: Overcommit,
    /// Per page: the version of the guest's last write.
    latest: Vec<u64>,
    /// Per slot: the version the disk holds; `None` if never written.
    disk: Vec<Option<u64>>,
    /// Per frame: the version it holds.
    frame_data: Vec<u64>,
    /// The model's stage 2: page -> (frame, writable).
    stage2: Vec<Option<(FrameNo, bool)>>,
    /// Per page: mapped writable since the disk last got its contents (or since zero-fill).
    maybe_dirty: Vec<bool>,
    /// Requests submitted to the device and not completed.
    device: BTreeMap<RequestId, Request>,
    vcpus: Vec<Vcpu>,
    next_version: u64,
    tally: Tally,
    /// Per page: pins held.
    pins: Vec<u32>,
    /// Per page: its last read failed for good (no read succeeded since).
    unreadable: Vec<bool>,
}

impl Model {
    fn new(config: Config) -> Self {
        Model {
            oc: Overcommit::new(config).unwrap(),
            latest: vec![ZERO; config.pages as usize],
            disk: vec![None; config.pages as usize],
            frame_data: vec![GARBAGE; config.frames as usize],
            stage2: vec![None; config.pages as usize],
            maybe_dirty: vec![false; config.pages as usize],
            device: BTreeMap::new(),
            vcpus: vec![Vcpu::default(); config.waiters as usize],
            next_version: ZERO,
            tally: Tally::default(),
            pins: vec![0; config.pages as usize],
            unreadable: vec![false; config.pages as usize],
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Access { vcpu, page, write } => {
                let v = vcpu as usize % self.vcpus.len();
                if self.vcpus[v].blocked {
                    return;
                }
                let access =
                    self.vcpus[v].pending.unwrap_or(Access { page: PageNo(page % self.latest.len() as u32), write });
                self.access(v, access);
            }
            Op::Complete { pick, ok } => {
                if let Some(&id) = self.device.keys().nth(pick % self.device.len().max(1)) {
                    self.complete(id, ok);
                }
            }
            Op::Scan { seed } => self.oc.scan(|page| {
                let mixed = (seed ^ u64::from(page.0)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                mixed >> 63 == 1
            }),
            Op::Pin { page, pin: true } => {
                let page = PageNo(page % self.latest.len() as u32);
                match self.oc.pin(page) {
                    Ok(frame) => {
                        assert_eq!(self.stage2[page.index()].map(|(f, _)| f), Some(frame), "pinned {page}");
                        self.map(page, frame, true);
                        self.pins[page.index()] += 1;
                        self.tally.pins += 1;
                    }
                    Err(Error::NotResident(_)) => assert_eq!(self.stage2[page.index()], None, "{page}"),
                    Err(Error::TooManyPins) => {
                        let pinned = self.pins.iter().filter(|&&n| n > 0).count();
                        assert!(2 * (pinned + 1) > self.frame_data.len(), "refused with {pinned} pinned");
                    }
                    Err(e) => panic!("pin {page}: {e}"),
                }
            }
            Op::Pin { page, pin: false } => {
                let page = PageNo(page % self.latest.len() as u32);
                let pins = &mut self.pins[page.index()];
                match self.oc.unpin(page) {
                    Ok(()) => {
                        assert!(*pins > 0, "unpinned {page}, which was not pinned");
                        *pins -= 1;
                    }
                    Err(Error::NotPinned(_)) => assert_eq!(*pins, 0, "{page} is pinned"),
                    Err(e) => panic!("unpin {page}: {e}"),
                }
            }
        }
        self.check();
    }

    /// vCPU `v` performs `access`, faulting as often as the engine's answers require.
    fn access(&mut self, v: usize, access: Access) {
        let Access { page, write } = access;
        let p = page.index();
        self.vcpus[v].pending = Some(access);
        for _ in 0..FAULTS_PER_ACCESS {
            if let Some((frame, writable)) = self.stage2[p] {
                if writable || !write {
                    assert_eq!(self.frame_data[frame.index()], self.latest[p], "the guest sees stale data in {page}");
                    if write {
                        self.next_version += 1;
                        self.latest[p] = self.next_version;
                        self.frame_data[frame.index()] = self.next_version;
                    }
                    self.vcpus[v].pending = None;
                    return;
                }
            }
            let answer = self.oc.fault(page, write, Waiter(v as u32)).unwrap();
            let action = answer.action;
            let dropped = answer.dropped.to_vec();
            let writebacks = answer.writebacks.to_vec();
            assert!(writebacks.len() <= WRITEBACK_BATCH);
            assert!(dropped.len() <= reclaim_batch(self.frame_data.len()));
            self.tally.max_dropped = self.tally.max_dropped.max(dropped.len());
            for victim in dropped {
                self.drop_clean(victim, page);
            }
            for write in writebacks {
                self.submit_write(write);
            }
            match action {
                FaultAction::Map { frame, writable } => {
                    assert!(writable || !write, "a write fault answered read-only");
                    self.map(page, frame, writable);
                }
                FaultAction::Upgrade { frame } => {
                    assert!(write, "upgrade for a read");
                    assert_eq!(self.stage2[p], Some((frame, false)), "upgrade of {page}");
                    self.map(page, frame, true);
                }
                FaultAction::ZeroFill { frame, writable } => {
                    assert_eq!(writable, write);
                    assert_eq!(self.latest[p], ZERO, "zero-fill of written {page}");
                    self.assert_frame_unused(frame, page);
                    self.frame_data[frame.index()] = ZERO;
                    self.tally.zero_fills += 1;
                    self.map(page, frame, writable);
                }
                FaultAction::StartRead { read } => {
                    assert_eq!((read.kind, read.page), (RequestKind::Read, page));
                    assert_eq!(self.stage2[p], None, "read of mapped {page}");
                    assert_eq!(self.disk[p], Some(self.latest[p]), "read of {page}, whose slot does not hold it");
                    self.assert_frame_unused(read.frame, page);
                    self.submit(read);
                    self.tally.reads_submitted += 1;
                    self.vcpus[v].blocked = true;
                    return;
                }
                FaultAction::WaitPage => {
                    assert!(
                        self.device.values().any(|r| r.page == page),
                        "waits for {page}, which has no I/O in flight"
                    );
                    self.vcpus[v].blocked = true;
                    return;
                }
                FaultAction::WaitIo => {
                    assert!(!self.device.is_empty(), "waits with no I/O in flight");
                    self.vcpus[v].blocked = true;
                    return;
                }
            }
        }
        panic!("{access:?} still faults after {FAULTS_PER_ACCESS} faults");
    }

    /// The caller's side of a write-back: unmap, then submit.
    fn submit_write(&mut self, write: Request) {
        let p = write.page.index();
        assert_eq!(write.kind, RequestKind::Write);
        assert_eq!(self.stage2[p], Some((write.frame, true)), "write-back of {} not mapped writable there", write.page);
        assert!(self.maybe_dirty[p], "write-back of clean {}", write.page);
        self.stage2[p] = None;
        self.submit(write);
        self.tally.writes_submitted += 1;
    }

    fn submit(&mut self, request: Request) {
        assert!(self.device.insert(request.id, request).is_none(), "{} submitted twice", request.id);
    }

    /// The caller unmaps clean page `victim`, whose frame went back to the pool (and may have
    /// been taken from it already for `faulting`, the page whose fault dropped it).
    fn drop_clean(&mut self, victim: PageNo, faulting: PageNo) {
        let p = victim.index();
        let Some((frame, false)) = self.stage2[p] else {
            panic!("dropped {victim} is not mapped read-only: {:?}", self.stage2[p]);
        };
        let owner = self.oc.frames.owner(frame);
        assert!(owner.is_none() || owner == Some(faulting), "dropped {victim}'s {frame} went to {owner:?}");
        assert!(!self.maybe_dirty[p], "dropped {victim}, which may have been written");
        // What the page holds must survive elsewhere: in its slot, or it is all zeros.
        let expected = if self.latest[p] == ZERO && self.disk[p].is_none() {
            PageState::Zero
        } else {
            assert_eq!(self.disk[p], Some(self.latest[p]), "dropped {victim} is lost");
            PageState::OnDisk
        };
        assert_eq!(self.oc.state(victim), Some(expected));
        self.stage2[p] = None;
    }

    fn map(&mut self, page: PageNo, frame: FrameNo, writable: bool) {
        let p = page.index();
        self.assert_frame_unused(frame, page);
        assert_eq!(
            self.frame_data[frame.index()],
            self.latest[p],
            "{page} mapped at {frame}, which does not hold its latest version"
        );
        if let Some((old, _)) = self.stage2[p] {
            assert_eq!(old, frame, "{page} remapped to another frame");
        }
        self.stage2[p] = Some((frame, writable));
        self.maybe_dirty[p] |= writable;
    }

    /// No page other than `page` uses `frame` (mapped, or in I/O).
    fn assert_frame_unused(&self, frame: FrameNo, page: PageNo) {
        for (other, mapping) in self.stage2.iter().enumerate() {
            if let Some((f, _)) = mapping {
                assert!(*f != frame || other == page.index(), "{frame} is mapped for {} too", PageNo(other as u32));
            }
        }
        for request in self.device.values() {
            assert!(request.frame != frame || request.page == page, "{frame} is in I/O for {} too", request.page);
        }
    }

    /// The device completes `id`: data moves, then the engine hears of it.
    fn complete(&mut self, id: RequestId, ok: bool) {
        let request = self.device[&id];
        let (p, f) = (request.page.index(), request.frame.index());
        if !ok {
            self.tally.failed += 1;
        }
        let (done, woken) = match request.kind {
            RequestKind::Read => {
                self.frame_data[f] = match ok {
                    true => self.disk[p].unwrap_or(GARBAGE),
                    false => GARBAGE,
                };
                self.tally.reads_ok += u64::from(ok);
                let answer = self.oc.read_done(id, ok).unwrap();
                (answer.done, answer.woken.to_vec())
            }
            RequestKind::Write => {
                self.disk[p] = Some(match ok {
                    true => self.frame_data[f],
                    false => GARBAGE,
                });
                if ok {
                    self.maybe_dirty[p] = false;
                    self.tally.writes_ok += 1;
                }
                let answer = self.oc.write_done(id, ok).unwrap();
                (answer.done, answer.woken.to_vec())
            }
        };
        match done {
            Done::Resubmit(again) => {
                assert!(!ok && request.kind == RequestKind::Read);
                assert_eq!(again, request);
                assert_eq!(woken, [], "a resubmission wakes nobody");
                self.tally.resubmitted += 1;
                return;
            }
            Done::Map { page, frame, writable } => {
                assert_eq!((page, frame), (request.page, request.frame));
                assert!(ok || request.kind == RequestKind::Write);
                assert!(ok || writable, "a failed write-back left its page read-only");
                self.device.remove(&id);
                self.map(page, frame, writable);
            }
            Done::Evicted { page, frame } => {
                assert!(ok && request.kind == RequestKind::Write);
                assert_eq!((page, frame), (request.page, request.frame));
                self.device.remove(&id);
            }
            Done::ReadFailed { page } => {
                assert!(!ok && request.kind == RequestKind::Read);
                assert_eq!(page, request.page);
                self.device.remove(&id);
                self.unreadable[p] = true;
            }
        }
        if ok && request.kind == RequestKind::Read {
            self.unreadable[p] = false;
        }
        for wake in woken {
            let (Wake::Resume(waiter) | Wake::Abort(waiter)) = wake;
            let vcpu = &mut self.vcpus[waiter.index()];
            assert!(vcpu.blocked, "woke {waiter}, which was not blocked");
            vcpu.blocked = false;
            if let Wake::Abort(_) = wake {
                vcpu.pending = None;
                self.tally.aborts += 1;
            }
        }
    }

    /// The checks that must hold between any two steps.
    fn check(&mut self) {
        self.oc.check_invariants();
        for (p, &unreadable) in self.unreadable.iter().enumerate() {
            assert_eq!(self.oc.is_unreadable(PageNo(p as u32)), unreadable, "page {p} unreadable");
        }
        assert_eq!(self.oc.unreadable_pages(), self.unreadable.iter().filter(|&&u| u).count());
        let mut frames_in_use = Vec::new();
        for (p, mapping) in self.stage2.iter().enumerate() {
            let page = PageNo(p as u32);
            match self.oc.state(page).unwrap() {
                PageState::Resident { frame, contents } => {
                    assert_eq!(*mapping, Some((frame, contents.writable())), "{page}");
                }
                state => {
                    assert_eq!(*mapping, None, "{page} is mapped in state {state:?}");
                    if let PageState::Reading(id) | PageState::WritingBack(id) = state {
                        assert_eq!(self.device.get(&id).map(|r| r.page), Some(page));
                    }
                }
            }
            frames_in_use.extend(mapping.map(|(frame, _)| frame));
        }
        frames_in_use.extend(self.device.values().map(|r| r.frame));
        let count = frames_in_use.len();
        frames_in_use.sort();
        frames_in_use.dedup();
        assert_eq!(frames_in_use.len(), count, "a frame is used twice");
        assert_eq!(self.device.len(), self.oc.in_flight());
        self.tally.max_in_flight = self.tally.max_in_flight.max(self.device.len());
        assert!(self.device.len() <= usize::from(self.oc.config().queue_depth));
        for (v, vcpu) in self.vcpus.iter().enumerate() {
            assert_eq!(self.oc.is_waiting(Waiter(v as u32)), vcpu.blocked, "vCPU {v}");
            assert!(!vcpu.blocked || vcpu.pending.is_some());
        }
        if self.device.is_empty() {
            assert!(self.vcpus.iter().all(|v| !v.blocked), "lost wake-up");
        }
        for (p, &pins) in self.pins.iter().enumerate() {
            if pins > 0 {
                assert!(
                    matches!(self.oc.state(PageNo(p as u32)), Some(PageState::Resident { .. })),
                    "pinned {} left memory",
                    PageNo(p as u32)
                );
            }
        }
        let c = self.oc.counters();
        let t = &self.tally;
        assert_eq!(c.reads_started + c.retries, t.reads_submitted + t.resubmitted);
        assert_eq!(c.writebacks_started, t.writes_submitted);
        assert_eq!(c.page_ins, t.reads_ok);
        assert_eq!(c.dirty_writebacks, t.writes_ok);
        assert_eq!(c.io_errors, t.failed);
        // Every failed request is a failed write, a read retried, or a read failed for good.
        assert_eq!(c.io_errors, c.failed_writes + c.retries + c.failed_reads);
        assert_eq!(c.retries, t.resubmitted);
        assert_eq!(c.zero_fills, t.zero_fills);
        assert_eq!(c.aborts, t.aborts);
        let config = self.oc.config();
        if config.frames >= config.pages {
            assert_eq!(t.reads_submitted + t.writes_submitted, 0, "I/O with R >= G");
            assert_eq!(c.frame_waits + c.page_outs, 0);
        }
    }

    /// Completes all I/O without errors and lets every vCPU finish its pending access.
    fn settle(&mut self) {
        for _ in 0..SETTLE_STEPS {
            if let Some(&id) = self.device.keys().next() {
                self.complete(id, true);
            } else if let Some(v) = self.vcpus.iter().position(|v| !v.blocked && v.pending.is_some()) {
                let access = self.vcpus[v].pending.unwrap();
                self.access(v, access);
            } else {
                self.check();
                return;
            }
            self.check();
        }
        panic!("the run did not settle in {SETTLE_STEPS} steps");
    }

    /// After the run: every vCPU is free, and every page reads back its latest version.
    fn verify_all_pages(&mut self) {
        self.settle();
        assert!(self.vcpus.iter().all(|v| !v.blocked && v.pending.is_none()));
        for p in 0..self.latest.len() {
            let access = Access { page: PageNo(p as u32), write: false };
            self.access(0, access);
            self.check();
            self.settle();
        }
    }
}

/// Runs `ops` and the final verification; returns the engine's counters, the most requests
/// that were in flight at once, the most clean pages one fault dropped and the pins taken.
fn run(config: Config, ops: &[Op]) -> (Counters, usize, usize, u64) {
    let mut model = Model::new(config);
    for &op in ops {
        model.step(op);
    }
    model.verify_all_pages();
    (*model.oc.counters(), model.tally.max_in_flight, model.tally.max_dropped, model.tally.pins)
}

fn op(fail_percent: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), any::<u32>(), any::<bool>())
            .prop_map(|(vcpu, page, write)| Op::Access { vcpu, page, write }),
        4 => (any::<usize>(), 0..100u32)
            .prop_map(move |(pick, roll)| Op::Complete { pick, ok: roll >= fail_percent }),
        1 => any::<u64>().prop_map(|seed| Op::Scan { seed }),
        1 => (any::<u32>(), any::<bool>()).prop_map(|(page, pin)| Op::Pin { page, pin }),
    ]
}

fn config(
    pages: impl Strategy<Value = u32>,
    frames: impl Strategy<Value = u32>,
    vcpus: impl Strategy<Value = u32>,
) -> impl Strategy<Value = Config> {
    (pages, frames, vcpus, MIN_QUEUE_DEPTH..=MIN_QUEUE_DEPTH + 2, 0..=3u32).prop_map(
        |(pages, frames, waiters, queue_depth, read_retries)| Config {
            pages,
            frames,
            queue_depth,
            waiters,
            read_retries,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Few pages, fewer frames, many vCPUs: contention on the same pages (shared reads,
    /// faults during write-back), waiting for frames, device errors.
    #[test]
    fn random_runs_contended(
        config in config(1..=8u32, 1..=4u32, 1..=6u32),
        ops in prop::collection::vec(op(20), 1..600),
    ) {
        run(config, &ops);
    }

    /// More frames than the queue depth, so the queue can fill up.
    #[test]
    fn random_runs_large(
        config in config(20..=64u32, 1..=28u32, 1..=4u32),
        ops in prop::collection::vec(op(10), 1..1000),
    ) {
        run(config, &ops);
    }

    /// R >= G: no eviction and no I/O, whatever happens.
    #[test]
    fn no_io_without_overcommit(
        (config, ops) in (1..=32u32)
            .prop_flat_map(|pages| config(Just(pages), pages..=pages + 8, 1..=4u32))
            .prop_flat_map(|config| (Just(config), prop::collection::vec(op(50), 1..400))),
    ) {
        let (counters, ..) = run(config, &ops);
        prop_assert_eq!(counters.reads_started + counters.writebacks_started, 0);
        prop_assert_eq!(counters.page_outs, 0);
    }
}

/// The random runs reach every path: a fixed-seed sample whose summed counters must show every
/// kind of event (otherwise the properties above could hold vacuously).
#[test]
fn random_runs_reach_every_path() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut total = Counters::default();
    let mut queue_filled = false;
    let mut batch_dropped = false;
    let mut pins = 0;
    for round in 0..64u32 {
        let config = Config {
            pages: 4 + round % 40,
            frames: 1 + round % 24,
            queue_depth: MIN_QUEUE_DEPTH,
            waiters: 1 + round % 5,
            read_retries: round % 3,
        };
        let ops: Vec<Op> = (0..800)
            .map(|_| match next() % 12 {
                0..=5 => Op::Access { vcpu: next() as u32, page: next() as u32, write: next() % 2 == 0 },
                6..=9 => Op::Complete { pick: next() as usize, ok: next() % 100 >= 20 },
                10 => Op::Pin { page: next() as u32, pin: next() % 2 == 0 },
                _ => Op::Scan { seed: next() },
            })
            .collect();
        let (c, max_in_flight, max_dropped, pinned) = run(config, &ops);
        pins += pinned;
        queue_filled |= max_in_flight == usize::from(config.queue_depth);
        batch_dropped |= max_dropped > 1;
        total.page_ins += c.page_ins;
        total.zero_fills += c.zero_fills;
        total.clean_drops += c.clean_drops;
        total.dirty_writebacks += c.dirty_writebacks;
        total.io_errors += c.io_errors;
        total.retries += c.retries;
        total.shared_fetches += c.shared_fetches;
        total.upgrades += c.upgrades;
        total.writeback_waits += c.writeback_waits;
        total.rescues += c.rescues;
        total.frame_waits += c.frame_waits;
        total.failed_reads += c.failed_reads;
        total.aborts += c.aborts;
    }
    let t = total;
    for (name, count) in [
        ("page_ins", t.page_ins),
        ("zero_fills", t.zero_fills),
        ("clean_drops", t.clean_drops),
        ("dirty_writebacks", t.dirty_writebacks),
        ("io_errors", t.io_errors),
        ("retries", t.retries),
        ("shared_fetches", t.shared_fetches),
        ("upgrades", t.upgrades),
        ("writeback_waits", t.writeback_waits),
        ("rescues", t.rescues),
        ("frame_waits", t.frame_waits),
        ("failed_reads", t.failed_reads),
        ("aborts", t.aborts),
    ] {
        assert!(count > 0, "no {name} in the sample: {t:?}");
    }
    assert!(queue_filled, "the queue never filled up in the sample");
    assert!(batch_dropped, "no fault reclaimed more than one clean page in the sample");
    assert!(pins > 0, "no page was pinned in the sample");
}
