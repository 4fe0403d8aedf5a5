//! Newtypes for the numbers the engine deals in, so that a guest page number can never be
//! passed where a host frame number is expected.

use core::fmt;

/// Size of a guest page, a host frame and a disk slot: the 4 KiB stage-2 granule.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a virtio-blk sector (virtio v1.2 5.2: capacity and `sector` are in 512-byte units).
pub const SECTOR_SIZE: u64 = 512;
/// Sectors in one disk slot.
pub const SECTORS_PER_PAGE: u64 = PAGE_SIZE / SECTOR_SIZE;

/// A guest page: (guest physical address - start of guest RAM) / [`PAGE_SIZE`].
///
/// It is also the page's disk slot: slot `n` starts at byte `n * PAGE_SIZE` of the backing
/// store, so a page needs no slot allocation and its slot never moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(pub u32);

impl PageNo {
    /// The page as an index into per-page tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Byte offset of the page's disk slot in the backing store.
    pub const fn disk_offset(self) -> u64 {
        self.0 as u64 * PAGE_SIZE
    }

    /// First virtio-blk sector of the page's disk slot.
    pub const fn sector(self) -> u64 {
        self.0 as u64 * SECTORS_PER_PAGE
    }
}

/// A host frame of the pool that backs guest RAM, numbered from 0. Where the pool lies in host
/// physical memory is the hypervisor's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameNo(pub u32);

impl FrameNo {
    /// The frame as an index into per-frame tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An in-flight I/O request: an index into the request table, below the queue depth. The
/// hypervisor tags the virtio request with it and hands it back on completion. An id is reused
/// once its request has completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u16);

impl RequestId {
    /// The id as an index into the request table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Who waits for a fault to be resolved: normally a vCPU index (a vCPU that takes a
/// synchronous fault is blocked until it is woken). The hypervisor may give each outstanding
/// asynchronous fault its own id instead. An id waits for at most one thing at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Waiter(pub u32);

impl Waiter {
    /// The waiter as an index into per-waiter tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {:#x}", self.0)
    }
}

impl fmt::Display for FrameNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {:#x}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

impl fmt::Display for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waiter {}", self.0)
    }
}
