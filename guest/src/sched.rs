//! The preemptive SMP scheduler: per-CPU run queues, placement on the least-loaded CPU,
//! work stealing when a CPU runs dry, a timer-tick time slice, the park/wake primitives, and
//! CPU hotplug (a CPU drains its run queue and turns itself off; it comes back through the
//! normal secondary bring-up).
//!
//! Invariant that makes migration safe: a task is put on a run queue only once its context is
//! saved (`SchedState::on_cpu` false). The CPU switching away from a task settles its fate in
//! [`finish_switch`], running on the next task's stack.
//!
//! Hotplug: [`request_offline`] marks a CPU `Draining` (under its run-queue lock) and kicks it.
//! A draining CPU takes no new unpinned work (placement re-checks the state under the target's
//! run-queue lock), switches away from unpinned tasks at its next scheduling point (they move to
//! CPUs that take work), still runs tasks pinned to it, and once none of those is queued its
//! idle loop moves whatever is left, marks it `Offline` and calls PSCI CPU_OFF. The boot CPU
//! never goes offline, so there is always a CPU that takes work.

use crate::percpu::{self, CpuState, NO_TASK};
use crate::sync::SpinLock;
use crate::task::{self, Kind, Spec, State, TaskId, MAX_TASKS};
use crate::{arch, gic, timer};
use asyncpf_guest::placement;
use asyncpf_guest::sleepq::SleepQueue;
use asyncpf_guest::taskstate::{AfterSwitch, Woken};
use asyncpf_guest::waiters::{ParkOutcome, WaiterTable};
use core::sync::atomic::{AtomicU64, Ordering};

/// Why `schedule` was called (for the counters).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    /// The time slice ended (timer tick).
    Preempt,
    /// Another CPU queued work here, or the idle loop looks for work.
    Reschedule,
    /// The task gave up the CPU voluntarily.
    Yield,
    /// The task parked on a token.
    Block,
    /// The task exited.
    Exit,
}

/// Token namespaces (the top byte of a token), so that tokens of different users never
/// collide and a wake-all can be limited to one user.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Namespace {
    Join = 1,
    Sleep = 2,
    /// Tokens the scenarios use to check the primitives themselves.
    Scenario = 3,
    /// Asynchronous page faults: the hypervisor's tokens (`crate::apf`).
    Apf = 4,
}

/// The token `value` (low 56 bits) in `namespace`.
pub const fn token(namespace: Namespace, value: u64) -> u64 {
    (namespace as u64) << 56 | (value & ((1 << 56) - 1))
}

fn namespace_of(token: u64) -> u64 {
    token >> 56
}

static WAITERS: SpinLock<WaiterTable<TaskId, MAX_TASKS>> = SpinLock::new(WaiterTable::new());
static SLEEPERS: SpinLock<SleepQueue<MAX_TASKS>> = SpinLock::new(SleepQueue::new());

/// A spawned task, for joining it.
#[derive(Clone, Copy, Debug)]
pub struct TaskHandle {
    pub id: TaskId,
    generation: u32,
}

impl TaskHandle {
    fn token(self, namespace: Namespace) -> u64 {
        token(namespace, u64::from(self.generation) << 16 | u64::from(self.id))
    }
}

fn current_id() -> TaskId {
    percpu::this().current.load(Ordering::Relaxed) as TaskId
}

/// Whether the running task is this CPU's idle task (which must never park).
pub fn current_is_idle() -> bool {
    task::is_idle(current_id())
}

/// The running task's handle.
pub fn current() -> TaskHandle {
    let id = current_id();
    TaskHandle { id, generation: task::get(id).generation.load(Ordering::Relaxed) }
}

/// Name of the task running on this CPU ("boot" before the scheduler runs here).
pub fn current_name() -> &'static str {
    match percpu::this().current.load(Ordering::Relaxed) {
        NO_TASK => "boot",
        id => task::get(id as TaskId).spec().name,
    }
}

/// Makes this CPU's boot context its idle task (called at every bring-up of the CPU, the
/// first and those after it turned itself off, with IRQs masked).
pub fn init_this_cpu() {
    let cpu = arch::cpu_index();
    let this = percpu::this();
    task::init_idle(cpu);
    this.previous.store(NO_TASK, Ordering::Relaxed);
    this.need_resched.store(false, Ordering::Relaxed);
    this.tick_expired.store(false, Ordering::Relaxed);
    this.current.store(usize::from(task::idle_id(cpu)), Ordering::Release);
}

/// The CPU's idle loop: run whatever is runnable, otherwise wait for an interrupt; a draining
/// CPU turns itself off from here once it has nothing of its own left to run.
/// IRQs stay masked from the check to the WFI so that a wake-up cannot slip in between (WFI
/// still wakes on a pending, masked interrupt).
pub fn idle_loop() -> ! {
    loop {
        arch::irq_disable();
        schedule(Reason::Reschedule);
        if percpu::this().is_draining() {
            if leave_this_cpu() {
                crate::boot::power_off_this_cpu();
            }
            // A task pinned here arrived: run it first.
            arch::irq_enable();
            continue;
        }
        let before = arch::virtual_count();
        arch::wait_for_interrupt();
        let slept = arch::virtual_count().wrapping_sub(before);
        percpu::this().counters.idle_ticks.fetch_add(slept, Ordering::Relaxed);
        arch::irq_enable();
    }
}

/// Why a CPU cannot be asked to go offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineError {
    /// The boot CPU stays: placement relies on one CPU always taking work.
    BootCpu,
    /// No such CPU.
    NoSuchCpu,
    /// The CPU is not online (not up yet, already draining, or off).
    NotOnline(CpuState),
}

/// Asks CPU `cpu` to drain its run queue and turn itself off (PSCI CPU_OFF, from its idle
/// loop), at once (it is kicked). Returns at once; PSCI AFFINITY_INFO tells when the CPU is off.
pub fn request_offline(cpu: usize) -> Result<(), OfflineError> {
    request_offline_when(cpu, true)
}

/// As [`request_offline`], but unless `kick` the CPU starts draining only at its next
/// scheduling point of its own (a task parks, yields or exits, or its timer tick): for a CPU
/// that asks for itself, right before it parks a task.
pub fn request_offline_when(cpu: usize, kick: bool) -> Result<(), OfflineError> {
    if cpu == 0 {
        return Err(OfflineError::BootCpu);
    }
    if cpu >= percpu::count() {
        return Err(OfflineError::NoSuchCpu);
    }
    let c = percpu::get(cpu);
    {
        let _rq = c.runqueue.lock();
        if !c.is_online() {
            return Err(OfflineError::NotOnline(c.state()));
        }
        c.set_state(CpuState::Draining);
    }
    // The CPU switches away from what it runs at the reschedule, and its idle loop takes over.
    if kick {
        gic::send_sgi(cpu, gic::SGI_RESCHEDULE);
    }
    Ok(())
}

/// On a draining CPU, from its idle loop with IRQs masked: moves every queued task to CPUs that
/// take work and marks this CPU `Offline`, after which it may turn itself off. Returns false,
/// changing nothing, while a task pinned to this CPU is queued here (it runs first).
fn leave_this_cpu() -> bool {
    debug_assert!(arch::irqs_masked());
    let cpu = arch::cpu_index();
    let this = percpu::get(cpu);
    let mut moved = [0 as TaskId; MAX_TASKS];
    let mut n = 0;
    {
        let mut rq = this.runqueue.lock();
        while let Some(id) = rq.pop_front() {
            moved[n] = id;
            n += 1;
        }
        if moved[..n].iter().any(|&id| task::get(id).spec().pinned == Some(cpu)) {
            // Put everything back in order; `schedule` will pick the pinned task.
            moved[..n].iter().for_each(|&id| rq.push_back(id).expect("the tasks just taken fit"));
            return false;
        }
        this.queued.store(0, Ordering::Relaxed);
        this.set_state(CpuState::Offline);
    }
    this.hotplug.tasks_moved.fetch_add(n as u64, Ordering::Relaxed);
    moved[..n].iter().for_each(|&id| place(id, cpu));
    true
}

/// Load used for placement: queued tasks plus the running one (unless idle).
fn load(cpu: usize) -> usize {
    let c = percpu::get(cpu);
    let running = !task::is_idle(c.current.load(Ordering::Relaxed) as TaskId);
    c.queued.load(Ordering::Relaxed) + usize::from(running)
}

/// The least-loaded CPU that takes work (ties go to `preferred`), if any does.
fn least_loaded_online(preferred: usize) -> Option<usize> {
    placement::least_loaded(percpu::all().filter(|(_, c)| c.is_online()).map(|(i, _)| (i, load(i))), preferred)
}

fn enqueue(cpu: usize, id: TaskId) {
    let c = percpu::get(cpu);
    let mut rq = c.runqueue.lock();
    rq.push_back(id).expect("run queues hold every task");
    c.queued.store(rq.len(), Ordering::Relaxed);
}

/// Queues `id` on `cpu` unless the task is unpinned and `cpu` no longer takes work (checked
/// under the queue's lock, under which draining starts). Returns whether it was queued.
fn try_enqueue(cpu: usize, id: TaskId, pinned: bool) -> bool {
    let c = percpu::get(cpu);
    let mut rq = c.runqueue.lock();
    if !pinned && !c.is_online() {
        return false;
    }
    rq.push_back(id).expect("run queues hold every task");
    c.queued.store(rq.len(), Ordering::Relaxed);
    true
}

/// Queues a runnable task on its pinned CPU, else on the least-loaded CPU that takes work, and,
/// if that CPU is idle elsewhere, kicks it.
fn place(id: TaskId, preferred: usize) {
    let cpu = match task::get(id).spec().pinned {
        Some(cpu) => {
            enqueue(cpu, id);
            cpu
        }
        None => loop {
            match least_loaded_online(preferred) {
                // The choice is re-checked under the queue lock: the CPU may have started
                // draining since.
                Some(cpu) if try_enqueue(cpu, id, false) => break cpu,
                Some(_) => continue,
                // Only before the boot CPU is up (it never goes offline).
                None => {
                    enqueue(preferred, id);
                    break preferred;
                }
            }
        },
    };
    let target = percpu::get(cpu);
    if cpu != arch::cpu_index() && task::is_idle(target.current.load(Ordering::Relaxed) as TaskId) {
        gic::send_sgi(cpu, gic::SGI_RESCHEDULE);
    }
}

/// Why a task could not be spawned.
#[derive(Debug, Clone, Copy)]
pub struct NoFreeSlot;

fn spawn(spec: Spec) -> Result<TaskHandle, NoFreeSlot> {
    let id = task::create(spec).ok_or(NoFreeSlot)?;
    let handle = TaskHandle { id, generation: task::get(id).generation.load(Ordering::Relaxed) };
    place(id, arch::cpu_index());
    Ok(handle)
}

/// Optional settings of a new task.
#[derive(Clone, Copy, Default)]
pub struct SpawnOptions {
    /// Run only on this CPU.
    pub pinned: Option<usize>,
    /// Receives the task's CPU mask when it exits.
    pub cpus_out: Option<&'static AtomicU64>,
}

/// Starts an EL1 task running `entry(arg)`.
pub fn spawn_kernel(
    name: &'static str,
    entry: fn(u64),
    arg: u64,
    opts: SpawnOptions,
) -> Result<TaskHandle, NoFreeSlot> {
    spawn(Spec { name, kind: Kind::Kernel, entry: entry as usize, arg, pinned: opts.pinned, cpus_out: opts.cpus_out })
}

/// Starts an EL0 task running `entry(arg)`; `entry` must be safe to run at EL0 (touch only
/// image text/rodata and the `.user_rw` pages) and end with the exit syscall.
pub fn spawn_user(
    name: &'static str,
    entry: extern "C" fn(u64) -> !,
    arg: u64,
    opts: SpawnOptions,
) -> Result<TaskHandle, NoFreeSlot> {
    spawn(Spec { name, kind: Kind::User, entry: entry as usize, arg, pinned: opts.pinned, cpus_out: opts.cpus_out })
}

fn pop_local(cpu: usize) -> Option<TaskId> {
    let c = percpu::get(cpu);
    let mut rq = c.runqueue.lock();
    let id = rq.pop_front();
    c.queued.store(rq.len(), Ordering::Relaxed);
    id
}

/// Takes a task from the most loaded other CPU if it has at least `min_queued` waiting.
fn steal(me: usize, min_queued: usize) -> Option<TaskId> {
    let victim =
        placement::steal_victim(me, percpu::all().map(|(i, c)| (i, c.queued.load(Ordering::Relaxed))), min_queued)?;
    let c = percpu::get(victim);
    let mut rq = c.runqueue.lock();
    let id = rq.steal(|id| task::get(id).spec().pinned.is_none());
    c.queued.store(rq.len(), Ordering::Relaxed);
    id
}

/// On a draining CPU: takes a queued task pinned to it, if any.
fn pop_pinned_local(cpu: usize) -> Option<TaskId> {
    let c = percpu::get(cpu);
    let mut rq = c.runqueue.lock();
    let id = rq.steal(|id| task::get(id).spec().pinned == Some(cpu));
    c.queued.store(rq.len(), Ordering::Relaxed);
    id
}

/// Picks the next task and switches to it, or returns if the current one should go on.
/// On a draining CPU only tasks pinned to it run; others are switched away from (they move
/// on in [`finish_switch`]). IRQs must be masked.
pub fn schedule(reason: Reason) {
    debug_assert!(arch::irqs_masked());
    let cpu = arch::cpu_index();
    let this = percpu::get(cpu);
    this.need_resched.store(false, Ordering::Relaxed);
    let prev = this.current.load(Ordering::Relaxed) as TaskId;
    let prev_is_idle = task::is_idle(prev);
    // Woken between deciding to park and getting here: keep running.
    let prev_can_continue = !prev_is_idle && task::get(prev).sched.lock().may_continue();

    let draining = this.is_draining();
    // A running task only gives way to local work or to a clear imbalance elsewhere.
    let next = if draining {
        pop_pinned_local(cpu)
    } else {
        pop_local(cpu).or_else(|| steal(cpu, placement::steal_threshold(prev_can_continue)))
    };
    let prev_may_stay = prev_can_continue && (!draining || task::get(prev).spec().pinned == Some(cpu));
    let next = match next {
        Some(next) => next,
        None if prev_may_stay || prev_is_idle => return,
        None => task::idle_id(cpu),
    };

    task::get(next).sched.lock().start_running();
    let bit = 1u64 << cpu;
    if !task::is_idle(next) && task::get(next).ran_on.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        this.counters.tasks_run.fetch_add(1, Ordering::Relaxed);
    }
    this.counters.context_switches.fetch_add(1, Ordering::Relaxed);
    if reason == Reason::Preempt && prev_can_continue {
        this.counters.preemptions.fetch_add(1, Ordering::Relaxed);
    }
    crate::trace::switch((!prev_is_idle).then_some(prev), (!task::is_idle(next)).then_some(next), !prev_can_continue);
    this.previous.store(usize::from(prev), Ordering::Relaxed);
    this.current.store(usize::from(next), Ordering::Relaxed);
    // SAFETY: `prev` is the task running here (its context may be overwritten), `next` is off
    // every CPU with a saved or freshly built context (`on_cpu` was false when it was queued),
    // and IRQs are masked for the switch.
    unsafe { task::switch_context(task::get(prev).context_ptr(), task::get(next).context_ptr()) };
    finish_switch();
}

/// Settles the task this CPU just switched away from, now that its context is saved.
pub fn finish_switch() {
    let cpu = arch::cpu_index();
    let prev = percpu::get(cpu).previous.swap(NO_TASK, Ordering::Relaxed);
    if prev == NO_TASK || task::is_idle(prev as TaskId) {
        return;
    }
    let prev = prev as TaskId;
    let t = task::get(prev);
    let mut s = t.sched.lock();
    match s.switched_away() {
        // Preempted or yielded: back to the end of the local queue, unless this CPU is
        // draining (then to a CPU that takes work).
        AfterSwitch::Requeue => {
            if !try_enqueue(cpu, prev, t.spec().pinned == Some(cpu)) {
                percpu::get(cpu).hotplug.tasks_moved.fetch_add(1, Ordering::Relaxed);
                place(prev, cpu);
            }
        }
        // Woken while it was switching away: place it like any woken task.
        AfterSwitch::Place => place(prev, cpu),
        AfterSwitch::Nothing => {}
        AfterSwitch::Release => {
            drop(s);
            t.release();
        }
    }
}

/// Gives up the CPU to other runnable tasks, if any.
pub fn yield_now() {
    let irq = arch::irq_save_disable();
    schedule(Reason::Yield);
    arch::irq_restore(irq);
}

/// Parks the running task on `token` until [`wake`] or [`wake_all`] releases it. Returns at
/// once if a wake for `token` arrived earlier and was not yet consumed.
pub fn park(token: u64) {
    let irq = arch::irq_save_disable();
    let me = current_id();
    assert!(!task::is_idle(me), "the idle task cannot park");
    {
        let mut waiters = WAITERS.lock();
        match waiters.park(token, me).expect("waiter table holds every task") {
            ParkOutcome::AlreadyWoken => {
                drop(waiters);
                arch::irq_restore(irq);
                return;
            }
            // Marked parked while the table is locked, so a waker always finds it parked.
            ParkOutcome::Parked => task::get(me).sched.lock().park(),
        }
    }
    schedule(Reason::Block);
    arch::irq_restore(irq);
}

/// Makes a released task runnable again.
fn make_runnable(id: TaskId) {
    let t = task::get(id);
    let mut s = t.sched.lock();
    // Still switching away (`Woken::LeftToSwitcher`): `finish_switch` on that CPU will place it.
    if s.wake() == Woken::Place {
        place(id, arch::cpu_index());
    }
}

/// Releases the tasks parked on `token` (from any context, interrupt handlers included), or
/// records the wake for the next park on `token`. Returns how many tasks were released.
pub fn wake(token: u64) -> usize {
    let mut released = [0 as TaskId; MAX_TASKS];
    let mut n = 0;
    WAITERS
        .lock()
        .wake(token, |id| {
            released[n] = id;
            n += 1;
        })
        .expect("waiter table holds every task");
    released[..n].iter().for_each(|&id| make_runnable(id));
    n
}

/// Releases every task parked on a token of `namespace` (no wake is left pending). Returns
/// how many.
pub fn wake_all(namespace: Namespace) -> usize {
    let mut released = [0 as TaskId; MAX_TASKS];
    let mut n = 0;
    WAITERS.lock().wake_matching(
        |t| namespace_of(t) == namespace as u64,
        |id| {
            released[n] = id;
            n += 1;
        },
    );
    released[..n].iter().for_each(|&id| make_runnable(id));
    n
}

/// Number of tasks parked on tokens of `namespace`.
pub fn parked(namespace: Namespace) -> usize {
    WAITERS.lock().parked_matching(|t| namespace_of(t) == namespace as u64)
}

/// Ends the running task; wakes whoever joins it.
pub fn exit_current() -> ! {
    arch::irq_disable();
    let me = current();
    let t = task::get(me.id);
    if let Some(out) = t.spec().cpus_out {
        out.store(t.ran_on.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    wake(me.token(Namespace::Join));
    task::get(me.id).sched.lock().state = State::Exited;
    schedule(Reason::Exit);
    unreachable!("an exited task was scheduled again");
}

/// Waits until the task has exited (at once if it already has).
pub fn join(handle: TaskHandle) {
    park(handle.token(Namespace::Join));
}

/// Parks the running task for at least `ns` nanoseconds (woken by a later tick on any CPU).
pub fn sleep_ns(ns: u64) {
    let token = current().token(Namespace::Sleep);
    let deadline = arch::virtual_count() + timer::ns_to_ticks(ns);
    SLEEPERS.lock().insert(deadline, token).expect("sleep queue holds every task");
    park(token);
}

/// Timer tick on this CPU: end the time slice and wake due sleepers.
pub fn tick() {
    let this = percpu::this();
    this.tick_expired.store(true, Ordering::Relaxed);
    this.need_resched.store(true, Ordering::Relaxed);
    let mut due = [0u64; MAX_TASKS];
    let mut n = 0;
    SLEEPERS.lock().expire(arch::virtual_count(), |token| {
        due[n] = token;
        n += 1;
    });
    due[..n].iter().for_each(|&token| {
        wake(token);
    });
}

/// A reschedule SGI arrived: look at the run queue at interrupt exit.
pub fn request_reschedule() {
    percpu::this().need_resched.store(true, Ordering::Relaxed);
}

/// At interrupt exit: switch tasks if the tick or another CPU asked for it.
pub fn preempt_if_needed() {
    let this = percpu::this();
    if this.need_resched.load(Ordering::Relaxed) {
        let reason =
            if this.tick_expired.swap(false, Ordering::Relaxed) { Reason::Preempt } else { Reason::Reschedule };
        schedule(reason);
    }
}
