//! `cargo xtask linux --apf`: the Linux client's benchmark.
//!
//! apftouch (P processes per vCPU, each touching its own part of a working set larger than the
//! resident memory, checking every word) runs on the patched kernel three ways, as the main job
//! runs its workload:
//!
//! - **reference**: R = G, so the pager runs but nothing leaves memory: the time of the work;
//! - **synchronous**: R < G with `asyncpf=off`: every fault stalls its vCPU for the read;
//! - **asynchronous**: R < G with the client on: a user fault parks its task, others run.
//!
//! Under `-icount` the times are apftouch's own (CLOCK_MONOTONIC, i.e. the guest's virtual
//! counter), which is model time: the hypervisor hides from it what its polls cost the host,
//! so the figures do not depend on the host's load. The latency model gives every backing-store
//! request at least L µs of that time.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::cli::LinuxArgs;
pub use crate::compare::Mode;
use crate::toolchain::Toolchain;
use crate::userspace::{field, row_problems, run_workload, workload_initrd, LinuxRun, WorkloadRow};

/// The main job's three runs ([`Mode`]) on Linux: the client off (`asyncpf=off`) in the
/// synchronous row, on in the others (in the reference nothing is paged out).
pub fn kernel_arg(mode: Mode) -> &'static str {
    match mode {
        Mode::Synchronous => "asyncpf=off",
        Mode::Reference | Mode::Asynchronous => "",
    }
}

/// apftouch's time in seconds (model time under -icount).
pub fn touch_seconds(row: &WorkloadRow) -> Option<f64> {
    row.touch.as_ref()?.get("seconds")?.as_f64()
}

fn client_count(row: &WorkloadRow, key: &str) -> Option<u64> {
    row.client.as_ref()?.get(key)?.as_u64()
}

fn hyp_count(row: &WorkloadRow, key: &str) -> Option<u64> {
    row.hyp_apf.as_ref()?.get(key)?.as_u64()
}

/// Why an APF row failed: [`row_problems`] (the run, apftouch's errors, the kernel log) and
/// what the mode requires of the client and the hypervisor.
pub fn apf_problems(mode: Mode, row: &WorkloadRow) -> Vec<String> {
    problems(mode, row, false)
}

/// [`apf_problems`] of an asynchronous row whose early page_ready allocations were failed on
/// purpose (`asyncpf_fail=P`): `no_memory` must then be counted, and every task still woken.
pub fn apf_problems_with_lost_allocations(row: &WorkloadRow) -> Vec<String> {
    let mut problems = problems(Mode::Asynchronous, row, true);
    if client_count(row, "no_memory").unwrap_or(0) == 0 {
        problems.push(format!("the injected allocation failures did not show as no_memory: {:?}", row.client));
    }
    problems
}

fn problems(mode: Mode, row: &WorkloadRow, lost_allocations: bool) -> Vec<String> {
    let mut problems = row_problems(row);
    if row.touch.is_none() || touch_seconds(row).is_none() {
        problems.push("no apftouch result".into());
    }
    match mode {
        Mode::Reference => {
            if row.page_outs.unwrap_or(0) != 0 {
                problems.push(format!("the reference paged out {:?} pages (R must hold G)", row.page_outs));
            }
        }
        Mode::Synchronous => {
            if client_count(row, "accepted").unwrap_or(0) != 0 || hyp_count(row, "dispatched").unwrap_or(0) != 0 {
                problems.push(format!("asyncpf=off, yet faults were delivered: {:?} {:?}", row.client, row.hyp_apf));
            }
        }
        Mode::Asynchronous => {
            // The counters are read when apftouch has ended and the script's one process runs:
            // every accepted task has been woken by then.
            let accepted = client_count(row, "accepted").unwrap_or(0);
            if accepted == 0 {
                problems.push(format!("the client accepted no fault: {:?}", row.client));
            }
            if client_count(row, "woken") != Some(accepted) {
                problems.push(format!("woken != accepted: {:?}", row.client));
            }
            let keys: &[&str] = if lost_allocations { &["ring_errors"] } else { &["ring_errors", "no_memory"] };
            for key in keys {
                if client_count(row, key) != Some(0) {
                    problems.push(format!("the client counted {key}: {:?}", row.client));
                }
            }
            if hyp_count(row, "ring_errors") != Some(0) {
                problems.push(format!("the hypervisor saw ring errors: {:?}", row.hyp_apf));
            }
        }
    }
    problems
}

/// The side-by-side figures of one (L, R).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub reference_s: f64,
    pub synchronous_s: f64,
    pub asynchronous_s: f64,
    /// synchronous / asynchronous: what APF gains.
    pub speedup: f64,
    /// synchronous / reference: the most any latency hiding could gain.
    pub bound: f64,
    /// (synchronous - asynchronous) / (synchronous - reference): the share of the time spent
    /// waiting for the disk that APF hid.
    pub hidden: f64,
}

impl Figures {
    pub fn new(reference_s: f64, synchronous_s: f64, asynchronous_s: f64) -> Figures {
        let waiting = synchronous_s - reference_s;
        Figures {
            reference_s,
            synchronous_s,
            asynchronous_s,
            speedup: synchronous_s / asynchronous_s,
            bound: synchronous_s / reference_s,
            hidden: if waiting > 0.0 { (synchronous_s - asynchronous_s) / waiting } else { 0.0 },
        }
    }
}

/// One row of the benchmark's JSON.
#[derive(Debug, Serialize)]
struct BenchRow {
    mode: Mode,
    problems: Vec<String>,
    #[serde(flatten)]
    row: WorkloadRow,
}

/// One comparison of the JSON.
#[derive(Debug, Serialize)]
struct Comparison {
    latency_us: u64,
    resident_mib: u32,
    #[serde(flatten)]
    figures: Figures,
}

/// `cargo xtask linux --apf`: builds the patched kernel (cached), runs the reference once and
/// the synchronous and asynchronous rows for every L and R, prints the table and writes JSON.
/// True when every row passed its checks.
pub fn run(root: &Path, tc: &Toolchain, args: &LinuxArgs) -> Result<bool> {
    let kernel = super::build_kernel(root)?;
    let initrd = workload_initrd(root, true)?;
    let (vcpus, guest_mib) = (args.vcpus(), args.guest_mib());
    let touch = args.touch().unwrap_or(LinuxArgs::APF_TOUCH);
    let icount = args.icount()?;
    let clock = match icount {
        Some(shift) => format!("-icount shift={shift},sleep=off: model time, 2^{shift} ns per instruction"),
        None => "host time (--host-time): the figures depend on the host".into(),
    };
    println!(
        "linux --apf: {} on {vcpus} vCPU(s), cpu {}, G = {guest_mib} MiB; apftouch {} processes per vCPU x {} MiB x \
         {} passes, {} spins between pages; {clock}; host load {}",
        kernel.display(),
        args.cpu,
        touch.per_vcpu,
        touch.mib,
        touch.passes,
        touch.work,
        args.host_load,
    );
    let base = LinuxRun {
        kernel: kernel.clone(),
        initrd,
        vcpus,
        cpu: args.cpu.clone(),
        guest_mib,
        resident_mib: Some(guest_mib),
        latency_us: 0,
        mib: args.mib(),
        kernel_args: String::new(),
        timeout_secs: args.timeout,
        icount,
        host_load: args.host_load,
    };
    let run_mode = |mode: Mode, resident: u32, latency: u64| -> Result<BenchRow> {
        let args = format!("{} {}", kernel_arg(mode), touch.kernel_arg(vcpus)).trim().to_string();
        println!("linux --apf: {}, R = {resident} MiB, L = {latency} us ...", mode.name());
        let run = LinuxRun { resident_mib: Some(resident), latency_us: latency, kernel_args: args, ..base.clone() };
        let row = run_workload(root, tc, &run)?;
        let problems = apf_problems(mode, &row);
        for p in &problems {
            println!("linux --apf: {mode:?} FAILED: {p}");
        }
        Ok(BenchRow { mode, problems, row })
    };
    let latencies = args.latencies();
    let reference = run_mode(Mode::Reference, guest_mib, latencies[0])?;
    let mut rows = vec![reference];
    let mut comparisons = Vec::new();
    for &latency in &latencies {
        for resident in args.resident_mib().into_iter().filter(|&r| r < guest_mib) {
            let sync = run_mode(Mode::Synchronous, resident, latency)?;
            let asynchronous = run_mode(Mode::Asynchronous, resident, latency)?;
            let seconds = [&rows[0], &sync, &asynchronous].map(|r| touch_seconds(&r.row));
            if let [Some(r), Some(s), Some(a)] = seconds {
                comparisons.push(Comparison {
                    latency_us: latency,
                    resident_mib: resident,
                    figures: Figures::new(r, s, a),
                });
            }
            rows.extend([sync, asynchronous]);
        }
    }
    print_report(&rows, &comparisons);
    let all_ok = rows.iter().all(|r| r.problems.is_empty()) && !comparisons.is_empty();
    let json =
        args.json.clone().unwrap_or_else(|| root.join("target").join("xtask").join("linux").join("linux-apf.json"));
    let document = serde_json::json!({
        "kernel": kernel,
        "vcpus": vcpus,
        "cpu": args.cpu,
        "guest_mib": guest_mib,
        "touch": touch.to_string(),
        "icount": icount,
        "host_load": args.host_load,
        "rows": rows,
        "comparisons": comparisons,
        "ok": all_ok,
    });
    crate::bench::write_json(&json, &document)?;
    println!("linux --apf: rows in {}", json.display());
    Ok(all_ok)
}

fn print_report(rows: &[BenchRow], comparisons: &[Comparison]) {
    println!(
        "\n{:<13} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}  result",
        "mode", "L_us", "R_MiB", "touch_s", "page_ins", "accepted", "sync_wait", "errors", "log"
    );
    for r in rows {
        println!(
            "{:<13} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}  {}",
            r.mode.name(),
            r.row.backing_latency_us,
            r.row.resident_mib.map_or("-".into(), |m| m.to_string()),
            field(r.row.touch.as_ref(), "seconds"),
            r.row.page_ins.map_or("-".into(), |p| p.to_string()),
            hyp_count(&r.row, "accepted").map_or("-".into(), |a| a.to_string()),
            r.row.blocking_faults.map_or("-".into(), |b| b.to_string()),
            field(r.row.touch.as_ref(), "errors"),
            format!("{} bad", field(r.row.result.as_ref(), "log_problems")),
            if r.problems.is_empty() { "ok".to_string() } else { format!("FAILED: {}", r.problems.join("; ")) }
        );
    }
    for r in rows.iter().filter(|r| r.mode == Mode::Asynchronous) {
        let reasons = r.row.hyp_apf.as_ref().and_then(|a| a.get("sync_reasons")?.as_object().cloned());
        let reasons: Vec<String> = reasons
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let client = r.row.client.as_ref().map_or("-".into(), |c| {
            c.iter().map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"'))).collect::<Vec<_>>().join(" ")
        });
        println!(
            "asynchronous L={} R={:?}: client {client}; the hypervisor's reasons for synchronous faults: {}",
            r.row.backing_latency_us,
            r.row.resident_mib,
            if reasons.is_empty() { "none".into() } else { reasons.join(", ") }
        );
    }
    println!(
        "\n{:>6} {:>6} {:>10} {:>10} {:>10} {:>11} {:>13} {:>7}",
        "L_us", "R_MiB", "ref_s", "sync_s", "async_s", "sync/async", "bound sync/ref", "hidden"
    );
    for c in comparisons {
        let f = &c.figures;
        println!(
            "{:>6} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>10.2}x {:>13.2}x {:>6.1}%",
            c.latency_us,
            c.resident_mib,
            f.reference_s,
            f.synchronous_s,
            f.asynchronous_s,
            f.speedup,
            f.bound,
            f.hidden * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_the_ratios_of_the_three_times() {
        let f = Figures::new(10.0, 160.0, 40.0);
        assert_eq!((f.speedup, f.bound, f.hidden), (4.0, 16.0, 0.8));
        assert_eq!(Figures::new(10.0, 10.0, 10.0).hidden, 0.0, "nothing to hide");
        assert!(Figures::new(10.0, 100.0, 120.0).hidden < 0.0, "slower than synchronous shows as negative");
    }

    fn row(client: Option<&str>, hyp: serde_json::Value) -> WorkloadRow {
        let fields = crate::userspace::parse_fields;
        WorkloadRow {
            vcpus: 1,
            cpu: "max".into(),
            guest_mib: 256,
            resident_mib: Some(64),
            backing_latency_us: 1000,
            mib: 0,
            kernel_args: "asyncpf_touch=8,24,3,1000".into(),
            icount: Some(3),
            ok: true,
            failure: None,
            result: fields(
                "mib=0 match=yes kernel=6.12.118 tainted=0 dma_minalign_warnings=0 log_problems=0 hwcaps=sve",
            ),
            page_ins: Some(100),
            page_outs: Some(100),
            blocking_faults: Some(10),
            hotplug: None,
            touch: fields("procs=8 mib=24 passes=3 work=1000 errors=0 seconds=57.88"),
            client: client.and_then(fields),
            hyp_apf: Some(hyp),
            wall_seconds: 1.0,
        }
    }

    #[test]
    fn each_mode_checks_what_it_must() {
        let on = "accepted=10 declined=0 woken=10 early_wakes=1 wake_alls=0 ring_errors=0 no_memory=0 granule=64";
        let hyp_on = serde_json::json!({ "dispatched": 12, "accepted": 12, "ring_errors": 0 });
        let hyp_off = serde_json::json!({ "dispatched": 0, "accepted": 0, "ring_errors": 0 });
        assert_eq!(apf_problems(Mode::Asynchronous, &row(Some(on), hyp_on.clone())), Vec::<String>::new());
        assert_eq!(apf_problems(Mode::Synchronous, &row(None, hyp_off.clone())), Vec::<String>::new());
        assert_eq!(apf_problems(Mode::Synchronous, &row(None, hyp_on.clone())).len(), 1, "off, yet dispatched");
        assert_eq!(apf_problems(Mode::Asynchronous, &row(None, hyp_on.clone())).len(), 4, "no client counters");
        let lost = on.replace("woken=10", "woken=9");
        assert_eq!(apf_problems(Mode::Asynchronous, &row(Some(&lost), hyp_on.clone())).len(), 1);
        let no_memory = on.replace("no_memory=0", "no_memory=1");
        assert_eq!(apf_problems(Mode::Asynchronous, &row(Some(&no_memory), hyp_on.clone())).len(), 1);
        assert!(apf_problems_with_lost_allocations(&row(Some(&no_memory), hyp_on.clone())).is_empty());
        assert_eq!(apf_problems_with_lost_allocations(&row(Some(on), hyp_on.clone())).len(), 1, "nothing injected");
        assert_eq!(apf_problems(Mode::Reference, &row(None, hyp_off.clone())).len(), 1, "the reference paged out");
        let mut failed = row(Some(on), hyp_on);
        failed.touch = failed.touch.map(|mut t| {
            t.insert("errors".into(), serde_json::json!(3));
            t
        });
        assert_eq!(apf_problems(Mode::Asynchronous, &failed).len(), 1, "apftouch's errors");
    }
}
