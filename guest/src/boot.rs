//! Entry from the boot loader (Linux arm64 Image protocol), secondary CPU bring-up, and a
//! secondary CPU's way off (PSCI CPU_OFF) and back (CPU_ON again, through the same entry).
//!
//! The Image header comes first (Documentation/arch/arm64/booting.rst): `code0` branches to
//! the entry, `text_offset` is 0x200000, `image_size` covers the whole memory footprint
//! including bss, flags say little-endian with 4 KiB pages, and the magic is "ARM\x64".
//! Both entries run with the MMU off; they mask interrupts, allow FP/SIMD (the compiler may use
//! it anywhere), set a stack and TPIDR_EL1 (the logical CPU number), and call into Rust.
//!
//! The secondary path is re-entrant: a CPU that turned itself off (from its idle loop, on its
//! boot stack, with nothing else of its own in flight) restarts at `secondary_entry` on the same
//! stack from the top and redoes only per-CPU set-up (MMU registers, vectors, its GIC
//! redistributor and CPU interface, its timer, its idle task); the one-time set-up (translation
//! tables, distributor, per-CPU table, platform) is the boot CPU's and is not repeated.

use crate::dt::MAX_CPUS;
use crate::{apf, arch, dt, exceptions, gic, mm, percpu, psci, scenarios, sched, timer};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

const BOOT_STACK_SIZE: usize = 16 * 1024;
/// Image header: text_offset.
const TEXT_OFFSET: u64 = 0x20_0000;
/// Image header flags: bit 0 = 0 little-endian, bits 2:1 = 1 (4 KiB pages), bit 3 = 0.
const IMAGE_FLAGS: u64 = 0b0010;
/// CPACR_EL1.FPEN = 0b11: FP/SIMD instructions do not trap at EL1 or EL0.
const CPACR_FPEN: u64 = 3 << 20;

#[repr(C, align(16))]
struct BootStacks(UnsafeCell<[[u8; BOOT_STACK_SIZE]; MAX_CPUS]>);
// SAFETY: CPU n uses only stack n, as its boot and then idle stack (again from the top after it
// turned itself off: nothing on it is live then).
unsafe impl Sync for BootStacks {}
static BOOT_STACKS: BootStacks = BootStacks(UnsafeCell::new([[0; BOOT_STACK_SIZE]; MAX_CPUS]));

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b primary_entry             // code0
    .long 0                     // code1
    .quad {text_offset}         // text_offset
    .quad __image_size          // image_size, bss included
    .quad {flags}               // flags
    .quad 0, 0, 0               // res2..res4
    .ascii "ARM\x64"            // magic
    .long 0                     // res5

primary_entry:
    msr daifset, #0xf
    mov x19, x0                 // DTB physical address
    mov x1, #{cpacr}
    msr cpacr_el1, x1
    isb
    adrp x0, __bss_start
    add x0, x0, :lo12:__bss_start
    adrp x1, __bss_end
    add x1, x1, :lo12:__bss_end
.Lclear_bss:
    cmp x0, x1
    b.hs .Lbss_clear
    stp xzr, xzr, [x0], #16
    b .Lclear_bss
.Lbss_clear:
    adrp x0, {stacks}
    add x0, x0, :lo12:{stacks}
    add x0, x0, #{stack_size}
    mov sp, x0
    msr tpidr_el1, xzr
    mov x0, x19
    mov x29, #0
    bl {primary_main}
    udf #0

// PSCI CPU_ON entry: x0 = logical CPU number (the context id).
.global secondary_entry
secondary_entry:
    msr daifset, #0xf
    mov x1, #{cpacr}
    msr cpacr_el1, x1
    isb
    msr tpidr_el1, x0
    adrp x1, {stacks}
    add x1, x1, :lo12:{stacks}
    add x2, x0, #1
    mov x3, #{stack_size}
    madd x1, x2, x3, x1
    mov sp, x1
    mov x29, #0
    bl {secondary_main}
    udf #0
"#,
    text_offset = const TEXT_OFFSET,
    flags = const IMAGE_FLAGS,
    cpacr = const CPACR_FPEN,
    stacks = sym BOOT_STACKS,
    stack_size = const BOOT_STACK_SIZE,
    primary_main = sym primary_main,
    secondary_main = sym secondary_main,
);

extern "C" {
    fn secondary_entry();
}

/// CPUs that finished their first bring-up.
static CPUS_UP: AtomicUsize = AtomicUsize::new(0);

/// Interrupts, timer and scheduler of the running CPU (MMU already on), at every bring-up.
fn init_this_cpu() {
    exceptions::install();
    if let Err(e) = gic::init_this_cpu() {
        panic!("GIC set-up failed on cpu {}: {e:?}", arch::cpu_index());
    }
    timer::init_this_cpu();
    sched::init_this_cpu();
    let this = percpu::this();
    let first = this.hotplug.bring_ups.fetch_add(1, Ordering::AcqRel) == 0;
    this.set_online();
    if first {
        CPUS_UP.fetch_add(1, Ordering::AcqRel);
    }
}

/// Starts secondary CPU `index` with PSCI CPU_ON at the secondary entry: at boot, and again
/// after it turned itself off. Returns PSCI's answer (SUCCESS, or e.g. ALREADY_ON when it is
/// on or starting; PSCI also allows ON_PENDING while it is starting, which asyncpf's hypervisor,
/// like KVM, never answers).
pub fn cpu_on(index: usize) -> i64 {
    assert!(index != 0 && index < percpu::count(), "cpu_on of cpu {index}");
    // SAFETY: `secondary_entry` runs with the MMU off and expects its logical number in x0. It
    // uses boot stack `index`, which is free: the CPU is either not started yet or turned itself
    // off from its idle loop (which runs on that stack and has nothing else in flight); if the
    // CPU is on or starting, PSCI refuses and nothing happens.
    unsafe { psci::cpu_on(percpu::get(index).mpidr(), secondary_entry as *const () as usize, index as u64) }
}

/// Reads one byte of every page of CPU `cpu`'s boot (idle) stack, from any CPU: that makes the
/// pages resident under the hypervisor's paging (and marks them used), so that the CPU's switch
/// to its idle loop does not wait for a page-in. The values are discarded.
pub fn touch_idle_stack(cpu: usize) {
    assert!(cpu < MAX_CPUS);
    let base = BOOT_STACKS.0.get() as *const u8;
    for offset in (cpu * BOOT_STACK_SIZE..(cpu + 1) * BOOT_STACK_SIZE).step_by(4096) {
        // SAFETY: inside BOOT_STACKS (`cpu` checked), which lives forever; a volatile byte read
        // through a raw pointer creates no reference, and the value is not used, so a
        // concurrent write by the CPU that owns the stack cannot affect anything here.
        unsafe { core::ptr::read_volatile(base.add(offset)) };
    }
}

/// Turns the running CPU off (PSCI CPU_OFF), from its idle loop, after the scheduler has moved
/// its tasks away and marked it offline. It comes back, if ever, through [`cpu_on`].
pub fn power_off_this_cpu() -> ! {
    debug_assert!(arch::irqs_masked());
    let this = percpu::this();
    timer::stop_this_cpu();
    gic::disable_this_cpu();
    // Its ring empty, so that the wake-all ending its APF session fits (docs/abi.md §8.2); the
    // CPU that sees it off drains the rest (`apf::drain_offline`).
    crate::apf::before_cpu_off();
    this.hotplug.cpu_off_calls.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the idle loop calls this with IRQs masked after `sched` marked the CPU offline
    // with an empty run queue: no task's state is live here, only the idle loop's own frames on
    // the boot stack, which the next bring-up starts over.
    let ret = unsafe { psci::cpu_off() };
    panic!("PSCI CPU_OFF returned {ret} on cpu {}", arch::cpu_index());
}

extern "C" fn primary_main(dtb: usize) -> ! {
    // MMU off: parse the device tree (the target forbids unaligned accesses, so this is safe on
    // uncached memory) and build the translation tables, then turn the MMU on.
    // SAFETY: the boot protocol passes the DTB address in x0.
    let platform = match unsafe { dt::parse(dtb) } {
        Ok(platform) => platform,
        Err(error) => unusable_device_tree(dtb, error),
    };
    // SAFETY: first and only call, before any other CPU runs.
    unsafe { mm::build(&platform) };
    // SAFETY: the tables are built and identity-map the kernel.
    unsafe { mm::enable_mmu() };
    exceptions::install();
    crate::console::init(platform.uart.base as usize);
    psci::init(platform.psci);
    crate::println!(
        "asyncpf guest: DTB {:#x}+{:#x}, {} cpus, RAM {:#x}+{:#x}, GICD {:#x}, GICR {:#x}, vtimer INTID {}, PSCI {:?} v{:?}",
        platform.dtb.base,
        platform.dtb.size,
        platform.cpu_count,
        platform.ram[0].base,
        platform.ram[0].size,
        platform.gicd.base,
        platform.gicr.base,
        platform.vtimer_intid,
        platform.psci,
        psci::version()
    );
    if arch::current_el() >> 2 != 1 {
        panic!("the kernel must be entered at EL1");
    }

    // Logical CPU 0 is this one; the rest follow in device-tree order.
    let me = arch::mpidr_affinity();
    if !platform.cpus().contains(&me) {
        panic!("boot CPU {me:#x} is not in the device tree");
    }
    percpu::init(core::iter::once(me).chain(platform.cpus().iter().copied().filter(|&c| c != me)));

    // SAFETY: the GIC's distributor and redistributor region from the device tree, mapped as
    // device memory (`mm`); only `gic` accesses them.
    unsafe {
        gic::init_distributor(
            platform.gicd.base as usize,
            platform.gicr.base as usize,
            platform.gicr.size as usize,
            platform.vtimer_intid,
        )
    };
    // Each private interrupt's handler, registered here, where the modules meet.
    gic::register(platform.vtimer_intid, timer::tick);
    gic::register(gic::SGI_RESCHEDULE, sched::request_reschedule);
    gic::register(gic::SGI_TEST, scenarios::ipi::received);
    gic::register(asyncpf_contract::apf::PAGE_READY_INTID, apf::on_page_ready);
    timer::init_global();
    scenarios::set_platform(platform);
    init_this_cpu();

    for (index, cpu) in percpu::all().skip(1) {
        let ret = cpu_on(index);
        if ret != asyncpf_contract::psci::SUCCESS {
            panic!("PSCI CPU_ON of cpu {index} (MPIDR {:#x}) failed: {ret}", cpu.mpidr());
        }
    }
    let deadline = arch::virtual_count() + arch::counter_frequency();
    while CPUS_UP.load(Ordering::Acquire) < percpu::count() {
        if arch::virtual_count() > deadline {
            panic!("only {} of {} CPUs came up", CPUS_UP.load(Ordering::Acquire), percpu::count());
        }
        core::hint::spin_loop();
    }

    scenarios::start(platform.bootargs);
    sched::idle_loop();
}

/// Says why the device tree cannot be used, if it names a console, and stops: without the
/// `/psci` node there is no known way to power off.
fn unusable_device_tree(dtb: usize, error: dt::DtError) -> ! {
    // SAFETY: as in `primary_main`.
    if let Some(base) = unsafe { dt::console_base(dtb) } {
        // With the MMU off every data access is Device-nGnRnE, so the PL011 is usable as is.
        crate::console::init(base);
        let _ = writeln!(crate::console::RawConsole, "asyncpf guest: unusable device tree at {dtb:#x}: {error}");
    }
    loop {
        arch::wait_for_interrupt();
    }
}

/// Every bring-up of a secondary CPU, the first and those after CPU_OFF.
extern "C" fn secondary_main(_index: usize) -> ! {
    // SAFETY: the boot CPU built the tables before starting this CPU.
    unsafe { mm::enable_mmu() };
    init_this_cpu();
    crate::apf::on_cpu_up();
    sched::idle_loop();
}
