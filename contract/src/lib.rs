//! The contract between the asyncpf hypervisor, its guests and the host runner.
//!
//! Everything here is mirrored by `docs/abi.md`; change both together.
//! The crate is `no_std`, has no dependencies and no `unsafe`, so both the EL2 hypervisor,
//! the EL1 guest kernel and the host runner can use it.
#![no_std]
#![forbid(unsafe_code)]

/// SMCCC (Arm DEN0028) function identifier fields and the standard return codes.
pub mod smccc {
    /// Bit 31: fast call.
    pub const FAST_CALL: u32 = 1 << 31;
    /// Bit 30: SMC64/HVC64 calling convention.
    pub const CONV_64: u32 = 1 << 30;
    /// Owning entity numbers (bits 29:24).
    pub const OWNER_ARCH: u32 = 0;
    pub const OWNER_STANDARD: u32 = 4;
    pub const OWNER_VENDOR_HYP: u32 = 6;

    /// SMCCC_VERSION (DEN0028 7.2).
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES (DEN0028 7.3).
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// The SMCCC version the hypervisor implements: 1.1.
    pub const VERSION_1_1: u32 = 0x0001_0001;

    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const NOT_REQUIRED: i64 = -2;
    pub const INVALID_PARAMETER: i64 = -3;

    /// The owning entity of a function identifier.
    pub const fn owner(function_id: u32) -> u32 {
        (function_id >> 24) & 0x3f
    }
    /// The function number within its owner (bits 15:0).
    pub const fn function_number(function_id: u32) -> u32 {
        function_id & 0xffff
    }
    /// Bits 23:16 must be zero for fast calls (they are reserved, "MBZ").
    pub const fn is_well_formed_fast(function_id: u32) -> bool {
        function_id & FAST_CALL != 0 && (function_id >> 16) & 0xff == 0
    }
}

/// PSCI (Arm DEN0022) function identifiers and return codes the hypervisor implements.
pub mod psci {
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_32: u32 = 0x8400_0003;
    pub const CPU_ON_64: u32 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_FEATURES: u32 = 0x8400_000A;

    /// PSCI 1.1 as (major << 16) | minor.
    pub const VERSION_1_1: u32 = 0x0001_0001;

    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INTERNAL_FAILURE: i64 = -6;
    pub const NOT_PRESENT: i64 = -7;
    pub const DISABLED: i64 = -8;
    pub const INVALID_ADDRESS: i64 = -9;

    /// AFFINITY_INFO results.
    pub const AFFINITY_ON: i64 = 0;
    pub const AFFINITY_OFF: i64 = 1;
    pub const AFFINITY_ON_PENDING: i64 = 2;

    /// MIGRATE_INFO_TYPE result: no Trusted OS, migration not required.
    pub const MIGRATE_NOT_REQUIRED: i64 = 2;
}

/// The asyncpf vendor-specific hypervisor service (SMCCC owner 6, fast calls).
pub mod hypcall {
    /// Call UID query (DEN0028: function number 0xFF01 of every service).
    pub const CALL_UID: u32 = 0x8600_FF01;
    /// Revision query (function number 0xFF03).
    pub const REVISION: u32 = 0x8600_FF03;
    /// Call count query (0xFF00, deprecated by SMCCC but still answered).
    pub const CALL_COUNT: u32 = 0x8600_FF00;

    /// The service's UUID, returned in w0..w3 of CALL_UID as SMCCC says
    /// (bytes 0..3 in w0, little-endian, and so on).
    /// UUID: 6a7c0e5b-3f1d-4c2e-9a41-a5f00d1e0b64
    pub const UID: [u32; 4] = [0x5b0e_7c6a, 0x2e4c_1d3f, 0x0da5_419a, 0x640b_1e0d];
    pub const REVISION_MAJOR: u32 = 0;
    pub const REVISION_MINOR: u32 = 1;
    /// Number of functions in the service (for CALL_COUNT).
    pub const FUNCTION_COUNT: u32 = 0;
}

/// SDEI (Arm DEN0054, Software Delegated Exception Interface) 1.1 function identifiers and
/// return codes: the hypervisor is the SDEI dispatcher of its guest (conduit `hvc`), and
/// delivers page_not_present as an SDEI event. See docs/abi.md, section 8.
pub mod sdei {
    pub const VERSION: u32 = 0xC400_0020;
    pub const EVENT_REGISTER: u32 = 0xC400_0021;
    pub const EVENT_ENABLE: u32 = 0xC400_0022;
    pub const EVENT_DISABLE: u32 = 0xC400_0023;
    pub const EVENT_CONTEXT: u32 = 0xC400_0024;
    pub const EVENT_COMPLETE: u32 = 0xC400_0025;
    pub const EVENT_COMPLETE_AND_RESUME: u32 = 0xC400_0026;
    pub const EVENT_UNREGISTER: u32 = 0xC400_0027;
    pub const EVENT_STATUS: u32 = 0xC400_0028;
    pub const EVENT_GET_INFO: u32 = 0xC400_0029;
    pub const EVENT_ROUTING_SET: u32 = 0xC400_002A;
    pub const PE_MASK: u32 = 0xC400_002B;
    pub const PE_UNMASK: u32 = 0xC400_002C;
    pub const INTERRUPT_BIND: u32 = 0xC400_002D;
    pub const INTERRUPT_RELEASE: u32 = 0xC400_002E;
    pub const EVENT_SIGNAL: u32 = 0xC400_002F;
    pub const FEATURES: u32 = 0xC400_0030;
    pub const PRIVATE_RESET: u32 = 0xC400_0031;
    pub const SHARED_RESET: u32 = 0xC400_0032;

    /// Return codes (DEN0054 5.1.1).
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const PENDING: i64 = -5;
    pub const OUT_OF_RESOURCE: i64 = -10;

    /// The version the hypervisor implements: 1.1, vendor-defined part 0.
    pub const VERSION_MAJOR: u64 = 1;
    pub const VERSION_MINOR: u64 = 1;
    /// SDEI_VERSION's result: major in bits 62:48, minor in 47:32, vendor in 31:0.
    pub const fn version_value(major: u64, minor: u64) -> u64 {
        major << 48 | minor << 32
    }

    /// The asyncpf page_not_present event: a private (per-PE), normal-priority event signalled
    /// by the hypervisor. Event numbers other than 0 are the platform's (here: the
    /// hypervisor's) to choose and are communicated out of band (APF_FEATURES x3), but an event
    /// number must be a positive signed 32-bit value (SDEI_INTERRUPT_BIND returns event numbers
    /// and errors in the same register), and the event number proper is bits 23:0; bits 31:24
    /// are not a platform's to use. This number keeps bits 31:24 zero: 0x41_50_46 is "APF" in
    /// ASCII.
    pub const EVENT_PAGE_NOT_PRESENT: u32 = 0x0041_5046;
    /// Event 0: the standard software-signalled event (SDEI_EVENT_SIGNAL).
    pub const EVENT_SOFTWARE_SIGNALLED: u32 = 0;

    /// SDEI_EVENT_GET_INFO `info` values.
    pub const INFO_TYPE: u64 = 0;
    pub const INFO_SIGNALED: u64 = 1;
    pub const INFO_PRIORITY: u64 = 2;
    pub const INFO_ROUTING_MODE: u64 = 3;
    pub const INFO_ROUTING_AFF: u64 = 4;
    /// Event types and priorities.
    pub const TYPE_PRIVATE: u64 = 0;
    pub const TYPE_SHARED: u64 = 1;
    pub const PRIORITY_NORMAL: u64 = 0;
    pub const PRIORITY_CRITICAL: u64 = 1;

    /// SDEI_EVENT_STATUS result bits.
    pub const STATUS_REGISTERED: u64 = 1 << 0;
    pub const STATUS_ENABLED: u64 = 1 << 1;
    pub const STATUS_RUNNING: u64 = 1 << 2;
}

/// Asynchronous page faults: the asyncpf vendor hypervisor service's APF calls, the per-vCPU
/// shared record and the tokens. See docs/abi.md, section 8.
pub mod apf {
    /// APF_FEATURES(): x0 = SUCCESS, x1 = the record's granule in bytes (the largest
    /// CTR_EL0.CWG writeback granule over all physical CPUs), x2 = the page_ready PPI's INTID,
    /// x3 = the page_not_present SDEI event number. NOT_SUPPORTED when the VM's memory is not
    /// paged (there are no page faults to report).
    pub const FEATURES: u32 = 0xC600_0001;
    /// APF_ENABLE(record_ipa, flags): enable APF on the calling vCPU with its record at guest
    /// physical address `record_ipa` (aligned to the granule, inside guest RAM, [`record_bytes`]
    /// long). SUCCESS, INVALID_PARAMETER (misaligned, outside RAM, unknown flags), or
    /// NOT_SUPPORTED.
    pub const ENABLE: u32 = 0xC600_0002;
    /// APF_DISABLE(): stop APF on the calling vCPU. Faults in flight complete; a WAKE_ALL token
    /// is posted first, so no task waits forever. SUCCESS (also when not enabled).
    pub const DISABLE: u32 = 0xC600_0003;

    /// APF_PIN(ipa, bytes): keep the guest pages of `[ipa, ipa + bytes)` resident for the VM's
    /// life: pages the guest touches where it cannot take page_not_present (exception entry,
    /// the scheduler, the SDEI handler's path, IRQ-masked code, stacks), so that their faults
    /// do not wait synchronously. Page-aligned, inside guest RAM, within a quota of a quarter of
    /// the resident memory over all calls (pinning a page twice counts once). SUCCESS,
    /// INVALID_PARAMETER, [`OUT_OF_QUOTA`], or NOT_SUPPORTED (RAM not paged).
    pub const PIN: u32 = 0xC600_0004;
    /// TRACE_PUT(ipa, bytes): hand the hypervisor `bytes / 32` trace records (docs/abi.md §9)
    /// from guest memory at `ipa` (32-byte aligned, at most 4096 bytes, within one page of guest
    /// RAM). x0 = records kept (records of kinds a guest may not write, and those beyond the
    /// trace's room, are counted and dropped); INVALID_PARAMETER for a bad range; NOT_SUPPORTED
    /// when the run is not traced. `bytes` = 0 asks whether the run is traced.
    pub const TRACE_PUT: u32 = 0xC600_0005;
    /// APF_PIN's answer when the pages would exceed the VM's quota (nothing is pinned then).
    pub const OUT_OF_QUOTA: i64 = -10;

    /// APF_ENABLE flag: dispatch page_not_present only when the fault was taken from EL0.
    pub const FLAG_USER_ONLY: u64 = 1 << 0;
    /// APF_ENABLE flag: deliver page_not_present whenever the other conditions allow, even when
    /// the hypervisor's measurements say waiting would be cheaper ("park or wait", docs/abi.md
    /// §8.3): for a guest that knows it has work to overlap, and for tests of the protocol.
    pub const FLAG_ALWAYS_DELIVER: u64 = 1 << 1;
    /// Every flag APF_ENABLE knows.
    pub const FLAGS_ALL: u64 = FLAG_USER_ONLY | FLAG_ALWAYS_DELIVER;

    /// The INTID of the page_ready PPI (a private peripheral interrupt of each vCPU).
    pub const PAGE_READY_INTID: u32 = 22;

    /// A token the guest never sees for a fault: "wake every task that waits for a page".
    pub const TOKEN_WAKE_ALL: u64 = u64::MAX;
    /// Tokens are never 0.
    pub const TOKEN_NONE: u64 = 0;

    /// Entries in the completion ring (a power of two).
    pub const RING_ENTRIES: u64 = 64;
    /// Bytes per ring entry (a token, little-endian u64).
    pub const RING_ENTRY_BYTES: u64 = 8;

    /// The smallest granule the record is laid out with: CTR_EL0.CWG can encode 16 bytes, but
    /// two u64 fields need 16; use at least this.
    pub const MIN_GRANULE: u64 = 16;
    /// The granule when CTR_EL0.CWG is 0 ("not provided"): the architectural maximum, 2 KiB.
    pub const MAX_GRANULE: u64 = 2048;

    /// Layout of the per-vCPU record for writeback granule `granule` (a power of two between
    /// [`MIN_GRANULE`] and [`MAX_GRANULE`]): host-written fields and guest-written fields never
    /// share a granule.
    ///
    /// | offset | bytes | writer | field |
    /// |---|---|---|---|
    /// | 0 | 8 | host | `pnp_token`: the token of the page_not_present being delivered |
    /// | 8 | 8 | host | `pnp_address`: the faulting guest virtual address (FAR) |
    /// | granule | 8 | host | `ring_head`: entries produced (free-running, u64) |
    /// | 2·granule | 8 | guest | `ring_tail`: entries consumed (free-running, u64) |
    /// | 3·granule | RING_ENTRIES · 8 | host | the ring: entry `i % RING_ENTRIES` |
    pub const fn offset_pnp_token(_granule: u64) -> u64 {
        0
    }
    pub const fn offset_pnp_address(_granule: u64) -> u64 {
        8
    }
    pub const fn offset_ring_head(granule: u64) -> u64 {
        granule
    }
    pub const fn offset_ring_tail(granule: u64) -> u64 {
        2 * granule
    }
    pub const fn offset_ring(granule: u64) -> u64 {
        3 * granule
    }
    /// The record's size in bytes.
    pub const fn record_bytes(granule: u64) -> u64 {
        offset_ring(granule) + RING_ENTRIES * RING_ENTRY_BYTES
    }
}

/// The guest's records of the per-fault trace (docs/abi.md §9), handed over with
/// [`apf::TRACE_PUT`]: 32 little-endian bytes each, `time` (u64, CNTVCT_EL0), `kind` (u8),
/// `cpu` (u8, ignored: the hypervisor puts the calling vCPU), `aux` (u16), `x` (u32), `a`
/// (u64), `b` (u64).
pub mod trace {
    /// Bytes of one record.
    pub const RECORD_BYTES: usize = 32;
    /// The vCPU switches to task `x` ([`TASK_IDLE`]: its idle loop); `a`: the task that ran
    /// before, `aux`: whether that one may still run (0) or blocked or ended (1); `b`: the
    /// guest's CPU index.
    pub const KIND_TASK_SWITCH: u8 = 32;
    /// Task `x` parks on APF token `a`; `b`: the guest's CPU index.
    pub const KIND_TASK_PARK: u8 = 33;
    /// page_ready for APF token `a` woke `x` tasks (0: none parked yet; the wake is kept).
    pub const KIND_TASK_WAKE: u8 = 34;
    /// The idle loop, as a task id.
    pub const TASK_IDLE: u32 = u32::MAX;
}

/// The protocol between the hypervisor, the guest kernel and the host runner.
///
/// The runner passes options to the hypervisor on the hypervisor's command line (QEMU
/// `-append`, which QEMU puts into `/chosen/bootargs` of the device tree it hands over).
/// Options are `key=value` words; everything after a lone `--` is the guest's own command line
/// and is placed into the guest's `/chosen/bootargs`.
pub mod runner {
    /// Number of vCPUs (default: every physical CPU).
    pub const OPT_VCPUS: &str = "vcpus";
    /// Guest RAM in MiB.
    pub const OPT_GUEST_MIB: &str = "guest_mib";
    /// Where the runner placed the guest kernel Image in host physical memory: `ADDR:SIZE`
    /// (both hexadecimal with 0x, or decimal).
    pub const OPT_IMAGE: &str = "image";
    /// Where the runner staged an initial RAM disk in host physical memory: `initrd=ADDR:SIZE`.
    /// The hypervisor copies it into guest RAM and names it in `/chosen` (Linux's
    /// `linux,initrd-start` / `linux,initrd-end`).
    /// For a kernel that is not an arm64 `Image` (an ELF or a raw binary, which the runner
    /// stages as flat bytes): `kernel_at=LOAD:ENTRY`, the guest physical address the bytes go
    /// to and where vCPU 0 starts, as QEMU's loader would place them.
    pub const OPT_KERNEL_AT: &str = "kernel_at";
    pub const OPT_INITRD: &str = "initrd";
    /// Minimum service time of every backing-store (virtio-blk) request in microseconds: no
    /// request completes earlier than this after it was submitted (default
    /// [`DEFAULT_BACKING_LATENCY_US`]).
    pub const OPT_BACKING_LATENCY_US: &str = "backing_latency_us";
    /// Default of [`OPT_BACKING_LATENCY_US`]: 50 µs, the read latency of an NVMe-class SSD.
    pub const DEFAULT_BACKING_LATENCY_US: u64 = 50;
    /// Run the backing-store self-test over this many 4 KiB pages before the VM starts
    /// (0, the default: no self-test). Its result is one [`SELFTEST_PREFIX`] line.
    pub const OPT_BACKING_SELFTEST: &str = "backing_selftest";
    /// Host memory the VM's RAM may occupy, in MiB: guest RAM is paged by the hypervisor onto
    /// the backing store when it is below `guest_mib` (memory overcommit). Without this key
    /// every guest page has its own host frame from the start and nothing is paged.
    pub const OPT_RESIDENT_MIB: &str = "resident_mib";
    /// `icount=1`: QEMU runs with `-icount` (time is counted in instructions, `sleep=off`), so
    /// the hypervisor keeps host time out of the guest's time: virtual time never passes a
    /// backing request's latency deadline before the device's completion of it has been seen
    /// (the pager stops every CPU, with no timer armed, until it is). `0`, the default: time is
    /// the host's, and a late device is waited for as it comes.
    pub const OPT_ICOUNT: &str = "icount";
    /// `lockcheck=0`: the hypervisor does not check its lock hierarchy at each acquisition
    /// (docs/architecture.md "Locks"). The measured runs (the main job, the sweep) use it: the
    /// check costs about 550 of the hypervisor's instructions per asynchronous fault. `1`, the
    /// default: every acquisition is checked and an inversion stops the machine.
    pub const OPT_LOCK_CHECK: &str = "lockcheck";
    /// `trace_mib=T`: record the per-fault trace into T MiB at the top of host RAM and write
    /// it to the backing disk after guest RAM's slots when the machine ends (docs/abi.md §9).
    /// Only a hypervisor built with its `trace` feature accepts it.
    pub const OPT_TRACE_MIB: &str = "trace_mib";
    /// Separator between hypervisor options and the guest command line.
    pub const GUEST_CMDLINE_SEPARATOR: &str = "--";

    /// Guest command line key: which scenario the asyncpf guest kernel runs.
    pub const GUEST_OPT_SCENARIO: &str = "scenario";
    /// Guest command line key: the seed of the scenario's pseudo-random choices.
    pub const GUEST_OPT_SEED: &str = "seed";

    /// A console line carrying a machine-readable result is this prefix followed by one JSON
    /// object. The guest prints one (`guest` results), the hypervisor prints one (`hyp`
    /// results) just before it ends the machine.
    pub const RESULT_PREFIX: &str = "@result ";
    /// The hypervisor's backing-store self-test result: this prefix followed by one JSON object,
    /// on a `[hyp] ` line.
    pub const SELFTEST_PREFIX: &str = "@selftest ";
    /// Prefix of every line of guest console output on the host console.
    pub const GUEST_LINE_PREFIX: &str = "[guest] ";
    /// Prefix of the hypervisor's own console lines.
    pub const HYP_LINE_PREFIX: &str = "[hyp] ";

    /// The hypervisor's exit status: its last console line is `[hyp] @exit N`, after which it
    /// powers the machine off (PSCI SYSTEM_OFF from EL2, so QEMU itself exits with 0). Only
    /// the hypervisor writes the physical UART, and every guest line carries
    /// [`GUEST_LINE_PREFIX`], so a guest cannot forge this line. (QEMU semihosting is not
    /// used: QEMU would serve it to the guest's EL1 as well.)
    pub const EXIT_PREFIX: &str = "@exit ";
    /// Exit status: the guest powered the machine off (PSCI SYSTEM_OFF).
    pub const EXIT_SYSTEM_OFF: u32 = 0;
    /// Exit status: the hypervisor panicked.
    pub const EXIT_HYP_PANIC: u32 = 101;
    /// Exit status: the guest asked for SYSTEM_RESET and the hypervisor was told to end on
    /// reset instead of rebooting the VM.
    pub const EXIT_SYSTEM_RESET: u32 = 3;
    /// Exit status: the hypervisor could not start the VM (bad options or image).
    pub const EXIT_BAD_CONFIG: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_id_fields() {
        assert_eq!(smccc::owner(hypcall::CALL_UID), smccc::OWNER_VENDOR_HYP);
        assert_eq!(smccc::owner(psci::CPU_ON_64), smccc::OWNER_STANDARD);
        assert_eq!(smccc::function_number(hypcall::REVISION), 0xff03);
        assert!(smccc::is_well_formed_fast(psci::SYSTEM_OFF));
        assert!(!smccc::is_well_formed_fast(0x8401_0000));
        assert!(!smccc::is_well_formed_fast(0x0400_0000));
    }
}
