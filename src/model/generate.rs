//! Generation with timing: one prefill call for every prompt, then one
//! decode call per new token for the sequences still running.
//!
//! Greedy (the default) takes the argmax where the model runs
//! ([`Decoder::next_tokens`]: on a GPU only the new ids come back, once per
//! step). Sampling ([`Sampling`]: temperature, top-k, top-p, a seed)
//! downloads each running sequence's last logits row and draws on the host
//! from the sequence's own generator. A sequence stops after
//! [`GenerateRequest::max_new`] tokens or right after producing one of
//! [`GenerateOptions::stop_tokens`] (kept in its output, as transformers
//! does); finished sequences leave the batch, the others go on.

use super::decoder::{CacheKind, Decoder, Step, StepTiming};
use super::dispatch::{AttentionChoice, ShapeClass};
use super::error::ModelError;
use super::kv_cache::SeqId;
use super::sampling::{Pcg32, Sampling};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// One prompt per sequence (lengths may differ).
    pub prompts: Vec<Vec<u32>>,
    /// Most tokens to generate per sequence, the first one included.
    pub max_new: usize,
    pub cache: CacheKind,
}

/// How tokens are picked and when a sequence ends (default: greedy, no
/// stop tokens, so every sequence runs to `max_new`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateOptions {
    pub sampling: Sampling,
    /// Ids that end a sequence (its EOS ids: see [`super::StopTokens`]).
    pub stop_tokens: Vec<u32>,
}

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced a stop token (the last of its tokens).
    Stop,
    /// It reached `max_new` tokens.
    Length,
}

impl FinishReason {
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "eos",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated ids per sequence.
    pub tokens: Vec<Vec<u32>>,
    /// Why each sequence stopped.
    pub finish: Vec<FinishReason>,
    /// Prefill of every prompt plus the first token's pick, in seconds.
    pub time_to_first_token: f64,
    /// Wall time of the decode calls (every token after the first).
    pub decode_seconds: f64,
    /// Tokens produced by the decode calls, over all sequences.
    pub decode_tokens: usize,
    /// The decode calls' host time: issuing the forward vs waiting for the
    /// argmax or the logits (see [`StepTiming`]).
    pub decode_timing: StepTiming,
    /// Which backend each layer used, per shape class, and why.
    pub choices: BTreeMap<ShapeClass, Vec<(usize, AttentionChoice)>>,
    /// "contiguous" or "paged".
    pub cache: &'static str,
}

impl Generation {
    /// Decode throughput over the whole batch; `None` without decode steps.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        (self.decode_tokens > 0 && self.decode_seconds > 0.0).then(|| self.decode_tokens as f64 / self.decode_seconds)
    }

    /// The distinct backends used for `class`, in layer order.
    pub fn backends(&self, class: ShapeClass) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for (_, choice) in self.choices.get(&class).into_iter().flatten() {
            if !names.contains(&choice.backend) {
                names.push(choice.backend);
            }
        }
        names
    }
}

/// Greedy generation of `request.max_new` tokens for every prompt.
pub fn generate(decoder: &mut Decoder, request: &GenerateRequest) -> Result<Generation, ModelError> {
    generate_with(decoder, request, &GenerateOptions::default())
}

/// The next token of each of `steps` (sequence `indices[i]` of the batch
/// for step `i`): the device's argmax when greedy, else drawn on the host.
fn pick(
    decoder: &mut Decoder,
    cache: &mut dyn super::kv_cache::KvCache,
    steps: &[Step<'_>],
    (sampling, rngs, indices): (&Sampling, &mut [Pcg32], &[usize]),
) -> Result<Vec<u32>, ModelError> {
    if sampling.is_greedy() {
        return decoder.next_tokens(cache, steps).map_err(|e| match e {
            ModelError::Greedy { seq, source } => ModelError::Greedy { seq: indices[seq], source },
            e => e,
        });
    }
    let rows = decoder.last_logits(cache, steps)?;
    rows.iter()
        .zip(indices)
        .map(|(row, &i)| {
            sampling.pick(row, &mut rngs[i]).map_err(|source| ModelError::Sampling { seq: Some(i), source })
        })
        .collect()
}

/// Generation of up to `request.max_new` tokens for every prompt, picked
/// and stopped as `options` say. The longest prompt + `max_new` must not
/// exceed the model's `max_position_embeddings` ([`ModelError::Context`]);
/// greedy decoding stops with [`ModelError::Greedy`] when a sequence's
/// logits have nothing above -inf (a model whose activations became NaN),
/// as sampling does with [`ModelError::Sampling`].
pub fn generate_with(
    decoder: &mut Decoder,
    request: &GenerateRequest,
    options: &GenerateOptions,
) -> Result<Generation, ModelError> {
    if request.prompts.is_empty() || request.prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Request("every sequence needs at least one prompt token".into()));
    }
    if request.max_new == 0 {
        return Err(ModelError::Request("max_new must be at least 1".into()));
    }
    let sampling = &options.sampling;
    sampling.validate().map_err(|source| ModelError::Sampling { seq: None, source })?;
    let longest = request.prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_positions = decoder.config().max_position_embeddings;
    let capacity = longest.checked_add(request.max_new).filter(|&n| n <= max_positions);
    let capacity = capacity.ok_or(ModelError::Context { prompt: longest, max_new: request.max_new, max_positions })?;
    let mut cache = decoder.new_cache(request.cache, request.prompts.len(), capacity)?;
    let seqs: Vec<SeqId> = request.prompts.iter().map(|_| cache.add_sequence()).collect::<Result<_, _>>()?;
    let mut rngs: Vec<Pcg32> = (0..seqs.len()).map(|i| sampling.rng_for(i)).collect();
    let stops = |t: u32| options.stop_tokens.contains(&t);

    let start = Instant::now();
    let all: Vec<usize> = (0..seqs.len()).collect();
    let steps: Vec<Step<'_>> = seqs.iter().zip(&request.prompts).map(|(&seq, p)| Step { seq, tokens: p }).collect();
    let first = pick(decoder, cache.as_mut(), &steps, (sampling, &mut rngs, &all))?;
    let mut finish: Vec<Option<FinishReason>> = first.iter().map(|&t| stops(t).then_some(FinishReason::Stop)).collect();
    let mut tokens: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
    let time_to_first_token = start.elapsed().as_secs_f64();
    decoder.take_timing();

    let start = Instant::now();
    let mut decode_tokens = 0;
    for _ in 1..request.max_new {
        let running: Vec<usize> = (0..seqs.len()).filter(|&i| finish[i].is_none()).collect();
        if running.is_empty() {
            break;
        }
        let last: Vec<[u32; 1]> = running.iter().map(|&i| [tokens[i][tokens[i].len() - 1]]).collect();
        let steps: Vec<Step<'_>> = running.iter().zip(&last).map(|(&i, t)| Step { seq: seqs[i], tokens: t }).collect();
        let next = pick(decoder, cache.as_mut(), &steps, (sampling, &mut rngs, &running))?;
        for (&i, id) in running.iter().zip(next) {
            tokens[i].push(id);
            if stops(id) {
                finish[i] = Some(FinishReason::Stop);
            }
        }
        decode_tokens += running.len();
    }
    let decode_seconds = start.elapsed().as_secs_f64();
    Ok(Generation {
        decode_timing: decoder.take_timing(),
        decode_tokens,
        finish: finish.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect(),
        tokens,
        time_to_first_token,
        decode_seconds,
        choices: decoder.attention_choices(),
        cache: cache.kind(),
    })
}
