//! The backing-store self-test (`backing_selftest=N`): before the VM starts, CPU 0 probes the
//! disk, writes N pages with a seeded pattern, reads them back in a scattered order and checks
//! every word, keeping as many requests in flight as the store takes (≥ 16). It prints one
//! `[hyp] @selftest {json}` line with what it saw — pages verified, mismatches, the requests the
//! device failed (their disk slots), per-request latency (min/mean/p99/max in µs) and pages per
//! second for each phase — and returns; the VM then boots as usual.
//!
//! While requests are outstanding CPU 0 sleeps in `wfi`; the device's SPI and the EL2 timer
//! (armed for the earliest latency deadline) wake it, and it takes them with `gic::drain`.
//! Pages whose write failed are not read back; a device that stops answering for
//! [`STALL_SECONDS`] ends the test with an error instead of a hang.
//!
//! Only [`MAX_IN_FLIGHT`] page buffers are used (the pattern is recomputed to verify), so N is
//! bounded by the disk and by the latency samples kept (4 bytes per request).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use asyncpf_contract::runner::SELFTEST_PREFIX;
use asyncpf_core::options::HypOptions;

use super::clock::{self, Ticks};
use super::{BackingStore, Busy, Completion, Op, MAX_IN_FLIGHT};
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::platform::Platform;
use crate::{arch, gic, hyp_println};

/// Seed of the page pattern.
const SEED: u64 = 0x6a7c_0e5b_3f1d_4c2e;
/// Give up when no request has completed for this long.
const STALL_SECONDS: u64 = 10;
/// Failed requests listed by slot in the report (all are counted).
const MAX_LISTED_FAILURES: usize = 32;
/// What a read buffer holds before the device fills it, so stale data never verifies.
const READ_POISON: u64 = 0xdead_beef_dead_beef;
/// The read order visits page `(i * stride + offset) % N`: the stride is the first number
/// coprime with N from N / φ (φ, the golden ratio, is 1.618…) on, which scatters neighbours.
const GOLDEN_RATIO_PERMILLE: u64 = 1618;
const PERMILLE: u64 = 1000;
const WORDS_PER_PAGE: usize = PAGE_SIZE as usize / core::mem::size_of::<u64>();
/// A tag is the buffer index above the page (slot) number.
const TAG_BUFFER_SHIFT: u32 = 32;
const TAG_PAGE_MASK: u64 = (1 << TAG_BUFFER_SHIFT) - 1;
const PERCENTILE: usize = 99;
const PERCENT: usize = 100;
const NANOS_PER_MICRO: u64 = 1000;

/// One page buffer for the device.
#[repr(C, align(4096))]
struct PageBuffer([u64; WORDS_PER_PAGE]);

/// splitmix64: word `index` of the pattern.
fn pattern_word(index: u64) -> u64 {
    let mut z = SEED.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn expected(page: u64, word: usize) -> u64 {
    pattern_word(page * WORDS_PER_PAGE as u64 + word as u64)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The scattered read order: a stride coprime with `pages` visits every page once.
fn read_stride(pages: u64) -> u64 {
    let mut stride = (pages * PERMILLE / GOLDEN_RATIO_PERMILLE).max(1);
    while gcd(stride, pages) != 1 {
        stride += 1;
    }
    stride
}

/// What one phase (all writes, or all reads) measured.
#[derive(Default)]
struct PhaseStats {
    pages: u64,
    failed: u64,
    failed_slots: Vec<u64>,
    /// Per-request latency in ns, one per completion.
    latencies_ns: Vec<u32>,
    elapsed: Ticks,
}

impl PhaseStats {
    fn record(&mut self, completion: &Completion, now: Ticks) {
        let latency = now.saturating_sub(completion.submitted).as_nanos();
        self.latencies_ns.push(latency.min(u32::MAX as u64) as u32);
        if completion.result.is_err() {
            self.failed += 1;
            if self.failed_slots.len() < MAX_LISTED_FAILURES {
                self.failed_slots.push(completion.tag & TAG_PAGE_MASK);
            }
        }
    }
}

/// Latency figures over a set of samples, in µs.
struct Summary {
    min: u64,
    mean: u64,
    p99: u64,
    max: u64,
}

fn summarize(samples: &mut [u32]) -> Summary {
    if samples.is_empty() {
        return Summary { min: 0, mean: 0, p99: 0, max: 0 };
    }
    samples.sort_unstable();
    let micros = |ns: u64| ns / NANOS_PER_MICRO;
    let sum: u64 = samples.iter().map(|&s| s as u64).sum();
    let p99_index = (samples.len() * PERCENTILE).div_ceil(PERCENT).saturating_sub(1);
    Summary {
        min: micros(samples[0] as u64),
        mean: micros(sum / samples.len() as u64),
        p99: micros(samples[p99_index] as u64),
        max: micros(samples[samples.len() - 1] as u64),
    }
}

fn pages_per_second(pages: u64, elapsed: Ticks) -> u64 {
    if elapsed.0 == 0 {
        return 0;
    }
    (pages as u128 * clock::frequency() as u128 / elapsed.0 as u128) as u64
}

/// The whole test's state.
struct SelfTest {
    store: BackingStore,
    buffers: Vec<Box<PageBuffer>>,
    free_buffers: Vec<usize>,
    completions: Vec<Completion>,
    max_in_flight: usize,
    device_irqs: u64,
    timer_irqs: u64,
    verified: u64,
    mismatched_pages: u64,
    mismatched_words: u64,
}

/// Why a phase ended early.
enum Abort {
    Stalled { in_flight: usize },
}

impl SelfTest {
    fn frame(&self, buffer: usize) -> PhysAddr {
        PhysAddr(self.buffers[buffer].0.as_ptr() as u64)
    }

    /// Sleep until the device's interrupt, the earliest latency deadline or `wake_by`.
    fn wait(&mut self, wake_by: Ticks) {
        let deadline = self.store.next_deadline().map_or(wake_by, |d| d.min(wake_by));
        clock::set_el2_timer(Some(deadline));
        arch::wait_for_interrupt();
        let device = self.store.intid();
        let (store, device_irqs, timer_irqs) = (&mut self.store, &mut self.device_irqs, &mut self.timer_irqs);
        gic::drain(|intid| {
            if intid == device {
                store.acknowledge_interrupt();
                *device_irqs += 1;
            } else if intid == gic::PPI_HYP_TIMER {
                // Level-sensitive: stop it before the interrupt ends.
                clock::set_el2_timer(None);
                *timer_irqs += 1;
            }
        });
    }

    /// Submit `op` for every page `order` yields, keeping the store full, until all completed.
    fn phase(&mut self, op: Op, mut order: impl Iterator<Item = u64>, stats: &mut PhaseStats) -> Result<(), Abort> {
        let start = clock::now();
        let mut last_progress = start;
        let stall = Ticks::from_micros(STALL_SECONDS * 1_000_000);
        let mut next = order.next();
        loop {
            while let (Some(page), Some(buffer)) = (next, self.free_buffers.pop()) {
                self.prepare(op, page, buffer);
                let frame = self.frame(buffer);
                let tag = (buffer as u64) << TAG_BUFFER_SHIFT | page;
                // SAFETY: `frame` is buffer `buffer`, a heap page taken off the free list; it
                // goes back on the list only when its completion has been reported, and the
                // store is dropped (or, after a stall, leaked with the buffers) only after that.
                let submitted = unsafe {
                    match op {
                        Op::Read => self.store.submit_read(page, frame, tag, clock::now()),
                        Op::Write => self.store.submit_write(page, frame, tag, clock::now()),
                    }
                };
                if submitted == Err(Busy) {
                    self.free_buffers.push(buffer);
                    break;
                }
                self.max_in_flight = self.max_in_flight.max(self.store.in_flight());
                next = order.next();
            }
            self.store.ring();
            if next.is_none() && self.store.in_flight() == 0 {
                break;
            }
            self.wait(last_progress.saturating_add(stall));
            let now = clock::now();
            let mut completions = core::mem::take(&mut self.completions);
            self.store.poll_completions(now, &mut completions);
            for completion in completions.drain(..) {
                stats.record(&completion, now);
                let buffer = (completion.tag >> TAG_BUFFER_SHIFT) as usize;
                if completion.op == Op::Read && completion.result.is_ok() {
                    self.verify(completion.tag & TAG_PAGE_MASK, buffer);
                }
                self.free_buffers.push(buffer);
                stats.pages += 1;
                last_progress = now;
            }
            self.completions = completions;
            if now.saturating_sub(last_progress) >= stall {
                return Err(Abort::Stalled { in_flight: self.store.in_flight() });
            }
        }
        stats.elapsed = clock::now().saturating_sub(start);
        Ok(())
    }

    /// Fill the buffer with the page's pattern (write) or with poison (read).
    fn prepare(&mut self, op: Op, page: u64, buffer: usize) {
        let words = &mut self.buffers[buffer].0;
        match op {
            Op::Write => words.iter_mut().enumerate().for_each(|(i, w)| *w = expected(page, i)),
            Op::Read => words.fill(READ_POISON),
        }
    }

    fn verify(&mut self, page: u64, buffer: usize) {
        let wrong = self.buffers[buffer].0.iter().enumerate().filter(|&(i, &w)| w != expected(page, i)).count();
        if wrong == 0 {
            self.verified += 1;
        } else {
            self.mismatched_pages += 1;
            self.mismatched_words += wrong as u64;
        }
    }
}

/// Run the self-test over `options.backing_selftest` pages and print its `@selftest` line.
pub fn run(platform: &Platform, options: &HypOptions) {
    let pages = options.backing_selftest;
    let mut json = String::new();
    let _ = write!(json, "{{\"pages\":{pages},\"latency_us\":{},\"seed\":{SEED}", options.backing_latency_us);
    match BackingStore::probe(platform, options.backing_latency_us, None) {
        Err(error) => {
            json.push_str(",\"ok\":false,\"error\":");
            push_json_string(&mut json, &alloc::format!("cannot probe the backing store: {error}"));
            json.push('}');
        }
        Ok(store) if store.capacity_pages() < pages => {
            let _ = write!(
                json,
                ",\"ok\":false,\"capacity_pages\":{},\"error\":\"the disk holds {} pages, fewer than {pages}\"}}",
                store.capacity_pages(),
                store.capacity_pages()
            );
        }
        Ok(store) => run_on(store, pages, &mut json),
    }
    hyp_println!("{SELFTEST_PREFIX}{json}");
}

fn run_on(store: BackingStore, pages: u64, json: &mut String) {
    let _ = write!(
        json,
        ",\"device\":\"{:#x}\",\"intid\":{},\"capacity_pages\":{},\"queue_depth\":{},\"counter_hz\":{}",
        store.base(),
        store.intid(),
        store.capacity_pages(),
        store.queue_depth(),
        clock::frequency()
    );
    let mut test = SelfTest {
        store,
        buffers: (0..MAX_IN_FLIGHT).map(|_| Box::new(PageBuffer([0; WORDS_PER_PAGE]))).collect(),
        free_buffers: (0..MAX_IN_FLIGHT).rev().collect(),
        completions: Vec::with_capacity(MAX_IN_FLIGHT),
        max_in_flight: 0,
        device_irqs: 0,
        timer_irqs: 0,
        verified: 0,
        mismatched_pages: 0,
        mismatched_words: 0,
    };
    let mut write = PhaseStats { latencies_ns: Vec::with_capacity(pages as usize), ..Default::default() };
    let mut read = PhaseStats { latencies_ns: Vec::with_capacity(pages as usize), ..Default::default() };
    let mut outcome = test.phase(Op::Write, 0..pages, &mut write);
    // Pages whose write failed hold nothing to check.
    let mut unwritten = write.failed_slots.clone();
    unwritten.sort_unstable();
    let complete_list = write.failed as usize == unwritten.len();
    if outcome.is_ok() && complete_list {
        let (stride, offset) = (read_stride(pages), pages / 2);
        let order = (0..pages)
            .map(move |i| ((i as u128 * stride as u128 + offset as u128) % pages.max(1) as u128) as u64)
            .filter(|page| unwritten.binary_search(page).is_err());
        outcome = test.phase(Op::Read, order, &mut read);
    }
    clock::set_el2_timer(None);

    let error = match &outcome {
        Err(Abort::Stalled { in_flight }) => Some(alloc::format!(
            "the device completed nothing for {STALL_SECONDS} s with {in_flight} requests in flight"
        )),
        Ok(()) if !complete_list => Some(alloc::format!("more than {MAX_LISTED_FAILURES} writes failed; no read-back")),
        Ok(()) => None,
    };
    let ok = error.is_none()
        && write.failed == 0
        && read.failed == 0
        && test.mismatched_words == 0
        && test.verified == pages;
    let _ = write!(
        json,
        ",\"ok\":{ok},\"verified\":{},\"mismatched_pages\":{},\"mismatched_words\":{},\"max_in_flight\":{},\
         \"device_irqs\":{},\"timer_irqs\":{}",
        test.verified,
        test.mismatched_pages,
        test.mismatched_words,
        test.max_in_flight,
        test.device_irqs,
        test.timer_irqs
    );
    let mut all: Vec<u32> = write.latencies_ns.iter().chain(read.latencies_ns.iter()).copied().collect();
    let overall = summarize(&mut all);
    let elapsed = write.elapsed.saturating_add(read.elapsed);
    let _ = write!(
        json,
        ",\"lat_min_us\":{},\"lat_mean_us\":{},\"lat_p99_us\":{},\"lat_max_us\":{},\"pages_per_s\":{}",
        overall.min,
        overall.mean,
        overall.p99,
        overall.max,
        pages_per_second(write.pages + read.pages, elapsed)
    );
    for (name, stats) in [("write", &mut write), ("read", &mut read)] {
        let s = summarize(&mut stats.latencies_ns);
        let _ = write!(
            json,
            ",\"{name}\":{{\"pages\":{},\"failed\":{},\"elapsed_us\":{},\"pages_per_s\":{},\"lat_min_us\":{},\
             \"lat_mean_us\":{},\"lat_p99_us\":{},\"lat_max_us\":{}}}",
            stats.pages,
            stats.failed,
            stats.elapsed.as_micros(),
            pages_per_second(stats.pages, stats.elapsed),
            s.min,
            s.mean,
            s.p99,
            s.max
        );
    }
    let _ = write!(json, ",\"failed_writes\":{:?},\"failed_reads\":{:?}", write.failed_slots, read.failed_slots);
    match &error {
        Some(error) => {
            json.push_str(",\"error\":");
            push_json_string(json, error);
            json.push('}');
        }
        None => json.push_str(",\"error\":null}"),
    }
    if matches!(outcome, Err(Abort::Stalled { .. })) {
        // Requests may still be at the device: it may yet write into the buffers, so neither
        // they nor the queue memory may go back to the heap.
        core::mem::forget(test);
    } else {
        // Disable the SPI, reset the device, free the queue and the buffers.
        drop(test);
    }
}

/// Append `text` as a JSON string.
fn push_json_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                json.push('\\');
                json.push(c);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c => json.push(c),
        }
    }
    json.push('"');
}
