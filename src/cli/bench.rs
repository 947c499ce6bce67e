//! `rocmforge bench`: time backends on shapes, as a table or JSON.

use super::{CliError, DeviceArg};
use crate::backend::AttentionBackend;
use crate::device::{Device, DeviceKind};
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask};
use crate::registry::Registry;
use crate::tensor::Tensor;
use std::io::Write;
use std::str::FromStr;
use std::time::Instant;

/// Times every eligible backend (cpu-reference only when named in
/// --backends) on each shape, each backend on the device it runs on.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "GFLOP/s counts the two matrix products over the (query, key) pairs the mask \
    lets through: FLOPs = 4 * batch * q_heads * head_dim * (number of unmasked query-key pairs). \
    That is 4*b*hq*sq*skv*d for no mask and about half of it for causal \
    (4*b*hq*d*s*(s+1)/2 when seq_q = seq_kv = s).\n\
    Default shapes: 1,32,32,1024,1024,128 with no mask and 1,32,8,1024,1024,128 causal.")]
pub struct Args {
    /// Shape batch,q_heads,kv_heads,seq_q,seq_kv,head_dim; repeat for several.
    #[arg(long = "shape", value_name = "B,HQ,HKV,SQ,SKV,D")]
    pub shapes: Vec<Shape>,
    /// Mask for every shape: none, causal or window:L,R [default: none for
    /// --shape, the defaults' own masks otherwise].
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
    pub device: DeviceArg,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub warmup: usize,
    /// Timed runs per backend and shape.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `b,hq,hkv,sq,skv,d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub seq_q: usize,
    pub seq_kv: usize,
    pub head_dim: usize,
}

impl FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nums: Vec<usize> = s
            .split(',')
            .map(|x| x.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("'{s}': {e}; expected six integers b,hq,hkv,sq,skv,d"))?;
        match nums[..] {
            [batch, q_heads, kv_heads, seq_q, seq_kv, head_dim] => {
                Ok(Shape { batch, q_heads, kv_heads, seq_q, seq_kv, head_dim })
            }
            _ => Err(format!("'{s}' has {} numbers; expected six: b,hq,hkv,sq,skv,d", nums.len())),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{},{},{}", self.batch, self.q_heads, self.kv_heads, self.seq_q, self.seq_kv, self.head_dim)
    }
}

/// The problems to time: the given shapes, or the two defaults.
pub fn problems(args: &Args) -> Vec<AttentionProblem> {
    let make = |s: Shape, mask: Mask| {
        AttentionProblem::new(s.batch, s.seq_q, s.seq_kv, s.q_heads, s.kv_heads, s.head_dim, args.dtype).with_mask(mask)
    };
    if args.shapes.is_empty() {
        let dense = Shape { batch: 1, q_heads: 32, kv_heads: 32, seq_q: 1024, seq_kv: 1024, head_dim: 128 };
        let gqa = Shape { kv_heads: 8, ..dense };
        vec![make(dense, args.mask.unwrap_or(Mask::None)), make(gqa, args.mask.unwrap_or(Mask::Causal))]
    } else {
        args.shapes.iter().map(|&s| make(s, args.mask.unwrap_or(Mask::None))).collect()
    }
}

struct Row {
    backend: &'static str,
    device: Device,
    problem: AttentionProblem,
    median_ms: f64,
    min_ms: f64,
    gflops: f64,
}

fn shape_of(p: &AttentionProblem) -> String {
    format!("{},{},{},{},{},{}", p.batch, p.num_q_heads, p.num_kv_heads, p.seq_q, p.seq_kv, p.head_dim)
}

fn device_for(arg: DeviceArg, kind: DeviceKind) -> Result<Device, String> {
    match (arg, kind) {
        (DeviceArg::Auto, DeviceKind::Cpu) => Ok(Device::Cpu),
        (DeviceArg::Auto, DeviceKind::Gpu) => Device::gpu(0).map_err(|e| e.to_string()),
        (other, _) => other.open().map_err(|e| e.to_string()),
    }
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let registry = super::registry()?;
    let backends = chosen_backends(registry, args)?;
    let problems = problems(args);
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<(String, String, String)> = Vec::new();
    let total = backends.len() * problems.len();
    let mut step = 0;
    for p in &problems {
        p.validate()?;
        let q = Tensor::random(p.q_shape(), p.dtype, args.seed)?;
        let k = Tensor::random(p.kv_shape(), p.dtype, args.seed.wrapping_add(1))?;
        let v = Tensor::random(p.kv_shape(), p.dtype, args.seed.wrapping_add(2))?;
        for &b in &backends {
            step += 1;
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
            eprintln!(
                "[{step}/{total}] {} on {} ({} {} {}) ...",
                b.name(),
                device.label(),
                shape_of(p),
                p.mask,
                p.dtype
            );
            let (median_ms, min_ms) = time_one(b, p, &device, (&q, &k, &v), args)?;
            rows.push(Row {
                backend: b.name(),
                device,
                problem: p.clone(),
                median_ms,
                min_ms,
                gflops: p.flops() / (median_ms * 1e-3) / 1e9,
            });
        }
    }
    if args.json {
        write_json(out, &rows, &skipped)
    } else {
        write_table(out, &rows, &skipped)
    }
}

fn chosen_backends<'r>(registry: &'r Registry, args: &Args) -> Result<Vec<&'r dyn AttentionBackend>, CliError> {
    if args.backends.is_empty() {
        return Ok(registry.backends().filter(|b| b.name() != "cpu-reference").collect());
    }
    let mut list = Vec::new();
    for name in &args.backends {
        let b = registry.get(name).ok_or_else(|| crate::registry::SelectError::UnknownName {
            name: name.clone(),
            source_: crate::registry::ChoiceSource::Config { origin: "--backend" },
            valid: registry.names(),
        })?;
        if b.name() == "cpu-reference" {
            eprintln!("warning: cpu-reference is the naive f64 oracle and is slow at large shapes");
        }
        list.push(b);
    }
    Ok(list)
}

/// (median ms, min ms) of `repeats` timed runs after `warmup` runs.
fn time_one(
    b: &dyn AttentionBackend,
    p: &AttentionProblem,
    device: &Device,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    args: &Args,
) -> Result<(f64, f64), CliError> {
    // Inputs are uploaded once per backend and shape, outside the timing.
    let (q, k, v) = (q.to_device(device)?, k.to_device(device)?, v.to_device(device)?);
    let mut o = Tensor::nan(p.out_shape(), p.dtype, device)?;
    for _ in 0..args.warmup {
        b.forward(p, &q, &k, &v, &mut o)?;
    }
    let mut times = Vec::with_capacity(args.repeats as usize);
    match device {
        Device::Cpu => {
            for _ in 0..args.repeats.max(1) {
                let t = Instant::now();
                b.forward(p, &q, &k, &v, &mut o)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Device::Gpu(gpu) => {
            let (start, end) = (gpu.event()?, gpu.event()?);
            for _ in 0..args.repeats.max(1) {
                start.record()?;
                b.forward(p, &q, &k, &v, &mut o)?;
                end.record()?;
                times.push(start.elapsed_ms(&end)? as f64);
            }
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times[0]))
}

fn write_table(out: &mut dyn Write, rows: &[Row], skipped: &[(String, String, String)]) -> Result<(), CliError> {
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
            r.median_ms,
            r.min_ms,
            r.gflops
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(nothing timed: no eligible backend; cpu-reference runs only when named in --backends)")?;
    }
    for (b, shape, why) in skipped {
        writeln!(out, "skipped {b} on {shape}: {why}")?;
    }
    Ok(())
}

fn write_json(out: &mut dyn Write, rows: &[Row], skipped: &[(String, String, String)]) -> Result<(), CliError> {
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
                "median_ms": r.median_ms, "min_ms": r.min_ms, "gflops": r.gflops,
            })
        })
        .collect();
    let skipped: Vec<_> = skipped.iter().map(|(b, s, why)| json!({"backend": b, "shape": s, "reason": why})).collect();
    let gpus: Vec<_> = crate::device::gpus()
        .map(|list| {
            list.iter()
                .map(|g| json!({"label": g.label(), "name": g.info().name, "arch": g.info().arch.to_string()}))
                .collect()
        })
        .unwrap_or_default();
    let doc = json!({
        "flops_formula": "4 * batch * q_heads * head_dim * unmasked (query, key) pairs",
        "gpus": gpus,
        "cpu_threads": rayon::current_num_threads(),
        "results": results,
        "skipped": skipped,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?)?;
    Ok(())
}
