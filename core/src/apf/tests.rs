//! Unit tests of the layout, the enable validation, the decision table, the tokens and the
//! ring; and the test memory that [`super::model`] uses too. The memory panics on any access
//! outside the record, and its host and guest views check who writes what and the barriers.

use super::*;
use asyncpf_contract::apf::{
    FLAGS_ALL, FLAG_USER_ONLY, MAX_GRANULE, MIN_GRANULE, RING_ENTRIES, RING_ENTRY_BYTES, TOKEN_NONE, TOKEN_WAKE_ALL,
};
use asyncpf_contract::smccc;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

/// The granules the layout tests cover.
const GRANULES: [u64; 4] = [16, 64, 256, 2048];

/// A record's bytes, little-endian; panics on an access that is not an aligned u64 inside.
pub(super) struct TestMemory {
    pub layout: Layout,
    bytes: Vec<u8>,
    /// The host's last write to `ring_head` (what the views expect the next entries at).
    host_head: u64,
    /// Every ring entry the host wrote, in order.
    pub host_entries: Vec<u64>,
    /// Barriers the host issued.
    pub host_barriers: usize,
}

impl TestMemory {
    pub fn new(layout: Layout) -> Self {
        TestMemory {
            layout,
            bytes: vec![0; layout.bytes() as usize],
            host_head: 0,
            host_entries: Vec::new(),
            host_barriers: 0,
        }
    }

    fn index(&self, offset: u64) -> usize {
        assert!(offset.is_multiple_of(8), "misaligned access at {offset:#x}");
        assert!(offset + 8 <= self.bytes.len() as u64, "access at {offset:#x} outside the record");
        offset as usize
    }

    /// Reads without checks (the test's own look).
    pub fn get(&self, offset: u64) -> u64 {
        let at = self.index(offset);
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    /// Writes without checks (a guest scribbling on its record).
    pub fn set(&mut self, offset: u64, value: u64) {
        let at = self.index(offset);
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    pub fn head(&self) -> u64 {
        self.get(self.layout.ring_head())
    }

    pub fn tail(&self) -> u64 {
        self.get(self.layout.ring_tail())
    }

    /// The host's last write to `ring_head` (whatever the guest wrote there since).
    pub fn head_written(&self) -> u64 {
        self.host_head
    }

    /// The host's view: checks that the host writes only host fields, reads `ring_tail` and
    /// acquires before it writes entries, writes entries at the positions after its last
    /// `ring_head`, and publishes them before it writes `ring_head` (which then counts them).
    pub fn host(&mut self) -> HostView<'_> {
        HostView { mem: self, tail_read: false, acquired: false, unpublished: 0, since_head: 0 }
    }

    /// The guest's view: checks that the guest writes only `ring_tail`, acquires after reading
    /// `ring_head` before reading entries, and reads every entry it consumes (and acquires)
    /// before writing `ring_tail`.
    pub fn guest(&mut self) -> GuestView<'_> {
        GuestView { mem: self, head_read: false, acquired: false, entries_unacquired: false, entries_read: 0 }
    }

    fn is_entry(&self, offset: u64) -> bool {
        offset >= self.layout.ring()
    }
}

pub(super) struct HostView<'a> {
    mem: &'a mut TestMemory,
    tail_read: bool,
    acquired: bool,
    unpublished: u64,
    since_head: u64,
}

impl RecordMemory for HostView<'_> {
    fn read_u64(&mut self, offset: u64) -> u64 {
        if offset == self.mem.layout.ring_tail() {
            self.tail_read = true;
            self.acquired = false;
        }
        self.mem.get(offset)
    }

    fn write_u64(&mut self, offset: u64, value: u64) {
        let layout = self.mem.layout;
        let g = layout.granule();
        assert!(!(2 * g..3 * g).contains(&offset), "the host wrote the guest's granule at {offset:#x}");
        if self.mem.is_entry(offset) {
            assert!(self.tail_read && self.acquired, "entry written without reading ring_tail and acquire");
            assert_eq!(offset, layout.ring_entry(self.mem.host_head.wrapping_add(self.since_head)), "entry position");
            assert!(value != TOKEN_NONE, "the host posted token 0");
            self.unpublished += 1;
            self.since_head += 1;
            self.mem.host_entries.push(value);
        } else if offset == layout.ring_head() {
            assert_eq!(self.unpublished, 0, "ring_head written before the entries were published");
            if self.since_head > 0 {
                assert_eq!(value, self.mem.host_head.wrapping_add(self.since_head), "ring_head");
            }
            self.mem.host_head = value;
            self.since_head = 0;
        } else {
            assert!(offset == layout.pnp_token() || offset == layout.pnp_address(), "write at {offset:#x}");
        }
        self.mem.set(offset, value);
    }

    fn publish(&mut self) {
        self.unpublished = 0;
        self.mem.host_barriers += 1;
    }

    fn acquire(&mut self) {
        self.acquired = true;
        self.mem.host_barriers += 1;
    }
}

pub(super) struct GuestView<'a> {
    mem: &'a mut TestMemory,
    head_read: bool,
    acquired: bool,
    entries_unacquired: bool,
    entries_read: u64,
}

impl RecordMemory for GuestView<'_> {
    fn read_u64(&mut self, offset: u64) -> u64 {
        if offset == self.mem.layout.ring_head() {
            self.head_read = true;
            self.acquired = false;
        } else if self.mem.is_entry(offset) {
            assert!(self.head_read && self.acquired, "entry read without reading ring_head and acquire");
            self.entries_unacquired = true;
            self.entries_read += 1;
        }
        self.mem.get(offset)
    }

    fn write_u64(&mut self, offset: u64, value: u64) {
        assert_eq!(offset, self.mem.layout.ring_tail(), "the guest wrote a host field");
        assert!(!self.entries_unacquired, "ring_tail written before the entry reads completed");
        assert!(value.wrapping_sub(self.mem.tail()) <= self.entries_read, "ring_tail moved past unread entries");
        self.mem.set(offset, value);
    }

    fn publish(&mut self) {}

    fn acquire(&mut self) {
        self.acquired = true;
        self.entries_unacquired = false;
    }
}

fn layout(granule: u64) -> Layout {
    Layout::new(granule).unwrap()
}

/// Guest RAM of the tests: 16 MiB at 1 GiB.
const RAM: core::ops::Range<u64> = 0x4000_0000..0x4100_0000;

fn record(layout: Layout, flags: u64) -> Record {
    validate_enable(RAM.start + 0x1000, flags, layout, RAM).unwrap()
}

/// vCPU 3 with APF enabled at granule 64.
fn enabled(limit: usize) -> (ApfVcpu, TestMemory) {
    enabled_with(limit, 0)
}

fn enabled_with(limit: usize, flags: u64) -> (ApfVcpu, TestMemory) {
    let layout = layout(64);
    let mut vcpu = ApfVcpu::new(3, limit).unwrap();
    let mut mem = TestMemory::new(layout);
    vcpu.enable(record(layout, flags), &mut mem.host());
    vcpu.check_invariants();
    (vcpu, mem)
}

const EL0: DispatchInputs = DispatchInputs {
    sdei_ready: true,
    from_el0: true,
    irqs_masked: false,
    page_unreadable: false,
    cheaper_to_wait: false,
};
const EL1: DispatchInputs = DispatchInputs {
    sdei_ready: true,
    from_el0: false,
    irqs_masked: false,
    page_unreadable: false,
    cheaper_to_wait: false,
};

/// A fault that is dispatched and accepted.
fn parked(vcpu: &mut ApfVcpu, mem: &mut TestMemory) -> Token {
    let token = vcpu.start(EL0, 0x1000, &mut mem.host()).unwrap();
    assert_eq!(vcpu.accept(token, &mut mem.host()), Ok(0));
    vcpu.check_invariants();
    token
}

/// The guest drains its ring.
fn consume(mem: &mut TestMemory) -> Vec<u64> {
    let mut seen = Vec::new();
    let layout = mem.layout;
    drain(layout, &mut mem.guest(), |token| seen.push(token)).unwrap();
    seen
}

fn complete(vcpu: &mut ApfVcpu, mem: &mut TestMemory, token: Token) -> Delivery {
    let delivery = vcpu.complete(token, &mut mem.host()).unwrap();
    vcpu.check_invariants();
    delivery
}

// ---------------------------------------------------------------------------------------------
// Layout and enable validation.

#[test]
fn layout_keeps_host_and_guest_fields_on_different_granules() {
    for granule in GRANULES {
        let l = layout(granule);
        let which = |offset: u64| offset / granule;
        let guest = which(l.ring_tail());
        let mut host = vec![l.pnp_token(), l.pnp_address(), l.ring_head()];
        host.extend((0..RING_ENTRIES).map(|i| l.ring_entry(i)));
        host.push(l.ring_entry(RING_ENTRIES - 1) + RING_ENTRY_BYTES - 1); // the ring's last byte
        for offset in host {
            assert_ne!(which(offset), guest, "granule {granule}: host offset {offset:#x} shares the tail's granule");
        }
        // Each field is aligned, and the 8 bytes of each lie in one granule.
        for offset in [l.pnp_token(), l.pnp_address(), l.ring_head(), l.ring_tail(), l.ring()] {
            assert_eq!(offset % 8, 0);
            assert_eq!(which(offset), which(offset + 7));
        }
        assert_eq!((l.pnp_token(), l.pnp_address()), (0, 8));
        assert_eq!((l.ring_head(), l.ring_tail(), l.ring()), (granule, 2 * granule, 3 * granule));
        assert!(l.ring() > l.ring_tail() && l.ring_tail() > l.ring_head() && l.ring_head() > l.pnp_address());
        assert_eq!(l.bytes(), 3 * granule + RING_ENTRIES * RING_ENTRY_BYTES);
        assert_eq!(l.bytes(), asyncpf_contract::apf::record_bytes(granule));
        assert_eq!(l.ring_entry(RING_ENTRIES - 1) + 8, l.bytes(), "the ring ends the record");
        assert_eq!(l.ring_entry(RING_ENTRIES + 5), l.ring_entry(5), "positions wrap");
        assert_eq!(l.ring_entry(u64::MAX), l.ring_entry(RING_ENTRIES - 1));
        assert_eq!(l.granule(), granule);
    }
    assert_eq!(layout(16).bytes(), 560);
    assert_eq!(layout(2048).bytes(), 6656);
}

#[test]
fn granules_must_be_powers_of_two_in_range() {
    for granule in [MIN_GRANULE, 32, 64, 128, 256, 512, 1024, MAX_GRANULE] {
        assert_eq!(Layout::new(granule).map(Layout::granule), Ok(granule));
    }
    for granule in [0, 1, 8, 24, 48, 100, 4096, 1 << 40, u64::MAX] {
        assert_eq!(Layout::new(granule), Err(GranuleError(granule)));
    }
    assert!(GranuleError(24).to_string().contains("24"));
}

#[test]
fn cwg_gives_the_granule() {
    assert_eq!(cwg_bytes(0), MAX_GRANULE, "no information: the maximum");
    assert_eq!(cwg_bytes(1), MIN_GRANULE, "8 bytes is raised to 16");
    assert_eq!(cwg_bytes(2), 16);
    assert_eq!(cwg_bytes(4), 64);
    assert_eq!(cwg_bytes(6), 256);
    assert_eq!(cwg_bytes(9), 2048);
    for reserved in 10..=15 {
        assert_eq!(cwg_bytes(reserved), MAX_GRANULE);
    }
    for cwg in 0..=15 {
        assert!(Layout::new(cwg_bytes(cwg)).is_ok());
    }
}

#[test]
fn enable_accepts_a_record_inside_ram() {
    for granule in GRANULES {
        let l = layout(granule);
        let ipa = RAM.start + 5 * granule;
        let record = validate_enable(ipa, FLAG_USER_ONLY, l, RAM).unwrap();
        assert_eq!((record.ipa(), record.layout(), record.flags()), (ipa, l, FLAG_USER_ONLY));
        assert!(record.user_only());
        assert_eq!(record.range(), ipa..ipa + l.bytes());
        assert!(!validate_enable(ipa, 0, l, RAM).unwrap().user_only());
        // Exactly at either end of RAM.
        assert!(validate_enable(RAM.start, 0, l, RAM).is_ok());
        let last = (RAM.end - l.bytes()) & !(granule - 1);
        assert!(validate_enable(last, 0, l, RAM).is_ok());
        let ram_ending_at_record = RAM.start..RAM.start + l.bytes();
        assert!(validate_enable(RAM.start, 0, l, ram_ending_at_record).is_ok());
    }
}

#[test]
fn enable_refuses_unknown_flags() {
    let l = layout(64);
    for flags in [1 << 2, 1 << 63, !FLAGS_ALL, u64::MAX] {
        assert_eq!(
            validate_enable(RAM.start, flags, l, RAM),
            Err(EnableError::UnknownFlags { unknown: flags & !FLAGS_ALL })
        );
    }
}

#[test]
fn enable_refuses_misaligned_records() {
    for granule in GRANULES {
        let l = layout(granule);
        for ipa in [RAM.start + 8, RAM.start + granule / 2, RAM.start + granule + 8, RAM.start + 1] {
            assert_eq!(validate_enable(ipa, 0, l, RAM), Err(EnableError::Misaligned { ipa, granule }));
        }
    }
}

#[test]
fn enable_refuses_records_outside_ram() {
    for granule in GRANULES {
        let l = layout(granule);
        let bytes = l.bytes();
        let outside = |ipa| Err(EnableError::OutsideRam { ipa, bytes });
        // Below, straddling the start, straddling the end, above, far above.
        for ipa in [0, RAM.start - granule, RAM.end - granule, RAM.end, RAM.end + (1 << 30)] {
            assert_eq!(validate_enable(ipa, 0, l, RAM), outside(ipa), "granule {granule}, ipa {ipa:#x}");
        }
        // Wrapping around the address space, with RAM that reaches its top.
        let top = !(granule - 1);
        assert_eq!(validate_enable(top, 0, l, 0..u64::MAX), outside(top));
        // Empty and inverted RAM contain nothing.
        assert_eq!(validate_enable(RAM.start, 0, l, RAM.start..RAM.start), outside(RAM.start));
        let inverted = core::ops::Range { start: RAM.end, end: RAM.start };
        assert_eq!(validate_enable(RAM.start, 0, l, inverted), outside(RAM.start));
        // One byte short.
        let short = RAM.start..RAM.start + bytes - 1;
        assert_eq!(validate_enable(RAM.start, 0, l, short), outside(RAM.start));
    }
}

#[test]
fn enable_errors_are_checked_in_order_and_answer_invalid_parameter() {
    let l = layout(64);
    // Unknown flags and misaligned and outside: the flags are reported.
    assert!(matches!(validate_enable(8, 4, l, RAM), Err(EnableError::UnknownFlags { .. })));
    // Misaligned and outside: the alignment.
    assert!(matches!(validate_enable(8, 0, l, RAM), Err(EnableError::Misaligned { .. })));
    for error in [
        EnableError::UnknownFlags { unknown: 2 },
        EnableError::Misaligned { ipa: 8, granule: 64 },
        EnableError::OutsideRam { ipa: 0, bytes: 704 },
    ] {
        assert_eq!(error.smccc(), smccc::INVALID_PARAMETER);
        assert!(error.to_string().starts_with("apf: "));
    }
}

// ---------------------------------------------------------------------------------------------
// Construction, the decision table, tokens.

#[test]
fn limits_outside_range_are_refused() {
    assert_eq!(MAX_LIMIT as u64, RING_ENTRIES - 1);
    assert_eq!(ApfVcpu::new(0, 0).err(), Some(LimitError(0)));
    assert_eq!(ApfVcpu::new(0, MAX_LIMIT + 1).err(), Some(LimitError(MAX_LIMIT + 1)));
    assert_eq!(ApfVcpu::new(0, 1).unwrap().limit(), 1);
    let vcpu = ApfVcpu::new(7, MAX_LIMIT).unwrap();
    assert_eq!((vcpu.vcpu(), vcpu.limit(), vcpu.status(), vcpu.record()), (7, MAX_LIMIT, Status::Disabled, None));
    vcpu.check_invariants();
}

#[test]
fn dispatch_needs_every_condition() {
    let (mut vcpu, mut mem) = enabled(2);
    assert_eq!(vcpu.may_dispatch(EL0), Ok(()));
    assert_eq!(vcpu.may_dispatch(EL1), Ok(()));
    // EL0 qualifies even with PSTATE.I set (it describes EL0's own masking, not the kernel's).
    assert_eq!(vcpu.may_dispatch(DispatchInputs { irqs_masked: true, ..EL0 }), Ok(()));

    // Each condition alone refuses.
    assert_eq!(vcpu.may_dispatch(DispatchInputs { sdei_ready: false, ..EL0 }), Err(Refusal::SdeiNotReady));
    assert_eq!(vcpu.may_dispatch(DispatchInputs { irqs_masked: true, ..EL1 }), Err(Refusal::IrqsMasked));

    assert_eq!(vcpu.may_dispatch(DispatchInputs { cheaper_to_wait: true, ..EL0 }), Err(Refusal::CheaperToWait));
    assert_eq!(vcpu.may_dispatch(DispatchInputs { cheaper_to_wait: true, ..EL1 }), Err(Refusal::CheaperToWait));
    // Only faults that could be delivered count as cheaper to wait: the other reasons come first.
    assert_eq!(
        vcpu.may_dispatch(DispatchInputs { cheaper_to_wait: true, irqs_masked: true, ..EL1 }),
        Err(Refusal::IrqsMasked)
    );

    let (always, _) = enabled_with(2, asyncpf_contract::apf::FLAG_ALWAYS_DELIVER);
    assert_eq!(
        always.may_dispatch(DispatchInputs { cheaper_to_wait: true, ..EL0 }),
        Ok(()),
        "the guest asked for every fault"
    );
    assert_eq!(
        always.may_dispatch(DispatchInputs { cheaper_to_wait: true, irqs_masked: true, ..EL1 }),
        Err(Refusal::IrqsMasked)
    );

    let (user_only, _) = enabled_with(2, FLAG_USER_ONLY);
    assert_eq!(user_only.may_dispatch(EL1), Err(Refusal::UserOnly));
    assert_eq!(user_only.may_dispatch(EL0), Ok(()));

    let never_enabled = ApfVcpu::new(0, 2).unwrap();
    assert_eq!(never_enabled.may_dispatch(EL0), Err(Refusal::NotEnabled));
    let unreadable = DispatchInputs { page_unreadable: true, ..EL0 };
    assert_eq!(never_enabled.may_dispatch(unreadable), Err(Refusal::NotEnabled));

    // A page known to be unreadable is always resolved synchronously, from EL0 and EL1.
    assert_eq!(vcpu.may_dispatch(unreadable), Err(Refusal::PageUnreadable));
    assert_eq!(vcpu.may_dispatch(DispatchInputs { page_unreadable: true, ..EL1 }), Err(Refusal::PageUnreadable));

    let token = vcpu.start(EL0, 0x1000, &mut mem.host()).unwrap();
    assert_eq!(vcpu.delivering(), Some(token));
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::Delivering));
    vcpu.accept(token, &mut mem.host()).unwrap();
    assert_eq!(vcpu.may_dispatch(EL0), Ok(()));
    parked(&mut vcpu, &mut mem);
    assert_eq!(vcpu.in_flight(), 2);
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::AtLimit));

    vcpu.disable(&mut mem.host());
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::NotEnabled));
}

#[test]
fn a_refused_start_changes_nothing() {
    let (mut vcpu, mut mem) = enabled(1);
    let before = (vcpu.counters().dispatched, mem.get(mem.layout.pnp_token()));
    assert_eq!(
        vcpu.start(DispatchInputs { sdei_ready: false, ..EL0 }, 0x2000, &mut mem.host()),
        Err(Refusal::SdeiNotReady)
    );
    assert_eq!((vcpu.counters().dispatched, mem.get(mem.layout.pnp_token())), before);
    assert_eq!(vcpu.outstanding(), 0);
}

#[test]
fn completions_in_the_backlog_count_against_the_limit() {
    let (mut vcpu, mut mem) = enabled(2);
    // An unusable ring keeps completions in the backlog.
    mem.set(mem.layout.ring_tail(), 1000);
    let a = parked(&mut vcpu, &mut mem);
    assert_eq!(complete(&mut vcpu, &mut mem, a).fate, Fate::Queued);
    assert_eq!((vcpu.outstanding(), vcpu.in_flight()), (0, 1));
    let _b = parked(&mut vcpu, &mut mem);
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::AtLimit));
}

#[test]
fn start_writes_the_not_present_slot() {
    let (mut vcpu, mut mem) = enabled(4);
    let token = vcpu.start(EL1, 0xffff_8000_dead_b000, &mut mem.host()).unwrap();
    let layout = mem.layout;
    let slot = read_not_present(layout, &mut mem.guest());
    assert_eq!(slot, NotPresent { token: token.get(), address: 0xffff_8000_dead_b000 });
    assert_eq!(vcpu.counters().dispatched, 1);
    assert!(vcpu.is_outstanding(token));
}

#[test]
fn tokens_are_unique_nonzero_and_name_their_vcpu() {
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    let mut seen = Vec::new();
    for round in 0..10 {
        let tokens: Vec<Token> = (0..MAX_LIMIT).map(|_| parked(&mut vcpu, &mut mem)).collect();
        for token in &tokens {
            assert!(token.get() != TOKEN_NONE && token.get() != TOKEN_WAKE_ALL);
            assert_eq!(token.vcpu(), 3);
            assert_eq!(Token::from_raw(token.get()), Some(*token));
        }
        seen.extend(tokens.iter().map(|t| t.get()));
        for token in tokens {
            complete(&mut vcpu, &mut mem, token);
        }
        assert_eq!(consume(&mut mem).len(), MAX_LIMIT, "round {round}");
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), count, "a token was issued twice");
    assert_eq!(Token::from_raw(TOKEN_NONE), None);
    assert_eq!(Token::from_raw(TOKEN_WAKE_ALL), None);
}

#[test]
fn tokens_of_different_vcpus_differ() {
    let layout = layout(64);
    let mut tokens = Vec::new();
    for v in [0u16, 1, 2, u16::MAX] {
        let mut vcpu = ApfVcpu::new(v, 4).unwrap();
        let mut mem = TestMemory::new(layout);
        vcpu.enable(record(layout, 0), &mut mem.host());
        let token = parked(&mut vcpu, &mut mem);
        assert_eq!(token.vcpu(), v);
        tokens.push(token);
    }
    // Same sequence number, different vCPUs.
    assert!(tokens.iter().all(|t| t.sequence() == 1));
    let mut raw: Vec<u64> = tokens.iter().map(|t| t.get()).collect();
    raw.sort_unstable();
    raw.dedup();
    assert_eq!(raw.len(), 4);
}

#[test]
fn sequence_wraps_past_tokens_in_use() {
    let layout = layout(64);
    let mut vcpu = ApfVcpu::new(u16::MAX, 4).unwrap();
    let mut mem = TestMemory::new(layout);
    vcpu.enable(record(layout, 0), &mut mem.host());
    // Token with sequence 1 and 2 stay in use across the wrap (1 waiting, 2 in the backlog).
    let one = parked(&mut vcpu, &mut mem);
    let two = parked(&mut vcpu, &mut mem);
    assert_eq!((one.sequence(), two.sequence()), (1, 2));
    mem.set(layout.ring_tail(), 12345); // garbage: completions stay in the backlog
    assert_eq!(complete(&mut vcpu, &mut mem, two).fate, Fate::Queued);

    vcpu.set_next_sequence(MAX_SEQUENCE);
    let last = parked(&mut vcpu, &mut mem);
    assert_eq!(last.sequence(), MAX_SEQUENCE);
    assert_ne!(last.get(), TOKEN_WAKE_ALL);
    assert_eq!(last.get(), u64::MAX - (1 << 16), "the largest token there is");
    // The sequence wraps to 1, which is in use, then 2, in the backlog: 3 is next.
    let next = parked(&mut vcpu, &mut mem);
    assert_eq!(next.sequence(), 3);
    assert_ne!(next.get(), TOKEN_NONE);
}

// ---------------------------------------------------------------------------------------------
// Accept, decline, and completions that race the handler.

#[test]
fn a_completion_before_the_answer_is_held() {
    let (mut vcpu, mut mem) = enabled(4);
    let token = vcpu.start(EL0, 0x1000, &mut mem.host()).unwrap();
    assert_eq!(complete(&mut vcpu, &mut mem, token), Delivery { fate: Fate::Held, posted: 0 });
    assert_eq!(mem.head(), 0, "nothing posted before the handler accepted");
    assert_eq!(vcpu.complete(token, &mut mem.host()), Err(TokenError::AlreadyCompleted(token)));
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::Delivering));
    assert_eq!(vcpu.accept(token, &mut mem.host()), Ok(1));
    assert_eq!(consume(&mut mem), [token.get()]);
    assert!(!vcpu.is_outstanding(token));
    assert_eq!(vcpu.counters().accepted, 1);
    assert_eq!(vcpu.counters().completed, 1);
}

#[test]
fn a_declined_token_never_gets_a_page_ready() {
    let (mut vcpu, mut mem) = enabled(4);
    // Declined before the page is back.
    let a = vcpu.start(EL0, 0x1000, &mut mem.host()).unwrap();
    assert_eq!(vcpu.decline(a), Ok(()));
    assert_eq!(vcpu.complete(a, &mut mem.host()), Err(TokenError::Unknown(a)));
    // Declined after the page is back.
    let b = vcpu.start(EL0, 0x2000, &mut mem.host()).unwrap();
    assert_eq!(complete(&mut vcpu, &mut mem, b).fate, Fate::Held);
    assert_eq!(vcpu.decline(b), Ok(()));
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    assert_eq!(mem.head(), 0);
    assert!(consume(&mut mem).is_empty());
    let c = vcpu.counters();
    assert_eq!((c.declined, c.stale, c.posted, c.accepted), (2, 1, 0, 0));
    assert_eq!(vcpu.outstanding(), 0);
}

#[test]
fn answers_must_fit_the_state() {
    let (mut vcpu, mut mem) = enabled(4);
    let token = parked(&mut vcpu, &mut mem);
    assert_eq!(vcpu.accept(token, &mut mem.host()), Err(TokenError::NotDelivering(token)));
    assert_eq!(vcpu.decline(token), Err(TokenError::NotDelivering(token)));
    let stranger = Token::from_raw(0x7777_0003).unwrap();
    assert_eq!(vcpu.accept(stranger, &mut mem.host()), Err(TokenError::Unknown(stranger)));
    assert_eq!(vcpu.decline(stranger), Err(TokenError::Unknown(stranger)));
    assert_eq!(vcpu.complete(stranger, &mut mem.host()), Err(TokenError::Unknown(stranger)));
    assert_eq!(vcpu.counters().stale, 1);
    assert_eq!(vcpu.counters().accepted, 1);
    assert!(TokenError::Unknown(stranger).to_string().contains("0x77770003"));
    vcpu.check_invariants();
}

// ---------------------------------------------------------------------------------------------
// The ring.

#[test]
fn posts_in_completion_order() {
    let (mut vcpu, mut mem) = enabled(8);
    let tokens: Vec<Token> = (0..5).map(|_| parked(&mut vcpu, &mut mem)).collect();
    let order = [3, 0, 4, 1, 2];
    for &i in &order {
        assert_eq!(complete(&mut vcpu, &mut mem, tokens[i]), Delivery { fate: Fate::Posted, posted: 1 });
    }
    let expected: Vec<u64> = order.iter().map(|&i| tokens[i].get()).collect();
    assert_eq!(mem.head(), 5);
    assert_eq!(consume(&mut mem), expected);
    assert_eq!(mem.tail(), 5);
    assert_eq!(vcpu.counters().posted, 5);
}

#[test]
fn never_overwrites_an_unconsumed_entry() {
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    let layout = mem.layout;
    // 64 completions fill the ring (in two batches, each within the limit).
    let mut first = Vec::new();
    for _ in 0..2 {
        let tokens: Vec<Token> = (0..32).map(|_| parked(&mut vcpu, &mut mem)).collect();
        for &token in &tokens {
            assert_eq!(complete(&mut vcpu, &mut mem, token).fate, Fate::Posted);
        }
        first.extend(tokens.iter().map(|t| t.get()));
    }
    assert_eq!(mem.head(), RING_ENTRIES);
    let ring: Vec<u64> = (0..RING_ENTRIES).map(|i| mem.get(layout.ring_entry(i))).collect();
    assert_eq!(ring, first);

    // The ring is full: the next completions wait, the ring and ring_head stay as they are.
    let late: Vec<Token> = (0..3).map(|_| parked(&mut vcpu, &mut mem)).collect();
    for &token in &late {
        assert_eq!(complete(&mut vcpu, &mut mem, token), Delivery { fate: Fate::Queued, posted: 0 });
    }
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    let after: Vec<u64> = (0..RING_ENTRIES).map(|i| mem.get(layout.ring_entry(i))).collect();
    assert_eq!(after, first);
    assert_eq!(mem.head(), RING_ENTRIES);
    assert_eq!(vcpu.counters().queued, 3);

    // The guest consumes one entry (by hand): exactly one slot frees up.
    mem.set(layout.ring_tail(), 1);
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 1);
    assert_eq!(mem.get(layout.ring_entry(0)), late[0].get());
    assert_eq!(mem.get(layout.ring_entry(1)), first[1], "entry 1 is not consumed yet");
    assert_eq!(vcpu.backlog().collect::<Vec<_>>(), [late[1].get(), late[2].get()]);
    vcpu.check_invariants();
}

#[test]
fn the_backlog_drains_in_order_behind_older_entries() {
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    // Fill the ring.
    for _ in 0..2 {
        let tokens: Vec<Token> = (0..32).map(|_| parked(&mut vcpu, &mut mem)).collect();
        for token in tokens {
            complete(&mut vcpu, &mut mem, token);
        }
    }
    let late: Vec<Token> = (0..6).map(|_| parked(&mut vcpu, &mut mem)).collect();
    for &token in &late[..4] {
        assert_eq!(complete(&mut vcpu, &mut mem, token).fate, Fate::Queued);
    }
    assert_eq!(consume(&mut mem).len(), 64);
    // Room now, but the backlog goes first: a new completion posts the whole backlog ahead
    // of itself.
    assert_eq!(complete(&mut vcpu, &mut mem, late[4]), Delivery { fate: Fate::Posted, posted: 5 });
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    assert_eq!(complete(&mut vcpu, &mut mem, late[5]), Delivery { fate: Fate::Posted, posted: 1 });
    let expected: Vec<u64> = late.iter().map(|t| t.get()).collect();
    assert_eq!(consume(&mut mem), expected);
    assert_eq!(mem.head(), 70);
}

#[test]
fn flush_posts_what_fits() {
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    let layout = mem.layout;
    mem.set(layout.ring_tail(), 99); // garbage while the completions come in
    let tokens: Vec<Token> = (0..10).map(|_| parked(&mut vcpu, &mut mem)).collect();
    for &token in &tokens {
        complete(&mut vcpu, &mut mem, token);
    }
    assert_eq!(vcpu.backlog().len(), 10);
    // The guest repairs its tail so that 60 entries look used: room for 4.
    mem.set(layout.ring_tail(), 0u64.wrapping_sub(60));
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 4);
    assert_eq!(mem.head(), 4);
    assert_eq!(vcpu.backlog().len(), 6);
    mem.set(layout.ring_tail(), 4);
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 6);
    assert_eq!(mem.host_entries, tokens.iter().map(|t| t.get()).collect::<Vec<_>>());
}

#[test]
fn indices_wrap_at_two_to_the_64() {
    let layout = layout(64);
    let mut vcpu = ApfVcpu::new(1, 8).unwrap();
    let mut mem = TestMemory::new(layout);
    let start = u64::MAX - 2;
    mem.set(layout.ring_tail(), start);
    vcpu.enable(record(layout, 0), &mut mem.host());
    assert_eq!(mem.head(), start, "the ring starts at the guest's tail");
    let tokens: Vec<Token> = (0..6).map(|_| parked(&mut vcpu, &mut mem)).collect();
    for &token in &tokens {
        assert_eq!(complete(&mut vcpu, &mut mem, token).fate, Fate::Posted);
    }
    assert_eq!(mem.head(), start.wrapping_add(6));
    assert_eq!(consume(&mut mem), tokens.iter().map(|t| t.get()).collect::<Vec<_>>());
    assert_eq!(mem.tail(), 3);
}

#[test]
fn barriers_order_entries_before_head() {
    // The host view panics if an entry is written without tail read + acquire, or if the
    // head is written before a publish; here we also count that barriers were issued.
    let (mut vcpu, mut mem) = enabled(4);
    let token = parked(&mut vcpu, &mut mem);
    let before = mem.host_barriers;
    complete(&mut vcpu, &mut mem, token);
    assert_eq!(mem.host_barriers - before, 2, "one acquire, one publish");
}

#[test]
#[should_panic(expected = "ring_head written before the entries were published")]
fn the_test_memory_catches_a_missing_publish() {
    let mut mem = TestMemory::new(layout(64));
    let layout = mem.layout;
    let mut host = mem.host();
    host.read_u64(layout.ring_tail());
    host.acquire();
    host.write_u64(layout.ring_entry(0), 5);
    host.write_u64(layout.ring_head(), 1);
}

#[test]
#[should_panic(expected = "outside the record")]
fn the_test_memory_catches_accesses_outside_the_record() {
    let mut mem = TestMemory::new(layout(16));
    mem.host().read_u64(layout(16).bytes());
}

// ---------------------------------------------------------------------------------------------
// Wake-all.

#[test]
fn disable_posts_a_wake_all_and_drops_every_token() {
    let (mut vcpu, mut mem) = enabled(8);
    let posted = parked(&mut vcpu, &mut mem);
    let waiting = parked(&mut vcpu, &mut mem);
    let delivering = vcpu.start(EL0, 0x3000, &mut mem.host()).unwrap();
    complete(&mut vcpu, &mut mem, posted);
    assert_eq!(vcpu.disable(&mut mem.host()), 1);
    assert_eq!(vcpu.status(), Status::Disabled);
    assert_eq!(vcpu.record(), None);
    assert_eq!(consume(&mut mem), [posted.get(), TOKEN_WAKE_ALL]);
    for token in [waiting, delivering] {
        assert_eq!(vcpu.complete(token, &mut mem.host()), Err(TokenError::Unknown(token)));
    }
    assert_eq!(vcpu.decline(delivering), Err(TokenError::Unknown(delivering)));
    let c = *vcpu.counters();
    assert_eq!((c.wake_alls, c.dropped, c.stale, c.queued), (1, 2, 2, 0));
    // Disabling again does nothing, and does not touch the record.
    let head = mem.head();
    assert_eq!(vcpu.disable(&mut mem.host()), 0);
    assert_eq!(mem.head(), head);
    assert_eq!(vcpu.counters().wake_alls, 1);
    vcpu.check_invariants();
}

#[test]
fn a_wake_all_waits_for_room_and_covers_the_backlog() {
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    let layout = mem.layout;
    for _ in 0..2 {
        let tokens: Vec<Token> = (0..32).map(|_| parked(&mut vcpu, &mut mem)).collect();
        for token in tokens {
            complete(&mut vcpu, &mut mem, token);
        }
    }
    let queued = parked(&mut vcpu, &mut mem);
    assert_eq!(complete(&mut vcpu, &mut mem, queued).fate, Fate::Queued);
    let _waiting = parked(&mut vcpu, &mut mem);

    // The ring is full: the wake-all waits, and the backlog's completion is dropped.
    assert_eq!(vcpu.disable(&mut mem.host()), 0);
    assert!(matches!(vcpu.status(), Status::Closing(_)));
    assert!(vcpu.record().is_some(), "the host still owes this record its wake-all");
    assert_eq!(vcpu.backlog().collect::<Vec<_>>(), [TOKEN_WAKE_ALL]);
    assert_eq!(vcpu.may_dispatch(EL0), Err(Refusal::NotEnabled));
    let c = *vcpu.counters();
    assert_eq!((c.dropped, c.queued, c.wake_alls), (2, 2, 1));
    vcpu.check_invariants();
    // A second disable does not add another.
    assert_eq!(vcpu.disable(&mut mem.host()), 0);
    assert_eq!(vcpu.counters().wake_alls, 1);
    vcpu.check_invariants();

    // The guest consumes: the wake-all is posted, after the 64 older entries, and the record
    // is released.
    let older = consume(&mut mem);
    assert_eq!(older.len(), 64);
    assert!(!older.contains(&queued.get()));
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 1);
    assert_eq!(vcpu.status(), Status::Disabled);
    assert_eq!(consume(&mut mem), [TOKEN_WAKE_ALL]);
    assert_eq!(mem.get(layout.ring_entry(64)), TOKEN_WAKE_ALL);
    // Nothing is written any more.
    let writes = mem.host_entries.len();
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    assert_eq!(mem.host_entries.len(), writes);
}

#[test]
fn disabling_again_retries_a_waiting_wake_all() {
    let (mut vcpu, mut mem) = enabled(4);
    mem.set(mem.layout.ring_tail(), 7); // garbage: nothing fits
    assert_eq!(vcpu.disable(&mut mem.host()), 0);
    mem.set(mem.layout.ring_tail(), 0);
    assert_eq!(vcpu.disable(&mut mem.host()), 1);
    assert_eq!(vcpu.status(), Status::Disabled);
    assert_eq!(consume(&mut mem), [TOKEN_WAKE_ALL]);
    assert_eq!(vcpu.counters().wake_alls, 1);
}

#[test]
fn power_off_ends_the_session_with_a_wake_all() {
    let (mut vcpu, mut mem) = enabled(4);
    let posted = parked(&mut vcpu, &mut mem);
    complete(&mut vcpu, &mut mem, posted);
    let tokens = [parked(&mut vcpu, &mut mem), parked(&mut vcpu, &mut mem)];
    let off = vcpu.power_off(&mut mem.host());
    assert_eq!(off, PowerOff { dropped: 2, posted: 1, wake_all_lost: false });
    assert_eq!(vcpu.status(), Status::Disabled);
    assert_eq!(vcpu.record(), None, "the host never writes the record again");
    // Another CPU drains the record: the page_ready posted before, then the wake-all last.
    assert_eq!(consume(&mut mem), [posted.get(), TOKEN_WAKE_ALL]);
    // The pages still come in: nothing is posted for them.
    let writes = mem.host_entries.len();
    for token in tokens {
        assert_eq!(vcpu.complete(token, &mut mem.host()), Err(TokenError::Unknown(token)));
    }
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    assert_eq!(mem.host_entries.len(), writes);
    let c = *vcpu.counters();
    assert_eq!((c.power_offs, c.power_offs_with_tokens, c.wake_alls, c.dropped, c.stale), (1, 1, 1, 2, 2));
    // Off again: nothing.
    assert_eq!(vcpu.power_off(&mut mem.host()), PowerOff::default());
    assert_eq!(vcpu.counters().power_offs, 1);
    vcpu.check_invariants();
    // A vCPU that goes off without tokens still ends its session with a wake-all.
    let (mut idle, mut mem) = enabled(4);
    assert_eq!(idle.power_off(&mut mem.host()), PowerOff { dropped: 0, posted: 1, wake_all_lost: false });
    assert_eq!(consume(&mut mem), [TOKEN_WAKE_ALL]);
    assert_eq!((idle.counters().power_offs, idle.counters().power_offs_with_tokens), (1, 0));
    // Never enabled: nothing to end.
    let mut never = ApfVcpu::new(0, 4).unwrap();
    assert_eq!(never.power_off(&mut TestMemory::new(mem.layout).host()), PowerOff::default());
    assert_eq!(never.counters().power_offs, 0);
}

#[test]
fn power_off_never_waits_for_ring_space() {
    // A guest that let its ring fill up: the wake-all is dropped, and the vCPU is off anyway.
    let (mut vcpu, mut mem) = enabled(MAX_LIMIT);
    for _ in 0..2 {
        let tokens: Vec<Token> = (0..32).map(|_| parked(&mut vcpu, &mut mem)).collect();
        for token in tokens {
            complete(&mut vcpu, &mut mem, token);
        }
    }
    let waiting = parked(&mut vcpu, &mut mem);
    let off = vcpu.power_off(&mut mem.host());
    assert_eq!(off, PowerOff { dropped: 1, posted: 0, wake_all_lost: true });
    assert_eq!((vcpu.status(), vcpu.backlog().len()), (Status::Disabled, 0));
    assert_eq!(vcpu.counters().wake_alls_lost, 1);
    assert_eq!(consume(&mut mem).len(), 64);
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0, "nothing after the power-off");
    assert_eq!(vcpu.complete(waiting, &mut mem.host()), Err(TokenError::Unknown(waiting)));
    vcpu.check_invariants();
    // A disable whose wake-all still waits for room: the power-off tries once more.
    let (mut closing, mut mem) = enabled(4);
    mem.set(mem.layout.ring_tail(), 7); // garbage: nothing fits
    assert_eq!(closing.disable(&mut mem.host()), 0);
    mem.set(mem.layout.ring_tail(), 0);
    assert_eq!(closing.power_off(&mut mem.host()), PowerOff { dropped: 0, posted: 1, wake_all_lost: false });
    assert_eq!(consume(&mut mem), [TOKEN_WAKE_ALL]);
    assert_eq!(closing.status(), Status::Disabled);
}

#[test]
fn reenabling_begins_a_new_session() {
    let (mut vcpu, mut old) = enabled(4);
    let layout = old.layout;
    let posted = parked(&mut vcpu, &mut old);
    complete(&mut vcpu, &mut old, posted);
    let waiting = parked(&mut vcpu, &mut old);
    let entries = old.host_entries.len();
    let mut new = TestMemory::new(layout);
    new.set(layout.ring_tail(), 40);
    let second = validate_enable(RAM.start + 0x8000, 0, layout, RAM).unwrap();
    vcpu.enable(second, &mut new.host());
    assert_eq!((vcpu.status(), vcpu.record()), (Status::Enabled(second), Some(second)));
    assert_eq!(old.host_entries.len(), entries, "the old record is abandoned");
    assert!(new.host_entries.is_empty(), "no wake-all: the guest wakes its old tasks itself");
    assert_eq!(new.head(), 40, "the new ring starts empty at the guest's tail");
    assert_eq!(vcpu.complete(waiting, &mut new.host()), Err(TokenError::Unknown(waiting)));
    let c = *vcpu.counters();
    assert_eq!((c.wake_alls, c.dropped, c.stale), (0, 1, 1));
    // The new record works.
    let token = parked(&mut vcpu, &mut new);
    complete(&mut vcpu, &mut new, token);
    assert_eq!(consume(&mut new), [token.get()]);
    vcpu.check_invariants();
}

#[test]
fn a_new_session_drops_a_waiting_wake_all() {
    let (mut vcpu, mut old) = enabled(4);
    let layout = old.layout;
    old.set(layout.ring_tail(), 500); // garbage: nothing fits
    parked(&mut vcpu, &mut old);
    assert_eq!(vcpu.disable(&mut old.host()), 0);
    assert!(matches!(vcpu.status(), Status::Closing(_)));
    let mut new = TestMemory::new(layout);
    let second = validate_enable(RAM.start + 0x8000, 0, layout, RAM).unwrap();
    vcpu.enable(second, &mut new.host());
    assert_eq!(vcpu.status(), Status::Enabled(second));
    assert_eq!(vcpu.backlog().len(), 0);
    assert_eq!(vcpu.flush_backlog(&mut new.host()), 0);
    assert!(new.host_entries.is_empty() && old.host_entries.is_empty());
    // The old session's error is still there to be logged; the new record has not failed.
    assert_eq!(vcpu.take_ring_error(), Some(RingError { head: 0, tail: 500 }));
    assert_eq!(vcpu.take_ring_error(), None);
    vcpu.check_invariants();
}

#[test]
fn enable_clears_the_not_present_slot() {
    let layout = layout(256);
    let mut mem = TestMemory::new(layout);
    mem.set(layout.pnp_token(), 77);
    mem.set(layout.pnp_address(), 78);
    mem.set(layout.ring_head(), 79);
    let mut vcpu = ApfVcpu::new(0, 4).unwrap();
    vcpu.enable(record(layout, 0), &mut mem.host());
    assert_eq!((mem.get(layout.pnp_token()), mem.get(layout.pnp_address()), mem.head()), (0, 0, 0));
}

#[test]
fn forget_drops_everything_without_writing() {
    let (mut vcpu, mut mem) = enabled(4);
    let token = parked(&mut vcpu, &mut mem);
    mem.set(mem.layout.ring_tail(), 999);
    let queued = parked(&mut vcpu, &mut mem);
    complete(&mut vcpu, &mut mem, queued);
    let writes = mem.host_entries.len();
    vcpu.forget();
    assert_eq!((vcpu.status(), vcpu.in_flight()), (Status::Disabled, 0));
    assert_eq!(vcpu.counters().dropped, 2);
    assert_eq!(vcpu.complete(token, &mut mem.host()), Err(TokenError::Unknown(token)));
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    assert_eq!(mem.host_entries.len(), writes);
    vcpu.check_invariants();
}

// ---------------------------------------------------------------------------------------------
// A guest that writes garbage.

#[test]
fn garbage_tails_stop_posting_and_are_reported_once() {
    // With ring_head 1: ahead of the head, or more than 64 behind it.
    for tail in [2, 100, 1 << 63, 1u64.wrapping_sub(65)] {
        let (mut vcpu, mut mem) = enabled(8);
        let layout = mem.layout;
        let a = parked(&mut vcpu, &mut mem);
        complete(&mut vcpu, &mut mem, a);
        assert_eq!(mem.head(), 1);
        mem.set(layout.ring_tail(), tail);
        let entries = mem.host_entries.len();
        let b = parked(&mut vcpu, &mut mem);
        assert_eq!(complete(&mut vcpu, &mut mem, b), Delivery { fate: Fate::Queued, posted: 0 }, "tail {tail:#x}");
        assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
        assert_eq!(mem.host_entries.len(), entries, "posted with tail {tail:#x}");
        assert_eq!(mem.head(), 1);
        assert_eq!(vcpu.counters().ring_errors, 1, "one transition, however often it is seen");
        assert_eq!(vcpu.take_ring_error(), Some(RingError { head: 1, tail }));
        assert_eq!(vcpu.take_ring_error(), None, "reported once");
        // The guest's own drain refuses too, and writes nothing.
        assert_eq!(drain(layout, &mut mem.guest(), |_| panic!("entry taken")), Err(RingError { head: 1, tail }));
        assert_eq!(mem.tail(), tail);

        // Repaired: the backlog goes out, and a second breakage is counted but not reported.
        mem.set(layout.ring_tail(), 1);
        assert_eq!(vcpu.flush_backlog(&mut mem.host()), 1);
        assert_eq!(consume(&mut mem), [b.get()]);
        mem.set(layout.ring_tail(), tail.wrapping_add(1));
        let c = parked(&mut vcpu, &mut mem);
        assert_eq!(complete(&mut vcpu, &mut mem, c).fate, Fate::Queued);
        assert_eq!(vcpu.counters().ring_errors, 2);
        assert_eq!(vcpu.take_ring_error(), None);
        vcpu.check_invariants();
    }
}

#[test]
fn each_session_reports_its_first_ring_error() {
    let (mut vcpu, mut mem) = enabled(4);
    let layout = mem.layout;
    for session in 0..3 {
        mem.set(layout.ring_tail(), mem.head() + 1);
        let token = parked(&mut vcpu, &mut mem);
        complete(&mut vcpu, &mut mem, token);
        assert!(vcpu.take_ring_error().is_some(), "session {session}");
        assert_eq!(vcpu.counters().ring_errors, session + 1);
        mem.set(layout.ring_tail(), 0);
        vcpu.enable(record(layout, 0), &mut mem.host());
        assert_eq!(vcpu.take_ring_error(), None);
    }
}

#[test]
fn garbage_tails_only_fill_the_backlog_up_to_the_limit() {
    let (mut vcpu, mut mem) = enabled(5);
    mem.set(mem.layout.ring_tail(), 1 << 40);
    let mut refused = 0;
    for i in 0..100 {
        match vcpu.start(EL0, i << 12, &mut mem.host()) {
            Ok(token) => {
                vcpu.accept(token, &mut mem.host()).unwrap();
                assert_eq!(complete(&mut vcpu, &mut mem, token).fate, Fate::Queued);
            }
            Err(refusal) => {
                assert_eq!(refusal, Refusal::AtLimit);
                refused += 1;
            }
        }
        vcpu.check_invariants();
    }
    assert_eq!(refused, 95);
    assert_eq!(vcpu.backlog().len(), 5);
    assert!(mem.host_entries.is_empty());
}

#[test]
fn a_disable_with_a_garbage_tail_keeps_its_wake_all_until_repaired() {
    let (mut vcpu, mut mem) = enabled(4);
    let layout = mem.layout;
    mem.set(layout.ring_tail(), 5);
    parked(&mut vcpu, &mut mem);
    assert_eq!(vcpu.disable(&mut mem.host()), 0);
    for _ in 0..10 {
        assert_eq!(vcpu.flush_backlog(&mut mem.host()), 0);
    }
    assert!(matches!(vcpu.status(), Status::Closing(_)));
    assert_eq!(vcpu.counters().ring_errors, 1);
    mem.set(layout.ring_tail(), 0);
    assert_eq!(vcpu.flush_backlog(&mut mem.host()), 1);
    assert_eq!(consume(&mut mem), [TOKEN_WAKE_ALL]);
    assert_eq!(vcpu.status(), Status::Disabled);
}

#[test]
fn drain_checks_the_hosts_head_too() {
    let layout = layout(64);
    let mut mem = TestMemory::new(layout);
    mem.set(layout.ring_head(), 65);
    assert_eq!(drain(layout, &mut mem.guest(), |_| panic!("entry taken")), Err(RingError { head: 65, tail: 0 }));
    assert_eq!(mem.tail(), 0);
    mem.set(layout.ring_head(), 64);
    assert_eq!(drain(layout, &mut mem.guest(), |_| {}), Ok(64));
    assert_eq!(mem.tail(), 64);
    assert_eq!(drain(layout, &mut mem.guest(), |_| panic!("entry taken twice")), Ok(0));
    assert!(RingError { head: 65, tail: 0 }.to_string().contains("0x41"));
}

#[test]
fn ring_used_accepts_exactly_the_possible_fill_levels() {
    assert_eq!(ring_used(0, 0), Ok(0));
    assert_eq!(ring_used(64, 0), Ok(64));
    assert_eq!(ring_used(3, u64::MAX - 2), Ok(6));
    assert_eq!(ring_used(65, 0), Err(RingError { head: 65, tail: 0 }));
    assert_eq!(ring_used(0, 1), Err(RingError { head: 0, tail: 1 }));
    assert_eq!(ring_used(u64::MAX, 0), Err(RingError { head: u64::MAX, tail: 0 }));
}

/// The machine's granule is decided over every CPU: a big.LITTLE machine whose little cores
/// have 64-byte lines and big cores 256-byte ones gets 256; a CPU that reports nothing (CWG 0)
/// forces the architectural maximum; the order of reports does not matter.
#[test]
fn machine_granule_is_the_largest_over_all_cpus() {
    // CWG is log2 of the granule in 4-byte words: 4 -> 64 bytes, 6 -> 256 bytes.
    assert_eq!(machine_granule([4, 4, 4, 4]), Some(64));
    assert_eq!(machine_granule([4, 4, 6, 6]), Some(256));
    assert_eq!(machine_granule([6, 4, 4, 4]), Some(256));
    assert_eq!(machine_granule([4, 0, 4]), Some(2048), "an unreported granule counts as 2 KiB");
    assert_eq!(machine_granule([1]), Some(16), "at least two u64 fields");
    assert_eq!(machine_granule([]), None);
    // Deciding before the last CPU reported gives the wrong stride: exactly the mistake.
    assert_ne!(machine_granule([4, 4, 4]), machine_granule([4, 4, 4, 6]));
}

/// Item 3 of issue 11: a page that cannot be read back, with an asynchronous waiter. The
/// engine fails the read (after its retries) and aborts the waiter; the hypervisor turns an
/// asynchronous waiter's abort into its page_ready (the task is woken); the task's retry then
/// finds the page unreadable, is resolved synchronously, and the engine aborts that access:
/// exactly one abort reaches the guest, at the access, after one asynchronous round.
#[test]
fn an_unreadable_page_is_retried_synchronously_and_aborts_once() {
    use crate::overcommit::{Config, Done, FaultAction, Overcommit, PageNo, Waiter, Wake};
    const SYNC: Waiter = Waiter(0);
    const ASYNC: Waiter = Waiter(1);
    let page = PageNo(0);
    let mut oc = Overcommit::new(Config::new(2, 1, 2)).unwrap();
    // Page 0 is written, pushed out by page 1 and written back: on disk.
    let FaultAction::ZeroFill { .. } = oc.fault(page, true, SYNC).unwrap().action else { panic!() };
    let fault = oc.fault(PageNo(1), true, SYNC).unwrap();
    let write = fault.writebacks[0];
    assert_eq!(fault.action, FaultAction::WaitIo);
    oc.write_done(write.id, true).unwrap();
    let (mut vcpu, mut mem) = enabled(4);
    let mut aborts = 0;
    let mut asynchronous = 0;
    // The guest's task touches page 0 until it gets its abort.
    for _ in 0..4 {
        let inputs = DispatchInputs { page_unreadable: oc.is_unreadable(page), ..EL0 };
        let token = vcpu.start(inputs, 0x1000, &mut mem.host()).ok();
        let waiter = if token.is_some() { ASYNC } else { SYNC };
        let FaultAction::StartRead { read } = oc.fault(page, false, waiter).unwrap().action else {
            panic!("the page is on disk: it is read");
        };
        if let Some(token) = token {
            asynchronous += 1;
            assert_eq!(vcpu.accept(token, &mut mem.host()), Ok(0));
        }
        let woken = loop {
            let done = oc.read_done(read.id, false).unwrap();
            if let Done::ReadFailed { .. } = done.done {
                break done.woken.to_vec();
            }
        };
        assert_eq!(woken, [Wake::Abort(waiter)]);
        match token {
            // The hypervisor posts the page_ready (the task wakes and retries).
            Some(token) => {
                assert_eq!(vcpu.complete(token, &mut mem.host()).map(|d| d.posted), Ok(1));
                assert_eq!(consume(&mut mem), [token.get()]);
            }
            // The access gets its synchronous external abort; the guest gives up the page.
            None => {
                aborts += 1;
                break;
            }
        }
    }
    assert_eq!((asynchronous, aborts), (1, 1));
    assert!(oc.is_unreadable(page));
    vcpu.check_invariants();
}

/// APF_PIN's validation: page-aligned, non-empty, inside RAM, no wrap; the quota counts only
/// pages not pinned yet, and a request over it pins nothing.
#[test]
fn pin_requests() {
    let ram = 0x4000_0000..0x4400_0000;
    let page = 4096;
    let all_new = |r: core::ops::Range<u64>| r.end - r.start;
    let v = |ipa, bytes, pinned| validate_pin(ipa, bytes, ram.clone(), page, pinned, 16, all_new);
    assert_eq!(v(0x4000_0000, 4 * page, 0), Ok(0..4));
    assert_eq!(v(0x4001_0000, page, 0), Ok(16..17));
    for (ipa, bytes) in [
        (0x4000_0001, page),         // misaligned
        (0x4000_0000, page + 1),     // not whole pages
        (0x4000_0000, 0),            // empty
        (0x3fff_f000, 2 * page),     // starts below RAM
        (0x43ff_f000, 2 * page),     // ends past RAM
        (u64::MAX - page + 1, page), // wraps
    ] {
        assert_eq!(v(ipa, bytes, 0), Err(PinError::Invalid), "{ipa:#x}+{bytes:#x}");
    }
    assert_eq!(v(0x4000_0000, 17 * page, 0), Err(PinError::OverQuota { asked: 17, left: 16 }));
    assert_eq!(v(0x4000_0000, 4 * page, 14), Err(PinError::OverQuota { asked: 4, left: 2 }));
    // Pages already pinned do not count again.
    let none_new = |_: core::ops::Range<u64>| 0;
    assert_eq!(validate_pin(0x4000_0000, 4 * page, ram.clone(), page, 16, 16, none_new), Ok(0..4));
    assert_eq!(PinError::OverQuota { asked: 1, left: 0 }.smccc(), asyncpf_contract::apf::OUT_OF_QUOTA);
    assert_eq!(pin_quota(3072), 768, "R = 12 MiB: 3 MiB");
}
