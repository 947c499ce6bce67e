// One warp-level tile API over the matrix units of every target, chosen at
// compile time. The kernel sees a warp computing C[16x16] += A[16x16] B[16x16]
// (f32 accumulate) on operands it keeps in registers ("fragments"):
//
//   rf_frag_a, rf_frag_b, rf_frag_c       fragment types (opaque)
//   rf_load_a(a, smem, off)               A[m][k]   = smem[off(m, k)]
//   rf_load_b_nk(b, smem, off)            B[k][n]   = smem[off(n, k)]  (K tile)
//   rf_load_b_kn(b, smem, off)            B[k][n]   = smem[off(k, n)]  (V tile)
//   rf_mma(c, a, b)                       c += a * b
//   RF_MMA_C_REGS, c.v[r]                 the accumulator registers of a lane
//   rf_c_row(r), rf_c_col(r)              where c.v[r] sits in the 16x16 tile
//   RF_MMA_ROWS, rf_c_slot(r),            the distinct rows a lane holds
//   rf_slot_row(slot)                     ("slots"), for per-row statistics
//   rf_row_max(x), rf_row_sum(x)          reduce over the lanes sharing a row
//   RF_MMA_C_TO_A, rf_c_to_a(a, c)        when 1, an accumulator converts in
//                                         registers into an A operand (P = S)
//   rf_c_src_lane(col), rf_c_reg(slot, col)
//                                         which lane and register hold C at
//                                         (row of this lane's `slot`, col):
//                                         rf_shfl_idx(c.v[reg], src) reads it
//
// `off(row, col)` is the caller's shared-memory layout: it returns the element
// index of (row, col). Loads may fetch up to 16 bytes at (row, col) for col a
// multiple of 16 / sizeof(element), so the layout must keep each aligned
// 16-byte chunk of a row contiguous (swizzles permute whole chunks).
//
// Flavours (RF_MMA_FLAVOUR):
//   RF_MMA_SYNC    NVIDIA sm_80+: mma.sync m16n8k16 (f16/bf16) with ldmatrix,
//                  or m16n8k8 tf32 for f32 (split big+small: 3 products)
//   RF_MMA_MFMA    AMD CDNA2/3 (gfx90a, gfx94x, gfx950), wave64:
//                  v_mfma_f32_16x16x16{f16,bf16_1k}
//   RF_MMA_WMMA11  AMD RDNA3 (gfx11xx), wave32: v_wmma_f32_16x16x16_*
//   RF_MMA_WMMA12  AMD RDNA4 (gfx12xx), wave32: v_wmma_f32_16x16x16_* (gfx12
//                  operand layout)
//   RF_MMA_SIMT    everything else (gfx1030, f32 on AMD, f32 SIMT mode on
//                  NVIDIA): plain FMAs with the operands exchanged by shuffles
#pragma once

#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"

#define RF_MMA_SIMT 0
#define RF_MMA_SYNC 1
#define RF_MMA_MFMA 2
#define RF_MMA_WMMA11 3
#define RF_MMA_WMMA12 4

// How f32 inputs are multiplied. TF32X3 keeps f32 accuracy (each operand is
// split into a tf32 "big" part and a tf32 remainder; big*big + big*small +
// small*big). TF32 (one product, ~1e-3 relative error) is opt-in only.
#define RF_F32_SIMT 0
#define RF_F32_TF32X3 1
#define RF_F32_TF32 2

#ifndef RF_DTYPE
#error "RF_DTYPE (RF_F32, RF_F16 or RF_BF16) must be defined"
#endif

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RF_HAS_MMA_SYNC 1
#else
#define RF_HAS_MMA_SYNC 0
#endif

#if RF_DTYPE == RF_F32
#ifndef RF_F32_MODE
#define RF_F32_MODE (RF_HAS_MMA_SYNC ? RF_F32_TF32X3 : RF_F32_SIMT)
#endif
#if RF_F32_MODE != RF_F32_SIMT && !RF_HAS_MMA_SYNC && (defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__))
#error "RF_F32_MODE TF32X3/TF32 needs mma.sync (NVIDIA sm_80+); use RF_F32_SIMT on this target"
#endif
#endif

#ifndef RF_MMA_FLAVOUR
#if RF_DTYPE == RF_F32
#define RF_MMA_FLAVOUR ((RF_F32_MODE != RF_F32_SIMT && RF_HAS_MMA_SYNC) ? RF_MMA_SYNC : RF_MMA_SIMT)
#elif RF_HAS_MMA_SYNC
#define RF_MMA_FLAVOUR RF_MMA_SYNC
#elif defined(RF_HIP) && (defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || defined(__gfx950__))
#define RF_MMA_FLAVOUR RF_MMA_MFMA
#elif defined(RF_HIP) && defined(__GFX11__)
#define RF_MMA_FLAVOUR RF_MMA_WMMA11
#elif defined(RF_HIP) && defined(__GFX12__)
#define RF_MMA_FLAVOUR RF_MMA_WMMA12
#else
#define RF_MMA_FLAVOUR RF_MMA_SIMT
#endif
#endif

// Operand element as stored in memory: f32, or 16-bit raw bits.
#if RF_DTYPE == RF_F32
typedef float rf_elem;
RF_DEVICE rf_elem rf_to_elem(float x) { return x; }
RF_DEVICE float rf_from_elem(rf_elem x) { return x; }
#elif RF_DTYPE == RF_F16
typedef rf_u16 rf_elem;
RF_DEVICE rf_elem rf_to_elem(float x) { return rf_float_to_half(x); }
RF_DEVICE float rf_from_elem(rf_elem x) { return rf_half_to_float(x); }
#elif RF_DTYPE == RF_BF16
typedef rf_u16 rf_elem;
RF_DEVICE rf_elem rf_to_elem(float x) { return rf_float_to_bf16(x); }
RF_DEVICE float rf_from_elem(rf_elem x) { return rf_bf16_to_float(x); }
#else
#error "unknown RF_DTYPE"
#endif

// Lane index inside the warp (blocks are whole warps).
RF_DEVICE int rf_lane() { return (int)(threadIdx.x & (RF_WARP_SIZE - 1)); }

// The value `v` of lane `src` (every lane of the warp takes part).
RF_DEVICE float rf_shfl_idx(float v, int src) {
#if defined(RF_HIP)
    return __shfl(v, src, RF_WARP_SIZE);
#else
    return __shfl_sync(0xffffffffu, v, src, RF_WARP_SIZE);
#endif
}

#if RF_MMA_FLAVOUR == RF_MMA_SYNC
#include "rf/mma/mma_sync.h"
#elif RF_MMA_FLAVOUR == RF_MMA_MFMA
#include "rf/mma/mfma.h"
#elif RF_MMA_FLAVOUR == RF_MMA_WMMA11 || RF_MMA_FLAVOUR == RF_MMA_WMMA12
#include "rf/mma/wmma.h"
#else
#include "rf/mma/simt.h"
#endif
