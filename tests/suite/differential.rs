//! Differential tests: every registered backend that accepts a problem is
//! compared with the f64 oracle (`reference_attention`) on the same inputs.
//!
//! Nothing here names a backend except the registration test: backends are
//! found by iterating the registry, each on the device of its kind, so
//! backends merged later join with no edits. Each test runs twice through
//! `cpu_and_gpu!`: `<test>::cpu` on the CPU backends, and `<test>::gpu` on
//! the GPU backends, ignored unless asked for ("needs a GPU").
//!
//! NaN/Inf/huge inputs are in `nonfinite`; the oracle's own check against an
//! independent implementation is in `oracle`.

use crate::common::{
    accepting, backend_targets, check_backend, check_output_with, cpu_and_gpu, reference, run_backend, unflatten,
    Inputs,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rocmforge::dtype::Tolerance;
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, DeviceKind, Mask, Registry, Unsupported};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Head dims the random problems draw from: odd and tiny ones included.
const HEAD_DIMS: [usize; 9] = [1, 3, 8, 16, 32, 64, 96, 128, 256];

/// Upper bound on batch * q_heads * seq_q * seq_kv * head_dim per random case,
/// so that the oracle and every CPU backend stay fast in debug builds.
const MAX_WORK: usize = 1 << 19;

/// Cases per run; `PROPTEST_CASES` overrides it as it does for `proptest!`.
const DEFAULT_CASES: u32 = 64;

/// Every runnable backend must have run at least this many random cases
/// (fewer when PROPTEST_CASES asks for a short run, at least 1).
const MIN_RUNS_PER_BACKEND: u32 = 16;

/// Draws allowed when topping up a backend that the shared cases missed.
const TOP_UP_DRAWS: usize = 2000;

fn work(p: &AttentionProblem) -> usize {
    p.batch * p.num_q_heads * p.seq_q * p.seq_kv * p.head_dim
}

/// Halves the longer sequence until the case fits `MAX_WORK`. Shapes stay
/// valid and keep their seq_q/seq_kv ordering, so the mix of seq_q < seq_kv and
/// seq_q > seq_kv survives.
fn fit_budget(mut p: AttentionProblem) -> AttentionProblem {
    while work(&p) > MAX_WORK {
        if p.seq_q >= p.seq_kv && p.seq_q > 1 {
            p.seq_q = p.seq_q.div_ceil(2);
        } else if p.seq_kv > 1 {
            p.seq_kv = p.seq_kv.div_ceil(2);
        } else {
            break; // batch * heads * head_dim alone is far below the budget
        }
    }
    p
}

fn seq_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(1usize), 6 => 1usize..=70]
}

fn window_side() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 0usize..=8, 0usize..=90]
}

fn mask() -> impl Strategy<Value = Mask> {
    prop_oneof![
        Just(Mask::None),
        Just(Mask::Causal),
        (window_side(), window_side()).prop_map(|(left, right)| Mask::SlidingWindow { left, right }),
    ]
}

/// A valid random problem and the seed of its inputs.
pub fn problem() -> impl Strategy<Value = (AttentionProblem, u64)> {
    (
        (1usize..=2, seq_len(), seq_len()),
        (1usize..=3, 1usize..=4, proptest::sample::select(HEAD_DIMS.to_vec())),
        mask(),
        proptest::option::of(1.0f32..50.0),
        proptest::option::of(0.05f32..1.0),
        proptest::sample::select(DType::ALL.to_vec()),
        any::<u64>(),
    )
        .prop_map(|((batch, seq_q, seq_kv), (kv_heads, ratio, head_dim), mask, softcap, scale, dtype, seed)| {
            let mut p = AttentionProblem::new(batch, seq_q, seq_kv, kv_heads * ratio, kv_heads, head_dim, dtype)
                .with_mask(mask);
            p.softcap = softcap;
            p.scale = scale;
            (fit_budget(p), seed)
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig { cases: cases(), source_file: Some(file!()), ..ProptestConfig::default() }
}

/// Runs one case on one backend, counting it.
fn run_case(
    backend: &dyn AttentionBackend,
    device: &Device,
    p: &AttentionProblem,
    seed: u64,
    runs: &RefCell<BTreeMap<&'static str, u32>>,
) -> Result<(), String> {
    let inputs = Inputs::random(p, seed);
    let expected = reference(p, &inputs);
    check_backend(backend, p, &inputs, device, &expected)?;
    *runs.borrow_mut().entry(backend.name()).or_default() += 1;
    Ok(())
}

/// Random problems on every backend of `kind`; then every such backend must
/// have run at least `MIN_RUNS_PER_BACKEND` cases, named in the failure.
/// A backend whose capabilities the shared cases rarely hit (a decode-only
/// backend, say) gets problems drawn until it has its share.
fn random_problems_match_reference(kind: DeviceKind) {
    let targets = backend_targets(kind);
    let runs: RefCell<BTreeMap<&'static str, u32>> = RefCell::default();
    let mut runner = TestRunner::new(proptest_config());
    let result = runner.run(&problem(), |(p, seed)| {
        prop_assert!(p.validate().is_ok(), "strategy made an invalid problem {p}: {:?}", p.validate());
        for (backend, device) in &targets {
            if Registry::reasons(*backend, &p, device).is_empty() {
                run_case(*backend, device, &p, seed, &runs).map_err(TestCaseError::fail)?;
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let wanted = MIN_RUNS_PER_BACKEND.min(cases() / 4).max(1);
    let mut runner = TestRunner::new(proptest_config());
    for (backend, device) in &targets {
        let mut draws = 0;
        while runs.borrow().get(backend.name()).copied().unwrap_or(0) < wanted && draws < TOP_UP_DRAWS {
            draws += 1;
            let (p, seed) = problem().new_tree(&mut runner).expect("strategy").current();
            if Registry::reasons(*backend, &p, device).is_empty() {
                run_case(*backend, device, &p, seed, &runs).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    println!("differential runs per {kind} backend: {:?}", runs.borrow());
    let short: Vec<String> = targets
        .iter()
        .map(|(b, _)| (b.name(), runs.borrow().get(b.name()).copied().unwrap_or(0)))
        .filter(|&(_, n)| n < wanted)
        .map(|(name, n)| format!("{name} ran {n}"))
        .collect();
    assert!(short.is_empty(), "every {kind} backend must run at least {wanted} random cases: {}", short.join(", "));
}

/// Runs `body` on every backend of `kind` that accepts each problem, and
/// fails unless every backend of `kind` ran at least one of them, so a
/// fixed-case test can never pass by running nothing.
fn for_each_backend(
    kind: DeviceKind,
    problems: &[AttentionProblem],
    mut body: impl FnMut(&dyn AttentionBackend, &Device, &AttentionProblem),
) {
    let targets = backend_targets(kind);
    let mut ran: BTreeMap<&'static str, usize> = targets.iter().map(|(b, _)| (b.name(), 0)).collect();
    for p in problems {
        assert!(p.validate().is_ok(), "test problem is invalid: {p}");
        for (backend, device) in accepting(&targets, p) {
            body(backend, device, p);
            *ran.entry(backend.name()).or_default() += 1;
        }
    }
    // A backend whose only objection to every problem is the mask family
    // (flash-noncausal in a fully-masked-rows test) or its declared seq_q
    // limit (flash-decode on prefill-shaped cases) cannot apply: noted, not failed.
    let mask_only = |name: &str| {
        let b = targets.iter().find(|(b, _)| b.name() == name);
        b.is_some_and(|(b, d)| {
            problems.iter().all(|p| {
                let r = Registry::reasons(*b, p, d);
                !r.is_empty() && r.iter().all(|r| matches!(r, Unsupported::Mask { .. } | Unsupported::SeqQ { .. }))
            })
        })
    };
    let idle: Vec<&str> = ran.iter().filter(|(name, &n)| n == 0 && !mask_only(name)).map(|(name, _)| *name).collect();
    assert!(idle.is_empty(), "{kind} backends that accepted none of the problems: {idle:?}");
}

fn all_dtypes(p: AttentionProblem) -> Vec<AttentionProblem> {
    DType::ALL.iter().map(|&dtype| AttentionProblem { dtype, ..p.clone() }).collect()
}

fn fully_masked_rows_are_exact_zeros(kind: DeviceKind) {
    // seq_q > seq_kv with bottom-right alignment: the first rows see no key.
    let mut problems = all_dtypes(AttentionProblem::new(2, 7, 3, 4, 2, 32, DType::F32).with_mask(Mask::Causal));
    problems.extend(all_dtypes(
        AttentionProblem::new(1, 6, 3, 2, 1, 32, DType::F32).with_mask(Mask::SlidingWindow { left: 1, right: 0 }),
    ));
    for_each_backend(kind, &problems, |backend, device, p| {
        let inputs = Inputs::random(p, 11);
        let expected = reference(p, &inputs);
        let out = check_backend(backend, p, &inputs, device, &expected).unwrap_or_else(|e| panic!("{e}"));
        let out = out.to_f32();
        let mut masked = 0;
        for (i, &x) in out.iter().enumerate() {
            let [_, s, _, _] = unflatten(p, i);
            let (lo, hi) = p.mask.key_range(s, p.seq_q, p.seq_kv);
            if lo >= hi {
                masked += 1;
                assert!(
                    x == 0.0,
                    "backend {} on {p}: fully masked row {s} has {x} at {:?}",
                    backend.name(),
                    unflatten(p, i)
                );
            }
        }
        assert!(masked > 0, "test problem {p} has no fully masked row");
    });
}

fn decode_one_query_long_cache(kind: DeviceKind) {
    let mut problems = Vec::new();
    for mask in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 64, right: 0 }] {
        problems.extend(all_dtypes(AttentionProblem::new(2, 1, 257, 8, 2, 64, DType::F32).with_mask(mask)));
    }
    for_each_backend(kind, &problems, |backend, device, p| {
        let inputs = Inputs::random(p, 257);
        let expected = reference(p, &inputs);
        check_backend(backend, p, &inputs, device, &expected).unwrap_or_else(|e| panic!("{e}"));
    });
}

fn large_logits_stay_finite_and_accurate(kind: DeviceKind) {
    // q and k scaled by 30 make logits of several hundred: exp overflows f32
    // unless the softmax subtracts the running maximum. A correct backend
    // that accumulates q.k in f32 still carries a logit error of about
    // sqrt(head_dim) * 2^-24 * |logit|, which alone exceeds the f32 tolerance
    // here, so the absolute bound grows by 4e-7 * max|logit| * max|v|
    // (about 1e-4 for f32 on this problem). Overflow, a missing max
    // subtraction or a wrong mask still fail by orders of magnitude; the
    // random differential test covers accuracy at ordinary magnitudes.
    let mut problems = Vec::new();
    for mask in [Mask::None, Mask::Causal] {
        problems.extend(all_dtypes(AttentionProblem::new(1, 33, 47, 4, 2, 32, DType::F32).with_mask(mask)));
    }
    for_each_backend(kind, &problems, |backend, device, p| {
        let inputs = Inputs::random(p, 30).with_qk_scaled(30.0);
        let expected = reference(p, &inputs);
        assert!(expected.iter().all(|x| x.is_finite()), "oracle overflowed on {p}");
        let out = run_backend(backend, p, &inputs, device).unwrap_or_else(|e| panic!("{e}"));
        let out = out.to_f32();
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            panic!("backend {} on {p} (q, k x30): non-finite {} at {:?}", backend.name(), out[i], unflatten(p, i));
        }
        let base = p.dtype.tolerance();
        let tol = Tolerance { abs: base.abs + 4e-7 * max_abs_logit(p, &inputs) * max_abs(&inputs.v), rel: base.rel };
        check_output_with(backend.name(), p, &out, &expected, tol).unwrap_or_else(|e| panic!("q, k x30: {e}"));
    });
}

/// Soft-cap with logits far past the cap: q and k scaled by 12 give logits
/// up to a few hundred against a cap of 5, so a backend that skips the cap
/// (or applies it before the scale) fails by far more than the tolerance.
/// The test first proves that about itself, on the oracle.
fn softcap_with_large_logits(kind: DeviceKind) {
    let mut problems = Vec::new();
    for mask in [Mask::None, Mask::Causal] {
        let mut p = AttentionProblem::new(1, 17, 23, 4, 2, 32, DType::F32).with_mask(mask);
        p.softcap = Some(5.0);
        problems.extend(all_dtypes(p));
    }
    for_each_backend(kind, &problems, |backend, device, p| {
        let inputs = Inputs::random(p, 12).with_qk_scaled(12.0);
        assert!(max_abs_logit(p, &inputs) > 40.0, "logits too small to test the cap");
        let expected = reference(p, &inputs);
        let uncapped = reference(&AttentionProblem { softcap: None, ..p.clone() }, &inputs);
        let gap = expected.iter().zip(&uncapped).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(gap > 100.0 * p.dtype.tolerance().abs, "ignoring the cap would pass on {p}: gap {gap}");
        let out = run_backend(backend, p, &inputs, device).unwrap_or_else(|e| panic!("{e}"));
        // Capped logits are at most 5, so the ordinary tolerance holds.
        check_output_with(backend.name(), p, &out.to_f32(), &expected, p.dtype.tolerance())
            .unwrap_or_else(|e| panic!("softcap 5 on logits ~{:.0}: {e}", max_abs_logit(p, &inputs)));
    });
}

fn max_abs(t: &rocmforge::Tensor) -> f64 {
    t.to_f32_vec().unwrap().iter().fold(0.0, |m, &x| m.max(x.abs() as f64))
}

/// Largest |scale * q.k| over every (query, key) pair of `p`, masked or not.
fn max_abs_logit(p: &AttentionProblem, inputs: &Inputs) -> f64 {
    let (q, k) = (inputs.q.to_f32_vec().unwrap(), inputs.k.to_f32_vec().unwrap());
    let (d, hq, hkv) = (p.head_dim, p.num_q_heads, p.num_kv_heads);
    let mut max = 0.0f64;
    for b in 0..p.batch {
        for h in 0..hq {
            for i in 0..p.seq_q {
                let qo = ((b * p.seq_q + i) * hq + h) * d;
                for j in 0..p.seq_kv {
                    let ko = ((b * p.seq_kv + j) * hkv + h / p.group_size()) * d;
                    let dot: f64 = (0..d).map(|x| q[qo + x] as f64 * k[ko + x] as f64).sum();
                    max = max.max(dot.abs());
                }
            }
        }
    }
    max * p.effective_scale() as f64
}

/// K/V with each KV head repeated `group` times, so the MHA problem computes
/// what the GQA problem should.
fn repeat_kv_heads(t: &rocmforge::Tensor, group: usize) -> rocmforge::Tensor {
    let [b, s, h, d] = t.shape();
    let src = t.to_f32_vec().unwrap();
    let mut out = Vec::with_capacity(src.len() * group);
    for row in src.chunks(h * d) {
        for head in 0..h * group {
            let kv = head / group;
            out.extend_from_slice(&row[kv * d..(kv + 1) * d]);
        }
    }
    rocmforge::Tensor::from_f32([b, s, h * group, d], t.dtype(), &out).unwrap()
}

fn gqa_equals_mha_with_repeated_kv_heads(kind: DeviceKind) {
    let mut problems = Vec::new();
    for mask in [Mask::None, Mask::Causal] {
        problems.extend(all_dtypes(AttentionProblem::new(2, 9, 13, 8, 2, 32, DType::F32).with_mask(mask)));
    }
    for_each_backend(kind, &problems, |backend, device, gqa| {
        let group = gqa.group_size();
        let mha = AttentionProblem { num_kv_heads: gqa.num_q_heads, ..gqa.clone() };
        let inputs = Inputs::random(gqa, 4);
        let repeated = Inputs {
            q: inputs.q.to_device(&Device::Cpu).unwrap(),
            k: repeat_kv_heads(&inputs.k, group),
            v: repeat_kv_heads(&inputs.v, group),
        };
        // The oracle itself must agree that GQA is MHA over repeated heads.
        let expected = reference(&mha, &repeated);
        let gqa_expected = reference(gqa, &inputs);
        let diff = expected.iter().zip(&gqa_expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-12, "oracle: GQA and repeated MHA differ by {diff} on {gqa}");
        check_backend(backend, gqa, &inputs, device, &expected).unwrap_or_else(|e| panic!("GQA: {e}"));
        if Registry::reasons(backend, &mha, device).is_empty() {
            check_backend(backend, &mha, &repeated, device, &expected).unwrap_or_else(|e| panic!("repeated MHA: {e}"));
        }
    });
}

/// Backends declared deterministic give bit-identical outputs run after run,
/// and, on the CPU, whatever the size of the thread pool (1, 2 and 3
/// threads, so work is split differently each time).
fn deterministic_backends_are_bit_identical(kind: DeviceKind) {
    let mut problems = Vec::new();
    for mask in [Mask::None, Mask::Causal] {
        problems.extend(all_dtypes(AttentionProblem::new(2, 37, 53, 4, 2, 64, DType::F32).with_mask(mask)));
    }
    let pools: Vec<rayon::ThreadPool> =
        [1, 2, 3].iter().map(|&n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()).collect();
    let mut checked = 0;
    for_each_backend(kind, &problems, |backend, device, p| {
        if !backend.capabilities().deterministic {
            println!("note: {} is not declared deterministic; not checked", backend.name());
            return;
        }
        let inputs = Inputs::random(p, 99);
        let expected = reference(p, &inputs);
        let first = check_backend(backend, p, &inputs, device, &expected).unwrap_or_else(|e| panic!("{e}"));
        for pool in &pools {
            let again = pool
                .install(|| check_backend(backend, p, &inputs, device, &expected))
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(i) = first.as_bytes().iter().zip(again.as_bytes()).position(|(a, b)| a != b) {
                let i = i / p.dtype.size_in_bytes();
                panic!(
                    "backend {} declares deterministic but runs on {p} differ ({} threads vs the default pool) \
                     at {:?}: {} vs {}",
                    backend.name(),
                    pool.current_num_threads(),
                    unflatten(p, i),
                    first.get_f32(i),
                    again.get_f32(i)
                );
            }
        }
        checked += 1;
    });
    assert!(checked > 0, "no deterministic {kind} backend was checked");
}

fn forward_rejects_wrong_output_shape(kind: DeviceKind) {
    let p = AttentionProblem::new(1, 4, 5, 2, 1, 32, DType::F32);
    for_each_backend(kind, &[p], |backend, device, p| {
        let inputs = Inputs::random(p, 5);
        let up = |t: &rocmforge::Tensor| t.to_device(device).unwrap();
        let (q, k, v) = (up(&inputs.q), up(&inputs.k), up(&inputs.v));
        let mut out = rocmforge::Tensor::nan([1, 4, 2, 9], p.dtype, device).unwrap();
        let result = backend.forward(p, &q, &k, &v, &mut out);
        assert!(result.is_err(), "backend {} accepted an output of shape [1, 4, 2, 9] for {p}", backend.name());
    });
}

cpu_and_gpu!(
    random_problems_match_reference,
    fully_masked_rows_are_exact_zeros,
    decode_one_query_long_cache,
    large_logits_stay_finite_and_accurate,
    softcap_with_large_logits,
    gqa_equals_mha_with_repeated_kv_heads,
    deterministic_backends_are_bit_identical,
    forward_rejects_wrong_output_shape,
);

/// Guards against the linker dropping a backend: `inventory` registrations in
/// an unreferenced object file can silently disappear.
#[test]
fn expected_backends_are_registered() {
    let names = Registry::global().expect("registry").names();
    let mut expected = vec!["cpu-reference", "cpu-flash"];
    // Integration tests are compiled with the package's features.
    if cfg!(any(feature = "cuda", feature = "rocm")) {
        expected.push("gpu-unfused");
    }
    let missing: Vec<&str> = expected.iter().copied().filter(|n| !names.contains(n)).collect();
    assert!(missing.is_empty(), "backends missing from the registry: {missing:?} (registered: {names:?})");
}

#[test]
fn backend_names_are_kebab_case() {
    let names = Registry::global().expect("registry").names();
    assert!(names.contains(&"cpu-reference"));
    for name in names {
        let ok = !name.is_empty()
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        assert!(ok, "backend name '{name}' is not kebab-case (it is used in {})", rocmforge::BACKEND_ENV);
    }
}

/// Says, in the normal output of a run with `--nocapture` and always through
/// the ignored count, whether the GPU tests could run here; fails when
/// `ROCMFORGE_REQUIRE_GPU` is set and there is no GPU.
#[test]
fn gpu_availability() {
    match crate::common::first_gpu() {
        Ok(d) => println!("GPU {} present: run the tests marked 'needs a GPU' with --include-ignored", d.label()),
        Err(why) if crate::common::require_gpu() => {
            panic!("{}=1 but there is no GPU: {why}", crate::common::REQUIRE_GPU_ENV)
        }
        Err(why) => println!("no GPU ({why}): the tests marked 'needs a GPU' are ignored"),
    }
}
