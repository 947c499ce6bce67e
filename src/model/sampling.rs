//! Picking the next token from a row of logits: greedy (the default) or
//! sampled with temperature, top-k and top-p from a seeded generator.
//!
//! Sampling runs on the host, in f64, on the logits of each sequence's last
//! position (a GPU decoder downloads only those rows). Each sequence has
//! its own generator, [`Pcg32`] seeded with (seed, sequence index), and
//! draws one number per token, so a sequence's tokens depend on the seed,
//! its prompt and the model only: not on the batch around it, on which
//! sequences have finished, or on the device (CPU and GPU logits that agree
//! to rounding pick the same token unless a draw falls within that
//! rounding of a boundary between two tokens).
//!
//! The rules, applied in this order (as transformers' logits processors):
//! divide the logits by the temperature; keep the `top_k` largest (ties:
//! lower id first); softmax; keep the smallest prefix of the remaining
//! tokens, most likely first, whose probability reaches `top_p` (at least
//! one token); draw from what is left in proportion to its probability.
//! NaN logits are never picked; `+inf` logits share all the probability.

use super::ops;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (the largest logit, the first on ties); above 0 the
    /// logits are divided by it before the softmax.
    pub temperature: f64,
    /// Sample only from the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Sample only from the most likely tokens whose probabilities sum to
    /// at least `p`, in (0, 1] (`None`: all).
    pub top_p: Option<f64>,
    /// Seeds every sequence's generator (with the sequence's index).
    pub seed: u64,
}

impl Default for Sampling {
    /// Greedy.
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature = {0}: must be a finite number >= 0 (0 = greedy)")]
    Temperature(f64),
    #[error("top-k = 0: must be at least 1")]
    TopK,
    #[error("top-p = {0}: must be in (0, 1]")]
    TopP(f64),
    #[error("top-k and top-p apply to sampling: give a temperature > 0 (temperature 0 is greedy)")]
    NeedsTemperature,
    #[error("every logit is NaN: no token to pick")]
    AllNaN,
    /// Greedy decoding only: no logit is above -inf.
    #[error("every logit is -inf or NaN ({neg_inf} -inf, {nan} NaN): no token to pick")]
    NoFinite { neg_inf: usize, nan: usize },
}

/// The greedy token of one row of logits: the largest, the first on ties,
/// `+inf` included (as `torch.argmax`). NaN never wins. A row with nothing
/// above -inf has no token to pick (a model whose activations overflowed or
/// became NaN): every logit NaN is [`SamplingError::AllNaN`], as when
/// sampling; -inf and NaN only is [`SamplingError::NoFinite`].
pub fn greedy_token(logits: &[f32]) -> Result<u32, SamplingError> {
    let best = ops::argmax(logits);
    match logits.get(best) {
        Some(&x) if x > f32::NEG_INFINITY => Ok(best as u32),
        _ => {
            let nan = logits.iter().filter(|x| x.is_nan()).count();
            match logits.len() - nan {
                0 => Err(SamplingError::AllNaN),
                neg_inf => Err(SamplingError::NoFinite { neg_inf, nan }),
            }
        }
    }
}

impl Sampling {
    /// Greedy decoding (the default).
    pub fn greedy() -> Sampling {
        Sampling::default()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Every rule the fields must follow.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if self.top_k == Some(0) {
            return Err(SamplingError::TopK);
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(SamplingError::TopP(p));
            }
        }
        if self.is_greedy() && (self.top_k.is_some() || self.top_p.is_some()) {
            return Err(SamplingError::NeedsTemperature);
        }
        Ok(())
    }

    /// The generator of sequence `index` of a batch.
    pub fn rng_for(&self, index: usize) -> Pcg32 {
        Pcg32::new(self.seed, index as u64)
    }

    /// The next token from `logits` (one row over the vocabulary).
    pub fn pick(&self, logits: &[f32], rng: &mut Pcg32) -> Result<u32, SamplingError> {
        if self.is_greedy() {
            return greedy_token(logits);
        }
        if logits.iter().all(|x| x.is_nan()) {
            return Err(SamplingError::AllNaN);
        }
        let candidates = self.candidates(logits);
        let u = rng.next_f64();
        Ok(draw(&candidates, u))
    }

    /// (id, weight) of every token that may be drawn, weights ∝ probability:
    /// all non-NaN tokens in id order, or, with top-k / top-p, the kept
    /// ones, most likely first.
    fn candidates(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let t = self.temperature;
        let mut c: Vec<(u32, f64)> =
            logits.iter().enumerate().filter(|(_, x)| !x.is_nan()).map(|(i, &x)| (i as u32, x as f64 / t)).collect();
        let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let sorted = self.top_k.is_some() || self.top_p.is_some();
        if let Some(k) = self.top_k.filter(|&k| k < c.len()) {
            c.select_nth_unstable_by(k - 1, order);
            c.truncate(k);
        }
        if sorted {
            c.sort_unstable_by(order);
        }
        let max = c.iter().map(|&(_, l)| l).fold(f64::NEG_INFINITY, f64::max);
        for (_, w) in c.iter_mut() {
            *w = match max {
                // +inf logits share everything; all -inf: no preference.
                f64::INFINITY => (*w == f64::INFINITY) as u8 as f64,
                f64::NEG_INFINITY => 1.0,
                _ => (*w - max).exp(),
            };
        }
        if let Some(p) = self.top_p {
            let total: f64 = c.iter().map(|&(_, w)| w).sum();
            let mut sum = 0.0;
            let keep = c.iter().position(|&(_, w)| {
                sum += w;
                sum >= p * total
            });
            c.truncate(keep.map_or(c.len(), |i| i + 1));
        }
        c
    }
}

/// The candidate whose cumulative weight interval holds `u × total`.
fn draw(candidates: &[(u32, f64)], u: f64) -> u32 {
    let total: f64 = candidates.iter().map(|&(_, w)| w).sum();
    let target = u * total;
    let mut sum = 0.0;
    for &(id, w) in candidates {
        sum += w;
        if target < sum {
            return id;
        }
    }
    // Rounding can leave `target` at the very top: the last token with weight.
    candidates.iter().rev().find(|&&(_, w)| w > 0.0).map_or(candidates[0].0, |&(id, _)| id)
}

/// PCG-XSH-RR 64/32 (O'Neill 2014): a small, fast generator with 2^63
/// independent streams, here one per sequence. Own code rather than a
/// crate: sixteen lines, and its output must never change under us (a
/// seed's tokens are part of what users record).
#[derive(Clone, Debug)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

impl Pcg32 {
    const MUL: u64 = 6364136223846793005;

    pub fn new(seed: u64, stream: u64) -> Pcg32 {
        let mut g = Pcg32 { state: 0, inc: (stream << 1) | 1 };
        g.next_u32();
        g.state = g.state.wrapping_add(seed);
        g.next_u32();
        g
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MUL).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        let hi = (self.next_u32() as u64) << 21;
        let lo = (self.next_u32() >> 11) as u64;
        (hi | lo) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests;
