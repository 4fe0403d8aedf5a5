//! The guest's side of the per-fault trace (docs/abi.md §9), built with the `trace` feature
//! only: every vCPU logs its task switches, APF parks and page_ready wakes into a page of its
//! own (128 records, stamped with CNTVCT_EL0) and hands a full page to the hypervisor with
//! TRACE_PUT; [`flush_all`] hands over the rest before the machine ends. Without the feature
//! the hooks below are empty and the kernel is what it was.
//!
//! Whether the run is traced is asked once (TRACE_PUT with 0 bytes); an untraced run (a
//! hypervisor without tracing answers NOT_SUPPORTED) logs nothing.

#[cfg(feature = "trace")]
mod imp {
    use core::sync::atomic::{AtomicU8, Ordering};

    use asyncpf_contract::apf::TRACE_PUT;
    use asyncpf_contract::trace as abi;

    use crate::arch;
    use crate::dt::MAX_CPUS;
    use crate::sync::SpinLock;

    const PER_PAGE: usize = 4096 / abi::RECORD_BYTES;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    struct Buffer {
        page: Page,
        len: usize,
    }

    static BUFFERS: [SpinLock<Buffer>; MAX_CPUS] =
        [const { SpinLock::new(Buffer { page: Page([0; 4096]), len: 0 }) }; MAX_CPUS];
    /// 0: not asked yet, 1: traced, 2: not traced.
    static STATE: AtomicU8 = AtomicU8::new(0);

    fn enabled() -> bool {
        match STATE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let traced = crate::apf::call(TRACE_PUT, [0; 5])[0] == 0;
                STATE.store(if traced { 1 } else { 2 }, Ordering::Relaxed);
                traced
            }
        }
    }

    /// Hand `buffer`'s records to the hypervisor (the guest is identity-mapped: the page's
    /// address is its IPA).
    fn flush(buffer: &mut Buffer) {
        if buffer.len != 0 {
            let ipa = buffer.page.0.as_ptr() as u64;
            crate::apf::call(TRACE_PUT, [ipa, (buffer.len * abi::RECORD_BYTES) as u64, 0, 0, 0]);
            buffer.len = 0;
        }
    }

    pub fn record(kind: u8, aux: u16, x: u32, a: u64, b: u64) {
        if !enabled() {
            return;
        }
        let cpu = arch::cpu_index();
        let mut buffer = BUFFERS[cpu].lock();
        let at = buffer.len * abi::RECORD_BYTES;
        let record = &mut buffer.page.0[at..at + abi::RECORD_BYTES];
        record[0..8].copy_from_slice(&arch::virtual_count().to_le_bytes());
        record[8] = kind;
        record[9] = cpu as u8;
        record[10..12].copy_from_slice(&aux.to_le_bytes());
        record[12..16].copy_from_slice(&x.to_le_bytes());
        record[16..24].copy_from_slice(&a.to_le_bytes());
        record[24..32].copy_from_slice(&b.to_le_bytes());
        buffer.len += 1;
        if buffer.len == PER_PAGE {
            flush(&mut buffer);
        }
    }

    /// Every CPU's records so far (before the machine ends).
    pub fn flush_all() {
        if STATE.load(Ordering::Relaxed) != 1 {
            return;
        }
        for buffer in &BUFFERS {
            flush(&mut buffer.lock());
        }
    }
}

/// The vCPU switches from task `prev` to `next` (`None`: the idle loop); `blocked`: `prev`
/// cannot run on (it parked, sleeps or ended).
#[inline(always)]
pub fn switch(_prev: Option<u16>, _next: Option<u16>, _blocked: bool) {
    #[cfg(feature = "trace")]
    {
        let id = |t: Option<u16>| t.map_or(asyncpf_contract::trace::TASK_IDLE, u32::from);
        let cpu = crate::arch::cpu_index() as u64;
        imp::record(
            asyncpf_contract::trace::KIND_TASK_SWITCH,
            u16::from(_blocked),
            id(_next),
            u64::from(id(_prev)),
            cpu,
        );
    }
}

/// Task `task` parks on APF token `token`.
#[inline(always)]
pub fn park(_task: u16, _token: u64) {
    #[cfg(feature = "trace")]
    imp::record(asyncpf_contract::trace::KIND_TASK_PARK, 0, u32::from(_task), _token, crate::arch::cpu_index() as u64);
}

/// page_ready for APF token `token` woke `woken` tasks.
#[inline(always)]
pub fn wake(_token: u64, _woken: usize) {
    #[cfg(feature = "trace")]
    imp::record(asyncpf_contract::trace::KIND_TASK_WAKE, 0, _woken as u32, _token, 0);
}

/// Before the machine ends: hand over what is still logged.
#[inline(always)]
pub fn flush_all() {
    #[cfg(feature = "trace")]
    imp::flush_all();
}
