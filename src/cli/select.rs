//! The `--backend` and `--device` flags, and how the CLI words a choice.
//!
//! The device-and-backend policy is the library's job (DESIGN.md,
//! "Selection"); until that API lands this file holds the same policy the
//! CLI always had, with one change: a forced GPU backend with no GPU is an
//! error carrying the reason, never a note followed by a CPU attempt.

use super::CliError;
use rocmforge::device::{Device, DeviceKind};
use rocmforge::problem::AttentionProblem;
use rocmforge::registry::{AttentionConfig, BackendChoice, ChoiceSource, Registry, SelectError, Selection};
use std::str::FromStr;

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
    /// A named GPU backend with no GPU present is an error, not a CPU run.
    #[arg(long, value_name = "NAME[,NAME..]")]
    pub backend: Option<String>,
    /// Where to run: auto, cpu, gpu or gpu:N. With auto and a forced backend,
    /// the device kind that backend runs on; otherwise the best device that
    /// has an eligible backend (a GPU first, then the CPU).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceArg,
}

/// The device and backend chosen for a problem.
pub struct Chosen<'r> {
    pub device: Device,
    pub selection: Selection<'r>,
}

impl SelectArgs {
    pub fn config(&self) -> Result<AttentionConfig, CliError> {
        Ok(AttentionConfig { backend: self.backend.as_deref().map(BackendChoice::parse).transpose()? })
    }

    pub fn resolve(&self) -> Result<(BackendChoice, ChoiceSource), CliError> {
        Ok(self.config()?.resolve()?)
    }

    /// Devices to try, in order of preference, and why a GPU the choice
    /// asked for is missing (if it is).
    pub fn candidates(
        &self,
        registry: &Registry,
        choice: &BackendChoice,
    ) -> Result<(Vec<Device>, Option<String>), CliError> {
        if !matches!(self.device, DeviceArg::Auto) {
            return Ok((vec![self.device.open()?], None));
        }
        let mut out: Vec<Device> = Vec::new();
        let mut gpu_missing = None;
        let mut push = |d: Device| {
            if !out.iter().any(|o| o.label() == d.label()) {
                out.push(d);
            }
        };
        match choice {
            BackendChoice::Prefer(names) => {
                for kind in names.iter().filter_map(|n| registry.get(n)).map(|b| b.capabilities().device) {
                    match kind {
                        DeviceKind::Gpu => match Device::gpu(0) {
                            Ok(g) => push(g),
                            Err(why) => gpu_missing = Some(why.to_string()),
                        },
                        DeviceKind::Cpu => push(Device::Cpu),
                    }
                }
            }
            BackendChoice::Auto => {
                if let Ok(g) = Device::gpu(0) {
                    push(g);
                }
                push(Device::Cpu);
            }
        }
        Ok((out, gpu_missing))
    }

    /// Picks the device and the backend. Unknown names fail at once; the
    /// first candidate device with a runnable backend wins; if none has one,
    /// the error of the most preferred device is returned, or, when the
    /// only backends asked for run on a GPU and there is none, that reason.
    pub fn select<'r>(&self, registry: &'r Registry, p: &AttentionProblem) -> Result<Chosen<'r>, CliError> {
        let (choice, source) = self.resolve()?;
        if let BackendChoice::Prefer(names) = &choice {
            if let Some(unknown) = names.iter().find(|n| registry.get(n).is_none()) {
                return Err(SelectError::UnknownName {
                    name: rocmforge_shorten(unknown),
                    source_: source,
                    valid: registry.names(),
                }
                .into());
            }
        }
        let (devices, gpu_missing) = self.candidates(registry, &choice)?;
        let mut first_err = None;
        for device in devices {
            match registry.select_choice(p, &device, &choice, source) {
                Ok(selection) => return Ok(Chosen { device, selection }),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (first_err, gpu_missing) {
            (Some(e), _) => Err(e.into()),
            (None, Some(why)) => Err(CliError::Usage(format!(
                "{choice} (requested by {}) runs on a GPU, and there is none: {why}",
                source_label(source)
            ))),
            (None, None) => Err(CliError::Usage("no device to run on".into())),
        }
    }
}

/// A long name cut for messages.
fn rocmforge_shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// How the CLI names a choice source: the flag, the variable, or auto.
pub fn source_label(source: ChoiceSource) -> String {
    match source {
        ChoiceSource::Config => "--backend".to_string(),
        ChoiceSource::Env => rocmforge::registry::BACKEND_ENV.to_string(),
        ChoiceSource::Default => "default".to_string(),
    }
}

/// Registry messages call the explicit choice "config"; on the command line
/// that is the --backend flag.
pub fn cli_wording(text: &str) -> String {
    text.replace("(from config)", "(from --backend)")
        .replace("by config", "by --backend")
        .replace("from config", "from --backend")
}
