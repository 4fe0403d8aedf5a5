//! The guest's virtual GICv3: the emulated distributor/redistributor state lives in
//! `asyncpf_core::vgic` (pure, host-tested); this module moves deliverable interrupts from that
//! state into this CPU's list registers before each guest entry, forwards the guest's timers
//! and PMU interrupt, and emulates ICC_SGI1R_EL1.
//!
//! # The guest's timers
//! The EL1 virtual (INTID 27) and physical (INTID 30) timers belong to the guest, whose vCPU
//! owns the CPU. Their interrupts are level-sensitive, as KVM emulates them: pending while the
//! timer's output (ENABLE, ISTATUS, not IMASK) is high. When one fires at EL2, `gic::drain`
//! leaves it active and it goes into a list register with the HW bit and its physical INTID:
//! the guest's deactivation of the virtual interrupt deactivates the physical one, which fires
//! again if the output is still high. At every exit, before it is handled, and again before
//! every guest entry the output is sampled: if the guest disabled, masked or re-armed the timer
//! meanwhile, the interrupt is withdrawn (model and list register) and the physical one
//! deactivated. The guest's CNTV_CTL/CNTP_CTL are
//! never written by the hypervisor while the vCPU lives.
//!
//! # The guest's PMU
//! The PMU's overflow interrupt (INTID 23) is the physical CPU's too and is level-sensitive
//! (some counter overflowed with its interrupt enabled and the PMU enabled,
//! `asyncpf_core::pmu::overflow_output`): it is handed over exactly like the timers' and
//! withdrawn the same way when the guest clears the overflow or disables the interrupt before
//! it has taken it.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, CNTP_CTL_EL0, CNTV_CTL_EL0, ICH_HCR_EL2, ICH_LR0_EL2 as LR, ICH_VMCR_EL2,
    ICH_VTR_EL2,
};

use alloc::vec::Vec;
use asyncpf_core::sgi::SgiRequest;
use asyncpf_core::vgic::{Distributor, Pending, Redistributor};

use crate::arch::gicv3_sysregs::{read_lr, write_lr};
use crate::stats::STATS;
use crate::sync::Mutex;
use crate::vcpus::Vcpus;
use asyncpf_core::lockorder::Level;

/// List register fields (Arm IHI 0069, ICH_LR<n>_EL2), as `aarch64-cpu` defines them for
/// ICH_LR0_EL2 (every list register has that layout).
const LR_STATE_MASK: u64 = LR::State.mask << LR::State.shift;
const LR_STATE_PENDING: u64 = LR::State::Pending.value;
/// The virtual interrupt is a physical one's twin: deactivating it deactivates pINTID.
const LR_HW: u64 = LR::HW::SET.value;
const LR_PINTID_SHIFT: usize = LR::pINTID.shift;
const LR_GROUP1: u64 = LR::Group::SET.value;
const LR_PRIORITY_SHIFT: usize = LR::Priority.shift;
const LR_VINTID_MASK: u64 = LR::vINTID.mask << LR::vINTID.shift;
// The layout these name (IHI 0069 12.4.6), pinned at compile time.
const _: () = assert!(
    LR_STATE_MASK == 0b11 << 62
        && LR_STATE_PENDING == 0b01 << 62
        && LR_HW == 1 << 61
        && LR_GROUP1 == 1 << 60
        && LR_PRIORITY_SHIFT == 48
        && LR_PINTID_SHIFT == 32
        && LR_VINTID_MASK == 0xffff_ffff
);

/// The guest's interrupt controller state: the emulated distributor and one redistributor per
/// vCPU (`asyncpf_core::vgic`), each behind its own lock.
pub struct VirtualGic {
    pub dist: Mutex<Distributor>,
    redists: Vec<Mutex<Redistributor>>,
}

/// Number of list registers this CPU implements.
pub fn list_registers() -> usize {
    ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1
}

/// Reset this CPU's virtual interface for a vCPU that is (re)starting: no interrupts in
/// flight, the virtual CPU interface enabled.
pub fn reset_this_cpu() {
    for n in 0..list_registers() {
        write_lr(n, 0);
    }
    // The timers' and the PMU's physical interrupts may have been left active for the guest.
    for intid in crate::gic::GUEST_LEVEL_PPIS {
        crate::gic::deactivate_private(intid);
    }
    ICH_VMCR_EL2.set(0);
    ICH_HCR_EL2.write(ICH_HCR_EL2::En::SET);
}

/// While the vCPU on this CPU is parked in the hypervisor (the pager's wait): stop the virtual
/// CPU interface from signalling its listed interrupts. A pending list register asserts the
/// virtual IRQ line, which the hypervisor cannot take but which ends `wfi` at once on QEMU
/// (its "has work" test counts virtual interrupts at any EL), so the CPU would spin. The list
/// registers keep their state; [`unpark`] restores the interface.
pub fn park() -> u64 {
    let saved = ICH_HCR_EL2.get();
    ICH_HCR_EL2.modify(ICH_HCR_EL2::En::CLEAR);
    crate::arch::isb();
    saved
}

/// Withdraw the request for an underflow maintenance interrupt (ICH_HCR_EL2.UIE). The interrupt
/// is level-sensitive: it stays asserted while UIE is set and at most one list register is
/// valid, so [`crate::gic::drain`] would take it again and again at EL2 and never return to the
/// guest. The flush before the next guest entry sets UIE again if interrupts still wait.
pub fn clear_underflow_request() {
    ICH_HCR_EL2.modify(ICH_HCR_EL2::UIE::CLEAR);
    crate::arch::isb();
}

/// Undo [`park`] with the value it returned.
pub fn unpark(saved: u64) {
    ICH_HCR_EL2.set(saved);
    crate::arch::isb();
}

impl VirtualGic {
    /// A distributor with `spis` SPIs and a redistributor per vCPU, nothing pending.
    pub fn new(spis: u32, vcpus: usize) -> Self {
        VirtualGic {
            dist: Mutex::new(Level::Distributor, Distributor::new(spis, vcpus)),
            redists: (0..vcpus)
                .map(|i| {
                    Mutex::new(
                        Level::Redistributor,
                        Redistributor::new(crate::vcpus::vcpu_mpidr(i), i as u16, i + 1 == vcpus),
                    )
                })
                .collect(),
        }
    }

    /// vCPU `vcpu`'s redistributor.
    pub fn redist(&self, vcpu: usize) -> &Mutex<Redistributor> {
        &self.redists[vcpu]
    }

    /// Make private interrupt `intid` (an SGI or PPI) pending on `vcpu`.
    pub fn raise_private(&self, vcpu: usize, intid: u32) {
        // Callers pass SGI/PPI numbers, always in range.
        let _ = self.redists[vcpu].lock().set_pending(intid);
    }

    /// Before the hypervisor looks at what is pending for the vCPU on this CPU (a WFI or
    /// CPU_SUSPEND deciding whether to sleep, a guest read of its redistributor's pending or
    /// active state): withdraw the guest's level interrupts whose output fell while the guest
    /// ran (it disabled, masked or re-armed its timer, or cleared a PMU overflow), so that it
    /// sees what KVM, which samples the timers at every exit, would: a CPU_SUSPEND must not find
    /// the withdrawn interrupt pending and return at once. [`Self::flush`] samples again before
    /// every entry. (Sampling at every exit instead cost about 10 us of hypervisor time per
    /// asynchronous fault in the main job.)
    pub fn sync_levels(&self, vcpu: usize) {
        let count = list_registers();
        let mut lrs = [0u64; 16];
        for (n, lr) in lrs.iter_mut().enumerate().take(count) {
            *lr = read_lr(n);
        }
        self.withdraw_lowered_levels(vcpu, &mut lrs[..count]);
    }

    /// Move deliverable interrupts of vCPU `vcpu` into free list registers; ask for an underflow
    /// maintenance interrupt when more are waiting than fit.
    pub fn flush(&self, vcpu: usize) {
        let count = list_registers();
        let mut lrs = [0u64; 16];
        for (n, lr) in lrs.iter_mut().enumerate().take(count) {
            *lr = read_lr(n);
        }
        self.withdraw_lowered_levels(vcpu, &mut lrs[..count]);
        let mut more_waiting = false;
        loop {
            let Some(free) = lrs[..count].iter().position(|lr| lr & LR_STATE_MASK == 0) else {
                more_waiting = self.has_deliverable(vcpu);
                break;
            };
            let Some(pending) = self.take_deliverable(vcpu) else { break };
            let intid = pending.intid as u64;
            // An interrupt already in a list register must not be listed twice: mark it pending
            // again there (pending and active, if the guest is still handling it).
            if let Some(n) = lrs[..count].iter().position(|lr| lr & LR_STATE_MASK != 0 && lr & LR_VINTID_MASK == intid)
            {
                lrs[n] |= LR_STATE_PENDING;
                write_lr(n, lrs[n]);
                continue;
            }
            let hw = if crate::gic::GUEST_LEVEL_PPIS.contains(&pending.intid) {
                LR_HW | intid << LR_PINTID_SHIFT
            } else {
                0
            };
            lrs[free] = LR_STATE_PENDING | LR_GROUP1 | hw | (pending.priority as u64) << LR_PRIORITY_SHIFT | intid;
            write_lr(free, lrs[free]);
            STATS.lr_injections.inc();
        }
        ICH_HCR_EL2.modify(if more_waiting { ICH_HCR_EL2::UIE::SET } else { ICH_HCR_EL2::UIE::CLEAR });
    }

    /// The highest-priority interrupt deliverable to `vcpu` (an SGI/PPI of its own or an SPI
    /// routed to it), taken out of the model: from now on a list register holds its state.
    fn take_deliverable(&self, vcpu: usize) -> Option<Pending> {
        let mut dist = self.dist.lock();
        asyncpf_core::vgic::take_next(&mut dist, &mut self.redists[vcpu].lock())
    }

    fn has_deliverable(&self, vcpu: usize) -> bool {
        let dist = self.dist.lock();
        asyncpf_core::vgic::has_next(&dist, &self.redists[vcpu].lock())
    }

    /// Whether any virtual interrupt is pending for the vCPU on this CPU (in a list register or
    /// waiting in the model): a suspended vCPU must not sleep then.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.sync_levels(vcpu);
        (0..list_registers()).any(|n| read_lr(n) & LR_STATE_PENDING != 0) || self.has_deliverable(vcpu)
    }

    /// One of the guest's level interrupts (a timer's, the PMU's) is asserted (physical PPI `intid`
    /// at EL2, left active by `gic::drain`): make its virtual twin pending.
    pub fn forward_level_ppi(&self, vcpu: usize, intid: u32) {
        self.raise_private(vcpu, intid);
        if intid == crate::gic::PPI_PMU {
            STATS.pmu_irqs.inc();
        } else {
            STATS.timer_irqs.inc();
        }
    }

    /// Level semantics of the guest's timers and PMU (see the module's documentation): one of
    /// their interrupts that is pending, in the model or only pending in a list register, while
    /// its output is low is withdrawn, and its physical interrupt deactivated. One the guest has
    /// acknowledged (active in a list register) is left for the guest to deactivate.
    fn withdraw_lowered_levels(&self, vcpu: usize, lrs: &mut [u64]) {
        let mut redist = self.redists[vcpu].lock();
        for intid in crate::gic::GUEST_LEVEL_PPIS {
            let in_model = redist.is_pending(intid);
            let listed = lrs
                .iter()
                .position(|lr| lr & LR_STATE_MASK == LR_STATE_PENDING && lr & LR_VINTID_MASK == u64::from(intid));
            if (!in_model && listed.is_none()) || level_output(intid) {
                continue;
            }
            if in_model {
                let _ = redist.clear_pending(intid);
            }
            if let Some(n) = listed {
                lrs[n] = 0;
                write_lr(n, 0);
            }
            crate::gic::deactivate_private(intid);
        }
    }

    /// The guest wrote `value` to ICC_SGI1R_EL1 on vCPU `sender`: make the SGI pending on every
    /// target vCPU and kick the ones on other CPUs.
    pub fn send_sgi(&self, vcpus: &Vcpus, sender: usize, value: u64) {
        let request = SgiRequest::decode(value);
        let sender_mpidr = vcpus[sender].mpidr;
        for (target, vcpu) in vcpus.iter().enumerate() {
            if request.targets(vcpu.mpidr, sender_mpidr) {
                // `intid` has 4 bits: always an SGI.
                let _ = self.redists[target].lock().set_pending(request.intid);
                STATS.sgis.inc();
                if target != sender {
                    vcpus.kick(target);
                }
            }
        }
    }
}

/// The output behind the guest's level interrupt `intid`: its timer's, or the PMU's overflow
/// request.
fn level_output(intid: u32) -> bool {
    match intid {
        crate::gic::PPI_VIRTUAL_TIMER => asyncpf_core::vgic::timer_output(CNTV_CTL_EL0.get()),
        crate::gic::PPI_PHYS_TIMER => asyncpf_core::vgic::timer_output(CNTP_CTL_EL0.get()),
        _ => crate::pmu::overflow_output(),
    }
}
