//! Sleeping tasks ordered by deadline: each entry is the token to wake when time passes.

/// No room for another sleeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepQueueFull;

/// Up to `N` (deadline, token) pairs; deadlines are in any monotonic unit (counter ticks).
pub struct SleepQueue<const N: usize> {
    entries: [Option<(u64, u64)>; N],
}

impl<const N: usize> Default for SleepQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SleepQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { entries: [None; N] }
    }

    /// Records that `token` must be woken once the clock reaches `deadline`.
    pub fn insert(&mut self, deadline: u64, token: u64) -> Result<(), SleepQueueFull> {
        let slot = self.entries.iter_mut().find(|e| e.is_none()).ok_or(SleepQueueFull)?;
        *slot = Some((deadline, token));
        Ok(())
    }

    /// Removes every entry whose deadline is at or before `now`, passing its token to `expire`.
    pub fn expire(&mut self, now: u64, mut expire: impl FnMut(u64)) -> usize {
        let mut n = 0;
        for entry in self.entries.iter_mut() {
            if let Some((deadline, token)) = *entry {
                if deadline <= now {
                    *entry = None;
                    expire(token);
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn expires_only_due_entries() {
        let mut q: SleepQueue<4> = SleepQueue::new();
        q.insert(10, 1).unwrap();
        q.insert(20, 2).unwrap();
        let mut out = Vec::new();
        assert_eq!(q.expire(15, |t| out.push(t)), 1);
        assert_eq!(out, [1]);
        assert_eq!(q.expire(20, |t| out.push(t)), 1);
        assert_eq!(out, [1, 2]);
        assert_eq!(q.expire(u64::MAX, |_| ()), 0);
    }

    #[test]
    fn full_is_reported() {
        let mut q: SleepQueue<1> = SleepQueue::new();
        q.insert(1, 1).unwrap();
        assert_eq!(q.insert(2, 2), Err(SleepQueueFull));
    }
}
