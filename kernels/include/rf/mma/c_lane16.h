// The accumulator layout the SIMT, MFMA and WMMA flavours share: lane l
// holds column l % 16 of the 16x16 C tile, one register per row "slot",
// and the 16 lanes of a row group reduce a row by butterfly shuffles. The
// including flavour defines rf_slot_row(slot) (which row a slot is) before
// including this header.
#pragma once

RF_DEVICE constexpr int rf_c_slot(int r) { return r; }
RF_DEVICE int rf_c_row(int r) { return rf_slot_row(r); }
RF_DEVICE int rf_c_col(int) { return rf_lane() & 15; }
// C(row of `slot`, col) sits in register `slot` of lane (l & ~15) | col.
RF_DEVICE int rf_c_src_lane(int col) { return (rf_lane() & ~15) | col; }
RF_DEVICE constexpr int rf_c_reg(int slot, int) { return slot; }

RF_DEVICE float rf_row_max(float x) {
    for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, rf_shfl_xor(x, o));
    return x;
}
RF_DEVICE float rf_row_sum(float x) {
    for (int o = 8; o > 0; o >>= 1) x += rf_shfl_xor(x, o);
    return x;
}
