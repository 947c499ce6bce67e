//! How many blocks share one (sequence, KV head): the split-KV plan. Pure
//! arithmetic on the problem's lengths and the device's multiprocessor
//! count, so it is unit-tested here and the launch only applies it.

/// Most splits of one sequence (the merge reads every partial; MERGE_SPLITS
/// in kernels/include/rf/decode/merge.h).
pub const MAX_SPLITS: usize = 128;

/// What the plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitInput {
    /// The longest sequence (every sequence is split the same way).
    pub seq_kv: usize,
    pub batch: usize,
    pub heads_kv: usize,
    /// Query rows of one KV head: group size × seq_q.
    pub rows: usize,
    /// Keys per tile of the kernel.
    pub block_n: usize,
    /// Query rows per block of the kernel.
    pub rows_per_block: usize,
    pub multiprocessors: usize,
    /// Blocks of the kernel one multiprocessor runs at once.
    pub blocks_per_sm: usize,
}

/// How the kernel is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// Blocks along the keys of one sequence (grid x).
    pub num_splits: usize,
    /// Keys per split, a multiple of `block_n`.
    pub split_keys: usize,
    /// Blocks along the query rows of one KV head.
    pub row_chunks: usize,
}

/// Blocks one multiprocessor holds, from the kernel's shared memory and the
/// multiprocessor's (1 KB per block reserved by the hardware), at most 4
/// (the register file's limit at 128 threads and ~128 registers each).
pub fn blocks_per_sm(smem_bytes: usize, sm_shared_bytes: usize) -> usize {
    (sm_shared_bytes / (smem_bytes + 1024).max(1)).clamp(1, 4)
}

/// The plan with the least modelled time. Blocks run in waves of
/// `multiprocessors × blocks_per_sm`; a wave lasts as long as its blocks'
/// tiles plus a fixed cost (pipeline fill, Q load, output), and more than
/// one split adds the merge (the last block of each row). Ties go to fewer
/// splits.
pub fn plan(input: &SplitInput) -> SplitPlan {
    let block_n = input.block_n.max(1);
    let row_chunks = input.rows.div_ceil(input.rows_per_block.max(1)).max(1);
    let tiles = input.seq_kv.div_ceil(block_n).max(1);
    let base = input.batch.max(1) * input.heads_kv.max(1) * row_chunks;
    let slots = (input.multiprocessors.max(1) * input.blocks_per_sm.max(1)) as f64;
    const FIXED_TILES: f64 = 2.0;
    const MERGE_TILES: f64 = 1.0;
    let mut best = (f64::INFINITY, 1, tiles);
    let mut last_per = 0;
    for wanted in 1..=tiles.min(MAX_SPLITS) {
        let per = tiles.div_ceil(wanted);
        if per == last_per {
            continue; // same plan as the previous count
        }
        last_per = per;
        let splits = tiles.div_ceil(per);
        let waves = ((base * splits) as f64 / slots).ceil();
        let cost = waves * (per as f64 + FIXED_TILES) + if splits > 1 { MERGE_TILES } else { 0.0 };
        if cost < best.0 {
            best = (cost, splits, per);
        }
    }
    SplitPlan { num_splits: best.1, split_keys: best.2 * block_n, row_chunks }
}

/// Whether a call takes the wide kernel (128-key tiles, one block per
/// multiprocessor; launch.rs): when its (sequence, KV head, row chunk)
/// blocks are fewer than the multiprocessors, so that the grid comes from
/// splitting the keys. H100, bf16, 8 KV heads: faster at batch 1, 8 and
/// 16 (not at 1 × 1024 keys), equal at 4, slower at 32 and 64
/// (docs/perf.md, decode4).
pub fn wide(batch: usize, heads_kv: usize, row_chunks: usize, multiprocessors: usize) -> bool {
    batch.saturating_mul(heads_kv).saturating_mul(row_chunks) < multiprocessors
}

/// The plan with `per` tiles per split (at least enough for MAX_SPLITS),
/// for measurements (`ROCMFORGE_DECODE_TUNE=split_tiles=N`).
pub fn plan_with_tiles(input: &SplitInput, per: usize) -> SplitPlan {
    let block_n = input.block_n.max(1);
    let tiles = input.seq_kv.div_ceil(block_n).max(1);
    let per = per.max(tiles.div_ceil(MAX_SPLITS)).clamp(1, tiles);
    let row_chunks = input.rows.div_ceil(input.rows_per_block.max(1)).max(1);
    SplitPlan { num_splits: tiles.div_ceil(per), split_keys: per * block_n, row_chunks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(batch: usize, seq_kv: usize) -> SplitInput {
        SplitInput {
            seq_kv,
            batch,
            heads_kv: 8,
            rows: 4,
            block_n: 64,
            rows_per_block: 16,
            multiprocessors: 132,
            blocks_per_sm: 2,
        }
    }

    #[test]
    fn small_batches_split_long_sequences_to_fill_the_gpu() {
        // b = 1, 8 KV heads, 8192 keys (128 tiles): 8 blocks alone would
        // leave 124 of 132 multiprocessors idle.
        let p = plan(&input(1, 8192));
        assert!(p.num_splits >= 16 && p.num_splits * 8 <= 264, "{p:?}");
        assert_eq!(p.split_keys % 64, 0);
        assert!(p.num_splits * p.split_keys >= 8192 && (p.num_splits - 1) * p.split_keys < 8192);
        assert_eq!(p.row_chunks, 1);
    }

    #[test]
    fn big_batches_do_not_split() {
        let p = plan(&input(64, 2048));
        assert_eq!(p.num_splits, 1, "{p:?}");
        assert_eq!(p.split_keys, 2048);
    }

    #[test]
    fn every_key_is_in_exactly_one_split() {
        for seq_kv in [1, 63, 64, 65, 1000, 4097, 16384, 100_000] {
            for batch in [1, 3, 16] {
                let p = plan(&input(batch, seq_kv));
                assert!(p.num_splits >= 1 && p.num_splits <= MAX_SPLITS);
                assert!(p.num_splits * p.split_keys >= seq_kv, "{seq_kv} {batch}: {p:?}");
                assert!((p.num_splits - 1) * p.split_keys < seq_kv, "{seq_kv} {batch}: an empty split {p:?}");
            }
        }
    }

    #[test]
    fn forced_tiles_per_split_cover_every_key_within_the_split_limit() {
        let p = plan_with_tiles(&input(1, 8192), 8);
        assert_eq!((p.num_splits, p.split_keys), (16, 512));
        let p = plan_with_tiles(&input(1, 100_000), 1);
        assert!(p.num_splits <= MAX_SPLITS && p.num_splits * p.split_keys >= 100_000, "{p:?}");
        let p = plan_with_tiles(&input(2, 100), 50);
        assert_eq!((p.num_splits, p.split_keys), (1, 128));
    }

    #[test]
    fn the_wide_kernel_serves_grids_made_by_splitting() {
        assert!(wide(1, 8, 1, 132));
        assert!(wide(16, 8, 1, 132));
        assert!(!wide(32, 8, 1, 132));
        assert!(!wide(64, 8, 1, 132));
        assert!(!wide(9, 8, 2, 132));
        assert!(!wide(usize::MAX, 8, 1, 132));
    }

    #[test]
    fn rows_past_one_block_become_chunks() {
        let p = plan(&SplitInput { rows: 64, ..input(1, 512) });
        assert_eq!(p.row_chunks, 4);
        assert_eq!(blocks_per_sm(82_752, 228 * 1024), 2);
        assert_eq!(blocks_per_sm(200_000, 64 * 1024), 1);
    }
}
