use super::*;
use serde_json::json;

/// A Llama 3.2-style config as transformers 4.x writes it.
fn llama4x() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64
        },
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": true,
        "torch_dtype": "float32"
    })
}

fn parse(v: &Value) -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_json(v)
}

fn field_of(v: &Value) -> String {
    parse(v).unwrap_err().field().unwrap_or("<none>").to_string()
}

#[test]
fn llama_4x_reads_every_field() {
    let c = parse(&llama4x()).unwrap();
    assert_eq!(c.family, Family::Llama);
    assert_eq!((c.vocab_size, c.hidden_size, c.intermediate_size), (128, 64, 96));
    assert_eq!((c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim), (2, 4, 2, 32));
    assert_eq!(c.group_size(), 2);
    assert_eq!((c.q_width(), c.kv_width()), (128, 64));
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.max_position_embeddings, 256);
    assert_eq!(c.rope.theta, 500000.0);
    assert_eq!(c.rope.style, RopeStyle::NeoX);
    assert_eq!(c.rope.rotary_dim, 32);
    assert_eq!(
        c.rope.scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0
        }
    );
    assert_eq!(c.layer_windows, vec![None, None]);
    assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert!(c.tie_word_embeddings);
}

#[test]
fn llama_5x_rope_parameters() {
    let mut v = llama4x();
    let o = v.as_object_mut().unwrap();
    o.remove("rope_theta");
    o.remove("rope_scaling");
    o.insert("rope_parameters".into(), json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 1234.0}));
    let c = parse(&v).unwrap();
    assert_eq!(c.rope.theta, 1234.0);
    assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 2.0 });
    // Default type, theta from rope_parameters.
    v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 10000.0});
    let c = parse(&v).unwrap();
    assert_eq!((c.rope.theta, c.rope.scaling), (10000.0, RopeScaling::None));
    // A missing type inside rope_parameters means default, as in transformers 5.
    v["rope_parameters"] = json!({"rope_theta": 99.0});
    assert_eq!(parse(&v).unwrap().rope.scaling, RopeScaling::None);
    // No theta anywhere.
    v["rope_parameters"] = json!({"rope_type": "default"});
    assert_eq!(field_of(&v), "rope_theta");
    // Per-layer-type parameters are rejected by name.
    v["rope_parameters"] = json!({"full_attention": {"rope_theta": 1.0}, "sliding_attention": {"rope_theta": 2.0}});
    assert_eq!(field_of(&v), "rope_parameters");
}

#[test]
fn rope_scaling_types() {
    let mut v = llama4x();
    v["rope_scaling"] = Value::Null;
    assert_eq!(parse(&v).unwrap().rope.scaling, RopeScaling::None);
    // Old-style `type` key.
    v["rope_scaling"] = json!({"type": "linear", "factor": 4.0});
    assert_eq!(parse(&v).unwrap().rope.scaling, RopeScaling::Linear { factor: 4.0 });
    for kind in ["yarn", "dynamic", "longrope"] {
        v["rope_scaling"] = json!({"rope_type": kind, "factor": 4.0});
        let err = parse(&v).unwrap_err();
        assert_eq!(err.field(), Some("rope_scaling.rope_type"), "{kind}");
        assert!(err.to_string().contains(kind), "{err}");
        assert!(err.to_string().contains("llama3"), "{err}");
    }
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0});
    assert_eq!(field_of(&v), "rope_scaling.original_max_position_embeddings");
    v["rope_scaling"] = json!({"rope_type": "linear"});
    assert_eq!(field_of(&v), "rope_scaling.factor");
    v["rope_scaling"] = json!({"rope_type": "linear", "factor": -1.0});
    assert_eq!(field_of(&v), "rope_scaling.factor");
    v["rope_scaling"] = json!({"factor": 2.0});
    assert_eq!(field_of(&v), "rope_scaling.rope_type");
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
        "high_freq_factor": 1.0, "original_max_position_embeddings": 64});
    assert_eq!(field_of(&v), "rope_scaling.high_freq_factor");
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    for key in [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "rms_norm_eps",
        "max_position_embeddings",
        "rope_theta",
    ] {
        let mut v = llama4x();
        v.as_object_mut().unwrap().remove(key);
        let err = parse(&v).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{key}: {err}");
        assert_eq!(err.field(), Some(key));
        assert!(err.to_string().contains(key), "{err}");
    }
    let mut v = llama4x();
    v["hidden_size"] = json!("64");
    assert!(matches!(parse(&v), Err(ConfigError::WrongType { .. })));
    assert_eq!(field_of(&v), "hidden_size");
    v["hidden_size"] = json!(-3);
    assert_eq!(field_of(&v), "hidden_size");
    v["hidden_size"] = json!(0);
    assert_eq!(field_of(&v), "hidden_size");
    let mut v = llama4x();
    v["tie_word_embeddings"] = json!(1);
    assert_eq!(field_of(&v), "tie_word_embeddings");
    let mut v = llama4x();
    v["rope_theta"] = json!(0.0);
    assert_eq!(field_of(&v), "rope_theta");
    assert!(matches!(parse(&json!([1, 2])), Err(ConfigError::NotAnObject)));
}

#[test]
fn architecture_is_checked() {
    let mut v = llama4x();
    v["model_type"] = json!("gpt2");
    let err = parse(&v).unwrap_err();
    assert_eq!(err.field(), Some("model_type"));
    assert!(err.to_string().contains("gpt2") && err.to_string().contains("qwen2"), "{err}");
    // Without model_type the architecture decides.
    v.as_object_mut().unwrap().remove("model_type");
    v["architectures"] = json!(["MistralForCausalLM"]);
    assert_eq!(parse(&v).unwrap().family, Family::Mistral);
    v["architectures"] = json!(["BertModel"]);
    assert_eq!(field_of(&v), "architectures[0]");
    v.as_object_mut().unwrap().remove("architectures");
    assert_eq!(field_of(&v), "model_type");
}

#[test]
fn heads_and_head_dim() {
    let mut v = llama4x();
    v["num_key_value_heads"] = json!(3);
    assert_eq!(field_of(&v), "num_key_value_heads");
    // Absent KV heads = MHA; absent head_dim = hidden / heads.
    let o = v.as_object_mut().unwrap();
    o.remove("num_key_value_heads");
    o.remove("head_dim");
    let c = parse(&v).unwrap();
    assert_eq!((c.num_kv_heads, c.head_dim), (4, 16));
    v["hidden_size"] = json!(66);
    assert_eq!(field_of(&v), "hidden_size");
    v["hidden_act"] = json!("gelu");
    v["hidden_size"] = json!(64);
    assert_eq!(field_of(&v), "hidden_act");
}

#[test]
fn partial_rotary() {
    let mut v = llama4x();
    v["partial_rotary_factor"] = json!(0.5);
    assert_eq!(parse(&v).unwrap().rope.rotary_dim, 16);
    v["partial_rotary_factor"] = json!(0.0);
    assert_eq!(field_of(&v), "partial_rotary_factor");
    v["partial_rotary_factor"] = json!(1.5);
    assert_eq!(field_of(&v), "partial_rotary_factor");
    // 32 * 0.1 = 3.2 -> 3 rotary dims: odd, rejected.
    v["partial_rotary_factor"] = json!(0.1);
    let err = parse(&v).unwrap_err();
    assert!(err.to_string().contains("3 rotary dimensions"), "{err}");
    // In 5.x the factor may sit inside rope_parameters.
    let o = v.as_object_mut().unwrap();
    o.remove("partial_rotary_factor");
    o.remove("rope_scaling");
    o.insert(
        "rope_parameters".into(),
        json!({"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
    );
    assert_eq!(parse(&v).unwrap().rope.rotary_dim, 8);
}

#[test]
fn mistral_windows_every_layer() {
    let mut v = llama4x();
    v["model_type"] = json!("mistral");
    v["sliding_window"] = json!(4);
    v["attention_bias"] = json!(true);
    let c = parse(&v).unwrap();
    assert_eq!(c.family, Family::Mistral);
    assert_eq!(c.layer_windows, vec![Some(4), Some(4)]);
    assert!(!c.qkv_bias, "mistral has no projection biases");
    // Mistral ignores layer_types, as transformers does.
    v["layer_types"] = json!(["full_attention", "full_attention"]);
    assert_eq!(parse(&v).unwrap().layer_windows, vec![Some(4), Some(4)]);
    v["sliding_window"] = Value::Null;
    assert_eq!(parse(&v).unwrap().layer_windows, vec![None, None]);
    v["sliding_window"] = json!(0);
    assert_eq!(field_of(&v), "sliding_window");
    v["sliding_window"] = json!(4);
    v.as_object_mut().unwrap().remove("num_key_value_heads");
    assert_eq!(field_of(&v), "num_key_value_heads");
}

#[test]
fn qwen2_windows_from_max_window_layers_or_layer_types() {
    let mut v = llama4x();
    v["model_type"] = json!("qwen2");
    v["use_sliding_window"] = json!(true);
    v["sliding_window"] = json!(5);
    v["max_window_layers"] = json!(1);
    let c = parse(&v).unwrap();
    assert_eq!(c.layer_windows, vec![None, Some(5)]);
    assert!(c.qkv_bias && !c.o_bias, "qwen2 has q/k/v biases only");
    v["use_sliding_window"] = json!(false);
    assert_eq!(parse(&v).unwrap().layer_windows, vec![None, None]);
    // layer_types wins over max_window_layers.
    v["use_sliding_window"] = json!(true);
    v["layer_types"] = json!(["sliding_attention", "full_attention"]);
    assert_eq!(parse(&v).unwrap().layer_windows, vec![Some(5), None]);
    // ...but use_sliding_window false still means no window at all.
    v["use_sliding_window"] = json!(false);
    assert_eq!(parse(&v).unwrap().layer_windows, vec![None, None]);
    v["use_sliding_window"] = json!(true);
    v["layer_types"] = json!(["sliding_attention"]);
    assert_eq!(field_of(&v), "layer_types");
    v["layer_types"] = json!(["sliding_attention", "chunked_attention"]);
    assert_eq!(field_of(&v), "layer_types[1]");
    v["layer_types"] = json!("sliding_attention");
    assert_eq!(field_of(&v), "layer_types");
}

#[test]
fn glm_families() {
    let mut v = llama4x();
    v["model_type"] = json!("glm");
    v["partial_rotary_factor"] = json!(0.5);
    v.as_object_mut().unwrap().remove("attention_bias");
    let c = parse(&v).unwrap();
    assert_eq!(c.family, Family::Glm);
    assert_eq!(c.rope.style, RopeStyle::Interleaved);
    assert_eq!(c.rope.rotary_dim, 16);
    assert!(c.qkv_bias && !c.o_bias, "glm defaults to q/k/v biases");
    assert!(c.family.fused_gate_up() && !c.family.post_sublayer_norms());
    // Without a partial_rotary_factor GLM rotates half the head, like transformers.
    v.as_object_mut().unwrap().remove("partial_rotary_factor");
    assert_eq!(parse(&v).unwrap().rope.rotary_dim, 16);
    v.as_object_mut().unwrap().remove("head_dim");
    assert_eq!(field_of(&v), "head_dim");
    v["head_dim"] = json!(32);
    v["model_type"] = json!("glm4");
    v["attention_bias"] = json!(false);
    let c = parse(&v).unwrap();
    assert!(!c.qkv_bias);
    assert!(c.family.post_sublayer_norms());
}

#[test]
fn from_dir_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let err = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Json { .. }), "{err}");
    let mut v = llama4x();
    v["rope_scaling"]["rope_type"] = json!("yarn");
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let err = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert_eq!(err.field(), Some("rope_scaling.rope_type"));
    let text = err.to_string();
    assert!(text.starts_with(&dir.path().join("config.json").display().to_string()), "{text}");
    assert!(text.contains("`rope_scaling.rope_type` = \"yarn\" is not supported"), "{text}");
    std::fs::write(dir.path().join("config.json"), llama4x().to_string()).unwrap();
    assert_eq!(ModelConfig::from_dir(dir.path()).unwrap().family, Family::Llama);
}

#[test]
fn odd_rotary_width_blames_what_the_file_says() {
    // No partial_rotary_factor in the file: every dimension rotates, so an
    // odd head_dim is at fault, not a factor the user never wrote.
    let mut v = llama4x();
    v["head_dim"] = json!(23);
    let err = parse(&v).unwrap_err();
    assert_eq!(err.field(), Some("head_dim"), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("field `head_dim` = 23: rotary embeddings need an even number"), "{text}");
    assert!(text.ends_with("with no partial_rotary_factor in the file, every dimension rotates"), "{text}");
    // head_dim derived from hidden_size / heads: said so.
    let o = v.as_object_mut().unwrap();
    o.remove("head_dim");
    o.insert("hidden_size".into(), json!(92));
    let text = parse(&v).unwrap_err().to_string();
    assert!(text.contains("`head_dim` = 23") && text.contains("no head_dim in the file"), "{text}");
    // GLM's default factor 0.5: 22 × 0.5 = 11, named as that default.
    let mut glm = llama4x();
    glm["model_type"] = json!("glm");
    glm["head_dim"] = json!(22);
    let text = parse(&glm).unwrap_err().to_string();
    assert!(text.contains("`head_dim` = 22") && text.contains("glm rotates 0.5 of them: 11"), "{text}");
    // A factor in the file: the combination, under the factor's name.
    v["head_dim"] = json!(23);
    v["partial_rotary_factor"] = json!(0.5);
    let err = parse(&v).unwrap_err();
    assert_eq!(err.field(), Some("partial_rotary_factor"), "{err}");
    assert!(err.to_string().contains("with head_dim 23 gives 11 rotary dimensions"), "{err}");
}

#[test]
fn required_fields_set_to_null_say_null() {
    for (key, expected) in [
        ("hidden_size", "a non-negative integer"),
        ("vocab_size", "a non-negative integer"),
        ("max_position_embeddings", "a non-negative integer"),
        ("rms_norm_eps", "a finite number"),
        ("rope_theta", "a finite number"),
    ] {
        let mut v = llama4x();
        v[key] = Value::Null;
        let err = parse(&v).unwrap_err();
        assert!(matches!(err, ConfigError::Null { .. }), "{key}: {err}");
        assert_eq!(err.field(), Some(key));
        assert_eq!(err.to_string(), format!("field `{key}` is null, expected {expected}"));
    }
    // Optional fields stay optional when null (transformers writes null for unset ones).
    let mut v = llama4x();
    v["num_key_value_heads"] = Value::Null;
    assert_eq!(parse(&v).unwrap().num_kv_heads, 4);
    v["model_type"] = json!("mistral");
    assert!(matches!(parse(&v), Err(ConfigError::Null { .. })), "mistral needs num_key_value_heads");
}
