// Row copies with an optional index on either side and a dtype conversion:
// the one data-movement kernel of the model layer (embedding lookup, KV
// cache append and gather, attention input/output conversion, logits row
// selection, bias broadcast). Element types by -DSRC_DTYPE / -DDST_DTYPE
// (rf/convert.h codes). Also put_words, which carries small host data to
// the device inside its launch parameters.
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/model_params.h"

#ifndef SRC_DTYPE
#define SRC_DTYPE RF_F32
#endif
#ifndef DST_DTYPE
#define DST_DTYPE RF_F32
#endif

#if SRC_DTYPE == RF_F32
RF_DEVICE float rf_load(const void* p, long long i) { return ((const float*)p)[i]; }
#elif SRC_DTYPE == RF_F16
RF_DEVICE float rf_load(const void* p, long long i) { return rf_half_to_float(((const rf_u16*)p)[i]); }
#else
RF_DEVICE float rf_load(const void* p, long long i) { return rf_bf16_to_float(((const rf_u16*)p)[i]); }
#endif

#if DST_DTYPE == RF_F32
RF_DEVICE void rf_store(void* p, long long i, float x) { ((float*)p)[i] = x; }
#elif DST_DTYPE == RF_F16
RF_DEVICE void rf_store(void* p, long long i, float x) { ((rf_u16*)p)[i] = rf_float_to_half(x); }
#else
RF_DEVICE void rf_store(void* p, long long i, float x) { ((rf_u16*)p)[i] = rf_float_to_bf16(x); }
#endif

RF_DEVICE long long rf_row(int mode, const int* device_rows, const int* inline_rows, long long i) {
    if (mode == RF_ROWS_DEVICE) return device_rows[i];
    if (mode == RF_ROWS_INLINE) return inline_rows[i];
    return i;
}

// Grid-stride over rows x width; consecutive threads take consecutive
// elements of a row, so both sides are read and written coalesced.
RF_KERNEL void copy_rows(RF_GRID_CONST RfCopyRowsParams prm) {
    const long long total = (long long)prm.rows * prm.width;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long i = e / prm.width, c = e % prm.width;
        const long long s = rf_row(prm.src_mode, prm.src_rows, prm.src_inline, i);
        const long long d = rf_row(prm.dst_mode, prm.dst_rows, prm.dst_inline, i);
        rf_store(prm.dst, d * prm.dst_stride + c, rf_load(prm.src, s * prm.src_stride + c));
    }
}

RF_KERNEL void put_words(RF_GRID_CONST RfPutWordsParams prm) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < prm.count; i += gridDim.x * blockDim.x) {
        prm.dst[i] = prm.words[i];
    }
}
