//! The table of tasks parked on 64-bit tokens: the blocking / wake-up primitive that
//! asynchronous page faults (and joins, sleeps) are built on.
//!
//! Semantics:
//! - [`WaiterTable::park`] parks a task on a token, unless a wake for that token is already
//!   pending, in which case the pending wake is consumed and the caller must not block.
//! - [`WaiterTable::wake`] releases every task parked on the token. If none is parked, the wake
//!   is remembered (counted) so that the next park on that token returns at once: a wake that
//!   overtakes the park is never lost.
//! - [`WaiterTable::wake_all`] releases every parked task whatever its token (pending wakes are
//!   kept: they only make a later park return early, which callers must tolerate anyway).
//!
//! The table is a fixed array so it needs no allocator; the caller provides locking.

/// What [`WaiterTable::park`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkOutcome {
    /// The task is now recorded as parked; the caller must switch away until woken.
    Parked,
    /// A wake for this token was already pending and has been consumed: do not block.
    AlreadyWoken,
}

/// The table has no free slot for a new parked task or pending wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot<T> {
    Free,
    Parked { token: u64, task: T },
    Pending { token: u64, count: u32 },
}

/// Tasks parked on tokens and wakes that arrived before their park; `N` slots in total.
pub struct WaiterTable<T: Copy, const N: usize> {
    slots: [Slot<T>; N],
}

impl<T: Copy, const N: usize> Default for WaiterTable<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy, const N: usize> WaiterTable<T, N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self { slots: [Slot::Free; N] }
    }

    /// Parks `task` on `token`, or consumes a pending wake for `token`.
    pub fn park(&mut self, token: u64, task: T) -> Result<ParkOutcome, TableFull> {
        if let Some(slot) = self.pending_slot(token) {
            if let Slot::Pending { count, .. } = &mut self.slots[slot] {
                *count -= 1;
                if *count == 0 {
                    self.slots[slot] = Slot::Free;
                }
            }
            return Ok(ParkOutcome::AlreadyWoken);
        }
        let free = self.free_slot().ok_or(TableFull)?;
        self.slots[free] = Slot::Parked { token, task };
        Ok(ParkOutcome::Parked)
    }

    /// Releases every task parked on `token`, passing each to `release`; returns how many.
    /// With no task parked, records a pending wake instead (and returns 0).
    pub fn wake(&mut self, token: u64, mut release: impl FnMut(T)) -> Result<usize, TableFull> {
        let mut released = 0;
        for slot in self.slots.iter_mut() {
            if let Slot::Parked { token: t, task } = *slot {
                if t == token {
                    *slot = Slot::Free;
                    release(task);
                    released += 1;
                }
            }
        }
        if released == 0 {
            if let Some(slot) = self.pending_slot(token) {
                if let Slot::Pending { count, .. } = &mut self.slots[slot] {
                    *count = count.saturating_add(1);
                }
            } else {
                let free = self.free_slot().ok_or(TableFull)?;
                self.slots[free] = Slot::Pending { token, count: 1 };
            }
        }
        Ok(released)
    }

    /// Releases every parked task, whatever its token; returns how many.
    pub fn wake_all(&mut self, release: impl FnMut(T)) -> usize {
        self.wake_matching(|_| true, release)
    }

    /// Releases every task parked on a token for which `matches` holds; returns how many.
    /// No pending wake is recorded.
    pub fn wake_matching(&mut self, matches: impl Fn(u64) -> bool, mut release: impl FnMut(T)) -> usize {
        let mut released = 0;
        for slot in self.slots.iter_mut() {
            if let Slot::Parked { token, task } = *slot {
                if matches(token) {
                    *slot = Slot::Free;
                    release(task);
                    released += 1;
                }
            }
        }
        released
    }

    /// Number of tasks currently parked.
    pub fn parked(&self) -> usize {
        self.parked_matching(|_| true)
    }

    /// Number of tasks parked on a token for which `matches` holds.
    pub fn parked_matching(&self, matches: impl Fn(u64) -> bool) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Parked { token, .. } if matches(*token))).count()
    }

    /// Number of wakes pending (recorded before their park) on `token`.
    pub fn pending(&self, token: u64) -> u32 {
        self.pending_slot(token)
            .map(|i| match self.slots[i] {
                Slot::Pending { count, .. } => count,
                _ => 0,
            })
            .unwrap_or(0)
    }

    /// Number of wakes pending on all tokens together.
    pub fn pending_total(&self) -> u32 {
        self.slots.iter().map(|s| if let Slot::Pending { count, .. } = s { *count } else { 0 }).sum()
    }

    fn pending_slot(&self, token: u64) -> Option<usize> {
        self.slots.iter().position(|s| matches!(s, Slot::Pending { token: t, .. } if *t == token))
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| matches!(s, Slot::Free))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn park_then_wake_releases_the_task() {
        let mut t: WaiterTable<u16, 4> = WaiterTable::new();
        assert_eq!(t.park(7, 1), Ok(ParkOutcome::Parked));
        let mut out = Vec::new();
        assert_eq!(t.wake(7, |x| out.push(x)), Ok(1));
        assert_eq!(out, [1]);
        assert_eq!(t.parked(), 0);
        assert_eq!(t.pending(7), 0);
    }

    #[test]
    fn wake_before_park_is_not_lost() {
        let mut t: WaiterTable<u16, 4> = WaiterTable::new();
        assert_eq!(t.wake(9, |_| panic!("nobody parked")), Ok(0));
        assert_eq!(t.pending(9), 1);
        assert_eq!(t.pending_total(), 1);
        assert_eq!(t.park(9, 3), Ok(ParkOutcome::AlreadyWoken));
        assert_eq!(t.pending(9), 0);
        // The pending wake was consumed: the next park blocks.
        assert_eq!(t.park(9, 3), Ok(ParkOutcome::Parked));
    }

    #[test]
    fn early_wakes_are_counted() {
        let mut t: WaiterTable<u16, 4> = WaiterTable::new();
        t.wake(5, |_| ()).unwrap();
        t.wake(5, |_| ()).unwrap();
        assert_eq!(t.park(5, 1), Ok(ParkOutcome::AlreadyWoken));
        assert_eq!(t.park(5, 2), Ok(ParkOutcome::AlreadyWoken));
        assert_eq!(t.park(5, 3), Ok(ParkOutcome::Parked));
    }

    #[test]
    fn wake_releases_every_task_on_the_token_only() {
        let mut t: WaiterTable<u16, 8> = WaiterTable::new();
        t.park(1, 10).unwrap();
        t.park(2, 20).unwrap();
        t.park(1, 11).unwrap();
        let mut out = Vec::new();
        assert_eq!(t.wake(1, |x| out.push(x)), Ok(2));
        out.sort();
        assert_eq!(out, [10, 11]);
        assert_eq!(t.parked(), 1);
        assert_eq!(t.pending(1), 0, "a wake that released tasks is not also pending");
    }

    #[test]
    fn wake_all_releases_everything() {
        let mut t: WaiterTable<u16, 8> = WaiterTable::new();
        for i in 0..5 {
            t.park(100 + u64::from(i), i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(t.wake_all(|x| out.push(x)), 5);
        assert_eq!(out.len(), 5);
        assert_eq!(t.parked(), 0);
    }

    #[test]
    fn wake_matching_releases_only_matching_tokens() {
        let mut t: WaiterTable<u16, 8> = WaiterTable::new();
        t.park(0x0100, 1).unwrap();
        t.park(0x0101, 2).unwrap();
        t.park(0x0200, 3).unwrap();
        assert_eq!(t.parked_matching(|tok| tok >> 8 == 1), 2);
        let mut out = Vec::new();
        assert_eq!(t.wake_matching(|tok| tok >> 8 == 1, |x| out.push(x)), 2);
        out.sort();
        assert_eq!(out, [1, 2]);
        assert_eq!(t.parked(), 1);
        assert_eq!(t.pending(0x0100), 0, "a wake-all leaves nothing pending");
    }

    #[test]
    fn full_table_is_reported() {
        let mut t: WaiterTable<u16, 2> = WaiterTable::new();
        t.park(1, 1).unwrap();
        t.park(2, 2).unwrap();
        assert_eq!(t.park(3, 3), Err(TableFull));
        assert_eq!(t.wake(4, |_| ()), Err(TableFull));
        // Waking a parked token frees a slot.
        t.wake(1, |_| ()).unwrap();
        assert_eq!(t.park(3, 3), Ok(ParkOutcome::Parked));
    }

    /// Every interleaving of one park and one wake on the same token, from a single-threaded
    /// point of view, ends with the task released exactly once.
    #[test]
    fn park_wake_orderings_release_exactly_once() {
        for wake_first in [false, true] {
            let mut t: WaiterTable<u16, 4> = WaiterTable::new();
            let mut released = 0;
            if wake_first {
                t.wake(42, |_| released += 1).unwrap();
                if t.park(42, 1).unwrap() == ParkOutcome::AlreadyWoken {
                    released += 1;
                }
            } else {
                assert_eq!(t.park(42, 1), Ok(ParkOutcome::Parked));
                t.wake(42, |_| released += 1).unwrap();
            }
            assert_eq!(released, 1);
            assert_eq!(t.parked(), 0);
            assert_eq!(t.pending(42), 0);
        }
    }
}
