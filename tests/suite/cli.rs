//! Integration tests of the `rocmforge` binary. Problems are tiny so the
//! tests stay fast; environment variables are set on the child only.

use rocmforge::io::{read_tensor, write_host, HostTensor};
use rocmforge::registry::Registry;
use rocmforge::{DType, HostData, BACKEND_ENV};
use std::path::Path;
use std::process::{Command, Output};

const TINY: &[&str] = &["--batch", "1", "--seq-q", "4", "--heads", "2", "--kv-heads", "1", "--head-dim", "8"];

/// The binary under test: `ROCMFORGE_BIN` if set (the GPU bundle sets it),
/// else the one cargo built, else a `rocmforge` next to this test binary.
fn binary() -> std::path::PathBuf {
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

fn rocmforge(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args).env_remove(BACKEND_ENV);
    c
}

fn run(args: &[&str]) -> Output {
    rocmforge(args).output().expect("spawn rocmforge")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A failure with one `error: ...` line, a non-zero exit and no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let (out, err) = text(o);
    assert!(!o.status.success(), "expected failure; stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(!line.is_empty());
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
        let o = run(&cmd);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{cmd:?}: {err}");
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
    let (out, _) = text(&run(&["bench", "--help"]));
    assert!(out.contains("4 * batch * q_heads * head_dim"), "bench help documents FLOPs: {out}");
}

#[test]
fn backend_flag_and_env_change_the_choice() {
    let mut args = vec!["run", "--backend", "cpu-reference"];
    args.extend_from_slice(TINY);
    let (out, err) = text(&run(&args));
    assert!(out.contains("backend: cpu-reference (requested by --backend)"), "{out}{err}");

    let mut args = vec!["run"];
    args.extend_from_slice(TINY);
    let o = rocmforge(&args).env(BACKEND_ENV, "cpu-reference").output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&format!("backend: cpu-reference (requested by {BACKEND_ENV})")), "{out}");

    // The flag beats the environment.
    let mut args = vec!["run", "--backend", "cpu-reference"];
    args.extend_from_slice(TINY);
    let o = rocmforge(&args).env(BACKEND_ENV, "no-such-backend").output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn unknown_backend_lists_valid_names() {
    let mut args = vec!["run", "--backend", "no-such-backend"];
    args.extend_from_slice(TINY);
    let o = run(&args);
    assert_clean_error(&o, "no-such-backend");
    let (_, err) = text(&o);
    for name in Registry::global().unwrap().names() {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
    let mut args = vec!["run"];
    args.extend_from_slice(TINY);
    let o = rocmforge(&args).env(BACKEND_ENV, "bogus").output().unwrap();
    assert_clean_error(&o, BACKEND_ENV);
}

#[test]
fn forced_backend_that_cannot_run_lists_reasons() {
    let o = run(&[
        "run",
        "--backend",
        "cpu-reference",
        "--heads",
        "3",
        "--kv-heads",
        "2",
        "--seq-q",
        "2",
        "--head-dim",
        "4",
    ]);
    assert_clean_error(&o, "invalid problem");
    assert!(text(&o).1.contains("num_q_heads (3) must be a multiple of num_kv_heads (2)"));
    // An invalid problem is reported once, as invalid, whichever backend was forced.
    for b in Registry::global().unwrap().backends() {
        let o =
            run(&["run", "--backend", b.name(), "--heads", "2", "--kv-heads", "2", "--seq-q", "1", "--head-dim", "0"]);
        assert_clean_error(&o, "head_dim must be at least 1");
        assert_eq!(text(&o).1.matches("head_dim must be at least 1").count(), 1, "{}", text(&o).1);
    }
}

#[test]
fn bad_input_gives_one_line_errors() {
    assert_clean_error(&run(&["run", "--batch", "many"]), "--batch");
    assert_clean_error(&run(&["run", "--frobnicate"]), "--frobnicate");
    assert_clean_error(&run(&["run", "--dtype", "f64"]), "f64");
    assert_clean_error(&run(&["run", "--mask", "diagonal"]), "diagonal");
    assert_clean_error(&run(&["run", "--device", "tpu"]), "tpu");
    assert_clean_error(&run(&["bench", "--shape", "1,2,3"]), "six");
    assert_clean_error(
        &run(&["run", "--q", "/nonexistent/q.npy", "--k", "/nonexistent/k.npy", "--v", "/nonexistent/v.npy"]),
        "/nonexistent/q.npy",
    );
    assert_clean_error(&run(&["run", "--q", "q.npy"]), "--k");
    for o in [run(&["run", "--batch", "many"]), run(&["explain", "--heads", "-1"])] {
        let (_, err) = text(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

fn tensor(shape: [usize; 4], dtype: DType, seed: u64) -> HostTensor {
    let t = rocmforge::Tensor::random(shape, dtype, seed).unwrap();
    HostTensor { shape, data: t.download().unwrap() }
}

fn write(dir: &Path, name: &str, t: &HostTensor) -> String {
    let path = dir.join(name);
    write_host(&path, "x", t.shape, &t.data).unwrap();
    path.display().to_string()
}

#[test]
fn file_round_trip_npy_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, dtype) in
        [("npy", DType::F32), ("npy", DType::F16), ("safetensors", DType::F32), ("safetensors", DType::BF16)]
    {
        let (q, k, v) =
            (tensor([1, 3, 4, 8], dtype, 1), tensor([1, 5, 2, 8], dtype, 2), tensor([1, 5, 2, 8], dtype, 3));
        let (qp, kp, vp) = (
            write(dir.path(), &format!("q.{ext}"), &q),
            write(dir.path(), &format!("k.{ext}"), &k),
            write(dir.path(), &format!("v.{ext}"), &v),
        );
        let op = dir.path().join(format!("o_{dtype}.{ext}"));
        let o = run(&[
            "run",
            "--q",
            &qp,
            "--k",
            &kp,
            "--v",
            &vp,
            "--out",
            op.to_str().unwrap(),
            "--check",
            "--mask",
            "none",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{ext} {dtype}: {out}{err}");
        assert!(out.contains("seq_q=3 seq_kv=5 heads=4/2 head_dim=8"), "{out}");
        assert!(out.contains("check: PASS"), "{out}");
        let written = read_tensor(&op, None).unwrap();
        assert_eq!(written.shape, [1, 3, 4, 8]);
        assert_eq!(written.dtype(), dtype);
        assert!(written.data.to_f32().iter().all(|x| x.is_finite()));
    }
}

#[test]
fn bad_files_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let q = tensor([1, 2, 2, 4], DType::F32, 1);
    let k = tensor([1, 2, 1, 4], DType::F32, 2);
    let qp = write(dir.path(), "q.npy", &q);
    let kp = write(dir.path(), "k.npy", &k);
    // Truncated.
    let bytes = std::fs::read(&kp).unwrap();
    let truncated = dir.path().join("t.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let tp = truncated.display().to_string();
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &tp]), "truncated");
    // Mismatched: k and v shapes differ.
    let v2 = write(dir.path(), "v2.npy", &tensor([1, 3, 1, 4], DType::F32, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &v2]), "shapes differ");
    // Mismatched head_dim.
    let v3 = write(dir.path(), "k3.npy", &tensor([1, 2, 1, 5], DType::F32, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &v3, "--v", &v3]), "head_dim mismatch");
    // Wrong dtype: an f16 v next to f32 q and k.
    let vh = write(dir.path(), "vh.npy", &tensor([1, 2, 1, 4], DType::F16, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &vh]), "dtype mismatch");
    // Flag conflicting with the files.
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &kp, "--heads", "8"]), "--heads 8 conflicts");
    // Not a tensor file at all.
    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"hello world, not numpy").unwrap();
    let jp = junk.display().to_string();
    assert_clean_error(&run(&["run", "--q", &jp, "--k", &kp, "--v", &kp]), "not a .npy file");
    // bf16 output to .npy.
    let qb = dir.path().join("qb.safetensors");
    write_host(&qb, "q", [1, 2, 2, 4], &HostData::from_f32(DType::BF16, &[0.5; 16])).unwrap();
    let kb = dir.path().join("kb.safetensors");
    write_host(&kb, "k", [1, 2, 1, 4], &HostData::from_f32(DType::BF16, &[0.25; 8])).unwrap();
    let (qb, kb) = (qb.display().to_string(), kb.display().to_string());
    let out = dir.path().join("o.npy").display().to_string();
    assert_clean_error(&run(&["run", "--q", &qb, "--k", &kb, "--v", &kb, "--out", &out]), "safetensors");
}

#[test]
fn explain_lists_every_backend() {
    let mut args = vec!["explain"];
    args.extend_from_slice(TINY);
    let o = run(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for name in Registry::global().unwrap().names() {
        assert!(out.lines().any(|l| l.trim_start().starts_with(name)), "{name} missing: {out}");
    }
    assert!(out.contains("chosen"), "{out}");
}

#[test]
fn backends_devices_kernels_bench_run() {
    let (out, _) = text(&run(&["backends"]));
    for name in Registry::global().unwrap().names() {
        assert!(out.contains(name));
    }
    assert!(run(&["devices"]).status.success());
    let o = run(&["kernels", "check", "--target", "sm_80"]);
    let (out, err) = text(&o);
    // Either compiled (or nothing to compile), or a clean compiler error.
    if o.status.success() {
        assert!(out.contains("specializations"), "{out}");
    } else {
        assert!(err.starts_with("error:") && !err.contains("panicked"), "{err}");
    }
    assert_clean_error(&run(&["kernels", "check", "--target", "vax11"]), "vax11");
    let o = run(&["bench", "--shape", "1,2,1,4,4,8", "--backends", "cpu-reference", "--repeats", "2", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["results"][0]["backend"], "cpu-reference");
    assert!(json["results"][0]["gflops"].as_f64().unwrap() > 0.0);
}

/// docs/backends.md is generated; regenerate with
/// `cargo run -- backends --markdown > docs/backends.md`.
#[test]
fn committed_backends_doc_is_current() {
    // Embedded at build time, so the bundled test binary needs no source tree.
    let committed = include_str!("../../docs/backends.md");
    let generated = rocmforge::cli::backends::markdown(Registry::global().unwrap());
    assert!(
        committed == generated,
        "docs/backends.md is stale; run `cargo run -- backends --markdown > docs/backends.md`"
    );
}
