//! `cargo xtask linux`: an unmodified Linux with a userspace, on overcommitted guest RAM.
//!
//! Debian's arm64 cloud kernel (the one `linux/boot` uses, cached in `target/linux/`) boots
//! with an initramfs built here: Debian's `busybox-static` (arm64, fetched with apt and cached
//! the same way) and an `/init` script that mounts a tmpfs, writes `mib` MiB of random data to
//! it, reads it back twice computing SHA-256 sums, prints one line
//!
//! ```text
//! @linux-workload mib=300 write_sum=… read1_sum=… read2_sum=… match=yes write_s=… read1_s=… read2_s=… total_s=…
//!     kernel=6.1.0-57-cloud-arm64 tainted=0 dma_minalign_warnings=0 hwcaps=sve,sme,paca
//! ```
//!
//! (`tainted` is `/proc/sys/kernel/tainted`, `dma_minalign_warnings` the count of Linux's
//! "ARCH_DMA_MINALIGN smaller than CTR_EL0.CWG" lines in its log, `hwcaps` which of `mops`,
//! `sve`, `sme` and `paca` the kernel tells its userspace about in `/proc/cpuinfo`) and powers
//! off. The data does not fit the resident memory, so the hypervisor pages it
//! through its disk: Linux's own page cache and tmpfs are what is overcommitted. A run passes
//! when it ends with the guest's SYSTEM_OFF, the three sums agree (`match=yes`), Linux is not
//! tainted and did not warn about its DMA alignment (`a64fx`'s 256-byte granule), and the
//! hypervisor paged (page-ins and page-outs > 0 when R < G). Guest times are Linux's own
//! (`/proc/uptime`), so in host time: figures of the synchronous pager, not a benchmark of APF
//! (Linux has no APF client yet, issue 14).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::{BackingPlan, ExpectEnd, ForeignJudge, LinuxArgs, RunPlan};
use crate::linux::KernelSeries;
use crate::toolchain::Toolchain;
use crate::{bench, initramfs, linux, run};

/// The package of the statically linked BusyBox for arm64.
const BUSYBOX_PACKAGE: &str = "busybox-static:arm64";
/// The prefix of the workload's result line.
pub const RESULT_PREFIX: &str = "@linux-workload ";
/// The prefix of the CPU hotplug exercise's line.
pub const HOTPLUG_PREFIX: &str = "@linux-hotplug ";
/// The prefix of apftouch's result line.
pub const TOUCH_PREFIX: &str = "@linux-touch ";
/// The prefix of the line with the APF client's counters (`/sys/kernel/debug/asyncpf`).
pub const CLIENT_PREFIX: &str = "@linux-asyncpf ";

/// The `/init` script. `asyncpf_mib=N` on the kernel command line is the data's size;
/// `asyncpf_touch=PROCS,MIB,PASSES[,WORK]` runs apftouch first, and `asyncpf_hotplug=N` takes
/// CPU 1 offline and online again N times while it runs.
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t tmpfs -o size=95% tmpfs /tmp
mib=$($bb sed -n 's/.*asyncpf_mib=\([0-9]*\).*/\1/p' /proc/cmdline)
now() { $bb cut -d' ' -f1 /proc/uptime; }
$bb mount -t sysfs sysfs /sys 2>/dev/null && $bb mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
touch=$($bb sed -n 's/.*asyncpf_touch=\([0-9,]*\).*/\1/p' /proc/cmdline)
hotplug=$($bb sed -n 's/.*asyncpf_hotplug=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$touch" ] && [ -x /bin/apftouch ]; then
  /bin/apftouch $(echo $touch | $bb tr , ' ') &
  pid=$!
  cpu1=/sys/devices/system/cpu/cpu1/online
  i=0
  while [ -n "$hotplug" ] && [ $i -lt $hotplug ] && [ -w $cpu1 ]; do
    $bb sleep 2; echo 0 > $cpu1; $bb sleep 1; echo 1 > $cpu1; i=$((i + 1))
  done
  [ -n "$hotplug" ] && echo "@linux-hotplug cycles=$i online=$($bb cat /sys/devices/system/cpu/online)"
  wait $pid
fi
t0=$(now)
$bb dd if=/dev/urandom of=/tmp/data bs=1048576 count=$mib 2>/dev/null
$bb sync
t1=$(now)
w=$($bb sha256sum /tmp/data | $bb cut -d' ' -f1)
t2=$(now)
r1=$($bb sha256sum /tmp/data | $bb cut -d' ' -f1)
t3=$(now)
r2=$($bb sha256sum /tmp/data | $bb cut -d' ' -f1)
t4=$(now)
size=$($bb stat -c %s /tmp/data)
m=no
[ "$w" = "$r1" ] && [ "$r1" = "$r2" ] && [ "$size" = $((mib * 1048576)) ] && m=yes
el() { $bb awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
feat=$($bb grep -m1 '^Features' /proc/cpuinfo | $bb cut -d: -f2)
hw=
for x in mops sve sme paca; do case " $feat " in *" $x "*) hw="$hw${hw:+,}$x";; esac; done
k=$($bb uname -r)
taint=$($bb cat /proc/sys/kernel/tainted)
dma=$($bb dmesg | $bb grep -c ARCH_DMA_MINALIGN)
stats=/sys/kernel/debug/asyncpf
[ -r $stats ] && echo "@linux-asyncpf $($bb tr ' \n' '= ' < $stats)"
echo "@linux-workload mib=$mib bytes=$size write_sum=$w read1_sum=$r1 read2_sum=$r2 match=$m write_s=$(el $t0 $t2) read1_s=$(el $t2 $t3) read2_s=$(el $t3 $t4) total_s=$(el $t0 $t4) kernel=$k tainted=$taint dma_minalign_warnings=$dma hwcaps=${hw:-none}"
$bb poweroff -f
"#;

/// The success pattern the runner checks: the line with matching sums.
const SUCCESS_PATTERN: &str = "^@linux-workload .* match=yes ";

/// BusyBox's static arm64 binary, fetched once into `target/linux/busybox/`.
fn fetch_busybox(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("linux").join("busybox");
    let binary = dir.join("root").join("bin").join("busybox");
    if binary.exists() {
        return Ok(binary);
    }
    linux::ensure_arm64_architecture()?;
    fs::create_dir_all(&dir)?;
    println!("linux: downloading {BUSYBOX_PACKAGE}");
    linux::run_checked(Command::new("apt-get").args(["download", "-q", BUSYBOX_PACKAGE]).current_dir(&dir))?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    linux::run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("root")))?;
    let _ = fs::remove_file(&deb);
    if !binary.exists() {
        bail!("{BUSYBOX_PACKAGE} has no /bin/busybox");
    }
    Ok(binary)
}

/// The initramfs: BusyBox, `/init`, and the directories it mounts on.
fn workload_initramfs(busybox: &[u8], touch: Option<&[u8]>) -> Result<Vec<u8>> {
    use initramfs::{Entry, S_IFDIR, S_IFREG};
    let dir = |path| Entry { path, mode: S_IFDIR | 0o755, data: &[] };
    let mut entries = vec![
        dir("bin"),
        dir("dev"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        Entry { path: "bin/busybox", mode: S_IFREG | 0o755, data: busybox },
        Entry { path: "init", mode: S_IFREG | 0o755, data: INIT_SCRIPT.as_bytes() },
    ];
    if let Some(data) = touch {
        entries.push(Entry { path: "bin/apftouch", mode: S_IFREG | 0o755, data });
    }
    initramfs::gzip_cpio(&entries)
}

/// What one run of the workload gave.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRow {
    pub vcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    pub resident_mib: Option<u32>,
    pub backing_latency_us: u64,
    pub mib: u64,
    /// What the kernel command line adds (`asyncpf=off` for the APF kernel's baseline).
    pub kernel_args: String,
    pub ok: bool,
    pub failure: Option<String>,
    /// The guest's result line's fields (`match`, the sums, the times in seconds).
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    pub page_ins: Option<u64>,
    pub page_outs: Option<u64>,
    /// The CPU hotplug line's fields (`asyncpf_hotplug=N`), when there was one.
    pub hotplug: Option<serde_json::Map<String, serde_json::Value>>,
    /// apftouch's result line's fields, when it ran.
    pub touch: Option<serde_json::Map<String, serde_json::Value>>,
    /// The APF client's counters, when the kernel has it.
    pub client: Option<serde_json::Map<String, serde_json::Value>>,
    /// The hypervisor's `apf` result.
    pub hyp_apf: Option<serde_json::Value>,
    pub wall_seconds: f64,
}

/// The fields of a `@linux-workload` line, or None if it is not one.
pub fn parse_result(line: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    parse_fields(line.strip_prefix(RESULT_PREFIX)?)
}

/// The `key=value` words of a line.
fn parse_fields(rest: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut fields = serde_json::Map::new();
    for word in rest.split_whitespace() {
        let (key, value) = word.split_once('=')?;
        // Counts stay integers (`tainted=0`, not 0.0); times are numbers; sums and names text.
        let value = match (value.parse::<u64>(), value.parse::<f64>()) {
            _ if key.ends_with("_sum") => serde_json::json!(value),
            (Ok(n), _) => serde_json::json!(n),
            (_, Ok(x)) => serde_json::json!(x),
            _ => serde_json::json!(value),
        };
        fields.insert(key.to_string(), value);
    }
    Some(fields)
}

/// Why a row failed, if it did.
fn row_problems(row: &WorkloadRow) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(f) = &row.failure {
        problems.push(f.clone());
    }
    match &row.result {
        None => problems.push("no @linux-workload line".into()),
        Some(r) => {
            if r.get("match").and_then(|v| v.as_str()) != Some("yes") {
                problems.push(format!("checksums or size differ: {r:?}"));
            }
            if r.get("mib").and_then(|v| v.as_f64()) != Some(row.mib as f64) {
                problems.push(format!("the guest wrote {:?} MiB, not {}", r.get("mib"), row.mib));
            }
            if r.get("tainted").and_then(|v| v.as_f64()) != Some(0.0) {
                problems.push(format!("Linux is tainted: /proc/sys/kernel/tainted = {:?}", r.get("tainted")));
            }
            if r.get("dma_minalign_warnings").and_then(|v| v.as_f64()) != Some(0.0) {
                problems
                    .push(format!("Linux warned about ARCH_DMA_MINALIGN {:?} times", r.get("dma_minalign_warnings")));
            }
        }
    }
    if row.kernel_args.contains("asyncpf_touch=") {
        match &row.touch {
            None => problems.push("no @linux-touch line".into()),
            Some(t) if t.get("errors").and_then(|v| v.as_f64()) != Some(0.0) => {
                problems.push(format!("apftouch found errors: {t:?}"))
            }
            Some(_) => {}
        }
    }
    if row.resident_mib.is_some_and(|r| r < row.guest_mib) && (row.page_ins == Some(0) || row.page_outs == Some(0)) {
        problems.push(format!("no paging: {:?} page-ins, {:?} page-outs", row.page_ins, row.page_outs));
    }
    problems
}

/// Boot Linux with the workload once.
#[allow(clippy::too_many_arguments)]
pub fn run_workload(
    root: &Path,
    tc: &Toolchain,
    kernel: &Path,
    initrd: &Path,
    vcpus: u32,
    cpu: &str,
    guest_mib: u32,
    resident_mib: Option<u32>,
    backing_latency_us: u64,
    mib: u64,
    kernel_args: &str,
    timeout_secs: u64,
) -> Result<WorkloadRow> {
    let plan = RunPlan {
        scenario: "linux-workload".into(),
        vcpus,
        pcpus: vcpus,
        cpu: cpu.into(),
        guest_mib,
        seed: 1,
        json: None,
        guest_kernel: Some(kernel.to_path_buf()),
        guest_cmdline: Some(
            format!("console=ttyAMA0 panic=-1 quiet asyncpf_mib={mib} {kernel_args}").trim_end().into(),
        ),
        timeout_secs,
        icount: None,
        bare: false,
        quiet: true,
        backing: BackingPlan { latency_us: backing_latency_us, ..BackingPlan::default() },
        resident_mib,
        foreign: Some(ForeignJudge { expect: ExpectEnd::Off, success_pattern: Some(SUCCESS_PATTERN.into()) }),
        initrd: Some(initrd.to_path_buf()),
        kernel_kind: Default::default(),
        host_load: 0,
        lock_check: true,
        trace: None,
    };
    let report = run::run(root, tc, &plan, true)?;
    let result = report
        .console_tail
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(asyncpf_contract::runner::GUEST_LINE_PREFIX).and_then(parse_result));
    let tagged = |prefix: &str| {
        report.console_tail.iter().rev().find_map(|l| {
            l.strip_prefix(asyncpf_contract::runner::GUEST_LINE_PREFIX)
                .and_then(|l| l.strip_prefix(prefix))
                .and_then(parse_fields)
        })
    };
    let client = tagged(CLIENT_PREFIX);
    let touch = tagged(TOUCH_PREFIX);
    let hotplug = tagged(HOTPLUG_PREFIX);
    let uint = |p: &str| report.hyp.pointer(p).and_then(|v| v.as_u64());
    let failure =
        (!report.ok).then(|| report.failure.clone().unwrap_or_else(|| format!("the run ended {}", report.end)));
    Ok(WorkloadRow {
        vcpus,
        cpu: cpu.into(),
        guest_mib,
        resident_mib,
        backing_latency_us,
        mib,
        kernel_args: kernel_args.into(),
        ok: report.ok,
        failure,
        result,
        page_ins: uint("/mem/page_ins"),
        page_outs: uint("/mem/page_outs"),
        hotplug,
        touch,
        client,
        hyp_apf: report.hyp.get("apf").cloned(),
        wall_seconds: report.wall_seconds,
    })
}

/// The kernel of `series` and the workload's initramfs (written under `target/linux/`).
pub fn prepare(root: &Path, series: KernelSeries) -> Result<(PathBuf, PathBuf)> {
    prepare_with(root, series, false)
}

/// [`prepare`], with apftouch in the initramfs if `touch`.
fn prepare_with(root: &Path, series: KernelSeries, touch: bool) -> Result<(PathBuf, PathBuf)> {
    let kernel = linux::fetch_kernel(root, series)?;
    let busybox = fs::read(fetch_busybox(root)?)?;
    let touch = if touch { Some(fs::read(crate::linuxapf::build_touch(root)?)?) } else { None };
    let initrd = root.join("target").join("linux").join("workload.cpio.gz");
    fs::write(&initrd, workload_initramfs(&busybox, touch.as_deref())?)?;
    Ok((kernel, initrd))
}

/// `cargo xtask linux`: one run per `--resident-mib` (and latency, and with `--apf` per client
/// setting), a table, JSON.
pub fn run_linux(root: &Path, tc: &Toolchain, args: &LinuxArgs) -> Result<bool> {
    let (mut kernel, initrd) = prepare_with(root, args.kernel, args.touch.is_some())?;
    // With --apf: the patched kernel, the client on and then off (the synchronous baseline).
    let settings: &[&str] = if args.apf {
        kernel = crate::linuxapf::build_kernel(root)?;
        &["", "asyncpf=off"]
    } else {
        &[""]
    };
    let touch = args.touch.as_ref().map_or(String::new(), |t| format!(" asyncpf_touch={t}"));
    println!(
        "linux: {} with BusyBox; {} vCPUs, cpu {}, G = {} MiB, {} MiB of random data through tmpfs",
        kernel.display(),
        args.vcpus,
        args.cpu,
        args.guest_mib,
        args.mib
    );
    let mut rows = Vec::new();
    for &latency in &args.latencies {
        for &resident in &args.resident_mib {
            for &kernel_args in settings {
                let resident = (resident < args.guest_mib).then_some(resident);
                println!("linux: R = {resident:?} MiB, L = {latency} us {kernel_args}...");
                let row = run_workload(
                    root,
                    tc,
                    &kernel,
                    &initrd,
                    args.vcpus,
                    &args.cpu,
                    args.guest_mib,
                    resident,
                    latency,
                    args.mib,
                    &format!("{kernel_args}{touch}"),
                    args.timeout,
                )?;
                rows.push(row);
            }
        }
    }
    println!(
        "\n{:>6} {:>6} {:>8} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7} {:>11}  result",
        "R_MiB",
        "L_us",
        "page_ins",
        "page_outs",
        "match",
        "write_s",
        "read1_s",
        "read2_s",
        "total_s",
        "wall_s",
        "tainted",
        "kernel_args"
    );
    let mut all_ok = true;
    for row in &rows {
        let field = |k: &str| {
            row.result
                .as_ref()
                .and_then(|r| r.get(k))
                .map_or("-".to_string(), |v| v.to_string().trim_matches('"').to_string())
        };
        let problems = row_problems(row);
        all_ok &= problems.is_empty();
        println!(
            "{:>6} {:>6} {:>8} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>8.1} {:>7} {:>11}  {}",
            row.resident_mib.map_or("-".into(), |r| r.to_string()),
            row.backing_latency_us,
            row.page_ins.map_or("-".into(), |p| p.to_string()),
            row.page_outs.map_or("-".into(), |p| p.to_string()),
            field("match"),
            field("write_s"),
            field("read1_s"),
            field("read2_s"),
            field("total_s"),
            row.wall_seconds,
            field("tainted"),
            if row.kernel_args.contains("asyncpf=off") { "asyncpf=off" } else { "-" },
            if problems.is_empty() { "ok".to_string() } else { format!("FAILED: {}", problems.join("; ")) }
        );
    }
    for row in rows.iter().filter(|r| r.touch.is_some()) {
        let t = row.touch.as_ref().expect("filtered");
        let get = |k: &str| t.get(k).map_or("-".into(), |v| v.to_string());
        println!(
            "apftouch R={:?} L={} {:>11}: procs={} mib={} passes={} work={} errors={} seconds={}",
            row.resident_mib,
            row.backing_latency_us,
            if row.kernel_args.contains("asyncpf=off") { "asyncpf=off" } else { "-" },
            get("procs"),
            get("mib"),
            get("passes"),
            get("work"),
            get("errors"),
            get("seconds"),
        );
    }
    if args.apf {
        println!("\nAPF: the client's counters (/sys/kernel/debug/asyncpf) and the hypervisor's apf result");
        for row in &rows {
            let hyp = |k: &str| row.hyp_apf.as_ref().and_then(|a| a.get(k)).map_or("-".into(), |v| v.to_string());
            let client = row.client.as_ref().map_or("client off".to_string(), |c| {
                c.iter().map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"'))).collect::<Vec<_>>().join(" ")
            });
            println!(
                "R={:?} L={} {:>11}: {client}; hyp dispatched={} accepted={} declined={} posted={} wake_alls={} ring_errors={}",
                row.resident_mib,
                row.backing_latency_us,
                if row.kernel_args.contains("asyncpf=off") { "asyncpf=off" } else { "asyncpf=on" },
                hyp("dispatched"),
                hyp("accepted"),
                hyp("declined"),
                hyp("posted"),
                hyp("wake_alls"),
                hyp("ring_errors"),
            );
        }
    }
    let json = args.json.clone().unwrap_or_else(|| root.join("target").join("xtask").join("linux").join("linux.json"));
    let release = rows.iter().find_map(|r| r.result.as_ref()?.get("kernel")?.as_str().map(String::from));
    if let Some(release) = &release {
        println!("linux: the guest ran Linux {release}");
    }
    bench::write_json(&json, &serde_json::json!({ "kernel": kernel, "release": release, "rows": rows }))?;
    println!("linux: rows in {}", json.display());
    Ok(all_ok)
}

/// The `linux/workload` test: 4 vCPUs, G = 512 MiB, at 4x and 8x overcommit, on Debian's
/// default (6.1) kernel.
pub fn workload_test(root: &Path, tc: &Toolchain) -> Result<String> {
    linux::skip_if_unreachable(workload_runs(root, tc, KernelSeries::V6_1, &TEST_RUNS, &["sve"]))
}

/// The `linux/workload-6.12` test: bookworm-backports' 6.12, whose userspace (BusyBox's static
/// glibc) uses the FEAT_MOPS instructions that 6.12 advertises on `max` (HCRX_EL2.MSCEn; the
/// run requires `mops` in /proc/cpuinfo), one run at 8x overcommit. (Debian's kernels are
/// built without CONFIG_ARM64_SME, so SME is left to the features probe.)
pub fn workload_6_12_test(root: &Path, tc: &Toolchain) -> Result<String> {
    linux::skip_if_unreachable(workload_runs(root, tc, KernelSeries::V6_12, &TEST_RUNS_6_12, &["mops", "sve"]))
}

fn workload_runs(
    root: &Path,
    tc: &Toolchain,
    series: KernelSeries,
    runs: &[(u32, u64)],
    hwcaps: &[&str],
) -> Result<String> {
    let (kernel, initrd) = prepare(root, series)?;
    let mut notes = Vec::new();
    for &(resident, mib) in runs {
        let row =
            run_workload(root, tc, &kernel, &initrd, 4, "max", 512, Some(resident), 50, mib, "", TEST_TIMEOUT_SECS)?;
        let problems = row_problems(&row);
        if !problems.is_empty() {
            bail!("R = {resident} MiB: {}", problems.join("; "));
        }
        let field = |k: &str| row.result.as_ref().and_then(|r| r.get(k)).cloned().unwrap_or_default();
        let found = field("hwcaps");
        let found: Vec<&str> = found.as_str().unwrap_or("").split(',').collect();
        if let Some(missing) = hwcaps.iter().find(|h| !found.contains(h)) {
            bail!("Linux does not offer {missing} to its userspace (hwcaps {found:?})");
        }
        if notes.is_empty() {
            notes.push(format!("Linux {} ({})", field("kernel").as_str().unwrap_or("?"), found.join(",")));
        }
        notes.push(format!(
            "R = {resident}: {mib} MiB matched, {} page-ins, {} page-outs, {} s",
            row.page_ins.unwrap_or(0),
            row.page_outs.unwrap_or(0),
            field("total_s")
        ));
    }
    Ok(notes.join("; "))
}

/// The `linux/apf` test: the patched kernel (built, or found in its cache) on 2 vCPUs at
/// G = 512, R = 128 MiB, L = 1 ms with the client on: apftouch's 4 processes touch 2 x 48 MiB
/// while CPU 1 goes offline and online twice; no errors, faults accepted, every accepted task
/// woken. Skipped, with a note, when apt cannot install the source or the tools.
/// `build`: build the patched kernel if its cache is stale (a cold build takes 3 to 13 minutes
/// on 2 cores); otherwise the test runs only when the cached build is current, and says it
/// skipped when it is not, so that the whole suite stays well within CI's time.
pub fn apf_test(root: &Path, tc: &Toolchain, build: bool) -> Result<String> {
    let kernel =
        if build { crate::linuxapf::build_kernel(root).map(Some) } else { crate::linuxapf::cached_kernel(root) };
    let kernel = match kernel {
        Err(e) if format!("{e:#}").contains(crate::linuxapf::APT_UNAVAILABLE) => {
            return Ok(format!("skipped: {}", format!("{e:#}").lines().next().unwrap_or("")));
        }
        Ok(None) => {
            return Ok("skipped: the patched kernel is not built (a cold build takes 3-13 min); \
                       `cargo xtask test --filter linux/apf` or `cargo xtask linux --apf` builds it"
                .into())
        }
        Ok(Some(kernel)) => kernel,
        Err(e) => return Err(e),
    };
    let (_, initrd) = prepare_with(root, KernelSeries::V6_1, true)?;
    let args = "asyncpf_touch=4,48,2 asyncpf_hotplug=2";
    let row = run_workload(root, tc, &kernel, &initrd, 2, "max", 512, Some(128), 1000, 16, args, TEST_TIMEOUT_SECS)?;
    let mut problems = row_problems(&row);
    let client = |k: &str| row.client.as_ref().and_then(|c| c.get(k)).and_then(|v| v.as_u64());
    let accepted = client("accepted").unwrap_or(0);
    if accepted == 0 {
        problems.push(format!("no fault accepted: {:?}", row.client));
    }
    if client("woken") != Some(accepted) || client("ring_errors") != Some(0) || client("no_memory") != Some(0) {
        problems.push(format!("woken != accepted, or ring errors: {:?}", row.client));
    }
    let hotplug = row.hotplug.as_ref();
    if hotplug.and_then(|h| h.get("cycles")).and_then(|v| v.as_u64()) != Some(2)
        || hotplug.and_then(|h| h.get("online")).and_then(|v| v.as_str()) != Some("0-1")
    {
        problems.push(format!("CPU 1 did not go offline and online twice: {hotplug:?}"));
    }
    let hyp = |k: &str| row.hyp_apf.as_ref().and_then(|a| a.get(k)).and_then(|v| v.as_u64());
    if hyp("ring_errors") != Some(0) {
        problems.push(format!("the hypervisor saw ring errors: {:?}", row.hyp_apf));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(format!(
        "{accepted} accepted, {} early wakes, {} wake-alls, apftouch {} s, hyp posted {}, power_offs {}",
        client("early_wakes").unwrap_or(0),
        client("wake_alls").unwrap_or(0),
        row.touch.as_ref().and_then(|t| t.get("seconds")).cloned().unwrap_or_default(),
        hyp("posted").unwrap_or(0),
        hyp("power_offs").unwrap_or(0),
    ))
}

/// The test's runs: (R, MiB of data) at G = 512 MiB, 4x and 8x overcommit.
const TEST_RUNS: [(u32, u64); 2] = [(128, 256), (64, 128)];
/// The 6.12 test's run: 8x overcommit, a smaller file (the suite's time).
const TEST_RUNS_6_12: [(u32, u64); 1] = [(64, 128)];
const TEST_TIMEOUT_SECS: u64 = 600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line() {
        let line = "@linux-workload mib=300 bytes=314572800 write_sum=ab12 read1_sum=ab12 read2_sum=ab12 match=yes \
                    write_s=10.50 read1_s=3.25 read2_s=3.00 total_s=16.75";
        let r = parse_result(line).unwrap();
        assert_eq!(r["mib"], 300);
        assert_eq!(r["write_sum"], "ab12");
        assert_eq!(r["match"], "yes");
        assert_eq!(r["total_s"], 16.75);
        assert!(parse_result("[guest] something else").is_none());
        let r = parse_result(&format!("{line} kernel=6.12.95+deb12-cloud-arm64 tainted=0")).unwrap();
        assert_eq!((r["kernel"].as_str(), r["tainted"].as_f64()), (Some("6.12.95+deb12-cloud-arm64"), Some(0.0)));
        assert!(regex::Regex::new(SUCCESS_PATTERN).unwrap().is_match(line));
        assert!(!regex::Regex::new(SUCCESS_PATTERN).unwrap().is_match(&line.replace("match=yes", "match=no")));
    }

    #[test]
    fn a_row_fails_on_differing_sums_a_short_file_or_no_paging() {
        let row = |line: &str, page_ins| WorkloadRow {
            vcpus: 4,
            cpu: "max".into(),
            guest_mib: 512,
            resident_mib: Some(128),
            backing_latency_us: 50,
            mib: 300,
            kernel_args: String::new(),
            ok: true,
            failure: None,
            result: parse_result(line),
            page_ins: Some(page_ins),
            page_outs: Some(page_ins),
            hotplug: None,
            touch: None,
            client: None,
            hyp_apf: None,
            wall_seconds: 1.0,
        };
        let good = "@linux-workload mib=300 write_sum=a read1_sum=a read2_sum=a match=yes total_s=1 \
                    kernel=6.1.0-57-cloud-arm64 tainted=0 dma_minalign_warnings=0";
        assert!(row_problems(&row(good, 10)).is_empty());
        assert_eq!(row_problems(&row(&good.replace("match=yes", "match=no"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace("mib=300", "mib=30"), 10)).len(), 1);
        assert_eq!(row_problems(&row(good, 0)).len(), 1, "R < G must page");
        assert_eq!(row_problems(&row(&good.replace("tainted=0", "tainted=8704"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace("warnings=0", "warnings=3"), 10)).len(), 1);
        assert_eq!(row_problems(&row("nothing", 10)).len(), 1);
    }

    #[test]
    fn the_initramfs_has_init_and_busybox() {
        let archive = initramfs::cpio_newc(&[]);
        assert!(archive.starts_with(b"070701"));
        let gz = workload_initramfs(b"\x7fELF", None).unwrap();
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
        let text = String::from_utf8_lossy(&text);
        for name in ["bin/busybox\0", "init\0", "tmp\0", "#!/bin/busybox sh"] {
            assert!(text.contains(name), "{name}");
        }
    }
}
