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

/// One tile's softmax: a row kernel (`row_max`, `row_p`) plugged into the
/// one generic tile loop (`tile`).
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
    /// `bf16(p - high)` at `prow[SK..]` (`prow` holds `SK`, or `2 · SK`
    /// with `split`, values). Returns the sum of the rounded values written.
    unsafe fn row_p<const LOG2: bool>(
        srow: &[f32],
        prow: &mut [u16],
        live: (i32, i32),
        scale: f32,
        m: f32,
        k: &Scaling,
    ) -> f32;

    /// Turns rows `0..un.pos.rows` of `s` (`[BQ][SK]` raw scores, the
    /// first `n` keys of the step valid; soft-capped in place) into P in
    /// `p` (`[BQ][SK]` bf16 bits, the first `n` rounded up to 32 written,
    /// zero outside each row's live keys; with `split`, rows of `2 · SK`:
    /// the high halves, then `SK` on the low halves `bf16(p - high)`),
    /// updates the unit's running max and sum, and writes each row's
    /// rescale factor for O into `alpha`.
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
        let pp = if k.split { 2 * SK } else { SK };
        // Whole pairs of 16-key chunks: the keys the products read.
        let keys = n.next_multiple_of(32);
        assert!(s.len() >= BQ * SK && p.len() >= BQ * pp && keys <= SK);
        let rows = un.pos.rows;
        let mut scale = k.scale;
        if let Some(cap) = k.softcap {
            softcap_rows(s, rows, n, scale, cap);
            scale = 1.0;
        }
        let mut tile_max = [f32::NEG_INFINITY; BQ];
        for (r, tm) in tile_max.iter_mut().enumerate().take(rows) {
            // SAFETY: features forwarded (trait contract); the row's
            // length is a multiple of 32, at most SK (asserted).
            *tm = unsafe { Self::row_max(&s[r * SK..r * SK + keys], (live.begin[r], live.end[r]), scale) };
        }
        let m_use = update_max::<LOG2>(un, &tile_max, alpha, k.fma);
        for r in 0..rows {
            let (srow, prow) = (&s[r * SK..r * SK + keys], &mut p[r * pp..(r + 1) * pp]);
            // SAFETY: as above; prow holds pp values.
            let sum = unsafe { Self::row_p::<LOG2>(srow, prow, (live.begin[r], live.end[r]), scale, m_use[r], k) };
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
            sum[j % W] += widen(h);
            if k.split {
                let l = round_bf16(e - widen(h));
                prow[SK + j] = l;
                sum[j % W] += widen(l);
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
        unsafe fn row_max(srow: &[f32], (lo, hi): (i32, i32), scale: f32) -> f32 {
            // SAFETY: AVX-512F/BW (trait contract); the loop reads at most
            // srow.len() floats.
            unsafe {
                let sp = srow.as_ptr();
                let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in 0..srow.len() / 16 {
                    mx = _mm512_mask_max_ps(mx, chunk_mask(lo, hi, c), _mm512_loadu_ps(sp.add(16 * c)), mx);
                }
                // The raw max times a positive scale is the scaled max.
                let raw = _mm512_reduce_max_ps(mx);
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
            (lo, hi): (i32, i32),
            scale: f32,
            m: f32,
            k: &Scaling,
        ) -> f32 {
            let halves = srow.len() / 32;
            // The stores below stay inside prow.
            assert!(prow.len() >= if k.split { SK + 32 * halves } else { 32 * halves });
            // Scores in exp2's units: x · scale · (log2 e unless LOG2).
            let e = if LOG2 { 1.0 } else { std::f32::consts::LOG2_E };
            // SAFETY: AVX-512F/BW, and AVX512-BF16 when CVT (trait
            // contract); reads at most srow.len() floats, writes the
            // 32 · halves values of prow (and as many from SK on with
            // split) asserted above.
            unsafe {
                let (sp, pw) = (srow.as_ptr(), prow.as_mut_ptr());
                let (ce, me) = (_mm512_set1_ps(scale * e), _mm512_set1_ps(-m * e));
                let mut sum = _mm512_setzero_ps();
                for half in 0..halves {
                    let (c0, c1) = (2 * half, 2 * half + 1);
                    let a = p16(sp.add(16 * c0), chunk_mask(lo, hi, c0), ce, me);
                    let b = p16(sp.add(16 * c1), chunk_mask(lo, hi, c1), ce, me);
                    let (packed, ra, rb) = round_pair::<CVT>(a, b, &mut sum);
                    _mm512_storeu_si512(pw.add(32 * half).cast(), packed);
                    if k.split {
                        let (low, _, _) = round_pair::<CVT>(_mm512_sub_ps(a, ra), _mm512_sub_ps(b, rb), &mut sum);
                        _mm512_storeu_si512(pw.add(SK + 32 * half).cast(), low);
                    }
                }
                _mm512_reduce_add_ps(sum)
            }
        }
    }
}
