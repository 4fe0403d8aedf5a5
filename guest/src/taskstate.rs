//! A task's scheduling state and the rules that change it. The kernel keeps one [`SchedState`]
//! per task under that task's lock and applies the answers (queue the task, release its slot);
//! the rules themselves are here so that the host tests (and the park/wake model in `model`)
//! run the same code.
//!
//! The invariant they keep: a task is put on a run queue only once its context is saved
//! (`on_cpu` false), and only by one party: a wake that finds the task still on its CPU leaves
//! the placing to [`SchedState::switched_away`] on that CPU.

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Queued (or about to be) on a run queue.
    Runnable,
    /// Running on a CPU.
    Running,
    /// Parked on a token, waiting for a wake.
    Parked,
    /// Finished; the slot is released once the task is off its CPU.
    Exited,
}

/// Scheduling state, changed only under the task's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedState {
    pub state: State,
    /// The task's registers are live on some CPU (its context is not saved yet).
    pub on_cpu: bool,
}

/// What a wake that released a task asks of the waker ([`SchedState::wake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The task was not parked (it is runnable, running or gone): nothing to do.
    NotParked,
    /// The task is runnable now and off every CPU: the waker queues it.
    Place,
    /// The task is runnable now but still switching away from its CPU: that CPU queues it
    /// ([`SchedState::switched_away`] answers [`AfterSwitch::Place`]).
    LeftToSwitcher,
}

/// What becomes of a task once the CPU that ran it has saved its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSwitch {
    /// Preempted or yielded: back on the run queue of the CPU it ran on (or, if that CPU no
    /// longer takes it, placed elsewhere).
    Requeue,
    /// Woken while it was switching away: placed like any woken task.
    Place,
    /// Parked: nothing until a wake.
    Nothing,
    /// Exited: its slot may be reused.
    Release,
}

impl SchedState {
    /// A state.
    pub const fn new(state: State, on_cpu: bool) -> Self {
        Self { state, on_cpu }
    }

    /// The running task parks (its token is recorded in the waiter table under the same lock
    /// that wakers take, so a waker always finds it parked).
    pub fn park(&mut self) {
        debug_assert_eq!(self.state, State::Running, "only a running task parks");
        self.state = State::Parked;
    }

    /// A wake released the task from the waiter table: it becomes runnable, once.
    pub fn wake(&mut self) -> Woken {
        if self.state != State::Parked {
            return Woken::NotParked;
        }
        self.state = State::Runnable;
        if self.on_cpu {
            Woken::LeftToSwitcher
        } else {
            Woken::Place
        }
    }

    /// At a scheduling point of the CPU running this (non-idle) task: whether it may go on
    /// running. A task woken between deciding to park and getting here keeps running.
    pub fn may_continue(&mut self) -> bool {
        if self.state == State::Runnable {
            self.state = State::Running;
        }
        self.state == State::Running
    }

    /// The scheduler picked this task (from a run queue) to run on its CPU.
    pub fn start_running(&mut self) {
        self.state = State::Running;
        self.on_cpu = true;
    }

    /// The CPU that ran the task has switched away from it and saved its context.
    pub fn switched_away(&mut self) -> AfterSwitch {
        self.on_cpu = false;
        match self.state {
            State::Running => {
                self.state = State::Runnable;
                AfterSwitch::Requeue
            }
            State::Runnable => AfterSwitch::Place,
            State::Parked => AfterSwitch::Nothing,
            State::Exited => AfterSwitch::Release,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> SchedState {
        SchedState::new(State::Running, true)
    }

    #[test]
    fn a_parked_task_off_its_cpu_is_placed_by_the_waker_once() {
        let mut s = running();
        s.park();
        assert_eq!(s.switched_away(), AfterSwitch::Nothing);
        assert_eq!(s.wake(), Woken::Place);
        assert_eq!(s.state, State::Runnable);
        assert_eq!(s.wake(), Woken::NotParked, "a second wake does not queue it again");
    }

    #[test]
    fn a_wake_during_the_switch_is_left_to_the_switching_cpu() {
        let mut s = running();
        s.park();
        assert_eq!(s.wake(), Woken::LeftToSwitcher);
        assert_eq!(s.switched_away(), AfterSwitch::Place);
        assert!(!s.on_cpu);
    }

    #[test]
    fn a_wake_before_the_scheduling_point_keeps_the_task_running() {
        let mut s = running();
        s.park();
        assert_eq!(s.wake(), Woken::LeftToSwitcher);
        assert!(s.may_continue());
        assert_eq!(s.state, State::Running);
        // Switched away all the same (another task was queued): back on the queue, once.
        assert_eq!(s.switched_away(), AfterSwitch::Requeue);
        assert_eq!(s.state, State::Runnable);
    }

    #[test]
    fn a_parked_task_does_not_continue() {
        let mut s = running();
        s.park();
        assert!(!s.may_continue());
        assert_eq!(s.state, State::Parked);
    }

    #[test]
    fn preempted_and_exited_tasks() {
        let mut s = running();
        assert!(s.may_continue());
        assert_eq!(s.switched_away(), AfterSwitch::Requeue);
        s.start_running();
        assert_eq!((s.state, s.on_cpu), (State::Running, true));
        s.state = State::Exited;
        assert!(!s.may_continue());
        assert_eq!(s.wake(), Woken::NotParked);
        assert_eq!(s.switched_away(), AfterSwitch::Release);
    }
}
