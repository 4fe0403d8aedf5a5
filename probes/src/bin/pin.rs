//! The pin probe: APF_PIN's answers (docs/abi.md §8.1) to bad and good requests. It prints one
//! line: `pin probe: misaligned A, empty B, below RAM C, past RAM D, wrapping E, whole RAM F,
//! good G, again H`. With paged RAM the bad ones are INVALID_PARAMETER (-3), the whole of RAM is
//! over the quota (OUT_OF_QUOTA, -10), the good request and its repetition SUCCESS (0); without
//! paging every one is NOT_SUPPORTED (-1).
#![no_std]
#![no_main]

use asyncpf_contract::apf;
use asyncpf_probes::{hvc, probe, Env};

const RAM: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
/// Well above the probe, inside 64 MiB of guest RAM.
const GOOD: u64 = 0x4200_0000;

fn pin(ipa: u64, bytes: u64) -> i64 {
    hvc(apf::PIN as u64, [ipa, bytes, 0]) as i64
}

fn pin_probe(env: &Env) -> ! {
    let ram_bytes: u64 = env.arg("ram_mib").and_then(|v| v.parse().ok()).unwrap_or(64) << 20;
    let answers = [
        ("misaligned", pin(GOOD + 8, PAGE)),
        ("empty", pin(GOOD, 0)),
        ("below RAM", pin(RAM - PAGE, 2 * PAGE)),
        ("past RAM", pin(RAM + ram_bytes - PAGE, 2 * PAGE)),
        ("wrapping", pin(u64::MAX - PAGE + 1, PAGE)),
        ("whole RAM", pin(RAM, ram_bytes)),
        ("good", pin(GOOD, 2 * PAGE)),
        ("again", pin(GOOD, 2 * PAGE)),
    ];
    struct Line<'a>(&'a [(&'a str, i64)]);
    impl core::fmt::Display for Line<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (i, (name, answer)) in self.0.iter().enumerate() {
                write!(f, "{}{name} {answer}", if i == 0 { "" } else { ", " })?;
            }
            Ok(())
        }
    }
    env.println(format_args!("pin probe: {}", Line(&answers)));
    env.system_off()
}

probe!(pin_probe);
