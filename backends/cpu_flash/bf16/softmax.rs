//! The bf16 path's online softmax over one tile, row by row (S is
//! query-major): scale, soft-cap and mask the raw scores, update the
//! running max, exponentiate, round P to bf16 and add the rounded values
//! to the running sum. Written as plain Rust over 16-wide chunks so that
//! LLVM vectorises it inside the ISA's `#[target_feature]` task; the
//! semantics (NaN, -inf, empty rows) are the f32 path's (`unit.rs`).

use super::super::exp::exp_any;
use super::super::unit::{LiveKeys, Unit};
use super::super::{BK, BQ};

/// Lanes of the partial maxima and sums.
const W: usize = 16;

/// The softmax's constants for one call.
pub(super) struct Scaling {
    /// Multiplies the raw dot products (the softmax scale, times log2(e)
    /// when the softmax runs in base 2).
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Hardware FMA in the task (for `exp`).
    pub fma: bool,
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
fn widen(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// Turns rows `0..un.pos.rows` of `s` (`[BQ][BK]` raw scores, the first
/// `n` keys of the tile valid) into P in `p` (`[BQ][BK]` bf16 bits, zero
/// outside each row's live keys), updates the unit's running max and sum,
/// and writes each row's rescale factor for O into `alpha`.
#[inline(always)]
pub(super) fn softmax_tile<const LOG2: bool>(
    un: &mut Unit,
    s: &mut [f32],
    p: &mut [u16],
    n: usize,
    live: &LiveKeys,
    k: &Scaling,
    alpha: &mut [f32; BQ],
) {
    assert!(s.len() >= BQ * BK && p.len() >= BQ * BK && n <= BK);
    for r in 0..un.pos.rows {
        let srow: &mut [f32; BK] = (&mut s[r * BK..(r + 1) * BK]).try_into().expect("BK row");
        let prow: &mut [u16; BK] = (&mut p[r * BK..(r + 1) * BK]).try_into().expect("BK row");
        let tile_max = scale_mask_max(srow, n, (live.begin[r], live.end[r]), k);
        let m_old = un.m[r];
        let m_new = if tile_max > m_old { tile_max } else { m_old };
        // A row with no live key so far keeps m = -inf; subtracting 0
        // instead turns its -inf scores into exact zeros, never NaN.
        let m_use = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
        alpha[r] = exp_any::<LOG2>(m_old - m_use, k.fma);
        un.m[r] = m_new;
        let mut sum = [0.0f32; W];
        for (sc, pc) in srow.chunks_exact(W).zip(prow.chunks_exact_mut(W)) {
            for i in 0..W {
                let e = round_bf16(exp_any::<LOG2>(sc[i] - m_use, k.fma));
                pc[i] = e;
                sum[i] += widen(e);
            }
        }
        un.l[r] = un.l[r] * alpha[r] + sum.iter().sum::<f32>();
    }
}

/// Scales (and soft-caps) the first `n` scores of a row, sets every score
/// outside `begin..end` to -inf, and returns the row's maximum (NaN scores
/// are kept but do not count towards it).
#[inline(always)]
fn scale_mask_max(srow: &mut [f32; BK], n: usize, (begin, end): (i32, i32), k: &Scaling) -> f32 {
    if let Some(cap) = k.softcap {
        for x in srow[..n].iter_mut() {
            *x = cap * (*x * k.scale / cap).tanh();
        }
    }
    let scale = if k.softcap.is_some() { 1.0 } else { k.scale };
    let mut mx = [f32::NEG_INFINITY; W];
    for (ci, chunk) in srow.chunks_exact_mut(W).enumerate() {
        for (i, x) in chunk.iter_mut().enumerate() {
            let j = (ci * W + i) as i32;
            let y = if j >= begin && j < end { *x * scale } else { f32::NEG_INFINITY };
            *x = y;
            mx[i] = if y > mx[i] { y } else { mx[i] };
        }
    }
    mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}
