//! One bf16 task: set up its units, list its steps (one unit over one
//! walk tile of up to `SK` keys), run each step's S = Q·K^T, softmax and
//! O += P·V, and write the normalised rows.
//!
//! (A three-stage software pipeline, issuing the AMX blocks of the next
//! step's S and the previous step's P·V between rows of a softmax, measured
//! slower and noisier than these plain steps on the Emerald Rapids host:
//! docs/perf.md.)

use super::super::schedule::Call;
use super::super::scratch::{AlignedBuf, Scratch};
use super::super::task::{finish_units, start_units};
use super::super::unit::Unit;
use super::super::{BQ, SUB};
use super::pack::{load_q, Bf16Scratch, KvPlan, PackedKv, Src};
use super::softmax::{RowSoftmax, Scaling};
use super::{p_pitch, MatMul, PvArgs, QkArgs, KB, SK};
/// One unit (`ui`) over keys `j0..j0 + n` of the walk's tile `t0..t1`
/// (`j0` a multiple of `KB`, `n <= SK`).
#[derive(Clone, Copy)]
struct Step {
    ui: usize,
    j0: usize,
    n: usize,
    t0: usize,
    t1: usize,
}

/// Runs task `t` of the call with the products of `mm` and softmax `X`
/// (inputs `S`: bf16, or f16 split into bf16 halves).
///
/// # Safety
/// `M`'s and `X`'s CPU features must be present (and, for AMX, the tile
/// state granted); tasks running concurrently must have distinct `t`.
#[inline(always)]
pub(in super::super) unsafe fn run_task<M: MatMul, X: RowSoftmax, S: Src>(
    mm: &mut M,
    c: &Call<S>,
    sc: &mut Scratch,
    t: usize,
) {
    let task = c.task(t);
    let mut bs = match sc.bf16.take() {
        Some(bs) if bs.split == S::SPLIT => bs,
        _ => Box::new(Bf16Scratch::new(c.d, S::SPLIT)),
    };
    let dq = bs.dq;
    let mut units = start_units(c, sc, &task, |sc, ui, pos| {
        load_q(c, &mut bs, ui, (task.b, pos.h, pos.i0, pos.rows));
        sc.o[ui][..pos.rows.next_multiple_of(16) * c.dp].fill(0.0);
    });
    let steps = steps(&units);
    if !steps.is_empty() {
        let plan = KvPlan::new(c, &task, dq);
        let scaling = Scaling { scale: c.scale, softcap: c.softcap, fma: M::FMA, split: S::SPLIT };
        let mref = [[f32::NEG_INFINITY; BQ]; SUB];
        let mut run = Run { mm, c, bs: &mut bs, o: &mut sc.o, units: &mut units, mref, scaling, dq };
        // SAFETY: forwarded contract; `end` follows `begin` on this thread.
        unsafe {
            run.mm.begin();
            if c.log2 {
                run.steps::<X, true>(&plan, (task.b, task.kvh), &steps);
            } else {
                run.steps::<X, false>(&plan, (task.b, task.kvh), &steps);
            }
            run.mm.end();
        }
    }
    finish_units(c, sc, &task, &units);
    sc.bf16 = Some(bs);
}

/// The task's steps: walk tiles of `SK` keys (from a block start) over the
/// union of the units' ranges; in each, every unit that sees a key of it.
fn steps(units: &[Option<Unit>; SUB]) -> Vec<Step> {
    let g_lo = units.iter().flatten().map(|u| u.kv_lo).min();
    let g_hi = units.iter().flatten().map(|u| u.kv_hi).max();
    let (Some(g_lo), Some(g_hi)) = (g_lo, g_hi) else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    let mut t0 = g_lo / KB * KB;
    while t0 < g_hi {
        let t1 = (t0 + SK).min(g_hi);
        for (ui, un) in units.iter().enumerate() {
            let Some(un) = un else { continue };
            let (lo, j1) = (t0.max(un.kv_lo), t1.min(un.kv_hi));
            if lo < j1 {
                let j0 = lo / KB * KB;
                steps.push(Step { ui, j0, n: j1 - j0, t0, t1 });
            }
        }
        t0 = t1;
    }
    steps
}

/// One task's state while its steps run.
struct Run<'a, M, S> {
    mm: &'a mut M,
    c: &'a Call<'a, S>,
    bs: &'a mut Bf16Scratch,
    o: &'a mut [AlignedBuf],
    units: &'a mut [Option<Unit>; SUB],
    /// Per unit and row: the reference max P is computed against (the
    /// softmax's `LAZY`), -inf before the row's first live key.
    mref: [[f32; BQ]; SUB],
    scaling: Scaling,
    dq: usize,
}

impl<M: MatMul, S: Src> Run<'_, M, S> {
    /// The steps in order; the walk tile's K^T and V come from the head
    /// copies or are packed when the walk reaches the tile.
    ///
    /// # Safety
    /// As for `run_task`, between `begin` and `end`.
    #[inline(always)]
    unsafe fn steps<X: RowSoftmax, const LOG2: bool>(&mut self, plan: &KvPlan, id: (usize, usize), steps: &[Step]) {
        let mut packed: Option<(usize, PackedKv)> = None;
        for st in steps {
            if packed.as_ref().map(|p| p.0) != Some(st.t0) {
                packed = Some((st.t0, plan.tile(self.c, self.bs, id, st.t0, st.t1)));
            }
            let kv = &packed.as_ref().expect("packed just above").1;
            // SAFETY: forwarded contract.
            unsafe { self.step::<X, LOG2>(st, kv) };
        }
    }

    /// S = Q·K^T, the softmax, O's rescale and O += P·V for one step.
    ///
    /// # Safety
    /// As for `steps`.
    #[inline(always)]
    unsafe fn step<X: RowSoftmax, const LOG2: bool>(&mut self, st: &Step, kv: &PackedKv) {
        let dp = self.c.dp;
        let un = self.units[st.ui].as_mut().expect("a step's unit is live");
        let (rows, rows16, keys) = (un.pos.rows, un.pos.rows.next_multiple_of(16), st.n.next_multiple_of(32));
        let q_pitch = self.bs.q_pitch();
        let p_pitch = p_pitch(S::SPLIT);
        let (s, p, o) = (&mut self.bs.s, &mut self.bs.p, &mut self.o[st.ui]);
        let qk = QkArgs {
            q: self.bs.q[st.ui].as_ptr(),
            q_pitch,
            kt: kv.kt_at(st.j0),
            split: S::SPLIT,
            pairs: self.dq / 2,
            s: s.as_mut_ptr(),
            rows: rows16,
            keys,
        };
        // SAFETY: Q is [BQ][dq], S [BQ][SP] (Bf16Scratch); rows16 <= BQ and
        // keys <= SK; the packed K^T covers keys j0..j0 + keys (PackedKv).
        unsafe { self.mm.qk(&qk) };
        let live = un.live_keys(st.j0, st.n);
        let mut alpha = [1.0f32; BQ];
        let mref = &mut self.mref[st.ui];
        // SAFETY: X's features are present (forwarded contract).
        unsafe { X::tile::<LOG2>(un, mref, s, p, st.n, &live, &self.scaling, &mut alpha) };
        // Padding rows of the last query block multiply as zeros.
        p[rows * p_pitch..rows16 * p_pitch].fill(0);
        if !M::RESCALES_O {
            for (r, &a) in alpha.iter().enumerate().take(rows) {
                if a != 1.0 {
                    o[r * dp..(r + 1) * dp].iter_mut().for_each(|x| *x *= a);
                }
            }
        }
        let pv = PvArgs {
            p: p.as_ptr(),
            p_pitch,
            split: S::SPLIT,
            vv: kv.vv_at(st.j0),
            vv_group: kv.vv_group,
            keys,
            o: o.as_mut_ptr(),
            dp,
            alpha: alpha.as_ptr(),
            rows: rows16,
        };
        // SAFETY: P is [BQ][p_pitch], O [BQ][dp], alpha [BQ]; the packed V
        // covers keys j0..j0 + keys (PackedKv).
        unsafe { self.mm.pv(&pv) };
    }
}
