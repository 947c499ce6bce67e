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
}
