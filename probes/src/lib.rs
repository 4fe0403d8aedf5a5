//! The runtime of asyncpf's probes: small hand-made guest images, booted with `--guest-kernel`
//! like any foreign kernel, that test the hypervisor from outside our own guest kernel.
//!
//! A probe is an arm64 `Image` (Linux booting protocol: the 64-byte header, entered at EL1
//! with the MMU off and the device tree's address in x0). It runs on the boot CPU only, with
//! the MMU and interrupts off. Synchronous exceptions taken at EL1 are counted and skipped (the
//! faulting instruction is stepped over), so a probe can try something that should be refused
//! and see that it was. It reports on the console (the PL011 the device tree names) and ends
//! with PSCI SYSTEM_OFF; the runner and `cargo xtask test` judge the rest.
//!
//! A probe is `fn probe_main(env: &Env) -> !` registered with [`probe!`].
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

/// The `virt` machine's PL011, if the device tree names none.
const DEFAULT_UART: usize = 0x0900_0000;
/// PL011 data and flag registers, and FR's "transmit FIFO full".
const UART_DR: usize = 0x00;
const UART_FR: usize = 0x18;
const UART_FR_TXFF: u32 = 1 << 5;

/// Synchronous exceptions taken at EL1 so far, and the last one's ESR_EL1 (written by the
/// vector code below).
static EXCEPTIONS: AtomicU64 = AtomicU64::new(0);
static LAST_ESR: AtomicU64 = AtomicU64::new(0);
static LAST_FAR: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b 1f                        // code0
    .long 0                     // code1
    .quad 0x200000              // text_offset
    .quad __image_size          // image_size, bss and stack included
    .quad 2                     // flags: little-endian, 4 KiB pages
    .quad 0, 0, 0               // res2..res4
    .ascii "ARM\x64"            // magic
    .long 0                     // res5
1:  msr daifset, #0xf
    mov x19, x0                 // the device tree
    mov x1, #(3 << 20)          // CPACR_EL1.FPEN: FP/SIMD allowed
    msr cpacr_el1, x1
    adrp x1, probe_vectors
    add x1, x1, :lo12:probe_vectors
    msr vbar_el1, x1
    isb
    adrp x0, __bss_start
    add x0, x0, :lo12:__bss_start
    adrp x1, __bss_end
    add x1, x1, :lo12:__bss_end
2:  cmp x0, x1
    b.hs 3f
    stp xzr, xzr, [x0], #16
    b 2b
3:  adrp x0, __stack_top
    add x0, x0, :lo12:__stack_top
    mov sp, x0
    mov x0, x19
    mov x29, #0
    bl {entry}
    udf #0

// Every vector: count the exception, remember ESR_EL1 and step over the instruction (for an
// SError or an interrupt, which a probe never unmasks, ELR already points past it).
.balign 2048
probe_vectors:
.rept 16
    stp x0, x1, [sp, #-16]!
    b probe_exception
    .balign 128
.endr
probe_exception:
    mrs x0, esr_el1
    adrp x1, {last_esr}
    str x0, [x1, :lo12:{last_esr}]
    mrs x0, far_el1
    adrp x1, {last_far}
    str x0, [x1, :lo12:{last_far}]
    adrp x1, {count}
    ldr x0, [x1, :lo12:{count}]
    add x0, x0, #1
    str x0, [x1, :lo12:{count}]
    mrs x0, elr_el1
    add x0, x0, #4
    msr elr_el1, x0
    ldp x0, x1, [sp], #16
    eret
"#,
    entry = sym rust_entry,
    last_esr = sym LAST_ESR,
    last_far = sym LAST_FAR,
    count = sym EXCEPTIONS,
);

unsafe extern "Rust" {
    /// The probe's main function, defined by [`probe!`].
    safe fn probe_main(env: &Env) -> !;
}

extern "C" fn rust_entry(dtb: usize) -> ! {
    let env = Env::new(dtb);
    probe_main(&env)
}

/// Defines the probe's entry: `probe!(main)` with `fn main(env: &Env) -> !`.
#[macro_export]
macro_rules! probe {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn probe_main(env: &$crate::Env) -> ! {
            $main(env)
        }
    };
}

/// Synchronous exceptions taken at EL1 so far.
pub fn exceptions() -> u64 {
    EXCEPTIONS.load(Ordering::SeqCst)
}

/// ESR_EL1 of the last exception.
pub fn last_esr() -> u64 {
    LAST_ESR.load(Ordering::SeqCst)
}

/// FAR_EL1 of the last exception (meaningful for aborts).
pub fn last_far() -> u64 {
    LAST_FAR.load(Ordering::SeqCst)
}

/// What the boot loader handed over: the console, the GIC and the command line.
pub struct Env {
    uart: usize,
    bootargs: &'static str,
    /// The GICv3 distributor and redistributor region (`arm,gic-v3` in the device tree).
    pub gic: Option<(usize, usize)>,
    /// The initial RAM disk, `[start, end)` (`/chosen/linux,initrd-start` and `-end`).
    pub initrd: Option<(u64, u64)>,
    /// The PMU's interrupt as an INTID, if the device tree has an `arm,armv8-pmuv3` node.
    pub pmu_interrupt: Option<u32>,
}

impl Env {
    fn new(dtb: usize) -> Env {
        // SAFETY: x0 at entry is the device tree's address (Linux booting protocol); the blob
        // stays in guest RAM, untouched, for the probe's whole life.
        let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok();
        let uart = fdt
            .as_ref()
            .and_then(|f| f.chosen().stdout())
            .and_then(|n| n.reg()?.next())
            .map_or(DEFAULT_UART, |r| r.starting_address as usize);
        let gic = fdt.as_ref().and_then(|f| {
            let mut reg = f.find_compatible(&["arm,gic-v3"])?.reg()?;
            Some((reg.next()?.starting_address as usize, reg.next()?.starting_address as usize))
        });
        let initrd = fdt.as_ref().and_then(|f| {
            let chosen = f.find_node("/chosen")?;
            let cell = |name| {
                let value = chosen.property(name)?.value;
                Some(match value.len() {
                    4 => u64::from(u32::from_be_bytes(value.try_into().ok()?)),
                    8 => u64::from_be_bytes(value.try_into().ok()?),
                    _ => return None,
                })
            };
            Some((cell("linux,initrd-start")?, cell("linux,initrd-end")?))
        });
        let pmu_interrupt = fdt.as_ref().and_then(|f| {
            let cells = f.find_compatible(&["arm,armv8-pmuv3"])?.property("interrupts")?.value;
            let cell = |i: usize| Some(u32::from_be_bytes(cells.get(4 * i..4 * i + 4)?.try_into().ok()?));
            // GICv3 specifier: <type number flags>; type 1 is a PPI (INTID 16 + n), 0 an SPI.
            Some(cell(1)? + if cell(0)? == 1 { 16 } else { 32 })
        });
        let bootargs = fdt.and_then(|f| f.chosen().bootargs()).unwrap_or("");
        Env { uart, bootargs, gic, initrd, pmu_interrupt }
    }

    /// The value of `key=value` on the command line.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        self.bootargs.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// Write raw bytes to the console.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: `uart` is the PL011 the device tree names (MMU off: Device memory); FR
            // and DR are 32-bit registers, and writing DR transmits one byte.
            unsafe {
                while read_volatile((self.uart + UART_FR) as *const u32) & UART_FR_TXFF != 0 {}
                write_volatile((self.uart + UART_DR) as *mut u32, b as u32);
            }
        }
    }

    /// Print one line.
    pub fn println(&self, args: fmt::Arguments) {
        struct Out<'a>(&'a Env);
        impl Write for Out<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.write_bytes(s.as_bytes());
                Ok(())
            }
        }
        let _ = Out(self).write_fmt(args);
        self.write_bytes(b"\n");
    }

    /// PSCI SYSTEM_OFF through `hvc` (the conduit the hypervisor's device tree names).
    pub fn system_off(&self) -> ! {
        hvc(asyncpf_contract::psci::SYSTEM_OFF as u64, [0; 3]);
        loop {
            core::hint::spin_loop();
        }
    }
}

/// The GICv3 registers the probes program, as offsets into arm-gic's register blocks (`Gicd`,
/// `GicrSgi`): the map the hypervisor's emulation decodes and the guest kernel drives. The
/// probes still write them with raw 32-bit accesses ([`mmio_write`]), as a foreign kernel
/// would.
pub mod gic {
    use arm_gic::gicv3::registers::{Gicd, GicdCtlr, GicrSgi, Sgi};
    use core::mem::offset_of;

    pub const GICD_CTLR: usize = offset_of!(Gicd, ctlr);
    pub const GICD_CTLR_RWP: u32 = GicdCtlr::RWP.bits();
    /// GICD_CTLR.ARE_NS (bit 4) and EnableGrp1A (bit 1) in the Non-secure view, ARE and
    /// EnableGrp1 with one Security state (arm-gic names bit 4 after the Secure view: ARE_S).
    pub const GICD_CTLR_ARE_GRP1: u32 = GicdCtlr::ARE_S.bits() | GicdCtlr::EnableGrp1NS.bits();
    pub const GICD_IGROUPR: usize = offset_of!(Gicd, igroupr);
    pub const GICD_ISENABLER: usize = offset_of!(Gicd, isenabler);
    pub const GICD_ISPENDR: usize = offset_of!(Gicd, ispendr);
    /// `GICD_IROUTER<n>` for the first SPI, n = 32 (8 bytes each).
    pub const GICD_IROUTER_SPI0: usize = offset_of!(Gicd, irouter);
    /// The redistributor's SGI_base frame, and its registers (offsets in that frame).
    pub const GICR_SGI_BASE: usize = offset_of!(GicrSgi, sgi);
    pub const GICR_IGROUPR0: usize = offset_of!(Sgi, igroupr);
    pub const GICR_ISENABLER0: usize = offset_of!(Sgi, isenabler);
}

/// A 32-bit MMIO read, as one `ldr w, [x]`: an emulated device needs the access's syndrome,
/// which forms with address writeback (which the compiler may pick for a plain volatile
/// access) do not report.
pub fn mmio_read(address: usize) -> u32 {
    let value: u32;
    // SAFETY: callers pass device registers the device tree describes (MMU off: Device
    // memory); a read has no effect the probe does not expect.
    unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) address, v = out(reg) value, options(nostack)) };
    value
}

/// A 32-bit MMIO write, as one `str w, [x]` (see [`mmio_read`]).
pub fn mmio_write(address: usize, value: u32) {
    // SAFETY: callers pass device registers the device tree describes (MMU off: Device
    // memory), for the effect the probe tests.
    unsafe { asm!("str {v:w}, [{a}]", a = in(reg) address, v = in(reg) value, options(nostack)) };
}

/// Turn this CPU's GICv3 CPU interface to the system registers (ICC_SRE_EL1.SRE) and set its
/// priority mask and Group 1 enable: `priority_mask` 0xf0 lets the probes' interrupts through,
/// 0 masks every one. PSTATE's masks are left as they are.
pub fn gic_cpu_interface(priority_mask: u8, group1: bool) {
    // SAFETY: writes only this (v)CPU's GIC CPU interface registers, which the probe owns; an
    // interrupt it lets through is still masked by PSTATE unless the probe unmasks it.
    unsafe {
        asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {group1}",
            "isb",
            t = out(reg) _,
            pmr = in(reg) u64::from(priority_mask),
            group1 = in(reg) u64::from(group1),
            options(nostack),
        )
    };
}

/// An SMCCC call through `hvc #0`; returns x0.
pub fn hvc(function: u64, args: [u64; 3]) -> u64 {
    hvc4(function, args)[0]
}

/// An SMCCC call through `hvc #0`; returns x0..x3.
pub fn hvc4(function: u64, args: [u64; 3]) -> [u64; 4] {
    let (mut x0, mut x1, mut x2, mut x3) = (function, args[0], args[1], args[2]);
    // SAFETY: an SMCCC 1.1 call preserves x18 and up; x0-x17 are declared clobbered. A probe
    // has no state the call could invalidate.
    unsafe {
        asm!("hvc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
    };
    [x0, x1, x2, x3]
}

/// An Arm semihosting call (`hlt #0xf000`, operation in x0, parameter block in x1); returns
/// x0. Where semihosting is off the instruction is UNDEFINED, and the exception is counted and
/// stepped over, so x0 comes back unchanged.
pub fn semihosting(operation: u64, parameter: u64) -> u64 {
    let result: u64;
    // SAFETY: the parameter block is the caller's and lives across the call; whatever the host
    // does, the probe's memory is changed only where a call's block says (none of ours asks
    // for a write into the probe).
    unsafe {
        asm!("hlt #0xf000", inlateout("x0") operation => result, in("x1") parameter,
             options(nostack))
    };
    result
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
