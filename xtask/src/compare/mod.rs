//! The main job, `cargo xtask run` without `--scenario`: asynchronous page faults against
//! synchronous page-in, side by side, on the fault-heavy `overcommit` workload.
//!
//! `run --guest-kernel FILE` without `--scenario` stays a single run of that kernel (a foreign
//! kernel runs no scenario): the README's Linux example and the suite's `not-an-image` test use
//! it ([`selected`]).
//!
//! Three runs of the `overcommit` scenario through [`run::run`], as `bench::OvercommitRun` makes
//! them (one build first, then `--no-build`, quiet, P = N, under `-icount`), with identical
//! settings except:
//! - [`Mode::Reference`]: R = G and `apf=off`: the pager runs but never evicts, so there is no
//!   paging I/O. Its time is the floor that no hiding of fault latency can beat.
//! - [`Mode::Synchronous`]: R < G and `apf=off`: a vCPU that faults waits for the page-in.
//! - [`Mode::Asynchronous`]: R < G and `apf=on`: every guest CPU enables asynchronous page
//!   faults; a task that faults is parked and the vCPU runs another until `page_ready`.
//!
//! It prints the settings, one table row per run, and ratios taken from this one set of runs,
//! and writes the settings, rows, ratios and the three full reports as one JSON document.
//! Every figure comes from the reports. The ratios are measurements, not tests; the job fails
//! only when a run's correctness does ([`check_run`]).
//!
//! The ratios are given twice: over the whole workload, and over its fault-bound phases only
//! (`verify`, `mix`, `final_verify`, which page the evicted working set back in). The `write`
//! phase is left out of the second set: its working-set faults are first touches, which the
//! pager zero-fills without a disk read, so it has no page-in of the working set to overlap.
//! Measured with the defaults, the asynchronous run's write phase stays close to the
//! synchronous one's, and its remaining `blocking_faults` (faults that were not delivered
//! asynchronously: taken with IRQs masked, by the idle task or inside a handler, or right after
//! a decline; about 1 ms each at L = 1000 µs) add up to about that phase's excess over the
//! reference. Which pages those are (the kernel's own, evicted by the streaming writes, is the
//! likely answer) is not measured yet.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::{self, Kind, SCENARIO};
use crate::build;
use crate::cli::{Given, RunArgs, RunPlan};
use crate::run;
use crate::sweep;
use crate::toolchain::Toolchain;

/// Defaults of the comparison: a clear, repeatable result in well under a minute on 2 host
/// cores (each overcommitted run takes about 5 s of host time, the reference under 1 s).
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_GUEST_MIB: u32 = 64;
pub const DEFAULT_RESIDENT_MIB: u32 = 12;
pub const DEFAULT_LATENCY_US: u64 = 1000;
pub const DEFAULT_ICOUNT: u32 = 3;
/// Tasks per vCPU of the workload (`--tasks`): how many page-ins of one vCPU can overlap.
pub const DEFAULT_TASKS: u32 = 8;

/// The guest command-line key that turns asynchronous page faults on (`guest::cmdline`).
const GUEST_OPT_APF: &str = "apf";
/// The phases whose time is dominated by page-ins of the evicted working set.
pub const FAULT_BOUND_PHASES: [&str; 3] = ["verify", "mix", "final_verify"];
/// What L means.
pub const LATENCY_MODEL: &str = "no request completes earlier than L µs after submission, on the hypervisor's counter";
/// The name of the JSON document (and of the file under target/xtask/compare/).
pub const COMPARISON: &str = "overcommit-apf";

/// One of the three runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// R = G, `apf=off`: no paging I/O.
    Reference,
    /// R < G, `apf=off`.
    Synchronous,
    /// R < G, `apf=on`.
    Asynchronous,
}

impl Mode {
    /// In the order they run and are shown.
    pub const ALL: [Mode; 3] = [Mode::Reference, Mode::Synchronous, Mode::Asynchronous];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Reference => "reference",
            Mode::Synchronous => "synchronous",
            Mode::Asynchronous => "asynchronous",
        }
    }

    /// Whether the guest enables asynchronous page faults.
    pub fn apf(self) -> bool {
        self == Mode::Asynchronous
    }

    /// Its words on the guest command line.
    pub fn guest_cmdline(self) -> String {
        format!("{GUEST_OPT_APF}={}", if self.apf() { "on" } else { "off" })
    }

    fn kind(self) -> Kind {
        match self {
            Mode::Reference => Kind::Reference,
            Mode::Synchronous | Mode::Asynchronous => Kind::Overcommit,
        }
    }
}

/// One run of the comparison and its validated plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareRun {
    pub mode: Mode,
    pub plan: RunPlan,
}

/// A validated comparison: its settings and the plans of its three runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComparePlan {
    /// What the three runs share.
    pub params: Params,
    /// `--json FILE`: a copy of the document, besides the one under target/xtask/compare/.
    pub json: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    pub no_build: bool,
    /// In [`Mode::ALL`] order.
    pub runs: Vec<CompareRun>,
}

/// Whether `run` options ask for the comparison: neither `--scenario` (one scenario) nor
/// `--guest-kernel` (one run of that kernel, which runs no scenario) given.
pub fn selected(args: &RunArgs, given: &Given) -> bool {
    !given.contains("scenario") && args.guest_kernel.is_none()
}

/// `run` options that make no sense for the comparison, with the reason.
fn refused(args: &RunArgs, given: &Given) -> Option<(&'static str, &'static str)> {
    let checks: [(bool, &str, &str); 6] = [
        (args.pcpus.is_some(), "--pcpus", "each vCPU has its own physical CPU (P = N)"),
        (
            args.guest_cmdline.is_some(),
            "--guest-cmdline",
            "the comparison sets the guest command line itself (apf=on/off)",
        ),
        (args.bare, "--bare", "the comparison needs the hypervisor and its pager"),
        (
            args.backing_selftest != 0 || given.contains("backing_selftest"),
            "--backing-selftest",
            "the self-test would be timed with the runs",
        ),
        (!args.inject_read_errors.is_empty(), "--inject-read-errors", "failed page-ins would fail the runs"),
        (!args.inject_write_errors.is_empty(), "--inject-write-errors", "failed write-backs would fail the runs"),
    ];
    checks.into_iter().find(|c| c.0).map(|(_, option, why)| (option, why))
}

/// The comparison that `run` options ask for, `given` saying which of them the command line
/// gave (the others take the comparison's defaults, not `run`'s). Every run's plan goes
/// through the same validation as `cargo xtask run`, so a bad option fails before any build.
pub fn plan(args: &RunArgs, given: &Given) -> Result<ComparePlan> {
    if !selected(args, given) {
        bail!("--scenario or --guest-kernel given: that is a single run, not the comparison");
    }
    if let Some((option, why)) = refused(args, given) {
        bail!(
            "{option} does not apply to `cargo xtask run` without --scenario (the comparison of asynchronous and \
             synchronous page faults): {why}; drop it, or give --scenario NAME for a single run"
        );
    }
    let params = Params {
        vcpus: args.vcpus.unwrap_or(DEFAULT_VCPUS),
        cpu: args.cpu.clone(),
        guest_mib: if given.contains("guest_mib") { args.guest_mib } else { DEFAULT_GUEST_MIB },
        resident_mib: args.resident_mib.unwrap_or(DEFAULT_RESIDENT_MIB),
        latency_us: if given.contains("backing_latency_us") { args.backing_latency_us } else { DEFAULT_LATENCY_US },
        icount: args.icount.unwrap_or(DEFAULT_ICOUNT),
        seed: args.seed,
        timeout_secs: args.timeout,
        tasks: args.tasks.unwrap_or(DEFAULT_TASKS),
        host_load: args.host_load,
    };
    let runs = plan_runs(&params)?;
    Ok(ComparePlan { params, json: args.json.clone(), quiet: args.quiet, no_build: args.no_build, runs })
}

/// What one comparison runs with: its three runs differ only in R and `apf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub vcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    /// R of the synchronous and asynchronous runs (the reference has G).
    pub resident_mib: u32,
    pub latency_us: u64,
    pub icount: u32,
    pub seed: u64,
    pub timeout_secs: u64,
    /// The workload's tasks per vCPU.
    pub tasks: u32,
    pub host_load: u32,
}

/// The validated plans of the three runs, in [`Mode::ALL`] order: the `overcommit` scenario,
/// `--no-build --quiet`, P = N, under `-icount`. Each goes through the same validation as
/// `cargo xtask run`; R must be below G.
pub fn plan_runs(p: &Params) -> Result<Vec<CompareRun>> {
    let runs = Mode::ALL
        .into_iter()
        .map(|mode| {
            let resident = if mode == Mode::Reference { p.guest_mib } else { p.resident_mib };
            let run_args = bench::OvercommitRun {
                vcpus: p.vcpus,
                cpu: p.cpu.clone(),
                guest_mib: p.guest_mib,
                resident_mib: resident,
                seed: p.seed,
                timeout: p.timeout_secs,
                icount: p.icount,
                latency_us: p.latency_us,
                guest_cmdline: Some(mode.guest_cmdline()),
                tasks: Some(p.tasks),
                host_load: p.host_load,
            }
            .run_args();
            let plan = run_args.validate().with_context(|| format!("the comparison's {} run", mode.name()))?;
            Ok(CompareRun { mode, plan })
        })
        .collect::<Result<Vec<_>>>()?;
    if p.resident_mib >= p.guest_mib {
        bail!(
            "--resident-mib {} is not below --guest-mib {}: the comparison needs overcommit (R < G) for page faults \
             to wait for the disk; the reference run with R = G is added by itself",
            p.resident_mib,
            p.guest_mib
        );
    }
    Ok(runs)
}

/// Runs one of a comparison's runs (quiet, its report also written to `report_path`) and
/// returns its report as JSON; a run that could not be started becomes a report with `ok:
/// false` and the reason as its `failure`, so that the other runs still run.
pub fn execute(root: &Path, tc: &Toolchain, run: &CompareRun, report_path: PathBuf) -> Result<Value> {
    let run_plan = RunPlan { json: Some(report_path), ..run.plan.clone() };
    Ok(match run::run(root, tc, &run_plan, true) {
        Ok(report) => serde_json::to_value(&report).context("the run's report as JSON")?,
        Err(err) => json!({"scenario": SCENARIO, "ok": false, "failure": format!("{err:#}")}),
    })
}

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

fn uint(v: &Value, pointer: &str) -> Option<u64> {
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

fn round_to(x: f64, places: i32) -> f64 {
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

/// The settings the runs had.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenario: &'static str,
    pub qemu_version: String,
    pub icount_shift: u32,
    pub ns_per_instruction: u64,
    pub cpu: String,
    pub vcpus: u32,
    pub pcpus: u32,
    pub guest_mib: u32,
    pub resident_mib: u32,
    pub reference_resident_mib: u32,
    pub backing_latency_us: u64,
    pub latency_model: &'static str,
    pub seed: u64,
    pub timeout_secs: u64,
    /// Busy processes that ran beside QEMU during each run (`--host-load`).
    pub host_load: u32,
    /// The workload's tasks per vCPU (`--tasks`).
    pub tasks_per_vcpu: u32,
    pub runs: Vec<RunSettings>,
}

/// What differs between the runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub run: Mode,
    pub resident_mib: u32,
    pub guest_cmdline: String,
}

impl Settings {
    pub fn new(plan: &ComparePlan, qemu_version: &str) -> Settings {
        Settings {
            scenario: SCENARIO,
            qemu_version: qemu_version.to_string(),
            icount_shift: plan.params.icount,
            ns_per_instruction: 1 << plan.params.icount,
            cpu: plan.params.cpu.clone(),
            vcpus: plan.params.vcpus,
            pcpus: plan.params.vcpus,
            guest_mib: plan.params.guest_mib,
            resident_mib: plan.params.resident_mib,
            reference_resident_mib: plan.params.guest_mib,
            backing_latency_us: plan.params.latency_us,
            latency_model: LATENCY_MODEL,
            seed: plan.params.seed,
            timeout_secs: plan.params.timeout_secs,
            host_load: plan.params.host_load,
            tasks_per_vcpu: plan.params.tasks,
            runs: plan
                .runs
                .iter()
                .map(|r| RunSettings {
                    run: r.mode,
                    resident_mib: r.plan.resident_mib.unwrap_or(plan.params.guest_mib),
                    guest_cmdline: r.plan.guest_cmdline.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The lines printed above the table.
    pub fn header(&self) -> String {
        let run = |mode: Mode| self.runs.iter().find(|r| r.run == mode);
        let mut s = format!(
            "compare: asynchronous vs synchronous page faults, the `{}` workload, {} vCPU(s) on {} physical CPU(s), \
             cpu {}, seed {}\n\
             compare: {}\n\
             compare: -icount shift={},sleep=off: virtual time, {} ns per guest instruction; the guest's times below \
             are virtual: virtual time never passes a disk request's deadline before QEMU has completed it, so {}\n\
             compare: host load: {} busy process(es) beside QEMU (--host-load)\n\
             compare: {} tasks per vCPU (--tasks): at most that many page-ins of one vCPU overlap\n\
             compare: guest RAM G = {} MiB, resident R = {} MiB, backing-store latency L = {} µs\n\
             compare: latency model: {}\n",
            self.scenario,
            self.vcpus,
            self.pcpus,
            self.cpu,
            self.seed,
            self.qemu_version,
            self.icount_shift,
            self.ns_per_instruction,
            if self.vcpus == 1 {
                "with 1 vCPU they repeat exactly, however loaded the host is"
            } else {
                "they do not depend on how fast the host completes it; with more than 1 vCPU, runs with paging I/O \
                 still vary a little (phases by up to a few per cent, totals by less than 1 %)"
            },
            self.host_load,
            self.tasks_per_vcpu,
            self.guest_mib,
            self.resident_mib,
            self.backing_latency_us,
            self.latency_model,
        );
        if self.vcpus > 1 {
            s += &format!(
                "compare: under -icount QEMU runs the {} vCPUs one at a time on one host thread: the reference row \
                 is their summed work, and in the synchronous row one vCPU's page-in already overlaps the others' \
                 work, so the bound sync / ref is lower than with 1 vCPU\n",
                self.vcpus
            );
        }
        for mode in Mode::ALL {
            let Some(r) = run(mode) else { continue };
            let what = match mode {
                Mode::Reference => "no paging I/O: the floor that no latency hiding can beat",
                Mode::Synchronous => "a faulting vCPU waits for the page-in",
                Mode::Asynchronous => "the guest parks the faulting task and runs another until page_ready",
            };
            s += &format!(
                "compare: {:<12} R = {:>4} MiB, {:<7}  {what}\n",
                mode.name(),
                r.resident_mib,
                r.guest_cmdline
            );
        }
        s
    }
}

/// The table: a column header and one line per row.
pub fn table(rows: &[Row]) -> String {
    fn int(v: Option<u64>) -> String {
        v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
    }
    let mut s = format!(
        "{:<12} {:>5} {:>3} {:>10} {:>6} {:>6} {:>6} {:>12} {:>8} {:>12} {:>15} {:>13} {:>10}\n",
        "run",
        "R_MiB",
        "apf",
        "elapsed_ms",
        "write",
        "verify",
        "mix",
        "final_verify",
        "page_ins",
        "async_faults",
        "blocking_faults",
        "stall_mean_us",
        "mismatches"
    );
    for r in rows {
        let f = &r.figures;
        s += &format!(
            "{:<12} {:>5} {:>3} {:>10} {:>6} {:>6} {:>6} {:>12} {:>8} {:>12} {:>15} {:>13} {:>10}\n",
            r.run.name(),
            f.resident_mib,
            if r.apf { "on" } else { "off" },
            int(f.elapsed_ms),
            int(r.phase_ms("write")),
            int(r.phase_ms("verify")),
            int(r.phase_ms("mix")),
            int(r.phase_ms("final_verify")),
            int(f.page_ins),
            int(r.async_faults),
            int(f.blocking_faults),
            f.stall_mean_us.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
            int(f.mismatches),
        );
    }
    s
}

/// The three reports, by run.
#[derive(Debug, Serialize)]
struct Reports<'a> {
    reference: &'a Value,
    synchronous: &'a Value,
    asynchronous: &'a Value,
}

/// The JSON document.
#[derive(Debug, Serialize)]
struct CompareJson<'a> {
    comparison: &'static str,
    ok: bool,
    failures: &'a [String],
    wall_seconds: f64,
    settings: &'a Settings,
    ratios: &'a Comparison,
    rows: &'a [Row],
    reports: Reports<'a>,
}

fn compare_dir(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("compare")
}

/// Where the JSON document always goes.
pub fn default_json(root: &Path) -> PathBuf {
    compare_dir(root).join(format!("{COMPARISON}.json"))
}

/// Builds once (unless `--no-build`), runs the three runs (a failed one is reported and the
/// others still run), prints the settings, the table and the ratios, and writes the JSON
/// document. Ok(true) if every run was correct ([`check_run`]).
pub fn run_compare(root: &Path, tc: &Toolchain, plan: &ComparePlan) -> Result<bool> {
    let start = Instant::now();
    let settings = Settings::new(plan, &tc.qemu_version);
    if !plan.no_build {
        build::build(root, build::Select::BOTH)?;
    }
    let report_dir = compare_dir(root).join("runs");
    let mut reports = Vec::new();
    for (i, r) in plan.runs.iter().enumerate() {
        let resident_mib = r.plan.resident_mib.unwrap_or(plan.params.guest_mib);
        let what = format!(
            "[{}/{}] {}: {SCENARIO}, G = {} MiB, R = {resident_mib} MiB, {}",
            i + 1,
            plan.runs.len(),
            r.mode.name(),
            plan.params.guest_mib,
            r.plan.guest_cmdline.as_deref().unwrap_or("")
        );
        if !plan.quiet {
            println!("compare: {what} ...");
        }
        let report = execute(root, tc, r, report_dir.join(format!("{COMPARISON}-{}.json", r.mode.name())))?;
        if !plan.quiet {
            let wall = report.get("wall_seconds").and_then(Value::as_f64).unwrap_or(0.0);
            match report.get("ok").and_then(Value::as_bool) {
                Some(true) => println!("compare: {what}: ok in {wall:.1} s"),
                _ => println!("compare: {what}: FAILED"),
            }
        }
        reports.push((r, report));
    }
    let rows: Vec<Row> = reports
        .iter()
        .map(|(r, report)| {
            Row::from_report(
                r.mode,
                plan.params.latency_us,
                r.plan.resident_mib.unwrap_or(plan.params.guest_mib),
                report,
            )
        })
        .collect();
    let comparison = Comparison::of(&rows, plan.params.tasks);
    let failures: Vec<String> =
        reports.iter().flat_map(|(r, report)| check_run(r.mode, plan.params.vcpus, report)).collect();
    let ok = failures.is_empty();
    let wall_seconds = round_to(start.elapsed().as_secs_f64(), 1);
    let report_of = |mode: Mode| reports.iter().find(|(r, _)| r.mode == mode).map_or(&Value::Null, |(_, v)| v);
    let doc = CompareJson {
        comparison: COMPARISON,
        ok,
        failures: &failures,
        wall_seconds,
        settings: &settings,
        ratios: &comparison,
        rows: &rows,
        reports: Reports {
            reference: report_of(Mode::Reference),
            synchronous: report_of(Mode::Synchronous),
            asynchronous: report_of(Mode::Asynchronous),
        },
    };
    let json_path = default_json(root);
    bench::write_json(&json_path, &doc)?;
    if let Some(extra) = &plan.json {
        bench::write_json(extra, &doc)?;
    }

    print!("\n{}\n{}", settings.header(), table(&rows));
    println!(
        "compare: phase times in ms; async_faults: faults resolved asynchronously (hyp.async_faults); \
         blocking_faults: faults that waited synchronously (mem.blocking_faults); stall_mean_us: their mean \
         fault-to-resume time"
    );
    let per_run = |f: &dyn Fn(&Row) -> String| rows.iter().map(f).collect::<Vec<_>>().join(" / ");
    println!(
        "compare: host time kept out: virtual time was held {} time(s) for a disk request QEMU had not completed by \
         its deadline (mem.device_late_freezes); host wall time {} s",
        per_run(&|r| r.device_late_freezes.map_or("-".into(), |n| n.to_string())),
        per_run(&|r| r.figures.wall_seconds.map_or("-".into(), |s| format!("{s:.1}"))),
    );
    print!("compare: whole workload (elapsed_ms):\n{}", comparison.elapsed.lines());
    let exits = |mode: Mode| rows.iter().find(|r| r.run == mode).and_then(|r| r.guest_exits);
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "compare:   exits per async fault  1 + (async - sync guest-caused exits) / async faults = 1 + ({} - {}) / {} = {}",
        show(exits(Mode::Asynchronous)),
        show(exits(Mode::Synchronous)),
        show(rows.iter().find(|r| r.run == Mode::Asynchronous).and_then(|r| r.async_faults)),
        comparison.exits_per_async_fault.map_or("- (most faults waited: see sync_reasons)".into(), |v| format!("{v:.2}")),
    );
    let ns_per_instruction = 1u64 << plan.params.icount;
    match (comparison.hyp_us_per_async_fault, comparison.hyp_us_per_async_fault_parts) {
        (Some(total), Some([fault, answer, interrupt])) => println!(
            "compare:   hypervisor's own time per async fault = {total:.2} us (about {:.0} of its instructions at {} ns \
             each): fault exit {fault:.2} + handler's answer {answer:.2} + interrupt exits {interrupt:.2} us",
            total * 1000.0 / ns_per_instruction as f64,
            ns_per_instruction,
        ),
        _ => println!("compare:   hypervisor's own time per async fault = - (most faults waited: see sync_reasons)"),
    }
    print!(
        "compare: fault-bound phases only (verify + mix + final_verify):\n{}",
        comparison.fault_bound_phases.lines()
    );
    println!(
        "compare: the write phase is left out of the second set: its working-set faults are first touches, \
         zero-filled without a disk read, so it has little page-in latency of its own to hide; in the asynchronous \
         run, blocking_faults counts the faults that were not delivered asynchronously (taken with IRQs masked, \
         by the idle task or inside a handler, or right after a decline) and waited"
    );
    if ok {
        let async_row = rows.iter().find(|r| r.run == Mode::Asynchronous);
        println!(
            "compare: correct: 3 runs ok, 0 mismatches, {} asynchronous faults in the asynchronous run and every \
             page_ready delivered (hyp.apf.posted = accepted + wake_alls), none in the apf=off runs",
            async_row.and_then(|r| r.async_faults).unwrap_or(0)
        );
    } else {
        for f in &failures {
            println!("compare: FAILED: {f}");
        }
    }
    println!(
        "compare: the sweep over L, T and vCPUs (this comparison at every point) is plotted in {}/{}.svg (README, \
         \"The APF sweep\"); regenerate it with `cargo xtask bench --out {}` (about 8 min on 2 host cores)",
        sweep::COMMITTED_DIR,
        sweep::NAME,
        sweep::COMMITTED_DIR
    );
    let extra = plan.json.as_ref().map(|p| format!(" and {}", p.display())).unwrap_or_default();
    println!(
        "compare: {} in {wall_seconds:.1} s; settings, rows, ratios and reports in {}{extra}",
        if ok { "ok" } else { "FAILED" },
        json_path.display()
    );
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::parse_run;
    use crate::cli::{parse_from, Command};

    /// `run` options as `main` gets them from `cargo xtask run ARGS`.
    fn parse(args: &[&str]) -> (RunArgs, Given) {
        let mut argv = vec!["xtask", "run"];
        argv.extend_from_slice(args);
        match parse_from(argv).expect("arguments parse") {
            (crate::cli::Cli { command: Command::Run(r) }, given) => (r, given),
            (other, _) => panic!("expected run, got {other:?}"),
        }
    }

    fn plan_of(args: &[&str]) -> Result<ComparePlan> {
        let (args, given) = parse(args);
        plan(&args, &given)
    }

    /// What `cargo xtask run --scenario overcommit ... --guest-cmdline apf=...` plans.
    fn scenario_plan(vcpus: &str, g: &str, r: &str, l: &str, icount: &str, apf: &str, extra: &[&str]) -> RunPlan {
        let mut args = vec!["--scenario", SCENARIO, "--vcpus", vcpus, "--pcpus", vcpus, "--guest-mib", g];
        args.extend(["--resident-mib", r, "--backing-latency-us", l, "--icount", icount, "--guest-cmdline", apf]);
        args.extend(["--quiet", "--no-build", "--tasks", "8"]);
        args.extend_from_slice(extra);
        parse_run(&args).validate().unwrap()
    }

    #[test]
    fn default_plan() {
        let p = plan_of(&[]).unwrap();
        assert_eq!(
            (p.params.vcpus, p.params.guest_mib, p.params.resident_mib, p.params.latency_us, p.params.icount),
            (1, 64, 12, 1000, 3)
        );
        assert_eq!(
            (p.params.seed, p.params.cpu.as_str(), p.params.timeout_secs, p.json.as_ref()),
            (1, "max", 120, None)
        );
        assert!(!p.quiet && !p.no_build);
        let modes: Vec<Mode> = p.runs.iter().map(|r| r.mode).collect();
        assert_eq!(modes, Mode::ALL);
        let want = [
            scenario_plan("1", "64", "64", "1000", "3", "apf=off", &[]),
            scenario_plan("1", "64", "12", "1000", "3", "apf=off", &[]),
            scenario_plan("1", "64", "12", "1000", "3", "apf=on", &[]),
        ];
        for (run, want) in p.runs.iter().zip(&want) {
            assert_eq!(&run.plan, want, "{:?}", run.mode);
        }
        // Spelled out once: the three runs differ only in R and apf.
        let r = &p.runs[2].plan;
        assert_eq!(
            (r.scenario.as_str(), r.vcpus, r.pcpus, r.guest_mib, r.resident_mib),
            ("overcommit", 1, 1, 64, Some(12))
        );
        assert_eq!(
            (r.icount, r.backing.latency_us, r.guest_cmdline.as_deref()),
            (Some(3), 1000, Some("apf=on tasks=8"))
        );
        assert!(r.quiet && !r.bare && r.json.is_none() && r.guest_kernel.is_none());
        assert_eq!(p.runs[0].plan.resident_mib, Some(64), "the reference run has R = G");
        assert_eq!(p.params.host_load, 0);
        assert!(p.runs.iter().all(|r| r.plan.host_load == 0));
    }

    #[test]
    fn host_load_goes_to_every_run_and_the_settings() {
        let p = plan_of(&["--host-load", "2"]).unwrap();
        assert_eq!(p.params.host_load, 2);
        assert!(p.runs.iter().all(|r| r.plan.host_load == 2));
        let settings = Settings::new(&p, "QEMU 10");
        assert_eq!(settings.host_load, 2);
        assert!(settings.header().contains("host load: 2 busy process(es)"), "{}", settings.header());
        assert_eq!(serde_json::to_value(&settings).unwrap()["host_load"], 2);
    }

    #[test]
    fn overrides() {
        let p = plan_of(&[
            "--vcpus",
            "2",
            "--guest-mib",
            "128",
            "--resident-mib",
            "32",
            "--backing-latency-us",
            "200",
            "--icount",
            "4",
            "--seed",
            "9",
            "--cpu",
            "a64fx",
            "--timeout",
            "60",
            "--json",
            "c.json",
            "--quiet",
            "--no-build",
        ])
        .unwrap();
        assert_eq!(
            (p.params.vcpus, p.params.guest_mib, p.params.resident_mib, p.params.latency_us, p.params.icount),
            (2, 128, 32, 200, 4)
        );
        assert_eq!((p.params.seed, p.params.cpu.as_str(), p.params.timeout_secs), (9, "a64fx", 60));
        assert_eq!(p.json.as_deref(), Some(Path::new("c.json")));
        assert!(p.quiet && p.no_build);
        let extra = ["--seed", "9", "--cpu", "a64fx", "--timeout", "60"];
        let want = [
            scenario_plan("2", "128", "128", "200", "4", "apf=off", &extra),
            scenario_plan("2", "128", "32", "200", "4", "apf=off", &extra),
            scenario_plan("2", "128", "32", "200", "4", "apf=on", &extra),
        ];
        for (run, want) in p.runs.iter().zip(&want) {
            assert_eq!(&run.plan, want, "{:?}", run.mode);
            assert_eq!(run.plan.json, None, "--json is the comparison's document, not a run's report");
        }
    }

    #[test]
    fn given_values_equal_to_run_defaults_are_kept() {
        // `run`'s own defaults are G = 128 and L = 50; given explicitly, they are not replaced
        // by the comparison's.
        let p = plan_of(&["--guest-mib", "128", "--backing-latency-us", "50"]).unwrap();
        assert_eq!((p.params.guest_mib, p.params.latency_us), (128, 50));
        let p = plan_of(&["--backing-latency-us", "0"]).unwrap();
        assert_eq!((p.params.guest_mib, p.params.latency_us), (64, 0));
    }

    #[test]
    fn refuses_options_that_do_not_apply() {
        for (args, option) in [
            (&["--pcpus", "2"][..], "--pcpus"),
            (&["--guest-cmdline", "apf=on"], "--guest-cmdline"),
            (&["--guest-cmdline", " "], "--guest-cmdline"),
            (&["--bare"], "--bare"),
            (&["--backing-selftest", "64"], "--backing-selftest"),
            (&["--backing-selftest", "0"], "--backing-selftest"),
            (&["--inject-read-errors", "5"], "--inject-read-errors"),
            (&["--inject-write-errors", "5"], "--inject-write-errors"),
        ] {
            let err = plan_of(args).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{option} does not apply")), "{args:?}: {err}");
            assert!(err.contains("--scenario NAME"), "{err}");
        }
        for r in ["64", "100"] {
            let err = plan_of(&["--resident-mib", r]).unwrap_err().to_string();
            assert!(err.contains("is not below --guest-mib 64"), "{err}");
        }
        let err = plan_of(&["--guest-mib", "128", "--resident-mib", "128"]).unwrap_err().to_string();
        assert!(err.contains("not below --guest-mib 128"), "{err}");
        // `run`'s own validation applies to every run.
        let err = format!("{:#}", plan_of(&["--resident-mib", "3"]).unwrap_err());
        assert!(err.contains("synchronous run") && err.contains("out of range 4..=4096"), "{err}");
        assert!(format!("{:#}", plan_of(&["--guest-mib", "8"]).unwrap_err()).contains("--guest-mib 8 is out of range"));
        assert!(plan_of(&["--icount", "11"]).is_err());
        assert!(plan_of(&["--vcpus", "0"]).is_err());
        assert!(plan_of(&["--backing-latency-us", "1000001"]).is_err());
        assert!(plan_of(&["--timeout", "0"]).is_err());
        assert!(plan_of(&["--cpu", "max,sve=off"]).is_err());
    }

    #[test]
    fn a_scenario_run_is_planned_as_before() {
        let (args, given) = parse(&[]);
        assert!(!given.contains("scenario"), "no --scenario: the comparison");
        let (smp, given) = parse(&["--scenario", "smp"]);
        assert!(given.contains("scenario"));
        // `--scenario smp` plans exactly what `run` without options planned before it became
        // the comparison (the `cli` tests pin that plan's values).
        assert_eq!(smp.validate().unwrap(), args.validate().unwrap());
        assert_eq!(smp.validate().unwrap(), parse_run(&[]).validate().unwrap());
        let p = smp.validate().unwrap();
        assert_eq!((p.scenario.as_str(), p.vcpus, p.pcpus, p.guest_mib, p.icount), ("smp", 4, 4, 128, None));
        assert_eq!(
            (p.backing.latency_us, p.resident_mib),
            (asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US, None)
        );
        assert!(!selected(&smp, &given));
        let err = plan(&smp, &given).unwrap_err();
        assert!(err.to_string().contains("a single run"), "{err}");
        // Other scenario runs keep their options too, including those the comparison refuses.
        let (oc, given) = parse(&["--scenario", "overcommit", "--bare", "--vcpus", "2"]);
        assert!(given.contains("scenario"));
        assert!(oc.validate().unwrap().bare);
    }

    #[test]
    fn a_foreign_kernel_is_a_single_run() {
        assert!(selected(&parse(&[]).0, &parse(&[]).1));
        // As in the README's Linux example and the suite's not-an-image test: no --scenario.
        let argv = ["--guest-kernel", "/tmp/vmlinuz", "--vcpus", "2", "--guest-mib", "256", "--guest-cmdline", "x"];
        let (args, given) = parse(&argv);
        assert!(!selected(&args, &given));
        assert_eq!(args.validate().unwrap(), parse_run(&argv).validate().unwrap());
        assert!(plan(&args, &given).unwrap_err().to_string().contains("a single run"));
    }

    /// A report of the shape `cargo xtask run --json` writes for an `overcommit` run.
    fn report(mode: Mode) -> Value {
        let (elapsed, phases, page_ins, async_faults, blocking, stall) = match mode {
            Mode::Reference => (4098, [1221, 1073, 869, 934], 0, 0, 0, 0.0),
            Mode::Synchronous => (48754, [5987, 14382, 13605, 14779], 42288, 0, 42301, 1010.8),
            Mode::Asynchronous => (21519, [5582, 5331, 5031, 5574], 42389, 39233, 4100, 1007.7),
        };
        let apf_cpus = u64::from(mode.apf());
        json!({
            "scenario": "overcommit", "ok": true, "failure": null, "vcpus": 1, "wall_seconds": 5.2,
            "backing_latency_us": 1000, "resident_mib": if mode == Mode::Reference { 64 } else { 12 },
            "hyp": {"async_faults": async_faults,
                "apf": {"dispatched": async_faults, "accepted": async_faults, "declined": 0,
                    "completed": async_faults, "posted": async_faults, "wake_alls": 0,
                    "enabled_vcpus": apf_cpus},
                "mem": {"page_ins": page_ins, "blocking_faults": blocking, "fault_stall_us_mean": stall,
                    "backing_latency_us": 1000}},
            "mem": {"page_ins": page_ins, "blocking_faults": blocking, "fault_stall_us_mean": stall,
                "backing_latency_us": 1000},
            "guest": {"ok": true, "elapsed_ms": elapsed,
                "phases_ms": {"write": phases[0], "verify": phases[1], "mix": phases[2], "final_verify": phases[3]},
                "apf": {"requested": mode.apf(), "enabled_cpus": apf_cpus, "accepted": async_faults,
                    "declined": 0, "page_ready_tokens": async_faults, "woken": async_faults, "wake_alls": 0,
                    "ring_errors": 0},
                "check": {"words_checked": 19181056, "mismatches": 0}},
            "check": {"words_checked": 19181056, "mismatches": 0}
        })
    }

    fn rows() -> Vec<Row> {
        Mode::ALL.map(|m| Row::from_report(m, 1000, if m == Mode::Reference { 64 } else { 12 }, &report(m))).to_vec()
    }

    /// exits_per_async_fault = 1 + (async - sync guest-caused exits) / async faults; missing
    /// counters give none.
    #[test]
    fn exits_per_async_fault() {
        let with_exits = |mode: Mode, exits: u64, irq: u64| {
            let mut v = report(mode);
            v["hyp"]["exits"] = json!(exits);
            v["hyp"]["irq_exits"] = json!(irq);
            Row::from_report(mode, 1000, 12, &v)
        };
        // Sync: 50,000 exits, 5,000 of them interrupts; async: 140,000 and 17,000, 39,233 faults.
        let rows = [with_exits(Mode::Synchronous, 50_000, 5_000), with_exits(Mode::Asynchronous, 140_000, 17_000)];
        assert_eq!(rows[1].guest_exits, Some(123_000));
        let c = Comparison::of(&rows, 8);
        assert_eq!(c.exits_per_async_fault, Some(2.988), "1 + (123000 - 45000) / 39233");
        assert_eq!(Comparison::of(&self::rows(), 8).exits_per_async_fault, None, "no exit counters");
    }

    /// The hypervisor's own time per asynchronous fault: its three parts over the asynchronous
    /// faults; exits_per_async_fault is not given when most faults waited.
    #[test]
    fn hypervisor_time_per_async_fault_and_mostly_synchronous_runs() {
        let mut v = report(Mode::Asynchronous);
        let faults = v["hyp"]["async_faults"].as_u64().unwrap();
        v["hyp"]["el2_ns_async_fault"] = json!(faults * 4_000);
        v["hyp"]["el2_ns_handler_answer"] = json!(faults * 3_500);
        v["hyp"]["el2_ns_interrupt"] = json!(faults * 1_250);
        let rows = [
            Row::from_report(Mode::Synchronous, 1000, 12, &report(Mode::Synchronous)),
            Row::from_report(Mode::Asynchronous, 1000, 12, &v),
        ];
        let c = Comparison::of(&rows, 8);
        assert_eq!(c.hyp_us_per_async_fault_parts, Some([4.0, 3.5, 1.25]));
        assert_eq!(c.hyp_us_per_async_fault, Some(8.75));
        assert_eq!(Comparison::of(&self::rows(), 8).hyp_us_per_async_fault, None, "no counters");

        let with_exits = |mode: Mode, blocking: u64| {
            let mut v = report(mode);
            v["hyp"]["exits"] = json!(50_000);
            v["hyp"]["irq_exits"] = json!(0);
            v["mem"]["blocking_faults"] = json!(blocking);
            Row::from_report(mode, 0, 12, &v)
        };
        let f = v["hyp"]["async_faults"].as_u64().unwrap();
        let mostly_sync = [with_exits(Mode::Synchronous, 40_000), with_exits(Mode::Asynchronous, f + 1)];
        assert_eq!(Comparison::of(&mostly_sync, 8).exits_per_async_fault, None);
        let mostly_async = [with_exits(Mode::Synchronous, 40_000), with_exits(Mode::Asynchronous, f)];
        assert_eq!(Comparison::of(&mostly_async, 8).exits_per_async_fault, Some(1.0));
    }

    #[test]
    fn ratios() {
        let r = Ratios::new(Some(4050), Some(48671), Some(22108));
        assert_eq!(r.speedup, Some(2.202), "48671 / 22108");
        assert_eq!(r.latency_hidden_pct, Some(59.5), "26563 / 44621");
        assert_eq!(r.async_vs_bound, Some(5.459), "22108 / 4050");
        assert_eq!((r.reference_ms, r.synchronous_ms, r.asynchronous_ms), (Some(4050), Some(48671), Some(22108)));
        // At the floor: all of it hidden; slower than synchronous: negative, shown as it is.
        assert_eq!(Ratios::new(Some(100), Some(300), Some(100)).latency_hidden_pct, Some(100.0));
        assert_eq!(Ratios::new(Some(100), Some(300), Some(400)).latency_hidden_pct, Some(-50.0));
        assert_eq!(Ratios::new(Some(100), Some(300), Some(50)).latency_hidden_pct, Some(125.0));
    }

    #[test]
    fn ratio_division_guards() {
        let r = Ratios::new(Some(0), Some(10), Some(0));
        assert_eq!((r.speedup, r.async_vs_bound), (None, None), "no division by a zero time");
        assert_eq!(r.latency_hidden_pct, Some(100.0));
        // No fault latency to hide (sync at or below the floor): no percentage.
        assert_eq!(Ratios::new(Some(500), Some(500), Some(400)).latency_hidden_pct, None);
        assert_eq!(Ratios::new(Some(600), Some(500), Some(400)).latency_hidden_pct, None);
        // A missing time: no ratio that needs it.
        let r = Ratios::new(None, Some(500), Some(250));
        assert_eq!((r.speedup, r.latency_hidden_pct, r.async_vs_bound), (Some(2.0), None, None));
        let r = Ratios::new(Some(100), Some(500), None);
        assert_eq!((r.speedup, r.latency_hidden_pct, r.async_vs_bound), (None, None, None));
        let lines = r.lines();
        assert!(lines.contains("= 500 / -") && lines.contains("= - / 100") && lines.contains("= -\n"), "{lines}");
    }

    #[test]
    fn rows_and_comparison_from_reports() {
        let rows = rows();
        let a = &rows[2];
        assert_eq!(
            (a.run, a.apf, a.async_faults, a.fault_bound_ms),
            (Mode::Asynchronous, true, Some(39233), Some(15936))
        );
        assert_eq!(
            (a.figures.elapsed_ms, a.figures.page_ins, a.figures.blocking_faults),
            (Some(21519), Some(42389), Some(4100))
        );
        assert_eq!(
            (a.figures.stall_mean_us, a.figures.mismatches, a.phase_ms("write")),
            (Some(1007.7), Some(0), Some(5582))
        );
        assert_eq!(rows[0].figures.stall_mean_us, None, "no blocking fault: no stall figure");
        assert_eq!(rows[0].fault_bound_ms, Some(2876));

        let c = Comparison::of(&rows, 3);
        assert_eq!(c.elapsed, Ratios::new(Some(4098), Some(48754), Some(21519)).with_tasks(3));
        // The bound: 3 tasks allow at most 3x (sync / ref would allow 11.9x).
        assert_eq!(c.elapsed.speedup_bound, Some(3.0));
        let many = Ratios::new(Some(4098), Some(48754), Some(21519)).with_tasks(16);
        assert_eq!(many.speedup_bound, Some(11.897), "48754 / 4098: no better than the reference");
        assert_eq!(
            (c.elapsed.speedup, c.elapsed.latency_hidden_pct, c.elapsed.async_vs_bound),
            (Some(2.266), Some(61.0), Some(5.251))
        );
        assert_eq!(c.fault_bound_phases, Ratios::new(Some(2876), Some(42766), Some(15936)).with_tasks(3));
        assert_eq!(c.fault_bound_phases.latency_hidden_pct, Some(67.3));

        // A missing phase: no fault-bound time, and no ratio from it.
        let mut v = report(Mode::Asynchronous);
        v["guest"]["phases_ms"].as_object_mut().unwrap().remove("mix");
        let mut rows = rows;
        rows[2] = Row::from_report(Mode::Asynchronous, 1000, 12, &v);
        assert_eq!(rows[2].fault_bound_ms, None);
        let c = Comparison::of(&rows, 3);
        assert_eq!((c.fault_bound_phases.speedup, c.fault_bound_phases.latency_hidden_pct), (None, None));
        assert_eq!(c.elapsed.speedup, Some(2.266));
        // A missing run: no ratio from it.
        let c = Comparison::of(&rows[..2], 3);
        assert_eq!((c.elapsed.asynchronous_ms, c.elapsed.speedup), (None, None));
    }

    #[test]
    fn correct_runs_pass() {
        for mode in Mode::ALL {
            assert_eq!(check_run(mode, 1, &report(mode)), Vec::<String>::new(), "{mode:?}");
        }
    }

    /// The failures of `mode`'s report changed by `edit`.
    fn failures_of(mode: Mode, vcpus: u32, edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut v = report(mode);
        edit(&mut v);
        check_run(mode, vcpus, &v)
    }

    fn one(failures: Vec<String>, want: &str) {
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains(want), "{want:?} not in {failures:?}");
    }

    #[test]
    fn each_failure_has_its_message() {
        one(
            failures_of(Mode::Reference, 1, |v| {
                v["ok"] = json!(false);
                v["failure"] = json!("timed out after 120 s; QEMU was killed");
            }),
            "reference run failed: timed out after 120 s",
        );
        one(
            failures_of(Mode::Synchronous, 1, |v| v["check"]["mismatches"] = json!(3)),
            "synchronous run: the integrity check found 3 mismatched words",
        );
        one(
            failures_of(Mode::Synchronous, 1, |v| v["check"] = Value::Null),
            "synchronous run: the report has no check.mismatches",
        );
        one(
            failures_of(Mode::Asynchronous, 1, |v| v["hyp"]["apf"]["posted"] = json!(39232)),
            "accepted 39233 asynchronous page faults and posted 39232 page_ready entries with 0 wake-alls",
        );
        one(
            failures_of(Mode::Synchronous, 1, |v| v["hyp"]["apf"] = Value::Null),
            "synchronous run: the report has no hyp.apf",
        );
        one(
            failures_of(Mode::Asynchronous, 1, |v| v["hyp"]["async_faults"] = json!(0)),
            "asynchronous run: no page fault was resolved asynchronously",
        );
        one(
            failures_of(Mode::Asynchronous, 2, |_| {}),
            "the guest enabled asynchronous page faults on 1 of its 2 vCPUs",
        );
        one(
            failures_of(Mode::Asynchronous, 1, |v| v["guest"]["apf"]["enabled_cpus"] = json!(0)),
            "on 0 of its 1 vCPUs",
        );
        one(
            failures_of(Mode::Synchronous, 1, |v| v["hyp"]["async_faults"] = json!(5)),
            "synchronous run (apf=off): the hypervisor delivered 5 asynchronous page faults",
        );
        one(
            failures_of(Mode::Reference, 1, |v| v["hyp"]["async_faults"] = json!(1)),
            "reference run (apf=off): the hypervisor delivered 1 asynchronous",
        );
        one(
            failures_of(Mode::Asynchronous, 1, |v| {
                v["hyp"].as_object_mut().unwrap().remove("async_faults");
            }),
            "asynchronous run: the report has no hyp.async_faults",
        );
        one(
            failures_of(Mode::Asynchronous, 1, |v| v["guest"]["apf"] = Value::Null),
            "asynchronous run: the report has no guest.apf.enabled_cpus",
        );
        // Both missing in an ok run: one message each.
        assert_eq!(failures_of(Mode::Asynchronous, 1, |v| v["hyp"] = json!({})).len(), 2);
    }

    #[test]
    fn several_failures_and_a_run_that_never_ran() {
        let f = failures_of(Mode::Asynchronous, 2, |v| {
            v["check"]["mismatches"] = json!(1);
            v["hyp"]["async_faults"] = json!(0);
        });
        assert_eq!(f.len(), 3, "{f:?}");
        // A run that could not start: one message, not one per missing figure.
        let v = json!({"scenario": SCENARIO, "ok": false, "failure": "cannot start QEMU"});
        assert_eq!(check_run(Mode::Asynchronous, 1, &v), ["asynchronous run failed: cannot start QEMU"]);
        assert_eq!(check_run(Mode::Synchronous, 1, &Value::Null), ["synchronous run failed: the run did not succeed"]);
        let row = Row::from_report(Mode::Asynchronous, 1000, 12, &v);
        assert_eq!((row.figures.elapsed_ms, row.async_faults, row.fault_bound_ms), (None, None, None));
        assert!(table(&[row]).lines().nth(1).unwrap().ends_with("    -          -"), "missing figures show as -");
    }

    #[test]
    fn table_lines() {
        let t = table(&rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "run",
                "R_MiB",
                "apf",
                "elapsed_ms",
                "write",
                "verify",
                "mix",
                "final_verify",
                "page_ins",
                "async_faults",
                "blocking_faults",
                "stall_mean_us",
                "mismatches"
            ]
        );
        let cols: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "asynchronous",
                "12",
                "on",
                "21519",
                "5582",
                "5331",
                "5031",
                "5574",
                "42389",
                "39233",
                "4100",
                "1007.7",
                "0"
            ]
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["reference", "64", "off", "4098", "1221", "1073", "869", "934", "0", "0", "0", "-", "0"]);
        for line in &lines[1..] {
            assert_eq!(line.len(), lines[0].len(), "aligned: {t}");
        }
    }

    #[test]
    fn ratio_lines() {
        let l = Comparison::of(&rows(), 3).elapsed.lines();
        let lines: Vec<&str> = l.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[3].contains("min(T, sync / ref)") && lines[3].ends_with("= 3.00x (measured: 76 % of it)"), "{l}");
        assert!(lines[0].contains("sync / async") && lines[0].ends_with("48754 / 21519     = 2.27x"), "{l}");
        assert!(lines[1].ends_with("27235 / 44656     = 61.0 %"), "{l}");
        assert!(lines[2].ends_with("21519 / 4098      = 5.25x"), "{l}");
    }

    #[test]
    fn header_has_the_settings() {
        let p = plan_of(&["--vcpus", "2", "--seed", "7"]).unwrap();
        let s = Settings::new(&p, "QEMU emulator version 10.0.2");
        assert_eq!((s.ns_per_instruction, s.pcpus, s.reference_resident_mib), (8, 2, 64));
        let cmdlines: Vec<&str> = s.runs.iter().map(|r| r.guest_cmdline.as_str()).collect();
        assert_eq!(cmdlines, ["apf=off tasks=8", "apf=off tasks=8", "apf=on tasks=8"]);
        let h = s.header();
        for want in [
            "QEMU emulator version 10.0.2",
            "-icount shift=3,sleep=off: virtual time, 8 ns per guest instruction",
            "2 vCPU(s) on 2 physical CPU(s)",
            "cpu max",
            "seed 7",
            "G = 64 MiB, resident R = 12 MiB, backing-store latency L = 1000 µs",
            LATENCY_MODEL,
            "8 tasks per vCPU (--tasks)",
            "reference    R =   64 MiB, apf=off tasks=8",
            "synchronous  R =   12 MiB, apf=off tasks=8",
            "asynchronous R =   12 MiB, apf=on tasks=8",
            "under -icount QEMU runs the 2 vCPUs one at a time on one host thread",
        ] {
            assert!(h.contains(want), "{want:?} missing from {h}");
        }
        let one = Settings::new(&plan_of(&[]).unwrap(), "QEMU emulator version 10.0.2").header();
        assert!(!one.contains("one at a time"), "{one}");
    }

    #[test]
    fn json_paths() {
        let root = Path::new("/w");
        assert_eq!(default_json(root), Path::new("/w/target/xtask/compare/overcommit-apf.json"));
    }
}
