//! `#[repr(C)]` twins of the structs in `kernels/include/rf/model_params.h`;
//! [`layout_probes`] turns them into compiled `static_assert`s.

use crate::kernel_params;
use crate::kernels::params::{layout_probe, KernelParams};

/// Row indices a copy carries in its parameters (`RF_INLINE_ROWS`).
pub const INLINE_ROWS: usize = 64;
/// Words one `put_words` launch carries (`RF_PUT_WORDS`).
pub const PUT_WORDS: usize = 960;

/// How a copy finds its rows (`RF_ROWS_*`).
pub const ROWS_IDENTITY: i32 = 0;
pub const ROWS_DEVICE: i32 = 1;
pub const ROWS_INLINE: i32 = 2;

kernel_params! {
    /// `RfCopyRowsParams` of `model/rows.hip`.
    pub struct CopyRowsParams as "RfCopyRowsParams" in "rf/model_params.h" {
        pub src: u64,
        pub dst: u64,
        /// Device address of i32 source row indices (`ROWS_DEVICE`).
        pub src_rows: u64,
        /// Device address of i32 destination row indices (`ROWS_DEVICE`).
        pub dst_rows: u64,
        /// Elements between source rows; 0 broadcasts row 0.
        pub src_stride: i64,
        pub dst_stride: i64,
        pub rows: i32,
        pub width: i32,
        pub src_mode: i32,
        pub dst_mode: i32,
        pub src_inline: [i32; INLINE_ROWS],
        pub dst_inline: [i32; INLINE_ROWS],
    }
}

kernel_params! {
    /// `RfPutWordsParams` of `model/rows.hip`.
    pub struct PutWordsParams as "RfPutWordsParams" in "rf/model_params.h" {
        pub dst: u64,
        pub count: i32,
        pub reserved: i32,
        pub words: [u32; PUT_WORDS],
    }
}

kernel_params! {
    /// `RfRopeParams` of `model/rope.hip`.
    pub struct RopeParams as "RfRopeParams" in "rf/model_params.h" {
        pub x: u64,
        pub cos_sin: u64,
        pub token_stride: i64,
        pub tokens: i32,
        pub heads: i32,
        pub head_dim: i32,
        pub pairs: i32,
        pub streams: i32,
        pub interleaved: i32,
    }
}

kernel_params! {
    /// `RfRmsNormParams` of `model/dense.hip`.
    pub struct RmsNormParams as "RfRmsNormParams" in "rf/model_params.h" {
        pub x: u64,
        /// Added to `x` (and stored there) before the norm; 0 = none.
        pub residual: u64,
        pub weight: u64,
        pub out: u64,
        pub rows: i32,
        pub width: i32,
        pub eps: f32,
        pub reserved: i32,
    }
}

kernel_params! {
    /// `RfSwigluParams` of `model/dense.hip`.
    pub struct SwigluParams as "RfSwigluParams" in "rf/model_params.h" {
        pub gate: u64,
        pub up: u64,
        pub out: u64,
        pub in_stride: i64,
        pub rows: i32,
        pub width: i32,
    }
}

kernel_params! {
    /// `RfAddParams` of `model/dense.hip`.
    pub struct AddParams as "RfAddParams" in "rf/model_params.h" {
        pub x: u64,
        pub y: u64,
        pub rows: i32,
        pub width: i32,
        pub y_rows: i32,
        pub reserved: i32,
    }
}

kernel_params! {
    /// `RfArgmaxParams` of `model/dense.hip` (`argmax_partial`, `argmax_finish`).
    pub struct ArgmaxParams as "RfArgmaxParams" in "rf/model_params.h" {
        pub x: u64,
        pub out: u64,
        /// 2 × rows × chunks f32: each chunk's best value, then its index bits.
        pub partial: u64,
        pub rows: i32,
        pub width: i32,
        pub chunks: i32,
        pub reserved: i32,
    }
}

/// Layout probes of every model parameter struct, for offline compile tests.
pub fn layout_probes() -> Vec<(&'static str, String)> {
    vec![
        (CopyRowsParams::C_NAME, layout_probe::<CopyRowsParams>()),
        (PutWordsParams::C_NAME, layout_probe::<PutWordsParams>()),
        (RopeParams::C_NAME, layout_probe::<RopeParams>()),
        (RmsNormParams::C_NAME, layout_probe::<RmsNormParams>()),
        (SwigluParams::C_NAME, layout_probe::<SwigluParams>()),
        (AddParams::C_NAME, layout_probe::<AddParams>()),
        (ArgmaxParams::C_NAME, layout_probe::<ArgmaxParams>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_no_hidden_padding() {
        for (name, size, fields) in [
            ("copy_rows", size_of::<CopyRowsParams>(), CopyRowsParams::fields()),
            ("put_words", size_of::<PutWordsParams>(), PutWordsParams::fields()),
            ("rope", size_of::<RopeParams>(), RopeParams::fields()),
            ("rms_norm", size_of::<RmsNormParams>(), RmsNormParams::fields()),
            ("swiglu", size_of::<SwigluParams>(), SwigluParams::fields()),
            ("add", size_of::<AddParams>(), AddParams::fields()),
            ("argmax", size_of::<ArgmaxParams>(), ArgmaxParams::fields()),
        ] {
            let sum: usize = fields.iter().map(|(_, _, s)| s).sum();
            assert_eq!(sum, size, "{name}: fields do not fill the struct");
        }
    }

    #[test]
    fn every_struct_fits_the_kernel_parameter_limit() {
        // HIP and CUDA both take at least 4 KiB of kernel parameters.
        assert!(size_of::<CopyRowsParams>() <= 4096);
        assert!(size_of::<PutWordsParams>() <= 4096);
    }
}
