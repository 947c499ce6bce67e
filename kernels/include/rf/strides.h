// Element strides of the attention tensors, embedded in the parameter
// structs of every kernel family that addresses Q, K, V or O. Mirrored by
// `TensorStrides` / `QkvoStrides` in src/kernels/params.rs (#[repr(C)]; a
// test compiles every field offset the Rust side generates). Strides are in
// ELEMENTS (not bytes) of a [batch, seq, heads, head_dim] tensor whose last
// dimension is contiguous.
#pragma once

struct RfStrides {
    long long batch;  // between batches (with a block table: between pool blocks)
    long long seq;    // between positions of one sequence
    long long head;   // between heads of one position
};

// The four tensors of one attention call.
struct RfQkvoStrides {
    RfStrides q;
    RfStrides k;
    RfStrides v;
    RfStrides o;
};

#ifdef __cplusplus
static_assert(sizeof(RfStrides) == 24, "RfStrides layout changed: update the Rust mirror");
static_assert(sizeof(RfQkvoStrides) == 96, "RfQkvoStrides layout changed: update the Rust mirror");
#endif
