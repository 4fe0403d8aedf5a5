//! The lint step: clippy on every crate and `cargo doc` without warnings.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::build;

/// Clippy with `-D warnings` on every crate and target: the host crates (contract, core, xtask,
/// the guest's library) with rustup's clippy, the bare-metal crates with Debian's, for the
/// targets and with `-Zbuild-std` as the build uses them.
pub(super) fn lint(root: &Path) -> Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host: [&[&str]; 2] = [
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        &["clippy", "-p", "asyncpf-guest", "--lib", "--tests", "--", "-D", "warnings"],
    ];
    let mut commands: Vec<(String, Command)> = host
        .iter()
        .map(|args| {
            let mut cmd = Command::new(&cargo);
            cmd.args(*args).current_dir(root).stdin(Stdio::null());
            (format!("cargo {}", args.join(" ")), cmd)
        })
        .collect();
    for (package, target) in build::cross_packages() {
        commands.push((format!("clippy {package} ({target})"), build::cross_clippy_command(root, package, target)));
    }
    let clippy_runs = commands.len();
    // The host crates' documentation builds without a warning (broken links, stray HTML).
    let mut doc = Command::new(&cargo);
    doc.args([
        "doc",
        "--no-deps",
        "-p",
        "asyncpf-contract",
        "-p",
        "asyncpf-core",
        "-p",
        "asyncpf-guest",
        "-p",
        "xtask",
    ])
    .env("RUSTDOCFLAGS", "-D warnings")
    .current_dir(root)
    .stdin(Stdio::null());
    commands.push(("cargo doc (RUSTDOCFLAGS=-D warnings)".into(), doc));
    for (what, mut cmd) in commands {
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {what} (is clippy installed? `rustup component add clippy`)"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim_start().starts_with("Compiling")).collect();
            println!("---- {what} ----\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
            anyhow::bail!("{what} failed: fix the lints above");
        }
    }
    Ok(format!("{clippy_runs} clippy runs and cargo doc, -D warnings, all clean"))
}
