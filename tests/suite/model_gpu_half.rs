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
use rocmforge::model::{
    CacheKind, CacheShape, Decoder, DecoderOptions, GenerateRequest, KvCache, PagedCache, Rope, RopeScaling, RopeStyle,
    SeqId, ShapeClass, Step,
};
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

/// Prefills `prompts` into `kv`, then runs `warm` decode steps (the first
/// ones meet new sizes); returns the sequence ids and the next tokens.
fn prefill_and_warm(d: &mut Decoder, kv: &mut dyn KvCache, prompts: &[&[u32]], warm: usize) -> (Vec<SeqId>, Vec<u32>) {
    let seqs: Vec<SeqId> = prompts.iter().map(|_| kv.add_sequence().unwrap()).collect();
    let steps: Vec<Step<'_>> = seqs.iter().zip(prompts).map(|(&seq, &tokens)| Step { seq, tokens }).collect();
    let mut next = d.next_tokens(kv, &steps).unwrap();
    for _ in 0..warm {
        decode_step(d, kv, &seqs, &mut next);
    }
    (seqs, next)
}

fn decode_step(d: &mut Decoder, kv: &mut dyn KvCache, seqs: &[SeqId], next: &mut Vec<u32>) {
    let ids: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
    let steps: Vec<Step<'_>> = seqs.iter().zip(&ids).map(|(&seq, t)| Step { seq, tokens: t }).collect();
    *next = d.next_tokens(kv, &steps).unwrap();
}

/// Runs `steps` decode steps and asserts that they allocated nothing: no
/// new buffer in the model's pool, and no device memory at all (the
/// device's live bytes unchanged and its peak never above them, which
/// also catches a buffer allocated and freed within a step).
fn assert_steps_allocate_nothing(
    what: &str,
    g: &rocmforge::device::GpuDevice,
    d: &mut Decoder,
    kv: &mut dyn KvCache,
    (seqs, next): (&[SeqId], &mut Vec<u32>),
    steps: usize,
) {
    let before = d.pool_stats().unwrap();
    g.reset_peak_memory();
    let memory = g.memory();
    for _ in 0..steps {
        decode_step(d, kv, seqs, next);
    }
    let (after, memory_after) = (d.pool_stats().unwrap(), g.memory());
    println!("{what}: pool {before:?} -> {after:?}, device memory {memory:?} -> {memory_after:?}");
    assert_eq!(after.allocations, before.allocations, "{what}: decode steps allocated pool buffers");
    assert!(after.reuses > before.reuses, "{what}: the pool was not used");
    assert_eq!(memory_after.live_bytes, memory.live_bytes, "{what}: device memory held changed");
    assert_eq!(memory_after.peak_bytes, memory.live_bytes, "{what}: a decode step allocated device memory");
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
        // The first decode step meets new sizes; from then on the pool has them.
        let (seqs, mut next) = prefill_and_warm(&mut d, kv.as_mut(), &[&r.prompt[..], &r.prompt[..6]], 1);
        let what = format!("{name} {dtype} contiguous");
        assert_steps_allocate_nothing(&what, g, &mut d, kv.as_mut(), (&seqs, &mut next), 5);
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_paged_decode_steps_allocate_nothing() {
    // glm: head_dim 32, which flash-decode (the backend that reads the
    // paged pool in place) has a kernel for; the other fixtures' decode
    // backends gather a paged cache into a copy each step.
    let Some(device) = gpu() else { return };
    let Device::Gpu(g) = &device else { unreachable!() };
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let r = reference("glm");
        let mut d = half_decoder("glm", dtype, DeviceChoice::Gpu(g.ordinal()), None);
        let c = d.config();
        let shape = CacheShape { num_layers: c.num_layers, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim, dtype };
        let mut kv = PagedCache::on(&device, shape, 16, 8).unwrap();
        // Warm up to lengths 40 and 38: three blocks each, a table 4 wide;
        // the 12 measured steps take both past 48, into a fourth block
        // (table rewrites, same width).
        let (seqs, mut next) = prefill_and_warm(&mut d, &mut kv, &[&r.prompt[..], &r.prompt[..6]], 32);
        let before = kv.index_uploads();
        let what = format!("glm {dtype} paged");
        assert_steps_allocate_nothing(&what, g, &mut d, &mut kv, (&seqs, &mut next), 12);
        let after = kv.index_uploads();
        println!("{what}: paged index {before:?} -> {after:?}");
        assert_eq!(after.allocations, before.allocations, "{what}: the block table was reallocated");
        assert_eq!(
            after.len_writes,
            before.len_writes + 12,
            "{what}: one lengths write per step (all layers share it)"
        );
        // Sequence A enters its fourth block at step 9, B at step 11.
        assert_eq!(after.table_writes, before.table_writes + 2, "{what}: one table write per new block");
        let decode = &d.attention_choices()[&ShapeClass::Decode];
        assert!(decode.iter().all(|(_, c)| c.backend == "flash-decode"), "{what}: {decode:?}");
    }
}
