//! Rotary position embeddings on the host.
//!
//! A head vector's first `rotary_dim` elements are split into pairs and each
//! pair is rotated by `position × inv_freq[i]`; the rest pass through
//! (partial rotary). Pairs are `(i, i + half)` in NeoX style (Llama) or
//! `(2i, 2i + 1)` interleaved (GPT-J, GLM). GLM's original 2D scheme
//! splits the rotary dims into two halves, each rotated by its own position
//! stream (token position and block position) with frequencies for half the
//! width. Frequencies and angles are computed in f64 and the rotation is
//! applied in f32, so the only f32 rounding is that of the result.

use super::config::{RopeConfig, RopeScaling, RopeStyle};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RopeError {
    #[error("rotary_dim {rotary_dim} must be even, at least 2 and at most head_dim {head_dim}")]
    RotaryDim { rotary_dim: usize, head_dim: usize },
    #[error("2D rotary needs rotary_dim divisible by 4 (two even halves), got {0}")]
    TwoDimRotary(usize),
    #[error("rotary input holds {got} elements, not a multiple of heads × head_dim = {row}")]
    Length { got: usize, row: usize },
    #[error("{stream} has {got} positions for {tokens} tokens")]
    Positions { stream: &'static str, got: usize, tokens: usize },
    #[error("this rope uses {expected} position stream(s), the call passed {got}")]
    Streams { expected: usize, got: usize },
    #[error(transparent)]
    Alloc(#[from] super::alloc::AllocError),
}

/// Position ids of the tokens being rotated, one per token (per stream).
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// One position per token (Llama, Mistral, Qwen2, GLM-4).
    OneD(&'a [usize]),
    /// GLM 2D: token positions rotate the first half of the rotary dims,
    /// block positions the second half.
    TwoD { positions: &'a [usize], block_positions: &'a [usize] },
}

/// A prepared rotary embedding for one head size.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    style: RopeStyle,
    head_dim: usize,
    rotary_dim: usize,
    two_d: bool,
    /// One frequency per pair of a segment (`segment_dim / 2` entries).
    inv_freq: Vec<f64>,
}

/// `theta^(-2i/dim)` for each pair, rescaled as `scaling` says.
pub fn inverse_frequencies(theta: f64, dim: usize, scaling: RopeScaling) -> Vec<f64> {
    let base: Vec<f64> = (0..dim / 2).map(|i| theta.powf(-((2 * i) as f64) / dim as f64)).collect();
    match scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            // Wavelengths longer than the original context / low_freq_factor
            // are interpolated by `factor`; shorter than context /
            // high_freq_factor are kept; in between, blended linearly in
            // context / wavelength.
            let low_wavelen = original_max_position_embeddings / low_freq_factor;
            let high_wavelen = original_max_position_embeddings / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl Rope {
    /// A 1D rope as a model config describes it.
    pub fn new(config: &RopeConfig, head_dim: usize) -> Result<Rope, RopeError> {
        Rope::with_parts(config.style, head_dim, config.rotary_dim, config.theta, config.scaling, false)
    }

    /// GLM's 2D rope: `rotary_dim` split into two halves with frequencies for
    /// `rotary_dim / 2`, rotated by two position streams.
    pub fn two_d(config: &RopeConfig, head_dim: usize) -> Result<Rope, RopeError> {
        Rope::with_parts(config.style, head_dim, config.rotary_dim, config.theta, config.scaling, true)
    }

    pub fn with_parts(
        style: RopeStyle,
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: RopeScaling,
        two_d: bool,
    ) -> Result<Rope, RopeError> {
        if rotary_dim < 2 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(RopeError::RotaryDim { rotary_dim, head_dim });
        }
        if two_d && !rotary_dim.is_multiple_of(4) {
            return Err(RopeError::TwoDimRotary(rotary_dim));
        }
        let segment = if two_d { rotary_dim / 2 } else { rotary_dim };
        Ok(Rope { style, head_dim, rotary_dim, two_d, inv_freq: inverse_frequencies(theta, segment, scaling) })
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    pub fn is_two_d(&self) -> bool {
        self.two_d
    }

    /// The per-pair frequencies of one rotary segment.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Rotates `x`, laid out `[tokens, heads, head_dim]`, in place: token `t`
    /// by `positions[t]` (per stream).
    pub fn apply(&self, x: &mut [f32], heads: usize, positions: Positions<'_>) -> Result<(), RopeError> {
        let row = heads * self.head_dim;
        if row == 0 || !x.len().is_multiple_of(row) {
            return Err(RopeError::Length { got: x.len(), row });
        }
        let tokens = x.len() / row;
        let streams: Vec<&[usize]> = match (positions, self.two_d) {
            (Positions::OneD(p), false) => vec![p],
            (Positions::TwoD { positions, block_positions }, true) => vec![positions, block_positions],
            (Positions::OneD(_), true) => return Err(RopeError::Streams { expected: 2, got: 1 }),
            (Positions::TwoD { .. }, false) => return Err(RopeError::Streams { expected: 1, got: 2 }),
        };
        for (stream, p) in ["positions", "block_positions"].into_iter().zip(&streams) {
            if p.len() != tokens {
                return Err(RopeError::Positions { stream, got: p.len(), tokens });
            }
        }
        let segment = self.rotary_dim / streams.len();
        let mut cos = vec![0.0f64; self.inv_freq.len()];
        let mut sin = vec![0.0f64; self.inv_freq.len()];
        for (t, token) in x.chunks_exact_mut(row).enumerate() {
            for (s, stream) in streams.iter().enumerate() {
                let pos = stream[t] as f64;
                for (i, f) in self.inv_freq.iter().enumerate() {
                    let (sn, cs) = (pos * f).sin_cos();
                    sin[i] = sn;
                    cos[i] = cs;
                }
                for head in token.chunks_exact_mut(self.head_dim) {
                    rotate_segment(&mut head[s * segment..(s + 1) * segment], self.style, &cos, &sin);
                }
            }
        }
        Ok(())
    }
}

impl Rope {
    /// The cos/sin of every rotation angle, for kernels that rotate with a
    /// table instead of computing angles: `[tokens][streams × pairs][2]`
    /// (`(cos, sin)`, stream-major within a token), computed in f64 and
    /// rounded to f32.
    pub fn cos_sin_table(&self, positions: Positions<'_>) -> Result<Vec<f32>, RopeError> {
        let streams: Vec<&[usize]> = match (positions, self.two_d) {
            (Positions::OneD(p), false) => vec![p],
            (Positions::TwoD { positions, block_positions }, true) => {
                if block_positions.len() != positions.len() {
                    return Err(RopeError::Positions {
                        stream: "block_positions",
                        got: block_positions.len(),
                        tokens: positions.len(),
                    });
                }
                vec![positions, block_positions]
            }
            (Positions::OneD(_), true) => return Err(RopeError::Streams { expected: 2, got: 1 }),
            (Positions::TwoD { .. }, false) => return Err(RopeError::Streams { expected: 1, got: 2 }),
        };
        let tokens = streams[0].len();
        let n = tokens.saturating_mul(streams.len() * self.inv_freq.len() * 2);
        let mut table = super::alloc::try_with_capacity(n, || format!("a cos/sin table ({n} values × 4 bytes)"))?;
        for t in 0..tokens {
            for stream in &streams {
                for f in &self.inv_freq {
                    let (s, c) = (stream[t] as f64 * f).sin_cos();
                    table.push(c as f32);
                    table.push(s as f32);
                }
            }
        }
        Ok(table)
    }
}

/// Rotates one segment's pairs by the given angles.
fn rotate_segment(seg: &mut [f32], style: RopeStyle, cos: &[f64], sin: &[f64]) {
    let half = seg.len() / 2;
    for i in 0..half {
        let (a, b) = match style {
            RopeStyle::NeoX => (i, i + half),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        };
        let (x1, x2) = (seg[a] as f64, seg[b] as f64);
        seg[a] = (x1 * cos[i] - x2 * sin[i]) as f32;
        seg[b] = (x2 * cos[i] + x1 * sin[i]) as f32;
    }
}

#[cfg(test)]
mod tests;
