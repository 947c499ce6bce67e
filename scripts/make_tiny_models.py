#!/usr/bin/env python3
"""Builds the tiny model fixtures in tests/fixtures/models/ and records
Hugging Face transformers' float64 logits for them.

One seeded, randomly initialised model per family (llama, mistral, qwen2,
glm, glm4), small enough to commit, with weights widened so that attention
is far from uniform (a wrong mask, RoPE or cache shows up in the logits).
Each is saved with `save_pretrained` in the dtype listed below (f32, f16 or
bf16; qwen2 sharded with an index), reloaded from disk in float64, and run
on a prompt; the greedy continuation is computed by re-running the full
sequence (no KV cache), so the reference does not depend on transformers'
own cache.

float64 throughout: transformers keeps a few float32 islands even in a
float64 model (RMSNorm upcasts to float32, the rotary tables and eager
softmax are float32). The reference run replaces those with float64
versions; each replacement is checked against transformers' own output
(`stock_vs_f64_max_rel` in reference.json) so they change precision only.

Runs on the CPU in a few seconds; no GPU is needed (float64 on the CPU is
the most exact place to run it).

Usage: python scripts/make_tiny_models.py [--out tests/fixtures/models]
"""

import argparse
import json
import math
import pathlib
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

PROMPT_LEN = 8
NEW_TOKENS = 16
# Each greedy step's winner must beat the runner-up by this fraction of the
# largest |logit|, so f32 rounding in the engine under test cannot flip it.
MIN_MARGIN = 2e-3
# A continuation must use this many distinct tokens (a model that repeats
# one token would test little of the decode path).
MIN_DISTINCT = 6

COMMON = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=128,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
)

FAMILIES = [
    # head_dim 24 != hidden / heads; llama3 scaling with all three frequency
    # bands inside 24 dims; every bias on; config rewritten in the 4.x style.
    dict(
        name="llama",
        seed=11,
        dtype=torch.float32,
        config=dict(
            model_type="llama",
            head_dim=24,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=4.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
        style_4x=True,
    ),
    # Sliding window of 5 on every layer (active inside the 8-token prompt),
    # one KV head for four query heads, f16 weights.
    dict(
        name="mistral",
        seed=12,
        dtype=torch.float16,
        config=dict(model_type="mistral", num_key_value_heads=1, sliding_window=5, tie_word_embeddings=False),
    ),
    # Window 6 on layers >= 1 only, tied embeddings, q/k/v biases, bf16
    # weights in several shards.
    dict(
        name="qwen2",
        seed=13,
        dtype=torch.bfloat16,
        config=dict(
            model_type="qwen2",
            num_hidden_layers=3,
            use_sliding_window=True,
            sliding_window=6,
            max_window_layers=1,
            tie_word_embeddings=True,
        ),
        max_shard_size="60KB",
    ),
    # Interleaved partial RoPE (half of head_dim 32), linear scaling, fused
    # gate/up, q/k/v biases.
    dict(
        name="glm",
        seed=14,
        dtype=torch.float32,
        config=dict(
            model_type="glm",
            head_dim=32,
            attention_bias=True,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=10000.0, partial_rotary_factor=0.5),
        ),
    ),
    # GLM-4-0414: glm plus post-attention and post-MLP norms; tied; bf16.
    dict(
        name="glm4",
        seed=15,
        dtype=torch.bfloat16,
        config=dict(
            model_type="glm4",
            head_dim=16,
            attention_bias=True,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=500.0, partial_rotary_factor=0.5),
        ),
    ),
]


def widen(model, seed):
    """Re-initialises every weight so attention logits spread over several
    units (std ~3) instead of transformers' near-uniform 0.02 init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # Small enough that the residual stream is not dominated by
                # the input token (with tied embeddings it would then
                # predict itself forever).
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def to_4x_style(config_path):
    """Rewrites a 5.x config.json (rope_parameters) the way transformers 4.x
    wrote it (rope_theta + rope_scaling, top-level partial_rotary_factor)."""
    cfg = json.loads(config_path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    if "partial_rotary_factor" in rope:
        cfg["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    cfg["transformers_version"] = "4.57.0"
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def f64_inv_freq(config):
    """The rotary inverse frequencies in float64, from the same formulas
    transformers evaluates in float32 (default, linear, llama3)."""
    rp = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * rp.get("partial_rotary_factor", 1.0))
    base = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    inv = 1.0 / (rp["rope_theta"] ** base)
    kind = rp.get("rope_type", "default")
    if kind == "linear":
        inv = inv / rp["factor"]
    elif kind == "llama3":
        factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        inv = torch.where(medium, blended, scaled)
    elif kind != "default":
        raise SystemExit(f"no float64 formula for rope_type {kind}")
    return inv


def patch_float64(model):
    """Replaces the float32 islands with float64 computations and checks each
    replacement against the module's own output on the same input."""
    inv = f64_inv_freq(model.config)
    rotary = model.model.rotary_emb
    stock_inv = rotary.inv_freq.to(torch.float64)
    rel = ((stock_inv - inv).abs() / inv.abs()).max().item()
    assert rel < 1e-6, f"float64 inv_freq differs from transformers' by {rel}"

    def rotary_forward(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)

    def norm_forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))

    type(rotary).forward = rotary_forward
    norm_types = {type(m) for n, m in model.named_modules() if type(m).__name__.endswith("RMSNorm")}
    assert norm_types, "no RMSNorm modules found"
    for t in norm_types:
        t.forward = norm_forward


def load(out_dir, attn):
    return AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float64, attn_implementation=attn).eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def greedy(model, prompt):
    """Greedy continuation by full re-evaluation (no cache); returns the new
    ids and the smallest top-1 margin relative to the largest |logit|."""
    ids, margin = list(prompt), math.inf
    for _ in range(NEW_TOKENS):
        row = logits_of(model, ids)[-1]
        top = torch.topk(row, 2).values
        margin = min(margin, ((top[0] - top[1]) / row.abs().max()).item())
        ids.append(int(row.argmax()))
    return ids[len(prompt):], margin


def attention_sharpness(model, ids):
    """Mean over layers, heads and rows of the largest attention weight,
    next to what uniform attention over the visible keys would give."""
    with torch.no_grad():
        att = model(torch.tensor([ids]), output_attentions=True).attentions
    peak = torch.stack([a[0].max(-1).values.mean() for a in att]).mean().item()
    n = len(ids)
    uniform = sum(1.0 / (i + 1) for i in range(n)) / n
    return peak, uniform


def build(family, out_root):
    name = family["name"]
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    cfg_kwargs = dict(COMMON, **family["config"])
    model_type = cfg_kwargs.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg_kwargs)
    torch.manual_seed(family["seed"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    widen(model, family["seed"])
    model.to(family["dtype"]).save_pretrained(out, max_shard_size=family.get("max_shard_size", "50GB"))
    (out / "generation_config.json").unlink(missing_ok=True)
    if family.get("style_4x"):
        before = transformers.AutoConfig.from_pretrained(out).rope_parameters
        to_4x_style(out / "config.json")
        after = transformers.AutoConfig.from_pretrained(out).rope_parameters
        assert before == after, f"4.x-style config reads back differently: {before} vs {after}"

    # Reference: reloaded from disk (so it sees exactly the stored, rounded
    # weights), float64, sdpa attention with the float32 islands patched.
    stock = load(out, "eager")
    g = torch.Generator().manual_seed(family["seed"])
    for attempt in range(20):
        prompt = torch.randint(0, COMMON["vocab_size"], (PROMPT_LEN,), generator=g).tolist()
        new, stock_margin = greedy(stock, prompt)
        if stock_margin >= MIN_MARGIN and len(set(new)) >= MIN_DISTINCT:
            break
    else:
        raise SystemExit(f"{name}: no prompt with greedy margins >= {MIN_MARGIN} and {MIN_DISTINCT} distinct tokens")
    stock_logits = logits_of(stock, prompt + new)
    peak, uniform = attention_sharpness(stock, prompt + new)
    # HF's own cached generate must agree with the uncached loop.
    stock.generation_config.eos_token_id = None
    with torch.no_grad():
        gen = stock.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    assert gen[0, PROMPT_LEN:].tolist() == new, f"{name}: generate() disagrees with the greedy loop"

    ref = load(out, "sdpa")
    patch_float64(ref)
    new64, margin = greedy(ref, prompt)
    assert new64 == new, f"{name}: float64 greedy differs from transformers' own"
    logits = logits_of(ref, prompt + new)
    scale = logits.abs().max()
    stock_vs_f64 = ((stock_logits - logits).abs().max() / scale).item()
    assert stock_vs_f64 < 1e-5, f"{name}: float64 patch moved logits by {stock_vs_f64} (relative)"

    save_file({"logits": logits.contiguous()}, str(out / "reference.safetensors"))
    info = dict(
        family=name,
        weights_dtype=str(family["dtype"]).removeprefix("torch."),
        prompt=prompt,
        greedy=new,
        logits_rows="logits[i] follows tokens prompt + greedy up to and including position i",
        min_margin=margin,
        attention_peak_mean=peak,
        attention_uniform_peak_mean=uniform,
        stock_vs_f64_max_rel=stock_vs_f64,
        max_abs_logit=scale.item(),
        transformers=transformers.__version__,
        torch=torch.__version__,
    )
    (out / "reference.json").write_text(json.dumps(info, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"{name:8} {info['weights_dtype']:9} {size / 1024:7.1f} KiB  margin {margin:.4f}  "
        f"attention peak {peak:.3f} (uniform {uniform:.3f})  stock-vs-f64 {stock_vs_f64:.1e}  "
        f"files {sorted(f.name for f in out.iterdir())}"
    )
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=pathlib.Path, default=root / "tests" / "fixtures" / "models")
    ap.add_argument("--only", nargs="*", help="family names to build (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-reproducible reductions
    total = 0
    for family in FAMILIES:
        if args.only and family["name"] not in args.only:
            continue
        total += build(family, args.out)
    print(f"total {total / 1024:.1f} KiB in {args.out}")
    if total > 10 * 1024 * 1024:
        sys.exit("fixtures exceed 10 MB")


if __name__ == "__main__":
    main()
