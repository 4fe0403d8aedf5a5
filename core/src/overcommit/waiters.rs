//! Wait lists: who waits for a page's I/O, and who waits for a frame or a request slot.
//!
//! Every waiter is in at most one list, so the lists are threaded through one `next` link per
//! waiter (an intrusive singly linked FIFO): adding is O(1), the lists need no memory of their
//! own, and a request-table entry holds its list in two words.

use super::ids::Waiter;
use alloc::vec;
use alloc::vec::Vec;

/// End of a list / not linked.
const NIL: u32 = u32::MAX;

/// A FIFO of waiters, linked through [`Waiters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WaitList {
    head: u32,
    tail: u32,
}

impl WaitList {
    pub const EMPTY: WaitList = WaitList { head: NIL, tail: NIL };

    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// The per-waiter links and "is waiting" flags.
pub(super) struct Waiters {
    next: Vec<u32>,
    waiting: Vec<bool>,
}

impl Waiters {
    pub fn new(count: u32) -> Self {
        Waiters { next: vec![NIL; count as usize], waiting: vec![false; count as usize] }
    }

    pub fn contains(&self, waiter: Waiter) -> bool {
        waiter.index() < self.waiting.len()
    }

    pub fn is_waiting(&self, waiter: Waiter) -> bool {
        self.waiting[waiter.index()]
    }

    /// Appends `waiter`, which must not be waiting already.
    pub fn push(&mut self, list: &mut WaitList, waiter: Waiter) {
        debug_assert!(!self.waiting[waiter.index()], "{waiter} waits twice");
        self.waiting[waiter.index()] = true;
        self.next[waiter.index()] = NIL;
        if list.tail == NIL {
            list.head = waiter.0;
        } else {
            self.next[list.tail as usize] = waiter.0;
        }
        list.tail = waiter.0;
    }

    /// Empties `list` in FIFO order, calling `woken` for each waiter, which stops waiting.
    pub fn drain(&mut self, list: &mut WaitList, mut woken: impl FnMut(Waiter)) {
        let mut cursor = list.head;
        *list = WaitList::EMPTY;
        while cursor != NIL {
            let waiter = Waiter(cursor);
            cursor = self.next[waiter.index()];
            self.next[waiter.index()] = NIL;
            self.waiting[waiter.index()] = false;
            woken(waiter);
        }
    }

    /// The waiters in `list`, in order (for consistency checks).
    #[cfg(test)]
    pub fn members(&self, list: &WaitList) -> Vec<Waiter> {
        let mut out = Vec::new();
        let mut cursor = list.head;
        while cursor != NIL {
            out.push(Waiter(cursor));
            cursor = self.next[cursor as usize];
        }
        out
    }

    /// How many waiters are waiting (for consistency checks).
    #[cfg(test)]
    pub fn waiting_count(&self) -> usize {
        self.waiting.iter().filter(|&&w| w).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_reuse() {
        let mut waiters = Waiters::new(4);
        let mut a = WaitList::EMPTY;
        let mut b = WaitList::EMPTY;
        waiters.push(&mut a, Waiter(2));
        waiters.push(&mut b, Waiter(1));
        waiters.push(&mut a, Waiter(0));
        waiters.push(&mut a, Waiter(3));
        assert_eq!(waiters.members(&a), [Waiter(2), Waiter(0), Waiter(3)]);
        assert!(waiters.is_waiting(Waiter(3)));
        let mut woken = Vec::new();
        waiters.drain(&mut a, |w| woken.push(w));
        assert_eq!(woken, [Waiter(2), Waiter(0), Waiter(3)]);
        assert!(a.is_empty() && !waiters.is_waiting(Waiter(2)));
        assert_eq!(waiters.waiting_count(), 1);
        // A woken waiter can wait again, in another list.
        waiters.push(&mut b, Waiter(2));
        assert_eq!(waiters.members(&b), [Waiter(1), Waiter(2)]);
    }
}
