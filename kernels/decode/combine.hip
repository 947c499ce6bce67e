// Merges the partial outputs of the split-KV decode kernel
// (kernels/decode/splitkv.hip): for each query row, the splits' normalized
// partial outputs o_s and log2-sum-exps lse_s combine as
//   out = sum_s w_s o_s / sum_s w_s,   w_s = exp2(lse_s - max_s lse_s)
// with w_s = 0 for a split whose lse is -inf (no visible key, or only
// weightless ones: its o_s is then 0, or NaN from a visible NaN V, and
// 0 * o_s keeps that NaN). A NaN lse (a NaN logit) makes the row NaN; a
// row with no visible key at all is exact zeros; a row whose visible
// logits are all -inf is 0 / 0 = NaN, as in the reference.
//
// Specialization: RF_DTYPE (the output element). One warp per row, head
// dims up to 256; grid ceil(rows / WARPS), THREADS threads.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
#include "rf/decode_params.h"
#include "rf/decode_common.h"

namespace rf_combine {
constexpr int THREADS = 128;
constexpr int WARPS = THREADS / RF_WARP_SIZE;
constexpr int PER_LANE = 256 / RF_WARP_SIZE;  // head_dim <= 256
}  // namespace rf_combine

using namespace rf_decode;
using namespace rf_combine;

extern "C" __device__ const int rf_decode_combine_launch[2] = {THREADS, WARPS};

#if defined(RF_CUDA)
#define RF_COMBINE_BOUNDS __launch_bounds__(THREADS)
#else
#define RF_COMBINE_BOUNDS __attribute__((amdgpu_flat_work_group_size(1, THREADS)))
#endif

extern "C" __global__ void RF_COMBINE_BOUNDS rf_decode_combine(const rf_decode_combine_params p) {
    const int warp = (int)threadIdx.x / RF_WARP_SIZE, lane = (int)threadIdx.x % RF_WARP_SIZE;
    const long long rows = (long long)p.batch * p.seq_q * p.heads_q;
    const long long row = (long long)blockIdx.x * WARPS + warp;
    if (row >= rows) return;
    const int hq = (int)(row % p.heads_q), sq = (int)((row / p.heads_q) % p.seq_q);
    const int b = (int)(row / ((long long)p.heads_q * p.seq_q));
    long long len = p.seq_kv;
    if (p.seq_lens != 0) len = reinterpret_cast<const int*>(p.seq_lens)[b];
    const bool bad = len < 0 || len > p.seq_kv;
    // Visible keys of this row (rf/mask.h: pos = sq + len - seq_q).
    const long long pos = rf_query_pos(sq, p.seq_q, len);
    const long long lo = p.window_left >= 0 ? (pos - p.window_left > 0 ? pos - p.window_left : 0) : 0;
    long long hi = p.window_right >= 0 ? pos + p.window_right + 1 : len;
    if (hi > len) hi = len;
    elem* out = reinterpret_cast<elem*>(p.o) + b * p.o_strides.batch + sq * p.o_strides.seq + hq * p.o_strides.head;
    if (bad || lo >= hi) {
        const float fill = bad ? nan_f() : 0.0f;
        for (int d = lane; d < p.head_dim; d += RF_WARP_SIZE) out[d] = from_f(fill);
        return;
    }
    const float* lse = reinterpret_cast<const float*>(p.part_lse) + row;
    // The maximum (and whether any lse is NaN) with the splits spread over
    // the lanes: one round of loads, then a warp reduction.
    float top = RF_NEG_INF, nan = 0.0f;
    for (int s = lane; s < p.num_splits; s += RF_WARP_SIZE) {
        const float x = lse[s * rows];
        nan = x != x ? 1.0f : nan;
        top = fmaxf(top, x);
    }
    top = rf_warp_max(top);
    const bool any_nan = rf_warp_max(nan) > 0.5f;
    float acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.0f;
    float den = 0.0f;
    // Unrolled so that the loads of several splits are in flight at once:
    // with few rows (batch 1) this loop's latency is the kernel's time.
    const float* po = reinterpret_cast<const float*>(p.part_o) + row * p.head_dim;
    const long long split_stride = rows * p.head_dim;
#pragma unroll 8
    for (int s = 0; s < p.num_splits; ++s) {
        const float x = lse[s * rows];
        const float w = x == RF_NEG_INF ? 0.0f : exp2_approx(x - top);
        den += w;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + RF_WARP_SIZE * i;
            if (d < p.head_dim) acc[i] += w * po[s * split_stride + d];
        }
    }
    const bool nan_row = any_nan;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + RF_WARP_SIZE * i;
        if (d < p.head_dim) out[d] = from_f(nan_row ? nan_f() : acc[i] / den);
    }
}
