//! The `rocmforge` command line: one file per command. The binary's `main`
//! only calls [`main`]; everything here is library code so tests can call
//! generators such as [`backends::markdown`] directly.

pub mod backends;
pub mod bench;
pub mod check;
pub mod devices;
pub mod explain;
pub mod generate;
pub mod kernels;
pub mod problem_args;
pub mod run;

use crate::backend::BackendError;
use crate::device::{Device, DeviceError, DeviceKind};
use crate::io::IoError;
use crate::problem::ProblemError;
use crate::registry::{AttentionConfig, BackendChoice, ChoiceSource, Registry, SelectError, Selection};
use crate::tensor::TensorError;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;

/// Scaled-dot-product attention through a registry of pluggable backends.
///
/// With no command, runs a Llama-like problem (batch 1, 32 query heads,
/// 8 KV heads, seq 1024, head_dim 128, causal, f32) on the best available
/// device and checks it against cpu-reference: the same as `rocmforge run --check`.
#[derive(Parser, Debug)]
#[command(name = "rocmforge", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List registered backends and their capabilities.
    Backends(backends::Args),
    /// Show every backend's verdict (chosen / eligible / rejected) for a problem.
    Explain(explain::Args),
    /// Run one attention problem and report the backend, the time and the error.
    Run(run::Args),
    /// Time backends on one or more shapes.
    Bench(bench::Args),
    /// List GPUs, or say why there is none.
    Devices(devices::Args),
    /// Kernel tools: compile every kernel specialization for a target.
    Kernels(kernels::Args),
    /// Greedy generation with a Hugging Face model directory (Llama, Mistral, Qwen2, GLM).
    Generate(generate::Args),
}

/// Everything a command can fail with; `main` prints it as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("invalid problem: {0}")]
    Problem(#[from] ProblemError),
    #[error("check against cpu-reference failed: {0}")]
    CheckFailed(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// Entry point of the binary: parses arguments, runs the command, and turns
/// any error into one `error: ...` line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        None => run::execute(&run::Args::default_main(), &mut out),
        Some(Command::Backends(a)) => backends::execute(&a, &mut out),
        Some(Command::Explain(a)) => explain::execute(&a, &mut out),
        Some(Command::Run(a)) => run::execute(&a, &mut out),
        Some(Command::Bench(a)) => bench::execute(&a, &mut out),
        Some(Command::Devices(a)) => devices::execute(&a, &mut out),
        Some(Command::Kernels(a)) => kernels::execute(&a, &mut out),
        Some(Command::Generate(a)) => generate::execute(&a, &mut out),
    };
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `rocmforge backends | head` closes the pipe early: not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli_wording(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout with exit 0; usage errors become one line.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            // The first paragraph, joined into one line (a missing-argument
            // error lists the arguments on the lines below its first).
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = if first.is_empty() { "error: invalid arguments".to_string() } else { first.join(" ") };
            if first.starts_with("error:") {
                eprintln!("{first} (see --help)");
            } else {
                eprintln!("error: {first} (see --help)");
            }
            ExitCode::from(2)
        }
    }
}

/// `--device auto|cpu|gpu|gpu:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The best device on which the requested backend (or any backend) runs.
    #[default]
    Auto,
    Cpu,
    Gpu(usize),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "gpu" => Ok(DeviceArg::Gpu(0)),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(DeviceArg::Gpu)
                .ok_or_else(|| format!("expected auto, cpu, gpu or gpu:N, got '{s}'")),
        }
    }
}

impl DeviceArg {
    /// Opens the device this argument names (`Auto` means the best available).
    pub fn open(self) -> Result<Device, CliError> {
        match self {
            DeviceArg::Auto => Ok(Device::best_available()),
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Gpu(n) => Ok(Device::gpu(n)?),
        }
    }
}

/// Backend and device flags shared by `explain` and `run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Backend name, comma-separated preference list, or `auto`. Overrides
    /// the ROCMFORGE_ATTENTION_BACKEND environment variable (flag > env > auto).
    #[arg(long, value_name = "NAME[,NAME..]")]
    pub backend: Option<String>,
    /// Where to run: auto, cpu, gpu or gpu:N. With auto and a forced backend,
    /// the device kind that backend runs on; otherwise the best device that
    /// has an eligible backend (a GPU first, then the CPU).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceArg,
}

/// The effective backend choice and where it came from.
pub struct Resolved {
    pub choice: BackendChoice,
    pub source: ChoiceSource,
}

impl SelectArgs {
    pub fn config(&self) -> Result<AttentionConfig, CliError> {
        Ok(AttentionConfig {
            backend: self.backend.as_deref().map(BackendChoice::parse).transpose()?,
            origin: "--backend",
            ..AttentionConfig::default()
        })
    }

    pub fn resolve(&self) -> Result<Resolved, CliError> {
        let (choice, source) = self.config()?.resolve()?;
        Ok(Resolved { choice, source })
    }

    /// Devices to try, in order of preference.
    pub fn candidates(&self, registry: &Registry, choice: &BackendChoice) -> Result<Vec<Device>, CliError> {
        let auto_gpu = || Device::gpu(0).ok();
        match self.device {
            DeviceArg::Cpu | DeviceArg::Gpu(_) => Ok(vec![self.device.open()?]),
            DeviceArg::Auto => {
                let mut out: Vec<Device> = Vec::new();
                let mut push = |d: Device| {
                    if !out.iter().any(|o| o.label() == d.label()) {
                        out.push(d);
                    }
                };
                match choice {
                    BackendChoice::Prefer(names) => {
                        for kind in names.iter().filter_map(|n| registry.get(n)).map(|b| b.capabilities().device) {
                            // A GPU backend with no GPU present is tried on the CPU,
                            // so the error says "runs on gpu, problem is on cpu".
                            push(match kind {
                                DeviceKind::Gpu => match Device::gpu(0) {
                                    Ok(g) => g,
                                    Err(why) => {
                                        eprintln!("note: {why}");
                                        Device::Cpu
                                    }
                                },
                                DeviceKind::Cpu => Device::Cpu,
                            });
                        }
                    }
                    BackendChoice::Auto => {
                        if let Some(g) = auto_gpu() {
                            push(g);
                        }
                    }
                }
                push(Device::Cpu);
                Ok(out)
            }
        }
    }

    /// Picks the device and the backend. Unknown names fail at once; otherwise
    /// the first candidate device with a runnable backend wins, and if none
    /// has one, the error of the most preferred device is returned.
    pub fn select<'r>(
        &self,
        registry: &'r Registry,
        p: &crate::problem::AttentionProblem,
    ) -> Result<(Device, Selection<'r>), CliError> {
        let Resolved { choice, source } = self.resolve()?;
        let mut first_err = None;
        for device in self.candidates(registry, &choice)? {
            match registry.select_choice(p, &device, &choice, source) {
                Ok(sel) => return Ok((device, sel)),
                Err(e @ SelectError::UnknownName { .. }) => return Err(e.into()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.map(CliError::from).unwrap_or_else(|| CliError::Usage("no device to run on".into())))
    }
}

/// How the CLI names a choice source.
pub fn source_label(source: ChoiceSource) -> String {
    match source {
        ChoiceSource::Config { origin } => origin.to_string(),
        ChoiceSource::Env => format!("env {}", crate::registry::BACKEND_ENV),
        ChoiceSource::Default => "default".to_string(),
    }
}

/// Registry messages call the explicit choice "config"; on the command line
/// that is the --backend flag.
pub fn cli_wording(text: &str) -> String {
    text.replace("(from config)", "(from --backend)").replace("by config", "by --backend")
}

/// The global registry, or the error that prevented building it.
pub fn registry() -> Result<&'static Registry, CliError> {
    Ok(Registry::global()?)
}
