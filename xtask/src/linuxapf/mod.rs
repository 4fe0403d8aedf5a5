//! The patched Linux kernel of `cargo xtask linux --apf`: Debian's `linux-source-6.12` with the
//! asynchronous page fault client of `linux/patches/`, built with `linux/asyncpf.config` on top
//! of `tinyconfig`.
//!
//! The source package and the cross compiler are installed with apt when missing. The source is
//! unpacked once into `target/linux/src/linux-source-6.12/` (a git tree, to reset it before the
//! patches are applied again) and built in `target/linux/build-apf/`, stamped with a hash of
//! the tarball's name, the patches and the fragment: a later run reuses the Image until one of
//! them changes, and then rebuilds what the change touches.
//!
//! [`bench`](mod@bench) is `cargo xtask linux --apf`, the side-by-side benchmark; [`cases`] are the
//! client's tests in `cargo xtask test`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::linux::run_checked;

pub mod bench;
pub mod cases;

/// The Debian package with the kernel source the patches apply to.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// Where that package puts the source.
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// What the build needs besides the source, with the command each provides.
const TOOLS: [(&str, &str); 7] = [
    ("libc6-dev-arm64-cross", "/usr/aarch64-linux-gnu/lib/libc.a"),
    ("gcc-aarch64-linux-gnu", "aarch64-linux-gnu-gcc"),
    ("make", "make"),
    ("bc", "bc"),
    ("flex", "flex"),
    ("bison", "bison"),
    // checkpatch.pl checks SPDX identifiers with scripts/spdxcheck.py, which needs PLY.
    ("python3-ply", "/usr/lib/python3/dist-packages/ply/__init__.py"),
];
/// The error's context when apt cannot install what the build needs (the `linux/apf` test
/// skips then).
pub const APT_UNAVAILABLE: &str = "apt-get cannot install the kernel source or the build tools";
/// The tag of the unpacked, unpatched source in its git tree.
const BASE_TAG: &str = "asyncpf-base";
const MAKE_ARGS: [&str; 2] = ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"];

fn on_path(command: &str) -> bool {
    if command.starts_with('/') {
        return Path::new(command).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(command).is_file()))
}

/// Installs the source package and the build tools that are missing.
fn ensure_packages() -> Result<()> {
    let mut missing: Vec<&str> = TOOLS.iter().filter(|(_, cmd)| !on_path(cmd)).map(|(pkg, _)| *pkg).collect();
    if !Path::new(SOURCE_TARBALL).exists() {
        missing.push(SOURCE_PACKAGE);
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("linux: installing {}", missing.join(" "));
    let install = || run_checked(Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing));
    if install().is_err() {
        run_checked(Command::new("apt-get").args(["update", "-q"])).and_then(|_| install()).context(APT_UNAVAILABLE)?;
    }
    Ok(())
}

/// The patches in the order they apply.
fn patches(root: &Path) -> Result<Vec<PathBuf>> {
    let mut list: Vec<PathBuf> = fs::read_dir(root.join("linux").join("patches"))
        .context("no linux/patches")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    list.sort();
    Ok(list)
}

/// FNV-1a over the inputs of the build: stable across runs and toolchains.
fn cache_key(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &byte in part.iter().chain((part.len() as u64).to_le_bytes().iter()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The `CONFIG_X=y` lines of the fragment that the final configuration must keep.
fn required_options(fragment: &str) -> Vec<&str> {
    fragment.lines().map(str::trim).filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y")).collect()
}

/// Runs git in the kernel source tree.
fn git(src: &Path, args: &[&str]) -> Result<String> {
    run_checked(
        Command::new("git")
            .arg("-C")
            .arg(src)
            .args(["-c", "user.name=asyncpf xtask", "-c", "user.email=xtask@localhost"])
            .args(args),
    )
}

/// The unpacked source as a git tree whose tag [`BASE_TAG`] is Debian's source, unpacked once.
fn unpack_source(src: &Path) -> Result<()> {
    if src.join(".git").exists() && git(src, &["rev-parse", "-q", "--verify", BASE_TAG]).is_ok() {
        return Ok(());
    }
    let parent = src.parent().expect("the source has a parent directory");
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(parent)?;
    println!("linux: unpacking {SOURCE_TARBALL}");
    run_checked(Command::new("tar").args(["xf", SOURCE_TARBALL, "-C"]).arg(parent))?;
    if !src.exists() {
        bail!("{SOURCE_TARBALL} has no {}", src.display());
    }
    // Debian's .gitignore ignores the whole top level: add everything by force.
    git(src, &["init", "-q"])?;
    git(src, &["add", "-f", "-A"])?;
    git(src, &["commit", "-q", "-m", "Debian's linux-source-6.12"])?;
    git(src, &["tag", BASE_TAG])?;
    Ok(())
}

/// The patched kernel's Image, rebuilt (incrementally) when the patches or the fragment changed.
///
/// The source is reset to Debian's and the patches applied again; only the files they touch
/// get new modification times, so `make` recompiles only what depends on them.
pub fn build_kernel(root: &Path) -> Result<PathBuf> {
    let fragment_path = root.join("linux").join("asyncpf.config");
    let fragment = fs::read_to_string(&fragment_path).with_context(|| format!("{}", fragment_path.display()))?;
    let patches = patches(root)?;
    let contents: Vec<Vec<u8>> = patches.iter().map(fs::read).collect::<std::io::Result<_>>()?;
    let mut parts: Vec<&[u8]> = vec![SOURCE_TARBALL.as_bytes(), fragment.as_bytes()];
    parts.extend(contents.iter().map(Vec::as_slice));
    let key = format!("{:016x}", cache_key(&parts));
    let dir = root.join("target").join("linux");
    let src = dir.join("src").join(SOURCE_PACKAGE);
    let build = dir.join("build-apf");
    let stamp = build.join("asyncpf-key");
    let image = build.join("arch").join("arm64").join("boot").join("Image");
    if image.exists() && fs::read_to_string(&stamp).is_ok_and(|k| k.trim() == key) {
        return Ok(image);
    }
    ensure_packages()?;
    unpack_source(&src)?;
    git(&src, &["checkout", "-q", "-f", "--detach", BASE_TAG])?;
    git(&src, &["clean", "-q", "-ffdx"])?;
    for patch in &patches {
        println!("linux: applying {}", patch.file_name().unwrap_or_default().to_string_lossy());
        git(&src, &["apply", &patch.to_string_lossy()])?;
    }
    fs::create_dir_all(&build)?;
    let _ = fs::remove_file(&stamp);
    let make = |targets: &[&str]| {
        run_checked(
            Command::new("make")
                .arg("-C")
                .arg(&src)
                .arg(format!("O={}", build.display()))
                .args(MAKE_ARGS)
                .args(targets),
        )
    };
    make(&["-s", "tinyconfig"])?;
    let config = build.join(".config");
    let mut text = fs::read_to_string(&config)?;
    text.push_str(&fragment);
    fs::write(&config, text)?;
    make(&["-s", "olddefconfig"])?;
    let text = fs::read_to_string(&config)?;
    let lost: Vec<&str> = required_options(&fragment).into_iter().filter(|o| !text.lines().any(|l| l == *o)).collect();
    if !lost.is_empty() {
        bail!("the kernel configuration lost {}", lost.join(" "));
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    println!("linux: building the patched kernel in {} with {jobs} jobs (minutes when cold)", build.display());
    let started = std::time::Instant::now();
    make(&[&format!("-j{jobs}"), "-s", "Image"])?;
    if !image.exists() {
        bail!("the kernel build produced no {}", image.display());
    }
    fs::write(&stamp, &key)?;
    println!("linux: built {} in {:.0} s", image.display(), started.elapsed().as_secs_f64());
    Ok(image)
}

/// `scripts/checkpatch.pl --strict` on `linux/patches/`, in the unpacked source: the number
/// of patches, each clean, or an error with checkpatch's report.
pub fn checkpatch(root: &Path) -> Result<usize> {
    ensure_packages()?;
    let src = root.join("target").join("linux").join("src").join(SOURCE_PACKAGE);
    unpack_source(&src)?;
    let patches = patches(root)?;
    let output = cases::run_checkpatch(&src, &patches)?;
    cases::checkpatch_output_clean(&output, patches.len())?;
    Ok(patches.len())
}

/// The page-touching workload `linux/workload/apftouch.c`, a static arm64 binary, compiled
/// when its source is newer.
pub fn build_touch(root: &Path) -> Result<PathBuf> {
    let source = root.join("linux").join("workload").join("apftouch.c");
    let binary = root.join("target").join("linux").join("apftouch");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if binary.exists() && modified(&binary) >= modified(&source) {
        return Ok(binary);
    }
    ensure_packages()?;
    fs::create_dir_all(binary.parent().expect("a file in a directory"))?;
    run_checked(
        Command::new("aarch64-linux-gnu-gcc").args(["-static", "-O2", "-Wall", "-o"]).arg(&binary).arg(&source),
    )?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_changes_with_any_input() {
        let a = cache_key(&[b"tarball", b"CONFIG_A=y\n", b"patch 1"]);
        assert_eq!(a, cache_key(&[b"tarball", b"CONFIG_A=y\n", b"patch 1"]));
        assert_ne!(a, cache_key(&[b"tarball", b"CONFIG_A=y\n", b"patch 2"]));
        assert_ne!(a, cache_key(&[b"tarball", b"CONFIG_A=y\npatch 1"]), "part boundaries count");
    }

    #[test]
    fn the_fragment_lists_the_client_and_sdei() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let fragment = fs::read_to_string(root.join("linux").join("asyncpf.config")).unwrap();
        let required = required_options(&fragment);
        for option in ["CONFIG_ASYNCPF_GUEST=y", "CONFIG_ARM_SDE_INTERFACE=y", "CONFIG_BLK_DEV_INITRD=y"] {
            assert!(required.contains(&option), "{option}");
        }
        assert!(!patches(root).unwrap().is_empty());
    }
}
