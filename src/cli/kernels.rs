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
    /// (needs the NVRTC library), hipcc for the gfxNNN it knows (gfx90a,
    /// gfx1030, ...) and header-free clang-19 for newer ones (gfx942,
    /// gfx1100, ...). Prints each specialization and its code-object size;
    /// on failure exits non-zero with the compiler log.
    Check(CheckArgs),
    /// List every kernel specialization the registered backends and the
    /// model layer can request (file:entry[defines]), without compiling.
    List(ListArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Target architecture, e.g. sm_80, sm_90, gfx90a, gfx1030. Repeat the
    /// flag or give a comma-separated list.
    #[arg(long = "target", value_name = "T", required = true, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Compile only the specializations whose label (as `kernels list`
    /// prints it) contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Build AMD targets with header-free clang-19 even where hipcc knows
    /// them (no HIP installation needed; hipcc parses the HIP headers on
    /// every compile and is several times slower).
    #[arg(long)]
    pub header_free: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// List only the specializations whose label contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    match &args.command {
        KernelsCommand::Check(check) => execute_check(check, out),
        KernelsCommand::List(list) => {
            let specs = selected_specs(list.filter.as_deref())?;
            for spec in &specs {
                writeln!(out, "{}", spec.label())?;
            }
            writeln!(out, "{} specializations", specs.len())?;
            Ok(())
        }
    }
}

fn execute_check(check: &CheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    use rocmforge::device::offline::{compile_all_by, OfflineCompiler};
    let specs = selected_specs(check.filter.as_deref())?;
    for target in &check.targets {
        let arch = rocmforge::Arch::parse(target)?; // an unknown target is its own error
        let compiler = match OfflineCompiler::for_arch(&arch) {
            OfflineCompiler::Hipcc if check.header_free => OfflineCompiler::HeaderFreeClang,
            usual => usual,
        };
        missing_compiler(target, compiler)?;
        let reports = compile_all_by(&specs, &arch, compiler)?;
        for r in &reports {
            writeln!(out, "{target}: {} -> {} bytes", r.kernel, r.bytes)?;
        }
        writeln!(out, "{target}: {} specializations compiled by {}", reports.len(), compiler.name())?;
    }
    Ok(())
}

/// Every specialization, or those whose label contains `filter`; a filter
/// that matches nothing is an error (a typo must not pass as "0 compiled").
fn selected_specs(filter: Option<&str>) -> Result<Vec<rocmforge::kernels::KernelSpec>, CliError> {
    let registry = super::registry()?;
    let mut specs = rocmforge::device::offline::all_specs(registry);
    if let Some(text) = filter {
        specs.retain(|s| s.label().contains(text));
        if specs.is_empty() {
            return Err(CliError::Usage(format!(
                "--filter '{text}' matches no kernel specialization (see `rocmforge kernels list`)"
            )));
        }
    }
    Ok(specs)
}

/// Says which compiler a target needs when it is missing, before trying:
/// without this, a missing NVRTC surfaced as a device-layer error.
fn missing_compiler(target: &str, compiler: rocmforge::device::offline::OfflineCompiler) -> Result<(), CliError> {
    use rocmforge::device::offline::{
        clang_available, clang_command, hipcc_available, hipcc_command, nvrtc_available, OfflineCompiler,
    };
    let missing = match compiler {
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
