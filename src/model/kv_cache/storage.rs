//! [`KvStorage`]: the rows a cache keeps, per layer, on the host or a GPU.
//! A cache layout only decides which physical row holds (sequence,
//! position); writing, gathering and viewing rows happen here.

use super::{CacheShape, KvCacheError, KvViews};
use crate::device::Device;
use crate::dtype::DType;
use crate::model::alloc::{human_bytes, try_filled, AllocError};
use crate::model::engine::gpu::{GpuEngine, RowsAt};
use crate::model::matrix::Columns;
use crate::tensor::{HostData, Layout, Tensor};

/// Per layer, keys and values as `[1, rows, kv_heads, head_dim]` tensors.
pub struct KvStorage {
    shape: CacheShape,
    rows: usize,
    k: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// `n` elements of `dtype`, all NaN (rows are always written before they are
/// read; NaN makes a violation visible), allocated fallibly on the host.
fn host_nan(dtype: DType, n: usize, what: impl FnOnce() -> String) -> Result<HostData, AllocError> {
    Ok(match dtype {
        DType::F32 => HostData::F32(try_filled(n, f32::NAN, what)?),
        DType::F16 => HostData::F16(try_filled(n, half::f16::NAN, what)?),
        DType::BF16 => HostData::BF16(try_filled(n, half::bf16::NAN, what)?),
    })
}

fn view_err(e: impl std::fmt::Display) -> KvCacheError {
    KvCacheError::View(e.to_string())
}

impl KvStorage {
    /// `rows` rows per layer on `device`; `what` describes the cache for
    /// errors ("1 slot × 66 tokens"). Sizes that overflow are
    /// [`KvCacheError::TooLarge`]; memory the host refuses is
    /// [`KvCacheError::Alloc`], naming the tensor and the whole cache's bytes.
    pub fn new(
        shape: CacheShape,
        rows: usize,
        device: &Device,
        what: impl Fn() -> String,
    ) -> Result<KvStorage, KvCacheError> {
        let dims = [1, rows, shape.num_kv_heads, shape.head_dim];
        let elem = shape.dtype.size_in_bytes();
        let total = rows as u128 * shape.row() as u128 * 2 * shape.num_layers as u128 * elem as u128;
        let describe = || {
            format!(
                "{} × {} elements × 2 (keys and values) × {} × {elem} bytes",
                what(),
                shape.row(),
                super::count(shape.num_layers, "layer")
            )
        };
        let too_large = || KvCacheError::TooLarge {
            what: format!("a KV cache of {}", describe()),
            limit: format!("{total} bytes, more than a usize can count"),
        };
        let per_layer = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(too_large)?;
        per_layer.checked_mul(2 * shape.num_layers).and_then(|n| n.checked_mul(elem)).ok_or_else(too_large)?;
        let tensor = |layer: usize, part: &str| -> Result<Tensor, KvCacheError> {
            match device {
                Device::Cpu => {
                    let what = || {
                        format!(
                            "the KV cache's layer {layer} {part} (the whole cache: {} = {})",
                            human_bytes(total),
                            describe()
                        )
                    };
                    Tensor::from_host(dims, host_nan(shape.dtype, per_layer, what)?).map_err(view_err)
                }
                Device::Gpu(_) => Tensor::nan(dims, shape.dtype, device).map_err(|e| KvCacheError::Gpu(e.to_string())),
            }
        };
        let mut k = Vec::with_capacity(shape.num_layers);
        let mut v = Vec::with_capacity(shape.num_layers);
        for layer in 0..shape.num_layers {
            k.push(tensor(layer, "keys")?);
            v.push(tensor(layer, "values")?);
        }
        Ok(KvStorage { shape, rows, k, v })
    }

    pub fn device(&self) -> Device {
        self.k.first().map_or(Device::Cpu, Tensor::device)
    }

    /// Physical rows per layer.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn check_layer(&self, layer: usize) -> Result<(), KvCacheError> {
        if layer >= self.shape.num_layers {
            return Err(KvCacheError::Layer { layer, num_layers: self.shape.num_layers });
        }
        Ok(())
    }

    /// Copies rows `src_rows` of `k` and `v` (model dtype, one token per
    /// row, possibly columns of wider rows) to physical rows `dst_rows`,
    /// rounding to the cache's dtype.
    pub fn write(
        &mut self,
        layer: usize,
        k: Columns<'_>,
        v: Columns<'_>,
        src_rows: &[usize],
        dst_rows: &[usize],
    ) -> Result<(), KvCacheError> {
        self.check_layer(layer)?;
        let row = self.shape.row();
        if k.width() != row || v.width() != row || k.rows() != v.rows() {
            return Err(KvCacheError::Rows { what: "k/v", got: k.width(), row });
        }
        if src_rows.len() != dst_rows.len()
            || src_rows.iter().any(|&r| r >= k.rows())
            || dst_rows.iter().any(|&r| r >= self.rows)
        {
            return Err(KvCacheError::View("a row index is out of range".into()));
        }
        if !same_device(&k.device(), &self.device()) || !same_device(&v.device(), &self.device()) {
            return Err(KvCacheError::WrongDevice { cache: self.device().label(), data: k.device().label() });
        }
        match self.device() {
            Device::Cpu => {
                let (dk, dv) = (host_mut(&mut self.k[layer])?, host_mut(&mut self.v[layer])?);
                for (&s, &d) in src_rows.iter().zip(dst_rows) {
                    super::store(dk, d * row, k.host_row(s).ok_or_else(|| view_err("k"))?);
                    super::store(dv, d * row, v.host_row(s).ok_or_else(|| view_err("v"))?);
                }
                Ok(())
            }
            Device::Gpu(gpu) => {
                let engine = GpuEngine::new(gpu);
                let dtype = self.shape.dtype;
                for (src, dst) in [(k, &self.k[layer]), (v, &self.v[layer])] {
                    let from = RowsAt {
                        ptr: src.gpu_ptr(0, "k/v").map_err(gpu_err)?,
                        dtype: src.dtype(),
                        stride: src.row_stride(),
                        index: Some(src_rows),
                    };
                    let to = RowsAt { ptr: gpu_ptr(dst)?, dtype, stride: row, index: Some(dst_rows) };
                    // SAFETY: every source row is < k.rows() and every
                    // destination row < self.rows (checked above); both sides
                    // are `row` elements wide (the source's columns lie in
                    // its rows, `row_stride` apart: `Columns` checks that).
                    unsafe { engine.copy_rows(&from, &to, src_rows.len(), row) }.map_err(gpu_err)?;
                }
                Ok(())
            }
        }
    }

    /// Physical rows `rows` of `layer` copied into new contiguous tensors of
    /// `shape` (`rows.len()` = batch × seq), in the cache's dtype.
    pub fn read(&self, layer: usize, rows: &[usize], shape: [usize; 4]) -> Result<(Tensor, Tensor), KvCacheError> {
        self.check_layer(layer)?;
        let row = self.shape.row();
        if rows.iter().any(|&r| r >= self.rows) || shape[0] * shape[1] != rows.len() {
            return Err(KvCacheError::View("a row index is out of range".into()));
        }
        let dtype = self.shape.dtype;
        let mut out = Vec::with_capacity(2);
        for src in [&self.k[layer], &self.v[layer]] {
            match self.device() {
                Device::Cpu => {
                    let data = src.host().ok_or_else(|| view_err("host storage"))?;
                    let what =
                        || format!("keys or values gathered from the KV cache ({} rows × {row} elements)", rows.len());
                    let mut gathered = host_nan(dtype, rows.len() * row, what)?;
                    for (i, &r) in rows.iter().enumerate() {
                        super::copy(&mut gathered, i * row, data, r * row, row);
                    }
                    out.push(Tensor::from_host(shape, gathered).map_err(view_err)?);
                }
                Device::Gpu(gpu) => {
                    let device = Device::Gpu(gpu.clone());
                    let t = Tensor::nan(shape, dtype, &device).map_err(|e| KvCacheError::Gpu(e.to_string()))?;
                    let from = RowsAt { ptr: gpu_ptr(src)?, dtype, stride: row, index: Some(rows) };
                    let to = RowsAt { ptr: gpu_ptr(&t)?, dtype, stride: row, index: None };
                    // SAFETY: every source row is < self.rows (checked); `t`
                    // holds rows.len() rows of `row` elements.
                    unsafe { GpuEngine::new(gpu).copy_rows(&from, &to, rows.len(), row) }.map_err(gpu_err)?;
                    out.push(t);
                }
            }
        }
        let v = out.pop().ok_or_else(|| view_err("v"))?;
        let k = out.pop().ok_or_else(|| view_err("k"))?;
        Ok((k, v))
    }

    /// Views of `layout` (offsets in elements of one layer's storage).
    pub fn views(&self, layer: usize, layout: Layout) -> Result<KvViews<'_>, KvCacheError> {
        self.check_layer(layer)?;
        Ok(KvViews {
            k: self.k[layer].strided_view(layout).map_err(view_err)?,
            v: self.v[layer].strided_view(layout).map_err(view_err)?,
        })
    }
}

fn host_mut(t: &mut Tensor) -> Result<&mut HostData, KvCacheError> {
    t.host_mut().ok_or_else(|| view_err("host storage"))
}

fn gpu_ptr(t: &Tensor) -> Result<u64, KvCacheError> {
    t.gpu_buffer().map(|b| b.ptr()).ok_or_else(|| KvCacheError::Gpu("storage is not on a GPU".into()))
}

fn gpu_err(e: impl std::fmt::Display) -> KvCacheError {
    KvCacheError::Gpu(e.to_string())
}

pub(crate) fn same_device(a: &Device, b: &Device) -> bool {
    match (a, b) {
        (Device::Cpu, Device::Cpu) => true,
        (Device::Gpu(x), Device::Gpu(y)) => x.same_as(y),
        _ => false,
    }
}
