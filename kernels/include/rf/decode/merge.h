// The merge of the splits, inside the split kernel (no second launch): the
// blocks of one (sequence, KV head, row chunk) each write their partial
// output and log2-sum-exp (write_pair), then take a ticket from the row's
// counter; the block that takes the last one merges every split's partial
// into O and resets the counter to 0 for the next launch.
//
// Memory order (last_of_row below): the block synchronizes after its
// partial stores, thread 0 fences (device scope) and takes the ticket, and
// in the last block fences again before the barrier after which its
// threads read the partials from L2 (never a stale L1 line).
//
// Counters: u32 per (sequence, KV head x row chunk), p.counters[z * gridDim.y
// + y], zero when the launch starts (the host keeps them in buffers that
// only this kernel touches; the last block of each row leaves it at 0).
//
// The merge: for each row, w_s = exp2(lse_s - max_s lse_s) and
//   O = sum_s w_s o_s / sum_s w_s,
// with w_s = 0 for a split whose lse is -inf (no visible key, or only
// weightless ones: its o_s is then 0, or NaN from a visible NaN V, and
// 0 * o_s keeps that NaN). A NaN lse (a NaN logit, a bad block-table entry)
// makes the row NaN, an invalid length too; a row with no visible key at
// all is exact zeros; a row whose visible logits are all -inf is 0 / 0 =
// NaN, as in the reference.
#pragma once
#include "rf/decode_common.h"

namespace rf_decode {

// Most splits of one row (MAX_SPLITS in backends/flash_decode/split.rs).
constexpr int MERGE_SPLITS = 128;
// Shared memory the merge needs (over the K/V stages): a weight per (row,
// split), per row the sum and a NaN flag, and the last-block flag.
constexpr int MERGE_SMEM_BYTES = (RMAX * MERGE_SPLITS + 2 * RMAX + 4) * 4;

// Device-scope fence: orders this thread's global stores and loads.
RF_DEVICE void fence_device() {
#if defined(RF_CUDA)
    asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
#else
    __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "agent");
#endif
}

RF_DEVICE void reset_counter(unsigned* c) {
#if defined(RF_CUDA)
    asm volatile("st.relaxed.gpu.global.u32 [%0], %1;\n" ::"l"(c), "r"(0u) : "memory");
#else
    __hip_atomic_store(c, 0u, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
#endif
}

// Loads from L2 (another block's stores; AMD's acquire fence already
// invalidated the L1).
RF_DEVICE float load_l2(const float* p) {
#if defined(RF_CUDA)
    float x;
    asm volatile("ld.global.cg.f32 %0, [%1];\n" : "=f"(x) : "l"(p));
    return x;
#else
    return *p;
#endif
}

RF_DEVICE F4 load_l2_4(const float* p) {
#if defined(RF_CUDA)
    F4 v;
    asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
    return v;
#else
    return *reinterpret_cast<const F4*>(p);
#endif
}

// *c += 1 at device scope, relaxed (last_of_row fences around it);
// returns the old value.
RF_DEVICE unsigned take_ticket_relaxed(unsigned* c) {
#if defined(RF_CUDA)
    unsigned old;
    asm volatile("atom.relaxed.gpu.global.add.u32 %0, [%1], 1;\n" : "=r"(old) : "l"(c) : "memory");
    return old;
#else
    return __hip_atomic_fetch_add(c, 1u, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
#endif
}

// Whether this block took the row's last ticket (called by every thread
// after the block's partials are written; a barrier for the block). In the
// last block, every thread may then read the other blocks' partials.
// The barrier orders the block's stores before thread 0, which alone
// fences (device scope, cumulative over what the barrier ordered before
// it), takes the ticket and, in the last block, fences again before the
// barrier that releases the readers: one fence pair per block, as in a
// grid barrier (0.8 us a call faster at batch 1 on the H100 than a fence
// in every thread, docs/perf.md).
RF_DEVICE bool last_of_row(const rf_decode_params& p, unsigned* flag) {
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned* c = reinterpret_cast<unsigned*>(p.counters) + (blockIdx.z * gridDim.y + blockIdx.y);
        fence_device();
        const bool last = take_ticket_relaxed(c) == (unsigned)p.num_splits - 1;
        if (last) {
            fence_device();
            reset_counter(c);
        }
        *flag = last ? 1u : 0u;
    }
    __syncthreads();
    return *flag != 0u;
}

// The partials' index of the block's row r in split 0 (split s adds s *
// batch * seq_q * heads_q), as write_pair lays them out.
RF_DEVICE long long part_row0(const rf_decode_params& p, const Work& w, int r, int& sq, int& hq) {
    const int rr = w.r0 + r;
    sq = rr / w.group;
    hq = w.hk * w.group + rr % w.group;
    return ((long long)w.b * p.seq_q + sq) * p.heads_q + hq;
}

// Per row: the splits' weights w_s into wt[r][s], their sum and whether
// any lse was NaN. One warp per row: each lane loads its splits' lse
// (all in flight at once) and the warp reduces them in registers.
template <int THREADS>
RF_DEVICE void merge_weights(const rf_decode_params& p, const Work& w, float* wt, float* den, float* nan_row) {
    constexpr int WARPS = THREADS / RF_WARP_SIZE;
    constexpr int PER = (MERGE_SPLITS + RF_WARP_SIZE - 1) / RF_WARP_SIZE;  // splits per lane
    const int S = p.num_splits, tid = (int)threadIdx.x;
    const long long split_rows = (long long)p.batch * p.seq_q * p.heads_q;
    const float* lse = reinterpret_cast<const float*>(p.part_lse);
    const int warp = tid / RF_WARP_SIZE, lane = tid % RF_WARP_SIZE;
    for (int r = warp; r < w.rows; r += WARPS) {
        int sq, hq;
        const float* src = lse + part_row0(p, w, r, sq, hq);
        float x[PER];
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            const int s = lane + k * RF_WARP_SIZE;
            x[k] = s < S ? load_l2(src + s * split_rows) : RF_NEG_INF;
        }
        float top = RF_NEG_INF, nan = 0.0f;
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            nan = x[k] != x[k] ? 1.0f : nan;
            top = fmaxf(top, x[k]);
        }
        top = rf_warp_max(top);
        nan = rf_warp_max(nan);
        float sum = 0.0f;
        float* row = wt + r * MERGE_SPLITS;
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            const int s = lane + k * RF_WARP_SIZE;
            const float e = x[k] == RF_NEG_INF ? 0.0f : exp2_fast(x[k] - top);
            if (s < S) row[s] = e;
            sum += e;
        }
        sum = rf_warp_sum(sum);
        if (lane == 0) {
            den[r] = sum;
            nan_row[r] = nan;
        }
    }
    __syncthreads();
}

// The last block of a row merges the splits into O. `smem`: at least
// MERGE_SMEM_BYTES, free for the merge (the caller's K/V stages).
// BATCH > 1: the loads of BATCH splits are issued before any is used;
// BATCH = 1: loads and FMAs interleaved, the loop unrolled by 8 (the f32
// kernel: see docs/perf.md, decode, for what each measured).
template <int D, int THREADS, int BATCH, int PREFETCH>
RF_DEVICE void merge_splits(const rf_decode_params& p, const Work& w, float* smem) {
    static_assert(D % 4 == 0, "four columns per thread");
    static_assert(PREFETCH >= 0 && PREFETCH <= 32, "prefetched splits are registers");
    if (p.num_splits <= 1) return;  // the block wrote O itself
    float* wt = smem;
    float* den = wt + RMAX * MERGE_SPLITS;
    float* nan_row = den + RMAX;
    if (!last_of_row(p, reinterpret_cast<unsigned*>(nan_row + RMAX))) return;
    const int S = p.num_splits;
    const long long split_stride = (long long)p.batch * p.seq_q * p.heads_q * D;
    const float* po = reinterpret_cast<const float*>(p.part_o);
    constexpr int C4 = D / 4;
    // PREFETCH > 0: the thread's first item loads its first PREFETCH splits
    // before the weights are known, so their latency overlaps the lse loads.
    const int first = (int)threadIdx.x;
    F4 pre[PREFETCH > 0 ? PREFETCH : 1];
    if (PREFETCH > 0 && first < w.rows * C4) {
        int sq, hq;
        const float* src = po + part_row0(p, w, first / C4, sq, hq) * D + (first % C4) * 4;
#pragma unroll
        for (int j = 0; j < PREFETCH; ++j) {
            if (j < S) pre[j] = load_l2_4(src + j * split_stride);
        }
    }
    merge_weights<THREADS>(p, w, wt, den, nan_row);
    for (int i = first; i < w.rows * C4; i += THREADS) {
        const int r = i / C4, c = (i % C4) * 4;
        int sq, hq;
        const float* src = po + part_row0(p, w, r, sq, hq) * D + c;
        const float* wr = wt + r * MERGE_SPLITS;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        int s_begin = 0;
        if (PREFETCH > 0 && i == first) {
#pragma unroll
            for (int j = 0; j < PREFETCH; ++j) {
                if (j < S) {
                    const float x = wr[j];
                    a0 += x * pre[j].x;
                    a1 += x * pre[j].y;
                    a2 += x * pre[j].z;
                    a3 += x * pre[j].w;
                }
            }
            s_begin = PREFETCH;
        }
        if constexpr (BATCH == 1) {
#pragma unroll 8
            for (int s = s_begin; s < S; ++s) {
                const F4 v = load_l2_4(src + s * split_stride);
                const float x = wr[s];
                a0 += x * v.x;
                a1 += x * v.y;
                a2 += x * v.z;
                a3 += x * v.w;
            }
        } else {
            for (int s0 = s_begin; s0 < S; s0 += BATCH) {
                F4 v[BATCH];
#pragma unroll
                for (int j = 0; j < BATCH; ++j) {
                    if (s0 + j < S) v[j] = load_l2_4(src + (s0 + j) * split_stride);
                }
#pragma unroll
                for (int j = 0; j < BATCH; ++j) {
                    if (s0 + j < S) {
                        const float x = wr[s0 + j];
                        a0 += x * v[j].x;
                        a1 += x * v[j].y;
                        a2 += x * v[j].z;
                        a3 += x * v[j].w;
                    }
                }
            }
        }
        long long lo, hi;
        row_range(p, sq + w.shift, w.len, lo, hi);
        float f[4] = {a0 / den[r], a1 / den[r], a2 / den[r], a3 / den[r]};
        if (w.bad || (lo < hi && nan_row[r] > 0.5f)) {
            f[0] = f[1] = f[2] = f[3] = nan_f();
        } else if (lo >= hi) {
            f[0] = f[1] = f[2] = f[3] = 0.0f;
        }
        elem* out = reinterpret_cast<elem*>(p.o) + w.b * p.strides.o.batch + sq * p.strides.o.seq +
                    hq * p.strides.o.head + c;
        store2(out, f[0], f[1]);
        store2(out + 2, f[2], f[3]);
    }
}

}  // namespace rf_decode
