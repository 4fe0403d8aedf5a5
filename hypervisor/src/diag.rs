//! Diagnostics a guest can provoke: every one is counted by kind and printed only within the
//! limits of [`asyncpf_core::ratelimit`], so no guest can flood the console. The counts are in
//! the hypervisor's result (`diagnostics`).

use core::fmt::{self, Write};

use asyncpf_core::ratelimit::LogLimiter;

/// The kinds of guest-provoked diagnostics.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A stage-2 fault the pager does not handle (an abort is injected).
    Stage2Other,
    /// A stage-2 abort on guest RAM that is mapped (an abort is injected).
    MappedRamAbort,
    /// The overcommit engine refused a fault (an abort is injected).
    PagerRefusal,
    /// A page could not be pinned (e.g. for an APF record).
    PinFailure,
    /// A backing-store request failed (injected errors, a bad disk).
    IoError,
    /// The guest wrote a bad ring_tail into its APF record.
    ApfRingError,
    /// A page_not_present the SDEI dispatcher refused (resolved synchronously).
    SdeiRefusal,
    /// An SError taken from the guest (a virtual SError is injected).
    GuestSError,
    /// Should not happen, but is reached through guest actions: logged, bounded, counted.
    Internal,
}

const KINDS: usize = Kind::Internal as usize + 1;
const NAMES: [&str; KINDS] = [
    "stage2_other",
    "mapped_ram_abort",
    "pager_refusal",
    "pin_failure",
    "io_error",
    "apf_ring_error",
    "sdei_refusal",
    "guest_serror",
    "internal",
];

static LIMITERS: [LogLimiter; KINDS] = [const { LogLimiter::new() }; KINDS];

/// Count a diagnostic of `kind` and print it if the limit allows.
pub fn report(kind: Kind, args: fmt::Arguments) {
    if let Some(admitted) = LIMITERS[kind as usize].admit() {
        if admitted.after_suppressed {
            crate::hyp_println!(
                "{args} [{} #{}; only powers of two are logged now]",
                NAMES[kind as usize],
                admitted.occurrence
            );
        } else {
            crate::hyp_println!("{args}");
        }
    }
}

/// `"diagnostics":{...}`: how often each kind occurred (printed or not).
pub fn write_json(out: &mut impl Write) -> fmt::Result {
    out.write_char('{')?;
    for (i, (name, limiter)) in NAMES.iter().zip(LIMITERS.iter()).enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write!(out, "\"{name}\":{}", limiter.count())?;
    }
    out.write_char('}')
}

/// `guest_diag!(Kind, "format", args...)`: a guest-provoked diagnostic, rate-limited.
#[macro_export]
macro_rules! guest_diag {
    ($kind:ident, $($arg:tt)*) => {
        $crate::diag::report($crate::diag::Kind::$kind, format_args!($($arg)*))
    };
}
