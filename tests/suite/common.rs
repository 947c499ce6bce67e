//! Shared fixtures for the integration tests: the device fixture (the same
//! for every test and every backend), random inputs, the run-and-compare
//! harness against the f64 oracle, and registry iteration by device kind.
//!
//! GPU tests are `#[ignore = "needs a GPU"]`, so `cargo test` lists them as
//! ignored; the GPU bundle runs them with `--include-ignored`. A GPU test
//! that runs and finds no GPU fails: it was asked for explicitly.
#![allow(dead_code)]

use rocmforge::backends::cpu_reference::reference_attention;
use rocmforge::compare::Report;
use rocmforge::dtype::Tolerance;
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, DeviceKind, HostData, Registry, Tensor};

/// Set on GPU machines: a missing GPU then fails the suite's availability
/// check instead of being reported as "GPU tests ignored".
pub const REQUIRE_GPU_ENV: &str = "ROCMFORGE_REQUIRE_GPU";

/// The value of `ROCMFORGE_REQUIRE_GPU` (`rocmforge::env_flag`: 1/true/
/// yes/on or 0/false/no/off); anything else is a mistake that must not
/// silently mean "no", so it panics naming the accepted spellings.
pub fn require_gpu() -> bool {
    rocmforge::env_flag::env_flag(REQUIRE_GPU_ENV).unwrap_or_else(|e| panic!("{e}"))
}

/// The running test's name; libtest names each test's thread after it.
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("<unnamed test>").to_string()
}

/// The first GPU, or why there is none.
pub fn first_gpu() -> Result<Device, String> {
    match rocmforge::device::gpus() {
        Ok(list) => list.first().map(|g| Device::Gpu(g.clone())).ok_or("the driver reports no devices".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The device a backend of `kind` runs on in tests: the CPU, or the first
/// GPU. Only GPU tests (all `#[ignore = "needs a GPU"]`) ask for a GPU, so
/// a missing one is a failure that says why. Always `Some`: the `Option`
/// keeps `let Some(d) = device_for(kind) else { return }` call sites
/// compiling, but a GPU test can no longer pass by returning early.
pub fn device_for(kind: DeviceKind) -> Option<Device> {
    Some(gpu_or_cpu(kind))
}

fn gpu_or_cpu(kind: DeviceKind) -> Device {
    match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Gpu => {
            first_gpu().unwrap_or_else(|why| panic!("{}: needs a GPU, and there is none: {why}", test_name()))
        }
    }
}

/// Every registered backend of `kind`, paired with the device it runs on.
/// A GPU test with no GPU backend registered fails: it would test nothing.
pub fn backend_targets(kind: DeviceKind) -> Vec<(&'static dyn AttentionBackend, Device)> {
    let registry = Registry::global().expect("the global registry builds");
    let of_kind: Vec<_> = registry.backends().filter(|b| b.capabilities().device == kind).collect();
    assert!(
        !of_kind.is_empty(),
        "{}: no {kind} backend is registered (registered: {:?})",
        test_name(),
        registry.names()
    );
    let device = gpu_or_cpu(kind);
    of_kind.into_iter().map(|b| (b, device.clone())).collect()
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
/// NaN on the device, runs `forward` and downloads the output.
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

/// Element-wise comparison through the library's one oracle comparison
/// (`rocmforge::compare`): the problem dtype's tolerance, NaN never passes
/// where a number was expected, NaN/Inf references follow docs/semantics.md.
pub fn check_output(backend: &str, p: &AttentionProblem, got: &[f32], expected: &[f64]) -> Result<Report, String> {
    check_output_with(backend, p, got, expected, p.dtype.tolerance())
}

/// `check_output` without the report, under the name older tests use.
pub fn compare(backend: &str, p: &AttentionProblem, got: &[f32], expected: &[f64]) -> Result<(), String> {
    check_output(backend, p, got, expected).map(|_| ())
}

/// `check_output` with an explicit tolerance, for deliberately
/// ill-conditioned inputs.
pub fn check_output_with(
    backend: &str,
    p: &AttentionProblem,
    got: &[f32],
    expected: &[f64],
    tol: Tolerance,
) -> Result<Report, String> {
    let report = rocmforge::compare::compare(p.dtype, tol, got, expected);
    match report.failure(backend, p) {
        Some(message) => Err(message),
        None => Ok(report),
    }
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
    check_output(backend.name(), p, &out.to_f32(), expected)?;
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

/// `[batch, seq, head, dim]` of a flat output index.
pub fn unflatten(p: &AttentionProblem, i: usize) -> [usize; 4] {
    rocmforge::compare::position(p, i)
}

pub const ALL_DTYPES: [DType; 3] = DType::ALL;

/// Runs the test function `$name(kind)` twice: on the CPU backends, and on
/// the GPU backends as a test ignored unless asked for ("needs a GPU").
macro_rules! cpu_and_gpu {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            #[serial_test::serial]
            fn cpu() {
                super::$name(rocmforge::DeviceKind::Cpu)
            }
            #[test]
            #[serial_test::serial]
            #[ignore = "needs a GPU"]
            fn gpu() {
                super::$name(rocmforge::DeviceKind::Gpu)
            }
        }
    )*};
}
pub(crate) use cpu_and_gpu;
