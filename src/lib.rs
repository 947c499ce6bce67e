//! ROCmForge: scaled-dot-product attention through a registry of pluggable
//! backends (CPU, and GPU on ROCm/HIP and CUDA from one kernel source), with
//! selection that always explains itself.
//!
//! Describe the call with [`problem::AttentionProblem`] (tensors are
//! `[batch, seq, heads, head_dim]`), choose through
//! [`registry::AttentionConfig`] (the library picks the device and the
//! backend: [`registry::Registry::choose`]), read
//! [`registry::Registry::explain_choice`], and run the backend's `forward`:
//!
//! ```
//! use rocmforge::registry::Verdict;
//! use rocmforge::{AttentionConfig, AttentionProblem, BackendChoice, DType, Mask, Registry, Tensor};
//!
//! let p = AttentionProblem::new(1, 16, 16, 4, 2, 32, DType::F32).with_mask(Mask::Causal);
//! let registry = Registry::global()?;
//! // A preference list; `AttentionConfig::default()` defers to
//! // ROCMFORGE_ATTENTION_BACKEND, then auto.
//! let config = AttentionConfig::with_backend(BackendChoice::parse("cpu-flash,cpu-reference")?);
//!
//! let explanation = registry.explain_choice(&p, &config)?;
//! assert_eq!(explanation.verdicts.len(), registry.names().len());
//! assert!(explanation.verdicts.iter().any(|(name, v)| *name == "cpu-flash" && *v == Verdict::Chosen));
//!
//! let choice = registry.choose(&p, &config)?; // device + backend + reason
//! let q = Tensor::random(p.q_shape(), p.dtype, 1)?.to_device(&choice.device)?;
//! let k = Tensor::random(p.kv_shape(), p.dtype, 2)?.to_device(&choice.device)?;
//! let v = Tensor::random(p.kv_shape(), p.dtype, 3)?.to_device(&choice.device)?;
//! let mut out = Tensor::nan(p.out_shape(), p.dtype, &choice.device)?;
//! choice.backend.forward(&p, &q, &k, &v, &mut out)?;
//!
//! // One comparison with the f64 oracle, the one `rocmforge run --check` uses.
//! let host = |t: &Tensor| t.download();
//! let report = rocmforge::compare::against_reference(&p, (&host(&q)?, &host(&k)?, &host(&v)?), &host(&out)?, &|_, _| {});
//! assert!(report.passed(), "{}", report.summary());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On a GPU, ask for `DeviceChoice::Gpu(0)` (or leave the device on auto)
//! and move the tensors with `Tensor::to_device`: `examples/quickstart.rs`
//! does both. NaN/Inf semantics: docs/semantics.md.

pub mod backend;
pub mod capabilities;
pub mod compare;
pub mod device;
pub mod dtype;
pub mod env_flag;
pub mod io;
pub mod kernels;
pub mod mask_count;
pub mod model;
pub mod problem;
pub mod registry;
pub mod selection;
pub mod shape_syntax;
pub mod stats;
pub mod tensor;
pub mod text;

#[path = "../backends/mod.rs"]
pub mod backends;

pub use backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall, PagedKvRefs};
pub use capabilities::{Capabilities, HeadDims, Unsupported};
pub use device::{Arch, Device, DeviceError, DeviceKind, MatrixUnit};
pub use dtype::DType;
pub use problem::{AttentionProblem, Mask, MaskKind, PagedKv, ProblemError, TensorRole, TensorStrides};
pub use registry::{AttentionConfig, BackendChoice, Registry, SelectError, BACKEND_ENV};
pub use selection::{Choice, DeviceChoice, Explanation};
pub use tensor::{HostData, IndexTensor, Layout, Tensor, TensorError, TensorView, TensorViewMut};
