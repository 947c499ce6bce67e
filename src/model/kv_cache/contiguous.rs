//! [`ContiguousCache`]: a fixed number of sequence slots, each `capacity`
//! consecutive rows of the storage. Position `p` of slot `s` is row
//! `s × capacity + p`, so one sequence's keys are a `[len, kv_heads,
//! head_dim]` tensor with a batch stride of `capacity × kv_heads × head_dim`:
//! attention reads it in place through a strided view.

use super::{check_readable, CacheShape, KvCache, KvCacheError, KvStorage, KvViews, SeqId, SeqState};
use crate::device::Device;
use crate::tensor::Layout;

pub struct ContiguousCache {
    shape: CacheShape,
    capacity: usize,
    storage: KvStorage,
    /// Per slot: `None` when free.
    slots: Vec<Option<SeqState>>,
}

impl ContiguousCache {
    /// A host cache of `slots` sequences of up to `capacity` tokens each.
    pub fn new(shape: CacheShape, slots: usize, capacity: usize) -> Result<ContiguousCache, KvCacheError> {
        ContiguousCache::on(&Device::Cpu, shape, slots, capacity)
    }

    /// The same on `device`.
    pub fn on(
        device: &Device,
        shape: CacheShape,
        slots: usize,
        capacity: usize,
    ) -> Result<ContiguousCache, KvCacheError> {
        shape.check()?;
        for (what, n) in [("slots", slots), ("capacity", capacity)] {
            if n == 0 {
                return Err(KvCacheError::Zero { what });
            }
        }
        let describe = || format!("{} × {}", super::count(slots, "slot"), super::count(capacity, "token"));
        let rows = slots.checked_mul(capacity).ok_or_else(|| KvCacheError::TooLarge {
            what: format!("a KV cache of {}", describe()),
            limit: "more rows than a usize can count".into(),
        })?;
        let storage = KvStorage::new(shape, rows, device, describe)?;
        Ok(ContiguousCache { shape, capacity, storage, slots: vec![None; slots] })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn state(&self, seq: SeqId) -> Result<SeqState, KvCacheError> {
        self.slots.get(seq.0).copied().flatten().ok_or(KvCacheError::UnknownSequence(seq))
    }

    fn state_mut(&mut self, seq: SeqId) -> Result<&mut SeqState, KvCacheError> {
        self.slots.get_mut(seq.0).and_then(Option::as_mut).ok_or(KvCacheError::UnknownSequence(seq))
    }
}

impl KvCache for ContiguousCache {
    fn shape(&self) -> CacheShape {
        self.shape
    }

    fn kind(&self) -> &'static str {
        "contiguous"
    }

    fn storage(&self) -> &KvStorage {
        &self.storage
    }

    fn storage_mut(&mut self) -> &mut KvStorage {
        &mut self.storage
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

    fn reserved(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        let s = self.state(seq)?;
        Ok(s.reserved.max(s.len))
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

    fn commit(&mut self, seq: SeqId, n: usize) -> Result<(), KvCacheError> {
        let state = self.state_mut(seq)?;
        if state.len + n > state.reserved {
            return Err(KvCacheError::NotReserved { seq, len: state.len, requested: n, reserved: state.reserved });
        }
        state.len += n;
        Ok(())
    }

    fn row_of(&self, seq: SeqId, pos: usize) -> Result<usize, KvCacheError> {
        self.state(seq)?;
        if pos >= self.capacity {
            return Err(KvCacheError::TooShort { seq, len: self.capacity, wanted: pos + 1 });
        }
        Ok(seq.0 * self.capacity + pos)
    }

    /// A view when the sequences occupy consecutive slots in order (always
    /// true for one sequence): batch stride = one slot.
    fn views(&self, layer: usize, seqs: &[SeqId], len: usize) -> Result<Option<KvViews<'_>>, KvCacheError> {
        check_readable(self, seqs, len)?;
        let Some(first) = seqs.first() else { return Ok(None) };
        if seqs.iter().enumerate().any(|(i, s)| s.0 != first.0 + i) {
            return Ok(None);
        }
        let row = self.shape.row();
        let layout = Layout {
            shape: [seqs.len(), len, self.shape.num_kv_heads, self.shape.head_dim],
            strides: [self.capacity * row, row, self.shape.head_dim],
            offset: first.0 * self.capacity * row,
        };
        self.storage.views(layer, layout).map(Some)
    }
}
