//! The two products with bf16 pair dot products in 16-lane vectors
//! (`vdpbf16ps` on AVX512-BF16): one instruction multiplies 16 × 2 bf16
//! pairs into 16 f32 accumulators, twice the multiply-adds of an f32 FMA.
//!
//! * QK^T: 8 query rows × 32 keys (16 accumulators): per dimension pair,
//!   two K^T loads and 8 broadcasts of a Q pair feed 16 dot products.
//! * P·V: 4 rows × 64 dims (16 accumulators, loaded from O times `alpha`):
//!   per key pair, four V loads and 4 broadcasts of a P pair feed 16 dot
//!   products; dims past the last multiple of 64 in 16-wide blocks.

use super::super::simd::PairDot;
use super::SP;
use super::{kt_offset, vv_offset, MatMul, PvArgs, QkArgs};
use std::marker::PhantomData;

/// The pair-dot kernels over vector type `S` (16 lanes).
pub(crate) struct Dot<S>(PhantomData<S>);

impl<S> Default for Dot<S> {
    fn default() -> Dot<S> {
        Dot(PhantomData)
    }
}

impl<S: PairDot> MatMul for Dot<S> {
    const RESCALES_O: bool = true;
    const FMA: bool = S::FMA;

    unsafe fn begin(&mut self) {}

    unsafe fn end(&mut self) {}

    /// The whole product is one block (vector units only: nothing to
    /// interleave).
    fn qk_blocks(_: &QkArgs) -> usize {
        1
    }

    #[inline(always)]
    unsafe fn qk_block(&mut self, a: &QkArgs, _: usize) {
        assert_eq!(S::LANES, 16, "the pair-dot kernels are written for 16 lanes");
        let mut j0 = 0;
        while j0 < a.keys {
            let mut r0 = 0;
            while r0 < a.rows {
                // SAFETY: rows are a multiple of 16 (so of 8), keys of 32
                // (`QkArgs`), so the block is inside the operands.
                unsafe { qk_block::<S, 8>(a, r0, j0) };
                r0 += 8;
            }
            j0 += 32;
        }
    }

    fn pv_blocks(_: &PvArgs) -> usize {
        1
    }

    #[inline(always)]
    unsafe fn pv_block(&mut self, a: &PvArgs, _: usize) {
        assert_eq!(S::LANES, 16, "the pair-dot kernels are written for 16 lanes");
        let wide = a.dp / 64 * 64;
        let mut r0 = 0;
        while r0 < a.rows {
            // SAFETY: rows are a multiple of 16 (so of 4) and dp of 16
            // (`PvArgs`), so every block is inside the operands.
            unsafe {
                let mut c0 = 0;
                while c0 < wide {
                    pv_block::<S, 4, 4>(a, r0, c0);
                    c0 += 64;
                }
                while c0 < a.dp {
                    pv_block::<S, 4, 1>(a, r0, c0);
                    c0 += 16;
                }
            }
            r0 += 4;
        }
    }
}

/// Reads the bf16 pair (one u32) at `p`.
///
/// # Safety
/// Four readable bytes at `p`.
#[inline(always)]
unsafe fn pair_at(p: *const u16) -> u32 {
    // SAFETY: forwarded contract.
    unsafe { p.cast::<u32>().read_unaligned() }
}

/// S rows `r0..r0 + MR`, keys `j0..j0 + 32`.
///
/// # Safety
/// As for `MatMul::qk`; the block is inside rows × keys.
#[inline(always)]
unsafe fn qk_block<S: PairDot, const MR: usize>(a: &QkArgs, r0: usize, j0: usize) {
    // SAFETY (whole block): pair rows p < pairs, keys j0..j0+32 <= keys,
    // Q rows r0..r0+MR and their 2·pairs elements, S rows likewise.
    unsafe {
        let mut acc = [[S::zero(); 2]; MR];
        let (secs, n_secs) = a.sections();
        for &(q_off, kt) in &secs[..n_secs] {
            for p in 0..a.pairs {
                let kp = kt.add(kt_offset(p, j0, a.pairs)).cast::<f32>();
                let (k0, k1) = (S::load(kp), S::load(kp.add(16)));
                for (r, accr) in acc.iter_mut().enumerate() {
                    let q = S::splat_bits(pair_at(a.q.add((r0 + r) * a.q_pitch + q_off + 2 * p)));
                    accr[0] = S::dot_pairs(accr[0], q, k0);
                    accr[1] = S::dot_pairs(accr[1], q, k1);
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            let sp = a.s.add((r0 + r) * SP + j0);
            S::store(sp, accr[0]);
            S::store(sp.add(16), accr[1]);
        }
    }
}

/// O rows `r0..r0 + MR`, dims `c0..c0 + 16·NV`: `alpha·O + P·V`.
///
/// # Safety
/// As for `MatMul::pv`; the block is inside rows × dp.
#[inline(always)]
unsafe fn pv_block<S: PairDot, const MR: usize, const NV: usize>(a: &PvArgs, r0: usize, c0: usize) {
    // SAFETY (whole block): O/P rows r0..r0+MR, dims c0..c0+16·NV <= dp,
    // key pairs jp < keys/2 and alpha[r0..r0+MR] are inside the operands.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        for (r, accr) in acc.iter_mut().enumerate() {
            let al = S::splat(*a.alpha.add(r0 + r));
            for (u, x) in accr.iter_mut().enumerate() {
                *x = S::mul(al, S::load(a.o.add((r0 + r) * a.dp + c0 + 16 * u)));
            }
        }
        let (secs, n_secs) = a.sections();
        for &(p_off, vsec) in &secs[..n_secs] {
            for jp in 0..a.keys / 2 {
                let mut vv = [S::zero(); NV];
                for (u, x) in vv.iter_mut().enumerate() {
                    *x = S::load(vsec.add(vv_offset(jp, c0 + 16 * u, a.vv_group)).cast::<f32>());
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let p = S::splat_bits(pair_at(a.p.add((r0 + r) * a.p_pitch + p_off + 2 * jp)));
                    for u in 0..NV {
                        accr[u] = S::dot_pairs(accr[u], p, vv[u]);
                    }
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (u, &x) in accr.iter().enumerate() {
                S::store(a.o.add((r0 + r) * a.dp + c0 + 16 * u), x);
            }
        }
    }
}
