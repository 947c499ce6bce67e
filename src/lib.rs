//! ROCmForge: scaled-dot-product attention through a registry of pluggable
//! backends (CPU, and GPU on ROCm/HIP and CUDA from one kernel source), with
//! selection that always explains itself.
//!
//! Describe the call with [`problem::AttentionProblem`] (tensors are
//! `[batch, seq, heads, head_dim]`), choose through
//! [`registry::AttentionConfig`], read [`registry::Registry::explain`], and
//! run the selected backend's `forward`:
//!
//! ```
//! use rocmforge::{AttentionConfig, AttentionProblem, BackendChoice, DType, Device, Mask, Registry, Tensor};
//!
//! let p = AttentionProblem::new(1, 16, 16, 4, 2, 32, DType::F32).with_mask(Mask::Causal);
//! let registry = Registry::global()?;
//! // A preference list; `backend: None` defers to ROCMFORGE_ATTENTION_BACKEND, then auto.
//! let config = AttentionConfig { backend: Some(BackendChoice::parse("cpu-flash,cpu-reference")?) };
//!
//! let (verdicts, chosen) = registry.explain(&p, &Device::Cpu, &config);
//! assert_eq!(verdicts.len(), registry.names().len());
//! assert!(chosen?.starts_with("cpu-flash"));
//!
//! let q = Tensor::random(p.q_shape(), p.dtype, 1)?;
//! let k = Tensor::random(p.kv_shape(), p.dtype, 2)?;
//! let v = Tensor::random(p.kv_shape(), p.dtype, 3)?;
//! let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu)?;
//! let selection = registry.select(&p, &Device::Cpu, &config)?;
//! selection.backend.forward(&p, &q, &k, &v, &mut out)?;
//!
//! // One comparison with the f64 oracle, the one `rocmforge run --check` uses.
//! let host = |t: &Tensor| t.download();
//! let report = rocmforge::compare::against_reference(&p, (&host(&q)?, &host(&k)?, &host(&v)?), &host(&out)?, &|_, _| {});
//! assert!(report.passed(), "{}", report.summary());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On a GPU, move the tensors with `Tensor::to_device(&Device::gpu(0)?)` and
//! select on that device: `examples/quickstart.rs` does both. NaN/Inf
//! semantics: docs/semantics.md.

pub mod backend;
pub mod capabilities;
pub mod compare;
pub mod device;
pub mod dtype;
pub mod env_flag;
pub mod io;
pub mod kernels;
pub mod mask_count;
pub mod problem;
pub mod registry;
pub mod shape_syntax;
pub mod stats;
pub mod tensor;

#[path = "../backends/mod.rs"]
pub mod backends;

pub use backend::{AttentionBackend, BackendError, BackendRegistration};
pub use capabilities::{Capabilities, HeadDims, Unsupported};
pub use device::{Device, DeviceError, DeviceKind};
pub use dtype::DType;
pub use problem::{AttentionProblem, Mask, MaskKind, ProblemError};
pub use registry::{AttentionConfig, BackendChoice, Registry, SelectError, BACKEND_ENV};
pub use tensor::{HostData, Tensor, TensorError};
