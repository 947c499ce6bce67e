"""One launch of each named variant at (4, 32, 32, 2048, 128) non-causal,
plus PyTorch's FLASH (bf16) and EFFICIENT (f32) kernels on the same shape,
for ncu to profile side by side (ncu -k 'regex:rf_flash|flash_fwd|fmha').

python prof.py CUBIN_DIR NAME[,NAME...]
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cudrv  # noqa: E402
from run import TDT, make_params  # noqa: E402


def main():
    cubins, names = sys.argv[1], sys.argv[2].split(",")
    torch.zeros(1, device="cuda")  # the context cudrv's module loads need
    builds = json.load(open(os.path.join(cubins, "build.json")))["variants"]
    b, h, s, d = 4, 32, 2048, 128
    done = set()
    for name in names:
        defs = builds[name]["defines"]
        dt = TDT[defs["RF_DTYPE"]]
        kern = cudrv.Kernel(open(os.path.join(cubins, f"{name}.cubin"), "rb").read())
        q = torch.randn(b, h, s, d, device="cuda").to(dt)
        k, v = torch.randn_like(q), torch.randn_like(q)
        o = torch.empty(b, s, h, d, device="cuda", dtype=dt)
        prm = make_params(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), o, None, -1, -1,
                          1.0 / math.sqrt(d), 0.0)
        kern.launch(prm, torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        print("launched", name, flush=True)
        if dt in done:
            continue
        done.add(dt)
        be = SDPBackend.EFFICIENT_ATTENTION if dt == torch.float32 else SDPBackend.FLASH_ATTENTION
        with sdpa_kernel(be):
            F.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize()
        print("launched torch", be.name, flush=True)


if __name__ == "__main__":
    main()
