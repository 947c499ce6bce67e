// Fused attention forward (FlashAttention-2 scheme), one source for NVIDIA
// (mma.sync) and AMD (MFMA / WMMA / SIMT) through the tile API of
// rf/mma/mma.h. docs/kernels.md explains the design.
//
// A block owns BLOCK_M query rows of one (batch, query head); each warp owns
// MT strips of 16 rows. The block walks the K/V tiles its rows can see
// (BLOCK_N keys each), staged in shared memory STAGES deep (cp.async on
// NVIDIA), computes S = Q K^T in registers, keeps the running row max and
// sum (online softmax, exp2 domain), and accumulates O += P V with P taken
// straight from the S registers. O is normalized once at the end.
//
// Specialization (compile-time defines):
//   RF_DTYPE      RF_F32 | RF_F16 | RF_BF16 (Q, K, V and O share it)
//   RF_HEAD_DIM   32, 64, 96, 128 or 256
//   RF_F32_MODE   (f32 only) RF_F32_TF32X3 (default on sm_80+), RF_F32_SIMT
//                 (default elsewhere), RF_F32_TF32 (opt-in, tf32 accuracy)
//   RF_FLASH_BM / RF_FLASH_BN / RF_FLASH_WARPS / RF_FLASH_STAGES
//                 tuning overrides for the development harness only
// The mask, window, soft-cap and GQA grouping are run-time parameters.
//
// Launch: grid (ceil(seq_q / BLOCK_M), heads_q, batch), block WARPS *
// RF_WARP_SIZE threads, dynamic shared memory SMEM_BYTES. The module exports
// these as `rf_flash_fwd_launch` = {BLOCK_M, threads, SMEM_BYTES, BLOCK_N}.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
#include "rf/flash_params.h"
#include "rf/mma/mma.h"

#ifndef RF_HEAD_DIM
#error "RF_HEAD_DIM must be defined"
#endif
#if RF_HEAD_DIM != 32 && RF_HEAD_DIM != 64 && RF_HEAD_DIM != 96 && RF_HEAD_DIM != 128 && RF_HEAD_DIM != 256
#error "RF_HEAD_DIM must be 32, 64, 96, 128 or 256"
#endif

// ------------------------------------------------------------ tile config
#if defined(RF_CUDA) && RF_MMA_FLAVOUR == RF_MMA_SYNC && RF_DTYPE != RF_F32
// 16-bit tensor cores, measured on an H100 (scripts/flash_dev/NOTES.md):
// 4 warps x 2 strips; BLOCK_N 64 (FA2's 128 x 64) for d = 96, 128 and 128
// for d <= 64; d = 256: 8 warps x 1 strip.
#define RF_CFG_BM 128
#define RF_CFG_BN (RF_HEAD_DIM <= 64 ? 128 : 64)
#define RF_CFG_WARPS (RF_HEAD_DIM == 256 ? 8 : 4)
#define RF_CFG_STAGES 2
#elif defined(RF_CUDA) && RF_MMA_FLAVOUR == RF_MMA_SYNC
// f32 split tf32: 8 warps x 1 strip (the operand splits are per warp).
#define RF_CFG_BM (RF_HEAD_DIM <= 128 ? 128 : 64)
#define RF_CFG_BN (RF_HEAD_DIM <= 64 ? 64 : 32)
#define RF_CFG_WARPS (RF_HEAD_DIM <= 128 ? 8 : 4)
#define RF_CFG_STAGES 2
#elif defined(RF_CUDA)
// f32 SIMT: one strip per warp.
#define RF_CFG_BM 64
#define RF_CFG_BN (RF_HEAD_DIM <= 64 ? 64 : 32)
#define RF_CFG_WARPS 4
#define RF_CFG_STAGES 2
#else
// AMD: 64 KB of LDS per workgroup, no asynchronous copies (one stage).
#if RF_DTYPE == RF_F32 && RF_HEAD_DIM == 256
#define RF_CFG_WARPS 1
#else
#define RF_CFG_WARPS 4
#endif
#define RF_CFG_BM (16 * RF_CFG_WARPS)
#if RF_DTYPE == RF_F32
#define RF_CFG_BN (RF_HEAD_DIM <= 64 ? 32 : 16)
#else
#define RF_CFG_BN (RF_HEAD_DIM <= 128 ? 32 : 16)
#endif
#define RF_CFG_STAGES 1
#endif

#ifndef RF_FLASH_BM
#define RF_FLASH_BM RF_CFG_BM
#endif
#ifndef RF_FLASH_BN
#define RF_FLASH_BN RF_CFG_BN
#endif
#ifndef RF_FLASH_WARPS
#define RF_FLASH_WARPS RF_CFG_WARPS
#endif
#ifndef RF_FLASH_STAGES
#define RF_FLASH_STAGES RF_CFG_STAGES
#endif

namespace rf_flash {

constexpr int D = RF_HEAD_DIM;
constexpr int WARPS = RF_FLASH_WARPS;
constexpr int THREADS = WARPS * RF_WARP_SIZE;
constexpr int VEC = 16 / (int)sizeof(rf_elem);  // elements per 16-byte chunk

// Shared-memory layout of a tile with COLS elements per row: rows padded by
// one 16-byte chunk. With an even number of chunks per row the stride is odd
// in chunks, so the 8 rows one ldmatrix phase reads (same column) fall in 8
// different 16-byte bank groups: conflict-free for ldmatrix (.trans too),
// cp.async fills and the tf32 V reads. Unlike an XOR swizzle, the address of
// (row0 + i, col0 + j) is the lane's base plus a constant, which the compiler
// folds into the instruction's immediate offset: no per-tile address
// registers (an XOR swizzle cost ~70 live registers and spills here).
template <int COLS>
struct Tile {
    static constexpr int CPR = COLS / VEC;  // 16-byte chunks per row
    static_assert(CPR % 2 == 0, "rows must have an even number of 16-byte chunks");
    static constexpr int STRIDE = (CPR + 1) * VEC;
    static RF_DEVICE int off(int row, int col) { return row * STRIDE + col; }
};

// f32 on tensor cores (split tf32): K and V are split into big and small
// tf32 parts once per tile by the whole block, instead of by every warp at
// every fragment load. K is split in place (+ a small tile); V is staged
// transposed, [head_dim][key], so that its fragments come by ldmatrix too,
// with the keys in the order rf_c_to_a gives P (rf_tf32_key_slot).
#if RF_MMA_FLAVOUR == RF_MMA_SYNC && RF_DTYPE == RF_F32
#define RF_FLASH_PRESPLIT 1
#else
#define RF_FLASH_PRESPLIT 0
#endif

// Shared memory of a (BLOCK_M, BLOCK_N, STAGES) tiling: Q (reused to stage
// O), K and V per stage, and P staging where P cannot stay in registers.
// With the presplit, raw V lands in the V^T big tile before it is split.
template <int bm, int bn, int stages>
struct SmemLayout {
    static constexpr int KS = Tile<D>::STRIDE;
    static constexpr int VT = D * Tile<bn>::STRIDE > bn * KS ? D * Tile<bn>::STRIDE : bn * KS;
    static constexpr int K_STAGE = bn * KS * (RF_FLASH_PRESPLIT ? 2 : 1);
    static constexpr int V_STAGE = RF_FLASH_PRESPLIT ? 2 * VT : bn * KS;
    static constexpr int P = RF_MMA_C_TO_A ? 0 : bm * Tile<bn>::STRIDE;
    static constexpr int bytes = (int)sizeof(rf_elem) * (bm * KS + stages * (K_STAGE + V_STAGE) + P);
};
template <int bm, int bn, int stages>
struct SmemBytes {
    static constexpr int value = SmemLayout<bm, bn, stages>::bytes;
};

// What one block may have: 64 KB of LDS on AMD; 227 KB on sm_90, 163 KB on
// sm_80 / sm_87, 99 KB on the other sm_8x / sm_12x parts.
#if defined(RF_HIP)
constexpr int SMEM_LIMIT = 64 * 1024;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDA_ARCH__ < 1000
constexpr int SMEM_LIMIT = 227 * 1024;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 800 || __CUDA_ARCH__ == 870 || __CUDA_ARCH__ >= 1000 && __CUDA_ARCH__ < 1200)
constexpr int SMEM_LIMIT = 163 * 1024;
#else
constexpr int SMEM_LIMIT = 99 * 1024;
#endif

// The preferred tiling shrinks to fit the target: one stage first, then one
// 16-row strip per warp, then 16 keys per tile.
constexpr int STAGES =
    SmemBytes<RF_FLASH_BM, RF_FLASH_BN, RF_FLASH_STAGES>::value <= SMEM_LIMIT ? RF_FLASH_STAGES : 1;
constexpr int BM = SmemBytes<RF_FLASH_BM, RF_FLASH_BN, STAGES>::value <= SMEM_LIMIT ? RF_FLASH_BM : 16 * WARPS;
constexpr int BN = SmemBytes<BM, RF_FLASH_BN, STAGES>::value <= SMEM_LIMIT ? RF_FLASH_BN : 16;
constexpr int MT = BM / (16 * WARPS);  // 16-row strips per warp
constexpr int SMEM_BYTES = SmemBytes<BM, BN, STAGES>::value;
static_assert(MT >= 1 && BM == 16 * WARPS * MT, "BLOCK_M must be 16 * warps * strips");
static_assert(BN % 16 == 0 && STAGES >= 1, "bad BLOCK_N / STAGES");
static_assert(SMEM_BYTES <= SMEM_LIMIT, "tile config needs more shared memory than the target has");

#if RF_MMA_FLAVOUR == RF_MMA_SYNC && RF_DTYPE != RF_F32
// One strip per warp: Q fragments stay in registers (D/16 x 4 registers);
// with two strips they are re-read from shared memory (register budget).
constexpr bool Q_IN_REGS = (MT == 1 && D <= 128);
#else
constexpr bool Q_IN_REGS = false;
#endif

using QT = Tile<D>;   // Q, and O staging
using KVT = Tile<D>;  // K and V
using PT = Tile<BN>;  // P staging (flavours without RF_MMA_C_TO_A)

using VTT = Tile<BN>;  // V^T (presplit f32): head-dim rows of BN keys
using LAYOUT = SmemLayout<BM, BN, STAGES>;
constexpr int Q_ELEMS = BM * QT::STRIDE;
constexpr int K_STAGE = LAYOUT::K_STAGE;
constexpr int V_STAGE = LAYOUT::V_STAGE;
constexpr int VT_ELEMS = LAYOUT::VT;

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

// Tensor cores add each product into the accumulator with truncation, so a
// long chain of accumulations drifts (measured: 8e-6 relative on f32 inputs
// with split tf32, vs 7e-7 for f32 FMAs). For f32 the kernel therefore lets
// the matrix unit accumulate ACC_K of the head dim (QK^T) or one key tile
// (PV) from zero and adds that into the running sums with f32 adds.
constexpr bool SPLIT_ACC = RF_DTYPE == RF_F32 && RF_MMA_FLAVOUR != RF_MMA_SIMT;
#ifndef RF_FLASH_ACC_K
#define RF_FLASH_ACC_K 32
#endif
constexpr int ACC_KK = (SPLIT_ACC && RF_FLASH_ACC_K / 16 < D / 16) ? RF_FLASH_ACC_K / 16 : D / 16;
static_assert((D / 16) % ACC_KK == 0, "RF_FLASH_ACC_K must divide the head dim");

// The A operand of P V for strip mt, keys 16 ku.. of the tile: from the S
// registers where the layout allows, else from the warp's P staging tile.
RF_DEVICE void p_operand(rf_frag_a& a, const rf_frag_c (&s)[MT][BN / 16], const rf_elem* p_s, int mt, int ku) {
#if RF_MMA_C_TO_A
    (void)p_s;
    rf_c_to_a(a, s[mt][ku]);
#else
    (void)s;
    rf_load_a(a, p_s, [&](int r, int c) { return PT::off(16 * mt + r, 16 * ku + c); });
#endif
}

#if RF_FLASH_PRESPLIT
// Splits the landed tile of one stage (all threads): K in place plus its
// small part at kb + BN * KS; raw V ([key][d] at vtb) into V^T big at vtb
// and small at vtb + VT_ELEMS. Ends with the V^T tiles written, before the
// caller's barrier.
RF_DEVICE void presplit_tile(rf_elem* kb, rf_elem* vtb) {
    constexpr int CPR = KVT::CPR;
    constexpr int CHUNKS = BN * CPR;
    constexpr int PER = (CHUNKS + THREADS - 1) / THREADS;
    float vraw[PER][4];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = (int)threadIdx.x + i * THREADS;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int row = c / CPR, col = (c % CPR) * VEC;
            U32x4 kv = *reinterpret_cast<const U32x4*>(kb + KVT::off(row, col));
            U32x4 ks;
            rf_split_tf32(__uint_as_float(kv.x), kv.x, ks.x);
            rf_split_tf32(__uint_as_float(kv.y), kv.y, ks.y);
            rf_split_tf32(__uint_as_float(kv.z), kv.z, ks.z);
            rf_split_tf32(__uint_as_float(kv.w), kv.w, ks.w);
            *reinterpret_cast<U32x4*>(kb + KVT::off(row, col)) = kv;
            *reinterpret_cast<U32x4*>(kb + BN * KVT::STRIDE + KVT::off(row, col)) = ks;
            const U32x4 vv = *reinterpret_cast<const U32x4*>(vtb + KVT::off(row, col));
            vraw[i][0] = __uint_as_float(vv.x);
            vraw[i][1] = __uint_as_float(vv.y);
            vraw[i][2] = __uint_as_float(vv.z);
            vraw[i][3] = __uint_as_float(vv.w);
        }
    }
    __syncthreads();  // raw V is read everywhere before V^T overwrites it
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = (int)threadIdx.x + i * THREADS;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int key = c / CPR, col = (c % CPR) * VEC;
            const int slot = rf_tf32_key_slot(key);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                unsigned big, small;
                rf_split_tf32(vraw[i][e], big, small);
                vtb[VTT::off(col + e, slot)] = __uint_as_float(big);
                vtb[VT_ELEMS + VTT::off(col + e, slot)] = __uint_as_float(small);
            }
        }
    }
}
#endif

struct RowState {
    float m[MT][RF_MMA_ROWS];  // running max of the (log2-scaled) logits
    float l[MT][RF_MMA_ROWS];  // this lane's part of the running sum
};

}  // namespace rf_flash

using namespace rf_flash;

extern "C" __device__ const int rf_flash_fwd_launch[4] = {BM, THREADS, SMEM_BYTES, BN};

#if defined(RF_CUDA)
#define RF_FLASH_BOUNDS __launch_bounds__(THREADS, 1)
#else
#define RF_FLASH_BOUNDS __attribute__((amdgpu_flat_work_group_size(1, THREADS)))
#endif

extern "C" __global__ void RF_FLASH_BOUNDS rf_flash_fwd(const rf_flash_params p) {
    extern __shared__ __attribute__((aligned(16))) unsigned char rf_smem_raw[];
    rf_elem* const sQ = reinterpret_cast<rf_elem*>(rf_smem_raw);
    rf_elem* const sK = sQ + Q_ELEMS;
    rf_elem* const sV = sK + STAGES * K_STAGE;
    rf_elem* const sP = sV + STAGES * V_STAGE;

    const int warp = (int)threadIdx.x / RF_WARP_SIZE;
    // Which tile this block owns. Without a right bound every tile costs the
    // same: m is the fastest index, so the blocks of one head run together
    // and share K/V in L2. With one (causal), the last query tiles see the
    // most keys: blocks are handed out longest first over the whole grid
    // (all heads' last tiles, then the next...), so the short ones fill the
    // tail. Blocks start in linear (x, y, z) order; the grid keeps its shape.
    int m_block, hq, b;
#ifndef RF_FLASH_GLOBAL_ORDER
#define RF_FLASH_GLOBAL_ORDER 1  // 0: longest first within each head only
#endif
    if (RF_FLASH_GLOBAL_ORDER && p.window_right >= 0) {
        const long long hb_count = (long long)gridDim.y * gridDim.z;
        const long long lin = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
        const long long hb = lin % hb_count;
        m_block = (int)(gridDim.x - 1 - lin / hb_count);
        hq = (int)(hb % gridDim.y);
        b = (int)(hb / gridDim.y);
    } else {
        m_block = p.window_right >= 0 ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
        hq = (int)blockIdx.y;
        b = (int)blockIdx.z;
    }
    const int hk = hq / (p.heads_q / p.heads_kv);
    const int m0 = m_block * BM;
    const long long shift = rf_query_pos(0, p.seq_q, p.seq_kv);  // pos = row + shift (rf/mask.h)
    const int m_last = (int)min_ll(m0 + BM, p.seq_q) - 1;

    // Key tiles the block can see: [pos_min - left, pos_max + right].
    long long lo = 0, hi = p.seq_kv;
    if (p.window_left >= 0) lo = max_ll(lo, m0 + shift - p.window_left);
    if (p.window_right >= 0) hi = min_ll(hi, m_last + shift + p.window_right + 1);
    const int n_begin = (int)(min_ll(lo, p.seq_kv) / BN);
    const int n_end = hi > lo ? (int)((hi + BN - 1) / BN) : n_begin;

    const rf_elem* q_g = reinterpret_cast<const rf_elem*>(p.q) + b * p.q_batch_stride + m0 * p.q_seq_stride +
                         hq * p.q_head_stride;
    const rf_elem* k_g = reinterpret_cast<const rf_elem*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
    const rf_elem* v_g = reinterpret_cast<const rf_elem*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;

    auto load_kv = [&](int nb, int stage) {
        const int n0 = nb * BN;
        load_rows<BN>(sK + stage * K_STAGE, k_g + n0 * p.k_seq_stride, p.k_seq_stride, p.seq_kv - n0);
        load_rows<BN>(sV + stage * V_STAGE, v_g + n0 * p.v_seq_stride, p.v_seq_stride, p.seq_kv - n0);
    };

    // Prologue: Q and the first STAGES - 1 tiles, one copy group each.
    load_rows<BM>(sQ, q_g, p.q_seq_stride, p.seq_q - m0);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (n_begin + s < n_end) load_kv(n_begin + s, s);
        copy_commit();
    }

    const float scale_log2 = p.scale * LOG2E;
    const bool capped = p.softcap > 0.0f;
    const float cap_in = capped ? p.scale / p.softcap : 0.0f;
    const float cap_out = capped ? p.softcap * LOG2E : 0.0f;
    const bool raw = !capped && scale_log2 > 0.0f;
    const float c_log2 = raw ? scale_log2 : 1.0f;
    // Rows [row_lo, row_hi] of the block's valid rows decide which tiles need
    // per-element masking.
    const long long pos_min = m0 + shift, pos_max = m_last + shift;

    rf_frag_c o[MT][D / 16];
    RowState st;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int du = 0; du < D / 16; ++du)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) o[mt][du].v[r] = 0.0f;
#pragma unroll
        for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
            st.m[mt][sl] = RF_NEG_INF;
            st.l[mt][sl] = 0.0f;
        }
    }
    rf_frag_a qf[Q_IN_REGS ? MT : 1][Q_IN_REGS ? D / 16 : 1];
    const int strip0 = warp * MT * 16;  // first row of this warp, in the block

    for (int nb = n_begin; nb < n_end; ++nb) {
        const int it = nb - n_begin;
        if (STAGES == 1) {
            __syncthreads();  // every warp is done with the previous tile
            load_kv(nb, 0);
            copy_commit();
            copy_wait<0>();
        } else {
            copy_wait<(STAGES >= 2 ? STAGES - 2 : 0)>();
        }
        __syncthreads();
        rf_elem* const k_s = sK + (it % STAGES) * K_STAGE;
        rf_elem* const v_s = sV + (it % STAGES) * V_STAGE;
#if RF_FLASH_PRESPLIT
        presplit_tile(k_s, v_s);
        __syncthreads();
#endif

        if (Q_IN_REGS && it == 0) {
#pragma unroll
            for (int mt = 0; mt < (Q_IN_REGS ? MT : 1); ++mt)
#pragma unroll
                for (int kk = 0; kk < (Q_IN_REGS ? D / 16 : 1); ++kk)
                    rf_load_a(qf[mt][kk], sQ,
                              [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
        }

        // S = Q K^T for this warp's strips.
        rf_frag_c s[MT][BN / 16], acc[MT][BN / 16];  // acc: unused without SPLIT_ACC
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                for (int r = 0; r < RF_MMA_C_REGS; ++r) s[mt][nu].v[r] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            // With SPLIT_ACC: products of ACC_KK k blocks go to `acc` from
            // zero, then one f32 add into S.
            auto& cs = SPLIT_ACC ? acc : s;
            if (SPLIT_ACC && kk % ACC_KK == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                        for (int r = 0; r < RF_MMA_C_REGS; ++r) cs[mt][nu].v[r] = 0.0f;
            }
            rf_frag_a qa[MT];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if (Q_IN_REGS) {
                    qa[mt] = qf[Q_IN_REGS ? mt : 0][Q_IN_REGS ? kk : 0];
                } else {
                    rf_load_a(qa[mt], sQ, [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
                }
            }
#pragma unroll
            for (int nu = 0; nu < BN / 16; ++nu) {
                rf_frag_b kb;
#if RF_FLASH_PRESPLIT
                rf_load_b_nk_split(kb, k_s, k_s + BN * KVT::STRIDE,
                                   [&](int r, int c) { return KVT::off(16 * nu + r, 16 * kk + c); });
#else
                rf_load_b_nk(kb, k_s, [&](int r, int c) { return KVT::off(16 * nu + r, 16 * kk + c); });
#endif
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) rf_mma(cs[mt][nu], qa[mt], kb);
            }
            if (SPLIT_ACC && kk % ACC_KK == ACC_KK - 1) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                        for (int r = 0; r < RF_MMA_C_REGS; ++r) s[mt][nu].v[r] += cs[mt][nu].v[r];
            }
        }

        if (STAGES > 1) {
            // Refill the stage every warp finished with (tile it - 1), after
            // the QK^T products so that they start right after the barrier.
            const int nx = nb + STAGES - 1;
            if (nx < n_end) load_kv(nx, (it + STAGES - 1) % STAGES);
            copy_commit();
        }

        // Logits. Plain scaling keeps S = q.k and folds scale * log2(e) into
        // the exponent's FFMA (one rounding); a soft-cap (or a scale <= 0)
        // maps S to log2 units first. Then the mask (boundary tiles only).
        const int n0 = nb * BN;
        if (!raw) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                    for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                        const float x = s[mt][nu].v[r];
                        s[mt][nu].v[r] = capped ? cap_out * tanh_f(x * cap_in) : x * scale_log2;
                    }
        }
        const bool full = n0 + BN <= p.seq_kv && (p.window_left < 0 || n0 >= pos_max - p.window_left) &&
                          (p.window_right < 0 || n0 + BN - 1 <= pos_min + p.window_right);
        if (!full) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                // The visible keys of each row form one interval [first, last]:
                // rf_visible (rf/mask.h) is the test j >= pos - left &&
                // j <= pos + right, each side unbounded when negative. Columns
                // are tile-relative; the harness checks every mask kind.
                int first[RF_MMA_ROWS], last[RF_MMA_ROWS];
#pragma unroll
                for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
                    const long long pos = m0 + strip0 + 16 * mt + rf_slot_row(sl) + shift;
                    long long a = p.window_left >= 0 ? pos - p.window_left : 0;
                    long long z = p.window_right >= 0 ? pos + p.window_right : (long long)p.seq_kv - 1;
                    z = min_ll(z, (long long)p.seq_kv - 1);
                    first[sl] = (int)max_ll(min_ll(a - n0, BN), -1);
                    last[sl] = (int)max_ll(min_ll(z - n0, BN), -1);
                }
#pragma unroll
                for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                    for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                        const int col = 16 * nu + rf_c_col(r);
                        if (col < first[rf_c_slot(r)] || col > last[rf_c_slot(r)]) s[mt][nu].v[r] = RF_NEG_INF;
                    }
            }
        }

        // Online softmax. The running max only moves when some row of the
        // warp grew by more than RESCALE_SLACK (log2 units): until then
        // p = exp2(s - m) stays <= 2^RESCALE_SLACK, harmless in f32 and in
        // the 16-bit P, and the O / l rescale is skipped (most tiles).
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float mx[RF_MMA_ROWS], sum[RF_MMA_ROWS];
#pragma unroll
            for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
                mx[sl] = RF_NEG_INF;
                sum[sl] = 0.0f;
            }
#pragma unroll
            for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                for (int r = 0; r < RF_MMA_C_REGS; ++r) mx[rf_c_slot(r)] = fmaxf(mx[rf_c_slot(r)], s[mt][nu].v[r]);
            bool grow = false;
#pragma unroll
            for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
                mx[sl] = rf_row_max(mx[sl]) * c_log2;  // c > 0 keeps -inf and the order
                grow |= mx[sl] > st.m[mt][sl] + RESCALE_SLACK;
            }
            if (warp_any(grow)) {
                float alpha[RF_MMA_ROWS];
#pragma unroll
                for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
                    const float m_new = fmaxf(st.m[mt][sl], mx[sl]);
                    // No visible key yet: the exponent subtracts 0, exp2(-inf) = 0.
                    alpha[sl] = exp2_fast(st.m[mt][sl] - (m_new == RF_NEG_INF ? 0.0f : m_new));
                    st.m[mt][sl] = m_new;
                    st.l[mt][sl] *= alpha[sl];
                }
#pragma unroll
                for (int du = 0; du < D / 16; ++du)
#pragma unroll
                    for (int r = 0; r < RF_MMA_C_REGS; ++r) o[mt][du].v[r] *= alpha[rf_c_slot(r)];
            }
            float neg_m[RF_MMA_ROWS];
#pragma unroll
            for (int sl = 0; sl < RF_MMA_ROWS; ++sl) neg_m[sl] = st.m[mt][sl] == RF_NEG_INF ? 0.0f : -st.m[mt][sl];
#pragma unroll
            for (int nu = 0; nu < BN / 16; ++nu) {
#pragma unroll
                for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                    const float e = exp2_fast(fma_f(s[mt][nu].v[r], c_log2, neg_m[rf_c_slot(r)]));
                    s[mt][nu].v[r] = e;
                    sum[rf_c_slot(r)] += e;
                }
            }
#pragma unroll
            for (int sl = 0; sl < RF_MMA_ROWS; ++sl) st.l[mt][sl] += sum[sl];
        }

        // O += P V, P rounded to the input type.
        rf_elem* const p_s = sP + warp * MT * 16 * PT::STRIDE;
#if !RF_MMA_C_TO_A
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
                for (int r = 0; r < RF_MMA_C_REGS; ++r)
                    p_s[PT::off(16 * mt + rf_c_row(r), 16 * nu + rf_c_col(r))] = rf_to_elem(s[mt][nu].v[r]);
        warp_smem_sync();
#endif
        if (!SPLIT_ACC) {
#pragma unroll
            for (int ku = 0; ku < BN / 16; ++ku) {
                rf_frag_a pa[MT];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) p_operand(pa[mt], s, p_s, mt, ku);
#pragma unroll
                for (int du = 0; du < D / 16; ++du) {
                    rf_frag_b vb;
                    rf_load_b_kn(vb, v_s, [&](int r, int c) { return KVT::off(16 * ku + r, 16 * du + c); });
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) rf_mma(o[mt][du], pa[mt], vb);
                }
            }
        } else {
            // One head-dim column block at a time over all keys of the tile,
            // from zero, then one f32 add into O (see SPLIT_ACC).
            rf_frag_a pa[MT][BN / 16];
#pragma unroll
            for (int ku = 0; ku < BN / 16; ++ku)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) p_operand(pa[mt][ku], s, p_s, mt, ku);
#pragma unroll
            for (int du = 0; du < D / 16; ++du) {
                rf_frag_c t[MT];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int r = 0; r < RF_MMA_C_REGS; ++r) t[mt].v[r] = 0.0f;
#pragma unroll
                for (int ku = 0; ku < BN / 16; ++ku) {
                    rf_frag_b vb;
#if RF_FLASH_PRESPLIT
                    rf_load_b_nk_split(vb, v_s, v_s + VT_ELEMS,
                                       [&](int r, int c) { return VTT::off(16 * du + r, 16 * ku + c); });
#else
                    rf_load_b_kn(vb, v_s, [&](int r, int c) { return KVT::off(16 * ku + r, 16 * du + c); });
#endif
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) rf_mma(t[mt], pa[mt][ku], vb);
                }
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int r = 0; r < RF_MMA_C_REGS; ++r) o[mt][du].v[r] += t[mt].v[r];
            }
        }
#if !RF_MMA_C_TO_A
        warp_smem_sync();  // P staging is rewritten by the next tile
#endif
    }

    // Drain the copy pipeline (also when the block saw no tile) before the
    // Q area is reused to stage O.
    copy_wait<0>();
    __syncthreads();

    // Normalize once; a row with no visible key is exactly zero (lse -inf).
    float* lse = reinterpret_cast<float*>(p.lse);
    rf_elem* o_s = sQ;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float inv[RF_MMA_ROWS];
        bool empty[RF_MMA_ROWS];
#pragma unroll
        for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
            const float l = rf_row_sum(st.l[mt][sl]);
            empty[sl] = l == 0.0f;
            inv[sl] = recip(l);
            const int row = m0 + strip0 + 16 * mt + rf_slot_row(sl);
            if (lse != nullptr && rf_c_col(0) == 0 && row < p.seq_q) {
                const float v = empty[sl] ? RF_NEG_INF : (st.m[mt][sl] + log2_acc(l)) * LN2;
                lse[((long long)b * p.heads_q + hq) * p.seq_q + row] = v;
            }
        }
#pragma unroll
        for (int du = 0; du < D / 16; ++du)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                const int sl = rf_c_slot(r);
                const float v = empty[sl] ? 0.0f : o[mt][du].v[r] * inv[sl];
                o_s[QT::off(strip0 + 16 * mt + rf_c_row(r), 16 * du + rf_c_col(r))] = rf_to_elem(v);
            }
    }
    __syncthreads();

    // Coalesced 16-byte stores of the valid rows.
    rf_elem* o_g = reinterpret_cast<rf_elem*>(p.o) + b * p.o_batch_stride + m0 * p.o_seq_stride + hq * p.o_head_stride;
    const int rows_valid = p.seq_q - m0;
    constexpr int CHUNKS = BM * QT::CPR;
#pragma unroll
    for (int c0 = 0; c0 < CHUNKS; c0 += THREADS) {
        const int c = c0 + (int)threadIdx.x;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int row = c / QT::CPR, col = (c % QT::CPR) * VEC;
            if (row < rows_valid) {
                *reinterpret_cast<U32x4*>(o_g + row * p.o_seq_stride + col) =
                    *reinterpret_cast<const U32x4*>(o_s + QT::off(row, col));
            }
        }
    }
}
