//! The per-fault trace (`cargo xtask run --trace FILE`): what the hypervisor and the guest
//! record, how one record is encoded, the bounded per-CPU log that keeps them, the guest's
//! records the hypervisor accepts, and the layout of the trace area the hypervisor writes to
//! its own disk when the machine ends (docs/abi.md §9, docs/architecture.md "Tracing").
//!
//! Everything here is decided on the host side too: the runner decodes the area with the same
//! [`Header::decode`] and [`Event::decode`] that the hypervisor's writer was tested against.
//!
//! # Records
//! One record is [`EVENT_BYTES`] little-endian bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | `time`: model time in counter ticks (what the guest's CNTVCT_EL0 shows) |
//! | 8 | `kind` ([`Kind`]) |
//! | 9 | `cpu`: the vCPU (= physical CPU) whose log it is in |
//! | 10..12 | `aux`: a small argument (flags, a reason, a request's queue slot) |
//! | 12..16 | `x`: a 32-bit argument (a task id) |
//! | 16..24 | `a` |
//! | 24..32 | `b` |

#[cfg(test)]
mod tests;

/// Bytes of one encoded record.
pub const EVENT_BYTES: usize = guest_kinds::RECORD_BYTES;
/// Bytes of the area's header (one disk slot).
pub const HEADER_BYTES: usize = 4096;
/// The area's magic number (`APFTRACE`, little-endian).
pub const MAGIC: u64 = u64::from_le_bytes(*b"APFTRACE");
/// The layout version.
pub const VERSION: u32 = 1;
/// CPUs the header describes (the hypervisor's limit).
pub const MAX_CPUS: usize = 8;
/// Guest records the hypervisor accepts per TRACE_PUT call: one 4 KiB page of them.
pub const MAX_GUEST_BATCH: usize = 4096 / EVENT_BYTES;
/// A task id that is not a task: the vCPU's idle loop ([`Kind::TaskSwitch`]).
pub const TASK_IDLE: u32 = guest_kinds::TASK_IDLE;

use asyncpf_contract::trace as guest_kinds;

/// What a record says. Hypervisor kinds are below [`Kind::FIRST_GUEST`]; the guest may only
/// hand over guest kinds ([`admit_guest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// The vCPU enters the guest. `aux`: the cause of the exit it ends ([`EXIT_CAUSES`]).
    Enter = 1,
    /// The vCPU left the guest. `a`: ESR_EL2's exception class (`aux` 1: an interrupt).
    Exit = 2,
    /// A stage-2 abort on guest RAM. `a`: IPA, `b`: FAR, `aux`: [`fault_flags`].
    Fault = 3,
    /// The fault is resolved synchronously for this reason (`aux`: [`SYNC_REASONS`]).
    Sync = 4,
    /// page_not_present delivered. `a`: token, `b`: the faulting address.
    PageNotPresent = 5,
    /// The handler answered. `a`: token, `aux`: 1 accepted, 0 declined.
    HandlerDone = 6,
    /// The vCPU starts waiting for a page (synchronous fault).
    WaitStart = 7,
    /// The vCPU's wait ended. `aux`: 0 retry, 1 abort.
    WaitEnd = 8,
    /// A backing-store request was accepted. `a`: disk slot (= guest page), `b`: request tag,
    /// `aux`: queue slot, `x`: [`OP_READ`] or [`OP_WRITE`].
    DiskSubmit = 9,
    /// A backing-store request was reported complete. As [`Kind::DiskSubmit`], and bit 8 of `x`
    /// set when it failed.
    DiskDone = 10,
    /// A page_ready entry was written to a vCPU's ring. `a`: token, `x`: that vCPU.
    PageReady = 11,
    /// How the stage-2 abort ended: `aux` [`FaultEnd`], `a`: the token when delivered.
    FaultEnd = 12,
    /// Guest: the vCPU switches to task `x` ([`TASK_IDLE`]: its idle loop); `a`: the task that
    /// ran before, `aux`: 0 if it may run on, 1 if it blocked or ended; `b`: the guest's CPU.
    TaskSwitch = guest_kinds::KIND_TASK_SWITCH,
    /// Guest: task `x` parks on APF token `a`.
    TaskPark = guest_kinds::KIND_TASK_PARK,
    /// Guest: page_ready for token `a` woke `x` tasks (0: none parked yet; the wake is kept).
    TaskWake = guest_kinds::KIND_TASK_WAKE,
}

impl Kind {
    /// The first kind a guest may record.
    pub const FIRST_GUEST: u8 = 32;
    pub const ALL: [Kind; 15] = [
        Kind::Enter,
        Kind::Exit,
        Kind::Fault,
        Kind::Sync,
        Kind::PageNotPresent,
        Kind::HandlerDone,
        Kind::WaitStart,
        Kind::WaitEnd,
        Kind::DiskSubmit,
        Kind::DiskDone,
        Kind::PageReady,
        Kind::FaultEnd,
        Kind::TaskSwitch,
        Kind::TaskPark,
        Kind::TaskWake,
    ];

    pub fn from_u8(value: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == value)
    }

    /// Whether a guest may record it.
    pub fn is_guest(self) -> bool {
        self as u8 >= Self::FIRST_GUEST
    }
}

/// [`Kind::DiskSubmit`]'s `x`: a read (page-in).
pub const OP_READ: u32 = 0;
/// [`Kind::DiskSubmit`]'s `x`: a write-back.
pub const OP_WRITE: u32 = 1;
/// [`Kind::DiskDone`]'s `x` bit: the request failed.
pub const OP_FAILED: u32 = 1 << 8;

/// [`Kind::Fault`]'s `aux`: the faulting context and the access.
pub fn fault_flags(pstate: u64, write: bool, instruction: bool, access_flag: bool) -> u16 {
    const PSTATE_I: u64 = 1 << 7;
    const PSTATE_MODE: u64 = 0xf;
    let el = if pstate & PSTATE_MODE == 0 { 0 } else { 1 };
    el | u16::from(pstate & PSTATE_I != 0) << 1
        | u16::from(write) << 2
        | u16::from(instruction) << 3
        | u16::from(access_flag) << 4
}

/// [`fault_flags`] read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultFlags {
    pub el: u8,
    pub irqs_masked: bool,
    pub write: bool,
    pub instruction: bool,
    pub access_flag: bool,
}

impl FaultFlags {
    pub fn decode(aux: u16) -> Self {
        FaultFlags {
            el: (aux & 1) as u8,
            irqs_masked: aux & 2 != 0,
            write: aux & 4 != 0,
            instruction: aux & 8 != 0,
            access_flag: aux & 16 != 0,
        }
    }
}

/// Why a fault was not delivered (`Kind::Sync`'s `aux`): the hypervisor's `apf.sync_reasons`.
pub const SYNC_REASONS: [&str; 8] = [
    "after_decline",
    "sdei_not_ready",
    "delivering",
    "user_only",
    "irqs_masked",
    "at_limit",
    "unreadable",
    "cheaper_to_wait",
];

/// How a stage-2 abort on guest RAM ended ([`Kind::FaultEnd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum FaultEnd {
    /// Mapped without waiting (resident, zero-fill, access flag): the access retries.
    Resolved = 0,
    /// page_not_present delivered: the guest's handler runs.
    Delivered = 1,
    /// The vCPU waited for the page (synchronously) and retries.
    Waited = 2,
    /// The page came back before the delivery, or the delivery was refused: retried.
    Retried = 3,
    /// An external abort was injected.
    Aborted = 4,
}

impl FaultEnd {
    pub const NAMES: [&'static str; 5] = ["resolved", "delivered", "waited", "retried", "aborted"];

    pub fn name(aux: u16) -> &'static str {
        Self::NAMES.get(usize::from(aux)).copied().unwrap_or("unknown")
    }
}

/// The exit causes of [`Kind::Enter`]'s `aux`: those the hypervisor's `el2_ns_*` counters split.
pub const EXIT_CAUSES: [&str; 4] = ["other", "async_fault", "handler_answer", "interrupt"];

/// One record (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub time: u64,
    pub kind: u8,
    pub cpu: u8,
    pub aux: u16,
    pub x: u32,
    pub a: u64,
    pub b: u64,
}

impl Event {
    pub fn new(time: u64, kind: Kind, cpu: u8) -> Self {
        Event { time, kind: kind as u8, cpu, ..Event::default() }
    }

    pub fn encode(&self) -> [u8; EVENT_BYTES] {
        let mut out = [0u8; EVENT_BYTES];
        out[0..8].copy_from_slice(&self.time.to_le_bytes());
        out[8] = self.kind;
        out[9] = self.cpu;
        out[10..12].copy_from_slice(&self.aux.to_le_bytes());
        out[12..16].copy_from_slice(&self.x.to_le_bytes());
        out[16..24].copy_from_slice(&self.a.to_le_bytes());
        out[24..32].copy_from_slice(&self.b.to_le_bytes());
        out
    }

    /// Any 32 bytes decode; [`Event::kind`] says whether the kind is known.
    pub fn decode(bytes: &[u8; EVENT_BYTES]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Event {
            time: u64_at(0),
            kind: bytes[8],
            cpu: bytes[9],
            aux: u16::from_le_bytes([bytes[10], bytes[11]]),
            x: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
            a: u64_at(16),
            b: u64_at(24),
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }
}

/// A guest's record handed over with TRACE_PUT, as the hypervisor keeps it: only guest kinds
/// are accepted, and the record is put on the calling vCPU whatever its `cpu` byte said, so a
/// guest can only add to its own task tracks. `None`: rejected (counted by the caller).
pub fn admit_guest(bytes: &[u8; EVENT_BYTES], vcpu: u8) -> Option<Event> {
    let mut event = Event::decode(bytes);
    match event.kind() {
        Some(kind) if kind.is_guest() => {
            event.cpu = vcpu;
            Some(event)
        }
        _ => None,
    }
}

/// TRACE_PUT(ipa, bytes)'s range (docs/abi.md §9): 32-byte aligned, a multiple of 32 bytes, at
/// most [`MAX_GUEST_BATCH`] records, inside one 4 KiB page of guest RAM `ram`. Returns the
/// guest page (from the start of RAM) and the offset in it; `None`: INVALID_PARAMETER. `bytes`
/// must not be 0 (that call only asks whether the run is traced).
pub fn validate_put(ipa: u64, bytes: u64, ram: core::ops::Range<u64>) -> Option<(u64, u64)> {
    const PAGE: u64 = 4096;
    let record = EVENT_BYTES as u64;
    let fits = bytes != 0
        && bytes <= (MAX_GUEST_BATCH * EVENT_BYTES) as u64
        && bytes.is_multiple_of(record)
        && ipa.is_multiple_of(record)
        && ipa % PAGE + bytes <= PAGE
        && ipa >= ram.start
        && ipa.checked_add(bytes).is_some_and(|end| end <= ram.end);
    fits.then(|| ((ipa - ram.start) / PAGE, ipa % PAGE))
}

/// The bookkeeping of one bounded log: `capacity` records, filled in order; a record that does
/// not fit is counted as dropped, never written over an older one (the start of a fault's life
/// matters as much as its end), and never silently lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log {
    capacity: usize,
    len: usize,
    dropped: u64,
    closed: bool,
}

impl Log {
    pub const fn new(capacity: usize) -> Self {
        Log { capacity, len: 0, dropped: 0, closed: false }
    }

    /// Where the next record goes, or `None` (counted as dropped) when the log is full or
    /// closed.
    pub fn claim(&mut self) -> Option<usize> {
        if self.closed || self.len == self.capacity {
            self.dropped += 1;
            return None;
        }
        self.len += 1;
        Some(self.len - 1)
    }

    /// Claim up to `n` records at once; returns the first index and how many fit (the rest are
    /// counted as dropped).
    pub fn claim_many(&mut self, n: usize) -> (usize, usize) {
        let room = if self.closed { 0 } else { self.capacity - self.len };
        let fit = n.min(room);
        let first = self.len;
        self.len += fit;
        self.dropped += (n - fit) as u64;
        (first, fit)
    }

    /// No record is added after this (the log is being written out); later ones count as
    /// dropped.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// One log's entry in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Section {
    /// Records written.
    pub events: u64,
    /// Records that did not fit (or came after the log was closed).
    pub dropped: u64,
    /// Records the log could hold.
    pub capacity: u64,
    /// Where its records start, in bytes from the start of the area (a multiple of 4096).
    pub offset: u64,
}

/// The header of the trace area (its first [`HEADER_BYTES`]); the sections follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// The counter's frequency (CNTFRQ_EL0), ticks per second.
    pub counter_hz: u64,
    /// Model time at the start (the counter minus hidden ticks, as every record).
    pub started: u64,
    /// One log per CPU (`cpus` of them).
    pub cpus: u32,
    pub cpu: [Section; MAX_CPUS],
    /// The guest's records (TRACE_PUT), after validation.
    pub guest: Section,
    /// Guest records refused by [`admit_guest`].
    pub guest_rejected: u64,
    /// TRACE_PUT calls refused (bad address or size).
    pub guest_bad_calls: u64,
}

/// Why an area does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    Magic,
    Version(u32),
    Cpus(u32),
    /// A section lies outside the area, overlaps another or holds more than its capacity.
    Section,
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short => write!(f, "the trace area is shorter than its header"),
            Self::Magic => write!(f, "no trace (magic number missing): was the run made with tracing?"),
            Self::Version(v) => write!(f, "trace layout version {v}, expected {VERSION}"),
            Self::Cpus(n) => write!(f, "{n} CPUs in the trace header (at most {MAX_CPUS})"),
            Self::Section => write!(f, "a section of the trace area is inconsistent"),
        }
    }
}

impl Header {
    /// The sections: every CPU's, then the guest's.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.cpu[..self.cpus as usize].iter().chain(core::iter::once(&self.guest))
    }

    /// Bytes of the whole area: header and every section, each rounded up to 4096.
    pub fn area_bytes(&self) -> u64 {
        self.sections().map(|s| s.offset + section_bytes(s.events)).max().unwrap_or(0).max(HEADER_BYTES as u64)
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let mut at = 0;
        let mut put = |v: u64| {
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            at += 8;
        };
        put(MAGIC);
        put(u64::from(VERSION));
        put(self.counter_hz);
        put(self.started);
        put(u64::from(self.cpus));
        put(self.guest_rejected);
        put(self.guest_bad_calls);
        for s in self.cpu.iter().chain(core::iter::once(&self.guest)) {
            put(s.events);
            put(s.dropped);
            put(s.capacity);
            put(s.offset);
        }
        out
    }

    /// Decode and check an area's first bytes (and, with `area_len`, that every section fits).
    pub fn decode(bytes: &[u8], area_len: Option<u64>) -> Result<Header, HeaderError> {
        if bytes.len() < HEADER_BYTES {
            return Err(HeaderError::Short);
        }
        let mut at = 0;
        let mut get = || {
            let v = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            at += 8;
            v
        };
        if get() != MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = get() as u32;
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let mut header = Header { counter_hz: get(), started: get(), ..Header::default() };
        let cpus = get();
        header.cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
        if header.cpus as usize > MAX_CPUS {
            return Err(HeaderError::Cpus(header.cpus));
        }
        header.guest_rejected = get();
        header.guest_bad_calls = get();
        let mut sections = [Section::default(); MAX_CPUS + 1];
        for s in sections.iter_mut() {
            *s = Section { events: get(), dropped: get(), capacity: get(), offset: get() };
        }
        header.cpu.copy_from_slice(&sections[..MAX_CPUS]);
        header.guest = sections[MAX_CPUS];
        // Sections in order, each after the previous one, page-aligned, within capacity.
        let mut end = HEADER_BYTES as u64;
        for s in header.sections() {
            let fits = s.events <= s.capacity
                && s.offset % 4096 == 0
                && s.offset >= end
                && s.events.checked_mul(EVENT_BYTES as u64).is_some();
            if !fits {
                return Err(HeaderError::Section);
            }
            end = s.offset + section_bytes(s.events);
        }
        if area_len.is_some_and(|len| end > len) {
            return Err(HeaderError::Section);
        }
        Ok(header)
    }
}

/// Bytes `events` records take in the area, rounded up to 4096.
pub fn section_bytes(events: u64) -> u64 {
    (events * EVENT_BYTES as u64).div_ceil(4096) * 4096
}

/// The layout of the sections for logs of these capacities (CPU logs, then the guest's): each
/// starts on a page, after the header. Returns the offsets (CPU sections, guest) and the
/// area's largest size.
pub fn layout(cpu_capacity: &[u64], guest_capacity: u64) -> ([u64; MAX_CPUS], u64, u64) {
    let mut offsets = [0u64; MAX_CPUS];
    let mut at = HEADER_BYTES as u64;
    for (o, &cap) in offsets.iter_mut().zip(cpu_capacity) {
        *o = at;
        at += section_bytes(cap);
    }
    let guest = at;
    at += section_bytes(guest_capacity);
    (offsets, guest, at)
}

/// Every record of an area (header already decoded): `(section, event)` with section
/// `0..cpus` for the CPUs and `cpus` for the guest's.
pub fn events<'a>(header: &'a Header, area: &'a [u8]) -> impl Iterator<Item = (usize, Event)> + 'a {
    header.sections().enumerate().flat_map(move |(i, s)| {
        (0..s.events as usize).filter_map(move |n| {
            let at = s.offset as usize + n * EVENT_BYTES;
            let bytes: &[u8; EVENT_BYTES] = area.get(at..at + EVENT_BYTES)?.try_into().ok()?;
            Some((i, Event::decode(bytes)))
        })
    })
}
