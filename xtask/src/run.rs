//! `run`: one scenario on QEMU, from the validated plan to the report.
//!
//! Order matters: everything that can be checked on the host (options, a `--guest-kernel`
//! file, the built artefacts) is checked before QEMU starts, so a bad input is a clear error
//! and not a confusing hang or guest crash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::build;
use crate::cli::RunPlan;
use crate::disk::Disk;
use crate::image::{self, StagedImage};
use crate::qemu::{self, Stream};
use crate::results::{self, Console, Report};
use crate::toolchain::Toolchain;

/// Printed just before QEMU starts (the negative test checks that it never appears).
pub const QEMU_START_MARKER: &str = "run: + ";

/// Where decompressed Images are staged.
pub fn temp_dir(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("tmp")
}

/// Runs the plan; `Ok(report)` also for failed runs (see `report.ok`), `Err` only when the
/// run could not be started. With `--json`, the report (or the error) is written either way.
pub fn run(root: &Path, tc: &Toolchain, plan: &RunPlan, no_build: bool) -> Result<Report> {
    match prepare_and_run(root, tc, plan, no_build) {
        Ok(report) => Ok(report),
        Err(err) => {
            if let Some(path) = &plan.json {
                let mut report = empty_report(plan, tc);
                report.failure = Some(format!("{err:#}"));
                // The original error matters more than a failure to write the report.
                let _ = write_json(path, &report);
            }
            Err(err)
        }
    }
}

fn prepare_and_run(root: &Path, tc: &Toolchain, plan: &RunPlan, no_build: bool) -> Result<Report> {
    let tmp = temp_dir(root);
    // A foreign kernel is checked first: it needs no build to be found wrong.
    let foreign = match &plan.guest_kernel {
        Some(path) => Some(image::stage_kernel(path, &tmp, plan.kernel_kind)?),
        None => None,
    };
    let need_hypervisor = !plan.bare;
    // Build what the run needs: the hypervisor unless bare, the guest unless foreign.
    let select = build::Select { hypervisor: need_hypervisor, guest: foreign.is_none(), probes: false };
    let traced = plan.trace.is_some();
    if !no_build && (select.hypervisor || select.guest) {
        if traced {
            build::build_traced(root)?;
        } else {
            build::build(root, select)?;
        }
    }
    let hypervisor = if traced { build::traced_hypervisor_elf(root) } else { build::hypervisor_elf(root) };
    if need_hypervisor {
        check_hypervisor_placement(&hypervisor)?;
    }
    let staged: StagedImage = match foreign {
        Some(staged) => staged,
        None => {
            let own = if traced { build::traced_guest_image(root) } else { build::guest_image(root) };
            if !own.is_file() {
                anyhow::bail!("{} does not exist; run `cargo xtask build` first", own.display());
            }
            image::stage(&own, &tmp)?
        }
    };
    let initrd = match &plan.initrd {
        Some(path) => {
            let size = fs::metadata(path).with_context(|| format!("cannot read the initrd {}", path.display()))?.len();
            if size == 0 || size > qemu::MAX_INITRD_BYTES {
                anyhow::bail!(
                    "--initrd {}: {size} bytes; the runner stages 1 byte to {} MiB",
                    path.display(),
                    qemu::MAX_INITRD_BYTES >> 20
                );
            }
            Some((path.clone(), size))
        }
        None => None,
    };
    check_resident_fits_kernel(plan, &staged, initrd.as_ref().map_or(0, |(_, size)| *size))?;
    // The trace area follows guest RAM's slots (its header page and its logs at most).
    let trace_room = plan.trace.as_ref().map_or(0, |t| (u64::from(t.mib) + 1) << 20);
    let disk = if need_hypervisor {
        Some(Disk::create_with_room(root, &plan.backing, plan.guest_mib, trace_room)?)
    } else {
        None
    };
    let argv = qemu::command_line(
        plan,
        &qemu::Inputs {
            qemu: &tc.qemu,
            hypervisor: &hypervisor,
            image: &staged.path,
            image_size: staged.size,
            kernel_at: staged.kernel_at(),
            foreign: plan.guest_kernel.is_some(),
            disk: disk.as_ref().map(Disk::drive_file),
            initrd: initrd.as_ref().map(|(path, size)| (path.as_path(), *size)),
        },
    );
    let mut report = empty_report(plan, tc);
    report.qemu = qemu::shell_join(&argv);
    if !plan.quiet {
        println!("run: {}", tc.qemu_version);
        println!("run: guest kernel {}: {}", staged.path.display(), staged.describe());
        println!("{QEMU_START_MARKER}{}", report.qemu);
    }

    let mut console = match &plan.foreign {
        Some(judge) => Console::foreign(
            plan.bare,
            judge.success_pattern.as_deref().map(regex::Regex::new).transpose().context("--success-pattern")?,
        ),
        None => Console::new(plan.bare),
    };
    // Started last, stopped as soon as QEMU is done (also when it fails).
    let load = crate::hostload::HostLoad::start(plan.host_load)?;
    let outcome = qemu::run(&argv, Duration::from_secs(plan.timeout_secs), |stream, line| {
        if !plan.quiet {
            match stream {
                Stream::Stdout => println!("{line}"),
                Stream::Stderr => eprintln!("{line}"),
            }
        }
        console.push(stream, line);
    })?;
    drop(load);
    drop(staged);
    console.finish();
    let trace = match (&plan.trace, &disk, &console.hyp) {
        (Some(trace), Some(disk), Some(hyp)) => Some(crate::trace::finish_run(&disk.image, plan.guest_mib, trace, hyp)),
        _ => None,
    };
    drop(disk);

    let end = results::end_of_run(outcome.exit_code, outcome.timed_out, &console);
    let mut failure = match &plan.foreign {
        Some(judge) => match results::exit_status(outcome.exit_code, outcome.timed_out, plan.timeout_secs, &console) {
            Err(why) => Some(why),
            Ok(_) => results::foreign_verdict(end, judge.expect, &console),
        },
        None => results::verdict(outcome.exit_code, outcome.timed_out, plan.timeout_secs, &console),
    };
    if failure.is_none() && plan.backing.selftest_pages > 0 && console.selftest.is_none() {
        failure = Some(format!(
            "the hypervisor printed no `{}{}` line",
            asyncpf_contract::runner::HYP_LINE_PREFIX,
            asyncpf_contract::runner::SELFTEST_PREFIX.trim()
        ));
    }
    report.ok = failure.is_none();
    report.failure = failure;
    report.exit_status = results::exit_status(outcome.exit_code, outcome.timed_out, plan.timeout_secs, &console).ok();
    report.qemu_exit_status = outcome.exit_code;
    report.console_lines = console.lines;
    report.end = end.to_string();
    report.success_line = console.pattern_line.clone();
    report.wall_seconds = (outcome.wall.as_secs_f64() * 100.0).round() / 100.0;
    report.guest = console.guest.clone().unwrap_or(Value::Null);
    report.per_vcpu = report.guest.get("per_vcpu").cloned().unwrap_or(Value::Null);
    report.hyp = console.hyp.clone().unwrap_or(Value::Null);
    report.backing_selftest = console.selftest.clone().unwrap_or(Value::Null);
    report.mem = report.hyp.get("mem").cloned().unwrap_or(Value::Null);
    report.check = report.guest.get("check").cloned().unwrap_or(Value::Null);
    report.console_tail = console.tail.iter().cloned().collect();
    let mut trace_text = String::new();
    match trace {
        Some(Ok(outcome)) => {
            trace_text = outcome.print();
            if report.ok && !outcome.mismatches.is_empty() {
                report.ok = false;
                report.failure = Some(format!("the trace disagrees with the run: {}", outcome.mismatches.join("; ")));
            }
            report.trace = serde_json::to_value(&outcome).unwrap_or(Value::Null);
        }
        Some(Err(err)) if report.ok => {
            report.ok = false;
            report.failure = Some(format!("trace: {err:#}"));
        }
        Some(Err(_)) => {}
        None if plan.trace.is_some() && report.ok => {
            report.ok = false;
            report.failure = Some("trace: the hypervisor printed no result".into());
        }
        None => {}
    }

    let mut out = String::new();
    // Without --quiet the whole console was echoed already.
    if !report.ok && plan.quiet {
        out += &format!("---- console tail (last {} lines) ----\n", console.tail.len());
        for line in &console.tail {
            out += line;
            out.push('\n');
        }
        out += "---- end of console tail ----\n";
    }
    if !report.ok {
        for bad in &console.bad_results {
            out += &format!("warning: {bad}\n");
        }
    }
    out += &report.summary();
    if !plan.quiet {
        out += &trace_text;
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    if let Some(path) = &plan.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

/// Room the guest's device tree takes in resident memory when the VM is loaded (it is a few KiB).
const DEVICE_TREE_RESERVE: u64 = 64 << 10;

/// With paged RAM the hypervisor loads the kernel and the device tree into resident frames
/// before the VM starts: refuse a kernel that cannot fit before QEMU starts, naming the option.
fn check_resident_fits_kernel(plan: &RunPlan, staged: &StagedImage, initrd_bytes: u64) -> Result<()> {
    let Some(resident_mib) = plan.resident_mib else { return Ok(()) };
    let footprint = staged.footprint();
    let needed = footprint + initrd_bytes + DEVICE_TREE_RESERVE;
    if needed > u64::from(resident_mib) << 20 {
        anyhow::bail!(
            "--resident-mib {resident_mib} is too small for this guest kernel: loading it takes {} MiB of \
             resident memory (its Image occupies {footprint} bytes with bss, plus {initrd_bytes} bytes of initrd \
             and the device tree)",
            needed.div_ceil(1 << 20)
        );
    }
    Ok(())
}

/// The hypervisor must load between the start of RAM and the guest Image staging area
/// (see the layout in `qemu`), or QEMU's loader would overwrite one with the other.
fn check_hypervisor_placement(hypervisor: &Path) -> Result<()> {
    let bytes = fs::read(hypervisor)
        .with_context(|| format!("cannot read {}; run `cargo xtask build` first", hypervisor.display()))?;
    let (lo, hi) =
        image::elf_load_range(&bytes).with_context(|| format!("{} is not a loadable ELF", hypervisor.display()))?;
    if lo < qemu::RAM_BASE || hi > qemu::IMAGE_ADDR {
        anyhow::bail!(
            "{} loads at {lo:#x}..{hi:#x}, outside {:#x}..{:#x}: the hypervisor must be linked at \
             {:#x} and end below the guest Image staging area",
            hypervisor.display(),
            qemu::RAM_BASE,
            qemu::IMAGE_ADDR,
            qemu::HYPERVISOR_BASE
        );
    }
    Ok(())
}

fn empty_report(plan: &RunPlan, tc: &Toolchain) -> Report {
    Report {
        // A foreign kernel runs no scenario of ours.
        scenario: if plan.guest_kernel.is_some() { "foreign".into() } else { plan.scenario.clone() },
        vcpus: plan.vcpus,
        pcpus: plan.pcpus,
        cpu: plan.cpu.clone(),
        guest_mib: plan.guest_mib,
        bare: plan.bare,
        guest_kernel: plan
            .guest_kernel
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "asyncpf-guest".into()),
        qemu: String::new(),
        qemu_version: tc.qemu_version.clone(),
        icount: plan.icount,
        seed: plan.seed,
        ok: false,
        exit_status: None,
        qemu_exit_status: None,
        end: String::new(),
        success_line: None,
        console_lines: Default::default(),
        wall_seconds: 0.0,
        per_vcpu: Value::Null,
        hyp: Value::Null,
        guest: Value::Null,
        backing_latency_us: (!plan.bare).then_some(plan.backing.latency_us),
        backing_selftest: Value::Null,
        resident_mib: plan.resident_mib,
        host_load: plan.host_load,
        mem: Value::Null,
        check: Value::Null,
        trace: Value::Null,
        failure: None,
        console_tail: Vec::new(),
    }
}

/// Writes the report atomically (temp file + rename) so readers never see half a file.
pub fn write_json(path: &Path, report: &Report) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)? + "\n";
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
