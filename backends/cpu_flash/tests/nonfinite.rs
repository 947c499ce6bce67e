//! NaN, ±inf and huge finite inputs: cpu-flash must give what the f64
//! reference gives, element by element (NaN where it is NaN, the same
//! infinity where it is infinite, finite within tolerance elsewhere), on
//! every ISA, dtype, mask and K/V path; fully masked rows stay exact zeros.

use super::*;
use crate::backends::cpu_reference::reference_attention;
use crate::tensor::SplitMix64;
use half::{bf16, f16};

/// Sets element `i` of a host tensor to `x` (rounded to its dtype).
fn poke(t: &mut Tensor, i: usize, x: f32) {
    match t.host_mut().unwrap() {
        HostData::F32(v) => v[i] = x,
        HostData::F16(v) => v[i] = f16::from_f32(x),
        HostData::BF16(v) => v[i] = bf16::from_f32(x),
    }
}

fn copy(t: &Tensor) -> Tensor {
    Tensor::from_host(t.shape(), t.host().unwrap().clone()).unwrap()
}

fn get(t: &Tensor, i: usize) -> f32 {
    t.host().unwrap().get_f32(i)
}

/// Random (never zero) inputs for `p`, seeded.
fn inputs(p: &AttentionProblem, seed: u64) -> [Tensor; 3] {
    [
        Tensor::random(p.q_shape(), p.dtype, seed).unwrap(),
        Tensor::random(p.kv_shape(), p.dtype, seed + 1).unwrap(),
        Tensor::random(p.kv_shape(), p.dtype, seed + 2).unwrap(),
    ]
}

/// Compares every available ISA with the reference on these inputs;
/// returns how many output elements the reference has non-finite (so a
/// caller can check that its injection reached the output).
fn check_against_reference(p: &AttentionProblem, [q, k, v]: &[Tensor; 3], what: &str) -> usize {
    let expected = reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
    let tol = p.dtype.tolerance();
    for backend in instances() {
        let got = run(&backend, p, (q, k, v));
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            // The reference's answer in the problem's dtype.
            let e = HostData::from_f32(p.dtype, &[e as f32]).get_f32(0) as f64;
            let ok = if e.is_nan() {
                g.is_nan()
            } else if e.is_infinite() {
                g as f64 == e
            } else {
                tol.accepts(g as f64, e)
            };
            assert!(ok, "{p}, {what}, {backend:?}: element {i}: got {g}, reference {e}");
        }
    }
    expected.iter().filter(|e| !(**e as f32).is_finite()).count()
}

/// Small random problems over every mask kind, GQA, odd head dims and
/// soft-capping.
fn random_problem(rng: &mut SplitMix64, dtype: DType) -> AttentionProblem {
    let mut pick = |n: u64| (rng.next_u64() % n) as usize;
    let (hkv, group) = (1 + pick(2), 1 + pick(3));
    let (sq, skv) = (1 + pick(140), 1 + pick(140));
    let d = [1, 5, 16, 40, 64][pick(5)];
    let mask = [
        Mask::None,
        Mask::Causal,
        Mask::SlidingWindow { left: pick(20), right: pick(5) },
        Mask::SlidingWindow { left: 0, right: 0 },
    ][pick(4)];
    let mut p = AttentionProblem::new(1 + pick(2), sq, skv, hkv * group, hkv, d, dtype).with_mask(mask);
    if pick(4) == 0 {
        p.softcap = Some(5.0);
    }
    p
}

/// A value of `kind`: NaN, +inf, -inf, or a huge finite value of random
/// sign up to the dtype's largest.
fn special(kind: usize, rng: &mut SplitMix64, dtype: DType) -> f32 {
    let sign = if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 };
    match kind {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        _ => {
            let max = match dtype {
                DType::F16 => 65504.0f32,
                _ => f32::MAX,
            };
            // Uniform in log scale between max^0.25 and max.
            sign * max.powf(0.25 + 0.75 * rng.next_unit())
        }
    }
}

const KINDS: [&str; 4] = ["NaN", "+inf", "-inf", "huge"];

#[test]
fn injected_nan_inf_and_huge_values_match_the_reference() {
    let mut rng = SplitMix64(0x5eed);
    let mut reached = [0usize; 4];
    for case in 0..96u64 {
        let dtype = DType::ALL[case as usize % 3];
        let kind = (case / 3) as usize % 4;
        let p = random_problem(&mut rng, dtype);
        let mut t = inputs(&p, 1000 + 3 * case);
        let tensor = rng.next_u64() as usize % 3;
        for _ in 0..1 + rng.next_u64() % 3 {
            let i = rng.next_u64() as usize % t[tensor].len();
            let x = special(kind, &mut rng, dtype);
            poke(&mut t[tensor], i, x);
        }
        let what = format!("{} in {}", KINDS[kind], ["q", "k", "v"][tensor]);
        reached[kind] += check_against_reference(&p, &t, &what);
    }
    // NaN and infinities must have reached some outputs, or the test
    // proved nothing about them.
    assert!(reached[..3].iter().all(|&n| n > 0), "non-finite outputs per kind: {reached:?}");
}

/// q·k pairs whose scaled product spans up to f32::MAX: past f32 range
/// once log2(e) is folded into Q, so the fast path overflows and the exact
/// path must answer (the reference's logits stay finite in f64).
#[test]
fn logits_up_to_f32_max_give_the_reference_answer() {
    let mut rng = SplitMix64(77);
    for (case, &mask) in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 9, right: 2 }].iter().enumerate() {
        for mut p in [
            AttentionProblem::new(1, 70, 90, 4, 2, 32, DType::F32),
            AttentionProblem::new(1, 70, 90, 2, 2, 16, DType::BF16),
        ] {
            p.mask = mask;
            let mut t = inputs(&p, 50 + case as u64);
            let scale = p.effective_scale();
            for _ in 0..6 {
                let (i, h) = (rng.next_u64() as usize % p.seq_q, rng.next_u64() as usize % p.num_q_heads);
                let (lo, hi) = mask.key_range(i, p.seq_q, p.seq_kv);
                if lo >= hi {
                    continue;
                }
                let j = lo + rng.next_u64() as usize % (hi - lo);
                let x = rng.next_u64() as usize % p.head_dim;
                // |scale · q · k| = f32::MAX · u, u in [0.01, 1).
                let target = f32::MAX as f64 * (0.01 + 0.99 * rng.next_unit() as f64);
                let a = (target / scale as f64).sqrt() as f32;
                let qi = ((i * p.num_q_heads + h) * p.head_dim) + x;
                let ki = ((j * p.num_kv_heads + h / p.group_size()) * p.head_dim) + x;
                poke(&mut t[0], qi, a);
                poke(&mut t[1], ki, if rng.next_u64().is_multiple_of(2) { a } else { -a });
            }
            let non_finite = check_against_reference(&p, &t, "logits near f32::MAX");
            assert_eq!(non_finite, 0, "{p}: huge finite logits must give finite outputs");
        }
    }
}

/// Keys whose huge logit parts tie exactly: f32 logits (~4e8, ulp 32) lose
/// the O(1) remainders that decide the weights, the reference's f64 logits
/// keep them, so such rows must take the exact path (`HUGE_LOGIT`).
#[test]
fn huge_logits_that_tie_in_f32_follow_the_f64_reference() {
    for dtype in DType::ALL {
        let p = AttentionProblem::new(1, 4, 8, 1, 1, 4, dtype);
        let [mut q, mut k, v] = inputs(&p, 90);
        let huge = if dtype == DType::F16 { 60000.0 } else { (1u32 << 30) as f32 };
        for i in 0..p.seq_q {
            poke(&mut q, i * 4, huge);
        }
        for j in 0..p.seq_kv {
            poke(&mut k, j * 4, 0.5);
        }
        check_against_reference(&p, &[q, k, v], "tied huge logits");
    }
}

/// Every visible logit of one row is -inf: the reference gives NaN for the
/// row (exp(-inf - -inf)); one +inf logit among -inf ones: NaN too; a
/// single -inf logit among finite ones: that key simply gets zero weight.
#[test]
fn infinite_logits_follow_the_reference() {
    let p = AttentionProblem::new(1, 20, 30, 2, 1, 8, DType::F32).with_mask(Mask::Causal);
    let [q, k, v] = inputs(&p, 9);
    let row = |i: usize, h: usize| (i * p.num_q_heads + h) * p.head_dim;
    let key = |j: usize| j * p.head_dim;

    // Row (12, 0): q[0] = +inf and every k[.][0] negative: all -inf.
    let (mut q1, mut k1) = (copy(&q), copy(&k));
    poke(&mut q1, row(12, 0), f32::INFINITY);
    for j in 0..p.seq_kv {
        poke(&mut k1, key(j), -get(&k, key(j)).abs());
    }
    assert!(check_against_reference(&p, &[q1, copy(&k1), copy(&v)], "all -inf") >= p.head_dim);

    // Same row, one key positive: one +inf logit.
    poke(&mut k1, key(5), 0.5);
    let mut q2 = copy(&q);
    poke(&mut q2, row(12, 0), f32::INFINITY);
    assert!(check_against_reference(&p, &[q2, k1, copy(&v)], "one +inf") >= p.head_dim);

    // k[7][3] = -inf: rows with q[.][3] > 0 see one -inf logit, others +inf.
    let mut k3 = copy(&k);
    poke(&mut k3, key(7) + 3, f32::NEG_INFINITY);
    check_against_reference(&p, &[copy(&q), k3, copy(&v)], "one -inf key");
}

/// A NaN or inf in V at a key inside a row's tile but outside its mask
/// window must not reach that row (the P·V kernel sees it with weight 0).
#[test]
fn non_finite_v_outside_a_window_does_not_leak() {
    for dtype in DType::ALL {
        let p = AttentionProblem::new(1, 64, 64, 2, 1, 16, dtype).with_mask(Mask::SlidingWindow { left: 2, right: 0 });
        for x in [f32::NAN, f32::INFINITY] {
            let mut t = inputs(&p, 31);
            poke(&mut t[2], 40 * p.head_dim + 5, x);
            let non_finite = check_against_reference(&p, &t, "non-finite V outside the window");
            // Rows 40..=42 see key 40: column 5 of both heads.
            assert_eq!(non_finite, 3 * 2, "{dtype}");
        }
    }
}

/// Fully masked rows are exact zeros even when every K and V is NaN.
#[test]
fn fully_masked_rows_stay_zero_with_nan_inputs() {
    let p = AttentionProblem::new(1, 50, 20, 1, 1, 8, DType::F32).with_mask(Mask::Causal);
    let [q, mut k, mut v] = inputs(&p, 3);
    for i in 0..k.len() {
        poke(&mut k, i, f32::NAN);
        poke(&mut v, i, f32::NAN);
    }
    for backend in instances() {
        let got = run(&backend, &p, (&q, &k, &v));
        assert!(got[..30 * 8].iter().all(|&x| x == 0.0 && x.is_sign_positive()));
        assert!(got[30 * 8..].iter().all(|x| x.is_nan()));
    }
}

/// The same with K/V heads too long for the head copies (in-place f32 and
/// per-tile copies), where tiles read padding keys past the row's range.
#[test]
fn long_heads_with_nan_and_inf() {
    let skv = VHEAD_MAX / 64 + 5;
    for dtype in DType::ALL {
        let p =
            AttentionProblem::new(1, 3, skv, 2, 1, 64, dtype).with_mask(Mask::SlidingWindow { left: 300, right: 2 });
        let mut t = inputs(&p, 70);
        // Row i sees keys skv - 303 + i ..= skv - 1. A NaN key only row 0
        // sees; an inf value rows 0 and 1 see and row 2's tile holds.
        poke(&mut t[1], (skv - 303) * 64 + 1, f32::NAN);
        poke(&mut t[2], (skv - 302) * 64 + 2, f32::INFINITY);
        // Two heads: row 0 all NaN, row 1 one infinite column.
        assert_eq!(check_against_reference(&p, &t, "long heads"), 2 * (64 + 1), "{dtype}");
    }
}

#[test]
fn exp_propagates_nan() {
    for fma in [false, true] {
        assert!(super::super::exp::fast_exp(f32::NAN, fma).is_nan());
        assert!(super::super::exp::fast_exp2(f32::NAN, fma).is_nan());
    }
}
