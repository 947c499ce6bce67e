//! Key/value caches for cached decoding, on the host: [`ContiguousCache`]
//! (one fixed-capacity slab per sequence) and [`PagedCache`] (fixed-size
//! blocks from a shared pool, one block table per sequence), behind one
//! trait, [`KvCache`].
//!
//! A decoding step for a sequence is: [`KvCache::reserve`] room for the new
//! tokens (all layers at once, so running out fails before anything is
//! written), [`KvCache::append`] each layer's keys and values, then
//! [`KvCache::commit`] the new length. Running out of capacity or of pool
//! blocks is a typed error that leaves the cache as it was.

mod contiguous;
mod paged;

pub use contiguous::ContiguousCache;
pub use paged::PagedCache;

use crate::dtype::DType;
use crate::tensor::{HostData, Tensor, TensorView};

/// Identifies one sequence in a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub usize);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence {}", self.0)
    }
}

/// The shape of what a cache stores per token and layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheShape {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
}

impl CacheShape {
    /// Elements of one token's keys (or values) in one layer.
    pub fn row(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// Block sizes the paged cache accepts (the decode kernels' tile sizes).
pub const BLOCK_SIZES: [usize; 2] = [16, 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvCacheError {
    #[error("{seq}: {len} cached + {requested} new tokens exceed the capacity of {capacity}")]
    CapacityExceeded { seq: SeqId, len: usize, requested: usize, capacity: usize },
    #[error("{seq}: needs {needed} more blocks of {block_size} tokens, the pool has {free} free of {total}")]
    PoolExhausted { seq: SeqId, needed: usize, free: usize, total: usize, block_size: usize },
    #[error("all {slots} sequence slots are in use")]
    NoFreeSlot { slots: usize },
    #[error("{0} is not in the cache")]
    UnknownSequence(SeqId),
    #[error("layer {layer} out of range (the cache has {num_layers})")]
    Layer { layer: usize, num_layers: usize },
    #[error(
        "{seq}: writing {requested} tokens at position {len} goes past the {reserved} reserved; call reserve first"
    )]
    NotReserved { seq: SeqId, len: usize, requested: usize, reserved: usize },
    #[error(
        "{what} holds {got} elements, not a whole number of rows of {row} (kv_heads × head_dim), or k and v differ"
    )]
    Rows { what: &'static str, got: usize, row: usize },
    #[error("{seq} has {len} tokens, {wanted} were requested")]
    TooShort { seq: SeqId, len: usize, wanted: usize },
    #[error("block size {0} is not supported (supported: 16, 32)")]
    BlockSize(usize),
    #[error("{what} = 0: must be at least 1")]
    Zero { what: &'static str },
    #[error("a cache of {what} needs more than usize::MAX elements or fails to allocate")]
    TooLarge { what: String },
    #[error("cannot view the cache as a tensor: {0}")]
    View(String),
}

/// What the decoder needs from a cache, whatever its layout.
pub trait KvCache: Send {
    fn shape(&self) -> CacheShape;
    /// "contiguous" or "paged", for reports.
    fn kind(&self) -> &'static str;
    /// Registers a new, empty sequence.
    fn add_sequence(&mut self) -> Result<SeqId, KvCacheError>;
    /// Forgets a sequence and frees what it held.
    fn remove_sequence(&mut self, seq: SeqId) -> Result<(), KvCacheError>;
    /// Committed tokens of `seq`.
    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError>;
    /// Makes room for `n` tokens after the committed ones, in every layer.
    /// On error nothing changes.
    fn reserve(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError>;
    /// Writes keys and values (`[n, kv_heads, head_dim]` each) of `layer`
    /// at positions `len .. len + n`, which must be reserved.
    fn append(&mut self, layer: usize, seq: SeqId, k: &[f32], v: &[f32]) -> Result<(), KvCacheError>;
    /// Makes `n` appended tokens part of the sequence.
    fn commit(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError>;
    /// Copies positions `0 .. len` of `layer` for each of `seqs` into `k`
    /// and `v`, laid out `[seqs.len(), len, kv_heads, head_dim]` in the
    /// cache's dtype. Positions must be written (committed or appended).
    fn gather(
        &self,
        layer: usize,
        seqs: &[SeqId],
        len: usize,
        k: &mut HostData,
        v: &mut HostData,
    ) -> Result<(), KvCacheError>;
    /// Positions `0 .. len` of `layer` for `seqs` as strided
    /// `[seqs.len(), len, kv_heads, head_dim]` views into the cache itself
    /// (no copy), when the layout allows one; `None` when the caller must
    /// `gather` instead.
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError>;
}

/// Keys and values as views into a cache.
pub struct KvViews<'a> {
    pub k: TensorView<'a>,
    pub v: TensorView<'a>,
}

/// Per-layer key and value storage of a host cache: `[n, rows, kv_heads,
/// head_dim]` tensors (n slots or blocks of `rows` tokens).
pub(crate) struct HostStorage {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl HostStorage {
    pub fn new(
        shape: CacheShape,
        n: usize,
        rows: usize,
        what: impl Fn() -> String,
    ) -> Result<HostStorage, KvCacheError> {
        let dims = [n, rows, shape.num_kv_heads, shape.head_dim];
        let per_layer = checked_product(&dims, &what)?;
        checked_product(&[per_layer, 2 * shape.num_layers, shape.dtype.size_in_bytes()], &what)?;
        let tensor = || -> Result<Tensor, KvCacheError> {
            Tensor::from_host(dims, alloc(shape.dtype, per_layer, &what)?)
                .map_err(|e| KvCacheError::View(e.to_string()))
        };
        let mut k = Vec::with_capacity(shape.num_layers);
        let mut v = Vec::with_capacity(shape.num_layers);
        for _ in 0..shape.num_layers {
            k.push(tensor()?);
            v.push(tensor()?);
        }
        Ok(HostStorage { k, v })
    }

    /// Host elements of one layer's keys and values.
    pub fn host(&self, layer: usize) -> (&HostData, &HostData) {
        (host(&self.k[layer]), host(&self.v[layer]))
    }

    pub fn host_mut(&mut self, layer: usize) -> (&mut HostData, &mut HostData) {
        (host_mut(&mut self.k[layer]), host_mut(&mut self.v[layer]))
    }

    /// Views of `layout` into one layer's keys and values.
    pub fn views(&self, layer: usize, layout: crate::tensor::Layout) -> Result<KvViews<'_>, KvCacheError> {
        fn view(t: &Tensor, layout: crate::tensor::Layout) -> Result<TensorView<'_>, KvCacheError> {
            t.strided_view(layout).map_err(|e| KvCacheError::View(e.to_string()))
        }
        Ok(KvViews { k: view(&self.k[layer], layout)?, v: view(&self.v[layer], layout)? })
    }
}

// Host caches only ever build host tensors (`HostStorage::new`).
fn host(t: &Tensor) -> &HostData {
    t.host().expect("host cache storage is on the host")
}

fn host_mut(t: &mut Tensor) -> &mut HostData {
    t.host_mut().expect("host cache storage is on the host")
}

/// How many tokens one sequence has: committed, and written-or-reserved room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqState {
    pub len: usize,
    pub reserved: usize,
}

/// Rows of `row` elements in `k` and `v`, which must agree.
pub(crate) fn row_count(k: &[f32], v: &[f32], row: usize) -> Result<usize, KvCacheError> {
    if !k.len().is_multiple_of(row) || k.len() != v.len() {
        return Err(KvCacheError::Rows { what: "k/v", got: k.len(), row });
    }
    Ok(k.len() / row)
}

/// A zeroed buffer of `n` elements, allocated fallibly.
pub(crate) fn alloc(dtype: DType, n: usize, what: &impl Fn() -> String) -> Result<HostData, KvCacheError> {
    fn zeroed<T: Clone>(n: usize, zero: T) -> Option<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        v.resize(n, zero);
        Some(v)
    }
    let data = match dtype {
        DType::F32 => zeroed(n, 0.0f32).map(HostData::F32),
        DType::F16 => zeroed(n, half::f16::ZERO).map(HostData::F16),
        DType::BF16 => zeroed(n, half::bf16::ZERO).map(HostData::BF16),
    };
    data.ok_or_else(|| KvCacheError::TooLarge { what: what() })
}

/// Product of `dims`, or `TooLarge` naming `what`.
pub(crate) fn checked_product(dims: &[usize], what: &impl Fn() -> String) -> Result<usize, KvCacheError> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| KvCacheError::TooLarge { what: what() })
}

/// Writes `src` (rounded to the buffer's dtype) at element `offset`.
pub(crate) fn store(dst: &mut HostData, offset: usize, src: &[f32]) {
    let end = offset + src.len();
    match dst {
        HostData::F32(d) => d[offset..end].copy_from_slice(src),
        HostData::F16(d) => d[offset..end].iter_mut().zip(src).for_each(|(o, &x)| *o = half::f16::from_f32(x)),
        HostData::BF16(d) => d[offset..end].iter_mut().zip(src).for_each(|(o, &x)| *o = half::bf16::from_f32(x)),
    }
}

/// Copies `n` elements from `src[from..]` to `dst[to..]`; both have the same dtype.
pub(crate) fn copy(dst: &mut HostData, to: usize, src: &HostData, from: usize, n: usize) {
    match (dst, src) {
        (HostData::F32(d), HostData::F32(s)) => d[to..to + n].copy_from_slice(&s[from..from + n]),
        (HostData::F16(d), HostData::F16(s)) => d[to..to + n].copy_from_slice(&s[from..from + n]),
        (HostData::BF16(d), HostData::BF16(s)) => d[to..to + n].copy_from_slice(&s[from..from + n]),
        _ => unreachable!("gather buffers are allocated in the cache's dtype"),
    }
}

/// Checks and (re)sizes the gather outputs to `elements` in `dtype`.
pub(crate) fn prepare_out(out: &mut HostData, dtype: DType, elements: usize) -> Result<(), KvCacheError> {
    if out.dtype() != dtype || out.len() != elements {
        *out = alloc(dtype, elements, &|| format!("{elements} gathered elements"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
