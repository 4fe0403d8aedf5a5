//! The host frame pool: which page owns each frame, the free frames, and the "referenced" bit
//! that the clock ([`super::clock`]) uses for its second chance.

use super::ids::{FrameNo, PageNo};
use alloc::vec;
use alloc::vec::Vec;

pub(super) struct Frames {
    /// The page a frame holds or is being filled for / written back from; `None` when free.
    owner: Vec<Option<PageNo>>,
    /// Set when the page in the frame was used since the clock hand last passed it.
    referenced: Vec<bool>,
    /// How many times the frame's page is pinned: the clock passes over a pinned frame.
    pins: Vec<u16>,
    /// Free frames, taken from the end.
    free: Vec<FrameNo>,
}

impl Frames {
    /// `count` free frames, handed out from frame 0 upwards.
    pub fn new(count: u32) -> Self {
        Frames {
            owner: vec![None; count as usize],
            referenced: vec![false; count as usize],
            pins: vec![0; count as usize],
            free: (0..count).rev().map(FrameNo).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn owner(&self, frame: FrameNo) -> Option<PageNo> {
        self.owner[frame.index()]
    }

    /// Takes a free frame for `page`.
    pub fn allocate(&mut self, page: PageNo) -> Option<FrameNo> {
        let frame = self.free.pop()?;
        self.give(frame, page);
        Some(frame)
    }

    /// Hands a frame that is not free (an evicted page's) to `page`.
    pub fn give(&mut self, frame: FrameNo, page: PageNo) {
        self.owner[frame.index()] = Some(page);
        self.referenced[frame.index()] = false;
    }

    /// Returns `frame` to the free pool.
    pub fn release(&mut self, frame: FrameNo) {
        assert_eq!(self.pins[frame.index()], 0, "{frame} freed while pinned");
        assert!(self.owner[frame.index()].take().is_some(), "{frame} freed twice");
        self.free.push(frame);
    }

    pub fn pin(&mut self, frame: FrameNo) {
        self.pins[frame.index()] += 1;
    }

    /// Drops one pin; false if the frame was not pinned.
    pub fn unpin(&mut self, frame: FrameNo) -> bool {
        let pins = &mut self.pins[frame.index()];
        let was = *pins > 0;
        *pins = pins.saturating_sub(1);
        was
    }

    pub fn is_pinned(&self, frame: FrameNo) -> bool {
        self.pins[frame.index()] > 0
    }

    /// Frames with at least one pin.
    pub fn pinned_count(&self) -> usize {
        self.pins.iter().filter(|&&pins| pins > 0).count()
    }

    pub fn set_referenced(&mut self, frame: FrameNo) {
        self.referenced[frame.index()] = true;
    }

    /// Clears the referenced bit and says whether it was set.
    pub fn take_referenced(&mut self, frame: FrameNo) -> bool {
        core::mem::take(&mut self.referenced[frame.index()])
    }

    /// The free frames (for consistency checks).
    #[cfg(test)]
    pub fn free_list(&self) -> &[FrameNo] {
        &self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_release() {
        let mut frames = Frames::new(2);
        assert_eq!(frames.allocate(PageNo(7)), Some(FrameNo(0)));
        assert_eq!(frames.allocate(PageNo(9)), Some(FrameNo(1)));
        assert_eq!(frames.allocate(PageNo(1)), None);
        assert_eq!(frames.owner(FrameNo(1)), Some(PageNo(9)));
        frames.set_referenced(FrameNo(1));
        assert!(frames.take_referenced(FrameNo(1)));
        assert!(!frames.take_referenced(FrameNo(1)));
        frames.release(FrameNo(0));
        assert_eq!(frames.free_count(), 1);
        assert_eq!(frames.owner(FrameNo(0)), None);
        assert_eq!(frames.allocate(PageNo(3)), Some(FrameNo(0)));
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics() {
        let mut frames = Frames::new(1);
        let frame = frames.allocate(PageNo(0)).unwrap();
        frames.release(frame);
        frames.release(frame);
    }
}
