//! `hotplug`: secondary CPUs leave and come back through PSCI, under load.
//!
//! A control task pinned to the boot CPU runs [`ROUNDS`] rounds (`rounds=N`) over the secondaries, in a
//! seeded order: even rounds one CPU at a time, odd rounds all at once. For each CPU it checks
//! the answers about a CPU that is on (AFFINITY_INFO 0 = ON, CPU_ON ALREADY_ON), asks it to go
//! offline (`sched::request_offline`: it drains its run queue, its tasks move elsewhere, and it
//! calls CPU_OFF from its idle loop), polls AFFINITY_INFO until it answers OFF, checks that
//! nothing was left queued on it, calls CPU_ON again with the secondary entry (a second CPU_ON at
//! once must answer ON_PENDING or ALREADY_ON, as PSCI allows; this hypervisor answers ALREADY_ON,
//! as KVM does, docs/abi.md §6), polls until it is ON and its scheduler is back,
//! and then runs a probe task pinned to it. Meanwhile unpinned EL0 and EL1 workers spin and an
//! EL1 task sleeps in a loop; they must all keep going and finish when told.
//!
//! With one vCPU there is nothing to turn off: the run checks the answers about the boot CPU
//! (and the invalid-argument answers), reports `rounds_skipped: true`, and is ok if they are right.
//!
//! With `ws_mib=M` a paging load replaces the CPU-bound workers: [`PAGING_TASKS_PER_CPU`]
//! unpinned EL1 tasks per CPU sweep a working set of M MiB (larger than the resident memory
//! under `--resident-mib`), each its own slice, writing every page with a seeded pattern and
//! then reading it back, again and again until the rounds are over; the run fails on any
//! mismatch or abort. With `apf=on` their faults are asynchronous, and each secondary is asked
//! to go off right after it parks a task on an APF token ([`offline_at_park`]), so it calls
//! CPU_OFF with that token outstanding; once it is off, the control task drains its APF record
//! (`apf::drain_offline`: the wake-all that ended its session wakes the tasks still waiting for
//! its tokens), and the CPU enables APF again when it comes back (docs/abi.md §8.2).

use crate::dt::MAX_CPUS;
use crate::guard::Guard;
use crate::percpu::{self, CpuState};
use crate::sched::{self, SpawnOptions, TaskHandle};
use crate::sync::BootOnce;
use crate::{arch, boot, mm, psci, report, scenarios, syscall};
use asyncpf_contract::psci as codes;
use asyncpf_guest::cmdline;
use asyncpf_guest::json::Json;
use asyncpf_guest::memcheck::{self, Generation, Layout, MIB, PAGE_SIZE, WORDS_PER_PAGE, WORD_SIZE};
use asyncpf_guest::rng::SplitMix64;
use core::fmt;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Rounds over the secondary CPUs (`rounds=N` on the command line, at most
/// [`MAX_ROUNDS`](cmdline::MAX_ROUNDS)).
const ROUNDS: u64 = 3;
/// How long to wait for a CPU to turn off, to come back, or for a probe to run.
const WAIT_MS: u64 = 10_000;
/// Load workers per CPU (half EL0, half EL1), at most [`MAX_LOAD`].
const LOAD_PER_CPU: usize = 2;
const MAX_LOAD: usize = 16;
/// Mixing rounds per work unit (a worker checks the stop flag after each unit).
const ROUNDS_PER_UNIT: u64 = 20_000;
/// The sleeper's sleep per iteration.
const SLEEP_NS: u64 = 2_000_000;
/// An affinity no CPU has (Aff2 = 0xFF), for the invalid-argument checks.
const NO_SUCH_MPIDR: u64 = 0xFF_0000;
const NOT_RUN: u64 = u64::MAX;

/// One load worker's record, in pages EL0 may write.
#[repr(C)]
struct Worker {
    units: AtomicU64,
    /// Written by the kernel when the task exits: bit n = ran on CPU n.
    cpu_mask: AtomicU64,
}

#[link_section = ".user_rw"]
static WORKERS: [Worker; MAX_LOAD] =
    [const { Worker { units: AtomicU64::new(0), cpu_mask: AtomicU64::new(0) } }; MAX_LOAD];
/// Tells the load workers and the sleeper to finish (read at EL0 too).
#[link_section = ".user_rw"]
static STOP: AtomicBool = AtomicBool::new(false);

/// The sleeper's completed sleeps.
static SLEEPS: AtomicU64 = AtomicU64::new(0);

/// The paging tasks' name.
const PAGING_TASK_NAME: &str = "hotplug-pager";
/// Paging tasks per CPU (`ws_mib=M`), at most [`MAX_PAGING`].
const PAGING_TASKS_PER_CPU: usize = 2;
const MAX_PAGING: usize = 16;

/// The paging load's working set and seed, set before its tasks start.
struct Paging {
    seed: u64,
    layout: Layout,
}

static PAGING: BootOnce<Paging> = BootOnce::new();
/// The paging tasks' totals: full write-then-verify passes over a slice, words checked,
/// mismatches, aborts; and the union of the CPUs they ran on.
static PAGING_PASSES: AtomicU64 = AtomicU64::new(0);
static PAGING_WORDS: AtomicU64 = AtomicU64::new(0);
static PAGING_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static PAGING_ABORTS: AtomicU64 = AtomicU64::new(0);
static PAGING_CPUS: [AtomicU64; MAX_PAGING] = [const { AtomicU64::new(0) }; MAX_PAGING];

/// A paging task: its slice of the working set, written with one generation and then read back,
/// pass after pass, until told to stop (checked at every page; a pass cut short in its write
/// half is not verified).
fn paging_task(task: u64) {
    let Paging { seed, layout } = *PAGING.get().expect("set before the tasks start");
    let slice = layout.slice(task);
    let start = layout.page_addr(slice.first);
    let end = layout.page_addr(slice.first + slice.count);
    // The slice is free RAM (`mm::free_ram`), mapped normal read-write, used by this task alone.
    let guard = Guard::arm(memcheck::Span { start, end });
    let mut generation = Generation::FIRST;
    let (mut words, mut mismatches, mut aborts, mut passes) = (0, 0, 0, 0);
    'passes: while !STOP.load(Ordering::Relaxed) {
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            if STOP.load(Ordering::Relaxed) {
                break 'passes;
            }
            for addr in (page..page + PAGE_SIZE).step_by(WORD_SIZE as usize) {
                if guard.store(addr, memcheck::pattern(seed, addr, generation)).is_err() {
                    aborts += 1;
                    break 'passes;
                }
            }
        }
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            for addr in (page..page + PAGE_SIZE).step_by(WORD_SIZE as usize) {
                match guard.load(addr) {
                    Ok(found) => mismatches += u64::from(found != memcheck::pattern(seed, addr, generation)),
                    Err(_) => {
                        aborts += 1;
                        break 'passes;
                    }
                }
            }
            words += WORDS_PER_PAGE;
        }
        passes += 1;
        generation = generation.next();
    }
    PAGING_PASSES.fetch_add(passes, Ordering::Relaxed);
    PAGING_WORDS.fetch_add(words, Ordering::Relaxed);
    PAGING_MISMATCHES.fetch_add(mismatches, Ordering::Relaxed);
    PAGING_ABORTS.fetch_add(aborts, Ordering::Relaxed);
}
/// Per CPU: the CPU its last probe task ran on, and how many of its probes ran.
static PROBE_RAN_ON: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NOT_RUN) }; MAX_CPUS];
static PROBES_RUN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

#[inline(always)]
fn work_unit(mut x: u64) -> u64 {
    for _ in 0..ROUNDS_PER_UNIT {
        x = black_box(x.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(0x1405_7B7E_F767_814F));
        x ^= x >> 29;
    }
    x
}

fn spin_until_stopped(worker: &Worker) {
    let mut x = worker as *const Worker as u64;
    while !STOP.load(Ordering::Relaxed) {
        x = work_unit(x);
        worker.units.fetch_add(1, Ordering::Relaxed);
    }
    black_box(x);
}

/// EL0 load worker: `arg` is its `Worker` record.
extern "C" fn user_load(arg: u64) -> ! {
    // SAFETY: the kernel passes the address of one of the `WORKERS` records, which live in
    // EL0-writable pages and outlive the task.
    spin_until_stopped(unsafe { &*(arg as *const Worker) });
    syscall::user::exit()
}

/// EL1 load worker: `arg` is its `Worker` record.
fn kernel_load(arg: u64) {
    // SAFETY: as for `user_load`.
    spin_until_stopped(unsafe { &*(arg as *const Worker) });
}

/// EL1 task that sleeps in a loop: its wake-ups are placed while CPUs come and go.
fn sleeper(_: u64) {
    while !STOP.load(Ordering::Relaxed) {
        sched::sleep_ns(SLEEP_NS);
        SLEEPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Pinned to CPU `cpu` after it came back: records where it ran.
fn probe(cpu: u64) {
    PROBE_RAN_ON[cpu as usize].store(arch::cpu_index() as u64, Ordering::Relaxed);
    PROBES_RUN[cpu as usize].fetch_add(1, Ordering::Release);
}

fn ms_to_ticks(ms: u64) -> u64 {
    arch::counter_frequency() * ms / 1000
}

fn ticks_to_ms(ticks: u64) -> u64 {
    ticks * 1000 / arch::counter_frequency()
}

/// Polls `done` (yielding in between) until it returns true or [`WAIT_MS`] pass; returns
/// whether it did and the counter ticks waited.
fn wait_until(mut done: impl FnMut() -> bool) -> (bool, u64) {
    let start = arch::virtual_count();
    let deadline = start + ms_to_ticks(WAIT_MS);
    loop {
        if done() {
            return (true, arch::virtual_count() - start);
        }
        if arch::virtual_count() > deadline {
            return (false, arch::virtual_count() - start);
        }
        sched::yield_now();
    }
}

fn affinity(cpu: usize) -> i64 {
    psci::affinity_info(percpu::get(cpu).mpidr(), 0)
}

/// One round's plan, for the report.
#[derive(Clone, Copy)]
struct Round {
    all_at_once: bool,
    order: [usize; MAX_CPUS],
    len: usize,
}

/// What the control task saw.
struct Tally {
    seed: u64,
    cpus: usize,
    rounds: [Option<Round>; cmdline::MAX_ROUNDS as usize],
    rounds_done: u64,
    /// CPU_ON calls meant to start a CPU that is off, and how many of those CPUs came back.
    cpu_on_calls: u64,
    came_back: u64,
    came_back_per_cpu: [u64; MAX_CPUS],
    /// CPU_ON on a CPU that is on: calls, and whether all answered ALREADY_ON.
    already_on_checks: u64,
    already_on_ok: bool,
    /// AFFINITY_INFO on a CPU that is on: calls, and whether all answered ON (0).
    affinity_on_checks: u64,
    affinity_on_ok: bool,
    /// A second CPU_ON right after a successful one: calls, answers ON_PENDING / ALREADY_ON,
    /// and whether every answer was one of those.
    repeat_on_calls: u64,
    repeat_on_pending: u64,
    repeat_on_already: u64,
    repeat_on_ok: bool,
    /// AFFINITY_INFO answers while polling that are not expected at that point (e.g. OFF after
    /// a successful CPU_ON), and ON_PENDING answers seen while waiting for a CPU to come back.
    affinity_unexpected: u64,
    first_unexpected: Option<(usize, i64)>,
    on_pending_seen: u64,
    /// CPU_ON / AFFINITY_INFO with an unknown MPIDR, AFFINITY_INFO with level 1: all answered
    /// INVALID_PARAMETERS.
    invalid_answers_ok: bool,
    /// Tasks found queued on a CPU once it was off (none may be left behind).
    stranded: u64,
    /// Longest waits for a CPU to turn off and to come back.
    off_wait_ms_max: u64,
    on_wait_ms_max: u64,
    probes_ok: bool,
    /// Load: workers, their total units and the union of their CPU masks, the sleeper's sleeps,
    /// and whether every worker made progress and finished and the sleeper kept waking.
    load_workers: usize,
    load_units: u64,
    load_cpu_mask: u64,
    sleeps: u64,
    load_ok: bool,
    /// Paging load (`ws_mib`): tasks (0: none), working-set pages, CPUs the tasks ran on, and
    /// whether every word read back right with no abort, after at least one full pass.
    paging_tasks: usize,
    paging_pages: u64,
    paging_cpu_mask: u64,
    paging_ok: bool,
    /// CPUs that went off right after parking a task on an APF token ([`offline_at_park`]).
    offs_at_park: u64,
    /// The longest wait for such a park.
    park_wait_ms_max: u64,
}

impl Tally {
    fn new(seed: u64, cpus: usize) -> Self {
        Self {
            seed,
            cpus,
            rounds: [None; cmdline::MAX_ROUNDS as usize],
            rounds_done: 0,
            cpu_on_calls: 0,
            came_back: 0,
            came_back_per_cpu: [0; MAX_CPUS],
            already_on_checks: 0,
            already_on_ok: true,
            affinity_on_checks: 0,
            affinity_on_ok: true,
            repeat_on_calls: 0,
            repeat_on_pending: 0,
            repeat_on_already: 0,
            repeat_on_ok: true,
            affinity_unexpected: 0,
            first_unexpected: None,
            on_pending_seen: 0,
            invalid_answers_ok: true,
            stranded: 0,
            off_wait_ms_max: 0,
            on_wait_ms_max: 0,
            probes_ok: true,
            load_workers: 0,
            load_units: 0,
            load_cpu_mask: 0,
            sleeps: 0,
            load_ok: true,
            paging_tasks: 0,
            paging_pages: 0,
            paging_cpu_mask: 0,
            paging_ok: true,
            offs_at_park: 0,
            park_wait_ms_max: 0,
        }
    }

    fn unexpected(&mut self, cpu: usize, answer: i64) {
        self.affinity_unexpected += 1;
        self.first_unexpected.get_or_insert((cpu, answer));
    }

    /// The answers about CPU `cpu` while it is on.
    fn check_on_answers(&mut self, cpu: usize) {
        self.affinity_on_checks += 1;
        let a = affinity(cpu);
        if a != codes::AFFINITY_ON {
            self.affinity_on_ok = false;
            crate::println!("hotplug: AFFINITY_INFO of cpu {cpu} (on) answered {a}");
        }
        self.already_on_checks += 1;
        let answer = if cpu == 0 {
            // SAFETY: the boot CPU is on (it runs this), so CPU_ON can only be refused.
            unsafe { psci::cpu_on(percpu::get(0).mpidr(), boot_entry_for_refusal(), 0) }
        } else {
            boot::cpu_on(cpu)
        };
        if answer != codes::ALREADY_ON {
            self.already_on_ok = false;
            crate::println!("hotplug: CPU_ON of cpu {cpu} (on) answered {answer}");
        }
    }

    /// The invalid-argument answers.
    fn check_invalid_answers(&mut self) {
        let level1 = psci::affinity_info(percpu::get(0).mpidr(), 1);
        let unknown_affinity = psci::affinity_info(NO_SUCH_MPIDR, 0);
        // SAFETY: no CPU has this affinity, so nothing can start.
        let unknown_on = unsafe { psci::cpu_on(NO_SUCH_MPIDR, boot_entry_for_refusal(), 0) };
        self.invalid_answers_ok =
            [level1, unknown_affinity, unknown_on].iter().all(|&a| a == codes::INVALID_PARAMETERS);
        if !self.invalid_answers_ok {
            crate::println!(
                "hotplug: invalid-argument answers: AFFINITY_INFO level 1 {level1}, unknown MPIDR {unknown_affinity}, \
                 CPU_ON unknown MPIDR {unknown_on}"
            );
        }
    }

    fn write_fields(&self, j: &mut Json<'_, crate::console::RawConsole>) -> fmt::Result {
        j.u64(Some("seed"), self.seed)?;
        j.bool(Some("rounds_skipped"), self.cpus < 2)?;
        j.u64(Some("hotplug_rounds"), self.rounds_done)?;
        j.u64(Some("secondaries"), self.cpus.saturating_sub(1) as u64)?;
        let cpu_off_calls: u64 = percpu::all().map(|(_, c)| c.hotplug.cpu_off_calls.load(Ordering::Relaxed)).sum();
        j.u64(Some("cpu_off_calls"), cpu_off_calls)?;
        j.u64(Some("cpu_on_calls"), self.cpu_on_calls)?;
        j.u64(Some("came_back"), self.came_back)?;
        j.u64(Some("already_on_checks"), self.already_on_checks)?;
        j.bool(Some("already_on_ok"), self.already_on_ok)?;
        j.u64(Some("affinity_on_checks"), self.affinity_on_checks)?;
        j.bool(Some("affinity_on_ok"), self.affinity_on_ok)?;
        j.u64(Some("repeat_on_calls"), self.repeat_on_calls)?;
        j.u64(Some("repeat_on_pending"), self.repeat_on_pending)?;
        j.u64(Some("repeat_on_already"), self.repeat_on_already)?;
        j.bool(Some("repeat_on_ok"), self.repeat_on_ok)?;
        j.u64(Some("affinity_unexpected"), self.affinity_unexpected)?;
        if let Some((cpu, answer)) = self.first_unexpected {
            j.str_fmt(Some("first_unexpected"), format_args!("cpu {cpu}: {answer}"))?;
        }
        j.u64(Some("on_pending_seen"), self.on_pending_seen)?;
        j.bool(Some("invalid_answers_ok"), self.invalid_answers_ok)?;
        j.u64(Some("stranded"), self.stranded)?;
        let moved: u64 = percpu::all().map(|(_, c)| c.hotplug.tasks_moved.load(Ordering::Relaxed)).sum();
        j.u64(Some("tasks_moved"), moved)?;
        j.u64(Some("off_wait_ms_max"), self.off_wait_ms_max)?;
        j.u64(Some("on_wait_ms_max"), self.on_wait_ms_max)?;
        j.bool(Some("probes_ok"), self.probes_ok)?;
        j.u64(Some("load_workers"), self.load_workers as u64)?;
        j.u64(Some("load_units"), self.load_units)?;
        j.u64(Some("load_cpu_mask"), self.load_cpu_mask)?;
        j.u64(Some("sleeps"), self.sleeps)?;
        j.bool(Some("load_ok"), self.load_ok)?;
        if self.paging_tasks > 0 {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            j.begin_object(Some("paging"))?;
            j.u64(Some("tasks"), self.paging_tasks as u64)?;
            j.u64(Some("ws_pages"), self.paging_pages)?;
            j.u64(Some("cpu_mask"), self.paging_cpu_mask)?;
            j.u64(Some("passes"), load(&PAGING_PASSES))?;
            j.u64(Some("words_checked"), load(&PAGING_WORDS))?;
            j.u64(Some("mismatches"), load(&PAGING_MISMATCHES))?;
            j.u64(Some("aborts"), load(&PAGING_ABORTS))?;
            j.u64(Some("offs_at_park"), self.offs_at_park)?;
            j.u64(Some("park_wait_ms_max"), self.park_wait_ms_max)?;
            j.bool(Some("ok"), self.paging_ok)?;
            j.end_object()?;
        }
        j.begin_array(Some("per_round"))?;
        for (i, round) in self.rounds.iter().enumerate() {
            let Some(round) = round else { continue };
            j.begin_object(None)?;
            j.u64(Some("round"), i as u64)?;
            j.str(Some("mode"), if round.all_at_once { "all_at_once" } else { "one_by_one" })?;
            j.begin_array(Some("order"))?;
            for &cpu in &round.order[..round.len] {
                j.u64(None, cpu as u64)?;
            }
            j.end_array()?;
            j.end_object()?;
        }
        j.end_array()?;
        j.begin_array(Some("hotplug_per_vcpu"))?;
        for (i, c) in percpu::all() {
            j.begin_object(None)?;
            j.u64(Some("vcpu"), i as u64)?;
            j.u64(Some("bring_ups"), c.hotplug.bring_ups.load(Ordering::Relaxed))?;
            j.u64(Some("cpu_off_calls"), c.hotplug.cpu_off_calls.load(Ordering::Relaxed))?;
            j.u64(Some("came_back"), self.came_back_per_cpu[i])?;
            j.u64(Some("tasks_moved"), c.hotplug.tasks_moved.load(Ordering::Relaxed))?;
            j.u64(Some("probes_run"), PROBES_RUN[i].load(Ordering::Relaxed))?;
            j.end_object()?;
        }
        j.end_array()
    }

    /// Ends the run with a failure now (a CPU that did not turn off or come back may be stuck).
    fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        report::finish(false, Some(what), |j| self.write_fields(j))
    }
}

/// An entry point for CPU_ON calls that must be refused: the secondary entry would do too, but
/// the refusal must not depend on it (any 4-byte aligned RAM address is valid).
fn boot_entry_for_refusal() -> usize {
    probe as *const () as usize
}

/// Whether CPUs are asked to go off while tasks wait for their APF tokens: with the paging
/// load and `apf=on`.
fn offs_with_tokens(t: &Tally) -> bool {
    t.paging_tasks > 0 && scenarios::options().apf
}

/// With the paging load and APF: `cpu` goes off right after it next parks a task on an APF
/// token (so with that token outstanding), its way to CPU_OFF kept resident meanwhile
/// ([`touch_off_path`]). If that does not happen within [`WAIT_MS`] (no paging task faulted
/// there), it is asked as usual. Returns whether it was asked here.
fn offline_at_park(t: &mut Tally, cpu: usize) -> bool {
    if !offs_with_tokens(t) {
        return false;
    }
    crate::apf::off_at_next_park(cpu);
    let c = percpu::get(cpu);
    // Touched again at every poll: the paging load evicts what is not used.
    let (taken, ticks) = wait_until(|| {
        touch_off_path(cpu);
        !c.is_online()
    });
    t.park_wait_ms_max = t.park_wait_ms_max.max(ticks_to_ms(ticks));
    if taken || !crate::apf::cancel_off_at_next_park(cpu) {
        t.offs_at_park += 1;
        return true;
    }
    false
}

/// Reads one byte of every page of the kernel's text and read-only data and of `cpu`'s idle
/// stack, so that the way `cpu` takes to CPU_OFF is resident: that way runs with IRQs masked, so
/// each of its page faults would be synchronous and last at least the backing latency, long
/// enough for every token the CPU has outstanding to complete first. (From this task, with IRQs
/// unmasked, the faults are asynchronous.)
fn touch_off_path(cpu: usize) {
    let image = mm::image_layout();
    for page in (image.start..image.rodata_end).step_by(PAGE_SIZE as usize) {
        // SAFETY: text and rodata are mapped readable at EL1 and never written; a volatile byte
        // read has no effect on any Rust object.
        unsafe { core::ptr::read_volatile(page as *const u8) };
    }
    boot::touch_idle_stack(cpu);
}

/// Asks `cpu` to go offline; ends the run if it refuses.
fn request_offline(t: &mut Tally, cpu: usize, round: u64) {
    if offline_at_park(t, cpu) {
        return;
    }
    if let Err(e) = sched::request_offline(cpu) {
        t.fail(format_args!("round {round}: cpu {cpu} cannot go offline: {e:?}"));
    }
}

/// Waits until `cpu` is off (AFFINITY_INFO answers OFF) and checks what it left behind.
fn wait_off(t: &mut Tally, cpu: usize, round: u64, offs_before: u64) {
    let mut last = codes::AFFINITY_ON;
    let mut unexpected = None;
    let (off, ticks) = wait_until(|| {
        last = affinity(cpu);
        if last != codes::AFFINITY_ON && last != codes::AFFINITY_OFF {
            unexpected.get_or_insert(last);
        }
        last == codes::AFFINITY_OFF
    });
    if let Some(answer) = unexpected {
        t.unexpected(cpu, answer);
    }
    let c = percpu::get(cpu);
    if !off {
        t.fail(format_args!(
            "round {round}: cpu {cpu} not off after {WAIT_MS} ms: AFFINITY_INFO {last}, scheduler state {:?}, \
             {} queued",
            c.state(),
            c.queued.load(Ordering::Relaxed)
        ));
    }
    t.off_wait_ms_max = t.off_wait_ms_max.max(ticks_to_ms(ticks));
    // Its APF session ended at CPU_OFF: what is left in its record (the wake-all last) is ours.
    crate::apf::drain_offline(cpu);
    // It marked itself offline before CPU_OFF, with an empty run queue; nothing may be queued on
    // it since (no task here is pinned to a secondary while it is off).
    if c.state() != CpuState::Offline {
        t.fail(format_args!("round {round}: cpu {cpu} is off but its scheduler state is {:?}", c.state()));
    }
    let offs = c.hotplug.cpu_off_calls.load(Ordering::Acquire);
    if offs != offs_before + 1 {
        t.fail(format_args!("round {round}: cpu {cpu} is off after {} CPU_OFF calls (1 expected)", offs - offs_before));
    }
    t.stranded += c.queued.load(Ordering::Relaxed) as u64;
}

/// CPU_ON for `cpu` (off), and a second CPU_ON right after, which must be refused.
fn power_on(t: &mut Tally, cpu: usize, round: u64) {
    t.cpu_on_calls += 1;
    let answer = boot::cpu_on(cpu);
    if answer != codes::SUCCESS {
        t.fail(format_args!("round {round}: CPU_ON of cpu {cpu} (off) answered {answer}"));
    }
    t.repeat_on_calls += 1;
    match boot::cpu_on(cpu) {
        codes::ON_PENDING => t.repeat_on_pending += 1,
        codes::ALREADY_ON => t.repeat_on_already += 1,
        other => {
            t.repeat_on_ok = false;
            crate::println!("hotplug: round {round}: second CPU_ON of cpu {cpu} answered {other}");
        }
    }
}

/// Waits until `cpu` is on again and its scheduler takes work.
fn wait_on(t: &mut Tally, cpu: usize, round: u64, bring_ups_before: u64) {
    let c = percpu::get(cpu);
    let mut last = codes::AFFINITY_OFF;
    let mut unexpected = None;
    let mut pending = 0;
    let (back, ticks) = wait_until(|| {
        last = affinity(cpu);
        match last {
            codes::AFFINITY_ON_PENDING => pending += 1,
            codes::AFFINITY_ON => {}
            // OFF after a successful CPU_ON (or an error) would mean the request was lost.
            other => {
                unexpected.get_or_insert(other);
            }
        }
        last == codes::AFFINITY_ON
            && c.is_online()
            && c.hotplug.bring_ups.load(Ordering::Acquire) == bring_ups_before + 1
    });
    t.on_pending_seen += pending;
    if let Some(answer) = unexpected {
        t.unexpected(cpu, answer);
    }
    if !back {
        t.fail(format_args!(
            "round {round}: cpu {cpu} not back after {WAIT_MS} ms: AFFINITY_INFO {last}, scheduler state {:?}, \
             bring-ups {} (expected {})",
            c.state(),
            c.hotplug.bring_ups.load(Ordering::Relaxed),
            bring_ups_before + 1
        ));
    }
    t.on_wait_ms_max = t.on_wait_ms_max.max(ticks_to_ms(ticks));
    t.came_back += 1;
    t.came_back_per_cpu[cpu] += 1;
}

/// Runs a task pinned to `cpu` (back on) and checks that it ran there.
fn run_probe(t: &mut Tally, cpu: usize, round: u64) {
    let before = PROBES_RUN[cpu].load(Ordering::Acquire);
    PROBE_RAN_ON[cpu].store(NOT_RUN, Ordering::Relaxed);
    let handle =
        sched::spawn_kernel("hotplug-probe", probe, cpu as u64, SpawnOptions { pinned: Some(cpu), cpus_out: None })
            .expect("free task slot");
    let (ran, _) = wait_until(|| PROBES_RUN[cpu].load(Ordering::Acquire) > before);
    if !ran {
        t.probes_ok = false;
        t.fail(format_args!("round {round}: the task pinned to cpu {cpu} did not run within {WAIT_MS} ms"));
    }
    sched::join(handle);
    let ran_on = PROBE_RAN_ON[cpu].load(Ordering::Relaxed);
    if ran_on != cpu as u64 {
        t.probes_ok = false;
        crate::println!("hotplug: round {round}: the task pinned to cpu {cpu} ran on cpu {ran_on}");
    }
}

/// A seeded order of the secondary CPUs.
fn shuffled_secondaries(rng: &mut SplitMix64, cpus: usize) -> ([usize; MAX_CPUS], usize) {
    let mut order = [0; MAX_CPUS];
    let len = cpus - 1;
    for (i, slot) in order.iter_mut().take(len).enumerate() {
        *slot = i + 1;
    }
    for i in (1..len).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    (order, len)
}

#[derive(Clone, Copy)]
struct Load {
    handles: [Option<TaskHandle>; MAX_LOAD],
    sleeper: TaskHandle,
    count: usize,
    paging: [Option<TaskHandle>; MAX_PAGING],
    paging_count: usize,
}

/// Starts the paging tasks if the command line asks for a working set (`ws_mib`); ends the run
/// if it does not fit.
fn start_paging(t: &mut Tally, cpus: usize, seed: u64) -> ([Option<TaskHandle>; MAX_PAGING], usize) {
    let mut handles = [None; MAX_PAGING];
    let Some(ws_mib) = scenarios::options().ws_mib else {
        return (handles, 0);
    };
    let count = (PAGING_TASKS_PER_CPU * cpus).min(MAX_PAGING);
    let layout =
        mm::free_ram(scenarios::platform()).and_then(|free| Layout::new(free, Some(ws_mib * MIB), count as u64).ok());
    let Some(layout) = layout else {
        t.fail(format_args!("a working set of {ws_mib} MiB does not fit in free RAM"));
    };
    PAGING.set(Paging { seed, layout });
    t.paging_tasks = count;
    t.paging_pages = layout.pages();
    crate::println!("hotplug: paging load: {} tasks over {} MiB ({} pages)", count, ws_mib, layout.pages());
    for (i, slot) in handles.iter_mut().take(count).enumerate() {
        let opts = SpawnOptions { pinned: None, cpus_out: Some(&PAGING_CPUS[i]) };
        *slot = Some(sched::spawn_kernel(PAGING_TASK_NAME, paging_task, i as u64, opts).expect("free task slot"));
    }
    (handles, count)
}

fn start_load(t: &mut Tally, cpus: usize, seed: u64) -> Load {
    STOP.store(false, Ordering::Relaxed);
    SLEEPS.store(0, Ordering::Relaxed);
    // With the paging load its tasks are the load: CPU-bound workers beside them would keep
    // each CPU busy for whole ticks, and a CPU asked to go off after an APF park would be
    // stalled (under -icount, halted vCPUs wait for the busy one's time slice).
    let count = if scenarios::options().ws_mib.is_some() { 0 } else { (LOAD_PER_CPU * cpus).min(MAX_LOAD) };
    let mut handles = [None; MAX_LOAD];
    for (i, slot) in handles.iter_mut().take(count).enumerate() {
        let worker = &WORKERS[i];
        worker.units.store(0, Ordering::Relaxed);
        worker.cpu_mask.store(0, Ordering::Relaxed);
        let arg = worker as *const Worker as u64;
        let opts = SpawnOptions { pinned: None, cpus_out: Some(&worker.cpu_mask) };
        let handle = if i % 2 == 0 {
            sched::spawn_user("hotplug-el0", user_load, arg, opts)
        } else {
            sched::spawn_kernel("hotplug-el1", kernel_load, arg, opts)
        };
        *slot = Some(handle.expect("free task slot"));
    }
    let sleeper = sched::spawn_kernel("hotplug-sleep", sleeper, 0, SpawnOptions::default()).expect("free task slot");
    let (paging, paging_count) = start_paging(t, cpus, seed);
    Load { handles, sleeper, count, paging, paging_count }
}

fn stop_load(t: &mut Tally, load: &Load) {
    STOP.store(true, Ordering::Relaxed);
    load.handles.iter().flatten().for_each(|&h| sched::join(h));
    sched::join(load.sleeper);
    load.paging.iter().flatten().for_each(|&h| sched::join(h));
    if load.paging_count > 0 {
        let load_of = |c: &AtomicU64| c.load(Ordering::Relaxed);
        t.paging_cpu_mask = PAGING_CPUS[..load.paging_count].iter().fold(0, |m, c| m | load_of(c));
        t.paging_ok = load_of(&PAGING_MISMATCHES) == 0
            && load_of(&PAGING_ABORTS) == 0
            && load_of(&PAGING_WORDS) > 0
            && load_of(&PAGING_PASSES) > 0;
    }
    t.load_workers = load.count;
    t.load_units = WORKERS[..load.count].iter().map(|w| w.units.load(Ordering::Relaxed)).sum();
    t.load_cpu_mask = WORKERS[..load.count].iter().fold(0, |m, w| m | w.cpu_mask.load(Ordering::Relaxed));
    t.sleeps = SLEEPS.load(Ordering::Relaxed);
    t.load_ok = WORKERS[..load.count].iter().all(|w| w.units.load(Ordering::Relaxed) > 0) && t.sleeps > 0;
}

/// The control task, pinned to the boot CPU: the rounds, the checks, the report.
fn control(seed: u64) {
    let cpus = percpu::count();
    let mut t = Tally::new(seed, cpus);
    let mut rng = SplitMix64::new(seed);
    for cpu in 0..cpus {
        t.check_on_answers(cpu);
    }
    t.check_invalid_answers();
    if cpus < 2 {
        crate::println!("hotplug: one vCPU: no secondary to turn off, rounds skipped");
        let ok = t.already_on_ok && t.affinity_on_ok && t.invalid_answers_ok;
        let error = (!ok).then_some(format_args!("wrong PSCI answers about the boot CPU"));
        report::finish(ok, error, |j| t.write_fields(j));
    }

    let load = start_load(&mut t, cpus, seed);
    let rounds = scenarios::options().rounds.unwrap_or(ROUNDS);
    for round in 0..rounds {
        let (order, len) = shuffled_secondaries(&mut rng, cpus);
        let all_at_once = round % 2 == 1;
        t.rounds[round as usize] = Some(Round { all_at_once, order, len });
        let order = &order[..len];
        // Counters before the round, to check each CPU turned off once and came up once.
        let mut offs = [0; MAX_CPUS];
        let mut ups = [0; MAX_CPUS];
        for &cpu in order {
            offs[cpu] = percpu::get(cpu).hotplug.cpu_off_calls.load(Ordering::Acquire);
            ups[cpu] = percpu::get(cpu).hotplug.bring_ups.load(Ordering::Acquire);
        }
        if all_at_once {
            for &cpu in order {
                t.check_on_answers(cpu);
                request_offline(&mut t, cpu, round);
            }
            order.iter().for_each(|&cpu| wait_off(&mut t, cpu, round, offs[cpu]));
            order.iter().for_each(|&cpu| power_on(&mut t, cpu, round));
            order.iter().for_each(|&cpu| wait_on(&mut t, cpu, round, ups[cpu]));
            order.iter().for_each(|&cpu| run_probe(&mut t, cpu, round));
        } else {
            for &cpu in order {
                t.check_on_answers(cpu);
                request_offline(&mut t, cpu, round);
                wait_off(&mut t, cpu, round, offs[cpu]);
                power_on(&mut t, cpu, round);
                wait_on(&mut t, cpu, round, ups[cpu]);
                run_probe(&mut t, cpu, round);
            }
        }
        t.rounds_done += 1;
        crate::println!(
            "hotplug: round {round} ({}) done: order {order:?}; longest wait off {} ms, on {} ms",
            if all_at_once { "all at once" } else { "one by one" },
            t.off_wait_ms_max,
            t.on_wait_ms_max
        );
    }
    stop_load(&mut t, &load);

    let secondaries = (cpus - 1) as u64;
    let expected = rounds * secondaries;
    let cpu_off_calls: u64 = percpu::all().map(|(_, c)| c.hotplug.cpu_off_calls.load(Ordering::Relaxed)).sum();
    let bring_ups_ok =
        percpu::all().all(|(i, c)| c.hotplug.bring_ups.load(Ordering::Relaxed) == if i == 0 { 1 } else { rounds + 1 });
    let probes_ok = t.probes_ok && (1..cpus).all(|cpu| PROBES_RUN[cpu].load(Ordering::Relaxed) == rounds);
    t.probes_ok = probes_ok;
    let counts_ok = cpu_off_calls == expected && t.cpu_on_calls == expected && t.came_back == expected;
    let ok = counts_ok
        && bring_ups_ok
        && probes_ok
        && t.already_on_ok
        && t.affinity_on_ok
        && t.repeat_on_ok
        && t.invalid_answers_ok
        && t.affinity_unexpected == 0
        && t.stranded == 0
        && t.load_ok
        && t.paging_ok;
    let error = format_args!(
        "cpu_off_calls={cpu_off_calls} cpu_on_calls={} came_back={} (expected {expected}) bring_ups_ok={bring_ups_ok} \
         probes_ok={probes_ok} already_on_ok={} affinity_on_ok={} repeat_on_ok={} invalid_answers_ok={} \
         affinity_unexpected={} stranded={} load_ok={} paging_ok={}",
        t.cpu_on_calls,
        t.came_back,
        t.already_on_ok,
        t.affinity_on_ok,
        t.repeat_on_ok,
        t.invalid_answers_ok,
        t.affinity_unexpected,
        t.stranded,
        t.load_ok,
        t.paging_ok
    );
    report::finish(ok, (!ok).then_some(error), |j| t.write_fields(j));
}

/// Runs the scenario and reports (from the control task, pinned to the boot CPU).
pub fn run(seed: u64) -> ! {
    let control = sched::spawn_kernel("hotplug-ctl", control, seed, SpawnOptions { pinned: Some(0), cpus_out: None })
        .expect("free task slot");
    sched::join(control);
    report::finish(false, Some(format_args!("the hotplug control task ended without a report")), |_| Ok(()));
}
