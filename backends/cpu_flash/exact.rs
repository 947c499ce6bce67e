//! The exact path for the rare rows the fast path cannot answer the way the
//! f64 reference does: rows whose fast result holds a NaN or an infinity.
//!
//! That happens exactly when the inputs make the reference non-finite (a
//! NaN or +inf logit, every visible logit -inf, a NaN or infinity in a
//! visible V row: all of these survive the fast path as NaN/inf, see
//! `exp.rs` and `task::finish_units`), or when f32 overflows where f64 does
//! not (|logit · log2 e| or the unnormalised output past f32::MAX), or when
//! a non-finite V value sits at a key the row does not see but its tile
//! does (the P·V kernel multiplies it by a zero weight). Recomputing such a
//! row in f64 with the reference's rules gives the reference's answer in
//! every case, so no input is silently turned into zeros.
//!
//! Rows whose largest logit is huge (|max| ≥ `HUGE_LOGIT`) come here too:
//! there an f32 logit has lost every bit below 2^-7 that the reference's
//! f64 logit keeps, so two keys whose huge parts tie would get weights
//! that differ from the reference's by whole percents. Real logits stay far
//! below it; between ~10^3 and `HUGE_LOGIT` the fast path keeps the
//! f32 rounding of its logits, as every f32 attention does.

/// Largest |logit| (in the fast path's units: base-2 when not soft-capped)
/// a row may reach and still take the fast path's answer.
pub(super) const HUGE_LOGIT: f32 = 65536.0;

use super::elem::Elem;
use super::schedule::Call;

/// Computes output row `[b, i, h]` as the f64 reference does: scores
/// `scale · q·k` (soft-capped), max over the visible keys ignoring NaN
/// (as `f64::max` does), weights `exp(s - max)`, then `Σ w v / Σ w`. Writes
/// the result, rounded to f32, into `row`; `acc` is scratch.
pub(super) fn exact_row<T: Elem>(c: &Call<T>, (b, i, h): (usize, usize, usize), acc: &mut Vec<f64>, row: &mut [f32]) {
    let d = c.d;
    let kvh = h / c.group;
    let (lo, hi) = c.mask.key_range(i, c.sq, c.skv);
    if lo >= hi {
        row.fill(0.0); // fully masked: zeros, as everywhere
        return;
    }
    let q = &c.q[c.q_rows.at(b, i, h)..][..d];
    let scale = c.softmax_scale as f64;
    let score = |j: usize| {
        let k = &c.k[c.k_rows.at(b, j, kvh)..][..d];
        let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a.to_f64() * b.to_f64()).sum();
        let s = dot * scale;
        match c.softcap {
            Some(cap) => {
                let cap = cap as f64;
                cap * (s / cap).tanh()
            }
            None => s,
        }
    };
    let max = (lo..hi).map(score).fold(f64::NEG_INFINITY, f64::max);
    acc.clear();
    acc.resize(d, 0.0);
    let mut sum = 0.0;
    for j in lo..hi {
        let w = (score(j) - max).exp();
        sum += w;
        let v = &c.v[c.v_rows.at(b, j, kvh)..][..d];
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += w * x.to_f64();
        }
    }
    for (o, &a) in row.iter_mut().zip(acc.iter()) {
        *o = (a / sum) as f32;
    }
}
