//! Choosing the device and the backend together: the one policy the CLI,
//! the model layer and library users share.
//!
//! - `DeviceChoice::Cpu` / `Gpu(n)`: that device (a missing GPU is an error
//!   with the driver's reason), then the backend choice on it.
//! - `DeviceChoice::Auto` with auto backends: the first GPU when one is
//!   present and a backend there accepts the problem, else the CPU.
//! - `DeviceChoice::Auto` with named backends: each name's own device kind,
//!   in list order. A forced GPU backend with no GPU present is an error
//!   that says why there is no GPU — never a silent run on the CPU.

use crate::backend::AttentionBackend;
use crate::capabilities::Unsupported;
use crate::device::{Device, DeviceError, DeviceKind};
use crate::problem::AttentionProblem;
use crate::registry::{AttentionConfig, BackendChoice, ChoiceSource, Registry, SelectError, SelectionReason, Verdict};
use std::fmt;
use std::str::FromStr;

/// Where to run: `auto`, `cpu`, `gpu` (GPU 0) or `gpu:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Gpu(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad device '{0}': expected auto, cpu, gpu or gpu:N")]
pub struct DeviceChoiceError(pub String);

impl FromStr for DeviceChoice {
    type Err = DeviceChoiceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu(0)),
            t => t
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Gpu)
                .ok_or_else(|| DeviceChoiceError(crate::text::truncated(s, 64))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Gpu(n) => write!(f, "gpu:{n}"),
        }
    }
}

/// A device and a backend that can run a problem on it, and why.
pub struct Choice<'r> {
    pub device: Device,
    pub backend: &'r dyn AttentionBackend,
    pub source: ChoiceSource,
    pub reason: SelectionReason,
}

/// Every backend's verdict on the device the choice was made for.
pub struct Explanation<'r> {
    pub device: Device,
    pub choice: BackendChoice,
    pub source: ChoiceSource,
    pub verdicts: Vec<(&'static str, Verdict)>,
    pub chosen: Result<Choice<'r>, SelectError>,
}

impl Registry {
    /// Picks the device and the backend for `p` following `config`.
    pub fn choose(&self, p: &AttentionProblem, config: &AttentionConfig) -> Result<Choice<'_>, SelectError> {
        let (choice, source) = config.resolve()?;
        p.validate().map_err(SelectError::InvalidProblem)?;
        let mut first_err = None;
        for device in self.candidates(p, config.device, &choice, source)? {
            match self.select_choice(p, &device, &choice, source) {
                Ok(s) => return Ok(Choice { device, backend: s.backend, source: s.source, reason: s.reason }),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(SelectError::Device(DeviceError::NoDevice("no candidate device".into()))))
    }

    /// `choose`, plus every backend's verdict on the device it considered
    /// first (the chosen one when selection succeeds).
    pub fn explain_choice(
        &self,
        p: &AttentionProblem,
        config: &AttentionConfig,
    ) -> Result<Explanation<'_>, SelectError> {
        let (choice, source) = config.resolve()?;
        let chosen = self.choose(p, config);
        let device = match &chosen {
            Ok(c) => c.device.clone(),
            // No device to consider (auto, every requested backend needs a
            // GPU and there is none): the verdicts on the CPU, where each of
            // them says why it cannot run; `chosen` keeps the whole error.
            Err(_) if config.device == DeviceChoice::Auto => self
                .candidates(p, config.device, &choice, source)
                .ok()
                .and_then(|c| c.into_iter().next())
                .unwrap_or(Device::Cpu),
            Err(_) => self.candidates(p, config.device, &choice, source)?.into_iter().next().unwrap_or(Device::Cpu),
        };
        let chosen_name = chosen.as_ref().ok().map(|c| c.backend.name());
        let verdicts = self
            .backends()
            .map(|b| {
                let reasons = Registry::reasons(b, p, &device);
                let verdict = match (Some(b.name()) == chosen_name, reasons.is_empty()) {
                    (true, _) => Verdict::Chosen,
                    (false, true) => Verdict::Eligible,
                    (false, false) => Verdict::Rejected(reasons),
                };
                (b.name(), verdict)
            })
            .collect();
        Ok(Explanation { device, choice, source, verdicts, chosen })
    }

    /// Devices to try, in order. Unknown names fail here, before any device
    /// is opened.
    fn candidates(
        &self,
        p: &AttentionProblem,
        device: DeviceChoice,
        choice: &BackendChoice,
        source: ChoiceSource,
    ) -> Result<Vec<Device>, SelectError> {
        match device {
            DeviceChoice::Cpu => return Ok(vec![Device::Cpu]),
            DeviceChoice::Gpu(n) => return Device::gpu(n).map(|d| vec![d]).map_err(SelectError::Device),
            DeviceChoice::Auto => {}
        }
        let mut out: Vec<Device> = Vec::new();
        let mut push = |d: Device| {
            if !out.iter().any(|o| o.label() == d.label()) {
                out.push(d);
            }
        };
        match choice {
            BackendChoice::Prefer(names) => {
                for name in names {
                    let backend = self.get(name).ok_or_else(|| SelectError::UnknownName {
                        name: crate::text::truncated(name, 64),
                        source_: source,
                        valid: self.names(),
                    })?;
                    match backend.capabilities().device {
                        DeviceKind::Cpu => push(Device::Cpu),
                        DeviceKind::Gpu => match Device::gpu(0) {
                            Ok(g) => push(g),
                            Err(why) if names.len() == 1 => return Err(no_gpu_error(p, backend, source, why)),
                            Err(_) => {}
                        },
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
        if out.is_empty() {
            // Every listed backend needs a GPU and there is none: name them
            // all, as a single forced name would be.
            let why = Device::gpu(0).err().unwrap_or(DeviceError::NoDevice("no GPU".into())).to_string();
            let rejected = match choice {
                BackendChoice::Prefer(names) => names
                    .iter()
                    .filter_map(|n| self.get(n))
                    .map(|b| (b.name(), vec![Unsupported::NoGpu { why: why.clone() }]))
                    .collect(),
                BackendChoice::Auto => vec![],
            };
            return Err(SelectError::ForcedUnsupported { problem: p.to_string(), source_: source, rejected });
        }
        Ok(out)
    }
}

fn no_gpu_error(
    p: &AttentionProblem,
    backend: &dyn AttentionBackend,
    source: ChoiceSource,
    why: DeviceError,
) -> SelectError {
    SelectError::ForcedUnsupported {
        problem: p.to_string(),
        source_: source,
        rejected: vec![(backend.name(), vec![Unsupported::NoGpu { why: why.to_string() }])],
    }
}
