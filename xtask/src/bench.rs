//! `bench`: the memory-overcommit benchmark.
//!
//! It runs the `overcommit` scenario through [`run::run`], exactly as `cargo xtask run` would
//! (one build first, then `--no-build`, quiet), under `-icount` so that the figures repeat: one
//! overcommitted run (R < G) per backing-store latency L, and one reference run with R = G (no
//! paging I/O) at L = [`REFERENCE_LATENCY_US`]. It prints one table row per run and writes the
//! rows with the settings as JSON. It is a benchmark, not a test: the only thing it requires of
//! a run is that it succeeded and the guest's integrity check found 0 mismatches.
//!
//! `-icount` makes the guest's and the hypervisor's time virtual, but QEMU's block layer still
//! completes the backing disk's requests in host time, and the pager polls for them on a virtual
//! timer: runs with paging I/O vary from run to run (seen here: the same L = 50 µs run with a
//! stall mean from 60 to 142 µs while another QEMU ran on the host), while the reference run
//! repeats exactly.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::build;
use crate::cli::{BenchArgs, RunArgs, RunPlan};
use crate::run;
use crate::toolchain::Toolchain;

/// The guest scenario the benchmark runs.
pub const SCENARIO: &str = "overcommit";
/// The backing latency of the reference run (R = G).
pub const REFERENCE_LATENCY_US: u64 = asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US;
/// What L means, printed with the table and stored with the rows.
pub const LATENCY_MODEL: &str = "no request completes earlier than L us after submission, on the hypervisor's \
                                 counter; under -icount time is virtual: 2^shift ns per instruction, QEMU -icount \
                                 shift=N,sleep=off";

/// Which of the two kinds of run a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// R < G: guest RAM is paged through the backing disk.
    Overcommit,
    /// R = G: the pager runs but never needs to evict, so there is no paging I/O.
    Reference,
}

/// One run of the benchmark and its validated plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchRun {
    pub kind: Kind,
    pub latency_us: u64,
    pub resident_mib: u32,
    pub plan: RunPlan,
}

/// The runs, in order: one per `--latencies` entry, then the reference run. Every plan goes
/// through the same validation as `cargo xtask run`, so a bad option fails before any build.
pub fn plan_runs(args: &BenchArgs) -> Result<Vec<BenchRun>> {
    if args.latencies.is_empty() {
        bail!("--latencies: give at least one latency in µs, e.g. 0,50,200,1000");
    }
    if args.resident_mib >= args.guest_mib {
        bail!(
            "--resident-mib {} is not below --guest-mib {}: the benchmark measures overcommit (the reference \
             run without it is added by itself)",
            args.resident_mib,
            args.guest_mib
        );
    }
    let overcommitted = args.latencies.iter().map(|&l| (Kind::Overcommit, l, args.resident_mib));
    let reference = (Kind::Reference, REFERENCE_LATENCY_US, args.guest_mib);
    overcommitted
        .chain([reference])
        .map(|(kind, latency_us, resident_mib)| {
            let plan = run_args(args, latency_us, resident_mib)
                .validate()
                .with_context(|| format!("bench run at L = {latency_us} us, R = {resident_mib} MiB"))?;
            Ok(BenchRun { kind, latency_us, resident_mib, plan })
        })
        .collect()
}

/// The `run` options of one benchmark run: `--no-build --quiet`, P = N.
fn run_args(args: &BenchArgs, latency_us: u64, resident_mib: u32) -> RunArgs {
    let run = OvercommitRun {
        vcpus: args.vcpus,
        cpu: args.cpu.clone(),
        guest_mib: args.guest_mib,
        resident_mib,
        seed: args.seed,
        timeout: args.timeout,
        icount: args.icount,
        latency_us,
        guest_cmdline: None,
        tasks: None,
        host_load: args.host_load,
    };
    run.run_args()
}

/// One run of the `overcommit` workload under `-icount`, as the benchmark and the main job's
/// comparison make them.
pub struct OvercommitRun {
    pub vcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    pub resident_mib: u32,
    pub seed: u64,
    pub timeout: u64,
    pub icount: u32,
    pub latency_us: u64,
    pub guest_cmdline: Option<String>,
    /// `--tasks`: the workload's tasks per vCPU (None: the guest's default).
    pub tasks: Option<u32>,
    /// `--host-load`: busy processes beside QEMU.
    pub host_load: u32,
}

impl OvercommitRun {
    /// Its `run` options: `--no-build --quiet`, P = N, no self-test, no injected errors.
    pub fn run_args(self) -> RunArgs {
        RunArgs {
            scenario: SCENARIO.into(),
            vcpus: Some(self.vcpus),
            pcpus: Some(self.vcpus),
            cpu: self.cpu,
            guest_mib: self.guest_mib,
            seed: self.seed,
            json: None,
            guest_kernel: None,
            expect: None,
            success_pattern: None,
            initrd: None,
            kernel_kind: Default::default(),
            guest_cmdline: self.guest_cmdline,
            tasks: self.tasks,
            timeout: self.timeout,
            icount: Some(self.icount),
            bare: false,
            quiet: true,
            no_build: true,
            backing_latency_us: self.latency_us,
            backing_selftest: 0,
            inject_read_errors: Vec::new(),
            inject_write_errors: Vec::new(),
            resident_mib: Some(self.resident_mib),
            host_load: self.host_load,
        }
    }
}

/// One row of the table: figures read from a run's report, and the ones computed from them.
/// A figure the report does not have is None (null in JSON, `-` in the table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub latency_us: u64,
    pub resident_mib: u32,
    /// The run succeeded and the integrity check reported 0 mismatches.
    pub ok: bool,
    pub failure: Option<String>,
    pub page_ins: Option<u64>,
    pub page_outs: Option<u64>,
    pub dirty_writebacks: Option<u64>,
    pub zero_fills: Option<u64>,
    pub blocking_faults: Option<u64>,
    /// page_ins per second of guest elapsed (virtual, under -icount) time, to a whole page.
    pub page_ins_per_s: Option<f64>,
    /// Stall of a blocking fault (fault to resume); None when no fault blocked.
    pub stall_mean_us: Option<f64>,
    pub stall_p99_us: Option<f64>,
    pub stall_max_us: Option<f64>,
    /// stall_mean_us − L: what the hypervisor adds above the latency model.
    pub overhead_mean_us: Option<f64>,
    /// Service time of a backing request (reads and writebacks); None when there was none.
    pub request_mean_us: Option<f64>,
    pub request_p99_us: Option<f64>,
    /// Guest-measured time of the workload, and of its phases, in ms.
    pub elapsed_ms: Option<u64>,
    pub phases_ms: Value,
    pub words_checked: Option<u64>,
    pub mismatches: Option<u64>,
    /// Host wall-clock time of the whole QEMU run.
    pub wall_seconds: Option<f64>,
    /// The run's full report (`cargo xtask run --json`), if it was written.
    pub report: Option<PathBuf>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Row {
    /// A run that produced no report (it could not be started).
    pub fn not_run(kind: Kind, latency_us: u64, resident_mib: u32, failure: String) -> Row {
        Row::from_report(kind, latency_us, resident_mib, &Value::Null).with_failure(failure)
    }

    fn with_failure(mut self, failure: String) -> Row {
        self.ok = false;
        self.failure = Some(failure);
        self
    }

    /// Computes the row from a run's report (the `cargo xtask run --json` object).
    pub fn from_report(kind: Kind, latency_us: u64, resident_mib: u32, report: &Value) -> Row {
        let mem = &report["mem"];
        let guest = &report["guest"];
        let check = &report["check"];
        let uint = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        let float = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);

        let page_ins = uint(mem, "page_ins");
        let dirty_writebacks = uint(mem, "dirty_writebacks");
        let blocking_faults = uint(mem, "blocking_faults");
        let elapsed_ms = uint(guest, "elapsed_ms");
        let page_ins_per_s = match (page_ins, elapsed_ms) {
            (Some(n), Some(ms)) if ms > 0 => Some((n as f64 * 1000.0 / ms as f64).round()),
            _ => None,
        };
        // The hypervisor reports 0 for the statistics of an empty histogram: no sample is
        // shown as no figure, not as a zero stall or a negative overhead.
        let stalled = blocking_faults != Some(0);
        let requested = !(page_ins == Some(0) && dirty_writebacks == Some(0));
        let stall = |k: &str| float(mem, k).filter(|_| stalled);
        let request = |k: &str| float(mem, k).filter(|_| requested);
        let stall_mean_us = stall("fault_stall_us_mean");
        // The latency the hypervisor says it applied, else the one it was given.
        let model_us = uint(mem, "backing_latency_us").unwrap_or(latency_us);
        let overhead_mean_us = stall_mean_us.map(|s| round1(s - model_us as f64));

        let mismatches = uint(check, "mismatches");
        let run_ok = report.get("ok").and_then(Value::as_bool).unwrap_or(false);
        let failure = match (report.get("failure").and_then(Value::as_str), mismatches) {
            (Some(f), _) => Some(f.to_string()),
            _ if !run_ok => Some("the run did not succeed".to_string()),
            (None, None) => Some("the guest reported no check.mismatches".to_string()),
            (None, Some(0)) => None,
            (None, Some(n)) => Some(format!("the integrity check found {n} mismatched words")),
        };
        Row {
            kind,
            latency_us,
            resident_mib,
            ok: failure.is_none(),
            failure,
            page_ins,
            page_outs: uint(mem, "page_outs"),
            dirty_writebacks,
            zero_fills: uint(mem, "zero_fills"),
            blocking_faults,
            page_ins_per_s,
            stall_mean_us,
            stall_p99_us: stall("fault_stall_us_p99"),
            stall_max_us: stall("fault_stall_us_max"),
            overhead_mean_us,
            request_mean_us: request("request_us_mean"),
            request_p99_us: request("request_us_p99"),
            elapsed_ms,
            phases_ms: guest.get("phases_ms").cloned().unwrap_or(Value::Null),
            words_checked: uint(check, "words_checked"),
            mismatches,
            wall_seconds: report.get("wall_seconds").and_then(Value::as_f64),
            report: None,
        }
    }
}

/// The settings the rows were measured with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenario: &'static str,
    pub qemu_version: String,
    pub icount_shift: u32,
    pub cpu: String,
    pub vcpus: u32,
    pub pcpus: u32,
    pub guest_mib: u32,
    pub resident_mib: u32,
    pub seed: u64,
    pub latencies_us: Vec<u64>,
    pub reference_latency_us: u64,
    pub reference_resident_mib: u32,
    pub latency_model: &'static str,
    pub timeout_secs: u64,
    /// Busy processes beside QEMU during the runs (`--host-load`).
    pub host_load: u32,
}

impl Settings {
    fn new(args: &BenchArgs, tc: &Toolchain) -> Settings {
        Settings {
            scenario: SCENARIO,
            qemu_version: tc.qemu_version.clone(),
            icount_shift: args.icount,
            cpu: args.cpu.clone(),
            vcpus: args.vcpus,
            pcpus: args.vcpus,
            guest_mib: args.guest_mib,
            resident_mib: args.resident_mib,
            seed: args.seed,
            latencies_us: args.latencies.clone(),
            reference_latency_us: REFERENCE_LATENCY_US,
            reference_resident_mib: args.guest_mib,
            latency_model: LATENCY_MODEL,
            timeout_secs: args.timeout,
            host_load: args.host_load,
        }
    }

    /// The lines printed above the table.
    pub fn header(&self) -> String {
        let ns_per_insn = 1u64 << self.icount_shift;
        format!(
            "bench: {} on {}\n\
             bench: -icount shift={},sleep=off ({ns_per_insn} ns per instruction), cpu {}, {} vCPU(s) on {} \
             physical CPU(s), G = {} MiB, R = {} MiB (reference run: R = {} MiB at L = {} us), seed {}, \
             {} busy host process(es) beside QEMU\n\
             bench: latency model: {}\n\
             bench: page_ins/s and elapsed ms are in guest time (virtual under -icount); overhead = stall mean - L\n\
             bench: virtual time does not pass a request's deadline before QEMU has completed it, so with 1 vCPU every \
             row repeats exactly however loaded the host is (--host-load N); with more vCPUs rows with paging I/O \
             vary a little\n",
            self.scenario,
            self.qemu_version,
            self.icount_shift,
            self.cpu,
            self.vcpus,
            self.pcpus,
            self.guest_mib,
            self.resident_mib,
            self.reference_resident_mib,
            self.reference_latency_us,
            self.seed,
            self.host_load,
            self.latency_model,
        )
    }
}

/// The table: a column header and one line per row.
pub fn table(rows: &[Row]) -> String {
    fn int(v: Option<u64>) -> String {
        v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
    }
    fn dec(v: Option<f64>, places: usize) -> String {
        v.map(|v| format!("{v:.places$}")).unwrap_or_else(|| "-".into())
    }
    let mut s = format!(
        "{:>6} {:>9} {:>11} {:>14} {:>13} {:>17} {:>16} {:>11} {:>11}  {}\n",
        "L_us",
        "page_ins",
        "page_ins/s",
        "stall_mean_us",
        "stall_p99_us",
        "overhead_mean_us",
        "request_mean_us",
        "elapsed_ms",
        "mismatches",
        "run"
    );
    for r in rows {
        let run = match (r.kind, r.ok) {
            (Kind::Overcommit, true) => format!("R={} MiB", r.resident_mib),
            (Kind::Reference, true) => format!("R={} MiB = G, reference (no paging I/O)", r.resident_mib),
            (_, false) => format!("R={} MiB FAILED: {}", r.resident_mib, r.failure.as_deref().unwrap_or("?")),
        };
        s += &format!(
            "{:>6} {:>9} {:>11} {:>14} {:>13} {:>17} {:>16} {:>11} {:>11}  {run}\n",
            r.latency_us,
            int(r.page_ins),
            dec(r.page_ins_per_s, 0),
            dec(r.stall_mean_us, 1),
            dec(r.stall_p99_us, 1),
            dec(r.overhead_mean_us, 1),
            dec(r.request_mean_us, 1),
            int(r.elapsed_ms),
            int(r.mismatches),
        );
    }
    s
}

/// The JSON file.
#[derive(Debug, Serialize)]
struct BenchJson<'a> {
    benchmark: &'static str,
    ok: bool,
    wall_seconds: f64,
    settings: &'a Settings,
    rows: &'a [Row],
}

/// Default place of the JSON file.
pub fn default_json(root: &Path) -> PathBuf {
    bench_dir(root).join("overcommit.json")
}

fn bench_dir(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("bench")
}

/// Builds once, runs every run (a failed one is reported and the others still run), prints
/// the table and writes the JSON file. Ok(true) if every run succeeded with 0 mismatches.
pub fn run_bench(root: &Path, tc: &Toolchain, args: &BenchArgs, runs: &[BenchRun]) -> Result<bool> {
    let start = Instant::now();
    let json_path = args.json.clone().unwrap_or_else(|| default_json(root));
    let settings = Settings::new(args, tc);
    build::build(root, build::Select::BOTH)?;
    let reports = bench_dir(root).join("runs");
    let mut rows = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let what = format!(
            "[{}/{}] {SCENARIO} L = {} us, G = {} MiB, R = {} MiB{}",
            i + 1,
            runs.len(),
            r.latency_us,
            r.plan.guest_mib,
            r.resident_mib,
            if r.kind == Kind::Reference { " (reference)" } else { "" }
        );
        println!("bench: {what} ...");
        let report_path = reports.join(format!("{SCENARIO}-L{}-R{}.json", r.latency_us, r.resident_mib));
        let plan = RunPlan { json: Some(report_path.clone()), ..r.plan.clone() };
        let row = match run::run(root, tc, &plan, true) {
            Ok(report) => {
                let value = serde_json::to_value(&report).context("the run's report as JSON")?;
                Row { report: Some(report_path), ..Row::from_report(r.kind, r.latency_us, r.resident_mib, &value) }
            }
            Err(err) => Row::not_run(r.kind, r.latency_us, r.resident_mib, format!("{err:#}")),
        };
        match &row.failure {
            None => println!("bench: {what}: ok in {:.1} s", row.wall_seconds.unwrap_or(0.0)),
            Some(f) => println!("bench: {what}: FAILED: {f}"),
        }
        rows.push(row);
    }
    let all_ok = rows.iter().all(|r| r.ok);
    let wall_seconds = round1(start.elapsed().as_secs_f64());
    let doc = BenchJson { benchmark: SCENARIO, ok: all_ok, wall_seconds, settings: &settings, rows: &rows };
    write_json(&json_path, &doc)?;

    print!("\n{}{}", settings.header(), table(&rows));
    let failed = rows.iter().filter(|r| !r.ok).count();
    println!(
        "bench: {} runs, {failed} failed, {wall_seconds:.1} s; rows and settings in {}",
        rows.len(),
        json_path.display()
    );
    Ok(all_ok)
}

/// Writes the file atomically (temp file + rename).
pub fn write_json(path: &Path, doc: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(doc)? + "\n";
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use serde_json::json;

    fn parse_bench(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["xtask", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("arguments parse").command {
            Command::Bench(b) => b,
            other => panic!("expected bench, got {other:?}"),
        }
    }

    /// The shape of a `cargo xtask run --json` report of an overcommitted run.
    fn sample_report() -> Value {
        json!({
            "scenario": "overcommit", "ok": true, "failure": null, "wall_seconds": 5.3, "backing_latency_us": 50,
            "resident_mib": 12,
            "mem": {"guest_mib": 64, "resident_mib": 12, "backing_latency_us": 50, "page_ins": 44237,
                "page_outs": 56526, "dirty_writebacks": 19676, "zero_fills": 15361, "blocking_faults": 44240,
                "fault_stall_us_mean": 65.0, "fault_stall_us_p99": 96.3, "fault_stall_us_max": 763.3,
                "request_us_mean": 74.4, "request_us_p99": 1146.9},
            "guest": {"ok": true, "elapsed_ms": 9539,
                "phases_ms": {"write": 3260, "verify": 2144, "mix": 2041, "final_verify": 2092},
                "check": {"words_checked": 19158016, "mismatches": 0}},
            "check": {"words_checked": 19158016, "mismatches": 0}
        })
    }

    #[test]
    fn row_from_a_report() {
        let r = Row::from_report(Kind::Overcommit, 50, 12, &sample_report());
        assert!(r.ok, "{r:?}");
        assert_eq!(r.failure, None);
        assert_eq!((r.page_ins, r.page_outs, r.dirty_writebacks), (Some(44237), Some(56526), Some(19676)));
        assert_eq!((r.zero_fills, r.blocking_faults), (Some(15361), Some(44240)));
        // 44237 page-ins in 9.539 s of guest time.
        assert_eq!(r.page_ins_per_s, Some(4637.0));
        assert_eq!((r.stall_mean_us, r.stall_p99_us, r.stall_max_us), (Some(65.0), Some(96.3), Some(763.3)));
        assert_eq!(r.overhead_mean_us, Some(15.0), "stall mean 65.0 - L 50");
        assert_eq!((r.request_mean_us, r.request_p99_us), (Some(74.4), Some(1146.9)));
        assert_eq!((r.elapsed_ms, r.words_checked, r.mismatches), (Some(9539), Some(19158016), Some(0)));
        assert_eq!(r.phases_ms["write"], 3260);
        assert_eq!(r.wall_seconds, Some(5.3));
    }

    #[test]
    fn overhead_uses_the_latency_the_hypervisor_applied_and_is_rounded() {
        let mut v = sample_report();
        v["mem"]["backing_latency_us"] = json!(200);
        v["mem"]["fault_stall_us_mean"] = json!(212.3);
        let r = Row::from_report(Kind::Overcommit, 50, 12, &v);
        assert_eq!(r.overhead_mean_us, Some(12.3), "212.3 - 200, not 162.3 and no float noise");
        // Without it in the report, the latency the run was given.
        v["mem"].as_object_mut().unwrap().remove("backing_latency_us");
        let r = Row::from_report(Kind::Overcommit, 200, 12, &v);
        assert_eq!(r.overhead_mean_us, Some(12.3));
        // L = 0: the whole stall is overhead.
        v["mem"]["fault_stall_us_mean"] = json!(7.5);
        assert_eq!(Row::from_report(Kind::Overcommit, 0, 12, &v).overhead_mean_us, Some(7.5));
    }

    #[test]
    fn reference_run_without_paging_io_has_no_stall_figures() {
        let mut v = sample_report();
        let mem = &mut v["mem"];
        for k in ["page_ins", "page_outs", "dirty_writebacks", "blocking_faults"] {
            mem[k] = json!(0);
        }
        for k in ["fault_stall_us_mean", "fault_stall_us_p99", "fault_stall_us_max", "request_us_mean"] {
            mem[k] = json!(0.0);
        }
        let r = Row::from_report(Kind::Reference, 50, 64, &v);
        assert!(r.ok);
        assert_eq!(r.page_ins_per_s, Some(0.0));
        assert_eq!((r.stall_mean_us, r.stall_p99_us, r.overhead_mean_us), (None, None, None), "not -50 us");
        assert_eq!(r.request_mean_us, None);
        let t = table(&[r]);
        assert!(t.lines().nth(1).unwrap().contains("reference"), "{t}");
    }

    #[test]
    fn pages_per_second_needs_an_elapsed_time() {
        let mut v = sample_report();
        v["guest"]["elapsed_ms"] = json!(0);
        assert_eq!(Row::from_report(Kind::Overcommit, 50, 12, &v).page_ins_per_s, None);
        v["guest"]["elapsed_ms"] = json!(2000);
        assert_eq!(Row::from_report(Kind::Overcommit, 50, 12, &v).page_ins_per_s, Some(22119.0));
    }

    #[test]
    fn failures() {
        let mut v = sample_report();
        v["check"]["mismatches"] = json!(3);
        let r = Row::from_report(Kind::Overcommit, 50, 12, &v);
        assert!(!r.ok);
        assert!(r.failure.as_deref().unwrap().contains("3 mismatched words"), "{r:?}");
        assert_eq!(r.page_ins, Some(44237), "the figures are still read");

        let mut v = sample_report();
        v["check"] = Value::Null;
        let r = Row::from_report(Kind::Overcommit, 50, 12, &v);
        assert!(!r.ok && r.failure.as_deref().unwrap().contains("no check.mismatches"), "{r:?}");

        let mut v = sample_report();
        v["ok"] = json!(false);
        v["failure"] = json!("timed out after 120 s; QEMU was killed");
        let r = Row::from_report(Kind::Overcommit, 50, 12, &v);
        assert_eq!(r.failure.as_deref(), Some("timed out after 120 s; QEMU was killed"));

        let r = Row::not_run(Kind::Overcommit, 1000, 12, "cannot start".into());
        assert!(!r.ok);
        assert_eq!((r.page_ins, r.page_ins_per_s, r.overhead_mean_us, r.elapsed_ms), (None, None, None, None));
        let t = table(&[r]);
        assert!(t.contains("FAILED: cannot start"), "{t}");
    }

    #[test]
    fn table_lines() {
        let t = table(&[Row::from_report(Kind::Overcommit, 50, 12, &sample_report())]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["50", "44237", "4637", "65.0", "96.3", "15.0", "74.4", "9539", "0", "R=12", "MiB"]);
        assert!(lines[0].starts_with("  L_us  page_ins  page_ins/s"), "{t}");
    }

    #[test]
    fn default_runs() {
        let runs = plan_runs(&parse_bench(&[])).unwrap();
        let summary: Vec<(Kind, u64, u32)> = runs.iter().map(|r| (r.kind, r.latency_us, r.resident_mib)).collect();
        assert_eq!(
            summary,
            [
                (Kind::Overcommit, 0, 12),
                (Kind::Overcommit, 50, 12),
                (Kind::Overcommit, 200, 12),
                (Kind::Overcommit, 1000, 12),
                (Kind::Reference, 50, 64)
            ]
        );
        for r in &runs {
            let p = &r.plan;
            assert_eq!((p.scenario.as_str(), p.vcpus, p.pcpus, p.guest_mib), (SCENARIO, 1, 1, 64));
            assert_eq!((p.icount, p.seed, p.cpu.as_str()), (Some(3), 1, "max"));
            assert!(p.quiet && !p.bare);
            assert_eq!((p.backing.latency_us, p.resident_mib), (r.latency_us, Some(r.resident_mib)));
            assert_eq!(p.backing.selftest_pages, 0);
        }
    }

    #[test]
    fn options() {
        let a = parse_bench(&[
            "--latencies",
            "10,20",
            "--icount",
            "4",
            "--vcpus",
            "2",
            "--guest-mib",
            "128",
            "--resident-mib",
            "32",
            "--seed",
            "9",
            "--json",
            "b.json",
        ]);
        assert_eq!(a.json.as_deref(), Some(Path::new("b.json")));
        let runs = plan_runs(&a).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[1].latency_us, runs[2].latency_us, runs[2].resident_mib), (20, 50, 128));
        let p = &runs[0].plan;
        assert_eq!(
            (p.icount, p.vcpus, p.pcpus, p.guest_mib, p.seed, p.resident_mib),
            (Some(4), 2, 2, 128, 9, Some(32))
        );

        assert!(plan_runs(&parse_bench(&["--icount", "11"])).is_err());
        assert!(plan_runs(&parse_bench(&["--latencies", "50,1000001"])).is_err());
        let err = plan_runs(&parse_bench(&["--resident-mib", "64"])).unwrap_err();
        assert!(err.to_string().contains("not below --guest-mib"), "{err}");
        assert!(plan_runs(&parse_bench(&["--resident-mib", "2"])).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--latencies", "a"]).is_err());
    }

    #[test]
    fn header_has_the_settings() {
        let s = Settings::new(&parse_bench(&[]), &Toolchain { qemu: "q".into(), qemu_version: "QEMU 10.0.2".into() });
        let h = s.header();
        for want in [
            "QEMU 10.0.2",
            "-icount shift=3,sleep=off (8 ns per instruction)",
            "cpu max",
            "1 vCPU(s)",
            "G = 64 MiB",
            "R = 12 MiB",
            "R = 64 MiB at L = 50 us",
            "seed 1",
            LATENCY_MODEL,
        ] {
            assert!(h.contains(want), "{want:?} missing from {h}");
        }
    }
}
