"""On the GPU machine: correctness sweep of every built variant against an
f64 reference, then timings against PyTorch SDPA backends on the same GPU.

python run.py CUBIN_DIR [--out DIR] [--skip-check] [--skip-bench] [--only SUBSTR]
CUBIN_DIR holds NAME.cubin + build.json from build.py (any machine with NVRTC).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cudrv  # noqa: E402
import variants  # noqa: E402

TDT = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}


def make_params(q, k, v, o, lse, left, right, scale, softcap):
    """q, k, v, o are [b, s, h, d] views (any strides, last dim contiguous)."""
    p = cudrv.FlashParams()
    p.q, p.k, p.v, p.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr()
    p.lse = lse.data_ptr() if lse is not None else 0
    for name, t in (("q", q), ("k", k), ("v", v), ("o", o)):
        assert t.stride(3) == 1
        setattr(p, f"{name}_batch_stride", t.stride(0))
        setattr(p, f"{name}_seq_stride", t.stride(1))
        setattr(p, f"{name}_head_stride", t.stride(2))
    p.window_left, p.window_right = left, right
    p.batch, p.seq_q, p.heads_q = q.shape[0], q.shape[1], q.shape[2]
    p.seq_kv, p.heads_kv = k.shape[1], k.shape[2]
    p.scale, p.softcap, p.reserved = scale, softcap, 0
    return p


def reference(q, k, v, left, right, scale, softcap):
    """f64 attention with the project's semantics: only visible keys count;
    NaN-ignoring row max; fully masked rows are zero with lse -inf."""
    b, sq, hq, d = q.shape
    skv, hkv = k.shape[1], k.shape[2]
    qd = q.double().permute(0, 2, 1, 3)
    kd = k.double().permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    vd = v.double().permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    s = (qd @ kd.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(skv, device=q.device)[None, :]
    pos = i + skv - sq
    vis = torch.ones(sq, skv, dtype=torch.bool, device=q.device)
    if left >= 0:
        vis &= j >= pos - left
    if right >= 0:
        vis &= j <= pos + right
    s = s.masked_fill(~vis, -math.inf)
    m = torch.where(torch.isnan(s), torch.full_like(s, -math.inf), s).amax(-1, keepdim=True)
    m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
    e = torch.exp(s - m_safe)
    l = e.sum(-1, keepdim=True)
    empty = ~vis.any(-1)[None, None, :, None]
    if bool(torch.isfinite(vd).all()):
        pv = e @ vd
    else:
        # masked keys must not contribute even 0 * NaN: one row at a time
        pv = torch.zeros(b, hq, sq, d, dtype=torch.float64, device=q.device)
        for i in range(sq):
            idx = vis[i].nonzero()[:, 0]
            if idx.numel():
                pv[:, :, i] = (e[:, :, i, idx].unsqueeze(-2) @ vd[:, :, idx]).squeeze(-2)
    o = torch.where(empty, torch.zeros_like(e[..., :1]), pv / l)
    lse = torch.where(empty[..., 0], torch.full_like(l[..., 0], -math.inf), (m + torch.log(l))[..., 0])
    return o.permute(0, 2, 1, 3), lse


def tolerance(defs):
    dt = defs["RF_DTYPE"]
    if dt == 2:
        return 1e-2
    if dt == 1:
        return 2e-3
    return 5e-3 if defs.get("RF_F32_MODE") == 2 else 2e-5


CASES = [
    # name, b, hq, hkv, sq, skv, left, right, softcap, extras
    ("gqa_odd_none", 2, 4, 2, 77, 131, -1, -1, 0.0, {}),
    ("gqa_odd_causal", 2, 4, 2, 77, 131, -1, 0, 0.0, {"lse": True}),
    ("mqa_sq_gt_skv_causal", 1, 3, 1, 300, 50, -1, 0, 0.0, {"lse": True}),
    ("window_37_5", 1, 2, 2, 200, 200, 37, 5, 0.0, {}),
    ("window_left_20", 1, 2, 2, 130, 170, 20, -1, 0.0, {}),
    ("window_right_3", 1, 2, 1, 64, 300, -1, 3, 0.0, {}),
    ("decode_sq1", 2, 8, 2, 1, 200, -1, -1, 0.0, {"lse": True}),
    ("softcap_causal", 2, 2, 2, 130, 257, -1, 0, 15.0, {}),
    ("strided_qkv", 2, 4, 4, 150, 150, -1, 0, 0.0, {"packed": True}),
    ("nan", 1, 2, 2, 96, 96, -1, 0, 0.0, {"nan": True}),
    ("inf", 1, 2, 2, 96, 96, -1, 0, 0.0, {"inf": True}),
    # NaNs whose low mantissa bits are all set or all clear but one (integer
    # rounding of such a NaN carries into the sign or gives Inf).
    ("nan_payload", 1, 2, 2, 96, 96, -1, 0, 0.0, {"nan_payload": True}),
    # A NaN in V at a key that is masked for some rows of a tile their block
    # computes (P = 0 there) must not reach them (rf/flash/nonfinite.h).
    ("v_nan_masked_key", 1, 2, 2, 200, 200, -1, 0, 0.0, {"vnan_masked": True}),
    # One huge k element (1e30; f16: 60000): logits near 1e29 in the rows
    # whose q element is positive, one-hot there (docs/semantics.md).
    ("huge_k", 1, 2, 2, 96, 200, -1, -1, 0.0, {"huge_k": True}),
    ("long_causal", 1, 4, 4, 1029, 1029, -1, 0, 0.0, {"lse": True}),
]


def run_case(kern, defs, case, gen):
    name, b, hq, hkv, sq, skv, left, right, cap, ex = case
    d = defs["RF_HEAD_DIM"]
    dt = TDT[defs["RF_DTYPE"]]
    dev = "cuda"
    if ex.get("packed"):
        qkv = torch.randn(b, sq, 3 * hq, d, device=dev, generator=gen).to(dt)
        q, k, v = qkv[:, :, :hq], qkv[:, :, hq:2 * hq], qkv[:, :, 2 * hq:]
    else:
        q = torch.randn(b, sq, hq, d, device=dev, generator=gen).to(dt)
        k = torch.randn(b, skv, hkv, d, device=dev, generator=gen).to(dt)
        v = torch.randn(b, skv, hkv, d, device=dev, generator=gen).to(dt)
    if ex.get("nan"):
        q[0, 5, 0, 3] = float("nan")       # one query row of head 0
        k[0, 40, 1, 7] = float("nan")      # one key of kv head 1 (masked for rows < 40)
        v[0, 0, 1, 9] = float("nan")       # key 0: visible to every causal row, one column
    if ex.get("nan_payload"):
        itype = {torch.float32: torch.int32}.get(dt, torch.int16)
        bits = {torch.float32: (0x7fffffff, 0x7f800001, -1), torch.float16: (0x7fff, 0x7c01, -1),
                torch.bfloat16: (0x7fff, 0x7f81, -1)}[dt]
        for t, idx, w in ((q, (0, 5, 0, 3), bits[0]), (k, (0, 40, 1, 7), bits[1]), (v, (0, 0, 1, 9), bits[2])):
            t.view(itype)[idx] = w
    if ex.get("vnan_masked"):
        v[0, 70, 0, 9] = float("nan")      # visible to causal rows >= 70 only
    if ex.get("huge_k"):
        k[0, 150, 0, 5] = 60000.0 if dt == torch.float16 else 1e30  # key 150: in a later key tile
    if ex.get("inf"):
        v[0, 0, 0, 2] = float("inf")       # key 0 is visible to every causal row
        q[0, 60, 1, 0] = float("inf")      # +-inf logits in one row
    if ex.get("packed"):
        o = torch.full((b, sq, hq + 3, d), float("nan"), device=dev, dtype=dt)[:, :, 1:hq + 1]
    else:
        o = torch.full((b, sq, hq, d), float("nan"), device=dev, dtype=dt)
    lse = torch.full((b, hq, sq), float("nan"), device=dev, dtype=torch.float32) if ex.get("lse") else None
    scale = 1.0 / math.sqrt(d)
    kern.launch(make_params(q, k, v, o, lse, left, right, scale, cap), torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    ro, rl = reference(q, k, v, left, right, scale, cap)
    of = o.double()
    nan_ok = bool(torch.equal(torch.isnan(of), torch.isnan(ro)))
    inf_ok = bool(torch.equal(torch.isinf(of), torch.isinf(ro)))
    fin = torch.isfinite(ro)
    diff = (of - ro)[fin]
    rel = (diff.norm() / ro[fin].norm().clamp_min(1e-30)).item() if fin.any() else 0.0
    maxabs = diff.abs().max().item() if diff.numel() else 0.0
    res = {"case": name, "rel": rel, "maxabs": maxabs, "nan_pattern_ok": nan_ok, "inf_pattern_ok": inf_ok}
    if not (nan_ok and inf_ok):
        bad = ((torch.isnan(of) != torch.isnan(ro)) | (torch.isinf(of) != torch.isinf(ro))).any(-1).nonzero()
        res["pattern_mismatch_bsh"] = [tuple(x) for x in bad[:6].tolist()]
        res["pattern_mismatch_rows"] = int(bad.shape[0])
    ok = nan_ok and inf_ok and rel <= tolerance(defs)
    if lse is not None:
        lf = lse.double()
        lnan = bool(torch.equal(torch.isnan(lf), torch.isnan(rl))) and bool(torch.equal(torch.isinf(lf), torch.isinf(rl)))
        lfin = torch.isfinite(rl)
        lerr = (lf - rl)[lfin].abs().max().item() if lfin.any() else 0.0
        res.update(lse_maxabs=lerr, lse_pattern_ok=lnan)
        ok = ok and lnan and lerr <= 50 * tolerance(defs)
    res["ok"] = ok or name.startswith("info_")
    return res


def check_all(kernels, builds, only, log, case_names=None):
    gen = torch.Generator(device="cuda").manual_seed(1234)
    bad = 0
    exp = variants.experiment_variants()
    tuned = {k: v for k, v in variants.tuning_variants().items() if k not in exp}
    for name, kern in kernels.items():
        if only and only not in name:
            continue
        defs = builds[name]["defines"]
        cases = CASES
        if name in tuned or (name in exp and ("_base" in name or "256x64" in name)):
            cases = [c for c in CASES if c[0] in ("gqa_odd_none", "gqa_odd_causal", "long_causal", "window_37_5", "huge_k")]
        if case_names:
            cases = [c for c in cases if c[0] in case_names]
        worst, fails = 0.0, []
        for c in cases:
            try:
                r = run_case(kern, defs, c, gen)
            except Exception as e:  # noqa: BLE001
                r = {"case": c[0], "ok": False, "error": str(e)[:300]}
            log.append(dict(r, variant=name))
            if not r["ok"]:
                fails.append(r)
            worst = max(worst, r.get("rel", 0.0))
        bad += len(fails)
        status = "ok  " if not fails else "FAIL"
        print(f"{status} {name:<28} regs {kern.regs:>3} smem {kern.smem:>6} BM {kern.block_m:>3} BN {kern.block_n:>3} "
              f"thr {kern.threads:>3} worst rel {worst:.2e}", flush=True)
        for r in log:
            if r.get("variant") == name and r["case"].startswith("info_"):
                print(f"       info {r['case']}: rows whose NaN pattern differs from the reference: "
                      f"{r.get('pattern_mismatch_rows', 0)}", flush=True)
        for f in fails[:4]:
            print("      ", {k: (f"{v:.3e}" if isinstance(v, float) else v) for k, v in f.items()}, flush=True)
    return bad


def time_fn(fn, warmup=5, repeats=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


BENCH = [
    # b, hq, hkv, s, d, causal, dtype
    (4, 32, 32, 2048, 128, True, 2), (4, 32, 32, 2048, 128, False, 2), (4, 32, 8, 2048, 128, True, 2),
    (1, 32, 32, 8192, 128, True, 2), (8, 16, 16, 1024, 64, True, 2),
    (4, 32, 32, 2048, 128, True, 1), (8, 16, 16, 1024, 64, True, 1),
    (4, 32, 32, 2048, 128, True, 0), (4, 32, 32, 2048, 128, False, 0), (1, 32, 32, 8192, 128, True, 0),
    # 10..: the other unmasked rows of docs/perf.md's table
    (4, 32, 32, 2048, 128, False, 1), (4, 32, 8, 2048, 128, False, 2), (1, 32, 32, 8192, 128, False, 2),
]
# FLASH_DEV_BENCH=0,1,7: only those rows of BENCH
if os.environ.get("FLASH_DEV_BENCH"):
    BENCH = [BENCH[int(i)] for i in os.environ["FLASH_DEV_BENCH"].split(",")]


ROUNDS = int(os.environ.get("FLASH_DEV_ROUNDS", "3"))


def bench(kernels, builds, log):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    gen = torch.Generator(device="cuda").manual_seed(7)
    rows = []
    # FLASH_DEV_LAYOUTS=bhsd,bshd: the memory layout of Q/K/V/O (torch's
    # [b, h, s, d], or [b, s, h, d] as rocmforge's tensors); FLASH_DEV_DIST=
    # uniform: U(-1, 1) inputs as compare_torch.py (default N(0, 1)).
    layouts = os.environ.get("FLASH_DEV_LAYOUTS", "bhsd").split(",")
    uniform = os.environ.get("FLASH_DEV_DIST") == "uniform"
    rnd = (lambda *sh: torch.rand(*sh, device="cuda", generator=gen) * 2 - 1) if uniform else \
        (lambda *sh: torch.randn(*sh, device="cuda", generator=gen))
    for (b, hq, hkv, s, d, causal, dtn), layout in [(r, lay) for r in BENCH for lay in layouts]:
        dt = TDT[dtn]
        if layout == "bshd":
            q = rnd(b, s, hq, d).to(dt).transpose(1, 2)
            k = rnd(b, s, hkv, d).to(dt).transpose(1, 2)
            v = rnd(b, s, hkv, d).to(dt).transpose(1, 2)
        else:
            q = rnd(b, hq, s, d).to(dt)
            k = rnd(b, hkv, s, d).to(dt)
            v = rnd(b, hkv, s, d).to(dt)
        pairs = s * (s + 1) // 2 if causal else s * s
        flops = 4.0 * b * hq * d * pairs
        res = {}
        ref_out = None
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        for be in backends:
            def call():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv)
            try:
                with sdpa_kernel(be):
                    res[be.name] = time_fn(call)
                    if ref_out is None:
                        ref_out = call()
            except RuntimeError as e:
                res[be.name] = None
                log.append({"shape": (b, hq, hkv, s, d, causal, dtn), "backend": be.name, "error": str(e)[:200]})
        # ours reads torch's [b, h, s, d] memory through [b, s, h, d] strides
        qv, kv_, vv = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        o = torch.empty(b, s, hq, d, device="cuda", dtype=dt)
        mine = []
        for name, kern in kernels.items():
            defs = builds[name]["defines"]
            if defs["RF_DTYPE"] != dtn or defs["RF_HEAD_DIM"] != d:
                continue
            if dtn == 0 and defs.get("RF_F32_MODE") != 1:
                continue  # bench only the f32-accurate tensor-core path
            mine.append(name)
        # ROUNDS alternating rounds over the variants (A/B comparisons see
        # the same clock and thermal drift); each variant's median of them.
        times = {name: [] for name in mine}
        for _ in range(ROUNDS):
            for name in mine:
                kern = kernels[name]
                prm = make_params(qv, kv_, vv, o, None, -1, 0 if causal else -1, 1.0 / math.sqrt(d), 0.0)
                stream = torch.cuda.current_stream().cuda_stream
                times[name].append(time_fn(lambda: kern.launch(prm, stream)))
        ours = {name: statistics.median(ts) for name, ts in times.items()}
        for name in mine:
            kern = kernels[name]
            kern.launch(make_params(qv, kv_, vv, o, None, -1, 0 if causal else -1, 1.0 / math.sqrt(d), 0.0),
                        torch.cuda.current_stream().cuda_stream)
            if ref_out is not None:
                err = (o.transpose(1, 2).float() - ref_out.float()).abs().max().item()
                log.append({"shape": (b, hq, hkv, s, d, causal, dtn), "variant": name, "maxabs_vs_torch": err,
                            "rounds_ms": times[name]})
        best = min(ours, key=ours.get) if ours else None
        peer = res.get("FLASH_ATTENTION") if dtn != 0 else res.get("EFFICIENT_ATTENTION")
        row = {"shape": f"{b},{hq},{hkv},{s},{d}" + ("" if layout == "bhsd" else " bshd"),
               "mask": "causal" if causal else "none",
               "dtype": {0: "f32", 1: "f16", 2: "bf16"}[dtn], "torch_ms": res, "ours_ms": ours, "best": best,
               "tflops_best": flops / ours[best] / 1e9 if best else None,
               "ratio_vs_peer": (peer / ours[best]) if (best and peer) else None,
               "ratio_vs_cudnn": (res["CUDNN_ATTENTION"] / ours[best]) if (best and res.get("CUDNN_ATTENTION")) else None}
        rows.append(row)
        tf = lambda ms: f"{flops / ms / 1e9:6.1f}" if ms else "   n/a"  # noqa: E731
        print(f"{row['shape']:<18} {row['mask']:<6} {row['dtype']:<4} FLASH {tf(res.get('FLASH_ATTENTION'))} "
              f"EFF {tf(res.get('EFFICIENT_ATTENTION'))} cuDNN {tf(res.get('CUDNN_ATTENTION'))} | ours best "
              f"{best} {tf(ours.get(best))} TF/s ratio {row['ratio_vs_peer'] or 0:.3f} cudnn {row['ratio_vs_cudnn'] or 0:.3f}",
              flush=True)
        for name, ms in sorted(ours.items(), key=lambda x: x[1]):
            print(f"      {name:<28} {ms:8.3f} ms {tf(ms)} TF/s", flush=True)
        del q, k, v, o
        torch.cuda.empty_cache()
    return rows


def f32_accuracy(kernels, builds, log):
    """Relative error vs f64 of ours and of PyTorch EFFICIENT, same inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    gen = torch.Generator(device="cuda").manual_seed(99)
    out = []
    for (b, h, s, d, causal) in [(1, 8, 1024, 128, False), (1, 8, 1024, 128, True), (2, 8, 512, 64, True)]:
        q = torch.randn(b, h, s, d, device="cuda", generator=gen)
        k = torch.randn(b, h, s, d, device="cuda", generator=gen)
        v = torch.randn(b, h, s, d, device="cuda", generator=gen)
        ro, _ = reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), -1, 0 if causal else -1,
                          1.0 / math.sqrt(d), 0.0)
        rn = ro.norm().item()
        row = {"shape": (b, h, s, d), "causal": causal}
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            eo = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2)
        row["EFFICIENT"] = ((eo.double() - ro).norm() / rn).item()
        for name, kern in kernels.items():
            defs = builds[name]["defines"]
            if defs["RF_DTYPE"] != 0 or defs["RF_HEAD_DIM"] != d or ("RF_FLASH_BM" in defs and "x64w8s1" not in name):
                continue
            o = torch.full((b, s, h, d), float("nan"), device="cuda")
            kern.launch(make_params(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), o, None, -1,
                                    0 if causal else -1, 1.0 / math.sqrt(d), 0.0), torch.cuda.current_stream().cuda_stream)
            torch.cuda.synchronize()
            row[name] = ((o.double() - ro).norm() / rn).item()
        out.append(row)
        print("f32 accuracy", {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    log.extend(out)
    return out


def profile(kernels, builds, name, causal):
    """One launch of `name` at (4, 32, 32, 2048, d) for ncu to catch."""
    kern, defs = kernels[name], builds[name]["defines"]
    d, dt = defs["RF_HEAD_DIM"], TDT[defs["RF_DTYPE"]]
    q = torch.randn(4, 2048, 32, d, device="cuda").to(dt)
    k, v, o = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    prm = make_params(q, k, v, o, None, -1, 0 if causal else -1, 1.0 / math.sqrt(d), 0.0)
    for _ in range(3):
        kern.launch(prm, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cubins")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--profile", default="", help="variant to launch once per mask for ncu, nothing else")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--skip-f32acc", action="store_true")
    a = ap.parse_args()
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, time.strftime("%Y-%m-%d %H:%M:%S"), flush=True)
    builds = json.load(open(os.path.join(a.cubins, "build.json")))["variants"]
    kernels = {}
    for name in sorted(builds):
        if a.only and a.only not in name:
            continue
        try:
            kernels[name] = cudrv.Kernel(open(os.path.join(a.cubins, f"{name}.cubin"), "rb").read())
        except Exception as e:  # noqa: BLE001
            print(f"LOAD FAIL {name}: {e}", flush=True)
    if a.profile:
        profile(kernels, builds, a.profile, False)
        profile(kernels, builds, a.profile, True)
        return
    log = {"check": [], "bench": [], "f32acc": []}
    bad = 0
    try:
        if not a.skip_check:
            bad = check_all(kernels, builds, a.only, log["check"], [c for c in a.cases.split(",") if c])
            print(f"correctness: {bad} failing cases", flush=True)
            if not a.skip_f32acc:
                f32_accuracy(kernels, builds, log["f32acc"])
        if not a.skip_bench:
            log["bench_rows"] = bench(kernels, builds, log["bench"])
    finally:
        with open(os.path.join(a.out, "flash_dev.json"), "w") as f:
            json.dump(log, f, indent=1, default=str)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
