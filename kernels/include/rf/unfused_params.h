// Parameter struct of kernels/unfused/masked_pv.hip, mirrored by
// `MaskedPvParams` in backends/gpu_unfused.rs (a test compiles static_asserts
// of every field's offset and size from the Rust side). 8-byte fields first.
#pragma once
#include "rf/strides.h"

struct RfMaskedPvParams {
    unsigned long long v;      // V of the whole call: [batch, seq_kv, heads_kv, head_dim], strided
    unsigned long long o;      // O of batch `b` (masked_pv only)
    unsigned long long probs;  // the chunk's probabilities: heads x seq_q rows of seq_kv (P_DTYPE)
    unsigned long long flags;  // RF_SCAN_BLOCKS ints: block i of the scan saw an Inf or NaN
    RfStrides v_strides;       // elements
    RfStrides o_strides;       // batch unused: `o` already addresses batch `b`
    long long win_left, win_right;  // mask bounds, negative = unbounded (rf/mask.h)
    int batch;
    int b;        // the batch the chunk belongs to (masked_pv)
    int seq_q;
    int seq_kv;
    int heads_kv;
    int head_dim;
    int h0;       // first query head of the chunk
    int heads;    // query heads in the chunk
    int group;    // query heads per KV head
    int reserved;
};
