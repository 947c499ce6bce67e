//! The bf16 path's buffers and packed layouts (see `mod.rs`): Q rows, K^T
//! pairs and V pairs, per head (kept while the worker stays on the head)
//! or per key tile when a head is too large.

use super::super::elem::Elem;
use super::super::schedule::{Call, Rows, Task};
use super::super::scratch::{prefetch_row, AlignedBuf, HeadRows, PREFETCH_ROWS};
use super::super::{BQ, SUB, VHEAD_MAX};
use super::softmax::{round_bf16, widen};
use super::{kt_offset, vv_offset, KB};
use super::{p_pitch, SK, SP};
use half::{bf16, f16};

/// Head-dim padding of Q and K^T: one AMX A operand row (32 bf16).
pub(super) const DQ_ALIGN: usize = 32;
/// Keys past the walk tile's start that a step may read: a step starts at
/// a block start inside the tile and reads whole blocks of 32 keys, so at
/// most `SK` (plus a block of margin).
const TILE_REACH: usize = SK + 32;

/// A worker's bf16 buffers, built on its first task of a call.
pub(crate) struct Bf16Scratch {
    /// Per unit: Q rows, `[BQ][dq]` bf16 bits (`[BQ][2 · dq]` for split
    /// inputs: the high halves, then the low halves).
    pub q: Vec<AlignedBuf<u16>>,
    /// Scores, `[BQ][SP]` f32.
    pub s: AlignedBuf<f32>,
    /// P, `[BQ][p_pitch(split)]` bf16 bits.
    pub p: AlignedBuf<u16>,
    /// K^T and V packs of the high halves, and of the low halves (split
    /// inputs only).
    pub kt: [Packed; 2],
    pub vv: [Packed; 2],
    /// Split inputs: one head's (or tile's) rows as high / low halves, and
    /// a widened row.
    conv: (Vec<u16>, Vec<u16>, Vec<f32>),
    pub dq: usize,
    pub split: bool,
}

impl Bf16Scratch {
    pub(super) fn new(d: usize, split: bool) -> Bf16Scratch {
        let dq = d.next_multiple_of(DQ_ALIGN);
        let w = if split { 2 } else { 1 };
        Bf16Scratch {
            q: (0..SUB).map(|_| AlignedBuf::new(BQ * dq * w)).collect(),
            s: AlignedBuf::new(BQ * SP),
            p: AlignedBuf::new(BQ * p_pitch(split)),
            kt: Default::default(),
            vv: Default::default(),
            conv: (Vec::new(), Vec::new(), vec![0.0; d]),
            dq,
            split,
        }
    }

    /// Q rows `[BQ][q_pitch]`: elements apart.
    pub(super) fn q_pitch(&self) -> usize {
        if self.split {
            2 * self.dq
        } else {
            self.dq
        }
    }
}

/// An input type the dot-product paths read: bf16 as it is, or f16 split
/// exactly into bf16 high and low halves (`x = hi + lo`: an f16 has 11
/// significant bits, `hi` keeps 8, the remainder fits `lo`, and bf16's
/// range holds f16's), so that `q·k = qh·kh + qh·kl + ql·kh + ql·kl` and
/// the dropped `ql·kl` is below 2^-16 of `|q||k|`.
pub(crate) trait Src: Elem {
    const SPLIT: bool;
    /// The slice's bits when it already is bf16.
    fn as_bits(src: &[Self]) -> Option<&[u16]>;
    /// A row's high halves into `hi` and (split types) low halves into
    /// `lo`; `tmp` is f32 scratch of the row's length.
    fn halves(src: &[Self], hi: &mut [u16], lo: &mut [u16], tmp: &mut [f32]);
}

impl Src for bf16 {
    const SPLIT: bool = false;
    fn as_bits(src: &[bf16]) -> Option<&[u16]> {
        Some(bytemuck::cast_slice(src))
    }
    #[inline(always)]
    fn halves(src: &[bf16], hi: &mut [u16], _: &mut [u16], _: &mut [f32]) {
        hi.copy_from_slice(bytemuck::cast_slice(src));
    }
}

impl Src for f16 {
    const SPLIT: bool = true;
    fn as_bits(_: &[f16]) -> Option<&[u16]> {
        None
    }
    #[inline(always)]
    fn halves(src: &[f16], hi: &mut [u16], lo: &mut [u16], tmp: &mut [f32]) {
        Self::widen(src, tmp);
        for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(tmp.iter()) {
            *h = round_bf16(x);
            *l = round_bf16(x - widen(*h));
        }
    }
}

/// A packed K^T or V buffer and the (batch, kv head) it holds, if a whole
/// head; `None` for per-tile packs.
#[derive(Default)]
pub(crate) struct Packed {
    buf: Option<AlignedBuf<u32>>,
    of: Option<(usize, usize)>,
}

impl Packed {
    /// The buffer (`len` u32, the same for every use in a call), zeroed on
    /// first use.
    fn buf(&mut self, len: usize) -> &mut AlignedBuf<u32> {
        self.buf.get_or_insert_with(|| AlignedBuf::new(len))
    }
}

/// Copies Q rows `i0..i0 + rows` of head `h` into `dst` (`[BQ][pitch]`:
/// the high halves, then at `dq` the low halves of split inputs), zeroing
/// the rows up to the next multiple of 16. Columns past `d` stay zero:
/// nothing else writes them.
pub(super) fn load_q<S: Src>(
    c: &Call<S>,
    s: &mut Bf16Scratch,
    ui: usize,
    (b, h, i0, rows): (usize, usize, usize, usize),
) {
    let (d, dq, pitch) = (c.d, s.dq, s.q_pitch());
    let (dst, tmp) = (&mut s.q[ui], &mut s.conv.2);
    for r in 0..rows {
        if r + PREFETCH_ROWS < rows {
            let pf = c.q_rows.at(b, i0 + r + PREFETCH_ROWS, h);
            prefetch_row(&c.q[pf..pf + d]);
        }
        let off = c.q_rows.at(b, i0 + r, h);
        let (hi, lo) = dst[r * pitch..(r + 1) * pitch].split_at_mut(dq);
        let lo_len = d.min(lo.len());
        S::halves(&c.q[off..off + d], &mut hi[..d], &mut lo[..lo_len], tmp);
    }
    dst[rows * pitch..rows.next_multiple_of(16) * pitch].fill(0);
}

/// Packs keys `rows` (K rows) into K^T pairs: `dst[kt_offset(p, j,
/// layout_pairs)]` holds `(K[j][2p], K[j][2p + 1])` for the j-th of the
/// rows (an odd head_dim pairs its last element with 0). Blocks of 16 keys
/// × 16 pairs go through an AVX-512 transpose where the CPU has it.
fn pack_kt(src: &[u16], rows: HeadRows, dst: &mut [u32], layout_pairs: usize) {
    let (keys, pairs) = (rows.count / 16 * 16, rows.d / 2 / 16 * 16);
    let (mut keys_done, mut pairs_done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && keys > 0 && pairs > 0 {
        let last = rows.base + (keys - 1) * rows.stride + 2 * pairs;
        let last_out = kt_offset(pairs - 1, keys - 1, layout_pairs) + 1;
        assert!(last <= src.len() && last_out <= dst.len() && pairs <= layout_pairs);
        // SAFETY: AVX-512F detected; the blocks read rows < keys, elements
        // < 2 · pairs of each, and write pairs < pairs of keys < keys, whose
        // largest offset is in bounds (checked just above).
        unsafe { x86::pack_kt_blocks(src, rows, dst, layout_pairs, (keys, pairs)) };
        (keys_done, pairs_done) = (keys, pairs);
    }
    let HeadRows { base, stride, count, d } = rows;
    for j in 0..count {
        let off = base + j * stride;
        if j + PREFETCH_ROWS < count {
            let pf = off + PREFETCH_ROWS * stride;
            prefetch_row(&src[pf..pf + d]);
        }
        // Keys the blocks did: only the pairs past them.
        let p_from = if j < keys_done { pairs_done } else { 0 };
        let row = &src[off..off + d];
        for (p, pair) in row.chunks(2).enumerate().skip(p_from) {
            let hi = pair.get(1).copied().unwrap_or(0) as u32;
            dst[kt_offset(p, j, layout_pairs)] = pair[0] as u32 | hi << 16;
        }
    }
}

/// Packs V rows `rows` (an even first key) into pairs: `dst[vv_offset(jp,
/// c, group)]` holds `(V[2jp][c], V[2jp + 1][c])` of the rows (an odd count
/// pairs the last row with zeros).
fn pack_vv(src: &[u16], rows: HeadRows, dst: &mut [u32], group: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: the features were just detected.
        return unsafe { x86::pack_vv_avx512(src, rows, dst, group) };
    }
    pack_vv_rows(src, rows, dst, group);
}

#[inline(always)]
fn pack_vv_rows(src: &[u16], rows: HeadRows, dst: &mut [u32], group: usize) {
    let HeadRows { base, stride, count, d } = rows;
    for jp in 0..count.div_ceil(2) {
        let off = base + 2 * jp * stride;
        if 2 * jp + PREFETCH_ROWS < count {
            let pf = off + PREFETCH_ROWS * stride;
            prefetch_row(&src[pf..pf + d]);
        }
        let a = &src[off..off + d];
        let b = if 2 * jp + 1 < count { &src[off + stride..off + stride + d] } else { &[][..] };
        for (g, a16) in a.chunks(16).enumerate() {
            let out = &mut dst[vv_offset(jp, 16 * g, group)..][..a16.len()];
            match b.get(16 * g..16 * g + a16.len()) {
                Some(b16) => {
                    for ((o, &x), &y) in out.iter_mut().zip(a16).zip(b16) {
                        *o = x as u32 | (y as u32) << 16;
                    }
                }
                None => {
                    for (o, &x) in out.iter_mut().zip(a16) {
                        *o = x as u32;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// `pack_vv_rows` vectorised for AVX-512.
    ///
    /// # Safety
    /// AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pack_vv_avx512(src: &[u16], rows: HeadRows, dst: &mut [u32], group: usize) {
        pack_vv_rows(src, rows, dst, group);
    }

    /// Keys `0..keys` × pairs `0..pairs` (multiples of 16) of `pack_kt`, as
    /// 16 × 16 transposes of u32 pairs.
    ///
    /// # Safety
    /// AVX-512F; the blocks are inside `src` and `dst` (see `pack_kt`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_kt_blocks(
        src: &[u16],
        rows: HeadRows,
        dst: &mut [u32],
        layout_pairs: usize,
        (keys, pairs): (usize, usize),
    ) {
        let (s, o) = (src.as_ptr(), dst.as_mut_ptr());
        for j0 in (0..keys).step_by(16) {
            for p0 in (0..pairs).step_by(16) {
                // SAFETY: rows j0..j0+16 < keys and elements 2·p0..2·p0+32
                // <= 2·pairs are inside src; pairs p0..p0+16 of keys
                // j0..j0+16 (16 contiguous u32 each) inside dst (caller).
                unsafe {
                    let mut r = [_mm512_setzero_si512(); 16];
                    for (i, x) in r.iter_mut().enumerate() {
                        *x = _mm512_loadu_si512(s.add(rows.base + (j0 + i) * rows.stride + 2 * p0).cast());
                    }
                    let cols = transpose16(r);
                    for (c, v) in cols.iter().enumerate() {
                        _mm512_storeu_si512(o.add(kt_offset(p0 + c, j0, layout_pairs)).cast(), *v);
                    }
                }
            }
        }
    }

    /// The transpose of a 16 × 16 matrix of u32 held as 16 rows (loops, not
    /// closures: a closure would not inherit the target features).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        let mut t = r;
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
        }
        // u[4g + c]: 128-bit lane L holds rows 4g..4g+4 of column 4L + c.
        let mut u = t;
        for g in 0..4 {
            for c in 0..4 {
                let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
                u[4 * g + c] = if c % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) };
            }
        }
        // v[8h + c]: columns c and 8 + c of rows 8h..8h+8; v[8h + 4 + c]:
        // columns 4 + c and 12 + c.
        let mut v = u;
        for h in 0..2 {
            for c in 0..4 {
                let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
                v[8 * h + c] = _mm512_shuffle_i32x4::<0x88>(a, b);
                v[8 * h + 4 + c] = _mm512_shuffle_i32x4::<0xDD>(a, b);
            }
        }
        let mut out = v;
        for a in 0..8 {
            out[a] = _mm512_shuffle_i32x4::<0x88>(v[a], v[8 + a]);
            out[a + 8] = _mm512_shuffle_i32x4::<0xDD>(v[a], v[8 + a]);
        }
        out
    }
}

#[cfg(test)]
pub(crate) fn pack_kt_for_test(src: &[u16], rows: HeadRows, dst: &mut [u32], layout_pairs: usize) {
    pack_kt(src, rows, dst, layout_pairs);
}

/// Where a tile's K^T and V pairs are: column / pair row 0 is key
/// `origin`.
pub(super) struct PackedKv {
    kt: [*const u32; 2],
    /// u32 per block of `KB` keys (all pairs).
    kt_block: usize,
    vv: [*const u32; 2],
    /// u32 from one group of 16 dims to the next (`vv_offset`).
    pub vv_group: usize,
    origin: usize,
}

impl PackedKv {
    /// K^T pairs from key `j` (a block start) on.
    pub(super) fn kt_at(&self, j: usize) -> [*const u32; 2] {
        debug_assert!((j - self.origin).is_multiple_of(KB));
        self.kt.map(|kt| kt.wrapping_add((j - self.origin) / KB * self.kt_block))
    }

    /// V pairs from key `j` (even) on.
    pub(super) fn vv_at(&self, j: usize) -> [*const u32; 2] {
        debug_assert!((j - self.origin).is_multiple_of(2));
        self.vv.map(|vv| vv.wrapping_add(vv_offset((j - self.origin) / 2, 0, self.vv_group)))
    }
}

/// How a task gets its packed K^T and V: whole-head copies when both fit
/// `VHEAD_MAX` u32 (1 MiB each), else a pack per key tile.
pub(super) struct KvPlan {
    k_rows: HeadRows,
    v_rows: HeadRows,
    heads: bool,
    /// Pairs per key of the K^T layout (`dq / 2`).
    kt_pairs: usize,
    kt_len: usize,
    /// V pack: u32 per group of 16 dims (`vv_offset`), and in all.
    vv_group: usize,
    vv_len: usize,
}

impl KvPlan {
    pub(super) fn new<S: Src>(c: &Call<S>, task: &Task, dq: usize) -> KvPlan {
        let rows = |r: Rows| HeadRows { base: r.at(task.b, 0, task.kvh), stride: r.seq, count: c.skv, d: c.d };
        let kt_pairs = dq / 2;
        let head_kt = (c.skv + TILE_REACH).div_ceil(KB) * kt_pairs * KB;
        // Pair rows a group holds, plus one row of padding between groups
        // (NT = 2 blocks read two groups at once: not a multiple of 4 KiB
        // apart).
        let group = |pair_rows: usize| (pair_rows + 1) * 16;
        let head_vv = group((c.skv + TILE_REACH).div_ceil(2)) * (c.dp / 16);
        let heads = head_kt <= VHEAD_MAX && head_vv <= VHEAD_MAX;
        let vv_group = group(if heads { (c.skv + TILE_REACH).div_ceil(2) } else { TILE_REACH / 2 });
        KvPlan {
            k_rows: rows(c.k_rows),
            v_rows: rows(c.v_rows),
            heads,
            kt_pairs,
            kt_len: if heads { head_kt } else { TILE_REACH / KB * kt_pairs * KB },
            vv_group,
            vv_len: vv_group * (c.dp / 16),
        }
    }

    /// The packed K^T and V for the walk's tile `t0..t1` (`t0` even):
    /// the head copies (packed on first use of the head by this worker),
    /// or this tile's keys packed, the rest of its reach zero.
    pub(super) fn tile<S: Src>(
        &self,
        c: &Call<S>,
        s: &mut Bf16Scratch,
        id: (usize, usize),
        t0: usize,
        t1: usize,
    ) -> PackedKv {
        let origin = if self.heads {
            if s.kt[0].of != Some(id) {
                self.pack(c, s, (self.k_rows, self.v_rows), false);
                s.kt[0].of = Some(id);
            }
            0
        } else {
            let n = t1 - t0;
            self.pack(c, s, (self.k_rows.slice(t0, n), self.v_rows.slice(t0, n)), true);
            s.kt[0].of = None;
            t0
        };
        let halves = if s.split { 2 } else { 1 };
        let mut kt = [std::ptr::null(); 2];
        let mut vv = [std::ptr::null(); 2];
        for i in 0..halves {
            kt[i] = s.kt[i].buf(self.kt_len).as_ptr();
            vv[i] = s.vv[i].buf(self.vv_len).as_ptr();
        }
        if halves == 1 {
            (kt[1], vv[1]) = (kt[0], vv[0]);
        }
        PackedKv { kt, kt_block: self.kt_pairs * KB, vv, vv_group: self.vv_group, origin }
    }

    /// Packs K rows `k` and V rows `v` (a head, or a tile with `clear`:
    /// the packs' keys past the rows read as zeros).
    fn pack<S: Src>(&self, c: &Call<S>, s: &mut Bf16Scratch, (k, v): (HeadRows, HeadRows), clear: bool) {
        let halves = if s.split { 2 } else { 1 };
        for (i, (src, rows)) in [(c.k, k), (c.v, v)].into_iter().enumerate() {
            // bf16 rows are packed in place; split rows go through `conv`.
            let (hi, lo, rows) = match S::as_bits(src) {
                Some(b) => (b, &[][..], rows),
                None => {
                    let (hi, lo, tmp) = &mut s.conv;
                    let n = rows.count * rows.d;
                    hi.resize(n, 0);
                    lo.resize(n, 0);
                    for j in 0..rows.count {
                        let off = rows.base + j * rows.stride;
                        let (h, l) = (&mut hi[j * rows.d..(j + 1) * rows.d], &mut lo[j * rows.d..(j + 1) * rows.d]);
                        S::halves(&src[off..off + rows.d], h, l, tmp);
                    }
                    (&hi[..], &lo[..], HeadRows { base: 0, stride: rows.d, ..rows })
                }
            };
            for (half, bits) in [hi, lo].into_iter().enumerate().take(halves) {
                if i == 0 {
                    let kt = s.kt[half].buf(self.kt_len);
                    if clear {
                        kt.fill(0);
                    }
                    pack_kt(bits, rows, kt, self.kt_pairs);
                } else {
                    let vv = s.vv[half].buf(self.vv_len);
                    pack_vv(bits, rows, vv, self.vv_group);
                    if clear {
                        // Every group's pair rows past the tile's.
                        for g in vv.chunks_mut(self.vv_group) {
                            g[vv_offset(rows.count.div_ceil(2), 0, self.vv_group)..].fill(0);
                        }
                    }
                }
            }
        }
    }
}
