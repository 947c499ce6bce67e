//! The decoder: token embeddings, then per layer
//! `h += [norm] attn(norm(h))` and `h += [norm] mlp(norm(h))` (the bracketed
//! norms are GLM-4's), a final RMSNorm and the LM head (tied to the
//! embeddings or not). Dense math runs on the host in f32; attention runs
//! through the selected backend on the options' device.

use super::config::ModelConfig;
use super::dispatch::{AttentionChoice, ShapeClass};
use super::error::ModelError;
use super::kv_cache::{CacheShape, ContiguousCache, KvCache, PagedCache, SeqId};
use super::layer::{AttentionLayer, Projections, Span};
use super::ops::{add_in_place, rms_norm, swiglu, Linear};
use super::weights::{GateUp, LayerWeights, ModelWeights, Weight};
use crate::device::Device;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask};
use crate::registry::{AttentionConfig, Registry};
use crate::selection::DeviceChoice;
use std::collections::BTreeMap;
use std::path::Path;

/// How the decoder runs.
#[derive(Clone, Debug)]
pub struct DecoderOptions {
    /// Backend choice (`None` = env, then auto) and device of every
    /// attention layer. `Auto` resolves once, through `Registry::choose`.
    pub attention: AttentionConfig,
    /// Element type of the KV cache and of the attention problems.
    pub kv_dtype: DType,
}

impl Default for DecoderOptions {
    /// The CPU (the dense layers run on the host), f32 cache, backend from
    /// the environment or auto.
    fn default() -> Self {
        let attention = AttentionConfig { device: DeviceChoice::Cpu, ..AttentionConfig::default() };
        DecoderOptions { attention, kv_dtype: DType::F32 }
    }
}

/// The device attention runs on: the one named, or for `Auto` the one
/// `Registry::choose` picks for a decode step of this model.
fn resolve_device(config: &ModelConfig, options: &DecoderOptions) -> Result<Device, ModelError> {
    match options.attention.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Gpu(n) => Ok(Device::gpu(n)?),
        DeviceChoice::Auto => {
            let p = AttentionProblem::new(
                1,
                1,
                1,
                config.num_heads,
                config.num_kv_heads,
                config.head_dim,
                options.kv_dtype,
            )
            .with_mask(Mask::Causal);
            let registry = Registry::global().map_err(ModelError::DeviceChoice)?;
            Ok(registry.choose(&p, &options.attention).map_err(ModelError::DeviceChoice)?.device)
        }
    }
}

/// The MLP's projections.
enum Mlp {
    Split {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// `[gate; up]` in one matrix (GLM).
    Fused {
        gate_up: Linear,
        down: Linear,
    },
}

impl Mlp {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Mlp::Split { gate, up, down } => down.forward(&swiglu(&gate.forward(x), &up.forward(x))),
            Mlp::Fused { gate_up, down } => {
                let both = gate_up.forward(x);
                let inter = gate_up.out_features / 2;
                let (mut g, mut u) = (Vec::with_capacity(both.len() / 2), Vec::with_capacity(both.len() / 2));
                for row in both.chunks_exact(2 * inter) {
                    g.extend_from_slice(&row[..inter]);
                    u.extend_from_slice(&row[inter..]);
                }
                down.forward(&swiglu(&g, &u))
            }
        }
    }
}

struct Block {
    input_norm: Vec<f32>,
    post_attention_norm: Vec<f32>,
    post_self_attn_norm: Option<Vec<f32>>,
    post_mlp_norm: Option<Vec<f32>>,
    attention: AttentionLayer,
    mlp: Mlp,
}

/// Which logits `forward` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only each sequence's last new token (generation).
    Last,
    /// Every new token (scoring, tests).
    All,
}

/// New tokens for one sequence.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
}

/// Which cache layout to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    Contiguous,
    Paged { block_size: usize },
}

pub struct Decoder {
    config: ModelConfig,
    device: Device,
    kv_dtype: DType,
    embed: Vec<f32>,
    blocks: Vec<Block>,
    final_norm: Vec<f32>,
    lm_head: Linear,
}

fn linear(w: &Weight, bias: Option<&Weight>) -> Linear {
    Linear::new(w.to_f32(), bias.map(Weight::to_f32), w.shape[0], w.shape[1])
}

impl Decoder {
    /// Loads `dir/config.json` and the weights next to it.
    pub fn load(dir: &Path, options: DecoderOptions) -> Result<Decoder, ModelError> {
        let config = ModelConfig::from_dir(dir)?;
        let weights = ModelWeights::load(dir, &config)?;
        Decoder::new(config, &weights, options)
    }

    pub fn new(config: ModelConfig, weights: &ModelWeights, options: DecoderOptions) -> Result<Decoder, ModelError> {
        let device = resolve_device(&config, &options)?;
        let blocks = weights
            .layers
            .iter()
            .enumerate()
            .map(|(i, w)| block(i, &config, w, &options, &device))
            .collect::<Result<Vec<_>, _>>()?;
        let lm_head = linear(weights.lm_head.as_ref().unwrap_or(&weights.embed), None);
        Ok(Decoder {
            device,
            kv_dtype: options.kv_dtype,
            embed: weights.embed.to_f32(),
            blocks,
            final_norm: weights.final_norm.to_f32(),
            lm_head,
            config,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where attention runs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A cache for this model: `sequences` slots of `capacity` tokens
    /// (contiguous), or a pool with room for that many tokens (paged).
    pub fn new_cache(
        &self,
        kind: CacheKind,
        sequences: usize,
        capacity: usize,
    ) -> Result<Box<dyn KvCache>, ModelError> {
        let c = &self.config;
        let shape = CacheShape {
            num_layers: c.num_layers,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            dtype: self.kv_dtype,
        };
        Ok(match kind {
            CacheKind::Contiguous => Box::new(ContiguousCache::new(shape, sequences, capacity)?),
            CacheKind::Paged { block_size } => {
                let blocks = sequences.saturating_mul(capacity.div_ceil(block_size.max(1)));
                Box::new(PagedCache::new(shape, block_size, blocks)?)
            }
        })
    }

    /// Runs the new tokens of every step through the model, appending to
    /// `cache`, and returns logits per step: `[1, vocab]` or `[tokens, vocab]`
    /// flattened, as `which` says. On error the cache keeps its committed
    /// lengths (the steps' tokens are not committed).
    pub fn forward(
        &mut self,
        cache: &mut dyn KvCache,
        steps: &[Step<'_>],
        which: LogitsFor,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let spans = self.prepare(cache, steps)?;
        let hidden_size = self.config.hidden_size;
        let mut h: Vec<f32> = Vec::with_capacity(spans.iter().map(|s| s.len).sum::<usize>() * hidden_size);
        for step in steps {
            for &t in step.tokens {
                h.extend_from_slice(&self.embed[t as usize * hidden_size..(t as usize + 1) * hidden_size]);
            }
        }
        let eps = self.config.rms_norm_eps;
        for block in &mut self.blocks {
            let mut a = block.attention.forward(&rms_norm(&h, &block.input_norm, eps), &spans, cache)?;
            if let Some(w) = &block.post_self_attn_norm {
                a = rms_norm(&a, w, eps);
            }
            add_in_place(&mut h, &a);
            let mut m = block.mlp.forward(&rms_norm(&h, &block.post_attention_norm, eps));
            if let Some(w) = &block.post_mlp_norm {
                m = rms_norm(&m, w, eps);
            }
            add_in_place(&mut h, &m);
        }
        for s in &spans {
            cache.commit(s.seq, s.len)?;
        }
        let mut out = Vec::with_capacity(spans.len());
        for s in &spans {
            let rows = match which {
                LogitsFor::All => s.first_row..s.first_row + s.len,
                LogitsFor::Last => s.first_row + s.len - 1..s.first_row + s.len,
            };
            let x = rms_norm(&h[rows.start * hidden_size..rows.end * hidden_size], &self.final_norm, eps);
            out.push(self.lm_head.forward(&x));
        }
        Ok(out)
    }

    /// Checks the steps, reserves cache room for them and lays out their rows.
    fn prepare(&self, cache: &mut dyn KvCache, steps: &[Step<'_>]) -> Result<Vec<Span>, ModelError> {
        let mut spans = Vec::with_capacity(steps.len());
        let mut first_row = 0;
        for (i, step) in steps.iter().enumerate() {
            if step.tokens.is_empty() {
                return Err(ModelError::Request(format!("step {i} ({}) has no tokens", step.seq)));
            }
            if steps[..i].iter().any(|o| o.seq == step.seq) {
                return Err(ModelError::Request(format!("{} appears twice in one forward call", step.seq)));
            }
            let vocab_size = self.config.vocab_size;
            if let Some((position, &token)) = step.tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab_size) {
                return Err(ModelError::Token { token, position, vocab_size });
            }
            let start = cache.len(step.seq)?;
            cache.reserve(step.seq, step.tokens.len())?;
            spans.push(Span { seq: step.seq, start, len: step.tokens.len(), first_row });
            first_row += step.tokens.len();
        }
        Ok(spans)
    }

    /// For each shape class, every layer's choice (layer index, choice).
    pub fn attention_choices(&self) -> BTreeMap<ShapeClass, Vec<(usize, AttentionChoice)>> {
        let mut out: BTreeMap<ShapeClass, Vec<(usize, AttentionChoice)>> = BTreeMap::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for (class, choice) in b.attention.choices() {
                out.entry(class).or_default().push((i, choice));
            }
        }
        out
    }
}

fn block(
    i: usize,
    c: &ModelConfig,
    w: &LayerWeights,
    options: &DecoderOptions,
    device: &Device,
) -> Result<Block, ModelError> {
    let proj = Projections {
        q: linear(&w.q, w.q_bias.as_ref()),
        k: linear(&w.k, w.k_bias.as_ref()),
        v: linear(&w.v, w.v_bias.as_ref()),
        o: linear(&w.o, w.o_bias.as_ref()),
    };
    let attention = AttentionLayer::new(i, c, proj, options.kv_dtype, options.attention.clone(), device.clone())?;
    let down = linear(&w.down, w.down_bias.as_ref());
    let mlp = match &w.gate_up {
        GateUp::Split { gate, up, gate_bias, up_bias } => {
            Mlp::Split { gate: linear(gate, gate_bias.as_ref()), up: linear(up, up_bias.as_ref()), down }
        }
        GateUp::Fused(gate_up) => Mlp::Fused { gate_up: linear(gate_up, None), down },
    };
    Ok(Block {
        input_norm: w.input_norm.to_f32(),
        post_attention_norm: w.post_attention_norm.to_f32(),
        post_self_attn_norm: w.post_self_attn_norm.as_ref().map(Weight::to_f32),
        post_mlp_norm: w.post_mlp_norm.as_ref().map(Weight::to_f32),
        attention,
        mlp,
    })
}
