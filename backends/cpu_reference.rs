//! `cpu-reference`: plain loops with f64 accumulation. Supports every mask,
//! head ratio, head_dim and dtype; it is the oracle every other backend is
//! tested against, not a fast path.

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::Capabilities;
use crate::problem::{AttentionProblem, TensorRole};
use crate::tensor::{HostData, Layout, TensorError};
use half::{bf16, f16};

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

    /// Row by row, straight into `out`: the working memory is one row of
    /// `seq_kv` scores and one of `head_dim` values, allocated fallibly.
    fn run(&self, mut call: CheckedCall<'_>) -> Result<(), BackendError> {
        const ON_GPU: &str = "a checked CPU call holds a GPU tensor";
        let p = call.problem();
        let (q, k, v) = (call.q(), call.k(), call.v());
        let (Some(qd), Some(kd), Some(vd)) = (q.host(), k.host(), v.host()) else {
            return Err(BackendError::Internal { backend: self.name(), what: ON_GPU });
        };
        let widened = |t| Widened::new(t).ok_or(TensorError::HostAlloc { bytes: F16_TABLE_BYTES });
        let (qd, kd, vd) = (widened(qd)?, widened(kd)?, widened(vd)?);
        let views = Views { q: *q.layout(), k: *k.layout(), v: *v.layout() };
        let mut scores = zeros(p.seq_kv)?;
        let mut values = zeros(p.head_dim)?;
        let out = call.out();
        let layout = *out.layout();
        let Some(host) = out.host_mut() else {
            return Err(BackendError::Internal { backend: self.name(), what: ON_GPU });
        };
        for b in 0..p.batch {
            for s in 0..p.seq_q {
                for h in 0..p.num_q_heads {
                    attend_row(p, (&qd, &kd, &vd), &views, (b, s, h), &mut scores, &mut values);
                    let at = layout.row(b, s, h);
                    for (x, &value) in values.iter().enumerate() {
                        host.set_f32(at + x, value as f32);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `len` zeros, or `TensorError::HostAlloc` where the host cannot hold them.
fn zeros(len: usize) -> Result<Vec<f64>, TensorError> {
    filled(len, 0.0).ok_or(TensorError::HostAlloc { bytes: len.saturating_mul(8) })
}

/// `len` copies of `value`, or `None` where the host cannot hold them.
fn filled<T: Clone>(len: usize, value: T) -> Option<Vec<T>> {
    crate::model::alloc::try_filled(len, value, String::new).ok()
}

/// Read access to an input of the row kernel: element `i` widened to f32
/// exactly, as `HostData::get_f32` does (a faster reader must give the same
/// bits).
pub trait Elements: Sync {
    fn at(&self, i: usize) -> f32;
}

impl Elements for HostData {
    #[inline]
    fn at(&self, i: usize) -> f32 {
        self.get_f32(i)
    }
}

/// Bytes of the f16 table of `Widened`.
pub const F16_TABLE_BYTES: usize = (1 << 16) * 4;

/// An input as the row kernel reads it fastest. f16 goes through a table of
/// all 65536 values (`f16::to_f32` of each: the same bits as converting each
/// read, several times faster); f32 and bf16 are read directly.
pub enum Widened<'a> {
    F32(&'a [f32]),
    F16(&'a [f16], &'static [f32]),
    BF16(&'a [bf16]),
}

impl<'a> Widened<'a> {
    /// `None` only where the f16 table (`F16_TABLE_BYTES`) cannot be allocated.
    pub fn new(t: &'a HostData) -> Option<Widened<'a>> {
        Some(match t {
            HostData::F32(v) => Widened::F32(v),
            HostData::F16(v) => Widened::F16(v, f16_table()?),
            HostData::BF16(v) => Widened::BF16(v),
        })
    }
}

impl Elements for Widened<'_> {
    #[inline]
    fn at(&self, i: usize) -> f32 {
        match *self {
            Widened::F32(v) => v[i],
            Widened::F16(v, table) => table[v[i].to_bits() as usize],
            Widened::BF16(v) => v[i].to_f32(),
        }
    }
}

/// `f16::to_f32` of every f16, built once (fallibly).
fn f16_table() -> Option<&'static [f32]> {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    if let Some(table) = TABLE.get() {
        return Some(table);
    }
    let mut table = filled(1 << 16, 0.0f32)?;
    for (bits, x) in table.iter_mut().enumerate() {
        *x = f16::from_bits(bits as u16).to_f32();
    }
    Some(TABLE.get_or_init(|| table))
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
    inputs: (&HostData, &HostData, &HostData),
    views: &Views,
) -> Vec<f64> {
    let (d, hq) = (p.head_dim, p.num_q_heads);
    let mut out = vec![0.0f64; p.batch * p.seq_q * hq * d];
    let mut scores = vec![0.0f64; p.seq_kv];
    for b in 0..p.batch {
        for h in 0..hq {
            for i in 0..p.seq_q {
                let o_off = ((b * p.seq_q + i) * hq + h) * d;
                attend_row(p, inputs, views, (b, i, h), &mut scores, &mut out[o_off..o_off + d]);
            }
        }
    }
    out
}

/// Output row `[b, i, h, ..]` of the f64 reference, for contiguous
/// `[batch, seq, heads, head_dim]` inputs in their own dtype (widened
/// exactly, through `Elements`), with no buffer of its own: `scores` needs `p.seq_kv` elements
/// (its contents are overwritten) and `out` holds `p.head_dim`. The same
/// arithmetic in the same order as `reference_attention`, so the values are
/// bit-identical to that row of its result.
///
/// # Panics
/// If `scores` or `out` is too short, or an input is shorter than its
/// contiguous shape.
pub fn reference_row<E: Elements + ?Sized>(
    p: &AttentionProblem,
    inputs: (&E, &E, &E),
    (b, i, h): (usize, usize, usize),
    scores: &mut [f64],
    out: &mut [f64],
) {
    let kv = [p.batch, p.seq_kv, p.num_kv_heads, p.head_dim];
    let views = Views { q: Layout::contiguous(p.q_shape()), k: Layout::contiguous(kv), v: Layout::contiguous(kv) };
    attend_row(p, inputs, &views, (b, i, h), scores, &mut out[..p.head_dim]);
}

/// One output row: softmax(q·kᵀ · scale, soft-capped) · v in f64, keys in
/// order; a fully masked row is zeros. `out` is overwritten.
fn attend_row<E: Elements + ?Sized>(
    p: &AttentionProblem,
    (q, k, v): (&E, &E, &E),
    views: &Views,
    (b, i, h): (usize, usize, usize),
    scores: &mut [f64],
    out: &mut [f64],
) {
    let d = p.head_dim;
    let kvh = h / p.group_size();
    let scale = p.effective_scale() as f64;
    let softcap = p.softcap.map(|c| c as f64);
    out.fill(0.0);
    let (lo, hi) = p.mask.key_range(i, p.seq_q, p.seq_kv);
    if lo >= hi {
        return; // fully masked row: zeros
    }
    let q_off = views.q.row(b, i, h);
    let mut max = f64::NEG_INFINITY;
    for (j, score) in scores.iter_mut().enumerate().take(hi).skip(lo) {
        let k_off = views.k.row(b, j, kvh);
        let dot: f64 = (0..d).map(|x| q.at(q_off + x) as f64 * k.at(k_off + x) as f64).sum();
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
        for (x, o) in out.iter_mut().enumerate() {
            *o += w * v.at(v_off + x) as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::problem::Mask;

    #[test]
    fn f16_table_gives_the_bits_of_each_conversion() {
        let table = f16_table().unwrap();
        assert!((0..=u16::MAX).all(|b| table[b as usize].to_bits() == f16::from_bits(b).to_f32().to_bits()));
    }

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
