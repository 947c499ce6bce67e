//! The model layer's error type: each layer of the stack keeps its own
//! typed error as the source.

use super::alloc::AllocError;
use super::config::ConfigError;
use super::kv_cache::KvCacheError;
use super::rope::RopeError;
use super::sampling::SamplingError;
use super::weights::WeightsError;
use crate::backend::BackendError;
use crate::device::DeviceError;
use crate::registry::SelectError;
use crate::tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("kv cache: {0}")]
    KvCache(#[from] KvCacheError),
    #[error("rope: {0}")]
    Rope(#[from] RopeError),
    #[error("layer {layer}: attention backend selection failed: {source}")]
    Select { layer: usize, source: SelectError },
    #[error("layer {layer}: attention backend {backend} failed: {source}")]
    Backend { layer: usize, backend: &'static str, source: BackendError },
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("choosing the device for attention: {0}")]
    DeviceChoice(SelectError),
    #[error("token id {token} at position {position} is outside the vocabulary (vocab_size {vocab_size})")]
    Token { token: u32, position: usize, vocab_size: usize },
    #[error("sampling{}: {source}", seq.map(|i| format!(" (sequence {i})")).unwrap_or_default())]
    Sampling { seq: Option<usize>, source: SamplingError },
    /// Greedy decoding found no token to pick in a row of logits
    /// ([`super::greedy_token`]). `seq` is the row of the logits matrix in
    /// `Engine::argmax`, the step's index in `Decoder::next_tokens`, and the
    /// sequence's index in the batch in `generate`.
    #[error("greedy decoding (sequence {seq}): {source}")]
    Greedy { seq: usize, source: SamplingError },
    /// The prompt and the tokens to generate need more positions than the
    /// model was trained for.
    #[error(
        "prompt ({prompt} tokens) + max_new ({max_new}) = {} positions exceeds the model's \
         max_position_embeddings ({max_positions})",
        *prompt as u128 + *max_new as u128
    )]
    Context { prompt: usize, max_new: usize, max_positions: usize },
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Alloc(#[from] AllocError),
}
