//! `mqa-replicate`: GQA/MQA by copying. A kernel expands K and V to one head
//! per query head in a workspace leased from the device, then the dense
//! fused kernel runs on the copy. Native GQA (`flash-*`) reads K/V in place
//! and wins in auto; this backend exists for the design the project grew
//! from and as a second opinion in differential tests.

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall, GpuCall};
use crate::backends::gpu_flash::launch::{self, FlashPointers};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::{Device, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::{ExpandKvParams, QkvoStrides};
use crate::kernels::{KernelSpec, REPLICATE_EXPAND_KV};
use crate::problem::{AttentionProblem, MaskKind, TensorRole};

/// Largest K+V copy (bytes) it will lease; bigger problems are rejected
/// with the numbers, and auto moves on.
pub const WORKSPACE_CAP: usize = 4 << 30;
const THREADS: u32 = 128;
/// Enough blocks to fill any current GPU; the kernel grid-strides the rest.
const MAX_BLOCKS: usize = 65536;

pub struct MqaReplicate;

inventory::submit! { BackendRegistration { create: || Box::new(MqaReplicate) } }

/// The problem the fused kernel runs: Q and O keep their strides, K and V
/// are the contiguous copy with one head per query head.
fn replicated(p: &AttentionProblem) -> AttentionProblem {
    let mut dense = p.clone();
    dense.strides.set(TensorRole::K, None);
    dense.strides.set(TensorRole::V, None);
    dense.num_kv_heads = p.num_q_heads;
    dense
}

/// Bytes of the replicated K and V.
fn copy_bytes(p: &AttentionProblem) -> Option<usize> {
    [p.batch, p.seq_kv, p.num_q_heads, p.head_dim, p.dtype.size_in_bytes(), 2]
        .iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x))
}

fn spec(dtype: DType) -> KernelSpec {
    KernelSpec::new(REPLICATE_EXPAND_KV, "rf_expand_kv").define("RF_ELEM_BYTES", dtype.size_in_bytes())
}

impl AttentionBackend for MqaReplicate {
    fn name(&self) -> &'static str {
        "mqa-replicate"
    }

    fn priority(&self) -> i32 {
        200
    }

    fn description(&self) -> &'static str {
        "expands K/V heads to the query-head count in a workspace, then the dense fused kernel"
    }

    fn capabilities(&self) -> Capabilities {
        let workspace = "a K and V copy with one head per query head (cap 4 GiB)";
        Capabilities::gpu(HeadDims::List(launch::HEAD_DIMS), &MaskKind::ALL, workspace)
    }

    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut reasons = self.capabilities().reasons(p, device);
        reasons.extend(launch::layout_reasons(&replicated(p)));
        match copy_bytes(p) {
            Some(n) if n <= WORKSPACE_CAP => {}
            needed => reasons.push(Unsupported::Workspace { what: "replicated K and V", needed, cap: WORKSPACE_CAP }),
        }
        reasons
    }

    fn kernels(&self) -> Vec<KernelSpec> {
        let mut specs: Vec<KernelSpec> = [DType::F32, DType::BF16].iter().map(|&d| spec(d)).collect();
        specs.extend(launch::all_specs());
        specs
    }

    fn run(&self, call: CheckedCall<'_>) -> Result<(), BackendError> {
        let p = call.problem();
        let GpuCall { gpu, q, k, v, o, strides } = call.gpu_pointers(self.name())?;
        let internal = || BackendError::Internal { backend: self.name(), what: "checked problem exceeds the cap" };
        let bytes = copy_bytes(p).ok_or_else(internal)?;
        let workspace = gpu.workspace(bytes)?;
        let (dst_k, dst_v) = (workspace.ptr(), workspace.ptr() + (bytes / 2) as u64);
        let rows = p.batch * p.seq_kv * p.num_q_heads;
        let params = ExpandKvParams {
            src_k: k,
            src_v: v,
            dst_k,
            dst_v,
            k_strides: strides.k,
            v_strides: strides.v,
            rows: rows as i64,
            seq: p.seq_kv as i32,
            heads_q: p.num_q_heads as i32,
            heads_kv: p.num_kv_heads as i32,
            head_dim: p.head_dim as i32,
        };
        let kernel = gpu.kernel(&spec(p.dtype))?;
        let cfg =
            LaunchConfig { grid: (rows.min(MAX_BLOCKS) as u32, 1, 1), block: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: rf_expand_kv takes RfExpandKvParams (layout probe-checked);
        // sources are the checked K/V views, destinations the workspace of
        // 2 * rows * head_dim elements.
        unsafe { gpu.launch_params(&kernel, &cfg, &params)? };
        let dense = replicated(p);
        let [k_strides, v_strides] = [TensorRole::K, TensorRole::V].map(|r| dense.strides_of(r).into());
        let ptrs = FlashPointers { q, k: dst_k, v: dst_v, o, lse: 0 };
        launch::launch(&gpu, self.name(), &dense, ptrs, QkvoStrides { k: k_strides, v: v_strides, ..strides })?;
        // Back to the pool once queued: later work on the stream runs after.
        drop(workspace);
        Ok(())
    }
}
