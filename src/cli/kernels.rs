//! `rocmforge kernels check`: compile every kernel specialization the
//! registered backends can request, for named targets, without a GPU.

use super::CliError;
use std::io::Write;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(subcommand)]
    pub command: KernelsCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum KernelsCommand {
    /// Compile every kernel specialization for each target: NVRTC for sm_XY
    /// (needs the NVRTC library), hipcc for gfxNNN (needs hipcc or $HIPCC).
    /// Prints each specialization and its code-object size; on failure exits
    /// non-zero with the compiler log.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Target architecture, e.g. sm_80, sm_90, gfx90a, gfx1030. Repeat the
    /// flag or give a comma-separated list.
    #[arg(long = "target", value_name = "T", required = true, value_delimiter = ',')]
    pub targets: Vec<String>,
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let KernelsCommand::Check(check) = &args.command;
    let registry = super::registry()?;
    let specs = crate::device::offline::all_specs(registry);
    for target in &check.targets {
        let reports = crate::device::offline::compile_all(&specs, target)?;
        for r in &reports {
            writeln!(out, "{target}: {} -> {} bytes", r.kernel, r.bytes)?;
        }
        writeln!(out, "{target}: {} specializations compiled", reports.len())?;
    }
    Ok(())
}
