// Row softmax for the unfused attention path. One block per score row:
// optional logit soft-cap, the mask (bottom-right aligned causal / sliding
// window), then a numerically stable softmax. Scores arrive already scaled
// (the QK^T GEMM applies the scale as its alpha).
//
// Specializations: P_DTYPE = RF_F32 writes probabilities in place over the
// scores; RF_F16 / RF_BF16 write them to a separate 16-bit buffer for the
// second GEMM.

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

// A key is visible to query `i` if it lies in [pos - left, pos + right],
// pos = i + seq_kv - seq_q; a negative bound means unbounded on that side.
RF_DEVICE bool rf_visible(long long j, long long pos, long long left, long long right) {
    return (left < 0 || j >= pos - left) && (right < 0 || j <= pos + right);
}

RF_DEVICE float rf_logit(float s, float softcap) {
    return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
}

// scores: rows x seq_kv f32, row r belongs to query r % seq_q.
// probs:  rows x seq_kv p_t (may alias scores when P_DTYPE is f32).
RF_KERNEL void softmax_rows(const float* scores, p_t* probs, int seq_q, int seq_kv,
                            float softcap, long long win_left, long long win_right) {
    __shared__ float scratch[1024 / RF_WARP_SIZE];
    const long long row = blockIdx.x;
    const long long pos = row % seq_q + (long long)seq_kv - seq_q;
    const float* s = scores + row * (long long)seq_kv;
    p_t* p = probs + row * (long long)seq_kv;

    // Pass 1: each thread keeps an online (max, sum of exp) pair.
    float m = RF_NEG_INF, l = 0.0f;
    for (int j = threadIdx.x; j < seq_kv; j += blockDim.x) {
        if (!rf_visible(j, pos, win_left, win_right)) continue;
        const float x = rf_logit(s[j], softcap);
        if (x > m) {
            l = l * expf(m - x) + 1.0f;
            m = x;
        } else {
            l += expf(x - m);
        }
    }
    const float row_max = rf_block_max(m, scratch);
    const float mine = (m == RF_NEG_INF) ? 0.0f : l * expf(m - row_max);
    const float row_sum = rf_block_sum(mine, scratch);
    // A fully masked row has no visible key: it becomes zeros, never NaN.
    const float inv = (row_max == RF_NEG_INF) ? 0.0f : 1.0f / row_sum;

    // Pass 2: normalized probabilities; masked keys get exact zeros. With
    // f32 output each element is read and then written by the same thread,
    // so writing in place is safe.
    for (int j = threadIdx.x; j < seq_kv; j += blockDim.x) {
        float out = 0.0f;
        if (inv != 0.0f && rf_visible(j, pos, win_left, win_right)) {
            out = expf(rf_logit(s[j], softcap) - row_max) * inv;
        }
        p[j] = to_p(out);
    }
}
