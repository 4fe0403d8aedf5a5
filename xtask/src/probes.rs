//! Tests that boot the hand-made guest images of `probes/` through `--guest-kernel`, as a user
//! would boot any foreign kernel, and check what the hypervisor and the runner made of them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use asyncpf_contract::runner::{GUEST_LINE_PREFIX, HYP_LINE_PREFIX};

use crate::build;
use crate::cli::{BackingPlan, ExpectEnd, ForeignJudge, RunPlan};
use crate::results::Report;
use crate::run;
use crate::toolchain::Toolchain;

/// The escape test's name in `cargo xtask test`.
pub const ESCAPE: &str = "hostile/escape";
/// The console-flood test's name.
pub const FLOOD: &str = "hostile/flood";
/// The stage-1 table walk test's name.
pub const TABLEWALK: &str = "hostile/tablewalk";
/// Rounds of the table-walk probe, and its target pages per round (`probes/src/bin/tablewalk.rs`).
const TABLEWALK_ROUNDS: u64 = 2;
const TABLEWALK_PAGES: u64 = 4096;
/// Interrupts without GICR_WAKER.
pub const GIC: &str = "kvm-compat/gic";
/// The generic timers' interrupts: level semantics, and the EL1 physical timer.
pub const TIMER: &str = "kvm-compat/timer";
/// Advertised CPU features work (FEAT_MOPS, SVE at the CPU's vector length).
pub const FEATURES: &str = "kvm-compat/features";
/// Concurrent CPU_ON: a second CPU_ON while the target is on its way up is ALREADY_ON.
pub const CPU_ON: &str = "kvm-compat/cpu-on";
/// Rounds of the cpu-on probe.
const CPU_ON_ROUNDS: u64 = 8;
/// The guest's PMUv3: as the hardware has it, counting EL1 and EL0 only, SW_INCR, the overflow
/// interrupt.
pub const PMU: &str = "kvm-compat/pmu";
/// What the pmu probe must say about EL2 per CPU model: `max` (FEAT_PMUv3p5) keeps every
/// counter out of EL2 whatever the guest's filters say (MDCR_EL2.HPMD and HCCD); `a64fx`
/// (PMUv3p1, no HCCD) counts EL2 cycles in PMCCNTR_EL0 when the guest sets PMCCFILTR_EL0.NSH and
/// leaves PMCR_EL0.DP clear (docs/abi.md §6).
const PMU_EL2_LINES: [(&str, &str); 2] = [
    ("max", "cycles true, cycles with NSH true, cycles with NSH and DP true, events with NSH true"),
    ("a64fx", "cycles true, cycles with NSH false, cycles with NSH and DP true, events with NSH true"),
];
/// `--kernel-kind`: an ELF and a raw binary boot where QEMU would put them.
pub const KERNEL_KINDS: &str = "kvm-compat/kernel-kinds";
/// APF_PIN's answers to bad and good requests, paged and not.
pub const PIN: &str = "hostile/apf-pin";
/// page_ready entries that waited for ring space reach a guest that made room and sleeps in
/// `wfi`.
pub const BACKLOG: &str = "hostile/apf-backlog";
/// `--initrd`: the file reaches guest RAM where `/chosen` says, paged or not.
pub const INITRD: &str = "kvm-compat/initrd";
/// The initrd test's file: an odd length, so that the last page is partly used.
const INITRD_TEST_BYTES: usize = 1_000_123;
/// What the features probe must report per CPU model (QEMU 10.0), under the hypervisor as on
/// QEMU without it (`--bare`): the features the ID registers advertise, all working at EL1, and
/// the SVE and SME vector lengths after asking for the largest (`max`: 2048 bits each; `a64fx`:
/// 512-bit SVE, no SME).
const FEATURE_LINES: [(&str, &str); 2] = [
    (
        "max",
        "mops,sve,sme,sme-fa64,pauth,mte,nmi,lor,ras,ecv,rng; failed none; sve_vl_bytes 256 \
         sme_vl_bytes 256; exceptions 0",
    ),
    ("a64fx", "sve,lor; failed none; sve_vl_bytes 64 sme_vl_bytes 0; exceptions 0"),
];
/// The ID registers the features probe prints (`name=value`), by their (CRm, op2) encoding.
const FEATURE_ID_REGISTERS: [(&str, u8, u8); 13] = [
    ("pfr0", 4, 0),
    ("pfr1", 4, 1),
    ("pfr2", 4, 2),
    ("isar0", 6, 0),
    ("isar1", 6, 1),
    ("isar2", 6, 2),
    ("mmfr0", 7, 0),
    ("mmfr1", 7, 1),
    ("mmfr2", 7, 2),
    ("mmfr3", 7, 3),
    ("dfr0", 5, 0),
    ("zfr0", 4, 4),
    ("smfr0", 4, 5),
];
/// Rounds of the flood probe: each provokes one APF ring error and one injected abort.
const FLOOD_ROUNDS: u64 = 2000;
/// The most `[hyp]` lines a flood run may print: its fixed lines (start, VM, result, exit) and,
/// per diagnostic kind, `LogLimiter::FIRST` + log2(rounds) (`asyncpf_core::ratelimit`).
const FLOOD_MAX_HYP_LINES: u64 = 4 + 2 * (8 + 11);

/// A probe test: its name in `cargo xtask test` and the function that runs it.
pub type ProbeTest = (&'static str, fn(&Path, &Toolchain) -> Result<String>);

/// Every probe test, in the order `cargo xtask test` runs them.
pub const TESTS: &[ProbeTest] = &[
    (ESCAPE, escape_test),
    (FLOOD, flood_test),
    (TABLEWALK, tablewalk_test),
    (GIC, gic_test),
    (TIMER, timer_test),
    (FEATURES, features_test),
    (CPU_ON, cpu_on_test),
    (PMU, pmu_test),
    (INITRD, initrd_test),
    (KERNEL_KINDS, kernel_kinds_test),
    (PIN, pin_test),
    (BACKLOG, backlog_test),
];

/// A plan that boots probe `probe` on one vCPU with `cmdline` (64 MiB of guest RAM).
fn plan(root: &Path, probe: &str, cmdline: String, timeout_secs: u64) -> RunPlan {
    RunPlan {
        scenario: format!("probe-{probe}"),
        vcpus: 1,
        pcpus: 1,
        cpu: "max".into(),
        guest_mib: 64,
        seed: 1,
        json: Some(root.join("target").join("xtask").join("results").join(format!("probe-{probe}.json"))),
        guest_kernel: Some(build::probe_image(root, probe)),
        guest_cmdline: Some(cmdline),
        timeout_secs,
        icount: None,
        bare: false,
        quiet: true,
        backing: BackingPlan::default(),
        resident_mib: None,
        foreign: Some(ForeignJudge { expect: ExpectEnd::Off, success_pattern: None }),
        initrd: None,
        kernel_kind: Default::default(),
        host_load: 0,
        lock_check: true,
        trace: None,
    }
}

/// The escape probe tries every QEMU semihosting call that reaches the host (open and write a
/// file, run a command, write forged lines to QEMU's standard error, exit QEMU with 0) and
/// forges `[hyp]` lines through its UART. Passes when nothing reached the host, every
/// semihosting call was UNDEFINED in the guest, no forged line was taken for the hypervisor's:
/// when the probe powers off the run ends with the real hypervisor's SYSTEM_OFF, and when it
/// spins instead the run times out although it printed `[hyp] @exit 0`.
pub fn escape_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let dir = run::temp_dir(root);
    fs::create_dir_all(&dir)?;
    for end in ["off", "hang"] {
        let marker = dir.join(format!("escape-marker-{}-{end}", std::process::id()));
        let system_marker = PathBuf::from(format!("{}.system", marker.display()));
        for m in [&marker, &system_marker] {
            let _ = fs::remove_file(m);
        }
        let timeout = if end == "hang" { 4 } else { 30 };
        let cmdline = format!("marker={} end={end}", marker.display());
        let report = run::run(root, tc, &plan(root, "escape", cmdline, timeout), true)?;
        let reached_host: Vec<String> =
            [&marker, &system_marker].iter().filter(|m| m.exists()).map(|m| m.display().to_string()).collect();
        for m in [&marker, &system_marker] {
            let _ = fs::remove_file(m);
        }
        let problems = escape_problems(&report, &reached_host, end == "hang");
        passed(&report, ESCAPE, &problems).with_context(|| format!("end={end}"))?;
    }
    Ok("4 of 4 semihosting calls UNDEFINED, nothing on the host, forged lines shown as the guest's and not believed"
        .into())
}

/// What is wrong with an escape probe's run; empty when it was contained. `hangs`: the probe
/// spun after forging, so the run must have timed out.
fn escape_problems(report: &Report, reached_host: &[String], hangs: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !reached_host.is_empty() {
        problems.push(format!("the guest created {} on the host", reached_host.join(" and ")));
    }
    let has = |text: &str| report.console_tail.iter().any(|l| l == text);
    let summary = format!("{GUEST_LINE_PREFIX}escape probe: semihosting calls 4, undefined 4");
    if !has(&summary) {
        problems.push(format!("no `{summary}` line: a semihosting call was served, or the probe did not run"));
    }
    let forged = format!("{GUEST_LINE_PREFIX}{HYP_LINE_PREFIX}@exit 0");
    if !has(&forged) {
        problems.push(format!("the forged UART line is not shown as `{forged}`"));
    }
    if !report.guest.is_null() || report.hyp.get("forged").is_some() {
        problems.push(format!("a forged result was taken: guest {}, hyp {}", report.guest, report.hyp));
    }
    let (end, status, ok) = if hangs { ("timeout", None, false) } else { ("system_off", Some(0), true) };
    if report.end != end || report.exit_status != status || report.ok != ok {
        problems.push(format!(
            "the run ended {} (status {:?}, ok {}), not {end} (status {status:?}, ok {ok}): {:?}",
            report.end, report.exit_status, report.ok, report.failure
        ));
    }
    if !hangs && report.hyp.get("end").and_then(|e| e.as_str()) != Some("system_off") {
        problems.push(format!("the hypervisor's result is not its own SYSTEM_OFF: {}", report.hyp));
    }
    problems
}

/// The flood probe provokes two guest-triggerable diagnostics (an APF ring error and an
/// injected external abort) [`FLOOD_ROUNDS`] times each; the hypervisor must count every one and
/// print a bounded number of lines.
pub fn flood_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let mut plan = plan(root, "flood", format!("rounds={FLOOD_ROUNDS}"), 60);
    plan.resident_mib = Some(16);
    let report = run::run(root, tc, &plan, true)?;
    let problems = flood_problems(&report);
    passed(&report, FLOOD, &problems)?;
    Ok(format!(
        "{FLOOD_ROUNDS} ring errors and {FLOOD_ROUNDS} aborts provoked, {} hypervisor lines",
        report.console_lines.hyp
    ))
}

/// What is wrong with a flood probe's run; empty when every event was counted and the log
/// stayed bounded.
fn flood_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let want = format!(
        "{GUEST_LINE_PREFIX}flood probe: rounds {FLOOD_ROUNDS}, enabled {FLOOD_ROUNDS}, disabled {FLOOD_ROUNDS}, \
         aborts caught {FLOOD_ROUNDS}"
    );
    if !report.console_tail.contains(&want) {
        problems.push(format!("no `{want}` line"));
    }
    let count = |p: &str| report.hyp.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    for counter in ["/diagnostics/apf_ring_error", "/injected_aborts"] {
        if count(counter) < FLOOD_ROUNDS {
            problems.push(format!("hyp {counter} = {}, fewer than the {FLOOD_ROUNDS} provoked", count(counter)));
        }
    }
    if report.console_lines.hyp > FLOOD_MAX_HYP_LINES {
        problems.push(format!(
            "the hypervisor printed {} lines, more than {FLOOD_MAX_HYP_LINES}",
            report.console_lines.hyp
        ));
    }
    if report.exit_status != Some(0) {
        problems.push(format!("exit status {:?}, not 0 (SYSTEM_OFF)", report.exit_status));
    }
    problems
}

/// The table-walk probe runs with TCR_EL1.HA set while its level-3 tables are paged out and
/// back: the hardware's access-flag updates take stage-2 permission faults on the table walk,
/// which must be resolved as writes (a hypervisor that maps the table page read-only again
/// livelocks the vCPU; this test then times out).
pub fn tablewalk_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let mut plan = plan(root, "tablewalk", format!("rounds={TABLEWALK_ROUNDS}"), 90);
    plan.guest_mib = 128;
    plan.resident_mib = Some(8);
    let report = run::run(root, tc, &plan, true)?;
    let problems = tablewalk_problems(&report);
    passed(&report, TABLEWALK, &problems)?;
    let count = |p: &str| report.hyp.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(format!(
        "{} faults on table walks, {} of them writes; every access flag set, 0 mismatches",
        count("/table_walk_faults"),
        count("/table_walk_write_faults")
    ))
}

fn tablewalk_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(f) = report.failure.as_deref().filter(|f| !f.contains("no `@result` line")) {
        problems.push(f.to_string());
    }
    let loads = TABLEWALK_ROUNDS * (TABLEWALK_PAGES - TABLEWALK_PAGES / 16);
    let calls = TABLEWALK_ROUNDS * TABLEWALK_PAGES / 16;
    let want = format!(
        "{GUEST_LINE_PREFIX}tablewalk probe: rounds {TABLEWALK_ROUNDS}, loads {loads}, calls {calls}, mismatches 0, \
         access flags set by the walker {}, exceptions 0",
        TABLEWALK_ROUNDS * TABLEWALK_PAGES
    );
    if !report.console_tail.contains(&want) {
        problems.push(format!("no `{want}` line"));
    }
    let count = |p: &str| report.hyp.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    if count("/table_walk_write_faults") == 0 {
        problems.push("no stage-2 fault on a table walk needed a writable page: the case did not run".into());
    }
    if report.exit_status != Some(0) {
        problems.push(format!("exit status {:?}, not 0 (SYSTEM_OFF)", report.exit_status));
    }
    problems
}

/// The GIC probe never writes GICR_WAKER and must still get every SGI it sends itself and an
/// SPI it makes pending (KVM's and QEMU's behaviour).
pub fn gic_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let report = run::run(root, tc, &plan(root, "gic", String::new(), 20), true)?;
    let want = format!("{GUEST_LINE_PREFIX}gic probe: sgis 16 of 16, spis 1 of 1, GICR_WAKER never written");
    expect_line(&report, &want, GIC)?;
    Ok("16 SGIs and 1 SPI delivered to a guest that never wrote GICR_WAKER".into())
}

/// The timer probe checks the timers' level semantics (pending follows the output; disabling,
/// masking and re-arming withdraw it; still high after its deactivation, it is pending again),
/// that CNTV_CTL_EL0 stays as the guest wrote it, and the EL1 physical timer.
pub fn timer_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let report = run::run(root, tc, &plan(root, "timer", String::new(), 20), true)?;
    expect_line(&report, &format!("{GUEST_LINE_PREFIX}timer probe: 9 of 9 checks passed"), TIMER)?;
    Ok("9 of 9 timer checks".into())
}

/// On each CPU model the features probe runs on QEMU without the hypervisor (`--bare`: the CPU
/// model's own ID registers at EL1) and under it. Under the hypervisor every feature the ID
/// registers advertise must work at EL1 (FEAT_MOPS through HCRX_EL2.MSCEn, SVE and SME at their
/// largest vector lengths through ZCR_EL2 and SMCR_EL2, FA64, PAuth, …: [`FEATURE_LINES`], the
/// same as bare), and each ID register must read as the CPU's with exactly the fields
/// `asyncpf_core::trap::guest_id_register` changes (`features::HIDDEN`, a non-PMUv3 PMU).
pub fn features_test(root: &Path, tc: &Toolchain) -> Result<String> {
    const ID: &str = "features probe: id ";
    const RESULT: &str = "features probe: advertised ";
    let mut notes = Vec::new();
    for (cpu, want) in FEATURE_LINES {
        let mut lines = Vec::new();
        for bare in [true, false] {
            let mut plan = plan(root, "features", String::new(), 20);
            (plan.cpu, plan.bare) = (cpu.into(), bare);
            let report = run::run(root, tc, &plan, true)?;
            // Bare, the probe's lines are QEMU's console as it is; under the hypervisor they
            // carry the `[guest] ` prefix.
            let find = |what: &str| {
                report.console_tail.iter().find_map(|l| l.find(what).map(|at| l[at + what.len()..].to_string()))
            };
            let (Some(ids), Some(result)) = (find(ID), find(RESULT)) else {
                bail!("{FEATURES} on {cpu} (bare {bare}): no `{ID}` and `{RESULT}` lines; {:?}", report.failure);
            };
            if report.exit_status != Some(0) && !bare {
                bail!("{FEATURES} on {cpu}: exit status {:?}, not 0 (SYSTEM_OFF)", report.exit_status);
            }
            lines.push((parse_id_line(&ids)?, result));
        }
        let [(bare_ids, bare_result), (ids, result)] = &lines[..] else { unreachable!() };
        let mut problems = Vec::new();
        for (what, line) in [("under the hypervisor", result), ("bare", bare_result)] {
            if line != want {
                problems.push(format!("{what}: `{RESULT}{line}`, expected `{RESULT}{want}`"));
            }
        }
        for &(name, crm, op2) in &FEATURE_ID_REGISTERS {
            let (hw, guest) = (bare_ids[name], ids[name]);
            let id = asyncpf_core::trap::SysregId { op0: 3, op1: 0, crn: 0, crm, op2 };
            let expected = asyncpf_core::trap::guest_id_register(id, hw);
            if guest != expected {
                problems.push(format!("{name}: the guest reads {guest:#x}, expected {expected:#x} (bare {hw:#x})"));
            }
        }
        if !problems.is_empty() {
            bail!("{FEATURES} on {cpu}: {}", problems.join("; "));
        }
        notes.push(format!("{cpu}: {}", want.split(';').next().unwrap_or(want)));
    }
    Ok(format!("{}; ID registers as bare minus the hidden fields", notes.join("; ")))
}

/// `pfr0=0x… pfr1=0x… …` as a map.
fn parse_id_line(line: &str) -> Result<std::collections::BTreeMap<&'static str, u64>> {
    let mut values = std::collections::BTreeMap::new();
    for &(name, ..) in &FEATURE_ID_REGISTERS {
        let text = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in `{line}`"))?;
        let value = u64::from_str_radix(text.trim_start_matches("0x"), 16).with_context(|| format!("{name}={text}"))?;
        values.insert(name, value);
    }
    Ok(values)
}

/// On 2 vCPUs, the cpu-on probe turns CPU 1 on [`CPU_ON_ROUNDS`] times; each time a second
/// CPU_ON right after the first must answer ALREADY_ON and AFFINITY_INFO must answer ON, as on
/// KVM (before, both answered ON_PENDING while CPU 1's physical CPU was waking up), and CPU 1
/// must come up, stay ON while it runs and go OFF after its CPU_OFF; each power-on must find
/// CPU 1's PMU reset although it left it counting with its overflow interrupt raised.
pub fn cpu_on_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let r = CPU_ON_ROUNDS;
    let want = format!(
        "{GUEST_LINE_PREFIX}cpu-on probe: rounds {r}, off before {r}, first SUCCESS {r}, second ALREADY_ON {r} \
         ON_PENDING 0 other 0, at once ON {r} ON_PENDING 0 other 0, came up {r}, on while up {r}, went off {r}, \
         PMU reset at power-on true"
    );
    // With threads per CPU (no -icount) CPU 1 may well be up before the second call; under
    // -icount QEMU runs the CPUs round robin, so CPU 1 is still starting when CPU 0 asks.
    for icount in [None, Some(3)] {
        let mut plan = plan(root, "cpu_on", format!("rounds={r}"), 30);
        (plan.vcpus, plan.pcpus, plan.icount) = (2, 2, icount);
        let report = run::run(root, tc, &plan, true)?;
        expect_line(&report, &want, CPU_ON).with_context(|| format!("icount {icount:?}"))?;
    }
    Ok(format!(
        "{r} rounds, with and without -icount: a second CPU_ON ALREADY_ON and AFFINITY_INFO ON while CPU 1 starts"
    ))
}

/// On each CPU model the pmu probe runs on QEMU without the hypervisor (`--bare`: the
/// hardware's PMUVer, PerfMon and PMCR_EL0.N) and under it: the guest must see the same values,
/// pass all its checks (cycle counter at EL1 and EL0, the P and U filters, SW_INCR from EL1 and
/// EL0, CPU_CYCLES, the device tree's INTID 23, the overflow interrupt as a level) and report
/// [`PMU_EL2_LINES`]' answers about counting at EL2.
pub fn pmu_test(root: &Path, tc: &Toolchain) -> Result<String> {
    const ID: &str = "pmu probe: pmuver ";
    let mut ids = Vec::new();
    for (cpu, el2) in PMU_EL2_LINES {
        let mut bare = plan(root, "pmu", String::new(), 20);
        (bare.cpu, bare.bare) = (cpu.into(), true);
        let report = run::run(root, tc, &bare, true)?;
        let Some(hardware) = report.console_tail.iter().find_map(|l| l.find(ID).map(|at| l[at..].to_string())) else {
            passed(&report, PMU, &[format!("no `{ID}...` line from the bare run on {cpu}")])?;
            unreachable!("passed() fails when there are problems");
        };
        let mut hyp = plan(root, "pmu", String::new(), 30);
        hyp.cpu = cpu.into();
        let report = run::run(root, tc, &hyp, true)?;
        let want = [
            format!("{GUEST_LINE_PREFIX}{hardware}"),
            format!("{GUEST_LINE_PREFIX}pmu probe: el2 kept out: {el2}"),
            format!("{GUEST_LINE_PREFIX}pmu probe: 11 of 11 checks passed"),
        ];
        let problems: Vec<String> = want
            .iter()
            .filter(|w| !report.console_tail.contains(w))
            .map(|w| format!("on {cpu}: no `{w}` line (the hardware says `{hardware}`)"))
            .chain((report.exit_status != Some(0)).then(|| format!("on {cpu}: exit status {:?}", report.exit_status)))
            .collect();
        passed(&report, PMU, &problems)?;
        ids.push(format!("{cpu}: {}", &hardware[ID.len()..]));
    }
    Ok(format!("PMU as the hardware's ({}), EL1/EL0 only, SW_INCR, overflow PPI 23", ids.join("; ")))
}

/// What QEMU's `-kernel` takes for arm64 besides an Image: the `gic` probe's ELF, loaded at its
/// segments' physical addresses and entered at `e_entry`, and the `raw` probe (linked at RAM +
/// 0x80000) as a flat binary, loaded and entered there. Each must run to its end.
pub fn kernel_kinds_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let elf = build::probe_elf(root, "gic");
    let mut elf_plan = plan(root, "gic", String::new(), 20);
    elf_plan.guest_kernel = Some(elf);
    let report = run::run(root, tc, &elf_plan, true)?;
    expect_line(
        &report,
        &format!("{GUEST_LINE_PREFIX}gic probe: sgis 16 of 16, spis 1 of 1, GICR_WAKER never written"),
        KERNEL_KINDS,
    )
    .context("the gic probe's ELF")?;

    let dir = run::temp_dir(root);
    fs::create_dir_all(&dir)?;
    let raw = dir.join(format!("raw-probe-{}.bin", std::process::id()));
    let elf_bytes = fs::read(build::probe_elf(root, "raw"))?;
    fs::write(&raw, crate::image::elf_to_image(&elf_bytes)?)?;
    let mut raw_plan = plan(root, "raw", String::new(), 20);
    raw_plan.guest_kernel = Some(raw.clone());
    raw_plan.kernel_kind = crate::image::KernelKindArg::Raw;
    let report = run::run(root, tc, &raw_plan, true);
    let _ = fs::remove_file(&raw);
    let report = report?;
    let ran = report.console_tail.iter().any(|l| {
        l.starts_with(&format!("{GUEST_LINE_PREFIX}raw probe: running at 0x4008"))
            && l.ends_with("device tree read yes")
    });
    let problems = if ran && report.ok {
        Vec::new()
    } else {
        vec![format!("the raw probe did not run at RAM + 0x80000 ({:?})", report.failure)]
    };
    passed(&report, KERNEL_KINDS, &problems)?;
    Ok("an ELF at its physical addresses, a raw binary at RAM + 0x80000".into())
}

/// APF_PIN (docs/abi.md §8.1) refuses misaligned, empty, out-of-RAM and wrapping requests with
/// INVALID_PARAMETER and one over the quota with OUT_OF_QUOTA, pins a good one (twice: the
/// second costs no quota), and answers NOT_SUPPORTED when RAM is not paged.
pub fn pin_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let names = ["misaligned", "empty", "below RAM", "past RAM", "wrapping", "whole RAM", "good", "again"];
    let line = |answers: [i64; 8]| {
        let parts: Vec<String> = names.iter().zip(answers).map(|(n, a)| format!("{n} {a}")).collect();
        format!("{GUEST_LINE_PREFIX}pin probe: {}", parts.join(", "))
    };
    let (inv, quota, ok, unsupported) = (
        asyncpf_contract::smccc::INVALID_PARAMETER,
        asyncpf_contract::apf::OUT_OF_QUOTA,
        asyncpf_contract::smccc::SUCCESS,
        asyncpf_contract::smccc::NOT_SUPPORTED,
    );
    for resident_mib in [Some(16), None] {
        let mut pin_plan = plan(root, "pin", "ram_mib=64".into(), 20);
        pin_plan.resident_mib = resident_mib;
        let report = run::run(root, tc, &pin_plan, true)?;
        let want = match resident_mib {
            Some(_) => line([inv, inv, inv, inv, inv, quota, ok, ok]),
            None => line([unsupported; 8]),
        };
        expect_line(&report, &want, PIN).with_context(|| format!("resident_mib {resident_mib:?}"))?;
        if resident_mib.is_some() && report.hyp.pointer("/apf/guest_pinned_pages").and_then(|v| v.as_u64()) != Some(2) {
            bail!("the hypervisor reports {:?} pinned pages, not 2", report.hyp.pointer("/apf/guest_pinned_pages"));
        }
    }
    Ok("bad requests INVALID_PARAMETER, over quota OUT_OF_QUOTA, good ones pinned once; unpaged NOT_SUPPORTED".into())
}

/// The backlog probe fills its ring without consuming it, makes 16 more completions wait in
/// the hypervisor, consumes the ring with no call and sleeps in `wfi` with no interrupt
/// enabled: the waiting entries must reach it (the hypervisor traps WFI while entries wait).
/// Before that fix the probe slept until the timeout.
pub fn backlog_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let mut backlog_plan = plan(root, "backlog", String::new(), 30);
    backlog_plan.resident_mib = Some(8);
    // A slow store, so that the park-or-wait rule (docs/abi.md §8.3) parks every fault.
    backlog_plan.backing.latency_us = 10_000;
    let report = run::run(root, tc, &backlog_plan, true)?;
    let want = format!(
        "{GUEST_LINE_PREFIX}backlog probe: accepted 80, filled 64, before wfi 64, posted after wfi 16, wfi returns 1, \
         tokens match true"
    );
    expect_line(&report, &want, BACKLOG)?;
    let counter = |path: &str| report.hyp.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0);
    let (queued, wfi_exits) = (counter("/apf/queued"), counter("/backlog_wfi_exits"));
    if queued < 16 || wfi_exits == 0 {
        bail!("the hypervisor counted {queued} queued completions and {wfi_exits} backlog WFI exits");
    }
    Ok(format!("16 waiting entries posted after 1 wfi ({queued} queued, {wfi_exits} WFI exits trapped)"))
}

/// FNV-1a, 64 bits: the initrd probe's checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A pseudo-random initrd is staged with `--initrd`, with guest RAM resident and paged
/// (`--resident-mib`, where the hypervisor preloads it as dirty pages); the probe finds it
/// through `/chosen` and checks its length and hash.
pub fn initrd_test(root: &Path, tc: &Toolchain) -> Result<String> {
    let dir = run::temp_dir(root);
    fs::create_dir_all(&dir)?;
    let file = dir.join(format!("initrd-test-{}", std::process::id()));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..INITRD_TEST_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(&file, &bytes)?;
    let fnv = fnv1a64(&bytes);
    let result: Result<()> = (|| {
        for resident_mib in [None, Some(8)] {
            let cmdline = format!("initrd_len={} initrd_fnv={fnv:#x}", bytes.len());
            let mut plan = plan(root, "initrd", cmdline, 30);
            plan.initrd = Some(file.clone());
            plan.resident_mib = resident_mib;
            let report = run::run(root, tc, &plan, true)?;
            let want = format!("{} bytes, fnv {fnv:#018x}, matches the file true", bytes.len());
            let found = report.ok
                && report.console_tail.iter().any(|l| l.starts_with("[guest] initrd probe: at ") && l.ends_with(&want));
            let problems = if found {
                Vec::new()
            } else {
                vec![format!("no `initrd probe: ... {want}` line ({:?})", report.failure)]
            };
            passed(&report, INITRD, &problems).with_context(|| format!("resident_mib {resident_mib:?}"))?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&file);
    result?;
    Ok(format!("{INITRD_TEST_BYTES} bytes found intact through /chosen, resident and paged"))
}

/// Ok when `problems` is empty; otherwise the console tail is shown and the problems are the error.
fn passed(report: &Report, test: &str, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    for line in &report.console_tail {
        println!("{test}: | {line}");
    }
    bail!("{}", problems.join("; "))
}

/// The run ended with the hypervisor's SYSTEM_OFF and its console has `want`.
fn expect_line(report: &Report, want: &str, test: &str) -> Result<()> {
    let problems = if report.console_tail.iter().any(|l| l == want) && report.exit_status == Some(0) {
        Vec::new()
    } else {
        vec![format!(
            "no `{want}` line before a SYSTEM_OFF (exit status {:?}, {:?})",
            report.exit_status, report.failure
        )]
    };
    passed(report, test, &problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contained() -> Report {
        let r: Report = serde_json::from_value(json!({
            "scenario": "probe-escape", "vcpus": 1, "pcpus": 1, "cpu": "max", "guest_mib": 64, "bare": false,
            "guest_kernel": "escape.Image", "qemu": "", "qemu_version": "", "icount": null, "seed": 1,
            "ok": true, "exit_status": 0, "qemu_exit_status": 0, "end": "system_off", "wall_seconds": 0.1, "per_vcpu": null,
            "console_lines": {"hyp": 4, "guest": 9, "other": 0},
            "host_load": 0,
            "hyp": {"end": "system_off"}, "guest": null, "backing_latency_us": 50, "backing_selftest": null,
            "resident_mib": null, "mem": null, "check": null,
            "failure": null, "console_tail": [
                "[guest] escape probe: semihosting calls 4, undefined 4",
                "[guest] [hyp] @exit 0",
                "[guest] escape probe: done, powering off",
            ]
        }))
        .unwrap();
        r
    }

    /// The checks pass on a contained run and catch each way of escaping.
    #[test]
    fn escape_checks() {
        assert_eq!(escape_problems(&contained(), &[], false), Vec::<String>::new());
        assert!(escape_problems(&contained(), &["/t/m".into()], false)[0].contains("created /t/m"));
        let mut served = contained();
        served.console_tail[0] = "[guest] escape probe: semihosting calls 4, undefined 3".into();
        assert!(escape_problems(&served, &[], false)[0].contains("semihosting call was served"));
        let mut forged = contained();
        forged.hyp = json!({"forged": true});
        let p = escape_problems(&forged, &[], false);
        assert!(p.iter().any(|m| m.contains("forged result was taken")), "{p:?}");
        // The spinning probe's run must time out: ending with status 0 means a forged exit won.
        let p = escape_problems(&contained(), &[], true);
        assert!(p.iter().any(|m| m.contains("not timeout")), "{p:?}");
        let mut timed_out = contained();
        (timed_out.end, timed_out.exit_status, timed_out.ok, timed_out.hyp) =
            ("timeout".into(), None, false, json!(null));
        assert_eq!(escape_problems(&timed_out, &[], true), Vec::<String>::new());
    }

    #[test]
    fn flood_checks() {
        let mut r = contained();
        r.console_tail = vec![format!(
            "[guest] flood probe: rounds {FLOOD_ROUNDS}, enabled {FLOOD_ROUNDS}, disabled {FLOOD_ROUNDS}, aborts caught {FLOOD_ROUNDS}"
        )];
        r.hyp = json!({"end": "system_off", "injected_aborts": FLOOD_ROUNDS, "diagnostics": {"apf_ring_error": FLOOD_ROUNDS}});
        r.console_lines.hyp = 20;
        assert_eq!(flood_problems(&r), Vec::<String>::new());
        r.console_lines.hyp = FLOOD_ROUNDS + 4;
        r.hyp["diagnostics"]["apf_ring_error"] = json!(1);
        let p = flood_problems(&r);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("apf_ring_error = 1") && p[1].contains("printed 2004 lines"), "{p:?}");
    }

    #[test]
    fn tablewalk_checks() {
        let mut r = contained();
        r.console_tail = vec![
            "[guest] tablewalk probe: rounds 2, loads 7680, calls 512, mismatches 0, access flags set by the walker 8192, exceptions 0".into(),
        ];
        r.hyp = json!({"table_walk_faults": 900, "table_walk_write_faults": 40});
        assert_eq!(tablewalk_problems(&r), Vec::<String>::new());
        r.failure = Some("timed out after 90 s; QEMU was killed".into());
        r.hyp["table_walk_write_faults"] = json!(0);
        r.exit_status = None;
        assert_eq!(tablewalk_problems(&r).len(), 3, "{:?}", tablewalk_problems(&r));
    }
}
