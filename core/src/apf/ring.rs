//! The record's memory as both sides see it, the ring's index arithmetic, and the guest's
//! consumer.

use super::layout::Layout;
use asyncpf_contract::apf::RING_ENTRIES;
use core::fmt;

/// The bytes of one vCPU's record, shared by the host and the guest. Offsets are relative to
/// the record's start; this module only ever passes offsets that are multiples of 8 and below
/// [`Layout::bytes`] of the record's layout, so an implementation may (and the tests' one does)
/// treat any other offset as a bug.
///
/// The hypervisor implements it over the host frames that hold the record's guest pages, the
/// guest kernel over its own mapping of the record, the tests over a byte array.
///
/// Each access is one single-copy-atomic, naturally aligned 64-bit little-endian load or store
/// (on arm64: `ldr`/`str` through a volatile pointer to Normal cacheable memory), because the
/// other side may access the same field at the same time. The two barriers order accesses
/// between the host and the guest, which run on different CPUs (inner shareable domain):
///
/// | side | sequence |
/// |---|---|
/// | host, post | read `ring_tail`; [`acquire`](Self::acquire); write entries; [`publish`](Self::publish); write `ring_head` |
/// | guest, drain | read `ring_head`; [`acquire`](Self::acquire); read entries; [`acquire`](Self::acquire); write `ring_tail` |
///
/// So the guest never reads an entry before the host's write of it, and the host never
/// overwrites an entry before the guest's read of it has completed.
pub trait RecordMemory {
    /// Reads the u64 at `offset`.
    fn read_u64(&mut self, offset: u64) -> u64;
    /// Writes `value` to the u64 at `offset`.
    fn write_u64(&mut self, offset: u64, value: u64);
    /// A store barrier: every write before it is observed by the other side before any write
    /// after it (arm64: `dmb ishst`). Between writing ring entries and writing `ring_head`.
    fn publish(&mut self);
    /// A load barrier: every read before it completes before any read or write after it
    /// (arm64: `dmb ishld`). After reading the other side's index and before the accesses
    /// that index allows.
    fn acquire(&mut self);
    /// Told after `token` was written to a ring entry (page_ready posted): the hypervisor's
    /// per-fault trace. Nothing by default.
    fn posted(&mut self, _token: u64) {}
}

/// The ring's indices are inconsistent: more than [`RING_ENTRIES`] entries between `tail` and
/// `head` (which includes `tail` ahead of `head`). For the host, the guest wrote garbage into
/// `ring_tail`; for the guest, something wrote garbage into the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingError {
    /// The producer's index (for the host: its own copy, never read back from the guest).
    pub head: u64,
    /// The consumer's index as read from the record.
    pub tail: u64,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apf: ring unusable: head {:#x}, tail {:#x} (more than {RING_ENTRIES} apart)", self.head, self.tail)
    }
}

/// The entries between the free-running indices `tail` and `head` (both wrap at 2^64), if
/// that is a possible fill level (0 to [`RING_ENTRIES`]).
pub const fn ring_used(head: u64, tail: u64) -> Result<u64, RingError> {
    let used = head.wrapping_sub(tail);
    if used <= RING_ENTRIES {
        Ok(used)
    } else {
        Err(RingError { head, tail })
    }
}

/// The guest's consumer: takes every entry from `ring_tail` up to `ring_head`, calls `f` with
/// each token in order, then writes the new `ring_tail` (only if it took something). Returns
/// the number of entries taken.
///
/// A token is either one the hypervisor gave in a page_not_present or
/// [`TOKEN_WAKE_ALL`](asyncpf_contract::apf::TOKEN_WAKE_ALL) (wake every task waiting for a
/// page). The guest calls this from its page_ready interrupt handler; an entry posted while it
/// runs raises the interrupt again, so one pass per interrupt loses nothing.
///
/// If the indices are inconsistent ([`RingError`]) nothing is taken and nothing is written.
pub fn drain<M: RecordMemory + ?Sized>(
    layout: Layout,
    mem: &mut M,
    mut f: impl FnMut(u64),
) -> Result<usize, RingError> {
    let tail = mem.read_u64(layout.ring_tail());
    let head = mem.read_u64(layout.ring_head());
    let used = ring_used(head, tail)?;
    if used == 0 {
        return Ok(0);
    }
    mem.acquire();
    for i in 0..used {
        f(mem.read_u64(layout.ring_entry(tail.wrapping_add(i))));
    }
    mem.acquire();
    mem.write_u64(layout.ring_tail(), head);
    Ok(used as usize)
}

/// The page_not_present slot, as the guest's SDEI handler reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotPresent {
    /// The token the task waits for.
    pub token: u64,
    /// The faulting guest virtual address.
    pub address: u64,
}

/// Reads the page_not_present slot (guest side, in the SDEI handler; the hypervisor wrote it
/// on the same CPU before it dispatched the event, so no barrier is needed).
pub fn read_not_present<M: RecordMemory + ?Sized>(layout: Layout, mem: &mut M) -> NotPresent {
    NotPresent { token: mem.read_u64(layout.pnp_token()), address: mem.read_u64(layout.pnp_address()) }
}
