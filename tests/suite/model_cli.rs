//! `rocmforge generate` on the fixtures: the generated ids are Hugging
//! Face's greedy tokens, the report names the backends, sampling flags are
//! seeded and reported, EOS ids end sequences, and bad input is one clean
//! error line.

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
    for (flags, needles) in [
        (&["--temperature", "-1"][..], &["--temperature", "-1", ">= 0"][..]),
        (&["--temperature", "inf"], &["--temperature", "finite"]),
        (&["--temperature", "1", "--top-p", "1.5"], &["--top-p", "(0, 1]"]),
        (&["--temperature", "1", "--top-p", "0"], &["--top-p", "(0, 1]"]),
        (&["--temperature", "1", "--top-k", "0"], &["--top-k", "at least 1"]),
        (&["--top-k", "5"], &["temperature > 0"]),
        (&["--max-new-tokens", "0"], &["--max-new"]),
    ] {
        let mut args = vec!["generate", "--model", llama, "--tokens", "1"];
        args.extend(flags);
        assert_clean_error(&run(&args), needles);
    }
}

/// A copy of fixture `name` whose generation_config.json names `eos`.
fn with_eos(name: &str, eos: &[u32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config = serde_json::json!({ "eos_token_id": eos, "do_sample": false });
    std::fs::write(dir.path().join("generation_config.json"), config.to_string()).unwrap();
    dir
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).expect("one JSON object")
}

#[test]
fn eos_from_generation_config_ends_each_sequence() {
    let r = reference("qwen2");
    let eos = r.greedy[4];
    let stop = r.greedy.iter().position(|&t| t == eos).unwrap();
    let dir = with_eos("qwen2", &[1000, eos]);
    let tokens: Vec<String> = r.prompt.iter().map(u32::to_string).collect();
    let max_new = r.greedy.len().to_string();
    let base = ["generate", "--model", dir.path().to_str().unwrap(), "--tokens", &tokens.join(",")];
    let run = |extra: &[&str]| {
        Command::new(binary())
            .args(base)
            .args(["--device", "cpu", "--max-new-tokens", &max_new])
            .args(extra)
            .env_remove(BACKEND_ENV)
            .output()
            .unwrap()
    };
    let text = stdout(&run(&[]));
    let want: Vec<String> = r.greedy[..=stop].iter().map(u32::to_string).collect();
    assert!(text.contains(&format!("ids:      {}\n", want.join(","))), "{text}");
    assert!(text.contains(&format!("stopped: eos after {} tokens", stop + 1)), "{text}");
    assert!(text.contains(&format!("eos:      1000,{eos} (from generation_config.json)")), "{text}");
    // --ignore-eos runs to --max-new; batches report per sequence.
    let v = json_of(&run(&["--ignore-eos", "--json", "--batch", "2"]));
    assert_eq!(v["tokens"], serde_json::json!([r.greedy, r.greedy]));
    assert_eq!(v["finish"], serde_json::json!(["length", "length"]));
    // The model's EOS ids stay reported; none of them stopped a sequence.
    assert_eq!(v["eos_token_ids"], serde_json::json!([1000, eos]));
    assert_eq!(v["stop_token_ids"], serde_json::json!([]));
    let v = json_of(&run(&["--json", "--batch", "2", "--cache", "paged"]));
    assert_eq!(v["tokens"], serde_json::json!([r.greedy[..=stop], r.greedy[..=stop]]));
    assert_eq!(v["finish"], serde_json::json!(["eos", "eos"]));
    assert_eq!(v["decode_tokens"], 2 * stop);
    // The GLM fixtures carry GLM-4's EOS ids, past their vocabulary: never produced.
    let text = stdout(&generate("glm", &[]));
    assert!(
        text.contains("eos:      151329,151336,151338 (from config.json)") && text.contains("stopped: length"),
        "{text}"
    );
}

#[test]
fn sampling_flags_are_seeded_and_reported() {
    let r = reference("llama");
    let sample = |seed: &str, extra: &[&str]| {
        let mut args = vec!["--json", "--temperature", "0.9", "--top-p", "0.95", "--seed", seed, "--batch", "2"];
        args.extend(extra);
        json_of(&generate("llama", &args))
    };
    let (a, b, c) = (sample("7", &[]), sample("7", &["--cache", "paged"]), sample("8", &[]));
    assert_eq!(a["tokens"], b["tokens"], "same seed, same tokens, whatever the cache");
    assert_ne!(a["tokens"], c["tokens"], "another seed");
    assert_ne!(a["tokens"][0], a["tokens"][1], "each sequence has its own stream");
    let s = &a["sampling"];
    assert_eq!((s["temperature"].as_f64(), s["top_p"].as_f64(), s["seed"].as_u64()), (Some(0.9), Some(0.95), Some(7)));
    assert_eq!(s["greedy"], false);
    // top-k 1 samples the argmax: HF's greedy tokens.
    let v = json_of(&generate("llama", &["--json", "--temperature", "2", "--top-k", "1"]));
    assert_eq!(v["tokens"], serde_json::json!([r.greedy]));
    let text = stdout(&generate("llama", &["--temperature", "0.5", "--top-k", "3", "--seed", "2"]));
    assert!(text.contains("sampling: temperature 0.5, top-k 3, seed 2"), "{text}");
    assert!(stdout(&generate("llama", &[])).contains("sampling: greedy"));
}
