//! `rocmforge generate`: greedy or sampled generation with a model
//! directory (config.json + safetensors), stopping at the model's EOS ids,
//! reporting the attention backends used for prefill and decode, why each
//! sequence stopped, time to first token and decode tokens/s.

use super::host_memory::{self, Item};
use super::json::SCHEMA;
use super::CliError;
use rocmforge::device::Device;
use rocmforge::dtype::DType;
use rocmforge::model::kv_cache::BLOCK_SIZES;
use rocmforge::model::{
    generate_footprint, generate_with, CacheKind, Decoder, DecoderOptions, FootprintRequest, GenerateOptions,
    GenerateRequest, Generation, ModelConfig, ModelError, Sampling, ShapeClass, StopTokens,
};
use rocmforge::registry::{AttentionConfig, BackendChoice};
use rocmforge::selection::DeviceChoice;
use std::io::Write;
use std::path::PathBuf;

/// A dtype, or `auto` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoDType(pub Option<DType>);

impl std::str::FromStr for AutoDType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(AutoDType(None));
        }
        s.parse::<DType>().map(|d| AutoDType(Some(d))).map_err(|e| format!("{e} (or auto)"))
    }
}

/// Which cache layout `--cache` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheArg {
    #[default]
    Contiguous,
    Paged,
}

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Dense layers (projections, norms, MLP, LM head) run in --dtype on --device \
    (16-bit GEMMs accumulate in f32); attention runs through the selected backend there, reading \
    the KV cache in place when the backend accepts strided tensors. Decoding is greedy unless \
    --temperature > 0: then each sequence draws from softmax(logits / T), cut by --top-k and \
    --top-p, with its own generator seeded by --seed and its index (same seed and model, same \
    tokens). A row of logits with nothing to pick (all NaN, as from broken weights) is an error, \
    greedy or sampled. A sequence stops after --max-new tokens or at an EOS id (eos_token_id of \
    generation_config.json, else config.json; the EOS token is printed), unless --ignore-eos. \
    The prompt + --max-new must fit in the model's max_position_embeddings (config.json). On the \
    CPU, the KV cache (--batch × (prompt + --max-new) positions) and the activations (--batch × \
    prompt tokens) are compared with the available memory before they are allocated. \
    Time to first token covers the prefill of every prompt and the first pick; tokens/s counts \
    the tokens after the first, over the whole batch.")]
pub struct Args {
    /// Model directory: config.json and model.safetensors (or model.safetensors.index.json + shards).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_name = "ID,ID,..", value_delimiter = ',', required = true, num_args = 1..)]
    pub tokens: Vec<u32>,
    /// Most tokens to generate per sequence (fewer when it stops at EOS); the
    /// prompt + N must not exceed the model's max_position_embeddings.
    #[arg(long, visible_alias = "max-new-tokens", default_value_t = 32, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_new: u32,
    /// Sampling temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / T).
    #[arg(long, default_value_t = 0.0, value_name = "T", allow_negative_numbers = true)]
    pub temperature: f64,
    /// Sample only from the K most likely tokens (needs --temperature > 0).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only from the most likely tokens whose probabilities reach P, in (0, 1]
    /// (needs --temperature > 0).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Seed of the sampling generators (sequence i draws from stream i).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Do not stop at the model's EOS ids: always generate --max-new tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Attention backend name, comma-separated preference list, or `auto`
    /// (flag > ROCMFORGE_ATTENTION_BACKEND > auto).
    #[arg(long, value_name = "NAME[,NAME..]")]
    pub backend: Option<String>,
    /// Where the model runs (weights, activations, KV cache, attention):
    /// cpu, gpu, gpu:N, or auto (a GPU when one is present and a GPU backend
    /// accepts the model's attention, else the CPU).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// KV cache layout.
    #[arg(long, value_enum, default_value_t = CacheArg::Contiguous)]
    pub cache: CacheArg,
    /// Tokens per block of the paged cache: 16 or 32 [default: 16]; only with --cache paged.
    #[arg(long, value_name = "N", value_parser = parse_block_size)]
    pub block_size: Option<usize>,
    /// The model's dtype (weights and activations): f32, f16, bf16, or auto
    /// (the checkpoint's dtype on a GPU, f32 on the CPU). A 16-bit model
    /// rounds where transformers does; on the CPU that is emulated in f32.
    #[arg(long, default_value = "auto", value_name = "DTYPE|auto")]
    pub dtype: AutoDType,
    /// Element type of the KV cache and the attention calls (auto: the
    /// model's dtype).
    #[arg(long, default_value = "auto", value_name = "DTYPE|auto")]
    pub kv_dtype: AutoDType,
    /// Sequences generated together (each with the same prompt).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--block-size`: one of the paged cache's block sizes.
fn parse_block_size(s: &str) -> Result<usize, String> {
    let supported = BLOCK_SIZES.map(|b| b.to_string()).join(" or ");
    match s.parse::<usize>() {
        Ok(n) if BLOCK_SIZES.contains(&n) => Ok(n),
        Ok(n) => Err(format!("block size {n} is not supported by the paged cache (supported: {supported})")),
        Err(_) => Err(format!("'{s}' is not a block size (supported: {supported})")),
    }
}

impl Args {
    fn block_size(&self) -> usize {
        self.block_size.unwrap_or(BLOCK_SIZES[0])
    }

    fn cache_kind(&self) -> CacheKind {
        match self.cache {
            CacheArg::Contiguous => CacheKind::Contiguous,
            CacheArg::Paged => CacheKind::Paged { block_size: self.block_size() },
        }
    }
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let attention = AttentionConfig {
        backend: args.backend.as_deref().map(BackendChoice::parse).transpose()?,
        device: args.device,
        origin: "--backend",
    };
    let sampling = Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    // Checked before the model loads: a typo costs no load.
    sampling.validate().map_err(|e| CliError::Usage(sampling_usage(&e)))?;
    if let (Some(n), CacheArg::Contiguous) = (args.block_size, args.cache) {
        return Err(CliError::Usage(format!(
            "--block-size {n} applies only to the paged cache: add --cache paged (the contiguous cache has no blocks)"
        )));
    }
    check_positions(args, &ModelConfig::from_dir(&args.model).map_err(ModelError::from)?)?;
    let options = DecoderOptions { attention, kv_dtype: args.kv_dtype.0, dtype: args.dtype.0 };
    let mut decoder = Decoder::load(&args.model, options)?;
    check_memory(args, &decoder)?;
    let eos = StopTokens::from_dir(&args.model).map_err(ModelError::from)?;
    let generate_options =
        GenerateOptions { sampling, stop_tokens: if args.ignore_eos { Vec::new() } else { eos.ids.clone() } };
    let device = decoder.device().clone();
    let request = GenerateRequest {
        prompts: vec![args.tokens.clone(); args.batch as usize],
        max_new: args.max_new as usize,
        cache: args.cache_kind(),
    };
    let g = generate_with(&mut decoder, &request, &generate_options)?;
    let run = Run { args, decoder: &decoder, device: &device, g: &g, eos: &eos };
    if args.json {
        let doc = serde_json::to_string_pretty(&json_report(&run)).map_err(std::io::Error::other)?;
        writeln!(out, "{doc}")?;
    } else {
        text_report(&run, out)?;
    }
    Ok(())
}

/// The prompt and --max-new must fit in the positions the model was trained
/// for (checked from config.json, before the weights load).
fn check_positions(args: &Args, config: &ModelConfig) -> Result<(), CliError> {
    let (prompt, max_new, limit) = (args.tokens.len() as u64, args.max_new as u64, config.max_position_embeddings);
    let total = prompt + max_new;
    if total <= limit as u64 {
        return Ok(());
    }
    let fix = match (limit as u64).checked_sub(prompt).filter(|&room| room > 0) {
        Some(room) => format!("use --max-new {room} or less with this prompt"),
        None => format!("the prompt alone needs {prompt} of them: shorten it to {} tokens or less", limit - 1),
    };
    Err(CliError::Usage(format!(
        "prompt ({}) + --max-new ({max_new}) = {total} positions exceeds max_position_embeddings = {limit} in {}: {fix}",
        tokens(prompt as usize),
        args.model.join("config.json").display()
    )))
}

/// On the CPU, what the generation will allocate (the KV cache, gathered
/// keys and values, the prefill's activations, the logits) against the
/// memory available now: the weights are loaded already, so they count
/// there. On a GPU the cache and activations live in device memory, whose
/// allocations fail with an error rather than abort.
fn check_memory(args: &Args, decoder: &Decoder) -> Result<(), CliError> {
    if !matches!(decoder.device(), Device::Cpu) {
        return Ok(());
    }
    let request = FootprintRequest {
        batch: args.batch as usize,
        prompt: args.tokens.len(),
        max_new: args.max_new as usize,
        cache: args.cache_kind(),
        kv_dtype: decoder.kv_dtype(),
    };
    let items = generate_footprint(decoder.config(), &request)
        .into_iter()
        .map(|i| Item { what: i.what.to_string(), bytes: i.bytes, formula: i.formula })
        .collect();
    let purpose =
        format!("generate --batch {} --max-new {} with a {}-token prompt", args.batch, args.max_new, args.tokens.len());
    Ok(host_memory::check(&purpose, items)?)
}

/// "1 token", "5 tokens".
fn tokens(n: usize) -> String {
    if n == 1 {
        "1 token".into()
    } else {
        format!("{n} tokens")
    }
}

/// The flag a sampling error is about, named as the user typed it.
fn sampling_usage(e: &rocmforge::model::SamplingError) -> String {
    use rocmforge::model::SamplingError as E;
    let flag = match e {
        E::Temperature(_) => "--temperature",
        E::TopK => "--top-k",
        E::TopP(_) => "--top-p",
        E::NeedsTemperature | E::AllNaN | E::NoFinite { .. } => "--top-k/--top-p",
    };
    format!("{flag}: {e}")
}

/// What a report describes.
struct Run<'a> {
    args: &'a Args,
    decoder: &'a Decoder,
    device: &'a Device,
    g: &'a Generation,
    eos: &'a StopTokens,
}

impl Run<'_> {
    fn sampling_label(&self) -> String {
        let a = self.args;
        if a.temperature == 0.0 {
            return "greedy".into();
        }
        let mut s = format!("temperature {}", a.temperature);
        if let Some(k) = a.top_k {
            s += &format!(", top-k {k}");
        }
        if let Some(p) = a.top_p {
            s += &format!(", top-p {p}");
        }
        s + &format!(", seed {}", a.seed)
    }

    fn eos_label(&self) -> String {
        let ids: Vec<String> = self.eos.ids.iter().map(u32::to_string).collect();
        match (&self.eos.source, self.args.ignore_eos) {
            (None, _) => "none (no eos_token_id in the model directory)".into(),
            (Some(_), true) => format!("{} (ignored: --ignore-eos)", ids.join(",")),
            (Some(p), false) => {
                format!("{} (from {})", ids.join(","), p.file_name().unwrap_or_default().to_string_lossy())
            }
        }
    }
}

/// "cpu-flash (auto: ...)" for one class, or one line per layer when layers differ.
fn backend_lines(g: &Generation, class: ShapeClass) -> Vec<String> {
    let Some(layers) = g.choices.get(&class) else {
        return vec!["none (no such step)".into()];
    };
    let first = &layers[0].1;
    if layers.iter().all(|(_, c)| c.backend == first.backend && c.reason == first.reason) {
        return vec![format!("{} ({})", first.backend, first.reason)];
    }
    layers.iter().map(|(i, c)| format!("layer {i}: {} ({})", c.backend, c.reason)).collect()
}

fn describe_model(d: &Decoder) -> String {
    let c = d.config();
    format!(
        "{} layers, hidden {}, heads {}/{}, head_dim {}, vocab {}",
        c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size
    )
}

fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => match rayon::current_num_threads() {
            1 => "cpu (1 thread)".into(),
            n => format!("cpu ({n} threads)"),
        },
        Device::Gpu(g) => format!("{} {} ({})", g.label(), g.info().name, g.info().arch),
    }
}

fn cache_label(args: &Args, d: &Decoder, g: &Generation) -> String {
    match args.cache {
        CacheArg::Contiguous => format!("{} ({})", g.cache, d.kv_dtype()),
        CacheArg::Paged => format!("{} (blocks of {}, {})", g.cache, args.block_size(), d.kv_dtype()),
    }
}

fn text_report(run: &Run<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let (args, d, g) = (run.args, run.decoder, run.g);
    writeln!(out, "model:    {} ({}, {})", args.model.display(), d.config().family, describe_model(d))?;
    writeln!(out, "device:   {}", describe_device(run.device))?;
    writeln!(out, "dtype:    {}", d.dtype())?;
    writeln!(out, "cache:    {}", cache_label(args, d, g))?;
    writeln!(out, "prompt:   {} × batch {}", tokens(args.tokens.len()), args.batch)?;
    writeln!(out, "sampling: {}", run.sampling_label())?;
    writeln!(out, "eos:      {}", run.eos_label())?;
    for (i, t) in g.tokens.iter().enumerate() {
        let ids: Vec<String> = t.iter().map(u32::to_string).collect();
        let label = if g.tokens.len() > 1 { format!("seq {i}:") } else { "ids:".into() };
        writeln!(out, "{label:9} {}", ids.join(","))?;
    }
    for (i, (t, f)) in g.tokens.iter().zip(&g.finish).enumerate() {
        let who = if g.tokens.len() > 1 { format!("seq {i} ") } else { String::new() };
        writeln!(out, "{:9} {who}stopped: {} after {}", "", f.name(), tokens(t.len()))?;
    }
    for (class, label) in [(ShapeClass::Prefill, "prefill:"), (ShapeClass::Decode, "decode:")] {
        for line in backend_lines(g, class) {
            writeln!(out, "{label:9} {line}")?;
        }
        let layers = g.choices.get(&class).into_iter().flatten();
        let (calls, in_place) = layers.fold((0, 0), |(c, i), (_, ch)| (c + ch.calls, i + ch.in_place));
        if calls > 0 {
            writeln!(out, "{:9} KV cache read in place in {in_place} of {calls} attention calls (else gathered)", "")?;
        }
    }
    writeln!(out, "time to first token: {:.3} ms", g.time_to_first_token * 1e3)?;
    match g.decode_tokens_per_second() {
        Some(tps) => writeln!(
            out,
            "decode:   {} in {:.3} ms = {tps:.1} tokens/s (batch {})",
            tokens(g.decode_tokens),
            g.decode_seconds * 1e3,
            args.batch
        )?,
        None => writeln!(out, "decode:   no decode steps (--max-new 1, or every sequence stopped at once)")?,
    }
    let t = &g.decode_timing;
    if t.calls > 0 {
        let waited = if args.temperature == 0.0 { "the argmax" } else { "the last logits" };
        writeln!(
            out,
            "{:9} per step: {:.3} ms issuing the forward, {:.3} ms waiting for {waited}",
            "",
            t.issue.as_secs_f64() * 1e3 / t.calls as f64,
            t.wait.as_secs_f64() * 1e3 / t.calls as f64
        )?;
    }
    Ok(())
}

fn json_report(run: &Run<'_>) -> serde_json::Value {
    let (args, d, device, g) = (run.args, run.decoder, run.device, run.g);
    let class = |c: ShapeClass| {
        serde_json::json!({
            "backends": g.backends(c),
            "layers": g.choices.get(&c).into_iter().flatten().map(|(i, ch)| serde_json::json!({
                "layer": i, "backend": ch.backend, "reason": ch.reason, "calls": ch.calls, "in_place": ch.in_place,
            })).collect::<Vec<_>>(),
        })
    };
    serde_json::json!({
        "schema": SCHEMA,
        "command": "generate",
        "model": args.model.display().to_string(),
        "family": d.config().family.model_type(),
        "device": device.label(),
        "cache": g.cache,
        "block_size": matches!(args.cache, CacheArg::Paged).then_some(args.block_size()),
        "dtype": d.dtype().name(),
        "kv_dtype": d.kv_dtype().name(),
        "batch": args.batch,
        "prompt": args.tokens,
        "tokens": g.tokens,
        "finish": g.finish.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "sampling": {
            "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
            "greedy": args.temperature == 0.0,
        },
        // The model's EOS ids, even with --ignore-eos; stop_token_ids are those that ended sequences.
        "eos_token_ids": run.eos.ids,
        "ignore_eos": args.ignore_eos,
        "stop_token_ids": if args.ignore_eos { &[][..] } else { &run.eos.ids[..] },
        "prefill": class(ShapeClass::Prefill),
        "decode": class(ShapeClass::Decode),
        "time_to_first_token_ms": g.time_to_first_token * 1e3,
        "decode_ms": g.decode_seconds * 1e3,
        "decode_tokens": g.decode_tokens,
        "decode_tokens_per_s": g.decode_tokens_per_second(),
        "decode_issue_ms": g.decode_timing.issue.as_secs_f64() * 1e3,
        "decode_wait_ms": g.decode_timing.wait.as_secs_f64() * 1e3,
    })
}
