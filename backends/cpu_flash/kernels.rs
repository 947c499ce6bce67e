//! The two micro-kernels (S^T = K·Q^T and O = alpha·O + P·V), written once
//! over `Simd` as register-blocked loops, and each ISA's choice of blocks.

use super::simd::{Portable, Simd};
use super::{BQ, QTS};

/// Operands of one S^T = K·Q^T product.
#[derive(Clone, Copy)]
pub(super) struct QkTile {
    /// `keys` K rows of `d` floats, `k_stride` floats apart.
    pub k: *const f32,
    pub k_stride: usize,
    /// The transposed, pre-scaled Q block, `[d][QTS]`.
    pub qt: *const f32,
    pub d: usize,
    /// Scores out, key-major `[BK][BQ]`.
    pub s: *mut f32,
    /// Per query: max so far, `[BQ]`; the kernel folds its scores in.
    pub max: *mut f32,
    pub keys: usize,
    /// Queries to compute (a multiple of `COL_ALIGN`).
    pub cols: usize,
}

/// Operands of one O = alpha·O + P·V update.
#[derive(Clone, Copy)]
pub(super) struct PvTile {
    /// Probabilities, key-major `[BK][BQ]`.
    pub p: *const f32,
    pub keys: usize,
    /// `keys` V rows of `dp` floats, `v_stride` floats apart.
    pub v: *const f32,
    pub v_stride: usize,
    pub dp: usize,
    /// Output block `[BQ][dp]`, rescaled by `alpha` `[BQ]` as it is loaded.
    pub o: *mut f32,
    pub alpha: *const f32,
    /// Query rows to update (a multiple of `ROW_ALIGN`).
    pub rows: usize,
}

/// The two micro-kernels of one ISA. The defaults (4 × 2 vectors) fit 16
/// vector registers; ISAs with more registers override them.
pub(super) trait Kernels: Simd {
    /// `s[j][c] = Σ_x k[j][x] · qt[x][c]` for `j < keys`, `c < cols`; also
    /// `max[c] = max(max[c], max_{j<keys} s[j][c])`.
    ///
    /// # Safety
    /// The buffers hold the sizes `QkTile` names; `keys % KEY_ALIGN == 0`,
    /// `keys <= BK`, `cols % COL_ALIGN == 0`, `cols <= BQ`; the ISA's
    /// features are present.
    #[inline(always)]
    unsafe fn qk(a: &QkTile) {
        // SAFETY: forwarded contract.
        unsafe { qk_blocked::<Self, 4, 2, 0>(a, 0) };
    }

    /// `o[r][c] = alpha[r] · o[r][c] + Σ_{j<keys} p[j][r] · v[j][c]` for
    /// `r < rows`, `c < dp`.
    ///
    /// # Safety
    /// The buffers hold the sizes `PvTile` names; `rows % ROW_ALIGN == 0`,
    /// `rows <= BQ`, `dp % DIM_ALIGN == 0` (a multiple of 2 · LANES for
    /// every ISA with the default); the ISA's features are present.
    #[inline(always)]
    unsafe fn pv(a: &PvTile) {
        // SAFETY: forwarded contract.
        unsafe { pv_blocked::<Self, 4, 2>(a, 0, 0, a.dp) };
    }
}

impl Kernels for Portable {}

#[cfg(target_arch = "x86_64")]
impl Kernels for super::simd::Avx2 {}

#[cfg(target_arch = "x86_64")]
impl Kernels for super::simd::Avx512 {
    #[inline(always)]
    unsafe fn qk(a: &QkTile) {
        // SAFETY: forwarded contract.
        unsafe { qk_16_lanes::<Self>(a) }
    }
    #[inline(always)]
    unsafe fn pv(a: &PvTile) {
        // SAFETY: forwarded contract.
        unsafe { pv_16_lanes::<Self>(a) }
    }
}

/// Sixteen portable lanes with the AVX-512 blocking, so that the AVX-512
/// block plan is tested on CPUs without AVX-512 (`tests/kernels.rs`).
#[cfg(test)]
impl Kernels for super::simd::Lanes<16> {
    #[inline(always)]
    unsafe fn qk(a: &QkTile) {
        // SAFETY: forwarded contract.
        unsafe { qk_16_lanes::<Self>(a) }
    }
    #[inline(always)]
    unsafe fn pv(a: &PvTile) {
        // SAFETY: forwarded contract.
        unsafe { pv_16_lanes::<Self>(a) }
    }
}

/// QK^T blocks for 16-lane ISAs with 32 vector registers (AVX-512).
///
/// # Safety
/// As for `Kernels::qk`; `S::LANES == 16`.
#[inline(always)]
unsafe fn qk_16_lanes<S: Simd>(a: &QkTile) {
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
                let j = qk_blocked::<S, 12, 2, $ks>(a, 0);
                qk_blocked::<S, 4, 4, $ks>(a, j);
            }};
        }
        match a.k_stride {
            144 => run!(144),
            80 => run!(80),
            _ => run!(0),
        }
    }
}

/// P·V blocks for 16-lane ISAs with 32 vector registers (AVX-512).
///
/// # Safety
/// As for `Kernels::pv`; `S::LANES == 16`.
#[inline(always)]
unsafe fn pv_16_lanes<S: Simd>(a: &PvTile) {
    // 6 rows × 64 dims (24 zmm accumulators; 4 V loads + 6 broadcasts per
    // 24 FMAs, and the P block is re-read once per 64 dims instead of per
    // 32: ~2 % faster than 12 × 32 in A/B runs), leftover rows (rows are a
    // multiple of 8, so 2 or 4 remain) as 4 × 64 and 2 × 64; dims past the
    // last multiple of 64 as 12 × 32 / 4 × 32, then a 16-wide leftover
    // column block. SAFETY: forwarded contract; dp is a multiple of 16,
    // rows of 8.
    unsafe {
        let dp = a.dp;
        let (r, c4) = pv_blocked::<S, 6, 4>(a, 0, 0, dp);
        let (r, _) = pv_blocked::<S, 4, 4>(a, r, 0, c4);
        pv_blocked::<S, 2, 4>(a, r, 0, c4);
        let (r, c) = pv_blocked::<S, 12, 2>(a, 0, c4, dp);
        pv_blocked::<S, 4, 2>(a, r, c4, c);
        let (r, _) = pv_blocked::<S, 12, 1>(a, 0, c, dp);
        pv_blocked::<S, 4, 1>(a, r, c, dp);
    }
}

/// Register-blocked `MR keys × (NV·LANES) queries` tiles of S^T = K·Q^T
/// for keys from `j_begin`; the accumulators stay in registers across the
/// whole d loop. Returns the first key it did not cover.
///
/// # Safety
/// As for `Kernels::qk`; `KS` is 0 or equal to `a.k_stride`.
#[inline(always)]
unsafe fn qk_blocked<S: Simd + ?Sized, const MR: usize, const NV: usize, const KS: usize>(
    a: &QkTile,
    j_begin: usize,
) -> usize {
    let QkTile { k, qt, d, s, max: mx, keys, cols, .. } = *a;
    // A compile-time K row stride (`KS != 0`, equal to `k_stride`) lets the
    // MR broadcasts address one pointer with immediate offsets instead of
    // keeping MR row pointers in integer registers.
    let ks = if KS != 0 { KS } else { a.k_stride };
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
            // SAFETY (whole block): j0 + MR <= keys, c0 + w <= cols and
            // x < d keep every access inside the buffers the caller vouched for.
            unsafe {
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
                    for (u, &v) in accr.iter().enumerate() {
                        S::store(s.add((j0 + r) * BQ + c0 + u * S::LANES), v);
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
            }
            j0 += MR;
        }
        c0 += w;
    }
    j_end
}

/// Register-blocked `MR rows × (NV·LANES) dims` tiles of O += P·V over
/// rows `r_begin..` (whole `MR` blocks that fit in `rows`) and columns
/// `c_begin..` (whole `NV·LANES` blocks that fit in `c_stop <= dp`);
/// returns the first row and the first column it did not cover.
///
/// # Safety
/// As for `Kernels::pv`.
#[inline(always)]
unsafe fn pv_blocked<S: Simd + ?Sized, const MR: usize, const NV: usize>(
    a: &PvTile,
    r_begin: usize,
    c_begin: usize,
    c_stop: usize,
) -> (usize, usize) {
    let PvTile { p, keys: n, v, v_stride: vs, dp, o, alpha, rows } = *a;
    let w = NV * S::LANES;
    let c_end = c_begin + (c_stop - c_begin) / w * w;
    let r_end = r_begin + (rows - r_begin) / MR * MR;
    let mut c0 = c_begin;
    while c0 < c_end {
        let mut r0 = r_begin;
        while r0 < r_end {
            // SAFETY (whole block): r0 + MR <= rows, c0 + w <= dp and
            // j < keys keep every access inside the caller's buffers.
            unsafe {
                let mut acc = [[S::zero(); NV]; MR];
                for (r, accr) in acc.iter_mut().enumerate() {
                    let al = S::splat(*alpha.add(r0 + r));
                    for (u, acc) in accr.iter_mut().enumerate() {
                        *acc = S::mul(al, S::load(o.add((r0 + r) * dp + c0 + u * S::LANES)));
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
                    for (u, &x) in accr.iter().enumerate() {
                        S::store(o.add((r0 + r) * dp + c0 + u * S::LANES), x);
                    }
                }
            }
            r0 += MR;
        }
        c0 += w;
    }
    (r_end, c_end)
}
