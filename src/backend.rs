//! The trait every attention backend implements, its registration record,
//! and the one entry point that validates a call before any backend runs.
//!
//! Callers use [`forward`](dyn AttentionBackend::forward) on a
//! `&dyn AttentionBackend`. It checks shapes, strides, dtypes, placement and
//! the backend's own `check` once, and only then calls the backend's `run`
//! with a [`CheckedCall`] — which nothing outside this module can build, so
//! no backend can be reached with an unchecked call.

use crate::capabilities::{Capabilities, Unsupported};
use crate::device::{Device, DeviceError, GpuDevice};
use crate::kernels::params::QkvoStrides;
use crate::problem::{AttentionProblem, ProblemError, TensorRole};
use crate::tensor::{IndexTensor, TensorError, TensorView, TensorViewMut};
use std::sync::Arc;

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
    /// A state validation rules out; reaching it is a bug in the backend.
    #[error("internal error in {backend}: {what} (this is a bug)")]
    Internal { backend: &'static str, what: &'static str },
    /// An environment variable the backend reads has a value it cannot use.
    #[error("{var}: {problem}")]
    Environment { var: &'static str, problem: String },
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
    /// Whether the backend reads K and V from a paged pool through a block
    /// table (`AttentionProblem::paged`). Backends that do not (the default)
    /// are given the reason `Unsupported::PagedKv` for paged problems by
    /// [`reasons`], so selection, `explain` and `forward` all say why.
    fn accepts_paged_kv(&self) -> bool {
        false
    }
    /// Computes `out = softmax(mask(scale * q k^T)) v` for a call that has
    /// already passed every check (including this backend's `check`).
    fn run(&self, call: CheckedCall<'_>) -> Result<(), BackendError>;
    /// The kernels this backend runs for `dtype` on this machine, in words,
    /// where that depends on the machine (CPU backends that pick an ISA at
    /// run time); `None` otherwise. `explain` and `backends` show it.
    fn kernels_here(&self, dtype: crate::dtype::DType) -> Option<String> {
        let _ = dtype;
        None
    }
}

impl dyn AttentionBackend {
    /// Validates the call once, then runs it. Tensors (or views of them)
    /// must have the problem's shapes, strides and dtype, live on one
    /// device, and the backend must accept the problem on that device.
    pub fn forward<'a>(
        &self,
        p: &'a AttentionProblem,
        q: impl Into<TensorView<'a>>,
        k: impl Into<TensorView<'a>>,
        v: impl Into<TensorView<'a>>,
        out: impl Into<TensorViewMut<'a>>,
    ) -> Result<(), BackendError> {
        let call = CheckedCall::new(self, p, q.into(), k.into(), v.into(), None, out.into())?;
        self.run(call)
    }

    /// [`forward`](Self::forward) for a problem with paged K/V: `k` and `v`
    /// are the block pools, `paged` the block table and sequence lengths.
    pub fn forward_paged<'a>(
        &self,
        p: &'a AttentionProblem,
        q: impl Into<TensorView<'a>>,
        k: impl Into<TensorView<'a>>,
        v: impl Into<TensorView<'a>>,
        paged: PagedKvRefs<'a>,
        out: impl Into<TensorViewMut<'a>>,
    ) -> Result<(), BackendError> {
        let call = CheckedCall::new(self, p, q.into(), k.into(), v.into(), Some(paged), out.into())?;
        self.run(call)
    }
}

/// Every reason `backend` cannot run the (valid) problem `p` on `device`:
/// its own `check`, plus the paged-K/V rule every backend declares through
/// [`AttentionBackend::accepts_paged_kv`].
pub fn reasons(backend: &dyn AttentionBackend, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
    let mut reasons = backend.check(p, device);
    if p.paged.is_some() && !backend.accepts_paged_kv() {
        reasons.push(Unsupported::PagedKv);
    }
    reasons
}

/// The integer inputs of a paged call (see `problem::PagedKv`): the block
/// table, `[batch, table_width]` row-major, and the length of each sequence.
/// Both live on the device of the other tensors. On the host their values
/// are checked; on a GPU the kernel guards every read instead (an entry out
/// of range makes the rows that read it NaN, never an out-of-bounds access).
#[derive(Clone, Copy, Debug)]
pub struct PagedKvRefs<'a> {
    pub block_table: &'a IndexTensor,
    pub seq_lens: &'a IndexTensor,
}

impl PagedKvRefs<'_> {
    fn check(&self, p: &AttentionProblem, device: &Device) -> Result<(), BackendError> {
        let Some(paged) = p.paged else { return Err(ProblemError::UnexpectedPagedRefs.into()) };
        let tensors = [
            ("block_table", self.block_table, p.batch.saturating_mul(paged.table_width)),
            ("seq_lens", self.seq_lens, p.batch),
        ];
        for (what, t, expected) in tensors {
            if t.len() != expected {
                return Err(ProblemError::PagedIndexLen { what, got: t.len(), expected }.into());
            }
            if !same_device(&t.device(), device) {
                let (a_dev, b_dev) = (t.device().label(), device.label());
                return Err(ProblemError::MixedDevices { a: what, b: "q", a_dev, b_dev }.into());
            }
        }
        // Host values are checked here: each length, and the table entries
        // that length reads (entries past it are never read).
        if let (Some(lens), Some(table)) = (self.seq_lens.host(), self.block_table.host()) {
            let bad =
                |what, index, value: i32, max| ProblemError::PagedIndexValue { what, index, value: value as i64, max };
            for (b, &len) in lens.iter().enumerate() {
                if len < 0 || len as usize > p.seq_kv {
                    return Err(bad("seq_lens", b, len, p.seq_kv).into());
                }
                let row = b * paged.table_width;
                for (i, &block) in table[row..row + (len as usize).div_ceil(paged.block_size)].iter().enumerate() {
                    if block < 0 || block as usize >= paged.num_blocks {
                        return Err(bad("block_table", row + i, block, paged.num_blocks - 1).into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// A validated call: the only way into a backend's `run`.
pub struct CheckedCall<'a> {
    problem: &'a AttentionProblem,
    device: Device,
    q: TensorView<'a>,
    k: TensorView<'a>,
    v: TensorView<'a>,
    paged: Option<PagedKvRefs<'a>>,
    out: TensorViewMut<'a>,
}

impl<'a> CheckedCall<'a> {
    fn new(
        backend: &dyn AttentionBackend,
        p: &'a AttentionProblem,
        q: TensorView<'a>,
        k: TensorView<'a>,
        v: TensorView<'a>,
        paged: Option<PagedKvRefs<'a>>,
        out: TensorViewMut<'a>,
    ) -> Result<CheckedCall<'a>, BackendError> {
        p.validate()?;
        let device = q.device();
        let tensors = [
            (TensorRole::Q, q.shape(), q.layout().strides, q.dtype(), q.device()),
            (TensorRole::K, k.shape(), k.layout().strides, k.dtype(), k.device()),
            (TensorRole::V, v.shape(), v.layout().strides, v.dtype(), v.device()),
            (TensorRole::Out, out.shape(), out.layout().strides, out.dtype(), out.device()),
        ];
        for (role, shape, strides, dtype, dev) in tensors {
            let tensor = role.name();
            let expected = p.shape_of(role);
            if shape != expected {
                return Err(ProblemError::Shape { tensor, got: shape, expected }.into());
            }
            let expected = p.strides_of(role);
            if strides != expected {
                return Err(ProblemError::Strides { tensor, got: strides, expected }.into());
            }
            if dtype != p.dtype {
                return Err(ProblemError::DType { tensor, got: dtype, expected: p.dtype }.into());
            }
            if !same_device(&dev, &device) {
                return Err(ProblemError::MixedDevices {
                    a: tensor,
                    b: "q",
                    a_dev: dev.label(),
                    b_dev: device.label(),
                }
                .into());
            }
        }
        match (&paged, p.paged) {
            (Some(refs), _) => refs.check(p, &device)?,
            (None, Some(_)) => return Err(ProblemError::MissingPagedRefs.into()),
            (None, None) => {}
        }
        let reasons = reasons(backend, p, &device);
        if !reasons.is_empty() {
            return Err(BackendError::Unsupported { backend: backend.name(), reasons });
        }
        Ok(CheckedCall { problem: p, device, q, k, v, paged, out })
    }

    pub fn problem(&self) -> &'a AttentionProblem {
        self.problem
    }

    /// The device every tensor lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn q(&self) -> TensorView<'a> {
        self.q
    }

    pub fn k(&self) -> TensorView<'a> {
        self.k
    }

    pub fn v(&self) -> TensorView<'a> {
        self.v
    }

    /// The block table and sequence lengths of a paged problem.
    pub fn paged(&self) -> Option<PagedKvRefs<'a>> {
        self.paged
    }

    pub fn out(&mut self) -> &mut TensorViewMut<'a> {
        &mut self.out
    }

    /// What every GPU backend's `run` starts from: the GPU, the device
    /// addresses of Q, K, V and O, and their strides. `backend` names the
    /// caller in the (unreachable) error for a call that is not on a GPU.
    pub fn gpu_pointers(&self, backend: &'static str) -> Result<GpuCall, BackendError> {
        let Device::Gpu(gpu) = &self.device else {
            return Err(BackendError::Internal { backend, what: "a checked GPU call is on the CPU" });
        };
        let ptr = |v: Option<u64>, tensor| v.ok_or(DeviceError::NotOnGpu { tensor });
        Ok(GpuCall {
            gpu: Arc::clone(gpu),
            q: ptr(self.q.gpu_ptr(), "q")?,
            k: ptr(self.k.gpu_ptr(), "k")?,
            v: ptr(self.v.gpu_ptr(), "v")?,
            o: ptr(self.out.gpu_ptr(), "out")?,
            strides: self.kernel_strides(),
        })
    }

    /// The element strides of Q, K, V and O as the kernels' parameter
    /// structs embed them, from the checked views (which equal the
    /// problem's strides; with paged K/V, K's and V's batch stride is one
    /// pool block).
    pub fn kernel_strides(&self) -> QkvoStrides {
        let views = [self.q.layout(), self.k.layout(), self.v.layout(), self.out.layout()];
        QkvoStrides::new(views.map(|l| l.strides))
    }
}

/// A checked call on a GPU ([`CheckedCall::gpu_pointers`]): the device, the
/// address of element `[0, 0, 0, 0]` of each tensor, and the strides.
#[derive(Clone, Debug)]
pub struct GpuCall {
    pub gpu: Arc<GpuDevice>,
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub strides: QkvoStrides,
}

/// The vector loads of the fused kernels need every tensor 16-byte
/// aligned; `addrs` names each tensor's address. A misaligned one is a
/// typed `Unsupported` reason of `backend`, not a fault on the device.
pub fn require_16_byte_aligned(backend: &'static str, addrs: [(&'static str, u64); 4]) -> Result<(), BackendError> {
    let reasons: Vec<Unsupported> = addrs
        .into_iter()
        .filter(|(_, address)| address % 16 != 0)
        .map(|(tensor, address)| Unsupported::Misaligned { tensor, address })
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(BackendError::Unsupported { backend, reasons })
    }
}

fn same_device(a: &Device, b: &Device) -> bool {
    match (a, b) {
        (Device::Cpu, Device::Cpu) => true,
        (Device::Gpu(x), Device::Gpu(y)) => x.same_as(y),
        _ => false,
    }
}

/// What `inventory` collects: a constructor per backend.
pub struct BackendRegistration {
    pub create: fn() -> Box<dyn AttentionBackend>,
}

inventory::collect!(BackendRegistration);
