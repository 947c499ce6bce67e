"""The kernel specializations the harness builds: the ones the Rust side
registers (defaults) plus tuning candidates (explicit tile overrides)."""

F32, F16, BF16 = 0, 1, 2
F32_SIMT, F32_TF32X3, F32_TF32 = 0, 1, 2
DTYPE_NAME = {F32: "f32", F16: "f16", BF16: "bf16"}
HEAD_DIMS = [32, 64, 96, 128, 256]


def default_variants():
    """name -> defines, for every variant the backends use on NVIDIA."""
    out = {}
    for dt in (BF16, F16):
        for d in HEAD_DIMS:
            out[f"{DTYPE_NAME[dt]}_d{d}"] = dict(RF_DTYPE=dt, RF_HEAD_DIM=d)
    for d in HEAD_DIMS:
        out[f"f32x3_d{d}"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=d, RF_F32_MODE=F32_TF32X3)
        out[f"f32simt_d{d}"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=d, RF_F32_MODE=F32_SIMT)
    out["f32tf32_d128"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=128, RF_F32_MODE=F32_TF32)
    out["f32tf32_d64"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=64, RF_F32_MODE=F32_TF32)
    return out


def tuning_variants():
    """Tile-shape candidates (BM, BN, WARPS, STAGES) for the timed shapes."""
    out = {}
    cands = {
        (BF16, 128): [(128, 32, 4, 2), (64, 64, 4, 2)],
        (BF16, 64): [(128, 64, 4, 2), (64, 64, 4, 2)],
        (F32, 128): [(128, 64, 8, 1)],
    }
    out["bf16_d128_headorder"] = dict(RF_DTYPE=BF16, RF_HEAD_DIM=128, RF_FLASH_GLOBAL_ORDER=0)
    # Without the exact exponent for huge logits (the limit is never reached):
    # shows on the device what the huge_k case does to the FFMA exponent.
    out["f32x3_d64_noexact"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=64, RF_F32_MODE=F32_TF32X3, RF_FLASH_EXACT_LIMIT="3e38f")
    out["bf16_d64_noexact"] = dict(RF_DTYPE=BF16, RF_HEAD_DIM=64, RF_FLASH_EXACT_LIMIT="3e38f")
    # Cost A/B of the NaN/Inf/huge paths (debug switches that break them):
    for dt, base in ((BF16, "bf16_d128"), (F32, "f32x3_d128")):
        extra = dict(RF_F32_MODE=F32_TF32X3) if dt == F32 else {}
        for tag, sw in (("dbg_noexact", ["RF_FLASH_DBG_NO_EXACT"]), ("dbg_novpass", ["RF_FLASH_DBG_NO_VPASS"]),
                        ("dbg_nonf", ["RF_FLASH_DBG_NO_NF"]),
                        ("dbg_bare", ["RF_FLASH_DBG_NO_EXACT", "RF_FLASH_DBG_NO_VPASS", "RF_FLASH_DBG_NO_NF"])):
            out[f"{base}_{tag}"] = dict(RF_DTYPE=dt, RF_HEAD_DIM=128, **extra, **{k: 1 for k in sw})
    out["f32x3_d128_dbg_nologits"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=128, RF_F32_MODE=F32_TF32X3,
                                          RF_FLASH_DBG_NO_TF32LOGITS=1)
    out["f32x3_d128_acck16"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=128, RF_F32_MODE=F32_TF32X3, RF_FLASH_ACC_K=16)
    out["f32x3_d128_acck64"] = dict(RF_DTYPE=F32, RF_HEAD_DIM=128, RF_F32_MODE=F32_TF32X3, RF_FLASH_ACC_K=64)
    for (dt, d), lst in cands.items():
        for bm, bn, w, st in lst:
            defs = dict(RF_DTYPE=dt, RF_HEAD_DIM=d, RF_FLASH_BM=bm, RF_FLASH_BN=bn, RF_FLASH_WARPS=w,
                        RF_FLASH_STAGES=st)
            name = f"{'f32x3' if dt == F32 else DTYPE_NAME[dt]}_d{d}_{bm}x{bn}w{w}s{st}"
            if dt == F32:
                defs["RF_F32_MODE"] = F32_TF32X3
            out[name] = defs
    return out


def experiment_variants():
    """flashperf (2026-11-22 evening): A/B candidates checked on every case
    (`_base` ones on the short list). `f32x3_d128_base`: the f32 kernel
    before this work (careful tf32 split everywhere, V^T transposed
    row-major with 16-way bank conflicts; NaN fix included); `_vtrow` keeps
    only the old V^T mapping; `_smallrn` rounds the small tf32 part (the
    default leaves it to the tensor cores' truncation); `_128x64w8s1`: 128 x
    64 tiles, one stage. `bf16_d128_nolane` / `_lane` force the lambda /
    lane-address fragment loads (the default picks by NVRTC version);
    `bf16_d128_256x64w8s2` (8 warps x 2 strips, one block per SM) measured
    7 % slower and is kept for the record. The pairwise-tree row reductions
    measured in the same work were removed (NOTES.md v7)."""
    out = {}
    bf = dict(RF_DTYPE=BF16, RF_HEAD_DIM=128)
    out["bf16_d128_nolane"] = dict(bf, RF_FLASH_LANE_ADDR=0)
    out["bf16_d128_lane"] = dict(bf, RF_FLASH_LANE_ADDR=1)
    out["bf16_d128_256x64w8s2"] = dict(bf, RF_FLASH_BM=256, RF_FLASH_BN=64, RF_FLASH_WARPS=8, RF_FLASH_STAGES=2)
    f32 = dict(RF_DTYPE=F32, RF_HEAD_DIM=128, RF_F32_MODE=F32_TF32X3)
    out["f32x3_d128_base"] = dict(f32, RF_FLASH_FAST_SPLIT=0, RF_FLASH_VT_ROWMAJOR=1)
    out["f32x3_d128_vtrow"] = dict(f32, RF_FLASH_VT_ROWMAJOR=1)
    out["f32x3_d128_smallrn"] = dict(f32, RF_TF32_SMALL_RN=1)
    out["f32x3_d128_128x64w8s1"] = dict(f32, RF_FLASH_BM=128, RF_FLASH_BN=64, RF_FLASH_WARPS=8, RF_FLASH_STAGES=1)
    return out
