// TEMPORARY stand-in for the lead's kernels/include/rf/mask.h (split of
// kernels/prelude.h), used only by the flash_dev harness until main has it.
#pragma once
#include "rf/platform.h"

// A key is visible to query `i` if it lies in [pos - left, pos + right],
// pos = i + seq_kv - seq_q; a negative bound means unbounded on that side.
RF_DEVICE bool rf_visible(long long j, long long pos, long long left, long long right) {
    return (left < 0 || j >= pos - left) && (right < 0 || j <= pos + right);
}
