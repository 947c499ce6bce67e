// Inf and NaN in V for the fused attention kernel (kernels/flash/fwd.hip).
//
// A key a row does not see is not one of its inputs (docs/semantics.md), but
// the P V product multiplies every key of a tile by the row's weight, and a
// masked key's weight 0 times NaN or Inf is NaN. Tiles whose V holds a
// non-finite value are therefore done in two parts (rare: the kernel only
// looks where it is cheap, see fwd.hip):
//   1. sanitize_v zeroes those values in shared memory (before S exists, so
//      the extra work never sits next to S in registers), and the ordinary
//      P V product adds the finite rest;
//   2. once the block has stored O, nonfinite_v_pass adds p * v for the
//      non-finite v of the keys each row sees (IEEE: +-Inf where p > 0, NaN
//      where p = 0 or v is NaN), reading Q, K and V from global memory.
// Nothing of this sits in the tile loop next to S and O in registers (at
// 255 registers an extra live value there spills).
#pragma once
#include "rf/flash/device.h"

namespace rf_flash {

// What the block's V pass reads: its head's rows of Q, K, V and O (seq
// strides in elements), the mask and logit parameters, its query tile m0..
// and key tiles [n_begin, n_end).
struct VPass {
    const rf_elem *q, *k, *v;
    rf_elem* o;
    long long q_stride, k_stride, v_stride, o_stride, window_left, window_right, shift;
    int seq_q, seq_kv, m0, n_begin, n_end;
    float scale, softcap;
};

// Whether key k_row's weight in row q_row is positive in f32 terms: the
// logit (log2 units, as the kernel forms it) minus the row's final max m.
// Far below the max, or NaN, counts as 0: p * Inf is then NaN, which
// docs/semantics.md accepts where the reference has Inf.
RF_DEVICE bool weight_positive(const VPass& a, const rf_elem* q_row, const rf_elem* k_row, float m) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s = fma_f(rf_from_elem(q_row[d]), rf_from_elem(k_row[d]), s);
    const float x = a.softcap > 0.0f ? a.softcap * LOG2E * tanh_f(s * (a.scale / a.softcap)) : s * (a.scale * LOG2E);
    return x - m > -120.0f;
}

// Step 2, after O is stored (all threads; m_s holds the block's final row
// maxima, log2 units): for each tile whose V holds an Inf or NaN (checked
// again in global memory), each (row, column) adds w * v for the non-finite
// v of the keys the row sees, w = 1 for a positive weight and 0 otherwise:
// exactly the class of IEEE p * v (+-Inf, or NaN for p = 0 or v = NaN).
// Only blocks that met such a tile call it; not inlined, so that none of it
// shares the register allocation of the tile loop.
__device__ __attribute__((noinline)) void nonfinite_v_pass(const VPass a, const float* m_s) {
    for (int nb = a.n_begin; nb < a.n_end; ++nb) {
        const int n0 = nb * BN, keys = (int)min_ll(BN, a.seq_kv - n0);
        bool bad = false;
        for (int c = (int)threadIdx.x; c < keys * D; c += THREADS)
            bad |= nonfinite_f(rf_from_elem(a.v[(n0 + c / D) * a.v_stride + c % D]));
        if (!block_any(bad)) continue;
        for (int c = (int)threadIdx.x; c < BM * D; c += THREADS) {
            const int i = c / D, x = c % D, row = a.m0 + i;
            if (row >= a.seq_q) continue;
            int first, last;
            key_interval(row + a.shift, n0, a.window_left, a.window_right, a.seq_kv, first, last);
            float add = 0.0f;
            bool any = false;
            for (int j = first < 0 ? 0 : first; j <= last && j < keys; ++j) {
                const float v = rf_from_elem(a.v[(n0 + j) * a.v_stride + x]);
                if (!nonfinite_f(v)) continue;
                const bool w = weight_positive(a, a.q + row * a.q_stride, a.k + (n0 + j) * a.k_stride, m_s[i]);
                add += (w ? 1.0f : 0.0f) * v;
                any = true;
            }
            if (any) {
                rf_elem* o = a.o + row * a.o_stride + x;
                *o = rf_to_elem(rf_from_elem(*o) + add);
            }
        }
    }
}

// Step 1 (all threads, then a barrier): Inf and NaN of the V tile become 0.
RF_DEVICE void sanitize_v(rf_elem* v_s) {
#if RF_FLASH_PRESPLIT
    constexpr int ROWS = D, CPR = VTT::CPR;  // V^T big: head-dim rows of BN keys
#else
    constexpr int ROWS = BN, CPR = KVT::CPR;
#endif
    for (int c = (int)threadIdx.x; c < ROWS * CPR; c += THREADS) {
#if RF_FLASH_PRESPLIT
        rf_elem* e = v_s + VTT::off(c / CPR, (c % CPR) * VEC);
#else
        rf_elem* e = v_s + KVT::off(c / CPR, (c % CPR) * VEC);
#endif
#pragma unroll
        for (int i = 0; i < VEC; ++i)
            if (nonfinite_f(rf_from_elem(e[i]))) e[i] = rf_elem(0);
    }
}

}  // namespace rf_flash
