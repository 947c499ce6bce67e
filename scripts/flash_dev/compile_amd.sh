#!/usr/bin/env bash
# Offline AMD compile check of kernels/flash/fwd.hip (no GPU): Debian's hipcc
# for gfx90a (MFMA, wave64) and gfx1030 (SIMT, wave32), header-free clang-19
# for gfx942 (MFMA), gfx1100 (WMMA gfx11) and gfx1200 (WMMA gfx12), every
# dtype and head dim. Usage: bash scripts/flash_dev/compile_amd.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${1:-/tmp/flash_amd}"
mkdir -p "$OUT"
INC=(-I kernels/include)
fail=0; n=0
compile() { # tool target dtype dim
    local tool=$1 tgt=$2 dt=$3 d=$4 obj="$OUT/$2_dt$3_d$4.o"
    local args=(-x hip --offload-arch="$tgt" -O3 -std=c++17 -c "${INC[@]}" -DRF_DTYPE="$dt" -DRF_HEAD_DIM="$d")
    if [[ $tool == hipcc ]]; then
        args+=(--offload-device-only --no-gpu-bundle-output -include hip/hip_runtime.h)
    else
        args+=(--cuda-device-only -nogpuinc -nogpulib -DRF_HIP_HEADER_FREE=1)
    fi
    n=$((n + 1))
    if ! "$tool" "${args[@]}" kernels/flash/fwd.hip -o "$obj" 2>"$obj.log"; then
        echo "FAIL $tool $tgt dtype=$dt d=$d"; head -30 "$obj.log"; fail=$((fail + 1))
    fi
}
for d in 32 64 96 128 256; do
    for dt in 0 1 2; do
        compile hipcc gfx90a $dt $d
        compile hipcc gfx1030 $dt $d
        compile clang-19 gfx942 $dt $d
        compile clang-19 gfx1100 $dt $d
        compile clang-19 gfx1200 $dt $d
    done
done
echo "$((n - fail)) of $n AMD compiles passed"
exit $((fail > 0))
