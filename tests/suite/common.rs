//! Shared fixtures for the integration tests: one device fixture (the same
//! for every test and every backend), random inputs, the run-and-compare
//! harness against the f64 oracle, and registry iteration.
//!
//! Every test binary includes this module but uses a different part of it.
#![allow(dead_code)]

use rocmforge::backends::cpu_reference::reference_attention;
use rocmforge::dtype::Tolerance;
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, DeviceKind, HostData, Registry, Tensor};

/// Set to `1` on GPU machines: a missing GPU then fails the test instead of
/// skipping it, so a GPU run can never pass by skipping.
pub const REQUIRE_GPU_ENV: &str = "ROCMFORGE_REQUIRE_GPU";

pub fn require_gpu() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v.trim() == "1")
}

/// The running test's name; libtest names each test's thread after it.
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("<unnamed test>").to_string()
}

/// The device a backend of `kind` runs on in tests: the CPU, or the first GPU.
/// Without a GPU this prints `SKIP: <test>: no GPU (<reason>)` and returns
/// `None`, unless `ROCMFORGE_REQUIRE_GPU=1`, where it panics with the reason.
pub fn device_for(kind: DeviceKind) -> Option<Device> {
    match kind {
        DeviceKind::Cpu => Some(Device::Cpu),
        DeviceKind::Gpu => {
            let reason = match rocmforge::device::gpus() {
                Ok(list) => match list.first() {
                    Some(gpu) => return Some(Device::Gpu(gpu.clone())),
                    None => "the driver reports no devices".to_string(),
                },
                Err(e) => e.to_string(),
            };
            if require_gpu() {
                panic!("{}: {REQUIRE_GPU_ENV}=1 but there is no GPU: {reason}", test_name());
            }
            println!("SKIP: {}: no GPU ({reason})", test_name());
            None
        }
    }
}

/// Every registered backend paired with the device it runs on. Backends whose
/// device is missing are skipped (with the `SKIP` line from `device_for`).
/// Under `ROCMFORGE_REQUIRE_GPU=1` there must be at least one GPU backend, so a
/// GPU run cannot pass by having nothing to test.
pub fn backend_targets() -> Vec<(&'static dyn AttentionBackend, Device)> {
    let registry = Registry::global().expect("the global registry builds");
    if require_gpu() {
        assert!(
            registry.backends().any(|b| b.capabilities().device == DeviceKind::Gpu),
            "{}: {REQUIRE_GPU_ENV}=1 but no GPU backend is registered (registered: {:?})",
            test_name(),
            registry.names()
        );
    }
    registry.backends().filter_map(|b| device_for(b.capabilities().device).map(|d| (b, d))).collect()
}

/// Host inputs for one problem, kept on the host so the oracle and every
/// backend see exactly the same (dtype-rounded) values.
pub struct Inputs {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

impl Inputs {
    /// Uniform [-1, 1) values, a different seed for each of q, k and v.
    pub fn random(p: &AttentionProblem, seed: u64) -> Inputs {
        let seed = seed.wrapping_mul(3);
        let q = Tensor::random(p.q_shape(), p.dtype, seed).expect("q shape");
        let k = Tensor::random(p.kv_shape(), p.dtype, seed.wrapping_add(1)).expect("k shape");
        let v = Tensor::random(p.kv_shape(), p.dtype, seed.wrapping_add(2)).expect("v shape");
        let inputs = Inputs { q, k, v };
        inputs.assert_not_trivial();
        inputs
    }

    /// Inputs from given host tensors (checked not trivial).
    pub fn from_tensors(q: Tensor, k: Tensor, v: Tensor) -> Inputs {
        let inputs = Inputs { q, k, v };
        inputs.assert_not_trivial();
        inputs
    }

    /// Multiplies q and k by `factor`, so the logits grow by `factor²`.
    pub fn with_qk_scaled(self, factor: f32) -> Inputs {
        let scale = |t: &Tensor| {
            let values: Vec<f32> = t.to_f32_vec().expect("host tensor").iter().map(|x| x * factor).collect();
            Tensor::from_f32(t.shape(), t.dtype(), &values).expect("same shape")
        };
        Inputs { q: scale(&self.q), k: scale(&self.k), v: self.v }
    }

    pub fn host(&self) -> (&HostData, &HostData, &HostData) {
        fn h(t: &Tensor) -> &HostData {
            t.host().expect("inputs are built on the host")
        }
        (h(&self.q), h(&self.k), h(&self.v))
    }

    /// Tests never run on zeros or on identical q/k/v: such inputs hide
    /// indexing and transposition bugs.
    fn assert_not_trivial(&self) {
        let (q, k, v) = (self.q.to_f32_vec().unwrap(), self.k.to_f32_vec().unwrap(), self.v.to_f32_vec().unwrap());
        assert!(q.iter().any(|&x| x != 0.0) && k.iter().any(|&x| x != 0.0) && v.iter().any(|&x| x != 0.0));
        if q.len() == k.len() && q.len() > 1 {
            assert_ne!(q, k, "q and k must come from different seeds");
        }
        if k.len() > 1 {
            assert_ne!(k, v, "k and v must come from different seeds");
        }
    }
}

/// The oracle: f64 attention over the same host inputs, not rounded.
pub fn reference(p: &AttentionProblem, inputs: &Inputs) -> Vec<f64> {
    let (q, k, v) = inputs.host();
    reference_attention(p, q, k, v)
}

/// Runs `backend` on `device`: uploads the inputs, poisons the output with
/// NaN on the device, runs `forward` and downloads the output as f32.
pub fn run_backend(
    backend: &dyn AttentionBackend,
    p: &AttentionProblem,
    inputs: &Inputs,
    device: &Device,
) -> Result<HostData, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("backend {} on {p}: {what}: {e}", backend.name());
    let up = |t: &Tensor| t.to_device(device).map_err(|e| fail("upload", &e));
    let (q, k, v) = (up(&inputs.q)?, up(&inputs.k)?, up(&inputs.v)?);
    let mut out = Tensor::nan(p.out_shape(), p.dtype, device).map_err(|e| fail("alloc output", &e))?;
    backend.forward(p, &q, &k, &v, &mut out).map_err(|e| fail("forward", &e))?;
    if out.shape() != p.out_shape() || out.dtype() != p.dtype {
        return Err(fail("output", &format!("became {:?} {}", out.shape(), out.dtype())));
    }
    out.download().map_err(|e| fail("download", &e))
}

/// Element-wise comparison with the problem dtype's tolerance. The error names
/// the backend, the problem, the first bad index (as [b, s, h, d]), got,
/// expected, the number of bad elements and the max error. NaN never passes.
pub fn compare(backend: &str, p: &AttentionProblem, got: &[f32], expected: &[f64]) -> Result<(), String> {
    compare_with(backend, p, got, expected, p.dtype.tolerance())
}

/// `compare` with an explicit tolerance, for tests whose inputs are
/// deliberately ill-conditioned.
pub fn compare_with(
    backend: &str,
    p: &AttentionProblem,
    got: &[f32],
    expected: &[f64],
    tol: Tolerance,
) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!("backend {backend} on {p}: {} output elements, expected {}", got.len(), expected.len()));
    }
    let mut first_bad = None;
    let mut bad = 0usize;
    let mut max_err = 0.0f64;
    let mut nans = 0usize;
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let err = (g as f64 - e).abs();
        if err.is_nan() {
            nans += 1;
        } else {
            max_err = max_err.max(err);
        }
        if !tol.accepts(g as f64, e) {
            bad += 1;
            first_bad.get_or_insert(i);
        }
    }
    match first_bad {
        None => Ok(()),
        Some(i) => Err(format!(
            "backend {backend} on {p}: {bad} of {} elements out of tolerance (abs {} + rel {}); \
             first at index {i} {:?}: got {}, expected {}; max abs error {max_err} ({nans} NaN)",
            got.len(),
            tol.abs,
            tol.rel,
            unflatten(p, i),
            got[i],
            expected[i],
        )),
    }
}

/// `[batch, seq, head, dim]` of a flat output index.
pub fn unflatten(p: &AttentionProblem, i: usize) -> [usize; 4] {
    let d = i % p.head_dim;
    let h = (i / p.head_dim) % p.num_q_heads;
    let s = (i / (p.head_dim * p.num_q_heads)) % p.seq_q;
    let b = i / (p.head_dim * p.num_q_heads * p.seq_q);
    [b, s, h, d]
}

/// Runs `backend` and compares it with the oracle computed from `inputs`.
pub fn check_backend(
    backend: &dyn AttentionBackend,
    p: &AttentionProblem,
    inputs: &Inputs,
    device: &Device,
    expected: &[f64],
) -> Result<HostData, String> {
    let out = run_backend(backend, p, inputs, device)?;
    compare(backend.name(), p, &out.to_f32(), expected)?;
    Ok(out)
}

/// Runs `backend` on `device` with inputs from `seed` and panics with the
/// full report unless every element is within tolerance of the oracle.
pub fn assert_matches_reference(backend: &dyn AttentionBackend, p: &AttentionProblem, device: &Device, seed: u64) {
    let inputs = Inputs::random(p, seed);
    let expected = reference(p, &inputs);
    if let Err(e) = check_backend(backend, p, &inputs, device, &expected) {
        panic!("{e}");
    }
}

/// For fixed-case tests: the backends (with their devices) that accept `p`.
/// Backends that reject it are listed on stdout, so a reader sees what ran.
pub fn accepting<'a>(
    targets: &'a [(&'static dyn AttentionBackend, Device)],
    p: &AttentionProblem,
) -> Vec<(&'static dyn AttentionBackend, &'a Device)> {
    targets
        .iter()
        .filter_map(|(b, d)| {
            let reasons = Registry::reasons(*b, p, d);
            if reasons.is_empty() {
                Some((*b, d))
            } else {
                let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                println!("note: {}: {} does not take {p}: {}", test_name(), b.name(), reasons.join("; "));
                None
            }
        })
        .collect()
}

pub const ALL_DTYPES: [DType; 3] = DType::ALL;
