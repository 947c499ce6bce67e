use super::*;
use crate::model::config::ModelConfig;
use crate::tensor::SplitMix64;
use safetensors::tensor::TensorView;
use serde_json::{json, Value};

fn config_json(model_type: &str, tied: bool) -> Value {
    json!({
        "model_type": model_type, "vocab_size": 11, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": tied, "attention_bias": true, "mlp_bias": true
    })
}

/// The tensors transformers saves for `c`, written out by hand from the
/// modeling files (independent of the loader's own list).
fn hf_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv, i) = (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![c.vocab_size, h])];
    for l in 0..c.num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        out.push((p("input_layernorm.weight"), vec![h]));
        out.push((p("post_attention_layernorm.weight"), vec![h]));
        out.push((p("self_attn.q_proj.weight"), vec![q, h]));
        out.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        out.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        out.push((p("self_attn.o_proj.weight"), vec![h, q]));
        out.push((p("mlp.down_proj.weight"), vec![h, i]));
        if c.qkv_bias {
            out.push((p("self_attn.q_proj.bias"), vec![q]));
            out.push((p("self_attn.k_proj.bias"), vec![kv]));
            out.push((p("self_attn.v_proj.bias"), vec![kv]));
        }
        if c.o_bias {
            out.push((p("self_attn.o_proj.bias"), vec![h]));
        }
        match c.family.model_type() {
            "glm" | "glm4" => out.push((p("mlp.gate_up_proj.weight"), vec![2 * i, h])),
            _ => {
                out.push((p("mlp.gate_proj.weight"), vec![i, h]));
                out.push((p("mlp.up_proj.weight"), vec![i, h]));
            }
        }
        if c.mlp_bias {
            out.push((p("mlp.gate_proj.bias"), vec![i]));
            out.push((p("mlp.up_proj.bias"), vec![i]));
            out.push((p("mlp.down_proj.bias"), vec![h]));
        }
        if c.family.model_type() == "glm4" {
            out.push((p("post_self_attn_layernorm.weight"), vec![h]));
            out.push((p("post_mlp_layernorm.weight"), vec![h]));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    out
}

/// A tensor ready to serialize: name, shape, little-endian bytes.
type Encoded = (String, Vec<usize>, Vec<u8>);

/// Random little-endian bytes for each tensor, in `dtype`.
fn encode(tensors: &[(String, Vec<usize>)], dtype: DType, seed: u64) -> Vec<Encoded> {
    let mut rng = SplitMix64(seed);
    tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.next_unit() - 0.5).collect();
            let bytes = HostData::from_f32(dtype, &values).as_bytes().to_vec();
            (name.clone(), shape.clone(), bytes)
        })
        .collect()
}

fn st_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

fn write_file(path: &Path, tensors: &[Encoded], dtype: Dtype) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn model_dir(cfg: &Value, dtype: DType) -> (tempfile::TempDir, ModelConfig, Vec<Encoded>) {
    let dir = tempfile::tempdir().unwrap();
    let c = ModelConfig::from_json(cfg).unwrap();
    let tensors = encode(&hf_tensors(&c), dtype, 5);
    write_file(&dir.path().join(SINGLE_FILE), &tensors, st_dtype(dtype));
    (dir, c, tensors)
}

#[test]
fn loads_every_family_and_dtype() {
    for model_type in ["llama", "mistral", "qwen2", "glm", "glm4"] {
        for dtype in DType::ALL {
            for tied in [false, true] {
                let (dir, c, tensors) = model_dir(&config_json(model_type, tied), dtype);
                let w = ModelWeights::load(dir.path(), &c).unwrap_or_else(|e| panic!("{model_type} {dtype}: {e}"));
                assert_eq!(w.dtypes(), vec![dtype]);
                assert_eq!(w.layers.len(), 2);
                assert_eq!(w.lm_head.is_none(), tied);
                // Values arrive unchanged: compare one matrix bit for bit.
                let (_, _, bytes) =
                    tensors.iter().find(|(n, _, _)| n == "model.layers.1.self_attn.o_proj.weight").unwrap();
                assert_eq!(w.layers[1].o.data.as_bytes(), &bytes[..]);
                assert_eq!(w.layers[0].q_bias.is_some(), c.qkv_bias);
                assert_eq!(w.layers[0].post_mlp_norm.is_some(), model_type == "glm4");
                assert_eq!(matches!(w.layers[0].gate_up, GateUp::Fused(_)), model_type.starts_with("glm"));
            }
        }
    }
}

#[test]
fn tied_checkpoint_may_carry_an_lm_head_copy() {
    let cfg = config_json("llama", true);
    let c = ModelConfig::from_json(&cfg).unwrap();
    let mut list = hf_tensors(&c);
    list.push(("lm_head.weight".into(), vec![11, 8]));
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join(SINGLE_FILE), &encode(&list, DType::F32, 1), Dtype::F32);
    assert!(ModelWeights::load(dir.path(), &c).unwrap().lm_head.is_none());
}

fn rewrite(dir: &Path, tensors: &[Encoded], dtype: Dtype) {
    write_file(&dir.join(SINGLE_FILE), tensors, dtype);
}

#[test]
fn errors_name_file_and_tensor() {
    let (dir, c, tensors) = model_dir(&config_json("qwen2", false), DType::F32);
    let file = dir.path().join(SINGLE_FILE);
    let name = "model.layers.1.self_attn.k_proj.bias";

    let without: Vec<_> = tensors.iter().filter(|(n, _, _)| n != name).cloned().collect();
    rewrite(dir.path(), &without, Dtype::F32);
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(matches!(&err, WeightsError::Missing { tensor, file: f } if tensor == name && *f == file), "{err}");
    assert!(err.to_string().contains(name) && err.to_string().contains("model.safetensors"), "{err}");

    let mut reshaped = tensors.clone();
    let t = reshaped.iter_mut().find(|(n, _, _)| n == "model.layers.0.self_attn.q_proj.weight").unwrap();
    t.1 = vec![8, 16];
    rewrite(dir.path(), &reshaped, Dtype::F32);
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Shape { got, expected, .. } if *got == vec![8, 16] && *expected == vec![16, 8]),
        "{err}"
    );
    assert!(err.to_string().contains("q_proj"), "{err}");

    let mut extra = tensors.clone();
    extra.push(("model.layers.2.input_layernorm.weight".into(), vec![8], vec![0u8; 32]));
    rewrite(dir.path(), &extra, Dtype::F32);
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Unexpected { tensor, .. } if tensor == "model.layers.2.input_layernorm.weight"),
        "{err}"
    );

    std::fs::write(&file, b"not a safetensors file").unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(matches!(err, WeightsError::Format { .. }), "{err}");
    std::fs::remove_file(&file).unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(matches!(err, WeightsError::NoWeights { .. }), "{err}");
}

#[test]
fn unsupported_dtype_is_named() {
    let (dir, c, tensors) = model_dir(&config_json("llama", true), DType::F32);
    // Store the embeddings as I32 (same byte count as f32).
    let name = "model.embed_tokens.weight";
    let (embed, rest): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _, _)| n == name);
    let mut views: Vec<(String, TensorView<'_>)> =
        rest.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    views.push((name.into(), TensorView::new(Dtype::I32, embed[0].1.clone(), &embed[0].2).unwrap()));
    std::fs::write(dir.path().join(SINGLE_FILE), safetensors::serialize(views, &None).unwrap()).unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(matches!(&err, WeightsError::DType { tensor, got, .. } if tensor == name && got == "I32"), "{err}");
}

fn write_sharded(dir: &Path, tensors: &[Encoded]) -> Value {
    let (a, b) = tensors.split_at(tensors.len() / 2);
    write_file(&dir.join("model-00001-of-00002.safetensors"), a, Dtype::BF16);
    write_file(&dir.join("model-00002-of-00002.safetensors"), b, Dtype::BF16);
    let mut map = serde_json::Map::new();
    for (part, file) in [(a, "model-00001-of-00002.safetensors"), (b, "model-00002-of-00002.safetensors")] {
        for (n, _, _) in part {
            map.insert(n.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
    index
}

#[test]
fn sharded_index_loads_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = ModelConfig::from_json(&config_json("glm4", false)).unwrap();
    let tensors = encode(&hf_tensors(&c), DType::BF16, 9);
    let mut index = write_sharded(dir.path(), &tensors);
    let w = ModelWeights::load(dir.path(), &c).unwrap();
    let (_, _, bytes) = tensors.iter().find(|(n, _, _)| n == "lm_head.weight").unwrap();
    assert_eq!(w.lm_head.unwrap().data.as_bytes(), &bytes[..]);

    // The index claims a tensor lives in the other shard.
    let moved = "model.embed_tokens.weight";
    index["weight_map"][moved] = json!("model-00002-of-00002.safetensors");
    std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Missing { tensor, file } if tensor == moved && file.ends_with("model-00002-of-00002.safetensors")),
        "{err}"
    );

    // A shard file that is not there.
    index["weight_map"][moved] = json!("model-00003-of-00002.safetensors");
    std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Read { file, .. } if file.ends_with("model-00003-of-00002.safetensors")),
        "{err}"
    );

    // Paths outside the directory and malformed indexes.
    index["weight_map"][moved] = json!("../model.safetensors");
    std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
    assert!(matches!(ModelWeights::load(dir.path(), &c), Err(WeightsError::Index { .. })));
    std::fs::write(dir.path().join(INDEX_FILE), "{\"metadata\": {}}").unwrap();
    let err = ModelWeights::load(dir.path(), &c).unwrap_err();
    assert!(err.to_string().contains("weight_map") && err.to_string().contains(INDEX_FILE), "{err}");
}

#[test]
fn stacking_keeps_every_value() {
    let w = |rows: usize, cols: usize, data: HostData| Weight { shape: vec![rows, cols], data };
    let f32s = |v: &[f32]| HostData::F32(v.to_vec());
    let bf16s = |v: &[f32]| HostData::from_f32(DType::BF16, v);
    let (q, k, v) = (w(2, 2, f32s(&[1., 2., 3., 4.])), w(1, 2, f32s(&[5., 6.])), w(1, 2, f32s(&[7., 8.])));
    let qkv = Weight::stacked(&[&q, &k, &v]).unwrap();
    assert_eq!((qkv.shape.clone(), qkv.data.clone()), (vec![4, 2], f32s(&[1., 2., 3., 4., 5., 6., 7., 8.])));
    // One dtype stays that dtype; mixed dtypes widen (exactly) to f32.
    let (a, b) = (w(1, 2, bf16s(&[1.5, -2.0])), w(1, 2, bf16s(&[3.0, 0.25])));
    assert_eq!(Weight::stacked(&[&a, &b]).unwrap().data, bf16s(&[1.5, -2.0, 3.0, 0.25]));
    assert_eq!(Weight::stacked(&[&a, &k]).unwrap().data, f32s(&[1.5, -2.0, 5., 6.]));
    assert!(Weight::stacked(&[&q, &w(1, 3, f32s(&[0.; 3]))]).is_none(), "columns differ");
    assert!(Weight::stacked(&[]).is_none());
    // Biases: none, all, or zeros in place of the missing ones.
    let bias = |v: &[f32]| Some(Weight { shape: vec![v.len()], data: f32s(v) });
    assert_eq!(Weight::stacked_biases([&None, &None, &None], [&q, &k, &v]), None);
    let all = Weight::stacked_biases([&bias(&[1., 2.]), &bias(&[3.]), &bias(&[4.])], [&q, &k, &v]).unwrap();
    assert_eq!((all.shape, all.data), (vec![4], f32s(&[1., 2., 3., 4.])));
    let some = Weight::stacked_biases([&None, &bias(&[3.]), &None], [&q, &k, &v]).unwrap();
    assert_eq!(some.data, f32s(&[0., 0., 3., 0.]));
}
