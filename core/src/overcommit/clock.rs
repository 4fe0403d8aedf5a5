//! Victim selection: the clock (second-chance) policy over the frame pool.
//!
//! A hand goes round the frames. A frame whose referenced bit is set (its page was used since
//! the hand last passed: it was just mapped, it faulted, or the hypervisor's access-flag scan
//! found it accessed) loses the bit and is passed over once; any other frame is offered to the
//! engine, which takes it (a clean page: dropped without I/O), passes it (busy with I/O, or
//! dirty: the engine may start its write-back and go on looking) or stops the search. Two
//! rounds are enough to see every frame with its bit cleared, so a search costs at most
//! [`SWEEP_ROUNDS`] times the pool size, and amortized O(1) per eviction when most frames are
//! not referenced.

use super::frames::Frames;
use super::ids::{FrameNo, PageNo};

/// Rounds of the hand in one search: the first may only clear referenced bits.
pub const SWEEP_ROUNDS: usize = 2;

/// The engine's verdict on a frame the hand offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Visit {
    /// The search ends with this frame; the hand moves past it.
    Take,
    /// Go on to the next frame.
    Pass,
    /// The search ends without a frame; the hand stays on this one, which is offered first
    /// next time.
    Stop,
}

pub(super) struct Clock {
    hand: usize,
}

impl Clock {
    pub fn new() -> Self {
        Clock { hand: 0 }
    }

    /// Moves the hand until `visit` takes a frame (which is returned; the hand stays just
    /// past it), stops (the hand stays on the frame), or [`SWEEP_ROUNDS`] rounds have passed. `visit` gets the frame and
    /// the page that owns it; free and pinned frames are skipped.
    pub fn sweep(&mut self, frames: &mut Frames, mut visit: impl FnMut(FrameNo, PageNo) -> Visit) -> Option<FrameNo> {
        let count = frames.len();
        for _ in 0..SWEEP_ROUNDS * count {
            let frame = FrameNo(self.hand as u32);
            self.hand = (self.hand + 1) % count;
            let Some(page) = frames.owner(frame) else {
                continue;
            };
            if frames.is_pinned(frame) {
                continue;
            }
            if frames.take_referenced(frame) {
                continue;
            }
            match visit(frame, page) {
                Visit::Take => return Some(frame),
                Visit::Pass => {}
                Visit::Stop => {
                    self.hand = frame.index();
                    return None;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn second_chance() {
        let mut frames = Frames::new(3);
        for page in 0..3 {
            frames.allocate(PageNo(page)).unwrap();
        }
        frames.set_referenced(FrameNo(0));
        frames.set_referenced(FrameNo(2));
        let mut clock = Clock::new();
        let mut offered = Vec::new();
        // Frame 0 is referenced: it is skipped, frame 1 is offered and taken.
        let taken = clock.sweep(&mut frames, |f, p| {
            offered.push((f, p));
            Visit::Take
        });
        assert_eq!(taken, Some(FrameNo(1)));
        assert_eq!(offered, [(FrameNo(1), PageNo(1))]);
        // The hand continues at frame 2 (referenced: skipped), then frame 0 (bit now clear).
        offered.clear();
        let taken = clock.sweep(&mut frames, |f, p| {
            offered.push((f, p));
            Visit::Take
        });
        assert_eq!(taken, Some(FrameNo(0)));
        assert_eq!(offered, [(FrameNo(0), PageNo(0))]);
    }

    #[test]
    fn gives_up_after_two_rounds_or_on_stop() {
        let mut frames = Frames::new(4);
        for page in 0..4 {
            frames.allocate(PageNo(page)).unwrap();
            frames.set_referenced(FrameNo(page));
        }
        let mut clock = Clock::new();
        let mut visits = 0;
        assert_eq!(
            clock.sweep(&mut frames, |_, _| {
                visits += 1;
                Visit::Pass
            }),
            None
        );
        // Round one clears the bits, round two offers each frame once.
        assert_eq!(visits, 4);
        let mut offered = Vec::new();
        for _ in 0..2 {
            let stopped = clock.sweep(&mut frames, |frame, _| {
                offered.push(frame);
                Visit::Stop
            });
            assert_eq!(stopped, None);
        }
        // Each search stopped at its first offer, and the hand stayed there.
        assert_eq!(offered, [FrameNo(0), FrameNo(0)]);
    }

    #[test]
    fn skips_free_frames() {
        let mut frames = Frames::new(3);
        frames.allocate(PageNo(5)).unwrap();
        frames.allocate(PageNo(6)).unwrap();
        frames.release(FrameNo(0));
        let mut clock = Clock::new();
        assert_eq!(clock.sweep(&mut frames, |_, _| Visit::Take), Some(FrameNo(1)));
    }
}
