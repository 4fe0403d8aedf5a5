//! The steps that run no QEMU case of their own: the host tests and the negative test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::run;

/// One `cargo` run of host tests: its arguments, and the environment variables it adds.
type HostTestRun = (&'static [&'static str], &'static [(&'static str, &'static str)]);

/// The host test runs: `cargo test` on the default members (contract, core, xtask), the guest
/// kernel's pure library (`guest/src/lib.rs`; its binary only builds for aarch64), and the
/// pager's hand-over protocols under loom (`asyncpf_core::handoff`; `--cfg loom` builds every
/// crate differently, hence a target directory of its own), each with its extra environment.
const HOST_TEST_RUNS: [HostTestRun; 3] = [
    (&["test"], &[]),
    (&["test", "-p", "asyncpf-guest", "--lib"], &[]),
    (
        &["test", "-p", "asyncpf-core", "--lib", "--release", "--target-dir", "target/loom", "handoff::models"],
        &[("RUSTFLAGS", "--cfg loom")],
    ),
];

/// Every host test run with the outer cargo.
pub(super) fn host_tests(root: &Path) -> Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (mut passed, mut binaries) = (0, 0);
    for (args, env) in HOST_TEST_RUNS {
        let out = Command::new(&cargo)
            .args(args)
            .envs(env.iter().copied())
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

/// `cargo xtask run --guest-kernel <text file>` must fail before QEMU starts, clearly.
/// Runs this very binary so the whole command-line path is covered.
pub(super) fn negative_not_an_image(root: &Path) -> Result<String> {
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
