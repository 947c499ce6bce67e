//! Strided views: Q in PyTorch's `[b, h, s, d]` order, K/V as a prefix of a
//! KV cache starting past its first positions, out with padded heads; every
//! ISA and dtype against cpu-reference on the same views. Padding elements
//! of the output must stay untouched.

use super::*;
use crate::backends::cpu_reference::CpuReference;
use crate::problem::TensorRole;
use crate::tensor::Layout;

#[test]
fn strided_views_match_the_reference_and_leave_padding_alone() {
    let (batch, sq, skv, cap, hq, hkv, d, pad) = (2, 70, 90, 100, 4, 2, 24, 8);
    let first = 3; // the views start at cache position 3
    for dtype in DType::ALL {
        for mask in [Mask::Causal, Mask::SlidingWindow { left: 30, right: 4 }] {
            let mut p = AttentionProblem::new(batch, sq, skv, hq, hkv, d, dtype).with_mask(mask);
            let q_strides = [hq * sq * d, d, sq * d];
            let kv_strides = [cap * hkv * d, hkv * d, d];
            let out_strides = [sq * hq * (d + pad), hq * (d + pad), d + pad];
            p.strides.set(TensorRole::Q, Some(q_strides));
            p.strides.set(TensorRole::K, Some(kv_strides));
            p.strides.set(TensorRole::V, Some(kv_strides));
            p.strides.set(TensorRole::Out, Some(out_strides));
            let q = Tensor::random([batch, hq, sq, d], dtype, 1).unwrap();
            let k = Tensor::random([batch, cap, hkv, d], dtype, 2).unwrap();
            let v = Tensor::random([batch, cap, hkv, d], dtype, 3).unwrap();
            let q_layout = Layout { shape: p.q_shape(), strides: q_strides, offset: 0 };
            let kv_layout = Layout { shape: p.kv_shape(), strides: kv_strides, offset: first * hkv * d };
            let out_layout = Layout { shape: p.out_shape(), strides: out_strides, offset: 0 };
            let out_storage = [batch, sq, hq, d + pad];
            let views = || {
                (
                    q.strided_view(q_layout).unwrap(),
                    k.strided_view(kv_layout).unwrap(),
                    v.strided_view(kv_layout).unwrap(),
                )
            };
            let run = |backend: &dyn AttentionBackend| {
                let mut out = Tensor::nan(out_storage, dtype, &Device::Cpu).unwrap();
                let (qv, kv, vv) = views();
                backend.forward(&p, qv, kv, vv, out.strided_view_mut(out_layout).unwrap()).unwrap();
                out.to_f32_vec().unwrap()
            };
            let expected = run(&CpuReference);
            let tol = dtype.tolerance();
            for backend in instances() {
                let got = run(&backend);
                for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                    let ok = if i % (d + pad) >= d { g.is_nan() } else { tol.accepts(g as f64, e as f64) };
                    assert!(ok, "{p} {backend:?}: storage element {i}: got {g}, reference {e}");
                }
            }
        }
    }
}
