// Element access for the model kernels specialized by -DDTYPE (rf/convert.h
// codes): loads widen to f32, stores round to DTYPE, and rf_round(x) is x
// rounded to DTYPE and widened again, so a kernel can round where
// transformers rounds (every op of a bf16 model returns bf16) while it
// computes in f32. For f32 rf_round is the identity.
#pragma once
#include "rf/platform.h"
#include "rf/convert.h"

#ifndef DTYPE
#define DTYPE RF_F32
#endif

#if DTYPE == RF_F32
RF_DEVICE float rf_ld(const void* p, long long i) { return ((const float*)p)[i]; }
RF_DEVICE void rf_st(void* p, long long i, float x) { ((float*)p)[i] = x; }
RF_DEVICE float rf_round(float x) { return x; }
#elif DTYPE == RF_F16
RF_DEVICE float rf_ld(const void* p, long long i) { return rf_half_to_float(((const rf_u16*)p)[i]); }
RF_DEVICE void rf_st(void* p, long long i, float x) { ((rf_u16*)p)[i] = rf_float_to_half(x); }
RF_DEVICE float rf_round(float x) { return rf_half_to_float(rf_float_to_half(x)); }
#else
RF_DEVICE float rf_ld(const void* p, long long i) { return rf_bf16_to_float(((const rf_u16*)p)[i]); }
RF_DEVICE void rf_st(void* p, long long i, float x) { ((rf_u16*)p)[i] = rf_float_to_bf16(x); }
RF_DEVICE float rf_round(float x) { return rf_bf16_to_float(rf_float_to_bf16(x)); }
#endif
