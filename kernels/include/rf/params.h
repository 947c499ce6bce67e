// Parameter structs of the kernel families, passed by value as each
// kernel's single argument. Each struct is mirrored by a `#[repr(C)]` struct
// in src/kernels/params.rs; a test compiles static_asserts of every field
// offset and size generated from the Rust side, so the two cannot drift.
// Fields are ordered 8-byte first so neither side inserts hidden padding.
#pragma once
#include "rf/strides.h"

// unfused/softmax_rows.hip
struct RfSoftmaxParams {
    const float* scores;     // rows x seq_kv f32 scores (already scaled)
    void* probs;             // rows x seq_kv probabilities (P_DTYPE); may alias scores
    long long win_left;      // mask bounds, negative = unbounded (see rf/mask.h)
    long long win_right;
    int seq_q;
    int seq_kv;
    float softcap;           // 0 = none
    int reserved;
};

// replicate/expand_kv.hip
struct RfExpandKvParams {
    unsigned long long src_k;   // [batch, seq, heads_kv, head_dim], strided
    unsigned long long src_v;
    unsigned long long dst_k;   // [batch, seq, heads_q, head_dim], contiguous
    unsigned long long dst_v;
    RfStrides k_strides;        // elements
    RfStrides v_strides;
    long long rows;             // batch * seq * heads_q
    int seq;
    int heads_q;
    int heads_kv;
    int head_dim;
};
