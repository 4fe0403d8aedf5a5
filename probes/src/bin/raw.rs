//! The raw probe: booted as a raw binary (`--kernel-kind raw`), it must run where QEMU would
//! put one for an AArch64 CPU, RAM + 0x80000, entered at its first byte. It is linked there
//! (probes/link-raw.ld), so its absolute addresses (the device tree parser's tables, the strings
//! it prints) only work if it was loaded there; it prints where it runs and powers off.
#![no_std]
#![no_main]

use asyncpf_probes::{probe, Env};

fn raw(env: &Env) -> ! {
    let here = raw as *const () as usize;
    env.println(format_args!(
        "raw probe: running at {here:#x}, device tree read {}",
        if env.gic.is_some() { "yes" } else { "no" }
    ));
    env.system_off()
}

probe!(raw);
