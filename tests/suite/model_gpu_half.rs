//! The model layer on a GPU in f16 and bf16 (weights, activations and KV
//! cache in the model's dtype, GEMMs accumulating in f32): the dense
//! kernels against the host's emulation of transformers' rounding, the
//! decoder against HF's float64 logits within the rounding bound of
//! `model_fixtures::half_model_bound` and against the host emulation, the
//! on-device argmax, and decode steps that allocate nothing. Every test is
//! `#[ignore = "needs a GPU"]`.

use super::model_fixtures::{fixture_dir, half_model_bound, model_rows_and_error, reference, FAMILIES};
use super::model_gpu::{fixture_head_dim, gpu, gpu_backends, max_err, random};
use rocmforge::model::engine::{round_slice, Engine};
use rocmforge::model::matrix::Matrix;
use rocmforge::model::{CacheKind, Decoder, DecoderOptions, GenerateRequest, Rope, RopeScaling, RopeStyle, Step};
use rocmforge::selection::DeviceChoice;
use rocmforge::tensor::HostData;
use rocmforge::{AttentionConfig, BackendChoice, DType, Device};

const HALF: [DType; 2] = [DType::F16, DType::BF16];

/// Two units in the last place of `dtype`, relative: what a rounding that
/// a different f32 summation order (GEMM, the norm's sum) flips can cost.
fn two_ulps(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-7),
        DType::F16 => 2f64.powi(-9),
        DType::F32 => 1e-6,
    }
}

/// The same `dtype` values as an f32 host matrix and a `dtype` GPU matrix.
fn pair(rows: usize, cols: usize, seed: u64, dtype: DType, device: &Device) -> (Matrix, Matrix) {
    let mut v = random(rows * cols, seed);
    round_slice(dtype, &mut v);
    let gpu = Matrix::from_host_data(rows, cols, HostData::from_f32(dtype, &v)).unwrap().to_device(device).unwrap();
    (Matrix::from_host(rows, cols, v).unwrap(), gpu)
}

fn close(what: &str, dtype: DType, gpu: &Matrix, host: &Matrix) {
    assert_eq!(gpu.dtype(), dtype, "{what}: the GPU result is {}", gpu.dtype());
    let e = max_err(&gpu.to_vec().unwrap(), &host.to_vec().unwrap());
    println!("{what} {dtype}: max rel err {e:.2e}");
    assert!(e <= two_ulps(dtype), "{what} {dtype}: {e:.3e}");
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_half_precision_dense_ops_match_the_host_emulation() {
    let Some(device) = gpu() else { return };
    for dtype in HALF {
        let (host, gpu) = (Engine::new(&Device::Cpu, dtype), Engine::new(&device, dtype));
        let p = |rows, cols, seed| pair(rows, cols, seed, dtype, &device);
        let ((x, gx), (w, gw), (b, gb)) = (p(5, 64, 1), p(40, 64, 2), p(1, 40, 3));
        close("linear", dtype, &gpu.linear(&gx, &gw, None).unwrap(), &host.linear(&x, &w, None).unwrap());
        close("linear+bias", dtype, &gpu.linear(&gx, &gw, Some(&gb)).unwrap(), &host.linear(&x, &w, Some(&b)).unwrap());
        let ((h, gh), (d, gd), (n, gn)) = (p(3, 96, 4), p(3, 96, 5), p(1, 96, 6));
        close("rms_norm", dtype, &gpu.rms_norm(&gh, &gn, 1e-5).unwrap(), &host.rms_norm(&h, &n, 1e-5).unwrap());
        let (mut h2, mut gh2) = (p(3, 96, 4).0, p(3, 96, 4).1);
        let (got, want) =
            (gpu.add_rms_norm(&mut gh2, &gd, &gn, 1e-5).unwrap(), host.add_rms_norm(&mut h2, &d, &n, 1e-5).unwrap());
        close("add_rms_norm", dtype, &got, &want);
        close("add_rms_norm residual", dtype, &gh2, &h2);
        let ((g, gg), (u, gu), (f, gf)) = (p(4, 24, 7), p(4, 24, 8), p(4, 48, 9));
        close("swiglu", dtype, &gpu.swiglu(&gg, Some(&gu)).unwrap(), &host.swiglu(&g, Some(&u)).unwrap());
        close("swiglu fused", dtype, &gpu.swiglu(&gf, None).unwrap(), &host.swiglu(&f, None).unwrap());
        let (mut a, mut ga) = p(4, 24, 10);
        host.add(&mut a, &u).unwrap();
        gpu.add(&mut ga, &gu).unwrap();
        close("add", dtype, &ga, &a);
        for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
            for rotary in [32, 16] {
                let rope = Rope::with_parts(style, 32, rotary, 10000.0, RopeScaling::None, false).unwrap();
                let positions: Vec<usize> = (0..5).map(|t| 3 + 17 * t).collect();
                let (mut x, mut gx) = p(5, 3 * 32, 11);
                host.rope(&mut x, 3, &rope, &host.rope_input(&rope, positions.clone()).unwrap()).unwrap();
                gpu.rope(&mut gx, 3, &rope, &gpu.rope_input(&rope, positions).unwrap()).unwrap();
                close(&format!("rope {style:?} rotary {rotary}"), dtype, &gx, &x);
            }
        }
        // argmax on the device: the host's answer on the same values, ties
        // to the first index (frequent in 16 bits), NaN never wins.
        let (_, mut logits) = p(6, 1000, 12);
        let mut rows = logits.to_vec().unwrap();
        rows[1000..2000].fill(0.5);
        rows[2010] = 3.0;
        rows[2500] = 3.0;
        rows[3000] = f32::NAN;
        rows[3001] = 2.0;
        logits = Matrix::from_host_data(6, 1000, HostData::from_f32(dtype, &rows)).unwrap().to_device(&device).unwrap();
        let want: Vec<u32> = rows.chunks_exact(1000).map(|r| rocmforge::model::ops::argmax(r) as u32).collect();
        let got = gpu.argmax(&logits).unwrap();
        assert_eq!(got, want, "argmax {dtype}");
        assert_eq!(&got[1..4], &[0, 10, 1], "ties and NaN {dtype}");
    }
}

fn half_decoder(name: &str, dtype: DType, device: DeviceChoice, backend: Option<&str>) -> Decoder {
    let attention = AttentionConfig {
        backend: backend.map(|b| BackendChoice::Prefer(vec![b.to_string()])),
        device,
        ..AttentionConfig::default()
    };
    let options = DecoderOptions { attention, kv_dtype: None, dtype: Some(dtype) };
    Decoder::load(&fixture_dir(name), options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_half_precision_models_stay_within_the_bound_and_near_the_host() {
    let Some(device) = gpu() else { return };
    let Device::Gpu(g) = &device else { unreachable!() };
    for dtype in HALF {
        for name in FAMILIES {
            let r = reference(name);
            let backend = gpu_backends(fixture_head_dim(name))[0];
            let mut on_gpu = half_decoder(name, dtype, DeviceChoice::Gpu(g.ordinal()), Some(backend));
            assert_eq!((on_gpu.dtype(), on_gpu.kv_dtype()), (dtype, dtype));
            let mut on_cpu = half_decoder(name, dtype, DeviceChoice::Cpu, None);
            let (gpu_rows, gpu_err) = model_rows_and_error(&mut on_gpu, &r);
            let (cpu_rows, cpu_err) = model_rows_and_error(&mut on_cpu, &r);
            let vs_host = gpu_rows.concat().iter().zip(cpu_rows.concat()).fold(0.0f64, |m, (a, b)| {
                let e = (*a as f64 - b as f64).abs() / r.max_abs;
                if e.is_nan() {
                    f64::INFINITY
                } else {
                    m.max(e)
                }
            });
            let bound = half_model_bound(dtype, on_gpu.config().num_layers);
            println!(
                "{name:8} {dtype} {backend}: vs HF f64 {gpu_err:.2e} (host emulation {cpu_err:.2e}), vs host {vs_host:.2e}, bound {bound:.2e}"
            );
            assert!(gpu_err <= bound, "{name} {dtype}: {gpu_err:.3e} > {bound:.3e}");
            assert!(vs_host <= bound, "{name} {dtype}: GPU vs host emulation {vs_host:.3e} > {bound:.3e}");
            assert!(gpu_err > 1e-4, "{name} {dtype}: error {gpu_err:.1e} is too small for a 16-bit model");
            // Batched greedy generation in 16 bits: rows of one batch are
            // independent, so equal prompts give equal tokens.
            let request = GenerateRequest {
                prompts: vec![r.prompt.clone(), r.prompt[..5].to_vec(), r.prompt.clone()],
                max_new: r.greedy.len(),
                cache: CacheKind::Paged { block_size: 16 },
            };
            let out = rocmforge::model::generate(&mut on_gpu, &request).unwrap();
            assert!(out.tokens.iter().all(|t| t.len() == r.greedy.len()));
            assert_eq!(out.tokens[0], out.tokens[2], "{name} {dtype}");
            let agree = out.tokens[0].iter().zip(&r.greedy).take_while(|(a, b)| a == b).count();
            println!("{name:8} {dtype}: greedy agrees with HF f64 for {agree} of {} tokens", r.greedy.len());
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_decode_steps_allocate_nothing() {
    let Some(device) = gpu() else { return };
    let Device::Gpu(g) = &device else { unreachable!() };
    for (name, dtype) in [("glm", DType::F32), ("glm4", DType::BF16), ("llama", DType::F16)] {
        let r = reference(name);
        let mut d = half_decoder(name, dtype, DeviceChoice::Gpu(g.ordinal()), None);
        let mut kv = d.new_cache(CacheKind::Contiguous, 2, r.prompt.len() + 8).unwrap();
        let seqs = [kv.add_sequence().unwrap(), kv.add_sequence().unwrap()];
        let prompts = [&r.prompt[..], &r.prompt[..6]];
        let steps: Vec<Step<'_>> = seqs.iter().zip(prompts).map(|(&seq, tokens)| Step { seq, tokens }).collect();
        let mut next = d.next_tokens(kv.as_mut(), &steps).unwrap();
        let mut step = |d: &mut Decoder, next: &mut Vec<u32>| {
            let ids: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
            let steps: Vec<Step<'_>> = seqs.iter().zip(&ids).map(|(&seq, t)| Step { seq, tokens: t }).collect();
            *next = d.next_tokens(kv.as_mut(), &steps).unwrap();
        };
        // The first decode step meets new sizes; from then on the pool has them.
        step(&mut d, &mut next);
        let before = d.pool_stats().unwrap();
        for _ in 0..5 {
            step(&mut d, &mut next);
        }
        let after = d.pool_stats().unwrap();
        println!("{name} {dtype}: pool before {before:?}, after 5 decode steps {after:?}");
        assert_eq!(after.allocations, before.allocations, "{name} {dtype}: decode steps allocated");
        assert!(after.reuses > before.reuses, "{name} {dtype}: the pool was not used");
    }
}
