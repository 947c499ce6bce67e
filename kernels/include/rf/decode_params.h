// Parameters of the split-KV decode kernels (kernels/decode/splitkv.hip and
// kernels/decode/splitkv_mma.hip), passed by value as each kernel's only
// argument. Mirrored by `DecodeParams` in
// src/kernels/params.rs (#[repr(C)]; a test compiles the field offsets the
// Rust side generates). Every field is fixed-width, 8-byte fields first, so
// no padding exists on either side.
//
// Q, O: [batch, seq_q, heads_q, head_dim]; K, V: [batch, seq_kv, heads_kv,
// head_dim], or with a block table the pools [num_blocks, block_size,
// heads_kv, head_dim] (the batch stride is then one block). Last dimension
// contiguous, other strides in ELEMENTS, multiples of 16 / sizeof(element),
// pointers 16-byte aligned (16-byte vector loads).
#pragma once
#include "rf/strides.h"

struct rf_decode_params {
    unsigned long long q;
    unsigned long long k;
    unsigned long long v;
    unsigned long long o;            // written directly when num_splits == 1
    unsigned long long part_o;       // f32 [num_splits][batch][seq_q][heads_q][head_dim] (num_splits > 1)
    unsigned long long part_lse;     // f32 [num_splits][batch][seq_q][heads_q], log2 domain
    unsigned long long block_table;  // i32 [batch][table_width]; 0 = dense K/V
    unsigned long long seq_lens;     // i32 [batch]; 0 = every sequence is seq_kv long

    RfQkvoStrides strides;  // with a block table, k/v batch = one pool block
    // Visibility around pos = i + len - seq_q (rf/mask.h): causal = (-1, 0),
    // none = (-1, -1), window = (left, right).
    long long window_left;
    long long window_right;

    int batch;
    int seq_q;
    int seq_kv;       // the longest sequence; seq_lens[b] <= seq_kv
    int heads_q;      // a multiple of heads_kv
    int heads_kv;
    int table_width;  // block-table entries per sequence
    int block_shift;  // log2(block_size) with a block table
    int num_blocks;   // pool blocks; a table entry outside 0..num_blocks-1 makes rows NaN
    int num_splits;   // blockIdx.x = split; split s covers keys [s * split_keys, (s+1) * split_keys)
    int split_keys;   // a multiple of the kernel's BLOCK_N
    float scale;      // multiplies q.k
    float softcap;    // > 0: logit = softcap * tanh(scale * q.k / softcap)
    int reserved;     // keeps the size a multiple of 8; must be 0
    // u32 [batch][gridDim.y], zero at launch (num_splits > 1): the tickets
    // that elect the block merging a row's splits (rf/decode/merge.h).
    unsigned long long counters;
};

#ifdef __cplusplus
static_assert(sizeof(rf_decode_params) == 240, "rf_decode_params layout changed: update the Rust mirror");
#endif
