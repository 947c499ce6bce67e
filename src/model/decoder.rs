//! The decoder: token embeddings, then per layer
//! `h += [norm] attn(norm(h))` and `h += [norm] mlp(norm(h))` (the bracketed
//! norms are GLM-4's), a final RMSNorm and the LM head (tied to the
//! embeddings or not). Dense math runs on the [`Engine`] of the chosen
//! device, the KV cache lives there too, and attention runs through the
//! backend selected for that device.

use super::alloc::try_with_capacity;
use super::config::ModelConfig;
use super::dispatch::{AttentionChoice, ShapeClass};
use super::engine::Engine;
use super::engine::PoolStats;
use super::error::ModelError;
use super::kv_cache::{CacheShape, ContiguousCache, KvCache, PagedCache, SeqId};
use super::layer::{AttentionLayer, Projections, Span};
use super::matrix::Matrix;
use super::rope::Rope;
use super::weights::{GateUp, LayerWeights, ModelWeights, Weight};
use crate::device::Device;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask};
use crate::registry::{AttentionConfig, Registry};
use crate::selection::DeviceChoice;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the decoder runs.
#[derive(Clone, Debug)]
pub struct DecoderOptions {
    /// Backend choice (`None` = env, then auto) and device. The device
    /// holds the weights, the activations and the KV cache; `Auto` resolves
    /// once, through `Registry::choose`.
    pub attention: AttentionConfig,
    /// Element type of the KV cache and of the attention problems; `None`
    /// = the model's dtype.
    pub kv_dtype: Option<DType>,
    /// The model's dtype (weights and activations); `None` = auto: the
    /// checkpoint's dtype on a GPU, f32 on the CPU (see [`model_dtype`]).
    pub dtype: Option<DType>,
}

impl Default for DecoderOptions {
    /// The CPU, f32 (model and cache), the backend from the environment or auto.
    fn default() -> Self {
        let attention = AttentionConfig { device: DeviceChoice::Cpu, ..AttentionConfig::default() };
        DecoderOptions { attention, kv_dtype: None, dtype: None }
    }
}

/// The model dtype `requested` resolves to on `device`: as requested, or
/// (auto) the dtype of the checkpoint's embedding table on a GPU — what
/// transformers 5 loads with its default `dtype="auto"` — and f32 on the
/// CPU, where 16-bit arithmetic would only be emulated.
pub fn model_dtype(requested: Option<DType>, device: &Device, weights: &ModelWeights) -> DType {
    match (requested, device) {
        (Some(d), _) => d,
        (None, Device::Cpu) => DType::F32,
        (None, Device::Gpu(_)) => weights.embed.dtype(),
    }
}

/// The device the model runs on: the one named, or for `Auto` the one
/// `Registry::choose` picks for a decode step of this model.
fn resolve_device(config: &ModelConfig, options: &DecoderOptions, guess: DType) -> Result<Device, ModelError> {
    match options.attention.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Gpu(n) => Ok(Device::gpu(n)?),
        DeviceChoice::Auto => {
            let (h, hkv, d) = (config.num_heads, config.num_kv_heads, config.head_dim);
            let dtype = options.kv_dtype.or(options.dtype).unwrap_or(guess);
            let p = AttentionProblem::new(1, 1, 1, h, hkv, d, dtype).with_mask(Mask::Causal);
            let registry = Registry::global().map_err(ModelError::DeviceChoice)?;
            Ok(registry.choose(&p, &options.attention).map_err(ModelError::DeviceChoice)?.device)
        }
    }
}

/// The MLP's projections.
enum Mlp {
    Split {
        gate: Matrix,
        up: Matrix,
        down: Matrix,
        biases: Option<Box<[Matrix; 3]>>,
    },
    /// `[gate; up]` in one matrix (GLM).
    Fused {
        gate_up: Matrix,
        down: Matrix,
    },
}

impl Mlp {
    fn forward(&self, engine: &Engine, x: &Matrix) -> Result<Matrix, ModelError> {
        match self {
            Mlp::Split { gate, up, down, biases } => {
                let [gb, ub, db] = match biases.as_deref() {
                    Some([g, u, d]) => [Some(g), Some(u), Some(d)],
                    None => [None, None, None],
                };
                let g = engine.linear(x, gate, gb)?;
                let u = engine.linear(x, up, ub)?;
                engine.linear(&engine.swiglu(&g, Some(&u))?, down, db)
            }
            Mlp::Fused { gate_up, down } => {
                let both = engine.linear(x, gate_up, None)?;
                engine.linear(&engine.swiglu(&both, None)?, down, None)
            }
        }
    }
}

struct Block {
    input_norm: Matrix,
    post_attention_norm: Matrix,
    post_self_attn_norm: Option<Matrix>,
    post_mlp_norm: Option<Matrix>,
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
    engine: Engine,
    kv_dtype: DType,
    rope: Rope,
    embed: Matrix,
    blocks: Vec<Block>,
    final_norm: Matrix,
    /// `None` when tied to the embeddings.
    lm_head: Option<Matrix>,
    timing: StepTiming,
}

/// Host time of [`Decoder::next_tokens`] calls, split where a GPU step
/// synchronizes: `issue` runs the whole forward on the host (on a GPU:
/// queues every kernel), `wait` is the argmax and the download of the ids
/// (on a GPU: mostly waiting for the queued work). A GPU step whose `wait`
/// is small next to `issue` is bound by the host's launches; one whose
/// `wait` dominates is bound by the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTiming {
    pub issue: Duration,
    pub wait: Duration,
    pub calls: usize,
}

impl Decoder {
    /// Loads `dir/config.json` and the weights next to it.
    pub fn load(dir: &Path, options: DecoderOptions) -> Result<Decoder, ModelError> {
        let config = ModelConfig::from_dir(dir)?;
        let weights = ModelWeights::load(dir, &config)?;
        Decoder::new(config, &weights, options)
    }

    pub fn new(config: ModelConfig, weights: &ModelWeights, options: DecoderOptions) -> Result<Decoder, ModelError> {
        let device = resolve_device(&config, &options, weights.embed.dtype())?;
        let dtype = model_dtype(options.dtype, &device, weights);
        let kv_dtype = options.kv_dtype.unwrap_or(dtype);
        let engine = Engine::new(&device, dtype);
        let blocks = weights
            .layers
            .iter()
            .enumerate()
            .map(|(i, w)| block(i, &config, w, (kv_dtype, &options.attention), &engine))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Decoder {
            rope: Rope::new(&config.rope, config.head_dim)?,
            embed: engine.weight(&weights.embed)?,
            final_norm: engine.weight(&weights.final_norm)?,
            lm_head: weights.lm_head.as_ref().map(|w| engine.weight(w)).transpose()?,
            kv_dtype,
            timing: StepTiming::default(),
            blocks,
            config,
            device,
            engine,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where the model runs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model's dtype (weights and activations).
    pub fn dtype(&self) -> DType {
        self.engine.dtype()
    }

    /// Element type of the KV cache and the attention problems.
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// Where the time of the [`Decoder::next_tokens`] calls since the last
    /// call of this went; resets the counters.
    pub fn take_timing(&mut self) -> StepTiming {
        std::mem::take(&mut self.timing)
    }

    /// The GPU buffer pool's counters (`None` on the CPU).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match &self.engine {
            Engine::Gpu(g) => Some(g.pool_stats()),
            Engine::Host(_) => None,
        }
    }

    /// A cache for this model on its device: `sequences` slots of
    /// `capacity` tokens (contiguous), or a pool with room for that many
    /// tokens (paged).
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
        let d = &self.device;
        Ok(match kind {
            CacheKind::Contiguous => Box::new(ContiguousCache::on(d, shape, sequences, capacity)?),
            CacheKind::Paged { block_size } => {
                let blocks = sequences.saturating_mul(capacity.div_ceil(block_size.max(1)));
                Box::new(PagedCache::on(d, shape, block_size, blocks)?)
            }
        })
    }

    /// Runs the new tokens of every step through the model, appending to
    /// `cache`, and returns logits per step (in step order): `[1, vocab]` or
    /// `[tokens, vocab]` flattened, as `which` says. On error the cache keeps
    /// its committed lengths (the steps' tokens are not committed).
    pub fn forward(
        &mut self,
        cache: &mut dyn KvCache,
        steps: &[Step<'_>],
        which: LogitsFor,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let (logits, spans, order) = self.logits(cache, steps, which)?;
        let logits = logits.to_vec()?;
        // Back to step order.
        let vocab = self.config.vocab_size;
        let mut out = vec![Vec::new(); steps.len()];
        let mut at = 0;
        for (span, &step) in spans.iter().zip(&order) {
            let n = if which == LogitsFor::All { span.len } else { 1 };
            out[step] = logits[at * vocab..(at + n) * vocab].to_vec();
            at += n;
        }
        Ok(out)
    }

    /// Like [`Decoder::forward`] with [`LogitsFor::Last`], but returns each
    /// step's greedy next token (argmax of its last logits row, the first on
    /// ties). On a GPU the argmax runs there and only the ids come back: the
    /// one host synchronization of a decode step. A step whose logits have
    /// nothing above -inf (all NaN, say) is [`ModelError::Greedy`] naming
    /// the step's index.
    pub fn next_tokens(&mut self, cache: &mut dyn KvCache, steps: &[Step<'_>]) -> Result<Vec<u32>, ModelError> {
        let start = Instant::now();
        let (logits, _, order) = self.logits(cache, steps, LogitsFor::Last)?;
        let issued = Instant::now();
        let ids = self.engine.argmax(&logits).map_err(|e| match e {
            // Rows are in span order; the caller knows steps.
            ModelError::Greedy { seq, source } => ModelError::Greedy { seq: order[seq], source },
            e => e,
        })?;
        self.timing.issue += issued - start;
        self.timing.wait += issued.elapsed();
        self.timing.calls += 1;
        let mut out = vec![0; steps.len()];
        for (&id, &step) in ids.iter().zip(&order) {
            out[step] = id;
        }
        Ok(out)
    }

    /// Each step's logits for its last token, in step order, with the
    /// same timing as [`Decoder::next_tokens`] (`wait` covers the download
    /// of these rows: on a GPU only `steps.len() × vocab` values come back).
    pub fn last_logits(&mut self, cache: &mut dyn KvCache, steps: &[Step<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let start = Instant::now();
        let (logits, _, order) = self.logits(cache, steps, LogitsFor::Last)?;
        let issued = Instant::now();
        let flat = logits.to_vec()?;
        self.timing.issue += issued - start;
        self.timing.wait += issued.elapsed();
        self.timing.calls += 1;
        let mut out = vec![Vec::new(); steps.len()];
        for (row, &step) in flat.chunks_exact(logits.cols().max(1)).zip(&order) {
            out[step] = row.to_vec();
        }
        Ok(out)
    }

    /// The logits rows `which` names, in span order, with the spans and
    /// each span's step index.
    fn logits(
        &mut self,
        cache: &mut dyn KvCache,
        steps: &[Step<'_>],
        which: LogitsFor,
    ) -> Result<(Matrix, Vec<Span>, Vec<usize>), ModelError> {
        if !super::kv_cache::same_device(&cache.device(), &self.device) {
            return Err(ModelError::Request(format!(
                "the cache is on {}, the model on {}",
                cache.device().label(),
                self.device.label()
            )));
        }
        let (spans, order) = self.prepare(cache, steps)?;
        // Fallible: a prefill's token count is the request's.
        let tokens: usize = spans.iter().map(|s| s.len).sum();
        let mut ids = try_with_capacity(tokens, || format!("the token ids of {tokens} tokens"))?;
        ids.extend(order.iter().flat_map(|&i| steps[i].tokens.iter().copied()));
        let mut positions = try_with_capacity(tokens, || format!("the positions of {tokens} tokens"))?;
        positions.extend(spans.iter().flat_map(|s| s.start..s.start + s.len));
        let h = self.blocks_forward(&ids, positions, &spans, cache)?;
        for s in &spans {
            cache.commit(s.seq, s.len)?;
        }
        let rows: Vec<usize> = spans
            .iter()
            .flat_map(|s| match which {
                LogitsFor::All => s.first_row..s.first_row + s.len,
                LogitsFor::Last => s.first_row + s.len - 1..s.first_row + s.len,
            })
            .collect();
        let engine = &self.engine;
        let x = engine.rms_norm(&engine.select_rows(&h, &rows)?, &self.final_norm, self.config.rms_norm_eps)?;
        let logits = engine.linear(&x, self.lm_head.as_ref().unwrap_or(&self.embed), None)?;
        Ok((logits, spans, order))
    }

    /// Embeddings and every block; returns the residual stream `h`. Each
    /// residual add is fused with the RMSNorm that follows it (the block's
    /// post-attention norm, the next block's input norm).
    fn blocks_forward(
        &mut self,
        ids: &[u32],
        positions: Vec<usize>,
        spans: &[Span],
        cache: &mut dyn KvCache,
    ) -> Result<Matrix, ModelError> {
        let engine = &self.engine;
        let eps = self.config.rms_norm_eps;
        let rope_in = engine.rope_input(&self.rope, positions)?;
        let mut h = engine.embed(&self.embed, ids)?;
        let Some(first) = self.blocks.first() else { return Ok(h) };
        let mut x = engine.rms_norm(&h, &first.input_norm, eps)?;
        for i in 0..self.blocks.len() {
            let (done, rest) = self.blocks.split_at_mut(i + 1);
            let block = &mut done[i];
            let mut a = block.attention.forward(engine, &x, spans, (&self.rope, &rope_in), cache)?;
            if let Some(w) = &block.post_self_attn_norm {
                a = engine.rms_norm(&a, w, eps)?;
            }
            let xm = engine.add_rms_norm(&mut h, &a, &block.post_attention_norm, eps)?;
            let mut m = block.mlp.forward(engine, &xm)?;
            if let Some(w) = &block.post_mlp_norm {
                m = engine.rms_norm(&m, w, eps)?;
            }
            match rest.first() {
                Some(next) => x = engine.add_rms_norm(&mut h, &m, &next.input_norm, eps)?,
                None => engine.add(&mut h, &m)?,
            }
        }
        Ok(h)
    }

    /// Checks the steps, reserves cache room for them and lays out their
    /// rows: steps sorted by (cached length, new tokens) so that those that
    /// can share an attention call are adjacent. Returns the spans in row
    /// order and, for each, the index of its step.
    fn prepare(&self, cache: &mut dyn KvCache, steps: &[Step<'_>]) -> Result<(Vec<Span>, Vec<usize>), ModelError> {
        let mut starts = Vec::with_capacity(steps.len());
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
            starts.push(cache.len(step.seq)?);
        }
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| (starts[i], steps[i].tokens.len(), i));
        for &i in &order {
            cache.reserve(steps[i].seq, steps[i].tokens.len())?;
        }
        let mut spans = Vec::with_capacity(steps.len());
        let mut first_row = 0;
        for &i in &order {
            let len = steps[i].tokens.len();
            spans.push(Span { seq: steps[i].seq, start: starts[i], len, first_row });
            first_row += len;
        }
        Ok((spans, order))
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
    (kv_dtype, attention): (DType, &AttentionConfig),
    engine: &Engine,
) -> Result<Block, ModelError> {
    let opt = |b: &Option<super::weights::Weight>| b.as_ref().map(|b| engine.weight(b)).transpose();
    let qkv = Weight::stacked(&[&w.q, &w.k, &w.v])
        .ok_or_else(|| ModelError::Request(format!("layer {i}: q, k and v weights do not stack")))?;
    let proj = Projections {
        qkv: engine.weight(&qkv)?,
        qkv_bias: Weight::stacked_biases([&w.q_bias, &w.k_bias, &w.v_bias], [&w.q, &w.k, &w.v])
            .map(|b| engine.weight(&b))
            .transpose()?,
        o: engine.weight(&w.o)?,
        o_bias: opt(&w.o_bias)?,
    };
    let attention = AttentionLayer::new(i, c, proj, kv_dtype, attention.clone(), engine.device());
    let down = engine.weight(&w.down)?;
    let mlp = match &w.gate_up {
        GateUp::Split { gate, up, gate_bias, up_bias } => match (gate_bias, up_bias, &w.down_bias) {
            (Some(g), Some(u), Some(d)) => Mlp::Split {
                gate: engine.weight(gate)?,
                up: engine.weight(up)?,
                down,
                biases: Some(Box::new([engine.weight(g)?, engine.weight(u)?, engine.weight(d)?])),
            },
            // Without biases gate and up become one [gate; up] matrix: one
            // GEMM (and one launch) instead of two.
            _ => match Weight::stacked(&[gate, up]) {
                Some(both) => Mlp::Fused { gate_up: engine.weight(&both)?, down },
                None => Mlp::Split { gate: engine.weight(gate)?, up: engine.weight(up)?, down, biases: None },
            },
        },
        GateUp::Fused(gate_up) => Mlp::Fused { gate_up: engine.weight(gate_up)?, down },
    };
    Ok(Block {
        input_norm: engine.weight(&w.input_norm)?,
        post_attention_norm: engine.weight(&w.post_attention_norm)?,
        post_self_attn_norm: opt(&w.post_self_attn_norm)?,
        post_mlp_norm: opt(&w.post_mlp_norm)?,
        attention,
        mlp,
    })
}
