//! Choosing the attention backend for a layer: through the library's
//! selection (explicit config, then `ROCMFORGE_ATTENTION_BACKEND`, then
//! auto), once per shape class, and again only when the cached choice
//! cannot run the current problem (a longer cache past a backend's limit,
//! say). Every choice keeps the selection's reason so the decoder can say
//! which backend ran prefill and decode, and why.

use super::error::ModelError;
use crate::backend::AttentionBackend;
use crate::device::Device;
use crate::problem::AttentionProblem;
use crate::registry::{AttentionConfig, Registry};
use crate::selection::DeviceChoice;
use std::collections::BTreeMap;
use std::fmt;

/// Attention calls fall in two classes with different best backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeClass {
    /// Several new tokens per sequence (a prompt, or a chunk of one).
    Prefill,
    /// One new token per sequence against the cache.
    Decode,
}

impl ShapeClass {
    pub fn of(p: &AttentionProblem) -> ShapeClass {
        if p.seq_q == 1 {
            ShapeClass::Decode
        } else {
            ShapeClass::Prefill
        }
    }
}

impl fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShapeClass::Prefill => "prefill",
            ShapeClass::Decode => "decode",
        })
    }
}

/// The backend a layer used for a shape class, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionChoice {
    pub backend: &'static str,
    pub reason: String,
    /// How many attention calls this choice served.
    pub calls: usize,
    /// Of those, how many read the KV cache in place (strided views)
    /// rather than from a gathered copy.
    pub in_place: usize,
}

/// One layer's cached choices. The device is fixed (the KV cache lives
/// there); the backend is chosen on it through `Registry::choose`.
pub struct Dispatcher {
    layer: usize,
    /// `None` = the global registry (resolved on first use).
    registry: Option<&'static Registry>,
    config: AttentionConfig,
    device: Device,
    cached: BTreeMap<ShapeClass, (&'static dyn AttentionBackend, AttentionChoice)>,
}

impl Dispatcher {
    /// Selects from the global registry.
    pub fn new(layer: usize, config: AttentionConfig, device: Device) -> Dispatcher {
        Dispatcher::build(layer, None, config, device)
    }

    /// Selects from `registry` (tests use a registry of their own).
    pub fn with_registry(
        layer: usize,
        registry: &'static Registry,
        config: AttentionConfig,
        device: Device,
    ) -> Dispatcher {
        Dispatcher::build(layer, Some(registry), config, device)
    }

    fn build(layer: usize, registry: Option<&'static Registry>, mut config: AttentionConfig, device: Device) -> Self {
        config.device = match &device {
            Device::Cpu => DeviceChoice::Cpu,
            Device::Gpu(g) => DeviceChoice::Gpu(g.ordinal()),
        };
        Dispatcher { layer, registry, config, device, cached: BTreeMap::new() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backend for `p`: the cached one for its class if it accepts `p`,
    /// else a fresh selection (which replaces the cached one).
    pub fn backend_for(&mut self, p: &AttentionProblem) -> Result<&'static dyn AttentionBackend, ModelError> {
        let class = ShapeClass::of(p);
        if let Some((backend, choice)) = self.cached.get_mut(&class) {
            if Registry::reasons(*backend, p, &self.device).is_empty() {
                choice.calls += 1;
                return Ok(*backend);
            }
        }
        let registry = match self.registry {
            Some(r) => r,
            None => Registry::global().map_err(|source| ModelError::Select { layer: self.layer, source })?,
        };
        let choice =
            registry.choose(p, &self.config).map_err(|source| ModelError::Select { layer: self.layer, source })?;
        let mut reason = format!("{}; {class} step", choice.reason);
        if let Some((old, _)) = self.cached.get(&class) {
            reason = format!("{reason}; replaced {} which cannot run {p}", old.name());
        }
        let backend: &'static dyn AttentionBackend = choice.backend;
        self.cached
            .insert(class, (backend, AttentionChoice { backend: backend.name(), reason, calls: 1, in_place: 0 }));
        Ok(backend)
    }

    /// Takes back one call counted by `backend_for` for `class` that did
    /// not run (the layer tried the paged form, which the backend does not
    /// take, and runs the call another way).
    pub fn forget_call(&mut self, class: ShapeClass) {
        if let Some((_, choice)) = self.cached.get_mut(&class) {
            choice.calls = choice.calls.saturating_sub(1);
        }
    }

    /// Counts one call of `class` that read the cache in place.
    pub fn note_in_place(&mut self, class: ShapeClass) {
        if let Some((_, choice)) = self.cached.get_mut(&class) {
            choice.in_place += 1;
        }
    }

    /// Choices made so far, by class.
    pub fn choices(&self) -> BTreeMap<ShapeClass, AttentionChoice> {
        self.cached.iter().map(|(c, (_, choice))| (*c, choice.clone())).collect()
    }
}

#[cfg(test)]
mod tests;
