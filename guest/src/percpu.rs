//! Per-CPU state, indexed by the logical CPU number kept in TPIDR_EL1.
//!
//! Logical CPU 0 is the boot CPU; the others are numbered in device-tree order.

use crate::arch;
use crate::dt::MAX_CPUS;
use crate::probe::ProbeState;
use crate::sync::SpinLock;
use crate::task::{TaskId, MAX_TASKS};
use asyncpf_guest::runqueue::RunQueue;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
}

/// One CPU's state.
pub struct PerCpu {
    mpidr: AtomicU64,
    online: AtomicBool,
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
    pub probe: ProbeState,
}

/// Marks "no task" in `current` / `previous`.
pub const NO_TASK: usize = usize::MAX;

impl PerCpu {
    const fn new() -> Self {
        Self {
            mpidr: AtomicU64::new(0),
            online: AtomicBool::new(false),
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
            },
            probe: ProbeState::new(),
        }
    }

    /// MPIDR affinity of this CPU.
    pub fn mpidr(&self) -> u64 {
        self.mpidr.load(Ordering::Acquire)
    }

    /// True once the CPU runs its scheduler.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Announces that the CPU runs its scheduler.
    pub fn set_online(&self) {
        self.online.store(true, Ordering::Release);
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
