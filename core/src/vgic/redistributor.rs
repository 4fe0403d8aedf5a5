//! One emulated GICv3 redistributor: the RD_base frame (GICR_CTLR, IIDR, TYPER, WAKER, PIDR2;
//! IHI 0069 12.10, 12.11) and the SGI_base frame with the SGI/PPI state of its vCPU.
//! See the [parent module](super) for the emulated GIC's properties.

use super::bank::{Bank, BankReg};
use super::regs::{gicd, gicr, gicr_typer, iidr, pidr2};
use super::{check_access, read_part, BadIntId, MmioError, Pending, Width, GICR_FRAME_SIZE, PRIVATE_COUNT, SGI_COUNT};
use crate::mpidr;

/// SGIs are always edge-triggered (GICR_ICFGR0 is read-only).
const SGI_MASK: u32 = (1 << SGI_COUNT) - 1;
/// PPIs: INTIDs 16..32, whose trigger mode the guest may program.
const PPI_MASK: u32 = !SGI_MASK;

/// The redistributor of one vCPU.
#[derive(Clone, Debug)]
pub struct Redistributor {
    /// The vCPU's affinity (MPIDR layout).
    affinity: u64,
    processor_number: u16,
    last: bool,
    /// SGIs and PPIs, INTIDs 0..32.
    bank: Bank,
}

impl Redistributor {
    /// The redistributor of the vCPU with MPIDR `mpidr_affinity` (only the affinity fields
    /// count), reported in GICR_TYPER with `processor_number` and, for the last frame of the
    /// region, `last`. It is always awake: GICR_WAKER reads as zero and ignores writes, as
    /// KVM emulates it, so a guest that never wakes its redistributor gets interrupts too.
    pub fn new(mpidr_affinity: u64, processor_number: u16, last: bool) -> Self {
        Redistributor {
            affinity: mpidr::affinity(mpidr_affinity),
            processor_number,
            last,
            bank: Bank::new(u32::MAX, PPI_MASK, SGI_MASK),
        }
    }

    /// The vCPU's affinity (MPIDR layout).
    pub fn affinity(&self) -> u64 {
        self.affinity
    }

    fn typer(&self) -> u64 {
        let mut value = u64::from(mpidr::packed32(self.affinity)) << gicr_typer::AFFINITY_SHIFT
            | u64::from(self.processor_number) << gicr_typer::PROCESSOR_NUMBER_SHIFT;
        if self.last {
            value |= gicr_typer::LAST;
        }
        value
    }

    /// Handles a guest read of `size` bytes at `offset` in the 128 KiB redistributor.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        check_access(offset, size, GICR_FRAME_SIZE)?;
        if offset >= gicr::SGI_BASE {
            return self.read_sgi_frame(offset - gicr::SGI_BASE, size);
        }
        if offset & !7 == gicr::TYPER {
            Width::DoubleOrWord.check(size)?;
            return Ok(read_part(self.typer(), offset, size));
        }
        let value = match offset & !3 {
            // EnableLPIs is RAZ/WI (no LPIs); RWP and UWP are 0: writes take effect at once.
            gicr::CTLR => 0,
            gicr::IIDR => iidr::PRODUCT_ID_ASYNCPF << iidr::PRODUCT_ID_SHIFT | iidr::IMPLEMENTER_ARM,
            gicr::WAKER => 0, // always awake (KVM: RAZ/WI)
            gicr::PIDR2 => pidr2::ARCH_REV_GICV3 << pidr2::ARCH_REV_SHIFT,
            _ => return Err(MmioError::Reserved),
        };
        Width::Word.check(size)?;
        Ok(u64::from(value))
    }

    /// Handles a guest write of the low `size` bytes of `value` at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        check_access(offset, size, GICR_FRAME_SIZE)?;
        if offset >= gicr::SGI_BASE {
            return self.write_sgi_frame(offset - gicr::SGI_BASE, size, value as u32);
        }
        if offset & !7 == gicr::TYPER {
            // Read-only.
            return Width::DoubleOrWord.check(size);
        }
        match offset & !3 {
            // GICR_WAKER ignores writes: the redistributor never sleeps (KVM: RAZ/WI).
            gicr::WAKER | gicr::CTLR | gicr::IIDR | gicr::PIDR2 => Width::Word.check(size),
            _ => Err(MmioError::Reserved),
        }
    }

    /// Reads the SGI_base frame, whose bank registers exist for register block n = 0 only.
    fn read_sgi_frame(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let value = match BankReg::decode(offset) {
            Some(BankReg::Bitmap(kind, 0)) => {
                Width::Word.check(size)?;
                self.bank.read_bitmap(kind)
            }
            Some(BankReg::Priority { intid }) if intid < u64::from(PRIVATE_COUNT) => {
                Width::ByteOrWord.check(size)?;
                self.bank.read_priorities(intid as usize, size.into())
            }
            // ICFGR0: SGIs, fixed edge-triggered; ICFGR1: PPIs.
            Some(BankReg::Config(n @ (0 | 1))) => {
                Width::Word.check(size)?;
                self.bank.read_config(n == 1)
            }
            None if is_raz_wi(offset) => {
                Width::Word.check(size)?;
                0
            }
            _ => return Err(MmioError::Reserved),
        };
        Ok(u64::from(value))
    }

    fn write_sgi_frame(&mut self, offset: u64, size: u8, value: u32) -> Result<(), MmioError> {
        match BankReg::decode(offset) {
            Some(BankReg::Bitmap(kind, 0)) => {
                Width::Word.check(size)?;
                self.bank.write_bitmap(kind, value);
            }
            Some(BankReg::Priority { intid }) if intid < u64::from(PRIVATE_COUNT) => {
                Width::ByteOrWord.check(size)?;
                self.bank.write_priorities(intid as usize, size.into(), value);
            }
            Some(BankReg::Config(n @ (0 | 1))) => {
                Width::Word.check(size)?;
                // The bank lets only PPI bits change: ICFGR0 is read-only.
                self.bank.write_config(n == 1, value);
            }
            None if is_raz_wi(offset) => Width::Word.check(size)?,
            _ => return Err(MmioError::Reserved),
        }
        Ok(())
    }

    /// Makes an SGI or PPI (`intid` < 32) pending.
    pub fn set_pending(&mut self, intid: u32) -> Result<(), BadIntId> {
        if intid >= PRIVATE_COUNT {
            return Err(BadIntId(intid));
        }
        self.bank.set_pending(intid as usize);
        Ok(())
    }

    /// Whether an SGI or PPI is pending here (not yet taken into a list register).
    pub fn is_pending(&self, intid: u32) -> bool {
        self.bank.is_pending(intid as usize)
    }

    /// Clears an SGI's or PPI's pending state.
    pub fn clear_pending(&mut self, intid: u32) -> Result<(), BadIntId> {
        if intid >= PRIVATE_COUNT {
            return Err(BadIntId(intid));
        }
        self.bank.clear_pending(intid as usize);
        Ok(())
    }

    /// The highest-priority (lowest value) SGI/PPI that is pending, enabled, Group 1 and not
    /// active, ties to the lowest INTID, without taking it. `None` while this redistributor is
    /// asleep (GICR_WAKER) or when `dist_group1_enabled` (GICD_CTLR.EnableGrp1) is false.
    pub fn peek_deliverable(&self, dist_group1_enabled: bool) -> Option<Pending> {
        if !dist_group1_enabled {
            return None;
        }
        self.bank.best(u32::MAX, 0)
    }

    /// Whether [`Redistributor::take_deliverable`] would return an interrupt.
    pub fn has_deliverable(&self, dist_group1_enabled: bool) -> bool {
        self.peek_deliverable(dist_group1_enabled).is_some()
    }

    /// Takes the interrupt [`Redistributor::peek_deliverable`] names: clears its pending bit,
    /// as it moves into a list register. [`super::take_next`] also weighs SPIs.
    pub fn take_deliverable(&mut self, dist_group1_enabled: bool) -> Option<Pending> {
        let next = self.peek_deliverable(dist_group1_enabled)?;
        self.take(next);
        Some(next)
    }

    /// Clears the pending bit of an SGI/PPI found deliverable.
    pub(super) fn take(&mut self, taken: Pending) {
        self.bank.clear_pending(taken.intid as usize);
    }
}

/// GICR_IGRPMODR0 and GICR_NSACR: RAZ/WI with a single Security state.
fn is_raz_wi(offset_in_sgi_frame: u64) -> bool {
    let word = offset_in_sgi_frame & !3;
    word == gicd::IGRPMODR || word == gicd::NSACR
}
