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
//! * K and V are widened to f32 once per head per worker when the head fits
//!   `VHEAD_MAX`, into 64-byte-aligned copies with a padded row stride (no
//!   L1 set conflicts), else once per tile; for f32 inputs with long heads
//!   K is read in place and V too when its rows are 64-byte aligned (split
//!   zmm loads cost ~30 % of the P·V kernel's speed). Converting all of K/V
//!   up front would add an f32 copy of both, against the O(tile) memory goal.
//! * Micro-kernels are written once over a tiny SIMD trait and instantiated
//!   for AVX-512F, AVX2+FMA (picked at run time with
//!   `is_x86_feature_detected!`) and a portable 8-lane fallback; the
//!   softmax (a polynomial `exp`) is plain Rust that LLVM vectorises inside
//!   the same `#[target_feature]` functions. No `-C target-cpu` is needed.
//!   docs/perf.md has the assembly and profile evidence.
//! * Deterministic: every output element is produced by one unit, in a
//!   fixed order, whatever the thread count.

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::{Capabilities, HeadDims};
use crate::device::DeviceKind;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask, MaskKind};
use crate::tensor::HostData;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

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
/// Extra floats per row of the K/V head copies (see `task`).
const HEAD_PAD: usize = 16;
/// Query-row padding: every P·V kernel's row block divides it.
const ROW_ALIGN: usize = 8;
/// Key padding: every QK^T kernel's key block divides it.
const KEY_ALIGN: usize = 8;
/// Query padding of S^T: every QK^T kernel's query block divides it.
const COL_ALIGN: usize = 64;
/// Head-dim padding of V and O: every P·V kernel's narrowest block.
const DIM_ALIGN: usize = 16;

/// The backend. The registered instance detects the best micro-kernels at
/// run time; `with_isa` configures an instance that uses the given family
/// (tests and benchmarks), still run through the same checked entry point.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFlash {
    isa: Option<CpuIsa>,
}

impl CpuFlash {
    /// An instance using `isa` (the detected one where the CPU lacks it).
    pub fn with_isa(isa: CpuIsa) -> CpuFlash {
        CpuFlash { isa: Some(isa) }
    }

    /// The micro-kernel family this instance runs on this CPU.
    pub fn isa(&self) -> CpuIsa {
        self.isa.filter(|i| i.available()).unwrap_or_else(CpuIsa::detect)
    }
}

inventory::submit! { BackendRegistration { create: || Box::new(CpuFlash::default()) } }

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
        Capabilities {
            device: DeviceKind::Cpu,
            dtypes: &DType::ALL,
            // Scratch grows linearly with head_dim and stays O(tile); there is
            // no kernel-imposed limit.
            head_dims: HeadDims::Range { min: 1, max: usize::MAX },
            max_seq_q: None,
            max_seq_kv: None,
            masks: &MaskKind::ALL,
            max_group_size: None,
            softcap: true,
            strided: false,
            matrix_units: None,
            deterministic: true,
            workspace: "O(tile) f32 scratch + <= 1 MiB K and V head copies per thread",
        }
    }

    fn run(&self, mut call: CheckedCall<'_>) -> Result<(), BackendError> {
        let p = call.problem();
        let isa = self.isa();
        // Contiguous layouts only (capabilities.strided = false): each view
        // is one dense run of elements starting at its offset.
        let (q, k, v) = (call.q(), call.k(), call.v());
        let part = |t: crate::tensor::TensorView<'_>| {
            (t.layout().offset, t.layout().offset + t.shape().iter().product::<usize>())
        };
        let ((q0, q1), (k0, k1), (v0, v1)) = (part(q), part(k), part(v));
        let out = call.out();
        let (o0, o1) = (out.layout().offset, out.layout().offset + out.shape().iter().product::<usize>());
        let (Some(q), Some(k), Some(v), Some(o)) = (q.host(), k.host(), v.host(), out.host_mut()) else {
            return Err(BackendError::Internal { backend: self.name(), what: "a checked CPU call holds a GPU tensor" });
        };
        match (q, k, v, o) {
            (HostData::F32(q), HostData::F32(k), HostData::F32(v), HostData::F32(o)) => {
                run(p, &q[q0..q1], &k[k0..k1], &v[v0..v1], &mut o[o0..o1], isa)
            }
            (HostData::F16(q), HostData::F16(k), HostData::F16(v), HostData::F16(o)) => {
                run(p, &q[q0..q1], &k[k0..k1], &v[v0..v1], &mut o[o0..o1], isa)
            }
            (HostData::BF16(q), HostData::BF16(k), HostData::BF16(v), HostData::BF16(o)) => {
                run(p, &q[q0..q1], &k[k0..k1], &v[v0..v1], &mut o[o0..o1], isa)
            }
            _ => return Err(BackendError::Internal { backend: self.name(), what: "a checked call mixes dtypes" }),
        }
        Ok(())
    }
}

/// Which micro-kernel family runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuIsa {
    Avx512,
    Avx2Fma,
    Portable,
}

impl CpuIsa {
    /// The widest family this CPU supports.
    pub fn detect() -> CpuIsa {
        [CpuIsa::Avx512, CpuIsa::Avx2Fma].into_iter().find(|isa| isa.available()).unwrap_or(CpuIsa::Portable)
    }

    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuIsa::Avx512 | CpuIsa::Avx2Fma => false,
            CpuIsa::Portable => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Avx512 => "avx512",
            CpuIsa::Avx2Fma => "avx2",
            CpuIsa::Portable => "portable",
        }
    }

    pub fn parse(s: &str) -> Option<CpuIsa> {
        [CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable].into_iter().find(|isa| isa.name() == s)
    }
}

/// Element types the backend reads and writes; compute is always f32.
trait Elem: Copy + Send + Sync + 'static {
    fn widen(src: &[Self], dst: &mut [f32]);
    fn narrow(src: &[f32], dst: &mut [Self]);
    /// The slice itself when it already holds f32 (read in place).
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        let _ = src;
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }
}

impl Elem for f16 {
    fn widen(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
}

impl Elem for bf16 {
    fn widen(src: &[bf16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [bf16]) {
        dst.convert_from_f32_slice(src);
    }
}

/// The output pointer shared by all tasks. Each task writes only the rows
/// of its own (batch, head, query block), so writes never overlap.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint rows through the pointer (see `OutPtr`), and
// the buffer outlives the parallel loop that uses it.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; no element is ever read or written by two tasks.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Everything a task needs to know about the call.
struct Ctx<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    out: OutPtr<T>,
    out_len: usize,
    sq: usize,
    skv: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    /// `d` rounded up to `DIM_ALIGN`.
    dp: usize,
    group: usize,
    q_blocks: usize,
    /// Tasks per (batch, kv head): `ceil(q_blocks * group / SUB)`.
    kv_tasks: usize,
    /// The factor Q is multiplied by: the softmax scale, times log2(e)
    /// when `log2` (scores are then in base-2 units and `exp2` replaces
    /// `exp`, a cheaper polynomial; not with soft-capping, which needs the
    /// natural scores).
    scale: f32,
    log2: bool,
    softcap: Option<f32>,
    mask: Mask,
}

/// A zeroed f32 buffer whose first element sits on a 64-byte boundary, so
/// that zmm loads of rows whose stride is a multiple of 16 floats never
/// straddle two cache lines (split loads cost ~30% of the kernels' speed).
struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let buf = vec![0.0f32; len + 16];
        let off = buf.as_ptr().align_offset(64).min(16);
        AlignedBuf { buf, off, len }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A worker's reusable buffers, all f32 and 64-byte aligned.
struct Scratch {
    /// Per unit of the task: Q block transposed, `[d][BQ]`, pre-scaled;
    /// padding queries are zero.
    qt: Vec<AlignedBuf>,
    /// Per unit of the task: unnormalised output block, `[BQ][dp]`.
    o: Vec<AlignedBuf>,
    /// K tile rows `[BK][d]`, used when K cannot be read in place.
    k: AlignedBuf,
    /// V tile rows `[BK][dp]`, used when V cannot be read in place.
    v: AlignedBuf,
    /// Scores, then probabilities, transposed: `[BK][BQ]` (key-major), so
    /// the per-query softmax runs down columns with vertical vector ops.
    s: AlignedBuf,
    /// The Q block widened, row-major `[BQ][d]` (staging for the transpose).
    row: Vec<f32>,
    /// V of the kv head `vhead_of` (batch, kv head), `[seq_kv][dp + HEAD_PAD]`; empty
    /// until first needed, at most `VHEAD_MAX` floats. `khead` likewise holds
    /// K, `[seq_kv + KEY_ALIGN][d16 + HEAD_PAD]` (zero pad rows): contiguous rows beat the
    /// in-place rows at a stride of heads·d (~3 % in A/B runs).
    vhead: Option<AlignedBuf>,
    vhead_of: Option<(usize, usize)>,
    khead: Option<AlignedBuf>,
    khead_of: Option<(usize, usize)>,
}

impl Scratch {
    fn new(d: usize, dp: usize) -> Scratch {
        Scratch {
            qt: (0..SUB).map(|_| AlignedBuf::new(d * QTS)).collect(),
            o: (0..SUB).map(|_| AlignedBuf::new(BQ * dp)).collect(),
            k: AlignedBuf::new(BK * d),
            v: AlignedBuf::new(BK * dp),
            s: AlignedBuf::new(BK * BQ),
            row: vec![0.0; BQ * d],
            vhead: None,
            vhead_of: None,
            khead: None,
            khead_of: None,
        }
    }
}

fn run<T: Elem>(p: &AttentionProblem, q: &[T], k: &[T], v: &[T], out: &mut [T], isa: CpuIsa) {
    let d = p.head_dim;
    let ctx = Ctx {
        q,
        k,
        v,
        out: OutPtr(out.as_mut_ptr()),
        out_len: out.len(),
        sq: p.seq_q,
        skv: p.seq_kv,
        hq: p.num_q_heads,
        hkv: p.num_kv_heads,
        d,
        dp: d.next_multiple_of(DIM_ALIGN),
        group: p.group_size(),
        q_blocks: p.seq_q.div_ceil(BQ),
        kv_tasks: (p.seq_q.div_ceil(BQ) * p.group_size()).div_ceil(SUB),
        scale: p.effective_scale() * if p.softcap.is_none() { std::f32::consts::LOG2_E } else { 1.0 },
        log2: p.softcap.is_none(),
        softcap: p.softcap,
        mask: p.mask,
    };
    let tasks = p.batch * p.num_kv_heads * ctx.kv_tasks;
    // One scratch per worker for the whole call. (`for_each_init` would
    // build a fresh one, and redo the K/V head copies, for every rayon job
    // split: that cost ~7-17 % of the run time in page faults and copies.)
    // A worker holds its own slot's lock only while it runs one task, and a
    // task never re-enters rayon, so the locks are never contended.
    let slots: Vec<std::sync::Mutex<Option<Scratch>>> =
        (0..rayon::current_num_threads().max(1)).map(|_| std::sync::Mutex::new(None)).collect();
    (0..tasks).into_par_iter().for_each(|t| {
        let slot = rayon::current_thread_index().unwrap_or(0) % slots.len();
        let mut guard = slots[slot].lock().unwrap_or_else(|e| e.into_inner());
        let sc = guard.get_or_insert_with(|| Scratch::new(ctx.d, ctx.dp));
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `CpuFlash::isa` only returns an ISA whose features
            // `available()` confirmed at run time.
            CpuIsa::Avx512 => unsafe { x86::task_avx512(&ctx, sc, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 and FMA were detected.
            CpuIsa::Avx2Fma => unsafe { x86::task_avx2(&ctx, sc, t) },
            // SAFETY: the portable kernels need no CPU feature.
            _ => unsafe { task::<Portable, T>(&ctx, sc, t) },
        }
    });
}

/// The running state of one (q head, query block) unit of a task.
struct Unit {
    h: usize,
    i0: usize,
    rows: usize,
    rows_p: usize,
    cols: usize,
    /// Per query: its key range.
    lo: [usize; BQ],
    hi: [usize; BQ],
    /// Union of the rows' key ranges (empty: the unit is done).
    kv_lo: usize,
    kv_hi: usize,
    /// Online softmax: running max and sum per query.
    m: [f32; BQ],
    l: [f32; BQ],
}

/// One task: up to `SUB` (q head, query block) units of one (batch, kv
/// head). Units are numbered query block major, GQA head minor, so a task
/// holds a group's heads for a block, or consecutive blocks of one head.
///
/// # Safety
/// `K`'s CPU features must be present; tasks running concurrently must have
/// distinct `t` (they then write disjoint output rows).
#[inline(always)]
unsafe fn task<K: Kernels, T: Elem>(c: &Ctx<T>, sc: &mut Scratch, t: usize) {
    let (d, dp) = (c.d, c.dp);
    let tk = t % c.kv_tasks;
    let kvh = (t / c.kv_tasks) % c.hkv;
    let b = t / (c.kv_tasks * c.hkv);
    let u_begin = tk * SUB;
    let nu = SUB.min(c.q_blocks * c.group - u_begin);
    let out_row = |h: usize, i: usize| ((b * c.sq + i) * c.hq + h) * d;

    let mut units: [Option<Unit>; SUB] = std::array::from_fn(|_| None);
    for (ui, slot) in units.iter_mut().enumerate().take(nu) {
        let u = u_begin + ui;
        let (qb, g) = (u / c.group, u % c.group);
        let h = kvh * c.group + g;
        let i0 = qb * BQ;
        let rows = BQ.min(c.sq - i0);
        // Key range per query. Ranges are monotone in the row index, so the
        // union is one interval and every key block outside it is skipped.
        let mut un = Unit {
            h,
            i0,
            rows,
            rows_p: rows.next_multiple_of(ROW_ALIGN),
            cols: rows.next_multiple_of(COL_ALIGN),
            lo: [0; BQ],
            hi: [0; BQ],
            kv_lo: usize::MAX,
            kv_hi: 0,
            m: [f32::NEG_INFINITY; BQ],
            l: [0.0; BQ],
        };
        for r in 0..rows {
            let (lo, hi) = c.mask.key_range(i0 + r, c.sq, c.skv);
            (un.lo[r], un.hi[r]) = (lo, hi);
            if lo < hi {
                un.kv_lo = un.kv_lo.min(lo);
                un.kv_hi = un.kv_hi.max(hi);
            }
        }
        if un.kv_lo >= un.kv_hi {
            for r in 0..rows {
                write_row(c, out_row(h, i0 + r), None);
            }
            continue;
        }

        // Q block, widened, pre-scaled and transposed to [d][BQ]. Rows are
        // widened first, then transposed in 8-column strips so the strided
        // stores stay within a few L1 lines at a time.
        let qt_buf = &mut sc.qt[ui];
        if rows < BQ {
            qt_buf.fill(0.0);
        }
        for r in 0..rows {
            if r + PREFETCH_ROWS < rows {
                let pf = out_row(h, i0 + r + PREFETCH_ROWS);
                prefetch_row(&c.q[pf..pf + d]);
            }
            T::widen(&c.q[out_row(h, i0 + r)..out_row(h, i0 + r) + d], &mut sc.row[r * d..(r + 1) * d]);
        }
        assert!(sc.row.len() >= rows * d && qt_buf.len() >= d * QTS);
        let (src, qt) = (sc.row.as_ptr(), qt_buf.as_mut_ptr());
        for x0 in (0..d).step_by(8) {
            let xn = 8.min(d - x0);
            for r in 0..rows {
                for xx in 0..xn {
                    // SAFETY: r < rows <= BQ and x0 + xx < d, so both offsets
                    // are inside the buffers (lengths checked above).
                    unsafe { *qt.add((x0 + xx) * QTS + r) = *src.add(r * d + x0 + xx) * c.scale };
                }
            }
        }
        sc.o[ui][..un.rows_p * dp].fill(0.0);
        *slot = Some(un);
    }
    let g_lo = units.iter().flatten().map(|u| u.kv_lo).min();
    let g_hi = units.iter().flatten().map(|u| u.kv_hi).max();
    let (Some(g_lo), Some(g_hi)) = (g_lo, g_hi) else {
        return;
    };

    let k_stride = c.hkv * d;
    let head_base = (b * c.skv * c.hkv + kvh) * d;
    let v_in_place = match T::as_f32(c.v) {
        Some(v) => d == dp && v[head_base..].as_ptr().align_offset(64) == 0 && k_stride.is_multiple_of(16),
        None => false,
    };
    // Head copies use a row stride of a multiple of 16 floats plus 16: rows
    // then start on 64-byte boundaries but not all in the same few L1 sets
    // (with a power-of-two stride, the 64 rows of a tile fight over 1/8 of
    // the L1 sets and the V tile does not stay in L1 across row blocks).
    let vhs = dp + HEAD_PAD;
    let khs = d.next_multiple_of(DIM_ALIGN) + HEAD_PAD;
    let use_vhead = c.skv * vhs <= VHEAD_MAX;
    if use_vhead && sc.vhead_of != Some((b, kvh)) {
        let vh = sc.vhead.get_or_insert_with(|| AlignedBuf::new(c.skv * vhs));
        for j in 0..c.skv {
            let off = head_base + j * k_stride;
            if j + PREFETCH_ROWS < c.skv {
                let pf = off + PREFETCH_ROWS * k_stride;
                prefetch_row(&c.v[pf..pf + d]);
            }
            T::widen(&c.v[off..off + d], &mut vh[j * vhs..j * vhs + d]);
        }
        sc.vhead_of = Some((b, kvh));
    }
    let use_khead = (c.skv + KEY_ALIGN) * khs <= VHEAD_MAX;
    if use_khead && sc.khead_of != Some((b, kvh)) {
        let kh = sc.khead.get_or_insert_with(|| AlignedBuf::new((c.skv + KEY_ALIGN) * khs));
        for j in 0..c.skv {
            let off = head_base + j * k_stride;
            if j + PREFETCH_ROWS < c.skv {
                let pf = off + PREFETCH_ROWS * k_stride;
                prefetch_row(&c.k[pf..pf + d]);
            }
            T::widen(&c.k[off..off + d], &mut kh[j * khs..j * khs + d]);
        }
        sc.khead_of = Some((b, kvh));
    }

    // Tiles of BK keys over the union of the units' ranges; each unit takes
    // the part of the tile inside its own range (often all or nothing).
    let mut t0 = g_lo;
    while t0 < g_hi {
        let t1 = (t0 + BK).min(g_hi);
        for (ui, un) in units.iter_mut().enumerate() {
            let Some(un) = un else { continue };
            let j0 = t0.max(un.kv_lo);
            let j1 = t1.min(un.kv_hi);
            if j0 >= j1 {
                continue;
            }
            let n = j1 - j0;
            let n_p = n.next_multiple_of(KEY_ALIGN);
            let base = head_base + j0 * k_stride;

            // K and V come from the per-thread head copies when the head
            // fits. Otherwise f32 K/V are read in place (K needs n_p rows to
            // exist; V needs its rows to be whole DIM_ALIGN blocks on 64-byte
            // boundaries, or every zmm load would split a cache line), or
            // the tile is widened into aligned scratch, zero-padded.
            let (kp, ks) = match (&sc.khead, T::as_f32(c.k)) {
                (Some(kh), _) if use_khead => (kh[j0 * khs..].as_ptr(), khs),
                (_, Some(k)) if j0 + n_p <= c.skv => (k[base..].as_ptr(), k_stride),
                _ => {
                    for jj in 0..n {
                        let off = base + jj * k_stride;
                        T::widen(&c.k[off..off + d], &mut sc.k[jj * d..(jj + 1) * d]);
                    }
                    sc.k[n * d..n_p * d].fill(0.0);
                    (sc.k.as_ptr(), d)
                }
            };
            let (vp, vs) = match (&sc.vhead, T::as_f32(c.v)) {
                (Some(vh), _) if use_vhead => (vh[j0 * vhs..].as_ptr(), vhs),
                (_, Some(v)) if v_in_place => (v[base..].as_ptr(), k_stride),
                _ => {
                    for jj in 0..n {
                        let off = base + jj * k_stride;
                        T::widen(&c.v[off..off + d], &mut sc.v[jj * dp..jj * dp + d]);
                    }
                    (sc.v.as_ptr(), dp)
                }
            };
            // SAFETY: forwarded contract; the pointers are as `tile` needs
            // (see the comments above).
            unsafe {
                if c.log2 {
                    tile::<K, true>(c, un, &mut sc.s, &sc.qt[ui], &mut sc.o[ui], j0, n, kp, ks, vp, vs)
                } else {
                    tile::<K, false>(c, un, &mut sc.s, &sc.qt[ui], &mut sc.o[ui], j0, n, kp, ks, vp, vs)
                }
            };
        }
        t0 = t1;
    }

    for (ui, un) in units.iter().enumerate() {
        let Some(un) = un else { continue };
        for (r, &lr) in un.l.iter().enumerate().take(un.rows) {
            let o = &mut sc.o[ui][r * dp..r * dp + d];
            if lr > 0.0 {
                let inv = 1.0 / lr;
                for x in o.iter_mut() {
                    *x *= inv;
                }
                write_row(c, out_row(un.h, un.i0 + r), Some(o));
            } else {
                write_row(c, out_row(un.h, un.i0 + r), None);
            }
        }
    }
}

/// One unit's step over keys `j0..j0 + n` (n ≤ BK): S^T = K·Q^T, online
/// softmax update, O = alpha·O + P·V.
///
/// # Safety
/// `K`'s CPU features must be present; `kp` has `n` rounded up to
/// `KEY_ALIGN` rows of `d` floats at stride `ks` (in place: those keys
/// exist; else scratch of BK·d); `vp` has `n` rows of `dp` floats at stride
/// `vs` (in place only when d == dp).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<K: Kernels, const LOG2: bool>(
    c: &Ctx<impl Elem>,
    un: &mut Unit,
    s: &mut [f32],
    qt: &[f32],
    o: &mut [f32],
    j0: usize,
    n: usize,
    kp: *const f32,
    ks: usize,
    vp: *const f32,
    vs: usize,
) {
    let (d, dp, rows, rows_p, cols) = (c.d, c.dp, un.rows, un.rows_p, un.cols);
    let n_p = n.next_multiple_of(KEY_ALIGN);
    assert!(s.len() >= BK * BQ && qt.len() >= d * QTS && o.len() >= BQ * dp && n <= BK);
    // The kernel also leaves each query's maximum over the n_p keys in
    // `tile_max`, which is the tile maximum when no key is masked or padded.
    let mut tile_max = [f32::NEG_INFINITY; BQ];
    // SAFETY: kp as documented; qt is d*BQ; s is BK*BQ (checked above);
    // tile_max is BQ; n_p % KEY_ALIGN == 0, n_p <= BK, cols % COL_ALIGN ==
    // 0, cols <= BQ.
    unsafe { K::qk(kp, ks, qt.as_ptr(), d, s.as_mut_ptr(), tile_max.as_mut_ptr(), n_p, cols) };

    // Per-query live key interval inside this tile, relative to j0.
    let mut a = [0i32; BQ];
    let mut e = [0i32; BQ];
    let mut full = true;
    for r in 0..rows {
        a[r] = (un.lo[r].clamp(j0, j0 + n) - j0) as i32;
        e[r] = (un.hi[r].clamp(j0, j0 + n) - j0) as i32;
        full &= a[r] == 0 && e[r] == n as i32;
    }

    let max_done = full && n == n_p && c.softcap.is_none();
    if !max_done {
        tile_max = [f32::NEG_INFINITY; BQ];
    }
    for j in 0..if max_done { 0 } else { n } {
        let srow: &mut [f32; BQ] = (&mut s[j * BQ..(j + 1) * BQ]).try_into().expect("BQ row");
        if let Some(cap) = c.softcap {
            for x in srow[..cols].iter_mut() {
                *x = cap * (*x / cap).tanh();
            }
        }
        if !full {
            let jj = j as i32;
            for r in 0..BQ {
                let live = jj >= a[r] && jj < e[r];
                srow[r] = if live { srow[r] } else { f32::NEG_INFINITY };
            }
        }
        for r in 0..BQ {
            tile_max[r] = if srow[r] > tile_max[r] { srow[r] } else { tile_max[r] };
        }
    }
    // A query with no live key so far keeps m = -inf; subtracting 0
    // instead turns its -inf scores into exact zeros, never NaN.
    let mut m_use = [0.0f32; BQ];
    let mut alpha = [0.0f32; BQ];
    for r in 0..BQ {
        let m_new = if tile_max[r] > un.m[r] { tile_max[r] } else { un.m[r] };
        m_use[r] = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
        alpha[r] = exp_any::<LOG2>(un.m[r] - m_use[r], K::FMA);
        un.m[r] = m_new;
    }
    let mut sum = [0.0f32; BQ];
    for j in 0..n {
        let srow: &mut [f32; BQ] = (&mut s[j * BQ..(j + 1) * BQ]).try_into().expect("BQ row");
        for r in 0..BQ {
            let p = exp_any::<LOG2>(srow[r] - m_use[r], K::FMA);
            srow[r] = p;
            sum[r] += p;
        }
    }
    for r in 0..BQ {
        un.l[r] = un.l[r] * alpha[r] + sum[r];
    }

    // O = alpha·O + P·V; the rescale happens as the kernel loads O.
    // SAFETY: s is BK*BQ with n ≤ BK live key rows; vp as documented; o is
    // BQ*dp; alpha is BQ; rows_p % ROW_ALIGN == 0 and dp % DIM_ALIGN == 0.
    unsafe { K::pv(s.as_ptr(), n, vp, vs, dp, o.as_mut_ptr(), alpha.as_ptr(), rows_p) };
}

/// How many rows ahead the strided row copies (Q rows, K/V head copies)
/// prefetch: rows sit a whole token stride apart (often another 4 KiB
/// page), where the hardware prefetchers do not follow, so without this the
/// copies wait on DRAM latency row by row.
const PREFETCH_ROWS: usize = 6;

/// Hints the CPU to fetch every cache line of `row` into the caches.
#[inline(always)]
fn prefetch_row<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(row);
        let p = row.as_ptr().cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: SSE is part of the x86-64 baseline; a prefetch never
            // faults, and `p + off` stays inside `row` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Writes one output row (`None` = zeros) at element offset `off`.
#[inline(always)]
fn write_row<T: Elem>(c: &Ctx<T>, off: usize, row: Option<&[f32]>) {
    assert!(off + c.d <= c.out_len, "output row out of bounds");
    // SAFETY: the range is in bounds (checked above) and belongs to exactly
    // one (batch, row, head), which only the current task writes.
    let dst = unsafe { std::slice::from_raw_parts_mut(c.out.0.add(off), c.d) };
    match row {
        Some(src) => T::narrow(src, dst),
        None => {
            let zeros = [0.0f32; 64];
            for chunk in dst.chunks_mut(64) {
                T::narrow(&zeros[..chunk.len()], chunk);
            }
        }
    }
}

/// `2^x` when `LOG2`, else `e^x` (`x <= 0`).
#[inline(always)]
fn exp_any<const LOG2: bool>(x: f32, fma: bool) -> f32 {
    if LOG2 {
        fast_exp2(x, fma)
    } else {
        fast_exp(x, fma)
    }
}

#[inline(always)]
fn madd(fma: bool, a: f32, b: f32, c: f32) -> f32 {
    if fma {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` for `x <= 0` (Cephes exp2f: round to an integer n, a degree-6
/// polynomial in x - n ∈ [-1/2, 1/2], scale by 2^n), branch-free. Inputs
/// below -126 give 0, so `-inf` maps to 0. `fma` as for `fast_exp`.
#[inline(always)]
fn fast_exp2(x: f32, fma: bool) -> f32 {
    const LO: f32 = -126.0;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = if x > LO { x } else { LO };
    let t = xc + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let f = xc - n;
    let mut y = 1.535_336_2e-4f32;
    y = madd(fma, y, f, 1.339_887_4e-3);
    y = madd(fma, y, f, 9.618_437e-3);
    y = madd(fma, y, f, 5.550_332_5e-2);
    y = madd(fma, y, f, 2.402_264_8e-1);
    y = madd(fma, y, f, 6.931_472e-1);
    y = madd(fma, y, f, 1.0);
    let pow2 = f32::from_bits(((ni + 127) as u32) << 23);
    if x > LO {
        y * pow2
    } else {
        0.0
    }
}

/// `exp(x)` for `x <= 0` (Cephes expf: Cody-Waite range reduction and a
/// degree-6 polynomial, ~1 ulp), branch-free so loops over it vectorise.
/// Inputs below ln(2^-126) give 0, so `-inf` maps to 0. With `fma` the
/// multiply-adds are fused (`mul_add`; only for callers compiled with the
/// `fma` feature, where it is one instruction: elsewhere it is a libm call).
#[inline(always)]
fn fast_exp(x: f32, fma: bool) -> f32 {
    const LO: f32 = -87.336_55;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = if x > LO { x } else { LO };
    let t = madd(fma, xc, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = madd(fma, n, -0.693_359_4, xc);
    let r = madd(fma, n, 2.121_944_4e-4, r);
    let mut y = 1.987_569_1e-4f32;
    y = madd(fma, y, r, 1.398_199_9e-3);
    y = madd(fma, y, r, 8.333_452e-3);
    y = madd(fma, y, r, 4.166_579_6e-2);
    y = madd(fma, y, r, 1.666_666_5e-1);
    y = madd(fma, y, r, 0.5);
    y = madd(fma, y, r * r, r) + 1.0;
    let pow2 = f32::from_bits(((ni + 127) as u32) << 23);
    if x > LO {
        y * pow2
    } else {
        0.0
    }
}

/// The tiny vector API the micro-kernels are written against.
trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
}

/// The two micro-kernels of one ISA.
trait Kernels {
    /// Whether the ISA has fused multiply-add (used by `fast_exp`).
    const FMA: bool;
    /// `s[j][c] = Σ_x k[j][x] · qt[x][c]` for `j < keys`, `c < cols`, with
    /// `k` rows of `d` floats at stride `ks`, `qt` `[d][BQ]`, `s` `[BK][BQ]`;
    /// also `mx[c] = max(mx[c], max_{j<keys} s[j][c])` (`mx` `[BQ]`).
    ///
    /// # Safety
    /// Buffers hold those sizes; `keys % KEY_ALIGN == 0`, `keys <= BK`,
    /// `cols % COL_ALIGN == 0`, `cols <= BQ`; the ISA's features are present.
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk(
        k: *const f32,
        ks: usize,
        qt: *const f32,
        d: usize,
        s: *mut f32,
        mx: *mut f32,
        keys: usize,
        cols: usize,
    );
    /// `o[r][c] = alpha[r] · o[r][c] + Σ_{j<n} p[j][r] · v[j][c]` for
    /// `r < rows`, `c < dp`, with `p` `[BK][BQ]`, `v` rows of `dp` floats at
    /// stride `vs`, `o` `[BQ][dp]`, `alpha` `[BQ]`.
    ///
    /// # Safety
    /// Buffers hold those sizes; `rows % ROW_ALIGN == 0`, `rows <= BQ`,
    /// `dp % DIM_ALIGN == 0`; the ISA's features are present.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv(
        p: *const f32,
        n: usize,
        v: *const f32,
        vs: usize,
        dp: usize,
        o: *mut f32,
        alpha: *const f32,
        rows: usize,
    );
}

/// Register-blocked `MR keys × (NV·LANES) queries` tiles of S^T = K·Q^T
/// for keys from `j_begin`; the accumulators stay in registers across the
/// whole d loop. Returns the first key it did not cover.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn qk_blocked<S: Simd, const MR: usize, const NV: usize, const KS: usize>(
    k: *const f32,
    ks: usize,
    qt: *const f32,
    d: usize,
    s: *mut f32,
    mx: *mut f32,
    keys: usize,
    cols: usize,
    j_begin: usize,
) -> usize {
    // A compile-time K row stride (`KS != 0`, equal to `ks`) lets the MR
    // broadcasts address one pointer with immediate offsets instead of
    // keeping MR row pointers in integer registers.
    let ks = if KS != 0 { KS } else { ks };
    // Query blocks outermost: one block's Q^T columns (d·w floats, 16 KiB
    // at d = 128) stay in L1 while the key blocks stream past; with key
    // blocks outermost the whole Q^T block (32 KiB) was re-read from L2
    // for every 12 keys (~1.5 % slower in A/B runs).
    let w = NV * S::LANES;
    let j_end = j_begin + (keys - j_begin) / MR * MR;
    let mut c0 = 0;
    while c0 < cols {
        let mut j0 = j_begin;
        while j0 < j_end {
            let mut acc = [[S::zero(); NV]; MR];
            for x in 0..d {
                let qp = qt.add(x * QTS + c0);
                let mut qv = [S::zero(); NV];
                for (u, qu) in qv.iter_mut().enumerate() {
                    *qu = S::load(qp.add(u * S::LANES));
                }
                let kx = k.add(j0 * ks + x);
                for (r, accr) in acc.iter_mut().enumerate() {
                    let kb = S::splat(*kx.add(r * ks));
                    for u in 0..NV {
                        accr[u] = S::fma(kb, qv[u], accr[u]);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (u, &a) in accr.iter().enumerate() {
                    S::store(s.add((j0 + r) * BQ + c0 + u * S::LANES), a);
                }
            }
            for u in 0..NV {
                let mut m = acc[0][u];
                for accr in &acc[1..] {
                    m = S::max(m, accr[u]);
                }
                let mp = mx.add(c0 + u * S::LANES);
                S::store(mp, S::max(S::load(mp), m));
            }
            j0 += MR;
        }
        c0 += w;
    }
    j_end
}

/// Register-blocked `MR rows × (NV·LANES) dims` tiles of O += P·V over
/// rows `r_begin..` (whole `MR` blocks that fit in `rows`) and columns
/// `c_begin..` (whole `NV·LANES` blocks that fit in `c_stop <= dp`); returns the
/// first row and the first column it did not cover.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_blocked<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    n: usize,
    v: *const f32,
    vs: usize,
    dp: usize,
    o: *mut f32,
    alpha: *const f32,
    rows: usize,
    r_begin: usize,
    c_begin: usize,
    c_stop: usize,
) -> (usize, usize) {
    let w = NV * S::LANES;
    let c_end = c_begin + (c_stop - c_begin) / w * w;
    let r_end = r_begin + (rows - r_begin) / MR * MR;
    let mut c0 = c_begin;
    while c0 < c_end {
        let mut r0 = r_begin;
        while r0 < r_end {
            let mut acc = [[S::zero(); NV]; MR];
            for (r, accr) in acc.iter_mut().enumerate() {
                let al = S::splat(*alpha.add(r0 + r));
                for (u, a) in accr.iter_mut().enumerate() {
                    *a = S::mul(al, S::load(o.add((r0 + r) * dp + c0 + u * S::LANES)));
                }
            }
            for j in 0..n {
                let vp = v.add(j * vs + c0);
                let mut vv = [S::zero(); NV];
                for (u, vu) in vv.iter_mut().enumerate() {
                    *vu = S::load(vp.add(u * S::LANES));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let pb = S::splat(*p.add(j * BQ + r0 + r));
                    for u in 0..NV {
                        accr[u] = S::fma(pb, vv[u], accr[u]);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (u, &a) in accr.iter().enumerate() {
                    S::store(o.add((r0 + r) * dp + c0 + u * S::LANES), a);
                }
            }
            r0 += MR;
        }
        c0 += w;
    }
    (r_end, c_end)
}

/// Eight plain f32 lanes; LLVM maps them to whatever SIMD the baseline has.
struct Portable;

impl Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        // Separate multiply and add: `mul_add` without hardware FMA is a
        // slow libm call.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn max(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
}

impl Kernels for Portable {
    const FMA: bool = false;
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk(
        k: *const f32,
        ks: usize,
        qt: *const f32,
        d: usize,
        s: *mut f32,
        mx: *mut f32,
        keys: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { qk_blocked::<Portable, 4, 2, 0>(k, ks, qt, d, s, mx, keys, cols, 0) };
    }
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv(
        p: *const f32,
        n: usize,
        v: *const f32,
        vs: usize,
        dp: usize,
        o: *mut f32,
        alpha: *const f32,
        rows: usize,
    ) {
        // SAFETY: forwarded contract; dp is a multiple of 16 = 2 * LANES.
        unsafe { pv_blocked::<Portable, 4, 2>(p, n, v, vs, dp, o, alpha, rows, 0, 0, dp) };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    pub(super) struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: only reached from `task_avx512`, where avx512f is enabled.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: avx512f as for `zero`; the caller guarantees 16 floats at `p`.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: avx512f as for `zero`; the caller guarantees 16 writable floats.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_max_ps(a, b) }
        }
    }

    impl Kernels for Avx512 {
        const FMA: bool = true;
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn qk(
            k: *const f32,
            ks: usize,
            qt: *const f32,
            d: usize,
            s: *mut f32,
            mx: *mut f32,
            keys: usize,
            cols: usize,
        ) {
            // 12 keys × 32 queries: 24 zmm accumulators, 2 aligned Q^T loads
            // + 12 broadcasts per 24 FMAs, so the Q^T stream (L1/L2) costs a
            // third of a 4 × 64 block's; leftover keys (a multiple of 4) in
            // 4 × 64 blocks. SAFETY: forwarded contract (KEY_ALIGN = 8,
            // COL_ALIGN = 64).
            unsafe {
                // The head copies' strides for d = 128 and d = 64 are
                // compile-time constants (see `qk_blocked`).
                macro_rules! run {
                    ($ks:expr) => {{
                        let j = qk_blocked::<Avx512, 12, 2, $ks>(k, ks, qt, d, s, mx, keys, cols, 0);
                        qk_blocked::<Avx512, 4, 4, $ks>(k, ks, qt, d, s, mx, keys, cols, j);
                    }};
                }
                match ks {
                    144 => run!(144),
                    80 => run!(80),
                    _ => run!(0),
                }
            }
        }
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn pv(
            p: *const f32,
            n: usize,
            v: *const f32,
            vs: usize,
            dp: usize,
            o: *mut f32,
            alpha: *const f32,
            rows: usize,
        ) {
            // 6 rows × 64 dims (24 zmm accumulators; 4 V loads + 6
            // broadcasts per 24 FMAs, and the P block is re-read once per 64
            // dims instead of per 32: ~2 % faster than 12 × 32 in A/B runs),
            // leftover rows (rows are a multiple of 8, so 2 or 4 remain) as
            // 4 × 64 and 2 × 64; dims past the last multiple of 64 as
            // 12 × 32 / 4 × 32, then a 16-wide leftover column block.
            // SAFETY: forwarded contract; dp is a multiple of 16, rows of 8.
            unsafe {
                let (r, c4) = pv_blocked::<Avx512, 6, 4>(p, n, v, vs, dp, o, alpha, rows, 0, 0, dp);
                let (r, _) = pv_blocked::<Avx512, 4, 4>(p, n, v, vs, dp, o, alpha, rows, r, 0, c4);
                pv_blocked::<Avx512, 2, 4>(p, n, v, vs, dp, o, alpha, rows, r, 0, c4);
                let (r, c) = pv_blocked::<Avx512, 12, 2>(p, n, v, vs, dp, o, alpha, rows, 0, c4, dp);
                pv_blocked::<Avx512, 4, 2>(p, n, v, vs, dp, o, alpha, rows, r, c4, c);
                let (r, _) = pv_blocked::<Avx512, 12, 1>(p, n, v, vs, dp, o, alpha, rows, 0, c, dp);
                pv_blocked::<Avx512, 4, 1>(p, n, v, vs, dp, o, alpha, rows, r, c, dp);
            }
        }
    }

    pub(super) struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: only reached from `task_avx2`, where avx2 and fma are enabled.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: as for `zero`.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: avx as for `zero`; the caller guarantees 8 floats at `p`.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: avx as for `zero`; the caller guarantees 8 writable floats.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: fma as for `zero`.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: avx as for `zero`.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            // SAFETY: avx as for `zero`.
            unsafe { _mm256_max_ps(a, b) }
        }
    }

    impl Kernels for Avx2 {
        const FMA: bool = true;
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn qk(
            k: *const f32,
            ks: usize,
            qt: *const f32,
            d: usize,
            s: *mut f32,
            mx: *mut f32,
            keys: usize,
            cols: usize,
        ) {
            // 4 keys × 16 queries: 8 ymm accumulators of the 16 registers.
            // SAFETY: forwarded contract.
            unsafe { qk_blocked::<Avx2, 4, 2, 0>(k, ks, qt, d, s, mx, keys, cols, 0) };
        }
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn pv(
            p: *const f32,
            n: usize,
            v: *const f32,
            vs: usize,
            dp: usize,
            o: *mut f32,
            alpha: *const f32,
            rows: usize,
        ) {
            // SAFETY: forwarded contract; dp is a multiple of 16.
            unsafe { pv_blocked::<Avx2, 4, 2>(p, n, v, vs, dp, o, alpha, rows, 0, 0, dp) };
        }
    }

    /// # Safety
    /// The CPU must support avx512f; see `task`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn task_avx512<T: Elem>(c: &Ctx<T>, sc: &mut Scratch, t: usize) {
        // SAFETY: the features `Avx512` needs are enabled on this function.
        unsafe { task::<Avx512, T>(c, sc, t) }
    }

    /// # Safety
    /// The CPU must support avx2 and fma; see `task`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn task_avx2<T: Elem>(c: &Ctx<T>, sc: &mut Scratch, t: usize) {
        // SAFETY: the features `Avx2` needs are enabled on this function.
        unsafe { task::<Avx2, T>(c, sc, t) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::cpu_reference::reference_attention;
    use crate::device::Device;
    use crate::tensor::Tensor;

    fn isas() -> Vec<CpuIsa> {
        [CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable].into_iter().filter(|i| i.available()).collect()
    }

    /// Runs every available ISA on `p` and compares with the f64 oracle.
    fn check(p: &AttentionProblem, seed: u64) {
        let q = Tensor::random(p.q_shape(), p.dtype, seed).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, seed + 1).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, seed + 2).unwrap();
        let expected = reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
        let tol = p.dtype.tolerance();
        for isa in isas() {
            let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
            (&CpuFlash::with_isa(isa) as &dyn AttentionBackend).forward(p, &q, &k, &v, &mut out).unwrap();
            let got = out.to_f32_vec().unwrap();
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(tol.accepts(g as f64, e), "{p} isa {isa:?}: element {i}: got {g}, expected {e}");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn problem(
        b: usize,
        hq: usize,
        hkv: usize,
        sq: usize,
        skv: usize,
        d: usize,
        dtype: DType,
        mask: Mask,
    ) -> AttentionProblem {
        AttentionProblem::new(b, sq, skv, hq, hkv, d, dtype).with_mask(mask)
    }

    const MASKS: [Mask; 5] = [
        Mask::None,
        Mask::Causal,
        Mask::SlidingWindow { left: 5, right: 0 },
        Mask::SlidingWindow { left: 3, right: 7 },
        Mask::SlidingWindow { left: 0, right: 0 },
    ];

    #[test]
    fn seq_one_and_odd_head_dims() {
        for (i, d) in [1, 3, 16, 96, 256].into_iter().enumerate() {
            check(&problem(1, 2, 1, 1, 1, d, DType::F32, Mask::None), 10 + i as u64);
            check(&problem(1, 2, 2, 1, 70, d, DType::F32, Mask::Causal), 20 + i as u64);
            check(&problem(1, 1, 1, 9, 13, d, DType::F32, Mask::None), 30 + i as u64);
        }
    }

    #[test]
    fn every_mask_both_length_orders() {
        let mut seed = 100;
        for mask in MASKS {
            // seq_q > seq_kv leaves the first causal rows fully masked.
            for (sq, skv) in [(70, 140), (140, 70), (65, 65), (3, 200), (200, 3)] {
                check(&problem(1, 2, 1, sq, skv, 24, DType::F32, mask), seed);
                seed += 3;
            }
        }
    }

    #[test]
    fn gqa_ratios_and_batches() {
        for (i, (hq, hkv)) in [(4, 4), (4, 2), (6, 2), (8, 1)].into_iter().enumerate() {
            check(&problem(2, hq, hkv, 33, 77, 40, DType::F32, Mask::Causal), 200 + i as u64);
        }
    }

    #[test]
    fn common_head_dims_with_several_units_per_task() {
        // d = 64 and 128 take the AVX-512 QK^T kernel's compile-time head
        // copy strides; query blocks and GQA heads share tasks (`SUB`).
        let mut seed = 600;
        for d in [64, 128] {
            for mask in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 70, right: 9 }] {
                for (hq, hkv) in [(2, 2), (4, 1), (6, 2)] {
                    check(&problem(1, hq, hkv, 200, 190, d, DType::F32, mask), seed);
                    seed += 3;
                }
            }
        }
    }

    #[test]
    fn softcap_and_custom_scale() {
        let mut p = problem(1, 4, 2, 50, 90, 32, DType::F32, Mask::SlidingWindow { left: 20, right: 4 });
        p.softcap = Some(2.5);
        p.scale = Some(1.7);
        check(&p, 300);
        p.mask = Mask::None;
        p.softcap = Some(30.0);
        check(&p, 301);
    }

    #[test]
    fn sixteen_bit_dtypes() {
        for dtype in [DType::F16, DType::BF16] {
            for (i, mask) in MASKS.into_iter().enumerate() {
                check(&problem(1, 4, 2, 40, 75, 48, dtype, mask), 400 + i as u64);
            }
            let mut p = problem(1, 2, 1, 5, 130, 3, dtype, Mask::Causal);
            p.softcap = Some(5.0);
            check(&p, 420);
        }
    }

    #[test]
    fn kv_head_too_large_for_the_head_copy() {
        // seq_kv * dp > VHEAD_MAX: V goes through per-tile copies.
        let skv = VHEAD_MAX / 64 + 5;
        let window = Mask::SlidingWindow { left: 300, right: 2 };
        for dtype in DType::ALL {
            check(&problem(1, 2, 1, 3, skv, 64, dtype, window), 500);
        }
    }

    #[test]
    fn fully_masked_rows_are_zero_not_nan() {
        let p = problem(1, 1, 1, 100, 10, 8, DType::F32, Mask::Causal);
        let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        (&CpuFlash::default() as &dyn AttentionBackend).forward(&p, &q, &k, &v, &mut out).unwrap();
        let got = out.to_f32_vec().unwrap();
        assert!(got[..90 * 8].iter().all(|&x| x == 0.0));
        assert!(got[90 * 8..].iter().all(|x| x.is_finite() && *x != 0.0));
    }

    #[test]
    fn deterministic_across_runs() {
        let p = problem(1, 4, 2, 130, 150, 64, DType::F32, Mask::Causal);
        let q = Tensor::random(p.q_shape(), p.dtype, 5).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 6).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, 7).unwrap();
        let mut a = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        let mut b = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        (&CpuFlash::default() as &dyn AttentionBackend).forward(&p, &q, &k, &v, &mut a).unwrap();
        (&CpuFlash::default() as &dyn AttentionBackend).forward(&p, &q, &k, &v, &mut b).unwrap();
        assert_eq!(a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    }

    #[test]
    fn fast_exp_is_accurate() {
        fn check<const FMA: bool>() {
            let mut worst = 0.0f64;
            let mut x = -100.0f32;
            while x <= 0.0 {
                let got = fast_exp(x, FMA) as f64;
                let want = (x as f64).exp();
                if want > 1e-37 {
                    worst = worst.max((got - want).abs() / want);
                }
                x += 0.0137;
            }
            assert!(worst < 1e-6, "fma {FMA}: worst relative error {worst}");
            assert_eq!(fast_exp(f32::NEG_INFINITY, FMA), 0.0);
            assert_eq!(fast_exp(0.0, FMA), 1.0);
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn fast_exp2_is_accurate() {
        for fma in [false, true] {
            let mut worst = 0.0f64;
            let mut x = -140.0f32;
            while x <= 0.0 {
                let got = fast_exp2(x, fma) as f64;
                let want = (x as f64).exp2();
                if want > 1e-37 {
                    worst = worst.max((got - want).abs() / want);
                }
                x += 0.0093;
            }
            assert!(worst < 1e-6, "fma {fma}: worst relative error {worst}");
            assert_eq!(fast_exp2(f32::NEG_INFINITY, fma), 0.0);
            assert_eq!(fast_exp2(0.0, fma), 1.0);
            assert_eq!(fast_exp2(-126.5, fma), 0.0);
        }
    }

    #[test]
    fn wrong_placement_is_an_error_not_a_panic() {
        let p = problem(1, 1, 1, 4, 4, 8, DType::F32, Mask::None);
        let q = Tensor::random(p.q_shape(), DType::F16, 1).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        assert!((&CpuFlash::default() as &dyn AttentionBackend).forward(&p, &q, &k, &k, &mut out).is_err());
        let portable = CpuFlash::with_isa(CpuIsa::Portable);
        assert!((&portable as &dyn AttentionBackend).forward(&p, &q, &k, &k, &mut out).is_err());
    }
}
