//! Criterion benchmarks over the backend registry.
//!
//! Groups:
//! - `backends`: every registered backend that accepts a shape, each on the
//!   device of its kind, so backends merged later join with no edits.
//! - `gpu_vs_cpu`: per shape, the best GPU backend next to the best CPU
//!   backend ("best" = what auto selection would pick on that device).
//!   Skipped, with a note, when there is no GPU.
//!
//! Throughput: criterion has no FLOP unit, so `Throughput::Elements` carries
//! `AttentionProblem::flops()` (4 * head_dim per unmasked (query, key) pair,
//! over batch and query heads; about half the dense count for causal). Read
//! "elem/s" in criterion's output as FLOP/s.
//!
//! Inputs are uploaded once, outside the timed loop. GPU backends
//! synchronize the device inside the timed closure, so the time is the
//! kernels' real time, not their launch time.
//!
//! Environment:
//! - `ROCMFORGE_BENCH_SHAPES="B,HQ,HKV,SQ,SKV,D[:MASK];..."` replaces the
//!   default shapes (the shape syntax of `rocmforge bench --shape`,
//!   `rocmforge::shape_syntax`), e.g. for GPU runs
//!   `"4,32,32,2048,2048,128;4,32,32,2048,2048,128:causal;1,32,8,1024,1024,128:causal"`.
//! - `ROCMFORGE_BENCH_DTYPE=f32|f16|bf16` (default f32).
//! - `ROCMFORGE_REQUIRE_GPU=1` (or true/yes/on) makes a missing GPU an error
//!   instead of a note.
//!
//! `cargo bench -- --test` runs every benchmark once (a smoke test);
//! `cargo bench -- gpu_vs_cpu` runs one group.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use rocmforge::shape_syntax::parse_list;
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, DeviceKind, Mask, Registry, Tensor};
use std::time::Duration;

/// Small enough to be bearable on a 2-core machine.
const DEFAULT_SHAPES: &str = "1,8,8,256,256,64;1,8,2,512,512,64:causal";

/// `cpu-reference` is the test oracle, not a fast path: above this many FLOPs
/// it would only make the run long.
const REFERENCE_MAX_FLOPS: f64 = 3e8;

fn dtype() -> DType {
    match std::env::var("ROCMFORGE_BENCH_DTYPE") {
        Ok(s) => s.parse().unwrap_or_else(|e| panic!("ROCMFORGE_BENCH_DTYPE: {e}")),
        Err(_) => DType::F32,
    }
}

fn shapes() -> Vec<AttentionProblem> {
    let specs = std::env::var("ROCMFORGE_BENCH_SHAPES").unwrap_or_else(|_| DEFAULT_SHAPES.to_string());
    let dtype = dtype();
    let specs = parse_list(&specs).unwrap_or_else(|e| panic!("ROCMFORGE_BENCH_SHAPES: {e}"));
    specs
        .iter()
        .map(|s| {
            let p = s.problem(dtype, Mask::None);
            p.validate().unwrap_or_else(|e| panic!("ROCMFORGE_BENCH_SHAPES: {s}: {e}"));
            p
        })
        .collect()
}

fn label(p: &AttentionProblem) -> String {
    format!(
        "b{}_hq{}_hkv{}_s{}_d{}_{}_{}",
        p.batch, p.num_q_heads, p.num_kv_heads, p.seq_q, p.head_dim, p.mask, p.dtype
    )
}

fn require_gpu() -> bool {
    rocmforge::env_flag::env_flag("ROCMFORGE_REQUIRE_GPU").unwrap_or_else(|e| panic!("{e}"))
}

/// The first GPU, or `None` with the reason printed once per call site.
fn gpu_device(context: &str) -> Option<Device> {
    match rocmforge::device::gpus() {
        Ok(list) if !list.is_empty() => Some(Device::Gpu(list[0].clone())),
        Ok(_) => no_gpu(context, "the driver reports no devices".to_string()),
        Err(e) => no_gpu(context, e.to_string()),
    }
}

fn no_gpu(context: &str, reason: String) -> Option<Device> {
    if require_gpu() {
        panic!("{context}: ROCMFORGE_REQUIRE_GPU=1 but there is no GPU: {reason}");
    }
    println!("note: {context}: no GPU ({reason}); GPU backends skipped");
    None
}

/// The device each kind of backend runs on in this process.
struct Devices {
    gpu: Option<Device>,
}

impl Devices {
    fn for_kind(&self, kind: DeviceKind) -> Option<&Device> {
        match kind {
            DeviceKind::Cpu => Some(&Device::Cpu),
            DeviceKind::Gpu => self.gpu.as_ref(),
        }
    }
}

fn registry() -> &'static Registry {
    Registry::global().unwrap_or_else(|e| panic!("registry: {e}"))
}

/// Whether `backend` is benchmarked on `p` at all.
fn takes(backend: &dyn AttentionBackend, p: &AttentionProblem, device: &Device) -> bool {
    Registry::reasons(backend, p, device).is_empty()
        && !(backend.name() == "cpu-reference" && p.flops() > REFERENCE_MAX_FLOPS)
}

/// What auto selection would pick on a device of `kind`, among the
/// benchmarked ones (registry order is priority order).
fn best(kind: DeviceKind, p: &AttentionProblem, devices: &Devices) -> Option<(&'static dyn AttentionBackend, Device)> {
    let device = devices.for_kind(kind)?;
    registry().backends().find(|b| b.capabilities().device == kind && takes(*b, p, device)).map(|b| (b, device.clone()))
}

/// Benchmarks one backend on one shape. Inputs and the output are allocated
/// on `device` once; one untimed run checks the call and warms caches (and
/// compiles kernels). GPU work is synchronized inside the timed closure.
fn bench_backend(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    backend: &dyn AttentionBackend,
    p: &AttentionProblem,
    device: &Device,
) {
    let upload = |shape, seed| {
        Tensor::random(shape, p.dtype, seed)
            .and_then(|t| t.to_device(device))
            .unwrap_or_else(|e| panic!("{}: inputs for {p}: {e}", backend.name()))
    };
    let (q, k, v) = (upload(p.q_shape(), 1), upload(p.kv_shape(), 2), upload(p.kv_shape(), 3));
    let mut out = Tensor::nan(p.out_shape(), p.dtype, device).unwrap_or_else(|e| panic!("output for {p}: {e}"));
    let sync = || {
        if let Device::Gpu(g) = device {
            g.synchronize().unwrap_or_else(|e| panic!("{}: synchronize: {e}", backend.name()));
        }
    };
    backend.forward(p, &q, &k, &v, &mut out).unwrap_or_else(|e| panic!("{} on {p}: {e}", backend.name()));
    sync();
    group.bench_function(id, |b| {
        b.iter(|| {
            backend.forward(p, &q, &k, &v, &mut out).unwrap_or_else(|e| panic!("{} on {p}: {e}", backend.name()));
            sync();
        })
    });
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
}

fn backends(c: &mut Criterion) {
    let devices = Devices { gpu: gpu_device("backends") };
    let mut group = c.benchmark_group("backends");
    configure(&mut group);
    for p in shapes() {
        group.throughput(Throughput::Elements(p.flops() as u64));
        for backend in registry().backends() {
            let Some(device) = devices.for_kind(backend.capabilities().device) else {
                continue;
            };
            if !takes(backend, &p, device) {
                continue;
            }
            bench_backend(&mut group, BenchmarkId::new(backend.name(), label(&p)), backend, &p, device);
        }
    }
    group.finish();
}

fn gpu_vs_cpu(c: &mut Criterion) {
    let devices = Devices { gpu: gpu_device("gpu_vs_cpu") };
    if devices.gpu.is_none() {
        println!("note: gpu_vs_cpu skipped: no GPU");
        return;
    }
    let mut group = c.benchmark_group("gpu_vs_cpu");
    configure(&mut group);
    for p in shapes() {
        let (gpu, cpu) = (best(DeviceKind::Gpu, &p, &devices), best(DeviceKind::Cpu, &p, &devices));
        let (Some((gpu, gpu_dev)), Some((cpu, cpu_dev))) = (gpu, cpu) else {
            println!("note: gpu_vs_cpu: {p}: no GPU backend or no CPU backend takes it; skipped");
            continue;
        };
        group.throughput(Throughput::Elements(p.flops() as u64));
        let id = |side: &str, b: &dyn AttentionBackend| BenchmarkId::new(format!("{side}:{}", b.name()), label(&p));
        bench_backend(&mut group, id("gpu", gpu), gpu, &p, &gpu_dev);
        bench_backend(&mut group, id("cpu", cpu), cpu, &p, &cpu_dev);
    }
    group.finish();
}

criterion_group!(benches, backends, gpu_vs_cpu);
criterion_main!(benches);
