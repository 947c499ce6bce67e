// How fast can any kernel read B bytes from device memory, called back to
// back like a decode call? The ceiling a decode kernel that reads the same
// K/V bytes can approach (docs/perf.md, decode5). Each call reads one of
// enough copies (>= 256 MiB in all) that L2 never holds its data, with
// 16-byte loads, four in flight per thread, a grid of SMs x blocks-per-SM
// blocks; the sums go to a scratch word so that the loads stay. Timed
// like bench_decode: `calls` back-to-back launches between two events,
// median of `repeats`; with --pdl each launch may start while the previous
// one finishes (programmatic dependent launch, as flash-decode launches).
//
//   nvcc -O3 -arch=sm_90 -o read_ceiling scripts/read_ceiling.cu
//   ./read_ceiling 33554432 268435456     # bytes per call; prints JSON lines
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                     \
    do {                                                                             \
        cudaError_t e = (x);                                                         \
        if (e != cudaSuccess) {                                                      \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

__global__ void read_all(const uint4* __restrict__ src, size_t n16, unsigned* sink, int pdl) {
    if (pdl) {
        asm volatile("griddepcontrol.wait;\n" ::: "memory");
        asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    }
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned acc = 0;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = __ldcs(src + i), b = __ldcs(src + i + stride);
        const uint4 c = __ldcs(src + i + 2 * stride), d = __ldcs(src + i + 3 * stride);
        acc ^= a.x ^ a.w ^ b.x ^ b.w ^ c.x ^ c.w ^ d.x ^ d.w;
    }
    for (; i < n16; i += stride) acc ^= __ldcs(src + i).y;
    if (acc == 0x9e3779b9u) *sink = acc;  // practically never: keeps the loads
}

int main(int argc, char** argv) {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int calls = 50, repeats = 7;
    unsigned* sink;
    CHECK(cudaMalloc(&sink, 4));
    for (int a = 1; a < argc; ++a) {
        const size_t bytes = strtoull(argv[a], nullptr, 10) / 16 * 16;
        const size_t copies = std::max<size_t>(1, std::min<size_t>(64, ((size_t)256 << 20) / bytes + 1));
        std::vector<uint4*> bufs(copies);
        for (auto& b : bufs) {
            CHECK(cudaMalloc(&b, bytes));
            CHECK(cudaMemset(b, 1, bytes));
        }
        for (int pdl = 0; pdl <= 1; ++pdl)
            for (int per_sm : {1, 2, 4, 8})
                for (int threads : {256, 512, 1024}) {
                    cudaLaunchConfig_t cfg = {};
                    cfg.gridDim = dim3(sms * per_sm);
                    cfg.blockDim = dim3(threads);
                    cudaLaunchAttribute attr;
                    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
                    attr.val.programmaticStreamSerializationAllowed = pdl;
                    cfg.attrs = &attr;
                    cfg.numAttrs = 1;
                    auto launch = [&](int i) {
                        CHECK(cudaLaunchKernelEx(&cfg, read_all, (const uint4*)bufs[i % copies], bytes / 16, sink, pdl));
                    };
                    for (int i = 0; i < 5; ++i) launch(i);
                    std::vector<float> ms;
                    cudaEvent_t e0, e1;
                    CHECK(cudaEventCreate(&e0));
                    CHECK(cudaEventCreate(&e1));
                    for (int r = 0; r < repeats; ++r) {
                        CHECK(cudaEventRecord(e0));
                        for (int i = 0; i < calls; ++i) launch(i);
                        CHECK(cudaEventRecord(e1));
                        CHECK(cudaEventSynchronize(e1));
                        float t = 0;
                        CHECK(cudaEventElapsedTime(&t, e0, e1));
                        ms.push_back(t / calls);
                    }
                    std::sort(ms.begin(), ms.end());
                    const double us = 1e3 * ms[repeats / 2];
                    printf("{\"bytes\": %zu, \"pdl\": %d, \"blocks_per_sm\": %d, \"threads\": %d, \"us\": %.3f, "
                           "\"gbps\": %.1f}\n",
                           bytes, pdl, per_sm, threads, us, bytes / us / 1e3);
                    CHECK(cudaEventDestroy(e0));
                    CHECK(cudaEventDestroy(e1));
                }
        for (auto b : bufs) CHECK(cudaFree(b));
    }
    CHECK(cudaFree(sink));
    return 0;
}
