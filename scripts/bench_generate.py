#!/usr/bin/env python3
"""End-to-end decode speed: `rocmforge generate` against Hugging Face
transformers `generate` on the same GPU, in the same run.

Builds a Llama-3.2-1B-shaped model with random weights (hidden 2048, 16
layers, 32 query / 8 KV heads, head_dim 64, intermediate 8192, vocab 128256,
llama3 RoPE scaling, tied embeddings) in bf16 from a fixed seed and saves it
to a directory under /tmp (never downloaded). Then, for each batch size:

* rocmforge: `rocmforge generate --model DIR --device gpu --batch N --json`
  (auto dtype = the checkpoint's bf16, bf16 KV cache, contiguous), run
  `--repeats` times; decode tokens/s is the CLI's own figure (wall time of
  the decode steps, every token after the first, whole batch).
* transformers: `model.generate` with attn_implementation="sdpa", a static
  cache and greedy decoding, once with transformers' default for a static
  cache on CUDA (the decode step compiled by torch.compile, which uses CUDA
  graphs) and once with `disable_compile=True` (eager). Decode tokens/s is
  measured the same way: a logits processor records a CUDA event at every
  step; the time from the first step's event (prefill + first token) to the
  last is the decode time of the remaining max_new - 1 tokens per sequence.
  Warm-up calls (which compile) are not timed.

With --rocmforge-before BIN a second rocmforge binary (e.g. built from the
commit before a change) runs the same way, interleaved with the first per
batch, so both see the same machine state; --hf-modes none skips
transformers (then torch is used only to build the model).

Prints a table and writes everything to --json. Runs on the GPU machine
(torch + transformers installed there, no network).

    python3 scripts/bench_generate.py --rocmforge .gpuwork/modelperf/rocmforge --json out.json

Where a step's GPU time goes: profile one run with Nsight Compute and sum
per kernel over whole decode steps:

    ncu --clock-control none --cache-control none --launch-skip 1200 --launch-count 480 \
        --metrics gpu__time_duration.sum --csv rocmforge generate ... > ncu.csv
    python3 scripts/bench_generate.py --ncu-summary ncu.csv
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
except ImportError:  # --ncu-summary needs neither
    torch = transformers = None
    LogitsProcessor = object

LLAMA_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    tie_word_embeddings=True,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    rope_parameters=dict(
        rope_type="llama3",
        rope_theta=500000.0,
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
)


def log(msg):
    print(msg, flush=True)


def build_model(out_dir, seed):
    """The random bf16 model, saved with save_pretrained (config.json +
    model.safetensors); reused if the directory already holds it."""
    marker = os.path.join(out_dir, "bench_seed.txt")
    if os.path.exists(marker) and open(marker).read().strip() == str(seed):
        log(f"model: reusing {out_dir}")
        return
    start = time.time()
    config = AutoConfig.for_model("llama", **LLAMA_1B)
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.to("cuda", torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir, max_shard_size="50GB")
    with open(marker, "w") as f:
        f.write(str(seed))
    del model
    torch.cuda.empty_cache()
    log(f"model: {params / 1e9:.3f} B parameters, bf16, saved to {out_dir} in {time.time() - start:.1f} s")


class StepTimer(LogitsProcessor):
    """Records a CUDA event each time generate asks for the next token."""

    def __init__(self):
        self.events = []

    def __call__(self, input_ids, scores):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self.events.append(ev)
        return scores

    def decode_seconds(self):
        torch.cuda.synchronize()
        return self.events[0].elapsed_time(self.events[-1]) / 1e3


def hf_generate(model, ids, max_new, compiled):
    timer = StepTimer()
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new,
        do_sample=False,
        cache_implementation="static",
        disable_compile=not compiled,
        logits_processor=LogitsProcessorList([timer]),
        pad_token_id=0,
    )
    torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + max_new, out.shape
    assert len(timer.events) == max_new, len(timer.events)
    return out[:, ids.shape[1]:].tolist(), timer.decode_seconds()


def bench_hf(model, prompt, batch, max_new, compiled, repeats, warmups):
    ids = torch.tensor([prompt] * batch, device="cuda")
    warm = []
    for _ in range(warmups):
        t = time.time()
        tokens, _ = hf_generate(model, ids, max_new, compiled)
        warm.append(time.time() - t)
    rates = []
    for _ in range(repeats):
        tokens, seconds = hf_generate(model, ids, max_new, compiled)
        rates.append(batch * (max_new - 1) / seconds)
    return dict(
        impl="transformers " + ("compiled (default)" if compiled else "eager"),
        batch=batch,
        decode_tokens_per_s=rates,
        median=statistics.median(rates),
        warmup_seconds=warm,
        tokens=tokens[0],
    )


def bench_ours(binary, model_dir, prompt, batch, max_new, repeats, extra, label="rocmforge"):
    runs = []
    for _ in range(repeats):
        cmd = [binary, "generate", "--model", model_dir, "--device", "gpu", "--batch", str(batch), "--json"]
        cmd += ["--tokens", ",".join(map(str, prompt)), "--max-new", str(max_new)] + extra
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            log(f"rocmforge failed ({p.returncode}): {p.stderr.strip()}")
            return dict(impl=label, batch=batch, error=p.stderr.strip())
        r = json.loads(p.stdout)
        r["process_seconds"] = time.time() - t
        runs.append(r)
    rates = [r["decode_tokens_per_s"] for r in runs]
    last = runs[-1]
    return dict(
        impl=label,
        batch=batch,
        decode_tokens_per_s=rates,
        median=statistics.median(rates),
        ttft_ms=[r["time_to_first_token_ms"] for r in runs],
        # Host time per decode step: queueing the forward vs waiting for the argmax.
        issue_ms_per_step=[r["decode_issue_ms"] / (max_new - 1) for r in runs],
        wait_ms_per_step=[r["decode_wait_ms"] / (max_new - 1) for r in runs],
        process_seconds=[r["process_seconds"] for r in runs],
        prefill_backends=last["prefill"]["backends"],
        decode_backends=last["decode"]["backends"],
        dtype=last.get("dtype"),
        kv_dtype=last.get("kv_dtype"),
        tokens=last["tokens"][0],
        command=" ".join(cmd[:9]) + " --tokens <prompt> --max-new " + str(max_new) + " " + " ".join(extra),
    )


def merge_runs(runs):
    """One result from single-run results of one binary and batch."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return bad[0]
    out = dict(runs[-1])
    for key in ("decode_tokens_per_s", "ttft_ms", "issue_ms_per_step", "wait_ms_per_step", "process_seconds"):
        out[key] = [x for r in runs for x in r[key]]
    out["median"] = statistics.median(out["decode_tokens_per_s"])
    return out


def ncu_summary(path):
    """Kernel time per decode step from `ncu --csv --metrics
    gpu__time_duration.sum` of a `rocmforge generate` run: sums per kernel
    name over the launches between the first and the last `argmax_finish`
    (one per decode step)."""
    import collections
    import csv

    with open(path) as f:
        rows = [r for r in csv.DictReader(l for l in f if l.startswith('"'))]
    rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
    ends = [i for i, r in enumerate(rows) if r["Kernel Name"].startswith("argmax_finish")]
    if len(ends) < 2:
        log("fewer than two argmax_finish launches captured")
        return
    sel, steps = rows[ends[0] + 1 : ends[-1] + 1], len(ends) - 1
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3}[sel[0]["Metric Unit"]]
    by = collections.defaultdict(lambda: [0, 0.0])
    for r in sel:
        name = r["Kernel Name"].split("(")[0][:60]
        by[name][0] += 1
        by[name][1] += float(r["Metric Value"].replace(",", "")) * scale
    total = sum(v[1] for v in by.values())
    log(f"{steps} decode steps, {len(sel) / steps:.0f} launches and {total / steps:.1f} us of kernel time per step")
    for name, (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        log(f"{us / steps:9.1f} us/step {n / steps:6.1f} launches/step  {name}")


def agreement(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rocmforge", help="path of the rocmforge binary")
    ap.add_argument("--ncu-summary", metavar="CSV", help="only summarize an ncu --csv log of rocmforge generate")
    ap.add_argument("--model-dir", default="/tmp/rocmforge-llama-1b-random")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ours-repeats", type=int, default=2)
    ap.add_argument("--ours-warmups", type=int, default=1,
                    help="untimed runs of each binary first: the first process compiles the kernels (NVRTC), "
                    "some of them inside the timed decode steps (flash-decode at the first decode step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-modes", default="compiled,eager",
                    help="compiled, eager, both (comma-separated), or none (ours only)")
    ap.add_argument("--rocmforge-before", metavar="BIN",
                    help="a second rocmforge binary (e.g. built before a change), run the same way in the same run")
    ap.add_argument("--before-label", default="rocmforge (before)", help="its label in the table")
    ap.add_argument("--ours-extra", default="", help="extra arguments for rocmforge generate")
    ap.add_argument("--json", help="write every result here")
    args = ap.parse_args()
    if args.ncu_summary:
        return ncu_summary(args.ncu_summary)
    if not args.rocmforge:
        ap.error("--rocmforge is required")

    env = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(0),
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        prompt_len=args.prompt_len,
        max_new=args.max_new,
        seed=args.seed,
    )
    log(json.dumps(env))
    build_model(args.model_dir, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    prompt = torch.randint(0, LLAMA_1B["vocab_size"], (args.prompt_len,), generator=g).tolist()
    batches = [int(b) for b in args.batches.split(",")]
    extra = args.ours_extra.split()
    results = []
    # Interleaved per batch (after, before, after, before, ...) so drift in
    # the machine's state hits both alike.
    binaries = [(args.rocmforge, "rocmforge")]
    if args.rocmforge_before:
        binaries.append((args.rocmforge_before, args.before_label))
    for binary, label in binaries:
        for _ in range(args.ours_warmups):
            bench_ours(binary, args.model_dir, prompt, batches[0], min(args.max_new, 8), 1, extra, label)
    for b in batches:
        runs = {label: [] for _, label in binaries}
        for _ in range(args.ours_repeats):
            for binary, label in binaries:
                r = bench_ours(binary, args.model_dir, prompt, b, args.max_new, 1, extra, label)
                runs[label].append(r)
        for _, label in binaries:
            r = merge_runs(runs[label])
            log(json.dumps({k: v for k, v in r.items() if k != "tokens"}))
            results.append(r)

    modes = [m for m in args.hf_modes.split(",") if m and m != "none"]
    model = None
    if modes:
        model = AutoModelForCausalLM.from_pretrained(
            args.model_dir, dtype=torch.bfloat16, attn_implementation="sdpa", device_map="cuda"
        ).eval()
        model.generation_config.eos_token_id = None
    for mode in modes:
        for b in batches:
            start = time.time()
            r = bench_hf(model, prompt, b, args.max_new, mode == "compiled", args.repeats, warmups=2)
            r["wall_seconds"] = time.time() - start
            log(json.dumps({k: v for k, v in r.items() if k != "tokens"}))
            results.append(r)

    log("")
    log(f"{env['device']}, {env['date']}, torch {env['torch']}, transformers {env['transformers']}")
    log(f"Llama-3.2-1B-shaped, random bf16 weights, prompt {args.prompt_len}, {args.max_new} new tokens, greedy")
    log("")
    log("| implementation | batch | decode tokens/s (median) | runs | ms per step | attention (prefill / decode) |")
    log("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            log(f"| {r['impl']} | {r['batch']} | failed | | | |")
            continue
        runs = ", ".join(f"{x:.0f}" for x in r["decode_tokens_per_s"])
        attn = (
            f"{'/'.join(r['prefill_backends'])} / {'/'.join(r['decode_backends'])}"
            if r["impl"].startswith("rocmforge")
            else "sdpa / sdpa"
        )
        step_ms = 1e3 * r["batch"] / r["median"]
        log(f"| {r['impl']} | {r['batch']} | {r['median']:.1f} | {runs} | {step_ms:.2f} | {attn} |")
    log("")
    for r in results:
        if r["impl"].startswith("rocmforge") and "error" not in r:
            issue, wait = statistics.median(r["issue_ms_per_step"]), statistics.median(r["wait_ms_per_step"])
            log(f"{r['impl']} batch {r['batch']}: per decode step {issue:.3f} ms issuing the forward on the host, "
                f"{wait:.3f} ms waiting for the GPU (argmax download)")
    for b in batches:
        ours = next((r for r in results if r["impl"] == "rocmforge" and r["batch"] == b and "error" not in r), None)
        for r in results:
            if r["impl"] != "rocmforge" and r["batch"] == b and ours and "error" not in r:
                same = agreement(ours["tokens"], r["tokens"])
                log(
                    f"batch {b}: rocmforge / {r['impl']} = {ours['median'] / r['median']:.2f}x; "
                    f"greedy tokens agree for the first {same} of {args.max_new}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=env, prompt=prompt, results=results), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
