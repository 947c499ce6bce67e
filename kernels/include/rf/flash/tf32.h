// f32 on tensor cores (split tf32, RF_FLASH_PRESPLIT) in the fused attention
// kernel: the per-tile split of K and V, and the exact non-finite logits.
//
// Each operand x is big + small (rf_split_tf32) and a product is
// big*big + big*small + small*big. That is exact for finite inputs, but an
// infinite x (big = Inf, small = 0) meets the other operand's small part:
// small * Inf is NaN when small is 0 and -Inf when its sign differs from
// big's, so q . k could be NaN where IEEE (and the f64 reference) has +-Inf.
// big*big alone gives the IEEE non-finite result (tf32 rounding keeps sign,
// zero-ness, Inf and NaN), so tiles whose Q or K holds an Inf or NaN
// recompute S from the big parts and take that wherever it is non-finite.
#pragma once
#include "rf/flash/device.h"

namespace rf_flash {

#if RF_FLASH_PRESPLIT
// Splits the landed tile of one stage (all threads): K in place plus its
// small part at kb + BN * KS; raw V ([key][d] at vtb) into V^T big at vtb
// and small at vtb + VT_ELEMS. Ends with the V^T tiles written, before the
// caller's barrier.
// Returns whether this thread's chunks of K or V hold an Inf or NaN.
// x = big + small: the cheap split where this chunk is finite, else the
// one that keeps Inf and NaN (rf/mma/mma_sync.h).
RF_DEVICE void split_word(unsigned& w, unsigned& small, bool careful) {
#if RF_FLASH_FAST_SPLIT
    if (!careful) {
        rf_split_tf32_finite(__uint_as_float(w), w, small);
        return;
    }
#endif
    (void)careful;
    rf_split_tf32(__uint_as_float(w), w, small);
}

// Which V chunk (key, first column) thread chunk c transposes. Key-fastest:
// the 32 lanes of a warp hold 32 keys of one column chunk, so each of the
// transposed stores (one V^T row, the keys' slots) hits 32 different banks.
// (Row-major, as K, the lanes held 32 column chunks of one key and the
// stores to V^T rows 4 * lane + e fell into two banks: 16-way conflicts,
// 32 such stores per thread and tile; RF_FLASH_VT_ROWMAJOR 1 restores that
// for the development harness's A/B.)
#ifndef RF_FLASH_VT_ROWMAJOR
#define RF_FLASH_VT_ROWMAJOR 0
#endif
RF_DEVICE void v_chunk(int c, int& key, int& col) {
    if (RF_FLASH_VT_ROWMAJOR) {
        key = c / KVT::CPR;
        col = (c % KVT::CPR) * VEC;
    } else {
        key = c % BN;
        col = (c / BN) * VEC;
    }
}

RF_DEVICE bool presplit_tile(rf_elem* kb, rf_elem* vtb) {
    constexpr int CPR = KVT::CPR;
    constexpr int CHUNKS = BN * CPR;
    constexpr int PER = (CHUNKS + THREADS - 1) / THREADS;
    static_assert(PER <= 32, "one bit per chunk");
    float vraw[PER][4];
    unsigned bad = 0, vbad = 0;  // vbad: bit i, chunk i of V is not finite
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = (int)threadIdx.x + i * THREADS;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int row = c / CPR, col = (c % CPR) * VEC;
            int vkey, vcol;
            v_chunk(c, vkey, vcol);
            U32x4 kv = *reinterpret_cast<const U32x4*>(kb + KVT::off(row, col));
            const U32x4 vv = *reinterpret_cast<const U32x4*>(vtb + KVT::off(vkey, vcol));
            const unsigned kbits = chunk_nonfinite_bits(kv), vbits = chunk_nonfinite_bits(vv);
            bad |= kbits | vbits;
            vbad |= nonfinite_seen(vbits) ? 1u << i : 0u;
            const bool kcareful = nonfinite_seen(kbits);
            U32x4 ks;
            split_word(kv.x, ks.x, kcareful);
            split_word(kv.y, ks.y, kcareful);
            split_word(kv.z, ks.z, kcareful);
            split_word(kv.w, ks.w, kcareful);
            *reinterpret_cast<U32x4*>(kb + KVT::off(row, col)) = kv;
            *reinterpret_cast<U32x4*>(kb + BN * KVT::STRIDE + KVT::off(row, col)) = ks;
            vraw[i][0] = __uint_as_float(vv.x);
            vraw[i][1] = __uint_as_float(vv.y);
            vraw[i][2] = __uint_as_float(vv.z);
            vraw[i][3] = __uint_as_float(vv.w);
        }
    }
    __syncthreads();  // raw V is read everywhere before V^T overwrites it
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = (int)threadIdx.x + i * THREADS;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            int key, col;
            v_chunk(c, key, col);
            const int slot = rf_tf32_key_slot(key);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                unsigned big = __float_as_uint(vraw[i][e]), small;
                split_word(big, small, (vbad >> i) & 1u);
                vtb[VTT::off(col + e, slot)] = __uint_as_float(big);
                vtb[VT_ELEMS + VTT::off(col + e, slot)] = __uint_as_float(small);
            }
        }
    }
    return nonfinite_seen(bad);
}

// S from the big parts only, for a tile whose Q or K holds an Inf or NaN:
// wherever that is non-finite it is the IEEE q . k, and it replaces the
// three-product S (see the top of this file). One 16-key block at a time
// keeps the extra accumulators at MT fragments.
RF_DEVICE void nonfinite_logits(rf_frag_c (&s)[MT][BN / 16], const rf_elem* sq, const rf_elem* k_s, int strip0) {
#pragma unroll
    for (int nu = 0; nu < BN / 16; ++nu) {
        rf_frag_c hi[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) hi[mt].v[r] = 0.0f;
#pragma unroll 1
        for (int kk = 0; kk < D / 16; ++kk) {
            rf_frag_b kb;
            rf_load_b_nk_split(kb, k_s, k_s + BN * KVT::STRIDE,
                               [&](int r, int c) { return KVT::off(16 * nu + r, 16 * kk + c); });
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                rf_frag_a qa;
                rf_load_a(qa, sq, [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
                rf_mma_hi(hi[mt], qa, kb);
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r)
                if (nonfinite_f(hi[mt].v[r])) s[mt][nu].v[r] = hi[mt].v[r];
    }
}
#endif

}  // namespace rf_flash
