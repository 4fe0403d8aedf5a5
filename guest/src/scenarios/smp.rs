//! `smp`: more CPU-bound tasks than CPUs, half at EL0 and half at EL1. They never yield, so
//! they share the CPUs only through timer preemption; placement and stealing spread them.
//! Also one EL0 task checks the sleep and time system calls, and EL1 tasks check the park/wake
//! primitives: a wake that comes before the park is not lost, and a wake-all releases every
//! task parked in its namespace.

use crate::sched::{self, Namespace, SpawnOptions, TaskHandle};
use crate::task::MAX_WORKERS;
use crate::{percpu, report, syscall, timer};
use asyncpf_guest::rng::SplitMix64;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

const TASKS_PER_CPU: usize = 3;
/// At least this many tasks of each kind, whatever the CPU count.
const MIN_TASKS_PER_KIND: usize = 2;
/// Work units per task: this base plus up to half again, drawn from the seed.
const BASE_UNITS: u64 = 120;
/// Mixing rounds per work unit.
const ROUNDS_PER_UNIT: u64 = 100_000;
/// What the sleep-check task asks for.
const SLEEP_NS: u64 = 30_000_000;
/// Tasks parked and then released together by one wake-all.
const WAKE_ALL_TASKS: u64 = 3;
/// Token value (in the scenario namespace) of the wake-before-park check.
const EARLY_WAKE_VALUE: u64 = 0x100;
/// How long to wait for the wake-all tasks to park.
const PARK_WAIT_NS: u64 = 1_000_000_000;

/// Parker tasks that got past their park.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// One worker's progress, in pages EL0 may write (EL1 workers use the same record).
#[repr(C)]
pub struct Progress {
    done_units: AtomicU64,
    target_units: AtomicU64,
    /// Written by the sleep-check task: measured sleep.
    slept_ns: AtomicU64,
    /// Written by the kernel when the task exits: bit n = ran on CPU n.
    cpu_mask: AtomicU64,
}

#[link_section = ".user_rw"]
static PROGRESS: [Progress; MAX_WORKERS] = [const {
    Progress {
        done_units: AtomicU64::new(0),
        target_units: AtomicU64::new(0),
        slept_ns: AtomicU64::new(0),
        cpu_mask: AtomicU64::new(0),
    }
}; MAX_WORKERS];

/// One unit of CPU-bound work (identical at EL0 and EL1).
#[inline(always)]
fn work_unit(mut x: u64) -> u64 {
    for _ in 0..ROUNDS_PER_UNIT {
        x = black_box(x.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(0x1405_7B7E_F767_814F));
        x ^= x >> 29;
    }
    x
}

fn run_units(progress: &Progress) {
    let mut x = progress as *const Progress as u64;
    let target = progress.target_units.load(Ordering::Relaxed);
    for unit in 1..=target {
        x = work_unit(x);
        progress.done_units.store(unit, Ordering::Relaxed);
    }
    black_box(x);
}

/// EL0 worker: `arg` is its `Progress` record.
extern "C" fn user_worker(arg: u64) -> ! {
    // SAFETY: the kernel passes the address of one of the `PROGRESS` records, which live in
    // EL0-writable pages and outlive the task.
    let progress = unsafe { &*(arg as *const Progress) };
    run_units(progress);
    syscall::user::write("smp: EL0 worker finished\n");
    syscall::user::exit()
}

/// EL1 worker: `arg` is its `Progress` record.
fn kernel_worker(arg: u64) {
    // SAFETY: as for `user_worker`.
    let progress = unsafe { &*(arg as *const Progress) };
    run_units(progress);
}

/// EL0 task checking sleep and time: records how long a sleep really took.
extern "C" fn user_sleeper(arg: u64) -> ! {
    // SAFETY: as for `user_worker`.
    let progress = unsafe { &*(arg as *const Progress) };
    let start = syscall::user::time_ns();
    syscall::user::sleep_ns(SLEEP_NS);
    let end = syscall::user::time_ns();
    syscall::user::yield_now();
    progress.slept_ns.store(end - start, Ordering::Relaxed);
    syscall::user::exit()
}

/// EL1 task that parks on token `value` of the scenario namespace.
fn parker(value: u64) {
    sched::park(sched::token(Namespace::Scenario, value));
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// Checks the park/wake primitives; returns (early wake honoured, tasks released by wake-all).
fn check_park_wake() -> (bool, u64) {
    // Wake first: nobody is parked, so the wake is kept and the park returns at once (a lost
    // wake would leave the join below waiting forever).
    sched::wake(sched::token(Namespace::Scenario, EARLY_WAKE_VALUE));
    let early =
        sched::spawn_kernel("smp-early", parker, EARLY_WAKE_VALUE, SpawnOptions::default()).expect("free task slot");
    sched::join(early);
    let early_ok = RELEASED.load(Ordering::Relaxed) == 1;

    let mut parkers = [None; WAKE_ALL_TASKS as usize];
    for (value, slot) in (0..).zip(parkers.iter_mut()) {
        *slot = Some(sched::spawn_kernel("smp-park", parker, value, SpawnOptions::default()).expect("free task slot"));
    }
    let deadline = timer::now_ns() + PARK_WAIT_NS;
    while sched::parked(Namespace::Scenario) < WAKE_ALL_TASKS as usize && timer::now_ns() < deadline {
        sched::yield_now();
    }
    let released = sched::wake_all(Namespace::Scenario) as u64;
    // Any parker that had not parked yet gets its own (pending) wake, so that the joins end.
    if released < WAKE_ALL_TASKS {
        (0..WAKE_ALL_TASKS).for_each(|value| {
            sched::wake(sched::token(Namespace::Scenario, value));
        });
    }
    parkers.iter().flatten().for_each(|&h| sched::join(h));
    (early_ok, released)
}

#[derive(Clone, Copy)]
struct Worker {
    handle: TaskHandle,
    user: bool,
    progress: &'static Progress,
}

/// Runs the scenario and reports.
pub fn run(seed: u64) -> ! {
    let (early_wake_ok, wake_all_released) = check_park_wake();
    let mut rng = SplitMix64::new(seed);
    let cpus = percpu::count();
    let per_kind = (TASKS_PER_CPU * cpus).div_ceil(2).max(MIN_TASKS_PER_KIND);
    let count = (2 * per_kind).min(MAX_WORKERS - 1);
    let mut workers: [Option<Worker>; MAX_WORKERS] = [None; MAX_WORKERS];

    let start = timer::now_ns();
    for (i, slot) in workers.iter_mut().take(count).enumerate() {
        let progress = &PROGRESS[i];
        progress.done_units.store(0, Ordering::Relaxed);
        progress.target_units.store(BASE_UNITS + rng.below(BASE_UNITS / 2 + 1), Ordering::Relaxed);
        let arg = progress as *const Progress as u64;
        let user = i % 2 == 0;
        let opts = SpawnOptions { pinned: None, cpus_out: Some(&progress.cpu_mask) };
        let handle = if user {
            sched::spawn_user("smp-el0", user_worker, arg, opts)
        } else {
            sched::spawn_kernel("smp-el1", kernel_worker, arg, opts)
        }
        .expect("free task slot");
        *slot = Some(Worker { handle, user, progress });
    }
    let sleeper_progress = &PROGRESS[count];
    let sleeper = sched::spawn_user(
        "smp-sleep",
        user_sleeper,
        sleeper_progress as *const Progress as u64,
        SpawnOptions::default(),
    )
    .expect("free task slot");

    for worker in workers.iter().flatten() {
        sched::join(worker.handle);
    }
    sched::join(sleeper);
    let elapsed_ns = timer::now_ns() - start;

    let all_done = workers
        .iter()
        .flatten()
        .all(|w| w.progress.done_units.load(Ordering::Relaxed) == w.progress.target_units.load(Ordering::Relaxed));
    let every_cpu_ran_tasks = percpu::all().all(|(_, c)| c.counters.tasks_run.load(Ordering::Relaxed) > 0);
    let preemptions: u64 = percpu::all().map(|(_, c)| c.counters.preemptions.load(Ordering::Relaxed)).sum();
    let slept_ns = sleeper_progress.slept_ns.load(Ordering::Relaxed);
    let sleep_ok = slept_ns >= SLEEP_NS;

    let wake_all_ok = wake_all_released == WAKE_ALL_TASKS;
    let ok = all_done && every_cpu_ran_tasks && preemptions > 0 && sleep_ok && early_wake_ok && wake_all_ok;
    let error = format_args!(
        "all_done={all_done} every_cpu_ran_tasks={every_cpu_ran_tasks} preemptions={preemptions} \
         sleep_ok={sleep_ok} early_wake_ok={early_wake_ok} wake_all_released={wake_all_released}"
    );
    report::finish(ok, (!ok).then_some(error), |j| {
        j.u64(Some("seed"), seed)?;
        j.u64(Some("elapsed_ms"), elapsed_ns / 1_000_000)?;
        j.u64(Some("tasks"), count as u64)?;
        j.u64(Some("sleep_requested_ns"), SLEEP_NS)?;
        j.u64(Some("sleep_measured_ns"), slept_ns)?;
        j.bool(Some("early_wake_ok"), early_wake_ok)?;
        j.u64(Some("wake_all_expected"), WAKE_ALL_TASKS)?;
        j.u64(Some("wake_all_released"), wake_all_released)?;
        j.begin_array(Some("per_task"))?;
        for (i, w) in workers.iter().flatten().enumerate() {
            j.begin_object(None)?;
            j.u64(Some("task"), i as u64)?;
            j.str(Some("level"), if w.user { "el0" } else { "el1" })?;
            j.u64(Some("progress"), w.progress.done_units.load(Ordering::Relaxed))?;
            j.u64(Some("target"), w.progress.target_units.load(Ordering::Relaxed))?;
            j.u64(Some("cpu_mask"), w.progress.cpu_mask.load(Ordering::Relaxed))?;
            j.end_object()?;
        }
        j.end_array()
    });
}
