//! `cargo xtask`: the host runner of asyncpf.
//!
//! It checks (and if allowed installs) the Debian cross toolchain and QEMU, builds the
//! hypervisor and the guest kernel for `aarch64-unknown-none`, turns the guest ELF into an arm64
//! kernel `Image`, runs scenarios on QEMU's `virt` machine and checks their machine-readable
//! results. Its main job, `cargo xtask run` without `--scenario`, compares asynchronous with
//! synchronous page faults on the `overcommit` workload (`compare`). See `cargo xtask --help`.
#![forbid(unsafe_code)]

mod bench;
mod build;
mod cli;
mod compare;
mod disk;
mod hostload;
mod image;
mod initramfs;
mod linux;
mod linuxapf;
mod plot;
mod probes;
mod qemu;
mod results;
mod run;
mod soak;
mod suite;
mod sweep;
mod toolchain;
mod trace;
mod userspace;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{Command, Given};

/// The workspace root: xtask lives one level below it. Taken from the compile-time manifest
/// directory so the runner works from any current directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let (cli, given) = cli::parse();
    match dispatch(cli.command, &given) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `given`: which `run` options the command line gave.
fn dispatch(command: Command, given: &Given) -> anyhow::Result<ExitCode> {
    match command {
        Command::Setup => {
            let tc = toolchain::ensure()?;
            tc.print_summary();
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => {
            let _tc = toolchain::ensure()?;
            build::build(&workspace_root(), args.select())?;
            Ok(ExitCode::SUCCESS)
        }
        // The main job: no --scenario (and no --guest-kernel).
        Command::Run(args) if compare::selected(&args, given) => {
            let plan = compare::plan(&args, given)?;
            let tc = toolchain::ensure()?;
            let all_correct = compare::run_compare(&workspace_root(), &tc, &plan)?;
            Ok(if all_correct { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Run(args) => {
            let plan = args.validate()?;
            let tc = toolchain::ensure()?;
            let report = run::run(&workspace_root(), &tc, &plan, args.no_build)?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Test(args) => {
            let tc = toolchain::ensure()?;
            let all_passed = suite::run_suite(&workspace_root(), &tc, &args)?;
            Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Soak(args) => {
            let tc = toolchain::ensure()?;
            let all_ok = soak::run_soak(&workspace_root(), &tc, &args)?;
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Linux(args) => {
            let tc = toolchain::ensure()?;
            build::build(&workspace_root(), build::Select::ALL)?;
            let all_ok = userspace::run_linux(&workspace_root(), &tc, &args)?;
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::TraceSummary(args) => {
            trace::summary_command(&args.file, args.svg.as_deref(), args.faults)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let plan = sweep::plan(&args)?;
            let tc = toolchain::ensure()?;
            let all_ok = sweep::run_sweep(&workspace_root(), &tc, &plan)?;
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
