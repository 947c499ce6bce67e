//! The one comparison of an output with the f64 oracle, used by
//! `rocmforge run --check` and by the test suites.
//!
//! An element agrees with the reference when (see docs/semantics.md):
//! - the reference is finite and the output is within the dtype's tolerance;
//! - the reference is NaN and the output is NaN;
//! - the reference is ±Inf and the output is the same infinity, or NaN (an
//!   attention weight that underflows to zero in f32 but not in f64 turns
//!   `w · Inf` into `0 · Inf`).
//!
//! Everything else is a mismatch, NaN where a number was expected included.
//! Error magnitudes (`max_abs`, `max_rel`) are taken over finite pairs only,
//! and the report counts the non-finite ones separately, so it can never
//! print "max abs err 0" next to "64 elements outside" without saying why.

use crate::backends::cpu_reference::reference_attention;
use crate::dtype::{DType, Tolerance};
use crate::problem::AttentionProblem;
use crate::tensor::HostData;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Denominator floor of the relative error, so outputs near zero do not
/// dominate it: rel = |got - ref| / max(|ref|, REL_FLOOR).
pub const REL_FLOOR: f64 = 1e-3;

/// Whether `got` agrees with the reference value `expected` (module docs).
pub fn agrees(tolerance: Tolerance, got: f64, expected: f64) -> bool {
    if expected.is_nan() {
        got.is_nan()
    } else if expected.is_infinite() {
        got == expected || got.is_nan()
    } else {
        got.is_finite() && tolerance.accepts(got, expected)
    }
}

/// The first element that did not agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mismatch {
    /// Flat index into the `[batch, seq_q, heads, head_dim]` output.
    pub index: usize,
    pub got: f32,
    pub expected: f64,
}

/// How far an output is from the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub dtype: DType,
    pub tolerance: Tolerance,
    pub total: usize,
    /// Elements that do not agree (NaN where a number was expected included).
    pub outside: usize,
    /// Over elements where both values are finite.
    pub max_abs: f64,
    pub max_rel: f64,
    pub got_nan: usize,
    pub got_inf: usize,
    /// Reference elements that are NaN or ±Inf (from NaN/Inf inputs).
    pub expected_nonfinite: usize,
    /// Lowest-index mismatch.
    pub first_bad: Option<Mismatch>,
}

impl Report {
    pub fn new(dtype: DType, tolerance: Tolerance) -> Report {
        Report {
            dtype,
            tolerance,
            total: 0,
            outside: 0,
            max_abs: 0.0,
            max_rel: 0.0,
            got_nan: 0,
            got_inf: 0,
            expected_nonfinite: 0,
            first_bad: None,
        }
    }

    /// Adds element `index` of the output.
    pub fn add(&mut self, index: usize, got: f32, expected: f64) {
        let g = got as f64;
        self.total += 1;
        self.got_nan += got.is_nan() as usize;
        self.got_inf += got.is_infinite() as usize;
        self.expected_nonfinite += (!expected.is_finite()) as usize;
        if g.is_finite() && expected.is_finite() {
            let err = (g - expected).abs();
            self.max_abs = self.max_abs.max(err);
            self.max_rel = self.max_rel.max(err / expected.abs().max(REL_FLOOR));
        }
        if !agrees(self.tolerance, g, expected) {
            self.outside += 1;
            if self.first_bad.is_none_or(|m| index < m.index) {
                self.first_bad = Some(Mismatch { index, got, expected });
            }
        }
    }

    /// Folds in a report over other elements of the same output.
    pub fn merge(&mut self, other: Report) {
        self.total += other.total;
        self.outside += other.outside;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.max_rel = self.max_rel.max(other.max_rel);
        self.got_nan += other.got_nan;
        self.got_inf += other.got_inf;
        self.expected_nonfinite += other.expected_nonfinite;
        if let Some(m) = other.first_bad {
            if self.first_bad.is_none_or(|f| m.index < f.index) {
                self.first_bad = Some(m);
            }
        }
    }

    pub fn passed(&self) -> bool {
        self.outside == 0
    }

    /// One line: the error magnitudes, the counts, and the non-finite values
    /// on either side.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "max abs err {:.3e}, max rel err {:.3e} ({} elements, {} outside; {} tolerance: abs {:e} + rel {:e}·|ref|)",
            self.max_abs, self.max_rel, self.total, self.outside, self.dtype, self.tolerance.abs, self.tolerance.rel
        );
        if self.expected_nonfinite > 0 {
            s.push_str(&format!(
                "; the reference itself has {} non-finite values (NaN/Inf in the inputs; see docs/semantics.md)",
                self.expected_nonfinite
            ));
        }
        if self.got_nan + self.got_inf > 0 {
            s.push_str(&format!("; output has {} NaN and {} Inf", self.got_nan, self.got_inf));
        }
        if self.outside > 0 && self.max_abs == 0.0 {
            s.push_str("; every mismatch involves a non-finite value, so the error magnitudes above are 0");
        }
        s
    }

    /// The multi-part failure message the tests print: who, on what, the
    /// first bad element as `[b, s, h, d]` and the summary.
    pub fn failure(&self, backend: &str, p: &AttentionProblem) -> Option<String> {
        let m = self.first_bad?;
        Some(format!(
            "backend {backend} on {p}: {} of {} elements disagree with the reference; first at index {} {:?}: \
             got {}, expected {}; {}",
            self.outside,
            self.total,
            m.index,
            position(p, m.index),
            m.got,
            m.expected,
            self.summary()
        ))
    }
}

/// `[batch, seq, head, dim]` of a flat output index.
pub fn position(p: &AttentionProblem, i: usize) -> [usize; 4] {
    let (d, h, s) = (p.head_dim.max(1), p.num_q_heads.max(1), p.seq_q.max(1));
    [i / (d * h * s), (i / (d * h)) % s, (i / d) % h, i % d]
}

/// Compares a whole output with a whole reference. A length mismatch counts
/// every missing or extra element as outside.
pub fn compare(dtype: DType, tolerance: Tolerance, got: &[f32], expected: &[f64]) -> Report {
    let mut r = Report::new(dtype, tolerance);
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        r.add(i, g, e);
    }
    let extra = got.len().abs_diff(expected.len());
    if extra > 0 {
        r.total += extra;
        r.outside += extra;
        let index = got.len().min(expected.len());
        if r.first_bad.is_none() {
            r.first_bad = Some(Mismatch { index, got: f32::NAN, expected: f64::NAN });
        }
    }
    r
}

/// Progress of `against_reference`: (groups done, groups in all).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Compares `out` with the f64 reference for `p`, computing the reference
/// per (batch, kv head) group in parallel so it never holds more than one
/// group's reference at once. `progress` is called after each group.
pub fn against_reference(
    p: &AttentionProblem,
    (q, k, v): (&HostData, &HostData, &HostData),
    out: &HostData,
    progress: Progress<'_>,
) -> Report {
    let (d, hq, hkv, group) = (p.head_dim, p.num_q_heads, p.num_kv_heads, p.group_size());
    let (sq, skv) = (p.seq_q, p.seq_kv);
    let tolerance = p.dtype.tolerance();
    let groups = p.batch * hkv;
    let done = AtomicUsize::new(0);
    let parts: Vec<Report> = (0..groups)
        .into_par_iter()
        .map(|bk| {
            let (b, kvh) = (bk / hkv, bk % hkv);
            let sub = AttentionProblem {
                batch: 1,
                num_q_heads: group,
                num_kv_heads: 1,
                dtype: DType::F32, // widening f16/bf16 to f32 is exact
                ..p.clone()
            };
            let mut qs = Vec::with_capacity(sq * group * d);
            for s in 0..sq {
                let base = ((b * sq + s) * hq + kvh * group) * d;
                qs.extend((base..base + group * d).map(|i| q.get_f32(i)));
            }
            let gather = |t: &HostData| -> Vec<f32> {
                let mut g = Vec::with_capacity(skv * d);
                for s in 0..skv {
                    let base = ((b * skv + s) * hkv + kvh) * d;
                    g.extend((base..base + d).map(|i| t.get_f32(i)));
                }
                g
            };
            let reference =
                reference_attention(&sub, &HostData::F32(qs), &HostData::F32(gather(k)), &HostData::F32(gather(v)));
            let mut report = Report::new(p.dtype, tolerance);
            for s in 0..sq {
                for g in 0..group {
                    for x in 0..d {
                        let index = ((b * sq + s) * hq + kvh * group + g) * d + x;
                        report.add(index, out.get_f32(index), reference[(s * group + g) * d + x]);
                    }
                }
            }
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, groups);
            report
        })
        .collect();
    let mut report = Report::new(p.dtype, tolerance);
    for part in parts {
        report.merge(part);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Mask;

    fn random(shape: [usize; 4], seed: u64) -> HostData {
        HostData::F32(crate::tensor::Tensor::random(shape, DType::F32, seed).unwrap().to_f32_vec().unwrap())
    }

    #[test]
    fn reference_against_itself_passes_and_nan_fails() {
        let p = AttentionProblem::new(2, 3, 5, 4, 2, 8, DType::F32).with_mask(Mask::Causal);
        let (q, k, v) = (random(p.q_shape(), 1), random(p.kv_shape(), 2), random(p.kv_shape(), 3));
        let full: Vec<f32> = reference_attention(&p, &q, &k, &v).iter().map(|&x| x as f32).collect();
        let rep = against_reference(&p, (&q, &k, &v), &HostData::F32(full.clone()), &|_, _| {});
        assert!(rep.passed(), "{}", rep.summary());
        assert!(rep.max_abs < 1e-6 && rep.total == full.len());
        let mut bad = full;
        bad[7] = f32::NAN;
        bad[40] = 1e3;
        let rep = against_reference(&p, (&q, &k, &v), &HostData::F32(bad), &|_, _| {});
        assert_eq!((rep.outside, rep.got_nan), (2, 1));
        assert_eq!(rep.first_bad.map(|m| m.index), Some(7));
        let msg = rep.failure("x", &p).unwrap();
        assert!(msg.contains("2 of 192") && msg.contains("index 7 [0, 0, 0, 7]"), "{msg}");
    }

    #[test]
    fn non_finite_rules() {
        let t = DType::F32.tolerance();
        assert!(agrees(t, f64::NAN, f64::NAN));
        assert!(!agrees(t, 0.0, f64::NAN));
        assert!(!agrees(t, f64::INFINITY, f64::NAN));
        assert!(agrees(t, f64::INFINITY, f64::INFINITY));
        assert!(agrees(t, f64::NAN, f64::NEG_INFINITY));
        assert!(!agrees(t, f64::INFINITY, f64::NEG_INFINITY));
        assert!(!agrees(t, f64::MAX, f64::INFINITY));
        assert!(!agrees(t, f64::NAN, 1.0));
        assert!(!agrees(t, f64::INFINITY, 1.0));
        assert!(agrees(t, 1.0 + 1e-6, 1.0));
    }

    #[test]
    fn summary_explains_non_finite_mismatches() {
        let tol = DType::F32.tolerance();
        // Every element NaN where numbers were expected: magnitudes stay 0,
        // and the summary says why instead of implying a perfect match.
        let rep = compare(DType::F32, tol, &[f32::NAN; 64], &[0.5; 64]);
        assert_eq!((rep.outside, rep.max_abs), (64, 0.0));
        let s = rep.summary();
        assert!(s.contains("64 outside") && s.contains("64 NaN") && s.contains("non-finite value"), "{s}");
        // A NaN reference (NaN input) reported as such.
        let rep = compare(DType::F32, tol, &[f32::NAN, 1.0], &[f64::NAN, 1.0]);
        assert!(rep.passed());
        assert!(rep.summary().contains("reference itself has 1 non-finite"), "{}", rep.summary());
        // Length mismatches count.
        let rep = compare(DType::F32, tol, &[1.0], &[1.0, 2.0]);
        assert_eq!((rep.outside, rep.total), (1, 2));
    }

    #[test]
    fn progress_reaches_every_group() {
        let p = AttentionProblem::new(3, 2, 2, 4, 2, 4, DType::F32);
        let (q, k, v) = (random(p.q_shape(), 1), random(p.kv_shape(), 2), random(p.kv_shape(), 3));
        let out = HostData::F32(vec![0.0; 3 * 2 * 4 * 4]);
        let calls = AtomicUsize::new(0);
        let last = AtomicUsize::new(0);
        against_reference(&p, (&q, &k, &v), &out, &|done, total| {
            assert_eq!(total, 6);
            calls.fetch_add(1, Ordering::Relaxed);
            last.fetch_max(done, Ordering::Relaxed);
        });
        assert_eq!((calls.into_inner(), last.into_inner()), (6, 6));
    }
}
