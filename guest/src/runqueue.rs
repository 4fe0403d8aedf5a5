//! A fixed-capacity FIFO of task ids: one per CPU, with stealing from the back.

/// The queue is full (cannot happen when capacity >= number of tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A ring buffer of `N` task ids.
pub struct RunQueue<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Default for RunQueue<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy, const N: usize> RunQueue<T, N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { items: [None; N], head: 0, len: 0 }
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The queued tasks, front to back.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len).filter_map(move |i| self.items[(self.head + i) % N])
    }

    /// Appends at the back (the task runs after those already queued).
    pub fn push_back(&mut self, task: T) -> Result<(), QueueFull> {
        if self.len == N {
            return Err(QueueFull);
        }
        self.items[(self.head + self.len) % N] = Some(task);
        self.len += 1;
        Ok(())
    }

    /// Takes the task at the front (the next to run locally).
    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let task = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        task
    }

    /// Removes and returns the task nearest the back that satisfies `eligible` (stealing
    /// takes the most recently queued task, which is the least likely to run here soon).
    pub fn steal(&mut self, mut eligible: impl FnMut(T) -> bool) -> Option<T> {
        let pos = (0..self.len).rev().find(|&i| self.items[(self.head + i) % N].is_some_and(&mut eligible))?;
        let task = self.items[(self.head + pos) % N].take();
        // Close the gap by shifting the later entries one place forward.
        for i in pos..self.len - 1 {
            self.items[(self.head + i) % N] = self.items[(self.head + i + 1) % N].take();
        }
        self.len -= 1;
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_wraparound() {
        let mut q: RunQueue<u8, 3> = RunQueue::new();
        for round in 0..5u8 {
            q.push_back(round).unwrap();
            q.push_back(round + 100).unwrap();
            assert_eq!(q.pop_front(), Some(round));
            assert_eq!(q.pop_front(), Some(round + 100));
            assert!(q.is_empty());
        }
    }

    #[test]
    fn full_is_reported() {
        let mut q: RunQueue<u8, 2> = RunQueue::new();
        q.push_back(1).unwrap();
        q.push_back(2).unwrap();
        assert_eq!(q.push_back(3), Err(QueueFull));
    }

    #[test]
    fn steal_takes_the_last_eligible() {
        let mut q: RunQueue<u8, 4> = RunQueue::new();
        q.pop_front();
        for x in [1, 2, 3, 4] {
            q.push_back(x).unwrap();
        }
        assert_eq!(q.steal(|x| x != 4), Some(3));
        assert_eq!(q.len(), 3);
        assert!(q.iter().eq([1, 2, 4]));
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.pop_front(), Some(2));
        assert_eq!(q.pop_front(), Some(4));
        assert_eq!(q.steal(|_| true), None);
    }
}
