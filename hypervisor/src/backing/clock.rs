//! Time for the backing store: the system counter (CNTPCT_EL0 at CNTFRQ_EL0 Hz) and the EL2
//! physical timer (CNTHP_*_EL2, PPI 10 = `gic::PPI_HYP_TIMER`), which wakes a CPU at the
//! earliest latency deadline. The timer's interrupt is never taken as an exception: a CPU
//! sleeping in `wfi` wakes up and finds it with `gic::drain`.

use core::arch::asm;

use aarch64_cpu::registers::{
    Readable, Writeable, CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTVOFF_EL2, CNTV_CTL_EL0,
    CNTV_CVAL_EL0,
};

use crate::arch;

/// A point in time or a duration, in system counter ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticks(pub u64);

const MICROS_PER_SECOND: u64 = 1_000_000;

/// The counter's frequency in Hz.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The current count. The `isb` keeps the read from being hoisted above earlier instructions.
pub fn now() -> Ticks {
    arch::isb();
    Ticks(CNTPCT_EL0.get())
}

impl Ticks {
    /// `us` microseconds, rounded up: a deadline `from_micros(L)` ahead is never less than L µs.
    pub fn from_micros(us: u64) -> Self {
        Ticks((us as u128 * frequency() as u128).div_ceil(MICROS_PER_SECOND as u128) as u64)
    }

    /// This duration in whole microseconds, rounded down.
    pub fn as_micros(self) -> u64 {
        (self.0 as u128 * MICROS_PER_SECOND as u128 / frequency().max(1) as u128) as u64
    }

    /// This duration in nanoseconds, rounded down.
    pub fn as_nanos(self) -> u64 {
        const NANOS_PER_SECOND: u128 = 1_000_000_000;
        (self.0 as u128 * NANOS_PER_SECOND / frequency().max(1) as u128) as u64
    }

    /// This duration as a JSON number of microseconds with one decimal; `None` as `null`.
    pub fn json_micros(ticks: Option<Ticks>) -> JsonMicros {
        JsonMicros(ticks)
    }

    pub fn saturating_sub(self, earlier: Ticks) -> Ticks {
        Ticks(self.0.saturating_sub(earlier.0))
    }

    pub fn saturating_add(self, duration: Ticks) -> Ticks {
        Ticks(self.0.saturating_add(duration.0))
    }
}

/// Fire the EL2 physical timer at `deadline` (at once if it has passed), or stop it (`None`).
/// The interrupt is level-sensitive: whoever takes `gic::PPI_HYP_TIMER` must call this again
/// (with a later deadline or `None`) before ending the interrupt, or it fires again at once.
pub fn set_el2_timer(deadline: Option<Ticks>) {
    match deadline {
        Some(Ticks(at)) => {
            // SAFETY: CNTHP_CVAL_EL2 is the EL2 physical timer's compare value, owned by the
            // hypervisor; writing it only changes when that timer's interrupt is asserted.
            unsafe { asm!("msr cnthp_cval_el2, {}", in(reg) at, options(nomem, nostack, preserves_flags)) };
            CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        }
        None => CNTHP_CTL_EL2.set(0),
    }
    arch::isb();
}

/// The compare values, in counter ticks, of the timers of this CPU that QEMU's `-icount` can
/// advance virtual time to while it sleeps (an enabled timer is one, masked or not): the EL2
/// timer, the guest's virtual timer (its compare value plus CNTVOFF_EL2) and its physical
/// timer; `None` for a disabled one (see `asyncpf_core::latency::wake_overshoot`).
pub fn armed_deadlines() -> [Option<u64>; 3] {
    let enabled = |ctl: u64| ctl & CTL_ENABLE != 0;
    [
        enabled(CNTHP_CTL_EL2.get()).then(el2_timer_compare),
        enabled(CNTV_CTL_EL0.get()).then(|| CNTV_CVAL_EL0.get().checked_add(CNTVOFF_EL2.get())).flatten(),
        enabled(CNTP_CTL_EL0.get()).then(|| CNTP_CVAL_EL0.get()),
    ]
}

/// CNTHP_CVAL_EL2 (`aarch64-cpu` does not have it).
fn el2_timer_compare() -> u64 {
    let value: u64;
    // SAFETY: reading the EL2 physical timer's compare value at EL2 has no side effects.
    unsafe { asm!("mrs {}, cnthp_cval_el2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CNT*_CTL.ENABLE.
const CTL_ENABLE: u64 = 1;

/// [`Ticks::json_micros`]: formats without allocating.
pub struct JsonMicros(Option<Ticks>);

impl core::fmt::Display for JsonMicros {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(ticks) => write!(f, "{:.1}", ticks.as_nanos() as f64 / 1000.0),
            None => f.write_str("null"),
        }
    }
}
