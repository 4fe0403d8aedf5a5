//! One run of the `overcommit` workload and the figures read from its report, shared by the
//! main job's comparison (`compare`) and the APF sweep (`sweep`, `cargo xtask bench`).
//!
//! A run goes through [`run::run`] exactly as `cargo xtask run --scenario overcommit` would (one
//! build first, then `--no-build`, quiet, P = N), under `-icount` so that its figures repeat:
//! virtual time never passes a backing-store request's deadline before QEMU has completed it,
//! so with 1 vCPU every figure is the same from run to run however loaded the host is (with
//! more vCPUs, runs with paging I/O vary a little; docs/architecture.md, "Repeatable virtual
//! time"). [`table`] is the page-in path's table (stall, overhead above L, request time) that
//! the sweep prints for its synchronous runs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::cli::RunArgs;
#[cfg(doc)]
use crate::run;

/// The guest scenario of the main job and the sweep.
pub const SCENARIO: &str = "overcommit";
/// Which of the two kinds of run a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// R < G: guest RAM is paged through the backing disk.
    Overcommit,
    /// R = G: the pager runs but never needs to evict, so there is no paging I/O.
    Reference,
}

/// One run of the `overcommit` workload under `-icount`, as the main job's comparison and the
/// sweep make them.
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
            trace: None,
            trace_mib: crate::trace::DEFAULT_TRACE_MIB,
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
    use serde_json::json;

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

        let r = Row::from_report(Kind::Overcommit, 1000, 12, &json!({"ok": false, "failure": "cannot start"}));
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
}
