//! [`Matrix`]: a row-major matrix (activations, weights) on the host or a
//! GPU. Rows are tokens for activations and output features for weights.
//! Host matrices are f32; GPU matrices are f32, f16 or bf16 (the model's
//! dtype). A GPU matrix made by the engine borrows its memory from the
//! device's buffer pool and gives it back when dropped.

use super::engine::pool::DeviceState;
use crate::device::{Device, DeviceError};
use crate::dtype::DType;
use crate::tensor::{HostData, Layout, Storage, Tensor, TensorError, TensorView, TensorViewMut};
use std::sync::Arc;

#[derive(Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    /// `[1, rows, 1, cols]`.
    tensor: Tensor,
    /// Where the memory goes back to (pooled GPU matrices only).
    pool: Option<Arc<DeviceState>>,
}

impl Drop for Matrix {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let storage = std::mem::replace(self.tensor.storage_mut(), Storage::Host(HostData::F32(Vec::new())));
            if let Storage::Gpu(buf) = storage {
                pool.give_back(buf);
            }
        }
    }
}

impl Matrix {
    /// A host matrix holding `values` (`rows × cols`).
    pub fn from_host(rows: usize, cols: usize, values: Vec<f32>) -> Result<Matrix, TensorError> {
        Matrix::from_host_data(rows, cols, HostData::F32(values))
    }

    /// A host matrix of any dtype (uploaded as is by [`Matrix::to_device`]).
    pub fn from_host_data(rows: usize, cols: usize, data: HostData) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows, cols, tensor: Tensor::from_host([1, rows, 1, cols], data)?, pool: None })
    }

    /// An f32 matrix on `device` whose every element is NaN, to be overwritten.
    pub fn nan(rows: usize, cols: usize, device: &Device) -> Result<Matrix, TensorError> {
        Matrix::nan_of(rows, cols, DType::F32, device)
    }

    /// A matrix of `dtype` on `device` whose every element is NaN.
    pub fn nan_of(rows: usize, cols: usize, dtype: DType, device: &Device) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows, cols, tensor: Tensor::nan([1, rows, 1, cols], dtype, device)?, pool: None })
    }

    /// A GPU matrix of `dtype` in memory from `pool` (contents undefined),
    /// returned to the pool when dropped.
    pub(crate) fn pooled(
        rows: usize,
        cols: usize,
        dtype: DType,
        pool: &Arc<DeviceState>,
    ) -> Result<Matrix, TensorError> {
        let n = rows.checked_mul(cols).ok_or(TensorError::Overflow([1, rows, 1, cols]))?;
        let bytes = n.checked_mul(dtype.size_in_bytes()).ok_or(TensorError::Overflow([1, rows, 1, cols]))?;
        let buf = pool.take(bytes)?;
        let tensor = Tensor::from_gpu_buffer([1, rows, 1, cols], dtype, buf)?;
        Ok(Matrix { rows, cols, tensor, pool: Some(pool.clone()) })
    }

    /// Wraps a `[1, rows, 1, cols]` tensor (not pooled).
    pub(crate) fn from_tensor(tensor: Tensor) -> Result<Matrix, TensorError> {
        match tensor.shape() {
            [1, rows, 1, cols] => Ok(Matrix { rows, cols, tensor, pool: None }),
            shape => Err(TensorError::Length { tensor: "matrix".into(), got: tensor.len(), expected: 0, shape }),
        }
    }

    /// The elements as a `[1, rows, 1, cols]` tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Fills a GPU matrix with NaN (every bit set); a host matrix is left as is.
    pub(crate) fn poison(&self) -> Result<(), DeviceError> {
        match self.tensor.gpu_buffer() {
            Some(b) => b.fill_bytes(0xFF),
            None => Ok(()),
        }
    }

    /// A copy on `device` (not pooled).
    pub fn to_device(&self, device: &Device) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows: self.rows, cols: self.cols, tensor: self.tensor.to_device(device)?, pool: None })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> DType {
        self.tensor.dtype()
    }

    pub fn device(&self) -> Device {
        self.tensor.device()
    }

    /// The elements, when on the host (host matrices are f32).
    pub fn host(&self) -> Option<&[f32]> {
        match self.tensor.host()? {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn host_mut(&mut self) -> Option<&mut [f32]> {
        match self.tensor.host_mut()? {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Device address of element (`row`, 0), when on a GPU.
    pub fn gpu_row_ptr(&self, row: usize) -> Option<u64> {
        Some(self.tensor.gpu_buffer()?.ptr() + (row * self.cols * self.dtype().size_in_bytes()) as u64)
    }

    /// Like [`Matrix::gpu_row_ptr`], or the error saying the matrix is not on a GPU.
    pub fn gpu_ptr(&self, row: usize, what: &'static str) -> Result<u64, DeviceError> {
        self.gpu_row_ptr(row).ok_or(DeviceError::NotOnGpu { tensor: what })
    }

    fn rows_layout(&self, first: usize, shape: [usize; 4]) -> Layout {
        let mut layout = Layout::contiguous(shape);
        layout.offset = first * self.cols;
        layout
    }

    /// Rows `first .. first + b × s` seen as a contiguous `[b, s, h, cols / h]`
    /// tensor view, without a copy.
    pub fn rows_view(&self, first: usize, shape: [usize; 4]) -> Result<TensorView<'_>, TensorError> {
        self.tensor.strided_view(self.rows_layout(first, shape))
    }

    /// The same rows as a writable view.
    pub fn rows_view_mut(&mut self, first: usize, shape: [usize; 4]) -> Result<TensorViewMut<'_>, TensorError> {
        let layout = self.rows_layout(first, shape);
        self.tensor.strided_view_mut(layout)
    }

    /// The elements on the host, widened to f32 (downloading if needed).
    pub fn to_vec(&self) -> Result<Vec<f32>, TensorError> {
        self.tensor.to_f32_vec()
    }

    /// Columns `first .. first + width` of every row.
    pub fn columns(&self, first: usize, width: usize) -> Result<Columns<'_>, TensorError> {
        if first.checked_add(width).is_none_or(|end| end > self.cols) {
            return Err(TensorError::Length {
                tensor: format!("columns {first}..{} of a {}-column matrix", first.saturating_add(width), self.cols),
                got: self.cols,
                expected: first.saturating_add(width),
                shape: self.tensor.shape(),
            });
        }
        Ok(Columns { matrix: self, first, width })
    }

    /// Every column.
    pub fn all_columns(&self) -> Columns<'_> {
        Columns { matrix: self, first: 0, width: self.cols }
    }
}

/// Columns `first .. first + width` of every row of a matrix: q, k or v
/// inside the output of the fused QKV projection (rows `matrix.cols()`
/// elements apart), or a whole matrix.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    matrix: &'a Matrix,
    first: usize,
    width: usize,
}

impl<'a> Columns<'a> {
    pub fn matrix(&self) -> &'a Matrix {
        self.matrix
    }

    pub fn first(&self) -> usize {
        self.first
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn rows(&self) -> usize {
        self.matrix.rows
    }

    /// Elements from one row to the next.
    pub fn row_stride(&self) -> usize {
        self.matrix.cols
    }

    pub fn dtype(&self) -> DType {
        self.matrix.dtype()
    }

    pub fn device(&self) -> Device {
        self.matrix.device()
    }

    /// Row `row`'s columns, when on the host.
    pub fn host_row(&self, row: usize) -> Option<&'a [f32]> {
        let at = row * self.matrix.cols + self.first;
        self.matrix.host()?.get(at..at + self.width)
    }

    /// Device address of element (`row`, `first`), when on a GPU.
    pub fn gpu_ptr(&self, row: usize, what: &'static str) -> Result<u64, DeviceError> {
        Ok(self.matrix.gpu_ptr(row, what)? + (self.first * self.dtype().size_in_bytes()) as u64)
    }

    /// Rows `first_row .. first_row + b × s` as a `[b, s, h, width / h]`
    /// tensor view (strided unless the columns are whole rows), no copy.
    pub fn rows_view(&self, first_row: usize, shape: [usize; 4]) -> Result<TensorView<'a>, TensorError> {
        let c = self.matrix.cols;
        let layout = Layout { shape, strides: [shape[1] * c, c, shape[3]], offset: first_row * c + self.first };
        if shape[2] * shape[3] != self.width {
            return Err(TensorError::Length {
                tensor: "column view".into(),
                got: shape[2] * shape[3],
                expected: self.width,
                shape,
            });
        }
        self.matrix.tensor.strided_view(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_checked_and_viewed_in_place() {
        let m = Matrix::from_host(3, 10, (0..30).map(|x| x as f32).collect()).unwrap();
        assert!(m.columns(8, 3).is_err() && m.columns(usize::MAX, 2).is_err());
        let c = m.columns(4, 6).unwrap();
        assert_eq!((c.first(), c.width(), c.rows(), c.row_stride()), (4, 6, 3, 10));
        assert_eq!(c.host_row(1), Some(&[14.0, 15.0, 16.0, 17.0, 18.0, 19.0][..]));
        assert_eq!(c.host_row(3), None);
        // Rows 1 and 2 as [2, 1, 2, 3]: strided by the full row.
        let v = c.rows_view(1, [2, 1, 2, 3]).unwrap();
        assert_eq!(v.layout().strides, [10, 10, 3]);
        assert_eq!(v.layout().offset, 14);
        assert!(!v.layout().is_contiguous());
        assert!(c.rows_view(0, [1, 1, 2, 2]).is_err(), "2 × 2 is not the 6 columns");
        assert!(c.rows_view(2, [2, 1, 2, 3]).is_err(), "past the last row");
        assert!(m.all_columns().rows_view(0, [1, 3, 2, 5]).unwrap().layout().is_contiguous());
    }
}
