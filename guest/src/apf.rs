//! The guest's side of the asyncpf contract (docs/abi.md §8): SDEI calls and the SDEI handler
//! entry, the asynchronous-page-fault calls, the per-CPU records, and the page_ready interrupt
//! (INTID 22) that drains a record's completion ring.

use crate::arch;
use crate::psci::{self, Conduit};
use crate::sched::{self, Namespace};
use crate::sync::SpinLock;
use asyncpf_contract::{apf as abi, sdei};
use asyncpf_core::apf::{self as ring, Layout, RecordMemory};
use asyncpf_guest::apfsession::{Accepted, Entry};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

/// Most CPUs the kernel brings up (as `percpu`).
const MAX_CPUS: usize = crate::dt::MAX_CPUS;
/// A record's bytes at the largest granule (`record_bytes(MAX_GRANULE)` = 6656), rounded up
/// to whole pages so that no two CPUs' records share a page.
const RECORD_SPACE: usize = 8192;

/// One CPU's record: written by the hypervisor (its fields) and by this CPU (`ring_tail`).
#[repr(C, align(4096))]
struct RecordSpace(UnsafeCell<[u64; RECORD_SPACE / 8]>);

// SAFETY: each CPU touches only its own record, and the hypervisor's concurrent writes are to
// fields the guest only reads (volatile, single 64-bit accesses).
unsafe impl Sync for RecordSpace {}

static RECORDS: [RecordSpace; MAX_CPUS] = [const { RecordSpace(UnsafeCell::new([0; RECORD_SPACE / 8])) }; MAX_CPUS];

/// What `APF_FEATURES` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub granule: u64,
    pub page_ready_intid: u32,
    pub event: u32,
}

/// An SMCCC call through the platform's conduit: x0..x3 of the answer.
pub fn call(function: u32, args: [u64; 5]) -> [u64; 4] {
    let conduit = psci::conduit_if_known().unwrap_or(Conduit::Hvc);
    // SAFETY: SDEI and APF calls change only SDEI/APF state; the handler entry point the guest
    // registers (`sdei_entry`) is ready to run at any time.
    unsafe { psci::call_wide(conduit, function, args) }
}

/// APF_FEATURES, or `Err(code)` (NOT_SUPPORTED when guest RAM is not paged).
pub fn features() -> Result<Features, i64> {
    let [x0, x1, x2, x3] = call(abi::FEATURES, [0; 5]);
    match x0 as i64 {
        0 => Ok(Features { granule: x1, page_ready_intid: x2 as u32, event: x3 as u32 }),
        code => Err(code),
    }
}

/// The guest physical (= virtual: the kernel maps RAM 1:1) address of this CPU's record.
pub fn record_address(cpu: usize) -> u64 {
    RECORDS[cpu].0.get() as u64
}

/// APF_ENABLE with this CPU's record at `granule`; the SMCCC result.
pub fn enable(record_ipa: u64, flags: u64) -> i64 {
    call(abi::ENABLE, [record_ipa, flags, 0, 0, 0])[0] as i64
}

/// APF_DISABLE; the SMCCC result.
pub fn disable() -> i64 {
    call(abi::DISABLE, [0; 5])[0] as i64
}

/// Reads the u64 at byte `offset` of this CPU's record (the `apfabi` scenario checks the ABI's
/// offsets with it, independently of `asyncpf_core::apf::Layout`).
pub fn read_record(offset: u64) -> u64 {
    read_record_of(arch::cpu_index(), offset)
}

/// The record layout APF_FEATURES reported (`None` before).
fn layout() -> Option<Layout> {
    Layout::new(GRANULE.load(Ordering::Relaxed)).ok()
}

/// CPU `cpu`'s record as the shared consumer code reads and writes it.
struct RecordOf(usize);

impl RecordMemory for RecordOf {
    fn read_u64(&mut self, offset: u64) -> u64 {
        read_record_of(self.0, offset)
    }
    fn write_u64(&mut self, offset: u64, value: u64) {
        write_record_of(self.0, offset, value)
    }
    fn publish(&mut self) {
        // SAFETY: a barrier only orders memory accesses.
        unsafe { core::arch::asm!("dmb ishst", options(nostack, preserves_flags)) };
    }
    fn acquire(&mut self) {
        // SAFETY: a barrier only orders memory accesses.
        unsafe { core::arch::asm!("dmb ishld", options(nostack, preserves_flags)) };
    }
}

/// Reads the u64 at byte `offset` of CPU `cpu`'s record (its own CPU, or any CPU once `cpu`
/// is off).
fn read_record_of(cpu: usize, offset: u64) -> u64 {
    let base = record_address(cpu) as *const u64;
    assert!(offset.is_multiple_of(8) && offset < RECORD_SPACE as u64);
    // SAFETY: inside `cpu`'s record (offset below RECORD_SPACE, 8-aligned: checked); the
    // hypervisor may write it concurrently, which one volatile 64-bit load tolerates.
    unsafe { core::ptr::read_volatile(base.add(offset as usize / 8)) }
}

fn write_record_of(cpu: usize, offset: u64, value: u64) {
    let base = record_address(cpu) as *mut u64;
    assert!(offset.is_multiple_of(8) && offset < RECORD_SPACE as u64);
    // SAFETY: inside `cpu`'s record; only guest-written fields are written here, by the one
    // CPU that drains that record (its own, or another once it is off).
    unsafe { core::ptr::write_volatile(base.add(offset as usize / 8), value) };
}

/// page_ready tokens seen (all CPUs), and the TOKEN_WAKE_ALL among them.
pub static TOKENS_SEEN: AtomicU64 = AtomicU64::new(0);
pub static WAKE_ALLS_SEEN: AtomicU64 = AtomicU64::new(0);
/// Ring errors seen by the consumer (garbage indices).
pub static RING_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The granule this CPU's record uses (set by the scenario that enabled it).
static GRANULE: AtomicU64 = AtomicU64::new(0);

/// Remember the granule the record is laid out with (before APF_ENABLE).
pub fn set_granule(granule: u64) {
    GRANULE.store(granule, Ordering::Relaxed);
}

/// Tokens this CPU's SDEI handler accepted and that the IRQ path (entered through
/// COMPLETE_AND_RESUME) must still park the interrupted task on; 0 = none.
static PENDING_PARK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Per CPU: the tokens it accepted whose page_ready has not come yet (`asyncpf_guest::apfsession`
/// has the rules). A WAKE_ALL in a CPU's ring wakes exactly these tasks, not those waiting for
/// other CPUs' tokens (whose page_ready will still come, and would otherwise be remembered as
/// wakes nobody consumes). Only the CPU itself touches its set (SDEI handler and page_ready
/// interrupt, both with IRQs masked), or another CPU once it is off. Room for a ring's worth:
/// the hypervisor has at most 16 tokens per vCPU in flight (docs/abi.md §8.2); a token that
/// finds no room is declined.
const OUTSTANDING_SLOTS: usize = abi::RING_ENTRIES as usize;
static SESSIONS: [SpinLock<Accepted<OUTSTANDING_SLOTS>>; MAX_CPUS] =
    [const { SpinLock::new(Accepted::new()) }; MAX_CPUS];

/// Ring entries that named no token this CPU was waiting for (duplicates, other CPUs' tokens,
/// tokens never issued): ignored.
pub static STALE_TOKENS: AtomicU64 = AtomicU64::new(0);

/// Wakes every task waiting for a token `cpu` accepted (its WAKE_ALL, or the end of its session
/// without one); returns how many tasks were released.
fn wake_all_of(cpu: usize) -> usize {
    let ended = SESSIONS[cpu].lock().end();
    // A task not parked yet finds the wake when it parks (`sched::wake`).
    ended.iter().map(|token| sched::wake(sched::token(Namespace::Apf, token))).sum()
}
/// When this CPU's APF session ended without a WAKE_ALL it could see (a new APF_ENABLE, with
/// IRQs masked): wakes the tasks parked on that session's tokens, which will never get their
/// page_ready (they retry their access). Returns how many tasks were woken.
pub fn wake_dropped() -> usize {
    wake_all_of(arch::cpu_index())
}

/// page_not_present events accepted (the task parked) and declined (the idle task faulted, or
/// `apfsession::Accepted::accept` refused the token).
pub static ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// Of those, faults taken from EL0 (resumed at the EL0 IRQ vector).
pub static ACCEPTED_EL0: AtomicU64 = AtomicU64::new(0);
pub static DECLINED: AtomicU64 = AtomicU64::new(0);
/// Tasks woken by a page_ready token (WAKE_ALL counted per task released).
pub static WOKEN: AtomicU64 = AtomicU64::new(0);

/// The IRQ vector offsets from VBAR_EL1: current EL with SP_ELx, and lower EL (AArch64).
const IRQ_VECTOR_EL1H: u64 = 0x280;
const IRQ_VECTOR_EL0: u64 = 0x480;

/// page_not_present on this CPU (from the SDEI handler): accept if the interrupted task may
/// park (any task but the idle task; the hypervisor only delivers with IRQs unmasked, so no
/// spin lock is held), by returning the IRQ vector for COMPLETE_AND_RESUME; else decline (0).
fn page_not_present(pstate: u64) -> u64 {
    if sched::current_is_idle() {
        DECLINED.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let cpu = arch::cpu_index();
    let Some(layout) = layout() else {
        DECLINED.fetch_add(1, Ordering::Relaxed);
        return 0;
    };
    let token = ring::read_not_present(layout, &mut RecordOf(cpu)).token;
    if SESSIONS[cpu].lock().accept(token).is_err() {
        DECLINED.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    PENDING_PARK[cpu].store(token, Ordering::Relaxed);
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
    let from_el0 = pstate & 0xf == 0;
    if from_el0 {
        ACCEPTED_EL0.fetch_add(1, Ordering::Relaxed);
    }
    arch::vbar() + if from_el0 { IRQ_VECTOR_EL0 } else { IRQ_VECTOR_EL1H }
}

/// From the IRQ path, after the interrupts: park the task whose page_not_present this CPU
/// accepted (its context is the IRQ frame at the faulting instruction, which it retries when
/// it runs again).
pub fn park_if_pending() {
    let cpu = arch::cpu_index();
    let token = PENDING_PARK[cpu].swap(0, Ordering::Relaxed);
    if token != 0 {
        if OFF_AT_PARK[cpu].swap(false, Ordering::Relaxed) {
            // Asked to go off right after parking a task on a token (`off_at_next_park`): it
            // drains now, so the park switches to its idle loop, which turns it off while the
            // token is outstanding.
            let _ = sched::request_offline_when(cpu, false);
        }
        crate::trace::park(sched::current().id, token);
        sched::park(sched::token(Namespace::Apf, token));
    }
}

/// Per CPU: go offline right after the next APF park ([`off_at_next_park`]).
static OFF_AT_PARK: [core::sync::atomic::AtomicBool; MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; MAX_CPUS];

/// Asks CPU `cpu` to start going offline right after it next parks a task on an APF token, so
/// that it calls CPU_OFF with that token (at least) outstanding. [`cancel_off_at_next_park`]
/// takes the request back if it was not taken yet.
pub fn off_at_next_park(cpu: usize) {
    OFF_AT_PARK[cpu].store(true, Ordering::Relaxed);
}

/// Takes back [`off_at_next_park`]; false if the CPU took it already (it is going off).
pub fn cancel_off_at_next_park(cpu: usize) -> bool {
    OFF_AT_PARK[cpu].swap(false, Ordering::Relaxed)
}

/// Enable asynchronous page faults on this CPU: register, enable and unmask the SDEI event,
/// then APF_ENABLE with this CPU's record. `Err` with the first failing call's result.
pub fn enable_this_cpu() -> Result<Features, i64> {
    let features = features()?;
    set_granule(features.granule);
    let event = u64::from(features.event);
    let entry = sdei_entry_address();
    for (function, args) in [
        (sdei::EVENT_REGISTER, [event, entry, 0, 0, 0]),
        (sdei::EVENT_ENABLE, [event, 0, 0, 0, 0]),
        (sdei::PE_UNMASK, [0; 5]),
    ] {
        let result = call(function, args)[0] as i64;
        if result != 0 {
            return Err(result);
        }
    }
    let cpu = arch::cpu_index();
    // IRQs masked from APF_ENABLE to the end of the old session, so that no token of the new
    // session is accepted (and then woken with the old ones) in between.
    let irq = arch::irq_save_disable();
    let flags = if crate::scenarios::options().apf_always { abi::FLAG_ALWAYS_DELIVER } else { 0 };
    let result = match enable(record_address(cpu), flags) {
        0 => {
            // A new session: tasks still waiting for this CPU's earlier tokens are woken here
            // (nothing of the earlier session will be posted).
            let woken = wake_all_of(cpu);
            WOKEN.fetch_add(woken as u64, Ordering::Relaxed);
            Ok(features)
        }
        code => Err(code),
    };
    arch::irq_restore(irq);
    result
}

/// The page_ready interrupt: take every token from this CPU's ring (docs/abi.md §8.4: read
/// `ring_head`, then the entries, then write `ring_tail`, with load barriers between), and
/// wake the task of each (every APF waiter for TOKEN_WAKE_ALL).
pub fn on_page_ready() {
    drain(arch::cpu_index());
}

/// Drains CPU `cpu`'s ring (its own, or another CPU's once that one is off) with the consumer
/// the host tests (`asyncpf_core::apf::ring::drain`); returns the entries taken and whether a
/// WAKE_ALL was among them.
fn drain(cpu: usize) -> (u64, bool) {
    let Some(layout) = layout() else {
        return (0, false);
    };
    let mut wake_all = false;
    let taken = ring::drain(layout, &mut RecordOf(cpu), |token| {
        TOKENS_SEEN.fetch_add(1, Ordering::Relaxed);
        let entry = SESSIONS[cpu].lock().page_ready(token);
        let woken = match entry {
            Entry::WakeAll => {
                WAKE_ALLS_SEEN.fetch_add(1, Ordering::Relaxed);
                wake_all = true;
                wake_all_of(cpu)
            }
            // A wake that overtakes its park is remembered (`sched::wake`).
            Entry::Wake(token) => {
                let woken = sched::wake(sched::token(Namespace::Apf, token));
                crate::trace::wake(token, woken);
                woken
            }
            Entry::Stale => {
                STALE_TOKENS.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        WOKEN.fetch_add(woken as u64, Ordering::Relaxed);
    });
    match taken {
        Ok(taken) => (taken as u64, wake_all),
        Err(_) => {
            RING_ERRORS.fetch_add(1, Ordering::Relaxed);
            (0, false)
        }
    }
}

/// Offline CPUs whose records were drained ([`drain_offline`]), the entries and wake-alls
/// found there, and how many of them lacked the wake-all (its tasks woken all the same).
pub static OFFLINE_DRAINS: AtomicU64 = AtomicU64::new(0);
pub static OFFLINE_TOKENS: AtomicU64 = AtomicU64::new(0);
pub static OFFLINE_WAKE_ALLS: AtomicU64 = AtomicU64::new(0);
pub static OFFLINE_NO_WAKE_ALL: AtomicU64 = AtomicU64::new(0);

/// The last thing a CPU does before PSCI CPU_OFF (IRQs masked): empty its ring, so that the
/// WAKE_ALL with which CPU_OFF ends its APF session finds room (at most 16 completions can be
/// posted in between: docs/abi.md §8.2).
pub fn before_cpu_off() {
    let cpu = arch::cpu_index();
    if ENABLED_CPUS.load(Ordering::Relaxed) > 0 {
        drain(cpu);
        OFF_WITH_TOKENS.fetch_add(u64::from(outstanding(cpu) > 0), Ordering::Relaxed);
    }
}

/// Tokens CPU `cpu` accepted whose page_ready has not been taken yet (a snapshot, from any CPU).
pub fn outstanding(cpu: usize) -> usize {
    SESSIONS[cpu].lock().outstanding()
}

/// CPU_OFF calls made while tasks waited for tokens of that CPU (as far as the guest knew right
/// before the call).
pub static OFF_WITH_TOKENS: AtomicU64 = AtomicU64::new(0);

/// CPU `cpu` is off (AFFINITY_INFO answered OFF): its APF session has ended, and its record is
/// the guest's again. Drain it from here: page_ready entries posted before the CPU went off,
/// and the WAKE_ALL that ended the session, which wakes every task still waiting for one of
/// its tokens (they move to online CPUs and retry their access). Without the WAKE_ALL (the
/// ring had no room) those tasks are woken all the same: nothing more comes for them.
pub fn drain_offline(cpu: usize) {
    if !REQUESTED.load(Ordering::Relaxed) || GRANULE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let (entries, wake_all) = drain(cpu);
    OFFLINE_DRAINS.fetch_add(1, Ordering::Relaxed);
    OFFLINE_TOKENS.fetch_add(entries, Ordering::Relaxed);
    if wake_all {
        OFFLINE_WAKE_ALLS.fetch_add(1, Ordering::Relaxed);
    } else {
        OFFLINE_NO_WAKE_ALL.fetch_add(1, Ordering::Relaxed);
        let woken = wake_all_of(cpu);
        WOKEN.fetch_add(woken as u64, Ordering::Relaxed);
    }
}

/// CPUs that enabled APF again after coming back from CPU_OFF, and those that failed to.
pub static REENABLED: AtomicU64 = AtomicU64::new(0);
pub static REENABLE_FAILED: AtomicU64 = AtomicU64::new(0);

/// A secondary CPU came back (CPU_ON after CPU_OFF): with `apf=on`, it enables asynchronous page
/// faults again (CPU_OFF reset its SDEI state and ended its APF session).
pub fn on_cpu_up() {
    if ENABLED_CPUS.load(Ordering::Relaxed) == 0 {
        return;
    }
    match enable_this_cpu() {
        Ok(_) => REENABLED.fetch_add(1, Ordering::Relaxed),
        Err(code) => {
            crate::println!("apf: cpu {}: not enabled again ({code})", arch::cpu_index());
            REENABLE_FAILED.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// Events the SDEI handler body has run for, and the last (event, argument) it saw.
pub static SDEI_HANDLED: AtomicU64 = AtomicU64::new(0);
pub static SDEI_LAST_EVENT: AtomicU64 = AtomicU64::new(u64::MAX);
pub static SDEI_LAST_ARG: AtomicU64 = AtomicU64::new(0);
/// SDEI_EVENT_CONTEXT(0) and (17) from inside the handler: the interrupted x0 and x17.
pub static SDEI_CONTEXT_X0: AtomicU64 = AtomicU64::new(0);

/// A function the handler body runs for event 0 on a CPU that armed it (the `hostile`
/// scenario takes faults inside the handler this way), and the per-CPU arming.
pub static EVENT0_HOOK: crate::sync::BootOnce<fn()> = crate::sync::BootOnce::new();
pub static EVENT0_HOOK_ARMED: [core::sync::atomic::AtomicBool; MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; MAX_CPUS];

/// The handler body, called by `sdei_entry` with the dispatcher's x0..x3. Returns the
/// resume address for SDEI_EVENT_COMPLETE_AND_RESUME, or 0 for SDEI_EVENT_COMPLETE.
extern "C" fn sdei_handler(event: u64, argument: u64, _pc: u64, pstate: u64) -> u64 {
    if event == u64::from(sdei::EVENT_PAGE_NOT_PRESENT) {
        return page_not_present(pstate);
    }
    if EVENT0_HOOK_ARMED[arch::cpu_index()].load(Ordering::Relaxed) {
        if let Some(hook) = EVENT0_HOOK.get() {
            hook();
        }
    }
    SDEI_LAST_EVENT.store(event, Ordering::Relaxed);
    SDEI_LAST_ARG.store(argument, Ordering::Relaxed);
    SDEI_CONTEXT_X0.store(call(sdei::EVENT_CONTEXT, [0, 0, 0, 0, 0])[0], Ordering::Relaxed);
    SDEI_HANDLED.fetch_add(1, Ordering::Relaxed);
    0
}

/// The SDEI handler's entry point (register it with SDEI_EVENT_REGISTER).
pub fn sdei_entry_address() -> u64 {
    sdei_entry as *const () as u64
}

unsafe extern "C" {
    fn sdei_entry();
}

// The dispatcher enters at EL1h with DAIF masked, x0..x3 = event, argument, interrupted PC,
// interrupted PSTATE, on the interrupted context's stack. A handler may clobber x0..x17 only
// (the dispatcher restores them): save x18..x30 and the FP/SIMD state (the compiler may use
// it anywhere), run the Rust body, restore, and complete with the body's answer.
global_asm!(
    r#"
.section .text.sdei, "ax"
.balign 4
.global sdei_entry
sdei_entry:
    sub sp, sp, #640
    stp x18, x19, [sp, #0]
    stp x20, x21, [sp, #16]
    stp x22, x23, [sp, #32]
    stp x24, x25, [sp, #48]
    stp x26, x27, [sp, #64]
    stp x28, x29, [sp, #80]
    str x30, [sp, #96]
    mrs x9, fpcr
    mrs x10, fpsr
    stp x9, x10, [sp, #104]
    add x9, sp, #128
    stp q0, q1, [x9, #0]
    stp q2, q3, [x9, #32]
    stp q4, q5, [x9, #64]
    stp q6, q7, [x9, #96]
    stp q8, q9, [x9, #128]
    stp q10, q11, [x9, #160]
    stp q12, q13, [x9, #192]
    stp q14, q15, [x9, #224]
    stp q16, q17, [x9, #256]
    stp q18, q19, [x9, #288]
    stp q20, q21, [x9, #320]
    stp q22, q23, [x9, #352]
    stp q24, q25, [x9, #384]
    stp q26, q27, [x9, #416]
    stp q28, q29, [x9, #448]
    stp q30, q31, [x9, #480]
    mov x29, #0
    bl {body}
    mov x1, x0
    add x9, sp, #128
    ldp q0, q1, [x9, #0]
    ldp q2, q3, [x9, #32]
    ldp q4, q5, [x9, #64]
    ldp q6, q7, [x9, #96]
    ldp q8, q9, [x9, #128]
    ldp q10, q11, [x9, #160]
    ldp q12, q13, [x9, #192]
    ldp q14, q15, [x9, #224]
    ldp q16, q17, [x9, #256]
    ldp q18, q19, [x9, #288]
    ldp q20, q21, [x9, #320]
    ldp q22, q23, [x9, #352]
    ldp q24, q25, [x9, #384]
    ldp q26, q27, [x9, #416]
    ldp q28, q29, [x9, #448]
    ldp q30, q31, [x9, #480]
    ldp x9, x10, [sp, #104]
    msr fpcr, x9
    msr fpsr, x10
    ldp x18, x19, [sp, #0]
    ldp x20, x21, [sp, #16]
    ldp x22, x23, [sp, #32]
    ldp x24, x25, [sp, #48]
    ldp x26, x27, [sp, #64]
    ldp x28, x29, [sp, #80]
    ldr x30, [sp, #96]
    add sp, sp, #640
    cbz x1, 1f
    movz x0, #0x0026
    movk x0, #0xC400, lsl #16
    hvc #0
1:  movz x0, #0x0025
    movk x0, #0xC400, lsl #16
    hvc #0
2:  b 2b
"#,
    body = sym sdei_handler,
);

/// CPUs that enabled asynchronous page faults (`apf=on`, [`enable_on_every_cpu`]).
static ENABLED_CPUS: AtomicU64 = AtomicU64::new(0);
/// Whether the command line asked for asynchronous page faults.
static REQUESTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn enable_task(_: u64) {
    match enable_this_cpu() {
        Ok(_) => {
            ENABLED_CPUS.fetch_add(1, Ordering::Relaxed);
        }
        Err(code) => crate::println!("apf: cpu {}: not enabled ({code})", arch::cpu_index()),
    }
}

/// `apf=on`: every CPU enables asynchronous page faults (a task pinned to each, joined) before
/// the scenario starts; returns how many did (0 when the hypervisor offers none: RAM not paged).
pub fn enable_on_every_cpu() -> u64 {
    REQUESTED.store(true, Ordering::Relaxed);
    if crate::scenarios::options().apf_pin {
        pin_kernel();
    }
    let count = crate::percpu::count();
    let mut handles = [None; crate::dt::MAX_CPUS];
    for (cpu, slot) in handles.iter_mut().enumerate().take(count) {
        let opts = sched::SpawnOptions { pinned: Some(cpu), cpus_out: None };
        *slot = Some(sched::spawn_kernel("apf-enable", enable_task, 0, opts).expect("a free task slot"));
    }
    handles.iter().flatten().for_each(|&h| sched::join(h));
    let enabled = ENABLED_CPUS.load(Ordering::Relaxed);
    crate::println!("apf: asynchronous page faults enabled on {enabled} of {count} cpus");
    enabled
}

/// APF_PIN's answer for the kernel image, and the bytes it pinned.
static PIN_ANSWER: AtomicU64 = AtomicU64::new(u64::MAX);
static PINNED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Asks the hypervisor to keep the whole kernel image resident (APF_PIN, docs/abi.md §8.1):
/// its text, data and bss hold everything the guest runs where it cannot take a
/// page_not_present (exception entry, the scheduler, the SDEI handler, IRQ-masked code, the
/// stacks and the translation tables), so those faults would otherwise wait synchronously.
fn pin_kernel() {
    let image = crate::mm::image_layout();
    let (start, end) = (image.start & !0xfff, (image.end + 0xfff) & !0xfff);
    let answer = call(abi::PIN, [start, end - start, 0, 0, 0])[0];
    PIN_ANSWER.store(answer, Ordering::Relaxed);
    if answer == 0 {
        PINNED_BYTES.store(end - start, Ordering::Relaxed);
    }
    crate::println!("apf: APF_PIN of the kernel image {start:#x}..{end:#x}: {}", answer as i64);
}

/// The result's `apf` object, when `apf=on` was asked for: what the guest saw.
pub fn write_json<W: core::fmt::Write>(j: &mut asyncpf_guest::json::Json<'_, W>) -> core::fmt::Result {
    if !REQUESTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    j.begin_object(Some("apf"))?;
    j.bool(Some("requested"), true)?;
    j.u64(Some("enabled_cpus"), load(&ENABLED_CPUS))?;
    j.i64(Some("pin_answer"), load(&PIN_ANSWER) as i64)?;
    j.u64(Some("pinned_bytes"), load(&PINNED_BYTES))?;
    j.u64(Some("accepted"), load(&ACCEPTED))?;
    j.u64(Some("accepted_el0"), load(&ACCEPTED_EL0))?;
    j.u64(Some("declined"), load(&DECLINED))?;
    j.u64(Some("page_ready_tokens"), load(&TOKENS_SEEN))?;
    j.u64(Some("woken"), load(&WOKEN))?;
    j.u64(Some("wake_alls"), load(&WAKE_ALLS_SEEN))?;
    j.u64(Some("ring_errors"), load(&RING_ERRORS))?;
    j.u64(Some("stale_tokens"), load(&STALE_TOKENS))?;
    j.u64(Some("reenabled"), load(&REENABLED))?;
    j.u64(Some("reenable_failed"), load(&REENABLE_FAILED))?;
    j.u64(Some("off_with_tokens"), load(&OFF_WITH_TOKENS))?;
    j.u64(Some("offline_drains"), load(&OFFLINE_DRAINS))?;
    j.u64(Some("offline_tokens"), load(&OFFLINE_TOKENS))?;
    j.u64(Some("offline_wake_alls"), load(&OFFLINE_WAKE_ALLS))?;
    j.u64(Some("offline_no_wake_all"), load(&OFFLINE_NO_WAKE_ALL))?;
    j.end_object()
}
