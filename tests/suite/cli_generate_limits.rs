//! `rocmforge generate` at its limits: logits with nothing to pick, memory
//! a request cannot have (refused up front, or failing allocations that end
//! in `error:` rather than an abort), the model's context length, the
//! paged cache's block size, the `--json` document's fields, config fields
//! blamed by name, and singular words in the report.

use super::cli::{assert_clean_error, assert_ok, rocmforge, text};
use super::model_errors::copy_fixture;
use super::model_fixtures::{fixture_dir, reference};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// The llama fixture with its final RMSNorm weight set to NaN: every logit
/// of every position is NaN.
fn nan_model() -> tempfile::TempDir {
    let dir = copy_fixture("llama");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let target = "model.norm.weight";
    let nan: Vec<u8> = {
        let view = file.tensor(target).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        view.data().chunks_exact(4).flat_map(|_| f32::NAN.to_le_bytes()).collect()
    };
    let views: Vec<(String, TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = if name == target { &nan[..] } else { view.data() };
            (name, TensorView::new(view.dtype(), view.shape().to_vec(), data).unwrap())
        })
        .collect();
    let out = safetensors::serialize(views, &None).unwrap();
    std::fs::write(&path, out).unwrap();
    dir
}

fn generate(model: &Path, args: &[&str]) -> Output {
    let model = model.to_str().unwrap();
    rocmforge(&["generate", "--model", model]).args(args).output().expect("spawn rocmforge")
}

/// A failure with exit code `code` whose one `error:` line holds every needle.
fn assert_error(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = assert_clean_error(o, needles[0]);
    assert_eq!(o.status.code(), Some(code), "{err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
    err
}

#[test]
fn greedy_decoding_of_nan_logits_is_an_error_not_the_last_token() {
    let dir = nan_model();
    for extra in [&["--device", "cpu"][..], &["--device", "cpu", "--batch", "3", "--cache", "paged"]] {
        let mut args = vec!["--tokens", "1,2,3", "--max-new", "4"];
        args.extend(extra);
        let o = generate(dir.path(), &args);
        assert_error(&o, 1, &["error: greedy decoding (sequence 0): every logit is NaN: no token to pick"]);
        assert!(!text(&o).0.contains("ids:"), "no token may be reported: {}", text(&o).0);
    }
    // The sampling path says the same.
    let o = generate(dir.path(), &["--tokens", "1,2,3", "--max-new", "4", "--device", "cpu", "--temperature", "1"]);
    assert_error(&o, 1, &["sampling (sequence 0): every logit is NaN: no token to pick"]);
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_greedy_decoding_of_nan_logits_is_an_error() {
    let dir = nan_model();
    for dtype in ["f32", "bf16"] {
        let args = ["--tokens", "1,2,3", "--max-new", "4", "--device", "gpu", "--dtype", dtype];
        assert_error(&generate(dir.path(), &args), 1, &["greedy decoding (sequence 0): every logit is NaN"]);
    }
}

/// The llama fixture with room for any number of positions, so only memory limits a request.
fn unbounded_llama() -> tempfile::TempDir {
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |v| v["max_position_embeddings"] = 1_000_000_000_000u64.into());
    dir
}

#[test]
fn memory_beyond_the_machine_is_refused_before_anything_is_allocated() {
    let dir = unbounded_llama();
    let start = Instant::now();
    // 2 layers × 4096 × 4e9 positions × 2 × 48 × 4 bytes = 11 PiB of KV cache: no machine has that.
    let args = ["--tokens", "1,2,3", "--batch", "4096", "--max-new", "4000000000", "--device", "cpu"];
    let err = assert_error(
        &generate(dir.path(), &args),
        1,
        &["generate --batch 4096 --max-new 4000000000 with a 3-token prompt needs 16.8 PiB of host memory"],
    );
    for needle in [
        "KV cache 11.2 PiB = 2 layers × 4096 sequences × 4000000003 positions × 2 (keys and values) × 2 kv heads",
        "prefill activations",
        "available on this machine",
    ] {
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
    let args = ["--tokens", "1,2", "--max-new", "4294967295", "--cache", "paged", "--kv-dtype", "bf16"];
    let err = assert_error(&generate(dir.path(), &[&args[..], &["--device", "cpu"]].concat()), 1, &["--max-new"]);
    assert!(err.contains("1 sequence × 4294967312 positions in blocks of 16") && err.contains("× 2 bytes"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "refused up front, not after allocating: {:?}", start.elapsed());
}

/// Under an address-space limit the memory check cannot see, the
/// allocations of the KV cache and the activations fail with an error, not
/// an abort (SIGABRT, exit 134). The request fits in the machine's memory,
/// so the check lets it through (or, on a machine with less than about
/// 1 GiB available, refuses it up front: also a clean error).
#[test]
#[cfg(target_os = "linux")]
fn allocations_that_fail_under_ulimit_are_errors() {
    let model = fixture_dir("llama");
    let prompt: Vec<String> = (0..64).map(|i| (i % 96).to_string()).collect();
    let bin = super::cli::binary();
    for (limit_kib, cache) in [(400_000, "contiguous"), (150_000, "paged"), (600_000, "paged")] {
        let cmd = format!(
            "ulimit -v {limit_kib} && exec \"$0\" generate --model \"$1\" --tokens {} --batch 4096 --max-new 2 \
             --device cpu --cache {cache}",
            prompt.join(",")
        );
        let o = std::process::Command::new("sh")
            .args(["-c", &cmd, bin.to_str().unwrap(), model.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "2")
            .env("MALLOC_ARENA_MAX", "2")
            .env_remove(rocmforge::BACKEND_ENV)
            .output()
            .unwrap();
        let what = format!("ulimit -v {limit_kib}, {cache}");
        assert_ne!(o.status.code(), Some(134), "{what}: aborted: {}", text(&o).1);
        let err = assert_error(&o, 1, &["of host memory"]);
        assert!(err.contains("cannot allocate") || err.contains("available on this machine"), "{what}: {err}");
    }
}

#[test]
fn prompt_and_max_new_must_fit_max_position_embeddings() {
    let llama = fixture_dir("llama");
    let long: Vec<String> = (0..300).map(|i| (i % 96).to_string()).collect();
    let o = generate(&llama, &["--tokens", &long.join(","), "--max-new", "2"]);
    assert_error(
        &o,
        1,
        &[
            "prompt (300 tokens) + --max-new (2) = 302 positions exceeds max_position_embeddings = 128 in",
            "config.json",
            "shorten it to 127 tokens or less",
        ],
    );
    let o = generate(&llama, &["--tokens", "1,2", "--max-new", "200"]);
    assert_error(&o, 1, &["prompt (2 tokens) + --max-new (200) = 202 positions", "use --max-new 126 or less"]);
    // Exactly the model's context: runs.
    let r = reference("llama");
    let prompt: Vec<String> = r.prompt.iter().map(u32::to_string).collect();
    let fits = (128 - r.prompt.len()).to_string();
    let out = assert_ok(&generate(&llama, &["--tokens", &prompt.join(","), "--max-new", &fits, "--device", "cpu"]));
    assert!(out.contains(&format!("stopped: length after {fits} tokens")), "{out}");
    let over = (129 - r.prompt.len()).to_string();
    let o = generate(&llama, &["--tokens", &prompt.join(","), "--max-new", &over]);
    assert_error(&o, 1, &["= 129 positions exceeds max_position_embeddings = 128"]);
}

#[test]
fn block_size_is_checked_when_parsed_and_only_with_the_paged_cache() {
    // A model directory that does not exist: these errors come before it is read.
    let nowhere = Path::new("/nonexistent/rocmforge-model");
    for bad in ["17", "0", "x", "-16"] {
        let o = generate(nowhere, &["--tokens", "1", "--cache", "paged", &format!("--block-size={bad}")]);
        assert_error(&o, 2, &["--block-size", "(supported: 16 or 32)"]);
    }
    let o = generate(nowhere, &["--tokens", "1", "--block-size", "32"]);
    assert_error(&o, 1, &["--block-size 32 applies only to the paged cache: add --cache paged"]);
    let o = generate(nowhere, &["--tokens", "1", "--block-size", "16", "--cache", "contiguous"]);
    assert_error(&o, 1, &["applies only to the paged cache"]);
    let out = assert_ok(&generate(
        &fixture_dir("llama"),
        &["--tokens", "1,2", "--max-new", "2", "--cache", "paged", "--block-size", "32", "--device", "cpu"],
    ));
    assert!(out.contains("cache:    paged (blocks of 32, f32)"), "{out}");
}

#[test]
fn json_document_has_schema_command_and_keeps_the_model_eos_ids() {
    let dir = copy_fixture("llama");
    // EOS ids past the vocabulary: never produced, so every run goes to --max-new.
    std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [1000, 1001]}"#).unwrap();
    let doc = |extra: &[&str]| -> serde_json::Value {
        let out = assert_ok(&generate(dir.path(), &[&["--tokens", "1,2", "--max-new", "3", "--json"], extra].concat()));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("one JSON document ({e}): {out}"))
    };
    let v = doc(&["--ignore-eos"]);
    assert_eq!((v["schema"].as_u64(), v["command"].as_str()), (Some(1), Some("generate")), "{v}");
    assert_eq!(v["eos_token_ids"], serde_json::json!([1000, 1001]), "the model's ids, ignored or not");
    assert_eq!((v["ignore_eos"].as_bool(), v["stop_token_ids"].clone()), (Some(true), serde_json::json!([])));
    assert_eq!(v["tokens"].as_array().map(|t| t.len()), Some(1));
    let v = doc(&[]);
    assert_eq!(v["stop_token_ids"], serde_json::json!([1000, 1001]));
    assert_eq!(v["ignore_eos"], false);
    assert_eq!(v["block_size"], serde_json::Value::Null, "no blocks in a contiguous cache");
}

#[test]
fn config_errors_blame_the_field_the_file_got_wrong() {
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |v| v["head_dim"] = 23.into());
    let o = generate(dir.path(), &["--tokens", "1"]);
    let err = assert_error(&o, 1, &["config.json: field `head_dim` = 23: rotary embeddings need an even number"]);
    assert!(!err.contains("`partial_rotary_factor` ="), "the factor is not in the file: {err}");
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |v| v["vocab_size"] = serde_json::Value::Null);
    let o = generate(dir.path(), &["--tokens", "1"]);
    assert_error(&o, 1, &["field `vocab_size` is null, expected a non-negative integer"]);
}

#[test]
fn one_token_is_singular_in_the_report() {
    let out = assert_ok(
        &rocmforge(&["generate", "--model", fixture_dir("llama").to_str().unwrap(), "--tokens", "7"])
            .args(["--max-new", "2", "--device", "cpu"])
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap(),
    );
    for line in ["device:   cpu (1 thread)\n", "prompt:   1 token × batch 1\n", "stopped: length after 2 tokens\n"] {
        assert!(out.contains(line), "'{line}' not in:\n{out}");
    }
    assert!(out.contains("\ndecode:   1 token in "), "{out}");
    let out = assert_ok(&generate(&fixture_dir("llama"), &["--tokens", "7", "--max-new", "1", "--device", "cpu"]));
    assert!(out.contains("stopped: length after 1 token\n"), "{out}");
}
