//! `rocmforge run`: one attention problem, timed, optionally checked
//! against cpu-reference and written to a file.
//!
//! Order of work, so that every mistake is reported before time is spent:
//! read the input files, validate the problem (an invalid one is reported
//! once, as invalid), check `--out`, select the device and backend, check
//! that the host memory exists, and only then allocate and compute.

use super::host_memory::{self, HostMemoryError, Item};
use super::problem_args::ShapeArgs;
use super::select::{reason_label, source_label, SelectArgs};
use super::timed::{time_forward, MAX_REPEATS, MAX_WARMUP};
use super::{inputs, json, CliError, ThreadArgs};
use rocmforge::compare::{try_against_reference, CompareError, Plan, Report, REL_FLOOR};
use rocmforge::device::Device;
use rocmforge::io::{check_writable, read_tensor, write_tensor, HostTensor};
use rocmforge::problem::AttentionProblem;
use rocmforge::stats::Stats;
use rocmforge::tensor::Tensor;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Runs one problem. Inputs are seeded random values, or Q/K/V read from
/// `.npy` / `.safetensors` files.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_help = "Layout: every tensor is [batch, seq, heads, head_dim], C order. PyTorch's \
    scaled_dot_product_attention takes [batch, heads, seq, head_dim]: pass q.transpose(1, 2).contiguous() \
    (and the same for k and v) when saving.\n\
    Time: on a GPU, kernel time is measured with device events and reported \
    apart from the upload/download time; on the CPU with a wall clock.\n\
    --check compares with cpu-reference in f64: max abs error, and max relative error \
    |got - ref| / max(|ref|, 1e-3); it fails (exit 1) if any element is outside the dtype's tolerance. \
    NaN/Inf rules: docs/semantics.md.\n\
    --json prints one JSON document (schema in docs/cli.md) instead of the text report.")]
pub struct Args {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub threads: ThreadArgs,
    /// Seed of the random inputs (q uses SEED, k SEED+1, v SEED+2).
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub seed: u64,
    /// Query tensor file (.npy or .safetensors), shape [batch, seq_q, q_heads, head_dim]
    /// (PyTorch's [b, h, s, d] must be transposed to [b, s, h, d]); needs --k and --v.
    #[arg(long, value_name = "FILE", requires_all = ["k", "v"])]
    pub q: Option<PathBuf>,
    /// Key tensor file, shape [batch, seq_kv, kv_heads, head_dim].
    #[arg(long, value_name = "FILE", requires_all = ["q", "v"])]
    pub k: Option<PathBuf>,
    /// Value tensor file, shape [batch, seq_kv, kv_heads, head_dim].
    #[arg(long, value_name = "FILE", requires_all = ["q", "k"])]
    pub v: Option<PathBuf>,
    /// Write the output to this file (.npy or .safetensors; bf16 needs .safetensors).
    /// Checked before anything is computed.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compare the output with cpu-reference (f64) and report the error.
    #[arg(long)]
    pub check: bool,
    /// Untimed runs before the timed ones [default: 1 on a GPU, 0 on the CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=MAX_WARMUP as i64))]
    pub warmup: Option<u32>,
    /// Timed runs (1 to 1000); the median is reported.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_REPEATS as i64))]
    pub repeats: u32,
    /// Print one JSON document instead of the text report.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// What `rocmforge` with no command runs: the Llama-like default, checked.
    pub fn default_main() -> Args {
        Args { check: true, repeats: 1, ..Args::default() }
    }
}

type Inputs = (HostTensor, HostTensor, HostTensor);

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    args.threads.apply()?;
    let registry = super::registry()?;
    let (p, files) = problem(args)?;
    p.validate()?;
    if let Some(path) = &args.out {
        check_writable(path, p.dtype)?;
    }
    let chosen = registry.choose(&p, &args.select.config()?)?;
    let device = chosen.device.clone();
    host_memory::check("this run", memory_items(&p, chosen.backend.name(), files.is_some(), args.check))?;
    let (q, k, v) = match files {
        Some(files) => files,
        None => random_inputs(&p, args.seed)?,
    };
    let (q, k, v) = (q.into_tensor()?, k.into_tensor()?, v.into_tensor()?);
    let backend = chosen.backend;
    let reason = reason_label(&chosen.reason);
    if !args.json {
        writeln!(out, "problem: {p}")?;
        writeln!(out, "device:  {}", device_description(&device))?;
        writeln!(out, "backend: {} ({reason})", backend.name())?;
    }

    let warmup = args.warmup.unwrap_or(if matches!(device, Device::Gpu(_)) { 1 } else { 0 });
    let Measured { output, times, transfer, memory } =
        measure(backend, &p, &device, (&q, &k, &v), warmup, args.repeats)?;
    let stats = Stats::of(&times).ok_or_else(|| CliError::Usage("no timed run".into()))?;
    let gflops = p.flops() / (stats.median * 1e-3) / 1e9;
    if !args.json {
        if let Some((up, down)) = transfer {
            writeln!(out, "transfer: upload {up:.3} ms, download {down:.3} ms (not in the kernel time)")?;
        }
        let what = if transfer.is_some() { "kernel time (device events)" } else { "time" };
        writeln!(out, "{what}: {}; {gflops:.1} GFLOP/s", stats.describe_ms())?;
        if let Some(m) = &memory {
            writeln!(out, "device memory: {}", m.describe())?;
        }
    }
    if let Some(path) = &args.out {
        write_tensor(path, "out", &output)?;
        if !args.json {
            writeln!(out, "wrote:   {}", path.display())?;
        }
    }
    let report = if args.check { Some(check(&p, (&q, &k, &v), &output, args.json, out)?) } else { None };
    if args.json {
        let doc = json!({
            "schema": json::SCHEMA,
            "command": "run",
            "problem": json::problem(&p),
            "device": json::device(&device),
            "backend": backend.name(),
            "choice": {"source": source_label(chosen.source), "reason": reason},
            "timing": timing_json(&stats, warmup, transfer.is_some()),
            "gflops": gflops,
            "transfer_ms": transfer.map(|(up, down)| json!({"upload": up, "download": down})),
            "device_memory": memory.as_ref().map(PeakMemory::to_json),
            "out": args.out.as_ref().map(|p| p.display().to_string()),
            "check": report.as_ref().map(check_json),
        });
        json::write(out, &doc)?;
    }
    match report {
        Some(r) if !r.passed() => Err(CliError::CheckFailed(format!(
            "{} of {} elements outside the {} tolerance{}",
            r.outside,
            r.total,
            r.dtype,
            if r.max_abs == 0.0 { " (every mismatch involves NaN or Inf)" } else { "" }
        ))),
        _ => Ok(()),
    }
}

/// The last output (on the host), the times, and on a GPU the upload and
/// download times in milliseconds and the device memory used.
struct Measured {
    output: Tensor,
    times: Vec<f64>,
    transfer: Option<(f64, f64)>,
    memory: Option<PeakMemory>,
}

/// The most device memory held at once from the upload of the inputs to
/// the end of the last run, next to what the inputs and the output need.
struct PeakMemory {
    peak_bytes: usize,
    tensor_bytes: usize,
}

impl PeakMemory {
    /// Peak over the tensors, in percent (0 when the backend allocated
    /// nothing of its own).
    fn overhead_percent(&self) -> f64 {
        100.0 * (self.peak_bytes as f64 - self.tensor_bytes as f64) / self.tensor_bytes.max(1) as f64
    }

    fn describe(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        format!(
            "peak {:.1} MiB allocated (q, k, v and output: {:.1} MiB; {:+.2} %)",
            self.peak_bytes as f64 / MIB,
            self.tensor_bytes as f64 / MIB,
            self.overhead_percent()
        )
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"peak_bytes": self.peak_bytes, "tensor_bytes": self.tensor_bytes,
               "overhead_percent": self.overhead_percent()})
    }
}

/// Runs the backend on `device`, uploading the host inputs first on a GPU
/// (outside the kernel time, reported apart).
fn measure(
    backend: &dyn rocmforge::AttentionBackend,
    p: &AttentionProblem,
    device: &Device,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    warmup: u32,
    repeats: u32,
) -> Result<Measured, CliError> {
    match device {
        Device::Cpu => {
            let (output, times) = time_forward(backend, p, device, (q, k, v), warmup, repeats)?;
            Ok(Measured { output, times, transfer: None, memory: None })
        }
        Device::Gpu(gpu) => {
            // Idle workspaces of earlier calls would count as peak.
            gpu.trim_workspaces();
            let held_before = gpu.memory().live_bytes;
            gpu.reset_peak_memory();
            let t = Instant::now();
            let (dq, dk, dv) = (q.to_device(device)?, k.to_device(device)?, v.to_device(device)?);
            gpu.synchronize()?;
            let upload_ms = t.elapsed().as_secs_f64() * 1e3;
            let (o, times) = time_forward(backend, p, device, (&dq, &dk, &dv), warmup, repeats)?;
            let memory = PeakMemory {
                peak_bytes: gpu.memory().peak_bytes.saturating_sub(held_before),
                tensor_bytes: dq.size_in_bytes() + dk.size_in_bytes() + dv.size_in_bytes() + o.size_in_bytes(),
            };
            let t = Instant::now();
            let output = o.to_device(&Device::Cpu)?;
            let download_ms = t.elapsed().as_secs_f64() * 1e3;
            Ok(Measured { output, times, transfer: Some((upload_ms, download_ms)), memory: Some(memory) })
        }
    }
}

fn timing_json(stats: &Stats, warmup: u32, device_events: bool) -> serde_json::Value {
    json!({
        "clock": if device_events { "device-events" } else { "wall" },
        "unit": "ms",
        "warmup": warmup,
        "count": stats.count, "median": stats.median, "min": stats.min, "max": stats.max,
        "spread": stats.spread(),
    })
}

/// Compares with the oracle, printing progress on stderr when the
/// reference will take a while (it is naive f64 loops). The output is
/// already on the host (`measure` downloads it), and is read in place.
fn check(
    p: &AttentionProblem,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    output: &Tensor,
    json: bool,
    out: &mut dyn Write,
) -> Result<Report, CliError> {
    fn host(t: &Tensor) -> Result<&rocmforge::HostData, CliError> {
        t.host().ok_or_else(|| CliError::Usage("--check: q, k, v and the output are expected on the host".into()))
    }
    let t = Instant::now();
    let progress = Progress::new(p);
    let report = try_against_reference(p, (host(q)?, host(k)?, host(v)?), host(output)?, &|done, total| {
        progress.tick(done, total)
    })
    .map_err(check_error)?;
    if !json {
        writeln!(
            out,
            "check vs cpu-reference: {} [{:.1} s; rel err = |got-ref|/max(|ref|,{REL_FLOOR:e})]",
            report.summary(),
            t.elapsed().as_secs_f64()
        )?;
        if report.passed() {
            writeln!(out, "check: PASS")?;
        }
    }
    Ok(report)
}

/// A reference buffer the host could not give becomes the same error as
/// an input the host could not give.
fn check_error(e: CompareError) -> CliError {
    match e {
        CompareError::AllocFailed { what, bytes } => {
            HostMemoryError::AllocFailed { what: format!("{what} (--check)"), bytes }.into()
        }
        other => CliError::Usage(format!("--check: {other}")),
    }
}

fn check_json(r: &Report) -> serde_json::Value {
    json!({
        "passed": r.passed(),
        "total": r.total,
        "outside": r.outside,
        "max_abs": r.max_abs,
        "max_rel": r.max_rel,
        "rel_floor": REL_FLOOR,
        "tolerance": {"abs": r.tolerance.abs, "rel": r.tolerance.rel},
        "output_nan": r.got_nan,
        "output_inf": r.got_inf,
        "reference_nonfinite": r.expected_nonfinite,
    })
}

/// Reference work above which `--check` reports progress: about half a
/// second of the f64 loops on one core (the default problem's check takes
/// about 20 s, and must not look like a hang).
const PROGRESS_FLOPS: f64 = 5e7;

/// Progress lines on stderr, at most one a second, in output rows (the
/// reference's units are a few rows each, so lines come about once a second
/// whatever the number of (batch, kv-head) groups).
struct Progress {
    start: Instant,
    /// When the last line was printed, and the rows it reported.
    last: std::sync::Mutex<(Instant, usize)>,
    enabled: bool,
}

impl Progress {
    fn new(p: &AttentionProblem) -> Progress {
        let enabled = p.flops() > PROGRESS_FLOPS;
        if enabled {
            let threads = Plan::new(p, rayon::current_num_threads()).threads;
            eprintln!(
                "check: computing the f64 reference ({:.1} GFLOP on {threads} thread{}); progress every second",
                p.flops() / 1e9,
                if threads == 1 { "" } else { "s" }
            );
        }
        Progress { start: Instant::now(), last: std::sync::Mutex::new((Instant::now(), 0)), enabled }
    }

    /// Units finish out of order: a count below the one already printed
    /// is not printed.
    fn tick(&self, done: usize, total: usize) {
        if !self.enabled {
            return;
        }
        let Ok(mut last) = self.last.lock() else { return };
        if done > last.1 && (last.0.elapsed().as_secs_f64() >= 1.0 || done == total) {
            *last = (Instant::now(), done);
            eprintln!(
                "check: reference {done} of {total} rows, {:.0} %, {:.1} s",
                100.0 * done as f64 / total.max(1) as f64,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

fn device_description(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Gpu(g) => format!("{} {} ({})", g.label(), g.info().name, g.info().arch),
    }
}

/// Host memory this run allocates: inputs (unless already read from files),
/// the output, the backend's own (where known), and for `--check` the
/// reference's buffers.
fn memory_items(p: &AttentionProblem, backend: &str, inputs_read: bool, check: bool) -> Vec<Item> {
    let mut items = Vec::new();
    // Backends do not declare their host working memory yet; cpu-reference's
    // (one row of f64 scores and one of values) is counted here by name.
    if backend == "cpu-reference" {
        items.push(Item {
            what: "cpu-reference's f64 row".into(),
            bytes: Plan::bytes_per_thread(p),
            formula: format!("({} + {}) × 8 bytes", p.seq_kv, p.head_dim),
        });
    }
    if !inputs_read {
        items.push(Item::tensor("q", p.q_shape(), p.dtype));
        items.push(Item::tensor("k", p.kv_shape(), p.dtype));
        items.push(Item::tensor("v", p.kv_shape(), p.dtype));
    }
    items.push(Item::tensor("output", p.out_shape(), p.dtype));
    if check {
        items.push(check_item(p, rayon::current_num_threads()));
    }
    items
}

/// The `--check` reference's buffers: each busy thread holds a row of
/// seq_kv f64 scores and one output row (compare::try_against_reference);
/// busy threads are min(threads, work units).
fn check_item(p: &AttentionProblem, threads: usize) -> Item {
    let plan = Plan::new(p, threads);
    let busy = plan.threads as u128;
    let (kv, d) = (p.seq_kv, p.head_dim);
    Item {
        what: "--check reference".into(),
        bytes: busy.saturating_mul(Plan::bytes_per_thread(p)),
        formula: format!("min({threads} threads, {} work units) × ({kv} + {d}) × 8 bytes", plan.units),
    }
}

/// The problem, and its inputs when they come from files.
fn problem(args: &Args) -> Result<(AttentionProblem, Option<Inputs>), CliError> {
    match (&args.q, &args.k, &args.v) {
        (Some(qp), Some(kp), Some(vp)) => {
            let load = |path: &PathBuf, role| read_tensor(path, Some(role));
            let (q, k, v) = (load(qp, "q")?, load(kp, "k")?, load(vp, "v")?);
            let names = |p: &PathBuf| p.display().to_string();
            let p = args.shape.problem_from_tensors((&names(qp), &q), (&names(kp), &k), (&names(vp), &v))?;
            Ok((p, Some((q, k, v))))
        }
        (None, None, None) => Ok((args.shape.problem(), None)),
        _ => Err(CliError::Usage("--q, --k and --v must be given together".into())),
    }
}

/// Seeded uniform inputs in [-1, 1): q from `seed`, k from `seed + 1`, v from `seed + 2`.
fn random_inputs(p: &AttentionProblem, seed: u64) -> Result<Inputs, CliError> {
    Ok((
        inputs::random(p.q_shape(), p.dtype, seed, "q")?,
        inputs::random(p.kv_shape(), p.dtype, seed.wrapping_add(1), "k")?,
        inputs::random(p.kv_shape(), p.dtype, seed.wrapping_add(2), "v")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocmforge::DType;

    #[test]
    fn check_item_counts_only_threads_that_have_work() {
        // One (batch, kv-head) group of 4 rows: 4 busy threads of 8, not 8.
        let p = AttentionProblem::new(1, 1, 1000, 4, 1, 24, DType::F32);
        let item = check_item(&p, 8);
        assert_eq!(item.bytes, 4 * (1000 + 24) * 8);
        assert_eq!(item.formula, "min(8 threads, 4 work units) × (1000 + 24) × 8 bytes");
        // Many rows: every thread is busy.
        let p = AttentionProblem::new(2, 512, 512, 8, 2, 64, DType::F16);
        assert_eq!(check_item(&p, 3).bytes, 3 * (512 + 64) * 8);
    }

    #[test]
    fn reference_allocation_failure_reads_like_an_input_one() {
        let e = check_error(CompareError::AllocFailed { what: "the f64 reference's scores", bytes: 3 << 29 });
        assert_eq!(e.to_string(), "cannot allocate 1.5 GiB of host memory for the f64 reference's scores (--check)");
        let e = check_error(CompareError::Length { tensor: "out", got: 1, expected: 2, shape: [1, 1, 1, 2] });
        assert!(e.to_string().starts_with("--check: tensor out has 1 elements"), "{e}");
    }
}
