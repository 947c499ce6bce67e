// The one visibility rule of every kernel; the host's twin is
// `Mask::key_range` in src/problem.rs, and a test compiles this header and
// checks both agree.
//
// Query row i of seq_q sits at key position pos = i + seq_kv - seq_q
// (bottom-right aligned). Key j is visible iff it lies in
// [pos - left, pos + right]; a negative bound is unbounded on that side.
// No mask = (-1, -1); causal = (-1, 0); sliding window = (left, right).
#pragma once
#include "rf/platform.h"

RF_DEVICE long long rf_query_pos(long long i, long long seq_q, long long seq_kv) {
    return i + seq_kv - seq_q;
}

RF_DEVICE bool rf_visible(long long j, long long pos, long long left, long long right) {
    return (left < 0 || j >= pos - left) && (right < 0 || j <= pos + right);
}
