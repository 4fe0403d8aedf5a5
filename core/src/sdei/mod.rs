//! The SDEI dispatcher (Arm DEN0054, "Software Delegated Exception Interface", version 1.1)
//! that the hypervisor offers its guest, as a plain data model: the per-vCPU event states, the
//! answers to the guest's SDEI calls ([`Sdei::call`]) and the delivery of an event
//! ([`Sdei::dispatch`]). The hypervisor does what the answers say: it writes the returned
//! registers, or restores a saved context, or enters a handler.
//!
//! # What is offered
//!
//! * Conduit `hvc #0`, SMC64 fast calls 0xC400_0020..=0xC400_0032 (SDEI 1.1, vendor part 0).
//!   Every SDEI function ID is answered; IDs in the SDEI range that name no function, and every
//!   SMC32 form, get NOT_SUPPORTED.
//! * The client is the guest kernel at EL1 (an `hvc` from EL0 is UNDEFINED and never reaches
//!   the hypervisor).
//! * Two **private** (per-PE = per-vCPU), **normal-priority** events, listed in [`EVENTS`]:
//!   event 0, the standard software-signalled event (SDEI_EVENT_SIGNAL), and
//!   [`abi::EVENT_PAGE_NOT_PRESENT`], which the hypervisor itself signals when a vCPU touches a
//!   page that is not resident. Normal priority only means a handler is never preempted by
//!   another event: at most one handler runs per vCPU.
//! * No shared events, no critical-priority events, no interrupt binding (SDEI_FEATURES reports
//!   0 bind slots), no relative mode (SDEI_FEATURES reports it unsupported).
//!
//! # The state of one event on one vCPU
//!
//! Registered, enabled and running, as SDEI_EVENT_STATUS reports them (DEN0054A §6.1, the
//! handler state machine). Every call is allowed or refused in a state as TF-A's dispatcher
//! (Arm's reference implementation, `services/std_svc/sdei/sdei_state.c`) tabulates it:
//!
//! | state | REGISTER | ENABLE / DISABLE | UNREGISTER | CONTEXT, COMPLETE, COMPLETE_AND_RESUME | dispatch |
//! |---|---|---|---|---|---|
//! | unregistered | ok: registered | DENIED | DENIED | DENIED | refused |
//! | registered | DENIED | ok | ok: unregistered | DENIED | refused unless enabled |
//! | registered, enabled | DENIED | ok | ok: unregistered | DENIED | **yes**, if unmasked and no handler runs |
//! | running (registered, maybe enabled) | DENIED | ok | PENDING: unregistered, running | ok | refused |
//! | running, unregister pending | DENIED | DENIED | PENDING | ok | refused |
//!
//! An unregistration that is pending takes effect when the handler completes: the event is
//! then unregistered (its registration was already forgotten).
//!
//! # What is saved, and how a handler is entered and left
//!
//! On dispatch the model saves the interrupted **x0..x17, PC and PSTATE** ([`Context`]):
//! DEN0054 lets a handler clobber x0..x17 and requires it to preserve every other register
//! (x18..x30, SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1, ...), which is why the dispatcher need not
//! save them; SDEI_EVENT_CONTEXT reads the saved x0..x17. The handler is entered with
//! x0 = event number, x1 = ep_argument, x2 = interrupted PC, x3 = interrupted PSTATE,
//! PC = the registered entry point and PSTATE = EL1h with D, A, I and F masked ([`Entry`]);
//! x4..x17 keep their interrupted values, ELR_EL1 and SPSR_EL1 are untouched (that is the point
//! of SDEI: the interrupted context is not clobbered).
//!
//! SDEI_EVENT_COMPLETE restores the saved context exactly (x0..x17, PC, PSTATE).
//! SDEI_EVENT_COMPLETE_AND_RESUME(resume_addr) restores it too, then acts as if an IRQ
//! exception had been taken from it to EL1: ELR_EL1 = interrupted PC, SPSR_EL1 = interrupted
//! PSTATE, PC = resume_addr, PSTATE = EL1h with DAIF masked ([`Resume`]). The client chooses
//! resume_addr (Linux passes the IRQ vector that matches the interrupted mode).
//!
//! # Other answers
//!
//! * Every vCPU starts **masked** ([`Sdei::new`], [`Sdei::reset_vcpu`]): TF-A masks every PE
//!   when it comes on, and a client unmasks once it is ready. SDEI_PE_MASK returns 1 if it
//!   masked an unmasked vCPU and 0 if the vCPU was already masked; SDEI_PE_UNMASK returns
//!   SUCCESS. Masking does not affect a handler that is already running.
//! * SDEI_EVENT_GET_INFO: type = private, signalled = 1 for event 0 and 0 for page_not_present,
//!   priority = normal; routing mode and affinity are INVALID_PARAMETERS (private events have
//!   none), as is any other `info`.
//! * SDEI_EVENT_ROUTING_SET: INVALID_PARAMETERS (private events cannot be routed).
//! * SDEI_FEATURES: feature 0 (BIND_SLOTS) = 0 (no private, no shared slots), feature 1
//!   (RELATIVE_MODE) = 0 (unsupported), any other feature INVALID_PARAMETERS.
//! * SDEI_INTERRUPT_BIND: INVALID_PARAMETERS for an SGI (0..=15) or an INTID that is no PPI or
//!   SPI (1020 and above), otherwise OUT_OF_RESOURCE (there are no bind slots).
//!   SDEI_INTERRUPT_RELEASE: INVALID_PARAMETERS (no event is a bound dynamic event).
//! * SDEI_EVENT_SIGNAL(event, target): event must be 0 and the target an existing vCPU
//!   (INVALID_PARAMETERS otherwise); the answer is [`SdeiAnswer::Signal`].
//! * SDEI_PRIVATE_RESET unregisters every private event of the calling vCPU. If a handler is
//!   running, its event becomes unregister-pending and the call returns DENIED (TF-A's
//!   behaviour); otherwise SUCCESS. It does not change the mask.
//! * SDEI_SHARED_RESET: SUCCESS (there is nothing shared to reset).
//!
//! # Deviations from DEN0054 and choices where it leaves room
//!
//! 1. **PSTATE at handler entry and at resume is exactly EL1h with DAIF masked**
//!    ([`ENTRY_PSTATE`], the value the hypervisor uses for every exception it injects). DEN0054
//!    since revision B asks for the PSTATE an exception taken to EL1 would produce
//!    (AArch64.TakeException): NZCV and DIT inherited, PAN set if SCTLR_EL1.SPAN is 0, SSBS
//!    from SCTLR_EL1.DSSBS, TCO set with MTE, UAO, BTYPE, SS and IL cleared. The model does not
//!    see SCTLR_EL1, and clears all of these. A client that relies on PAN must set it in its
//!    handler (Linux does, because the original DEN0054A and TF-A did the same as here).
//! 2. **No pending state for event 0.** The model does not queue signals: SDEI_EVENT_SIGNAL
//!    returns [`SdeiAnswer::Signal`] and the hypervisor keeps the signal pending and calls
//!    [`Sdei::dispatch`] on the target when it can (see [`Refusal`] for which refusals mean
//!    "try later").
//! 3. **32-bit parameters** (event numbers, `param_id`, `info`, `feature`, interrupt numbers)
//!    are read from the low 32 bits of their register, as TF-A and KVM do; the upper 32 bits
//!    are ignored.
//! 4. **Entry points and resume addresses** are virtual addresses the hypervisor cannot check
//!    against the guest's translation tables; the only check is 4-byte alignment. A misaligned
//!    entry point is INVALID_PARAMETERS; a misaligned resume address is DENIED (TF-A's answer
//!    to an invalid resume address). TF-A also rejects an entry point of 0; this model does not.
//! 5. **Routing flags of private events.** SDEI_EVENT_REGISTER rejects reserved flag bits
//!    (63:2) and the relative-mode bit (1) with INVALID_PARAMETERS; the routing-mode bit (0) and
//!    the affinity are ignored, since a private event always targets the calling PE.
//! 6. **Error precedence.** A call that only a handler may make (CONTEXT, COMPLETE,
//!    COMPLETE_AND_RESUME) is DENIED outside a handler whatever its arguments; an unknown event
//!    number is INVALID_PARAMETERS before any state check.
//! 7. SDEI_EVENT_COMPLETE's `status` (x1: 0 handled, 1 failed, as Linux sends it) is not
//!    checked; it is passed to the hypervisor in [`SdeiAnswer::Complete`].
//! 8. SDEI_EVENT_SIGNAL accepts an MPIDR_EL1 value with its non-affinity bits (bit 31, U, MT)
//!    set and ignores them, as TF-A's platform code does.
//!
//! Nothing here panics on any value the guest can pass. The `vcpu` index is the hypervisor's,
//! and an index out of range is a hypervisor bug: the methods panic on it.

use crate::trap::PSTATE_EL1H_MASKED;
use alloc::vec;
use alloc::vec::Vec;
use asyncpf_contract::sdei as abi;

/// Registers the dispatcher saves and SDEI_EVENT_CONTEXT can read: x0..x17.
pub const SAVED_REGS: usize = 18;

/// PSTATE at handler entry and after COMPLETE_AND_RESUME: EL1h, D, A, I and F masked, every
/// other bit 0. See deviation 1 in the module documentation.
pub const ENTRY_PSTATE: u64 = PSTATE_EL1H_MASKED;

/// SDEI_FEATURES `feature` values.
pub const FEATURE_BIND_SLOTS: u32 = 0;
pub const FEATURE_RELATIVE_MODE: u32 = 1;

/// SDEI_EVENT_REGISTER `flags`: bit 0 is the routing mode (1: RM_PE, 0: RM_ANY), bit 1 asks
/// for relative mode; bits 63:2 are reserved.
pub const REGISTER_FLAG_ROUTING_PE: u64 = 1 << 0;
pub const REGISTER_FLAG_RELATIVE: u64 = 1 << 1;

/// SDEI_EVENT_COMPLETE `status` values as clients send them (Linux: SDEI_EV_HANDLED and
/// SDEI_EV_FAILED).
pub const STATUS_HANDLED: u64 = 0;
pub const STATUS_FAILED: u64 = 1;

/// The first and last function ID of the SDEI range (SMC64 fast calls of the standard service).
const FUNCTION_FIRST: u32 = 0xC400_0020;
const FUNCTION_LAST: u32 = 0xC400_003F;

/// The INTIDs SDEI_INTERRUPT_BIND could ever bind: PPIs and SPIs (GICv3 without the extended
/// ranges). SGIs (0..=15) cannot be bound (TF-A refuses them too).
const BINDABLE_INTIDS: core::ops::RangeInclusive<u32> = 16..=1019;

/// Whether `function` (w0) belongs to the SDEI range, so that [`Sdei::call`] should answer it.
pub const fn is_sdei_function(function: u32) -> bool {
    function >= FUNCTION_FIRST && function <= FUNCTION_LAST
}

/// One event the dispatcher offers. All are private and of normal priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub number: u32,
    /// Whether SDEI_EVENT_SIGNAL can signal it (only event 0).
    pub signalable: bool,
}

/// The events offered, in the order the model keeps them.
pub const EVENTS: [EventInfo; 2] = [
    EventInfo { number: abi::EVENT_SOFTWARE_SIGNALLED, signalable: true },
    EventInfo { number: abi::EVENT_PAGE_NOT_PRESENT, signalable: false },
];

fn event_index(number: u32) -> Option<usize> {
    EVENTS.iter().position(|e| e.number == number)
}

/// The interrupted context the dispatcher saves at dispatch and restores at completion.
///
/// `x` holds x0..x17 only: DEN0054 requires the handler to preserve every other general
/// register (x18..x30) and the stack pointers itself, and lets it clobber x0..x17, so these are
/// the registers the dispatcher has to give back. `pc` is the interrupted PC (ELR_EL2 at the
/// exit) and `pstate` the interrupted PSTATE in SPSR format (SPSR_EL2 at the exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub x: [u64; SAVED_REGS],
    pub pc: u64,
    pub pstate: u64,
}

/// How to enter a handler: set x0..x3, PC (ELR_EL2 for the `eret`) and PSTATE (SPSR_EL2).
/// Every other register keeps its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pc: u64,
    /// x0 = event number, x1 = ep_argument, x2 = interrupted PC, x3 = interrupted PSTATE.
    pub x: [u64; 4],
    pub pstate: u64,
}

/// Where execution continues after SDEI_EVENT_COMPLETE_AND_RESUME, once the interrupted
/// context has been restored: as if an IRQ had been taken from it to EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// PC: the client's resume address.
    pub pc: u64,
    /// PSTATE: [`ENTRY_PSTATE`].
    pub pstate: u64,
    /// ELR_EL1: the interrupted PC.
    pub elr_el1: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr_el1: u64,
}

/// What the hypervisor does after an SDEI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdeiAnswer {
    /// Return to the caller with these values in x0..x3 (`None` leaves a register unchanged).
    Return([Option<u64>; 4]),
    /// SDEI_EVENT_COMPLETE: the handler of `event` finished. Restore `restore` exactly (x0..x17,
    /// PC, PSTATE) and return to it; nothing is written to x0. `status` is the handler's x1
    /// ([`STATUS_HANDLED`] or [`STATUS_FAILED`] from a well-behaved client; not checked).
    Complete { event: u32, status: u64, restore: Context },
    /// SDEI_EVENT_COMPLETE_AND_RESUME: the handler of `event` finished. Restore x0..x17 from
    /// `restore`, then set ELR_EL1, SPSR_EL1, PC and PSTATE from `resume`.
    CompleteAndResume { event: u32, restore: Context, resume: Resume },
    /// SDEI_EVENT_SIGNAL: return SUCCESS (0) in x0 to the caller, and signal event 0 to vCPU
    /// `target` (which may be the caller): dispatch it there with [`Sdei::dispatch`] when that
    /// succeeds.
    Signal { target: usize },
}

/// Why [`Sdei::dispatch`] did not deliver an event. Checked in this order.
///
/// For a signal of event 0 (which real hardware would keep pending as an SGI): `NotEnabled`,
/// `Masked` and `Running` can change without the signal being lost, so the hypervisor keeps it
/// pending and tries again; `NotRegistered` and `UnknownEvent` mean nobody will ever handle
/// it, and TF-A drops such a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The event number is not one of [`EVENTS`].
    UnknownEvent,
    /// The event is not registered on that vCPU (or its unregistration is pending).
    NotRegistered,
    /// The event is registered but disabled.
    NotEnabled,
    /// The vCPU is masked (SDEI_PE_MASK, or it never unmasked since reset).
    Masked,
    /// A handler runs on the vCPU; normal-priority events do not nest.
    Running,
}

/// SDEI_EVENT_STATUS of one event on one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStatus {
    pub registered: bool,
    pub enabled: bool,
    pub running: bool,
}

impl EventStatus {
    /// The value SDEI_EVENT_STATUS returns.
    pub const fn bits(self) -> u64 {
        (if self.registered { abi::STATUS_REGISTERED } else { 0 })
            | (if self.enabled { abi::STATUS_ENABLED } else { 0 })
            | (if self.running { abi::STATUS_RUNNING } else { 0 })
    }
}

/// A handler registered for one event on one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    pub entry_point: u64,
    pub argument: u64,
    /// The flags as registered (only bit 0, the routing mode, can be set; it is meaningless for
    /// private events).
    pub flags: u64,
}

/// Counts of what the dispatcher did, for the hypervisor's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every call to [`Sdei::call`].
    pub calls: u64,
    /// Calls to a function ID that is not implemented: NOT_SUPPORTED.
    pub not_supported: u64,
    /// Calls to an implemented function answered with an error code (INVALID_PARAMETERS,
    /// DENIED, PENDING or OUT_OF_RESOURCE).
    pub errors: u64,
    /// Handlers entered.
    pub dispatches: u64,
    /// Dispatches refused.
    pub refusals: u64,
    /// SDEI_EVENT_COMPLETE calls that ended a handler.
    pub completes: u64,
    /// SDEI_EVENT_COMPLETE_AND_RESUME calls that ended a handler.
    pub resumes: u64,
    /// SDEI_EVENT_SIGNAL calls that signalled a vCPU.
    pub signals: u64,
}

/// What a call needs to know about the machine.
pub trait GuestState {
    /// The vCPU whose MPIDR_EL1 affinity fields (Aff3..Aff0 in MPIDR layout, every other bit
    /// zero) are `affinity`, if there is one.
    fn vcpu_by_mpidr(&self, affinity: u64) -> Option<usize>;
}

/// A handler that runs on a vCPU.
#[derive(Clone, Copy, Debug)]
struct Running {
    /// Index into [`EVENTS`].
    event: usize,
    saved: Context,
}

#[derive(Clone, Copy, Debug, Default)]
struct EventState {
    /// `None` when unregistered, including while an unregistration is pending.
    registration: Option<Registration>,
    /// Only ever true while registered.
    enabled: bool,
}

#[derive(Clone, Copy, Debug)]
struct VcpuState {
    masked: bool,
    events: [EventState; EVENTS.len()],
    running: Option<Running>,
}

impl VcpuState {
    /// A vCPU after reset: masked, every private event unregistered, no handler.
    const RESET: Self =
        Self { masked: true, events: [EventState { registration: None, enabled: false }; EVENTS.len()], running: None };
}

/// How a call was answered, before it is turned into an [`SdeiAnswer`].
enum Reply {
    /// A result in x0 (which may look negative, e.g. a register value from EVENT_CONTEXT).
    Value(u64),
    /// An SDEI error code in x0.
    Error(i64),
    /// Anything else.
    Answer(SdeiAnswer),
}

/// The SDEI dispatcher state of one VM.
#[derive(Clone, Debug)]
pub struct Sdei {
    vcpus: Vec<VcpuState>,
    counters: Counters,
}

impl Sdei {
    /// A dispatcher for `vcpus` vCPUs, each masked with no event registered.
    pub fn new(vcpus: usize) -> Self {
        Self { vcpus: vec![VcpuState::RESET; vcpus], counters: Counters::default() }
    }

    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether `vcpu` is masked.
    pub fn is_masked(&self, vcpu: usize) -> bool {
        self.vcpus[vcpu].masked
    }

    /// The event whose handler runs on `vcpu`, if any.
    pub fn running_event(&self, vcpu: usize) -> Option<u32> {
        self.vcpus[vcpu].running.map(|r| EVENTS[r.event].number)
    }

    /// SDEI_EVENT_STATUS of `event` on `vcpu`; `None` if the event is not offered.
    pub fn status(&self, vcpu: usize, event: u32) -> Option<EventStatus> {
        event_index(event).map(|index| self.event_status(vcpu, index))
    }

    /// The handler registered for `event` on `vcpu`, if any.
    pub fn registration(&self, vcpu: usize, event: u32) -> Option<Registration> {
        self.vcpus[vcpu].events[event_index(event)?].registration
    }

    /// The vCPU was reset or turned off: every private event is unregistered at once (a running
    /// handler is forgotten with its saved context, since the context no longer exists), and
    /// the vCPU is masked again.
    pub fn reset_vcpu(&mut self, vcpu: usize) {
        self.vcpus[vcpu] = VcpuState::RESET;
    }

    /// Whether [`dispatch`](Self::dispatch) would deliver `event` to `vcpu` now.
    pub fn check_dispatch(&self, vcpu: usize, event: u32) -> Result<(), Refusal> {
        self.dispatchable(vcpu, event).map(|_| ())
    }

    /// Deliver `event` to `vcpu` now, interrupting `interrupted`: allowed only if the event is
    /// registered and enabled there, the vCPU is unmasked and no handler runs on it. On success
    /// the model saves `interrupted`, marks the event running, and returns how to enter the
    /// handler.
    pub fn dispatch(&mut self, vcpu: usize, event: u32, interrupted: Context) -> Result<Entry, Refusal> {
        let (index, registration) = match self.dispatchable(vcpu, event) {
            Ok(found) => found,
            Err(refusal) => {
                self.counters.refusals += 1;
                return Err(refusal);
            }
        };
        self.vcpus[vcpu].running = Some(Running { event: index, saved: interrupted });
        self.counters.dispatches += 1;
        Ok(Entry {
            pc: registration.entry_point,
            x: [u64::from(event), registration.argument, interrupted.pc, interrupted.pstate],
            pstate: ENTRY_PSTATE,
        })
    }

    /// Answer the SDEI call `function` (w0) with arguments `args` (x1..x5) made by `vcpu`.
    pub fn call(&mut self, vcpu: usize, function: u32, args: [u64; 5], guest: &impl GuestState) -> SdeiAnswer {
        self.counters.calls += 1;
        match self.reply(vcpu, function, args, guest) {
            Reply::Value(value) => SdeiAnswer::Return([Some(value), None, None, None]),
            Reply::Error(code) => {
                if code == abi::NOT_SUPPORTED {
                    self.counters.not_supported += 1;
                } else {
                    self.counters.errors += 1;
                }
                SdeiAnswer::Return([Some(code as u64), None, None, None])
            }
            Reply::Answer(answer) => {
                match answer {
                    SdeiAnswer::Complete { .. } => self.counters.completes += 1,
                    SdeiAnswer::CompleteAndResume { .. } => self.counters.resumes += 1,
                    SdeiAnswer::Signal { .. } => self.counters.signals += 1,
                    SdeiAnswer::Return(_) => {}
                }
                answer
            }
        }
    }

    fn reply(&mut self, vcpu: usize, function: u32, args: [u64; 5], guest: &impl GuestState) -> Reply {
        // 32-bit parameters are the low halves of their registers (deviation 3).
        let w1 = args[0] as u32;
        match function {
            abi::VERSION => Reply::Value(abi::version_value(abi::VERSION_MAJOR, abi::VERSION_MINOR)),
            abi::EVENT_REGISTER => self.register(vcpu, w1, args[1], args[2], args[3]),
            abi::EVENT_ENABLE => self.set_enabled(vcpu, w1, true),
            abi::EVENT_DISABLE => self.set_enabled(vcpu, w1, false),
            abi::EVENT_CONTEXT => self.context(vcpu, w1),
            abi::EVENT_COMPLETE => self.complete(vcpu, args[0]),
            abi::EVENT_COMPLETE_AND_RESUME => self.complete_and_resume(vcpu, args[0]),
            abi::EVENT_UNREGISTER => match event_index(w1) {
                None => Reply::Error(abi::INVALID_PARAMETERS),
                Some(index) => match self.unregister(vcpu, index) {
                    abi::SUCCESS => Reply::Value(0),
                    code => Reply::Error(code),
                },
            },
            abi::EVENT_STATUS => match event_index(w1) {
                None => Reply::Error(abi::INVALID_PARAMETERS),
                Some(index) => Reply::Value(self.event_status(vcpu, index).bits()),
            },
            abi::EVENT_GET_INFO => get_info(w1, args[1] as u32),
            // Private events have no routing; an unknown event is invalid as well.
            abi::EVENT_ROUTING_SET => Reply::Error(abi::INVALID_PARAMETERS),
            abi::PE_MASK => {
                let was_masked = core::mem::replace(&mut self.vcpus[vcpu].masked, true);
                Reply::Value(u64::from(!was_masked))
            }
            abi::PE_UNMASK => {
                self.vcpus[vcpu].masked = false;
                Reply::Value(0)
            }
            abi::INTERRUPT_BIND => {
                if BINDABLE_INTIDS.contains(&w1) {
                    Reply::Error(abi::OUT_OF_RESOURCE)
                } else {
                    Reply::Error(abi::INVALID_PARAMETERS)
                }
            }
            // Only bound dynamic events can be released, and there are none.
            abi::INTERRUPT_RELEASE => Reply::Error(abi::INVALID_PARAMETERS),
            abi::EVENT_SIGNAL => self.signal(w1, args[1], guest),
            abi::FEATURES => match w1 {
                FEATURE_BIND_SLOTS | FEATURE_RELATIVE_MODE => Reply::Value(0),
                _ => Reply::Error(abi::INVALID_PARAMETERS),
            },
            abi::PRIVATE_RESET => {
                // Unregister every event, even after one turned out to be running.
                let mut pending = false;
                for index in 0..EVENTS.len() {
                    pending |= self.unregister(vcpu, index) == abi::PENDING;
                }
                if pending {
                    Reply::Error(abi::DENIED)
                } else {
                    Reply::Value(0)
                }
            }
            abi::SHARED_RESET => Reply::Value(0),
            _ => Reply::Error(abi::NOT_SUPPORTED),
        }
    }

    fn event_status(&self, vcpu: usize, index: usize) -> EventStatus {
        let state = &self.vcpus[vcpu];
        let event = &state.events[index];
        EventStatus {
            registered: event.registration.is_some(),
            enabled: event.enabled,
            running: state.running.is_some_and(|r| r.event == index),
        }
    }

    fn dispatchable(&self, vcpu: usize, event: u32) -> Result<(usize, Registration), Refusal> {
        let index = event_index(event).ok_or(Refusal::UnknownEvent)?;
        let state = &self.vcpus[vcpu];
        let registration = state.events[index].registration.ok_or(Refusal::NotRegistered)?;
        if !state.events[index].enabled {
            Err(Refusal::NotEnabled)
        } else if state.masked {
            Err(Refusal::Masked)
        } else if state.running.is_some() {
            Err(Refusal::Running)
        } else {
            Ok((index, registration))
        }
    }

    fn register(&mut self, vcpu: usize, event: u32, entry_point: u64, argument: u64, flags: u64) -> Reply {
        let Some(index) = event_index(event) else {
            return Reply::Error(abi::INVALID_PARAMETERS);
        };
        // Reserved bits and relative mode (unsupported) are invalid; the routing mode is
        // ignored for private events (deviation 5).
        if !entry_point.is_multiple_of(4) || flags & !REGISTER_FLAG_ROUTING_PE != 0 {
            return Reply::Error(abi::INVALID_PARAMETERS);
        }
        let status = self.event_status(vcpu, index);
        // Registered, or running with its unregistration pending: no new registration yet.
        if status.registered || status.running {
            return Reply::Error(abi::DENIED);
        }
        self.vcpus[vcpu].events[index] =
            EventState { registration: Some(Registration { entry_point, argument, flags }), enabled: false };
        Reply::Value(0)
    }

    fn set_enabled(&mut self, vcpu: usize, event: u32, enabled: bool) -> Reply {
        let Some(index) = event_index(event) else {
            return Reply::Error(abi::INVALID_PARAMETERS);
        };
        let state = &mut self.vcpus[vcpu].events[index];
        if state.registration.is_none() {
            return Reply::Error(abi::DENIED);
        }
        state.enabled = enabled;
        Reply::Value(0)
    }

    /// SDEI_EVENT_UNREGISTER of event `index`: SUCCESS, PENDING (a handler of it runs: the
    /// unregistration completes with the handler) or DENIED (not registered).
    fn unregister(&mut self, vcpu: usize, index: usize) -> i64 {
        let running = self.event_status(vcpu, index).running;
        let state = &mut self.vcpus[vcpu].events[index];
        let was_registered = state.registration.is_some();
        *state = EventState::default();
        match (was_registered, running) {
            (_, true) => abi::PENDING,
            (true, false) => abi::SUCCESS,
            (false, false) => abi::DENIED,
        }
    }

    fn context(&self, vcpu: usize, param_id: u32) -> Reply {
        let Some(running) = self.vcpus[vcpu].running else {
            return Reply::Error(abi::DENIED);
        };
        match running.saved.x.get(param_id as usize) {
            Some(&value) => Reply::Value(value),
            None => Reply::Error(abi::INVALID_PARAMETERS),
        }
    }

    fn complete(&mut self, vcpu: usize, status: u64) -> Reply {
        match self.vcpus[vcpu].running.take() {
            None => Reply::Error(abi::DENIED),
            Some(running) => Reply::Answer(SdeiAnswer::Complete {
                event: EVENTS[running.event].number,
                status,
                restore: running.saved,
            }),
        }
    }

    fn complete_and_resume(&mut self, vcpu: usize, resume_addr: u64) -> Reply {
        let state = &mut self.vcpus[vcpu];
        let Some(running) = state.running else {
            return Reply::Error(abi::DENIED);
        };
        if !resume_addr.is_multiple_of(4) {
            return Reply::Error(abi::DENIED);
        }
        state.running = None;
        let saved = running.saved;
        Reply::Answer(SdeiAnswer::CompleteAndResume {
            event: EVENTS[running.event].number,
            restore: saved,
            resume: Resume { pc: resume_addr, pstate: ENTRY_PSTATE, elr_el1: saved.pc, spsr_el1: saved.pstate },
        })
    }

    fn signal(&self, event: u32, target_mpidr: u64, guest: &impl GuestState) -> Reply {
        if event_index(event).is_none_or(|index| !EVENTS[index].signalable) {
            return Reply::Error(abi::INVALID_PARAMETERS);
        }
        match guest.vcpu_by_mpidr(crate::mpidr::affinity(target_mpidr)) {
            Some(target) if target < self.vcpus.len() => Reply::Answer(SdeiAnswer::Signal { target }),
            _ => Reply::Error(abi::INVALID_PARAMETERS),
        }
    }
}

fn get_info(event: u32, info: u32) -> Reply {
    let Some(index) = event_index(event) else {
        return Reply::Error(abi::INVALID_PARAMETERS);
    };
    match u64::from(info) {
        abi::INFO_TYPE => Reply::Value(abi::TYPE_PRIVATE),
        abi::INFO_SIGNALED => Reply::Value(u64::from(EVENTS[index].signalable)),
        abi::INFO_PRIORITY => Reply::Value(abi::PRIORITY_NORMAL),
        // Routing mode and affinity exist only for shared events.
        _ => Reply::Error(abi::INVALID_PARAMETERS),
    }
}

#[cfg(test)]
mod tests;

mod signals;
pub use signals::PendingSignals;
