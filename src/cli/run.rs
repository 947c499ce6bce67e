//! `rocmforge run`: one attention problem, timed, optionally checked
//! against cpu-reference and written to a file.

use super::check::{against_reference, REL_FLOOR};
use super::problem_args::ShapeArgs;
use super::{CliError, SelectArgs};
use crate::device::Device;
use crate::io::{read_tensor, write_tensor, HostTensor};
use crate::problem::AttentionProblem;
use crate::tensor::Tensor;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Runs one problem. Inputs are seeded random values, or Q/K/V read from
/// `.npy` / `.safetensors` files (shape `[batch, seq, heads, head_dim]`; the
/// problem's shape and dtype are taken from the files). A `.safetensors`
/// file holding several tensors is read by role name: `q`, `k`, `v`.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_help = "Time: on a GPU, kernel time is measured with device events and reported \
    apart from the upload/download time; on the CPU with a wall clock.\n\
    --check compares with cpu-reference in f64: max abs error, and max relative error \
    |got - ref| / max(|ref|, 1e-3); it fails (exit 1) if any element is outside the dtype's tolerance.")]
pub struct Args {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Seed of the random inputs (q uses SEED, k SEED+1, v SEED+2).
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub seed: u64,
    /// Query tensor file (.npy or .safetensors); needs --k and --v.
    #[arg(long, value_name = "FILE", requires_all = ["k", "v"])]
    pub q: Option<PathBuf>,
    /// Key tensor file.
    #[arg(long, value_name = "FILE", requires_all = ["q", "v"])]
    pub k: Option<PathBuf>,
    /// Value tensor file.
    #[arg(long, value_name = "FILE", requires_all = ["q", "k"])]
    pub v: Option<PathBuf>,
    /// Write the output to this file (.npy or .safetensors; bf16 needs .safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compare the output with cpu-reference (f64) and report the error.
    #[arg(long)]
    pub check: bool,
    /// Untimed runs before the timed ones [default: 1 on a GPU, 0 on the CPU].
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,
}

impl Args {
    /// What `rocmforge` with no command runs: the Llama-like default, checked.
    pub fn default_main() -> Args {
        Args { check: true, repeats: 1, ..Args::default() }
    }
}

fn load(path: &std::path::Path, role: &str) -> Result<HostTensor, CliError> {
    Ok(read_tensor(path, Some(role))?)
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let registry = super::registry()?;
    let (p, files) = problem(args)?;
    // Select before validating, so a forced backend's error lists every reason.
    let (device, selection) = args.select.select(registry, &p)?;
    p.validate()?;
    let (q, k, v) = match files {
        Some(files) => files,
        None => random_inputs(&p, args.seed)?,
    };
    let backend = selection.backend;
    writeln!(out, "problem: {p}")?;
    writeln!(out, "device:  {}", device_description(&device))?;
    writeln!(out, "backend: {} ({})", backend.name(), super::cli_wording(&selection.reason.to_string()))?;

    let warmup = args.warmup.unwrap_or(if matches!(device, Device::Gpu(_)) { 1 } else { 0 });
    let mut times = Vec::with_capacity(args.repeats as usize);
    let output = match &device {
        Device::Cpu => {
            let (q, k, v) = (q.clone().into_tensor()?, k.clone().into_tensor()?, v.clone().into_tensor()?);
            let mut o = Tensor::nan(p.out_shape(), p.dtype, &device)?;
            for _ in 0..warmup {
                backend.forward(&p, &q, &k, &v, &mut o)?;
            }
            for _ in 0..args.repeats.max(1) {
                o = Tensor::nan(p.out_shape(), p.dtype, &device)?;
                let t = Instant::now();
                backend.forward(&p, &q, &k, &v, &mut o)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            o
        }
        Device::Gpu(gpu) => {
            let t = Instant::now();
            let dq = q.clone().into_tensor()?.to_device(&device)?;
            let dk = k.clone().into_tensor()?.to_device(&device)?;
            let dv = v.clone().into_tensor()?.to_device(&device)?;
            let mut o = Tensor::nan(p.out_shape(), p.dtype, &device)?;
            gpu.synchronize()?;
            let upload_ms = t.elapsed().as_secs_f64() * 1e3;
            for _ in 0..warmup {
                backend.forward(&p, &dq, &dk, &dv, &mut o)?;
            }
            // Poison again so the timed run must write every element.
            o = Tensor::nan(p.out_shape(), p.dtype, &device)?;
            let (start, end) = (gpu.event()?, gpu.event()?);
            for _ in 0..args.repeats.max(1) {
                start.record()?;
                backend.forward(&p, &dq, &dk, &dv, &mut o)?;
                end.record()?;
                times.push(start.elapsed_ms(&end)? as f64);
            }
            let t = Instant::now();
            let host = o.to_device(&Device::Cpu)?;
            let download_ms = t.elapsed().as_secs_f64() * 1e3;
            writeln!(out, "transfer: upload {upload_ms:.3} ms, download {download_ms:.3} ms (not in the kernel time)")?;
            host
        }
    };
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let gflops = p.flops() / (median * 1e-3) / 1e9;
    let what = if matches!(device, Device::Gpu(_)) { "kernel time (device events)" } else { "time" };
    let of = if times.len() > 1 { format!(", median of {}", times.len()) } else { String::new() };
    writeln!(out, "{what}: {median:.3} ms{of} ({gflops:.1} GFLOP/s)")?;

    if let Some(path) = &args.out {
        write_tensor(path, "out", &output)?;
        writeln!(out, "wrote:   {}", path.display())?;
    }
    if args.check {
        let host = output.download()?;
        let t = Instant::now();
        let report = against_reference(&p, &q.data, &k.data, &v.data, &host);
        writeln!(
            out,
            "check vs cpu-reference: {} [{:.1} s; rel err = |got-ref|/max(|ref|,{REL_FLOOR:e})]",
            report.summary(),
            t.elapsed().as_secs_f64()
        )?;
        if !report.passed() {
            return Err(CliError::CheckFailed(format!(
                "{} of {} elements outside the {} tolerance",
                report.outside, report.total, report.dtype
            )));
        }
        writeln!(out, "check: PASS")?;
    }
    Ok(())
}

fn device_description(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Gpu(g) => format!("{} {} ({})", g.label(), g.info().name, g.info().arch),
    }
}

type Inputs = (HostTensor, HostTensor, HostTensor);

/// The problem, and its inputs when they come from files.
fn problem(args: &Args) -> Result<(AttentionProblem, Option<Inputs>), CliError> {
    match (&args.q, &args.k, &args.v) {
        (Some(qp), Some(kp), Some(vp)) => {
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
    let random = |shape, seed| -> Result<HostTensor, CliError> {
        let t = Tensor::random(shape, p.dtype, seed)?;
        Ok(HostTensor { shape, data: t.download()? })
    };
    Ok((
        random(p.q_shape(), seed)?,
        random(p.kv_shape(), seed.wrapping_add(1))?,
        random(p.kv_shape(), seed.wrapping_add(2))?,
    ))
}
