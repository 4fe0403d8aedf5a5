//! `hostile`: placeholder.
use crate::report;

/// Runs the scenario and reports.
pub fn run(_seed: u64) -> ! {
    report::finish(false, Some(format_args!("not implemented")), |_| Ok(()));
}
