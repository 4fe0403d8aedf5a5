//! `setup`: the Debian cross toolchain and the pinned QEMU.
//!
//! The rustup toolchain on the project's machines has only the host target, so the bare-metal
//! build uses Debian's `rustc-web`/`cargo-web` with `rust-web-src` (for `-Zbuild-std`) and `lld`.
//! QEMU is pinned to major version 10 (Debian `bookworm-backports`), because the runner's
//! results are only comparable on one QEMU. Everything is checked with plain `stat`s and one
//! `qemu-system-aarch64 --version`, so the check is fast; apt is only called when something is
//! missing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// The Debian compiler and cargo (rustup's `~/.cargo/bin` comes first on PATH, so full paths).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Standard library sources for `-Zbuild-std`.
pub const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
/// The linker named in `.cargo/config.toml`.
pub const LLD: &str = "/usr/bin/ld.lld";
/// Debian's clippy for the Debian compiler (the bare-metal crates' lints).
pub const DEBIAN_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// The pinned QEMU binary and its major version.
pub const QEMU: &str = "/usr/bin/qemu-system-aarch64";
pub const QEMU_MAJOR: u32 = 10;

/// Where apt sources live; the backports file we add is deb822 like Debian 12's own.
const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const APT_SOURCES_LIST: &str = "/etc/apt/sources.list";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What `setup` found: the tools the other subcommands use.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub qemu: PathBuf,
    /// First line of `qemu-system-aarch64 --version`, reported with every result.
    pub qemu_version: String,
}

impl Toolchain {
    pub fn print_summary(&self) {
        println!("setup: Debian rustc  {DEBIAN_RUSTC} ({})", tool_version(DEBIAN_RUSTC));
        println!("setup: Debian cargo  {DEBIAN_CARGO} ({})", tool_version(DEBIAN_CARGO));
        println!("setup: rust-src      {RUST_SRC}");
        println!("setup: linker        {LLD} ({})", tool_version(LLD));
        println!("setup: QEMU          {} ({})", self.qemu.display(), self.qemu_version);
        println!("setup: everything is present");
    }
}

/// One thing the runner needs, and the Debian package that provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Missing {
    what: String,
    package: &'static str,
    /// Installed from the backports suite (`-t <codename>-backports`).
    backports: bool,
}

/// Checks everything; installs what is missing when running as root or with passwordless sudo.
pub fn ensure() -> Result<Toolchain> {
    let (missing, qemu_version) = find_missing();
    if missing.is_empty() {
        let qemu_version = qemu_version.ok_or_else(|| anyhow!("QEMU version unknown"))?;
        return Ok(Toolchain { qemu: QEMU.into(), qemu_version });
    }
    let codename = debian_codename();
    let need_source = missing.iter().any(|m| m.backports) && !backports_configured(&codename);
    let plan = InstallPlan { missing: missing.clone(), codename, need_source };
    let privilege = match privilege() {
        Some(p) => p,
        None => bail!(
            "missing: {}.\nRun as root (or give this user passwordless sudo), then retry:\n{}",
            describe(&missing),
            plan.shell_commands()
        ),
    };
    eprintln!("setup: missing {}; installing with apt-get:", describe(&missing));
    plan.execute(privilege)
        .with_context(|| format!("installing failed; to do it by hand, run as root:\n{}", plan.shell_commands()))?;
    let (still, _) = find_missing();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", describe(&still));
    }
    probe()
}

fn describe(missing: &[Missing]) -> String {
    missing.iter().map(|m| format!("{} (package {})", m.what, m.package)).collect::<Vec<_>>().join(", ")
}

/// Everything missing, and the QEMU version line when QEMU is the pinned one.
fn find_missing() -> (Vec<Missing>, Option<String>) {
    let mut missing = Vec::new();
    let mut need = |ok: bool, what: String, package: &'static str, backports: bool| {
        if !ok {
            missing.push(Missing { what, package, backports });
        }
    };
    need(Path::new(DEBIAN_RUSTC).is_file(), DEBIAN_RUSTC.into(), "rustc-web", false);
    need(Path::new(DEBIAN_CARGO).is_file(), DEBIAN_CARGO.into(), "cargo-web", false);
    need(Path::new(RUST_SRC).join("core").is_dir(), RUST_SRC.into(), "rust-web-src", false);
    need(Path::new(LLD).exists(), LLD.into(), "lld", false);
    need(Path::new(DEBIAN_CLIPPY).is_file(), DEBIAN_CLIPPY.into(), "rust-web-clippy", false);
    // The independent reader of `qemu/trace` (tools/trace/check_trace.py).
    let jsonschema = std::process::Command::new("python3")
        .args(["-c", "import jsonschema"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    need(jsonschema, "python3 with its jsonschema package".into(), "python3-jsonschema", false);
    let qemu = qemu_version();
    let qemu_ok = matches!(&qemu, Ok(v) if parse_qemu_major(v) == Some(QEMU_MAJOR));
    let what = match &qemu {
        Ok(v) if !qemu_ok => format!("QEMU {QEMU_MAJOR}.x (found {v:?})"),
        _ => format!("{QEMU} (QEMU {QEMU_MAJOR}.x)"),
    };
    need(qemu_ok, what, "qemu-system-arm", true);
    (missing, qemu.ok().filter(|_| qemu_ok))
}

/// Runs the pinned QEMU's `--version` and checks the major version.
fn probe() -> Result<Toolchain> {
    let version = qemu_version()?;
    match parse_qemu_major(&version) {
        Some(QEMU_MAJOR) => Ok(Toolchain { qemu: QEMU.into(), qemu_version: version }),
        _ => bail!(
            "{QEMU} is {version:?}, but the runner is pinned to QEMU {QEMU_MAJOR}.x \
             (apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-arm)"
        ),
    }
}

fn qemu_version() -> Result<String> {
    let out = Command::new(QEMU)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {QEMU} --version"))?;
    if !out.status.success() {
        bail!("{QEMU} --version failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-...)` -> 10.
pub fn parse_qemu_major(version_line: &str) -> Option<u32> {
    let rest = version_line.split("version ").nth(1)?;
    rest.split(['.', ' ']).next()?.parse().ok()
}

fn tool_version(path: &str) -> String {
    Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into())
}

/// `VERSION_CODENAME` of /etc/os-release (`bookworm` on the project's machines).
fn debian_codename() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

/// Is `<codename>-backports` in any apt source (one-line or deb822)?
fn backports_configured(codename: &str) -> bool {
    let suite = format!("{codename}-backports");
    let mut files = vec![PathBuf::from(APT_SOURCES_LIST)];
    if let Ok(dir) = fs::read_dir(APT_SOURCES_DIR) {
        files.extend(
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("list") | Some("sources"))),
        );
    }
    files.iter().any(|f| {
        fs::read_to_string(f)
            .map(|t| t.lines().any(|l| !l.trim_start().starts_with('#') && l.contains(&suite)))
            .unwrap_or(false)
    })
}

/// The deb822 backports source: the same mirror and keyring as Debian's own `debian.sources`.
pub fn backports_source(debian_sources: Option<&str>, codename: &str) -> String {
    let field = |name: &str| -> Option<String> {
        debian_sources?.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let uris = field("URIs").unwrap_or_else(|| DEFAULT_MIRROR.into());
    // Signed-By may also hold an inline key block; then use Debian's keyring file.
    let keyring = field("Signed-By").filter(|k| k.starts_with('/')).unwrap_or_else(|| DEFAULT_KEYRING.into());
    format!("Types: deb\nURIs: {uris}\nSuites: {codename}-backports\nComponents: main\nSigned-By: {keyring}\n")
}

/// How we may run apt-get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Privilege {
    Root,
    Sudo,
}

fn privilege() -> Option<Privilege> {
    if effective_uid() == Some(0) {
        return Some(Privilege::Root);
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    sudo_ok.then_some(Privilege::Sudo)
}

/// The effective uid from /proc (no libc dependency needed for one number).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// What `setup` would install, as commands (for the error message) or executed.
struct InstallPlan {
    missing: Vec<Missing>,
    codename: String,
    need_source: bool,
}

impl InstallPlan {
    fn source_path(&self) -> String {
        format!("{APT_SOURCES_DIR}/{}-backports.sources", self.codename)
    }

    fn source_text(&self) -> String {
        backports_source(fs::read_to_string(DEBIAN_SOURCES).ok().as_deref(), &self.codename)
    }

    fn packages(&self, backports: bool) -> Vec<&'static str> {
        let mut p: Vec<_> = self.missing.iter().filter(|m| m.backports == backports).map(|m| m.package).collect();
        p.dedup();
        p
    }

    /// The exact commands, for a human to run as root.
    fn shell_commands(&self) -> String {
        let mut cmds = Vec::new();
        if self.need_source {
            cmds.push(format!("printf '{}' > {}", self.source_text().replace('\n', "\\n"), self.source_path()));
        }
        cmds.push("apt-get update".into());
        let plain = self.packages(false);
        if !plain.is_empty() {
            cmds.push(format!("apt-get install -y --no-install-recommends {}", plain.join(" ")));
        }
        let bpo = self.packages(true);
        if !bpo.is_empty() {
            cmds.push(format!(
                "apt-get install -y --no-install-recommends -t {}-backports {}",
                self.codename,
                bpo.join(" ")
            ));
        }
        cmds.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n")
    }

    fn execute(&self, privilege: Privilege) -> Result<()> {
        if self.need_source {
            let path = self.source_path();
            eprintln!("setup: adding apt source {path}");
            write_privileged(&path, &self.source_text(), privilege)?;
        }
        apt(privilege, &["update"])?;
        let plain = self.packages(false);
        if !plain.is_empty() {
            eprintln!("setup: installing {}", plain.join(" "));
            let mut args = vec!["install", "-y", "--no-install-recommends"];
            args.extend(&plain);
            apt(privilege, &args)?;
        }
        let bpo = self.packages(true);
        if !bpo.is_empty() {
            let suite = format!("{}-backports", self.codename);
            eprintln!("setup: installing {} from {suite}", bpo.join(" "));
            let mut args = vec!["install", "-y", "--no-install-recommends", "-t", &suite];
            args.extend(&bpo);
            apt(privilege, &args)?;
        }
        Ok(())
    }
}

fn apt(privilege: Privilege, args: &[&str]) -> Result<()> {
    let mut cmd = match privilege {
        Privilege::Root => Command::new("apt-get"),
        Privilege::Sudo => {
            let mut c = Command::new("sudo");
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            c
        }
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args).stdin(Stdio::null());
    eprintln!("setup: + apt-get {}", args.join(" "));
    let status = cmd.status().context("cannot start apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn write_privileged(path: &str, text: &str, privilege: Privilege) -> Result<()> {
    match privilege {
        Privilege::Root => fs::write(path, text).with_context(|| format!("cannot write {path}")),
        Privilege::Sudo => {
            let mut child = Command::new("sudo")
                .args(["-n", "tee", path])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start sudo tee")?;
            child.stdin.take().ok_or_else(|| anyhow!("sudo tee has no stdin"))?.write_all(text.as_bytes())?;
            let status = child.wait()?;
            if !status.success() {
                bail!("sudo tee {path} failed ({status})");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_major() {
        assert_eq!(parse_qemu_major("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"), Some(10));
        assert_eq!(parse_qemu_major("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)"), Some(7));
        assert_eq!(parse_qemu_major("QEMU emulator version 10"), Some(10));
        assert_eq!(parse_qemu_major("garbage"), None);
    }

    #[test]
    fn backports_source_copies_mirror_and_keyring() {
        let debian = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /k.gpg\n";
        let text = backports_source(Some(debian), "bookworm");
        assert_eq!(
            text,
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /k.gpg\n"
        );
        let fallback = backports_source(None, "bookworm");
        assert!(fallback.contains(DEFAULT_MIRROR) && fallback.contains(DEFAULT_KEYRING));
    }

    #[test]
    fn install_commands_name_everything() {
        let plan = InstallPlan {
            missing: vec![
                Missing { what: "x".into(), package: "lld", backports: false },
                Missing { what: "q".into(), package: "qemu-system-arm", backports: true },
            ],
            codename: "bookworm".into(),
            need_source: true,
        };
        let cmds = plan.shell_commands();
        assert!(cmds.contains("bookworm-backports.sources"), "{cmds}");
        assert!(cmds.contains("apt-get update"));
        assert!(cmds.contains("apt-get install -y --no-install-recommends lld"));
        assert!(cmds.contains("-t bookworm-backports qemu-system-arm"));
    }
}
