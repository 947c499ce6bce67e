// AMD RDNA3 (gfx11xx) and RDNA4 (gfx12xx) implementation of the tile API
// (see mma.h): one v_wmma_f32_16x16x16 per 16x16x16 step, wave32.
//
// gfx11 (RF_MMA_WMMA11), lane l:
//   A: lane l holds A[l % 16][0..15] (lanes 16-31 repeat lanes 0-15)
//   B: lane l holds B[0..15][l % 16]
//   C: register r holds C[2 * r + l / 16][l % 16]
// gfx12 (RF_MMA_WMMA12), lane l, j = 0..7:
//   A: lane l holds A[l % 16][8 * (l / 16) + j]
//   B: lane l holds B[8 * (l / 16) + j][l % 16]
//   C: register r holds C[8 * (l / 16) + r][l % 16]
// As with MFMA the accumulator is not an A operand: P goes through shared
// memory (RF_MMA_C_TO_A = 0). Compiled in CI, never executed here.
#pragma once

#if RF_WARP_SIZE != 32
#error "WMMA needs wave32"
#endif
#if RF_DTYPE == RF_F32
#error "the WMMA flavour takes f16/bf16 operands; f32 uses the SIMT flavour"
#endif

#define RF_MMA_C_REGS 8
#define RF_MMA_ROWS 8
#define RF_MMA_C_TO_A 0

#if RF_MMA_FLAVOUR == RF_MMA_WMMA11
#define RF_WMMA_K_PER_LANE 16
#else
#define RF_WMMA_K_PER_LANE 8
#endif

typedef float rf_v8f32 __attribute__((ext_vector_type(8)));
#if RF_DTYPE == RF_BF16
typedef short rf_vkx16 __attribute__((ext_vector_type(RF_WMMA_K_PER_LANE)));
#else
typedef _Float16 rf_vkx16 __attribute__((ext_vector_type(RF_WMMA_K_PER_LANE)));
#endif

struct rf_frag_a {
    rf_u16 x[RF_WMMA_K_PER_LANE];
};
struct rf_frag_b {
    rf_u16 x[RF_WMMA_K_PER_LANE];
};
struct rf_frag_c {
    float v[8];
};

#if RF_MMA_FLAVOUR == RF_MMA_WMMA11
RF_DEVICE int rf_slot_row(int slot) { return 2 * slot + (rf_lane() >> 4); }
// First k index a lane holds.
RF_DEVICE int rf_wmma_k0() { return 0; }
#else
RF_DEVICE int rf_slot_row(int slot) { return 8 * (rf_lane() >> 4) + slot; }
RF_DEVICE int rf_wmma_k0() { return 8 * (rf_lane() >> 4); }
#endif
#include "rf/mma/c_lane16.h"

// Runs of 8 consecutive k in one row: one 16-byte chunk each.
template <class Off>
RF_DEVICE void rf_load_a(rf_frag_a& a, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int c = 0; c < RF_WMMA_K_PER_LANE; c += 8) {
        const rf_elem* p = s + off(l & 15, rf_wmma_k0() + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) a.x[c + j] = p[j];
    }
}

template <class Off>
RF_DEVICE void rf_load_b_nk(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int c = 0; c < RF_WMMA_K_PER_LANE; c += 8) {
        const rf_elem* p = s + off(l & 15, rf_wmma_k0() + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) b.x[c + j] = p[j];
    }
}

template <class Off>
RF_DEVICE void rf_load_b_kn(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int j = 0; j < RF_WMMA_K_PER_LANE; ++j) b.x[j] = s[off(rf_wmma_k0() + j, l & 15)];
}

RF_DEVICE void rf_mma(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
    const rf_vkx16 av = __builtin_bit_cast(rf_vkx16, a);
    const rf_vkx16 bv = __builtin_bit_cast(rf_vkx16, b);
    rf_v8f32 cv = __builtin_bit_cast(rf_v8f32, c);
#if RF_MMA_FLAVOUR == RF_MMA_WMMA11 && RF_DTYPE == RF_BF16
    cv = __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(av, bv, cv);
#elif RF_MMA_FLAVOUR == RF_MMA_WMMA11
    cv = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(av, bv, cv);
#elif RF_DTYPE == RF_BF16
    cv = __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32_gfx12(av, bv, cv);
#else
    cv = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32_gfx12(av, bv, cv);
#endif
    c = __builtin_bit_cast(rf_frag_c, cv);
}
