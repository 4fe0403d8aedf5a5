//! TEMPORARY stand-in for asyncpf_core::vgic while it is written (not to be committed).
pub struct Pending { pub intid: u32, pub priority: u8 }
pub struct Distributor { ctlr: u32 }
pub struct Redistributor { aff: u64, num: u16, last: bool, pending: u32, enabled: u32, prio: [u8; 32], waker: u32 }
impl Distributor {
    pub fn new(_s: u32, _n: usize) -> Self { Self { ctlr: 0 } }
    pub fn group1_enabled(&self) -> bool { self.ctlr & 2 != 0 }
    pub fn read(&self, off: u64, _size: u8) -> Result<u64, ()> { Ok(match off { 0 => (self.ctlr | 0x10) as u64, 4 => 0x1f | (9<<19), 0xffe8 => 0x30, _ => 0 }) }
    pub fn write(&mut self, off: u64, _size: u8, v: u64) -> Result<(), ()> { if off == 0 { self.ctlr = v as u32 & 3; } Ok(()) }
    pub fn take_deliverable_for(&mut self, _a: u64) -> Option<Pending> { None }
    pub fn has_deliverable_for(&self, _a: u64) -> bool { false }
}
impl Redistributor {
    pub fn new(aff: u64, num: u16, last: bool) -> Self { Self { aff, num, last, pending: 0, enabled: 0, prio: [0; 32], waker: 6 } }
    pub fn set_pending(&mut self, i: u32) { self.pending |= 1 << i; }
    pub fn take_deliverable(&mut self, g1: bool) -> Option<Pending> {
        if !g1 { return None; }
        let d = self.pending & self.enabled; if d == 0 { return None; }
        let i = d.trailing_zeros(); self.pending &= !(1 << i); Some(Pending { intid: i, priority: self.prio[i as usize] })
    }
    pub fn has_deliverable(&self, g1: bool) -> bool { g1 && self.pending & self.enabled != 0 }
    pub fn read(&self, off: u64, _size: u8) -> Result<u64, ()> {
        Ok(match off { 0x8 => (self.aff << 32) | ((self.num as u64) << 8) | if self.last { 1 << 4 } else { 0 }, 0x14 => self.waker as u64, 0xffe8 => 0x30,
            0x10100 => self.enabled as u64, 0x10080 => 0xffffffff, o if (0x10400..0x10420).contains(&o) => { let b = (o - 0x10400) as usize; u32::from_le_bytes([self.prio[b], self.prio[b+1], self.prio[b+2], self.prio[b+3]]) as u64 } _ => 0 })
    }
    pub fn write(&mut self, off: u64, size: u8, v: u64) -> Result<(), ()> {
        match off { 0x14 => { self.waker = if v & 2 != 0 { 6 } else { 0 }; } 0x10100 => self.enabled |= v as u32, 0x10180 => self.enabled &= !(v as u32),
            o if (0x10400..0x10420).contains(&o) => { let b = (o - 0x10400) as usize; for k in 0..size as usize { self.prio[b + k] = (v >> (8 * k)) as u8; } } _ => {} }
        Ok(())
    }
}
