// Parameter structs of the model-layer kernels (kernels/model/), passed by
// value as each kernel's single argument and mirrored by `#[repr(C)]`
// structs in src/model/engine/params.rs (layout checked by a compiled
// probe). Fields are ordered 8-byte first so neither side pads.
#pragma once

// model/rows.hip: dst row i = convert(src row (src_rows ? src_rows[i] : i))
// written at dst row (dst_rows ? dst_rows[i] : i). Embedding lookup, KV
// cache append (dst_rows = cache rows) and gather (src_rows = cache rows),
// dtype conversion of attention inputs and outputs, logits row selection.
struct RfCopyRowsParams {
    const void* src;
    void* dst;
    const long long* src_rows;  // null = identity
    const long long* dst_rows;  // null = identity
    long long src_stride;       // elements between consecutive src rows
    long long dst_stride;
    int rows;
    int width;                  // elements copied per row
};

// model/rope.hip: rotates x [tokens, heads, head_dim] (f32) in place with a
// host-computed table cos_sin [tokens][streams * pairs][2] = (cos, sin).
struct RfRopeParams {
    float* x;
    const float* cos_sin;
    long long token_stride;     // elements between tokens of x
    int tokens;
    int heads;
    int head_dim;
    int pairs;                  // rotated pairs per segment (segment width / 2)
    int streams;                // segments: 1, or 2 for GLM's 2D positions
    int interleaved;            // 0: pairs (i, i + pairs); 1: (2i, 2i + 1)
};

// model/dense.hip: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.
struct RfRmsNormParams {
    const float* x;
    const float* weight;
    float* out;
    int rows;
    int width;
    float eps;
    int reserved;
};

// model/dense.hip: out[r, c] = silu(gate[r, c]) * up[r, c]; gate and up
// rows are in_stride apart (2 * width for GLM's fused [gate; up] rows).
struct RfSwigluParams {
    const float* gate;
    const float* up;
    float* out;
    long long in_stride;
    int rows;
    int width;
};

// model/dense.hip: x[r, c] += y[r % y_rows, c] (residual: y_rows = rows;
// bias: y_rows = 1).
struct RfAddParams {
    float* x;
    const float* y;
    int rows;
    int width;
    int y_rows;
    int reserved;
};
