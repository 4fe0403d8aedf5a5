//! `apfabi`: the contract of docs/abi.md §8 checked from inside the guest, call by call: the
//! SDEI dispatcher (version, event info, register/enable/status, a software-signalled event
//! delivered to a real handler that reads its context and completes, masking, unregister, and
//! the calls only a handler may make) and, when guest RAM is paged, the asynchronous page
//! fault calls (features, every bad APF_ENABLE, a good one, and APF_DISABLE's wake-all arriving
//! through the page_ready interrupt and the ring). One pinned task on the boot CPU.
//!
//! Each check is recorded by name with what was seen; `ok` needs every check to pass. The
//! runner asserts the raw values too.

use crate::console::RawConsole;
use crate::sched::{self, SpawnOptions};
use crate::{apf, arch, report, timer};
use asyncpf_contract::{apf as abi, sdei, smccc};
use asyncpf_guest::json::Json;
use core::sync::atomic::{AtomicU64, Ordering};

/// How long the page_ready interrupt may take after APF_DISABLE.
const WAKE_ALL_TIMEOUT_MS: u64 = 500;
const MAX_CHECKS: usize = 48;
/// A value the handler gets as its argument.
const EP_ARGUMENT: u64 = 0xA5F0_0D1E;

struct Check {
    name: &'static str,
    seen: i64,
    passed: bool,
}

struct Checks {
    list: [Option<Check>; MAX_CHECKS],
    count: usize,
}

impl Checks {
    fn record(&mut self, name: &'static str, seen: i64, passed: bool) {
        if self.count < MAX_CHECKS {
            self.list[self.count] = Some(Check { name, seen, passed });
            self.count += 1;
        }
    }
    fn expect(&mut self, name: &'static str, seen: i64, expected: i64) {
        self.record(name, seen, seen == expected);
    }
    fn failed(&self) -> impl Iterator<Item = &Check> {
        self.list.iter().flatten().filter(|c| !c.passed)
    }
}

fn sdei_call(function: u32, args: [u64; 5]) -> i64 {
    apf::call(function, args)[0] as i64
}

fn checks(c: &mut Checks) -> (bool, u64) {
    // SDEI: the dispatcher.
    let version = apf::call(sdei::VERSION, [0; 5])[0];
    c.expect("sdei_version", version as i64, sdei::version_value(1, 1) as i64);
    let pnp = u64::from(sdei::EVENT_PAGE_NOT_PRESENT);
    c.expect(
        "pnp_info_type",
        sdei_call(sdei::EVENT_GET_INFO, [pnp, sdei::INFO_TYPE, 0, 0, 0]),
        sdei::TYPE_PRIVATE as i64,
    );
    c.expect("pnp_info_signaled", sdei_call(sdei::EVENT_GET_INFO, [pnp, sdei::INFO_SIGNALED, 0, 0, 0]), 0);
    c.expect("event0_info_signaled", sdei_call(sdei::EVENT_GET_INFO, [0, sdei::INFO_SIGNALED, 0, 0, 0]), 1);
    c.expect("unknown_event", sdei_call(sdei::EVENT_STATUS, [0x7777, 0, 0, 0, 0]), sdei::INVALID_PARAMETERS);
    c.expect("complete_outside_handler", sdei_call(sdei::EVENT_COMPLETE, [0; 5]), sdei::DENIED);
    c.expect("context_outside_handler", sdei_call(sdei::EVENT_CONTEXT, [0; 5]), sdei::DENIED);
    let entry = apf::sdei_entry_address();
    c.expect("register_event0", sdei_call(sdei::EVENT_REGISTER, [0, entry, EP_ARGUMENT, 0, 0]), 0);
    c.expect("register_twice", sdei_call(sdei::EVENT_REGISTER, [0, entry, EP_ARGUMENT, 0, 0]), sdei::DENIED);
    c.expect("status_registered", sdei_call(sdei::EVENT_STATUS, [0; 5]), sdei::STATUS_REGISTERED as i64);
    c.expect("enable_event0", sdei_call(sdei::EVENT_ENABLE, [0; 5]), 0);
    c.expect(
        "status_enabled",
        sdei_call(sdei::EVENT_STATUS, [0; 5]),
        (sdei::STATUS_REGISTERED | sdei::STATUS_ENABLED) as i64,
    );
    let me = arch::mpidr_affinity();
    // Masked (as every vCPU starts): the signal waits.
    c.expect("signal_while_masked", sdei_call(sdei::EVENT_SIGNAL, [0, me, 0, 0, 0]), 0);
    c.expect("handled_while_masked", apf::SDEI_HANDLED.load(Ordering::Relaxed) as i64, 0);
    // Unmasking delivers it as the call returns: the handler has run by the next instruction.
    c.expect("unmask", sdei_call(sdei::PE_UNMASK, [0; 5]), 0);
    c.expect("handled_after_unmask", apf::SDEI_HANDLED.load(Ordering::Relaxed) as i64, 1);
    c.expect("handler_event", apf::SDEI_LAST_EVENT.load(Ordering::Relaxed) as i64, 0);
    c.expect("handler_argument", apf::SDEI_LAST_ARG.load(Ordering::Relaxed) as i64, EP_ARGUMENT as i64);
    // The interrupted x0 was PE_UNMASK's result: SUCCESS.
    c.expect("handler_context_x0", apf::SDEI_CONTEXT_X0.load(Ordering::Relaxed) as i64, 0);
    c.expect("signal_unmasked", sdei_call(sdei::EVENT_SIGNAL, [0, me, 0, 0, 0]), 0);
    c.expect("handled_after_signal", apf::SDEI_HANDLED.load(Ordering::Relaxed) as i64, 2);
    c.expect("mask", sdei_call(sdei::PE_MASK, [0; 5]), 1);
    c.expect("mask_again", sdei_call(sdei::PE_MASK, [0; 5]), 0);
    c.expect("unregister", sdei_call(sdei::EVENT_UNREGISTER, [0; 5]), 0);
    c.expect("status_unregistered", sdei_call(sdei::EVENT_STATUS, [0; 5]), 0);
    c.expect("features_bind_slots", sdei_call(sdei::FEATURES, [0; 5]), 0);

    // APF: only with paged RAM.
    let features = match apf::features() {
        Ok(features) => features,
        Err(code) => {
            c.expect("apf_features_unpaged", code, smccc::NOT_SUPPORTED);
            c.expect("apf_enable_unpaged", apf::enable(apf::record_address(0), 0), smccc::NOT_SUPPORTED);
            return (false, 0);
        }
    };
    let own_granule = asyncpf_guest_cwg();
    c.record(
        "apf_granule",
        features.granule as i64,
        features.granule >= own_granule && features.granule.is_power_of_two(),
    );
    c.expect("apf_page_ready_intid", i64::from(features.page_ready_intid), i64::from(abi::PAGE_READY_INTID));
    c.expect("apf_event", i64::from(features.event), i64::from(sdei::EVENT_PAGE_NOT_PRESENT));
    let g = features.granule;
    let record = apf::record_address(arch::cpu_index());
    c.expect("apf_enable_misaligned", apf::enable(record + 8, 0), smccc::INVALID_PARAMETER);
    c.expect("apf_enable_outside_ram", apf::enable(0x1000, 0), smccc::INVALID_PARAMETER);
    c.expect("apf_enable_unknown_flags", apf::enable(record, 1 << 7), smccc::INVALID_PARAMETER);
    c.expect("apf_enable_wrapping", apf::enable(!(g - 1), 0), smccc::INVALID_PARAMETER);
    apf::set_granule(g);
    // Every fault delivered whatever the store's latency (the park-or-wait rule would keep the
    // EL0 task's few faults synchronous at a fast store): this scenario tests the protocol.
    c.expect("apf_enable", apf::enable(record, asyncpf_contract::apf::FLAG_ALWAYS_DELIVER), 0);
    c.expect("apf_ring_empty", (apf::read_record(g) as i64) - (apf::read_record(2 * g) as i64), 0);
    // Faults delivered asynchronously from EL0: register page_not_present, push the EL0 pages
    // out of the hypervisor's frames by writing all free RAM (several times the resident
    // memory), then let an EL0 task touch them. Its faults come from EL0: accepted, resumed at
    // the EL0 IRQ vector, the task parked and woken by page_ready, and it finishes.
    let event = u64::from(features.event);
    c.expect("pnp_register", sdei_call(sdei::EVENT_REGISTER, [event, entry, 0, 0, 0]), 0);
    c.expect("pnp_enable", sdei_call(sdei::EVENT_ENABLE, [event, 0, 0, 0, 0]), 0);
    c.expect("pnp_unmask", sdei_call(sdei::PE_UNMASK, [0; 5]), 0);
    stream_free_ram();
    let user = sched::spawn_user("apfabi-el0", user_toucher, 0, SpawnOptions { pinned: Some(0), cpus_out: None })
        .expect("a free task slot");
    sched::join(user);
    let touched = USER_PAGES.iter().map(|p| p.0[0].load(Ordering::Relaxed)).sum::<u64>();
    c.expect("el0_pages_touched", touched as i64, USER_PAGES.len() as i64);
    let el0 = apf::ACCEPTED_EL0.load(Ordering::Relaxed);
    c.record("apf_el0_faults_accepted", el0 as i64, el0 >= 1);
    c.expect("pnp_mask", sdei_call(sdei::PE_MASK, [0; 5]), 1);
    let before = apf::WAKE_ALLS_SEEN.load(Ordering::Relaxed);
    c.expect("apf_disable", apf::disable(), 0);
    let deadline = timer::now_ns() + WAKE_ALL_TIMEOUT_MS * 1_000_000;
    while apf::WAKE_ALLS_SEEN.load(Ordering::Relaxed) == before && timer::now_ns() < deadline {
        arch::wait_for_interrupt();
    }
    let wake_alls = apf::WAKE_ALLS_SEEN.load(Ordering::Relaxed) - before;
    c.expect("apf_wake_all_received", wake_alls as i64, 1);
    c.expect("apf_ring_consumed", (apf::read_record(g) as i64) - (apf::read_record(2 * g) as i64), 0);
    c.expect("apf_disable_again", apf::disable(), 0);
    (true, g)
}

/// Pages the EL0 task touches (EL0-writable: `.user_rw`), one word each.
#[repr(C, align(4096))]
struct UserPage([AtomicU64; 512]);

#[link_section = ".user_rw"]
static USER_PAGES: [UserPage; 4] = [const { UserPage([const { AtomicU64::new(0) }; 512]) }; 4];

/// EL0: one write to each of `USER_PAGES` (each may fault from EL0), then exit.
extern "C" fn user_toucher(_: u64) -> ! {
    for page in &USER_PAGES {
        page.0[0].fetch_add(1, Ordering::Relaxed);
    }
    crate::syscall::user::exit()
}

/// One write to every page of the free RAM (the workload area of `overcommit`): with guest RAM
/// paged, this cycles every frame of the resident memory several times.
fn stream_free_ram() {
    let Some(free) = crate::mm::free_ram(crate::scenarios::platform()) else { return };
    for address in (free.start..free.end).step_by(4096) {
        // SAFETY: free RAM (no image, stack or device tree: `mm::free_ram`), mapped normal
        // read-write for EL1; nothing else uses it in this scenario.
        unsafe { core::ptr::write_volatile(address as *mut u64, address) };
    }
}

/// This CPU's writeback granule in bytes (CTR_EL0.CWG; 0 = not reported = 2 KiB).
fn asyncpf_guest_cwg() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    match (ctr >> 24) & 0xf {
        0 => 2048,
        cwg => (4 << cwg).max(16),
    }
}

fn fields(j: &mut Json<'_, RawConsole>, c: &Checks, paged: bool, granule: u64, failed: usize) -> core::fmt::Result {
    j.bool(Some("apf_paged"), paged)?;
    j.u64(Some("apf_granule"), granule)?;
    j.u64(Some("checks"), c.count as u64)?;
    j.u64(Some("checks_failed"), failed as u64)?;
    j.u64(Some("sdei_handled"), apf::SDEI_HANDLED.load(Ordering::Relaxed))?;
    j.u64(Some("page_ready_tokens"), apf::TOKENS_SEEN.load(Ordering::Relaxed))?;
    j.u64(Some("wake_alls"), apf::WAKE_ALLS_SEEN.load(Ordering::Relaxed))?;
    j.u64(Some("ring_errors"), apf::RING_ERRORS.load(Ordering::Relaxed))?;
    j.begin_object(Some("seen"))?;
    for check in c.list.iter().flatten() {
        j.i64(Some(check.name), check.seen)?;
    }
    j.end_object()
}

fn control(_: u64) {
    let mut c = Checks { list: [const { None }; MAX_CHECKS], count: 0 };
    let (paged, granule) = checks(&mut c);
    let failed = c.failed().count();
    match c.failed().next().map(|f| (f.name, f.seen)) {
        Some((name, seen)) => {
            report::finish(false, Some(format_args!("{failed} checks failed, the first {name} (saw {seen:#x})")), |j| {
                fields(j, &c, paged, granule, failed)
            })
        }
        None => report::finish(true, None, |j| fields(j, &c, paged, granule, failed)),
    }
}

/// Runs the scenario (its checks pinned to the boot CPU) and reports.
pub fn run(_seed: u64) -> ! {
    let handle = sched::spawn_kernel("apfabi", control, 0, SpawnOptions { pinned: Some(0), cpus_out: None })
        .expect("a free task slot");
    sched::join(handle);
    unreachable!("the control task reports and powers off");
}
