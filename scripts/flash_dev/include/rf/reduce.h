// TEMPORARY stand-in for the lead's kernels/include/rf/reduce.h (split of
// kernels/prelude.h), used only by the flash_dev harness until main has it.
#pragma once
#include "rf/platform.h"

// Warp-level butterfly reductions. CUDA needs the participation mask; HIP's
// __shfl_xor works on the whole wavefront.
RF_DEVICE float rf_shfl_xor(float v, int lane_mask) {
#if defined(RF_HIP)
    return __shfl_xor(v, lane_mask, RF_WARP_SIZE);
#else
    return __shfl_xor_sync(0xffffffffu, v, lane_mask, RF_WARP_SIZE);
#endif
}

RF_DEVICE float rf_warp_max(float v) {
    for (int o = RF_WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, rf_shfl_xor(v, o));
    return v;
}

RF_DEVICE float rf_warp_sum(float v) {
    for (int o = RF_WARP_SIZE / 2; o > 0; o >>= 1) v += rf_shfl_xor(v, o);
    return v;
}

// Block-wide reductions through shared memory `scratch` (one float per warp,
// at least blockDim.x / RF_WARP_SIZE entries). Every thread gets the result.
RF_DEVICE float rf_block_max(float v, float* scratch) {
    const int lane = threadIdx.x % RF_WARP_SIZE, warp = threadIdx.x / RF_WARP_SIZE;
    const int warps = (blockDim.x + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
    v = rf_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < warps; ++w) r = fmaxf(r, scratch[w]);
    return r;
}

RF_DEVICE float rf_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % RF_WARP_SIZE, warp = threadIdx.x / RF_WARP_SIZE;
    const int warps = (blockDim.x + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
    v = rf_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < warps; ++w) r += scratch[w];
    return r;
}
