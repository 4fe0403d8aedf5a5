//! The guest's SDEI dispatcher (Arm DEN0054 1.1, conduit `hvc`): `asyncpf_core::sdei` decides
//! what every call answers and whether an event can be delivered; this module applies it to the
//! vCPU's registers (the general registers, PC and PSTATE of the exit, and ELR_EL1/SPSR_EL1,
//! which belong to the guest while its vCPU runs on this CPU).
//!
//! Events are delivered on the vCPU's own physical CPU, just before it enters the guest (a
//! signalled event 0) or at a stage-2 fault (page_not_present, see the pager). A signal of
//! event 0 that cannot be delivered yet (the event disabled, the vCPU masked or in a handler)
//! stays pending in [`Dispatcher::signalled`]; one nobody registered for is dropped, as in
//! Arm's reference dispatcher.

use crate::sync::Mutex;
use aarch64_cpu::registers::{Writeable, ELR_EL1, SPSR_EL1};
use asyncpf_contract::sdei as abi;
use asyncpf_core::hypercall::Verdict;
use asyncpf_core::lockorder::Level;
use asyncpf_core::sdei::{Context, Entry, PendingSignals, Refusal, Sdei, SdeiAnswer, SAVED_REGS};

use crate::arch::entry::GuestRegs;
use crate::vcpus::Vcpus;

/// The SDEI state of the VM.
pub struct Dispatcher {
    model: Mutex<Sdei>,
    /// vCPUs with a signalled event 0 not yet delivered (bit `n`: vCPU `n`).
    signalled: PendingSignals,
}

/// Whether `function` (W0 of an `hvc`/`smc`, see `hypercall::function_id`) is in the SDEI range.
pub fn is_sdei_call(function: u32) -> bool {
    asyncpf_core::sdei::is_sdei_function(function)
}

impl Dispatcher {
    /// Every vCPU masked, nothing registered.
    pub fn new(vcpus: usize) -> Self {
        assert!(vcpus <= 64, "the signal mask holds 64 vCPUs");
        Dispatcher { model: Mutex::new(Level::Sdei, Sdei::new(vcpus)), signalled: PendingSignals::new() }
    }

    /// An SDEI call by `vcpu` (x0 = its function ID, x1..x5 its arguments), answered in `regs`.
    /// Also says which handler the call ended, if it was a completion: `(event, resumed)`,
    /// `resumed` for SDEI_EVENT_COMPLETE_AND_RESUME.
    pub fn call(&self, vcpus: &Vcpus, vcpu: usize, regs: &mut GuestRegs) -> (Verdict, Option<(u32, bool)>) {
        let args = [regs.x[1], regs.x[2], regs.x[3], regs.x[4], regs.x[5]];
        let (answer, verdict) = {
            let mut model = self.model.lock();
            let before = *model.counters();
            let answer = model.call(vcpu, asyncpf_core::hypercall::function_id(regs.x[0]), args, vcpus);
            let after = model.counters();
            let verdict = if after.not_supported > before.not_supported {
                Verdict::Unknown
            } else if after.errors > before.errors {
                Verdict::InvalidArguments
            } else {
                Verdict::Served
            };
            (answer, verdict)
        };
        match answer {
            SdeiAnswer::Return(values) => {
                for (reg, value) in regs.x.iter_mut().zip(values) {
                    if let Some(value) = value {
                        *reg = value;
                    }
                }
            }
            SdeiAnswer::Complete { event, restore, .. } => {
                restore_context(regs, &restore);
                return (verdict, Some((event, false)));
            }
            SdeiAnswer::CompleteAndResume { event, restore, resume } => {
                restore_context(regs, &restore);
                ELR_EL1.set(resume.elr_el1);
                SPSR_EL1.set(resume.spsr_el1);
                regs.pc = resume.pc;
                regs.pstate = resume.pstate;
                return (verdict, Some((event, true)));
            }
            SdeiAnswer::Signal { target } => {
                regs.x[0] = abi::SUCCESS as u64;
                self.signalled.signal(target);
                if target != vcpu {
                    vcpus.kick(target);
                }
            }
        }
        (verdict, None)
    }

    /// Before `vcpu` enters the guest: deliver its signalled event 0, if it can be now.
    pub fn deliver_signalled(&self, vcpu: usize, regs: &mut GuestRegs) {
        if !self.signalled.take(vcpu) {
            return;
        }
        match self.dispatch(vcpu, abi::EVENT_SOFTWARE_SIGNALLED, regs) {
            Ok(()) | Err(Refusal::NotRegistered | Refusal::UnknownEvent) => {}
            // Kept pending: it is delivered once the guest enables, unmasks or completes.
            Err(Refusal::NotEnabled | Refusal::Masked | Refusal::Running) => self.signalled.keep(vcpu),
        }
    }

    /// Deliver `event` to `vcpu` now, interrupting the context in `regs`, if the model allows.
    pub fn dispatch(&self, vcpu: usize, event: u32, regs: &mut GuestRegs) -> Result<(), Refusal> {
        let entry = self.model.lock().dispatch(vcpu, event, context_of(regs))?;
        enter(regs, &entry);
        Ok(())
    }

    /// Whether `event` could be delivered to `vcpu` now (nothing changes).
    pub fn can_dispatch(&self, vcpu: usize, event: u32) -> Result<(), Refusal> {
        self.model.lock().check_dispatch(vcpu, event)
    }

    /// `vcpu` was reset (turned off, or on again): its events are unregistered, it is masked,
    /// and a pending signal is dropped.
    pub fn reset_vcpu(&self, vcpu: usize) {
        self.model.lock().reset_vcpu(vcpu);
        self.signalled.clear(vcpu);
    }

    /// The `sdei` result object: what the dispatcher answered and delivered.
    pub fn write_json(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let c = *self.model.lock().counters();
        write!(
            out,
            "{{\"calls\":{},\"not_supported\":{},\"errors\":{},\"dispatches\":{},\"refusals\":{},\"completes\":{},\
             \"resumes\":{},\"signals\":{}}}",
            c.calls, c.not_supported, c.errors, c.dispatches, c.refusals, c.completes, c.resumes, c.signals
        )
    }
}

fn context_of(regs: &GuestRegs) -> Context {
    let mut x = [0; SAVED_REGS];
    x.copy_from_slice(&regs.x[..SAVED_REGS]);
    Context { x, pc: regs.pc, pstate: regs.pstate }
}

fn restore_context(regs: &mut GuestRegs, saved: &Context) {
    regs.x[..SAVED_REGS].copy_from_slice(&saved.x);
    regs.pc = saved.pc;
    regs.pstate = saved.pstate;
}

fn enter(regs: &mut GuestRegs, entry: &Entry) {
    regs.x[..4].copy_from_slice(&entry.x);
    regs.pc = entry.pc;
    regs.pstate = entry.pstate;
}
