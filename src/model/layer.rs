//! The attention layer: q/k/v projections (optional biases), RoPE on q and
//! k, the new keys and values appended to the cache, attention over the
//! cache through the backend the [`Dispatcher`] selects, and the output
//! projection.
//!
//! Sequences in one call may have different cached lengths. Those with the
//! same (cached length, new tokens) form one batched attention call; the
//! problem has one `seq_kv` for its whole batch.

use super::config::ModelConfig;
use super::dispatch::{AttentionChoice, Dispatcher, ShapeClass};
use super::error::ModelError;
use super::kv_cache::{KvCache, SeqId};
use super::ops::Linear;
use super::rope::{Positions, Rope};
use crate::device::Device;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask, TensorRole};
use crate::registry::{AttentionConfig, Registry};
use crate::tensor::{HostData, Tensor, TensorView};
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

/// The four projections of one layer.
pub struct Projections {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
}

pub struct AttentionLayer {
    index: usize,
    proj: Projections,
    rope: Rope,
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
    ) -> Result<AttentionLayer, ModelError> {
        // A window of w positions includes the query's own: w - 1 to the left.
        let mask = match config.layer_windows.get(index).copied().flatten() {
            Some(w) => Mask::SlidingWindow { left: w - 1, right: 0 },
            None => Mask::Causal,
        };
        Ok(AttentionLayer {
            index,
            proj,
            rope: Rope::new(&config.rope, config.head_dim)?,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            mask,
            dtype,
            dispatcher: Dispatcher::new(index, attention, device),
        })
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
    pub fn forward(&mut self, x: &[f32], spans: &[Span], cache: &mut dyn KvCache) -> Result<Vec<f32>, ModelError> {
        let rows = spans.iter().map(|s| s.len).sum::<usize>();
        let mut q = self.proj.q.forward(x);
        let mut k = self.proj.k.forward(x);
        let v = self.proj.v.forward(x);
        let positions: Vec<usize> = spans.iter().flat_map(|s| s.start..s.start + s.len).collect();
        self.rope.apply(&mut q, self.num_heads, Positions::OneD(&positions))?;
        self.rope.apply(&mut k, self.num_kv_heads, Positions::OneD(&positions))?;
        let kv_row = self.num_kv_heads * self.head_dim;
        for s in spans {
            let range = s.first_row * kv_row..(s.first_row + s.len) * kv_row;
            cache.append(self.index, s.seq, &k[range.clone()], &v[range])?;
        }
        let q_row = self.num_heads * self.head_dim;
        let mut attn = vec![0.0f32; rows * q_row];
        let mut groups: BTreeMap<(usize, usize), Vec<&Span>> = BTreeMap::new();
        for s in spans {
            groups.entry((s.start, s.len)).or_default().push(s);
        }
        for ((start, len), group) in groups {
            let out = self.attend(&q, &group, start + len, len, cache)?;
            for (b, s) in group.iter().enumerate() {
                let dst = s.first_row * q_row..(s.first_row + len) * q_row;
                attn[dst].copy_from_slice(&out[b * len * q_row..(b + 1) * len * q_row]);
            }
        }
        Ok(self.proj.o.forward(&attn))
    }

    /// One batched attention call for sequences that share their cached
    /// length: `len` new queries each against `kv_len` cached keys. Reads
    /// the cache in place when it can offer strided views on the backend's
    /// device and the chosen backend accepts them; otherwise from a gathered
    /// contiguous copy.
    fn attend(
        &mut self,
        q_rows: &[f32],
        group: &[&Span],
        kv_len: usize,
        len: usize,
        cache: &dyn KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let p = AttentionProblem::new(group.len(), len, kv_len, h, hkv, d, self.dtype).with_mask(self.mask);
        // The choice is made on the contiguous problem, so it does not
        // depend on how the cache happens to be laid out.
        let backend = self.dispatcher.backend_for(&p)?;
        let device = self.dispatcher.device().clone();
        let seqs: Vec<SeqId> = group.iter().map(|s| s.seq).collect();
        let q: Vec<f32> =
            group.iter().flat_map(|s| &q_rows[s.first_row * h * d..(s.first_row + len) * h * d]).copied().collect();
        let q = Tensor::from_f32(p.q_shape(), self.dtype, &q)?.to_device(&device)?;
        let mut out = Tensor::nan(p.out_shape(), self.dtype, &device)?;
        let run = |p: &AttentionProblem, k: TensorView<'_>, v: TensorView<'_>, out: &mut Tensor| {
            backend.forward(p, &q, k, v, out).map_err(|source| ModelError::Backend {
                layer: self.index,
                backend: backend.name(),
                source,
            })
        };
        if let Some(views) = cache.views(self.index, &seqs, kv_len)?.filter(|v| same_device(&v.k.device(), &device)) {
            let mut strided = p.clone();
            for (role, view) in [(TensorRole::K, &views.k), (TensorRole::V, &views.v)] {
                strided.strides.set(role, (!view.layout().is_contiguous()).then_some(view.layout().strides));
            }
            if Registry::reasons(backend, &strided, &device).is_empty() {
                run(&strided, views.k, views.v, &mut out)?;
                self.dispatcher.note_in_place(ShapeClass::of(&p));
                return Ok(out.to_f32_vec()?);
            }
        }
        let (mut k, mut v) = (HostData::F32(Vec::new()), HostData::F32(Vec::new()));
        cache.gather(self.index, &seqs, kv_len, &mut k, &mut v)?;
        let k = Tensor::from_host(p.kv_shape(), k)?.to_device(&device)?;
        let v = Tensor::from_host(p.kv_shape(), v)?.to_device(&device)?;
        run(&p, k.view(), v.view(), &mut out)?;
        Ok(out.to_f32_vec()?)
    }
}

fn same_device(a: &Device, b: &Device) -> bool {
    match (a, b) {
        (Device::Cpu, Device::Cpu) => true,
        (Device::Gpu(x), Device::Gpu(y)) => x.same_as(y),
        _ => false,
    }
}
