use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::bench::SCENARIO;
use crate::cli::tests::parse_run;
use crate::cli::{parse_from, Command, Given, RunArgs, RunPlan};

use super::figures::{check_run, Comparison, Ratios, Row};
use super::plan::{plan, selected, ComparePlan};
use super::report::{default_json, table, Settings, LATENCY_MODEL};
use super::Mode;

/// `run` options as `main` gets them from `cargo xtask run ARGS`.
fn parse(args: &[&str]) -> (RunArgs, Given) {
    let mut argv = vec!["xtask", "run"];
    argv.extend_from_slice(args);
    match parse_from(argv).expect("arguments parse") {
        (crate::cli::Cli { command: Command::Run(r) }, given) => (r, given),
        (other, _) => panic!("expected run, got {other:?}"),
    }
}

fn plan_of(args: &[&str]) -> Result<ComparePlan> {
    let (args, given) = parse(args);
    plan(&args, &given)
}

/// What `cargo xtask run --scenario overcommit ... --guest-cmdline apf=...` plans, with the
/// hypervisor's lock-order check off (`lockcheck=0`), as in every measured run.
fn scenario_plan(vcpus: &str, g: &str, r: &str, l: &str, icount: &str, apf: &str, extra: &[&str]) -> RunPlan {
    let mut args = vec!["--scenario", SCENARIO, "--vcpus", vcpus, "--pcpus", vcpus, "--guest-mib", g];
    args.extend(["--resident-mib", r, "--backing-latency-us", l, "--icount", icount, "--guest-cmdline", apf]);
    args.extend(["--quiet", "--no-build", "--tasks", "8"]);
    args.extend_from_slice(extra);
    let plan = parse_run(&args).validate().unwrap();
    assert!(plan.lock_check, "checked by default");
    RunPlan { lock_check: false, ..plan }
}

#[test]
fn default_plan() {
    let p = plan_of(&[]).unwrap();
    assert_eq!(
        (p.params.vcpus, p.params.guest_mib, p.params.resident_mib, p.params.latency_us, p.params.icount),
        (1, 64, 12, 1000, 3)
    );
    assert_eq!((p.params.seed, p.params.cpu.as_str(), p.params.timeout_secs, p.json.as_ref()), (1, "max", 120, None));
    assert!(!p.quiet && !p.no_build);
    let modes: Vec<Mode> = p.runs.iter().map(|r| r.mode).collect();
    assert_eq!(modes, Mode::ALL);
    let want = [
        scenario_plan("1", "64", "64", "1000", "3", "apf=off", &[]),
        scenario_plan("1", "64", "12", "1000", "3", "apf=off", &[]),
        scenario_plan("1", "64", "12", "1000", "3", "apf=on", &[]),
    ];
    for (run, want) in p.runs.iter().zip(&want) {
        assert_eq!(&run.plan, want, "{:?}", run.mode);
    }
    // Spelled out once: the three runs differ only in R and apf.
    let r = &p.runs[2].plan;
    assert_eq!(
        (r.scenario.as_str(), r.vcpus, r.pcpus, r.guest_mib, r.resident_mib),
        ("overcommit", 1, 1, 64, Some(12))
    );
    assert_eq!((r.icount, r.backing.latency_us, r.guest_cmdline.as_deref()), (Some(3), 1000, Some("apf=on tasks=8")));
    assert!(r.quiet && !r.bare && r.json.is_none() && r.guest_kernel.is_none());
    assert_eq!(p.runs[0].plan.resident_mib, Some(64), "the reference run has R = G");
    assert_eq!(p.params.host_load, 0);
    assert!(p.runs.iter().all(|r| r.plan.host_load == 0));
}

#[test]
fn host_load_goes_to_every_run_and_the_settings() {
    let p = plan_of(&["--host-load", "2"]).unwrap();
    assert_eq!(p.params.host_load, 2);
    assert!(p.runs.iter().all(|r| r.plan.host_load == 2));
    let settings = Settings::new(&p, "QEMU 10");
    assert_eq!(settings.host_load, 2);
    assert!(settings.header().contains("host load: 2 busy process(es)"), "{}", settings.header());
    assert_eq!(serde_json::to_value(&settings).unwrap()["host_load"], 2);
}

#[test]
fn overrides() {
    let p = plan_of(&[
        "--vcpus",
        "2",
        "--guest-mib",
        "128",
        "--resident-mib",
        "32",
        "--backing-latency-us",
        "200",
        "--icount",
        "4",
        "--seed",
        "9",
        "--cpu",
        "a64fx",
        "--timeout",
        "60",
        "--json",
        "c.json",
        "--quiet",
        "--no-build",
    ])
    .unwrap();
    assert_eq!(
        (p.params.vcpus, p.params.guest_mib, p.params.resident_mib, p.params.latency_us, p.params.icount),
        (2, 128, 32, 200, 4)
    );
    assert_eq!((p.params.seed, p.params.cpu.as_str(), p.params.timeout_secs), (9, "a64fx", 60));
    assert_eq!(p.json.as_deref(), Some(Path::new("c.json")));
    assert!(p.quiet && p.no_build);
    let extra = ["--seed", "9", "--cpu", "a64fx", "--timeout", "60"];
    let want = [
        scenario_plan("2", "128", "128", "200", "4", "apf=off", &extra),
        scenario_plan("2", "128", "32", "200", "4", "apf=off", &extra),
        scenario_plan("2", "128", "32", "200", "4", "apf=on", &extra),
    ];
    for (run, want) in p.runs.iter().zip(&want) {
        assert_eq!(&run.plan, want, "{:?}", run.mode);
        assert_eq!(run.plan.json, None, "--json is the comparison's document, not a run's report");
    }
}

#[test]
fn given_values_equal_to_run_defaults_are_kept() {
    // `run`'s own defaults are G = 128 and L = 50; given explicitly, they are not replaced
    // by the comparison's.
    let p = plan_of(&["--guest-mib", "128", "--backing-latency-us", "50"]).unwrap();
    assert_eq!((p.params.guest_mib, p.params.latency_us), (128, 50));
    let p = plan_of(&["--backing-latency-us", "0"]).unwrap();
    assert_eq!((p.params.guest_mib, p.params.latency_us), (64, 0));
}

#[test]
fn refuses_options_that_do_not_apply() {
    for (args, option) in [
        (&["--pcpus", "2"][..], "--pcpus"),
        (&["--guest-cmdline", "apf=on"], "--guest-cmdline"),
        (&["--guest-cmdline", " "], "--guest-cmdline"),
        (&["--bare"], "--bare"),
        (&["--backing-selftest", "64"], "--backing-selftest"),
        (&["--backing-selftest", "0"], "--backing-selftest"),
        (&["--inject-read-errors", "5"], "--inject-read-errors"),
        (&["--inject-write-errors", "5"], "--inject-write-errors"),
    ] {
        let err = plan_of(args).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{option} does not apply")), "{args:?}: {err}");
        assert!(err.contains("--scenario NAME"), "{err}");
    }
    for r in ["64", "100"] {
        let err = plan_of(&["--resident-mib", r]).unwrap_err().to_string();
        assert!(err.contains("is not below --guest-mib 64"), "{err}");
    }
    let err = plan_of(&["--guest-mib", "128", "--resident-mib", "128"]).unwrap_err().to_string();
    assert!(err.contains("not below --guest-mib 128"), "{err}");
    // `run`'s own validation applies to every run.
    let err = format!("{:#}", plan_of(&["--resident-mib", "3"]).unwrap_err());
    assert!(err.contains("synchronous run") && err.contains("out of range 4..=4096"), "{err}");
    assert!(format!("{:#}", plan_of(&["--guest-mib", "8"]).unwrap_err()).contains("--guest-mib 8 is out of range"));
    assert!(plan_of(&["--icount", "11"]).is_err());
    assert!(plan_of(&["--vcpus", "0"]).is_err());
    assert!(plan_of(&["--backing-latency-us", "1000001"]).is_err());
    assert!(plan_of(&["--timeout", "0"]).is_err());
    assert!(plan_of(&["--cpu", "max,sve=off"]).is_err());
}

#[test]
fn a_scenario_run_is_planned_as_before() {
    let (args, given) = parse(&[]);
    assert!(!given.contains("scenario"), "no --scenario: the comparison");
    let (smp, given) = parse(&["--scenario", "smp"]);
    assert!(given.contains("scenario"));
    // `--scenario smp` plans exactly what `run` without options planned before it became
    // the comparison (the `cli` tests pin that plan's values).
    assert_eq!(smp.validate().unwrap(), args.validate().unwrap());
    assert_eq!(smp.validate().unwrap(), parse_run(&[]).validate().unwrap());
    let p = smp.validate().unwrap();
    assert_eq!((p.scenario.as_str(), p.vcpus, p.pcpus, p.guest_mib, p.icount), ("smp", 4, 4, 128, None));
    assert_eq!((p.backing.latency_us, p.resident_mib), (asyncpf_contract::runner::DEFAULT_BACKING_LATENCY_US, None));
    assert!(!selected(&smp, &given));
    let err = plan(&smp, &given).unwrap_err();
    assert!(err.to_string().contains("a single run"), "{err}");
    // Other scenario runs keep their options too, including those the comparison refuses.
    let (oc, given) = parse(&["--scenario", "overcommit", "--bare", "--vcpus", "2"]);
    assert!(given.contains("scenario"));
    assert!(oc.validate().unwrap().bare);
}

#[test]
fn a_foreign_kernel_is_a_single_run() {
    assert!(selected(&parse(&[]).0, &parse(&[]).1));
    // As in the README's Linux example and the suite's not-an-image test: no --scenario.
    let argv = ["--guest-kernel", "/tmp/vmlinuz", "--vcpus", "2", "--guest-mib", "256", "--guest-cmdline", "x"];
    let (args, given) = parse(&argv);
    assert!(!selected(&args, &given));
    assert_eq!(args.validate().unwrap(), parse_run(&argv).validate().unwrap());
    assert!(plan(&args, &given).unwrap_err().to_string().contains("a single run"));
}

/// A report of the shape `cargo xtask run --json` writes for an `overcommit` run.
fn report(mode: Mode) -> Value {
    let (elapsed, phases, page_ins, async_faults, blocking, stall) = match mode {
        Mode::Reference => (4098, [1221, 1073, 869, 934], 0, 0, 0, 0.0),
        Mode::Synchronous => (48754, [5987, 14382, 13605, 14779], 42288, 0, 42301, 1010.8),
        Mode::Asynchronous => (21519, [5582, 5331, 5031, 5574], 42389, 39233, 4100, 1007.7),
    };
    let apf_cpus = u64::from(mode.apf());
    json!({
        "scenario": "overcommit", "ok": true, "failure": null, "vcpus": 1, "wall_seconds": 5.2,
        "backing_latency_us": 1000, "resident_mib": if mode == Mode::Reference { 64 } else { 12 },
        "hyp": {"async_faults": async_faults,
            "apf": {"dispatched": async_faults, "accepted": async_faults, "declined": 0,
                "completed": async_faults, "posted": async_faults, "wake_alls": 0,
                "enabled_vcpus": apf_cpus},
            "mem": {"page_ins": page_ins, "blocking_faults": blocking, "fault_stall_us_mean": stall,
                "backing_latency_us": 1000}},
        "mem": {"page_ins": page_ins, "blocking_faults": blocking, "fault_stall_us_mean": stall,
            "backing_latency_us": 1000},
        "guest": {"ok": true, "elapsed_ms": elapsed,
            "phases_ms": {"write": phases[0], "verify": phases[1], "mix": phases[2], "final_verify": phases[3]},
            "apf": {"requested": mode.apf(), "enabled_cpus": apf_cpus, "accepted": async_faults,
                "declined": 0, "page_ready_tokens": async_faults, "woken": async_faults, "wake_alls": 0,
                "ring_errors": 0},
            "check": {"words_checked": 19181056, "mismatches": 0}},
        "check": {"words_checked": 19181056, "mismatches": 0}
    })
}

fn rows() -> Vec<Row> {
    Mode::ALL.map(|m| Row::from_report(m, 1000, if m == Mode::Reference { 64 } else { 12 }, &report(m))).to_vec()
}

/// exits_per_async_fault = 1 + (async - sync guest-caused exits) / async faults; missing
/// counters give none.
#[test]
fn exits_per_async_fault() {
    let with_exits = |mode: Mode, exits: u64, irq: u64| {
        let mut v = report(mode);
        v["hyp"]["exits"] = json!(exits);
        v["hyp"]["irq_exits"] = json!(irq);
        Row::from_report(mode, 1000, 12, &v)
    };
    // Sync: 50,000 exits, 5,000 of them interrupts; async: 140,000 and 17,000, 39,233 faults.
    let rows = [with_exits(Mode::Synchronous, 50_000, 5_000), with_exits(Mode::Asynchronous, 140_000, 17_000)];
    assert_eq!(rows[1].guest_exits, Some(123_000));
    let c = Comparison::of(&rows, 8);
    assert_eq!(c.exits_per_async_fault, Some(2.988), "1 + (123000 - 45000) / 39233");
    assert_eq!(Comparison::of(&self::rows(), 8).exits_per_async_fault, None, "no exit counters");
}

/// The hypervisor's own time per asynchronous fault: its three parts over the asynchronous
/// faults; exits_per_async_fault is not given when most faults waited.
#[test]
fn hypervisor_time_per_async_fault_and_mostly_synchronous_runs() {
    let mut v = report(Mode::Asynchronous);
    let faults = v["hyp"]["async_faults"].as_u64().unwrap();
    v["hyp"]["el2_ns_async_fault"] = json!(faults * 4_000);
    v["hyp"]["el2_ns_handler_answer"] = json!(faults * 3_500);
    v["hyp"]["el2_ns_interrupt"] = json!(faults * 1_250);
    let rows = [
        Row::from_report(Mode::Synchronous, 1000, 12, &report(Mode::Synchronous)),
        Row::from_report(Mode::Asynchronous, 1000, 12, &v),
    ];
    let c = Comparison::of(&rows, 8);
    assert_eq!(c.hyp_us_per_async_fault_parts, Some([4.0, 3.5, 1.25]));
    assert_eq!(c.hyp_us_per_async_fault, Some(8.75));
    assert_eq!(Comparison::of(&self::rows(), 8).hyp_us_per_async_fault, None, "no counters");

    let with_exits = |mode: Mode, blocking: u64| {
        let mut v = report(mode);
        v["hyp"]["exits"] = json!(50_000);
        v["hyp"]["irq_exits"] = json!(0);
        v["mem"]["blocking_faults"] = json!(blocking);
        Row::from_report(mode, 0, 12, &v)
    };
    let f = v["hyp"]["async_faults"].as_u64().unwrap();
    let mostly_sync = [with_exits(Mode::Synchronous, 40_000), with_exits(Mode::Asynchronous, f + 1)];
    assert_eq!(Comparison::of(&mostly_sync, 8).exits_per_async_fault, None);
    let mostly_async = [with_exits(Mode::Synchronous, 40_000), with_exits(Mode::Asynchronous, f)];
    assert_eq!(Comparison::of(&mostly_async, 8).exits_per_async_fault, Some(1.0));
}

#[test]
fn ratios() {
    let r = Ratios::new(Some(4050), Some(48671), Some(22108));
    assert_eq!(r.speedup, Some(2.202), "48671 / 22108");
    assert_eq!(r.latency_hidden_pct, Some(59.5), "26563 / 44621");
    assert_eq!(r.async_vs_bound, Some(5.459), "22108 / 4050");
    assert_eq!((r.reference_ms, r.synchronous_ms, r.asynchronous_ms), (Some(4050), Some(48671), Some(22108)));
    // At the floor: all of it hidden; slower than synchronous: negative, shown as it is.
    assert_eq!(Ratios::new(Some(100), Some(300), Some(100)).latency_hidden_pct, Some(100.0));
    assert_eq!(Ratios::new(Some(100), Some(300), Some(400)).latency_hidden_pct, Some(-50.0));
    assert_eq!(Ratios::new(Some(100), Some(300), Some(50)).latency_hidden_pct, Some(125.0));
}

#[test]
fn ratio_division_guards() {
    let r = Ratios::new(Some(0), Some(10), Some(0));
    assert_eq!((r.speedup, r.async_vs_bound), (None, None), "no division by a zero time");
    assert_eq!(r.latency_hidden_pct, Some(100.0));
    // No fault latency to hide (sync at or below the floor): no percentage.
    assert_eq!(Ratios::new(Some(500), Some(500), Some(400)).latency_hidden_pct, None);
    assert_eq!(Ratios::new(Some(600), Some(500), Some(400)).latency_hidden_pct, None);
    // A missing time: no ratio that needs it.
    let r = Ratios::new(None, Some(500), Some(250));
    assert_eq!((r.speedup, r.latency_hidden_pct, r.async_vs_bound), (Some(2.0), None, None));
    let r = Ratios::new(Some(100), Some(500), None);
    assert_eq!((r.speedup, r.latency_hidden_pct, r.async_vs_bound), (None, None, None));
    let lines = r.lines();
    assert!(lines.contains("= 500 / -") && lines.contains("= - / 100") && lines.contains("= -\n"), "{lines}");
}

#[test]
fn rows_and_comparison_from_reports() {
    let rows = rows();
    let a = &rows[2];
    assert_eq!((a.run, a.apf, a.async_faults, a.fault_bound_ms), (Mode::Asynchronous, true, Some(39233), Some(15936)));
    assert_eq!(
        (a.figures.elapsed_ms, a.figures.page_ins, a.figures.blocking_faults),
        (Some(21519), Some(42389), Some(4100))
    );
    assert_eq!(
        (a.figures.stall_mean_us, a.figures.mismatches, a.phase_ms("write")),
        (Some(1007.7), Some(0), Some(5582))
    );
    assert_eq!(rows[0].figures.stall_mean_us, None, "no blocking fault: no stall figure");
    assert_eq!(rows[0].fault_bound_ms, Some(2876));

    let c = Comparison::of(&rows, 3);
    assert_eq!(c.elapsed, Ratios::new(Some(4098), Some(48754), Some(21519)).with_tasks(3));
    // The bound: 3 tasks allow at most 3x (sync / ref would allow 11.9x).
    assert_eq!(c.elapsed.speedup_bound, Some(3.0));
    let many = Ratios::new(Some(4098), Some(48754), Some(21519)).with_tasks(16);
    assert_eq!(many.speedup_bound, Some(11.897), "48754 / 4098: no better than the reference");
    assert_eq!(
        (c.elapsed.speedup, c.elapsed.latency_hidden_pct, c.elapsed.async_vs_bound),
        (Some(2.266), Some(61.0), Some(5.251))
    );
    assert_eq!(c.fault_bound_phases, Ratios::new(Some(2876), Some(42766), Some(15936)).with_tasks(3));
    assert_eq!(c.fault_bound_phases.latency_hidden_pct, Some(67.3));

    // A missing phase: no fault-bound time, and no ratio from it.
    let mut v = report(Mode::Asynchronous);
    v["guest"]["phases_ms"].as_object_mut().unwrap().remove("mix");
    let mut rows = rows;
    rows[2] = Row::from_report(Mode::Asynchronous, 1000, 12, &v);
    assert_eq!(rows[2].fault_bound_ms, None);
    let c = Comparison::of(&rows, 3);
    assert_eq!((c.fault_bound_phases.speedup, c.fault_bound_phases.latency_hidden_pct), (None, None));
    assert_eq!(c.elapsed.speedup, Some(2.266));
    // A missing run: no ratio from it.
    let c = Comparison::of(&rows[..2], 3);
    assert_eq!((c.elapsed.asynchronous_ms, c.elapsed.speedup), (None, None));
}

#[test]
fn correct_runs_pass() {
    for mode in Mode::ALL {
        assert_eq!(check_run(mode, 1, &report(mode)), Vec::<String>::new(), "{mode:?}");
    }
}

/// The failures of `mode`'s report changed by `edit`.
fn failures_of(mode: Mode, vcpus: u32, edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = report(mode);
    edit(&mut v);
    check_run(mode, vcpus, &v)
}

fn one(failures: Vec<String>, want: &str) {
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains(want), "{want:?} not in {failures:?}");
}

#[test]
fn each_failure_has_its_message() {
    one(
        failures_of(Mode::Reference, 1, |v| {
            v["ok"] = json!(false);
            v["failure"] = json!("timed out after 120 s; QEMU was killed");
        }),
        "reference run failed: timed out after 120 s",
    );
    one(
        failures_of(Mode::Synchronous, 1, |v| v["check"]["mismatches"] = json!(3)),
        "synchronous run: the integrity check found 3 mismatched words",
    );
    one(
        failures_of(Mode::Synchronous, 1, |v| v["check"] = Value::Null),
        "synchronous run: the report has no check.mismatches",
    );
    one(
        failures_of(Mode::Asynchronous, 1, |v| v["hyp"]["apf"]["posted"] = json!(39232)),
        "accepted 39233 asynchronous page faults and posted 39232 page_ready entries with 0 wake-alls",
    );
    one(
        failures_of(Mode::Synchronous, 1, |v| v["hyp"]["apf"] = Value::Null),
        "synchronous run: the report has no hyp.apf",
    );
    one(
        failures_of(Mode::Asynchronous, 1, |v| v["hyp"]["async_faults"] = json!(0)),
        "asynchronous run: no page fault was resolved asynchronously",
    );
    one(failures_of(Mode::Asynchronous, 2, |_| {}), "the guest enabled asynchronous page faults on 1 of its 2 vCPUs");
    one(failures_of(Mode::Asynchronous, 1, |v| v["guest"]["apf"]["enabled_cpus"] = json!(0)), "on 0 of its 1 vCPUs");
    one(
        failures_of(Mode::Synchronous, 1, |v| v["hyp"]["async_faults"] = json!(5)),
        "synchronous run (apf=off): the hypervisor delivered 5 asynchronous page faults",
    );
    one(
        failures_of(Mode::Reference, 1, |v| v["hyp"]["async_faults"] = json!(1)),
        "reference run (apf=off): the hypervisor delivered 1 asynchronous",
    );
    one(
        failures_of(Mode::Asynchronous, 1, |v| {
            v["hyp"].as_object_mut().unwrap().remove("async_faults");
        }),
        "asynchronous run: the report has no hyp.async_faults",
    );
    one(
        failures_of(Mode::Asynchronous, 1, |v| v["guest"]["apf"] = Value::Null),
        "asynchronous run: the report has no guest.apf.enabled_cpus",
    );
    // Both missing in an ok run: one message each.
    assert_eq!(failures_of(Mode::Asynchronous, 1, |v| v["hyp"] = json!({})).len(), 2);
}

#[test]
fn several_failures_and_a_run_that_never_ran() {
    let f = failures_of(Mode::Asynchronous, 2, |v| {
        v["check"]["mismatches"] = json!(1);
        v["hyp"]["async_faults"] = json!(0);
    });
    assert_eq!(f.len(), 3, "{f:?}");
    // A run that could not start: one message, not one per missing figure.
    let v = json!({"scenario": SCENARIO, "ok": false, "failure": "cannot start QEMU"});
    assert_eq!(check_run(Mode::Asynchronous, 1, &v), ["asynchronous run failed: cannot start QEMU"]);
    assert_eq!(check_run(Mode::Synchronous, 1, &Value::Null), ["synchronous run failed: the run did not succeed"]);
    let row = Row::from_report(Mode::Asynchronous, 1000, 12, &v);
    assert_eq!((row.figures.elapsed_ms, row.async_faults, row.fault_bound_ms), (None, None, None));
    assert!(table(&[row]).lines().nth(1).unwrap().ends_with("    -          -"), "missing figures show as -");
}

#[test]
fn table_lines() {
    let t = table(&rows());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4);
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "run",
            "R_MiB",
            "apf",
            "elapsed_ms",
            "write",
            "verify",
            "mix",
            "final_verify",
            "page_ins",
            "async_faults",
            "blocking_faults",
            "stall_mean_us",
            "mismatches"
        ]
    );
    let cols: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        cols,
        ["asynchronous", "12", "on", "21519", "5582", "5331", "5031", "5574", "42389", "39233", "4100", "1007.7", "0"]
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols, ["reference", "64", "off", "4098", "1221", "1073", "869", "934", "0", "0", "0", "-", "0"]);
    for line in &lines[1..] {
        assert_eq!(line.len(), lines[0].len(), "aligned: {t}");
    }
}

#[test]
fn ratio_lines() {
    let l = Comparison::of(&rows(), 3).elapsed.lines();
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[3].contains("min(T, sync / ref)") && lines[3].ends_with("= 3.00x (measured: 76 % of it)"), "{l}");
    assert!(lines[0].contains("sync / async") && lines[0].ends_with("48754 / 21519     = 2.27x"), "{l}");
    assert!(lines[1].ends_with("27235 / 44656     = 61.0 %"), "{l}");
    assert!(lines[2].ends_with("21519 / 4098      = 5.25x"), "{l}");
}

#[test]
fn header_has_the_settings() {
    let p = plan_of(&["--vcpus", "2", "--seed", "7"]).unwrap();
    let s = Settings::new(&p, "QEMU emulator version 10.0.2");
    assert_eq!((s.ns_per_instruction, s.pcpus, s.reference_resident_mib), (8, 2, 64));
    let cmdlines: Vec<&str> = s.runs.iter().map(|r| r.guest_cmdline.as_str()).collect();
    assert_eq!(cmdlines, ["apf=off tasks=8", "apf=off tasks=8", "apf=on tasks=8"]);
    let h = s.header();
    for want in [
        "QEMU emulator version 10.0.2",
        "-icount shift=3,sleep=off: virtual time, 8 ns per guest instruction",
        "2 vCPU(s) on 2 physical CPU(s)",
        "cpu max",
        "seed 7",
        "G = 64 MiB, resident R = 12 MiB, backing-store latency L = 1000 µs",
        LATENCY_MODEL,
        "8 tasks per vCPU (--tasks)",
        "reference    R =   64 MiB, apf=off tasks=8",
        "synchronous  R =   12 MiB, apf=off tasks=8",
        "asynchronous R =   12 MiB, apf=on tasks=8",
        "under -icount QEMU runs the 2 vCPUs one at a time on one host thread",
    ] {
        assert!(h.contains(want), "{want:?} missing from {h}");
    }
    let one = Settings::new(&plan_of(&[]).unwrap(), "QEMU emulator version 10.0.2").header();
    assert!(!one.contains("one at a time"), "{one}");
}

#[test]
fn json_paths() {
    let root = Path::new("/w");
    assert_eq!(default_json(root), Path::new("/w/target/xtask/compare/overcommit-apf.json"));
}
