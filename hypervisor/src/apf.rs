//! Asynchronous page faults, the hypervisor's side: the APF_* calls of the vendor service, the
//! per-vCPU records in guest memory, and the page_ready PPI. `asyncpf_core::apf` decides
//! (validation, tokens, the ring and its backlog); this module keeps each record's guest pages
//! pinned in the pager's frames, gives the core a [`RecordMemory`] over them, and raises the
//! PPI whenever the core posted something.
//!
//! APF exists only when guest RAM is paged (`resident_mib`): without a pager there are no page
//! faults to report, and the calls answer NOT_SUPPORTED.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::ops::Range;

use crate::sync::Mutex;
use asyncpf_contract::apf as abi;
use asyncpf_contract::smccc;
use asyncpf_core::apf::cost::ParkOrWait;
use asyncpf_core::apf::slots::{Completion, TokenSlots, WaiterIds, WaiterOf};
use asyncpf_core::apf::{
    validate_enable, validate_pin, ApfVcpu, DispatchInputs, Layout, Record, RecordMemory, Refusal, Status,
};
use asyncpf_core::lockorder::Level;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::entry::GuestRegs;
use crate::backing::clock::Ticks;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::pager::{Pager, Stamp};
use crate::sdei::Dispatcher;
use crate::trace::trace_event;
use crate::vcpus::{PowerState, Vcpus};
use crate::vgic::VirtualGic;
use crate::{arch, guest_diag};

/// Tokens one vCPU may have in flight: one per token slot (engine waiter id the pager sets
/// aside).
const TOKENS_PER_VCPU: usize = asyncpf_core::apf::slots::SLOTS_PER_VCPU;
/// Most 4 KiB pages a record spans: `record_bytes(2048)` = 6656 bytes, granule-aligned.
const MAX_RECORD_PAGES: usize = 3;

/// What asynchronous page faults signal through: the vCPUs (power state, kicks), their
/// interrupt controller (page_ready) and the SDEI dispatcher (page_not_present).
#[derive(Clone, Copy)]
pub struct Signals<'a> {
    pub vcpus: &'a Vcpus,
    pub vgic: &'a VirtualGic,
    pub sdei: &'a Dispatcher,
}

/// The APF state of one vCPU: the core's state and the pinned pages of its record.
struct VcpuApf {
    state: ApfVcpu,
    /// The record's guest pages and the host frames pinned for them, while the core keeps a
    /// record ([`ApfVcpu::record`]).
    pinned: Vec<(usize, PhysAddr)>,
    /// Where the record starts in its first page.
    offset: u64,
    /// The engine waiter slots of its asynchronous faults ([`WaiterIds::slot`]).
    slots: TokenSlots,
    /// The guest declined the last page_not_present: resolve the next fault synchronously
    /// (its retry of the same access would be declined again).
    sync_next: bool,
    /// The park or wait rule's state (`asyncpf_core::apf::cost`: the delivery cost, in model
    /// ticks), and the model time of the fault being delivered.
    park_or_wait: ParkOrWait,
    delivery_started: Option<Stamp>,
}

impl VcpuApf {
    /// The core's state and the record's memory, borrowed together.
    fn parts(&mut self) -> (&mut ApfVcpu, HostRecord<'_>) {
        (&mut self.state, HostRecord { pinned: &self.pinned, start: self.offset })
    }
}

/// What [`Apf::deliver`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The guest's handler runs: the vCPU goes on with it.
    Delivered,
    /// The page is back already: retry the access.
    PageBack,
    /// Not deliverable after all: resolve the fault synchronously (retry, it waits).
    Refused,
}

/// The VM's asynchronous page faults.
pub struct Apf {
    vcpus: Vec<Mutex<VcpuApf>>,
    /// The engine waiter ids of the token slots.
    ids: WaiterIds,
    layout: Layout,
    ram: Range<u64>,
    /// Why faults on vCPUs with APF enabled were not eligible for asynchronous delivery (see
    /// [`SyncReason`]); counted before the pager knows whether they will wait at all (most
    /// that would not wait are zero-fills and mapping fixes). Access-flag faults never ask.
    sync_reasons: [AtomicU64; SyncReason::COUNT],
    /// Entries posted while their vCPU was off (must stay 0: CPU_OFF ends the session).
    posted_offline: AtomicU64,
    /// Tokens dropped by CPU_OFF (covered by the vCPU's last wake-all).
    power_off_tokens: AtomicU64,
    /// Guest pages pinned with APF_PIN (page numbers from the start of RAM), for the VM's life.
    guest_pins: Mutex<BTreeSet<u64>>,
    /// How many pages APF_PIN may pin in all (`asyncpf_core::apf::pin_quota`).
    pin_quota: u64,
}

/// Why [`Apf::prepare`] said no to a vCPU with APF enabled: counted for the `apf` result
/// (where the remaining synchronous waits come from).
#[derive(Clone, Copy, Debug)]
enum SyncReason {
    /// The guest declined the previous page_not_present on this vCPU.
    AfterDecline,
    /// The SDEI event cannot be dispatched (masked, disabled, or a handler runs: a fault
    /// inside the handler).
    SdeiNotReady,
    /// A page_not_present is being delivered.
    Delivering,
    /// The fault came from EL1 and the guest asked for user-only delivery.
    UserOnly,
    /// The fault came from EL1 with IRQs masked.
    IrqsMasked,
    /// The vCPU's tokens (or token slots) are all in flight.
    AtLimit,
    /// The page is known to be unreadable: the access waits and takes its abort.
    Unreadable,
    /// The store is fast: waiting costs less than parking and waking (measured).
    CheaperToWait,
}

impl SyncReason {
    const COUNT: usize = 8;
    /// The names in the JSON (`apf.sync_reasons`), in this enum's order: the ones the trace
    /// records and the runner reads back.
    const NAMES: [&'static str; Self::COUNT] = asyncpf_core::trace::SYNC_REASONS;

    fn of(refusal: Refusal) -> Option<SyncReason> {
        match refusal {
            Refusal::NotEnabled => None,
            Refusal::PageUnreadable => Some(SyncReason::Unreadable),
            Refusal::SdeiNotReady => Some(SyncReason::SdeiNotReady),
            Refusal::Delivering => Some(SyncReason::Delivering),
            Refusal::UserOnly => Some(SyncReason::UserOnly),
            Refusal::IrqsMasked => Some(SyncReason::IrqsMasked),
            Refusal::AtLimit => Some(SyncReason::AtLimit),
            Refusal::CheaperToWait => Some(SyncReason::CheaperToWait),
        }
    }
}

impl Apf {
    /// For `vcpus` vCPUs of a VM whose RAM is `ram` (guest physical), with records laid out by
    /// `granule` (the largest writeback granule of the physical CPUs).
    /// `resident_pages` of host memory back it (for the APF_PIN quota).
    pub fn new(vcpus: usize, granule: u64, ram: Range<u64>, resident_pages: u64) -> Self {
        let layout = Layout::new(granule).expect("writeback_granule_bytes gives a valid granule");
        let ids = WaiterIds::new(vcpus);
        let vcpus = (0..vcpus)
            .map(|v| {
                let state = ApfVcpu::new(v as u16, TOKENS_PER_VCPU).expect("a limit in range");
                Mutex::new(
                    Level::ApfVcpu,
                    VcpuApf {
                        state,
                        pinned: Vec::with_capacity(MAX_RECORD_PAGES),
                        offset: 0,
                        slots: TokenSlots::new(),
                        sync_next: false,
                        park_or_wait: ParkOrWait::new(),
                        delivery_started: None,
                    },
                )
            })
            .collect();
        Apf {
            vcpus,
            ids,
            layout,
            ram,
            sync_reasons: [const { AtomicU64::new(0) }; SyncReason::COUNT],
            posted_offline: AtomicU64::new(0),
            power_off_tokens: AtomicU64::new(0),
            guest_pins: Mutex::new(Level::ApfPins, BTreeSet::new()),
            pin_quota: asyncpf_core::apf::pin_quota(resident_pages),
        }
    }

    /// An APF_* call of `vcpu` (x0 = function, x1.. = arguments), answered in `regs`; returns
    /// the SMCCC result (also in x0). `on_interrupt` takes the interrupts that arrive while
    /// pinning waits for the disk.
    pub fn call(
        &self,
        signals: Signals<'_>,
        pager: &Pager,
        vcpu: usize,
        regs: &mut GuestRegs,
        on_interrupt: impl FnMut(u32),
    ) -> i64 {
        let result = match asyncpf_core::hypercall::function_id(regs.x[0]) {
            abi::FEATURES => {
                regs.x[1] = self.layout.granule();
                regs.x[2] = u64::from(abi::PAGE_READY_INTID);
                regs.x[3] = u64::from(asyncpf_contract::sdei::EVENT_PAGE_NOT_PRESENT);
                smccc::SUCCESS
            }
            abi::ENABLE => self.enable(pager, vcpu, regs.x[1], regs.x[2], on_interrupt),
            abi::PIN => self.pin(pager, vcpu, regs.x[1], regs.x[2], on_interrupt),
            abi::DISABLE => {
                let unpin = {
                    let mut apf = self.vcpus[vcpu].lock();
                    let (state, mut mem) = apf.parts();
                    let posted = state.disable(&mut mem);
                    self.settle(signals, vcpu, &mut apf, posted)
                };
                unpin_all(pager, unpin);
                smccc::SUCCESS
            }
            _ => smccc::NOT_SUPPORTED,
        };
        regs.x[0] = result as u64;
        result
    }

    /// APF_PIN(ipa, bytes): validated and counted against the quota (`core::apf::validate_pin`),
    /// then each page not pinned yet is brought in and pinned in the pager, never to be evicted.
    /// The pins lock is not held while the pager pins (which may wait for the disk).
    fn pin(&self, pager: &Pager, vcpu: usize, ipa: u64, bytes: u64, mut on_interrupt: impl FnMut(u32)) -> i64 {
        let pages: Vec<u64> = {
            let pins = self.guest_pins.lock();
            let newly = |r: Range<u64>| r.filter(|p| !pins.contains(p)).count() as u64;
            match validate_pin(ipa, bytes, self.ram.clone(), PAGE_SIZE, pins.len() as u64, self.pin_quota, newly) {
                Ok(pages) => pages.filter(|p| !pins.contains(p)).collect(),
                Err(e) => return e.smccc(),
            }
        };
        for page in pages {
            if pager.pin(vcpu, page as usize, &mut on_interrupt).is_none() {
                // The pager could not keep it (its own limit on pins): refused, counted.
                guest_diag!(PinFailure, "vCPU {vcpu}: APF_PIN: guest page {page:#x} cannot be pinned");
                return smccc::INVALID_PARAMETER;
            }
            self.guest_pins.lock().insert(page);
        }
        smccc::SUCCESS
    }

    fn enable(
        &self,
        pager: &Pager,
        vcpu: usize,
        record_ipa: u64,
        flags: u64,
        mut on_interrupt: impl FnMut(u32),
    ) -> i64 {
        let record = match validate_enable(record_ipa, flags, self.layout, self.ram.clone()) {
            Ok(record) => record,
            Err(e) => return e.smccc(),
        };
        // Pin the new record's pages before the old ones are let go (they may overlap).
        let mut pinned = Vec::with_capacity(MAX_RECORD_PAGES);
        for page in record_pages(&record, self.ram.start) {
            match pager.pin(vcpu, page, &mut on_interrupt) {
                Some(frame) => pinned.push((page, frame)),
                None => {
                    unpin_all(pager, pinned);
                    guest_diag!(
                        PinFailure,
                        "vCPU {vcpu}: APF_ENABLE: cannot keep the record at {record_ipa:#x} resident"
                    );
                    return smccc::INVALID_PARAMETER;
                }
            }
        }
        let old = {
            let mut apf = self.vcpus[vcpu].lock();
            let old = core::mem::replace(&mut apf.pinned, pinned);
            apf.offset = record.ipa() % PAGE_SIZE;
            apf.sync_next = false;
            let (state, mut mem) = apf.parts();
            state.enable(record, &mut mem);
            old
        };
        unpin_all(pager, old);
        smccc::SUCCESS
    }

    /// After a call that may have posted `posted` entries or ended the record's use: raise
    /// the PPI, log a ring error once, and hand back the record's pages once the core lets it
    /// go (the caller unpins them after releasing the vCPU's lock: the pager's lock is taken
    /// before a vCPU's APF lock, never after).
    fn settle(&self, signals: Signals<'_>, vcpu: usize, apf: &mut VcpuApf, posted: usize) -> Vec<(usize, PhysAddr)> {
        self.raise_page_ready(signals, vcpu, posted, apf.state.backlog().len() != 0);
        if let Some(error) = apf.state.take_ring_error() {
            guest_diag!(ApfRingError, "vCPU {vcpu}: {error}");
        }
        if apf.state.status() == Status::Disabled {
            core::mem::take(&mut apf.pinned)
        } else {
            Vec::new()
        }
    }

    /// `vcpu` calls PSCI CPU_OFF (on its own CPU, before it is marked off): its session ends
    /// now (docs/abi.md §8.2). Tokens in flight are dropped (their pages still come in, and
    /// their completions post nothing), the wake-all goes to the ring as the record's last
    /// entry if it fits (no PPI: the vCPU is off; the guest drains the record from another
    /// CPU), and the record's pages are let go: nothing is posted to this vCPU until it enables
    /// APF again after a CPU_ON.
    pub fn cpu_off(&self, pager: &Pager, vcpu: usize) {
        let unpin = {
            let mut apf = self.vcpus[vcpu].lock();
            apf.sync_next = false;
            let (state, mut mem) = apf.parts();
            let off = state.power_off(&mut mem);
            self.power_off_tokens.fetch_add(off.dropped as u64, Ordering::Relaxed);
            if let Some(error) = apf.state.take_ring_error() {
                guest_diag!(ApfRingError, "vCPU {vcpu}: {error}");
            }
            core::mem::take(&mut apf.pinned)
        };
        unpin_all(pager, unpin);
    }

    /// Before `vcpu` enters the guest: post what waits for ring space, if the guest made room.
    /// Returns whether completions may still be waiting: then the vCPU must not sleep in
    /// `wfi` without an exit (the caller traps WFI), since making room takes no call and a
    /// guest that emptied its ring and waits for an interrupt would otherwise never get them.
    /// A busy lock answers true: a WFI trapped for nothing is only an exit.
    pub fn on_entry(&self, signals: Signals<'_>, pager: &Pager, vcpu: usize) -> bool {
        let Some(mut apf) = self.vcpus[vcpu].try_lock() else {
            return true;
        };
        if apf.state.backlog().len() == 0 {
            return false;
        }
        let (state, mut mem) = apf.parts();
        let posted = state.flush_backlog(&mut mem);
        let unpin = self.settle(signals, vcpu, &mut apf, posted);
        let waiting = apf.state.backlog().len() != 0;
        drop(apf);
        unpin_all(pager, unpin);
        waiting
    }

    /// Before a stage-2 fault of `vcpu` goes to the pager: may it be resolved asynchronously?
    /// If so, a token slot is reserved and its engine waiter id returned; the caller then
    /// calls [`Self::deliver`] if the fault blocks, or [`Self::release`] if it does not.
    /// `pstate` is the faulting context's (SPSR_EL2); `page_unreadable`: the pager knows the
    /// page cannot be read back ([`Pager::is_unreadable`]); `expected_read`: the average read
    /// latency ([`Pager::expected_read_ticks`]), for the park or wait rule.
    pub fn prepare(
        &self,
        signals: Signals<'_>,
        vcpu: usize,
        pstate: u64,
        page_unreadable: bool,
        expected_read: Option<u64>,
    ) -> Option<u32> {
        let mut apf = self.vcpus[vcpu].lock();
        if !apf.state.is_enabled() {
            return None;
        }
        if core::mem::take(&mut apf.sync_next) {
            self.count_sync(SyncReason::AfterDecline);
            return None;
        }
        let cheaper_to_wait = !apf.park_or_wait.decide(expected_read);
        if let Err(refusal) =
            apf.state.may_dispatch(dispatch_inputs(signals, vcpu, pstate, page_unreadable, cheaper_to_wait))
        {
            if let Some(reason) = SyncReason::of(refusal) {
                self.count_sync(reason);
            }
            return None;
        }
        let Some(slot) = apf.slots.reserve() else {
            self.count_sync(SyncReason::AtLimit);
            return None;
        };
        Some(self.ids.slot(vcpu, slot))
    }

    /// The fault prepared with `waiter` blocked: start its token (the record's page_not_present
    /// slot gets it and `address`) and enter the guest's SDEI handler. `page_unreadable` as
    /// given to [`Self::prepare`]; `fault_at`: the vCPU's stamp once the pager said the fault
    /// blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &self,
        signals: Signals<'_>,
        vcpu: usize,
        waiter: u32,
        address: u64,
        page_unreadable: bool,
        fault_at: Stamp,
        regs: &mut GuestRegs,
    ) -> Delivery {
        let slot = self.slot_of(vcpu, waiter);
        let mut apf = self.vcpus[vcpu].lock();
        if apf.slots.take_ready(slot) {
            // Another CPU completed the page between the fault and now: just retry.
            return Delivery::PageBack;
        }
        // `prepare` applied the park or wait rule; the averages may have moved since.
        let inputs = dispatch_inputs(signals, vcpu, regs.pstate, page_unreadable, false);
        let (state, mut mem) = apf.parts();
        let Ok(token) = state.start(inputs, address, &mut mem) else {
            apf.slots.orphan(slot);
            apf.sync_next = true;
            return Delivery::Refused;
        };
        match signals.sdei.dispatch(vcpu, asyncpf_contract::sdei::EVENT_PAGE_NOT_PRESENT, regs) {
            Ok(()) => {
                trace_event!(PageNotPresent, a = token.get(), b = address);
                apf.slots.deliver(slot, token);
                apf.delivery_started = Some(fault_at);
                Delivery::Delivered
            }
            Err(refusal) => {
                // Not expected: only this vCPU changes its own SDEI state, and `start` checked it.
                guest_diag!(
                    SdeiRefusal,
                    "vCPU {vcpu}: page_not_present refused by SDEI ({refusal:?}); resolving synchronously"
                );
                let _ = apf.state.decline(token);
                apf.slots.orphan(slot);
                apf.sync_next = true;
                Delivery::Refused
            }
        }
    }

    /// The fault prepared with `waiter` did not block (or was aborted): free its slot.
    pub fn release(&self, vcpu: usize, waiter: u32) {
        let slot = self.slot_of(vcpu, waiter);
        self.vcpus[vcpu].lock().slots.release(slot);
    }

    /// The guest's page_not_present handler finished: with COMPLETE_AND_RESUME (`accepted`: its
    /// task is parked on the token) or COMPLETE (declined: the fault is retried and resolved
    /// synchronously). `now`: the vCPU's stamp (there is always a pager when APF exists), which
    /// ends an accepted delivery's measured cost.
    pub fn handler_done(&self, signals: Signals<'_>, vcpu: usize, accepted: bool, now: Option<Stamp>) {
        let mut apf = self.vcpus[vcpu].lock();
        let Some(token) = apf.state.delivering() else {
            return;
        };
        trace_event!(HandlerDone, a = token.get(), aux = u16::from(accepted));
        if let (Some(started), Some(now), true) = (apf.delivery_started.take(), now, accepted) {
            apf.park_or_wait.delivered(now.at.saturating_sub(started.at), now.waited.saturating_sub(started.waited));
        }
        let posted = if accepted {
            let (state, mut mem) = apf.parts();
            state.accept(token, &mut mem).unwrap_or(0)
        } else {
            let _ = apf.state.decline(token);
            apf.sync_next = true;
            0
        };
        let backlog = apf.state.backlog().len() != 0;
        self.raise_page_ready(signals, vcpu, posted, backlog);
    }

    /// The page of the asynchronous fault with engine waiter id `waiter` is back: post its
    /// page_ready (or hold it, or drop it if the guest declined) and free the slot.
    pub fn completed(&self, signals: Signals<'_>, pager: &Pager, waiter: u32) {
        let Some(WaiterOf::Slot { vcpu, slot }) = self.ids.decode(waiter) else {
            return;
        };
        let unpin = {
            let mut apf = self.vcpus[vcpu].lock();
            let token = match apf.slots.complete(slot) {
                Completion::Token(token) => Some(token),
                // Completed before `deliver` ran (on this vCPU's CPU): it will see the slot ready.
                Completion::Early => return,
                Completion::Nothing => None,
            };
            let (state, mut mem) = apf.parts();
            let posted = token.map_or(0, |token| state.complete(token, &mut mem).map_or(0, |d| d.posted));
            self.settle(signals, vcpu, &mut apf, posted)
        };
        unpin_all(pager, unpin);
    }

    /// After `posted` entries went to `vcpu`'s ring: make page_ready pending on it and kick it
    /// if it runs elsewhere. Entries for a vCPU that is off are counted (`posted_offline`, which
    /// CPU_OFF's end of the session keeps at 0) and raise nothing. `backlog`: completions wait
    /// for ring space; a vCPU running elsewhere is kicked then too, so that it enters again
    /// with WFI trapped ([`Self::on_entry`]).
    fn raise_page_ready(&self, signals: Signals<'_>, vcpu: usize, posted: usize, backlog: bool) {
        if posted == 0 && !backlog {
            return;
        }
        if signals.vcpus[vcpu].power() == PowerState::Off {
            self.posted_offline.fetch_add(posted as u64, Ordering::Relaxed);
            return;
        }
        if posted != 0 {
            signals.vgic.raise_private(vcpu, abi::PAGE_READY_INTID);
        }
        if vcpu != arch::cpu_index() {
            signals.vcpus.kick(vcpu);
        }
    }

    fn count_sync(&self, reason: SyncReason) {
        trace_event!(Sync, aux = reason as u16);
        self.sync_reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The token slot that [`Self::prepare`] named `waiter` for `vcpu`.
    fn slot_of(&self, vcpu: usize, waiter: u32) -> usize {
        match self.ids.decode(waiter) {
            Some(WaiterOf::Slot { vcpu: owner, slot }) if owner == vcpu => slot,
            other => panic!("apf: waiter {waiter} is not a token slot of vCPU {vcpu} ({other:?})"),
        }
    }

    /// The `apf` result object: the counters summed over vCPUs.
    pub fn write_json(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let mut sum = asyncpf_core::apf::Counters::default();
        let mut enabled = 0;
        for v in &self.vcpus {
            let apf = v.lock();
            let c = apf.state.counters();
            enabled += usize::from(apf.state.is_enabled());
            sum.dispatched += c.dispatched;
            sum.accepted += c.accepted;
            sum.declined += c.declined;
            sum.completed += c.completed;
            sum.stale += c.stale;
            sum.posted += c.posted;
            sum.queued += c.queued;
            sum.wake_alls += c.wake_alls;
            sum.dropped += c.dropped;
            sum.ring_errors += c.ring_errors;
            sum.power_offs += c.power_offs;
            sum.power_offs_with_tokens += c.power_offs_with_tokens;
            sum.wake_alls_lost += c.wake_alls_lost;
        }
        write!(
            out,
            "{{\"granule\":{},\"enabled_vcpus\":{enabled},\"dispatched\":{},\"accepted\":{},\"declined\":{},\
             \"completed\":{},\"stale\":{},\"posted\":{},\"queued\":{},\"wake_alls\":{},\"dropped\":{},\
             \"ring_errors\":{},\"power_offs\":{},\"power_offs_with_tokens\":{},\"power_off_tokens\":{},\
             \"wake_alls_lost\":{},\"posted_offline\":{},\"guest_pinned_pages\":{},\"pin_quota\":{},\"sync_reasons\":{{",
            self.layout.granule(),
            sum.dispatched,
            sum.accepted,
            sum.declined,
            sum.completed,
            sum.stale,
            sum.posted,
            sum.queued,
            sum.wake_alls,
            sum.dropped,
            sum.ring_errors,
            sum.power_offs,
            sum.power_offs_with_tokens,
            self.power_off_tokens.load(Ordering::Relaxed),
            sum.wake_alls_lost,
            self.posted_offline.load(Ordering::Relaxed),
            self.guest_pins.lock().len(),
            self.pin_quota,
        )?;
        for (i, name) in SyncReason::NAMES.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            write!(out, "{separator}\"{name}\":{}", self.sync_reasons[i].load(Ordering::Relaxed))?;
        }
        // The park or wait rule's delivery cost per vCPU (null: nothing delivered yet).
        out.write_str("},\"delivery_cost_us\":[")?;
        for (i, v) in self.vcpus.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            let cost = v.lock().park_or_wait.delivery_cost().map(Ticks);
            write!(out, "{separator}{}", Ticks::json_micros(cost))?;
        }
        out.write_str("]}")
    }
}

/// What the decision table needs from the SDEI dispatcher and the faulting context.
fn dispatch_inputs(
    signals: Signals<'_>,
    vcpu: usize,
    pstate: u64,
    page_unreadable: bool,
    cheaper_to_wait: bool,
) -> DispatchInputs {
    const PSTATE_I: u64 = 1 << 7;
    const PSTATE_MODE: u64 = 0xf;
    DispatchInputs {
        sdei_ready: signals.sdei.can_dispatch(vcpu, asyncpf_contract::sdei::EVENT_PAGE_NOT_PRESENT).is_ok(),
        from_el0: pstate & PSTATE_MODE == 0,
        irqs_masked: pstate & PSTATE_I != 0,
        page_unreadable,
        cheaper_to_wait,
    }
}

fn unpin_all(pager: &Pager, pages: Vec<(usize, PhysAddr)>) {
    for (page, _) in pages {
        pager.unpin(page);
    }
}

/// Whether `function` is one of the APF calls.
pub fn is_apf_call(function: u32) -> bool {
    matches!(function, abi::FEATURES | abi::ENABLE | abi::DISABLE | abi::PIN)
}

/// The guest RAM pages (indices from the start of RAM at `ram_base`) that `record` covers.
fn record_pages(record: &Record, ram_base: u64) -> impl Iterator<Item = usize> {
    let range = record.range();
    let first = (range.start - ram_base) / PAGE_SIZE;
    let last = (range.end - 1 - ram_base) / PAGE_SIZE;
    (first..=last).map(|page| page as usize)
}

/// A record's bytes, through the host frames pinned for its pages (`(guest page, frame)`, in
/// page order, covering the whole record).
struct HostRecord<'a> {
    pinned: &'a [(usize, PhysAddr)],
    /// Offset of the record's start in its first page.
    start: u64,
}

impl HostRecord<'_> {
    /// The host address of the u64 at `offset` in the record; `None` beyond the pinned pages
    /// or misaligned (`asyncpf_core::apf` never asks for either: a hypervisor bug, logged).
    fn address(&self, offset: u64) -> Option<*mut u64> {
        let at = self.start + offset;
        let frame = self.pinned.get((at / PAGE_SIZE) as usize).map(|&(_, frame)| frame);
        match frame {
            Some(frame) if at.is_multiple_of(8) => Some((frame.0 + at % PAGE_SIZE) as *mut u64),
            _ => {
                guest_diag!(Internal, "apf: record offset {offset:#x} outside the pinned record; ignored");
                None
            }
        }
    }
}

impl RecordMemory for HostRecord<'_> {
    fn read_u64(&mut self, offset: u64) -> u64 {
        // SAFETY: an aligned u64 in a host frame the pager keeps for this record's page (pinned:
        // not reused while pinned), identity-mapped at EL2; the guest may write it concurrently,
        // which a single 64-bit load tolerates (single-copy atomic).
        self.address(offset).map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
    }

    fn write_u64(&mut self, offset: u64, value: u64) {
        if let Some(p) = self.address(offset) {
            // SAFETY: as in `read_u64`; the record is the guest's memory given for this purpose,
            // and `asyncpf_core::apf` writes only the host's fields of it.
            unsafe { core::ptr::write_volatile(p, value) };
        }
    }

    fn publish(&mut self) {
        // SAFETY: a barrier only orders memory accesses.
        unsafe { core::arch::asm!("dmb ishst", options(nostack, preserves_flags)) };
    }

    fn acquire(&mut self) {
        // SAFETY: a barrier only orders memory accesses.
        unsafe { core::arch::asm!("dmb ishld", options(nostack, preserves_flags)) };
    }

    #[cfg(feature = "trace")]
    fn posted(&mut self, token: u64) {
        trace_event!(PageReady, a = token);
    }
}
