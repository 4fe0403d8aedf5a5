//! Per-page state (see the diagram in the [module documentation](super)).

use super::ids::{FrameNo, PageNo, RequestId};
use alloc::vec;
use alloc::vec::Vec;

/// What a resident page's frame holds compared with its disk slot. It decides the stage-2
/// permission: only [`Contents::Dirty`] pages are mapped writable, so the first write to a
/// clean page faults and marks it dirty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Zero-filled and never written; the disk slot holds nothing. Mapped read-only; dropping
    /// it makes the page [`PageState::Zero`] again.
    Zero,
    /// The same as the disk slot. Mapped read-only; dropping it costs no write.
    Clean,
    /// Written since it was last made clean (or since zero-fill): the disk slot is stale or
    /// empty. Mapped read-write; it is written back before its frame is reused.
    Dirty,
}

impl Contents {
    /// Whether the stage-2 mapping of a page with these contents is writable.
    pub const fn writable(self) -> bool {
        matches!(self, Contents::Dirty)
    }
}

/// Where a guest page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Never written: reads as zeros; no frame, no disk copy. Not mapped.
    Zero,
    /// Not resident; the disk slot holds the page. Not mapped.
    OnDisk,
    /// In `frame` and mapped (read-only unless dirty).
    Resident { frame: FrameNo, contents: Contents },
    /// Being read from disk by the request (which names the frame). Not mapped.
    Reading(RequestId),
    /// Being written back by the request (which names the frame). Not mapped: the caller
    /// removed the mapping before it submitted the write.
    WritingBack(RequestId),
}

impl PageState {
    /// Resident with [`Contents::Zero`] or [`Contents::Clean`]: a frame the clock can take
    /// without I/O.
    fn is_clean_resident(self) -> bool {
        matches!(self, PageState::Resident { contents: Contents::Zero | Contents::Clean, .. })
    }
}

/// The state of every guest page, and how many are clean and resident (so that a frame search
/// can stop at once when only dirty or busy frames are left); and which pages are known to be
/// unreadable (their last read failed for good).
pub(super) struct Pages {
    states: Vec<PageState>,
    clean_resident: usize,
    /// One bit per page: the last read of the page failed for good (and none succeeded since).
    unreadable: Vec<u64>,
    unreadable_count: usize,
}

impl Pages {
    /// `count` pages, all never written.
    pub fn new(count: u32) -> Self {
        Pages {
            states: vec![PageState::Zero; count as usize],
            clean_resident: 0,
            unreadable: vec![0; (count as usize).div_ceil(64)],
            unreadable_count: 0,
        }
    }

    /// Whether the last read of `page` failed for good.
    pub fn is_unreadable(&self, page: PageNo) -> bool {
        self.unreadable[page.index() / 64] & 1 << (page.index() % 64) != 0
    }

    /// Records whether the last read of `page` failed for good.
    pub fn set_unreadable(&mut self, page: PageNo, unreadable: bool) {
        let (word, bit) = (&mut self.unreadable[page.index() / 64], 1u64 << (page.index() % 64));
        let was = *word & bit != 0;
        if unreadable {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        self.unreadable_count = self.unreadable_count + usize::from(unreadable) - usize::from(was);
    }

    /// The pages whose last read failed for good, in ascending order.
    pub fn unreadable(&self) -> impl Iterator<Item = PageNo> + '_ {
        self.unreadable.iter().enumerate().flat_map(|(word, &bits)| {
            (0..64).filter(move |bit| bits & 1 << bit != 0).map(move |bit| PageNo((word * 64 + bit) as u32))
        })
    }

    /// Pages whose last read failed for good.
    pub fn unreadable_count(&self) -> usize {
        self.unreadable_count
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn get(&self, page: PageNo) -> PageState {
        self.states[page.index()]
    }

    pub fn set(&mut self, page: PageNo, state: PageState) {
        let slot = &mut self.states[page.index()];
        self.clean_resident -= usize::from(slot.is_clean_resident());
        self.clean_resident += usize::from(state.is_clean_resident());
        *slot = state;
    }

    /// Resident pages that are not dirty.
    pub fn clean_resident(&self) -> usize {
        self.clean_resident
    }

    /// Recounts [`Pages::clean_resident`] (for consistency checks).
    #[cfg(test)]
    pub fn recount_clean_resident(&self) -> usize {
        self.states.iter().filter(|s| s.is_clean_resident()).count()
    }
}
