#!/usr/bin/env bash
# A/B timing of two rocmforge binaries on the GPU machine, alternating
# OLD, NEW, OLD, NEW... per configuration so that clock and thermal drift
# hit both alike. Prints one line per run (backend, median ms) and a
# summary of the per-round NEW/OLD ratios.
#   ab_bench.sh OLD NEW ROUNDS "backend|shape|mask|dtype" ...
set -uo pipefail
old=$1 new=$2 rounds=$3
shift 3
for cfg in "$@"; do
    IFS='|' read -r backend shape mask dtype <<<"$cfg"
    for r in $(seq 1 "$rounds"); do
        for side in old new; do
            exe=$old
            [ "$side" = new ] && exe=$new
            ms=$("$exe" bench --json --backends "$backend" --shape "$shape" --mask "$mask" --dtype "$dtype" \
                --warmup 3 --repeats 15 | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["median_ms"])')
            echo "$backend $shape $mask $dtype round $r $side $ms"
        done
    done
done | tee /dev/stderr | python3 -c '
import sys, statistics, collections
runs = collections.defaultdict(lambda: {"old": [], "new": []})
for line in sys.stdin:
    f = line.split()
    runs[tuple(f[:4])][f[6]].append(float(f[7]))
print("\nconfig                                         old ms (median of rounds)  new ms   new/old")
for k, v in runs.items():
    o, n = statistics.median(v["old"]), statistics.median(v["new"])
    name = " ".join(k)
    print(f"{name:<46} {o:>10.3f} {n:>16.3f} {n / o:>9.3f}")
'
