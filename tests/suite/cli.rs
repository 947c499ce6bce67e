//! Integration tests of the `rocmforge` binary: commands, selection flags,
//! error lines and `--json`. Problems are tiny so the tests stay fast;
//! environment variables are set on the child process only, never on this
//! one (tests run in parallel threads and spawn processes).
//!
//! File handling is in `cli_files`, extreme arguments in `cli_limits`.

use rocmforge::registry::Registry;
use rocmforge::BACKEND_ENV;
use std::path::Path;
use std::process::{Command, Output};

pub const TINY: &[&str] = &["--batch", "1", "--seq-q", "4", "--heads", "2", "--kv-heads", "1", "--head-dim", "8"];

/// The binary under test: `ROCMFORGE_BIN` if set (the GPU bundle sets it),
/// else the one cargo built, else a `rocmforge` next to this test binary.
pub fn binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ROCMFORGE_BIN") {
        return p.into();
    }
    let built = Path::new(env!("CARGO_BIN_EXE_rocmforge"));
    if built.exists() {
        return built.to_path_buf();
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.with_file_name("rocmforge")
}

pub fn rocmforge(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args).env_remove(BACKEND_ENV).env_remove("RAYON_NUM_THREADS");
    c
}

pub fn run(args: &[&str]) -> Output {
    rocmforge(args).output().expect("spawn rocmforge")
}

pub fn tiny(args: &[&str]) -> Vec<String> {
    args.iter().chain(TINY).map(|s| s.to_string()).collect()
}

pub fn run_owned(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A success; returns stdout.
pub fn assert_ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "expected success ({:?}); stdout:\n{out}\nstderr:\n{err}", o.status);
    out
}

/// A failure by exit code (not a signal: no abort), with exactly one
/// `error: ...` line on stderr, no panic, and `needle` in that line.
pub fn assert_clean_error(o: &Output, needle: &str) -> String {
    let (out, err) = text(o);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "expected exit 1 or 2, got {:?}; stdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    err
}

pub fn json(o: &Output) -> serde_json::Value {
    let out = assert_ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn help_works_for_every_command() {
    for cmd in [
        vec!["--help"],
        vec!["backends", "--help"],
        vec!["explain", "--help"],
        vec!["run", "--help"],
        vec!["bench", "--help"],
        vec!["devices", "--help"],
        vec!["kernels", "--help"],
        vec!["kernels", "check", "--help"],
    ] {
        let out = assert_ok(&run(&cmd));
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
    let out = assert_ok(&run(&["bench", "--help"]));
    assert!(out.contains("4 * batch * q_heads * head_dim"), "bench help documents FLOPs: {out}");
}

#[test]
fn help_states_the_tensor_layout() {
    let out = assert_ok(&run(&["run", "--help"]));
    for needle in
        ["[batch, seq_q, q_heads, head_dim]", "[batch, seq_kv, kv_heads, head_dim]", "PyTorch", "transpose(1, 2)"]
    {
        assert!(out.contains(needle), "run --help lacks '{needle}': {out}");
    }
    assert!(assert_ok(&run(&["--help"])).contains("[batch, seq, heads, head_dim]"));
}

#[test]
fn backend_flag_and_env_change_the_choice() {
    let out = assert_ok(&run_owned(&tiny(&["run", "--backend", "cpu-reference"])));
    assert!(out.contains("backend: cpu-reference (requested by --backend)\n"), "{out}");

    let args = tiny(&["run"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = assert_ok(&rocmforge(&refs).env(BACKEND_ENV, "cpu-reference").output().unwrap());
    assert!(out.contains(&format!("backend: cpu-reference (requested by {BACKEND_ENV})\n")), "{out}");

    // The flag beats the environment.
    let args = tiny(&["run", "--backend", "cpu-reference"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = assert_ok(&rocmforge(&refs).env(BACKEND_ENV, "no-such-backend").output().unwrap());
    assert!(out.contains("backend: cpu-reference (requested by --backend)"), "{out}");
}

#[test]
fn choice_labels_are_consistent() {
    let out = assert_ok(&run_owned(&tiny(&["explain", "--backend", "cpu-reference"])));
    assert!(out.contains("choice:  cpu-reference (from --backend)\n"), "{out}");
    assert!(out.contains("selected: cpu-reference (requested by --backend)\n"), "{out}");
    let out = assert_ok(&run_owned(&tiny(&["run", "--backend", "cpu-flash,cpu-reference"])));
    assert!(out.contains("backend: cpu-flash (requested by --backend)"), "{out}");
    for o in
        [run_owned(&tiny(&["explain", "--backend", "cpu-flash"])), run_owned(&tiny(&["run", "--backend", "cpu-flash"]))]
    {
        let (out, err) = text(&o);
        assert!(!out.contains("config") && !err.contains("config"), "'config' is not a CLI word: {out}{err}");
        assert!(!out.contains("((") && !out.contains("))"), "nested parentheses: {out}");
    }
}

#[test]
fn unknown_backend_lists_valid_names() {
    let o = run_owned(&tiny(&["run", "--backend", "no-such-backend"]));
    let err = assert_clean_error(&o, "no-such-backend");
    for name in Registry::global().unwrap().names() {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
    let args = tiny(&["run"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_clean_error(&rocmforge(&refs).env(BACKEND_ENV, "bogus").output().unwrap(), BACKEND_ENV);
    assert_clean_error(&rocmforge(&refs).env(BACKEND_ENV, "a,,b").output().unwrap(), "empty backend name");
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"cpu-flash\xff");
    assert_clean_error(&rocmforge(&refs).env(BACKEND_ENV, not_utf8).output().unwrap(), "is not valid UTF-8");
    // "auto" from the environment is auto, and says where it came from.
    let cpu = tiny(&["run", "--device", "cpu"]);
    let cpu: Vec<&str> = cpu.iter().map(String::as_str).collect();
    let out = assert_ok(&rocmforge(&cpu).env(BACKEND_ENV, "auto").output().unwrap());
    assert!(out.contains("backend: cpu-flash (auto: highest priority"), "{out}");
}

#[test]
fn forced_backend_that_cannot_run_lists_its_reasons() {
    let o = run_owned(&tiny(&["run", "--backend", "gpu-unfused", "--device", "cpu"]));
    if Registry::global().unwrap().get("gpu-unfused").is_none() {
        assert_clean_error(&o, "unknown attention backend 'gpu-unfused'");
        return;
    }
    assert_clean_error(&o, "gpu-unfused: runs on gpu, problem is on cpu");
}

/// The GPU backend named with no GPU present must fail with the reason,
/// never run on the CPU; with a GPU it must run there.
#[test]
fn forced_gpu_backend_without_gpu_fails_with_the_reason() {
    if Registry::global().unwrap().get("gpu-unfused").is_none() {
        return; // built without a GPU driver: nothing registered to force
    }
    let o = run_owned(&tiny(&["run", "--backend", "gpu-unfused"]));
    match rocmforge::device::gpus() {
        Ok(list) if !list.is_empty() => {
            let out = assert_ok(&o);
            assert!(out.contains("backend: gpu-unfused") && out.contains(&list[0].label()), "{out}");
        }
        Ok(_) | Err(_) => {
            let err = assert_clean_error(&o, "gpu-unfused: needs a GPU");
            assert!(err.contains("(requested by --backend)") && err.contains("no GPU device"), "{err}");
            assert!(!text(&o).0.contains("time:"), "it ran something: {}", text(&o).0);
        }
    }
}

#[test]
fn invalid_problem_is_reported_once_as_invalid() {
    let names = Registry::global().unwrap().names();
    for args in [
        vec!["run", "--heads", "3", "--kv-heads", "2", "--seq-q", "2", "--head-dim", "4"],
        vec!["run", "--backend", "cpu-reference", "--heads", "3", "--kv-heads", "2", "--seq-q", "2"],
        vec!["explain", "--heads", "3", "--kv-heads", "2"],
    ] {
        let o = run(&args);
        let err =
            assert_clean_error(&o, "error: invalid problem: num_q_heads (3) must be a multiple of num_kv_heads (2)");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        for name in &names {
            assert!(!err.contains(name), "{args:?}: the reason is repeated per backend: {err}");
        }
    }
    assert_clean_error(&run(&["run", "--head-dim", "0"]), "invalid problem: head_dim must be at least 1");
}

#[test]
fn bad_arguments_give_one_line_errors() {
    assert_clean_error(&run(&["run", "--batch", "many"]), "--batch");
    assert_clean_error(&run(&["run", "--frobnicate"]), "--frobnicate");
    assert_clean_error(&run(&["run", "--dtype", "f64"]), "f64");
    assert_clean_error(&run(&["run", "--mask", "diagonal"]), "diagonal");
    assert_clean_error(&run(&["run", "--device", "tpu"]), "tpu");
    assert_clean_error(&run(&["bench", "--shape", "1,2,3"]), "3 numbers");
    assert_clean_error(&run(&["run", "--q", "q.npy"]), "--k");
    assert_clean_error(&run(&["explain", "--heads", "-1"]), "-1");
}

#[test]
fn explain_lists_every_backend_once_with_one_chosen() {
    let out = assert_ok(&run_owned(&tiny(&["explain"])));
    for name in Registry::global().unwrap().names() {
        let lines = out.lines().filter(|l| l.trim_start().starts_with(&format!("{name} "))).count();
        assert_eq!(lines, 1, "{name}: {out}");
    }
    assert_eq!(out.lines().filter(|l| l.contains(" chosen ")).count(), 1, "{out}");
    assert!(out.contains("memory:  q, k, v and output need 768 bytes of host memory"), "{out}");
    assert!(out.contains("allocation is the caller's"), "{out}");
}

#[test]
fn json_documents_for_run_explain_backends() {
    let doc = json(&run_owned(&tiny(&["run", "--json", "--backend", "cpu-reference", "--check", "--repeats", "3"])));
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["command"], "run");
    assert_eq!(doc["backend"], "cpu-reference");
    assert_eq!(doc["choice"]["source"], "--backend");
    assert_eq!(doc["problem"]["seq_q"], 4);
    assert_eq!(doc["problem"]["q_heads"], 2);
    assert_eq!(doc["device"]["kind"], "cpu");
    assert_eq!(doc["timing"]["count"], 3);
    assert!(doc["timing"]["median"].as_f64().unwrap() > 0.0);
    assert!(doc["timing"]["min"].as_f64().unwrap() <= doc["timing"]["median"].as_f64().unwrap());
    assert_eq!(doc["check"]["passed"], true);
    assert_eq!(doc["check"]["total"], 64);
    assert_eq!(doc["check"]["outside"], 0);
    assert!(doc["device_memory"].is_null(), "device memory on the CPU: {}", doc["device_memory"]);

    let doc = json(&run_owned(&tiny(&["explain", "--json"])));
    assert_eq!(doc["command"], "explain");
    let verdicts = doc["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), Registry::global().unwrap().names().len());
    assert_eq!(verdicts.iter().filter(|v| v["verdict"] == "chosen").count(), 1);
    assert!(doc["selected"].as_str().unwrap().contains("auto"), "{doc}");
    assert_eq!(doc["host_memory"]["tensors_bytes"], 768.0);

    let doc = json(&run(&["backends", "--json"]));
    let names: Vec<&str> = doc["backends"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, Registry::global().unwrap().names());
    let reference = &doc["backends"].as_array().unwrap()[names.iter().position(|n| *n == "cpu-reference").unwrap()];
    assert_eq!(reference["dtypes"], serde_json::json!(["f32", "f16", "bf16"]));
    assert_eq!(reference["deterministic"], true);
}

#[test]
fn threads_flag_sizes_the_cpu_pool() {
    let out = assert_ok(&run_owned(&tiny(&["run", "--threads", "1", "--backend", "cpu-flash"])));
    assert!(out.contains("device:  cpu (1 threads)"), "{out}");
    let args = tiny(&["run", "--backend", "cpu-flash"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = assert_ok(&rocmforge(&refs).env("RAYON_NUM_THREADS", "3").output().unwrap());
    assert!(out.contains("device:  cpu (3 threads)"), "{out}");
    let doc = json(&run(&[
        "bench",
        "--threads",
        "2",
        "--shape",
        "1,2,1,4,4,8",
        "--backends",
        "cpu-flash",
        "--repeats",
        "1",
        "--json",
    ]));
    assert_eq!(doc["cpu_threads"], 2);
    assert_clean_error(&run_owned(&tiny(&["run", "--threads", "0"])), "--threads");
}

#[test]
fn check_reports_progress_on_large_problems() {
    // 4 * 8 heads * 128 dims * 128 * 128 pairs = 67 MFLOP: over the threshold.
    let o = run(&[
        "run",
        "--backend",
        "cpu-reference",
        "--check",
        "--mask",
        "none",
        "--seq-q",
        "128",
        "--heads",
        "8",
        "--head-dim",
        "128",
    ]);
    let out = assert_ok(&o);
    let (_, err) = text(&o);
    assert!(out.contains("check: PASS"), "{out}");
    assert!(err.contains("check: computing the f64 reference (0.1 GFLOP"), "{err}");
    assert!(err.contains("check: reference 1024 of 1024 rows, 100 %"), "{err}");
    // Small problems stay quiet.
    let (_, err) = text(&run_owned(&tiny(&["run", "--check"])));
    assert!(!err.contains("check:"), "{err}");
}

#[test]
fn devices_lists_the_cpu_and_says_why_there_is_no_gpu() {
    let out = assert_ok(&run(&["devices"]));
    assert!(out.starts_with("cpu: ") && out.contains(" threads"), "{out}");
    match rocmforge::device::gpus() {
        Ok(list) if !list.is_empty() => assert!(out.contains(&list[0].label()), "{out}"),
        Ok(_) => assert!(out.contains("no GPU"), "{out}"),
        Err(e) => assert!(out.contains(&e.to_string()), "{out}"),
    }
}

#[test]
fn kernels_check_names_the_missing_compiler() {
    assert_clean_error(&run(&["kernels", "check", "--target", "vax11"]), "unknown target 'vax11'");
    // The child sees no NVRTC on its loader path (this process's own
    // environment is not touched). A system-wide NVRTC still loads; then
    // the check must actually compile.
    let empty = tempfile::tempdir().unwrap();
    let o =
        rocmforge(&["kernels", "check", "--target", "sm_80"]).env("LD_LIBRARY_PATH", empty.path()).output().unwrap();
    if o.status.success() {
        let (out, _) = text(&o);
        assert!(out.contains("sm_80: ") && out.contains("specializations compiled"), "{out}");
    } else {
        let err = assert_clean_error(&o, "NVRTC is missing");
        assert!(!err.contains("no GPU device"), "{err}");
    }
}

#[test]
fn bench_json_times_the_named_backend() {
    let doc = json(&run(&[
        "bench",
        "--shape",
        "1,2,1,4,4,8:causal",
        "--backends",
        "cpu-reference",
        "--repeats",
        "2",
        "--json",
    ]));
    let r = &doc["results"][0];
    assert_eq!(r["backend"], "cpu-reference");
    assert_eq!(r["mask"], "causal");
    assert_eq!(r["repeats"], 2);
    assert!(r["gflops"].as_f64().unwrap() > 0.0);
    assert!(r["min_ms"].as_f64().unwrap() <= r["median_ms"].as_f64().unwrap());
}

/// docs/backends.md is generated; regenerate with
/// `cargo run -- backends --markdown > docs/backends.md`.
#[test]
fn committed_backends_doc_is_current() {
    // Embedded at build time, so the bundled test binary needs no source tree.
    let committed = include_str!("../../docs/backends.md");
    let generated = assert_ok(&run(&["backends", "--markdown"]));
    assert!(
        committed == generated,
        "docs/backends.md is stale; run `cargo run -- backends --markdown > docs/backends.md`"
    );
}

/// `run` on a GPU reports the peak device memory: exactly the tensors for
/// the fused kernel (it allocates nothing), more for gpu-unfused (its
/// score workspace).
#[test]
#[ignore = "needs a GPU"]
fn run_reports_peak_device_memory_on_a_gpu() {
    if !crate::common::require_gpu() && rocmforge::device::gpus().map_or(true, |g| g.is_empty()) {
        println!("SKIP: no GPU");
        return;
    }
    let shape = ["--batch", "1", "--heads", "4", "--kv-heads", "2", "--seq-q", "300", "--seq-kv", "300"];
    let peak = |backend: &str| {
        let mut args = vec!["run", "--json", "--mask", "causal", "--head-dim", "64", "--dtype", "bf16", "--backend"];
        args.push(backend);
        args.extend(shape);
        let doc = json(&run(&args));
        let m = &doc["device_memory"];
        (m["peak_bytes"].as_u64().unwrap(), m["tensor_bytes"].as_u64().unwrap())
    };
    let tensors = 2 * (2 * 300 * 4 * 64 + 2 * 300 * 2 * 64);
    assert_eq!(peak("flash-causal"), (tensors, tensors), "flash-causal allocated beyond its tensors");
    let (unfused, t) = peak("gpu-unfused");
    assert_eq!(t, tensors);
    assert!(unfused > tensors, "gpu-unfused's scores need a workspace: peak {unfused}");
}
