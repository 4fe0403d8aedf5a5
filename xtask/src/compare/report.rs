//! What the comparison prints and writes: the settings and their header lines, the table, the
//! JSON document, and the result printed after the runs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::bench::SCENARIO;
use crate::sweep;

use super::figures::{Comparison, Row};
use super::plan::ComparePlan;
use super::Mode;

/// What L means.
pub const LATENCY_MODEL: &str = "no request completes earlier than L µs after submission, on the hypervisor's counter";
/// The name of the JSON document (and of the file under target/xtask/compare/).
pub const COMPARISON: &str = "overcommit-apf";

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
pub(super) struct Reports<'a> {
    pub(super) reference: &'a Value,
    pub(super) synchronous: &'a Value,
    pub(super) asynchronous: &'a Value,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub(super) struct CompareJson<'a> {
    pub(super) comparison: &'static str,
    pub(super) ok: bool,
    pub(super) failures: &'a [String],
    pub(super) wall_seconds: f64,
    pub(super) settings: &'a Settings,
    pub(super) ratios: &'a Comparison,
    pub(super) rows: &'a [Row],
    pub(super) reports: Reports<'a>,
}

pub(super) fn compare_dir(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("compare")
}

/// Where the JSON document always goes.
pub fn default_json(root: &Path) -> PathBuf {
    compare_dir(root).join(format!("{COMPARISON}.json"))
}

/// Prints the comparison in `doc`, written to `json_path` (and to `extra`, `--json`): the
/// settings, the table, the ratios and the verdict.
pub(super) fn print_result(doc: &CompareJson, json_path: &Path, extra: Option<&Path>) {
    let CompareJson { settings, rows, ratios: comparison, failures, ok, wall_seconds, .. } = *doc;
    print!("\n{}\n{}", settings.header(), table(rows));
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
    let ns_per_instruction = settings.ns_per_instruction;
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
        for f in failures {
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
    let extra = extra.map(|p| format!(" and {}", p.display())).unwrap_or_default();
    println!(
        "compare: {} in {wall_seconds:.1} s; settings, rows, ratios and reports in {}{extra}",
        if ok { "ok" } else { "FAILED" },
        json_path.display()
    );
}
