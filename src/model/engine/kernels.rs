//! The model layer's kernel specializations (file, entry, defines).

use crate::dtype::DType;
use crate::kernels::{KernelSpec, MODEL_DENSE, MODEL_ROPE, MODEL_ROWS};

/// `copy_rows` converting `src` elements to `dst` elements.
pub fn copy_rows(src: DType, dst: DType) -> KernelSpec {
    KernelSpec::new(MODEL_ROWS, "copy_rows").define_dtype("SRC_DTYPE", src).define_dtype("DST_DTYPE", dst)
}

pub fn rope() -> KernelSpec {
    KernelSpec::new(MODEL_ROPE, "rope_rotate")
}

pub fn rms_norm() -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "rms_norm")
}

pub fn swiglu() -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "swiglu")
}

pub fn add_rows() -> KernelSpec {
    KernelSpec::new(MODEL_DENSE, "add_rows")
}

/// Every specialization the model layer may compile: all nine dtype pairs
/// of `copy_rows` and the dense and RoPE kernels.
pub fn all() -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> =
        DType::ALL.iter().flat_map(|&s| DType::ALL.iter().map(move |&d| copy_rows(s, d))).collect();
    specs.extend([rope(), rms_norm(), swiglu(), add_rows()]);
    specs
}
