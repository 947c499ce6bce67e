//! Model weights from `model.safetensors`, or from the shards listed in
//! `model.safetensors.index.json`, checked against the config: every tensor
//! the decoder needs must be present with the shape the config implies, in
//! f32, f16 or bf16, and no unexpected tensor may be left over (a leftover
//! usually means the config does not describe these weights). Errors name
//! the file and the tensor; a damaged file is described in words (offsets,
//! shapes, lengths) by [`crate::io::check_safetensors`] before the
//! `safetensors` crate parses it.

mod layout;

use super::config::ModelConfig;
use crate::dtype::DType;
use crate::io::{check_safetensors, crate_error_text};
use crate::tensor::HostData;
use layout::{weight_files, Layout};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One weight tensor, in the dtype it was stored in.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl Weight {
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements widened to f32 (exact for every supported dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.to_f32()
    }

    /// The rows of `parts` one after the other, `[Σ rows, cols]` (or one
    /// vector of `[Σ n]` for vectors): in their dtype when they share one, else
    /// widened to f32 (exact). `None` when the column counts differ. Stacking
    /// changes no value: each output of the stacked GEMM is the same dot
    /// product as before.
    pub fn stacked(parts: &[&Weight]) -> Option<Weight> {
        let first = parts.first()?;
        let cols = match first.shape.as_slice() {
            [_] => None,
            [_, c] => Some(*c),
            _ => return None,
        };
        let mut rows = 0;
        for w in parts {
            match (w.shape.as_slice(), cols) {
                ([n], None) => rows += n,
                ([r, c], Some(cols)) if *c == cols => rows += r,
                _ => return None,
            }
        }
        fn concat<'w, T: Copy + 'w>(
            parts: &[&'w Weight],
            get: impl Fn(&'w HostData) -> Option<&'w [T]>,
        ) -> Option<Vec<T>> {
            let mut out = Vec::new();
            for w in parts {
                out.extend_from_slice(get(&w.data)?);
            }
            Some(out)
        }
        let same = match first.dtype() {
            DType::F32 => concat(parts, |d| if let HostData::F32(v) = d { Some(v) } else { None }).map(HostData::F32),
            DType::F16 => concat(parts, |d| if let HostData::F16(v) = d { Some(v) } else { None }).map(HostData::F16),
            DType::BF16 => {
                concat(parts, |d| if let HostData::BF16(v) = d { Some(v) } else { None }).map(HostData::BF16)
            }
        };
        let data = same.unwrap_or_else(|| HostData::F32(parts.iter().flat_map(|w| w.to_f32()).collect()));
        let shape = match cols {
            Some(c) => vec![rows, c],
            None => vec![rows],
        };
        Some(Weight { shape, data })
    }

    /// The q/k/v biases as one vector for the stacked projection: `None`
    /// without any, zeros for a missing one (adding 0 changes nothing).
    pub fn stacked_biases(biases: [&Option<Weight>; 3], weights: [&Weight; 3]) -> Option<Weight> {
        if biases.iter().all(|b| b.is_none()) {
            return None;
        }
        let dtype = biases.iter().flat_map(|b| b.as_ref()).next().map_or(DType::F32, Weight::dtype);
        let zeros: Vec<Weight> = weights
            .iter()
            .map(|w| {
                let n = w.shape.first().copied().unwrap_or(0);
                Weight { shape: vec![n], data: HostData::from_f32(dtype, &vec![0.0; n]) }
            })
            .collect();
        let parts: Vec<&Weight> = biases.iter().zip(&zeros).map(|(b, z)| b.as_ref().unwrap_or(z)).collect();
        Weight::stacked(&parts)
    }
}

/// The MLP's input projections: separate, or one fused `[gate; up]` matrix (GLM).
#[derive(Clone, Debug, PartialEq)]
pub enum GateUp {
    Split { gate: Weight, up: Weight, gate_bias: Option<Weight>, up_bias: Option<Weight> },
    Fused(Weight),
}

/// One decoder layer's weights. Matrices are `[out, in]` as in `nn.Linear`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub input_norm: Weight,
    pub post_attention_norm: Weight,
    /// GLM-4 (`glm4`) only: norms of the attention and MLP outputs.
    pub post_self_attn_norm: Option<Weight>,
    pub post_mlp_norm: Option<Weight>,
    pub q: Weight,
    pub k: Weight,
    pub v: Weight,
    pub q_bias: Option<Weight>,
    pub k_bias: Option<Weight>,
    pub v_bias: Option<Weight>,
    pub o: Weight,
    pub o_bias: Option<Weight>,
    pub gate_up: GateUp,
    pub down: Weight,
    pub down_bias: Option<Weight>,
}

/// Every weight of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWeights {
    pub embed: Weight,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Weight,
    /// `None` when the LM head is tied to the embeddings.
    pub lm_head: Option<Weight>,
}

/// What went wrong loading weights. `file` is the file being read.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: no {SINGLE_FILE} or {INDEX_FILE} in the model directory", .dir.display())]
    NoWeights { dir: PathBuf },
    /// The weights path exists but is a directory, a dangling symbolic link, ...
    #[error("{}: {why}", .file.display())]
    NotAFile { file: PathBuf, why: String },
    #[error("{}: cannot read: {source}", .file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: not a valid safetensors file: {why}", .file.display())]
    Format { file: PathBuf, why: String },
    #[error("{}: bad index: {why}", .file.display())]
    Index { file: PathBuf, why: String },
    #[error("{}: tensor `{tensor}` is missing", .file.display())]
    Missing { file: PathBuf, tensor: String },
    #[error("{}: tensor `{tensor}` has shape {got:?}, the config implies {expected:?}", .file.display())]
    Shape { file: PathBuf, tensor: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("{}: tensor `{tensor}` has dtype {got}; supported: F32, F16, BF16", .file.display())]
    DType { file: PathBuf, tensor: String, got: String },
    #[error("{}: unexpected tensor `{tensor}` (does config.json describe these weights?)", .file.display())]
    Unexpected { file: PathBuf, tensor: String },
}

/// Tensor names as transformers saves them.
fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

/// The safetensors files of a model directory, parsed once, and where each
/// tensor lives.
struct Sources<'b> {
    files: Vec<(PathBuf, SafeTensors<'b>)>,
    /// Tensor name -> index into `files`.
    location: HashMap<String, usize>,
    /// Where a missing tensor would have been expected (for messages).
    default_file: PathBuf,
}

impl<'b> Sources<'b> {
    fn parse(layout: &Layout, buffers: &'b [Vec<u8>]) -> Result<Sources<'b>, WeightsError> {
        let paths = &layout.files;
        let mut files = Vec::new();
        let mut location = HashMap::new();
        for (i, (path, bytes)) in paths.iter().zip(buffers).enumerate() {
            let parsed = SafeTensors::deserialize(bytes)
                .map_err(|e| WeightsError::Format { file: path.clone(), why: crate_error_text(&e).to_string() })?;
            for name in parsed.names() {
                location.insert(name.clone(), i);
            }
            files.push((path.clone(), parsed));
        }
        // Every tensor the index lists must be in the shard it names.
        let mut default_file = paths[0].clone();
        if let Some((index_file, entries)) = &layout.index {
            for (tensor, shard) in entries {
                if location.get(tensor).map(|&i| &files[i].0) != Some(shard) {
                    return Err(WeightsError::Missing { file: shard.clone(), tensor: tensor.clone() });
                }
            }
            default_file = index_file.clone();
        }
        Ok(Sources { files, location, default_file })
    }

    /// Removes `name` from the set still to be consumed and decodes it,
    /// checking its shape.
    fn take(&mut self, name: &str, expected: &[usize]) -> Result<Weight, WeightsError> {
        let Some(i) = self.location.remove(name) else {
            return Err(WeightsError::Missing { file: self.default_file.clone(), tensor: name.to_string() });
        };
        let (file, parsed) = &self.files[i];
        let view = parsed
            .tensor(name)
            .map_err(|e| WeightsError::Format { file: file.clone(), why: crate_error_text(&e).to_string() })?;
        if view.shape() != expected {
            return Err(WeightsError::Shape {
                file: file.clone(),
                tensor: name.to_string(),
                got: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(WeightsError::DType {
                    file: file.clone(),
                    tensor: name.to_string(),
                    got: format!("{other:?}"),
                })
            }
        };
        // The crate has checked that the data length matches shape and dtype.
        let data = crate::io::host_from_le(dtype, view.data())
            .map_err(|e| WeightsError::Format { file: file.clone(), why: e.to_string() })?;
        Ok(Weight { shape: expected.to_vec(), data })
    }

    fn take_if(&mut self, present: bool, name: &str, expected: &[usize]) -> Result<Option<Weight>, WeightsError> {
        present.then(|| self.take(name, expected)).transpose()
    }

    /// Fails on the first tensor nobody asked for (in name order).
    fn finish(self) -> Result<(), WeightsError> {
        let leftover: BTreeMap<&String, &usize> = self.location.iter().collect();
        match leftover.into_iter().next() {
            None => Ok(()),
            Some((name, &i)) => Err(WeightsError::Unexpected { file: self.files[i].0.clone(), tensor: name.clone() }),
        }
    }
}

impl ModelWeights {
    /// Loads and checks every weight of the model in `dir`.
    pub fn load(dir: &Path, config: &ModelConfig) -> Result<ModelWeights, WeightsError> {
        let layout = weight_files(dir)?;
        let buffers = layout.files.iter().map(|p| read_checked(p)).collect::<Result<Vec<_>, _>>()?;
        let mut src = Sources::parse(&layout, &buffers)?;
        let weights = ModelWeights::take_all(&mut src, config)?;
        src.finish()?;
        Ok(weights)
    }

    fn take_all(src: &mut Sources<'_>, c: &ModelConfig) -> Result<ModelWeights, WeightsError> {
        let (h, v) = (c.hidden_size, c.vocab_size);
        let embed = src.take("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..c.num_layers).map(|i| take_layer(src, c, i)).collect::<Result<Vec<_>, _>>()?;
        let final_norm = src.take("model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings {
            // Tied checkpoints may still carry a copy; it is not used.
            if src.location.contains_key("lm_head.weight") {
                src.take("lm_head.weight", &[v, h])?;
            }
            None
        } else {
            Some(src.take("lm_head.weight", &[v, h])?)
        };
        Ok(ModelWeights { embed, layers, final_norm, lm_head })
    }

    /// The dtypes the weights were stored in (usually one).
    pub fn dtypes(&self) -> Vec<DType> {
        let mut out: Vec<DType> = vec![self.embed.dtype()];
        for l in &self.layers {
            for w in [&l.q, &l.k, &l.v, &l.o, &l.down] {
                if !out.contains(&w.dtype()) {
                    out.push(w.dtype());
                }
            }
        }
        out
    }
}

/// A weights file, read whole and its header checked (before the next
/// shard is read, so a damaged shard fails early).
fn read_checked(path: &Path) -> Result<Vec<u8>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read { file: path.to_path_buf(), source })?;
    check_safetensors(&bytes).map_err(|e| WeightsError::Format { file: path.to_path_buf(), why: e.to_string() })?;
    Ok(bytes)
}

fn take_layer(src: &mut Sources<'_>, c: &ModelConfig, i: usize) -> Result<LayerWeights, WeightsError> {
    let (h, q, kv, inter) = (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size);
    let n = |rest: &str| layer_name(i, rest);
    let post = c.family.post_sublayer_norms();
    let gate_up = if c.family.fused_gate_up() {
        GateUp::Fused(src.take(&n("mlp.gate_up_proj.weight"), &[2 * inter, h])?)
    } else {
        GateUp::Split {
            gate: src.take(&n("mlp.gate_proj.weight"), &[inter, h])?,
            up: src.take(&n("mlp.up_proj.weight"), &[inter, h])?,
            gate_bias: src.take_if(c.mlp_bias, &n("mlp.gate_proj.bias"), &[inter])?,
            up_bias: src.take_if(c.mlp_bias, &n("mlp.up_proj.bias"), &[inter])?,
        }
    };
    Ok(LayerWeights {
        input_norm: src.take(&n("input_layernorm.weight"), &[h])?,
        post_attention_norm: src.take(&n("post_attention_layernorm.weight"), &[h])?,
        post_self_attn_norm: src.take_if(post, &n("post_self_attn_layernorm.weight"), &[h])?,
        post_mlp_norm: src.take_if(post, &n("post_mlp_layernorm.weight"), &[h])?,
        q: src.take(&n("self_attn.q_proj.weight"), &[q, h])?,
        k: src.take(&n("self_attn.k_proj.weight"), &[kv, h])?,
        v: src.take(&n("self_attn.v_proj.weight"), &[kv, h])?,
        q_bias: src.take_if(c.qkv_bias, &n("self_attn.q_proj.bias"), &[q])?,
        k_bias: src.take_if(c.qkv_bias, &n("self_attn.k_proj.bias"), &[kv])?,
        v_bias: src.take_if(c.qkv_bias, &n("self_attn.v_proj.bias"), &[kv])?,
        o: src.take(&n("self_attn.o_proj.weight"), &[h, q])?,
        o_bias: src.take_if(c.o_bias, &n("self_attn.o_proj.bias"), &[h])?,
        gate_up,
        down: src.take(&n("mlp.down_proj.weight"), &[h, inter])?,
        down_bias: src.take_if(c.mlp_bias, &n("mlp.down_proj.bias"), &[h])?,
    })
}

#[cfg(test)]
mod tests;
