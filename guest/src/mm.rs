//! Stage-1 translation: an identity map built from the device tree.
//!
//! - RAM (memory node): normal write-back memory, 2 MiB blocks, except RAM edges that do not
//!   fill a 2 MiB block and the blocks that hold the kernel image, which use 4 KiB pages so
//!   that permissions follow the image layout:
//!   text is read-only and executable at EL1 and EL0 (EL0 tasks are functions in the image),
//!   rodata is read-only for both, kernel data is EL1-only, and the `.user_rw` pages (EL0
//!   stacks and counters) are read-write for EL0 (and therefore never executable).
//! - Device window: every 1 GiB region holding a described device (not RAM) is mapped as
//!   Device-nGnRnE, so that accesses to undescribed holes in it reach the platform and fault
//!   there rather than in translation. A device in a gigabyte that also holds RAM gets 2 MiB
//!   device blocks instead.
//!
//! 39-bit virtual addresses, 4 KiB granule, translation starts at level 1 (1 GiB entries).

use crate::arch;
use crate::dt::{Platform, Range};
use asyncpf_guest::memcheck::{self, Span};
use core::arch::asm;
use core::cell::UnsafeCell;

const PAGE: u64 = 4096;
const L2_BLOCK: u64 = 2 << 20;
const L1_BLOCK: u64 = 1 << 30;
const ENTRIES: usize = 512;
/// Virtual (= physical) address space covered: 2^39 bytes.
const VA_BITS: u64 = 39;
/// Level-1, one level-2 per gigabyte of RAM, level-3 for the image and for RAM edges.
const TABLE_POOL: usize = 24;

// Descriptor bits.
const VALID: u64 = 1 << 0;
const TABLE: u64 = 1 << 1; // also "page" at level 3
const ATTR_DEVICE: u64 = 0 << 2; // MAIR index 0
const ATTR_NORMAL: u64 = 1 << 2; // MAIR index 1
const AP_EL0: u64 = 1 << 6; // EL0 may access
const AP_RO: u64 = 1 << 7; // read-only
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// MAIR_EL1: index 0 = Device-nGnRnE, index 1 = Normal, inner/outer write-back RW-allocate.
const MAIR: u64 = 0xFF << 8; // attribute 0: 0x00
/// SCTLR_EL1: M, C, SA, I, nTWI, nTWE plus the RES1 bits of ARMv8.0 (11, 20, 22, 23, 28, 29).
const SCTLR: u64 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12) | (1 << 16) | (1 << 18) | 0x30D0_0800;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

struct TablePool(UnsafeCell<[Table; TABLE_POOL]>);
// SAFETY: the pool is written only by the boot CPU before any other CPU starts; afterwards only
// the hardware table walker reads it.
unsafe impl Sync for TablePool {}

/// Level-1 table first, then the level-2 and level-3 tables handed out in order.
static TABLES: TablePool = TablePool(UnsafeCell::new([const { Table([0; ENTRIES]) }; TABLE_POOL]));

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __user_rw_start: u8;
    static __user_rw_end: u8;
    static __image_end: u8;
}

/// Addresses of the image's parts, from the linker script.
#[derive(Clone, Copy)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub user_rw_start: u64,
    pub user_rw_end: u64,
    pub end: u64,
}

/// The image layout (addresses of linker symbols; no memory is read).
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        user_rw_start: core::ptr::addr_of!(__user_rw_start) as u64,
        user_rw_end: core::ptr::addr_of!(__user_rw_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    }
}

/// True when EL0 may read `[addr, addr + len)`: image text/rodata or the EL0 read-write pages.
pub fn user_readable(addr: u64, len: u64) -> bool {
    let image = image_layout();
    let Some(end) = addr.checked_add(len) else { return false };
    (addr >= image.start && end <= image.rodata_end) || (addr >= image.user_rw_start && end <= image.user_rw_end)
}

/// The largest page-aligned stretch of RAM that the kernel does not use: RAM minus the image
/// (text, data and bss, which hold every stack and the page tables) and the device tree (which
/// the command line still points into). It is mapped like all RAM that is not image: normal
/// write-back, EL1 read-write, never executable.
pub fn free_ram(platform: &Platform) -> Option<Span> {
    let image = image_layout();
    let span = |r: &Range| Span { start: r.base, end: r.end() };
    let reserved = [Span { start: image.start, end: image.end }, span(&platform.dtb)];
    let mut ram = [Span::default(); crate::dt::MAX_RAM_RANGES];
    for (slot, r) in ram.iter_mut().zip(platform.ram()) {
        *slot = span(r);
    }
    memcheck::largest_free(&ram[..platform.ram().len()], &reserved)
}

/// The 1 GiB regions to map as device memory: those holding a described range that is not RAM.
pub fn device_gigabytes(platform: &Platform) -> impl Iterator<Item = u64> + '_ {
    (0..(1u64 << (VA_BITS - 30))).filter(move |&gb| {
        let slot = Range { base: gb * L1_BLOCK, size: L1_BLOCK };
        let has_ram = platform.ram().iter().any(|r| r.overlaps(&slot));
        !has_ram && platform.described().iter().any(|d| d.overlaps(&slot))
    })
}

struct Builder {
    tables: *mut Table,
    used: usize,
}

impl Builder {
    fn alloc(&mut self) -> *mut Table {
        assert!(self.used < TABLE_POOL, "page table pool exhausted");
        // SAFETY: `used` < TABLE_POOL, so the pointer is inside the pool.
        let table = unsafe { self.tables.add(self.used) };
        self.used += 1;
        table
    }

    /// The next-level table behind `entry`, creating it if the entry is empty.
    ///
    /// # Safety
    /// `entry` must point into a table of the pool.
    unsafe fn next_level(&mut self, entry: *mut u64) -> *mut Table {
        // SAFETY: the caller guarantees `entry` is in the pool, which only this builder writes.
        unsafe {
            if *entry & VALID == 0 {
                let table = self.alloc();
                *entry = table as u64 | TABLE | VALID;
            }
            (*entry & 0x0000_FFFF_FFFF_F000) as *mut Table
        }
    }
}

/// Page attributes of a 4 KiB page of RAM inside the 2 MiB blocks holding the image.
fn image_page_attributes(addr: u64, image: &ImageLayout) -> u64 {
    let normal = ATTR_NORMAL | SH_INNER | AF | VALID | TABLE;
    if addr >= image.start && addr < image.text_end {
        normal | AP_RO | AP_EL0
    } else if addr >= image.text_end && addr < image.rodata_end {
        normal | AP_RO | AP_EL0 | PXN | UXN
    } else if addr >= image.user_rw_start && addr < image.user_rw_end {
        normal | AP_EL0 | PXN | UXN
    } else {
        normal | PXN | UXN
    }
}

/// Builds the translation tables. Runs on the boot CPU with the MMU off.
///
/// # Safety
/// Must be called once, before [`enable_mmu`] on any CPU.
pub unsafe fn build(platform: &Platform) {
    let image = image_layout();
    let mut b = Builder { tables: TABLES.0.get().cast(), used: 0 };
    let l1 = b.alloc();
    let va_limit = 1u64 << VA_BITS;
    let in_ram = |r: &Range| platform.ram().iter().any(|ram| ram.overlaps(r));

    for gb in device_gigabytes(platform) {
        // SAFETY: gb < 512 indexes the level-1 table.
        unsafe { (*l1).0[gb as usize] = (gb * L1_BLOCK) | ATTR_DEVICE | AF | PXN | UXN | VALID };
    }

    // RAM: a 2 MiB block where the block lies wholly in RAM and holds no part of the image,
    // 4 KiB pages otherwise (image permissions, or RAM that does not fill the block).
    for ram in platform.ram() {
        let mut block = ram.base & !(L2_BLOCK - 1);
        while block < ram.end() && block < va_limit {
            // SAFETY: all pointers come from the pool; indices are masked to 0..512; RAM
            // gigabytes never hold a level-1 block (device gigabytes exclude RAM).
            unsafe {
                let l2 = b.next_level(&mut (*l1).0[(block >> 30) as usize & 511]);
                let l2_entry: *mut u64 = &mut (*l2).0[(block >> 21) as usize & 511];
                let whole = block >= ram.base && block + L2_BLOCK <= ram.end();
                let holds_image = block < image.end && image.start < block + L2_BLOCK;
                if whole && !holds_image {
                    *l2_entry = block | ATTR_NORMAL | SH_INNER | AF | PXN | UXN | VALID;
                } else {
                    let l3 = b.next_level(l2_entry);
                    for (i, entry) in (*l3).0.iter_mut().enumerate() {
                        let page = block + i as u64 * PAGE;
                        if page >= ram.base && page + PAGE <= ram.end() {
                            *entry = page | image_page_attributes(page, &image);
                        }
                    }
                }
            }
            block += L2_BLOCK;
        }
    }

    // Devices in a gigabyte that also holds RAM: 2 MiB device blocks around them, except
    // where a block would also cover RAM (such a device stays unmapped).
    let device_gbs = || device_gigabytes(platform);
    for device in platform.described().iter().filter(|d| !in_ram(d) && d.end() <= va_limit) {
        let mut block = device.base & !(L2_BLOCK - 1);
        while block < device.end() {
            let gb = block >> 30;
            let block_range = Range { base: block, size: L2_BLOCK };
            if !device_gbs().any(|g| g == gb) && !in_ram(&block_range) {
                // SAFETY: as above; this gigabyte holds RAM, so its level-1 entry is a table.
                unsafe {
                    let l2 = b.next_level(&mut (*l1).0[gb as usize & 511]);
                    let l2_entry = &mut (*l2).0[(block >> 21) as usize & 511];
                    if *l2_entry & VALID == 0 {
                        *l2_entry = block | ATTR_DEVICE | AF | PXN | UXN | VALID;
                    }
                }
            }
            block += L2_BLOCK;
        }
    }

    // The tables were written with the MMU (and so the data cache) off: drop any stale lines so
    // that the cacheable table walks see what is in memory.
    // SAFETY: memory holds the current contents of the pool (written uncached).
    unsafe { arch::invalidate_dcache_range(TABLES.0.get() as usize, core::mem::size_of::<[Table; TABLE_POOL]>()) };
}

/// Turns on the MMU and caches on this CPU with the tables [`build`] made.
///
/// # Safety
/// [`build`] must have completed; the code calling this must be identity mapped (it is: the
/// whole map is an identity map).
pub unsafe fn enable_mmu() {
    let pa_range = arch::id_aa64mmfr0() & 0xF;
    let tcr: u64 = (64 - VA_BITS) // T0SZ
        | (1 << 8) | (1 << 10) | (3 << 12) // IRGN0/ORGN0 write-back, inner shareable
        | (1 << 23) // EPD1: no TTBR1 walks
        | (pa_range.min(5) << 32); // IPS
    let ttbr0 = TABLES.0.get() as u64;
    // SAFETY: the tables identity-map this code and all memory the kernel uses; the sequence is
    // the architected one (invalidate TLB, program, barrier, enable, barrier).
    unsafe {
        asm!(
            "tlbi vmalle1",
            "dsb nsh",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            sctlr = in(reg) SCTLR,
            options(nostack),
        );
    }
}
