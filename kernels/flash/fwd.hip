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
// NaN, Inf and huge values follow docs/semantics.md; the rare tiles that
// need more than the common path are found with a vote folded into a
// barrier the tile has anyway (rf/flash/nonfinite.h, rf/flash/tf32.h).
//
// Specialization (compile-time defines):
//   RF_DTYPE      RF_F32 | RF_F16 | RF_BF16 (Q, K, V and O share it)
//   RF_HEAD_DIM   32, 64, 96, 128 or 256
//   RF_F32_MODE   (f32 only) RF_F32_TF32X3 (default on sm_80+), RF_F32_SIMT
//                 (default elsewhere), RF_F32_TF32 (opt-in, tf32 accuracy)
//   RF_FLASH_BM / RF_FLASH_BN / RF_FLASH_WARPS / RF_FLASH_STAGES
//                 tuning overrides for the development harness only
//   RF_FLASH_DBG_NO_NF / _NO_TF32LOGITS / _NO_EXACT / _NO_VPASS, and
//   RF_FLASH_EXACT_LIMIT
//                 harness only: switch parts of the NaN/Inf/huge handling
//                 off (breaking docs/semantics.md) to measure what they cost
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
#include "rf/flash/config.h"
#include "rf/flash/device.h"
#include "rf/flash/tf32.h"
#include "rf/flash/nonfinite.h"
#include "rf/flash/schedule.h"

namespace rf_flash {

// This lane's shared addresses of its Q fragment (strip 0, k 0) and of its
// K and V fragments (key 0, column 0) of stage 0; unused without
// RF_FLASH_LANE_ADDR.
struct LaneAddr {
    unsigned q, k, v;
};

// Q fragments kept in registers (Q_IN_REGS), or a 1 x 1 placeholder.
constexpr int QF_M = Q_IN_REGS ? MT : 1;
constexpr int QF_K = Q_IN_REGS ? D / 16 : 1;

// Row maxima at or beyond this (log2 units) switch a strip to the exact
// exponent (see softmax_tile). RF_FLASH_EXACT_LIMIT overrides it for the
// development harness only (3e38f: never, to show what the exact path fixes).
#ifndef RF_FLASH_EXACT_LIMIT
#define RF_FLASH_EXACT_LIMIT 16777216.0f  // 2^24
#endif
constexpr float EXACT_LIMIT = RF_FLASH_EXACT_LIMIT;

struct RowState {
    float m[MT][RF_MMA_ROWS];  // running max of the (log2-scaled) logits
    float l[MT][RF_MMA_ROWS];  // this lane's part of the running sum
    bool exact[MT];            // the strip pre-scales S for the exponent (warp-uniform)
};

// The A operand of P V for strip mt, keys 16 ku.. of the tile: from the S
// registers where the layout allows, else from the warp's P staging tile.
// `finite`: the tile's inputs are finite, so P is (split-tf32's cheap split).
RF_DEVICE void p_operand(rf_frag_a& a, const rf_frag_c (&s)[MT][BN / 16], const rf_elem* p_s, int mt, int ku,
                         bool finite) {
    (void)finite;
#if RF_MMA_C_TO_A
    (void)p_s;
#if RF_FLASH_PRESPLIT && RF_FLASH_FAST_SPLIT
    if (finite) {
        rf_c_to_a_finite(a, s[mt][ku]);
        return;
    }
#endif
    rf_c_to_a(a, s[mt][ku]);
#else
    (void)s;
    rf_load_a(a, p_s, [&](int r, int c) { return PT::off(16 * mt + r, 16 * ku + c); });
#endif
}

// S = Q K^T for this warp's strips of one tile. With SPLIT_ACC the products
// of ACC_KK k blocks go to `acc` from zero, then one f32 add into S.
RF_DEVICE void qk_tile(rf_frag_c (&s)[MT][BN / 16], const rf_frag_a (&qf)[QF_M][QF_K], const rf_elem* sq,
                       const rf_elem* k_s, int strip0, unsigned q_lane, unsigned k_lane) {
    (void)q_lane;
    (void)k_lane;
    rf_frag_c acc[MT][BN / 16];  // unused without SPLIT_ACC
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) s[mt][nu].v[r] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
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
#if RF_FLASH_PRESPLIT && RF_FLASH_FAST_SPLIT
                // A non-finite Q flags every tile; nonfinite_logits then
                // replaces S wherever the IEEE product is not finite.
                rf_load_a_finite(qa[mt], sq,
                                 [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
#else
#if RF_FLASH_LANE_ADDR
                rf_load_a_at(qa[mt], q_lane + (unsigned)sizeof(rf_elem) * QT::off(16 * mt, 16 * kk));
#else
                rf_load_a(qa[mt], sq, [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
#endif
#endif
            }
        }
#pragma unroll
        for (int nu = 0; nu < BN / 16; ++nu) {
            rf_frag_b kb;
#if RF_FLASH_PRESPLIT
            rf_load_b_nk_split(kb, k_s, k_s + BN * KVT::STRIDE,
                               [&](int r, int c) { return KVT::off(16 * nu + r, 16 * kk + c); });
#else
#if RF_FLASH_LANE_ADDR
            rf_load_b_nk_at(kb, k_lane + (unsigned)sizeof(rf_elem) * KVT::off(16 * nu, 16 * kk));
#else
            rf_load_b_nk(kb, k_s, [&](int r, int c) { return KVT::off(16 * nu + r, 16 * kk + c); });
#endif
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
}

// Each row's visible keys of tile n0.. as [first, last] (key_interval);
// row0 is the strip base's query row in the sequence.
RF_DEVICE void row_intervals(int (&first)[MT][RF_MMA_ROWS], int (&last)[MT][RF_MMA_ROWS], const rf_flash_params& p,
                             int row0, long long shift, int n0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
            const long long pos = row0 + 16 * mt + rf_slot_row(sl) + shift;
            key_interval(pos, n0, p.window_left, p.window_right, p.seq_kv, first[mt][sl], last[mt][sl]);
        }
}

// Masked keys of a boundary tile become -inf (two integer compares each).
RF_DEVICE void mask_tile(rf_frag_c (&s)[MT][BN / 16], const rf_flash_params& p, int row0, long long shift, int n0) {
    int first[MT][RF_MMA_ROWS], last[MT][RF_MMA_ROWS];
    row_intervals(first, last, p, row0, shift, n0);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) {
                const int col = 16 * nu + rf_c_col(r), sl = rf_c_slot(r);
                if (col < first[mt][sl] || col > last[mt][sl]) s[mt][nu].v[r] = RF_NEG_INF;
            }
}

// Online softmax of strip mt over one tile. The running max only moves when
// some row of the warp grew by more than RESCALE_SLACK (log2 units): until
// then p = exp2(s - m) stays <= 2^RESCALE_SLACK, harmless in f32 and in the
// 16-bit P, and the O / l rescale is skipped (most tiles). `raw`: S is q.k
// and c_log2 = scale * log2(e) is applied here (else c_log2 = 1).
RF_DEVICE void softmax_tile(rf_frag_c (&s)[BN / 16], rf_frag_c (&o)[D / 16], RowState& st, int mt, float c_log2,
                            bool raw) {
    float mx[RF_MMA_ROWS], sum[RF_MMA_ROWS];
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        mx[sl] = RF_NEG_INF;
        sum[sl] = 0.0f;
    }
#pragma unroll
    for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) mx[rf_c_slot(r)] = fmaxf(mx[rf_c_slot(r)], s[nu].v[r]);
    bool grow = false;
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
        mx[sl] = mul_rn(rf_row_max(mx[sl]), c_log2);  // c > 0 keeps -inf and the order
        grow |= mx[sl] > st.m[mt][sl] + RESCALE_SLACK;
    }
    if (warp_any(grow)) {
        float alpha[RF_MMA_ROWS];
        bool huge = false;
#pragma unroll
        for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
            const float m_new = fmaxf(st.m[mt][sl], mx[sl]);
            // No visible key yet: the exponent subtracts 0, exp2(-inf) = 0.
            alpha[sl] = exp2_fast(st.m[mt][sl] - (m_new == RF_NEG_INF ? 0.0f : m_new));
            st.m[mt][sl] = m_new;
            st.l[mt][sl] *= alpha[sl];
            huge |= m_new != RF_NEG_INF && (m_new >= EXACT_LIMIT || m_new <= -EXACT_LIMIT);
        }
#pragma unroll
        for (int du = 0; du < D / 16; ++du)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) o[du].v[r] *= alpha[rf_c_slot(r)];
        st.exact[mt] = raw && warp_any(huge);
    }
    // p = exp2(s c - m): one FFMA, exact in s c - m but not in its
    // rounding: m = fl(max(s) c) differs from max(s) c by up to half an ulp,
    // harmless for ordinary logits, but for |m| >= 2^24 (logits near 1e30,
    // docs/semantics.md) that difference exceeds the exponent range and the
    // largest key's p becomes 0 or Inf (a zero or a NaN row). Such strips
    // take s = fl(s c) first and c = 1: then the exponent is fl(s c) - m,
    // 0 at the maximum.
#if !defined(RF_FLASH_DBG_NO_EXACT)
    float c = c_log2;
    if (st.exact[mt]) {
#pragma unroll
        for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
            for (int r = 0; r < RF_MMA_C_REGS; ++r) s[nu].v[r] = mul_rn(s[nu].v[r], c_log2);
        c = 1.0f;
    }
#else
    const float c = c_log2;
#endif
    float neg_m[RF_MMA_ROWS];
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) neg_m[sl] = st.m[mt][sl] == RF_NEG_INF ? 0.0f : -st.m[mt][sl];
#pragma unroll
    for (int nu = 0; nu < BN / 16; ++nu)
#pragma unroll
        for (int r = 0; r < RF_MMA_C_REGS; ++r) {
            const float e = exp2_fast(fma_f(s[nu].v[r], c, neg_m[rf_c_slot(r)]));
            s[nu].v[r] = e;
            sum[rf_c_slot(r)] += e;
        }
#pragma unroll
    for (int sl = 0; sl < RF_MMA_ROWS; ++sl) st.l[mt][sl] += sum[sl];
}

// O += P V, P rounded to the input type. With SPLIT_ACC one head-dim column
// block at a time over all keys of the tile, from zero, then one f32 add.
RF_DEVICE void pv_tile(rf_frag_c (&o)[MT][D / 16], const rf_frag_c (&s)[MT][BN / 16], rf_elem* p_s,
                       const rf_elem* v_s, unsigned v_lane, bool finite) {
    (void)v_lane;
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
            for (int mt = 0; mt < MT; ++mt) p_operand(pa[mt], s, p_s, mt, ku, finite);
#pragma unroll
            for (int du = 0; du < D / 16; ++du) {
                rf_frag_b vb;
#if RF_FLASH_LANE_ADDR
                rf_load_b_kn_at(vb, v_lane + (unsigned)sizeof(rf_elem) * KVT::off(16 * ku, 16 * du));
#else
                rf_load_b_kn(vb, v_s, [&](int r, int c) { return KVT::off(16 * ku + r, 16 * du + c); });
#endif
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) rf_mma(o[mt][du], pa[mt], vb);
            }
        }
    } else {
        rf_frag_a pa[MT][BN / 16];
#pragma unroll
        for (int ku = 0; ku < BN / 16; ++ku)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) p_operand(pa[mt][ku], s, p_s, mt, ku, finite);
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

// Normalizes O once (a row with no visible key is exactly zero, lse -inf),
// stages it in `o_s` (the Q area) and stores the valid rows with coalesced
// 16-byte writes. Starts and ends with a barrier.
RF_DEVICE void store_output(const rf_flash_params& p, const rf_frag_c (&o)[MT][D / 16], const RowState& st,
                            rf_elem* o_s, int b, int hq, int m0, int strip0) {
    __syncthreads();
    float* lse = reinterpret_cast<float*>(p.lse);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float inv[RF_MMA_ROWS], fill[RF_MMA_ROWS];
        bool empty[RF_MMA_ROWS];
#pragma unroll
        for (int sl = 0; sl < RF_MMA_ROWS; ++sl) {
            const float l = rf_row_sum(st.l[mt][sl]);
            empty[sl] = l == 0.0f;
            inv[sl] = recip(l);
            const int row = m0 + strip0 + 16 * mt + rf_slot_row(sl);
            // l = 0: no visible key (zeros), or every visible logit -inf
            // (NaN, docs/semantics.md: -inf - -inf).
            const long long pos = rf_query_pos(row, p.seq_q, p.seq_kv);
            const long long a = p.window_left >= 0 ? max_ll(pos - p.window_left, 0) : 0;
            const long long z = p.window_right >= 0 ? min_ll(pos + p.window_right, p.seq_kv - 1) : p.seq_kv - 1;
            fill[sl] = a <= z ? __int_as_float(0x7fc00000) : 0.0f;
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
                const float v = empty[sl] ? fill[sl] : o[mt][du].v[r] * inv[sl];
                o_s[QT::off(strip0 + 16 * mt + rf_c_row(r), 16 * du + rf_c_col(r))] = rf_to_elem(v);
            }
    }
    __syncthreads();
    rf_elem* o_g =
        reinterpret_cast<rf_elem*>(p.o) + b * p.strides.o.batch + m0 * p.strides.o.seq + hq * p.strides.o.head;
    const int rows_valid = p.seq_q - m0;
    constexpr int CHUNKS = BM * QT::CPR;
#pragma unroll
    for (int c0 = 0; c0 < CHUNKS; c0 += THREADS) {
        const int c = c0 + (int)threadIdx.x;
        if (CHUNKS % THREADS == 0 || c < CHUNKS) {
            const int row = c / QT::CPR, col = (c % QT::CPR) * VEC;
            if (row < rows_valid) {
                *reinterpret_cast<U32x4*>(o_g + row * p.strides.o.seq + col) =
                    *reinterpret_cast<const U32x4*>(o_s + QT::off(row, col));
            }
        }
    }
}

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
    const BlockWork w = block_work(p, blockIdx.x, blockIdx.y, blockIdx.z);
    const int hq = w.hq, hk = w.hk, b = w.b, m0 = w.m0, n_begin = w.n_begin, n_end = w.n_end;
    const long long shift = w.shift;
    const int m_last = (int)min_ll(m0 + BM, p.seq_q) - 1;

    const rf_elem* q_g = reinterpret_cast<const rf_elem*>(p.q) + b * p.strides.q.batch + m0 * p.strides.q.seq +
                         hq * p.strides.q.head;
    const rf_elem* k_g = reinterpret_cast<const rf_elem*>(p.k) + b * p.strides.k.batch + hk * p.strides.k.head;
    const rf_elem* v_g = reinterpret_cast<const rf_elem*>(p.v) + b * p.strides.v.batch + hk * p.strides.v.head;

    auto load_kv = [&](int nb, int stage) {
        const int n0 = nb * BN;
        load_rows<BN>(sK + stage * K_STAGE, k_g + n0 * p.strides.k.seq, p.strides.k.seq, p.seq_kv - n0);
        load_rows<BN>(sV + stage * V_STAGE, v_g + n0 * p.strides.v.seq, p.strides.v.seq, p.seq_kv - n0);
    };

    // Prologue: Q and the first STAGES - 1 tiles, one copy group each.
    load_rows<BM>(sQ, q_g, p.strides.q.seq, p.seq_q - m0);
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
    // Rows [pos_min, pos_max] of the block's valid rows decide which tiles
    // need per-element masking.
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
        st.exact[mt] = false;
    }
    rf_frag_a qf[QF_M][QF_K];
    const int strip0 = warp * MT * 16;  // first row of this warp, in the block
#if RF_FLASH_PRESPLIT
    bool q_bad = false;  // this thread's Q chunks hold an Inf or NaN
#endif
    bool any_nf = false;  // some tile took the non-finite paths (block-uniform)
    LaneAddr lane = {0u, 0u, 0u};
#if RF_FLASH_LANE_ADDR
    lane.q = rf_lane_a(sQ, [&](int r, int c) { return QT::off(strip0 + r, c); });
    lane.k = rf_lane_b_nk(sK, [&](int r, int c) { return KVT::off(r, c); });
    lane.v = rf_lane_b_kn(sV, [&](int r, int c) { return KVT::off(r, c); });
#endif

    for (int nb = n_begin; nb < n_end; ++nb) {
        const int it = nb - n_begin, n0 = nb * BN;
        // Tiles every valid row sees whole need no mask.
        const bool full = n0 + BN <= p.seq_kv && (p.window_left < 0 || n0 >= pos_max - p.window_left) &&
                          (p.window_right < 0 || n0 + BN - 1 <= pos_min + p.window_right);
        if (STAGES == 1) {
            __syncthreads();  // every warp is done with the previous tile
            load_kv(nb, 0);
            copy_commit();
            copy_wait<0>();
        } else {
            copy_wait<(STAGES >= 2 ? STAGES - 2 : 0)>();
        }
        rf_elem* const k_s = sK + (it % STAGES) * K_STAGE;
        rf_elem* const v_s = sV + (it % STAGES) * V_STAGE;
        // nf: the tile needs the non-finite paths. The vote rides on a
        // barrier the tile has anyway: with the tf32 presplit every tile
        // (Q, K or V non-finite; the split reads them all), else boundary
        // tiles only (V non-finite; only masked keys can leak).
#if RF_FLASH_PRESPLIT && defined(RF_FLASH_DBG_NO_NF)
        __syncthreads();
        presplit_tile(k_s, v_s);
        __syncthreads();
        const bool nf = false;
#elif RF_FLASH_PRESPLIT
        if (it == 0) q_bad = own_rows_nonfinite<BM>(sQ);  // Q landed with the first group
        __syncthreads();
        const bool nf = block_any(presplit_tile(k_s, v_s) || q_bad);
#else
        bool nf = false;
#if defined(RF_FLASH_DBG_NO_NF)
        __syncthreads();
#else
        if (full) {
            __syncthreads();
        } else {
            nf = block_any(own_rows_nonfinite<BN>(v_s));
        }
#endif
#endif

        if (nf) {
            // P V runs on V with its Inf and NaN zeroed; nonfinite_v_pass
            // adds their terms for the keys each row sees at the end.
            sanitize_v(v_s);
            __syncthreads();
        }

        if (Q_IN_REGS && it == 0) {
#pragma unroll
            for (int mt = 0; mt < QF_M; ++mt)
#pragma unroll
                for (int kk = 0; kk < QF_K; ++kk)
                    rf_load_a(qf[mt][kk], sQ,
                              [&](int r, int c) { return QT::off(strip0 + 16 * mt + r, 16 * kk + c); });
        }

        rf_frag_c s[MT][BN / 16];
        const unsigned stage = (unsigned)(it % STAGES);
        qk_tile(s, qf, sQ, k_s, strip0, lane.q, lane.k + stage * (unsigned)(K_STAGE * sizeof(rf_elem)));
#if RF_FLASH_PRESPLIT && !defined(RF_FLASH_DBG_NO_TF32LOGITS)
        if (nf) nonfinite_logits(s, sQ, k_s, strip0);
#endif

        if (STAGES > 1) {
            // Refill the stage every warp finished with (tile it - 1), after
            // the QK^T products so that they start right after the barrier.
            const int nx = nb + STAGES - 1;
            if (nx < n_end) load_kv(nx, (it + STAGES - 1) % STAGES);
            copy_commit();
        }

        // Logits. Plain scaling keeps S = q.k and folds scale * log2(e) into
        // the exponent; a soft-cap (or a scale <= 0) maps S to log2 units
        // first. Then the mask (boundary tiles only).
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
        if (!full) mask_tile(s, p, m0 + strip0, shift, n0);

#pragma unroll
        for (int mt = 0; mt < MT; ++mt) softmax_tile(s[mt], o[mt], st, mt, c_log2, raw);

        pv_tile(o, s, sP + warp * MT * 16 * PT::STRIDE, v_s, lane.v + stage * (unsigned)(V_STAGE * sizeof(rf_elem)),
                !nf);
        any_nf |= nf;
    }

    // Drain the copy pipeline (also when the block saw no tile) before the
    // Q area is reused to stage O.
    copy_wait<0>();
    store_output(p, o, st, sQ, b, hq, m0, strip0);
#if !defined(RF_FLASH_DBG_NO_VPASS)
    if (any_nf) {
        // Inf / NaN in V: their terms (rf/flash/nonfinite.h), with the row
        // maxima in the (now free) K area.
        float* m_s = reinterpret_cast<float*>(sK);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int sl = 0; sl < RF_MMA_ROWS; ++sl)
                if (rf_c_col(0) == 0) m_s[strip0 + 16 * mt + rf_slot_row(sl)] = st.m[mt][sl];
        __syncthreads();
        nonfinite_v_pass(v_pass_args(p), m_s);
    }
#endif
}
