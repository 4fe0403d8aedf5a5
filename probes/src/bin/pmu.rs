//! The pmu probe: the guest has the CPU's PMUv3, as a KVM guest has one, counting EL1 and EL0
//! only, never EL2.
//!
//! It prints three lines:
//! * `pmu probe: pmuver V perfmon P counters N`: ID_AA64DFR0_EL1.PMUVer, ID_DFR0_EL1.PerfMon and
//!   PMCR_EL0.N, which `cargo xtask test` compares with the same probe booted on QEMU without
//!   the hypervisor (the hardware's values);
//! * `pmu probe: el2 kept out: cycles A, cycles with NSH B, cycles with NSH and DP C, events with
//!   NSH D`: whether the cycle counter (PMCCFILTR_EL0 = 0, then NSH set, then NSH and PMCR.DP
//!   set) and an event counter counting CPU_CYCLES with NSH set stayed still while the CPU spent
//!   20 ms at EL2 (a PSCI CPU_SUSPEND that waits for the virtual timer): B needs FEAT_PMUv3p5's
//!   MDCR_EL2.HCCD, the others MDCR_EL2.HPMD;
//! * `pmu probe: K of M checks passed`, after a `FAILED:` line per failed check: the cycle
//!   counter counts at EL1 and at EL0, the P and U filters stop it there, PMSWINC at EL1 and at
//!   EL0 increments an event counter programmed with SW_INCR (event 0), CPU_CYCLES counts, the
//!   device tree names the overflow interrupt (INTID 23), and an overflow with its interrupt
//!   enabled makes INTID 23 pending (level: clearing the overflow withdraws it).
//!
//! The EL0 parts run a few instructions at EL0 (MMU off) that read PMCCNTR_EL0 and write
//! PMSWINC_EL0 and come back with `svc #0`.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::AtomicU64;

use asyncpf_probes::gic::{GICD_CTLR, GICD_CTLR_ARE_GRP1, GICR_IGROUPR0, GICR_ISENABLER0, GICR_SGI_BASE};
use asyncpf_probes::{exceptions, gic_cpu_interface, hvc, mmio_read, mmio_write, probe, Env};

/// PMCR_EL0: E, P (reset event counters), C (reset the cycle counter), DP, LC.
const PMCR_E: u64 = 1;
const PMCR_P: u64 = 1 << 1;
const PMCR_C: u64 = 1 << 2;
const PMCR_DP: u64 = 1 << 5;
const PMCR_LC: u64 = 1 << 6;
/// The cycle counter's bit in PMCNTENSET/PMINTENSET/PMOVSSET.
const CYCLES: u64 = 1 << 31;
/// Filter bits of PMCCFILTR_EL0 and PMEVTYPER<n>_EL0: don't count at EL1 (P), at EL0 (U); do
/// count at EL2 (NSH).
const FILTER_P: u64 = 1 << 31;
const FILTER_U: u64 = 1 << 30;
const FILTER_NSH: u64 = 1 << 27;
/// Common events: software increment, CPU cycles.
const EVENT_SW_INCR: u64 = 0x00;
const EVENT_CPU_CYCLES: u64 = 0x11;
/// PMUSERENR_EL0.EN: EL0 may access the PMU.
const USERENR_EN: u64 = 1;
/// The overflow interrupt KVM and QEMU's `virt` use: PPI 7.
const PMU_INTID: u64 = 23;
/// The virtual timer's interrupt.
const VIRT_TIMER_INTID: u64 = 27;

macro_rules! sysreg {
    (read $reg:literal) => {{
        let v: u64;
        // SAFETY: reads a PMU, counter, ID or GIC CPU interface register of this CPU; reading
        // them has no side effects the probe does not expect.
        unsafe { asm!("isb", concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
        v
    }};
    (write $reg:literal, $v:expr) => {
        // SAFETY: writes a PMU, timer or GIC CPU interface register of this CPU, which the
        // probe owns; interrupts stay masked in PSTATE.
        unsafe { asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) $v, options(nostack)) }
    };
}

/// Where `pmu_probe_run_el0` keeps SP_EL1 and VBAR_EL1 while EL0 runs.
static EL0_SAVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

global_asm!(
    r#"
.section .text
// EL0 code: x1 = loop iterations (at least 1), x2 = PMSWINC_EL0 writes. Returns (svc #0) with
// x0 = the PMCCNTR_EL0 difference EL0 read around its loop.
.balign 4
.global pmu_probe_el0
pmu_probe_el0:
    mrs x3, pmccntr_el0
1:  subs x1, x1, #1
    b.ne 1b
    cbz x2, 3f
2:  mov x4, #1
    msr pmswinc_el0, x4
    subs x2, x2, #1
    b.ne 2b
3:  isb
    mrs x4, pmccntr_el0
    sub x0, x4, x3
    svc #0
4:  b 4b

// pmu_probe_run_el0(entry, x1, x2): runs `entry` at EL0t (DAIF masked) with x1 and x2 and
// returns its x0 when it calls `svc #0`, or u64::MAX if it took any other exception.
.balign 4
.global pmu_probe_run_el0
pmu_probe_run_el0:
    stp x29, x30, [sp, #-16]!
    adrp x9, {saved}
    add x9, x9, :lo12:{saved}
    mov x10, sp
    str x10, [x9]
    mrs x10, vbar_el1
    str x10, [x9, #8]
    adrp x10, pmu_probe_vectors
    add x10, x10, :lo12:pmu_probe_vectors
    msr vbar_el1, x10
    msr elr_el1, x0
    mov x10, #0x3c0
    msr spsr_el1, x10
    isb
    eret

.balign 2048
pmu_probe_vectors:
.rept 16
    b pmu_probe_back
    .balign 128
.endr
pmu_probe_back:
    mrs x9, esr_el1
    lsr x9, x9, #26
    cmp x9, #0x15
    b.eq 1f
    mov x0, #-1
1:  adrp x9, {saved}
    add x9, x9, :lo12:{saved}
    ldr x10, [x9, #8]
    msr vbar_el1, x10
    ldr x10, [x9]
    mov sp, x10
    isb
    ldp x29, x30, [sp], #16
    ret
"#,
    saved = sym EL0_SAVED,
);

unsafe extern "C" {
    /// The EL0 code above; only its address is used.
    fn pmu_probe_el0();
    fn pmu_probe_run_el0(entry: u64, iterations: u64, swincs: u64) -> u64;
}

/// Run the EL0 code: `iterations` of a busy loop, then `swincs` writes to PMSWINC_EL0. Returns
/// the cycle count EL0 read around its loop, or u64::MAX if EL0 took an exception.
fn at_el0(iterations: u64, swincs: u64) -> u64 {
    // SAFETY: the trampoline saves SP, the frame record and VBAR_EL1, runs the EL0 code (which
    // touches only x0-x4 and PMU registers, never memory) and restores them when it returns
    // through its own vectors; the registers it changes are caller-saved under the C ABI.
    unsafe { pmu_probe_run_el0(pmu_probe_el0 as *const () as u64, iterations.max(1), swincs) }
}

fn spin(iterations: u64) {
    for i in 0..iterations {
        core::hint::black_box(i);
    }
}

fn cycles() -> u64 {
    sysreg!(read "pmccntr_el0")
}

fn counter0() -> u64 {
    sysreg!(read "pmevcntr0_el0")
}

/// Everything off and zero; then the counters in `enable` enabled with PMCR_EL0 = E | `pmcr`.
fn restart(enable: u64, pmcr: u64) {
    sysreg!(write "pmcr_el0", PMCR_P | PMCR_C);
    sysreg!(write "pmcntenclr_el0", u64::from(u32::MAX));
    sysreg!(write "pmintenclr_el1", u64::from(u32::MAX));
    sysreg!(write "pmovsclr_el0", u64::from(u32::MAX));
    sysreg!(write "pmcntenset_el0", enable);
    sysreg!(write "pmcr_el0", PMCR_E | PMCR_LC | PMCR_P | PMCR_C | pmcr);
}

/// How `counter` moves across `f`.
fn delta(counter: fn() -> u64, f: impl FnOnce()) -> u64 {
    let before = counter();
    f();
    counter().wrapping_sub(before)
}

fn now() -> u64 {
    sysreg!(read "cntvct_el0")
}

/// PSCI CPU_SUSPEND until the virtual timer fires `ms` from now: the CPU waits at EL2. Returns
/// the counter ticks it took.
fn suspend_at_el2(ms: u64) -> u64 {
    let start = now();
    let ticks = sysreg!(read "cntfrq_el0") / 1000 * ms;
    sysreg!(write "cntv_cval_el0", start + ticks);
    sysreg!(write "cntv_ctl_el0", 1u64);
    hvc(asyncpf_contract::psci::CPU_SUSPEND_64 as u64, [0, 0, 0]);
    let took = now() - start;
    // The timer's interrupt (enabled at the GIC: the wake-up source) is pending now; disabling
    // the timer lowers it, and the hypervisor withdraws it at an exit (it may take two, when the
    // physical interrupt reaches EL2 only after the first), so the next suspend waits again.
    sysreg!(write "cntv_ctl_el0", 0u64);
    let give_up = now() + sysreg!(read "cntfrq_el0") / 10;
    while pending() == VIRT_TIMER_INTID && now() < give_up {}
    took
}

/// Whether `counter` (enabled by the caller, counting CPU time at `per_tick` ×1000 counts per
/// counter tick when it counts) stayed (almost) still while the CPU waited 20 ms at EL2.
fn kept_out_of_el2(counter: fn() -> u64, per_tick_milli: u64) -> bool {
    // Without -icount QEMU's cycles follow host time, so a host that deschedules QEMU while it
    // runs the few µs of EL2 code around the suspend can make one attempt look counted. A
    // counter that really counts at EL2 counts the whole suspend every time: up to 3 attempts.
    (0..3).any(|_| {
        let before = counter();
        let ticks = suspend_at_el2(20);
        let counted = counter().wrapping_sub(before);
        let if_counted = ticks * per_tick_milli / 1000;
        // Most of the time was at EL2 (a suspend returns only after the timer fired); the EL1
        // part of the call is a few µs.
        ticks >= sysreg!(read "cntfrq_el0") / 100 && counted * 10 < if_counted
    })
}

/// Trap to the hypervisor once and read the highest-priority pending interrupt after it.
fn pending() -> u64 {
    hvc(asyncpf_contract::psci::PSCI_VERSION as u64, [0; 3]);
    sysreg!(read "icc_hppir1_el1") & 0xff_ffff
}

fn becomes_pending(intid: u64) -> bool {
    let give_up = now() + sysreg!(read "cntfrq_el0") / 10;
    while now() < give_up {
        if pending() == intid {
            return true;
        }
    }
    false
}

fn pmu(env: &Env) -> ! {
    let pmuver = (sysreg!(read "id_aa64dfr0_el1") >> 8) & 0xf;
    let perfmon = (sysreg!(read "S3_0_C0_C1_2") >> 24) & 0xf;
    if pmuver == 0 || pmuver == 0xf {
        env.println(format_args!("pmu probe: pmuver {pmuver} perfmon {perfmon} counters -"));
        env.println(format_args!("pmu probe: no PMUv3, exceptions {}", exceptions()));
        env.system_off();
    }
    let n = (sysreg!(read "pmcr_el0") >> 11) & 0x1f;
    env.println(format_args!("pmu probe: pmuver {pmuver} perfmon {perfmon} counters {n}"));
    // The PMU's and the virtual timer's interrupts enabled at the GIC (the timer wakes the
    // suspends below); PSTATE keeps every interrupt masked.
    if let Some((gicd, gicr)) = env.gic {
        mmio_write(gicd + GICD_CTLR, GICD_CTLR_ARE_GRP1);
        mmio_write(gicr + GICR_SGI_BASE + GICR_IGROUPR0, u32::MAX);
        mmio_write(gicr + GICR_SGI_BASE + GICR_ISENABLER0, (1 << PMU_INTID) | (1 << VIRT_TIMER_INTID));
        let _ = mmio_read(gicr + GICR_SGI_BASE + GICR_ISENABLER0);
        gic_cpu_interface(0xf0, true);
    }
    let exceptions_before = exceptions();
    let mut checks: [(&str, bool); 11] = [("", false); 11];

    // The cycle counter at EL1, and its rate against the generic counter (calibration).
    sysreg!(write "pmccfiltr_el0", 0u64);
    restart(CYCLES, 0);
    let (c0, t0) = (cycles(), now());
    spin(2_000_000);
    let (c1, t1) = (cycles(), now());
    let per_tick_milli = (c1 - c0) * 1000 / (t1 - t0).max(1);
    checks[0] = ("the cycle counter counts at EL1", c1 > c0);
    sysreg!(write "pmccfiltr_el0", FILTER_P);
    checks[1] = ("PMCCFILTR_EL0.P stops it at EL1", delta(cycles, || spin(100_000)) == 0);

    // At EL0: with P set (EL1 not counted) what moves is EL0's.
    sysreg!(write "pmuserenr_el0", USERENR_EN);
    let mut seen_at_el0 = 0;
    let counted = delta(cycles, || seen_at_el0 = at_el0(200_000, 0));
    checks[2] = (
        "the cycle counter counts at EL0, and EL0 reads it",
        counted > 0 && seen_at_el0 > 0 && seen_at_el0 != u64::MAX,
    );
    sysreg!(write "pmccfiltr_el0", FILTER_P | FILTER_U);
    checks[3] = (
        "PMCCFILTR_EL0.U stops it at EL0",
        delta(cycles, || {
            at_el0(200_000, 0);
        }) == 0,
    );

    // Software increment: event counter 0 with SW_INCR, at EL1 and at EL0.
    sysreg!(write "pmevtyper0_el0", EVENT_SW_INCR);
    restart(1, 0);
    for _ in 0..10 {
        sysreg!(write "pmswinc_el0", 1u64);
    }
    checks[4] = ("PMSWINC_EL0 at EL1 counts SW_INCR", counter0() == 10);
    let el0 = at_el0(1, 5);
    checks[5] = ("PMSWINC_EL0 at EL0 counts SW_INCR", el0 != u64::MAX && counter0() == 15);

    // CPU_CYCLES on an event counter.
    sysreg!(write "pmevtyper0_el0", EVENT_CPU_CYCLES);
    restart(1, 0);
    checks[6] = ("an event counter counts CPU_CYCLES at EL1", delta(counter0, || spin(100_000)) > 0);

    // Nothing counts at EL2, whatever the filters ask.
    sysreg!(write "pmccfiltr_el0", 0u64);
    restart(CYCLES, 0);
    let cycles_out = kept_out_of_el2(cycles, per_tick_milli);
    sysreg!(write "pmccfiltr_el0", FILTER_NSH);
    let cycles_nsh_out = kept_out_of_el2(cycles, per_tick_milli);
    restart(CYCLES, PMCR_DP);
    let cycles_nsh_dp_out = kept_out_of_el2(cycles, per_tick_milli);
    sysreg!(write "pmccfiltr_el0", 0u64);
    sysreg!(write "pmevtyper0_el0", EVENT_CPU_CYCLES | FILTER_NSH);
    restart(1, 0);
    let events_nsh_out = kept_out_of_el2(counter0, per_tick_milli);
    env.println(format_args!(
        "pmu probe: el2 kept out: cycles {cycles_out}, cycles with NSH {cycles_nsh_out}, cycles with NSH and DP \
         {cycles_nsh_dp_out}, events with NSH {events_nsh_out}"
    ));

    // The overflow interrupt: the device tree names it, and it is a level.
    checks[7] = ("the device tree's arm,armv8-pmuv3 node names INTID 23", env.pmu_interrupt == Some(PMU_INTID as u32));
    let overflowed = match env.gic {
        Some(_) => {
            sysreg!(write "pmevtyper0_el0", EVENT_SW_INCR);
            restart(1, 0);
            sysreg!(write "pmintenset_el1", 1u64);
            let overflow = || {
                sysreg!(write "pmevcntr0_el0", u64::from(u32::MAX));
                sysreg!(write "pmswinc_el0", 1u64);
                sysreg!(read "pmovsset_el0") & 1 != 0
            };
            // Raised, taken, cleared by the handler: not pending again.
            let taken =
                overflow() && becomes_pending(PMU_INTID) && sysreg!(read "icc_iar1_el1") & 0xff_ffff == PMU_INTID;
            sysreg!(write "pmovsclr_el0", 1u64);
            if taken {
                sysreg!(write "icc_eoir1_el1", PMU_INTID);
            }
            checks[8] = ("an overflow raises INTID 23", taken);
            checks[9] = ("cleared by its handler, it is not pending again", taken && pending() != PMU_INTID);
            // Raised again, and withdrawn by clearing the overflow before it is taken.
            let raised = overflow() && becomes_pending(PMU_INTID);
            sysreg!(write "pmovsclr_el0", 1u64);
            let withdrawn = raised && pending() != PMU_INTID;
            sysreg!(write "pmintenclr_el1", 1u64);
            withdrawn
        }
        None => false,
    };
    checks[10] = ("clearing the overflow withdraws a pending INTID 23", overflowed);
    sysreg!(write "pmcr_el0", PMCR_P | PMCR_C);

    if exceptions() != exceptions_before {
        env.println(format_args!("pmu probe: FAILED: {} exceptions", exceptions() - exceptions_before));
    }
    let passed = checks.iter().filter(|(_, ok)| *ok).count();
    for (name, ok) in checks {
        if !ok {
            env.println(format_args!("pmu probe: FAILED: {name}"));
        }
    }
    let all = if exceptions() == exceptions_before { passed } else { 0 };
    env.println(format_args!("pmu probe: {all} of {} checks passed", checks.len()));
    env.system_off()
}

probe!(pmu);
