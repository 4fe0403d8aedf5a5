//! The backing disk's request table: the bookkeeping of the hypervisor's virtio-blk driver
//! (`hypervisor/src/backing`), which applies it to the device. A request takes a free slot
//! when it is submitted ([`RequestTable::allocate`]), waits there if the device's queue is full
//! ([`State::Queued`]), is at the device under a descriptor token ([`State::AtDevice`]), and
//! once the device finished it is held until its latency deadline ([`State::Held`]), when it is
//! reported ([`RequestTable::report_due`]) and its slot is free again.
//!
//! ```text
//!  allocate ──> Queued ──started(token)──> AtDevice{token} ──finished──> Held{result} ──report_due──> Free
//!                 │ unqueue (the device refused it at once, host time)
//!                 └──────────────────────────────────────────────────────────────────────────────> Free
//! ```
//!
//! What the table decides:
//! * **Slots**: the lowest free one; none when [`RequestTable::CAPACITY`] requests are
//!   outstanding.
//! * **Which queued request goes to the device next**: the earliest deadline, ties by slot.
//! * **Descriptor tokens**: a completion names its request by the virtqueue token it was
//!   queued under; a hint per token finds its slot without a search, checked against the slot's
//!   state (a token is reused by the device once its chain is returned).
//! * **Which requests are due at time `t`, in what order**: every held request whose deadline
//!   is at or before `t`, earliest deadline first, ties by slot; in order mode (virtual time)
//!   strictly in deadline order: a request due but not finished by the device stops the
//!   reporting of every later one, so that the order never depends on the host.
//! * **The earliest deadline** of an outstanding request, cached between reports.
//!
//! Times are ticks of the hypervisor's counter (`u64`); a request's result is the caller's type.

#[cfg(test)]
mod tests;

/// Descriptor tokens whose slot the table remembers (a virtqueue has at most this many
/// descriptors that the hypervisor uses; the driver's has 16).
pub const TOKEN_HINTS: usize = 64;

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State<R> {
    Free,
    /// Accepted (its deadline runs), not yet at the device: it goes there as soon as the
    /// device's queue has room ([`RequestTable::next_queued`]).
    Queued,
    /// At the device under this virtqueue token.
    AtDevice {
        token: u16,
    },
    /// Finished by the device, waiting for its deadline.
    Held {
        result: R,
    },
}

/// The request table of `N` slots (`N` ≤ 256), with results of type `R`.
#[derive(Clone, Debug)]
pub struct RequestTable<R, const N: usize> {
    states: [State<R>; N],
    deadlines: [u64; N],
    in_flight: usize,
    at_device: usize,
    /// Requests in [`State::Queued`]: with none, [`Self::next_queued`] does not scan.
    queued: usize,
    /// The slot of the request at the device under each descriptor token (a hint, checked
    /// against the slot's state).
    token_hints: [u8; TOKEN_HINTS],
    /// [`Self::earliest_due`], while known (`None`: a request was reported since; scan again).
    earliest: Option<Option<u64>>,
}

impl<R: Copy, const N: usize> Default for RequestTable<R, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Copy, const N: usize> RequestTable<R, N> {
    /// Slots in the table.
    pub const CAPACITY: usize = N;

    /// Every slot free.
    pub const fn new() -> Self {
        const { assert!(N <= 256, "slots are remembered as u8") };
        RequestTable {
            states: [State::Free; N],
            deadlines: [0; N],
            in_flight: 0,
            at_device: 0,
            queued: 0,
            token_hints: [u8::MAX; TOKEN_HINTS],
            earliest: Some(None),
        }
    }

    /// The state of slot `index`.
    pub fn state(&self, index: usize) -> State<R> {
        self.states[index]
    }

    /// The deadline of slot `index` (meaningful while it is not free).
    pub fn deadline(&self, index: usize) -> u64 {
        self.deadlines[index]
    }

    /// Requests allocated and not yet reported (or unqueued).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests at the device.
    pub fn at_device(&self) -> usize {
        self.at_device
    }

    /// Requests queued, not yet at the device.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// A new request with this deadline: the lowest free slot, now [`State::Queued`]; `None`
    /// if every slot is in use.
    pub fn allocate(&mut self, deadline: u64) -> Option<usize> {
        let index = self.states.iter().position(|s| matches!(s, State::Free))?;
        self.states[index] = State::Queued;
        self.deadlines[index] = deadline;
        self.queued += 1;
        self.in_flight += 1;
        if let Some(earliest) = &mut self.earliest {
            *earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
        }
        Some(index)
    }

    /// The queued request of slot `index` is dropped before it reached the device (the device
    /// refused it at once): its slot is free, as if it had never been allocated.
    pub fn unqueue(&mut self, index: usize) {
        debug_assert!(matches!(self.states[index], State::Queued));
        self.states[index] = State::Free;
        self.queued -= 1;
        self.in_flight -= 1;
        // The cached earliest deadline may have been this one's.
        self.earliest = None;
    }

    /// The queued request to put on the device next: the earliest deadline, ties by slot.
    pub fn next_queued(&self) -> Option<usize> {
        if self.queued == 0 {
            return None;
        }
        (0..N).filter(|&i| matches!(self.states[i], State::Queued)).min_by_key(|&i| self.deadlines[i])
    }

    /// The queued request of slot `index` is at the device under descriptor `token`.
    pub fn started(&mut self, index: usize, token: u16) {
        debug_assert!(matches!(self.states[index], State::Queued));
        self.states[index] = State::AtDevice { token };
        self.at_device += 1;
        self.queued -= 1;
        if let Some(hint) = self.token_hints.get_mut(usize::from(token)) {
            *hint = index as u8;
        }
    }

    /// The slot of the request at the device under descriptor `token`.
    pub fn slot_of_token(&self, token: u16) -> Option<usize> {
        let at_device = |i: usize| matches!(self.states.get(i), Some(State::AtDevice { token: t }) if *t == token);
        match self.token_hints.get(usize::from(token)).map(|&i| usize::from(i)) {
            Some(hinted) if at_device(hinted) => Some(hinted),
            _ => (0..N).find(|&i| at_device(i)),
        }
    }

    /// The device finished the request of slot `index` (at the device) with `result`: held
    /// until its deadline.
    pub fn finished(&mut self, index: usize, result: R) {
        debug_assert!(matches!(self.states[index], State::AtDevice { .. }));
        self.states[index] = State::Held { result };
        self.at_device -= 1;
    }

    /// Report the requests due at `now`: each held request whose deadline is at or before
    /// `now`, earliest deadline first, ties by slot, is freed and given to `report` (slot,
    /// result). `in_order` (virtual time): strictly in deadline order, so the first request
    /// due that the device has not finished stops the reporting.
    pub fn report_due(&mut self, now: u64, in_order: bool, mut report: impl FnMut(usize, R)) {
        if self.in_flight == 0 {
            return;
        }
        // One pass over the slots (this runs at every poll): the candidates, earliest deadline
        // first, ties by slot.
        let mut due = [0u8; N];
        let mut count = 0;
        for (index, state) in self.states.iter().enumerate() {
            let candidate = self.deadlines[index] <= now
                && if in_order { !matches!(state, State::Free) } else { matches!(state, State::Held { .. }) };
            if candidate {
                due[count] = index as u8;
                count += 1;
            }
        }
        let due = &mut due[..count];
        due.sort_unstable_by_key(|&index| (self.deadlines[usize::from(index)], index));
        for &index in due.iter() {
            let index = usize::from(index);
            let State::Held { result } = self.states[index] else {
                break;
            };
            self.states[index] = State::Free;
            self.in_flight -= 1;
            self.earliest = None;
            report(index, result);
        }
    }

    /// The earliest deadline of a held request: when a report is next due. Requests still at
    /// the device are not counted; their completion comes first.
    pub fn next_deadline(&self) -> Option<u64> {
        (0..N).filter(|&i| matches!(self.states[i], State::Held { .. })).map(|i| self.deadlines[i]).min()
    }

    /// The earliest deadline of any outstanding request (queued, at the device or held): the
    /// earliest time a completion can be reported. Cached until the next report.
    pub fn earliest_due(&mut self) -> Option<u64> {
        if let Some(earliest) = self.earliest {
            return earliest;
        }
        let earliest = self.outstanding().map(|(deadline, _)| deadline).min();
        self.earliest = Some(earliest);
        earliest
    }

    /// Every outstanding request, by slot: its deadline, and whether the device finished it.
    pub fn outstanding(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.states
            .iter()
            .zip(&self.deadlines)
            .filter(|(s, _)| !matches!(s, State::Free))
            .map(|(s, &d)| (d, matches!(s, State::Held { .. })))
    }
}
