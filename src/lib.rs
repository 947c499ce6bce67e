//! ROCmForge: scaled-dot-product attention through a registry of pluggable
//! backends (CPU, and GPU on ROCm/HIP and CUDA from one kernel source), with
//! selection that always explains itself.
//!
//! Start with [`registry::Registry::global`], describe the call with
//! [`problem::AttentionProblem`], and run the selected backend's `forward`.

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
