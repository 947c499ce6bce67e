//! Tensors in `[batch, seq, heads, head_dim]` layout, on the host or on a GPU,
//! and strided views of them (`view.rs`).

mod index;
mod view;

pub use index::IndexTensor;
pub use view::{contiguous_strides, Layout, Strides, TensorView, TensorViewMut};

use crate::device::{Device, DeviceBuffer, DeviceError};
use crate::dtype::DType;
use half::{bf16, f16};

/// Host elements, in the tensor's own dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl HostData {
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rounds `values` to `dtype`.
    pub fn from_f32(dtype: DType, values: &[f32]) -> HostData {
        match dtype {
            DType::F32 => HostData::F32(values.to_vec()),
            DType::F16 => HostData::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostData::F32(v) => v.clone(),
            HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Element `i` widened to f32.
    #[inline]
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            HostData::F32(v) => v[i],
            HostData::F16(v) => v[i].to_f32(),
            HostData::BF16(v) => v[i].to_f32(),
        }
    }

    /// Rounds `value` to the element type and stores it at `i`.
    #[inline]
    pub fn set_f32(&mut self, i: usize, value: f32) {
        match self {
            HostData::F32(v) => v[i] = value,
            HostData::F16(v) => v[i] = f16::from_f32(value),
            HostData::BF16(v) => v[i] = bf16::from_f32(value),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HostData::F32(v) => bytemuck::cast_slice(v),
            HostData::F16(v) => bytemuck::cast_slice(v),
            HostData::BF16(v) => bytemuck::cast_slice(v),
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HostData::F32(v) => bytemuck::cast_slice_mut(v),
            HostData::F16(v) => bytemuck::cast_slice_mut(v),
            HostData::BF16(v) => bytemuck::cast_slice_mut(v),
        }
    }

    /// `len` elements of `dtype`, every one NaN; an allocation the host
    /// cannot make is an error, not an abort.
    pub fn nan(dtype: DType, len: usize) -> Result<HostData, TensorError> {
        HostData::from_fn(dtype, len, |_| f32::NAN)
    }

    /// `len` elements of `dtype`, element `i` being `value(i)` rounded to
    /// `dtype` (in index order), allocated fallibly.
    pub fn from_fn(dtype: DType, len: usize, mut value: impl FnMut(usize) -> f32) -> Result<HostData, TensorError> {
        Ok(match dtype {
            DType::F32 => HostData::F32(filled(len, &mut value)?),
            DType::F16 => HostData::F16(filled(len, |i| f16::from_f32(value(i)))?),
            DType::BF16 => HostData::BF16(filled(len, |i| bf16::from_f32(value(i)))?),
        })
    }
}

/// `len` elements from `value`, or `TensorError::HostAlloc` where the host
/// cannot hold them.
fn filled<T>(len: usize, value: impl FnMut(usize) -> T) -> Result<Vec<T>, TensorError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| TensorError::HostAlloc { bytes: len.saturating_mul(std::mem::size_of::<T>()) })?;
    v.extend((0..len).map(value));
    Ok(v)
}

/// Where a tensor's elements live.
#[derive(Debug)]
pub enum Storage {
    Host(HostData),
    Gpu(DeviceBuffer),
}

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("tensor {tensor}: {got} elements do not fill shape {shape:?} ({expected} elements)")]
    Length { tensor: String, got: usize, expected: usize, shape: [usize; 4] },
    #[error("tensor shape {0:?} overflows usize")]
    Overflow([usize; 4]),
    #[error("cannot allocate {bytes} bytes of host memory for a tensor")]
    HostAlloc { bytes: usize },
    #[error("view {layout:?} reaches element {end}, past the {len} elements of its storage")]
    ViewOutOfBounds { layout: Layout, end: usize, len: usize },
    #[error("view {layout:?} addresses some elements twice, so it cannot be written")]
    OverlappingOutput { layout: Layout },
    #[error("index {value} does not fit a 32-bit signed integer")]
    IndexRange { value: usize },
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A contiguous 4-d tensor `[batch, seq, heads, head_dim]`.
#[derive(Debug)]
pub struct Tensor {
    shape: [usize; 4],
    dtype: DType,
    storage: Storage,
}

fn element_count(shape: [usize; 4]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(TensorError::Overflow(shape))
}

impl Tensor {
    /// Wraps host data; its length must equal the product of `shape`.
    pub fn from_host(shape: [usize; 4], data: HostData) -> Result<Tensor, TensorError> {
        let expected = element_count(shape)?;
        if data.len() != expected {
            return Err(TensorError::Length { tensor: "input".into(), got: data.len(), expected, shape });
        }
        Ok(Tensor { shape, dtype: data.dtype(), storage: Storage::Host(data) })
    }

    pub fn from_f32(shape: [usize; 4], dtype: DType, values: &[f32]) -> Result<Tensor, TensorError> {
        Tensor::from_host(shape, HostData::from_f32(dtype, values))
    }

    /// Uniform values in [-1, 1) from a fixed seed, rounded to `dtype`.
    pub fn random(shape: [usize; 4], dtype: DType, seed: u64) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        let mut rng = SplitMix64(seed);
        Tensor::from_host(shape, HostData::from_fn(dtype, n, |_| rng.next_unit() * 2.0 - 1.0)?)
    }

    /// A tensor on `device` whose every element is NaN, so that any element
    /// a backend forgets to write shows up in a comparison.
    pub fn nan(shape: [usize; 4], dtype: DType, device: &Device) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        let storage = match device {
            Device::Cpu => Storage::Host(HostData::nan(dtype, n)?),
            Device::Gpu(gpu) => {
                let bytes = n.checked_mul(dtype.size_in_bytes()).ok_or(TensorError::Overflow(shape))?;
                let buf = gpu.alloc(bytes)?;
                // All-ones bits are NaN in f32, f16 and bf16 alike.
                buf.fill_bytes(0xFF)?;
                Storage::Gpu(buf)
            }
        };
        Ok(Tensor { shape, dtype, storage })
    }

    /// Wraps device memory the caller already owns (e.g. a buffer reused
    /// from a pool); it must hold exactly the shape's elements of `dtype`.
    /// The contents are whatever the buffer holds.
    pub fn from_gpu_buffer(shape: [usize; 4], dtype: DType, buffer: DeviceBuffer) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        let bytes = n.checked_mul(dtype.size_in_bytes()).ok_or(TensorError::Overflow(shape))?;
        if buffer.len_bytes() != bytes {
            let got = buffer.len_bytes() / dtype.size_in_bytes();
            return Err(TensorError::Length { tensor: "device buffer".into(), got, expected: n, shape });
        }
        Ok(Tensor { shape, dtype, storage: Storage::Gpu(buffer) })
    }

    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn size_in_bytes(&self) -> usize {
        self.len() * self.dtype.size_in_bytes()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    pub fn host(&self) -> Option<&HostData> {
        match &self.storage {
            Storage::Host(h) => Some(h),
            Storage::Gpu(_) => None,
        }
    }

    pub fn host_mut(&mut self) -> Option<&mut HostData> {
        match &mut self.storage {
            Storage::Host(h) => Some(h),
            Storage::Gpu(_) => None,
        }
    }

    pub fn gpu_buffer(&self) -> Option<&DeviceBuffer> {
        match &self.storage {
            Storage::Gpu(b) => Some(b),
            Storage::Host(_) => None,
        }
    }

    pub fn gpu_buffer_mut(&mut self) -> Option<&mut DeviceBuffer> {
        match &mut self.storage {
            Storage::Gpu(b) => Some(b),
            Storage::Host(_) => None,
        }
    }

    /// The whole tensor as a read-only view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { layout: Layout::contiguous(self.shape), dtype: self.dtype, storage: &self.storage }
    }

    /// The whole tensor as a writable view.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut { layout: Layout::contiguous(self.shape), dtype: self.dtype, storage: &mut self.storage }
    }

    /// A strided view of this tensor's storage (e.g. the first `len`
    /// positions of a KV cache). Fails if it reaches past the storage.
    pub fn strided_view(&self, layout: Layout) -> Result<TensorView<'_>, TensorError> {
        self.view().restrided(layout)
    }

    /// A writable strided view; it must not address an element twice.
    pub fn strided_view_mut(&mut self, layout: Layout) -> Result<TensorViewMut<'_>, TensorError> {
        view::check_layout(&layout, view::storage_len(&self.storage, self.dtype), true)?;
        Ok(TensorViewMut { layout, dtype: self.dtype, storage: &mut self.storage })
    }

    /// The device the elements live on.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            Storage::Gpu(b) => Device::Gpu(b.device().clone()),
        }
    }

    /// "cpu" or the GPU's label, e.g. "cuda:0".
    pub fn location(&self) -> String {
        match &self.storage {
            Storage::Host(_) => "cpu".to_string(),
            Storage::Gpu(b) => b.device().label(),
        }
    }

    pub fn is_on(&self, device: &Device) -> bool {
        match (&self.storage, device) {
            (Storage::Host(_), Device::Cpu) => true,
            (Storage::Gpu(b), Device::Gpu(g)) => b.device().same_as(g),
            _ => false,
        }
    }

    /// A copy on `device` (an upload, a download, or a same-place clone).
    pub fn to_device(&self, device: &Device) -> Result<Tensor, TensorError> {
        let storage = match (device, &self.storage) {
            (Device::Cpu, Storage::Host(h)) => Storage::Host(h.clone()),
            (Device::Cpu, Storage::Gpu(_)) => Storage::Host(self.download()?),
            (Device::Gpu(gpu), Storage::Host(h)) => Storage::Gpu(gpu.upload(h.as_bytes())?),
            (Device::Gpu(gpu), Storage::Gpu(b)) if b.device().same_as(gpu) => Storage::Gpu(b.duplicate()?),
            // Between two GPUs we go through the host; no backend does this.
            (Device::Gpu(gpu), Storage::Gpu(_)) => Storage::Gpu(gpu.upload(self.download()?.as_bytes())?),
        };
        Ok(Tensor { shape: self.shape, dtype: self.dtype, storage })
    }

    /// The elements on the host, in the tensor's dtype.
    pub fn download(&self) -> Result<HostData, TensorError> {
        match &self.storage {
            Storage::Host(h) => Ok(h.clone()),
            Storage::Gpu(b) => {
                let mut host = HostData::nan(self.dtype, self.len())?;
                b.copy_to_host(host.as_bytes_mut())?;
                Ok(host)
            }
        }
    }

    /// The elements widened to f32 (downloading if needed).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TensorError> {
        Ok(self.download()?.to_f32())
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a> {
    fn from(t: &'a Tensor) -> TensorView<'a> {
        t.view()
    }
}

impl<'a> From<&'a mut Tensor> for TensorViewMut<'a> {
    fn from(t: &'a mut Tensor) -> TensorViewMut<'a> {
        t.view_mut()
    }
}

/// Small, fast, seedable generator for test and benchmark inputs.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_seeded_and_not_zero() {
        let a = Tensor::random([1, 2, 3, 4], DType::F32, 7).unwrap().to_f32_vec().unwrap();
        let b = Tensor::random([1, 2, 3, 4], DType::F32, 7).unwrap().to_f32_vec().unwrap();
        let c = Tensor::random([1, 2, 3, 4], DType::F32, 8).unwrap().to_f32_vec().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(a.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let err = Tensor::from_f32([1, 2, 1, 2], DType::F32, &[1.0; 3]).unwrap_err();
        assert!(err.to_string().contains("3 elements"));
    }

    #[test]
    fn host_tensors_too_large_for_memory_are_errors_not_aborts() {
        // 2^50 elements: the shape is valid, no host can hold it.
        let shape = [1 << 20, 1 << 20, 1 << 10, 1];
        for dtype in DType::ALL {
            assert!(matches!(Tensor::random(shape, dtype, 1), Err(TensorError::HostAlloc { .. })));
            assert!(matches!(Tensor::nan(shape, dtype, &Device::Cpu), Err(TensorError::HostAlloc { .. })));
        }
        let overflowing = [usize::MAX, 2, 1, 1];
        assert!(matches!(Tensor::random(overflowing, DType::F32, 1), Err(TensorError::Overflow(_))));
    }

    #[test]
    fn nan_tensor_is_all_nan() {
        let t = Tensor::nan([1, 1, 2, 2], DType::BF16, &Device::Cpu).unwrap();
        assert!(t.to_f32_vec().unwrap().iter().all(|x| x.is_nan()));
    }
}
