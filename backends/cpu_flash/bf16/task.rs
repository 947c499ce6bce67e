//! One bf16 task, step by step (the f32 path's `task.rs` with the bf16
//! layouts): set up its units, walk the key tiles (packing K^T and V per
//! head or per tile), run each unit's S = Q·K^T, softmax and O += P·V, and
//! write the normalised rows.

use super::super::schedule::Call;
use super::super::scratch::Scratch;
use super::super::task::{finish_units, start_units};
use super::super::unit::Unit;
use super::super::{BK, BQ};
use super::pack::{load_q, Bf16Scratch, KvPlan, PackedKv};
use super::softmax::{RowSoftmax, Scaling};
use super::{MatMul, PvArgs, QkArgs, KB};
use half::bf16;

/// Runs task `t` of the call with the products of `mm` and softmax `X`.
///
/// # Safety
/// `M`'s CPU features must be present (and, for AMX, the tile state
/// granted); tasks running concurrently must have distinct `t`.
#[inline(always)]
pub(in super::super) unsafe fn run_task<M: MatMul, X: RowSoftmax>(
    mm: &mut M,
    c: &Call<bf16>,
    sc: &mut Scratch,
    t: usize,
) {
    let task = c.task(t);
    let mut bs = sc.bf16.take().unwrap_or_else(|| Box::new(Bf16Scratch::new(c.d)));
    let dq = bs.dq;
    let mut units = start_units(c, sc, &task, |sc, ui, pos| {
        load_q(c, &mut bs.q[ui], dq, (task.b, pos.h, pos.i0, pos.rows));
        sc.o[ui][..pos.rows.next_multiple_of(16) * c.dp].fill(0.0);
    });
    let g_lo = units.iter().flatten().map(|u| u.kv_lo).min();
    let g_hi = units.iter().flatten().map(|u| u.kv_hi).max();
    if let (Some(g_lo), Some(g_hi)) = (g_lo, g_hi) {
        let plan = KvPlan::new(c, &task, dq);
        let scaling = Scaling { scale: c.scale, softcap: c.softcap, fma: M::FMA };
        // SAFETY: forwarded contract; `end` follows `begin` on this thread.
        unsafe {
            mm.begin();
            let mut t0 = g_lo / KB * KB;
            while t0 < g_hi {
                let t1 = (t0 + BK).min(g_hi);
                let kv = plan.tile(c, &mut bs, (task.b, task.kvh), t0, t1);
                for (ui, un) in units.iter_mut().enumerate() {
                    let Some(un) = un else { continue };
                    let lo = t0.max(un.kv_lo);
                    let j1 = t1.min(un.kv_hi);
                    if lo < j1 {
                        let j0 = lo / KB * KB;
                        let bufs = Bufs { q: &bs.q[ui], p: &mut bs.p, s: &mut sc.s, o: &mut sc.o[ui] };
                        if c.log2 {
                            step::<M, X, true>(mm, un, bufs, (&kv, j0, j1 - j0), (&scaling, dq, c.dp));
                        } else {
                            step::<M, X, false>(mm, un, bufs, (&kv, j0, j1 - j0), (&scaling, dq, c.dp));
                        }
                    }
                }
                t0 = t1;
            }
            mm.end();
        }
    }
    finish_units(c, sc, &task, &units);
    sc.bf16 = Some(bs);
}

/// A unit's buffers for one step.
struct Bufs<'a> {
    q: &'a [u16],
    p: &'a mut [u16],
    s: &'a mut [f32],
    o: &'a mut [f32],
}

/// One unit over keys `j0..j0 + n` (`j0` a multiple of `KB`, `n <= BK`).
///
/// # Safety
/// As for `run_task`, between `mm.begin()` and `mm.end()`.
#[inline(always)]
unsafe fn step<M: MatMul, X: RowSoftmax, const LOG2: bool>(
    mm: &mut M,
    un: &mut Unit,
    b: Bufs<'_>,
    (kv, j0, n): (&PackedKv, usize, usize),
    (scaling, dq, dp): (&Scaling, usize, usize),
) {
    let rows = un.pos.rows;
    let (rows16, keys) = (rows.next_multiple_of(16), n.next_multiple_of(32));
    assert!(b.q.len() >= BQ * dq && b.p.len() >= BQ * BK && b.s.len() >= BQ * BK && b.o.len() >= BQ * dp);
    let qk = QkArgs {
        q: b.q.as_ptr(),
        q_pitch: dq,
        kt: kv.kt_at(j0),
        pairs: dq / 2,
        s: b.s.as_mut_ptr(),
        rows: rows16,
        keys,
    };
    // SAFETY: Q is [BQ][dq] and S [BQ][BK] (checked above); rows16 <= BQ,
    // keys <= BK; the packed K^T covers keys j0..j0 + keys (`PackedKv`).
    unsafe { mm.qk(&qk) };
    let live = un.live_keys(j0, n);
    let mut alpha = [1.0f32; BQ];
    // SAFETY: X's features are present (forwarded contract).
    unsafe { X::tile::<LOG2>(un, b.s, b.p, n, &live, scaling, &mut alpha) };
    // Padding rows of the last query block multiply as zeros.
    b.p[rows * BK..rows16 * BK].fill(0);
    if !M::RESCALES_O {
        for (r, &a) in alpha.iter().enumerate().take(rows) {
            if a != 1.0 {
                b.o[r * dp..(r + 1) * dp].iter_mut().for_each(|x| *x *= a);
            }
        }
    }
    let pv = PvArgs {
        p: b.p.as_ptr(),
        vv: kv.vv_at(j0),
        vv_pitch: kv.vv_pitch,
        keys,
        o: b.o.as_mut_ptr(),
        dp,
        alpha: alpha.as_ptr(),
        rows: rows16,
    };
    // SAFETY: P is [BQ][BK], O [BQ][dp], alpha [BQ]; the packed V covers
    // keys j0..j0 + keys (`PackedKv`).
    unsafe { mm.pv(&pv) };
}
