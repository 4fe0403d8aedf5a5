//! Pure, architecture-independent parts of the asyncpf guest kernel.
//!
//! Everything in this library is plain data-structure logic without assembly or hardware
//! access, so that it builds and is unit-tested on the host (`cargo test -p asyncpf-guest --lib`)
//! as well as being linked into the bare-metal kernel binary (`src/main.rs`). These modules are
//! candidates for moving into `asyncpf-core` once that crate's shape settles.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod apfsession;
pub mod cmdline;
pub mod hostile_policy;
pub mod json;
pub mod memcheck;
#[cfg(test)]
mod model;
pub mod placement;
pub mod rng;
pub mod runqueue;
pub mod sleepq;
pub mod taskstate;
pub mod waiters;
