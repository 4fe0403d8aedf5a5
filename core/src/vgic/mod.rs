//! The emulated GICv3 (Arm IHI 0069 "GIC architecture specification, GICv3 and GICv4") as a
//! plain data model: the distributor ([`Distributor`]) and one redistributor per vCPU
//! ([`Redistributor`]). The hypervisor traps the guest's accesses to their pages, decodes them
//! and calls `read`/`write`; its list-register code takes the next deliverable interrupt with
//! [`take_next`] (or the per-part `take_deliverable*`).
//!
//! The emulated GIC, and its deviations from a hardware GICv3:
//! * **One Security state** (GICD_CTLR.DS reads 1), as the GIC a VM sees has: GICD_CTLR bit 0
//!   is EnableGrp0 and bit 1 EnableGrp1 (the bit a Non-secure driver knows as EnableGrp1NS /
//!   EnableGrp1A); IGRPMODR and NSACR are RAZ/WI.
//! * **Affinity routing is always on** (GICD_CTLR.ARE reads 1, writes ignored): the
//!   distributor's SGI/PPI registers (n = 0, ICFGR0/1), ITARGETSR, SGIR, CPENDSGIR and
//!   SPENDSGIR are RAZ/WI; SGIs and PPIs live in the redistributors.
//! * **Only Group 1 interrupts are delivered.** Group 0 state is kept, but a Group 0 interrupt
//!   would be a virtual FIQ, which the hypervisor does not support.
//! * No LPIs, no ITS, no extended SPI/PPI ranges, no message-based SPIs, no 1-of-N SPI routing
//!   (GICD_TYPER.No1N = 1); GICD_TYPER.A3V = 1 (Aff3 routing is supported).
//! * Priorities are kept with all 8 bits.
//! * **Active state:** once an interrupt has been taken into a list register, the list register
//!   owns its pending/active state; the model does not see the guest acknowledge or deactivate
//!   it. GICD/GICR_ISACTIVER therefore read only the active bits the guest itself set through
//!   ISACTIVER (and cleared through ICACTIVER), not the state held in list registers.
//! * GICR_WAKER reads as zero and ignores writes (KVM's choice): a redistributor is always
//!   awake, so a guest that never clears ProcessorSleep still gets its interrupts, as on KVM
//!   and on QEMU's own GIC. (The architecture lets a sleeping redistributor forward nothing.)
//!
//! Accesses are checked: a size other than 1, 2, 4 or 8 bytes or one a register does not
//! support is [`MmioError::BadSize`], a misaligned one [`MmioError::Unaligned`], one past the
//! frame [`MmioError::OutOfFrame`], and one to a reserved or unimplemented offset
//! [`MmioError::Reserved`]. The architecture makes reserved offsets RAZ/WI; what to do with
//! the others (also RAZ/WI, or an external abort) is the hypervisor's choice.
//! None of this ever panics.

mod bank;
mod distributor;
mod redistributor;
pub mod regs;

pub use distributor::Distributor;
pub use redistributor::Redistributor;

use core::fmt;

/// Size of the distributor's register page (GICD, IHI 0069 12.8): 64 KiB.
pub const GICD_SIZE: u64 = core::mem::size_of::<arm_gic::gicv3::registers::Gicd>() as u64;
/// Size of one redistributor: the RD_base frame and the SGI_base frame, 64 KiB each
/// (IHI 0069 12.10).
pub const GICR_FRAME_SIZE: u64 = core::mem::size_of::<arm_gic::gicv3::registers::GicrSgi>() as u64;

/// INTIDs 0..16 are SGIs.
pub const SGI_COUNT: u32 = 16;
/// INTIDs 0..32 are SGIs and PPIs, private to each PE.
pub const PRIVATE_COUNT: u32 = 32;
/// The first SPI.
pub const FIRST_SPI: u32 = 32;
/// INTIDs 1020..=1023 are special; the last SPI is 1019.
pub const LAST_SPI: u32 = 1019;
/// The most SPIs a GIC without extended SPIs has (INTIDs 32..=1019).
pub const MAX_SPIS: u32 = LAST_SPI + 1 - FIRST_SPI;

/// An interrupt ready to go into a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub intid: u32,
    /// The priority the guest programmed (lower value = higher priority).
    pub priority: u8,
}

/// A guest register access the model could not perform as a register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The offset is not a multiple of the access size.
    Unaligned,
    /// An access size the register does not support (or not 1, 2, 4 or 8).
    BadSize,
    /// The access reaches beyond the frame.
    OutOfFrame,
    /// A reserved or unimplemented register: architecturally RAZ/WI.
    Reserved,
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MmioError::Unaligned => "misaligned GIC register access",
            MmioError::BadSize => "GIC register access of a size the register does not support",
            MmioError::OutOfFrame => "GIC register access beyond its frame",
            MmioError::Reserved => "access to a reserved GIC register (RAZ/WI)",
        })
    }
}

/// An INTID that the called function does not handle (e.g. an SPI given to a redistributor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIntId(pub u32);

impl fmt::Display for BadIntId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INTID {} is not handled here", self.0)
    }
}

/// The access sizes a register supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// 32-bit registers.
    Word,
    /// Byte-accessible 32-bit registers (IPRIORITYR, ITARGETSR).
    ByteOrWord,
    /// 64-bit registers, also accessible as two 32-bit halves.
    DoubleOrWord,
}

impl Width {
    fn check(self, size: u8) -> Result<(), MmioError> {
        let ok = match self {
            Width::Word => size == 4,
            Width::ByteOrWord => size == 1 || size == 4,
            Width::DoubleOrWord => size == 4 || size == 8,
        };
        if ok {
            Ok(())
        } else {
            Err(MmioError::BadSize)
        }
    }
}

/// Checks the size, alignment and extent of an access to a frame of `frame_size` bytes.
fn check_access(offset: u64, size: u8, frame_size: u64) -> Result<(), MmioError> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(MmioError::BadSize);
    }
    if !offset.is_multiple_of(u64::from(size)) {
        return Err(MmioError::Unaligned);
    }
    if offset >= frame_size || frame_size - offset < u64::from(size) {
        return Err(MmioError::OutOfFrame);
    }
    Ok(())
}

/// The part of a 64-bit register an access of `size` bytes at `offset` (aligned) reads.
fn read_part(register: u64, offset: u64, size: u8) -> u64 {
    if size == 8 {
        register
    } else {
        (register >> (8 * (offset % 8))) & ((1u64 << (8 * u32::from(size))) - 1)
    }
}

/// A 64-bit register after an access of `size` bytes at `offset` wrote `value` to its part.
fn write_part(register: u64, offset: u64, size: u8, value: u64) -> u64 {
    if size == 8 {
        return value;
    }
    let shift = 8 * (offset % 8);
    let mask = ((1u64 << (8 * u32::from(size))) - 1) << shift;
    (register & !mask) | ((value << shift) & mask)
}

/// The next interrupt for the vCPU that `redist` belongs to: the highest-priority (lowest
/// value) deliverable SGI/PPI of `redist` or SPI routed to it, ties going to the lowest
/// INTID. Its pending bit is cleared: the caller puts it into a list register, which owns its
/// state from then on. Nothing is delivered while the distributor's Group 1 is disabled.
///
/// The model does not know which INTIDs are already in list registers: the caller must not
/// put the same INTID into two list registers (for an INTID it already holds, it can instead
/// make that list register pending).
pub fn take_next(dist: &mut Distributor, redist: &mut Redistributor) -> Option<Pending> {
    let next = peek_next(dist, redist)?;
    if next.intid < PRIVATE_COUNT {
        redist.take(next);
    } else {
        dist.take(next);
    }
    Some(next)
}

/// What [`take_next`] would return, without taking it.
pub fn peek_next(dist: &Distributor, redist: &Redistributor) -> Option<Pending> {
    let group1 = dist.group1_enabled();
    let private = redist.peek_deliverable(group1);
    let shared = dist.peek_deliverable_for(redist.affinity());
    match (private, shared) {
        (Some(p), Some(s)) => Some(if (s.priority, s.intid) < (p.priority, p.intid) { s } else { p }),
        (p, s) => p.or(s),
    }
}

/// The output of a generic timer whose control register (CNTV_CTL_EL0, CNTP_CTL_EL0) reads
/// `ctl`: ENABLE, ISTATUS and not IMASK. Its interrupt is level-sensitive: pending exactly
/// while this holds, as KVM emulates it (disabling, masking or re-arming the timer into the
/// future withdraws it).
pub const fn timer_output(ctl: u64) -> bool {
    const ENABLE: u64 = 1 << 0;
    const IMASK: u64 = 1 << 1;
    const ISTATUS: u64 = 1 << 2;
    ctl & (ENABLE | IMASK | ISTATUS) == ENABLE | ISTATUS
}

/// Whether [`take_next`] would return an interrupt.
pub fn has_next(dist: &Distributor, redist: &Redistributor) -> bool {
    peek_next(dist, redist).is_some()
}

#[cfg(test)]
mod tests;
