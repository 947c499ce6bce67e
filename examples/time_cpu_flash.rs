//! Times CPU backends on fixed shapes and prints JSON (one object per
//! backend × shape) with the median wall time and GFLOP/s from
//! `AttentionProblem::flops()`, and the median CPU time of the process per
//! call (all threads, from /proc/self/task/*/schedstat on Linux): on a
//! machine shared with other jobs, wall time measures the scheduler's share
//! as much as the code, CPU time much less so. Used by `scripts/compare_torch_cpu.py` when
//! the CLI's `bench` command is not available, and for peak-memory runs.
//!
//! ```text
//! cargo run --release --example time_cpu_flash -- \
//!     [--shape b,hq,hkv,sq,skv,d[:MASK]]... [--mask none|causal|window:L,R] \
//!     [--dtype f32] [--backends cpu-flash,cpu-reference] [--warmup N] \
//!     [--repeats N] [--reference-repeats N] [--isa avx512|avx2|portable]
//! ```
//!
//! Without `--shape` it runs the two target shapes, (1,32,32,1024,128)
//! non-causal and (1,32,8,1024,128) causal. `--mask` applies to every
//! `--shape` without its own `:MASK` suffix. cpu-reference is single-threaded and slow, so it
//! runs `--reference-repeats` times (default 1), always on the full shape.

use rocmforge::backends::cpu_flash::{CpuFlash, CpuIsa};
use rocmforge::shape_syntax::ShapeSpec;
use rocmforge::stats::Stats;
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, Mask, Registry, Tensor};
use std::time::Instant;

struct Args {
    shapes: Vec<([usize; 6], Option<Mask>)>,
    dtype: DType,
    backends: Vec<String>,
    warmup: usize,
    repeats: usize,
    reference_repeats: usize,
    isa: Option<CpuIsa>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        shapes: Vec::new(),
        dtype: DType::F32,
        backends: vec!["cpu-flash".into()],
        warmup: 1,
        repeats: 5,
        reference_repeats: 1,
        isa: None,
    };
    let mut mask = Mask::None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("bad number '{s}': {e}"));
        match flag.as_str() {
            "--shape" => {
                // The shared shape syntax (rocmforge::shape_syntax), as in `rocmforge bench`.
                let s: ShapeSpec = value()?.parse().map_err(|e| format!("{e}"))?;
                args.shapes.push(([s.batch, s.q_heads, s.kv_heads, s.seq_q, s.seq_kv, s.head_dim], s.mask));
            }
            "--mask" => mask = value()?.parse().map_err(|e| format!("{e}"))?,
            "--dtype" => args.dtype = value()?.parse().map_err(|e| format!("{e}"))?,
            "--backends" => args.backends = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--warmup" => args.warmup = num(value()?)?,
            "--repeats" => args.repeats = num(value()?)?.max(1),
            "--reference-repeats" => args.reference_repeats = num(value()?)?.max(1),
            "--isa" => {
                let v = value()?;
                args.isa = Some(CpuIsa::parse(&v).ok_or(format!("unknown isa '{v}'"))?);
            }
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    if args.shapes.is_empty() {
        args.shapes =
            vec![([1, 32, 32, 1024, 1024, 128], Some(Mask::None)), ([1, 32, 8, 1024, 1024, 128], Some(Mask::Causal))];
    }
    for (_, m) in args.shapes.iter_mut() {
        m.get_or_insert(mask);
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::global()?;
    // A forced ISA is its own cpu-flash instance, run like any backend.
    let forced: Option<CpuFlash> = args.isa.map(CpuFlash::with_isa).transpose()?;
    let mut results = Vec::new();
    for &([b, hq, hkv, sq, skv, d], mask) in &args.shapes {
        let mask = mask.unwrap_or(Mask::None);
        let p = AttentionProblem::new(b, sq, skv, hq, hkv, d, args.dtype).with_mask(mask);
        p.validate()?;
        let q = Tensor::random(p.q_shape(), p.dtype, 1)?;
        let k = Tensor::random(p.kv_shape(), p.dtype, 2)?;
        let v = Tensor::random(p.kv_shape(), p.dtype, 3)?;
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu)?;
        for name in &args.backends {
            let backend: &dyn AttentionBackend = match (name.as_str(), &forced) {
                ("cpu-flash", Some(flash)) => flash,
                _ => registry
                    .get(name)
                    .ok_or_else(|| format!("unknown backend '{name}' (known: {})", registry.names().join(", ")))?,
            };
            let is_ref = name == "cpu-reference";
            let (warmup, repeats) = if is_ref { (0, args.reference_repeats) } else { (args.warmup, args.repeats) };
            let call = |out: &mut Tensor| backend.forward(&p, &q, &k, &v, out);
            for _ in 0..warmup {
                call(&mut out)?;
            }
            let mut times = Vec::with_capacity(repeats);
            let mut cpu_times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let (t, cpu) = (Instant::now(), process_cpu_ns());
                call(&mut out)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                if let (Some(a), Some(b)) = (cpu, process_cpu_ns()) {
                    cpu_times.push(b.saturating_sub(a) as f64 * 1e-6);
                }
            }
            let stats = Stats::of(&times).ok_or("no timed run")?;
            let median = stats.median;
            let cpu_median = (cpu_times.len() == repeats).then(|| Stats::of(&cpu_times).map(|s| s.median)).flatten();
            let gflops = p.flops() / (median * 1e-3) / 1e9;
            let isa = match (name.as_str(), &forced) {
                ("cpu-flash", Some(flash)) => flash.isa().name(),
                ("cpu-flash", None) => CpuFlash::new().isa().name(),
                _ => "-",
            };
            results.push(serde_json::json!({
                "backend": name,
                "shape": [b, hq, hkv, sq, skv, d],
                "mask": mask.to_string(),
                "dtype": p.dtype.name(),
                "median_ms": median,
                "min_ms": stats.min,
                "cpu_median_ms": cpu_median,
                "times_ms": times,
                "gflops": gflops,
                "flops": p.flops(),
                "threads": rayon::current_num_threads(),
                "isa": isa,
            }));
            eprintln!(
                "{name:>14} {:?} {mask}: median {median:.2} ms, {gflops:.1} GFLOP/s ({isa})",
                [b, hq, hkv, sq, skv, d]
            );
        }
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}

/// CPU time of every thread of this process so far, in ns (Linux
/// schedstat; `None` elsewhere). rayon's workers live for the whole run, so
/// the difference of two readings is the CPU time spent in between.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}
