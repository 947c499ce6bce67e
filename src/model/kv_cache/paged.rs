//! [`PagedCache`]: keys and values in blocks of `block_size` tokens drawn
//! from one pool shared by every sequence. Each sequence has a block table
//! (shared by all layers); position `p` lives in block
//! `table[p / block_size]` at row `p % block_size`. Per layer the pool is
//! `[num_blocks, block_size, kv_heads, head_dim]` for keys and for values,
//! the layout paged-attention kernels read.

use super::{
    copy, prepare_out, row_count, store, CacheShape, HostStorage, KvCache, KvCacheError, KvViews, SeqId, SeqState,
    BLOCK_SIZES,
};
use crate::tensor::{HostData, Layout};
use std::collections::BTreeMap;

pub struct PagedCache {
    shape: CacheShape,
    block_size: usize,
    num_blocks: usize,
    /// Per layer: `[num_blocks, block_size, kv_heads, head_dim]`.
    storage: HostStorage,
    /// Free block ids; popped from the end.
    free: Vec<u32>,
    tables: BTreeMap<SeqId, (SeqState, Vec<u32>)>,
    next_id: usize,
}

impl PagedCache {
    /// A pool of `num_blocks` blocks of `block_size` (16 or 32) tokens.
    pub fn new(shape: CacheShape, block_size: usize, num_blocks: usize) -> Result<PagedCache, KvCacheError> {
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(KvCacheError::BlockSize(block_size));
        }
        for (what, n) in [
            ("num_blocks", num_blocks),
            ("num_layers", shape.num_layers),
            ("num_kv_heads", shape.num_kv_heads),
            ("head_dim", shape.head_dim),
        ] {
            if n == 0 {
                return Err(KvCacheError::Zero { what });
            }
        }
        let describe = || format!("{num_blocks} blocks × {block_size} tokens × {} elements", shape.row());
        if u32::try_from(num_blocks).is_err() {
            return Err(KvCacheError::TooLarge { what: describe() });
        }
        let storage = HostStorage::new(shape, num_blocks, block_size, describe)?;
        // Hand out low block ids first (pop from the end of a reversed list).
        let free = (0..num_blocks as u32).rev().collect();
        Ok(PagedCache { shape, block_size, num_blocks, storage, free, tables: BTreeMap::new(), next_id: 0 })
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

    /// Element offset of position `pos` through `table`.
    fn offset(&self, table: &[u32], pos: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size) * self.shape.row()
    }

    fn check_layer(&self, layer: usize) -> Result<(), KvCacheError> {
        if layer >= self.shape.num_layers {
            return Err(KvCacheError::Layer { layer, num_layers: self.shape.num_layers });
        }
        Ok(())
    }

    /// Copies `rows` rows starting at `pos` through `table`, block run by
    /// block run, with `f(pool_offset, linear_offset, elements)`.
    fn runs(&self, table: &[u32], pos: usize, rows: usize, mut f: impl FnMut(usize, usize, usize)) {
        let row = self.shape.row();
        let mut done = 0;
        while done < rows {
            let p = pos + done;
            let in_block = (self.block_size - p % self.block_size).min(rows - done);
            f(self.offset(table, p), done * row, in_block * row);
            done += in_block;
        }
    }
}

impl KvCache for PagedCache {
    fn shape(&self) -> CacheShape {
        self.shape
    }

    fn kind(&self) -> &'static str {
        "paged"
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
        Ok(())
    }

    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        Ok(self.entry(seq)?.0.len)
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

    fn append(&mut self, layer: usize, seq: SeqId, k: &[f32], v: &[f32]) -> Result<(), KvCacheError> {
        self.check_layer(layer)?;
        let n = row_count(k, v, self.shape.row())?;
        let (state, table) = self.entry(seq)?;
        if state.len + n > state.reserved {
            return Err(KvCacheError::NotReserved { seq, len: state.len, requested: n, reserved: state.reserved });
        }
        let mut spans = Vec::new();
        self.runs(table, state.len, n, |pool, linear, count| spans.push((pool, linear, count)));
        let (dk, dv) = self.storage.host_mut(layer);
        for (pool, linear, count) in spans {
            store(dk, pool, &k[linear..linear + count]);
            store(dv, pool, &v[linear..linear + count]);
        }
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

    fn gather(
        &self,
        layer: usize,
        seqs: &[SeqId],
        len: usize,
        k: &mut HostData,
        v: &mut HostData,
    ) -> Result<(), KvCacheError> {
        self.check_readable(layer, seqs, len)?;
        let per_seq = len * self.shape.row();
        prepare_out(k, self.shape.dtype, seqs.len() * per_seq)?;
        prepare_out(v, self.shape.dtype, seqs.len() * per_seq)?;
        let (sk, sv) = self.storage.host(layer);
        for (b, &seq) in seqs.iter().enumerate() {
            let (_, table) = self.entry(seq)?;
            self.runs(table, 0, len, |pool, linear, count| {
                copy(k, b * per_seq + linear, sk, pool, count);
                copy(v, b * per_seq + linear, sv, pool, count);
            });
        }
        Ok(())
    }

    /// A view when there is one sequence whose blocks holding `0 .. len`
    /// are consecutive in the pool, in order (as a fresh pool hands them out).
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError> {
        self.check_readable(layer, seqs, len)?;
        let [seq] = seqs else { return Ok(None) };
        let (_, table) = self.entry(*seq)?;
        let used = &table[..len.div_ceil(self.block_size)];
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
}

impl PagedCache {
    /// `layer` exists and every sequence has `len` written positions.
    fn check_readable(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<(), KvCacheError> {
        self.check_layer(layer)?;
        for &seq in seqs {
            let (state, _) = self.entry(seq)?;
            if len > state.reserved.max(state.len) {
                return Err(KvCacheError::TooShort { seq, len: state.len, wanted: len });
            }
        }
        Ok(())
    }
}
