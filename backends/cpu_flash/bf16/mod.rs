//! cpu-flash for bf16 on the CPU's bf16 dot-product units: AMX tiles
//! (`tdpbf16ps`) or AVX512-BF16 (`vdpbf16ps`). Both products read bf16 as
//! it is and accumulate in f32; the softmax runs in f32 and P is rounded to
//! bf16 for P·V, as the GPU flash kernels do.
//!
//! Layouts (per task; `dq` = head_dim rounded up to 32, keys in steps of
//! `SK`, queries in units of `BQ` as in the f32 path):
//!
//! * Q: a unit's rows copied as bf16, `[BQ][dq]`, zero-padded.
//! * K^T in pairs: `(K[j][2p], K[j][2p+1])` as one u32 per (pair p, key
//!   j), blocked: a block is 32 keys × 16 pairs, 2 KiB contiguous, one
//!   128-byte row of 32 keys per pair (`kt_offset`), so an AMX B operand
//!   (16 pairs × 16 keys) is 16 rows 128 bytes apart inside one block and
//!   `vdpbf16ps` reads 32 keys of a pair from one row. Tiles start at
//!   multiples of 32 keys (leading keys before a row's range are masked).
//! * V in pairs: `(V[2jp][c], V[2jp+1][c])` (VNNI) as one u32 per (pair
//!   row jp, dim c), from key 0 (tiles start at even keys), blocked: dims
//!   in groups of 16, each group a run of 64-byte rows, one per pair row
//!   (`vv_offset`), so an AMX B operand is 1 KiB contiguous.
//! * S = Q·K^T, query-major `[BQ][SP]` f32 (raw dot products); the online
//!   softmax scales, masks and exponentiates each row, and writes P as bf16
//!   `[BQ][p_pitch]`, zero past the tile's keys (products run over whole blocks
//!   of 32 keys). For bf16 the row sums add P before its rounding (as
//!   PyTorch's CPU flash kernel does; the rounding errors of 32+ weights
//!   mostly cancel in the sum), and `exp2` is a degree-3 polynomial (P only
//!   needs bf16's 8 bits): 21 vector operations per 32 keys instead of 34;
//!   for split inputs the sums add the rounded halves.
//! * O: `[BQ][dp]` f32, as in the f32 path (`task::finish_units` writes it).
//!
//! K^T and V pairs are packed once per kv head per worker when the head
//! fits `VHEAD_MAX` (as the f32 path's head copies), else per key tile.

mod amx;
pub(crate) mod amx_state;
mod dot;
mod pack;
mod softmax;
mod task;
pub(crate) mod tiles;

pub(crate) use amx::Amx;
pub(crate) use dot::Dot;
#[cfg(test)]
pub(super) use pack::pack_kt_for_test;
pub(super) use pack::{Bf16Scratch, Src};
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use softmax::exp2_bf16_lanes;
pub(super) use softmax::round_bf16;
#[cfg(target_arch = "x86_64")]
pub(crate) use softmax::Avx512Softmax;
#[cfg(test)]
pub(crate) use softmax::PortableSoftmax;
pub(super) use task::run_task;

/// Keys per step (one unit over one walk tile). The f32 path's tiles are
/// 64 keys (`BK`); here longer steps let P·V accumulate over 8 blocks of
/// 32 keys per round trip of O through the accumulator tiles, and spread
/// the softmax's per-row work over more keys.
pub(crate) const SK: usize = 256;

/// Keys per K^T block.
pub(super) const KB: usize = 32;

/// Row pitch of S (f32): `SK` plus a 64-byte line, so that the 16 rows of
/// an AMX tile store do not fall into a few L1 sets (1 KiB apart, every
/// row of a tile would share 4 of the 64 sets).
pub(crate) const SP: usize = SK + 16;

/// Row pitch of P (bf16 bits): `SK` values (split inputs: `2 · SK`, the
/// low halves from `SK` on) plus a 64-byte line, for the same reason.
pub(crate) const fn p_pitch(split: bool) -> usize {
    if split {
        2 * SK + 32
    } else {
        SK + 32
    }
}

/// Where pair `p` of key `j` sits in a K^T pack whose first key is a block
/// start: blocks of `KB` keys × 16 pairs (`pairs / 16` of them per key
/// block, consecutive), each `16 · KB` u32 with one row of `KB` keys per
/// pair.
#[inline(always)]
pub(crate) fn kt_offset(p: usize, j: usize, pairs: usize) -> usize {
    ((j / KB) * (pairs / 16) + p / 16) * (16 * KB) + (p % 16) * KB + j % KB
}

/// Where dim `c` of key-pair row `jp` sits in a V pack: dims in groups of
/// 16, `group` u32 apart; inside a group one row of 16 u32 per pair row,
/// so that an AMX B operand (16 pair rows × 16 dims) is 1 KiB contiguous
/// and a group's successive key blocks follow each other.
#[inline(always)]
pub(crate) fn vv_offset(jp: usize, c: usize, group: usize) -> usize {
    (c / 16) * group + jp * 16 + c % 16
}

/// Operands of `S = Q·K^T` for one unit and tile.
pub(super) struct QkArgs {
    /// Q rows as bf16 bits, `q_pitch` elements apart, `2 · pairs` each
    /// (for split inputs the high halves, then the low halves).
    pub q: *const u16,
    pub q_pitch: usize,
    /// K^T pairs from the tile's first key (a block start), laid out as
    /// `kt_offset(p, j, pairs)` says: the high halves, and for split
    /// inputs the low halves.
    pub kt: [*const u32; 2],
    /// Inputs split into bf16 high + low halves (f16):
    /// `S = Qh·Kh + Qh·Kl + Ql·Kh`.
    pub split: bool,
    /// Dimension pairs (a multiple of 16).
    pub pairs: usize,
    /// Scores out, `[rows][SP]` f32.
    pub s: *mut f32,
    /// Query rows (a multiple of 16, <= BQ).
    pub rows: usize,
    /// Keys (a multiple of 32, <= SK).
    pub keys: usize,
}

/// Operands of `O = alpha·O + P·V` for one unit and tile.
pub(super) struct PvArgs {
    /// P as bf16 bits, rows `p_pitch` apart (for split inputs the high
    /// halves, then the low halves `SK` further on).
    pub p: *const u16,
    pub p_pitch: usize,
    /// V pairs at the tile's first key: dim `c` of pair row `jp` at
    /// `vv + vv_offset(jp, c, vv_group)`; the high halves, and for split
    /// inputs the low halves.
    pub vv: [*const u32; 2],
    /// `O += Ph·Vh + Ph·Vl + Pl·Vh` (split inputs).
    pub split: bool,
    /// u32 from one group of 16 dims to the next (`vv_offset`).
    pub vv_group: usize,
    /// Keys (a multiple of 32, <= SK).
    pub keys: usize,
    /// O, `[rows][dp]` f32.
    pub o: *mut f32,
    /// Dims (a multiple of 16).
    pub dp: usize,
    /// Per row, the factor O is rescaled by (only read when `RESCALES_O`).
    pub alpha: *const f32,
    pub rows: usize,
}

/// The products a split input adds up: (offset into a Q row, K^T pack).
impl QkArgs {
    pub(super) fn sections(&self) -> ([(usize, *const u32); 3], usize) {
        if self.split {
            ([(0, self.kt[0]), (0, self.kt[1]), (2 * self.pairs, self.kt[0])], 3)
        } else {
            ([(0, self.kt[0]); 3], 1)
        }
    }
}

/// The products a split input adds up: (offset into a P row, V pack).
impl PvArgs {
    pub(super) fn sections(&self) -> ([(usize, *const u32); 3], usize) {
        if self.split {
            ([(0, self.vv[0]), (0, self.vv[1]), (SK, self.vv[0])], 3)
        } else {
            ([(0, self.vv[0]); 3], 1)
        }
    }
}

/// The two products of one ISA, each cut into independent blocks.
///
/// # Safety
/// Every method may only run where the ISA's features are present (inside
/// its `#[target_feature]` task), between `begin` and `end` on one thread;
/// the arguments' pointers cover what their docs name; `b` is below the
/// block count.
pub(super) trait MatMul {
    /// `pv` applies `alpha` itself; else the caller rescales O first.
    const RESCALES_O: bool;
    /// Whether the task runs with hardware FMA (for the softmax's `exp`).
    const FMA: bool;
    unsafe fn begin(&mut self);
    unsafe fn end(&mut self);
    fn qk_blocks(a: &QkArgs) -> usize;
    unsafe fn qk_block(&mut self, a: &QkArgs, b: usize);
    fn pv_blocks(a: &PvArgs) -> usize;
    unsafe fn pv_block(&mut self, a: &PvArgs, b: usize);

    /// The whole `S = Q·K^T`.
    unsafe fn qk(&mut self, a: &QkArgs) {
        for b in 0..Self::qk_blocks(a) {
            // SAFETY: forwarded contract; b is below the count.
            unsafe { self.qk_block(a, b) };
        }
    }

    /// The whole `O = alpha·O + P·V`.
    unsafe fn pv(&mut self, a: &PvArgs) {
        for b in 0..Self::pv_blocks(a) {
            // SAFETY: forwarded contract; b is below the count.
            unsafe { self.pv_block(a, b) };
        }
    }
}
