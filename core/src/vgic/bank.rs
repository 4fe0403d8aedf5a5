//! The state of 32 consecutive INTIDs and the banked interrupt registers over it: the layout
//! that `GICD_IGROUPR<n>`..`GICD_ICFGR<n>` (IHI 0069 12.9) and GICR_IGROUPR0..GICR_ICFGR1
//! (IHI 0069 12.11) share. A register block n covers INTIDs 32n..32n+31.

use super::regs::{gicd, icfgr};
use super::Pending;

/// One bitmap register kind: a bit per interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bitmap {
    /// IGROUPR: 1 = Group 1. Read/write.
    Group,
    /// ISENABLER / ICENABLER: reads give the enable bits, writes of 1 set / clear them.
    SetEnable,
    ClearEnable,
    /// ISPENDR / ICPENDR.
    SetPending,
    ClearPending,
    /// ISACTIVER / ICACTIVER.
    SetActive,
    ClearActive,
}

/// A decoded access to the banked interrupt register space (offsets 0x080..0xd00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BankReg {
    /// A bitmap register for register block `n` (INTIDs 32n..32n+31).
    Bitmap(Bitmap, u64),
    /// IPRIORITYR byte for `intid` (the access may cover more bytes).
    Priority { intid: u64 },
    /// `ICFGR<n>`: 16 interrupts, INTIDs 16n..16n+15.
    Config(u64),
}

impl BankReg {
    /// Decodes an offset of the distributor page or of the SGI_base frame.
    pub(super) fn decode(offset: u64) -> Option<BankReg> {
        const BITMAPS: [(u64, Bitmap); 7] = [
            (gicd::IGROUPR, Bitmap::Group),
            (gicd::ISENABLER, Bitmap::SetEnable),
            (gicd::ICENABLER, Bitmap::ClearEnable),
            (gicd::ISPENDR, Bitmap::SetPending),
            (gicd::ICPENDR, Bitmap::ClearPending),
            (gicd::ISACTIVER, Bitmap::SetActive),
            (gicd::ICACTIVER, Bitmap::ClearActive),
        ];
        for (base, kind) in BITMAPS {
            if (base..base + gicd::BITMAP_BLOCK).contains(&offset) {
                return Some(BankReg::Bitmap(kind, (offset - base) / 4));
            }
        }
        if (gicd::IPRIORITYR..gicd::IPRIORITYR_END).contains(&offset) {
            return Some(BankReg::Priority { intid: offset - gicd::IPRIORITYR });
        }
        if (gicd::ICFGR..gicd::ICFGR_END).contains(&offset) {
            return Some(BankReg::Config((offset - gicd::ICFGR) / 4));
        }
        None
    }
}

/// INTIDs per bank (and bits per bitmap register).
pub(super) const BANK: u32 = 32;
/// The bank bits one ICFGR register covers.
const ICFGR_LOWER_HALF: u32 = (1 << icfgr::PER_REGISTER) - 1;

/// The state of 32 interrupts.
#[derive(Clone, Debug)]
pub(super) struct Bank {
    /// Which of the 32 INTIDs exist; the others are RAZ/WI.
    implemented: u32,
    /// Which interrupts' trigger mode the guest may change.
    config_writable: u32,
    group1: u32,
    enabled: u32,
    pending: u32,
    active: u32,
    edge: u32,
    priority: [u8; BANK as usize],
}

impl Bank {
    /// A bank in its reset state: everything Group 0, disabled, inactive, not pending,
    /// priority 0, level-sensitive except the `edge` ones.
    pub(super) fn new(implemented: u32, config_writable: u32, edge: u32) -> Self {
        Bank {
            implemented,
            config_writable: config_writable & implemented,
            group1: 0,
            enabled: 0,
            pending: 0,
            active: 0,
            edge: edge & implemented,
            priority: [0; BANK as usize],
        }
    }

    pub(super) fn read_bitmap(&self, kind: Bitmap) -> u32 {
        match kind {
            Bitmap::Group => self.group1,
            Bitmap::SetEnable | Bitmap::ClearEnable => self.enabled,
            Bitmap::SetPending | Bitmap::ClearPending => self.pending,
            Bitmap::SetActive | Bitmap::ClearActive => self.active,
        }
    }

    pub(super) fn write_bitmap(&mut self, kind: Bitmap, value: u32) {
        let bits = value & self.implemented;
        match kind {
            Bitmap::Group => self.group1 = bits,
            Bitmap::SetEnable => self.enabled |= bits,
            Bitmap::ClearEnable => self.enabled &= !bits,
            Bitmap::SetPending => self.pending |= bits,
            Bitmap::ClearPending => self.pending &= !bits,
            Bitmap::SetActive => self.active |= bits,
            Bitmap::ClearActive => self.active &= !bits,
        }
    }

    /// `bytes` priority bytes starting at bit `first` of this bank, packed little-endian.
    pub(super) fn read_priorities(&self, first: usize, bytes: usize) -> u32 {
        (0..bytes).fold(0, |acc, i| {
            let bit = first + i;
            let byte = if self.is_implemented(bit) { self.priority[bit] } else { 0 };
            acc | u32::from(byte) << (8 * i)
        })
    }

    pub(super) fn write_priorities(&mut self, first: usize, bytes: usize, value: u32) {
        for i in 0..bytes {
            let bit = first + i;
            if self.is_implemented(bit) {
                self.priority[bit] = (value >> (8 * i)) as u8;
            }
        }
    }

    /// ICFGR for the lower (`upper == false`) or upper 16 interrupts of the bank.
    pub(super) fn read_config(&self, upper: bool) -> u32 {
        let edge = if upper { self.edge >> icfgr::PER_REGISTER } else { self.edge & 0xffff };
        spread_to_odd_bits(edge)
    }

    pub(super) fn write_config(&mut self, upper: bool, value: u32) {
        let shift = if upper { icfgr::PER_REGISTER } else { 0 };
        let edge = gather_odd_bits(value) << shift;
        let writable = self.config_writable & (ICFGR_LOWER_HALF << shift);
        self.edge = (self.edge & !writable) | (edge & writable);
    }

    /// Which of the 32 INTIDs exist.
    pub(super) fn implemented(&self) -> u32 {
        self.implemented
    }

    fn is_implemented(&self, bit: usize) -> bool {
        bit < BANK as usize && self.implemented & (1 << bit) != 0
    }

    pub(super) fn set_pending(&mut self, bit: usize) {
        self.pending |= (1 << bit) & self.implemented;
    }

    pub(super) fn clear_pending(&mut self, bit: usize) {
        self.pending &= !(1 << bit);
    }

    pub(super) fn is_pending(&self, bit: usize) -> bool {
        bit < BANK as usize && self.pending & (1 << bit) != 0
    }

    /// Interrupts that may be forwarded: pending, enabled, Group 1, not active.
    pub(super) fn deliverable(&self) -> u32 {
        self.pending & self.enabled & self.group1 & !self.active
    }

    /// The deliverable interrupt with the lowest priority value (highest priority) among the
    /// bits in `candidates`, ties broken by the lowest INTID; `base` is the bank's first INTID.
    pub(super) fn best(&self, candidates: u32, base: u32) -> Option<Pending> {
        let mut bits = self.deliverable() & candidates;
        let mut best: Option<Pending> = None;
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            let priority = self.priority[bit as usize];
            if best.is_none_or(|b| priority < b.priority) {
                best = Some(Pending { intid: base + bit, priority });
            }
        }
        best
    }
}

/// Bit i of `bits` (i < 16) to bit 2i+1.
fn spread_to_odd_bits(bits: u32) -> u32 {
    (0..icfgr::PER_REGISTER).filter(|i| bits & (1 << i) != 0).fold(0, |acc, i| acc | 1 << (2 * i + 1))
}

/// Bit 2i+1 of `value` to bit i.
fn gather_odd_bits(value: u32) -> u32 {
    let odd = value & icfgr::EDGE_BITS;
    (0..icfgr::PER_REGISTER).filter(|i| odd & (1 << (2 * i + 1)) != 0).fold(0, |acc, i| acc | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_offsets() {
        assert_eq!(BankReg::decode(0x0080), Some(BankReg::Bitmap(Bitmap::Group, 0)));
        assert_eq!(BankReg::decode(0x00fc), Some(BankReg::Bitmap(Bitmap::Group, 31)));
        assert_eq!(BankReg::decode(0x0104), Some(BankReg::Bitmap(Bitmap::SetEnable, 1)));
        assert_eq!(BankReg::decode(0x0180), Some(BankReg::Bitmap(Bitmap::ClearEnable, 0)));
        assert_eq!(BankReg::decode(0x0208), Some(BankReg::Bitmap(Bitmap::SetPending, 2)));
        assert_eq!(BankReg::decode(0x0280), Some(BankReg::Bitmap(Bitmap::ClearPending, 0)));
        assert_eq!(BankReg::decode(0x0300), Some(BankReg::Bitmap(Bitmap::SetActive, 0)));
        assert_eq!(BankReg::decode(0x03fc), Some(BankReg::Bitmap(Bitmap::ClearActive, 31)));
        assert_eq!(BankReg::decode(0x0421), Some(BankReg::Priority { intid: 0x21 }));
        assert_eq!(BankReg::decode(0x0c04), Some(BankReg::Config(1)));
        assert_eq!(BankReg::decode(0x0000), None);
        assert_eq!(BankReg::decode(0x0800), None);
        assert_eq!(BankReg::decode(0x0d00), None);
    }

    #[test]
    fn config_bits() {
        assert_eq!(spread_to_odd_bits(0xffff), icfgr::EDGE_BITS);
        assert_eq!(spread_to_odd_bits(0b101), 0b10_00_10);
        assert_eq!(gather_odd_bits(0xffff_ffff), 0xffff);
        assert_eq!(gather_odd_bits(0b01_10_01), 0b010);
    }

    #[test]
    fn best_prefers_low_priority_value_then_low_intid() {
        let mut bank = Bank::new(u32::MAX, 0, 0);
        bank.write_bitmap(Bitmap::Group, u32::MAX);
        bank.write_bitmap(Bitmap::SetEnable, u32::MAX);
        bank.write_priorities(0, 4, 0x40_20_20_80);
        bank.write_bitmap(Bitmap::SetPending, 0b1111);
        assert_eq!(bank.best(u32::MAX, 32), Some(Pending { intid: 33, priority: 0x20 }));
        assert_eq!(bank.best(0b1001, 32), Some(Pending { intid: 35, priority: 0x40 }));
        assert_eq!(bank.best(0, 32), None);
    }
}
