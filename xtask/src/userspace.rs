//! `cargo xtask linux`: an unmodified Linux with a userspace, on overcommitted guest RAM.
//!
//! Debian's arm64 cloud kernel (the one `linux/boot` uses, cached in `target/linux/`) boots
//! with an initramfs built here: Debian's `busybox-static` (arm64, fetched with apt and cached
//! the same way) and an `/init` script that mounts a tmpfs, writes `mib` MiB of random data to
//! it, reads it back twice computing SHA-256 sums, prints one line
//!
//! ```text
//! @linux-workload mib=300 write_sum=… read1_sum=… read2_sum=… match=yes write_s=… read1_s=… read2_s=… total_s=…
//!     kernel=6.1.0-57-cloud-arm64 tainted=0 dma_minalign_warnings=0 log_problems=0 hwcaps=sve,sme,paca
//! ```
//!
//! (`tainted` is `/proc/sys/kernel/tainted`, `dma_minalign_warnings` the count of Linux's
//! "ARCH_DMA_MINALIGN smaller than CTR_EL0.CWG" lines in its log, `log_problems` the count of
//! WARN, BUG, oops, RCU stall, lockup and hung-task lines in it (the first few are echoed as
//! `@linux-log` lines), `hwcaps` which of `mops`,
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
/// CPU 1 offline and online again every 2 s while it runs, at most N times.
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t tmpfs -o size=95% tmpfs /tmp
mib=$($bb sed -n 's/.*asyncpf_mib=\([0-9]*\).*/\1/p' /proc/cmdline)
now() { $bb cut -d' ' -f1 /proc/uptime; }
$bb mount -t sysfs sysfs /sys 2>/dev/null && $bb mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# asyncpf_fail=P: the client's fault injection fails P % of the allocations that remember a
# page_ready which came before its task slept (the lost-wake-up path).
fail=$($bb sed -n 's/.*asyncpf_fail=\([0-9]*\).*/\1/p' /proc/cmdline)
f=/sys/kernel/debug/asyncpf_fail_early
if [ -n "$fail" ] && [ -d $f ]; then echo 0 > $f/verbose; echo -1 > $f/times; echo $fail > $f/probability; fi
touch=$($bb sed -n 's/.*asyncpf_touch=\([0-9,]*\).*/\1/p' /proc/cmdline)
hotplug=$($bb sed -n 's/.*asyncpf_hotplug=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$touch" ] && [ -x /bin/apftouch ]; then
  /bin/apftouch $(echo $touch | $bb tr , ' ') &
  pid=$!
  cpu1=/sys/devices/system/cpu/cpu1/online
  i=0
  # Faults accepted whose task has not been woken yet (one read of the client's counters;
  # 0 without the client): tokens outstanding.
  st() { $bb awk '$1 == "accepted" { a = $2 } $1 == "woken" { w = $2 } END { print (a > w) ? a - w : 0 }' \
    /sys/kernel/debug/asyncpf 2>/dev/null || echo 0; }
  out=0
  while [ -n "$hotplug" ] && [ $i -lt $hotplug ] && [ -w $cpu1 ] && kill -0 $pid 2>/dev/null; do
    $bb sleep 1
    out=$((out + $(st)))
    echo 0 > $cpu1; $bb sleep 1; echo 1 > $cpu1; i=$((i + 1))
  done
  [ -n "$hotplug" ] && echo "@linux-hotplug cycles=$i online=$($bb cat /sys/devices/system/cpu/online) outstanding=$out"
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
# What must never be in the kernel log: a WARN or BUG, an oops, an RCU stall, a soft or hard
# lockup, a hung task. The first few such lines are shown.
logp='WARNING:|BUG:|Oops|Unable to handle|detected stall|soft lockup|hard LOCKUP|blocked for more than'
$bb dmesg | $bb grep -E "$logp" | $bb head -n 5 | while read -r l; do echo "@linux-log $l"; done
nlog=$($bb dmesg | $bb grep -cE "$logp")
stats=/sys/kernel/debug/asyncpf
[ -r $stats ] && echo "@linux-asyncpf $($bb tr ' \n' '= ' < $stats)"
echo "@linux-workload mib=$mib bytes=$size write_sum=$w read1_sum=$r1 read2_sum=$r2 match=$m write_s=$(el $t0 $t2) read1_s=$(el $t2 $t3) read2_s=$(el $t3 $t4) total_s=$(el $t0 $t4) kernel=$k tainted=$taint dma_minalign_warnings=$dma log_problems=$nlog hwcaps=${hw:-none}"
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
    /// QEMU `-icount shift=` of the run (virtual time), or None (host time).
    pub icount: Option<u32>,
    pub ok: bool,
    pub failure: Option<String>,
    /// The guest's result line's fields (`match`, the sums, the times in seconds).
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    pub page_ins: Option<u64>,
    pub page_outs: Option<u64>,
    /// Faults that waited for the disk with their vCPU stopped (the hypervisor's
    /// `mem.blocking_faults`).
    pub blocking_faults: Option<u64>,
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
pub fn parse_fields(rest: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
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
pub fn row_problems(row: &WorkloadRow) -> Vec<String> {
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
            if r.get("log_problems").and_then(|v| v.as_f64()) != Some(0.0) {
                problems.push(format!(
                    "the kernel log has {:?} WARN, BUG, oops, RCU stall, lockup or hung-task lines",
                    r.get("log_problems")
                ));
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

/// One boot of a Linux kernel with the workload's initramfs.
#[derive(Debug, Clone)]
pub struct LinuxRun {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    /// R (`None`: guest RAM is not paged).
    pub resident_mib: Option<u32>,
    pub latency_us: u64,
    /// MiB of the tmpfs workload.
    pub mib: u64,
    /// What the kernel command line adds (`asyncpf=off`, `asyncpf_touch=…`).
    pub kernel_args: String,
    pub timeout_secs: u64,
    /// QEMU `-icount shift=` (virtual time), or host time.
    pub icount: Option<u32>,
    /// Busy host processes beside QEMU (`--host-load`).
    pub host_load: u32,
}

impl LinuxRun {
    /// The run on the same kernel and initramfs with other words on the command line.
    pub fn with_args(&self, kernel_args: &str) -> LinuxRun {
        LinuxRun { kernel_args: kernel_args.into(), ..self.clone() }
    }
}

/// Boot Linux with the workload once.
pub fn run_workload(root: &Path, tc: &Toolchain, run: &LinuxRun) -> Result<WorkloadRow> {
    let plan = RunPlan {
        scenario: "linux-workload".into(),
        vcpus: run.vcpus,
        pcpus: run.vcpus,
        cpu: run.cpu.clone(),
        guest_mib: run.guest_mib,
        seed: 1,
        json: None,
        guest_kernel: Some(run.kernel.clone()),
        guest_cmdline: Some(
            format!("console=ttyAMA0 panic=-1 quiet asyncpf_mib={} {}", run.mib, run.kernel_args).trim_end().into(),
        ),
        timeout_secs: run.timeout_secs,
        icount: run.icount,
        bare: false,
        quiet: true,
        backing: BackingPlan { latency_us: run.latency_us, ..BackingPlan::default() },
        resident_mib: run.resident_mib,
        foreign: Some(ForeignJudge { expect: ExpectEnd::Off, success_pattern: Some(SUCCESS_PATTERN.into()) }),
        initrd: Some(run.initrd.clone()),
        kernel_kind: Default::default(),
        host_load: run.host_load,
        // Measured runs (under -icount) leave the lock-order check out, as the main job does.
        lock_check: run.icount.is_none(),
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
        vcpus: run.vcpus,
        cpu: run.cpu.clone(),
        guest_mib: run.guest_mib,
        resident_mib: run.resident_mib,
        backing_latency_us: run.latency_us,
        mib: run.mib,
        kernel_args: run.kernel_args.clone(),
        icount: run.icount,
        ok: report.ok,
        failure,
        result,
        page_ins: uint("/mem/page_ins"),
        page_outs: uint("/mem/page_outs"),
        blocking_faults: uint("/mem/blocking_faults"),
        hotplug,
        touch,
        client,
        hyp_apf: report.hyp.get("apf").cloned(),
        wall_seconds: report.wall_seconds,
    })
}

/// The kernel of `series` and the workload's initramfs (written under `target/linux/`).
pub fn prepare(root: &Path, series: KernelSeries) -> Result<(PathBuf, PathBuf)> {
    let kernel = linux::fetch_kernel(root, series)?;
    Ok((kernel, workload_initrd(root, false)?))
}

/// The workload's initramfs, with apftouch if `touch`, written to `target/linux/`.
pub fn workload_initrd(root: &Path, touch: bool) -> Result<PathBuf> {
    let busybox = fs::read(fetch_busybox(root)?)?;
    let touch = if touch { Some(fs::read(crate::linuxapf::build_touch(root)?)?) } else { None };
    let name = if touch.is_some() { "workload-touch.cpio.gz" } else { "workload.cpio.gz" };
    let initrd = root.join("target").join("linux").join(name);
    fs::write(&initrd, workload_initramfs(&busybox, touch.as_deref())?)?;
    Ok(initrd)
}

/// A value of a row's tagged line (`row.touch`, `row.client`, `row.result`), as text.
pub fn field(fields: Option<&serde_json::Map<String, serde_json::Value>>, key: &str) -> String {
    fields.and_then(|f| f.get(key)).map_or("-".to_string(), |v| v.to_string().trim_matches('"').to_string())
}

/// `cargo xtask linux`: one run per `--resident-mib` and latency, a table, JSON. With `--apf`,
/// the APF benchmark ([`crate::linuxapf::bench`]).
pub fn run_linux(root: &Path, tc: &Toolchain, args: &LinuxArgs) -> Result<bool> {
    if args.apf {
        return crate::linuxapf::bench::run(root, tc, args);
    }
    let touch = args.touch();
    let (kernel, _) = prepare(root, args.kernel)?;
    let initrd = workload_initrd(root, touch.is_some())?;
    let (vcpus, guest_mib, mib) = (args.vcpus(), args.guest_mib(), args.mib());
    println!(
        "linux: {} with BusyBox; {vcpus} vCPUs, cpu {}, G = {guest_mib} MiB, {mib} MiB of random data through tmpfs",
        kernel.display(),
        args.cpu,
    );
    let base = LinuxRun {
        kernel: kernel.clone(),
        initrd,
        vcpus,
        cpu: args.cpu.clone(),
        guest_mib,
        resident_mib: None,
        latency_us: 0,
        mib,
        kernel_args: touch.map_or(String::new(), |t| t.kernel_arg(vcpus)),
        timeout_secs: args.timeout,
        icount: args.icount()?,
        host_load: args.host_load,
    };
    let mut rows = Vec::new();
    for latency in args.latencies() {
        for resident in args.resident_mib() {
            let resident = (resident < guest_mib).then_some(resident);
            println!("linux: R = {resident:?} MiB, L = {latency} us...");
            rows.push(run_workload(
                root,
                tc,
                &LinuxRun { resident_mib: resident, latency_us: latency, ..base.clone() },
            )?);
        }
    }
    println!(
        "\n{:>6} {:>6} {:>8} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7}  result",
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
    );
    let mut all_ok = true;
    for row in &rows {
        let field = |k: &str| field(row.result.as_ref(), k);
        let problems = row_problems(row);
        all_ok &= problems.is_empty();
        println!(
            "{:>6} {:>6} {:>8} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>8.1} {:>7}  {}",
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
            if problems.is_empty() { "ok".to_string() } else { format!("FAILED: {}", problems.join("; ")) }
        );
    }
    for row in rows.iter().filter(|r| r.touch.is_some()) {
        let get = |k: &str| field(row.touch.as_ref(), k);
        println!(
            "apftouch R={:?} L={}: procs={} mib={} passes={} work={} errors={} seconds={}",
            row.resident_mib,
            row.backing_latency_us,
            get("procs"),
            get("mib"),
            get("passes"),
            get("work"),
            get("errors"),
            get("seconds"),
        );
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
        let run = LinuxRun {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            vcpus: 4,
            cpu: "max".into(),
            guest_mib: 512,
            resident_mib: Some(resident),
            latency_us: 50,
            mib,
            kernel_args: String::new(),
            timeout_secs: TEST_TIMEOUT_SECS,
            icount: None,
            host_load: 0,
        };
        let row = run_workload(root, tc, &run)?;
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

/// The test's runs: (R, MiB of data) at G = 512 MiB, 4x and 8x overcommit.
const TEST_RUNS: [(u32, u64); 2] = [(128, 256), (64, 128)];
/// The 6.12 test's run: 8x overcommit, a smaller file (the suite's time).
const TEST_RUNS_6_12: [(u32, u64); 1] = [(64, 128)];
/// A Linux test run's timeout.
pub const TEST_TIMEOUT_SECS: u64 = 600;

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
            icount: None,
            ok: true,
            failure: None,
            result: parse_result(line),
            page_ins: Some(page_ins),
            page_outs: Some(page_ins),
            blocking_faults: None,
            hotplug: None,
            touch: None,
            client: None,
            hyp_apf: None,
            wall_seconds: 1.0,
        };
        let good = "@linux-workload mib=300 write_sum=a read1_sum=a read2_sum=a match=yes total_s=1 \
                    kernel=6.1.0-57-cloud-arm64 tainted=0 dma_minalign_warnings=0 log_problems=0";
        assert!(row_problems(&row(good, 10)).is_empty());
        assert_eq!(row_problems(&row(&good.replace("match=yes", "match=no"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace("mib=300", "mib=30"), 10)).len(), 1);
        assert_eq!(row_problems(&row(good, 0)).len(), 1, "R < G must page");
        assert_eq!(row_problems(&row(&good.replace("tainted=0", "tainted=8704"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace("warnings=0", "warnings=3"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace("log_problems=0", "log_problems=2"), 10)).len(), 1);
        assert_eq!(row_problems(&row(&good.replace(" log_problems=0", ""), 10)).len(), 1, "the count is required");
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
