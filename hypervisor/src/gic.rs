//! The physical GICv3, owned by the hypervisor: its distributor, each CPU's redistributor and
//! the CPU interface at EL2. The guest never touches it; it sees the emulated one in `vgic`.
//! Besides its private interrupts the hypervisor owns one SPI: the backing-store disk's
//! (`enable_spi`), routed to one CPU.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{ReadWriteable, Readable, ICC_SRE_EL2, MPIDR_EL1};

use crate::arch::{self, gicv3_sysregs as icc};

/// Physical SGI the hypervisor uses to kick another CPU (re-evaluate its vCPU's interrupts,
/// or start its vCPU).
pub const SGI_KICK: u32 = 0;
/// GICv3 maintenance interrupt (PPI 9).
pub const PPI_MAINTENANCE: u32 = 25;
/// EL1 virtual timer interrupt (PPI 11): fires while the guest's timer condition holds.
pub const PPI_VIRTUAL_TIMER: u32 = 27;
/// EL1 physical timer interrupt (PPI 14, CNTP_*): the guest's too (CNTHCTL_EL2.EL1PCEN).
pub const PPI_PHYS_TIMER: u32 = 30;
/// PMU overflow interrupt (PPI 7): the guest's PMU (`crate::pmu`).
pub const PPI_PMU: u32 = asyncpf_core::pmu::OVERFLOW_INTID;
/// The guest's level-sensitive PPIs (its timers and its PMU), handed to it through hardware
/// list registers (`vgic`): the hypervisor acknowledges them but leaves them active, and the
/// guest's deactivation of the virtual interrupt deactivates the physical one.
pub const GUEST_LEVEL_PPIS: [u32; 3] = [PPI_VIRTUAL_TIMER, PPI_PHYS_TIMER, PPI_PMU];
/// EL2 physical timer interrupt (PPI 10, CNTHP_*): the backing store's latency deadlines.
pub const PPI_HYP_TIMER: u32 = 26;

const GICD_CTLR: usize = 0x0000;
const GICD_CTLR_RWP: u32 = 1 << 31;
const GICD_CTLR_ARE: u32 = 1 << 4;
const GICD_CTLR_ENABLE_G1: u32 = 1 << 1;
const GICD_IGROUPR: u64 = 0x0080;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_ICENABLER: u64 = 0x0180;
const GICD_ICPENDR: u64 = 0x0280;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_ICFGR: u64 = 0x0c00;
const GICD_IROUTER: u64 = 0x6000;
/// GICD_ICFGR: two bits per interrupt, the upper one set for edge-triggered.
const ICFGR_EDGE: u32 = 0b10;
/// The affinity fields of MPIDR_EL1 (Aff3 at 39:32, Aff2..Aff0 at 23:0), which GICD_IROUTER
/// takes at the same positions (IRM, bit 31, stays 0: route to exactly that CPU).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// SPIs are INTIDs 32..1020.
const SPI_INTIDS: core::ops::Range<u32> = 32..1020;

const GICR_FRAME_BYTES: u64 = 0x2_0000;
const GICR_TYPER: usize = 0x0008;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER: usize = 0x0014;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = GICR_SGI_BASE + 0x0080;
const GICR_ISENABLER0: usize = GICR_SGI_BASE + 0x0100;
const GICR_ICACTIVER0: usize = GICR_SGI_BASE + 0x0380;
const GICR_IPRIORITYR: usize = GICR_SGI_BASE + 0x0400;

/// Priority of every interrupt the hypervisor takes (they are all equal; none preempts another
/// because the hypervisor never unmasks interrupts at EL2).
const HYP_IRQ_PRIORITY: u8 = 0x80;

fn read32(addr: u64) -> u32 {
    // SAFETY: only called with addresses inside the GIC's register frames from the device
    // tree, identity-mapped as device memory at EL2.
    unsafe { read_volatile(addr as *const u32) }
}

fn write32(addr: u64, value: u32) {
    // SAFETY: as for `read32`.
    unsafe { write_volatile(addr as *mut u32, value) }
}

fn read64(addr: u64) -> u64 {
    // SAFETY: as for `read32`; GICR_TYPER is a 64-bit register.
    unsafe { read_volatile(addr as *const u64) }
}

fn write64(addr: u64, value: u64) {
    // SAFETY: as for `read32`; GICD_IROUTER<n> are 64-bit registers.
    unsafe { write_volatile(addr as *mut u64, value) }
}

/// Enable the distributor with affinity routing (CPU 0, once).
pub fn init_distributor(gicd_base: u64) {
    write32(gicd_base + GICD_CTLR as u64, GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1);
    while read32(gicd_base + GICD_CTLR as u64) & GICD_CTLR_RWP != 0 {}
}

/// Find this CPU's redistributor, wake it, enable the hypervisor's private interrupts, and
/// enable the CPU interface at EL2 (every CPU).
pub fn init_this_cpu(gicr_base: u64, gicr_size: u64) {
    let mpidr = MPIDR_EL1.get();
    let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
    let mut frame = gicr_base;
    let rd = loop {
        assert!(frame < gicr_base + gicr_size, "no redistributor for MPIDR {mpidr:#x}");
        let typer = read64(frame + GICR_TYPER as u64);
        if typer >> 32 == affinity {
            break frame;
        }
        assert!(typer & GICR_TYPER_LAST == 0, "no redistributor for MPIDR {mpidr:#x}");
        frame += GICR_FRAME_BYTES;
    };
    let waker = read32(rd + GICR_WAKER as u64);
    write32(rd + GICR_WAKER as u64, waker & !GICR_WAKER_PROCESSOR_SLEEP);
    while read32(rd + GICR_WAKER as u64) & GICR_WAKER_CHILDREN_ASLEEP != 0 {}

    THIS_REDISTRIBUTOR[arch::cpu_index()].store(rd, Ordering::Relaxed);
    write32(rd + GICR_IGROUPR0 as u64, u32::MAX);
    for intid in [SGI_KICK, PPI_MAINTENANCE, PPI_VIRTUAL_TIMER, PPI_PHYS_TIMER, PPI_PMU, PPI_HYP_TIMER] {
        let reg = rd + (GICR_IPRIORITYR as u64) + (intid as u64 & !3);
        let shift = (intid % 4) * 8;
        let value = read32(reg) & !(0xff << shift) | (HYP_IRQ_PRIORITY as u32) << shift;
        write32(reg, value);
    }
    write32(
        rd + GICR_ISENABLER0 as u64,
        1 << SGI_KICK
            | 1 << PPI_MAINTENANCE
            | 1 << PPI_VIRTUAL_TIMER
            | 1 << PPI_PHYS_TIMER
            | 1 << PPI_PMU
            | 1 << PPI_HYP_TIMER,
    );

    // System-register access to the CPU interface, at EL2 and (for the guest's virtual
    // interface) at EL1.
    ICC_SRE_EL2
        .modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET + ICC_SRE_EL2::DIB::SET + ICC_SRE_EL2::DFB::SET);
    arch::isb();
    icc::set_priority_mask(0xff);
    icc::set_binary_point1(0);
    icc::split_priority_drop();
    icc::set_group1_enabled(true);
}

/// Each CPU's redistributor frame (RD_base), found by [`init_this_cpu`].
static THIS_REDISTRIBUTOR: [AtomicU64; arch::boot::MAX_CPUS] = [const { AtomicU64::new(0) }; arch::boot::MAX_CPUS];

/// Deactivate private interrupt `intid` (< 32) of this CPU through its redistributor
/// (GICR_ICACTIVER0): for a guest level interrupt (timer, PMU) the hypervisor took and left active when the
/// guest will not deactivate it (its virtual twin was withdrawn, or the vCPU was reset).
/// Defined also when the interrupt is not active.
pub fn deactivate_private(intid: u32) {
    let rd = THIS_REDISTRIBUTOR[arch::cpu_index()].load(Ordering::Relaxed);
    write32(rd + GICR_ICACTIVER0 as u64, 1 << intid);
}

/// How an SPI's line signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Configure SPI `intid` as a group-1 interrupt with the hypervisor's priority and the given
/// trigger, route it to the CPU with affinity `target_mpidr`, and enable it.
pub fn enable_spi(gicd_base: u64, intid: u32, trigger: Trigger, target_mpidr: u64) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = (gicd_base + 4 * (intid / 32) as u64, 1u32 << (intid % 32));
    // The trigger may only change while the interrupt is disabled.
    write32(word + GICD_ICENABLER, bit);
    wait_for_distributor(gicd_base);
    write32(word + GICD_IGROUPR, read32(word + GICD_IGROUPR) | bit);
    let priority = gicd_base + GICD_IPRIORITYR + (intid as u64 & !3);
    let shift = (intid % 4) * 8;
    write32(priority, read32(priority) & !(0xff << shift) | (HYP_IRQ_PRIORITY as u32) << shift);
    let config = gicd_base + GICD_ICFGR + 4 * (intid / 16) as u64;
    let shift = (intid % 16) * 2;
    let edge = if trigger == Trigger::Edge { ICFGR_EDGE } else { 0 };
    write32(config, read32(config) & !(ICFGR_EDGE << shift) | edge << shift);
    write64(gicd_base + GICD_IROUTER + 8 * intid as u64, target_mpidr & MPIDR_AFFINITY_MASK);
    write32(word + GICD_ICPENDR, bit);
    write32(word + GICD_ISENABLER, bit);
}

/// Disable SPI `intid` and drop a pending edge.
pub fn disable_spi(gicd_base: u64, intid: u32) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = (gicd_base + 4 * (intid / 32) as u64, 1u32 << (intid % 32));
    write32(word + GICD_ICENABLER, bit);
    wait_for_distributor(gicd_base);
    write32(word + GICD_ICPENDR, bit);
}

/// Enable or disable SPI `intid` at the distributor, keeping its configuration and pending
/// state (a level that is high, or an edge latched meanwhile, is signalled once enabled).
pub fn set_spi_enabled(gicd_base: u64, intid: u32, enabled: bool) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = (gicd_base + 4 * (intid / 32) as u64, 1u32 << (intid % 32));
    write32(word + if enabled { GICD_ISENABLER } else { GICD_ICENABLER }, bit);
    wait_for_distributor(gicd_base);
}

fn wait_for_distributor(gicd_base: u64) {
    while read32(gicd_base + GICD_CTLR as u64) & GICD_CTLR_RWP != 0 {}
}

/// Send the kick SGI to the physical CPU with affinity `mpidr`.
pub fn kick(mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let value = (1u64 << (aff0 % 16))
        | ((aff0 / 16) << 44) // RS: range selector for Aff0 >= 16
        | ((mpidr >> 8) & 0xff) << 16
        | ((mpidr >> 16) & 0xff) << 32
        | ((mpidr >> 32) & 0xff) << 48
        | (SGI_KICK as u64) << 24;
    icc::send_sgi1(value);
}

/// Take every pending physical interrupt, calling `handle` for each, then end it: drop its
/// priority and deactivate it, except the guest's level interrupts (timers, PMU), which stay
/// active until the guest deactivates them (see [`GUEST_LEVEL_PPIS`]).
pub fn drain(mut handle: impl FnMut(u32)) {
    loop {
        let intid = icc::ack_group1();
        if intid >= icc::INTID_SPURIOUS {
            break;
        }
        handle(intid);
        icc::end_of_interrupt(intid);
        if !GUEST_LEVEL_PPIS.contains(&intid) {
            icc::deactivate(intid);
        }
    }
}
