//! `linux/boot`: an unmodified arm64 Linux kernel boots under the hypervisor.
//!
//! The kernel is Debian's `cloud-arm64` flavour, fetched with apt (the arm64 architecture is
//! added to dpkg if needed) and unpacked under `target/linux/`, where later runs find it. It
//! boots on 2 vCPUs with no root file system, so the expected end is Linux's "Unable to mount
//! root fs" panic followed, with `panic=-1`, by PSCI SYSTEM_RESET, which the hypervisor turns
//! into exit status 3. Booting that far exercises the device tree, PSCI CPU_ON, the vGIC, the
//! virtual timer, the PL011 and the ID-register traps with someone else's kernel.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{initramfs, run};

/// A Debian arm64 cloud kernel series that the Linux tests and `cargo xtask linux --kernel`
/// boot: the `linux-image-cloud-arm64` metapackage of a suite names the current kernel package.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelSeries {
    /// bookworm's kernel (apt's candidate of the metapackage, bookworm-security's if newer).
    #[default]
    #[value(name = "6.1")]
    V6_1,
    /// bookworm-backports' kernel (the suite must be in apt's sources).
    #[value(name = "6.12")]
    V6_12,
}

impl KernelSeries {
    /// The series as Debian numbers it, e.g. `6.12`.
    pub fn name(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => "6.1",
            KernelSeries::V6_12 => "6.12",
        }
    }

    /// The metapackage whose dependency names the kernel package (`pkg/suite` picks a suite).
    fn metapackage(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => "linux-image-cloud-arm64:arm64",
            KernelSeries::V6_12 => "linux-image-cloud-arm64:arm64/bookworm-backports",
        }
    }

    /// Where the unpacked package is cached: `target/linux/` for 6.1 (where it always was),
    /// `target/linux/6.12/` for 6.12.
    fn dir(self, root: &Path) -> PathBuf {
        match self {
            KernelSeries::V6_1 => linux_dir(root),
            other => linux_dir(root).join(other.name()),
        }
    }

    /// Whether a kernel package or `vmlinuz-` file name's version (`6.1.0-57-…`, `6.12.95+…`)
    /// is of this series.
    fn matches(self, version: &str) -> bool {
        version.strip_prefix(self.name()).is_some_and(|rest| rest.starts_with('.'))
    }
}
/// What the console must show, in order of boot. The SDEI line is Linux's SDEI driver taking
/// the hypervisor as its firmware (`/firmware/sdei`, SDEI_VERSION 1.1).
const EXPECTED_LINES: [&str; 4] = [
    "Booting Linux on physical CPU",
    "sdei: SDEIv1.1 (0x0) detected in firmware.",
    "CPU1: Booted secondary processor",
    "Kernel panic - not syncing: VFS: Unable to mount root fs",
];
/// Semihosting exit status for a guest SYSTEM_RESET (`asyncpf_contract::runner`).
const EXIT_SYSTEM_RESET: i64 = asyncpf_contract::runner::EXIT_SYSTEM_RESET as i64;

fn linux_dir(root: &Path) -> PathBuf {
    root.join("target").join("linux")
}

pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let unreachable = if apt_unreachable(&stderr) { format!(" ({ARCHIVE_UNREACHABLE})") } else { String::new() };
        bail!("{cmd:?} failed ({}){unreachable}: {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Said of an apt command that could not reach Debian's archive: the Linux tests are then
/// skipped, with this reason, instead of failing (nothing cached, and nowhere to fetch from).
pub const ARCHIVE_UNREACHABLE: &str = "apt cannot reach Debian's archive";

/// Whether apt's error output says the archive could not be reached (no network, no name
/// resolution, the mirror refused), rather than that a package is wrong.
pub fn apt_unreachable(stderr: &str) -> bool {
    ["Could not resolve", "Temporary failure resolving", "Failed to fetch", "Could not connect", "Unable to connect"]
        .iter()
        .any(|m| stderr.contains(m))
}

/// A Linux test's result, with "could not reach the archive" turned into a clear skip.
pub fn skip_if_unreachable(result: Result<String>) -> Result<String> {
    match result {
        Err(e) if format!("{e:#}").contains(ARCHIVE_UNREACHABLE) => {
            Ok(format!("skipped: {ARCHIVE_UNREACHABLE} and nothing is cached in target/linux/ ({e:#})"))
        }
        other => other,
    }
}

/// The unpacked kernel Image of `series`, fetched once.
pub fn fetch_kernel(root: &Path, series: KernelSeries) -> Result<PathBuf> {
    let dir = series.dir(root);
    if let Some(found) = find_vmlinuz(&dir, series) {
        return Ok(found);
    }
    ensure_arm64_architecture()?;
    let metapackage = series.metapackage();
    let depends = run_checked(Command::new("apt-cache").args(["depends", metapackage]))?;
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .with_context(|| format!("apt-cache does not know {metapackage}'s kernel"))?
        .to_string();
    if !package.strip_prefix("linux-image-").is_some_and(|v| series.matches(v)) {
        bail!("{metapackage} depends on {package}, not a {} kernel", series.name());
    }
    fs::create_dir_all(&dir)?;
    println!("linux: downloading {package}");
    run_checked(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&dir))?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("root")))?;
    let _ = fs::remove_file(&deb);
    find_vmlinuz(&dir, series).with_context(|| format!("{package} has no /boot/vmlinuz-{}.*", series.name()))
}

/// dpkg knows the arm64 architecture (added, and apt's lists updated, if not), so that apt can
/// download arm64 packages.
pub fn ensure_arm64_architecture() -> Result<()> {
    let foreign = run_checked(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        println!("linux: adding the arm64 architecture to dpkg to download arm64 packages");
        run_checked(Command::new("dpkg").args(["--add-architecture", "arm64"]))
            .context("run as root, or: dpkg --add-architecture arm64 && apt-get update")?;
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    }
    Ok(())
}

fn find_vmlinuz(dir: &Path, series: KernelSeries) -> Option<PathBuf> {
    fs::read_dir(dir.join("root").join("boot")).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .is_some_and(|v| series.matches(v))
    })
}

/// CPU models the kernel boots on: `a64fx` has a 256-byte writeback granule, where a device tree
/// without `dma-coherent` made Linux warn three times and taint itself.
const CPU_MODELS: [&str; 2] = ["max", "a64fx"];
/// Linux's complaint about a non-coherent DMA granule, which must not appear.
const DMA_MINALIGN_WARNING: &str = "ARCH_DMA_MINALIGN";
/// The panic dump's CPU line says whether the kernel is tainted.
const NOT_TAINTED: &str = "Not tainted";
/// Linux found the initramfs given with `--initrd` (through /chosen) and unpacked it without
/// an error.
const INITRD_FOUND: &str = "Trying to unpack rootfs image as initramfs";
const INITRD_FAILED: &str = "Initramfs unpacking failed";

/// Boot the kernel through this very binary's `run` on each CPU model and check how far it got.
pub fn boot_test(root: &Path) -> Result<String> {
    let kernel = match fetch_kernel(root, KernelSeries::default()) {
        Err(e) if format!("{e:#}").contains(ARCHIVE_UNREACHABLE) => return skip_if_unreachable(Err(e)),
        other => other?,
    };
    let mut notes = Vec::new();
    for cpu in CPU_MODELS {
        notes.push(boot_on(root, &kernel, cpu).with_context(|| format!("on -cpu {cpu}"))?);
    }
    Ok(notes.join("; "))
}

fn boot_on(root: &Path, kernel: &Path, cpu: &str) -> Result<String> {
    let json = run::temp_dir(root).join(format!("linux-boot-{cpu}-{}.json", std::process::id()));
    // An initramfs without /init: Linux unpacks it, then still looks for a root file system.
    let initrd = run::temp_dir(root).join(format!("linux-boot-{cpu}-{}.cpio.gz", std::process::id()));
    let readme = initramfs::Entry { path: "README", mode: initramfs::S_IFREG | 0o644, data: b"asyncpf linux/boot\n" };
    fs::write(&initrd, initramfs::gzip_cpio(&[readme])?)?;
    fs::create_dir_all(json.parent().expect("a file in a directory"))?;
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let out = Command::new(&exe)
        .args(["run", "--no-build", "--vcpus", "2", "--guest-mib", "256", "--timeout", "150", "--cpu", cpu])
        .args(["--guest-cmdline", "console=ttyAMA0 panic=-1", "--expect", "reset"])
        .args(["--success-pattern", EXPECTED_LINES[EXPECTED_LINES.len() - 1], "--guest-kernel"])
        .arg(kernel)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let _ = fs::remove_file(&initrd);
    let report: Value = serde_json::from_slice(&fs::read(&json).context("no --json report")?)?;
    let _ = fs::remove_file(&json);
    let console: Vec<&str> =
        report["console_tail"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    // The whole console is on stdout (no --quiet); the report keeps only its tail.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    for expected in EXPECTED_LINES {
        if !stdout.contains(expected) && !console.iter().any(|l| l.contains(expected)) {
            problems.push(format!("the console never showed {expected:?}"));
        }
    }
    if !stdout.contains(INITRD_FOUND) || stdout.contains(INITRD_FAILED) {
        problems.push(format!("Linux did not unpack the --initrd initramfs ({INITRD_FOUND:?}, no {INITRD_FAILED:?})"));
    }
    if stdout.contains(DMA_MINALIGN_WARNING) || !stdout.contains(NOT_TAINTED) {
        problems.push(format!("Linux warned about {DMA_MINALIGN_WARNING} or tainted itself"));
    }
    // Judged as a foreign guest: it reset (--expect reset) after the root-mount panic line.
    if report["ok"] != true || report["end"] != "system_reset" {
        problems.push(format!("the run was not ok: end {}, failure {}", report["end"], report["failure"]));
    }
    if report["exit_status"].as_i64() != Some(EXIT_SYSTEM_RESET) {
        problems.push(format!("exit status {} instead of {EXIT_SYSTEM_RESET} (SYSTEM_RESET)", report["exit_status"]));
    }
    // Linux's SDEI driver probes, resets and unmasks every CPU: all answered without an error.
    let sdei = &report["hyp"]["sdei"];
    if sdei["calls"].as_u64().unwrap_or(0) == 0 || sdei["errors"] != 0 || sdei["not_supported"] != 0 {
        problems.push(format!("the SDEI driver's calls were not all answered: {sdei}"));
    }
    if report["hyp"]["end"].as_str() != Some("system_reset") {
        problems.push(format!("the hypervisor reported end {} instead of system_reset", report["hyp"]["end"]));
    }
    if !problems.is_empty() {
        bail!("{}; console tail:\n{}", problems.join("; "), console.join("\n"));
    }
    let name = kernel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(format!(
        "{name} on {cpu}: 2 vCPUs, initramfs unpacked, root-mount panic, not tainted, {} exits, {} SDEI calls",
        report["hyp"]["exits"], sdei["calls"]
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn apt_errors_that_mean_the_archive_is_unreachable() {
        assert!(apt_unreachable(
            "Err:1 http://deb.debian.org/debian bookworm InRelease\n  Temporary failure resolving 'deb.debian.org'"
        ));
        assert!(apt_unreachable("E: Failed to fetch http://deb.debian.org/debian/pool/main/l/linux.deb  Could not connect to deb.debian.org:80"));
        assert!(!apt_unreachable("E: Unable to locate package linux-image-9.9-cloud-arm64"));
        assert!(!apt_unreachable(""));
        let skipped =
            skip_if_unreachable(Err(anyhow::anyhow!("apt-get download failed ({ARCHIVE_UNREACHABLE})"))).unwrap();
        assert!(skipped.starts_with("skipped: apt cannot reach"), "{skipped}");
        assert!(skip_if_unreachable(Err(anyhow::anyhow!("a package is wrong"))).is_err());
    }
    use super::*;

    #[test]
    fn kernel_series_match_their_versions_only() {
        assert!(KernelSeries::V6_1.matches("6.1.0-57-cloud-arm64"));
        assert!(!KernelSeries::V6_1.matches("6.12.95+deb12-cloud-arm64"));
        assert!(KernelSeries::V6_12.matches("6.12.95+deb12-cloud-arm64"));
        assert!(!KernelSeries::V6_12.matches("6.1.0-57-cloud-arm64"));
        let root = Path::new("/r");
        assert_eq!(KernelSeries::V6_1.dir(root), Path::new("/r/target/linux"));
        assert_eq!(KernelSeries::V6_12.dir(root), Path::new("/r/target/linux/6.12"));
    }
}
