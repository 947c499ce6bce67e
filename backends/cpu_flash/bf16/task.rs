//! One bf16 task: set up its units, list its steps (one unit over one
//! key tile), run them, and write the normalised rows.
//!
//! With whole-head K^T/V copies the steps run as a three-stage software
//! pipeline: while the softmax of step i-1 runs on the vector units, the
//! tile unit computes S of step i and O += P·V of step i-2, their blocks
//! issued between rows of the softmax (`MatMul` blocks, the softmax's
//! hook). AMX instructions run asynchronously to the vector units, so the
//! two overlap instead of taking turns (S and P are double-buffered). With
//! per-tile packs (heads too large to copy) the steps run one after the
//! other, since the next tile's pack would overwrite the current one.

use super::super::schedule::Call;
use super::super::scratch::{AlignedBuf, Scratch};
use super::super::task::{finish_units, start_units};
use super::super::unit::Unit;
use super::super::{BQ, SUB};
use super::pack::{load_q, Bf16Scratch, KvPlan, PackedKv};
use super::softmax::{RowSoftmax, Scaling};
use super::SK;
use super::{MatMul, PvArgs, QkArgs, KB};
use half::bf16;

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

/// Runs task `t` of the call with the products of `mm` and softmax `X`.
///
/// # Safety
/// `M`'s and `X`'s CPU features must be present (and, for AMX, the tile
/// state granted); tasks running concurrently must have distinct `t`.
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
    let steps = steps(&units);
    if !steps.is_empty() {
        let plan = KvPlan::new(c, &task, dq);
        let scaling = Scaling { scale: c.scale, softcap: c.softcap, fma: M::FMA };
        let mut run = Run { mm, c, bs: &mut bs, o: &mut sc.o, units: &mut units, scaling, dq };
        // SAFETY: forwarded contract; `end` follows `begin` on this thread.
        unsafe {
            run.mm.begin();
            match (plan.heads(), c.log2) {
                (true, true) => run.pipelined::<X, true>(&plan, (task.b, task.kvh), &steps),
                (true, false) => run.pipelined::<X, false>(&plan, (task.b, task.kvh), &steps),
                (false, true) => run.sequential::<X, true>(&plan, &steps),
                (false, false) => run.sequential::<X, false>(&plan, &steps),
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
struct Run<'a, M> {
    mm: &'a mut M,
    c: &'a Call<'a, bf16>,
    bs: &'a mut Bf16Scratch,
    o: &'a mut [AlignedBuf],
    units: &'a mut [Option<Unit>; SUB],
    scaling: Scaling,
    dq: usize,
}

/// Tile work queued for one softmax: blocks of S = Q·K^T, then of P·V.
struct Queue {
    qk: Option<(QkArgs, usize)>,
    pv: Option<(PvArgs, usize)>,
    next: usize,
}

impl Queue {
    fn new<M: MatMul>(qk: Option<QkArgs>, pv: Option<PvArgs>) -> Queue {
        let qk = qk.map(|a| {
            let n = M::qk_blocks(&a);
            (a, n)
        });
        let pv = pv.map(|a| {
            let n = M::pv_blocks(&a);
            (a, n)
        });
        Queue { qk, pv, next: 0 }
    }

    /// Issues the next block, if any.
    ///
    /// # Safety
    /// As for `MatMul::qk_block` / `pv_block` with the queued arguments.
    #[inline(always)]
    unsafe fn issue<M: MatMul>(&mut self, mm: &mut M) {
        let nq = self.qk.as_ref().map_or(0, |q| q.1);
        // SAFETY: forwarded contract; the index is below each count.
        unsafe {
            match (&self.qk, &self.pv) {
                (Some((a, _)), _) if self.next < nq => mm.qk_block(a, self.next),
                (_, Some((a, n))) if self.next - nq < *n => mm.pv_block(a, self.next - nq),
                _ => return,
            }
        }
        self.next += 1;
    }

    /// Issues every block left.
    ///
    /// # Safety
    /// As for `issue`.
    #[inline(always)]
    unsafe fn drain<M: MatMul>(&mut self, mm: &mut M) {
        let total = self.qk.as_ref().map_or(0, |q| q.1) + self.pv.as_ref().map_or(0, |p| p.1);
        while self.next < total {
            // SAFETY: forwarded contract.
            unsafe { self.issue(mm) };
        }
    }
}

impl<M: MatMul> Run<'_, M> {
    /// Rows of unit `ui` (16-padded).
    fn rows16(&self, ui: usize) -> usize {
        self.units[ui].as_ref().map_or(0, |u| u.pos.rows.next_multiple_of(16))
    }

    /// The S = Q·K^T operands of step `st` into S buffer `buf`.
    fn qk_args(&mut self, st: &Step, kv: &PackedKv, buf: usize) -> QkArgs {
        QkArgs {
            q: self.bs.q[st.ui].as_ptr(),
            q_pitch: self.dq,
            kt: kv.kt_at(st.j0),
            pairs: self.dq / 2,
            s: self.bs.s[buf].as_mut_ptr(),
            rows: self.rows16(st.ui),
            keys: st.n.next_multiple_of(32),
        }
    }

    /// The P·V operands of step `st` from P buffer `buf`, after O's
    /// rescale by `alpha` where the kernel does not apply it.
    fn pv_args(&mut self, st: &Step, kv: &PackedKv, buf: usize, alpha: &[f32; BQ]) -> PvArgs {
        let (dp, rows) = (self.c.dp, self.units[st.ui].as_ref().map_or(0, |u| u.pos.rows));
        let o = &mut self.o[st.ui];
        if !M::RESCALES_O {
            for (r, &a) in alpha.iter().enumerate().take(rows) {
                if a != 1.0 {
                    o[r * dp..(r + 1) * dp].iter_mut().for_each(|x| *x *= a);
                }
            }
        }
        PvArgs {
            p: self.bs.p[buf].as_ptr(),
            vv: kv.vv_at(st.j0),
            vv_pitch: kv.vv_pitch,
            keys: st.n.next_multiple_of(32),
            o: o.as_mut_ptr(),
            dp,
            alpha: alpha.as_ptr(),
            rows: self.rows16(st.ui),
        }
    }

    /// The softmax of step `st` from S/P buffer `buf`, issuing `queue`'s
    /// blocks between its rows.
    ///
    /// # Safety
    /// `X`'s features present; the queue's arguments valid (see `issue`).
    #[inline(always)]
    unsafe fn softmax<X: RowSoftmax, const LOG2: bool>(
        &mut self,
        st: &Step,
        buf: usize,
        alpha: &mut [f32; BQ],
        queue: &mut Queue,
    ) {
        let un = self.units[st.ui].as_mut().expect("a step's unit is live");
        let live = un.live_keys(st.j0, st.n);
        let (rows, rows16) = (un.pos.rows, un.pos.rows.next_multiple_of(16));
        let (s, p, mm) = (&mut self.bs.s[buf], &mut self.bs.p[buf], &mut *self.mm);
        // SAFETY: forwarded contract.
        unsafe { X::tile::<LOG2>(un, s, p, st.n, &live, &self.scaling, alpha, &mut || queue.issue(mm)) };
        // Padding rows of the last query block multiply as zeros.
        p[rows * SK..rows16 * SK].fill(0);
    }

    /// Steps as a pipeline over whole-head copies: iteration i computes
    /// S of step i, the softmax of step i-1 and P·V of step i-2.
    ///
    /// # Safety
    /// As for `run_task`, between `begin` and `end`.
    #[inline(always)]
    unsafe fn pipelined<X: RowSoftmax, const LOG2: bool>(&mut self, plan: &KvPlan, id: (usize, usize), steps: &[Step]) {
        let kv = plan.tile(self.c, self.bs, id, steps[0].t0, steps[0].t1);
        let mut alpha = [[1.0f32; BQ]; 2];
        for i in 0..steps.len() + 2 {
            let qk = steps.get(i).map(|st| self.qk_args(st, &kv, i % 2));
            let pv = i.checked_sub(2).map(|k| self.pv_args(&steps[k], &kv, k % 2, &alpha[k % 2]));
            let mut queue = Queue::new::<M>(qk, pv);
            if let Some(k) = i.checked_sub(1).filter(|&k| k < steps.len()) {
                // SAFETY: forwarded contract; S/P buffer k % 2 is neither
                // written by this iteration's S (i % 2) nor read by its P·V
                // (step i-2, buffer i % 2).
                unsafe { self.softmax::<X, LOG2>(&steps[k], k % 2, &mut alpha[k % 2], &mut queue) };
            }
            // SAFETY: forwarded contract.
            unsafe { queue.drain(self.mm) };
        }
    }

    /// Steps one after the other, packing each walk tile as it comes.
    ///
    /// # Safety
    /// As for `run_task`, between `begin` and `end`.
    #[inline(always)]
    unsafe fn sequential<X: RowSoftmax, const LOG2: bool>(&mut self, plan: &KvPlan, steps: &[Step]) {
        let mut packed: Option<(usize, PackedKv)> = None;
        for st in steps {
            if packed.as_ref().map(|p| p.0) != Some(st.t0) {
                packed = Some((st.t0, plan.tile(self.c, self.bs, (usize::MAX, usize::MAX), st.t0, st.t1)));
            }
            let kv = &packed.as_ref().expect("packed just above").1;
            let mut alpha = [1.0f32; BQ];
            let qk = self.qk_args(st, kv, 0);
            // SAFETY (all): forwarded contract; one step at a time.
            unsafe {
                Queue::new::<M>(Some(qk), None).drain(self.mm);
                let mut none = Queue::new::<M>(None, None);
                self.softmax::<X, LOG2>(st, 0, &mut alpha, &mut none);
                let pv = self.pv_args(st, kv, 0, &alpha);
                Queue::new::<M>(None, Some(pv)).drain(self.mm);
            }
        }
    }
}
