//! `run --check` (allocation failures, its memory estimate, parallel
//! progress) and `bench` (nothing timed, `--mask` against a shape's own
//! `:MASK`, its help), through the binary.

use super::cli::{assert_clean_error, assert_ok, binary, json, rocmforge, run, text};
use std::process::Output;

/// `BINARY ARGS` under `ulimit -v KIB` (address space), with few malloc
/// arenas so the process's own overhead stays small and steady.
#[cfg(target_os = "linux")]
fn under_limit(kib: u64, args: &[&str]) -> Output {
    let command = format!("ulimit -v {kib} && exec \"$0\" \"$@\"");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .arg(binary())
        .args(args)
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove(rocmforge::BACKEND_ENV)
        .env_remove("RAYON_NUM_THREADS")
        .output()
        .expect("spawn sh")
}

/// Ended by itself (no signal, no abort) with 0, or with one clean `error:`
/// line about host memory; returns stderr.
fn assert_no_abort(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(!err.contains("memory allocation of") && !err.contains("stack backtrace"), "aborted: {err}");
    if o.status.success() {
        assert!(out.contains("check: PASS"), "{out}\n{err}");
        err
    } else {
        assert_clean_error(o, "of host memory")
    }
}

/// The audit's reproduction (H1): a check whose old per-group buffers did
/// not fit under the limit aborted with SIGABRT. Now the reference holds a
/// row per thread, and the output is compared in place. The up-front check
/// sees MemAvailable, not the limit, so a small machine may refuse the run
/// before it starts: that is a clean error too.
#[cfg(target_os = "linux")]
#[test]
fn check_under_an_address_space_limit_does_not_abort() {
    for backend in ["cpu-flash", "cpu-reference"] {
        let shape = ["--seq-q", "8192", "--seq-kv", "1", "--heads", "32", "--kv-heads", "1", "--head-dim", "128"];
        let mut args = vec!["run", "--check", "--threads", "2", "--backend", backend];
        args.extend(shape);
        let o = under_limit(600_000, &args);
        assert_no_abort(&o);
    }
}

/// A reference buffer the host cannot give (here the row of seq_kv f64
/// scores: 512 MiB under a 586 MiB limit, where the 256 MiB of bf16 k and v
/// fit) is an `error:` line naming the buffer, exit 1.
#[cfg(target_os = "linux")]
#[test]
fn check_buffer_allocation_failure_is_an_error() {
    let o = under_limit(
        600_000,
        &[
            "run",
            "--seq-q",
            "1",
            "--seq-kv",
            "67108864",
            "--heads",
            "1",
            "--kv-heads",
            "1",
            "--head-dim",
            "1",
            "--dtype",
            "bf16",
            "--mask",
            "window:0,0",
            "--threads",
            "1",
            "--check",
            "--backend",
            "cpu-flash",
        ],
    );
    assert!(!o.status.success(), "the scores cannot fit under the limit: {:?}", text(&o));
    let err = assert_no_abort(&o);
    if err.contains("cannot allocate") {
        assert!(
            err.contains(
                "cannot allocate 512.0 MiB of host memory for the f64 reference's scores (seq_kv per row) (--check)"
            ),
            "{err}"
        );
    } else {
        // This machine has too little memory to start the run at all.
        assert!(err.contains("needs") && err.contains("--check reference 512.0 MiB"), "{err}");
    }
}

/// The estimate counts min(threads, work units) busy threads: with one
/// query row there is one unit, whatever --threads says (L10). The sizes
/// are far past any machine, so the estimate is always refused and shown
/// (where MemAvailable is known).
#[cfg(target_os = "linux")]
#[test]
fn check_estimate_counts_only_threads_that_have_work() {
    let huge = ["--seq-q", "1", "--seq-kv", "1099511627776", "--kv-heads", "1", "--head-dim", "1", "--dtype", "bf16"];
    for (heads, busy, size) in [("1", 1, "8.0 TiB"), ("4", 4, "32.0 TiB")] {
        let mut args = vec!["run", "--check", "--threads", "8", "--backend", "cpu-flash", "--heads", heads];
        args.extend(huge);
        let err = assert_clean_error(&run(&args), "this run needs");
        let item =
            format!("--check reference {size} = min(8 threads, {busy} work units) × (1099511627776 + 1) × 8 bytes");
        assert!(err.contains(&item), "{item}\nnot in: {err}");
    }
}

/// One (batch, kv-head) group (M3): the reference still runs on every
/// thread, and progress counts rows, so it ticks while the check runs.
#[test]
fn check_progress_ticks_in_rows_with_a_single_group() {
    // 4 * 4 heads * 64 dims * 1024 * 1024 pairs = 1.07 GFLOP, one group.
    let o = run(&[
        "run",
        "--check",
        "--threads",
        "2",
        "--backend",
        "cpu-flash",
        "--mask",
        "none",
        "--batch",
        "1",
        "--seq-q",
        "1024",
        "--heads",
        "4",
        "--kv-heads",
        "1",
        "--head-dim",
        "64",
    ]);
    let out = assert_ok(&o);
    let (_, err) = text(&o);
    assert!(out.contains("check: PASS"), "{out}");
    assert!(err.contains("check: computing the f64 reference (1.1 GFLOP on 2 threads)"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("check: reference ")).collect();
    let last = lines.last().unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(last.starts_with("check: reference 4096 of 4096 rows, 100 %, "), "{err}");
    let seconds: f64 =
        last.rsplit(", ").next().and_then(|s| s.strip_suffix(" s")).and_then(|s| s.parse().ok()).unwrap();
    // Units are about 40 ms of work: a check that took 1.5 s must have
    // printed a line before the last one (one group used to print nothing).
    if seconds >= 1.5 {
        assert!(lines.len() >= 2, "{seconds} s with one progress line: {err}");
    }
}

/// One query row has one unit: the header says the one thread it uses.
#[test]
fn check_header_names_the_threads_that_have_work() {
    // 4 * 64 dims * 262144 keys = 67 MFLOP, over the progress threshold.
    let o = run(&[
        "run",
        "--check",
        "--threads",
        "2",
        "--backend",
        "cpu-flash",
        "--seq-q",
        "1",
        "--seq-kv",
        "262144",
        "--heads",
        "1",
        "--kv-heads",
        "1",
        "--head-dim",
        "64",
    ]);
    assert_ok(&o);
    let (_, err) = text(&o);
    assert!(err.contains("(0.1 GFLOP on 1 thread)"), "{err}");
    assert!(err.contains("check: reference 1 of 1 rows, 100 %"), "{err}");
}

const SHAPE: &str = "1,2,2,4,4,8";

/// Nothing timed (M2): exit 1 with an error naming what was asked for,
/// after the table that lists why. `gpu-unfused` on `--device cpu` is
/// skipped on any machine.
#[test]
fn bench_that_times_nothing_fails_naming_the_request() {
    let o = run(&["bench", "--shape", SHAPE, "--device", "cpu", "--backends", "gpu-unfused", "--repeats", "1"]);
    let err = assert_clean_error(&o, "error: nothing timed: no backend could run any shape");
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("(asked for --backends gpu-unfused --device cpu)"), "{err}");
    assert!(err.contains("1 (backend, shape) pair skipped; first: gpu-unfused on 1,2,2,4,4,8: "), "{err}");
    let (out, _) = text(&o);
    assert!(out.contains("(nothing timed: no eligible backend)") && out.contains("skipped gpu-unfused on"), "{out}");
    // A GPU that does not exist, named by --device: the same.
    let o = run(&["bench", "--shape", SHAPE, "--device", "gpu:99", "--backends", "cpu-flash,gpu-unfused"]);
    let err = assert_clean_error(&o, "nothing timed");
    assert!(err.contains("--device gpu:99") && err.contains("2 (backend, shape) pairs skipped"), "{err}");
    let no_gpu = rocmforge::device::gpus().map_or(true, |list| list.is_empty());
    if no_gpu {
        let err = assert_clean_error(&run(&["bench", "--shape", SHAPE, "--device", "gpu"]), "nothing timed");
        assert!(err.contains("--device gpu") && err.contains("no GPU"), "{err}");
    }
}

/// With --json, the document (empty `results`, every reason in `skipped`)
/// is still printed, alone on stdout, then the error on stderr and exit 1.
#[test]
fn bench_json_that_times_nothing_prints_the_document_then_fails() {
    let args = ["bench", "--json", "--shape", SHAPE, "--device", "cpu", "--backends", "gpu-unfused,flash-decode"];
    let o = run(&args);
    let err = assert_clean_error(&o, "nothing timed");
    assert!(err.contains("every reason is in the JSON document's \"skipped\""), "{err}");
    let (out, _) = text(&o);
    let doc: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"));
    assert_eq!(doc["command"], "bench");
    assert_eq!(doc["results"], serde_json::json!([]));
    let skipped: Vec<&str> =
        doc["skipped"].as_array().unwrap().iter().map(|s| s["backend"].as_str().unwrap()).collect();
    assert_eq!(skipped, ["gpu-unfused", "flash-decode"]);
}

/// Anything timed is a success, skipped pairs listed.
#[test]
fn bench_with_some_pairs_skipped_succeeds() {
    let o = run(&[
        "bench",
        "--json",
        "--shape",
        SHAPE,
        "--device",
        "cpu",
        "--backends",
        "cpu-flash,gpu-unfused",
        "--repeats",
        "1",
    ]);
    let doc = json(&o);
    assert_eq!(doc["results"].as_array().unwrap().len(), 1);
    assert_eq!(doc["results"][0]["backend"], "cpu-flash");
    assert_eq!(doc["skipped"][0]["backend"], "gpu-unfused");
}

/// `--mask` against a shape's own `:MASK` (L1): a disagreement is an error
/// naming both; agreement, and shapes without a suffix, are fine.
#[test]
fn bench_mask_and_a_shape_suffix_must_agree() {
    let shape = format!("{SHAPE}:causal");
    let o = run(&["bench", "--shape", SHAPE, "--shape", &shape, "--mask", "none", "--backends", "cpu-flash"]);
    let err = assert_clean_error(&o, "--mask none conflicts with --shape 1,2,2,4,4,8:causal");
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("not both"), "{err}");
    assert!(text(&o).0.is_empty(), "nothing is timed or printed: {:?}", text(&o));
    let o = run(&[
        "bench",
        "--json",
        "--shape",
        SHAPE,
        "--shape",
        &shape,
        "--mask",
        "causal",
        "--backends",
        "cpu-flash",
        "--repeats",
        "1",
    ]);
    let masks: Vec<String> =
        json(&o)["results"].as_array().unwrap().iter().map(|r| r["mask"].as_str().unwrap().to_string()).collect();
    assert_eq!(masks, ["causal", "causal"]);
}

/// `bench --help` says what --threads does for bench (it has no --check).
#[test]
fn bench_help_describes_threads_for_bench() {
    let out = assert_ok(&rocmforge(&["bench", "--help"]).output().expect("spawn"));
    assert!(out.contains("CPU threads for the CPU backends being timed (1 to 1024)"), "{out}");
    assert!(!out.contains("--check"), "{out}");
    assert!(out.contains("Exit code: 1 when nothing was timed"), "{out}");
}
