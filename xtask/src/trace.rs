//! `--trace FILE` and `trace-summary FILE`: the per-fault trace (docs/abi.md §9).
//!
//! After QEMU exits, the runner reads the trace area the hypervisor wrote to its backing disk
//! after guest RAM's slots (decoded with `asyncpf_core::trace`, the same code the hypervisor's
//! writer was tested against), follows every asynchronous fault's life through the records,
//! checks the trace against the run's own counters, and writes a Chrome trace-event JSON file
//! (the format ui.perfetto.dev and Perfetto's trace processor open):
//!
//! - process 1 "vCPUs": one thread per vCPU, with `guest` (split by the task the guest ran, or
//!   `idle`), `hypervisor: CAUSE` slices (CAUSE as the `el2_ns_*` counters split exits) and,
//!   inside them, `waiting for page` (synchronous faults);
//! - process 2 "backing store": one thread per request slot of the disk's queue, one slice per
//!   request from submission to completion (`read page N` / `write-back page N`, args: slot,
//!   tag, ok);
//! - process 3 "guest tasks": one thread per task: `running on vCPU n`, `parked on token T`,
//!   `runnable`;
//! - every asynchronous fault's life as one flow (Chrome flow v2: `bind_id`, `flow_in`,
//!   `flow_out` on zero-length slices of category `apf`), in time order: `stage-2 fault` (args:
//!   vCPU, IPA, FAR, EL, IRQs masked) → `decision: async` → `read submitted` (the pager starts
//!   the read before the delivery; a read another fault started joins at its completion) →
//!   `page_not_present` → `handler accepted` (or `declined`, where it ends) → `read completed`
//!   (or, for a fault that waited for a frame, `frame wait: request completed`) → `page_ready`
//!   → `task woken` → `task running` (the task runs again and retries the access).
//!
//! Timestamps are model time (the guest's CNTVCT_EL0), in µs from the trace's start.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use asyncpf_core::trace::{self as core_trace, Event, FaultFlags, Header, Kind, EXIT_CAUSES, SYNC_REASONS};
use serde::Serialize;
use serde_json::{json, Value};

/// Guest RAM's IPA (disk slot n is guest page n at `RAM_IPA + n * 4096`).
const RAM_IPA: u64 = 0x4000_0000;
/// `--trace-mib` default: the top of host RAM the hypervisor logs into.
pub const DEFAULT_TRACE_MIB: u32 = 64;

/// Diagnostics: copy the raw trace area of a run to this file.
pub const KEEP_AREA_ENV: &str = "ASYNCPF_TRACE_KEEP_AREA";

/// `--trace FILE` for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePlan {
    pub file: PathBuf,
    pub mib: u32,
}

/// `FILE` with `-ROW` before its extension (`t.json` → `t-asynchronous.json`).
pub fn with_row(file: &Path, row: &str) -> PathBuf {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match file.extension() {
        Some(ext) => format!("{stem}-{row}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{row}"),
    };
    file.with_file_name(name)
}

/// The decoded trace: every CPU's records and the guest's.
pub struct Decoded {
    pub header: Header,
    pub cpus: Vec<Vec<Event>>,
    /// Sorted by time.
    pub guest: Vec<Event>,
}

/// Read the trace area of a run's disk image (after `guest_mib` MiB of guest RAM's slots).
pub fn read_area(image: &Path, guest_mib: u32) -> Result<Decoded> {
    let mut file = File::open(image).with_context(|| format!("cannot open the backing disk {}", image.display()))?;
    let start = u64::from(guest_mib) << 20;
    let len = file.metadata()?.len().saturating_sub(start);
    file.seek(SeekFrom::Start(start))?;
    let mut head = vec![0u8; core_trace::HEADER_BYTES];
    file.read_exact(&mut head).context("the disk has no trace area")?;
    let header = Header::decode(&head, Some(len)).map_err(|e| anyhow::anyhow!("trace area: {e}"))?;
    let mut area = head;
    area.resize(header.area_bytes() as usize, 0);
    file.read_exact(&mut area[core_trace::HEADER_BYTES..]).context("the trace area is truncated")?;
    let mut cpus = vec![Vec::new(); header.cpus as usize];
    let mut guest = Vec::new();
    for (section, event) in core_trace::events(&header, &area) {
        match cpus.get_mut(section) {
            Some(cpu) => cpu.push(event),
            None => guest.push(event),
        }
    }
    guest.sort_by_key(|e| e.time);
    Ok(Decoded { header, cpus, guest })
}

/// One asynchronous fault's life (times in model ticks).
#[derive(Debug, Clone, Default)]
pub struct Life {
    pub token: u64,
    pub vcpu: u8,
    pub ipa: u64,
    pub far: u64,
    pub flags: u16,
    pub fault: Option<u64>,
    pub pnp: u64,
    pub handler: Option<(u64, bool)>,
    /// The disk request it waited for: (submitted, completed, request slot, another request
    /// that let it go on rather than the read of its page).
    pub read: Option<(u64, u64, u16, bool)>,
    pub page_ready: Option<u64>,
    pub task: Option<u32>,
    pub parked: Option<u64>,
    pub woken: Option<u64>,
    pub running: Option<(u64, u8)>,
}

impl Life {
    /// Every stage seen (a declined one ends at its handler's answer).
    pub fn complete(&self) -> bool {
        match self.handler {
            Some((_, false)) => self.fault.is_some(),
            Some((_, true)) => {
                self.fault.is_some()
                    && self.read.is_some()
                    && self.page_ready.is_some()
                    && self.woken.is_some()
                    && self.running.is_some()
            }
            None => false,
        }
    }
}

/// A backing-store request.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub slot: u64,
    pub tag: u64,
    pub queue: u16,
    pub write: bool,
    pub submitted: u64,
    pub done: Option<(u64, bool)>,
}

/// What the records say, put together.
pub struct Analysis {
    pub lives: Vec<Life>,
    pub requests: Vec<Request>,
    pub counts: BTreeMap<&'static str, u64>,
    /// Model ticks of hypervisor time per exit cause (Exit → Enter).
    pub el2_ticks: [u64; 4],
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Enter => "enter",
        Kind::Exit => "exit",
        Kind::Fault => "fault",
        Kind::Sync => "sync",
        Kind::PageNotPresent => "page_not_present",
        Kind::HandlerDone => "handler_done",
        Kind::WaitStart => "wait_start",
        Kind::WaitEnd => "wait_end",
        Kind::DiskSubmit => "disk_submit",
        Kind::DiskDone => "disk_done",
        Kind::PageReady => "page_ready",
        Kind::FaultEnd => "fault_end",
        Kind::TaskSwitch => "task_switch",
        Kind::TaskPark => "task_park",
        Kind::TaskWake => "task_wake",
    }
}

pub fn analyse(d: &Decoded) -> Analysis {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut lives: Vec<Life> = Vec::new();
    let mut by_token: HashMap<u64, usize> = HashMap::new();
    let mut requests: Vec<Request> = Vec::new();
    let mut open: HashMap<u16, usize> = HashMap::new();
    let mut el2_ticks = [0u64; 4];
    // Reads by disk slot, in submission order (the read a fault waits for).
    let mut reads_of: HashMap<u64, Vec<usize>> = HashMap::new();
    // Every CPU's records, merged by time (disk records complete on any CPU).
    // What happens on one vCPU, in its own log's order (with several vCPUs model time can step
    // back on a CPU when a span is hidden: the exit clock then charges 0, and so does this).
    for cpu in &d.cpus {
        let mut last_fault: Option<&Event> = None;
        let mut exited: Option<u64> = None;
        for e in cpu {
            match e.kind() {
                Some(Kind::Exit) => exited = Some(e.time),
                Some(Kind::Enter) => {
                    if let Some(at) = exited.take() {
                        el2_ticks[usize::from(e.aux).min(3)] += e.time.saturating_sub(at);
                    }
                }
                Some(Kind::Fault) => last_fault = Some(e),
                Some(Kind::PageNotPresent) => {
                    let fault = last_fault;
                    by_token.insert(e.a, lives.len());
                    lives.push(Life {
                        token: e.a,
                        vcpu: e.cpu,
                        ipa: fault.map_or(0, |f| f.a),
                        far: e.b,
                        flags: fault.map_or(0, |f| f.aux),
                        fault: fault.map(|f| f.time),
                        pnp: e.time,
                        ..Life::default()
                    });
                }
                _ => {}
            }
        }
    }
    // Every CPU's records, merged by time: the disk's requests complete on any CPU.
    let mut all: Vec<&Event> = d.cpus.iter().flatten().collect();
    all.sort_by_key(|e| e.time);
    for e in &all {
        let Some(kind) = e.kind() else {
            *counts.entry("unknown").or_default() += 1;
            continue;
        };
        *counts.entry(kind_name(kind)).or_default() += 1;
        match kind {
            Kind::HandlerDone => {
                if let Some(&i) = by_token.get(&e.a) {
                    lives[i].handler.get_or_insert((e.time, e.aux != 0));
                }
            }
            Kind::PageReady => {
                if let Some(&i) = by_token.get(&e.a) {
                    lives[i].page_ready.get_or_insert(e.time);
                }
            }
            Kind::DiskSubmit => {
                let write = e.x & 0xff == core_trace::OP_WRITE;
                open.insert(e.aux, requests.len());
                if !write {
                    reads_of.entry(e.a).or_default().push(requests.len());
                }
                requests.push(Request { slot: e.a, tag: e.b, queue: e.aux, write, submitted: e.time, done: None });
            }
            Kind::DiskDone => {
                if let Some(r) = open.remove(&e.aux) {
                    requests[r].done = Some((e.time, e.x & core_trace::OP_FAILED == 0));
                }
            }
            _ => {}
        }
    }
    // The read each life waited for: the last read of its page submitted before its page_ready
    // (a fault that waited for a free frame gets its read only once a write-back freed one),
    // and its completion.
    for life in &mut lives {
        let page = life.ipa.wrapping_sub(RAM_IPA) / 4096;
        let by = life.page_ready.unwrap_or(life.pnp);
        let from = life.fault.unwrap_or(life.pnp);
        let covers = |r: &Request| r.submitted <= by && r.done.is_some_and(|(done, _)| done >= from && done <= by);
        let read = reads_of.get(&page).and_then(|v| v.iter().rev().map(|&r| &requests[r]).find(|r| covers(r)));
        // No read of its page: the fault waited for a frame (a zero-fill, or before its read
        // could start: the engine's WaitPage / WaitIo), and the last disk completion before its
        // page_ready, a write-back's or another page's read, is what let it go on.
        let read = read.map(|r| (r, false)).or_else(|| {
            requests.iter().filter(|r| covers(r)).max_by_key(|r| r.done.map(|(d, _)| d)).map(|r| (r, true))
        });
        life.read = read.and_then(|(r, freed)| r.done.map(|(done, _)| (r.submitted, done, r.queue, freed)));
    }
    // Guest records: parks, wakes, and the switch that runs the task again.
    let mut waiting_run: HashMap<u32, Vec<usize>> = HashMap::new();
    for e in &d.guest {
        let Some(kind) = e.kind() else { continue };
        *counts.entry(kind_name(kind)).or_default() += 1;
        match kind {
            Kind::TaskPark => {
                if let Some(&i) = by_token.get(&e.a) {
                    let life = &mut lives[i];
                    life.task = Some(e.x);
                    life.parked.get_or_insert(e.time);
                    if life.woken.is_some() {
                        // The wake came first: the park returns at once and the task runs on.
                        life.running.get_or_insert((e.time, e.b as u8));
                    }
                }
            }
            Kind::TaskWake => {
                if let Some(&i) = by_token.get(&e.a) {
                    let life = &mut lives[i];
                    life.woken.get_or_insert(e.time);
                    if let Some(task) = life.task {
                        waiting_run.entry(task).or_default().push(i);
                    }
                }
            }
            Kind::TaskSwitch => {
                if let Some(list) = waiting_run.remove(&e.x) {
                    for i in list {
                        lives[i].running.get_or_insert((e.time, e.b as u8));
                    }
                }
            }
            _ => {}
        }
    }
    Analysis { lives, requests, counts, el2_ticks }
}

/// The run's counters the trace must agree with, and whether it does: `(name, trace, run)`.
pub fn compare_counters(d: &Decoded, a: &Analysis, hyp: &Value) -> Vec<(String, u64, u64)> {
    let get = |path: &str| hyp.pointer(path).and_then(Value::as_u64).unwrap_or(u64::MAX);
    let count = |name: &str| a.counts.get(name).copied().unwrap_or(0);
    let reads = a.requests.iter().filter(|r| !r.write).count() as u64;
    let writes = a.requests.iter().filter(|r| r.write).count() as u64;
    let delivered = d.cpus.iter().flatten().filter(|e| e.kind() == Some(Kind::FaultEnd) && e.aux == 1).count() as u64;
    let mut out = vec![
        ("stage-2 faults (hyp.page_faults)".to_string(), count("fault"), get("/page_faults")),
        ("page_not_present delivered (hyp.async_faults)".to_string(), count("page_not_present"), get("/async_faults")),
        ("faults ended delivered (hyp.async_faults)".to_string(), delivered, get("/async_faults")),
        ("page_ready entries (hyp.apf.posted)".to_string(), count("page_ready"), get("/apf/posted")),
        ("handler answers (apf.accepted + apf.declined)".to_string(), count("handler_done"), {
            let (acc, dec) = (get("/apf/accepted"), get("/apf/declined"));
            acc.saturating_add(dec)
        }),
        (
            "reads submitted (mem.page_ins + mem.retries)".to_string(),
            reads,
            get("/mem/page_ins").saturating_add(get("/mem/retries")),
        ),
        ("write-backs submitted (mem.dirty_writebacks)".to_string(), writes, get("/mem/dirty_writebacks")),
        ("sync reasons (sum of apf.sync_reasons)".to_string(), count("sync"), {
            SYNC_REASONS.iter().map(|r| get(&format!("/apf/sync_reasons/{r}"))).fold(0u64, u64::saturating_add)
        }),
    ];
    // The hypervisor's time in the protocol's exits, Exit to Enter (stamped at the instants
    // its `el2_ns_*` counters are charged with).
    let hz = d.header.counter_hz.max(1) as u128;
    for (cause, ticks) in EXIT_CAUSES.iter().zip(a.el2_ticks).skip(1) {
        let ns = (u128::from(ticks) * 1_000_000_000 / hz) as u64;
        let key = format!("/el2_ns_{cause}");
        out.push((format!("hypervisor ns in {cause} exits (hyp.el2_ns_{cause})"), ns, get(&key)));
    }
    let dropped: u64 =
        d.header.cpu[..d.header.cpus as usize].iter().map(|s| s.dropped).sum::<u64>() + d.header.guest.dropped;
    out.push(("records dropped".to_string(), dropped, 0));
    let incomplete = a.lives.iter().filter(|l| !l.complete()).count() as u64;
    out.push(("asynchronous faults without a complete life".to_string(), incomplete, 0));
    if incomplete > 0 {
        let accepted = || a.lives.iter().filter(|l| l.handler.is_some_and(|(_, ok)| ok));
        let missing: [(&str, usize); 6] = [
            ("fault", a.lives.iter().filter(|l| l.fault.is_none()).count()),
            ("handler", a.lives.iter().filter(|l| l.handler.is_none()).count()),
            ("read", accepted().filter(|l| l.read.is_none()).count()),
            ("page_ready", accepted().filter(|l| l.page_ready.is_none()).count()),
            ("woken", accepted().filter(|l| l.woken.is_none()).count()),
            ("running", accepted().filter(|l| l.running.is_none()).count()),
        ];
        for (stage, n) in missing {
            out.push((format!("  of which missing {stage} (information)"), n as u64, n as u64));
        }
    }
    out
}

/// Convert the trace to Chrome trace-event JSON (see the module documentation).
pub fn chrome_json(d: &Decoded, a: &Analysis) -> Value {
    let hz = d.header.counter_hz.max(1) as f64;
    let t0 = d.cpus.iter().flatten().chain(&d.guest).map(|e| e.time).min().unwrap_or(0);
    let us = |t: u64| ((t.saturating_sub(t0)) as f64 * 1e6 / hz * 1000.0).round() / 1000.0;
    let dur = |from: u64, to: u64| ((to.saturating_sub(from)) as f64 * 1e6 / hz * 1000.0).round() / 1000.0;
    let mut ev: Vec<Value> = Vec::new();
    let vcpu_tid = |cpu: u8| 100 + u64::from(cpu);
    let task_tid = |task: u32| 300 + u64::from(task);
    ev.push(json!({"ph":"M","name":"process_name","pid":1,"args":{"name":"vCPUs"}}));
    ev.push(json!({"ph":"M","name":"process_name","pid":2,"args":{"name":"backing store"}}));
    ev.push(json!({"ph":"M","name":"process_name","pid":3,"args":{"name":"guest tasks"}}));
    // vCPU tracks: guest and hypervisor slices, waits inside.
    let mut switches: HashMap<u8, Vec<&Event>> = HashMap::new();
    for e in d.guest.iter().filter(|e| e.kind() == Some(Kind::TaskSwitch)) {
        switches.entry(e.b as u8).or_default().push(e);
    }
    let task_name = |x: u32| if x == core_trace::TASK_IDLE { "idle".to_string() } else { format!("task {x}") };
    for (cpu, events) in d.cpus.iter().enumerate() {
        let cpu = cpu as u8;
        let tid = vcpu_tid(cpu);
        ev.push(json!({"ph":"M","name":"thread_name","pid":1,"tid":tid,"args":{"name":format!("vCPU {cpu}")}}));
        let sw = switches.get(&cpu).map(Vec::as_slice).unwrap_or(&[]);
        let mut current = "guest".to_string();
        let mut next_switch = 0;
        let mut in_guest: Option<u64> = None;
        let mut in_hyp: Option<u64> = None;
        let mut waiting: Option<u64> = None;
        for e in events {
            match e.kind() {
                Some(Kind::Exit) => {
                    if let Some(start) = in_guest.take() {
                        let mut from = start;
                        while next_switch < sw.len() && sw[next_switch].time <= e.time {
                            let s = sw[next_switch];
                            if s.time > from {
                                ev.push(json!({"ph":"X","pid":1,"tid":tid,"ts":us(from),"dur":dur(from, s.time),"name":format!("guest: {current}"),"cat":"vcpu"}));
                                from = s.time;
                            }
                            current = task_name(s.x);
                            next_switch += 1;
                        }
                        ev.push(json!({"ph":"X","pid":1,"tid":tid,"ts":us(from),"dur":dur(from, e.time),"name":format!("guest: {current}"),"cat":"vcpu"}));
                    }
                    in_hyp = Some(e.time);
                }
                Some(Kind::Enter) => {
                    let start = in_hyp.take().unwrap_or(e.time);
                    let cause = EXIT_CAUSES.get(usize::from(e.aux)).copied().unwrap_or("other");
                    ev.push(json!({"ph":"X","pid":1,"tid":tid,"ts":us(start),"dur":dur(start, e.time),"name":format!("hypervisor: {cause}"),"cat":"vcpu"}));
                    while next_switch < sw.len() && sw[next_switch].time <= e.time {
                        current = task_name(sw[next_switch].x);
                        next_switch += 1;
                    }
                    in_guest = Some(e.time);
                }
                Some(Kind::WaitStart) => waiting = Some(e.time),
                Some(Kind::WaitEnd) => {
                    if let Some(start) = waiting.take() {
                        ev.push(json!({"ph":"X","pid":1,"tid":tid,"ts":us(start),"dur":dur(start, e.time),"name":"waiting for page","cat":"vcpu"}));
                    }
                }
                _ => {}
            }
        }
    }
    // Backing store: one thread per queue slot.
    let mut queues: Vec<u16> = a.requests.iter().map(|r| r.queue).collect();
    queues.sort_unstable();
    queues.dedup();
    for q in queues {
        ev.push(json!({"ph":"M","name":"thread_name","pid":2,"tid":200 + u64::from(q),"args":{"name":format!("request slot {q}")}}));
    }
    for r in &a.requests {
        let (done, ok) = r.done.unwrap_or((r.submitted, false));
        let name = if r.write { format!("write-back page {}", r.slot) } else { format!("read page {}", r.slot) };
        ev.push(json!({"ph":"X","pid":2,"tid":200 + u64::from(r.queue),"ts":us(r.submitted),"dur":dur(r.submitted, done),"name":name,"cat":"disk","args":{"slot":r.slot,"tag":r.tag,"ok":ok,"completed":r.done.is_some()}}));
    }
    // Guest tasks: running, parked, runnable.
    let mut tasks: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let mut parked_on: HashMap<u64, u32> = HashMap::new();
    for e in &d.guest {
        match e.kind() {
            Some(Kind::TaskSwitch) => {
                if e.a as u32 != core_trace::TASK_IDLE {
                    let state = if e.aux == 0 { "runnable" } else { "blocked" };
                    let list = tasks.entry(e.a as u32).or_default();
                    // A park recorded just before keeps its name.
                    if !list.last().is_some_and(|(_, s)| s.starts_with("parked")) {
                        list.push((e.time, state.to_string()));
                    }
                }
                if e.x != core_trace::TASK_IDLE {
                    tasks.entry(e.x).or_default().push((e.time, format!("running on vCPU {}", e.b)));
                }
            }
            Some(Kind::TaskPark) => {
                parked_on.insert(e.a, e.x);
                tasks.entry(e.x).or_default().push((e.time, format!("parked on token {:#x}", e.a)));
            }
            Some(Kind::TaskWake) => {
                if let Some(&task) = parked_on.get(&e.a) {
                    tasks.entry(task).or_default().push((e.time, "runnable".to_string()));
                }
            }
            _ => {}
        }
    }
    let end = d.cpus.iter().flatten().chain(&d.guest).map(|e| e.time).max().unwrap_or(t0);
    for (task, states) in &tasks {
        let tid = task_tid(*task);
        ev.push(json!({"ph":"M","name":"thread_name","pid":3,"tid":tid,"args":{"name":format!("task {task}")}}));
        for (i, (at, name)) in states.iter().enumerate() {
            let until = states.get(i + 1).map_or(end, |(t, _)| *t);
            ev.push(json!({"ph":"X","pid":3,"tid":tid,"ts":us(*at),"dur":dur(*at, until),"name":name,"cat":"task"}));
        }
    }
    // Flows: one per asynchronous fault, through zero-length step slices.
    for (n, life) in a.lives.iter().enumerate() {
        let id = n as u64 + 1;
        let f = FaultFlags::decode(life.flags);
        let mut steps: Vec<(u64, u64, u64, String, Value)> = Vec::new();
        let vtid = vcpu_tid(life.vcpu);
        if let Some(t) = life.fault {
            steps.push((1, vtid, t, "stage-2 fault".into(), json!({"vcpu":life.vcpu,"ipa":format!("{:#x}",life.ipa),"far":format!("{:#x}",life.far),"el":f.el,"irqs_masked":f.irqs_masked,"write":f.write})));
            steps.push((1, vtid, t, "decision: async".into(), json!({})));
        }
        steps.push((1, vtid, life.pnp, "page_not_present".into(), json!({})));
        if let Some((t, accepted)) = life.handler {
            steps.push((1, vtid, t, if accepted { "handler accepted" } else { "handler declined" }.into(), json!({})));
        }
        if life.handler.is_some_and(|(_, accepted)| accepted) {
            if let Some((sub, done, q, freed)) = life.read {
                let (a, b) = if freed {
                    ("frame wait: request submitted", "frame wait: request completed")
                } else {
                    ("read submitted", "read completed")
                };
                let page = json!({"page": life.ipa.wrapping_sub(RAM_IPA) / 4096, "submitted_us": us(sub)});
                // A flow runs forward in time: a read another fault started earlier (a shared
                // fetch) joins it at its completion.
                if life.fault.is_some_and(|t| sub >= t) {
                    steps.push((2, 200 + u64::from(q), sub, a.into(), page.clone()));
                }
                steps.push((2, 200 + u64::from(q), done, b.into(), page));
            }
            if let Some(t) = life.page_ready {
                steps.push((1, vtid, t, "page_ready".into(), json!({})));
            }
            if let (Some(t), Some(task)) = (life.woken, life.task) {
                steps.push((3, task_tid(task), t, "task woken".into(), json!({})));
            }
            if let (Some((t, _)), Some(task)) = (life.running, life.task) {
                steps.push((3, task_tid(task), t, "task running".into(), json!({})));
            }
        }
        // In time order (a read is submitted before page_not_present is delivered); stable, so
        // that steps at one instant keep their order.
        steps.sort_by_key(|s| s.2);
        let last = steps.len().saturating_sub(1);
        for (i, (pid, tid, t, name, mut args)) in steps.into_iter().enumerate() {
            args["token"] = json!(format!("{:#x}", life.token));
            ev.push(json!({"ph":"X","pid":pid,"tid":tid,"ts":us(t),"dur":0,"name":name,"cat":"apf","args":args,
                "bind_id":id,"flow_in":i > 0,"flow_out":i < last}));
        }
    }
    json!({
        "traceEvents": ev,
        "displayTimeUnit": "ns",
        "otherData": {
            "clock": "model time (the guest's CNTVCT_EL0), µs from the first record",
            "counter_hz": d.header.counter_hz,
            "origin_ticks": t0,
            "dropped": d.header.cpu[..d.header.cpus as usize].iter().map(|s| s.dropped).sum::<u64>() + d.header.guest.dropped,
            "guest_rejected": d.header.guest_rejected,
        }
    })
}

/// A distribution's figures, µs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Dist {
    pub n: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Dist {
            n: v.len(),
            mean: r(v.iter().sum::<f64>() / v.len() as f64),
            p50: r(at(0.5)),
            p90: r(at(0.9)),
            p99: r(at(0.99)),
            max: r(at(1.0)),
        }
    }
}

/// The per-phase breakdown, computed from a Chrome trace file alone.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub async_faults: usize,
    pub complete_lives: usize,
    pub fault_to_running_us: Dist,
    pub fault_to_page_not_present_us: Dist,
    pub read_us: Dist,
    pub completion_to_page_ready_us: Dist,
    pub page_ready_to_running_us: Dist,
    /// Hypervisor time (µs) per exit cause, summed over the trace's `hypervisor: CAUSE` slices.
    pub hypervisor_us: BTreeMap<String, f64>,
    /// (async_fault + handler_answer + interrupt) / asynchronous faults.
    pub hypervisor_us_per_async_fault: f64,
}

/// Compute the summary from a Chrome trace-event document as written by [`chrome_json`].
pub fn summarize(doc: &Value) -> Summary {
    let events = doc.get("traceEvents").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut flows: BTreeMap<u64, HashMap<String, f64>> = BTreeMap::new();
    let mut hyp: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        let (Some(name), Some(ts)) = (e.get("name").and_then(Value::as_str), e.get("ts").and_then(Value::as_f64))
        else {
            continue;
        };
        match e.get("cat").and_then(Value::as_str) {
            Some("apf") => {
                if let Some(id) = e.get("bind_id").and_then(Value::as_u64) {
                    flows.entry(id).or_default().entry(name.to_string()).or_insert(ts);
                }
            }
            Some("vcpu") => {
                if let Some(cause) = name.strip_prefix("hypervisor: ") {
                    *hyp.entry(cause.to_string()).or_default() += e.get("dur").and_then(Value::as_f64).unwrap_or(0.0);
                }
            }
            _ => {}
        }
    }
    // A fault that waited for a frame ends its disk stage with a write-back's completion.
    for f in flows.values_mut() {
        if let (None, Some(&t)) = (f.get("read completed"), f.get("frame wait: request completed")) {
            f.insert("disk completed".into(), t);
        } else if let Some(&t) = f.get("read completed") {
            f.insert("disk completed".into(), t);
        }
    }
    let phase =
        |from: &str, to: &str| Dist::of(flows.values().filter_map(|f| Some(f.get(to)? - f.get(from)?)).collect());
    let async_faults = flows.len();
    let protocol: f64 = ["async_fault", "handler_answer", "interrupt"].iter().filter_map(|c| hyp.get(*c)).sum();
    for v in hyp.values_mut() {
        *v = (*v * 10.0).round() / 10.0;
    }
    Summary {
        async_faults,
        complete_lives: flows.values().filter(|f| f.contains_key("task running")).count(),
        fault_to_running_us: phase("stage-2 fault", "task running"),
        fault_to_page_not_present_us: phase("stage-2 fault", "page_not_present"),
        read_us: phase("read submitted", "read completed"),
        completion_to_page_ready_us: phase("disk completed", "page_ready"),
        page_ready_to_running_us: phase("page_ready", "task running"),
        hypervisor_us: hyp,
        hypervisor_us_per_async_fault: if async_faults == 0 {
            0.0
        } else {
            (protocol / async_faults as f64 * 100.0).round() / 100.0
        },
    }
}

impl Summary {
    pub fn print(&self) -> String {
        let d = |name: &str, x: &Dist| {
            format!(
                "  {name:<28} n={:<7} mean {:>9.2}  p50 {:>9.2}  p90 {:>9.2}  p99 {:>9.2}  max {:>9.2} us\n",
                x.n, x.mean, x.p50, x.p90, x.p99, x.max
            )
        };
        let mut s = format!(
            "trace: {} asynchronous faults, {} followed to their task running again\n",
            self.async_faults, self.complete_lives
        );
        s += &d("fault -> task running", &self.fault_to_running_us);
        s += &d("fault -> page_not_present", &self.fault_to_page_not_present_us);
        s += &d("read (submit -> complete)", &self.read_us);
        s += &d("completion -> page_ready", &self.completion_to_page_ready_us);
        s += &d("page_ready -> task running", &self.page_ready_to_running_us);
        s += &format!(
            "  hypervisor time per asynchronous fault {:.2} us (exits: {})\n",
            self.hypervisor_us_per_async_fault,
            self.hypervisor_us.iter().map(|(k, v)| format!("{k} {v:.1} us")).collect::<Vec<_>>().join(", ")
        );
        s
    }
}

/// What a traced run adds to its report.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub file: PathBuf,
    pub records: u64,
    pub guest_records: u64,
    pub dropped: u64,
    pub counters: Vec<(String, u64, u64)>,
    pub mismatches: Vec<String>,
    pub summary: Summary,
    /// The run's own figure for the hypervisor's time per asynchronous fault (`el2_ns_*`).
    pub run_hypervisor_us_per_async_fault: Option<f64>,
}

/// After a traced run: read the area from the disk image, check it against the run's
/// counters (`hyp`), write the Chrome JSON to `plan.file`.
pub fn finish_run(image: &Path, guest_mib: u32, plan: &TracePlan, hyp: &Value) -> Result<Outcome> {
    if hyp.pointer("/trace/written").and_then(Value::as_bool) != Some(true) {
        bail!(
            "the hypervisor did not write its trace: {}",
            hyp.pointer("/trace/error").and_then(Value::as_str).unwrap_or("no `trace` object in its result")
        );
    }
    let d = read_area(image, guest_mib)?;
    if let Some(keep) = std::env::var_os(KEEP_AREA_ENV) {
        // Diagnostics: the raw area, for `analyse` at leisure.
        let mut f = File::open(image)?;
        f.seek(SeekFrom::Start(u64::from(guest_mib) << 20))?;
        let mut raw = vec![0u8; d.header.area_bytes() as usize];
        f.read_exact(&mut raw)?;
        fs::write(keep, raw)?;
    }
    let a = analyse(&d);
    let counters = compare_counters(&d, &a, hyp);
    let mismatches: Vec<String> =
        counters.iter().filter(|(_, t, r)| t != r).map(|(name, t, r)| format!("{name}: trace {t}, run {r}")).collect();
    let doc = chrome_json(&d, &a);
    if let Some(dir) = plan.file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut out =
        BufWriter::new(File::create(&plan.file).with_context(|| format!("cannot write {}", plan.file.display()))?);
    serde_json::to_writer(&mut out, &doc)?;
    out.flush()?;
    let summary = summarize(&doc);
    let faults = hyp.get("async_faults").and_then(Value::as_f64).unwrap_or(0.0);
    let el2: f64 = ["el2_ns_async_fault", "el2_ns_handler_answer", "el2_ns_interrupt"]
        .iter()
        .filter_map(|k| hyp.get(*k).and_then(Value::as_f64))
        .sum();
    Ok(Outcome {
        file: plan.file.clone(),
        records: d.cpus.iter().map(|c| c.len() as u64).sum(),
        guest_records: d.guest.len() as u64,
        dropped: d.header.cpu[..d.header.cpus as usize].iter().map(|s| s.dropped).sum::<u64>() + d.header.guest.dropped,
        counters,
        mismatches,
        summary,
        run_hypervisor_us_per_async_fault: (faults > 0.0).then(|| (el2 / 1000.0 / faults * 100.0).round() / 100.0),
    })
}

impl Outcome {
    pub fn print(&self) -> String {
        let mut s = format!(
            "trace: {} ({} hypervisor records, {} guest records, {} dropped)\n",
            self.file.display(),
            self.records,
            self.guest_records,
            self.dropped
        );
        for (name, t, r) in &self.counters {
            s += &format!("  {:<52} trace {:>8}  run {:>8}  {}\n", name, t, r, if t == r { "ok" } else { "MISMATCH" });
        }
        s += &self.summary.print();
        if let Some(us) = self.run_hypervisor_us_per_async_fault {
            s += &format!("  the run's own figure (hyp.el2_ns_*): {us:.2} us per asynchronous fault\n");
        }
        s
    }
}

/// One line about a traced run from its report's `trace` object.
pub fn describe(trace: &Value) -> String {
    let n = |k: &str| trace.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mismatches = trace.get("mismatches").and_then(Value::as_array).map_or(0, Vec::len);
    let s = trace.get("summary").cloned().unwrap_or(Value::Null);
    let f = |p: &str| s.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    format!(
        "trace {}: {} hypervisor + {} guest records, {} dropped, counters {}; fault -> task running mean {:.1} us \
         (p99 {:.1}), page_ready -> running mean {:.1} us, hypervisor {:.2} us per asynchronous fault",
        trace.get("file").and_then(Value::as_str).unwrap_or("?"),
        n("records"),
        n("guest_records"),
        n("dropped"),
        if mismatches == 0 { "agree".to_string() } else { format!("{mismatches} MISMATCHES") },
        f("/fault_to_running_us/mean"),
        f("/fault_to_running_us/p99"),
        f("/page_ready_to_running_us/mean"),
        f("/hypervisor_us_per_async_fault"),
    )
}

/// `cargo xtask trace-summary FILE [--svg OUT --faults N]`.
pub fn summary_command(file: &Path, svg: Option<&Path>, faults: usize) -> Result<()> {
    let text = fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    print!("{}", summarize(&doc).print());
    if let Some(out) = svg {
        fs::write(out, picture(&doc, faults)?).with_context(|| format!("cannot write {}", out.display()))?;
        println!("trace: {faults} faults' lives drawn in {}", out.display());
    }
    Ok(())
}

/// A picture of `faults` consecutive asynchronous faults' lives from a trace document: one
/// row per track they touch (vCPUs, the disk's request slots, the tasks), every slice in
/// their time window coloured by kind, and each fault's flow drawn through its steps.
pub fn picture(doc: &Value, faults: usize) -> Result<String> {
    use plotters::prelude::*;
    let events = doc.get("traceEvents").and_then(Value::as_array).context("no traceEvents")?;
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    let mut flows: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for s in &slices {
        if let Some(id) = s.get("bind_id").and_then(Value::as_u64) {
            flows.entry(id).or_default().push(s);
        }
    }
    let complete: Vec<&Vec<&Value>> =
        flows.values().filter(|f| f.iter().any(|s| s["name"] == "task running")).collect();
    if complete.is_empty() {
        bail!("no complete asynchronous fault in the trace");
    }
    let first = complete.len() / 2;
    let chosen = &complete[first..(first + faults).min(complete.len())];
    let ts = |s: &Value| s["ts"].as_f64().unwrap_or(0.0);
    let from = chosen.iter().flat_map(|f| f.iter().map(|s| ts(s))).fold(f64::MAX, f64::min);
    let to = chosen.iter().flat_map(|f| f.iter().map(|s| ts(s))).fold(f64::MIN, f64::max);
    let margin = (to - from) * 0.03;
    let (from, to) = (from - margin, to + margin);
    // Rows: the vCPUs, then the disk's and the tasks' threads the chosen flows touch.
    let key = |s: &Value| (s["pid"].as_u64().unwrap_or(0), s["tid"].as_u64().unwrap_or(0));
    let mut rows: Vec<(u64, u64)> = slices.iter().filter(|s| s["pid"] == 1).map(|s| key(s)).collect();
    rows.extend(chosen.iter().flat_map(|f| f.iter().map(|s| key(s))));
    rows.sort_unstable();
    rows.dedup();
    let thread_names: HashMap<(u64, u64), String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (key(e), e["args"]["name"].as_str().unwrap_or("").to_string()))
        .collect();
    let (label_w, row_h, top, width) = (150i32, 34i32, 44i32, 1400i32);
    let height = top + row_h * rows.len() as i32 + 96;
    let x = |t: f64| label_w + (((t - from) / (to - from)).clamp(0.0, 1.0) * f64::from(width - label_w - 20)) as i32;
    let y = |row: usize| top + row_h * row as i32;
    let colour = |name: &str, cat: &str| match (cat, name) {
        ("vcpu", n) if n.starts_with("guest: idle") => RGBColor(200, 200, 200),
        ("vcpu", n) if n.starts_with("guest") => RGBColor(120, 190, 120),
        ("vcpu", "waiting for page") => RGBColor(90, 90, 90),
        ("vcpu", _) => RGBColor(230, 120, 60),
        ("disk", n) if n.starts_with("read") => RGBColor(70, 130, 200),
        ("disk", _) => RGBColor(150, 110, 200),
        ("task", n) if n.starts_with("running") => RGBColor(120, 190, 120),
        ("task", n) if n.starts_with("parked") || n == "blocked" => RGBColor(170, 170, 170),
        ("task", _) => RGBColor(240, 210, 90),
        _ => RGBColor(0, 0, 0),
    };
    let err = |e: plotters::drawing::DrawingAreaErrorKind<std::io::Error>| anyhow::anyhow!("drawing: {e}");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width as u32, height as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "asyncpf trace: {} asynchronous page faults' lives, {:.0} µs (model time, from {:.0} µs)",
            chosen.len(),
            to - from,
            from
        );
        root.draw_text(&title, &("sans-serif", 20).into_font().color(&BLACK), (10, 10)).map_err(err)?;
        for (r, row) in rows.iter().enumerate() {
            let name = thread_names.get(row).cloned().unwrap_or_else(|| format!("{row:?}"));
            root.draw_text(&name, &("sans-serif", 14).into_font().color(&BLACK), (8, y(r) + 10)).map_err(err)?;
            for s in slices.iter().filter(|s| key(s) == *row && s["cat"] != "apf") {
                let (start, end) = (ts(s), ts(s) + s["dur"].as_f64().unwrap_or(0.0));
                if end < from || start > to {
                    continue;
                }
                let c = colour(s["name"].as_str().unwrap_or(""), s["cat"].as_str().unwrap_or(""));
                let (x0, x1) = (x(start), x(end).max(x(start) + 1));
                let inset = if s["name"] == "waiting for page" { 9 } else { 4 };
                root.draw(&Rectangle::new([(x0, y(r) + inset), (x1, y(r) + row_h - inset)], c.filled()))
                    .map_err(err)?;
            }
        }
        const FLOW: [RGBColor; 4] =
            [RGBColor(200, 30, 30), RGBColor(30, 30, 200), RGBColor(20, 140, 20), RGBColor(160, 30, 160)];
        for (i, flow) in chosen.iter().enumerate() {
            let c = FLOW[i % FLOW.len()];
            let points: Vec<(i32, i32)> = flow
                .iter()
                .filter_map(|s| rows.iter().position(|r| *r == key(s)).map(|r| (x(ts(s)), y(r) + row_h / 2)))
                .collect();
            root.draw(&PathElement::new(points.clone(), c.stroke_width(2))).map_err(err)?;
            for p in points {
                root.draw(&Circle::new(p, 4, c.filled())).map_err(err)?;
            }
        }
        let legend = [
            "green: guest running a task (vCPU rows) / task running; light grey: guest idle / task parked on its token \
             (or blocked); yellow: task runnable",
            "orange: hypervisor handling an exit; dark grey: vCPU waiting for a page; blue: disk read; purple: disk \
             write-back",
            "lines: one asynchronous fault each: stage-2 fault -> decision -> read submitted -> page_not_present -> \
             handler accepted -> read completed -> page_ready -> task woken -> task running",
        ];
        for (i, line) in legend.iter().enumerate() {
            let at = (10, top + row_h * rows.len() as i32 + 14 + 22 * i as i32);
            root.draw_text(line, &("sans-serif", 14).into_font().color(&BLACK), at).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time: u64, kind: Kind, cpu: u8, aux: u16, x: u32, a: u64, b: u64) -> Event {
        Event { time, kind: kind as u8, cpu, aux, x, a, b }
    }

    /// One asynchronous fault's whole life, as the hypervisor and the guest record it.
    fn one_life() -> Decoded {
        let page = 5u64;
        let ipa = RAM_IPA + page * 4096;
        let token = 0x1_0000;
        let cpu0 = vec![
            ev(100, Kind::Exit, 0, 0, 0, 0x24, 0),
            ev(110, Kind::Fault, 0, 1, 0, ipa, 0xdead),
            ev(120, Kind::DiskSubmit, 0, 3, core_trace::OP_READ, page, 7),
            ev(130, Kind::PageNotPresent, 0, 0, 0, token, 0xdead),
            ev(131, Kind::FaultEnd, 0, 1, 0, 0, 0),
            ev(140, Kind::Enter, 0, 1, 0, 0, 0),
            ev(150, Kind::Exit, 0, 0, 0, 0x16, 0),
            ev(155, Kind::HandlerDone, 0, 1, 0, token, 0),
            ev(160, Kind::Enter, 0, 2, 0, 0, 0),
            ev(1100, Kind::Exit, 0, 1, 0, 0, 0),
            ev(1120, Kind::DiskDone, 0, 3, core_trace::OP_READ, page, 7),
            ev(1120, Kind::PageReady, 0, 0, 0, token, 0),
            ev(1130, Kind::Enter, 0, 3, 0, 0, 0),
        ];
        let guest = vec![
            ev(170, Kind::TaskPark, 0, 0, 4, token, 0),
            ev(171, Kind::TaskSwitch, 0, 1, core_trace::TASK_IDLE, 4, 0),
            ev(1140, Kind::TaskWake, 0, 0, 1, token, 0),
            ev(1150, Kind::TaskSwitch, 0, 0, 4, u64::from(core_trace::TASK_IDLE), 0),
        ];
        let mut header = Header { counter_hz: 1_000_000_000, cpus: 1, ..Header::default() };
        header.cpu[0].events = cpu0.len() as u64;
        header.guest.events = guest.len() as u64;
        Decoded { header, cpus: vec![cpu0], guest }
    }

    #[test]
    fn row_names_go_before_the_extension() {
        assert_eq!(with_row(Path::new("t/a.json"), "reference"), Path::new("t/a-reference.json"));
        assert_eq!(with_row(Path::new("trace"), "synchronous"), Path::new("trace-synchronous"));
    }

    #[test]
    fn a_life_is_followed_and_converted() {
        let d = one_life();
        let a = analyse(&d);
        assert_eq!(a.lives.len(), 1);
        let life = &a.lives[0];
        assert!(life.complete(), "{life:?}");
        assert_eq!(life.read, Some((120, 1120, 3, false)));
        assert_eq!((life.page_ready, life.woken, life.running), (Some(1120), Some(1140), Some((1150, 0))));
        // Exit -> Enter by cause: 40 ticks async_fault, 10 handler_answer, 30 interrupt.
        assert_eq!(a.el2_ticks, [0, 40, 10, 30]);
        let doc = chrome_json(&d, &a);
        let steps: Vec<&str> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["cat"] == "apf")
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "stage-2 fault",
                "decision: async",
                "read submitted",
                "page_not_present",
                "handler accepted",
                "read completed",
                "page_ready",
                "task woken",
                "task running"
            ]
        );
        let s = summarize(&doc);
        assert_eq!((s.async_faults, s.complete_lives), (1, 1));
        // 110 -> 1150 ticks of 1 ns.
        assert_eq!(s.fault_to_running_us.mean, 1.04);
        assert_eq!(s.page_ready_to_running_us.mean, 0.03);
        assert_eq!(s.hypervisor_us_per_async_fault, 0.08);
        let hyp = json!({"page_faults": 1, "async_faults": 1, "apf": {"posted": 1, "accepted": 1, "declined": 0,
            "sync_reasons": {}}, "mem": {"page_ins": 1, "retries": 0, "dirty_writebacks": 0},
            "el2_ns_async_fault": 40, "el2_ns_handler_answer": 10, "el2_ns_interrupt": 30});
        let counters = compare_counters(&d, &a, &hyp);
        let wrong: Vec<_> = counters.iter().filter(|(name, t, r)| t != r && !name.starts_with("sync")).collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}
