// Parameter structs of the model-layer kernels (kernels/model/), passed by
// value as each kernel's single argument and mirrored by `#[repr(C)]`
// structs in src/model/engine/params.rs (layout checked by a compiled
// probe). Fields are ordered 8-byte first so neither side pads. Element
// types are the kernels' -D specializations (rf/model_elem.h), so the
// pointers are untyped here.
#pragma once
#include "rf/platform.h"

// Kernels that index arrays inside their by-value parameter struct take it
// as a grid constant on CUDA (read in place from parameter space; without
// it a dynamic index makes every thread copy the struct to local memory).
// AMD kernel arguments live in memory already.
#if defined(RF_CUDA)
#define RF_GRID_CONST const __grid_constant__
#else
#define RF_GRID_CONST const
#endif

// Row indices a copy may carry inside its parameters (no upload, no sync):
// a decode step's rows for batches up to this size.
#define RF_INLINE_ROWS 64
// 32-bit words one put_words launch carries (the struct stays under the
// 4 KiB kernel-parameter limit of HIP and CUDA).
#define RF_PUT_WORDS 960

// How a copy finds its rows (RfCopyRowsParams.src_mode / dst_mode).
#define RF_ROWS_IDENTITY 0  // row i
#define RF_ROWS_DEVICE 1    // src_rows[i] / dst_rows[i], int32 in device memory
#define RF_ROWS_INLINE 2    // src_inline[i] / dst_inline[i]

// model/rows.hip: dst row d(i) = convert(src row s(i)), i < rows. Embedding
// lookup, KV cache append (destination = cache rows) and gather (source =
// cache rows), dtype conversion of attention inputs and outputs, logits row
// selection, bias broadcast (src_stride 0).
struct RfCopyRowsParams {
    const void* src;
    void* dst;
    const int* src_rows;        // RF_ROWS_DEVICE only
    const int* dst_rows;
    long long src_stride;       // elements between consecutive src rows (0: every row reads row 0)
    long long dst_stride;
    int rows;
    int width;                  // elements copied per row
    int src_mode;               // RF_ROWS_*
    int dst_mode;
    int src_inline[RF_INLINE_ROWS];
    int dst_inline[RF_INLINE_ROWS];
};

// model/rows.hip: dst[i] = words[i], i < count: small host data (row
// indices, RoPE tables) carried to the device in the launch itself.
struct RfPutWordsParams {
    unsigned int* dst;
    int count;
    int reserved;
    unsigned int words[RF_PUT_WORDS];
};

// model/rope.hip: rotates x [tokens, heads, head_dim] (DTYPE) in place with
// a host-computed f32 table cos_sin [tokens][streams * pairs][2] = (cos, sin).
struct RfRopeParams {
    void* x;
    const float* cos_sin;
    long long token_stride;     // elements between tokens of x
    int tokens;
    int heads;
    int head_dim;
    int pairs;                  // rotated pairs per segment (segment width / 2)
    int streams;                // segments: 1, or 2 for GLM's 2D positions
    int interleaved;            // 0: pairs (i, i + pairs); 1: (2i, 2i + 1)
};

// model/dense.hip rms_norm: out[r] = weight * n(x[r] / sqrt(mean(x[r]^2) + eps)),
// n = rounding to DTYPE (transformers rounds the normalized row to the
// model dtype before the weight). With `residual` set, first
// x[r] = n(x[r] + residual[r]) is stored back (the residual add fused
// with the next norm).
struct RfRmsNormParams {
    void* x;
    const void* residual;       // null: no add
    const void* weight;
    void* out;
    int rows;
    int width;
    float eps;
    int reserved;
};

// model/dense.hip: out[r, c] = n(n(silu(gate[r, c])) * up[r, c]); gate and
// up rows are in_stride apart (2 * width for a fused [gate; up] row).
struct RfSwigluParams {
    const void* gate;
    const void* up;
    void* out;
    long long in_stride;
    int rows;
    int width;
};

// model/dense.hip: x[r, c] = n(x[r, c] + y[r % y_rows, c]).
struct RfAddParams {
    void* x;
    const void* y;
    int rows;
    int width;
    int y_rows;
    int reserved;
};

// model/dense.hip argmax_partial + argmax_finish: out[r] = index of the
// largest x[r, c] (the first on ties, NaN never wins; 0 for an all-NaN row),
// as an f32 (exact below 2^24). Each row is split into `chunks` column
// ranges; partial holds 2 * rows * chunks floats (best values, then their
// indices as int bits).
struct RfArgmaxParams {
    const void* x;
    float* out;
    float* partial;
    int rows;
    int width;
    int chunks;
    int reserved;
};
