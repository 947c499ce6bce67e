//! Element types cpu-flash reads and writes; compute is always f32.

use super::isa::VerifiedIsa;
use super::schedule::Call;
use super::scratch::Scratch;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

pub(super) trait Elem: Copy + Send + Sync + 'static {
    /// Runs task `t` of `c` with `isa`'s kernels for this element type
    /// (bf16 and f16 have dot-product paths of their own).
    #[inline]
    fn run_task(isa: VerifiedIsa, c: &Call<Self>, sc: &mut Scratch, t: usize) {
        isa.dispatch(c, sc, t);
    }
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
    #[inline]
    fn run_task(isa: VerifiedIsa, c: &Call<f16>, sc: &mut Scratch, t: usize) {
        isa.dispatch_dot(c, sc, t);
    }
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
    #[inline]
    fn run_task(isa: VerifiedIsa, c: &Call<bf16>, sc: &mut Scratch, t: usize) {
        isa.dispatch_dot(c, sc, t);
    }
    fn widen(src: &[bf16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [bf16]) {
        // Branch-free rounding (the same bits as `bf16::from_f32`), so the
        // loop vectorises inside the ISA's task.
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_bits(super::bf16::round_bf16(s));
        }
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}
