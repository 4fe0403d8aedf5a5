//! The flood probe: provokes the hypervisor's guest-triggerable diagnostics in a loop, to show
//! that its console stays bounded. Each round enables asynchronous page faults with a record,
//! writes a garbage `ring_tail` into it, and disables them again (APF_DISABLE posts a WAKE_ALL,
//! which finds the bad tail: a ring error), then makes an access that is neither RAM nor a
//! device (an injected external abort). `rounds=N` on the command line (default 2000).
//! Needs paged guest RAM (`--resident-mib`), where the APF calls are answered.
#![no_std]
#![no_main]

use asyncpf_contract::{apf, smccc};
use asyncpf_probes::{exceptions, hvc, hvc4, probe, Env};

/// Where the record goes: 16 MiB into guest RAM (well above the probe), granule-aligned.
const RECORD_IPA: u64 = 0x4100_0000;
/// A guest physical address with nothing behind it on `virt` (between the GIC and the UART).
const NOTHING_THERE: u64 = 0x0880_0000;

fn flood(env: &Env) -> ! {
    let rounds: u64 = env.arg("rounds").and_then(|r| r.parse().ok()).unwrap_or(2000);
    let [status, granule, ..] = hvc4(apf::FEATURES as u64, [0; 3]);
    if status != smccc::SUCCESS as u64 {
        env.println(format_args!("flood probe: APF_FEATURES answered {status:#x}; is guest RAM paged?"));
        env.system_off();
    }
    let tail = (RECORD_IPA + apf::offset_ring_tail(granule)) as *mut u64;
    let (mut enabled, mut disabled) = (0u64, 0u64);
    let aborts_before = exceptions();
    for round in 0..rounds {
        enabled += u64::from(hvc(apf::ENABLE as u64, [RECORD_IPA, 0, 0]) == smccc::SUCCESS as u64);
        // SAFETY: RECORD_IPA is guest RAM that nothing else of the probe uses (MMU off, so the
        // address is physical); the hypervisor reads the field, never trusts it.
        unsafe { tail.write_volatile(0x5eed_0000_0000 + round) };
        disabled += u64::from(hvc(apf::DISABLE as u64, [0; 3]) == smccc::SUCCESS as u64);
        // SAFETY: nothing is mapped there: the hypervisor injects an external abort, which the
        // probe's vectors count and step over; the load's value is not used.
        unsafe { (NOTHING_THERE as *const u32).read_volatile() };
    }
    let aborts = exceptions() - aborts_before;
    env.println(format_args!(
        "flood probe: rounds {rounds}, enabled {enabled}, disabled {disabled}, aborts caught {aborts}"
    ));
    env.system_off()
}

probe!(flood);
