// Element type and math shared by the decode kernels (kernels/decode/):
// the RF_DTYPE element, 16-byte unpacking to f32, exp2 / log2 / tanh.
#pragma once
#include "rf/platform.h"
#include "rf/convert.h"

#ifndef RF_DTYPE
#error "RF_DTYPE (RF_F32, RF_F16 or RF_BF16) must be defined"
#endif

namespace rf_decode {

#if RF_DTYPE == RF_F32
typedef float elem;
RF_DEVICE float to_f(elem x) { return x; }
RF_DEVICE elem from_f(float x) { return x; }
#elif RF_DTYPE == RF_F16
typedef rf_u16 elem;
RF_DEVICE float to_f(elem x) { return rf_half_to_float(x); }
RF_DEVICE elem from_f(float x) { return rf_float_to_half(x); }
#elif RF_DTYPE == RF_BF16
typedef rf_u16 elem;
RF_DEVICE float to_f(elem x) { return rf_bf16_to_float(x); }
RF_DEVICE elem from_f(float x) { return rf_float_to_bf16(x); }
#else
#error "unknown RF_DTYPE"
#endif

struct alignas(16) U32x4 {
    unsigned x, y, z, w;
};
struct alignas(16) F4 {
    float x, y, z, w;
};

constexpr float LOG2E = 1.4426950408889634f;

RF_DEVICE float nan_f() { return __int_as_float(0x7fc00000); }

// 2^x: -inf gives 0, NaN stays NaN (about 2 ulp on NVIDIA).
RF_DEVICE float exp2_approx(float x) {
#if defined(RF_CUDA)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#else
    return __builtin_exp2f(x);
#endif
}

RF_DEVICE float log2_full(float x) {
#if defined(RF_CUDA)
    return log2f(x);
#else
    return __builtin_log2f(x);
#endif
}

// tanh from exp2: saturates to +-1 (so +-Inf logits stay finite under a
// soft-cap), keeps NaN; absolute error about 1e-7.
RF_DEVICE float tanh_f(float x) {
    const float e = exp2_approx(-2.0f * LOG2E * (x < 0.0f ? -x : x));
    const float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}

// The elements of one 16-byte chunk as floats.
RF_DEVICE void unpack(const U32x4& u, float (&f)[16 / sizeof(elem)]) {
#if RF_DTYPE == RF_F32
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
#else
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = to_f((elem)(w[i] & 0xffffu));
        f[2 * i + 1] = to_f((elem)(w[i] >> 16));
    }
#endif
}

// Two consecutive elements (4- or 8-byte aligned) as floats.
RF_DEVICE void load2(const elem* s, float& a, float& b) {
#if RF_DTYPE == RF_F32
    a = s[0];
    b = s[1];
#else
    const unsigned w = *reinterpret_cast<const unsigned*>(s);
    a = to_f((elem)(w & 0xffffu));
    b = to_f((elem)(w >> 16));
#endif
}

// Stores two floats as two consecutive elements.
RF_DEVICE void store2(elem* d, float a, float b) {
#if RF_DTYPE == RF_F32
    d[0] = a;
    d[1] = b;
#else
    *reinterpret_cast<unsigned*>(d) = (unsigned)from_f(a) | ((unsigned)from_f(b) << 16);
#endif
}

}  // namespace rf_decode
