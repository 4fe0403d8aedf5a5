//! The pager: memory overcommit in the hypervisor. Guest RAM (`guest_mib`) lives on `resident_mib`
//! of host frames; the rest is on the backing store (a virtio-blk disk only the hypervisor sees).
//!
//! The decisions (which frame, which victim, when to write back, who waits for what) are
//! `asyncpf_core::overcommit`'s, host-tested there. This module does what they say: it edits
//! stage 2 ([`GuestPages`]), zeroes frames, submits and completes disk requests, parks the
//! faulting vCPU until its page is back (synchronous page-in: its physical CPU sleeps in `wfi`
//! until the disk's interrupt or the latency timer), and resumes or aborts it.
//!
//! This file is the engine's glue (faults, pins, completions, the scan, the counters); `lock.rs`
//! has the lock's protocol (take, release and what follows it, the poll an interrupt leaves to
//! the holder), `wait.rs` the waits and the model clock they run on.
//!
//! The pager sits below the VM and the APF service: it wakes CPUs itself (`gic::kick`; vCPU `n`
//! runs on physical CPU [`vcpus::pcpu_of`]`(n)`) and hands the asynchronous faults whose page is
//! back to the function the VM installs ([`Pager::on_async_completion`]).
//!
//! # Locking and interrupts
//! One spin lock serializes the engine, the disk and stage-2 edits, as the engine requires.
//! Every CPU that runs a vCPU may take the lock: on a stage-2 fault of its vCPU, on the disk's
//! SPI (routed to CPU 0), and on its own EL2 timer (`gic::PPI_HYP_TIMER`), which the CPU that last
//! polled the disk arms for the earliest latency deadline. So some CPU's timer always covers
//! the earliest held completion.
//!
//! The lock is held as briefly as possible, because under QEMU's TCG with more vCPUs than host
//! cores a spinning CPU steals the host time its holder needs (measured: 4 vCPUs on 2 host cores
//! spent most of their time spinning here). So:
//! * a timer interrupt never waits for the lock: if it is taken, the CPU sets
//!   [`Pager::poll_wanted`] and goes on, and whoever holds the lock polls the disk again after
//!   releasing it ([`PagerGuard`]'s drop; the flag and the lock are ordered by `SeqCst` fences,
//!   so one of the two always sees the other);
//! * vCPUs woken under the lock are kicked after it is released ([`Pager::kicks`]), and the
//!   disk's doorbell is rung and its interrupt acknowledged outside it
//!   ([`backing::DeviceRegisters`]): MMIO is the slowest thing the pager does;
//! * clean pages are evicted in batches (`asyncpf_core::overcommit::reclaim_batch`), so one
//!   broadcast TLB invalidation serves many evictions;
//! * an access-flag fault on a mapped page sets the flag without the lock;
//! * a waiting CPU reads the earliest latency deadline from [`Pager::earliest_due`].
//!
//! # Waiting
//! A blocked vCPU's wait cell (`asyncpf_core::handoff::WaitCell`) is set to `Waiting` under the
//! lock, before the lock is released; whoever processes the completion that wakes it (under the
//! lock) resolves it and kicks its CPU with an SGI, which stays pending until `wfi`, so no
//! wake-up is lost (`asyncpf_core::handoff` has the rules and their loom models).
//!
//! # Virtual time
//! Under QEMU's `-icount` (option `icount=1`) time is counted in instructions and QEMU jumps it
//! to the earliest armed timer whenever every CPU sleeps, while the disk completes requests in
//! host time. So that no figure depends on the host (`asyncpf_core::latency`,
//! docs/architecture.md "Repeatable virtual time"):
//! * the EL2 timer covers every outstanding deadline, and the disk's SPI stays disabled;
//! * a deadline that passes before the device finished its request makes the pager *late*:
//!   model time is pinned, every CPU sleeps with no timer armed ([`Pager::hold_while_late`],
//!   `Pager::frozen_wfi`) and the disk's SPI, enabled meanwhile, ends it;
//! * completions are reported in deadline order, and requests are accepted whatever the state
//!   of the virtqueue;
//! * with one vCPU, model time is the counter minus `Pager::hidden` ticks: it stands still from
//!   the start of every poll until the CPU enters the guest or sleeps ([`Pager::close_window`]),
//!   and during the virtqueue work of every lock release; the completion work itself is charged
//!   back (`Pager::charge`); the guest's counter follows through CNTVOFF_EL2;
//! * with one vCPU, every sleep with timers armed (a waiting vCPU's, the guest's trapped WFI)
//!   ends in model time at the deadline that ended it: how far QEMU's jump overshot it, which
//!   depends on the host, is hidden too ([`Pager::timed_wfi`]).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::registers::{Readable, Writeable, CNTV_CTL_EL0};
use asyncpf_core::apf::cost::Ewma;
use asyncpf_core::apf::slots::WaiterIds;
use asyncpf_core::handoff::{CpuSet, LockSleepers, WaitCell};
use asyncpf_core::histogram::Histogram;
use asyncpf_core::latency::{HoldSpan, TimeBase};
use asyncpf_core::overcommit::{
    Config, Done, FaultAction, FrameNo, Overcommit, PageNo, Request, RequestId, RequestKind, Waiter, Wake,
    PAGES_PER_MIB,
};
use asyncpf_core::trap::{FaultStatus, Stage2Abort};
use spin::Once;

use crate::backing::{self, clock, BackingStore, Busy, Completion, DeviceRegisters, Op, Ticks};
use crate::mm::{Access, GuestPages, PhysAddr, PAGE_SIZE};
use crate::platform::Platform;
use crate::sync::Mutex;
use crate::{arch, gic, guest_diag};

mod lock;
mod wait;

use asyncpf_core::lockorder::Level;

pub use asyncpf_core::handoff::Resolution;

/// What the vCPU does after [`Pager::fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReply {
    /// Re-enter the guest at the faulting instruction.
    Retry,
    /// Wait with [`Pager::wait`] first.
    Blocked,
    /// Inject a synchronous external abort (a request the engine refused; logged).
    Abort,
}

struct VcpuWait {
    /// The blocked fault's hand-over between this vCPU and the CPU that completes its page.
    cell: WaitCell,
    /// When the blocked fault was taken (counter ticks).
    since: AtomicU64,
    /// Model ticks this vCPU spent in [`Pager::wait`], in all.
    waited: AtomicU64,
}

/// A vCPU's model time and its time spent waiting for pages until then ([`Pager::stamp`]).
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub at: u64,
    pub waited: u64,
}

/// Everything under the lock.
struct Locked {
    engine: Overcommit,
    disk: BackingStore,
    /// Requests the disk refused for now ([`Busy`]: its virtqueue is full); submitted, in
    /// order, as soon as completions free a slot.
    backlog: VecDeque<Request>,
    completions: Vec<Completion>,
    /// Asynchronous faults (their engine waiter ids) whose page is back, handed to the APF service
    /// after the lock is released.
    apf_done: Vec<u32>,
    /// How long blocked faults waited, in nanoseconds.
    stalls: Histogram,
    /// How long disk requests took from submission to being reported, in nanoseconds.
    requests: Histogram,
    /// The moving average of reads' submission-to-completion time, in model ticks (the park or
    /// wait rule, `asyncpf_core::apf::cost`); published in `Pager::read_latency_avg`.
    read_latency: Ewma,
    /// Frames handed out (zero-fills and reads) since the last access-flag scan.
    since_scan: u32,
    scans: u64,
    blocking_faults: u64,
    engine_refusals: u64,
    /// Stage-2 aborts on guest RAM with a fault status the pager does not handle.
    other_faults: u64,
}

/// The pager of the VM's RAM.
pub struct Pager {
    locked: Mutex<Locked>,
    /// A CPU's pager interrupt found the lock taken: the holder polls the disk after releasing
    /// it (see the module documentation).
    poll_wanted: AtomicBool,
    /// vCPUs woken under the lock, to be kicked once it is released: bit `n` is vCPU `n`, on
    /// physical CPU `vcpus::pcpu_of(n)`.
    kicks: CpuSet,
    /// Physical CPUs sleeping until the lock is released (bit `n`: CPU `n`), kicked by the
    /// releaser before its deferred work.
    lock_sleepers: LockSleepers,
    /// Each physical CPU's MPIDR, by CPU index: where kicks go.
    cpu_mpidrs: Vec<u64>,
    /// Where asynchronous completions go ([`Pager::on_async_completion`]).
    async_completion: Once<AsyncCompletion>,
    /// The earliest latency deadline of an outstanding request (counter ticks; `u64::MAX`:
    /// none), published under the lock for waiting CPUs' timers.
    earliest_due: AtomicU64,
    /// How many pages the engine knows to be unreadable, published under the lock, so that
    /// [`Pager::is_unreadable`] takes the lock only in runs with read errors.
    unreadable_pages: AtomicU64,
    /// `Locked::read_latency`'s average in model ticks (`u64::MAX`: no read yet), for
    /// [`Pager::expected_read_ticks`] without the lock.
    read_latency_avg: AtomicU64,
    /// Counted without the lock: access-flag faults, the disk's and the EL2 timer's interrupts.
    access_flag_faults: AtomicU64,
    device_irqs: AtomicU64,
    timer_irqs: AtomicU64,
    /// Polls that found the lock taken and left the poll to its holder (`mem.poll_contended`).
    poll_contended: AtomicU64,
    /// Times a waiting CPU found the earliest deadline passed while the lock's holder still
    /// owed the poll, and slept without a timer instead of re-arming it at once
    /// (`mem.wait_timer_deferred`; see `asyncpf_core::latency::wait_timer`).
    wait_timer_deferred: AtomicU64,
    /// What the counter measures: in virtual time (`icount=1`) the pager holds time still
    /// while the device is late (see "Virtual time" in the module documentation).
    time_base: TimeBase,
    /// Virtual time: a request's deadline has passed and the device has not finished it, so
    /// every CPU sleeps with no timer armed ([`Pager::hold_while_late`]). Written under the lock.
    late: AtomicBool,
    /// Virtual time: the model time at which model time stands still (`u64::MAX`: it runs),
    /// from the start of a poll that found a request late until the device caught up, and, with
    /// `hide`, from the start of any poll until the CPU next sleeps or enters the guest
    /// ([`Pager::close_window`]).
    pinned: AtomicU64,
    /// Counter ticks that are not model time: what a poll and a hold cost, which depends on the
    /// host. Model time is the counter minus these; the guest's virtual counter (CNTVOFF_EL2)
    /// leaves them out too. Only with `hide`.
    hidden: AtomicU64,
    /// Hide the windows from model time: virtual time with one vCPU. With more, the others
    /// run while one CPU polls, and their guest time must not go backwards.
    hide: bool,
    /// Virtual time with more than one vCPU: hide what the CPUs do while every one of them is
    /// held for a late request ([`HoldSpan`]). No guest instruction runs then, so no guest
    /// clock goes backwards; what they do (polls that find the device still late, woken by
    /// its interrupt as the host finishes other requests) depends on the host.
    hold_hiding: bool,
    /// With `hold_hiding`: which CPUs are held (in [`Pager::hold_while_late`], a synchronous
    /// wait or [`Pager::idle_wfi`] while a request is late), and since when all that run vCPUs
    /// are: that span is hidden from model time and every guest's counter (CNTVOFF_EL2).
    hold: Mutex<HoldSpan>,
    /// With `hide`, counter ticks spent while model time is pinned on work that is the same in
    /// every run (completing a request in the engine, mapping its page, waking its waiter,
    /// posting page_ready): `close_window` lets model time advance by them, so the guest pays
    /// for the hypervisor's completion work but not for the device's bookkeeping or a hold.
    charge: AtomicU64,
    /// With `hide`, the guest's CNTV_CTL_EL0 while model time is pinned (its timer is disabled
    /// meanwhile: it counts model time, and must not fire on ticks that will be hidden).
    saved_cntv: AtomicU64,
    /// Times `late` was entered (`mem.device_late_freezes`).
    late_freezes: AtomicU64,
    /// Counter ticks that passed across `wfi` while time was held (`mem.held_sleep_us`): 0
    /// when QEMU had no timer to advance virtual time to.
    held_sleep_ticks: AtomicU64,
    held_sleeps: AtomicU64,
    /// Per CPU: counter ticks asleep in `wfi` waiting for a page (synchronous fault), held
    /// for a late request, and waiting for the lock (`mem.sleep_us_by_cpu`): time that vCPU
    /// ran nothing, though its guest was not idle.
    sleep_ticks: [[AtomicU64; SLEEP_KINDS]; MAX_CPUS],
    waits: Vec<VcpuWait>,
    pages: GuestPages,
    /// Host address of frame 0; frames are contiguous.
    frames: PhysAddr,
    disk_intid: u32,
    /// The disk's doorbell and interrupt acknowledgement, used outside the lock.
    disk_registers: DeviceRegisters,
    guest_mib: u64,
    resident_mib: u64,
    latency_us: u64,
    /// Frames handed out between two access-flag scans.
    scan_interval: u32,
}

static PAGER: Once<Pager> = Once::new();

/// Receives the engine waiter id of an asynchronous fault whose page is back (after the pager
/// lock is released).
pub type AsyncCompletion = fn(&Pager, u32);

/// Engine waiter ids: one per vCPU for its synchronous faults, then one per token slot of each
/// vCPU's asynchronous ones ([`WaiterIds`]).
fn waiter_count(vcpus: usize) -> u32 {
    WaiterIds::new(vcpus).count()
}

/// The kinds of [`Pager::sleep_ticks`]: waiting for a page, held, waiting for the lock.
const SLEEP_KINDS: usize = 3;
const SLEEP_WAIT: usize = 0;
const SLEEP_HELD: usize = 1;
const SLEEP_LOCK: usize = 2;
/// CPUs counted in [`Pager::sleep_ticks`] (the hypervisor's limit).
const MAX_CPUS: usize = 8;

/// CNTV_CTL_EL0.ENABLE.
const CNTV_CTL_ENABLE: u64 = 1;

/// Asynchronous completions handed to the APF service per lock release (the rest at the next).
const APF_DONE_BATCH: usize = 32;

/// Tries a CPU spins for the lock before it sleeps until the lock is released: under QEMU's
/// TCG with more vCPUs than host cores, a spinning vCPU thread takes the host time that the
/// lock's holder (possibly descheduled) and QEMU's I/O threads need, so waiters sleep early.
const LOCK_SPINS: u32 = 100;

/// The shortest interval at which a waiting CPU polls the disk in host time (see
/// `Pager::arm_wait_timer`).
const MIN_WAIT_POLL_US: u64 = 100;

/// The pager, if the VM's RAM is paged (`resident_mib` given).
pub fn get() -> Option<&'static Pager> {
    PAGER.get()
}

/// Why the pager could not start.
#[derive(Debug)]
pub enum PagerError {
    Backing(backing::BackingError),
    /// The disk has fewer slots than guest RAM has pages.
    DiskTooSmall {
        slots: u64,
        pages: u64,
    },
    Config(asyncpf_core::overcommit::ConfigError),
}

impl core::fmt::Display for PagerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Backing(e) => write!(f, "backing store: {e}"),
            Self::DiskTooSmall { slots, pages } => {
                write!(f, "the backing disk has {slots} 4 KiB slots but guest RAM has {pages} pages")
            }
            Self::Config(e) => write!(f, "{e}"),
        }
    }
}

/// The parameters of [`start`].
pub struct PagerSetup {
    pub guest_mib: u64,
    pub resident_mib: u64,
    pub latency_us: u64,
    /// Host time, or virtual time (QEMU `-icount`, hypervisor option `icount=1`).
    pub time_base: TimeBase,
    pub vcpus: usize,
    /// Stage-2 level-3 tables of guest RAM, every page unmapped.
    pub pages: GuestPages,
    /// The first of the `min(resident, guest)` contiguous host frames.
    pub frames: PhysAddr,
}

/// Start the pager (CPU 0, while building the VM): probe the disk, route its interrupt here.
pub fn start(platform: &Platform, setup: PagerSetup) -> Result<&'static Pager, PagerError> {
    let pages = setup.guest_mib * PAGES_PER_MIB as u64;
    let frames = setup.resident_mib.min(setup.guest_mib) * PAGES_PER_MIB as u64;
    let mut disk = BackingStore::probe(platform, setup.latency_us, None).map_err(PagerError::Backing)?;
    disk.set_time_base(setup.time_base);
    if setup.time_base == TimeBase::Virtual {
        // In virtual time the disk's interrupt is wanted only while the device is late: at any
        // other time it would interrupt the guest at an instant chosen by the host.
        gic::set_spi_enabled(disk.intid(), false);
    }
    if disk.capacity_pages() < pages {
        return Err(PagerError::DiskTooSmall { slots: disk.capacity_pages(), pages });
    }
    let engine = Overcommit::new(Config::new(pages as u32, frames as u32, waiter_count(setup.vcpus)))
        .map_err(PagerError::Config)?;
    let disk_intid = disk.intid();
    let disk_registers = disk.registers();
    Ok(PAGER.call_once(|| Pager {
        locked: Mutex::new(
            Level::Pager,
            Locked {
                engine,
                disk,
                backlog: VecDeque::with_capacity(usize::from(asyncpf_core::overcommit::DEFAULT_QUEUE_DEPTH)),
                completions: Vec::with_capacity(backing::MAX_IN_FLIGHT),
                apf_done: Vec::with_capacity(waiter_count(setup.vcpus) as usize),
                stalls: Histogram::new(),
                requests: Histogram::new(),
                read_latency: Ewma::new(),
                since_scan: 0,
                scans: 0,
                blocking_faults: 0,
                engine_refusals: 0,
                other_faults: 0,
            },
        ),
        poll_wanted: AtomicBool::new(false),
        kicks: CpuSet::new(),
        lock_sleepers: LockSleepers::new(),
        cpu_mpidrs: platform.cpu_mpidrs.clone(),
        async_completion: Once::new(),
        earliest_due: AtomicU64::new(u64::MAX),
        unreadable_pages: AtomicU64::new(0),
        read_latency_avg: AtomicU64::new(u64::MAX),
        access_flag_faults: AtomicU64::new(0),
        device_irqs: AtomicU64::new(0),
        timer_irqs: AtomicU64::new(0),
        poll_contended: AtomicU64::new(0),
        wait_timer_deferred: AtomicU64::new(0),
        time_base: setup.time_base,
        late: AtomicBool::new(false),
        pinned: AtomicU64::new(u64::MAX),
        hidden: AtomicU64::new(0),
        hide: setup.time_base == TimeBase::Virtual && setup.vcpus == 1,
        hold_hiding: setup.time_base == TimeBase::Virtual && setup.vcpus > 1,
        hold: Mutex::new(Level::PagerHold, HoldSpan::new(setup.vcpus as u32)),
        saved_cntv: AtomicU64::new(0),
        charge: AtomicU64::new(0),
        late_freezes: AtomicU64::new(0),
        held_sleep_ticks: AtomicU64::new(0),
        held_sleeps: AtomicU64::new(0),
        sleep_ticks: [const { [const { AtomicU64::new(0) }; SLEEP_KINDS] }; MAX_CPUS],
        waits: (0..setup.vcpus)
            .map(|_| VcpuWait { cell: WaitCell::new(), since: AtomicU64::new(0), waited: AtomicU64::new(0) })
            .collect(),
        pages: setup.pages,
        frames: setup.frames,
        disk_intid,
        disk_registers,
        guest_mib: setup.guest_mib,
        resident_mib: setup.resident_mib,
        latency_us: setup.latency_us,
        scan_interval: (frames as u32 / 4).max(1),
    }))
}

impl Pager {
    fn frame_address(&self, frame: FrameNo) -> PhysAddr {
        PhysAddr(self.frames.0 + frame.0 as u64 * PAGE_SIZE)
    }

    /// Make guest page `page` resident and writable before the VM starts (the kernel and the
    /// device tree are loaded into it), and return its host address. `None` when no free
    /// frame is left: `resident_mib` is too small for what must be loaded.
    pub fn preload(&self, page: usize) -> Option<PhysAddr> {
        let mut locked = self.lock();
        let fault = locked.engine.fault(PageNo(page as u32), true, Waiter(0)).ok()?;
        match (fault.action, fault.writebacks.is_empty() && fault.dropped.is_empty()) {
            (FaultAction::ZeroFill { frame, .. }, true) => {
                let address = self.frame_address(frame);
                zero_frame(address);
                self.pages.map(page, address, Access::ReadWrite);
                Some(address)
            }
            (FaultAction::Map { frame, writable: true }, true) => Some(self.frame_address(frame)),
            _ => None,
        }
    }

    /// A stage-2 abort of `vcpu` (the caller's own) on guest RAM page `page`. If the CPU sleeps
    /// while it waits for the lock, `on_interrupt` gets the interrupts that are not the pager's.
    ///
    /// `apf_waiter`: the fault is to be resolved asynchronously ([`WaiterIds::slot`] names the
    /// token slot): if it blocks, the vCPU does not wait ([`Pager::wait`] is not called), and
    /// its completion goes to the APF service instead of waking the vCPU.
    pub fn fault(
        &self,
        vcpu: usize,
        page: usize,
        abort: Stage2Abort,
        apf_waiter: Option<u32>,
        mut on_interrupt: impl FnMut(u32),
    ) -> FaultReply {
        if let FaultStatus::AccessFlag { .. } = abort.status {
            self.access_flag_faults.fetch_add(1, Ordering::Relaxed);
            if self.pages.set_accessed(page) {
                let _ = self.lock_or_sleep(&mut on_interrupt).engine.mark_accessed(PageNo(page as u32));
                return FaultReply::Retry;
            }
            // Unmapped meanwhile: handle it as the translation fault it now is.
        }
        let mut locked = self.lock_or_sleep(&mut on_interrupt);
        if let FaultStatus::Other(code) = abort.status {
            locked.other_faults += 1;
            // Diagnostics are printed after the lock is released (docs/architecture.md "Locks").
            drop(locked);
            guest_diag!(
                Stage2Other,
                "vCPU {vcpu}: stage-2 fault status {code:#x} on guest page {page:#x}; injecting an abort"
            );
            return FaultReply::Abort;
        }
        let Locked { engine, disk, backlog, blocking_faults, since_scan, engine_refusals, .. } = &mut *locked;
        let waiter = Waiter(apf_waiter.unwrap_or(vcpu as u32));
        let fault = match engine.fault(PageNo(page as u32), abort.write, waiter) {
            Ok(fault) => fault,
            Err(e) => {
                *engine_refusals += 1;
                drop(locked);
                guest_diag!(
                    PagerRefusal,
                    "vCPU {vcpu}: the pager refused a fault on guest page {page:#x}: {e}; injecting an abort"
                );
                return FaultReply::Abort;
            }
        };
        // Every unmap first, then one TLB invalidation, then the frames are reused or written
        // out: no vCPU can reach a frame through a stale translation once the device or a new
        // page gets it.
        let unmapped = fault.writebacks.iter().map(|write| write.page).chain(fault.dropped.iter().copied());
        let mut any_unmapped = false;
        for page in unmapped {
            self.pages.unmap(page.index());
            any_unmapped = true;
        }
        if any_unmapped {
            self.pages.invalidate_tlbs();
        }
        for &write in fault.writebacks {
            self.submit(disk, backlog, write, self.model_now());
        }
        let reply = match fault.action {
            FaultAction::Map { frame, writable } => {
                self.pages.map(page, self.frame_address(frame), access(writable));
                FaultReply::Retry
            }
            FaultAction::Upgrade { frame } => {
                self.pages.map(page, self.frame_address(frame), Access::ReadWrite);
                FaultReply::Retry
            }
            FaultAction::ZeroFill { frame, writable } => {
                let address = self.frame_address(frame);
                zero_frame(address);
                self.pages.map(page, address, access(writable));
                *since_scan += 1;
                FaultReply::Retry
            }
            FaultAction::StartRead { read } => {
                self.submit(disk, backlog, read, self.model_now());
                *since_scan += 1;
                FaultReply::Blocked
            }
            FaultAction::WaitPage | FaultAction::WaitIo => FaultReply::Blocked,
        };
        if reply == FaultReply::Blocked && apf_waiter.is_none() {
            *blocking_faults += 1;
            let wait = &self.waits[vcpu];
            wait.since.store(self.model_now().0, Ordering::Relaxed);
            wait.cell.block();
        }
        if locked.since_scan >= self.scan_interval {
            self.scan(&mut locked);
        }
        reply
    }

    /// Whether guest page `page` is known to be unreadable (its last read failed for good:
    /// `asyncpf_core::overcommit::Overcommit::is_unreadable`): a fault on it is then resolved
    /// synchronously, so that the access gets its abort. Lock-free (false) while no page is.
    pub fn is_unreadable(&self, page: usize, mut on_interrupt: impl FnMut(u32)) -> bool {
        if self.unreadable_pages.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock_or_sleep(&mut on_interrupt).engine.is_unreadable(PageNo(page as u32))
    }

    /// Keep guest page `page` resident and writable until [`Self::unpin`] (the hypervisor
    /// writes into it: an asynchronous page fault record), paging it in first if needed, as a
    /// write fault of `vcpu` (the caller's own) would. Returns the host address of its frame;
    /// `None` if it cannot be read back from the disk or too many frames are pinned.
    pub fn pin(&self, vcpu: usize, page: usize, mut on_interrupt: impl FnMut(u32)) -> Option<PhysAddr> {
        let write_fault =
            Stage2Abort { status: FaultStatus::Translation { level: 3 }, write: true, on_table_walk: false };
        loop {
            {
                let mut locked = self.lock_or_sleep(&mut on_interrupt);
                match locked.engine.pin(PageNo(page as u32)) {
                    Ok(frame) => {
                        let address = self.frame_address(frame);
                        self.pages.map(page, address, Access::ReadWrite);
                        return Some(address);
                    }
                    Err(asyncpf_core::overcommit::Error::NotResident(_)) => {}
                    Err(e) => {
                        drop(locked);
                        guest_diag!(PinFailure, "vCPU {vcpu}: cannot pin guest page {page:#x}: {e}");
                        return None;
                    }
                }
            }
            let resolution = match self.fault(vcpu, page, write_fault, None, &mut on_interrupt) {
                FaultReply::Retry => Resolution::Retry,
                FaultReply::Abort => Resolution::Abort,
                FaultReply::Blocked => self.wait(vcpu, &mut on_interrupt),
            };
            if resolution == Resolution::Abort {
                return None;
            }
        }
    }

    /// Drop one pin of `page` ([`Self::pin`]).
    pub fn unpin(&self, page: usize) {
        // (The guard is dropped at the end of this statement: the diagnostic goes out unlocked.)
        let unpinned = self.lock().engine.unpin(PageNo(page as u32));
        if let Err(e) = unpinned {
            guest_diag!(Internal, "pager: unpin of guest page {page:#x}: {e}");
        }
    }

    /// Take what the disk finished, tell the engine, apply its answers, wake the waiters, and
    /// arm this CPU's EL2 timer for the next latency deadline.
    fn process_completions(&self, locked: &mut Locked) {
        let virtual_time = self.time_base == TimeBase::Virtual;
        let Locked { engine, disk, backlog, completions, stalls, requests, read_latency, apf_done, .. } = locked;
        // In virtual time, model time stands still for the whole poll (and, while a request is
        // late, until the poll that finds it done): what a poll does depends on what the device
        // finished, that is on the host, so its cost is hidden (see the end).
        let now = self.model_now();
        disk.take_finished();
        disk.report_due(now, completions);
        for completion in completions.drain(..) {
            // What one completion costs is the same in every run: it is charged to model time
            // (see `close_window` and `leave_held`), unlike the rest of the poll.
            let started = (self.hide || self.hold_hiding).then(clock::now);
            'one: {
                let took = now.saturating_sub(completion.submitted);
                requests.record(took.as_nanos());
                if matches!(completion.op, Op::Read) {
                    read_latency.record(took.0);
                    self.read_latency_avg.store(read_latency.get().unwrap_or(u64::MAX), Ordering::Relaxed);
                }
                let id = RequestId(completion.tag as u16);
                let ok = completion.result.is_ok();
                if let Err(error) = completion.result {
                    guest_diag!(IoError, "backing store: {:?} request {} failed ({error})", completion.op, id.0);
                }
                let answer = match completion.op {
                    Op::Read => engine.read_done(id, ok),
                    Op::Write => engine.write_done(id, ok),
                };
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(e) => {
                        // Cannot happen: every tag is a request the engine started.
                        guest_diag!(Internal, "backing store: completion of an unknown request: {e}");
                        break 'one;
                    }
                };
                match answer.done {
                    Done::Map { page, frame, writable } => {
                        self.pages.map(page.index(), self.frame_address(frame), access(writable))
                    }
                    Done::Resubmit(read) => {
                        self.submit(disk, backlog, read, now);
                    }
                    Done::Evicted { .. } | Done::ReadFailed { .. } => {}
                }
                for &wake in answer.woken {
                    let (waiter, resolution) = match wake {
                        Wake::Resume(w) => (w, Resolution::Retry),
                        Wake::Abort(w) => (w, Resolution::Abort),
                    };
                    if waiter.index() >= self.waits.len() {
                        // An asynchronous fault's page is back (or failed for good: its task's
                        // retry then faults synchronously and gets the abort). After the unlock.
                        apf_done.push(waiter.0);
                        continue;
                    }
                    let wait = &self.waits[waiter.index()];
                    let since = Ticks(wait.since.load(Ordering::Relaxed));
                    let resumed = if virtual_time { now } else { self.model_now() };
                    stalls.record(resumed.saturating_sub(since).as_nanos());
                    wait.cell.resolve(resolution);
                    self.kicks.add(1 << waiter.index());
                }
            }
            if let Some(started) = started {
                self.charge.fetch_add(clock::now().saturating_sub(started).0, Ordering::Relaxed);
            }
        }
        while let Some(&request) = backlog.front() {
            if self.try_submit(disk, request, now).is_err() {
                break;
            }
            backlog.pop_front();
        }
        match self.time_base {
            TimeBase::Host => clock::set_el2_timer(disk.next_deadline()),
            // The timer is armed by `release`, for every outstanding deadline.
            TimeBase::Virtual => {
                let late = disk.schedule(now).late;
                let was_late = self.is_late();
                if (late || self.hide) && self.pinned.load(Ordering::Relaxed) == u64::MAX {
                    self.pinned.store(now.0, Ordering::Release);
                    if self.hide {
                        // (One vCPU: this CPU runs it.)
                        let cntv = CNTV_CTL_EL0.get();
                        self.saved_cntv.store(cntv, Ordering::Relaxed);
                        CNTV_CTL_EL0.set(cntv & !CNTV_CTL_ENABLE);
                    }
                }
                if late && !was_late {
                    // Hold model time here until the device has finished: every CPU sleeps
                    // with no timer armed, the disk's interrupt ends it.
                    if self.hold_hiding {
                        self.hold.lock().set_late(true, clock::now().0, || 0);
                    }
                    self.late.store(true, Ordering::Release);
                    self.late_freezes.fetch_add(1, Ordering::Relaxed);
                    gic::set_spi_enabled(self.disk_intid, true);
                    self.kick_all();
                } else if !late && was_late {
                    // The device caught up: the disk's interrupt is no longer wanted, and time
                    // runs on (with `hide`, from where it was held, at `close_window`).
                    gic::set_spi_enabled(self.disk_intid, false);
                    if self.hold_hiding {
                        // Hidden first, so that model time resumes where the span began.
                        let hide =
                            self.hold.lock().set_late(false, clock::now().0, || self.charge.swap(0, Ordering::Relaxed));
                        self.hidden.fetch_add(hide, Ordering::AcqRel);
                    }
                    if !self.hide {
                        self.pinned.store(u64::MAX, Ordering::Release);
                    }
                    self.late.store(false, Ordering::Release);
                    self.kick_all();
                }
            }
        }
    }

    /// Submit `request`, or queue it behind earlier ones if the disk is full.
    fn submit(&self, disk: &mut BackingStore, backlog: &mut VecDeque<Request>, request: Request, now: Ticks) {
        if !backlog.is_empty() || self.try_submit(disk, request, now).is_err() {
            backlog.push_back(request);
        }
    }

    fn try_submit(&self, disk: &mut BackingStore, request: Request, now: Ticks) -> Result<(), Busy> {
        let frame = self.frame_address(request.frame);
        let slot = u64::from(request.page.0);
        let tag = u64::from(request.id.0);
        // SAFETY: the engine gave `frame` to this request alone: for a read it is unmapped and
        // unused until the read's completion maps it; for a write-back the page was unmapped
        // (and its TLB entries invalidated) above, and the frame is not reused or remapped
        // until the write's completion. The disk lives in the `'static` pager.
        unsafe {
            match request.kind {
                RequestKind::Read => disk.submit_read(slot, frame, tag, now),
                RequestKind::Write => disk.submit_write(slot, frame, tag, now),
            }
        }
    }

    /// The access-flag scan: feed the clock whether each resident page was used since the last
    /// scan, clearing the flags (the next access takes an access flag fault and sets it again).
    fn scan(&self, locked: &mut Locked) {
        let pages = &self.pages;
        locked.engine.scan(|page| pages.test_and_clear_accessed(page.index()));
        pages.invalidate_tlbs();
        locked.since_scan = 0;
        locked.scans += 1;
    }

    /// The `mem` result object.
    pub fn write_json(&self, out: &mut impl Write) -> core::fmt::Result {
        let locked = self.lock();
        let c = locked.engine.counters();
        let stall_us = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1000.0;
        write!(
            out,
            "{{\"guest_mib\":{},\"resident_mib\":{},\"backing_latency_us\":{},\"page_ins\":{},\"page_outs\":{},\
             \"zero_fills\":{},\"clean_drops\":{},\"dirty_writebacks\":{},\"io_errors\":{},\"retries\":{},\
             \"shared_fetches\":{},\"failed_reads\":{},\"failed_writes\":{},\"aborts\":{},\"upgrades\":{},\"writeback_waits\":{},\
             \"frame_waits\":{},\"blocking_faults\":{},\"access_flag_faults\":{},\"scans\":{},\"device_irqs\":{},\
             \"timer_irqs\":{},\"poll_contended\":{},\"wait_timer_deferred\":{},\"time_base\":\"{}\",\"device_late_freezes\":{},\"hidden_us\":{},\"held_sleeps\":{},\"held_sleep_us\":{},\"engine_refusals\":{},\"other_faults\":{},\"fault_stall_us_mean\":{:.1},\"fault_stall_us_p99\":{:.1},\
             \"fault_stall_us_max\":{:.1},\"request_us_mean\":{:.1},\"request_us_p99\":{:.1},\"read_latency_ewma_us\":{},\"unreadable_pages\":{},\
             \"unreadable\":[",
            self.guest_mib,
            self.resident_mib,
            self.latency_us,
            c.page_ins,
            c.page_outs,
            c.zero_fills,
            c.clean_drops,
            c.dirty_writebacks,
            c.io_errors,
            c.retries,
            c.shared_fetches,
            c.failed_reads,
            c.failed_writes,
            c.aborts,
            c.upgrades,
            c.writeback_waits,
            c.frame_waits,
            locked.blocking_faults,
            self.access_flag_faults.load(Ordering::Relaxed),
            locked.scans,
            self.device_irqs.load(Ordering::Relaxed),
            self.timer_irqs.load(Ordering::Relaxed),
            self.poll_contended.load(Ordering::Relaxed),
            self.wait_timer_deferred.load(Ordering::Relaxed),
            match self.time_base {
                TimeBase::Host => "host",
                TimeBase::Virtual => "virtual",
            },
            self.late_freezes.load(Ordering::Relaxed),
            Ticks(self.hidden.load(Ordering::Relaxed)).as_micros(),
            self.held_sleeps.load(Ordering::Relaxed),
            Ticks(self.held_sleep_ticks.load(Ordering::Relaxed)).as_micros(),
            locked.engine_refusals,
            locked.other_faults,
            stall_us(locked.stalls.mean()),
            stall_us(locked.stalls.percentile(990)),
            stall_us(locked.stalls.max()),
            stall_us(locked.requests.mean()),
            stall_us(locked.requests.percentile(990)),
            Ticks::json_micros(locked.read_latency.get().map(Ticks)),
            locked.engine.unreadable_pages(),
        )?;
        // The first few unreadable pages (guest page n is disk slot n).
        for (i, page) in locked.engine.unreadable().take(UNREADABLE_LISTED).enumerate() {
            write!(out, "{}{}", if i == 0 { "" } else { "," }, page.0)?;
        }
        out.write_str("],\"sleep_us_by_cpu\":[")?;
        for (i, cpu) in self.sleep_ticks.iter().take(self.waits.len()).enumerate() {
            let us = |kind: usize| Ticks(cpu[kind].load(Ordering::Relaxed)).as_micros();
            write!(
                out,
                "{}{{\"wait\":{},\"held\":{},\"lock\":{}}}",
                if i == 0 { "" } else { "," },
                us(SLEEP_WAIT),
                us(SLEEP_HELD),
                us(SLEEP_LOCK)
            )?;
        }
        out.write_str("]}")
    }
}

/// Unreadable pages listed in the `mem` result (all are counted).
const UNREADABLE_LISTED: usize = 16;

fn access(writable: bool) -> Access {
    if writable {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    }
}

/// Fill a frame with zeros, cleaned to the point of coherency so that a guest running with its
/// MMU off (non-cacheable accesses) reads zeros too.
fn zero_frame(frame: PhysAddr) {
    // SAFETY: the engine handed this frame to one page and it is not mapped at stage 2 yet
    // (the caller maps it afterwards), so nothing else accesses it.
    unsafe { core::ptr::write_bytes(frame.0 as *mut u8, 0, PAGE_SIZE as usize) };
    arch::clean_dcache_to_poc(frame.0 as usize, PAGE_SIZE as usize);
}
