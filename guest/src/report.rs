//! The one machine-readable line a run ends with (`@result {...}`), then power-off.

use crate::console::{self, RawConsole};
use crate::sync::BootOnce;
use crate::{arch, percpu, psci, sched};
use asyncpf_contract::runner::RESULT_PREFIX;
use asyncpf_guest::json::Json;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

static SCENARIO: BootOnce<&'static str> = BootOnce::new();
/// Set by the first CPU that reports; any later report (e.g. a second panic) just halts.
static ENDING: AtomicBool = AtomicBool::new(false);

/// Names the scenario in every later report.
pub fn set_scenario(name: &'static str) {
    SCENARIO.set(name);
}

fn scenario() -> &'static str {
    SCENARIO.get().copied().unwrap_or("boot")
}

fn halt() -> ! {
    arch::irq_disable();
    loop {
        arch::wait_for_interrupt();
    }
}

fn per_vcpu(j: &mut Json<'_, RawConsole>) -> fmt::Result {
    j.begin_array(Some("per_vcpu"))?;
    for (i, cpu) in percpu::all() {
        let c = &cpu.counters;
        j.begin_object(None)?;
        j.u64(Some("vcpu"), i as u64)?;
        j.u64(Some("tasks_run"), c.tasks_run.load(Ordering::Relaxed))?;
        j.u64(Some("context_switches"), c.context_switches.load(Ordering::Relaxed))?;
        j.u64(Some("preemptions"), c.preemptions.load(Ordering::Relaxed))?;
        j.u64(Some("timer_ticks"), c.timer_ticks.load(Ordering::Relaxed))?;
        j.u64(Some("idle_us"), crate::timer::ticks_to_ns(c.idle_ticks.load(Ordering::Relaxed)) / 1000)?;
        j.u64(Some("lock_spins"), c.lock_spins.load(Ordering::Relaxed))?;
        j.end_object()?;
    }
    j.end_array()
}

fn write_result(
    out: &mut RawConsole,
    ok: bool,
    error: Option<fmt::Arguments<'_>>,
    fields: impl FnOnce(&mut Json<'_, RawConsole>) -> fmt::Result,
) -> fmt::Result {
    out.write_str(RESULT_PREFIX)?;
    let mut j = Json::new(out);
    j.begin_object(None)?;
    j.str(Some("scenario"), scenario())?;
    j.bool(Some("ok"), ok)?;
    if let Some(error) = error {
        j.str_fmt(Some("error"), error)?;
    }
    j.u64(Some("vcpus"), percpu::count() as u64)?;
    per_vcpu(&mut j)?;
    crate::apf::write_json(&mut j)?;
    fields(&mut j)?;
    j.end_object()?;
    out.write_char('\n')
}

/// Prints the result line with the per-vCPU counters and the scenario's `fields`, then powers
/// the machine off.
pub fn finish(
    ok: bool,
    error: Option<fmt::Arguments<'_>>,
    fields: impl FnOnce(&mut Json<'_, RawConsole>) -> fmt::Result,
) -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        halt();
    }
    crate::trace::flush_all();
    console::with_lock(|out| {
        let _ = write_result(out, ok, error, fields);
    });
    psci::system_off();
}

/// A fatal error (panic, unexpected exception): diagnostic, failed result, power off.
/// Does not take the console lock, which the failing code may hold.
pub fn fail(what: fmt::Arguments<'_>) -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        halt();
    }
    let mut out = RawConsole;
    let _ =
        writeln!(out, "\nguest: fatal error on cpu {} in task {:?}: {what}", arch::cpu_index(), sched::current_name());
    let _ = write_result(&mut out, false, Some(what), |_| Ok(()));
    psci::system_off();
}
