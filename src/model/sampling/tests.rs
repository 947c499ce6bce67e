use super::*;

#[test]
fn pcg32_matches_the_reference_generator() {
    // pcg32-demo of the PCG reference implementation: seed 42, stream 54.
    let mut g = Pcg32::new(42, 54);
    let got: Vec<u32> = (0..6).map(|_| g.next_u32()).collect();
    assert_eq!(got, [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]);
    let mut g = Pcg32::new(7, 0);
    for _ in 0..10_000 {
        let u = g.next_f64();
        assert!((0.0..1.0).contains(&u));
    }
}

#[test]
fn arguments_are_validated() {
    let s = |temperature, top_k, top_p| Sampling { temperature, top_k, top_p, seed: 0 };
    assert_eq!(s(0.0, None, None).validate(), Ok(()));
    assert_eq!(s(0.8, Some(5), Some(0.9)).validate(), Ok(()));
    assert_eq!(s(0.8, None, Some(1.0)).validate(), Ok(()));
    assert_eq!(s(-0.1, None, None).validate(), Err(SamplingError::Temperature(-0.1)));
    assert!(matches!(s(f64::NAN, None, None).validate(), Err(SamplingError::Temperature(_))));
    assert!(matches!(s(f64::INFINITY, None, None).validate(), Err(SamplingError::Temperature(_))));
    assert_eq!(s(1.0, Some(0), None).validate(), Err(SamplingError::TopK));
    for p in [0.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(s(1.0, None, Some(p)).validate(), Err(SamplingError::TopP(_))), "{p}");
    }
    assert_eq!(s(0.0, Some(3), None).validate(), Err(SamplingError::NeedsTemperature));
    assert_eq!(s(0.0, None, Some(0.5)).validate(), Err(SamplingError::NeedsTemperature));
}

#[test]
fn greedy_is_the_argmax_and_nan_never_wins() {
    let mut g = Pcg32::new(1, 1);
    let greedy = Sampling::greedy();
    assert_eq!(greedy.pick(&[0.5, 3.0, f32::NAN, 3.0], &mut g), Ok(1));
    assert_eq!(greedy.pick(&[f32::NAN, -1.0], &mut g), Ok(1));
    assert_eq!(greedy.pick(&[f32::NAN, f32::NAN], &mut g), Err(SamplingError::AllNaN));
    let sampled = Sampling { temperature: 1.0, ..Sampling::default() };
    assert_eq!(sampled.pick(&[f32::NAN], &mut g), Err(SamplingError::AllNaN));
    // Nothing above -inf: no greedy token (the argmax alone would say the last id).
    let neg = f32::NEG_INFINITY;
    assert_eq!(greedy_token(&[f32::NAN; 96]), Err(SamplingError::AllNaN));
    assert_eq!(greedy_token(&[neg, f32::NAN, neg]), Err(SamplingError::NoFinite { neg_inf: 2, nan: 1 }));
    assert_eq!(greedy.pick(&[neg, neg], &mut g), Err(SamplingError::NoFinite { neg_inf: 2, nan: 0 }));
    assert_eq!(
        SamplingError::NoFinite { neg_inf: 2, nan: 1 }.to_string(),
        "every logit is -inf or NaN (2 -inf, 1 NaN): no token to pick"
    );
    // +inf wins (the first one), as torch.argmax; one finite logit is enough.
    assert_eq!(greedy_token(&[1.0, f32::INFINITY, f32::NAN, f32::INFINITY]), Ok(1));
    assert_eq!(greedy_token(&[f32::NAN, neg, -1e30, neg]), Ok(2));
    // Greedy draws nothing: the generator is untouched.
    let (mut a, b) = (Pcg32::new(3, 0), Pcg32::new(3, 0));
    greedy.pick(&[1.0, 2.0], &mut a).unwrap();
    assert_eq!(a.state, b.state);
}

/// Counts of each id over `n` draws.
fn histogram(s: &Sampling, logits: &[f32], n: usize) -> Vec<usize> {
    let mut g = s.rng_for(0);
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[s.pick(logits, &mut g).unwrap() as usize] += 1;
    }
    counts
}

/// Asserts every count is within 5 standard deviations of `n × p`.
fn assert_frequencies(counts: &[usize], probs: &[f64], n: usize) {
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1e-9);
        let z = (c as f64 - n as f64 * p) / sd;
        assert!(z.abs() < 5.0 || (p == 0.0 && c == 0), "id {i}: {c} of {n}, expected p = {p:.4} (z = {z:.1})");
    }
}

/// softmax(logits / t) over `keep`, computed directly (zeros elsewhere).
fn softmax(logits: &[f32], t: f64, keep: &[usize]) -> Vec<f64> {
    let z: f64 = keep.iter().map(|&i| (logits[i] as f64 / t).exp()).sum();
    (0..logits.len()).map(|i| if keep.contains(&i) { (logits[i] as f64 / t).exp() / z } else { 0.0 }).collect()
}

#[test]
fn draws_follow_the_tempered_softmax() {
    let logits = [1.0, 2.0, 0.5, f32::NAN, f32::NEG_INFINITY, -1.0];
    let n = 200_000;
    for t in [0.7, 1.0, 2.5] {
        let s = Sampling { temperature: t, seed: 11, ..Sampling::default() };
        let counts = histogram(&s, &logits, n);
        assert_eq!((counts[3], counts[4]), (0, 0), "NaN and -inf are never drawn");
        assert_frequencies(&counts, &softmax(&logits, t, &[0, 1, 2, 5]), n);
    }
}

#[test]
fn top_k_and_top_p_cut_the_tail() {
    let n = 100_000;
    let logits = [1.0, 2.0, 0.5, 2.0, -1.0];
    // top-k 2: the two 2.0s (ids 1 and 3), equally.
    let s = Sampling { temperature: 1.0, top_k: Some(2), ..Sampling::default() };
    assert_frequencies(&histogram(&s, &logits, n), &softmax(&logits, 1.0, &[1, 3]), n);
    // top-k 3 breaks the tie at 1.0 vs 0.5 by value, then keeps ids 1, 3, 0.
    let s = Sampling { temperature: 1.0, top_k: Some(3), ..Sampling::default() };
    assert_frequencies(&histogram(&s, &logits, n), &softmax(&logits, 1.0, &[0, 1, 3]), n);
    // top-p on probabilities 0.5, 0.3, 0.15, 0.05.
    let probs = [0.15f64, 0.5, 0.05, 0.3];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
    for (p, keep) in [(0.75, &[1, 3][..]), (0.81, &[0, 1, 3][..]), (0.3, &[1][..]), (1.0, &[0, 1, 2, 3][..])] {
        let s = Sampling { temperature: 1.0, top_p: Some(p), seed: 5, ..Sampling::default() };
        let counts = histogram(&s, &logits, n);
        assert_frequencies(&counts, &softmax(&logits, 1.0, keep), n);
    }
    // Both: top-k first, then top-p of what is left (renormalized).
    let s = Sampling { temperature: 1.0, top_k: Some(3), top_p: Some(0.6), seed: 9 };
    // Kept by k: 0.5, 0.3, 0.15 (sum 0.95): 0.5/0.95 < 0.6 <= 0.8/0.95, so ids 1 and 3.
    assert_frequencies(&histogram(&s, &logits, n), &softmax(&logits, 1.0, &[1, 3]), n);
}

#[test]
fn limits_and_infinities() {
    let logits = [0.0, f32::INFINITY, 3.0, f32::INFINITY];
    let s = Sampling { temperature: 0.5, ..Sampling::default() };
    let counts = histogram(&s, &logits, 20_000);
    assert_eq!(counts[0] + counts[2], 0, "+inf logits take all the probability");
    assert_frequencies(&counts, &[0.0, 0.5, 0.0, 0.5], 20_000);
    let s = Sampling { temperature: 1.0, top_k: Some(1), ..Sampling::default() };
    assert_eq!(histogram(&s, &[0.3, 0.9, 0.8], 1000), [0, 1000, 0], "top-k 1 is greedy");
    let s = Sampling { temperature: 1e-4, ..Sampling::default() };
    assert_eq!(histogram(&s, &[0.3, 0.9, 0.8], 1000), [0, 1000, 0], "a tiny temperature is greedy");
    let s = Sampling { temperature: 1.0, ..Sampling::default() };
    assert_frequencies(&histogram(&s, &[f32::NEG_INFINITY; 4], 8000), &[0.25; 4], 8000);
}

#[test]
fn a_seed_fixes_each_sequence_s_draws() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
    let s = Sampling { temperature: 1.3, top_p: Some(0.95), seed: 1234, ..Sampling::default() };
    let run = |s: &Sampling, stream: usize| {
        let mut g = s.rng_for(stream);
        (0..64).map(|_| s.pick(&logits, &mut g).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(&s, 0), run(&s, 0));
    assert_ne!(run(&s, 0), run(&s, 1), "sequences have their own streams");
    assert_ne!(run(&s, 0), run(&Sampling { seed: 1235, ..s }, 0), "another seed, other tokens");
}
