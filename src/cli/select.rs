//! The `--backend` and `--device` flags, and how the CLI words a choice.
//! The policy itself (which device, which backend, and why) is the
//! library's: `Registry::choose` and `Registry::explain_choice`.

use super::CliError;
use rocmforge::registry::{AttentionConfig, BackendChoice, ChoiceSource, SelectionReason};
use rocmforge::selection::DeviceChoice;

/// The name the library gives an explicit choice made on the command line.
pub const ORIGIN: &str = "--backend";

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
    pub device: DeviceChoice,
}

impl SelectArgs {
    pub fn config(&self) -> Result<AttentionConfig, CliError> {
        // `--backend "$B"` with B unset must not mean auto (and override
        // the environment variable) without a word.
        if self.backend.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err(CliError::Usage(
                "--backend is empty; expected auto, a backend name, or a comma-separated list \
                 (leave the flag out to use ROCMFORGE_ATTENTION_BACKEND or auto)"
                    .to_string(),
            ));
        }
        Ok(AttentionConfig {
            backend: self.backend.as_deref().map(BackendChoice::parse).transpose()?,
            device: self.device,
            origin: ORIGIN,
        })
    }
}

/// How the CLI names a choice source: the flag, the variable, or auto.
pub fn source_label(source: ChoiceSource) -> String {
    match source {
        ChoiceSource::Config { origin } => origin.to_string(),
        ChoiceSource::Env => rocmforge::registry::BACKEND_ENV.to_string(),
        ChoiceSource::Default => "default".to_string(),
    }
}

/// The reason a backend was chosen, worded to sit inside one pair of
/// parentheses after its name: "requested by --backend", never nested.
pub fn reason_label(reason: &SelectionReason) -> String {
    match reason {
        SelectionReason::Requested { source } => format!("requested by {}", source_label(*source)),
        SelectionReason::FirstRunnable { source, skipped } => {
            format!("requested by {}; skipped {}, which cannot run it", source_label(*source), skipped.join(", "))
        }
        SelectionReason::Auto { priority, device } => format!("auto: highest priority {priority} runnable on {device}"),
    }
}
