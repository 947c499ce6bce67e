#!/usr/bin/env bash
# Times flash-decode variants on the GPU machine, one process per variant
# (ROCMFORGE_DECODE_TUNE, backends/flash_decode/tuning.rs), contiguous K/V:
#   decode_sweep.sh BENCH OUTLOG "VARIANT|SHAPES|DTYPES" ...
# VARIANT is a ROCMFORGE_DECODE_TUNE value ("" = defaults), SHAPES a list
# like "1,8192 16,4096", DTYPES "bf16" or "bf16,f32". Prints one line per
# (variant, shape, dtype): us per call on the device, host us per call, GB/s.
set -uo pipefail
bench=${1:?usage: decode_sweep.sh BENCH OUTLOG VARIANT|SHAPES|DTYPES...}
log=${2:?}
shift 2
for item in "$@"; do
    IFS='|' read -r variant shapes dtypes <<<"$item"
    args=()
    for s in $shapes; do args+=(--shape "$s"); done
    ROCMFORGE_DECODE_TUNE="$variant" "$bench" --layout "${LAYOUT:-contiguous}" --dtype "$dtypes" \
        --calls "${CALLS:-50}" --repeats "${REPEATS:-5}" "${args[@]}" 2>&1 |
        while read -r line; do
            echo "{\"variant\": \"$variant\", \"out\": $line}" >>"$log"
            python3 -c '
import json, sys
v, line = sys.argv[1] or "default", sys.argv[2]
try:
    r = json.loads(line)
except ValueError:
    print(v, line)
    sys.exit()
us, host, gbps = 1000 * r["ms"], r["host_us"], r["gbps"]
dt, b, L, lay, nf = r["dtype"], r["batch"], r["seq_kv"], r["layout"], r["nonfinite_out"]
print(f"{v:28s} {dt:5s} {b:3d},{L:6d} {lay:10s} {us:8.2f} us  host {host:6.2f} us  {gbps:7.0f} GB/s  nonfinite {nf}")
' "$variant" "$line"
        done
done
