// ROCmForge kernel platform layer: which compiler and vendor we are on, the
// warp size, and the few qualifiers every kernel uses. Kernels include no
// toolkit header, so the same text compiles under NVRTC, hiprtc and hipcc.
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

#if defined(RF_HIP) && defined(__AMDGCN_WAVEFRONT_SIZE) && !defined(RF_HOST_ONLY)
static_assert(RF_WARP_SIZE == __AMDGCN_WAVEFRONT_SIZE, "RF_WARP_SIZE disagrees with the target's wavefront size");
#endif

// Header-free offline compiles (clang -nogpuinc) get the runtime names
// from builtins; see rf/hip_shim.h.
#if defined(RF_HIP_HEADER_FREE)
#include "rf/hip_shim.h"
#endif

#if defined(RF_HOST_ONLY)
// A plain C++ host compile of the pure rules (rf/mask.h), so a test can
// run them next to their Rust twins.
#define RF_DEVICE inline
#else
#define RF_DEVICE __device__ __forceinline__
#define RF_KERNEL extern "C" __global__
#endif

typedef unsigned short rf_u16;

#if !defined(RF_HOST_ONLY)
// No <math.h> here: infinity from its bit pattern.
#define RF_NEG_INF __int_as_float(0xff800000)
#endif
