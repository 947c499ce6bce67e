#!/usr/bin/env python3
"""cpu-flash vs PyTorch CPU scaled_dot_product_attention, same shapes, same run.

Usage (torch in a venv outside the repo, never in CI):
    python3 -m venv /work/.venv-torch && /work/.venv-torch/bin/pip install torch
    cargo build --release --example time_cpu_flash   # and/or the rocmforge CLI
    /work/.venv-torch/bin/python scripts/compare_torch_cpu.py [--rounds 3] [--dtypes f32,bf16,f16]
    # before/after: two builds of cpu-flash alternate with torch in every round
    ... compare_torch_cpu.py --build before=/tmp/base/time_cpu_flash --build after=target/release/rocmforge
    # one kernel family forced (the example's --isa), next to the automatic choice
    ... compare_torch_cpu.py --build auto=target/release/rocmforge --build avx512=target/release/examples/time_cpu_flash@avx512
    # accuracy instead of speed: cpu-flash's and torch's error against torch's f64 result, same inputs
    ... compare_torch_cpu.py --accuracy --dtypes bf16,f16

A build is a path to the `rocmforge` CLI (timed with `bench --json`) or to
the `time_cpu_flash` example, which may end in `@ISA` to force a kernel
family (`--isa`: amx, avx512bf16, avx512, avx2, portable); without
`--build`, target/release/rocmforge is used when it works, else
target/release/examples/time_cpu_flash. Torch and
every build alternate within each round (the order rotates per round); the
table shows the median over rounds of each side's per-round median, and the
range of per-round ratios. It also shows CPU time per call (all threads of
the process: `time.process_time()` for torch, the example's schedstat
reading for cpu-flash; the CLI does not report it) — on a machine shared
with other jobs wall time measures the scheduler's share as much as the
code; CPU time much less so, though it counts spin-waiting threads too. GQA goes to torch as `enable_gqa=True` (no K/V
copies, like cpu-flash); `--gqa repeat` instead repeat_interleaves K/V
outside the timed region. 16-bit rows give both sides inputs drawn in f32 and
rounded to the dtype. GFLOP/s use the crate's count: 4*b*hq*d per visible
(query, key) pair, causal = s(s+1)/2 pairs.
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


def build_command(tool, shape, mask, dtype, backend, warmup, repeats):
    s = ",".join(map(str, shape))
    tool, _, isa = tool.partition("@")
    if os.path.basename(tool).startswith("rocmforge"):
        if isa:
            raise SystemExit(f"{tool}@{isa}: the CLI picks the kernel family itself; force one with the example")
        return [tool, "bench", "--backends", backend, "--shape", s, "--mask", mask, "--dtype", dtype,
                "--warmup", str(warmup), "--repeats", str(repeats), "--json"]
    return [tool, "--backends", backend, "--mask", mask, "--shape", s, "--dtype", dtype, "--warmup", str(warmup),
            "--repeats", str(repeats), "--reference-repeats", str(repeats)] + (["--isa", isa] if isa else [])


def rocmforge_time(tools, shape, mask, dtype, backend, warmup, repeats):
    """(median_ms, cpu_median_ms or None, tool) from the first of `tools` that works."""
    for tool in tools:
        cmd = build_command(tool, shape, mask, dtype, backend, warmup, repeats)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for r in find_results(parse_json(out)):
                if r.get("backend") == backend:
                    return float(r.get("median_ms", r.get("median", r.get("ms")))), r.get("cpu_median_ms"), tool
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            print(f"  ({os.path.basename(tool)} failed: {str(e).splitlines()[0][:100]})", file=sys.stderr)
    raise SystemExit(f"could not time {backend} on {shape} {dtype} with {tools}")


def torch_time(torch, shape, mask, dtype, warmup, repeats, gqa):
    F = torch.nn.functional
    tdtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    b, hq, hkv, sq, skv, d = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = ((torch.rand(b, h, s, d, generator=g) * 2 - 1).to(tdtype)
               for h, s in ((hq, sq), (hkv, skv), (hkv, skv)))
    kw = {}
    if hq != hkv:
        if gqa == "repeat":
            k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (k, v))
        else:
            kw["enable_gqa"] = True
    # is_causal in torch is top-left aligned; identical to ours when sq == skv.
    assert mask == "none" or sq == skv
    times, cpu = [], []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t, c = time.perf_counter(), time.process_time()
            F.scaled_dot_product_attention(q, k, v, is_causal=(mask == "causal"), **kw)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)
    return statistics.median(times), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtypes", default="f32,bf16,f16", help="comma-separated: f32, bf16, f16")
    ap.add_argument("--gqa", choices=["enable_gqa", "repeat"], default="enable_gqa")
    ap.add_argument("--reference", action="store_true", help="also time cpu-reference (slow: ~1 min per shape)")
    ap.add_argument("--build", action="append", default=[], metavar="LABEL=PATH",
                    help="a cpu-flash build to time (rocmforge CLI or time_cpu_flash example); repeat to compare")
    ap.add_argument("--accuracy", action="store_true",
                    help="report errors against torch's f64 result instead of times (runs the CLI with --q/--k/--v)")
    ap.add_argument("--cli", default="target/release/rocmforge")
    ap.add_argument("--example", default="target/release/examples/time_cpu_flash")
    args = ap.parse_args()

    builds = [(label, [path]) for label, path in (b.split("=", 1) for b in args.build)]
    if not builds:
        builds = [("cpu-flash", [t for t in (args.cli, args.example) if os.path.exists(t)])]
    if args.accuracy:
        return accuracy(args, [d.strip() for d in args.dtypes.split(",") if d.strip()])
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]

    import torch
    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads (torch and rayon), {args.rounds} rounds, "
          f"builds {[(l, t) for l, t in builds]}", file=sys.stderr)

    rows = [(shape, mask, dtype) for dtype in dtypes for shape, mask in SHAPES]
    res = {row: {"torch": [], "ref": [], **{label: [] for label, _ in builds}} for row in rows}
    cpu = {row: {side: [] for side in ["torch"] + [label for label, _ in builds]} for row in rows}
    tool_used = {}
    for rnd in range(args.rounds):
        for row in rows:
            shape, mask, dtype = row
            r = res[row]
            sides = ["torch"] + [label for label, _ in builds]
            sides = sides[rnd % len(sides):] + sides[:rnd % len(sides)]  # rotate who goes first
            for side in sides:
                if side == "torch":
                    ms, cpu_ms = torch_time(torch, shape, mask, dtype, args.warmup, args.repeats, args.gqa)
                else:
                    tools = dict(builds)[side]
                    ms, cpu_ms, tool_used[side] = rocmforge_time(tools, shape, mask, dtype, "cpu-flash", args.warmup,
                                                                 args.repeats)
                r[side].append(ms)
                if cpu_ms is not None:
                    cpu[row][side].append(cpu_ms)
            if args.reference and rnd == 0:
                r["ref"].append(rocmforge_time(builds[0][1], shape, mask, dtype, "cpu-reference", 0, 1)[0])
            print(f"  round {rnd + 1}: {shape} {mask} {dtype}: " +
                  ", ".join(f"{side} {r[side][-1]:.1f} ms" for side in ["torch"] + [l for l, _ in builds]),
                  file=sys.stderr)

    head = "| shape (b,hq,hkv,sq,skv,d) | mask | dtype | torch ms | torch GFLOP/s |"
    sep = "|---|---|---|---|---|"
    for label, _ in builds:
        head += f" {label} ms | {label} GFLOP/s | {label} speed / torch (per-round range) |"
        sep += "---|---|---|"
    if args.reference:
        head += " cpu-reference ms |"
        sep += "---|"
    print("\n" + head + "\n" + sep)
    for (shape, mask, dtype), r in res.items():
        f = flops(shape, mask)
        t = statistics.median(r["torch"])
        line = f"| {','.join(map(str, shape))} | {mask} | {dtype} | {t:.1f} | {f / t / 1e6:.1f} |"
        for label, _ in builds:
            fl = statistics.median(r[label])
            ratios = [a / b for a, b in zip(r["torch"], r[label])]
            line += f" {fl:.1f} | {f / fl / 1e6:.1f} | {t / fl:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
        if args.reference:
            line += f" {r['ref'][0]:.0f} |" if r["ref"] else " - |"
        print(line)
    if any(cpu[row][label] for row in rows for label, _ in builds):
        head = "| shape | mask | dtype | torch CPU ms |" + "".join(f" {l} CPU ms | {l} CPU speed / torch |" for l, _ in builds)
        print("\nCPU time per call (all threads), medians over rounds:\n\n" + head + "\n|---|---|---|---|" +
              "---|---|" * len(builds))
        for (shape, mask, dtype) in rows:
            c = cpu[(shape, mask, dtype)]
            t = statistics.median(c["torch"])
            line = f"| {','.join(map(str, shape))} | {mask} | {dtype} | {t:.0f} |"
            for label, _ in builds:
                line += f" {statistics.median(c[label]):.0f} | {t / statistics.median(c[label]):.2f}x |" if c[label] \
                    else " - | - |"
            print(line)
    print(f"\n(cpu-flash timed with {tool_used}; torch GQA via {args.gqa}; medians over {args.rounds} rounds; "
          f"speed / torch = torch ms / cpu-flash ms)")


def accuracy(args, dtypes):
    """cpu-flash (the CLI, automatic kernel choice) and torch on the same
    inputs, each against torch's float64 attention of those inputs: max and
    mean |error| per shape and dtype."""
    import tempfile
    import torch
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    F = torch.nn.functional
    tdtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    print(f"torch {torch.__version__}, {args.threads} threads, cpu-flash from {args.cli}", file=sys.stderr)
    print("| shape (b,hq,hkv,sq,skv,d) | mask | dtype | torch max abs err | torch mean abs err | "
          "cpu-flash max abs err | cpu-flash mean abs err | cpu-flash / torch (mean) |\n|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for shape, mask in SHAPES:
            b, hq, hkv, sq, skv, d = shape
            g = torch.Generator().manual_seed(1)
            q, k, v = ((torch.rand(b, h, s_, d, generator=g) * 2 - 1).to(tdtypes[dtype])
                       for h, s_ in ((hq, sq), (hkv, skv), (hkv, skv)))
            kw = {"is_causal": mask == "causal", "enable_gqa": hq != hkv}
            with torch.inference_mode():
                ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), **kw)
                got_torch = F.scaled_dot_product_attention(q, k, v, **kw).double()
            with tempfile.TemporaryDirectory() as tmp:
                paths = {}
                for name, t in (("q", q), ("k", k), ("v", v)):
                    paths[name] = os.path.join(tmp, f"{name}.safetensors")
                    save_file({name: t.transpose(1, 2).contiguous()}, paths[name])
                out = os.path.join(tmp, "out.safetensors")
                cmd = [args.cli, "run", "--backend", "cpu-flash", "--device", "cpu", "--dtype", dtype, "--mask", mask,
                       "--batch", str(b), "--heads", str(hq), "--kv-heads", str(hkv), "--seq-q", str(sq),
                       "--seq-kv", str(skv), "--head-dim", str(d), "--q", paths["q"], "--k", paths["k"],
                       "--v", paths["v"], "--out", out]
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                got = next(iter(load_file(out).values())).transpose(1, 2).double()
            row = [(got_torch - ref).abs(), (got - ref).abs()]
            (tmax, tmean), (fmax, fmean) = ((e.max().item(), e.mean().item()) for e in row)
            print(f"| {','.join(map(str, shape))} | {mask} | {dtype} | {tmax:.3e} | {tmean:.3e} | {fmax:.3e} | "
                  f"{fmean:.3e} | {fmean / tmean:.2f} |", flush=True)


if __name__ == "__main__":
    main()
