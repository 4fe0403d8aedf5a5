//! The cpu-on probe: PSCI answers about a secondary CPU on its way up are KVM's. KVM marks a
//! vCPU on the moment CPU_ON accepts it, so a second CPU_ON right after a successful one gets
//! ALREADY_ON (-4), never ON_PENDING (-5), and AFFINITY_INFO says ON (0), never ON_PENDING (2).
//!
//! Each round (`rounds=N`, default 8): AFFINITY_INFO of CPU 1 (off: 1), CPU_ON of CPU 1 (0),
//! at once a second CPU_ON (-4) and AFFINITY_INFO (0); then CPU 1 runs a small stub that counts
//! its arrival and spins until released, so it stays on while the answers above are asked; the
//! probe checks AFFINITY_INFO (0) while it spins, releases it, and the stub calls CPU_OFF; the
//! probe waits for AFFINITY_INFO = OFF. On a CPU with a PMUv3 the stub also checks that each
//! power-on finds the PMU reset (not counting, no overflow, no interrupt enabled) although it
//! left it counting with an overflow interrupt raised before its CPU_OFF. Both CPUs run with the MMU off, so the shared words are
//! Device memory and need no cache maintenance.
//!
//! It prints `cpu-on probe: rounds R, first SUCCESS a, second ALREADY_ON b ON_PENDING c other d,
//! at once ON e ON_PENDING f other g, came up h, on while up i, went off j, PMU reset at power-on
//! true|false`.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use asyncpf_contract::psci;
use asyncpf_probes::{hvc, probe, Env};

/// CPU 1's MPIDR (docs/abi.md §1: vCPU i has Aff0 = i for i < 16).
const SECONDARY: u64 = 1;
/// How long to wait for the secondary to come up or go off, in milliseconds.
const WAIT_MS: u64 = 2000;

/// `[arrivals, released, PMU state]`: the stub increments the first and spins until the second
/// reaches it; it ORs the PMU state it found at power-on into the third.
/// Accessed with plain loads and stores only (Relaxed): with the MMU off, memory is Device
/// memory, where exclusive accesses are not guaranteed to work.
static MAILBOX: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

global_asm!(
    r#"
// CPU 1's entry: x0 = the mailbox. Count the arrival, spin until released, then CPU_OFF.
.section .text
.balign 4
.global cpu_on_probe_secondary
cpu_on_probe_secondary:
    // With a PMUv3: OR the PMU state found at power-on (PMCR_EL0.E, PMCNTENSET_EL0,
    // PMINTENSET_EL1, PMOVSSET_EL0: all 0 after a reset) into the third word, then leave the
    // PMU busy for the next power-on to find: counting, overflowed, its interrupt enabled.
    mrs x3, id_aa64dfr0_el1
    ubfx x3, x3, #8, #4
    cbz x3, 5f
    cmp x3, #0xf
    b.eq 5f
    mrs x4, pmcr_el0
    and x4, x4, #1
    mrs x5, pmcntenset_el0
    orr x4, x4, x5
    mrs x5, pmintenset_el1
    orr x4, x4, x5
    mrs x5, pmovsset_el0
    orr x4, x4, x5
    ldr x5, [x0, #16]
    orr x5, x5, x4
    str x5, [x0, #16]
    mov x4, #0x80000000
    msr pmcntenset_el0, x4
    msr pmintenset_el1, x4
    msr pmovsset_el0, x4
    mov x4, #1
    msr pmcr_el0, x4
    isb
5:  ldr x1, [x0]
    add x1, x1, #1
    str x1, [x0]
    dsb sy
1:  ldr x2, [x0, #8]
    cmp x2, x1
    b.lo 1b
    movz x0, #0x0002
    movk x0, #0x8400, lsl #16
    hvc #0
2:  b 2b
"#
);

unsafe extern "C" {
    /// The secondary's entry (above); only its address is used.
    fn cpu_on_probe_secondary();
}

fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

fn counter_hz() -> u64 {
    let v: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Poll `done` for up to [`WAIT_MS`].
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let give_up = counter() + counter_hz() / 1000 * WAIT_MS;
    while counter() < give_up {
        if done() {
            return true;
        }
    }
    false
}

fn cpu_on(entry: u64, context: u64) -> i64 {
    hvc(psci::CPU_ON_64 as u64, [SECONDARY, entry, context]) as i64
}

fn affinity_info() -> i64 {
    hvc(psci::AFFINITY_INFO_64 as u64, [SECONDARY, 0, 0]) as i64
}

fn cpu_on_probe(env: &Env) -> ! {
    let rounds: u64 = env.arg("rounds").and_then(|v| v.parse().ok()).unwrap_or(8);
    let entry = cpu_on_probe_secondary as *const () as u64;
    let boxed = MAILBOX.as_ptr() as u64;
    // [first SUCCESS, second ALREADY_ON, ON_PENDING, other, at once ON, ON_PENDING, other,
    //  came up, on while up, went off, off before]
    let mut t = [0u64; 11];
    for round in 1..=rounds {
        t[10] += u64::from(affinity_info() == psci::AFFINITY_OFF);
        let first = cpu_on(entry, boxed);
        let second = cpu_on(entry, boxed);
        let at_once = affinity_info();
        t[0] += u64::from(first == psci::SUCCESS);
        match second {
            psci::ALREADY_ON => t[1] += 1,
            psci::ON_PENDING => t[2] += 1,
            _ => t[3] += 1,
        }
        match at_once {
            psci::AFFINITY_ON => t[4] += 1,
            psci::AFFINITY_ON_PENDING => t[5] += 1,
            _ => t[6] += 1,
        }
        if first != psci::SUCCESS || second != psci::ALREADY_ON || at_once != psci::AFFINITY_ON {
            env.println(format_args!(
                "cpu-on probe: round {round}: CPU_ON {first}, again {second}, AFFINITY_INFO {at_once}"
            ));
        }
        let up = wait_until(|| MAILBOX[0].load(Ordering::Relaxed) >= round);
        t[7] += u64::from(up);
        t[8] += u64::from(up && affinity_info() == psci::AFFINITY_ON);
        // Releasing lets the stub call CPU_OFF.
        MAILBOX[1].store(round, Ordering::Relaxed);
        t[9] += u64::from(wait_until(|| affinity_info() == psci::AFFINITY_OFF));
        if !up {
            break;
        }
    }
    env.println(format_args!(
        "cpu-on probe: rounds {rounds}, off before {}, first SUCCESS {}, second ALREADY_ON {} ON_PENDING {} other {}, \
         at once ON {} ON_PENDING {} other {}, came up {}, on while up {}, went off {}, PMU reset at power-on {}",
        t[10],
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        t[7],
        t[8],
        t[9],
        MAILBOX[2].load(Ordering::Relaxed) == 0
    ));
    env.system_off()
}

probe!(cpu_on_probe);
