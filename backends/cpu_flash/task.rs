//! One task, step by step: set up its units (key ranges, Q blocks), make
//! sure the kv head's K/V copies are current, walk the key tiles running
//! every unit that needs each tile, and write the normalised rows.

use super::elem::Elem;
use super::exact::{exact_row, HUGE_LOGIT};
use super::kernels::Kernels;
use super::schedule::{Call, Rows, Task, UnitPos};
use super::scratch::{prefetch_row, AlignedBuf, HeadRows, Scratch, PREFETCH_ROWS};
use super::unit::{KvTile, StridedRows, Unit, UnitBuffers};
use super::{BK, DIM_ALIGN, HEAD_PAD, KEY_ALIGN, QTS, ROW_ALIGN, SUB, VHEAD_MAX};

/// Runs task `t` of the call.
///
/// # Safety
/// `K`'s CPU features must be present; tasks running concurrently must have
/// distinct `t` (they then write disjoint output rows).
#[inline(always)]
pub(super) unsafe fn run_task<K: Kernels, T: Elem>(c: &Call<T>, sc: &mut Scratch, t: usize) {
    let task = c.task(t);
    let mut units = start_units(c, sc, &task, |sc, ui, pos| {
        load_q_block(c, sc, ui, (task.b, pos.h, pos.i0, pos.rows));
        sc.o[ui][..pos.rows.next_multiple_of(ROW_ALIGN) * c.dp].fill(0.0);
    });
    let g_lo = units.iter().flatten().map(|u| u.kv_lo).min();
    let g_hi = units.iter().flatten().map(|u| u.kv_hi).max();
    let (Some(g_lo), Some(g_hi)) = (g_lo, g_hi) else {
        return;
    };
    let plan = KvPlan::new(c, &task);
    plan.fill_head_copies(c, sc, &task);
    // SAFETY: forwarded contract.
    unsafe { walk_tiles::<K, T>(c, sc, &plan, &mut units, g_lo..g_hi) };
    finish_units(c, sc, &task, &units);
}

/// The task's units with at least one visible key; rows of the others are
/// written as zeros. `load` loads each live unit's Q block and clears its O.
pub(super) fn start_units<T: Elem>(
    c: &Call<T>,
    sc: &mut Scratch,
    task: &Task,
    mut load: impl FnMut(&mut Scratch, usize, UnitPos),
) -> [Option<Unit>; SUB] {
    let mut units: [Option<Unit>; SUB] = std::array::from_fn(|_| None);
    for (ui, slot) in units.iter_mut().enumerate().take(task.units) {
        let un = Unit::new(c, c.unit_pos(task.kvh, task.first_unit + ui));
        let pos = un.pos;
        if un.is_empty() {
            for r in 0..pos.rows {
                c.write_row((task.b, pos.i0 + r, pos.h), None);
            }
            continue;
        }
        load(sc, ui, pos);
        *slot = Some(un);
    }
    units
}

/// Q rows `i0..i0 + rows` of head `h`, widened, pre-scaled and transposed
/// to `[d][QTS]` into unit `ui`'s buffer. Rows are widened first, then
/// transposed in 8-column strips so the strided stores stay within a few
/// L1 lines at a time.
fn load_q_block<T: Elem>(c: &Call<T>, sc: &mut Scratch, ui: usize, (b, h, i0, rows): (usize, usize, usize, usize)) {
    let d = c.d;
    let qt_buf = &mut sc.qt[ui];
    if rows < super::BQ {
        qt_buf.fill(0.0);
    }
    for r in 0..rows {
        if r + PREFETCH_ROWS < rows {
            let pf = c.q_rows.at(b, i0 + r + PREFETCH_ROWS, h);
            prefetch_row(&c.q[pf..pf + d]);
        }
        let off = c.q_rows.at(b, i0 + r, h);
        T::widen(&c.q[off..off + d], &mut sc.row[r * d..(r + 1) * d]);
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
}

/// Where a task reads K and V from. K and V are widened to f32 once per
/// head per worker when the head fits `VHEAD_MAX`, into 64-byte-aligned
/// copies with a padded row stride; else f32 K is read in place, f32 V too
/// when its rows are 64-byte aligned (split zmm loads cost ~30 % of the
/// P·V kernel's speed), and otherwise every tile is widened into scratch.
struct KvPlan {
    k_rows: HeadRows,
    v_rows: HeadRows,
    /// Row strides of the head copies: a multiple of 16 floats plus 16, so
    /// rows start on 64-byte boundaries but not all in the same few L1 sets
    /// (with a power-of-two stride the 64 rows of a tile fight over 1/8 of
    /// the L1 sets and the V tile does not stay in L1 across row blocks).
    khs: usize,
    vhs: usize,
    use_khead: bool,
    use_vhead: bool,
    v_in_place: bool,
}

impl KvPlan {
    fn new<T: Elem>(c: &Call<T>, task: &Task) -> KvPlan {
        let rows = |r: Rows| HeadRows { base: r.at(task.b, 0, task.kvh), stride: r.seq, count: c.skv, d: c.d };
        let (k_rows, v_rows) = (rows(c.k_rows), rows(c.v_rows));
        let v_in_place = match T::as_f32(c.v) {
            Some(v) => {
                c.d == c.dp && v[v_rows.base..].as_ptr().align_offset(64) == 0 && v_rows.stride.is_multiple_of(16)
            }
            None => false,
        };
        let vhs = c.dp + HEAD_PAD;
        let khs = c.d.next_multiple_of(DIM_ALIGN) + HEAD_PAD;
        KvPlan {
            k_rows,
            v_rows,
            khs,
            vhs,
            // K's copy has KEY_ALIGN zero rows past the end, for the padded
            // keys of the last tile.
            use_khead: (c.skv + KEY_ALIGN) * khs <= VHEAD_MAX,
            use_vhead: c.skv * vhs <= VHEAD_MAX,
            v_in_place,
        }
    }

    /// Makes the worker's head copies hold this task's kv head. Contiguous
    /// rows beat the in-place rows at a stride of heads·d even for f32 (~3 %
    /// in A/B runs).
    fn fill_head_copies<T: Elem>(&self, c: &Call<T>, sc: &mut Scratch, task: &Task) {
        let id = (task.b, task.kvh);
        if self.use_vhead {
            sc.vhead.fill(id, c.v, self.v_rows, (self.vhs, c.skv * self.vhs));
        }
        if self.use_khead {
            sc.khead.fill(id, c.k, self.k_rows, (self.khs, (c.skv + KEY_ALIGN) * self.khs));
        }
    }

    /// K rows `j0..j0 + n` (`n` rounded up to `KEY_ALIGN` readable rows).
    fn k_tile<T: Elem>(
        &self,
        c: &Call<T>,
        khead: Option<&AlignedBuf>,
        scratch: &mut AlignedBuf,
        j0: usize,
        n: usize,
    ) -> StridedRows {
        let n_p = n.next_multiple_of(KEY_ALIGN);
        let rows = self.k_rows.slice(j0, n);
        match (khead, T::as_f32(c.k)) {
            (Some(kh), _) if self.use_khead => StridedRows { ptr: kh[j0 * self.khs..].as_ptr(), stride: self.khs },
            // In place needs the padded rows to exist.
            (_, Some(k)) if j0 + n_p <= c.skv => StridedRows { ptr: k[rows.base..].as_ptr(), stride: rows.stride },
            _ => {
                rows.widen_into(c.k, scratch, c.d, false);
                scratch[n * c.d..n_p * c.d].fill(0.0);
                StridedRows { ptr: scratch.as_ptr(), stride: c.d }
            }
        }
    }

    /// V rows `j0..j0 + n`.
    fn v_tile<T: Elem>(
        &self,
        c: &Call<T>,
        vhead: Option<&AlignedBuf>,
        scratch: &mut AlignedBuf,
        j0: usize,
        n: usize,
    ) -> StridedRows {
        let rows = self.v_rows.slice(j0, n);
        match (vhead, T::as_f32(c.v)) {
            (Some(vh), _) if self.use_vhead => StridedRows { ptr: vh[j0 * self.vhs..].as_ptr(), stride: self.vhs },
            (_, Some(v)) if self.v_in_place => StridedRows { ptr: v[rows.base..].as_ptr(), stride: rows.stride },
            _ => {
                rows.widen_into(c.v, scratch, c.dp, false);
                StridedRows { ptr: scratch.as_ptr(), stride: c.dp }
            }
        }
    }
}

/// Tiles of `BK` keys over the union of the units' ranges; each unit takes
/// the part of the tile inside its own range (often all or nothing).
///
/// # Safety
/// `K`'s CPU features must be present.
#[inline(always)]
unsafe fn walk_tiles<K: Kernels, T: Elem>(
    c: &Call<T>,
    sc: &mut Scratch,
    plan: &KvPlan,
    units: &mut [Option<Unit>; SUB],
    keys: std::ops::Range<usize>,
) {
    let mut t0 = keys.start;
    while t0 < keys.end {
        let t1 = (t0 + BK).min(keys.end);
        for (ui, un) in units.iter_mut().enumerate() {
            let Some(un) = un else { continue };
            let j0 = t0.max(un.kv_lo);
            let j1 = t1.min(un.kv_hi);
            if j0 >= j1 {
                continue;
            }
            let n = j1 - j0;
            let k = plan.k_tile(c, sc.khead.get(), &mut sc.k, j0, n);
            let v = plan.v_tile(c, sc.vhead.get(), &mut sc.v, j0, n);
            let kv = KvTile { j0, n, k, v };
            let buf = UnitBuffers { s: &mut sc.s, qt: &sc.qt[ui], o: &mut sc.o[ui] };
            // SAFETY: forwarded contract; `k_tile` / `v_tile` give the rows
            // `KvTile` promises.
            unsafe {
                if c.log2 {
                    un.step::<K, true>(c, buf, &kv)
                } else {
                    un.step::<K, false>(c, buf, &kv)
                }
            };
        }
        t0 = t1;
    }
}

/// Normalises each unit's rows by their sums and writes them out: rows no
/// key is visible to as zeros, rows whose fast result is not finite or
/// whose logits are huge through the exact path (see `exact.rs`).
#[inline(always)]
pub(super) fn finish_units<T: Elem>(c: &Call<T>, sc: &mut Scratch, task: &Task, units: &[Option<Unit>; SUB]) {
    let (d, dp) = (c.d, c.dp);
    for (ui, un) in units.iter().enumerate() {
        let Some(un) = un else { continue };
        let pos = un.pos;
        for (r, &lr) in un.l.iter().enumerate().take(pos.rows) {
            let id = (task.b, pos.i0 + r, pos.h);
            if !un.row_has_keys(r) {
                c.write_row(id, None);
                continue;
            }
            // A NaN or infinite logit or V value, or every logit -inf
            // (l = 0: 0 · inf), leaves a NaN or inf in the row.
            let o = &mut sc.o[ui][r * dp..r * dp + d];
            let inv = 1.0 / lr;
            let mut finite = true;
            for x in o.iter_mut() {
                *x *= inv;
                finite &= x.is_finite();
            }
            // A NaN maximum counts as huge.
            let huge = un.row_max(r).abs().partial_cmp(&HUGE_LOGIT) != Some(std::cmp::Ordering::Less);
            if !finite || huge {
                exact_row(c, id, &mut sc.exact, o);
            }
            c.write_row(id, Some(o));
        }
    }
}
