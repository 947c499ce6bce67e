//! The trait every attention backend implements, and its registration record.

use crate::capabilities::{Capabilities, Unsupported};
use crate::device::{Device, DeviceError};
use crate::problem::{AttentionProblem, ProblemError};
use crate::tensor::{Tensor, TensorError};

/// Errors from running a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Problem(#[from] ProblemError),
    #[error("backend {backend} cannot run this problem: {}", crate::capabilities::join(.reasons.iter()))]
    Unsupported { backend: &'static str, reasons: Vec<Unsupported> },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// A way to compute attention. Implementations register themselves with
/// `inventory::submit!` (see `backends/`), and the registry selects among them.
pub trait AttentionBackend: Send + Sync + 'static {
    /// Stable kebab-case name, used by config and `ROCMFORGE_ATTENTION_BACKEND`.
    fn name(&self) -> &'static str;
    /// Higher wins in auto selection.
    fn priority(&self) -> i32;
    /// One-line description for tables.
    fn description(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Every reason this backend cannot run `p` on `device`; empty = it can.
    /// The default reads the capabilities; backends with device-specific
    /// limits (workspace, index width) add theirs.
    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        self.capabilities().reasons(p, device)
    }
    /// Every kernel specialization this backend may compile, so that
    /// `rocmforge kernels check` can build them all ahead of time.
    fn kernels(&self) -> Vec<crate::kernels::KernelSpec> {
        Vec::new()
    }
    /// Computes `out = softmax(mask(scale * q k^T)) v`. Tensors must live on
    /// the backend's device; `out` must already have the output shape.
    fn forward(
        &self,
        p: &AttentionProblem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &mut Tensor,
    ) -> Result<(), BackendError>;
}

/// What `inventory` collects: a constructor per backend.
pub struct BackendRegistration {
    pub create: fn() -> Box<dyn AttentionBackend>,
}

inventory::collect!(BackendRegistration);

/// Checks shapes, dtypes and placement of the four tensors against `p`, and
/// that the backend accepts the problem on the tensors' device. Every
/// `forward` calls this first; it returns that device.
pub fn check_call(
    backend: &dyn AttentionBackend,
    p: &AttentionProblem,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
) -> Result<Device, BackendError> {
    p.validate()?;
    let device = q.device();
    for (name, t) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        let expected = if name == "k" || name == "v" { p.kv_shape() } else { p.q_shape() };
        if t.shape() != expected {
            return Err(ProblemError::Shape { tensor: name, got: t.shape(), expected }.into());
        }
        if t.dtype() != p.dtype {
            return Err(ProblemError::DType { tensor: name, got: t.dtype(), expected: p.dtype }.into());
        }
        if !t.is_on(&device) {
            return Err(ProblemError::MixedDevices { a: name, b: "q", a_dev: t.location(), b_dev: q.location() }.into());
        }
    }
    let reasons = backend.check(p, &device);
    if reasons.is_empty() {
        Ok(device)
    } else {
        Err(BackendError::Unsupported { backend: backend.name(), reasons })
    }
}
