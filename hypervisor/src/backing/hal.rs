//! The `virtio_drivers::Hal` of the hypervisor: how the virtio-blk driver gets DMA memory and
//! device addresses at EL2.
//!
//! - **Addresses**: EL2 maps memory 1:1 (`mm`), so a buffer's address is its physical address
//!   and an MMIO region's physical address is its virtual one. There is no IOMMU.
//! - **DMA memory** (the virtqueue rings) comes from the hypervisor heap, page-aligned and
//!   zeroed, and goes back to it when the queue is dropped.
//! - **Caches**: the EL2 map is normal write-back cacheable memory, which is right only for a
//!   *coherent* device — one whose DMA snoops the CPUs' caches, as the device tree says with
//!   `dma-coherent` (QEMU's virtio-mmio nodes do; TCG is coherent by construction).
//!   `BackingStore::probe` refuses a device without it. For a coherent device no cache
//!   maintenance is needed, only ordering: the driver's writes to a buffer and to the rings
//!   must be visible before the device is told about them. `share` (called for every buffer
//!   as a request is built, before the available index is published and the device notified)
//!   issues a full-system `dsb`, which completes the caller's earlier writes to the data page;
//!   the crate publishes the ring with a fence and reads the used ring with acquire loads, so
//!   data the device wrote is read only after its completion is seen. (Between its release
//!   store of the available index and the QueueNotify register write the crate puts no
//!   barrier, where Linux's `writel` has a `dmb oshst`; the doorbell,
//!   `DeviceRegisters::notify_queue`, issues that barrier before its write.) A non-coherent device would
//!   need the rings mapped non-cacheable, buffers cleaned to the point of coherency in `share`
//!   and invalidated in `unshare`; this hypervisor does not support one.

use core::ptr::NonNull;

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::arch;

/// The hypervisor's DMA and address translation for virtio (see the module documentation).
pub struct HypHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    let bytes = pages.checked_mul(PAGE_SIZE).filter(|&b| b > 0)?;
    Layout::from_size_align(bytes, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory that nothing else references
// until `dma_dealloc`; addresses are identity-mapped, so the physical address given to the
// device is the memory the pointer refers to.
unsafe impl Hal for HypHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size.
        let memory = unsafe { alloc_zeroed(layout) };
        match NonNull::new(memory) {
            // A physical address of 0 tells the crate that the allocation failed.
            None => (0, NonNull::dangling()),
            Some(pointer) => (pointer.as_ptr() as PhysAddr, pointer),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = dma_layout(pages).expect("the layout dma_alloc accepted");
        // SAFETY: the caller passes back what `dma_alloc` returned for this many pages, so the
        // memory came from `alloc_zeroed` with this layout and is freed once.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("an MMIO region at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Coherent device: nothing to clean; make the CPU's writes so far complete.
        arch::dsb_sy();
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {
        // Coherent device and no bounce buffers: the data is already where the caller looks.
    }
}
