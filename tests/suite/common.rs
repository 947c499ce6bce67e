//! Shared test fixture: one device per kind, and the comparison against the
//! f64 reference.

use rocmforge::backends::cpu_reference::reference_attention;
use rocmforge::{AttentionBackend, AttentionProblem, Device, DeviceKind, Tensor};

/// The device tests of `kind` run on. Without a GPU this prints SKIP and
/// returns None, unless ROCMFORGE_REQUIRE_GPU=1, where it fails.
pub fn device_for(kind: DeviceKind) -> Option<Device> {
    match kind {
        DeviceKind::Cpu => Some(Device::Cpu),
        DeviceKind::Gpu => match rocmforge::device::gpus() {
            Ok(list) if !list.is_empty() => Some(Device::Gpu(list[0].clone())),
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "no GPU listed".to_string(),
                };
                if std::env::var("ROCMFORGE_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("ROCMFORGE_REQUIRE_GPU=1 but {why}");
                }
                println!("SKIP: no GPU ({why})");
                None
            }
        },
    }
}

/// Runs `backend` on fresh random inputs (poisoned output) and compares
/// every element with the f64 reference under the dtype's tolerance.
pub fn assert_matches_reference(backend: &dyn AttentionBackend, p: &AttentionProblem, device: &Device, seed: u64) {
    let q = Tensor::random(p.q_shape(), p.dtype, seed).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, seed.wrapping_add(1)).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, seed.wrapping_add(2)).unwrap();
    let expected = reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
    let (dq, dk, dv) = (q.to_device(device).unwrap(), k.to_device(device).unwrap(), v.to_device(device).unwrap());
    let mut out = Tensor::nan(p.out_shape(), p.dtype, device).unwrap();
    backend.forward(p, &dq, &dk, &dv, &mut out).unwrap_or_else(|e| panic!("{} on {p}: {e}", backend.name()));
    let got = out.to_f32_vec().unwrap();
    let tol = p.dtype.tolerance();
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            tol.accepts(g as f64, e),
            "{} on {p}: element {i} is {g}, expected {e} (tolerance {tol:?})",
            backend.name()
        );
        let err = (g as f64 - e).abs();
        if err > worst.1 {
            worst = (i, err);
        }
    }
    assert_eq!(got.len(), expected.len());
}
