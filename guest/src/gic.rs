//! GICv3: distributor enable, this CPU's redistributor, the CPU interface through ICC_*
//! system registers, interrupt dispatch and SGIs.
//!
//! The distributor and redistributor registers are arm-gic's `#[repr(C)]` blocks (`Gicd`,
//! `Gicr`, `GicrSgi`) accessed through safe-mmio's `UniqueMmioPointer`, whose every access is
//! one aligned load or store of the register's width without writeback (`ldr`/`str` on a
//! register), which the hypervisor's trap decoding needs. The hypervisor's emulation decodes
//! offsets taken from the same blocks.

use crate::percpu;
use crate::sync::BootOnce;
use arm_gic::gicv3::registers::{Gicd, GicdCtlr, Gicr, GicrCtlr, GicrSgi, GicrTyper, Waker};
use core::arch::asm;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use safe_mmio::{field, UniqueMmioPointer};

/// RD_base + SGI_base frames; twice as much with the VLPI frames of GICv4.
const FRAME_STRIDE: usize = size_of::<GicrSgi>();
const FRAME_STRIDE_VLPI: usize = 2 * FRAME_STRIDE;

/// Priority given to every SGI/PPI (all equal: no nesting is wanted).
const PRIORITY: u8 = 0xA0;
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
///
/// # Safety
/// `gicd` must be the distributor's 64 KiB register page and `gicr_base..gicr_base +
/// gicr_size` the redistributor region (from the device tree), both mapped as device memory for
/// the kernel's life and accessed by nothing but this module.
pub unsafe fn init_distributor(gicd: usize, gicr_base: usize, gicr_size: usize, vtimer_intid: u32) {
    LAYOUT.set(Layout { gicr_base, gicr_size, vtimer_intid });
    let gicd = NonNull::new(gicd as *mut Gicd).expect("the distributor is not at address 0");
    // SAFETY: the caller's contract: the distributor's page, mapped as device memory; this is
    // the only pointer to it, and it lives only for this function.
    let mut gicd = unsafe { UniqueMmioPointer::new(gicd) };
    // ARE_NS (bit 4) and EnableGrp1NS (bit 1) in the Non-secure view of a GIC with two Security
    // states, ARE and EnableGrp1 with one; arm-gic names bit 4 after the Secure view (ARE_S).
    let mut ctlr = field!(gicd, ctlr);
    ctlr.write(GicdCtlr::ARE_S | GicdCtlr::EnableGrp1NS);
    while ctlr.read().contains(GicdCtlr::RWP) {
        core::hint::spin_loop();
    }
}

/// Finds the redistributor whose GICR_TYPER affinity equals `affinity` (MPIDR Aff3..Aff0).
fn find_redistributor(affinity: u64) -> Option<usize> {
    let l = layout();
    let mut frame = l.gicr_base;
    while frame + FRAME_STRIDE <= l.gicr_base + l.gicr_size {
        // SAFETY: `frame` is inside the redistributor region from the device tree
        // (`init_distributor`'s contract); GICR_TYPER is an aligned, read-only 64-bit register.
        // A plain read rather than a `UniqueMmioPointer`: the frame may be another CPU's, which
        // that CPU may be programming meanwhile.
        let typer = unsafe { core::ptr::read_volatile((frame + offset_of!(Gicr, typer)) as *const GicrTyper) };
        if typer.core_mpidr() == affinity {
            return Some(frame);
        }
        if typer.last_redistributor() {
            return None;
        }
        frame += if typer.virtual_lpis_supported() { FRAME_STRIDE_VLPI } else { FRAME_STRIDE };
    }
    None
}

/// Wakes this CPU's redistributor, enables its SGIs and the virtual timer PPI, and turns on
/// the CPU interface.
pub fn init_this_cpu() -> Result<(), GicError> {
    let l = layout();
    let rd = find_redistributor(crate::arch::mpidr_affinity()).ok_or(GicError::RedistributorNotFound)?;
    // page_ready (asyncpf_contract::apf::PAGE_READY_INTID) is enabled too: it only ever
    // arrives after this CPU enabled asynchronous page faults.
    let enabled = (1 << SGI_RESCHEDULE)
        | (1 << SGI_TEST)
        | (1 << l.vtimer_intid)
        | (1 << asyncpf_contract::apf::PAGE_READY_INTID);
    let rd = NonNull::new(rd as *mut GicrSgi).expect("a redistributor is not at address 0");
    // SAFETY: `rd` is this CPU's redistributor (matched by affinity) in the region from the
    // device tree (`init_distributor`'s contract), which only this CPU programs, and only here;
    // the pointer lives only for this function.
    let mut rd = unsafe { UniqueMmioPointer::new(rd) };
    {
        let mut gicr = field!(rd, gicr);
        let mut waker = field!(gicr, waker);
        let mut awake = waker.read();
        awake.remove(Waker::PROCESSOR_SLEEP);
        waker.write(awake);
        while waker.read().contains(Waker::CHILDREN_ASLEEP) {
            core::hint::spin_loop();
        }
    }
    {
        let mut sgi = field!(rd, sgi);
        field!(sgi, icenabler).get(0).expect("GICR_ICENABLER0").write(u32::MAX);
    }
    let mut gicr = field!(rd, gicr);
    while field!(gicr, ctlr).read().contains(GicrCtlr::RWP) {
        core::hint::spin_loop();
    }
    let mut sgi = field!(rd, sgi);
    field!(sgi, igroupr).get(0).expect("GICR_IGROUPR0").write(u32::MAX);
    let mut priorities = field!(sgi, ipriorityr);
    for intid in 0..32 {
        priorities.get(intid).expect("an SGI or PPI").write(PRIORITY);
    }
    field!(sgi, isenabler).get(0).expect("GICR_ISENABLER0").write(enabled);
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
