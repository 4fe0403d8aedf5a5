//! `hostile`: the guest misbehaves on purpose and must survive.
//!
//! One pinned task per CPU, concurrently:
//! - makes `calls=N` (default 10,000, over all CPUs) hostile actions drawn by
//!   `asyncpf_guest::hostile_policy::draw_action`: blind SMCCC calls through `hvc #0` and
//!   `smc #0` (never one that changes the power state), PSCI calls that are safe by
//!   construction, SDEI state changes, APF sessions with hostile records and ring tails, MMIO of
//!   every size and form to the emulated GIC and PL011, and faults inside the guest's own SDEI
//!   handler and exception path; answers are counted by kind and code, and checked against
//!   what the contract says where the guest can know it (`unexpected`);
//! - reads addresses in the device window that the device tree does not describe, counting
//!   the synchronous external aborts;
//! - reads and writes implementation-defined system registers (UNDEFINED) and PMU registers
//!   (the guest's own since the PMU is given to it: read and written back), counting UNDEFINEDs.
//!
//! With `ws_mib=M` the abusers, and two more tasks per CPU, also rewrite and verify a working
//! set of M MiB meanwhile (with `--resident-mib` smaller than it, the hostile calls run while
//! pages are faulted in, asynchronously with `apf=on`), and every page is verified at the end:
//! the result's `check` (`words_checked`, `mismatches`).
//!
//! Every faulting instruction runs as a probe (`crate::probe`). Then the vendor hypervisor
//! service's CALL_UID is checked, and a few ordinary EL0 and EL1 tasks must still run to the
//! end. What the hypervisor answered is for the runner to judge: the scenario reports raw
//! counts and is `ok` when the guest survived.

use crate::dt::Range;
use crate::exceptions::ec;
use crate::guard::Guard;
use crate::psci::Conduit;
use crate::sched::{self, SpawnOptions, TaskHandle};
use crate::sync::{BootOnce, SpinLock};
use crate::{apf, arch, mm, percpu, probe, report, scenarios, syscall, timer};
use asyncpf_contract::{apf as apf_abi, hypcall, sdei};
use asyncpf_guest::hostile_policy::{
    self, Action, ApfSession, Call, Env, HandlerFault, Kind, Mmio, MmioExpect, MmioForm, MmioParts,
};
use asyncpf_guest::memcheck::{self, Generation, Layout, Span, MIB, PAGE_SIZE, WORD_SIZE};
use asyncpf_guest::rng::SplitMix64;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Hostile actions over all CPUs, unless `calls=N` says otherwise.
const DEFAULT_CALLS: u64 = 10_000;
/// Reads of undescribed addresses over all CPUs.
const TOTAL_HOLE_READS: usize = 128;
/// Rounds over `SYSREG_PROBES` per CPU (each round = every probe once).
const TOTAL_SYSREG_ROUNDS: usize = 20;
/// Most distinct holes probed.
const MAX_HOLES: usize = 4;
/// Candidate holes are this far apart inside each device gigabyte.
const HOLE_STRIDE: u64 = 16 << 20;
/// Ordinary tasks run afterwards, per kind.
const AFTERMATH_TASKS: usize = 2;
/// With a working set: extra tasks per CPU that only rewrite and verify it.
const WORKERS_PER_CPU: usize = 2;
/// An abuser touches its working-set slice (one page rewritten or verified) once per this many actions.
const TOUCH_EVERY: u64 = 4;
/// Unexpected answers described in the result (all are counted).
const UNEXPECTED_LOG: usize = 8;
/// The redistributor frames of one vCPU (RD_base + SGI_base).
const GICR_STRIDE: u64 = 0x2_0000;

/// Counters of one kind of action, summed over CPUs.
struct KindStats {
    /// Actions of this kind.
    made: AtomicU64,
    /// SMCCC calls they made.
    calls: AtomicU64,
    /// Answers by code: index 0 SUCCESS, 1 a positive value, 2 + n the error -(n + 1) for
    /// -1..=-10, 12 anything else.
    answers: [AtomicU64; ANSWER_SLOTS],
    /// Answers that are not what the contract says.
    unexpected: AtomicU64,
    /// Accesses (MMIO, handler faults) that completed without an exception.
    completed: AtomicU64,
    /// Synchronous external aborts caught (the hypervisor's answer to an access).
    aborts: AtomicU64,
    /// Alignment faults caught (raised by the CPU at EL1, not by the hypervisor).
    alignment_faults: AtomicU64,
    undefs: AtomicU64,
    other_exceptions: AtomicU64,
}

const ANSWER_SLOTS: usize = 13;
const ANSWER_NAMES: [&str; ANSWER_SLOTS] =
    ["0", "value", "-1", "-2", "-3", "-4", "-5", "-6", "-7", "-8", "-9", "-10", "other"];

impl KindStats {
    const fn new() -> Self {
        Self {
            made: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            answers: [const { AtomicU64::new(0) }; ANSWER_SLOTS],
            unexpected: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            alignment_faults: AtomicU64::new(0),
            undefs: AtomicU64::new(0),
            other_exceptions: AtomicU64::new(0),
        }
    }

    fn answer(&self, answer: i64) {
        let slot = match answer {
            0 => 0,
            1.. => 1,
            -10..=-1 => (1 - answer) as usize,
            _ => 12,
        };
        bump(&self.answers[slot]);
    }

    /// A caught exception, by its ESR (None: the access completed).
    fn exception(&self, esr: Option<u64>) {
        match esr {
            None => bump(&self.completed),
            Some(esr) => bump(match (esr >> 26, esr & DFSC_MASK) {
                (ec::DATA_ABORT_SAME_EL | INSTRUCTION_ABORT_SAME_EL, DFSC_EXTERNAL) => &self.aborts,
                (ec::DATA_ABORT_SAME_EL, DFSC_ALIGNMENT) => &self.alignment_faults,
                (ec::UNKNOWN, _) => &self.undefs,
                _ => &self.other_exceptions,
            }),
        }
    }
}

/// ESR_EL1.ISS fault status codes.
const DFSC_MASK: u64 = 0x3f;
/// ESR_EL1.EC: an instruction abort taken without a change of EL.
const INSTRUCTION_ABORT_SAME_EL: u64 = 0x21;
const DFSC_EXTERNAL: u64 = 0x10;
const DFSC_ALIGNMENT: u64 = 0x21;

/// Scenario counters, summed over CPUs.
struct Stats {
    kinds: [KindStats; hostile_policy::KINDS.len()],
    hvc_calls: AtomicU64,
    smc_calls: AtomicU64,
    hole_reads: AtomicU64,
    aborts_caught: AtomicU64,
    /// Hole reads that returned a value instead of aborting.
    hole_reads_answered: AtomicU64,
    /// Hole reads that raised something other than a data abort.
    hole_other_exceptions: AtomicU64,
    sysreg_accesses: AtomicU64,
    undefs_caught: AtomicU64,
    sysreg_other_exceptions: AtomicU64,
    /// APF sessions: garbage ring tails written, and the CPU's own record re-enabled after.
    garbage_tails: AtomicU64,
    apf_restored: AtomicU64,
    apf_restore_failures: AtomicU64,
    /// Accepted APF_ENABLEs that took at least SLOW_ENABLE_NS (their record page was paged in),
    /// and the slowest.
    slow_enables: AtomicU64,
    slowest_enable_ns: AtomicU64,
    /// Tasks woken because a hostile session dropped their tokens.
    dropped_wakes: AtomicU64,
    /// Faults inside the SDEI handler: handler runs with the hook, signals that did not run it.
    sdei_handler_runs: AtomicU64,
    sdei_handler_missed: AtomicU64,
    /// Nested faults taken in the exception path.
    nested_faults: AtomicU64,
    /// Working-set pages touched by the abusers.
    touches: AtomicU64,
}

static STATS: Stats = Stats {
    kinds: [const { KindStats::new() }; hostile_policy::KINDS.len()],
    hvc_calls: AtomicU64::new(0),
    smc_calls: AtomicU64::new(0),
    hole_reads: AtomicU64::new(0),
    aborts_caught: AtomicU64::new(0),
    hole_reads_answered: AtomicU64::new(0),
    hole_other_exceptions: AtomicU64::new(0),
    sysreg_accesses: AtomicU64::new(0),
    undefs_caught: AtomicU64::new(0),
    sysreg_other_exceptions: AtomicU64::new(0),
    garbage_tails: AtomicU64::new(0),
    apf_restored: AtomicU64::new(0),
    apf_restore_failures: AtomicU64::new(0),
    dropped_wakes: AtomicU64::new(0),
    slow_enables: AtomicU64::new(0),
    slowest_enable_ns: AtomicU64::new(0),
    sdei_handler_runs: AtomicU64::new(0),
    sdei_handler_missed: AtomicU64::new(0),
    nested_faults: AtomicU64::new(0),
    touches: AtomicU64::new(0),
};

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn kind_stats(kind: Kind) -> &'static KindStats {
    &STATS.kinds[hostile_policy::KINDS.iter().position(|&k| k == kind).expect("every kind is listed")]
}

/// The first unexpected answers, described.
#[derive(Clone, Copy)]
struct Unexpected {
    kind: Kind,
    x0: u64,
    args: [u64; 2],
    answer: i64,
}

static UNEXPECTED: SpinLock<[Option<Unexpected>; UNEXPECTED_LOG]> = SpinLock::new([None; UNEXPECTED_LOG]);

/// An SMCCC call with x0..x7 set; returns x0..x3. x0..x17 may be clobbered (SMCCC 1.0 rules,
/// the most pessimistic).
fn raw_call(conduit: Conduit, regs: [u64; 8]) -> [u64; 4] {
    let [mut r0, mut r1, mut r2, mut r3, r4, r5, r6, r7] = regs;
    macro_rules! call {
        ($insn:literal) => {
            // SAFETY: the call was drawn by `hostile_policy`: it cannot change the power state,
            // registers only the guest's own SDEI handler, resumes nowhere (COMPLETE_AND_RESUME
            // outside a handler is DENIED), and points the hypervisor only at RAM this scenario
            // owns (the record arena) or at no RAM at all, so the hypervisor cannot write over
            // the running guest. Every possibly clobbered register is declared. If the
            // instruction is UNDEFINED, the armed probe skips it.
            unsafe {
                asm!($insn,
                    inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                    inout("x4") r4 => _, inout("x5") r5 => _, inout("x6") r6 => _, inout("x7") r7 => _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                    out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                    options(nostack))
            }
        };
    }
    match conduit {
        Conduit::Hvc => call!("hvc #0"),
        Conduit::Smc => call!("smc #0"),
    }
    [r0, r1, r2, r3]
}

/// Makes a drawn call as a probe and counts it under `kind`; returns the answer (as the
/// call's convention reads it), or None if the call raised an exception.
fn make_call(kind: Kind, call: &Call) -> Option<i64> {
    let stats = kind_stats(kind);
    let conduit = if call.smc { Conduit::Smc } else { Conduit::Hvc };
    let [a1, a2, a3, a4, a5] = call.args;
    let mut x0 = 0;
    let caught = probe::run_esr(|| x0 = raw_call(conduit, [call.x0, a1, a2, a3, a4, a5, 0, 0])[0]);
    bump(&stats.calls);
    bump(if call.smc { &STATS.smc_calls } else { &STATS.hvc_calls });
    if caught.is_some() {
        stats.exception(caught);
        return None;
    }
    let answer = call.answer(x0);
    stats.answer(answer);
    if !call.expect.accepts(answer) {
        bump(&stats.unexpected);
        let mut log = UNEXPECTED.lock();
        if let Some(slot) = log.iter_mut().find(|s| s.is_none()) {
            *slot = Some(Unexpected { kind, x0: call.x0, args: [a1, a2], answer });
        }
    }
    Some(answer)
}

/// A plain SDEI/APF call through the platform conduit, not counted (restoring state).
fn quiet_call(function: u32, args: [u64; 5]) -> i64 {
    apf::call(function, args)[0] as i64
}

/// What every abuser needs, set before they start.
struct Setup {
    seed: u64,
    calls_per_cpu: u64,
    /// APF answered (guest RAM is paged).
    paged: bool,
    granule: u64,
    /// Every CPU enabled APF for the scenario (`apf=on`): hostile sessions must restore it.
    apf_active: bool,
    holes: [u64; MAX_HOLES],
    n_holes: usize,
    layout: Option<Layout>,
    /// RAM for hostile APF records: (base, bytes).
    arena: (u64, u64),
}

static SETUP: BootOnce<Setup> = BootOnce::new();

fn setup() -> &'static Setup {
    SETUP.get().expect("set before the tasks start")
}

/// RAM the scenario owns for hostile APF records: the top of the free RAM, never touched by
/// the guest itself, so that under paging a record's page is usually not resident when
/// APF_ENABLE pins it (never touched yet: zero-filled; used by an earlier record and evicted
/// since: read back from the disk).
const ARENA_BYTES: u64 = 4 << 20;
/// An APF_ENABLE that took this long waited for its record's page (the default backing latency).
const SLOW_ENABLE_NS: u64 = 50_000;

// A CPU_ON entry point that parks a CPU for good. Every CPU_ON the scenario makes targets a CPU
// that is on (or none), so it is never entered; if the hypervisor did start an online CPU
// there, that CPU would stop instead of running off into random code.
global_asm!(
    r#"
.section .text.hostile, "ax"
.balign 4
.global hostile_cpu_on_stub
hostile_cpu_on_stub:
    wfe
    b hostile_cpu_on_stub
"#
);

unsafe extern "C" {
    fn hostile_cpu_on_stub();
}

/// The machine as the policy sees it, for this CPU.
fn with_env<R>(f: impl FnOnce(&Env<'_>) -> R) -> R {
    let platform = scenarios::platform();
    let mut ram = [(0u64, 0u64); crate::dt::MAX_RAM_RANGES];
    for (slot, r) in ram.iter_mut().zip(platform.ram()) {
        *slot = (r.base, r.size);
    }
    let s = setup();
    let env = Env {
        mpidrs: platform.cpus(),
        ram: &ram[..platform.ram().len()],
        paged: s.paged,
        granule: s.granule,
        arena: s.arena,
        avoid: (platform.dtb.base, platform.dtb.size),
        sdei_entry: apf::sdei_entry_address(),
        cpu_on_stub: hostile_cpu_on_stub as *const () as u64,
        gicd: (platform.gicd.base, platform.gicd.size),
        gicr: (platform.gicr.base, platform.gicr.size),
        gicr_stride: GICR_STRIDE,
        uart: (platform.uart.base, platform.uart.size),
    };
    f(&env)
}

/// After SDEI state changes: if the scenario runs with APF, this CPU's page_not_present event is
/// registered (to the real handler), enabled, and the CPU unmasked again.
fn restore_sdei() {
    if !setup().apf_active {
        return;
    }
    let event = u64::from(sdei::EVENT_PAGE_NOT_PRESENT);
    quiet_call(sdei::EVENT_REGISTER, [event, apf::sdei_entry_address(), 0, 0, 0]);
    quiet_call(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0]);
    quiet_call(sdei::PE_UNMASK, [0; 5]);
}

/// An APF session with a hostile record, IRQs masked on this CPU (so no page_not_present is
/// delivered to it meanwhile), then this CPU's own record again. The new session drops the
/// tokens of the old one (docs/abi.md §8.2), so the tasks waiting on them are woken to retry
/// their access (only those: a spurious wake of another CPU's waiter would leave its later
/// page_ready with no one to wake).
fn apf_session(session: &ApfSession) {
    let irq = arch::irq_save_disable();
    let start = timer::now_ns();
    let answer = make_call(Kind::Apf, &session.enable);
    if answer == Some(0) {
        let took = timer::now_ns() - start;
        STATS.slowest_enable_ns.fetch_max(took, Ordering::Relaxed);
        if took >= SLOW_ENABLE_NS {
            bump(&STATS.slow_enables);
        }
    }
    if let (Some(0), Some(tail)) = (answer, session.garbage_tail) {
        let record = session.enable.args[0];
        let at = (record + apf_abi::offset_ring_tail(setup().granule)) as *mut u64;
        // SAFETY: the record lies in the arena (the policy accepts records only there), free RAM
        // that holds no Rust data; a volatile aligned u64 write is what the guest's ring consumer does.
        unsafe { core::ptr::write_volatile(at, tail) };
        bump(&STATS.garbage_tails);
    }
    make_call(Kind::Apf, &session.second);
    make_call(Kind::Apf, &session.disable);
    if setup().apf_active {
        let cpu = arch::cpu_index();
        match apf::enable(apf::record_address(cpu), 0) {
            0 => bump(&STATS.apf_restored),
            _ => bump(&STATS.apf_restore_failures),
        }
        STATS.dropped_wakes.fetch_add(apf::wake_dropped() as u64, Ordering::Relaxed);
    }
    arch::irq_restore(irq);
}

fn sdei_calls(calls: &[Option<Call>; 4]) {
    let irq = arch::irq_save_disable();
    for call in calls.iter().flatten() {
        make_call(Kind::Sdei, call);
    }
    restore_sdei();
    arch::irq_restore(irq);
}

/// Runs inside the SDEI handler (event 0, on a CPU that armed the hook): faults of every kind,
/// each caught inside the handler.
fn inside_sdei_handler() {
    let stats = kind_stats(Kind::HandlerFault);
    bump(&STATS.sdei_handler_runs);
    // SDEI calls in the running state (none completes the handler).
    let round = HOOK_ROUNDS.fetch_add(1, Ordering::Relaxed);
    for call in hostile_policy::in_handler_calls(round, apf::sdei_entry_address()).iter().flatten() {
        make_call(Kind::Sdei, call);
    }
    let s = setup();
    if s.n_holes > 0 {
        let hole = s.holes[0];
        stats.exception(probe::run_esr(|| {
            // SAFETY: a read of an undescribed device-window address: a value or an external
            // abort, which the armed probe catches. Nothing is written.
            unsafe { asm!("ldr {tmp:w}, [{addr}]", addr = in(reg) hole, tmp = out(reg) _, options(nostack, readonly)) };
        }));
    }
    stats.exception(probe::run_esr(|| {
        // SAFETY: reading an implementation-defined register has no memory effects; it is
        // UNDEFINED here (HCR_EL2.TIDCP) and the armed probe skips it.
        unsafe { asm!("mrs {tmp}, S3_0_C15_C0_0", tmp = out(reg) _, options(nostack)) };
    }));
    let gicd = scenarios::platform().gicd.base;
    stats.exception(probe::run_esr(|| {
        // SAFETY: a load pair (no syndrome) from the distributor's first registers: reads have
        // no effect; the hypervisor answers it with an external abort, which the probe catches.
        unsafe { asm!("ldp {a}, {b}, [{addr}]", addr = in(reg) gicd, a = out(reg) _, b = out(reg) _, options(nostack, readonly)) };
    }));
}

fn handler_fault(fault: HandlerFault) {
    let stats = kind_stats(Kind::HandlerFault);
    match fault {
        HandlerFault::SdeiHandler => {
            // Event 0 registered to the guest's handler, enabled, this CPU unmasked, then
            // signalled to itself: delivered when the SIGNAL call returns, inside this window
            // (IRQs masked: the handler interrupts this code and nothing else).
            let irq = arch::irq_save_disable();
            let cpu = arch::cpu_index();
            let before = STATS.sdei_handler_runs.load(Ordering::Relaxed);
            apf::EVENT0_HOOK_ARMED[cpu].store(true, Ordering::Relaxed);
            let event = u64::from(sdei::EVENT_SOFTWARE_SIGNALLED);
            quiet_call(sdei::EVENT_REGISTER, [event, apf::sdei_entry_address(), 0, 0, 0]);
            quiet_call(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0]);
            quiet_call(sdei::PE_UNMASK, [0; 5]);
            let answer = quiet_call(sdei::EVENT_SIGNAL, [event, percpu::this().mpidr(), 0, 0, 0]);
            apf::EVENT0_HOOK_ARMED[cpu].store(false, Ordering::Relaxed);
            bump(&stats.calls);
            stats.answer(answer);
            if STATS.sdei_handler_runs.load(Ordering::Relaxed) == before {
                bump(&STATS.sdei_handler_missed);
            }
            restore_sdei();
            arch::irq_restore(irq);
        }
        HandlerFault::ExceptionPath => {
            let s = setup();
            let hole = if s.n_holes > 0 { s.holes[0] } else { scenarios::platform().gicd.base + 0x8 };
            let (outer, nested) = probe::run_nested(hole, || {
                // SAFETY: reading an implementation-defined register has no memory effects; it is
                // UNDEFINED here (HCR_EL2.TIDCP) and the armed probe skips it (its handler takes
                // the nested fault).
                unsafe { asm!("mrs {tmp}, S3_0_C15_C0_0", tmp = out(reg) _, options(nostack)) };
            });
            stats.exception(outer);
            if outer.is_some() {
                bump(&STATS.nested_faults);
                stats.exception(nested);
            }
        }
    }
}

/// Rounds of SDEI calls made inside the handler (all CPUs).
static HOOK_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// One MMIO access of the drawn form; the caught exception's ESR, if any.
fn mmio_access(m: &Mmio) -> Option<u64> {
    let addr = m.addr;
    macro_rules! access {
        ($($body:tt)*) => {
            // SAFETY: `addr` is inside an emulated device's registers, mapped as device memory
            // (the policy keeps accesses inside the device). Loads have no effect on the
            // emulated devices; stores go only where the policy allows any value (read-only,
            // RAZ/WI, reserved and UART configuration registers) or write back the value just
            // read. Accesses without syndrome are refused by the hypervisor. An abort or
            // alignment fault is caught and skipped by the armed probe; writeback forms
            // declare their base register.
            probe::run_esr(|| unsafe { asm!($($body)*) })
        };
    }
    match (m.form, m.size) {
        (MmioForm::Load, 1) => access!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack)),
        (MmioForm::Load, 2) => access!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack)),
        (MmioForm::Load, 4) => access!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack)),
        (MmioForm::Load, _) => access!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack)),
        (MmioForm::Store(value), size) => store(addr, size, value),
        (MmioForm::StoreSame, size) => {
            let mut value = 0u64;
            let read = match size {
                1 => access!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)),
                2 => access!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)),
                4 => access!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)),
                _ => access!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)),
            };
            if read.is_some() {
                return read;
            }
            store(addr, size, value)
        }
        (MmioForm::LoadPair, _) => {
            access!("ldp {x}, {y}, [{a}]", a = in(reg) addr, x = out(reg) _, y = out(reg) _, options(nostack))
        }
        (MmioForm::StorePair, _) => {
            let v = addr;
            access!("stp {v}, {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack))
        }
        (MmioForm::LoadPostIndex, _) => {
            let mut base = addr;
            access!("ldr {v}, [{a}], #8", a = inout(reg) base, v = out(reg) _, options(nostack))
        }
        (MmioForm::StorePreIndex, _) => {
            let mut base = addr;
            let v = addr;
            access!("str {v}, [{a}, #0]!", a = inout(reg) base, v = in(reg) v, options(nostack))
        }
        (MmioForm::LoadSimd, _) => access!("ldr d0, [{a}]", a = in(reg) addr, out("v0") _, options(nostack)),
    }
}

fn store(addr: u64, size: u8, value: u64) -> Option<u64> {
    macro_rules! access {
        ($($body:tt)*) => {
            // SAFETY: as in `mmio_access`: a store the policy allows at this device address.
            probe::run_esr(|| unsafe { asm!($($body)*) })
        };
    }
    match size {
        1 => access!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
        2 => access!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
        4 => access!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
        _ => access!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
    }
}

fn mmio(m: &Mmio) {
    let stats = kind_stats(Kind::Mmio);
    let caught = mmio_access(m);
    stats.exception(caught);
    let aborted = caught.is_some_and(|esr| esr >> 26 == ec::DATA_ABORT_SAME_EL && esr & DFSC_MASK == DFSC_EXTERNAL);
    let ok = match m.expect {
        MmioExpect::Answered => caught.is_none(),
        MmioExpect::Abort => aborted,
        MmioExpect::Either => {
            caught.is_none() || aborted || caught.is_some_and(|esr| esr & DFSC_MASK == DFSC_ALIGNMENT)
        }
    };
    if !ok {
        bump(&stats.unexpected);
        let mut log = UNEXPECTED.lock();
        if let Some(slot) = log.iter_mut().find(|s| s.is_none()) {
            let answer = caught.map_or(0, |esr| esr as i64);
            *slot =
                Some(Unexpected { kind: Kind::Mmio, x0: m.addr, args: [u64::from(m.size), form_code(m.form)], answer });
        }
    }
}

/// Reads `size` bytes at `addr` (a device register) as a probe: the value, or the ESR.
fn load(addr: u64, size: u8) -> Result<u64, u64> {
    let mut value = 0u64;
    let caught = match size {
        1 => probe::run_esr(|| {
            // SAFETY: a read of a GIC register (the policy's table), mapped as device memory;
            // reads have no effect; an abort is caught and skipped by the armed probe.
            unsafe { asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)) }
        }),
        4 => probe::run_esr(|| {
            // SAFETY: as above.
            unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)) }
        }),
        _ => probe::run_esr(|| {
            // SAFETY: as above.
            unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack)) }
        }),
    };
    caught.map_or(Ok(value), Err)
}

/// A register read whole and by parts: every part must be answered and match the whole.
fn mmio_parts(p: &MmioParts) {
    let stats = kind_stats(Kind::Mmio);
    let whole = load(p.addr, p.width);
    stats.exception(whole.err());
    let mut wrong = whole.is_err();
    for i in 0..p.width / p.part {
        let part = load(p.addr + u64::from(i * p.part), p.part);
        stats.exception(part.err());
        let bits = 8 * u32::from(p.part);
        let expected = whole.map(|w| (w >> (8 * u32::from(i * p.part))) & ((1u64 << bits) - 1));
        wrong |= part.is_err() || part != expected;
    }
    if wrong {
        bump(&stats.unexpected);
        let mut log = UNEXPECTED.lock();
        if let Some(slot) = log.iter_mut().find(|s| s.is_none()) {
            let answer = whole.unwrap_or_else(|esr| esr) as i64;
            *slot = Some(Unexpected {
                kind: Kind::Mmio,
                x0: p.addr,
                args: [u64::from(p.width), u64::from(p.part)],
                answer,
            });
        }
    }
}

/// An MMIO form as a number, for the unexpected-answer log.
fn form_code(form: MmioForm) -> u64 {
    match form {
        MmioForm::Load => 0,
        MmioForm::Store(_) => 1,
        MmioForm::StoreSame => 2,
        MmioForm::LoadPair => 3,
        MmioForm::StorePair => 4,
        MmioForm::LoadPostIndex => 5,
        MmioForm::StorePreIndex => 6,
        MmioForm::LoadSimd => 7,
    }
}

fn act(action: &Action) {
    bump(&kind_stats(action.kind()).made);
    match action {
        Action::Fuzz(call) => {
            make_call(Kind::Fuzz, call);
        }
        Action::Psci(call) => {
            make_call(Kind::Psci, call);
        }
        Action::Sdei(calls) => sdei_calls(calls),
        Action::Apf(session) => apf_session(session),
        Action::Mmio(m) => mmio(m),
        Action::MmioParts(p) => mmio_parts(p),
        Action::HandlerFault(fault) => handler_fault(*fault),
    }
}

/// One task's share of the working set: its pages' generations, rewritten and verified.
struct Slice {
    seed: u64,
    layout: Layout,
    first: u64,
    count: u64,
    generations: &'static mut [Generation],
    /// The slice's addresses: a page access arms a guard for them (only then: the hostile
    /// task's own aborts elsewhere must reach its probes).
    range: Span,
    words_checked: u64,
    mismatches: u64,
    aborts: u64,
}

/// Working-set totals.
static WS_WORDS: AtomicU64 = AtomicU64::new(0);
static WS_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static WS_ABORTS: AtomicU64 = AtomicU64::new(0);
static WS_OPS: AtomicU64 = AtomicU64::new(0);
/// Set when every abuser is done: the workers stop.
static STOP: AtomicBool = AtomicBool::new(false);

impl Slice {
    /// Task slot `task`'s slice; only one task uses a slice at a time (joined in between).
    fn new(task: u64) -> Option<Slice> {
        let s = setup();
        let layout = s.layout?;
        let slice = layout.slice(task);
        let table = (layout.generations.start + slice.first) as *mut Generation;
        // SAFETY: the generation table lies in free RAM (no image, stack or device tree), mapped
        // normal read-write, one valid `Generation` per byte; slices are disjoint and used by one
        // task at a time.
        let generations = unsafe { core::slice::from_raw_parts_mut(table, slice.count as usize) };
        let range = Span { start: layout.page_addr(slice.first), end: layout.page_addr(slice.first + slice.count) };
        Some(Slice {
            seed: s.seed,
            layout,
            first: slice.first,
            count: slice.count,
            generations,
            range,
            words_checked: 0,
            mismatches: 0,
            aborts: 0,
        })
    }

    fn page(&self, index: u64) -> u64 {
        self.layout.page_addr(self.first + index)
    }

    fn write(&mut self, index: u64, generation: Generation) {
        let base = self.page(index);
        let guard = Guard::arm(self.range);
        for addr in (base..base + PAGE_SIZE).step_by(WORD_SIZE as usize) {
            if guard.store(addr, memcheck::pattern(self.seed, addr, generation)).is_err() {
                self.aborts += 1;
                self.generations[index as usize] = Generation::LOST;
                return;
            }
        }
        self.generations[index as usize] = generation;
    }

    fn verify(&mut self, index: u64) {
        let generation = self.generations[index as usize];
        if generation == Generation::LOST {
            return;
        }
        let base = self.page(index);
        let guard = Guard::arm(self.range);
        for addr in (base..base + PAGE_SIZE).step_by(WORD_SIZE as usize) {
            match guard.load(addr) {
                Ok(found) => self.mismatches += u64::from(found != memcheck::pattern(self.seed, addr, generation)),
                Err(_) => {
                    self.aborts += 1;
                    self.generations[index as usize] = Generation::LOST;
                    return;
                }
            }
        }
        self.words_checked += PAGE_SIZE / WORD_SIZE;
    }

    /// Rewrites (with its next generation) or verifies one random page.
    fn touch(&mut self, rng: &mut SplitMix64) {
        let index = rng.below(self.count);
        let generation = self.generations[index as usize];
        if rng.below(2) == 0 && generation != Generation::LOST {
            self.write(index, generation.next());
        } else {
            self.verify(index);
        }
        bump(&WS_OPS);
    }

    fn finish(self) {
        WS_WORDS.fetch_add(self.words_checked, Ordering::Relaxed);
        WS_MISMATCHES.fetch_add(self.mismatches, Ordering::Relaxed);
        WS_ABORTS.fetch_add(self.aborts, Ordering::Relaxed);
    }
}

/// Writes the whole slice with its first generation (before the abuse starts).
fn ws_fill(task: u64) {
    if let Some(mut slice) = Slice::new(task) {
        for index in 0..slice.count {
            slice.write(index, Generation::FIRST);
        }
        slice.finish();
    }
}

/// Verifies the whole slice (after the abuse).
fn ws_verify(task: u64) {
    if let Some(mut slice) = Slice::new(task) {
        for index in 0..slice.count {
            slice.verify(index);
        }
        slice.finish();
    }
}

/// A worker: touches its slice until the abusers are done.
fn ws_worker(task: u64) {
    let Some(mut slice) = Slice::new(task) else { return };
    let mut rng = SplitMix64::new(setup().seed ^ (task + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    while !STOP.load(Ordering::Relaxed) {
        slice.touch(&mut rng);
    }
    slice.finish();
}

/// Addresses in the device window (mapped as device memory) that nothing in the device tree
/// describes.
fn find_holes() -> ([u64; MAX_HOLES], usize) {
    let platform = scenarios::platform();
    let mut holes = [0u64; MAX_HOLES];
    let mut n = 0;
    for gigabyte in mm::device_gigabytes(platform) {
        let base = gigabyte << 30;
        for addr in (base..base + (1 << 30)).step_by(HOLE_STRIDE as usize) {
            let page = Range { base: addr, size: 0x1000 };
            let described = platform.described().iter().chain(platform.ram()).any(|r| r.overlaps(&page));
            if !described && n < MAX_HOLES {
                holes[n] = addr;
                n += 1;
            }
        }
    }
    (holes, n)
}

fn read_holes(holes: &[u64], count: usize, offset: usize) {
    if holes.is_empty() {
        return;
    }
    for i in 0..count {
        let addr = holes[(i + offset) % holes.len()];
        let caught = probe::run(|| {
            // SAFETY: `addr` is in the device window, mapped as device memory; a read of an
            // undescribed address either returns a value or raises an external abort, which the
            // armed probe catches. Nothing is written.
            unsafe { asm!("ldr {tmp:w}, [{addr}]", addr = in(reg) addr, tmp = out(reg) _, options(nostack, readonly)) };
        });
        bump(&STATS.hole_reads);
        match caught {
            Some(ec::DATA_ABORT_SAME_EL) => bump(&STATS.aborts_caught),
            Some(_) => bump(&STATS.hole_other_exceptions),
            None => bump(&STATS.hole_reads_answered),
        }
    }
}

/// Reads a system register by its generic name as a probe; returns the value if it did not
/// fault. Writing (below) puts back the value read, or 0 if the read faulted.
macro_rules! sysreg_probe {
    ($name:ident, $reg:literal) => {
        fn $name(state: &mut u64) -> [Option<u64>; 2] {
            let mut value = 0u64;
            let read = probe::run(|| {
                // SAFETY: reading a system register has no memory effects; if it is UNDEFINED
                // the armed probe skips the instruction.
                unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nostack)) };
            });
            if read.is_none() {
                *state = value;
            }
            let write_back = *state;
            let written = probe::run(|| {
                // SAFETY: writes back the value this register last read (or 0 if it never could
                // be read, in which case the write is expected to be UNDEFINED too); if it is
                // UNDEFINED the armed probe skips the instruction.
                unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) write_back, options(nostack)) };
            });
            [read, written]
        }
    };
}

sysreg_probe!(impdef_s3_0_c15_c0_0, "S3_0_C15_C0_0");
sysreg_probe!(impdef_s3_1_c15_c2_0, "S3_1_C15_C2_0");
sysreg_probe!(impdef_s3_1_c11_c0_2, "S3_1_C11_C0_2");
sysreg_probe!(pmu_pmcr, "pmcr_el0");
sysreg_probe!(pmu_pmuserenr, "pmuserenr_el0");
sysreg_probe!(pmu_pmccntr, "pmccntr_el0");

type SysregProbe = fn(&mut u64) -> [Option<u64>; 2];
const SYSREG_PROBES: [SysregProbe; 6] =
    [impdef_s3_0_c15_c0_0, impdef_s3_1_c15_c2_0, impdef_s3_1_c11_c0_2, pmu_pmcr, pmu_pmuserenr, pmu_pmccntr];

fn probe_sysregs(rounds: usize) {
    let mut last_values = [0u64; SYSREG_PROBES.len()];
    for _ in 0..rounds {
        for (probe, state) in SYSREG_PROBES.iter().zip(last_values.iter_mut()) {
            for caught in probe(state) {
                bump(&STATS.sysreg_accesses);
                match caught {
                    Some(ec::UNKNOWN) => bump(&STATS.undefs_caught),
                    Some(_) => bump(&STATS.sysreg_other_exceptions),
                    None => {}
                }
            }
        }
    }
}

/// One CPU's share of the abuse; `cpu` = CPU index (and its working-set slice).
fn abuser(cpu: u64) {
    let s = setup();
    let mut rng = SplitMix64::new(s.seed ^ cpu.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut slice = Slice::new(cpu);
    with_env(|env| {
        for i in 0..s.calls_per_cpu {
            act(&hostile_policy::draw_action(&mut rng, env));
            if let Some(slice) = slice.as_mut().filter(|_| i % TOUCH_EVERY == 0) {
                slice.touch(&mut rng);
                bump(&STATS.touches);
            }
        }
    });
    if let Some(slice) = slice {
        slice.finish();
    }
    read_holes(&s.holes[..s.n_holes], TOTAL_HOLE_READS.div_ceil(percpu::count()), cpu as usize);
    probe_sysregs(TOTAL_SYSREG_ROUNDS.div_ceil(percpu::count()));
}

/// Spawns `tasks` tasks running `f(first + i)` (pinned to CPU i if `pinned`) and joins them.
fn run_tasks(name: &'static str, f: fn(u64), first: u64, tasks: usize, pinned: bool) {
    let mut handles: [Option<TaskHandle>; crate::task::MAX_WORKERS] = [None; crate::task::MAX_WORKERS];
    for (i, slot) in handles.iter_mut().enumerate().take(tasks) {
        let opts = SpawnOptions { pinned: pinned.then_some(i), cpus_out: None };
        *slot = Some(sched::spawn_kernel(name, f, first + i as u64, opts).expect("free task slot"));
    }
    handles.iter().flatten().for_each(|&h| sched::join(h));
}

/// The vendor hypervisor service's UID, if the call is answered.
fn hypervisor_uid() -> Option<[u32; 4]> {
    let mut answer = [0u64; 4];
    let caught = probe::run(|| answer = raw_call(Conduit::Hvc, [u64::from(hypcall::CALL_UID), 0, 0, 0, 0, 0, 0, 0]));
    caught.is_none().then(|| answer.map(|r| r as u32))
}

/// An ordinary EL1 task afterwards: yields and sleeps a little.
fn calm_kernel_task(_: u64) {
    for _ in 0..3 {
        sched::yield_now();
        sched::sleep_ns(1_000_000);
    }
}

/// An ordinary EL0 task afterwards: system calls only.
extern "C" fn calm_user_task(_: u64) -> ! {
    for _ in 0..3 {
        syscall::user::yield_now();
        syscall::user::sleep_ns(1_000_000);
    }
    syscall::user::write("hostile: EL0 task ran after the abuse\n");
    syscall::user::exit()
}

/// Runs the scenario and reports.
pub fn run(seed: u64) -> ! {
    let opts = scenarios::options();
    let cpus = percpu::count();
    let calls = opts.calls.unwrap_or(DEFAULT_CALLS);
    let features = apf::features().ok();
    let (holes, n_holes) = find_holes();
    let slices = (cpus * (1 + WORKERS_PER_CPU)) as u64;
    let Some(free) = mm::free_ram(scenarios::platform()).filter(|f| f.len() > 2 * ARENA_BYTES) else {
        report::finish(false, Some(format_args!("no free RAM for the record arena")), |_| Ok(()));
    };
    let arena_base = (free.end - ARENA_BYTES) & !(PAGE_SIZE - 1);
    let free = Span { start: free.start, end: arena_base };
    let layout = match opts.ws_mib {
        None => None,
        Some(mib) => match Some(free).map(|free| Layout::new(free, Some(mib * MIB), slices)) {
            Some(Ok(layout)) => Some(layout),
            other => {
                report::finish(false, Some(format_args!("no room for a {mib} MiB working set: {other:?}")), |_| Ok(()))
            }
        },
    };
    SETUP.set(Setup {
        seed,
        calls_per_cpu: calls.div_ceil(cpus as u64),
        paged: features.is_some(),
        granule: features.map_or(64, |f| f.granule),
        apf_active: opts.apf && features.is_some(),
        holes,
        n_holes,
        layout,
        arena: (arena_base, ARENA_BYTES),
    });
    apf::EVENT0_HOOK.set(inside_sdei_handler);
    crate::println!(
        "hostile: {} calls on {cpus} cpus, paged {}, apf {}, working set {} MiB",
        calls.div_ceil(cpus as u64) * cpus as u64,
        features.is_some(),
        opts.apf,
        layout.map_or(0, |l| l.working_set.len() / MIB)
    );

    if layout.is_some() {
        run_tasks("ws-fill", ws_fill, 0, slices as usize, false);
    }
    let mut workers: [Option<TaskHandle>; crate::task::MAX_WORKERS] = [None; crate::task::MAX_WORKERS];
    if layout.is_some() {
        for (i, slot) in workers.iter_mut().enumerate().take(cpus * WORKERS_PER_CPU) {
            let task = (cpus + i) as u64;
            *slot = Some(
                sched::spawn_kernel("ws-worker", ws_worker, task, SpawnOptions::default()).expect("free task slot"),
            );
        }
    }
    run_tasks("hostile", abuser, 0, cpus, true);
    STOP.store(true, Ordering::Relaxed);
    workers.iter().flatten().for_each(|&h| sched::join(h));
    if layout.is_some() {
        run_tasks("ws-verify", ws_verify, 0, slices as usize, false);
    }

    let uid = hypervisor_uid();
    let uid_matches = uid == Some(hypcall::UID);

    let mut calm = [None; 2 * AFTERMATH_TASKS];
    for (i, slot) in calm.iter_mut().enumerate() {
        let handle = if i % 2 == 0 {
            sched::spawn_user("calm-el0", calm_user_task, 0, SpawnOptions::default())
        } else {
            sched::spawn_kernel("calm-el1", calm_kernel_task, 0, SpawnOptions::default())
        };
        *slot = Some(handle.expect("free task slot"));
    }
    calm.iter().flatten().for_each(|&h| sched::join(h));

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let sum = |f: fn(&KindStats) -> &AtomicU64| STATS.kinds.iter().map(|k| get(f(k))).sum::<u64>();
    let call_kinds = [Kind::Fuzz, Kind::Psci, Kind::Sdei, Kind::Apf];
    let sum_calls = |f: fn(&KindStats) -> &AtomicU64| call_kinds.iter().map(|&k| get(f(kind_stats(k)))).sum::<u64>();
    let mismatches = get(&WS_MISMATCHES);
    let ok = mismatches == 0 && get(&WS_ABORTS) == 0;
    let error = format_args!("working set: {mismatches} mismatches, {} aborts", get(&WS_ABORTS));
    let unexpected = UNEXPECTED.lock();
    report::finish(ok, (!ok).then_some(error), |j| {
        j.u64(Some("seed"), seed)?;
        j.u64(Some("calls"), sum(|k| &k.made))?;
        j.u64(Some("smccc_calls"), sum(|k| &k.calls))?;
        j.u64(Some("hvc_calls"), get(&STATS.hvc_calls))?;
        j.u64(Some("smc_calls"), get(&STATS.smc_calls))?;
        j.u64(Some("not_supported"), sum(|k| &k.answers[2]))?;
        j.u64(Some("undef_caught"), sum_calls(|k| &k.undefs))?;
        j.u64(Some("call_other_exceptions"), sum_calls(|k| &k.other_exceptions) + sum_calls(|k| &k.aborts))?;
        j.u64(Some("unexpected"), sum(|k| &k.unexpected))?;
        j.begin_array(Some("first_unexpected"))?;
        for u in unexpected.iter().flatten() {
            j.str_fmt(
                None,
                format_args!("{} x0={:#x} x1={:#x} x2={:#x}: {}", u.kind.name(), u.x0, u.args[0], u.args[1], u.answer),
            )?;
        }
        j.end_array()?;
        j.begin_object(Some("actions"))?;
        for (kind, k) in hostile_policy::KINDS.iter().zip(&STATS.kinds) {
            j.begin_object(Some(kind.name()))?;
            j.u64(Some("made"), get(&k.made))?;
            j.u64(Some("calls"), get(&k.calls))?;
            j.begin_object(Some("answers"))?;
            for (name, n) in ANSWER_NAMES.iter().zip(&k.answers) {
                j.u64(Some(name), get(n))?;
            }
            j.end_object()?;
            j.u64(Some("unexpected"), get(&k.unexpected))?;
            j.u64(Some("completed"), get(&k.completed))?;
            j.u64(Some("aborts"), get(&k.aborts))?;
            j.u64(Some("alignment_faults"), get(&k.alignment_faults))?;
            j.u64(Some("undefs"), get(&k.undefs))?;
            j.u64(Some("other_exceptions"), get(&k.other_exceptions))?;
            j.end_object()?;
        }
        j.end_object()?;
        j.u64(Some("aborts_total"), sum(|k| &k.aborts) + get(&STATS.aborts_caught))?;
        j.u64(Some("undefs_total"), sum(|k| &k.undefs) + get(&STATS.undefs_caught))?;
        j.u64(Some("garbage_tails"), get(&STATS.garbage_tails))?;
        j.u64(Some("apf_restored"), get(&STATS.apf_restored))?;
        j.u64(Some("apf_restore_failures"), get(&STATS.apf_restore_failures))?;
        j.u64(Some("dropped_wakes"), get(&STATS.dropped_wakes))?;
        j.u64(Some("slow_enables"), get(&STATS.slow_enables))?;
        j.u64(Some("slowest_enable_us"), get(&STATS.slowest_enable_ns) / 1000)?;
        j.u64(Some("sdei_handler_runs"), get(&STATS.sdei_handler_runs))?;
        j.u64(Some("sdei_handler_missed"), get(&STATS.sdei_handler_missed))?;
        j.u64(Some("nested_faults"), get(&STATS.nested_faults))?;
        j.bool(Some("paged"), features.is_some())?;
        j.begin_array(Some("holes"))?;
        for hole in &holes[..n_holes] {
            j.str_fmt(None, format_args!("{hole:#x}"))?;
        }
        j.end_array()?;
        j.u64(Some("hole_reads"), get(&STATS.hole_reads))?;
        j.u64(Some("aborts_caught"), get(&STATS.aborts_caught))?;
        j.u64(Some("hole_reads_answered"), get(&STATS.hole_reads_answered))?;
        j.u64(Some("hole_other_exceptions"), get(&STATS.hole_other_exceptions))?;
        j.u64(Some("sysreg_accesses"), get(&STATS.sysreg_accesses))?;
        j.u64(Some("undefs_caught"), get(&STATS.undefs_caught))?;
        j.u64(Some("sysreg_other_exceptions"), get(&STATS.sysreg_other_exceptions))?;
        j.bool(Some("hyp_uid_answered"), uid.is_some())?;
        j.bool(Some("hyp_uid_matches"), uid_matches)?;
        j.u64(Some("aftermath_tasks"), calm.len() as u64)?;
        if let Some(layout) = layout {
            j.u64(Some("ws_bytes"), layout.working_set.len())?;
            j.u64(Some("ws_ops"), get(&WS_OPS))?;
            j.u64(Some("touches"), get(&STATS.touches))?;
            j.u64(Some("ws_aborts"), get(&WS_ABORTS))?;
            j.begin_object(Some("check"))?;
            j.u64(Some("words_checked"), get(&WS_WORDS))?;
            j.u64(Some("mismatches"), mismatches)?;
            j.end_object()?;
        }
        Ok(())
    });
}
