use super::*;
use crate::tensor::SplitMix64;

/// Frequencies written independently of `inverse_frequencies`: llama3 as a
/// clamped blend in `context / wavelength`.
fn reference_freqs(theta: f64, dim: usize, scaling: RopeScaling) -> Vec<f64> {
    (0..dim)
        .step_by(2)
        .map(|j| {
            let f = 1.0 / theta.powf(j as f64 / dim as f64);
            match scaling {
                RopeScaling::None => f,
                RopeScaling::Linear { factor } => f / factor,
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                    let ratio = original_max_position_embeddings * f / (2.0 * std::f64::consts::PI);
                    let t = ((ratio - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0.0, 1.0);
                    (1.0 - t) * f / factor + t * f
                }
            }
        })
        .collect()
}

/// The rotation as an explicit `head_dim × head_dim` matrix, applied in f64:
/// segment `s` (of `segments`) pairs its dims as `style` says and rotates
/// pair `i` by `pos[s] × freqs[i]`.
fn reference_rotate(
    x: &[f32],
    head_dim: usize,
    rotary_dim: usize,
    style: RopeStyle,
    freqs: &[f64],
    pos: &[usize],
) -> Vec<f64> {
    let mut m = vec![vec![0.0f64; head_dim]; head_dim];
    for (d, row) in m.iter_mut().enumerate() {
        row[d] = 1.0;
    }
    let seg = rotary_dim / pos.len();
    for (s, &p) in pos.iter().enumerate() {
        for (i, f) in freqs.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::NeoX => (s * seg + i, s * seg + i + seg / 2),
                RopeStyle::Interleaved => (s * seg + 2 * i, s * seg + 2 * i + 1),
            };
            let angle = p as f64 * f;
            m[a][a] = angle.cos();
            m[a][b] = -angle.sin();
            m[b][a] = angle.sin();
            m[b][b] = angle.cos();
        }
    }
    (0..head_dim).map(|r| (0..head_dim).map(|c| m[r][c] * x[c] as f64).sum()).collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.next_unit() * 2.0 - 1.0).collect()
}

const SCALINGS: [RopeScaling; 3] = [
    RopeScaling::None,
    RopeScaling::Linear { factor: 4.0 },
    RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64.0,
    },
];

#[test]
fn matches_the_matrix_reference() {
    let (heads, head_dim) = (3, 16);
    let mut cases = 0;
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        for rotary_dim in [16, 8, 6] {
            for scaling in SCALINGS {
                for two_d in [false, true] {
                    if two_d && rotary_dim % 4 != 0 {
                        continue;
                    }
                    let rope = Rope::with_parts(style, head_dim, rotary_dim, 10000.0, scaling, two_d).unwrap();
                    // Positions with an offset, as in cached decoding.
                    let positions: Vec<usize> = (0..5).map(|t| 37 + 3 * t).collect();
                    let blocks: Vec<usize> = (0..5).map(|t| t % 2).collect();
                    let input = random(5 * heads * head_dim, cases);
                    let mut x = input.clone();
                    let streams = if two_d {
                        Positions::TwoD { positions: &positions, block_positions: &blocks }
                    } else {
                        Positions::OneD(&positions)
                    };
                    rope.apply(&mut x, heads, streams).unwrap();
                    let seg = if two_d { rotary_dim / 2 } else { rotary_dim };
                    let freqs = reference_freqs(10000.0, seg, scaling);
                    for (t, &p) in positions.iter().enumerate() {
                        let pos: Vec<usize> = if two_d { vec![p, blocks[t]] } else { vec![p] };
                        for h in 0..heads {
                            let off = (t * heads + h) * head_dim;
                            let want = reference_rotate(
                                &input[off..off + head_dim],
                                head_dim,
                                rotary_dim,
                                style,
                                &freqs,
                                &pos,
                            );
                            for (d, w) in want.iter().enumerate() {
                                let got = x[off + d] as f64;
                                assert!(
                                    (got - w).abs() <= 1e-6 * (1.0 + w.abs()),
                                    "{style:?} rot {rotary_dim} {scaling:?} 2d={two_d} t{t} h{h} d{d}: {got} vs {w}"
                                );
                            }
                            // Dims past rotary_dim pass through bit-exactly.
                            assert_eq!(&x[off + rotary_dim..off + head_dim], &input[off + rotary_dim..off + head_dim]);
                        }
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 3 * 3 + 2 * 3 * 2, "every case ran");
}

#[test]
fn position_zero_is_identity_and_rotation_changes_values() {
    let rope = Rope::with_parts(RopeStyle::NeoX, 8, 8, 10000.0, RopeScaling::None, false).unwrap();
    let input = random(16, 1);
    let mut x = input.clone();
    rope.apply(&mut x, 1, Positions::OneD(&[0, 5])).unwrap();
    assert_eq!(&x[..8], &input[..8]);
    assert_ne!(&x[8..], &input[8..]);
}

#[test]
fn scores_depend_only_on_relative_position() {
    // <R(m) q, R(n) k> == <R(m + c) q, R(n + c) k> for every style.
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        let rope = Rope::with_parts(style, 32, 32, 500000.0, SCALINGS[2], false).unwrap();
        let (q, k) = (random(32, 11), random(32, 12));
        let score = |m: usize, n: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            rope.apply(&mut a, 1, Positions::OneD(&[m])).unwrap();
            rope.apply(&mut b, 1, Positions::OneD(&[n])).unwrap();
            a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>()
        };
        let base = score(7, 3);
        assert!((score(107, 103) - base).abs() < 1e-5, "{style:?}");
        assert!((score(7, 4) - base).abs() > 1e-4, "{style:?}: scores must change with distance");
    }
}

#[test]
fn llama3_frequency_bands() {
    let s = SCALINGS[2];
    let f = inverse_frequencies(500000.0, 64, s);
    let base = inverse_frequencies(500000.0, 64, RopeScaling::None);
    // Highest frequency (wavelength 2π < 64 / 4) is kept, lowest divided by 8.
    assert_eq!(f[0], base[0]);
    assert!((f[31] - base[31] / 8.0).abs() < 1e-18);
    // Something in between is blended.
    assert!(f.iter().zip(&base).any(|(a, b)| *a < *b && *a > *b / 8.0));
}

#[test]
fn errors() {
    let e = Rope::with_parts(RopeStyle::NeoX, 8, 10, 1e4, RopeScaling::None, false).unwrap_err();
    assert_eq!(e, RopeError::RotaryDim { rotary_dim: 10, head_dim: 8 });
    assert!(Rope::with_parts(RopeStyle::NeoX, 8, 3, 1e4, RopeScaling::None, false).is_err());
    assert_eq!(
        Rope::with_parts(RopeStyle::NeoX, 8, 6, 1e4, RopeScaling::None, true).unwrap_err(),
        RopeError::TwoDimRotary(6)
    );
    let rope = Rope::with_parts(RopeStyle::NeoX, 8, 8, 1e4, RopeScaling::None, false).unwrap();
    let mut x = vec![0.5f32; 17];
    assert!(matches!(rope.apply(&mut x, 2, Positions::OneD(&[0])), Err(RopeError::Length { .. })));
    let mut x = vec![0.5f32; 32];
    assert_eq!(
        rope.apply(&mut x, 2, Positions::OneD(&[0])),
        Err(RopeError::Positions { stream: "positions", got: 1, tokens: 2 })
    );
    assert_eq!(
        rope.apply(&mut x, 2, Positions::TwoD { positions: &[0, 1], block_positions: &[0, 0] }),
        Err(RopeError::Streams { expected: 1, got: 2 })
    );
}

/// A host mirror of `kernels/model/rope.hip`'s index math, applied with the
/// table: it must rotate exactly like `apply` (up to the table's f32 cos/sin).
fn rotate_like_the_kernel(x: &mut [f32], heads: usize, head_dim: usize, rope: &Rope, table: &[f32]) {
    let streams = if rope.is_two_d() { 2 } else { 1 };
    let pairs = rope.inv_freq().len();
    let tokens = x.len() / (heads * head_dim);
    let interleaved = rope.style() == RopeStyle::Interleaved;
    for e in 0..tokens * heads * streams * pairs {
        let per_token = heads * streams * pairs;
        let (t, rest) = (e / per_token, e % per_token);
        let (h, sp) = (rest / (streams * pairs), rest % (streams * pairs));
        let (s, i) = (sp / pairs, sp % pairs);
        let seg = t * heads * head_dim + h * head_dim + s * 2 * pairs;
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + pairs) };
        let (c, sn) = (table[(t * streams * pairs + sp) * 2], table[(t * streams * pairs + sp) * 2 + 1]);
        let (x1, x2) = (x[seg + a], x[seg + b]);
        x[seg + a] = x1 * c - x2 * sn;
        x[seg + b] = x2 * c + x1 * sn;
    }
}

#[test]
fn cos_sin_table_matches_apply() {
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        for (rotary_dim, two_d) in [(16, false), (8, false), (16, true), (8, true)] {
            let rope = Rope::with_parts(style, 16, rotary_dim, 10000.0, SCALINGS[2], two_d).unwrap();
            let positions: Vec<usize> = (0..4).map(|t| 1000 + 7 * t).collect();
            let blocks = [0usize, 1, 1, 3];
            let streams = if two_d {
                Positions::TwoD { positions: &positions, block_positions: &blocks }
            } else {
                Positions::OneD(&positions)
            };
            let input = random(4 * 3 * 16, 21);
            let mut want = input.clone();
            rope.apply(&mut want, 3, streams).unwrap();
            let table = rope.cos_sin_table(streams).unwrap();
            assert_eq!(table.len(), 4 * rotary_dim, "(cos, sin) per pair per token");
            let mut got = input.clone();
            rotate_like_the_kernel(&mut got, 3, 16, &rope, &table);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{style:?} {rotary_dim} 2d={two_d}: {g} vs {w}");
            }
            assert_ne!(got, input);
        }
    }
}
