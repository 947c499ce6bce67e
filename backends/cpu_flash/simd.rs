//! The tiny vector API the micro-kernels are written against, and its
//! implementations: AVX-512F and AVX2+FMA (one macro: the same shape over
//! other intrinsics) and a portable 8-lane fallback.

/// Lane-wise f32 vector operations.
///
/// # Safety
/// Every method may only run where the implementing ISA's CPU features are
/// enabled (inside its `#[target_feature]` task, see `isa.rs`); `load` and
/// `store` need `LANES` readable / writable floats at the pointer.
pub(super) trait Simd {
    type V: Copy;
    const LANES: usize;
    /// Whether the ISA has fused multiply-add (also used by `fast_exp`).
    const FMA: bool;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
}

/// `N` plain f32 lanes; LLVM maps them to whatever SIMD the baseline has.
pub(super) struct Lanes<const N: usize>;

/// The portable fallback ISA: eight lanes.
pub(super) type Portable = Lanes<8>;

impl<const N: usize> Simd for Lanes<N> {
    type V = [f32; N];
    const LANES: usize = N;
    const FMA: bool = false;
    #[inline(always)]
    unsafe fn zero() -> [f32; N] {
        [0.0; N]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; N] {
        [x; N]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; N] {
        // SAFETY: the caller guarantees N readable floats at `p`.
        unsafe { p.cast::<[f32; N]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; N]) {
        // SAFETY: the caller guarantees N writable floats at `p`.
        unsafe { p.cast::<[f32; N]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; N], b: [f32; N], c: [f32; N]) -> [f32; N] {
        // Separate multiply and add: `mul_add` without hardware FMA is a
        // slow libm call.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; N], b: [f32; N]) -> [f32; N] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn max(a: [f32; N], b: [f32; N]) -> [f32; N] {
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
}

/// An x86 `Simd` impl: every method is one intrinsic of the named ISA.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_simd {
    ($(#[$doc:meta])* $name:ident: $v:ty, $lanes:literal lanes, needs $features:literal;
     $zero:ident, $splat:ident, $load:ident, $store:ident, $fma:ident, $mul:ident, $max:ident) => {
        $(#[$doc])*
        #[doc = concat!("Needs the CPU features ", $features, ".")]
        pub(super) struct $name;

        impl Simd for $name {
            type V = $v;
            const LANES: usize = $lanes;
            const FMA: bool = true;
            #[inline(always)]
            unsafe fn zero() -> $v {
                // SAFETY: the trait's contract: only called where this
                // ISA's features (the struct's doc names them) are enabled.
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> $v {
                // SAFETY: as for `zero`.
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> $v {
                // SAFETY: as for `zero`; the caller guarantees LANES floats at `p`.
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: $v) {
                // SAFETY: as for `zero`; the caller guarantees LANES writable floats.
                unsafe { $store(p, v) }
            }
            #[inline(always)]
            unsafe fn fma(a: $v, b: $v, c: $v) -> $v {
                // SAFETY: as for `zero`.
                unsafe { $fma(a, b, c) }
            }
            #[inline(always)]
            unsafe fn mul(a: $v, b: $v) -> $v {
                // SAFETY: as for `zero`.
                unsafe { $mul(a, b) }
            }
            #[inline(always)]
            unsafe fn max(a: $v, b: $v) -> $v {
                // SAFETY: as for `zero`.
                unsafe { $max(a, b) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
x86_simd!(
    /// 16 lanes in zmm registers.
    Avx512: __m512, 16 lanes, needs "avx512f";
    _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_max_ps
);

#[cfg(target_arch = "x86_64")]
x86_simd!(
    /// 8 lanes in ymm registers.
    Avx2: __m256, 8 lanes, needs "avx2,fma";
    _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_max_ps
);

/// `Simd` with bf16 pair dot products (`vdpbf16ps`): each 32-bit lane of
/// an operand holds two bf16 values, the lower-addressed one in the low
/// half.
///
/// # Safety
/// As for `Simd`.
pub(super) trait PairDot: Simd {
    /// `acc + a.lo · b.lo + a.hi · b.hi`, lane by lane.
    unsafe fn dot_pairs(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// Every lane holding the bits `x`.
    unsafe fn splat_bits(x: u32) -> Self::V;
}

/// The two bf16 halves of a lane, widened.
#[inline(always)]
fn bf16_halves(x: f32) -> (f32, f32) {
    let b = x.to_bits();
    (f32::from_bits(b << 16), f32::from_bits(b & 0xFFFF_0000))
}

/// The portable emulation (tests run the AVX512-BF16 kernels through it).
impl<const N: usize> PairDot for Lanes<N> {
    #[inline(always)]
    unsafe fn dot_pairs(acc: [f32; N], a: [f32; N], b: [f32; N]) -> [f32; N] {
        std::array::from_fn(|i| {
            let ((a0, a1), (b0, b1)) = (bf16_halves(a[i]), bf16_halves(b[i]));
            acc[i] + (a0 * b0 + a1 * b1)
        })
    }
    #[inline(always)]
    unsafe fn splat_bits(x: u32) -> [f32; N] {
        [f32::from_bits(x); N]
    }
}

#[cfg(target_arch = "x86_64")]
x86_simd!(
    /// 16 lanes in zmm registers, with `vdpbf16ps`.
    Avx512Bf16: __m512, 16 lanes, needs "avx512f,avx512bw,avx512bf16";
    _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_max_ps
);

#[cfg(target_arch = "x86_64")]
impl PairDot for Avx512Bf16 {
    #[inline(always)]
    unsafe fn dot_pairs(acc: __m512, a: __m512, b: __m512) -> __m512 {
        // SAFETY: only called where avx512bf16 is enabled (trait contract);
        // __m512 and __m512bh are both 64 bytes of lanes.
        unsafe {
            let cast = |x: __m512| std::mem::transmute::<__m512, __m512bh>(x);
            let (a, b) = (cast(a), cast(b));
            _mm512_dpbf16_ps(acc, a, b)
        }
    }
    #[inline(always)]
    unsafe fn splat_bits(x: u32) -> __m512 {
        // SAFETY: only called where avx512f is enabled (trait contract).
        unsafe { _mm512_castsi512_ps(_mm512_set1_epi32(x as i32)) }
    }
}
