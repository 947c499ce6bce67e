//! `cpu-flash`: FlashAttention-2 style attention on the CPU.
//!
//! Work is split by rayon into tasks of (batch, query head, block of `BQ`
//! queries). A task walks the keys its block may see in tiles of `BK` keys
//! and keeps, per query row, the running maximum `m`, the running sum `l` and
//! an unnormalised f32 output row (online softmax). Nothing of size
//! seq_q × seq_kv is ever allocated: a task's scratch is O(BQ·d + BK·d + BQ·BK)
//! and is reused by every task a worker runs.
//!
//! * GQA: query head `h` reads kv head `h / group` in place; K/V are never
//!   replicated.
//! * Masks: query rows have monotone key ranges (`Mask::key_range`), so a
//!   block only visits the union of its rows' ranges (fully masked key blocks
//!   are skipped); inside a tile each row clips to its own range exactly.
//!   Rows with an empty range are written as zeros.
//! * 16-bit inputs are widened once per tile into the thread's f32 scratch
//!   (Q once per block, pre-multiplied by the scale; K transposed to
//!   `[d][BK]`; V to `[BK][dp]`). Per-tile packing keeps memory O(tile) and
//!   costs ~1/BQ of the arithmetic; the K transpose is needed anyway for the
//!   register-blocked QK^T micro-kernel, so f32 inputs are packed the same way.
//! * Micro-kernels are written once over a tiny SIMD trait and instantiated
//!   for AVX-512F, AVX2+FMA (picked at run time with
//!   `is_x86_feature_detected!`) and a portable 8-lane fallback; the
//!   softmax (a polynomial `exp`) is plain Rust that LLVM vectorises inside
//!   the same `#[target_feature]` functions. No `-C target-cpu` is needed.
//! * Deterministic: every output element is produced by one task, in a fixed
//!   order, whatever the thread count.

use crate::backend::{check_call, AttentionBackend, BackendError, BackendRegistration};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::DeviceKind;
use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask, MaskKind};
use crate::tensor::{HostData, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

/// Query rows per task.
const BQ: usize = 64;
/// Keys per tile.
const BK: usize = 64;
/// Row padding: every micro-kernel's row block divides it.
const ROW_ALIGN: usize = 8;
/// Column padding of S: every QK^T kernel's column block divides it.
const COL_ALIGN: usize = 32;
/// Head-dim padding of V and O: every P·V kernel's narrowest block.
const DIM_ALIGN: usize = 16;

pub struct CpuFlash;

inventory::submit! { BackendRegistration { create: || Box::new(CpuFlash) } }

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
            head_dims: HeadDims::Range {
                min: 1,
                max: usize::MAX,
            },
            max_seq_q: None,
            max_seq_kv: None,
            masks: &MaskKind::ALL,
            max_group_size: None,
            softcap: true,
            deterministic: true,
            workspace: "O(tile) f32 scratch per thread",
        }
    }

    fn forward(
        &self,
        p: &AttentionProblem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &mut Tensor,
    ) -> Result<(), BackendError> {
        check_call(self, p, q, k, v, out)?;
        forward_with_isa(p, q, k, v, out, CpuIsa::detect())
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
        [CpuIsa::Avx512, CpuIsa::Avx2Fma]
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(CpuIsa::Portable)
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
        [CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable]
            .into_iter()
            .find(|isa| isa.name() == s)
    }
}

/// Runs cpu-flash with a chosen micro-kernel family (for tests and
/// benchmarks). An `isa` the CPU lacks falls back to the detected one.
pub fn forward_with_isa(
    p: &AttentionProblem,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &mut Tensor,
    isa: CpuIsa,
) -> Result<(), BackendError> {
    p.validate()?;
    let isa = if isa.available() {
        isa
    } else {
        CpuIsa::detect()
    };
    let not_host = || BackendError::Unsupported {
        backend: "cpu-flash",
        reasons: vec![Unsupported::Limit(
            "q, k, v and out must be host tensors of the problem's dtype and shape".to_string(),
        )],
    };
    let shapes_ok = q.shape() == p.q_shape()
        && k.shape() == p.kv_shape()
        && v.shape() == p.kv_shape()
        && out.shape() == p.out_shape();
    if !shapes_ok {
        return Err(not_host());
    }
    let (Some(q), Some(k), Some(v)) = (q.host(), k.host(), v.host()) else {
        return Err(not_host());
    };
    let out = out.host_mut().ok_or_else(not_host)?;
    match (q, k, v, out) {
        (HostData::F32(q), HostData::F32(k), HostData::F32(v), HostData::F32(o)) => {
            run(p, q, k, v, o, isa)
        }
        (HostData::F16(q), HostData::F16(k), HostData::F16(v), HostData::F16(o)) => {
            run(p, q, k, v, o, isa)
        }
        (HostData::BF16(q), HostData::BF16(k), HostData::BF16(v), HostData::BF16(o)) => {
            run(p, q, k, v, o, isa)
        }
        _ => return Err(not_host()),
    }
    Ok(())
}

/// Element types the backend reads and writes; compute is always f32.
trait Elem: Copy + Send + Sync + 'static {
    fn widen(src: &[Self], dst: &mut [f32]);
    fn narrow(src: &[f32], dst: &mut [Self]);
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
    scale: f32,
    softcap: Option<f32>,
    mask: Mask,
}

/// A worker's reusable buffers, all f32.
struct Scratch {
    /// Q block, `[BQ][d]`, pre-scaled.
    q: Vec<f32>,
    /// Unnormalised output block, `[BQ][dp]`.
    o: Vec<f32>,
    /// K tile transposed, `[d][BK]`.
    kt: Vec<f32>,
    /// V tile, `[BK][dp]`.
    v: Vec<f32>,
    /// Scores, then probabilities, `[BQ][BK]`.
    s: Vec<f32>,
    /// One widened K row.
    row: Vec<f32>,
    m: [f32; BQ],
    l: [f32; BQ],
    range: [(usize, usize); BQ],
}

impl Scratch {
    fn new(d: usize, dp: usize) -> Scratch {
        Scratch {
            q: vec![0.0; BQ * d],
            o: vec![0.0; BQ * dp],
            kt: vec![0.0; d * BK],
            v: vec![0.0; BK * dp],
            s: vec![0.0; BQ * BK],
            row: vec![0.0; d],
            m: [f32::NEG_INFINITY; BQ],
            l: [0.0; BQ],
            range: [(0, 0); BQ],
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
        scale: p.effective_scale(),
        softcap: p.softcap,
        mask: p.mask,
    };
    let tasks = p.batch * p.num_q_heads * ctx.q_blocks;
    (0..tasks).into_par_iter().for_each_init(
        || Scratch::new(ctx.d, ctx.dp),
        |sc, t| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `forward_with_isa` only passes an ISA whose features
            // `available()` confirmed at run time.
            CpuIsa::Avx512 => unsafe { x86::task_avx512(&ctx, sc, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 and FMA were detected.
            CpuIsa::Avx2Fma => unsafe { x86::task_avx2(&ctx, sc, t) },
            // SAFETY: the portable kernels need no CPU feature.
            _ => unsafe { task::<Portable, T>(&ctx, sc, t) },
        },
    );
}

/// One (batch, q head, query block) task.
///
/// # Safety
/// `K`'s CPU features must be present; tasks running concurrently must have
/// distinct `t` (they then write disjoint output rows).
#[inline(always)]
unsafe fn task<K: Kernels, T: Elem>(c: &Ctx<T>, sc: &mut Scratch, t: usize) {
    let (d, dp) = (c.d, c.dp);
    let qb = t % c.q_blocks;
    let h = (t / c.q_blocks) % c.hq;
    let b = t / (c.q_blocks * c.hq);
    let kvh = h / c.group;
    let i0 = qb * BQ;
    let rows = BQ.min(c.sq - i0);
    let rows_p = rows.next_multiple_of(ROW_ALIGN);

    // Union of the rows' key ranges; ranges are monotone in the row index,
    // so every key block outside it is masked for the whole query block.
    let (mut kv_lo, mut kv_hi) = (usize::MAX, 0);
    for r in 0..rows {
        let (lo, hi) = c.mask.key_range(i0 + r, c.sq, c.skv);
        sc.range[r] = (lo, hi);
        if lo < hi {
            kv_lo = kv_lo.min(lo);
            kv_hi = kv_hi.max(hi);
        }
    }

    let out_row = |r: usize| ((b * c.sq + i0 + r) * c.hq + h) * d;
    if kv_lo >= kv_hi {
        for r in 0..rows {
            write_row(c, out_row(r), None);
        }
        return;
    }

    // Q block, widened and pre-scaled; padding rows are zero.
    for r in 0..rows {
        let src = &c.q[out_row(r)..out_row(r) + d];
        let dst = &mut sc.q[r * d..(r + 1) * d];
        T::widen(src, dst);
        for x in dst.iter_mut() {
            *x *= c.scale;
        }
    }
    sc.q[rows * d..rows_p * d].fill(0.0);
    sc.o[..rows_p * dp].fill(0.0);
    sc.m[..rows].fill(f32::NEG_INFINITY);
    sc.l[..rows].fill(0.0);

    let mut j0 = kv_lo;
    while j0 < kv_hi {
        let n = BK.min(kv_hi - j0);
        // K tile transposed to [d][BK]; V tile to [BK][dp] (pad columns stay 0).
        for jj in 0..n {
            let off = ((b * c.skv + j0 + jj) * c.hkv + kvh) * d;
            T::widen(&c.k[off..off + d], &mut sc.row);
            for (x, &val) in sc.row.iter().enumerate() {
                sc.kt[x * BK + jj] = val;
            }
            T::widen(&c.v[off..off + d], &mut sc.v[jj * dp..jj * dp + d]);
        }

        let cols = n.next_multiple_of(COL_ALIGN);
        // SAFETY: q holds rows_p*d, kt d*BK, s rows_p*BK floats (BQ ≥ rows_p,
        // BK ≥ cols); rows_p is a multiple of ROW_ALIGN and cols of COL_ALIGN.
        K::qk(
            sc.q.as_ptr(),
            d,
            sc.kt.as_ptr(),
            sc.s.as_mut_ptr(),
            rows_p,
            cols,
        );

        for r in 0..rows {
            let (lo, hi) = sc.range[r];
            let srow = &mut sc.s[r * BK..r * BK + n];
            let a = lo.max(j0).min(j0 + n) - j0;
            let e = hi.min(j0 + n).max(j0) - j0;
            if a >= e {
                srow.fill(0.0);
                continue;
            }
            srow[..a].fill(0.0);
            srow[e..].fill(0.0);
            let live = &mut srow[a..e];
            if let Some(cap) = c.softcap {
                for x in live.iter_mut() {
                    *x = cap * (*x / cap).tanh();
                }
            }
            let m_old = sc.m[r];
            let m_new = m_old.max(row_max(live));
            let sum = exp_sub_sum(live, m_new);
            let alpha = (m_old - m_new).exp();
            sc.m[r] = m_new;
            sc.l[r] = sc.l[r] * alpha + sum;
            if alpha != 1.0 {
                for x in sc.o[r * dp..r * dp + d].iter_mut() {
                    *x *= alpha;
                }
            }
        }
        // Padding rows of S must not feed NaN or stale values into O.
        sc.s[rows * BK..rows_p * BK].fill(0.0);

        // SAFETY: s holds rows_p*BK, v n*dp (n ≤ BK), o rows_p*dp floats;
        // dp is a multiple of DIM_ALIGN.
        K::pv(
            sc.s.as_ptr(),
            n,
            sc.v.as_ptr(),
            dp,
            sc.o.as_mut_ptr(),
            rows_p,
        );
        j0 += n;
    }

    for r in 0..rows {
        let l = sc.l[r];
        let o = &mut sc.o[r * dp..r * dp + d];
        if l > 0.0 {
            let inv = 1.0 / l;
            for x in o.iter_mut() {
                *x *= inv;
            }
            write_row(c, out_row(r), Some(o));
        } else {
            write_row(c, out_row(r), None);
        }
    }
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

/// Maximum of a non-empty slice, in 16 independent lanes so it vectorises.
#[inline(always)]
fn row_max(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = s.chunks_exact(16);
    for ch in &mut chunks {
        for l in 0..16 {
            acc[l] = if ch[l] > acc[l] { ch[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in chunks.remainder().iter().chain(acc.iter()) {
        m = if x > m { x } else { m };
    }
    m
}

/// Replaces each `x` by `exp(x - m)` and returns their sum.
#[inline(always)]
fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = s.chunks_exact_mut(16);
    for ch in &mut chunks {
        for l in 0..16 {
            let e = fast_exp(ch[l] - m);
            ch[l] = e;
            acc[l] += e;
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = fast_exp(*x - m);
        sum += *x;
    }
    sum + acc.iter().sum::<f32>()
}

/// `exp(x)` for `x <= 0` (Cephes expf: Cody-Waite range reduction and a
/// degree-6 polynomial, ~1 ulp), branch-free so loops over it vectorise.
/// Inputs below ln(2^-126) give 0, so `-inf` maps to 0.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LO: f32 = -87.336_55;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = if x > LO { x } else { LO };
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut y = 1.987_569_1e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5.000_000_1e-1;
    y = y * r * r + r + 1.0;
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
}

/// The two micro-kernels of one ISA.
trait Kernels {
    /// `s[r][c] = Σ_x q[r][x] · kt[x][c]` for `r < rows`, `c < cols`, with
    /// `q` `[rows][d]`, `kt` `[d][BK]` and `s` `[rows][BK]`.
    ///
    /// # Safety
    /// Buffers hold those sizes; `rows % ROW_ALIGN == 0`,
    /// `cols % COL_ALIGN == 0`, `cols <= BK`; the ISA's features are present.
    unsafe fn qk(q: *const f32, d: usize, kt: *const f32, s: *mut f32, rows: usize, cols: usize);
    /// `o[r][c] += Σ_{j<n} p[r][j] · v[j][c]` for `r < rows`, `c < dp`, with
    /// `p` `[rows][BK]`, `v` `[n][dp]` and `o` `[rows][dp]`.
    ///
    /// # Safety
    /// Buffers hold those sizes; `rows % ROW_ALIGN == 0`,
    /// `dp % DIM_ALIGN == 0`; the ISA's features are present.
    unsafe fn pv(p: *const f32, n: usize, v: *const f32, dp: usize, o: *mut f32, rows: usize);
}

/// Register-blocked `MR × (NV·LANES)` tiles of S = Q·Kt; the accumulators
/// stay in registers across the whole d loop.
#[inline(always)]
unsafe fn qk_blocked<S: Simd, const MR: usize, const NV: usize>(
    q: *const f32,
    d: usize,
    kt: *const f32,
    s: *mut f32,
    rows: usize,
    cols: usize,
) {
    let w = NV * S::LANES;
    let mut r0 = 0;
    while r0 < rows {
        let mut c0 = 0;
        while c0 < cols {
            let mut acc = [[S::zero(); NV]; MR];
            for x in 0..d {
                let kp = kt.add(x * BK + c0);
                let mut kv = [S::zero(); NV];
                for (u, kvu) in kv.iter_mut().enumerate() {
                    *kvu = S::load(kp.add(u * S::LANES));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let qb = S::splat(*q.add((r0 + r) * d + x));
                    for u in 0..NV {
                        accr[u] = S::fma(qb, kv[u], accr[u]);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (u, &a) in accr.iter().enumerate() {
                    S::store(s.add((r0 + r) * BK + c0 + u * S::LANES), a);
                }
            }
            c0 += w;
        }
        r0 += MR;
    }
}

/// Register-blocked `MR × (NV·LANES)` tiles of O += P·V over columns
/// `[c_begin, c_end)`; returns the first column it did not cover.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_blocked<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    n: usize,
    v: *const f32,
    dp: usize,
    o: *mut f32,
    rows: usize,
    c_begin: usize,
) -> usize {
    let w = NV * S::LANES;
    let c_end = c_begin + (dp - c_begin) / w * w;
    let mut r0 = 0;
    while r0 < rows {
        let mut c0 = c_begin;
        while c0 < c_end {
            let mut acc = [[S::zero(); NV]; MR];
            for (r, accr) in acc.iter_mut().enumerate() {
                for (u, a) in accr.iter_mut().enumerate() {
                    *a = S::load(o.add((r0 + r) * dp + c0 + u * S::LANES));
                }
            }
            for j in 0..n {
                let vp = v.add(j * dp + c0);
                let mut vv = [S::zero(); NV];
                for (u, vu) in vv.iter_mut().enumerate() {
                    *vu = S::load(vp.add(u * S::LANES));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let pb = S::splat(*p.add((r0 + r) * BK + j));
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
            c0 += w;
        }
        r0 += MR;
    }
    c_end
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
}

impl Kernels for Portable {
    #[inline(always)]
    unsafe fn qk(q: *const f32, d: usize, kt: *const f32, s: *mut f32, rows: usize, cols: usize) {
        // SAFETY: forwarded contract.
        unsafe { qk_blocked::<Portable, 4, 2>(q, d, kt, s, rows, cols) }
    }
    #[inline(always)]
    unsafe fn pv(p: *const f32, n: usize, v: *const f32, dp: usize, o: *mut f32, rows: usize) {
        // SAFETY: forwarded contract; dp is a multiple of 16 = 2 * LANES.
        unsafe { pv_blocked::<Portable, 4, 2>(p, n, v, dp, o, rows, 0) };
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
    }

    impl Kernels for Avx512 {
        #[inline(always)]
        unsafe fn qk(
            q: *const f32,
            d: usize,
            kt: *const f32,
            s: *mut f32,
            rows: usize,
            cols: usize,
        ) {
            // 8 rows × 32 keys: 16 zmm accumulators, 2 loads + 8 broadcasts
            // per 16 FMAs. SAFETY: forwarded contract (ROW_ALIGN = 8,
            // COL_ALIGN = 32).
            unsafe { qk_blocked::<Avx512, 8, 2>(q, d, kt, s, rows, cols) }
        }
        #[inline(always)]
        unsafe fn pv(p: *const f32, n: usize, v: *const f32, dp: usize, o: *mut f32, rows: usize) {
            // 4 rows × 64 dims (16 accumulators), then 16-wide leftovers.
            // SAFETY: forwarded contract; dp is a multiple of 16.
            unsafe {
                let c = pv_blocked::<Avx512, 4, 4>(p, n, v, dp, o, rows, 0);
                pv_blocked::<Avx512, 4, 1>(p, n, v, dp, o, rows, c);
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
    }

    impl Kernels for Avx2 {
        #[inline(always)]
        unsafe fn qk(
            q: *const f32,
            d: usize,
            kt: *const f32,
            s: *mut f32,
            rows: usize,
            cols: usize,
        ) {
            // 4 rows × 16 keys: 8 ymm accumulators of the 16 registers.
            // SAFETY: forwarded contract.
            unsafe { qk_blocked::<Avx2, 4, 2>(q, d, kt, s, rows, cols) }
        }
        #[inline(always)]
        unsafe fn pv(p: *const f32, n: usize, v: *const f32, dp: usize, o: *mut f32, rows: usize) {
            // SAFETY: forwarded contract; dp is a multiple of 16.
            unsafe { pv_blocked::<Avx2, 4, 2>(p, n, v, dp, o, rows, 0) };
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

    fn isas() -> Vec<CpuIsa> {
        [CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// Runs every available ISA on `p` and compares with the f64 oracle.
    fn check(p: &AttentionProblem, seed: u64) {
        let q = Tensor::random(p.q_shape(), p.dtype, seed).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, seed + 1).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, seed + 2).unwrap();
        let expected =
            reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
        let tol = p.dtype.tolerance();
        for isa in isas() {
            let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
            forward_with_isa(p, &q, &k, &v, &mut out, isa).unwrap();
            let got = out.to_f32_vec().unwrap();
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    tol.accepts(g as f64, e),
                    "{p} isa {isa:?}: element {i}: got {g}, expected {e}"
                );
            }
        }
    }

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
            check(
                &problem(1, 2, 1, 1, 1, d, DType::F32, Mask::None),
                10 + i as u64,
            );
            check(
                &problem(1, 2, 2, 1, 70, d, DType::F32, Mask::Causal),
                20 + i as u64,
            );
            check(
                &problem(1, 1, 1, 9, 13, d, DType::F32, Mask::None),
                30 + i as u64,
            );
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
            check(
                &problem(2, hq, hkv, 33, 77, 40, DType::F32, Mask::Causal),
                200 + i as u64,
            );
        }
    }

    #[test]
    fn softcap_and_custom_scale() {
        let mut p = problem(
            1,
            4,
            2,
            50,
            90,
            32,
            DType::F32,
            Mask::SlidingWindow { left: 20, right: 4 },
        );
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
    fn fully_masked_rows_are_zero_not_nan() {
        let p = problem(1, 1, 1, 100, 10, 8, DType::F32, Mask::Causal);
        let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        CpuFlash.forward(&p, &q, &k, &v, &mut out).unwrap();
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
        CpuFlash.forward(&p, &q, &k, &v, &mut a).unwrap();
        CpuFlash.forward(&p, &q, &k, &v, &mut b).unwrap();
        assert_eq!(a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -100.0f32;
        while x <= 0.0 {
            let got = fast_exp(x) as f64;
            let want = (x as f64).exp();
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            }
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn wrong_placement_is_an_error_not_a_panic() {
        let p = problem(1, 1, 1, 4, 4, 8, DType::F32, Mask::None);
        let q = Tensor::random(p.q_shape(), DType::F16, 1).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
        assert!(CpuFlash.forward(&p, &q, &k, &k, &mut out).is_err());
        assert!(forward_with_isa(&p, &q, &k, &k, &mut out, CpuIsa::Portable).is_err());
    }
}
