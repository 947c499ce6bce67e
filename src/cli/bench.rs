//! `rocmforge bench`: time backends on shapes, as a table or JSON.

use super::host_memory::{self, Item};
use super::timed::{time_forward, MAX_REPEATS, MAX_WARMUP};
use super::{inputs, CliError, ThreadArgs};
use rocmforge::backend::AttentionBackend;
use rocmforge::device::{Device, DeviceKind};
use rocmforge::dtype::DType;
use rocmforge::problem::{AttentionProblem, Mask};
use rocmforge::registry::Registry;
use rocmforge::selection::DeviceChoice;
use rocmforge::shape_syntax::ShapeSpec;
use rocmforge::stats::Stats;
use rocmforge::tensor::Tensor;
use std::io::Write;

/// Times every eligible backend (cpu-reference only when named in
/// --backends) on each shape, each backend on the device it runs on.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("threads", |a| a.help(THREADS_HELP)))]
#[command(after_help = "GFLOP/s counts the two matrix products over the (query, key) pairs the mask \
    lets through: FLOPs = 4 * batch * q_heads * head_dim * (number of unmasked query-key pairs). \
    That is 4*b*hq*sq*skv*d for no mask and about half of it for causal \
    (4*b*hq*d*s*(s+1)/2 when seq_q = seq_kv = s).\n\
    Default shapes: 1,32,32,1024,1024,128 with no mask and 1,32,8,1024,1024,128 causal.\n\
    Exit code: 1 when nothing was timed (every backend was skipped on every shape), after the table \
    or the JSON document that lists why; when anything was timed, skipped pairs are listed and the exit \
    code is 0.")]
pub struct Args {
    /// Shape batch,q_heads,kv_heads,seq_q,seq_kv,head_dim, with an optional
    /// :MASK (e.g. 1,32,8,1024,1024,128:causal); repeat for several.
    #[arg(long = "shape", value_name = "B,HQ,HKV,SQ,SKV,D[:MASK]")]
    pub shapes: Vec<ShapeSpec>,
    /// Mask for every shape without its own :MASK: none, causal or window:L,R
    /// [default: none for --shape, the defaults' own masks otherwise]. A shape
    /// whose :MASK differs from it is an error.
    #[arg(long, value_name = "MASK")]
    pub mask: Option<Mask>,
    /// Element type: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: DType,
    /// Only these backends (comma-separated). cpu-reference is allowed but slow.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub backends: Vec<String>,
    /// auto (each backend on its own device kind), cpu, gpu or gpu:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// Untimed runs before timing (0 to 1000).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=MAX_WARMUP as i64))]
    pub warmup: u32,
    /// Timed runs per backend and shape (1 to 1000).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_REPEATS as i64))]
    pub repeats: u32,
    #[command(flatten)]
    pub threads: ThreadArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `--threads` as bench uses it (the shared text also names `run --check`).
const THREADS_HELP: &str =
    "CPU threads for the CPU backends being timed (1 to 1024) [default: RAYON_NUM_THREADS, else one per core]";

/// The problems to time: the given shapes, or the two defaults. `--mask`
/// applies to shapes without a `:MASK`; one that disagrees with a shape's
/// own mask is an error naming both.
pub fn problems(args: &Args) -> Result<Vec<AttentionProblem>, CliError> {
    if args.shapes.is_empty() {
        let dense =
            ShapeSpec { batch: 1, q_heads: 32, kv_heads: 32, seq_q: 1024, seq_kv: 1024, head_dim: 128, mask: None };
        let gqa = ShapeSpec { kv_heads: 8, ..dense };
        return Ok(vec![
            dense.problem(args.dtype, args.mask.unwrap_or(Mask::None)),
            gqa.problem(args.dtype, args.mask.unwrap_or(Mask::Causal)),
        ]);
    }
    if let Some(mask) = args.mask {
        if let Some(shape) = args.shapes.iter().find(|s| s.mask.is_some_and(|own| own != mask)) {
            return Err(CliError::Usage(format!(
                "--mask {mask} conflicts with --shape {shape}, which has its own mask; \
                 give the mask either in --mask (for every shape) or as a :MASK suffix, not both"
            )));
        }
    }
    Ok(args.shapes.iter().map(|s| s.problem(args.dtype, args.mask.unwrap_or(Mask::None))).collect())
}

struct Row {
    backend: &'static str,
    device: Device,
    problem: AttentionProblem,
    stats: Stats,
    gflops: f64,
}

fn shape_of(p: &AttentionProblem) -> String {
    format!("{},{},{},{},{},{}", p.batch, p.num_q_heads, p.num_kv_heads, p.seq_q, p.seq_kv, p.head_dim)
}

fn device_for(arg: DeviceChoice, kind: DeviceKind) -> Result<Device, String> {
    match (arg, kind) {
        (DeviceChoice::Auto, DeviceKind::Cpu) | (DeviceChoice::Cpu, _) => Ok(Device::Cpu),
        (DeviceChoice::Auto, DeviceKind::Gpu) => Device::gpu(0).map_err(|e| e.to_string()),
        (DeviceChoice::Gpu(n), _) => Device::gpu(n).map_err(|e| e.to_string()),
    }
}

/// (backend, shape, why) of a pair that was not timed.
type Skipped = (String, String, String);

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    args.threads.apply()?;
    let registry = super::registry()?;
    let backends = chosen_backends(registry, args)?;
    let problems = problems(args)?;
    for p in &problems {
        p.validate()?;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut steps = (0, backends.len() * problems.len());
    for p in &problems {
        time_shape(args, p, &backends, &mut steps, &mut rows, &mut skipped)?;
    }
    if args.json {
        write_json(out, &rows, &skipped)?;
    } else {
        write_table(out, &rows, &skipped, args.backends.is_empty())?;
    }
    if rows.is_empty() {
        return Err(nothing_timed(args, &skipped));
    }
    Ok(())
}

/// Times every backend in `backends` that can run `p`, adding a row for
/// each and a `Skipped` for the others; `steps` is (done, in all).
fn time_shape(
    args: &Args,
    p: &AttentionProblem,
    backends: &[&dyn AttentionBackend],
    steps: &mut (usize, usize),
    rows: &mut Vec<Row>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), CliError> {
    // Inputs, their copies on the backend's device (a clone on the CPU) and the output.
    let (q_item, kv_item) = (Item::tensor("q", p.q_shape(), p.dtype), Item::tensor("k", p.kv_shape(), p.dtype));
    let copies = Item {
        what: "copies of q, k, v".into(),
        bytes: q_item.bytes + 2 * kv_item.bytes,
        formula: "the size of q, k and v again".into(),
    };
    let v_item = Item { what: "v".into(), ..kv_item.clone() };
    let items = vec![q_item, kv_item, v_item, copies, Item::tensor("output", p.out_shape(), p.dtype)];
    host_memory::check(&format!("bench shape {}", shape_of(p)), items)?;
    let tensor = |shape, seed, what| -> Result<Tensor, CliError> {
        Ok(inputs::random(shape, p.dtype, seed, what)?.into_tensor()?)
    };
    let q = tensor(p.q_shape(), args.seed, "q")?;
    let k = tensor(p.kv_shape(), args.seed.wrapping_add(1), "k")?;
    let v = tensor(p.kv_shape(), args.seed.wrapping_add(2), "v")?;
    for &b in backends {
        steps.0 += 1;
        let device = match device_for(args.device, b.capabilities().device) {
            Ok(d) => d,
            Err(why) => {
                skipped.push((b.name().to_string(), shape_of(p), why));
                continue;
            }
        };
        let reasons = Registry::reasons(b, p, &device);
        if !reasons.is_empty() {
            let why = reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ");
            skipped.push((b.name().to_string(), shape_of(p), why));
            continue;
        }
        let (step, total) = *steps;
        eprintln!("[{step}/{total}] {} on {} ({} {} {}) ...", b.name(), device.label(), shape_of(p), p.mask, p.dtype);
        // Inputs are uploaded once per backend and shape, outside the timing.
        let (dq, dk, dv) = (q.to_device(&device)?, k.to_device(&device)?, v.to_device(&device)?);
        let (_, times) = time_forward(b, p, &device, (&dq, &dk, &dv), args.warmup, args.repeats)?;
        let stats = Stats::of(&times).ok_or_else(|| CliError::Usage("no timed run".into()))?;
        let gflops = p.flops() / (stats.median * 1e-3) / 1e9;
        rows.push(Row { backend: b.name(), device, problem: p.clone(), stats, gflops });
    }
    Ok(())
}

/// The error when every (backend, shape) pair was skipped: what was asked
/// for, how many pairs, and the first reason (the table or the document
/// lists them all).
fn nothing_timed(args: &Args, skipped: &[Skipped]) -> CliError {
    let mut asked = Vec::new();
    if !args.backends.is_empty() {
        asked.push(format!("--backends {}", args.backends.join(",")));
    }
    if args.device != DeviceChoice::Auto {
        asked.push(format!("--device {}", args.device));
    }
    let asked = if asked.is_empty() { "the default backends on --device auto".to_string() } else { asked.join(" ") };
    let n = skipped.len();
    let first = skipped.first().map(|(b, shape, why)| format!("; first: {b} on {shape}: {why}")).unwrap_or_default();
    let listed = if args.json { "the JSON document's \"skipped\"" } else { "the table's skipped lines" };
    CliError::Usage(format!(
        "nothing timed: no backend could run any shape (asked for {asked}); \
         {n} (backend, shape) pair{} skipped{first}; every reason is in {listed}",
        if n == 1 { "" } else { "s" }
    ))
}

fn chosen_backends<'r>(registry: &'r Registry, args: &Args) -> Result<Vec<&'r dyn AttentionBackend>, CliError> {
    if args.backends.is_empty() {
        return Ok(registry.backends().filter(|b| b.name() != "cpu-reference").collect());
    }
    let mut list = Vec::new();
    for name in &args.backends {
        let b = registry.get(name).ok_or_else(|| rocmforge::registry::SelectError::UnknownName {
            name: rocmforge::text::truncated(name, 64),
            source_: rocmforge::registry::ChoiceSource::Config { origin: "--backends" },
            valid: registry.names(),
        })?;
        if b.name() == "cpu-reference" {
            eprintln!("warning: cpu-reference is the naive f64 oracle and is slow at large shapes");
        }
        list.push(b);
    }
    Ok(list)
}

/// The table; `default_backends`: no --backends (cpu-reference was left out).
fn write_table(out: &mut dyn Write, rows: &[Row], skipped: &[Skipped], default_backends: bool) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<18} {:<8} {:<26} {:<14} {:<5} {:>11} {:>11} {:>10}",
        "backend", "device", "shape b,hq,hkv,sq,skv,d", "mask", "dtype", "median ms", "min ms", "GFLOP/s"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<18} {:<8} {:<26} {:<14} {:<5} {:>11.3} {:>11.3} {:>10.1}",
            r.backend,
            r.device.label(),
            shape_of(&r.problem),
            r.problem.mask.to_string(),
            r.problem.dtype.to_string(),
            r.stats.median,
            r.stats.min,
            r.gflops
        )?;
    }
    if rows.is_empty() {
        let hint = if default_backends { "; cpu-reference runs only when named in --backends" } else { "" };
        writeln!(out, "(nothing timed: no eligible backend{hint})")?;
    }
    for (b, shape, why) in skipped {
        writeln!(out, "skipped {b} on {shape}: {why}")?;
    }
    Ok(())
}

fn write_json(out: &mut dyn Write, rows: &[Row], skipped: &[Skipped]) -> Result<(), CliError> {
    use serde_json::json;
    let results: Vec<_> = rows
        .iter()
        .map(|r| {
            let p = &r.problem;
            let (name, arch) = match &r.device {
                Device::Cpu => (serde_json::Value::Null, serde_json::Value::Null),
                Device::Gpu(g) => (json!(g.info().name), json!(g.info().arch.to_string())),
            };
            json!({
                "backend": r.backend,
                "device": r.device.label(),
                "device_name": name,
                "arch": arch,
                "batch": p.batch, "q_heads": p.num_q_heads, "kv_heads": p.num_kv_heads,
                "seq_q": p.seq_q, "seq_kv": p.seq_kv, "head_dim": p.head_dim,
                "mask": p.mask.to_string(), "dtype": p.dtype.name(),
                "flops": p.flops(),
                "median_ms": r.stats.median, "min_ms": r.stats.min, "max_ms": r.stats.max,
                "repeats": r.stats.count, "spread": r.stats.spread(), "gflops": r.gflops,
            })
        })
        .collect();
    let skipped: Vec<_> = skipped.iter().map(|(b, s, why)| json!({"backend": b, "shape": s, "reason": why})).collect();
    let gpus: Vec<_> = rocmforge::device::gpus()
        .map(|list| {
            list.iter()
                .map(|g| json!({"label": g.label(), "name": g.info().name, "arch": g.info().arch.to_string()}))
                .collect()
        })
        .unwrap_or_default();
    let doc = json!({
        "schema": super::json::SCHEMA,
        "command": "bench",
        "flops_formula": "4 * batch * q_heads * head_dim * unmasked (query, key) pairs",
        "gpus": gpus,
        "cpu_threads": rayon::current_num_threads(),
        "results": results,
        "skipped": skipped,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: Args,
    }

    fn args(list: &[&str]) -> Args {
        Bench::try_parse_from(std::iter::once("bench").chain(list.iter().copied())).unwrap().args
    }

    #[test]
    fn mask_applies_to_shapes_without_a_suffix_and_must_agree_with_one() {
        let masks = |list: &[&str]| problems(&args(list)).map(|ps| ps.iter().map(|p| p.mask).collect::<Vec<_>>());
        let both = ["--shape", "1,2,2,4,4,8", "--shape", "1,2,2,4,4,8:causal"];
        assert_eq!(masks(&both).unwrap(), [Mask::None, Mask::Causal]);
        assert_eq!(masks(&[&both[..], &["--mask", "causal"]].concat()).unwrap(), [Mask::Causal, Mask::Causal]);
        let e = masks(&[&both[..], &["--mask", "window:1,0"]].concat()).unwrap_err().to_string();
        assert!(e.starts_with("--mask window:1,0 conflicts with --shape 1,2,2,4,4,8:causal"), "{e}");
        // The defaults carry no suffix: --mask applies to both.
        assert_eq!(masks(&["--mask", "none"]).unwrap(), [Mask::None, Mask::None]);
    }

    #[test]
    fn nothing_timed_names_the_request_and_the_first_reason() {
        let skipped = vec![("gpu-unfused".to_string(), "1,2,2,4,4,8".to_string(), "no GPU".to_string())];
        let e = nothing_timed(&args(&["--backends", "gpu-unfused"]), &skipped).to_string();
        assert_eq!(
            e,
            "nothing timed: no backend could run any shape (asked for --backends gpu-unfused); 1 (backend, shape) \
             pair skipped; first: gpu-unfused on 1,2,2,4,4,8: no GPU; every reason is in the table's skipped lines"
        );
        let e = nothing_timed(&args(&["--json"]), &[skipped.clone(), skipped].concat()).to_string();
        assert!(e.contains("(asked for the default backends on --device auto); 2 (backend, shape) pairs"), "{e}");
        assert!(e.ends_with("in the JSON document's \"skipped\""), "{e}");
    }
}
