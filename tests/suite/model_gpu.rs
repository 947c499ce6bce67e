//! The model layer on a GPU: the dense kernels, RoPE and the KV caches
//! against their host twins, and the GPU decoder against Hugging Face
//! transformers on every GPU attention backend with both caches. Every test
//! is `#[ignore = "needs a GPU"]`; the GPU bundle runs them with
//! `--include-ignored` (where no GPU is a failure).

use super::common::device_for;
use super::model_fixtures::{fixture_dir, reference, Reference, CACHES, FAMILIES};
use rocmforge::model::engine::{Engine, GpuEngine};
use rocmforge::model::kv_cache::AppendRows;
use rocmforge::model::matrix::Matrix;
use rocmforge::model::{
    CacheKind, CacheShape, ContiguousCache, Decoder, DecoderOptions, KvCache, LogitsFor, PagedCache, Positions, Rope,
    RopeScaling, RopeStyle, ShapeClass, Step,
};
use rocmforge::selection::DeviceChoice;
use rocmforge::tensor::SplitMix64;
use rocmforge::{AttentionConfig, BackendChoice, DType, Device, DeviceKind, Registry};

/// The GPU, with every activation the engine hands out NaN until written
/// (reused pool buffers would otherwise hide an unwritten element).
pub(super) fn gpu() -> Option<Device> {
    rocmforge::model::engine::poison_new_activations(true);
    device_for(DeviceKind::Gpu)
}

pub(super) fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64(seed);
    (0..n).map(|_| r.next_unit() * 2.0 - 1.0).collect()
}

fn host_matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    Matrix::from_host(rows, cols, random(rows * cols, seed)).unwrap()
}

/// Largest |a - b| / (1 + |b|); NaN gives infinity.
pub(super) fn max_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| {
        let e = (*x as f64 - *y as f64).abs() / (1.0 + (*y as f64).abs());
        if e.is_nan() {
            f64::INFINITY
        } else {
            m.max(e)
        }
    })
}

fn assert_close(what: &str, gpu: &Matrix, host: &Matrix, tol: f64) {
    let (g, h) = (gpu.to_vec().unwrap(), host.to_vec().unwrap());
    let e = max_err(&g, &h);
    println!("{what}: max rel err {e:.2e}");
    assert!(e <= tol, "{what}: {e:.3e} > {tol}");
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_dense_ops_match_the_host() {
    let Some(device) = gpu() else { return };
    let (host, gpu) = (Engine::for_device(&Device::Cpu), Engine::for_device(&device));
    let up = |m: &Matrix| m.to_device(&device).unwrap();
    let (x, w, b) = (host_matrix(5, 33, 1), host_matrix(17, 33, 2), host_matrix(1, 17, 3));
    let (gx, gw, gb) = (up(&x), up(&w), up(&b));
    for bias in [false, true] {
        let (hb, gbias) = if bias { (Some(&b), Some(&gb)) } else { (None, None) };
        assert_close("linear", &gpu.linear(&gx, &gw, gbias).unwrap(), &host.linear(&x, &w, hb).unwrap(), 1e-5);
    }
    let norm = host_matrix(1, 33, 4);
    let got = gpu.rms_norm(&gx, &up(&norm), 1e-5).unwrap();
    assert_close("rms_norm", &got, &host.rms_norm(&x, &norm, 1e-5).unwrap(), 1e-5);
    let (g, u) = (host_matrix(4, 24, 5), host_matrix(4, 24, 6));
    assert_close("swiglu", &gpu.swiglu(&up(&g), Some(&up(&u))).unwrap(), &host.swiglu(&g, Some(&u)).unwrap(), 1e-5);
    let fused = host_matrix(4, 48, 7);
    assert_close("swiglu fused", &gpu.swiglu(&up(&fused), None).unwrap(), &host.swiglu(&fused, None).unwrap(), 1e-5);
    let (mut hx, mut gxx, y) = (host_matrix(4, 24, 8), up(&host_matrix(4, 24, 8)), host_matrix(4, 24, 9));
    host.add(&mut hx, &y).unwrap();
    gpu.add(&mut gxx, &up(&y)).unwrap();
    assert_close("add", &gxx, &hx, 0.0);
    let rows = [4usize, 0, 4, 2];
    assert_close("select_rows", &gpu.select_rows(&gx, &rows).unwrap(), &host.select_rows(&x, &rows).unwrap(), 0.0);
    assert!(gpu.select_rows(&gx, &[5]).is_err(), "row 5 of 5 rows is refused");
    // More rows than a launch carries inline: the index goes through put_words.
    let many: Vec<usize> = (0..150).map(|i| (i * 7 + 3) % 5).collect();
    assert_close("select_rows x150", &gpu.select_rows(&gx, &many).unwrap(), &host.select_rows(&x, &many).unwrap(), 0.0);
    // Attention inputs in every dtype, and outputs back into f32 rows.
    let q = host_matrix(6, 16, 10);
    for dtype in DType::ALL {
        let shape = [2, 2, 4, 4];
        let (ht, gt) = (host.rows_as(&q, 1, shape, dtype).unwrap(), gpu.rows_as(&up(&q), 1, shape, dtype).unwrap());
        assert_eq!(gt.download().unwrap(), ht.download().unwrap(), "rows_as {dtype}");
        let (mut hdst, mut gdst) = (Matrix::nan(6, 16, &Device::Cpu).unwrap(), Matrix::nan(6, 16, &device).unwrap());
        host.write_rows(&mut hdst, 2, &ht).unwrap();
        gpu.write_rows(&mut gdst, 2, &gt).unwrap();
        let (h, g) = (hdst.to_vec().unwrap(), gdst.to_vec().unwrap());
        assert_eq!(g[32..96], h[32..96], "write_rows {dtype}");
        assert!(g[..32].iter().all(|v| v.is_nan()), "rows outside the write stay untouched");
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_rope_matches_the_host() {
    let Some(device) = gpu() else { return };
    let Device::Gpu(g) = &device else { unreachable!() };
    let engine = GpuEngine::new(g.clone());
    let mut cases = 0;
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        for (rotary_dim, two_d) in [(32, false), (16, false), (32, true), (16, true)] {
            let scaling = RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64.0,
            };
            let rope = Rope::with_parts(style, 32, rotary_dim, 500000.0, scaling, two_d).unwrap();
            let positions: Vec<usize> = (0..7).map(|t| 4093 + 3 * t).collect();
            let blocks = [0usize, 0, 1, 1, 2, 3, 3];
            let streams = if two_d {
                Positions::TwoD { positions: &positions, block_positions: &blocks }
            } else {
                Positions::OneD(&positions)
            };
            let input = random(7 * 3 * 32, cases);
            let mut want = input.clone();
            rope.apply(&mut want, 3, streams).unwrap();
            let table = rope.cos_sin_table(streams).unwrap();
            let table = Matrix::from_host(7, table.len() / 7, table).unwrap().to_device(&device).unwrap();
            let mut x = Matrix::from_host(7, 96, input.clone()).unwrap().to_device(&device).unwrap();
            engine.rope(&mut x, 3, &rope, &table).unwrap();
            let e = max_err(&x.to_vec().unwrap(), &want);
            assert!(e <= 2e-6, "{style:?} rotary {rotary_dim} 2d={two_d}: {e:.2e}");
            // The first 3 heads of wider rows ([q | k | v] of a fused
            // projection): the same rotation, the other columns untouched.
            let extra = random(7 * 40, cases + 100);
            let wide: Vec<f32> =
                (0..7).flat_map(|t| [&input[t * 96..(t + 1) * 96], &extra[t * 40..(t + 1) * 40]].concat()).collect();
            let mut x = Matrix::from_host(7, 136, wide.clone()).unwrap().to_device(&device).unwrap();
            engine.rope(&mut x, 3, &rope, &table).unwrap();
            let got = x.to_vec().unwrap();
            for t in 0..7 {
                let e = max_err(&got[t * 136..t * 136 + 96], &want[t * 96..(t + 1) * 96]);
                assert!(e <= 2e-6, "wide rows: {style:?} rotary {rotary_dim} 2d={two_d}: {e:.2e}");
                assert_eq!(&got[t * 136 + 96..(t + 1) * 136], &wide[t * 136 + 96..(t + 1) * 136], "untouched columns");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 8);
}

fn caches_on(device: &Device, dtype: DType) -> Vec<Box<dyn KvCache>> {
    let shape = CacheShape { num_layers: 2, num_kv_heads: 2, head_dim: 8, dtype };
    vec![
        Box::new(ContiguousCache::on(device, shape, 3, 70).unwrap()),
        Box::new(PagedCache::on(device, shape, 16, 14).unwrap()),
        Box::new(PagedCache::on(device, shape, 32, 7).unwrap()),
    ]
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_kv_caches_match_the_host() {
    let Some(device) = gpu() else { return };
    for dtype in DType::ALL {
        for (mut h, mut g) in caches_on(&Device::Cpu, dtype).into_iter().zip(caches_on(&device, dtype)) {
            let seqs: Vec<_> = (0..3).map(|_| (h.add_sequence().unwrap(), g.add_sequence().unwrap())).collect();
            // Interleaved growth of three sequences, batched appends.
            for (round, n) in [17usize, 1, 1, 15, 2, 16].into_iter().enumerate() {
                let rows = 3 * n;
                for (hs, gs) in &seqs {
                    h.reserve(*hs, n).unwrap();
                    g.reserve(*gs, n).unwrap();
                }
                for layer in 0..2 {
                    let (k, v) = (host_matrix(rows, 16, round as u64 * 7 + layer), host_matrix(rows, 16, 99 + layer));
                    let entries = |pick: &dyn Fn(usize) -> rocmforge::model::SeqId| -> Vec<AppendRows> {
                        (0..3).map(|i| AppendRows { seq: pick(i), first_row: i * n, len: n }).collect()
                    };
                    h.append(layer as usize, &entries(&|i| seqs[i].0), &k, &v).unwrap();
                    if layer == 0 {
                        let (gk, gv) = (k.to_device(&device).unwrap(), v.to_device(&device).unwrap());
                        g.append(layer as usize, &entries(&|i| seqs[i].1), &gk, &gv).unwrap();
                    } else {
                        // From columns of wider rows, as the fused QKV projection's
                        // output holds them: [5 other | k | v].
                        let (kh, vh, other) = (k.to_vec().unwrap(), v.to_vec().unwrap(), random(rows * 5, 3));
                        let wide: Vec<f32> = (0..rows)
                            .flat_map(|r| {
                                [&other[r * 5..r * 5 + 5], &kh[r * 16..r * 16 + 16], &vh[r * 16..r * 16 + 16]].concat()
                            })
                            .collect();
                        let gw = Matrix::from_host(rows, 37, wide).unwrap().to_device(&device).unwrap();
                        let (gk, gv) = (gw.columns(5, 16).unwrap(), gw.columns(21, 16).unwrap());
                        g.append_columns(layer as usize, &entries(&|i| seqs[i].1), gk, gv).unwrap();
                    }
                }
                for (hs, gs) in &seqs {
                    h.commit(*hs, n).unwrap();
                    g.commit(*gs, n).unwrap();
                }
            }
            let len = h.len(seqs[0].0).unwrap();
            for layer in 0..2 {
                let hb: Vec<_> = seqs.iter().map(|s| s.0).collect();
                let gb: Vec<_> = seqs.iter().map(|s| s.1).collect();
                let (hk, hv) = h.gather(layer, &hb, len).unwrap();
                let (gk, gv) = g.gather(layer, &gb, len).unwrap();
                assert_eq!(gk.download().unwrap(), hk.download().unwrap(), "{} {dtype} layer {layer} k", h.kind());
                assert_eq!(gv.download().unwrap(), hv.download().unwrap(), "{} {dtype} layer {layer} v", h.kind());
                assert_eq!(h.views(layer, &hb, len).unwrap().is_some(), g.views(layer, &gb, len).unwrap().is_some());
            }
        }
    }
}

fn gpu_decoder(device: &Device, name: &str, backend: &str, kv_dtype: DType) -> Decoder {
    let Device::Gpu(g) = device else { unreachable!() };
    let attention = AttentionConfig {
        backend: Some(BackendChoice::Prefer(vec![backend.to_string()])),
        device: DeviceChoice::Gpu(g.ordinal()),
        ..AttentionConfig::default()
    };
    let options = DecoderOptions { attention, kv_dtype: Some(kv_dtype), dtype: Some(DType::F32) };
    Decoder::load(&fixture_dir(name), options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// GPU backends whose kernels exist for `head_dim` (the flash kernels are
/// specialized for {32, 64, 96, 128, 256}; the fixtures use 16, 24 and 32).
/// Skipped ones are printed, so a reader sees what ran.
pub(super) fn gpu_backends(head_dim: usize) -> Vec<&'static str> {
    let mut names = Vec::new();
    for b in Registry::global().unwrap().backends().filter(|b| b.capabilities().device == DeviceKind::Gpu) {
        let caps = b.capabilities();
        // The decoder's attention is causal (or windowed): mask-none-only backends cannot apply.
        if caps.head_dims.contains(head_dim) && caps.masks.contains(&rocmforge::MaskKind::Causal) {
            names.push(b.name());
        } else {
            println!("note: {} has no kernel for head_dim {head_dim}", b.name());
        }
    }
    assert!(!names.is_empty(), "no GPU backend runs head_dim {head_dim}");
    names
}

pub(super) fn fixture_head_dim(name: &str) -> usize {
    rocmforge::model::ModelConfig::from_dir(&fixture_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}")).head_dim
}

/// Logits for prompt + greedy fed as in `model_fixtures`, relative error
/// against HF's largest |logit|.
fn run_forced(d: &mut Decoder, r: &Reference, cache: CacheKind, at_once: bool) -> f64 {
    let all: Vec<u32> = r.prompt.iter().chain(&r.greedy).copied().collect();
    let mut kv = d.new_cache(cache, 1, all.len()).unwrap();
    let seq = kv.add_sequence().unwrap();
    let vocab = d.config().vocab_size;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut fed = 0;
    if at_once {
        let out = d.forward(kv.as_mut(), &[Step { seq, tokens: &r.prompt }], LogitsFor::All).unwrap();
        rows.extend(out[0].chunks_exact(vocab).map(<[f32]>::to_vec));
        fed = r.prompt.len();
    }
    for t in &all[fed..] {
        rows.push(
            d.forward(kv.as_mut(), &[Step { seq, tokens: std::slice::from_ref(t) }], LogitsFor::All).unwrap()[0]
                .clone(),
        );
    }
    let mut worst = 0.0f64;
    for (row, want) in rows.iter().zip(&r.logits) {
        for (a, b) in row.iter().zip(want) {
            let e = (*a as f64 - b).abs() / r.max_abs;
            worst = if e.is_nan() { f64::INFINITY } else { worst.max(e) };
        }
    }
    worst
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_decoder_matches_transformers_on_every_gpu_backend_and_cache() {
    let Some(device) = gpu() else { return };
    let (mut runs, mut expected) = (0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for name in FAMILIES {
        let r = reference(name);
        let backends = gpu_backends(fixture_head_dim(name));
        expected += backends.len() * CACHES.len() * 2;
        for backend in backends {
            seen.insert(backend);
            let mut d = gpu_decoder(&device, name, backend, DType::F32);
            assert!(matches!(d.device(), Device::Gpu(_)));
            for cache in CACHES {
                for at_once in [true, false] {
                    let err = run_forced(&mut d, &r, cache, at_once);
                    println!("{name:8} {backend:14} {cache:?} at_once={at_once}: max rel err {err:.2e}");
                    assert!(err <= 1e-4, "{name} {backend} {cache:?} at_once={at_once}: {err:.3e}");
                    runs += 1;
                }
            }
            for (class, layers) in d.attention_choices() {
                assert!(layers.iter().all(|(_, c)| c.backend == backend), "{name} {class}: {layers:?}");
            }
        }
    }
    assert_eq!(runs, expected);
    // Every registered GPU backend that can run causal attention ran a fixture.
    let causal_gpu = Registry::global().unwrap().backends().filter(|b| {
        let caps = b.capabilities();
        caps.device == DeviceKind::Gpu && caps.masks.contains(&rocmforge::MaskKind::Causal)
    });
    for b in causal_gpu {
        assert!(seen.contains(b.name()), "{} ran no fixture", b.name());
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_greedy_generation_and_half_precision_caches() {
    let Some(device) = gpu() else { return };
    for name in FAMILIES {
        let backend = gpu_backends(fixture_head_dim(name))[0];
        let r = reference(name);
        for cache in CACHES {
            let mut d = gpu_decoder(&device, name, backend, DType::F32);
            let request = rocmforge::model::GenerateRequest {
                prompts: vec![r.prompt.clone(), r.prompt[..5].to_vec(), r.prompt.clone()],
                max_new: r.greedy.len(),
                cache,
            };
            let g = rocmforge::model::generate(&mut d, &request).unwrap();
            assert_eq!(g.tokens[0], r.greedy, "{name} {cache:?}");
            assert_eq!(g.tokens[2], r.greedy, "{name} {cache:?}");
            assert!(!g.backends(ShapeClass::Decode).is_empty());
        }
        for (dtype, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
            let mut d = gpu_decoder(&device, name, backend, dtype);
            let err = run_forced(&mut d, &r, CacheKind::Paged { block_size: 16 }, true);
            println!("{name:8} {backend} kv {dtype}: max rel err {err:.2e}");
            assert!(err <= tol, "{name} {dtype}: {err:.3e}");
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_generate_cli_reproduces_transformers() {
    let Some(_device) = gpu() else { return };
    let r = reference("qwen2");
    let tokens: Vec<String> = r.prompt.iter().map(u32::to_string).collect();
    let bin = std::env::var_os("ROCMFORGE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_rocmforge").into());
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", fixture_dir("qwen2").to_str().unwrap(), "--tokens", &tokens.join(",")])
        .args(["--max-new", &r.greedy.len().to_string(), "--device", "gpu", "--cache", "paged", "--json"])
        // The f32 path reproduces HF's float64 greedy tokens; the default
        // (auto) would run this bf16 checkpoint in bf16.
        .args(["--dtype", "f32"])
        .env_remove(rocmforge::BACKEND_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u32> = serde_json::from_value(v["tokens"][0].clone()).unwrap();
    assert_eq!(ids, r.greedy);
    assert!(v["device"].as_str().unwrap().contains(':'), "{v}");
}
