//! The table of in-flight I/O requests: at most `queue_depth` at a time, each with an id, a
//! kind, a page and a frame, plus what the engine needs when it completes (the faults waiting
//! for it, whether one of them wants to write, how often a read has failed).

use super::ids::{FrameNo, PageNo, RequestId};
use super::waiters::WaitList;
use alloc::vec::Vec;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read the page's disk slot into the frame.
    Read,
    /// Write the frame to the page's disk slot.
    Write,
}

/// One I/O request for the caller to submit: transfer [`PAGE_SIZE`](super::PAGE_SIZE) bytes
/// between `frame` and the disk slot of `page` (starting at sector [`PageNo::sector`]), tagged
/// with `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub kind: RequestKind,
    pub page: PageNo,
    pub frame: FrameNo,
}

/// A request in flight and its bookkeeping.
pub(super) struct Entry {
    pub request: Request,
    /// Faults waiting for this request: for a read, everyone who faulted on the page; for a
    /// write-back, faults on the page that arrived while it was being written.
    pub waiters: WaitList,
    /// A waiting fault is a write: map the page writable (and dirty) when it completes.
    pub want_write: bool,
    /// Failed attempts so far (reads only; a failed write completes the request).
    pub failures: u32,
}

pub(super) struct Requests {
    entries: Vec<Option<Entry>>,
    /// Ids not in flight, taken from the end.
    free: Vec<RequestId>,
}

impl Requests {
    pub fn new(depth: u16) -> Self {
        Requests { entries: (0..depth).map(|_| None).collect(), free: (0..depth).rev().map(RequestId).collect() }
    }

    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    pub fn in_flight(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// How many more requests may be started.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Starts a request, if the queue has room.
    pub fn start(&mut self, kind: RequestKind, page: PageNo, frame: FrameNo) -> Option<Request> {
        let id = self.free.pop()?;
        let request = Request { id, kind, page, frame };
        self.entries[id.index()] = Some(Entry { request, waiters: WaitList::EMPTY, want_write: false, failures: 0 });
        Some(request)
    }

    /// The request `id` if it is in flight and of `kind`.
    pub fn get_mut(&mut self, id: RequestId, kind: RequestKind) -> Option<&mut Entry> {
        self.entries.get_mut(id.index())?.as_mut().filter(|e| e.request.kind == kind)
    }

    pub fn get(&self, id: RequestId) -> Option<&Entry> {
        self.entries.get(id.index())?.as_ref()
    }

    /// Completes request `id` (which must be in flight) and frees its id.
    pub fn finish(&mut self, id: RequestId) -> Entry {
        let entry = self.entries[id.index()].take().expect("finishing a request that is not in flight");
        self.free.push(id);
        entry
    }

    /// The requests in flight (for consistency checks).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_reused() {
        let mut requests = Requests::new(2);
        let a = requests.start(RequestKind::Read, PageNo(1), FrameNo(0)).unwrap();
        let b = requests.start(RequestKind::Write, PageNo(2), FrameNo(1)).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(requests.available(), 0);
        assert!(requests.start(RequestKind::Read, PageNo(3), FrameNo(2)).is_none());
        assert!(requests.get_mut(a.id, RequestKind::Write).is_none());
        assert!(requests.get_mut(a.id, RequestKind::Read).is_some());
        assert!(requests.get_mut(RequestId(2), RequestKind::Read).is_none());
        assert_eq!(requests.finish(a.id).request, a);
        assert_eq!(requests.in_flight(), 1);
        assert!(requests.get(a.id).is_none());
        let c = requests.start(RequestKind::Read, PageNo(3), FrameNo(2)).unwrap();
        assert_eq!(c.id, a.id);
    }
}
