//! Tasks: their slots, stacks, saved contexts, and the first entry into a new task.

use crate::dt::MAX_CPUS;
use crate::exceptions::{self, TrapFrame, FRAME_SIZE};
use crate::sync::SpinLock;
use crate::{arch, sched};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// A task's scheduling state and its rules live in the library (host-tested).
pub use asyncpf_guest::taskstate::{SchedState, State};

/// Index of a task slot. Slots `0..MAX_CPUS` are the CPUs' idle tasks.
pub type TaskId = u16;
/// Worker task slots (besides the idle tasks).
pub const MAX_WORKERS: usize = 40;
/// All task slots.
pub const MAX_TASKS: usize = MAX_CPUS + MAX_WORKERS;
const KERNEL_STACK_SIZE: usize = 16 * 1024;
const USER_STACK_SIZE: usize = 8 * 1024;

/// Registers a voluntary switch must keep (AAPCS64 callee-saved), plus the stack pointer.
/// Layout shared with `switch_context` below.
#[repr(C)]
#[derive(Default)]
pub struct Context {
    /// x19..x28, x29 (frame pointer), x30 (return address).
    x19_x30: [u64; 12],
    sp: u64,
    /// Low halves of v8..v15.
    d8_d15: [u64; 8],
}

/// The privilege level a task runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Idle,
    /// EL1, sharing the kernel's address space and privileges.
    Kernel,
    /// EL0, entering the kernel only through `svc` and interrupts.
    User,
}

/// What a task runs: fixed from spawn to exit.
#[derive(Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// For `Kernel`: a `fn(u64)`; for `User`: an `extern "C" fn(u64) -> !` that ends with the
    /// exit syscall.
    pub entry: usize,
    pub arg: u64,
    /// Run only on this CPU (never stolen).
    pub pinned: Option<usize>,
    /// Where to store the task's CPU mask (bit n: ran on CPU n) when it exits, since the slot
    /// (and its `ran_on`) may be reused once it has.
    pub cpus_out: Option<&'static AtomicU64>,
}

/// One task slot.
pub struct Task {
    context: UnsafeCell<Context>,
    pub sched: SpinLock<SchedState>,
    spec: UnsafeCell<Spec>,
    in_use: AtomicBool,
    /// Bumped at every spawn into this slot, so that tokens derived from a task stay unique.
    pub generation: AtomicU32,
    /// Bit n set once the task has run on CPU n.
    pub ran_on: AtomicU64,
}

// SAFETY: `context` is only accessed by the CPU that is switching the task in or out (the
// scheduler guarantees a task is on at most one CPU, see `SchedState::on_cpu`); `spec` is written
// only while the slot is claimed but not yet published to any run queue, and read-only after.
unsafe impl Sync for Task {}

impl Task {
    const fn new() -> Self {
        Self {
            context: UnsafeCell::new(Context { x19_x30: [0; 12], sp: 0, d8_d15: [0; 8] }),
            sched: SpinLock::new(SchedState { state: State::Exited, on_cpu: false }),
            spec: UnsafeCell::new(Spec { name: "", kind: Kind::Idle, entry: 0, arg: 0, pinned: None, cpus_out: None }),
            in_use: AtomicBool::new(false),
            generation: AtomicU32::new(0),
            ran_on: AtomicU64::new(0),
        }
    }

    /// The task's spec.
    pub fn spec(&self) -> Spec {
        // SAFETY: see the `Sync` impl: the spec is immutable while the task is visible.
        unsafe { *self.spec.get() }
    }

    /// Raw pointer to the saved context, for `switch_context`.
    pub fn context_ptr(&self) -> *mut Context {
        self.context.get()
    }

    /// Frees the slot (the task has exited and is off every CPU).
    pub fn release(&self) {
        self.in_use.store(false, Ordering::Release);
    }
}

static TASKS: [Task; MAX_TASKS] = [const { Task::new() }; MAX_TASKS];

/// The task in slot `id`.
pub fn get(id: TaskId) -> &'static Task {
    &TASKS[usize::from(id)]
}

/// The idle task of CPU `cpu`.
pub fn idle_id(cpu: usize) -> TaskId {
    cpu as TaskId
}

/// True for the idle tasks.
pub fn is_idle(id: TaskId) -> bool {
    usize::from(id) < MAX_CPUS
}

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

struct Stacks<const N: usize>(UnsafeCell<[Stack<N>; MAX_TASKS]>);
// SAFETY: each stack is used only by the task in the matching slot.
unsafe impl<const N: usize> Sync for Stacks<N> {}

impl<const N: usize> Stacks<N> {
    /// One past the highest byte of slot `id`'s stack.
    fn top(&self, id: TaskId) -> usize {
        self.0.get() as usize + (usize::from(id) + 1) * N
    }
}

static KERNEL_STACKS: Stacks<KERNEL_STACK_SIZE> =
    Stacks(UnsafeCell::new([const { Stack([0; KERNEL_STACK_SIZE]) }; MAX_TASKS]));
/// EL0 stacks, in the pages EL0 may write.
#[link_section = ".user_rw"]
static USER_STACKS: Stacks<USER_STACK_SIZE> =
    Stacks(UnsafeCell::new([const { Stack([0; USER_STACK_SIZE]) }; MAX_TASKS]));

/// The idle task of the running CPU starts as the CPU's boot context (at every bring-up).
pub fn init_idle(cpu: usize) {
    let idle = get(idle_id(cpu));
    // SAFETY: the idle slot of this CPU is touched only by this CPU (other CPUs only compare its
    // id), and this CPU is not running its scheduler yet: at the first bring-up nothing has seen
    // the slot, and after CPU_OFF the slot's previous life has ended.
    unsafe {
        *idle.spec.get() = Spec { name: "idle", kind: Kind::Idle, entry: 0, arg: 0, pinned: Some(cpu), cpus_out: None }
    };
    idle.in_use.store(true, Ordering::Release);
    *idle.sched.lock() = SchedState { state: State::Running, on_cpu: true };
}

/// Claims a free worker slot and prepares the task so that switching to it starts `spec`.
/// The caller publishes it to a run queue.
pub fn create(spec: Spec) -> Option<TaskId> {
    let id = (MAX_CPUS..MAX_TASKS)
        .find(|&i| TASKS[i].in_use.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok())?
        as TaskId;
    let task = get(id);
    task.generation.fetch_add(1, Ordering::Relaxed);
    task.ran_on.store(0, Ordering::Relaxed);
    let kernel_top = KERNEL_STACKS.top(id);
    let mut context = Context::default();
    context.x19_x30[0] = u64::from(id);
    context.x19_x30[11] = task_trampoline as *const () as usize as u64;
    context.sp = kernel_top as u64;
    if spec.kind == Kind::User {
        // The first entry to EL0 is an exception return from a frame at the kernel stack top.
        let frame = (kernel_top - FRAME_SIZE) as *mut TrapFrame;
        // SAFETY: the slot is ours (claimed above), so its kernel stack is unused; the frame lies
        // inside it and is suitably aligned (stack tops are 16-byte aligned, FRAME_SIZE too).
        unsafe {
            core::ptr::write_bytes(frame, 0, 1);
            (*frame).x[0] = spec.arg;
            (*frame).elr = spec.entry as u64;
            (*frame).spsr = 0; // EL0t, all of DAIF clear
            (*frame).sp_el0 = USER_STACKS.top(id) as u64;
        }
        context.sp = frame as u64;
    }
    // SAFETY: the slot is claimed and not yet on any run queue, so nobody else reads these.
    unsafe {
        *task.context.get() = context;
        *task.spec.get() = spec;
    }
    *task.sched.lock() = SchedState { state: State::Runnable, on_cpu: false };
    Some(id)
}

extern "C" {
    /// Saves the callee-saved registers and stack pointer into `prev`, loads them from `next`
    /// and returns on `next`'s stack.
    pub fn switch_context(prev: *mut Context, next: *const Context);
    fn task_trampoline();
}

global_asm!(
    r#"
.global switch_context
switch_context:
    stp x19, x20, [x0, #0]
    stp x21, x22, [x0, #16]
    stp x23, x24, [x0, #32]
    stp x25, x26, [x0, #48]
    stp x27, x28, [x0, #64]
    stp x29, x30, [x0, #80]
    mov x9, sp
    str x9, [x0, #96]
    stp d8, d9, [x0, #104]
    stp d10, d11, [x0, #120]
    stp d12, d13, [x0, #136]
    stp d14, d15, [x0, #152]
    ldp x19, x20, [x1, #0]
    ldp x21, x22, [x1, #16]
    ldp x23, x24, [x1, #32]
    ldp x25, x26, [x1, #48]
    ldp x27, x28, [x1, #64]
    ldp x29, x30, [x1, #80]
    ldr x9, [x1, #96]
    mov sp, x9
    ldp d8, d9, [x1, #104]
    ldp d10, d11, [x1, #120]
    ldp d12, d13, [x1, #136]
    ldp d14, d15, [x1, #152]
    ret

// A new task's first switch lands here with its slot id in x19.
.global task_trampoline
task_trampoline:
    mov x0, x19
    mov x29, #0
    bl {first_run}
    udf #0
"#,
    first_run = sym task_first_run,
);

/// First code of every new task, entered by `switch_context` with IRQs masked.
extern "C" fn task_first_run(id: u64) -> ! {
    sched::finish_switch();
    let id = id as TaskId;
    let spec = get(id).spec();
    match spec.kind {
        Kind::Kernel => {
            arch::irq_enable();
            // SAFETY: `entry` was set from a `fn(u64)` by `sched::spawn_kernel`.
            let entry: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(spec.entry) };
            entry(spec.arg);
            sched::exit_current();
        }
        Kind::User => {
            let frame = (KERNEL_STACKS.top(id) - FRAME_SIZE) as *const TrapFrame;
            // SAFETY: `create` built an EL0 frame there; returning through it starts the task at
            // EL0 with its own stack, and its kernel stack is then empty again.
            unsafe { exceptions::enter_frame(frame) }
        }
        Kind::Idle => unreachable!("idle tasks are never created"),
    }
}
