//! A worker's reusable f32 buffers, and the per-head K/V copies.

use super::bf16::Bf16Scratch;
use super::elem::Elem;
use super::{BK, BQ, QTS, SUB};

/// A zeroed buffer (f32 unless said otherwise) whose first element sits on
/// a 64-byte boundary, so that zmm loads of rows whose stride is a multiple
/// of 64 bytes never straddle two cache lines (split loads cost ~30% of the
/// kernels' speed).
pub(super) struct AlignedBuf<T = f32> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Copy + Default> AlignedBuf<T> {
    pub(super) fn new(len: usize) -> AlignedBuf<T> {
        let slack = 64 / std::mem::size_of::<T>().max(1);
        let buf = vec![T::default(); len + slack];
        let off = buf.as_ptr().align_offset(64).min(slack);
        AlignedBuf { buf, off, len }
    }
}

impl<T> std::ops::Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> std::ops::DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A worker's buffers, all f32 and 64-byte aligned, reused by every task
/// the worker runs in one call.
pub(super) struct Scratch {
    /// Per unit of the task: Q block transposed, `[d][QTS]`, pre-scaled;
    /// padding queries are zero.
    pub qt: Vec<AlignedBuf>,
    /// Per unit of the task: unnormalised output block, `[BQ][dp]`.
    pub o: Vec<AlignedBuf>,
    /// K tile rows `[BK][d]`, used when K cannot be read in place.
    pub k: AlignedBuf,
    /// V tile rows `[BK][dp]`, used when V cannot be read in place.
    pub v: AlignedBuf,
    /// Scores, then probabilities, transposed: `[BK][BQ]` (key-major), so
    /// the per-query softmax runs down columns with vertical vector ops.
    pub s: AlignedBuf,
    /// The Q block widened, row-major `[BQ][d]` (staging for the transpose).
    pub row: Vec<f32>,
    /// Whole-head copies of K and V (see `HeadCopy`).
    pub khead: HeadCopy,
    pub vhead: HeadCopy,
    /// f64 accumulator of the exact-row path; empty until a row needs it.
    pub exact: Vec<f64>,
    /// The bf16 dot-product paths' buffers, built by their first task.
    pub bf16: Option<Box<Bf16Scratch>>,
}

impl Scratch {
    pub(super) fn new(d: usize, dp: usize) -> Scratch {
        Scratch {
            qt: (0..SUB).map(|_| AlignedBuf::new(d * QTS)).collect(),
            o: (0..SUB).map(|_| AlignedBuf::new(BQ * dp)).collect(),
            k: AlignedBuf::new(BK * d),
            v: AlignedBuf::new(BK * dp),
            s: AlignedBuf::new(BK * BQ),
            row: vec![0.0; BQ * d],
            khead: HeadCopy::default(),
            vhead: HeadCopy::default(),
            exact: Vec::new(),
            bf16: None,
        }
    }
}

/// How many rows ahead the strided row copies (Q rows, K/V head copies)
/// prefetch: rows sit a whole token stride apart (often another 4 KiB
/// page), where the hardware prefetchers do not follow, so without this the
/// copies wait on DRAM latency row by row.
pub(super) const PREFETCH_ROWS: usize = 6;

/// Hints the CPU to fetch every cache line of `row` into the caches.
#[inline(always)]
pub(super) fn prefetch_row<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(row);
        let p = row.as_ptr().cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: SSE is part of the x86-64 baseline; a prefetch never
            // faults, and `p + off` stays inside `row` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Rows of an input tensor: `count` rows of `d` elements, the first at
/// element `base`, `stride` elements apart (one kv head's keys, or a tile).
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadRows {
    pub base: usize,
    pub stride: usize,
    pub count: usize,
    pub d: usize,
}

impl HeadRows {
    /// The `n` rows from row `j0` on.
    pub(super) fn slice(self, j0: usize, n: usize) -> HeadRows {
        HeadRows { base: self.base + j0 * self.stride, count: n, ..self }
    }

    /// Widens the rows into `dst`, `dst_stride` floats apart. `prefetch`
    /// fetches `PREFETCH_ROWS` rows ahead (worth it for whole heads, whose
    /// rows the hardware prefetchers do not follow).
    #[inline(always)]
    pub(super) fn widen_into<T: Elem>(self, src: &[T], dst: &mut [f32], dst_stride: usize, prefetch: bool) {
        let HeadRows { base, stride, count, d } = self;
        for j in 0..count {
            let off = base + j * stride;
            if prefetch && j + PREFETCH_ROWS < count {
                let pf = off + PREFETCH_ROWS * stride;
                prefetch_row(&src[pf..pf + d]);
            }
            T::widen(&src[off..off + d], &mut dst[j * dst_stride..j * dst_stride + d]);
        }
    }
}

/// One kv head of K or V widened to f32 into an aligned buffer whose row
/// stride is padded, kept while the worker stays on that head: a worker
/// converts a head once and reuses it for all its query blocks of the head
/// instead of re-copying every tile for every block. Columns past `d` and
/// rows past the head stay zero.
#[derive(Default)]
pub(super) struct HeadCopy {
    buf: Option<AlignedBuf>,
    /// The (batch, kv head) the buffer holds.
    of: Option<(usize, usize)>,
}

impl HeadCopy {
    /// Makes the copy hold head `id`'s `rows` of `src`, `stride` floats
    /// apart in a buffer of `len` floats (the same for every head of a
    /// call).
    pub(super) fn fill<T: Elem>(
        &mut self,
        id: (usize, usize),
        src: &[T],
        rows: HeadRows,
        (stride, len): (usize, usize),
    ) {
        let buf = self.buf.get_or_insert_with(|| AlignedBuf::new(len));
        if self.of != Some(id) {
            rows.widen_into(src, buf, stride, true);
            self.of = Some(id);
        }
    }

    /// The copy, once `fill` has run in this call.
    pub(super) fn get(&self) -> Option<&AlignedBuf> {
        self.buf.as_ref()
    }
}
