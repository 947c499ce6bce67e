//! The model layer's kernel specializations (file, entry, defines).

use crate::dtype::DType;
use crate::kernels::{KernelSpec, MODEL_DENSE, MODEL_ROPE, MODEL_ROWS};

/// `copy_rows` converting `src` elements to `dst` elements.
pub fn copy_rows(src: DType, dst: DType) -> KernelSpec {
    KernelSpec::new(MODEL_ROWS, "copy_rows").define_dtype("SRC_DTYPE", src).define_dtype("DST_DTYPE", dst)
}

pub fn put_words() -> KernelSpec {
    KernelSpec::new(MODEL_ROWS, "put_words")
}

pub fn rope(dtype: DType) -> KernelSpec {
    KernelSpec::new(MODEL_ROPE, "rope_rotate").define_dtype("DTYPE", dtype)
}

pub fn rms_norm(dtype: DType) -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "rms_norm").define_dtype("DTYPE", dtype)
}

pub fn swiglu(dtype: DType) -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "swiglu").define_dtype("DTYPE", dtype)
}

pub fn add_rows(dtype: DType) -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "add_rows").define_dtype("DTYPE", dtype)
}

pub fn argmax_partial(dtype: DType) -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "argmax_partial").define_dtype("DTYPE", dtype)
}

/// Reads only the f32 partials, so one specialization serves every dtype.
pub fn argmax_finish() -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "argmax_finish")
}

/// Every specialization the model layer may compile: all nine dtype pairs
/// of `copy_rows`, `put_words`, `argmax_finish`, and the RoPE and dense
/// kernels per dtype.
pub fn all() -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> =
        DType::ALL.iter().flat_map(|&s| DType::ALL.iter().map(move |&d| copy_rows(s, d))).collect();
    specs.extend([put_words(), argmax_finish()]);
    for d in DType::ALL {
        specs.extend([rope(d), rms_norm(d), swiglu(d), add_rows(d), argmax_partial(d)]);
    }
    specs
}

/// The specialization a [`super::pool::KernelId`] names.
pub fn spec_of(id: super::pool::KernelId) -> KernelSpec {
    use super::pool::KernelId as K;
    match id {
        K::CopyRows(s, d) => copy_rows(s, d),
        K::PutWords => put_words(),
        K::Rope(d) => rope(d),
        K::RmsNorm(d) => rms_norm(d),
        K::Swiglu(d) => swiglu(d),
        K::Add(d) => add_rows(d),
        K::ArgmaxPartial(d) => argmax_partial(d),
        K::ArgmaxFinish => argmax_finish(),
    }
}
