// K/V head replication for `mqa-replicate`: writes every query head its own
// copy of its KV head (kv = q / (heads_q / heads_kv)) into a contiguous
// workspace, so a dense (MHA) attention kernel can run on it. This is the
// MQA/GQA path of the engine the project grew from, kept as a second
// opinion next to the native-GQA flash kernels.
//
// Specialization: RF_ELEM_BYTES = 2 (f16/bf16) or 4 (f32); elements are
// copied as raw bits. One warp-strided loop per destination row; the grid
// strides over rows, so any row count fits in the grid limits.
#include "rf/platform.h"
#include "rf/params.h"

#ifndef RF_ELEM_BYTES
#define RF_ELEM_BYTES 2
#endif

#if RF_ELEM_BYTES == 2
typedef unsigned short rf_bits;
#else
typedef unsigned int rf_bits;
#endif

RF_KERNEL void rf_expand_kv(RfExpandKvParams p) {
    const int group = p.heads_q / p.heads_kv;
    const int lanes = (int)blockDim.x;
    for (long long row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const int hq = (int)(row % p.heads_q);
        const long long bs = row / p.heads_q;
        const long long s = bs % p.seq, b = bs / p.seq;
        const int hk = hq / group;
        const rf_bits* k =
            (const rf_bits*)p.src_k + b * p.k_strides.batch + s * p.k_strides.seq + hk * p.k_strides.head;
        const rf_bits* v =
            (const rf_bits*)p.src_v + b * p.v_strides.batch + s * p.v_strides.seq + hk * p.v_strides.head;
        rf_bits* dk = (rf_bits*)p.dst_k + row * p.head_dim;
        rf_bits* dv = (rf_bits*)p.dst_v + row * p.head_dim;
        for (int x = (int)threadIdx.x; x < p.head_dim; x += lanes) {
            dk[x] = k[x];
            dv[x] = v[x];
        }
    }
}
