// The decoder's element-wise and row-wise f32 kernels: RMSNorm, SwiGLU and
// broadcast add (residuals and biases). The matrix products go through the
// driver's GEMM.
#include "rf/platform.h"
#include "rf/reduce.h"
#include "rf/model_params.h"

#if defined(RF_HIP_HEADER_FREE)
RF_DEVICE float rf_sqrt(float x) { return __builtin_sqrtf(x); }
#else
RF_DEVICE float rf_sqrt(float x) { return sqrtf(x); }
#endif

// One block per row; the mean square is a block-wide sum.
RF_KERNEL void rms_norm(RfRmsNormParams prm) {
    __shared__ float scratch[1024 / RF_WARP_SIZE];
    const long long row = blockIdx.x;
    const float* x = prm.x + row * prm.width;
    float* out = prm.out + row * prm.width;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < prm.width; c += blockDim.x) sq += x[c] * x[c];
    const float total = rf_block_sum(sq, scratch);
    const float inv = 1.0f / rf_sqrt(total / (float)prm.width + prm.eps);
    for (int c = threadIdx.x; c < prm.width; c += blockDim.x) out[c] = (x[c] * inv) * prm.weight[c];
}

RF_KERNEL void swiglu(RfSwigluParams prm) {
    const long long total = (long long)prm.rows * prm.width;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long r = e / prm.width, c = e % prm.width;
        const float g = prm.gate[r * prm.in_stride + c];
        prm.out[e] = g / (1.0f + expf(-g)) * prm.up[r * prm.in_stride + c];
    }
}

RF_KERNEL void add_rows(RfAddParams prm) {
    const long long total = (long long)prm.rows * prm.width;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long r = e / prm.width, c = e % prm.width;
        prm.x[e] += prm.y[(r % prm.y_rows) * prm.width + c];
    }
}
