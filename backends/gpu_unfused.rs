//! `gpu-unfused`: attention as three steps on the GPU, the textbook way:
//! batched GEMM `S = scale * Q K^T` (f32 scores) → one row kernel applying
//! soft-cap, mask and a stable softmax → batched GEMM `O = P V`.
//!
//! GQA needs no K/V copies: the GEMMs address a KV head once per query head
//! (stride 0 inside a group, or one call per position within the group).
//! The score workspace is bounded by a cap (default 1 GiB, env
//! `ROCMFORGE_UNFUSED_WORKSPACE_MIB`); bigger problems run in chunks of
//! heads, and only a problem whose single head does not fit is rejected.

use crate::backend::{check_call, AttentionBackend, BackendError, BackendRegistration};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::{Device, DeviceBuffer, DeviceError, DeviceKind, GemmDesc, GpuDevice, KernelArg, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::{KernelSpec, SOFTMAX_ROWS};
use crate::problem::{AttentionProblem, Mask, MaskKind};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

/// Environment variable that sets the score-workspace cap in MiB.
pub const WORKSPACE_ENV: &str = "ROCMFORGE_UNFUSED_WORKSPACE_MIB";
const DEFAULT_WORKSPACE_BYTES: usize = 1 << 30;
const SOFTMAX_THREADS: u32 = 256;

pub struct GpuUnfused {
    workspace_cap: usize,
    /// Reused score/probability buffer, grown on demand, so a forward call
    /// allocates nothing in the steady state.
    workspace: Mutex<Option<DeviceBuffer>>,
}

inventory::submit! { BackendRegistration { create: || Box::new(GpuUnfused::from_env()) } }

impl GpuUnfused {
    /// A backend whose score workspace never exceeds `cap_bytes`.
    pub fn with_workspace_cap(cap_bytes: usize) -> GpuUnfused {
        GpuUnfused { workspace_cap: cap_bytes, workspace: Mutex::new(None) }
    }

    /// The cap from `ROCMFORGE_UNFUSED_WORKSPACE_MIB`, else 1 GiB. A value
    /// that is not a positive integer is ignored (the default applies).
    pub fn from_env() -> GpuUnfused {
        let cap = std::env::var(WORKSPACE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&mib| mib > 0)
            .and_then(|mib| mib.checked_mul(1 << 20))
            .unwrap_or(DEFAULT_WORKSPACE_BYTES);
        GpuUnfused::with_workspace_cap(cap)
    }

    pub fn workspace_cap(&self) -> usize {
        self.workspace_cap
    }

    fn spec(dtype: DType) -> KernelSpec {
        let code = match dtype {
            DType::F32 => "0",
            DType::F16 => "1",
            DType::BF16 => "2",
        };
        KernelSpec {
            file: "softmax_rows.hip",
            source: SOFTMAX_ROWS,
            entry: "softmax_rows",
            defines: vec![("P_DTYPE".to_string(), code.to_string())],
        }
    }
}

/// Workspace bytes one query head needs: f32 scores, plus a 16-bit copy of
/// the probabilities when the inputs are 16-bit (GEMM inputs share a dtype).
fn bytes_per_head(p: &AttentionProblem) -> Option<usize> {
    let per_score = 4 + if p.dtype == DType::F32 { 0 } else { p.dtype.size_in_bytes() };
    p.seq_q.checked_mul(p.seq_kv)?.checked_mul(per_score)
}

/// How many query heads one chunk holds: whole KV groups when several fit,
/// else a piece of one group. `None` when not even one head fits.
fn heads_per_chunk(p: &AttentionProblem, cap: usize) -> Option<usize> {
    // The softmax grid has one block per score row: keep rows within i32.
    let fit = (cap / bytes_per_head(p)?).min(i32::MAX as usize / p.seq_q);
    let g = p.group_size();
    match fit {
        0 => None,
        f if f >= p.num_q_heads => Some(p.num_q_heads),
        f if f >= g => Some(f / g * g),
        f => Some(f),
    }
}

/// One strided batch of heads inside a chunk: `count` query heads starting
/// at `q_head`, stepping `q_step`; their KV heads start at `kv_head`,
/// stepping `kv_step` (0 = all share one); score slots start at `slot`,
/// stepping `slot_step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeadBatch {
    q_head: usize,
    q_step: usize,
    kv_head: usize,
    kv_step: usize,
    slot: usize,
    slot_step: usize,
    count: usize,
}

/// The GEMM batches covering query heads `h0..h1` with group size `g`.
/// Chunks are either whole groups or lie inside one group.
fn head_batches(h0: usize, h1: usize, g: usize) -> Vec<HeadBatch> {
    let n = h1 - h0;
    if g == 1 {
        return vec![HeadBatch { q_head: h0, q_step: 1, kv_head: h0, kv_step: 1, slot: 0, slot_step: 1, count: n }];
    }
    if h0 / g == (h1 - 1) / g {
        return vec![HeadBatch { q_head: h0, q_step: 1, kv_head: h0 / g, kv_step: 0, slot: 0, slot_step: 1, count: n }];
    }
    // Whole groups: one batch per position t within the group.
    (0..g)
        .map(|t| HeadBatch {
            q_head: h0 + t,
            q_step: g,
            kv_head: h0 / g,
            kv_step: 1,
            slot: t,
            slot_step: g,
            count: n / g,
        })
        .collect()
}

/// Kernel mask bounds: (left, right), negative = unbounded.
fn mask_bounds(mask: Mask) -> (i64, i64) {
    match mask {
        Mask::None => (-1, -1),
        Mask::Causal => (-1, 0),
        Mask::SlidingWindow { left, right } => (left as i64, right as i64),
    }
}

fn i32_of(what: &str, v: usize) -> Result<i32, Unsupported> {
    i32::try_from(v).map_err(|_| Unsupported::Limit(format!("{what} {v} exceeds the 32-bit BLAS limit")))
}

impl AttentionBackend for GpuUnfused {
    fn name(&self) -> &'static str {
        "gpu-unfused"
    }

    fn priority(&self) -> i32 {
        100
    }

    fn description(&self) -> &'static str {
        "GEMM QK^T -> mask+softmax kernel -> GEMM PV; materializes scores in chunks"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device: DeviceKind::Gpu,
            dtypes: &DType::ALL,
            head_dims: HeadDims::Range { min: 1, max: usize::MAX },
            max_seq_q: None,
            max_seq_kv: None,
            masks: &MaskKind::ALL,
            max_group_size: None,
            softcap: true,
            deterministic: true,
            workspace: "scores of as many heads as fit the cap (default 1 GiB)",
        }
    }

    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut reasons = self.capabilities().reasons(p, device);
        if heads_per_chunk(p, self.workspace_cap).is_none() {
            let need = bytes_per_head(p).map_or("more than usize::MAX".to_string(), |b| format!("{b}"));
            reasons.push(Unsupported::Limit(format!(
                "one head's scores need {need} bytes, over the workspace cap of {} bytes",
                self.workspace_cap
            )));
        }
        for (what, v) in [
            ("seq_q", p.seq_q),
            ("seq_kv", p.seq_kv),
            ("num_q_heads * head_dim", p.num_q_heads.saturating_mul(p.head_dim)),
        ] {
            if let Err(r) = i32_of(what, v) {
                reasons.push(r);
            }
        }
        reasons
    }

    fn kernels(&self) -> Vec<KernelSpec> {
        DType::ALL.iter().map(|&d| GpuUnfused::spec(d)).collect()
    }

    fn forward(
        &self,
        p: &AttentionProblem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &mut Tensor,
    ) -> Result<(), BackendError> {
        let Device::Gpu(gpu) = check_call(self, p, q, k, v, out)? else {
            return Err(BackendError::Unsupported {
                backend: self.name(),
                reasons: vec![Unsupported::Device { needs: DeviceKind::Gpu, got: DeviceKind::Cpu }],
            });
        };
        let buffer = |t: &Tensor| {
            t.gpu_buffer().map(|b| b.ptr()).ok_or_else(|| DeviceError::Invalid("tensor is not on the GPU".into()))
        };
        let (qp, kp, vp, op) = (buffer(q)?, buffer(k)?, buffer(v)?, buffer(out)?);

        // check_call has already rejected a head that cannot fit; only the
        // error path re-runs the checks, to report them.
        let hpc = heads_per_chunk(p, self.workspace_cap).ok_or_else(|| BackendError::Unsupported {
            backend: self.name(),
            reasons: self.check(p, &Device::Gpu(gpu.clone())),
        })?;
        let per_head_scores = p.seq_q * p.seq_kv;
        let mut guard = self.workspace.lock().map_err(|_| DeviceError::Invalid("workspace lock poisoned".into()))?;
        let ws = ensure_workspace(&mut guard, &gpu, hpc * bytes_per_head(p).unwrap_or(usize::MAX))?;
        let scores = ws.ptr();
        // 16-bit probabilities sit after the f32 scores of the chunk.
        let probs = if p.dtype == DType::F32 { scores } else { scores + (hpc * per_head_scores * 4) as u64 };
        let kernel = gpu.kernel(&GpuUnfused::spec(p.dtype))?;
        let (win_left, win_right) = mask_bounds(p.mask);
        let softcap = p.softcap.unwrap_or(0.0);
        let es = p.dtype.size_in_bytes() as u64;
        let (d, g) = (p.head_dim, p.group_size());
        let (hq, hkv, sq, skv) = (p.num_q_heads, p.num_kv_heads, p.seq_q, p.seq_kv);
        let limit = |e: Unsupported| BackendError::Unsupported { backend: "gpu-unfused", reasons: vec![e] };
        let (m_sq, m_skv, m_d) = (i32_of("seq_q", sq).map_err(limit)?, i32_of("seq_kv", skv).map_err(limit)?, d as i32);
        let (ld_q, ld_kv) = ((hq * d) as i32, (hkv * d) as i32);

        for b in 0..p.batch {
            let q_base = qp + (b * sq * hq * d) as u64 * es;
            let kv_off = (b * skv * hkv * d) as u64 * es;
            let o_base = op + (b * sq * hq * d) as u64 * es;
            let mut h0 = 0;
            while h0 < hq {
                // Chunks never straddle a group unless they hold whole groups.
                let h1 = if hpc >= g { (h0 + hpc).min(hq) } else { (h0 + hpc).min((h0 / g + 1) * g) };
                let batches = head_batches(h0, h1, g);
                for hb in &batches {
                    let qk = GemmDesc {
                        trans_a: true,
                        trans_b: false,
                        m: m_skv,
                        n: m_sq,
                        k: m_d,
                        alpha: p.effective_scale(),
                        a: kp + kv_off + (hb.kv_head * d) as u64 * es,
                        lda: ld_kv,
                        stride_a: (hb.kv_step * d) as i64,
                        b: q_base + (hb.q_head * d) as u64 * es,
                        ldb: ld_q,
                        stride_b: (hb.q_step * d) as i64,
                        ab_type: p.dtype,
                        beta: 0.0,
                        c: scores + (hb.slot * per_head_scores * 4) as u64,
                        ldc: m_skv,
                        stride_c: (hb.slot_step * per_head_scores) as i64,
                        c_type: DType::F32,
                        batch: hb.count as i32,
                    };
                    // SAFETY: every matrix lies inside q/k (shapes checked by
                    // check_call) or the workspace (sized for hpc heads).
                    unsafe { gpu.gemm(&qk)? };
                }
                let rows = (h1 - h0) * sq;
                let cfg =
                    LaunchConfig { grid: (rows as u32, 1, 1), block: (SOFTMAX_THREADS, 1, 1), shared_mem_bytes: 0 };
                let args = [
                    KernelArg::Ptr(scores),
                    KernelArg::Ptr(probs),
                    KernelArg::I32(m_sq),
                    KernelArg::I32(m_skv),
                    KernelArg::F32(softcap),
                    KernelArg::I64(win_left),
                    KernelArg::I64(win_right),
                ];
                // SAFETY: arguments match softmax_rows's signature; `rows`
                // rows of seq_kv scores/probabilities lie in the workspace.
                unsafe { gpu.launch(&kernel, &cfg, &args)? };
                for hb in &batches {
                    let pv = GemmDesc {
                        trans_a: false,
                        trans_b: false,
                        m: m_d,
                        n: m_sq,
                        k: m_skv,
                        alpha: 1.0,
                        a: vp + kv_off + (hb.kv_head * d) as u64 * es,
                        lda: ld_kv,
                        stride_a: (hb.kv_step * d) as i64,
                        b: probs + (hb.slot * per_head_scores) as u64 * if p.dtype == DType::F32 { 4 } else { es },
                        ldb: m_skv,
                        stride_b: (hb.slot_step * per_head_scores) as i64,
                        ab_type: p.dtype,
                        beta: 0.0,
                        c: o_base + (hb.q_head * d) as u64 * es,
                        ldc: ld_q,
                        stride_c: (hb.q_step * d) as i64,
                        c_type: p.dtype,
                        batch: hb.count as i32,
                    };
                    // SAFETY: v and out shapes were checked; probabilities
                    // lie in the workspace.
                    unsafe { gpu.gemm(&pv)? };
                }
                h0 = h1;
            }
        }
        Ok(())
    }
}

/// The cached workspace, grown to at least `bytes`.
fn ensure_workspace<'a>(
    slot: &'a mut Option<DeviceBuffer>,
    gpu: &Arc<GpuDevice>,
    bytes: usize,
) -> Result<&'a DeviceBuffer, DeviceError> {
    let fits = matches!(slot, Some(b) if b.len_bytes() >= bytes && b.device().same_as(gpu));
    if !fits {
        *slot = None; // free the old one first
        *slot = Some(gpu.alloc(bytes)?);
    }
    slot.as_ref().ok_or_else(|| DeviceError::Invalid("workspace missing".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(h0: usize, h1: usize, g: usize) -> Vec<(usize, usize, usize)> {
        // (query head, kv head, slot) triples the batches address.
        let mut v: Vec<_> = head_batches(h0, h1, g)
            .iter()
            .flat_map(|b| {
                (0..b.count)
                    .map(move |i| (b.q_head + i * b.q_step, b.kv_head + i * b.kv_step, b.slot + i * b.slot_step))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn batches_cover_each_head_once_with_its_kv_head() {
        for (h0, h1, g) in [(0, 8, 1), (2, 5, 1), (0, 8, 4), (4, 12, 4), (0, 32, 8), (8, 11, 8), (3, 4, 4)] {
            let got = covered(h0, h1, g);
            let want: Vec<_> = (h0..h1).map(|h| (h, h / g, h - h0)).collect();
            assert_eq!(got, want, "h0={h0} h1={h1} g={g}");
        }
    }

    #[test]
    fn chunking_respects_cap_and_groups() {
        let p = AttentionProblem::new(1, 128, 128, 32, 8, 64, DType::F32);
        let head = 128 * 128 * 4;
        assert_eq!(heads_per_chunk(&p, 1 << 30), Some(32));
        assert_eq!(heads_per_chunk(&p, head * 10), Some(8)); // whole groups of 4
        assert_eq!(heads_per_chunk(&p, head * 3), Some(3)); // inside one group
        assert_eq!(heads_per_chunk(&p, head - 1), None);
        let bf = AttentionProblem { dtype: DType::BF16, ..p };
        assert_eq!(bytes_per_head(&bf), Some(128 * 128 * 6));
    }

    #[test]
    fn too_big_head_is_rejected_with_reason() {
        let b = GpuUnfused::with_workspace_cap(1000);
        let p = AttentionProblem::new(1, 64, 64, 1, 1, 8, DType::F32);
        let reasons = b.check(&p, &Device::Cpu);
        assert!(reasons.iter().any(|r| r.to_string().contains("workspace cap of 1000 bytes")), "{reasons:?}");
    }
}
