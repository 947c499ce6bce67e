//! [`Matrix`]: a row-major f32 matrix (activations, weights) on the host or
//! a GPU. Rows are tokens for activations and output features for weights.

use crate::device::{Device, DeviceError};
use crate::dtype::DType;
use crate::tensor::{HostData, Layout, Tensor, TensorError, TensorView};

#[derive(Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    /// `[1, rows, 1, cols]`, f32.
    tensor: Tensor,
}

impl Matrix {
    /// A host matrix holding `values` (`rows × cols`).
    pub fn from_host(rows: usize, cols: usize, values: Vec<f32>) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows, cols, tensor: Tensor::from_host([1, rows, 1, cols], HostData::F32(values))? })
    }

    /// A matrix on `device` whose every element is NaN, to be overwritten.
    pub fn nan(rows: usize, cols: usize, device: &Device) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows, cols, tensor: Tensor::nan([1, rows, 1, cols], DType::F32, device)? })
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Matrix, TensorError> {
        Ok(Matrix { rows: self.rows, cols: self.cols, tensor: self.tensor.to_device(device)? })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn device(&self) -> Device {
        self.tensor.device()
    }

    /// The elements, when on the host.
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
        Some(self.tensor.gpu_buffer()?.ptr() + (row * self.cols * 4) as u64)
    }

    /// Like [`Matrix::gpu_row_ptr`], or the error saying the matrix is not on a GPU.
    pub fn gpu_ptr(&self, row: usize, what: &'static str) -> Result<u64, DeviceError> {
        self.gpu_row_ptr(row).ok_or(DeviceError::NotOnGpu { tensor: what })
    }

    /// Rows `first .. first + b × s` seen as a contiguous `[b, s, h, cols / h]`
    /// tensor view, without a copy.
    pub fn rows_view(&self, first: usize, shape: [usize; 4]) -> Result<TensorView<'_>, TensorError> {
        let mut layout = Layout::contiguous(shape);
        layout.offset = first * self.cols;
        self.tensor.strided_view(layout)
    }

    /// The elements on the host (downloading if needed).
    pub fn to_vec(&self) -> Result<Vec<f32>, TensorError> {
        self.tensor.to_f32_vec()
    }
}
