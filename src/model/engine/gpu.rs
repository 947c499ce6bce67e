//! [`GpuEngine`]: the dense operations on GPU matrices, with the kernels of
//! `kernels/model/` and the driver's GEMM, in the model's dtype (f32, f16 or
//! bf16; 16-bit GEMMs accumulate in f32). Every launch goes to the device's
//! one stream, so operations run in the order they are issued; outputs
//! come from the device's buffer pool (`pool.rs`), so a steady decode step
//! allocates nothing; results come back to the host only through
//! [`Matrix::to_vec`] and [`GpuEngine::argmax`].

use super::params::{AddParams, ArgmaxParams, RmsNormParams, RopeParams, SwigluParams};
use super::pool::{state_for, DeviceState, KernelId, PoolStats};
use crate::device::{Device, DeviceBuffer, DeviceError, GemmDesc, GpuDevice, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::KernelParams;
use crate::model::error::ModelError;
use crate::model::matrix::{Columns, Matrix};
use crate::model::rope::Rope;
use crate::tensor::Tensor;
use std::sync::Arc;

pub use super::gpu_rows::RowsAt;

const THREADS: u32 = 256;
/// Columns per argmax block (about 8 per thread), and at most this many
/// blocks per row.
const ARGMAX_SPAN: usize = 2048;
const ARGMAX_CHUNKS: usize = 64;
/// Row elements one RMSNorm thread keeps in registers (`RF_NORM_VALUES`).
const NORM_VALUES: usize = 8;

pub struct GpuEngine {
    gpu: Arc<GpuDevice>,
    state: Arc<DeviceState>,
    /// The model's dtype: weights and activations.
    dtype: DType,
}

/// `v` as the i32 a kernel parameter holds, or an error naming `what`.
pub(super) fn i32_of(v: usize, what: &str) -> Result<i32, ModelError> {
    i32::try_from(v).map_err(|_| ModelError::Request(format!("{what} = {v} exceeds the kernels' 32-bit range")))
}

/// A grid-stride launch over `total` elements.
pub(super) fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid: (blocks, 1, 1), block: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn same_dtype(what: &str, a: &Matrix, b: &Matrix) -> Result<(), ModelError> {
    if a.dtype() != b.dtype() {
        return Err(ModelError::Request(format!("{what}: {} and {} operands", a.dtype(), b.dtype())));
    }
    Ok(())
}

impl GpuEngine {
    /// An engine for f32 models on `gpu`.
    pub fn new(gpu: Arc<GpuDevice>) -> GpuEngine {
        GpuEngine::with_dtype(gpu, DType::F32)
    }

    /// An engine whose weights and activations are `dtype`.
    pub fn with_dtype(gpu: Arc<GpuDevice>, dtype: DType) -> GpuEngine {
        GpuEngine { state: state_for(&gpu), gpu, dtype }
    }

    pub fn gpu(&self) -> &Arc<GpuDevice> {
        &self.gpu
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub(super) fn device(&self) -> Device {
        Device::Gpu(self.gpu.clone())
    }

    /// Counters of this device's buffer pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.state.stats()
    }

    /// A pooled `rows × cols` matrix of `dtype`; its contents are undefined
    /// (NaN when poisoning is on: see [`super::pool::poison_new_activations`]).
    pub fn matrix(&self, rows: usize, cols: usize, dtype: DType) -> Result<Matrix, ModelError> {
        let m = Matrix::pooled(rows, cols, dtype, &self.state)?;
        if super::pool::poisoning() {
            m.poison()?;
        }
        Ok(m)
    }

    /// Queues kernel `id` with `params`.
    ///
    /// # Safety
    /// `params` is the struct the kernel takes, and every address in it
    /// covers what the kernel touches under `cfg`.
    pub(super) unsafe fn launch<P: KernelParams>(
        &self,
        id: KernelId,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<(), ModelError> {
        let kernel = self.state.kernel(id)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { self.gpu.launch_params(&kernel, &cfg, params)? };
        Ok(())
    }

    /// `x Wᵀ + b` for `w` of `[out, in]`, in `x`'s dtype (f32 accumulation).
    /// A bias is written into the output first and the GEMM adds to it
    /// (beta = 1), so the sum is rounded once, as a fused linear does.
    pub fn linear(&self, x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
        if x.cols() != w.cols() {
            return Err(ModelError::Request(format!("linear: x has {} columns, W {}", x.cols(), w.cols())));
        }
        same_dtype("linear", x, w)?;
        let out = self.matrix(x.rows(), w.rows(), x.dtype())?;
        if x.rows() == 0 {
            return Ok(out);
        }
        let mut beta = 0.0;
        if let Some(b) = bias {
            same_dtype("linear bias", x, b)?;
            self.broadcast_row(b, &out)?;
            beta = 1.0;
        }
        // Row-major y[T, out] = x[T, in] · W[out, in]ᵀ is, column-major,
        // y[out, T] = op(W)[out, in] · x[in, T] with W read transposed.
        let (m, n, k) =
            (i32_of(w.rows(), "out features")?, i32_of(x.rows(), "tokens")?, i32_of(w.cols(), "in features")?);
        let g = GemmDesc {
            trans_a: true,
            trans_b: false,
            m,
            n,
            k,
            alpha: 1.0,
            a: w.gpu_ptr(0, "weight")?,
            lda: k,
            stride_a: 0,
            b: x.gpu_ptr(0, "x")?,
            ldb: k,
            stride_b: 0,
            ab_type: x.dtype(),
            beta,
            c: out.gpu_ptr(0, "out")?,
            ldc: m,
            stride_c: 0,
            c_type: x.dtype(),
            batch: 1,
        };
        // SAFETY: W is out×in, x is T×in and out is T×out matrices of the
        // descriptor's dtype.
        unsafe { self.gpu.gemm(&g)? };
        Ok(out)
    }

    /// RMSNorm of `x`'s rows; with `residual`, `x += residual` first (stored).
    fn norm(&self, x: &Matrix, residual: Option<&Matrix>, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        if weight.cols() != x.cols() {
            return Err(ModelError::Request(format!("rms_norm: weight of {} for rows of {}", weight.cols(), x.cols())));
        }
        same_dtype("rms_norm", x, weight)?;
        let residual = match residual {
            Some(r) if (r.rows(), r.cols()) == (x.rows(), x.cols()) => {
                same_dtype("residual", x, r)?;
                r.gpu_ptr(0, "residual")?
            }
            Some(_) => return Err(ModelError::Request("residual: shapes differ".into())),
            None => 0,
        };
        let out = self.matrix(x.rows(), x.cols(), x.dtype())?;
        if x.rows() == 0 {
            return Ok(out);
        }
        let params = RmsNormParams {
            x: x.gpu_ptr(0, "x")?,
            residual,
            weight: weight.gpu_ptr(0, "weight")?,
            out: out.gpu_ptr(0, "out")?,
            rows: i32_of(x.rows(), "rows")?,
            width: i32_of(x.cols(), "width")?,
            eps: eps as f32,
            reserved: 0,
        };
        // Enough threads to hold the row in registers (NORM_VALUES each), in
        // whole warps; rows past 1024 × NORM_VALUES loop instead.
        let warp = self.gpu.info().warp_size.max(1) as usize;
        let threads = x.cols().div_ceil(NORM_VALUES).div_ceil(warp) * warp;
        let threads = threads.clamp(warp, 1024.min(self.gpu.info().max_threads_per_block as usize)) as u32;
        let cfg = LaunchConfig { grid: (params.rows as u32, 1, 1), block: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block per row of x/residual/out (rows × width); weight has width elements.
        unsafe { self.launch(KernelId::RmsNorm(x.dtype()), cfg, &params)? };
        Ok(out)
    }

    pub fn rms_norm(&self, x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        self.norm(x, None, weight, eps)
    }

    /// `h += delta`, then RMSNorm of the new `h` (one kernel).
    pub fn add_rms_norm(
        &self,
        h: &mut Matrix,
        delta: &Matrix,
        weight: &Matrix,
        eps: f64,
    ) -> Result<Matrix, ModelError> {
        self.norm(h, Some(delta), weight, eps)
    }

    pub fn swiglu(&self, gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
        let elem = gate.dtype().size_in_bytes();
        let (width, up_ptr) = match up {
            Some(u) if u.rows() == gate.rows() && u.cols() == gate.cols() => {
                same_dtype("swiglu", gate, u)?;
                (gate.cols(), u.gpu_ptr(0, "up")?)
            }
            Some(u) => return Err(ModelError::Request(format!("swiglu: up is {}x{}", u.rows(), u.cols()))),
            // [gate | up] rows: up starts half a row in.
            None => (gate.cols() / 2, gate.gpu_ptr(0, "gate_up")? + (gate.cols() / 2 * elem) as u64),
        };
        let out = self.matrix(gate.rows(), width, gate.dtype())?;
        if gate.rows() == 0 {
            return Ok(out);
        }
        let params = SwigluParams {
            gate: gate.gpu_ptr(0, "gate")?,
            up: up_ptr,
            out: out.gpu_ptr(0, "out")?,
            in_stride: gate.cols() as i64,
            rows: i32_of(gate.rows(), "rows")?,
            width: i32_of(width, "width")?,
        };
        // SAFETY: gate/up rows of `width` at `in_stride` lie in their matrices; out is rows × width.
        unsafe { self.launch(KernelId::Swiglu(gate.dtype()), elementwise(gate.rows() * width), &params)? };
        Ok(out)
    }

    pub fn add(&self, x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
        if (x.rows(), x.cols()) != (y.rows(), y.cols()) {
            return Err(ModelError::Request("add: shapes differ".into()));
        }
        same_dtype("add", x, y)?;
        if x.rows() == 0 {
            return Ok(());
        }
        let params = AddParams {
            x: x.gpu_ptr(0, "x")?,
            y: y.gpu_ptr(0, "y")?,
            rows: i32_of(x.rows(), "rows")?,
            width: i32_of(x.cols(), "width")?,
            y_rows: i32_of(y.rows(), "y rows")?,
            reserved: 0,
        };
        // SAFETY: x and y are rows × width matrices of one dtype.
        unsafe { self.launch(KernelId::Add(x.dtype()), elementwise(x.rows() * x.cols()), &params) }
    }

    pub fn rope(&self, x: &mut Matrix, heads: usize, rope: &Rope, table: &Matrix) -> Result<(), ModelError> {
        let streams: i32 = if rope.is_two_d() { 2 } else { 1 };
        let pairs = rope.inv_freq().len();
        if x.cols() < heads * rope.head_dim()
            || table.rows() != x.rows()
            || table.cols() != streams as usize * pairs * 2
            || table.dtype() != DType::F32
        {
            return Err(ModelError::Request("rope: table or matrix shape does not match".into()));
        }
        if x.rows() == 0 {
            return Ok(());
        }
        let params = RopeParams {
            x: x.gpu_ptr(0, "x")?,
            cos_sin: table.gpu_ptr(0, "cos/sin table")?,
            token_stride: x.cols() as i64,
            tokens: i32_of(x.rows(), "tokens")?,
            heads: i32_of(heads, "heads")?,
            head_dim: i32_of(rope.head_dim(), "head_dim")?,
            pairs: i32_of(pairs, "pairs")?,
            streams,
            interleaved: (rope.style() == crate::model::config::RopeStyle::Interleaved) as i32,
        };
        let total = x.rows() * heads * streams as usize * pairs;
        // SAFETY: x is tokens × heads·head_dim; the table has streams·pairs·2
        // floats per token; rotated dims stay below rotary_dim <= head_dim.
        unsafe { self.launch(KernelId::Rope(x.dtype()), elementwise(total), &params) }
    }

    /// The index of each row's largest element (first on ties, NaN never
    /// wins), computed on the device; only the indices come back. Each row
    /// is split over up to [`ARGMAX_CHUNKS`] blocks (a 128k vocabulary in
    /// one block reads at a small fraction of the memory bandwidth), whose
    /// partial results a second kernel reduces. A row with nothing above
    /// -inf (all NaN) is [`ModelError::Greedy`], as on the host.
    pub fn argmax(&self, x: &Matrix) -> Result<Vec<u32>, ModelError> {
        if x.cols() >= 1 << 24 || x.cols() == 0 {
            return Err(ModelError::Request(format!("argmax over rows of {} (1 ..= 2^24)", x.cols())));
        }
        if x.rows() == 0 {
            return Ok(Vec::new());
        }
        let chunks = x.cols().div_ceil(ARGMAX_SPAN).min(ARGMAX_CHUNKS);
        let out = self.matrix(x.rows(), 1, DType::F32)?;
        let partial = self.matrix(2 * x.rows(), chunks, DType::F32)?;
        let params = ArgmaxParams {
            x: x.gpu_ptr(0, "x")?,
            out: out.gpu_ptr(0, "out")?,
            partial: partial.gpu_ptr(0, "partial")?,
            rows: i32_of(x.rows(), "rows")?,
            width: i32_of(x.cols(), "width")?,
            chunks: chunks as i32,
            reserved: 0,
        };
        let rows = u32::try_from(x.rows()).ok().filter(|&r| r <= 65_535);
        let rows = rows.ok_or_else(|| ModelError::Request(format!("argmax over {} rows (at most 65535)", x.rows())))?;
        let stage1 = LaunchConfig { grid: (chunks as u32, rows, 1), block: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let stage2 = LaunchConfig { grid: (rows, 1, 1), block: (64, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: stage 1 reads rows × width elements of x and writes
        // 2 × rows × chunks floats of `partial`; stage 2 reads those and
        // writes one f32 per row of `out`.
        unsafe {
            self.launch(KernelId::ArgmaxPartial(x.dtype()), stage1, &params)?;
            self.launch(KernelId::ArgmaxFinish, stage2, &params)?;
        }
        let ids: Vec<u32> = out.to_vec()?.into_iter().map(|i| i as u32).collect();
        // The device answers 0 for a row with no candidate (all NaN), and
        // the first -inf for a row with nothing above -inf: rows answered 0
        // are checked against the chunks' results (one more small download,
        // no device allocation, only then).
        if ids.contains(&0) {
            self.check_greedy_rows(x, &ids, &partial.to_vec()?, chunks)?;
        }
        Ok(ids)
    }

    /// [`ModelError::Greedy`] for the first row answered 0 whose chunks hold
    /// no candidate above -inf; the row itself is downloaded then, so the
    /// error counts its -inf and NaN values as the host's would.
    fn check_greedy_rows(&self, x: &Matrix, ids: &[u32], partial: &[f32], chunks: usize) -> Result<(), ModelError> {
        let rows = ids.len();
        for (r, _) in ids.iter().enumerate().filter(|(_, &id)| id == 0) {
            let slots = r * chunks..(r + 1) * chunks;
            let candidates = slots.clone().filter(|&s| partial[rows * chunks + s].to_bits() != 0x7fff_ffff);
            let best = candidates.map(|s| partial[s]).fold(f32::NEG_INFINITY, f32::max);
            if best > f32::NEG_INFINITY {
                continue;
            }
            let row = self.select_rows(x, &[r])?.to_vec()?;
            crate::model::sampling::greedy_token(&row).map_err(|source| ModelError::Greedy { seq: r, source })?;
        }
        Ok(())
    }

    /// Rows `first ..` of `x` as a new `[b, s, h, d]` tensor of `dtype`.
    pub fn rows_as(&self, x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
        self.columns_as(x.all_columns(), first, shape, dtype)
    }

    /// Rows `first ..` of columns `x` as a new contiguous `[b, s, h, d]` tensor of `dtype`.
    pub fn columns_as(
        &self,
        x: Columns<'_>,
        first: usize,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<Tensor, ModelError> {
        let rows = shape[0] * shape[1];
        let width = shape[2] * shape[3];
        if width != x.width() || first + rows > x.rows() {
            return Err(ModelError::Request("rows_as: rows out of range".into()));
        }
        let out = Tensor::nan(shape, dtype, &self.device())?;
        let dst_ptr = out.gpu_buffer().map(DeviceBuffer::ptr).ok_or(DeviceError::NotOnGpu { tensor: "q" })?;
        let src = RowsAt { ptr: x.gpu_ptr(first, "x")?, dtype: x.dtype(), stride: x.row_stride(), index: None };
        let dst = RowsAt { ptr: dst_ptr, dtype, stride: width, index: None };
        // SAFETY: rows `first .. first + rows` of x exist and its columns
        // lie inside each row (checked); out holds rows × width.
        unsafe { self.copy_rows(&src, &dst, rows, width)? };
        Ok(out)
    }

    /// Writes `src` (any dtype, `[b, s, h, d]` contiguous) into rows
    /// `first ..` of `dst`, converted to `dst`'s dtype.
    pub fn write_rows(&self, dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
        let [b, s, h, d] = src.shape();
        let (rows, width) = (b * s, h * d);
        if width != dst.cols() || first + rows > dst.rows() {
            return Err(ModelError::Request("write_rows: rows out of range".into()));
        }
        let src_ptr = src.gpu_buffer().map(DeviceBuffer::ptr).ok_or(DeviceError::NotOnGpu { tensor: "out" })?;
        let from = RowsAt { ptr: src_ptr, dtype: src.dtype(), stride: width, index: None };
        let to = RowsAt { ptr: dst.gpu_ptr(first, "dst")?, dtype: dst.dtype(), stride: width, index: None };
        // SAFETY: src is a contiguous rows × width tensor; dst rows `first ..
        // first + rows` exist (checked).
        unsafe { self.copy_rows(&from, &to, rows, width) }
    }
}
