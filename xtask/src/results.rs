//! Machine-readable results: `@result` console lines, the run verdict and the JSON report.
//!
//! The guest prints one `@result {json}` line, the hypervisor another; on the host console they
//! carry the `[guest] ` / `[hyp] ` prefixes (`asyncpf_contract::runner`). Without the
//! hypervisor (`--bare`) the guest's line has no prefix. The hypervisor's exit status is its
//! `[hyp] @exit N` line. Only QEMU's standard output (the machine's UART, which only the
//! hypervisor writes) is read for results: QEMU's standard error is kept in the tail but never
//! parsed.

use std::collections::VecDeque;

use asyncpf_contract::runner;
use serde::Serialize;

use crate::cli::ExpectEnd;
use crate::qemu::Stream;
use serde_json::Value;

/// How many console lines are kept for failure reports.
pub const TAIL_LINES: usize = 60;

/// Who printed a result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Guest,
    Hyp,
}

/// Splits a console line into who printed it and the content after the prefix.
/// Unprefixed lines are the guest's in `--bare` mode and nobody's otherwise.
pub fn line_source(line: &str, bare: bool) -> Option<(Source, &str)> {
    let line = line.trim_start_matches(['\r', '\0']);
    if let Some(rest) = line.strip_prefix(runner::HYP_LINE_PREFIX) {
        Some((Source::Hyp, rest))
    } else if let Some(rest) = line.strip_prefix(runner::GUEST_LINE_PREFIX) {
        Some((Source::Guest, rest))
    } else if bare {
        Some((Source::Guest, line))
    } else {
        None
    }
}

/// Why a result's JSON text is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonProblem {
    /// The text ends inside the object: the rest may follow on the next line.
    Incomplete(String),
    Invalid(String),
}

/// Parses the JSON text of a result line.
pub fn parse_result_json(text: &str) -> Result<Value, JsonProblem> {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(JsonProblem::Invalid("not a JSON object".into())),
        Err(e) if e.is_eof() => Err(JsonProblem::Incomplete(format!("incomplete JSON ({e})"))),
        Err(e) => Err(JsonProblem::Invalid(format!("not valid JSON ({e})"))),
    }
}

/// Recognises a single result line; returns who printed it and the parsed JSON (or why it
/// did not parse). Other lines give None. ([`Console`] also joins results cut into pieces.)
#[cfg(test)]
pub fn parse_result_line(line: &str, bare: bool) -> Option<(Source, Result<Value, JsonProblem>)> {
    let (source, rest) = line_source(line, bare)?;
    let json = rest.strip_prefix(runner::RESULT_PREFIX)?;
    Some((source, parse_result_json(json)))
}

/// A console line may be cut into pieces (a console driver with a line buffer breaks long
/// lines, each piece getting the prefix again); a result object is joined back from at most
/// this many pieces.
const MAX_RESULT_PIECES: usize = 64;

/// A result whose JSON ended early, waiting for its continuation lines.
#[derive(Debug)]
struct Pending {
    source: Source,
    text: String,
    pieces: usize,
    first_line: String,
}

/// Console lines by source: a bounded hypervisor log is part of the hostile-guest tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LineCounts {
    pub hyp: u64,
    pub guest: u64,
    /// Lines with neither prefix (QEMU's own messages, or the guest in `--bare` mode).
    pub other: u64,
}

/// What the runner keeps of the console: the tail and the result objects.
#[derive(Debug, Default)]
pub struct Console {
    /// A foreign guest (`--guest-kernel`): its `@result` lines are not results; the first of
    /// its lines that matches `success_pattern` is kept in `pattern_line`.
    pub foreign: bool,
    pub success_pattern: Option<regex::Regex>,
    pub pattern_line: Option<String>,
    pub tail: VecDeque<String>,
    pub guest: Option<Value>,
    pub hyp: Option<Value>,
    /// The hypervisor's backing-store self-test result (`[hyp] @selftest {json}`).
    pub selftest: Option<Value>,
    /// The hypervisor's exit status: its first `[hyp] @exit N` line.
    pub hyp_exit: Option<u32>,
    /// The hypervisor's first `error: ...` or `PANIC ...` line: why it ended the machine.
    pub hyp_error: Option<String>,
    /// Console lines seen, by who printed them.
    pub lines: LineCounts,
    /// Result lines that could not be used, with the reason.
    pub bad_results: Vec<String>,
    pub bare: bool,
    pending: Vec<Pending>,
}

impl Console {
    pub fn new(bare: bool) -> Self {
        Console { bare, ..Default::default() }
    }

    /// The console of a foreign guest, judged by how it ends and by `success_pattern`.
    pub fn foreign(bare: bool, success_pattern: Option<regex::Regex>) -> Self {
        Console { bare, foreign: true, success_pattern, ..Default::default() }
    }

    /// One line of QEMU's output; only `Stream::Stdout` (the UART) can carry results.
    pub fn push(&mut self, stream: Stream, line: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        let source = (stream == Stream::Stdout).then(|| line_source(line, self.bare)).flatten();
        match source {
            Some((Source::Hyp, _)) => self.lines.hyp += 1,
            Some((Source::Guest, _)) if !self.bare => self.lines.guest += 1,
            _ => self.lines.other += 1,
        }
        let Some((source, content)) = source else { return };
        if source == Source::Guest && self.foreign {
            if self.pattern_line.is_none() && self.success_pattern.as_ref().is_some_and(|p| p.is_match(content)) {
                self.pattern_line = Some(content.to_string());
            }
            return;
        }
        if source == Source::Hyp
            && self.hyp_error.is_none()
            && (content.starts_with("error:") || content.starts_with("PANIC"))
        {
            self.hyp_error = Some(content.to_string());
        }
        if let (Source::Hyp, Some(code)) = (source, content.strip_prefix(runner::EXIT_PREFIX)) {
            match code.trim().parse() {
                Ok(code) if self.hyp_exit.is_none() => self.hyp_exit = Some(code),
                Ok(_) => {}
                Err(_) => self.bad_results.push(format!("exit line without a status: {line}")),
            }
            return;
        }
        if let (Source::Hyp, Some(json)) = (source, content.strip_prefix(runner::SELFTEST_PREFIX)) {
            match parse_result_json(json) {
                Ok(v) => self.selftest = Some(v),
                Err(JsonProblem::Incomplete(why) | JsonProblem::Invalid(why)) => {
                    self.bad_results.push(format!("self-test line {why}: {line}"))
                }
            }
            return;
        }
        // A continuation of this source's unfinished result?
        if let Some(i) = self.pending.iter().position(|p| p.source == source) {
            if !content.starts_with(runner::RESULT_PREFIX) {
                let mut p = self.pending.swap_remove(i);
                p.text.push_str(content);
                p.pieces += 1;
                self.settle(p);
                return;
            }
            let p = self.pending.swap_remove(i);
            self.bad_results.push(format!("{:?} result line never completed: {}", p.source, p.first_line));
        }
        if let Some(json) = content.strip_prefix(runner::RESULT_PREFIX) {
            self.settle(Pending { source, text: json.to_string(), pieces: 1, first_line: line.to_string() });
        }
    }

    /// Stores a parsed result, keeps an incomplete one waiting, or records why it is bad.
    fn settle(&mut self, p: Pending) {
        match parse_result_json(&p.text) {
            Ok(v) => match p.source {
                Source::Guest => self.guest = Some(v),
                Source::Hyp => self.hyp = Some(v),
            },
            Err(JsonProblem::Incomplete(_)) if p.pieces < MAX_RESULT_PIECES => self.pending.push(p),
            Err(JsonProblem::Incomplete(why) | JsonProblem::Invalid(why)) => {
                self.bad_results.push(format!("{:?} result line {why}: {}", p.source, p.first_line))
            }
        }
    }

    /// Results still unfinished when the console ended.
    pub fn finish(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            self.bad_results.push(format!("{:?} result line is incomplete JSON: {}", p.source, p.first_line));
        }
    }
}

/// Names of the hypervisor's exit statuses (`asyncpf_contract::runner`).
pub fn exit_meaning(code: i32) -> &'static str {
    match u32::try_from(code) {
        Ok(runner::EXIT_SYSTEM_OFF) => "guest SYSTEM_OFF",
        Ok(runner::EXIT_SYSTEM_RESET) => "guest SYSTEM_RESET",
        Ok(runner::EXIT_BAD_CONFIG) => "hypervisor: bad options or image",
        Ok(runner::EXIT_HYP_PANIC) => "hypervisor panic",
        _ => "unknown exit code",
    }
}

/// How the machine ended: the hypervisor's `@exit` status, or QEMU's own exit code in `--bare`
/// mode. `Err` says why there is no status.
pub fn exit_status(
    qemu_exit: Option<i32>,
    timed_out: bool,
    timeout_secs: u64,
    console: &Console,
) -> Result<i32, String> {
    if timed_out {
        return Err(format!("timed out after {timeout_secs} s; QEMU was killed"));
    }
    let Some(code) = qemu_exit else { return Err("QEMU was killed by a signal".into()) };
    if console.bare {
        return Ok(code);
    }
    if code != 0 {
        // The hypervisor always ends the machine with SYSTEM_OFF, which QEMU answers with 0.
        return Err(format!("QEMU itself failed with exit status {code} (see its messages above)"));
    }
    match console.hyp_exit {
        Some(status) => Ok(status as i32),
        None => Err(format!(
            "QEMU ended without the hypervisor's `{}{}N` line: the machine was not ended by the hypervisor",
            runner::HYP_LINE_PREFIX,
            runner::EXIT_PREFIX
        )),
    }
}

/// How a run ended, for the report (`end`).
pub fn end_of_run(qemu_exit: Option<i32>, timed_out: bool, console: &Console) -> &'static str {
    if timed_out {
        return "timeout";
    }
    match exit_status(qemu_exit, false, 0, console).map(|s| u32::try_from(s).ok()) {
        Ok(Some(runner::EXIT_SYSTEM_OFF)) => "system_off",
        Ok(Some(runner::EXIT_SYSTEM_RESET)) => "system_reset",
        Ok(Some(runner::EXIT_HYP_PANIC)) => "hypervisor_panic",
        Ok(Some(runner::EXIT_BAD_CONFIG)) => "bad_config",
        Ok(_) => "other_status",
        Err(_) if qemu_exit.is_none() => "killed",
        Err(_) => "no_exit_status",
    }
}

/// The verdict on a foreign guest (`--guest-kernel`): it ended as `expect` says, and printed a
/// line matching the success pattern if one was given. None means ok.
pub fn foreign_verdict(end: &str, expect: ExpectEnd, console: &Console) -> Option<String> {
    let expected = match expect {
        ExpectEnd::Off => &["system_off"][..],
        ExpectEnd::Reset => &["system_reset"],
        ExpectEnd::Any => &["system_off", "system_reset"],
    };
    if !expected.contains(&end) {
        let why = console.hyp_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        return Some(format!("the guest ended with {end}{why}, not {} (--expect)", expected.join(" or ")));
    }
    match &console.success_pattern {
        Some(p) if console.pattern_line.is_none() => {
            Some(format!("no guest console line matched --success-pattern {:?}", p.as_str()))
        }
        _ => None,
    }
}

/// Decides whether a run passed; None means ok, otherwise the one-line reason.
pub fn verdict(qemu_exit: Option<i32>, timed_out: bool, timeout_secs: u64, console: &Console) -> Option<String> {
    match exit_status(qemu_exit, timed_out, timeout_secs, console) {
        Err(why) => return Some(why),
        Ok(0) => {}
        Ok(code) if console.bare => return Some(format!("QEMU exited with status {code}")),
        Ok(code) => {
            let why = console.hyp_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
            return Some(format!("the hypervisor ended with status {code} ({}){why}", exit_meaning(code)));
        }
    }
    let Some(guest) = &console.guest else {
        let extra = console.bad_results.first().map(|b| format!(" ({b})")).unwrap_or_default();
        return Some(format!("the guest printed no `{}` line{extra}", runner::RESULT_PREFIX.trim()));
    };
    if guest.get("ok") != Some(&Value::Bool(true)) {
        let ok = guest.get("ok").map(Value::to_string).unwrap_or_else(|| "missing".into());
        let detail = guest.get("failure").or_else(|| guest.get("error")).map(|v| format!(": {v}")).unwrap_or_default();
        return Some(format!("the guest result has \"ok\": {ok}{detail}"));
    }
    if !console.bare && console.hyp.is_none() {
        return Some(format!(
            "the hypervisor printed no `{}{}` line",
            runner::HYP_LINE_PREFIX,
            runner::RESULT_PREFIX.trim()
        ));
    }
    None
}

/// The `--json` report of one run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub scenario: String,
    pub vcpus: u32,
    pub pcpus: u32,
    pub cpu: String,
    pub guest_mib: u32,
    pub bare: bool,
    pub guest_kernel: String,
    /// The full QEMU command line as one shell string.
    pub qemu: String,
    pub qemu_version: String,
    pub icount: Option<u32>,
    pub seed: u64,
    pub ok: bool,
    /// The hypervisor's exit status (its `[hyp] @exit` line), or QEMU's in `--bare` mode.
    pub exit_status: Option<i32>,
    /// QEMU's own exit code (0 when the hypervisor powered the machine off).
    pub qemu_exit_status: Option<i32>,
    /// How the run ended: system_off, system_reset, hypervisor_panic, bad_config, timeout,
    /// killed, no_exit_status (QEMU ended without the hypervisor's `@exit` line), other_status.
    #[serde(default)]
    pub end: String,
    /// A foreign guest's console line that matched `--success-pattern`.
    #[serde(default)]
    pub success_line: Option<String>,
    /// Console lines by who printed them.
    pub console_lines: LineCounts,
    pub wall_seconds: f64,
    /// Copied from the guest result (`tasks_run`, `context_switches`, `preemptions`,
    /// `timer_ticks` per vCPU); null if there is none.
    pub per_vcpu: Value,
    /// The hypervisor's result object; null if none (always in `--bare` mode).
    pub hyp: Value,
    /// The whole guest result object; null if none.
    pub guest: Value,
    /// The backing-store latency model (µs) the hypervisor was given; null in `--bare` mode.
    pub backing_latency_us: Option<u64>,
    /// The hypervisor's backing-store self-test result (`@selftest`); null if none was run.
    pub backing_selftest: Value,
    /// Host memory for guest RAM in MiB given to the hypervisor (`--resident-mib`); null if
    /// guest RAM was not paged.
    pub resident_mib: Option<u32>,
    /// Busy processes that ran beside QEMU (`--host-load`).
    pub host_load: u32,
    /// The pager's counters: a copy of `/hyp/mem` (`page_ins`, `page_outs`, `zero_fills`,
    /// `dirty_writebacks`, `io_errors`, `failed_reads`, `aborts`, `fault_stall_us_mean`, ...),
    /// which the hypervisor reports only when it paged guest RAM; null otherwise.
    pub mem: Value,
    /// The memory-integrity check: a copy of `/guest/check` (`words_checked`, `mismatches`)
    /// from the `overcommit` scenario; null otherwise.
    pub check: Value,
    /// `--trace`: the trace's file, record counts, its counters beside the run's, its summary.
    #[serde(default)]
    pub trace: Value,
    pub failure: Option<String>,
    pub console_tail: Vec<String>,
}

impl Report {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let verdict = if self.ok { "ok" } else { "FAILED" };
        s += &format!(
            "== {} scenario={} vcpus={} pcpus={} cpu={} seed={} icount={} -> {verdict} in {:.1} s (exit {}) [{}]\n",
            if self.bare { "bare" } else { "asyncpf" },
            self.scenario,
            self.vcpus,
            self.pcpus,
            self.cpu,
            self.seed,
            self.icount.map(|i| i.to_string()).unwrap_or_else(|| "off".into()),
            self.wall_seconds,
            self.exit_status.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            self.qemu_version,
        );
        if let Some(vcpus) = self.per_vcpu.as_array() {
            s += "   vcpu   tasks_run  ctx_switches  preemptions  timer_ticks\n";
            for (i, v) in vcpus.iter().enumerate() {
                let f = |k: &str| v.get(k).map(Value::to_string).unwrap_or_else(|| "-".into());
                s += &format!(
                    "   {i:>4} {:>11} {:>13} {:>12} {:>12}\n",
                    f("tasks_run"),
                    f("context_switches"),
                    f("preemptions"),
                    f("timer_ticks")
                );
            }
        }
        if let Some(hyp) = self.hyp.as_object() {
            let counters: Vec<String> =
                hyp.iter().filter(|(_, v)| v.is_number() || v.is_boolean()).map(|(k, v)| format!("{k}={v}")).collect();
            s += &format!("   hyp: {}\n", counters.join(" "));
        }
        if let Some(t) = self.backing_selftest.as_object() {
            let f = |k: &str| t.get(k).map(Value::to_string).unwrap_or_else(|| "-".into());
            s += &format!(
                "   backing self-test: ok={} pages={} verified={} mismatched_words={} failed_writes={} failed_reads={} \
                 latency_us={} lat min/mean/p99/max={}/{}/{}/{} us, {} pages/s, max_in_flight={}{}\n",
                f("ok"),
                f("pages"),
                f("verified"),
                f("mismatched_words"),
                f("failed_writes"),
                f("failed_reads"),
                f("latency_us"),
                f("lat_min_us"),
                f("lat_mean_us"),
                f("lat_p99_us"),
                f("lat_max_us"),
                f("pages_per_s"),
                f("max_in_flight"),
                t.get("error").filter(|e| !e.is_null()).map(|e| format!(", error {e}")).unwrap_or_default(),
            );
        }
        s += &self.memory_summary();
        if let Some(f) = &self.failure {
            s += &format!("   failure: {f}\n");
        }
        s
    }

    /// The pager's and the integrity check's lines: empty unless the run paged guest RAM or
    /// checked memory.
    fn memory_summary(&self) -> String {
        let mut s = String::new();
        let get = |v: &Value, k: &str| v.get(k).map(Value::to_string).unwrap_or_else(|| "-".into());
        if self.mem.is_object() {
            let f = |k: &str| get(&self.mem, k);
            s += &format!(
                "   mem: G={} MiB R={} MiB L={} us: page_ins {}, page_outs {}, zero_fills {}, clean_drops {}, \
                 dirty_writebacks {}, io_errors {}, retries {}, failed_reads {}, aborts {}, blocking_faults {}, \
                 stall mean {} us p99 {} us\n",
                f("guest_mib"),
                f("resident_mib"),
                f("backing_latency_us"),
                f("page_ins"),
                f("page_outs"),
                f("zero_fills"),
                f("clean_drops"),
                f("dirty_writebacks"),
                f("io_errors"),
                f("retries"),
                f("failed_reads"),
                f("aborts"),
                f("blocking_faults"),
                f("fault_stall_us_mean"),
                f("fault_stall_us_p99"),
            );
        } else if let Some(r) = self.resident_mib.filter(|_| !self.hyp.is_null()) {
            s += &format!("   mem: resident_mib={r} was given, but the hypervisor's result has no \"mem\" object\n");
        }
        if self.check.is_object() {
            let words = self.check.get("words_checked").and_then(Value::as_u64);
            let times = match (words, self.resident_mib) {
                (Some(w), Some(r)) => format!(" (= {:.1}× resident)", (w * 8) as f64 / (u64::from(r) << 20) as f64),
                _ => String::new(),
            };
            s += &format!(
                "   check: words_checked {}{times}, mismatches {}, guest aborts {}\n",
                get(&self.check, "words_checked"),
                get(&self.check, "mismatches"),
                get(&self.guest, "aborts"),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_lines() {
        let (who, v) = parse_result_line("[guest] @result {\"ok\": true}", false).unwrap();
        assert_eq!((who, v.unwrap()), (Source::Guest, json!({"ok": true})));
        let (who, v) = parse_result_line("[hyp] @result {\"exits\": 5}\r", false).unwrap();
        assert_eq!((who, v.unwrap()), (Source::Hyp, json!({"exits": 5})));
        assert!(parse_result_line("@result {\"ok\": true}", false).is_none(), "unprefixed needs --bare");
        let (who, v) = parse_result_line("@result {\"ok\": true}", true).unwrap();
        assert_eq!((who, v.unwrap()), (Source::Guest, json!({"ok": true})));
        assert!(parse_result_line("[guest] hello @result {}", false).is_none());
        assert!(parse_result_line("[guest] booting", false).is_none());
        let (_, v) = parse_result_line("[guest] @result {\"ok\": tru", false).unwrap();
        assert!(matches!(v.unwrap_err(), JsonProblem::Incomplete(_)));
        let (_, v) = parse_result_line("[guest] @result {\"ok\": nope}", false).unwrap();
        assert!(matches!(v.unwrap_err(), JsonProblem::Invalid(m) if m.contains("not valid JSON")));
        let (_, v) = parse_result_line("[guest] @result [1]", false).unwrap();
        assert!(matches!(v.unwrap_err(), JsonProblem::Invalid(m) if m.contains("not a JSON object")));
    }

    #[test]
    fn console_keeps_tail_and_results() {
        let mut c = Console::new(false);
        for i in 0..100 {
            c.push(Stream::Stdout, &format!("line {i}"));
        }
        c.push(Stream::Stdout, "[guest] @result {\"ok\": true}");
        c.push(Stream::Stdout, "[hyp] @result {\"exits\": 1}");
        c.push(Stream::Stdout, "[hyp] @exit 0");
        assert_eq!(c.tail.len(), TAIL_LINES);
        assert_eq!(c.tail.back().unwrap(), "[hyp] @exit 0");
        assert_eq!(c.tail.front().unwrap(), "line 43");
        assert!(c.guest.is_some() && c.hyp.is_some());
        assert_eq!(verdict(Some(0), false, 1, &c), None);
    }

    #[test]
    fn joins_a_result_cut_into_pieces() {
        let mut c = Console::new(false);
        c.push(Stream::Stdout, "[guest] @result {\"ok\":true,\"per_vcpu\":[{\"tasks_run");
        c.push(Stream::Stdout, "[hyp] something else");
        c.push(Stream::Stdout, "[guest] \":5}],\"name\":\"a b");
        assert!(c.guest.is_none());
        c.push(Stream::Stdout, "[guest] c\"}");
        assert_eq!(c.guest, Some(json!({"ok": true, "per_vcpu": [{"tasks_run": 5}], "name": "a bc"})));
        assert!(c.bad_results.is_empty());

        let mut c = Console::new(false);
        c.push(Stream::Stdout, "[guest] @result {\"ok\":");
        c.push(Stream::Stdout, "[guest] @result {\"ok\": true}");
        assert_eq!(c.guest, Some(json!({"ok": true})));
        assert!(c.bad_results[0].contains("never completed"), "{:?}", c.bad_results);
        c.push(Stream::Stdout, "[hyp] @result {\"exits\":");
        c.finish();
        assert!(c.bad_results[1].contains("incomplete JSON"), "{:?}", c.bad_results);
    }

    #[test]
    fn selftest_line() {
        let mut c = Console::new(false);
        c.push(Stream::Stdout, "[hyp] @selftest {\"ok\": true, \"pages\": 4}");
        assert_eq!(c.selftest, Some(json!({"ok": true, "pages": 4})));
        c.push(Stream::Stdout, "[guest] @selftest {\"ok\": false}");
        assert_eq!(c.selftest, Some(json!({"ok": true, "pages": 4})), "only the hypervisor's counts");
        c.push(Stream::Stdout, "[hyp] @selftest {oops");
        assert!(c.bad_results[0].contains("self-test line"), "{:?}", c.bad_results);
        assert!(c.hyp.is_none());
    }

    fn report(resident_mib: Option<u32>, hyp: Value, guest: Value) -> Report {
        Report {
            scenario: "overcommit".into(),
            vcpus: 2,
            pcpus: 2,
            cpu: "max".into(),
            guest_mib: 256,
            bare: false,
            guest_kernel: "asyncpf-guest".into(),
            qemu: String::new(),
            qemu_version: "QEMU 10".into(),
            icount: None,
            seed: 1,
            ok: true,
            exit_status: Some(0),
            qemu_exit_status: Some(0),
            end: "system_off".into(),
            success_line: None,
            console_lines: LineCounts::default(),
            wall_seconds: 1.0,
            per_vcpu: Value::Null,
            mem: hyp.get("mem").cloned().unwrap_or(Value::Null),
            check: guest.get("check").cloned().unwrap_or(Value::Null),
            trace: Value::Null,
            hyp,
            guest,
            backing_latency_us: Some(50),
            backing_selftest: Value::Null,
            resident_mib,
            host_load: 0,
            failure: None,
            console_tail: Vec::new(),
        }
    }

    #[test]
    fn memory_summary_lines() {
        let guest = json!({"aborts": 0, "check": {"words_checked": 16 << 20, "mismatches": 0}});
        let hyp = json!({"exits": 9, "mem": {"guest_mib": 256, "resident_mib": 32, "backing_latency_us": 50,
            "page_ins": 7, "page_outs": 8, "zero_fills": 9, "fault_stall_us_mean": 120, "fault_stall_us_p99": 900}});
        let s = report(Some(32), hyp, guest.clone()).summary();
        assert!(s.contains("   hyp: exits=9\n"), "the mem object is not a counter: {s}");
        assert!(
            s.contains("   mem: G=256 MiB R=32 MiB L=50 us: page_ins 7, page_outs 8, zero_fills 9, clean_drops -,"),
            "{s}"
        );
        assert!(s.contains("stall mean 120 us p99 900 us\n"), "{s}");
        assert!(
            s.contains("   check: words_checked 16777216 (= 4.0× resident), mismatches 0, guest aborts 0\n"),
            "{s}"
        );
        // Not paged: no mem line, and the check without the ratio.
        let s = report(None, json!({"exits": 9}), guest.clone()).summary();
        assert!(!s.contains("mem:") && s.contains("check: words_checked 16777216, mismatches 0"), "{s}");
        // Paging asked for, but the hypervisor did not report it.
        let s = report(Some(8), json!({"exits": 9}), guest).summary();
        assert!(s.contains("mem: resident_mib=8 was given, but the hypervisor's result has no \"mem\" object"), "{s}");
        let s = report(None, json!({"exits": 9}), json!({"ok": true})).summary();
        assert!(!s.contains("check:") && !s.contains("mem:"), "{s}");
    }

    #[test]
    fn verdicts() {
        let mut c = Console::new(false);
        assert!(verdict(None, true, 5, &c).unwrap().contains("timed out after 5 s"));
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("without the hypervisor's `[hyp] @exit N` line"));
        assert!(verdict(Some(1), false, 5, &c).unwrap().contains("QEMU itself failed with exit status 1"));
        c.push(Stream::Stdout, "[hyp] PANIC on CPU 1 (vCPU 1): boom");
        c.push(Stream::Stdout, "[hyp] @exit 101");
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("status 101 (hypervisor panic): PANIC on CPU 1"));
        let mut c = Console::new(false);
        c.push(Stream::Stdout, "[hyp] @exit 0");
        c.push(Stream::Stdout, "[hyp] @exit 101"); // only the first counts
        assert_eq!(exit_status(Some(0), false, 5, &c), Ok(0));
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("no `@result` line"));
        c.push(Stream::Stdout, "[guest] @result {\"ok\": false, \"failure\": \"boom\"}");
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("\"ok\": false: \"boom\""));
        c.push(Stream::Stdout, "[guest] @result {\"ok\": true}");
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("hypervisor printed no"));
        let mut bare = Console::new(true);
        bare.push(Stream::Stdout, "@result {\"ok\": true}");
        assert_eq!(verdict(Some(0), false, 5, &bare), None);
        assert_eq!(exit_status(Some(3), false, 5, &bare), Ok(3));
    }

    /// Only the hypervisor's own lines on the UART count: a guest line that looks like the
    /// hypervisor's, or anything on QEMU's standard error (where semihosting would write), is
    /// console text and nothing more.
    #[test]
    fn foreign_guests_are_judged_by_their_end_and_pattern() {
        let mut c = Console::foreign(false, Some(regex::Regex::new("^tests: [0-9]+ passed$").unwrap()));
        c.push(Stream::Stdout, "[guest] @result {\"ok\": true}");
        assert_eq!(c.guest, None, "a foreign guest's result lines are not trusted");
        c.push(Stream::Stdout, "[hyp] @exit 0");
        assert_eq!(end_of_run(Some(0), false, &c), "system_off");
        assert!(foreign_verdict("system_off", ExpectEnd::Off, &c).unwrap().contains("no guest console line matched"));
        c.push(Stream::Stdout, "[hyp] tests: 3 passed"); // the hypervisor's lines do not count
        assert!(foreign_verdict("system_off", ExpectEnd::Off, &c).is_some());
        c.push(Stream::Stdout, "[guest] tests: 3 passed");
        assert_eq!(c.pattern_line.as_deref(), Some("tests: 3 passed"));
        assert_eq!(foreign_verdict("system_off", ExpectEnd::Off, &c), None);
        assert_eq!(foreign_verdict("system_off", ExpectEnd::Any, &c), None);
        assert!(foreign_verdict("system_off", ExpectEnd::Reset, &c).unwrap().contains("not system_reset"));
        assert!(foreign_verdict("timeout", ExpectEnd::Any, &c).unwrap().contains("ended with timeout"));
        let plain = Console::foreign(false, None);
        assert_eq!(foreign_verdict("system_reset", ExpectEnd::Reset, &plain), None);
        assert_eq!(end_of_run(None, true, &plain), "timeout");
        assert_eq!(end_of_run(None, false, &plain), "killed");
        assert_eq!(end_of_run(Some(0), false, &plain), "no_exit_status");
    }

    #[test]
    fn forged_lines_are_not_results() {
        let mut c = Console::new(false);
        c.push(Stream::Stdout, "[guest] [hyp] @exit 0");
        c.push(Stream::Stdout, "[guest] [hyp] @result {\"forged\": true}");
        c.push(Stream::Stderr, "[hyp] @exit 0");
        c.push(Stream::Stderr, "[hyp] @result {\"forged\": true}");
        c.push(Stream::Stderr, "[guest] @result {\"ok\": true}");
        assert_eq!((c.hyp_exit, &c.hyp, &c.guest), (None, &None, &None));
        assert_eq!(c.tail.len(), 5, "still shown in the tail");
        assert_eq!(c.lines, LineCounts { hyp: 0, guest: 2, other: 3 });
        assert!(verdict(Some(0), false, 5, &c).unwrap().contains("without the hypervisor's"));
        c.push(Stream::Stdout, "[hyp] @exit x");
        assert!(c.bad_results[0].contains("exit line without a status"), "{:?}", c.bad_results);
    }
}
