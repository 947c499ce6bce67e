//! `rocmforge generate`: greedy or sampled generation with a model
//! directory (config.json + safetensors), stopping at the model's EOS ids,
//! reporting the attention backends used for prefill and decode, why each
//! sequence stopped, time to first token and decode tokens/s.

use super::CliError;
use rocmforge::device::Device;
use rocmforge::dtype::DType;
use rocmforge::model::{
    generate_with, CacheKind, Decoder, DecoderOptions, GenerateOptions, GenerateRequest, Generation, Sampling,
    ShapeClass, StopTokens,
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
    tokens). A sequence stops after --max-new tokens or at an EOS id (eos_token_id of \
    generation_config.json, else config.json; the EOS token is printed), unless --ignore-eos. \
    Time to first token covers the prefill of every prompt and the first pick; tokens/s counts \
    the tokens after the first, over the whole batch.")]
pub struct Args {
    /// Model directory: config.json and model.safetensors (or model.safetensors.index.json + shards).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_name = "ID,ID,..", value_delimiter = ',', required = true, num_args = 1..)]
    pub tokens: Vec<u32>,
    /// Most tokens to generate per sequence (fewer when it stops at EOS).
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
    /// Tokens per block of the paged cache (16 or 32).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub block_size: usize,
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
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
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
    let options = DecoderOptions { attention, kv_dtype: args.kv_dtype.0, dtype: args.dtype.0 };
    let mut decoder = Decoder::load(&args.model, options)?;
    let eos = StopTokens::from_dir(&args.model).map_err(rocmforge::model::ModelError::from)?;
    let generate_options =
        GenerateOptions { sampling, stop_tokens: if args.ignore_eos { Vec::new() } else { eos.ids.clone() } };
    let device = decoder.device().clone();
    let cache = match args.cache {
        CacheArg::Contiguous => CacheKind::Contiguous,
        CacheArg::Paged => CacheKind::Paged { block_size: args.block_size },
    };
    let request = GenerateRequest {
        prompts: vec![args.tokens.clone(); args.batch as usize],
        max_new: args.max_new as usize,
        cache,
    };
    let g = generate_with(&mut decoder, &request, &generate_options)?;
    let run = Run { args, decoder: &decoder, device: &device, g: &g, eos: &eos };
    if args.json {
        writeln!(out, "{}", json_report(&run))?;
    } else {
        text_report(&run, out)?;
    }
    Ok(())
}

/// The flag a sampling error is about, named as the user typed it.
fn sampling_usage(e: &rocmforge::model::SamplingError) -> String {
    use rocmforge::model::SamplingError as E;
    let flag = match e {
        E::Temperature(_) => "--temperature",
        E::TopK => "--top-k",
        E::TopP(_) => "--top-p",
        E::NeedsTemperature | E::AllNaN => "--top-k/--top-p",
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
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Gpu(g) => format!("{} {} ({})", g.label(), g.info().name, g.info().arch),
    }
}

fn cache_label(args: &Args, d: &Decoder, g: &Generation) -> String {
    match args.cache {
        CacheArg::Contiguous => format!("{} ({})", g.cache, d.kv_dtype()),
        CacheArg::Paged => format!("{} (blocks of {}, {})", g.cache, args.block_size, d.kv_dtype()),
    }
}

fn text_report(run: &Run<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let (args, d, g) = (run.args, run.decoder, run.g);
    writeln!(out, "model:    {} ({}, {})", args.model.display(), d.config().family, describe_model(d))?;
    writeln!(out, "device:   {}", describe_device(run.device))?;
    writeln!(out, "dtype:    {}", d.dtype())?;
    writeln!(out, "cache:    {}", cache_label(args, d, g))?;
    writeln!(out, "prompt:   {} tokens × batch {}", args.tokens.len(), args.batch)?;
    writeln!(out, "sampling: {}", run.sampling_label())?;
    writeln!(out, "eos:      {}", run.eos_label())?;
    for (i, t) in g.tokens.iter().enumerate() {
        let ids: Vec<String> = t.iter().map(u32::to_string).collect();
        let label = if g.tokens.len() > 1 { format!("seq {i}:") } else { "ids:".into() };
        writeln!(out, "{label:9} {}", ids.join(","))?;
    }
    for (i, (t, f)) in g.tokens.iter().zip(&g.finish).enumerate() {
        let who = if g.tokens.len() > 1 { format!("seq {i} ") } else { String::new() };
        writeln!(out, "{:9} {who}stopped: {} after {} tokens", "", f.name(), t.len())?;
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
            "decode:   {} tokens in {:.3} ms = {tps:.1} tokens/s (batch {})",
            g.decode_tokens,
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
        "model": args.model.display().to_string(),
        "family": d.config().family.model_type(),
        "device": device.label(),
        "cache": g.cache,
        "block_size": matches!(args.cache, CacheArg::Paged).then_some(args.block_size),
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
        "eos_token_ids": if args.ignore_eos { Vec::new() } else { run.eos.ids.clone() },
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
