//! [`ModelConfig`]: what the decoder needs from a Hugging Face `config.json`
//! of the Llama, Mistral, Qwen2 or GLM (`glm`, `glm4`) families, as written by
//! transformers 4.x (`rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`).
//!
//! Size fields are required; fields that transformers itself defaults when a
//! file omits them (`num_key_value_heads`, `head_dim`, bias and tying flags)
//! get the same defaults here. Everything else that is missing, of the wrong
//! JSON type or outside what the decoder implements is an error naming the
//! field, so a model never loads with a silently different meaning.

mod fields;

use fields::Fields;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// The model families the decoder implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    /// GLM-4 as `glm` (GlmForCausalLM): Llama-like, interleaved partial RoPE,
    /// fused gate/up projection.
    Glm,
    /// GLM-4-0414 as `glm4`: `glm` plus a norm after attention and after the MLP.
    Glm4,
}

impl Family {
    pub const ALL: [Family; 5] = [Family::Llama, Family::Mistral, Family::Qwen2, Family::Glm, Family::Glm4];

    /// The `model_type` value in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Glm => "glm",
            Family::Glm4 => "glm4",
        }
    }

    /// The `architectures` entry transformers writes for the causal LM.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Glm => "GlmForCausalLM",
            Family::Glm4 => "Glm4ForCausalLM",
        }
    }

    fn from_model_type(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == s)
    }

    fn from_architecture(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.architecture() == s)
    }

    /// How rotary pairs are formed in this family.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Family::Llama | Family::Mistral | Family::Qwen2 => RopeStyle::NeoX,
            Family::Glm | Family::Glm4 => RopeStyle::Interleaved,
        }
    }

    /// Gate and up projections stored as one `gate_up_proj` matrix.
    pub fn fused_gate_up(self) -> bool {
        matches!(self, Family::Glm | Family::Glm4)
    }

    /// Extra RMSNorms after attention and after the MLP (before the residual add).
    pub fn post_sublayer_norms(self) -> bool {
        self == Family::Glm4
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// Which dimensions a rotation pairs up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Dimension `i` with `i + rotary_dim/2` (Llama, "rotate_half").
    NeoX,
    /// Dimension `2i` with `2i + 1` (GPT-J, GLM).
    Interleaved,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between the two wavelength bounds.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Rotary embedding settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
    pub style: RopeStyle,
    /// Leading dimensions of each head that rotate (`head_dim × partial_rotary_factor`).
    pub rotary_dim: usize,
}

/// Everything the decoder reads from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// May differ from `hidden_size / num_heads`.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    /// Per layer: `Some(w)` when the layer attends to the last `w` positions
    /// only (the query's own included), `None` for full causal attention.
    pub layer_windows: Vec<Option<usize>>,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// The LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
}

/// A `config.json` that cannot be used. `field` is the JSON path, e.g.
/// `rope_scaling.rope_type`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not valid JSON: {source}", .path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("the top level must be a JSON object")]
    NotAnObject,
    #[error("missing field `{field}`")]
    Missing { field: String },
    /// A required field written as `null`.
    #[error("field `{field}` is null, expected {expected}")]
    Null { field: String, expected: &'static str },
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType { field: String, expected: &'static str, got: String },
    #[error("field `{field}` = {value} is not supported (supported: {supported})")]
    Unsupported { field: String, value: String, supported: String },
    #[error("field `{field}` = {value}: {why}")]
    Invalid { field: String, value: String, why: String },
    /// Any of the above, in the file it came from.
    #[error("{}: {source}", .path.display())]
    InFile { path: PathBuf, source: Box<ConfigError> },
}

impl ConfigError {
    /// The JSON path of the offending field, when the error has one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { field }
            | ConfigError::Null { field, .. }
            | ConfigError::WrongType { field, .. }
            | ConfigError::Unsupported { field, .. }
            | ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::InFile { source, .. } => source.field(),
            _ => None,
        }
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig, ConfigError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| ConfigError::Json { path: path.clone(), source })?;
        ModelConfig::from_json(&value).map_err(|e| ConfigError::InFile { path, source: Box::new(e) })
    }

    /// Parses an already-decoded `config.json`.
    pub fn from_json(value: &Value) -> Result<ModelConfig, ConfigError> {
        let obj = value.as_object().ok_or(ConfigError::NotAnObject)?;
        let f = Fields { obj, prefix: "" };
        let family = family(&f)?;
        let activation = f.opt_str("hidden_act")?.unwrap_or("silu");
        if activation != "silu" {
            return Err(ConfigError::Unsupported {
                field: "hidden_act".into(),
                value: format!("\"{activation}\""),
                supported: "\"silu\" (SwiGLU MLP)".into(),
            });
        }
        let hidden_size = f.positive("hidden_size")?;
        let num_layers = f.positive("num_hidden_layers")?;
        let num_heads = f.positive("num_attention_heads")?;
        // transformers' class defaults for an absent num_key_value_heads or
        // head_dim are model-specific constants (8, 32, 2, 128) except for
        // Llama, whose defaults follow the other sizes; only those are used.
        let num_kv_heads = match (f.opt_usize("num_key_value_heads")?, family) {
            (Some(n), _) => f.check_positive("num_key_value_heads", n)?,
            (None, Family::Llama) => num_heads,
            (None, _) => return Err(f.missing("num_key_value_heads", "a positive integer")),
        };
        if num_heads % num_kv_heads != 0 {
            return Err(ConfigError::Invalid {
                field: "num_key_value_heads".into(),
                value: num_kv_heads.to_string(),
                why: format!("must divide num_attention_heads ({num_heads})"),
            });
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => f.check_positive("head_dim", d)?,
            None if family.fused_gate_up() => return Err(f.missing("head_dim", "a positive integer")),
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(ConfigError::Invalid {
                    field: "hidden_size".into(),
                    value: hidden_size.to_string(),
                    why: format!("not a multiple of num_attention_heads ({num_heads}) and no head_dim is given"),
                })
            }
        };
        let rms_norm_eps = f.positive_f64("rms_norm_eps")?;
        let rope = rope(&f, family, (head_dim, f.get("head_dim").is_some()))?;
        let layer_windows = layer_windows(&f, family, num_layers)?;
        // Qwen2 hard-codes q/k/v biases; the GLM families default them on.
        let qkv_bias = match family {
            Family::Qwen2 => true,
            Family::Glm | Family::Glm4 => f.opt_bool("attention_bias")?.unwrap_or(true),
            Family::Llama => f.opt_bool("attention_bias")?.unwrap_or(false),
            // Mistral's projections have no biases whatever the file says.
            Family::Mistral => false,
        };
        let o_bias = family == Family::Llama && qkv_bias;
        let mlp_bias = family == Family::Llama && f.opt_bool("mlp_bias")?.unwrap_or(false);
        Ok(ModelConfig {
            family,
            vocab_size: f.positive("vocab_size")?,
            hidden_size,
            intermediate_size: f.positive("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope,
            max_position_embeddings: f.positive("max_position_embeddings")?,
            layer_windows,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        })
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Width of the concatenated q projection output.
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of each of the k and v projection outputs.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

fn family(f: &Fields<'_>) -> Result<Family, ConfigError> {
    let supported = || Family::ALL.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
    if let Some(model_type) = f.opt_str("model_type")? {
        return Family::from_model_type(model_type).ok_or_else(|| ConfigError::Unsupported {
            field: "model_type".into(),
            value: format!("\"{model_type}\""),
            supported: supported(),
        });
    }
    // Some hand-written configs name only the architecture.
    let archs = match f.get("architectures") {
        None => return Err(f.missing("model_type", "a string")),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(f.wrong("architectures", "a list of strings", v)),
    };
    let first =
        archs.first().and_then(Value::as_str).ok_or_else(|| ConfigError::Missing { field: "model_type".into() })?;
    Family::from_architecture(first).ok_or_else(|| ConfigError::Unsupported {
        field: "architectures[0]".into(),
        value: format!("\"{first}\""),
        supported: Family::ALL.iter().map(|x| x.architecture()).collect::<Vec<_>>().join(", "),
    })
}

/// Reads theta, scaling and the rotary fraction from either the 4.x fields
/// (`rope_theta`, `rope_scaling`, `partial_rotary_factor`) or the 5.x
/// `rope_parameters` object, which takes precedence when present.
/// `head_dim_given`: whether `head_dim` is in the file (else it is
/// `hidden_size / num_attention_heads`).
fn rope(f: &Fields<'_>, family: Family, (head_dim, head_dim_given): (usize, bool)) -> Result<RopeConfig, ConfigError> {
    let params = match f.opt_object("rope_parameters")? {
        Some(obj) => {
            // Models with per-layer-type RoPE nest one object per layer type.
            if !obj.is_empty() && obj.values().all(Value::is_object) {
                return Err(ConfigError::Unsupported {
                    field: "rope_parameters".into(),
                    value: format!(
                        "per-layer-type parameters ({})",
                        obj.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    supported: "one set of rope parameters for every layer".into(),
                });
            }
            Some(Fields { obj, prefix: "rope_parameters" })
        }
        None => f.opt_object("rope_scaling")?.map(|obj| Fields { obj, prefix: "rope_scaling" }),
    };
    let theta = match params.as_ref().filter(|p| p.prefix == "rope_parameters" && p.get("rope_theta").is_some()) {
        Some(p) => p.positive_f64("rope_theta")?,
        None => f.positive_f64("rope_theta")?,
    };
    let scaling = match &params {
        None => RopeScaling::None,
        Some(p) => scaling(p)?,
    };
    let partial_key = "partial_rotary_factor";
    // `None`: not in the file; GLM configs default to half the head rotating, as transformers does.
    let (factor, factor_field) = match params.as_ref().map(|p| p.opt_f64(partial_key)).transpose()?.flatten() {
        Some(x) => (x, Some(format!("rope_parameters.{partial_key}"))),
        None => match f.opt_f64(partial_key)? {
            Some(x) => (x, Some(partial_key.to_string())),
            None => (if family.fused_gate_up() { 0.5 } else { 1.0 }, None),
        },
    };
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(ConfigError::Invalid {
            field: factor_field.unwrap_or_else(|| partial_key.into()),
            value: factor.to_string(),
            why: "must be in (0, 1]".into(),
        });
    }
    // transformers truncates: int(head_dim * partial_rotary_factor).
    let rotary_dim = (head_dim as f64 * factor) as usize;
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(odd_rotary(factor_field, factor, (head_dim, head_dim_given), rotary_dim, family));
    }
    Ok(RopeConfig { theta, scaling, style: family.rope_style(), rotary_dim })
}

/// The error for `head_dim × partial_rotary_factor` = `rotary_dim` rotary
/// dimensions (odd or 0): it names the factor when the file sets it (the
/// combination), else `head_dim` (the factor is a default the user never wrote).
fn odd_rotary(
    factor_field: Option<String>,
    factor: f64,
    (head_dim, head_dim_given): (usize, bool),
    rotary_dim: usize,
    family: Family,
) -> ConfigError {
    let rule = "rotary embeddings need an even number of dimensions, at least 2";
    match factor_field {
        Some(field) => ConfigError::Invalid {
            field,
            value: factor.to_string(),
            why: format!("with head_dim {head_dim} gives {rotary_dim} rotary dimensions; {rule}"),
        },
        None => {
            let origin =
                if head_dim_given { "" } else { " (hidden_size / num_attention_heads: no head_dim in the file)" };
            let default = if factor == 1.0 {
                "with no partial_rotary_factor in the file, every dimension rotates".to_string()
            } else {
                format!("with no partial_rotary_factor in the file, {family} rotates {factor} of them: {rotary_dim}")
            };
            ConfigError::Invalid {
                field: "head_dim".into(),
                value: head_dim.to_string(),
                why: format!("{rule}{origin}; {default}"),
            }
        }
    }
}

fn scaling(p: &Fields<'_>) -> Result<RopeScaling, ConfigError> {
    // transformers 4.x before 4.43 wrote `type`; later versions `rope_type`.
    let (key, kind) = match p.opt_str("rope_type")? {
        Some(k) => ("rope_type", k),
        None => match p.opt_str("type")? {
            Some(k) => ("type", k),
            // transformers 5.x fills in "default" when rope_parameters has no type.
            None if p.prefix == "rope_parameters" => ("rope_type", "default"),
            None => return Err(p.missing("rope_type", "a string")),
        },
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: p.positive_f64("factor")? }),
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: p.positive_f64("factor")?,
                low_freq_factor: p.positive_f64("low_freq_factor")?,
                high_freq_factor: p.positive_f64("high_freq_factor")?,
                original_max_position_embeddings: p.positive_f64("original_max_position_embeddings")?,
            };
            if let RopeScaling::Llama3 { low_freq_factor: lo, high_freq_factor: hi, .. } = s {
                if hi <= lo {
                    return Err(ConfigError::Invalid {
                        field: p.path("high_freq_factor"),
                        value: hi.to_string(),
                        why: format!("must exceed low_freq_factor ({lo})"),
                    });
                }
            }
            Ok(s)
        }
        other => Err(ConfigError::Unsupported {
            field: p.path(key),
            value: format!("\"{other}\""),
            supported: "\"default\", \"linear\", \"llama3\"".into(),
        }),
    }
}

/// Which layers use a sliding window, as transformers decides it: Mistral
/// windows every layer when `sliding_window` is set (and ignores
/// `layer_types`); Qwen2 windows only with `use_sliding_window`, on the layers
/// that `layer_types` marks `sliding_attention` or, without that list, from
/// `max_window_layers` on; Llama and GLM never window.
fn layer_windows(f: &Fields<'_>, family: Family, num_layers: usize) -> Result<Vec<Option<usize>>, ConfigError> {
    let window = |f: &Fields<'_>| -> Result<Option<usize>, ConfigError> {
        f.opt_usize("sliding_window")?.map(|w| f.check_positive("sliding_window", w)).transpose()
    };
    match family {
        Family::Mistral => Ok(vec![window(f)?; num_layers]),
        Family::Qwen2 => {
            let w = if f.opt_bool("use_sliding_window")?.unwrap_or(false) { window(f)? } else { None };
            let Some(types) = f.get("layer_types") else {
                let from = f.opt_usize("max_window_layers")?.unwrap_or(28);
                return Ok((0..num_layers).map(|i| if i >= from { w } else { None }).collect());
            };
            let list = types.as_array().ok_or_else(|| f.wrong("layer_types", "a list of strings", types))?;
            if list.len() != num_layers {
                return Err(ConfigError::Invalid {
                    field: "layer_types".into(),
                    value: format!("{} entries", list.len()),
                    why: format!("must have one entry per layer (num_hidden_layers = {num_layers})"),
                });
            }
            list.iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => Ok(w),
                    _ => Err(ConfigError::Unsupported {
                        field: format!("layer_types[{i}]"),
                        value: t.to_string(),
                        supported: "\"full_attention\", \"sliding_attention\"".into(),
                    }),
                })
                .collect()
        }
        Family::Llama | Family::Glm | Family::Glm4 => Ok(vec![None; num_layers]),
    }
}

#[cfg(test)]
mod tests;
