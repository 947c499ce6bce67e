// Tile API (see mma.h) without matrix units: plain f32 FMAs, for targets
// with no matrix instructions (gfx1030 and older), for f32 on AMD, and for
// the f32 SIMT mode on NVIDIA. Works for any RF_WARP_SIZE that divides 256.
//
// With W = RF_WARP_SIZE, KPL = 256 / W values per lane and KH = W / 16:
//   A: lane l holds A[l % 16][(l / 16) * KPL + j]
//   B: lane l holds B[(l / 16) * KPL + j][l % 16]
//   C: lane l holds C[l / 16 + KH * i][l % 16]          (i = register)
// The product broadcasts each A and B value from its owner lane by shuffle:
// slow (one shuffle per FMA), but small in registers and exact in f32.
#pragma once

#define RF_SIMT_KPL (256 / RF_WARP_SIZE)
#define RF_SIMT_KH (RF_WARP_SIZE / 16)
#define RF_MMA_C_REGS RF_SIMT_KPL
#define RF_MMA_ROWS RF_SIMT_KPL
#define RF_MMA_C_TO_A 0

struct rf_frag_a {
    float v[RF_SIMT_KPL];
};
struct rf_frag_b {
    float v[RF_SIMT_KPL];
};
struct rf_frag_c {
    float v[RF_SIMT_KPL];
};

RF_DEVICE int rf_slot_row(int slot) { return rf_lane() / 16 + RF_SIMT_KH * slot; }
#include "rf/mma/c_lane16.h"

template <class Off>
RF_DEVICE void rf_load_a(rf_frag_a& a, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int j = 0; j < RF_SIMT_KPL; ++j) a.v[j] = rf_from_elem(s[off(l & 15, (l >> 4) * RF_SIMT_KPL + j)]);
}

template <class Off>
RF_DEVICE void rf_load_b_nk(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int j = 0; j < RF_SIMT_KPL; ++j) b.v[j] = rf_from_elem(s[off(l & 15, (l >> 4) * RF_SIMT_KPL + j)]);
}

template <class Off>
RF_DEVICE void rf_load_b_kn(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane();
#pragma unroll
    for (int j = 0; j < RF_SIMT_KPL; ++j) b.v[j] = rf_from_elem(s[off((l >> 4) * RF_SIMT_KPL + j, l & 15)]);
}

RF_DEVICE void rf_mma(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
    const int l = rf_lane();
#pragma unroll
    for (int k = 0; k < 16; ++k) {
        const int kh = k / RF_SIMT_KPL, kr = k % RF_SIMT_KPL;
        const float bk = rf_shfl_idx(b.v[kr], kh * 16 + (l & 15));
#pragma unroll
        for (int i = 0; i < RF_SIMT_KPL; ++i) {
            c.v[i] += rf_shfl_idx(a.v[kr], kh * 16 + (l >> 4) + RF_SIMT_KH * i) * bk;
        }
    }
}
