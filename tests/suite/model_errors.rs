//! Bad model directories and bad requests give errors that name the file,
//! the field or tensor, and the value; nothing panics.

use super::model_fixtures::{decoder, fixture_dir};
use rocmforge::model::{CacheKind, Decoder, DecoderOptions, KvCacheError, LogitsFor, ModelError, Step, WeightsError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// A writable copy of a fixture.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> (ModelError, String) {
    match Decoder::load(dir, DecoderOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (e, text) = load_err(dir.path());
    assert!(matches!(e, ModelError::Weights(WeightsError::NoWeights { .. })), "{text}");
    assert!(text.contains("model.safetensors.index.json"), "{text}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let (_, text) = load_err(dir.path());
    assert!(text.contains("config.json") && text.contains("cannot read"), "{text}");

    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("model-00003-of-00005.safetensors")).unwrap();
    let (e, text) = load_err(dir.path());
    assert!(matches!(e, ModelError::Weights(WeightsError::Read { .. })), "{text}");
    assert!(text.contains("model-00003-of-00005.safetensors"), "{text}");
}

#[test]
fn config_that_does_not_match_the_weights() {
    let dir = copy_fixture("mistral");
    edit_config(dir.path(), |v| v["intermediate_size"] = 96.into());
    let (e, text) = load_err(dir.path());
    assert!(matches!(e, ModelError::Weights(WeightsError::Shape { .. })), "{text}");
    assert!(text.contains("model.safetensors") && text.contains("mlp.gate_proj.weight"), "{text}");
    assert!(text.contains("[128, 64]") && text.contains("[96, 64]"), "{text}");

    // One layer too few: the third layer's tensors are unexpected.
    let dir = copy_fixture("qwen2");
    edit_config(dir.path(), |v| {
        v["num_hidden_layers"] = 2.into();
        v["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
    });
    let (e, text) = load_err(dir.path());
    assert!(matches!(e, ModelError::Weights(WeightsError::Unexpected { .. })), "{text}");
    assert!(text.contains("model.layers.2."), "{text}");
}

#[test]
fn unsupported_architecture_and_rope_are_named() {
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |v| v["model_type"] = "gpt_neox".into());
    let (_, text) = load_err(dir.path());
    assert!(text.contains("config.json") && text.contains("`model_type`") && text.contains("gpt_neox"), "{text}");

    let dir = copy_fixture("llama");
    edit_config(dir.path(), |v| v["rope_scaling"]["rope_type"] = "yarn".into());
    let (e, text) = load_err(dir.path());
    assert!(matches!(&e, ModelError::Config(c) if c.field() == Some("rope_scaling.rope_type")), "{text}");
    assert!(text.contains("yarn") && text.contains("llama3"), "{text}");

    let dir = copy_fixture("glm");
    edit_config(dir.path(), |v| {
        v["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})
    });
    let (_, text) = load_err(dir.path());
    assert!(text.contains("rope_parameters.rope_type") && text.contains("dynamic"), "{text}");
}

#[test]
fn unsupported_weight_dtype_is_named() {
    let dir = copy_fixture("glm4");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let target = "model.layers.1.mlp.down_proj.weight";
    // Reinterpret the bf16 tensor's bytes as I16 of the same shape.
    let views: Vec<(String, TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = if name == target { Dtype::I16 } else { view.dtype() };
            (name, TensorView::new(dtype, view.shape().to_vec(), view.data()).unwrap())
        })
        .collect();
    let out = safetensors::serialize(views, &None).unwrap();
    std::fs::write(&path, out).unwrap();
    let (e, text) = load_err(dir.path());
    assert!(matches!(e, ModelError::Weights(WeightsError::DType { .. })), "{text}");
    assert!(text.contains(target) && text.contains("I16") && text.contains("model.safetensors"), "{text}");
}

#[test]
fn bad_requests_are_typed_errors() {
    let mut d = decoder("llama", None);
    let mut kv = d.new_cache(CacheKind::Contiguous, 1, 4).unwrap();
    let seq = kv.add_sequence().unwrap();
    let err = d.forward(kv.as_mut(), &[Step { seq, tokens: &[1, 96] }], LogitsFor::Last).unwrap_err();
    assert!(matches!(err, ModelError::Token { token: 96, position: 1, vocab_size: 96 }), "{err}");
    let err = d.forward(kv.as_mut(), &[Step { seq, tokens: &[1, 2, 3, 4, 5] }], LogitsFor::Last).unwrap_err();
    assert!(matches!(err, ModelError::KvCache(KvCacheError::CapacityExceeded { capacity: 4, .. })), "{err}");
    assert_eq!(kv.len(seq).unwrap(), 0, "a failed step commits nothing");
    let err = d.forward(kv.as_mut(), &[Step { seq, tokens: &[] }], LogitsFor::Last).unwrap_err();
    assert!(matches!(err, ModelError::Request(_)), "{err}");
    // The cache still works after the errors.
    d.forward(kv.as_mut(), &[Step { seq, tokens: &[1, 2, 3, 4] }], LogitsFor::Last).unwrap();
    assert_eq!(kv.len(seq).unwrap(), 4);

    let mut kv = d.new_cache(CacheKind::Paged { block_size: 16 }, 1, 16).unwrap();
    let seq = kv.add_sequence().unwrap();
    let tokens: Vec<u32> = (0..17).collect();
    let err = d.forward(kv.as_mut(), &[Step { seq, tokens: &tokens }], LogitsFor::Last).unwrap_err();
    assert!(matches!(err, ModelError::KvCache(KvCacheError::PoolExhausted { needed: 2, free: 1, .. })), "{err}");
    assert!(matches!(
        d.new_cache(CacheKind::Paged { block_size: 24 }, 1, 16),
        Err(ModelError::KvCache(KvCacheError::BlockSize(24)))
    ));
}

#[test]
fn forced_backend_that_cannot_run_is_an_error_not_a_fallback() {
    let mut options = DecoderOptions::default();
    options.attention.backend = Some(rocmforge::BackendChoice::Prefer(vec!["no-such-backend".into()]));
    let mut d = Decoder::load(&fixture_dir("glm"), options).unwrap();
    let mut kv = d.new_cache(CacheKind::Contiguous, 1, 8).unwrap();
    let seq = kv.add_sequence().unwrap();
    let err = d.forward(kv.as_mut(), &[Step { seq, tokens: &[1, 2] }], LogitsFor::Last).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::Select { layer: 0, .. }), "{text}");
    assert!(text.contains("no-such-backend") && text.contains("cpu-reference"), "{text}");
}
