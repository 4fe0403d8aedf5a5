//! Memory overcommit: the decisions that map `G` MiB of guest RAM onto `R` MiB of host frames,
//! with the pages that are not resident kept on a backing store (a virtio-blk disk). This
//! module only decides; the hypervisor does what it is told: it edits stage 2, zeroes frames,
//! submits and completes disk requests, blocks and resumes vCPUs, and reads the stage-2 access
//! flags.
//!
//! The backing store has one 4 KiB slot per guest page; slot `n` belongs to page `n`
//! ([`PageNo::sector`]), so slots are never allocated or moved.
//!
//! # Page states
//!
//! ```text
//!                read fault: zero-fill, map RO
//!   +------+ ------------------------------------> +----------------------+
//!   | Zero |                                       | Resident, Zero    RO |
//!   +------+ <------------------------------------ +----------------------+
//!      |            clock: drop, no I/O                       |
//!      | write fault: zero-fill, map RW                       | write fault: upgrade
//!      v                                                      v
//!   +----------------------+ <------------------------------------------------+
//!   | Resident, Dirty   RW |                                                  |
//!   +----------------------+ <-- write fault: upgrade --+                     |
//!      |              ^                                 |                     |
//!      | clock:       | write failed:       +----------------------+          |
//!      | unmap, then  | stays dirty         | Resident, Clean   RO |          |
//!      | submit write |                     +----------------------+          |
//!      v              |                       ^        ^         |            |
//!   +----------------------+  write ok, a     |        |         | clock:     |
//!   | WritingBack          |  fault waited    |        |         | drop,      |
//!   | (unmapped)           | -----------------+        |         | no I/O     |
//!   +----------------------+  (kept, no read) (*)      |         v            |
//!      |                                               |    +--------+        |
//!      | write ok, nobody waited: frame freed          |    |        |        |
//!      +-----------------------------------------------|--> | OnDisk |        |
//!                                                      |    |        |        |
//!                              read ok                 |    +--------+        |
//!                   +----------------------------------+      |    ^          |
//!                   |                                         |    |          |
//!   +----------------------+ <-------- fault: submit read ----+    |          |
//!   | Reading              | -- read failed for good: waiters -----+          |
//!   | (unmapped)           |    get an abort                                  |
//!   +----------------------+ ---- read ok, a waiting fault writes ------------+
//!      |     ^
//!      +-----+ read failed: resubmit (at most read_retries times)
//!
//!   (*) or to Resident, Dirty (mapped RW) if a waiting fault is a write
//! ```
//!
//! | state | event | next state | the caller |
//! |---|---|---|---|
//! | `Zero` | read fault | `Resident` `Zero` | zeroes a frame, maps it RO |
//! | `Zero` | write fault | `Resident` `Dirty` | zeroes a frame, maps it RW |
//! | `Resident` `Zero`/`Clean` | write fault | `Resident` `Dirty` | makes the mapping RW |
//! | `Resident` `Zero` | clock takes the frame | `Zero` | unmaps; no I/O |
//! | `Resident` `Clean` | clock takes the frame | `OnDisk` | unmaps; no I/O |
//! | `Resident` `Dirty` | clock picks it | `WritingBack` | unmaps, then submits the write |
//! | `WritingBack` | fault | `WritingBack` | blocks the vCPU |
//! | `WritingBack` | write ok, nobody waited | `OnDisk` | nothing (frame freed) |
//! | `WritingBack` | write ok, faults waited | `Resident` `Clean` (`Dirty` if one writes) | maps, resumes them |
//! | `WritingBack` | write failed | `Resident` `Dirty` | maps RW, resumes waiters |
//! | `OnDisk` | fault | `Reading` | submits the read, blocks the vCPU |
//! | `Reading` | fault | `Reading` | blocks the vCPU (shared fetch) |
//! | `Reading` | read ok | `Resident` `Clean` (`Dirty` if one writes) | maps, resumes them |
//! | `Reading` | read failed, retries left | `Reading` | resubmits |
//! | `Reading` | read failed for good | `OnDisk` (unreadable) | injects an abort into each waiter |
//!
//! Exactly the resident pages are mapped in stage 2: [`Contents::Zero`] and [`Contents::Clean`]
//! pages read-only, [`Contents::Dirty`] pages read-write. Every other state is unmapped, in
//! particular both states with I/O in flight.
//!
//! # Rules, and why
//!
//! * **Dirtiness is tracked with write permission.** A clean page is mapped read-only, so its
//!   first write faults and [`FaultAction::Upgrade`] marks it dirty (its disk copy is stale from
//!   then on). No access-flag or dirty-bit hardware support is needed for correctness.
//! * **Never-written pages are never read**: a page in [`PageState::Zero`] is zero-filled into
//!   a frame; until it is written it is dropped without I/O and goes back to `Zero`.
//! * **Clean pages are dropped, never written**: their disk copy is still valid.
//! * **Only dirty pages are written back, and only unmapped.** When the clock picks a dirty
//!   page, the caller removes its stage-2 mapping and invalidates the TLBs (all vCPUs) *before*
//!   it submits the write. So the frame cannot change while the device reads it, and the disk
//!   gets the latest data. A guest access during the write faults and waits for the write to
//!   complete ([`FaultAction::WaitPage`]); then the page is kept in its frame (clean, since
//!   the disk now matches; dirty again if a waiting fault writes) and mapped again: no read,
//!   no cancellation, no race. This is the simplest rule that is correct: the only cost is that
//!   a page touched during its write-back waits for the rest of that write.
//! * **A frame returns to the pool only after its write-back succeeded.** A failed write leaves
//!   the page resident and dirty (mapped read-write again, with a second chance so the clock
//!   tries other frames first); it is written again on a later eviction. Nothing is lost.
//! * **A failed read is resubmitted** up to [`Config::read_retries`] times; then every fault
//!   waiting for it fails ([`Wake::Abort`]: the caller injects a synchronous external abort for
//!   that access). The page stays on disk, its frame is freed; a later access reads it again.
//!   The engine remembers that the page is **unreadable** ([`Overcommit::is_unreadable`])
//!   until a read of it succeeds, so that the caller can resolve faults on it synchronously
//!   (an asynchronous page fault's waiter cannot take the abort at its faulting instruction:
//!   it is only told to retry, and its retry must then wait for the read and get the abort).
//! * **Eviction is a clock (second chance).** A frame whose page was used since the hand last
//!   passed is skipped once ([`clock`]). The hypervisor supplies the use information: it reads
//!   and clears the stage-2 access flags in [`Overcommit::scan`], and every fault and mapping
//!   counts as a use. Dirty pages the hand passes are put to write-back (at most
//!   [`WRITEBACK_BATCH`] per fault) while it goes on looking for a clean one, so write-backs in
//!   flight never block a fault that can get another frame.
//! * **Clean pages are reclaimed in batches.** A fault that finds the free pool empty drops a
//!   batch of clean pages ([`reclaim_batch`], at most [`RECLAIM_BATCH`]) into it, so that the
//!   caller invalidates the TLBs once per batch rather than once per eviction.
//! * **Waiting for a frame**: when no frame is free, none is clean and unused, and no write-back
//!   can be started, or when a read cannot get a request slot, the fault waits
//!   ([`FaultAction::WaitIo`]). Some I/O is always in flight then, and every completion (except
//!   a resubmission) resumes all such waiters, who fault again.
//! * **At most `queue_depth` requests are in flight.** The engine never asks for more, so the
//!   caller never has to hold a request back. (Each request also holds a frame, so there are
//!   never more requests than frames either.)
//! * **With `R >= G`** every page gets a frame of its own: nothing is ever evicted, no I/O at
//!   all.
//!
//! # How the hypervisor drives it
//!
//! The engine is a sequential state machine: the hypervisor serializes the calls (one lock)
//! and **applies the stage-2 changes an answer asks for before the next call**, in the order
//! given (an unmap asked for later must not overtake a map asked for earlier). Submitting I/O
//! and resuming vCPUs may happen after the lock is dropped. Unmapping a page means: clear the
//! descriptor, `TLBI IPAS2E1IS` + `DSB ISH` + `TLBI VMALLE1IS` + `DSB ISH` (inner shareable,
//! so other vCPUs' TLBs forget it too), before the frame is reused or written out. Making a
//! read-only mapping writable needs no break-before-make; a stale read-only TLB entry at most
//! causes one more fault, answered with [`FaultAction::Map`].
//!
//! ```
//! use asyncpf_core::overcommit::*;
//!
//! // 64 MiB of guest RAM on 8 MiB of frames, 4 vCPUs.
//! let mut oc = Overcommit::new(Config::new(64 * PAGES_PER_MIB, 8 * PAGES_PER_MIB, 4)).unwrap();
//!
//! // A stage-2 fault of vCPU 1 on guest page 0x42, a write:
//! let fault = oc.fault(PageNo(0x42), true, Waiter(1)).unwrap();
//! // First unmap every dropped page and every write-back's page, then one TLBI.
//! assert!(fault.dropped.is_empty() && fault.writebacks.is_empty());
//! for write in fault.writebacks {
//!     // submit: write write.frame to write.page.sector()
//! }
//! match fault.action {
//!     FaultAction::Map { frame, writable } => { /* map, resume the vCPU */ }
//!     FaultAction::Upgrade { frame } => { /* make the mapping writable, resume */ }
//!     FaultAction::ZeroFill { frame, writable } => {
//!         // zero `frame`; map it; resume the vCPU
//!         assert!(writable);
//!     }
//!     FaultAction::StartRead { read } => { /* submit `read`; block the vCPU */ }
//!     FaultAction::WaitPage | FaultAction::WaitIo => { /* block the vCPU */ }
//! }
//!
//! // On a disk completion for a read request `id` (ok = the device said VIRTIO_BLK_S_OK):
//! # let id = RequestId(0);
//! if let Ok(done) = oc.read_done(id, true) {
//!     match done.done {
//!         Done::Map { page, frame, writable } => { /* map the page */ }
//!         Done::Resubmit(read) => { /* submit `read` again */ }
//!         Done::Evicted { .. } | Done::ReadFailed { .. } => {}
//!     }
//!     for wake in done.woken {
//!         match *wake {
//!             Wake::Resume(vcpu) => { /* resume: it retries its access */ }
//!             Wake::Abort(vcpu) => { /* inject a synchronous external abort, resume */ }
//!         }
//!     }
//! }
//! ```

pub mod clock;
mod frames;
mod ids;
mod pages;
mod requests;
mod waiters;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use ids::{FrameNo, PageNo, RequestId, Waiter, PAGE_SIZE, SECTORS_PER_PAGE, SECTOR_SIZE};
pub use pages::{Contents, PageState};
pub use requests::{Request, RequestKind};

use alloc::vec::Vec;
use clock::{Clock, Visit};
use core::fmt;
use frames::Frames;
use pages::Pages;
use requests::Requests;
use waiters::{WaitList, Waiters};

/// Pages (and frames) in one MiB.
pub const PAGES_PER_MIB: u32 = ((1 << 20) / PAGE_SIZE) as u32;
/// The least queue depth accepted: enough to overlap the write-backs of a batch with the reads
/// of several vCPUs.
pub const MIN_QUEUE_DEPTH: u16 = 16;
/// The queue depth of [`Config::new`].
pub const DEFAULT_QUEUE_DEPTH: u16 = 32;
/// How often [`Config::new`] resubmits a failed read before failing the faults.
pub const DEFAULT_READ_RETRIES: u32 = 3;
/// The most write-backs one fault starts while it looks for a clean frame: enough to keep the
/// disk busy when memory is mostly dirty, few enough not to evict much more than is needed.
pub const WRITEBACK_BATCH: usize = 8;
/// The most clean pages one fault reclaims when the free pool is empty (see
/// [`reclaim_batch`]). Every eviction needs a TLB invalidation on every CPU before the frame
/// is reused, and that is costly (under QEMU's TCG it stops every vCPU thread), so they are
/// batched; a batch is small next to the pool, so little is evicted early.
pub const RECLAIM_BATCH: usize = 32;

/// Clean pages reclaimed at once with `frames` frames: an eighth of the pool, from 1 to
/// [`RECLAIM_BATCH`].
pub const fn reclaim_batch(frames: usize) -> usize {
    let batch = frames / 8;
    if batch < 1 {
        1
    } else if batch > RECLAIM_BATCH {
        RECLAIM_BATCH
    } else {
        batch
    }
}
/// The most waiter ids accepted.
pub const MAX_WAITERS: u32 = 1 << 20;

/// Sizes and limits, fixed at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Guest pages (`G / 4 KiB`); also the number of disk slots.
    pub pages: u32,
    /// Host frames (`R / 4 KiB`).
    pub frames: u32,
    /// Requests that may be in flight at once, at least [`MIN_QUEUE_DEPTH`].
    pub queue_depth: u16,
    /// Waiter ids: `Waiter(0)` to `Waiter(waiters - 1)`.
    pub waiters: u32,
    /// How often a failed read is resubmitted before its faults fail.
    pub read_retries: u32,
}

impl Config {
    /// `pages` guest pages on `frames` host frames for `waiters` waiters (e.g. one per vCPU),
    /// with the default queue depth and read retries.
    pub const fn new(pages: u32, frames: u32, waiters: u32) -> Self {
        Config { pages, frames, queue_depth: DEFAULT_QUEUE_DEPTH, waiters, read_retries: DEFAULT_READ_RETRIES }
    }
}

/// Why a [`Config`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    NoPages,
    NoFrames,
    /// `queue_depth` below [`MIN_QUEUE_DEPTH`].
    QueueTooShallow(u16),
    /// No waiters, or more than [`MAX_WAITERS`].
    BadWaiterCount(u32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::NoPages => write!(f, "overcommit: the guest has no pages"),
            ConfigError::NoFrames => write!(f, "overcommit: no host frames"),
            ConfigError::QueueTooShallow(depth) => {
                write!(f, "overcommit: queue depth {depth} is below the minimum {MIN_QUEUE_DEPTH}")
            }
            ConfigError::BadWaiterCount(count) => {
                write!(f, "overcommit: {count} waiters is outside the supported range 1..={MAX_WAITERS}")
            }
        }
    }
}

/// A call the engine refused; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The page is beyond guest RAM.
    PageOutOfRange(PageNo),
    /// The waiter id is not below [`Config::waiters`].
    UnknownWaiter(Waiter),
    /// The waiter already waits for an earlier fault.
    AlreadyWaiting(Waiter),
    /// No request of that kind with that id is in flight.
    NotInFlight(RequestId),
    /// [`Overcommit::pin`]: the page is not resident (fault it in first).
    NotResident(PageNo),
    /// [`Overcommit::pin`]: half of the frames are pinned already.
    TooManyPins,
    /// [`Overcommit::unpin`]: the page is not pinned.
    NotPinned(PageNo),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::PageOutOfRange(page) => write!(f, "overcommit: {page} is beyond guest RAM"),
            Error::UnknownWaiter(waiter) => write!(f, "overcommit: unknown {waiter}"),
            Error::AlreadyWaiting(waiter) => {
                write!(f, "overcommit: {waiter} already waits for a fault")
            }
            Error::NotInFlight(id) => {
                write!(f, "overcommit: {id} is not in flight (or of the other kind)")
            }
            Error::NotResident(page) => write!(f, "overcommit: {page} is not resident"),
            Error::TooManyPins => write!(f, "overcommit: half of the frames are pinned already"),
            Error::NotPinned(page) => write!(f, "overcommit: {page} is not pinned"),
        }
    }
}

/// What the caller does about a fault. "Resume" means: return to the guest at the faulting
/// instruction, which then accesses the page again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// The page is resident: map `frame` with this permission (if it is not mapped so already)
    /// and resume. This answers a fault raced by another vCPU's fault or a completion, or a
    /// stale TLB entry.
    Map { frame: FrameNo, writable: bool },
    /// First write to a clean resident page, which is now dirty (its disk copy is stale): make
    /// its mapping of `frame` writable and resume.
    Upgrade { frame: FrameNo },
    /// A never-written page got `frame`: fill it with zeros, map it (writable if `writable`)
    /// and resume. No disk read. (After the answer's unmaps: the frame may be a dropped page's.)
    ZeroFill { frame: FrameNo, writable: bool },
    /// The page is on disk and is read into `read.frame`: submit `read` (after the answer's
    /// unmaps). The waiter is blocked until [`Overcommit::read_done`] wakes it.
    StartRead { read: Request },
    /// The page is being read or written back: the waiter is blocked until that request's
    /// completion wakes it.
    WaitPage,
    /// No frame or request slot can be had now: the waiter is blocked until the next
    /// completion wakes it, and then faults again. I/O is always in flight when this is
    /// returned.
    WaitIo,
}

/// The answer to a fault: the action for the faulting waiter, and what the frame search did.
/// The caller first removes the mappings of every `dropped` page and of every write-back's
/// page, invalidates the TLBs once for all of them, and only then submits the write-backs and
/// carries out the action.
#[derive(Debug, PartialEq, Eq)]
pub struct Fault<'a> {
    pub action: FaultAction,
    /// Clean pages the clock reclaimed into the free pool (their disk slot, or zero, has their
    /// contents): a batch, so that one TLB invalidation serves many evictions.
    pub dropped: &'a [PageNo],
    /// Dirty pages put to write-back.
    pub writebacks: &'a [Request],
}

/// What a completion did to its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Map `page` at `frame` (writable if `writable`), then act on the wake-ups. After a read;
    /// after a write-back that faults waited for (the page stays); after a failed write-back
    /// (the page stays, dirty).
    Map { page: PageNo, frame: FrameNo, writable: bool },
    /// The read failed and is retried: submit this request again (same id, page and frame).
    /// Nobody is woken.
    Resubmit(Request),
    /// The write-back succeeded and nobody waited: the page is on disk, `frame` is free.
    Evicted { page: PageNo, frame: FrameNo },
    /// The read failed for good: the page stays on disk; its waiters are aborted.
    ReadFailed { page: PageNo },
}

/// A waiter to wake after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Resume it: its access is retried (and succeeds, or faults again).
    Resume(Waiter),
    /// Its fault failed: inject a synchronous external abort for the access.
    Abort(Waiter),
}

/// The answer to a completion.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<'a> {
    pub done: Done,
    /// Each waiter appears at most once; every waiter blocked by a fault is woken exactly once.
    pub woken: &'a [Wake],
}

/// Event counts since construction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful reads from disk.
    pub page_ins: u64,
    /// Pages that left memory: clean drops plus write-backs that freed their frame.
    pub page_outs: u64,
    /// Never-written pages given a zeroed frame.
    pub zero_fills: u64,
    /// Clean pages whose frame was reused without I/O.
    pub clean_drops: u64,
    /// Successful writes of dirty pages.
    pub dirty_writebacks: u64,
    /// Failed requests, reads and writes.
    pub io_errors: u64,
    /// Reads resubmitted after a failure.
    pub retries: u64,
    /// Faults that joined a read of their page already in flight.
    pub shared_fetches: u64,
    /// Reads started (not counting resubmissions).
    pub reads_started: u64,
    /// Write-backs started.
    pub writebacks_started: u64,
    /// Write-permission upgrades of clean pages.
    pub upgrades: u64,
    /// Faults that waited for a write-back of their page.
    pub writeback_waits: u64,
    /// Write-backs after which the page stayed because faults waited for it.
    pub rescues: u64,
    /// Faults that waited for a frame or a request slot.
    pub frame_waits: u64,
    /// Reads that failed for good.
    pub failed_reads: u64,
    /// Write-backs that failed (the page stays resident and dirty).
    pub failed_writes: u64,
    /// Waiters woken with [`Wake::Abort`].
    pub aborts: u64,
}

/// The overcommit engine: page states, frame pool, clock, request table and wait lists.
pub struct Overcommit {
    config: Config,
    pages: Pages,
    frames: Frames,
    clock: Clock,
    requests: Requests,
    waiters: Waiters,
    /// Faults waiting for a frame or a request slot.
    frame_waiters: WaitList,
    counters: Counters,
    /// The write-backs of the current fault's answer (capacity [`WRITEBACK_BATCH`]).
    writebacks: Vec<Request>,
    /// The clean pages the current fault's answer dropped (capacity [`reclaim_batch`]).
    dropped: Vec<PageNo>,
    /// The wake-ups of the current completion's answer (capacity: the number of waiters).
    woken: Vec<Wake>,
}

impl Overcommit {
    /// All pages never written, all frames free. Allocates everything it will ever need.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        if config.pages == 0 {
            return Err(ConfigError::NoPages);
        }
        if config.frames == 0 {
            return Err(ConfigError::NoFrames);
        }
        if config.queue_depth < MIN_QUEUE_DEPTH {
            return Err(ConfigError::QueueTooShallow(config.queue_depth));
        }
        if !(1..=MAX_WAITERS).contains(&config.waiters) {
            return Err(ConfigError::BadWaiterCount(config.waiters));
        }
        Ok(Overcommit {
            config,
            pages: Pages::new(config.pages),
            frames: Frames::new(config.frames),
            clock: Clock::new(),
            requests: Requests::new(config.queue_depth),
            waiters: Waiters::new(config.waiters),
            frame_waiters: WaitList::EMPTY,
            counters: Counters::default(),
            writebacks: Vec::with_capacity(WRITEBACK_BATCH),
            dropped: Vec::with_capacity(reclaim_batch(config.frames as usize)),
            woken: Vec::with_capacity(config.waiters as usize),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The state of `page`, `None` beyond guest RAM.
    pub fn state(&self, page: PageNo) -> Option<PageState> {
        (page.index() < self.pages.len()).then(|| self.pages.get(page))
    }

    /// The request `id`, if it is in flight.
    pub fn request(&self, id: RequestId) -> Option<Request> {
        self.requests.get(id).map(|entry| entry.request)
    }

    /// Requests in flight (never more than the queue depth).
    pub fn in_flight(&self) -> usize {
        self.requests.in_flight()
    }

    /// Frames in the free pool.
    pub fn free_frames(&self) -> usize {
        self.frames.free_count()
    }

    /// Whether `page` is known to be unreadable: its last read failed for good (its waiters
    /// were aborted) and no read of it has succeeded since. `false` beyond guest RAM.
    pub fn is_unreadable(&self, page: PageNo) -> bool {
        page.index() < self.pages.len() && self.pages.is_unreadable(page)
    }

    /// How many pages are [unreadable](Self::is_unreadable) (0 in any run without read errors,
    /// so a caller can skip asking about each page).
    pub fn unreadable_pages(&self) -> usize {
        self.pages.unreadable_count()
    }

    /// The [unreadable](Self::is_unreadable) pages, in ascending order (O(pages / 64)).
    pub fn unreadable(&self) -> impl Iterator<Item = PageNo> + '_ {
        self.pages.unreadable()
    }

    /// Whether `waiter` is blocked by a fault (and will be woken by a completion).
    pub fn is_waiting(&self, waiter: Waiter) -> bool {
        self.waiters.contains(waiter) && self.waiters.is_waiting(waiter)
    }

    /// A stage-2 fault by `waiter` on `page`; `is_write` for a write access (or a write
    /// permission fault). The answer says what to do; see [`FaultAction`] and [`Fault`].
    pub fn fault(&mut self, page: PageNo, is_write: bool, waiter: Waiter) -> Result<Fault<'_>, Error> {
        if page.index() >= self.pages.len() {
            return Err(Error::PageOutOfRange(page));
        }
        if !self.waiters.contains(waiter) {
            return Err(Error::UnknownWaiter(waiter));
        }
        if self.waiters.is_waiting(waiter) {
            return Err(Error::AlreadyWaiting(waiter));
        }
        self.writebacks.clear();
        self.dropped.clear();
        let action = match self.pages.get(page) {
            PageState::Resident { frame, contents } => {
                self.frames.set_referenced(frame);
                if is_write && !contents.writable() {
                    let contents = Contents::Dirty;
                    self.pages.set(page, PageState::Resident { frame, contents });
                    self.counters.upgrades += 1;
                    FaultAction::Upgrade { frame }
                } else {
                    let writable = contents.writable();
                    FaultAction::Map { frame, writable }
                }
            }
            PageState::Reading(id) => {
                self.join(id, RequestKind::Read, is_write, waiter);
                self.counters.shared_fetches += 1;
                FaultAction::WaitPage
            }
            PageState::WritingBack(id) => {
                self.join(id, RequestKind::Write, is_write, waiter);
                self.counters.writeback_waits += 1;
                FaultAction::WaitPage
            }
            PageState::Zero => match self.find_frame(page, 0) {
                Some(frame) => {
                    let contents = if is_write { Contents::Dirty } else { Contents::Zero };
                    self.pages.set(page, PageState::Resident { frame, contents });
                    self.frames.set_referenced(frame);
                    self.counters.zero_fills += 1;
                    FaultAction::ZeroFill { frame, writable: is_write }
                }
                None => self.wait_io(waiter),
            },
            PageState::OnDisk => {
                // The read needs a request slot: keep one out of the frame search's
                // write-backs, and do not even look for a frame if there is none.
                let found = match self.requests.available() {
                    0 => None,
                    _ => self.find_frame(page, 1),
                };
                match found {
                    Some(frame) => {
                        let read = self
                            .requests
                            .start(RequestKind::Read, page, frame)
                            .expect("the frame search left a request slot");
                        self.pages.set(page, PageState::Reading(read.id));
                        self.counters.reads_started += 1;
                        self.join(read.id, RequestKind::Read, is_write, waiter);
                        FaultAction::StartRead { read }
                    }
                    None => self.wait_io(waiter),
                }
            }
        };
        Ok(Fault { action, dropped: &self.dropped, writebacks: &self.writebacks })
    }

    /// The device completed read `id`; `ok` if it succeeded (the frame holds the slot's data).
    pub fn read_done(&mut self, id: RequestId, ok: bool) -> Result<Completion<'_>, Error> {
        let retries = self.config.read_retries;
        let entry = self.requests.get_mut(id, RequestKind::Read).ok_or(Error::NotInFlight(id))?;
        self.woken.clear();
        let Request { page, frame, .. } = entry.request;
        let done = if ok {
            let entry = self.requests.finish(id);
            let contents = if entry.want_write { Contents::Dirty } else { Contents::Clean };
            self.pages.set(page, PageState::Resident { frame, contents });
            self.pages.set_unreadable(page, false);
            self.frames.set_referenced(frame);
            self.counters.page_ins += 1;
            self.wake(entry.waiters, Wake::Resume);
            Done::Map { page, frame, writable: contents.writable() }
        } else {
            self.counters.io_errors += 1;
            if entry.failures < retries {
                entry.failures += 1;
                self.counters.retries += 1;
                return Ok(Completion { done: Done::Resubmit(entry.request), woken: &[] });
            }
            let entry = self.requests.finish(id);
            self.pages.set(page, PageState::OnDisk);
            self.pages.set_unreadable(page, true);
            self.frames.release(frame);
            self.counters.failed_reads += 1;
            self.wake(entry.waiters, Wake::Abort);
            Done::ReadFailed { page }
        };
        self.wake(self.frame_waiters, Wake::Resume);
        self.frame_waiters = WaitList::EMPTY;
        Ok(Completion { done, woken: &self.woken })
    }

    /// The device completed write-back `id`; `ok` if it succeeded (the slot holds the frame's
    /// data).
    pub fn write_done(&mut self, id: RequestId, ok: bool) -> Result<Completion<'_>, Error> {
        if self.requests.get_mut(id, RequestKind::Write).is_none() {
            return Err(Error::NotInFlight(id));
        }
        self.woken.clear();
        let entry = self.requests.finish(id);
        let Request { page, frame, .. } = entry.request;
        let done = if !ok {
            // The slot may hold a torn write; the frame is the only good copy. Keep it, dirty.
            self.counters.io_errors += 1;
            self.counters.failed_writes += 1;
            let contents = Contents::Dirty;
            self.pages.set(page, PageState::Resident { frame, contents });
            self.frames.set_referenced(frame);
            Done::Map { page, frame, writable: true }
        } else if entry.waiters.is_empty() {
            self.counters.dirty_writebacks += 1;
            self.pages.set(page, PageState::OnDisk);
            self.frames.release(frame);
            self.counters.page_outs += 1;
            Done::Evicted { page, frame }
        } else {
            self.counters.dirty_writebacks += 1;
            self.counters.rescues += 1;
            let contents = if entry.want_write { Contents::Dirty } else { Contents::Clean };
            self.pages.set(page, PageState::Resident { frame, contents });
            self.frames.set_referenced(frame);
            Done::Map { page, frame, writable: contents.writable() }
        };
        self.wake(entry.waiters, Wake::Resume);
        self.wake(self.frame_waiters, Wake::Resume);
        self.frame_waiters = WaitList::EMPTY;
        Ok(Completion { done, woken: &self.woken })
    }

    /// The access-flag scan: for every resident page, `accessed(page)` reads and clears its
    /// stage-2 access flag (and says whether it was set); accessed pages get a second chance
    /// from the clock. O(frames).
    pub fn scan(&mut self, mut accessed: impl FnMut(PageNo) -> bool) {
        for index in 0..self.frames.len() {
            let frame = FrameNo(index as u32);
            let Some(page) = self.frames.owner(frame) else {
                continue;
            };
            if matches!(self.pages.get(page), PageState::Resident { .. }) && accessed(page) {
                self.frames.set_referenced(frame);
            }
        }
    }

    /// Keeps resident `page` in its frame until [`Self::unpin`] (pins count): the clock passes
    /// over it, so it is never evicted or written back meanwhile. For pages the hypervisor
    /// writes itself (the asynchronous page fault records). The page becomes dirty, since those
    /// writes make its disk copy stale: the caller maps the returned frame read-write. At most
    /// half of the frames can be pinned, so that eviction can always go on.
    pub fn pin(&mut self, page: PageNo) -> Result<FrameNo, Error> {
        let Some(state) = self.state(page) else {
            return Err(Error::PageOutOfRange(page));
        };
        let PageState::Resident { frame, contents } = state else {
            return Err(Error::NotResident(page));
        };
        if !self.frames.is_pinned(frame) && 2 * (self.frames.pinned_count() + 1) > self.frames.len() {
            return Err(Error::TooManyPins);
        }
        if contents != Contents::Dirty {
            self.pages.set(page, PageState::Resident { frame, contents: Contents::Dirty });
        }
        self.frames.pin(frame);
        Ok(frame)
    }

    /// Drops one pin of `page` (see [`Self::pin`]); the clock may take it again once none is left.
    pub fn unpin(&mut self, page: PageNo) -> Result<(), Error> {
        match self.state(page) {
            None => Err(Error::PageOutOfRange(page)),
            Some(PageState::Resident { frame, .. }) if self.frames.unpin(frame) => Ok(()),
            Some(_) => Err(Error::NotPinned(page)),
        }
    }

    /// Gives `page` a second chance from the clock if it is resident (the caller found its
    /// access flag set).
    pub fn mark_accessed(&mut self, page: PageNo) -> Result<(), Error> {
        match self.state(page) {
            None => Err(Error::PageOutOfRange(page)),
            Some(PageState::Resident { frame, .. }) => {
                self.frames.set_referenced(frame);
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// Adds `waiter` to the waiters of in-flight request `id`.
    fn join(&mut self, id: RequestId, kind: RequestKind, is_write: bool, waiter: Waiter) {
        let entry = self.requests.get_mut(id, kind).expect("a page with I/O in flight names its request");
        entry.want_write |= is_write;
        self.waiters.push(&mut entry.waiters, waiter);
    }

    /// Blocks `waiter` until the next completion.
    fn wait_io(&mut self, waiter: Waiter) -> FaultAction {
        // Otherwise nothing would ever wake it. The frame search guarantees it: with nothing in
        // flight every frame is resident, so a clean one is found or a write-back started.
        debug_assert!(self.requests.in_flight() > 0, "waiting with no I/O in flight");
        self.waiters.push(&mut self.frame_waiters, waiter);
        self.counters.frame_waits += 1;
        FaultAction::WaitIo
    }

    /// Moves everyone in `list` to the answer's wake-ups.
    fn wake(&mut self, mut list: WaitList, how: fn(Waiter) -> Wake) {
        let Overcommit { waiters, woken, counters, .. } = self;
        waiters.drain(&mut list, |waiter| {
            let wake = how(waiter);
            counters.aborts += u64::from(matches!(wake, Wake::Abort(_)));
            woken.push(wake);
        });
    }

    /// A frame for `page` from the free pool. When the pool is empty the clock first reclaims
    /// a batch ([`reclaim_batch`]) of clean pages into it (the answer's `dropped`), and puts
    /// dirty pages it passes to write-back, leaving `reserve` request slots free. `None` if no
    /// frame can be had now.
    fn find_frame(&mut self, page: PageNo, reserve: usize) -> Option<FrameNo> {
        if self.frames.free_count() == 0 {
            self.reclaim(reserve);
        }
        self.frames.allocate(page)
    }

    /// Moves the clock hand to drop up to a batch of clean pages into the free pool (each
    /// becomes [`PageState::Zero`] or [`PageState::OnDisk`]), starting write-backs of the dirty
    /// pages it passes while request slots beyond `reserve` are left.
    fn reclaim(&mut self, reserve: usize) {
        let Overcommit { pages, frames, clock, requests, writebacks, dropped, counters, .. } = self;
        let batch = reclaim_batch(frames.len());
        let can_write_back = |requests: &Requests, writebacks: &Vec<Request>| {
            requests.available() > reserve && writebacks.len() < WRITEBACK_BATCH
        };
        while dropped.len() < batch {
            if pages.clean_resident() == 0 && !can_write_back(requests, writebacks) {
                return;
            }
            let have_frames = !dropped.is_empty();
            let taken = clock.sweep(frames, |frame, owner| match pages.get(owner) {
                PageState::Resident { contents: Contents::Dirty, .. } => {
                    if can_write_back(requests, writebacks) {
                        let write = requests
                            .start(RequestKind::Write, owner, frame)
                            .expect("can_write_back checked for a slot");
                        pages.set(owner, PageState::WritingBack(write.id));
                        writebacks.push(write);
                        counters.writebacks_started += 1;
                        if pages.clean_resident() == 0 && !can_write_back(requests, writebacks) {
                            Visit::Stop
                        } else {
                            Visit::Pass
                        }
                    } else if have_frames || pages.clean_resident() == 0 {
                        // No write-back can start: rather than let this dirty page skip a
                        // round, end the batch here (the hand stays on it) once this fault has
                        // a frame. The batch then evicts in the order single evictions would.
                        Visit::Stop
                    } else {
                        Visit::Pass
                    }
                }
                PageState::Resident { .. } => Visit::Take,
                PageState::Reading(_) | PageState::WritingBack(_) => Visit::Pass,
                PageState::Zero | PageState::OnDisk => unreachable!("{owner} owns {frame}"),
            });
            let Some(frame) = taken else {
                return;
            };
            let victim = frames.owner(frame).expect("the clock takes owned frames");
            let PageState::Resident { contents, .. } = pages.get(victim) else {
                unreachable!("the clock takes resident frames");
            };
            // Clean: the disk slot (or, for a never-written page, zero) still has the contents.
            let state = match contents {
                Contents::Zero => PageState::Zero,
                _ => PageState::OnDisk,
            };
            pages.set(victim, state);
            counters.clean_drops += 1;
            counters.page_outs += 1;
            frames.release(frame);
            dropped.push(victim);
        }
    }
}
