//! The model layer: a small decoder (Llama, Mistral, Qwen2, GLM families)
//! whose attention goes through the library's backend selection.
//!
//! - [`config`]: [`ModelConfig`] from a Hugging Face `config.json`.
//! - [`rope`]: rotary position embeddings (NeoX half-split, interleaved
//!   pairs, partial rotary, GLM 2D positions, linear / llama3 scaling).
//! - [`weights`]: `model.safetensors` (or a sharded index) checked against
//!   the config.
//! - [`kv_cache`]: contiguous and paged key/value caches behind one trait.
//! - [`layer`]: the attention layer (QKV, RoPE, cache, attention, output),
//!   with [`dispatch`] choosing and caching its backend per shape class.
//! - [`decoder`]: embeddings, norms, MLP, LM head; [`generate`]: greedy or
//!   sampled generation ([`sampling`]) with timing, stopping at the model's
//!   EOS ids ([`stop_tokens`]); [`footprint`]: what a generation will
//!   allocate, counted before it does; [`alloc`]: fallible host allocations.

pub mod alloc;
pub mod config;
pub mod decoder;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod footprint;
pub mod generate;
pub mod kv_cache;
pub mod layer;
pub mod matrix;
pub mod ops;
pub mod rope;
pub mod sampling;
pub mod stop_tokens;
pub mod weights;

pub use alloc::AllocError;
pub use config::{ConfigError, Family, ModelConfig, RopeScaling, RopeStyle};
pub use decoder::{model_dtype, CacheKind, Decoder, DecoderOptions, LogitsFor, Step, StepTiming};
pub use dispatch::{AttentionChoice, ShapeClass};
pub use error::ModelError;
pub use footprint::{generate_footprint, FootprintItem, FootprintRequest};
pub use generate::{generate, generate_with, FinishReason, GenerateOptions, GenerateRequest, Generation};
pub use kv_cache::{CacheShape, ContiguousCache, KvCache, KvCacheError, PagedCache, SeqId};
pub use rope::{Positions, Rope, RopeError};
pub use sampling::{greedy_token, Sampling, SamplingError};
pub use stop_tokens::StopTokens;
pub use weights::{ModelWeights, WeightsError};
