#!/usr/bin/env python3
"""Decode attention (seq_q = 1, GQA 32/8, head_dim 128) on the GPU:
rocmforge's flash-decode (contiguous K/V, a strided cache read in place,
a paged pool of block size 16) against torch SDPA (FLASH for bf16, MATH
for f32, the only f32 kernel torch has for these shapes), plus the
device-to-device copy bandwidth, all in one run on one GPU.

GB/s = bytes of K and V read / time per call. Copy bandwidth = (bytes read
+ bytes written) / time of a large tensor copy. With --read-ceiling (the
binary of scripts/read_ceiling.cu), also the fastest a plain read-only
kernel reads each shape's K/V bytes, timed the same way: what any decode
kernel at that shape can approach. Both sides cycle through
enough K/V copies (>= 256 MiB) that no call finds its K/V in L2, and time
back-to-back calls between two CUDA events (median of several runs).

torch is timed twice: eager calls, and the same calls captured once in a
CUDA graph and replayed (no Python or dispatcher time between kernels).
The faster of the two is the peer every ratio uses, so a torch figure
bound by its host overhead never flatters ours. The kernels torch
launched for one call are listed too (torch.profiler), so the table says
which FLASH kernel (split-KV or not) it measured.

    python3 compare_decode.py --bench ./bench_decode [--read-ceiling ./read_ceiling] [--json out.json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore", category=UserWarning)

SHAPES = [(16, 4096), (64, 2048), (1, 8192)]
HQ, HKV, D = 32, 8, 128
MIN_BYTES = 256 << 20


def timed(fn, calls, repeats):
    import torch
    for i in range(3):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(calls):
            fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def copy_bandwidth(repeats):
    import torch
    n = 1 << 30  # 1 GiB
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = timed(lambda i: dst.copy_(src), 10, repeats)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9


def read_ceilings(binary, sizes):
    """Bytes -> the best GB/s of the read-only kernel over its launch shapes."""
    proc = subprocess.run([binary] + [str(n) for n in sorted(sizes)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{binary} failed:\n{proc.stderr}")
    best = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            best[r["bytes"]] = max(best.get(r["bytes"], 0.0), r["gbps"])
    return best


def graphed(fn, calls, repeats):
    """Median ms per call of `calls` calls of fn captured in one CUDA graph
    and replayed (warmed up on a side stream first, as capture requires)."""
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    return timed(lambda i: graph.replay(), 1, repeats) / calls


def kernels_launched(fn):
    """Names of the GPU kernels one call of fn launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn(0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(0)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return [n[:120] for n in names]


def torch_decode(b, L, dtype, backend_name, calls, repeats):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    tdtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    kv_bytes = 2 * b * L * HKV * D * tdtype.itemsize
    copies = max(1, min(16, -(-MIN_BYTES // kv_bytes)))
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.rand(b, HQ, 1, D, device="cuda", dtype=tdtype, generator=gen) * 2 - 1
    kvs = [(torch.rand(b, HKV, L, D, device="cuda", dtype=tdtype, generator=gen) * 2 - 1,
            torch.rand(b, HKV, L, D, device="cuda", dtype=tdtype, generator=gen) * 2 - 1) for _ in range(copies)]
    backend = getattr(SDPBackend, backend_name)

    def call(i):
        k, v = kvs[i % copies]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    result = {"copies": copies}
    try:
        with sdpa_kernel(backend):
            result["eager_ms"] = timed(call, calls, repeats)
            try:
                result["graph_ms"] = graphed(call, calls, repeats)
            except RuntimeError as e:
                result["graph_error"] = str(e).splitlines()[0][:80]
            try:
                result["kernels"] = kernels_launched(call)
            except Exception as e:  # the profiler is a nicety; never lose the timings to it
                result["kernels"] = [f"(profiler failed: {str(e).splitlines()[0][:80]})"]
    except RuntimeError as e:
        return {"error": str(e).splitlines()[0][:80]}
    finally:
        del kvs
        torch.cuda.empty_cache()
    result["ms"] = min(result[k] for k in ("eager_ms", "graph_ms") if k in result)
    result["gbps"] = kv_bytes / (result["ms"] * 1e-3) / 1e9
    result["eager_gbps"] = kv_bytes / (result["eager_ms"] * 1e-3) / 1e9
    if "graph_ms" in result:
        result["graph_gbps"] = kv_bytes / (result["graph_ms"] * 1e-3) / 1e9
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="./bench_decode", help="the bench_decode example binary")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--read-ceiling", help="the read_ceiling binary (scripts/read_ceiling.cu)")
    ap.add_argument("--json", help="write all measurements here")
    args = ap.parse_args()
    import torch
    dev = torch.cuda.get_device_name(0)
    print(f"device: {dev}; torch {torch.__version__}")
    copy = copy_bandwidth(args.repeats)
    print(f"device-to-device copy: {copy:.0f} GB/s (read + write)")

    cmd = [args.bench, "--calls", str(args.calls), "--repeats", str(args.repeats), "--dtype", "bf16,f32"]
    for b, L in SHAPES:
        cmd += ["--shape", f"{b},{L}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    ours = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    kv_bytes = {(r["dtype"], r["batch"], r["seq_kv"]): r["kv_bytes"] for r in ours}
    ceiling = read_ceilings(args.read_ceiling, set(kv_bytes.values())) if args.read_ceiling else {}
    if ceiling:
        print("read-only kernel, best GB/s: " + ", ".join(f"{n >> 20} MiB {g:.0f}" for n, g in sorted(ceiling.items())))

    rows = []
    for dtype, peer in [("bf16", "FLASH_ATTENTION"), ("f32", "MATH")]:
        for b, L in SHAPES:
            t = torch_decode(b, L, dtype, peer, args.calls, args.repeats)
            mine = {r["layout"]: r for r in ours if r["dtype"] == dtype and r["batch"] == b and r["seq_kv"] == L}
            read = ceiling.get(kv_bytes.get((dtype, b, L)))
            rows.append({"dtype": dtype, "batch": b, "seq_kv": L, "peer": peer, "torch": t, "ours": mine,
                         "read_ceiling_gbps": read})

    print()
    print("| dtype | b, L | torch | torch eager / graph GB/s | torch GB/s (the faster) | ours contiguous GB/s | % of copy | x torch | read ceiling GB/s | % of ceiling | strided GB/s | paged16 GB/s | paged / contiguous |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    def num(x, fmt="{:.0f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "n/a"

    for r in rows:
        t, o = r["torch"], r["ours"]
        tg = t.get("gbps")
        cg = o.get("contiguous", {}).get("gbps")
        sg = o.get("strided", {}).get("gbps")
        pg = o.get("paged16", {}).get("gbps")
        both = f"{num(t.get('eager_gbps'))} / {num(t.get('graph_gbps'))}"
        cells = [r["dtype"], f"{r['batch']}, {r['seq_kv']}", r["peer"], both, num(tg) if tg else t.get("error", "n/a"),
                 num(cg), num(100 * cg / copy if cg else None, "{:.0f} %"),
                 num(cg / tg if cg and tg else None, "{:.2f}"), num(r["read_ceiling_gbps"]),
                 num(100 * cg / r["read_ceiling_gbps"] if cg and r["read_ceiling_gbps"] else None, "{:.0f} %"),
                 num(sg), num(pg),
                 num(pg / cg if pg and cg else None, "{:.2f}")]
        print("| " + " | ".join(cells) + " |")
    print()
    for r in rows:
        kernels = r["torch"].get("kernels")
        if kernels:
            print(f"torch {r['peer']} {r['dtype']} {r['batch']},{r['seq_kv']} launches: " + "; ".join(kernels))
        if "graph_error" in r["torch"]:
            print(f"torch {r['peer']} {r['dtype']} {r['batch']},{r['seq_kv']}: no graph timing ({r['torch']['graph_error']})")
    bad = [r for r in ours if r.get("nonfinite_out")]
    if bad:
        print(f"warning: non-finite outputs in {len(bad)} of our runs", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "torch": torch.__version__, "copy_gbps": copy, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
