//! The bf16 path's online softmax over one tile (S is query-major):
//! scale, soft-cap and mask the raw scores, update the running max,
//! exponentiate, round P to bf16 and add the rounded values to the running
//! sum (of the unrounded P for bf16 inputs, as PyTorch's CPU flash kernel
//! sums it; of the rounded halves for split inputs). Two implementations of
//! one contract (`RowSoftmax`): AVX-512
//! intrinsics for the real paths, plain Rust for the emulated ones; a test
//! checks that they agree. NaN, -inf and empty-row semantics are the f32
//! path's (`unit.rs`); rows whose result is not finite go to the exact
//! path afterwards (`task::finish_units`).
//!
//! P is computed against a per-row reference max that moves only when the
//! row's maximum passes it by more than `LAZY` (so O and the sum are
//! rarely rescaled), and once a row has a reference, P and the tile's
//! maximum come from one pass over S (`row_p_max`); a second pass runs only
//! for a row's first live tile or when the reference moves.

use super::super::exp::exp_any;
use super::super::unit::{LiveKeys, Unit};
use super::super::BQ;
use super::{p_pitch, SK, SP};

/// Lanes of the partial maxima and sums.
#[cfg(test)]
const W: usize = 16;

/// The softmax's constants for one call.
pub(crate) struct Scaling {
    /// Multiplies the raw dot products (the softmax scale, times log2(e)
    /// when the softmax runs in base 2). Positive (validated problems).
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Hardware FMA in the task (for the scalar `exp` of the rescale).
    pub fma: bool,
    /// P rows hold high and low bf16 halves (split inputs, see `tile`).
    pub split: bool,
}

/// How far (in the softmax's base-2 units) a row's maximum may pass the
/// reference max its P is computed against before the reference moves
/// (and O and the sum are rescaled): P stays below `2^LAZY` (exact in
/// f32, and bf16's rounding is relative, so no accuracy is lost), and
/// most steps after a row's first rescale nothing.
const LAZY: f32 = 8.0;

/// One tile's softmax: a row kernel (`row_max`, `row_p`, `row_p_max`)
/// plugged into the one generic tile loop (`tile`).
///
/// # Safety
/// Implementations may need CPU features: only call them inside a task
/// compiled with those features.
pub(crate) trait RowSoftmax {
    /// The maximum of `srow` (one row's raw scores; its length a multiple
    /// of 32, at most `SK`) over the live keys `begin..end`, times the
    /// positive `scale`; -inf when no key is live. NaN scores do not count.
    unsafe fn row_max(srow: &[f32], live: (i32, i32), scale: f32) -> f32;

    /// Writes one row's P into `prow` as bf16 bits: `exp(x · scale - m)`
    /// (base 2 when `LOG2`) on the live keys of `srow`, zero elsewhere, for
    /// all `srow.len()` keys; with `k.split` also the low halves
    /// `bf16(p - high)` at `prow[SK..]` (`prow` holds `p_pitch(k.split)`
    /// values). Returns the sum of the values before rounding to bf16, or
    /// with `k.split` the sum of the rounded halves written.
    unsafe fn row_p<const LOG2: bool>(
        srow: &[f32],
        prow: &mut [u16],
        live: (i32, i32),
        scale: f32,
        m: f32,
        k: &Scaling,
    ) -> f32;

    /// `row_p` and `row_max` of one row: (the sum, the maximum).
    #[inline(always)]
    unsafe fn row_p_max<const LOG2: bool>(
        srow: &[f32],
        prow: &mut [u16],
        live: (i32, i32),
        scale: f32,
        m: f32,
        k: &Scaling,
    ) -> (f32, f32) {
        // SAFETY: forwarded contract.
        unsafe { (Self::row_p::<LOG2>(srow, prow, live, scale, m, k), Self::row_max(srow, live, scale)) }
    }

    /// Turns rows `0..un.pos.rows` of `s` (`[BQ][SP]` raw scores, the
    /// first `n` keys of the step valid; soft-capped in place) into P in
    /// `p` (`[BQ][p_pitch(split)]` bf16 bits, the first `n` rounded up to
    /// 32 written, zero outside each row's live keys; with `split` the low
    /// halves `bf16(p - high)` from `SK` on). Updates the unit's
    /// running max (`un.m`, the true maximum) and sum (`un.l`, relative to
    /// `mref`), each row's reference max `mref` (see `LAZY`), and writes
    /// the factor O is rescaled by into `alpha` (1 where `mref` stayed).
    ///
    /// A row whose reference is set first runs P and its maximum in one
    /// pass against that reference (`row_p_max`), and only when the
    /// maximum passes it by more than `LAZY` a second time; a row's first
    /// tile takes the maximum first.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const LOG2: bool>(
        un: &mut Unit,
        mref: &mut [f32; BQ],
        s: &mut [f32],
        p: &mut [u16],
        n: usize,
        live: &LiveKeys,
        k: &Scaling,
        alpha: &mut [f32; BQ],
    ) {
        let pp = p_pitch(k.split);
        // Whole pairs of 16-key chunks: the keys the products read.
        let keys = n.next_multiple_of(32);
        assert!(s.len() >= BQ * SP && p.len() >= BQ * pp && keys <= SK);
        let rows = un.pos.rows;
        let mut scale = k.scale;
        if let Some(cap) = k.softcap {
            softcap_rows(s, rows, n, scale, cap);
            scale = 1.0;
        }
        let slack = if LOG2 { LAZY } else { LAZY * std::f32::consts::LN_2 };
        for r in 0..rows {
            let (srow, prow) = (&s[r * SP..r * SP + keys], &mut p[r * pp..(r + 1) * pp]);
            let lv = (live.begin[r], live.end[r]);
            let m_ref = mref[r];
            let tile_max = if m_ref > f32::NEG_INFINITY {
                // SAFETY: features forwarded (trait contract); the row's
                // length is a multiple of 32, at most SK (asserted); prow
                // holds pp values.
                let (sum, mx) = unsafe { Self::row_p_max::<LOG2>(srow, prow, lv, scale, m_ref, k) };
                // Neither is NaN: `row_max` skips NaN scores, and m_ref is
                // above -inf.
                if mx <= m_ref + slack {
                    if mx > un.m[r] {
                        un.m[r] = mx;
                    }
                    un.l[r] += sum;
                    alpha[r] = 1.0;
                    continue;
                }
                mx
            } else {
                // SAFETY: as above.
                unsafe { Self::row_max(srow, lv, scale) }
            };
            if tile_max > un.m[r] {
                un.m[r] = tile_max;
            }
            // -inf + slack is -inf: a row's first live tile sets it.
            let new_ref = if tile_max > m_ref + slack { tile_max } else { m_ref };
            // A row with no live key so far uses 0, so its -inf scores give
            // exact zeros.
            let m_use = if new_ref == f32::NEG_INFINITY { 0.0 } else { new_ref };
            alpha[r] = if new_ref == m_ref && m_ref != f32::NEG_INFINITY {
                1.0
            } else {
                exp_any::<LOG2>(m_ref - m_use, k.fma)
            };
            mref[r] = new_ref;
            // SAFETY: as above.
            let sum = unsafe { Self::row_p::<LOG2>(srow, prow, lv, scale, m_use, k) };
            un.l[r] = un.l[r] * alpha[r] + sum;
        }
    }
}

/// `f32` rounded to the nearest bf16 (ties to even), as bits; NaN stays a
/// (quiet) NaN. Branch-free so that loops over it vectorise.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x40;
    (if x.is_nan() { nan } else { rounded }) as u16
}

/// bf16 bits widened to f32.
#[inline(always)]
pub(super) fn widen(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// Soft-caps the first `n` scores of each of the first `rows` rows in
/// place (`cap · tanh(s · scale / cap)`, natural units); the caller then
/// uses a scale of 1.
fn softcap_rows(s: &mut [f32], rows: usize, n: usize, scale: f32, cap: f32) {
    for r in 0..rows {
        for x in s[r * SP..r * SP + n].iter_mut() {
            *x = cap * (*x * scale / cap).tanh();
        }
    }
}

/// The reference implementation, in plain Rust (the emulated paths).
#[cfg(test)]
pub(crate) struct PortableSoftmax;

#[cfg(test)]
impl RowSoftmax for PortableSoftmax {
    #[inline(always)]
    unsafe fn row_max(srow: &[f32], (begin, end): (i32, i32), scale: f32) -> f32 {
        let mut mx = [f32::NEG_INFINITY; W];
        for (j, &x) in srow.iter().enumerate() {
            let y = if live(j, begin, end) { x * scale } else { f32::NEG_INFINITY };
            mx[j % W] = if y > mx[j % W] { y } else { mx[j % W] };
        }
        mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
    }

    #[inline(always)]
    unsafe fn row_p<const LOG2: bool>(
        srow: &[f32],
        prow: &mut [u16],
        (begin, end): (i32, i32),
        scale: f32,
        m: f32,
        k: &Scaling,
    ) -> f32 {
        let mut sum = [0.0f32; W];
        for (j, &x) in srow.iter().enumerate() {
            let y = if live(j, begin, end) { x * scale } else { f32::NEG_INFINITY };
            let e = exp_any::<LOG2>(y - m, k.fma);
            let h = round_bf16(e);
            prow[j] = h;
            if k.split {
                let l = round_bf16(e - widen(h));
                prow[SK + j] = l;
                sum[j % W] += widen(h) + widen(l);
            } else {
                sum[j % W] += e;
            }
        }
        sum.iter().sum()
    }
}

/// Whether key `j` of a tile lies in the live interval `begin..end`.
#[cfg(test)]
#[inline(always)]
fn live(j: usize, begin: i32, end: i32) -> bool {
    let j = j as i32;
    (j >= begin) & (j < end)
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use x86::exp2_bf16_lanes;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx512Softmax;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512F/BW/DQ intrinsics; `CVT` rounds P with `vcvtne2ps2bf16`
    /// (AVX512-BF16), else with integer ops (the same bits: P is either 0
    /// or a normal number, where the two agree).
    pub(crate) struct Avx512Softmax<const CVT: bool>;

    /// Lanes `begin..end` of a row's 16-key chunk `c`, as a bit mask.
    #[inline(always)]
    fn chunk_mask(begin: i32, end: i32, c: usize) -> u16 {
        let base = 16 * c as i32;
        let bits = |x: i32| (1u32 << (x - base).clamp(0, 16)) - 1;
        (bits(end) & !bits(begin)) as u16
    }

    /// `2^x` for x <= 0 on the lanes of `keep` (others 0): `vscalefps`
    /// of a degree-5 Taylor polynomial on the rounded-off fraction
    /// (relative error < 3e-6, far below bf16's 2^-9); x < -126 and -inf
    /// give 0, NaN gives NaN.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn exp2(x: __m512, keep: __mmask16) -> __m512 {
        let lo = _mm512_set1_ps(-126.0);
        // max(lo, x) returns x when x is NaN (the second operand).
        let xc = _mm512_max_ps(lo, x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(xc);
        let f = _mm512_sub_ps(xc, n);
        let mut y = _mm512_set1_ps(1.333_355_8e-3);
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.618_129e-3));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.550_411e-2));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.402_265e-1));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.931_472e-1));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0));
        // Keep lanes that are not below lo (NaN compares unordered: kept),
        // zero the rest in the scaling itself.
        let k = _mm512_mask_cmp_ps_mask::<_CMP_NLT_UQ>(keep, x, lo);
        _mm512_maskz_scalef_ps(k, y, n)
    }

    /// `2^x` as `exp2` for P that is rounded to bf16 (half an ulp: 2^-9
    /// relative): a near-minimax polynomial of degree 3 (relative error
    /// about 7.5e-5, below 8e-5 in the tests), the fraction `x - round(x)`
    /// from `vreduceps` and no clamp, so 7 operations where `exp2` needs
    /// 11; lanes below -126 (-inf among them) are zeroed by the mask, NaN
    /// stays NaN.
    ///
    /// # Safety
    /// AVX-512F/DQ.
    #[inline(always)]
    unsafe fn exp2_bf16(x: __m512, keep: __mmask16) -> __m512 {
        let lo = _mm512_set1_ps(-126.0);
        // imm 0x08: keep no fraction bits, round to nearest, no precision
        // exception.
        let f = _mm512_reduce_ps::<0x08>(x);
        let n = _mm512_sub_ps(x, f);
        let mut y = _mm512_set1_ps(5.517_166_5e-2);
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.426_111_5e-1));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.932_609_7e-1));
        y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.999_280_6e-1));
        let k = _mm512_mask_cmp_ps_mask::<_CMP_NLT_UQ>(keep, x, lo);
        _mm512_maskz_scalef_ps(k, y, n)
    }

    /// `exp2_bf16` on 16 lanes (tests).
    ///
    /// # Safety
    /// AVX-512F/DQ.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) unsafe fn exp2_bf16_lanes(x: [f32; 16], keep: u16) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        // SAFETY: the features are enabled here; 16 floats in and out.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp2_bf16(_mm512_loadu_ps(x.as_ptr()), keep)) };
        out
    }

    /// 32 P values (`a` first) rounded to bf16, packed.
    ///
    /// # Safety
    /// AVX-512F/BW, and AVX512-BF16 when `CVT`.
    #[inline(always)]
    unsafe fn pack_pair<const CVT: bool>(a: __m512, b: __m512) -> __m512i {
        if CVT {
            // SAFETY: AVX512-BF16 present when CVT (caller); __m512bh and
            // __m512i are both 64 bytes.
            unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a)) }
        } else {
            let (ra, rb) = (_mm512_cvtepi32_epi16(round16(a)), _mm512_cvtepi32_epi16(round16(b)));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ra), rb)
        }
    }

    /// bf16 bits (16 of them) widened to f32.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn widen16(h: __m256i) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// 16 f32 rounded to bf16 with integer ops, in the low half of each
    /// 32-bit lane; NaN becomes a quiet NaN.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn round16(x: __m512) -> __m512i {
        let i = _mm512_castps_si512(x);
        let hi = _mm512_srli_epi32::<16>(i);
        let lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(i, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40))
    }

    /// 32 P values rounded to bf16, as 32 bf16 bits (`a` first) and as
    /// f32 (`a`'s, `b`'s), the rounded values added to `sum`.
    ///
    /// # Safety
    /// AVX-512F/BW, and AVX512-BF16 when `CVT`.
    #[inline(always)]
    unsafe fn round_pair<const CVT: bool>(a: __m512, b: __m512, sum: &mut __m512) -> (__m512i, __m512, __m512) {
        // SAFETY: forwarded contract.
        let packed = unsafe { pack_pair::<CVT>(a, b) };
        let ra = widen16(_mm512_castsi512_si256(packed));
        let rb = widen16(_mm512_extracti64x4_epi64::<1>(packed));
        *sum = _mm512_add_ps(*sum, _mm512_add_ps(ra, rb));
        (packed, ra, rb)
    }

    /// One row's P (see `RowSoftmax::row_p`) and, with `MAX`, the raw
    /// maximum of its live keys (NaN does not count), -inf when none is
    /// live. `FULL`: every key of the row is live (no lane masks). `SPLIT`:
    /// P to ~16 bits as high and low halves, the sum of the rounded halves;
    /// else P as bf16 through `exp2_bf16`, the sum of the unrounded P.
    ///
    /// # Safety
    /// AVX-512F/BW/DQ, and AVX512-BF16 when CVT; `32 · halves` readable
    /// floats at `sp`, as many writable values at `pw` (and from `pw + SK`
    /// with `SPLIT`).
    #[inline(always)]
    unsafe fn row_body<const CVT: bool, const FULL: bool, const MAX: bool, const SPLIT: bool>(
        sp: *const f32,
        pw: *mut u16,
        halves: usize,
        (lo, hi): (i32, i32),
        ce: __m512,
        me: __m512,
    ) -> (f32, f32) {
        // SAFETY: forwarded contract.
        unsafe {
            let mut sum = _mm512_setzero_ps();
            let (mut mx0, mut mx1) = (_mm512_set1_ps(f32::NEG_INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
            for half in 0..halves {
                let (c0, c1) = (2 * half, 2 * half + 1);
                let (xa, xb) = (_mm512_loadu_ps(sp.add(16 * c0)), _mm512_loadu_ps(sp.add(16 * c1)));
                let (ma, mb) = if FULL { (0xFFFF, 0xFFFF) } else { (chunk_mask(lo, hi, c0), chunk_mask(lo, hi, c1)) };
                if MAX {
                    // max(x, m) returns m when x is NaN.
                    if FULL {
                        (mx0, mx1) = (_mm512_max_ps(xa, mx0), _mm512_max_ps(xb, mx1));
                    } else {
                        mx0 = _mm512_mask_max_ps(mx0, ma, xa, mx0);
                        mx1 = _mm512_mask_max_ps(mx1, mb, xb, mx1);
                    }
                }
                let (ya, yb) = (_mm512_fmadd_ps(xa, ce, me), _mm512_fmadd_ps(xb, ce, me));
                if SPLIT {
                    let (a, b) = (exp2(ya, ma), exp2(yb, mb));
                    let (packed, ra, rb) = round_pair::<CVT>(a, b, &mut sum);
                    _mm512_storeu_si512(pw.add(32 * half).cast(), packed);
                    let (low, _, _) = round_pair::<CVT>(_mm512_sub_ps(a, ra), _mm512_sub_ps(b, rb), &mut sum);
                    _mm512_storeu_si512(pw.add(SK + 32 * half).cast(), low);
                } else {
                    let (a, b) = (exp2_bf16(ya, ma), exp2_bf16(yb, mb));
                    _mm512_storeu_si512(pw.add(32 * half).cast(), pack_pair::<CVT>(a, b));
                    sum = _mm512_add_ps(sum, _mm512_add_ps(a, b));
                }
            }
            let mx = if MAX { _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1)) } else { f32::NEG_INFINITY };
            (_mm512_reduce_add_ps(sum), mx)
        }
    }

    /// `row_body` for one row of `RowSoftmax`, returning the scaled max.
    ///
    /// # Safety
    /// As for `RowSoftmax::row_p` (AVX-512F/BW/DQ, AVX512-BF16 when CVT).
    #[inline(always)]
    unsafe fn row<const CVT: bool, const LOG2: bool, const MAX: bool>(
        srow: &[f32],
        prow: &mut [u16],
        (lo, hi): (i32, i32),
        scale: f32,
        m: f32,
        k: &Scaling,
    ) -> (f32, f32) {
        let halves = srow.len() / 32;
        // The stores below stay inside prow.
        assert!(prow.len() >= if k.split { SK + 32 * halves } else { 32 * halves });
        // Scores in exp2's units: x · scale · (log2 e unless LOG2).
        let e = if LOG2 { 1.0 } else { std::f32::consts::LOG2_E };
        let (sp, pw) = (srow.as_ptr(), prow.as_mut_ptr());
        let (ce, me) = (_mm512_set1_ps(scale * e), _mm512_set1_ps(-m * e));
        let full = lo <= 0 && hi >= srow.len() as i32;
        // SAFETY: forwarded contract; reads srow.len() floats, writes
        // 32 · halves values of prow (and as many from SK on with split),
        // asserted above.
        let (sum, raw) = unsafe {
            let lv = (lo, hi);
            match (full, k.split) {
                (true, false) => row_body::<CVT, true, MAX, false>(sp, pw, halves, lv, ce, me),
                (false, false) => row_body::<CVT, false, MAX, false>(sp, pw, halves, lv, ce, me),
                (true, true) => row_body::<CVT, true, MAX, true>(sp, pw, halves, lv, ce, me),
                (false, true) => row_body::<CVT, false, MAX, true>(sp, pw, halves, lv, ce, me),
            }
        };
        // The raw max times a positive scale is the scaled max.
        (sum, if raw == f32::NEG_INFINITY { raw } else { raw * scale })
    }

    impl<const CVT: bool> RowSoftmax for Avx512Softmax<CVT> {
        #[inline(always)]
        unsafe fn row_max(srow: &[f32], (lo, hi): (i32, i32), scale: f32) -> f32 {
            // SAFETY: AVX-512F/BW (trait contract); the loop reads at most
            // srow.len() floats.
            unsafe {
                let sp = srow.as_ptr();
                let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
                let full = lo <= 0 && hi >= srow.len() as i32;
                // Four chains: one max's latency per chunk would bound it.
                for c in 0..srow.len() / 16 {
                    let x = _mm512_loadu_ps(sp.add(16 * c));
                    mx[c % 4] = if full {
                        _mm512_max_ps(x, mx[c % 4])
                    } else {
                        _mm512_mask_max_ps(mx[c % 4], chunk_mask(lo, hi, c), x, mx[c % 4])
                    };
                }
                let raw = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(mx[0], mx[1]), _mm512_max_ps(mx[2], mx[3])));
                if raw == f32::NEG_INFINITY {
                    raw
                } else {
                    raw * scale
                }
            }
        }

        #[inline(always)]
        unsafe fn row_p<const LOG2: bool>(
            srow: &[f32],
            prow: &mut [u16],
            live: (i32, i32),
            scale: f32,
            m: f32,
            k: &Scaling,
        ) -> f32 {
            // SAFETY: forwarded contract.
            unsafe { row::<CVT, LOG2, false>(srow, prow, live, scale, m, k).0 }
        }

        #[inline(always)]
        unsafe fn row_p_max<const LOG2: bool>(
            srow: &[f32],
            prow: &mut [u16],
            live: (i32, i32),
            scale: f32,
            m: f32,
            k: &Scaling,
        ) -> (f32, f32) {
            // SAFETY: forwarded contract.
            unsafe { row::<CVT, LOG2, true>(srow, prow, live, scale, m, k) }
        }
    }
}
