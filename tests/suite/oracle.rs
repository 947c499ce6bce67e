//! The oracle checked against something other than itself: a second f64
//! attention written from the definitions, differently on purpose.
//!
//! `cpu-reference` walks rows, takes the key range from `Mask::key_range`,
//! subtracts the running max, and maps q heads to kv heads by `h / group`.
//! This one materializes each (batch, head) score matrix, decides visibility
//! per (query, key) pair from the mask's definition in positions, normalizes
//! with log-sum-exp, and maps heads by `h * kv_heads / q_heads`. Agreement to
//! ~1e-12 on random problems means the two share no bug that shows.

use proptest::prelude::*;
use rocmforge::backends::cpu_reference::reference_attention;
use rocmforge::{AttentionProblem, DType, HostData, Mask, Tensor};

/// Whether query `i` may see key `j`: query i sits at position
/// i + seq_kv - seq_q (bottom-right alignment), key j at position j.
fn visible(mask: Mask, i: usize, j: usize, seq_q: usize, seq_kv: usize) -> bool {
    let pos = i as i128 + seq_kv as i128 - seq_q as i128;
    let j = j as i128;
    match mask {
        Mask::None => true,
        Mask::Causal => j <= pos,
        Mask::SlidingWindow { left, right } => pos - left as i128 <= j && j <= pos + right as i128,
    }
}

/// Attention from the definition, in f64.
fn definition(p: &AttentionProblem, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let (b_n, sq, skv, hq, hkv, d) = (p.batch, p.seq_q, p.seq_kv, p.num_q_heads, p.num_kv_heads, p.head_dim);
    let at = |t: &[f64], b: usize, s: usize, seq: usize, heads: usize, h: usize| {
        let start = ((b * seq + s) * heads + h) * d;
        t[start..start + d].to_vec()
    };
    let mut out = vec![0.0; b_n * sq * hq * d];
    for b in 0..b_n {
        for h in 0..hq {
            let kvh = h * hkv / hq;
            // The whole score matrix, None where the mask hides the pair.
            let scores: Vec<Vec<Option<f64>>> = (0..sq)
                .map(|i| {
                    let qi = at(q, b, i, sq, hq, h);
                    (0..skv)
                        .map(|j| {
                            visible(p.mask, i, j, sq, skv).then(|| {
                                let kj = at(k, b, j, skv, hkv, kvh);
                                let s =
                                    qi.iter().zip(&kj).map(|(a, c)| a * c).sum::<f64>() * p.effective_scale() as f64;
                                match p.softcap {
                                    Some(cap) => cap as f64 * (s / cap as f64).tanh(),
                                    None => s,
                                }
                            })
                        })
                        .collect()
                })
                .collect();
            for (i, row) in scores.iter().enumerate() {
                let seen: Vec<(usize, f64)> = row.iter().enumerate().filter_map(|(j, s)| s.map(|s| (j, s))).collect();
                if seen.is_empty() {
                    continue; // no visible key: the row stays zero
                }
                let m = seen.iter().map(|&(_, s)| s).fold(f64::MIN, f64::max);
                let lse = m + seen.iter().map(|&(_, s)| (s - m).exp()).sum::<f64>().ln();
                let o = ((b * sq + i) * hq + h) * d;
                for &(j, s) in &seen {
                    let w = (s - lse).exp();
                    for (x, vx) in at(v, b, j, skv, hkv, kvh).iter().enumerate() {
                        out[o + x] += w * vx;
                    }
                }
            }
        }
    }
    out
}

/// Random values in [-3, 3) (q and k that large make the softmax far from
/// uniform), as f32 for cpu-reference and exactly widened for the definition.
fn values(shape: [usize; 4], seed: u64) -> (HostData, Vec<f64>) {
    let v: Vec<f32> = Tensor::random(shape, DType::F32, seed).unwrap().to_f32_vec().unwrap();
    let v: Vec<f32> = v.iter().map(|x| x * 3.0).collect();
    let wide = v.iter().map(|&x| x as f64).collect();
    (HostData::F32(v), wide)
}

fn agree(p: &AttentionProblem, seed: u64) -> Result<(), String> {
    let (q, qw) = values(p.q_shape(), seed);
    let (k, kw) = values(p.kv_shape(), seed + 1);
    let (v, vw) = values(p.kv_shape(), seed + 2);
    let ours = reference_attention(p, &q, &k, &v);
    let theirs = definition(p, &qw, &kw, &vw);
    if ours.len() != theirs.len() {
        return Err(format!("{p}: lengths {} vs {}", ours.len(), theirs.len()));
    }
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if (a - b).abs() > 1e-12 + 1e-10 * b.abs() {
            return Err(format!("{p}: element {i}: cpu-reference {a}, definition {b}"));
        }
    }
    Ok(())
}

fn mask() -> impl Strategy<Value = Mask> {
    prop_oneof![
        Just(Mask::None),
        Just(Mask::Causal),
        (0usize..12, 0usize..12).prop_map(|(left, right)| Mask::SlidingWindow { left, right }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn cpu_reference_matches_the_definition(
        batch in 1usize..3, seq_q in 1usize..12, seq_kv in 1usize..12, kv_heads in 1usize..3, group in 1usize..4,
        head_dim in 1usize..10, mask in mask(), softcap in proptest::option::of(0.5f32..20.0),
        scale in proptest::option::of(0.05f32..2.0), seed in any::<u64>(),
    ) {
        let mut p = AttentionProblem::new(batch, seq_q, seq_kv, kv_heads * group, kv_heads, head_dim, DType::F32).with_mask(mask);
        p.softcap = softcap;
        p.scale = scale;
        if let Err(e) = agree(&p, seed % 1_000_000) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The definition itself, on cases small enough to work by hand.
#[test]
fn definition_hand_checks() {
    // One query, keys with logits 0 and ln 3 (scale 1): weights 1/4, 3/4.
    let mut p = AttentionProblem::new(1, 1, 2, 1, 1, 1, DType::F32);
    p.scale = Some(1.0);
    let out = definition(&p, &[1.0], &[0.0, 3f64.ln()], &[4.0, 8.0]);
    assert!((out[0] - 7.0).abs() < 1e-12, "{out:?}");
    // Causal with seq_q 3 > seq_kv 2: query 0 sees nothing, 1 sees key 0.
    let p = AttentionProblem::new(1, 3, 2, 1, 1, 1, DType::F32).with_mask(Mask::Causal);
    let out = definition(&p, &[1.0; 3], &[1.0, 1.0], &[5.0, 9.0]);
    assert_eq!(&out[..2], &[0.0, 5.0]);
    assert!((out[2] - 7.0).abs() < 1e-12, "{out:?}");
    // Window left 0, right 0: each query sees exactly its aligned key.
    let p = AttentionProblem::new(1, 2, 2, 1, 1, 1, DType::F32).with_mask(Mask::SlidingWindow { left: 0, right: 0 });
    assert_eq!(definition(&p, &[1.0; 2], &[1.0, 2.0], &[5.0, 9.0]), vec![5.0, 9.0]);
}
