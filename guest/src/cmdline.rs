//! The guest command line (`/chosen/bootargs`): `scenario=NAME seed=N`, other words ignored.

use asyncpf_contract::runner::{GUEST_OPT_SCENARIO, GUEST_OPT_SEED};

/// The scenario run when the command line names none.
pub const DEFAULT_SCENARIO: &str = "smp";
/// The seed used when the command line gives none.
pub const DEFAULT_SEED: u64 = 1;

/// The options the guest understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    pub scenario: &'a str,
    pub seed: u64,
}

/// A malformed option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    BadSeed(&'a str),
}

/// Parses the command line; later words override earlier ones.
pub fn parse(cmdline: &str) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut opts = Options { scenario: DEFAULT_SCENARIO, seed: DEFAULT_SEED };
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else { continue };
        if key == GUEST_OPT_SCENARIO {
            opts.scenario = value;
        } else if key == GUEST_OPT_SEED {
            opts.seed = parse_u64(value).ok_or(CmdlineError::BadSeed(value))?;
        }
    }
    Ok(opts)
}

/// Decimal, or hexadecimal with a `0x` prefix.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse("").unwrap(), Options { scenario: "smp", seed: 1 });
        assert_eq!(
            parse("console=ttyAMA0 scenario=ipi seed=0x10 noise").unwrap(),
            Options { scenario: "ipi", seed: 16 }
        );
        assert_eq!(parse("seed=7 seed=8").unwrap().seed, 8);
        assert_eq!(parse("seed=x"), Err(CmdlineError::BadSeed("x")));
    }
}
