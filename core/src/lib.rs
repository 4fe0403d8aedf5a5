//! Portable, host-testable logic of the asyncpf hypervisor: everything that needs no hardware
//! access and can therefore be tested exhaustively with `cargo test` on the host.
//!
//! * [`image`]: the arm64 Linux kernel `Image` header and where to load it.
//! * [`options`]: the hypervisor's command line.
//! * [`features`]: the EL2 enables for the CPU features the guest is offered.
//! * [`pmu`]: the guest's PMUv3 (MDCR_EL2, the overflow interrupt's level).
//! * [`fdt`]: the device tree the guest boots with.
//! * [`mpidr`]: MPIDR_EL1 affinity fields.
//! * [`vgic`]: the emulated GICv3 distributor and redistributors.
//! * [`hypercall`]: the answers to the guest's SMCCC, PSCI and vendor-service calls.
//! * [`trap`]: decoding exit syndromes, encoding injected exceptions.
//! * [`sgi`]: the targets of an SGI the guest generates.
//! * [`ratelimit`]: how often a guest-provoked diagnostic is printed.
//! * [`sdei`]: the SDEI dispatcher (DEN0054) the hypervisor offers its guest.
//! * [`apf`]: asynchronous page faults: the shared record, tokens, the completion ring.
//! * [`console`]: how a guest's console output is shown on the host console.
//! * [`handoff`]: how the pager hands a resolved fault, a kick or its lock between CPUs
//!   without losing a wake-up (with loom models).
//! * [`latency`]: the backing store's latency model in time (timers; holding virtual time).
//! * [`disk`]: the backing disk's request table (slots, descriptor tokens, which requests are
//!   due and in what order).
//! * [`trace`]: the per-fault trace: records, the bounded per-CPU log, the trace area's layout.
//!
//! The crate is `no_std` and has no `unsafe`; it builds for `aarch64-unknown-none` as well as
//! for the host. The modules that keep tables on the heap (the overcommit engine, the vGIC model,
//! SDEI, the disk's requests, the device tree, options, histograms, APF's per-vCPU state) need
//! `alloc`, behind the default feature of that name; the guest kernel, which has no heap, uses the
//! crate without it (for the APF record's layout and ring consumer).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod apf;
#[cfg(feature = "alloc")]
pub mod console;
#[cfg(feature = "alloc")]
pub mod disk;
#[cfg(feature = "alloc")]
pub mod fdt;
pub mod features;
pub mod handoff;
#[cfg(feature = "alloc")]
pub mod histogram;
pub mod hypercall;
pub mod image;
pub mod latency;
pub mod lockorder;
pub mod mpidr;
#[cfg(feature = "alloc")]
pub mod options;
#[cfg(feature = "alloc")]
pub mod overcommit;
pub mod pmu;
pub mod ratelimit;
#[cfg(feature = "alloc")]
pub mod sdei;
pub mod sgi;
pub mod trace;
pub mod trap;
#[cfg(feature = "alloc")]
pub mod vgic;
