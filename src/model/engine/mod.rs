//! Where the decoder's dense math runs: the host (f32 loops in
//! [`crate::model::ops`]) or a GPU (the kernels of `kernels/model/` and the
//! driver's GEMM).

pub mod kernels;
pub mod params;
