// TEMPORARY stand-in for the lead's kernels/include/rf/convert.h (split of
// kernels/prelude.h), used only by the flash_dev harness until main has it.
#pragma once
#include "rf/platform.h"

// 16-bit floats travel as raw bits; these convert them.
RF_DEVICE float rf_bf16_to_float(rf_u16 h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

RF_DEVICE rf_u16 rf_float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (rf_u16)((u >> 16) | 0x40u); // keep NaN quiet
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (rf_u16)(u >> 16);
}

#if defined(RF_HIP)
RF_DEVICE float rf_half_to_float(rf_u16 h) {
    _Float16 v = __builtin_bit_cast(_Float16, h);
    return (float)v;
}
RF_DEVICE rf_u16 rf_float_to_half(float f) {
    return __builtin_bit_cast(rf_u16, (_Float16)f);
}
#else
RF_DEVICE float rf_half_to_float(rf_u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
RF_DEVICE rf_u16 rf_float_to_half(float f) {
    rf_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

// Element type codes used by -D specializations: 0 = f32, 1 = f16, 2 = bf16.
#define RF_F32 0
#define RF_F16 1
#define RF_BF16 2

