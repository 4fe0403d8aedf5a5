//! Command-line interface and the validation of `run` options into a [`RunPlan`].
//!
//! Validation is pure (no file system, no processes) so that it can be unit-tested and so that
//! a bad option is reported before anything is built or started.
//!
//! `run` has two jobs: with `--scenario NAME` (or `--guest-kernel FILE`), one run
//! ([`RunArgs::validate`]); without them, the main job, the comparison of asynchronous and
//! synchronous page faults (`crate::compare`), whose defaults differ. [`parse`] therefore also reports which `run`
//! options the command line gave ([`Given`]): clap fills in the defaults of the others.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Result};
use asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US;
use asyncpf_core::options::{
    BACKING_LATENCY_US_RANGE, GUEST_MIB_RANGE, MAX_BACKING_SELFTEST_PAGES, MAX_CPUS, RESIDENT_MIB_RANGE,
};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// QEMU's `virt` machine accepts at most this many CPUs (`--bare`).
const MAX_PCPUS: u32 = 512;
/// The hypervisor supports at most this many physical CPUs.
const MAX_HYP_PCPUS: u32 = MAX_CPUS as u32;
/// Most `--host-load` processes (a few per host core is plenty to keep every core busy).
pub const MAX_HOST_LOAD: u32 = 64;
/// `--tasks`: at most this many per vCPU (the hypervisor's APF token slots per vCPU), and this
/// many over all vCPUs (the guest's worker slots, one kept for the scenario's control task).
pub const MAX_TASKS_PER_VCPU: u32 = 16;
pub const MAX_WORKLOAD_TASKS: u32 = 39;
/// The guest's key for `--tasks` (`asyncpf_guest::cmdline::OPT_TASKS`).
const GUEST_OPT_TASKS: &str = "tasks";
/// QEMU accepts `-icount shift=` values 0..=10.
const MAX_ICOUNT_SHIFT: u32 = 10;
/// Bounds on guest RAM in `--bare` runs: the guest kernel needs some room; the host machine has
/// little RAM. Under the hypervisor its own bounds apply (`asyncpf_core::options`).
const MIN_GUEST_MIB: u32 = 16;
const MAX_GUEST_MIB: u32 = 16 * 1024;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Build, run and test asyncpf on QEMU", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check for the Debian cross toolchain and QEMU 10; install them with apt-get if allowed.
    Setup,
    /// Build the hypervisor (aarch64-unknown-none-softfloat), the guest and the probes (aarch64-unknown-none)
    /// and make the guest Image.
    Build(BuildArgs),
    /// Without --scenario (the main job): the `overcommit` workload three times, with and without
    /// asynchronous page faults and without paging, side by side. With --scenario NAME (or
    /// --guest-kernel FILE): run that scenario (kernel) on QEMU and check its results.
    Run(RunArgs),
    /// Host tests, the cross build, and the QEMU integration tests.
    Test(TestArgs),
    /// The APF sweep: the main job's comparison (reference, synchronous, asynchronous) for every
    /// backing-store latency L × tasks per vCPU T × vCPU count N, under -icount; prints the
    /// speedups and their bounds and writes a CSV, a JSON document and an SVG plot.
    Bench(BenchArgs),
    /// The hostile-guest soak: the `hostile` scenario for --calls calls per run, for every
    /// --vcpus with every --seeds, guest RAM overcommitted and asynchronous page faults on, a
    /// working set larger than the resident memory verified meanwhile; fails on any crash,
    /// hang, mismatch, wrong answer or unbounded hypervisor log.
    Soak(SoakArgs),
    /// Linux with a userspace: Debian's arm64 cloud kernel and busybox-static (fetched with apt,
    /// cached in target/linux/) boot with an initramfs whose /init writes --mib MiB of random
    /// data to tmpfs, reads it back twice and compares SHA-256 sums; one run per --resident-mib
    /// and --latencies, on overcommitted guest RAM; prints a table.
    Linux(LinuxArgs),
    /// The per-phase breakdown of a trace written by `run --trace FILE`: fault to task running,
    /// the read, completion to page_ready, page_ready to task running, the hypervisor's time per
    /// asynchronous fault, computed from the Chrome trace-event file alone.
    TraceSummary(TraceSummaryArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TraceSummaryArgs {
    /// A trace written by `cargo xtask run --trace FILE`.
    pub file: PathBuf,
    /// Also draw a few faults' lives (from the middle of the trace) into this SVG file.
    #[arg(long, value_name = "OUT")]
    pub svg: Option<PathBuf>,
    /// How many faults the picture shows.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub faults: usize,
}

#[derive(Args, Debug, Clone)]
pub struct LinuxArgs {
    /// vCPUs (each pinned to its own physical CPU) [default: 4; with --apf: 1].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// QEMU CPU model (`-cpu`).
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Guest RAM G in MiB [default: 512; with --apf: 256].
    #[arg(long, value_name = "G")]
    pub guest_mib: Option<u32>,
    /// Host memory R for guest RAM in MiB, one run each (R >= G: not paged) [default: 128,64;
    /// with --apf: 64, a quarter of G].
    #[arg(long, value_name = "R,...", value_delimiter = ',')]
    pub resident_mib: Option<Vec<u32>>,
    /// The backing disk's latency model in µs, one set of runs each [default: 50; with --apf:
    /// 1000].
    #[arg(long, value_name = "L,...", value_delimiter = ',')]
    pub latencies: Option<Vec<u64>>,
    /// MiB of random data the workload writes to tmpfs and reads back twice [default: 300; with
    /// --apf: 0, apftouch only].
    #[arg(long)]
    pub mib: Option<u64>,
    /// Kill QEMU and fail a run after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Debian's kernel: `6.1` (bookworm's linux-image-cloud-arm64) or `6.12` (bookworm-backports'),
    /// each fetched with apt once and cached under target/linux/ (not with --apf).
    #[arg(long, value_enum, value_name = "SERIES", default_value = "6.1")]
    pub kernel: crate::linux::KernelSeries,
    /// Where to write the rows as JSON (default: target/xtask/linux/linux.json, with --apf
    /// target/xtask/linux/linux-apf.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The APF benchmark: boot Debian's linux-source-6.12 with the APF client of linux/patches
    /// (built and cached in target/linux/build-apf) instead of the cloud kernel and run apftouch
    /// side by side: the reference (R = G, nothing paged), synchronous (`asyncpf=off`) and
    /// asynchronous (the client on), under -icount.
    #[arg(long)]
    pub apf: bool,
    /// Run linux/workload/apftouch (static, built with aarch64-linux-gnu-gcc) before the tmpfs
    /// workload: PROCS processes per vCPU, each touching MIB MiB of anonymous memory for PASSES
    /// passes, spinning WORK iterations between pages, checking every word [with --apf:
    /// 8,24,3,1000].
    #[arg(long, value_name = "PROCS,MIB,PASSES[,WORK]")]
    pub touch: Option<Touch>,
    /// Deterministic virtual time: QEMU `-icount shift=SHIFT,sleep=off` [default: host time;
    /// with --apf: 3].
    #[arg(long, value_name = "SHIFT")]
    pub icount: Option<u32>,
    /// With --apf: run in host time, without -icount (the figures then depend on the host).
    #[arg(long, conflicts_with = "icount")]
    pub host_time: bool,
    /// Keep N busy processes running beside QEMU: under -icount the figures must not change.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub host_load: u32,
}

impl LinuxArgs {
    /// The APF benchmark's apftouch: 8 processes per vCPU, 24 MiB each (3 x R at the default
    /// G = 256, R = 64 MiB on one vCPU), 3 passes, 1000 spins between pages.
    pub const APF_TOUCH: Touch = Touch { per_vcpu: 8, mib: 24, passes: 3, work: 1000 };

    pub fn vcpus(&self) -> u32 {
        self.vcpus.unwrap_or(if self.apf { 1 } else { 4 })
    }

    pub fn guest_mib(&self) -> u32 {
        self.guest_mib.unwrap_or(if self.apf { 256 } else { 512 })
    }

    pub fn resident_mib(&self) -> Vec<u32> {
        self.resident_mib.clone().unwrap_or_else(|| if self.apf { vec![self.guest_mib() / 4] } else { vec![128, 64] })
    }

    pub fn latencies(&self) -> Vec<u64> {
        self.latencies.clone().unwrap_or_else(|| vec![if self.apf { 1000 } else { DEFAULT_BACKING_LATENCY_US }])
    }

    pub fn mib(&self) -> u64 {
        self.mib.unwrap_or(if self.apf { 0 } else { 300 })
    }

    pub fn touch(&self) -> Option<Touch> {
        self.touch.or(self.apf.then_some(Self::APF_TOUCH))
    }

    /// `-icount shift=`, or None for host time.
    pub fn icount(&self) -> Result<Option<u32>> {
        let shift = if self.host_time { None } else { self.icount.or(self.apf.then_some(3)) };
        if let Some(shift) = shift.filter(|&s| s > MAX_ICOUNT_SHIFT) {
            bail!("--icount {shift}: QEMU accepts shifts 0..={MAX_ICOUNT_SHIFT}");
        }
        Ok(shift)
    }
}

/// apftouch's parameters (`--touch P,MIB,PASSES[,WORK]`), with P processes per vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub per_vcpu: u32,
    pub mib: u32,
    pub passes: u32,
    /// Spins between two pages (computation between touches).
    pub work: u64,
}

impl Touch {
    /// The initramfs's `/init` runs apftouch with this kernel command-line word.
    pub fn kernel_arg(&self, vcpus: u32) -> String {
        format!("asyncpf_touch={},{},{},{}", self.per_vcpu * vcpus, self.mib, self.passes, self.work)
    }
}

impl std::str::FromStr for Touch {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Touch, String> {
        let numbers: Vec<u64> = s
            .split(',')
            .map(|w| w.trim().parse::<u64>().map_err(|e| format!("{w:?}: {e}")))
            .collect::<std::result::Result<_, _>>()?;
        let small = |n: u64, what: &str, max: u64| {
            if (1..=max).contains(&n) {
                Ok(n as u32)
            } else {
                Err(format!("{what} must be 1 to {max}, not {n}"))
            }
        };
        match numbers[..] {
            [procs, mib, passes, ref work @ ..] if work.len() <= 1 => Ok(Touch {
                per_vcpu: small(procs, "PROCS (processes per vCPU)", 64)?,
                mib: small(mib, "MIB", 4096)?,
                passes: small(passes, "PASSES", 1000)?,
                work: work.first().copied().unwrap_or(0),
            }),
            _ => Err(format!("{s:?}: expected PROCS,MIB,PASSES[,WORK]")),
        }
    }
}

impl std::fmt::Display for Touch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.per_vcpu, self.mib, self.passes, self.work)
    }
}

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Hostile calls per run (the guest's `calls=N`).
    #[arg(long, default_value_t = 125_000)]
    pub calls: u64,
    /// Seeds: one run per seed and vCPU count.
    #[arg(long, value_name = "S,...", value_delimiter = ',', default_values_t = [1u64, 2, 3])]
    pub seeds: Vec<u64>,
    /// vCPU counts (each pinned to its own physical CPU).
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    pub vcpus: Vec<u32>,
    /// Guest RAM G in MiB.
    #[arg(long, value_name = "G", default_value_t = 64)]
    pub guest_mib: u32,
    /// Host memory R for guest RAM in MiB (R < G overcommits).
    #[arg(long, value_name = "R", default_value_t = 12)]
    pub resident_mib: u32,
    /// The working set the guest rewrites and verifies meanwhile, in MiB (the guest's `ws_mib=M`).
    #[arg(long, value_name = "M", default_value_t = 24)]
    pub ws_mib: u64,
    /// Leave asynchronous page faults off (`apf=off`; default: `apf=on`).
    #[arg(long)]
    pub apf_off: bool,
    /// The backing disk's latency model in µs.
    #[arg(long, value_name = "L", default_value_t = DEFAULT_BACKING_LATENCY_US)]
    pub backing_latency_us: u64,
    /// QEMU CPU model (`-cpu`).
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Kill QEMU and count the run as hung after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Where to write the rows and totals as JSON (default: target/xtask/soak/soak.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build only the hypervisor.
    #[arg(long, conflicts_with = "guest_only")]
    pub hypervisor_only: bool,
    /// Build only the guest (and its Image), e.g. for `run --bare`.
    #[arg(long)]
    pub guest_only: bool,
}

impl BuildArgs {
    pub fn select(&self) -> crate::build::Select {
        let all = !self.guest_only && !self.hypervisor_only;
        crate::build::Select { hypervisor: !self.guest_only, guest: !self.hypervisor_only, probes: all }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenario the asyncpf guest runs (guest command line `scenario=NAME`), e.g. smp, ipi,
    /// overcommit. Without --scenario (and without --guest-kernel), `run` compares asynchronous
    /// with synchronous page faults on the overcommit workload (three runs, defaults in
    /// \[brackets\] below; it refuses --pcpus, --guest-cmdline, --bare, --backing-selftest,
    /// --inject-*).
    // `smp` is what `validate` plans when --scenario is absent; `main` sends that case to the
    // comparison instead (unless --guest-kernel is given), telling it apart with `Given`.
    #[arg(long, default_value = "smp", hide_default_value = true)]
    pub scenario: String,
    /// Number of vCPUs (default: the number of physical CPUs) [without --scenario: 1].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Number of physical CPUs, QEMU's `-smp` (default: --vcpus if given, else 4).
    #[arg(long)]
    pub pcpus: Option<u32>,
    /// QEMU CPU model (`-cpu`), e.g. max, a64fx, cortex-a72.
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Guest RAM in MiB [without --scenario: 64].
    #[arg(long, default_value_t = 128)]
    pub guest_mib: u32,
    /// Seed of the scenario's pseudo-random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the run's results as one JSON object to this file (also when the run fails) [without
    /// --scenario: the comparison's document, also written to target/xtask/compare/].
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Boot this arm64 kernel Image (optionally gzip-compressed) instead of asyncpf's guest.
    /// Such a guest is judged by how it ends (--expect) and, if given, --success-pattern; its
    /// own `@result` lines are not trusted.
    #[arg(long, value_name = "FILE")]
    pub guest_kernel: Option<PathBuf>,
    /// Tasks per vCPU of the `overcommit` workload (the guest's `tasks=T`, 1 to 16): how many
    /// page-ins of one vCPU can overlap with asynchronous page faults [without --scenario: 8;
    /// otherwise the guest's default, 3].
    #[arg(long, value_name = "T")]
    pub tasks: Option<u32>,
    /// An initial RAM disk for the guest kernel (Linux boot protocol: loaded into guest RAM and
    /// named by /chosen/linux,initrd-start and -end), e.g. a gzip'd cpio initramfs.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// With --guest-kernel: what the file is: `auto` (an arm64 Image, gzip'd or not, or an ELF,
    /// by their magic), `image`, `elf` (loaded at its segments' physical addresses, entered at
    /// e_entry), or `raw` (loaded and entered at RAM + 0x80000), as QEMU's -kernel.
    #[arg(long, value_enum, value_name = "KIND", default_value = "auto")]
    pub kernel_kind: crate::image::KernelKindArg,
    /// With --guest-kernel: the end that makes the run ok [default: off].
    #[arg(long, value_enum, value_name = "END")]
    pub expect: Option<ExpectEnd>,
    /// With --guest-kernel: the run is ok only if a line the guest printed matches this regular
    /// expression (Rust `regex` syntax).
    #[arg(long, value_name = "REGEX")]
    pub success_pattern: Option<String>,
    /// Extra words for the guest's command line.
    #[arg(long, value_name = "STR")]
    pub guest_cmdline: Option<String>,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Deterministic virtual time: QEMU `-icount shift=SHIFT,sleep=off` [without --scenario: 3].
    #[arg(long, value_name = "SHIFT")]
    pub icount: Option<u32>,
    /// Boot the guest Image directly on QEMU, without the hypervisor (baseline / debugging).
    #[arg(long)]
    pub bare: bool,
    /// Do not echo the console; it is still shown (its tail) when the run fails [without --scenario:
    /// consoles are never echoed, --quiet drops the progress lines].
    #[arg(long)]
    pub quiet: bool,
    /// Skip the implicit `cargo xtask build` (of what the run needs) before running.
    #[arg(long)]
    pub no_build: bool,
    /// Minimum service time of every backing-store (virtio-blk) request in µs [without --scenario:
    /// 1000].
    #[arg(long, value_name = "US", default_value_t = DEFAULT_BACKING_LATENCY_US)]
    pub backing_latency_us: u64,
    /// Run the hypervisor's backing-store self-test over N pages before the VM starts.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub backing_selftest: u64,
    /// Make the backing disk fail reads of these 4 KiB slots with EIO (QEMU blkdebug), e.g. `5,17`.
    #[arg(long, value_name = "SLOTS", value_delimiter = ',')]
    pub inject_read_errors: Vec<u64>,
    /// Make the backing disk fail writes of these 4 KiB slots with EIO (QEMU blkdebug).
    #[arg(long, value_name = "SLOTS", value_delimiter = ',')]
    pub inject_write_errors: Vec<u64>,
    /// Page guest RAM through the backing disk with only R MiB of host memory (hypervisor option
    /// `resident_mib`, 4 to 4096): R below --guest-mib overcommits memory, R at or above it still
    /// runs the pager. Default: guest RAM is all resident and never paged. Slot n of the disk is
    /// guest page n (IPA 0x4000_0000 + n * 4096) [without --scenario: 12; R < G required].
    #[arg(long, value_name = "R")]
    pub resident_mib: Option<u32>,
    /// Keep N busy processes (`sh -c 'while :; do :; done'`) running beside QEMU during the
    /// run(s), killed after: under -icount the figures must not change.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub host_load: u32,
    /// Record the per-fault trace and write it to FILE as Chrome trace-event JSON (opens in
    /// ui.perfetto.dev); needs --resident-mib. Without --scenario: one trace per row, FILE with
    /// the row's name before its extension. Builds the hypervisor and the guest with their
    /// `trace` feature (in target/cross-trace).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// MiB of host memory for the trace's logs (hypervisor option `trace_mib`).
    #[arg(long, value_name = "MIB", default_value_t = crate::trace::DEFAULT_TRACE_MIB)]
    pub trace_mib: u32,
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Only run tests whose name contains this string (e.g. `ipi`, `v4`, `a64fx`, `host`).
    #[arg(long, value_name = "SUBSTR")]
    pub filter: Option<String>,
    /// QEMU tests run in parallel (4-vCPU TCG runs already use both cores of a 2-core machine).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Timeout of each QEMU test in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Print the names of the tests that would run (after `--filter`), one a line, and run nothing.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Backing-store latencies L in µs (the latency model's minimum service time of a request).
    #[arg(long, value_name = "L,...", value_delimiter = ',', default_values_t = [0u64, 20, 100, 1000, 10_000])]
    pub latencies: Vec<u64>,
    /// Tasks per vCPU T of the workload (1 to 16; T × N at most 39, the guest's task slots: other
    /// points are skipped and listed).
    #[arg(long, value_name = "T,...", value_delimiter = ',', default_values_t = [1u32, 2, 4, 8, 16])]
    pub tasks: Vec<u32>,
    /// vCPU counts N (each pinned to its own physical CPU: QEMU -smp N).
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1u32, 4])]
    pub vcpus: Vec<u32>,
    /// QEMU `-icount shift=SHIFT,sleep=off` (virtual time: 2^SHIFT ns per instruction).
    #[arg(long, value_name = "SHIFT", default_value_t = 3)]
    pub icount: u32,
    /// QEMU CPU model (`-cpu`).
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Guest RAM G in MiB.
    #[arg(long, value_name = "G", default_value_t = 32)]
    pub guest_mib: u32,
    /// Host memory R for guest RAM in MiB in the synchronous and asynchronous runs (the reference
    /// run has R = G).
    #[arg(long, value_name = "R", default_value_t = 8)]
    pub resident_mib: u32,
    /// Seed of the scenario's pseudo-random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write apf-sweep.csv, .json and .svg (default: target/xtask/bench); `--out
    /// docs/bench` regenerates the committed plot.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Kill QEMU and count the run as failed after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Keep N busy processes running beside QEMU during the runs (see `run --host-load`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub host_load: u32,
    /// Skip the implicit build.
    #[arg(long)]
    pub no_build: bool,
}

/// The `run` options that the command line gave, by clap id (the [`RunArgs`] field name, e.g.
/// `guest_mib`); clap filled in the others from their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given(BTreeSet<String>);

impl Given {
    /// The options of `matches` whose value came from the command line.
    fn from_matches(matches: &ArgMatches) -> Given {
        let given = matches.ids().filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine));
        Given(given.map(|id| id.as_str().to_string()).collect())
    }

    /// Whether the command line gave option `id` (a [`RunArgs`] field name).
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

/// Parses the process's command line as [`Cli::parse`] does (exiting with clap's message on an
/// error, or after `--help`), and also says which `run` options it gave.
pub fn parse() -> (Cli, Given) {
    parse_from(std::env::args_os()).unwrap_or_else(|err| err.exit())
}

/// [`parse`] of `argv` (the program name first), returning clap's error.
pub fn parse_from<I, T>(argv: I) -> Result<(Cli, Given), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(argv)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command))?;
    let given = match matches.subcommand() {
        Some(("run", run)) => Given::from_matches(run),
        _ => Given::default(),
    };
    Ok((cli, given))
}

/// How a foreign guest (`--guest-kernel`) must end for its run to be ok.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpectEnd {
    /// PSCI SYSTEM_OFF.
    #[default]
    Off,
    /// PSCI SYSTEM_RESET (e.g. Linux with `panic=-1` after a panic).
    Reset,
    /// SYSTEM_OFF or SYSTEM_RESET.
    Any,
}

/// How a foreign guest's run is judged (the guest's own `@result` lines are not trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignJudge {
    pub expect: ExpectEnd,
    /// A regular expression one of the guest's console lines must match (checked valid).
    pub success_pattern: Option<String>,
}

/// A validated `run` request: everything needed to build the QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    pub scenario: String,
    pub vcpus: u32,
    pub pcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    pub seed: u64,
    pub json: Option<PathBuf>,
    pub guest_kernel: Option<PathBuf>,
    pub guest_cmdline: Option<String>,
    pub timeout_secs: u64,
    pub icount: Option<u32>,
    pub bare: bool,
    pub quiet: bool,
    pub backing: BackingPlan,
    /// Host memory for guest RAM in MiB (`resident_mib`); None: guest RAM is not paged.
    pub resident_mib: Option<u32>,
    /// For a `--guest-kernel` run: how it is judged.
    pub foreign: Option<ForeignJudge>,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
    /// `--kernel-kind`.
    pub kernel_kind: crate::image::KernelKindArg,
    /// Busy processes beside QEMU during the run (`--host-load`).
    pub host_load: u32,
    /// Check the hypervisor's lock hierarchy at every acquisition (hypervisor option `lockcheck`):
    /// on, except in the measured runs (the main job, the sweep, `qemu/never-slower`).
    pub lock_check: bool,
    /// `--trace FILE`.
    pub trace: Option<crate::trace::TracePlan>,
}

/// The hypervisor's backing disk: its latency model, the self-test, injected errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingPlan {
    pub latency_us: u64,
    /// Self-test pages; 0: no self-test.
    pub selftest_pages: u64,
    /// 4 KiB slots whose reads / writes fail with EIO.
    pub read_errors: Vec<u64>,
    pub write_errors: Vec<u64>,
}

impl Default for BackingPlan {
    fn default() -> Self {
        BackingPlan {
            latency_us: DEFAULT_BACKING_LATENCY_US,
            selftest_pages: 0,
            read_errors: Vec::new(),
            write_errors: Vec::new(),
        }
    }
}

/// Bytes per backing-disk slot (one guest page).
pub const SLOT_BYTES: u64 = 4096;

impl BackingPlan {
    /// The disk holds the guest's RAM, or the self-test's pages if that is more.
    pub fn disk_bytes(&self, guest_mib: u32) -> u64 {
        ((guest_mib as u64) << 20).max(self.selftest_pages * SLOT_BYTES)
    }

    pub fn injects_errors(&self) -> bool {
        !self.read_errors.is_empty() || !self.write_errors.is_empty()
    }
}

impl RunArgs {
    /// Checks the options against each other and fills in the defaults that depend on others.
    pub fn validate(&self) -> Result<RunPlan> {
        // `--pcpus` defaults to `--vcpus`, `--vcpus` to `--pcpus`, both to 4.
        if self.vcpus == Some(0) {
            bail!("--vcpus must be at least 1");
        }
        let pcpus = self.pcpus.or(self.vcpus).unwrap_or(4);
        let vcpus = self.vcpus.unwrap_or(pcpus);
        let (option, limit, who) = match (self.bare, self.pcpus.is_some()) {
            (true, _) => ("--pcpus", MAX_PCPUS, "QEMU's virt machine takes"),
            (false, true) => ("--pcpus", MAX_HYP_PCPUS, "the hypervisor supports"),
            (false, false) => ("--vcpus", MAX_HYP_PCPUS, "the hypervisor supports (one per physical CPU)"),
        };
        if pcpus == 0 || pcpus > limit {
            bail!("{option} {pcpus} is out of range: {who} 1..={limit} CPUs");
        }
        if vcpus > pcpus {
            bail!(
                "--vcpus {vcpus} > --pcpus {pcpus}: the hypervisor pins one vCPU per physical CPU; \
                 raise --pcpus or lower --vcpus"
            );
        }
        if self.bare && vcpus != pcpus {
            bail!(
                "--bare boots the guest on every physical CPU, so --vcpus ({vcpus}) must equal \
                 --pcpus ({pcpus}); drop one of them"
            );
        }
        let guest_mib_range = if self.bare {
            MIN_GUEST_MIB..=MAX_GUEST_MIB
        } else {
            *GUEST_MIB_RANGE.start() as u32..=*GUEST_MIB_RANGE.end() as u32
        };
        if !guest_mib_range.contains(&self.guest_mib) {
            bail!(
                "--guest-mib {} is out of range {}..={}{}",
                self.guest_mib,
                guest_mib_range.start(),
                guest_mib_range.end(),
                if self.bare { "" } else { " (the hypervisor's limit)" }
            );
        }
        if let Some(shift) = self.icount {
            if shift > MAX_ICOUNT_SHIFT {
                bail!("--icount {shift}: QEMU accepts shifts 0..={MAX_ICOUNT_SHIFT}");
            }
        }
        if self.timeout == 0 {
            bail!("--timeout must be at least 1 second");
        }
        if self.trace.is_some() && (self.bare || self.resident_mib.is_none()) {
            bail!(
                "--trace needs the hypervisor's pager (--resident-mib R, not --bare): the trace is written to its disk"
            );
        }
        if !(1..=1024).contains(&self.trace_mib) {
            bail!("--trace-mib {}: 1 to 1024", self.trace_mib);
        }
        if self.host_load > MAX_HOST_LOAD {
            bail!("--host-load {}: at most {MAX_HOST_LOAD} busy processes", self.host_load);
        }
        check_word("--scenario", &self.scenario)?;
        check_word("--cpu", &self.cpu)?;
        if let Some(extra) = &self.guest_cmdline {
            if extra.contains(['\n', '\r', '\0']) {
                bail!("--guest-cmdline must be a single line without NUL characters");
            }
        }
        let backing = BackingPlan {
            latency_us: self.backing_latency_us,
            selftest_pages: self.backing_selftest,
            read_errors: self.inject_read_errors.clone(),
            write_errors: self.inject_write_errors.clone(),
        };
        if self.bare && backing != BackingPlan::default() {
            bail!("--bare runs no hypervisor, so it has no backing disk: drop the --backing-*/--inject-* options");
        }
        if !BACKING_LATENCY_US_RANGE.contains(&backing.latency_us) {
            bail!(
                "--backing-latency-us {} is out of range {}..={}",
                backing.latency_us,
                BACKING_LATENCY_US_RANGE.start(),
                BACKING_LATENCY_US_RANGE.end()
            );
        }
        if backing.selftest_pages > MAX_BACKING_SELFTEST_PAGES {
            bail!("--backing-selftest {} is more than {MAX_BACKING_SELFTEST_PAGES} pages", backing.selftest_pages);
        }
        if let Some(mib) = self.resident_mib {
            if self.bare {
                bail!("--bare runs no hypervisor, so nothing pages guest RAM: drop --resident-mib");
            }
            if !RESIDENT_MIB_RANGE.contains(&u64::from(mib)) {
                bail!(
                    "--resident-mib {mib} is out of range {}..={}",
                    RESIDENT_MIB_RANGE.start(),
                    RESIDENT_MIB_RANGE.end()
                );
            }
        }
        if let Some(tasks) = self.tasks {
            if self.guest_kernel.is_some() {
                bail!("--tasks sets the asyncpf guest's workload; a --guest-kernel has its own");
            }
            if !(1..=MAX_TASKS_PER_VCPU).contains(&tasks) || tasks * vcpus > MAX_WORKLOAD_TASKS {
                bail!(
                    "--tasks {tasks} is out of range: 1..={MAX_TASKS_PER_VCPU} per vCPU (the hypervisor's APF token \
                     slots), at most {MAX_WORKLOAD_TASKS} over all vCPUs (the guest's task slots)"
                );
            }
        }
        if self.guest_kernel.is_none() && (self.expect.is_some() || self.success_pattern.is_some()) {
            bail!(
                "--expect and --success-pattern judge a --guest-kernel run; asyncpf's own guest reports its own result"
            );
        }
        if let Some(pattern) = &self.success_pattern {
            if let Err(e) = regex::Regex::new(pattern) {
                bail!("--success-pattern {pattern:?} is not a valid regular expression: {e}");
            }
        }
        let foreign = self.guest_kernel.as_ref().map(|_| ForeignJudge {
            expect: self.expect.unwrap_or_default(),
            success_pattern: self.success_pattern.clone(),
        });
        // The disk always holds all of guest RAM (`disk_bytes`), which paging needs.
        let slots = backing.disk_bytes(self.guest_mib) / SLOT_BYTES;
        if let Some(bad) = backing.read_errors.iter().chain(&backing.write_errors).find(|&&s| s >= slots) {
            bail!("--inject-*-errors: slot {bad} is beyond the backing disk's {slots} slots");
        }
        Ok(RunPlan {
            scenario: self.scenario.clone(),
            vcpus,
            pcpus,
            cpu: self.cpu.clone(),
            guest_mib: self.guest_mib,
            seed: self.seed,
            json: self.json.clone(),
            guest_kernel: self.guest_kernel.clone(),
            guest_cmdline: {
                let words: Vec<String> = self
                    .guest_cmdline
                    .iter()
                    .map(|s| s.trim().to_string())
                    .chain(self.tasks.map(|t| format!("{GUEST_OPT_TASKS}={t}")))
                    .filter(|s| !s.is_empty())
                    .collect();
                (!words.is_empty()).then(|| words.join(" "))
            },
            timeout_secs: self.timeout,
            icount: self.icount,
            bare: self.bare,
            quiet: self.quiet,
            backing,
            resident_mib: self.resident_mib,
            foreign,
            initrd: self.initrd.clone(),
            kernel_kind: self.kernel_kind,
            host_load: self.host_load,
            lock_check: true,
            trace: self.trace.as_ref().map(|file| crate::trace::TracePlan { file: file.clone(), mib: self.trace_mib }),
        })
    }
}

/// Values that become one `key=value` word of a command line (or a QEMU option value) must be
/// non-empty and free of separators.
fn check_word(option: &str, value: &str) -> Result<()> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == ',' || c == '=' || c == '"';
    if value.is_empty() || value.contains(bad) || value == "--" {
        bail!("{option} {value:?}: must be one non-empty word without spaces, commas, '=' or quotes");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `run` options as clap would parse them from `args` (after `run`).
    fn parse_linux(args: &[&str]) -> LinuxArgs {
        let mut argv = vec!["xtask", "linux"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("arguments parse").command {
            Command::Linux(l) => l,
            other => panic!("expected linux, got {other:?}"),
        }
    }

    #[test]
    fn linux_defaults_depend_on_apf() {
        let plain = parse_linux(&[]);
        assert_eq!((plain.vcpus(), plain.guest_mib(), plain.resident_mib()), (4, 512, vec![128, 64]));
        assert_eq!((plain.mib(), plain.touch(), plain.icount().unwrap()), (300, None, None));
        assert_eq!(plain.latencies(), vec![DEFAULT_BACKING_LATENCY_US]);
        let apf = parse_linux(&["--apf"]);
        assert_eq!((apf.vcpus(), apf.guest_mib(), apf.resident_mib()), (1, 256, vec![64]));
        assert_eq!((apf.mib(), apf.touch(), apf.icount().unwrap()), (0, Some(LinuxArgs::APF_TOUCH), Some(3)));
        assert_eq!(apf.latencies(), vec![1000]);
        assert_eq!(parse_linux(&["--apf", "--guest-mib", "512"]).resident_mib(), vec![128], "R = G / 4");
        assert_eq!(parse_linux(&["--apf", "--host-time"]).icount().unwrap(), None);
        assert!(parse_linux(&["--apf", "--icount", "11"]).icount().is_err());
        let argv = ["xtask", "linux", "--apf", "--host-time", "--icount", "3"];
        assert!(Cli::try_parse_from(argv).is_err(), "--host-time and --icount conflict");
    }

    #[test]
    fn touch_parses_and_names_each_mistake() {
        let t: Touch = "8,24,3".parse().unwrap();
        assert_eq!(t, Touch { per_vcpu: 8, mib: 24, passes: 3, work: 0 });
        assert_eq!(t.kernel_arg(4), "asyncpf_touch=32,24,3,0", "PROCS is per vCPU");
        let t: Touch = "2,16,2,500".parse().unwrap();
        assert_eq!((t.work, t.to_string()), (500, "2,16,2,500".to_string()));
        assert_eq!(t.to_string().parse::<Touch>().unwrap(), t);
        for bad in ["", "8,24", "8,24,3,1,2", "0,24,3", "8,0,3", "8,24,0", "65,24,3", "8,x,3", "8,24,-1"] {
            assert!(bad.parse::<Touch>().is_err(), "{bad:?}");
        }
    }

    pub(crate) fn parse_run(args: &[&str]) -> RunArgs {
        let mut argv = vec!["xtask", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("arguments parse").command {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let plan = parse_run(&[]).validate().unwrap();
        assert_eq!((plan.vcpus, plan.pcpus), (4, 4));
        assert_eq!(plan.scenario, "smp");
        assert_eq!(plan.cpu, "max");
        assert_eq!(plan.guest_mib, 128);
        assert_eq!(plan.seed, 1);
        assert_eq!(plan.timeout_secs, 120);
        assert_eq!(plan.icount, None);
        assert!(!plan.bare && !plan.quiet);
        assert_eq!(plan.resident_mib, None);
        assert_eq!(plan.host_load, 0);
    }

    #[test]
    fn host_load() {
        assert_eq!(parse_run(&["--host-load", "2"]).validate().unwrap().host_load, 2);
        let max = MAX_HOST_LOAD.to_string();
        assert_eq!(parse_run(&["--host-load", &max]).validate().unwrap().host_load, MAX_HOST_LOAD);
        let over = (MAX_HOST_LOAD + 1).to_string();
        let err = parse_run(&["--host-load", &over]).validate().unwrap_err().to_string();
        assert!(err.contains("--host-load"), "{err}");
    }

    #[test]
    fn cpu_count_defaults_follow_each_other() {
        let p = parse_run(&["--vcpus", "2"]).validate().unwrap();
        assert_eq!((p.vcpus, p.pcpus), (2, 2));
        let p = parse_run(&["--pcpus", "3"]).validate().unwrap();
        assert_eq!((p.vcpus, p.pcpus), (3, 3));
        let p = parse_run(&["--vcpus", "1", "--pcpus", "4"]).validate().unwrap();
        assert_eq!((p.vcpus, p.pcpus), (1, 4));
    }

    #[test]
    fn rejects_bad_cpu_counts() {
        let err = parse_run(&["--vcpus", "4", "--pcpus", "2"]).validate().unwrap_err();
        assert!(err.to_string().contains("pins one vCPU per physical CPU"), "{err}");
        let err = |args: &[&str]| parse_run(args).validate().unwrap_err().to_string();
        assert_eq!(err(&["--vcpus", "0"]), "--vcpus must be at least 1", "blames the option given");
        assert!(err(&["--pcpus", "0"]).starts_with("--pcpus 0 is out of range"));
        // The hypervisor's limit is named, and named against the option the user gave.
        assert_eq!(
            err(&["--vcpus", "64"]),
            "--vcpus 64 is out of range: the hypervisor supports (one per physical CPU) 1..=8 CPUs"
        );
        assert!(err(&["--pcpus", "9"]).contains("the hypervisor supports 1..=8"));
        assert!(parse_run(&["--bare", "--pcpus", "9"]).validate().is_ok(), "QEMU's own limit in --bare");
        assert!(err(&["--bare", "--pcpus", "513"]).contains("QEMU's virt machine takes 1..=512"));
        let err = parse_run(&["--bare", "--vcpus", "1", "--pcpus", "2"]).validate().unwrap_err();
        assert!(err.to_string().contains("--bare"), "{err}");
        assert!(parse_run(&["--bare", "--vcpus", "2"]).validate().is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse_run(&["--icount", "11"]).validate().is_err());
        assert!(parse_run(&["--icount", "10"]).validate().is_ok());
        assert!(parse_run(&["--guest-mib", "8"]).validate().is_err());
        // The hypervisor's range, quoted as it is (not QEMU's --bare range).
        let err = parse_run(&["--guest-mib", "5000"]).validate().unwrap_err().to_string();
        assert_eq!(err, "--guest-mib 5000 is out of range 16..=4096 (the hypervisor's limit)");
        assert!(parse_run(&["--guest-mib", "3"]).validate().unwrap_err().to_string().contains("16..=4096"));
        assert!(parse_run(&["--bare", "--guest-mib", "5000"]).validate().is_ok());
        // Judging options only for a foreign kernel; the pattern must compile.
        assert!(parse_run(&["--expect", "reset"]).validate().unwrap_err().to_string().contains("--guest-kernel"));
        let err = parse_run(&["--guest-kernel", "/i", "--success-pattern", "a("]).validate().unwrap_err();
        assert!(err.to_string().contains("not a valid regular expression"), "{err}");
        let p = parse_run(&["--guest-kernel", "/i", "--expect", "any", "--success-pattern", "ok$"]).validate().unwrap();
        assert_eq!(p.foreign, Some(ForeignJudge { expect: ExpectEnd::Any, success_pattern: Some("ok$".into()) }));
        let p = parse_run(&["--guest-kernel", "/i"]).validate().unwrap();
        assert_eq!(p.foreign.unwrap().expect, ExpectEnd::Off);
        // --tasks goes to the guest's command line, within the hypervisor's and guest's limits.
        let p =
            parse_run(&["--scenario", "overcommit", "--tasks", "8", "--guest-cmdline", "apf=on"]).validate().unwrap();
        assert_eq!(p.guest_cmdline.as_deref(), Some("apf=on tasks=8"));
        assert!(parse_run(&["--tasks", "17", "--vcpus", "1"]).validate().unwrap_err().to_string().contains("1..=16"));
        assert!(parse_run(&["--tasks", "16", "--vcpus", "4"]).validate().is_err(), "64 tasks > 39");
        assert!(parse_run(&["--tasks", "2", "--guest-kernel", "/i"]).validate().is_err());
        assert!(parse_run(&["--timeout", "0"]).validate().is_err());
        assert!(parse_run(&["--scenario", "a b"]).validate().is_err());
        assert!(parse_run(&["--scenario", "x=y"]).validate().is_err());
        assert!(parse_run(&["--scenario", ""]).validate().is_err());
        assert!(parse_run(&["--cpu", "max,sve=off"]).validate().is_err());
        assert!(parse_run(&["--guest-cmdline", "a\nb"]).validate().is_err());
    }

    #[test]
    fn backing_options() {
        let p = parse_run(&[]).validate().unwrap();
        assert_eq!(p.backing, BackingPlan::default());
        assert_eq!(p.backing.disk_bytes(128), 128 << 20);
        let p =
            parse_run(&["--backing-latency-us", "200", "--backing-selftest", "65536", "--inject-read-errors", "5,17"])
                .validate()
                .unwrap();
        assert_eq!(p.backing.latency_us, 200);
        assert_eq!(p.backing.read_errors, [5, 17]);
        assert!(p.backing.injects_errors());
        assert_eq!(p.backing.disk_bytes(128), 256 << 20, "the self-test needs more than the guest RAM");
        assert!(parse_run(&["--backing-latency-us", "1000001"]).validate().is_err());
        assert!(parse_run(&["--backing-selftest", "262145"]).validate().is_err());
        let err = parse_run(&["--inject-write-errors", "32768"]).validate().unwrap_err();
        assert!(err.to_string().contains("beyond the backing disk"), "{err}");
        assert!(parse_run(&["--bare", "--backing-selftest", "1"]).validate().is_err());
    }

    #[test]
    fn resident_mib() {
        let p = parse_run(&["--guest-mib", "256", "--resident-mib", "32"]).validate().unwrap();
        assert_eq!(p.resident_mib, Some(32));
        assert_eq!(p.backing.disk_bytes(p.guest_mib), 256 << 20, "the disk holds all of guest RAM");
        assert_eq!(parse_run(&["--resident-mib", "4"]).validate().unwrap().resident_mib, Some(4));
        assert_eq!(parse_run(&["--resident-mib", "4096"]).validate().unwrap().resident_mib, Some(4096));
        // R may exceed G: the pager still runs, it just never needs to evict.
        let p = parse_run(&["--guest-mib", "32", "--resident-mib", "64"]).validate().unwrap();
        assert_eq!((p.guest_mib, p.resident_mib), (32, Some(64)));
        for bad in ["3", "0", "4097"] {
            let err = parse_run(&["--resident-mib", bad]).validate().unwrap_err();
            assert!(err.to_string().contains("out of range 4..=4096"), "{err}");
        }
        let err = parse_run(&["--bare", "--resident-mib", "8"]).validate().unwrap_err();
        assert!(err.to_string().contains("--bare") && err.to_string().contains("--resident-mib"), "{err}");
        assert!(Cli::try_parse_from(["xtask", "run", "--resident-mib", "-1"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--resident-mib", "x"]).is_err());
    }

    #[test]
    fn given_options() {
        let (cli, given) = parse_from(["xtask", "run", "--guest-mib", "128", "--quiet"]).unwrap();
        assert!(matches!(cli.command, Command::Run(ref r) if r.guest_mib == 128 && r.quiet));
        assert!(given.contains("guest_mib") && given.contains("quiet"));
        // Defaults are not given.
        for id in ["scenario", "backing_latency_us", "vcpus", "timeout", "bare", "seed"] {
            assert!(!given.contains(id), "{id}");
        }
        let (_, given) = parse_from(["xtask", "run", "--scenario", "smp"]).unwrap();
        assert!(given.contains("scenario"));
        let (_, given) = parse_from(["xtask", "bench", "--vcpus", "2"]).unwrap();
        assert_eq!(given, Given::default(), "only `run` options are recorded");
        assert!(parse_from(["xtask", "run", "--no-such-option"]).is_err());
    }

    #[test]
    fn blank_guest_cmdline_is_none() {
        let p = parse_run(&["--guest-cmdline", "  "]).validate().unwrap();
        assert_eq!(p.guest_cmdline, None);
        let p = parse_run(&["--guest-cmdline", "verbose=1"]).validate().unwrap();
        assert_eq!(p.guest_cmdline.as_deref(), Some("verbose=1"));
    }
}
