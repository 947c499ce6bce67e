// The decoder's row-wise and element-wise kernels: RMSNorm (optionally
// fused with the residual add before it), SwiGLU, broadcast add (residuals
// and biases) and row argmax (greedy decoding). Element type by -DDTYPE
// (rf/model_elem.h); arithmetic is f32, and results are rounded to DTYPE
// where transformers rounds them (each op of a bf16 model returns bf16).
// The matrix products go through the driver's GEMM.
#include "rf/platform.h"
#include "rf/reduce.h"
#include "rf/model_params.h"
#include "rf/model_elem.h"

#if defined(RF_HIP_HEADER_FREE)
RF_DEVICE float rf_sqrt(float x) { return __builtin_sqrtf(x); }
#else
RF_DEVICE float rf_sqrt(float x) { return sqrtf(x); }
#endif

// Values per thread a row keeps in registers (rows up to this many times
// blockDim.x elements are read once; longer rows take the loop below).
#define RF_NORM_VALUES 8

// One block per row; the mean square is a block-wide sum. With a residual,
// x = n(x + residual) is stored first and normalized (transformers adds the
// residual in the model dtype, then normalizes the rounded sum). The row
// and the weight are loaded up front, so one memory round trip precedes the
// reduction.
RF_KERNEL void rms_norm(RfRmsNormParams prm) {
    __shared__ float scratch[1024 / RF_WARP_SIZE];
    const long long base = (long long)blockIdx.x * prm.width;
    if (prm.width <= RF_NORM_VALUES * (int)blockDim.x) {
        float v[RF_NORM_VALUES], w[RF_NORM_VALUES], r[RF_NORM_VALUES];
        float sq = 0.0f;
#pragma unroll
        for (int k = 0; k < RF_NORM_VALUES; ++k) {
            const int c = threadIdx.x + k * blockDim.x;
            const bool in = c < prm.width;
            v[k] = in ? rf_ld(prm.x, base + c) : 0.0f;
            r[k] = in && prm.residual ? rf_ld(prm.residual, base + c) : 0.0f;
            w[k] = in ? rf_ld(prm.weight, c) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < RF_NORM_VALUES; ++k) {
            const int c = threadIdx.x + k * blockDim.x;
            if (c < prm.width && prm.residual) {
                v[k] = rf_round(v[k] + r[k]);
                rf_st(prm.x, base + c, v[k]);
            }
            sq += v[k] * v[k];
        }
        const float inv = 1.0f / rf_sqrt(rf_block_sum(sq, scratch) / (float)prm.width + prm.eps);
#pragma unroll
        for (int k = 0; k < RF_NORM_VALUES; ++k) {
            const int c = threadIdx.x + k * blockDim.x;
            if (c < prm.width) rf_st(prm.out, base + c, rf_round(v[k] * inv) * w[k]);
        }
        return;
    }
    float sq = 0.0f;
    for (int c = threadIdx.x; c < prm.width; c += blockDim.x) {
        float v = rf_ld(prm.x, base + c);
        if (prm.residual) {
            v = rf_round(v + rf_ld(prm.residual, base + c));
            rf_st(prm.x, base + c, v);
        }
        sq += v * v;
    }
    const float total = rf_block_sum(sq, scratch);
    const float inv = 1.0f / rf_sqrt(total / (float)prm.width + prm.eps);
    for (int c = threadIdx.x; c < prm.width; c += blockDim.x) {
        rf_st(prm.out, base + c, rf_round(rf_ld(prm.x, base + c) * inv) * rf_ld(prm.weight, c));
    }
}

RF_KERNEL void swiglu(RfSwigluParams prm) {
    const long long total = (long long)prm.rows * prm.width;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long r = e / prm.width, c = e % prm.width;
        const float g = rf_ld(prm.gate, r * prm.in_stride + c);
        rf_st(prm.out, e, rf_round(g / (1.0f + expf(-g))) * rf_ld(prm.up, r * prm.in_stride + c));
    }
}

RF_KERNEL void add_rows(RfAddParams prm) {
    const long long total = (long long)prm.rows * prm.width;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long r = e / prm.width, c = e % prm.width;
        rf_st(prm.x, e, rf_ld(prm.x, e) + rf_ld(prm.y, (r % prm.y_rows) * prm.width + c));
    }
}

RF_DEVICE int rf_shfl_xor_int(int v, int lane_mask) {
#if defined(RF_HIP)
    return __shfl_xor(v, lane_mask, RF_WARP_SIZE);
#else
    return __shfl_xor_sync(0xffffffffu, v, lane_mask, RF_WARP_SIZE);
#endif
}

// (value, index) order of argmax: larger value first, then smaller index.
// `index` = 0x7fffffff marks "nothing yet" (NaN never becomes a candidate).
RF_DEVICE bool rf_better(float v, int i, float best_v, int best_i) {
    return v > best_v || (v == best_v && i < best_i);
}

// The block's best (value, index) in thread 0: warps, then the block, with
// the same order as rf_better, so ties go to the first index.
RF_DEVICE void rf_block_best(float& best_v, int& best_i) {
    __shared__ float warp_v[1024 / RF_WARP_SIZE];
    __shared__ int warp_i[1024 / RF_WARP_SIZE];
    for (int o = RF_WARP_SIZE / 2; o > 0; o >>= 1) {
        const float v = rf_shfl_xor(best_v, o);
        const int i = rf_shfl_xor_int(best_i, o);
        if (rf_better(v, i, best_v, best_i)) {
            best_v = v;
            best_i = i;
        }
    }
    const int lane = threadIdx.x % RF_WARP_SIZE, warp = threadIdx.x / RF_WARP_SIZE;
    if (lane == 0) {
        warp_v[warp] = best_v;
        warp_i[warp] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const int warps = (blockDim.x + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
        for (int w = 1; w < warps; ++w) {
            if (rf_better(warp_v[w], warp_i[w], best_v, best_i)) {
                best_v = warp_v[w];
                best_i = warp_i[w];
            }
        }
    }
}

// Stage 1, grid (chunks, rows): block (c, r) finds the best of columns
// [c * span, (c + 1) * span) of row r and writes it to partial[r][c]
// (values in the first rows × chunks floats, indices as int bits after).
RF_KERNEL void argmax_partial(RfArgmaxParams prm) {
    const int row = blockIdx.y, chunk = blockIdx.x;
    const int span = (prm.width + prm.chunks - 1) / prm.chunks;
    const int end = (chunk + 1) * span < prm.width ? (chunk + 1) * span : prm.width;
    const long long base = (long long)row * prm.width;
    float best_v = RF_NEG_INF;
    int best_i = 0x7fffffff;
    for (int c = chunk * span + threadIdx.x; c < end; c += blockDim.x) {
        const float v = rf_ld(prm.x, base + c);
        if (v == v && rf_better(v, c, best_v, best_i)) {
            best_v = v;
            best_i = c;
        }
    }
    rf_block_best(best_v, best_i);
    if (threadIdx.x == 0) {
        const long long slot = (long long)row * prm.chunks + chunk;
        prm.partial[slot] = best_v;
        prm.partial[(long long)prm.rows * prm.chunks + slot] = __int_as_float(best_i);
    }
}

// Stage 2, one block per row: the best of the row's chunks, as an f32 index
// (0 for a row with no candidate, i.e. all NaN).
RF_KERNEL void argmax_finish(RfArgmaxParams prm) {
    const int row = blockIdx.x;
    float best_v = RF_NEG_INF;
    int best_i = 0x7fffffff;
    for (int c = threadIdx.x; c < prm.chunks; c += blockDim.x) {
        const long long slot = (long long)row * prm.chunks + c;
        const float v = prm.partial[slot];
        const int i = __float_as_int(prm.partial[(long long)prm.rows * prm.chunks + slot]);
        if (rf_better(v, i, best_v, best_i)) {
            best_v = v;
            best_i = i;
        }
    }
    rf_block_best(best_v, best_i);
    if (threadIdx.x == 0) prm.out[row] = best_i == 0x7fffffff ? 0.0f : (float)best_i;
}
