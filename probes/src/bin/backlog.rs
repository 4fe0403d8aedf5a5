//! The backlog probe: page_ready completions that wait for ring space reach a guest that made
//! room and then waits in `wfi` with nothing else to wake it (a tickless idle CPU).
//!
//! The probe dirties a 32 MiB region of its RAM (paged onto a smaller `--resident-mib`, so the
//! first pages go out to the disk), registers a page_not_present SDEI handler, enables
//! asynchronous page faults (docs/abi.md §8), pins its own image (APF_PIN) and unmasks IRQs in
//! PSTATE; its GIC CPU interface masks every priority, so no interrupt is ever taken, and
//! nothing but a trap can end a `wfi`. Then:
//!
//! 1. It fills the ring without consuming it: rounds of 16 loads from evicted pages (the
//!    per-vCPU limit of tokens in flight), each fault accepted by the handler (it records the
//!    token and resumes past the load), until `ring_head` says 64 entries were posted.
//! 2. 16 more accepted faults: their completions find the ring full and wait in the
//!    hypervisor's backlog. The probe waits `settle_ms` (default 500) for the page-ins.
//! 3. It consumes all 64 entries (writes `ring_tail`, no call), so the backlog fits, and
//!    executes `wfi` until `ring_head` shows the 16 (at most 8 times).
//!
//! It prints `backlog probe: accepted A, filled F, before wfi B, posted after wfi P, wfi returns
//! R, tokens match M` (expected: 80, 64, 64, 16, 1, true). The store must be slow enough for
//! the hypervisor to park every fault (docs/abi.md §8.3, "Park or wait"): the test uses 10 ms. A hypervisor that posts waiting entries only at the vCPU's next exit leaves
//! the probe asleep in its first `wfi` forever. Needs paged RAM (`--resident-mib 8` with
//! `--guest-mib 64`).
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use asyncpf_contract::{apf, sdei, smccc};
use asyncpf_probes::{gic_cpu_interface, hvc, hvc4, probe, Env};

/// The record: 16 MiB into guest RAM (well above the probe), aligned for any granule.
const RECORD_IPA: u64 = 0x4100_0000;
/// The region the probe dirties, then reads back from its first page on.
const REGION: u64 = 0x4200_0000;
const REGION_PAGES: u64 = 8192;
const PAGE: u64 = 4096;
/// Tokens in flight per vCPU (docs/abi.md §8.2) and ring entries (§8.2).
const LIMIT: usize = 16;
const RING: u64 = 64;
/// Rounds of step 1, plus step 2's.
const ROUNDS: usize = (RING as usize) / LIMIT + 1;
const MAX_TOKENS: usize = ROUNDS * LIMIT;

/// Tokens the handler accepted, in order.
static TOKENS: [AtomicU64; MAX_TOKENS] = [const { AtomicU64::new(0) }; MAX_TOKENS];
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

global_asm!(
    r#"
// One load from the page in x0: the only instruction whose faults the handler accepts.
.global backlog_touch
backlog_touch:
    ldr x1, [x0]
    ret

// The page_not_present handler (docs/abi.md §8.3): entered at EL1h, DAIF masked, on the
// interrupted context's stack, with x2 = the interrupted PC. The dispatcher restores x0-x17 at
// COMPLETE; x18 and x30 are the handler's to keep (x19-x29 the Rust callee keeps).
.global backlog_handler
backlog_handler:
    stp x18, x30, [sp, #-16]!
    mov x0, x2
    bl {decide}
    ldp x18, x30, [sp], #16
    cbz w0, 1f
    movz x0, #0x0026            // SDEI_EVENT_COMPLETE_AND_RESUME(backlog_resume)
    movk x0, #0xc400, lsl #16
    adr x1, backlog_resume
    hvc #0
1:  movz x0, #0x0025            // SDEI_EVENT_COMPLETE: decline
    movk x0, #0xc400, lsl #16
    hvc #0
    b .

// SDEI_EVENT_COMPLETE_AND_RESUME enters here as if an IRQ had been taken at the faulting load
// (ELR_EL1 = its address, every register the interrupted context's): step over the load.
.global backlog_resume
backlog_resume:
    str x0, [sp, #-16]!
    mrs x0, elr_el1
    add x0, x0, #4
    msr elr_el1, x0
    ldr x0, [sp], #16
    eret
"#,
    decide = sym accept_page_not_present,
);

unsafe extern "C" {
    /// The handler above (only its address is used).
    fn backlog_handler();
    /// One load from `page` (x0), as a single instruction.
    safe fn backlog_touch(page: u64);
    /// The probe's first and last byte (probes/link.ld).
    static __image_start: u8;
    static __image_end: u8;
}

/// The page_not_present handler's decision, called by `backlog_handler` with the interrupted
/// PC: a fault of `backlog_touch`'s load is accepted (its token recorded, returns true); any
/// other is declined, so the hypervisor resolves it synchronously.
extern "C" fn accept_page_not_present(pc: u64) -> bool {
    if pc != backlog_touch as *const () as u64 {
        return false;
    }
    // SAFETY: the record is guest RAM the probe gave APF_ENABLE (MMU off: the address is
    // physical); the hypervisor wrote `pnp_token` before entering the handler.
    let token = unsafe { ((RECORD_IPA + apf::offset_pnp_token(0)) as *const u64).read_volatile() };
    let n = ACCEPTED.load(Ordering::Relaxed);
    if n < MAX_TOKENS {
        TOKENS[n].store(token, Ordering::Relaxed);
        ACCEPTED.store(n + 1, Ordering::Relaxed);
    }
    true
}

/// SDEI_EVENT_REGISTER(event, entry, arg 0, flags 0 = RM_ANY, affinity 0): five arguments,
/// more than [`hvc`] passes.
fn register(event: u64, entry: u64) -> u64 {
    let mut x0 = sdei::EVENT_REGISTER as u64;
    // SAFETY: an SMCCC 1.1 call preserves x18 and up; x1-x17 are declared clobbered. The probe
    // has no state the call could invalidate.
    unsafe {
        asm!("hvc #0", inout("x0") x0, inout("x1") event => _, inout("x2") entry => _, inout("x3") 0u64 => _,
            inout("x4") 0u64 => _, inout("x5") 0u64 => _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
            out("x17") _, options(nostack))
    };
    x0
}

fn read(addr: u64) -> u64 {
    // SAFETY: a field of the probe's own record in guest RAM.
    unsafe { (addr as *const u64).read_volatile() }
}

fn counter() -> (u64, u64) {
    let (count, freq): (u64, u64);
    // SAFETY: reads of the virtual counter and its frequency, which EL1 may always make.
    unsafe { asm!("isb", "mrs {c}, cntvct_el0", "mrs {f}, cntfrq_el0", c = out(reg) count, f = out(reg) freq) };
    (count, freq)
}

/// Spin until `done()` or `ms` milliseconds have passed; returns `done()`.
fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let (start, freq) = counter();
    while !done() {
        if counter().0 - start > freq / 1000 * ms {
            return done();
        }
        core::hint::spin_loop();
    }
    true
}

fn backlog(env: &Env) -> ! {
    let settle_ms: u64 = env.arg("settle_ms").and_then(|v| v.parse().ok()).unwrap_or(500);
    let [status, granule, ..] = hvc4(apf::FEATURES as u64, [0; 3]);
    if status != smccc::SUCCESS as u64 {
        env.println(format_args!("backlog probe: APF_FEATURES answered {status:#x}; is guest RAM paged?"));
        env.system_off();
    }
    // Dirty the region, so that its first pages go out to the disk.
    for n in 0..REGION_PAGES {
        // SAFETY: guest RAM of the region, which only the probe uses (MMU off).
        unsafe { ((REGION + n * PAGE) as *mut u64).write_volatile(n + 1) };
    }
    let event = u64::from(sdei::EVENT_PAGE_NOT_PRESENT);
    let setup = [
        register(event, backlog_handler as *const () as u64),
        hvc(sdei::EVENT_ENABLE as u64, [event, 0, 0]),
        hvc(sdei::PE_UNMASK as u64, [0; 3]),
        hvc(apf::ENABLE as u64, [RECORD_IPA, 0, 0]),
    ];
    if setup.iter().any(|&answer| answer != smccc::SUCCESS as u64) {
        env.println(format_args!("backlog probe: setup answered {setup:x?}"));
        env.system_off();
    }
    // Keep the probe itself resident (APF_PIN): only the touches fault then.
    let (image_start, image_end) = (&raw const __image_start as u64, &raw const __image_end as u64);
    let pinned = hvc(apf::PIN as u64, [image_start, image_end - image_start, 0]);
    if pinned != smccc::SUCCESS as u64 {
        env.println(format_args!("backlog probe: APF_PIN answered {pinned:#x}"));
        env.system_off();
    }
    let head = RECORD_IPA + apf::offset_ring_head(granule);
    let tail = RECORD_IPA + apf::offset_ring_tail(granule);
    let ring = RECORD_IPA + apf::offset_ring(granule);
    let start = read(tail);
    // Page faults at EL1 are delivered only with PSTATE.I clear (§8.3): every priority masked
    // and Group 1 disabled at the CPU interface, so that no virtual interrupt is ever
    // signalled, then IRQs unmasked in PSTATE.
    gic_cpu_interface(0, false);
    // SAFETY: unmasks IRQs in PSTATE only; none can be signalled (above).
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
    let mut page = REGION;
    let mut filled = 0;
    for round in 0..ROUNDS {
        for _ in 0..LIMIT {
            backlog_touch(page);
            page += PAGE;
        }
        if round + 1 < ROUNDS {
            wait_until(5000, || read(head).wrapping_sub(start) >= RING.min((round as u64 + 1) * LIMIT as u64));
            filled = read(head).wrapping_sub(start);
        }
    }
    // Step 2's page-ins complete meanwhile; their entries find the ring full.
    wait_until(settle_ms, || false);
    let before_wfi = read(head).wrapping_sub(start);
    let consumed = read(head);
    // SAFETY: `ring_tail` is the guest's field of its own record: every entry is consumed.
    unsafe { (tail as *mut u64).write_volatile(consumed) };
    let mut wfi_returns = 0;
    while wfi_returns < 8 && read(head) == consumed {
        // SAFETY: waits for an interrupt or a trap; the probe's state is in memory.
        unsafe { asm!("dsb sy", "wfi", options(nostack)) };
        wfi_returns += 1;
    }
    let after = read(head).wrapping_sub(consumed);
    // The late entries are the tokens of step 2, in any order.
    let accepted = ACCEPTED.load(Ordering::Relaxed);
    let late: &[AtomicU64] = if accepted >= LIMIT { &TOKENS[accepted - LIMIT..accepted] } else { &[] };
    let matches = after == LIMIT as u64
        && (0..after).all(|i| {
            let token = read(ring + 8 * ((consumed + i) % RING));
            late.iter().any(|t| t.load(Ordering::Relaxed) == token)
        });
    env.println(format_args!(
        "backlog probe: accepted {accepted}, filled {filled}, before wfi {before_wfi}, posted after wfi {after}, \
         wfi returns {wfi_returns}, tokens match {matches}"
    ));
    env.system_off()
}

probe!(backlog);
