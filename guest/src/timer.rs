//! The EL1 virtual timer: a periodic scheduler tick, and the monotonic clock.

use crate::{arch, percpu, sched};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Scheduler ticks per second (each tick ends the running task's time slice).
pub const TICK_HZ: u64 = 100;

/// Counter ticks per scheduler tick (CNTFRQ / TICK_HZ), set at boot.
static PERIOD: AtomicU64 = AtomicU64::new(0);

const CNTV_CTL_ENABLE: u64 = 1 << 0;

fn set_virtual_timer(period: u64) {
    // SAFETY: programming this CPU's EL1 virtual timer only affects when its PPI fires.
    unsafe {
        asm!(
            "msr cntv_tval_el0, {tval}",
            "msr cntv_ctl_el0, {ctl}",
            "isb",
            tval = in(reg) period,
            ctl = in(reg) CNTV_CTL_ENABLE,
            options(nomem, nostack),
        );
    }
}

/// Computes the tick period from CNTFRQ_EL0 (boot CPU, before any CPU starts its timer).
pub fn init_global() {
    PERIOD.store(arch::counter_frequency() / TICK_HZ, Ordering::Release);
}

/// Starts this CPU's periodic tick.
pub fn init_this_cpu() {
    set_virtual_timer(PERIOD.load(Ordering::Acquire));
}

/// Stops this CPU's tick (before it turns itself off).
pub fn stop_this_cpu() {
    // SAFETY: disabling this CPU's EL1 virtual timer only stops its interrupt.
    unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack)) };
}

/// The timer interrupt: re-arm, count, let the scheduler account the tick.
pub fn tick() {
    set_virtual_timer(PERIOD.load(Ordering::Relaxed));
    percpu::this().counters.timer_ticks.fetch_add(1, Ordering::Relaxed);
    sched::tick();
}

/// Monotonic time in nanoseconds since the counter started.
pub fn now_ns() -> u64 {
    ticks_to_ns(arch::virtual_count())
}

/// Converts counter ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000 / u128::from(arch::counter_frequency())) as u64
}

/// Converts nanoseconds to counter ticks (rounded up).
pub fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(arch::counter_frequency())).div_ceil(1_000_000_000) as u64
}
