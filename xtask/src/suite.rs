//! `test`: host tests, the cross build, QEMU integration tests and a negative test.
//!
//! The QEMU tests run scenarios through the same code as `cargo xtask run` and then check the
//! JSON report against [`ASSERTIONS`], one table so that field names and bounds are easy to
//! adjust in one place.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::build;
use crate::cli::{BackingPlan, RunPlan, TestArgs};
use crate::run;
use crate::toolchain::Toolchain;

/// The scenarios, vCPU counts and CPU models of the integration matrix.
const SCENARIOS: &[&str] = &["smp", "ipi", "hostile", "overcommit"];
const VCPU_COUNTS: &[u32] = &[1, 4];
const CPU_MODELS: &[&str] = &["max", "a64fx"];

/// A backing-store case: the `smp` scenario on 2 vCPUs after the hypervisor's self-test.
#[derive(Debug, Clone, Copy)]
struct Selftest {
    /// The case's name and its assertion label.
    name: &'static str,
    pages: u64,
    latency_us: u64,
    read_errors: &'static [u64],
    write_errors: &'static [u64],
}

/// Every self-test case carries this label too.
const SELFTEST: &str = "selftest";
const SELFTEST_CLEAN: &str = "selftest-clean";
const SELFTEST_LATENCY: &str = "selftest-l200";
const SELFTEST_ERRORS: &str = "selftest-blkdebug";
const SELFTEST_VCPUS: u32 = 2;
/// The blkdebug case: 64 pages, the read of slot 5 and the write of slot 9 fail.
const BLKDEBUG_PAGES: u64 = 64;
const BLKDEBUG_READ_SLOT: u64 = 5;
const BLKDEBUG_WRITE_SLOT: u64 = 9;
/// Pages the blkdebug case can verify: all but the one whose read failed and the one whose
/// write failed (it is not read back).
const BLKDEBUG_VERIFIABLE: i64 = BLKDEBUG_PAGES as i64 - 2;
/// The requests the device holds at once (virtio-drivers' queue of 16, indirect descriptors).
const DEVICE_QUEUE_DEPTH: i64 = 16;

const SELFTESTS: &[Selftest] = &[
    Selftest { name: "selftest-l0", pages: 1024, latency_us: 0, read_errors: &[], write_errors: &[] },
    Selftest { name: SELFTEST_LATENCY, pages: 1024, latency_us: 200, read_errors: &[], write_errors: &[] },
    Selftest {
        name: SELFTEST_ERRORS,
        pages: BLKDEBUG_PAGES,
        latency_us: 0,
        read_errors: &[BLKDEBUG_READ_SLOT],
        write_errors: &[BLKDEBUG_WRITE_SLOT],
    },
];

/// A number in a report: a field (JSON pointer into the report), a constant, or derived from
/// the run's vCPU count.
#[derive(Debug, Clone, Copy)]
pub enum Operand {
    Field(&'static str),
    Int(i64),
    Vcpus,
    VcpusSquared,
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Gt,
    Ge,
}

/// One check on a run's report.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// The field is the boolean `true`.
    IsTrue(&'static str),
    /// Compares two numbers.
    Cmp(Operand, Op, Operand),
    /// The array has this many elements.
    Len(&'static str, Operand),
    /// Every element of the array has a numeric field satisfying the comparison.
    Each(&'static str, &'static str, Op, Operand),
    /// The sum of a numeric field over the array satisfies the comparison.
    Sum(&'static str, &'static str, Op, Operand),
}

/// A check and the scenarios it applies to (empty: every scenario).
#[derive(Debug, Clone, Copy)]
pub struct Assertion {
    pub scenarios: &'static [&'static str],
    pub check: Check,
}

const ALL: &[&str] = &[];
use Check::*;
use Op::*;
use Operand::*;

/// THE ASSERTIONS of the QEMU integration tests. Paths are JSON pointers into the `--json`
/// report: `/guest/...` is the guest's `@result` object, `/hyp/...` the hypervisor's,
/// `/per_vcpu` the guest's per-vCPU array.
pub const ASSERTIONS: &[Assertion] = &[
    // Every scenario: the run passed and reported every vCPU.
    Assertion { scenarios: ALL, check: IsTrue("/ok") },
    Assertion { scenarios: ALL, check: Len("/per_vcpu", Vcpus) },
    // smp: every vCPU ran tasks, and the timer preempted something.
    Assertion { scenarios: &["smp"], check: Each("/per_vcpu", "tasks_run", Gt, Int(0)) },
    Assertion { scenarios: &["smp"], check: Sum("/per_vcpu", "preemptions", Gt, Int(0)) },
    // ipi: every vCPU sent one IPI to every vCPU, and all arrived.
    Assertion { scenarios: &["ipi"], check: Cmp(Field("/guest/ipi_expected"), Eq, VcpusSquared) },
    Assertion { scenarios: &["ipi"], check: Cmp(Field("/guest/ipi_received"), Eq, Field("/guest/ipi_expected")) },
    // hostile: a flood of calls, unknown ones answered (never UNDEF under our hypervisor),
    // injected aborts and undefs all caught, and the vendor UID is ours.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/hvc_calls"), Ge, Int(10_000)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/unknown_calls"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/undef_caught"), Eq, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/aborts_caught"), Ge, Int(100)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_aborts"), Ge, Field("/guest/aborts_caught")) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/undefs_caught"), Ge, Int(100)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_undefs"), Ge, Field("/guest/undefs_caught")) },
    Assertion { scenarios: &["hostile"], check: IsTrue("/guest/hyp_uid_matches") },
    // overcommit: every word of the working set written, read back and checked, twice, with
    // no mismatch and no abort (the guest's own `ok` also requires 2 full passes).
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/check/mismatches"), Eq, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/aborts"), Eq, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/check/words_checked"), Gt, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/ws_bytes"), Gt, Int(0)) },
    // Every backing-store self-test: every write completed, nothing read back wrong, no request
    // reported before the latency model allows, and at least a device queue's worth in flight.
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/latency_us"), Eq, Field("/backing_latency_us")),
    },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/write/pages"), Eq, Field("/backing_selftest/pages")),
    },
    Assertion { scenarios: &[SELFTEST], check: Cmp(Field("/backing_selftest/mismatched_words"), Eq, Int(0)) },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/lat_min_us"), Ge, Field("/backing_selftest/latency_us")),
    },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/max_in_flight"), Ge, Int(DEVICE_QUEUE_DEPTH)),
    },
    // Without injected errors: every page verified.
    Assertion { scenarios: &[SELFTEST_CLEAN], check: IsTrue("/backing_selftest/ok") },
    Assertion {
        scenarios: &[SELFTEST_CLEAN],
        check: Cmp(Field("/backing_selftest/verified"), Eq, Field("/backing_selftest/pages")),
    },
    Assertion { scenarios: &[SELFTEST_CLEAN], check: Cmp(Field("/backing_selftest/read/failed"), Eq, Int(0)) },
    // With L = 200 µs early completions were held and released by the EL2 timer.
    Assertion { scenarios: &[SELFTEST_LATENCY], check: Cmp(Field("/backing_selftest/latency_us"), Eq, Int(200)) },
    Assertion { scenarios: &[SELFTEST_LATENCY], check: Cmp(Field("/backing_selftest/timer_irqs"), Gt, Int(0)) },
    // blkdebug: exactly the injected requests failed, were reported by slot, the rest verified
    // (and the VM still ran: `/ok` above).
    Assertion { scenarios: &[SELFTEST_ERRORS], check: Cmp(Field("/backing_selftest/write/failed"), Eq, Int(1)) },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/failed_writes/0"), Eq, Int(BLKDEBUG_WRITE_SLOT as i64)),
    },
    Assertion { scenarios: &[SELFTEST_ERRORS], check: Cmp(Field("/backing_selftest/read/failed"), Eq, Int(1)) },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/failed_reads/0"), Eq, Int(BLKDEBUG_READ_SLOT as i64)),
    },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/verified"), Eq, Int(BLKDEBUG_VERIFIABLE)),
    },
];

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Field(p) => write!(f, "{p}"),
            Int(i) => write!(f, "{i}"),
            Vcpus => write!(f, "vcpus"),
            VcpusSquared => write!(f, "vcpus*vcpus"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Eq => "==",
            Gt => ">",
            Ge => ">=",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IsTrue(p) => write!(f, "{p} == true"),
            Cmp(a, op, b) => write!(f, "{a} {op} {b}"),
            Len(p, n) => write!(f, "len({p}) == {n}"),
            Each(p, k, op, b) => write!(f, "every {p}[*].{k} {op} {b}"),
            Sum(p, k, op, b) => write!(f, "sum({p}[*].{k}) {op} {b}"),
        }
    }
}

fn as_int(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from))
}

impl Operand {
    fn eval(&self, report: &Value, vcpus: u32) -> Result<i128, String> {
        match self {
            Field(p) => match report.pointer(p) {
                None => Err(format!("{p} is missing")),
                Some(v) => as_int(v).ok_or_else(|| format!("{p} is {v}, not an integer")),
            },
            Int(i) => Ok(*i as i128),
            Vcpus => Ok(vcpus as i128),
            VcpusSquared => Ok(vcpus as i128 * vcpus as i128),
        }
    }
}

impl Op {
    fn holds(&self, a: i128, b: i128) -> bool {
        match self {
            Eq => a == b,
            Gt => a > b,
            Ge => a >= b,
        }
    }
}

fn array<'a>(report: &'a Value, p: &str) -> Result<&'a Vec<Value>, String> {
    match report.pointer(p) {
        None => Err(format!("{p} is missing")),
        Some(v) => v.as_array().ok_or_else(|| format!("{p} is {v}, not an array")),
    }
}

impl Check {
    /// Ok, or why the check failed (with the values seen).
    pub fn eval(&self, report: &Value, vcpus: u32) -> Result<(), String> {
        match *self {
            IsTrue(p) => match report.pointer(p) {
                Some(Value::Bool(true)) => Ok(()),
                Some(v) => Err(format!("{p} is {v}")),
                None => Err(format!("{p} is missing")),
            },
            Cmp(a, op, b) => {
                let (x, y) = (a.eval(report, vcpus)?, b.eval(report, vcpus)?);
                op.holds(x, y).then_some(()).ok_or_else(|| format!("{a} = {x}, {b} = {y}"))
            }
            Len(p, n) => {
                let (len, want) = (array(report, p)?.len() as i128, n.eval(report, vcpus)?);
                (len == want).then_some(()).ok_or_else(|| format!("{p} has {len} entries, want {want}"))
            }
            Each(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    let v = item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                    if !op.holds(v, want) {
                        return Err(format!("{p}/{i}/{k} = {v}"));
                    }
                }
                Ok(())
            }
            Sum(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                let mut sum = 0i128;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    sum += item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                }
                op.holds(sum, want).then_some(()).ok_or_else(|| format!("the sum is {sum}"))
            }
        }
    }
}

/// Every assertion for a case with these labels (its scenario, and for self-test cases their
/// names) that fails on `report`, as readable lines.
pub fn failed_assertions(labels: &[&str], vcpus: u32, report: &Value) -> Vec<String> {
    ASSERTIONS
        .iter()
        .filter(|a| a.scenarios.is_empty() || a.scenarios.iter().any(|s| labels.contains(s)))
        .filter_map(|a| a.check.eval(report, vcpus).err().map(|why| format!("{}: {why}", a.check)))
        .collect()
}

/// One line of the final table.
struct Row {
    name: String,
    seconds: f64,
    passed: bool,
    note: String,
}

/// A QEMU integration case.
#[derive(Debug, Clone)]
struct Case {
    scenario: &'static str,
    vcpus: u32,
    cpu: &'static str,
    selftest: Option<Selftest>,
}

impl Case {
    fn name(&self) -> String {
        match &self.selftest {
            // `selftest-l0` runs as qemu/selftest/l0/v2 (the scenario is always smp).
            Some(t) => format!("qemu/{}/v{}", t.name.replacen('-', "/", 1), self.vcpus),
            None => format!("qemu/{}/v{}/{}", self.scenario, self.vcpus, self.cpu),
        }
    }

    /// What selects its assertions.
    fn labels(&self) -> Vec<&'static str> {
        let mut labels = vec![self.scenario];
        if let Some(t) = &self.selftest {
            labels.extend([SELFTEST, t.name]);
            if t.read_errors.is_empty() && t.write_errors.is_empty() {
                labels.push(SELFTEST_CLEAN);
            }
        }
        labels
    }

    fn backing(&self) -> BackingPlan {
        match &self.selftest {
            None => BackingPlan::default(),
            Some(t) => BackingPlan {
                latency_us: t.latency_us,
                selftest_pages: t.pages,
                read_errors: t.read_errors.to_vec(),
                write_errors: t.write_errors.to_vec(),
            },
        }
    }
}

const HOST_TESTS: &str = "host-tests";
const BUILD: &str = "build";
const NEGATIVE: &str = "negative/not-an-image";
const LINUX: &str = "linux/boot";

/// Runs the suite; true when everything selected passed.
pub fn run_suite(root: &Path, tc: &Toolchain, args: &TestArgs) -> Result<bool> {
    let suite_start = Instant::now();
    let selected = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let cases: Vec<Case> = SCENARIOS
        .iter()
        .flat_map(|&scenario| {
            VCPU_COUNTS.iter().flat_map(move |&vcpus| {
                CPU_MODELS.iter().map(move |&cpu| Case { scenario, vcpus, cpu, selftest: None })
            })
        })
        .chain(SELFTESTS.iter().map(|&t| Case {
            scenario: "smp",
            vcpus: SELFTEST_VCPUS,
            cpu: "max",
            selftest: Some(t),
        }))
        .filter(|c| selected(&c.name()))
        .collect();
    println!("test: {} ({} QEMU cases, {} jobs)", tc.qemu_version, cases.len(), args.jobs.max(1));
    let mut rows = Vec::new();

    if selected(HOST_TESTS) {
        rows.push(timed(HOST_TESTS, || host_tests(root)));
    }
    let mut built = true;
    if !cases.is_empty() || selected(BUILD) {
        let row = timed(BUILD, || build::build(root, build::Select::BOTH).map(|()| String::new()));
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
    if selected(LINUX) && built {
        rows.push(timed(LINUX, || crate::linux::boot_test(root)));
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

/// The host test runs: `cargo test` on the default members (contract, core, xtask), and the
/// guest kernel's pure library (`guest/src/lib.rs`; its binary only builds for aarch64).
const HOST_TEST_RUNS: [&[&str]; 2] = [&["test"], &["test", "-p", "asyncpf-guest", "--lib"]];

/// Every host test run with the outer cargo.
fn host_tests(root: &Path) -> Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (mut passed, mut binaries) = (0, 0);
    for args in HOST_TEST_RUNS {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", PathBuf::from(&cargo).display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summaries: Vec<&str> = stdout.lines().filter(|l| l.starts_with("test result:")).collect();
        if !out.status.success() {
            let all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
            let tail = &all[all.len().saturating_sub(60)..];
            println!("---- cargo {} output (last {} lines) ----\n{}", args.join(" "), tail.len(), tail.join("\n"));
            anyhow::bail!("cargo {} failed ({})", args.join(" "), out.status);
        }
        passed += summaries
            .iter()
            .filter_map(|l| l.split(". ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .sum::<usize>();
        binaries += summaries.len();
    }
    Ok(format!("{passed} tests in {binaries} binaries"))
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
    let plan = RunPlan {
        scenario: case.scenario.into(),
        vcpus: case.vcpus,
        pcpus: case.vcpus,
        cpu: case.cpu.into(),
        guest_mib: 128,
        seed: 1,
        json: Some(json.clone()),
        guest_kernel: None,
        guest_cmdline: None,
        timeout_secs: timeout,
        icount: None,
        bare: false,
        quiet: true,
        backing: case.backing(),
    };
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

/// `cargo xtask run --guest-kernel <text file>` must fail before QEMU starts, clearly.
/// Runs this very binary so the whole command-line path is covered.
fn negative_not_an_image(root: &Path) -> Result<String> {
    let dir = run::temp_dir(root);
    fs::create_dir_all(&dir)?;
    let bogus = dir.join(format!("not-an-image-{}.txt", std::process::id()));
    fs::write(&bogus, "This is a text file, not an arm64 kernel Image.\n".repeat(4))?;
    let json = dir.join(format!("not-an-image-{}.json", std::process::id()));
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let out = Command::new(&exe)
        .args(["run", "--no-build", "--timeout", "10", "--guest-kernel"])
        .arg(&bogus)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let _ = fs::remove_file(&bogus);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Option<Value> = fs::read(&json).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let _ = fs::remove_file(&json);
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("it exited with status 0".to_string());
    }
    if stdout.contains(run::QEMU_START_MARKER) {
        problems.push("QEMU was started".to_string());
    }
    if !stderr.contains("is not a valid arm64 kernel Image") {
        problems.push(format!("the error does not say the file is not an Image: {:?}", stderr.trim()));
    }
    match report.as_ref().and_then(|r| r.get("failure")).and_then(Value::as_str) {
        Some(f) if f.contains("not a valid arm64 kernel Image") => {}
        other => problems.push(format!("--json report has no matching failure ({other:?})")),
    }
    if !problems.is_empty() {
        anyhow::bail!("{}\nstdout: {stdout}\nstderr: {stderr}", problems.join("; "));
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hostile_report() -> Value {
        json!({
            "ok": true,
            "per_vcpu": [{"tasks_run": 1, "preemptions": 0}, {"tasks_run": 2, "preemptions": 3}],
            "guest": {"undef_caught": 0, "aborts_caught": 100, "undefs_caught": 150, "hyp_uid_matches": true,
                      "ipi_expected": 4, "ipi_received": 4,
                      "check": {"words_checked": 1024, "mismatches": 0}, "aborts": 0, "ws_bytes": 4096},
            "hyp": {"hvc_calls": 10_000u64, "unknown_calls": 7, "injected_aborts": 100, "injected_undefs": 151},
        })
    }

    #[test]
    fn assertions_pass_on_a_good_report() {
        let r = hostile_report();
        for scenario in SCENARIOS {
            assert_eq!(failed_assertions(&[scenario], 2, &r), Vec::<String>::new(), "{scenario}");
        }
    }

    #[test]
    fn assertions_report_what_is_wrong() {
        let mut r = hostile_report();
        r["hyp"]["injected_aborts"] = json!(99);
        r["guest"]["hyp_uid_matches"] = json!(false);
        r["per_vcpu"][0]["tasks_run"] = json!(0);
        r["guest"].as_object_mut().unwrap().remove("undefs_caught");
        let f = failed_assertions(&["hostile"], 2, &r);
        assert!(f.iter().any(|l| l == "/hyp/injected_aborts >= /guest/aborts_caught: /hyp/injected_aborts = 99, /guest/aborts_caught = 100"), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/hyp_uid_matches is false")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/undefs_caught is missing")), "{f:?}");
        let f = failed_assertions(&["smp"], 2, &r);
        assert_eq!(f, ["every /per_vcpu[*].tasks_run > 0: /per_vcpu/0/tasks_run = 0"]);
        let f = failed_assertions(&["ipi"], 4, &r);
        assert_eq!(f.len(), 2, "wrong vcpu count and ipi_expected != 16: {f:?}");
        let f = failed_assertions(&["smp"], 2, &json!({"ok": false, "per_vcpu": null}));
        assert!(f[0].contains("/ok is false") && f[1].contains("not an array"), "{f:?}");
    }

    #[test]
    fn selftest_assertions() {
        let report = json!({
            "ok": true, "per_vcpu": [{"tasks_run": 1, "preemptions": 1}, {"tasks_run": 1, "preemptions": 0}],
            "backing_latency_us": 200,
            "backing_selftest": {"ok": true, "pages": 1024, "latency_us": 200, "verified": 1024, "mismatched_words": 0,
                "lat_min_us": 201, "max_in_flight": 32, "timer_irqs": 40, "failed_writes": [], "failed_reads": [],
                "write": {"pages": 1024, "failed": 0}, "read": {"pages": 1024, "failed": 0}},
        });
        let labels = ["smp", SELFTEST, SELFTEST_CLEAN, SELFTEST_LATENCY];
        assert_eq!(failed_assertions(&labels, 2, &report), Vec::<String>::new());
        let mut early = report.clone();
        early["backing_selftest"]["lat_min_us"] = json!(199);
        let f = failed_assertions(&labels, 2, &early);
        assert_eq!(f, ["/backing_selftest/lat_min_us >= /backing_selftest/latency_us: /backing_selftest/lat_min_us = 199, /backing_selftest/latency_us = 200"]);
        let f = failed_assertions(&["smp", SELFTEST, SELFTEST_ERRORS], 2, &report);
        assert!(f.iter().any(|l| l.contains("/backing_selftest/failed_reads/0 is missing")), "{f:?}");
    }

    #[test]
    fn matrix_names() {
        let c = Case { scenario: "ipi", vcpus: 4, cpu: "a64fx", selftest: None };
        assert_eq!(c.name(), "qemu/ipi/v4/a64fx");
        let c = Case { scenario: "smp", vcpus: 2, cpu: "max", selftest: Some(SELFTESTS[2]) };
        assert_eq!(c.name(), "qemu/selftest/blkdebug/v2");
        assert_eq!(c.labels(), ["smp", SELFTEST, SELFTEST_ERRORS]);
        assert_eq!(c.backing().write_errors, [BLKDEBUG_WRITE_SLOT]);
        assert_eq!(first_line("a\nb"), "a");
        assert_eq!(first_line(&"x".repeat(200)).len(), 102);
    }
}
