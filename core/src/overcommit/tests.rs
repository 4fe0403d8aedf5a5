//! Unit tests of each transition, and the engine's internal consistency check used by every
//! test here and in [`super::model`].

use super::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

impl Overcommit {
    /// Asserts that the engine's tables agree with each other.
    pub(super) fn check_invariants(&self) {
        // Pages point at frames and requests that point back.
        for index in 0..self.pages.len() {
            let page = PageNo(index as u32);
            match self.pages.get(page) {
                PageState::Zero | PageState::OnDisk => {}
                PageState::Resident { frame, .. } => {
                    assert_eq!(self.frames.owner(frame), Some(page), "{page} in {frame}");
                }
                PageState::Reading(id) | PageState::WritingBack(id) => {
                    let entry = self.requests.get(id).expect("page names a request in flight");
                    let kind = match self.pages.get(page) {
                        PageState::Reading(_) => RequestKind::Read,
                        _ => RequestKind::Write,
                    };
                    assert_eq!((entry.request.page, entry.request.kind), (page, kind));
                    assert_eq!(self.frames.owner(entry.request.frame), Some(page));
                }
            }
        }
        // Frames are owned by pages that use them, or free (and listed once).
        let mut unowned = Vec::new();
        for index in 0..self.frames.len() {
            let frame = FrameNo(index as u32);
            let Some(page) = self.frames.owner(frame) else {
                unowned.push(frame);
                continue;
            };
            let used = match self.pages.get(page) {
                PageState::Resident { frame: f, .. } => f,
                PageState::Reading(id) | PageState::WritingBack(id) => self.requests.get(id).unwrap().request.frame,
                state => panic!("{frame} owned by {page} in state {state:?}"),
            };
            assert_eq!(used, frame, "{frame} owned by {page}, which uses {used}");
        }
        let mut free = self.frames.free_list().to_vec();
        free.sort();
        assert_eq!(free, unowned, "free list");
        assert_eq!(self.pages.clean_resident(), self.pages.recount_clean_resident());
        // Unreadable pages are on disk or being read again, and counted.
        let unreadable: Vec<PageNo> =
            (0..self.pages.len()).map(|p| PageNo(p as u32)).filter(|&p| self.pages.is_unreadable(p)).collect();
        assert_eq!(unreadable.len(), self.pages.unreadable_count());
        assert_eq!(self.unreadable().collect::<Vec<_>>(), unreadable);
        for page in unreadable {
            assert!(matches!(self.pages.get(page), PageState::OnDisk | PageState::Reading(_)), "{page}");
        }
        // Requests are named by their pages; each waiter is in at most one list.
        let mut listed = self.waiters.members(&self.frame_waiters);
        for entry in self.requests.iter() {
            let Request { id, kind, page, .. } = entry.request;
            let expected = match kind {
                RequestKind::Read => PageState::Reading(id),
                RequestKind::Write => PageState::WritingBack(id),
            };
            assert_eq!(self.pages.get(page), expected);
            assert!(kind == RequestKind::Read || entry.failures == 0);
            assert!(entry.failures <= self.config.read_retries);
            listed.extend(self.waiters.members(&entry.waiters));
        }
        assert!(self.requests.in_flight() <= self.requests.depth());
        let count = listed.len();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), count, "a waiter is in two lists");
        assert_eq!(count, self.waiters.waiting_count(), "waiting flags");
        // Someone waits for a frame only while a completion is still to come.
        assert!(self.frame_waiters.is_empty() || self.requests.in_flight() > 0);
    }
}

const WAITERS: u32 = 8;

fn engine(pages: u32, frames: u32) -> Overcommit {
    Overcommit::new(Config { pages, frames, queue_depth: MIN_QUEUE_DEPTH, waiters: WAITERS, read_retries: 2 }).unwrap()
}

fn fault(oc: &mut Overcommit, page: u32, write: bool, waiter: u32) -> (FaultAction, Vec<Request>) {
    let answer = oc.fault(PageNo(page), write, Waiter(waiter)).unwrap();
    let result = (answer.action, answer.writebacks.to_vec());
    oc.check_invariants();
    result
}

/// A fault that starts no write-back.
fn fault1(oc: &mut Overcommit, page: u32, write: bool, waiter: u32) -> FaultAction {
    fault1d(oc, page, write, waiter).0
}

/// A fault that starts no write-back, with the clean pages it dropped.
fn fault1d(oc: &mut Overcommit, page: u32, write: bool, waiter: u32) -> (FaultAction, Vec<PageNo>) {
    let answer = oc.fault(PageNo(page), write, Waiter(waiter)).unwrap();
    assert_eq!(answer.writebacks, []);
    let result = (answer.action, answer.dropped.to_vec());
    oc.check_invariants();
    result
}

fn read_done(oc: &mut Overcommit, id: RequestId, ok: bool) -> (Done, Vec<Wake>) {
    let answer = oc.read_done(id, ok).unwrap();
    let result = (answer.done, answer.woken.to_vec());
    oc.check_invariants();
    result
}

fn write_done(oc: &mut Overcommit, id: RequestId, ok: bool) -> (Done, Vec<Wake>) {
    let answer = oc.write_done(id, ok).unwrap();
    let result = (answer.done, answer.woken.to_vec());
    oc.check_invariants();
    result
}

fn resident(frame: u32, contents: Contents) -> Option<PageState> {
    Some(PageState::Resident { frame: FrameNo(frame), contents })
}

/// With one frame: page 0 is written, then evicted by a fault on page 1 from waiter 1 and
/// written back successfully. Returns the engine with page 0 on disk, page 1 not resident.
fn page0_on_disk() -> Overcommit {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (action, writebacks) = fault(&mut oc, 1, false, 1);
    assert_eq!(action, FaultAction::WaitIo);
    let (done, _) = write_done(&mut oc, writebacks[0].id, true);
    assert_eq!(done, Done::Evicted { page: PageNo(0), frame: FrameNo(0) });
    assert_eq!(oc.state(PageNo(0)), Some(PageState::OnDisk));
    oc
}

#[test]
fn zero_fill_read_maps_read_only_then_first_write_upgrades() {
    let mut oc = engine(4, 2);
    assert_eq!(fault1d(&mut oc, 3, false, 0), (FaultAction::ZeroFill { frame: FrameNo(0), writable: false }, vec![]));
    assert_eq!(oc.state(PageNo(3)), resident(0, Contents::Zero));
    // A racing read fault on a resident clean page: map it read-only again.
    assert_eq!(fault1(&mut oc, 3, false, 1), FaultAction::Map { frame: FrameNo(0), writable: false });
    assert_eq!(fault1(&mut oc, 3, true, 1), FaultAction::Upgrade { frame: FrameNo(0) });
    assert_eq!(oc.state(PageNo(3)), resident(0, Contents::Dirty));
    assert_eq!(fault1(&mut oc, 3, true, 0), FaultAction::Map { frame: FrameNo(0), writable: true });
    let c = oc.counters();
    assert_eq!((c.zero_fills, c.upgrades, c.reads_started), (1, 1, 0));
}

#[test]
fn zero_fill_write_maps_read_write_dirty() {
    let mut oc = engine(4, 2);
    assert_eq!(fault1d(&mut oc, 1, true, 0), (FaultAction::ZeroFill { frame: FrameNo(0), writable: true }, vec![]));
    assert_eq!(oc.state(PageNo(1)), resident(0, Contents::Dirty));
    assert_eq!(oc.free_frames(), 1);
}

#[test]
fn never_written_page_is_dropped_without_io_and_zero_filled_again() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, false, 0);
    assert_eq!(
        fault1d(&mut oc, 1, false, 0),
        (FaultAction::ZeroFill { frame: FrameNo(0), writable: false }, vec![PageNo(0)])
    );
    assert_eq!(oc.state(PageNo(0)), Some(PageState::Zero));
    // Back to page 0: zero-filled again, not read.
    assert_eq!(
        fault1d(&mut oc, 0, true, 0),
        (FaultAction::ZeroFill { frame: FrameNo(0), writable: true }, vec![PageNo(1)])
    );
    let c = *oc.counters();
    assert_eq!((c.zero_fills, c.clean_drops, c.page_outs), (3, 2, 2));
    assert_eq!((c.reads_started, c.writebacks_started), (0, 0));
}

#[test]
fn dirty_page_is_written_back_before_its_frame_is_reused() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (action, writebacks) = fault(&mut oc, 1, false, 1);
    // The only frame is dirty: write it back, wait for the frame.
    assert_eq!(action, FaultAction::WaitIo);
    let [write] = writebacks[..] else { panic!("one write-back expected: {writebacks:?}") };
    assert_eq!((write.kind, write.page, write.frame), (RequestKind::Write, PageNo(0), FrameNo(0)));
    assert_eq!(oc.state(PageNo(0)), Some(PageState::WritingBack(write.id)));
    assert_eq!(oc.free_frames(), 0);
    assert!(oc.is_waiting(Waiter(1)));
    // A read completion is not accepted for a write.
    assert_eq!(oc.read_done(write.id, true), Err(Error::NotInFlight(write.id)));
    let (done, woken) = write_done(&mut oc, write.id, true);
    assert_eq!(done, Done::Evicted { page: PageNo(0), frame: FrameNo(0) });
    assert_eq!(woken, [Wake::Resume(Waiter(1))]);
    assert!(!oc.is_waiting(Waiter(1)));
    assert_eq!(oc.free_frames(), 1);
    // Waiter 1 retries and gets the frame.
    assert_eq!(fault1d(&mut oc, 1, false, 1), (FaultAction::ZeroFill { frame: FrameNo(0), writable: false }, vec![]));
    let c = *oc.counters();
    assert_eq!((c.dirty_writebacks, c.page_outs, c.frame_waits), (1, 1, 1));
}

#[test]
fn page_on_disk_is_read_back_clean_and_dropped_without_a_write() {
    let mut oc = page0_on_disk();
    fault1(&mut oc, 1, false, 1);
    let (FaultAction::StartRead { read }, dropped) = fault1d(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    assert_eq!(dropped, [PageNo(1)]);
    assert_eq!((read.kind, read.page, read.frame), (RequestKind::Read, PageNo(0), FrameNo(0)));
    assert_eq!(oc.request(read.id), Some(read));
    assert_eq!(oc.in_flight(), 1);
    let (done, woken) = read_done(&mut oc, read.id, true);
    assert_eq!(done, Done::Map { page: PageNo(0), frame: FrameNo(0), writable: false });
    assert_eq!(woken, [Wake::Resume(Waiter(0))]);
    assert_eq!(oc.state(PageNo(0)), resident(0, Contents::Clean));
    // Evicting the clean page costs no write.
    assert_eq!(
        fault1d(&mut oc, 2, true, 2),
        (FaultAction::ZeroFill { frame: FrameNo(0), writable: true }, vec![PageNo(0)])
    );
    assert_eq!(oc.state(PageNo(0)), Some(PageState::OnDisk));
    let c = *oc.counters();
    assert_eq!((c.page_ins, c.dirty_writebacks, c.writebacks_started), (1, 1, 1));
}

#[test]
fn faults_on_one_page_share_one_read() {
    let mut oc = page0_on_disk();
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 2) else {
        panic!("read expected");
    };
    assert_eq!(fault1(&mut oc, 0, true, 0), FaultAction::WaitPage);
    assert_eq!(fault1(&mut oc, 0, false, 3), FaultAction::WaitPage);
    assert_eq!(oc.counters().shared_fetches, 2);
    assert_eq!(oc.counters().reads_started, 1);
    assert_eq!(oc.fault(PageNo(0), false, Waiter(3)).unwrap_err(), Error::AlreadyWaiting(Waiter(3)));
    let (done, woken) = read_done(&mut oc, read.id, true);
    // One of the waiting faults writes: the page comes in dirty, mapped writable.
    assert_eq!(done, Done::Map { page: PageNo(0), frame: FrameNo(0), writable: true });
    assert_eq!(woken, [Wake::Resume(Waiter(2)), Wake::Resume(Waiter(0)), Wake::Resume(Waiter(3))]);
    assert_eq!(oc.state(PageNo(0)), resident(0, Contents::Dirty));
}

#[test]
fn fault_during_write_back_waits_and_keeps_the_page() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (_, writebacks) = fault(&mut oc, 1, false, 1);
    // Page 0 is unmapped while it is written; touching it waits.
    assert_eq!(fault1(&mut oc, 0, false, 0), FaultAction::WaitPage);
    let (done, woken) = write_done(&mut oc, writebacks[0].id, true);
    assert_eq!(done, Done::Map { page: PageNo(0), frame: FrameNo(0), writable: false });
    // The page's waiters, then the frame waiters.
    assert_eq!(woken, [Wake::Resume(Waiter(0)), Wake::Resume(Waiter(1))]);
    assert_eq!(oc.state(PageNo(0)), resident(0, Contents::Clean));
    let c = *oc.counters();
    assert_eq!((c.writeback_waits, c.rescues, c.page_outs), (1, 1, 0));
    assert_eq!(oc.free_frames(), 0);
}

#[test]
fn write_during_write_back_keeps_the_page_dirty() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (_, writebacks) = fault(&mut oc, 1, false, 1);
    assert_eq!(fault1(&mut oc, 0, true, 0), FaultAction::WaitPage);
    let (done, _) = write_done(&mut oc, writebacks[0].id, true);
    assert_eq!(done, Done::Map { page: PageNo(0), frame: FrameNo(0), writable: true });
    assert_eq!(oc.state(PageNo(0)), resident(0, Contents::Dirty));
}

#[test]
fn failed_write_back_keeps_the_page_resident_and_dirty() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (_, writebacks) = fault(&mut oc, 1, false, 1);
    let (done, woken) = write_done(&mut oc, writebacks[0].id, false);
    assert_eq!(done, Done::Map { page: PageNo(0), frame: FrameNo(0), writable: true });
    assert_eq!(woken, [Wake::Resume(Waiter(1))]);
    assert_eq!(oc.state(PageNo(0)), resident(0, Contents::Dirty));
    assert_eq!((oc.counters().io_errors, oc.counters().failed_writes), (1, 1));
    assert_eq!(oc.counters().page_outs, 0);
    assert_eq!(oc.free_frames(), 0);
    // Tried again on the next eviction.
    let (action, writebacks) = fault(&mut oc, 1, false, 1);
    assert_eq!(action, FaultAction::WaitIo);
    assert_eq!(writebacks[0].page, PageNo(0));
    let (done, _) = write_done(&mut oc, writebacks[0].id, true);
    assert!(matches!(done, Done::Evicted { .. }));
}

#[test]
fn failed_read_is_retried_then_the_faults_fail() {
    let mut oc = page0_on_disk();
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    assert_eq!(fault1(&mut oc, 0, false, 1), FaultAction::WaitPage);
    for _ in 0..2 {
        let (done, woken) = read_done(&mut oc, read.id, false);
        assert_eq!(done, Done::Resubmit(read));
        assert_eq!(woken, []);
        assert_eq!(oc.request(read.id), Some(read));
    }
    let (done, woken) = read_done(&mut oc, read.id, false);
    assert_eq!(done, Done::ReadFailed { page: PageNo(0) });
    assert_eq!(woken, [Wake::Abort(Waiter(0)), Wake::Abort(Waiter(1))]);
    assert_eq!(oc.state(PageNo(0)), Some(PageState::OnDisk));
    assert_eq!(oc.free_frames(), 1);
    assert_eq!(oc.in_flight(), 0);
    let c = *oc.counters();
    assert_eq!((c.io_errors, c.retries, c.failed_reads, c.aborts), (3, 2, 1, 2));
    // The page is known to be unreadable, and stays so while it is read again.
    assert!(oc.is_unreadable(PageNo(0)));
    assert_eq!(oc.unreadable_pages(), 1);
    // Nothing is lost: the next access reads the page again.
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    assert!(oc.is_unreadable(PageNo(0)));
    let (done, _) = read_done(&mut oc, read.id, true);
    assert!(matches!(done, Done::Map { .. }));
    // A read that succeeds makes it readable again.
    assert!(!oc.is_unreadable(PageNo(0)));
    assert_eq!(oc.unreadable_pages(), 0);
}

#[test]
fn only_pages_whose_last_read_failed_are_unreadable() {
    let mut oc = page0_on_disk();
    assert!(!oc.is_unreadable(PageNo(0)));
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    // Failures with retries left do not make it unreadable yet.
    for _ in 0..2 {
        read_done(&mut oc, read.id, false);
        assert!(!oc.is_unreadable(PageNo(0)));
    }
    read_done(&mut oc, read.id, false);
    assert!(oc.is_unreadable(PageNo(0)));
    // Other pages, and pages beyond guest RAM, are not.
    assert!(!oc.is_unreadable(PageNo(1)));
    assert!(!oc.is_unreadable(PageNo(u32::MAX)));
    // A second failure for good keeps one unreadable page.
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    for _ in 0..3 {
        read_done(&mut oc, read.id, false);
    }
    assert!(oc.is_unreadable(PageNo(0)));
    assert_eq!(oc.unreadable_pages(), 1);
}

#[test]
fn write_backs_in_flight_do_not_block_a_fault_that_finds_a_clean_frame() {
    let mut oc = engine(4, 2);
    fault1(&mut oc, 0, true, 0);
    fault1(&mut oc, 1, false, 0);
    let answer = oc.fault(PageNo(2), false, Waiter(0)).unwrap();
    // The hand passes dirty page 0 (starting its write-back) and takes clean page 1's frame.
    let [write] = answer.writebacks[..] else { panic!("one write-back expected: {:?}", answer.writebacks) };
    assert_eq!((write.page, write.frame), (PageNo(0), FrameNo(0)));
    assert_eq!(answer.dropped, [PageNo(1)]);
    assert_eq!(answer.action, FaultAction::ZeroFill { frame: FrameNo(1), writable: false });
    assert_eq!(oc.state(PageNo(1)), Some(PageState::Zero));
    assert!(!oc.is_waiting(Waiter(0)));
}

#[test]
fn waits_for_a_frame_when_every_frame_is_busy() {
    let mut oc = engine(4, 1);
    fault1(&mut oc, 0, true, 0);
    let (action, writebacks) = fault(&mut oc, 1, false, 1);
    assert_eq!(action, FaultAction::WaitIo);
    // The only frame is being written: nothing more to start, wait too.
    assert_eq!(fault1(&mut oc, 2, true, 2), FaultAction::WaitIo);
    let (_, woken) = write_done(&mut oc, writebacks[0].id, true);
    assert_eq!(woken, [Wake::Resume(Waiter(1)), Wake::Resume(Waiter(2))]);
}

#[test]
fn read_completion_also_resumes_frame_waiters() {
    let mut oc = page0_on_disk();
    let FaultAction::StartRead { read, .. } = fault1(&mut oc, 0, false, 0) else {
        panic!("read expected");
    };
    // The only frame is being read into: wait for a frame.
    assert_eq!(fault1(&mut oc, 2, false, 1), FaultAction::WaitIo);
    let (_, woken) = read_done(&mut oc, read.id, true);
    assert_eq!(woken, [Wake::Resume(Waiter(0)), Wake::Resume(Waiter(1))]);
    // Waiter 1 retries: page 0 is clean, its frame is taken after a second chance.
    assert_eq!(
        fault1d(&mut oc, 2, false, 1),
        (FaultAction::ZeroFill { frame: FrameNo(0), writable: false }, vec![PageNo(0)])
    );
}

#[test]
fn queue_depth_bounds_requests_and_reads_wait_for_a_slot() {
    const FRAMES: u32 = 24;
    let mut oc = Overcommit::new(Config {
        pages: 64,
        frames: FRAMES,
        queue_depth: MIN_QUEUE_DEPTH,
        waiters: 16,
        read_retries: 0,
    })
    .unwrap();
    for page in 0..FRAMES {
        fault1(&mut oc, page, true, 0);
    }
    // Every frame is dirty: each fault starts a batch of write-backs and waits, until the
    // queue is full.
    const BATCHES: u32 = MIN_QUEUE_DEPTH as u32 / WRITEBACK_BATCH as u32;
    const _: () = assert!((MIN_QUEUE_DEPTH as usize).is_multiple_of(WRITEBACK_BATCH) && BATCHES >= 1);
    let mut writes = Vec::new();
    for waiter in 1..=BATCHES {
        let (action, writebacks) = fault(&mut oc, FRAMES + waiter, false, waiter);
        assert_eq!(action, FaultAction::WaitIo);
        assert_eq!(writebacks.len(), WRITEBACK_BATCH);
        writes.extend(writebacks);
    }
    assert_eq!(oc.in_flight(), usize::from(MIN_QUEUE_DEPTH));
    // Queue full: no more write-backs.
    let full = BATCHES + 1;
    assert_eq!(fault1(&mut oc, 40, false, full), FaultAction::WaitIo);
    assert_eq!(oc.in_flight(), usize::from(MIN_QUEUE_DEPTH));
    // One write-back completes: its frame is free, everyone waiting for a frame retries.
    let (done, woken) = write_done(&mut oc, writes[0].id, true);
    assert!(matches!(done, Done::Evicted { .. }));
    assert_eq!(woken.len(), full as usize);
    let evicted = writes[0].page;
    // The next waiter takes that frame for a new page (keeping it dirty).
    assert!(matches!(fault1d(&mut oc, 41, true, full + 1), (FaultAction::ZeroFill { .. }, d) if d.is_empty()));
    // The next: the last slot goes to one more write-back, and it waits.
    let (action, writebacks) = fault(&mut oc, 42, false, full + 2);
    assert_eq!((action, writebacks.len()), (FaultAction::WaitIo, 1));
    assert_eq!(oc.in_flight(), usize::from(MIN_QUEUE_DEPTH));
    // The next needs a read of the evicted page: no slot, so it waits without evicting.
    let before = *oc.counters();
    assert_eq!(fault1(&mut oc, evicted.0, false, full + 3), FaultAction::WaitIo);
    assert_eq!(oc.counters().clean_drops, before.clean_drops);
    assert_eq!(oc.state(evicted), Some(PageState::OnDisk));
}

#[test]
fn second_chance_follows_the_access_scan() {
    for protect in [false, true] {
        let mut oc = engine(8, 3);
        for page in 0..3 {
            fault1(&mut oc, page, false, 0);
        }
        // Every frame was just mapped: round one clears the bits, frame 0 goes.
        assert!(matches!(fault1d(&mut oc, 3, false, 0), (FaultAction::ZeroFill { .. }, d) if d == [PageNo(0)]));
        if protect {
            let mut asked = Vec::new();
            oc.scan(|page| {
                asked.push(page);
                page == PageNo(1)
            });
            asked.sort();
            assert_eq!(asked, [PageNo(1), PageNo(2), PageNo(3)]);
        }
        let victim = if protect { 2 } else { 1 };
        assert!(matches!(
            fault1d(&mut oc, 4, false, 0),
            (FaultAction::ZeroFill { .. }, d) if d == [PageNo(victim)]
        ));
    }
    // The same with mark_accessed.
    let mut oc = engine(8, 3);
    for page in 0..4 {
        fault1(&mut oc, page, false, 0); // page 3 evicts page 0; the hand is at frame 1
    }
    oc.mark_accessed(PageNo(1)).unwrap();
    oc.mark_accessed(PageNo(0)).unwrap(); // not resident: ignored
    assert!(matches!(fault1d(&mut oc, 4, false, 0), (FaultAction::ZeroFill { .. }, d) if d == [PageNo(2)]));
    assert_eq!(oc.mark_accessed(PageNo(8)), Err(Error::PageOutOfRange(PageNo(8))));
}

#[test]
fn no_io_when_frames_cover_the_guest() {
    let mut oc = engine(16, 16);
    for round in 0..4u32 {
        for page in 0..16 {
            let action = fault1(&mut oc, page, (page + round) % 3 == 0, round % WAITERS);
            assert!(
                !matches!(action, FaultAction::StartRead { .. } | FaultAction::WaitIo | FaultAction::WaitPage),
                "{action:?}"
            );
        }
    }
    let c = *oc.counters();
    assert_eq!(c.zero_fills, 16);
    assert_eq!((c.reads_started, c.writebacks_started, c.page_outs, c.io_errors), (0, 0, 0, 0));
}

#[test]
fn refuses_bad_calls_without_changing_anything() {
    let mut oc = engine(4, 1);
    assert_eq!(oc.fault(PageNo(4), false, Waiter(0)).unwrap_err(), Error::PageOutOfRange(PageNo(4)));
    assert_eq!(oc.fault(PageNo(0), false, Waiter(WAITERS)).unwrap_err(), Error::UnknownWaiter(Waiter(WAITERS)));
    assert_eq!(oc.read_done(RequestId(0), true), Err(Error::NotInFlight(RequestId(0))));
    assert_eq!(oc.write_done(RequestId(999), false), Err(Error::NotInFlight(RequestId(999))));
    assert_eq!(oc.state(PageNo(4)), None);
    assert!(!oc.is_waiting(Waiter(WAITERS)));
    assert_eq!(*oc.counters(), Counters::default());
    oc.check_invariants();
    let text = Error::AlreadyWaiting(Waiter(3)).to_string();
    assert!(text.contains("waiter 3"), "{text}");
    assert!(Error::PageOutOfRange(PageNo(0x10)).to_string().contains("page 0x10"));
}

#[test]
fn config_is_checked() {
    let good = Config::new(16 * PAGES_PER_MIB, 4 * PAGES_PER_MIB, 4);
    assert_eq!(good.pages, 4096);
    assert!(Overcommit::new(good).is_ok());
    let bad = |f: fn(&mut Config)| {
        let mut config = good;
        f(&mut config);
        Overcommit::new(config).err().unwrap()
    };
    assert_eq!(bad(|c| c.pages = 0), ConfigError::NoPages);
    assert_eq!(bad(|c| c.frames = 0), ConfigError::NoFrames);
    assert_eq!(bad(|c| c.queue_depth = 15), ConfigError::QueueTooShallow(15));
    assert_eq!(bad(|c| c.waiters = 0), ConfigError::BadWaiterCount(0));
    assert_eq!(bad(|c| c.waiters = MAX_WAITERS + 1), ConfigError::BadWaiterCount(MAX_WAITERS + 1));
    assert!(ConfigError::QueueTooShallow(4).to_string().contains("minimum 16"));
}

#[test]
fn disk_slots() {
    assert_eq!(PageNo(3).disk_offset(), 3 * 4096);
    assert_eq!(PageNo(3).sector(), 24);
    assert_eq!(SECTORS_PER_PAGE, 8);
}

#[test]
fn full_size_engine_is_cheap_to_build() {
    // The size the hypervisor builds: 256 MiB of guest on 32 MiB of frames.
    let oc = Overcommit::new(Config::new(256 * PAGES_PER_MIB, 32 * PAGES_PER_MIB, 8)).unwrap();
    assert_eq!(oc.free_frames(), 8192);
    assert_eq!(oc.state(PageNo(65535)), Some(PageState::Zero));
}

#[test]
fn pinned_pages_stay_resident_and_dirty() {
    let mut oc = engine(8, 4);
    assert_eq!(oc.pin(PageNo(0)), Err(Error::NotResident(PageNo(0))));
    assert_eq!(oc.pin(PageNo(8)), Err(Error::PageOutOfRange(PageNo(8))));
    fault1(&mut oc, 0, false, 0);
    // Pinning a clean (here: zero) page makes it dirty: the hypervisor writes into it.
    let frame = oc.pin(PageNo(0)).unwrap();
    assert_eq!(oc.state(PageNo(0)), resident(frame.0, Contents::Dirty));
    fault1(&mut oc, 1, false, 0);
    assert_eq!(oc.pin(PageNo(1)).map(|f| f.0), Ok(1));
    // Half of the 4 frames are pinned: no more.
    fault1(&mut oc, 2, false, 0);
    assert_eq!(oc.pin(PageNo(2)), Err(Error::TooManyPins));
    // A second pin of a pinned page is fine (records of two vCPUs can share a page).
    assert_eq!(oc.pin(PageNo(0)), Ok(frame));
    // Cycle every other page through the two unpinned frames: pages 0 and 1 never leave.
    for round in 0..3 {
        for page in 2..8 {
            fault1(&mut oc, page, false, round);
            assert!(matches!(oc.state(PageNo(0)), Some(PageState::Resident { .. })));
            assert!(matches!(oc.state(PageNo(1)), Some(PageState::Resident { .. })));
        }
    }
    assert_eq!(oc.counters().writebacks_started, 0, "a pinned dirty page was written back");
    // Unpinned (twice for page 0), the clock takes them again: dirty, so written back.
    assert_eq!(oc.unpin(PageNo(0)), Ok(()));
    assert_eq!(oc.unpin(PageNo(0)), Ok(()));
    assert_eq!(oc.unpin(PageNo(0)), Err(Error::NotPinned(PageNo(0))));
    assert_eq!(oc.unpin(PageNo(5)), Err(Error::NotPinned(PageNo(5))));
    let mut started = Vec::new();
    for page in 2..8 {
        let (_, writebacks) = fault(&mut oc, page, false, 1);
        started.extend(writebacks.iter().map(|w| w.page));
        if oc.is_waiting(Waiter(1)) {
            break;
        }
    }
    assert!(started.contains(&PageNo(0)), "page 0 not written back once unpinned: {started:?}");
}
