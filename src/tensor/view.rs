//! Strided views of `[batch, seq, heads, head_dim]` tensors. The last
//! dimension is always contiguous; batch, seq and head strides are free (in
//! elements), so a KV cache with capacity > length, one slice of a fused
//! QKV buffer, or a `[b, h, s, d]` layout can be passed without a copy.

use super::{HostData, Storage, TensorError};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;

/// Element strides of batch, seq and head; head_dim has stride 1.
pub type Strides = [usize; 3];

/// Strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: [usize; 4]) -> Strides {
    let [_, s, h, d] = shape;
    [s.saturating_mul(h).saturating_mul(d), h.saturating_mul(d), d]
}

/// Shape, strides and first element of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: [usize; 4],
    pub strides: Strides,
    /// Index of element [0, 0, 0, 0] in the storage, in elements.
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: [usize; 4]) -> Layout {
        Layout { shape, strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(self.shape)
    }

    /// Element index of `[b, s, h, 0]`.
    #[inline]
    pub fn row(&self, b: usize, s: usize, h: usize) -> usize {
        self.offset + b * self.strides[0] + s * self.strides[1] + h * self.strides[2]
    }

    /// One past the last element addressed, or `None` on overflow. An empty
    /// shape addresses nothing.
    pub fn end(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(self.offset);
        }
        let [b, s, h, d] = self.shape;
        let last = [(b, self.strides[0]), (s, self.strides[1]), (h, self.strides[2])]
            .iter()
            .try_fold(d - 1, |acc, &(n, stride)| (n - 1).checked_mul(stride).and_then(|x| acc.checked_add(x)))?;
        self.offset.checked_add(last)?.checked_add(1)
    }

    /// True when no two indices address the same element (required of
    /// outputs): sorted by stride, each stride spans all smaller dims.
    pub fn is_non_overlapping(&self) -> bool {
        let [b, s, h, d] = self.shape;
        let mut dims: Vec<(usize, usize)> = [(self.strides[0], b), (self.strides[1], s), (self.strides[2], h)]
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .collect();
        dims.sort_unstable();
        let mut span = d; // head_dim is contiguous
        for (stride, n) in dims {
            if stride < span {
                return false;
            }
            match stride.checked_mul(n) {
                Some(x) => span = x,
                None => return false,
            }
        }
        true
    }
}

/// A read-only view of a tensor's elements.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub(super) layout: Layout,
    pub(super) dtype: DType,
    pub(super) storage: &'a Storage,
}

/// A writable view of a tensor's elements.
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    pub(super) layout: Layout,
    pub(super) dtype: DType,
    pub(super) storage: &'a mut Storage,
}

/// Checks `layout` against `storage` of `len` elements.
pub(super) fn check_layout(layout: &Layout, len: usize, writable: bool) -> Result<(), TensorError> {
    let end = layout.end().ok_or(TensorError::Overflow(layout.shape))?;
    if end > len {
        return Err(TensorError::ViewOutOfBounds { layout: *layout, end, len });
    }
    if writable && !layout.is_non_overlapping() {
        return Err(TensorError::OverlappingOutput { layout: *layout });
    }
    Ok(())
}

fn device_of(storage: &Storage) -> Device {
    match storage {
        Storage::Host(_) => Device::Cpu,
        Storage::Gpu(b) => Device::Gpu(b.device().clone()),
    }
}

fn gpu_address(storage: &Storage, layout: &Layout, dtype: DType) -> Option<u64> {
    match storage {
        Storage::Gpu(b) => Some(b.ptr() + (layout.offset * dtype.size_in_bytes()) as u64),
        Storage::Host(_) => None,
    }
}

impl<'a> TensorView<'a> {
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn shape(&self) -> [usize; 4] {
        self.layout.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> Device {
        device_of(self.storage)
    }

    /// The whole host storage (index it with `layout()`), or `None` on a GPU.
    pub fn host(&self) -> Option<&'a HostData> {
        match self.storage {
            Storage::Host(h) => Some(h),
            Storage::Gpu(_) => None,
        }
    }

    /// The GPU buffer holding the view, or `None` on the host.
    pub fn gpu_buffer(&self) -> Option<&'a DeviceBuffer> {
        match self.storage {
            Storage::Gpu(b) => Some(b),
            Storage::Host(_) => None,
        }
    }

    /// Device address of element [0, 0, 0, 0], or `None` on the host.
    pub fn gpu_ptr(&self) -> Option<u64> {
        gpu_address(self.storage, &self.layout, self.dtype)
    }

    /// The view with another shape and strides over the same storage.
    pub fn restrided(&self, layout: Layout) -> Result<TensorView<'a>, TensorError> {
        check_layout(&layout, storage_len(self.storage, self.dtype), false)?;
        Ok(TensorView { layout, dtype: self.dtype, storage: self.storage })
    }
}

impl<'a> TensorViewMut<'a> {
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn shape(&self) -> [usize; 4] {
        self.layout.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> Device {
        device_of(self.storage)
    }

    pub fn host_mut(&mut self) -> Option<&mut HostData> {
        match self.storage {
            Storage::Host(h) => Some(h),
            Storage::Gpu(_) => None,
        }
    }

    pub fn gpu_ptr(&self) -> Option<u64> {
        gpu_address(self.storage, &self.layout, self.dtype)
    }

    /// A shorter-lived writable view of the same elements.
    pub fn reborrow(&mut self) -> TensorViewMut<'_> {
        TensorViewMut { layout: self.layout, dtype: self.dtype, storage: self.storage }
    }
}

/// Elements the storage holds.
pub(super) fn storage_len(storage: &Storage, dtype: DType) -> usize {
    match storage {
        Storage::Host(h) => h.len(),
        Storage::Gpu(b) => b.len_bytes() / dtype.size_in_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_layout_spans_exactly_the_tensor() {
        let l = Layout::contiguous([2, 3, 4, 5]);
        assert_eq!(l.strides, [60, 20, 5]);
        assert_eq!(l.end(), Some(120));
        assert!(l.is_contiguous() && l.is_non_overlapping());
        assert_eq!(l.row(1, 2, 3), 60 + 40 + 15);
    }

    #[test]
    fn cache_prefix_and_permuted_layouts() {
        // A KV cache of capacity 16 viewed at length 5.
        let cache = Layout { shape: [2, 5, 4, 8], strides: [16 * 32, 32, 8], offset: 0 };
        assert!(!cache.is_contiguous() && cache.is_non_overlapping());
        assert_eq!(cache.end(), Some(16 * 32 + 4 * 32 + 3 * 8 + 8));
        // [b, h, s, d] storage seen as [b, s, h, d].
        let bhsd = Layout { shape: [1, 6, 2, 4], strides: [48, 4, 24], offset: 0 };
        assert!(bhsd.is_non_overlapping());
        // Two heads on the same memory: readable, never writable.
        let shared = Layout { shape: [1, 6, 2, 4], strides: [24, 4, 0], offset: 0 };
        assert!(!shared.is_non_overlapping());
    }

    #[test]
    fn overflowing_layout_has_no_end() {
        let l = Layout { shape: [2, 2, 2, 2], strides: [usize::MAX, 1, 1], offset: 0 };
        assert_eq!(l.end(), None);
    }
}
