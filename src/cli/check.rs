//! Comparing an output with the f64 cpu-reference oracle.

use crate::backends::cpu_reference::reference_attention;
use crate::dtype::{DType, Tolerance};
use crate::problem::AttentionProblem;
use crate::tensor::HostData;
use rayon::prelude::*;

/// Denominator floor of the relative error, so outputs near zero do not
/// dominate it: rel = |got - ref| / max(|ref|, REL_FLOOR).
pub const REL_FLOOR: f64 = 1e-3;

/// How far an output is from cpu-reference.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    pub max_abs: f64,
    pub max_rel: f64,
    /// Elements outside the dtype's tolerance (NaN included).
    pub outside: usize,
    pub nan: usize,
    pub total: usize,
    pub dtype: DType,
    pub tolerance: Tolerance,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.outside == 0
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "max abs err {:.3e}, max rel err {:.3e} ({} elements; {} tolerance: abs {:e} + rel {:e}·|ref|)",
            self.max_abs, self.max_rel, self.total, self.dtype, self.tolerance.abs, self.tolerance.rel
        );
        if self.nan > 0 {
            s.push_str(&format!(", {} NaN", self.nan));
        }
        s
    }
}

/// Compares `out` with the f64 reference for `p`. The reference is computed
/// per (batch, kv head) group in parallel, covering every element.
pub fn against_reference(
    p: &AttentionProblem,
    q: &HostData,
    k: &HostData,
    v: &HostData,
    out: &HostData,
) -> CheckReport {
    let (d, hq, hkv, group) = (p.head_dim, p.num_q_heads, p.num_kv_heads, p.group_size());
    let (sq, skv) = (p.seq_q, p.seq_kv);
    let tolerance = p.dtype.tolerance();
    let parts: Vec<(f64, f64, usize, usize)> = (0..p.batch * hkv)
        .into_par_iter()
        .map(|bk| {
            let (b, kvh) = (bk / hkv, bk % hkv);
            let mut sub = p.clone();
            sub.batch = 1;
            sub.num_q_heads = group;
            sub.num_kv_heads = 1;
            sub.dtype = DType::F32; // widening f16/bf16 to f32 is exact
            let mut qs = Vec::with_capacity(sq * group * d);
            for s in 0..sq {
                let base = ((b * sq + s) * hq + kvh * group) * d;
                qs.extend((base..base + group * d).map(|i| q.get_f32(i)));
            }
            let gather = |t: &HostData| -> Vec<f32> {
                let mut out = Vec::with_capacity(skv * d);
                for s in 0..skv {
                    let base = ((b * skv + s) * hkv + kvh) * d;
                    out.extend((base..base + d).map(|i| t.get_f32(i)));
                }
                out
            };
            let reference =
                reference_attention(&sub, &HostData::F32(qs), &HostData::F32(gather(k)), &HostData::F32(gather(v)));
            let (mut max_abs, mut max_rel, mut outside, mut nan) = (0.0f64, 0.0f64, 0, 0);
            for s in 0..sq {
                for g in 0..group {
                    for x in 0..d {
                        let expected = reference[(s * group + g) * d + x];
                        let got = out.get_f32(((b * sq + s) * hq + kvh * group + g) * d + x) as f64;
                        if got.is_nan() {
                            nan += 1;
                        }
                        let err = (got - expected).abs();
                        if !tolerance.accepts(got, expected) {
                            outside += 1;
                        }
                        if err.is_finite() {
                            max_abs = max_abs.max(err);
                            max_rel = max_rel.max(err / expected.abs().max(REL_FLOOR));
                        }
                    }
                }
            }
            (max_abs, max_rel, outside, nan)
        })
        .collect();
    let mut report =
        CheckReport { max_abs: 0.0, max_rel: 0.0, outside: 0, nan: 0, total: out.len(), dtype: p.dtype, tolerance };
    for (a, r, o, n) in parts {
        report.max_abs = report.max_abs.max(a);
        report.max_rel = report.max_rel.max(r);
        report.outside += o;
        report.nan += n;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Mask;

    #[test]
    fn reference_against_itself_is_exact_and_nan_fails() {
        let p = AttentionProblem::new(2, 3, 5, 4, 2, 8, DType::F32).with_mask(Mask::Causal);
        let r = |shape: [usize; 4], seed| {
            HostData::F32(crate::tensor::Tensor::random(shape, DType::F32, seed).unwrap().to_f32_vec().unwrap())
        };
        let (q, k, v) = (r(p.q_shape(), 1), r(p.kv_shape(), 2), r(p.kv_shape(), 3));
        let full: Vec<f32> = reference_attention(&p, &q, &k, &v).iter().map(|&x| x as f32).collect();
        let rep = against_reference(&p, &q, &k, &v, &HostData::F32(full.clone()));
        assert!(rep.passed(), "{}", rep.summary());
        assert!(rep.max_abs < 1e-6);
        let mut bad = full;
        bad[7] = f32::NAN;
        let rep = against_reference(&p, &q, &k, &v, &HostData::F32(bad));
        assert_eq!((rep.outside, rep.nan), (1, 1));
    }
}
