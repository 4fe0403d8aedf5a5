//! `hostile`: the guest misbehaves on purpose and must survive.
//!
//! One pinned task per CPU, concurrently:
//! - makes pseudo-random SMCCC calls through `hvc #0` and `smc #0` (never one that changes
//!   the power state, see `asyncpf_guest::hostile_policy`), counting the answers and the calls
//!   that raised UNDEFINED;
//! - reads addresses in the device window that the device tree does not describe, counting
//!   the synchronous external aborts;
//! - reads and writes implementation-defined and PMU system registers, counting UNDEFINEDs.
//!
//! Every faulting instruction runs as a probe (`crate::probe`). Then the vendor hypervisor
//! service's CALL_UID is checked, and a few ordinary EL0 and EL1 tasks must still run to the
//! end. What the hypervisor answered is for the runner to judge: the scenario reports raw
//! counts and is `ok` when the guest survived.

use crate::dt::Range;
use crate::exceptions::ec;
use crate::psci::Conduit;
use crate::sched::{self, SpawnOptions};
use crate::{mm, percpu, probe, report, scenarios, syscall};
use asyncpf_contract::hypcall;
use asyncpf_guest::hostile_policy;
use asyncpf_guest::rng::SplitMix64;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// SMCCC calls over all CPUs.
const TOTAL_CALLS: usize = 10_000;
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

/// Scenario counters, summed over CPUs.
struct Stats {
    calls: AtomicU64,
    hvc_calls: AtomicU64,
    smc_calls: AtomicU64,
    not_supported: AtomicU64,
    other_answers: AtomicU64,
    undef_caught: AtomicU64,
    /// Calls that raised an exception other than UNDEFINED.
    call_other_exceptions: AtomicU64,
    hole_reads: AtomicU64,
    aborts_caught: AtomicU64,
    /// Hole reads that returned a value instead of aborting.
    hole_reads_answered: AtomicU64,
    /// Hole reads that raised something other than a data abort.
    hole_other_exceptions: AtomicU64,
    sysreg_accesses: AtomicU64,
    undefs_caught: AtomicU64,
    sysreg_other_exceptions: AtomicU64,
}

static STATS: Stats = Stats {
    calls: AtomicU64::new(0),
    hvc_calls: AtomicU64::new(0),
    smc_calls: AtomicU64::new(0),
    not_supported: AtomicU64::new(0),
    other_answers: AtomicU64::new(0),
    undef_caught: AtomicU64::new(0),
    call_other_exceptions: AtomicU64::new(0),
    hole_reads: AtomicU64::new(0),
    aborts_caught: AtomicU64::new(0),
    hole_reads_answered: AtomicU64::new(0),
    hole_other_exceptions: AtomicU64::new(0),
    sysreg_accesses: AtomicU64::new(0),
    undefs_caught: AtomicU64::new(0),
    sysreg_other_exceptions: AtomicU64::new(0),
};

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An SMCCC call with x0..x7 set; returns x0..x3. x0..x17 may be clobbered (SMCCC 1.0 rules,
/// the most pessimistic).
fn raw_call(conduit: Conduit, regs: [u64; 8]) -> [u64; 4] {
    let [mut r0, mut r1, mut r2, mut r3, r4, r5, r6, r7] = regs;
    macro_rules! call {
        ($insn:literal) => {
            // SAFETY: the function ID passed `hostile_policy::is_allowed` (or is CALL_UID), so the
            // call cannot change the power state or plant a callback; no argument points into
            // the guest's RAM, so the hypervisor cannot write over it. Every possibly clobbered
            // register is declared. If the instruction is UNDEFINED, the armed probe skips it.
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

fn fuzz_calls(rng: &mut SplitMix64, count: usize, ram: &[(u64, u64)]) {
    for _ in 0..count {
        let conduit = if rng.below(2) == 0 { Conduit::Hvc } else { Conduit::Smc };
        let mut regs = [0u64; 8];
        regs[0] = hostile_policy::draw_function_id(rng);
        for r in regs.iter_mut().skip(1) {
            *r = hostile_policy::draw_argument(rng, ram);
        }
        let mut answer = 0;
        let caught = probe::run(|| answer = raw_call(conduit, regs)[0]);
        bump(&STATS.calls);
        bump(if conduit == Conduit::Hvc { &STATS.hvc_calls } else { &STATS.smc_calls });
        match caught {
            Some(ec::UNKNOWN) => bump(&STATS.undef_caught),
            Some(_) => bump(&STATS.call_other_exceptions),
            // -1 in x0, or in w0 for an SMC32/HVC32 call.
            None if answer == u64::MAX || answer == u64::from(u32::MAX) => bump(&STATS.not_supported),
            None => bump(&STATS.other_answers),
        }
    }
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

/// One CPU's share of the abuse; `arg` = CPU index, the seed comes from `SEED`.
fn abuser(cpu: u64) {
    let cpus = percpu::count();
    let seed = *SEED.get().expect("seed set before the abusers start");
    let mut rng = SplitMix64::new(seed ^ cpu.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let platform = scenarios::platform();
    let mut ram = [(0u64, 0u64); crate::dt::MAX_RAM_RANGES];
    for (slot, r) in ram.iter_mut().zip(platform.ram()) {
        *slot = (r.base, r.size);
    }
    let ram = &ram[..platform.ram().len()];
    let (holes, n_holes) = find_holes();

    let share = |total: usize| total.div_ceil(cpus);
    fuzz_calls(&mut rng, share(TOTAL_CALLS), ram);
    read_holes(&holes[..n_holes], share(TOTAL_HOLE_READS), cpu as usize);
    probe_sysregs(share(TOTAL_SYSREG_ROUNDS));
}

static SEED: crate::sync::BootOnce<u64> = crate::sync::BootOnce::new();

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
    SEED.set(seed);
    let cpus = percpu::count();
    let mut abusers = [None; crate::dt::MAX_CPUS];
    for (cpu, slot) in abusers.iter_mut().enumerate().take(cpus) {
        let opts = SpawnOptions { pinned: Some(cpu), cpus_out: None };
        *slot = Some(sched::spawn_kernel("hostile", abuser, cpu as u64, opts).expect("free task slot"));
    }
    abusers.iter().flatten().for_each(|&h| sched::join(h));

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

    let (holes, n_holes) = find_holes();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    report::finish(true, None, |j| {
        j.u64(Some("seed"), seed)?;
        j.u64(Some("calls"), get(&STATS.calls))?;
        j.u64(Some("hvc_calls"), get(&STATS.hvc_calls))?;
        j.u64(Some("smc_calls"), get(&STATS.smc_calls))?;
        j.u64(Some("not_supported"), get(&STATS.not_supported))?;
        j.u64(Some("other_answers"), get(&STATS.other_answers))?;
        j.u64(Some("undef_caught"), get(&STATS.undef_caught))?;
        j.u64(Some("call_other_exceptions"), get(&STATS.call_other_exceptions))?;
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
        j.u64(Some("aftermath_tasks"), calm.len() as u64)
    });
}
