//! `ipi`: every CPU sends an SGI to every CPU, itself included (N² ordered pairs), one at a
//! time; each receipt is attributed to its (source, destination) pair.

use crate::dt::MAX_CPUS;
use crate::sched::SpawnOptions;
use crate::{arch, gic, percpu, report, sched};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How long a sender waits for one receipt before giving up on it (host time: without
/// `-icount` a vCPU's thread can wait for a host core that long; 500 ms once lost a receipt on a
/// 2-core host running two builds beside the test, counted as unexpected when it came).
const RECEIPT_TIMEOUT_MS: u64 = 3000;
const NO_SOURCE: usize = usize::MAX;

/// Per destination: the CPU whose SGI it is expecting now.
static EXPECTED_SOURCE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NO_SOURCE) }; MAX_CPUS];
/// Receipts per destination.
static RECEIVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// RECEIPTS[source][destination].
static RECEIPTS: [[AtomicU64; MAX_CPUS]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; MAX_CPUS];
/// Receipts nobody was expecting.
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// The test SGI arrived on this CPU (interrupt handler).
pub fn received() {
    let me = arch::cpu_index();
    match EXPECTED_SOURCE[me].swap(NO_SOURCE, Ordering::AcqRel) {
        NO_SOURCE => {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
        source => {
            RECEIPTS[source][me].fetch_add(1, Ordering::Relaxed);
        }
    }
    RECEIVED[me].fetch_add(1, Ordering::Release);
}

/// Pinned to CPU `source`: one SGI to each CPU in turn, waiting for each receipt.
fn sender(source: u64) {
    let source = source as usize;
    let timeout = arch::counter_frequency() * RECEIPT_TIMEOUT_MS / 1000;
    for destination in 0..percpu::count() {
        let before = RECEIVED[destination].load(Ordering::Acquire);
        EXPECTED_SOURCE[destination].store(source, Ordering::Release);
        gic::send_sgi(destination, gic::SGI_TEST);
        let deadline = arch::virtual_count() + timeout;
        while RECEIVED[destination].load(Ordering::Acquire) == before && arch::virtual_count() < deadline {
            core::hint::spin_loop();
        }
        EXPECTED_SOURCE[destination].store(NO_SOURCE, Ordering::Release);
    }
}

/// Runs the scenario and reports.
pub fn run(_seed: u64) -> ! {
    let n = percpu::count();
    for source in 0..n {
        let handle = sched::spawn_kernel(
            "ipi-sender",
            sender,
            source as u64,
            SpawnOptions { pinned: Some(source), cpus_out: None },
        )
        .expect("free task slot");
        sched::join(handle);
    }
    let expected = (n * n) as u64;
    let received: u64 = (0..n).map(|d| RECEIVED[d].load(Ordering::Acquire)).sum();
    let every_pair_once = (0..n).all(|s| (0..n).all(|d| RECEIPTS[s][d].load(Ordering::Relaxed) == 1));
    let unexpected = UNEXPECTED.load(Ordering::Relaxed);
    let ok = received == expected && every_pair_once && unexpected == 0;
    let error = (!ok).then_some(format_args!("SGI receipts do not match the pairs sent"));
    report::finish(ok, error, |j| {
        j.u64(Some("ipi_expected"), expected)?;
        j.u64(Some("ipi_received"), received)?;
        j.u64(Some("ipi_unexpected"), unexpected)?;
        // receipts[source][destination]
        j.begin_array(Some("receipts"))?;
        for row in RECEIPTS.iter().take(n) {
            j.begin_array(None)?;
            for receipt in row.iter().take(n) {
                j.u64(None, receipt.load(Ordering::Relaxed))?;
            }
            j.end_array()?;
        }
        j.end_array()
    });
}
