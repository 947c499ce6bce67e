// ROCmForge kernel prelude: the portable HIP/CUDA dialect every kernel in
// this folder is written in. It needs no toolkit headers, so the same text
// compiles under NVRTC, hiprtc and hipcc.
#pragma once

#if defined(__HIPCC_RTC__) || defined(__HIP_PLATFORM_AMD__) || defined(__HIP__)
#define RF_HIP 1
#else
#define RF_CUDA 1
#endif

// Warp size is a compile-time constant. The host passes the device's value
// as -DRF_WARP_SIZE; the fallbacks below only serve offline compiles.
#ifndef RF_WARP_SIZE
#if defined(RF_HIP) && defined(__AMDGCN_WAVEFRONT_SIZE)
#define RF_WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#elif defined(RF_HIP)
#define RF_WARP_SIZE 64
#else
#define RF_WARP_SIZE 32
#endif
#endif

#if defined(RF_HIP) && defined(__AMDGCN_WAVEFRONT_SIZE)
static_assert(RF_WARP_SIZE == __AMDGCN_WAVEFRONT_SIZE, "RF_WARP_SIZE disagrees with the target's wavefront size");
#endif

#define RF_DEVICE __device__ __forceinline__
#define RF_KERNEL extern "C" __global__

typedef unsigned short rf_u16;

// No <math.h> here: infinity from its bit pattern.
#define RF_NEG_INF __int_as_float(0xff800000)

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

// Warp-level butterfly reductions. CUDA needs the participation mask; HIP's
// __shfl_xor works on the whole wavefront.
RF_DEVICE float rf_shfl_xor(float v, int lane_mask) {
#if defined(RF_HIP)
    return __shfl_xor(v, lane_mask, RF_WARP_SIZE);
#else
    return __shfl_xor_sync(0xffffffffu, v, lane_mask, RF_WARP_SIZE);
#endif
}

RF_DEVICE float rf_warp_max(float v) {
    for (int o = RF_WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, rf_shfl_xor(v, o));
    return v;
}

RF_DEVICE float rf_warp_sum(float v) {
    for (int o = RF_WARP_SIZE / 2; o > 0; o >>= 1) v += rf_shfl_xor(v, o);
    return v;
}

// Block-wide reductions through shared memory `scratch` (one float per warp,
// at least blockDim.x / RF_WARP_SIZE entries). Every thread gets the result.
RF_DEVICE float rf_block_max(float v, float* scratch) {
    const int lane = threadIdx.x % RF_WARP_SIZE, warp = threadIdx.x / RF_WARP_SIZE;
    const int warps = (blockDim.x + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
    v = rf_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < warps; ++w) r = fmaxf(r, scratch[w]);
    return r;
}

RF_DEVICE float rf_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % RF_WARP_SIZE, warp = threadIdx.x / RF_WARP_SIZE;
    const int warps = (blockDim.x + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
    v = rf_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < warps; ++w) r += scratch[w];
    return r;
}
