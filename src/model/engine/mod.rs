//! Where the decoder's dense math runs: the host (f32 loops in
//! [`crate::model::ops`]) or a GPU (the kernels of `kernels/model/` and the
//! driver's GEMM). The decoder and the attention layer are written once
//! against [`Engine`]; every activation is a [`Matrix`] on the engine's device.

pub(crate) mod gpu;
mod host;
pub mod kernels;
pub mod params;

pub use gpu::GpuEngine;

use super::error::ModelError;
use super::matrix::Matrix;
use super::rope::{Positions, Rope};
use super::weights::Weight;
use crate::device::Device;
use crate::dtype::DType;
use crate::tensor::Tensor;

/// A device's implementation of the decoder's dense operations.
pub enum Engine {
    Host,
    Gpu(GpuEngine),
}

/// Rotary positions of one forward call: the positions (host) and, on a
/// GPU, their cos/sin table, computed once and shared by every layer.
pub struct RopeInput {
    pub positions: Vec<usize>,
    table: Option<Matrix>,
}

impl Engine {
    pub fn for_device(device: &Device) -> Engine {
        match device {
            Device::Cpu => Engine::Host,
            Device::Gpu(g) => Engine::Gpu(GpuEngine::new(g.clone())),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Engine::Host => Device::Cpu,
            Engine::Gpu(g) => Device::Gpu(g.gpu().clone()),
        }
    }

    /// A weight as an f32 matrix on this device: `[out, in]` matrices keep
    /// their shape, vectors become one row.
    pub fn weight(&self, w: &Weight) -> Result<Matrix, ModelError> {
        let (rows, cols) = match w.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            other => return Err(ModelError::Request(format!("weight of shape {other:?} is not 1-d or 2-d"))),
        };
        Ok(Matrix::from_host(rows, cols, w.to_f32())?.to_device(&self.device())?)
    }

    /// Rows `ids` of `table`.
    pub fn embed(&self, table: &Matrix, ids: &[u32]) -> Result<Matrix, ModelError> {
        let rows: Vec<usize> = ids.iter().map(|&t| t as usize).collect();
        self.select_rows(table, &rows)
    }

    /// Rows `rows` of `x`, in that order.
    pub fn select_rows(&self, x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host => host::select_rows(x, rows),
            Engine::Gpu(g) => g.select_rows(x, rows),
        }
    }

    /// `x Wᵀ + b` for `w` of `[out, in]`.
    pub fn linear(&self, x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host => host::linear(x, w, bias),
            Engine::Gpu(g) => g.linear(x, w, bias),
        }
    }

    pub fn rms_norm(&self, x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host => host::rms_norm(x, weight, eps),
            Engine::Gpu(g) => g.rms_norm(x, weight, eps),
        }
    }

    /// `silu(gate) * up`; with `up = None`, `gate` holds `[gate | up]` per row.
    pub fn swiglu(&self, gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
        match self {
            Engine::Host => host::swiglu(gate, up),
            Engine::Gpu(g) => g.swiglu(gate, up),
        }
    }

    /// `x += y`.
    pub fn add(&self, x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
        match self {
            Engine::Host => host::add(x, y),
            Engine::Gpu(g) => g.add(x, y),
        }
    }

    /// Prepares the rotary input for tokens at `positions`.
    pub fn rope_input(&self, rope: &Rope, positions: Vec<usize>) -> Result<RopeInput, ModelError> {
        let table = match self {
            Engine::Host => None,
            Engine::Gpu(_) => {
                let table = rope.cos_sin_table(Positions::OneD(&positions))?;
                let cols = table.len() / positions.len().max(1);
                Some(Matrix::from_host(positions.len(), cols, table)?.to_device(&self.device())?)
            }
        };
        Ok(RopeInput { positions, table })
    }

    /// Rotates `x` (`[tokens, heads × head_dim]`) in place.
    pub fn rope(&self, x: &mut Matrix, heads: usize, rope: &Rope, input: &RopeInput) -> Result<(), ModelError> {
        match (self, &input.table) {
            (Engine::Host, _) => host::rope(x, heads, rope, &input.positions),
            (Engine::Gpu(g), Some(table)) => g.rope(x, heads, rope, table),
            (Engine::Gpu(_), None) => Err(ModelError::Request("rope input was prepared for the host".into())),
        }
    }

    /// Rows `first ..` of `x` as a new `[b, s, h, d]` tensor of `dtype`
    /// (attention inputs are in the cache's dtype).
    pub fn rows_as(&self, x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
        match self {
            Engine::Host => host::rows_as(x, first, shape, dtype),
            Engine::Gpu(g) => g.rows_as(x, first, shape, dtype),
        }
    }

    /// Writes `src` (any dtype, `[b, s, h, d]` contiguous) into rows
    /// `first ..` of `dst`, widened to f32.
    pub fn write_rows(&self, dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
        match self {
            Engine::Host => host::write_rows(dst, first, src),
            Engine::Gpu(g) => g.write_rows(dst, first, src),
        }
    }
}
