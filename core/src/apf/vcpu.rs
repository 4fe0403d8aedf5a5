//! One vCPU's APF state: enablement, tokens, outstanding faults, the backlog of completions,
//! and the producer side of the completion ring.

use super::layout::Record;
use super::ring::{ring_used, RecordMemory, RingError};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use asyncpf_contract::apf::{RING_ENTRIES, TOKEN_NONE, TOKEN_WAKE_ALL};
use core::fmt;

/// The largest limit of tokens in flight per vCPU: one less than the ring holds, so that
/// everything the host may hold back (the completions of every token in flight, plus one
/// `TOKEN_WAKE_ALL`) fits into a ring the guest has emptied.
pub const MAX_LIMIT: usize = (RING_ENTRIES - 1) as usize;

/// Bits of a token that hold the vCPU index (the low bits).
const VCPU_BITS: u32 = 16;
/// The largest sequence number; sequence numbers run from 1 to this, then start again at 1.
/// With the vCPU in the low 16 bits, a token is never 0 (the sequence is not 0) and never
/// all ones (the sequence is not all ones).
pub const MAX_SEQUENCE: u64 = (1 << (64 - VCPU_BITS)) - 2;

/// A page_not_present token: `sequence << 16 | vcpu`. Never [`TOKEN_NONE`] (0) nor
/// [`TOKEN_WAKE_ALL`]. The vCPU part makes tokens unique in the VM without shared state, and
/// tells the hypervisor which vCPU's ring a completion goes to; the guest treats tokens as
/// opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(u64);

impl Token {
    /// The token with this raw value, unless it is [`TOKEN_NONE`] or [`TOKEN_WAKE_ALL`].
    pub const fn from_raw(raw: u64) -> Option<Token> {
        if raw == TOKEN_NONE || raw == TOKEN_WAKE_ALL {
            None
        } else {
            Some(Token(raw))
        }
    }

    /// `sequence` (1 to [`MAX_SEQUENCE`]) of vCPU `vcpu`.
    const fn compose(vcpu: u16, sequence: u64) -> Token {
        Token(sequence << VCPU_BITS | vcpu as u64)
    }

    /// The raw value, as written into the record.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The vCPU whose fault this token names: its page_ready goes to that vCPU's ring.
    pub const fn vcpu(self) -> u16 {
        self.0 as u16
    }

    /// The token's sequence number within its vCPU.
    pub const fn sequence(self) -> u64 {
        self.0 >> VCPU_BITS
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {:#x}", self.0)
    }
}

/// The limit of [`ApfVcpu::new`] is not between 1 and [`MAX_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitError(pub usize);

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apf: limit {} is outside 1..={MAX_LIMIT}", self.0)
    }
}

/// What the hypervisor knows about the fault and the vCPU when it decides whether to dispatch
/// page_not_present ([`ApfVcpu::may_dispatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchInputs {
    /// From the SDEI dispatcher: the page_not_present event is registered and enabled, the vCPU
    /// is not SDEI-masked, and no handler is running on it.
    pub sdei_ready: bool,
    /// The fault was taken from EL0 (else from EL1).
    pub from_el0: bool,
    /// PSTATE.I of the interrupted context (only looked at for EL1).
    pub irqs_masked: bool,
    /// From the pager: the faulting page is known to be unreadable (its last read failed for
    /// good, [`Overcommit::is_unreadable`](crate::overcommit::Overcommit::is_unreadable)).
    pub page_unreadable: bool,
    /// From the measured costs ([`worth_parking`](super::cost::worth_parking) is false):
    /// waiting for the read costs the vCPU less than parking and waking its task.
    pub cheaper_to_wait: bool,
}

/// Why page_not_present is not dispatched: the hypervisor resolves the fault synchronously.
/// Listed in the order [`ApfVcpu::may_dispatch`] checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// APF is not enabled on the vCPU (never enabled, or disabled).
    NotEnabled,
    /// The faulting page is known to be unreadable ([`DispatchInputs::page_unreadable`]): the
    /// access must take its synchronous external abort if the page still cannot be read, and
    /// an asynchronous waiter could only be told to retry. Without this rule a task whose page
    /// cannot be read back would be woken, retry, fault asynchronously again, forever.
    PageUnreadable,
    /// The SDEI event cannot be dispatched now ([`DispatchInputs::sdei_ready`] is false).
    SdeiNotReady,
    /// A page_not_present is still being delivered on this vCPU (its handler has neither
    /// accepted nor declined): the slot in the record is in use. The SDEI dispatcher should
    /// have said so already; this protects the slot if it did not.
    Delivering,
    /// The fault came from EL1 and the guest asked for [`FLAG_USER_ONLY`](asyncpf_contract::apf::FLAG_USER_ONLY).
    UserOnly,
    /// The fault came from EL1 with PSTATE.I set: the guest cannot schedule there.
    IrqsMasked,
    /// The vCPU has [`ApfVcpu::limit`] tokens in flight.
    AtLimit,
    /// Waiting is cheaper than parking ([`DispatchInputs::cheaper_to_wait`]): the fault could
    /// have been delivered, but the store is fast enough that the vCPU waits instead (unless
    /// the guest enabled APF with [`FLAG_ALWAYS_DELIVER`](asyncpf_contract::apf::FLAG_ALWAYS_DELIVER)).
    CheaperToWait,
}

/// A call about a token that does not fit the token's state; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The token is not outstanding on this vCPU: never issued here, declined, already
    /// completed, or dropped by a wake-all (disable, power-off, re-enable). A completion of such
    /// a token is stale: nobody waits for it.
    Unknown(Token),
    /// Accept or decline of a token whose page_not_present is not being delivered (it was
    /// accepted already).
    NotDelivering(Token),
    /// A second completion of a token.
    AlreadyCompleted(Token),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenError::Unknown(token) => write!(f, "apf: {token} is not outstanding"),
            TokenError::NotDelivering(token) => write!(f, "apf: {token} is not being delivered"),
            TokenError::AlreadyCompleted(token) => write!(f, "apf: {token} was completed already"),
        }
    }
}

/// Whether APF is on, and which record the host writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Off; the host keeps no record.
    Disabled,
    /// On, with this record.
    Enabled(Record),
    /// Off, but the `TOKEN_WAKE_ALL` that disabling posts did not fit into this
    /// record's ring yet: the host still writes it (only that) when the guest makes room.
    Closing(Record),
}

/// What happened to a completed token's page_ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It is in the ring.
    Posted,
    /// It waits in the backlog for ring space (ring full, or its indices unusable).
    Queued,
    /// Its page_not_present is still being delivered: it is posted when the handler accepts,
    /// dropped if it declines.
    Held,
}

/// The answer to a completion ([`ApfVcpu::complete`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// What happened to this token.
    pub fate: Fate,
    /// Entries written to the ring by this call (earlier backlog entries first): if not 0,
    /// raise the page_ready PPI.
    pub posted: usize,
}

/// Event counts since construction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// page_not_present events started ([`ApfVcpu::start`]).
    pub dispatched: u64,
    /// Faults the guest's handler accepted.
    pub accepted: u64,
    /// Faults the guest's handler declined (resolved synchronously).
    pub declined: u64,
    /// Completions of outstanding tokens.
    pub completed: u64,
    /// Completions of tokens not outstanding (declined or dropped by a wake-all).
    pub stale: u64,
    /// Entries written to the ring, `TOKEN_WAKE_ALL` included.
    pub posted: u64,
    /// Entries (tokens or `TOKEN_WAKE_ALL`) that could not be posted by the call that produced
    /// them and went to the backlog.
    pub queued: u64,
    /// `TOKEN_WAKE_ALL` entries produced (by disable or power-off).
    pub wake_alls: u64,
    /// Tokens dropped because a `TOKEN_WAKE_ALL` covers them.
    pub dropped: u64,
    /// Times the ring was found unusable (garbage in `ring_tail`) after it was fine.
    pub ring_errors: u64,
    /// Sessions (enabled or closing) that a power-off ended ([`ApfVcpu::power_off`]).
    pub power_offs: u64,
    /// Of those, the ones with tokens in flight (dropped, covered by the wake-all).
    pub power_offs_with_tokens: u64,
    /// Wake-alls of a power-off that found no room in the ring and were dropped (the guest then
    /// wakes those tasks itself, as for a new session).
    pub wake_alls_lost: u64,
}

/// What [`ApfVcpu::power_off`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerOff {
    /// Tokens in flight that the end of the session dropped (their completions are stale).
    pub dropped: usize,
    /// Entries written to the ring: the wake-all, if it fitted. Raise no PPI: the vCPU is off.
    pub posted: usize,
    /// The wake-all did not fit and was dropped.
    pub wake_all_lost: bool,
}

/// The state of an outstanding token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// page_not_present is being delivered; the handler has not answered yet.
    Delivering,
    /// As `Delivering`, and the page is back already: post when accepted.
    DeliveringReady,
    /// Accepted: a task waits for this token's page_ready.
    Waiting,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    token: Token,
    phase: Phase,
}

/// One vCPU's asynchronous-page-fault state, on the host. See the [module docs](super) for
/// the protocol and the rules.
#[derive(Debug)]
pub struct ApfVcpu {
    vcpu: u16,
    limit: usize,
    status: Status,
    /// The host's own `ring_head` of the current record; never read back from the guest.
    head: u64,
    /// The next token's sequence number (1 to [`MAX_SEQUENCE`]).
    next_sequence: u64,
    /// Outstanding tokens (capacity `limit`).
    slots: Vec<Slot>,
    /// Entries waiting for ring space, in the order they are to be posted (capacity
    /// `limit + 1`: the completions of every token in flight and one `TOKEN_WAKE_ALL`).
    backlog: VecDeque<u64>,
    /// The last look at `ring_tail` found garbage.
    ring_broken: bool,
    /// The first ring error of a session, until [`ApfVcpu::take_ring_error`] takes it.
    ring_error: Option<RingError>,
    /// A ring error of the current session was recorded for the log already.
    ring_error_latched: bool,
    counters: Counters,
}

impl ApfVcpu {
    /// The state of vCPU `vcpu` (its index in the VM; part of every token) with at most
    /// `limit` tokens in flight (1 to [`MAX_LIMIT`]): disabled. Allocates everything it will
    /// ever need.
    pub fn new(vcpu: u16, limit: usize) -> Result<Self, LimitError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(LimitError(limit));
        }
        Ok(ApfVcpu {
            vcpu,
            limit,
            status: Status::Disabled,
            head: 0,
            next_sequence: 1,
            slots: Vec::with_capacity(limit),
            backlog: VecDeque::with_capacity(limit + 1),
            ring_broken: false,
            ring_error: None,
            ring_error_latched: false,
            counters: Counters::default(),
        })
    }

    /// The vCPU index.
    pub fn vcpu(&self) -> u16 {
        self.vcpu
    }

    /// The most tokens in flight at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Event counts.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether APF is on, and which record the host writes.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The record the host may write (enabled or closing): the hypervisor keeps its pages
    /// resident and passes a [`RecordMemory`] over exactly [`Record::range`] to the calls that
    /// take one. `None`: the host no longer touches any record.
    pub fn record(&self) -> Option<Record> {
        match self.status {
            Status::Disabled => None,
            Status::Enabled(record) | Status::Closing(record) => Some(record),
        }
    }

    /// Whether APF is enabled (page_not_present may be dispatched).
    pub fn is_enabled(&self) -> bool {
        matches!(self.status, Status::Enabled(_))
    }

    /// Tokens in flight: outstanding ones plus completions waiting in the backlog (not
    /// counting a `TOKEN_WAKE_ALL`). Never more than [`ApfVcpu::limit`].
    pub fn in_flight(&self) -> usize {
        self.slots.len() + self.backlog.iter().filter(|&&entry| entry != TOKEN_WAKE_ALL).count()
    }

    /// Outstanding tokens: delivered and not yet completed, declined or dropped.
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Entries (tokens and `TOKEN_WAKE_ALL`) waiting for ring space, oldest first.
    pub fn backlog(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.backlog.iter().copied()
    }

    /// The token whose page_not_present is being delivered (the handler has not answered).
    pub fn delivering(&self) -> Option<Token> {
        self.slots.iter().find(|slot| slot.phase != Phase::Waiting).map(|slot| slot.token)
    }

    /// Whether `token` is outstanding on this vCPU.
    pub fn is_outstanding(&self, token: Token) -> bool {
        self.slot(token).is_some()
    }

    /// The first ring error of the current (or an earlier) session, once: the hypervisor logs
    /// it (at most one line per session, however often a hostile guest breaks its ring; the
    /// [`Counters::ring_errors`] count the rest).
    pub fn take_ring_error(&mut self) -> Option<RingError> {
        self.ring_error.take()
    }

    /// `APF_ENABLE` with a validated `record` (see [`validate_enable`](super::validate_enable));
    /// `mem` covers the new record. This begins a new session, from any state: every token in
    /// flight and a wake-all still waiting from a disable are dropped (their completions are
    /// stale), and nothing of an earlier session is ever posted to the new record; the guest
    /// wakes the tasks still waiting from an earlier session itself when its `APF_ENABLE`
    /// succeeds. The ring starts empty at the guest's current `ring_tail` (the host writes
    /// `ring_head` = `ring_tail`), and the page_not_present slot is cleared.
    pub fn enable<M: RecordMemory + ?Sized>(&mut self, record: Record, mem: &mut M) {
        self.counters.dropped += self.in_flight() as u64;
        self.slots.clear();
        self.backlog.clear();
        let layout = record.layout();
        let tail = mem.read_u64(layout.ring_tail());
        self.head = tail;
        self.status = Status::Enabled(record);
        self.ring_broken = false;
        self.ring_error_latched = false;
        mem.write_u64(layout.pnp_token(), TOKEN_NONE);
        mem.write_u64(layout.pnp_address(), 0);
        mem.write_u64(layout.ring_head(), tail);
        mem.publish();
    }

    /// `APF_DISABLE`: stop dispatching. Every outstanding token and every completion in the
    /// backlog is dropped, and one `TOKEN_WAKE_ALL` is posted instead, which wakes all their
    /// tasks. If the ring has no room, the wake-all waits in the backlog (status
    /// [`Status::Closing`]) and is posted by a later [`flush_backlog`](Self::flush_backlog);
    /// it is the last entry the host writes to this record. Completions of the dropped tokens
    /// are stale ([`TokenError::Unknown`]). Nothing happens when APF is disabled already,
    /// except another try at posting a waiting wake-all.
    ///
    /// Returns the entries posted (raise the page_ready PPI if not 0).
    pub fn disable<M: RecordMemory + ?Sized>(&mut self, mem: &mut M) -> usize {
        let Status::Enabled(record) = self.status else {
            return self.post(mem);
        };
        self.counters.dropped += self.in_flight() as u64;
        self.slots.clear();
        self.backlog.clear();
        self.status = Status::Closing(record);
        self.counters.wake_alls += 1;
        self.release(TOKEN_WAKE_ALL, mem).1
    }

    /// The vCPU turns off (PSCI CPU_OFF): the session ends now, as with
    /// [`disable`](Self::disable), except that nothing may wait. Every token in flight is
    /// dropped (their completions are stale: the pages still come in, nothing is posted) and
    /// one `TOKEN_WAKE_ALL` goes to the ring as its last entry, if the ring has room; a guest
    /// that emptied its ring right before CPU_OFF always has room, since at most
    /// [`limit`](Self::limit) (< 64) completions can be posted after that. If it has none (or
    /// a wake-all of an earlier disable still waits for room and does not fit), the wake-all is
    /// dropped ([`Counters::wake_alls_lost`]). Either way the vCPU ends
    /// [`Status::Disabled`]: the host never writes the record again, and the caller raises no
    /// PPI. The guest wakes the tasks that wait for this vCPU's tokens: it drains the record
    /// from another CPU once the vCPU is off (the wake-all tells it to), or, lacking the
    /// wake-all, wakes them all as when it enables a new session. (For a reset of the whole
    /// VM, whose memory is reloaded, use [`forget`](Self::forget).)
    pub fn power_off<M: RecordMemory + ?Sized>(&mut self, mem: &mut M) -> PowerOff {
        if self.status == Status::Disabled {
            return PowerOff::default();
        }
        let dropped = if self.is_enabled() { self.in_flight() } else { 0 };
        // Enabled: drops the tokens and posts the wake-all if it fits. Closing: another try.
        let posted = self.disable(mem);
        let wake_all_lost = !self.backlog.is_empty();
        if wake_all_lost {
            self.backlog.clear();
            self.counters.wake_alls_lost += 1;
        }
        self.status = Status::Disabled;
        self.counters.power_offs += 1;
        self.counters.power_offs_with_tokens += u64::from(dropped > 0);
        PowerOff { dropped, posted, wake_all_lost }
    }

    /// Drops everything without touching guest memory: disabled, nothing outstanding, empty
    /// backlog (token sequence numbers and counters go on). For a reset of the whole VM or
    /// its teardown.
    pub fn forget(&mut self) {
        self.counters.dropped += self.in_flight() as u64;
        self.slots.clear();
        self.backlog.clear();
        self.status = Status::Disabled;
    }

    /// The decision table: may page_not_present be dispatched for a fault on this vCPU now?
    /// Checked in the order of [`Refusal`]: enabled, the page not known to be unreadable, SDEI
    /// ready, no delivery in progress, the
    /// interrupted context (EL0 always qualifies; EL1 only without user-only and with
    /// PSTATE.I clear), and fewer than [`limit`](Self::limit) tokens in flight.
    pub fn may_dispatch(&self, inputs: DispatchInputs) -> Result<(), Refusal> {
        let Status::Enabled(record) = self.status else {
            return Err(Refusal::NotEnabled);
        };
        if inputs.page_unreadable {
            return Err(Refusal::PageUnreadable);
        }
        if !inputs.sdei_ready {
            return Err(Refusal::SdeiNotReady);
        }
        if self.delivering().is_some() {
            return Err(Refusal::Delivering);
        }
        if !inputs.from_el0 {
            if record.user_only() {
                return Err(Refusal::UserOnly);
            }
            if inputs.irqs_masked {
                return Err(Refusal::IrqsMasked);
            }
        }
        if self.in_flight() >= self.limit {
            return Err(Refusal::AtLimit);
        }
        if inputs.cheaper_to_wait && !record.always_deliver() {
            return Err(Refusal::CheaperToWait);
        }
        Ok(())
    }

    /// Starts a page_not_present for a fault at guest virtual `address`, if
    /// [`may_dispatch`](Self::may_dispatch) allows: allocates a token, records it as being
    /// delivered and writes `pnp_token` and `pnp_address`. The caller then dispatches the SDEI
    /// event and, when the handler answers, calls [`accept`](Self::accept) or
    /// [`decline`](Self::decline). On `Err` nothing changed: resolve the fault synchronously.
    pub fn start<M: RecordMemory + ?Sized>(
        &mut self,
        inputs: DispatchInputs,
        address: u64,
        mem: &mut M,
    ) -> Result<Token, Refusal> {
        self.may_dispatch(inputs)?;
        let layout = self.record().expect("may_dispatch checked").layout();
        let token = self.allocate();
        self.slots.push(Slot { token, phase: Phase::Delivering });
        mem.write_u64(layout.pnp_address(), address);
        mem.write_u64(layout.pnp_token(), token.get());
        mem.publish();
        self.counters.dispatched += 1;
        Ok(token)
    }

    /// The guest's handler accepted `token` (a task waits for it). If the page came back
    /// while the handler ran, its page_ready is posted (or queued) now. Returns the entries
    /// posted (raise the page_ready PPI if not 0).
    pub fn accept<M: RecordMemory + ?Sized>(&mut self, token: Token, mem: &mut M) -> Result<usize, TokenError> {
        let index = self.slot(token).ok_or(TokenError::Unknown(token))?;
        let posted = match self.slots[index].phase {
            Phase::Waiting => return Err(TokenError::NotDelivering(token)),
            Phase::Delivering => {
                self.slots[index].phase = Phase::Waiting;
                0
            }
            Phase::DeliveringReady => {
                self.slots.swap_remove(index);
                self.release(token.get(), mem).1
            }
        };
        self.counters.accepted += 1;
        Ok(posted)
    }

    /// The guest's handler declined `token`: it is forgotten (no page_ready will be posted
    /// for it, even if the page is back already); the hypervisor resolves the fault
    /// synchronously.
    pub fn decline(&mut self, token: Token) -> Result<(), TokenError> {
        let index = self.slot(token).ok_or(TokenError::Unknown(token))?;
        if self.slots[index].phase == Phase::Waiting {
            return Err(TokenError::NotDelivering(token));
        }
        self.slots.swap_remove(index);
        self.counters.declined += 1;
        Ok(())
    }

    /// The page that `token` waits for is back (page_ready). Posted behind any older entries
    /// of the backlog; queued if the ring has no room; held until the handler answers if it
    /// has not yet. A token that is not outstanding gets [`TokenError::Unknown`] (counted as
    /// stale; nothing to do).
    pub fn complete<M: RecordMemory + ?Sized>(&mut self, token: Token, mem: &mut M) -> Result<Delivery, TokenError> {
        let Some(index) = self.slot(token) else {
            self.counters.stale += 1;
            return Err(TokenError::Unknown(token));
        };
        let delivery = match self.slots[index].phase {
            Phase::DeliveringReady => return Err(TokenError::AlreadyCompleted(token)),
            Phase::Delivering => {
                self.slots[index].phase = Phase::DeliveringReady;
                Delivery { fate: Fate::Held, posted: 0 }
            }
            Phase::Waiting => {
                self.slots.swap_remove(index);
                let (fate, posted) = self.release(token.get(), mem);
                Delivery { fate, posted }
            }
        };
        self.counters.completed += 1;
        Ok(delivery)
    }

    /// Posts as much of the backlog as fits into the ring, oldest first. The hypervisor calls
    /// it whenever the guest may have made room: before every entry of this vCPU while
    /// [`backlog`](Self::backlog) is not empty (and it traps the guest's WFI meanwhile, so a
    /// guest that made room and waits for an interrupt exits). Returns the entries posted
    /// (raise the page_ready PPI if not 0).
    pub fn flush_backlog<M: RecordMemory + ?Sized>(&mut self, mem: &mut M) -> usize {
        self.post(mem)
    }

    /// The slot index of outstanding `token`.
    fn slot(&self, token: Token) -> Option<usize> {
        self.slots.iter().position(|slot| slot.token == token)
    }

    /// Whether `token` is in use: outstanding or waiting in the backlog.
    fn in_use(&self, token: Token) -> bool {
        self.slot(token).is_some() || self.backlog.contains(&token.get())
    }

    /// A fresh token: the next sequence number that is not in use. Terminates within
    /// `limit + 1` tries since at most `limit` tokens are in use.
    fn allocate(&mut self) -> Token {
        loop {
            let sequence = self.next_sequence;
            self.next_sequence = if sequence >= MAX_SEQUENCE { 1 } else { sequence + 1 };
            let token = Token::compose(self.vcpu, sequence);
            if !self.in_use(token) {
                return token;
            }
        }
    }

    /// Appends `entry` to the backlog and posts what fits: its fate, and the entries posted.
    fn release<M: RecordMemory + ?Sized>(&mut self, entry: u64, mem: &mut M) -> (Fate, usize) {
        self.backlog.push_back(entry);
        let posted = self.post(mem);
        if self.backlog.is_empty() {
            (Fate::Posted, posted)
        } else {
            self.counters.queued += 1;
            (Fate::Queued, posted)
        }
    }

    /// Writes as many backlog entries as the ring has room for, then `ring_head`. Reads
    /// `ring_tail` once; writes nothing if its value is garbage. A closing record whose
    /// backlog (its wake-all) is posted is released.
    fn post<M: RecordMemory + ?Sized>(&mut self, mem: &mut M) -> usize {
        let Some(record) = self.record() else {
            return 0;
        };
        let mut posted = 0;
        if !self.backlog.is_empty() {
            let layout = record.layout();
            let tail = mem.read_u64(layout.ring_tail());
            mem.acquire();
            match ring_used(self.head, tail) {
                Ok(used) => {
                    self.ring_broken = false;
                    let room = (RING_ENTRIES - used) as usize;
                    while posted < room {
                        let Some(entry) = self.backlog.pop_front() else {
                            break;
                        };
                        mem.write_u64(layout.ring_entry(self.head), entry);
                        mem.posted(entry);
                        self.head = self.head.wrapping_add(1);
                        posted += 1;
                    }
                    if posted > 0 {
                        mem.publish();
                        mem.write_u64(layout.ring_head(), self.head);
                        self.counters.posted += posted as u64;
                    }
                }
                Err(error) => {
                    if !self.ring_broken {
                        self.ring_broken = true;
                        self.counters.ring_errors += 1;
                    }
                    if !self.ring_error_latched {
                        self.ring_error_latched = true;
                        self.ring_error = Some(error);
                    }
                }
            }
        }
        // A wake-all that fitted ends a closing record.
        if matches!(self.status, Status::Closing(_)) && self.backlog.is_empty() {
            self.status = Status::Disabled;
        }
        posted
    }
}

#[cfg(test)]
impl ApfVcpu {
    /// Lets a test start the sequence numbers anywhere (to test their wrap).
    pub(super) fn set_next_sequence(&mut self, sequence: u64) {
        assert!((1..=MAX_SEQUENCE).contains(&sequence));
        self.next_sequence = sequence;
    }

    /// Asserts that the state is consistent.
    pub(super) fn check_invariants(&self) {
        assert!(self.in_flight() <= self.limit, "in flight {} > limit {}", self.in_flight(), self.limit);
        assert!(self.backlog.len() <= self.limit + 1);
        assert!(self.slots.capacity() == self.limit && self.backlog.capacity() > self.limit);
        let wake_alls = self.backlog.iter().filter(|&&entry| entry == TOKEN_WAKE_ALL).count();
        assert!(wake_alls <= 1, "{wake_alls} wake-alls wait");
        assert!(self.slots.iter().filter(|slot| slot.phase != Phase::Waiting).count() <= 1, "two deliveries");
        let mut tokens: Vec<u64> = self.slots.iter().map(|slot| slot.token.get()).collect();
        tokens.extend(self.backlog.iter().filter(|&&entry| entry != TOKEN_WAKE_ALL));
        let count = tokens.len();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), count, "a token is in use twice");
        for &token in &tokens {
            assert!(token != TOKEN_NONE && token != TOKEN_WAKE_ALL);
            assert_eq!(Token(token).vcpu(), self.vcpu);
        }
        match self.status {
            Status::Disabled => assert!(self.slots.is_empty() && self.backlog.is_empty()),
            Status::Closing(_) => {
                assert!(self.slots.is_empty());
                assert_eq!(self.backlog.iter().copied().collect::<Vec<_>>(), [TOKEN_WAKE_ALL]);
            }
            Status::Enabled(_) => assert_eq!(wake_alls, 0, "a wake-all waits while enabled"),
        }
    }
}
