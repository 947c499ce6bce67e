// Row softmax for the unfused attention path. One block per score row:
// optional logit soft-cap, the mask (bottom-right aligned causal / sliding
// window, rf/mask.h), then a numerically stable softmax. Scores arrive
// already scaled (the QK^T GEMM applies the scale as its alpha).
//
// Specializations: P_DTYPE = RF_F32 writes probabilities in place over the
// scores; RF_F16 / RF_BF16 write them to a separate 16-bit buffer for the
// second GEMM.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
#include "rf/params.h"

#ifndef P_DTYPE
#define P_DTYPE RF_F32
#endif

#if P_DTYPE == RF_F32
typedef float p_t;
RF_DEVICE p_t to_p(float x) { return x; }
#elif P_DTYPE == RF_F16
typedef rf_u16 p_t;
RF_DEVICE p_t to_p(float x) { return rf_float_to_half(x); }
#else
typedef rf_u16 p_t;
RF_DEVICE p_t to_p(float x) { return rf_float_to_bf16(x); }
#endif

RF_DEVICE float rf_logit(float s, float softcap) {
    return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
}

// Row r of the scores belongs to query r % seq_q.
RF_KERNEL void softmax_rows(RfSoftmaxParams prm) {
    __shared__ float scratch[1024 / RF_WARP_SIZE];
    const long long row = blockIdx.x;
    const long long pos = rf_query_pos(row % prm.seq_q, prm.seq_q, prm.seq_kv);
    const float* s = prm.scores + row * (long long)prm.seq_kv;
    p_t* p = (p_t*)prm.probs + row * (long long)prm.seq_kv;
    const int seq_kv = prm.seq_kv;

    // Pass 1: each thread keeps an online (max, sum of exp) pair over its
    // visible keys. A NaN logit sets the pair to (+inf, NaN): the row max
    // is then +inf and the row sum NaN, so the row is NaN (the max alone
    // would skip NaN, and a row of NaN logits would look fully masked).
    float m = RF_NEG_INF, l = 0.0f;
    for (int j = threadIdx.x; j < seq_kv; j += blockDim.x) {
        if (!rf_visible(j, pos, prm.win_left, prm.win_right)) continue;
        const float x = rf_logit(s[j], prm.softcap);
        if (x != x) {
            m = -RF_NEG_INF;
            l = x;
        } else if (x > m) {
            l = l * expf(m - x) + 1.0f;
            m = x;
        } else {
            l += expf(x - m);  // x = m = -inf gives NaN here; m == -inf discards l below
        }
    }
    const float row_max = rf_block_max(m, scratch);
    const float mine = (m == RF_NEG_INF) ? 0.0f : l * expf(m - row_max);
    const float row_sum = rf_block_sum(mine, scratch);
    // docs/semantics.md: a row with no visible key is zeros, never NaN; all
    // visible logits -inf make it NaN (-inf - -inf), as do a NaN or +inf one
    // (through row_sum). Whether the row sees a key follows from the mask.
    const long long lo = prm.win_left >= 0 && pos - prm.win_left > 0 ? pos - prm.win_left : 0;
    const long long hi = prm.win_right >= 0 && pos + prm.win_right < seq_kv - 1 ? pos + prm.win_right : seq_kv - 1;
    const bool visible = lo <= hi;
    const float inv = row_max == RF_NEG_INF ? __int_as_float(0x7fc00000) : 1.0f / row_sum;

    // Pass 2: normalized probabilities; masked keys get exact zeros. With
    // f32 output each element is read and then written by the same thread,
    // so writing in place is safe.
    for (int j = threadIdx.x; j < seq_kv; j += blockDim.x) {
        float out = 0.0f;
        if (visible && rf_visible(j, pos, prm.win_left, prm.win_right)) {
            out = expf(rf_logit(s[j], prm.softcap) - row_max) * inv;
        }
        p[j] = to_p(out);
    }
}
