//! `test`: host tests, the cross build, QEMU integration tests and a negative test.
//!
//! The QEMU tests run scenarios through the same code as `cargo xtask run` and then check the
//! JSON report against [`ASSERTIONS`](assertions::ASSERTIONS), one table so that field names and
//! bounds are easy to adjust in one place.
//!
//! This module runs the suite and prints its table; the rest is by concern:
//! - [`cases`]: the QEMU cases (the scenario matrix, the backing-store self-tests, the paging
//!   cases and the other paged runs), their names, labels and run plans;
//! - [`checks`]: the check language (operands, comparisons, checks) and its evaluation;
//! - [`assertions`]: THE ASSERTIONS table, and which rows apply to a case's labels;
//! - [`icount`]: `qemu/repeatable` and `qemu/never-slower`, two runs each under `-icount`;
//! - [`host`]: `host-tests` and `negative/not-an-image`; [`lint`](mod@lint): the `lint` step.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use anyhow::Result;
use serde_json::Value;

use crate::cli::TestArgs;
use crate::toolchain::Toolchain;
use crate::{build, run};

use assertions::failed_assertions;
use cases::{all_cases, Case};
use host::{host_tests, negative_not_an_image};
use icount::{never_slower, repeatable, trace_test, NEVER_SLOWER, REPEATABLE, TRACE};
use lint::lint;

mod assertions;
mod cases;
mod checks;
mod host;
mod icount;
mod lint;
#[cfg(test)]
mod tests;

/// One line of the final table.
struct Row {
    name: String,
    seconds: f64,
    passed: bool,
    note: String,
}

const HOST_TESTS: &str = "host-tests";
const LINT: &str = "lint";
const BUILD: &str = "build";
const NEGATIVE: &str = "negative/not-an-image";
const LINUX: &str = "linux/boot";
/// Linux with a BusyBox userspace on 4 vCPUs at 4x and 8x overcommit (`cargo xtask linux`).
const LINUX_WORKLOAD: &str = "linux/workload";
/// The same on Debian's 6.12 (bookworm-backports), one run at 8x overcommit: 6.12 advertises
/// FEAT_MOPS to its userspace, whose static glibc then copies with it.
const LINUX_WORKLOAD_6_12: &str = "linux/workload-6.12";
/// The Linux tests, which need the hypervisor built (and the APF client's,
/// `crate::linuxapf::cases::TESTS`).
const LINUX_TESTS: [&str; 3] = [LINUX, LINUX_WORKLOAD, LINUX_WORKLOAD_6_12];
const BENCH_SMOKE: &str = "bench/smoke";

/// Runs the suite; true when everything selected passed.
pub fn run_suite(root: &Path, tc: &Toolchain, args: &TestArgs) -> Result<bool> {
    let suite_start = Instant::now();
    let selected = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let cases: Vec<Case> = all_cases().into_iter().filter(|c| selected(&c.name())).collect();
    if args.list {
        for name in test_names(args.filter.as_deref()) {
            println!("{name}");
        }
        return Ok(true);
    }
    println!("test: {} ({} QEMU cases, {} jobs)", tc.qemu_version, cases.len(), args.jobs.max(1));
    let mut rows = Vec::new();

    if selected(HOST_TESTS) {
        rows.push(timed(HOST_TESTS, || host_tests(root)));
    }
    if selected(LINT) {
        rows.push(timed(LINT, || lint(root)));
    }
    let mut built = true;
    // The probe and Linux tests need the hypervisor (and the probes) built too.
    let probe_tests = crate::probes::TESTS.iter().filter(|(name, _)| selected(name));
    let apf_tests = crate::linuxapf::cases::TESTS.iter().filter(|(name, _)| selected(name));
    let linux_tests = LINUX_TESTS.iter().any(|name| selected(name)) || apf_tests.clone().next().is_some();
    if !cases.is_empty() || selected(BUILD) || probe_tests.clone().next().is_some() || linux_tests {
        let row = timed(BUILD, || build::build(root, build::Select::ALL).map(|()| String::new()));
        built = row.passed;
        rows.push(row);
    }
    if built {
        rows.extend(run_cases(root, tc, &cases, args));
    } else {
        for c in &cases {
            rows.push(Row { name: c.name(), seconds: 0.0, passed: false, note: "not run: the build failed".into() });
        }
    }
    if selected(NEGATIVE) {
        rows.push(timed(NEGATIVE, || negative_not_an_image(root)));
    }
    if built {
        for (name, test) in probe_tests {
            rows.push(timed(name, || test(root, tc)));
        }
    }
    if selected(REPEATABLE) && built {
        rows.push(timed(REPEATABLE, || repeatable(root, tc, args.timeout)));
    }
    if selected(TRACE) && built {
        rows.push(timed(TRACE, || trace_test(root, tc, args.timeout)));
    }
    if selected(NEVER_SLOWER) && built {
        rows.push(timed(NEVER_SLOWER, || never_slower(root, tc, args.timeout)));
    }
    if selected(BENCH_SMOKE) && built {
        rows.push(timed(BENCH_SMOKE, || crate::sweep::smoke(root, tc, args.timeout)));
    }
    if selected(LINUX) && built {
        rows.push(timed(LINUX, || crate::linux::boot_test(root)));
    }
    // `--filter linux/workload` selects both Linux workload tests.
    if selected(LINUX_WORKLOAD) && built {
        rows.push(timed(LINUX_WORKLOAD, || crate::userspace::workload_test(root, tc)));
    }
    if selected(LINUX_WORKLOAD_6_12) && built {
        rows.push(timed(LINUX_WORKLOAD_6_12, || crate::userspace::workload_6_12_test(root, tc)));
    }
    if built {
        for (name, test) in apf_tests {
            rows.push(timed(name, || test(root, tc)));
        }
    }

    println!("\n{:<28} {:>8}  result", "test", "seconds");
    for r in &rows {
        let verdict = if r.passed { "pass" } else { "FAIL" };
        let note = if r.note.is_empty() { String::new() } else { format!("  {}", r.note) };
        println!("{:<28} {:>8.1}  {verdict}{note}", r.name, r.seconds);
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!("{} passed, {failed} failed, {:.0} s in all", rows.len() - failed, suite_start.elapsed().as_secs_f64());
    Ok(failed == 0)
}

/// The names of the tests [`run_suite`] runs with this `--filter`, in the order of its table.
fn test_names(filter: Option<&str>) -> Vec<String> {
    let selected = |name: &str| filter.is_none_or(|f| name.contains(f));
    let cases: Vec<String> = all_cases().iter().map(Case::name).filter(|n| selected(n)).collect();
    let probes: Vec<String> =
        crate::probes::TESTS.iter().map(|(name, _)| name.to_string()).filter(|n| selected(n)).collect();
    let mut names: Vec<String> = [HOST_TESTS, LINT].into_iter().filter(|n| selected(n)).map(String::from).collect();
    let apf: Vec<String> =
        crate::linuxapf::cases::TESTS.iter().map(|(name, _)| name.to_string()).filter(|n| selected(n)).collect();
    let linux = LINUX_TESTS.iter().any(|n| selected(n)) || !apf.is_empty();
    if !cases.is_empty() || selected(BUILD) || !probes.is_empty() || linux {
        names.push(BUILD.into());
    }
    names.extend(cases);
    names.extend([NEGATIVE].into_iter().filter(|n| selected(n)).map(String::from));
    names.extend(probes);
    let late = [REPEATABLE, TRACE, NEVER_SLOWER, BENCH_SMOKE, LINUX, LINUX_WORKLOAD, LINUX_WORKLOAD_6_12];
    names.extend(late.into_iter().filter(|n| selected(n)).map(String::from));
    names.extend(apf);
    names
}

/// Runs `f`, printing a progress line; an error becomes a failed row with its message.
fn timed(name: &str, f: impl FnOnce() -> Result<String>) -> Row {
    println!("test: {name} ...");
    let start = Instant::now();
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    let (passed, note) = match result {
        Ok(note) => (true, note),
        Err(e) => {
            println!("test: {name} FAILED: {e:#}");
            (false, first_line(&format!("{e:#}")))
        }
    };
    println!("test: {name} {} ({seconds:.1} s)", if passed { "ok" } else { "FAILED" });
    Row { name: name.into(), seconds, passed, note }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.len() > 100 {
        format!("{}...", &line[..line.char_indices().take_while(|(i, _)| *i < 100).last().map_or(0, |(i, _)| i)])
    } else {
        line.to_string()
    }
}

/// Runs the QEMU cases on `args.jobs` threads.
fn run_cases(root: &Path, tc: &Toolchain, cases: &[Case], args: &TestArgs) -> Vec<Row> {
    let queue = Mutex::new(cases.iter().cloned().collect::<VecDeque<_>>());
    let rows = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..args.jobs.max(1).min(cases.len().max(1)) {
            s.spawn(|| loop {
                let Some(case) = queue.lock().unwrap().pop_front() else { break };
                let row = run_case(root, tc, &case, args.timeout);
                rows.lock().unwrap().push((case.name(), row));
            });
        }
    });
    // Report in the matrix order, not in completion order.
    let mut done = rows.into_inner().unwrap();
    cases.iter().filter_map(|c| done.iter().position(|(n, _)| *n == c.name()).map(|i| done.swap_remove(i).1)).collect()
}

fn run_case(root: &Path, tc: &Toolchain, case: &Case, timeout: u64) -> Row {
    let name = case.name();
    println!("test: {name} ...");
    let json = root.join("target").join("xtask").join("results").join(format!("{}.json", name.replace('/', "-")));
    let plan = case.plan(Some(json), timeout);
    let start = Instant::now();
    let (passed, note) = match run::run(root, tc, &plan, true) {
        Err(e) => (false, format!("{e:#}")),
        Ok(report) => {
            let value = serde_json::to_value(&report).unwrap_or(Value::Null);
            let failures = failed_assertions(&case.labels(), case.vcpus, &value);
            if report.ok && !failures.is_empty() {
                // `run` printed nothing for a passing run: show what the guest said.
                let mut out = format!("---- {name}: console tail ----\n");
                for l in &report.console_tail {
                    out += l;
                    out.push('\n');
                }
                print!("{out}");
            }
            for f in &failures {
                println!("test: {name}: assertion failed: {f}");
            }
            let note = match (&report.failure, failures.first()) {
                // A case meant to fail passed its own checks.
                (Some(f), None) => format!("as expected: {f}"),
                (Some(f), _) => f.clone(),
                (None, Some(f)) => format!("{f} ({} assertions failed)", failures.len()),
                (None, None) => String::new(),
            };
            (failures.is_empty(), note)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "test: {name} {} ({seconds:.1} s){}",
        if passed { "ok" } else { "FAILED" },
        if passed { String::new() } else { format!(": {note}") }
    );
    Row { name, seconds, passed, note: first_line(&note) }
}

#[cfg(test)]
mod runner_tests {
    use super::*;

    #[test]
    fn test_names_are_unique_and_filtered() {
        let all = test_names(None);
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert_eq!(all[..3], [HOST_TESTS, LINT, BUILD]);
        assert_eq!(test_names(Some("lint")), [LINT]);
        assert_eq!(test_names(Some("qemu/ipi/v4")), [BUILD, "qemu/ipi/v4/max", "qemu/ipi/v4/a64fx"]);
        assert!(test_names(Some("no such test")).is_empty());
    }

    #[test]
    fn first_lines() {
        assert_eq!(first_line("a\nb"), "a");
        assert_eq!(first_line(&"x".repeat(200)).len(), 102);
    }
}
