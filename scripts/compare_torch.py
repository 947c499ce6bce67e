#!/usr/bin/env python3
"""Side-by-side timing of rocmforge GPU backends and PyTorch SDPA.

Runs `rocmforge bench --json` and torch.nn.functional.scaled_dot_product_attention
(each SDPBackend: MATH, FLASH_ATTENTION, EFFICIENT_ATTENTION, CUDNN_ATTENTION)
on the same shapes, in the same process run, on the same GPU, and prints a
table of median milliseconds, TFLOP/s and the ratio torch_ms / ours_ms
(> 1 means rocmforge is faster). FLOPs come from rocmforge's JSON
(4 * b * hq * d * unmasked query-key pairs), for both sides.

    python3 compare_torch.py --rocmforge ./rocmforge [--json out.json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import warnings

# torch warns once per backend it cannot use; the table already says "n/a".
warnings.filterwarnings("ignore", category=UserWarning)

DEFAULT_SHAPES = ["4,32,32,2048,2048,128"]


def run_ours(exe, backends, shape, mask, dtype, warmup, repeats, device="auto"):
    cmd = [exe, "bench", "--json", "--backends", backends, "--shape", shape, "--mask", mask,
           "--dtype", dtype, "--warmup", str(warmup), "--repeats", str(repeats), "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def time_torch(fn, warmup, repeats):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


TORCH_BACKENDS = ["MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"]


def torch_sdpa(shape, mask, dtype, warmup, repeats, names=None):
    """Median ms per SDPBackend, or the reason it could not run."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, hq, hkv, sq, skv, d = shape
    tdtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    # torch wants [batch, heads, seq, head_dim]; the data is random, never zeros.
    q = torch.rand(b, hq, sq, d, device="cuda", dtype=tdtype, generator=gen) * 2 - 1
    k = torch.rand(b, hkv, skv, d, device="cuda", dtype=tdtype, generator=gen) * 2 - 1
    v = torch.rand(b, hkv, skv, d, device="cuda", dtype=tdtype, generator=gen) * 2 - 1
    causal = mask == "causal"
    if causal and sq != skv:
        raise ValueError("torch's is_causal is top-left aligned; compare causal only with seq_q == seq_kv")
    out = {}
    for backend in [getattr(SDPBackend, n) for n in (names or TORCH_BACKENDS)]:
        def call():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv)
        try:
            with sdpa_kernel(backend):
                out[backend.name] = time_torch(call, warmup, repeats)
        except RuntimeError as e:
            out[backend.name] = "n/a: " + str(e).splitlines()[0][:60]
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rocmforge", default="./rocmforge")
    ap.add_argument("--backends", default="gpu-unfused", help="rocmforge backends to time (comma list)")
    ap.add_argument("--shape", action="append", help="b,hq,hkv,sq,skv,d (repeatable)")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--masks", default="none,causal")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--gpu-vs-cpu", default="1,32,8,1024,1024,128",
                    help="shape for the GPU-vs-CPU line (causal f32); empty to skip")
    ap.add_argument("--torch-backends", default=",".join(TORCH_BACKENDS),
                    help="SDPBackend names to time (comma list; MATH is slow at long sequences)")
    ap.add_argument("--json", help="write all measurements here")
    args = ap.parse_args()

    import torch
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}, "
          f"allow_tf32(matmul)={torch.backends.cuda.matmul.allow_tf32}")
    records = []
    header = f"{'shape b,hq,hkv,sq,skv,d':<24} {'dtype':<5} {'mask':<7} {'backend':<22} {'median ms':>10} {'TFLOP/s':>8} {'torch/ours':>10}"
    print(header)
    print("-" * len(header))
    for shape_s in args.shape or DEFAULT_SHAPES:
        shape = [int(x) for x in shape_s.split(",")]
        for dtype in args.dtypes.split(","):
            for mask in args.masks.split(","):
                ours = run_ours(args.rocmforge, args.backends, shape_s, mask, dtype, args.warmup, args.repeats)
                results = ours.get("results", [])
                if not results:
                    print(f"{shape_s:<24} {dtype:<5} {mask:<7} (rocmforge skipped: {ours.get('skipped')})")
                    continue
                flops = results[0]["flops"]
                best_ours = min(r["median_ms"] for r in results)
                for r in results:
                    print(f"{shape_s:<24} {dtype:<5} {mask:<7} {r['backend']:<22} {r['median_ms']:>10.3f} "
                          f"{flops / r['median_ms'] / 1e9:>8.1f} {'':>10}")
                theirs = torch_sdpa(shape, mask, dtype, args.warmup, args.repeats, args.torch_backends.split(","))
                for name, ms in theirs.items():
                    if isinstance(ms, str):
                        print(f"{'':<24} {'':<5} {'':<7} {'torch ' + name:<22} {ms}")
                    else:
                        print(f"{'':<24} {'':<5} {'':<7} {'torch ' + name:<22} {ms:>10.3f} "
                              f"{flops / ms / 1e9:>8.1f} {ms / best_ours:>10.2f}")
                records.append({"shape": shape_s, "dtype": dtype, "mask": mask, "flops": flops,
                                "rocmforge": results, "torch_ms": theirs})
    if args.gpu_vs_cpu:
        gpu = run_ours(args.rocmforge, "gpu-unfused", args.gpu_vs_cpu, "causal", "f32", args.warmup, args.repeats)
        cpu = run_ours(args.rocmforge, "cpu-flash", args.gpu_vs_cpu, "causal", "f32", 1, 3, device="cpu")
        g, c = gpu["results"][0], cpu["results"][0]
        print(f"\nGPU vs CPU at {args.gpu_vs_cpu} causal f32: gpu-unfused {g['median_ms']:.3f} ms, "
              f"cpu-flash ({cpu.get('cpu_threads')} threads) {c['median_ms']:.3f} ms, "
              f"speedup {c['median_ms'] / g['median_ms']:.1f}x")
        records.append({"gpu_vs_cpu": {"shape": args.gpu_vs_cpu, "gpu": g, "cpu": c, "cpu_threads": cpu.get("cpu_threads")}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
