//! `rocmforge generate` on the fixtures: the generated ids are Hugging
//! Face's greedy tokens, the report names the backends, and bad input is
//! one clean error line.

use super::model_fixtures::{fixture_dir, reference, FAMILIES};
use rocmforge::BACKEND_ENV;
use std::path::Path;
use std::process::{Command, Output};

fn binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ROCMFORGE_BIN") {
        return p.into();
    }
    let built = Path::new(env!("CARGO_BIN_EXE_rocmforge"));
    if built.exists() {
        return built.to_path_buf();
    }
    std::env::current_exe().expect("test binary path").with_file_name("rocmforge")
}

fn generate(model: &str, extra: &[&str]) -> Output {
    let r = reference(model);
    let tokens: Vec<String> = r.prompt.iter().map(u32::to_string).collect();
    let tokens = tokens.join(",");
    let dir = fixture_dir(model);
    let max_new = r.greedy.len().to_string();
    let mut args = vec!["generate", "--model", dir.to_str().unwrap(), "--tokens", &tokens];
    args.extend(["--max-new", &max_new, "--device", "cpu"]);
    args.extend(extra);
    Command::new(binary()).args(&args).env_remove(BACKEND_ENV).output().expect("spawn rocmforge")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_fixture_generates_the_transformers_greedy_tokens() {
    for name in FAMILIES {
        let r = reference(name);
        let want: Vec<String> = r.greedy.iter().map(u32::to_string).collect();
        for extra in [&[][..], &["--cache", "paged", "--block-size", "32"][..]] {
            let out = stdout(&generate(name, extra));
            let ids = out.lines().find_map(|l| l.strip_prefix("ids:")).unwrap_or_else(|| panic!("no ids line:\n{out}"));
            assert_eq!(ids.trim(), want.join(","), "{name} {extra:?}\n{out}");
            assert!(out.contains("prefill:  cpu-") && out.contains("decode:   cpu-"), "{out}");
            assert!(out.contains("time to first token:") && out.contains("tokens/s"), "{out}");
        }
    }
}

#[test]
fn json_report_with_batch_and_forced_backend() {
    let r = reference("mistral");
    let o = generate("mistral", &["--json", "--batch", "3", "--backend", "cpu-reference", "--cache", "paged"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    let tokens: Vec<Vec<u32>> = serde_json::from_value(v["tokens"].clone()).unwrap();
    assert_eq!(tokens, vec![r.greedy.clone(); 3]);
    assert_eq!(v["prefill"]["backends"], serde_json::json!(["cpu-reference"]));
    assert_eq!(v["decode"]["backends"], serde_json::json!(["cpu-reference"]));
    let reason = v["decode"]["layers"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("--backend") && reason.contains("decode"), "{reason}");
    assert_eq!(v["decode_tokens"], 3 * (r.greedy.len() - 1));
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
    assert_eq!((v["cache"].as_str(), v["block_size"].as_u64()), (Some("paged"), Some(16)));
}

#[test]
fn env_variable_picks_the_backend() {
    let r = reference("glm");
    let tokens: Vec<String> = r.prompt.iter().map(u32::to_string).collect();
    let dir = fixture_dir("glm");
    let o = Command::new(binary())
        .args(["generate", "--model", dir.to_str().unwrap(), "--tokens", &tokens.join(","), "--max-new", "3"])
        .args(["--device", "cpu"])
        .env(BACKEND_ENV, "cpu-reference")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("prefill:  cpu-reference (requested by ROCMFORGE_ATTENTION_BACKEND"), "{out}");
}

fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error:")), "{err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
}

#[test]
fn bad_input_is_one_error_line() {
    let empty = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new(binary()).args(args).env_remove(BACKEND_ENV).output().unwrap();
    assert_clean_error(
        &run(&["generate", "--model", empty.path().to_str().unwrap(), "--tokens", "1"]),
        &["config.json"],
    );
    let llama = fixture_dir("llama");
    let llama = llama.to_str().unwrap();
    assert_clean_error(&run(&["generate", "--model", llama, "--tokens", "1,x"]), &["--tokens"]);
    assert_clean_error(&run(&["generate", "--model", llama, "--tokens", "1,500"]), &["token id 500", "vocab_size 96"]);
    assert_clean_error(
        &run(&["generate", "--model", llama, "--tokens", "1", "--backend", "nope"]),
        &["nope", "cpu-reference"],
    );
    assert_clean_error(
        &run(&["generate", "--model", llama, "--tokens", "1", "--cache", "paged", "--block-size", "8"]),
        &["block size 8"],
    );
    assert_clean_error(&run(&["generate", "--model", llama, "--tokens", "1", "--max-new", "0"]), &["--max-new"]);
}
