//! The lint step: the Markdown docs name only `.rs` files that exist, and clippy on every crate
//! and `cargo doc` run without warnings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::build;

/// Clippy with `-D warnings` on every crate and target: the host crates (contract, core, xtask,
/// the guest's library) with rustup's clippy, the bare-metal crates with Debian's, for the
/// targets and with `-Zbuild-std` as the build uses them.
pub(super) fn lint(root: &Path) -> Result<String> {
    let missing = missing_doc_paths(root)?;
    if !missing.is_empty() {
        anyhow::bail!("the docs name files that do not exist: {}", missing.join(", "));
    }
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
    // The traced build (`--trace`): the hooks and the trace modules behind the `trace` feature.
    for (package, target) in [(build::HYP_PACKAGE, build::HYP_TARGET), (build::GUEST_PACKAGE, build::GUEST_TARGET)] {
        let cmd = build::cross_clippy_traced_command(root, package, target);
        commands.push((format!("clippy {package} --features trace ({target})"), cmd));
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
    Ok(format!("docs' .rs paths exist, {clippy_runs} clippy runs and cargo doc, -D warnings, all clean"))
}

/// The Markdown files whose `.rs` paths are checked: the README, `docs/*.md` and each crate's
/// README.
fn doc_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![root.join("README.md")];
    let in_dir = |dir: PathBuf| -> Result<Vec<PathBuf>> {
        let entries = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        paths.sort();
        Ok(paths)
    };
    files.extend(in_dir(root.join("docs"))?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    files.extend(in_dir(root.to_path_buf())?.into_iter().map(|d| d.join("README.md")).filter(|p| p.is_file()));
    Ok(files)
}

/// Every word of `text` that names a Rust source file (`…/x.rs` or `x.rs`), in order.
fn rs_paths(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .filter(|word| word.ends_with(".rs") && word.len() > 3 && !word.starts_with('/'))
        .collect()
}

/// The `.rs` paths that [`doc_files`] name and that exist nowhere they could mean: not below
/// the workspace root, the Markdown file's folder, or any crate's `src/` (the docs name a
/// crate's modules as `mm.rs` or `arch/boot.rs`), as `file: path` lines.
fn missing_doc_paths(root: &Path) -> Result<Vec<String>> {
    let mut bases = vec![root.to_path_buf()];
    for entry in fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let src = entry?.path().join("src");
        if src.is_dir() {
            bases.push(src);
        }
    }
    let mut missing = Vec::new();
    for file in doc_files(root)? {
        let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let folder = file.parent().unwrap_or(root).to_path_buf();
        for path in rs_paths(&text) {
            if !bases.iter().chain([&folder]).any(|base| base.join(path).is_file()) {
                let shown = file.strip_prefix(root).unwrap_or(&file).display();
                missing.push(format!("{shown}: {path}"));
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rs_paths_in_text() {
        let text = "See `hypervisor/src/mm.rs`, arch/boot.rs. Not main.rs's twin: (vcpu.rs) or /abs/x.rs; a .rs file.";
        assert_eq!(rs_paths(text), ["hypervisor/src/mm.rs", "arch/boot.rs", "main.rs", "vcpu.rs"]);
    }

    /// The lint step's check on this tree: the docs name no file that is gone.
    #[test]
    fn docs_name_only_files_that_exist() {
        let root = crate::workspace_root();
        assert_eq!(missing_doc_paths(&root).unwrap(), Vec::<String>::new());
        let files = doc_files(&root).unwrap();
        assert!(files.contains(&root.join("docs").join("architecture.md")), "{files:?}");
    }
}
