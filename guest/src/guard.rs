//! Guarded memory accesses: while a task holds a [`Guard`] for an address range, a synchronous
//! external abort on one of its guarded loads or stores in that range is recorded and the
//! access skipped, instead of being fatal. Under memory overcommit this is how the hypervisor
//! says that it could not read a page back from its disk.
//!
//! Unlike `probe`, the marker belongs to the task, not the CPU, and IRQs stay enabled: a task
//! may be preempted or migrate between (or, once asynchronous page faults exist, during) its
//! accesses, which is exactly what the workloads using it must allow.

use crate::exceptions::{ec, TrapFrame};
use crate::percpu::{self, NO_TASK};
use crate::task::{TaskId, MAX_TASKS};
use crate::{arch, sched};
use asyncpf_guest::memcheck::Span;
use core::arch::asm;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// ESR_EL1.ISS.DFSC: synchronous external abort, not on a translation table walk.
const DFSC_SYNC_EXTERNAL: u64 = 0x10;
const DFSC_MASK: u64 = 0x3F;
/// ESR_EL1.ISS.FnV: FAR_EL1 is not valid.
const FNV: u64 = 1 << 10;
const NO_ADDRESS: u64 = u64::MAX;

/// One task's marker: the armed range, and the abort the handler caught, if any.
struct Marker {
    armed: AtomicBool,
    start: AtomicU64,
    end: AtomicU64,
    caught: AtomicBool,
    /// FAR_EL1 of the caught abort, or [`NO_ADDRESS`] if the syndrome said it is not valid.
    far: AtomicU64,
}

impl Marker {
    const fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
            caught: AtomicBool::new(false),
            far: AtomicU64::new(NO_ADDRESS),
        }
    }
}

/// Indexed by task slot. Only the owning task and the exception handler running in that task's
/// context touch a marker, so relaxed ordering suffices (a migrating task's accesses are
/// ordered by the scheduler's locks).
static MARKERS: [Marker; MAX_TASKS] = [const { Marker::new() }; MAX_TASKS];

/// An access that raised a synchronous external abort and was skipped.
#[derive(Clone, Copy, Debug)]
pub struct Aborted {
    /// FAR_EL1, when the syndrome says it is valid.
    pub far: Option<u64>,
}

/// The running task's permission to make guarded accesses in a range; disarms when dropped.
/// Not `Send`: the marker is the creating task's.
pub struct Guard {
    marker: &'static Marker,
    range: Span,
    _task_bound: PhantomData<*const ()>,
}

impl Guard {
    /// Arms the running task's marker for `range`: memory that no one else uses, mapped
    /// normal, EL1 read-write (the caller vouches for that when it calls `load`/`store`).
    pub fn arm(range: Span) -> Guard {
        let marker = &MARKERS[usize::from(sched::current().id)];
        marker.start.store(range.start, Ordering::Relaxed);
        marker.end.store(range.end, Ordering::Relaxed);
        marker.caught.store(false, Ordering::Relaxed);
        marker.armed.store(true, Ordering::Relaxed);
        Guard { marker, range, _task_bound: PhantomData }
    }

    /// What the handler caught since the last access, if anything.
    #[inline(always)]
    fn outcome(&self) -> Result<(), Aborted> {
        if !self.marker.caught.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.marker.caught.store(false, Ordering::Relaxed);
        let far = self.marker.far.load(Ordering::Relaxed);
        Err(Aborted { far: (far != NO_ADDRESS).then_some(far) })
    }

    /// Reads the 8-byte aligned word at `addr`, inside the guarded range.
    #[inline(always)]
    pub fn load(&self, addr: u64) -> Result<u64, Aborted> {
        debug_assert!(self.range.contains(addr) && addr.is_multiple_of(8));
        let value: u64;
        // SAFETY: `addr` is an aligned word in the armed range, which `arm`'s caller vouches is
        // mapped, readable at EL1 and used by nobody else, so the read has no effect on any
        // Rust object. It is one instruction: if it raises an external abort, `catch` skips
        // it and `outcome` reports it (the asm is not `nomem`, so the flag is read afresh).
        unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack, preserves_flags)) };
        self.outcome().map(|()| value)
    }

    /// Writes the 8-byte aligned word at `addr`, inside the guarded range.
    #[inline(always)]
    pub fn store(&self, addr: u64, value: u64) -> Result<(), Aborted> {
        debug_assert!(self.range.contains(addr) && addr.is_multiple_of(8));
        // SAFETY: as for `load`: the word is in memory that only this task uses and no Rust
        // object lives in; a skipped (aborted) store leaves it unchanged.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags)) };
        self.outcome()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.marker.armed.store(false, Ordering::Relaxed);
    }
}

/// Called for every synchronous exception from EL1: a synchronous external abort on a data
/// access by a task with an armed marker, at an address in its range (or with no valid
/// address), is recorded and the instruction skipped. Returns false for anything else.
pub fn catch(frame: &mut TrapFrame) -> bool {
    let esr = arch::esr();
    if esr >> 26 != ec::DATA_ABORT_SAME_EL || esr & DFSC_MASK != DFSC_SYNC_EXTERNAL {
        return false;
    }
    let current = percpu::this().current.load(Ordering::Relaxed);
    if current == NO_TASK {
        return false;
    }
    let marker = &MARKERS[usize::from(current as TaskId)];
    if !marker.armed.load(Ordering::Relaxed) {
        return false;
    }
    let far = (esr & FNV == 0).then(arch::far);
    let range = Span { start: marker.start.load(Ordering::Relaxed), end: marker.end.load(Ordering::Relaxed) };
    if far.is_some_and(|a| !range.contains(a)) {
        return false;
    }
    marker.far.store(far.unwrap_or(NO_ADDRESS), Ordering::Relaxed);
    marker.caught.store(true, Ordering::Relaxed);
    frame.elr += 4;
    true
}
