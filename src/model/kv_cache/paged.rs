//! [`PagedCache`]: keys and values in blocks of `block_size` rows drawn from
//! one pool shared by every sequence. Each sequence has a block table
//! (shared by all layers); position `p` is row
//! `table[p / block_size] × block_size + p % block_size`, so per layer the
//! storage is the `[num_blocks, block_size, kv_heads, head_dim]` pool that
//! paged-attention kernels read.

use super::paged_index::{table_width, IndexUploads, PagedIndexes};
use super::{
    check_readable, CacheShape, KvCache, KvCacheError, KvStorage, KvViews, PagedKvAccess, SeqId, SeqState, BLOCK_SIZES,
};
use crate::device::Device;
use crate::problem::PagedKv;
use crate::tensor::Layout;
use std::collections::BTreeMap;

pub struct PagedCache {
    shape: CacheShape,
    block_size: usize,
    num_blocks: usize,
    storage: KvStorage,
    /// Free block ids; popped from the end.
    free: Vec<u32>,
    tables: BTreeMap<SeqId, (SeqState, Vec<u32>)>,
    next_id: usize,
    /// The block tables and lengths paged calls read, kept on the cache's
    /// device and rewritten in place where they change (see `paged_index.rs`).
    indexes: PagedIndexes,
}

impl PagedCache {
    /// A host pool of `num_blocks` blocks of `block_size` (16 or 32) tokens.
    pub fn new(shape: CacheShape, block_size: usize, num_blocks: usize) -> Result<PagedCache, KvCacheError> {
        PagedCache::on(&Device::Cpu, shape, block_size, num_blocks)
    }

    /// The same on `device`.
    pub fn on(
        device: &Device,
        shape: CacheShape,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<PagedCache, KvCacheError> {
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(KvCacheError::BlockSize(block_size));
        }
        shape.check()?;
        if num_blocks == 0 {
            return Err(KvCacheError::Zero { what: "num_blocks" });
        }
        let describe = || format!("{} of {block_size} tokens", super::count(num_blocks, "block"));
        if u32::try_from(num_blocks).is_err() {
            let limit = format!("block ids are 32-bit (at most {} blocks)", u32::MAX);
            return Err(KvCacheError::TooLarge { what: format!("a paged KV cache of {}", describe()), limit });
        }
        let rows = num_blocks.checked_mul(block_size).ok_or_else(|| KvCacheError::TooLarge {
            what: format!("a paged KV cache of {}", describe()),
            limit: "more rows than a usize can count".into(),
        })?;
        let storage = KvStorage::new(shape, rows, device, describe)?;
        // Hand out low block ids first (pop from the end of a reversed list).
        let free = (0..num_blocks as u32).rev().collect();
        Ok(PagedCache {
            shape,
            block_size,
            num_blocks,
            storage,
            free,
            tables: BTreeMap::new(),
            next_id: 0,
            indexes: PagedIndexes::new(device.clone()),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// The block table of `seq`.
    pub fn block_table(&self, seq: SeqId) -> Result<&[u32], KvCacheError> {
        self.tables.get(&seq).map(|(_, t)| t.as_slice()).ok_or(KvCacheError::UnknownSequence(seq))
    }

    fn entry(&self, seq: SeqId) -> Result<&(SeqState, Vec<u32>), KvCacheError> {
        self.tables.get(&seq).ok_or(KvCacheError::UnknownSequence(seq))
    }

    /// What the paged index has allocated and written so far.
    pub fn index_uploads(&self) -> IndexUploads {
        self.indexes.uploads()
    }

    /// The problem's paged layout for `seqs`: this pool, and a table wide
    /// enough for the longest (a power of two, so it rarely changes).
    fn layout(&self, seqs: &[(SeqId, usize)]) -> Result<PagedKv, KvCacheError> {
        for &(seq, len) in seqs {
            check_readable(self, &[seq], len)?;
        }
        if i32::try_from(self.num_blocks).is_err() {
            return Err(KvCacheError::TooLarge {
                what: format!("a pool of {} blocks", self.num_blocks),
                limit: format!("a paged attention call takes at most {} blocks", i32::MAX),
            });
        }
        let blocks = seqs.iter().map(|&(_, len)| len.div_ceil(self.block_size)).max().unwrap_or(0);
        Ok(PagedKv { block_size: self.block_size, num_blocks: self.num_blocks, table_width: table_width(blocks) })
    }

    /// The block table (`[seqs, width]`, -1 past each length) and lengths of `seqs`.
    fn index_values(&self, seqs: &[(SeqId, usize)], width: usize) -> Result<(Vec<i32>, Vec<i32>), KvCacheError> {
        let mut table = vec![-1i32; seqs.len() * width];
        let mut lens = Vec::with_capacity(seqs.len());
        for (i, &(seq, len)) in seqs.iter().enumerate() {
            let (_, blocks) = self.entry(seq)?;
            for (slot, &block) in table[i * width..].iter_mut().zip(&blocks[..len.div_ceil(self.block_size)]) {
                *slot = block as i32; // block ids < num_blocks, checked to fit i32 in `layout`
            }
            lens.push(i32::try_from(len).map_err(|_| KvCacheError::TooLarge {
                what: format!("a sequence of {len} positions"),
                limit: format!("a paged attention call takes at most {} per sequence", i32::MAX),
            })?);
        }
        Ok((table, lens))
    }
}

impl KvCache for PagedCache {
    fn shape(&self) -> CacheShape {
        self.shape
    }

    fn kind(&self) -> &'static str {
        "paged"
    }

    fn storage(&self) -> &KvStorage {
        &self.storage
    }

    fn storage_mut(&mut self) -> &mut KvStorage {
        &mut self.storage
    }

    fn add_sequence(&mut self) -> Result<SeqId, KvCacheError> {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.tables.insert(id, (SeqState::default(), Vec::new()));
        Ok(id)
    }

    fn remove_sequence(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        let (_, table) = self.tables.remove(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        self.free.extend(table.into_iter().rev());
        self.indexes.forget(seq);
        Ok(())
    }

    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        Ok(self.entry(seq)?.0.len)
    }

    fn reserved(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        let (s, _) = self.entry(seq)?;
        Ok(s.reserved.max(s.len))
    }

    fn reserve(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError> {
        let (block_size, total) = (self.block_size, self.num_blocks);
        let free = self.free.len();
        let (state, table) = self.tables.get_mut(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        let overflow =
            || KvCacheError::CapacityExceeded { seq, len: state.len, requested: n, capacity: total * block_size };
        let want = state.len.checked_add(n).ok_or_else(overflow)?;
        let blocks = want.div_ceil(block_size);
        let needed = blocks.saturating_sub(table.len());
        if needed > free {
            return Err(KvCacheError::PoolExhausted { seq, needed, free, total, block_size });
        }
        let at = self.free.len() - needed;
        table.extend(self.free.drain(at..).rev());
        state.reserved = state.reserved.max(want);
        Ok(())
    }

    fn commit(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError> {
        let (state, _) = self.tables.get_mut(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        if state.len + n > state.reserved {
            return Err(KvCacheError::NotReserved { seq, len: state.len, requested: n, reserved: state.reserved });
        }
        state.len += n;
        Ok(())
    }

    fn row_of(&self, seq: SeqId, pos: usize) -> Result<usize, KvCacheError> {
        let (state, table) = self.entry(seq)?;
        let block =
            table.get(pos / self.block_size).ok_or(KvCacheError::TooShort { seq, len: state.len, wanted: pos + 1 })?;
        Ok(*block as usize * self.block_size + pos % self.block_size)
    }

    /// A view when there is one sequence whose blocks holding `0 .. len` are
    /// consecutive in the pool, in order (as a fresh pool hands them out).
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError> {
        check_readable(self, seqs, len)?;
        let [seq] = seqs else { return Ok(None) };
        let (_, table) = self.entry(*seq)?;
        let used = &table[..len.div_ceil(self.block_size).min(table.len())];
        let Some(&first) = used.first() else { return Ok(None) };
        if used.iter().enumerate().any(|(i, &b)| b as usize != first as usize + i) {
            return Ok(None);
        }
        let row = self.shape.row();
        let layout = Layout {
            shape: [1, len, self.shape.num_kv_heads, self.shape.head_dim],
            strides: [len * row, row, self.shape.head_dim],
            offset: first as usize * self.block_size * row,
        };
        self.storage.views(layer, layout).map(Some)
    }

    fn paged_layout(&self, seqs: &[(SeqId, usize)]) -> Result<Option<PagedKv>, KvCacheError> {
        self.layout(seqs).map(Some)
    }

    fn paged_kv(&mut self, layer: usize, seqs: &[(SeqId, usize)]) -> Result<Option<PagedKvAccess<'_>>, KvCacheError> {
        let layout = self.layout(seqs)?;
        if layer >= self.shape.num_layers {
            return Err(KvCacheError::Layer { layer, num_layers: self.shape.num_layers });
        }
        let (table, lens) = self.index_values(seqs, layout.table_width)?;
        let ids = seqs.iter().map(|&(seq, _)| seq).collect();
        let index = self.indexes.get(ids, layout.table_width, table, lens)?;
        let pool = [self.num_blocks, self.block_size, self.shape.num_kv_heads, self.shape.head_dim];
        let views = self.storage.views(layer, Layout::contiguous(pool))?;
        Ok(Some(PagedKvAccess { k: views.k, v: views.v, layout, index }))
    }
}
