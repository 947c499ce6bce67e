//! `cpu-flash`: FlashAttention-2 style attention on the CPU.
//!
//! Work is split by rayon into tasks of up to `SUB` units, a unit being one
//! (batch, query head, block of `BQ` queries); a task's units share one kv
//! head (a GQA group's heads for one block, or consecutive blocks of one
//! head). A task walks the keys its units may see in tiles of `BK` keys and
//! runs every unit that needs a tile while the tile is hot in L1/L2, keeping
//! per query the running maximum `m`, the running sum `l` and an
//! unnormalised f32 output row (online softmax). Nothing of size
//! seq_q × seq_kv is ever allocated: a worker's scratch is
//! O(SUB·BQ·d + BK·d + BQ·BK) floats plus at most one 1 MiB K and one V
//! head copy (`VHEAD_MAX`), and is reused by every task the worker runs in
//! the call.
//!
//! * Scores are kept key-major (`S^T`, `[BK][BQ]`): QK^T broadcasts K
//!   elements against rows of a transposed, pre-scaled Q block (`[d][QTS]`,
//!   built once per unit), and the per-query softmax is made of vertical
//!   vector ops. The QK^T kernel also returns each query's tile maximum,
//!   and the P·V kernel applies the rescale of O as it loads it.
//! * Without soft-capping, log2(e) is folded into the Q scale and the
//!   softmax runs in base 2 (a cheaper `exp2` polynomial).
//! * GQA: query head `h` reads kv head `h / group`; K/V are never replicated.
//! * Masks: query rows have monotone key ranges (`Mask::key_range`), so a
//!   unit only visits the union of its rows' ranges (fully masked key blocks
//!   are skipped); inside a tile each query is clipped to its own range
//!   exactly. Queries with an empty range are written as zeros, never NaN.
//! * NaN/Inf follow the f64 reference: a row whose fast result is not
//!   finite is recomputed in f64 by the reference's rules (`exact.rs`), so
//!   NaN, ±inf and logits past f32 range give the reference's answer and
//!   never a silent zero row; finite rows cost one extra check.
//! * K and V are widened to f32 once per head per worker when the head fits
//!   `VHEAD_MAX` (`task.rs` says when they are read in place instead).
//!   Converting all of K/V up front would add an f32 copy of both, against
//!   the O(tile) memory goal.
//! * Micro-kernels are written once over a tiny SIMD trait and instantiated
//!   for AVX-512F, AVX2+FMA (picked at run time with
//!   `is_x86_feature_detected!`) and a portable 8-lane fallback; the
//!   softmax (a polynomial `exp`) is plain Rust that LLVM vectorises inside
//!   the same `#[target_feature]` functions. No `-C target-cpu` is needed.
//!   docs/perf.md has the assembly and profile evidence.
//! * Deterministic: every output element is produced by one unit, in a
//!   fixed order, whatever the thread count.
//!
//! * bf16 runs on AMX tiles (`tdpbf16ps`) where the CPU and OS allow it,
//!   and f16 too, split exactly into bf16 halves (`bf16/`: its own
//!   layouts, steps of 256 keys, AVX-512 softmax); `CpuIsa::kernels` and
//!   `explain` say which kernels a dtype gets on this CPU.
//!
//! Files, one job each: `isa` (detection, dispatch), `schedule` (the call,
//! tasks, rayon), `task` (one task's steps), `unit` (one unit's online
//! softmax step), `kernels` (micro-kernels), `simd` (vector types), `exp`
//! (softmax math), `exact` (the f64 path for non-finite rows), `scratch`
//! (buffers, head copies), `elem` (dtypes), `bf16/` (the dot-product
//! paths for bf16 and f16).

mod bf16;
mod elem;
mod exact;
mod exp;
mod isa;
mod kernels;
mod schedule;
mod scratch;
mod simd;
mod task;
mod unit;

#[cfg(test)]
mod tests;

pub use isa::{CpuIsa, IsaUnavailable};

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::Capabilities;
use crate::dtype::DType;
use crate::tensor::HostData;
use isa::VerifiedIsa;
use schedule::{run, Layouts};

/// Query rows per block.
const BQ: usize = 64;
/// Row stride of the transposed Q block (`[d][QTS]`): padded so its rows
/// do not all map to the same few L1 sets.
const QTS: usize = BQ + 16;
/// (q head, query block) units per task. A task's units share one kv head
/// and each K/V tile is used by all of them while it is hot in L1/L2: a
/// GQA group's heads for one query block, or consecutive query blocks of
/// one head (each unit still skips the tiles its mask hides).
const SUB: usize = 4;
/// Keys per tile.
const BK: usize = 64;
/// Largest per-thread copy of one kv head's K or V (in floats, = 1 MiB):
/// when a head fits, a worker converts it once and reuses it for all its
/// query blocks of that head instead of re-copying every tile for every
/// block (V must be copied when 16-bit or not 64-byte aligned).
const VHEAD_MAX: usize = 1 << 18;
/// Extra floats per row of the K/V head copies (see `task::KvPlan`).
const HEAD_PAD: usize = 16;
/// Query-row padding: every P·V kernel's row block divides it.
const ROW_ALIGN: usize = 8;
/// Key padding: every QK^T kernel's key block divides it.
const KEY_ALIGN: usize = 8;
/// Query padding of S^T: every QK^T kernel's query block divides it.
const COL_ALIGN: usize = 64;
/// Head-dim padding of V and O: every P·V kernel's narrowest block.
const DIM_ALIGN: usize = 16;

/// The cpu-flash backend. The registered instance picks the widest
/// micro-kernel family the CPU has; `with_isa` builds one that always runs
/// a given family (for tests and benchmarks), through the same entry point.
#[derive(Clone, Copy, Debug)]
pub struct CpuFlash {
    isa: VerifiedIsa,
}

inventory::submit! { BackendRegistration { create: || Box::new(CpuFlash::new()) } }

impl Default for CpuFlash {
    fn default() -> CpuFlash {
        CpuFlash::new()
    }
}

impl CpuFlash {
    /// The widest micro-kernel family this CPU supports.
    pub fn new() -> CpuFlash {
        CpuFlash { isa: VerifiedIsa::detect() }
    }

    /// Always runs `isa`'s micro-kernels; an error when the CPU lacks it.
    pub fn with_isa(isa: CpuIsa) -> Result<CpuFlash, IsaUnavailable> {
        Ok(CpuFlash { isa: VerifiedIsa::new(isa)? })
    }

    /// The micro-kernel family this instance runs.
    pub fn isa(&self) -> CpuIsa {
        self.isa.isa()
    }

    /// The kernels this instance runs for `dtype`, in words.
    pub fn kernels(&self, dtype: DType) -> &'static str {
        self.isa.isa().kernels(dtype)
    }

    /// Portable kernels with the bf16 products run by an emulator (tests).
    #[cfg(test)]
    fn emulated(e: isa::Emulated) -> CpuFlash {
        CpuFlash { isa: VerifiedIsa::emulated(e) }
    }

    /// Runs a checked call: the element type picks the instantiation.
    fn compute(&self, call: &mut CheckedCall<'_>) -> Result<(), BackendError> {
        let p = call.problem();
        let (q, k, v) = (call.q(), call.k(), call.v());
        let layouts = Layouts { q: *q.layout(), k: *k.layout(), v: *v.layout(), out: *call.out().layout() };
        let internal = |what| BackendError::Internal { backend: self.name(), what };
        let (Some(q), Some(k), Some(v), Some(out)) = (q.host(), k.host(), v.host(), call.out().host_mut()) else {
            return Err(internal("a checked CPU call holds a GPU tensor"));
        };
        let isa = self.isa;
        match (q, k, v, out) {
            (HostData::F32(q), HostData::F32(k), HostData::F32(v), HostData::F32(o)) => {
                run(p, (q, k, v, o), layouts, isa)
            }
            (HostData::F16(q), HostData::F16(k), HostData::F16(v), HostData::F16(o)) => {
                run(p, (q, k, v, o), layouts, isa)
            }
            (HostData::BF16(q), HostData::BF16(k), HostData::BF16(v), HostData::BF16(o)) => {
                run(p, (q, k, v, o), layouts, isa)
            }
            _ => return Err(internal("a checked call mixes dtypes")),
        }
        Ok(())
    }
}

impl AttentionBackend for CpuFlash {
    fn name(&self) -> &'static str {
        "cpu-flash"
    }

    fn priority(&self) -> i32 {
        10
    }

    fn description(&self) -> &'static str {
        "tiled online softmax (FlashAttention-2 style), rayon, AVX-512/AVX2 micro-kernels"
    }

    fn capabilities(&self) -> Capabilities {
        // Scratch grows linearly with head_dim and stays O(tile): no
        // kernel-imposed limit; rows are addressed through each view's strides.
        Capabilities::cpu_unlimited("O(tile) f32 scratch + <= 1 MiB K and V head copies per thread")
    }

    fn run(&self, mut call: CheckedCall<'_>) -> Result<(), BackendError> {
        self.compute(&mut call)
    }

    /// The kernels `dtype` gets on this CPU, the family's name, and why the
    /// wider families are not used.
    fn kernels_here(&self, dtype: DType) -> Option<String> {
        let isa = self.isa.isa();
        let wider: Vec<String> = CpuIsa::ALL
            .into_iter()
            .take_while(|w| *w != isa)
            .filter_map(|w| w.unavailable().map(|why| format!("{}: {why}", w.name())))
            .collect();
        let mut text = format!("{} ({} family)", isa.kernels(dtype), isa.name());
        if !wider.is_empty() {
            text.push_str(&format!("; not used here: {}", wider.join("; ")));
        }
        Some(text)
    }
}
