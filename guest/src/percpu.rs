//! Per-CPU state, indexed by the logical CPU number kept in TPIDR_EL1.
//!
//! Logical CPU 0 is the boot CPU; the others are numbered in device-tree order.

use crate::arch;
use crate::dt::MAX_CPUS;
use crate::probe::ProbeState;
use crate::sync::SpinLock;
use crate::task::{TaskId, MAX_TASKS};
use asyncpf_guest::runqueue::RunQueue;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Scheduler statistics of one CPU (reported in `per_vcpu` of every `@result`).
pub struct Counters {
    /// Distinct tasks (idle excluded) dispatched on this CPU at least once.
    pub tasks_run: AtomicU64,
    /// Switches from one task to a different one, idle included.
    pub context_switches: AtomicU64,
    /// Context switches forced by the timer tick while the running task was still runnable.
    pub preemptions: AtomicU64,
    /// Virtual timer interrupts handled.
    pub timer_ticks: AtomicU64,
    /// Counter ticks the idle loop spent in `wfi` (nothing to run here).
    pub idle_ticks: AtomicU64,
    /// Failed tries of spin locks taken on this CPU (time spent waiting for another CPU).
    pub lock_spins: AtomicU64,
}

/// CPU hotplug statistics of one CPU (the `hotplug` scenario reports them).
pub struct HotplugCounters {
    /// Times the CPU went through bring-up (1 for a CPU that never turned off).
    pub bring_ups: AtomicU64,
    /// Times the CPU called PSCI CPU_OFF.
    pub cpu_off_calls: AtomicU64,
    /// Tasks moved from this CPU to others while it was draining.
    pub tasks_moved: AtomicU64,
}

/// Where a CPU is in its life, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Not started yet, or turned off (or about to turn off): runs nothing; only tasks pinned
    /// to it may be queued on it, and they wait until it is back.
    Offline = 0,
    /// Runs its scheduler and takes new work.
    Online = 1,
    /// Asked to turn off: takes no new unpinned work, runs only tasks pinned to it, and turns
    /// itself off from its idle loop once none of them is queued.
    Draining = 2,
}

/// One CPU's state.
pub struct PerCpu {
    mpidr: AtomicU64,
    /// A [`CpuState`]. Changes to and from `Draining` by other CPUs happen under `runqueue`'s
    /// lock, so that a task is never queued, unpinned, on a CPU that will not run it.
    state: AtomicU8,
    /// The task running here.
    pub current: AtomicUsize,
    /// The task just switched away from, whose fate `sched::finish_switch` settles.
    pub previous: AtomicUsize,
    /// Set by the tick or a reschedule SGI; acted on at interrupt exit.
    pub need_resched: AtomicBool,
    /// The pending reschedule comes from the tick (a preemption, if it switches).
    pub tick_expired: AtomicBool,
    /// Tasks ready to run here.
    pub runqueue: SpinLock<RunQueue<TaskId, MAX_TASKS>>,
    /// Length of `runqueue`, readable without its lock (for load balancing).
    pub queued: AtomicUsize,
    pub counters: Counters,
    pub hotplug: HotplugCounters,
    pub probe: ProbeState,
}

/// Marks "no task" in `current` / `previous`.
pub const NO_TASK: usize = usize::MAX;

impl PerCpu {
    const fn new() -> Self {
        Self {
            mpidr: AtomicU64::new(0),
            state: AtomicU8::new(CpuState::Offline as u8),
            current: AtomicUsize::new(NO_TASK),
            previous: AtomicUsize::new(NO_TASK),
            need_resched: AtomicBool::new(false),
            tick_expired: AtomicBool::new(false),
            runqueue: SpinLock::new(RunQueue::new()),
            queued: AtomicUsize::new(0),
            counters: Counters {
                tasks_run: AtomicU64::new(0),
                context_switches: AtomicU64::new(0),
                preemptions: AtomicU64::new(0),
                timer_ticks: AtomicU64::new(0),
                idle_ticks: AtomicU64::new(0),
                lock_spins: AtomicU64::new(0),
            },
            hotplug: HotplugCounters {
                bring_ups: AtomicU64::new(0),
                cpu_off_calls: AtomicU64::new(0),
                tasks_moved: AtomicU64::new(0),
            },
            probe: ProbeState::new(),
        }
    }

    /// MPIDR affinity of this CPU.
    pub fn mpidr(&self) -> u64 {
        self.mpidr.load(Ordering::Acquire)
    }

    /// The CPU's state.
    pub fn state(&self) -> CpuState {
        match self.state.load(Ordering::Acquire) {
            0 => CpuState::Offline,
            1 => CpuState::Online,
            _ => CpuState::Draining,
        }
    }

    /// Sets the CPU's state (see the `state` field for who may).
    pub fn set_state(&self, state: CpuState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// True while the CPU runs its scheduler and takes new work.
    pub fn is_online(&self) -> bool {
        self.state() == CpuState::Online
    }

    /// True while the CPU is on its way off.
    pub fn is_draining(&self) -> bool {
        self.state() == CpuState::Draining
    }

    /// Announces that the CPU runs its scheduler (at every bring-up).
    pub fn set_online(&self) {
        self.set_state(CpuState::Online);
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Records the CPUs of the device tree (boot CPU first), before any of them starts.
pub fn init(affinities: impl Iterator<Item = u64>) {
    let mut n = 0;
    for (cpu, affinity) in CPUS.iter().zip(affinities) {
        cpu.mpidr.store(affinity, Ordering::Release);
        n += 1;
    }
    CPU_COUNT.store(n, Ordering::Release);
}

/// Number of CPUs the device tree describes (and the kernel handles).
pub fn count() -> usize {
    CPU_COUNT.load(Ordering::Acquire)
}

/// The running CPU's state.
pub fn this() -> &'static PerCpu {
    &CPUS[arch::cpu_index()]
}

/// CPU `index`'s state.
pub fn get(index: usize) -> &'static PerCpu {
    &CPUS[index]
}

/// Every configured CPU's state, with its index.
pub fn all() -> impl Iterator<Item = (usize, &'static PerCpu)> {
    CPUS.iter().take(count()).enumerate()
}

/// Adds `spins` failed spin-lock tries to this CPU's count (ignored before the CPU has its
/// index: TPIDR_EL1 out of range).
pub fn count_lock_spins(spins: u64) {
    if let Some(cpu) = CPUS.get(arch::cpu_index()) {
        cpu.counters.lock_spins.fetch_add(spins, Ordering::Relaxed);
    }
}
