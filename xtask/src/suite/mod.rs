//! `test`: host tests, the cross build, QEMU integration tests and a negative test.
//!
//! The QEMU tests run scenarios through the same code as `cargo xtask run` and then check the
//! JSON report against [`ASSERTIONS`], one table so that field names and bounds are easy to
//! adjust in one place.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::build;
use crate::cli::{BackingPlan, RunPlan, TestArgs, SLOT_BYTES};
use crate::run;
use crate::toolchain::Toolchain;

/// The scenarios, vCPU counts and CPU models of the integration matrix.
const SCENARIOS: &[&str] = &["smp", "ipi", "hostile", "overcommit", "hotplug", "apfabi"];
/// Rounds of the guest's `hotplug` scenario: each turns every secondary vCPU off and on again.
const HOTPLUG_ROUNDS: i64 = 3;
const VCPU_COUNTS: &[u32] = &[1, 4];
const CPU_MODELS: &[&str] = &["max", "a64fx"];

/// A backing-store case: the `smp` scenario on 2 vCPUs after the hypervisor's self-test.
#[derive(Debug, Clone, Copy)]
struct Selftest {
    /// The case's name and its assertion label.
    name: &'static str,
    pages: u64,
    latency_us: u64,
    read_errors: &'static [u64],
    write_errors: &'static [u64],
}

/// Every self-test case carries this label too.
const SELFTEST: &str = "selftest";
const SELFTEST_CLEAN: &str = "selftest-clean";
const SELFTEST_LATENCY: &str = "selftest-l200";
const SELFTEST_ERRORS: &str = "selftest-blkdebug";
const SELFTEST_VCPUS: u32 = 2;
/// The blkdebug case: 64 pages, the read of slot 5 and the write of slot 9 fail.
const BLKDEBUG_PAGES: u64 = 64;
const BLKDEBUG_READ_SLOT: u64 = 5;
const BLKDEBUG_WRITE_SLOT: u64 = 9;
/// Pages the blkdebug case can verify: all but the one whose read failed and the one whose
/// write failed (it is not read back).
const BLKDEBUG_VERIFIABLE: i64 = BLKDEBUG_PAGES as i64 - 2;
/// The requests the device holds at once (virtio-drivers' queue of 16, indirect descriptors).
const DEVICE_QUEUE_DEPTH: i64 = 16;

const SELFTESTS: &[Selftest] = &[
    Selftest { name: "selftest-l0", pages: 1024, latency_us: 0, read_errors: &[], write_errors: &[] },
    Selftest { name: SELFTEST_LATENCY, pages: 1024, latency_us: 200, read_errors: &[], write_errors: &[] },
    Selftest {
        name: SELFTEST_ERRORS,
        pages: BLKDEBUG_PAGES,
        latency_us: 0,
        read_errors: &[BLKDEBUG_READ_SLOT],
        write_errors: &[BLKDEBUG_WRITE_SLOT],
    },
];

/// A paging case: the `overcommit` integrity workload with guest RAM paged by the hypervisor
/// (`--resident-mib`), at the default backing latency, on `max`. The working set is `ws_mib`,
/// or by default all free guest RAM: about G - 6 MiB (the kernel Image and the generation table
/// below it, the device tree in the last 2 MiB above it).
#[derive(Debug, Clone, Copy)]
struct Paged {
    /// The case's name (`overcommit-4x` runs as qemu/overcommit/4x/vN) and its assertion label.
    name: &'static str,
    vcpus: u32,
    guest_mib: u32,
    resident_mib: u32,
    /// The guest's `ws_mib=` (working set in MiB); None: the default.
    ws_mib: Option<u32>,
    read_errors: &'static [u64],
    write_errors: &'static [u64],
    /// The guest enables asynchronous page faults (`apf=on`).
    apf: bool,
}

impl Paged {
    /// Less host memory than guest RAM.
    fn overcommits(&self) -> bool {
        self.resident_mib < self.guest_mib
    }

    /// Reads that fail make the pager inject aborts, so the guest's own verdict is a failure.
    fn expects_aborts(&self) -> bool {
        !self.read_errors.is_empty()
    }
}

/// Every paging case carries this label; those without injected errors also the second, and
/// those with less resident memory than guest RAM the third.
const PAGED: &str = "paged";
const PAGED_CLEAN: &str = "paged-clean";
const OVERCOMMITTED: &str = "overcommitted";
/// A working set at least 4 times the resident memory.
const OC_4X: &str = "overcommit-4x";
/// A working set at least 8 times the resident memory.
const OC_8X: &str = "overcommit-8x";
/// R = G: the pager runs (first touches are zero-filled) but never evicts.
const OC_FITS: &str = "overcommit-fits";
/// Disk errors under an overcommitted guest.
const OC_BLKDEBUG: &str = "overcommit-blkdebug";
/// The guest's RAM starts at this IPA on QEMU's `virt` layout; disk slot n backs guest page n.
const GUEST_RAM_IPA: u64 = 0x4000_0000;
/// The blkdebug case's guest RAM (32 MiB = slots 0..8192). The guest Image ends near slot 890
/// (0x4037_a000 with today's 1.5 MiB image), the generation table takes 2 pages, so the working
/// set is about slots 892..7680 (0x4037_c000..0x41e0_0000; the device tree takes the last 2 MiB,
/// slots 7680..8192), 6788 pages in 6 task slices of ~1131 pages (3 tasks per vCPU, 2 vCPUs).
/// The chosen slots lie in its middle half, so a growing guest Image cannot push them out, and
/// with 8 MiB resident of ~26.5 MiB every page is evicted after the write phase and read back
/// (at the latest in the final pass, after the first pass has cycled the whole working set).
const OC_BLKDEBUG_GUEST_MIB: u32 = 32;
/// Reads of these slots fail for good: each page aborts once (then the guest skips it).
const OC_BLKDEBUG_READ_SLOTS: &[u64] = &[3800, 4200, 4600];
/// Writes of these slots fail for good: the pages stay dirty and resident, nothing is lost.
const OC_BLKDEBUG_WRITE_SLOTS: &[u64] = &[4000, 4400];

/// Pages that cannot be read back (reads of their slots fail for good, writes succeed), with
/// APF off and on (issue 11 item 3): the guest must get one synchronous external abort per
/// such page, also when its first fault was asynchronous, and the run must end.
const OC_UNREADABLE: &str = "overcommit-unreadable";
const OC_UNREADABLE_APF: &str = "overcommit-unreadable-apf";
/// The unreadable slots, on the blkdebug case's machine (G = 32, R = 8, 2 vCPUs: 6 task slices
/// of the working set, each written in ascending order). Each lies in the first half of its
/// task's slice for any working set starting between slots 768 and 1280 (a 3 to 5 MiB Image), so
/// that it is likely on disk when the verify phase reads it; but the tasks do not progress
/// evenly, and a page that stays resident whenever it is touched is never read back (seen: 1 to
/// 3 of 3 such pages), so the rows check that the guest got an abort on exactly the pages the
/// hypervisor found unreadable, and on at least one.
const OC_UNREADABLE_SLOTS: &[u64] = &[2400, 3500, 4600, 5700, 6800];

/// The guest's working-set key (`asyncpf_guest::cmdline::OPT_WS_MIB`; the runner does not
/// depend on the guest crate).
const GUEST_OPT_WS_MIB: &str = "ws_mib";
/// The guest's hotplug rounds key (`asyncpf_guest::cmdline::OPT_ROUNDS`).
const GUEST_OPT_ROUNDS: &str = "rounds";
/// The guest's asynchronous-page-fault key (`asyncpf_guest::cmdline::OPT_APF`).
const GUEST_OPT_APF: &str = "apf";
/// The overcommit workload with asynchronous page faults on.
const OC_APF: &str = "overcommit-apf";

/// The paging cases. On 1 vCPU the working set is all free RAM of 64 MiB (≈ 58.5 MiB: 4.9x
/// R = 12, 9.7x R = 6; about 4-5 s each on a 2-core host). On 4 vCPUs: the exact run of the
/// memory-overcommit issue's "done when" (G = 256, R = 32, all free RAM: ≈ 250 MiB, 7.8x;
/// about 23 s) and a working set of exactly 8x R = 4 (about 3 s).
const PAGED_CASES: &[Paged] = &[
    Paged {
        name: OC_4X,
        vcpus: 1,
        guest_mib: 64,
        resident_mib: 12,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_4X,
        vcpus: 4,
        guest_mib: 256,
        resident_mib: 32,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_8X,
        vcpus: 1,
        guest_mib: 64,
        resident_mib: 6,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_8X,
        vcpus: 4,
        guest_mib: 48,
        resident_mib: 4,
        ws_mib: Some(32),
        read_errors: &[],
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_FITS,
        vcpus: 2,
        guest_mib: 32,
        resident_mib: 32,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_BLKDEBUG,
        vcpus: 2,
        guest_mib: OC_BLKDEBUG_GUEST_MIB,
        resident_mib: 8,
        ws_mib: None,
        read_errors: OC_BLKDEBUG_READ_SLOTS,
        write_errors: OC_BLKDEBUG_WRITE_SLOTS,
        apf: false,
    },
    Paged {
        name: OC_UNREADABLE,
        vcpus: 2,
        guest_mib: OC_BLKDEBUG_GUEST_MIB,
        resident_mib: 8,
        ws_mib: None,
        read_errors: OC_UNREADABLE_SLOTS,
        write_errors: &[],
        apf: false,
    },
    Paged {
        name: OC_UNREADABLE_APF,
        vcpus: 2,
        guest_mib: OC_BLKDEBUG_GUEST_MIB,
        resident_mib: 8,
        ws_mib: None,
        read_errors: OC_UNREADABLE_SLOTS,
        write_errors: &[],
        apf: true,
    },
    Paged {
        name: OC_APF,
        vcpus: 1,
        guest_mib: 64,
        resident_mib: 12,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: true,
    },
    Paged {
        name: OC_APF,
        vcpus: 4,
        guest_mib: 64,
        resident_mib: 12,
        ws_mib: None,
        read_errors: &[],
        write_errors: &[],
        apf: true,
    },
];

/// The `hotplug` scenario with a paging load and asynchronous page faults (issue 11 item 6): CPUs
/// go off with APF tokens outstanding, and come back. Under `-icount`, so that a CPU asked to go
/// off right after parking a task on a token does so within the token's page-in in guest time
/// (on a busy 2-core host a vCPU thread can be descheduled for longer than that).
#[derive(Debug, Clone, Copy)]
struct HotplugApf {
    vcpus: u32,
}

const HOTPLUG_APF: &str = "hotplug-apf";
const HOTPLUG_APF_CASES: &[HotplugApf] = &[HotplugApf { vcpus: 2 }, HotplugApf { vcpus: 4 }];
/// Rounds (`rounds=N`): each CPU goes off this many times. About a third of the offs find a token
/// still outstanding, so 12 rounds give at least 12 tries even on 2 vCPUs.
const HOTPLUG_APF_ROUNDS: i64 = 12;
const HOTPLUG_APF_GUEST_MIB: u32 = 64;
const HOTPLUG_APF_RESIDENT_MIB: u32 = 8;
/// The paging load's working set: 4 times the resident memory.
const HOTPLUG_APF_WS_MIB: u32 = 32;
const HOTPLUG_APF_LATENCY_US: u64 = 1000;
const HOTPLUG_APF_ICOUNT: u32 = 3;

/// A number in a report: a field (JSON pointer into the report), a constant, or derived from
/// the run's vCPU count.
#[derive(Debug, Clone, Copy)]
pub enum Operand {
    Field(&'static str),
    /// A constant times a field.
    Times(i64, &'static str),
    /// The sum of these fields.
    Plus(&'static [&'static str]),
    Int(i64),
    Vcpus,
    VcpusSquared,
    /// This many times the number of secondary vCPUs (`vcpus - 1`).
    SecondariesTimes(i64),
    /// This many times the run's resident memory (`/resident_mib`), in bytes.
    ResidentBytesTimes(i64),
    /// A field plus the number of vCPUs.
    FieldPlusVcpus(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Gt,
    Ge,
}

/// One check on a run's report.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// The field is the boolean `true`.
    IsTrue(&'static str),
    /// The field is a guest physical address (a `0x...` string or an integer) in one of these
    /// backing-disk slots (slot n: `GUEST_RAM_IPA + n * 4096`).
    InSlots(&'static str, &'static [u64]),
    /// Every element of the array has an address field in one of these slots, and no two
    /// elements are in the same slot.
    EachInSlotsOnce(&'static str, &'static str, &'static [u64]),
    /// The slots of the array's address fields are exactly the numbers of the second array (guest
    /// pages = disk slots), each once.
    SlotsAre(&'static str, &'static str, &'static str),
    /// Compares two numbers.
    Cmp(Operand, Op, Operand),
    /// The array has this many elements.
    Len(&'static str, Operand),
    /// Every element of the array has a numeric field satisfying the comparison.
    Each(&'static str, &'static str, Op, Operand),
    /// The sum of a numeric field over the array satisfies the comparison.
    Sum(&'static str, &'static str, Op, Operand),
    /// The hypervisor printed no more lines (`/console_lines/hyp`) than its fixed ones and what
    /// the diagnostics' rate limit allows for the counts in `/hyp/diagnostics`.
    HypLinesRateLimited,
}

/// A check and the labels of the cases it applies to (empty: every case). A case's labels are
/// its scenario's name, [`EXPECT_OK`] unless the guest is meant to fail, and for self-test and
/// paging cases their names and group labels (see `Case::labels`).
#[derive(Debug, Clone, Copy)]
pub struct Assertion {
    pub scenarios: &'static [&'static str],
    pub check: Check,
}

const ALL: &[&str] = &[];
/// The CPU model of a case: each has its known writeback granule (CTR_EL0.CWG).
const CPU_MAX: &str = "cpu-max";
const CPU_A64FX: &str = "cpu-a64fx";
/// Every case whose run must pass (all but the paging case with failing reads).
const EXPECT_OK: &str = "expect-ok";
use Check::*;
use Op::*;
use Operand::*;

/// THE ASSERTIONS of the QEMU integration tests. Paths are JSON pointers into the `--json`
/// report: `/guest/...` is the guest's `@result` object, `/hyp/...` the hypervisor's,
/// `/per_vcpu` the guest's per-vCPU array.
pub const ASSERTIONS: &[Assertion] = &[
    // Every case: the guest reported every vCPU, and the run passed unless meant to fail.
    Assertion { scenarios: &[EXPECT_OK], check: IsTrue("/ok") },
    Assertion { scenarios: ALL, check: Len("/per_vcpu", Vcpus) },
    // The granule the hypervisor decided once every CPU had reported it: `max` has 64-byte
    // lines, `a64fx` 256-byte ones (platform.md).
    Assertion { scenarios: &[CPU_MAX], check: Cmp(Field("/hyp/cwg_bytes"), Eq, Int(64)) },
    Assertion { scenarios: &[CPU_A64FX], check: Cmp(Field("/hyp/cwg_bytes"), Eq, Int(256)) },
    // smp: every vCPU ran tasks, and the timer preempted something.
    Assertion { scenarios: &["smp"], check: Each("/per_vcpu", "tasks_run", Gt, Int(0)) },
    Assertion { scenarios: &["smp"], check: Sum("/per_vcpu", "preemptions", Gt, Int(0)) },
    // ipi: every vCPU sent one IPI to every vCPU, and all arrived.
    Assertion { scenarios: &["ipi"], check: Cmp(Field("/guest/ipi_expected"), Eq, VcpusSquared) },
    Assertion { scenarios: &["ipi"], check: Cmp(Field("/guest/ipi_received"), Eq, Field("/guest/ipi_expected")) },
    // hostile: a flood of calls, unknown ones answered (never UNDEF under our hypervisor),
    // injected aborts and undefs all caught, and the vendor UID is ours.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/hvc_calls"), Ge, Int(10_000)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/unknown_calls"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/undef_caught"), Eq, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/aborts_caught"), Ge, Int(100)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_aborts"), Ge, Field("/guest/aborts_caught")) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/undefs_caught"), Ge, Int(100)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_undefs"), Ge, Field("/guest/undefs_caught")) },
    Assertion { scenarios: &["hostile"], check: IsTrue("/guest/hyp_uid_matches") },
    // hostile, aimed actions: every kind was made and answered, every answer the guest can
    // predict was the contract's, every abort and UNDEFINED the guest caught (in its calls,
    // MMIO, holes, system registers, its SDEI handler and its exception path) was one the
    // hypervisor injected, and the hypervisor's log stayed within its rate limit.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/unexpected"), Eq, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/call_other_exceptions"), Eq, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/hvc_calls"), Ge, Field("/guest/smccc_calls")) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_aborts"), Ge, Field("/guest/aborts_total")) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/hyp/injected_undefs"), Ge, Field("/guest/undefs_total")) },
    Assertion { scenarios: &["hostile"], check: HypLinesRateLimited },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/guest/actions/fuzz/calls"), Eq, Field("/guest/actions/fuzz/made")),
    },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/guest/actions/psci/calls"), Eq, Field("/guest/actions/psci/made")),
    },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/psci/made"), Gt, Int(0)) },
    // PSCI: AFFINITY_INFO of an online vCPU, CPU_ON answered ALREADY_ON, unknown MPIDRs.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/psci/answers/0"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/psci/answers/-4"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/psci/answers/-2"), Gt, Int(0)) },
    // SDEI: one to four calls per action, state changes that succeeded and were refused.
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/guest/actions/sdei/calls"), Ge, Field("/guest/actions/sdei/made")),
    },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/sdei/made"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/sdei/answers/0"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/sdei/answers/-3"), Gt, Int(0)) },
    // APF: three calls per session.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/apf/made"), Gt, Int(0)) },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/guest/actions/apf/calls"), Eq, Times(3, "/guest/actions/apf/made")),
    },
    // MMIO: emulated accesses completed, accesses without syndrome aborted, none ignored.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/mmio/made"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/mmio/completed"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/mmio/aborts"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/mmio/other_exceptions"), Eq, Int(0)) },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/hyp/mmio_accesses"), Ge, Field("/guest/actions/mmio/completed")),
    },
    // Faults inside handlers: the SDEI handler ran every time it was signalled and took its
    // faults; the exception path took nested ones.
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/sdei_handler_runs"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/sdei_handler_missed"), Eq, Int(0)) },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/hyp/sdei/dispatches"), Ge, Field("/guest/sdei_handler_runs")),
    },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/nested_faults"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/handler_fault/aborts"), Gt, Int(0)) },
    Assertion { scenarios: &["hostile"], check: Cmp(Field("/guest/actions/handler_fault/undefs"), Gt, Int(0)) },
    Assertion {
        scenarios: &["hostile"],
        check: Cmp(Field("/guest/actions/handler_fault/other_exceptions"), Eq, Int(0)),
    },
    // Guest RAM not paged: every APF call is NOT_SUPPORTED.
    Assertion {
        scenarios: &[HOSTILE_UNPAGED],
        check: Cmp(Field("/guest/actions/apf/answers/-1"), Eq, Field("/guest/actions/apf/calls")),
    },
    // Paged, with APF on and a working set twice the resident memory: sessions with hostile
    // records were accepted (some on record pages read back from the disk: slow enables),
    // garbage ring tails made ring errors, every CPU got its own record back, faults were
    // asynchronous meanwhile, and the working set lost nothing; the machine powered off.
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/exit_status"), Eq, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/check/mismatches"), Eq, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/check/words_checked"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/ws_aborts"), Eq, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/ws_bytes"), Ge, ResidentBytesTimes(2)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/mem/page_ins"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/apf/enabled_cpus"), Eq, Vcpus) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/hyp/async_faults"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/actions/apf/answers/0"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/actions/apf/answers/-3"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/slow_enables"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/garbage_tails"), Gt, Int(0)) },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/hyp/apf/ring_errors"), Gt, Int(0)) },
    Assertion {
        scenarios: &[HOSTILE_PAGED],
        check: Cmp(Field("/guest/apf_restored"), Eq, Field("/guest/actions/apf/made")),
    },
    Assertion { scenarios: &[HOSTILE_PAGED], check: Cmp(Field("/guest/apf_restore_failures"), Eq, Int(0)) },
    // apfabi: every check of the contract passed in the guest; the SDEI dispatcher entered the
    // guest's handler twice (a signal held while masked, then one delivered at once) and both
    // handlers completed; every SDEI call was one the dispatcher implements.
    Assertion { scenarios: &["apfabi"], check: Cmp(Field("/guest/checks_failed"), Eq, Int(0)) },
    Assertion { scenarios: &["apfabi"], check: Cmp(Field("/guest/sdei_handled"), Eq, Int(2)) },
    Assertion { scenarios: &[APF_UNPAGED], check: Cmp(Field("/hyp/sdei/dispatches"), Eq, Int(2)) },
    Assertion { scenarios: &[APF_UNPAGED], check: Cmp(Field("/hyp/sdei/completes"), Eq, Int(2)) },
    // Paged, page_not_present was dispatched too: every handler ended, the event-0 ones and
    // the declined page_not_present ones with COMPLETE, the accepted ones with
    // COMPLETE_AND_RESUME.
    Assertion {
        scenarios: &[APF_PAGED],
        check: Cmp(Field("/hyp/sdei/dispatches"), Eq, Plus(&["/hyp/sdei/completes", "/hyp/sdei/resumes"])),
    },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/hyp/sdei/resumes"), Eq, Field("/hyp/apf/accepted")) },
    Assertion {
        scenarios: &[APF_PAGED],
        check: Cmp(Field("/hyp/sdei/completes"), Eq, Plus(&["/guest/sdei_handled", "/hyp/apf/declined"])),
    },
    Assertion { scenarios: &["apfabi"], check: Cmp(Field("/hyp/sdei/not_supported"), Eq, Int(0)) },
    // Without paging the APF calls are NOT_SUPPORTED (28 checks, the SDEI ones and two APF).
    Assertion { scenarios: &[APF_UNPAGED], check: Cmp(Field("/guest/checks"), Eq, Int(28)) },
    Assertion { scenarios: &[APF_UNPAGED], check: Cmp(Field("/guest/apf_granule"), Eq, Int(0)) },
    // With paging: all 45 checks ran; the record is laid out by the hypervisor's largest
    // writeback granule; APF_DISABLE's one wake-all came through the ring and the PPI.
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/guest/checks"), Eq, Int(45)) },
    // Faults taken from EL0 were delivered asynchronously too (resumed at the EL0 IRQ vector).
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/guest/seen/apf_el0_faults_accepted"), Ge, Int(1)) },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/hyp/async_faults"), Ge, Int(1)) },
    Assertion { scenarios: &[APF_PAGED], check: IsTrue("/guest/apf_paged") },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/guest/apf_granule"), Eq, Field("/hyp/cwg_bytes")) },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/guest/wake_alls"), Eq, Int(1)) },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/hyp/apf/wake_alls"), Eq, Int(1)) },
    // One ring entry per accepted fault, plus the wake-all.
    Assertion {
        scenarios: &[APF_PAGED],
        check: Cmp(Field("/hyp/apf/posted"), Eq, Plus(&["/hyp/apf/accepted", "/hyp/apf/wake_alls"])),
    },
    Assertion { scenarios: &[APF_PAGED], check: Cmp(Field("/hyp/apf/ring_errors"), Eq, Int(0)) },
    // hotplug: every secondary vCPU turned off (PSCI CPU_OFF) and on again (CPU_ON) in each
    // round, came back and ran a task; PSCI answered every probe as docs/abi.md says.
    Assertion { scenarios: &["hotplug"], check: Cmp(Field("/guest/came_back"), Eq, SecondariesTimes(HOTPLUG_ROUNDS)) },
    Assertion { scenarios: &["hotplug"], check: Cmp(Field("/guest/cpu_off_calls"), Eq, Field("/guest/came_back")) },
    Assertion { scenarios: &["hotplug"], check: Cmp(Field("/guest/cpu_on_calls"), Eq, Field("/guest/came_back")) },
    Assertion { scenarios: &["hotplug"], check: Cmp(Field("/guest/stranded"), Eq, Int(0)) },
    Assertion { scenarios: &["hotplug"], check: Cmp(Field("/guest/affinity_unexpected"), Eq, Int(0)) },
    Assertion { scenarios: &["hotplug"], check: IsTrue("/guest/already_on_ok") },
    Assertion { scenarios: &["hotplug"], check: IsTrue("/guest/affinity_on_ok") },
    Assertion { scenarios: &["hotplug"], check: IsTrue("/guest/repeat_on_ok") },
    Assertion { scenarios: &["hotplug"], check: IsTrue("/guest/invalid_answers_ok") },
    Assertion { scenarios: &["hotplug"], check: IsTrue("/guest/load_ok") },
    // hotplug with a paging load and APF: the same answers as the plain hotplug rows, over
    // HOTPLUG_APF_ROUNDS rounds; the paging load read every word back right.
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/hotplug_rounds"), Eq, Int(HOTPLUG_APF_ROUNDS)) },
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/guest/came_back"), Eq, SecondariesTimes(HOTPLUG_APF_ROUNDS)),
    },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/cpu_off_calls"), Eq, Field("/guest/came_back")) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/cpu_on_calls"), Eq, Field("/guest/came_back")) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/stranded"), Eq, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/affinity_unexpected"), Eq, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: IsTrue("/guest/probes_ok") },
    Assertion { scenarios: &[HOTPLUG_APF], check: IsTrue("/guest/paging/ok") },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/paging/mismatches"), Eq, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/paging/aborts"), Eq, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/paging/words_checked"), Gt, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/mem/page_ins"), Gt, Int(0)) },
    // APF was on on every CPU, faults were asynchronous, and every CPU that came back enabled
    // it again (CPU_OFF reset its SDEI state and ended its session).
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/apf/enabled_cpus"), Eq, Vcpus) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/async_faults"), Gt, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/apf/reenabled"), Eq, Field("/guest/came_back")) },
    // Every CPU_OFF ended an APF session, some with tokens outstanding (dropped: their pages
    // came in, nothing was posted for them); nothing was ever posted to an offline vCPU.
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/hyp/apf/power_offs"), Eq, Field("/guest/cpu_off_calls")),
    },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/apf/power_offs_with_tokens"), Ge, Int(1)) },
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/hyp/apf/power_off_tokens"), Ge, Field("/hyp/apf/power_offs_with_tokens")),
    },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/apf/posted_offline"), Eq, Int(0)) },
    // Each session ended with its WAKE_ALL in the record (room: the guest empties its ring
    // right before CPU_OFF), and the guest found every one when it drained the record of the
    // CPU that went off.
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/apf/wake_alls"), Eq, Field("/hyp/apf/power_offs")) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/apf/wake_alls_lost"), Eq, Int(0)) },
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/guest/apf/offline_wake_alls"), Eq, Field("/hyp/apf/power_offs")),
    },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/apf/wake_alls"), Eq, Field("/hyp/apf/wake_alls")) },
    // Every accepted token got its page_ready or was covered by a wake-all: the ring entries
    // are the page_readys plus the wake-alls, and the tokens a CPU_OFF dropped make up the rest.
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(
            Plus(&["/hyp/apf/accepted", "/hyp/apf/wake_alls"]),
            Eq,
            Plus(&["/hyp/apf/posted", "/hyp/apf/power_off_tokens"]),
        ),
    },
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/hyp/apf/dispatched"), Eq, Plus(&["/hyp/apf/accepted", "/hyp/apf/declined"])),
    },
    // The guest drained what was posted: its counters are read while it writes its report,
    // which can itself take an asynchronous page fault (the report's buffer and stack were
    // paged out), so they may trail the hypervisor's final ones by that fault's page_ready,
    // at most one per vCPU (seen: 7660 of 7661 on 2 vCPUs).
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(Field("/hyp/apf/posted"), Ge, Field("/guest/apf/page_ready_tokens")),
    },
    Assertion {
        scenarios: &[HOTPLUG_APF],
        check: Cmp(FieldPlusVcpus("/guest/apf/page_ready_tokens"), Ge, Field("/hyp/apf/posted")),
    },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/hyp/apf/ring_errors"), Eq, Int(0)) },
    Assertion { scenarios: &[HOTPLUG_APF], check: Cmp(Field("/guest/apf/ring_errors"), Eq, Int(0)) },
    // overcommit: every word of the working set written, read back and checked, twice, with
    // no mismatch and no abort (the guest's own `ok` also requires 2 full passes).
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/check/mismatches"), Eq, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/aborts"), Eq, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/check/words_checked"), Gt, Int(0)) },
    Assertion { scenarios: &["overcommit"], check: Cmp(Field("/guest/ws_bytes"), Gt, Int(0)) },
    // Every backing-store self-test: every write completed, nothing read back wrong, no request
    // reported before the latency model allows, and at least a device queue's worth in flight.
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/latency_us"), Eq, Field("/backing_latency_us")),
    },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/write/pages"), Eq, Field("/backing_selftest/pages")),
    },
    Assertion { scenarios: &[SELFTEST], check: Cmp(Field("/backing_selftest/mismatched_words"), Eq, Int(0)) },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/lat_min_us"), Ge, Field("/backing_selftest/latency_us")),
    },
    Assertion {
        scenarios: &[SELFTEST],
        check: Cmp(Field("/backing_selftest/max_in_flight"), Ge, Int(DEVICE_QUEUE_DEPTH)),
    },
    // Without injected errors: every page verified.
    Assertion { scenarios: &[SELFTEST_CLEAN], check: IsTrue("/backing_selftest/ok") },
    Assertion {
        scenarios: &[SELFTEST_CLEAN],
        check: Cmp(Field("/backing_selftest/verified"), Eq, Field("/backing_selftest/pages")),
    },
    Assertion { scenarios: &[SELFTEST_CLEAN], check: Cmp(Field("/backing_selftest/read/failed"), Eq, Int(0)) },
    // With L = 200 µs early completions were held and released by the EL2 timer.
    Assertion { scenarios: &[SELFTEST_LATENCY], check: Cmp(Field("/backing_selftest/latency_us"), Eq, Int(200)) },
    Assertion { scenarios: &[SELFTEST_LATENCY], check: Cmp(Field("/backing_selftest/timer_irqs"), Gt, Int(0)) },
    // blkdebug: exactly the injected requests failed, were reported by slot, the rest verified
    // (and the VM still ran: `/ok` above).
    Assertion { scenarios: &[SELFTEST_ERRORS], check: Cmp(Field("/backing_selftest/write/failed"), Eq, Int(1)) },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/failed_writes/0"), Eq, Int(BLKDEBUG_WRITE_SLOT as i64)),
    },
    Assertion { scenarios: &[SELFTEST_ERRORS], check: Cmp(Field("/backing_selftest/read/failed"), Eq, Int(1)) },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/failed_reads/0"), Eq, Int(BLKDEBUG_READ_SLOT as i64)),
    },
    Assertion {
        scenarios: &[SELFTEST_ERRORS],
        check: Cmp(Field("/backing_selftest/verified"), Eq, Int(BLKDEBUG_VERIFIABLE)),
    },
    // Every paging case (`overcommit` with --resident-mib): the hypervisor paged with the
    // options given, nothing read back wrong, first touches were zero-filled (the pager ran), and
    // every abort the guest caught was one the pager injected.
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/mem/resident_mib"), Eq, Field("/resident_mib")) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/mem/guest_mib"), Eq, Field("/guest_mib")) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/mem/backing_latency_us"), Eq, Field("/backing_latency_us")) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/check/mismatches"), Eq, Int(0)) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/check/words_checked"), Gt, Int(0)) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/mem/zero_fills"), Gt, Int(0)) },
    Assertion { scenarios: &[PAGED], check: Cmp(Field("/mem/aborts"), Ge, Field("/guest/aborts")) },
    // Without injected errors: no I/O error, no abort, and every word verified in both full passes.
    Assertion { scenarios: &[PAGED_CLEAN], check: Cmp(Field("/mem/io_errors"), Eq, Int(0)) },
    Assertion { scenarios: &[PAGED_CLEAN], check: Cmp(Field("/mem/failed_reads"), Eq, Int(0)) },
    Assertion { scenarios: &[PAGED_CLEAN], check: Cmp(Field("/mem/aborts"), Eq, Int(0)) },
    Assertion {
        scenarios: &[PAGED_CLEAN],
        check: Cmp(Times(8, "/check/words_checked"), Ge, Times(2, "/guest/ws_bytes")),
    },
    // Overcommitted (R < G, working set ≥ 2R): pages went out dirty and came back. Each full
    // verify pass reads back at least ws_pages - R pages, so the two give at least ws_pages.
    Assertion { scenarios: &[OVERCOMMITTED], check: Cmp(Field("/mem/page_outs"), Gt, Int(0)) },
    Assertion { scenarios: &[OVERCOMMITTED], check: Cmp(Field("/mem/dirty_writebacks"), Gt, Int(0)) },
    Assertion { scenarios: &[OVERCOMMITTED], check: Cmp(Field("/mem/page_ins"), Ge, Field("/guest/ws_pages")) },
    // The working set really is 4x (8x) the resident memory.
    Assertion { scenarios: &[OC_4X], check: Cmp(Field("/guest/ws_bytes"), Ge, ResidentBytesTimes(4)) },
    Assertion { scenarios: &[OC_8X], check: Cmp(Field("/guest/ws_bytes"), Ge, ResidentBytesTimes(8)) },
    // R = G: nothing was evicted, so nothing went to or came from the disk.
    // Asynchronous page faults: every guest CPU enabled them, faults were delivered as
    // page_not_present, the guest accepted exactly the tokens the hypervisor counts, every
    // accepted token got its page_ready (none lost) and the guest drained all of them.
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/guest/apf/enabled_cpus"), Eq, Vcpus) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/hyp/async_faults"), Gt, Int(0)) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/guest/apf/accepted"), Eq, Field("/hyp/apf/accepted")) },
    // One ring entry per accepted token (no wake-all in this run); every delivery was
    // accepted or declined. (`completed` may exceed `accepted`: a page can come back while its
    // page_not_present is being delivered and then be declined.)
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/hyp/apf/posted"), Eq, Field("/hyp/apf/accepted")) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/hyp/apf/wake_alls"), Eq, Int(0)) },
    Assertion {
        scenarios: &[OC_APF],
        check: Cmp(Field("/hyp/apf/dispatched"), Eq, Plus(&["/hyp/apf/accepted", "/hyp/apf/declined"])),
    },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/guest/apf/page_ready_tokens"), Eq, Field("/hyp/apf/posted")) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/hyp/apf/ring_errors"), Eq, Int(0)) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/guest/apf/ring_errors"), Eq, Int(0)) },
    Assertion { scenarios: &[OC_APF], check: Cmp(Field("/guest/ws_bytes"), Ge, ResidentBytesTimes(4)) },
    Assertion { scenarios: &[OC_FITS], check: Cmp(Field("/mem/page_ins"), Eq, Int(0)) },
    Assertion { scenarios: &[OC_FITS], check: Cmp(Field("/mem/page_outs"), Eq, Int(0)) },
    Assertion { scenarios: &[OC_FITS], check: Cmp(Field("/mem/dirty_writebacks"), Eq, Int(0)) },
    // blkdebug: reads of the chosen slots failed for good (after retries) and the guest caught
    // the aborts, at most one per such page (a page is not always read back: one that stays
    // resident whenever it is touched never is), the first on one of them; write-backs failed too
    // (io_errors counts every failed request: each failed read attempt is a failed_read or a
    // retry, so more errors than that are failed writes), and lost nothing (no mismatch above);
    // the machine powered off.
    Assertion { scenarios: &[OC_BLKDEBUG], check: Cmp(Field("/exit_status"), Eq, Int(0)) },
    Assertion { scenarios: &[OC_BLKDEBUG], check: Cmp(Field("/mem/failed_reads"), Ge, Int(1)) },
    Assertion { scenarios: &[OC_BLKDEBUG], check: Cmp(Field("/mem/retries"), Ge, Field("/mem/failed_reads")) },
    // Whether an injected write error is hit depends on which dirty pages the clock evicts
    // (seen in most runs, not all: a fresh-clone CI run had none); the host property tests of
    // core::overcommit cover failed write-backs deterministically. Here: every error counted,
    // each as what it was (a failed write, or a failed read attempt: retried or for good).
    Assertion {
        scenarios: &[OC_BLKDEBUG],
        check: Cmp(Field("/mem/io_errors"), Eq, Plus(&["/mem/failed_reads", "/mem/retries", "/mem/failed_writes"])),
    },
    Assertion { scenarios: &[OC_BLKDEBUG], check: Cmp(Field("/guest/aborts"), Ge, Int(1)) },
    Assertion {
        scenarios: &[OC_BLKDEBUG],
        check: Cmp(Int(OC_BLKDEBUG_READ_SLOTS.len() as i64), Ge, Field("/guest/aborts")),
    },
    Assertion { scenarios: &[OC_BLKDEBUG], check: InSlots("/guest/abort_addresses/0/addr", OC_BLKDEBUG_READ_SLOTS) },
    // Unreadable pages, APF off and on: the machine powered off (no hang, no timeout); the guest
    // caught exactly one abort on each unreadable page and none anywhere else (every abort the
    // hypervisor injected); the only I/O errors were the injected reads, each retried, and
    // nothing else was read back wrong (the paged /check row).
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/exit_status"), Eq, Int(0)) },
    // (A page that stays resident whenever it is touched is never read back; every page whose
    // read failed for good, and only those, must be reported, once, to the guest.)
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/guest/aborts"), Ge, Int(1)) },
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/guest/aborts"), Eq, Field("/mem/unreadable_pages")) },
    Assertion { scenarios: &[OC_UNREADABLE], check: Len("/guest/abort_addresses", Field("/guest/aborts")) },
    Assertion { scenarios: &[OC_UNREADABLE], check: SlotsAre("/guest/abort_addresses", "addr", "/mem/unreadable") },
    Assertion {
        scenarios: &[OC_UNREADABLE],
        check: EachInSlotsOnce("/guest/abort_addresses", "addr", OC_UNREADABLE_SLOTS),
    },
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/hyp/injected_aborts"), Eq, Field("/guest/aborts")) },
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/mem/failed_reads"), Ge, Field("/guest/aborts")) },
    Assertion {
        scenarios: &[OC_UNREADABLE],
        check: Cmp(Field("/mem/io_errors"), Eq, Plus(&["/mem/failed_reads", "/mem/retries"])),
    },
    Assertion { scenarios: &[OC_UNREADABLE], check: Cmp(Field("/mem/retries"), Ge, Field("/mem/failed_reads")) },
    // With APF on: faults were asynchronous, and a fault on a page known to be unreadable was
    // resolved synchronously (where the abort came from); every accepted token, those whose
    // page failed included, got its page_ready, and the guest took them all.
    Assertion { scenarios: &[OC_UNREADABLE_APF], check: Cmp(Field("/guest/apf/enabled_cpus"), Eq, Vcpus) },
    Assertion { scenarios: &[OC_UNREADABLE_APF], check: Cmp(Field("/hyp/async_faults"), Gt, Int(0)) },
    Assertion { scenarios: &[OC_UNREADABLE_APF], check: Cmp(Field("/hyp/apf/sync_reasons/unreadable"), Ge, Int(1)) },
    Assertion { scenarios: &[OC_UNREADABLE_APF], check: Cmp(Field("/hyp/apf/posted"), Eq, Field("/hyp/apf/accepted")) },
    Assertion {
        scenarios: &[OC_UNREADABLE_APF],
        check: Cmp(Field("/guest/apf/page_ready_tokens"), Eq, Field("/hyp/apf/posted")),
    },
];

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Field(p) => write!(f, "{p}"),
            Times(k, p) => write!(f, "{k}*{p}"),
            Plus(fields) => write!(f, "{}", fields.join("+")),
            Int(i) => write!(f, "{i}"),
            Vcpus => write!(f, "vcpus"),
            VcpusSquared => write!(f, "vcpus*vcpus"),
            SecondariesTimes(k) => write!(f, "{k}*(vcpus-1)"),
            ResidentBytesTimes(k) => write!(f, "{k}*/resident_mib MiB"),
            FieldPlusVcpus(p) => write!(f, "{p}+vcpus"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Eq => "==",
            Gt => ">",
            Ge => ">=",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IsTrue(p) => write!(f, "{p} == true"),
            InSlots(p, slots) => write!(f, "{p} in disk slots {slots:?}"),
            EachInSlotsOnce(p, k, slots) => write!(f, "every {p}[*].{k} in disk slots {slots:?}, once each"),
            SlotsAre(p, k, q) => write!(f, "the slots of {p}[*].{k} are {q}, once each"),
            Cmp(a, op, b) => write!(f, "{a} {op} {b}"),
            Len(p, n) => write!(f, "len({p}) == {n}"),
            Each(p, k, op, b) => write!(f, "every {p}[*].{k} {op} {b}"),
            Sum(p, k, op, b) => write!(f, "sum({p}[*].{k}) {op} {b}"),
            HypLinesRateLimited => write!(f, "/console_lines/hyp <= the rate limit's bound"),
        }
    }
}

fn as_int(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from))
}

/// The integer at `p`.
fn int_field(report: &Value, p: &str) -> Result<i128, String> {
    match report.pointer(p) {
        None => Err(format!("{p} is missing")),
        Some(v) => as_int(v).ok_or_else(|| format!("{p} is {v}, not an integer")),
    }
}

/// An address at `p`: an integer, or a string as the guest prints them (`0x...`).
fn address_field(report: &Value, p: &str) -> Result<u64, String> {
    let v = report.pointer(p).ok_or_else(|| format!("{p} is missing"))?;
    let parsed = match v {
        Value::String(s) => s.strip_prefix("0x").and_then(|hex| u64::from_str_radix(hex, 16).ok()),
        other => other.as_u64(),
    };
    parsed.ok_or_else(|| format!("{p} is {v}, not an address"))
}

impl Operand {
    fn eval(&self, report: &Value, vcpus: u32) -> Result<i128, String> {
        match *self {
            Field(p) => int_field(report, p),
            Times(k, p) => Ok(k as i128 * int_field(report, p)?),
            Plus(fields) => fields.iter().map(|p| int_field(report, p)).sum(),
            Int(i) => Ok(i as i128),
            Vcpus => Ok(vcpus as i128),
            VcpusSquared => Ok(vcpus as i128 * vcpus as i128),
            SecondariesTimes(k) => Ok(k as i128 * (vcpus as i128 - 1)),
            ResidentBytesTimes(k) => Ok(k as i128 * (int_field(report, "/resident_mib")? << 20)),
            FieldPlusVcpus(p) => Ok(int_field(report, p)? + vcpus as i128),
        }
    }
}

impl Op {
    fn holds(&self, a: i128, b: i128) -> bool {
        match self {
            Eq => a == b,
            Gt => a > b,
            Ge => a >= b,
        }
    }
}

/// The disk slot of the address at `p`, if it is one of `slots`.
fn in_slots(report: &Value, p: &str, slots: &[u64]) -> Result<u64, String> {
    let addr = address_field(report, p)?;
    let slot = addr.checked_sub(GUEST_RAM_IPA).map(|offset| offset / SLOT_BYTES);
    match slot {
        Some(slot) if slots.contains(&slot) => Ok(slot),
        Some(slot) => Err(format!("{p} = {addr:#x} is in slot {slot}")),
        None => Err(format!("{p} = {addr:#x} is below guest RAM")),
    }
}

fn array<'a>(report: &'a Value, p: &str) -> Result<&'a Vec<Value>, String> {
    match report.pointer(p) {
        None => Err(format!("{p} is missing")),
        Some(v) => v.as_array().ok_or_else(|| format!("{p} is {v}, not an array")),
    }
}

impl Check {
    /// Ok, or why the check failed (with the values seen).
    pub fn eval(&self, report: &Value, vcpus: u32) -> Result<(), String> {
        match *self {
            IsTrue(p) => match report.pointer(p) {
                Some(Value::Bool(true)) => Ok(()),
                Some(v) => Err(format!("{p} is {v}")),
                None => Err(format!("{p} is missing")),
            },
            InSlots(p, slots) => in_slots(report, p, slots).map(|_| ()),
            EachInSlotsOnce(p, k, slots) => {
                let mut seen = Vec::new();
                for i in 0..array(report, p)?.len() {
                    let slot = in_slots(report, &format!("{p}/{i}/{k}"), slots)?;
                    if seen.contains(&slot) {
                        return Err(format!("{p}/{i}/{k} is in slot {slot} again"));
                    }
                    seen.push(slot);
                }
                Ok(())
            }
            SlotsAre(p, k, q) => {
                let mut want: Vec<u64> = array(report, q)?
                    .iter()
                    .map(|v| v.as_u64().ok_or_else(|| format!("{q} has {v}, not a page number")))
                    .collect::<Result<_, _>>()?;
                let mut got = Vec::new();
                for i in 0..array(report, p)?.len() {
                    let addr = address_field(report, &format!("{p}/{i}/{k}"))?;
                    let slot =
                        addr.checked_sub(GUEST_RAM_IPA).ok_or_else(|| format!("{p}/{i}/{k} is below guest RAM"))?;
                    got.push(slot / SLOT_BYTES);
                }
                got.sort_unstable();
                want.sort_unstable();
                (got == want).then_some(()).ok_or_else(|| format!("slots {got:?}, {q} {want:?}"))
            }
            Cmp(a, op, b) => {
                let (x, y) = (a.eval(report, vcpus)?, b.eval(report, vcpus)?);
                op.holds(x, y).then_some(()).ok_or_else(|| format!("{a} = {x}, {b} = {y}"))
            }
            Len(p, n) => {
                let (len, want) = (array(report, p)?.len() as i128, n.eval(report, vcpus)?);
                (len == want).then_some(()).ok_or_else(|| format!("{p} has {len} entries, want {want}"))
            }
            Each(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    let v = item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                    if !op.holds(v, want) {
                        return Err(format!("{p}/{i}/{k} = {v}"));
                    }
                }
                Ok(())
            }
            Sum(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                let mut sum = 0i128;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    sum += item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                }
                op.holds(sum, want).then_some(()).ok_or_else(|| format!("the sum is {sum}"))
            }
            HypLinesRateLimited => {
                let lines = int_field(report, "/console_lines/hyp")?;
                let counts = report
                    .pointer("/hyp/diagnostics")
                    .and_then(Value::as_object)
                    .ok_or("/hyp/diagnostics is missing")?;
                let allowed: u64 = counts.values().filter_map(Value::as_u64).map(crate::soak::printed).sum();
                let bound = i128::from(crate::soak::HYP_FIXED_LINES + allowed);
                (lines <= bound).then_some(()).ok_or_else(|| format!("{lines} lines, the bound is {bound}"))
            }
        }
    }
}

/// Every assertion for a case with these labels (see [`Assertion`]) that fails on `report`, as
/// readable lines.
pub fn failed_assertions(labels: &[&str], vcpus: u32, report: &Value) -> Vec<String> {
    ASSERTIONS
        .iter()
        .filter(|a| a.scenarios.is_empty() || a.scenarios.iter().any(|s| labels.contains(s)))
        .filter_map(|a| a.check.eval(report, vcpus).err().map(|why| format!("{}: {why}", a.check)))
        .collect()
}

/// One line of the final table.
struct Row {
    name: String,
    seconds: f64,
    passed: bool,
    note: String,
}

/// The guest RAM of the matrix and self-test cases.
const MATRIX_GUEST_MIB: u32 = 128;

/// A QEMU integration case.
#[derive(Debug, Clone)]
struct Case {
    scenario: &'static str,
    vcpus: u32,
    cpu: &'static str,
    guest_mib: u32,
    selftest: Option<Selftest>,
    paged: Option<Paged>,
    /// `--resident-mib` for a scenario other than the overcommit workload (`apfabi`, `hostile`).
    resident_mib: Option<u32>,
    /// `--guest-cmdline` for a case that is not a paging case.
    guest_cmdline: Option<&'static str>,
    hotplug_apf: Option<HotplugApf>,
}

impl Case {
    fn matrix(scenario: &'static str, vcpus: u32, cpu: &'static str) -> Case {
        Case {
            scenario,
            vcpus,
            cpu,
            guest_mib: MATRIX_GUEST_MIB,
            selftest: None,
            paged: None,
            resident_mib: None,
            guest_cmdline: None,
            hotplug_apf: None,
        }
    }

    fn name(&self) -> String {
        match (&self.selftest, &self.paged) {
            // `selftest-l0` runs as qemu/selftest/l0/v2 (the scenario is always smp).
            (Some(t), _) => format!("qemu/{}/v{}", t.name.replacen('-', "/", 1), self.vcpus),
            // `overcommit-4x` runs as qemu/overcommit/4x/v1 and /v4.
            (None, Some(p)) => format!("qemu/{}/v{}", p.name.replacen('-', "/", 1), self.vcpus),
            (None, None) if self.hotplug_apf.is_some() => format!("qemu/{}/apf/v{}", self.scenario, self.vcpus),
            (None, None) if self.resident_mib.is_some() => {
                format!("qemu/{}/paged/v{}/{}", self.scenario, self.vcpus, self.cpu)
            }
            (None, None) => format!("qemu/{}/v{}/{}", self.scenario, self.vcpus, self.cpu),
        }
    }

    /// What selects its assertions. A case meant to fail (reads that fail for good) gets
    /// neither [`EXPECT_OK`] nor its scenario's label, whose rows describe a passing run.
    fn labels(&self) -> Vec<&'static str> {
        let mut labels = Vec::new();
        if self.hotplug_apf.is_some() {
            // Its own rows: more rounds than the plain hotplug rows count.
            return vec![EXPECT_OK, HOTPLUG_APF];
        }
        if !self.paged.is_some_and(|p| p.expects_aborts()) {
            labels.extend([self.scenario, EXPECT_OK]);
        }
        if let Some(t) = &self.selftest {
            labels.extend([SELFTEST, t.name]);
            if t.read_errors.is_empty() && t.write_errors.is_empty() {
                labels.push(SELFTEST_CLEAN);
            }
        }
        if let Some(p) = &self.paged {
            labels.extend([PAGED, p.name]);
            if p.name == OC_UNREADABLE_APF {
                labels.push(OC_UNREADABLE);
            }
            if p.read_errors.is_empty() && p.write_errors.is_empty() {
                labels.push(PAGED_CLEAN);
            }
            if p.overcommits() {
                labels.push(OVERCOMMITTED);
            }
        }
        if self.scenario == "apfabi" {
            labels.push(if self.resident_mib.is_some() { APF_PAGED } else { APF_UNPAGED });
        }
        if self.scenario == "hostile" {
            labels.push(if self.resident_mib.is_some() { HOSTILE_PAGED } else { HOSTILE_UNPAGED });
        }
        labels.push(match self.cpu {
            "a64fx" => CPU_A64FX,
            _ => CPU_MAX,
        });
        labels
    }

    /// The run: quiet, seed 1, P = N.
    fn plan(&self, json: Option<PathBuf>, timeout_secs: u64) -> RunPlan {
        RunPlan {
            scenario: self.scenario.into(),
            vcpus: self.vcpus,
            pcpus: self.vcpus,
            cpu: self.cpu.into(),
            guest_mib: self.guest_mib,
            seed: 1,
            json,
            guest_kernel: None,
            guest_cmdline: self
                .guest_cmdline
                .map(String::from)
                .or_else(|| {
                    self.hotplug_apf.map(|_| {
                        format!(
                            "{GUEST_OPT_APF}=on {APF_ALWAYS} apf_pin=off {GUEST_OPT_WS_MIB}={HOTPLUG_APF_WS_MIB} \
                         {GUEST_OPT_ROUNDS}={HOTPLUG_APF_ROUNDS}"
                        )
                    })
                })
                .or_else(|| {
                    self.paged.and_then(|p| {
                        let words: Vec<String> = p
                            .ws_mib
                            .map(|m| format!("{GUEST_OPT_WS_MIB}={m}"))
                            .into_iter()
                            .chain(p.apf.then(|| format!("{GUEST_OPT_APF}=on {APF_ALWAYS}")))
                            .collect();
                        (!words.is_empty()).then(|| words.join(" "))
                    })
                }),
            timeout_secs,
            icount: self.hotplug_apf.map(|_| HOTPLUG_APF_ICOUNT),
            bare: false,
            quiet: true,
            backing: self.backing(),
            resident_mib: self
                .paged
                .map(|p| p.resident_mib)
                .or(self.resident_mib)
                .or(self.hotplug_apf.map(|_| HOTPLUG_APF_RESIDENT_MIB)),
            foreign: None,
            initrd: None,
            kernel_kind: Default::default(),
            host_load: 0,
        }
    }

    fn backing(&self) -> BackingPlan {
        match (&self.selftest, &self.paged) {
            (Some(t), _) => BackingPlan {
                latency_us: t.latency_us,
                selftest_pages: t.pages,
                read_errors: t.read_errors.to_vec(),
                write_errors: t.write_errors.to_vec(),
            },
            (None, Some(p)) => BackingPlan {
                read_errors: p.read_errors.to_vec(),
                write_errors: p.write_errors.to_vec(),
                ..BackingPlan::default()
            },
            (None, None) if self.hotplug_apf.is_some() => {
                BackingPlan { latency_us: HOTPLUG_APF_LATENCY_US, ..BackingPlan::default() }
            }
            (None, None) => BackingPlan::default(),
        }
    }
}

/// Guest option of the cases that test the asynchronous protocol's paths (paging with
/// `apf=on`, `hotplug` with APF): every fault is delivered whatever the hypervisor's host-timed
/// measurements say (ALWAYS_DELIVER, docs/abi.md §8.1), so the paths run on a loaded host too.
const APF_ALWAYS: &str = "apf_always=on";

/// Every QEMU case: the matrix, the self-tests, the paging cases.
fn all_cases() -> Vec<Case> {
    let matrix = SCENARIOS.iter().flat_map(|&scenario| {
        VCPU_COUNTS.iter().flat_map(move |&vcpus| CPU_MODELS.iter().map(move |&cpu| Case::matrix(scenario, vcpus, cpu)))
    });
    let selftests = SELFTESTS.iter().map(|&t| Case { selftest: Some(t), ..Case::matrix("smp", SELFTEST_VCPUS, "max") });
    let paged = PAGED_CASES.iter().map(|&p| Case {
        guest_mib: p.guest_mib,
        paged: Some(p),
        ..Case::matrix("overcommit", p.vcpus, "max")
    });
    let apf_paged = CPU_MODELS.iter().map(|&cpu| Case {
        guest_mib: APF_ABI_GUEST_MIB,
        resident_mib: Some(APF_ABI_RESIDENT_MIB),
        ..Case::matrix("apfabi", APF_ABI_VCPUS, cpu)
    });
    let hostile_paged = Case {
        guest_mib: HOSTILE_PAGED_GUEST_MIB,
        resident_mib: Some(HOSTILE_PAGED_RESIDENT_MIB),
        guest_cmdline: Some(HOSTILE_PAGED_CMDLINE),
        ..Case::matrix("hostile", HOSTILE_PAGED_VCPUS, "max")
    };
    let hotplug_apf = HOTPLUG_APF_CASES.iter().map(|&h| Case {
        guest_mib: HOTPLUG_APF_GUEST_MIB,
        hotplug_apf: Some(h),
        ..Case::matrix("hotplug", h.vcpus, "max")
    });
    matrix.chain(selftests).chain(paged).chain(apf_paged).chain([hostile_paged]).chain(hotplug_apf).collect()
}

/// The paged `hostile` case: 4 vCPUs, G = 64 MiB overcommitted onto R = 12 MiB, APF on, a
/// 24 MiB working set (2x R) rewritten and verified during 8,000 hostile calls.
const HOSTILE_PAGED_VCPUS: u32 = 4;
const HOSTILE_PAGED_GUEST_MIB: u32 = 64;
const HOSTILE_PAGED_RESIDENT_MIB: u32 = 12;
const HOSTILE_PAGED_CMDLINE: &str = "calls=8000 apf=on apf_always=on ws_mib=24";
/// `hostile` labels: with and without paged RAM.
const HOSTILE_PAGED: &str = "hostile-paged";
const HOSTILE_UNPAGED: &str = "hostile-unpaged";

/// The `apfabi` cases with paged RAM (where the APF calls are answered): 2 vCPUs, on each CPU
/// model (`a64fx` has a 256-byte writeback granule, so its records are laid out by 256).
const APF_ABI_VCPUS: u32 = 2;
const APF_ABI_GUEST_MIB: u32 = 64;
const APF_ABI_RESIDENT_MIB: u32 = 16;
/// `apfabi` labels: with and without paged RAM.
const APF_PAGED: &str = "apf-paged";
const APF_UNPAGED: &str = "apf-unpaged";

const HOST_TESTS: &str = "host-tests";
const LINT: &str = "lint";
const BUILD: &str = "build";
const NEGATIVE: &str = "negative/not-an-image";
const LINUX: &str = "linux/boot";
/// Linux with a BusyBox userspace on 4 vCPUs at 4x and 8x overcommit (`cargo xtask linux`).
const LINUX_WORKLOAD: &str = "linux/workload";
const REPEATABLE: &str = "qemu/repeatable";
const BENCH_SMOKE: &str = "bench/smoke";

/// The repeatability case: a small overcommitted `overcommit` workload with asynchronous page
/// faults (so both page_ready deliveries and synchronous waits), 1 vCPU, under `-icount`, run
/// once on a quiet host and once beside [`REPEATABLE_HOST_LOAD`] busy processes.
const REPEATABLE_GUEST_MIB: u32 = 32;
const REPEATABLE_RESIDENT_MIB: u32 = 8;
const REPEATABLE_LATENCY_US: u64 = 1000;
const REPEATABLE_ICOUNT: u32 = 3;
const REPEATABLE_HOST_LOAD: u32 = 2;
/// Virtual times of the two runs may differ by this fraction of the larger (issue 9: 1 %).
const REPEATABLE_TOLERANCE: f64 = 0.01;

/// A small overcommitted `overcommit` run on 1 vCPU under `-icount` (the repeatability and
/// never-slower cases): G = 32 MiB on R = 8 MiB, latency `latency_us`, APF on or off.
fn small_overcommit_plan(
    root: &Path,
    name: &str,
    apf: bool,
    latency_us: u64,
    host_load: u32,
    timeout_secs: u64,
) -> RunPlan {
    RunPlan {
        scenario: "overcommit".into(),
        vcpus: 1,
        pcpus: 1,
        cpu: "max".into(),
        guest_mib: REPEATABLE_GUEST_MIB,
        seed: 1,
        json: Some(root.join("target").join("xtask").join("results").join(format!("{name}.json"))),
        guest_kernel: None,
        guest_cmdline: Some(format!("{GUEST_OPT_APF}={}", if apf { "on" } else { "off" })),
        timeout_secs,
        icount: Some(REPEATABLE_ICOUNT),
        bare: false,
        quiet: true,
        backing: BackingPlan { latency_us, ..BackingPlan::default() },
        resident_mib: Some(REPEATABLE_RESIDENT_MIB),
        foreign: None,
        initrd: None,
        kernel_kind: Default::default(),
        host_load,
    }
}

/// The never-slower case (issue 9): at latency 0 the store is faster than parking a task, so
/// the park-or-wait rule (`asyncpf_core::apf::cost`) must keep APF from costing time: the
/// asynchronous run's virtual elapsed time, in all and in the fault-bound phases, at most
/// [`NEVER_SLOWER_TOLERANCE`] times the synchronous run's. Without the rule the main job's
/// configuration at L = 0 took 0.88x (6,845 vs 6,052 ms).
const NEVER_SLOWER: &str = "qemu/never-slower";
const NEVER_SLOWER_TOLERANCE: f64 = 1.02;

fn never_slower(root: &Path, tc: &Toolchain, timeout_secs: u64) -> Result<String> {
    let mut reports = Vec::new();
    for apf in [false, true] {
        let name = format!("qemu-never-slower-apf-{}", if apf { "on" } else { "off" });
        let report = run::run(root, tc, &small_overcommit_plan(root, &name, apf, 0, 0, timeout_secs), true)?;
        if let Some(f) = &report.failure {
            anyhow::bail!("the run with apf={apf} failed: {f}");
        }
        let value = serde_json::to_value(&report)?;
        let failures = failed_assertions(&["overcommit", EXPECT_OK, OVERCOMMITTED], 1, &value);
        if !failures.is_empty() {
            anyhow::bail!("the run with apf={apf}: {}", failures.join("; "));
        }
        reports.push(value);
    }
    let (sync, asynchronous) = (&reports[0], &reports[1]);
    let ms = |r: &Value, phases: &[&str]| -> Option<u64> {
        phases.iter().map(|p| r.pointer(&format!("/guest/phases_ms/{p}")).and_then(Value::as_u64)).sum()
    };
    let elapsed = |r: &Value| r.pointer("/guest/elapsed_ms").and_then(Value::as_u64);
    let fault_bound = ["verify", "mix", "final_verify"];
    let waited = asynchronous.pointer("/hyp/apf/sync_reasons/cheaper_to_wait").and_then(Value::as_u64).unwrap_or(0);
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    for (what, s, a) in [
        ("elapsed", elapsed(sync), elapsed(asynchronous)),
        ("fault-bound phases", ms(sync, &fault_bound), ms(asynchronous, &fault_bound)),
    ] {
        match (s, a) {
            (Some(s), Some(a)) => {
                figures.push(format!("{what} {a} / {s} ms"));
                if a as f64 > NEVER_SLOWER_TOLERANCE * s as f64 {
                    problems.push(format!("{what}: APF took {a} ms, more than {NEVER_SLOWER_TOLERANCE} x {s} ms"));
                }
            }
            _ => problems.push(format!("{what}: missing ({s:?}, {a:?})")),
        }
    }
    if waited == 0 {
        problems.push("no fault was kept synchronous as cheaper_to_wait: the rule did not run".into());
    }
    let summary = format!("{} (async / sync, L = 0); {waited} faults cheaper_to_wait", figures.join(", "));
    if !problems.is_empty() {
        anyhow::bail!("{} ({summary})", problems.join("; "));
    }
    Ok(summary)
}

/// Runs the repeatability case: the guest's virtual elapsed time, in all and per phase, must be
/// the same within [`REPEATABLE_TOLERANCE`] with and without load on the host.
fn repeatable(root: &Path, tc: &Toolchain, timeout_secs: u64) -> Result<String> {
    let mut reports = Vec::new();
    for host_load in [0, REPEATABLE_HOST_LOAD] {
        let name = format!("qemu-repeatable-load{host_load}");
        let plan = small_overcommit_plan(root, &name, true, REPEATABLE_LATENCY_US, host_load, timeout_secs);
        let report = run::run(root, tc, &plan, true)?;
        let value = serde_json::to_value(&report)?;
        if let Some(f) = &report.failure {
            anyhow::bail!("the run with --host-load {host_load} failed: {f}");
        }
        let failures = failed_assertions(&["overcommit", EXPECT_OK, OVERCOMMITTED], 1, &value);
        if !failures.is_empty() {
            anyhow::bail!("the run with --host-load {host_load}: {}", failures.join("; "));
        }
        reports.push(value);
    }
    let (quiet, loaded) = (&reports[0], &reports[1]);
    let differences = repeatability_failures(quiet, loaded, REPEATABLE_TOLERANCE);
    let held = |r: &Value| r.pointer("/mem/device_late_freezes").and_then(Value::as_u64).unwrap_or(0);
    let wall = |r: &Value| r.get("wall_seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let summary = format!(
        "elapsed {} / {} ms; held for a late disk {} / {} times; wall {:.1} / {:.1} s (quiet / --host-load {})",
        quiet.pointer("/guest/elapsed_ms").unwrap_or(&Value::Null),
        loaded.pointer("/guest/elapsed_ms").unwrap_or(&Value::Null),
        held(quiet),
        held(loaded),
        wall(quiet),
        wall(loaded),
        REPEATABLE_HOST_LOAD
    );
    if !differences.is_empty() {
        anyhow::bail!("virtual times differ with host load: {} ({summary})", differences.join("; "));
    }
    Ok(summary)
}

/// Where the guest's virtual times of two runs (`guest.elapsed_ms` and every phase of
/// `guest.phases_ms`) differ by more than `tolerance` of the larger, or are missing.
fn repeatability_failures(a: &Value, b: &Value, tolerance: f64) -> Vec<String> {
    let mut fields = vec![("elapsed_ms".to_string(), "/guest/elapsed_ms".to_string())];
    match a.pointer("/guest/phases_ms").and_then(Value::as_object) {
        Some(phases) if !phases.is_empty() => {
            fields.extend(phases.keys().map(|k| (format!("phase {k}"), format!("/guest/phases_ms/{k}"))))
        }
        _ => return vec!["the first run reports no guest.phases_ms".into()],
    }
    let mut failures = Vec::new();
    for (name, pointer) in fields {
        match (a.pointer(&pointer).and_then(Value::as_u64), b.pointer(&pointer).and_then(Value::as_u64)) {
            (Some(x), Some(y)) => {
                let larger = x.max(y) as f64;
                if (x.abs_diff(y)) as f64 > tolerance * larger {
                    failures.push(format!("{name}: {x} vs {y} ms (more than {:.0} %)", tolerance * 100.0));
                }
            }
            (x, y) => failures.push(format!("{name}: {x:?} vs {y:?}")),
        }
    }
    failures
}

/// Runs the suite; true when everything selected passed.
pub fn run_suite(root: &Path, tc: &Toolchain, args: &TestArgs) -> Result<bool> {
    let suite_start = Instant::now();
    let selected = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let cases: Vec<Case> = all_cases().into_iter().filter(|c| selected(&c.name())).collect();
    if args.list {
        for name in test_names(args.filter.as_deref()) {
            println!("{name}");
        }
        return Ok(true);
    }
    println!("test: {} ({} QEMU cases, {} jobs)", tc.qemu_version, cases.len(), args.jobs.max(1));
    let mut rows = Vec::new();

    if selected(HOST_TESTS) {
        rows.push(timed(HOST_TESTS, || host_tests(root)));
    }
    if selected(LINT) {
        rows.push(timed(LINT, || lint(root)));
    }
    let mut built = true;
    // The probe and Linux tests need the hypervisor (and the probes) built too.
    let probe_tests = crate::probes::TESTS.iter().filter(|(name, _)| selected(name));
    if !cases.is_empty() || selected(BUILD) || probe_tests.clone().next().is_some() || selected(LINUX) {
        let row = timed(BUILD, || build::build(root, build::Select::ALL).map(|()| String::new()));
        built = row.passed;
        rows.push(row);
    }
    if built {
        rows.extend(run_cases(root, tc, &cases, args));
    } else {
        for c in &cases {
            rows.push(Row { name: c.name(), seconds: 0.0, passed: false, note: "not run: the build failed".into() });
        }
    }
    if selected(NEGATIVE) {
        rows.push(timed(NEGATIVE, || negative_not_an_image(root)));
    }
    if built {
        for (name, test) in probe_tests {
            rows.push(timed(name, || test(root, tc)));
        }
    }
    if selected(REPEATABLE) && built {
        rows.push(timed(REPEATABLE, || repeatable(root, tc, args.timeout)));
    }
    if selected(NEVER_SLOWER) && built {
        rows.push(timed(NEVER_SLOWER, || never_slower(root, tc, args.timeout)));
    }
    if selected(BENCH_SMOKE) && built {
        rows.push(timed(BENCH_SMOKE, || crate::sweep::smoke(root, tc, args.timeout)));
    }
    if selected(LINUX) && built {
        rows.push(timed(LINUX, || crate::linux::boot_test(root)));
    }
    if selected(LINUX_WORKLOAD) && built {
        rows.push(timed(LINUX_WORKLOAD, || crate::userspace::workload_test(root, tc)));
    }

    println!("\n{:<28} {:>8}  result", "test", "seconds");
    for r in &rows {
        let verdict = if r.passed { "pass" } else { "FAIL" };
        let note = if r.note.is_empty() { String::new() } else { format!("  {}", r.note) };
        println!("{:<28} {:>8.1}  {verdict}{note}", r.name, r.seconds);
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!("{} passed, {failed} failed, {:.0} s in all", rows.len() - failed, suite_start.elapsed().as_secs_f64());
    Ok(failed == 0)
}

/// The names of the tests [`run_suite`] runs with this `--filter`, in the order of its table.
fn test_names(filter: Option<&str>) -> Vec<String> {
    let selected = |name: &str| filter.is_none_or(|f| name.contains(f));
    let cases: Vec<String> = all_cases().iter().map(Case::name).filter(|n| selected(n)).collect();
    let probes: Vec<String> =
        crate::probes::TESTS.iter().map(|(name, _)| name.to_string()).filter(|n| selected(n)).collect();
    let mut names: Vec<String> = [HOST_TESTS, LINT].into_iter().filter(|n| selected(n)).map(String::from).collect();
    if !cases.is_empty() || selected(BUILD) || !probes.is_empty() || selected(LINUX) {
        names.push(BUILD.into());
    }
    names.extend(cases);
    names.extend([NEGATIVE].into_iter().filter(|n| selected(n)).map(String::from));
    names.extend(probes);
    let late = [REPEATABLE, NEVER_SLOWER, BENCH_SMOKE, LINUX, LINUX_WORKLOAD];
    names.extend(late.into_iter().filter(|n| selected(n)).map(String::from));
    names
}

/// Runs `f`, printing a progress line; an error becomes a failed row with its message.
fn timed(name: &str, f: impl FnOnce() -> Result<String>) -> Row {
    println!("test: {name} ...");
    let start = Instant::now();
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    let (passed, note) = match result {
        Ok(note) => (true, note),
        Err(e) => {
            println!("test: {name} FAILED: {e:#}");
            (false, first_line(&format!("{e:#}")))
        }
    };
    println!("test: {name} {} ({seconds:.1} s)", if passed { "ok" } else { "FAILED" });
    Row { name: name.into(), seconds, passed, note }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.len() > 100 {
        format!("{}...", &line[..line.char_indices().take_while(|(i, _)| *i < 100).last().map_or(0, |(i, _)| i)])
    } else {
        line.to_string()
    }
}

/// The host test runs: `cargo test` on the default members (contract, core, xtask), and the
/// guest kernel's pure library (`guest/src/lib.rs`; its binary only builds for aarch64).
const HOST_TEST_RUNS: [&[&str]; 2] = [&["test"], &["test", "-p", "asyncpf-guest", "--lib"]];

/// Every host test run with the outer cargo.
fn host_tests(root: &Path) -> Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (mut passed, mut binaries) = (0, 0);
    for args in HOST_TEST_RUNS {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", PathBuf::from(&cargo).display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summaries: Vec<&str> = stdout.lines().filter(|l| l.starts_with("test result:")).collect();
        if !out.status.success() {
            let all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
            let tail = &all[all.len().saturating_sub(60)..];
            println!("---- cargo {} output (last {} lines) ----\n{}", args.join(" "), tail.len(), tail.join("\n"));
            anyhow::bail!("cargo {} failed ({})", args.join(" "), out.status);
        }
        passed += summaries
            .iter()
            .filter_map(|l| l.split(". ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .sum::<usize>();
        binaries += summaries.len();
    }
    Ok(format!("{passed} tests in {binaries} binaries"))
}

/// Clippy with `-D warnings` on every crate and target: the host crates (contract, core, xtask,
/// the guest's library) with rustup's clippy, the bare-metal crates with Debian's, for the
/// targets and with `-Zbuild-std` as the build uses them.
fn lint(root: &Path) -> Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host: [&[&str]; 2] = [
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        &["clippy", "-p", "asyncpf-guest", "--lib", "--tests", "--", "-D", "warnings"],
    ];
    let mut commands: Vec<(String, Command)> = host
        .iter()
        .map(|args| {
            let mut cmd = Command::new(&cargo);
            cmd.args(*args).current_dir(root).stdin(Stdio::null());
            (format!("cargo {}", args.join(" ")), cmd)
        })
        .collect();
    for (package, target) in build::cross_packages() {
        commands.push((format!("clippy {package} ({target})"), build::cross_clippy_command(root, package, target)));
    }
    let clippy_runs = commands.len();
    // The host crates' documentation builds without a warning (broken links, stray HTML).
    let mut doc = Command::new(&cargo);
    doc.args([
        "doc",
        "--no-deps",
        "-p",
        "asyncpf-contract",
        "-p",
        "asyncpf-core",
        "-p",
        "asyncpf-guest",
        "-p",
        "xtask",
    ])
    .env("RUSTDOCFLAGS", "-D warnings")
    .current_dir(root)
    .stdin(Stdio::null());
    commands.push(("cargo doc (RUSTDOCFLAGS=-D warnings)".into(), doc));
    for (what, mut cmd) in commands {
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {what} (is clippy installed? `rustup component add clippy`)"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim_start().starts_with("Compiling")).collect();
            println!("---- {what} ----\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
            anyhow::bail!("{what} failed: fix the lints above");
        }
    }
    Ok(format!("{clippy_runs} clippy runs and cargo doc, -D warnings, all clean"))
}

/// Runs the QEMU cases on `args.jobs` threads.
fn run_cases(root: &Path, tc: &Toolchain, cases: &[Case], args: &TestArgs) -> Vec<Row> {
    let queue = Mutex::new(cases.iter().cloned().collect::<VecDeque<_>>());
    let rows = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..args.jobs.max(1).min(cases.len().max(1)) {
            s.spawn(|| loop {
                let Some(case) = queue.lock().unwrap().pop_front() else { break };
                let row = run_case(root, tc, &case, args.timeout);
                rows.lock().unwrap().push((case.name(), row));
            });
        }
    });
    // Report in the matrix order, not in completion order.
    let mut done = rows.into_inner().unwrap();
    cases.iter().filter_map(|c| done.iter().position(|(n, _)| *n == c.name()).map(|i| done.swap_remove(i).1)).collect()
}

fn run_case(root: &Path, tc: &Toolchain, case: &Case, timeout: u64) -> Row {
    let name = case.name();
    println!("test: {name} ...");
    let json = root.join("target").join("xtask").join("results").join(format!("{}.json", name.replace('/', "-")));
    let plan = case.plan(Some(json), timeout);
    let start = Instant::now();
    let (passed, note) = match run::run(root, tc, &plan, true) {
        Err(e) => (false, format!("{e:#}")),
        Ok(report) => {
            let value = serde_json::to_value(&report).unwrap_or(Value::Null);
            let failures = failed_assertions(&case.labels(), case.vcpus, &value);
            if report.ok && !failures.is_empty() {
                // `run` printed nothing for a passing run: show what the guest said.
                let mut out = format!("---- {name}: console tail ----\n");
                for l in &report.console_tail {
                    out += l;
                    out.push('\n');
                }
                print!("{out}");
            }
            for f in &failures {
                println!("test: {name}: assertion failed: {f}");
            }
            let note = match (&report.failure, failures.first()) {
                // A case meant to fail passed its own checks.
                (Some(f), None) => format!("as expected: {f}"),
                (Some(f), _) => f.clone(),
                (None, Some(f)) => format!("{f} ({} assertions failed)", failures.len()),
                (None, None) => String::new(),
            };
            (failures.is_empty(), note)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "test: {name} {} ({seconds:.1} s){}",
        if passed { "ok" } else { "FAILED" },
        if passed { String::new() } else { format!(": {note}") }
    );
    Row { name, seconds, passed, note: first_line(&note) }
}

/// `cargo xtask run --guest-kernel <text file>` must fail before QEMU starts, clearly.
/// Runs this very binary so the whole command-line path is covered.
fn negative_not_an_image(root: &Path) -> Result<String> {
    let dir = run::temp_dir(root);
    fs::create_dir_all(&dir)?;
    let bogus = dir.join(format!("not-an-image-{}.txt", std::process::id()));
    fs::write(&bogus, "This is a text file, not an arm64 kernel Image.\n".repeat(4))?;
    let json = dir.join(format!("not-an-image-{}.json", std::process::id()));
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let out = Command::new(&exe)
        .args(["run", "--no-build", "--timeout", "10", "--guest-kernel"])
        .arg(&bogus)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let _ = fs::remove_file(&bogus);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Option<Value> = fs::read(&json).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let _ = fs::remove_file(&json);
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("it exited with status 0".to_string());
    }
    if stdout.contains(run::QEMU_START_MARKER) {
        problems.push("QEMU was started".to_string());
    }
    if !stderr.contains("is not a valid arm64 kernel Image") {
        problems.push(format!("the error does not say the file is not an Image: {:?}", stderr.trim()));
    }
    match report.as_ref().and_then(|r| r.get("failure")).and_then(Value::as_str) {
        Some(f) if f.contains("not a valid arm64 kernel Image") => {}
        other => problems.push(format!("--json report has no matching failure ({other:?})")),
    }
    if !problems.is_empty() {
        anyhow::bail!("{}\nstdout: {stdout}\nstderr: {stderr}", problems.join("; "));
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hostile_report() -> Value {
        let mut r = json!({
            "ok": true,
            "per_vcpu": [{"tasks_run": 1, "preemptions": 0}, {"tasks_run": 2, "preemptions": 3}],
            "guest": {"undef_caught": 0, "aborts_caught": 100, "undefs_caught": 150, "hyp_uid_matches": true,
                      "ipi_expected": 4, "ipi_received": 4,
                      "check": {"words_checked": 1024, "mismatches": 0}, "aborts": 0, "ws_bytes": 4096,
                      "came_back": 3, "cpu_off_calls": 3, "cpu_on_calls": 3, "stranded": 0,
                      "affinity_unexpected": 0, "already_on_ok": true, "affinity_on_ok": true,
                      "repeat_on_ok": true, "invalid_answers_ok": true, "load_ok": true,
                      "checks": 45, "checks_failed": 0, "sdei_handled": 2, "apf_paged": true, "apf_granule": 64,
                      "wake_alls": 1, "seen": {"apf_el0_faults_accepted": 2}},
            "hyp": {"hvc_calls": 10_000u64, "unknown_calls": 7, "injected_aborts": 100, "injected_undefs": 151,
                    "cwg_bytes": 64, "async_faults": 900,
                    "sdei": {"dispatches": 2, "completes": 2, "resumes": 0, "not_supported": 0},
                    "apf": {"wake_alls": 1, "posted": 1, "ring_errors": 0, "accepted": 0, "declined": 0}},
        });
        // The hostile scenario's aimed actions (an unpaged run, in small).
        let kind = |made: u64, calls: u64, answers: Value, completed: u64, aborts: u64, undefs: u64| {
            json!({"made": made, "calls": calls, "answers": answers, "unexpected": 0, "completed": completed,
                   "aborts": aborts, "alignment_faults": 0, "undefs": undefs, "other_exceptions": 0})
        };
        let guest = r["guest"].as_object_mut().unwrap();
        for (k, v) in [
            ("unexpected", json!(0)),
            ("call_other_exceptions", json!(0)),
            ("smccc_calls", json!(9_000)),
            ("aborts_total", json!(100)),
            ("undefs_total", json!(151)),
            ("sdei_handler_runs", json!(2)),
            ("sdei_handler_missed", json!(0)),
            ("nested_faults", json!(1)),
            (
                "actions",
                json!({
                    "fuzz": kind(30, 30, json!({"-1": 28, "0": 2}), 0, 0, 0),
                    "psci": kind(10, 10, json!({"0": 3, "-2": 3, "-4": 2, "-9": 2}), 0, 0, 0),
                    "sdei": kind(20, 41, json!({"0": 10, "-2": 20, "-3": 11}), 0, 0, 0),
                    "apf": kind(10, 30, json!({"-1": 30}), 0, 0, 0),
                    "mmio": kind(27, 0, json!({}), 20, 7, 0),
                    "handler_fault": kind(3, 2, json!({"0": 2}), 1, 3, 3),
                }),
            ),
        ] {
            guest.insert(k.into(), v);
        }
        r["hyp"]["mmio_accesses"] = json!(20);
        r["hyp"]["diagnostics"] = json!({"apf_ring_error": 0, "io_error": 0});
        r["console_lines"] = json!({"hyp": 4, "guest": 6, "other": 0});
        r
    }

    #[test]
    fn hostile_assertions() {
        let r = hostile_report();
        assert_eq!(failed_assertions(&["hostile", HOSTILE_UNPAGED], 2, &r), Vec::<String>::new());
        // A wrong answer, an abort the hypervisor did not inject, a log beyond the rate limit,
        // an SDEI handler that did not run, an APF call answered although RAM is not paged.
        let mut bad = r.clone();
        bad["guest"]["unexpected"] = json!(1);
        bad["guest"]["aborts_total"] = json!(101);
        bad["console_lines"]["hyp"] = json!(5);
        bad["guest"]["sdei_handler_missed"] = json!(1);
        bad["guest"]["actions"]["apf"]["answers"]["-1"] = json!(29);
        let f = failed_assertions(&["hostile", HOSTILE_UNPAGED], 2, &bad);
        for want in [
            "/guest/unexpected == 0",
            "/hyp/injected_aborts >= /guest/aborts_total",
            "/console_lines/hyp <= the rate limit's bound: 5 lines, the bound is 4",
            "/guest/sdei_handler_missed == 0",
            "/guest/actions/apf/answers/-1 == /guest/actions/apf/calls",
        ] {
            assert!(f.iter().any(|l| l.starts_with(want)), "{want}: {f:?}");
        }
        assert_eq!(f.len(), 5, "{f:?}");
        // 86 ring errors allow 11 more lines.
        let mut flood = r.clone();
        flood["hyp"]["diagnostics"]["apf_ring_error"] = json!(86);
        flood["console_lines"]["hyp"] = json!(15);
        assert_eq!(failed_assertions(&["hostile"], 2, &flood), Vec::<String>::new());

        // The paged case: its command line, labels and plan.
        let c = all_cases().into_iter().find(|c| c.scenario == "hostile" && c.resident_mib.is_some()).unwrap();
        assert_eq!(c.name(), "qemu/hostile/paged/v4/max");
        assert_eq!(c.labels(), ["hostile", EXPECT_OK, HOSTILE_PAGED, CPU_MAX]);
        let plan = c.plan(None, 60);
        assert_eq!(plan.guest_cmdline.as_deref(), Some(HOSTILE_PAGED_CMDLINE));
        assert_eq!((plan.resident_mib, plan.guest_mib, plan.vcpus), (Some(12), 64, 4));
        let mut paged = r.clone();
        paged["per_vcpu"] = json!([{"tasks_run": 1}, {"tasks_run": 1}, {"tasks_run": 1}, {"tasks_run": 1}]);
        paged["exit_status"] = json!(0);
        paged["resident_mib"] = json!(12);
        paged["check"] = json!({"words_checked": 1 << 20, "mismatches": 0});
        paged["mem"] = json!({"page_ins": 100});
        paged["hyp"]["async_faults"] = json!(50);
        paged["hyp"]["apf"]["ring_errors"] = json!(3);
        paged["hyp"]["diagnostics"]["apf_ring_error"] = json!(3);
        paged["console_lines"]["hyp"] = json!(7);
        for (k, v) in [
            ("ws_bytes", json!(24u64 << 20)),
            ("ws_aborts", json!(0)),
            ("slow_enables", json!(4)),
            ("garbage_tails", json!(5)),
            ("apf_restored", json!(10)),
            ("apf_restore_failures", json!(0)),
            ("apf", json!({"enabled_cpus": 4})),
        ] {
            paged["guest"][k] = v;
        }
        paged["guest"]["actions"]["apf"]["answers"] = json!({"0": 20, "-3": 10});
        assert_eq!(failed_assertions(&c.labels(), 4, &paged), Vec::<String>::new());
        let mut lost = paged.clone();
        lost["check"]["mismatches"] = json!(1);
        lost["exit_status"] = json!(101);
        lost["guest"]["apf_restored"] = json!(9);
        let f = failed_assertions(&c.labels(), 4, &lost);
        assert_eq!(f.len(), 3, "{f:?}");
    }

    #[test]
    fn apf_abi_assertions() {
        let r = hostile_report();
        assert_eq!(failed_assertions(&["apfabi", APF_PAGED], 2, &r), Vec::<String>::new());
        // The unpaged cases expect the 28 SDEI-and-NOT_SUPPORTED checks only.
        let f = failed_assertions(&["apfabi", APF_UNPAGED], 2, &r);
        assert_eq!(f.len(), 2, "{f:?}");
        // A granule that is not the hypervisor's (a hard-coded 64 on a64fx), a lost wake-all.
        let mut r = hostile_report();
        r["hyp"]["cwg_bytes"] = json!(256);
        r["guest"]["wake_alls"] = json!(0);
        let f = failed_assertions(&[APF_PAGED], 2, &r);
        assert!(f.iter().any(|l| l.contains("/guest/apf_granule == /hyp/cwg_bytes")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/wake_alls == 1")), "{f:?}");
        let names: Vec<String> = all_cases().iter().filter(|c| c.scenario == "apfabi").map(Case::name).collect();
        assert!(names.contains(&"qemu/apfabi/paged/v2/a64fx".to_string()), "{names:?}");
        assert!(names.contains(&"qemu/apfabi/v1/max".to_string()), "{names:?}");
    }

    #[test]
    fn assertions_pass_on_a_good_report() {
        let r = hostile_report();
        for scenario in SCENARIOS {
            assert_eq!(failed_assertions(&[scenario], 2, &r), Vec::<String>::new(), "{scenario}");
        }
    }

    #[test]
    fn hotplug_counts_scale_with_secondaries() {
        let r = hostile_report();
        assert_eq!(failed_assertions(&["hotplug"], 2, &r), Vec::<String>::new());
        let f = failed_assertions(&["hotplug"], 4, &r);
        assert!(
            f.contains(&"/guest/came_back == 3*(vcpus-1): /guest/came_back = 3, 3*(vcpus-1) = 9".to_string()),
            "{f:?}"
        );
    }

    #[test]
    fn assertions_report_what_is_wrong() {
        let mut r = hostile_report();
        r["hyp"]["injected_aborts"] = json!(99);
        r["guest"]["hyp_uid_matches"] = json!(false);
        r["per_vcpu"][0]["tasks_run"] = json!(0);
        r["guest"].as_object_mut().unwrap().remove("undefs_caught");
        let f = failed_assertions(&["hostile"], 2, &r);
        assert!(f.iter().any(|l| l == "/hyp/injected_aborts >= /guest/aborts_caught: /hyp/injected_aborts = 99, /guest/aborts_caught = 100"), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/hyp_uid_matches is false")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/undefs_caught is missing")), "{f:?}");
        let f = failed_assertions(&["smp"], 2, &r);
        assert_eq!(f, ["every /per_vcpu[*].tasks_run > 0: /per_vcpu/0/tasks_run = 0"]);
        let f = failed_assertions(&["ipi"], 4, &r);
        assert_eq!(f.len(), 2, "wrong vcpu count and ipi_expected != 16: {f:?}");
        let f = failed_assertions(&["smp", EXPECT_OK], 2, &json!({"ok": false, "per_vcpu": null}));
        assert!(f[0].contains("/ok is false") && f[1].contains("not an array"), "{f:?}");
    }

    #[test]
    fn selftest_assertions() {
        let report = json!({
            "ok": true, "per_vcpu": [{"tasks_run": 1, "preemptions": 1}, {"tasks_run": 1, "preemptions": 0}],
            "backing_latency_us": 200,
            "backing_selftest": {"ok": true, "pages": 1024, "latency_us": 200, "verified": 1024, "mismatched_words": 0,
                "lat_min_us": 201, "max_in_flight": 32, "timer_irqs": 40, "failed_writes": [], "failed_reads": [],
                "write": {"pages": 1024, "failed": 0}, "read": {"pages": 1024, "failed": 0}},
        });
        let labels = ["smp", EXPECT_OK, SELFTEST, SELFTEST_CLEAN, SELFTEST_LATENCY];
        assert_eq!(failed_assertions(&labels, 2, &report), Vec::<String>::new());
        let mut early = report.clone();
        early["backing_selftest"]["lat_min_us"] = json!(199);
        let f = failed_assertions(&labels, 2, &early);
        assert_eq!(f, ["/backing_selftest/lat_min_us >= /backing_selftest/latency_us: /backing_selftest/lat_min_us = 199, /backing_selftest/latency_us = 200"]);
        let f = failed_assertions(&["smp", SELFTEST, SELFTEST_ERRORS], 2, &report);
        assert!(f.iter().any(|l| l.contains("/backing_selftest/failed_reads/0 is missing")), "{f:?}");
    }

    #[test]
    fn matrix_names() {
        let c = Case::matrix("ipi", 4, "a64fx");
        assert_eq!(c.name(), "qemu/ipi/v4/a64fx");
        assert_eq!(c.labels(), ["ipi", EXPECT_OK, CPU_A64FX]);
        let c = Case { selftest: Some(SELFTESTS[2]), ..Case::matrix("smp", 2, "max") };
        assert_eq!(c.name(), "qemu/selftest/blkdebug/v2");
        assert_eq!(c.labels(), ["smp", EXPECT_OK, SELFTEST, SELFTEST_ERRORS, CPU_MAX]);
        assert_eq!(c.backing().write_errors, [BLKDEBUG_WRITE_SLOT]);
        assert_eq!(first_line("a\nb"), "a");
        assert_eq!(first_line(&"x".repeat(200)).len(), 102);
    }

    #[test]
    fn test_names_are_unique_and_filtered() {
        let all = test_names(None);
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert_eq!(all[..3], [HOST_TESTS, LINT, BUILD]);
        assert_eq!(test_names(Some("lint")), [LINT]);
        assert_eq!(test_names(Some("qemu/ipi/v4")), [BUILD, "qemu/ipi/v4/max", "qemu/ipi/v4/a64fx"]);
        assert!(test_names(Some("no such test")).is_empty());
    }

    fn vcpus_text(vcpus: u32) -> &'static str {
        ["0", "1", "2", "3", "4"][vcpus as usize]
    }

    fn case(name: &str) -> Vec<Case> {
        all_cases().into_iter().filter(|c| c.paged.is_some_and(|p| p.name == name)).collect()
    }

    #[test]
    fn paged_cases() {
        let names: Vec<String> = all_cases().iter().filter(|c| c.paged.is_some()).map(Case::name).collect();
        assert_eq!(
            names,
            [
                "qemu/overcommit/4x/v1",
                "qemu/overcommit/4x/v4",
                "qemu/overcommit/8x/v1",
                "qemu/overcommit/8x/v4",
                "qemu/overcommit/fits/v2",
                "qemu/overcommit/blkdebug/v2",
                "qemu/overcommit/unreadable/v2",
                "qemu/overcommit/unreadable-apf/v2",
                "qemu/overcommit/apf/v1",
                "qemu/overcommit/apf/v4"
            ]
        );
        // The unpaged overcommit matrix is still there, and the names do not collide.
        let all: Vec<String> = all_cases().iter().map(Case::name).collect();
        assert!(all.iter().any(|n| n == "qemu/overcommit/v4/a64fx"));
        assert_eq!(all.len(), all.iter().collect::<std::collections::HashSet<_>>().len());

        let c = &case(OC_4X)[1];
        assert_eq!((c.scenario, c.vcpus, c.cpu, c.guest_mib), ("overcommit", 4, "max", 256));
        assert_eq!(c.plan(None, 1).resident_mib, Some(32));
        assert_eq!(c.plan(None, 1).guest_cmdline, None);
        assert_eq!(case(OC_8X)[1].plan(None, 1).guest_cmdline.as_deref(), Some("ws_mib=32"));
        assert_eq!(c.labels(), ["overcommit", EXPECT_OK, PAGED, OC_4X, PAGED_CLEAN, OVERCOMMITTED, CPU_MAX]);
        assert_eq!(c.backing(), BackingPlan::default());
        assert_eq!(case(OC_FITS)[0].labels(), ["overcommit", EXPECT_OK, PAGED, OC_FITS, PAGED_CLEAN, CPU_MAX]);
        let c = &case(OC_BLKDEBUG)[0];
        assert_eq!(c.labels(), [PAGED, OC_BLKDEBUG, OVERCOMMITTED, CPU_MAX], "meant to fail: no expect-ok");
        assert_eq!(c.backing().read_errors, OC_BLKDEBUG_READ_SLOTS);
        assert_eq!(c.backing().write_errors, OC_BLKDEBUG_WRITE_SLOTS);
        assert_eq!(c.backing().latency_us, asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US);
    }

    /// The working set of a paging case in MiB, at least: `ws_mib`, or what the default layout
    /// gets in G MiB of guest RAM: all but the Image (< 4 MiB with its text offset) and the
    /// generation table below, the device tree (2 MiB) above.
    fn min_ws_mib(p: &Paged) -> u32 {
        p.ws_mib.unwrap_or(p.guest_mib - 6)
    }

    #[test]
    fn paged_table_is_consistent() {
        for p in PAGED_CASES {
            // The suite's plan is what `cargo xtask run` makes of the same options.
            let c = all_cases().into_iter().find(|c| c.paged.is_some_and(|q| (q.name, q.vcpus) == (p.name, p.vcpus)));
            let c = c.unwrap();
            let mut args = vec!["--scenario", "overcommit", "--vcpus", vcpus_text(c.vcpus), "--quiet"];
            let (g, r) = (p.guest_mib.to_string(), p.resident_mib.to_string());
            args.extend(["--guest-mib", &g, "--resident-mib", &r, "--timeout", "180"]);
            let words: Vec<String> = p
                .ws_mib
                .map(|m| format!("ws_mib={m}"))
                .into_iter()
                .chain(p.apf.then(|| "apf=on apf_always=on".into()))
                .collect();
            let cmdline = words.join(" ");
            if !cmdline.is_empty() {
                args.extend(["--guest-cmdline", &cmdline]);
            }
            let join = |slots: &[u64]| slots.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let (reads, writes) = (join(p.read_errors), join(p.write_errors));
            if !reads.is_empty() {
                args.extend(["--inject-read-errors", &reads]);
            }
            if !writes.is_empty() {
                args.extend(["--inject-write-errors", &writes]);
            }
            let validated = crate::cli::tests::parse_run(&args).validate().unwrap();
            assert_eq!(c.plan(None, 180), validated, "{}", c.name());
            // A given working set fits in the free RAM.
            assert!(min_ws_mib(p) <= p.guest_mib - 6, "{}", c.name());
            // The `page_ins >= ws_pages` row needs a working set of at least 2R.
            if p.overcommits() {
                assert!(min_ws_mib(p) >= 2 * p.resident_mib, "{}", c.name());
            }
            let factor = match p.name {
                OC_4X => 4,
                OC_8X => 8,
                OC_FITS => {
                    assert!(p.resident_mib >= p.guest_mib);
                    continue;
                }
                _ => continue,
            };
            assert!(min_ws_mib(p) >= factor * p.resident_mib, "{}", c.name());
        }
        // blkdebug: the slots are in the disk, distinct, and in the middle half of the working
        // set (slots 892..7680 today; see OC_BLKDEBUG_GUEST_MIB): from the top of a 4 MiB Image
        // to the device tree, its middle half is 1024 + (7680 - 1024) / 4 ..= 7680 - 6656 / 4.
        let b = PAGED_CASES.iter().find(|p| p.name == OC_BLKDEBUG).unwrap();
        assert_eq!(b.ws_mib, None, "the slots assume the default working set");
        let ws_top = u64::from(b.guest_mib - 2) << 8;
        let ws_bottom = 4 << 8;
        let quarter = (ws_top - ws_bottom) / 4;
        let mut slots: Vec<u64> = b.read_errors.iter().chain(b.write_errors).copied().collect();
        for &slot in &slots {
            assert!((ws_bottom + quarter..ws_top - quarter).contains(&slot), "slot {slot}");
        }
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), b.read_errors.len() + b.write_errors.len());
        assert!(b.overcommits() && b.expects_aborts());
        // Unreadable pages: the two cases differ only in APF; each slot is in the first half of
        // a task slice (6 tasks) for a working set from slot 768 to 1280 up to the device tree.
        let u: Vec<&Paged> = PAGED_CASES.iter().filter(|p| p.name.starts_with(OC_UNREADABLE)).collect();
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].apf, u[1].apf), (false, true));
        for p in &u {
            assert_eq!((p.vcpus, p.guest_mib, p.resident_mib, p.ws_mib), (2, b.guest_mib, b.resident_mib, None));
            assert_eq!((p.read_errors, p.write_errors), (OC_UNREADABLE_SLOTS, &[][..]));
        }
        let tasks = 3 * u64::from(u[0].vcpus);
        for bottom in (768..=1280).step_by(16) {
            let slice = (ws_top - bottom) / tasks;
            for &slot in OC_UNREADABLE_SLOTS {
                assert!(slot >= bottom + slice, "slot {slot} is in the first slice");
                let offset = (slot - bottom) % slice;
                assert!(offset < slice / 2, "slot {slot} is {offset} pages into a slice of {slice} (bottom {bottom})");
            }
        }
    }

    /// A report of a hotplug + APF run that did what the rows expect (4 vCPUs).
    fn hotplug_apf_report() -> Value {
        let offs = 3 * HOTPLUG_APF_ROUNDS;
        json!({
            "ok": true, "exit_status": 0,
            "per_vcpu": [{"tasks_run": 3}, {"tasks_run": 3}, {"tasks_run": 3}, {"tasks_run": 3}],
            "mem": {"page_ins": 9000},
            "guest": {"hotplug_rounds": HOTPLUG_APF_ROUNDS, "came_back": offs, "cpu_off_calls": offs,
                "cpu_on_calls": offs, "stranded": 0, "affinity_unexpected": 0, "probes_ok": true,
                "paging": {"ok": true, "mismatches": 0, "aborts": 0, "words_checked": 4194304},
                "apf": {"enabled_cpus": 4, "reenabled": offs, "offline_wake_alls": offs, "wake_alls": offs,
                        "page_ready_tokens": 8333, "ring_errors": 0}},
            "hyp": {"async_faults": 8336, "apf": {"power_offs": offs, "power_offs_with_tokens": 26,
                "power_off_tokens": 39, "posted_offline": 0, "wake_alls": offs, "wake_alls_lost": 0,
                "accepted": 8336, "declined": 0, "dispatched": 8336, "posted": 8333, "ring_errors": 0}},
        })
    }

    #[test]
    fn hotplug_apf_cases_and_assertions() {
        let cases: Vec<Case> = all_cases().into_iter().filter(|c| c.hotplug_apf.is_some()).collect();
        let names: Vec<String> = cases.iter().map(Case::name).collect();
        assert_eq!(names, ["qemu/hotplug/apf/v2", "qemu/hotplug/apf/v4"]);
        let c = &cases[1];
        assert_eq!(c.labels(), [EXPECT_OK, HOTPLUG_APF]);
        // The plan is what `cargo xtask run` makes of the same options.
        let cmdline =
            format!("apf=on apf_always=on apf_pin=off ws_mib={HOTPLUG_APF_WS_MIB} rounds={HOTPLUG_APF_ROUNDS}");
        let (g, r, l, i) = (
            HOTPLUG_APF_GUEST_MIB.to_string(),
            HOTPLUG_APF_RESIDENT_MIB.to_string(),
            HOTPLUG_APF_LATENCY_US.to_string(),
            HOTPLUG_APF_ICOUNT.to_string(),
        );
        let args = [
            "--scenario",
            "hotplug",
            "--vcpus",
            "4",
            "--quiet",
            "--guest-mib",
            &g,
            "--resident-mib",
            &r,
            "--backing-latency-us",
            &l,
            "--icount",
            &i,
            "--guest-cmdline",
            &cmdline,
            "--timeout",
            "180",
        ];
        let validated = crate::cli::tests::parse_run(&args).validate().unwrap();
        assert_eq!(c.plan(None, 180), validated);
        // The working set overcommits.
        const {
            assert!(
                HOTPLUG_APF_WS_MIB >= 2 * HOTPLUG_APF_RESIDENT_MIB && HOTPLUG_APF_WS_MIB + 6 <= HOTPLUG_APF_GUEST_MIB
            )
        };

        let r = hotplug_apf_report();
        assert_eq!(failed_assertions(&c.labels(), 4, &r), Vec::<String>::new());
        // Today's code before the fix: page_ready posted to an offline vCPU, no session ended at
        // CPU_OFF (so no wake-all found in the offline record), no token outstanding at CPU_OFF.
        let mut bad = r.clone();
        bad["hyp"]["apf"]["posted_offline"] = json!(12);
        bad["hyp"]["apf"]["power_offs_with_tokens"] = json!(0);
        bad["guest"]["apf"]["offline_wake_alls"] = json!(0);
        let f = failed_assertions(&c.labels(), 4, &bad);
        for want in [
            "/hyp/apf/posted_offline == 0",
            "/hyp/apf/power_offs_with_tokens >= 1",
            "/guest/apf/offline_wake_alls == /hyp/apf/power_offs",
        ] {
            assert!(f.iter().any(|l| l.starts_with(want)), "{want}: {f:?}");
        }
        let mut bad = r.clone();
        bad["hyp"]["apf"]["power_offs"] = json!(0);
        let f = failed_assertions(&c.labels(), 4, &bad);
        assert!(f.iter().any(|l| l.starts_with("/hyp/apf/power_offs == /guest/cpu_off_calls")), "{f:?}");
        // A lost page_ready (an accepted token neither posted nor dropped), a paging mismatch.
        let mut bad = r.clone();
        bad["hyp"]["apf"]["posted"] = json!(8332);
        bad["guest"]["apf"]["page_ready_tokens"] = json!(8332);
        bad["guest"]["paging"]["mismatches"] = json!(1);
        let f = failed_assertions(&c.labels(), 4, &bad);
        assert!(f.iter().any(|l| l.starts_with("/hyp/apf/accepted+/hyp/apf/wake_alls ==")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/guest/paging/mismatches == 0")), "{f:?}");
        // The plain hotplug rows are not applied (their round count differs), and vice versa.
        assert!(!c.labels().contains(&"hotplug"));
        assert!(failed_assertions(&[HOTPLUG_APF], 2, &hostile_report())
            .iter()
            .any(|l| l.contains("/guest/hotplug_rounds")));
    }

    #[test]
    fn unreadable_assertions() {
        let r = |apf: bool| {
            let mut r = paged_report(32, 8);
            r["ok"] = json!(false);
            r["guest"]["ok"] = json!(false);
            r["guest"]["aborts"] = json!(3);
            r["guest"]["abort_addresses"] =
                json!([{"addr": "0x40960008"}, {"addr": "0x40dac000"}, {"addr": 0x4000_0000u64 + 4600 * 4096}]);
            r["hyp"] = json!({"cwg_bytes": 64, "injected_aborts": 3, "async_faults": 100,
                "apf": {"accepted": 90, "posted": 90, "sync_reasons": {"unreadable": 2}}});
            r["mem"]["failed_reads"] = json!(5);
            r["mem"]["retries"] = json!(15);
            r["mem"]["io_errors"] = json!(20);
            r["mem"]["aborts"] = json!(5);
            r["mem"]["unreadable_pages"] = json!(3);
            r["mem"]["unreadable"] = json!([2400, 3500, 4600]);
            if apf {
                r["guest"]["apf"] = json!({"enabled_cpus": 2, "page_ready_tokens": 90});
            }
            r
        };
        let (off, on) = (&case(OC_UNREADABLE)[0], &case(OC_UNREADABLE_APF)[0]);
        assert_eq!(on.labels(), [PAGED, OC_UNREADABLE_APF, OC_UNREADABLE, OVERCOMMITTED, CPU_MAX]);
        assert_eq!(on.plan(None, 1).guest_cmdline.as_deref(), Some("apf=on apf_always=on"));
        assert_eq!(on.backing().read_errors, OC_UNREADABLE_SLOTS);
        assert!(on.backing().write_errors.is_empty());
        assert_eq!(failed_assertions(&off.labels(), 2, &r(false)), Vec::<String>::new());
        assert_eq!(failed_assertions(&on.labels(), 2, &r(true)), Vec::<String>::new());
        // A hang (the runner's timeout), an abort twice on one page and one page never reported,
        // an abort elsewhere, an uncaught abort, write errors.
        let mut bad = r(true);
        bad["exit_status"] = Value::Null;
        bad["guest"]["abort_addresses"][1]["addr"] = json!("0x40960ff8");
        bad["hyp"]["injected_aborts"] = json!(4);
        bad["mem"]["io_errors"] = json!(21);
        let f = failed_assertions(&on.labels(), 2, &bad);
        assert!(f.iter().any(|l| l.starts_with("/exit_status == 0")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("is in slot 2400 again")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("slots [2400, 2400, 4600], /mem/unreadable [2400, 3500, 4600]")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/hyp/injected_aborts == /guest/aborts")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/mem/io_errors ==")), "{f:?}");
        assert_eq!(f.len(), 5, "{f:?}");
        let mut bad = r(true);
        bad["guest"]["abort_addresses"][2]["addr"] = json!("0x41068000");
        bad["guest"]["aborts"] = json!(2);
        bad["mem"]["unreadable_pages"] = json!(2);
        bad["hyp"]["apf"]["sync_reasons"]["unreadable"] = json!(0);
        bad["hyp"]["apf"]["posted"] = json!(89);
        let f = failed_assertions(&on.labels(), 2, &bad);
        assert!(f.iter().any(|l| l.contains("is in slot 4200")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("len(/guest/abort_addresses) == /guest/aborts")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/hyp/apf/sync_reasons/unreadable >= 1")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/hyp/apf/posted == /hyp/apf/accepted")), "{f:?}");
        // Fewer aborts than unreadable pages (one page never reported: the hang of issue 11 item
        // 3 ends in the timeout, but a lost abort fails here too), or none at all.
        let mut bad = r(false);
        bad["guest"]["aborts"] = json!(2);
        bad["guest"]["abort_addresses"] = json!([{"addr": "0x40960008"}, {"addr": "0x40dac000"}]);
        let f = failed_assertions(&off.labels(), 2, &bad);
        assert!(f.iter().any(|l| l.starts_with("/guest/aborts == /mem/unreadable_pages")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("are /mem/unreadable")), "{f:?}");
        let mut bad = r(false);
        bad["guest"]["aborts"] = json!(0);
        bad["guest"]["abort_addresses"] = json!([]);
        bad["mem"]["unreadable_pages"] = json!(0);
        bad["mem"]["unreadable"] = json!([]);
        bad["hyp"]["injected_aborts"] = json!(0);
        let f = failed_assertions(&off.labels(), 2, &bad);
        assert_eq!(f, ["/guest/aborts >= 1: /guest/aborts = 0, 1 = 1"]);
        // Without APF the APF rows do not apply.
        assert_eq!(failed_assertions(&off.labels(), 2, &r(false)), Vec::<String>::new());
    }

    /// A report of a paging run that did what the tables expect.
    fn paged_report(guest_mib: u64, resident_mib: u64) -> Value {
        let ws_pages = (guest_mib - 6) * 256;
        let words = 2 * ws_pages * 512;
        json!({
            "ok": true, "exit_status": 0, "guest_mib": guest_mib, "resident_mib": resident_mib,
            "backing_latency_us": 50,
            "per_vcpu": [{"tasks_run": 3}, {"tasks_run": 3}],
            "guest": {"aborts": 0, "ws_bytes": ws_pages * 4096, "ws_pages": ws_pages, "abort_addresses": [],
                      "check": {"words_checked": words, "mismatches": 0}},
            "check": {"words_checked": words, "mismatches": 0},
            "hyp": {"cwg_bytes": 64},
            "mem": {"guest_mib": guest_mib, "resident_mib": resident_mib, "backing_latency_us": 50,
                    "page_ins": 2 * ws_pages, "page_outs": 3 * ws_pages, "zero_fills": ws_pages,
                    "clean_drops": ws_pages, "dirty_writebacks": 2 * ws_pages, "io_errors": 0, "retries": 0,
                    "failed_reads": 0, "aborts": 0, "blocking_faults": 4 * ws_pages},
        })
    }

    #[test]
    fn repeatability() {
        let run = |elapsed: u64, write: u64, verify: u64| json!({"guest": {"elapsed_ms": elapsed, "phases_ms": {"write": write, "verify": verify}}});
        assert!(repeatability_failures(&run(1000, 400, 600), &run(1000, 400, 600), 0.01).is_empty());
        // Within 1 % of the larger.
        assert!(repeatability_failures(&run(1000, 400, 600), &run(1009, 404, 605), 0.01).is_empty());
        // A phase 2 % off fails, though the total agrees.
        let f = repeatability_failures(&run(1000, 400, 600), &run(1000, 392, 604), 0.01);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("phase write") && f[0].contains("400 vs 392"), "{f:?}");
        // The issue's loaded figure (2.30x vs 1.10x) fails on the total too.
        assert_eq!(repeatability_failures(&run(1000, 400, 600), &run(2091, 400, 1691), 0.01).len(), 2);
        // Missing figures fail.
        assert!(!repeatability_failures(&json!({}), &run(1000, 400, 600), 0.01).is_empty());
        assert!(!repeatability_failures(&run(1000, 400, 600), &json!({"guest": {}}), 0.01).is_empty());
    }

    #[test]
    fn apf_overcommit_assertions() {
        let c = &case(OC_APF)[1];
        let mut r = paged_report(64, 12);
        r["per_vcpu"] = json!([{"tasks_run": 3}, {"tasks_run": 3}, {"tasks_run": 3}, {"tasks_run": 3}]);
        r["guest"]["apf"] = json!({"enabled_cpus": 4, "accepted": 900, "page_ready_tokens": 900, "ring_errors": 0});
        r["hyp"] = json!({"cwg_bytes": 64, "async_faults": 901, "apf": {"dispatched": 901, "accepted": 900, "declined": 1,
                "completed": 901, "posted": 900, "wake_alls": 0, "ring_errors": 0}});
        assert_eq!(failed_assertions(&c.labels(), 4, &r), Vec::<String>::new());
        // A lost page_ready, a CPU that did not enable APF, no asynchronous fault at all.
        r["hyp"]["apf"]["posted"] = json!(899);
        r["guest"]["apf"]["enabled_cpus"] = json!(3);
        r["hyp"]["async_faults"] = json!(0);
        let f = failed_assertions(&c.labels(), 4, &r);
        assert!(f.iter().any(|l| l.contains("/hyp/apf/posted == /hyp/apf/accepted")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/guest/apf/enabled_cpus == vcpus")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("/hyp/async_faults > 0")), "{f:?}");
        assert_eq!(c.plan(None, 1).guest_cmdline.as_deref(), Some("apf=on apf_always=on"));
    }

    #[test]
    fn paged_assertions() {
        for c in case(OC_4X).iter().chain(&case(OC_8X)) {
            let p = c.paged.unwrap();
            let r = paged_report(p.guest_mib.into(), p.resident_mib.into());
            assert_eq!(failed_assertions(&c.labels(), 2, &r), Vec::<String>::new(), "{}", c.name());
        }
        // 4x is not 8x.
        let c = &case(OC_8X)[0];
        let r = paged_report(64, 12);
        let f = failed_assertions(&c.labels(), 2, &r);
        assert_eq!(
            f,
            ["/guest/ws_bytes >= 8*/resident_mib MiB: /guest/ws_bytes = 60817408, 8*/resident_mib MiB = 100663296"]
        );
        // A hypervisor that ignored resident_mib: every /mem row fails, by name.
        let mut r = paged_report(64, 12);
        r["mem"] = Value::Null;
        let f = failed_assertions(&case(OC_4X)[0].labels(), 2, &r);
        assert!(f.iter().any(|l| l.contains("/mem/page_ins is missing")), "{f:?}");
        // One word read back wrong, a write-back that failed.
        let mut r = paged_report(64, 12);
        r["check"]["mismatches"] = json!(1);
        r["guest"]["check"]["mismatches"] = json!(1);
        r["mem"]["io_errors"] = json!(1);
        let f = failed_assertions(&case(OC_4X)[0].labels(), 2, &r);
        assert_eq!(f.len(), 3, "the scenario's /guest row, the paged /check row, io_errors: {f:?}");

        // fits: the pager ran but never touched the disk.
        let c = &case(OC_FITS)[0];
        let mut r = paged_report(32, 32);
        for k in ["page_ins", "page_outs", "dirty_writebacks", "clean_drops"] {
            r["mem"][k] = json!(0);
        }
        assert_eq!(failed_assertions(&c.labels(), 2, &r), Vec::<String>::new());
        r["mem"]["zero_fills"] = json!(0);
        r["mem"]["page_outs"] = json!(1);
        let f = failed_assertions(&c.labels(), 2, &r);
        assert_eq!(
            f,
            ["/mem/zero_fills > 0: /mem/zero_fills = 0, 0 = 0", "/mem/page_outs == 0: /mem/page_outs = 1, 0 = 0"]
        );
    }

    #[test]
    fn paged_blkdebug_assertions() {
        let c = &case(OC_BLKDEBUG)[0];
        let mut r = paged_report(32, 8);
        r["ok"] = json!(false);
        r["failure"] = json!("the guest result has \"ok\": false");
        r["guest"]["ok"] = json!(false);
        r["guest"]["aborts"] = json!(2);
        r["guest"]["abort_addresses"] = json!([{"addr": "0x41068010", "far": "0x41068010"}, {"addr": "0x411f8000"}]);
        r["check"]["words_checked"] = json!(2 * 6788 * 512 - 3 * 512);
        r["mem"]["failed_reads"] = json!(2);
        r["mem"]["retries"] = json!(6);
        r["mem"]["failed_writes"] = json!(4);
        r["mem"]["io_errors"] = json!(12);
        r["mem"]["aborts"] = json!(2);
        assert_eq!((0x41068010u64 - GUEST_RAM_IPA) >> 12, 4200);
        assert_eq!(failed_assertions(&c.labels(), 2, &r), Vec::<String>::new());

        let mut bad = r.clone();
        bad["guest"]["abort_addresses"][0]["addr"] = json!("0x41069000");
        bad["guest"]["aborts"] = json!(4);
        bad["mem"]["io_errors"] = json!(7);
        bad["exit_status"] = json!(101);
        let f = failed_assertions(&c.labels(), 2, &bad);
        assert_eq!(
            f,
            [
                "/mem/aborts >= /guest/aborts: /mem/aborts = 2, /guest/aborts = 4",
                "/exit_status == 0: /exit_status = 101, 0 = 0",
                "/mem/io_errors == /mem/failed_reads+/mem/retries+/mem/failed_writes: /mem/io_errors = 7, \
                 /mem/failed_reads+/mem/retries+/mem/failed_writes = 12",
                "3 >= /guest/aborts: 3 = 3, /guest/aborts = 4",
                "/guest/abort_addresses/0/addr in disk slots [3800, 4200, 4600]: \
                 /guest/abort_addresses/0/addr = 0x41069000 is in slot 4201",
            ]
        );
        let mut none = r.clone();
        none["guest"]["aborts"] = json!(0);
        none["guest"]["abort_addresses"] = json!([]);
        let f = failed_assertions(&c.labels(), 2, &none);
        assert!(f.iter().any(|l| l.contains("/guest/abort_addresses/0/addr is missing")), "{f:?}");
        assert!(f.iter().any(|l| l.starts_with("/guest/aborts >= 1")), "{f:?}");
        // Addresses as integers too; below guest RAM is an error, not a slot.
        let mut int = r.clone();
        int["guest"]["abort_addresses"][0]["addr"] = json!(0x4000_0000u64 + 3800 * 4096 + 8);
        assert_eq!(failed_assertions(&c.labels(), 2, &int), Vec::<String>::new());
        int["guest"]["abort_addresses"][0]["addr"] = json!("0x1000");
        let f = failed_assertions(&c.labels(), 2, &int);
        let want = "/guest/abort_addresses/0/addr in disk slots [3800, 4200, 4600]: \
                    /guest/abort_addresses/0/addr = 0x1000 is below guest RAM";
        assert_eq!(f, [want]);
    }
}
