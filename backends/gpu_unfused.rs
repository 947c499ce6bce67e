//! `gpu-unfused`: attention as three steps on the GPU, the textbook way:
//! batched GEMM `S = scale * Q K^T` (f32 scores) → one row kernel applying
//! soft-cap, mask and a stable softmax → batched GEMM `O = P V`.
//!
//! GQA needs no K/V copies: the GEMMs address a KV head once per query head
//! (stride 0 inside a group, or one call per position within the group).
//! The score workspace is bounded by a cap (default 1 GiB, env
//! `ROCMFORGE_UNFUSED_WORKSPACE_MIB`); bigger problems run in chunks of
//! heads, and only a problem whose single head does not fit is rejected.
//! The workspace is leased from the device's arena for the call, so
//! concurrent calls on one or several GPUs never share or wait on it.
//! Strided Q/K/V/O are addressed in place (BLAS leading dimensions).
//!
//! Masked keys: the P V GEMM multiplies a masked key's V by probability 0,
//! and `0 · NaN` is NaN, so an Inf or NaN there would reach rows that do not
//! see it (docs/semantics.md). For masks that hide some key, one scan of V
//! per call (`rf_nonfinite_scan`) sets flags, and after each chunk's GEMM
//! `rf_masked_pv` returns at once unless a flag is set; then it recomputes
//! the chunk's rows over their visible keys only (kernels/unfused/masked_pv.hip).

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall, GpuCall};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::{Device, GemmDesc, GpuDevice, Kernel, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::{KernelStrides, SoftmaxParams};
use crate::kernels::{KernelSpec, UNFUSED_MASKED_PV, UNFUSED_SOFTMAX_ROWS};
use crate::problem::{AttentionProblem, Mask, MaskKind, TensorRole};
use std::sync::Arc;

/// Environment variable that sets the score-workspace cap in MiB.
pub const WORKSPACE_ENV: &str = "ROCMFORGE_UNFUSED_WORKSPACE_MIB";
const DEFAULT_WORKSPACE_BYTES: usize = 1 << 30;
const SOFTMAX_THREADS: u32 = 256;
/// `RF_SCAN_BLOCKS`, `RF_SCAN_THREADS` and `RF_PV_THREADS` of
/// kernels/unfused/masked_pv.hip: the scan's fixed grid (one flag per
/// block) and block size, and `rf_masked_pv`'s block size.
const SCAN_BLOCKS: u32 = 264;
const SCAN_THREADS: u32 = 512;
const PV_THREADS: u32 = 128;
/// Most blocks of `rf_masked_pv`; it grid-strides over the chunk's rows.
const PV_MAX_BLOCKS: usize = 4096;
/// Workspace bytes of the scan flags, after the chunk's scores and probabilities.
const FLAG_BYTES: usize = SCAN_BLOCKS as usize * 4;

crate::kernel_params! {
    /// `RfMaskedPvParams` of `unfused/masked_pv.hip`. Strides are in elements.
    pub struct MaskedPvParams as "RfMaskedPvParams" in "rf/unfused_params.h" {
        pub v: u64,
        pub o: u64,
        pub probs: u64,
        pub flags: u64,
        pub v_strides: KernelStrides,
        /// The batch stride is unused: `o` addresses batch `b` already.
        pub o_strides: KernelStrides,
        /// Mask bounds, negative = unbounded (`rf/mask.h`).
        pub win_left: i64,
        pub win_right: i64,
        pub batch: i32,
        pub b: i32,
        pub seq_q: i32,
        pub seq_kv: i32,
        pub heads_kv: i32,
        pub head_dim: i32,
        pub h0: i32,
        pub heads: i32,
        pub group: i32,
        pub reserved: i32,
    }
}

pub struct GpuUnfused {
    workspace_cap: usize,
    /// Why `ROCMFORGE_UNFUSED_WORKSPACE_MIB` could not be used, if so:
    /// every problem is then refused with it (a typo must not run with
    /// the default cap unnoticed).
    env_problem: Option<String>,
}

inventory::submit! { BackendRegistration { create: || Box::new(GpuUnfused::from_env()) } }

impl GpuUnfused {
    /// A backend whose score workspace never exceeds `cap_bytes`.
    pub fn with_workspace_cap(cap_bytes: usize) -> GpuUnfused {
        GpuUnfused { workspace_cap: cap_bytes, env_problem: None }
    }

    /// The cap from `ROCMFORGE_UNFUSED_WORKSPACE_MIB`, else 1 GiB. A value
    /// that is not a positive integer of MiB (that fits usize in bytes)
    /// makes the backend refuse every problem, naming the variable.
    pub fn from_env() -> GpuUnfused {
        GpuUnfused::from_env_value(std::env::var_os(WORKSPACE_ENV).as_deref())
    }

    /// `from_env` with the variable's value given (`None`: unset).
    pub fn from_env_value(value: Option<&std::ffi::OsStr>) -> GpuUnfused {
        let Some(value) = value else {
            return GpuUnfused::with_workspace_cap(DEFAULT_WORKSPACE_BYTES);
        };
        let text = value.to_string_lossy();
        match text.trim().parse::<usize>().ok().filter(|&mib| mib > 0).and_then(|mib| mib.checked_mul(1 << 20)) {
            Some(cap) => GpuUnfused::with_workspace_cap(cap),
            None => GpuUnfused {
                workspace_cap: DEFAULT_WORKSPACE_BYTES,
                env_problem: Some(format!(
                    "`{}` is not a positive whole number of MiB (unset it for the default 1024)",
                    crate::text::truncated(&text, 64)
                )),
            },
        }
    }

    pub fn workspace_cap(&self) -> usize {
        self.workspace_cap
    }

    fn spec(dtype: DType) -> KernelSpec {
        KernelSpec::new(UNFUSED_SOFTMAX_ROWS, "softmax_rows").define_dtype("P_DTYPE", dtype)
    }

    /// `rf_nonfinite_scan` or `rf_masked_pv` for `dtype`.
    fn masked_pv_spec(entry: &'static str, dtype: DType) -> KernelSpec {
        KernelSpec::new(UNFUSED_MASKED_PV, entry).define_dtype("P_DTYPE", dtype)
    }
}

/// Whether the mask hides some key from some row (then masked keys need the
/// guard). Key ranges only grow with the row, so the first row has the
/// smallest end and the last row the largest start.
fn some_key_masked(p: &AttentionProblem) -> bool {
    if p.seq_q == 0 || p.seq_kv == 0 {
        return false;
    }
    let (_, first_hi) = p.mask.key_range(0, p.seq_q, p.seq_kv);
    let (last_lo, _) = p.mask.key_range(p.seq_q - 1, p.seq_q, p.seq_kv);
    first_hi < p.seq_kv || last_lo > 0
}

/// Byte offset of the scan flags in the workspace: after `hpc` heads of
/// scores and probabilities, 256-byte aligned.
fn flags_offset(hpc: usize, p: &AttentionProblem) -> Option<usize> {
    Some(hpc.checked_mul(bytes_per_head(p)?)?.checked_add(255)? / 256 * 256)
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

fn i32_of(what: &'static str, v: usize) -> Result<i32, Unsupported> {
    i32::try_from(v).map_err(|_| Unsupported::IndexRange { what, value: v, max: i32::MAX as usize })
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
        let workspace = "scores of as many heads as fit the cap (default 1 GiB)";
        Capabilities::gpu(HeadDims::Range { min: 1, max: usize::MAX }, &MaskKind::ALL, workspace)
    }

    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut reasons = self.capabilities().reasons(p, device);
        if let Some(problem) = &self.env_problem {
            reasons.push(Unsupported::Environment { var: WORKSPACE_ENV, problem: problem.clone() });
        }
        if heads_per_chunk(p, self.workspace_cap).is_none() {
            reasons.push(Unsupported::Workspace {
                what: "one head's scores",
                needed: bytes_per_head(p),
                cap: self.workspace_cap,
            });
        }
        for role in TensorRole::ALL {
            // BLAS addresses a head's rows with a leading dimension >= head_dim.
            if p.strides_of(role)[1] < p.head_dim {
                reasons.push(Unsupported::Layout { tensor: role });
            }
        }
        let [q_seq, k_seq, v_seq, o_seq] = TensorRole::ALL.map(|r| p.strides_of(r)[1]);
        for (what, v) in [
            ("seq_q", p.seq_q),
            ("seq_kv", p.seq_kv),
            ("q seq stride", q_seq),
            ("k seq stride", k_seq),
            ("v seq stride", v_seq),
            ("out seq stride", o_seq),
        ] {
            if let Err(r) = i32_of(what, v) {
                reasons.push(r);
            }
        }
        reasons
    }

    fn kernels(&self) -> Vec<KernelSpec> {
        DType::ALL
            .iter()
            .flat_map(|&d| {
                [
                    GpuUnfused::spec(d),
                    GpuUnfused::masked_pv_spec("rf_nonfinite_scan", d),
                    GpuUnfused::masked_pv_spec("rf_masked_pv", d),
                ]
            })
            .collect()
    }

    fn run(&self, call: CheckedCall<'_>) -> Result<(), BackendError> {
        let p = call.problem();
        let GpuCall { gpu, q: qp, k: kp, v: vp, o: op, strides } = call.gpu_pointers(self.name())?;
        // `check` (run by CheckedCall) rejected a head that cannot fit.
        let internal =
            || BackendError::Internal { backend: self.name(), what: "checked problem exceeds the workspace" };
        let hpc = heads_per_chunk(p, self.workspace_cap).ok_or_else(internal)?;
        let flags_at = flags_offset(hpc, p).ok_or_else(internal)?;
        let workspace = gpu.workspace(flags_at + FLAG_BYTES)?;
        let per_head_scores = p.seq_q * p.seq_kv;
        let scores = workspace.ptr();
        // 16-bit probabilities sit after the f32 scores of the chunk.
        let probs = if p.dtype == DType::F32 { scores } else { scores + (hpc * per_head_scores * 4) as u64 };
        let kernel = gpu.kernel(&GpuUnfused::spec(p.dtype))?;
        let (win_left, win_right) = mask_bounds(p.mask);
        let es = p.dtype.size_in_bytes() as u64;
        let (d, g) = (p.head_dim, p.group_size());
        let (hq, sq, skv) = (p.num_q_heads, p.seq_q, p.seq_kv);
        let [sq_, sk_, sv_, so_] = TensorRole::ALL.map(|r| p.strides_of(r));
        // Every value cast below was range-checked by `check` (i32_of).
        let i32v = |v: usize| v as i32;
        let p_es = if p.dtype == DType::F32 { 4 } else { es };
        let guard = if some_key_masked(p) {
            let base = MaskedPvParams {
                v: vp,
                o: 0,
                probs,
                flags: scores + flags_at as u64,
                v_strides: strides.v,
                o_strides: strides.o,
                win_left,
                win_right,
                batch: i32v(p.batch),
                b: 0,
                seq_q: i32v(sq),
                seq_kv: i32v(skv),
                heads_kv: i32v(p.num_kv_heads),
                head_dim: i32v(d),
                h0: 0,
                heads: 0,
                group: i32v(g),
                reserved: 0,
            };
            Some(MaskGuard::start(&gpu, p.dtype, base)?)
        } else {
            None
        };

        for b in 0..p.batch {
            let q_base = qp + (b * sq_[0]) as u64 * es;
            let k_base = kp + (b * sk_[0]) as u64 * es;
            let v_base = vp + (b * sv_[0]) as u64 * es;
            let o_base = op + (b * so_[0]) as u64 * es;
            let mut h0 = 0;
            while h0 < hq {
                // Chunks never straddle a group unless they hold whole groups.
                let h1 = if hpc >= g { (h0 + hpc).min(hq) } else { (h0 + hpc).min((h0 / g + 1) * g) };
                let batches = head_batches(h0, h1, g);
                for hb in &batches {
                    let qk = GemmDesc {
                        trans_a: true,
                        trans_b: false,
                        m: i32v(skv),
                        n: i32v(sq),
                        k: i32v(d),
                        alpha: p.effective_scale(),
                        a: k_base + (hb.kv_head * sk_[2]) as u64 * es,
                        lda: i32v(sk_[1]),
                        stride_a: (hb.kv_step * sk_[2]) as i64,
                        b: q_base + (hb.q_head * sq_[2]) as u64 * es,
                        ldb: i32v(sq_[1]),
                        stride_b: (hb.q_step * sq_[2]) as i64,
                        ab_type: p.dtype,
                        beta: 0.0,
                        c: scores + (hb.slot * per_head_scores * 4) as u64,
                        ldc: i32v(skv),
                        stride_c: (hb.slot_step * per_head_scores) as i64,
                        c_type: DType::F32,
                        batch: hb.count as i32,
                    };
                    // SAFETY: every matrix lies inside q/k (shapes and strides
                    // checked by CheckedCall) or the workspace (hpc heads).
                    unsafe { gpu.gemm(&qk)? };
                }
                let rows = (h1 - h0) * sq;
                let cfg =
                    LaunchConfig { grid: (rows as u32, 1, 1), block: (SOFTMAX_THREADS, 1, 1), shared_mem_bytes: 0 };
                let params = SoftmaxParams {
                    scores,
                    probs,
                    win_left,
                    win_right,
                    seq_q: i32v(sq),
                    seq_kv: i32v(skv),
                    softcap: p.softcap.unwrap_or(0.0),
                    reserved: 0,
                };
                // SAFETY: softmax_rows takes RfSoftmaxParams (layout checked by
                // a test); `rows` rows of scores/probabilities lie in the workspace.
                unsafe { gpu.launch_params(&kernel, &cfg, &params)? };
                for hb in &batches {
                    let pv = GemmDesc {
                        trans_a: false,
                        trans_b: false,
                        m: i32v(d),
                        n: i32v(sq),
                        k: i32v(skv),
                        alpha: 1.0,
                        a: v_base + (hb.kv_head * sv_[2]) as u64 * es,
                        lda: i32v(sv_[1]),
                        stride_a: (hb.kv_step * sv_[2]) as i64,
                        b: probs + (hb.slot * per_head_scores) as u64 * p_es,
                        ldb: i32v(skv),
                        stride_b: (hb.slot_step * per_head_scores) as i64,
                        ab_type: p.dtype,
                        beta: 0.0,
                        c: o_base + (hb.q_head * so_[2]) as u64 * es,
                        ldc: i32v(so_[1]),
                        stride_c: (hb.q_step * so_[2]) as i64,
                        c_type: p.dtype,
                        batch: hb.count as i32,
                    };
                    // SAFETY: v and out shapes/strides were checked;
                    // probabilities lie in the workspace.
                    unsafe { gpu.gemm(&pv)? };
                }
                if let Some(guard) = &guard {
                    guard.fix_chunk(&gpu, b, h0, h1, o_base)?;
                }
                h0 = h1;
            }
        }
        // The lease returns the workspace to the device's pool here: work
        // queued later on the device's one stream runs after these kernels.
        drop(workspace);
        Ok(())
    }
}

/// The masked-key guard of one call (kernels/unfused/masked_pv.hip): the
/// scan ran at `start`; `fix_chunk` follows each chunk's P V GEMM.
struct MaskGuard {
    fix: Kernel,
    base: MaskedPvParams,
}

impl MaskGuard {
    /// Queues the scan of the whole V for Inf / NaN (one flag per block).
    fn start(gpu: &Arc<GpuDevice>, dtype: DType, base: MaskedPvParams) -> Result<MaskGuard, BackendError> {
        let scan = gpu.kernel(&GpuUnfused::masked_pv_spec("rf_nonfinite_scan", dtype))?;
        let fix = gpu.kernel(&GpuUnfused::masked_pv_spec("rf_masked_pv", dtype))?;
        let cfg = LaunchConfig { grid: (SCAN_BLOCKS, 1, 1), block: (SCAN_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: rf_nonfinite_scan takes RfMaskedPvParams (layout checked by
        // a test); it reads V within its checked shape and strides and writes
        // SCAN_BLOCKS flags inside the workspace.
        unsafe { gpu.launch_params(&scan, &cfg, &base)? };
        Ok(MaskGuard { fix, base })
    }

    /// Queues the recomputation of query heads `h0..h1` of batch `b` over
    /// visible keys only; the kernel returns at once when no flag is set.
    fn fix_chunk(&self, gpu: &Arc<GpuDevice>, b: usize, h0: usize, h1: usize, o_base: u64) -> Result<(), BackendError> {
        let rows = (h1 - h0) * self.base.seq_q as usize;
        let params = MaskedPvParams { o: o_base, b: b as i32, h0: h0 as i32, heads: (h1 - h0) as i32, ..self.base };
        let blocks = rows.min(PV_MAX_BLOCKS) as u32;
        let cfg = LaunchConfig { grid: (blocks, 1, 1), block: (PV_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: rf_masked_pv takes RfMaskedPvParams; it reads the chunk's
        // probabilities (workspace) and V, and writes O rows of batch b and
        // heads h0..h1, all inside checked shapes and strides.
        unsafe { gpu.launch_params(&self.fix, &cfg, &params)? };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_workspace_variable_refuses_every_problem_by_name() {
        use std::ffi::OsStr;
        assert_eq!(GpuUnfused::from_env_value(None).workspace_cap(), DEFAULT_WORKSPACE_BYTES);
        let ok = GpuUnfused::from_env_value(Some(OsStr::new(" 64 ")));
        assert_eq!((ok.workspace_cap(), ok.env_problem.is_none()), (64 << 20, true));
        let p = AttentionProblem::new(1, 4, 4, 1, 1, 8, DType::F32);
        for bad in ["abc", "0", "-1", "", "1e3", "99999999999999999999"] {
            let b = GpuUnfused::from_env_value(Some(OsStr::new(bad)));
            let reasons: Vec<String> = b.check(&p, &Device::Cpu).iter().map(|r| r.to_string()).collect();
            assert!(
                reasons.iter().any(|r| r.starts_with(WORKSPACE_ENV) && r.contains(&format!("`{bad}`"))),
                "{bad:?}: {reasons:?}"
            );
        }
    }

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
    fn masked_keys_are_found_for_every_mask_that_hides_one() {
        let p = |sq, skv, mask| AttentionProblem::new(1, sq, skv, 1, 1, 8, DType::F32).with_mask(mask);
        assert!(!some_key_masked(&p(16, 16, Mask::None)));
        assert!(some_key_masked(&p(16, 16, Mask::Causal)));
        // Decoding one query at the end: causal hides nothing.
        assert!(!some_key_masked(&p(1, 40, Mask::Causal)));
        assert!(some_key_masked(&p(1, 40, Mask::SlidingWindow { left: 3, right: 0 })));
        assert!(some_key_masked(&p(4, 40, Mask::SlidingWindow { left: 100, right: 0 })));
        assert!(!some_key_masked(&p(4, 40, Mask::SlidingWindow { left: 100, right: 100 })));
        assert!(!some_key_masked(&p(0, 40, Mask::Causal)));
        assert_eq!(flags_offset(3, &p(16, 16, Mask::Causal)), Some(3 * 16 * 16 * 4));
        let half = AttentionProblem::new(1, 3, 5, 1, 1, 8, DType::BF16);
        assert_eq!(flags_offset(1, &half), Some(256));
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
        let expected = Unsupported::Workspace { what: "one head's scores", needed: Some(64 * 64 * 4), cap: 1000 };
        assert!(reasons.contains(&expected), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.to_string().contains("workspace cap of 1000 bytes")), "{reasons:?}");
    }
}
