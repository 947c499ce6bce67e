// Split-KV decode attention for f16 / bf16 on the matrix units (the tile
// API of rf/mma/mma.h: mma.sync on NVIDIA, MFMA / WMMA on AMD, SIMT
// elsewhere). Same contract, parameters, split scheme and output as the
// SIMT kernel (kernels/decode/splitkv.hip, which serves f32); docs/kernels.md
// ("Decode") explains both.
//
// A block owns one KV head and one 16-row matrix tile of query rows (the
// GQA group x seq_q rows, padded with zero rows): each K/V tile is read
// once for all of them. The K/V tile (BN = 64 keys) is staged in shared
// memory up to three deep with cp.async; each of 4 warps takes 16 of its keys and
// keeps its own online-softmax state and O accumulator for the 16 rows, so
// a tile needs no barrier between QK, softmax and PV. The warps' states
// merge once at the end (like the splits in rf/decode/merge.h).
//
//   QK:  S[16 x keys] = Q K^T on the matrix unit (Q fragments in registers).
//   softmax: log2-domain logits (scale or soft-cap), exact running max per
//        row, P = exp2(S - m) in the accumulator registers.
//   PV:  tiles every row sees completely: O += P V on the matrix unit.
//        Partially masked tiles: P goes to shared memory and each lane adds
//        the visible keys only (SIMT), so a masked key's V (NaN in an unused
//        slot) never meets a zero weight.
//
// Specialization: RF_DTYPE (RF_F16, RF_BF16), RF_HEAD_DIM (32, 64, 96,
// 128, 256). Launch: grid (num_splits, heads_kv * row_chunks, batch),
// THREADS threads, SMEM_BYTES of dynamic shared memory; the module exports
// `rf_decode_launch` = {THREADS, SMEM_BYTES, BN, RMAX, SM_SHARED_BYTES}.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
#include "rf/decode_params.h"
#include "rf/mma/mma.h"

#ifndef RF_HEAD_DIM
#error "RF_HEAD_DIM must be defined"
#endif
#if RF_HEAD_DIM != 32 && RF_HEAD_DIM != 64 && RF_HEAD_DIM != 96 && RF_HEAD_DIM != 128 && RF_HEAD_DIM != 256
#error "RF_HEAD_DIM must be 32, 64, 96, 128 or 256"
#endif
#if RF_DTYPE == RF_F32
#error "f32 decode runs the SIMT kernel (decode/splitkv.hip)"
#endif

// The wide variant (RF_DECODE_WIDE=1, NVIDIA; the host picks it when the
// call has fewer (sequence, KV head, row chunk) blocks than the GPU has
// multiprocessors, so that splitting the keys makes the grid): 128-key
// tiles two deep, one block per multiprocessor; at batch 1 and 16 on the
// H100 it is 3-7 % faster than two 64-key blocks (docs/perf.md, decode4).
// On AMD a 128-key stage does not fit a workgroup's 64 KB: the define
// changes nothing there.
#if !defined(RF_DECODE_WIDE) || defined(RF_HIP)
#undef RF_DECODE_WIDE
#define RF_DECODE_WIDE 0
#endif

// Each 16-byte K/V copy asks L2 for the 256 bytes around it (a whole K or V
// row at head_dim 128): +1-2 % at batch 16 and 64 on the H100, no change
// at batch 1 or for f32; the wide variant asks for 128 (-2 % of its time
// at batch 1; docs/perf.md, decode). ROCMFORGE_DECODE_TUNE=l2=N overrides
// it (0 = no hint).
#if !defined(RF_DECODE_L2_PREFETCH) && RF_DECODE_WIDE
#define RF_DECODE_L2_PREFETCH 128
#elif !defined(RF_DECODE_L2_PREFETCH)
#define RF_DECODE_L2_PREFETCH 256
#endif
#include "rf/decode_common.h"
#include "rf/decode/merge.h"

namespace rf_decode {

constexpr int D = RF_HEAD_DIM;
// Keys per tile: 64 (a K/V stage of 17 KB per 64 head-dim columns), 128 in
// the wide variant; 32 at head_dim 256 on AMD, where a workgroup has 64 KB
// of LDS.
#if defined(RF_DECODE_BN)
constexpr int BN = RF_DECODE_BN;  // measurement override (ROCMFORGE_DECODE_TUNE)
#elif defined(RF_HIP) && RF_HEAD_DIM > 128
constexpr int BN = 32;
#elif RF_DECODE_WIDE
constexpr int BN = 128;
#else
constexpr int BN = 64;
#endif
#if defined(RF_DECODE_WARPS)
constexpr int WARPS = RF_DECODE_WARPS;  // measurement override (ROCMFORGE_DECODE_TUNE)
#else
constexpr int WARPS = BN / 16 < 4 ? BN / 16 : 4;  // each warp takes 16 keys or more
#endif
constexpr int THREADS = WARPS * RF_WARP_SIZE;
// The merge's partial loads: 16 splits issued before their FMAs (timing
// equal to the interleaved loop on the H100, docs/perf.md).
#ifndef RF_DECODE_MERGE_BATCH
#define RF_DECODE_MERGE_BATCH 16
#endif
constexpr int MERGE_BATCH = RF_DECODE_MERGE_BATCH;
// Splits whose partials the merging thread loads before the weights
// (rf/decode/merge.h; ROCMFORGE_DECODE_TUNE=prefetch=N).
#ifndef RF_DECODE_MERGE_PREFETCH
#define RF_DECODE_MERGE_PREFETCH 16
#endif
constexpr int MERGE_PREFETCH = RF_DECODE_MERGE_PREFETCH;
constexpr int VEC = 16 / (int)sizeof(elem);
constexpr int KW = BN / WARPS;    // keys per warp
constexpr int NU = KW / 16;       // 16-key blocks per warp
constexpr int DU = D / 16;        // 16-column blocks of the head dim
static_assert(BN % WARPS == 0 && KW % 16 == 0 && RMAX == 16, "one 16-row tile, 16-key blocks per warp");

// Rows padded by one 16-byte chunk (rf_flash::Tile): the 8 rows one
// ldmatrix phase reads fall in 8 bank groups.
using KT = Tile<D>;   // Q, K, V
using PT = Tile<KW>;  // P staging where the accumulator is no A operand

constexpr int PF_STRIDE = KW + 1;  // f32 P of a partially masked tile
constexpr int Q_BYTES = RMAX * KT::STRIDE * (int)sizeof(elem);
constexpr int PF_BYTES = WARPS * RMAX * PF_STRIDE * 4;
constexpr int PE_BYTES = RF_MMA_C_TO_A ? 0 : WARPS * RMAX * PT::STRIDE * (int)sizeof(elem);
constexpr int ML_BYTES = WARPS * RMAX * 2 * 4 + 64;  // per warp and row: m, l; block-reduce scratch
constexpr int FIXED_BYTES = (Q_BYTES + PF_BYTES + PE_BYTES + ML_BYTES + 15) / 16 * 16;
constexpr int STAGE_BYTES = 2 * BN * KT::STRIDE * (int)sizeof(elem);
constexpr int MERGE_BYTES = WARPS * RMAX * D * 4;  // the warps' O at the end (over the stages)
constexpr int STAGE_ELEMS = STAGE_BYTES / (int)sizeof(elem);

#if defined(RF_DECODE_STAGES)
constexpr int STAGES_PREF = RF_DECODE_STAGES;  // measurement override (ROCMFORGE_DECODE_TUNE)
#elif defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
constexpr int STAGES_PREF = 3;
#else
constexpr int STAGES_PREF = 1;
#endif
#if defined(RF_HIP)
constexpr int SM_SHARED = 64 * 1024;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDA_ARCH__ < 1000
constexpr int SM_SHARED = 228 * 1024;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 800 || __CUDA_ARCH__ == 870)
constexpr int SM_SHARED = 164 * 1024;
#else
constexpr int SM_SHARED = 100 * 1024;
#endif
#define RF_KV_BYTES(stages) ((stages) * STAGE_BYTES > MERGE_BYTES ? (stages) * STAGE_BYTES : MERGE_BYTES)
#define RF_TWO_FIT(stages) (2 * (FIXED_BYTES + RF_KV_BYTES(stages) + 1024) <= SM_SHARED)
// Decode is bound by memory latency x bytes in flight: as many stages (up
// to STAGES_PREF) as leave room for two blocks per SM (1 KB each reserved).
#if defined(RF_DECODE_STAGES)
constexpr int STAGES = RF_DECODE_STAGES;
#elif RF_DECODE_WIDE
constexpr int STAGES = STAGES_PREF >= 2 ? 2 : 1;  // one block per SM; 3 measured slower (docs/perf.md, decode4)
#else
constexpr int STAGES = STAGES_PREF >= 3 && RF_TWO_FIT(3) ? 3 : STAGES_PREF >= 2 && RF_TWO_FIT(2) ? 2 : 1;
#endif
constexpr int SMEM_BYTES = FIXED_BYTES + RF_KV_BYTES(STAGES);
static_assert(RF_KV_BYTES(STAGES) >= MERGE_SMEM_BYTES, "the merge of the splits reuses the K/V stages");
#if defined(RF_HIP)
static_assert(SMEM_BYTES <= 64 * 1024, "over the 64 KB of LDS a workgroup has");
#else
// What one block may have: 227 KB on sm_90, 163 KB on sm_80 / sm_87, 99 KB elsewhere.
static_assert(SMEM_BYTES <= (SM_SHARED == 228 * 1024 ? 227 : SM_SHARED == 164 * 1024 ? 163 : 99) * 1024,
              "over the shared memory a block may have on this target");
#endif

// D <= 128: the Q fragments stay in registers for the whole block.
constexpr bool Q_IN_REGS = D <= 128;

using rf_flash::warp_smem_sync;

struct Smem {
    elem* q;         // [16][KT::STRIDE]
    elem* kv;        // STAGES x {K [BN][KT::STRIDE], V [BN][KT::STRIDE]}
    float* pf;       // per warp [16][PF_STRIDE] f32 P (partial tiles; -1 = masked)
    elem* pe;        // per warp [16][PT::STRIDE] P as the A operand (no RF_MMA_C_TO_A)
    float* ml;       // per warp [16][2]: m, l at the end
    float* scratch;  // block reduction
    float* merge;    // per warp [16][D] O at the end (over kv)
};

RF_DEVICE Smem smem_layout(unsigned char* raw) {
    Smem sm;
    sm.q = reinterpret_cast<elem*>(raw);
    sm.pf = reinterpret_cast<float*>(raw + Q_BYTES);
    sm.pe = reinterpret_cast<elem*>(raw + Q_BYTES + PF_BYTES);
    sm.ml = reinterpret_cast<float*>(raw + Q_BYTES + PF_BYTES + PE_BYTES);
    sm.scratch = sm.ml + WARPS * RMAX * 2;
    sm.kv = reinterpret_cast<elem*>(raw + FIXED_BYTES);
    sm.merge = reinterpret_cast<float*>(sm.kv);
    return sm;
}

// The block's query rows as elements; the padding rows up to 16 are zero.
RF_DEVICE void load_q(const rf_decode_params& p, const Work& w, elem* q_s) {
    constexpr int CPR = D / VEC;
    const elem* q = reinterpret_cast<const elem*>(p.q);
    for (int c = (int)threadIdx.x; c < RMAX * CPR; c += THREADS) {
        const int r = c / CPR, d0 = (c % CPR) * VEC;
        U32x4 v = {0u, 0u, 0u, 0u};
        if (r < w.rows) {
            const int rr = w.r0 + r, sq = rr / w.group, hq = w.hk * w.group + rr % w.group;
            v = *reinterpret_cast<const U32x4*>(q + w.b * p.strides.q.batch + sq * p.strides.q.seq +
                                                hq * p.strides.q.head + d0);
        }
        *reinterpret_cast<U32x4*>(q_s + KT::off(r, d0)) = v;
    }
}

// One warp's online-softmax state for the 16 rows (the rows of its lane).
struct WarpState {
    rf_frag_c o[DU];
    float m[RF_MMA_ROWS];  // running max (log2 domain)
    float l[RF_MMA_ROWS];  // this lane's part of the running sum
};

// Visible keys [lo, hi) of the row in slot `sl` (padding rows take the
// last real row's), clamped to the split's end.
RF_DEVICE void slot_ranges(const rf_decode_params& p, const Work& w, long long (&lo)[RF_MMA_ROWS],
                           long long (&hi)[RF_MMA_ROWS]) {
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        const int r = rf_slot_row(sl) < w.rows ? rf_slot_row(sl) : w.rows - 1;
        row_range(p, (w.r0 + r) / w.group + w.shift, w.len, lo[sl], hi[sl]);
        hi[sl] = min_ll(hi[sl], w.ke);
    }
}

// Logits, mask and online softmax of the warp's keys of one tile: S (the
// raw dot products) becomes P = exp2(logit - m); O and l are rescaled.
// Masked elements get P = 0 here; `masked` tells the partial-tile PV.
RF_DEVICE void softmax(const rf_decode_params& p, const Work& w, WarpState& st, rf_frag_c (&s)[NU], long long n0,
                       bool full, bool (&masked)[NU][RF_MMA_C_REGS]) {
    const bool capped = p.softcap > 0.0f;
    const float scale_log2 = p.scale * LOG2E;
    // fast_div: p.scale / 0 (no cap) would take the IEEE slow path, a call
    // into cold code in every warp, even though its result goes unused.
    const float cap_in = capped ? rf_flash::fast_div(p.scale, p.softcap) : 0.0f, cap_out = capped ? p.softcap * LOG2E : 0.0f;
    long long lo[RF_MMA_ROWS], hi[RF_MMA_ROWS];
    if (!full) slot_ranges(p, w, lo, hi);
    const int key0 = ((int)threadIdx.x / RF_WARP_SIZE) * KW;
    float mx[RF_MMA_ROWS];
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) mx[sl] = RF_NEG_INF;
#pragma unroll
    for (int nu = 0; nu < NU; ++nu) {
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) {
            const int sl = rf_c_slot(r);
            const long long key = n0 + key0 + 16 * nu + rf_c_col(r);
            masked[nu][r] = !full && (key < lo[sl] || key >= hi[sl]);
            const float raw = s[nu].v[r];
            const float x = masked[nu][r] ? RF_NEG_INF : capped ? cap_out * tanh_f(raw * cap_in) : raw * scale_log2;
            s[nu].v[r] = x;
            mx[sl] = fmaxf(mx[sl], x);
        }
    }
    float sub[RF_MMA_ROWS], alpha[RF_MMA_ROWS];
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        const float m_new = fmaxf(st.m[sl], rf_row_max(mx[sl]));
        // No visible key yet: subtract 0 so exp2(-inf) = 0 (not NaN).
        sub[sl] = m_new == RF_NEG_INF ? 0.0f : m_new;
        alpha[sl] = exp2_fast(st.m[sl] - sub[sl]);
        st.m[sl] = m_new;
        st.l[sl] *= alpha[sl];
    }
#pragma unroll
    for (int du = 0; du < DU; ++du)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) st.o[du].v[r] *= alpha[rf_c_slot(r)];
#pragma unroll
    for (int nu = 0; nu < NU; ++nu) {
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) {
            const float e = exp2_fast(s[nu].v[r] - sub[rf_c_slot(r)]);
            s[nu].v[r] = e;
            st.l[rf_c_slot(r)] += e;  // masked: exp2(-inf) = 0
        }
    }
}

// O += P V for a tile every row sees completely, on the matrix unit.
RF_DEVICE void pv_full(WarpState& st, const rf_frag_c (&s)[NU], const elem* v_s, elem* pe) {
    const int key0 = ((int)threadIdx.x / RF_WARP_SIZE) * KW;
    rf_frag_a pa[NU];
#if RF_MMA_C_TO_A
    (void)pe;
#pragma unroll
    for (int nu = 0; nu < NU; ++nu) rf_c_to_a(pa[nu], s[nu]);
#else
#pragma unroll
    for (int nu = 0; nu < NU; ++nu)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) pe[PT::off(rf_c_row(r), 16 * nu + rf_c_col(r))] = from_f(s[nu].v[r]);
    warp_smem_sync();
#pragma unroll
    for (int nu = 0; nu < NU; ++nu)
        rf_load_a(pa[nu], pe, [&](int r, int c) { return PT::off(r, 16 * nu + c); });
    warp_smem_sync();
#endif
#pragma unroll
    for (int du = 0; du < DU; ++du) {
#pragma unroll
        for (int ku = 0; ku < NU; ++ku) {
            rf_frag_b vb;
            rf_load_b_kn(vb, v_s, [&](int r, int c) { return KT::off(key0 + 16 * ku + r, 16 * du + c); });
            rf_mma(st.o[du], pa[ku], vb);
        }
    }
}

// O += P V for a partially masked tile: each lane adds, for its O
// elements, the keys visible to their row (P >= 0, or NaN).
RF_DEVICE void pv_partial(WarpState& st, const rf_frag_c (&s)[NU], const bool (&masked)[NU][RF_MMA_C_REGS],
                          const elem* v_s, float* pf) {
    const int key0 = ((int)threadIdx.x / RF_WARP_SIZE) * KW;
#pragma unroll
    for (int nu = 0; nu < NU; ++nu)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r)
            pf[rf_c_row(r) * PF_STRIDE + 16 * nu + rf_c_col(r)] = masked[nu][r] ? -1.0f : s[nu].v[r];
    warp_smem_sync();
    for (int j = 0; j < KW; ++j) {
        const elem* vrow = v_s + KT::off(key0 + j, 0);
#pragma unroll
        for (int du = 0; du < DU; ++du) {
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                const float pr = pf[rf_c_row(r) * PF_STRIDE + j];
                if (!(pr < 0.0f)) st.o[du].v[r] += pr * to_f(vrow[16 * du + rf_c_col(r)]);
            }
        }
    }
    warp_smem_sync();
}

// The warps' states meet in shared memory (over the K/V stages) and each
// row is written (write_pair): m = max_w m_w, l = sum_w 2^(m_w - m) l_w,
// O likewise (a warp with m_w = -inf weighs 0, its 0 * O still passes a NaN).
RF_DEVICE void finish(const rf_decode_params& p, const Work& w, const Smem& sm, const WarpState& st,
                      bool bad_block) {
    const int tid = (int)threadIdx.x, warp = tid / RF_WARP_SIZE;
    // Also the barrier after the last tile: the merge area overwrites K/V.
    const bool bad = rf_block_max(bad_block ? 1.0f : 0.0f, sm.scratch) > 0.5f || w.bad;
    __syncthreads();
    float* mo = sm.merge + warp * RMAX * D;
#pragma unroll
    for (int du = 0; du < DU; ++du)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) mo[rf_c_row(r) * D + 16 * du + rf_c_col(r)] = st.o[du].v[r];
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        const float l = rf_row_sum(st.l[sl]);
        if (rf_c_col(0) == 0) {
            sm.ml[(warp * RMAX + rf_slot_row(sl)) * 2] = st.m[sl];
            sm.ml[(warp * RMAX + rf_slot_row(sl)) * 2 + 1] = l;
        }
    }
    __syncthreads();
    for (int idx = tid; idx < w.rows * (D / 2); idx += THREADS) {
        const int r = idx / (D / 2), c = 2 * (idx % (D / 2));
        float m = RF_NEG_INF;
#pragma unroll
        for (int v = 0; v < WARPS; ++v) m = fmaxf(m, sm.ml[(v * RMAX + r) * 2]);
        float a0 = 0.0f, a1 = 0.0f, l = 0.0f;
#pragma unroll
        for (int v = 0; v < WARPS; ++v) {
            const float mv = sm.ml[(v * RMAX + r) * 2];
            const float scale = mv == RF_NEG_INF ? 0.0f : exp2_fast(mv - m);
            l += scale * sm.ml[(v * RMAX + r) * 2 + 1];
            a0 += scale * sm.merge[(v * RMAX + r) * D + c];
            a1 += scale * sm.merge[(v * RMAX + r) * D + c + 1];
        }
        write_pair<D>(p, w, r, c, a0, a1, m, l, bad);
    }
}

}  // namespace rf_decode

using namespace rf_decode;

extern "C" __device__ const int rf_decode_launch[5] = {THREADS, SMEM_BYTES, BN, RMAX, SM_SHARED};

#if defined(RF_CUDA)
#define RF_DECODE_BOUNDS __launch_bounds__(THREADS)
#else
#define RF_DECODE_BOUNDS __attribute__((amdgpu_flat_work_group_size(1, THREADS)))
#endif

extern "C" __global__ void RF_DECODE_BOUNDS rf_decode_split(const rf_decode_params p) {
    extern __shared__ __attribute__((aligned(16))) unsigned char rf_smem_raw[];
    prefetch_early<BN, D, THREADS>(p);
    wait_prior_grid();
    const Smem sm = smem_layout(rf_smem_raw);
    const Work w = make_work(p);
    const int warp = (int)threadIdx.x / RF_WARP_SIZE, key0 = warp * KW;
    elem* const pe = sm.pe + warp * RMAX * PT::STRIDE;
    float* const pf = sm.pf + warp * RMAX * PF_STRIDE;

    const long long n_begin = w.lo_any / BN;
    const long long n_end = w.hi_any > w.lo_any ? (w.hi_any + BN - 1) / BN : n_begin;
    const int tiles = (int)(n_end - n_begin);
    bool bad_block = false;

    WarpState st;
#pragma unroll
    for (int du = 0; du < DU; ++du)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) st.o[du].v[r] = 0.0f;
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        st.m[sl] = RF_NEG_INF;
        st.l[sl] = 0.0f;
    }
    rf_frag_a qf[Q_IN_REGS ? DU : 1];

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < tiles) bad_block |= load_kv<BN, D, KT::STRIDE, THREADS>(p, w, (n_begin + s) * BN, sm.kv + s * STAGE_ELEMS);
        copy_commit();
    }
    // Q after the first K/V copies are under way: its latency overlaps theirs
    // (the loop's first barriers publish it).
    load_q(p, w, sm.q);
    for (int it = 0; it < tiles; ++it) {
        __syncthreads();  // every warp is done with tile it - 1
        const int ahead = it + STAGES - 1;
        if (ahead < tiles) {
            bad_block |= load_kv<BN, D, KT::STRIDE, THREADS>(p, w, (n_begin + ahead) * BN,
                                                              sm.kv + (ahead % STAGES) * STAGE_ELEMS);
        }
        copy_commit();
        copy_wait<STAGES - 1>();
        __syncthreads();  // tile it (and Q) landed for every thread
        const elem* k_s = sm.kv + (it % STAGES) * STAGE_ELEMS;
        const elem* v_s = k_s + BN * KT::STRIDE;
        const long long n0 = (n_begin + it) * BN;
        const bool full = n0 >= w.lo_all && n0 + BN <= w.hi_all;
        if (Q_IN_REGS && it == 0) {
#pragma unroll
            for (int kk = 0; kk < (Q_IN_REGS ? DU : 1); ++kk)
                rf_load_a(qf[kk], sm.q, [&](int r, int c) { return KT::off(r, 16 * kk + c); });
        }
        rf_frag_c s[NU];
#pragma unroll
        for (int nu = 0; nu < NU; ++nu)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) s[nu].v[r] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DU; ++kk) {
            rf_frag_a qa;
            if (Q_IN_REGS) {
                qa = qf[Q_IN_REGS ? kk : 0];
            } else {
                rf_load_a(qa, sm.q, [&](int r, int c) { return KT::off(r, 16 * kk + c); });
            }
#pragma unroll
            for (int nu = 0; nu < NU; ++nu) {
                rf_frag_b kb;
                rf_load_b_nk(kb, k_s, [&](int r, int c) { return KT::off(key0 + 16 * nu + r, 16 * kk + c); });
                rf_mma(s[nu], qa, kb);
            }
        }
        bool masked[NU][RF_MMA_C_REGS];
        softmax(p, w, st, s, n0, full, masked);
        if (full) {
            pv_full(st, s, v_s, pe);
        } else {
            pv_partial(st, s, masked, v_s, pf);
        }
    }
    copy_wait<0>();
    finish(p, w, sm, st, bad_block);
    merge_splits<D, THREADS, MERGE_BATCH, MERGE_PREFETCH>(p, w, reinterpret_cast<float*>(sm.kv));
}
