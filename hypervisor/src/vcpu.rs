//! A vCPU's life on its physical CPU: the trap configuration, the run loop, and the handling
//! of every kind of exit (hypercalls, trapped system registers, stage-2 aborts, interrupts).

use core::sync::atomic::{AtomicU8, Ordering};

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, CNTHCTL_EL2, CNTP_CTL_EL0, CNTVOFF_EL2, CNTV_CTL_EL0, ELR_EL1, ESR_EL1,
    ESR_EL2, FAR_EL1, FAR_EL2, HCR_EL2, HPFAR_EL2, MIDR_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VMPIDR_EL2,
};
use asyncpf_contract::runner::{EXIT_SYSTEM_OFF, EXIT_SYSTEM_RESET, RESULT_PREFIX};

use crate::arch::entry::{run_guest, ExitKind, GuestRegs};
use crate::backing::clock::Ticks;
use crate::mm::PAGE_SIZE;
use crate::pager::{self, FaultReply, Resolution};
use crate::stats::STATS;
use crate::trace::trace_event;
use crate::vcpus::PowerState;
use crate::vm::{Device, Vm};
use crate::{apf, arch, gic, guest_diag, hyp_println, sdei, vgic};
use asyncpf_core::hypercall::{self, Outcome, Verdict};
use asyncpf_core::trap::{
    self, ec, AbortKind, FaultStatus, MmioAccess, Stage2Abort, SysregAccess, PSTATE_EL1H_MASKED, XZR,
};

/// SCTLR_EL1 at reset: RES1 bits only, MMU and caches off, little-endian.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// Configure the traps for the guest on this physical CPU (once per CPU).
pub fn configure_traps(vm: &Vm, vcpu: usize) {
    let pauth = guest_feature_enables().pauth;
    HCR_EL2.write(
        HCR_EL2::VM::Enable
            + HCR_EL2::SWIO::SET
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::TIDCP::SET
            // Feature ID registers: the guest sees the hardware values minus a PMU that is
            // not a PMUv3; see asyncpf_core::trap::guest_id_register.
            + HCR_EL2::TID3::SET
            + HCR_EL2::RW::EL1IsAarch64
            + if pauth { HCR_EL2::API::DisableTrapPointerAuthInstToEl2 + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2 } else { HCR_EL2::API::CLEAR },
    );
    // The EL1 physical timer and counter are the guest's, as on KVM (the hypervisor uses the
    // EL2 physical timer).
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET);
    CNTVOFF_EL2.set(0);
    // The CPU's PMUv3 is the guest's, EL2 filtered (crate::pmu).
    crate::pmu::configure_el2();
    set_cptr_el2();
    set_vpidr_el2(MIDR_EL1.get());
    VMPIDR_EL2.set(vm.vcpus[vcpu].mpidr | 1 << 31);
    vm.stage2.activate();
}

/// VPIDR_EL2: the MIDR the guest reads.
fn set_vpidr_el2(value: u64) {
    // SAFETY: VPIDR_EL2 only changes what EL1 reads from MIDR_EL1.
    unsafe { core::arch::asm!("msr vpidr_el2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// What EL2 enables for the features this CPU's ID registers advertise (`asyncpf_core::features`).
fn guest_feature_enables() -> asyncpf_core::features::Enables {
    let id = |crm, op2| arch::read_id_register(crm, op2).unwrap_or(0);
    asyncpf_core::features::enables(asyncpf_core::features::IdRegisters {
        aa64pfr0: id(4, 0),
        aa64pfr1: id(4, 1),
        aa64isar1: id(6, 1),
        aa64isar2: id(6, 2),
        aa64mmfr1: id(7, 1),
        aa64smfr0: id(4, 5),
    })
}

/// CPTR_EL2 (non-VHE): trap nothing the guest may use (FP/SIMD, SVE, SME), keeping RES1 bits;
/// then the vector lengths and the other feature enables.
fn set_cptr_el2() {
    let enables = guest_feature_enables();
    // SAFETY: CPTR_EL2 controls traps to EL2 only; these settings trap only absent features.
    unsafe { core::arch::asm!("msr cptr_el2, {}", in(reg) enables.cptr_el2, options(nomem, nostack, preserves_flags)) };
    arch::isb();
    if let Some(hcrx) = enables.hcrx_el2 {
        // SAFETY: HCRX_EL2 (FEAT_HCX, present) enables EL1/EL0 features; MSCEn only lets the
        // guest use the memory copy/set instructions its ID registers advertise.
        unsafe { core::arch::asm!("msr S3_4_C1_C2_2, {}", in(reg) hcrx, options(nomem, nostack, preserves_flags)) };
    }
    if let Some(zcr) = enables.zcr_el2 {
        // SAFETY: ZCR_EL2 (FEAT_SVE, present, not trapped after the CPTR_EL2 write above) only
        // caps the vector length EL1 and EL0 may choose; the maximum caps nothing.
        unsafe { core::arch::asm!("msr S3_4_C1_C2_0, {}", in(reg) zcr, options(nomem, nostack, preserves_flags)) };
    }
    if let Some(smcr) = enables.smcr_el2 {
        // SAFETY: SMCR_EL2 (FEAT_SME, present, not trapped after the CPTR_EL2 write above) only
        // caps the streaming vector length and lets EL1 and EL0 use FA64 and ZT0 when the CPU
        // has them; nothing at EL2 uses SME.
        unsafe { core::arch::asm!("msr S3_4_C1_C2_6, {}", in(reg) smcr, options(nomem, nostack, preserves_flags)) };
    }
    arch::isb();
}

/// Run vCPU `index` on this physical CPU, forever.
pub fn run(vm: &'static Vm, index: usize) -> ! {
    configure_traps(vm, index);
    let mut regs = GuestRegs::default();
    loop {
        wait_for_power_on(vm, index, &mut regs);
        let mut exit = ExitClock::default();
        while run_once(vm, index, &mut regs, &mut exit) {}
    }
}

/// What an exit of the asynchronous protocol was, for its share of the hypervisor's time
/// (`STATS.el2_ns_*`). Set by the exit's handler ([`mark_exit`]); `Other` by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum ExitCause {
    #[default]
    Other,
    AsyncFault,
    HandlerAnswer,
    Interrupt,
}

/// Per vCPU: the cause its handlers gave the current exit.
static EXIT_CAUSE: [AtomicU8; arch::boot::MAX_CPUS] = [const { AtomicU8::new(0) }; arch::boot::MAX_CPUS];

fn mark_exit(index: usize, cause: ExitCause) {
    EXIT_CAUSE[index].store(cause as u8, Ordering::Relaxed);
}

/// When the vCPU last left the guest (model time), to charge the time until it enters again.
#[derive(Default)]
struct ExitClock {
    exited_at: Option<u64>,
}

impl ExitClock {
    fn exited(&mut self, index: usize) {
        mark_exit(index, ExitCause::Other);
        self.exited_at = pager::get().map(|pager| pager.now());
    }

    fn entering(&mut self, index: usize) {
        let (Some(at), Some(pager)) = (self.exited_at.take(), pager::get()) else {
            return;
        };
        let counter = match EXIT_CAUSE[index].load(Ordering::Relaxed) {
            c if c == ExitCause::AsyncFault as u8 => &STATS.el2_ns_async_fault,
            c if c == ExitCause::HandlerAnswer as u8 => &STATS.el2_ns_handler_answer,
            c if c == ExitCause::Interrupt as u8 => &STATS.el2_ns_interrupt,
            _ => {
                trace_event!(Enter, aux = ExitCause::Other as u16);
                return;
            }
        };
        let now = pager.now();
        counter.add(Ticks(now.saturating_sub(at)).as_nanos());
        // The same instant as the time charged, so that the trace's exits add up to `el2_ns_*`.
        trace_event!(Enter, time = now, aux = u16::from(EXIT_CAUSE[index].load(Ordering::Relaxed)));
    }
}

/// Idle until this vCPU is turned on (PSCI CPU_ON, or at boot for vCPU 0); then reset it to
/// the architected CPU_ON entry state.
fn wait_for_power_on(vm: &Vm, index: usize, regs: &mut GuestRegs) {
    let shared = &vm.vcpus[index];
    while shared.power() != PowerState::OnPending {
        match pager::get() {
            Some(pager) => pager.idle_wfi(),
            None => arch::wait_for_interrupt(),
        }
        gic::drain(|intid| {
            pager_interrupt(intid);
        });
    }
    let (entry, context) = shared.boot_request();
    // The PE comes up with its SDEI state reset (CPU_OFF reset it already, and ended its APF
    // session; this also covers the first power-on).
    vm.sdei.reset_vcpu(index);
    *regs = GuestRegs::default();
    regs.x[0] = context;
    regs.pc = entry;
    regs.pstate = PSTATE_EL1H_MASKED;
    SCTLR_EL1.set(SCTLR_EL1_RESET);
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    crate::pmu::reset();
    vgic::reset_this_cpu();
    arch::isb();
    shared.set_power(PowerState::On);
}

/// Enter the guest once and handle the exit. Returns false when the vCPU turned off.
fn run_once(vm: &Vm, index: usize, regs: &mut GuestRegs, clock: &mut ExitClock) -> bool {
    if let Some(pager) = pager::get() {
        // Virtual time: no guest instruction runs while a disk request is late.
        pager.hold_while_late(|intid| vcpu_interrupt(vm, index, intid));
    }
    vm.sdei.deliver_signalled(index, regs);
    // Whether a trapped WFI is to return at once (page_ready completions wait for ring space).
    let mut wfi_backlog = false;
    if let Some(pager) = pager::get() {
        if let Some(apf) = &vm.apf {
            wfi_backlog = apf.on_entry(vm.signals(), pager, index);
        }
        // Virtual time with one vCPU: the guest's WFI sleeps in the hypervisor, whose sleeps
        // end when the timer says (`Pager::timed_wfi`).
        trap_wfi(wfi_backlog || pager.sleeps_guest_wfi());
    }
    vm.vgic.flush(index);
    if let Some(pager) = pager::get() {
        pager.close_window();
    }
    clock.entering(index);
    let exit = run_guest(regs);
    clock.exited(index);
    crate::trace::exit(clock.exited_at, exit != ExitKind::Sync);
    STATS.exits.inc();
    match exit {
        ExitKind::Sync => handle_sync(vm, index, regs, wfi_backlog),
        ExitKind::Irq | ExitKind::Fiq => {
            STATS.irq_exits.inc();
            mark_exit(index, ExitCause::Interrupt);
            handle_physical_interrupts(vm, index);
            true
        }
        ExitKind::SError => {
            // An SError from the guest is an asynchronous external abort (nothing the
            // hypervisor caused); report it to the guest as one.
            guest_diag!(
                GuestSError,
                "vCPU {index}: SError from the guest, ESR {:#x}; injecting a virtual SError",
                ESR_EL2.get()
            );
            HCR_EL2.modify(HCR_EL2::VSE::SET);
            true
        }
    }
}

/// Trap the guest's WFI (HCR_EL2.TWI) or not. Trapped while the vCPU's page_ready completions
/// wait for ring space: the guest makes room without a call, so a vCPU that emptied its ring and
/// sleeps in `wfi` with nothing else pending must exit for them to be posted. And in virtual
/// time with one vCPU, where the hypervisor sleeps for the guest ([`guest_wfi`]). Otherwise WFI
/// runs natively: the vCPU owns its physical CPU.
fn trap_wfi(trap: bool) {
    if HCR_EL2.is_set(HCR_EL2::TWI) != trap {
        HCR_EL2.modify(if trap { HCR_EL2::TWI::SET } else { HCR_EL2::TWI::CLEAR });
    }
}

fn handle_physical_interrupts(vm: &Vm, index: usize) {
    gic::drain(|intid| {
        if !pager_interrupt(intid) {
            vcpu_interrupt(vm, index, intid)
        }
    });
}

/// A physical interrupt that concerns the vCPU of this CPU.
fn vcpu_interrupt(vm: &Vm, index: usize, intid: u32) {
    match intid {
        gic::PPI_VIRTUAL_TIMER | gic::PPI_PHYS_TIMER | gic::PPI_PMU => vm.vgic.forward_level_ppi(index, intid),
        // A kick or an underflow: the flush before re-entry does the work.
        gic::SGI_KICK => {}
        gic::PPI_MAINTENANCE => crate::vgic::clear_underflow_request(),
        other => guest_diag!(Internal, "vCPU {index}: unexpected physical interrupt {other} ignored"),
    }
}

/// Give `intid` to the pager if it is the pager's (the backing disk, the latency timer).
pub fn pager_interrupt(intid: u32) -> bool {
    pager::get().is_some_and(|pager| pager.handle_interrupt(intid))
}

/// The guest's trapped WFI (`wfi_backlog`: trapped for page_ready completions waiting for ring
/// space).
fn guest_wfi(vm: &Vm, index: usize, regs: &mut GuestRegs, esr: u64, wfi_backlog: bool) {
    regs.pc += trap::instruction_bytes(esr);
    if wfi_backlog {
        // The next entry posts them, and the guest, back from its WFI, finds them.
        STATS.backlog_wfi_exits.inc();
        return;
    }
    let Some(pager) = pager::get() else { return };
    // Virtual time, one vCPU: sleep here as the guest's WFI would, until an interrupt (not at
    // all if one is pending for it already). A WFIT (its timeout not modelled) returns at
    // once, as a WFI may.
    if trap::iss(esr) & ISS_WFX_TI != ISS_WFX_TI_WFI || pager.is_late() || vm.vgic.has_pending(index) {
        return;
    }
    pager.close_window();
    pager.timed_wfi();
    handle_physical_interrupts(vm, index);
}

/// ESR_EL2.ISS of a trapped WFx: TI, which instruction (0: WFI, 1: WFE, 2: WFIT, 3: WFET).
const ISS_WFX_TI: u64 = 0b11;
const ISS_WFX_TI_WFI: u64 = 0b00;

fn handle_sync(vm: &Vm, index: usize, regs: &mut GuestRegs, wfi_backlog: bool) -> bool {
    let esr = ESR_EL2.get();
    let iss = trap::iss(esr);
    match trap::exception_class(esr) {
        ec::HVC64 => hypercall_exit(vm, index, regs, (iss & 0xffff) as u16),
        ec::SMC64 => {
            // A trapped SMC's preferred return address is the SMC itself.
            regs.pc += 4;
            hypercall_exit(vm, index, regs, (iss & 0xffff) as u16)
        }
        ec::SYSREG => {
            sysreg_exit(vm, index, regs, iss);
            true
        }
        ec::DABT_LOWER => {
            data_abort_exit(vm, index, regs, esr);
            true
        }
        ec::IABT_LOWER => {
            instruction_abort_exit(vm, index, regs, iss);
            true
        }
        ec::WFX => {
            // Trapped for page_ready completions waiting for ring space, or in virtual time
            // with one vCPU (`trap_wfi`). (A WFE is never trapped: HCR_EL2.TWE stays clear.)
            guest_wfi(vm, index, regs, esr, wfi_backlog);
            true
        }
        _ => {
            inject_undef(regs);
            true
        }
    }
}

fn hypercall_exit(vm: &Vm, index: usize, regs: &mut GuestRegs, immediate: u16) -> bool {
    let function = hypercall::function_id(regs.x[0]);
    if immediate == 0 && sdei::is_sdei_call(function) {
        STATS.hvc_calls.inc();
        STATS.sdei_calls.inc();
        let (verdict, completed) = vm.sdei.call(&vm.vcpus, index, regs);
        match verdict {
            Verdict::Served => {}
            Verdict::Unknown => STATS.unknown_calls.inc(),
            Verdict::InvalidArguments => STATS.invalid_arguments.inc(),
        }
        if let (Some((asyncpf_contract::sdei::EVENT_PAGE_NOT_PRESENT, resumed)), Some(apf)) = (completed, &vm.apf) {
            mark_exit(index, ExitCause::HandlerAnswer);
            apf.handler_done(vm.signals(), index, resumed, pager::get().map(|pager| pager.stamp(index)));
        }
        return true;
    }
    #[cfg(feature = "trace")]
    if immediate == 0 && function == asyncpf_contract::apf::TRACE_PUT {
        STATS.hvc_calls.inc();
        regs.x[0] = crate::trace::guest_put(vm, index, regs, |intid| vcpu_interrupt(vm, index, intid)) as u64;
        return true;
    }
    if let (0, true, Some(apf), Some(pager)) = (immediate, apf::is_apf_call(function), &vm.apf, pager::get()) {
        STATS.hvc_calls.inc();
        match apf.call(vm.signals(), pager, index, regs, |intid| vcpu_interrupt(vm, index, intid)) {
            asyncpf_contract::smccc::SUCCESS => {}
            asyncpf_contract::smccc::NOT_SUPPORTED => STATS.unknown_calls.inc(),
            _ => STATS.invalid_arguments.inc(),
        }
        return true;
    }
    let args = [regs.x[0], regs.x[1], regs.x[2], regs.x[3]];
    let answer = hypercall::handle(vm, immediate, args);
    STATS.hvc_calls.inc();
    if answer.psci {
        STATS.psci_calls.inc();
    }
    match answer.verdict {
        Verdict::Served => {}
        Verdict::Unknown => STATS.unknown_calls.inc(),
        Verdict::InvalidArguments => STATS.invalid_arguments.inc(),
    }
    match answer.outcome {
        Outcome::Return(values) => {
            for (reg, value) in regs.x.iter_mut().zip(values) {
                if let Some(value) = value {
                    *reg = value;
                }
            }
            true
        }
        Outcome::Suspend => {
            regs.x[0] = asyncpf_contract::psci::SUCCESS as u64;
            if !vm.vgic.has_pending(index) {
                match pager::get() {
                    Some(pager) if !pager.is_late() => {
                        pager.close_window();
                        pager.timed_wfi();
                    }
                    _ => arch::wait_for_interrupt(),
                }
            }
            true
        }
        Outcome::CpuOff => {
            // The vCPU's context is gone. Its SDEI state is reset (events unregistered, a
            // running handler forgotten, masked) and its APF session ends (docs/abi.md §8.2:
            // tokens dropped, the wake-all written if the ring has room, the record let go),
            // before it is marked off: nothing is dispatched or posted to it afterwards.
            vm.sdei.reset_vcpu(index);
            if let (Some(apf), Some(pager)) = (&vm.apf, pager::get()) {
                apf.cpu_off(pager, index);
            }
            // Stop its timers and PMU (level interrupts that would keep waking this CPU while
            // it idles) and drop its in-flight virtual interrupts.
            CNTV_CTL_EL0.set(0);
            CNTP_CTL_EL0.set(0);
            crate::pmu::reset();
            vgic::reset_this_cpu();
            vm.vcpus[index].set_power(PowerState::Off);
            false
        }
        Outcome::SystemOff => finish(index, "system_off", EXIT_SYSTEM_OFF),
        Outcome::SystemReset => finish(index, "system_reset", EXIT_SYSTEM_RESET),
    }
}

/// The guest ended the machine: print the hypervisor's results and end QEMU.
fn finish(index: usize, how: &str, status: u32) -> ! {
    let mut json = alloc::string::String::new();
    use core::fmt::Write;
    let _ = write!(json, "{{\"end\":\"{how}\",\"by_vcpu\":{index},");
    let _ = STATS.write_json_members(&mut json);
    let _ =
        write!(json, ",\"list_registers\":{},\"cwg_bytes\":{}", vgic::list_registers(), crate::max_writeback_granule());
    json.push_str(",\"diagnostics\":");
    let _ = crate::diag::write_json(&mut json);
    crate::trace::finish(&mut json);
    json.push_str(",\"sdei\":");
    let _ = crate::vm::get().sdei.write_json(&mut json);
    if let Some(apf) = &crate::vm::get().apf {
        json.push_str(",\"apf\":");
        let _ = apf.write_json(&mut json);
    }
    if let Some(pager) = pager::get() {
        json.push_str(",\"mem\":");
        let _ = pager.write_json(&mut json);
    }
    json.push('}');
    hyp_println!("{RESULT_PREFIX}{json}");
    crate::shutdown::exit(status, false)
}

fn sysreg_exit(vm: &Vm, index: usize, regs: &mut GuestRegs, iss: u64) {
    STATS.sysreg_traps.inc();
    let access = SysregAccess::decode(iss);
    if access.id == trap::ICC_SGI1R_EL1 && !access.is_read {
        let value = if access.register == XZR { 0 } else { regs.x[access.register] };
        vm.vgic.send_sgi(&vm.vcpus, index, value);
        regs.pc += 4;
    } else if trap::is_id_register(access.id) && access.is_read {
        let hardware = arch::read_id_register(access.id.crm, access.id.op2).unwrap_or(0);
        if access.register != XZR {
            regs.x[access.register] = trap::guest_id_register(access.id, hardware);
        }
        regs.pc += 4;
    } else {
        inject_undef(regs);
    }
}

/// The IPA of a stage-2 abort.
fn fault_ipa() -> u64 {
    (HPFAR_EL2.get() >> 4 << 12) | (FAR_EL2.get() & 0xfff)
}

fn instruction_abort_exit(vm: &Vm, index: usize, regs: &mut GuestRegs, iss: u64) {
    let ipa = fault_ipa();
    if vm.is_guest_ram(ipa, 1) {
        page_fault(vm, index, regs, ipa, Stage2Abort::decode(iss, true), AbortKind::Instruction);
    } else {
        inject_abort(regs, AbortKind::Instruction, FAR_EL2.get());
    }
}

/// A stage-2 abort on guest RAM, which only paged RAM takes: the pager makes the page
/// resident (the vCPU may wait here for the disk) and the access is retried, or it fails and
/// the guest gets a synchronous external abort.
fn page_fault(vm: &Vm, index: usize, regs: &mut GuestRegs, ipa: u64, abort: Stage2Abort, kind: AbortKind) {
    let Some(pager) = pager::get() else {
        guest_diag!(
            MappedRamAbort,
            "vCPU {index}: stage-2 abort on mapped guest RAM at IPA {ipa:#x}; injecting an abort"
        );
        inject_abort(regs, kind, FAR_EL2.get());
        return;
    };
    STATS.page_faults.inc();
    trace_event!(Fault, aux = crate::trace::fault_flags(regs.pstate, &abort, kind), a = ipa, b = FAR_EL2.get());
    if abort.on_table_walk {
        STATS.table_walk_faults.inc();
        if abort.write {
            STATS.table_walk_write_faults.inc();
        }
    }
    let far = FAR_EL2.get();
    let page = ((ipa - vm.ram_base.0) / PAGE_SIZE) as usize;
    // Asynchronously if the guest can take it (docs/abi.md §8.3): the vCPU then goes on. An
    // access-flag fault only sets the flag (without the pager's lock) and never waits, unless
    // its page was unmapped meanwhile: not worth a token slot, nor the APF and SDEI locks.
    // A page that cannot be read back is never waited for asynchronously: the access must
    // take its abort (docs/abi.md §8.3).
    let may_block = !matches!(abort.status, FaultStatus::AccessFlag { .. });
    let unreadable =
        may_block && vm.apf.is_some() && pager.is_unreadable(page, |intid| vcpu_interrupt(vm, index, intid));
    let apf = vm.apf.as_ref().filter(|_| may_block).and_then(|apf| {
        apf.prepare(vm.signals(), index, regs.pstate, unreadable, pager.expected_read_ticks())
            .map(|waiter| (apf, waiter))
    });
    let reply =
        pager.fault(index, page, abort, apf.map(|(_, waiter)| waiter), |intid| vcpu_interrupt(vm, index, intid));
    let resolution = match (reply, apf) {
        (FaultReply::Blocked, Some((apf, waiter))) => {
            // The delivery's cost starts now: the pager's work so far is the same for a fault
            // that waits (asyncpf_core::apf::cost).
            match apf.deliver(vm.signals(), index, waiter, far, unreadable, pager.stamp(index), regs) {
                apf::Delivery::Delivered => {
                    STATS.async_faults.inc();
                    mark_exit(index, ExitCause::AsyncFault);
                    trace_event!(FaultEnd, aux = asyncpf_core::trace::FaultEnd::Delivered as u16);
                    return;
                }
                // The page is back, or the retry is resolved synchronously (it faults and waits).
                apf::Delivery::PageBack | apf::Delivery::Refused => Resolution::Retry,
            }
        }
        (FaultReply::Retry | FaultReply::Abort, Some((apf, waiter))) => {
            apf.release(index, waiter);
            if reply == FaultReply::Retry {
                Resolution::Retry
            } else {
                Resolution::Abort
            }
        }
        (FaultReply::Retry, None) => Resolution::Retry,
        (FaultReply::Abort, None) => Resolution::Abort,
        (FaultReply::Blocked, None) => pager.wait(index, |intid| vcpu_interrupt(vm, index, intid)),
    };
    trace_event!(FaultEnd, aux = crate::trace::fault_end(reply, apf.is_some(), resolution) as u16);
    if resolution == Resolution::Abort {
        inject_abort(regs, kind, far);
    }
}

fn data_abort_exit(vm: &Vm, index: usize, regs: &mut GuestRegs, esr: u64) {
    let iss = trap::iss(esr);
    let ipa = fault_ipa();
    let abort = AbortKind::Data { write: MmioAccess::write_not_read_bit(iss) != 0 };
    if vm.is_guest_ram(ipa, 1) {
        page_fault(vm, index, regs, ipa, Stage2Abort::decode(iss, false), abort);
        return;
    }
    // Not a device, or no instruction syndrome (e.g. a load pair): cannot be emulated.
    let (Some(device), Some(access)) = (vm.device_at(ipa), MmioAccess::decode(iss)) else {
        inject_abort(regs, abort, FAR_EL2.get());
        return;
    };
    let register_value = regs.x.get(access.register).copied().unwrap_or(0); // xzr: none
    let big_endian = guest_big_endian(regs.pstate);
    let write_value = access.is_write.then(|| access.device_order(access.store_value(register_value), big_endian));
    STATS.mmio_accesses.inc();
    match emulate(vm, index, device, access.size, write_value) {
        Ok(value) => {
            if !access.is_write && access.register != XZR {
                regs.x[access.register] = access.load_result(access.device_order(value, big_endian));
            }
            regs.pc += trap::instruction_bytes(esr);
        }
        Err(()) => inject_abort(regs, abort, FAR_EL2.get()),
    }
}

/// Whether the guest's data accesses are big-endian in the context that trapped.
fn guest_big_endian(pstate: u64) -> bool {
    trap::big_endian_data(pstate, SCTLR_EL1.get())
}

/// Perform an emulated device access; `Err` means "not a valid access to this device", which
/// the guest receives as an external abort.
fn emulate(vm: &Vm, index: usize, device: Device, size: u8, write: Option<u64>) -> Result<u64, ()> {
    match device {
        Device::Distributor { offset } => {
            let mut dist = vm.vgic.dist.lock();
            match write {
                Some(value) => {
                    dist.write(offset, size, value).map_err(|_| ())?;
                    drop(dist);
                    // Enables and routing may have changed for other vCPUs' SPIs.
                    (0..vm.vcpus.len()).filter(|&v| v != index).for_each(|v| vm.vcpus.kick(v));
                    Ok(0)
                }
                None => dist.read(offset, size).map_err(|_| ()),
            }
        }
        Device::Redistributor { vcpu, offset } => {
            if write.is_none() && vcpu == index {
                // A read of its own pending/active state sees the timers' levels as they are.
                vm.vgic.sync_levels(index);
            }
            let mut redist = vm.vgic.redist(vcpu).lock();
            match write {
                Some(value) => {
                    redist.write(offset, size, value).map_err(|_| ())?;
                    drop(redist);
                    if vcpu != index {
                        vm.vcpus.kick(vcpu);
                    }
                    Ok(0)
                }
                None => redist.read(offset, size).map_err(|_| ()),
            }
        }
        Device::Uart { offset } => {
            if size != 4 && !(size == 1 && offset == 0) && size != 2 {
                return Err(());
            }
            let mut uart = vm.uart.lock();
            match write {
                Some(value) => {
                    uart.write(offset, value as u32);
                    Ok(0)
                }
                None => Ok(uart.read(offset) as u64),
            }
        }
    }
}

/// Deliver a synchronous exception to the guest's EL1 vectors, as the hardware would:
/// ELR/SPSR/ESR(/FAR)_EL1 are set and the vCPU continues at the right vector offset.
fn inject_sync_exception(regs: &mut GuestRegs, esr_el1: u64, far: Option<u64>) {
    ELR_EL1.set(regs.pc);
    SPSR_EL1.set(regs.pstate);
    ESR_EL1.set(esr_el1);
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    regs.pc = VBAR_EL1.get() + trap::sync_vector_offset(regs.pstate);
    regs.pstate = PSTATE_EL1H_MASKED;
}

/// Inject a synchronous external abort for the access that trapped at virtual address `far`;
/// the guest sees it as taken from EL0 or EL1, wherever it ran.
fn inject_abort(regs: &mut GuestRegs, kind: AbortKind, far: u64) {
    STATS.injected_aborts.inc();
    inject_sync_exception(regs, trap::external_abort_esr(kind, regs.pstate), Some(far));
}

/// Inject an UNDEFINED exception for the trapped instruction.
fn inject_undef(regs: &mut GuestRegs) {
    STATS.injected_undefs.inc();
    inject_sync_exception(regs, trap::undefined_esr(), None);
}
