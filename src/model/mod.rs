//! The model layer: a small decoder (Llama, Mistral, Qwen2, GLM families)
//! whose attention goes through the library's backend selection.
//!
//! - [`config`]: [`ModelConfig`] from a Hugging Face `config.json`.
//! - [`rope`]: rotary position embeddings (NeoX half-split, interleaved
//!   pairs, partial rotary, GLM 2D positions, linear / llama3 scaling).
//! - [`weights`]: `model.safetensors` (or a sharded index) checked against
//!   the config.
//! - [`kv_cache`]: contiguous and paged key/value caches behind one trait.
//! - [`layer`]: the attention layer (QKV, RoPE, cache, attention, output).
//! - [`decoder`]: embeddings, norms, MLP, LM head, and generation.

pub mod config;
pub mod rope;

pub use config::{ConfigError, Family, ModelConfig, RopeScaling, RopeStyle};
pub use rope::{Positions, Rope, RopeError};
pub mod weights;
pub use weights::{ModelWeights, WeightsError};
pub mod kv_cache;
pub use kv_cache::{CacheShape, ContiguousCache, KvCache, KvCacheError, PagedCache, SeqId};
