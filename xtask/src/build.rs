//! `build`: the hypervisor (for `aarch64-unknown-none-softfloat`) and the guest (for
//! `aarch64-unknown-none`), and the guest `Image`.
//!
//! The hypervisor is built without floating point so that it never touches the FP/SIMD
//! registers, which hold the live state of the guest on the same CPU (vCPUs are pinned, so the
//! hypervisor saves only general-purpose registers on an exit).
//!
//! The inner build uses Debian's cargo and rustc (the rustup toolchain has no aarch64 target)
//! with `-Zbuild-std`; RUSTC_BOOTSTRAP lets the stable distribution compiler accept it.
//! It runs in its own target directory so it never fights the host build over `target/debug`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::image;
use crate::toolchain::{DEBIAN_CARGO, DEBIAN_RUSTC};

pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
pub const HYP_PACKAGE: &str = "asyncpf-hypervisor";
pub const GUEST_PACKAGE: &str = "asyncpf-guest";
/// Small hand-made guest images (`probes/`), built for the guest's target.
pub const PROBES_PACKAGE: &str = "asyncpf-probes";

/// Where the cross build and its products live.
pub fn cross_dir(root: &Path) -> PathBuf {
    root.join("target").join("cross")
}
pub fn hypervisor_elf(root: &Path) -> PathBuf {
    cross_dir(root).join(HYP_TARGET).join("release").join(HYP_PACKAGE)
}
pub fn guest_elf(root: &Path) -> PathBuf {
    cross_dir(root).join(GUEST_TARGET).join("release").join(GUEST_PACKAGE)
}
pub fn guest_image(root: &Path) -> PathBuf {
    cross_dir(root).join(format!("{GUEST_PACKAGE}.Image"))
}
/// Where the traced build (`--features trace`, `cargo xtask run --trace`) lives: its own
/// target directory, so that the untraced artefacts stay as they are.
pub fn traced_dir(root: &Path) -> PathBuf {
    root.join("target").join("cross-trace")
}
pub fn traced_hypervisor_elf(root: &Path) -> PathBuf {
    traced_dir(root).join(HYP_TARGET).join("release").join(HYP_PACKAGE)
}
pub fn traced_guest_image(root: &Path) -> PathBuf {
    traced_dir(root).join(format!("{GUEST_PACKAGE}.Image"))
}

/// Builds the hypervisor and the guest with their `trace` feature (into [`traced_dir`]) and
/// writes the traced guest Image.
pub fn build_traced(root: &Path) -> Result<()> {
    for (package, target) in [(HYP_PACKAGE, HYP_TARGET), (GUEST_PACKAGE, GUEST_TARGET)] {
        let mut cmd = cross_cargo(root, "build", traced_dir(root), package, target);
        cmd.args(["--features", "trace"]);
        eprintln!("build: + (traced) {DEBIAN_CARGO} build -p {package} --features trace");
        let status = cmd.status().with_context(|| format!("cannot start {DEBIAN_CARGO}"))?;
        if !status.success() {
            bail!("the traced build of {package} for {target} failed ({status})");
        }
    }
    let elf = traced_dir(root).join(GUEST_TARGET).join("release").join(GUEST_PACKAGE);
    write_image(&elf, &traced_guest_image(root))?;
    Ok(())
}

/// The probe binaries (one per file in `probes/src/bin`).
pub const PROBES: &[&str] =
    &["escape", "flood", "tablewalk", "gic", "timer", "features", "initrd", "raw", "pin", "backlog", "cpu_on", "pmu"];
pub fn probe_elf(root: &Path, probe: &str) -> PathBuf {
    cross_dir(root).join(GUEST_TARGET).join("release").join(probe)
}
/// The Image of probe `probe`: `target/cross/probes/NAME.Image`.
pub fn probe_image(root: &Path, probe: &str) -> PathBuf {
    cross_dir(root).join("probes").join(format!("{probe}.Image"))
}

/// Environment variables the outer (rustup) cargo sets for `cargo xtask` that would change or
/// confuse the inner Debian cargo: flags meant for the host build, rustup's toolchain choice,
/// wrappers, and the package metadata of xtask itself.
fn is_inherited_cargo_var(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTUP_TOOLCHAIN",
        "RUST_RECURSION_COUNT",
        "CARGO",
        "CARGO_MAKEFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_RUSTC",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "OUT_DIR",
    ];
    const PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_CFG_", "CARGO_BIN_EXE_", "__CARGO"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Which of the bare-metal crates to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Select {
    pub hypervisor: bool,
    pub guest: bool,
    pub probes: bool,
}

impl Select {
    pub const BOTH: Select = Select { hypervisor: true, guest: true, probes: false };
    /// Everything, the probes too (the test suite).
    pub const ALL: Select = Select { hypervisor: true, guest: true, probes: true };

    /// The (package, target) pairs to build, one inner cargo run each.
    fn jobs(self) -> Vec<(&'static str, &'static str)> {
        let mut p = Vec::new();
        if self.hypervisor {
            p.push((HYP_PACKAGE, HYP_TARGET));
        }
        if self.guest {
            p.push((GUEST_PACKAGE, GUEST_TARGET));
        }
        if self.probes {
            p.push((PROBES_PACKAGE, GUEST_TARGET));
        }
        p
    }
}

/// The inner cargo command for one package (not yet run).
pub fn cross_command(root: &Path, package: &str, target: &str) -> Command {
    cross_cargo(root, "build", cross_dir(root), package, target)
}

/// The inner cargo's clippy for one package, `-D warnings` (own target directory, so that
/// linting never invalidates the build's artefacts).
pub fn cross_clippy_command(root: &Path, package: &str, target: &str) -> Command {
    cross_clippy(root, package, target, &[])
}

/// As [`cross_clippy_command`], with the `trace` feature (the traced build of `--trace`).
pub fn cross_clippy_traced_command(root: &Path, package: &str, target: &str) -> Command {
    cross_clippy(root, package, target, &["--features", "trace"])
}

fn cross_clippy(root: &Path, package: &str, target: &str, extra: &[&str]) -> Command {
    let mut cmd = cross_cargo(root, "clippy", root.join("target").join("clippy"), package, target);
    cmd.args(extra);
    // Debian's cargo-clippy (rust-web-clippy, matching the Debian compiler) before rustup's.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![PathBuf::from("/usr/bin")];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH entries without separators"));
    cmd.args(["--", "-D", "warnings"]);
    cmd
}

/// Every bare-metal crate and its target, as the build makes them.
pub fn cross_packages() -> [(&'static str, &'static str); 3] {
    [(HYP_PACKAGE, HYP_TARGET), (GUEST_PACKAGE, GUEST_TARGET), (PROBES_PACKAGE, GUEST_TARGET)]
}

fn cross_cargo(root: &Path, verb: &str, target_dir: PathBuf, package: &str, target: &str) -> Command {
    let mut cmd = Command::new(DEBIAN_CARGO);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str() {
            if is_inherited_cargo_var(name) {
                cmd.env_remove(name);
            }
        }
    }
    cmd.current_dir(root)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir)
        .args([verb, "--release"])
        .args(["-p", package, "--target", target])
        .args(["-Zbuild-std=core,alloc", "-Zbuild-std-features=compiler-builtins-mem"])
        .stdin(Stdio::null());
    cmd
}

/// Builds the selected crates and, with the guest, writes the guest Image. Cargo's own output
/// goes to the terminal.
pub fn build(root: &Path, select: Select) -> Result<()> {
    for (package, target) in select.jobs() {
        build_one(root, package, target)?;
    }
    let products = [(select.hypervisor, hypervisor_elf(root)), (select.guest, guest_elf(root))];
    for (_, elf) in products.iter().filter(|(selected, _)| *selected) {
        if !elf.is_file() {
            bail!("the cross build succeeded but {} is missing", elf.display());
        }
    }
    if select.guest {
        write_guest_image(root)?;
    }
    if select.probes {
        for probe in PROBES {
            write_image(&probe_elf(root, probe), &probe_image(root, probe))?;
        }
    }
    Ok(())
}

fn build_one(root: &Path, package: &str, target: &str) -> Result<()> {
    let mut cmd = cross_command(root, package, target);
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!(
        "build: + RUSTC={DEBIAN_RUSTC} RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR={} {DEBIAN_CARGO} {}",
        cross_dir(root).display(),
        args.join(" ")
    );
    let status = cmd.status().with_context(|| format!("cannot start {DEBIAN_CARGO}"))?;
    if !status.success() {
        bail!(
            "the cross build of {package} for {target} failed ({status}); \
             see cargo's messages above. If the link step complains about a missing entry point, \
             `_start`, a panic handler or `main`, the crate is still a host stub: bare-metal \
             crates need #![no_std], #![no_main], a #[panic_handler] and a linker script"
        );
    }
    Ok(())
}

/// Converts the guest ELF into `target/cross/asyncpf-guest.Image` and checks its header.
pub fn write_guest_image(root: &Path) -> Result<PathBuf> {
    write_image(&guest_elf(root), &guest_image(root))
}

/// Converts a bare-metal ELF into the Image `out` and checks its header.
fn write_image(elf_path: &Path, out: &Path) -> Result<PathBuf> {
    let out = out.to_path_buf();
    let elf = fs::read(elf_path).with_context(|| format!("cannot read {}", elf_path.display()))?;
    let image =
        image::elf_to_image(&elf).with_context(|| format!("cannot make an Image from {}", elf_path.display()))?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(&out, &image).with_context(|| format!("cannot write {}", out.display()))?;
    let header = image::check_header(&image).map_err(|e| {
        anyhow::anyhow!(
            "the guest Image is not bootable: {e} ({} was written from {}; the guest must start \
             with the 64-byte arm64 Image header of Linux booting.rst, whose image_size covers \
             the file and the bss)",
            out.display(),
            elf_path.display()
        )
    })?;
    eprintln!(
        "build: {} ({} bytes, text_offset {:#x}, image_size {:#x})",
        out.display(),
        image.len(),
        header.text_offset,
        header.image_size
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_cargo_environment() {
        for inherited in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTUP_TOOLCHAIN",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO",
        ] {
            assert!(is_inherited_cargo_var(inherited), "{inherited}");
        }
        for kept in ["CARGO_HOME", "PATH", "HOME", "CARGO_TERM_COLOR", "RUSTUP_HOME"] {
            assert!(!is_inherited_cargo_var(kept), "{kept}");
        }
        let root = Path::new("/w");
        let cmd = cross_command(root, HYP_PACKAGE, HYP_TARGET);
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&("RUSTC".as_ref(), Some(DEBIAN_RUSTC.as_ref()))));
        assert!(envs.contains(&("RUSTC_BOOTSTRAP".as_ref(), Some("1".as_ref()))));
        assert!(envs.contains(&("CARGO_TARGET_DIR".as_ref(), Some("/w/target/cross".as_ref()))));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert!(args.contains(&"-Zbuild-std=core,alloc"));
        assert_eq!(args[..6], ["build", "--release", "-p", HYP_PACKAGE, "--target", HYP_TARGET]);
        assert_eq!(Select::BOTH.jobs(), [(HYP_PACKAGE, HYP_TARGET), (GUEST_PACKAGE, GUEST_TARGET)]);
        assert_eq!(Select { hypervisor: false, guest: true, probes: false }.jobs(), [(GUEST_PACKAGE, GUEST_TARGET)]);
        assert_eq!(Select::ALL.jobs().last(), Some(&(PROBES_PACKAGE, GUEST_TARGET)));
        assert_eq!(probe_image(root, "escape"), Path::new("/w/target/cross/probes/escape.Image"));
        assert_eq!(
            hypervisor_elf(root),
            Path::new("/w/target/cross/aarch64-unknown-none-softfloat/release/asyncpf-hypervisor")
        );
        assert_eq!(guest_image(root), Path::new("/w/target/cross/asyncpf-guest.Image"));
    }
}
