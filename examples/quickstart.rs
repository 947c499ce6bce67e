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
use rocmforge::{AttentionConfig, AttentionProblem, BackendChoice, DType, DeviceChoice, Mask, Registry, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Tensors are [batch, seq, heads, head_dim]: 8 query heads sharing 2 KV heads.
    let p = AttentionProblem::new(2, 64, 64, 8, 2, 64, DType::F32).with_mask(Mask::Causal);
    p.validate()?;
    let registry = Registry::global()?;
    let config = AttentionConfig::with_backend(BackendChoice::parse("cpu-flash,cpu-reference")?);

    // The library picks the device and the backend, and says why.
    let explanation = registry.explain_choice(&p, &config)?;
    println!("explain {p} on {}:", explanation.device.label());
    for (name, verdict) in &explanation.verdicts {
        match verdict {
            Verdict::Chosen => println!("  {name}: chosen"),
            Verdict::Eligible => println!("  {name}: eligible"),
            Verdict::Rejected(reasons) => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                println!("  {name}: rejected ({})", why.join("; "))
            }
        }
    }

    // Host tensors: random inputs, an output poisoned with NaN so a skipped
    // element cannot go unnoticed.
    let q = Tensor::random(p.q_shape(), p.dtype, 1)?;
    let k = Tensor::random(p.kv_shape(), p.dtype, 2)?;
    let v = Tensor::random(p.kv_shape(), p.dtype, 3)?;
    let choice = registry.choose(&p, &config)?;
    println!("  -> {} on {} ({})", choice.backend.name(), choice.device.label(), choice.reason);
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &choice.device)?;
    choice.backend.forward(&p, &q, &k, &v, &mut out)?;
    let host = |t: &Tensor| t.download();
    let (hq, hk, hv) = (host(&q)?, host(&k)?, host(&v)?);
    let report = against_reference(&p, (&hq, &hk, &hv), &out.download()?, &|_, _| {});
    println!("{} on the CPU: {}", choice.backend.name(), report.summary());

    // Device tensors: the same call on GPU 0, auto-selected there, when a GPU exists.
    let on_gpu = AttentionConfig { device: DeviceChoice::Gpu(0), ..AttentionConfig::with_backend(BackendChoice::Auto) };
    match registry.choose(&p, &on_gpu) {
        Ok(choice) => {
            let gpu = &choice.device;
            let (dq, dk, dv) = (q.to_device(gpu)?, k.to_device(gpu)?, v.to_device(gpu)?);
            let mut dout = Tensor::nan(p.out_shape(), p.dtype, gpu)?;
            choice.backend.forward(&p, &dq, &dk, &dv, &mut dout)?;
            let report = against_reference(&p, (&hq, &hk, &hv), &dout.download()?, &|_, _| {});
            println!("{} on {}: {}", choice.backend.name(), gpu.label(), report.summary());
        }
        Err(why) => println!("no GPU run: {why}"),
    }
    Ok(())
}
