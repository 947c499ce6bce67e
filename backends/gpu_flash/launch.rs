//! Compiling and launching the fused forward kernel (`kernels/flash/fwd.hip`)
//! for one problem: the specialization (dtype, head_dim, f32 mode), the
//! parameter struct, and the launch shape the kernel exports itself
//! (`rf_flash_fwd_launch` = {BLOCK_M, threads, shared bytes, BLOCK_N}), so
//! the tiling logic lives in the kernel alone. Shared by `flash-causal`,
//! `flash-noncausal` and `mqa-replicate`.

use crate::backend::BackendError;
use crate::capabilities::Unsupported;
use crate::device::{DeviceError, GpuDevice, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::{FlashParams, QkvoStrides};
use crate::kernels::{KernelSpec, FLASH_FWD};
use crate::problem::{AttentionProblem, Mask, TensorRole};
use std::sync::Arc;

/// Head dimensions the kernel is specialized for.
pub const HEAD_DIMS: &[usize] = &[32, 64, 96, 128, 256];

/// How an f32 problem uses the matrix units (`RF_F32_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum F32Mode {
    /// Plain FMA on every architecture.
    Simt,
    /// Tensor cores with a big + small TF32 split (3 products): f32 accuracy.
    Tf32x3,
}

impl F32Mode {
    fn code(self) -> u32 {
        match self {
            F32Mode::Simt => 0,
            F32Mode::Tf32x3 => 1,
        }
    }
}

/// The specialization for `dtype` and `head_dim`. f32 names its mode; the
/// kernel's own default (TF32x3 on sm_80+, SIMT elsewhere) applies when
/// `f32_mode` is `None`.
pub fn spec(dtype: DType, head_dim: usize, f32_mode: Option<F32Mode>) -> KernelSpec {
    let spec =
        KernelSpec::new(FLASH_FWD, "rf_flash_fwd").define_dtype("RF_DTYPE", dtype).define("RF_HEAD_DIM", head_dim);
    match (dtype, f32_mode) {
        (DType::F32, Some(mode)) => spec.define("RF_F32_MODE", mode.code()),
        _ => spec,
    }
}

/// Every specialization the flash backends may compile. f32 uses the
/// kernel's per-target default (split-TF32 where `mma.sync` exists, SIMT
/// elsewhere), so every spec compiles for every target. One explicit SIMT
/// variant (head_dim 128) keeps the SIMT flavour compiled by NVRTC too,
/// where the default never selects it; one is enough, because the head
/// dim only changes loop bounds, and CI compiles every spec for six targets.
pub fn all_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for &d in HEAD_DIMS {
        for dtype in DType::ALL {
            specs.push(spec(dtype, d, None));
        }
    }
    specs.push(spec(DType::F32, 128, Some(F32Mode::Simt)));
    specs
}

/// The kernel reads rows with 16-byte vector loads: every stride must be a
/// multiple of this many elements (and every base address 16-byte aligned).
pub fn stride_multiple(dtype: DType) -> usize {
    16 / dtype.size_in_bytes()
}

/// Layout reasons the kernel cannot take `p` (strides not multiples of the
/// vector width, sizes past its 32-bit indexing).
pub fn layout_reasons(p: &AttentionProblem) -> Vec<Unsupported> {
    let multiple = stride_multiple(p.dtype);
    let mut out = Vec::new();
    for role in TensorRole::ALL {
        if p.strides_of(role).iter().any(|s| s % multiple != 0) {
            out.push(Unsupported::StrideMultiple { tensor: role, multiple });
        }
    }
    // Grid: x = query tiles (< 2^31), y = query heads and z = batch (< 2^16).
    for (what, v, max) in [
        ("seq_q", p.seq_q, i32::MAX as usize),
        ("seq_kv", p.seq_kv, i32::MAX as usize),
        ("num_q_heads", p.num_q_heads, 65535),
        ("batch", p.batch, 65535),
    ] {
        if v > max {
            out.push(Unsupported::IndexRange { what, value: v, max });
        }
    }
    out
}

/// Device addresses of one call's tensors (element [0,0,0,0] of each).
#[derive(Clone, Copy, Debug)]
pub struct FlashPointers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    /// f32 [batch, heads_q, seq_q] log-sum-exp output, or 0.
    pub lse: u64,
}

/// Queues the fused forward for `p` on tensors with `strides`: the checked
/// call's (`CheckedCall::kernel_strides`), or K/V of a workspace described
/// by `p` (mqa-replicate).
pub fn launch(
    gpu: &Arc<GpuDevice>,
    backend: &'static str,
    p: &AttentionProblem,
    ptrs: FlashPointers,
    strides: QkvoStrides,
) -> Result<(), BackendError> {
    crate::backend::require_16_byte_aligned(backend, [("q", ptrs.q), ("k", ptrs.k), ("v", ptrs.v), ("out", ptrs.o)])?;
    let kernel = gpu.kernel(&spec(p.dtype, p.head_dim, None))?;
    let shape = gpu.kernel_global_i32s(&kernel, "rf_flash_fwd_launch")?;
    let (block_m, threads, smem) = match shape[..] {
        [bm, t, s, _] if bm > 0 && t > 0 && s >= 0 => (bm as u32, t as u32, s as u32),
        _ => return Err(DeviceError::Property { property: "rf_flash_fwd_launch", value: shape.len() as i64 }.into()),
    };
    let (window_left, window_right) = match p.mask {
        Mask::None => (-1, -1),
        Mask::Causal => (-1, 0),
        Mask::SlidingWindow { left, right } => (left as i64, right as i64),
    };
    // `layout_reasons` (part of `check`) bounded every size below by i32::MAX.
    let params = FlashParams {
        q: ptrs.q,
        k: ptrs.k,
        v: ptrs.v,
        o: ptrs.o,
        lse: ptrs.lse,
        strides,
        window_left,
        window_right,
        batch: p.batch as i32,
        seq_q: p.seq_q as i32,
        seq_kv: p.seq_kv as i32,
        heads_q: p.num_q_heads as i32,
        heads_kv: p.num_kv_heads as i32,
        scale: p.effective_scale(),
        softcap: p.softcap.unwrap_or(0.0),
        reserved: 0,
    };
    let grid_x = p.seq_q.div_ceil(block_m as usize);
    let cfg = LaunchConfig {
        grid: (grid_x as u32, p.num_q_heads as u32, p.batch as u32),
        block: (threads, 1, 1),
        shared_mem_bytes: smem,
    };
    // SAFETY: rf_flash_fwd takes rf_flash_params by value (layout checked by
    // the offline probe); every pointer addresses a tensor whose shape and
    // strides CheckedCall verified against `p` (or a workspace `p` describes).
    unsafe { gpu.launch_params(&kernel, &cfg, &params)? };
    Ok(())
}
