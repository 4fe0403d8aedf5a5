//! The GIC probe: interrupts reach a guest that never writes GICR_WAKER, as on KVM and on
//! QEMU's own GIC (many small guests never do). The probe enables Group 1 in the distributor
//! and its CPU interface, sends itself every SGI (ICC_SGI1R_EL1) and makes an SPI pending
//! (GICD_ISPENDR), and acknowledges each by polling ICC_IAR1_EL1 with interrupts masked.
#![no_std]
#![no_main]

use core::arch::asm;

use asyncpf_probes::gic::{
    GICD_CTLR, GICD_CTLR_ARE_GRP1, GICD_CTLR_RWP, GICD_IGROUPR, GICD_IROUTER_SPI0, GICD_ISENABLER, GICD_ISPENDR,
    GICR_IGROUPR0, GICR_ISENABLER0, GICR_SGI_BASE,
};
use asyncpf_probes::{gic_cpu_interface, mmio_read, mmio_write, probe, Env};
/// INTID 1023: nothing pending.
const SPURIOUS: u64 = 1023;
const SPI: u32 = 40;

/// Acknowledge the highest-priority pending interrupt (polling up to `tries` times) and end it.
fn take_interrupt(tries: u32) -> Option<u64> {
    for _ in 0..tries {
        let intid: u64;
        // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the probe has IRQs masked
        // and ends each interrupt it takes right here.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nostack)) };
        let intid = intid & 0xff_ffff;
        if intid != SPURIOUS {
            // SAFETY: ends (priority drop and deactivation, EOImode 0) the interrupt just taken.
            unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) intid, options(nostack)) };
            return Some(intid);
        }
    }
    None
}

fn send_sgi_to_self(intid: u64) {
    // SAFETY: an SGI to this CPU (Aff3..1 = 0, target list bit 0: MPIDR 0, the probe's only CPU).
    unsafe { asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) (intid << 24) | 1, options(nostack)) };
}

fn gic(env: &Env) -> ! {
    let Some((gicd, gicr)) = env.gic else {
        env.println(format_args!("gic probe: no arm,gic-v3 node in the device tree"));
        env.system_off();
    };
    mmio_write(gicd + GICD_CTLR, GICD_CTLR_ARE_GRP1);
    while mmio_read(gicd + GICD_CTLR) & GICD_CTLR_RWP != 0 {}
    // Every SGI in Group 1 and enabled; GICR_WAKER is never written.
    mmio_write(gicr + GICR_SGI_BASE + GICR_IGROUPR0, u32::MAX);
    mmio_write(gicr + GICR_SGI_BASE + GICR_ISENABLER0, 0xffff);
    gic_cpu_interface(0xf0, true);

    let mut sgis = 0;
    for intid in 0..16 {
        send_sgi_to_self(intid);
        if take_interrupt(1000) == Some(intid) {
            sgis += 1;
        }
    }
    // SPI 40: Group 1, routed to this CPU (affinity 0), enabled, then made pending.
    let (word, bit) = ((SPI / 32) as usize * 4, 1u32 << (SPI % 32));
    mmio_write(gicd + GICD_IGROUPR + word, bit);
    mmio_write(gicd + GICD_IROUTER_SPI0 + (SPI as usize - 32) * 8, 0);
    mmio_write(gicd + GICD_ISENABLER + word, bit);
    mmio_write(gicd + GICD_ISPENDR + word, bit);
    let spis = u32::from(take_interrupt(1000) == Some(u64::from(SPI)));
    env.println(format_args!("gic probe: sgis {sgis} of 16, spis {spis} of 1, GICR_WAKER never written"));
    env.system_off()
}

probe!(gic);
