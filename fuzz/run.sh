#!/usr/bin/env bash
# Coverage-guided fuzzing of ROCmForge's input paths on stable Rust.
#
# libFuzzer (from the libfuzzer-sys crate, compiled from source with the C++
# compiler) drives targets instrumented by rustc's own SanitizerCoverage pass
# (-Cpasses=sancov-module, a stable flag), so no nightly toolchain and no
# cargo-fuzz are needed. Overflow checks and debug assertions are on.
#
#   fuzz/run.sh smoke            # every target for $FUZZ_SECONDS (default 20) s: CI
#   fuzz/run.sh long SECONDS     # every target for SECONDS s; keeps the corpus
#   fuzz/run.sh build            # build only
#
# Targets: npy, safetensors, problem, choice (fuzz/fuzz_targets/). Corpora
# grow in fuzz/corpus/<target> (git-ignored), seeded from fuzz/seeds/<target>.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script;
# replay it with fuzz/target/x86_64-unknown-linux-gnu/release/<target> FILE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mode=${1:-smoke}
TARGETS=(npy safetensors problem choice)
TRIPLE=x86_64-unknown-linux-gnu

command -v c++ >/dev/null || { echo "fuzz: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2; exit 1; }

# RUSTFLAGS reach only the target crates because --target is explicit, so
# build scripts and proc macros are not instrumented (they would not link).
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$TRIPLE" --bins
[ "$mode" = build ] && exit 0

case $mode in
smoke) seconds=${FUZZ_SECONDS:-20} ;;
long) seconds=${2:?usage: run.sh long SECONDS} ;;
*) echo "usage: run.sh smoke|long SECONDS|build" >&2; exit 2 ;;
esac

# One target per core at a time (each still gets $seconds of wall time):
# on CI's 2-core machine the smoke takes half as long for the same effort.
jobs=$(nproc 2>/dev/null || echo 1)

run_target() {
    local t=$1 log="artifacts/$1/last-run.log"
    mkdir -p "corpus/$t" "artifacts/$t"
    # -rss_limit_mb: an input that makes the reader allocate past 2 GiB is a
    # bug (sizes must be checked first), reported as a crash.
    if "target/$TRIPLE/release/$t" "corpus/$t" "seeds/$t" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        {
            echo "== fuzz $t for ${seconds}s"
            grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^Done" "$log" | sed 's/^/   /'
            echo "   corpus: $(ls "corpus/$t" | wc -l) inputs"
        }
    else
        {
            echo "== fuzz $t for ${seconds}s"
            echo "   CRASH in $t: see $log and artifacts/$t/"
            tail -n 30 "$log"
        } >&2
        return 1
    fi
}

mkdir -p artifacts
failed=0
pids=()
for t in "${TARGETS[@]}"; do
    run_target "$t" >"artifacts/.$t.out" 2>&1 &
    pids+=("$!")
    if (( ${#pids[@]} >= jobs )); then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
# Reports in target order, whatever order the runs ended in.
for t in "${TARGETS[@]}"; do cat "artifacts/.$t.out"; rm -f "artifacts/.$t.out"; done
exit $failed
