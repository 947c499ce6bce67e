//! [`super::Engine::Host`]: the dense operations on host matrices, through
//! the f32 loops of [`crate::model::ops`].

use crate::dtype::DType;
use crate::model::error::ModelError;
use crate::model::matrix::Matrix;
use crate::model::ops;
use crate::model::rope::{Positions, Rope};
use crate::tensor::{HostData, Tensor};

fn host(m: &Matrix) -> Result<&[f32], ModelError> {
    m.host().ok_or_else(|| ModelError::Request("a host operation got a GPU matrix".into()))
}

fn host_mut(m: &mut Matrix) -> Result<&mut [f32], ModelError> {
    m.host_mut().ok_or_else(|| ModelError::Request("a host operation got a GPU matrix".into()))
}

pub fn select_rows(x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
    let (data, cols) = (host(x)?, x.cols());
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        if r >= x.rows() {
            return Err(ModelError::Request(format!("row {r} of a {}-row matrix", x.rows())));
        }
        out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    Ok(Matrix::from_host(rows.len(), cols, out)?)
}

pub fn linear(x: &Matrix, w: &Matrix, bias: Option<&Matrix>) -> Result<Matrix, ModelError> {
    let b = bias.map(host).transpose()?;
    let y = ops::linear(host(x)?, host(w)?, b, w.rows(), w.cols());
    Ok(Matrix::from_host(x.rows(), w.rows(), y)?)
}

pub fn rms_norm(x: &Matrix, weight: &Matrix, eps: f64) -> Result<Matrix, ModelError> {
    Ok(Matrix::from_host(x.rows(), x.cols(), ops::rms_norm(host(x)?, host(weight)?, eps))?)
}

pub fn swiglu(gate: &Matrix, up: Option<&Matrix>) -> Result<Matrix, ModelError> {
    match up {
        Some(up) => Ok(Matrix::from_host(gate.rows(), gate.cols(), ops::swiglu(host(gate)?, host(up)?))?),
        None => {
            // Each row is [gate | up] (GLM's fused projection).
            let inter = gate.cols() / 2;
            let (mut g, mut u) = (Vec::with_capacity(gate.rows() * inter), Vec::with_capacity(gate.rows() * inter));
            for row in host(gate)?.chunks_exact(2 * inter) {
                g.extend_from_slice(&row[..inter]);
                u.extend_from_slice(&row[inter..]);
            }
            Ok(Matrix::from_host(gate.rows(), inter, ops::swiglu(&g, &u))?)
        }
    }
}

pub fn add(x: &mut Matrix, y: &Matrix) -> Result<(), ModelError> {
    ops::add_in_place(host_mut(x)?, host(y)?);
    Ok(())
}

pub fn rope(x: &mut Matrix, heads: usize, rope: &Rope, positions: &[usize]) -> Result<(), ModelError> {
    Ok(rope.apply(host_mut(x)?, heads, Positions::OneD(positions))?)
}

pub fn rows_as(x: &Matrix, first: usize, shape: [usize; 4], dtype: DType) -> Result<Tensor, ModelError> {
    let n: usize = shape.iter().product();
    let start = first * x.cols();
    let data = host(x)?.get(start..start + n).ok_or_else(|| ModelError::Request("rows out of range".into()))?;
    Ok(Tensor::from_host(shape, HostData::from_f32(dtype, data))?)
}

pub fn write_rows(dst: &mut Matrix, first: usize, src: &Tensor) -> Result<(), ModelError> {
    let values = src.to_f32_vec()?;
    let start = first * dst.cols();
    let out = host_mut(dst)?
        .get_mut(start..start + values.len())
        .ok_or_else(|| ModelError::Request("rows out of range".into()))?;
    out.copy_from_slice(&values);
    Ok(())
}
