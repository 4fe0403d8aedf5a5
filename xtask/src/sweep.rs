//! `cargo xtask bench`: the APF sweep (issue 9, item 6).
//!
//! For every vCPU count N, tasks per vCPU T and backing-store latency L of its lists it makes
//! the main job's comparison (`compare`): the `overcommit` workload under `-icount` as a
//! **reference** run (R = G, no paging I/O), a **synchronous** run (R < G, `apf=off`) and an
//! **asynchronous** run (R < G, `apf=on`), with the same rows, ratios and correctness checks.
//! The reference run does not depend on L (it does no paging I/O), so it runs once per (N, T)
//! and serves every L of that pair.
//!
//! Each point gets the speedup (synchronous / asynchronous guest time), its bound min(T, sync /
//! ref), the share of the fault latency hidden, and asynchronous / synchronous time, flagged when
//! above [`NEVER_SLOWER_FACTOR`] (the "never slower" rule). It is a benchmark: the
//! figures never fail it; a run that fails, a mismatch, a lost page_ready, no asynchronous fault
//! with `apf=on` or one with `apf=off` does ([`compare::check_run`]). Points the guest cannot run
//! (T × N above its task slots) are skipped and listed.
//!
//! It writes `apf-sweep.csv` (one line per point), `apf-sweep.json` (settings, points, and every
//! run's row with the path of its full report) and `apf-sweep.svg` (`plot`) to `--out`
//! (default `target/xtask/bench`); the committed copy is in [`COMMITTED_DIR`].

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use crate::bench::{self, SCENARIO};
use crate::build;
use crate::cli::{BenchArgs, MAX_WORKLOAD_TASKS};
use crate::compare::{self, CompareRun, Comparison, Mode, Params, Row};
use crate::plot;
use crate::toolchain::Toolchain;

/// The files' name (`.csv`, `.json`, `.svg`).
pub const NAME: &str = "apf-sweep";
/// Where the committed plot and CSV are, under the workspace root.
pub const COMMITTED_DIR: &str = "docs/bench";
/// The never-slower rule: the asynchronous run may take at most this factor of the synchronous
/// run's time.
pub const NEVER_SLOWER_FACTOR: f64 = 1.02;

/// The runs of one (N, T) pair: the reference once, then synchronous and asynchronous per L.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub vcpus: u32,
    pub tasks: u32,
    /// The reference run (planned with the first L; it does no paging I/O).
    pub reference: CompareRun,
    /// Per L, ascending: its synchronous and asynchronous runs.
    pub points: Vec<(u64, CompareRun, CompareRun)>,
}

/// An (N, T) pair the sweep does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub vcpus: u32,
    pub tasks: u32,
    pub reason: String,
}

/// A validated sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    /// Ascending, without repeats.
    pub latencies_us: Vec<u64>,
    pub tasks: Vec<u32>,
    pub vcpus: Vec<u32>,
    pub cpu: String,
    pub guest_mib: u32,
    pub resident_mib: u32,
    pub icount: u32,
    pub seed: u64,
    pub timeout_secs: u64,
    pub host_load: u32,
    pub no_build: bool,
    /// `--out`, if given.
    pub out: Option<PathBuf>,
    /// By N, then T.
    pub groups: Vec<Group>,
    pub skipped: Vec<Skipped>,
}

impl SweepPlan {
    /// QEMU runs in all.
    pub fn runs(&self) -> usize {
        self.groups.iter().map(|g| 1 + 2 * g.points.len()).sum()
    }

    /// The command that makes this sweep, every setting spelled out.
    pub fn command(&self) -> String {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let list32 = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut s = format!(
            "cargo xtask bench --latencies {} --tasks {} --vcpus {} --guest-mib {} --resident-mib {} --icount {} \
             --seed {} --cpu {}",
            list(&self.latencies_us),
            list32(&self.tasks),
            list32(&self.vcpus),
            self.guest_mib,
            self.resident_mib,
            self.icount,
            self.seed,
            self.cpu
        );
        if self.host_load > 0 {
            let _ = write!(s, " --host-load {}", self.host_load);
        }
        s
    }
}

/// Sorted, without repeats; an empty list is an error naming `option`.
fn sorted<T: Ord + Copy>(values: &[T], option: &str) -> Result<Vec<T>> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        bail!("{option}: give at least one value");
    }
    Ok(v)
}

/// Plans the sweep: every run's plan goes through the same validation as `cargo xtask run`, so
/// a bad option fails before anything is built or run.
pub fn plan(args: &BenchArgs) -> Result<SweepPlan> {
    let latencies_us = sorted(&args.latencies, "--latencies")?;
    let tasks = sorted(&args.tasks, "--tasks")?;
    let vcpus = sorted(&args.vcpus, "--vcpus")?;
    let mut groups = Vec::new();
    let mut skipped = Vec::new();
    for &n in &vcpus {
        for &t in &tasks {
            if t.saturating_mul(n) > MAX_WORKLOAD_TASKS && (1..=crate::cli::MAX_TASKS_PER_VCPU).contains(&t) {
                skipped.push(Skipped {
                    vcpus: n,
                    tasks: t,
                    reason: format!(
                        "{t} tasks on each of {n} vCPUs is {} tasks; the guest has {MAX_WORKLOAD_TASKS} task slots",
                        t * n
                    ),
                });
                continue;
            }
            let params = |latency_us: u64| Params {
                vcpus: n,
                cpu: args.cpu.clone(),
                guest_mib: args.guest_mib,
                resident_mib: args.resident_mib,
                latency_us,
                icount: args.icount,
                seed: args.seed,
                timeout_secs: args.timeout,
                tasks: t,
                host_load: args.host_load,
            };
            let mut reference = None;
            let mut points = Vec::new();
            for &l in &latencies_us {
                let runs = compare::plan_runs(&params(l))
                    .with_context(|| format!("the sweep's point N = {n}, T = {t}, L = {l} µs"))?;
                let [r, s, a]: [CompareRun; 3] = runs.try_into().expect("three runs in Mode::ALL order");
                reference.get_or_insert(r);
                points.push((l, s, a));
            }
            let reference = reference.expect("at least one latency");
            groups.push(Group { vcpus: n, tasks: t, reference, points });
        }
    }
    if groups.is_empty() {
        bail!("no point of the sweep can run: every T × N is above the guest's {MAX_WORKLOAD_TASKS} task slots");
    }
    Ok(SweepPlan {
        latencies_us,
        tasks,
        vcpus,
        cpu: args.cpu.clone(),
        guest_mib: args.guest_mib,
        resident_mib: args.resident_mib,
        icount: args.icount,
        seed: args.seed,
        timeout_secs: args.timeout,
        host_load: args.host_load,
        no_build: args.no_build,
        out: args.out.clone(),
        groups,
        skipped,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One point of the sweep: the main job's ratios at (N, T, L).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub vcpus: u32,
    pub tasks: u32,
    pub latency_us: u64,
    /// Guest elapsed times (virtual under -icount).
    pub reference_ms: Option<u64>,
    pub synchronous_ms: Option<u64>,
    pub asynchronous_ms: Option<u64>,
    /// synchronous / asynchronous.
    pub speedup: Option<f64>,
    /// min(T, synchronous / reference).
    pub speedup_bound: Option<f64>,
    /// (synchronous − asynchronous) / (synchronous − reference), %.
    pub latency_hidden_pct: Option<f64>,
    /// asynchronous / synchronous.
    pub async_over_sync: Option<f64>,
    /// The asynchronous run took more than [`NEVER_SLOWER_FACTOR`] × the synchronous one's time.
    pub slower: bool,
    /// The speedup over the fault-bound phases only (verify, mix, final_verify).
    pub fault_bound_speedup: Option<f64>,
    /// Faults the asynchronous run resolved asynchronously, and those that waited in it.
    pub async_faults: Option<u64>,
    pub async_run_blocking_faults: Option<u64>,
    pub exits_per_async_fault: Option<f64>,
    /// Every run of the point (the reference included) was correct.
    pub correct: bool,
    pub failures: Vec<String>,
}

impl Point {
    /// The point of the three rows (reference, synchronous, asynchronous) and the failures of
    /// their runs.
    pub fn new(vcpus: u32, tasks: u32, latency_us: u64, rows: &[Row], failures: Vec<String>) -> Point {
        let c = Comparison::of(rows, tasks);
        let e = c.elapsed;
        let async_row = rows.iter().find(|r| r.run == Mode::Asynchronous);
        let async_over_sync = match (e.asynchronous_ms, e.synchronous_ms) {
            (Some(a), Some(s)) if s > 0 => Some(round3(a as f64 / s as f64)),
            _ => None,
        };
        let slower = matches!((e.asynchronous_ms, e.synchronous_ms),
            (Some(a), Some(s)) if a as f64 > s as f64 * NEVER_SLOWER_FACTOR);
        Point {
            vcpus,
            tasks,
            latency_us,
            reference_ms: e.reference_ms,
            synchronous_ms: e.synchronous_ms,
            asynchronous_ms: e.asynchronous_ms,
            speedup: e.speedup,
            speedup_bound: e.speedup_bound,
            latency_hidden_pct: e.latency_hidden_pct,
            async_over_sync,
            slower,
            fault_bound_speedup: c.fault_bound_phases.speedup,
            async_faults: async_row.and_then(|r| r.async_faults),
            async_run_blocking_faults: async_row.and_then(|r| r.figures.blocking_faults),
            exits_per_async_fault: c.exits_per_async_fault,
            correct: failures.is_empty(),
            failures,
        }
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 16] = [
    "vcpus",
    "tasks",
    "latency_us",
    "reference_ms",
    "synchronous_ms",
    "asynchronous_ms",
    "speedup",
    "speedup_bound",
    "latency_hidden_pct",
    "async_over_sync",
    "slower_than_sync",
    "fault_bound_speedup",
    "async_faults",
    "async_run_blocking_faults",
    "exits_per_async_fault",
    "correct",
];

/// The CSV document: a header line and one line per point; a missing figure is an empty field.
pub fn csv(points: &[Point]) -> String {
    fn int(v: Option<u64>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    fn dec(v: Option<f64>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let mut s = CSV_COLUMNS.join(",") + "\n";
    for p in points {
        let fields = [
            p.vcpus.to_string(),
            p.tasks.to_string(),
            p.latency_us.to_string(),
            int(p.reference_ms),
            int(p.synchronous_ms),
            int(p.asynchronous_ms),
            dec(p.speedup),
            dec(p.speedup_bound),
            dec(p.latency_hidden_pct),
            dec(p.async_over_sync),
            p.slower.to_string(),
            dec(p.fault_bound_speedup),
            int(p.async_faults),
            int(p.async_run_blocking_faults),
            dec(p.exits_per_async_fault),
            p.correct.to_string(),
        ];
        s += &(fields.join(",") + "\n");
    }
    s
}

fn times(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

/// The summary table: one line per point, with a flag where APF is slower than the rule allows
/// or a run failed.
pub fn table(points: &[Point]) -> String {
    let int = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{:>5} {:>3} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10}  {}\n",
        "vCPUs", "T", "L_us", "ref_ms", "sync_ms", "async_ms", "speedup", "bound", "hidden", "async/sync", "flag"
    );
    for p in points {
        let mut flag = String::new();
        if p.slower {
            flag += &format!("SLOWER than synchronous (> {NEVER_SLOWER_FACTOR:.2}x)");
        }
        if !p.correct {
            flag += if flag.is_empty() { "FAILED" } else { "; FAILED" };
        }
        let line = format!(
            "{:>5} {:>3} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10}  {flag}",
            p.vcpus,
            p.tasks,
            p.latency_us,
            int(p.reference_ms),
            int(p.synchronous_ms),
            int(p.asynchronous_ms),
            times(p.speedup),
            times(p.speedup_bound),
            p.latency_hidden_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into()),
            p.async_over_sync.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
        );
        s += line.trim_end();
        s.push('\n');
    }
    s
}

/// Per vCPU count, the speedups as a T × L matrix, each with its bound in brackets; `!` marks a
/// point where APF was slower than the rule allows.
pub fn matrix(points: &[Point], latencies_us: &[u64], vcpus: u32) -> String {
    let mut tasks: Vec<u32> = points.iter().filter(|p| p.vcpus == vcpus).map(|p| p.tasks).collect();
    tasks.dedup();
    let mut s = format!("{:>4}", "T");
    for l in latencies_us {
        s += &format!(" {:>16}", format!("L={l}"));
    }
    s.push('\n');
    for t in tasks {
        s += &format!("{t:>4}");
        for &l in latencies_us {
            let cell = points.iter().find(|p| (p.vcpus, p.tasks, p.latency_us) == (vcpus, t, l)).map_or_else(
                || "-".to_string(),
                |p| format!("{}{} [{}]", if p.slower { "!" } else { "" }, times(p.speedup), times(p.speedup_bound)),
            );
            s += &format!(" {cell:>16}");
        }
        s.push('\n');
    }
    s
}

/// The never-slower rule's verdict over the points, one line.
pub fn never_slower_line(points: &[Point]) -> String {
    let measured: Vec<&Point> = points.iter().filter(|p| p.async_over_sync.is_some()).collect();
    let slower: Vec<String> = measured
        .iter()
        .filter(|p| p.slower)
        .map(|p| format!("N={} T={} L={} µs ({:.3})", p.vcpus, p.tasks, p.latency_us, p.async_over_sync.unwrap_or(0.0)))
        .collect();
    if slower.is_empty() {
        format!(
            "never slower: APF took at most {NEVER_SLOWER_FACTOR:.2}x the synchronous time at all {} points",
            measured.len()
        )
    } else {
        format!(
            "never slower: NOT MET at {} of {} points, APF took more than {NEVER_SLOWER_FACTOR:.2}x the synchronous \
             time (async / sync): {}",
            slower.len(),
            measured.len(),
            slower.join(", ")
        )
    }
}

/// What the sweep ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenario: &'static str,
    pub command: String,
    pub qemu_version: String,
    pub icount_shift: u32,
    pub ns_per_instruction: u64,
    pub cpu: String,
    pub seed: u64,
    pub guest_mib: u32,
    pub resident_mib: u32,
    pub reference_resident_mib: u32,
    pub latencies_us: Vec<u64>,
    pub tasks_per_vcpu: Vec<u32>,
    pub vcpus: Vec<u32>,
    pub latency_model: &'static str,
    pub host_load: u32,
    pub timeout_secs: u64,
    pub never_slower_factor: f64,
}

impl Settings {
    pub fn new(plan: &SweepPlan, qemu_version: &str) -> Settings {
        Settings {
            scenario: SCENARIO,
            command: plan.command(),
            qemu_version: qemu_version.to_string(),
            icount_shift: plan.icount,
            ns_per_instruction: 1 << plan.icount,
            cpu: plan.cpu.clone(),
            seed: plan.seed,
            guest_mib: plan.guest_mib,
            resident_mib: plan.resident_mib,
            reference_resident_mib: plan.guest_mib,
            latencies_us: plan.latencies_us.clone(),
            tasks_per_vcpu: plan.tasks.clone(),
            vcpus: plan.vcpus.clone(),
            latency_model: compare::LATENCY_MODEL,
            host_load: plan.host_load,
            timeout_secs: plan.timeout_secs,
            never_slower_factor: NEVER_SLOWER_FACTOR,
        }
    }

    /// The settings in one line, for the plot.
    pub fn line(&self) -> String {
        format!(
            "`{}` workload, G = {} MiB, R = {} MiB (reference: R = G), QEMU -icount shift={},sleep=off ({} ns per \
             instruction), cpu {}, seed {}",
            self.scenario,
            self.guest_mib,
            self.resident_mib,
            self.icount_shift,
            self.ns_per_instruction,
            self.cpu,
            self.seed,
        )
    }
}

/// One run of the sweep, in the JSON document.
#[derive(Debug, Serialize)]
struct RunRow {
    vcpus: u32,
    tasks: u32,
    #[serde(flatten)]
    row: Row,
}

/// The JSON document.
#[derive(Debug, Serialize)]
struct SweepJson<'a> {
    benchmark: &'static str,
    ok: bool,
    wall_seconds: f64,
    settings: &'a Settings,
    skipped: &'a [Skipped],
    points: &'a [Point],
    runs: &'a [RunRow],
}

/// The default output directory.
pub fn default_out(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("bench")
}

/// Writes `text` to `path` through a temporary file.
fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Builds (unless `--no-build`), runs every run of the plan (a failed run is reported and the
/// others still run), prints the points and the summary and writes the CSV, JSON and SVG files.
/// Ok(true) if every run was correct.
pub fn run_sweep(root: &Path, tc: &Toolchain, plan: &SweepPlan) -> Result<bool> {
    let start = Instant::now();
    let out = plan.out.clone().unwrap_or_else(|| default_out(root));
    let settings = Settings::new(plan, &tc.qemu_version);
    println!("bench: {}", settings.command);
    println!("bench: {}; {}", tc.qemu_version, settings.line());
    println!("bench: latency model: {}", settings.latency_model);
    for s in &plan.skipped {
        println!("bench: skipped N = {}, T = {}: {}", s.vcpus, s.tasks, s.reason);
    }
    if !plan.no_build {
        build::build(root, build::Select::BOTH)?;
    }
    let report_dir = default_out(root).join("runs");
    let total = plan.runs();
    let mut done = 0;
    let mut points = Vec::new();
    let mut runs = Vec::new();
    let mut run_one = |run: &CompareRun, n: u32, t: u32, l: u64| -> Result<(Row, Vec<String>)> {
        done += 1;
        let mode = run.mode;
        let what = format!("[{done}/{total}] N = {n}, T = {t}, L = {l} µs, {}", mode.name());
        let name = match mode {
            Mode::Reference => format!("{NAME}-v{n}-t{t}-reference.json"),
            _ => format!("{NAME}-v{n}-t{t}-l{l}-{}.json", mode.name()),
        };
        let report_path = report_dir.join(name);
        let report = compare::execute(root, tc, run, report_path.clone())?;
        let failures = compare::check_run(mode, n, &report);
        let resident = run.plan.resident_mib.unwrap_or(plan.guest_mib);
        let mut row = Row::from_report(mode, l, resident, &report);
        row.figures.report = Some(report_path.strip_prefix(root).unwrap_or(&report_path).to_path_buf());
        let wall = report.get("wall_seconds").and_then(Value::as_f64).unwrap_or(0.0);
        let elapsed = row.figures.elapsed_ms.map_or("-".into(), |ms| ms.to_string());
        match failures.is_empty() {
            true => println!("bench: {what}: ok, {elapsed} ms guest time, {wall:.1} s host time"),
            false => println!("bench: {what}: FAILED: {}", failures.join("; ")),
        }
        runs.push(RunRow { vcpus: n, tasks: t, row: row.clone() });
        Ok((row, failures))
    };
    for g in &plan.groups {
        let first_l = g.points.first().map_or(0, |p| p.0);
        let (reference, ref_failures) = run_one(&g.reference, g.vcpus, g.tasks, first_l)?;
        for (l, sync, asynchronous) in &g.points {
            let (s, s_failures) = run_one(sync, g.vcpus, g.tasks, *l)?;
            let (a, a_failures) = run_one(asynchronous, g.vcpus, g.tasks, *l)?;
            let failures = ref_failures.iter().cloned().chain(s_failures).chain(a_failures).collect();
            let p = Point::new(g.vcpus, g.tasks, *l, &[reference.clone(), s, a], failures);
            println!(
                "bench: N = {}, T = {}, L = {l} µs: speedup {} (bound {}){}",
                p.vcpus,
                p.tasks,
                times(p.speedup),
                times(p.speedup_bound),
                if p.slower { ", SLOWER than synchronous" } else { "" }
            );
            points.push(p);
        }
    }
    let ok = points.iter().all(|p| p.correct);
    let wall_seconds = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;

    let csv_path = out.join(format!("{NAME}.csv"));
    let json_path = out.join(format!("{NAME}.json"));
    let svg_path = out.join(format!("{NAME}.svg"));
    write_text(&csv_path, &csv(&points))?;
    let doc = SweepJson {
        benchmark: NAME,
        ok,
        wall_seconds,
        settings: &settings,
        skipped: &plan.skipped,
        points: &points,
        runs: &runs,
    };
    bench::write_json(&json_path, &doc)?;
    let svg = plot::svg(&points, &plan.latencies_us, &plan.vcpus, &settings)?;
    write_text(&svg_path, &svg)?;

    // The page-in path at each L: the synchronous runs of the first (N, T) pair.
    if let Some(g) = plan.groups.first() {
        let sync_rows: Vec<bench::Row> = runs
            .iter()
            .filter(|r| (r.vcpus, r.tasks, r.row.run) == (g.vcpus, g.tasks, Mode::Synchronous))
            .map(|r| r.row.figures.clone())
            .collect();
        println!(
            "\nbench: the synchronous runs at N = {}, T = {}: the page-in path (stall = fault to resume; overhead = \
             stall mean - L, the hypervisor's own cost; guest times virtual)",
            g.vcpus, g.tasks
        );
        print!("{}", bench::table(&sync_rows));
    }
    println!("\nbench: {}; latency model: {}", settings.line(), settings.latency_model);
    println!(
        "bench: speedup = sync / async guest time; bound = min(T, sync / ref); hidden = (sync - async) / (sync - ref)"
    );
    print!("{}", table(&points));
    for &n in &plan.vcpus {
        if points.iter().any(|p| p.vcpus == n) {
            println!(
                "bench: speedup [bound], {n} vCPU(s) (! = APF slower than {NEVER_SLOWER_FACTOR:.2}x synchronous):"
            );
            print!("{}", matrix(&points, &plan.latencies_us, n));
        }
    }
    for s in &plan.skipped {
        println!("bench: skipped N = {}, T = {}: {}", s.vcpus, s.tasks, s.reason);
    }
    println!("bench: {}", never_slower_line(&points));
    let failed: Vec<&Point> = points.iter().filter(|p| !p.correct).collect();
    for p in &failed {
        println!(
            "bench: FAILED at N = {}, T = {}, L = {} µs: {}",
            p.vcpus,
            p.tasks,
            p.latency_us,
            p.failures.join("; ")
        );
    }
    println!(
        "bench: {} in {wall_seconds:.1} s: {} points ({} runs), {} failed; {}, {}, {}",
        if ok { "ok" } else { "FAILED" },
        points.len(),
        total,
        failed.len(),
        csv_path.display(),
        json_path.display(),
        svg_path.display()
    );
    Ok(ok)
}

/// The suite's smoke case (`bench/smoke`): a one-point sweep (1 vCPU, T = 2, L = 1000 µs, G =
/// 32 MiB, R = 8 MiB: three short runs), written to its own directory; it must be correct, and
/// its CSV, JSON and SVG must hold that point. About 10 s.
pub fn smoke(root: &Path, tc: &Toolchain, timeout_secs: u64) -> Result<String> {
    let out = root.join("target").join("xtask").join("results").join("bench-smoke");
    let timeout = timeout_secs.to_string();
    let out_arg = out.to_string_lossy().into_owned();
    let argv = ["xtask", "bench", "--latencies", "1000", "--tasks", "2", "--vcpus", "1", "--no-build"];
    let argv = argv.into_iter().chain(["--timeout", &timeout, "--out", &out_arg]);
    let args = match crate::cli::Cli::try_parse_from(argv)?.command {
        crate::cli::Command::Bench(b) => b,
        other => bail!("expected bench, got {other:?}"),
    };
    let plan = plan(&args)?;
    if !run_sweep(root, tc, &plan)? {
        bail!("the one-point sweep was not correct (see its FAILED lines)");
    }
    let csv_text = fs::read_to_string(out.join(format!("{NAME}.csv")))?;
    let lines: Vec<&str> = csv_text.lines().collect();
    if lines.len() != 2 || !lines[1].starts_with("1,2,1000,") || !lines[1].ends_with(",true") {
        bail!("{NAME}.csv: expected the header and the point 1,2,1000,...,true: {csv_text}");
    }
    let svg = fs::read_to_string(out.join(format!("{NAME}.svg")))?;
    if !svg.starts_with("<svg") || !svg.contains("T = 2") {
        bail!("{NAME}.svg is not the plot of the point");
    }
    let doc: Value = serde_json::from_str(&fs::read_to_string(out.join(format!("{NAME}.json")))?)?;
    let point = &doc["points"][0];
    let (speedup, bound) = (point["speedup"].as_f64(), point["speedup_bound"].as_f64());
    match (speedup, bound) {
        (Some(s), Some(b)) => Ok(format!("N = 1, T = 2, L = 1000 µs: speedup {s:.2}x, bound {b:.2}x; csv, json, svg")),
        _ => bail!("{NAME}.json: the point has no speedup or bound: {point}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use serde_json::json;

    fn parse(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["xtask", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("arguments parse").command {
            Command::Bench(b) => b,
            other => panic!("expected bench, got {other:?}"),
        }
    }

    fn plan_of(args: &[&str]) -> Result<SweepPlan> {
        plan(&parse(args))
    }

    #[test]
    fn default_plan() {
        let p = plan_of(&[]).unwrap();
        assert_eq!(p.latencies_us, [0, 20, 100, 1000, 10_000]);
        assert_eq!((p.tasks.as_slice(), p.vcpus.as_slice()), (&[1, 2, 4, 8, 16][..], &[1, 4][..]));
        assert_eq!((p.guest_mib, p.resident_mib, p.icount, p.seed, p.cpu.as_str()), (32, 8, 3, 1, "max"));
        // 4 vCPUs × 16 tasks = 64 > 39 task slots: skipped, and said so.
        assert_eq!(p.skipped.len(), 1);
        assert_eq!((p.skipped[0].vcpus, p.skipped[0].tasks), (4, 16));
        assert!(p.skipped[0].reason.contains("64 tasks") && p.skipped[0].reason.contains("39 task slots"));
        let pairs: Vec<(u32, u32)> = p.groups.iter().map(|g| (g.vcpus, g.tasks)).collect();
        assert_eq!(pairs, [(1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (4, 1), (4, 2), (4, 4), (4, 8)]);
        // One reference per (N, T), two runs per L: 9 + 9 × 5 × 2.
        assert_eq!(p.runs(), 99);
        for g in &p.groups {
            let r = &g.reference;
            assert_eq!(r.mode, Mode::Reference);
            assert_eq!((r.plan.vcpus, r.plan.pcpus, r.plan.resident_mib), (g.vcpus, g.vcpus, Some(32)));
            assert_eq!(r.plan.guest_cmdline.as_deref(), Some(format!("apf=off tasks={}", g.tasks).as_str()));
            let ls: Vec<u64> = g.points.iter().map(|p| p.0).collect();
            assert_eq!(ls, [0, 20, 100, 1000, 10_000]);
            for (l, s, a) in &g.points {
                assert_eq!((s.mode, a.mode), (Mode::Synchronous, Mode::Asynchronous));
                for (run, apf) in [(s, "off"), (a, "on")] {
                    let rp = &run.plan;
                    assert_eq!((rp.backing.latency_us, rp.resident_mib, rp.guest_mib), (*l, Some(8), 32));
                    assert_eq!((rp.vcpus, rp.pcpus, rp.icount), (g.vcpus, g.vcpus, Some(3)));
                    assert_eq!(rp.guest_cmdline.as_deref(), Some(format!("apf={apf} tasks={}", g.tasks).as_str()));
                    assert!(rp.quiet && rp.json.is_none());
                }
            }
        }
        assert_eq!(
            p.command(),
            "cargo xtask bench --latencies 0,20,100,1000,10000 --tasks 1,2,4,8,16 --vcpus 1,4 --guest-mib 32 \
             --resident-mib 8 --icount 3 --seed 1 --cpu max"
        );
    }

    #[test]
    fn options_sorted_and_validated() {
        let p = plan_of(&["--latencies", "1000,0,1000", "--tasks", "8", "--vcpus", "2", "--host-load", "1"]).unwrap();
        assert_eq!((p.latencies_us.as_slice(), p.runs()), (&[0, 1000][..], 5));
        assert!(p
            .command()
            .ends_with("--vcpus 2 --guest-mib 32 --resident-mib 8 --icount 3 --seed 1 --cpu max --host-load 1"));
        assert!(p.groups[0].points.iter().all(|(_, s, a)| s.plan.host_load == 1 && a.plan.host_load == 1));
        let p = plan_of(&["--guest-mib", "64", "--resident-mib", "12", "--out", "docs/bench", "--no-build"]).unwrap();
        assert_eq!((p.guest_mib, p.resident_mib, p.no_build), (64, 12, true));
        assert_eq!(p.out.as_deref(), Some(Path::new("docs/bench")));

        let err = format!("{:#}", plan_of(&["--resident-mib", "32"]).unwrap_err());
        assert!(err.contains("not below --guest-mib 32"), "{err}");
        let err = format!("{:#}", plan_of(&["--latencies", "2000000"]).unwrap_err());
        assert!(err.contains("L = 2000000"), "{err}");
        assert!(plan_of(&["--tasks", "17"]).is_err(), "out of range: an error, not a skip");
        assert!(plan_of(&["--tasks", "0"]).is_err());
        assert!(plan_of(&["--vcpus", "9"]).is_err());
        assert!(plan_of(&["--tasks", "16", "--vcpus", "4"]).unwrap_err().to_string().contains("no point"));
        assert!(Cli::try_parse_from(["xtask", "bench", "--latencies", ""]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--tasks", "x"]).is_err());
    }

    /// A report of an `overcommit` run with this elapsed time (and its phases in quarters).
    fn report(mode: Mode, elapsed: u64) -> Value {
        let q = elapsed / 4;
        let async_faults = if mode.apf() { 17_807 } else { 0 };
        json!({
            "scenario": "overcommit", "ok": true, "failure": null,
            "hyp": {"async_faults": async_faults, "exits": if mode.apf() { 60_000 } else { 40_000 }, "irq_exits": 5_000,
                "apf": {"accepted": async_faults, "posted": async_faults, "wake_alls": 0}},
            "mem": {"page_ins": 17_998, "blocking_faults": if mode.apf() { 1 } else { 18_018 }},
            "guest": {"elapsed_ms": elapsed, "apf": {"enabled_cpus": 1},
                "phases_ms": {"write": elapsed - 3 * q, "verify": q, "mix": q, "final_verify": q}},
            "check": {"mismatches": 0}
        })
    }

    fn rows(reference: u64, sync: u64, asynchronous: u64) -> Vec<Row> {
        [(Mode::Reference, reference), (Mode::Synchronous, sync), (Mode::Asynchronous, asynchronous)]
            .map(|(m, ms)| Row::from_report(m, 1000, 8, &report(m, ms)))
            .to_vec()
    }

    #[test]
    fn a_point_and_its_ratios() {
        let p = Point::new(1, 8, 1000, &rows(1882, 182_527, 25_421), Vec::new());
        assert_eq!((p.reference_ms, p.synchronous_ms, p.asynchronous_ms), (Some(1882), Some(182_527), Some(25_421)));
        assert_eq!(p.speedup, Some(7.18), "182527 / 25421");
        assert_eq!(p.speedup_bound, Some(8.0), "min(8, 96.99)");
        assert_eq!(p.latency_hidden_pct, Some(87.0));
        assert_eq!(p.async_over_sync, Some(0.139));
        assert!(!p.slower && p.correct);
        assert_eq!((p.async_faults, p.async_run_blocking_faults), (Some(17_807), Some(1)));
        assert_eq!(p.exits_per_async_fault, Some(2.123), "1 + (55000 - 35000) / 17807");
        assert!(p.fault_bound_speedup.is_some());
        // Bound from sync / ref when it is below T.
        let p = Point::new(4, 16, 0, &rows(2000, 3000, 2900), Vec::new());
        assert_eq!(p.speedup_bound, Some(1.5));
    }

    #[test]
    fn never_slower_flag_is_above_two_percent() {
        let at = |asynchronous| Point::new(1, 1, 0, &rows(1000, 10_000, asynchronous), Vec::new());
        assert!(!at(10_200).slower, "exactly 1.02x: allowed");
        assert!(at(10_201).slower);
        assert_eq!(at(10_201).async_over_sync, Some(1.02), "rounded for show, flagged on the exact times");
        assert!(!at(9_000).slower);
        // A missing time is no verdict.
        let mut r = rows(1000, 10_000, 20_000);
        r.pop();
        let p = Point::new(1, 1, 0, &r, vec!["asynchronous run failed: x".into()]);
        assert!(!p.slower && !p.correct && p.async_over_sync.is_none() && p.speedup.is_none());

        let points = [at(9_000), at(10_201)];
        let line = never_slower_line(&points);
        assert!(line.contains("NOT MET at 1 of 2 points") && line.contains("N=1 T=1 L=0 µs (1.020)"), "{line}");
        assert!(never_slower_line(&points[..1]).contains("at most 1.02x the synchronous time at all 1 points"));
    }

    #[test]
    fn csv_lines() {
        let mut failed = rows(1000, 10_000, 20_000);
        failed.pop();
        let points = [
            Point::new(1, 8, 1000, &rows(1882, 182_527, 25_421), Vec::new()),
            Point::new(4, 2, 0, &failed, vec!["x".into()]),
        ];
        let text = csv(&points);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        assert_eq!(
            lines[1], "1,8,1000,1882,182527,25421,7.18,8,87,0.139,false,7.18,17807,1,2.123,true",
            "numbers as Rust prints them"
        );
        assert_eq!(lines[2], "4,2,0,1000,10000,,,2,,,false,,,,,false", "missing figures: empty fields");
        for l in &lines {
            assert_eq!(l.split(',').count(), CSV_COLUMNS.len());
        }
    }

    #[test]
    fn summary_table_and_matrix() {
        let points = [
            Point::new(1, 1, 0, &rows(1000, 1500, 1600), Vec::new()),
            Point::new(1, 1, 1000, &rows(1000, 90_000, 88_000), Vec::new()),
            Point::new(1, 8, 0, &rows(1000, 1500, 1400), vec!["synchronous run: bad".into()]),
        ];
        let t = table(&points);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("vCPUs   T   L_us   ref_ms  sync_ms async_ms  speedup    bound  hidden async/sync")
        );
        assert!(lines[1].ends_with("0.94x    1.00x  -20.0%      1.067  SLOWER than synchronous (> 1.02x)"), "{t}");
        assert!(lines[2].ends_with("1.02x    1.00x    2.2%      0.978"), "{t}");
        assert!(lines[3].ends_with("FAILED"), "{t}");
        let m = matrix(&points, &[0, 1000], 1);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 3, "{m}");
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["T", "L=0", "L=1000"]);
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["1", "!0.94x", "[1.00x]", "1.02x", "[1.00x]"]);
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["8", "1.07x", "[1.50x]", "-"]);
    }

    #[test]
    fn the_plot() {
        let p = plan_of(&["--latencies", "0,1000", "--tasks", "1,8", "--vcpus", "1,4"]).unwrap();
        let settings = Settings::new(&p, "QEMU 10.0.2");
        let points = [
            Point::new(1, 1, 0, &rows(1000, 1500, 1600), Vec::new()),
            Point::new(1, 1, 1000, &rows(1000, 90_000, 88_000), Vec::new()),
            Point::new(1, 8, 0, &rows(1000, 1500, 1400), Vec::new()),
            Point::new(1, 8, 1000, &rows(1000, 90_000, 12_000), Vec::new()),
            Point::new(4, 8, 1000, &rows(1000, 20_000, 7_000), Vec::new()),
        ];
        let svg = plot::svg(&points, &p.latencies_us, &p.vcpus, &settings).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..100]);
        for want in ["T = 1", "T = 8", "1 vCPU", "4 vCPUs", "1.0x: as fast as synchronous", "\n1000\n", "\n0\n"] {
            assert!(svg.contains(want), "{want:?} not in the SVG");
        }
        assert!(svg.contains(&settings.command), "the command that made it");
        assert!(svg.contains("-icount shift=3"), "the settings");
        assert!(svg.contains("latency model: no request completes earlier than L µs"), "the latency model");
        assert!(svg.contains("dashed: bound min(T, sync / ref)"), "the bound's legend");
        assert_eq!(plot::y_top(&points), 9.0, "the highest is the bound 8.0, plus 10 %");
    }

    #[test]
    fn settings_line_names_the_sizes_and_icount() {
        let s = Settings::new(&plan_of(&[]).unwrap(), "QEMU 10.0.2");
        let line = s.line();
        for want in ["G = 32 MiB", "R = 8 MiB", "-icount shift=3,sleep=off (8 ns per instruction)", "seed 1"] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!((v["never_slower_factor"].as_f64(), v["vcpus"].clone()), (Some(1.02), json!([1, 4])));
        assert_eq!(v["latency_model"], compare::LATENCY_MODEL);
    }
}
