//! [`ContiguousCache`]: a fixed number of sequence slots, each a slab of
//! `capacity × kv_heads × head_dim` elements per layer for keys and for
//! values. Position `p` of slot `s` sits at element
//! `((s × capacity + p) × kv_heads + h) × head_dim`, so one sequence's keys
//! are a `[len, kv_heads, head_dim]` tensor with a batch stride of
//! `capacity × kv_heads × head_dim`: attention can read it in place once
//! tensors carry strides.

use super::{
    copy, prepare_out, row_count, store, CacheShape, HostStorage, KvCache, KvCacheError, KvViews, SeqId, SeqState,
};
use crate::tensor::{HostData, Layout};

pub struct ContiguousCache {
    shape: CacheShape,
    capacity: usize,
    /// Per layer: `[slots, capacity, kv_heads, head_dim]`.
    storage: HostStorage,
    /// Per slot: `None` when free.
    slots: Vec<Option<SeqState>>,
}

impl ContiguousCache {
    /// A cache of `slots` sequences of up to `capacity` tokens each.
    pub fn new(shape: CacheShape, slots: usize, capacity: usize) -> Result<ContiguousCache, KvCacheError> {
        for (what, n) in [
            ("slots", slots),
            ("capacity", capacity),
            ("num_layers", shape.num_layers),
            ("num_kv_heads", shape.num_kv_heads),
            ("head_dim", shape.head_dim),
        ] {
            if n == 0 {
                return Err(KvCacheError::Zero { what });
            }
        }
        let describe = || format!("{slots} slots × {capacity} tokens × {} elements", shape.row());
        let storage = HostStorage::new(shape, slots, capacity, describe)?;
        Ok(ContiguousCache { shape, capacity, storage, slots: vec![None; slots] })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Element offset of position `pos` of slot `seq` (head 0, dim 0).
    pub fn offset(&self, seq: SeqId, pos: usize) -> usize {
        (seq.0 * self.capacity + pos) * self.shape.row()
    }

    /// Elements between consecutive slots (the batch stride of a view).
    pub fn slot_stride(&self) -> usize {
        self.capacity * self.shape.row()
    }

    fn state(&self, seq: SeqId) -> Result<SeqState, KvCacheError> {
        self.slots.get(seq.0).copied().flatten().ok_or(KvCacheError::UnknownSequence(seq))
    }

    fn state_mut(&mut self, seq: SeqId) -> Result<&mut SeqState, KvCacheError> {
        self.slots.get_mut(seq.0).and_then(Option::as_mut).ok_or(KvCacheError::UnknownSequence(seq))
    }

    fn check_layer(&self, layer: usize) -> Result<(), KvCacheError> {
        if layer >= self.shape.num_layers {
            return Err(KvCacheError::Layer { layer, num_layers: self.shape.num_layers });
        }
        Ok(())
    }
}

impl KvCache for ContiguousCache {
    fn shape(&self) -> CacheShape {
        self.shape
    }

    fn kind(&self) -> &'static str {
        "contiguous"
    }

    fn add_sequence(&mut self) -> Result<SeqId, KvCacheError> {
        let free =
            self.slots.iter().position(Option::is_none).ok_or(KvCacheError::NoFreeSlot { slots: self.slots.len() })?;
        self.slots[free] = Some(SeqState::default());
        Ok(SeqId(free))
    }

    fn remove_sequence(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        self.state(seq)?;
        self.slots[seq.0] = None;
        Ok(())
    }

    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        Ok(self.state(seq)?.len)
    }

    fn reserve(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError> {
        let capacity = self.capacity;
        let state = self.state_mut(seq)?;
        let want = state.len.checked_add(n).filter(|&w| w <= capacity);
        let Some(want) = want else {
            return Err(KvCacheError::CapacityExceeded { seq, len: state.len, requested: n, capacity });
        };
        state.reserved = state.reserved.max(want);
        Ok(())
    }

    fn append(&mut self, layer: usize, seq: SeqId, k: &[f32], v: &[f32]) -> Result<(), KvCacheError> {
        self.check_layer(layer)?;
        let n = row_count(k, v, self.shape.row())?;
        let state = self.state(seq)?;
        if state.len + n > state.reserved {
            return Err(KvCacheError::NotReserved { seq, len: state.len, requested: n, reserved: state.reserved });
        }
        let at = self.offset(seq, state.len);
        let (dk, dv) = self.storage.host_mut(layer);
        store(dk, at, k);
        store(dv, at, v);
        Ok(())
    }

    fn commit(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError> {
        let state = self.state_mut(seq)?;
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
            let from = self.offset(seq, 0);
            copy(k, b * per_seq, sk, from, per_seq);
            copy(v, b * per_seq, sv, from, per_seq);
        }
        Ok(())
    }

    /// A view when the sequences occupy consecutive slots in order (always
    /// true for one sequence): batch stride = one slot.
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError> {
        self.check_readable(layer, seqs, len)?;
        let Some(first) = seqs.first() else { return Ok(None) };
        if seqs.iter().enumerate().any(|(i, s)| s.0 != first.0 + i) {
            return Ok(None);
        }
        let row = self.shape.row();
        let layout = Layout {
            shape: [seqs.len(), len, self.shape.num_kv_heads, self.shape.head_dim],
            strides: [self.slot_stride(), row, self.shape.head_dim],
            offset: self.offset(*first, 0),
        };
        self.storage.views(layer, layout).map(Some)
    }
}

impl ContiguousCache {
    /// `layer` exists and every sequence has `len` written positions.
    fn check_readable(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<(), KvCacheError> {
        self.check_layer(layer)?;
        for &seq in seqs {
            let state = self.state(seq)?;
            if len > state.reserved.max(state.len) {
                return Err(KvCacheError::TooShort { seq, len: state.len, wanted: len });
            }
        }
        Ok(())
    }
}
