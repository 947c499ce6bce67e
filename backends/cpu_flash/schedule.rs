//! How a call is cut into tasks and run on rayon: the call description
//! every task reads, the task numbering, and one scratch per worker.

use super::elem::Elem;
use super::isa::VerifiedIsa;
use super::scratch::Scratch;
use super::{BQ, DIM_ALIGN, SUB};
use crate::problem::{AttentionProblem, Mask};
use crate::tensor::Layout;
use rayon::prelude::*;

/// Where the rows of one `[batch, seq, heads, d]` tensor live in its
/// storage: the element index of `[b, s, h, 0]` is
/// `offset + b·batch + s·seq + h·head`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rows {
    pub offset: usize,
    pub batch: usize,
    pub seq: usize,
    pub head: usize,
}

impl Rows {
    fn of(layout: &Layout) -> Rows {
        let [batch, seq, head] = layout.strides;
        Rows { offset: layout.offset, batch, seq, head }
    }

    #[inline(always)]
    pub(super) fn at(&self, b: usize, s: usize, h: usize) -> usize {
        self.offset + b * self.batch + s * self.seq + h * self.head
    }
}

/// The checked views' layouts (shape, strides, offset into the storage).
#[derive(Clone, Copy, Debug)]
pub(super) struct Layouts {
    pub q: Layout,
    pub k: Layout,
    pub v: Layout,
    pub out: Layout,
}

/// The output pointer shared by all tasks. Each task writes only the rows
/// of its own (batch, head, query block), so writes never overlap.
#[derive(Clone, Copy)]
pub(super) struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint rows through the pointer (see `OutPtr`), and
// the buffer outlives the parallel loop that uses it.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; no element is ever read or written by two tasks.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Everything a task needs to know about the call.
pub(super) struct Call<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    out: OutPtr<T>,
    out_len: usize,
    pub q_rows: Rows,
    pub k_rows: Rows,
    pub v_rows: Rows,
    pub out_rows: Rows,
    pub sq: usize,
    pub skv: usize,
    pub hkv: usize,
    pub d: usize,
    /// `d` rounded up to `DIM_ALIGN`.
    pub dp: usize,
    pub group: usize,
    q_blocks: usize,
    /// Tasks per (batch, kv head): `ceil(q_blocks * group / SUB)`.
    kv_tasks: usize,
    /// The factor Q is multiplied by: the softmax scale, times log2(e)
    /// when `log2` (scores are then in base-2 units and `exp2` replaces
    /// `exp`, a cheaper polynomial; not with soft-capping, which needs the
    /// natural scores).
    pub scale: f32,
    /// The softmax scale itself (for the exact-row path).
    pub softmax_scale: f32,
    pub log2: bool,
    pub softcap: Option<f32>,
    pub mask: Mask,
}

/// One task: units `first_unit..first_unit + units` of (batch `b`, kv
/// head `kvh`). Units are numbered query block major, GQA head minor, so a
/// task holds a group's heads for a block, or consecutive blocks of one
/// head; all of them read the same K/V.
#[derive(Clone, Copy, Debug)]
pub(super) struct Task {
    pub b: usize,
    pub kvh: usize,
    pub first_unit: usize,
    pub units: usize,
}

/// One unit's place: q head `h`, queries `i0..i0 + rows`.
#[derive(Clone, Copy, Debug)]
pub(super) struct UnitPos {
    pub h: usize,
    pub i0: usize,
    pub rows: usize,
}

impl<'a, T: Elem> Call<'a, T> {
    /// The call over whole storages `q`, `k`, `v`, `out`, which the checked
    /// views' `layouts` index (bounds and non-overlapping output were
    /// checked with the views).
    pub(super) fn new(p: &AttentionProblem, (q, k, v, out): Storages<'a, T>, layouts: Layouts) -> Call<'a, T> {
        let (d, group) = (p.head_dim, p.group_size());
        let q_blocks = p.seq_q.div_ceil(BQ);
        let log2 = p.softcap.is_none();
        Call {
            q,
            k,
            v,
            out: OutPtr(out.as_mut_ptr()),
            out_len: out.len(),
            q_rows: Rows::of(&layouts.q),
            k_rows: Rows::of(&layouts.k),
            v_rows: Rows::of(&layouts.v),
            out_rows: Rows::of(&layouts.out),
            sq: p.seq_q,
            skv: p.seq_kv,
            hkv: p.num_kv_heads,
            d,
            dp: d.next_multiple_of(DIM_ALIGN),
            group,
            q_blocks,
            kv_tasks: (q_blocks * group).div_ceil(SUB),
            scale: p.effective_scale() * if log2 { std::f32::consts::LOG2_E } else { 1.0 },
            softmax_scale: p.effective_scale(),
            log2,
            softcap: p.softcap,
            mask: p.mask,
        }
    }

    pub(super) fn tasks(&self, batch: usize) -> usize {
        batch * self.hkv * self.kv_tasks
    }

    pub(super) fn task(&self, t: usize) -> Task {
        let tk = t % self.kv_tasks;
        let first_unit = tk * SUB;
        Task {
            b: t / (self.kv_tasks * self.hkv),
            kvh: (t / self.kv_tasks) % self.hkv,
            first_unit,
            units: SUB.min(self.q_blocks * self.group - first_unit),
        }
    }

    /// Where unit `u` of a task on kv head `kvh` sits.
    pub(super) fn unit_pos(&self, kvh: usize, u: usize) -> UnitPos {
        let (qb, g) = (u / self.group, u % self.group);
        let i0 = qb * BQ;
        UnitPos { h: kvh * self.group + g, i0, rows: BQ.min(self.sq - i0) }
    }

    /// Writes output row `[b, i, h]` (`None` = zeros).
    #[inline(always)]
    pub(super) fn write_row(&self, (b, i, h): (usize, usize, usize), row: Option<&[f32]>) {
        let off = self.out_rows.at(b, i, h);
        assert!(off + self.d <= self.out_len, "output row out of bounds");
        // SAFETY: the range is in bounds (checked above) and belongs to
        // exactly one (batch, row, head), which only the current task writes.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.out.0.add(off), self.d) };
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
}

/// The storages of q, k, v and out.
pub(super) type Storages<'a, T> = (&'a [T], &'a [T], &'a [T], &'a mut [T]);

/// Runs every task of the call on rayon's pool.
pub(super) fn run<T: Elem>(p: &AttentionProblem, storages: Storages<'_, T>, layouts: Layouts, isa: VerifiedIsa) {
    let call = Call::new(p, storages, layouts);
    let tasks = call.tasks(p.batch);
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
        let sc = guard.get_or_insert_with(|| Scratch::new(call.d, call.dp));
        T::run_task(isa, &call, sc, t);
    });
}
