// Which work a block of the fused attention kernel (kernels/flash/fwd.hip)
// does: its query tile, head, batch and key tiles, and its share of the V
// pass (rf/flash/nonfinite.h).
#pragma once
#include "rf/mask.h"
#include "rf/flash_params.h"
#include "rf/flash/device.h"
#include "rf/flash/nonfinite.h"

#ifndef RF_FLASH_GLOBAL_ORDER
#define RF_FLASH_GLOBAL_ORDER 1  // 0: longest first within each head only
#endif

namespace rf_flash {

// What block (bx, by, bz) computes: query tile m0.. of head hq (KV head hk),
// batch b, key tiles [n_begin, n_end). Without a right bound every query
// tile costs the same: m is the fastest index, so the blocks of one head run
// together and share K/V in L2. With one (causal), the last query tiles see
// the most keys: blocks are handed out longest first over the whole grid
// (all heads' last tiles, then the next...), so the short ones fill the
// tail. Blocks start in linear (x, y, z) order; the grid keeps its shape.
struct BlockWork {
    int hq, hk, b, m0, n_begin, n_end;
    long long shift;  // a query row's key position is row + shift (rf/mask.h)
};

RF_DEVICE BlockWork block_work(const rf_flash_params& p, unsigned bx, unsigned by, unsigned bz) {
    BlockWork w;
    int m_block;
    if (RF_FLASH_GLOBAL_ORDER && p.window_right >= 0) {
        const long long hb_count = (long long)gridDim.y * gridDim.z;
        const long long lin = bx + (long long)gridDim.x * (by + (long long)gridDim.y * bz);
        const long long hb = lin % hb_count;
        m_block = (int)(gridDim.x - 1 - lin / hb_count);
        w.hq = (int)(hb % gridDim.y);
        w.b = (int)(hb / gridDim.y);
    } else {
        m_block = p.window_right >= 0 ? (int)(gridDim.x - 1 - bx) : (int)bx;
        w.hq = (int)by;
        w.b = (int)bz;
    }
    w.hk = w.hq / (p.heads_q / p.heads_kv);
    w.m0 = m_block * BM;
    w.shift = rf_query_pos(0, p.seq_q, p.seq_kv);
    const int m_last = (int)min_ll(w.m0 + BM, p.seq_q) - 1;
    // Key tiles the block can see: [pos_min - left, pos_max + right].
    long long lo = 0, hi = p.seq_kv;
    if (p.window_left >= 0) lo = max_ll(lo, w.m0 + w.shift - p.window_left);
    if (p.window_right >= 0) hi = min_ll(hi, m_last + w.shift + p.window_right + 1);
    w.n_begin = (int)(min_ll(lo, p.seq_kv) / BN);
    w.n_end = hi > lo ? (int)((hi + BN - 1) / BN) : w.n_begin;
    return w;
}

// The block's share of the V pass (rf/flash/nonfinite.h). Its coordinates
// are recomputed (opaque block index) rather than kept live through the
// tile loop, where every register counts.
RF_DEVICE VPass v_pass_args(const rf_flash_params& p) {
    const BlockWork w = block_work(p, opaque_u32(blockIdx.x), opaque_u32(blockIdx.y), opaque_u32(blockIdx.z));
    VPass a;
    a.q = reinterpret_cast<const rf_elem*>(p.q) + w.b * p.strides.q.batch + w.hq * p.strides.q.head;
    a.k = reinterpret_cast<const rf_elem*>(p.k) + w.b * p.strides.k.batch + w.hk * p.strides.k.head;
    a.v = reinterpret_cast<const rf_elem*>(p.v) + w.b * p.strides.v.batch + w.hk * p.strides.v.head;
    a.o = reinterpret_cast<rf_elem*>(p.o) + w.b * p.strides.o.batch + w.hq * p.strides.o.head;
    a.q_stride = p.strides.q.seq;
    a.k_stride = p.strides.k.seq;
    a.v_stride = p.strides.v.seq;
    a.o_stride = p.strides.o.seq;
    a.window_left = p.window_left;
    a.window_right = p.window_right;
    a.shift = w.shift;
    a.seq_q = p.seq_q;
    a.seq_kv = p.seq_kv;
    a.m0 = w.m0;
    a.n_begin = w.n_begin;
    a.n_end = w.n_end;
    a.scale = p.scale;
    a.softcap = p.softcap;
    return a;
}

}  // namespace rf_flash
