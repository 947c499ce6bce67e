// Split-KV decode attention: few query rows (seq_q <= 8) against a long KV
// sequence, dense or paged; the f32 kernel (f16 / bf16 run on the matrix
// units, decode/splitkv_mma.hip, with the same contract). docs/kernels.md
// ("Decode") explains the design.
//
// Decode is memory-bound: every K/V byte is read once and used by few
// rows, so the kernel is SIMT (f32 FMAs; f32 problems keep f32 accuracy)
// and spends its effort on the memory side:
// - GQA packing: a block owns one KV head and up to RMAX query rows, the
//   (seq position, query head) pairs of that KV head's group, row
//   r = sq * group + g. Each K/V tile is read once for all of them.
// - Split-KV: blockIdx.x = split s covers keys [s * split_keys, (s + 1) *
//   split_keys), so one (batch, KV head) is spread over many blocks. With
//   one split the block writes O itself; with several it writes a partial
//   output (normalized) and its log2-sum-exp, and the last block of the
//   row to finish merges them (rf/decode/merge.h).
// - K/V tiles of BN keys are staged in shared memory, STAGES deep with
//   cp.async on NVIDIA sm_80+ (plain loads elsewhere), rows padded by one
//   few 16-byte chunks (see QK below).
//
// One tile, four phases separated by barriers:
//   QK:  thread t owns key t / KSPLIT and the 16-byte chunks p, p + KSPLIT,
//        ... of it (p = t % KSPLIT); it reads them once and the (broadcast)
//        Q chunks of every row; the KSPLIT lanes of a key add their parts
//        with shuffles. K rows are padded to KSPLIT (mod 8) chunks, so the 8
//        lanes of one 16-byte shared-memory phase hit 8 different banks.
//   softmax: warp w owns rows w, w + WARPS, ...; the row's tile maximum and
//        sum come from warp reductions (online softmax, exp2 domain, exact
//        running max); masked keys get P = -1 (a value exp2 never gives).
//   PV:  thread t owns two head-dim columns and the keys kg, kg + KG, ...
//        of the tile; partially masked tiles skip keys with P < 0, so a
//        masked key's V (NaN in an unused cache slot, say) never reaches O.
//
// Specialization: RF_DTYPE (RF_F32, RF_F16, RF_BF16), RF_HEAD_DIM (32, 64,
// 96, 128, 256). Launch: grid (num_splits, heads_kv * row_chunks, batch),
// THREADS threads, SMEM_BYTES of dynamic shared memory; the module exports
// `rf_decode_launch` = {THREADS, SMEM_BYTES, BN, RMAX, SM_SHARED_BYTES}.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
#include "rf/decode_params.h"

#ifndef RF_DTYPE
#error "RF_DTYPE must be defined"
#endif
#ifndef RF_HEAD_DIM
#error "RF_HEAD_DIM must be defined"
#endif
#if RF_HEAD_DIM != 32 && RF_HEAD_DIM != 64 && RF_HEAD_DIM != 96 && RF_HEAD_DIM != 128 && RF_HEAD_DIM != 256
#error "RF_HEAD_DIM must be 32, 64, 96, 128 or 256"
#endif

#include "rf/decode_common.h"
#include "rf/decode/merge.h"

namespace rf_decode {

constexpr int D = RF_HEAD_DIM;
constexpr int THREADS = 128;
// The merge's partial loads: interleaved with their FMAs. Issuing 16 ahead
// took this kernel from 128 to 167 registers and cost it 16 % of its
// bandwidth at batch 1, 8 % at batch 16 (H100, docs/perf.md, decode).
#ifndef RF_DECODE_MERGE_BATCH
#define RF_DECODE_MERGE_BATCH 1
#endif
constexpr int MERGE_BATCH = RF_DECODE_MERGE_BATCH;
// Splits whose partials the merging thread loads before the weights
// (rf/decode/merge.h; ROCMFORGE_DECODE_TUNE=prefetch=N).
#ifndef RF_DECODE_MERGE_PREFETCH
#define RF_DECODE_MERGE_PREFETCH 0
#endif
constexpr int MERGE_PREFETCH = RF_DECODE_MERGE_PREFETCH;
constexpr int WARPS = THREADS / RF_WARP_SIZE;
constexpr int VEC = 16 / (int)sizeof(elem);  // elements per 16-byte chunk

// Keys per tile: 64 16-bit or 32 f32 keys (4 KB of K per 64-dim slice), half
// that for head_dim 256, so a stage is about 34 KB of K and V.
#if defined(RF_DECODE_BN)
constexpr int BN = RF_DECODE_BN;  // measurement override (ROCMFORGE_DECODE_TUNE)
#else
constexpr int BN = (sizeof(elem) == 2 ? 64 : 32) / (D > 128 ? 2 : 1);
#endif
constexpr int KSPLIT = THREADS / BN;  // threads per key in QK
constexpr int DQ = D / KSPLIT;        // head-dim slice of one QK thread
static_assert(THREADS % BN == 0 && D % KSPLIT == 0 && DQ % VEC == 0, "bad QK split");
static_assert(KSPLIT <= RF_WARP_SIZE, "a key's threads must share a warp");

// PV: two head-dim columns per thread, KG groups of keys.
constexpr int NT_D = D / 2;
constexpr int KG = THREADS / NT_D;
static_assert(KG >= 1 && BN % KG == 0, "bad PV split");

// Shared-memory layout (in 4-byte words where f32, elements for K/V).
constexpr int CPR = D / VEC;  // 16-byte chunks per K/V row
// Row stride = KSPLIT (mod 8) chunks: lane (key j, part p) of a QK read
// phase hits chunk j * KSPLIT + p (mod 8), distinct for the phase's 8 lanes.
constexpr int KV_PAD = ((KSPLIT % 8) - (CPR % 8) + 8) % 8;
constexpr int KV_STRIDE = (CPR + KV_PAD) * VEC;
constexpr int Q_ROW = D;
constexpr int S_ROW = BN;
constexpr int Q_BYTES = RMAX * Q_ROW * 4;
constexpr int S_BYTES = RMAX * S_ROW * 4;
constexpr int ROW_BYTES = 4 * RMAX * 4 + 64;  // alpha, m, l per row; block-reduce scratch
constexpr int STAGE_BYTES = 2 * BN * KV_STRIDE * (int)sizeof(elem);
constexpr int RED_BYTES = KG * RMAX * D * 4;  // PV partials at the end (over the stages)

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
constexpr int STAGES_PREF = 2;
#else
constexpr int STAGES_PREF = 1;
#endif
// Shared memory one SM (CU) has, for the host's blocks-per-SM estimate.
#if defined(RF_HIP)
constexpr int SM_SHARED = 64 * 1024;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDA_ARCH__ < 1000
constexpr int SM_SHARED = 228 * 1024;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 800 || __CUDA_ARCH__ == 870)
constexpr int SM_SHARED = 164 * 1024;
#else
constexpr int SM_SHARED = 100 * 1024;
#endif
constexpr int FIXED_BYTES = Q_BYTES + S_BYTES + ROW_BYTES;
#define RF_KV_BYTES(stages) ((stages) * STAGE_BYTES > RED_BYTES ? (stages) * STAGE_BYTES : RED_BYTES)
#if defined(RF_DECODE_STAGES)
constexpr int STAGES = RF_DECODE_STAGES;  // measurement override (ROCMFORGE_DECODE_TUNE)
#else
// Two stages where two blocks still fit one SM, else one.
constexpr int STAGES = (STAGES_PREF == 2 && 2 * (FIXED_BYTES + RF_KV_BYTES(2)) <= SM_SHARED) ? 2 : 1;
#endif
constexpr int SMEM_BYTES = FIXED_BYTES + RF_KV_BYTES(STAGES);
constexpr int STAGE_ELEMS = STAGE_BYTES / (int)sizeof(elem);
#if defined(RF_HIP)
static_assert(SMEM_BYTES <= 64 * 1024, "over the 64 KB of LDS a workgroup has");
#else
static_assert(SMEM_BYTES <= (SM_SHARED == 228 * 1024 ? 227 : SM_SHARED == 164 * 1024 ? 163 : 99) * 1024,
              "over the shared memory a block may have on this target");
#endif
static_assert(FIXED_BYTES % 16 == 0 && STAGE_BYTES % 16 == 0, "K/V tiles must stay 16-byte aligned");
static_assert(RF_KV_BYTES(STAGES) >= MERGE_SMEM_BYTES, "the merge of the splits reuses the K/V stages");

// Shared memory of one block.
struct Smem {
    float* q;        // [RMAX][D] f32 query rows
    float* s;        // [RMAX][BN] logits, then probabilities (P < 0: masked key)
    float* alpha;    // [RMAX] rescale of O for the current tile
    float* m;        // [RMAX] final running max (log2 domain)
    float* l;        // [RMAX] final running sum
    float* scratch;  // block reductions
    elem* kv;        // STAGES x {K [BN][KV_STRIDE], V [BN][KV_STRIDE]}
    float* red;      // [KG][RMAX][D] PV partials at the end (over kv)
};

RF_DEVICE Smem smem_layout(unsigned char* raw) {
    Smem sm;
    sm.q = reinterpret_cast<float*>(raw);
    sm.s = sm.q + RMAX * Q_ROW;
    sm.alpha = sm.s + RMAX * S_ROW;
    sm.m = sm.alpha + RMAX;
    sm.l = sm.m + RMAX;
    sm.scratch = sm.l + 2 * RMAX;
    sm.kv = reinterpret_cast<elem*>(raw + FIXED_BYTES);
    sm.red = reinterpret_cast<float*>(sm.kv);
    return sm;
}

// Rows are handled in groups of four (a whole group when any row of it is
// real), so that the row loops cost one branch per group; the padding rows
// of the last group have zero queries and are never written out.
constexpr int RG = 4;
static_assert(RMAX % RG == 0, "RMAX must be a multiple of the row group");

RF_DEVICE int padded_rows(const Work& w) { return (w.rows + RG - 1) / RG * RG; }

// Query rows r0 .. r0 + rows of the block as f32 (padding rows zero).
RF_DEVICE void load_q(const rf_decode_params& p, const Work& w, float* q_s) {
    const elem* q = reinterpret_cast<const elem*>(p.q);
    for (int c = (int)threadIdx.x; c < padded_rows(w) * CPR; c += THREADS) {
        const int r = c / CPR, d0 = (c % CPR) * VEC;
        float f[VEC];
        if (r < w.rows) {
            const int rr = w.r0 + r, sq = rr / w.group, hq = w.hk * w.group + rr % w.group;
            const elem* src = q + w.b * p.strides.q.batch + sq * p.strides.q.seq + hq * p.strides.q.head + d0;
            unpack(*reinterpret_cast<const U32x4*>(src), f);
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) f[e] = 0.0f;
        }
        float* dst = q_s + r * Q_ROW + d0;
#pragma unroll
        for (int e = 0; e < VEC; ++e) dst[e] = f[e];
    }
}

// S[r][j] = q_r . k_j for the tile's BN keys (raw dot products).
RF_DEVICE void qk_tile(const Work& w, const Smem& sm, const elem* k_s, int tid) {
    const int j = tid / KSPLIT, part = tid % KSPLIT;
    const elem* krow = k_s + j * KV_STRIDE + part * VEC;
    const float* qs = sm.q + part * VEC;
    const int groups = padded_rows(w) / RG;
    float acc[RMAX];
#pragma unroll
    for (int r = 0; r < RMAX; ++r) acc[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < DQ / VEC; ++c) {
        // Chunk part + KSPLIT * c of the key, and of every query row.
        float kf[VEC];
        unpack(*reinterpret_cast<const U32x4*>(krow + c * KSPLIT * VEC), kf);
#pragma unroll
        for (int g = 0; g < RMAX / RG; ++g) {
            if (g < groups) {
#pragma unroll
                for (int rr = 0; rr < RG; ++rr) {
                    const int r = g * RG + rr;
                    const F4* qv = reinterpret_cast<const F4*>(qs + r * Q_ROW + c * KSPLIT * VEC);
#pragma unroll
                    for (int e4 = 0; e4 < VEC / 4; ++e4) {
                        const F4 x = qv[e4];
                        acc[r] += x.x * kf[4 * e4] + x.y * kf[4 * e4 + 1] + x.z * kf[4 * e4 + 2] + x.w * kf[4 * e4 + 3];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int g = 0; g < RMAX / RG; ++g) {
        if (g < groups) {
#pragma unroll
            for (int rr = 0; rr < RG; ++rr) {
                const int r = g * RG + rr;
#pragma unroll
                for (int off = 1; off < KSPLIT; off <<= 1) acc[r] += rf_shfl_xor(acc[r], off);
                if (part == 0) sm.s[r * S_ROW + j] = acc[r];
            }
        }
    }
}

// Online-softmax state of the rows a warp owns (rows warp, warp + WARPS, ...).
constexpr int RPW = RMAX / WARPS;
struct RowState {
    float m[RPW];  // running max of the log2-domain logits
    float l[RPW];  // running sum of exp2(logit - m)
};

RF_DEVICE void init_rows(RowState& st) {
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        st.m[i] = RF_NEG_INF;
        st.l[i] = 0.0f;
    }
}

// Logits to probabilities for the tile at key n0: scale (or soft-cap) into
// the log2 domain, mask (unless `full`), exact running max, P = exp2(s - m)
// in place of S (-1 for masked keys), alpha = exp2(m_old - m_new) per row.
RF_DEVICE void softmax_tile(const rf_decode_params& p, const Work& w, const Smem& sm, RowState& st, long long n0,
                            bool full) {
    constexpr int NE = (BN + RF_WARP_SIZE - 1) / RF_WARP_SIZE;
    const int warp = (int)threadIdx.x / RF_WARP_SIZE, lane = (int)threadIdx.x % RF_WARP_SIZE;
    const bool capped = p.softcap > 0.0f;
    const float scale_log2 = p.scale * LOG2E;
    // fast_div: p.scale / 0 (no cap) would take the IEEE slow path, a call
    // into cold code in every warp, even though its result goes unused.
    const float cap_in = capped ? rf_flash::fast_div(p.scale, p.softcap) : 0.0f, cap_out = capped ? p.softcap * LOG2E : 0.0f;
    const int padded = padded_rows(w);
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int r = warp + WARPS * i;
        if (r >= padded) continue;  // warp-uniform
        if (r >= w.rows) {
            // A padding row of the last group: P = 0 keeps its (unused) O finite.
            for (int j = lane; j < BN; j += RF_WARP_SIZE) sm.s[r * S_ROW + j] = 0.0f;
            if (lane == 0) sm.alpha[r] = 1.0f;
            continue;
        }
        long long lo = 0, hi = BN;  // visible keys, relative to n0
        if (!full) {
            long long a, z;
            row_range(p, (w.r0 + r) / w.group + w.shift, w.len, a, z);
            lo = a - n0;
            hi = min_ll(z, w.ke) - n0;
        }
        float x[NE];
        float mx = RF_NEG_INF;
#pragma unroll
        for (int e = 0; e < NE; ++e) {
            const int j = lane + RF_WARP_SIZE * e;
            x[e] = RF_NEG_INF;
            if (j < BN && j >= lo && j < hi) {
                const float raw = sm.s[r * S_ROW + j];
                x[e] = capped ? cap_out * tanh_f(raw * cap_in) : raw * scale_log2;
                mx = fmaxf(mx, x[e]);
            }
        }
        mx = rf_warp_max(mx);
        const float m_new = fmaxf(st.m[i], mx);
        // No visible key yet: subtract 0 so exp2(-inf) = 0 (not NaN).
        const float sub = m_new == RF_NEG_INF ? 0.0f : m_new;
        const float alpha = exp2_fast(st.m[i] - sub);
        float sum = 0.0f;
#pragma unroll
        for (int e = 0; e < NE; ++e) {
            const int j = lane + RF_WARP_SIZE * e;
            if (j < BN) {
                const bool visible = j >= lo && j < hi;
                const float pr = visible ? exp2_fast(x[e] - sub) : -1.0f;
                sm.s[r * S_ROW + j] = pr;
                if (visible) sum += pr;
            }
        }
        sum = rf_warp_sum(sum);
        st.l[i] = st.l[i] * alpha + sum;
        st.m[i] = m_new;
        if (lane == 0) sm.alpha[r] = alpha;
    }
}

// O = alpha O + P V over this thread's keys and two columns. Partially
// masked tiles (FULL false) skip masked keys (P < 0): 0 * NaN would leak a
// masked V into the row. A NaN P (NaN logit) is not < 0 and propagates.
template <bool FULL>
RF_DEVICE void pv_tile(const Work& w, const Smem& sm, const elem* v_s, float (&o)[RMAX][2], int tid) {
    const int dp = tid % NT_D, kg = tid / NT_D;
    if (kg >= KG) return;
    const int groups = padded_rows(w) / RG;
#pragma unroll
    for (int g = 0; g < RMAX / RG; ++g) {
        if (g < groups) {
#pragma unroll
            for (int rr = 0; rr < RG; ++rr) {
                const float a = sm.alpha[g * RG + rr];
                o[g * RG + rr][0] *= a;
                o[g * RG + rr][1] *= a;
            }
        }
    }
#pragma unroll 2
    for (int i = 0; i < BN / KG; ++i) {
        const int j = kg + KG * i;
        float v0, v1;
        load2(v_s + j * KV_STRIDE + 2 * dp, v0, v1);
#pragma unroll
        for (int g = 0; g < RMAX / RG; ++g) {
            if (g < groups) {
#pragma unroll
                for (int rr = 0; rr < RG; ++rr) {
                    const int r = g * RG + rr;
                    const float pr = sm.s[r * S_ROW + j];
                    if (FULL || !(pr < 0.0f)) {
                        o[r][0] += pr * v0;
                        o[r][1] += pr * v1;
                    }
                }
            }
        }
    }
}

// Writes the block's rows (write_pair): the KG partial sums of each row
// meet in shared memory, over the K/V stages.
RF_DEVICE void finish(const rf_decode_params& p, const Work& w, const Smem& sm, const RowState& st,
                      const float (&o)[RMAX][2], bool bad_block, int tid) {
    const int warp = tid / RF_WARP_SIZE, lane = tid % RF_WARP_SIZE;
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int r = warp + WARPS * i;
        if (r < w.rows && lane == 0) {
            sm.m[r] = st.m[i];
            sm.l[r] = st.l[i];
        }
    }
    // Also the barrier after the last tile: the PV partials overwrite K/V.
    const bool bad = rf_block_max(bad_block ? 1.0f : 0.0f, sm.scratch) > 0.5f || w.bad;
    __syncthreads();
    const int dp = tid % NT_D, kg = tid / NT_D;
    if (kg < KG) {
#pragma unroll
        for (int r = 0; r < RMAX; ++r) {
            if (r < w.rows) {
                sm.red[(kg * RMAX + r) * D + 2 * dp] = o[r][0];
                sm.red[(kg * RMAX + r) * D + 2 * dp + 1] = o[r][1];
            }
        }
    }
    __syncthreads();
    for (int idx = tid; idx < w.rows * NT_D; idx += THREADS) {
        const int r = idx / NT_D, c = 2 * (idx % NT_D);
        float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
        for (int g = 0; g < KG; ++g) {
            a0 += sm.red[(g * RMAX + r) * D + c];
            a1 += sm.red[(g * RMAX + r) * D + c + 1];
        }
        write_pair<D>(p, w, r, c, a0, a1, sm.m[r], sm.l[r], bad);
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
    Smem sm = smem_layout(rf_smem_raw);
    const Work w = make_work(p);
    const int tid = (int)threadIdx.x;

    const long long n_begin = w.lo_any / BN;
    const long long n_end = w.hi_any > w.lo_any ? (w.hi_any + BN - 1) / BN : n_begin;
    const int tiles = (int)(n_end - n_begin);
    bool bad_block = false;  // this thread met a block-table entry out of range

    RowState st;
    init_rows(st);
    float o[RMAX][2];
#pragma unroll
    for (int r = 0; r < RMAX; ++r) o[r][0] = o[r][1] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < tiles) bad_block |= load_kv<BN, D, KV_STRIDE, THREADS>(p, w, (n_begin + s) * BN, sm.kv + s * STAGE_ELEMS);
        copy_commit();
    }
    // Q after the first K/V copies are under way: its latency overlaps theirs
    // (the loop's first barriers publish it).
    load_q(p, w, sm.q);
    for (int it = 0; it < tiles; ++it) {
        __syncthreads();  // every thread is done with tile it - 1 (its stage, S, alpha)
        const int ahead = it + STAGES - 1;
        if (ahead < tiles) bad_block |= load_kv<BN, D, KV_STRIDE, THREADS>(p, w, (n_begin + ahead) * BN, sm.kv + (ahead % STAGES) * STAGE_ELEMS);
        copy_commit();
        copy_wait<STAGES - 1>();
        __syncthreads();  // tile it has landed for every thread
        const elem* k_s = sm.kv + (it % STAGES) * STAGE_ELEMS;
        const elem* v_s = k_s + BN * KV_STRIDE;
        const long long n0 = (n_begin + it) * BN;
        const bool full = n0 >= w.lo_all && n0 + BN <= w.hi_all;
        qk_tile(w, sm, k_s, tid);
        __syncthreads();
        softmax_tile(p, w, sm, st, n0, full);
        __syncthreads();
        if (full) {
            pv_tile<true>(w, sm, v_s, o, tid);
        } else {
            pv_tile<false>(w, sm, v_s, o, tid);
        }
    }
    copy_wait<0>();
    finish(p, w, sm, st, o, bad_block, tid);
    merge_splits<D, THREADS, MERGE_BATCH, MERGE_PREFETCH>(p, w, reinterpret_cast<float*>(sm.kv));
}
