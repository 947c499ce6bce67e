//! The two products on AMX tiles, in blocks of 2 × 2 accumulator tiles:
//! tiles 0..4 accumulate (16 × 16 f32 each), 4 and 5 hold A operands
//! (16 rows × 32 bf16), 6 and 7 B operands (16 pair rows × 16 columns), so
//! each A and B load feeds two `tdpbf16ps`. Odd leftovers of 16 rows or
//! 16 columns take the 1-wide forms of the same block.

use super::tiles::Tiles;
use super::{kt_offset, vv_offset, MatMul, PvArgs, QkArgs, KB, SP};

/// The AMX kernels over tile registers `T` (the real ones or the emulator).
pub(crate) struct Amx<T: Tiles>(pub T);

impl<T: Tiles> MatMul for Amx<T> {
    const RESCALES_O: bool = false;
    const FMA: bool = T::FMA;

    #[inline(always)]
    unsafe fn begin(&mut self) {
        // SAFETY: forwarded contract (AMX usable on this thread).
        unsafe { self.0.configure() }
    }

    #[inline(always)]
    unsafe fn end(&mut self) {
        // SAFETY: forwarded contract.
        unsafe { self.0.release() }
    }

    /// 32 rows (16 for an odd leftover) × 32 keys per block.
    fn qk_blocks(a: &QkArgs) -> usize {
        a.rows.div_ceil(32) * (a.keys / 32)
    }

    /// `S[r][j] = Σ_x Q[r][x] K[j][x]`: A = Q rows, B = K^T pairs.
    #[inline(always)]
    unsafe fn qk_block(&mut self, a: &QkArgs, b: usize) {
        // Key-block major: a block's K^T (32 keys × all pairs) is loaded
        // for both row pairs while it is in L1; Q stays in L1 throughout.
        let rb = a.rows.div_ceil(32);
        let (r0, j0) = (b % rb * 32, b / rb * 32);
        // SAFETY (both calls): rows and keys are multiples of 16 and 32
        // (`QkArgs`) and b is below the count, so the block is inside the
        // operands.
        unsafe {
            if r0 + 32 <= a.rows {
                qk_tiles::<T, 2>(&mut self.0, a, r0, j0);
            } else {
                qk_tiles::<T, 1>(&mut self.0, a, r0, j0);
            }
        }
    }

    /// 32 rows (16 for an odd leftover) × 32 dims per block.
    fn pv_blocks(a: &PvArgs) -> usize {
        a.rows.div_ceil(32) * a.dp.div_ceil(32)
    }

    /// `O[r][c] += Σ_j P[r][j] V[j][c]`: A = P rows, B = V pairs, the
    /// accumulators loaded from and stored back to O.
    #[inline(always)]
    unsafe fn pv_block(&mut self, a: &PvArgs, b: usize) {
        let rb = a.rows.div_ceil(32);
        // Dim-block major: a block of V (all keys × 32 dims) is read from
        // L2 once and from L1 for the second row block.
        let (r0, c0) = (b % rb * 32, b / rb * 32);
        let t = &mut self.0;
        // SAFETY (all calls): rows and dp are multiples of 16, keys of 32
        // (`PvArgs`) and b is below the count, so the block is inside the
        // operands.
        unsafe {
            match (r0 + 32 <= a.rows, c0 + 32 <= a.dp) {
                (true, true) => pv_tiles::<T, 2, 2>(t, a, r0, c0),
                (true, false) => pv_tiles::<T, 2, 1>(t, a, r0, c0),
                (false, true) => pv_tiles::<T, 1, 2>(t, a, r0, c0),
                (false, false) => pv_tiles::<T, 1, 1>(t, a, r0, c0),
            }
        }
    }
}

/// S rows `r0..r0 + 16·MT`, keys `j0..j0 + 32`: accumulators 0/1 (rows
/// r0..+16, keys j0..+16 and j0+16..+32) and 2/3 (the next 16 rows).
///
/// # Safety
/// As for `MatMul::qk_block`; `r0 + 16·MT <= a.rows`, `j0 + 32 <= a.keys`.
#[inline(always)]
unsafe fn qk_tiles<T: Tiles, const MT: usize>(t: &mut T, a: &QkArgs, r0: usize, j0: usize) {
    let (qs, ks, ss) = (a.q_pitch * 2, KB * 4, SP * 4);
    {
        // SAFETY (whole block): Q rows r0..r0+16·MT, pairs p0..p0+16 <=
        // pairs, keys j0..j0+32 <= keys and S rows/keys likewise are inside
        // the operands `QkArgs` describes (byte strides above).
        unsafe {
            t.zero::<0>();
            t.zero::<1>();
            if MT == 2 {
                t.zero::<2>();
                t.zero::<3>();
            }
            let (secs, n_secs) = a.sections();
            for &(q_off, kt) in &secs[..n_secs] {
                let mut p0 = 0;
                while p0 < a.pairs {
                    let qa = a.q.add(r0 * a.q_pitch + q_off + 2 * p0).cast::<u8>();
                    let kb = kt.add(kt_offset(p0, j0, a.pairs)).cast::<u8>();
                    block_step::<T, MT, 2>(t, (qa, qs, 16 * qs), (kb, ks, 64));
                    p0 += 16;
                }
            }
            let sp = a.s.add(r0 * SP + j0).cast::<u8>();
            t.store::<0>(sp, ss);
            t.store::<1>(sp.add(64), ss);
            if MT == 2 {
                t.store::<2>(sp.add(16 * ss), ss);
                t.store::<3>(sp.add(16 * ss + 64), ss);
            }
        }
    }
}

/// O rows `r0..r0 + 16·MT`, dims `c0..c0 + 16·NT`, over all the keys.
///
/// # Safety
/// As for `MatMul::pv_block`; the block is inside rows × dp.
#[inline(always)]
unsafe fn pv_tiles<T: Tiles, const MT: usize, const NT: usize>(t: &mut T, a: &PvArgs, r0: usize, c0: usize) {
    // V rows of a group are 64 bytes apart; the next group vv_group u32 on.
    let (os, ps, vs, vg) = (a.dp * 4, a.p_pitch * 2, 64, a.vv_group * 4);
    // SAFETY (whole block): O rows r0..r0+16·MT and dims c0..c0+16·NT, P
    // rows likewise and keys x..x+32 <= keys, V pair rows x/2..x/2+16 of
    // the dim groups from c0 on are inside the operands `PvArgs` describes.
    unsafe {
        let op = a.o.add(r0 * a.dp + c0).cast::<u8>();
        t.load::<0>(op, os);
        if NT == 2 {
            t.load::<1>(op.add(64), os);
        }
        if MT == 2 {
            t.load::<2>(op.add(16 * os), os);
            if NT == 2 {
                t.load::<3>(op.add(16 * os + 64), os);
            }
        }
        let (secs, n_secs) = a.sections();
        for &(p_off, vv) in &secs[..n_secs] {
            let mut x = 0;
            while x < a.keys {
                let pa = a.p.add(r0 * a.p_pitch + p_off + x).cast::<u8>();
                let vb = vv.add(vv_offset(x / 2, c0, a.vv_group)).cast::<u8>();
                block_step::<T, MT, NT>(t, (pa, ps, 16 * ps), (vb, vs, vg));
                x += 32;
            }
        }
        t.store::<0>(op, os);
        if NT == 2 {
            t.store::<1>(op.add(64), os);
        }
        if MT == 2 {
            t.store::<2>(op.add(16 * os), os);
            if NT == 2 {
                t.store::<3>(op.add(16 * os + 64), os);
            }
        }
    }
}

/// One reduction step of a block: A operands (rows `0..16` at `a.0`, rows
/// `16..32` at `a.0 + a.2`, `a.1` bytes apart) into tiles 4/5, B operands
/// (`b.0` and `b.0 + b.2`) into 6/7, and the `MT × NT` products into
/// accumulators 0..4, each product issued as soon as its operands are
/// loaded (A0, B0, C00, B1, C01, A1, C10, C11), so that the tile unit
/// starts before all four loads are done.
///
/// # Safety
/// Tiles configured; 16 rows of 64 readable bytes at each operand used.
#[inline(always)]
unsafe fn block_step<T: Tiles, const MT: usize, const NT: usize>(
    t: &mut T,
    a: (*const u8, usize, usize),
    b: (*const u8, usize, usize),
) {
    // SAFETY: forwarded contract.
    unsafe {
        t.load::<4>(a.0, a.1);
        t.load::<6>(b.0, b.1);
        t.dp::<0, 4, 6>();
        if NT == 2 {
            t.load::<7>(b.0.add(b.2), b.1);
            t.dp::<1, 4, 7>();
        }
        if MT == 2 {
            t.load::<5>(a.0.add(a.2), a.1);
            t.dp::<2, 5, 6>();
            if NT == 2 {
                t.dp::<3, 5, 7>();
            }
        }
    }
}
