//! The QEMU command line and running QEMU with a timeout while streaming its console.
//!
//! Physical memory layout of a hypervisor run (QEMU `virt`, RAM from 0x4000_0000):
//!
//! | address       | what                                                        |
//! |---------------|-------------------------------------------------------------|
//! | 0x4000_0000   | QEMU's device tree blob (QEMU puts it at the start of RAM)   |
//! | 0x4020_0000   | the hypervisor ELF, loaded at its link address by `-kernel` |
//! | 0x4200_0000   | the staged guest Image (`-device loader`), at most 64 MiB   |
//! | 0x4600_0000   | the staged initrd (`--initrd`), if any, at most 256 MiB     |
//! | above them    | frames for guest RAM (`guest_mib` MiB), 2 MiB aligned       |
//!
//! So the machine needs 96 MiB below the guest frames, plus the initrd rounded up to 2 MiB,
//! plus the guest's RAM, rounded up to 16 MiB. In `--bare` mode QEMU boots the Image itself and the machine has exactly the
//! guest's RAM.
//!
//! A hypervisor run also gets the backing disk (`disk`): a virtio-blk device on a modern
//! (version 2) virtio-mmio transport, which only the hypervisor drives.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use asyncpf_contract::runner;
use wait_timeout::ChildExt;

use crate::cli::RunPlan;

/// Start of RAM on `virt`; QEMU's DTB is placed here for an ELF `-kernel`.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Where the hypervisor is linked.
pub const HYPERVISOR_BASE: u64 = 0x4020_0000;
/// Where the runner stages the guest Image for the hypervisor.
pub const IMAGE_ADDR: u64 = 0x4200_0000;
/// Guest RAM frames start here (the staging area is 64 MiB).
pub const GUEST_FRAMES_BASE: u64 = IMAGE_ADDR + crate::image::MAX_IMAGE_BYTES;
/// RAM below the guest frames, in MiB (96).
pub const RESERVED_MIB: u64 = (GUEST_FRAMES_BASE - RAM_BASE) >> 20;

/// Where the runner stages an initrd, right after the Image's staging area.
pub const INITRD_ADDR: u64 = GUEST_FRAMES_BASE;
/// The largest initrd the runner stages.
pub const MAX_INITRD_BYTES: u64 = 256 << 20;

/// `-m` in MiB for a hypervisor run with `guest_mib` MiB of guest RAM and an initrd of
/// `initrd_bytes` (0: none).
pub fn machine_mib(guest_mib: u32, initrd_bytes: u64) -> u64 {
    (RESERVED_MIB + initrd_bytes.div_ceil(2 << 20) * 2 + guest_mib as u64).div_ceil(16) * 16
}

/// What the command line needs besides the plan.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub qemu: &'a Path,
    pub hypervisor: &'a Path,
    /// The uncompressed, checked Image.
    pub image: &'a Path,
    pub image_size: u64,
    /// The Image is not asyncpf's guest (`--guest-kernel`): it gets no scenario/seed words.
    pub foreign: bool,
    /// The backing disk's `-drive file=` value (see `disk::Disk::drive_file`); hypervisor runs.
    pub disk: Option<String>,
    /// The initrd file and its size (`--initrd`).
    pub initrd: Option<(&'a Path, u64)>,
    /// For a kernel that is not an Image: where it is loaded and entered (`kernel_at=`).
    pub kernel_at: Option<(u64, u64)>,
}

/// The `-drive id` of the backing disk.
const BACKING_DRIVE_ID: &str = "backing";

/// The guest's command line: `scenario=NAME seed=S EXTRA` for our guest, `EXTRA` for another.
pub fn guest_cmdline(plan: &RunPlan, foreign: bool) -> String {
    let mut words = Vec::new();
    if !foreign {
        words.push(format!("{}={}", runner::GUEST_OPT_SCENARIO, plan.scenario));
        words.push(format!("{}={}", runner::GUEST_OPT_SEED, plan.seed));
    }
    if let Some(extra) = &plan.guest_cmdline {
        words.push(extra.trim().to_string());
    }
    words.join(" ")
}

/// The hypervisor's command line (`-append`); the guest's follows a lone `--`.
/// `kernel_at` (LOAD, ENTRY): for a kernel that is not an Image, where it is loaded and entered.
pub fn hypervisor_cmdline(
    plan: &RunPlan,
    image_size: u64,
    initrd_size: Option<u64>,
    kernel_at: Option<(u64, u64)>,
    foreign: bool,
) -> String {
    let mut line = format!(
        "{}={} {}={} {}={IMAGE_ADDR:#x}:{image_size:#x}",
        runner::OPT_VCPUS,
        plan.vcpus,
        runner::OPT_GUEST_MIB,
        plan.guest_mib,
        runner::OPT_IMAGE,
    );
    let guest = guest_cmdline(plan, foreign);
    if let Some(size) = initrd_size {
        line.push_str(&format!(" {}={INITRD_ADDR:#x}:{size:#x}", runner::OPT_INITRD));
    }
    if let Some((load, entry)) = kernel_at {
        line.push_str(&format!(" {}={load:#x}:{entry:#x}", runner::OPT_KERNEL_AT));
    }
    line.push_str(&format!(" {}={}", runner::OPT_BACKING_LATENCY_US, plan.backing.latency_us));
    if plan.backing.selftest_pages > 0 {
        line.push_str(&format!(" {}={}", runner::OPT_BACKING_SELFTEST, plan.backing.selftest_pages));
    }
    if let Some(mib) = plan.resident_mib {
        line.push_str(&format!(" {}={mib}", runner::OPT_RESIDENT_MIB));
    }
    if let Some(trace) = &plan.trace {
        line.push_str(&format!(" {}={}", runner::OPT_TRACE_MIB, trace.mib));
    }
    if plan.icount.is_some() {
        // Virtual time: the hypervisor keeps host time out of it (a late disk holds it).
        line.push_str(&format!(" {}=1", runner::OPT_ICOUNT));
    }
    if !plan.lock_check {
        line.push_str(&format!(" {}=0", runner::OPT_LOCK_CHECK));
    }
    if !guest.is_empty() {
        line.push_str(&format!(" {} {guest}", runner::GUEST_CMDLINE_SEPARATOR));
    }
    line
}

/// The full QEMU argv (program first).
pub fn command_line(plan: &RunPlan, inputs: &Inputs) -> Vec<String> {
    let mut argv: Vec<String> = vec![inputs.qemu.display().to_string()];
    let mut push = |args: &[&str]| argv.extend(args.iter().map(|s| s.to_string()));
    let smp = plan.pcpus.to_string();
    if plan.bare {
        let mem = plan.guest_mib.to_string();
        push(&["-M", "virt,gic-version=3", "-cpu", &plan.cpu, "-smp", &smp, "-m", &mem]);
        // A guest reset ends QEMU (status 0) instead of rebooting into a loop until the timeout.
        push(&["-nographic", "-nic", "none", "-no-reboot"]);
        push(&["-kernel", &inputs.image.display().to_string()]);
        if let Some((initrd, _)) = inputs.initrd {
            push(&["-initrd", &initrd.display().to_string()]);
        }
        let cmdline = guest_cmdline(plan, inputs.foreign);
        if !cmdline.is_empty() {
            push(&["-append", &cmdline]);
        }
    } else {
        // `--trace`: its logs take the top of RAM.
        let trace_mib = plan.trace.as_ref().map_or(0, |t| u64::from(t.mib).div_ceil(16) * 16);
        let mem = (machine_mib(plan.guest_mib, inputs.initrd.map_or(0, |(_, size)| size)) + trace_mib).to_string();
        push(&["-M", "virt,virtualization=on,gic-version=3", "-cpu", &plan.cpu, "-smp", &smp]);
        push(&["-m", &mem, "-nographic", "-nic", "none"]);
        // No semihosting: QEMU would serve it to the guest's EL1 too (see the hypervisor's
        // `shutdown` module). A reset must not reboot into a fresh run either.
        push(&["-no-reboot"]);
        push(&["-kernel", &inputs.hypervisor.display().to_string()]);
        let loader = format!("loader,file={},addr={IMAGE_ADDR:#x},force-raw=on", inputs.image.display());
        push(&["-device", &loader]);
        if let Some((initrd, _)) = inputs.initrd {
            push(&["-device", &format!("loader,file={},addr={INITRD_ADDR:#x},force-raw=on", initrd.display())]);
        }
        if let Some(file) = &inputs.disk {
            push(&["-global", "virtio-mmio.force-legacy=false"]);
            push(&["-drive", &format!("file={file},if=none,format=raw,id={BACKING_DRIVE_ID}")]);
            // With injected errors, one request per page: QEMU would otherwise merge adjacent
            // requests and fail the neighbours of a faulty slot too.
            let merging = if plan.backing.injects_errors() { ",request-merging=off" } else { "" };
            push(&["-device", &format!("virtio-blk-device,drive={BACKING_DRIVE_ID}{merging}")]);
        }
        let initrd_size = inputs.initrd.map(|(_, size)| size);
        let cmdline = hypervisor_cmdline(plan, inputs.image_size, initrd_size, inputs.kernel_at, inputs.foreign);
        push(&["-append", &cmdline]);
    }
    if let Some(shift) = plan.icount {
        push(&["-icount", &format!("shift={shift},sleep=off")]);
        // QEMU's random numbers for the guest (FEAT_RNG's RNDR, which Linux seeds its CRNG
        // and so its address-space layouts with) from a fixed seed: otherwise two runs of the
        // same Linux touch different pages and the figures differ.
        push(&["-seed", &plan.seed.to_string()]);
    }
    // Diagnostics only (e.g. a TCG plugin: tools/insnprof): words appended to every QEMU
    // command line. Shown in the report's command line like the rest.
    if let Ok(extra) = std::env::var(EXTRA_ARGS_ENV) {
        argv.extend(extra.split_whitespace().map(String::from));
    }
    argv
}

/// The environment variable whose words are appended to QEMU's command line (diagnostics).
pub const EXTRA_ARGS_ENV: &str = "ASYNCPF_QEMU_ARGS";

/// One string a shell would split back into `argv` (for logs and the JSON report).
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which QEMU output stream a console line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How QEMU ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// QEMU's exit code (0 after the hypervisor's SYSTEM_OFF); None if it was killed by a signal.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub wall: Duration,
}

/// Runs `argv`, handing every output line (without the line end) to `on_line` as it arrives;
/// kills QEMU when `timeout` passes.
pub fn run(argv: &[String], timeout: Duration, mut on_line: impl FnMut(Stream, &str)) -> Result<Outcome> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    let (tx, rx) = mpsc::channel::<(Stream, String)>();
    let readers = [
        spawn_reader(child.stdout.take().expect("piped stdout"), Stream::Stdout, tx.clone()),
        spawn_reader(child.stderr.take().expect("piped stderr"), Stream::Stderr, tx),
    ];
    let mut timed_out = false;
    // Console lines until both pipes close (QEMU exited) or time is up.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((stream, line)) => on_line(stream, &line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    let status = if timed_out {
        None
    } else {
        let left = deadline.saturating_duration_since(Instant::now());
        child.wait_timeout(left).context("waiting for QEMU")?
    };
    let status = match status {
        Some(s) => s,
        None => {
            timed_out = true;
            let _ = child.kill();
            child.wait().context("waiting for the killed QEMU")?
        }
    };
    // Whatever QEMU printed before it ended (the pipes are closed now that it is gone).
    for reader in readers {
        let _ = reader.join();
    }
    while let Ok((stream, line)) = rx.try_recv() {
        on_line(stream, &line);
    }
    Ok(Outcome { exit_code: status.code(), timed_out, wall: start.elapsed() })
}

/// Splits a byte stream into lines (lossy UTF-8, `\r\n` and `\n` endings) and sends them.
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::parse_run;
    use std::path::PathBuf;

    #[test]
    fn memory_size() {
        assert_eq!(RESERVED_MIB, 96);
        const _: () = assert!(RAM_BASE < HYPERVISOR_BASE && HYPERVISOR_BASE < IMAGE_ADDR);
        assert_eq!(GUEST_FRAMES_BASE, 0x4600_0000);
        assert_eq!(machine_mib(128, 0), 224);
        assert_eq!(machine_mib(16, 0), 112);
        assert_eq!(machine_mib(100, 0), 208); // 196 rounded up
        assert_eq!(machine_mib(1, 0), 112); // below the validated minimum, still rounds up
    }

    fn inputs<'a>(image: &'a Path, foreign: bool) -> Inputs<'a> {
        Inputs {
            qemu: Path::new("/usr/bin/qemu-system-aarch64"),
            hypervisor: Path::new("/w/target/cross/aarch64-unknown-none/release/asyncpf-hypervisor"),
            image,
            image_size: 0x12340,
            foreign,
            disk: Some("/w/target/xtask/disks/backing-1-0.img".into()),
            initrd: None,
            kernel_at: None,
        }
    }

    #[test]
    fn hypervisor_command_line() {
        let plan = parse_run(&["--vcpus", "2", "--pcpus", "4", "--seed", "7", "--guest-cmdline", "verbose"])
            .validate()
            .unwrap();
        let image = PathBuf::from("/w/target/cross/asyncpf-guest.Image");
        let argv = command_line(&plan, &inputs(&image, false));
        assert_eq!(
            shell_join(&argv),
            "/usr/bin/qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max -smp 4 \
             -m 224 -nographic -nic none -no-reboot \
             -kernel /w/target/cross/aarch64-unknown-none/release/asyncpf-hypervisor \
             -device loader,file=/w/target/cross/asyncpf-guest.Image,addr=0x42000000,force-raw=on \
             -global virtio-mmio.force-legacy=false \
             -drive file=/w/target/xtask/disks/backing-1-0.img,if=none,format=raw,id=backing \
             -device virtio-blk-device,drive=backing \
             -append 'vcpus=2 guest_mib=128 image=0x42000000:0x12340 backing_latency_us=50 -- scenario=smp seed=7 verbose'"
        );
    }

    #[test]
    fn foreign_kernel_gets_only_the_extra_words() {
        let image = PathBuf::from("/tmp/Image");
        let plan = parse_run(&["--guest-kernel", "/tmp/Image"]).validate().unwrap();
        assert_eq!(
            hypervisor_cmdline(&plan, 0x1000, None, None, true),
            "vcpus=4 guest_mib=128 image=0x42000000:0x1000 backing_latency_us=50"
        );
        let plan = parse_run(&["--guest-cmdline", "console=hvc0"]).validate().unwrap();
        let argv = command_line(&plan, &inputs(&image, true));
        assert_eq!(
            argv.last().unwrap(),
            "vcpus=4 guest_mib=128 image=0x42000000:0x12340 backing_latency_us=50 -- console=hvc0"
        );
    }

    #[test]
    fn backing_selftest_and_injected_errors() {
        let plan = parse_run(&["--backing-latency-us", "0", "--backing-selftest", "64", "--inject-read-errors", "5"])
            .validate()
            .unwrap();
        let image = PathBuf::from("/i/Image");
        let mut inputs = inputs(&image, false);
        inputs.disk = Some("blkdebug:/d/b.blkdebug:/d/b.img".into());
        let line = shell_join(&command_line(&plan, &inputs));
        assert!(line.contains("-drive file=blkdebug:/d/b.blkdebug:/d/b.img,if=none,format=raw,id=backing"), "{line}");
        assert!(line.contains("-device virtio-blk-device,drive=backing,request-merging=off"), "{line}");
        assert!(line.ends_with("backing_latency_us=0 backing_selftest=64 -- scenario=smp seed=1'"), "{line}");
    }

    #[test]
    fn resident_mib_option() {
        let plan = parse_run(&["--scenario", "overcommit", "--vcpus", "2", "--guest-mib", "32", "--resident-mib", "8"])
            .validate()
            .unwrap();
        assert_eq!(
            hypervisor_cmdline(&plan, 0x1000, None, None, false),
            "vcpus=2 guest_mib=32 image=0x42000000:0x1000 backing_latency_us=50 resident_mib=8 \
             -- scenario=overcommit seed=1"
        );
        // Without the option nothing is paged and the word is absent (see the tests above).
        let plan = parse_run(&["--guest-mib", "32"]).validate().unwrap();
        assert!(!hypervisor_cmdline(&plan, 0x1000, None, None, false).contains("resident_mib"));
        // The machine's RAM does not shrink: the hypervisor decides what it uses of it.
        assert_eq!(machine_mib(32, 0), 128);
    }

    #[test]
    fn bare_command_line_and_icount() {
        let plan = parse_run(&["--bare", "--scenario", "ipi", "--vcpus", "2", "--cpu", "a64fx", "--icount", "3"])
            .validate()
            .unwrap();
        let image = PathBuf::from("/i/Image");
        let argv = command_line(&plan, &inputs(&image, false));
        assert_eq!(
            shell_join(&argv),
            "/usr/bin/qemu-system-aarch64 -M virt,gic-version=3 -cpu a64fx -smp 2 -m 128 \
             -nographic -nic none -no-reboot -kernel /i/Image -append 'scenario=ipi seed=1' \
             -icount shift=3,sleep=off -seed 1"
        );
        assert!(!argv.iter().any(|a| a.contains("semihosting")));
    }

    /// No configuration ever gives QEMU semihosting: a guest could reach the host through it.
    #[test]
    fn never_semihosting() {
        let image = PathBuf::from("/i/Image");
        for args in [
            &[][..],
            &["--bare"],
            &["--guest-kernel", "/i/Image"],
            &["--scenario", "overcommit", "--resident-mib", "8"],
        ] {
            let plan = parse_run(args).validate().unwrap();
            let argv = command_line(&plan, &inputs(&image, false));
            assert!(!argv.iter().any(|a| a.contains("semihosting")), "{args:?}: {argv:?}");
        }
    }

    #[test]
    fn initrd_is_staged_after_the_image() {
        let plan =
            parse_run(&["--guest-kernel", "/i/Image", "--initrd", "/i/initrd.gz", "--vcpus", "1"]).validate().unwrap();
        let image = PathBuf::from("/i/Image");
        let mut inputs = inputs(&image, true);
        inputs.initrd = Some((Path::new("/i/initrd.gz"), 3 << 20));
        let line = shell_join(&command_line(&plan, &inputs));
        assert!(line.contains("-device loader,file=/i/initrd.gz,addr=0x46000000,force-raw=on"), "{line}");
        assert!(line.contains("initrd=0x46000000:0x300000"), "{line}");
        assert!(line.contains("-m 240"), "128 + 96 + 4 (the initrd, in 2 MiB steps) rounded to 16: {line}");
        assert_eq!(machine_mib(128, 1), 240);
        let bare = parse_run(&["--bare", "--guest-kernel", "/i/Image", "--initrd", "/i/r", "--vcpus", "1"])
            .validate()
            .unwrap();
        inputs.initrd = Some((Path::new("/i/r"), 5));
        assert!(shell_join(&command_line(&bare, &inputs)).contains("-kernel /i/Image -initrd /i/r"));
    }

    #[test]
    fn shell_quoting() {
        let argv = vec!["a".to_string(), "b c".into(), "it's".into(), String::new()];
        assert_eq!(shell_join(&argv), r"a 'b c' 'it'\''s' ''");
    }

    #[test]
    fn streams_lines_and_times_out() {
        let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".into(), script.into()];
        let mut lines = Vec::new();
        let out = run(&sh("printf 'one\\r\\ntwo\\nthree'; echo err >&2; exit 3"), Duration::from_secs(10), |s, l| {
            lines.push((s, l.to_string()))
        })
        .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.timed_out);
        let stdout: Vec<_> = lines.iter().filter(|(s, _)| *s == Stream::Stdout).map(|(_, l)| l.as_str()).collect();
        assert_eq!(stdout, ["one", "two", "three"]);
        assert!(lines.contains(&(Stream::Stderr, "err".into())));

        let out = run(&sh("echo started; exec sleep 30"), Duration::from_millis(300), |_, _| {}).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, None);
        assert!(out.wall < Duration::from_secs(10));
    }
}
