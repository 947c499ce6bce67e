//! `#[repr(C)]` twins of the structs in `kernels/include/rf/model_params.h`;
//! [`layout_probes`] turns them into compiled `static_assert`s.

use crate::kernel_params;
use crate::kernels::params::{layout_probe, KernelParams};

kernel_params! {
    /// `RfCopyRowsParams` of `model/rows.hip`.
    pub struct CopyRowsParams as "RfCopyRowsParams" in "rf/model_params.h" {
        pub src: u64,
        pub dst: u64,
        /// Device address of i64 source row indices, or 0 for the identity.
        pub src_rows: u64,
        /// Device address of i64 destination row indices, or 0.
        pub dst_rows: u64,
        pub src_stride: i64,
        pub dst_stride: i64,
        pub rows: i32,
        pub width: i32,
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

/// Layout probes of every model parameter struct, for offline compile tests.
pub fn layout_probes() -> Vec<(&'static str, String)> {
    vec![
        (CopyRowsParams::C_NAME, layout_probe::<CopyRowsParams>()),
        (RopeParams::C_NAME, layout_probe::<RopeParams>()),
        (RmsNormParams::C_NAME, layout_probe::<RmsNormParams>()),
        (SwigluParams::C_NAME, layout_probe::<SwigluParams>()),
        (AddParams::C_NAME, layout_probe::<AddParams>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_no_hidden_padding() {
        for (name, size, fields) in [
            ("copy_rows", size_of::<CopyRowsParams>(), CopyRowsParams::fields()),
            ("rope", size_of::<RopeParams>(), RopeParams::fields()),
            ("rms_norm", size_of::<RmsNormParams>(), RmsNormParams::fields()),
            ("swiglu", size_of::<SwigluParams>(), SwigluParams::fields()),
            ("add", size_of::<AddParams>(), AddParams::fields()),
        ] {
            let sum: usize = fields.iter().map(|(_, _, s)| s).sum();
            assert_eq!(sum, size, "{name}: fields do not fill the struct");
        }
    }
}
