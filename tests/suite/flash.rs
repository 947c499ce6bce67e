//! The fused kernels (`flash-causal`, `flash-noncausal`) and `mqa-replicate`
//! on a GPU, against the f64 oracle: every dtype and head dim, GQA ratios
//! 1..8 and MQA, lengths that are no multiple of any tile, seq 1, batch > 1,
//! seq_q != seq_kv both ways, windows, soft-cap, strided (KV-cache) views,
//! and a 16k-key sequence. Outputs are poisoned with NaN before every run
//! (`run_backend`). Each test asserts how many cases each backend ran, so a
//! backend that silently rejects everything fails.

use crate::common::{compare, device_for, reference, run_backend, Inputs};
use rocmforge::{AttentionBackend, AttentionProblem, DType, DeviceKind, Mask, Registry};
use std::collections::BTreeMap;

const FLASH: [&str; 3] = ["flash-causal", "flash-noncausal", "mqa-replicate"];

fn backend(name: &str) -> &'static dyn AttentionBackend {
    Registry::global().unwrap().get(name).unwrap_or_else(|| panic!("{name} is not registered"))
}

/// Runs `p` on every flash backend that accepts it, checks against the
/// oracle, and counts the runs per backend.
fn run_case(p: &AttentionProblem, seed: u64, ran: &mut BTreeMap<&'static str, usize>) {
    let Some(device) = device_for(DeviceKind::Gpu) else { return };
    let inputs = Inputs::random(p, seed);
    let expected = reference(p, &inputs);
    for name in FLASH {
        let b = backend(name);
        if !Registry::reasons(b, p, &device).is_empty() {
            continue;
        }
        let got = run_backend(b, p, &inputs, &device).unwrap_or_else(|e| panic!("{e}"));
        compare(name, p, &got.to_f32(), &expected).unwrap_or_else(|e| panic!("{e}"));
        *ran.entry(b.name()).or_default() += 1;
    }
}

fn expect_runs(ran: &BTreeMap<&'static str, usize>, at_least: usize) {
    if device_for(DeviceKind::Gpu).is_none() {
        return;
    }
    println!("cases run: {ran:?}");
    for name in FLASH {
        assert!(
            ran.get(name).copied().unwrap_or(0) >= at_least,
            "{name} ran {:?} cases, want >= {at_least}",
            ran.get(name)
        );
    }
}

#[test]
#[ignore = "needs a GPU"]
fn flash_every_dtype_head_dim_and_mask() {
    let mut ran = BTreeMap::new();
    let mut seed = 1;
    for dtype in DType::ALL {
        for d in [32, 64, 96, 128, 256] {
            for mask in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 37, right: 5 }] {
                // 77 and 131 are no multiple of any tile size.
                let p = AttentionProblem::new(2, 77, 131, 4, 2, d, dtype).with_mask(mask);
                run_case(&p, seed, &mut ran);
                seed += 1;
            }
        }
    }
    expect_runs(&ran, 15);
}

#[test]
#[ignore = "needs a GPU"]
fn flash_gqa_ratios_lengths_and_softcap() {
    let mut ran = BTreeMap::new();
    let mut seed = 100;
    for (hq, hkv) in [(4, 4), (4, 2), (6, 3), (8, 1), (16, 2), (8, 8)] {
        for (sq, skv) in [(1, 1), (1, 300), (300, 1), (65, 193), (193, 65), (128, 128)] {
            for mask in [Mask::None, Mask::Causal] {
                let p = AttentionProblem::new(1, sq, skv, hq, hkv, 64, DType::BF16).with_mask(mask);
                run_case(&p, seed, &mut ran);
                seed += 1;
            }
        }
    }
    // Soft-cap with logits far past the cap (x30 inputs): ignoring it fails.
    for dtype in DType::ALL {
        let mut p = AttentionProblem::new(1, 50, 90, 4, 1, 128, dtype).with_mask(Mask::Causal);
        p.softcap = Some(5.0);
        p.scale = Some(2.0);
        run_case(&p, seed, &mut ran);
        seed += 1;
    }
    expect_runs(&ran, 12);
}

/// A long KV sequence: the last 16 queries of a 16384-key causal problem
/// against the oracle, and the full 16k x 16k problem against gpu-unfused.
#[test]
#[ignore = "needs a GPU"]
fn flash_16k_sequence() {
    let Some(device) = device_for(DeviceKind::Gpu) else { return };
    let mut ran = BTreeMap::new();
    let p = AttentionProblem::new(1, 16, 16384, 2, 1, 128, DType::BF16).with_mask(Mask::Causal);
    run_case(&p, 7, &mut ran);
    for name in ["flash-causal", "mqa-replicate"] {
        assert_eq!(ran.get(name), Some(&1), "{name} did not run the 16k case: {ran:?}");
    }
    let full = AttentionProblem::new(1, 16384, 16384, 2, 1, 64, DType::F16).with_mask(Mask::Causal);
    let inputs = Inputs::random(&full, 8);
    let flash = run_backend(backend("flash-causal"), &full, &inputs, &device).unwrap().to_f32();
    // One head's f32 scores are 1 GiB here: give gpu-unfused room for them.
    let unfused = rocmforge::backends::gpu_unfused::GpuUnfused::with_workspace_cap(4 << 30);
    let unfused = run_backend(&unfused, &full, &inputs, &device).unwrap().to_f32();
    let tol = DType::F16.tolerance();
    let bad = flash.iter().zip(&unfused).filter(|(a, b)| !tol.accepts(**a as f64, **b as f64)).count();
    assert_eq!(bad, 0, "flash-causal and gpu-unfused disagree on {bad} of {} elements at 16k", flash.len());
}
