//! [`HostEngine`]: the dense operations on host matrices, through the f32
//! loops of [`crate::model::ops`]. Host matrices are always f32; for an f16
//! or bf16 model each operation rounds its result to that dtype where
//! transformers' model would hold it in that dtype (every op of a bf16
//! model returns bf16; RMSNorm rounds the normalized row before the weight,
//! SwiGLU the activation before the product, RoPE its cos/sin and each
//! product), so the host is a reference for the GPU's 16-bit path.

use crate::dtype::DType;
use crate::model::alloc::try_with_capacity;
use crate::model::error::ModelError;
use crate::model::matrix::{Columns, Matrix};
use crate::model::ops;
use crate::model::rope::{Positions, Rope};
use crate::model::sampling::greedy_token;
use crate::tensor::{HostData, Tensor};

pub struct HostEngine {
    dtype: DType,
}

fn host(m: &Matrix) -> Result<&[f32], ModelError> {
    m.host().ok_or_else(|| ModelError::Request("a host operation got a GPU or non-f32 matrix".into()))
}

fn host_mut(m: &mut Matrix) -> Result<&mut [f32], ModelError> {
    m.host_mut().ok_or_else(|| ModelError::Request("a host operation got a GPU or non-f32 matrix".into()))
}

/// `x` rounded to `dtype` and widened back (f32: unchanged).
pub fn round_to(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::F32 => |x| x,
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
    }
}

/// Rounds every element of `v` to `dtype`.
pub fn round_slice(dtype: DType, v: &mut [f32]) {
    if dtype != DType::F32 {
        let r = round_to(dtype);
        v.iter_mut().for_each(|x| *x = r(*x));
    }
}

impl HostEngine {
    pub fn new(dtype: DType) -> HostEngine {
        HostEngine { dtype }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn matrix(&self, rows: usize, cols: usize, mut values: Vec<f32>) -> Result<Matrix, ModelError> {
        round_slice(self.dtype, &mut values);
        Ok(Matrix::from_host(rows, cols, values)?)
    }

    pub fn select_rows(&self, x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
        let (data, cols) = (host(x)?, x.cols());
        let n = rows.len().saturating_mul(cols);
        let what =
            || format!("{} rows copied from a {}-row matrix ({cols} values × 4 bytes each)", rows.len(), x.rows());
        let mut out = try_with_capacity(n, what)?;
        for &r in rows {
            if r >= x.rows() {
                return Err(ModelError::Request(format!("row {r} of a {}-row matrix", x.rows())));
            }
            out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
        }
        Ok(Matrix::from_host(rows.len(), cols, out)?)
    }

    pub fn linear(&self, x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
        if x.cols() != w.cols() {
            return Err(ModelError::Request(format!("linear: x has {} columns, W {}", x.cols(), w.cols())));
        }
        let b = bias.map(host).transpose()?;
        let y = ops::linear(host(x)?, host(w)?, b, w.rows(), w.cols())?;
        self.matrix(x.rows(), w.rows(), y)
    }

    pub fn rms_norm(&self, x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
        if weight.cols() != x.cols() {
            return Err(ModelError::Request(format!("rms_norm: weight of {} for rows of {}", weight.cols(), x.cols())));
        }
        let y = ops::rms_norm_rounded(host(x)?, host(weight)?, eps, round_to(self.dtype))?;
        Ok(Matrix::from_host(x.rows(), x.cols(), y)?)
    }

    pub fn swiglu(&self, gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
        let r = round_to(self.dtype);
        match up {
            Some(up) => {
                let y = ops::swiglu_rounded(host(gate)?, host(up)?, r)?;
                Ok(Matrix::from_host(gate.rows(), gate.cols(), y)?)
            }
            None => {
                // Each row is [gate | up] (a fused projection).
                let inter = gate.cols() / 2;
                let n = gate.rows() * inter;
                let what = || {
                    format!("the gate and up halves of a fused MLP ({} rows × {inter} values × 4 bytes)", gate.rows())
                };
                let (mut g, mut u) = (try_with_capacity(n, what)?, try_with_capacity(n, what)?);
                for row in host(gate)?.chunks_exact(2 * inter) {
                    g.extend_from_slice(&row[..inter]);
                    u.extend_from_slice(&row[inter..]);
                }
                Ok(Matrix::from_host(gate.rows(), inter, ops::swiglu_rounded(&g, &u, r)?)?)
            }
        }
    }

    pub fn add(&self, x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
        if (x.rows(), x.cols()) != (y.rows(), y.cols()) {
            return Err(ModelError::Request("add: shapes differ".into()));
        }
        let dtype = self.dtype;
        let x = host_mut(x)?;
        ops::add_in_place(x, host(y)?);
        round_slice(dtype, x);
        Ok(())
    }

    /// Rotates the first `heads` heads of every row of `x`.
    pub fn rope(&self, x: &mut Matrix, heads: usize, rope: &Rope, positions: &[usize]) -> Result<(), ModelError> {
        let (head_dim, cols) = (rope.head_dim(), x.cols());
        let width = heads * head_dim;
        if cols < width || x.rows() != positions.len() {
            return Err(ModelError::Request("rope: matrix shape does not match".into()));
        }
        if self.dtype == DType::F32 {
            if cols == width {
                return Ok(rope.apply(host_mut(x)?, heads, Positions::OneD(positions))?);
            }
            for (row, p) in host_mut(x)?.chunks_exact_mut(cols).zip(positions) {
                rope.apply(&mut row[..width], heads, Positions::OneD(std::slice::from_ref(p)))?;
            }
            return Ok(());
        }
        let table = rope.cos_sin_table(Positions::OneD(positions))?;
        let r = round_to(self.dtype);
        let pairs = rope.inv_freq().len();
        let style = rope.style();
        // The same index math as kernels/model/rope.hip (one stream).
        for (t, token) in host_mut(x)?.chunks_exact_mut(cols).enumerate() {
            for head in token[..width].chunks_exact_mut(head_dim) {
                for i in 0..pairs {
                    let (a, b) = match style {
                        crate::model::config::RopeStyle::NeoX => (i, i + pairs),
                        crate::model::config::RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (c, s) = (r(table[(t * pairs + i) * 2]), r(table[(t * pairs + i) * 2 + 1]));
                    let (x1, x2) = (head[a], head[b]);
                    head[a] = r(r(x1 * c) + r(-x2 * s));
                    head[b] = r(r(x2 * c) + r(x1 * s));
                }
            }
        }
        Ok(())
    }

    pub fn rows_as(&self, x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
        self.columns_as(x.all_columns(), first, shape, dtype)
    }

    /// Rows `first ..` of columns `x` as a contiguous `[b, s, h, d]` tensor of `dtype`.
    pub fn columns_as(
        &self,
        x: Columns<'_>,
        first: usize,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<Tensor, ModelError> {
        let (rows, width) = (shape[0] * shape[1], shape[2] * shape[3]);
        if width != x.width() {
            return Err(ModelError::Request("rows_as: the shape does not match the columns".into()));
        }
        // Allocated fallibly: an attention input is batch × seq × heads × head_dim.
        let what = || format!("an attention input ({rows} tokens × {width} values × 4 bytes)");
        let mut data = try_with_capacity(rows.saturating_mul(width), what)?;
        for r in first..first + rows {
            data.extend_from_slice(x.host_row(r).ok_or_else(|| ModelError::Request("rows out of range".into()))?);
        }
        let data = match dtype {
            DType::F32 => HostData::F32(data),
            _ => HostData::from_fn(dtype, data.len(), |i| data[i])?,
        };
        Ok(Tensor::from_host(shape, data)?)
    }

    /// Writes `src` into rows `first ..` of `dst`, widened to f32 and rounded
    /// to the model's dtype.
    pub fn write_rows(&self, dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
        // Converted in place (no intermediate copy: an attention output is
        // batch × seq × heads × head_dim).
        let data = src.host().ok_or_else(|| ModelError::Request("write_rows: the source is not on the host".into()))?;
        let start = first * dst.cols();
        let out = host_mut(dst)?
            .get_mut(start..start + data.len())
            .ok_or_else(|| ModelError::Request("rows out of range".into()))?;
        match data {
            HostData::F32(v) => out.copy_from_slice(v),
            HostData::F16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
            HostData::BF16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
        }
        round_slice(self.dtype, out);
        Ok(())
    }

    /// Each row's greedy token ([`greedy_token`]); a row with nothing
    /// above -inf is [`ModelError::Greedy`] naming the row.
    pub fn argmax(&self, x: &Matrix) -> Result<Vec<u32>, ModelError> {
        if x.cols() == 0 {
            return Err(ModelError::Request("argmax over empty rows".into()));
        }
        host(x)?
            .chunks_exact(x.cols())
            .enumerate()
            .map(|(seq, row)| greedy_token(row).map_err(|source| ModelError::Greedy { seq, source }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{RopeScaling, RopeStyle};
    use crate::tensor::SplitMix64;

    /// RoPE over the first heads of wider rows (q and k of a fused
    /// projection) rotates exactly as over those heads alone, in every
    /// dtype, and leaves the rest of each row alone.
    #[test]
    fn rope_on_wider_rows_is_rope_on_the_leading_heads() {
        let mut rng = SplitMix64(3);
        let (tokens, heads, extra) = (5, 3, 20);
        let rope = Rope::with_parts(RopeStyle::NeoX, 16, 8, 10000.0, RopeScaling::None, false).unwrap();
        let positions: Vec<usize> = (0..tokens).map(|t| 7 + 3 * t).collect();
        for dtype in DType::ALL {
            let engine = HostEngine::new(dtype);
            let narrow: Vec<f32> = (0..tokens * heads * 16).map(|_| rng.next_unit() - 0.5).collect();
            let rest: Vec<f32> = (0..tokens * extra).map(|_| rng.next_unit()).collect();
            let cols = heads * 16 + extra;
            let wide: Vec<f32> = (0..tokens)
                .flat_map(|t| [&narrow[t * 48..(t + 1) * 48], &rest[t * extra..(t + 1) * extra]].concat())
                .collect();
            let (mut a, mut b) =
                (engine.matrix(tokens, 48, narrow).unwrap(), engine.matrix(tokens, cols, wide).unwrap());
            engine.rope(&mut a, heads, &rope, &positions).unwrap();
            engine.rope(&mut b, heads, &rope, &positions).unwrap();
            let (a, b) = (a.host().unwrap(), b.host().unwrap());
            for t in 0..tokens {
                assert_eq!(&b[t * cols..t * cols + 48], &a[t * 48..(t + 1) * 48], "{dtype} token {t}");
                let mut want = rest[t * extra..(t + 1) * extra].to_vec();
                round_slice(dtype, &mut want);
                assert_eq!(&b[t * cols + 48..(t + 1) * cols], &want[..], "{dtype}: other columns untouched");
            }
            let mut short = engine.matrix(tokens, 40, vec![0.0; tokens * 40]).unwrap();
            assert!(engine.rope(&mut short, heads, &rope, &positions).is_err(), "rows narrower than the heads");
        }
    }
}
