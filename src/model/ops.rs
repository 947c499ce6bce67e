//! The decoder's dense math on the host, in f32 (optionally rounding to a
//! 16-bit model dtype where transformers does): linear layers, RMSNorm,
//! SwiGLU and argmax. Rows are tokens; matrices are
//! `[out, in]` as stored by `nn.Linear`, so every output element is a dot
//! product of two contiguous rows.

use super::alloc::{try_filled, AllocError};
use rayon::prelude::*;

/// Output features handled per parallel task.
const FEATURES_PER_TASK: usize = 16;
/// Below this many multiply-adds a product runs on the calling thread: waking
/// the pool costs more than the work (a tiny model's decode step).
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `y = x Wᵀ + b`: `x` is `[tokens, in_features]`, `weight` is
/// `[out_features, in_features]`; returns `[tokens, out_features]`. Its two
/// `tokens × out_features` buffers are allocated fallibly.
pub fn linear(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out_features: usize,
    in_features: usize,
) -> Result<Vec<f32>, AllocError> {
    debug_assert_eq!(weight.len(), out_features * in_features);
    let tokens = x.len() / in_features.max(1);
    if tokens == 0 || out_features == 0 {
        return Ok(Vec::new());
    }
    let what = || format!("the output of a linear layer ({tokens} tokens × {out_features} features × 4 bytes)");
    let len = tokens.checked_mul(out_features).ok_or_else(|| AllocError { what: what(), bytes: u64::MAX })?;
    // Computed feature-major (each task owns a block of output features for
    // every token, so a weight row is read once per call), then transposed
    // to token-major.
    let mut by_feature = try_filled(len, 0.0f32, what)?;
    let block = |(chunk, out): (usize, &mut [f32])| {
        let first = chunk * FEATURES_PER_TASK;
        for (j, out_row) in out.chunks_exact_mut(tokens).enumerate() {
            let o = first + j;
            let w = &weight[o * in_features..(o + 1) * in_features];
            let b = bias.map_or(0.0, |b| b[o]);
            for (t, y) in out_row.iter_mut().enumerate() {
                *y = dot(&x[t * in_features..(t + 1) * in_features], w) + b;
            }
        }
    };
    let chunks = FEATURES_PER_TASK * tokens;
    if out_features.saturating_mul(in_features).saturating_mul(tokens) >= PARALLEL_MIN_WORK {
        by_feature.par_chunks_mut(chunks).enumerate().for_each(block);
    } else {
        by_feature.chunks_mut(chunks).enumerate().for_each(block);
    }
    let mut y = try_filled(len, 0.0f32, what)?;
    for (o, col) in by_feature.chunks_exact(tokens).enumerate() {
        for (t, &val) in col.iter().enumerate() {
            y[t * out_features + o] = val;
        }
    }
    Ok(y)
}

/// Dot product with eight independent f32 accumulators (vectorises, and
/// sums in a fixed order so results are deterministic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    // Plain multiply-add, not `mul_add`: without the `fma` target feature
    // (the x86-64 baseline) `mul_add` is a libm call per element.
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// RMSNorm of each row of `x` (width `weight.len()`), scaled by `weight`:
/// `x / sqrt(mean(x²) + eps) * weight`. The mean square is accumulated in f64.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f64) -> Result<Vec<f32>, AllocError> {
    rms_norm_rounded(x, weight, eps, |v| v)
}

/// [`rms_norm`] with `round` applied where a 16-bit transformers model
/// rounds: to the normalized row, and to its product with the weight.
pub fn rms_norm_rounded(x: &[f32], weight: &[f32], eps: f64, round: fn(f32) -> f32) -> Result<Vec<f32>, AllocError> {
    let width = weight.len();
    let mut out = try_filled(x.len(), 0.0f32, || format!("an RMSNorm output ({} values × 4 bytes)", x.len()))?;
    for (row, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean_sq = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / width as f64;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = round(round((v as f64 * inv) as f32) * w);
        }
    }
    Ok(out)
}

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Result<Vec<f32>, AllocError> {
    swiglu_rounded(gate, up, |v| v)
}

/// [`swiglu`] with `round` applied to the activation and to the product.
pub fn swiglu_rounded(gate: &[f32], up: &[f32], round: fn(f32) -> f32) -> Result<Vec<f32>, AllocError> {
    let n = gate.len().min(up.len());
    let mut out = super::alloc::try_with_capacity(n, || format!("a SwiGLU output ({n} values × 4 bytes)"))?;
    out.extend(gate.iter().zip(up).map(|(&g, &u)| round(round(g / (1.0 + (-g).exp())) * u)));
    Ok(out)
}

/// Adds `delta` to `x` elementwise.
pub fn add_in_place(x: &mut [f32], delta: &[f32]) {
    x.iter_mut().zip(delta).for_each(|(a, b)| *a += b);
}

/// Index of the largest value; the first one on ties, as `torch.argmax`.
/// NaN never wins, but a row of NaN gives its last index: greedy decoding
/// goes through [`super::sampling::greedy_token`], which refuses such rows.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::SplitMix64;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| r.next_unit() * 2.0 - 1.0).collect()
    }

    #[test]
    fn linear_matches_f64_loops() {
        for (tokens, inp, out) in [(1, 7, 3), (5, 64, 40), (3, 33, 17)] {
            let (x, w, b) = (random(tokens * inp, 1), random(out * inp, 2), random(out, 3));
            for bias in [None, Some(b.clone())] {
                let y = linear(&x, &w, bias.as_deref(), out, inp).unwrap();
                assert_eq!(y.len(), tokens * out);
                for t in 0..tokens {
                    for o in 0..out {
                        let want: f64 = (0..inp).map(|i| x[t * inp + i] as f64 * w[o * inp + i] as f64).sum::<f64>()
                            + bias.as_ref().map_or(0.0, |b| b[o] as f64);
                        assert!((y[t * out + o] as f64 - want).abs() < 1e-5, "{tokens}x{inp}->{out} t{t} o{o}");
                    }
                }
            }
        }
    }

    #[test]
    fn rms_norm_and_swiglu_by_hand() {
        let y = rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 2.0], 0.0).unwrap();
        let r = (12.5f64).sqrt() as f32;
        assert_eq!(y[..2], [3.0 / r, 8.0 / r]);
        // An all-zero row stays zero thanks to eps.
        let y = rms_norm(&[0.0, 0.0], &[1.0, 1.0], 1e-6).unwrap();
        assert_eq!(y, vec![0.0, 0.0]);
        let s = swiglu(&[0.0, 2.0], &[5.0, 3.0]).unwrap();
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 2.0 / (1.0 + (-2.0f32).exp()) * 3.0).abs() < 1e-6);
    }

    #[test]
    fn argmax_first_max_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }
}
