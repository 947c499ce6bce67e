//! The bf16 path's online softmax over one tile (S is query-major):
//! scale, soft-cap and mask the raw scores, update the running max,
//! exponentiate, round P to bf16 and add the rounded values to the running
//! sum. Two implementations of one contract (`RowSoftmax`): AVX-512
//! intrinsics for the real paths, plain Rust for the emulated ones; a test
//! checks that they agree. NaN, -inf and empty-row semantics are the f32
//! path's (`unit.rs`); rows whose result is not finite go to the exact
//! path afterwards (`task::finish_units`).
//!
//! Three passes, so that the per-row scalar work (the rescale factor's
//! `exp`) is done 16 rows at a time: each row's tile maximum; then, over
//! rows, the new running max and `alpha`; then each row's `exp`, P and sum.

use super::super::exp::exp_any;
use super::super::unit::{LiveKeys, Unit};
use super::super::BQ;
use super::SK;

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

/// One tile's softmax.
///
/// # Safety
/// Implementations may need CPU features: only call them inside a task
/// compiled with those features.
pub(crate) trait RowSoftmax {
    /// Turns rows `0..un.pos.rows` of `s` (`[BQ][SK]` raw scores, the
    /// first `n` keys of the step valid; overwritten) into P in `p`
    /// (`[BQ][SK]` bf16 bits, the first `n` rounded up to 32 written, zero
    /// outside each row's live keys; with `split`, rows of `2 · SK`: the
    /// high halves, then `SK` on the low halves `bf16(p - high)`), updates
    /// the unit's running max and sum, and writes each row's rescale
    /// factor for O into `alpha`.
    unsafe fn tile<const LOG2: bool>(
        un: &mut Unit,
        s: &mut [f32],
        p: &mut [u16],
        n: usize,
        live: &LiveKeys,
        k: &Scaling,
        alpha: &mut [f32; BQ],
    );
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
        for x in s[r * SK..r * SK + n].iter_mut() {
            *x = cap * (*x * scale / cap).tanh();
        }
    }
}

/// The running max update for rows `0..rows` given their tile maxima (in
/// the softmax's units): returns each row's `m_use` (the new max, or 0 for
/// a row with no live key so far, so its -inf scores give exact zeros),
/// writes `alpha`.
#[inline(always)]
fn update_max<const LOG2: bool>(un: &mut Unit, tile_max: &[f32; BQ], alpha: &mut [f32; BQ], fma: bool) -> [f32; BQ] {
    let mut m_use = [0.0f32; BQ];
    for r in 0..BQ {
        let m_old = un.m[r];
        let m_new = if tile_max[r] > m_old { tile_max[r] } else { m_old };
        m_use[r] = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
        alpha[r] = exp_any::<LOG2>(m_old - m_use[r], fma);
        un.m[r] = m_new;
    }
    m_use
}

/// The reference implementation, in plain Rust (the emulated paths).
#[cfg(test)]
pub(crate) struct PortableSoftmax;

#[cfg(test)]
impl RowSoftmax for PortableSoftmax {
    #[inline(always)]
    unsafe fn tile<const LOG2: bool>(
        un: &mut Unit,
        s: &mut [f32],
        p: &mut [u16],
        n: usize,
        live: &LiveKeys,
        k: &Scaling,
        alpha: &mut [f32; BQ],
    ) {
        let (split, pp) = (k.split, if k.split { 2 * SK } else { SK });
        assert!(s.len() >= BQ * SK && p.len() >= BQ * pp && n <= SK);
        let rows = un.pos.rows;
        let mut scale = k.scale;
        if let Some(cap) = k.softcap {
            softcap_rows(s, rows, n, scale, cap);
            scale = 1.0;
        }
        let keys = n.next_multiple_of(32);
        let mut tile_max = [f32::NEG_INFINITY; BQ];
        for (r, tm) in tile_max.iter_mut().enumerate().take(rows) {
            let srow = &mut s[r * SK..r * SK + keys];
            *tm = scale_mask_max(srow, (live.begin[r], live.end[r]), scale);
        }
        let m_use = update_max::<LOG2>(un, &tile_max, alpha, k.fma);
        for r in 0..rows {
            let srow = &s[r * SK..r * SK + keys];
            let mut sum = [0.0f32; W];
            for (j, &x) in srow.iter().enumerate() {
                let e = exp_any::<LOG2>(x - m_use[r], k.fma);
                let h = round_bf16(e);
                p[r * pp + j] = h;
                sum[j % W] += widen(h);
                if split {
                    let l = round_bf16(e - widen(h));
                    p[r * pp + SK + j] = l;
                    sum[j % W] += widen(l);
                }
            }
            un.l[r] = un.l[r] * alpha[r] + sum.iter().sum::<f32>();
        }
    }
}

/// Scales a row, sets every score outside `begin..end` to -inf, and
/// returns the row's maximum (NaN scores are kept but do not count).
#[cfg(test)]
#[inline(always)]
fn scale_mask_max(srow: &mut [f32], (begin, end): (i32, i32), scale: f32) -> f32 {
    let mut mx = [f32::NEG_INFINITY; W];
    for (ci, chunk) in srow.chunks_exact_mut(W).enumerate() {
        let base = (ci * W) as i32;
        for (i, x) in chunk.iter_mut().enumerate() {
            let j = base + i as i32;
            let y = *x * scale;
            let y = if (j >= begin) & (j < end) { y } else { f32::NEG_INFINITY };
            *x = y;
            mx[i] = if y > mx[i] { y } else { mx[i] };
        }
    }
    mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx512Softmax;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512F/BW intrinsics; `CVT` rounds P with `vcvtne2ps2bf16`
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

    /// `2^x` for x <= 0: `vscalefps` of a degree-5 Taylor polynomial on
    /// the rounded-off fraction (relative error < 3e-6, far below bf16's
    /// 2^-9); x < -126 and -inf give 0, NaN gives NaN.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn exp2(x: __m512) -> __m512 {
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
        let r = _mm512_scalef_ps(y, n);
        // Keep lanes that are not below lo (NaN compares unordered: kept).
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, lo), r)
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
        let packed: __m512i = if CVT {
            // SAFETY: AVX512-BF16 present when CVT (caller); __m512bh and
            // __m512i are both 64 bytes.
            unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a)) }
        } else {
            let (ra, rb) = (_mm512_cvtepi32_epi16(round16(a)), _mm512_cvtepi32_epi16(round16(b)));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ra), rb)
        };
        let ra = widen16(_mm512_castsi512_si256(packed));
        let rb = widen16(_mm512_extracti64x4_epi64::<1>(packed));
        *sum = _mm512_add_ps(*sum, _mm512_add_ps(ra, rb));
        (packed, ra, rb)
    }

    /// P for 16 keys: `2^(x · ce + me)` where `mask` is set, else 0.
    ///
    /// # Safety
    /// AVX-512F; 16 readable floats at `sp`.
    #[inline(always)]
    unsafe fn p16(sp: *const f32, mask: u16, ce: __m512, me: __m512) -> __m512 {
        // SAFETY: forwarded contract.
        let t = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(sp) }, ce, me);
        _mm512_maskz_mov_ps(mask, exp2(t))
    }

    impl<const CVT: bool> RowSoftmax for Avx512Softmax<CVT> {
        #[inline(always)]
        unsafe fn tile<const LOG2: bool>(
            un: &mut Unit,
            s: &mut [f32],
            p: &mut [u16],
            n: usize,
            live: &LiveKeys,
            k: &Scaling,
            alpha: &mut [f32; BQ],
        ) {
            let (split, pp) = (k.split, if k.split { 2 * SK } else { SK });
            assert!(s.len() >= BQ * SK && p.len() >= BQ * pp && n <= SK);
            // Whole pairs of 16-key chunks: the keys the products read.
            let halves = n.div_ceil(32);
            let rows = un.pos.rows;
            let mut scale = k.scale;
            if let Some(cap) = k.softcap {
                softcap_rows(s, rows, n, scale, cap);
                scale = 1.0;
            }
            // Scores in exp2's units: x · scale · (log2 e unless LOG2).
            let e = if LOG2 { 1.0 } else { std::f32::consts::LOG2_E };
            let mut tile_max = [f32::NEG_INFINITY; BQ];
            for (r, tm) in tile_max.iter_mut().enumerate().take(rows) {
                let (lo, hi) = (live.begin[r], live.end[r]);
                // SAFETY: AVX-512F/BW (trait contract); row r of s is SK
                // floats and 32 · halves <= SK (asserted above).
                unsafe {
                    let sp = s.as_ptr().add(r * SK);
                    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                    for c in 0..2 * halves {
                        mx = _mm512_mask_max_ps(mx, chunk_mask(lo, hi, c), _mm512_loadu_ps(sp.add(16 * c)), mx);
                    }
                    // The raw max times a positive scale is the scaled max.
                    let raw = _mm512_reduce_max_ps(mx);
                    *tm = if raw == f32::NEG_INFINITY { raw } else { raw * scale };
                }
            }
            let m_use = update_max::<LOG2>(un, &tile_max, alpha, k.fma);
            for r in 0..rows {
                // SAFETY: as above; row r of p is SK bf16 (asserted).
                unsafe {
                    let (sp, prow) = (s.as_ptr().add(r * SK), p.as_mut_ptr().add(r * pp));
                    let (ce, me) = (_mm512_set1_ps(scale * e), _mm512_set1_ps(-m_use[r] * e));
                    let (lo, hi) = (live.begin[r], live.end[r]);
                    let mut sum = _mm512_setzero_ps();
                    for half in 0..halves {
                        let (c0, c1) = (2 * half, 2 * half + 1);
                        let a = p16(sp.add(16 * c0), chunk_mask(lo, hi, c0), ce, me);
                        let b = p16(sp.add(16 * c1), chunk_mask(lo, hi, c1), ce, me);
                        let (packed, ra, rb) = round_pair::<CVT>(a, b, &mut sum);
                        _mm512_storeu_si512(prow.add(32 * half).cast(), packed);
                        if split {
                            let (low, _, _) = round_pair::<CVT>(_mm512_sub_ps(a, ra), _mm512_sub_ps(b, rb), &mut sum);
                            _mm512_storeu_si512(prow.add(SK + 32 * half).cast(), low);
                        }
                    }
                    un.l[r] = un.l[r] * alpha[r] + _mm512_reduce_add_ps(sum);
                }
            }
        }
    }
}
