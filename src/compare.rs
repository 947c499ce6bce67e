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

use crate::backends::cpu_reference::{reference_row, Widened, F16_TABLE_BYTES};
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

/// Progress of `against_reference`: (output rows done, output rows in all),
/// called after each work unit (`Plan`).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Why `try_against_reference` could not compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// The host could not give a buffer of the reference.
    #[error("cannot allocate {bytes} bytes of host memory for {what}")]
    AllocFailed { what: &'static str, bytes: usize },
    /// A tensor does not hold the elements of its contiguous shape (a
    /// product past usize::MAX counts as usize::MAX).
    #[error("tensor {tensor} has {got} elements, the problem needs {expected} (contiguous {shape:?})")]
    Length { tensor: &'static str, got: usize, expected: usize, shape: [usize; 4] },
}

/// Reference work per unit: about 40 ms of the f64 loops on one core, so
/// progress can be reported often and units spread over every thread.
pub const UNIT_FLOPS: f64 = 2e7;
/// Units per thread at least, where there are enough rows (load balance).
const UNITS_PER_THREAD: usize = 4;

/// How the reference is split: units of consecutive output rows (a row is
/// one `[batch, query, head]` triple, `head_dim` values), run in parallel.
/// Each output row is computed whole, in the same order as
/// `reference_attention`, so the split never changes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Output rows in all: batch × seq_q × q_heads.
    pub rows: usize,
    pub rows_per_unit: usize,
    pub units: usize,
    /// Threads that can be busy at once: min(pool threads, units), at least 1.
    pub threads: usize,
}

impl Plan {
    /// The split of `p`'s reference over a pool of `threads` threads.
    pub fn new(p: &AttentionProblem, threads: usize) -> Plan {
        let rows = p.batch.saturating_mul(p.seq_q).saturating_mul(p.num_q_heads);
        let threads = threads.max(1);
        let flops_per_row = p.flops() / rows.max(1) as f64;
        let by_time = (UNIT_FLOPS / flops_per_row.max(1.0)).min(usize::MAX as f64) as usize;
        let by_balance = rows.div_ceil(threads.saturating_mul(UNITS_PER_THREAD));
        let rows_per_unit = by_time.min(by_balance).max(1);
        let units = rows.div_ceil(rows_per_unit);
        Plan { rows, rows_per_unit, units, threads: threads.min(units).max(1) }
    }

    /// Host bytes one busy thread holds: a row of `seq_kv` f64 scores and
    /// one output row of `head_dim` f64 values.
    pub fn bytes_per_thread(p: &AttentionProblem) -> u128 {
        (p.seq_kv as u128 + p.head_dim as u128) * 8
    }

    /// The rows of unit `u`.
    pub fn unit_rows(&self, u: usize) -> std::ops::Range<usize> {
        let start = u.saturating_mul(self.rows_per_unit).min(self.rows);
        start..start.saturating_add(self.rows_per_unit).min(self.rows)
    }
}

/// `len` copies of `value`, allocated fallibly: `CompareError::AllocFailed`
/// naming `what` where the host cannot hold them.
pub fn try_filled<T: Clone>(len: usize, value: T, what: &'static str) -> Result<Vec<T>, CompareError> {
    crate::model::alloc::try_filled(len, value, String::new)
        .map_err(|e| CompareError::AllocFailed { what, bytes: usize::try_from(e.bytes).unwrap_or(usize::MAX) })
}

/// Compares `out` with the f64 reference for `p` (contiguous
/// `[batch, seq, heads, head_dim]` tensors), computing the reference row by
/// row in parallel units (`Plan`) and comparing each row as it is made, so
/// it never holds more than a row per busy thread. `progress` is called
/// after each unit, in output rows.
///
/// # Panics
/// Where a buffer cannot be allocated or a tensor has the wrong length; use
/// `try_against_reference` to get those as errors.
pub fn against_reference(
    p: &AttentionProblem,
    inputs: (&HostData, &HostData, &HostData),
    out: &HostData,
    progress: Progress<'_>,
) -> Report {
    try_against_reference(p, inputs, out, progress).unwrap_or_else(|e| panic!("against_reference: {e}"))
}

/// `against_reference`, with allocation failures and wrong tensor lengths
/// as errors.
pub fn try_against_reference(
    p: &AttentionProblem,
    inputs: (&HostData, &HostData, &HostData),
    out: &HostData,
    progress: Progress<'_>,
) -> Result<Report, CompareError> {
    let kv = [p.batch, p.seq_kv, p.num_kv_heads, p.head_dim];
    let (q, k, v) = inputs;
    for (tensor, t, shape) in [("q", q, p.q_shape()), ("k", k, kv), ("v", v, kv), ("out", out, p.q_shape())] {
        let expected = shape.iter().fold(1usize, |acc, &n| acc.saturating_mul(n));
        if t.len() != expected {
            return Err(CompareError::Length { tensor, got: t.len(), expected, shape });
        }
    }
    let (d, tolerance) = (p.head_dim, p.dtype.tolerance());
    fold_reference_rows(
        p,
        inputs,
        progress,
        || Report::new(p.dtype, tolerance),
        |report, row, values| {
            for (x, &expected) in values.iter().enumerate() {
                let index = row * d + x;
                report.add(index, out.get_f32(index), expected);
            }
        },
        Report::merge,
    )
}

/// Computes every output row of the reference, in parallel units (`Plan`
/// over the current rayon pool), calling `visit(acc, row, values)` with the
/// row's `head_dim` values; each unit starts from `init()`, and the units'
/// accumulators are folded with `merge(into, from)` (in no fixed order: it
/// must not matter). Buffers are allocated fallibly, per unit.
fn fold_reference_rows<A, I, V, M>(
    p: &AttentionProblem,
    inputs: (&HostData, &HostData, &HostData),
    progress: Progress<'_>,
    init: I,
    visit: V,
    merge: M,
) -> Result<A, CompareError>
where
    A: Send,
    I: Fn() -> A + Sync + Send,
    V: Fn(&mut A, usize, &[f64]) + Sync + Send,
    M: Fn(&mut A, A) + Sync + Send,
{
    let plan = Plan::new(p, rayon::current_num_threads());
    let (sq, hq) = (p.seq_q, p.num_q_heads);
    let widened = |t| {
        Widened::new(t).ok_or(CompareError::AllocFailed { what: "the f16 conversion table", bytes: F16_TABLE_BYTES })
    };
    let (q, k, v) = (widened(inputs.0)?, widened(inputs.1)?, widened(inputs.2)?);
    let done = AtomicUsize::new(0);
    (0..plan.units)
        .into_par_iter()
        .map(|u| {
            let rows = plan.unit_rows(u);
            let mut scores = try_filled(p.seq_kv, 0.0f64, "the f64 reference's scores (seq_kv per row)")?;
            let mut values = try_filled(p.head_dim, 0.0f64, "the f64 reference's output row")?;
            let mut acc = init();
            for row in rows.clone() {
                let (b, i, h) = (row / (sq * hq), (row / hq) % sq, row % hq);
                reference_row(p, (&q, &k, &v), (b, i, h), &mut scores, &mut values);
                visit(&mut acc, row, &values);
            }
            progress(done.fetch_add(rows.len(), Ordering::Relaxed) + rows.len(), plan.rows);
            Ok(acc)
        })
        .try_reduce(&init, |mut a, b| {
            merge(&mut a, b);
            Ok(a)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::cpu_reference::reference_attention;
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
    fn progress_counts_rows_and_reaches_the_total() {
        // One (batch, kv-head) group: progress still comes in several steps.
        let p = AttentionProblem::new(1, 64, 64, 4, 1, 8, DType::F32);
        let (q, k, v) = (random(p.q_shape(), 1), random(p.kv_shape(), 2), random(p.kv_shape(), 3));
        let out = HostData::F32(vec![0.0; 64 * 4 * 8]);
        let calls = AtomicUsize::new(0);
        let last = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            against_reference(&p, (&q, &k, &v), &out, &|done, total| {
                assert_eq!(total, 256);
                calls.fetch_add(1, Ordering::Relaxed);
                last.fetch_max(done, Ordering::Relaxed);
            })
        });
        let plan = Plan::new(&p, 2);
        assert_eq!((calls.into_inner(), last.into_inner()), (plan.units, 256));
        assert!(plan.units >= 8, "{plan:?}");
    }

    /// Today's reference, written out serially as it was before the row
    /// split: the parallel path must give exactly these bits.
    #[allow(clippy::needless_range_loop)] // index loops, as plain as possible
    fn serial_reference(p: &AttentionProblem, q: &HostData, k: &HostData, v: &HostData) -> Vec<f64> {
        let (d, hq, hkv, group) = (p.head_dim, p.num_q_heads, p.num_kv_heads, p.group_size());
        let (scale, softcap) = (p.effective_scale() as f64, p.softcap.map(|c| c as f64));
        let mut out = vec![0.0f64; p.batch * p.seq_q * hq * d];
        let mut scores = vec![0.0f64; p.seq_kv];
        for b in 0..p.batch {
            for h in 0..hq {
                for i in 0..p.seq_q {
                    let (lo, hi) = p.mask.key_range(i, p.seq_q, p.seq_kv);
                    let (q_off, o_off) = (((b * p.seq_q + i) * hq + h) * d, ((b * p.seq_q + i) * hq + h) * d);
                    if lo >= hi {
                        continue;
                    }
                    let k_off = |j: usize| ((b * p.seq_kv + j) * hkv + h / group) * d;
                    let mut max = f64::NEG_INFINITY;
                    for j in lo..hi {
                        let dot: f64 =
                            (0..d).map(|x| q.get_f32(q_off + x) as f64 * k.get_f32(k_off(j) + x) as f64).sum();
                        let mut s = dot * scale;
                        if let Some(c) = softcap {
                            s = c * (s / c).tanh();
                        }
                        scores[j] = s;
                        max = max.max(s);
                    }
                    let mut sum = 0.0;
                    for s in &mut scores[lo..hi] {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    for j in lo..hi {
                        let w = scores[j] / sum;
                        for x in 0..d {
                            out[o_off + x] += w * v.get_f32(k_off(j) + x) as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn random_in(shape: [usize; 4], dtype: DType, seed: u64) -> HostData {
        crate::tensor::Tensor::random(shape, dtype, seed).unwrap().host().unwrap().clone()
    }

    #[test]
    fn parallel_rows_are_bit_identical_to_the_serial_reference() {
        let mut capped =
            AttentionProblem::new(1, 7, 11, 6, 2, 5, DType::F16).with_mask(Mask::SlidingWindow { left: 2, right: 1 });
        capped.softcap = Some(3.0);
        capped.scale = Some(0.7);
        let problems = [
            AttentionProblem::new(2, 9, 9, 4, 2, 8, DType::F32).with_mask(Mask::Causal),
            // seq_q > seq_kv: the first rows are fully masked (zeros).
            AttentionProblem::new(1, 13, 5, 3, 1, 4, DType::BF16).with_mask(Mask::Causal),
            AttentionProblem::new(1, 33, 17, 8, 1, 16, DType::F32),
            capped,
        ];
        for (n, p) in problems.iter().enumerate() {
            let seed = 10 * n as u64;
            let (q, k, v) = (
                random_in(p.q_shape(), p.dtype, seed),
                random_in(p.kv_shape(), p.dtype, seed + 1),
                random_in(p.kv_shape(), p.dtype, seed + 2),
            );
            let serial = serial_reference(p, &q, &k, &v);
            let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&reference_attention(p, &q, &k, &v)), bits(&serial), "{p}");
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let rows = pool.install(|| {
                    fold_reference_rows(
                        p,
                        (&q, &k, &v),
                        &|_, _| {},
                        Vec::new,
                        |acc: &mut Vec<(usize, Vec<f64>)>, row, values| acc.push((row, values.to_vec())),
                        |a, b| a.extend(b),
                    )
                    .unwrap()
                });
                let mut rows = rows;
                rows.sort_by_key(|(row, _)| *row);
                assert_eq!(rows.len(), p.batch * p.seq_q * p.num_q_heads, "{p}");
                let parallel: Vec<f64> = rows.into_iter().flat_map(|(_, values)| values).collect();
                assert_eq!(bits(&parallel), bits(&serial), "{p} on {threads} threads");
            }
        }
    }

    #[test]
    fn plan_splits_one_group_over_every_thread_in_small_units() {
        // The default problem as MQA: one (batch, kv-head) group.
        let p = AttentionProblem::new(1, 1024, 1024, 32, 1, 128, DType::F32).with_mask(Mask::Causal);
        let plan = Plan::new(&p, 2);
        assert_eq!((plan.rows, plan.threads), (32 * 1024, 2));
        assert!(plan.units >= 100, "{plan:?}");
        assert!(plan.rows_per_unit as f64 * p.flops() / plan.rows as f64 <= UNIT_FLOPS, "{plan:?}");
        let covered: usize = (0..plan.units).map(|u| plan.unit_rows(u).len()).sum();
        assert_eq!(covered, plan.rows);
        // Fewer rows than threads: the busy threads are the rows.
        let one_row = AttentionProblem::new(1, 1, 100_000, 1, 1, 128, DType::F32);
        assert_eq!(Plan::new(&one_row, 8), Plan { rows: 1, rows_per_unit: 1, units: 1, threads: 1 });
        assert_eq!(Plan::bytes_per_thread(&one_row), (100_000 + 128) * 8);
        // Tiny problems still get a unit per few rows, never zero-row units.
        let tiny = AttentionProblem::new(1, 4, 4, 2, 1, 8, DType::F32);
        let plan = Plan::new(&tiny, 2);
        assert!(plan.units >= 2 && (0..plan.units).all(|u| !plan.unit_rows(u).is_empty()), "{plan:?}");
    }

    #[test]
    fn allocation_failures_and_wrong_lengths_are_errors() {
        let e = try_filled(usize::MAX / 16, 0.0f64, "the f64 reference's scores (seq_kv per row)").unwrap_err();
        assert_eq!(
            e,
            CompareError::AllocFailed {
                what: "the f64 reference's scores (seq_kv per row)",
                bytes: usize::MAX / 16 * 8
            }
        );
        assert!(e.to_string().starts_with("cannot allocate"), "{e}");
        assert_eq!(try_filled(3, 1u8, "x").unwrap(), vec![1, 1, 1]);
        let p = AttentionProblem::new(1, 4, 4, 2, 1, 8, DType::F32);
        let (q, k, v) = (random(p.q_shape(), 1), random(p.kv_shape(), 2), random(p.kv_shape(), 3));
        let short = HostData::F32(vec![0.0; 10]);
        let e = try_against_reference(&p, (&q, &k, &v), &short, &|_, _| {}).unwrap_err();
        assert!(matches!(e, CompareError::Length { tensor: "out", got: 10, expected: 64, .. }), "{e:?}");
        let e = try_against_reference(&p, (&q, &short, &v), &short, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("tensor k has 10 elements, the problem needs 32"), "{e}");
    }
}
