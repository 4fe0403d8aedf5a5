//! The hypervisor's token slots: which asynchronous faults of one vCPU the pager's engine
//! waits for, and what their completions must do ([`TokenSlots`]); and the engine waiter ids
//! that name them ([`WaiterIds`]).
//!
//! A stage-2 fault that may be resolved asynchronously reserves a slot before it goes to the
//! pager ([`TokenSlots::reserve`]), whose engine then waits with the slot's waiter id if the
//! fault blocks. The vCPU's APF lock is not held in between, so the page may come back (on
//! another CPU) before the vCPU delivers page_not_present:
//!
//! ```text
//!           reserve                     deliver(token)                completion
//!  Free ───────────> Reserved ──────────────────────────> InFlight(T) ───────────> Free  (T's page_ready)
//!   ^                 │  │  │ orphan (not deliverable)                  completion
//!   │  release        │  │  └──────────────────────────> Orphan ─────────────────> Free  (nothing)
//!   ├─────────────────┘  │ completion first
//!   │  take_ready        v
//!   └──────────────── Ready                              (the fault just retries)
//! ```
//!
//! A slot is never handed out again before it is Free; a blocked fault's slot is freed by
//! exactly one of its completion (InFlight, Orphan) or the vCPU's look at it (Ready); and only
//! an InFlight slot hands its token to the completion. Ending the session (APF_DISABLE,
//! CPU_OFF) leaves the slots alone: the engine still completes each waiter once, and
//! [`ApfVcpu::complete`](super::ApfVcpu::complete) posts nothing for a token of an ended
//! session.

use super::Token;

/// Token slots per vCPU: engine waiter ids the pager sets aside for each vCPU's asynchronous
/// faults, after the vCPUs' own ids (so the tokens a vCPU may have in flight).
pub const SLOTS_PER_VCPU: usize = 16;

/// One token slot ([`TokenSlots`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Free,
    /// Reserved by a fault that may be resolved asynchronously; the pager decides whether it
    /// blocks.
    Reserved,
    /// Reserved, and the page came back before page_not_present was delivered: the fault just
    /// retries.
    Ready,
    /// page_not_present delivered with this token: its completion posts page_ready.
    InFlight(Token),
    /// The fault blocked but could not be delivered (resolved synchronously): its completion
    /// only frees the slot.
    Orphan,
}

/// What a completion found in its slot ([`TokenSlots::complete`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The fault was delivered with this token: complete it (post its page_ready). The slot is
    /// free.
    Token(Token),
    /// Not delivered yet: the slot is now [`Slot::Ready`], and the delivery finds the page back.
    Early,
    /// Nothing to post (an orphan, or a slot that was not waited for). The slot is free.
    Nothing,
}

/// The token slots of one vCPU. Calls are serialized by the caller (the vCPU's APF lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSlots {
    slots: [Slot; SLOTS_PER_VCPU],
}

impl Default for TokenSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenSlots {
    /// Every slot free.
    pub const fn new() -> Self {
        TokenSlots { slots: [Slot::Free; SLOTS_PER_VCPU] }
    }

    /// The state of slot `slot` (below [`SLOTS_PER_VCPU`]).
    pub fn get(&self, slot: usize) -> Slot {
        self.slots[slot]
    }

    /// Slots that are not free.
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|&&s| s != Slot::Free).count()
    }

    /// A fault may be resolved asynchronously: reserve the lowest free slot, or `None` if every
    /// slot is busy (the fault is then resolved synchronously).
    pub fn reserve(&mut self) -> Option<usize> {
        let slot = self.slots.iter().position(|&s| s == Slot::Free)?;
        self.slots[slot] = Slot::Reserved;
        Some(slot)
    }

    /// The reserved fault did not block (or was aborted): nothing waits for it; free the slot.
    pub fn release(&mut self, slot: usize) {
        self.slots[slot] = Slot::Free;
    }

    /// The reserved fault blocked; before delivering it: if its page came back meanwhile
    /// ([`Slot::Ready`]), free the slot and return true (the fault retries).
    pub fn take_ready(&mut self, slot: usize) -> bool {
        if self.slots[slot] == Slot::Ready {
            self.slots[slot] = Slot::Free;
            true
        } else {
            false
        }
    }

    /// page_not_present was delivered for the reserved fault with `token`.
    pub fn deliver(&mut self, slot: usize, token: Token) {
        self.slots[slot] = Slot::InFlight(token);
    }

    /// The reserved fault blocked but is not delivered: its completion only frees the slot.
    pub fn orphan(&mut self, slot: usize) {
        self.slots[slot] = Slot::Orphan;
    }

    /// The page of the fault waiting in `slot` is back.
    pub fn complete(&mut self, slot: usize) -> Completion {
        let completion = match self.slots[slot] {
            Slot::Reserved => {
                self.slots[slot] = Slot::Ready;
                return Completion::Early;
            }
            Slot::InFlight(token) => Completion::Token(token),
            Slot::Orphan | Slot::Ready | Slot::Free => Completion::Nothing,
        };
        self.slots[slot] = Slot::Free;
        completion
    }
}

/// The engine waiter ids of a VM with `vcpus` vCPUs: ids `0..vcpus` are the vCPUs' own (their
/// synchronous faults), then [`SLOTS_PER_VCPU`] per vCPU for its token slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaiterIds {
    vcpus: usize,
}

/// Whose waiter id it is ([`WaiterIds::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaiterOf {
    /// A synchronous fault of this vCPU.
    Vcpu(usize),
    /// Token slot `slot` of vCPU `vcpu`.
    Slot { vcpu: usize, slot: usize },
}

impl WaiterIds {
    pub const fn new(vcpus: usize) -> Self {
        WaiterIds { vcpus }
    }

    /// How many ids there are.
    pub const fn count(self) -> u32 {
        (self.vcpus * (1 + SLOTS_PER_VCPU)) as u32
    }

    /// The id of token slot `slot` of vCPU `vcpu`.
    pub const fn slot(self, vcpu: usize, slot: usize) -> u32 {
        (self.vcpus + vcpu * SLOTS_PER_VCPU + slot) as u32
    }

    /// Whose id `waiter` is; `None` beyond [`Self::count`].
    pub fn decode(self, waiter: u32) -> Option<WaiterOf> {
        let waiter = waiter as usize;
        let Some(i) = waiter.checked_sub(self.vcpus) else {
            return Some(WaiterOf::Vcpu(waiter));
        };
        let vcpu = i / SLOTS_PER_VCPU;
        (vcpu < self.vcpus).then_some(WaiterOf::Slot { vcpu, slot: i % SLOTS_PER_VCPU })
    }
}

#[cfg(test)]
mod tests;
