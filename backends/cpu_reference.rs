//! `cpu-reference`: plain loops with f64 accumulation. Supports every mask,
//! head ratio, head_dim and dtype; it is the oracle every other backend is
//! tested against, not a fast path.

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::Capabilities;
use crate::problem::{AttentionProblem, TensorRole};
use crate::tensor::{HostData, Layout};

pub struct CpuReference;

inventory::submit! { BackendRegistration { create: || Box::new(CpuReference) } }

impl AttentionBackend for CpuReference {
    fn name(&self) -> &'static str {
        "cpu-reference"
    }

    fn priority(&self) -> i32 {
        0
    }

    fn description(&self) -> &'static str {
        "naive loops, f64 accumulation; the test oracle"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::cpu_unlimited("one row of seq_kv f64 scores")
    }

    fn run(&self, mut call: CheckedCall<'_>) -> Result<(), BackendError> {
        let p = call.problem();
        let (q, k, v) = (call.q(), call.k(), call.v());
        let inputs = (q.host(), k.host(), v.host());
        let (Some(qd), Some(kd), Some(vd)) = inputs else {
            return Err(BackendError::Internal { backend: self.name(), what: "a checked CPU call holds a GPU tensor" });
        };
        let views = Views { q: *q.layout(), k: *k.layout(), v: *v.layout() };
        let result = reference_attention_strided(p, (qd, kd, vd), &views);
        let out = call.out();
        let layout = *out.layout();
        let Some(host) = out.host_mut() else {
            return Err(BackendError::Internal { backend: self.name(), what: "a checked CPU call holds a GPU tensor" });
        };
        let d = p.head_dim;
        for (row, values) in result.chunks_exact(d).enumerate() {
            let h = row % p.num_q_heads;
            let s = (row / p.num_q_heads) % p.seq_q;
            let b = row / (p.num_q_heads * p.seq_q);
            let at = layout.row(b, s, h);
            for (x, &value) in values.iter().enumerate() {
                host.set_f32(at + x, value as f32);
            }
        }
        Ok(())
    }
}

/// Layouts of q, k and v for the strided reference.
struct Views {
    q: Layout,
    k: Layout,
    v: Layout,
}

/// Attention in f64, without rounding the result to the problem's dtype.
/// Inputs are contiguous `[batch, seq, heads, head_dim]` in their own dtype
/// and widened exactly; the result is contiguous like `out`.
pub fn reference_attention(p: &AttentionProblem, q: &HostData, k: &HostData, v: &HostData) -> Vec<f64> {
    let views = Views { q: p.layout_of(TensorRole::Q), k: p.layout_of(TensorRole::K), v: p.layout_of(TensorRole::V) };
    reference_attention_strided(p, (q, k, v), &views)
}

fn reference_attention_strided(
    p: &AttentionProblem,
    (q, k, v): (&HostData, &HostData, &HostData),
    views: &Views,
) -> Vec<f64> {
    let (d, hq) = (p.head_dim, p.num_q_heads);
    let group = p.group_size();
    let scale = p.effective_scale() as f64;
    let softcap = p.softcap.map(|c| c as f64);
    let mut out = vec![0.0f64; p.batch * p.seq_q * hq * d];
    let mut scores = vec![0.0f64; p.seq_kv];
    for b in 0..p.batch {
        for h in 0..hq {
            let kvh = h / group;
            for i in 0..p.seq_q {
                let (lo, hi) = p.mask.key_range(i, p.seq_q, p.seq_kv);
                let q_off = views.q.row(b, i, h);
                let o_off = ((b * p.seq_q + i) * hq + h) * d;
                if lo >= hi {
                    continue; // fully masked row: zeros
                }
                let mut max = f64::NEG_INFINITY;
                for (j, score) in scores.iter_mut().enumerate().take(hi).skip(lo) {
                    let k_off = views.k.row(b, j, kvh);
                    let dot: f64 = (0..d).map(|x| q.get_f32(q_off + x) as f64 * k.get_f32(k_off + x) as f64).sum();
                    let mut s = dot * scale;
                    if let Some(c) = softcap {
                        s = c * (s / c).tanh();
                    }
                    *score = s;
                    max = max.max(s);
                }
                let mut sum = 0.0;
                for s in &mut scores[lo..hi] {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                for (j, score) in scores.iter().enumerate().take(hi).skip(lo) {
                    let w = score / sum;
                    let v_off = views.v.row(b, j, kvh);
                    for x in 0..d {
                        out[o_off + x] += w * v.get_f32(v_off + x) as f64;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::problem::Mask;

    #[test]
    fn single_key_returns_its_value() {
        let p = AttentionProblem::new(1, 1, 1, 1, 1, 2, DType::F32);
        let q = HostData::F32(vec![0.3, -0.2]);
        let k = HostData::F32(vec![0.5, 0.1]);
        let v = HostData::F32(vec![1.5, -2.0]);
        assert_eq!(reference_attention(&p, &q, &k, &v), vec![1.5, -2.0]);
    }

    #[test]
    fn two_keys_hand_computed() {
        // q·k0 = 1, q·k1 = 0, scale 1: weights e/(e+1), 1/(e+1).
        let mut p = AttentionProblem::new(1, 1, 2, 1, 1, 1, DType::F32);
        p.scale = Some(1.0);
        let out = reference_attention(
            &p,
            &HostData::F32(vec![1.0]),
            &HostData::F32(vec![1.0, 0.0]),
            &HostData::F32(vec![2.0, 4.0]),
        );
        let e = std::f64::consts::E;
        let expected = (2.0 * e + 4.0) / (e + 1.0);
        assert!((out[0] - expected).abs() < 1e-12, "{} vs {expected}", out[0]);
    }

    #[test]
    fn fully_masked_rows_are_zero() {
        let p = AttentionProblem::new(1, 3, 1, 1, 1, 1, DType::F32).with_mask(Mask::Causal);
        let out =
            reference_attention(&p, &HostData::F32(vec![1.0; 3]), &HostData::F32(vec![1.0]), &HostData::F32(vec![7.0]));
        assert_eq!(out, vec![0.0, 0.0, 7.0]);
    }

    /// The NaN/Inf rules of docs/semantics.md, worked by hand on the oracle
    /// that defines them.
    #[test]
    fn non_finite_inputs_follow_the_documented_rules() {
        let p = AttentionProblem::new(1, 2, 2, 1, 1, 2, DType::F32).with_mask(Mask::Causal);
        let run = |q: [f32; 4], k: [f32; 4], v: [f32; 4]| {
            reference_attention(&p, &HostData::F32(q.to_vec()), &HostData::F32(k.to_vec()), &HostData::F32(v.to_vec()))
        };
        let (q, k, v) = ([0.5, -0.25, 0.75, 0.1], [0.3, 0.2, -0.4, 0.9], [1.0, 2.0, 3.0, 4.0]);
        // NaN in query row 1: that row is NaN, row 0 untouched.
        let out = run([0.5, -0.25, f32::NAN, 0.1], k, v);
        assert!(out[..2].iter().all(|x| x.is_finite()) && out[2..].iter().all(|x| x.is_nan()), "{out:?}");
        // NaN in key 1, which row 0 cannot see (causal): row 0 stays finite.
        let out = run(q, [0.3, 0.2, f32::NAN, 0.9], v);
        assert!(out[..2].iter().all(|x| x.is_finite()) && out[2..].iter().all(|x| x.is_nan()), "{out:?}");
        // +Inf in value 0, dimension 1: only that dimension becomes Inf.
        let out = run(q, k, [1.0, f32::INFINITY, 3.0, 4.0]);
        assert_eq!((out[1], out[3]), (f64::INFINITY, f64::INFINITY));
        assert!(out[0].is_finite() && out[2].is_finite(), "{out:?}");
        // +Inf in a query: the logits are infinite, inf - inf is NaN ...
        let out = run([f32::INFINITY, -0.25, 0.75, 0.1], k, v);
        assert!(out[..2].iter().all(|x| x.is_nan()), "{out:?}");
        // ... unless a soft-cap maps them to ±cap first: then the row is finite.
        let mut capped = p.clone();
        capped.softcap = Some(4.0);
        let out = reference_attention(
            &capped,
            &HostData::F32(vec![f32::INFINITY, -0.25, 0.75, 0.1]),
            &HostData::F32(k.to_vec()),
            &HostData::F32(v.to_vec()),
        );
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        // Huge finite logits: the row is the value of the largest one.
        let out = run([1e30, 0.0, 0.75, 0.1], k, v);
        assert_eq!(&out[..2], &[1.0, 2.0]);
    }
}
