//! Running a backend repeatedly and timing it, for `run` and `bench`: wall
//! clock on the CPU, device events on a GPU. Inputs must already live on
//! `device`; the output is poisoned with NaN before the timed runs, so a
//! backend that skips an element cannot pass a check.

use super::inputs;
use super::CliError;
use rocmforge::device::Device;
use rocmforge::problem::AttentionProblem;
use rocmforge::tensor::{HostData, Storage, Tensor};
use rocmforge::AttentionBackend;
use std::time::Instant;

/// Upper bounds of `--warmup` and `--repeats`: far past any useful timing,
/// and small enough that the loop always ends.
pub const MAX_WARMUP: u32 = 1000;
pub const MAX_REPEATS: u32 = 1000;

/// A fresh output for `p` on `device`, every element NaN.
pub fn poisoned_output(p: &AttentionProblem, device: &Device) -> Result<Tensor, CliError> {
    match device {
        Device::Cpu => inputs::nan(p.out_shape(), p.dtype, "the output"),
        Device::Gpu(_) => Ok(Tensor::nan(p.out_shape(), p.dtype, device)?),
    }
}

/// Sets every element of `out` to NaN again, in place (a second output
/// buffer would show up in the device's peak memory).
fn poison(out: &mut Tensor) -> Result<(), CliError> {
    match out.storage_mut() {
        Storage::Host(HostData::F32(v)) => v.fill(f32::NAN),
        Storage::Host(HostData::F16(v)) => v.fill(half::f16::NAN),
        Storage::Host(HostData::BF16(v)) => v.fill(half::bf16::NAN),
        // All-ones bits are NaN in f32, f16 and bf16 alike.
        Storage::Gpu(buffer) => buffer.fill_bytes(0xFF)?,
    }
    Ok(())
}

/// Runs `warmup` untimed and `repeats` timed forwards; returns the output
/// of the last run (still on `device`) and the times in milliseconds.
pub fn time_forward(
    backend: &dyn AttentionBackend,
    p: &AttentionProblem,
    device: &Device,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    warmup: u32,
    repeats: u32,
) -> Result<(Tensor, Vec<f64>), CliError> {
    let mut out = poisoned_output(p, device)?;
    for _ in 0..warmup.min(MAX_WARMUP) {
        backend.forward(p, q, k, v, &mut out)?;
    }
    poison(&mut out)?;
    let repeats = repeats.clamp(1, MAX_REPEATS);
    let mut times = Vec::with_capacity(repeats as usize);
    match device {
        Device::Cpu => {
            for _ in 0..repeats {
                let t = Instant::now();
                backend.forward(p, q, k, v, &mut out)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Device::Gpu(gpu) => {
            let (start, end) = (gpu.event()?, gpu.event()?);
            for _ in 0..repeats {
                start.record()?;
                backend.forward(p, q, k, v, &mut out)?;
                end.record()?;
                times.push(start.elapsed_ms(&end)? as f64);
            }
        }
    }
    Ok((out, times))
}
