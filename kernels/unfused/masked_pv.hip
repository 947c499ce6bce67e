// Masked keys for the unfused path's P V GEMM (backends/gpu_unfused.rs).
//
// The GEMM multiplies every key by the row's probability, and a masked key
// has probability 0: 0 * NaN and 0 * Inf are NaN, so an Inf or NaN in V at
// a key a row does not see would reach the row (docs/semantics.md: a
// masked key is not an input). The common case costs one read of V:
//   rf_nonfinite_scan   once per call: does V hold an Inf or NaN at all?
//                       (one flag per block, no clearing needed)
//   rf_masked_pv        after each chunk's P V GEMM: returns at once unless
//                       a flag is set; then recomputes every row of the
//                       chunk as the sum over its visible keys only.
// Both are launched only for masks that hide some key of some row.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/mask.h"
#include "rf/unfused_params.h"

#ifndef P_DTYPE
#define P_DTYPE RF_F32
#endif

// Blocks and threads of the scan (its grid: one flag per block) and threads
// of rf_masked_pv: the host launches exactly these.
#define RF_SCAN_BLOCKS 264
#define RF_SCAN_THREADS 512
#define RF_PV_THREADS 128

#if P_DTYPE == RF_F32
typedef float elem_t;
RF_DEVICE float from_elem(elem_t x) { return x; }
RF_DEVICE elem_t to_elem(float x) { return x; }
#elif P_DTYPE == RF_F16
typedef rf_u16 elem_t;
RF_DEVICE float from_elem(elem_t x) { return rf_half_to_float(x); }
RF_DEVICE elem_t to_elem(float x) { return rf_float_to_half(x); }
#else
typedef rf_u16 elem_t;
RF_DEVICE float from_elem(elem_t x) { return rf_bf16_to_float(x); }
RF_DEVICE elem_t to_elem(float x) { return rf_float_to_bf16(x); }
#endif

RF_DEVICE bool nonfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }

// Whether `pred` holds on any thread of the block (a flag in shared memory;
// no __syncthreads_or without the vendor headers).
RF_DEVICE bool block_any(bool pred) {
    __shared__ int any;
    if (threadIdx.x == 0) any = 0;
    __syncthreads();
    if (pred) any = 1;
    __syncthreads();
    const bool r = any != 0;
    __syncthreads();
    return r;
}

// Grid RF_SCAN_BLOCKS x RF_SCAN_THREADS: flags[block] = whether the block's
// share of V holds an Inf or NaN. A warp takes whole rows (one key of one
// KV head, head_dim contiguous elements): index arithmetic per row, not
// per element, and coalesced loads.
RF_KERNEL void rf_nonfinite_scan(RfMaskedPvParams prm) {
    const elem_t* v = (const elem_t*)prm.v;
    const long long rows = (long long)prm.batch * prm.seq_kv * prm.heads_kv;
    const int lane = threadIdx.x % RF_WARP_SIZE, warps = blockDim.x / RF_WARP_SIZE;
    bool bad = false;
    for (long long r = blockIdx.x * (long long)warps + threadIdx.x / RF_WARP_SIZE; r < rows;
         r += (long long)gridDim.x * warps) {
        const long long hk = r % prm.heads_kv, j = (r / prm.heads_kv) % prm.seq_kv,
                        b = r / ((long long)prm.heads_kv * prm.seq_kv);
        const elem_t* row = v + b * prm.v_strides.batch + j * prm.v_strides.seq + hk * prm.v_strides.head;
        for (int x = lane; x < prm.head_dim; x += RF_WARP_SIZE) bad |= nonfinite(from_elem(row[x]));
    }
    const bool any = block_any(bad);
    if (threadIdx.x == 0) ((int*)prm.flags)[blockIdx.x] = any ? 1 : 0;
}

// Any grid x RF_PV_THREADS, after the chunk's P V GEMM: when the scan found
// an Inf or NaN, row r of the chunk (query head h0 + r / seq_q, query
// r % seq_q) becomes sum over its visible keys j of P[r][j] * V[j] (f32),
// and a row with no visible key zeros.
RF_KERNEL void rf_masked_pv(RfMaskedPvParams prm) {
    const int* flags = (const int*)prm.flags;
    bool set = false;
    for (int i = threadIdx.x; i < RF_SCAN_BLOCKS; i += blockDim.x) set |= flags[i] != 0;
    if (!block_any(set)) return;
    const elem_t* probs = (const elem_t*)prm.probs;
    const elem_t* v = (const elem_t*)prm.v + prm.b * prm.v_strides.batch;
    elem_t* o = (elem_t*)prm.o;
    const long long rows = (long long)prm.heads * prm.seq_q;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const int h = prm.h0 + (int)(r / prm.seq_q), i = (int)(r % prm.seq_q), hk = h / prm.group;
        const long long pos = rf_query_pos(i, prm.seq_q, prm.seq_kv);
        long long lo = 0, hi = prm.seq_kv;
        if (prm.win_left >= 0 && pos - prm.win_left > lo) lo = pos - prm.win_left;
        if (prm.win_right >= 0 && pos + prm.win_right + 1 < hi) hi = pos + prm.win_right + 1;
        const elem_t* p_row = probs + r * prm.seq_kv;
        for (int x = threadIdx.x; x < prm.head_dim; x += blockDim.x) {
            float acc = 0.0f;
            for (long long j = lo; j < hi; ++j)
                acc += from_elem(p_row[j]) * from_elem(v[j * prm.v_strides.seq + hk * prm.v_strides.head + x]);
            o[i * prm.o_strides.seq + h * prm.o_strides.head + x] = to_elem(acc);
        }
    }
}
