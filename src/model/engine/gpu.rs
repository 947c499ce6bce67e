//! [`GpuEngine`]: the dense operations on GPU matrices, with the kernels of
//! `kernels/model/` and the driver's GEMM. Every launch goes to the device's
//! one stream, so operations run in the order they are issued; results come
//! back to the host only through [`Matrix::to_vec`].

use super::kernels;
use super::params::{AddParams, CopyRowsParams, RmsNormParams, RopeParams, SwigluParams};
use crate::device::{Device, DeviceBuffer, DeviceError, GemmDesc, GpuDevice, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::KernelParams;
use crate::kernels::KernelSpec;
use crate::model::error::ModelError;
use crate::model::matrix::Matrix;
use crate::model::rope::Rope;
use crate::tensor::Tensor;
use std::sync::Arc;

const THREADS: u32 = 256;

pub struct GpuEngine {
    gpu: Arc<GpuDevice>,
}

/// `v` as the i32 a kernel parameter holds, or an error naming `what`.
fn i32_of(v: usize, what: &str) -> Result<i32, ModelError> {
    i32::try_from(v).map_err(|_| ModelError::Request(format!("{what} = {v} exceeds the kernels' 32-bit range")))
}

/// A grid-stride launch over `total` elements.
fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid: (blocks, 1, 1), block: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One side of a row copy.
pub struct RowsAt<'a> {
    /// Device address of row 0.
    pub ptr: u64,
    pub dtype: DType,
    /// Elements between consecutive rows.
    pub stride: usize,
    /// Row indices (`None` = 0, 1, 2, ...).
    pub index: Option<&'a [usize]>,
}

impl GpuEngine {
    pub fn new(gpu: Arc<GpuDevice>) -> GpuEngine {
        GpuEngine { gpu }
    }

    pub fn gpu(&self) -> &Arc<GpuDevice> {
        &self.gpu
    }

    fn device(&self) -> Device {
        Device::Gpu(self.gpu.clone())
    }

    /// Queues `spec` with `params`.
    ///
    /// # Safety
    /// `params` is the struct `spec`'s kernel takes, and every address in it
    /// covers what the kernel touches under `cfg`.
    unsafe fn launch<P: KernelParams>(
        &self,
        spec: &KernelSpec,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<(), ModelError> {
        let kernel = self.gpu.kernel(spec)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { self.gpu.launch_params(&kernel, &cfg, params)? };
        Ok(())
    }

    /// Uploads row indices as i64; the buffer must outlive the launch that
    /// reads it (dropping it frees synchronously, after queued work).
    fn upload_index(&self, index: &[usize]) -> Result<DeviceBuffer, DeviceError> {
        let wide: Vec<i64> = index.iter().map(|&i| i as i64).collect();
        self.gpu.upload(bytemuck::cast_slice(&wide))
    }

    /// `rows` rows of `width` elements from `src` to `dst`, converting dtypes.
    ///
    /// # Safety
    /// Every row either side addresses (through its index or 0..rows) lies
    /// inside live device memory of its dtype.
    pub unsafe fn copy_rows(
        &self,
        src: &RowsAt<'_>,
        dst: &RowsAt<'_>,
        rows: usize,
        width: usize,
    ) -> Result<(), ModelError> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let src_index = src.index.map(|i| self.upload_index(i)).transpose()?;
        let dst_index = dst.index.map(|i| self.upload_index(i)).transpose()?;
        let params = CopyRowsParams {
            src: src.ptr,
            dst: dst.ptr,
            src_rows: src_index.as_ref().map_or(0, DeviceBuffer::ptr),
            dst_rows: dst_index.as_ref().map_or(0, DeviceBuffer::ptr),
            src_stride: src.stride as i64,
            dst_stride: dst.stride as i64,
            rows: i32_of(rows, "rows")?,
            width: i32_of(width, "row width")?,
        };
        // SAFETY: forwarded from this function's contract; the index buffers
        // live until the end of this function, after the launch is queued.
        unsafe { self.launch(&kernels::copy_rows(src.dtype, dst.dtype), elementwise(rows * width), &params) }
    }

    fn f32_rows<'a>(m: &Matrix, index: Option<&'a [usize]>, what: &'static str) -> Result<RowsAt<'a>, ModelError> {
        Ok(RowsAt { ptr: m.gpu_ptr(0, what)?, dtype: DType::F32, stride: m.cols(), index })
    }

    pub fn select_rows(&self, x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows()) {
            return Err(ModelError::Request(format!("row {r} of a {}-row matrix", x.rows())));
        }
        let out = Matrix::nan(rows.len(), x.cols(), &self.device())?;
        let (src, dst) = (Self::f32_rows(x, Some(rows), "x")?, Self::f32_rows(&out, None, "out")?);
        // SAFETY: every index was checked against x's rows; out holds rows.len() rows.
        unsafe { self.copy_rows(&src, &dst, rows.len(), x.cols())? };
        Ok(out)
    }

    pub fn linear(&self, x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
        if x.cols() != w.cols() {
            return Err(ModelError::Request(format!("linear: x has {} columns, W {}", x.cols(), w.cols())));
        }
        let out = Matrix::nan(x.rows(), w.rows(), &self.device())?;
        if x.rows() == 0 {
            return Ok(out);
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
            ab_type: DType::F32,
            beta: 0.0,
            c: out.gpu_ptr(0, "out")?,
            ldc: m,
            stride_c: 0,
            c_type: DType::F32,
            batch: 1,
        };
        // SAFETY: W is out×in, x is T×in and out is T×out f32 matrices, as
        // the descriptor says.
        unsafe { self.gpu.gemm(&g)? };
        let mut out = out;
        if let Some(b) = bias {
            self.add_broadcast(&mut out, b, 1)?;
        }
        Ok(out)
    }

    pub fn rms_norm(&self, x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        if weight.cols() != x.cols() {
            return Err(ModelError::Request(format!("rms_norm: weight of {} for rows of {}", weight.cols(), x.cols())));
        }
        let out = Matrix::nan(x.rows(), x.cols(), &self.device())?;
        if x.rows() == 0 {
            return Ok(out);
        }
        let params = RmsNormParams {
            x: x.gpu_ptr(0, "x")?,
            weight: weight.gpu_ptr(0, "weight")?,
            out: out.gpu_ptr(0, "out")?,
            rows: i32_of(x.rows(), "rows")?,
            width: i32_of(x.cols(), "width")?,
            eps: eps as f32,
            reserved: 0,
        };
        let cfg = LaunchConfig { grid: (params.rows as u32, 1, 1), block: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block per row of x/out (rows × width f32); weight has width elements.
        unsafe { self.launch(&kernels::rms_norm(), cfg, &params)? };
        Ok(out)
    }

    pub fn swiglu(&self, gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
        let (width, up_ptr, in_stride) = match up {
            Some(u) if u.rows() == gate.rows() && u.cols() == gate.cols() => {
                (gate.cols(), u.gpu_ptr(0, "up")?, gate.cols())
            }
            Some(u) => return Err(ModelError::Request(format!("swiglu: up is {}x{}", u.rows(), u.cols()))),
            // [gate | up] rows: up starts half a row in.
            None => (gate.cols() / 2, gate.gpu_ptr(0, "gate_up")? + (gate.cols() / 2 * 4) as u64, gate.cols()),
        };
        let out = Matrix::nan(gate.rows(), width, &self.device())?;
        if gate.rows() == 0 {
            return Ok(out);
        }
        let params = SwigluParams {
            gate: gate.gpu_ptr(0, "gate")?,
            up: up_ptr,
            out: out.gpu_ptr(0, "out")?,
            in_stride: in_stride as i64,
            rows: i32_of(gate.rows(), "rows")?,
            width: i32_of(width, "width")?,
        };
        // SAFETY: gate/up rows of `width` at `in_stride` lie in their matrices; out is rows × width.
        unsafe { self.launch(&kernels::swiglu(), elementwise(gate.rows() * width), &params)? };
        Ok(out)
    }

    pub fn add(&self, x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
        if (x.rows(), x.cols()) != (y.rows(), y.cols()) {
            return Err(ModelError::Request("add: shapes differ".into()));
        }
        self.add_broadcast(x, y, y.rows())
    }

    /// `x[r] += y[r % y_rows]`.
    fn add_broadcast(&self, x: &mut Matrix, y: &Matrix, y_rows: usize) -> Result<(), ModelError> {
        if y.cols() != x.cols() || y.rows() < y_rows || y_rows == 0 {
            return Err(ModelError::Request("add: y does not fit x".into()));
        }
        if x.rows() == 0 {
            return Ok(());
        }
        let params = AddParams {
            x: x.gpu_ptr(0, "x")?,
            y: y.gpu_ptr(0, "y")?,
            rows: i32_of(x.rows(), "rows")?,
            width: i32_of(x.cols(), "width")?,
            y_rows: i32_of(y_rows, "y rows")?,
            reserved: 0,
        };
        // SAFETY: x is rows × width; y holds at least y_rows rows of width.
        unsafe { self.launch(&kernels::add_rows(), elementwise(x.rows() * x.cols()), &params) }
    }

    pub fn rope(&self, x: &mut Matrix, heads: usize, rope: &Rope, table: &Matrix) -> Result<(), ModelError> {
        let streams: i32 = if rope.is_two_d() { 2 } else { 1 };
        let pairs = rope.inv_freq().len();
        if x.cols() != heads * rope.head_dim()
            || table.rows() != x.rows()
            || table.cols() != streams as usize * pairs * 2
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
        unsafe { self.launch(&kernels::rope(), elementwise(total), &params) }
    }

    pub fn rows_as(&self, x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
        let rows = shape[0] * shape[1];
        let width = shape[2] * shape[3];
        if width != x.cols() || first + rows > x.rows() {
            return Err(ModelError::Request("rows_as: rows out of range".into()));
        }
        let out = Tensor::nan(shape, dtype, &self.device())?;
        let dst_ptr = out.gpu_buffer().map(DeviceBuffer::ptr).ok_or(DeviceError::NotOnGpu { tensor: "q" })?;
        let src = RowsAt { ptr: x.gpu_ptr(first, "x")?, dtype: DType::F32, stride: width, index: None };
        let dst = RowsAt { ptr: dst_ptr, dtype, stride: width, index: None };
        // SAFETY: rows `first .. first + rows` of x exist (checked); out holds rows × width.
        unsafe { self.copy_rows(&src, &dst, rows, width)? };
        Ok(out)
    }

    pub fn write_rows(&self, dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
        let [b, s, h, d] = src.shape();
        let (rows, width) = (b * s, h * d);
        if width != dst.cols() || first + rows > dst.rows() {
            return Err(ModelError::Request("write_rows: rows out of range".into()));
        }
        let src_ptr = src.gpu_buffer().map(DeviceBuffer::ptr).ok_or(DeviceError::NotOnGpu { tensor: "out" })?;
        let from = RowsAt { ptr: src_ptr, dtype: src.dtype(), stride: width, index: None };
        let to = RowsAt { ptr: dst.gpu_ptr(first, "dst")?, dtype: DType::F32, stride: width, index: None };
        // SAFETY: src is a contiguous rows × width tensor; dst rows `first ..
        // first + rows` exist (checked).
        unsafe { self.copy_rows(&from, &to, rows, width) }
    }
}
