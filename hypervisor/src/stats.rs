//! Counters of what the hypervisor did for its guest, reported as the `hyp` result object.

use core::sync::atomic::{AtomicU64, Ordering};

/// One counter, updated from any CPU.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter the hypervisor keeps (all vCPUs together).
pub struct Stats {
    /// Exits from the guest to the hypervisor, of any kind.
    pub exits: Counter,
    /// Exits caused by a physical interrupt.
    pub irq_exits: Counter,
    /// `hvc` and `smc` calls from the guest.
    pub hvc_calls: Counter,
    /// Calls with a function ID the hypervisor does not implement (answered NOT_SUPPORTED).
    pub unknown_calls: Counter,
    /// Calls answered INVALID_PARAMETER(S) or another argument error.
    pub invalid_arguments: Counter,
    /// PSCI calls (a subset of `hvc_calls`).
    pub psci_calls: Counter,
    /// SDEI calls (a subset of `hvc_calls`).
    pub sdei_calls: Counter,
    /// Stage-2 faults resolved asynchronously (page_not_present delivered).
    pub async_faults: Counter,
    /// Synchronous external aborts injected (stage-2 aborts outside RAM and devices).
    pub injected_aborts: Counter,
    /// UNDEFINED exceptions injected (trapped instructions and registers not emulated).
    pub injected_undefs: Counter,
    /// Emulated device register accesses (GIC distributor/redistributors, UART).
    pub mmio_accesses: Counter,
    /// Trapped system register accesses (emulated or not).
    pub sysreg_traps: Counter,
    /// SGIs the guest sent (per target vCPU).
    pub sgis: Counter,
    /// Guest timer interrupts forwarded.
    pub timer_irqs: Counter,
    /// Guest PMU overflow interrupts forwarded.
    pub pmu_irqs: Counter,
    /// Virtual interrupts written to list registers.
    pub lr_injections: Counter,
    /// Stage-2 aborts on paged guest RAM handed to the pager.
    pub page_faults: Counter,
    /// Those of them taken on the guest's stage-1 table walk (ISS.S1PTW).
    pub table_walk_faults: Counter,
    /// Table-walk faults that needed a writable page (the walk updates a descriptor).
    pub table_walk_write_faults: Counter,
    /// Reads of the console UART's flag register that found its transmit FIFO full (QEMU had
    /// not written earlier output to its host backend yet): under `-icount` each one is virtual
    /// time that depends on the host.
    pub console_busy_polls: Counter,
    /// WFI trapped because page_ready completions waited for ring space (HCR_EL2.TWI is set
    /// only then): each one let the backlog go out before the vCPU could sleep.
    pub backlog_wfi_exits: Counter,
    /// The hypervisor's own time (model time, nanoseconds: under `-icount` its instructions)
    /// from an exit to the next entry of the same vCPU, for the exits of the asynchronous
    /// protocol: stage-2 faults delivered as page_not_present, the handler's
    /// SDEI_EVENT_COMPLETE(_AND_RESUME) of it, and physical interrupts (disk completions,
    /// page_ready posting, the latency timer, the guest's timers).
    pub el2_ns_async_fault: Counter,
    pub el2_ns_handler_answer: Counter,
    pub el2_ns_interrupt: Counter,
}

pub static STATS: Stats = Stats {
    exits: Counter::new(),
    irq_exits: Counter::new(),
    hvc_calls: Counter::new(),
    unknown_calls: Counter::new(),
    invalid_arguments: Counter::new(),
    psci_calls: Counter::new(),
    sdei_calls: Counter::new(),
    async_faults: Counter::new(),
    injected_aborts: Counter::new(),
    injected_undefs: Counter::new(),
    mmio_accesses: Counter::new(),
    sysreg_traps: Counter::new(),
    sgis: Counter::new(),
    timer_irqs: Counter::new(),
    pmu_irqs: Counter::new(),
    lr_injections: Counter::new(),
    page_faults: Counter::new(),
    table_walk_faults: Counter::new(),
    table_walk_write_faults: Counter::new(),
    console_busy_polls: Counter::new(),
    backlog_wfi_exits: Counter::new(),
    el2_ns_async_fault: Counter::new(),
    el2_ns_handler_answer: Counter::new(),
    el2_ns_interrupt: Counter::new(),
};

impl Stats {
    /// The counters as `"name":value` JSON members, comma-separated.
    pub fn write_json_members(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let members: [(&str, &Counter); 24] = [
            ("exits", &self.exits),
            ("irq_exits", &self.irq_exits),
            ("hvc_calls", &self.hvc_calls),
            ("unknown_calls", &self.unknown_calls),
            ("invalid_arguments", &self.invalid_arguments),
            ("psci_calls", &self.psci_calls),
            ("sdei_calls", &self.sdei_calls),
            ("async_faults", &self.async_faults),
            ("injected_aborts", &self.injected_aborts),
            ("injected_undefs", &self.injected_undefs),
            ("mmio_accesses", &self.mmio_accesses),
            ("sysreg_traps", &self.sysreg_traps),
            ("sgis", &self.sgis),
            ("timer_irqs", &self.timer_irqs),
            ("pmu_irqs", &self.pmu_irqs),
            ("lr_injections", &self.lr_injections),
            ("page_faults", &self.page_faults),
            ("table_walk_faults", &self.table_walk_faults),
            ("table_walk_write_faults", &self.table_walk_write_faults),
            ("console_busy_polls", &self.console_busy_polls),
            ("backlog_wfi_exits", &self.backlog_wfi_exits),
            ("el2_ns_async_fault", &self.el2_ns_async_fault),
            ("el2_ns_handler_answer", &self.el2_ns_handler_answer),
            ("el2_ns_interrupt", &self.el2_ns_interrupt),
        ];
        for (i, (name, counter)) in members.iter().enumerate() {
            if i > 0 {
                out.write_str(",")?;
            }
            write!(out, "\"{name}\":{}", counter.get())?;
        }
        Ok(())
    }
}
