//! The Linux client's tests in `cargo xtask test`:
//!
//! - `linux/apf/build`: the patched kernel builds (or its cache is current) and
//!   `scripts/checkpatch.pl --strict` finds nothing in `linux/patches/`;
//! - `linux/apf/v1`: one vCPU at 4x overcommit under -icount, apftouch with the client on and
//!   off: no errors either way, faults accepted (and every accepted task woken) only with it on;
//!   and with the client's fault injection failing half of the allocations that remember a
//!   page_ready which came before its task slept: counted as `no_memory`, no task left asleep;
//! - `linux/apf/v4-a64fx-hotplug`: four vCPUs on `-cpu a64fx` (a 256-byte writeback granule)
//!   in host time (the vCPUs really run at once), CPU 1 taken offline and online every 2 s
//!   while apftouch's tasks fault and wait for their pages: every offline's WAKE_ALL is
//!   consumed, every accepted task woken, no error.
//!
//! The kernel is built once per process: a cold build takes a few minutes on two cores. Only
//! when apt cannot install the source or the tools (no archive) are the tests skipped, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Result};

use super::bench::{apf_problems, apf_problems_with_lost_allocations, kernel_arg, touch_seconds, Mode};
use crate::cli::Touch;
use crate::toolchain::Toolchain;
use crate::userspace::{field, run_workload, workload_initrd, LinuxRun, WorkloadRow, TEST_TIMEOUT_SECS};

pub const BUILD: &str = "linux/apf/build";
pub const V1: &str = "linux/apf/v1";
pub const V4_A64FX_HOTPLUG: &str = "linux/apf/v4-a64fx-hotplug";

type Test = fn(&Path, &Toolchain) -> Result<String>;
/// The tests, in the order they run.
pub const TESTS: [(&str, Test); 3] = [(BUILD, build_test), (V1, v1_test), (V4_A64FX_HOTPLUG, hotplug_test)];

/// The patched kernel, or `Ok(Err(note))` to skip with that note when apt cannot reach the
/// archive; any other failure to build is an error.
fn kernel(root: &Path) -> Result<std::result::Result<PathBuf, String>> {
    static BUILT: OnceLock<std::result::Result<PathBuf, (bool, String)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| match super::build_kernel(root) {
        Ok(image) => Ok(image),
        Err(e) => {
            let text = format!("{e:#}");
            Err((text.contains(crate::linux::ARCHIVE_UNREACHABLE), text))
        }
    });
    match built {
        Ok(image) => Ok(Ok(image.clone())),
        Err((true, text)) => Ok(Err(format!("skipped: {}", text.lines().next().unwrap_or("")))),
        Err((false, text)) => bail!("the patched kernel did not build: {text}"),
    }
}

fn build_test(root: &Path, _: &Toolchain) -> Result<String> {
    let image = match kernel(root)? {
        Ok(image) => image,
        Err(skip) => return Ok(skip),
    };
    let patches = super::checkpatch(root)?;
    let size = std::fs::metadata(&image)?.len();
    Ok(format!("Image {} KiB; checkpatch --strict: {patches} patches, 0 errors, 0 warnings, 0 checks", size / 1024))
}

/// A run of apftouch on the patched kernel.
fn apf_run(root: &Path, image: PathBuf, vcpus: u32, cpu: &str, touch: Touch, icount: Option<u32>) -> Result<LinuxRun> {
    Ok(LinuxRun {
        kernel: image,
        initrd: workload_initrd(root, true)?,
        vcpus,
        cpu: cpu.into(),
        guest_mib: 128 * vcpus.min(2),
        resident_mib: Some(32 * vcpus.min(2)),
        latency_us: 1000,
        mib: 0,
        kernel_args: touch.kernel_arg(vcpus),
        timeout_secs: TEST_TIMEOUT_SECS,
        icount,
        host_load: 0,
    })
}

fn checked(mode: Mode, row: WorkloadRow) -> Result<WorkloadRow> {
    let problems = apf_problems(mode, &row);
    if !problems.is_empty() {
        bail!("{mode:?}: {}", problems.join("; "));
    }
    Ok(row)
}

fn v1_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let image = match kernel(root)? {
        Ok(image) => image,
        Err(skip) => return Ok(skip),
    };
    // G = 128, R = 32 MiB (4x overcommit); 4 processes x 16 MiB = 2 x R.
    let touch = Touch { per_vcpu: 4, mib: 16, passes: 2, work: 0 };
    let on = apf_run(root, image, 1, "max", touch, Some(3))?;
    let off = on.with_args(&format!("{} {}", kernel_arg(Mode::Synchronous), on.kernel_args));
    // Half of the allocations that remember an early page_ready fail: no task may sleep on.
    let lossy = on.with_args(&format!("{} asyncpf_fail={LOST_ALLOCATION_PERCENT}", on.kernel_args));
    let on = checked(Mode::Asynchronous, run_workload(root, tc, &on)?)?;
    let off = checked(Mode::Synchronous, run_workload(root, tc, &off)?)?;
    let lossy = run_workload(root, tc, &lossy)?;
    let problems = apf_problems_with_lost_allocations(&lossy);
    if !problems.is_empty() {
        bail!("with asyncpf_fail={LOST_ALLOCATION_PERCENT}: {}", problems.join("; "));
    }
    Ok(format!(
        "client on: {} accepted, {} early wakes, apftouch {} s; asyncpf=off: apftouch {} s, {} page-ins; \
         {} % early allocations failed: {} no_memory, all {} woken (model time)",
        field(on.client.as_ref(), "accepted"),
        field(on.client.as_ref(), "early_wakes"),
        touch_seconds(&on).unwrap_or(f64::NAN),
        touch_seconds(&off).unwrap_or(f64::NAN),
        off.page_ins.unwrap_or(0),
        LOST_ALLOCATION_PERCENT,
        field(lossy.client.as_ref(), "no_memory"),
        field(lossy.client.as_ref(), "woken"),
    ))
}

/// The share of early page_ready allocations `linux/apf/v1`'s third run fails (`asyncpf_fail`).
const LOST_ALLOCATION_PERCENT: u32 = 50;

/// At most this many offline/online cycles of CPU 1, one every 2 s while apftouch runs.
const HOTPLUG_CYCLES: u64 = 30;
/// The disk's latency in the hotplug test: long enough that tasks are parked on tokens at
/// most instants.
const HOTPLUG_LATENCY_US: u64 = 5_000;
/// The least number of cycles the test accepts.
const MIN_HOTPLUG_CYCLES: u64 = 1;

fn hotplug_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let image = match kernel(root)? {
        Ok(image) => image,
        Err(skip) => return Ok(skip),
    };
    // G = 256, R = 32 MiB; 8 processes x 8 MiB = 2 x R; L = 5 ms so that tasks are parked on
    // tokens when CPU 1 goes offline; host time, so that the vCPUs really run at once.
    let touch = Touch { per_vcpu: 2, mib: 8, passes: 2, work: 0 };
    let mut run = apf_run(root, image, 4, "a64fx", touch, None)?;
    run.latency_us = HOTPLUG_LATENCY_US;
    run.resident_mib = Some(32);
    run.kernel_args.push_str(&format!(" asyncpf_hotplug={HOTPLUG_CYCLES}"));
    let row = checked(Mode::Asynchronous, run_workload(root, tc, &run)?)?;
    let hotplug = row.hotplug.as_ref();
    let mut problems = Vec::new();
    let cycles = hotplug.and_then(|h| h.get("cycles")).and_then(|v| v.as_u64()).unwrap_or(0);
    if cycles < MIN_HOTPLUG_CYCLES || field(hotplug, "online") != "0-3" {
        problems.push(format!("CPU 1 did not go offline and online {MIN_HOTPLUG_CYCLES} times: {hotplug:?}"));
    }
    let client = |k: &str| row.client.as_ref().and_then(|c| c.get(k)).and_then(|v| v.as_u64());
    if client("granule") != Some(256) {
        problems.push(format!("the client's record granule is not a64fx's 256 bytes: {:?}", row.client));
    }
    // Each offline disables APF on CPU 1 and consumes its WAKE_ALL, which wakes the tasks
    // still parked on CPU 1's tokens. Linux runs the client's teardown after the scheduler
    // has moved every task off the CPU and an RCU grace period, so at L = 1 ms CPU 1's own
    // tokens have usually completed by then (the hypervisor's `apf.dropped` counts those that
    // had not); the other CPUs' tasks stay parked on theirs throughout.
    if client("wake_alls").unwrap_or(0) < cycles {
        problems.push(format!("fewer WAKE_ALLs than offlines ({cycles}): {:?}", row.client));
    }
    // Summed over the offlines: faults accepted whose task had not been woken yet.
    let outstanding = hotplug.and_then(|h| h.get("outstanding")).and_then(|v| v.as_u64()).unwrap_or(0);
    if outstanding == 0 {
        problems.push(format!("no offline happened while tokens were outstanding: {hotplug:?}"));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(format!(
        "granule 256, {} accepted and woken, CPU 1 offline/online x{cycles} with {outstanding} tokens outstanding in \
         all: {} wake-alls waking {} tasks, {} tokens in flight at APF_DISABLE; apftouch {} s (host time)",
        field(row.client.as_ref(), "accepted"),
        field(row.client.as_ref(), "wake_alls"),
        field(row.client.as_ref(), "wake_all_woken"),
        row.hyp_apf.as_ref().and_then(|a| a.get("dropped")).map_or("-".into(), |d| d.to_string()),
        field(row.touch.as_ref(), "seconds"),
    ))
}

/// Whether checkpatch's output says each of the `patches` is clean.
pub(super) fn checkpatch_output_clean(output: &str, patches: usize) -> Result<()> {
    let clean = output.matches("total: 0 errors, 0 warnings, 0 checks").count();
    if clean != patches {
        bail!("checkpatch --strict: {clean} of {patches} patches clean:\n{output}");
    }
    Ok(())
}

/// `perl scripts/checkpatch.pl --strict PATCHES` in the source tree `src`.
pub(super) fn run_checkpatch(src: &Path, patches: &[PathBuf]) -> Result<String> {
    let out =
        Command::new("perl").arg("scripts/checkpatch.pl").arg("--strict").args(patches).current_dir(src).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpatch_counts_clean_patches() {
        let one = "total: 0 errors, 0 warnings, 0 checks, 718 lines checked\n";
        assert!(checkpatch_output_clean(&format!("{one}{one}"), 2).is_ok());
        assert!(checkpatch_output_clean(one, 2).is_err());
        assert!(checkpatch_output_clean("total: 0 errors, 1 warnings, 0 checks, 7 lines checked", 1).is_err());
    }
}
