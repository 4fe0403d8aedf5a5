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
//!
//! This module runs the three runs; the rest is by concern: [`plan`](mod@plan) (the options
//! the comparison takes and refuses, its defaults, the plans of its runs), [`figures`] (a row
//! per run, the ratios, the per-fault figures, [`check_run`]) and [`report`] (the settings, the
//! table, the JSON document and what is printed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::{Kind, SCENARIO};
use crate::cli::RunPlan;
use crate::toolchain::Toolchain;
use crate::{bench, build, run};

use figures::round_to;
use plan::ComparePlan;
use report::{compare_dir, default_json, print_result, CompareJson, Reports, Settings, COMPARISON};

pub use figures::{check_run, Comparison, Row};
pub use plan::{plan, plan_runs, selected, CompareRun, Params};
pub use report::LATENCY_MODEL;

mod figures;
mod plan;
mod report;
#[cfg(test)]
mod tests;

/// The guest command-line key that turns asynchronous page faults on (`guest::cmdline`).
const GUEST_OPT_APF: &str = "apf";

/// One of the three runs (of the main job, and of `cargo xtask linux --apf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// R = G: no paging I/O (the main job's guest with `apf=off`).
    Reference,
    /// R < G, asynchronous page faults off.
    Synchronous,
    /// R < G, asynchronous page faults on.
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

/// Builds once (unless `--no-build`), runs the three runs (a failed one is reported and the
/// others still run), prints the settings, the table and the ratios, and writes the JSON
/// document. Ok(true) if every run was correct ([`check_run`]).
pub fn run_compare(root: &Path, tc: &Toolchain, plan: &ComparePlan) -> Result<bool> {
    let start = Instant::now();
    let settings = Settings::new(plan, &tc.qemu_version);
    if !plan.no_build {
        if plan.runs.iter().any(|r| r.plan.trace.is_some()) {
            build::build_traced(root)?;
        } else {
            build::build(root, build::Select::BOTH)?;
        }
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
            if let Some(trace) = report.get("trace").filter(|t| !t.is_null()) {
                println!("compare: {} {}", r.mode.name(), crate::trace::describe(trace));
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

    print_result(&doc, &json_path, plan.json.as_deref());
    Ok(ok)
}
