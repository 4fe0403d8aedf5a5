//! The guest's console: an emulated PL011 (Arm DDI 0183) with an always-ready transmitter and
//! an empty receiver. Bytes the guest writes are collected into lines and printed on the host
//! console with the `[guest] ` prefix, control characters and non-UTF-8 bytes escaped
//! (`asyncpf_core::console`), so a guest cannot start a line of its own. No UART interrupt is raised: a guest must poll FR
//! (documented in docs/abi.md).

use asyncpf_contract::runner::GUEST_LINE_PREFIX;
use asyncpf_core::console::GuestText;

/// Size of the register page.
pub const UART_PAGE_BYTES: u64 = 0x1000;

const DR: u64 = 0x000;
const RSR_ECR: u64 = 0x004;
const FR: u64 = 0x018;
const ILPR: u64 = 0x020;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const DMACR: u64 = 0x048;
/// PeriphID0..3 and PCellID0..3: a PL011 r1p5.
const ID_REGS: [(u64, u32); 8] = [
    (0xfe0, 0x11),
    (0xfe4, 0x10),
    (0xfe8, 0x34),
    (0xfec, 0x00),
    (0xff0, 0x0d),
    (0xff4, 0xf0),
    (0xff8, 0x05),
    (0xffc, 0xb1),
];
/// FR bits: receive FIFO empty, transmit FIFO empty.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;
/// Longest line kept before it is printed anyway.
const LINE_BYTES: usize = 4096;

/// The emulated PL011's state.
pub struct VirtualUart {
    line: [u8; LINE_BYTES],
    len: usize,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
}

impl VirtualUart {
    pub const fn new() -> Self {
        Self { line: [0; LINE_BYTES], len: 0, ibrd: 0, fbrd: 0, lcr_h: 0, cr: 0x300, ifls: 0x12, imsc: 0, dmacr: 0 }
    }

    /// A guest read of the register at `offset`.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            FR => FR_TXFE | FR_RXFE,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            DMACR => self.dmacr,
            DR | RSR_ECR | ILPR | RIS | MIS => 0,
            _ => ID_REGS.iter().find(|(o, _)| *o == offset).map_or(0, |(_, v)| *v),
        }
    }

    /// A guest write of `value` to the register at `offset`.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            DR => self.put(value as u8),
            IBRD => self.ibrd = value & 0xffff,
            FBRD => self.fbrd = value & 0x3f,
            LCR_H => self.lcr_h = value & 0xff,
            CR => self.cr = value & 0xff87,
            IFLS => self.ifls = value & 0x3f,
            IMSC => self.imsc = value & 0x7ff,
            DMACR => self.dmacr = value & 0x7,
            _ => {} // RSR/ECR, ICR (no interrupts are ever raised) and read-only registers.
        }
    }

    fn put(&mut self, byte: u8) {
        match byte {
            b'\n' => self.flush(),
            b'\r' => {}
            _ => {
                self.line[self.len] = byte;
                self.len += 1;
                if self.len == LINE_BYTES {
                    self.flush();
                }
            }
        }
    }

    fn flush(&mut self) {
        let text = GuestText(&self.line[..self.len]);
        crate::console::print_line(GUEST_LINE_PREFIX, format_args!("{text}"));
        self.len = 0;
    }
}
