//! Branch-free `exp` and `exp2` for the softmax (`x <= 0`), written as plain
//! Rust that LLVM vectorises inside the ISA's `#[target_feature]` task.

/// `2^x` when `LOG2`, else `e^x` (`x <= 0`).
#[inline(always)]
pub(super) fn exp_any<const LOG2: bool>(x: f32, fma: bool) -> f32 {
    if LOG2 {
        fast_exp2(x, fma)
    } else {
        fast_exp(x, fma)
    }
}

/// `a * b + c`, fused when `fma`.
#[inline(always)]
fn madd(fma: bool, a: f32, b: f32, c: f32) -> f32 {
    if fma {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` for `x <= 0` (Cephes exp2f: round to an integer n, a degree-6
/// polynomial in x - n ∈ [-1/2, 1/2], scale by 2^n), branch-free. Inputs
/// below -126 give 0, so `-inf` maps to 0; NaN gives NaN (the comparisons
/// are written so that NaN fails them), so a NaN score reaches the row's
/// sum instead of vanishing as a zero weight. `fma` as for `fast_exp`.
#[inline(always)]
pub(super) fn fast_exp2(x: f32, fma: bool) -> f32 {
    const LO: f32 = -126.0;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = if x < LO { LO } else { x };
    let t = xc + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let f = xc - n;
    let mut y = 1.535_336_2e-4f32;
    y = madd(fma, y, f, 1.339_887_4e-3);
    y = madd(fma, y, f, 9.618_437e-3);
    y = madd(fma, y, f, 5.550_332_5e-2);
    y = madd(fma, y, f, 2.402_264_8e-1);
    y = madd(fma, y, f, 6.931_472e-1);
    y = madd(fma, y, f, 1.0);
    let pow2 = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < LO {
        0.0
    } else {
        y * pow2
    }
}

/// `exp(x)` for `x <= 0` (Cephes expf: Cody-Waite range reduction and a
/// degree-6 polynomial, ~1 ulp), branch-free so loops over it vectorise.
/// Inputs below ln(2^-126) give 0, so `-inf` maps to 0; NaN gives NaN (as
/// for `fast_exp2`). With `fma` the
/// multiply-adds are fused (`mul_add`; only for callers compiled with the
/// `fma` feature, where it is one instruction: elsewhere it is a libm call).
#[inline(always)]
pub(super) fn fast_exp(x: f32, fma: bool) -> f32 {
    const LO: f32 = -87.336_55;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = if x < LO { LO } else { x };
    let t = madd(fma, xc, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = madd(fma, n, -0.693_359_4, xc);
    let r = madd(fma, n, 2.121_944_4e-4, r);
    let mut y = 1.987_569_1e-4f32;
    y = madd(fma, y, r, 1.398_199_9e-3);
    y = madd(fma, y, r, 8.333_452e-3);
    y = madd(fma, y, r, 4.166_579_6e-2);
    y = madd(fma, y, r, 1.666_666_5e-1);
    y = madd(fma, y, r, 0.5);
    y = madd(fma, y, r * r, r) + 1.0;
    let pow2 = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < LO {
        0.0
    } else {
        y * pow2
    }
}
