//! The asyncpf guest kernel: an arm64 Linux-style Image that runs at EL1 on every vCPU, with
//! a preemptive SMP scheduler for EL1 and EL0 tasks, and the scenarios the runner asks for on
//! the command line. See `boot` for the entry and `scenarios` for what a run does.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod apf;
mod arch;
mod boot;
mod console;
mod dt;
mod exceptions;
mod gic;
mod guard;
mod mm;
mod mmio;
mod percpu;
mod probe;
mod psci;
mod report;
mod scenarios;
mod sched;
mod sync;
mod syscall;
mod task;
mod timer;
mod trace;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    report::fail(format_args!("panic: {info}"))
}
