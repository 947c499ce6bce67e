//! Greedy generation with timing: one prefill call for every prompt, then
//! one decode call per new token for the whole batch. The argmax runs where
//! the model runs ([`Decoder::next_tokens`]): on a GPU only the new ids come
//! back, once per step.

use super::decoder::{CacheKind, Decoder, Step, StepTiming};
use super::dispatch::{AttentionChoice, ShapeClass};
use super::error::ModelError;
use super::kv_cache::SeqId;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// One prompt per sequence (lengths may differ).
    pub prompts: Vec<Vec<u32>>,
    /// Tokens to generate per sequence, the first one included.
    pub max_new: usize,
    pub cache: CacheKind,
}

#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated ids per sequence.
    pub tokens: Vec<Vec<u32>>,
    /// Prefill of every prompt plus the first token's argmax, in seconds.
    pub time_to_first_token: f64,
    /// Wall time of the decode calls (every token after the first).
    pub decode_seconds: f64,
    /// Tokens produced by the decode calls, over all sequences.
    pub decode_tokens: usize,
    /// The decode calls' host time: issuing the forward vs waiting for the
    /// argmax (see [`StepTiming`]).
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
    if request.prompts.is_empty() || request.prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Request("every sequence needs at least one prompt token".into()));
    }
    if request.max_new == 0 {
        return Err(ModelError::Request("max_new must be at least 1".into()));
    }
    let longest = request.prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = longest
        .checked_add(request.max_new)
        .ok_or_else(|| ModelError::Request("prompt length + max_new overflows".into()))?;
    let mut cache = decoder.new_cache(request.cache, request.prompts.len(), capacity)?;
    let seqs: Vec<SeqId> = request.prompts.iter().map(|_| cache.add_sequence()).collect::<Result<_, _>>()?;

    let start = Instant::now();
    let steps: Vec<Step<'_>> = seqs.iter().zip(&request.prompts).map(|(&seq, p)| Step { seq, tokens: p }).collect();
    let first = decoder.next_tokens(cache.as_mut(), &steps)?;
    let mut tokens: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
    let time_to_first_token = start.elapsed().as_secs_f64();
    decoder.take_timing();

    let start = Instant::now();
    for _ in 1..request.max_new {
        let last: Vec<[u32; 1]> = tokens.iter().map(|t| [t[t.len() - 1]]).collect();
        let steps: Vec<Step<'_>> = seqs.iter().zip(&last).map(|(&seq, t)| Step { seq, tokens: t }).collect();
        let next = decoder.next_tokens(cache.as_mut(), &steps)?;
        for (t, id) in tokens.iter_mut().zip(next) {
            t.push(id);
        }
    }
    let decode_seconds = start.elapsed().as_secs_f64();
    Ok(Generation {
        decode_timing: decoder.take_timing(),
        decode_tokens: seqs.len() * (request.max_new - 1),
        tokens,
        time_to_first_token,
        decode_seconds,
        choices: decoder.attention_choices(),
        cache: cache.kind(),
    })
}
