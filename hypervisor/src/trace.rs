//! The per-fault trace (docs/abi.md §9, docs/architecture.md "Tracing"): with the `trace`
//! feature and the option `trace_mib=T`, every CPU records what it does into its own bounded
//! log (`asyncpf_core::trace::Log`) in the top T MiB of host RAM, the guest hands its task
//! records over with TRACE_PUT, and when the machine ends the logs go to the backing disk
//! after guest RAM's slots, where the runner reads them once QEMU has exited. The guest
//! cannot reach that memory (never mapped at stage 2) nor the disk.
//!
//! Call sites use [`trace_event!`], which expands to nothing without the feature: the fault
//! path of an untraced build has not one instruction more. With the feature but without
//! `trace_mib` each site costs one load and a branch.
//!
//! Every record is stamped with model time ([`now`]): the counter less what the pager hides,
//! which is exactly what the guest's CNTVCT_EL0 shows (CNTVOFF_EL2 = the hidden ticks), so
//! the guest's own stamps need no conversion; under `-icount` they repeat from run to run.

/// Record one event on this CPU's log: `trace_event!(Kind, field = value, ...)`, fields of
/// `asyncpf_core::trace::Event` (`time` defaults to [`now`]). Nothing without the feature.
macro_rules! trace_event {
    ($kind:ident $(, $field:ident = $value:expr)* $(,)?) => {
        #[cfg(feature = "trace")]
        {
            if $crate::trace::enabled() {
                #[allow(unused_mut)]
                let mut event = asyncpf_core::trace::Event::new(
                    $crate::trace::now(),
                    asyncpf_core::trace::Kind::$kind,
                    $crate::arch::cpu_index() as u8,
                );
                $(event.$field = $value;)*
                $crate::trace::record(&event);
            }
        }
    };
}
pub(crate) use trace_event;

#[cfg(feature = "trace")]
pub use imp::*;

/// The vCPU left the guest at `at` (the exit clock's instant); `interrupt`: not a synchronous
/// exception (`a` = ESR_EL2's exception class then).
#[inline(always)]
pub fn exit(_at: Option<u64>, _interrupt: bool) {
    #[cfg(feature = "trace")]
    {
        use aarch64_cpu::registers::{Readable, ESR_EL2};
        let class = asyncpf_core::trap::exception_class(ESR_EL2.get()) as u64;
        trace_event!(Exit, time = _at.unwrap_or(0), aux = u16::from(_interrupt), a = class);
    }
}

/// A backing-store request was accepted at `now`: disk slot `slot`, `tag`, in request slot
/// `index`, `op` 0 read / 1 write.
#[inline(always)]
pub fn disk_submit(_now: u64, _slot: u64, _tag: u64, _index: usize, _op: u32) {
    trace_event!(DiskSubmit, time = _now, a = _slot, b = _tag, aux = _index as u16, x = _op);
}

/// A backing-store request was reported complete at `now` (as [`disk_submit`]).
#[inline(always)]
pub fn disk_done(_now: u64, _slot: u64, _tag: u64, _index: usize, _op: u32, _failed: bool) {
    trace_event!(DiskDone, time = _now, a = _slot, b = _tag, aux = _index as u16, x = _op | u32::from(_failed) << 8);
}

/// Without the feature: nothing to set up or write out, and TRACE_PUT is unknown.
#[cfg(not(feature = "trace"))]
mod off {
    use crate::platform::Platform;
    use asyncpf_core::options::HypOptions;

    /// `trace_mib` needs the feature: say so instead of ignoring it.
    pub fn init(_platform: &Platform, options: &HypOptions, _frames_end: u64) -> Result<(), &'static str> {
        if options.trace_mib != 0 {
            return Err("trace_mib: this hypervisor was built without its `trace` feature");
        }
        Ok(())
    }

    #[inline(always)]
    pub fn finish(_json: &mut alloc::string::String) {}
}
#[cfg(not(feature = "trace"))]
pub use off::*;

#[cfg(feature = "trace")]
mod imp {
    use alloc::string::String;
    use core::fmt::Write;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use asyncpf_contract::smccc;
    use asyncpf_core::options::HypOptions;
    use asyncpf_core::trace::FaultEnd;
    use asyncpf_core::trace::{self as core_trace, Event, Header, Log, Section, EVENT_BYTES, HEADER_BYTES};
    use asyncpf_core::trap::{AbortKind, FaultStatus, Stage2Abort};

    use crate::pager::{FaultReply, Resolution};

    use crate::arch;
    use crate::arch::entry::GuestRegs;
    use crate::backing::clock;
    use crate::mm::PAGE_SIZE;
    use crate::pager;
    use crate::platform::Platform;
    /// The logs' locks are leaves, outside the lock hierarchy (`crate::sync`): a record is
    /// made under any other lock, and nothing is taken while a log's lock is held.
    type Mutex<T> = spin::mutex::Mutex<T, crate::sync::YieldHint>;
    use crate::vm::Vm;

    const MAX_CPUS: usize = core_trace::MAX_CPUS;

    /// One log and where its records live.
    struct Buffer {
        log: Log,
        /// Host address of record 0 (identity-mapped, the trace region's, this log's alone).
        base: u64,
    }

    impl Buffer {
        const EMPTY: Buffer = Buffer { log: Log::new(0), base: 0 };

        fn put(&mut self, index: usize, bytes: &[u8; EVENT_BYTES]) {
            let at = self.base + (index * EVENT_BYTES) as u64;
            // SAFETY: `index` < the log's capacity (it claimed it), so `at..at + 32` lies in this
            // buffer's part of the trace region, which `init` reserved at the top of RAM for the
            // trace alone (above every frame the VM uses, never mapped for the guest or given
            // to the device before `finish`); the lock around the buffer serialises writers.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, EVENT_BYTES) };
        }
    }

    static ENABLED: AtomicBool = AtomicBool::new(false);
    /// Set by `finish`: records after it are counted here, not written.
    static CLOSED: AtomicBool = AtomicBool::new(false);
    static AFTER_CLOSE: AtomicU64 = AtomicU64::new(0);
    static CPU_LOGS: [Mutex<Buffer>; MAX_CPUS] = [const { Mutex::new(Buffer::EMPTY) }; MAX_CPUS];
    static GUEST_LOG: Mutex<Buffer> = Mutex::new(Buffer::EMPTY);
    static GUEST_REJECTED: AtomicU64 = AtomicU64::new(0);
    static GUEST_BAD_CALLS: AtomicU64 = AtomicU64::new(0);
    /// The region: `[start, start + bytes)`, and the CPU count, for `finish`.
    static REGION: Mutex<(u64, u64, usize)> = Mutex::new((0, 0, 0));
    static STARTED: AtomicU64 = AtomicU64::new(0);

    /// [`Kind::Fault`](asyncpf_core::trace::Kind::Fault)'s flags.
    pub fn fault_flags(pstate: u64, abort: &Stage2Abort, kind: AbortKind) -> u16 {
        let access_flag = matches!(abort.status, FaultStatus::AccessFlag { .. });
        core_trace::fault_flags(pstate, abort.write, kind == AbortKind::Instruction, access_flag)
    }

    /// How a stage-2 abort that was not delivered ended.
    pub fn fault_end(reply: FaultReply, prepared: bool, resolution: Resolution) -> FaultEnd {
        match (reply, prepared, resolution) {
            (_, _, Resolution::Abort) => FaultEnd::Aborted,
            (FaultReply::Retry, _, _) => FaultEnd::Resolved,
            (FaultReply::Blocked, true, _) => FaultEnd::Retried,
            (FaultReply::Blocked, false, _) => FaultEnd::Waited,
            (FaultReply::Abort, _, _) => FaultEnd::Aborted,
        }
    }

    /// Whether this run is traced (`trace_mib` given).
    #[inline(always)]
    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// Model time (see the module documentation); the counter before the pager exists.
    pub fn now() -> u64 {
        pager::get().map_or_else(|| clock::now().0, |pager| pager.now())
    }

    /// Append `event` to this CPU's log (or count it as dropped).
    pub fn record(event: &Event) {
        if CLOSED.load(Ordering::Acquire) {
            AFTER_CLOSE.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(log) = CPU_LOGS.get(arch::cpu_index()) else {
            return;
        };
        let mut buffer = log.lock();
        if let Some(index) = buffer.log.claim() {
            buffer.put(index, &event.encode());
        }
    }

    /// With `trace_mib=T`: the top T MiB of RAM hold the logs (an eighth for the guest's, the
    /// rest shared by the CPUs), if that is above `frames_end`, the end of what the VM uses.
    pub fn init(platform: &Platform, options: &HypOptions, frames_end: u64) -> Result<(), &'static str> {
        if options.trace_mib == 0 {
            return Ok(());
        }
        let bytes = options.trace_mib << 20;
        let end = platform.ram_base + platform.ram_size;
        let start = end.checked_sub(bytes).ok_or("trace_mib: more than the machine's RAM")?;
        if start < frames_end {
            return Err("trace_mib: the trace region would overlap guest frames (raise QEMU -m)");
        }
        let cpus = platform.cpu_mpidrs.len().min(MAX_CPUS);
        let records = (bytes - HEADER_BYTES as u64) / EVENT_BYTES as u64;
        let guest = records / 8;
        // Whole pages per section (the layout rounds each up).
        let per_page = (PAGE_SIZE as usize / EVENT_BYTES) as u64;
        let per_cpu = ((records - guest) / cpus as u64 / per_page).saturating_sub(1) * per_page;
        let guest = (guest / per_page).saturating_sub(1) * per_page;
        let (offsets, guest_at, total) = core_trace::layout(&[per_cpu; MAX_CPUS][..cpus], guest);
        if total > bytes {
            return Err("trace_mib: the layout does not fit");
        }
        for (cpu, log) in CPU_LOGS.iter().enumerate().take(cpus) {
            *log.lock() = Buffer { log: Log::new(per_cpu as usize), base: start + offsets[cpu] };
        }
        *GUEST_LOG.lock() = Buffer { log: Log::new(guest as usize), base: start + guest_at };
        *REGION.lock() = (start, bytes, cpus);
        STARTED.store(now(), Ordering::Relaxed);
        ENABLED.store(true, Ordering::Release);
        Ok(())
    }

    /// TRACE_PUT(ipa, bytes) from `vcpu` (docs/abi.md §9): copy the guest's records, keeping
    /// only guest kinds, each put on `vcpu`. Returns the SMCCC result (x0).
    pub fn guest_put(vm: &Vm, vcpu: usize, regs: &mut GuestRegs, on_interrupt: impl FnMut(u32)) -> i64 {
        if !enabled() {
            return smccc::NOT_SUPPORTED;
        }
        let (ipa, bytes) = (regs.x[1], regs.x[2]);
        if bytes == 0 {
            return 0;
        }
        let ram = vm.ram_base.0..vm.ram_base.0 + vm.ram_bytes;
        let Some((page, offset)) = core_trace::validate_put(ipa, bytes, ram) else {
            GUEST_BAD_CALLS.fetch_add(1, Ordering::Relaxed);
            return smccc::INVALID_PARAMETER;
        };
        let page = page as usize;
        let frame = match pager::get() {
            Some(pager) => match pager.pin(vcpu, page, on_interrupt) {
                Some(frame) => frame.0,
                None => {
                    GUEST_BAD_CALLS.fetch_add(1, Ordering::Relaxed);
                    return smccc::INVALID_PARAMETER;
                }
            },
            None => vm.ram_host.0 + page as u64 * PAGE_SIZE,
        };
        let mut kept = 0;
        let mut guest = GUEST_LOG.lock();
        for n in 0..bytes / EVENT_BYTES as u64 {
            let mut record = [0u8; EVENT_BYTES];
            let at = frame + offset + n * EVENT_BYTES as u64;
            // SAFETY: `at..at + 32` lies in the host frame of guest page `page` (`validate_put`: the
            // range is inside one page of guest RAM), kept resident by the pin (or mapped for
            // the VM's life without a pager); the guest may write it meanwhile, which can only
            // change the bytes read, and every byte pattern is a valid `[u8; 32]`.
            unsafe { core::ptr::copy_nonoverlapping(at as *const u8, record.as_mut_ptr(), EVENT_BYTES) };
            let Some(event) = core_trace::admit_guest(&record, vcpu as u8) else {
                GUEST_REJECTED.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if let Some(index) = guest.log.claim() {
                guest.put(index, &event.encode());
                kept += 1;
            }
        }
        drop(guest);
        if let Some(pager) = pager::get() {
            pager.unpin(page);
        }
        kept
    }

    /// The machine ends: close every log, write the trace area to the backing disk after guest
    /// RAM's slots (the header, then each log's records, compacted), and add the `trace`
    /// object to the hypervisor's result.
    pub fn finish(json: &mut String) {
        if !enabled() {
            return;
        }
        CLOSED.store(true, Ordering::Release);
        let (start, _, cpus) = *REGION.lock();
        let mut header = Header {
            counter_hz: clock::frequency(),
            started: STARTED.load(Ordering::Relaxed),
            cpus: cpus as u32,
            ..Header::default()
        };
        // Sections on disk, compacted: (host address, records).
        let mut sources = [(0u64, 0u64); MAX_CPUS + 1];
        let mut offset = HEADER_BYTES as u64;
        let mut close = |buffer: &mut Buffer, section: &mut Section, source: &mut (u64, u64)| {
            buffer.log.close();
            *section = Section {
                events: buffer.log.len() as u64,
                dropped: buffer.log.dropped(),
                capacity: buffer.log.capacity() as u64,
                offset,
            };
            *source = (buffer.base, section.events);
            offset += core_trace::section_bytes(section.events);
        };
        for cpu in 0..cpus {
            close(&mut CPU_LOGS[cpu].lock(), &mut header.cpu[cpu], &mut sources[cpu]);
        }
        close(&mut GUEST_LOG.lock(), &mut header.guest, &mut sources[cpus]);
        header.guest_rejected = GUEST_REJECTED.load(Ordering::Relaxed);
        header.guest_bad_calls = GUEST_BAD_CALLS.load(Ordering::Relaxed);
        // The header goes to the region's first page (the logs start after it).
        let encoded = header.encode();
        // SAFETY: the region's first HEADER_BYTES are the trace's own (no log starts there).
        unsafe { core::ptr::copy_nonoverlapping(encoded.as_ptr(), start as *mut u8, HEADER_BYTES) };
        let written = write_area(start, &sources[..=cpus]);
        let _ = write!(json, ",\"trace\":{{\"written\":{},\"area_bytes\":{offset},\"events\":[", written.is_ok());
        for cpu in 0..cpus {
            let _ = write!(json, "{}{}", if cpu == 0 { "" } else { "," }, header.cpu[cpu].events);
        }
        json.push_str("],\"dropped\":[");
        for cpu in 0..cpus {
            let _ = write!(json, "{}{}", if cpu == 0 { "" } else { "," }, header.cpu[cpu].dropped);
        }
        let _ = write!(
            json,
            "],\"guest_events\":{},\"guest_dropped\":{},\"guest_rejected\":{},\"guest_bad_calls\":{},\
             \"after_close\":{},\"error\":\"{}\"}}",
            header.guest.events,
            header.guest.dropped,
            header.guest_rejected,
            header.guest_bad_calls,
            AFTER_CLOSE.load(Ordering::Relaxed),
            written.err().unwrap_or("")
        );
    }

    /// Write the header page and each section's pages to the disk, from the slot after guest
    /// RAM on, and wait until the device has them.
    fn write_area(start: u64, sources: &[(u64, u64)]) -> Result<(), &'static str> {
        let pager = pager::get().ok_or("no backing disk (guest RAM not paged)")?;
        let first_slot = pager.guest_pages();
        let pages = core::iter::once(start).chain(sources.iter().flat_map(|&(base, events)| {
            (0..core_trace::section_bytes(events) / PAGE_SIZE).map(move |p| base + p * PAGE_SIZE)
        }));
        pager.with_disk(|disk| {
            let total = 1 + sources.iter().map(|&(_, e)| core_trace::section_bytes(e) / PAGE_SIZE).sum::<u64>();
            if first_slot + total > disk.capacity_pages() {
                return Err("the backing disk has no room for the trace after guest RAM");
            }
            let mut done = 0u64;
            let mut completions = alloc::vec::Vec::new();
            let mut poll = |disk: &mut crate::backing::BackingStore, done: &mut u64| {
                disk.take_finished();
                disk.ring();
                completions.clear();
                disk.report_due(clock::now(), &mut completions);
                *done += completions.iter().filter(|c| c.tag & TRACE_TAG != 0 && c.result.is_ok()).count() as u64;
                if completions.iter().any(|c| c.tag & TRACE_TAG != 0 && c.result.is_err()) {
                    return Err("a write of the trace failed");
                }
                arch::spin_hint();
                Ok(())
            };
            for (n, page) in pages.enumerate() {
                loop {
                    // SAFETY: the page is the trace region's (identity-mapped host RAM that nothing
                    // writes any more: every log is closed), read by the device until the write's
                    // completion, which this loop waits for before returning.
                    let submitted = unsafe {
                        disk.submit_write(
                            first_slot + n as u64,
                            crate::mm::PhysAddr(page),
                            TRACE_TAG | n as u64,
                            clock::now(),
                        )
                    };
                    if submitted.is_ok() {
                        break;
                    }
                    poll(disk, &mut done)?;
                }
            }
            while done < total {
                poll(disk, &mut done)?;
            }
            Ok(())
        })
    }

    /// Tags of the trace's own disk writes (the pager's are request ids below 2^16).
    const TRACE_TAG: u64 = 1 << 63;
}
