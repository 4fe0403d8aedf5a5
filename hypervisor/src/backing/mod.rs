//! The backing store: a virtio-blk disk that only the hypervisor sees, where memory overcommit
//! puts guest pages. QEMU attaches it at one of the `virt` machine's `virtio,mmio` slots; the
//! hypervisor never describes it in the guest's device tree nor maps it at stage 2.
//!
//! # Driver
//! The `virtio-drivers` crate (`VirtIOBlk` over `MmioTransport`, modern virtio-mmio version 2,
//! one split virtqueue of 16 descriptors with indirect descriptor tables, so 16 requests at the
//! device at once) with the non-blocking `read_blocks_nb`/`write_blocks_nb`, `peek_used` and
//! `complete_*_blocks` calls; [`hal::HypHal`] gives it heap DMA memory and identity addresses.
//! Completions are interrupt driven: the device's SPI is routed to one CPU, which finds it with
//! `gic::drain` after `wfi` (the hypervisor never takes interrupts as exceptions at EL2).
//!
//! # API
//! - [`BackingStore::probe`] finds the disk (DeviceID 2 among the `virtio,mmio` nodes),
//!   initialises it and enables its SPI, routed to the calling CPU or a given MPIDR.
//! - [`BackingStore::submit_read`] / [`BackingStore::submit_write`] queue one 4 KiB page
//!   transfer between disk slot `slot` (sectors `8·slot..8·slot+8`) and the page at `frame`,
//!   labelled with the caller's `tag`; they return [`Busy`] when [`MAX_IN_FLIGHT`] requests are
//!   outstanding or the device's queue is full. They are `unsafe`: the device writes (read) or
//!   reads (write) the frame until its completion is reported. The device is not notified at
//!   once: [`BackingStore::ring`], or [`BackingStore::take_doorbell`] and then
//!   [`DeviceRegisters::notify_queue`] without exclusive access (see `doorbell`).
//! - [`BackingStore::poll_completions`], called when the device's interrupt
//!   ([`BackingStore::intid`]) or the EL2 timer (`gic::PPI_HYP_TIMER`) fires, reports each
//!   request that the device has completed *and* whose latency deadline has passed, as a
//!   [`Completion`] (its tag and `Ok`, or `Err` with the device's status); acknowledge the
//!   device's interrupt first ([`BackingStore::acknowledge_interrupt`], or
//!   [`DeviceRegisters::acknowledge_interrupt`]) inside the `gic::drain` callback for the SPI.
//! - [`BackingStore::next_deadline`] says when to arm the EL2 timer ([`clock::set_el2_timer`]).
//!
//! # Latency model
//! A minimum service time L (`backing_latency_us`, default
//! [`asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US`] = 50 µs, an NVMe-class SSD read)
//! stands in for the speed of the real medium: no request is reported earlier than L µs after
//! it was submitted, measured on the system counter. A request the device finishes early is
//! taken off the virtqueue (freeing its descriptor) and held until its deadline; so up to
//! [`MAX_IN_FLIGHT`] requests can be outstanding, at most 16 of them at the device.
//!
//! In virtual time ([`BackingStore::set_time_base`], QEMU `-icount`) nothing may depend on how
//! far the device got: a request is accepted (its deadline runs) and waits in the store if the
//! virtqueue is full, it reaches the device at the next [`BackingStore::take_finished`], and
//! completions are reported strictly in deadline order; [`BackingStore::schedule`] says when
//! the timer must fire and whether a request is late (`asyncpf_core::latency`). Which request
//! slot a submission takes, which queued request goes to the device next, which requests are
//! due and in what order, and the earliest deadline are decided by `asyncpf_core::disk`'s
//! `RequestTable`, model-tested on the host; this module applies them to the virtqueue.
//!
//! # Errors
//! A request the device completes with a status other than OK (e.g. an I/O error injected with
//! QEMU's `blkdebug`) is reported as `Err` in its completion, at its deadline like any other;
//! the driver does not retry (the overcommit engine decides).

pub mod clock;
mod doorbell;
mod hal;
pub mod selftest;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::ptr::{read_volatile, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{Readable, MPIDR_EL1};
use asyncpf_core::disk::{RequestTable, State};
use asyncpf_core::latency::{self, Outstanding, Schedule, TimeBase};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};

use crate::gic;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::platform::{Platform, VirtioMmioNode};
use crate::trace;
pub use clock::Ticks;
use doorbell::DeferredNotify;
pub use doorbell::DeviceRegisters;

/// Most requests outstanding (submitted and not yet reported) at once: the device's queue
/// depth plus as many held until their latency deadline.
pub const MAX_IN_FLIGHT: usize = 32;
/// Disk sectors per 4 KiB page.
pub const SECTORS_PER_PAGE: u64 = PAGE_SIZE / SECTOR_SIZE as u64;

/// virtio-mmio registers read before the transport is built (virtio 1.2, 4.2.2).
const VIRTIO_MMIO_MAGIC_VALUE: usize = 0x000;
const VIRTIO_MMIO_VERSION: usize = 0x004;
const VIRTIO_MMIO_DEVICE_ID: usize = 0x008;
/// "virt", little-endian.
const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio transport.
const VIRTIO_MMIO_MODERN: u32 = 2;
/// virtio device ID of a block device (virtio 1.2, 5).
const VIRTIO_ID_BLOCK: u32 = 2;

type Blk = VirtIOBlk<hal::HypHal, DeferredNotify<MmioTransport<'static>>>;

/// The index of virtio-blk's (single) request queue (virtio 1.2, 5.2.2).
const REQUEST_QUEUE: u16 = 0;

/// Why there is no backing store.
#[derive(Debug)]
pub enum BackingError {
    /// No `virtio,mmio` node has a block device behind it.
    NoDevice {
        transports: usize,
    },
    /// The block device speaks the legacy (version 1) transport.
    LegacyTransport {
        base: u64,
        version: u32,
    },
    /// The block device's node has no SPI in its `interrupts` property.
    NoInterrupt {
        base: u64,
    },
    /// The device tree does not say `dma-coherent`; the EL2 map is cacheable (see `hal`).
    NotCoherent {
        base: u64,
    },
    /// The transport or the device refused initialisation.
    Transport {
        base: u64,
        error: MmioError,
    },
    Init {
        base: u64,
        error: virtio_drivers::Error,
    },
    /// The disk is read-only.
    ReadOnly {
        base: u64,
    },
    /// The disk holds less than one page.
    Empty {
        base: u64,
    },
}

impl fmt::Display for BackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevice { transports } => write!(
                f,
                "no virtio-blk device among the {transports} virtio-mmio transports \
                 (QEMU: -drive file=IMG,if=none,format=raw,id=backing -device virtio-blk-device,drive=backing)"
            ),
            Self::LegacyTransport { base, version } => write!(
                f,
                "the virtio-blk device at {base:#x} uses virtio-mmio version {version}, not the modern \
                 version {VIRTIO_MMIO_MODERN} (QEMU: -global virtio-mmio.force-legacy=false)"
            ),
            Self::NoInterrupt { base } => write!(f, "the virtio-blk node at {base:#x} has no SPI interrupt"),
            Self::NotCoherent { base } => write!(
                f,
                "the virtio-blk node at {base:#x} is not dma-coherent; the hypervisor supports only coherent DMA"
            ),
            Self::Transport { base, error } => write!(f, "virtio-mmio transport at {base:#x}: {error}"),
            Self::Init { base, error } => write!(f, "virtio-blk device at {base:#x} failed to initialise: {error}"),
            Self::ReadOnly { base } => write!(f, "the virtio-blk disk at {base:#x} is read-only"),
            Self::Empty { base } => write!(f, "the virtio-blk disk at {base:#x} is smaller than one page"),
        }
    }
}

/// The request could not be queued now: too many are outstanding. Retry after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

/// Which way a request moves a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Disk to frame.
    Read,
    /// Frame to disk.
    Write,
}

/// How the device failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// Status VIRTIO_BLK_S_IOERR.
    Io,
    /// Status VIRTIO_BLK_S_UNSUPP.
    Unsupported,
    /// Any other status, or a transport error.
    Other,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "io",
            Self::Unsupported => "unsupported",
            Self::Other => "other",
        })
    }
}

impl From<virtio_drivers::Error> for DeviceError {
    fn from(error: virtio_drivers::Error) -> Self {
        match error {
            virtio_drivers::Error::IoError => Self::Io,
            virtio_drivers::Error::Unsupported => Self::Unsupported,
            _ => Self::Other,
        }
    }
}

/// A finished request, reported by [`BackingStore::poll_completions`].
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub tag: u64,
    pub op: Op,
    pub result: Result<(), DeviceError>,
    /// When it was submitted (the `now` given to `submit_*`).
    pub submitted: Ticks,
}

/// The device's side of one request slot (its state and deadline are in the
/// [`RequestTable`]). `header` and `status` are read and written by the device while the request
/// is at the device, so slots live in one boxed array that never moves.
struct Request {
    op: Op,
    /// Disk slot.
    slot: u64,
    tag: u64,
    frame: PhysAddr,
    submitted: Ticks,
    header: BlkReq,
    status: BlkResp,
}

impl Request {
    fn free() -> Self {
        Request {
            op: Op::Read,
            slot: 0,
            tag: 0,
            frame: PhysAddr(0),
            submitted: Ticks(0),
            header: BlkReq::default(),
            status: BlkResp::default(),
        }
    }
}

/// The hypervisor's virtio-blk disk (see the module documentation).
pub struct BackingStore {
    blk: Blk,
    requests: Box<[Request; MAX_IN_FLIGHT]>,
    /// Which request slots are free, queued (accepted, not yet on the virtqueue: in virtual
    /// time while the device's queue is full), at the device under which descriptor token, or
    /// finished and held until their deadline; their deadlines (`asyncpf_core::disk`).
    table: RequestTable<Result<(), DeviceError>, MAX_IN_FLIGHT>,
    queue_depth: usize,
    latency: Ticks,
    capacity_pages: u64,
    base: u64,
    intid: u32,
    registers: DeviceRegisters,
    /// Set by the transport when the driver wants the device notified ([`Self::take_doorbell`]).
    doorbell: Arc<AtomicBool>,
    /// What the counter measures ([`Self::set_time_base`]).
    time_base: TimeBase,
}

/// One 32-bit virtio-mmio register of the transport at `base`.
fn read_mmio_register(node: &VirtioMmioNode, offset: usize) -> u32 {
    // SAFETY: `node` is a `virtio,mmio` register window from QEMU's device tree, in the first
    // GiB that the EL2 identity map maps as device memory; the register offsets lie in the
    // 0x100-byte header every version has, and reading them has no side effects.
    unsafe { read_volatile((node.base as usize + offset) as *const u32) }
}

/// The first `virtio,mmio` transport with a block device behind it.
fn find_block_device(platform: &Platform) -> Result<&VirtioMmioNode, BackingError> {
    let node = platform
        .virtio_mmio
        .iter()
        .filter(|node| node.size >= core::mem::size_of::<VirtIOHeader>() as u64)
        .filter(|node| read_mmio_register(node, VIRTIO_MMIO_MAGIC_VALUE) == VIRTIO_MMIO_MAGIC)
        .find(|node| read_mmio_register(node, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_BLOCK)
        .ok_or(BackingError::NoDevice { transports: platform.virtio_mmio.len() })?;
    let version = read_mmio_register(node, VIRTIO_MMIO_VERSION);
    if version != VIRTIO_MMIO_MODERN {
        return Err(BackingError::LegacyTransport { base: node.base, version });
    }
    Ok(node)
}

/// The page at `frame` as the byte slice the crate wants.
///
/// # Safety
/// `frame` must be a page of RAM that nothing else accesses while the slice is in use (the
/// contract of `submit_*`).
unsafe fn frame_bytes<'a>(frame: PhysAddr) -> &'a mut [u8] {
    // SAFETY: the caller's contract; the identity map makes the address a valid pointer.
    unsafe { core::slice::from_raw_parts_mut(frame.0 as *mut u8, PAGE_SIZE as usize) }
}

impl BackingStore {
    /// Find the virtio-blk device among the platform's `virtio,mmio` nodes (DeviceID 2),
    /// initialise it, and enable its SPI at the physical GIC, routed to the CPU with affinity
    /// `route_to` (an MPIDR) or, if `None`, to the calling CPU. Requests complete no earlier
    /// than `latency_us` µs after submission.
    pub fn probe(platform: &Platform, latency_us: u64, route_to: Option<u64>) -> Result<Self, BackingError> {
        let node = find_block_device(platform)?;
        let base = node.base;
        let intid = node.intid.ok_or(BackingError::NoInterrupt { base })?;
        if !node.dma_coherent {
            return Err(BackingError::NotCoherent { base });
        }
        let header = NonNull::new(base as *mut VirtIOHeader).ok_or(BackingError::NoDevice { transports: 0 })?;
        // SAFETY: `header` is the device-tree register window of a virtio-mmio transport with a
        // modern block device behind it (checked above), identity-mapped as device memory for
        // the hypervisor's whole life, `node.size` bytes long; only this store accesses it.
        let transport = unsafe { MmioTransport::new(header, node.size as usize) }
            .map_err(|error| BackingError::Transport { base, error })?;
        let doorbell = Arc::new(AtomicBool::new(false));
        let transport = DeferredNotify::new(transport, doorbell.clone());
        let mut blk = Blk::new(transport).map_err(|error| BackingError::Init { base, error })?;
        // SAFETY: the same register window as the transport's, mapped for the hypervisor's life.
        let registers = unsafe { DeviceRegisters::new(base) };
        if blk.readonly() {
            return Err(BackingError::ReadOnly { base });
        }
        let capacity_pages = blk.capacity() / SECTORS_PER_PAGE;
        if capacity_pages == 0 {
            return Err(BackingError::Empty { base });
        }
        blk.enable_interrupts();
        let trigger = if node.edge_triggered { gic::Trigger::Edge } else { gic::Trigger::Level };
        gic::enable_spi(intid, trigger, route_to.unwrap_or_else(|| MPIDR_EL1.get()));
        Ok(BackingStore {
            queue_depth: usize::from(blk.virt_queue_size()),
            blk,
            requests: Box::new(core::array::from_fn(|_| Request::free())),
            table: RequestTable::new(),
            latency: Ticks::from_micros(latency_us),
            capacity_pages,
            base,
            intid,
            registers,
            doorbell,
            time_base: TimeBase::Host,
        })
    }

    /// What the system counter measures (host time unless told otherwise). In virtual time
    /// (QEMU `-icount`) a request's deadline runs from when the store accepts it, whether or not
    /// the device's queue has room (it waits in the store for a slot); see [`Self::schedule`].
    pub fn set_time_base(&mut self, base: TimeBase) {
        self.time_base = base;
    }

    /// The device's notification and interrupt registers, for use without `&mut self` (and so
    /// without the lock around the store): see [`Self::take_doorbell`].
    pub fn registers(&self) -> DeviceRegisters {
        self.registers
    }

    /// Whether requests were queued since the last call that the device must be told about:
    /// if so, the caller rings `registers().notify_queue(REQUEST_QUEUE)` ([`Self::ring`] does
    /// both). Until then the device may not look at them.
    pub fn take_doorbell(&mut self) -> Option<u16> {
        self.doorbell.swap(false, Ordering::AcqRel).then_some(REQUEST_QUEUE)
    }

    /// Notify the device of the requests queued since the last notification, if any.
    pub fn ring(&mut self) {
        if let Some(queue) = self.take_doorbell() {
            self.registers.notify_queue(queue);
        }
    }

    /// Disk size in 4 KiB pages (8 sectors each); valid slots are `0..capacity_pages()`.
    pub fn capacity_pages(&self) -> u64 {
        self.capacity_pages
    }

    /// The device's interrupt (an SPI INTID).
    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// The virtio-mmio register window's address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Requests the device itself can hold at once.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// Requests submitted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.table.in_flight()
    }

    /// Queue a read of disk slot `slot` into the page at `frame`; `tag` comes back in its
    /// completion. Panics if `slot` is beyond the disk or `frame` is not page-aligned.
    ///
    /// # Safety
    /// `frame` must be a page of RAM that nothing reads or writes until this request's
    /// completion has been reported by `poll_completions` (the device writes it meanwhile), and
    /// the store must not be dropped before then.
    pub unsafe fn submit_read(&mut self, slot: u64, frame: PhysAddr, tag: u64, now: Ticks) -> Result<(), Busy> {
        // SAFETY: the caller's contract.
        unsafe { self.submit(Op::Read, slot, frame, tag, now) }
    }

    /// Queue a write of the page at `frame` to disk slot `slot`; as [`Self::submit_read`].
    ///
    /// # Safety
    /// `frame` must be a page of RAM that nothing writes until this request's completion has
    /// been reported (the device reads it meanwhile), and the store must not be dropped before.
    pub unsafe fn submit_write(&mut self, slot: u64, frame: PhysAddr, tag: u64, now: Ticks) -> Result<(), Busy> {
        // SAFETY: the caller's contract.
        unsafe { self.submit(Op::Write, slot, frame, tag, now) }
    }

    /// # Safety
    /// As `submit_read` (for `Op::Read`) or `submit_write` (for `Op::Write`).
    unsafe fn submit(&mut self, op: Op, slot: u64, frame: PhysAddr, tag: u64, now: Ticks) -> Result<(), Busy> {
        assert!(slot < self.capacity_pages, "backing slot {slot} beyond the disk's {} pages", self.capacity_pages);
        assert!(frame.0.is_multiple_of(PAGE_SIZE), "frame {:#x} is not page-aligned", frame.0);
        let virtual_time = self.time_base == TimeBase::Virtual;
        // (In virtual time the device's state is not even looked at: it depends on the host.)
        if !virtual_time && self.table.at_device() == self.queue_depth {
            return Err(Busy);
        }
        let index = self.table.allocate(now.saturating_add(self.latency).0).ok_or(Busy)?;
        let request = &mut self.requests[index];
        request.op = op;
        request.slot = slot;
        request.tag = tag;
        request.frame = frame;
        request.submitted = now;
        trace::disk_submit(now.0, slot, tag, index, op as u32);
        // In virtual time the request goes to the device at the next `take_finished`: what
        // that costs depends on the device's progress, and its caller can keep it out of
        // virtual time.
        if !virtual_time {
            // SAFETY: the caller's contract.
            if let Err(error) = unsafe { self.start(index) } {
                self.table.unqueue(index);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Put queued request `index` on the device's virtqueue.
    ///
    /// # Safety
    /// The request's frame must be owned by it (the contract of `submit_*`) until its completion
    /// is reported.
    unsafe fn start(&mut self, index: usize) -> Result<(), Busy> {
        debug_assert!(matches!(self.table.state(index), State::Queued));
        let request = &mut self.requests[index];
        let (op, slot) = (request.op, request.slot);
        let sector = (slot * SECTORS_PER_PAGE) as usize;
        // SAFETY: the caller's contract keeps the frame to the device until the completion is
        // reported; `header` and `status` live in the boxed slot array, which does not move and
        // outlives the request (the store frees it only when dropped, after resetting the
        // device); the slot is not reused until the device returned it through the used ring.
        let token = unsafe {
            let data = frame_bytes(request.frame);
            match op {
                Op::Read => self.blk.read_blocks_nb(sector, &mut request.header, data, &mut request.status),
                Op::Write => self.blk.write_blocks_nb(sector, &mut request.header, data, &mut request.status),
            }
        };
        let token = match token {
            Ok(token) => token,
            Err(virtio_drivers::Error::QueueFull) => return Err(Busy),
            Err(error) => panic!("virtio-blk: cannot queue a {op:?} of slot {slot}: {error}"),
        };
        self.table.started(index, token);
        Ok(())
    }

    /// Take every request the device has finished off the virtqueue (they are held until their
    /// deadline).
    fn take_used(&mut self) {
        while let Some(token) = self.blk.peek_used() {
            let index = self
                .table
                .slot_of_token(token)
                .unwrap_or_else(|| panic!("virtio-blk returned descriptor {token}, which holds no request"));
            let request = &mut self.requests[index];
            // SAFETY: the same header, frame and status as were queued under this token (the
            // slot records them), and the device has returned the chain (it is in the used ring).
            let result = unsafe {
                let data = frame_bytes(request.frame);
                match request.op {
                    Op::Read => self.blk.complete_read_blocks(token, &request.header, data, &mut request.status),
                    Op::Write => self.blk.complete_write_blocks(token, &request.header, data, &mut request.status),
                }
            };
            self.table.finished(index, result.map_err(DeviceError::from));
        }
    }

    /// Move queued requests to the device while it has room, earliest deadline first.
    fn start_queued(&mut self) {
        while self.table.at_device() < self.queue_depth {
            let Some(index) = self.table.next_queued() else { break };
            // SAFETY: a queued request was accepted by `submit`, under its caller's contract.
            if unsafe { self.start(index) }.is_err() {
                break;
            }
        }
    }

    /// Acknowledge the device's interrupt (its InterruptStatus). Call it from the `gic::drain`
    /// callback for [`Self::intid`], before the interrupt ends, so that a level-sensitive line
    /// drops; `poll_completions` then takes what the device finished.
    pub fn acknowledge_interrupt(&mut self) {
        self.registers.acknowledge_interrupt();
    }

    /// Take every request the device has finished off the virtqueue, then append to `out` each
    /// finished request whose deadline is at or before `now`, earliest deadline first. Call it
    /// after the device's interrupt and after the EL2 timer fired.
    pub fn poll_completions(&mut self, now: Ticks, out: &mut impl Extend<Completion>) {
        self.take_finished();
        self.report_due(now, out);
    }

    /// The first half of [`Self::poll_completions`]: take what the device finished off the
    /// virtqueue (held until its deadline) and give queued requests the slots that freed.
    pub fn take_finished(&mut self) {
        self.take_used();
        self.start_queued();
    }

    /// The second half of [`Self::poll_completions`]: report each finished request whose
    /// deadline is at or before `now`, earliest deadline first.
    ///
    /// In virtual time, strictly in deadline order: a request the device has not finished
    /// stops the reporting of every later one, so that the order in which completions are
    /// reported never depends on the host.
    pub fn report_due(&mut self, now: Ticks, out: &mut impl Extend<Completion>) {
        let in_order = self.time_base == TimeBase::Virtual;
        let requests = &self.requests;
        self.table.report_due(now.0, in_order, |index, result| {
            let request = &requests[index];
            trace::disk_done(now.0, request.slot, request.tag, index, request.op as u32, result.is_err());
            out.extend(core::iter::once(Completion {
                tag: request.tag,
                op: request.op,
                result,
                submitted: request.submitted,
            }));
        });
    }

    /// The earliest deadline of a request the device has finished but `poll_completions` has
    /// not reported yet: when to fire the EL2 timer. Requests still at the device are not
    /// counted; their interrupt comes first.
    pub fn next_deadline(&self) -> Option<Ticks> {
        self.table.next_deadline().map(Ticks)
    }

    /// The earliest latency deadline of any outstanding request, finished or still at the
    /// device: the earliest time a completion can be reported.
    pub fn earliest_due(&mut self) -> Option<Ticks> {
        self.table.earliest_due().map(Ticks)
    }

    /// After [`Self::poll_completions`] at `now`: when to fire the EL2 timer, and whether a
    /// request is late (virtual time: its deadline passed before the device finished it); see
    /// `asyncpf_core::latency::schedule`.
    pub fn schedule(&self, now: Ticks) -> Schedule {
        let outstanding = self.table.outstanding().map(|(deadline, device_done)| Outstanding { deadline, device_done });
        latency::schedule(now.0, outstanding, self.time_base)
    }
}

impl Drop for BackingStore {
    /// Stop the interrupt; dropping the driver then resets the device (the transport writes
    /// status 0) before the queue memory goes back to the heap.
    fn drop(&mut self) {
        gic::disable_spi(self.intid);
    }
}
