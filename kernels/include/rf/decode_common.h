// What the decode kernels (kernels/decode/) share: the RF_DTYPE element
// and the copy / math helpers (from the shared rf/mma/mma.h and
// rf/flash/device.h), 16-byte unpacking to f32, which keys and rows a block
// owns (`Work`), the K/V tile loader (dense or through the block table) and
// how a finished row is written. The merge of the splits is
// rf/decode/merge.h.
#pragma once
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/decode_params.h"
// The element type and its conversions (rf_elem), and the flash kernels'
// device helpers: 16-byte global-to-shared copies (cp.async on NVIDIA
// sm_80+), exp2 / log2 / tanh, the padded shared-memory tile. Both need
// RF_DTYPE and RF_HEAD_DIM, which every decode kernel defines.
#include "rf/mma/mma.h"
#include "rf/flash/device.h"

namespace rf_decode {

typedef rf_elem elem;
RF_DEVICE float to_f(elem x) { return rf_from_elem(x); }
RF_DEVICE elem from_f(float x) { return rf_to_elem(x); }

using rf_flash::copy16;
using rf_flash::copy_commit;
using rf_flash::copy_wait;
using rf_flash::exp2_fast;
using rf_flash::log2_acc;
using rf_flash::LOG2E;
using rf_flash::max_ll;
using rf_flash::min_ll;
using rf_flash::tanh_f;
using rf_flash::Tile;
using rf_flash::U32x4;

struct alignas(16) F4 {
    float x, y, z, w;
};

RF_DEVICE float nan_f() { return __int_as_float(0x7fc00000); }

// The elements of one 16-byte chunk as floats.
RF_DEVICE void unpack(const U32x4& u, float (&f)[16 / sizeof(elem)]) {
#if RF_DTYPE == RF_F32
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
#else
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = to_f((elem)(w[i] & 0xffffu));
        f[2 * i + 1] = to_f((elem)(w[i] >> 16));
    }
#endif
}

// Two consecutive elements (4- or 8-byte aligned) as floats.
RF_DEVICE void load2(const elem* s, float& a, float& b) {
#if RF_DTYPE == RF_F32
    a = s[0];
    b = s[1];
#else
    const unsigned w = *reinterpret_cast<const unsigned*>(s);
    a = to_f((elem)(w & 0xffffu));
    b = to_f((elem)(w >> 16));
#endif
}

// Stores two floats as two consecutive elements.
RF_DEVICE void store2(elem* d, float a, float b) {
#if RF_DTYPE == RF_F32
    d[0] = a;
    d[1] = b;
#else
    *reinterpret_cast<unsigned*>(d) = (unsigned)from_f(a) | ((unsigned)from_f(b) << 16);
#endif
}


// Query rows of one block: one 16-row matrix tile.
constexpr int RMAX = 16;

// Programmatic dependent launch (NVIDIA sm_90+): the host may queue a
// decode kernel so that its blocks start while the stream's previous
// kernel finishes (backends/flash_decode/launch.rs). Whatever that kernel
// wrote (K/V, Q, lengths, block tables, the merge counters and partials a
// previous decode call uses) is visible only after griddepcontrol.wait, so
// every block waits here before its first memory access; launched
// normally, the wait returns at once. The block then lets the stream's
// next kernel be scheduled (it waits in turn for this grid to complete).
RF_DEVICE void wait_prior_grid() {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}


// What one block works on, fixed for its lifetime.
struct Work {
    int b, hk, r0, rows, group;
    long long len;     // this sequence's keys
    long long shift;   // query row sq sits at key position sq + shift
    long long kb, ke;  // this split's keys, [kb, ke)
    long long lo_any, hi_any;    // keys some row sees (clamped to the split)
    long long lo_all, hi_all;    // keys every row sees (tiles inside need no mask)
    bool bad;          // an invalid sequence length
};

// Visible keys [lo, hi) of the query at position `pos` in a sequence of `len`.
RF_DEVICE void row_range(const rf_decode_params& p, long long pos, long long len, long long& lo, long long& hi) {
    lo = p.window_left >= 0 ? max_ll(0, pos - p.window_left) : 0;
    hi = p.window_right >= 0 ? min_ll(len, pos + p.window_right + 1) : len;
}

// The block's work; `len_of` loads sequence b's length from p.seq_lens.
template <class LenOf>
RF_DEVICE Work make_work_with(const rf_decode_params& p, LenOf len_of) {
    // grid: x = split, y = KV head x row chunk, z = sequence
    Work w;
    const int group = p.heads_q / p.heads_kv;
    const int chunks = (group * p.seq_q + RMAX - 1) / RMAX;
    w.group = group;
    w.b = (int)blockIdx.z;
    w.hk = (int)blockIdx.y / chunks;
    w.r0 = ((int)blockIdx.y % chunks) * RMAX;
    w.rows = group * p.seq_q - w.r0 < RMAX ? group * p.seq_q - w.r0 : RMAX;
    long long len = p.seq_kv;
    if (p.seq_lens != 0) len = len_of(w.b);
    const long long cap = p.block_table != 0 ? ((long long)p.table_width << p.block_shift) : p.seq_kv;
    w.bad = len < 0 || len > p.seq_kv || len > cap;
    w.len = w.bad ? 0 : len;
    w.shift = w.len - p.seq_q;
    w.kb = (long long)blockIdx.x * p.split_keys;
    w.ke = min_ll(w.kb + p.split_keys, w.len);
    const long long pos_min = w.r0 / group + w.shift, pos_max = (w.r0 + w.rows - 1) / group + w.shift;
    long long lo_a, hi_a, lo_b, hi_b;
    row_range(p, pos_min, w.len, lo_a, hi_a);
    row_range(p, pos_max, w.len, lo_b, hi_b);
    // Both bounds grow with the position: the first row has the lowest.
    w.lo_any = max_ll(lo_a, w.kb);
    w.hi_any = min_ll(hi_b, w.ke);
    w.lo_all = lo_b;
    w.hi_all = min_ll(hi_a, w.ke);
    return w;
}

RF_DEVICE Work make_work(const rf_decode_params& p) {
    return make_work_with(p, [&](int b) { return reinterpret_cast<const int*>(p.seq_lens)[b]; });
}


// Early L2 prefetch (NVIDIA sm_90+): before griddepcontrol.wait a block
// asks L2 for the K and V rows of its first RF_DECODE_EARLY_L2 tiles
// (cp.async.bulk.prefetch, one row of one head per instruction), so that
// under an overlapping launch their DRAM latency passes while the stream's
// previous kernel finishes (H100, back-to-back calls, batch 1 x 8192: f32
// 34.1 -> 33.1 us; bf16 22.5 -> 20.0 us in decode3's call 1, whose f16/bf16
// kernel had this branch's sm_90 code; docs/perf.md, decode3). A prefetch changes no memory, and L2 is where
// every SM's stores land, so K/V that a previous kernel is still writing
// are never read stale: the copies that read them come after the wait.
// Paged K/V: the lengths and block-table entries read here may be stale
// for the same reason; they are read past L1 (ld.global.cg, so no stale
// line stays for the real reads after the wait) and only pick which rows
// to prefetch: an entry outside the pool prefetches nothing. 0 = none
// (ROCMFORGE_DECODE_TUNE=early=N); 2 and 4 tiles measured no better than 1.
#ifndef RF_DECODE_EARLY_L2
#define RF_DECODE_EARLY_L2 1
#endif

RF_DEVICE int load_cg_i32(const int* a) {
#if defined(RF_CUDA)
    int x;
    asm volatile("ld.global.cg.s32 %0, [%1];\n" : "=r"(x) : "l"(a));
    return x;
#else
    return *a;
#endif
}

template <int BN, int D, int THREADS>
RF_DEVICE void prefetch_early(const rf_decode_params& p) {
#if RF_DECODE_EARLY_L2 > 0 && defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const Work w =
        make_work_with(p, [&](int b) { return load_cg_i32(reinterpret_cast<const int*>(p.seq_lens) + b); });
    if (w.bad || w.hi_any <= w.lo_any) return;
    const long long n0 = w.lo_any / BN * BN;
    const long long end = min_ll(n0 + (long long)RF_DECODE_EARLY_L2 * BN, w.hi_any);
    const elem* kbase = reinterpret_cast<const elem*>(p.k) + w.hk * p.strides.k.head;
    const elem* vbase = reinterpret_cast<const elem*>(p.v) + w.hk * p.strides.v.head;
    const int* table = reinterpret_cast<const int*>(p.block_table) + (long long)w.b * p.table_width;
    constexpr unsigned ROW_BYTES = D * (unsigned)sizeof(elem);
    for (long long j = n0 + (long long)threadIdx.x; j < end; j += THREADS) {
        long long koff = w.b * p.strides.k.batch + j * p.strides.k.seq;
        long long voff = w.b * p.strides.v.batch + j * p.strides.v.seq;
        if (p.block_table != 0) {
            const int blk = load_cg_i32(table + (j >> p.block_shift));
            if (blk < 0 || blk >= p.num_blocks) continue;
            const long long in = j & ((1ll << p.block_shift) - 1);
            koff = blk * p.strides.k.batch + in * p.strides.k.seq;
            voff = blk * p.strides.v.batch + in * p.strides.v.seq;
        }
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(kbase + koff), "r"(ROW_BYTES) : "memory");
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(vbase + voff), "r"(ROW_BYTES) : "memory");
    }
#else
    (void)p;
#endif
}

// 16 bytes of K or V into shared memory (rf_flash::copy16); with
// RF_DECODE_L2_PREFETCH = 64, 128 or 256 (NVIDIA sm_80+) the copy also asks
// L2 to fetch that many bytes around it (0 or undefined: no hint).
RF_DEVICE void copy16_kv(elem* dst, const elem* src, bool ok) {
#if defined(RF_DECODE_L2_PREFETCH) && RF_DECODE_L2_PREFETCH > 0 && defined(RF_CUDA) && __CUDA_ARCH__ >= 800
#define RF_DECODE_STR2(x) #x
#define RF_DECODE_STR(x) RF_DECODE_STR2(x)
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global.L2::" RF_DECODE_STR(RF_DECODE_L2_PREFETCH) "B [%0], [%1], 16, %2;\n" ::"r"(d),
                 "l"(src), "r"(ok ? 16 : 0));
#else
    copy16(dst, src, ok);
#endif
}

// The K/V copies walk rows: with a thread layout that repeats every
// THREADS chunks (RS whole rows per pass), each thread keeps one column and
// steps through rows row0, row0 + RS, ...; dense K/V advance a pointer (a
// compare and two adds per 16-byte copy), paged K/V look up each row's
// pool block. The general path below recomputed 64-bit index products for
// every copy: at batch 1 that was half the instructions of a block.
// RF_DECODE_ROW_WALK=0 (ROCMFORGE_DECODE_TUNE=row_walk=0) keeps the general
// path for every layout.
#ifndef RF_DECODE_ROW_WALK
#define RF_DECODE_ROW_WALK 1
#endif

// Paged copies in runs: with the pool's block size BS = 1 << SHIFT known
// at compile time (one unrolled copy per block size the backend takes), a
// thread's rows of one tile fall in BN / BS pool blocks, BS / RS rows each;
// it looks each block up once and steps a pointer through the block's
// rows, straight-line like the dense copies (the per-row lookup below, the
// fallback, costs a table load and two 64-bit products per row). Paged f32
// went from 0.88-0.90 to 0.95-0.96 of contiguous on the H100 (docs/perf.md,
// decode3). Needs n0 a multiple of BN, BN of BS, BS of RS.
// RF_DECODE_PAGED_RUNS=0 (ROCMFORGE_DECODE_TUNE=paged_runs=0): per row.
#ifndef RF_DECODE_PAGED_RUNS
#define RF_DECODE_PAGED_RUNS 1
#endif

template <int SHIFT, int BN, int KV_STRIDE, int RS>
RF_DEVICE bool load_kv_paged_runs(const rf_decode_params& p, const elem* kbase, const elem* vbase, const int* table,
                                  long long n0, int row0, int col, long long left, elem* dst) {
    constexpr int BS = 1 << SHIFT, RUNS = BN / BS, PER = BS / RS;
    static_assert(BN % BS == 0 && BS % RS == 0, "whole pool blocks per tile, whole passes per block");
    const long long kstep = rf_flash::opaque(RS * p.strides.k.seq), vstep = rf_flash::opaque(RS * p.strides.v.seq);
    const int first = (int)(n0 >> SHIFT);
    bool bad = false;
#pragma unroll
    for (int r = 0; r < RUNS; ++r) {
        // The run's first row of this thread is inside the split.
        const bool any = (long long)(r * BS) < left;
        int blk = any ? table[first + r] : 0;
        const bool valid = blk >= 0 && blk < p.num_blocks;
        bad |= any && !valid;
        blk = valid ? blk : 0;
        const elem* kp = kbase + blk * p.strides.k.batch + row0 * p.strides.k.seq + col;
        const elem* vp = vbase + blk * p.strides.v.batch + row0 * p.strides.v.seq + col;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int ri = r * BS + i * RS;
            const bool ok = valid && (long long)ri < left;
            copy16_kv(dst + ri * KV_STRIDE, ok ? kp : kbase, ok);
            copy16_kv(dst + (BN + ri) * KV_STRIDE, ok ? vp : vbase, ok);
            kp += kstep;
            vp += vstep;
        }
    }
    return bad;
}

template <int BN, int D, int KV_STRIDE, int THREADS>
RF_DEVICE bool load_kv_rows(const rf_decode_params& p, const Work& w, long long n0, elem* stage) {
    using rf_flash::opaque;
    constexpr int VEC = 16 / (int)sizeof(elem), CPR = D / VEC, RS = THREADS / CPR;
    const int row0 = (int)threadIdx.x / CPR, col = ((int)threadIdx.x % CPR) * VEC;
    const elem* kbase = reinterpret_cast<const elem*>(p.k) + w.hk * p.strides.k.head;
    const elem* vbase = reinterpret_cast<const elem*>(p.v) + w.hk * p.strides.v.head;
    const long long j0 = n0 + row0;
    // Rows of this thread still inside the split (keys at or past its end
    // are zeros, never read).
    const long long left = w.ke - j0;
    elem* dst = stage + row0 * KV_STRIDE + col;
    if (p.block_table == 0) {
        const elem* kp = kbase + w.b * p.strides.k.batch + j0 * p.strides.k.seq + col;
        const elem* vp = vbase + w.b * p.strides.v.batch + j0 * p.strides.v.seq + col;
        const long long kstep = opaque(RS * p.strides.k.seq), vstep = opaque(RS * p.strides.v.seq);
#pragma unroll
        for (int i = 0; i < BN / RS; ++i) {
            const bool ok = (long long)(i * RS) < left;
            copy16_kv(dst + i * RS * KV_STRIDE, ok ? kp : kbase, ok);
            copy16_kv(dst + (BN + i * RS) * KV_STRIDE, ok ? vp : vbase, ok);
            kp += kstep;
            vp += vstep;
        }
        return false;
    }
    const int* table = reinterpret_cast<const int*>(p.block_table) + (long long)w.b * p.table_width;
#if RF_DECODE_PAGED_RUNS
    if constexpr (BN % 16 == 0 && 16 % RS == 0) {
        if (p.block_shift == 4)
            return load_kv_paged_runs<4, BN, KV_STRIDE, RS>(p, kbase, vbase, table, n0, row0, col, left, dst);
    }
    if constexpr (BN % 32 == 0 && 32 % RS == 0) {
        if (p.block_shift == 5)
            return load_kv_paged_runs<5, BN, KV_STRIDE, RS>(p, kbase, vbase, table, n0, row0, col, left, dst);
    }
#endif
    const long long in_block = (1ll << p.block_shift) - 1;
    bool bad = false;
#pragma unroll
    for (int i = 0; i < BN / RS; ++i) {
        const long long j = j0 + i * RS;
        bool ok = (long long)(i * RS) < left;
        int blk = 0;
        if (ok) {
            blk = table[j >> p.block_shift];
            if (blk < 0 || blk >= p.num_blocks) {
                bad = true;
                ok = false;
            }
        }
        const long long in = j & in_block;
        const elem* kp = kbase + blk * p.strides.k.batch + in * p.strides.k.seq + col;
        const elem* vp = vbase + blk * p.strides.v.batch + in * p.strides.v.seq + col;
        copy16_kv(dst + i * RS * KV_STRIDE, ok ? kp : kbase, ok);
        copy16_kv(dst + (BN + i * RS) * KV_STRIDE, ok ? vp : vbase, ok);
    }
    return bad;
}

// Starts copying keys n0 .. n0 + BN of K and V into `stage` (K rows, then
// BN V rows, KV_STRIDE elements apart). Keys at or past the split's end
// are zeros, never read. Returns whether a block-table entry was out of
// range (its rows are zeros too).
template <int BN, int D, int KV_STRIDE, int THREADS>
RF_DEVICE bool load_kv(const rf_decode_params& p, const Work& w, long long n0, elem* stage) {
    constexpr int VEC = 16 / (int)sizeof(elem), CPR = D / VEC;
    if constexpr (RF_DECODE_ROW_WALK != 0 && THREADS % CPR == 0 && BN % (THREADS / CPR) == 0) {
        return load_kv_rows<BN, D, KV_STRIDE, THREADS>(p, w, n0, stage);
    }
    const elem* kbase = reinterpret_cast<const elem*>(p.k) + w.hk * p.strides.k.head;
    const elem* vbase = reinterpret_cast<const elem*>(p.v) + w.hk * p.strides.v.head;
    const int* table = p.block_table != 0 ? reinterpret_cast<const int*>(p.block_table) + (long long)w.b * p.table_width
                                          : nullptr;
    const long long in_block = (1ll << p.block_shift) - 1;
    bool bad = false;
    constexpr int CHUNKS = BN * CPR;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
        const int c = (int)threadIdx.x + i * THREADS;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int row = c / CPR, col = (c % CPR) * VEC;
            const long long j = n0 + row;
            bool ok = j < w.ke;
            long long koff = 0, voff = 0;
            if (ok && table != nullptr) {
                const int blk = table[j >> p.block_shift];
                if (blk < 0 || blk >= p.num_blocks) {
                    bad = true;
                    ok = false;
                }
                koff = blk * p.strides.k.batch + (j & in_block) * p.strides.k.seq;
                voff = blk * p.strides.v.batch + (j & in_block) * p.strides.v.seq;
            } else if (ok) {
                koff = w.b * p.strides.k.batch + j * p.strides.k.seq;
                voff = w.b * p.strides.v.batch + j * p.strides.v.seq;
            }
            copy16_kv(stage + row * KV_STRIDE + col, ok ? kbase + koff + col : kbase, ok);
            copy16_kv(stage + (BN + row) * KV_STRIDE + col, ok ? vbase + voff + col : vbase, ok);
        }
    }
    return bad;
}

// Writes columns c, c + 1 of the block's row r from its unnormalized sums
// (a0, a1), running max m (log2 domain) and sum l: O itself with one
// split, else the normalized partial O and its log2-sum-exp. A row with no
// visible key in the split is (0, -inf); one whose visible logits are all
// -inf has l = 0: with one split that is NaN (as the reference), with
// several its unnormalized O (0, or NaN from a visible NaN V) goes out
// with lse -inf and weight 0. `bad` (an invalid length or block-table
// entry) makes the row NaN.
template <int D>
RF_DEVICE void write_pair(const rf_decode_params& p, const Work& w, int r, int c, float a0, float a1, float m, float l,
                          bool bad) {
    const bool direct = p.num_splits == 1;
    const int rr = w.r0 + r, sq = rr / w.group, hq = w.hk * w.group + rr % w.group;
    long long lo, hi;
    row_range(p, sq + w.shift, w.len, lo, hi);
    const bool visible = max_ll(lo, w.kb) < min_ll(hi, w.ke);
    float lse = m + log2_acc(l);
    if (bad) {
        a0 = a1 = lse = nan_f();
    } else if (!visible) {
        a0 = a1 = 0.0f;
        lse = RF_NEG_INF;
    } else if (l == 0.0f) {
        if (direct) a0 = a1 = nan_f();
        lse = RF_NEG_INF;
    } else {
        a0 /= l;
        a1 /= l;
    }
    if (direct) {
        elem* out =
            reinterpret_cast<elem*>(p.o) + w.b * p.strides.o.batch + sq * p.strides.o.seq + hq * p.strides.o.head + c;
        store2(out, a0, a1);
    } else {
        const long long row = (((long long)blockIdx.x * p.batch + w.b) * p.seq_q + sq) * p.heads_q + hq;
        float* po = reinterpret_cast<float*>(p.part_o) + row * D + c;
        po[0] = a0;
        po[1] = a1;
        if (c == 0) reinterpret_cast<float*>(p.part_lse)[row] = lse;
    }
}
}  // namespace rf_decode
