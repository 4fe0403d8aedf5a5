//! GICv3: distributor enable, this CPU's redistributor, the CPU interface through ICC_*
//! system registers, interrupt dispatch and SGIs.
//!
//! All MMIO is single 32-bit accesses (64-bit for GICR_TYPER) via `mmio`.

use crate::sync::BootOnce;
use crate::{mmio, percpu};
use core::arch::asm;

// Distributor registers.
const GICD_CTLR: usize = 0x0000;
const GICD_CTLR_RWP: u32 = 1 << 31;
/// ARE_NS (bit 4) and EnableGrp1NS (bit 1); the same bits are ARE and EnableGrp1 when the
/// GIC has a single security state.
const GICD_CTLR_ARE_NS: u32 = 1 << 4;
const GICD_CTLR_ENABLE_GRP1NS: u32 = 1 << 1;

// Redistributor, RD_base frame.
const GICR_CTLR: usize = 0x0000;
const GICR_CTLR_RWP: u32 = 1 << 3;
const GICR_WAKER: usize = 0x0014;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_TYPER: usize = 0x0008;
const TYPER_VLPIS: u64 = 1 << 1;
const TYPER_LAST: u64 = 1 << 4;
/// RD_base + SGI_base frames; twice as much with the VLPI frames of GICv4.
const FRAME_STRIDE: usize = 0x2_0000;
const FRAME_STRIDE_VLPI: usize = 0x4_0000;

// Redistributor, SGI_base frame (RD_base + 64 KiB).
const SGI_FRAME: usize = 0x1_0000;
const GICR_IGROUPR0: usize = 0x0080;
const GICR_ISENABLER0: usize = 0x0100;
const GICR_ICENABLER0: usize = 0x0180;
const GICR_IPRIORITYR: usize = 0x0400;

/// Priority given to every SGI/PPI (all equal: no nesting is wanted).
const PRIORITY: u32 = 0xA0;
/// INTIDs 1020..1023 are special (spurious).
const SPURIOUS_FIRST: u32 = 1020;

/// What runs when an interrupt arrives (with IRQs masked, before the interrupt is ended).
pub type Handler = fn();

/// INTIDs 0..32: the SGIs and PPIs, the only interrupts the guest enables.
const PRIVATE_INTIDS: usize = 32;

/// The handler of each private interrupt, registered at boot ([`register`]) by the code that
/// owns the interrupt, so that this driver calls no timer, scheduler or scenario code by name.
static HANDLERS: [BootOnce<Handler>; PRIVATE_INTIDS] = [const { BootOnce::new() }; PRIVATE_INTIDS];

/// Run `handler` for private interrupt `intid` (an SGI or PPI) from now on. Boot CPU only,
/// before the other CPUs start; an INTID is registered once.
pub fn register(intid: u32, handler: Handler) {
    assert!((intid as usize) < PRIVATE_INTIDS, "INTID {intid} is not an SGI or PPI");
    HANDLERS[intid as usize].set(handler);
}

/// SGI that asks a CPU to reschedule (new work was queued for it).
pub const SGI_RESCHEDULE: u32 = 0;
/// SGI used by the `ipi` scenario.
pub const SGI_TEST: u32 = 1;

struct Layout {
    gicr_base: usize,
    gicr_size: usize,
    vtimer_intid: u32,
}

static LAYOUT: BootOnce<Layout> = BootOnce::new();

fn layout() -> &'static Layout {
    LAYOUT.get().expect("GIC initialised at boot")
}

/// Why this CPU's interrupt controller could not be set up.
#[derive(Debug, Clone, Copy)]
pub enum GicError {
    RedistributorNotFound,
}

/// Records the GIC's addresses and enables the distributor (boot CPU only).
pub fn init_distributor(gicd: usize, gicr_base: usize, gicr_size: usize, vtimer_intid: u32) {
    LAYOUT.set(Layout { gicr_base, gicr_size, vtimer_intid });
    // SAFETY: GICD_CTLR of the distributor from the device tree, mapped as device memory.
    unsafe {
        mmio::write32(gicd + GICD_CTLR, GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_GRP1NS);
        while mmio::read32(gicd + GICD_CTLR) & GICD_CTLR_RWP != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Finds the redistributor whose GICR_TYPER affinity equals `affinity` (MPIDR Aff3..Aff0).
fn find_redistributor(affinity: u64) -> Option<usize> {
    let l = layout();
    let packed = ((affinity >> 8) & 0xFF00_0000) | (affinity & 0xFF_FFFF);
    let mut frame = l.gicr_base;
    while frame + FRAME_STRIDE <= l.gicr_base + l.gicr_size {
        // SAFETY: `frame` is inside the redistributor region from the device tree; GICR_TYPER
        // is an aligned 64-bit register.
        let typer = unsafe { mmio::read64(frame + GICR_TYPER) };
        if typer >> 32 == packed {
            return Some(frame);
        }
        if typer & TYPER_LAST != 0 {
            return None;
        }
        frame += if typer & TYPER_VLPIS != 0 { FRAME_STRIDE_VLPI } else { FRAME_STRIDE };
    }
    None
}

/// Wakes this CPU's redistributor, enables its SGIs and the virtual timer PPI, and turns on
/// the CPU interface.
pub fn init_this_cpu() -> Result<(), GicError> {
    let l = layout();
    let rd = find_redistributor(crate::arch::mpidr_affinity()).ok_or(GicError::RedistributorNotFound)?;
    let sgi = rd + SGI_FRAME;
    // page_ready (asyncpf_contract::apf::PAGE_READY_INTID) is enabled too: it only ever
    // arrives after this CPU enabled asynchronous page faults.
    let enabled = (1 << SGI_RESCHEDULE)
        | (1 << SGI_TEST)
        | (1 << l.vtimer_intid)
        | (1 << asyncpf_contract::apf::PAGE_READY_INTID);
    // SAFETY: `rd` is this CPU's redistributor (matched by affinity); all offsets are aligned
    // 32-bit registers of its RD and SGI frames.
    unsafe {
        let waker = mmio::read32(rd + GICR_WAKER);
        mmio::write32(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
        while mmio::read32(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
            core::hint::spin_loop();
        }
        mmio::write32(sgi + GICR_ICENABLER0, u32::MAX);
        while mmio::read32(rd + GICR_CTLR) & GICR_CTLR_RWP != 0 {
            core::hint::spin_loop();
        }
        mmio::write32(sgi + GICR_IGROUPR0, u32::MAX);
        let four = PRIORITY * 0x0101_0101;
        for word in 0..8 {
            mmio::write32(sgi + GICR_IPRIORITYR + 4 * word, four);
        }
        mmio::write32(sgi + GICR_ISENABLER0, enabled);
    }
    // SAFETY: programming this CPU's own interface: system-register access on (SRE), all
    // priorities unmasked (PMR), no preemption grouping (BPR1), Group 1 on (IGRPEN1).
    unsafe {
        asm!(
            "mrs {tmp}, icc_sre_el1",
            "orr {tmp}, {tmp}, #1",
            "msr icc_sre_el1, {tmp}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "mov {tmp}, #1",
            "msr icc_igrpen1_el1, {tmp}",
            "isb",
            tmp = out(reg) _,
            pmr = in(reg) 0xFFu64,
            options(nostack),
        );
    }
    Ok(())
}

/// Turns this CPU's interface off (Group 1 disabled), before the CPU turns itself off;
/// [`init_this_cpu`] turns it on again.
pub fn disable_this_cpu() {
    // SAFETY: clearing ICC_IGRPEN1_EL1 only stops this CPU from taking Group 1 interrupts.
    unsafe { asm!("msr icc_igrpen1_el1, xzr", "isb", options(nomem, nostack)) };
}

fn acknowledge() -> u32 {
    let intid: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority pending Group 1 interrupt,
    // which the caller then handles and ends.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nomem, nostack)) };
    (intid & 0xFF_FFFF) as u32
}

fn end_of_interrupt(intid: u32) {
    // SAFETY: `intid` was acknowledged by `acknowledge` on this CPU and is now handled.
    unsafe { asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(intid), options(nomem, nostack)) };
}

/// Handles every pending interrupt (called from the IRQ vector with IRQs masked).
pub fn handle_interrupts() {
    loop {
        let intid = acknowledge();
        if intid >= SPURIOUS_FIRST {
            return;
        }
        // An interrupt nobody registered for (none is enabled) is only ended.
        if let Some(handler) = HANDLERS.get(intid as usize).and_then(BootOnce::get) {
            handler();
        }
        end_of_interrupt(intid);
    }
}

/// Sends SGI `intid` to the CPU with logical index `cpu`.
pub fn send_sgi(cpu: usize, intid: u32) {
    let affinity = percpu::get(cpu).mpidr();
    let aff0 = affinity & 0xFF;
    let value = ((affinity >> 32) & 0xFF) << 48 // Aff3
        | ((affinity >> 16) & 0xFF) << 32 // Aff2
        | ((aff0 >> 4) << 44) // RS: which group of 16 Aff0 values
        | u64::from(intid & 0xF) << 24
        | ((affinity >> 8) & 0xFF) << 16 // Aff1
        | 1 << (aff0 & 0xF); // target list

    // SAFETY: ICC_SGI1R_EL1 only raises the SGI at the addressed CPU. The DSB (and the asm not
    // being `nomem`, for the compiler) makes the caller's earlier stores, e.g. a task queued for
    // the target, visible before the SGI can arrive; the ISB makes it issue before the caller
    // goes on (e.g. waits for the receipt).
    unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
}
