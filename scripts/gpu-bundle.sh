#!/usr/bin/env bash
# Builds everything a GPU machine needs into gpu-bundle/ (git-ignored):
# the CLI, the integration-test binary (every GPU test), the criterion
# bench, the decode bench, the cpu-flash timer, the torch comparison scripts and run.sh. Binaries are
# self-contained: kernels are embedded, CUDA/HIP libraries load at run time.
#
#   scripts/gpu-bundle.sh [DIR]      # DIR defaults to gpu-bundle; ship it and run:
#   DIR/run.sh OUTDIR [step...]
# DIR must be a git-ignored folder of the checkout the device tool sends
# (e.g. gpu-bundle, or .gpuwork/NAME when .git/info/exclude lists .gpuwork/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-bundle}"
rm -rf "$out"
mkdir -p "$out"

# Print the executable cargo built for target $1 from JSON messages on stdin.
executable_of() {
    python3 -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == want:
        print(m["executable"])
' "$1"
}

cargo build --release --bin rocmforge
cp target/release/rocmforge "$out/"
suite=$(cargo test --release --test suite --no-run --message-format=json | executable_of suite)
cp "$suite" "$out/suite"
# The library's unit tests: on the GPU machine's CPU they exercise
# cpu-flash's AVX-512 micro-kernels, which the development CPU lacks.
libtests=$(cargo test --release --lib --no-run --message-format=json | executable_of rocmforge)
cp "$libtests" "$out/lib-tests"
bench=$(cargo bench --bench attention --no-run --message-format=json | executable_of attention)
cp "$bench" "$out/attention-bench"
decode=$(cargo build --release --example bench_decode --message-format=json | executable_of bench_decode)
cp "$decode" "$out/bench_decode"
cpuflash=$(cargo build --release --example time_cpu_flash --message-format=json | executable_of time_cpu_flash)
cp "$cpuflash" "$out/time_cpu_flash"
cp scripts/gpu-run.sh "$out/run.sh"
cp scripts/compare_torch.py scripts/compare_decode.py scripts/compare_torch_cpu.py scripts/read_ceiling.cu "$out/"
chmod +x "$out/run.sh"
strip "$out/rocmforge" "$out/suite" "$out/lib-tests" "$out/attention-bench" "$out/bench_decode" "$out/time_cpu_flash" 2>/dev/null || true

size=$(du -sm "$out" | cut -f1)
echo "gpu-bundle: ${size} MiB"
ls -l "$out"
if [ "$size" -ge 60 ]; then
    echo "error: gpu-bundle is ${size} MiB, over the 60 MiB budget" >&2
    exit 1
fi
