//! `overcommit`: a memory-integrity workload, the proof that memory overcommit loses nothing.
//!
//! The working set (`ws_mib=M`, default all free RAM: see `memcheck::Layout`) is split into
//! page-aligned slices, one per EL1 task, [`TASKS_PER_CPU`] tasks per vCPU, unpinned so that
//! placement spreads them and the timer preempts them. Each phase runs all tasks concurrently
//! and ends when they all have, so that every page is written before any is read back (under
//! overcommit, most of it has been evicted by then):
//! 1. `write`: every word gets `pattern(seed, address, generation 0)`, pages in ascending order;
//! 2. `verify`: every word is read back and compared, pages in a pseudo-random permutation;
//! 3. `mix`: `ops=K` operations over all tasks (default: one per working-set page), each on a
//!    random page of the task's slice: rewrite it with its next generation, or verify it;
//! 4. `final_verify`: every page verified again (another permutation) against the generation
//!    recorded for it.
//!
//! Pages' generations are kept in a table of one byte per page, carved from the free RAM just
//! below the working set (the kernel has no heap).
//!
//! Every working-set access is guarded (`crate::guard`): a synchronous external abort (the
//! hypervisor could not read the page back from its disk) is counted, its address recorded,
//! and the page is marked lost and skipped from then on. `ok` needs no mismatch, no abort, and
//! at least two full passes' worth of checked words.

use crate::guard::{Aborted, Guard};
use crate::sched::{self, SpawnOptions, TaskHandle};
use crate::sync::{BootOnce, SpinLock};
use crate::task::MAX_WORKERS;
use crate::{mm, percpu, report, scenarios, timer};
use asyncpf_guest::memcheck::{
    self, Generation, Layout, PageSlice, Permutation, Tally, MIB, PAGE_SIZE, WORDS_PER_PAGE, WORD_SIZE,
};
use asyncpf_guest::rng::SplitMix64;
use core::sync::atomic::{AtomicU64, Ordering};

/// Tasks per vCPU unless `tasks=T` says otherwise: more than one, so that a task waiting for a
/// page leaves others to run.
const TASKS_PER_CPU: u64 = 3;
/// Passes that verify the whole working set (`verify` and `final_verify`).
const FULL_VERIFY_PASSES: u64 = 2;
/// Mismatches and aborts reported individually.
const LOG_LEN: usize = 8;

/// What every task needs, set by the control task before it spawns any.
struct Config {
    seed: u64,
    layout: Layout,
    ops_per_task: u64,
}

static CONFIG: BootOnce<Config> = BootOnce::new();

fn config() -> &'static Config {
    CONFIG.get().expect("set before the tasks start")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Write,
    Verify,
    Mix,
    FinalVerify,
}

const PHASES: [Phase; 4] = [Phase::Write, Phase::Verify, Phase::Mix, Phase::FinalVerify];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Mix => "mix",
            Phase::FinalVerify => "final_verify",
        }
    }
}

/// The first `N` items of a stream (the rest are only counted, elsewhere).
struct FirstFew<T: Copy, const N: usize> {
    items: [Option<T>; N],
}

impl<T: Copy, const N: usize> FirstFew<T, N> {
    const fn new() -> Self {
        Self { items: [None; N] }
    }

    fn push(&mut self, item: T) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(item);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flatten()
    }
}

#[derive(Clone, Copy)]
struct Mismatch {
    addr: u64,
    expected: u64,
    found: u64,
}

#[derive(Clone, Copy)]
struct AbortRecord {
    /// The word the task accessed.
    addr: u64,
    /// FAR_EL1 as the exception reported it, if valid.
    far: Option<u64>,
}

/// Totals over all tasks (each task adds its own at the end of a phase).
struct Totals {
    words_checked: AtomicU64,
    mismatches: AtomicU64,
    aborts: AtomicU64,
    rewrites: AtomicU64,
    ops: AtomicU64,
}

static TOTALS: Totals = Totals {
    words_checked: AtomicU64::new(0),
    mismatches: AtomicU64::new(0),
    aborts: AtomicU64::new(0),
    rewrites: AtomicU64::new(0),
    ops: AtomicU64::new(0),
};
static MISMATCHES: SpinLock<FirstFew<Mismatch, LOG_LEN>> = SpinLock::new(FirstFew::new());
static ABORTS: SpinLock<FirstFew<AbortRecord, LOG_LEN>> = SpinLock::new(FirstFew::new());
/// Per phase and task: the CPUs the task ran on (written by the scheduler at exit).
static CPU_MASKS: [[AtomicU64; MAX_WORKERS]; PHASES.len()] =
    [const { [const { AtomicU64::new(0) }; MAX_WORKERS] }; PHASES.len()];

/// One task's view of its slice during one phase.
struct Worker {
    seed: u64,
    layout: Layout,
    slice: PageSlice,
    /// The slice's entries of the generation table.
    generations: &'static mut [Generation],
    guard: Guard,
    tally: Tally,
    rewrites: u64,
}

impl Worker {
    /// Task `task`'s slice. Only one task per slice runs at a time (phases are joined).
    fn new(task: u64) -> Self {
        let Config { seed, layout, .. } = *config();
        let slice = layout.slice(task);
        let table = (layout.generations.start + slice.first) as *mut Generation;
        // SAFETY: the generation table lies in free RAM (`mm::free_ram`: no image, stack or
        // device tree), mapped normal read-write; every byte is a valid `Generation`; slices are
        // disjoint and only this task uses this one until it exits, and the next phase's task
        // for it starts after the join.
        let generations = unsafe { core::slice::from_raw_parts_mut(table, slice.count as usize) };
        let range =
            memcheck::Span { start: layout.page_addr(slice.first), end: layout.page_addr(slice.first + slice.count) };
        Self { seed, layout, slice, generations, guard: Guard::arm(range), tally: Tally::default(), rewrites: 0 }
    }

    /// A random-number generator for this task and phase, following the seed.
    fn rng(&self, phase: Phase) -> SplitMix64 {
        SplitMix64::new(self.seed ^ (self.slice.first << 8 | phase as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn page_addr(&self, index: u64) -> u64 {
        self.layout.page_addr(self.slice.first + index)
    }

    /// The page can no longer be trusted: count the abort and skip the page from now on.
    fn lost(&mut self, index: u64, addr: u64, abort: Aborted) {
        self.tally.aborts += 1;
        self.generations[index as usize] = Generation::LOST;
        ABORTS.lock().push(AbortRecord { addr, far: abort.far });
    }

    /// Writes page `index` of the slice with `generation`.
    fn write_page(&mut self, index: u64, generation: Generation) {
        let base = self.page_addr(index);
        for addr in (base..base + PAGE_SIZE).step_by(WORD_SIZE as usize) {
            if let Err(abort) = self.guard.store(addr, memcheck::pattern(self.seed, addr, generation)) {
                return self.lost(index, addr, abort);
            }
        }
        self.generations[index as usize] = generation;
    }

    /// Reads page `index` back and compares every word with its recorded generation's pattern.
    fn verify_page(&mut self, index: u64) {
        let generation = self.generations[index as usize];
        if generation == Generation::LOST {
            return;
        }
        let base = self.page_addr(index);
        let mut mismatches = 0;
        for addr in (base..base + PAGE_SIZE).step_by(WORD_SIZE as usize) {
            let found = match self.guard.load(addr) {
                Ok(found) => found,
                Err(abort) => return self.lost(index, addr, abort),
            };
            let expected = memcheck::pattern(self.seed, addr, generation);
            if found != expected {
                mismatches += 1;
                MISMATCHES.lock().push(Mismatch { addr, expected, found });
            }
        }
        self.tally.words_checked += WORDS_PER_PAGE;
        self.tally.mismatches += mismatches;
    }

    /// Verifies the whole slice in a pseudo-random page order.
    fn verify_all(&mut self, phase: Phase) {
        let order = Permutation::new(self.slice.count, &mut self.rng(phase));
        for index in order.iter() {
            self.verify_page(index);
        }
    }

    /// Adds this task's counts to the totals.
    fn finish(self) {
        TOTALS.words_checked.fetch_add(self.tally.words_checked, Ordering::Relaxed);
        TOTALS.mismatches.fetch_add(self.tally.mismatches, Ordering::Relaxed);
        TOTALS.aborts.fetch_add(self.tally.aborts, Ordering::Relaxed);
        TOTALS.rewrites.fetch_add(self.rewrites, Ordering::Relaxed);
    }
}

/// The argument of a phase's task: the phase and the task's index.
fn task_arg(phase: Phase, task: u64) -> u64 {
    (phase as u64) << 32 | task
}

/// Every task of every phase: `arg` from [`task_arg`].
fn phase_task(arg: u64) {
    let phase = PHASES[(arg >> 32) as usize];
    let mut w = Worker::new(arg & u64::from(u32::MAX));
    match phase {
        Phase::Write => {
            for index in 0..w.slice.count {
                w.write_page(index, Generation::FIRST);
            }
        }
        // The phase seeds the page order, so the two passes read in different orders.
        Phase::Verify | Phase::FinalVerify => w.verify_all(phase),
        Phase::Mix => {
            let mut rng = w.rng(phase);
            let ops = config().ops_per_task;
            for _ in 0..ops {
                let index = rng.below(w.slice.count);
                let generation = w.generations[index as usize];
                if rng.below(2) == 0 && generation != Generation::LOST {
                    w.write_page(index, generation.next());
                    w.rewrites += 1;
                } else {
                    w.verify_page(index);
                }
            }
            TOTALS.ops.fetch_add(ops, Ordering::Relaxed);
        }
    }
    w.finish();
}

/// Runs one phase on every slice concurrently; returns its wall time in ns.
fn run_phase(phase: Phase, tasks: u64) -> u64 {
    let start = timer::now_ns();
    let mut handles: [Option<TaskHandle>; MAX_WORKERS] = [None; MAX_WORKERS];
    for (task, slot) in handles.iter_mut().enumerate().take(tasks as usize) {
        let opts = SpawnOptions { pinned: None, cpus_out: Some(&CPU_MASKS[phase as usize][task]) };
        let arg = task_arg(phase, task as u64);
        *slot = Some(sched::spawn_kernel("overcommit", phase_task, arg, opts).expect("free task slot"));
    }
    handles.iter().flatten().for_each(|&h| sched::join(h));
    let elapsed = timer::now_ns() - start;
    crate::println!("overcommit: {} done in {} ms", phase.name(), elapsed / 1_000_000);
    elapsed
}

/// Runs the scenario and reports.
pub fn run(seed: u64) -> ! {
    let opts = scenarios::options();
    let cpus = percpu::count() as u64;
    let tasks = (opts.tasks.unwrap_or(TASKS_PER_CPU) * cpus).min(MAX_WORKERS as u64 - 1);
    let Some(free) = mm::free_ram(scenarios::platform()) else {
        report::finish(false, Some(format_args!("no free RAM for the working set")), |_| Ok(()));
    };
    let layout = match Layout::new(free, opts.ws_mib.map(|m| m * MIB), tasks) {
        Ok(layout) => layout,
        Err(e) => {
            report::finish(false, Some(format_args!("working set does not fit in free RAM {free:x?}: {e:?}")), |_| {
                Ok(())
            })
        }
    };
    let ops = opts.ops.unwrap_or(layout.pages());
    CONFIG.set(Config { seed, layout, ops_per_task: ops.div_ceil(tasks) });
    crate::println!(
        "overcommit: working set {:#x}..{:#x} ({} MiB, {} pages), {} tasks, {} ops",
        layout.working_set.start,
        layout.working_set.end,
        layout.working_set.len() / MIB,
        layout.pages(),
        tasks,
        ops.div_ceil(tasks) * tasks
    );

    let mut phase_ns = [0u64; PHASES.len()];
    for (phase, ns) in PHASES.iter().zip(phase_ns.iter_mut()) {
        *ns = run_phase(*phase, tasks);
    }
    let elapsed_ns: u64 = phase_ns.iter().sum();

    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let tally = Tally {
        words_checked: load(&TOTALS.words_checked),
        mismatches: load(&TOTALS.mismatches),
        aborts: load(&TOTALS.aborts),
    };
    let ws_bytes = layout.working_set.len();
    let ok = memcheck::passed(tally, ws_bytes, FULL_VERIFY_PASSES);
    let task_cpus = |task: usize| CPU_MASKS.iter().fold(0, |mask, phase| mask | load(&phase[task]));
    let vcpus_used = (0..tasks as usize).fold(0u64, |mask, t| mask | task_cpus(t)).count_ones();
    let error = format_args!(
        "mismatches={} aborts={} words_checked={} (at least {} needed)",
        tally.mismatches,
        tally.aborts,
        tally.words_checked,
        ws_bytes / WORD_SIZE * FULL_VERIFY_PASSES
    );
    let mismatches = MISMATCHES.lock();
    let aborts = ABORTS.lock();
    report::finish(ok, (!ok).then_some(error), |j| {
        j.u64(Some("seed"), seed)?;
        j.begin_object(Some("check"))?;
        j.u64(Some("words_checked"), tally.words_checked)?;
        j.u64(Some("mismatches"), tally.mismatches)?;
        j.begin_array(Some("first_mismatches"))?;
        for m in mismatches.iter() {
            j.begin_object(None)?;
            j.str_fmt(Some("addr"), format_args!("{:#x}", m.addr))?;
            j.str_fmt(Some("expected"), format_args!("{:#x}", m.expected))?;
            j.str_fmt(Some("found"), format_args!("{:#x}", m.found))?;
            j.end_object()?;
        }
        j.end_array()?;
        j.end_object()?;
        j.u64(Some("ws_bytes"), ws_bytes)?;
        j.str_fmt(Some("ws_base"), format_args!("{:#x}", layout.working_set.start))?;
        j.u64(Some("ws_pages"), layout.pages())?;
        j.u64(Some("tasks"), tasks)?;
        j.u64(Some("vcpus_used"), u64::from(vcpus_used))?;
        j.u64(Some("full_verify_passes"), FULL_VERIFY_PASSES)?;
        j.u64(Some("ops"), load(&TOTALS.ops))?;
        j.u64(Some("rewrites"), load(&TOTALS.rewrites))?;
        j.u64(Some("aborts"), tally.aborts)?;
        j.begin_array(Some("abort_addresses"))?;
        for a in aborts.iter() {
            j.begin_object(None)?;
            j.str_fmt(Some("addr"), format_args!("{:#x}", a.addr))?;
            match a.far {
                Some(far) => j.str_fmt(Some("far"), format_args!("{far:#x}"))?,
                None => j.str(Some("far"), "invalid")?,
            }
            j.end_object()?;
        }
        j.end_array()?;
        j.u64(Some("elapsed_ms"), elapsed_ns / 1_000_000)?;
        j.begin_object(Some("phases_ms"))?;
        for (phase, ns) in PHASES.iter().zip(phase_ns) {
            j.u64(Some(phase.name()), ns / 1_000_000)?;
        }
        j.end_object()?;
        j.begin_array(Some("per_task"))?;
        for task in 0..tasks {
            let slice = layout.slice(task);
            j.begin_object(None)?;
            j.u64(Some("task"), task)?;
            j.u64(Some("pages"), slice.count)?;
            j.u64(Some("cpu_mask"), task_cpus(task as usize))?;
            j.end_object()?;
        }
        j.end_array()
    });
}
