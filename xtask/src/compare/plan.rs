//! What the comparison runs: the `run` options it takes and refuses, its defaults, and the
//! validated plans of its three runs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::bench;
use crate::cli::{Given, RunArgs, RunPlan};

use super::Mode;

/// Defaults of the comparison: a clear, repeatable result in well under a minute on 2 host
/// cores (each overcommitted run takes about 5 s of host time, the reference under 1 s).
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_GUEST_MIB: u32 = 64;
pub const DEFAULT_RESIDENT_MIB: u32 = 12;
pub const DEFAULT_LATENCY_US: u64 = 1000;
pub const DEFAULT_ICOUNT: u32 = 3;
/// Tasks per vCPU of the workload (`--tasks`): how many page-ins of one vCPU can overlap.
pub const DEFAULT_TASKS: u32 = 8;

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
pub(super) fn refused(args: &RunArgs, given: &Given) -> Option<(&'static str, &'static str)> {
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
    let mut runs = plan_runs(&params)?;
    if let Some(file) = &args.trace {
        // One trace per row: FILE with the row's name inserted.
        for run in &mut runs {
            let file = crate::trace::with_row(file, run.mode.name());
            run.plan.trace = Some(crate::trace::TracePlan { file, mib: args.trace_mib });
        }
    }
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
            let mut plan = run_args.validate().with_context(|| format!("the comparison's {} run", mode.name()))?;
            // A measurement: the lock-order check's cost stays out of the figures.
            plan.lock_check = false;
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
