//! The emulated GICv3 distributor: GICD_* registers (IHI 0069 12.8 and 12.9) and the state of
//! the SPIs. See the [parent module](super) for the emulated GIC's properties.

use super::bank::{Bank, BankReg, BANK};
use super::regs::{ctlr, gicd, iidr, pidr2, typer};
use super::{
    check_access, read_part, write_part, BadIntId, MmioError, Pending, Width, FIRST_SPI, GICD_SIZE, LAST_SPI, MAX_SPIS,
};
use crate::mpidr;
use alloc::vec;
use alloc::vec::Vec;

/// The distributor of one VM.
#[derive(Clone, Debug)]
pub struct Distributor {
    /// The guest-writable GICD_CTLR bits (EnableGrp0, EnableGrp1).
    enables: u32,
    /// GICD_TYPER.CPUNumber.
    cpu_number: u32,
    /// Bank i holds INTIDs 32(i+1)..32(i+2).
    spis: Vec<Bank>,
    /// GICD_IROUTER of each INTID of `spis` (index INTID - 32): an affinity.
    routes: Vec<u64>,
}

impl Distributor {
    /// A distributor in its reset state with `num_spis` SPIs (INTIDs 32..32 + `num_spis`, at most
    /// [`MAX_SPIS`]) for a VM of `num_vcpus` vCPUs. GICD_TYPER.CPUNumber reports
    /// min(`num_vcpus`, 8) - 1 (only meaningful without affinity routing, which is always on).
    /// Every SPI starts routed to affinity 0.0.0.0.
    pub fn new(num_spis: u32, num_vcpus: usize) -> Self {
        let num_spis = num_spis.min(MAX_SPIS);
        let spis = (0..num_spis.div_ceil(BANK))
            .map(|i| {
                let implemented_here = (num_spis - BANK * i).min(BANK);
                let implemented = u32::MAX >> (BANK - implemented_here);
                // Every SPI's trigger mode is programmable; SPIs reset to level-sensitive.
                Bank::new(implemented, u32::MAX, 0)
            })
            .collect::<Vec<_>>();
        let cpus = u32::try_from(num_vcpus).unwrap_or(u32::MAX).clamp(1, typer::CPU_NUMBER_MAX + 1);
        Distributor { enables: 0, cpu_number: cpus - 1, routes: vec![0; spis.len() * BANK as usize], spis }
    }

    /// GICD_CTLR.EnableGrp1: whether Group 1 interrupts are forwarded at all.
    pub fn group1_enabled(&self) -> bool {
        self.enables & ctlr::ENABLE_GRP1 != 0
    }

    fn typer(&self) -> u32 {
        let it_lines = self.spis.len() as u32 & typer::IT_LINES_MASK;
        it_lines
            | self.cpu_number << typer::CPU_NUMBER_SHIFT
            | (typer::ID_BITS - 1) << typer::ID_BITS_SHIFT
            | typer::A3V
            | typer::NO1N
    }

    /// The bank of bitmap register block `n` (none for n = 0, the RAZ/WI SGI/PPI block).
    fn block(&self, n: u64) -> Option<&Bank> {
        let index = usize::try_from(n.checked_sub(1)?).ok()?;
        self.spis.get(index)
    }

    fn block_mut(&mut self, n: u64) -> Option<&mut Bank> {
        let index = usize::try_from(n.checked_sub(1)?).ok()?;
        self.spis.get_mut(index)
    }

    /// The index into `routes` of an implemented SPI.
    fn spi_index(&self, intid: u32) -> Option<usize> {
        let index = intid.checked_sub(FIRST_SPI)? as usize;
        let (block, bit) = (index / BANK as usize, index % BANK as usize);
        (self.spis.get(block)?.implemented() & (1 << bit) != 0).then_some(index)
    }

    /// Handles a guest read of `size` bytes at `offset` in the distributor page.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        check_access(offset, size, GICD_SIZE)?;
        if let Some(reg) = BankReg::decode(offset) {
            return self.read_bank(reg, size);
        }
        let word = offset & !3;
        let value = match word {
            gicd::CTLR => self.enables | ctlr::ARE | ctlr::DS,
            gicd::TYPER => self.typer(),
            gicd::IIDR => iidr::PRODUCT_ID_ASYNCPF << iidr::PRODUCT_ID_SHIFT | iidr::IMPLEMENTER_ARM,
            gicd::TYPER2 => 0,
            gicd::PIDR2 => pidr2::ARCH_REV_GICV3 << pidr2::ARCH_REV_SHIFT,
            gicd::ITARGETSR..gicd::ITARGETSR_END | gicd::CPENDSGIR..gicd::SPENDSGIR_END => {
                Width::ByteOrWord.check(size)?;
                return Ok(0);
            }
            gicd::IGRPMODR..gicd::IGRPMODR_END | gicd::NSACR..gicd::NSACR_END | gicd::SGIR => 0,
            gicd::IROUTER..gicd::IROUTER_END => {
                let route = self.route_register(offset)?;
                Width::DoubleOrWord.check(size)?;
                return Ok(route.map_or(0, |index| read_part(self.routes[index], offset, size)));
            }
            _ => return Err(MmioError::Reserved),
        };
        Width::Word.check(size)?;
        Ok(u64::from(value))
    }

    /// Handles a guest write of the low `size` bytes of `value` at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        check_access(offset, size, GICD_SIZE)?;
        if let Some(reg) = BankReg::decode(offset) {
            return self.write_bank(reg, size, value as u32);
        }
        let word = offset & !3;
        match word {
            gicd::CTLR => {
                Width::Word.check(size)?;
                self.enables = value as u32 & (ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1);
            }
            // Read-only, RAZ/WI, or WI because affinity routing is on.
            gicd::TYPER
            | gicd::IIDR
            | gicd::TYPER2
            | gicd::PIDR2
            | gicd::IGRPMODR..gicd::IGRPMODR_END
            | gicd::NSACR..gicd::NSACR_END
            | gicd::SGIR => Width::Word.check(size)?,
            gicd::ITARGETSR..gicd::ITARGETSR_END | gicd::CPENDSGIR..gicd::SPENDSGIR_END => {
                Width::ByteOrWord.check(size)?
            }
            gicd::IROUTER..gicd::IROUTER_END => {
                let route = self.route_register(offset)?;
                Width::DoubleOrWord.check(size)?;
                if let Some(index) = route {
                    // IRM is RAZ/WI (No1N), reserved bits RES0: keep the affinity fields.
                    let written = write_part(self.routes[index], offset, size, value);
                    self.routes[index] = mpidr::affinity(written);
                }
            }
            _ => return Err(MmioError::Reserved),
        }
        Ok(())
    }

    /// The `routes` index of the GICD_IROUTER<n> at `offset`: `Ok(None)` for an unimplemented
    /// SPI (RAZ/WI), `Reserved` for n < 32 or n > 1019.
    fn route_register(&self, offset: u64) -> Result<Option<usize>, MmioError> {
        let intid = (offset - gicd::IROUTER) / 8;
        if intid < u64::from(FIRST_SPI) || intid > u64::from(LAST_SPI) {
            return Err(MmioError::Reserved);
        }
        Ok(self.spi_index(intid as u32))
    }

    fn read_bank(&self, reg: BankReg, size: u8) -> Result<u64, MmioError> {
        let value = match reg {
            BankReg::Bitmap(kind, n) => {
                Width::Word.check(size)?;
                self.block(n).map_or(0, |bank| bank.read_bitmap(kind))
            }
            BankReg::Priority { intid } => {
                Width::ByteOrWord.check(size)?;
                let first = (intid % u64::from(BANK)) as usize;
                self.block(intid / u64::from(BANK)).map_or(0, |bank| bank.read_priorities(first, size.into()))
            }
            BankReg::Config(n) => {
                Width::Word.check(size)?;
                self.block(n / 2).map_or(0, |bank| bank.read_config(n % 2 == 1))
            }
        };
        Ok(u64::from(value))
    }

    fn write_bank(&mut self, reg: BankReg, size: u8, value: u32) -> Result<(), MmioError> {
        match reg {
            BankReg::Bitmap(kind, n) => {
                Width::Word.check(size)?;
                if let Some(bank) = self.block_mut(n) {
                    bank.write_bitmap(kind, value);
                }
            }
            BankReg::Priority { intid } => {
                Width::ByteOrWord.check(size)?;
                if let Some(bank) = self.block_mut(intid / u64::from(BANK)) {
                    bank.write_priorities((intid % u64::from(BANK)) as usize, size.into(), value);
                }
            }
            BankReg::Config(n) => {
                Width::Word.check(size)?;
                if let Some(bank) = self.block_mut(n / 2) {
                    bank.write_config(n % 2 == 1, value);
                }
            }
        }
        Ok(())
    }

    /// Makes an SPI pending (a device asserted it).
    pub fn set_pending(&mut self, intid: u32) -> Result<(), BadIntId> {
        let index = self.spi_index(intid).ok_or(BadIntId(intid))?;
        self.spis[index / BANK as usize].set_pending(index % BANK as usize);
        Ok(())
    }

    /// Clears an SPI's pending state.
    pub fn clear_pending(&mut self, intid: u32) -> Result<(), BadIntId> {
        let index = self.spi_index(intid).ok_or(BadIntId(intid))?;
        self.spis[index / BANK as usize].clear_pending(index % BANK as usize);
        Ok(())
    }

    /// The affinity (MPIDR layout) an SPI is routed to: the vCPU to kick when it becomes
    /// pending. `None` for an INTID that is not an implemented SPI.
    pub fn route(&self, intid: u32) -> Option<u64> {
        self.spi_index(intid).map(|index| self.routes[index])
    }

    /// The highest-priority deliverable SPI routed to the PE with MPIDR `mpidr` (only its
    /// affinity fields count), without taking it. Does not look at that PE's GICR_WAKER:
    /// [`super::peek_next`] does.
    pub fn peek_deliverable_for(&self, mpidr: u64) -> Option<Pending> {
        if !self.group1_enabled() {
            return None;
        }
        let affinity = mpidr::affinity(mpidr);
        let mut best: Option<Pending> = None;
        let blocks = self.spis.iter().zip(self.routes.chunks(BANK as usize));
        for (i, (bank, routes)) in blocks.enumerate() {
            // Every vCPU looks here at every guest entry: skip the routes of banks with
            // nothing deliverable (almost always all of them).
            let mut deliverable = bank.deliverable();
            let mut routed_here = 0u32;
            while deliverable != 0 {
                let bit = deliverable.trailing_zeros();
                deliverable &= deliverable - 1;
                if routes.get(bit as usize) == Some(&affinity) {
                    routed_here |= 1 << bit;
                }
            }
            let base = FIRST_SPI + BANK * i as u32;
            if let Some(candidate) = bank.best(routed_here, base) {
                if best.is_none_or(|b| candidate.priority < b.priority) {
                    best = Some(candidate);
                }
            }
        }
        best
    }

    /// Whether [`Distributor::take_deliverable_for`] would return an SPI.
    pub fn has_deliverable_for(&self, mpidr: u64) -> bool {
        self.peek_deliverable_for(mpidr).is_some()
    }

    /// Takes the highest-priority deliverable SPI routed to the PE with MPIDR `mpidr`: clears
    /// its pending bit, as it moves into a list register. Prefer [`super::take_next`], which
    /// also weighs that PE's SGIs/PPIs and its GICR_WAKER.
    pub fn take_deliverable_for(&mut self, mpidr: u64) -> Option<Pending> {
        let next = self.peek_deliverable_for(mpidr)?;
        self.take(next);
        Some(next)
    }

    /// Clears the pending bit of an SPI found deliverable.
    pub(super) fn take(&mut self, taken: Pending) {
        // An SPI returned by peek_deliverable_for is implemented, so this cannot fail.
        let _ = self.clear_pending(taken.intid);
    }
}
