//! Times `flash-decode` on decode shapes (seq_q = 1, GQA 32/8, head_dim
//! 128) with K/V contiguous, in a strided cache (capacity 2 × length, read
//! in place), in a paged pool (block size 16, blocks shuffled) and, with
//! `--layout headmajor`, stored `[batch, kv_heads, len, head_dim]` (each
//! head's keys contiguous, torch's layout) and read through strides; prints
//! one JSON object per line for `scripts/compare_decode.py`.
//!
//! Timing: `--calls` back-to-back forwards between two device events (so
//! launch latency overlaps), median of `--repeats`. K/V come in enough
//! copies (at least 256 MiB together) that consecutive calls never find
//! their K/V in the 50 MB L2: the bandwidth is HBM's. `host_us` is the
//! host's time to queue one call (median over the repeats): when it comes
//! near `ms`, the device waits for the host.
//!
//! `cargo run --release --example bench_decode -- --shape 16,4096 --dtype bf16 [--layout contiguous,paged16]`

use rocmforge::backend::PagedKvRefs;
use rocmforge::tensor::SplitMix64;
use rocmforge::{
    AttentionBackend, AttentionProblem, DType, Device, IndexTensor, Layout, Mask, PagedKv, Registry, Tensor,
};

const HQ: usize = 32;
const HKV: usize = 8;
const D: usize = 128;
const MIN_BYTES: usize = 256 << 20;
const LAYOUTS: [&str; 4] = ["contiguous", "strided", "paged16", "headmajor"];

struct Args {
    shapes: Vec<(usize, usize)>,
    dtypes: Vec<DType>,
    calls: usize,
    repeats: usize,
    /// Layouts to time (default: contiguous, strided, paged16).
    layouts: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { shapes: Vec::new(), dtypes: Vec::new(), calls: 50, repeats: 7, layouts: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--shape" => {
                let (b, l) = value.split_once(',').ok_or("--shape B,L")?;
                args.shapes.push((b.parse().map_err(|_| "batch")?, l.parse().map_err(|_| "length")?));
            }
            "--dtype" => {
                for d in value.split(',') {
                    args.dtypes.push(d.parse().map_err(|e| format!("{e}"))?);
                }
            }
            "--calls" => args.calls = value.parse().map_err(|_| "--calls N")?,
            "--repeats" => args.repeats = value.parse().map_err(|_| "--repeats N")?,
            "--layout" => args.layouts.extend(value.split(',').map(String::from)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.shapes.is_empty() {
        args.shapes = vec![(16, 4096), (64, 2048), (1, 8192)];
    }
    if args.dtypes.is_empty() {
        args.dtypes = vec![DType::BF16, DType::F32];
    }
    if args.layouts.is_empty() {
        args.layouts = ["contiguous", "strided", "paged16"].map(String::from).to_vec();
    }
    for l in &args.layouts {
        if !LAYOUTS.contains(&l.as_str()) {
            return Err(format!("unknown layout {l} (one of {LAYOUTS:?})"));
        }
    }
    Ok(args)
}

/// One way of holding K/V: the problem, `copies` K/V pairs and, when paged,
/// the block tables and lengths.
struct Layouts {
    problem: AttentionProblem,
    kv: Vec<(Tensor, Tensor)>,
    /// (view layout, for the strided cache)
    view: Option<Layout>,
    paged: Option<(IndexTensor, IndexTensor)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Milliseconds per call on the device and microseconds per call on the
/// host (queueing only): `calls` forwards cycling through the K/V copies.
fn time(
    b: &dyn AttentionBackend,
    l: &Layouts,
    q: &Tensor,
    out: &mut Tensor,
    args: &Args,
) -> Result<(f64, f64), String> {
    let Device::Gpu(gpu) = q.device() else { return Err("not on a GPU".into()) };
    let p = &l.problem;
    let run = |i: usize, out: &mut Tensor| -> Result<(), String> {
        let (k, v) = &l.kv[i % l.kv.len()];
        let r = match (&l.view, &l.paged) {
            (Some(layout), _) => {
                b.forward(p, q, k.strided_view(*layout).unwrap(), v.strided_view(*layout).unwrap(), out)
            }
            (None, Some((table, lens))) => {
                b.forward_paged(p, q, k, v, PagedKvRefs { block_table: table, seq_lens: lens }, out)
            }
            (None, None) => b.forward(p, q, k, v, out),
        };
        r.map_err(|e| e.to_string())
    };
    for i in 0..l.kv.len().max(3) {
        run(i, out)?;
    }
    let (start, end) = (gpu.event().map_err(|e| e.to_string())?, gpu.event().map_err(|e| e.to_string())?);
    let (mut times, mut host) = (Vec::new(), Vec::new());
    for _ in 0..args.repeats {
        start.record().map_err(|e| e.to_string())?;
        let t0 = std::time::Instant::now();
        for i in 0..args.calls {
            run(i, out)?;
        }
        host.push(t0.elapsed().as_secs_f64() * 1e6 / args.calls as f64);
        end.record().map_err(|e| e.to_string())?;
        times.push(start.elapsed_ms(&end).map_err(|e| e.to_string())? as f64 / args.calls as f64);
    }
    Ok((median(times), median(host)))
}

fn kv_tensor(shape: [usize; 4], dtype: DType, seed: u64, device: &Device) -> Tensor {
    Tensor::random(shape, dtype, seed).unwrap().to_device(device).unwrap()
}

fn layouts(b: usize, len: usize, dtype: DType, device: &Device, wanted: &[String]) -> Vec<(&'static str, Layouts)> {
    let want = |name: &str| wanted.iter().any(|w| w == name);
    let base = AttentionProblem::new(b, 1, len, HQ, HKV, D, dtype).with_mask(Mask::Causal);
    let bytes = 2 * b * len * HKV * D * dtype.size_in_bytes();
    let copies = MIN_BYTES.div_ceil(bytes).clamp(1, 16);
    let dense = base.kv_shape();
    let mut out = Vec::new();
    if want("contiguous") {
        let kv = (0..copies)
            .map(|c| (kv_tensor(dense, dtype, 10 + c as u64, device), kv_tensor(dense, dtype, 50 + c as u64, device)));
        out.push(("contiguous", Layouts { problem: base.clone(), kv: kv.collect(), view: None, paged: None }));
    }
    // A KV cache of capacity 2 × len, read in place.
    if want("strided") {
        let cap = [b, 2 * len, HKV, D];
        out.push((
            "strided",
            strided_layout(&base, cap, [2 * len * HKV * D, HKV * D, D], copies.div_ceil(2), 90, device),
        ));
    }
    // Each head's keys contiguous ([b, kv_heads, len, d] in memory).
    if want("headmajor") {
        let mem = [b, HKV, len, D];
        out.push(("headmajor", strided_layout(&base, mem, [HKV * len * D, D, len * D], copies, 250, device)));
    }
    if !want("paged16") {
        return out;
    }
    // A paged pool of block size 16, blocks handed out in a shuffled order.
    let bs = 16;
    let width = len.div_ceil(bs);
    let num_blocks = b * width;
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    let mut rng = SplitMix64(7);
    for i in (1..ids.len()).rev() {
        ids.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let paged = base.clone().with_paged(PagedKv { block_size: bs, num_blocks, table_width: width });
    let pool = paged.kv_shape();
    let table = IndexTensor::from_host(ids).to_device(device).unwrap();
    let lens = IndexTensor::from_host(vec![len as i32; b]).to_device(device).unwrap();
    let kv = (0..copies)
        .map(|c| (kv_tensor(pool, dtype, 170 + c as u64, device), kv_tensor(pool, dtype, 210 + c as u64, device)));
    out.push(("paged16", Layouts { problem: paged, kv: kv.collect(), view: None, paged: Some((table, lens)) }));
    out
}

/// `copies` K/V pairs of memory shape `mem`, read as `base`'s K/V through
/// `strides`.
fn strided_layout(
    base: &AttentionProblem,
    mem: [usize; 4],
    strides: [usize; 3],
    copies: usize,
    seed: u64,
    device: &Device,
) -> Layouts {
    let mut p = base.clone();
    p.strides.k = Some(strides);
    p.strides.v = Some(strides);
    let view = Layout { shape: base.kv_shape(), strides, offset: 0 };
    let kv = (0..copies as u64)
        .map(|c| (kv_tensor(mem, base.dtype, seed + c, device), kv_tensor(mem, base.dtype, seed + 40 + c, device)));
    Layouts { problem: p, kv: kv.collect(), view: Some(view), paged: None }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let device = Device::gpu(0)?;
    let backend = Registry::global()?.get("flash-decode").ok_or("flash-decode is not registered")?;
    for &dtype in &args.dtypes {
        for &(b, len) in &args.shapes {
            let q = Tensor::random([b, 1, HQ, D], dtype, 1)?.to_device(&device)?;
            let mut out = Tensor::nan([b, 1, HQ, D], dtype, &device)?;
            let kv_bytes = 2 * b * len * HKV * D * dtype.size_in_bytes();
            for (name, l) in layouts(b, len, dtype, &device, &args.layouts) {
                let (ms, host_us) = time(backend, &l, &q, &mut out, &args)?;
                let nan = out.to_f32_vec()?.iter().filter(|x| !x.is_finite()).count();
                println!(
                    "{{\"backend\": \"flash-decode\", \"layout\": \"{name}\", \"dtype\": \"{dtype}\", \"batch\": {b}, \
                     \"seq_kv\": {len}, \"heads\": \"{HQ}/{HKV}\", \"head_dim\": {D}, \"ms\": {ms:.5}, \
                     \"host_us\": {host_us:.2}, \"kv_bytes\": {kv_bytes}, \"gbps\": {:.1}, \"copies\": {}, \"nonfinite_out\": {nan}}}",
                    kv_bytes as f64 / (ms * 1e-3) / 1e9,
                    l.kv.len()
                );
            }
        }
    }
    Ok(())
}
