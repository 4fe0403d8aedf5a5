//! The guest command line (`/chosen/bootargs`): `scenario=NAME seed=N apf=on|off`, for the
//! `overcommit` scenario `ws_mib=M ops=K tasks=T`, for `hostile` `calls=N` (and `ws_mib=M`), for
//! `hotplug` `rounds=N` (and `ws_mib=M`: a paging load); other words (and other keys) are ignored, so that a command line
//! written for Linux or for another scenario still boots.

use asyncpf_contract::runner::{GUEST_OPT_SCENARIO, GUEST_OPT_SEED};

/// The scenario run when the command line names none.
pub const DEFAULT_SCENARIO: &str = "smp";
/// The seed used when the command line gives none.
pub const DEFAULT_SEED: u64 = 1;
/// Key: the `overcommit` working set in MiB (> 0; default: all free RAM).
pub const OPT_WS_MIB: &str = "ws_mib";
/// Key: the `overcommit` random read/write operations over all tasks (default: one per
/// working-set page).
pub const OPT_OPS: &str = "ops";
/// Key: the `hostile` scenario's aimed and blind calls over all CPUs (default 10,000).
pub const OPT_CALLS: &str = "calls";
/// Key: the `overcommit` workload's tasks per vCPU (1 to 16; default 3): how many page-ins of
/// one vCPU can overlap with asynchronous page faults.
pub const OPT_TASKS: &str = "tasks";
/// Most `tasks=` per vCPU (the hypervisor's APF token slots per vCPU).
pub const MAX_TASKS_PER_CPU: u64 = 16;
/// Key: `apf_pin=off` keeps the guest from pinning its kernel image with APF_PIN when it
/// enables asynchronous page faults (default on).
pub const OPT_APF_PIN: &str = "apf_pin";
/// Key: `apf=on` makes every CPU enable asynchronous page faults (docs/abi.md §8) before the
/// scenario starts, when the hypervisor offers them; `off` (the default) leaves them off.
pub const OPT_APF: &str = "apf";
/// Key: `apf_always=on` enables them with ALWAYS_DELIVER (docs/abi.md §8.1): every fault the
/// other rules allow is delivered, whatever the hypervisor measures (the tests of the protocol's
/// paths, whose host-timed measurements would otherwise depend on the host's load).
pub const OPT_APF_ALWAYS: &str = "apf_always";
/// Key: the `hotplug` scenario's rounds (1 to [`MAX_ROUNDS`]; default 3).
pub const OPT_ROUNDS: &str = "rounds";
/// The most `hotplug` rounds.
pub const MAX_ROUNDS: u64 = 16;

/// The options the guest understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    pub scenario: &'a str,
    pub seed: u64,
    pub ws_mib: Option<u64>,
    pub ops: Option<u64>,
    pub apf: bool,
    pub calls: Option<u64>,
    pub tasks: Option<u64>,
    pub rounds: Option<u64>,
    pub apf_pin: bool,
    pub apf_always: bool,
}

/// A malformed option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    BadSeed(&'a str),
    BadWsMib(&'a str),
    BadOps(&'a str),
    BadApf(&'a str),
    BadCalls(&'a str),
    BadTasks(&'a str),
    BadRounds(&'a str),
    BadApfPin(&'a str),
    BadApfAlways(&'a str),
}

/// Parses the command line; later words override earlier ones.
pub fn parse(cmdline: &str) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut opts = Options {
        scenario: DEFAULT_SCENARIO,
        seed: DEFAULT_SEED,
        ws_mib: None,
        ops: None,
        apf: false,
        calls: None,
        tasks: None,
        rounds: None,
        apf_pin: true,
        apf_always: false,
    };
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else { continue };
        match key {
            GUEST_OPT_SCENARIO => opts.scenario = value,
            GUEST_OPT_SEED => opts.seed = parse_u64(value).ok_or(CmdlineError::BadSeed(value))?,
            OPT_WS_MIB => {
                let mib = parse_u64(value).filter(|&m| m > 0 && m.checked_mul(1 << 20).is_some());
                opts.ws_mib = Some(mib.ok_or(CmdlineError::BadWsMib(value))?);
            }
            OPT_OPS => opts.ops = Some(parse_u64(value).ok_or(CmdlineError::BadOps(value))?),
            OPT_CALLS => opts.calls = Some(parse_u64(value).ok_or(CmdlineError::BadCalls(value))?),
            OPT_TASKS => {
                let tasks = parse_u64(value).filter(|t| (1..=MAX_TASKS_PER_CPU).contains(t));
                opts.tasks = Some(tasks.ok_or(CmdlineError::BadTasks(value))?);
            }
            OPT_APF_PIN => opts.apf_pin = on_off(value).ok_or(CmdlineError::BadApfPin(value))?,
            OPT_APF => opts.apf = on_off(value).ok_or(CmdlineError::BadApf(value))?,
            OPT_APF_ALWAYS => opts.apf_always = on_off(value).ok_or(CmdlineError::BadApfAlways(value))?,
            OPT_ROUNDS => {
                let rounds = parse_u64(value).filter(|r| (1..=MAX_ROUNDS).contains(r));
                opts.rounds = Some(rounds.ok_or(CmdlineError::BadRounds(value))?);
            }
            _ => {}
        }
    }
    Ok(opts)
}

/// `on` or `off`.
fn on_off(value: &str) -> Option<bool> {
    match value {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
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
        let defaults = Options {
            scenario: "smp",
            seed: 1,
            ws_mib: None,
            ops: None,
            apf: false,
            calls: None,
            tasks: None,
            rounds: None,
            apf_pin: true,
            apf_always: false,
        };
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(
            parse("console=ttyAMA0 scenario=ipi seed=0x10 noise").unwrap(),
            Options { scenario: "ipi", seed: 16, ..defaults }
        );
        assert_eq!(parse("seed=7 seed=8").unwrap().seed, 8);
        assert_eq!(parse("seed=x"), Err(CmdlineError::BadSeed("x")));
    }

    #[test]
    fn overcommit_keys() {
        let opts = parse("scenario=overcommit seed=3 ws_mib=32 ops=0x100").unwrap();
        assert_eq!(
            opts,
            Options {
                scenario: "overcommit",
                seed: 3,
                ws_mib: Some(32),
                ops: Some(256),
                apf: false,
                calls: None,
                tasks: None,
                rounds: None,
                apf_pin: true,
                apf_always: false
            }
        );
        assert!(parse("apf=on").unwrap().apf);
        assert!(!parse("apf=on apf=off").unwrap().apf);
        assert!(parse("apf_always=on").unwrap().apf_always);
        assert!(!parse("").unwrap().apf_always);
        assert_eq!(parse("apf_always=yes"), Err(CmdlineError::BadApfAlways("yes")));
        assert_eq!(parse("apf=1"), Err(CmdlineError::BadApf("1")));
        assert_eq!(parse("ws_mib=8 ws_mib=16").unwrap().ws_mib, Some(16));
        assert_eq!(parse("ops=0").unwrap().ops, Some(0));
        assert_eq!(parse("ws_mib=0"), Err(CmdlineError::BadWsMib("0")));
        assert_eq!(parse("ws_mib=-1"), Err(CmdlineError::BadWsMib("-1")));
        assert_eq!(parse("ws_mib=0x100000000000"), Err(CmdlineError::BadWsMib("0x100000000000")));
        assert_eq!(parse("ops=many"), Err(CmdlineError::BadOps("many")));
        assert_eq!(parse("scenario=hostile calls=0x10 calls=250000").unwrap().calls, Some(250_000));
        assert_eq!(parse("calls=lots"), Err(CmdlineError::BadCalls("lots")));
        assert_eq!(parse("tasks=8").unwrap().tasks, Some(8));
        assert!(!parse("apf_pin=off").unwrap().apf_pin);
        assert_eq!(parse("apf_pin=no"), Err(CmdlineError::BadApfPin("no")));
        assert_eq!(parse("tasks=0"), Err(CmdlineError::BadTasks("0")));
        assert_eq!(parse("tasks=17"), Err(CmdlineError::BadTasks("17")));
        assert_eq!(parse("rounds=12").unwrap().rounds, Some(12));
        assert_eq!(parse("rounds=0"), Err(CmdlineError::BadRounds("0")));
        assert_eq!(parse("rounds=17"), Err(CmdlineError::BadRounds("17")));
        // Unknown keys stay ignored, as before.
        assert_eq!(parse("ws_gib=1 scenario=smp").unwrap().ws_mib, None);
    }
}
