//! The attention layer: the q/k/v projection (one GEMM with a `[q; k; v]`
//! weight, optional biases), RoPE on q and k (one launch: their heads are
//! adjacent in each output row), the new keys and values appended to the
//! cache, attention over the cache through the backend the [`Dispatcher`]
//! selects, and the output projection. q, k and v stay column ranges of the
//! projection's output: the cache copies k and v from there, and attention
//! reads q there through a strided view (or a copy, for a backend that
//! takes no strided q). Dense steps run on the decoder's [`Engine`].
//!
//! Sequences in one call may have different cached lengths. Adjacent spans
//! with the same (cached length, new tokens) form one batched attention
//! call (the problem has one `seq_kv` for its whole batch); the decoder
//! orders its rows so that such spans are adjacent. With a paged cache and
//! a backend that reads paged K/V, adjacent spans with the same number of
//! new tokens form one call whatever their cached lengths (the problem
//! carries one length per sequence) and the pool is read in place.

use super::config::ModelConfig;
use super::dispatch::{AttentionChoice, Dispatcher, ShapeClass};
use super::engine::{AttentionInput, Engine, RopeInput};
use super::error::ModelError;
use super::kv_cache::{AppendRows, KvCache, SeqId};
use super::matrix::{Columns, Matrix};
use super::rope::Rope;
use crate::backend::AttentionBackend;
use crate::device::Device;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask, TensorRole};
use crate::registry::{AttentionConfig, Registry};
use crate::tensor::{TensorView, TensorViewMut};
use std::collections::BTreeMap;

/// The new tokens of one sequence within a batch of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub seq: SeqId,
    /// Tokens already in the cache (= position of the first new token).
    pub start: usize,
    /// New tokens.
    pub len: usize,
    /// Index of this span's first row in the batch.
    pub first_row: usize,
}

/// The projections of one layer (`[out, in]` weights) and their biases:
/// q, k and v stacked in one `[(heads + 2 kv_heads) × head_dim, hidden]`
/// matrix (and one bias), then the output projection.
pub struct Projections {
    pub qkv: Matrix,
    pub qkv_bias: Option<Matrix>,
    pub o: Matrix,
    pub o_bias: Option<Matrix>,
}

pub struct AttentionLayer {
    index: usize,
    proj: Projections,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    mask: Mask,
    /// Element type of the attention problem (the cache's dtype).
    dtype: DType,
    dispatcher: Dispatcher,
}

impl AttentionLayer {
    pub fn new(
        index: usize,
        config: &ModelConfig,
        proj: Projections,
        dtype: DType,
        attention: AttentionConfig,
        device: Device,
    ) -> AttentionLayer {
        // A window of w positions includes the query's own: w - 1 to the left.
        let mask = match config.layer_windows.get(index).copied().flatten() {
            Some(w) => Mask::SlidingWindow { left: w - 1, right: 0 },
            None => Mask::Causal,
        };
        AttentionLayer {
            index,
            proj,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            mask,
            dtype,
            dispatcher: Dispatcher::new(index, attention, device),
        }
    }

    pub fn mask(&self) -> Mask {
        self.mask
    }

    /// Backends chosen so far, per shape class.
    pub fn choices(&self) -> BTreeMap<ShapeClass, AttentionChoice> {
        self.dispatcher.choices()
    }

    /// `x` is `[rows, hidden]` (already normed), rows grouped by `spans`.
    /// Appends this layer's keys and values to `cache` (reserved by the
    /// caller) and returns the attention block's output, `[rows, hidden]`.
    pub fn forward(
        &mut self,
        engine: &Engine,
        x: &Matrix,
        spans: &[Span],
        rope: (&Rope, &RopeInput),
        cache: &mut dyn KvCache,
    ) -> Result<Matrix, ModelError> {
        let (q_width, kv_width) = (self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim);
        let mut qkv = engine.linear(x, &self.proj.qkv, self.proj.qkv_bias.as_ref())?;
        if qkv.cols() != q_width + 2 * kv_width {
            return Err(ModelError::Request(format!(
                "layer {}: the qkv projection has {} outputs",
                self.index,
                qkv.cols()
            )));
        }
        // q's heads, then k's: one rotation over the first heads + kv_heads.
        engine.rope(&mut qkv, self.num_heads + self.num_kv_heads, rope.0, rope.1)?;
        let (q, k, v) =
            (qkv.columns(0, q_width)?, qkv.columns(q_width, kv_width)?, qkv.columns(q_width + kv_width, kv_width)?);
        let entries: Vec<AppendRows> =
            spans.iter().map(|s| AppendRows { seq: s.seq, first_row: s.first_row, len: s.len }).collect();
        cache.append_columns(self.index, &entries, k, v)?;
        let mut attn = engine.activation(x.rows(), q_width)?;
        for merged in paged_groups(spans) {
            if self.attend_paged(engine, q, merged, cache, &mut attn)? {
                continue;
            }
            for group in groups(merged) {
                self.attend(engine, q, group, &*cache, &mut attn)?;
            }
        }
        engine.linear(&attn, &self.proj.o, self.proj.o_bias.as_ref())
    }

    /// One batched attention call over a paged cache's pool for adjacent
    /// spans with the same number of new tokens, each with its own cached
    /// length, written into their rows of `attn` (in place, as `attend`
    /// does). `false` when the cache is not paged or the chosen backend
    /// does not read paged K/V (the caller then takes the dense path); the
    /// block table is only touched once the backend has accepted.
    fn attend_paged(
        &mut self,
        engine: &Engine,
        q: Columns<'_>,
        group: &[Span],
        cache: &mut dyn KvCache,
        attn: &mut Matrix,
    ) -> Result<bool, ModelError> {
        let seqs: Vec<(SeqId, usize)> = group.iter().map(|s| (s.seq, s.start + s.len)).collect();
        let Some(layout) = cache.paged_layout(&seqs)? else { return Ok(false) };
        let kv_len = seqs.iter().map(|&(_, l)| l).max().unwrap_or(0);
        let (h, hkv, d, len) = (self.num_heads, self.num_kv_heads, self.head_dim, group[0].len);
        let p = AttentionProblem::new(group.len(), len, kv_len, h, hkv, d, self.dtype).with_mask(self.mask);
        // Chosen on the dense problem, as in `attend`; the paged form is
        // used only when that backend takes it.
        let backend = self.dispatcher.backend_for(&p)?;
        let paged = p.clone().with_paged(layout);
        let device = self.dispatcher.device().clone();
        if !Registry::reasons(backend, &paged, &device).is_empty() {
            self.dispatcher.forget_call(ShapeClass::of(&p));
            return Ok(false);
        }
        let (q, paged) = query(engine, (backend, &device), q, group[0].first_row, &paged)?;
        let access = cache
            .paged_kv(self.index, &seqs)?
            .ok_or_else(|| ModelError::Request("the cache gave a paged layout but no paged access".into()))?;
        let mut out = engine.attention_output(attn, group[0].first_row, p.out_shape(), self.dtype)?;
        backend
            .forward_paged(&paged, q.view(), access.k, access.v, access.refs(), out.view_mut()?)
            .map_err(|source| ModelError::Backend { layer: self.index, backend: backend.name(), source })?;
        out.finish(engine)?;
        self.dispatcher.note_in_place(ShapeClass::of(&p));
        Ok(true)
    }

    /// One batched attention call for adjacent spans that share their cached
    /// length, written into their rows of `attn`. Reads the cache in place
    /// when it offers strided views and the chosen backend accepts them;
    /// otherwise from a gathered contiguous copy.
    fn attend(
        &mut self,
        engine: &Engine,
        q: Columns<'_>,
        group: &[Span],
        cache: &dyn KvCache,
        attn: &mut Matrix,
    ) -> Result<(), ModelError> {
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (len, kv_len) = (group[0].len, group[0].start + group[0].len);
        let p = AttentionProblem::new(group.len(), len, kv_len, h, hkv, d, self.dtype).with_mask(self.mask);
        // The choice is made on the contiguous problem, so it does not
        // depend on how the cache happens to be laid out.
        let backend = self.dispatcher.backend_for(&p)?;
        let device = self.dispatcher.device().clone();
        let seqs: Vec<SeqId> = group.iter().map(|s| s.seq).collect();
        // Views of the model's activations when they are in the problem's
        // dtype (GPU), else converted copies; `p` gains q's strides.
        let (q, p) = query(engine, (backend, &device), q, group[0].first_row, &p)?;
        let mut out = engine.attention_output(attn, group[0].first_row, p.out_shape(), self.dtype)?;
        let layer = self.index;
        let run = |p: &AttentionProblem, k: TensorView<'_>, v: TensorView<'_>, out: TensorViewMut<'_>| {
            backend.forward(p, q.view(), k, v, out).map_err(|source| ModelError::Backend {
                layer,
                backend: backend.name(),
                source,
            })
        };
        if let Some(views) = cache.views(self.index, &seqs, kv_len)? {
            let mut strided = p.clone();
            for (role, view) in [(TensorRole::K, &views.k), (TensorRole::V, &views.v)] {
                strided.strides.set(role, (!view.layout().is_contiguous()).then_some(view.layout().strides));
            }
            if Registry::reasons(backend, &strided, &device).is_empty() {
                run(&strided, views.k, views.v, out.view_mut()?)?;
                self.dispatcher.note_in_place(ShapeClass::of(&p));
                return out.finish(engine);
            }
        }
        let (k, v) = cache.gather(self.index, &seqs, kv_len)?;
        run(&p, k.view(), v.view(), out.view_mut()?)?;
        out.finish(engine)
    }
}

/// The query rows `first ..` of `q` for problem `p` (whose batch and
/// seq_q they fill) on `backend`: a strided view of the projection's
/// output, with `p` given q's strides, when the backend takes that; else a
/// contiguous copy with `p` as it is.
fn query<'a>(
    engine: &Engine,
    (backend, device): (&dyn AttentionBackend, &Device),
    q: Columns<'a>,
    first: usize,
    p: &AttentionProblem,
) -> Result<(AttentionInput<'a>, AttentionProblem), ModelError> {
    let view = engine.attention_input(q, first, p.q_shape(), p.dtype, true)?;
    let layout = *view.view().layout();
    if layout.is_contiguous() {
        return Ok((view, p.clone()));
    }
    let mut strided = p.clone();
    strided.strides.set(TensorRole::Q, Some(layout.strides));
    if Registry::reasons(backend, &strided, device).is_empty() {
        return Ok((view, strided));
    }
    Ok((engine.attention_input(q, first, p.q_shape(), p.dtype, false)?, p.clone()))
}

/// Maximal runs of spans that are adjacent in rows and share (start, len).
fn groups(spans: &[Span]) -> Vec<&[Span]> {
    runs(spans, |a, b| (a.start, a.len) == (b.start, b.len))
}

/// Maximal runs of spans that are adjacent in rows and share `len` (a
/// paged call takes one length per sequence).
fn paged_groups(spans: &[Span]) -> Vec<&[Span]> {
    runs(spans, |a, b| a.len == b.len)
}

fn runs(spans: &[Span], same: impl Fn(&Span, &Span) -> bool) -> Vec<&[Span]> {
    let mut out = Vec::new();
    let mut begin = 0;
    for i in 1..=spans.len() {
        let ends = i == spans.len() || {
            let (a, b) = (&spans[i - 1], &spans[i]);
            !same(a, b) || a.first_row + a.len != b.first_row
        };
        if ends {
            out.push(&spans[begin..i]);
            begin = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seq: usize, start: usize, len: usize, first_row: usize) -> Span {
        Span { seq: SeqId(seq), start, len, first_row }
    }

    #[test]
    fn groups_are_adjacent_equal_shapes() {
        let spans = [span(0, 4, 1, 0), span(1, 4, 1, 1), span(2, 7, 1, 2), span(3, 7, 1, 3), span(4, 7, 2, 4)];
        let g: Vec<Vec<usize>> = groups(&spans).iter().map(|g| g.iter().map(|s| s.seq.0).collect()).collect();
        assert_eq!(g, vec![vec![0, 1], vec![2, 3], vec![4]]);
        // Same shape but not adjacent in rows: separate calls.
        let spans = [span(0, 4, 1, 0), span(1, 4, 1, 5)];
        assert_eq!(groups(&spans).len(), 2);
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn paged_groups_merge_different_cached_lengths() {
        let spans = [span(0, 4, 1, 0), span(1, 9, 1, 1), span(2, 7, 1, 2), span(3, 7, 2, 3), span(4, 1, 2, 5)];
        let g: Vec<Vec<usize>> = paged_groups(&spans).iter().map(|g| g.iter().map(|s| s.seq.0).collect()).collect();
        assert_eq!(g, vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(paged_groups(&[span(0, 4, 1, 0), span(1, 4, 1, 5)]).len(), 2);
    }
}
