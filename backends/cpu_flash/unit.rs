//! One unit's online softmax: its key ranges and running state, and its
//! step over one tile of keys (S^T = K·Q^T, mask, rescale, exp, O += P·V).

use super::elem::Elem;
use super::exp::exp_any;
use super::kernels::{Kernels, PvTile, QkTile};
use super::schedule::{Call, UnitPos};
use super::{BK, BQ, COL_ALIGN, KEY_ALIGN, QTS, ROW_ALIGN};

/// The running state of one (q head, query block) unit of a task.
pub(super) struct Unit {
    pub pos: UnitPos,
    /// `rows` rounded up to `ROW_ALIGN` (rows the P·V kernel updates).
    rows_p: usize,
    /// `rows` rounded up to `COL_ALIGN` (queries the QK^T kernel computes).
    cols: usize,
    /// Per query: its key range.
    lo: [usize; BQ],
    hi: [usize; BQ],
    /// Union of the rows' key ranges (empty: no query sees a key).
    pub kv_lo: usize,
    pub kv_hi: usize,
    /// Online softmax: running max and sum per query.
    pub(super) m: [f32; BQ],
    pub l: [f32; BQ],
}

/// `rows` rows of f32, `stride` floats apart.
#[derive(Clone, Copy)]
pub(super) struct StridedRows {
    pub ptr: *const f32,
    pub stride: usize,
}

/// Keys `j0..j0 + n` (n ≤ BK) of a unit's tile and where their K and V rows
/// are: K has `n` rounded up to `KEY_ALIGN` readable rows of `d` floats
/// (in place: those keys exist; else zero-padded scratch), V has `n` rows
/// of `dp` floats (in place only when d == dp).
pub(super) struct KvTile {
    pub j0: usize,
    pub n: usize,
    pub k: StridedRows,
    pub v: StridedRows,
}

/// A unit's buffers in the worker's scratch.
pub(super) struct UnitBuffers<'a> {
    /// Scores / probabilities `[BK][BQ]` (shared by the task's units).
    pub s: &'a mut [f32],
    /// The transposed, pre-scaled Q block `[d][QTS]`.
    pub qt: &'a [f32],
    /// The unnormalised output block `[BQ][dp]`.
    pub o: &'a mut [f32],
}

impl Unit {
    /// The unit at `pos`, with each query's key range. Ranges are monotone
    /// in the row index, so their union is one interval and every key block
    /// outside it is skipped.
    pub(super) fn new<T>(c: &Call<T>, pos: UnitPos) -> Unit {
        let mut un = Unit {
            pos,
            rows_p: pos.rows.next_multiple_of(ROW_ALIGN),
            cols: pos.rows.next_multiple_of(COL_ALIGN),
            lo: [0; BQ],
            hi: [0; BQ],
            kv_lo: usize::MAX,
            kv_hi: 0,
            m: [f32::NEG_INFINITY; BQ],
            l: [0.0; BQ],
        };
        for r in 0..pos.rows {
            let (lo, hi) = c.mask.key_range(pos.i0 + r, c.sq, c.skv);
            (un.lo[r], un.hi[r]) = (lo, hi);
            if lo < hi {
                un.kv_lo = un.kv_lo.min(lo);
                un.kv_hi = un.kv_hi.max(hi);
            }
        }
        un
    }

    /// No query of the unit sees any key.
    pub(super) fn is_empty(&self) -> bool {
        self.kv_lo >= self.kv_hi
    }

    /// Whether query row `r` of the unit sees any key.
    pub(super) fn row_has_keys(&self, r: usize) -> bool {
        self.lo[r] < self.hi[r]
    }

    /// Query row `r`'s largest logit so far (in the softmax's base).
    pub(super) fn row_max(&self, r: usize) -> f32 {
        self.m[r]
    }

    /// S^T = K·Q^T, online softmax update, O = alpha·O + P·V over `kv`.
    ///
    /// # Safety
    /// `K`'s CPU features must be present; `kv` points as `KvTile` says.
    #[inline(always)]
    pub(super) unsafe fn step<K: Kernels, const LOG2: bool>(
        &mut self,
        c: &Call<impl Elem>,
        buf: UnitBuffers<'_>,
        kv: &KvTile,
    ) {
        let n_p = kv.n.next_multiple_of(KEY_ALIGN);
        let UnitBuffers { s, qt, o } = buf;
        assert!(s.len() >= BK * BQ && qt.len() >= c.d * QTS && o.len() >= BQ * c.dp && kv.n <= BK);
        // The kernel also leaves each query's maximum over the n_p keys in
        // `tile_max`, which is the tile maximum when no key is masked or padded.
        let mut tile_max = [f32::NEG_INFINITY; BQ];
        let qk = QkTile {
            k: kv.k.ptr,
            k_stride: kv.k.stride,
            qt: qt.as_ptr(),
            d: c.d,
            s: s.as_mut_ptr(),
            max: tile_max.as_mut_ptr(),
            keys: n_p,
            cols: self.cols,
        };
        // SAFETY: k as `KvTile` documents; qt is d*QTS and s BK*BQ (checked
        // above); tile_max is BQ; n_p % KEY_ALIGN == 0, n_p <= BK, cols %
        // COL_ALIGN == 0, cols <= BQ.
        unsafe { K::qk(&qk) };

        let live = self.live_keys(kv.j0, kv.n);
        let max_done = live.full && kv.n == n_p && c.softcap.is_none();
        if !max_done {
            tile_max = mask_and_max(s, kv.n, self.cols, &live, c.softcap);
        }
        let alpha = self.softmax_update::<K, LOG2>(s, kv.n, &tile_max);

        // O = alpha·O + P·V; the rescale happens as the kernel loads O.
        let pv = PvTile {
            p: s.as_ptr(),
            keys: kv.n,
            v: kv.v.ptr,
            v_stride: kv.v.stride,
            dp: c.dp,
            o: o.as_mut_ptr(),
            alpha: alpha.as_ptr(),
            rows: self.rows_p,
        };
        // SAFETY: s is BK*BQ with n ≤ BK live key rows; v as `KvTile`
        // documents; o is BQ*dp; alpha is BQ; rows_p % ROW_ALIGN == 0 and
        // dp % DIM_ALIGN == 0.
        unsafe { K::pv(&pv) };
    }

    /// Per query, its live key interval inside keys `j0..j0 + n`, relative
    /// to `j0`.
    #[inline(always)]
    pub(super) fn live_keys(&self, j0: usize, n: usize) -> LiveKeys {
        let mut live = LiveKeys { begin: [0; BQ], end: [0; BQ], full: true };
        for r in 0..self.pos.rows {
            live.begin[r] = (self.lo[r].clamp(j0, j0 + n) - j0) as i32;
            live.end[r] = (self.hi[r].clamp(j0, j0 + n) - j0) as i32;
            live.full &= live.begin[r] == 0 && live.end[r] == n as i32;
        }
        live
    }

    /// Turns the scores in `s` into probabilities against the new running
    /// max, adds them to the running sums, and returns each query's rescale
    /// factor for O.
    #[inline(always)]
    fn softmax_update<K: Kernels, const LOG2: bool>(
        &mut self,
        s: &mut [f32],
        n: usize,
        tile_max: &[f32; BQ],
    ) -> [f32; BQ] {
        // A query with no live key so far keeps m = -inf; subtracting 0
        // instead turns its -inf scores into exact zeros, never NaN.
        let mut m_use = [0.0f32; BQ];
        let mut alpha = [0.0f32; BQ];
        for r in 0..BQ {
            let m_new = if tile_max[r] > self.m[r] { tile_max[r] } else { self.m[r] };
            m_use[r] = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
            alpha[r] = exp_any::<LOG2>(self.m[r] - m_use[r], K::FMA);
            self.m[r] = m_new;
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
            self.l[r] = self.l[r] * alpha[r] + sum[r];
        }
        alpha
    }
}

/// Per query, the live keys of a tile: `begin[r]..end[r]`; `full` when
/// every query sees every key.
pub(super) struct LiveKeys {
    pub begin: [i32; BQ],
    pub end: [i32; BQ],
    pub full: bool,
}

/// Soft-caps the first `n` score rows, sets scores outside each query's
/// live interval to -inf, and returns each query's maximum.
#[inline(always)]
fn mask_and_max(s: &mut [f32], n: usize, cols: usize, live: &LiveKeys, softcap: Option<f32>) -> [f32; BQ] {
    let mut tile_max = [f32::NEG_INFINITY; BQ];
    for j in 0..n {
        let srow: &mut [f32; BQ] = (&mut s[j * BQ..(j + 1) * BQ]).try_into().expect("BQ row");
        if let Some(cap) = softcap {
            for x in srow[..cols].iter_mut() {
                *x = cap * (*x / cap).tanh();
            }
        }
        if !live.full {
            let jj = j as i32;
            for ((x, &begin), &end) in srow.iter_mut().zip(&live.begin).zip(&live.end) {
                *x = if jj >= begin && jj < end { *x } else { f32::NEG_INFINITY };
            }
        }
        for r in 0..BQ {
            tile_max[r] = if srow[r] > tile_max[r] { srow[r] } else { tile_max[r] };
        }
    }
    tile_max
}
