//! The timer probe: the guest's generic timers behave as on KVM. Their interrupts are
//! level-sensitive (pending exactly while ENABLE, ISTATUS and not IMASK hold), the hypervisor
//! never changes the guest's CNTV_CTL_EL0, and the EL1 physical timer (CNTP_*, INTID 30) is
//! the guest's to use. Pending state is read with ICC_HPPIR1_EL1 after an exit (a PSCI_VERSION
//! call), as a guest would see it after any trap; interrupts stay masked in PSTATE. The level
//! must hold during the exit too: a PSCI CPU_SUSPEND right after the guest disabled its pending
//! timer sleeps until the next interrupt.
#![no_std]
#![no_main]

use core::arch::asm;

use asyncpf_probes::gic::{GICD_CTLR, GICD_CTLR_ARE_GRP1, GICR_IGROUPR0, GICR_ISENABLER0, GICR_SGI_BASE};
use asyncpf_probes::{gic_cpu_interface, hvc, mmio_read, mmio_write, probe, Env};

const ENABLE: u64 = 1;
const IMASK: u64 = 2;
const ISTATUS: u64 = 4;
const VIRT_TIMER: u64 = 27;
const PHYS_TIMER: u64 = 30;
const SPURIOUS: u64 = 1023;

#[derive(Clone, Copy, PartialEq)]
enum Timer {
    Virt,
    Phys,
}

macro_rules! sysreg {
    (read $reg:literal) => {{
        let v: u64;
        // SAFETY: reads a generic-timer or GIC CPU interface register of this (v)CPU.
        unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
        v
    }};
    (write $reg:literal, $v:expr) => {
        // SAFETY: writes a generic-timer or GIC CPU interface register of this (v)CPU, which
        // the probe owns; interrupts stay masked in PSTATE.
        unsafe { asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) $v, options(nostack)) }
    };
}

impl Timer {
    fn ctl(self) -> u64 {
        match self {
            Timer::Virt => sysreg!(read "cntv_ctl_el0"),
            Timer::Phys => sysreg!(read "cntp_ctl_el0"),
        }
    }
    fn set_ctl(self, v: u64) {
        match self {
            Timer::Virt => sysreg!(write "cntv_ctl_el0", v),
            Timer::Phys => sysreg!(write "cntp_ctl_el0", v),
        }
    }
    fn now(self) -> u64 {
        match self {
            Timer::Virt => sysreg!(read "cntvct_el0"),
            Timer::Phys => sysreg!(read "cntpct_el0"),
        }
    }
    fn set_cval(self, v: u64) {
        match self {
            Timer::Virt => sysreg!(write "cntv_cval_el0", v),
            Timer::Phys => sysreg!(write "cntp_cval_el0", v),
        }
    }
    /// Fire `micros` from now, enabled and unmasked; wait until the condition holds.
    fn arm(self, micros: u64) -> bool {
        let ticks = sysreg!(read "cntfrq_el0") / 1_000_000 * micros;
        self.set_cval(self.now() + ticks);
        self.set_ctl(ENABLE);
        let give_up = self.now() + ticks + sysreg!(read "cntfrq_el0") / 10;
        while self.ctl() & ISTATUS == 0 {
            if self.now() > give_up {
                return false;
            }
        }
        true
    }
}

/// Trap to the hypervisor once (it samples the timers before it enters the guest again).
fn exit() {
    hvc(asyncpf_contract::psci::PSCI_VERSION as u64, [0; 3]);
}

/// The highest-priority pending interrupt after an exit.
fn pending() -> u64 {
    exit();
    sysreg!(read "icc_hppir1_el1") & 0xff_ffff
}

/// Whether `intid` becomes the pending interrupt within about 100 ms (the physical interrupt
/// reaches the hypervisor asynchronously).
fn becomes_pending(intid: u64) -> bool {
    let give_up = Timer::Virt.now() + sysreg!(read "cntfrq_el0") / 10;
    while Timer::Virt.now() < give_up {
        if pending() == intid {
            return true;
        }
    }
    false
}

/// Acknowledge and end the pending interrupt (EOImode 0: priority drop and deactivation).
fn acknowledge() -> u64 {
    let intid = sysreg!(read "icc_iar1_el1") & 0xff_ffff;
    if intid != SPURIOUS {
        sysreg!(write "icc_eoir1_el1", intid);
    }
    intid
}

fn timer(env: &Env) -> ! {
    let Some((gicd, gicr)) = env.gic else {
        env.println(format_args!("timer probe: no arm,gic-v3 node in the device tree"));
        env.system_off();
    };
    mmio_write(gicd + GICD_CTLR, GICD_CTLR_ARE_GRP1);
    mmio_write(gicr + GICR_SGI_BASE + GICR_IGROUPR0, u32::MAX);
    mmio_write(gicr + GICR_SGI_BASE + GICR_ISENABLER0, (1 << VIRT_TIMER) | (1 << PHYS_TIMER));
    let _ = mmio_read(gicr + GICR_SGI_BASE + GICR_ISENABLER0);
    gic_cpu_interface(0xf0, true);

    let v = Timer::Virt;
    let mut checks: [(&str, bool); 9] = [("", false); 9];
    let fired = v.arm(1000) && becomes_pending(VIRT_TIMER);
    checks[0] = ("pending while the output is high", fired);
    checks[1] = ("CNTV_CTL_EL0 is as the guest wrote it", v.ctl() & (ENABLE | IMASK) == ENABLE);
    v.set_ctl(0);
    checks[2] = ("disabling withdraws it", fired && pending() != VIRT_TIMER);
    let refired = v.arm(1000) && becomes_pending(VIRT_TIMER);
    v.set_ctl(ENABLE | IMASK);
    checks[3] = ("masking withdraws it", refired && pending() != VIRT_TIMER);
    v.set_ctl(ENABLE);
    let unmasked = becomes_pending(VIRT_TIMER);
    let taken = unmasked && acknowledge() == VIRT_TIMER;
    checks[4] = ("unmasking makes it pending again", taken);
    checks[5] = ("still high after its deactivation: pending again", taken && becomes_pending(VIRT_TIMER));
    let second = sysreg!(read "cntfrq_el0");
    v.set_cval(v.now() + second); // one second ahead
    checks[6] = ("re-arming into the future withdraws it", taken && pending() != VIRT_TIMER);
    v.set_ctl(0);

    let before = asyncpf_probes::exceptions();
    let p = Timer::Phys;
    let phys = p.arm(1000) && becomes_pending(PHYS_TIMER) && acknowledge() == PHYS_TIMER;
    p.set_ctl(0);
    checks[7] = ("the EL1 physical timer fires INTID 30", phys && asyncpf_probes::exceptions() == before);

    // The level is sampled at the exit itself, not only before the next entry: a CPU_SUSPEND
    // right after disabling a pending timer must sleep until the next interrupt (here the
    // physical timer's, 20 ms later), not return at once because the withdrawn interrupt still
    // looked pending while the exit was handled.
    let pending_before = v.arm(1000) && becomes_pending(VIRT_TIMER);
    v.set_ctl(0);
    let frequency = sysreg!(read "cntfrq_el0");
    p.set_cval(p.now() + frequency / 50);
    p.set_ctl(ENABLE);
    let start = v.now();
    hvc(asyncpf_contract::psci::CPU_SUSPEND_64 as u64, [0; 3]);
    let slept_ms = (v.now() - start) * 1000 / frequency;
    let woken_by = sysreg!(read "icc_hppir1_el1") & 0xff_ffff;
    let _ = becomes_pending(PHYS_TIMER) && acknowledge() == PHYS_TIMER;
    p.set_ctl(0);
    checks[8] = (
        "a suspend after disabling a pending timer sleeps until the next interrupt",
        pending_before && slept_ms >= 15 && woken_by != VIRT_TIMER,
    );
    if !checks[8].1 {
        env.println(format_args!(
            "timer probe: suspend: pending before {pending_before}, slept {slept_ms} ms, then INTID {woken_by} pending"
        ));
    }

    let passed = checks.iter().filter(|(_, ok)| *ok).count();
    for (name, ok) in checks {
        if !ok {
            env.println(format_args!("timer probe: FAILED: {name}"));
        }
    }
    env.println(format_args!("timer probe: {passed} of {} checks passed", checks.len()));
    env.system_off()
}

probe!(timer);
