//! The hypervisor's command line: the `key=value` words that the runner passes with QEMU
//! `-append` (QEMU puts them into `/chosen/bootargs`), as specified by
//! `asyncpf_contract::runner` and `docs/abi.md`.
//!
//! ```text
//! vcpus=4 guest_mib=128 image=0x42000000:0x5000 backing_latency_us=50 backing_selftest=256 -- scenario=smp seed=1
//! ```
//!
//! Words are separated by ASCII whitespace. Numbers are decimal or hexadecimal with a `0x`
//! (or `0X`) prefix. Everything after a lone `--` is the guest's command line, passed through
//! verbatim (leading and trailing whitespace trimmed). Each key may be given at most once.

use asyncpf_contract::runner;
use core::fmt;

/// Guest RAM in MiB when `guest_mib` is not given.
pub const DEFAULT_GUEST_MIB: u64 = 128;
/// The accepted range of `guest_mib`: at least enough for a small kernel and its page tables,
/// at most 4 GiB (the size the hypervisor's guest memory map is laid out for).
pub const GUEST_MIB_RANGE: core::ops::RangeInclusive<u64> = 16..=4096;
/// Physical CPUs the hypervisor supports (one vCPU at most per physical CPU).
pub const MAX_CPUS: usize = 8;
/// The accepted range of `backing_latency_us`: up to one second per request (more would only
/// make runs time out; the bound also keeps the tick arithmetic far from overflow).
pub const BACKING_LATENCY_US_RANGE: core::ops::RangeInclusive<u64> = 0..=1_000_000;
/// The accepted range of `resident_mib`: enough frames for a small kernel and its device tree,
/// at most the largest guest.
pub const RESIDENT_MIB_RANGE: core::ops::RangeInclusive<u64> = 4..=4096;
/// `trace_mib`: at least 1 MiB, at most 1 GiB.
pub const TRACE_MIB_RANGE: core::ops::RangeInclusive<u64> = 1..=1024;
/// Most pages `backing_selftest` accepts (1 GiB of disk; the disk's capacity is checked too):
/// the self-test keeps one latency sample per request on the hypervisor's heap.
pub const MAX_BACKING_SELFTEST_PAGES: u64 = 1 << 18;

/// Where the runner placed the guest kernel Image in host physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLocation {
    pub addr: u64,
    pub size: u64,
}

/// The parsed hypervisor options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypOptions<'a> {
    /// Number of vCPUs; `None` means one per physical CPU.
    pub vcpus: Option<usize>,
    /// Guest RAM in MiB, within [`GUEST_MIB_RANGE`].
    pub guest_mib: u64,
    /// The guest kernel Image, if the runner loaded one.
    pub image: Option<ImageLocation>,
    /// An initial RAM disk the runner loaded, if any (same form as `image`).
    pub initrd: Option<ImageLocation>,
    /// `kernel_at=LOAD:ENTRY`: the staged kernel is flat bytes (an ELF or raw binary, not an
    /// `Image`) to load at guest physical address LOAD and enter at ENTRY.
    pub kernel_at: Option<(u64, u64)>,
    /// The guest's own command line (after `--`), possibly empty.
    pub guest_cmdline: &'a str,
    /// Minimum service time of a backing-store request, in microseconds.
    pub backing_latency_us: u64,
    /// Pages the backing-store self-test writes and reads back before the VM starts; 0: none.
    pub backing_selftest: u64,
    /// Host memory for guest RAM in MiB, within [`RESIDENT_MIB_RANGE`]; `Some` pages guest RAM
    /// through the backing store (overcommitted when below `guest_mib`), `None` maps it all.
    pub resident_mib: Option<u64>,
    /// QEMU counts time in instructions (`-icount`): hold virtual time at a late backing
    /// request's deadline until the device has completed it (`icount=1`; default off).
    pub icount: bool,
    /// Check the lock hierarchy at every acquisition (`lockcheck=1`, the default).
    pub lock_check: bool,
    /// MiB of host memory at the top of RAM for the per-fault trace (`trace_mib`, within
    /// [`TRACE_MIB_RANGE`]); 0, the default: no trace. Only a hypervisor built with its
    /// `trace` feature accepts it.
    pub trace_mib: u64,
}

/// What is wrong with a command line. Borrowed strings are the offending words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError<'a> {
    /// A `key=value` word with a key this hypervisor does not know.
    UnknownKey(&'a str),
    /// A word without `=value`, or with an empty value.
    MissingValue(&'a str),
    /// A key given more than once.
    Duplicate(&'a str),
    /// A value that is not a decimal or 0x-hexadecimal number fitting in 64 bits.
    BadNumber { key: &'a str, value: &'a str },
    /// `vcpus=0`.
    ZeroVcpus,
    /// `guest_mib` outside [`GUEST_MIB_RANGE`].
    GuestMibOutOfRange(u64),
    /// `image=` not of the form `ADDR:SIZE`.
    BadImage(&'a str),
    /// `image=` with a zero size or a range that wraps past the end of the address space.
    BadImageRange { addr: u64, size: u64 },
    /// `backing_latency_us` outside [`BACKING_LATENCY_US_RANGE`].
    BackingLatencyOutOfRange(u64),
    /// `backing_selftest` above [`MAX_BACKING_SELFTEST_PAGES`].
    BackingSelftestTooLarge(u64),
    /// `resident_mib` outside [`RESIDENT_MIB_RANGE`].
    ResidentMibOutOfRange(u64),
    /// `trace_mib` outside [`TRACE_MIB_RANGE`].
    TraceMibOutOfRange(u64),
    /// A flag (`icount`, `lockcheck`) other than 0 or 1.
    BadFlag { key: &'a str, value: &'a str },
}

impl fmt::Display for OptionsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptionsError::UnknownKey(key) => write!(
                f,
                "unknown option `{key}` (known: {}, {}, {}, {}, {}, {}, {}, {}, {}; put guest options after `{}`)",
                runner::OPT_VCPUS,
                runner::OPT_GUEST_MIB,
                runner::OPT_RESIDENT_MIB,
                runner::OPT_IMAGE,
                runner::OPT_INITRD,
                runner::OPT_KERNEL_AT,
                runner::OPT_BACKING_LATENCY_US,
                runner::OPT_BACKING_SELFTEST,
                runner::OPT_ICOUNT,
                runner::GUEST_CMDLINE_SEPARATOR
            ),
            OptionsError::MissingValue(word) => {
                write!(f, "option `{word}` has no value (expected `key=value`)")
            }
            OptionsError::Duplicate(key) => write!(f, "option `{key}` is given more than once"),
            OptionsError::BadNumber { key, value } => {
                write!(f, "option `{key}`: `{value}` is not a number (decimal, or hexadecimal with 0x)")
            }
            OptionsError::ZeroVcpus => {
                write!(f, "option `{}`: must be at least 1", runner::OPT_VCPUS)
            }
            OptionsError::GuestMibOutOfRange(mib) => write!(
                f,
                "option `{}`: {mib} MiB is outside the supported range {}..={} MiB",
                runner::OPT_GUEST_MIB,
                GUEST_MIB_RANGE.start(),
                GUEST_MIB_RANGE.end()
            ),
            OptionsError::BadImage(value) => {
                write!(f, "option `{}`: `{value}` is not of the form ADDR:SIZE", runner::OPT_IMAGE)
            }
            OptionsError::BadImageRange { addr, size } => write!(
                f,
                "option `{}`: image at {addr:#x} of size {size:#x} is empty or wraps past the end \
                 of the address space",
                runner::OPT_IMAGE
            ),
            OptionsError::BackingLatencyOutOfRange(us) => write!(
                f,
                "option `{}`: {us} µs is outside the supported range {}..={} µs",
                runner::OPT_BACKING_LATENCY_US,
                BACKING_LATENCY_US_RANGE.start(),
                BACKING_LATENCY_US_RANGE.end()
            ),
            OptionsError::BackingSelftestTooLarge(pages) => write!(
                f,
                "option `{}`: {pages} pages is more than the {MAX_BACKING_SELFTEST_PAGES} supported",
                runner::OPT_BACKING_SELFTEST
            ),
            OptionsError::ResidentMibOutOfRange(mib) => write!(
                f,
                "option `{}`: {mib} MiB is outside the supported range {}..={} MiB",
                runner::OPT_RESIDENT_MIB,
                RESIDENT_MIB_RANGE.start(),
                RESIDENT_MIB_RANGE.end()
            ),
            OptionsError::TraceMibOutOfRange(mib) => write!(
                f,
                "option `{}`: {mib} MiB is outside the supported range {}..={} MiB",
                runner::OPT_TRACE_MIB,
                TRACE_MIB_RANGE.start(),
                TRACE_MIB_RANGE.end()
            ),
            OptionsError::BadFlag { key, value } => write!(f, "option `{key}`: `{value}` is neither 0 nor 1"),
        }
    }
}

/// Parses a decimal or `0x`-hexadecimal number.
fn parse_number<'a>(key: &'a str, value: &'a str) -> Result<u64, OptionsError<'a>> {
    let bad = OptionsError::BadNumber { key, value };
    let (digits, radix) = match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (value, 10),
    };
    // from_str_radix accepts a leading '+', which is not one of our number forms.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad);
    }
    u64::from_str_radix(digits, radix).map_err(|_| bad)
}

fn parse_image<'a>(key: &'a str, value: &'a str) -> Result<ImageLocation, OptionsError<'a>> {
    let (addr, size) = value.split_once(':').ok_or(OptionsError::BadImage(value))?;
    let addr = parse_number(key, addr)?;
    let size = parse_number(key, size)?;
    if size == 0 || addr.checked_add(size).is_none() {
        return Err(OptionsError::BadImageRange { addr, size });
    }
    Ok(ImageLocation { addr, size })
}

/// Fails with [`OptionsError::Duplicate`] if `slot` is already set.
fn set_once<'a, T>(slot: &mut Option<T>, key: &'a str, value: T) -> Result<(), OptionsError<'a>> {
    if slot.replace(value).is_some() {
        return Err(OptionsError::Duplicate(key));
    }
    Ok(())
}

/// Parses the hypervisor command line.
pub fn parse(cmdline: &str) -> Result<HypOptions<'_>, OptionsError<'_>> {
    let mut vcpus = None;
    let mut guest_mib = None;
    let mut image = None;
    let mut initrd = None;
    let mut kernel_at = None;
    let mut backing_latency_us = None;
    let mut backing_selftest = None;
    let mut resident_mib = None;
    let mut icount = None;
    let mut lock_check = None;
    let mut trace_mib = None;
    let mut guest_cmdline = "";

    let mut rest = cmdline;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let end = rest.find(|c: char| c.is_ascii_whitespace()).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        rest = after;
        if word == runner::GUEST_CMDLINE_SEPARATOR {
            guest_cmdline = rest.trim_matches(|c: char| c.is_ascii_whitespace());
            break;
        }
        let (key, value) = match word.split_once('=') {
            Some((key, value)) if !value.is_empty() => (key, value),
            _ => return Err(OptionsError::MissingValue(word)),
        };
        match key {
            runner::OPT_VCPUS => {
                let n = parse_number(key, value)?;
                let n = usize::try_from(n).map_err(|_| OptionsError::BadNumber { key, value })?;
                if n == 0 {
                    return Err(OptionsError::ZeroVcpus);
                }
                set_once(&mut vcpus, key, n)?;
            }
            runner::OPT_GUEST_MIB => {
                let mib = parse_number(key, value)?;
                if !GUEST_MIB_RANGE.contains(&mib) {
                    return Err(OptionsError::GuestMibOutOfRange(mib));
                }
                set_once(&mut guest_mib, key, mib)?;
            }
            runner::OPT_IMAGE => set_once(&mut image, key, parse_image(key, value)?)?,
            runner::OPT_INITRD => set_once(&mut initrd, key, parse_image(key, value)?)?,
            runner::OPT_KERNEL_AT => {
                let (load, entry) = value.split_once(':').ok_or(OptionsError::BadImage(value))?;
                set_once(&mut kernel_at, key, (parse_number(key, load)?, parse_number(key, entry)?))?;
            }
            runner::OPT_BACKING_LATENCY_US => {
                let us = parse_number(key, value)?;
                if !BACKING_LATENCY_US_RANGE.contains(&us) {
                    return Err(OptionsError::BackingLatencyOutOfRange(us));
                }
                set_once(&mut backing_latency_us, key, us)?;
            }
            runner::OPT_BACKING_SELFTEST => {
                let pages = parse_number(key, value)?;
                if pages > MAX_BACKING_SELFTEST_PAGES {
                    return Err(OptionsError::BackingSelftestTooLarge(pages));
                }
                set_once(&mut backing_selftest, key, pages)?;
            }
            runner::OPT_RESIDENT_MIB => {
                let mib = parse_number(key, value)?;
                if !RESIDENT_MIB_RANGE.contains(&mib) {
                    return Err(OptionsError::ResidentMibOutOfRange(mib));
                }
                set_once(&mut resident_mib, key, mib)?;
            }
            runner::OPT_ICOUNT => set_once(&mut icount, key, parse_flag(key, value)?)?,
            runner::OPT_LOCK_CHECK => set_once(&mut lock_check, key, parse_flag(key, value)?)?,
            runner::OPT_TRACE_MIB => {
                let mib = parse_number(key, value)?;
                if !TRACE_MIB_RANGE.contains(&mib) {
                    return Err(OptionsError::TraceMibOutOfRange(mib));
                }
                set_once(&mut trace_mib, key, mib)?;
            }
            _ => return Err(OptionsError::UnknownKey(key)),
        }
    }
    Ok(HypOptions {
        vcpus,
        guest_mib: guest_mib.unwrap_or(DEFAULT_GUEST_MIB),
        image,
        initrd,
        kernel_at,
        guest_cmdline,
        backing_latency_us: backing_latency_us.unwrap_or(runner::DEFAULT_BACKING_LATENCY_US),
        backing_selftest: backing_selftest.unwrap_or(0),
        resident_mib,
        icount: icount.unwrap_or(false),
        lock_check: lock_check.unwrap_or(true),
        trace_mib: trace_mib.unwrap_or(0),
    })
}

/// A `0`/`1` flag.
fn parse_flag<'a>(key: &'a str, value: &'a str) -> Result<bool, OptionsError<'a>> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(OptionsError::BadFlag { key, value }),
    }
}

impl HypOptions<'_> {
    /// Guest RAM in bytes.
    pub fn guest_ram_bytes(&self) -> u64 {
        self.guest_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    #[test]
    fn full_example() {
        let o = parse("vcpus=4 guest_mib=128 image=0x42000000:0x5000 -- scenario=smp seed=1").unwrap();
        assert_eq!(o.vcpus, Some(4));
        assert_eq!(o.guest_mib, 128);
        assert_eq!(o.guest_ram_bytes(), 128 << 20);
        assert_eq!(o.image, Some(ImageLocation { addr: 0x4200_0000, size: 0x5000 }));
        assert_eq!(o.initrd, None);
        assert_eq!(o.guest_cmdline, "scenario=smp seed=1");
        let o = parse("image=0x42000000:0x5000 initrd=0x46000000:0x1234").unwrap();
        assert_eq!(o.initrd, Some(ImageLocation { addr: 0x4600_0000, size: 0x1234 }));
        assert!(matches!(parse("initrd=0x46000000"), Err(OptionsError::BadImage(_))));
        assert!(matches!(parse("initrd=1:0"), Err(OptionsError::BadImageRange { .. })));
        assert!(matches!(parse("initrd=1:2 initrd=1:2"), Err(OptionsError::Duplicate("initrd"))));
        assert_eq!(parse("kernel_at=0x40080000:0x40080000").unwrap().kernel_at, Some((0x4008_0000, 0x4008_0000)));
        assert!(matches!(parse("kernel_at=0x40080000"), Err(OptionsError::BadImage(_))));
    }

    #[test]
    fn defaults() {
        for empty in ["", "   ", "\t\n"] {
            let o = parse(empty).unwrap();
            assert_eq!(
                o,
                HypOptions {
                    vcpus: None,
                    guest_mib: DEFAULT_GUEST_MIB,
                    image: None,
                    initrd: None,
                    kernel_at: None,
                    guest_cmdline: "",
                    backing_latency_us: runner::DEFAULT_BACKING_LATENCY_US,
                    backing_selftest: 0,
                    resident_mib: None,
                    icount: false,
                    lock_check: true,
                    trace_mib: 0,
                }
            );
        }
    }

    #[test]
    fn guest_cmdline_is_verbatim_after_separator() {
        let o = parse("  --   console=ttyAMA0  a=b  -- x  ").unwrap();
        assert_eq!(o.guest_cmdline, "console=ttyAMA0  a=b  -- x");
        assert_eq!(o.vcpus, None);
        assert_eq!(parse("vcpus=2 --").unwrap().guest_cmdline, "");
        // Unknown keys after the separator are the guest's business.
        assert_eq!(parse("-- vcpus=0 bogus").unwrap().guest_cmdline, "vcpus=0 bogus");
        // "--x" is not the separator.
        assert_eq!(parse("--x"), Err(OptionsError::MissingValue("--x")));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("guest_mib=0x100").unwrap().guest_mib, 256);
        assert_eq!(parse("guest_mib=0X10").unwrap().guest_mib, 16);
        assert_eq!(parse("vcpus=8").unwrap().vcpus, Some(8));
        for bad in ["x", "0x", "+4", "-1", "4k", "0xg", "1_0", "99999999999999999999"] {
            let line = alloc::format!("vcpus={bad}");
            assert_eq!(parse(&line), Err(OptionsError::BadNumber { key: "vcpus", value: bad }));
        }
    }

    #[test]
    fn backing_options() {
        let o = parse("backing_latency_us=200 backing_selftest=0x100").unwrap();
        assert_eq!((o.backing_latency_us, o.backing_selftest), (200, 256));
        assert_eq!(parse("backing_latency_us=0").unwrap().backing_latency_us, 0);
        assert_eq!(parse("backing_latency_us=1000001"), Err(OptionsError::BackingLatencyOutOfRange(1_000_001)));
        assert_eq!(parse("backing_selftest=262145"), Err(OptionsError::BackingSelftestTooLarge(262_145)));
        assert_eq!(parse("backing_selftest=1 backing_selftest=2"), Err(OptionsError::Duplicate("backing_selftest")));
        let text = parse("backing_latency_us=2000000").unwrap_err().to_string();
        assert!(text.contains("backing_latency_us") && text.contains("0..=1000000"), "{text}");
        let text = parse("backing_selftest=99999999").unwrap_err().to_string();
        assert!(text.contains("backing_selftest"), "{text}");
    }

    #[test]
    fn resident_mib() {
        assert_eq!(parse("guest_mib=256 resident_mib=32").unwrap().resident_mib, Some(32));
        assert_eq!(parse("resident_mib=4").unwrap().resident_mib, Some(4));
        assert_eq!(parse("resident_mib=3"), Err(OptionsError::ResidentMibOutOfRange(3)));
        assert_eq!(parse("resident_mib=4097"), Err(OptionsError::ResidentMibOutOfRange(4097)));
        assert_eq!(parse("resident_mib=8 resident_mib=8"), Err(OptionsError::Duplicate("resident_mib")));
        let text = parse("resident_mib=1").unwrap_err().to_string();
        assert!(text.contains("resident_mib") && text.contains("4..=4096"), "{text}");
    }

    #[test]
    fn trace_mib() {
        assert_eq!(parse("").unwrap().trace_mib, 0);
        assert_eq!(parse("trace_mib=64").unwrap().trace_mib, 64);
        assert_eq!(parse("trace_mib=0"), Err(OptionsError::TraceMibOutOfRange(0)));
        assert_eq!(parse("trace_mib=1025"), Err(OptionsError::TraceMibOutOfRange(1025)));
    }

    #[test]
    fn icount() {
        assert!(parse("icount=1").unwrap().icount);
        assert!(!parse("icount=0").unwrap().icount);
        for bad in ["2", "yes", "0x1", "01"] {
            let line = alloc::format!("icount={bad}");
            assert_eq!(parse(&line), Err(OptionsError::BadFlag { key: "icount", value: bad }));
        }
    }

    #[test]
    fn lock_check() {
        assert!(parse("").unwrap().lock_check, "checked by default");
        assert!(parse("lockcheck=1").unwrap().lock_check);
        assert!(!parse("lockcheck=0").unwrap().lock_check);
        assert!(matches!(parse("lockcheck=0 lockcheck=1"), Err(OptionsError::Duplicate(_))));
        for bad in ["2", "off", "true"] {
            let line = alloc::format!("lockcheck={bad}");
            assert_eq!(parse(&line), Err(OptionsError::BadFlag { key: "lockcheck", value: bad }));
        }
        assert_eq!(parse("icount=1 icount=1"), Err(OptionsError::Duplicate("icount")));
        assert!(parse("icount=3").unwrap_err().to_string().contains("neither 0 nor 1"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse("cpus=4"), Err(OptionsError::UnknownKey("cpus")));
        assert_eq!(parse("vcpus"), Err(OptionsError::MissingValue("vcpus")));
        assert_eq!(parse("vcpus="), Err(OptionsError::MissingValue("vcpus=")));
        assert_eq!(parse("vcpus=0"), Err(OptionsError::ZeroVcpus));
        assert_eq!(parse("vcpus=1 vcpus=2"), Err(OptionsError::Duplicate("vcpus")));
        assert_eq!(parse("guest_mib=15"), Err(OptionsError::GuestMibOutOfRange(15)));
        assert_eq!(parse("guest_mib=4097"), Err(OptionsError::GuestMibOutOfRange(4097)));
        assert_eq!(parse("guest_mib=16").unwrap().guest_mib, 16);
        assert_eq!(parse("guest_mib=4096").unwrap().guest_mib, 4096);
        assert_eq!(parse("image=0x1000"), Err(OptionsError::BadImage("0x1000")));
        assert_eq!(parse("image=0x1000:zz"), Err(OptionsError::BadNumber { key: "image", value: "zz" }));
        assert_eq!(parse("image=0x1000:0"), Err(OptionsError::BadImageRange { addr: 0x1000, size: 0 }));
        assert_eq!(parse("image=0xffffffffffffffff:2"), Err(OptionsError::BadImageRange { addr: u64::MAX, size: 2 }));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let text = parse("cpus=4").unwrap_err().to_string();
        assert!(text.contains("unknown option `cpus`") && text.contains("vcpus"), "{text}");
        let text = parse("guest_mib=8").unwrap_err().to_string();
        assert!(text.contains("8 MiB") && text.contains("16..=4096"), "{text}");
        let text = parse("image=1:x").unwrap_err().to_string();
        assert!(text.contains("`x` is not a number"), "{text}");
        let text = parse("image=5").unwrap_err().to_string();
        assert!(text.contains("ADDR:SIZE"), "{text}");
        assert!(parse("vcpus=0").unwrap_err().to_string().contains("at least 1"));
        assert!(parse("vcpus").unwrap_err().to_string().contains("no value"));
        assert!(parse("vcpus=1 vcpus=1").unwrap_err().to_string().contains("more than once"));
        assert!(parse("image=0:0").unwrap_err().to_string().contains("empty"));
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,64}") {
            let _ = parse(&line);
        }

        #[test]
        fn round_trip(vcpus in 1usize..1024, mib in 16u64..=4096, addr in 0u64..1 << 48,
                      size in 1u64..1 << 32, hex in any::<bool>(), guest in "[a-z=0-9 ]{0,20}") {
            let line = if hex {
                alloc::format!("image={addr:#x}:{size:#x} guest_mib={mib:#x} vcpus={vcpus} -- {guest}")
            } else {
                alloc::format!("vcpus={vcpus}\tguest_mib={mib}\nimage={addr}:{size} -- {guest}")
            };
            let o = parse(&line).unwrap();
            prop_assert_eq!(o.vcpus, Some(vcpus));
            prop_assert_eq!(o.guest_mib, mib);
            prop_assert_eq!(o.image, Some(ImageLocation { addr, size }));
            prop_assert_eq!(o.guest_cmdline, guest.trim());
        }
    }
}
