//! The asyncpf hypervisor: a bare-metal EL2 hypervisor for QEMU's arm64 `virt` machine that
//! runs one VM with one vCPU pinned to each physical CPU.
//!
//! Boot: CPU 0 reads QEMU's device tree, turns on its MMU, sets up the heap and the physical
//! GIC, builds the VM from the command line, starts the other CPUs through PSCI, and runs
//! vCPU 0. Every other CPU turns on its MMU and GIC interface and runs its vCPU when the guest
//! turns it on.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod apf;
mod arch;
mod backing;
mod console;
mod diag;
mod gic;
mod mm;
mod pager;
mod panic;
mod platform;
mod pmu;
mod sdei;
mod shutdown;
mod stats;
mod sync;
mod trace;
mod vcpu;
mod vcpus;
mod vgic;
mod vm;
mod vuart;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Writeable, VBAR_EL2};
use asyncpf_contract::runner::EXIT_BAD_CONFIG;
use spin::Once;

use crate::platform::Platform;

/// The machine description, read once by CPU 0.
static PLATFORM: Once<Platform> = Once::new();
/// Set by CPU 0 when the EL2 page tables are ready for the other CPUs.
static TABLES_READY: AtomicBool = AtomicBool::new(false);
/// Each physical CPU's CTR_EL0.CWG, plus one (0: not reported yet), stored by the CPU itself.
static CPU_CWG: [AtomicU64; arch::boot::MAX_CPUS] = [const { AtomicU64::new(0) }; arch::boot::MAX_CPUS];
/// The machine's writeback granule in bytes, decided by CPU 0 once every CPU has reported
/// (`asyncpf_core::apf::machine_granule`); 0 before.
static MACHINE_GRANULE: AtomicUsize = AtomicUsize::new(0);

/// The writeback granule the APF record is laid out with: the largest over every physical CPU.
pub fn max_writeback_granule() -> usize {
    MACHINE_GRANULE.load(Ordering::Acquire)
}

unsafe extern "C" {
    static __hyp_image_end: u8;
}

/// The hypervisor's heap directly follows its image; the staged guest image must lie above it.
const HEAP_BYTES: u64 = 16 << 20;

/// Called from `arch::boot` on every CPU with its index, on its own stack, MMU off.
pub extern "C" fn rust_entry(cpu: usize) -> ! {
    arch::set_cpu_index(cpu);
    // `hyp_vectors` is the 2 KiB-aligned vector table from `arch::entry`.
    VBAR_EL2.set(core::ptr::addr_of!(arch::entry::hyp_vectors) as u64);
    arch::isb();
    if cpu == 0 {
        primary_cpu()
    } else {
        secondary_cpu(cpu)
    }
}

fn primary_cpu() -> ! {
    mm::build_el2_tables();
    TABLES_READY.store(true, Ordering::Release);
    mm::enable_el2_mmu();
    let image_end = core::ptr::addr_of!(__hyp_image_end) as u64;
    let heap_end = image_end + HEAP_BYTES;
    mm::init_heap(image_end as usize, heap_end as usize);
    let platform = PLATFORM.call_once(|| match platform::discover() {
        Ok(p) => p,
        Err(e) => fail(format_args!("{e}")),
    });
    console::init(platform.uart_base as usize);
    let options = match asyncpf_core::options::parse(platform.bootargs) {
        Ok(options) => options,
        Err(e) => fail(format_args!("bad hypervisor command line '{}': {e}", platform.bootargs)),
    };
    // Before the other CPUs start and before any lock is held.
    sync::set_lock_check(options.lock_check);
    note_writeback_granule(0);
    hyp_println!(
        "asyncpf hypervisor: {} physical CPUs, RAM {:#x}+{:#x}, GICD {:#x}, GICR {:#x}, CWG {} bytes",
        platform.cpu_mpidrs.len(),
        platform.ram_base,
        platform.ram_size,
        platform.gicd_base,
        platform.gicr_base,
        arch::writeback_granule_bytes()
    );
    if platform.cpu_mpidrs.len() > arch::boot::MAX_CPUS {
        fail(format_args!(
            "{} CPUs but the hypervisor supports at most {}",
            platform.cpu_mpidrs.len(),
            arch::boot::MAX_CPUS
        ));
    }
    // SAFETY: the GIC's distributor page and redistributor region from the device tree, in the
    // first GiB, which `mm` identity-maps as device memory at EL2 for good (QEMU's virt machine
    // has its devices there, as every MMIO access of the hypervisor assumes); nothing but `gic`
    // touches them.
    unsafe {
        gic::init_distributor(platform.gicd_base);
        gic::init_this_cpu(platform.gicr_base, platform.gicr_size);
    }
    if options.backing_selftest > 0 {
        backing::selftest::run(platform, &options);
    }
    // Every CPU reports its writeback granule before the VM (and its APF record layout) is
    // built: the layout must hold for the largest one.
    start_secondary_cpus(platform);
    let cwgs = (0..platform.cpu_mpidrs.len()).map(|cpu| loop {
        match CPU_CWG[cpu].load(Ordering::Acquire) {
            0 => core::hint::spin_loop(),
            reported => break reported - 1,
        }
    });
    let granule = asyncpf_core::apf::machine_granule(cwgs).expect("CPU 0 reported");
    MACHINE_GRANULE.store(granule as usize, Ordering::Release);

    let vm = match vm::build(platform, &options, heap_end) {
        Ok(vm) => vm,
        Err(e) => fail(format_args!("cannot build the VM: {e}")),
    };
    if let Err(e) = trace::init(platform, &options, vm.ram_host.0 + vm.ram_host_bytes) {
        fail(format_args!("{e}"));
    }
    hyp_println!(
        "VM: {} vCPUs, {} MiB guest RAM at IPA {:#x} (host {:#x}), kernel entry {:#x}, device tree at {:#x}",
        vm.vcpus.len(),
        vm.ram_bytes >> 20,
        vm.ram_base.0,
        vm.ram_host.0,
        vm.kernel_entry,
        vm.dtb_address
    );
    // The other CPUs wait for the VM in `wfe`.
    arch::send_event();
    vm.vcpus.power_on(0, vm.kernel_entry, vm.dtb_address).expect("vCPU 0 starts off");
    vcpu::run(vm, 0)
}

fn start_secondary_cpus(platform: &Platform) {
    for (cpu, &mpidr) in platform.cpu_mpidrs.iter().enumerate().skip(1) {
        let entry = arch::boot::secondary_entry as *const () as u64;
        let result = arch::smc_call(asyncpf_contract::psci::CPU_ON_64, mpidr, entry, cpu as u64);
        if result != asyncpf_contract::psci::SUCCESS {
            fail(format_args!("PSCI CPU_ON for physical CPU {cpu} (MPIDR {mpidr:#x}) failed: {result}"));
        }
    }
}

fn secondary_cpu(cpu: usize) -> ! {
    while !TABLES_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    mm::enable_el2_mmu();
    note_writeback_granule(cpu);
    let platform = PLATFORM.get().expect("CPU 0 read the platform before starting this CPU");
    // SAFETY: as on CPU 0 (`main`): the redistributor region from the device tree, mapped by
    // `mm` as device memory; only `gic` touches it.
    unsafe { gic::init_this_cpu(platform.gicr_base, platform.gicr_size) };
    let vm = loop {
        match vm::try_get() {
            Some(vm) => break vm,
            None => arch::wait_for_event(),
        }
    };
    // vCPU n runs on CPU n (`vcpus::pcpu_of`).
    if cpu < vm.vcpus.len() {
        debug_assert_eq!(vcpus::pcpu_of(cpu), cpu);
        vcpu::run(vm, cpu)
    }
    // No vCPU for this CPU: stay idle.
    loop {
        arch::wait_for_interrupt();
        gic::drain(|intid| {
            vcpu::pager_interrupt(intid);
        });
    }
}

/// This CPU's CTR_EL0.CWG, for CPU 0's decision of the machine's granule.
fn note_writeback_granule(cpu: usize) {
    CPU_CWG[cpu].store(arch::writeback_granule_cwg() + 1, Ordering::Release);
}

/// A configuration error before the VM runs: say why and end with EXIT_BAD_CONFIG.
fn fail(args: core::fmt::Arguments) -> ! {
    console::print_line(asyncpf_contract::runner::HYP_LINE_PREFIX, format_args!("error: {args}"));
    shutdown::exit(EXIT_BAD_CONFIG, false)
}
