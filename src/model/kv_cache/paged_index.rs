//! The block tables and lengths a paged attention call reads, kept on the
//! cache's device between calls.
//!
//! A decode step changes every sequence's length but its block table only
//! when a sequence enters a new block (every `block_size` tokens). So each
//! group of sequences that attention reads together keeps one device copy
//! of its table and lengths ([`IndexSlot`]), and a call rewrites in place
//! only the entries that differ from the previous call's:
//!
//! - the lengths (one small write per step), and the table only when a
//!   block was appended;
//! - through `put_words` launches, whose words travel inside the kernel's
//!   parameters. The driver copies launch parameters when the launch is
//!   queued, so no host buffer has to outlive the call (no pinned staging
//!   buffer, no event to wait on) and nothing synchronizes: the write is
//!   ordered on the device's one stream after every kernel that read the
//!   old values and before every kernel that reads the new ones.
//!
//! Device memory is allocated only when a group is new, when the longest
//! sequence needs a wider table (widths are powers of two, so that happens
//! about log2(blocks) times over a generation; entries past a length are
//! never read, so a wider table costs nothing else), or for a rewrite too
//! long for the launches (then the whole index is uploaded again, which
//! synchronizes).

use super::{KvCacheError, PagedIndex, SeqId};
use crate::device::Device;
use crate::model::engine::gpu::GpuEngine;
use crate::tensor::IndexTensor;

/// Groups whose index is kept; the least recently used one is dropped
/// for a new group past this.
const MAX_SLOTS: usize = 8;

/// Words above which a rewrite uploads a new index instead (prefill-sized
/// tables of many sequences only).
const MAX_IN_PLACE_WORDS: usize = 16 * 960;

/// What the paged index did so far, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexUploads {
    /// Block tables and lengths allocated and uploaded whole (a new group
    /// of sequences, a wider table, or a rewrite too long for launches).
    pub allocations: u64,
    /// In-place writes of changed block-table entries.
    pub table_writes: u64,
    /// In-place writes of changed lengths.
    pub len_writes: u64,
}

/// One group's index: host values (as last written) and the device copy.
struct IndexSlot {
    seqs: Vec<SeqId>,
    width: usize,
    table: Vec<i32>,
    lens: Vec<i32>,
    index: PagedIndex,
    last_used: u64,
}

/// Every kept group's index on one device.
pub(super) struct PagedIndexes {
    device: Device,
    slots: Vec<IndexSlot>,
    clock: u64,
    uploads: IndexUploads,
}

/// The width of a block table for sequences that need `blocks` blocks.
pub(super) fn table_width(blocks: usize) -> usize {
    blocks.max(1).next_power_of_two()
}

fn gpu_err(e: impl std::fmt::Display) -> KvCacheError {
    KvCacheError::Gpu(e.to_string())
}

fn upload(values: &[i32], device: &Device) -> Result<IndexTensor, KvCacheError> {
    IndexTensor::from_host(values.to_vec()).to_device(device).map_err(gpu_err)
}

/// The range of indices where `old` and `new` (same length) differ.
fn changed(old: &[i32], new: &[i32]) -> Option<(usize, usize)> {
    let first = old.iter().zip(new).position(|(a, b)| a != b)?;
    let last = old.iter().zip(new).rposition(|(a, b)| a != b)?;
    Some((first, last + 1))
}

impl PagedIndexes {
    pub(super) fn new(device: Device) -> PagedIndexes {
        PagedIndexes { device, slots: Vec::new(), clock: 0, uploads: IndexUploads::default() }
    }

    pub(super) fn uploads(&self) -> IndexUploads {
        self.uploads
    }

    /// Drops every kept index that names `seq` (it left the cache).
    pub(super) fn forget(&mut self, seq: SeqId) {
        self.slots.retain(|s| !s.seqs.contains(&seq));
    }

    /// The device index of the group `seqs` holding `table` (`[seqs,
    /// width]`) and `lens`, written where it differs from the last call.
    pub(super) fn get(
        &mut self,
        seqs: Vec<SeqId>,
        width: usize,
        table: Vec<i32>,
        lens: Vec<i32>,
    ) -> Result<&PagedIndex, KvCacheError> {
        self.clock += 1;
        let found = self.slots.iter().position(|s| s.seqs == seqs && s.width == width);
        let at = match found {
            Some(at) => {
                self.rewrite(at, table, lens)?;
                at
            }
            None => {
                self.slots.retain(|s| s.seqs != seqs);
                if self.slots.len() >= MAX_SLOTS {
                    let oldest = self.slots.iter().enumerate().min_by_key(|(_, s)| s.last_used).map(|(i, _)| i);
                    oldest.map(|i| self.slots.swap_remove(i));
                }
                let index =
                    PagedIndex { block_table: upload(&table, &self.device)?, seq_lens: upload(&lens, &self.device)? };
                self.uploads.allocations += 1;
                self.slots.push(IndexSlot { seqs, width, table, lens, index, last_used: 0 });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[at];
        slot.last_used = self.clock;
        Ok(&slot.index)
    }

    /// Brings slot `at` to `table` and `lens` (same shapes).
    fn rewrite(&mut self, at: usize, table: Vec<i32>, lens: Vec<i32>) -> Result<(), KvCacheError> {
        let slot = &mut self.slots[at];
        let spans = [changed(&slot.table, &table), changed(&slot.lens, &lens)];
        let too_long = spans.iter().flatten().map(|(a, b)| b - a).sum::<usize>() > MAX_IN_PLACE_WORDS;
        if too_long || matches!(self.device, Device::Cpu) {
            // Host indexes are plain vectors: replacing them is the write.
            if spans.iter().any(Option::is_some) {
                slot.index =
                    PagedIndex { block_table: upload(&table, &self.device)?, seq_lens: upload(&lens, &self.device)? };
                if too_long {
                    self.uploads.allocations += 1;
                } else {
                    self.uploads.table_writes += spans[0].is_some() as u64;
                    self.uploads.len_writes += spans[1].is_some() as u64;
                }
            }
        } else if let Device::Gpu(gpu) = &self.device {
            let engine = GpuEngine::new(gpu.clone());
            for ((span, new), tensor) in
                spans.iter().zip([&table, &lens]).zip([&slot.index.block_table, &slot.index.seq_lens])
            {
                let Some((a, b)) = *span else { continue };
                let base = tensor.gpu_ptr().ok_or_else(|| KvCacheError::Gpu("paged index is not on the GPU".into()))?;
                let words: Vec<u32> = new[a..b].iter().map(|&x| x as u32).collect();
                // SAFETY: the tensor holds new.len() i32s (same shape as the
                // slot's, checked by the caller's key); words a..b lie inside.
                unsafe { engine.put_words_at(base + 4 * a as u64, &words) }.map_err(gpu_err)?;
            }
            self.uploads.table_writes += spans[0].is_some() as u64;
            self.uploads.len_writes += spans[1].is_some() as u64;
        }
        slot.table = table;
        slot.lens = lens;
        Ok(())
    }
}
