//! Compiling and launching the decode kernel for one problem: the
//! specializations, the parameter struct, the split plan, the workspace of
//! partial outputs and the merge counters (one launch: the last block of a
//! row merges the splits). The launch shape comes from the kernel
//! itself (`rf_decode_launch` = {threads, shared bytes, BLOCK_N, rows per
//! block, shared bytes of one multiprocessor}), read once per device and
//! specialization (with the compiled kernels), so the tiling lives in the
//! kernel alone.

use super::counters::Counters;
use super::split::{self, SplitInput, SplitPlan};
use super::tuning::{tuning, Tuning};
use crate::backend::BackendError;
use crate::capabilities::Unsupported;
use crate::device::{DeviceError, GpuDevice, Kernel, LaunchConfig};
use crate::dtype::DType;
use crate::kernels::params::{DecodeParams, QkvoStrides};
use crate::kernels::{KernelSpec, DECODE_SPLITKV, DECODE_SPLITKV_MMA};
use crate::problem::{AttentionProblem, Mask, TensorRole};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Head dimensions the kernel is specialized for.
pub const HEAD_DIMS: &[usize] = &[32, 64, 96, 128, 256];
/// Paged block sizes (powers of two: the kernel shifts).
pub const BLOCK_SIZES: &[usize] = &[16, 32];
/// Longest query sequence (rows per KV head are group × seq_q).
pub const MAX_SEQ_Q: usize = 8;
/// Whether calls are queued with programmatic dependent launch where the
/// device has it (NVIDIA sm_90+): the kernel's blocks start while the
/// stream's previous kernel finishes and wait (`griddepcontrol.wait`, first
/// thing in the kernel) before touching memory. `ROCMFORGE_DECODE_TUNE=pdl=N`
/// overrides it.
pub const OVERLAP_LAUNCH: bool = true;
/// Largest workspace of partial outputs; more splits are cut back to fit.
pub const WORKSPACE_CAP: usize = 256 << 20;

/// Head dimensions with a wide variant of the f16/bf16 kernel (128-key
/// tiles, one block per multiprocessor), for calls whose grid comes from
/// splitting the keys (`split::wide`). Measured at 128 only (docs/perf.md,
/// decode4); at 256 its stages would not fit a block.
pub const WIDE_HEAD_DIMS: &[usize] = &[128];

/// The split kernel for `dtype` and `head_dim`: f16 and bf16 on the
/// matrix units (`decode/splitkv_mma.hip`, `wide`: its wide variant), f32
/// on plain FMAs at f32 accuracy (`decode/splitkv.hip`). Same parameters
/// and launch contract.
pub fn split_spec(dtype: DType, head_dim: usize, wide: bool) -> KernelSpec {
    let file = if dtype == DType::F32 { DECODE_SPLITKV } else { DECODE_SPLITKV_MMA };
    let spec = KernelSpec::new(file, "rf_decode_split").define_dtype("RF_DTYPE", dtype).define("RF_HEAD_DIM", head_dim);
    if wide {
        spec.define("RF_DECODE_WIDE", 1)
    } else {
        spec
    }
}

/// Whether `dtype` and `head_dim` have a wide variant.
pub fn has_wide(dtype: DType, head_dim: usize) -> bool {
    dtype != DType::F32 && WIDE_HEAD_DIMS.contains(&head_dim)
}

/// Every specialization the backend may compile: one per dtype and head
/// dim, and the wide variants.
pub fn all_specs() -> Vec<KernelSpec> {
    let variants = |dtype, d| [false, true].into_iter().filter(move |&wide| !wide || has_wide(dtype, d));
    DType::ALL
        .into_iter()
        .flat_map(|dtype| HEAD_DIMS.iter().flat_map(move |&d| variants(dtype, d).map(move |w| split_spec(dtype, d, w))))
        .collect()
}

/// Elements per 16-byte vector: every stride must be a multiple of it.
pub fn stride_multiple(dtype: DType) -> usize {
    16 / dtype.size_in_bytes()
}

/// Rows of one block (`RMAX` in the kernel); the grid's y covers KV heads
/// times row chunks.
const ROWS_PER_BLOCK: usize = 16;

/// Blocks along the query rows of one KV head (group size × seq_q rows).
fn row_chunks(p: &AttentionProblem) -> usize {
    (p.group_size() * p.seq_q).div_ceil(ROWS_PER_BLOCK)
}

/// What the kernel cannot take: strides off the vector width, sizes past
/// its grid or 32-bit indices, block sizes it has no shift for.
pub fn layout_reasons(p: &AttentionProblem) -> Vec<Unsupported> {
    let multiple = stride_multiple(p.dtype);
    let mut out = Vec::new();
    for role in TensorRole::ALL {
        if p.strides_of(role).iter().any(|s| s % multiple != 0) {
            out.push(Unsupported::StrideMultiple { tensor: role, multiple });
        }
    }
    let chunks = row_chunks(p);
    let mut limits = vec![
        ("batch", p.batch, 65535),
        ("num_kv_heads x row chunks", p.num_kv_heads * chunks, 65535),
        ("seq_kv", p.seq_kv, i32::MAX as usize),
        ("num_q_heads", p.num_q_heads, i32::MAX as usize),
    ];
    if let Some(paged) = p.paged {
        if !BLOCK_SIZES.contains(&paged.block_size) {
            out.push(Unsupported::BlockSize { got: paged.block_size, supported: BLOCK_SIZES });
        }
        limits.push(("num_blocks", paged.num_blocks, i32::MAX as usize));
        limits.push((
            "table_width x block_size",
            paged.table_width.saturating_mul(paged.block_size),
            i32::MAX as usize,
        ));
    }
    for (what, value, max) in limits {
        if value > max {
            out.push(Unsupported::IndexRange { what, value, max });
        }
    }
    out
}

/// Device addresses of one call.
#[derive(Clone, Copy, Debug)]
pub struct DecodePointers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    /// i32 block table and sequence lengths of a paged call, else 0.
    pub block_table: u64,
    pub seq_lens: u64,
}

/// The split kernel's launch facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    threads: u32,
    smem: u32,
    block_n: usize,
    rows: usize,
    sm_shared: usize,
}

/// The compiled kernel of one (device, dtype, head_dim) and its exported
/// launch shape, looked up once: a decode call is short enough (tens of
/// microseconds at batch 1) that rebuilding kernel keys and reading the
/// shape back from the device on every call would show.
#[derive(Clone, Copy, Debug)]
struct Prepared {
    split: Kernel,
    shape: Shape,
}

type PreparedKey = (crate::device::Vendor, usize, DType, usize, bool);

fn prepared(
    gpu: &GpuDevice,
    tuning: &Tuning,
    dtype: DType,
    head_dim: usize,
    wide: bool,
) -> Result<Prepared, BackendError> {
    static CACHE: OnceLock<Mutex<HashMap<PreparedKey, Prepared>>> = OnceLock::new();
    let key = (gpu.vendor(), gpu.ordinal(), dtype, head_dim, wide);
    let cache = CACHE.get_or_init(Default::default);
    let lock = || cache.lock().map_err(|_| DeviceError::LockPoisoned { what: "decode kernels" });
    if let Some(p) = lock()?.get(&key) {
        return Ok(*p);
    }
    let split = gpu.kernel(&tuning.apply(split_spec(dtype, head_dim, wide)))?;
    let raw = gpu.kernel_global_i32s(&split, "rf_decode_launch")?;
    let shape = match raw[..] {
        [t, s, bn, r, sm] if t > 0 && s > 0 && bn > 0 && r > 0 && sm > 0 => {
            Shape { threads: t as u32, smem: s as u32, block_n: bn as usize, rows: r as usize, sm_shared: sm as usize }
        }
        _ => return Err(DeviceError::Property { property: "rf_decode_launch", value: raw.len() as i64 }.into()),
    };
    let prepared = Prepared { split, shape };
    lock()?.insert(key, prepared);
    Ok(prepared)
}

/// The split plan for `p` on `gpu` with the kernel's `shape`, cut back
/// until the partial outputs fit `WORKSPACE_CAP`.
fn plan_for(gpu: &GpuDevice, tuning: &Tuning, p: &AttentionProblem, shape: &Shape) -> (SplitPlan, usize) {
    let input = SplitInput {
        seq_kv: p.seq_kv,
        batch: p.batch,
        heads_kv: p.num_kv_heads,
        rows: p.group_size() * p.seq_q,
        block_n: shape.block_n,
        rows_per_block: shape.rows,
        multiprocessors: gpu.info().multiprocessors as usize,
        blocks_per_sm: split::blocks_per_sm(shape.smem as usize, shape.sm_shared),
    };
    let mut plan = match tuning.split_tiles {
        Some(tiles) => split::plan_with_tiles(&input, tiles),
        None => split::plan(&input),
    };
    let rows = p.batch * p.seq_q * p.num_q_heads;
    let bytes = |splits: usize| splits.saturating_mul(rows).saturating_mul(p.head_dim + 1).saturating_mul(4);
    while plan.num_splits > 1 && bytes(plan.num_splits) > WORKSPACE_CAP {
        let per = p.seq_kv.div_ceil(plan.num_splits / 2).div_ceil(shape.block_n) * shape.block_n;
        plan = SplitPlan { num_splits: p.seq_kv.div_ceil(per), split_keys: per, row_chunks: plan.row_chunks };
    }
    let workspace = if plan.num_splits > 1 { bytes(plan.num_splits) } else { 0 };
    (plan, workspace)
}

fn window(mask: Mask) -> (i64, i64) {
    match mask {
        Mask::None => (-1, -1),
        Mask::Causal => (-1, 0),
        Mask::SlidingWindow { left, right } => (left as i64, right as i64),
    }
}

/// Queues the decode kernel for `p` (one launch; with more than one split
/// the last block of each row merges them).
pub fn launch(
    gpu: &Arc<GpuDevice>,
    backend: &'static str,
    p: &AttentionProblem,
    ptrs: DecodePointers,
    strides: QkvoStrides,
) -> Result<(), BackendError> {
    crate::backend::require_16_byte_aligned(backend, [("q", ptrs.q), ("k", ptrs.k), ("v", ptrs.v), ("out", ptrs.o)])?;
    let tuning = tuning()?;
    let sms = gpu.info().multiprocessors as usize;
    // On AMD the wide define changes nothing (rf_decode_split's 128-key
    // stage would not fit 64 KB of LDS): taking it there would only compile
    // the same kernel a second time.
    let wide = gpu.vendor() == crate::device::Vendor::Nvidia
        && has_wide(p.dtype, p.head_dim)
        && tuning.wide.unwrap_or_else(|| split::wide(p.batch, p.num_kv_heads, row_chunks(p), sms));
    let Prepared { split: kernel, shape } = prepared(gpu, tuning, p.dtype, p.head_dim, wide)?;
    let (plan, workspace_bytes) = plan_for(gpu, tuning, p, &shape);
    let workspace = if workspace_bytes > 0 { Some(gpu.workspace(workspace_bytes)?) } else { None };
    let rows_y = p.num_kv_heads * plan.row_chunks;
    let counters = if plan.num_splits > 1 { Some(Counters::lease(gpu, p.batch * rows_y)?) } else { None };
    let part_o = workspace.as_ref().map_or(0, |w| w.ptr());
    let rows = (p.batch * p.seq_q * p.num_q_heads) as u64;
    let part_lse = if part_o != 0 { part_o + rows * plan.num_splits as u64 * p.head_dim as u64 * 4 } else { 0 };
    let (window_left, window_right) = window(p.mask);
    let paged = p.paged;
    // `layout_reasons` (part of `check`) bounded every size below by i32::MAX.
    let params = DecodeParams {
        q: ptrs.q,
        k: ptrs.k,
        v: ptrs.v,
        o: ptrs.o,
        part_o,
        part_lse,
        block_table: if paged.is_some() { ptrs.block_table } else { 0 },
        seq_lens: if paged.is_some() { ptrs.seq_lens } else { 0 },
        strides,
        window_left,
        window_right,
        batch: p.batch as i32,
        seq_q: p.seq_q as i32,
        seq_kv: p.seq_kv as i32,
        heads_q: p.num_q_heads as i32,
        heads_kv: p.num_kv_heads as i32,
        table_width: paged.map_or(0, |g| g.table_width as i32),
        block_shift: paged.map_or(0, |g| g.block_size.trailing_zeros() as i32),
        num_blocks: paged.map_or(0, |g| g.num_blocks as i32),
        num_splits: plan.num_splits as i32,
        split_keys: plan.split_keys as i32,
        scale: p.effective_scale(),
        softcap: p.softcap.unwrap_or(0.0),
        reserved: 0,
        counters: counters.as_ref().map_or(0, |c| c.ptr()),
    };
    let cfg = LaunchConfig {
        grid: (plan.num_splits as u32, rows_y as u32, p.batch as u32),
        block: (shape.threads, 1, 1),
        shared_mem_bytes: shape.smem,
    };
    // SAFETY: rf_decode_split takes rf_decode_params by value (layout checked
    // by the offline probe). q, k, v and o address tensors whose shapes and
    // strides CheckedCall verified against `p` (k and v: the pools and a
    // block table of batch × table_width entries and batch lengths, each
    // guarded in the kernel); part_o / part_lse address a workspace of
    // num_splits × rows × (head_dim + 1) floats and `counters` batch ×
    // grid.y zeroed u32 (more than one split), alive until the kernel is
    // queued (work on the device's one stream runs in order).
    // The kernel's first act is griddepcontrol.wait (rf/decode_common.h), so
    // an overlapping launch touches nothing before the previous kernel is done.
    unsafe {
        if tuning.pdl.unwrap_or(OVERLAP_LAUNCH) {
            gpu.launch_params_overlapping(&kernel, &cfg, &params)?
        } else {
            gpu.launch_params(&kernel, &cfg, &params)?
        }
    };
    drop(counters);
    drop(workspace);
    Ok(())
}
