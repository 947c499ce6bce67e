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
    let specs = rocmforge::device::offline::all_specs(registry);
    for target in &check.targets {
        missing_compiler(target)?;
        let reports = rocmforge::device::offline::compile_all(&specs, target)?;
        for r in &reports {
            writeln!(out, "{target}: {} -> {} bytes", r.kernel, r.bytes)?;
        }
        writeln!(out, "{target}: {} specializations compiled", reports.len())?;
    }
    Ok(())
}

/// Says which compiler a target needs when it is missing, before trying:
/// without this, a missing NVRTC surfaced as a device-layer error.
fn missing_compiler(target: &str) -> Result<(), CliError> {
    use rocmforge::device::offline::{
        clang_available, clang_command, hipcc_available, hipcc_command, nvrtc_available, OfflineCompiler,
    };
    let arch = rocmforge::Arch::parse(target)?; // an unknown target is its own error
    let missing = match OfflineCompiler::for_arch(&arch) {
        OfflineCompiler::Nvrtc if !nvrtc_available() => Some(
            "NVRTC, and NVRTC is missing: libnvrtc could not be loaded (install CUDA or the nvidia-cuda-nvrtc \
             Python wheel and put the folder holding libnvrtc.so.* on LD_LIBRARY_PATH; the binary must be \
             built with the cuda feature)"
                .to_string(),
        ),
        OfflineCompiler::Hipcc if !hipcc_available() => Some(format!(
            "hipcc, and '{}' cannot be run (install Debian's hipcc package, or set HIPCC)",
            hipcc_command()
        )),
        OfflineCompiler::HeaderFreeClang if !clang_available() => {
            Some(format!("clang, and '{}' cannot be run (install clang, or set ROCMFORGE_CLANG)", clang_command()))
        }
        _ => None,
    };
    match missing {
        Some(what) => Err(CliError::Usage(format!("target {target} is compiled with {what}"))),
        None => Ok(()),
    }
}
