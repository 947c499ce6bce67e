//! Key/value caches for cached decoding: [`ContiguousCache`] (one
//! fixed-capacity slab per sequence) and [`PagedCache`] (fixed-size blocks
//! from a shared pool, one block table per sequence), behind one trait,
//! [`KvCache`], on the host or a GPU.
//!
//! A layout only maps (sequence, position) to a physical row of its
//! [`KvStorage`]; appending, gathering and viewing are shared. A decoding
//! step for a sequence is: [`KvCache::reserve`] room for the new tokens (all
//! layers at once, so running out fails before anything is written),
//! [`KvCache::append`] each layer's keys and values, then
//! [`KvCache::commit`] the new length. Running out of capacity or of pool
//! blocks is a typed error that leaves the cache as it was.

mod contiguous;
mod paged;
mod paged_index;
mod storage;

pub use contiguous::ContiguousCache;
pub use paged::PagedCache;
pub use paged_index::IndexUploads;
pub(crate) use storage::same_device;
pub use storage::KvStorage;

use super::alloc::{try_with_capacity, AllocError};
use super::matrix::{Columns, Matrix};
use crate::backend::PagedKvRefs;
use crate::device::Device;
use crate::dtype::DType;
use crate::problem::PagedKv;
use crate::tensor::{HostData, IndexTensor, Tensor, TensorView};

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

    fn check(&self) -> Result<(), KvCacheError> {
        for (what, n) in
            [("num_layers", self.num_layers), ("num_kv_heads", self.num_kv_heads), ("head_dim", self.head_dim)]
        {
            if n == 0 {
                return Err(KvCacheError::Zero { what });
            }
        }
        Ok(())
    }
}

/// "1 slot", "2 slots".
pub(crate) fn count(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Block sizes the paged cache accepts (the decode kernels' tile sizes).
pub const BLOCK_SIZES: [usize; 2] = [16, 32];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    #[error("{what} rows hold {got} elements, not {row} (kv_heads × head_dim), or k and v differ")]
    Rows { what: &'static str, got: usize, row: usize },
    #[error("{seq} has {len} tokens, {wanted} were requested")]
    TooShort { seq: SeqId, len: usize, wanted: usize },
    #[error("block size {0} is not supported (supported: 16, 32)")]
    BlockSize(usize),
    #[error("{what} = 0: must be at least 1")]
    Zero { what: &'static str },
    /// A size that does not fit the integer type that must hold it (no
    /// allocation was tried).
    #[error("{what} is too large: {limit}")]
    TooLarge { what: String, limit: String },
    /// The host refused the cache's memory (or a gather's).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("cache on {cache}, keys/values on {data}")]
    WrongDevice { cache: String, data: String },
    #[error("cannot view the cache as a tensor: {0}")]
    View(String),
    #[error("GPU cache: {0}")]
    Gpu(String),
}

/// New tokens of one sequence within the rows of a k/v matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRows {
    pub seq: SeqId,
    /// First row of this sequence's new tokens in the k and v matrices.
    pub first_row: usize,
    pub len: usize,
}

/// What the decoder needs from a cache, whatever its layout and device.
pub trait KvCache: Send {
    fn shape(&self) -> CacheShape;
    /// "contiguous" or "paged", for reports.
    fn kind(&self) -> &'static str;
    fn storage(&self) -> &KvStorage;
    fn storage_mut(&mut self) -> &mut KvStorage;
    /// Registers a new, empty sequence.
    fn add_sequence(&mut self) -> Result<SeqId, KvCacheError>;
    /// Forgets a sequence and frees what it held.
    fn remove_sequence(&mut self, seq: SeqId) -> Result<(), KvCacheError>;
    /// Committed tokens of `seq`.
    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError>;
    /// Positions of `seq` with room (committed or reserved).
    fn reserved(&self, seq: SeqId) -> Result<usize, KvCacheError>;
    /// Makes room for `n` tokens after the committed ones, in every layer.
    /// On error nothing changes.
    fn reserve(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError>;
    /// Makes `n` appended tokens part of the sequence.
    fn commit(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError>;
    /// The physical storage row of position `pos` (< reserved) of `seq`.
    fn row_of(&self, seq: SeqId, pos: usize) -> Result<usize, KvCacheError>;
    /// Positions `0 .. len` of `layer` for `seqs` as strided
    /// `[seqs.len(), len, kv_heads, head_dim]` views into the storage (no
    /// copy), when the layout allows one; `None` when the caller must
    /// [`KvCache::gather`] instead.
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError>;

    /// The [`PagedKv`] layout a paged attention call over `(sequence,
    /// length)` pairs would have (nothing is uploaded); `None` when the cache
    /// is not paged. Lets a caller ask a backend before [`KvCache::paged_kv`].
    fn paged_layout(&self, seqs: &[(SeqId, usize)]) -> Result<Option<PagedKv>, KvCacheError> {
        let _ = seqs;
        Ok(None)
    }

    /// For a paged attention call: the block pools of `layer` and the block
    /// table and length of each `(sequence, length)`, on the cache's device
    /// (no copy of keys or values). `None` when the cache is not paged.
    /// Lengths may differ; each must be written (committed or appended).
    /// Takes `&mut self` because the device copy of the table and lengths
    /// is rewritten in place: one access at a time.
    fn paged_kv(&mut self, layer: usize, seqs: &[(SeqId, usize)]) -> Result<Option<PagedKvAccess<'_>>, KvCacheError> {
        let _ = (layer, seqs);
        Ok(None)
    }

    fn device(&self) -> Device {
        self.storage().device()
    }

    /// Writes each entry's keys and values (rows of `k` and `v`, f32,
    /// `kv_heads × head_dim` wide, on the cache's device) of `layer` at
    /// positions `len .. len + entry.len`, which must be reserved.
    fn append(&mut self, layer: usize, entries: &[AppendRows], k: &Matrix, v: &Matrix) -> Result<(), KvCacheError> {
        self.append_columns(layer, entries, k.all_columns(), v.all_columns())
    }

    /// [`KvCache::append`] from some columns of wider rows: k and v inside
    /// the fused QKV projection's output, copied from there.
    fn append_columns(
        &mut self,
        layer: usize,
        entries: &[AppendRows],
        k: Columns<'_>,
        v: Columns<'_>,
    ) -> Result<(), KvCacheError> {
        let n: usize = entries.iter().map(|e| e.len).sum();
        let what = || format!("the row indices of {n} new tokens");
        let (mut src, mut dst) = (try_with_capacity(n, what)?, try_with_capacity(n, what)?);
        for e in entries {
            let (len, reserved) = (self.len(e.seq)?, self.reserved(e.seq)?);
            if len + e.len > reserved {
                return Err(KvCacheError::NotReserved { seq: e.seq, len, requested: e.len, reserved });
            }
            for i in 0..e.len {
                src.push(e.first_row + i);
                dst.push(self.row_of(e.seq, len + i)?);
            }
        }
        self.storage_mut().write(layer, k, v, &src, &dst)
    }

    /// Copies positions `0 .. len` of `layer` for each of `seqs` into new
    /// `[seqs.len(), len, kv_heads, head_dim]` tensors in the cache's dtype,
    /// on the cache's device. Positions must be written (committed or appended).
    fn gather(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<(Tensor, Tensor), KvCacheError> {
        check_readable(self, seqs, len)?;
        let n = seqs.len().saturating_mul(len);
        let mut rows = try_with_capacity(n, || format!("the row indices of {n} cached tokens"))?;
        for &seq in seqs {
            for pos in 0..len {
                rows.push(self.row_of(seq, pos)?);
            }
        }
        let s = self.shape();
        self.storage().read(layer, &rows, [seqs.len(), len, s.num_kv_heads, s.head_dim])
    }
}

/// Every sequence has at least `len` written-or-reserved positions.
pub(crate) fn check_readable<C: KvCache + ?Sized>(cache: &C, seqs: &[SeqId], len: usize) -> Result<(), KvCacheError> {
    for &seq in seqs {
        if len > cache.reserved(seq)? {
            return Err(KvCacheError::TooShort { seq, len: cache.len(seq)?, wanted: len });
        }
    }
    Ok(())
}

/// What a paged attention call reads from a [`PagedCache`]: the K and V
/// pools of one layer (`[num_blocks, block_size, kv_heads, head_dim]`), the
/// problem's [`PagedKv`], and the block table and lengths on the device.
pub struct PagedKvAccess<'a> {
    pub k: TensorView<'a>,
    pub v: TensorView<'a>,
    pub layout: PagedKv,
    pub index: &'a PagedIndex,
}

impl PagedKvAccess<'_> {
    /// The integer inputs of `forward_paged`.
    pub fn refs(&self) -> PagedKvRefs<'_> {
        PagedKvRefs { block_table: &self.index.block_table, seq_lens: &self.index.seq_lens }
    }
}

/// A block table (`[sequences, table_width]`, -1 past each length) and the
/// sequence lengths, as a paged attention call takes them.
#[derive(Debug)]
pub struct PagedIndex {
    pub block_table: IndexTensor,
    pub seq_lens: IndexTensor,
}

/// Keys and values as views into a cache.
pub struct KvViews<'a> {
    pub k: TensorView<'a>,
    pub v: TensorView<'a>,
}

/// How many tokens one sequence has: committed, and reserved room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqState {
    pub len: usize,
    pub reserved: usize,
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

#[cfg(test)]
mod tests;
