//! The physical GICv3, owned by the hypervisor: its distributor, each CPU's redistributor and
//! the CPU interface at EL2. The guest never touches it; it sees the emulated one in `vgic`.
//! Besides its private interrupts the hypervisor owns one SPI: the backing-store disk's
//! (`enable_spi`), routed to one CPU.
//!
//! The registers are arm-gic's `#[repr(C)]` blocks (`Gicd`, `GicrSgi`) behind safe-mmio's
//! `UniqueMmioPointer`: the distributor's is created once ([`init_distributor`]) and shared
//! under a lock, each redistributor's only ever by its own CPU ([`init_this_cpu`]). The emulated GIC
//! decodes offsets taken from the same blocks (`asyncpf_core::vgic::regs`).

use core::mem::{offset_of, size_of};
use core::ptr::{read_volatile, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{ReadWriteable, Readable, ICC_SRE_EL2, MPIDR_EL1};
use arm_gic::gicv3::registers::{Gicd, GicdCtlr, Gicr, GicrSgi, GicrTyper, Waker};
use safe_mmio::{field, UniqueMmioPointer};

use crate::arch::{self, gicv3_sysregs as icc};
use crate::sync::{Mutex, MutexGuard};
use asyncpf_core::lockorder::Level;

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

/// GICD_ICFGR: two bits per interrupt, the upper one set for edge-triggered.
const ICFGR_EDGE: u32 = 0b10;
/// The affinity fields of MPIDR_EL1 (Aff3 at 39:32, Aff2..Aff0 at 23:0), which GICD_IROUTER
/// takes at the same positions (IRM, bit 31, stays 0: route to exactly that CPU).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// SPIs are INTIDs 32..1020.
const SPI_INTIDS: core::ops::Range<u32> = 32..1020;

/// Priority of every interrupt the hypervisor takes (they are all equal; none preempts another
/// because the hypervisor never unmasks interrupts at EL2).
const HYP_IRQ_PRIORITY: u8 = 0x80;

/// The distributor's registers (arm-gic's `Gicd` block), shared by every CPU through
/// [`DISTRIBUTOR`].
struct Distributor(UniqueMmioPointer<'static, Gicd>);

/// The distributor, set up by CPU 0 ([`init_distributor`]). Only SPI configuration goes through
/// it, rarely (the disk's SPI), so one lock serializes it (a leaf of the lock hierarchy: the
/// pager enables and disables the SPI under its own lock).
static DISTRIBUTOR: spin::Once<Mutex<Distributor>> = spin::Once::new();

impl Distributor {
    /// # Safety
    /// `base` must be the address of the physical distributor's 64 KiB register page,
    /// identity-mapped as device memory for the rest of the hypervisor's life, and nothing else
    /// may access that page while the returned value exists.
    unsafe fn new(base: u64) -> Self {
        let regs = NonNull::new(base as *mut Gicd).expect("the distributor is not at address 0");
        // SAFETY: the caller's contract is `UniqueMmioPointer::new`'s: a valid, aligned, mapped
        // device page of this layout, accessed through nothing else.
        Distributor(unsafe { UniqueMmioPointer::new(regs) })
    }

    /// Wait until the distributor has applied earlier writes (GICD_CTLR.RWP).
    fn wait_for_writes(&mut self) {
        while field!(self.0, ctlr).read().contains(GicdCtlr::RWP) {}
    }
}

/// The distributor, once [`init_distributor`] has run.
fn distributor() -> MutexGuard<'static, Distributor> {
    DISTRIBUTOR.get().expect("the distributor is initialised before any SPI is configured").lock()
}

/// Enable the distributor with affinity routing (CPU 0, once).
///
/// # Safety
/// `gicd_base` must be the physical distributor's register page (from the device tree),
/// identity-mapped as device memory for the hypervisor's life; no other code may access it
/// (the hypervisor does so only through this module from then on).
pub unsafe fn init_distributor(gicd_base: u64) {
    // SAFETY: the caller's contract is `Distributor::new`'s, and `call_once` makes this the
    // only `Distributor`.
    let gicd = DISTRIBUTOR.call_once(|| Mutex::new(Level::PhysicalGic, unsafe { Distributor::new(gicd_base) }));
    let mut gicd = gicd.lock();
    // With one Security state (as QEMU's GIC for a hypervisor at EL2) bit 4 is ARE, which
    // arm-gic names after the Secure view, and bit 1 EnableGrp1.
    field!(gicd.0, ctlr).write(GicdCtlr::ARE_S | GicdCtlr::EnableGrp1NS);
    gicd.wait_for_writes();
}

/// One CPU's redistributor: its RD_base and SGI_base frames (arm-gic's `GicrSgi` block).
struct Redistributor(UniqueMmioPointer<'static, GicrSgi>);

impl Redistributor {
    /// # Safety
    /// `rd_base` must be the RD_base frame of a redistributor (128 KiB: RD_base and SGI_base),
    /// identity-mapped as device memory for the hypervisor's life, and nothing else may access
    /// those frames while the returned value exists.
    unsafe fn new(rd_base: u64) -> Self {
        let regs = NonNull::new(rd_base as *mut GicrSgi).expect("a redistributor is not at address 0");
        // SAFETY: the caller's contract is `UniqueMmioPointer::new`'s.
        Redistributor(unsafe { UniqueMmioPointer::new(regs) })
    }
}

/// Each CPU's redistributor frame (RD_base), found by [`init_this_cpu`]; only that CPU uses it.
static THIS_REDISTRIBUTOR: [AtomicU64; arch::boot::MAX_CPUS] = [const { AtomicU64::new(0) }; arch::boot::MAX_CPUS];

/// This CPU's redistributor, for the caller's accesses (the value is dropped before the caller
/// returns, so there is never more than one).
fn this_redistributor() -> Redistributor {
    let rd = THIS_REDISTRIBUTOR[arch::cpu_index()].load(Ordering::Relaxed);
    assert!(rd != 0, "this CPU's redistributor is initialised");
    // SAFETY: the frame `init_this_cpu` found for this CPU in the region its caller vouched for;
    // only this CPU uses it, and only through values made here, which every function of this
    // module drops before it returns (the hypervisor takes no interrupts at EL2, so no other
    // such value exists meanwhile).
    unsafe { Redistributor::new(rd) }
}

/// The redistributor frame (RD_base) in the region `gicr_base..gicr_base + gicr_size` whose
/// GICR_TYPER affinity is `affinity` (MPIDR layout, affinity fields only).
///
/// # Safety
/// The region must be the redistributors' (from the device tree), identity-mapped as device
/// memory.
unsafe fn find_redistributor(gicr_base: u64, gicr_size: u64, affinity: u64) -> Option<u64> {
    const FRAME_BYTES: u64 = size_of::<GicrSgi>() as u64;
    let mut frame = gicr_base;
    while frame < gicr_base + gicr_size {
        let typer = (frame as usize + offset_of!(Gicr, typer)) as *const GicrTyper;
        // SAFETY: GICR_TYPER of a frame inside the region (the caller's contract): aligned,
        // mapped, read-only and without side effects, so reading it cannot disturb the CPU that
        // owns that frame (which may be initialising it meanwhile; hence a plain volatile read
        // rather than a `Redistributor`, which claims the frame for itself).
        let typer = unsafe { read_volatile(typer) };
        if typer.core_mpidr() == affinity {
            return Some(frame);
        }
        if typer.last_redistributor() {
            return None;
        }
        frame += FRAME_BYTES;
    }
    None
}

/// Find this CPU's redistributor, wake it, enable the hypervisor's private interrupts, and
/// enable the CPU interface at EL2 (every CPU, once).
///
/// # Safety
/// `gicr_base` and `gicr_size` must describe the redistributor region from the device tree,
/// identity-mapped as device memory for the hypervisor's life; each CPU's redistributor is
/// accessed only by that CPU, through this module.
pub unsafe fn init_this_cpu(gicr_base: u64, gicr_size: u64) {
    let mpidr = MPIDR_EL1.get();
    // SAFETY: the caller's contract.
    let rd = unsafe { find_redistributor(gicr_base, gicr_size, mpidr & MPIDR_AFFINITY_MASK) };
    let rd = rd.unwrap_or_else(|| panic!("no redistributor for MPIDR {mpidr:#x}"));
    THIS_REDISTRIBUTOR[arch::cpu_index()].store(rd, Ordering::Relaxed);
    let mut redistributor = this_redistributor();

    let mut gicr = field!(redistributor.0, gicr);
    let mut waker = field!(gicr, waker);
    let mut awake = waker.read();
    awake.remove(Waker::PROCESSOR_SLEEP);
    waker.write(awake);
    while waker.read().contains(Waker::CHILDREN_ASLEEP) {}

    let mut sgi = field!(redistributor.0, sgi);
    field!(sgi, igroupr).get(0).expect("GICR_IGROUPR0").write(u32::MAX);
    let mut priorities = field!(sgi, ipriorityr);
    for intid in HYP_PRIVATE_INTIDS {
        priorities.get(intid as usize).expect("an SGI or PPI").write(HYP_IRQ_PRIORITY);
    }
    let enable = HYP_PRIVATE_INTIDS.iter().fold(0u32, |bits, intid| bits | 1 << intid);
    field!(sgi, isenabler).get(0).expect("GICR_ISENABLER0").write(enable);

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

/// The private interrupts the hypervisor takes, enabled on every CPU.
const HYP_PRIVATE_INTIDS: [u32; 6] =
    [SGI_KICK, PPI_MAINTENANCE, PPI_VIRTUAL_TIMER, PPI_PHYS_TIMER, PPI_PMU, PPI_HYP_TIMER];

/// Deactivate private interrupt `intid` (< 32) of this CPU through its redistributor
/// (GICR_ICACTIVER0): for a guest level interrupt (timer, PMU) the hypervisor took and left active when the
/// guest will not deactivate it (its virtual twin was withdrawn, or the vCPU was reset).
/// Defined also when the interrupt is not active.
pub fn deactivate_private(intid: u32) {
    let mut redistributor = this_redistributor();
    let mut sgi = field!(redistributor.0, sgi);
    field!(sgi, icactiver).get(0).expect("GICR_ICACTIVER0").write(1 << intid);
}

/// How an SPI's line signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Configure SPI `intid` as a group-1 interrupt with the hypervisor's priority and the given
/// trigger, route it to the CPU with affinity `target_mpidr`, and enable it.
pub fn enable_spi(intid: u32, trigger: Trigger, target_mpidr: u64) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
    let mut gicd = distributor();
    // The trigger may only change while the interrupt is disabled.
    field!(gicd.0, icenabler).get(word).expect("an SPI's GICD_ICENABLER").write(bit);
    gicd.wait_for_writes();
    let mut group = field!(gicd.0, igroupr);
    let mut group = group.get(word).expect("an SPI's GICD_IGROUPR");
    group.write(group.read() | bit);
    field!(gicd.0, ipriorityr).get(intid as usize).expect("an SPI's priority").write(HYP_IRQ_PRIORITY);
    let mut config = field!(gicd.0, icfgr);
    let mut config = config.get((intid / 16) as usize).expect("an SPI's GICD_ICFGR");
    let shift = (intid % 16) * 2;
    let edge = if trigger == Trigger::Edge { ICFGR_EDGE } else { 0 };
    config.write(config.read() & !(ICFGR_EDGE << shift) | edge << shift);
    // arm-gic's `irouter` starts at GICD_IROUTER<32>, the first SPI's.
    let route = (intid - SPI_INTIDS.start) as usize;
    field!(gicd.0, irouter).get(route).expect("an SPI's GICD_IROUTER").write(target_mpidr & MPIDR_AFFINITY_MASK);
    field!(gicd.0, icpendr).get(word).expect("an SPI's GICD_ICPENDR").write(bit);
    field!(gicd.0, isenabler).get(word).expect("an SPI's GICD_ISENABLER").write(bit);
}

/// Disable SPI `intid` and drop a pending edge.
pub fn disable_spi(intid: u32) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
    let mut gicd = distributor();
    field!(gicd.0, icenabler).get(word).expect("an SPI's GICD_ICENABLER").write(bit);
    gicd.wait_for_writes();
    field!(gicd.0, icpendr).get(word).expect("an SPI's GICD_ICPENDR").write(bit);
}

/// Enable or disable SPI `intid` at the distributor, keeping its configuration and pending
/// state (a level that is high, or an edge latched meanwhile, is signalled once enabled).
pub fn set_spi_enabled(intid: u32, enabled: bool) {
    assert!(SPI_INTIDS.contains(&intid), "INTID {intid} is not an SPI");
    let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
    let mut gicd = distributor();
    if enabled {
        field!(gicd.0, isenabler).get(word).expect("an SPI's GICD_ISENABLER").write(bit);
    } else {
        field!(gicd.0, icenabler).get(word).expect("an SPI's GICD_ICENABLER").write(bit);
    }
    gicd.wait_for_writes();
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
