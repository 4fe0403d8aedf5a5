//! The initrd probe: the initial RAM disk (`--initrd`) is in guest RAM where `/chosen`'s
//! `linux,initrd-start` and `linux,initrd-end` say, byte for byte. The runner passes the file's
//! length and FNV-1a-64 hash as `initrd_len=` and `initrd_fnv=`; the probe prints what it found.
#![no_std]
#![no_main]

use asyncpf_probes::{probe, Env};

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn initrd(env: &Env) -> ! {
    let want_len: u64 = env.arg("initrd_len").and_then(|v| v.parse().ok()).unwrap_or(0);
    let want_fnv = env.arg("initrd_fnv").and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok());
    match env.initrd {
        None => env.println(format_args!("initrd probe: no linux,initrd-start/end in /chosen")),
        Some((start, end)) => {
            // SAFETY: the device tree names [start, end) as the initrd in guest RAM, which the
            // probe only reads (MMU off: physical addresses).
            let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
            let fnv = fnv1a64(bytes);
            let matches = end - start == want_len && Some(fnv) == want_fnv;
            env.println(format_args!(
                "initrd probe: at {start:#x}, {} bytes, fnv {fnv:#018x}, matches the file {matches}",
                end - start
            ));
        }
    }
    env.system_off()
}

probe!(initrd);
