// NVIDIA sm_80+ implementation of the tile API (see mma.h): one 16x16x16 step
// is two mma.sync m16n8k16 (f16/bf16) or, for f32, 2 k-steps x 2 n-tiles of
// m16n8k8 tf32 (x3 with the big/small split). Operands come from shared
// memory through ldmatrix (.trans for the V tile of 16-bit types).
//
// Accumulator layout of a lane (g = lane / 4, t = lane % 4), register r:
//   row = g + 8 * ((r / 2) % 2), col = 8 * (r / 4) + 2 * t + (r % 2)
// so a lane holds two rows (slots 0, 1) and the four lanes of a quad share
// them: row reductions are two xor-shuffles.
#pragma once

#if RF_WARP_SIZE != 32
#error "mma.sync needs 32-lane warps"
#endif

#define RF_MMA_C_REGS 8
#define RF_MMA_ROWS 2
#define RF_MMA_C_TO_A 1

struct rf_frag_c {
    float v[8];
};

RF_DEVICE constexpr int rf_c_slot(int r) { return (r >> 1) & 1; }
RF_DEVICE int rf_slot_row(int slot) { return (rf_lane() >> 2) + 8 * slot; }
RF_DEVICE int rf_c_row(int r) { return rf_slot_row(rf_c_slot(r)); }
RF_DEVICE int rf_c_col(int r) { return 8 * (r >> 2) + 2 * (rf_lane() & 3) + (r & 1); }
// C(row of `slot`, col) sits in register rf_c_reg(slot, col) of the quad
// lane holding column pair (col % 8) / 2.
RF_DEVICE int rf_c_src_lane(int col) { return (rf_lane() & ~3) | ((col & 7) >> 1); }
RF_DEVICE constexpr int rf_c_reg(int slot, int col) { return 4 * (col >> 3) + 2 * slot + (col & 1); }

RF_DEVICE float rf_row_max(float x) {
    x = fmaxf(x, rf_shfl_xor(x, 1));
    return fmaxf(x, rf_shfl_xor(x, 2));
}
RF_DEVICE float rf_row_sum(float x) {
    x += rf_shfl_xor(x, 1);
    return x + rf_shfl_xor(x, 2);
}

RF_DEVICE unsigned rf_smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Four 8x8 matrices of 16-bit elements (or 8x4 of 32-bit): lanes 8q..8q+7
// give the row addresses of matrix q; lane l receives row l/4, word l%4.
RF_DEVICE void rf_ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
RF_DEVICE void rf_ldsm_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

#if RF_DTYPE != RF_F32
// ---------------------------------------------------------------- f16 / bf16
// A (m16 x k16): x[0] rows 0-7 k 0-7, x[1] rows 8-15 k 0-7, x[2] rows 0-7
// k 8-15, x[3] rows 8-15 k 8-15; each a pair of elements (low = lower k).
struct rf_frag_a {
    unsigned x[4];
};
// B (k16 x n16) as two m16n8k16 B operands: x[0], x[1] for n 0-7 (k 0-7,
// k 8-15), x[2], x[3] for n 8-15.
struct rf_frag_b {
    unsigned x[4];
};

template <class Off>
RF_DEVICE void rf_load_a(rf_frag_a& a, const rf_elem* s, Off off) {
    const int l = rf_lane();
    rf_ldsm_x4(a.x, rf_smem_u32(s + off(l & 15, (l >> 4) * 8)));
}

template <class Off>
RF_DEVICE void rf_load_b_nk(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane(), q = l >> 3;
    rf_ldsm_x4(b.x, rf_smem_u32(s + off((q >> 1) * 8 + (l & 7), (q & 1) * 8)));
}

template <class Off>
RF_DEVICE void rf_load_b_kn(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane(), q = l >> 3;
    rf_ldsm_x4_trans(b.x, rf_smem_u32(s + off((q & 1) * 8 + (l & 7), (q >> 1) * 8)));
}

// The same loads in two steps, for linear tile layouts (off(r0 + r, c0 + c)
// = off(r, c) + off(r0, c0)): rf_lane_*(s, off) is this lane's shared
// address of the fragment at (0, 0), computed once; rf_load_*_at(frag, lane
// + bytes) loads the fragment whose corner is `bytes` further. With the lane
// address kept in a register, the per-fragment offset is a constant the
// compiler puts in the instruction (NVRTC 13.0 recomputed each fragment's
// full address inside the flash tile loop from the lambda form: ~150 more
// integer instructions per tile and a spill at 255 registers).
template <class Off>
RF_DEVICE unsigned rf_lane_a(const rf_elem* s, Off off) {
    const int l = rf_lane();
    return rf_smem_u32(s + off(l & 15, (l >> 4) * 8));
}
template <class Off>
RF_DEVICE unsigned rf_lane_b_nk(const rf_elem* s, Off off) {
    const int l = rf_lane(), q = l >> 3;
    return rf_smem_u32(s + off((q >> 1) * 8 + (l & 7), (q & 1) * 8));
}
template <class Off>
RF_DEVICE unsigned rf_lane_b_kn(const rf_elem* s, Off off) {
    const int l = rf_lane(), q = l >> 3;
    return rf_smem_u32(s + off((q & 1) * 8 + (l & 7), (q >> 1) * 8));
}
RF_DEVICE void rf_load_a_at(rf_frag_a& a, unsigned addr) { rf_ldsm_x4(a.x, addr); }
RF_DEVICE void rf_load_b_nk_at(rf_frag_b& b, unsigned addr) { rf_ldsm_x4(b.x, addr); }
RF_DEVICE void rf_load_b_kn_at(rf_frag_b& b, unsigned addr) { rf_ldsm_x4_trans(b.x, addr); }
#define RF_MMA_LANE_ADDR 1

RF_DEVICE void rf_mma_16816(float* c, const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if RF_DTYPE == RF_BF16
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

RF_DEVICE void rf_mma(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
    rf_mma_16816(c.v, a.x, b.x[0], b.x[1]);
    rf_mma_16816(c.v + 4, a.x, b.x[2], b.x[3]);
}

// Two floats to a packed pair, `lo` in the low half (the lower k index).
RF_DEVICE unsigned rf_pack2(float lo, float hi) {
    unsigned r;
#if RF_DTYPE == RF_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}

// The m16n8 accumulator pair of one 16x16 tile is, element for element, the
// m16k16 A operand layout: P never leaves registers.
RF_DEVICE void rf_c_to_a(rf_frag_a& a, const rf_frag_c& c) {
    a.x[0] = rf_pack2(c.v[0], c.v[1]);
    a.x[1] = rf_pack2(c.v[2], c.v[3]);
    a.x[2] = rf_pack2(c.v[4], c.v[5]);
    a.x[3] = rf_pack2(c.v[6], c.v[7]);
}

#else
// ---------------------------------------------------------------- f32 (tf32)
// m16n8k8 tf32 operands, per k-step s (k 8s..8s+7):
//   A: [4s+0] (g, t)  [4s+1] (g+8, t)  [4s+2] (g, t+4)  [4s+3] (g+8, t+4)
//   B: [4s+2j+0] (k=t, n=8j+g)  [4s+2j+1] (k=t+4, n=8j+g)   for n-tile j
// `big` is x rounded to tf32, `small` the tf32 rounding of x - big.
struct rf_frag_a {
    unsigned big[8], small[8];
};
struct rf_frag_b {
    unsigned big[8], small[8];
};

RF_DEVICE unsigned rf_to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

// Splits x into big + small. An infinite x has big = x and small = 0 (so
// Inf propagates as Inf, not as NaN from Inf - Inf); NaN stays NaN in big.
RF_DEVICE void rf_split_tf32(float x, unsigned& big, unsigned& small) {
    big = rf_to_tf32(x);
    // sm_80/sm_90 emulate cvt.rna.tf32 with an add and a mask that turn a
    // NaN whose top 10 mantissa bits are clear (e.g. 0x7f800001) into Inf
    // (seen on an H100): keep it a NaN the tensor cores read as one.
    if (x != x) big = __float_as_uint(x) | 0x00400000u;
#if RF_F32_MODE == RF_F32_TF32X3
    const float rest = x - __uint_as_float(big);
    small = rf_to_tf32(rest == rest ? rest : 0.0f);
#else
    small = 0u;
#endif
}

template <int N>
RF_DEVICE void rf_split_all(const unsigned (&raw)[N], unsigned (&big)[N], unsigned (&small)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) rf_split_tf32(__uint_as_float(raw[i]), big[i], small[i]);
}

// The same split for finite x in integer arithmetic: rounding the 13 low
// bits of the magnitude half away from zero (add half an ulp, mask) is
// exactly cvt.rna.tf32, which sm_80/sm_90 emulate with a compare, select,
// add and mask. small = x - big is exact (at most 13 significant bits) and
// goes to the tensor cores as it is: they read the top 19 bits of a tf32
// operand, i.e. truncate small to tf32 (|error| < 2^-10 |small| <= 2^-21 |x|
// instead of 2^-22 |x| rounded). Measured on an H100 (2026-11-22, relative
// Frobenius error vs f64 at (1,8,1024,128)): 4.68e-7 / 3.61e-7 (non-causal /
// causal) against 4.63e-7 / 3.58e-7 with small rounded, and PyTorch
// EFFICIENT's 6.71e-7 / 4.94e-7; 7 % faster. RF_TF32_SMALL_RN 1 rounds small
// too (5 instructions instead of 3; ~11 for rf_split_tf32). Not for Inf or
// NaN: Inf gives a NaN small part, and a NaN whose low mantissa bits are all
// set carries into the sign and becomes -0. Callers use it only on values
// they know finite, or where a tile with a non-finite input takes
// rf_split_tf32's path instead.
#ifndef RF_TF32_SMALL_RN
#define RF_TF32_SMALL_RN 0
#endif
RF_DEVICE unsigned rf_tf32_rna_bits(unsigned w) { return (w + 0x1000u) & 0xffffe000u; }
RF_DEVICE void rf_split_tf32_finite(float x, unsigned& big, unsigned& small) {
    big = rf_tf32_rna_bits(__float_as_uint(x));
#if RF_F32_MODE == RF_F32_TF32X3
    const unsigned rest = __float_as_uint(x - __uint_as_float(big));
    small = RF_TF32_SMALL_RN ? rf_tf32_rna_bits(rest) : rest;
#else
    small = 0u;
#endif
}

template <int N>
RF_DEVICE void rf_split_all_finite(const unsigned (&raw)[N], unsigned (&big)[N], unsigned (&small)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) rf_split_tf32_finite(__uint_as_float(raw[i]), big[i], small[i]);
}

// The raw 32-bit words of an A fragment at `s`, before the tf32 split.
template <class Off>
RF_DEVICE void rf_load_a_raw(unsigned (&raw)[8], const rf_elem* s, Off off) {
    const int l = rf_lane();
    unsigned r0[4], r1[4];
    // 32-bit words through the b16 ldmatrix: an 8x8 b16 matrix is 8 rows of
    // four f32; matrix q of step s covers rows 8(q%2).., k 8s + 4(q/2)...
    rf_ldsm_x4(r0, rf_smem_u32(s + off(l & 15, (l >> 4) * 4)));
    rf_ldsm_x4(r1, rf_smem_u32(s + off(l & 15, 8 + (l >> 4) * 4)));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        raw[i] = r0[i];
        raw[4 + i] = r1[i];
    }
}

template <class Off>
RF_DEVICE void rf_load_a(rf_frag_a& a, const rf_elem* s, Off off) {
    unsigned raw[8];
    rf_load_a_raw(raw, s, off);
    rf_split_all(raw, a.big, a.small);
}

// rf_load_a with rf_split_tf32_finite: for A operands known finite, or whose
// non-finite products the caller replaces (rf/flash/tf32.h).
template <class Off>
RF_DEVICE void rf_load_a_finite(rf_frag_a& a, const rf_elem* s, Off off) {
    unsigned raw[8];
    rf_load_a_raw(raw, s, off);
    rf_split_all_finite(raw, a.big, a.small);
}

template <class Off>
RF_DEVICE void rf_load_b_nk(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane(), q = l >> 3;
    unsigned r0[4], r1[4];
    rf_ldsm_x4(r0, rf_smem_u32(s + off((q >> 1) * 8 + (l & 7), (q & 1) * 4)));
    rf_ldsm_x4(r1, rf_smem_u32(s + off((q >> 1) * 8 + (l & 7), 8 + (q & 1) * 4)));
    const unsigned raw[8] = {r0[0], r0[1], r0[2], r0[3], r1[0], r1[1], r1[2], r1[3]};
    rf_split_all(raw, b.big, b.small);
}

// B[k][n] = smem[n][k] from operands split ahead of time (rf_split_tf32
// applied when the tile was staged): `big` and `small` are two tiles with the
// same layout holding tf32 bit patterns. No conversion work per warp.
template <class Off>
RF_DEVICE void rf_load_b_nk_split(rf_frag_b& b, const rf_elem* big, const rf_elem* small, Off off) {
    const int l = rf_lane(), q = l >> 3;
    const int o0 = off((q >> 1) * 8 + (l & 7), (q & 1) * 4), o1 = off((q >> 1) * 8 + (l & 7), 8 + (q & 1) * 4);
    unsigned r0[4], r1[4];
    rf_ldsm_x4(r0, rf_smem_u32(big + o0));
    rf_ldsm_x4(r1, rf_smem_u32(big + o1));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        b.big[i] = r0[i];
        b.big[4 + i] = r1[i];
    }
#if RF_F32_MODE == RF_F32_TF32X3
    rf_ldsm_x4(r0, rf_smem_u32(small + o0));
    rf_ldsm_x4(r1, rf_smem_u32(small + o1));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        b.small[i] = r0[i];
        b.small[4 + i] = r1[i];
    }
#else
    (void)small;
#pragma unroll
    for (int i = 0; i < 8; ++i) b.small[i] = 0u;
#endif
}

// Where key j of a 16-key block sits when V is staged transposed for
// rf_load_b_nk_split: the k-step order rf_c_to_a gives P (see below).
RF_DEVICE constexpr int rf_tf32_key_slot(int j) { return (j & ~7) + ((j & 7) >> 1) + 4 * (j & 1); }

// V tile. The keys of a k-step are taken in the order 0,2,4,6 (k = t) and
// 1,3,5,7 (k = t + 4): the same order rf_c_to_a gives P, so that P's
// accumulator registers are A operands as they stand (see rf_c_to_a).
template <class Off>
RF_DEVICE void rf_load_b_kn(rf_frag_b& b, const rf_elem* s, Off off) {
    const int l = rf_lane(), g = l >> 2, t = l & 3;
    unsigned raw[8];
#pragma unroll
    for (int st = 0; st < 2; ++st) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            raw[4 * st + 2 * j + 0] = __float_as_uint(s[off(8 * st + 2 * t, 8 * j + g)]);
            raw[4 * st + 2 * j + 1] = __float_as_uint(s[off(8 * st + 2 * t + 1, 8 * j + g)]);
        }
    }
    rf_split_all(raw, b.big, b.small);
}

RF_DEVICE void rf_mma_1688(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

RF_DEVICE void rf_mma(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int bi = 4 * s + 2 * j;
#if RF_F32_MODE == RF_F32_TF32X3
            // Small products first: they are the least significant.
            rf_mma_1688(c.v + 4 * j, a.small + 4 * s, b.big[bi], b.big[bi + 1]);
            rf_mma_1688(c.v + 4 * j, a.big + 4 * s, b.small[bi], b.small[bi + 1]);
#endif
            rf_mma_1688(c.v + 4 * j, a.big + 4 * s, b.big[bi], b.big[bi + 1]);
        }
    }
}

// c += big(a) * big(b) only: one tf32 product, the IEEE result wherever an
// operand is infinite or NaN (the small products are not; see
// rf/flash/tf32.h).
RF_DEVICE void rf_mma_hi(rf_frag_c& c, const rf_frag_a& a, const rf_frag_b& b) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int bi = 4 * s + 2 * j;
            rf_mma_1688(c.v + 4 * j, a.big + 4 * s, b.big[bi], b.big[bi + 1]);
        }
    }
}

// The words of accumulator tile c in the order rf_c_to_a needs (below).
RF_DEVICE void rf_c_raw_as_a(unsigned (&raw)[8], const rf_frag_c& c) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
        raw[4 * s + 0] = __float_as_uint(c.v[4 * s + 0]);
        raw[4 * s + 1] = __float_as_uint(c.v[4 * s + 2]);
        raw[4 * s + 2] = __float_as_uint(c.v[4 * s + 1]);
        raw[4 * s + 3] = __float_as_uint(c.v[4 * s + 3]);
    }
}

// Accumulator tile j (keys 8j..8j+7) becomes k-step j of A, keys permuted
// as rf_load_b_kn expects: A (g, t) = P(g, 2t), A (g, t+4) = P(g, 2t+1).
RF_DEVICE void rf_c_to_a(rf_frag_a& a, const rf_frag_c& c) {
    unsigned raw[8];
    rf_c_raw_as_a(raw, c);
    rf_split_all(raw, a.big, a.small);
}

// rf_c_to_a for accumulators known finite (rf_split_tf32_finite).
RF_DEVICE void rf_c_to_a_finite(rf_frag_a& a, const rf_frag_c& c) {
    unsigned raw[8];
    rf_c_raw_as_a(raw, c);
    rf_split_all_finite(raw, a.big, a.small);
}
#endif
