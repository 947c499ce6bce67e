// Device helpers of the fused attention kernel (kernels/flash/fwd.hip):
// fast math with the rounding the kernel relies on, global -> shared copies
// (cp.async on NVIDIA sm_80+), the row-tile loader, warp / block votes and
// the non-finite tests used by the NaN/Inf handling (docs/semantics.md).
#pragma once
#include "rf/flash/config.h"

namespace rf_flash {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float RESCALE_SLACK = 8.0f;
constexpr float LN2 = 0.6931471805599453f;

RF_DEVICE float exp2_fast(float x) {
#if defined(RF_CUDA)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#else
    return __builtin_exp2f(x);
#endif
}

RF_DEVICE float log2_acc(float x) {
#if defined(RF_CUDA)
    return log2f(x);
#else
    return __builtin_log2f(x);
#endif
}

// a / b without the IEEE slow path (a call and a branch per division on
// NVIDIA, which wrecks register allocation in the unrolled tile code).
RF_DEVICE float fast_div(float a, float b) {
#if defined(RF_CUDA)
    return __fdividef(a, b);
#else
    return a / b;
#endif
}

RF_DEVICE float fma_f(float a, float b, float c) {
#if defined(RF_CUDA)
    return fmaf(a, b, c);
#else
    return __builtin_fmaf(a, b, c);
#endif
}

// 1 / x correctly rounded (the final normalization, once per row).
RF_DEVICE float recip(float x) {
#if defined(RF_CUDA)
    return __frcp_rn(x);
#else
    return 1.0f / x;
#endif
}

// tanh from exp2: saturates to +-1, keeps NaN; absolute error ~1e-7.
RF_DEVICE float tanh_f(float x) {
    const float e = exp2_fast(-2.0f * LOG2E * (x < 0.0f ? -x : x));
    const float t = fast_div(1.0f - e, 1.0f + e);
    return x < 0.0f ? -t : t;
}

RF_DEVICE long long min_ll(long long a, long long b) { return a < b ? a : b; }
RF_DEVICE long long max_ll(long long a, long long b) { return a > b ? a : b; }

// ------------------------------------------------------ global -> shared
struct alignas(16) U32x4 {
    unsigned x, y, z, w;
};

// 16 bytes from global to shared; `ok == false` writes zeros (rows past the
// end of the sequence) without reading.
RF_DEVICE void copy16(rf_elem* dst, const rf_elem* src, bool ok) {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(ok ? 16 : 0));
#else
    U32x4 v = {0u, 0u, 0u, 0u};
    if (ok) v = *reinterpret_cast<const U32x4*>(src);
    *reinterpret_cast<U32x4*>(dst) = v;
#endif
}

RF_DEVICE void copy_commit() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N committed copy groups are still in flight.
template <int N>
RF_DEVICE void copy_wait() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Hides a value from the optimizer, so that what is computed from it is
// recomputed where it is used instead of being hoisted out of the tile loop
// into registers that then live across the whole loop (and spill).
template <class T>
RF_DEVICE T opaque(T x) {
#if defined(RF_CUDA)
    asm volatile("" : "+l"(x));
#endif
    return x;
}

RF_DEVICE unsigned opaque_u32(unsigned x) {
#if defined(RF_CUDA)
    asm volatile("" : "+r"(x));
#endif
    return x;
}

// ROWS x D elements from `g` (row stride `stride` elements) into a tile.
// Thread t < RS * CPR copies chunk t % CPR of rows t / CPR + i * RS (RS rows
// per pass): its shared address is a base plus constants and its global
// address a pointer stepping by a fixed amount.
template <int ROWS>
RF_DEVICE void load_rows(rf_elem* s, const rf_elem* g, long long stride, int rows_valid) {
    constexpr int CPR = KVT::CPR;
    if constexpr (CPR > THREADS) {
        // Rows wider than the block (f32 d 256 with one AMD wave): plain loop.
        for (int c = (int)threadIdx.x; c < ROWS * CPR; c += THREADS) {
            const int row = c / CPR, col = (c % CPR) * VEC;
            const bool ok = row < rows_valid;
            copy16(s + KVT::off(row, col), g + (ok ? row * stride + col : 0), ok);
        }
        return;
    }
    constexpr int RS = CPR > THREADS ? 1 : THREADS / CPR;
    if (THREADS % CPR != 0 && (int)threadIdx.x >= RS * CPR) return;
    const int row0 = (int)threadIdx.x / CPR, col = ((int)threadIdx.x % CPR) * VEC;
    rf_elem* dst = s + KVT::off(row0, col);
    const rf_elem* src = g + row0 * stride + col;
    const long long step = opaque(RS * stride);
    if (rows_valid >= ROWS) {
        // Whole tile inside the sequence (all but the last tile): no predicates.
#pragma unroll
        for (int i = 0; i < (ROWS + RS - 1) / RS; ++i) {
            if (ROWS % RS == 0 || row0 + i * RS < ROWS) copy16(dst + i * RS * KVT::STRIDE, src, true);
            src += step;
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < (ROWS + RS - 1) / RS; ++i) {
        if (ROWS % RS == 0 || row0 + i * RS < ROWS) {
            const bool ok = row0 + i * RS < rows_valid;
            copy16(dst + i * RS * KVT::STRIDE, ok ? src : g, ok);
        }
        src += step;
    }
}

// Whether `pred` holds on any lane of the warp.
RF_DEVICE bool warp_any(bool pred) {
#if defined(RF_CUDA)
    return __any_sync(0xffffffffu, pred);
#else
    return rf_warp_max(pred ? 1.0f : 0.0f) > 0.5f;
#endif
}

// Barrier for shared memory written and read by the same warp (P staging).
RF_DEVICE void warp_smem_sync() {
#if defined(RF_CUDA)
    __syncwarp();
#else
    __syncthreads();  // every wave runs the same tile loop: uniform
#endif
}

// a * b rounded to f32 and never fused into a following add: the exact
// exponent path (huge logits) needs max(fl(s c)) == fl(max(s) c) exactly.
RF_DEVICE float mul_rn(float a, float b) {
#if defined(RF_CUDA)
    return __fmul_rn(a, b);
#else
#pragma clang fp contract(off)
    return a * b;
#endif
}

// Whether `pred` holds on any thread of the block; also a full barrier.
RF_DEVICE bool block_any(bool pred) {
#if defined(RF_CUDA)
    return __syncthreads_or(pred ? 1 : 0) != 0;
#else
    // No __syncthreads_or without the HIP headers: one flag in LDS. The
    // last barrier keeps the next call's reset behind every read.
    __shared__ int rf_block_any_flag;
    if (threadIdx.x == 0) rf_block_any_flag = 0;
    __syncthreads();
    if (pred) rf_block_any_flag = 1;
    __syncthreads();
    const bool any = rf_block_any_flag != 0;
    __syncthreads();
    return any;
#endif
}

// The keys of tile n0.. that the query at key position `pos` sees, as one
// interval [first, last] of tile columns (rf_visible of rf/mask.h is the
// test j >= pos - left && j <= pos + right, each side unbounded when
// negative), clamped to [-1, BN]; first > last when none is visible.
RF_DEVICE void key_interval(long long pos, int n0, long long left, long long right, int seq_kv, int& first, int& last) {
    const long long a = left >= 0 ? pos - left : 0;
    long long z = right >= 0 ? pos + right : (long long)seq_kv - 1;
    z = min_ll(z, (long long)seq_kv - 1);
    first = (int)max_ll(min_ll(a - n0, BN), -1);
    last = (int)max_ll(min_ll(z - n0, BN), -1);
}

// ------------------------------------------------------------ non-finite
RF_DEVICE bool nonfinite_f(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }

// Inf / NaN tests on raw 32-bit words of elements, two integer operations
// per word: with E the exponent mask of each element, (w & E) + (E's lowest
// bit) carries into the bit above E's top exactly when all exponent bits of
// that element are set. No carry crosses into the next 16-bit element
// (0x7f80 + 0x0080 = 0x8000). Accumulate with |=, test with nonfinite_seen.
#if RF_DTYPE == RF_F32
constexpr unsigned NF_MASK = 0x7f800000u, NF_ADD = 0x00800000u, NF_TOP = 0x80000000u;
#elif RF_DTYPE == RF_F16
constexpr unsigned NF_MASK = 0x7c007c00u, NF_ADD = 0x04000400u, NF_TOP = 0x80008000u;
#else
constexpr unsigned NF_MASK = 0x7f807f80u, NF_ADD = 0x00800080u, NF_TOP = 0x80008000u;
#endif
RF_DEVICE unsigned word_nonfinite_bits(unsigned w) { return (w & NF_MASK) + NF_ADD; }
RF_DEVICE unsigned chunk_nonfinite_bits(const U32x4& c) {
    return word_nonfinite_bits(c.x) | word_nonfinite_bits(c.y) | word_nonfinite_bits(c.z) | word_nonfinite_bits(c.w);
}
RF_DEVICE bool nonfinite_seen(unsigned bits) { return (bits & NF_TOP) != 0; }

// Whether the 16-byte chunks this thread copied with load_rows<ROWS> into
// `s` hold an Inf or NaN. Reads only the thread's own copies, so it runs
// right after copy_wait, before the barrier that publishes the tile (which
// then doubles as the block-wide vote, block_any).
template <int ROWS>
RF_DEVICE bool own_rows_nonfinite(const rf_elem* s) {
    constexpr int CPR = KVT::CPR;
    unsigned bits = 0;
    if constexpr (CPR > THREADS) {
        for (int c = (int)threadIdx.x; c < ROWS * CPR; c += THREADS)
            bits |= chunk_nonfinite_bits(*reinterpret_cast<const U32x4*>(s + KVT::off(c / CPR, (c % CPR) * VEC)));
        return nonfinite_seen(bits);
    }
    constexpr int RS = CPR > THREADS ? 1 : THREADS / CPR;
    if (THREADS % CPR != 0 && (int)threadIdx.x >= RS * CPR) return false;
    const int row0 = (int)threadIdx.x / CPR, col = ((int)threadIdx.x % CPR) * VEC;
#pragma unroll
    for (int i = 0; i < (ROWS + RS - 1) / RS; ++i)
        if (ROWS % RS == 0 || row0 + i * RS < ROWS)
            bits |= chunk_nonfinite_bits(*reinterpret_cast<const U32x4*>(s + KVT::off(row0 + i * RS, col)));
    return nonfinite_seen(bits);
}

}  // namespace rf_flash
