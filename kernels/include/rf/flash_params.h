// Parameters of the fused attention forward kernel (kernels/flash/fwd.hip),
// passed by value as the kernel's only argument. The Rust side mirrors this
// struct with #[repr(C)]; keep every field fixed-width, 8-byte fields first,
// so the layout has no padding anywhere (184 bytes, 8-byte aligned).
//
// Layout of Q, K, V and O: [batch, seq, heads, head_dim], last dimension
// contiguous, the other strides in ELEMENTS (not bytes). The kernel copies
// rows with 16-byte vector accesses, so every pointer must be 16-byte aligned
// and every stride a multiple of 16 / sizeof(element) (8 for f16/bf16, 4 for
// f32); the host rejects anything else.
#pragma once
#include "rf/strides.h"

struct rf_flash_params {
    // Device pointers (CUdeviceptr / hipDeviceptr_t bit patterns).
    unsigned long long q;    // [batch, seq_q, heads_q, head_dim]
    unsigned long long k;    // [batch, seq_kv, heads_kv, head_dim]
    unsigned long long v;    // [batch, seq_kv, heads_kv, head_dim]
    unsigned long long o;    // [batch, seq_q, heads_q, head_dim], same dtype as q
    unsigned long long lse;  // optional f32 [batch, heads_q, seq_q] contiguous; 0 = not written

    // Element strides (batch, seq, head) of each tensor.
    RfQkvoStrides strides;

    // Visibility window around pos = i + seq_kv - seq_q (bottom-right
    // aligned): key j is visible iff (left < 0 || j >= pos - left) &&
    // (right < 0 || j <= pos + right). Causal = (-1, 0); none = (-1, -1).
    long long window_left;
    long long window_right;

    int batch;
    int seq_q;
    int seq_kv;
    int heads_q;   // multiple of heads_kv; kv head = q head / (heads_q / heads_kv)
    int heads_kv;
    float scale;   // multiplies q.k
    float softcap; // > 0: logit = softcap * tanh(scale * q.k / softcap); <= 0: off
    int reserved;  // keeps the size a multiple of 8; must be 0
};

#ifdef __cplusplus
static_assert(sizeof(rf_flash_params) == 184, "rf_flash_params layout changed: update the Rust mirror");
#endif
