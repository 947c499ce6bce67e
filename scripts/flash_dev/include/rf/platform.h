// TEMPORARY stand-in for the lead's kernels/include/rf/platform.h (split of
// kernels/prelude.h), used only by the flash_dev harness until main has it.
#pragma once
// ROCmForge kernel prelude: the portable HIP/CUDA dialect every kernel in
// this folder is written in. It needs no toolkit headers, so the same text
// compiles under NVRTC, hiprtc and hipcc.

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


// Header-free clang HIP (-nogpuinc, no hiprtc preamble): the few runtime
// names the kernels use, from clang builtins. Only for offline compile checks.
#if defined(RF_HIP) && !defined(__HIPCC_RTC__) && !defined(HIP_INCLUDE_HIP_HIP_RUNTIME_H) && !defined(__HIP_INCLUDE_HIP_HIP_RUNTIME_H__)
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ inline __attribute__((always_inline))

#define RF_SHIM_IDX(NAME, FN) struct NAME##_t { \
    __device__ unsigned get_x() const { return __builtin_amdgcn_##FN##_x(); } \
    __device__ unsigned get_y() const { return __builtin_amdgcn_##FN##_y(); } \
    __device__ unsigned get_z() const { return __builtin_amdgcn_##FN##_z(); } \
    __declspec(property(get = get_x)) unsigned x; __declspec(property(get = get_y)) unsigned y; \
    __declspec(property(get = get_z)) unsigned z; };
RF_SHIM_IDX(rf_tid, workitem_id)
RF_SHIM_IDX(rf_bid, workgroup_id)
static __device__ const rf_tid_t threadIdx{};
static __device__ const rf_bid_t blockIdx{};
struct rf_gdim_t {
    __device__ unsigned get_x() const { return __builtin_amdgcn_grid_size_x() / __builtin_amdgcn_workgroup_size_x(); }
    __device__ unsigned get_y() const { return __builtin_amdgcn_grid_size_y() / __builtin_amdgcn_workgroup_size_y(); }
    __device__ unsigned get_z() const { return __builtin_amdgcn_grid_size_z() / __builtin_amdgcn_workgroup_size_z(); }
    __declspec(property(get = get_x)) unsigned x;
    __declspec(property(get = get_y)) unsigned y;
    __declspec(property(get = get_z)) unsigned z;
};
static __device__ const rf_gdim_t gridDim{};
struct rf_bdim_t {
    __device__ unsigned get_x() const { return __builtin_amdgcn_workgroup_size_x(); }
    __declspec(property(get = get_x)) unsigned x;
};
static __device__ const rf_bdim_t blockDim{};
__device__ inline void __syncthreads() { __builtin_amdgcn_s_barrier(); __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "workgroup"); }
__device__ inline float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
__device__ inline float __uint_as_float(unsigned x) { return __builtin_bit_cast(float, x); }
__device__ inline unsigned __float_as_uint(float x) { return __builtin_bit_cast(unsigned, x); }
__device__ inline float fmaxf(float a, float b) { return __builtin_fmaxf(a, b); }
__device__ inline float __shfl_xor(float v, int m, int w) {
    const int lane = __builtin_amdgcn_mbcnt_hi(~0u, __builtin_amdgcn_mbcnt_lo(~0u, 0u));
    const int src = ((lane ^ m) & (w - 1)) | (lane & ~(w - 1));
    return __builtin_bit_cast(float, __builtin_amdgcn_ds_bpermute(src << 2, __builtin_bit_cast(int, v)));
}
__device__ inline int __shfl(int v, int src, int w) {
    const int lane = __builtin_amdgcn_mbcnt_hi(~0u, __builtin_amdgcn_mbcnt_lo(~0u, 0u));
    const int s = (src & (w - 1)) | (lane & ~(w - 1));
    return __builtin_amdgcn_ds_bpermute(s << 2, v);
}
__device__ inline float __shfl(float v, int src, int w) {
    return __builtin_bit_cast(float, __shfl(__builtin_bit_cast(int, v), src, w));
}
#endif
