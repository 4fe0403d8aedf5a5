//! A model test of the guest's park/wake rules for asynchronous page faults, from several
//! CPUs' point of view: the library's waiter table, per-CPU accepted tokens (`apfsession`),
//! task state machine (`taskstate`), run queues and placement, driven by random sequences of
//! what the hypervisor and the CPUs do, composed the way `sched.rs` and `apf.rs` compose them,
//! and checked against a reference that only knows which tokens were accepted, completed and
//! ended.
//!
//! Each operation is one critical section of the kernel (a locked or IRQ-masked step), so the
//! interleavings are those of the real CPUs at that granularity: a wake from another CPU can
//! come between a task's park and its CPU's switch, between the switch and `finish_switch`,
//! and a page_ready or a WAKE_ALL between page_not_present's accept and the park.
//!
//! Properties, checked after every operation:
//! - no double wake-up: the waiter table only ever releases a parked task, a task is released
//!   at most once per token, and never queued while queued, running or still on its CPU;
//! - no spurious wake-up: a task is released only once its token completed (first page_ready
//!   of it in its own CPU's ring) or its CPU's session ended (that CPU's WAKE_ALL, a new
//!   APF_ENABLE, or CPU_OFF): never by another CPU's WAKE_ALL, a duplicate, stale or unknown
//!   token;
//! - no lost wake-up: no task stays parked on a token whose release is due, a runnable task is
//!   on exactly one run queue, and after the run settles every accepted token released its
//!   task exactly once;
//! - early wakes are bounded: the waiter table holds a pending APF wake only for the token
//!   that a CPU accepted and has not parked on yet, so at most one per CPU;
//! - nothing overflows silently: the accepted set refuses (the fault is declined) instead of
//!   dropping a token, and the waiter table never reports `TableFull` (it has a slot per task
//!   plus one per CPU, as `MAX_TASKS` = CPUs + workers gives the kernel);
//! - an offline CPU has nothing queued.

use crate::apfsession::{Accepted, Entry};
use crate::placement;
use crate::runqueue::RunQueue;
use crate::taskstate::{AfterSwitch, SchedState, State, Woken};
use crate::waiters::{ParkOutcome, WaiterTable};
use asyncpf_contract::apf::{TOKEN_NONE, TOKEN_WAKE_ALL};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::vec;
use std::vec::Vec;

const MAX_CPUS: usize = 4;
const MAX_WORKERS: usize = 6;
/// Small, so that refusals happen: the hypervisor's limit is drawn up to 5.
const ACCEPT_SLOTS: usize = 3;
/// What the kernel has: `MAX_TASKS` slots, one per task, idle tasks (which never park)
/// included, so one per CPU is left for the early wake of the task between accept and park.
const TABLE_SLOTS: usize = MAX_CPUS + MAX_WORKERS;
/// The namespaces of the kernel's tokens (`sched::Namespace::Sleep`, `::Apf`).
const SLEEP: u64 = 2 << 56;
const APF: u64 = 4 << 56;

type TaskId = u16;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// The task running on the CPU faults; page_not_present is delivered (if the hypervisor
    /// may) and the handler accepts or declines.
    Fault(usize),
    /// The IRQ exit path parks the task whose fault the CPU accepted.
    Park(usize),
    /// A scheduling point (tick, yield, the switch after a park, the idle loop).
    Schedule(usize),
    /// The running task goes to sleep: its token joins the sleepers, then it parks (`Park`).
    Sleep(usize),
    /// A timer tick on a CPU expires one sleeper (picked by index) and wakes it: a wake from
    /// any CPU, at any point of the sleeper's park and switch.
    Tick(usize, usize),
    /// `finish_switch` after a context switch.
    FinishSwitch(usize),
    /// PPI 22: the CPU drains its ring.
    Drain(usize),
    /// The hypervisor posts the page_ready of one in-flight token (picked by index).
    Complete(usize),
    /// A hostile or buggy hypervisor posts an entry: 0 a duplicate of a posted token, 1 a token
    /// never issued, 2 another CPU's in-flight token, 3 TOKEN_NONE.
    Bogus(usize, u8, usize),
    /// APF_DISABLE: the session ends with a WAKE_ALL in the ring.
    Disable(usize),
    /// APF_ENABLE on the CPU (a new session) and the guest wakes the old one's tasks, IRQs
    /// masked throughout (`apf::enable_this_cpu`, hostile's `apf_session`).
    Reenable(usize),
    /// `sched::request_offline`.
    RequestOff(usize),
    /// The draining CPU's idle loop: `leave_this_cpu`, `before_cpu_off`, CPU_OFF (whose
    /// WAKE_ALL is lost when the flag is set: no room in the ring).
    Leave(usize, bool),
    /// Another CPU sees it off and drains its record (`apf::drain_offline`).
    DrainOffline(usize),
    /// CPU_ON: it comes back and enables APF again.
    CpuOn(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    Online,
    Draining,
    Offline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Normal,
    /// The running task is about to park on this token (namespace included): the handler
    /// accepted it and the IRQ exit path will park, or the task sleeps (`sched::sleep_ns`).
    PendingPark(u64),
    /// The task parked; the CPU is on its way into `schedule`.
    MustSchedule,
    /// Switched; `finish_switch` is due.
    Switching,
}

struct Cpu {
    power: Power,
    current: TaskId,
    previous: Option<TaskId>,
    phase: Phase,
    rq: RunQueue<TaskId, 16>,
    accepted: Accepted<ACCEPT_SLOTS>,
    /// Off, and its record not drained by another CPU yet.
    awaiting_drain: bool,
    // The hypervisor's side of this vCPU.
    session: bool,
    in_flight: Vec<u64>,
    ring: VecDeque<u64>,
    sequence: u64,
}

/// The reference: what each accepted token is owed.
#[derive(Clone, Copy, Debug)]
struct Owed {
    task: TaskId,
    /// The CPU whose APF session the token belongs to (None: a sleep).
    cpu: Option<usize>,
    /// The release is due (its page_ready was drained, or its session ended).
    due: bool,
    /// Times the implementation released the task for it.
    released: u32,
}

struct Model {
    cpus: Vec<Cpu>,
    workers: usize,
    limit: usize,
    tasks: Vec<SchedState>,
    waiters: WaiterTable<TaskId, TABLE_SLOTS>,
    /// The implementation's view of which token a parked task waits on (for accounting).
    parked_on: BTreeMap<TaskId, u64>,
    owed: BTreeMap<u64, Owed>,
    posted: Vec<u64>,
    declined: u64,
    sleepers: Vec<u64>,
    next_sleep: u64,
    stale_seen: u64,
    early: u64,
}

impl Model {
    fn new(ncpus: usize, workers: usize, limit: usize) -> Self {
        let mut cpus: Vec<Cpu> = (0..ncpus)
            .map(|c| Cpu {
                power: Power::Online,
                current: c as TaskId,
                previous: None,
                phase: Phase::Normal,
                rq: RunQueue::new(),
                accepted: Accepted::new(),
                awaiting_drain: false,
                session: true,
                in_flight: Vec::new(),
                ring: VecDeque::new(),
                sequence: 1,
            })
            .collect();
        let mut tasks: Vec<SchedState> = (0..ncpus).map(|_| SchedState::new(State::Running, true)).collect();
        for w in 0..workers {
            tasks.push(SchedState::new(State::Runnable, false));
            cpus[w % ncpus].rq.push_back((ncpus + w) as TaskId).unwrap();
        }
        Self {
            cpus,
            workers,
            limit,
            tasks,
            waiters: WaiterTable::new(),
            parked_on: BTreeMap::new(),
            owed: BTreeMap::new(),
            posted: Vec::new(),
            declined: 0,
            sleepers: Vec::new(),
            next_sleep: 1,
            stale_seen: 0,
            early: 0,
        }
    }

    fn ncpus(&self) -> usize {
        self.cpus.len()
    }

    fn is_idle(&self, id: TaskId) -> bool {
        usize::from(id) < self.ncpus()
    }

    fn idle_of(cpu: usize) -> TaskId {
        cpu as TaskId
    }

    /// Workers are unpinned; each idle task is pinned to its CPU (and never queued).
    fn pinned(&self, id: TaskId) -> Option<usize> {
        self.is_idle(id).then_some(usize::from(id))
    }

    fn load(&self, cpu: usize) -> usize {
        let c = &self.cpus[cpu];
        c.rq.len() + usize::from(!self.is_idle(c.current))
    }

    fn queued_anywhere(&self, id: TaskId) -> usize {
        self.cpus.iter().map(|c| queue_contents(&c.rq).iter().filter(|&&t| t == id).count()).sum()
    }

    /// `sched::place`: the pinned CPU, else the least-loaded CPU that takes work.
    fn place(&mut self, id: TaskId, preferred: usize) {
        let s = self.tasks[usize::from(id)];
        assert!(s.state == State::Runnable && !s.on_cpu, "task {id} placed while {s:?}");
        assert_eq!(self.queued_anywhere(id), 0, "task {id} placed while already queued");
        let cpu = match self.pinned(id) {
            Some(cpu) => cpu,
            None => {
                let online = (0..self.ncpus()).filter(|&c| self.cpus[c].power == Power::Online);
                let loads: Vec<(usize, usize)> = online.map(|c| (c, self.load(c))).collect();
                placement::least_loaded(loads, preferred).expect("the boot CPU always takes work")
            }
        };
        self.cpus[cpu].rq.push_back(id).expect("run queues hold every task");
    }

    /// `sched::make_runnable` for each task the table released.
    fn released(&mut self, ids: &[TaskId], waker: usize) {
        for &id in ids {
            let token = self.parked_on.remove(&id).expect("the table released a task parked on a token");
            self.account(token, id);
            match self.tasks[usize::from(id)].wake() {
                Woken::Place => self.place(id, waker),
                Woken::LeftToSwitcher => {}
                Woken::NotParked => panic!("task {id} released from the table while not parked (double wake-up)"),
            }
        }
    }

    /// The implementation released `task` for `token`: the reference must owe it, once.
    fn account(&mut self, token: u64, task: TaskId) {
        let owed = self.owed.get_mut(&token).unwrap_or_else(|| panic!("task {task} woken by a token never accepted"));
        assert_eq!(owed.task, task);
        assert!(owed.due, "task {task} woken for token {token:#x} before its page_ready or its session's end");
        assert_eq!(owed.released, 0, "task {task} woken twice for token {token:#x}");
        owed.released += 1;
    }

    /// `sched::wake` (`token` with its namespace).
    fn wake(&mut self, token: u64, waker: usize) {
        let mut ids = Vec::new();
        self.waiters.wake(token, |id| ids.push(id)).expect("the waiter table never fills");
        self.released(&ids, waker);
    }

    /// `apf::wake_all_of`.
    fn wake_all_of(&mut self, cpu: usize, waker: usize) {
        let ended = self.cpus[cpu].accepted.end();
        for token in ended.iter() {
            self.wake(APF | token, waker);
        }
    }

    /// The reference: the session of `cpu` ended; every token it accepted and still waits for
    /// is due.
    fn ref_end_session(&mut self, cpu: usize) {
        for owed in self.owed.values_mut().filter(|o| o.cpu == Some(cpu)) {
            owed.due = true;
        }
    }

    /// `apf::drain`: returns whether a WAKE_ALL was among the entries.
    fn drain(&mut self, cpu: usize, waker: usize) -> bool {
        let mut wake_all = false;
        while let Some(token) = self.cpus[cpu].ring.pop_front() {
            // The reference first.
            if token == TOKEN_WAKE_ALL {
                self.ref_end_session(cpu);
            } else if let Some(owed) = self.owed.get_mut(&(APF | token)).filter(|o| o.cpu == Some(cpu)) {
                owed.due = true;
            }
            match self.cpus[cpu].accepted.page_ready(token) {
                Entry::WakeAll => {
                    wake_all = true;
                    self.wake_all_of(cpu, waker);
                }
                Entry::Wake(token) => self.wake(APF | token, waker),
                Entry::Stale => self.stale_seen += 1,
            }
        }
        wake_all
    }

    /// `sched::schedule` on `cpu`.
    fn schedule(&mut self, cpu: usize) {
        let prev = self.cpus[cpu].current;
        let prev_is_idle = self.is_idle(prev);
        let prev_can_continue = !prev_is_idle && self.tasks[usize::from(prev)].may_continue();
        let draining = self.cpus[cpu].power == Power::Draining;
        let next = if draining {
            let me = Some(cpu);
            let pinned: Vec<Option<usize>> = (0..self.tasks.len()).map(|t| self.pinned(t as TaskId)).collect();
            self.cpus[cpu].rq.steal(|id| pinned[usize::from(id)] == me)
        } else {
            match self.cpus[cpu].rq.pop_front() {
                Some(id) => Some(id),
                None => self.steal(cpu, placement::steal_threshold(prev_can_continue)),
            }
        };
        let prev_may_stay = prev_can_continue && (!draining || self.pinned(prev) == Some(cpu));
        let next = match next {
            Some(next) => next,
            None if prev_may_stay || prev_is_idle => {
                self.cpus[cpu].phase = Phase::Normal;
                return;
            }
            None => Self::idle_of(cpu),
        };
        let idle = self.is_idle(next);
        let s = &mut self.tasks[usize::from(next)];
        assert!(idle || (s.state == State::Runnable && !s.on_cpu), "picked task {next} while {s:?}");
        s.start_running();
        let c = &mut self.cpus[cpu];
        c.previous = Some(prev);
        c.current = next;
        c.phase = Phase::Switching;
    }

    fn steal(&mut self, me: usize, min_queued: usize) -> Option<TaskId> {
        let queued: Vec<(usize, usize)> = self.cpus.iter().enumerate().map(|(i, c)| (i, c.rq.len())).collect();
        let victim = placement::steal_victim(me, queued, min_queued)?;
        let pinned: Vec<bool> = (0..self.tasks.len()).map(|t| self.pinned(t as TaskId).is_some()).collect();
        self.cpus[victim].rq.steal(|id| !pinned[usize::from(id)])
    }

    /// `sched::finish_switch` on `cpu`.
    fn finish_switch(&mut self, cpu: usize) {
        self.cpus[cpu].phase = Phase::Normal;
        let Some(prev) = self.cpus[cpu].previous.take() else { return };
        if self.is_idle(prev) {
            return;
        }
        match self.tasks[usize::from(prev)].switched_away() {
            AfterSwitch::Requeue => {
                // `try_enqueue`: unpinned tasks only on a CPU that takes work.
                if self.cpus[cpu].power == Power::Online || self.pinned(prev) == Some(cpu) {
                    self.cpus[cpu].rq.push_back(prev).expect("run queues hold every task");
                } else {
                    self.place(prev, cpu);
                }
            }
            AfterSwitch::Place => self.place(prev, cpu),
            AfterSwitch::Nothing => {}
            AfterSwitch::Release => unreachable!("no task exits in the model"),
        }
    }

    fn step(&mut self, op: Op) {
        let n = self.ncpus();
        match op {
            Op::Fault(c) => {
                let c = c % n;
                let cpu = &self.cpus[c];
                let task = cpu.current;
                let deliverable = cpu.power != Power::Offline
                    && cpu.phase == Phase::Normal
                    && cpu.session
                    && cpu.in_flight.len() < self.limit
                    && !self.is_idle(task)
                    && self.tasks[usize::from(task)].state == State::Running;
                if !deliverable {
                    return;
                }
                let cpu = &mut self.cpus[c];
                let token = cpu.sequence << 16 | c as u64;
                cpu.sequence += 1;
                // `apf::page_not_present`.
                match cpu.accepted.accept(token) {
                    Ok(()) => {
                        cpu.phase = Phase::PendingPark(APF | token);
                        cpu.in_flight.push(token);
                        self.owed.insert(APF | token, Owed { task, cpu: Some(c), due: false, released: 0 });
                    }
                    // Declined: the access is resolved synchronously; nothing is posted.
                    Err(_) => self.declined += 1,
                }
            }
            Op::Sleep(c) => {
                let c = c % n;
                let cpu = &self.cpus[c];
                let task = cpu.current;
                if cpu.power == Power::Offline
                    || cpu.phase != Phase::Normal
                    || self.is_idle(task)
                    || self.tasks[usize::from(task)].state != State::Running
                {
                    return;
                }
                let token = SLEEP | self.next_sleep;
                self.next_sleep += 1;
                self.sleepers.push(token);
                self.owed.insert(token, Owed { task, cpu: None, due: false, released: 0 });
                self.cpus[c].phase = Phase::PendingPark(token);
            }
            Op::Tick(c, pick) => {
                let c = c % n;
                if self.cpus[c].power == Power::Offline || self.sleepers.is_empty() {
                    return;
                }
                let token = self.sleepers.remove(pick % self.sleepers.len());
                self.owed.get_mut(&token).expect("a sleeper's token").due = true;
                self.wake(token, c);
            }
            Op::Park(c) => {
                let c = c % n;
                let Phase::PendingPark(token) = self.cpus[c].phase else { return };
                let me = self.cpus[c].current;
                // `sched::park`.
                match self.waiters.park(token, me).expect("the waiter table never fills") {
                    ParkOutcome::AlreadyWoken => {
                        self.early += 1;
                        self.account(token, me);
                        self.cpus[c].phase = Phase::Normal;
                    }
                    ParkOutcome::Parked => {
                        self.tasks[usize::from(me)].park();
                        self.parked_on.insert(me, token);
                        self.cpus[c].phase = Phase::MustSchedule;
                    }
                }
            }
            Op::Schedule(c) => {
                let c = c % n;
                let cpu = &self.cpus[c];
                if cpu.power != Power::Offline && matches!(cpu.phase, Phase::Normal | Phase::MustSchedule) {
                    self.schedule(c);
                }
            }
            Op::FinishSwitch(c) => {
                let c = c % n;
                if self.cpus[c].phase == Phase::Switching {
                    self.finish_switch(c);
                }
            }
            Op::Drain(c) => {
                let c = c % n;
                let cpu = &self.cpus[c];
                if cpu.power != Power::Offline && matches!(cpu.phase, Phase::Normal | Phase::PendingPark(_)) {
                    self.drain(c, c);
                }
            }
            Op::Complete(pick) => {
                let in_flight: Vec<(usize, usize)> =
                    (0..n).flat_map(|c| (0..self.cpus[c].in_flight.len()).map(move |i| (c, i))).collect();
                if in_flight.is_empty() {
                    return;
                }
                let (c, i) = in_flight[pick % in_flight.len()];
                let token = self.cpus[c].in_flight.remove(i);
                self.cpus[c].ring.push_back(token);
                self.posted.push(token);
            }
            Op::Bogus(c, kind, pick) => {
                let c = c % n;
                if self.cpus[c].power == Power::Offline && !self.cpus[c].awaiting_drain {
                    return;
                }
                let token = match kind % 4 {
                    0 if !self.posted.is_empty() => self.posted[pick % self.posted.len()],
                    1 => (1 << 40 | pick as u64) << 16 | c as u64,
                    2 => {
                        let others: Vec<u64> =
                            (0..n).filter(|&d| d != c).flat_map(|d| self.cpus[d].in_flight.clone()).collect();
                        match others.len() {
                            0 => return,
                            len => others[pick % len],
                        }
                    }
                    3 => TOKEN_NONE,
                    _ => return,
                };
                self.cpus[c].ring.push_back(token);
            }
            Op::Disable(c) => {
                let c = c % n;
                let cpu = &mut self.cpus[c];
                if cpu.power == Power::Offline || cpu.phase != Phase::Normal || !cpu.session {
                    return;
                }
                cpu.session = false;
                cpu.in_flight.clear();
                cpu.ring.push_back(TOKEN_WAKE_ALL);
            }
            Op::Reenable(c) => {
                let c = c % n;
                let cpu = &mut self.cpus[c];
                if cpu.power == Power::Offline || cpu.phase != Phase::Normal {
                    return;
                }
                // The new session drops what was in flight and starts with an empty ring.
                cpu.session = true;
                cpu.in_flight.clear();
                cpu.ring.clear();
                self.ref_end_session(c);
                self.wake_all_of(c, c);
            }
            Op::RequestOff(c) => {
                let c = c % n;
                if c != 0 && self.cpus[c].power == Power::Online {
                    self.cpus[c].power = Power::Draining;
                }
            }
            Op::Leave(c, lose_wake_all) => {
                let c = c % n;
                let cpu = &self.cpus[c];
                if cpu.power != Power::Draining || cpu.phase != Phase::Normal || !self.is_idle(cpu.current) {
                    return;
                }
                // `leave_this_cpu` (no task is pinned to a secondary here).
                let mut moved = Vec::new();
                while let Some(id) = self.cpus[c].rq.pop_front() {
                    moved.push(id);
                }
                self.cpus[c].power = Power::Offline;
                for id in moved {
                    self.place(id, c);
                }
                // `apf::before_cpu_off`, then CPU_OFF ends the session.
                self.drain(c, c);
                let cpu = &mut self.cpus[c];
                if cpu.session && !lose_wake_all {
                    cpu.ring.push_back(TOKEN_WAKE_ALL);
                }
                cpu.session = false;
                cpu.in_flight.clear();
                cpu.awaiting_drain = true;
            }
            Op::DrainOffline(c) => {
                let c = c % n;
                if !self.cpus[c].awaiting_drain {
                    return;
                }
                // From the boot CPU, which never goes off.
                if !self.drain(c, 0) {
                    self.ref_end_session(c);
                    self.wake_all_of(c, 0);
                }
                self.cpus[c].awaiting_drain = false;
            }
            Op::CpuOn(c) => {
                let c = c % n;
                let cpu = &mut self.cpus[c];
                if cpu.power != Power::Offline || cpu.awaiting_drain {
                    return;
                }
                cpu.power = Power::Online;
                cpu.current = Self::idle_of(c);
                cpu.phase = Phase::Normal;
                self.tasks[c].start_running();
                // `apf::on_cpu_up`: a new session.
                let cpu = &mut self.cpus[c];
                cpu.session = true;
                cpu.ring.clear();
                self.ref_end_session(c);
                self.wake_all_of(c, c);
            }
        }
    }

    fn check(&self) {
        let n = self.ncpus();
        for id in n..n + self.workers {
            let id = id as TaskId;
            let s = self.tasks[usize::from(id)];
            let queued = self.queued_anywhere(id);
            let current = self.cpus.iter().filter(|c| c.current == id).count();
            let previous = self.cpus.iter().filter(|c| c.previous == Some(id)).count();
            assert!(queued <= 1, "task {id} queued {queued} times");
            assert!(current + previous <= 1, "task {id} on two CPUs");
            if queued == 1 {
                assert!(
                    s.state == State::Runnable && !s.on_cpu && current + previous == 0,
                    "task {id} queued while {s:?}"
                );
            }
            if s.state == State::Runnable && !s.on_cpu {
                assert_eq!(queued, 1, "runnable task {id} on no run queue (lost)");
            }
            assert_eq!(s.on_cpu, current + previous == 1, "task {id}: on_cpu {s:?}");
            if s.state == State::Parked {
                let token = self.parked_on[&id];
                assert!(!self.owed[&token].due, "task {id} still parked on {token:#x}, whose wake is due (lost)");
            } else {
                assert!(!self.parked_on.contains_key(&id), "task {id} {s:?} still in the waiter table");
            }
        }
        assert_eq!(self.waiters.parked(), self.parked_on.len());
        // Early wakes: only for a token a CPU accepted and has not parked on yet.
        let pending_parks: Vec<u64> = self
            .cpus
            .iter()
            .filter_map(|c| match c.phase {
                Phase::PendingPark(t) => Some(t),
                _ => None,
            })
            .collect();
        let mut pending = 0;
        for &token in &pending_parks {
            let p = self.waiters.pending(token);
            assert!(p <= 1, "{p} wakes remembered for {token:#x}");
            pending += p;
        }
        let total = self.waiters.pending_total();
        assert_eq!(total, pending, "a wake is remembered for a token nobody will park on");
        let pending = total as usize;
        assert!(pending <= n, "{pending} early wakes remembered, more than one per CPU");
        for (c, cpu) in self.cpus.iter().enumerate() {
            assert!(cpu.accepted.outstanding() <= ACCEPT_SLOTS);
            if cpu.power == Power::Offline {
                assert!(cpu.rq.is_empty(), "offline cpu {c} has tasks queued");
            }
        }
    }

    /// Lets everything that is due happen: parks, switches, completions, drains; then every
    /// accepted token has released its task exactly once and nothing is parked.
    fn settle(&mut self) {
        let n = self.ncpus();
        for _ in 0..4 {
            for c in 0..n {
                self.step(Op::Park(c));
                self.step(Op::Schedule(c));
                self.step(Op::FinishSwitch(c));
                self.check();
            }
            while self.cpus.iter().any(|c| !c.in_flight.is_empty()) {
                self.step(Op::Complete(0));
            }
            while !self.sleepers.is_empty() {
                self.step(Op::Tick(0, 0));
            }
            for c in 0..n {
                self.step(Op::Drain(c));
                self.step(Op::DrainOffline(c));
                self.check();
            }
        }
        for (token, owed) in &self.owed {
            assert!(owed.due, "token {token:#x} never completed nor ended");
            assert_eq!(owed.released, 1, "token {token:#x} released its task {} times", owed.released);
        }
        assert_eq!(self.waiters.parked(), 0);
        assert!(self.cpus.iter().all(|c| c.phase == Phase::Normal && c.accepted.outstanding() == 0));
    }
}

fn queue_contents(rq: &RunQueue<TaskId, 16>) -> Vec<TaskId> {
    rq.iter().collect()
}

fn op(ncpus: usize) -> impl Strategy<Value = Op> {
    let c = 0..ncpus;
    prop_oneof![
        10 => c.clone().prop_map(Op::Fault),
        8 => c.clone().prop_map(Op::Park),
        8 => c.clone().prop_map(Op::Schedule),
        8 => c.clone().prop_map(Op::FinishSwitch),
        5 => c.clone().prop_map(Op::Drain),
        3 => c.clone().prop_map(Op::Sleep),
        3 => (c.clone(), any::<usize>()).prop_map(|(c, p)| Op::Tick(c, p)),
        6 => any::<usize>().prop_map(Op::Complete),
        1 => (c.clone(), any::<u8>(), any::<usize>()).prop_map(|(c, k, p)| Op::Bogus(c, k, p)),
        1 => c.clone().prop_map(Op::Disable),
        1 => c.clone().prop_map(Op::Reenable),
        1 => c.clone().prop_map(Op::RequestOff),
        2 => (c.clone(), prop::bool::weighted(0.2)).prop_map(|(c, lose)| Op::Leave(c, lose)),
        2 => c.clone().prop_map(Op::DrainOffline),
        1 => c.prop_map(Op::CpuOn),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, usize, usize, Vec<Op>)> {
    (1..=MAX_CPUS, 1..=MAX_WORKERS, 1..=5usize).prop_flat_map(|(ncpus, workers, limit)| {
        (Just(ncpus), Just(workers), Just(limit), prop::collection::vec(op(ncpus), 1..300))
    })
}

fn run(ncpus: usize, workers: usize, limit: usize, ops: &[Op]) -> Model {
    let mut model = Model::new(ncpus, workers, limit);
    model.check();
    for &op in ops {
        model.step(op);
        model.check();
    }
    model.settle();
    model
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Many CPUs, tasks and tokens: no lost, double or spurious wake-up, bounded early wakes.
    #[test]
    fn park_wake_model((ncpus, workers, limit, ops) in scenario()) {
        run(ncpus, workers, limit, &ops);
    }
}

/// The runs reach the interesting cases: early wakes, refusals, stale entries, CPUs going off
/// with tokens outstanding and with their WAKE_ALL lost.
#[test]
fn the_model_reaches_the_interesting_cases() {
    use Op::*;
    // CPU 1 accepts a token, its page_ready is drained before the park: the park returns.
    let m = run(2, 2, 4, &[Schedule(1), FinishSwitch(1), Fault(1), Complete(0), Drain(1), Park(1)]);
    assert_eq!(m.early, 1);
    // A WAKE_ALL of CPU 0 does not wake CPU 1's task; CPU 1 goes off with its token, the
    // WAKE_ALL lost, and the drain from CPU 0 wakes it.
    let mut m = Model::new(2, 2, 4);
    for op in [Schedule(0), FinishSwitch(0), Schedule(1), FinishSwitch(1), Fault(0), Park(0), Fault(1), Park(1)] {
        m.step(op);
        m.check();
    }
    assert_eq!(m.waiters.parked(), 2);
    for op in [Schedule(0), FinishSwitch(0), Schedule(1), FinishSwitch(1), Disable(0), Drain(0)] {
        m.step(op);
        m.check();
    }
    assert_eq!(m.waiters.parked(), 1, "only CPU 0's task was woken");
    for op in [RequestOff(1), Leave(1, true)] {
        m.step(op);
        m.check();
    }
    assert_eq!(m.cpus[1].power, Power::Offline);
    assert_eq!(m.waiters.parked(), 1, "parked until the record is drained");
    m.step(DrainOffline(1));
    m.check();
    assert_eq!(m.waiters.parked(), 0);
    m.settle();
    // Refusals when the accepted set is full, and stale entries.
    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.extend([Schedule(0), FinishSwitch(0), Fault(0), Park(0), Schedule(0), FinishSwitch(0)]);
    }
    ops.extend([Complete(0), Drain(0), Bogus(0, 0, 0), Bogus(0, 1, 0), Bogus(0, 3, 0), Drain(0)]);
    let m = run(1, 6, 5, &ops);
    assert_eq!(m.declined, 3, "3 accepted, 3 declined");
    assert_eq!(m.stale_seen, 3);
}
