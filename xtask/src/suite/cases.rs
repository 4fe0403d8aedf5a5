//! The QEMU integration cases: the scenario matrix, the backing-store self-tests, the paging
//! cases and the other paged runs, their names, labels and run plans.

use std::path::PathBuf;

use crate::cli::{BackingPlan, RunPlan};

/// The scenarios, vCPU counts and CPU models of the integration matrix.
pub(super) const SCENARIOS: &[&str] = &["smp", "ipi", "hostile", "overcommit", "hotplug", "apfabi"];
/// Rounds of the guest's `hotplug` scenario: each turns every secondary vCPU off and on again.
pub(super) const HOTPLUG_ROUNDS: i64 = 3;
const VCPU_COUNTS: &[u32] = &[1, 4];
const CPU_MODELS: &[&str] = &["max", "a64fx"];

/// A backing-store case: the `smp` scenario on 2 vCPUs after the hypervisor's self-test.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selftest {
    /// The case's name and its assertion label.
    pub(super) name: &'static str,
    pub(super) pages: u64,
    pub(super) latency_us: u64,
    pub(super) read_errors: &'static [u64],
    pub(super) write_errors: &'static [u64],
}

/// Every self-test case carries this label too.
pub(super) const SELFTEST: &str = "selftest";
pub(super) const SELFTEST_CLEAN: &str = "selftest-clean";
pub(super) const SELFTEST_LATENCY: &str = "selftest-l200";
pub(super) const SELFTEST_ERRORS: &str = "selftest-blkdebug";
const SELFTEST_VCPUS: u32 = 2;
/// The blkdebug case: 64 pages, the read of slot 5 and the write of slot 9 fail.
const BLKDEBUG_PAGES: u64 = 64;
pub(super) const BLKDEBUG_READ_SLOT: u64 = 5;
pub(super) const BLKDEBUG_WRITE_SLOT: u64 = 9;
/// Pages the blkdebug case can verify: all but the one whose read failed and the one whose
/// write failed (it is not read back).
pub(super) const BLKDEBUG_VERIFIABLE: i64 = BLKDEBUG_PAGES as i64 - 2;
/// The requests the device holds at once (virtio-drivers' queue of 16, indirect descriptors).
pub(super) const DEVICE_QUEUE_DEPTH: i64 = 16;

pub(super) const SELFTESTS: &[Selftest] = &[
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
pub(super) struct Paged {
    /// The case's name (`overcommit-4x` runs as qemu/overcommit/4x/vN) and its assertion label.
    pub(super) name: &'static str,
    pub(super) vcpus: u32,
    pub(super) guest_mib: u32,
    pub(super) resident_mib: u32,
    /// The guest's `ws_mib=` (working set in MiB); None: the default.
    pub(super) ws_mib: Option<u32>,
    pub(super) read_errors: &'static [u64],
    pub(super) write_errors: &'static [u64],
    /// The guest enables asynchronous page faults (`apf=on`).
    pub(super) apf: bool,
}

impl Paged {
    /// A case with the default working set, no injected errors and APF off.
    const fn clean(name: &'static str, vcpus: u32, guest_mib: u32, resident_mib: u32) -> Paged {
        Paged { name, vcpus, guest_mib, resident_mib, ws_mib: None, read_errors: &[], write_errors: &[], apf: false }
    }

    /// Less host memory than guest RAM.
    pub(super) fn overcommits(&self) -> bool {
        self.resident_mib < self.guest_mib
    }

    /// Reads that fail make the pager inject aborts, so the guest's own verdict is a failure.
    pub(super) fn expects_aborts(&self) -> bool {
        !self.read_errors.is_empty()
    }
}

/// Every paging case carries this label; those without injected errors also the second, and
/// those with less resident memory than guest RAM the third.
pub(super) const PAGED: &str = "paged";
pub(super) const PAGED_CLEAN: &str = "paged-clean";
pub(super) const OVERCOMMITTED: &str = "overcommitted";
/// A working set at least 4 times the resident memory.
pub(super) const OC_4X: &str = "overcommit-4x";
/// A working set at least 8 times the resident memory.
pub(super) const OC_8X: &str = "overcommit-8x";
/// R = G: the pager runs (first touches are zero-filled) but never evicts.
pub(super) const OC_FITS: &str = "overcommit-fits";
/// Disk errors under an overcommitted guest.
pub(super) const OC_BLKDEBUG: &str = "overcommit-blkdebug";
/// The blkdebug case's guest RAM (32 MiB = slots 0..8192). The guest Image ends near slot 890
/// (0x4037_a000 with today's 1.5 MiB image), the generation table takes 2 pages, so the working
/// set is about slots 892..7680 (0x4037_c000..0x41e0_0000; the device tree takes the last 2 MiB,
/// slots 7680..8192), 6788 pages in 6 task slices of ~1131 pages (3 tasks per vCPU, 2 vCPUs).
/// The chosen slots lie in its middle half, so a growing guest Image cannot push them out, and
/// with 8 MiB resident of ~26.5 MiB every page is evicted after the write phase and read back
/// (at the latest in the final pass, after the first pass has cycled the whole working set).
pub(super) const OC_BLKDEBUG_GUEST_MIB: u32 = 32;
/// Reads of these slots fail for good: each page aborts once (then the guest skips it).
pub(super) const OC_BLKDEBUG_READ_SLOTS: &[u64] = &[3800, 4200, 4600];
/// Writes of these slots fail for good: the pages stay dirty and resident, nothing is lost.
pub(super) const OC_BLKDEBUG_WRITE_SLOTS: &[u64] = &[4000, 4400];

/// Pages that cannot be read back (reads of their slots fail for good, writes succeed), with
/// APF off and on (issue 11 item 3): the guest must get one synchronous external abort per
/// such page, also when its first fault was asynchronous, and the run must end.
pub(super) const OC_UNREADABLE: &str = "overcommit-unreadable";
pub(super) const OC_UNREADABLE_APF: &str = "overcommit-unreadable-apf";
/// The unreadable slots, on the blkdebug case's machine (G = 32, R = 8, 2 vCPUs: 6 task slices
/// of the working set, each written in ascending order). Each lies in the first half of its
/// task's slice for any working set starting between slots 768 and 1280 (a 3 to 5 MiB Image), so
/// that it is likely on disk when the verify phase reads it; but the tasks do not progress
/// evenly, and a page that stays resident whenever it is touched is never read back (seen: 1 to
/// 3 of 3 such pages), so the rows check that the guest got an abort on exactly the pages the
/// hypervisor found unreadable, and on at least one.
pub(super) const OC_UNREADABLE_SLOTS: &[u64] = &[2400, 3500, 4600, 5700, 6800];

/// The guest's working-set key (`asyncpf_guest::cmdline::OPT_WS_MIB`; the runner does not
/// depend on the guest crate).
const GUEST_OPT_WS_MIB: &str = "ws_mib";
/// The guest's hotplug rounds key (`asyncpf_guest::cmdline::OPT_ROUNDS`).
const GUEST_OPT_ROUNDS: &str = "rounds";
/// The guest's asynchronous-page-fault key (`asyncpf_guest::cmdline::OPT_APF`).
pub(super) const GUEST_OPT_APF: &str = "apf";
/// The overcommit workload with asynchronous page faults on.
pub(super) const OC_APF: &str = "overcommit-apf";

/// The paging cases. On 1 vCPU the working set is all free RAM of 64 MiB (≈ 58.5 MiB: 4.9x
/// R = 12, 9.7x R = 6; about 4-5 s each on a 2-core host). On 4 vCPUs: the exact run of the
/// memory-overcommit issue's "done when" (G = 256, R = 32, all free RAM: ≈ 250 MiB, 7.8x;
/// about 23 s) and a working set of exactly 8x R = 4 (about 3 s).
pub(super) const PAGED_CASES: &[Paged] = &[
    Paged::clean(OC_4X, 1, 64, 12),
    Paged::clean(OC_4X, 4, 256, 32),
    Paged::clean(OC_8X, 1, 64, 6),
    Paged { ws_mib: Some(32), ..Paged::clean(OC_8X, 4, 48, 4) },
    Paged::clean(OC_FITS, 2, 32, 32),
    Paged {
        read_errors: OC_BLKDEBUG_READ_SLOTS,
        write_errors: OC_BLKDEBUG_WRITE_SLOTS,
        ..Paged::clean(OC_BLKDEBUG, 2, OC_BLKDEBUG_GUEST_MIB, 8)
    },
    Paged { read_errors: OC_UNREADABLE_SLOTS, ..Paged::clean(OC_UNREADABLE, 2, OC_BLKDEBUG_GUEST_MIB, 8) },
    Paged {
        read_errors: OC_UNREADABLE_SLOTS,
        apf: true,
        ..Paged::clean(OC_UNREADABLE_APF, 2, OC_BLKDEBUG_GUEST_MIB, 8)
    },
    Paged { apf: true, ..Paged::clean(OC_APF, 1, 64, 12) },
    Paged { apf: true, ..Paged::clean(OC_APF, 4, 64, 12) },
];

/// The `hotplug` scenario with a paging load and asynchronous page faults (issue 11 item 6): CPUs
/// go off with APF tokens outstanding, and come back. Under `-icount`, so that a CPU asked to go
/// off right after parking a task on a token does so within the token's page-in in guest time
/// (on a busy 2-core host a vCPU thread can be descheduled for longer than that).
#[derive(Debug, Clone, Copy)]
pub(super) struct HotplugApf {
    pub(super) vcpus: u32,
}

pub(super) const HOTPLUG_APF: &str = "hotplug-apf";
const HOTPLUG_APF_CASES: &[HotplugApf] = &[HotplugApf { vcpus: 2 }, HotplugApf { vcpus: 4 }];
/// Rounds (`rounds=N`): each CPU goes off this many times. About a third of the offs find a token
/// still outstanding, so 12 rounds give at least 12 tries even on 2 vCPUs.
pub(super) const HOTPLUG_APF_ROUNDS: i64 = 12;
pub(super) const HOTPLUG_APF_GUEST_MIB: u32 = 64;
pub(super) const HOTPLUG_APF_RESIDENT_MIB: u32 = 8;
/// The paging load's working set: 4 times the resident memory.
pub(super) const HOTPLUG_APF_WS_MIB: u32 = 32;
pub(super) const HOTPLUG_APF_LATENCY_US: u64 = 1000;
pub(super) const HOTPLUG_APF_ICOUNT: u32 = 3;

/// The CPU model of a case: each has its known writeback granule (CTR_EL0.CWG).
pub(super) const CPU_MAX: &str = "cpu-max";
pub(super) const CPU_A64FX: &str = "cpu-a64fx";
/// Every case whose run must pass (all but the paging case with failing reads).
pub(super) const EXPECT_OK: &str = "expect-ok";

/// The guest RAM of the matrix and self-test cases.
const MATRIX_GUEST_MIB: u32 = 128;

/// A QEMU integration case.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) scenario: &'static str,
    pub(super) vcpus: u32,
    pub(super) cpu: &'static str,
    pub(super) guest_mib: u32,
    pub(super) selftest: Option<Selftest>,
    pub(super) paged: Option<Paged>,
    /// `--resident-mib` for a scenario other than the overcommit workload (`apfabi`, `hostile`).
    pub(super) resident_mib: Option<u32>,
    /// `--guest-cmdline` for a case that is not a paging case.
    pub(super) guest_cmdline: Option<&'static str>,
    pub(super) hotplug_apf: Option<HotplugApf>,
}

impl Case {
    pub(super) fn matrix(scenario: &'static str, vcpus: u32, cpu: &'static str) -> Case {
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

    pub(super) fn name(&self) -> String {
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
    pub(super) fn labels(&self) -> Vec<&'static str> {
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
    pub(super) fn plan(&self, json: Option<PathBuf>, timeout_secs: u64) -> RunPlan {
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
            lock_check: true,
            trace: None,
        }
    }

    pub(super) fn backing(&self) -> BackingPlan {
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
pub(super) fn all_cases() -> Vec<Case> {
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
pub(super) const HOSTILE_PAGED_CMDLINE: &str = "calls=8000 apf=on apf_always=on ws_mib=24";
/// `hostile` labels: with and without paged RAM.
pub(super) const HOSTILE_PAGED: &str = "hostile-paged";
pub(super) const HOSTILE_UNPAGED: &str = "hostile-unpaged";

/// The `apfabi` cases with paged RAM (where the APF calls are answered): 2 vCPUs, on each CPU
/// model (`a64fx` has a 256-byte writeback granule, so its records are laid out by 256).
const APF_ABI_VCPUS: u32 = 2;
const APF_ABI_GUEST_MIB: u32 = 64;
const APF_ABI_RESIDENT_MIB: u32 = 16;
/// `apfabi` labels: with and without paged RAM.
pub(super) const APF_PAGED: &str = "apf-paged";
pub(super) const APF_UNPAGED: &str = "apf-unpaged";
