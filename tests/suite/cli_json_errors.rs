//! `--json` when a command fails, and the checks `main` makes before any
//! command runs: a script that asked for JSON always gets one document on
//! stdout (the command's own, or `{schema, command, error}`), and the
//! thread variable is validated rather than ignored.

use super::cli::{assert_clean_error, rocmforge, run, tiny};
use std::process::Output;

/// The one JSON document on stdout of a failed command.
fn error_document(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {out:?}"))
}

fn gpu_present() -> bool {
    rocmforge::device::gpus().is_ok_and(|l| !l.is_empty())
}

#[test]
fn a_usage_error_with_json_prints_an_error_document() {
    let o = run(&["run", "--json", "--repeats", "0"]);
    let err = assert_clean_error(&o, "--repeats");
    assert_eq!(o.status.code(), Some(2), "{err}");
    let doc = error_document(&o);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["command"], "run");
    assert!(doc["error"].as_str().unwrap_or_default().contains("'--repeats <N>'"), "{doc}");
    // Without --json, stdout stays empty.
    assert!(run(&["run", "--repeats", "0"]).stdout.is_empty());
}

#[test]
fn a_failed_command_with_json_prints_an_error_document() {
    for (args, command, needle) in [
        (vec!["explain", "--batch", "0", "--json"], "explain", "batch must be at least 1"),
        (vec!["bench", "--shape", "1,2,2,4,4,0", "--json"], "bench", "head_dim"),
        (
            vec!["generate", "--model", "/nonexistent/model", "--tokens", "1", "--json"],
            "generate",
            "/nonexistent/model",
        ),
    ] {
        let o = run(&args);
        assert_clean_error(&o, needle);
        let doc = error_document(&o);
        assert_eq!((doc["schema"].as_u64(), doc["command"].as_str()), (Some(1), Some(command)), "{args:?}: {doc}");
        assert!(doc["error"].as_str().unwrap_or_default().contains(needle), "{args:?}: {doc}");
    }
}

#[test]
fn explain_of_gpu_backends_shows_the_verdicts_with_or_without_a_gpu() {
    // head_dim 64 (the flash kernels' sizes), causal: flash-causal runs it on a GPU.
    let args = ["explain", "--seq-q", "4", "--heads", "2", "--kv-heads", "1", "--head-dim", "64"];
    let o = rocmforge(&args).args(["--backend", "flash-causal,flash-noncausal", "--json"]).output().unwrap();
    // Exactly one document: the command's own (never a second error one).
    let doc = error_document(&o);
    assert_eq!(doc["verdicts"].as_array().map(Vec::len), Some(rocmforge::Registry::global().unwrap().names().len()));
    if gpu_present() {
        assert_eq!(o.status.code(), Some(0), "{doc}");
        assert!(doc["selected"].as_str().unwrap_or_default().starts_with("flash-causal"), "{doc}");
    } else {
        assert_eq!(o.status.code(), Some(1), "{doc}");
        let error = doc["error"].as_str().unwrap_or_default();
        assert!(error.contains("flash-causal: needs a GPU") && error.contains("flash-noncausal: needs a GPU"), "{doc}");
        assert_eq!(doc["device"]["kind"], "cpu");
    }
}

#[test]
fn a_list_of_gpu_backends_without_a_gpu_names_each() {
    if gpu_present() {
        return; // the list runs there; the differential tests cover it
    }
    let args = tiny(&["run", "--backend", "flash-causal,gpu-unfused"]);
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = assert_clean_error(&o, "requested by --backend");
    assert!(err.contains("flash-causal: needs a GPU") && err.contains("gpu-unfused: needs a GPU"), "{err}");
}

#[test]
fn an_empty_backend_flag_is_an_error_not_auto() {
    let args = tiny(&["run", "--backend", " "]);
    let o = rocmforge(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env(rocmforge::BACKEND_ENV, "cpu-reference")
        .output()
        .unwrap();
    assert_clean_error(&o, "--backend is empty");
}

#[test]
fn the_thread_variable_is_checked_before_any_command() {
    for bad in ["abc", "-1", "1025", "100000"] {
        let o = rocmforge(&["devices"]).env("RAYON_NUM_THREADS", bad).output().unwrap();
        assert_clean_error(&o, &format!("RAYON_NUM_THREADS={bad}: expected a whole number of threads from 1 to 1024"));
    }
    let o = rocmforge(&["devices"]).env("RAYON_NUM_THREADS", "3").output().unwrap();
    let out = super::cli::assert_ok(&o);
    assert!(out.starts_with("cpu: 3 threads"), "{out}");
}

#[test]
fn control_characters_in_input_are_escaped_in_errors() {
    let o = run(&["run", "--backend", "a\u{1b}[31mred"]);
    let err = assert_clean_error(&o, "unknown attention backend");
    assert!(!err.contains('\u{1b}') && err.contains("a\\u{1b}[31mred"), "{err:?}");
}
