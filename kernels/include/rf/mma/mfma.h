// AMD CDNA2/3 (gfx90a, gfx94x, gfx950) implementation of the tile API (see
// mma.h): one v_mfma_f32_16x16x16 per 16x16x16 step, wave64.
//
// Operand layouts of v_mfma_f32_16x16x16{f16,bf16_1k} (lane l, j = 0..3):
//   A: lane l holds A[l % 16][4 * (l / 16) + j]
//   B: lane l holds B[4 * (l / 16) + j][l % 16]
//   C: lane l holds C[4 * (l / 16) + j][l % 16]
// The accumulator is the transpose of the A layout, so P goes through
// shared memory (RF_MMA_C_TO_A = 0). Compiled in CI, never executed here.
#pragma once

#if RF_WARP_SIZE != 64
#error "MFMA needs wave64"
#endif
#if RF_DTYPE == RF_F32
#error "the MFMA flavour takes f16/bf16 operands; f32 uses the SIMT flavour"
#endif

#define RF_MMA_C_REGS 4
#define RF_MMA_ROWS 4
#define RF_MMA_C_TO_A 0

typedef float rf_v4f32 __attribute__((ext_vector_type(4)));
#if RF_DTYPE == RF_BF16
typedef short rf_v4x16 __attribute__((ext_vector_type(4)));
#else
typedef _Float16 rf_v4x16 __attribute__((ext_vector_type(4)));
#endif

struct rf_frag_a {
    rf_u16 x[4];
};
struct rf_frag_b {
    rf_u16 x[4];
};
struct rf_frag_c {
    float v[4];
};

RF_DEVICE int rf_slot_row(int slot) { return 4 * (rf_lane() >> 4) + slot; }
#include "rf/mma/c_lane16.h"

// Four consecutive elements of one row (never crossing a 16-byte chunk).
template <class Off>
RF_DEVICE void rf_load_a(rf_frag_a& a, const rf_elem* s, Off off) {
    const int l = rf_lane();
    const rf_elem* p = s + off(l & 15, 4 * (l >> 4));
#pragma unroll
    for (int j = 0; j < 4; ++j) a.x[j] = p[j];
}

template <class Off>
RF_DEVICE void rf_load_b_nk(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
    const rf_elem* p = s + off(l & 15, 4 * (l >> 4));
#pragma unroll
    for (int j = 0; j < 4; ++j) b.x[j] = p[j];
}

template <class Off>
RF_DEVICE void rf_load_b_kn(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int j = 0; j < 4; ++j) b.x[j] = s[off(4 * (l >> 4) + j, l & 15)];
}

RF_DEVICE void rf_mma(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
    const rf_v4x16 av = __builtin_bit_cast(rf_v4x16, a);
    const rf_v4x16 bv = __builtin_bit_cast(rf_v4x16, b);
    rf_v4f32 cv = __builtin_bit_cast(rf_v4f32, c);
#if RF_DTYPE == RF_BF16
    cv = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(av, bv, cv, 0, 0, 0);
#else
    cv = __builtin_amdgcn_mfma_f32_16x16x16f16(av, bv, cv, 0, 0, 0);
#endif
    c = __builtin_bit_cast(rf_frag_c, cv);
}
