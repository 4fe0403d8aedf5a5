//! What a run does, chosen by `scenario=NAME` on the command line; each scenario ends the run
//! with its `@result` line.

pub mod apfabi;
pub mod hostile;
pub mod hotplug;
pub mod ipi;
pub mod overcommit;
pub mod smp;

use crate::dt::Platform;
use crate::sync::BootOnce;
use crate::{report, sched};
use asyncpf_guest::cmdline;

static PLATFORM: BootOnce<Platform> = BootOnce::new();
static OPTIONS: BootOnce<cmdline::Options<'static>> = BootOnce::new();

/// Keeps the platform description for the scenarios.
pub fn set_platform(platform: Platform) {
    PLATFORM.set(platform);
}

/// The platform description from the device tree.
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("platform recorded at boot")
}

/// The parsed command line.
pub fn options() -> &'static cmdline::Options<'static> {
    OPTIONS.get().expect("command line parsed at start")
}

/// A scenario's control task: runs it with the seed and never returns.
type Scenario = fn(u64) -> !;

/// The scenarios, by command-line name.
const SCENARIOS: [(&str, Scenario); 6] = [
    ("smp", smp::run),
    ("ipi", ipi::run),
    ("hostile", hostile::run),
    ("overcommit", overcommit::run),
    ("hotplug", hotplug::run),
    ("apfabi", apfabi::run),
];

/// Parses the command line and starts the scenario's control task (boot CPU, after every CPU
/// is up).
pub fn start(bootargs: &'static str) {
    let opts = match cmdline::parse(bootargs) {
        Ok(opts) => opts,
        Err(e) => {
            report::set_scenario(cmdline::DEFAULT_SCENARIO);
            report::finish(false, Some(format_args!("bad command line {bootargs:?}: {e:?}")), |_| Ok(()));
        }
    };
    report::set_scenario(opts.scenario);
    OPTIONS.set(opts);
    let Some(index) = SCENARIOS.iter().position(|(name, _)| *name == opts.scenario) else {
        report::finish(false, Some(format_args!("unknown scenario {:?}", opts.scenario)), |_| Ok(()));
    };
    crate::println!("asyncpf guest: scenario {} seed {}", opts.scenario, opts.seed);
    sched::spawn_kernel("scenario", control, index as u64, sched::SpawnOptions::default())
        .expect("a free task slot at boot");
}

/// The control task: runs the scenario, which reports and powers off.
fn control(index: u64) {
    if options().apf {
        crate::apf::enable_on_every_cpu();
    }
    (SCENARIOS[index as usize].1)(options().seed);
}
