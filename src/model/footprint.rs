//! What a generation will allocate beyond the weights, from the config and
//! the request alone, so a caller can compare it with the memory it has
//! before anything is allocated: the KV cache, one layer's gathered keys and
//! values, the prefill's activations and the logits. Sizes are u128 (a
//! product of request sizes cannot overflow while it is only counted).
//!
//! The activations are those of the host engine (f32 matrices, whatever the
//! model dtype); on a GPU they and the cache live in device memory.

use super::config::ModelConfig;
use super::decoder::CacheKind;
use super::kv_cache::count;
use crate::dtype::DType;

/// One generation request, as far as sizes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FootprintRequest {
    /// Sequences generated together.
    pub batch: usize,
    /// Tokens of the longest prompt.
    pub prompt: usize,
    /// Most tokens to generate per sequence.
    pub max_new: usize,
    pub cache: CacheKind,
    /// Element type of the KV cache.
    pub kv_dtype: DType,
}

/// One buffer (or group of buffers) and how its size was counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FootprintItem {
    pub what: &'static str,
    pub bytes: u128,
    /// The product that gives `bytes`, in words, e.g. "2 layers × 4 rows × ...".
    pub formula: String,
}

/// f32 host activations.
const F32: u128 = 4;

impl FootprintRequest {
    /// Cache rows per layer: `batch × (prompt + max_new)`, rounded up to
    /// whole blocks per sequence for a paged cache.
    pub fn cache_rows(&self) -> u128 {
        let positions = self.prompt as u128 + self.max_new as u128;
        let per_sequence = match self.cache {
            CacheKind::Contiguous => positions,
            CacheKind::Paged { block_size } => {
                let bs = block_size.max(1) as u128;
                positions.div_ceil(bs) * bs
            }
        };
        self.batch as u128 * per_sequence
    }
}

/// f32 values per prompt token that the prefill holds at its peak: the
/// residual stream and the normed input (3 × hidden), plus the widest step
/// of a block: the fused q/k/v projection (its output and the transposed
/// copy), attention (q/k/v rows, a q copy, gathered keys and values, the
/// staged and final output), the output projection, or the MLP (the
/// `[gate | up]` rows, their split copies and the product).
pub fn per_token_values(c: &ModelConfig) -> u128 {
    let (h, i) = (c.hidden_size as u128, c.intermediate_size as u128);
    let (q, kv) = (c.q_width() as u128, c.kv_width() as u128);
    let qkv = q + 2 * kv;
    let widest = [2 * qkv, qkv + 3 * q + 2 * kv, qkv + q + 2 * h, 5 * i, i + 2 * h].into_iter().max().unwrap_or(0);
    3 * h + widest
}

/// The buffers a generation of `r` allocates, largest first.
pub fn generate_footprint(c: &ModelConfig, r: &FootprintRequest) -> Vec<FootprintItem> {
    let rows = r.cache_rows();
    let kv_elem = r.kv_dtype.size_in_bytes() as u128;
    let kv_row = c.kv_width() as u128;
    let positions = match r.cache {
        CacheKind::Contiguous => format!("{} positions", r.prompt as u128 + r.max_new as u128),
        CacheKind::Paged { block_size } => {
            format!("{} positions in blocks of {block_size}", rows / r.batch.max(1) as u128)
        }
    };
    let per_token = per_token_values(c);
    let tokens = r.batch as u128 * r.prompt as u128;
    let vocab = c.vocab_size as u128;
    let mut items = vec![
        FootprintItem {
            what: "KV cache",
            bytes: c.num_layers as u128 * rows * 2 * kv_row * kv_elem,
            formula: format!(
                "{} × {} × {positions} × 2 (keys and values) × {} × {} head_dim × {kv_elem} bytes",
                count(c.num_layers, "layer"),
                count(r.batch, "sequence"),
                count(c.num_kv_heads, "kv head"),
                c.head_dim
            ),
        },
        FootprintItem {
            what: "one layer's keys and values gathered for attention",
            bytes: rows * 2 * kv_row * kv_elem,
            formula: format!("{} × {positions} × 2 × {kv_row} values × {kv_elem} bytes", count(r.batch, "sequence")),
        },
        FootprintItem {
            what: "prefill activations",
            bytes: tokens * per_token * F32,
            formula: format!(
                "{} × {} × {per_token} values per token × 4 bytes",
                count(r.batch, "sequence"),
                count(r.prompt, "prompt token")
            ),
        },
        FootprintItem {
            what: "logits",
            bytes: r.batch as u128 * vocab * 3 * F32,
            formula: format!("{} × {vocab} vocab × 3 copies × 4 bytes", count(r.batch, "sequence")),
        },
    ];
    items.sort_by_key(|i| std::cmp::Reverse(i.bytes));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> ModelConfig {
        let v = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 24, "intermediate_size": 128, "vocab_size": 96,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 128,
        });
        ModelConfig::from_json(&v).unwrap()
    }

    #[test]
    fn sizes_follow_the_request_without_overflow() {
        let c = llama();
        let r =
            FootprintRequest { batch: 3, prompt: 5, max_new: 11, cache: CacheKind::Contiguous, kv_dtype: DType::F16 };
        let items = generate_footprint(&c, &r);
        let kv = items.iter().find(|i| i.what == "KV cache").unwrap();
        // 2 layers × 3 × 16 positions × 2 × (2 × 24) × 2 bytes.
        assert_eq!(kv.bytes, 2 * 3 * 16 * 2 * 48 * 2);
        assert!(kv.formula.contains("3 sequences × 16 positions"), "{}", kv.formula);
        // q/k/v rows are 96 + 2 × 48 = 192 wide (attention's step: 576 values); the MLP's 5 × 128 is wider.
        assert_eq!(per_token_values(&c), 3 * 64 + 640);
        let act = items.iter().find(|i| i.what == "prefill activations").unwrap();
        assert_eq!(act.bytes, 3 * 5 * (3 * 64 + 640) * 4);
        // Paged: whole blocks per sequence.
        let paged = FootprintRequest { cache: CacheKind::Paged { block_size: 32 }, ..r };
        assert_eq!(paged.cache_rows(), 3 * 32);
        // Sizes past u64 are counted, not wrapped.
        let half = usize::MAX / 2;
        let huge = FootprintRequest { batch: 4096, prompt: half, max_new: half, ..r };
        let kv = generate_footprint(&c, &huge).into_iter().find(|i| i.what == "KV cache").unwrap();
        assert_eq!(kv.bytes, 2 * 4096 * (2 * half as u128) * 2 * 48 * 2);
        assert!(items.windows(2).all(|w| w[0].bytes >= w[1].bytes), "largest first");
    }
}
