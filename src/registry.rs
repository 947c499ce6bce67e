//! The backend registry and the selection policy.
//!
//! Sources of a choice, strongest first: `AttentionConfig::backend`, then the
//! `ROCMFORGE_ATTENTION_BACKEND` environment variable, then auto (the
//! highest-priority backend whose `check` is empty). A named backend that
//! cannot run the problem is an error carrying every reason; it never falls
//! back silently.

use crate::backend::{AttentionBackend, BackendRegistration};
use crate::capabilities::{join, Unsupported};
use crate::device::{Device, DeviceError};
use crate::problem::{AttentionProblem, ProblemError};
use crate::selection::DeviceChoice;
use std::fmt;
use std::sync::OnceLock;

/// Name of the environment variable that picks a backend.
pub const BACKEND_ENV: &str = "ROCMFORGE_ATTENTION_BACKEND";

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    /// One name, or a preference list tried in order.
    Prefer(Vec<String>),
}

impl BackendChoice {
    /// Parses `auto`, `name` or `a,b,c`. Names are checked later, against the
    /// registry, so the error can list the valid ones.
    pub fn parse(s: &str) -> Result<BackendChoice, SelectError> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            return Ok(BackendChoice::Auto);
        }
        let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(SelectError::EmptyName { input: s.to_string() });
        }
        Ok(BackendChoice::Prefer(names))
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Prefer(names) => f.write_str(&names.join(",")),
        }
    }
}

/// Where the effective choice came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceSource {
    /// `AttentionConfig::backend`; `origin` names it for messages
    /// ("config" in the library, "--backend" on the command line).
    Config {
        origin: &'static str,
    },
    Env,
    Default,
}

impl ChoiceSource {
    /// The library's default name for an explicit choice.
    pub const CONFIG: ChoiceSource = ChoiceSource::Config { origin: "config" };
}

impl fmt::Display for ChoiceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChoiceSource::Config { origin } => origin,
            ChoiceSource::Env => BACKEND_ENV,
            ChoiceSource::Default => "default",
        })
    }
}

/// Attention settings a caller (CLI, model layer, library user) passes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionConfig {
    /// `None` defers to the environment variable, then to auto.
    pub backend: Option<BackendChoice>,
    /// Where to run (default: auto).
    pub device: DeviceChoice,
    /// How messages name an explicit `backend` ("config", "--backend").
    pub origin: &'static str,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig { backend: None, device: DeviceChoice::Auto, origin: "config" }
    }
}

impl AttentionConfig {
    /// A config that forces `choice` (a name, a list, or auto).
    pub fn with_backend(choice: BackendChoice) -> AttentionConfig {
        AttentionConfig { backend: Some(choice), ..AttentionConfig::default() }
    }

    /// The effective choice: config, then the environment variable
    /// [`BACKEND_ENV`] of this process, then auto.
    pub fn resolve(&self) -> Result<(BackendChoice, ChoiceSource), SelectError> {
        self.resolve_with_env(std::env::var_os(BACKEND_ENV).as_deref())
    }

    /// Like [`resolve`](Self::resolve), with the environment variable's
    /// value given (`None`: unset), so callers and tests never need to
    /// change the process environment.
    pub fn resolve_with_env(
        &self,
        env: Option<&std::ffi::OsStr>,
    ) -> Result<(BackendChoice, ChoiceSource), SelectError> {
        if let Some(choice) = &self.backend {
            return Ok((choice.clone(), ChoiceSource::Config { origin: self.origin }));
        }
        match env {
            None => Ok((BackendChoice::Auto, ChoiceSource::Default)),
            Some(value) => {
                let value = value.to_str().ok_or(SelectError::EnvNotUnicode)?;
                Ok((BackendChoice::parse(value)?, ChoiceSource::Env))
            }
        }
    }
}

/// Why selection failed. Every variant carries what the user needs to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("unknown attention backend '{name}' (from {source_}); valid names: {}", .valid.join(", "))]
    UnknownName { name: String, source_: ChoiceSource, valid: Vec<&'static str> },
    #[error("empty backend name in '{input}'; expected auto, a name, or a comma-separated list")]
    EmptyName { input: String },
    #[error("{BACKEND_ENV} is not valid UTF-8")]
    EnvNotUnicode,
    #[error("no requested backend can run {problem} (requested by {source_}):\n{}", reasons_block(.rejected))]
    ForcedUnsupported { problem: String, source_: ChoiceSource, rejected: Vec<(&'static str, Vec<Unsupported>)> },
    #[error("no registered backend can run {problem}:\n{}", reasons_block(.rejected))]
    NothingEligible { problem: String, rejected: Vec<(&'static str, Vec<Unsupported>)> },
    #[error("backend '{0}' is registered twice")]
    Duplicate(&'static str),
    #[error("invalid problem: {0}")]
    InvalidProblem(ProblemError),
    #[error("{0}")]
    Device(DeviceError),
}

fn reasons_block(rejected: &[(&'static str, Vec<Unsupported>)]) -> String {
    rejected.iter().map(|(name, reasons)| format!("  {name}: {}", join(reasons.iter()))).collect::<Vec<_>>().join("\n")
}

/// One backend's verdict for one problem.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Chosen,
    /// Could run it, but another backend won.
    Eligible,
    Rejected(Vec<Unsupported>),
}

/// Why a backend was selected; `Display` gives the sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectionReason {
    /// The first (or only) name the user asked for.
    Requested { source: ChoiceSource },
    /// A later name of a preference list; the earlier ones could not run.
    FirstRunnable { source: ChoiceSource, skipped: Vec<&'static str> },
    /// Auto: the highest-priority backend that can run it here.
    Auto { priority: i32, device: String },
}

impl fmt::Display for SelectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectionReason::Requested { source } => write!(f, "requested by {source}"),
            SelectionReason::FirstRunnable { source, skipped } => {
                write!(f, "first runnable in the list from {source} (skipped {})", skipped.join(", "))
            }
            SelectionReason::Auto { priority, device } => {
                write!(f, "auto: highest priority ({priority}) runnable on {device}")
            }
        }
    }
}

/// The outcome of selection, with the reason.
pub struct Selection<'r> {
    pub backend: &'r dyn AttentionBackend,
    pub source: ChoiceSource,
    pub reason: SelectionReason,
}

/// All registered backends, ordered by priority (highest first), then name.
pub struct Registry {
    backends: Vec<Box<dyn AttentionBackend>>,
}

static GLOBAL: OnceLock<Result<Registry, SelectError>> = OnceLock::new();

impl Registry {
    /// Builds a registry from explicit backends; rejects duplicate names.
    pub fn from_backends(mut backends: Vec<Box<dyn AttentionBackend>>) -> Result<Registry, SelectError> {
        backends.sort_by(|a, b| b.priority().cmp(&a.priority()).then(a.name().cmp(b.name())));
        let mut names: Vec<&'static str> = backends.iter().map(|b| b.name()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SelectError::Duplicate(pair[0]));
        }
        Ok(Registry { backends })
    }

    /// The process-wide registry of every `inventory`-submitted backend,
    /// built once and then frozen.
    pub fn global() -> Result<&'static Registry, SelectError> {
        GLOBAL
            .get_or_init(|| {
                Registry::from_backends(inventory::iter::<BackendRegistration>().map(|r| (r.create)()).collect())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn backends(&self) -> impl Iterator<Item = &dyn AttentionBackend> {
        self.backends.iter().map(|b| b.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&dyn AttentionBackend> {
        self.backends().find(|b| b.name() == name)
    }

    /// Every reason `backend` cannot run `p` on `device`, the problem's own
    /// validity included.
    pub fn reasons(backend: &dyn AttentionBackend, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        match p.validate() {
            Ok(()) => crate::backend::reasons(backend, p, device),
            Err(e) => vec![Unsupported::InvalidProblem(e)],
        }
    }

    fn lookup(&self, name: &str, source: ChoiceSource) -> Result<&dyn AttentionBackend, SelectError> {
        self.get(name).ok_or_else(|| SelectError::UnknownName {
            name: name.to_string(),
            source_: source,
            valid: self.names(),
        })
    }

    /// Picks the backend for `p` on `device` following `config`.
    pub fn select(
        &self,
        p: &AttentionProblem,
        device: &Device,
        config: &AttentionConfig,
    ) -> Result<Selection<'_>, SelectError> {
        let (choice, source) = config.resolve()?;
        self.select_choice(p, device, &choice, source)
    }

    /// Like `select`, with the choice already resolved.
    pub fn select_choice(
        &self,
        p: &AttentionProblem,
        device: &Device,
        choice: &BackendChoice,
        source: ChoiceSource,
    ) -> Result<Selection<'_>, SelectError> {
        // An invalid problem is one error, not the same reason per backend.
        p.validate().map_err(SelectError::InvalidProblem)?;
        match choice {
            BackendChoice::Prefer(names) => {
                let listed = names.iter().map(|n| self.lookup(n, source)).collect::<Result<Vec<_>, _>>()?;
                let mut rejected = Vec::new();
                for backend in listed {
                    let reasons = Registry::reasons(backend, p, device);
                    if reasons.is_empty() {
                        let reason = if rejected.is_empty() {
                            SelectionReason::Requested { source }
                        } else {
                            let skipped = rejected.iter().map(|(n, _): &(&'static str, _)| *n).collect();
                            SelectionReason::FirstRunnable { source, skipped }
                        };
                        return Ok(Selection { backend, source, reason });
                    }
                    rejected.push((backend.name(), reasons));
                }
                Err(SelectError::ForcedUnsupported { problem: p.to_string(), source_: source, rejected })
            }
            BackendChoice::Auto => {
                let mut rejected = Vec::new();
                for backend in self.backends() {
                    let reasons = Registry::reasons(backend, p, device);
                    if reasons.is_empty() {
                        let reason = SelectionReason::Auto { priority: backend.priority(), device: device.label() };
                        return Ok(Selection { backend, source, reason });
                    }
                    rejected.push((backend.name(), reasons));
                }
                Err(SelectError::NothingEligible { problem: p.to_string(), rejected })
            }
        }
    }

    /// Every backend's verdict for `p` on `device` under `config`. If
    /// selection fails, no backend is `Chosen` and the error says why.
    pub fn explain(
        &self,
        p: &AttentionProblem,
        device: &Device,
        config: &AttentionConfig,
    ) -> (Vec<(&'static str, Verdict)>, Result<String, SelectError>) {
        let chosen = self.select(p, device, config);
        let chosen_name = chosen.as_ref().ok().map(|s| s.backend.name());
        let verdicts = self
            .backends()
            .map(|b| {
                let reasons = Registry::reasons(b, p, device);
                let verdict = if Some(b.name()) == chosen_name {
                    Verdict::Chosen
                } else if reasons.is_empty() {
                    Verdict::Eligible
                } else {
                    Verdict::Rejected(reasons)
                };
                (b.name(), verdict)
            })
            .collect();
        (verdicts, chosen.map(|s| format!("{} ({})", s.backend.name(), s.reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_choices() {
        assert_eq!(BackendChoice::parse("auto"), Ok(BackendChoice::Auto));
        assert_eq!(BackendChoice::parse(""), Ok(BackendChoice::Auto));
        assert_eq!(BackendChoice::parse("a, b"), Ok(BackendChoice::Prefer(vec!["a".into(), "b".into()])));
        assert!(matches!(BackendChoice::parse("a,,b"), Err(SelectError::EmptyName { .. })));
    }
}
