//! Element types cpu-flash reads and writes; compute is always f32.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

pub(super) trait Elem: Copy + Send + Sync + 'static {
    fn widen(src: &[Self], dst: &mut [f32]);
    fn narrow(src: &[f32], dst: &mut [Self]);
    /// The element as f64, exactly (for the exact-row path).
    fn to_f64(self) -> f64;
    /// The slice itself when it already holds f32 (read in place).
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        let _ = src;
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }
}

impl Elem for f16 {
    fn widen(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}

impl Elem for bf16 {
    fn widen(src: &[bf16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [bf16]) {
        dst.convert_from_f32_slice(src);
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}
