//! [`IndexTensor`]: a one-dimensional array of 32-bit integers on the host
//! or a GPU, for the integer inputs of a call: the block table and the
//! sequence lengths of a paged KV cache (`problem::PagedKv`).

use super::TensorError;
use crate::device::{Device, DeviceBuffer};

/// Where an index tensor's elements live.
#[derive(Debug)]
enum IndexStorage {
    Host(Vec<i32>),
    Gpu(DeviceBuffer),
}

/// `len` 32-bit signed integers, on the host or a GPU.
#[derive(Debug)]
pub struct IndexTensor {
    len: usize,
    storage: IndexStorage,
}

impl IndexTensor {
    /// Host integers.
    pub fn from_host(values: Vec<i32>) -> IndexTensor {
        IndexTensor { len: values.len(), storage: IndexStorage::Host(values) }
    }

    /// Host integers from `usize` values; each must fit an `i32`.
    pub fn from_usizes(values: impl IntoIterator<Item = usize>) -> Result<IndexTensor, TensorError> {
        let values: Result<Vec<i32>, usize> = values.into_iter().map(|v| i32::try_from(v).map_err(|_| v)).collect();
        values.map(IndexTensor::from_host).map_err(|value| TensorError::IndexRange { value })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            IndexStorage::Host(_) => Device::Cpu,
            IndexStorage::Gpu(b) => Device::Gpu(b.device().clone()),
        }
    }

    /// The elements, when on the host.
    pub fn host(&self) -> Option<&[i32]> {
        match &self.storage {
            IndexStorage::Host(v) => Some(v),
            IndexStorage::Gpu(_) => None,
        }
    }

    /// Device address of the first element, when on a GPU.
    pub fn gpu_ptr(&self) -> Option<u64> {
        match &self.storage {
            IndexStorage::Gpu(b) => Some(b.ptr()),
            IndexStorage::Host(_) => None,
        }
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: &Device) -> Result<IndexTensor, TensorError> {
        let storage = match device {
            Device::Cpu => IndexStorage::Host(self.download()?),
            Device::Gpu(gpu) => IndexStorage::Gpu(gpu.upload(bytemuck::cast_slice(&self.download()?))?),
        };
        Ok(IndexTensor { len: self.len, storage })
    }

    /// The elements copied to the host.
    pub fn download(&self) -> Result<Vec<i32>, TensorError> {
        match &self.storage {
            IndexStorage::Host(v) => Ok(v.clone()),
            IndexStorage::Gpu(b) => {
                let mut out = vec![0i32; self.len];
                b.copy_to_host(bytemuck::cast_slice_mut(&mut out))?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_indices_round_trip_and_reject_overflow() {
        let t = IndexTensor::from_usizes([0, 5, 7]).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.host(), Some(&[0, 5, 7][..]));
        assert_eq!(t.to_device(&Device::Cpu).unwrap().download().unwrap(), vec![0, 5, 7]);
        assert!(t.gpu_ptr().is_none());
        let big = i32::MAX as usize + 1;
        assert!(matches!(IndexTensor::from_usizes([big]), Err(TensorError::IndexRange { value }) if value == big));
    }
}
