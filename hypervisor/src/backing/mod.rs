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
//! the timer must fire and whether a request is late (`asyncpf_core::latency`).
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
use asyncpf_core::latency::{self, Outstanding, Schedule, TimeBase};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};

use crate::gic;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::platform::{Platform, VirtioMmioNode};
pub use clock::Ticks;
use doorbell::DeferredNotify;
pub use doorbell::DeviceRegisters;

/// Descriptor tokens [`BackingStore::token_slots`] remembers (the virtqueue has 16).
const TOKEN_SLOTS: usize = 64;

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

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Accepted (its deadline runs) while the device's queue was full: it goes to the device as
    /// soon as a slot frees ([`TimeBase::Virtual`] only; in host time such a request is refused
    /// with [`Busy`]).
    Queued,
    /// Queued at the device under this virtqueue token.
    AtDevice {
        token: u16,
    },
    /// Completed by the device, waiting for its deadline.
    Held {
        result: Result<(), DeviceError>,
    },
}

/// One request slot. `header` and `status` are read and written by the device while the request
/// is at the device, so slots live in one boxed array that never moves.
struct Request {
    state: State,
    op: Op,
    /// Disk slot.
    slot: u64,
    tag: u64,
    frame: PhysAddr,
    submitted: Ticks,
    deadline: Ticks,
    header: BlkReq,
    status: BlkResp,
}

impl Request {
    fn free() -> Self {
        Request {
            state: State::Free,
            op: Op::Read,
            slot: 0,
            tag: 0,
            frame: PhysAddr(0),
            submitted: Ticks(0),
            deadline: Ticks(0),
            header: BlkReq::default(),
            status: BlkResp::default(),
        }
    }
}

/// The hypervisor's virtio-blk disk (see the module documentation).
pub struct BackingStore {
    blk: Blk,
    requests: Box<[Request; MAX_IN_FLIGHT]>,
    in_flight: usize,
    at_device: usize,
    /// Requests in `State::Queued` (accepted, not yet on the virtqueue): with none,
    /// [`Self::start_queued`] does not scan the slots, which every lock release asks for.
    queued: usize,
    /// The slot of the request on the virtqueue under each descriptor token (a hint, checked
    /// against the slot's state): completions find their slot without a search.
    token_slots: [u8; TOKEN_SLOTS],
    /// [`Self::earliest_due`], while known (`None`: a request was reported since; scan again).
    earliest: Option<Option<Ticks>>,
    queue_depth: usize,
    latency: Ticks,
    capacity_pages: u64,
    base: u64,
    intid: u32,
    gicd_base: u64,
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
        gic::enable_spi(platform.gicd_base, intid, trigger, route_to.unwrap_or_else(|| MPIDR_EL1.get()));
        Ok(BackingStore {
            queue_depth: usize::from(blk.virt_queue_size()),
            blk,
            requests: Box::new(core::array::from_fn(|_| Request::free())),
            in_flight: 0,
            at_device: 0,
            queued: 0,
            token_slots: [u8::MAX; TOKEN_SLOTS],
            earliest: Some(None),
            latency: Ticks::from_micros(latency_us),
            capacity_pages,
            base,
            intid,
            gicd_base: platform.gicd_base,
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
        self.in_flight
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
        if !virtual_time && self.at_device == self.queue_depth {
            return Err(Busy);
        }
        let index = self.requests.iter().position(|r| r.state == State::Free).ok_or(Busy)?;
        let request = &mut self.requests[index];
        request.op = op;
        request.slot = slot;
        request.tag = tag;
        request.frame = frame;
        request.submitted = now;
        request.deadline = now.saturating_add(self.latency);
        request.state = State::Queued;
        self.queued += 1;
        // In virtual time the request goes to the device at the next `take_finished`: what
        // that costs depends on the device's progress, and its caller can keep it out of
        // virtual time.
        if !virtual_time {
            // SAFETY: the caller's contract.
            if let Err(error) = unsafe { self.start(index) } {
                self.requests[index].state = State::Free;
                self.queued -= 1;
                return Err(error);
            }
        }
        self.in_flight += 1;
        if let Some(earliest) = &mut self.earliest {
            let deadline = self.requests[index].deadline;
            *earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
        }
        Ok(())
    }

    /// Put queued request `index` on the device's virtqueue.
    ///
    /// # Safety
    /// The request's frame must be owned by it (the contract of `submit_*`) until its completion
    /// is reported.
    unsafe fn start(&mut self, index: usize) -> Result<(), Busy> {
        let request = &mut self.requests[index];
        debug_assert_eq!(request.state, State::Queued);
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
        request.state = State::AtDevice { token };
        self.at_device += 1;
        self.queued -= 1;
        if let Some(hint) = self.token_slots.get_mut(usize::from(token)) {
            *hint = index as u8;
        }
        Ok(())
    }

    /// Take every request the device has finished off the virtqueue (they are held until their
    /// deadline).
    fn take_used(&mut self) {
        while let Some(token) = self.blk.peek_used() {
            let hinted = self.token_slots.get(usize::from(token)).map(|&slot| usize::from(slot));
            let index = match hinted {
                Some(slot) if self.requests.get(slot).is_some_and(|r| r.state == State::AtDevice { token }) => slot,
                _ => self
                    .requests
                    .iter()
                    .position(|r| r.state == State::AtDevice { token })
                    .unwrap_or_else(|| panic!("virtio-blk returned descriptor {token}, which holds no request")),
            };
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
            request.state = State::Held { result: result.map_err(DeviceError::from) };
            self.at_device -= 1;
        }
    }

    /// Move queued requests to the device while it has room, earliest deadline first.
    fn start_queued(&mut self) {
        while self.queued > 0 && self.at_device < self.queue_depth {
            let next = self
                .requests
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == State::Queued)
                .min_by_key(|(_, r)| r.deadline)
                .map(|(i, _)| i);
            let Some(index) = next else { break };
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
        if self.in_flight == 0 {
            return;
        }
        // One pass over the slots (this runs at every poll): the candidates, earliest deadline
        // first, ties by slot.
        let mut due = [0u8; MAX_IN_FLIGHT];
        let mut count = 0;
        for (index, r) in self.requests.iter().enumerate() {
            let candidate = r.deadline <= now
                && if in_order { r.state != State::Free } else { matches!(r.state, State::Held { .. }) };
            if candidate {
                due[count] = index as u8;
                count += 1;
            }
        }
        let due = &mut due[..count];
        due.sort_unstable_by_key(|&index| (self.requests[usize::from(index)].deadline, index));
        for &index in due.iter() {
            let index = usize::from(index);
            if !matches!(self.requests[index].state, State::Held { .. }) {
                break;
            }
            let request = &mut self.requests[index];
            let State::Held { result } = request.state else { unreachable!("filtered on Held") };
            request.state = State::Free;
            self.in_flight -= 1;
            self.earliest = None;
            out.extend(core::iter::once(Completion {
                tag: request.tag,
                op: request.op,
                result,
                submitted: request.submitted,
            }));
        }
    }

    /// The earliest deadline of a request the device has finished but `poll_completions` has
    /// not reported yet: when to fire the EL2 timer. Requests still at the device are not
    /// counted; their interrupt comes first.
    pub fn next_deadline(&self) -> Option<Ticks> {
        self.requests.iter().filter(|r| matches!(r.state, State::Held { .. })).map(|r| r.deadline).min()
    }

    /// The earliest latency deadline of any outstanding request, finished or still at the
    /// device: the earliest time a completion can be reported.
    pub fn earliest_due(&mut self) -> Option<Ticks> {
        if let Some(earliest) = self.earliest {
            return earliest;
        }
        let earliest = self.requests.iter().filter(|r| r.state != State::Free).map(|r| r.deadline).min();
        self.earliest = Some(earliest);
        earliest
    }

    /// After [`Self::poll_completions`] at `now`: when to fire the EL2 timer, and whether a
    /// request is late (virtual time: its deadline passed before the device finished it); see
    /// `asyncpf_core::latency::schedule`.
    pub fn schedule(&self, now: Ticks) -> Schedule {
        let outstanding = self
            .requests
            .iter()
            .filter(|r| r.state != State::Free)
            .map(|r| Outstanding { deadline: r.deadline.0, device_done: matches!(r.state, State::Held { .. }) });
        latency::schedule(now.0, outstanding, self.time_base)
    }
}

impl Drop for BackingStore {
    /// Stop the interrupt; dropping the driver then resets the device (the transport writes
    /// status 0) before the queue memory goes back to the heap.
    fn drop(&mut self) {
        gic::disable_spi(self.gicd_base, self.intid);
    }
}
