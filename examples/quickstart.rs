//! A Rust caller's first attention call, end to end:
//!
//! 1. describe the call with an `AttentionProblem`,
//! 2. choose a backend through `AttentionConfig` (here: a preference list;
//!    `None` would defer to ROCMFORGE_ATTENTION_BACKEND, then auto),
//! 3. read `explain`: every backend's verdict and the reasons,
//! 4. run it on host tensors, and on a GPU's tensors when there is one,
//! 5. compare with the f64 oracle through `rocmforge::compare`.
//!
//! `cargo run --release --example quickstart`

use rocmforge::compare::against_reference;
use rocmforge::registry::Verdict;
use rocmforge::{AttentionConfig, AttentionProblem, BackendChoice, DType, Device, Mask, Registry, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Tensors are [batch, seq, heads, head_dim]: 8 query heads sharing 2 KV heads.
    let p = AttentionProblem::new(2, 64, 64, 8, 2, 64, DType::F32).with_mask(Mask::Causal);
    p.validate()?;
    let registry = Registry::global()?;
    let config = AttentionConfig { backend: Some(BackendChoice::parse("cpu-flash,cpu-reference")?) };

    let (verdicts, chosen) = registry.explain(&p, &Device::Cpu, &config);
    println!("explain {p}:");
    for (name, verdict) in &verdicts {
        match verdict {
            Verdict::Chosen => println!("  {name}: chosen"),
            Verdict::Eligible => println!("  {name}: eligible"),
            Verdict::Rejected(reasons) => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                println!("  {name}: rejected ({})", why.join("; "))
            }
        }
    }
    println!("  -> {}", chosen?);

    // Host tensors: random inputs, an output poisoned with NaN so a skipped
    // element cannot go unnoticed.
    let q = Tensor::random(p.q_shape(), p.dtype, 1)?;
    let k = Tensor::random(p.kv_shape(), p.dtype, 2)?;
    let v = Tensor::random(p.kv_shape(), p.dtype, 3)?;
    let selection = registry.select(&p, &Device::Cpu, &config)?;
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu)?;
    selection.backend.forward(&p, &q, &k, &v, &mut out)?;
    let host = |t: &Tensor| t.host().cloned().ok_or("host tensor");
    let report = against_reference(&p, (&host(&q)?, &host(&k)?, &host(&v)?), &out.download()?, &|_, _| {});
    println!("{} on the CPU: {}", selection.backend.name(), report.summary());

    // Device tensors: the same call on a GPU, auto-selected, when one exists.
    match Device::gpu(0) {
        Ok(gpu) => {
            let auto = AttentionConfig { backend: Some(BackendChoice::Auto) };
            let selection = registry.select(&p, &gpu, &auto)?;
            let (dq, dk, dv) = (q.to_device(&gpu)?, k.to_device(&gpu)?, v.to_device(&gpu)?);
            let mut dout = Tensor::nan(p.out_shape(), p.dtype, &gpu)?;
            selection.backend.forward(&p, &dq, &dk, &dv, &mut dout)?;
            let report = against_reference(&p, (&host(&q)?, &host(&k)?, &host(&v)?), &dout.download()?, &|_, _| {});
            println!("{} on {}: {}", selection.backend.name(), gpu.label(), report.summary());
        }
        Err(why) => println!("no GPU run: {why}"),
    }
    Ok(())
}
