//! The decoder against Hugging Face transformers: every fixture in
//! tests/fixtures/models (built by scripts/make_tiny_models.py, float64
//! reference logits) on every CPU attention backend, with both caches,
//! prefill in one call and token by token. Logits must match within
//! 1e-4 × max |HF logit| and greedy tokens must be identical.

use rocmforge::model::{CacheKind, Decoder, DecoderOptions, GenerateRequest, LogitsFor, ShapeClass, Step};
use rocmforge::selection::DeviceChoice;
use rocmforge::{AttentionConfig, BackendChoice, DType, DeviceKind, Registry};
use std::path::PathBuf;

pub const FAMILIES: [&str; 5] = ["llama", "mistral", "qwen2", "glm", "glm4"];
const REL_TOL: f64 = 1e-4;

/// Where the fixtures are: `ROCMFORGE_MODEL_FIXTURES` (for a test binary
/// shipped to another machine, e.g. the GPU bundle), else the source tree.
pub fn fixture_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("ROCMFORGE_MODEL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models"));
    root.join(name)
}

/// What make_tiny_models.py recorded for one model.
pub struct Reference {
    pub prompt: Vec<u32>,
    pub greedy: Vec<u32>,
    /// `[prompt + greedy, vocab]`: row i is the logits after token i.
    pub logits: Vec<Vec<f64>>,
    pub max_abs: f64,
}

pub fn reference(name: &str) -> Reference {
    let dir = fixture_dir(name);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference.json")).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        info[key].as_array().expect(key).iter().map(|v| v.as_u64().expect("token id") as u32).collect()
    };
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("logits").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F64);
    let vocab = view.shape()[1];
    let flat: Vec<f64> = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    let logits: Vec<Vec<f64>> = flat.chunks_exact(vocab).map(<[f64]>::to_vec).collect();
    let max_abs = flat.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let r = Reference { prompt: ids("prompt"), greedy: ids("greedy"), logits, max_abs };
    assert_eq!(r.logits.len(), r.prompt.len() + r.greedy.len(), "{name}: one logits row per token");
    r
}

/// Every registered CPU backend, by name.
pub fn cpu_backends() -> Vec<&'static str> {
    let names: Vec<&'static str> = Registry::global()
        .unwrap()
        .backends()
        .filter(|b| b.capabilities().device == DeviceKind::Cpu)
        .map(|b| b.name())
        .collect();
    assert!(names.contains(&"cpu-reference"), "{names:?}");
    names
}

pub fn decoder(name: &str, backend: Option<&str>) -> Decoder {
    let attention = AttentionConfig {
        backend: backend.map(|b| BackendChoice::Prefer(vec![b.to_string()])),
        device: DeviceChoice::Cpu,
        ..AttentionConfig::default()
    };
    let options = DecoderOptions { attention, kv_dtype: Some(DType::F32), dtype: Some(DType::F32) };
    Decoder::load(&fixture_dir(name), options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub const CACHES: [CacheKind; 3] =
    [CacheKind::Contiguous, CacheKind::Paged { block_size: 16 }, CacheKind::Paged { block_size: 32 }];

/// Largest |ours - HF| over `rows` compared with `reference.logits[first..]`,
/// relative to the reference's largest |logit|. NaN gives infinity.
fn max_rel_error(ours: &[Vec<f32>], r: &Reference, first: usize) -> f64 {
    let mut worst = 0.0f64;
    for (i, row) in ours.iter().enumerate() {
        let want = &r.logits[first + i];
        assert_eq!(row.len(), want.len());
        for (a, b) in row.iter().zip(want) {
            let e = (*a as f64 - b).abs() / r.max_abs;
            worst = if e.is_nan() { f64::INFINITY } else { worst.max(e) };
        }
    }
    worst
}

/// Feeds prompt + greedy through one sequence, either the prompt in one
/// call then one token per call, or every token alone; returns one logits
/// row per token.
fn teacher_forced(d: &mut Decoder, r: &Reference, cache: CacheKind, prefill_at_once: bool) -> Vec<Vec<f32>> {
    let all: Vec<u32> = r.prompt.iter().chain(&r.greedy).copied().collect();
    let mut kv = d.new_cache(cache, 1, all.len()).unwrap();
    let seq = kv.add_sequence().unwrap();
    let vocab = d.config().vocab_size;
    let mut rows = Vec::new();
    let mut fed = 0;
    if prefill_at_once {
        let out = d.forward(kv.as_mut(), &[Step { seq, tokens: &r.prompt }], LogitsFor::All).unwrap();
        rows.extend(out[0].chunks_exact(vocab).map(<[f32]>::to_vec));
        fed = r.prompt.len();
    }
    for t in &all[fed..] {
        let out = d.forward(kv.as_mut(), &[Step { seq, tokens: std::slice::from_ref(t) }], LogitsFor::All).unwrap();
        rows.push(out[0].clone());
    }
    assert_eq!(kv.len(seq).unwrap(), all.len());
    rows
}

#[test]
fn logits_match_transformers_on_every_cpu_backend_and_cache() {
    let mut runs = 0;
    for name in FAMILIES {
        let r = reference(name);
        for backend in cpu_backends() {
            let mut d = decoder(name, Some(backend));
            for cache in CACHES {
                for at_once in [true, false] {
                    let rows = teacher_forced(&mut d, &r, cache, at_once);
                    let err = max_rel_error(&rows, &r, 0);
                    println!("{name:8} {backend:14} {cache:?} prefill_at_once={at_once}: max rel err {err:.2e}");
                    assert!(err <= REL_TOL, "{name} {backend} {cache:?} at_once={at_once}: {err:.3e} > {REL_TOL}");
                    runs += 1;
                }
            }
            // The forced backend is what ran, for both shape classes; a
            // backend that takes strided views read every (single-sequence)
            // cache in place; the others needed gathered copies of the
            // strided contiguous-cache views.
            let strided = Registry::global().unwrap().get(backend).unwrap().capabilities().strided;
            let choices = d.attention_choices();
            for class in [ShapeClass::Prefill, ShapeClass::Decode] {
                let layers = &choices[&class];
                assert_eq!(layers.len(), d.config().num_layers, "{name} {class}");
                for (layer, c) in layers {
                    assert_eq!(c.backend, backend, "{name} {class} layer {layer}");
                    // A non-strided backend still reads views that happen
                    // to be contiguous (a paged sequence in one block run).
                    let ok = if strided { c.in_place == c.calls } else { c.in_place < c.calls };
                    assert!(ok, "{name} {backend} {class} layer {layer}: {c:?}");
                }
            }
        }
    }
    assert_eq!(runs, FAMILIES.len() * cpu_backends().len() * CACHES.len() * 2);
}

#[test]
fn greedy_generation_reproduces_transformers() {
    for name in FAMILIES {
        let r = reference(name);
        for cache in CACHES {
            let mut d = decoder(name, None);
            // Two identical sequences in one batch must both follow HF.
            let request =
                GenerateRequest { prompts: vec![r.prompt.clone(), r.prompt.clone()], max_new: r.greedy.len(), cache };
            let g = rocmforge::model::generate(&mut d, &request).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(g.tokens, vec![r.greedy.clone(), r.greedy.clone()], "{name} {cache:?}");
            assert_eq!(g.decode_tokens, 2 * (r.greedy.len() - 1));
            assert!(!g.backends(ShapeClass::Prefill).is_empty() && !g.backends(ShapeClass::Decode).is_empty());
            for (class, layers) in &g.choices {
                for (layer, c) in layers {
                    assert!(c.reason.contains(&class.to_string()), "{name} layer {layer}: reason '{}'", c.reason);
                }
            }
        }
    }
}

#[test]
fn sequences_of_different_lengths_share_a_batch() {
    // Sequence B's prompt is a prefix of A's, so both have reference rows.
    for name in FAMILIES {
        let r = reference(name);
        for cache in CACHES {
            let mut d = decoder(name, None);
            let vocab = d.config().vocab_size;
            let mut kv = d.new_cache(cache, 2, 32).unwrap();
            let (a, b) = (kv.add_sequence().unwrap(), kv.add_sequence().unwrap());
            let short = &r.prompt[..5];
            let steps = [Step { seq: a, tokens: &r.prompt }, Step { seq: b, tokens: short }];
            let out = d.forward(kv.as_mut(), &steps, LogitsFor::All).unwrap();
            let rows = |v: &Vec<f32>| v.chunks_exact(vocab).map(<[f32]>::to_vec).collect::<Vec<_>>();
            assert!(max_rel_error(&rows(&out[0]), &r, 0) <= REL_TOL, "{name} {cache:?} A prefill");
            assert!(max_rel_error(&rows(&out[1]), &r, 0) <= REL_TOL, "{name} {cache:?} B prefill");
            // Decode: A from position 8, B from position 5, in one call each step.
            let all: Vec<u32> = r.prompt.iter().chain(&r.greedy).copied().collect();
            for step in 0..6 {
                let (ta, tb) = ([r.greedy[step]], [all[5 + step]]);
                let steps = [Step { seq: a, tokens: &ta }, Step { seq: b, tokens: &tb }];
                let out = d.forward(kv.as_mut(), &steps, LogitsFor::Last).unwrap();
                let ea = max_rel_error(&out[..1], &r, r.prompt.len() + step);
                let eb = max_rel_error(&out[1..], &r, 5 + step);
                assert!(ea <= REL_TOL && eb <= REL_TOL, "{name} {cache:?} decode {step}: {ea:.2e} {eb:.2e}");
            }
        }
    }
}

#[test]
fn configs_and_weights_load_as_written() {
    for name in FAMILIES {
        let d = decoder(name, None);
        let c = d.config();
        assert_eq!(c.family.model_type(), name);
        match name {
            "llama" => assert!(c.head_dim != c.hidden_size / c.num_heads && c.o_bias && c.mlp_bias),
            "mistral" => assert!(c.layer_windows.iter().all(|w| *w == Some(5))),
            "qwen2" => assert_eq!(c.layer_windows, vec![None, Some(6), Some(6)]),
            "glm" | "glm4" => assert_eq!(c.rope.rotary_dim * 2, c.head_dim),
            _ => unreachable!(),
        }
    }
}

#[test]
fn half_precision_kv_cache_stays_close() {
    // Keys and values rounded once to 16 bits (queries too: the attention
    // problem takes the cache's dtype); everything else stays f32.
    for (dtype, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        for name in FAMILIES {
            let r = reference(name);
            let options = DecoderOptions { kv_dtype: Some(dtype), ..DecoderOptions::default() };
            let mut d = Decoder::load(&fixture_dir(name), options).unwrap();
            let rows = teacher_forced(&mut d, &r, CacheKind::Paged { block_size: 16 }, true);
            let err = max_rel_error(&rows, &r, 0);
            println!("{name:8} kv {dtype}: max rel err {err:.2e}");
            assert!(err <= tol, "{name} {dtype}: {err:.3e} > {tol}");
            // Not bit-identical to f32: the cache really is 16-bit.
            assert!(err > 1e-5, "{name} {dtype}: error {err:.1e} suspiciously small for a 16-bit cache");
        }
    }
}

/// Logits rows (prompt in one call, then token by token, contiguous cache)
/// of a decoder, and their error against HF's float64 logits.
pub fn model_rows_and_error(d: &mut Decoder, r: &Reference) -> (Vec<Vec<f32>>, f64) {
    let rows = teacher_forced(d, r, CacheKind::Contiguous, true);
    let err = max_rel_error(&rows, r, 0);
    (rows, err)
}

/// How far a model run in the 16-bit `dtype` may be from the float64
/// reference, relative to max |logit|: one unit roundoff (2^-9 for bf16,
/// 2^-11 for f16) per rounding point on the longest path through the
/// model, a first-order forward-error bound. Per layer a transformers
/// model rounds 16 times in sequence (normalized row and its product with
/// the weight, q/k/v, RoPE's two products and sum, attention output, o,
/// residual, post-attention norm ×2, gate/up, silu, silu·up, down,
/// residual); then the final norm (2), the LM head and the weights
/// themselves (f32 checkpoints are rounded once): 16 × layers + 4.
pub fn half_model_bound(dtype: DType, layers: usize) -> f64 {
    let unit = match dtype {
        DType::BF16 => 2f64.powi(-9),
        DType::F16 => 2f64.powi(-11),
        DType::F32 => 2f64.powi(-24),
    };
    unit * (16 * layers + 4) as f64
}

#[test]
fn half_precision_model_stays_within_the_rounding_bound() {
    // The whole model in f16 / bf16 (weights, activations, cache), on the
    // CPU: f32 arithmetic rounded where transformers rounds.
    for dtype in [DType::F16, DType::BF16] {
        for name in FAMILIES {
            let r = reference(name);
            let options = DecoderOptions { dtype: Some(dtype), ..DecoderOptions::default() };
            let mut d = Decoder::load(&fixture_dir(name), options).unwrap();
            assert_eq!((d.dtype(), d.kv_dtype()), (dtype, dtype), "the cache follows the model dtype");
            let bound = half_model_bound(dtype, d.config().num_layers);
            let (rows, err) = model_rows_and_error(&mut d, &r);
            println!("{name:8} model {dtype}: max rel err {err:.2e} (bound {bound:.2e})");
            assert!(err <= bound, "{name} {dtype}: {err:.3e} > {bound:.3e}");
            // Really 16-bit: far from the f32 path's ~1e-6, and every logit
            // is a value of the dtype (the LM head's output was rounded).
            assert!(err > 1e-4, "{name} {dtype}: error {err:.1e} is too small for a 16-bit model");
            let round = rocmforge::model::engine::round_slice;
            let mut rounded = rows.concat();
            round(dtype, &mut rounded);
            assert_eq!(rounded, rows.concat(), "{name} {dtype}: logits are not {dtype} values");
        }
    }
}
