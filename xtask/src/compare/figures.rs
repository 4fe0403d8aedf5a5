//! What the three reports say: a table row per run, the ratios of their times, the exits and
//! hypervisor time per asynchronous fault, and whether each run was correct.

use serde::Serialize;
use serde_json::Value;

use crate::bench;

use super::Mode;

/// The phases whose time is dominated by page-ins of the evicted working set.
pub const FAULT_BOUND_PHASES: [&str; 3] = ["verify", "mix", "final_verify"];

/// One table row: the figures of a run's report that `bench::Row` reads, and those only the
/// comparison needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub run: Mode,
    pub apf: bool,
    /// Faults resolved asynchronously (`hyp.async_faults`).
    pub async_faults: Option<u64>,
    /// Time of the fault-bound phases (`verify` + `mix` + `final_verify`), ms.
    pub fault_bound_ms: Option<u64>,
    /// Disk requests that QEMU had not completed by their deadline, for which virtual time was
    /// held (`mem.device_late_freezes`).
    pub device_late_freezes: Option<u64>,
    /// Exits the guest caused: all exits but those for physical interrupts
    /// (`hyp.exits - hyp.irq_exits`).
    pub guest_exits: Option<u64>,
    /// The hypervisor's own time in the exits of the asynchronous protocol, ns of model time
    /// (`hyp.el2_ns_async_fault`, `_handler_answer`, `_interrupt`).
    pub el2_ns: Option<[u64; 3]>,
    #[serde(flatten)]
    pub figures: bench::Row,
}

pub(super) fn uint(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

impl Row {
    pub fn from_report(mode: Mode, latency_us: u64, resident_mib: u32, report: &Value) -> Row {
        let figures = bench::Row::from_report(mode.kind(), latency_us, resident_mib, report);
        let fault_bound_ms = FAULT_BOUND_PHASES.iter().map(|p| figures.phases_ms.get(p).and_then(Value::as_u64)).sum();
        Row {
            run: mode,
            apf: mode.apf(),
            async_faults: uint(report, "/hyp/async_faults"),
            fault_bound_ms,
            device_late_freezes: uint(report, "/mem/device_late_freezes"),
            guest_exits: uint(report, "/hyp/exits")
                .zip(uint(report, "/hyp/irq_exits"))
                .map(|(all, irq)| all.saturating_sub(irq)),
            el2_ns: match ["async_fault", "handler_answer", "interrupt"]
                .map(|k| uint(report, &format!("/hyp/el2_ns_{k}")))
            {
                [Some(a), Some(b), Some(c)] => Some([a, b, c]),
                _ => None,
            },
            figures,
        }
    }

    pub fn phase_ms(&self, phase: &str) -> Option<u64> {
        self.figures.phases_ms.get(phase).and_then(Value::as_u64)
    }
}

/// The ratios of one measure (a time in ms) over the three runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    pub reference_ms: Option<u64>,
    pub synchronous_ms: Option<u64>,
    pub asynchronous_ms: Option<u64>,
    /// synchronous / asynchronous; None if the asynchronous time is 0 or unknown.
    pub speedup: Option<f64>,
    /// (synchronous − asynchronous) / (synchronous − reference) in %: 100 % = all the fault
    /// latency hidden, down to the floor. None unless the synchronous time exceeds the reference.
    pub latency_hidden_pct: Option<f64>,
    /// asynchronous / reference: how far above the floor; None if the reference time is 0 or
    /// unknown.
    pub async_vs_bound: Option<f64>,
    /// Tasks per vCPU, when the latency-hiding bound is computed.
    pub tasks_per_vcpu: Option<u32>,
    /// The best speedup T tasks per vCPU allow: at most T page-ins of one vCPU overlap, and the
    /// asynchronous run cannot beat the reference: min(T, synchronous / reference).
    pub speedup_bound: Option<f64>,
}

pub(super) fn round_to(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl Ratios {
    pub fn new(reference: Option<u64>, synchronous: Option<u64>, asynchronous: Option<u64>) -> Ratios {
        let div = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b > 0 => Some(round_to(a as f64 / b as f64, 3)),
            _ => None,
        };
        let latency_hidden_pct = match (reference, synchronous, asynchronous) {
            (Some(r), Some(s), Some(a)) if s > r => Some(round_to((s as f64 - a as f64) * 100.0 / (s - r) as f64, 1)),
            _ => None,
        };
        Ratios {
            reference_ms: reference,
            synchronous_ms: synchronous,
            asynchronous_ms: asynchronous,
            speedup: div(synchronous, asynchronous),
            latency_hidden_pct,
            async_vs_bound: div(asynchronous, reference),
            tasks_per_vcpu: None,
            speedup_bound: None,
        }
    }

    /// With the latency-hiding bound for `tasks` tasks per vCPU.
    pub fn with_tasks(mut self, tasks: u32) -> Ratios {
        self.tasks_per_vcpu = Some(tasks);
        self.speedup_bound = match (self.reference_ms, self.synchronous_ms) {
            (Some(r), Some(s)) if r > 0 => Some(round_to((s as f64 / r as f64).min(f64::from(tasks)), 3)),
            _ => None,
        };
        self
    }

    /// The ratios of `measure` over the rows (by their run).
    pub fn of(rows: &[Row], measure: impl Fn(&Row) -> Option<u64>) -> Ratios {
        let get = |mode: Mode| rows.iter().find(|r| r.run == mode).and_then(&measure);
        Ratios::new(get(Mode::Reference), get(Mode::Synchronous), get(Mode::Asynchronous))
    }

    /// Three lines, each ratio with its formula and its inputs.
    pub fn lines(&self) -> String {
        let ms = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let diff = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => (a as i64 - b as i64).to_string(),
            _ => "-".into(),
        };
        let (r, s, a) = (self.reference_ms, self.synchronous_ms, self.asynchronous_ms);
        let times = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        let pct = |v: Option<f64>| v.map(|v| format!("{v:.1} %")).unwrap_or_else(|| "-".into());
        let line = |name: &str, formula: &str, inputs: String, value: String| {
            format!("compare:   {name:<15} {formula:<29} = {inputs:<17} = {value}\n")
        };
        line("speedup", "sync / async", format!("{} / {}", ms(s), ms(a)), times(self.speedup))
            + &line(
                "latency hidden",
                "(sync - async) / (sync - ref)",
                format!("{} / {}", diff(s, a), diff(s, r)),
                pct(self.latency_hidden_pct),
            )
            + &line("async vs bound", "async / ref", format!("{} / {}", ms(a), ms(r)), times(self.async_vs_bound))
            + &match (self.tasks_per_vcpu, self.speedup_bound) {
                (Some(t), Some(bound)) => line(
                    "speedup bound",
                    "min(T, sync / ref)",
                    format!("min({t}, {:.2})", s.unwrap_or(0) as f64 / r.unwrap_or(1).max(1) as f64),
                    format!(
                        "{bound:.2}x (measured: {} of it)",
                        self.speedup.map(|x| format!("{:.0} %", x * 100.0 / bound)).unwrap_or_else(|| "-".into())
                    ),
                ),
                _ => String::new(),
            }
    }
}

/// The ratios over the whole workload and over its fault-bound phases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// Of the guest's elapsed time.
    pub elapsed: Ratios,
    /// Of `verify` + `mix` + `final_verify` (see the module documentation on `write`).
    pub fault_bound_phases: Ratios,
    /// Guest-caused exits per asynchronous fault: 1 + (the asynchronous run's guest-caused exits
    /// − the synchronous run's) / the asynchronous run's asynchronous faults. The fault itself
    /// is 1; what the protocol adds (the handler's completion call, APF calls) is the rest.
    pub exits_per_async_fault: Option<f64>,
    /// The hypervisor's own time per asynchronous fault in the asynchronous run, µs: its time
    /// in fault exits delivered as page_not_present, in the handler's answers and in interrupt
    /// exits, over its asynchronous faults; and those three parts.
    pub hyp_us_per_async_fault: Option<f64>,
    pub hyp_us_per_async_fault_parts: Option<[f64; 3]>,
}

impl Comparison {
    /// The ratios of the three rows, with the bound for `tasks` tasks per vCPU.
    pub fn of(rows: &[Row], tasks: u32) -> Comparison {
        let row = |mode: Mode| rows.iter().find(|r| r.run == mode);
        let exits_per_async_fault = match (row(Mode::Synchronous), row(Mode::Asynchronous)) {
            // Only meaningful when most of the asynchronous run's faults were asynchronous (at a
            // low latency the park-or-wait rule keeps most of them synchronous).
            (Some(s), Some(a)) => match (s.guest_exits, a.guest_exits, a.async_faults, a.figures.blocking_faults) {
                (Some(s), Some(a), Some(f), blocking) if f > 0 && blocking.is_none_or(|b| b <= f) => {
                    Some(round_to(1.0 + (a as f64 - s as f64) / f as f64, 3))
                }
                _ => None,
            },
            _ => None,
        };
        // Also only when most faults were asynchronous: the interrupt exits' time is shared.
        let async_row = row(Mode::Asynchronous);
        let mostly_async = async_row.is_some_and(|r| match (r.async_faults, r.figures.blocking_faults) {
            (Some(f), blocking) => f > 0 && blocking.is_none_or(|b| b <= f),
            _ => false,
        });
        let hyp_us_per_async_fault_parts =
            match (async_row.and_then(|r| r.el2_ns), async_row.and_then(|r| r.async_faults)) {
                (Some(ns), Some(f)) if mostly_async => Some(ns.map(|ns| round_to(ns as f64 / 1000.0 / f as f64, 2))),
                _ => None,
            };
        let hyp_us_per_async_fault = hyp_us_per_async_fault_parts.map(|p| round_to(p.iter().sum(), 2));
        Comparison {
            elapsed: Ratios::of(rows, |r| r.figures.elapsed_ms).with_tasks(tasks),
            fault_bound_phases: Ratios::of(rows, |r| r.fault_bound_ms).with_tasks(tasks),
            exits_per_async_fault,
            hyp_us_per_async_fault,
            hyp_us_per_async_fault_parts,
        }
    }
}

/// What is wrong with one run's report, one message per failed condition (none: correct).
/// Every run must have succeeded with 0 mismatches and have lost no `page_ready` (the
/// hypervisor posted one ring entry per accepted fault, plus its wake-alls: `hyp.apf.posted ==
/// accepted + wake_alls`; `completed` may exceed `accepted`, since a page can come back while
/// its page_not_present is being delivered and the guest then declines it); a run with `apf=off` must
/// have had no asynchronous fault; the asynchronous run must have had some, with APF enabled on
/// every one of its `vcpus`. A figure missing from the report of a run that failed anyway is
/// not reported again.
pub fn check_run(mode: Mode, vcpus: u32, report: &Value) -> Vec<String> {
    let name = mode.name();
    let ok = report.get("ok").and_then(Value::as_bool).unwrap_or(false);
    let mut failures = Vec::new();
    let missing = |failures: &mut Vec<String>, what: &str| {
        if ok {
            failures.push(format!("{name} run: the report has no {what}"));
        }
    };
    if !ok {
        let why = report.get("failure").and_then(Value::as_str).unwrap_or("the run did not succeed");
        failures.push(format!("{name} run failed: {why}"));
    }
    match uint(report, "/check/mismatches") {
        Some(0) => {}
        Some(n) => failures.push(format!("{name} run: the integrity check found {n} mismatched words")),
        None => missing(&mut failures, "check.mismatches"),
    }
    let apf = |field: &str| uint(report, &format!("/hyp/apf/{field}"));
    match (apf("accepted"), apf("wake_alls"), apf("posted")) {
        (Some(accepted), Some(wake_alls), Some(posted)) if posted != accepted + wake_alls => failures.push(format!(
            "{name} run: the hypervisor accepted {accepted} asynchronous page faults and posted {posted} \
                 page_ready entries with {wake_alls} wake-alls (hyp.apf.posted != accepted + wake_alls: a \
                 page_ready was lost)"
        )),
        (Some(_), Some(_), Some(_)) => {}
        _ => missing(&mut failures, "hyp.apf.accepted/wake_alls/posted"),
    }
    let async_faults = uint(report, "/hyp/async_faults");
    if mode.apf() {
        match async_faults {
            Some(0) => failures.push(format!(
                "{name} run: no page fault was resolved asynchronously (hyp.async_faults = 0) although the guest \
                 asked for apf=on"
            )),
            Some(_) => {}
            None => missing(&mut failures, "hyp.async_faults"),
        }
        match uint(report, "/guest/apf/enabled_cpus") {
            Some(n) if u64::from(vcpus) == n => {}
            Some(n) => failures.push(format!(
                "{name} run: the guest enabled asynchronous page faults on {n} of its {vcpus} vCPUs \
                 (guest.apf.enabled_cpus)"
            )),
            None => missing(&mut failures, "guest.apf.enabled_cpus"),
        }
    } else {
        match async_faults {
            Some(0) => {}
            Some(n) => failures.push(format!(
                "{name} run (apf=off): the hypervisor delivered {n} asynchronous page faults (hyp.async_faults), \
                 none expected"
            )),
            None => missing(&mut failures, "hyp.async_faults"),
        }
    }
    failures
}
