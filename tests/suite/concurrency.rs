//! Concurrent forwards: several threads run attention at once through every
//! runnable backend (the CPU ones in CI, the GPU ones on a GPU machine), each
//! on its own problems, and every result must match the f64 oracle. Scratch
//! memory is per call (CPU) or leased from the device's arena (GPU), so
//! threads neither trample each other's workspace nor serialize on it.
//! Also checks strided views: a KV-cache prefix read in place.

use crate::common::{
    assert_matches_reference, backend_targets, check_output, cpu_and_gpu, reference, run_backend, Inputs,
};
use rocmforge::problem::TensorRole;
use rocmforge::{AttentionProblem, DType, Device, DeviceKind, Layout, Mask, Tensor};

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 3;

fn concurrent_forwards_match_the_reference(kind: DeviceKind) {
    let targets = backend_targets(kind);
    assert!(!targets.is_empty());
    let mut ran = Vec::new();
    for (backend, device) in &targets {
        let probe = AttentionProblem::new(1, 33, 47, 4, 2, 16, DType::F32);
        if !rocmforge::Registry::reasons(*backend, &probe, device).is_empty() {
            continue;
        }
        // Compile and load the kernels first, on one thread: under
        // compute-sanitizer racecheck, launches from other threads while a
        // module loads were lost ("failure to track a kernel launch") and
        // the run hung (H100, 2026-11-22, docs/gpu-runs/...-racecheck-
        // concurrency.log). The concurrent part below is about forwards.
        for dtype in [DType::F32, DType::BF16] {
            let p = AttentionProblem::new(1, 17, 26, 4, 2, 16, dtype).with_mask(Mask::Causal);
            run_backend(*backend, &p, &Inputs::random(&p, 1), device).unwrap_or_else(|e| panic!("{e}"));
        }
        // Per-backend progress, so a slow or stuck backend (e.g. under a
        // sanitizer) is named in the log.
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (backend, device) = (*backend, device.clone());
                scope.spawn(move || {
                    for c in 0..CALLS_PER_THREAD {
                        // Different sizes per thread, so workspaces differ too.
                        let seq = 17 + 13 * t + 5 * c;
                        let dtype = [DType::F32, DType::BF16][(t + c) % 2];
                        let p = AttentionProblem::new(1 + t % 2, seq, seq + 9, 4, 2, 16, dtype).with_mask(Mask::Causal);
                        let inputs = Inputs::random(&p, (100 * t + c) as u64);
                        let got = run_backend(backend, &p, &inputs, &device).unwrap_or_else(|e| panic!("{e}"));
                        check_output(backend.name(), &p, &got.to_f32(), &reference(&p, &inputs))
                            .unwrap_or_else(|e| panic!("thread {t} call {c}: {e}"));
                    }
                });
            }
        });
        println!("concurrent forwards: {} done in {:.1} s", backend.name(), started.elapsed().as_secs_f64());
        ran.push(backend.name());
    }
    assert!(!ran.is_empty(), "no {kind} backend took the probe problem");
    let cpu_pair = ran.contains(&"cpu-reference") && ran.contains(&"cpu-flash");
    assert!(kind == DeviceKind::Gpu || cpu_pair, "ran: {ran:?}");
    println!("concurrent forwards ran on: {ran:?}");
}

/// A KV cache of capacity 40 holding 23 positions, read through strided K/V
/// views with no copy, by every backend that accepts strides; compared with
/// the oracle on a contiguous copy of the same prefix.
fn kv_cache_prefix_views_match_the_reference(kind: DeviceKind) {
    let (batch, cap, len, hkv, d) = (2, 40, 23, 2, 16);
    let mut p = AttentionProblem::new(batch, 5, len, 4, hkv, d, DType::F32).with_mask(Mask::Causal);
    let cache_strides = [cap * hkv * d, hkv * d, d];
    p.strides.set(TensorRole::K, Some(cache_strides));
    p.strides.set(TensorRole::V, Some(cache_strides));
    let k_cache = Tensor::random([batch, cap, hkv, d], p.dtype, 5).unwrap();
    let v_cache = Tensor::random([batch, cap, hkv, d], p.dtype, 6).unwrap();
    // The same prefix, copied contiguous, for the oracle.
    let prefix = |t: &Tensor| {
        let all = t.to_f32_vec().unwrap();
        let mut out = Vec::new();
        for b in 0..batch {
            out.extend_from_slice(&all[b * cap * hkv * d..][..len * hkv * d]);
        }
        Tensor::from_f32([batch, len, hkv, d], p.dtype, &out).unwrap()
    };
    let contiguous = AttentionProblem { strides: Default::default(), ..p.clone() };
    let q = Tensor::random(p.q_shape(), p.dtype, 4).unwrap();
    let inputs = Inputs::from_tensors(q, prefix(&k_cache), prefix(&v_cache));
    let expected = reference(&contiguous, &inputs);
    let mut ran = Vec::new();
    for (backend, device) in backend_targets(kind) {
        if !rocmforge::Registry::reasons(backend, &p, &device).is_empty() {
            continue;
        }
        let up = |t: &Tensor| t.to_device(&device).unwrap();
        let (q, kc, vc) = (up(&inputs.q), up(&k_cache), up(&v_cache));
        let layout = Layout { shape: p.kv_shape(), strides: cache_strides, offset: 0 };
        let (k, v) = (kc.strided_view(layout).unwrap(), vc.strided_view(layout).unwrap());
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &device).unwrap();
        backend.forward(&p, &q, k, v, &mut out).unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        check_output(backend.name(), &p, &out.to_f32_vec().unwrap(), &expected).unwrap_or_else(|e| panic!("{e}"));
        ran.push(backend.name());
    }
    // cpu-reference reads strides; a GPU backend may declare contiguous only.
    assert!(kind == DeviceKind::Gpu || ran.contains(&"cpu-reference"), "ran: {ran:?}");
    println!("strided KV-cache views ran on: {ran:?}");
    // And the contiguous path still agrees, on the CPU.
    assert_matches_reference(
        rocmforge::Registry::global().unwrap().get("cpu-flash").unwrap(),
        &contiguous,
        &Device::Cpu,
        7,
    );
}

cpu_and_gpu!(concurrent_forwards_match_the_reference, kv_cache_prefix_views_match_the_reference);
