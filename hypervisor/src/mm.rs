//! Memory management: the hypervisor's heap, its own stage-1 translation at EL2 (an identity
//! map), and stage-2 translation for the guest.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2, VTCR_EL2, VTTBR_EL2,
};
use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::LockedHeap;

use crate::arch;

/// Host physical address (also the hypervisor's virtual address: EL2 maps memory 1:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysAddr(pub u64);

/// Guest intermediate physical address (what the guest calls physical).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipa(pub u64);

pub const PAGE_SIZE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;
const ENTRIES: usize = 512;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hand `[start, end)` to the heap allocator. Called once, by CPU 0, before any allocation.
pub fn init_heap(start: usize, end: usize) {
    // SAFETY: the range lies between the end of the hypervisor image and the region reserved
    // for the staged guest image; nothing else uses it, and this runs once.
    unsafe { HEAP.lock().init(start as *mut u8, end - start) };
}

/// A 4 KiB translation table, zeroed, from the heap. Tables are never freed.
fn new_table() -> &'static mut [u64; ENTRIES] {
    // SAFETY: `[u64; ENTRIES]` is valid when zeroed (every entry invalid).
    unsafe { &mut *new_zeroed_page::<[u64; ENTRIES]>() }
}

/// A 4 KiB table whose entries may be changed while the hardware walks it (level 3 of guest
/// RAM under the pager): every descriptor is one atomic 64-bit store.
fn new_shared_table() -> &'static [AtomicU64; ENTRIES] {
    // SAFETY: `AtomicU64` has the size and in-memory representation of `u64`, so zeroed memory
    // is a valid `[AtomicU64; ENTRIES]` (every entry invalid).
    unsafe { &*new_zeroed_page::<[AtomicU64; ENTRIES]>() }
}

/// A zeroed, page-aligned, leaked heap page, typed as `T` (4 KiB).
///
/// # Safety
/// An all-zero `T` must be valid.
unsafe fn new_zeroed_page<T>() -> *mut T {
    const { assert!(core::mem::size_of::<T>() == PAGE_SIZE as usize) };
    let layout = Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize).expect("valid layout");
    // SAFETY: the layout has non-zero size; the memory is zeroed and leaked (never freed), so
    // whoever receives the pointer holds the only reference.
    let ptr = unsafe { alloc_zeroed(layout) } as *mut T;
    assert!(!ptr.is_null(), "out of hypervisor heap for a translation table");
    ptr
}

// ---- EL2 stage 1 -------------------------------------------------------------------------

/// MAIR_EL2 attribute indices.
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;

/// Descriptor bits shared by stage-1 block descriptors.
const DESC_VALID_BLOCK: u64 = 0b01;
const DESC_TABLE: u64 = 0b11;
const DESC_AF: u64 = 1 << 10;
const DESC_SH_INNER: u64 = 0b11 << 8;
const DESC_XN: u64 = 1 << 54;

/// The EL2 level-1 table: four 1 GiB blocks cover the 4 GiB the hypervisor can see (devices in
/// the first GiB, RAM above it).
#[repr(C, align(4096))]
struct Level1Table([u64; ENTRIES]);
static mut EL2_L1: Level1Table = Level1Table([0; ENTRIES]);

/// Build the EL2 identity map (CPU 0, before the MMU is on anywhere).
pub fn build_el2_tables() {
    // SAFETY: runs once on CPU 0 before any other CPU is started and before the MMU is on;
    // nothing else references the table yet.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(EL2_L1) };
    table.0[0] = DESC_VALID_BLOCK | (ATTR_DEVICE << 2) | DESC_AF | DESC_XN;
    for gib in 1..4u64 {
        table.0[gib as usize] = (gib << 30) | DESC_VALID_BLOCK | (ATTR_NORMAL << 2) | DESC_AF | DESC_SH_INNER;
    }
}

/// Turn on the EL2 MMU and caches with the identity map (every CPU).
pub fn enable_el2_mmu() {
    MAIR_EL2.set((0x00 << (8 * ATTR_DEVICE)) | (0xff << (8 * ATTR_NORMAL)));
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(32)
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::PS::Bits_36,
    );
    // Bits 31 and 23 of TCR_EL2 are RES1 in the non-VHE format.
    TCR_EL2.set(TCR_EL2.get() | (1 << 31) | (1 << 23));
    TTBR0_EL2.set(core::ptr::addr_of!(EL2_L1) as u64);
    arch::tlbi_alle2();
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable + SCTLR_EL2::SA::Enable);
    arch::isb();
}

// ---- Stage 2 ------------------------------------------------------------------------------

/// Stage-2 descriptor bits (Arm ARM D8.3): MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10].
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const S2_AP_RW: u64 = 0b11 << 6;
const S2_AP_RO: u64 = 0b01 << 6;
const S2_PAGE: u64 = 0b11;
/// Bits 47:12 of a descriptor hold the output address.
const DESC_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Input size of the guest's IPA space: 39 bits (512 GiB), starting at level 1 with 4 KiB pages.
const IPA_BITS: u64 = 39;

/// The guest's stage-2 translation tables.
pub struct Stage2 {
    root: &'static mut [u64; ENTRIES],
}

impl Stage2 {
    pub fn new() -> Self {
        Self { root: new_table() }
    }

    /// Map `[ipa, ipa + size)` to `[pa, pa + size)` as normal, read-write memory, with 2 MiB
    /// blocks where both sides are aligned and 4 KiB pages elsewhere.
    pub fn map_normal(&mut self, ipa: Ipa, pa: PhysAddr, size: u64) {
        assert!(ipa.0.is_multiple_of(PAGE_SIZE) && pa.0.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE));
        assert!(ipa.0 + size <= 1 << IPA_BITS, "IPA range beyond the stage-2 input size");
        let attrs = S2_MEMATTR_NORMAL_WB | S2_AP_RW | DESC_SH_INNER | DESC_AF;
        let mut offset = 0;
        while offset < size {
            let (i, p) = (ipa.0 + offset, pa.0 + offset);
            let l1 = &mut self.root[((i >> 30) & 0x1ff) as usize];
            let l2 = next_level(l1);
            let l2_entry = &mut l2[((i >> 21) & 0x1ff) as usize];
            if i % BLOCK_2M == 0 && p % BLOCK_2M == 0 && size - offset >= BLOCK_2M {
                assert!(*l2_entry & 1 == 0, "IPA {i:#x} is already mapped");
                *l2_entry = p | attrs | DESC_VALID_BLOCK;
                offset += BLOCK_2M;
            } else {
                let l3 = next_level(l2_entry);
                l3[((i >> 12) & 0x1ff) as usize] = p | attrs | S2_PAGE;
                offset += PAGE_SIZE;
            }
        }
        arch::dsb_ish();
    }

    /// Give `[ipa, ipa + size)` (2 MiB aligned) level-3 tables with every page unmapped, for the
    /// pager to fill one page at a time ([`GuestPages`]).
    pub fn prepare_pages(&mut self, ipa: Ipa, size: u64) -> GuestPages {
        assert!(ipa.0.is_multiple_of(BLOCK_2M) && size.is_multiple_of(BLOCK_2M) && ipa.0 + size <= 1 << IPA_BITS);
        let tables = (0..size / BLOCK_2M)
            .map(|i| {
                let block = ipa.0 + i * BLOCK_2M;
                let l2 = next_level(&mut self.root[((block >> 30) & 0x1ff) as usize]);
                let entry = &mut l2[((block >> 21) & 0x1ff) as usize];
                assert!(*entry & 1 == 0, "IPA {block:#x} is already mapped");
                let table = new_shared_table();
                *entry = table.as_ptr() as u64 | DESC_TABLE;
                table
            })
            .collect();
        arch::dsb_ish();
        GuestPages { pages: (size / PAGE_SIZE) as usize, tables }
    }

    /// Physical address of the root table, for VTTBR_EL2.
    fn root_address(&self) -> u64 {
        self.root.as_ptr() as u64
    }

    /// Make this the current stage-2 translation on this CPU (VMID 1).
    pub fn activate(&self) {
        let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
        VTCR_EL2.write(
            VTCR_EL2::T0SZ.val(64 - IPA_BITS)
                + VTCR_EL2::SL0.val(1) // start at level 1 (4 KiB granule)
                + VTCR_EL2::IRGN0::NormalWBRAWA
                + VTCR_EL2::ORGN0::NormalWBRAWA
                + VTCR_EL2::SH0::Inner
                + VTCR_EL2::TG0::Granule4KB
                + VTCR_EL2::PS.val(pa_range.min(5))
                + VTCR_EL2::RES1::SET,
        );
        VTTBR_EL2.write(VTTBR_EL2::VMID.val(1) + VTTBR_EL2::BADDR.val(self.root_address() >> 1));
        arch::isb();
        arch::tlbi_vmalls12e1is();
    }
}

/// The table an entry points to, created if the entry is invalid.
fn next_level(entry: &mut u64) -> &'static mut [u64; ENTRIES] {
    if *entry & 1 == 0 {
        let table = new_table();
        *entry = table.as_ptr() as u64 | DESC_TABLE;
    }
    assert!(*entry & 0b11 == DESC_TABLE, "a block mapping is in the way");
    // SAFETY: table entries created here point to tables from `new_table`, which are leaked,
    // aligned and only reached through this `Stage2`, which we borrow mutably.
    unsafe { &mut *((*entry & DESC_ADDR_MASK) as *mut [u64; ENTRIES]) }
}

/// The level-3 stage-2 descriptors of guest RAM, one per 4 KiB page, which the pager maps and
/// unmaps while vCPUs run. Changes are single atomic stores; the caller serializes maps and
/// unmaps (the pager's lock; only the access flag is also set without it, atomically) and the
/// hardware only reads them (stage-2 hardware AF/dirty updates are off:
/// VTCR_EL2.HA/HD are 0).
pub struct GuestPages {
    pages: usize,
    tables: Vec<&'static [AtomicU64; ENTRIES]>,
}

/// Stage-2 permission of a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl GuestPages {
    fn descriptor(&self, page: usize) -> &AtomicU64 {
        assert!(page < self.pages, "guest page {page} beyond the prepared range");
        &self.tables[page / ENTRIES][page % ENTRIES]
    }

    /// Map page `page` to the host frame at `frame` with `access` (normal write-back memory,
    /// executable, access flag set). Whatever the frame holds must be written before this.
    /// Raising a read-only mapping to read-write needs no TLB maintenance: a stale read-only
    /// entry only causes another permission fault.
    pub fn map(&self, page: usize, frame: PhysAddr, access: Access) {
        assert!(frame.0.is_multiple_of(PAGE_SIZE));
        let ap = match access {
            Access::ReadOnly => S2_AP_RO,
            Access::ReadWrite => S2_AP_RW,
        };
        // The frame's contents must be visible before the descriptor that exposes them.
        arch::dsb_ish();
        self.descriptor(page)
            .store(frame.0 | S2_MEMATTR_NORMAL_WB | ap | DESC_SH_INNER | DESC_AF | S2_PAGE, Ordering::Release);
        arch::dsb_ish();
        arch::isb();
    }

    /// Remove page `page`'s mapping. Its frame may still be reached through TLB entries
    /// until [`Self::invalidate_tlbs`]: call it after a batch of unmaps, before any of their
    /// frames is reused or written out.
    pub fn unmap(&self, page: usize) {
        self.descriptor(page).store(0, Ordering::Release);
    }

    /// Invalidate every cached stage-1 and stage-2 translation of the VM on every CPU (inner
    /// shareable). One instruction for a whole batch of unmaps: under QEMU's TCG each broadcast
    /// TLBI stops every running vCPU thread, so per-page invalidation costs far more there
    /// than on hardware.
    pub fn invalidate_tlbs(&self) {
        arch::tlbi_vmalls12e1is();
    }

    /// Read and clear page `page`'s access flag; false if unmapped. The caller invalidates the
    /// TLBs after a batch of these (a cached entry would keep hiding accesses), see
    /// [`arch::tlbi_vmalls12e1is`].
    pub fn test_and_clear_accessed(&self, page: usize) -> bool {
        // Atomic, because `set_accessed` runs without the pager's lock. Clearing the flag of an
        // invalid descriptor changes nothing the hardware reads.
        let old = self.descriptor(page).fetch_and(!DESC_AF, Ordering::AcqRel);
        old & 1 != 0 && old & DESC_AF != 0
    }

    /// Set page `page`'s access flag (after an access flag fault); false if it is unmapped.
    /// Safe without the pager's lock: the flag is set only on the valid descriptor it was
    /// read with (a concurrent unmap or map wins, and the fault is taken again if needed).
    pub fn set_accessed(&self, page: usize) -> bool {
        let set = self
            .descriptor(page)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| (value & 1 != 0).then_some(value | DESC_AF));
        if set.is_err() {
            return false;
        }
        arch::dsb_ish();
        arch::isb();
        true
    }
}
