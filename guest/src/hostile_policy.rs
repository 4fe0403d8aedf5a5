//! Which SMCCC calls the `hostile` scenario may make, and how it draws them.
//!
//! The scenario fuzzes the hypervisor's `hvc`/`smc` handling with pseudo-random function IDs
//! and arguments, but must not change the machine's power state or plant state that would
//! later call back into the guest at a random address. The rules here are pure so they can be
//! checked on the host.
//!
//! Besides the blind fuzzing ([`draw_function_id`], [`draw_argument`]) the scenario makes
//! *aimed* actions ([`draw_action`]): PSCI calls that are safe by construction, SDEI state
//! changes, APF_ENABLE with addresses in and around the guest's own RAM, MMIO of every size
//! and form to the emulated devices, and faults inside the guest's own handlers. Each aimed
//! call carries what the contract (docs/abi.md) says it must answer, when that does not depend
//! on state the guest does not track ([`Expect`]), so that a wrong answer is counted.

use crate::rng::SplitMix64;
use asyncpf_contract::{apf, psci, sdei, smccc};

/// PSCI function numbers that change a power state: CPU_SUSPEND, CPU_OFF, CPU_ON, SYSTEM_OFF,
/// SYSTEM_RESET, CPU_FREEZE, CPU_DEFAULT_SUSPEND, NODE_HW_STATE, SYSTEM_SUSPEND,
/// SYSTEM_RESET2.
const PSCI_POWER_FUNCTIONS: [u32; 10] = [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x12];

/// SDEI (also standard-service owner) function numbers that only query: VERSION, EVENT_STATUS,
/// EVENT_GET_INFO, FEATURES. The others register handlers, unmask or signal events, which
/// with random arguments could make the hypervisor enter the guest at a random address later.
const SDEI_QUERIES: [u32; 4] = [0x20, 0x28, 0x29, 0x30];
const SDEI_FIRST: u32 = 0x20;
const SDEI_LAST: u32 = 0x3F;

/// True if the call may be made with arbitrary arguments. Only `w0` selects the function
/// (SMCCC ignores `x0[63:32]`); reserved bits 23:16 are ignored here on purpose, so a lax
/// implementation that masks them cannot turn a "harmless" ID into a power-off.
pub fn is_allowed(function_id: u32) -> bool {
    if smccc::owner(function_id) != smccc::OWNER_STANDARD {
        return true;
    }
    let number = smccc::function_number(function_id);
    if PSCI_POWER_FUNCTIONS.contains(&number) {
        return false;
    }
    if (SDEI_FIRST..=SDEI_LAST).contains(&number) {
        return SDEI_QUERIES.contains(&number);
    }
    true
}

/// Draws a function ID: a mix of fully random values and IDs aimed at the architecture,
/// standard (PSCI/SDEI/TRNG) and vendor-hypervisor services, in both calling conventions.
/// Returns the full 64-bit x0 (upper half sometimes random) of an allowed call.
pub fn draw_function_id(rng: &mut SplitMix64) -> u64 {
    loop {
        let conv = if rng.below(2) == 0 { 0 } else { smccc::CONV_64 };
        let fast = smccc::FAST_CALL;
        let w0: u32 = match rng.below(8) {
            0 | 1 => rng.next_u64() as u32,
            2 | 3 => fast | conv | (smccc::OWNER_STANDARD << 24) | rng.below(0x60) as u32,
            4 => fast | conv | (smccc::OWNER_VENDOR_HYP << 24) | rng.below(0x20) as u32,
            5 => fast | (smccc::OWNER_VENDOR_HYP << 24) | (0xFF00 + rng.below(4) as u32),
            6 => fast | (smccc::OWNER_ARCH << 24) | [0, 1, 2, 0x3FFF, 0x7FFF, 0x8000][rng.below(6) as usize],
            _ => fast | conv | ((rng.below(64) as u32) << 24) | rng.below(0x10000) as u32,
        };
        if !is_allowed(w0) {
            continue;
        }
        let high = if rng.below(4) == 0 { rng.next_u64() << 32 } else { 0 };
        return high | u64::from(w0);
    }
}

/// Draws an argument register value: often small (0..16, which is where validation bugs
/// hide), otherwise random; never inside `forbidden` (the guest's own RAM), so that no call
/// can make the hypervisor write over the running guest.
pub fn draw_argument(rng: &mut SplitMix64, forbidden: &[(u64, u64)]) -> u64 {
    loop {
        let v = match rng.below(4) {
            0 => rng.below(16),
            1 => rng.next_u64() & 0xFFFF_FFFF,
            _ => rng.next_u64(),
        };
        if !forbidden.iter().any(|&(base, size)| v >= base && v - base < size) {
            return v;
        }
    }
}

/// The kinds of hostile actions, as the scenario counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A blind call: random function ID (allowed by [`is_allowed`]) and arguments.
    Fuzz,
    /// A PSCI call that cannot change a power state (CPU_SUSPEND is standby and returns).
    Psci,
    /// One to four SDEI calls that change and query the dispatcher's state.
    Sdei,
    /// An APF session: APF_ENABLE with some record address, maybe a garbage ring_tail, APF_DISABLE.
    Apf,
    /// One access to an emulated device.
    Mmio,
    /// A fault taken inside one of the guest's own handlers.
    HandlerFault,
}

/// Every kind, in the order of [`Kind::name`] and the scenario's counters.
pub const KINDS: [Kind; 6] = [Kind::Fuzz, Kind::Psci, Kind::Sdei, Kind::Apf, Kind::Mmio, Kind::HandlerFault];

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Fuzz => "fuzz",
            Kind::Psci => "psci",
            Kind::Sdei => "sdei",
            Kind::Apf => "apf",
            Kind::Mmio => "mmio",
            Kind::HandlerFault => "handler_fault",
        }
    }
}

/// What a call must answer (docs/abi.md), as far as the caller can know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Depends on state the caller does not track.
    Any,
    Is(i64),
    Either(i64, i64),
    /// A value or SUCCESS, not an error code.
    NonNegative,
}

impl Expect {
    pub fn accepts(self, answer: i64) -> bool {
        match self {
            Expect::Any => true,
            Expect::Is(a) => answer == a,
            Expect::Either(a, b) => answer == a || answer == b,
            Expect::NonNegative => answer >= 0,
        }
    }
}

/// One SMCCC call: conduit, x0 (function ID, possibly with garbage in bits 63:32), x1..x5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub smc: bool,
    pub x0: u64,
    pub args: [u64; 5],
    pub expect: Expect,
}

impl Call {
    fn new(function: u32, args: [u64; 5], expect: Expect, rng: &mut SplitMix64) -> Call {
        Call { smc: rng.below(2) == 0, x0: high_garbage(rng) | u64::from(function), args, expect }
    }

    pub fn function(&self) -> u32 {
        self.x0 as u32
    }

    /// The answer as the caller's convention reads it: W0 sign-extended for SMC32/HVC32 calls.
    pub fn answer(&self, x0: u64) -> i64 {
        if self.function() & smccc::CONV_64 == 0 {
            i64::from(x0 as u32 as i32)
        } else {
            x0 as i64
        }
    }
}

/// Bits 63:32 of x0, which every service must ignore: sometimes garbage.
fn high_garbage(rng: &mut SplitMix64) -> u64 {
    if rng.below(4) == 0 {
        rng.next_u64() << 32
    } else {
        0
    }
}

/// The instruction form of an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioForm {
    /// `ldrb/ldrh/ldr w/ldr x` (a valid syndrome).
    Load,
    /// `strb/strh/str w/str x` of this value, only where a write cannot change anything the
    /// guest relies on (read-only, RAZ/WI or reserved registers, the UART's configuration).
    Store(u64),
    /// Read the register, then write the value read back (idempotent read-write registers).
    StoreSame,
    /// No valid syndrome (ISV = 0): a load pair, a store pair, a post-indexed load, a
    /// pre-indexed store, an FP/SIMD load.
    LoadPair,
    StorePair,
    LoadPostIndex,
    StorePreIndex,
    LoadSimd,
}

impl MmioForm {
    /// Whether the access has no instruction syndrome for the hypervisor (ISV = 0).
    pub fn without_syndrome(self) -> bool {
        matches!(
            self,
            MmioForm::LoadPair
                | MmioForm::StorePair
                | MmioForm::LoadPostIndex
                | MmioForm::StorePreIndex
                | MmioForm::LoadSimd
        )
    }
}

/// What an MMIO access must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioExpect {
    /// Emulated: completes without an exception.
    Answered,
    /// A synchronous external abort (docs/abi.md §3: no syndrome).
    Abort,
    /// Either is allowed (reserved offsets, sizes the register does not have, unaligned).
    Either,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Distributor,
    /// The redistributor of this vCPU (any vCPU's frame may be accessed).
    Redistributor(usize),
    Uart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmio {
    pub device: Device,
    pub addr: u64,
    /// 1, 2, 4 or 8 bytes (pairs: each element).
    pub size: u8,
    pub form: MmioForm,
    pub expect: MmioExpect,
}

/// Where APF_ENABLE's record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Granule-aligned in the scenario's arena, within one page.
    Aligned,
    /// Granule-aligned in the arena, across a page boundary.
    Straddling,
    /// Not granule-aligned.
    Unaligned,
    /// Aligned, in the arena, with unknown flag bits.
    BadFlags,
    /// Not guest RAM at all (0, a device, above RAM, random).
    OutsideRam,
    /// Starting in the last granule of RAM, ending beyond it.
    AcrossRamEnd,
}

pub const RECORD_KINDS: [RecordKind; 6] = [
    RecordKind::Aligned,
    RecordKind::Straddling,
    RecordKind::Unaligned,
    RecordKind::BadFlags,
    RecordKind::OutsideRam,
    RecordKind::AcrossRamEnd,
];

/// An APF session, run with IRQs masked on the calling CPU; the scenario then restores the
/// CPU's own APF state (its record re-enabled if it had APF on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApfSession {
    pub kind: RecordKind,
    pub enable: Call,
    /// Written to the record's ring_tail after a successful enable.
    pub garbage_tail: Option<u64>,
    /// Another call in the session: APF_FEATURES, or a second APF_ENABLE (a new session).
    pub second: Call,
    pub disable: Call,
}

/// A fault taken inside a handler of the guest's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerFault {
    /// The CPU signals its own SDEI event 0 to a handler that reads a hole, accesses an
    /// implementation-defined register and makes an MMIO access without syndrome, each caught inside the handler.
    SdeiHandler,
    /// A trapped system register raises UNDEFINED; the exception handler itself reads a hole
    /// before it returns (a nested synchronous exception).
    ExceptionPath,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Fuzz(Call),
    Psci(Call),
    Sdei([Option<Call>; 4]),
    Apf(ApfSession),
    Mmio(Mmio),
    /// A register read whole, then in the parts the GIC architecture allows (bytes of
    /// IPRIORITYR, 32-bit halves of 64-bit registers): the parts must match the whole.
    MmioParts(MmioParts),
    HandlerFault(HandlerFault),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioParts {
    pub addr: u64,
    /// The register's width and the part size, in bytes.
    pub width: u8,
    pub part: u8,
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::Fuzz(_) => Kind::Fuzz,
            Action::Psci(_) => Kind::Psci,
            Action::Sdei(_) => Kind::Sdei,
            Action::Apf(_) => Kind::Apf,
            Action::Mmio(_) | Action::MmioParts(_) => Kind::Mmio,
            Action::HandlerFault(_) => Kind::HandlerFault,
        }
    }
}

/// What the scenario knows of the machine and of itself.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    /// Every vCPU's MPIDR affinity (all are on while the scenario runs).
    pub mpidrs: &'a [u64],
    /// Guest RAM ranges (base, size).
    pub ram: &'a [(u64, u64)],
    /// Guest RAM is paged: the APF calls are answered (APF_FEATURES succeeded).
    pub paged: bool,
    /// The record granule (APF_FEATURES x1; 64 when not paged, unused then).
    pub granule: u64,
    /// RAM the scenario owns for hostile APF records: (base, size), page-aligned.
    pub arena: (u64, u64),
    /// RAM that must never be a record (the device tree): (base, size).
    pub avoid: (u64, u64),
    /// The guest's SDEI handler entry point (safe to run at any time).
    pub sdei_entry: u64,
    /// A CPU_ON entry point that parks a CPU forever (never reached: every target is on).
    pub cpu_on_stub: u64,
    pub gicd: (u64, u64),
    pub gicr: (u64, u64),
    /// Bytes per vCPU redistributor (RD_base + SGI_base frames).
    pub gicr_stride: u64,
    pub uart: (u64, u64),
}

/// Actions per 1000 draws, by kind; CPU_SUSPEND (which waits for an interrupt) is rare.
const WEIGHTS: [(Kind, u64); 6] = [
    (Kind::Fuzz, 300),
    (Kind::Psci, 100),
    (Kind::Sdei, 200),
    (Kind::Apf, 100),
    (Kind::Mmio, 272),
    (Kind::HandlerFault, 28),
];
/// CPU_SUSPEND per 1000 PSCI actions.
const SUSPEND_PER_MILLE: u64 = 20;

/// Draws the next aimed action.
pub fn draw_action(rng: &mut SplitMix64, env: &Env<'_>) -> Action {
    let mut pick = rng.below(WEIGHTS.iter().map(|w| w.1).sum());
    let mut kind = Kind::Fuzz;
    for (k, w) in WEIGHTS {
        if pick < w {
            kind = k;
            break;
        }
        pick -= w;
    }
    match kind {
        Kind::Fuzz => {
            let x0 = draw_function_id(rng);
            let mut args = [0; 5];
            for a in args.iter_mut() {
                *a = draw_argument(rng, env.ram);
            }
            Action::Fuzz(Call { smc: rng.below(2) == 0, x0, args, expect: Expect::Any })
        }
        Kind::Psci => Action::Psci(draw_psci(rng, env)),
        Kind::Sdei => {
            let mut calls = [None; 4];
            for slot in calls.iter_mut().take(1 + rng.below(4) as usize) {
                *slot = Some(draw_sdei(rng, env));
            }
            Action::Sdei(calls)
        }
        Kind::Apf => Action::Apf(draw_apf(rng, env)),
        Kind::Mmio if rng.below(8) == 0 => Action::MmioParts(draw_parts(rng, env)),
        Kind::Mmio => Action::Mmio(draw_mmio(rng, env)),
        Kind::HandlerFault => Action::HandlerFault(if rng.below(2) == 0 {
            HandlerFault::SdeiHandler
        } else {
            HandlerFault::ExceptionPath
        }),
    }
}

fn pick<T: Copy>(items: &[T], rng: &mut SplitMix64) -> T {
    items[rng.below(items.len() as u64) as usize]
}

/// An MPIDR argument: (value, names a vCPU).
fn draw_target(rng: &mut SplitMix64, env: &Env<'_>) -> (u64, bool) {
    match rng.below(8) {
        0..=3 => (pick(env.mpidrs, rng), true),
        // A vCPU's affinity with MPIDR bits that PSCI requires to be zero (31:24, 63:40).
        4 => (pick(env.mpidrs, rng) | pick(&[1 << 31, 1 << 30 | 1 << 24, 1 << 40], rng), false),
        // No such vCPU: Aff0 beyond the vCPUs (at most 16 per Aff1), Aff1, Aff2 or Aff3 set.
        5 => (env.mpidrs.len() as u64 + rng.below(16 - env.mpidrs.len().min(15) as u64), false),
        6 => (pick(&[1 << 8, 3 << 16, 1 << 32, 0xff_00ff_ffff], rng), false),
        _ => {
            let v = rng.next_u64();
            (v, env.mpidrs.contains(&v))
        }
    }
}

fn draw_psci(rng: &mut SplitMix64, env: &Env<'_>) -> Call {
    let conv64 = rng.below(2) == 0;
    let (affinity_info, cpu_on, suspend) = if conv64 {
        (psci::AFFINITY_INFO_64, psci::CPU_ON_64, psci::CPU_SUSPEND_64)
    } else {
        (psci::AFFINITY_INFO_32, psci::CPU_ON_32, psci::CPU_SUSPEND_32)
    };
    // 32-bit calls see the low halves of their arguments.
    let narrow = |v: u64| if conv64 { v } else { v & 0xffff_ffff };
    // PSCI: only the affinity fields may be set (DEN0022 5.1.4: bits 63:40 and 31:24 are zero).
    let is_known = |v: u64| env.mpidrs.contains(&narrow(v));
    if rng.below(1000) < SUSPEND_PER_MILLE {
        let power_state = rng.next_u64();
        return Call::new(
            suspend,
            [power_state, env.cpu_on_stub, rng.next_u64(), 0, 0],
            Expect::Is(psci::SUCCESS),
            rng,
        );
    }
    match rng.below(6) {
        0 => Call::new(psci::PSCI_VERSION, [rng.next_u64(), 0, 0, 0, 0], Expect::Is(psci::VERSION_1_1 as i64), rng),
        1 => {
            let (target, _) = draw_target(rng, env);
            let level = pick(&[0, 0, 0, 1, 2, 3, rng.next_u64()], rng);
            let expect =
                if narrow(level) == 0 && is_known(target) { psci::AFFINITY_ON } else { psci::INVALID_PARAMETERS };
            Call::new(affinity_info, [target, level, 0, 0, 0], Expect::Is(expect), rng)
        }
        2 => {
            // Every vCPU is on: a known target is ALREADY_ON, whatever the entry point (an
            // implementation may check the entry first: INVALID_ADDRESS).
            let (target, _) = draw_target(rng, env);
            let (entry, good) = match rng.below(4) {
                0 | 1 => (env.cpu_on_stub, true),
                2 => (env.cpu_on_stub + 1 + rng.below(3), false),
                _ => (pick(&[0, 0x0800_0000, 0xffff_ffff_ffff_fffc, env.gicd.0], rng), false),
            };
            let expect = match (is_known(target), good) {
                (false, _) => Expect::Is(psci::INVALID_PARAMETERS),
                (true, true) => Expect::Is(psci::ALREADY_ON),
                (true, false) => Expect::Either(psci::ALREADY_ON, psci::INVALID_ADDRESS),
            };
            Call::new(cpu_on, [target, entry, rng.next_u64(), 0, 0], expect, rng)
        }
        3 => Call::new(psci::MIGRATE_INFO_TYPE, [0; 5], Expect::Is(psci::MIGRATE_NOT_REQUIRED), rng),
        4 => {
            const IMPLEMENTED: [u32; 13] = [
                psci::PSCI_VERSION,
                psci::CPU_SUSPEND_32,
                psci::CPU_SUSPEND_64,
                psci::CPU_OFF,
                psci::CPU_ON_32,
                psci::CPU_ON_64,
                psci::AFFINITY_INFO_32,
                psci::AFFINITY_INFO_64,
                psci::MIGRATE_INFO_TYPE,
                psci::SYSTEM_OFF,
                psci::SYSTEM_RESET,
                psci::PSCI_FEATURES,
                smccc::SMCCC_VERSION,
            ];
            // MIGRATE, MIGRATE_INFO_UP_CPU, CPU_FREEZE, SYSTEM_SUSPEND, SYSTEM_RESET2, an SDEI call.
            const ABSENT: [u32; 6] = [0x8400_0005, 0x8400_0007, 0x8400_000B, 0xC400_000E, 0xC400_0012, 0xC400_0021];
            let (fid, expect) = if rng.below(2) == 0 {
                (pick(&IMPLEMENTED, rng), Expect::Is(psci::SUCCESS))
            } else {
                (pick(&ABSENT, rng), Expect::Is(psci::NOT_SUPPORTED))
            };
            Call::new(psci::PSCI_FEATURES, [u64::from(fid), 0, 0, 0, 0], expect, rng)
        }
        // MIGRATE and MIGRATE_INFO_UP_CPU (not implemented: no Trusted OS).
        _ => {
            let f = pick(&[0x8400_0005, 0xC400_0005, 0x8400_0007, 0xC400_0007], rng);
            Call::new(f, [rng.next_u64(), 0, 0, 0, 0], Expect::Is(psci::NOT_SUPPORTED), rng)
        }
    }
}

/// An SDEI event number argument: (value, the event exists). Only the low 32 bits count.
fn draw_event(rng: &mut SplitMix64) -> (u64, bool) {
    let high = if rng.below(4) == 0 { rng.next_u64() << 32 } else { 0 };
    match rng.below(10) {
        0..=3 => (high | u64::from(sdei::EVENT_SOFTWARE_SIGNALLED), true),
        4..=6 => (high | u64::from(sdei::EVENT_PAGE_NOT_PRESENT), true),
        7 => (high | pick(&[1, 0x0041_5047, 0x8000_0000, 0xffff_ffff, 0x00ff_ffff], rng), false),
        _ => {
            let v = rng.next_u64();
            let known = matches!(v as u32, sdei::EVENT_SOFTWARE_SIGNALLED | sdei::EVENT_PAGE_NOT_PRESENT);
            (v, known)
        }
    }
}

fn draw_sdei(rng: &mut SplitMix64, env: &Env<'_>) -> Call {
    let (event, known) = draw_event(rng);
    let unknown_or = |e: Expect| if known { e } else { Expect::Is(sdei::INVALID_PARAMETERS) };
    match rng.below(17) {
        0 => {
            let version = sdei::version_value(sdei::VERSION_MAJOR, sdei::VERSION_MINOR) as i64;
            Call::new(sdei::VERSION, [0; 5], Expect::Is(version), rng)
        }
        1 => {
            // Only the guest's real handler, or entry points that must be refused.
            let (entry, good) =
                if rng.below(4) == 0 { (env.sdei_entry + 1 + rng.below(3), false) } else { (env.sdei_entry, true) };
            let flags = pick(&[0, 0, 0, 1, 2, rng.next_u64()], rng);
            let (affinity, _) = draw_target(rng, env);
            let expect = if !known {
                Expect::Is(sdei::INVALID_PARAMETERS)
            } else if !good || flags & !1 != 0 {
                // Bad entry or flags; an event already registered may be DENIED first.
                Expect::Either(sdei::INVALID_PARAMETERS, sdei::DENIED)
            } else {
                Expect::Either(sdei::SUCCESS, sdei::DENIED)
            };
            Call::new(sdei::EVENT_REGISTER, [event, entry, rng.next_u64(), flags, affinity], expect, rng)
        }
        2 => Call::new(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0], unknown_or(Expect::Any), rng),
        3 => Call::new(sdei::EVENT_DISABLE, [event, 0, 0, 0, 0], unknown_or(Expect::Any), rng),
        4 => Call::new(sdei::EVENT_UNREGISTER, [event, 0, 0, 0, 0], unknown_or(Expect::Any), rng),
        5 => Call::new(sdei::EVENT_STATUS, [event, 0, 0, 0, 0], unknown_or(Expect::NonNegative), rng),
        6 => {
            let info = rng.below(7);
            let expect = match info {
                0..=2 => Expect::NonNegative,
                _ => Expect::Is(sdei::INVALID_PARAMETERS),
            };
            Call::new(sdei::EVENT_GET_INFO, [event, info, 0, 0, 0], unknown_or(expect), rng)
        }
        // Not in a handler: DENIED whatever the arguments (a resume address is never used).
        7 => Call::new(sdei::EVENT_CONTEXT, [rng.below(32), 0, 0, 0, 0], Expect::Is(sdei::DENIED), rng),
        8 => Call::new(sdei::EVENT_COMPLETE, [rng.next_u64(), 0, 0, 0, 0], Expect::Is(sdei::DENIED), rng),
        9 => Call::new(sdei::EVENT_COMPLETE_AND_RESUME, [rng.next_u64(), 0, 0, 0, 0], Expect::Is(sdei::DENIED), rng),
        10 => {
            let (affinity, _) = draw_target(rng, env);
            Call::new(
                sdei::EVENT_ROUTING_SET,
                [event, rng.below(3), affinity, 0, 0],
                Expect::Is(sdei::INVALID_PARAMETERS),
                rng,
            )
        }
        11 => {
            let f = pick(&[sdei::PE_MASK, sdei::PE_UNMASK], rng);
            Call::new(f, [0; 5], Expect::NonNegative, rng)
        }
        12 => {
            let intid = pick(&[rng.below(16), 16 + rng.below(16), 32 + rng.below(64), rng.next_u64()], rng);
            let expect = if (intid as u32) < 16 {
                Expect::Is(sdei::INVALID_PARAMETERS)
            } else {
                Expect::Either(sdei::OUT_OF_RESOURCE, sdei::INVALID_PARAMETERS)
            };
            Call::new(sdei::INTERRUPT_BIND, [intid, 0, 0, 0, 0], expect, rng)
        }
        13 => Call::new(sdei::INTERRUPT_RELEASE, [event, 0, 0, 0, 0], Expect::Any, rng),
        14 => {
            // Event 0 of this or another vCPU (or of none).
            let (target, _) = draw_target(rng, env);
            Call::new(sdei::EVENT_SIGNAL, [event, target, 0, 0, 0], Expect::Any, rng)
        }
        15 => {
            let f = pick(&[sdei::PRIVATE_RESET, sdei::SHARED_RESET, sdei::FEATURES], rng);
            Call::new(f, [rng.below(4), 0, 0, 0, 0], Expect::Any, rng)
        }
        // An SMC32 form: not offered.
        _ => {
            let f = (sdei::VERSION + rng.below(0x13) as u32) & !smccc::CONV_64;
            Call::new(f, [event, 0, 0, 0, 0], Expect::Is(sdei::NOT_SUPPORTED), rng)
        }
    }
}

/// SDEI calls made from inside the handler of event 0 (the "running" state), round `round`
/// of a fixed cycle; `entry` is the guest's handler. None completes the handler (the
/// handler's own return does), and COMPLETE_AND_RESUME with a misaligned address must be
/// refused without completing it.
pub fn in_handler_calls(round: u64, entry: u64) -> [Option<Call>; 3] {
    let event = u64::from(sdei::EVENT_SOFTWARE_SIGNALLED);
    let call = |function: u32, args: [u64; 5], expect: Expect| {
        Some(Call { smc: round % 2 == 1, x0: u64::from(function), args, expect })
    };
    let denied = Expect::Is(sdei::DENIED);
    match round % 8 {
        0 => {
            let index = round / 8 % 24;
            let context = if index < 18 { Expect::Any } else { Expect::Is(sdei::INVALID_PARAMETERS) };
            [
                call(sdei::EVENT_STATUS, [event, 0, 0, 0, 0], Expect::NonNegative),
                call(sdei::EVENT_CONTEXT, [index, 0, 0, 0, 0], context),
                None,
            ]
        }
        1 => [
            call(sdei::EVENT_DISABLE, [event, 0, 0, 0, 0], Expect::Is(0)),
            call(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0], Expect::Is(0)),
            None,
        ],
        2 => [call(sdei::EVENT_REGISTER, [event, entry, 0, 0, 0], denied), None, None],
        // Running, then unregister pending: enable and register are refused.
        3 => [
            call(sdei::EVENT_UNREGISTER, [event, 0, 0, 0, 0], Expect::Is(sdei::PENDING)),
            call(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0], denied),
            call(sdei::EVENT_REGISTER, [event, entry, 0, 0, 0], denied),
        ],
        4 => [call(sdei::PRIVATE_RESET, [0; 5], denied), None, None],
        5 => [call(sdei::EVENT_COMPLETE_AND_RESUME, [entry + 2, 0, 0, 0, 0], denied), None, None],
        6 => {
            [call(sdei::PE_MASK, [0; 5], Expect::NonNegative), call(sdei::PE_UNMASK, [0; 5], Expect::NonNegative), None]
        }
        _ => {
            [call(sdei::EVENT_CONTEXT, [18 + round % 8, 0, 0, 0, 0], Expect::Is(sdei::INVALID_PARAMETERS)), None, None]
        }
    }
}

/// Base of a record of `kind`, and whether it must be accepted (when guest RAM is paged).
fn draw_record(rng: &mut SplitMix64, env: &Env<'_>, kind: RecordKind) -> (u64, bool) {
    let g = env.granule;
    let bytes = apf::record_bytes(g);
    let (arena, arena_size) = env.arena;
    // Granule-aligned positions whose record fits in the arena.
    let slots = (arena_size - bytes) / g + 1;
    let page = 4096;
    match kind {
        RecordKind::Aligned => {
            // Within one page, if a record fits in one (granules up to 1 KiB).
            let per_page = if bytes <= page { (page - bytes) / g + 1 } else { 1 };
            (arena + page * rng.below(arena_size / page - 2) + g * rng.below(per_page), true)
        }
        RecordKind::Straddling => {
            // Ends past a page boundary, starts before it; the arena's last two pages stay free
            // for the largest record (6.5 KiB at a 2 KiB granule).
            let boundaries = arena_size / page - 2;
            let boundary = arena + page * (1 + rng.below(boundaries - 1));
            let back = g * (1 + rng.below((bytes - 1) / g));
            let base = boundary - back;
            (base.max(arena), true)
        }
        RecordKind::Unaligned => (arena + rng.below(slots) * g + 1 + rng.below(g - 1), false),
        RecordKind::BadFlags => (arena + rng.below(slots) * g, false),
        RecordKind::OutsideRam => {
            let above = env.ram.iter().map(|&(b, s)| b + s).max().unwrap_or(0);
            // Also the last granule of the address space (its end overflows) and one granule
            // below RAM (the record would run into RAM).
            let below = env.ram.iter().map(|&(b, _)| b).min().unwrap_or(0).wrapping_sub(g);
            let top = !(g - 1);
            (
                pick(
                    &[0, env.gicd.0, env.uart.0, above, above + 0x10_0000, rng.next_u64() & !(g - 1), top, below],
                    rng,
                ),
                false,
            )
        }
        RecordKind::AcrossRamEnd => {
            let (base, size) = env.ram[rng.below(env.ram.len() as u64) as usize];
            (base + size - g * (1 + rng.below(2)), false)
        }
    }
}

fn draw_apf(rng: &mut SplitMix64, env: &Env<'_>) -> ApfSession {
    let kind = pick(&RECORD_KINDS, rng);
    let (mut record, accepted) = draw_record(rng, env, kind);
    // A record that lies on RAM the guest relies on is not drawn (never expected on real use).
    let (avoid, avoid_size) = env.avoid;
    if record < avoid + avoid_size && record + apf::record_bytes(env.granule) > avoid && !accepted {
        record = 0;
    }
    let flags = if kind == RecordKind::BadFlags { apf::FLAGS_ALL + 1 + rng.below(1 << 16) * 2 } else { rng.below(2) };
    let unsupported = Expect::Is(smccc::NOT_SUPPORTED);
    let ok = if env.paged { Expect::Is(smccc::SUCCESS) } else { unsupported };
    let enable_expect = match (env.paged, accepted) {
        (false, _) => unsupported,
        (true, true) => Expect::Is(smccc::SUCCESS),
        (true, false) => Expect::Is(smccc::INVALID_PARAMETER),
    };
    let enable = Call::new(apf::ENABLE, [record, flags, rng.next_u64(), 0, 0], enable_expect, rng);
    let garbage_tail =
        (env.paged && accepted && rng.below(2) == 0).then(|| pick(&[u64::MAX, 65, 1 << 40, rng.next_u64()], rng));
    let second = if rng.below(2) == 0 {
        Call::new(apf::FEATURES, [0; 5], ok, rng)
    } else {
        let (again, _) = draw_record(rng, env, RecordKind::Aligned);
        Call::new(apf::ENABLE, [again, 0, 0, 0, 0], ok, rng)
    };
    ApfSession { kind, enable, garbage_tail, second, disable: Call::new(apf::DISABLE, [0; 5], ok, rng) }
}

/// Register offsets of the emulated devices: (offset, width in bytes, what a write may do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// Read-only, RAZ/WI, or a setting nothing depends on: any value.
    Any,
    /// Read-write, idempotent: only the value read back.
    Same,
    /// Changes state the guest relies on (enables, pending bits, the UART's data): never.
    Never,
}

const GICD_REGS: [(u64, u8, Write); 20] = [
    (0x0000, 4, Write::Never), // CTLR
    (0x0004, 4, Write::Any),   // TYPER
    (0x0008, 4, Write::Any),   // IIDR
    (0x000c, 4, Write::Any),   // TYPER2
    (0x0080, 4, Write::Same),  // IGROUPR0 (SGIs/PPIs: RAZ/WI with affinity routing)
    (0x0084, 4, Write::Same),  // IGROUPR1
    (0x0100, 4, Write::Never), // ISENABLER0
    (0x0104, 4, Write::Never), // ISENABLER1
    (0x0184, 4, Write::Never), // ICENABLER1
    (0x0204, 4, Write::Never), // ISPENDR1
    (0x0304, 4, Write::Never), // ISACTIVER1
    (0x0420, 4, Write::Same),  // IPRIORITYR8
    (0x0820, 4, Write::Any),   // ITARGETSR8 (RAZ/WI)
    (0x0c08, 4, Write::Same),  // ICFGR2
    (0x0d04, 4, Write::Any),   // IGRPMODR1 (RAZ/WI)
    (0x0e08, 4, Write::Any),   // NSACR2 (RAZ/WI)
    (0x0f00, 4, Write::Any),   // SGIR (WI)
    (0x0f10, 4, Write::Any),   // CPENDSGIR0 (RAZ/WI)
    (0x6100, 8, Write::Same),  // IROUTER32
    (0xffe8, 4, Write::Any),   // PIDR2
];

/// Redistributor: RD_base frame, then SGI_base at 0x10000.
const GICR_REGS: [(u64, u8, Write); 16] = [
    (0x0000, 4, Write::Never),  // CTLR
    (0x0004, 4, Write::Any),    // IIDR
    (0x0008, 8, Write::Any),    // TYPER (64-bit)
    (0x0014, 4, Write::Never),  // WAKER
    (0xffe8, 4, Write::Any),    // PIDR2
    (0x10080, 4, Write::Same),  // IGROUPR0
    (0x10100, 4, Write::Never), // ISENABLER0
    (0x10180, 4, Write::Never), // ICENABLER0
    (0x10200, 4, Write::Never), // ISPENDR0
    (0x10280, 4, Write::Never), // ICPENDR0
    (0x10300, 4, Write::Never), // ISACTIVER0
    (0x10400, 4, Write::Same),  // IPRIORITYR0
    (0x1041c, 4, Write::Same),  // IPRIORITYR7
    (0x10c04, 4, Write::Same),  // ICFGR1
    (0x10d00, 4, Write::Any),   // IGRPMODR0 (RAZ/WI)
    (0x10e00, 4, Write::Any),   // NSACR (RAZ/WI)
];

const UART_REGS: [(u64, u8, Write); 12] = [
    (0x000, 4, Write::Never), // DR: a write prints
    (0x004, 4, Write::Any),   // RSR/ECR
    (0x018, 4, Write::Any),   // FR (read-only)
    (0x024, 4, Write::Any),   // IBRD
    (0x02c, 4, Write::Any),   // LCR_H
    (0x030, 4, Write::Any),   // CR
    (0x038, 4, Write::Any),   // IMSC
    (0x03c, 4, Write::Any),   // RIS (read-only)
    (0x040, 4, Write::Any),   // MIS (read-only)
    (0x044, 4, Write::Any),   // ICR
    (0xfe0, 4, Write::Any),   // PeriphID0
    (0xffc, 4, Write::Any),   // PCellID3
];

/// Offsets with no register in this emulation (reserved or implementation defined): any
/// access may be answered RAZ/WI or aborted, writes of any value included.
fn reserved_offset(rng: &mut SplitMix64, device: Device) -> u64 {
    match device {
        Device::Distributor => pick(&[0x8000, 0xc000, 0xe000], rng) + 8 * rng.below(0x100),
        Device::Redistributor(_) => pick(&[0x0800, 0x4000, 0x11000, 0x1c000], rng) + 8 * rng.below(0x100),
        Device::Uart => 0x100 + 8 * rng.below(0x180),
    }
}

/// Registers whose parts the GIC architecture lets a guest read: (offset, width, part).
const GICD_PARTS: [(u64, u8, u8); 3] = [(0x0420, 4, 1), (0x0400, 4, 1), (0x6100, 8, 4)];
const GICR_PARTS: [(u64, u8, u8); 2] = [(0x0008, 8, 4), (0x10400, 4, 1)];

fn draw_parts(rng: &mut SplitMix64, env: &Env<'_>) -> MmioParts {
    let (addr, (offset, width, part)) = if rng.below(2) == 0 {
        (env.gicd.0, pick(&GICD_PARTS, rng))
    } else {
        let v = rng.below(env.mpidrs.len() as u64);
        (env.gicr.0 + v * env.gicr_stride, pick(&GICR_PARTS, rng))
    };
    MmioParts { addr: addr + offset, width, part }
}

fn draw_mmio(rng: &mut SplitMix64, env: &Env<'_>) -> Mmio {
    let vcpus = env.mpidrs.len();
    let device = match rng.below(3) {
        0 => Device::Distributor,
        1 => Device::Redistributor(rng.below(vcpus as u64) as usize),
        _ => Device::Uart,
    };
    let (base, region, regs): (u64, u64, &[(u64, u8, Write)]) = match device {
        Device::Distributor => (env.gicd.0, env.gicd.1, &GICD_REGS),
        Device::Redistributor(v) => (env.gicr.0 + v as u64 * env.gicr_stride, env.gicr_stride, &GICR_REGS),
        Device::Uart => (env.uart.0, env.uart.1, &UART_REGS),
    };
    let size = pick(&[1u8, 2, 4, 4, 8], rng);
    let (offset, width, write, known) = if rng.below(4) == 0 {
        (reserved_offset(rng, device), 4, Write::Any, false)
    } else {
        let (o, w, wr) = pick(regs, rng);
        // Any naturally aligned part of the register (or the register itself).
        let part = if size < w { rng.below(u64::from(w / size)) * u64::from(size) } else { 0 };
        (o + part, w, wr, true)
    };
    // Inside the device (an 8-byte access to its last 4-byte register moves back).
    let addr = base + offset.min(region - u64::from(size));
    let natural = addr % u64::from(size) == 0;
    let whole = known && size == width && natural;
    let form = match rng.below(10) {
        0..=5 => MmioForm::Load,
        6 | 7 => match write {
            Write::Any => MmioForm::Store(rng.next_u64()),
            Write::Same => MmioForm::StoreSame,
            Write::Never => MmioForm::Load,
        },
        _ => pick(
            &[
                MmioForm::LoadPair,
                MmioForm::StorePair,
                MmioForm::LoadPostIndex,
                MmioForm::StorePreIndex,
                MmioForm::LoadSimd,
            ],
            rng,
        ),
    };
    // A store without syndrome is refused by the hypervisor, but must still be harmless if it
    // were not: it goes only to reserved offsets (a pair covers 16 bytes).
    let form = match form {
        MmioForm::StorePair | MmioForm::StorePreIndex if known => MmioForm::LoadPair,
        f => f,
    };
    // Pairs and FP/SIMD accesses are 8-byte elements at 8-byte aligned addresses here; so are
    // 64-bit accesses.
    // A pair covers 16 bytes, inside the device.
    let (addr, size) = if form.without_syndrome() { ((addr & !7).min(base + region - 16), 8) } else { (addr, size) };
    let expect = if form.without_syndrome() {
        MmioExpect::Abort
    } else if whole && matches!(form, MmioForm::Load) {
        MmioExpect::Answered
    } else {
        MmioExpect::Either
    };
    Mmio { device, addr, size, form, expect }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncpf_contract::hypcall;
    use std::{vec, vec::Vec};

    #[test]
    fn power_functions_are_never_allowed() {
        for id in [
            psci::CPU_SUSPEND_32,
            psci::CPU_SUSPEND_64,
            psci::CPU_OFF,
            psci::CPU_ON_32,
            psci::CPU_ON_64,
            psci::SYSTEM_OFF,
            psci::SYSTEM_RESET,
            0x8400_0012,
            0xC400_0012,
            0x8400_000E,
            0x0400_0008,
            0x84FF_0008,
        ] {
            assert!(!is_allowed(id), "{id:#x}");
        }
        for id in [psci::PSCI_VERSION, psci::AFFINITY_INFO_64, psci::PSCI_FEATURES, hypcall::CALL_UID, 0xC400_0020] {
            assert!(is_allowed(id), "{id:#x}");
        }
        assert!(!is_allowed(0xC400_0021), "SDEI_EVENT_REGISTER");
    }

    #[test]
    fn drawn_calls_are_allowed_and_arguments_avoid_ram() {
        let mut rng = SplitMix64::new(3);
        let ram = [(0x4000_0000u64, 0x1000_0000u64)];
        for _ in 0..100_000 {
            assert!(is_allowed(draw_function_id(&mut rng) as u32));
            let a = draw_argument(&mut rng, &ram);
            assert!(!(0x4000_0000..0x5000_0000).contains(&a));
        }
    }

    const MPIDRS: [u64; 4] = [0, 1, 2, 3];
    const RAM: [(u64, u64); 1] = [(0x4000_0000, 0x0400_0000)];

    fn env(paged: bool, granule: u64) -> Env<'static> {
        Env {
            mpidrs: &MPIDRS,
            ram: &RAM,
            paged,
            granule,
            arena: (0x4100_0000, 0x1_0000),
            avoid: (0x43e0_0000, 0x2000),
            sdei_entry: 0x4020_1000,
            cpu_on_stub: 0x4020_2000,
            gicd: (0x0800_0000, 0x1_0000),
            gicr: (0x080a_0000, 0x8_0000),
            gicr_stride: 0x2_0000,
            uart: (0x0900_0000, 0x1000),
        }
    }

    fn in_range(addr: u64, bytes: u64, (base, size): (u64, u64)) -> bool {
        addr >= base && addr.checked_add(bytes).is_some_and(|end| end <= base + size)
    }

    /// Every call an action makes.
    fn calls(action: &Action) -> Vec<Call> {
        match action {
            Action::Fuzz(c) | Action::Psci(c) => vec![*c],
            Action::Sdei(cs) => cs.iter().flatten().copied().collect(),
            Action::Apf(s) => vec![s.enable, s.second, s.disable],
            Action::Mmio(_) | Action::MmioParts(_) | Action::HandlerFault(_) => vec![],
        }
    }

    #[test]
    fn aimed_actions_are_safe() {
        for (paged, granule) in [(true, 64), (true, 256), (true, 2048), (false, 64)] {
            let e = env(paged, granule);
            let mut rng = SplitMix64::new(granule);
            for _ in 0..50_000 {
                let action = draw_action(&mut rng, &e);
                for c in calls(&action) {
                    let f = c.function();
                    // Never a power-off, reset or CPU_OFF, whatever else is drawn.
                    assert!(![psci::CPU_OFF, psci::SYSTEM_OFF, psci::SYSTEM_RESET].contains(&f), "{action:?}");
                    assert!(
                        smccc::function_number(f) != 0x12 && smccc::function_number(f) != 0x0e
                            || smccc::owner(f) != 4
                            || f == psci::PSCI_FEATURES
                            || (0x20..=0x32).contains(&smccc::function_number(f))
                    );
                    if [psci::CPU_ON_32, psci::CPU_ON_64, psci::CPU_SUSPEND_32, psci::CPU_SUSPEND_64].contains(&f) {
                        // The entry point is the parking stub or one that cannot be entered.
                        let entry = c.args[1];
                        assert!(entry == e.cpu_on_stub || entry % 4 != 0 || !in_range(entry, 4, RAM[0]), "{c:?}");
                    }
                    if f == sdei::EVENT_REGISTER {
                        let entry = c.args[1];
                        assert!(entry == e.sdei_entry || entry % 4 != 0, "{c:?}");
                    }
                }
                match action {
                    Action::Apf(s) => {
                        let g = granule;
                        let bytes = apf::record_bytes(g);
                        let record = s.enable.args[0];
                        // A record the hypervisor must accept lies in the arena, aligned.
                        if s.enable.expect == Expect::Is(smccc::SUCCESS) {
                            assert!(paged && in_range(record, bytes, e.arena) && record % g == 0, "{s:?}");
                        }
                        if s.garbage_tail.is_some() {
                            assert_eq!(s.enable.expect, Expect::Is(smccc::SUCCESS));
                        }
                        // A record in RAM is in the arena or must be refused; never on the
                        // device tree.
                        if in_range(record, 1, RAM[0]) && !in_range(record, bytes, e.arena) {
                            assert_ne!(s.enable.expect, Expect::Is(smccc::SUCCESS), "{s:?}");
                            assert!(!in_range(record, 1, e.avoid));
                        }
                        if s.second.function() == apf::ENABLE {
                            assert!(in_range(s.second.args[0], bytes, e.arena) && s.second.args[0] % g == 0);
                        }
                        if !paged {
                            assert_eq!(s.enable.expect, Expect::Is(smccc::NOT_SUPPORTED));
                        }
                        match s.kind {
                            RecordKind::Straddling => assert_ne!(record / 4096, (record + bytes - 1) / 4096),
                            RecordKind::Aligned if bytes <= 4096 => {
                                assert_eq!(record / 4096, (record + bytes - 1) / 4096)
                            }
                            RecordKind::Unaligned => assert_ne!(record % g, 0),
                            _ => {}
                        }
                    }
                    Action::Mmio(m) => {
                        let bytes = if matches!(m.form, MmioForm::LoadPair | MmioForm::StorePair) {
                            16
                        } else {
                            u64::from(m.size)
                        };
                        let region = match m.device {
                            Device::Distributor => e.gicd,
                            Device::Redistributor(v) => (e.gicr.0 + v as u64 * e.gicr_stride, e.gicr_stride),
                            Device::Uart => e.uart,
                        };
                        assert!(in_range(m.addr, bytes, region), "{m:?}");
                        let offset = m.addr - region.0;
                        let writes = !matches!(
                            m.form,
                            MmioForm::Load | MmioForm::LoadPair | MmioForm::LoadPostIndex | MmioForm::LoadSimd
                        );
                        if writes {
                            let never = match m.device {
                                Device::Distributor => &GICD_REGS[..],
                                Device::Redistributor(_) => &GICR_REGS[..],
                                Device::Uart => &UART_REGS[..],
                            };
                            for &(o, w, wr) in never.iter().filter(|r| r.2 == Write::Never) {
                                let overlaps = offset < o + u64::from(w) && o < offset + bytes;
                                assert!(!overlaps, "{m:?} writes {o:#x} ({wr:?})");
                            }
                            // ISV = 0 stores go to reserved offsets only.
                            if m.form.without_syndrome() {
                                assert!(
                                    never.iter().all(|r| !(offset < r.0 + u64::from(r.1) && r.0 < offset + bytes)),
                                    "{m:?}"
                                );
                            }
                        }
                        if m.form.without_syndrome() {
                            assert_eq!((m.expect, m.size, m.addr % 8), (MmioExpect::Abort, 8, 0));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn every_kind_and_form_is_drawn() {
        let e = env(true, 64);
        let mut rng = SplitMix64::new(9);
        let mut kinds = std::collections::BTreeSet::new();
        let (mut records, mut forms, mut sizes, mut devices) = (vec![], vec![], vec![], vec![]);
        let (mut functions, mut faults, mut expected) = (std::collections::BTreeSet::new(), vec![], 0);
        let mut parts = vec![];
        for _ in 0..20_000 {
            let action = draw_action(&mut rng, &e);
            kinds.insert(action.kind().name());
            for c in calls(&action) {
                functions.insert(c.function() & !smccc::CONV_64);
                expected += usize::from(c.expect != Expect::Any);
            }
            match action {
                Action::Apf(s) => records.push(s.kind),
                Action::Mmio(m) => {
                    forms.push(core::mem::discriminant(&m.form));
                    sizes.push(m.size);
                    devices.push(core::mem::discriminant(&m.device));
                }
                Action::HandlerFault(f) => faults.push(f),
                Action::MmioParts(p) => parts.push(p),
                _ => {}
            }
        }
        assert_eq!(kinds.len(), KINDS.len());
        assert!(parts.iter().any(|p| p.part == 1) && parts.iter().any(|p| p.width == 8));
        assert!(parts.iter().all(|p| p.addr % u64::from(p.width) == 0 && p.width > p.part));
        for k in RECORD_KINDS {
            assert!(records.contains(&k), "{k:?}");
        }
        for f in [
            MmioForm::Load,
            MmioForm::Store(0),
            MmioForm::StoreSame,
            MmioForm::LoadPair,
            MmioForm::StorePair,
            MmioForm::LoadPostIndex,
            MmioForm::StorePreIndex,
            MmioForm::LoadSimd,
        ] {
            assert!(forms.contains(&core::mem::discriminant(&f)), "{f:?}");
        }
        for s in [1, 2, 4, 8] {
            assert!(sizes.contains(&s));
        }
        assert!(
            devices.contains(&core::mem::discriminant(&Device::Uart))
                && devices.contains(&core::mem::discriminant(&Device::Distributor))
                && devices.contains(&core::mem::discriminant(&Device::Redistributor(0)))
        );
        assert!(faults.contains(&HandlerFault::SdeiHandler) && faults.contains(&HandlerFault::ExceptionPath));
        // PSCI (all but the power calls), SDEI (every function), APF.
        for f in [
            psci::PSCI_VERSION,
            psci::CPU_SUSPEND_32,
            psci::CPU_ON_32,
            psci::AFFINITY_INFO_32,
            psci::MIGRATE_INFO_TYPE,
            psci::PSCI_FEATURES,
            apf::FEATURES & !smccc::CONV_64,
            apf::ENABLE & !smccc::CONV_64,
            apf::DISABLE & !smccc::CONV_64,
        ] {
            assert!(functions.contains(&f), "{f:#x}");
        }
        for f in sdei::VERSION..=sdei::SHARED_RESET {
            assert!(functions.contains(&(f & !smccc::CONV_64)), "{f:#x}");
        }
        // Most aimed calls know their answer.
        assert!(expected > 10_000, "{expected}");
    }

    #[test]
    fn in_handler_calls_never_complete() {
        let mut functions = std::collections::BTreeSet::new();
        for round in 0..64 {
            for c in in_handler_calls(round, 0x4020_1000).iter().flatten() {
                functions.insert(c.function());
                assert_ne!(c.function(), sdei::EVENT_COMPLETE);
                if c.function() == sdei::EVENT_COMPLETE_AND_RESUME {
                    assert_ne!(c.args[0] % 4, 0, "refused, never taken");
                    assert_eq!(c.expect, Expect::Is(sdei::DENIED));
                }
                assert_ne!(c.function(), sdei::EVENT_SIGNAL, "a signal from the handler would re-enter it");
            }
        }
        assert!(functions.len() >= 9, "{functions:x?}");
    }

    #[test]
    fn expectations() {
        assert!(Expect::Any.accepts(-7));
        assert!(Expect::Either(-4, -9).accepts(-9) && !Expect::Either(-4, -9).accepts(0));
        assert!(Expect::NonNegative.accepts(0) && !Expect::NonNegative.accepts(-1));
        let mut rng = SplitMix64::new(1);
        let c32 = Call::new(psci::AFFINITY_INFO_32, [0; 5], Expect::Any, &mut rng);
        assert_eq!(c32.answer(0xffff_fffe), -2);
        assert_eq!(c32.answer(0x1234_5678_ffff_fffe), -2, "W0 only");
        let c64 = Call::new(psci::AFFINITY_INFO_64, [0; 5], Expect::Any, &mut rng);
        assert_eq!(c64.answer(0xffff_fffe), 0xffff_fffe);
        // Targets: the known ones are known under both conventions.
        let e = env(true, 64);
        for _ in 0..1000 {
            if let Action::Psci(c) = draw_action(&mut rng, &e) {
                if c.function() == psci::AFFINITY_INFO_64 && c.args[1] == 0 && c.args[0] < 4 {
                    assert_eq!(c.expect, Expect::Is(psci::AFFINITY_ON));
                }
            }
        }
    }
}
