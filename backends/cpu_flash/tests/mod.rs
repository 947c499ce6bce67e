//! cpu-flash against the f64 oracle: every available ISA, every mask, GQA,
//! head dims, dtypes, the head-copy and in-place paths; plus the exp math.

use super::exp::{fast_exp, fast_exp2};
use super::*;
use crate::backends::cpu_reference::reference_attention;
use crate::device::Device;
use crate::problem::{AttentionProblem, Mask, ProblemError};
use crate::tensor::Tensor;

mod bf16;
mod kernels;
mod nonfinite;
mod strided;

/// One instance per ISA this CPU can run, plus the bf16 AMX and
/// AVX512-BF16 kernels through their emulators (so their logic runs on
/// every CPU; `bf16.rs` checks that the real ones ran where present).
fn instances() -> Vec<CpuFlash> {
    let mut all: Vec<CpuFlash> = CpuIsa::ALL.into_iter().filter_map(|isa| CpuFlash::with_isa(isa).ok()).collect();
    all.extend([CpuFlash::emulated(isa::Emulated::Tiles), CpuFlash::emulated(isa::Emulated::PairDot)]);
    all.extend(avx512_softmax_emulated());
    all
}

/// The tile emulator with the AVX-512 softmax, where the CPU has AVX-512F/BW/DQ.
fn avx512_softmax_emulated() -> Option<CpuFlash> {
    #[cfg(target_arch = "x86_64")]
    if CpuIsa::Avx512.available() && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512dq") {
        return Some(CpuFlash::emulated(isa::Emulated::TilesAvx512));
    }
    None
}

/// Runs `backend` on `p` into a NaN-poisoned output.
fn run(backend: &CpuFlash, p: &AttentionProblem, (q, k, v): (&Tensor, &Tensor, &Tensor)) -> Vec<f32> {
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
    let b: &dyn AttentionBackend = backend;
    b.forward(p, q, k, v, &mut out).unwrap();
    out.to_f32_vec().unwrap()
}

/// Runs every available ISA on `p` and compares with the f64 oracle.
fn check(p: &AttentionProblem, seed: u64) {
    let q = Tensor::random(p.q_shape(), p.dtype, seed).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, seed + 1).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, seed + 2).unwrap();
    let expected = reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
    let tol = p.dtype.tolerance();
    let isas = instances();
    assert!(isas.iter().any(|b| b.isa() == CpuIsa::Portable), "the portable path always runs");
    for backend in isas {
        let got = run(&backend, p, (&q, &k, &v));
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            assert!(tol.accepts(g as f64, e), "{p} {backend:?}: element {i}: got {g}, expected {e}");
        }
    }
}

/// `(batch, q heads, kv heads)`, `(seq_q, seq_kv)`, head_dim.
fn problem(
    (b, hq, hkv): (usize, usize, usize),
    (sq, skv): (usize, usize),
    d: usize,
    dtype: DType,
    mask: Mask,
) -> AttentionProblem {
    AttentionProblem::new(b, sq, skv, hq, hkv, d, dtype).with_mask(mask)
}

const MASKS: [Mask; 5] = [
    Mask::None,
    Mask::Causal,
    Mask::SlidingWindow { left: 5, right: 0 },
    Mask::SlidingWindow { left: 3, right: 7 },
    Mask::SlidingWindow { left: 0, right: 0 },
];

#[test]
fn seq_one_and_odd_head_dims() {
    for (i, d) in [1, 3, 16, 96, 256].into_iter().enumerate() {
        check(&problem((1, 2, 1), (1, 1), d, DType::F32, Mask::None), 10 + i as u64);
        check(&problem((1, 2, 2), (1, 70), d, DType::F32, Mask::Causal), 20 + i as u64);
        check(&problem((1, 1, 1), (9, 13), d, DType::F32, Mask::None), 30 + i as u64);
    }
}

#[test]
fn every_mask_both_length_orders() {
    let mut seed = 100;
    for mask in MASKS {
        // seq_q > seq_kv leaves the first causal rows fully masked.
        for lens in [(70, 140), (140, 70), (65, 65), (3, 200), (200, 3)] {
            check(&problem((1, 2, 1), lens, 24, DType::F32, mask), seed);
            seed += 3;
        }
    }
}

#[test]
fn gqa_ratios_and_batches() {
    for (i, (hq, hkv)) in [(4, 4), (4, 2), (6, 2), (8, 1)].into_iter().enumerate() {
        check(&problem((2, hq, hkv), (33, 77), 40, DType::F32, Mask::Causal), 200 + i as u64);
    }
}

#[test]
fn common_head_dims_with_several_units_per_task() {
    // d = 64 and 128 take the AVX-512 QK^T kernel's compile-time head
    // copy strides; query blocks and GQA heads share tasks (`SUB`).
    let mut seed = 600;
    for d in [64, 128] {
        for mask in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 70, right: 9 }] {
            for (hq, hkv) in [(2, 2), (4, 1), (6, 2)] {
                check(&problem((1, hq, hkv), (200, 190), d, DType::F32, mask), seed);
                seed += 3;
            }
        }
    }
}

#[test]
fn softcap_and_custom_scale() {
    let mut p = problem((1, 4, 2), (50, 90), 32, DType::F32, Mask::SlidingWindow { left: 20, right: 4 });
    p.softcap = Some(2.5);
    p.scale = Some(1.7);
    check(&p, 300);
    p.mask = Mask::None;
    p.softcap = Some(30.0);
    check(&p, 301);
}

#[test]
fn sixteen_bit_dtypes() {
    for dtype in [DType::F16, DType::BF16] {
        for (i, mask) in MASKS.into_iter().enumerate() {
            check(&problem((1, 4, 2), (40, 75), 48, dtype, mask), 400 + i as u64);
        }
        let mut p = problem((1, 2, 1), (5, 130), 3, dtype, Mask::Causal);
        p.softcap = Some(5.0);
        check(&p, 420);
    }
}

#[test]
fn kv_head_too_large_for_the_head_copy() {
    // seq_kv * dp > VHEAD_MAX: V goes through per-tile copies.
    let skv = VHEAD_MAX / 64 + 5;
    let window = Mask::SlidingWindow { left: 300, right: 2 };
    for dtype in DType::ALL {
        check(&problem((1, 2, 1), (3, skv), 64, dtype, window), 500);
    }
}

#[test]
fn fully_masked_rows_are_zero_not_nan() {
    let p = problem((1, 1, 1), (100, 10), 8, DType::F32, Mask::Causal);
    let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
    for backend in instances() {
        let got = run(&backend, &p, (&q, &k, &v));
        assert!(got[..90 * 8].iter().all(|&x| x == 0.0));
        assert!(got[90 * 8..].iter().all(|x| x.is_finite() && *x != 0.0));
    }
}

#[test]
fn deterministic_across_runs() {
    let p = problem((1, 4, 2), (130, 150), 64, DType::F32, Mask::Causal);
    let q = Tensor::random(p.q_shape(), p.dtype, 5).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 6).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 7).unwrap();
    let a = run(&CpuFlash::new(), &p, (&q, &k, &v));
    let b = run(&CpuFlash::new(), &p, (&q, &k, &v));
    assert_eq!(a, b);
}

#[test]
fn fast_exp_is_accurate() {
    for fma in [false, true] {
        let mut worst = 0.0f64;
        let mut x = -100.0f32;
        while x <= 0.0 {
            let got = fast_exp(x, fma) as f64;
            let want = (x as f64).exp();
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            }
            x += 0.0137;
        }
        assert!(worst < 1e-6, "fma {fma}: worst relative error {worst}");
        assert_eq!(fast_exp(f32::NEG_INFINITY, fma), 0.0);
        assert_eq!(fast_exp(0.0, fma), 1.0);
    }
}

#[test]
fn fast_exp2_is_accurate() {
    for fma in [false, true] {
        let mut worst = 0.0f64;
        let mut x = -140.0f32;
        while x <= 0.0 {
            let got = fast_exp2(x, fma) as f64;
            let want = (x as f64).exp2();
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            }
            x += 0.0093;
        }
        assert!(worst < 1e-6, "fma {fma}: worst relative error {worst}");
        assert_eq!(fast_exp2(f32::NEG_INFINITY, fma), 0.0);
        assert_eq!(fast_exp2(0.0, fma), 1.0);
        assert_eq!(fast_exp2(-126.5, fma), 0.0);
    }
}

#[test]
fn wrong_dtype_is_an_error_not_a_panic() {
    let p = problem((1, 1, 1), (4, 4), 8, DType::F32, Mask::None);
    let q = Tensor::random(p.q_shape(), DType::F16, 1).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
    for backend in instances() {
        let b: &dyn AttentionBackend = &backend;
        assert!(matches!(b.forward(&p, &q, &k, &k, &mut out), Err(BackendError::Problem(ProblemError::DType { .. }))));
    }
}

#[test]
fn a_forced_isa_the_cpu_lacks_is_an_error() {
    for isa in CpuIsa::ALL {
        match CpuFlash::with_isa(isa) {
            Ok(b) => assert_eq!(b.isa(), isa),
            Err(e) => {
                assert!(!isa.available());
                let why = isa.unavailable().expect("an unavailable ISA has a reason");
                assert_eq!(e, IsaUnavailable { wanted: isa, detected: CpuIsa::detect(), why });
                assert!(e.to_string().contains(why), "{e}");
            }
        }
    }
    assert_eq!(CpuFlash::new().isa(), CpuIsa::detect());
    assert!(CpuFlash::with_isa(CpuIsa::Portable).is_ok());
}
