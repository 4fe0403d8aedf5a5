//! Asynchronous page faults (APF), host side: the per-vCPU shared record, the tokens, the
//! decision whether to dispatch page_not_present, and the completion ring that carries
//! page_ready; plus the guest's consumer of that ring ([`drain`]), so both sides share one
//! implementation. This module only decides and writes the record through [`RecordMemory`];
//! the hypervisor does the rest: it answers the `APF_*` hvc calls, dispatches the SDEI event
//! ([`crate::sdei`]), fetches the page ([`crate::overcommit`]), and raises the page_ready PPI
//! ([`PAGE_READY_INTID`](asyncpf_contract::apf::PAGE_READY_INTID)) when a call says it posted
//! something.
//!
//! # The record
//!
//! `APF_ENABLE(record_ipa, flags)` registers a per-vCPU record in guest memory
//! ([`validate_enable`]: known flags only, aligned to the granule, entirely inside guest RAM).
//! Its [`Layout`] depends on the writeback granule, the largest CTR_EL0.CWG over all physical
//! CPUs ([`cwg_bytes`]), so that host-written and guest-written fields never share a granule:
//!
//! | offset | writer | field |
//! |---|---|---|
//! | 0, 8 | host | `pnp_token`, `pnp_address`: the page_not_present being delivered |
//! | granule | host | `ring_head`: entries produced (free-running u64) |
//! | 2 · granule | guest | `ring_tail`: entries consumed (free-running u64) |
//! | 3 · granule | host | the ring: `RING_ENTRIES` (64) tokens, position `p` at entry `p % 64` |
//!
//! # Life of a fault
//!
//! ```text
//!  stage-2 fault ──may_dispatch?──no──> resolve synchronously (block the vCPU)
//!        │ yes
//!        v
//!  start(): token T, pnp slot written ──> SDEI page_not_present ──> guest handler
//!                                                                   │        │
//!                         decline(T): resolve synchronously <─declines   accepts─> accept(T)
//!                                                                                   │
//!  page back ──> complete(T) ──> backlog ──(room in ring)──> ring entry, ring_head ──> PPI
//!                                                                                   │
//!                                  guest IRQ handler: drain(): wake T's task, write ring_tail
//! ```
//!
//! Several faults on one page (from one or several vCPUs) share one fetch; each of their
//! tokens is completed on its own [`ApfVcpu`] ([`Token::vcpu`] names it), so each waiting
//! task gets its own page_ready on the vCPU that took its fault.
//!
//! # Rules, and why
//!
//! * **The decision table** ([`ApfVcpu::may_dispatch`]): page_not_present is dispatched only
//!   if APF is enabled; the faulting page is not known to be unreadable (its last read
//!   failed for good: the access must wait and take its abort synchronously, see
//!   [`Refusal::PageUnreadable`]); the SDEI event is registered, enabled, unmasked and not running
//!   ([`DispatchInputs::sdei_ready`], from the SDEI dispatcher); no other page_not_present of
//!   this vCPU is still being delivered; the fault came from EL0, or from EL1 with PSTATE.I
//!   clear and without [`FLAG_USER_ONLY`](asyncpf_contract::apf::FLAG_USER_ONLY); and the
//!   vCPU has fewer than its limit of tokens in flight; and waiting is not cheaper than
//!   parking, by the measured costs of [`cost`] (a fast store is waited for). Otherwise
//!   ([`Refusal`]) the fault is resolved synchronously, which is always correct.
//! * **The limit** counts tokens *in flight*: outstanding ones (being delivered, or accepted
//!   and waiting for their page) plus completions waiting in the backlog. It is a parameter
//!   from 1 to [`MAX_LIMIT`] = `RING_ENTRIES - 1` = 63. So the backlog never holds more than
//!   `limit` completions plus one `TOKEN_WAKE_ALL`, at most `RING_ENTRIES` entries: whenever
//!   the guest has emptied its ring, everything the host holds back fits at once, and the
//!   host's memory per vCPU is fixed at construction (nothing is allocated afterwards).
//! * **Tokens** are `sequence << 16 | vcpu` with the sequence from 1 to [`MAX_SEQUENCE`]: never
//!   0 ([`TOKEN_NONE`](asyncpf_contract::apf::TOKEN_NONE)), never all ones
//!   ([`TOKEN_WAKE_ALL`](asyncpf_contract::apf::TOKEN_WAKE_ALL)), unique in the VM without
//!   shared state. When the sequence wraps (after 2^48 - 2 faults of one vCPU) a number that
//!   is still in flight is skipped, so a token is never issued twice while in use.
//! * **Accept before page_ready.** The hypervisor tells the module how the SDEI handler
//!   answered ([`ApfVcpu::accept`], [`ApfVcpu::decline`]). A completion that arrives before
//!   the answer is held ([`Fate::Held`]) and posted when the handler accepts; if it declines,
//!   nothing is posted. So a declined token never gets a page_ready, and an accepted one
//!   gets exactly one. The page_not_present slot is written only when no delivery is in
//!   progress on the vCPU, so a running handler never sees it change.
//! * **The ring is never overrun.** The host posts an entry only into room the guest has
//!   freed: `head - tail < RING_ENTRIES`, with `tail` read from the record and `head` the
//!   host's own copy (never read back, so the guest cannot move it). A completion that does
//!   not fit waits in the **backlog**, in order: a new completion always goes behind the
//!   backlog, so page_ready entries appear in the ring in completion order. The host retries
//!   ([`ApfVcpu::flush_backlog`]) whenever the guest may have made room (a page_ready EOI, any
//!   exit of that vCPU).
//! * **Ordering.** The host writes the entries, then [`RecordMemory::publish`] (a store
//!   barrier), then `ring_head`; it reads `ring_tail` and then [`RecordMemory::acquire`]
//!   before it writes entries. The guest mirrors it ([`drain`]).
//! * **Wake-all.** [`ApfVcpu::disable`] and [`ApfVcpu::power_off`] drop every token in flight
//!   (outstanding or in the backlog; their completions become stale, [`TokenError::Unknown`])
//!   and queue one `TOKEN_WAKE_ALL` instead, which wakes every task waiting for a page,
//!   theirs included. It respects ring space like any entry: if the ring is full it waits in
//!   the backlog, and the vCPU stays [`Status::Closing`] (the host still writes that one entry
//!   to the record) until it is posted. No token is issued between a disable and the posting
//!   of its wake-all, so a wake-all covers exactly the tasks parked before it, and the guest
//!   never gets a page_ready for a task the wake-all already woke. The guest keeps the record
//!   (and drains it) after `APF_DISABLE` until it has consumed the `TOKEN_WAKE_ALL`, the last
//!   entry the host writes there.
//! * **`APF_ENABLE` begins a new session**, also when APF is enabled or closing: whatever is
//!   in flight, and a wake-all still waiting, is dropped; nothing of an earlier session is
//!   ever posted to the new record. The guest knows when it enables, so it wakes the tasks
//!   still waiting from an earlier session itself, and no longer drains older records. The
//!   new ring starts empty at the guest's `ring_tail`: the host writes `ring_head =
//!   ring_tail`, whatever the guest left there.
//! * **A hostile guest only hurts itself.** Every request is validated before it is used;
//!   offsets stay inside the record; garbage in `ring_tail` (`head - tail > RING_ENTRIES`,
//!   `tail` ahead of `head` included) makes the host post nothing (the ring counts as
//!   full) until the guest writes a sensible value again, with no loop and no panic. It is
//!   reported once per session ([`ApfVcpu::take_ring_error`], for one log line) and counted
//!   ([`Counters::ring_errors`]). Meanwhile completions queue up to the limit, and then
//!   faults are resolved synchronously. A wrong but plausible `ring_tail` cannot be told
//!   from a right one: the host may then overwrite entries the guest has not read, but
//!   still only inside the ring, and still in completion order.
//!
//! # How the hypervisor drives it
//!
//! Calls on one vCPU's [`ApfVcpu`] are serialized by the caller (a lock per vCPU; a
//! completion may come from another CPU's disk interrupt). Every call that writes the record
//! takes a [`RecordMemory`] over [`ApfVcpu::record`]'s range, whose pages (a record may span
//! two or three 4 KiB pages) the hypervisor keeps resident while `record()` is `Some`: one
//! record per vCPU, also while a guest that never makes room keeps it closing. Every call
//! that returns a number of entries posted wants the page_ready PPI raised if it is not 0.
//!
//! # The guest's side
//!
//! * The SDEI handler reads the slot ([`read_not_present`]), parks the current task on the
//!   token and accepts, or declines when it cannot schedule.
//! * The page_ready interrupt handler calls [`drain`] and wakes the task of each token; a
//!   token may arrive before its task is fully parked (the handler runs as soon as the
//!   guest unmasks interrupts after accepting). `TOKEN_WAKE_ALL` wakes every task of this
//!   vCPU that waits for a page; they retry their access.
//! * After `APF_DISABLE` it keeps the record and drains it until it has seen
//!   `TOKEN_WAKE_ALL`. After a successful `APF_ENABLE` it wakes every task still waiting
//!   from an earlier session and drains only the new record.
//!
//! ```
//! use asyncpf_core::apf::*;
//! use asyncpf_contract::apf::TOKEN_WAKE_ALL;
//!
//! // The record's bytes; the hypervisor's implementation writes host frames instead.
//! struct Bytes(Vec<u8>);
//! impl RecordMemory for Bytes {
//!     fn read_u64(&mut self, offset: u64) -> u64 {
//!         let at = offset as usize;
//!         u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
//!     }
//!     fn write_u64(&mut self, offset: u64, value: u64) {
//!         let at = offset as usize;
//!         self.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
//!     }
//!     fn publish(&mut self) { /* dmb ishst */ }
//!     fn acquire(&mut self) { /* dmb ishld */ }
//! }
//!
//! let layout = Layout::new(cwg_bytes(4)).unwrap(); // CTR_EL0.CWG = 4: 64 bytes
//! let mut vcpu = ApfVcpu::new(0, MAX_LIMIT).unwrap();
//!
//! // APF_ENABLE(0x7fff_0000, 0) from vCPU 0, with 1 GiB of RAM at 0x4000_0000.
//! let record = match validate_enable(0x7fff_0000, 0, layout, 0x4000_0000..0x8000_0000) {
//!     Ok(record) => record,
//!     Err(error) => panic!("answer {}: {error}", error.smccc()),
//! };
//! let mut mem = Bytes(vec![0; layout.bytes() as usize]);
//! vcpu.enable(record, &mut mem);
//!
//! // A stage-2 fault from EL0 on a page that is on disk:
//! let inputs =
//!     DispatchInputs { sdei_ready: true, from_el0: true, irqs_masked: false, page_unreadable: false, cheaper_to_wait: false };
//! let token = match vcpu.start(inputs, 0xffff_0000_1234_5000, &mut mem) {
//!     Ok(token) => token, // dispatch the SDEI event; start the read with `token` waiting
//!     Err(_refusal) => unreachable!("block the vCPU until the page is back"),
//! };
//! vcpu.accept(token, &mut mem).unwrap(); // the handler did COMPLETE_AND_RESUME
//!
//! // The read completed:
//! let delivery = vcpu.complete(token, &mut mem).unwrap();
//! assert_eq!(delivery, Delivery { fate: Fate::Posted, posted: 1 }); // raise the PPI
//!
//! // The guest's page_ready handler:
//! let mut woken = Vec::new();
//! assert_eq!(drain(layout, &mut mem, |t| woken.push(t)), Ok(1));
//! assert_eq!(woken, [token.get()]);
//!
//! // APF_DISABLE: the wake-all is posted (raise the PPI).
//! assert_eq!(vcpu.disable(&mut mem), 1);
//! drain(layout, &mut mem, |t| assert_eq!(t, TOKEN_WAKE_ALL)).unwrap();
//! assert_eq!(vcpu.status(), Status::Disabled);
//! ```

#[cfg(feature = "alloc")]
pub mod cost;
mod layout;
mod ring;
#[cfg(feature = "alloc")]
pub mod slots;
#[cfg(feature = "alloc")]
mod vcpu;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use layout::{
    cwg_bytes, machine_granule, pin_quota, validate_enable, validate_pin, EnableError, GranuleError, Layout, PinError,
    Record,
};
pub use ring::{drain, read_not_present, ring_used, NotPresent, RecordMemory, RingError};
#[cfg(feature = "alloc")]
pub use vcpu::{
    ApfVcpu, Counters, Delivery, DispatchInputs, Fate, LimitError, PowerOff, Refusal, Status, Token, TokenError,
    MAX_LIMIT, MAX_SEQUENCE,
};
