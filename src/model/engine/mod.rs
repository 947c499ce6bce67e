//! Where the decoder's dense math runs: the host (f32 loops in
//! [`crate::model::ops`]) or a GPU (the kernels of `kernels/model/` and the
//! driver's GEMM). The decoder and the attention layer are written once
//! against [`Engine`]; every activation is a [`Matrix`] on the engine's device.
//!
//! An engine has the model's dtype. On a GPU, weights and activations are
//! stored in it (16-bit GEMMs accumulate in f32); on the host they are f32
//! values rounded to it where transformers' model holds that dtype.

pub(crate) mod gpu;
mod gpu_rows;
mod host;
pub mod kernels;
pub mod params;
pub mod pool;

pub use gpu::GpuEngine;
pub use gpu_rows::RowsAt;
pub use host::{round_slice, HostEngine};
pub use pool::{poison_new_activations, PoolStats};

use super::alloc::AllocError;
use super::error::ModelError;
use super::matrix::{Columns, Matrix};
use super::rope::{Positions, Rope};
use super::weights::Weight;
use crate::device::Device;
use crate::dtype::DType;
use crate::tensor::{HostData, Tensor, TensorError, TensorView, TensorViewMut};

/// A device's implementation of the decoder's dense operations.
pub enum Engine {
    Host(HostEngine),
    Gpu(GpuEngine),
}

/// Rotary positions of one forward call: the positions (host) and, on a
/// GPU, their cos/sin table, computed once and shared by every layer.
pub struct RopeInput {
    pub positions: Vec<usize>,
    table: Option<Matrix>,
}

/// The query rows of one attention call, in the problem's dtype: a view of
/// the activations when they already are that dtype on a GPU, else a copy.
pub enum AttentionInput<'a> {
    View(TensorView<'a>),
    Copy(Tensor),
}

impl AttentionInput<'_> {
    pub fn view(&self) -> TensorView<'_> {
        match self {
            AttentionInput::View(v) => *v,
            AttentionInput::Copy(t) => t.view(),
        }
    }
}

/// Where one attention call writes its output: straight into the rows of
/// the layer's output matrix when the dtypes agree on a GPU, else into a
/// staging tensor that [`AttentionOutput::finish`] converts into them.
pub struct AttentionOutput<'a> {
    dst: &'a mut Matrix,
    first: usize,
    shape: [usize; 4],
    staged: Option<Tensor>,
}

impl AttentionOutput<'_> {
    pub fn view_mut(&mut self) -> Result<TensorViewMut<'_>, ModelError> {
        match &mut self.staged {
            Some(t) => Ok(t.view_mut()),
            None => Ok(self.dst.rows_view_mut(self.first, self.shape)?),
        }
    }

    /// Moves a staged output into the destination rows (nothing to do otherwise).
    pub fn finish(self, engine: &Engine) -> Result<(), ModelError> {
        match &self.staged {
            Some(t) => engine.write_rows(self.dst, self.first, t),
            None => Ok(()),
        }
    }
}

/// `w`'s elements as `dtype` host data (no copy of the conversion when it
/// already is `dtype`: the caller uploads from the weight itself then).
fn converted(w: &Weight, dtype: DType) -> Option<HostData> {
    (w.dtype() != dtype).then(|| HostData::from_f32(dtype, &w.to_f32()))
}

impl Engine {
    /// An f32 engine for `device`.
    pub fn for_device(device: &Device) -> Engine {
        Engine::new(device, DType::F32)
    }

    /// An engine for `device` whose model dtype is `dtype`.
    pub fn new(device: &Device, dtype: DType) -> Engine {
        match device {
            Device::Cpu => Engine::Host(HostEngine::new(dtype)),
            Device::Gpu(g) => Engine::Gpu(GpuEngine::with_dtype(g.clone(), dtype)),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Engine::Host(_) => Device::Cpu,
            Engine::Gpu(g) => Device::Gpu(g.gpu().clone()),
        }
    }

    /// The model's dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Engine::Host(h) => h.dtype(),
            Engine::Gpu(g) => g.dtype(),
        }
    }

    /// A weight as a matrix on this device in the model's dtype: `[out,
    /// in]` matrices keep their shape, vectors become one row. On a GPU the
    /// checkpoint's elements are uploaded as stored when they already are
    /// the model's dtype.
    pub fn weight(&self, w: &Weight) -> Result<Matrix, ModelError> {
        let (rows, cols) = match w.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            other => return Err(ModelError::Request(format!("weight of shape {other:?} is not 1-d or 2-d"))),
        };
        match self {
            Engine::Host(h) => {
                let mut values = w.to_f32();
                round_slice(h.dtype(), &mut values);
                Ok(Matrix::from_host(rows, cols, values)?)
            }
            Engine::Gpu(g) => {
                let owned = converted(w, g.dtype());
                let data = owned.as_ref().unwrap_or(&w.data);
                if data.len() != rows * cols {
                    return Err(ModelError::Request(format!("weight of {} elements for {rows}x{cols}", data.len())));
                }
                let buf = g.gpu().upload(data.as_bytes())?;
                Ok(Matrix::from_tensor(Tensor::from_gpu_buffer([1, rows, 1, cols], data.dtype(), buf)?)?)
            }
        }
    }

    /// A new `rows × cols` activation matrix in the model's dtype, to be
    /// written (NaN on the host; pooled on a GPU).
    pub fn activation(&self, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(_) => Ok(Matrix::nan(rows, cols, &Device::Cpu)?),
            Engine::Gpu(g) => g.matrix(rows, cols, g.dtype()),
        }
    }

    /// Rows `ids` of `table`.
    pub fn embed(&self, table: &Matrix, ids: &[u32]) -> Result<Matrix, ModelError> {
        let rows: Vec<usize> = ids.iter().map(|&t| t as usize).collect();
        self.select_rows(table, &rows)
    }

    /// Rows `rows` of `x`, in that order.
    pub fn select_rows(&self, x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(h) => h.select_rows(x, rows),
            Engine::Gpu(g) => g.select_rows(x, rows),
        }
    }

    /// `x Wᵀ + b` for `w` of `[out, in]`.
    pub fn linear(&self, x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(h) => h.linear(x, w, bias),
            Engine::Gpu(g) => g.linear(x, w, bias),
        }
    }

    pub fn rms_norm(&self, x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(h) => h.rms_norm(x, weight, eps),
            Engine::Gpu(g) => g.rms_norm(x, weight, eps),
        }
    }

    /// `h += delta`, then the RMSNorm of `h` (one kernel on a GPU).
    pub fn add_rms_norm(
        &self,
        h: &mut Matrix,
        delta: &Matrix,
        weight: &Matrix,
        eps: f64,
    ) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(host) => {
                host.add(h, delta)?;
                host.rms_norm(h, weight, eps)
            }
            Engine::Gpu(g) => g.add_rms_norm(h, delta, weight, eps),
        }
    }

    /// `silu(gate) * up`; with `up = None`, `gate` holds `[gate | up]` per row.
    pub fn swiglu(&self, gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host(h) => h.swiglu(gate, up),
            Engine::Gpu(g) => g.swiglu(gate, up),
        }
    }

    /// `x += y`.
    pub fn add(&self, x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
        match self {
            Engine::Host(h) => h.add(x, y),
            Engine::Gpu(g) => g.add(x, y),
        }
    }

    /// Prepares the rotary input for tokens at `positions`.
    pub fn rope_input(&self, rope: &Rope, positions: Vec<usize>) -> Result<RopeInput, ModelError> {
        let table = match self {
            Engine::Host(_) => None,
            Engine::Gpu(g) => {
                let table = rope.cos_sin_table(Positions::OneD(&positions))?;
                let cols = table.len() / positions.len().max(1);
                let words: Vec<u32> = table.iter().map(|v| v.to_bits()).collect();
                Some(g.upload_words(positions.len(), cols, &words)?)
            }
        };
        Ok(RopeInput { positions, table })
    }

    /// Rotates the first `heads` heads of every row of `x` (`[tokens, ≥
    /// heads × head_dim]`) in place: q alone, or q and k together in the
    /// fused projection's `[q | k | v]` rows.
    pub fn rope(&self, x: &mut Matrix, heads: usize, rope: &Rope, input: &RopeInput) -> Result<(), ModelError> {
        match (self, &input.table) {
            (Engine::Host(h), _) => h.rope(x, heads, rope, &input.positions),
            (Engine::Gpu(g), Some(table)) => g.rope(x, heads, rope, table),
            (Engine::Gpu(_), None) => Err(ModelError::Request("rope input was prepared for the host".into())),
        }
    }

    /// Rows `first ..` of `x` as a new `[b, s, h, d]` tensor of `dtype`
    /// (attention inputs are in the cache's dtype).
    pub fn rows_as(&self, x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
        self.columns_as(x.all_columns(), first, shape, dtype)
    }

    /// The same for some columns of `x`'s rows (`h × d` = their width).
    pub fn columns_as(
        &self,
        x: Columns<'_>,
        first: usize,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<Tensor, ModelError> {
        match self {
            Engine::Host(h) => h.columns_as(x, first, shape, dtype),
            Engine::Gpu(g) => g.columns_as(x, first, shape, dtype),
        }
    }

    /// Writes `src` (any dtype, `[b, s, h, d]` contiguous) into rows
    /// `first ..` of `dst`, in `dst`'s dtype.
    pub fn write_rows(&self, dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
        match self {
            Engine::Host(h) => h.write_rows(dst, first, src),
            Engine::Gpu(g) => g.write_rows(dst, first, src),
        }
    }

    /// Query rows `first ..` of `q` for an attention problem of `dtype` and
    /// q shape `shape`: a view (strided when `q` is some columns of wider
    /// rows) when `q` already holds them in `dtype` on a GPU and `view_ok`,
    /// else a contiguous converted copy.
    pub fn attention_input<'a>(
        &self,
        q: Columns<'a>,
        first: usize,
        shape: [usize; 4],
        dtype: DType,
        view_ok: bool,
    ) -> Result<AttentionInput<'a>, ModelError> {
        if view_ok && matches!(self, Engine::Gpu(_)) && q.dtype() == dtype {
            return Ok(AttentionInput::View(q.rows_view(first, shape)?));
        }
        Ok(AttentionInput::Copy(self.columns_as(q, first, shape, dtype)?))
    }

    /// The output rows `first ..` of `dst` for an attention problem of
    /// `dtype` and output shape `shape` (see [`AttentionOutput`]).
    pub fn attention_output<'a>(
        &self,
        dst: &'a mut Matrix,
        first: usize,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<AttentionOutput<'a>, ModelError> {
        let direct = matches!(self, Engine::Gpu(_)) && dst.dtype() == dtype;
        let staged = match direct {
            true => None,
            false => Some(Tensor::nan(shape, dtype, &self.device()).map_err(|e| match e {
                TensorError::HostAlloc { bytes } => {
                    let [b, s, h, d] = shape;
                    let what = format!("an attention output ({b} × {s} tokens × {h} heads × {d} head_dim)");
                    ModelError::Alloc(AllocError { what, bytes: bytes as u64 })
                }
                e => e.into(),
            })?),
        };
        Ok(AttentionOutput { dst, first, shape, staged })
    }

    /// The index of each row's largest element (the first on ties): greedy
    /// tokens from logits. On a GPU only the indices are downloaded. A row
    /// with nothing above -inf (e.g. all NaN) is [`ModelError::Greedy`]
    /// naming the row.
    pub fn argmax(&self, x: &Matrix) -> Result<Vec<u32>, ModelError> {
        match self {
            Engine::Host(h) => h.argmax(x),
            Engine::Gpu(g) => g.argmax(x),
        }
    }
}
