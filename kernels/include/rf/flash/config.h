// Tile configuration of the fused attention kernel (kernels/flash/fwd.hip):
// which BLOCK_M x BLOCK_N tiling, how many warps and pipeline stages each
// target and dtype gets, the shared-memory layout, and the shrinking that
// keeps it inside the target's shared memory. docs/kernels.md has the
// measured table. Included after rf/mma/mma.h (it needs rf_elem and the
// flavour); everything lives in namespace rf_flash.
#pragma once
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
// With the presplit, tiles whose inputs are finite split Q, P and the K/V
// tile with rf_split_tf32_finite (integer rounding, ~5 instructions a value
// instead of ~11); tiles with an Inf or NaN keep rf_split_tf32. 0 (the old
// split everywhere) is for the development harness's A/B only.
#ifndef RF_FLASH_FAST_SPLIT
#define RF_FLASH_FAST_SPLIT 1
#endif

// Fragment loads from lane addresses kept in registers (rf/mma/mma_sync.h,
// rf_lane_*): the offset of each fragment is then an immediate. Measured in
// one process on an H200 (2026-11-22, bf16 d 128, (4,32,32,2048,128)
// non-causal): NVRTC 13.0 0.797 ms with them, 0.865 ms without (it
// recomputed every fragment address in the loop); NVRTC 13.5 folds the
// lambda form itself and its code was faster without them (0.787 vs
// 0.807 ms). So: lane addresses below NVRTC 13.5. The harness may force
// either (RF_FLASH_LANE_ADDR 0 / 1).
#ifndef RF_FLASH_LANE_ADDR
#if defined(__CUDACC_VER_MAJOR__) && defined(__CUDACC_VER_MINOR__)
#define RF_FLASH_NVCC_VER (__CUDACC_VER_MAJOR__ * 100 + __CUDACC_VER_MINOR__)
#else
#define RF_FLASH_NVCC_VER 0
#endif
#if defined(RF_MMA_LANE_ADDR) && !RF_FLASH_PRESPLIT && RF_FLASH_NVCC_VER < 1305
#define RF_FLASH_LANE_ADDR 1
#else
#define RF_FLASH_LANE_ADDR 0
#endif
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


}  // namespace rf_flash
