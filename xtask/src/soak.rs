//! `soak`: the `hostile` scenario for many calls, over several seeds and vCPU counts, with
//! guest RAM overcommitted (`--resident-mib`), asynchronous page faults on (`apf=on`) and a
//! working set larger than the resident memory rewritten and verified meanwhile (`ws_mib=M`).
//! Each run is `cargo xtask run --scenario hostile --vcpus N --seed S --guest-mib G
//! --resident-mib R --guest-cmdline "calls=C apf=on apf_always=on ws_mib=M"`; the command prints one row per
//! run and the totals, writes them as JSON, and fails on any crash (hypervisor panic), hang
//! (timeout), working-set mismatch, wrong answer, or a hypervisor log beyond its rate limit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use asyncpf_core::ratelimit::LogLimiter;
use serde::Serialize;
use serde_json::{json, Value};

use crate::build;
use crate::cli::{BackingPlan, RunPlan, SoakArgs};
use crate::run;
use crate::toolchain::Toolchain;

/// The hypervisor's own `[hyp]` lines in every run that are not diagnostics: its start, the
/// VM's, the result and the exit line (as `probes::FLOOD_MAX_HYP_LINES` counts them).
pub const HYP_FIXED_LINES: u64 = 4;
/// The hypervisor's exit status after a panic (docs/abi.md §5).
const EXIT_HYP_PANIC: i64 = asyncpf_contract::runner::EXIT_HYP_PANIC as i64;
/// The hostile action kinds (`asyncpf_guest::hostile_policy::Kind::name`).
pub const KINDS: [&str; 6] = ["fuzz", "psci", "sdei", "apf", "mmio", "handler_fault"];

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub vcpus: u32,
    pub seed: u64,
    pub ok: bool,
    pub failure: Option<String>,
    /// Hostile actions, SMCCC calls among them, by kind: actions made.
    pub calls: u64,
    pub smccc_calls: u64,
    pub made: Vec<u64>,
    /// Answers by code over all kinds (`0`, `value`, `-1`..`-10`, `other`).
    pub answers: Vec<(String, u64)>,
    pub unexpected: u64,
    pub aborts: u64,
    pub undefs: u64,
    pub alignment_faults: u64,
    /// The hypervisor panicked (exit status 101).
    pub crashed: bool,
    /// QEMU was killed at the timeout.
    pub hung: bool,
    pub hyp_lines: u64,
    /// What the rate limit allows for this run's diagnostics (plus the fixed lines).
    pub hyp_line_bound: u64,
    pub diagnostics: u64,
    pub mismatches: u64,
    pub words_checked: u64,
    pub async_faults: u64,
    pub page_ins: u64,
    pub injected_aborts: u64,
    pub wall_seconds: f64,
}

/// Lines the rate limit prints for `n` occurrences of one diagnostic kind.
pub fn printed(n: u64) -> u64 {
    let first = n.min(LogLimiter::FIRST);
    // Powers of two above FIRST, up to n.
    let powers = (0..64).map(|b| 1u64 << b).filter(|&p| p > LogLimiter::FIRST && p <= n).count() as u64;
    first + powers
}

fn int(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

/// A run's row from its `--json` report (a `run::Report` as JSON).
pub fn row(vcpus: u32, seed: u64, report: &Value) -> Row {
    let g = |p: &str| int(report, &format!("/guest{p}"));
    let mut answers: Vec<(String, u64)> = Vec::new();
    let mut made = Vec::new();
    let mut alignment_faults = 0;
    for kind in KINDS {
        made.push(g(&format!("/actions/{kind}/made")));
        alignment_faults += g(&format!("/actions/{kind}/alignment_faults"));
        if let Some(map) = report.pointer(&format!("/guest/actions/{kind}/answers")).and_then(Value::as_object) {
            for (code, n) in map {
                let n = n.as_u64().unwrap_or(0);
                match answers.iter_mut().find(|(c, _)| c == code) {
                    Some((_, total)) => *total += n,
                    None => answers.push((code.clone(), n)),
                }
            }
        }
    }
    let diagnostics = report.pointer("/hyp/diagnostics").and_then(Value::as_object);
    let bound = HYP_FIXED_LINES + diagnostics.map_or(0, |d| d.values().filter_map(Value::as_u64).map(printed).sum());
    let failure = report.get("failure").and_then(Value::as_str).map(String::from);
    Row {
        vcpus,
        seed,
        ok: report.get("ok").and_then(Value::as_bool).unwrap_or(false),
        hung: failure.as_deref().is_some_and(|f| f.contains("timed out")),
        crashed: report.get("exit_status").and_then(Value::as_i64) == Some(EXIT_HYP_PANIC),
        failure,
        calls: g("/calls"),
        smccc_calls: g("/smccc_calls"),
        made,
        answers,
        unexpected: g("/unexpected"),
        aborts: g("/aborts_total"),
        undefs: g("/undefs_total"),
        alignment_faults,
        hyp_lines: int(report, "/console_lines/hyp"),
        hyp_line_bound: bound,
        diagnostics: diagnostics.map_or(0, |d| d.values().filter_map(Value::as_u64).sum()),
        mismatches: g("/check/mismatches"),
        words_checked: g("/check/words_checked"),
        async_faults: int(report, "/hyp/async_faults"),
        page_ins: int(report, "/mem/page_ins"),
        injected_aborts: int(report, "/hyp/injected_aborts"),
        wall_seconds: report.get("wall_seconds").and_then(Value::as_f64).unwrap_or(0.0),
    }
}

impl Row {
    /// Why this run does not pass the soak, if it does not.
    pub fn problems(&self, calls_asked: u64) -> Vec<String> {
        let mut p = Vec::new();
        if !self.ok {
            p.push(format!("failed: {}", self.failure.as_deref().unwrap_or("?")));
        }
        if self.crashed {
            p.push("hypervisor panic".into());
        }
        if self.hung {
            p.push("hang (timeout)".into());
        }
        if self.calls < calls_asked {
            p.push(format!("{} calls made, {calls_asked} asked", self.calls));
        }
        if self.mismatches > 0 {
            p.push(format!("{} working-set mismatches", self.mismatches));
        }
        if self.words_checked == 0 {
            p.push("no working-set word checked".into());
        }
        if self.unexpected > 0 {
            p.push(format!("{} unexpected answers", self.unexpected));
        }
        if self.hyp_lines > self.hyp_line_bound {
            p.push(format!(
                "{} hypervisor lines, more than the rate limit allows ({})",
                self.hyp_lines, self.hyp_line_bound
            ));
        }
        if self.aborts > self.injected_aborts {
            p.push(format!("{} aborts caught, only {} injected", self.aborts, self.injected_aborts));
        }
        p
    }
}

/// The guest command line of a soak run.
pub fn guest_cmdline(args: &SoakArgs) -> String {
    // With APF on, every fault is delivered (ALWAYS_DELIVER): the soak exercises the protocol
    // whatever the park-or-wait rule would choose at this latency.
    let apf = if args.apf_off { "off" } else { "on apf_always=on" };
    format!("calls={} apf={apf} ws_mib={}", args.calls, args.ws_mib)
}

/// The runs: every vCPU count with every seed.
pub fn plans(args: &SoakArgs, dir: &Path) -> Vec<(u32, u64, RunPlan)> {
    let mut plans = Vec::new();
    for &vcpus in &args.vcpus {
        for &seed in &args.seeds {
            let plan = RunPlan {
                scenario: "hostile".into(),
                vcpus,
                pcpus: vcpus,
                cpu: args.cpu.clone(),
                guest_mib: args.guest_mib,
                seed,
                json: Some(dir.join(format!("hostile-v{vcpus}-s{seed}.json"))),
                guest_kernel: None,
                guest_cmdline: Some(guest_cmdline(args)),
                timeout_secs: args.timeout,
                icount: None,
                bare: false,
                quiet: true,
                backing: BackingPlan { latency_us: args.backing_latency_us, ..BackingPlan::default() },
                resident_mib: Some(args.resident_mib),
                foreign: None,
                initrd: None,
                kernel_kind: Default::default(),
                host_load: 0,
                lock_check: true,
                trace: None,
            };
            plans.push((vcpus, seed, plan));
        }
    }
    plans
}

fn print_row(name: &str, r: &Row) {
    let made = r.made.iter().map(u64::to_string).collect::<Vec<_>>().join("/");
    println!(
        "{name:<10} {:>9} {:>9} {:<32} {:>6} {:>7} {:>6} {:>5} {:>5} {:>4}/{:<4} {:>5} {:>11} {:>7} {:>7} {:>7.1}",
        r.calls,
        r.smccc_calls,
        made,
        r.unexpected,
        r.aborts,
        r.undefs,
        u64::from(r.crashed),
        u64::from(r.hung),
        r.hyp_lines,
        r.hyp_line_bound,
        r.mismatches,
        r.words_checked,
        r.async_faults,
        r.page_ins,
        r.wall_seconds
    );
}

/// Sums the rows (the bound and the lines too; `ok` if all are).
pub fn total(rows: &[Row]) -> Row {
    let mut t = Row { ok: rows.iter().all(|r| r.ok), made: vec![0; KINDS.len()], ..Row::default() };
    for r in rows {
        t.calls += r.calls;
        t.smccc_calls += r.smccc_calls;
        for (a, b) in t.made.iter_mut().zip(&r.made) {
            *a += b;
        }
        for (code, n) in &r.answers {
            match t.answers.iter_mut().find(|(c, _)| c == code) {
                Some((_, total)) => *total += n,
                None => t.answers.push((code.clone(), *n)),
            }
        }
        t.unexpected += r.unexpected;
        t.aborts += r.aborts;
        t.undefs += r.undefs;
        t.alignment_faults += r.alignment_faults;
        t.crashed |= r.crashed;
        t.hung |= r.hung;
        t.hyp_lines += r.hyp_lines;
        t.hyp_line_bound += r.hyp_line_bound;
        t.diagnostics += r.diagnostics;
        t.mismatches += r.mismatches;
        t.words_checked += r.words_checked;
        t.async_faults += r.async_faults;
        t.page_ins += r.page_ins;
        t.injected_aborts += r.injected_aborts;
        t.wall_seconds += r.wall_seconds;
    }
    t
}

/// Runs the soak; true when every run passed.
pub fn run_soak(root: &Path, tc: &Toolchain, args: &SoakArgs) -> Result<bool> {
    build::build(root, build::Select { hypervisor: true, guest: true, probes: false })?;
    let dir: PathBuf = root.join("target").join("xtask").join("soak");
    std::fs::create_dir_all(&dir)?;
    let plans = plans(args, &dir);
    println!(
        "soak: {} runs of {} hostile calls (vCPUs {:?} x seeds {:?}), G = {} MiB, R = {} MiB, guest command line {:?}",
        plans.len(),
        args.calls,
        args.vcpus,
        args.seeds,
        args.guest_mib,
        args.resident_mib,
        guest_cmdline(args)
    );
    println!(
        "{:<10} {:>9} {:>9} {:<32} {:>6} {:>7} {:>6} {:>5} {:>5} {:>9} {:>5} {:>11} {:>7} {:>7} {:>7}",
        "run",
        "calls",
        "smccc",
        "made fuzz/psci/sdei/apf/mmio/hf",
        "unexp",
        "aborts",
        "undefs",
        "crash",
        "hang",
        "hyp/bound",
        "mism",
        "words",
        "async",
        "pg_ins",
        "wall_s"
    );
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (vcpus, seed, plan) in &plans {
        let json = plan.json.clone().expect("every plan has a report file");
        let outcome = run::run(root, tc, plan, true);
        let report: Value = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"ok": false, "failure": outcome.as_ref().err().map(|e| format!("{e:#}"))}));
        let r = row(*vcpus, *seed, &report);
        print_row(&format!("v{vcpus}/s{seed}"), &r);
        for p in r.problems(args.calls) {
            problems.push(format!("v{vcpus}/s{seed}: {p}"));
        }
        rows.push(r);
    }
    let t = total(&rows);
    print_row("total", &t);
    let answers = t.answers.iter().map(|(c, n)| format!("{c}: {n}")).collect::<Vec<_>>().join(", ");
    println!("answers by code (all kinds): {answers}; alignment faults (raised at EL1) {}", t.alignment_faults);
    println!(
        "crashes {}, hangs {}, mismatches {}, unexpected answers {}, hypervisor lines {} (rate limit allows {}), {:.0} s",
        rows.iter().filter(|r| r.crashed).count(),
        rows.iter().filter(|r| r.hung).count(),
        t.mismatches,
        t.unexpected,
        t.hyp_lines,
        t.hyp_line_bound,
        start.elapsed().as_secs_f64()
    );
    let doc = json!({"settings": {"calls_per_run": args.calls, "vcpus": args.vcpus, "seeds": args.seeds,
        "guest_mib": args.guest_mib, "resident_mib": args.resident_mib, "ws_mib": args.ws_mib,
        "apf": !args.apf_off, "backing_latency_us": args.backing_latency_us, "guest_cmdline": guest_cmdline(args)},
        "runs": rows, "total": t, "problems": problems});
    let out = args.json.clone().unwrap_or_else(|| dir.join("soak.json"));
    crate::bench::write_json(&out, &doc)?;
    println!("soak: results in {}", out.display());
    for p in &problems {
        println!("soak: FAILED: {p}");
    }
    Ok(problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bound() {
        assert_eq!(printed(0), 0);
        assert_eq!(printed(5), 5);
        assert_eq!(printed(8), 8);
        assert_eq!(printed(9), 8);
        assert_eq!(printed(16), 9);
        assert_eq!(printed(86), 11);
        // The same as the limiter's own decisions.
        for n in [1u64, 7, 8, 9, 100, 1000, 5000] {
            assert_eq!(printed(n), (1..=n).filter(|&i| LogLimiter::prints(i)).count() as u64, "{n}");
        }
    }

    fn report() -> Value {
        json!({"ok": true, "exit_status": 0, "wall_seconds": 2.5,
            "console_lines": {"hyp": 15, "guest": 7, "other": 0},
            "hyp": {"async_faults": 100, "injected_aborts": 40, "diagnostics": {"apf_ring_error": 86, "io_error": 0}},
            "mem": {"page_ins": 500},
            "guest": {"calls": 1000, "smccc_calls": 1200, "unexpected": 0, "aborts_total": 40, "undefs_total": 9,
                "check": {"words_checked": 4096, "mismatches": 0},
                "actions": {"fuzz": {"made": 300, "alignment_faults": 0, "answers": {"0": 10, "-1": 290}},
                            "mmio": {"made": 700, "alignment_faults": 3, "answers": {"0": 0}}}}})
    }

    #[test]
    fn rows_and_problems() {
        let r = row(4, 2, &report());
        assert_eq!((r.calls, r.smccc_calls, r.aborts, r.undefs, r.alignment_faults), (1000, 1200, 40, 9, 3));
        assert_eq!(r.made, [300, 0, 0, 0, 700, 0]);
        assert_eq!(r.hyp_line_bound, HYP_FIXED_LINES + 11);
        assert_eq!(r.problems(1000), Vec::<String>::new());
        // A panic, a hang, a mismatch, a flood, a wrong answer: each is named.
        let mut bad = report();
        bad["exit_status"] = json!(101);
        bad["ok"] = json!(false);
        bad["failure"] = json!("timed out after 5 s; QEMU was killed");
        bad["guest"]["check"]["mismatches"] = json!(2);
        bad["guest"]["unexpected"] = json!(1);
        bad["console_lines"]["hyp"] = json!(16);
        let p = row(4, 2, &bad).problems(1000);
        for want in ["failed", "panic", "hang", "mismatches", "unexpected", "hypervisor lines"] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:?}");
        }
        let t = total(&[row(1, 1, &report()), row(4, 2, &bad)]);
        assert_eq!((t.calls, t.mismatches, t.crashed, t.hung, t.ok), (2000, 2, true, true, false));
        assert_eq!(t.answers.iter().find(|(c, _)| c == "-1").unwrap().1, 580);
    }
}
