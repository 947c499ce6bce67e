#!/usr/bin/env python3
"""cpu-flash vs PyTorch CPU scaled_dot_product_attention, same shapes, same run.

Usage (torch in a venv outside the repo, never in CI):
    python3 -m venv /work/.venv-torch && /work/.venv-torch/bin/pip install torch
    cargo build --release --example time_cpu_flash   # and/or the rocmforge CLI
    /work/.venv-torch/bin/python scripts/compare_torch_cpu.py [--rounds 3]

cpu-flash is timed with `target/release/rocmforge bench --json` when that
command works, else with `target/release/examples/time_cpu_flash`. Torch and
cpu-flash alternate within each round; the table shows the median over
rounds of each side's per-round median. GQA goes to torch as
`enable_gqa=True` (no K/V copies, like cpu-flash); `--gqa repeat` instead
repeat_interleaves K/V outside the timed region. GFLOP/s use the crate's
count: 4*b*hq*d per visible (query, key) pair, causal = s(s+1)/2 pairs.
"""
import argparse, json, os, statistics, subprocess, sys, time

SHAPES = [((1, 32, 32, 1024, 1024, 128), "none"), ((1, 32, 8, 1024, 1024, 128), "causal")]


def flops(shape, mask):
    b, hq, _, sq, skv, d = shape
    pairs = sum(max(0, min(skv, i + skv - sq + 1)) for i in range(sq)) if mask == "causal" else sq * skv
    return 4.0 * b * hq * d * pairs


def find_results(obj):
    """Every dict with a backend name and a time, wherever it sits in the JSON."""
    if isinstance(obj, list):
        return [r for x in obj for r in find_results(x)]
    if isinstance(obj, dict):
        if "backend" in obj and any(k in obj for k in ("median_ms", "median", "ms")):
            return [obj]
        return [r for x in obj.values() for r in find_results(x)]
    return []


def parse_json(text):
    """The first JSON value in `text`, tolerating progress lines around it."""
    for start in (i for i, c in enumerate(text) if c in "[{"):
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON in output")


def rocmforge_times(args, shape, mask, backend, warmup, repeats):
    """{backend: median_ms} from the CLI, falling back to the example binary."""
    s = ",".join(map(str, shape))
    cmds = []
    if os.path.exists(args.cli):
        cmds.append([args.cli, "bench", "--backends", backend, "--shape", s, "--mask", mask, "--dtype", "f32",
                     "--warmup", str(warmup), "--repeats", str(repeats), "--json"])
    cmds.append([args.example, "--backends", backend, "--mask", mask, "--shape", s, "--warmup", str(warmup),
                 "--repeats", str(repeats), "--reference-repeats", str(repeats)])
    for cmd in cmds:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows = find_results(parse_json(out))
            for r in rows:
                if r.get("backend") == backend:
                    return float(r.get("median_ms", r.get("median", r.get("ms")))), os.path.basename(cmd[0])
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            print(f"  ({os.path.basename(cmd[0])} failed: {str(e).splitlines()[0][:100]})", file=sys.stderr)
    raise SystemExit(f"could not time {backend} on {shape}")


def torch_time(torch, shape, mask, warmup, repeats, gqa):
    F = torch.nn.functional
    b, hq, hkv, sq, skv, d = shape
    g = torch.Generator().manual_seed(0)
    q = torch.rand(b, hq, sq, d, generator=g) * 2 - 1
    k = torch.rand(b, hkv, skv, d, generator=g) * 2 - 1
    v = torch.rand(b, hkv, skv, d, generator=g) * 2 - 1
    kw = {}
    if hq != hkv:
        if gqa == "repeat":
            k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (k, v))
        else:
            kw["enable_gqa"] = True
    # is_causal in torch is top-left aligned; identical to ours when sq == skv.
    assert mask == "none" or sq == skv
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=(mask == "causal"), **kw)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gqa", choices=["enable_gqa", "repeat"], default="enable_gqa")
    ap.add_argument("--reference", action="store_true", help="also time cpu-reference (slow: ~1 min per shape)")
    ap.add_argument("--cli", default="target/release/rocmforge")
    ap.add_argument("--example", default="target/release/examples/time_cpu_flash")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads (torch and rayon), {args.rounds} rounds", file=sys.stderr)

    res = {}
    for rnd in range(args.rounds):
        for shape, mask in SHAPES:
            r = res.setdefault((shape, mask), {"torch": [], "flash": [], "ref": []})
            r["torch"].append(torch_time(torch, shape, mask, args.warmup, args.repeats, args.gqa))
            ms, tool = rocmforge_times(args, shape, mask, "cpu-flash", args.warmup, args.repeats)
            r["flash"].append(ms)
            r["tool"] = tool
            if args.reference and rnd == 0:
                r["ref"].append(rocmforge_times(args, shape, mask, "cpu-reference", 0, 1)[0])
            print(f"  round {rnd + 1}: {shape} {mask}: torch {r['torch'][-1]:.1f} ms, cpu-flash {ms:.1f} ms",
                  file=sys.stderr)

    print(f"\n| shape (b,hq,hkv,sq,skv,d) | mask | torch ms | torch GFLOP/s | cpu-flash ms | cpu-flash GFLOP/s "
          f"| flash/torch speed | cpu-reference ms | flash/ref speed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (shape, mask), r in res.items():
        f = flops(shape, mask)
        t, fl = statistics.median(r["torch"]), statistics.median(r["flash"])
        ref = f"{r['ref'][0]:.0f} | {r['ref'][0] / fl:.1f}x" if r["ref"] else "- | -"
        print(f"| {','.join(map(str, shape))} | {mask} | {t:.1f} | {f / t / 1e6:.1f} | {fl:.1f} | {f / fl / 1e6:.1f} "
              f"| {t / fl:.2f}x | {ref} |")
    print(f"\n(cpu-flash timed with {r['tool']}; torch GQA via {args.gqa}; medians over {args.rounds} rounds)")


if __name__ == "__main__":
    main()
