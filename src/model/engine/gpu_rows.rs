//! Data movement of the GPU engine: row copies (`copy_rows`) and small host
//! data carried to the device inside kernel launches (`put_words`).
//!
//! Row indices never cost a synchronization: up to
//! [`params::INLINE_ROWS`] travel inside the copy's own parameters (a decode
//! step's rows), longer lists are written by `put_words` launches into a
//! pooled buffer, queued ahead of the copy on the same stream. Identity
//! indices are recognized and need nothing.

use super::gpu::{i32_of, GpuEngine};
use super::params::{self, CopyRowsParams, PutWordsParams, INLINE_ROWS, PUT_WORDS};
use super::pool::KernelId;
use crate::device::LaunchConfig;
use crate::dtype::DType;
use crate::model::error::ModelError;
use crate::model::matrix::Matrix;

/// Words above which [`GpuEngine::upload_words`] copies synchronously
/// instead of queueing `put_words` launches (prefill-sized tables only).
const MAX_PUT_LAUNCHES: usize = 64;

/// One side of a row copy.
pub struct RowsAt<'a> {
    /// Device address of row 0.
    pub ptr: u64,
    pub dtype: DType,
    /// Elements between consecutive rows (0: every row is row 0).
    pub stride: usize,
    /// Row indices (`None` = 0, 1, 2, ...).
    pub index: Option<&'a [usize]>,
}

/// How one side of a copy names its rows, and what keeps a staged index alive.
struct RowSource {
    mode: i32,
    device: u64,
    inline: [i32; INLINE_ROWS],
    _staged: Option<Matrix>,
}

impl GpuEngine {
    /// Carries `words` to a new pooled `rows × cols` matrix of 4-byte
    /// elements (`f32` as far as the matrix knows; the bits are the words).
    /// Queued, no synchronization, up to [`MAX_PUT_LAUNCHES`] launches;
    /// longer data is uploaded synchronously.
    pub fn upload_words(&self, rows: usize, cols: usize, words: &[u32]) -> Result<Matrix, ModelError> {
        if words.len() != rows * cols {
            return Err(ModelError::Request(format!("{} words for a {rows}x{cols} matrix", words.len())));
        }
        if words.len() > MAX_PUT_LAUNCHES * PUT_WORDS {
            let values: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
            return Ok(Matrix::from_host(rows, cols, values)?.to_device(&self.device())?);
        }
        let out = self.matrix(rows, cols, DType::F32)?;
        // SAFETY: `out` holds rows × cols = words.len() 4-byte elements.
        unsafe { self.put_words_at(out.gpu_ptr(0, "words")?, words)? };
        Ok(out)
    }

    /// Queues `put_words` launches writing `words` at device address `dst`
    /// (one launch per [`PUT_WORDS`]): the words travel in the launches'
    /// parameters, so `words` may be dropped on return and nothing waits.
    ///
    /// # Safety
    /// `dst .. dst + 4 × words.len()` is live device memory that no queued
    /// work still needs to read with its old contents out of stream order.
    pub unsafe fn put_words_at(&self, dst: u64, words: &[u32]) -> Result<(), ModelError> {
        let cfg = LaunchConfig { grid: (4, 1, 1), block: (256, 1, 1), shared_mem_bytes: 0 };
        for (i, chunk) in words.chunks(PUT_WORDS).enumerate() {
            let mut p = PutWordsParams {
                dst: dst + (i * PUT_WORDS * 4) as u64,
                count: chunk.len() as i32,
                reserved: 0,
                words: [0; PUT_WORDS],
            };
            p.words[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: this chunk's `count` words start at word i × PUT_WORDS
            // of the range the caller vouches for.
            unsafe { self.launch(KernelId::PutWords, cfg, &p)? };
        }
        Ok(())
    }

    /// The parameters naming `index` (`rows` entries) for a copy.
    fn row_source(&self, index: Option<&[usize]>, rows: usize) -> Result<RowSource, ModelError> {
        let mut src = RowSource { mode: params::ROWS_IDENTITY, device: 0, inline: [0; INLINE_ROWS], _staged: None };
        let Some(index) = index else { return Ok(src) };
        if index.len() != rows {
            return Err(ModelError::Request(format!("{} row indices for {rows} rows", index.len())));
        }
        if index.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(src);
        }
        let words = index.iter().map(|&r| i32_of(r, "row index").map(|r| r as u32)).collect::<Result<Vec<_>, _>>()?;
        if rows <= INLINE_ROWS {
            src.mode = params::ROWS_INLINE;
            for (slot, &w) in src.inline.iter_mut().zip(&words) {
                *slot = w as i32;
            }
        } else {
            let staged = self.upload_words(1, rows, &words)?;
            src.mode = params::ROWS_DEVICE;
            src.device = staged.gpu_ptr(0, "row index")?;
            src._staged = Some(staged);
        }
        Ok(src)
    }

    /// `rows` rows of `width` elements from `src` to `dst`, converting dtypes.
    ///
    /// # Safety
    /// Every row either side addresses (through its index or 0..rows, times
    /// its stride) lies inside live device memory of its dtype.
    pub unsafe fn copy_rows(
        &self,
        src: &RowsAt<'_>,
        dst: &RowsAt<'_>,
        rows: usize,
        width: usize,
    ) -> Result<(), ModelError> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let (s, d) = (self.row_source(src.index, rows)?, self.row_source(dst.index, rows)?);
        let params = CopyRowsParams {
            src: src.ptr,
            dst: dst.ptr,
            src_rows: s.device,
            dst_rows: d.device,
            src_stride: src.stride as i64,
            dst_stride: dst.stride as i64,
            rows: i32_of(rows, "rows")?,
            width: i32_of(width, "row width")?,
            src_mode: s.mode,
            dst_mode: d.mode,
            src_inline: s.inline,
            dst_inline: d.inline,
        };
        let kernel = KernelId::CopyRows(src.dtype, dst.dtype);
        // SAFETY: forwarded from this function's contract; staged index
        // buffers live until the end of this function, after the launch is
        // queued (the pool hands them out again only to later work).
        unsafe { self.launch(kernel, super::gpu::elementwise(rows * width), &params) }
    }

    pub(super) fn rows_of<'a>(
        m: &Matrix,
        index: Option<&'a [usize]>,
        what: &'static str,
    ) -> Result<RowsAt<'a>, ModelError> {
        Ok(RowsAt { ptr: m.gpu_ptr(0, what)?, dtype: m.dtype(), stride: m.cols(), index })
    }

    /// Rows `rows` of `x`, in that order (same dtype).
    pub fn select_rows(&self, x: &Matrix, rows: &[usize]) -> Result<Matrix, ModelError> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows()) {
            return Err(ModelError::Request(format!("row {r} of a {}-row matrix", x.rows())));
        }
        let out = self.matrix(rows.len(), x.cols(), x.dtype())?;
        let (src, dst) = (Self::rows_of(x, Some(rows), "x")?, Self::rows_of(&out, None, "out")?);
        // SAFETY: every index was checked against x's rows; out holds rows.len() rows.
        unsafe { self.copy_rows(&src, &dst, rows.len(), x.cols())? };
        Ok(out)
    }

    /// Row 0 of `row` written to every row of `out` (a bias before a GEMM with beta = 1).
    pub(super) fn broadcast_row(&self, row: &Matrix, out: &Matrix) -> Result<(), ModelError> {
        if row.cols() != out.cols() || row.rows() == 0 {
            return Err(ModelError::Request("broadcast: the row does not fit".into()));
        }
        let src = RowsAt { ptr: row.gpu_ptr(0, "bias")?, dtype: row.dtype(), stride: 0, index: None };
        let dst = Self::rows_of(out, None, "out")?;
        // SAFETY: every source row is row 0 of `row` (stride 0); out holds its rows.
        unsafe { self.copy_rows(&src, &dst, out.rows(), out.cols()) }
    }
}
