// Rotary position embedding applied in place to [tokens, heads, head_dim]
// rows of DTYPE (rf/model_elem.h). The angles' cos/sin come from a table the
// host computes in f64 for the call's positions (one row per token, shared
// by every head and layer), so no trigonometry runs here and GPU and CPU
// rotate by the same angles. Pairs are (i, i + pairs) (NeoX) or (2i, 2i + 1)
// (interleaved, GPT-J / GLM) within each segment; segment s (GLM 2D: s = 1
// is the block position stream) covers dims [s * 2 * pairs, (s + 1) * 2 * pairs).
//
// f32 rotates in f32. A 16-bit model rounds as transformers does: cos and
// sin to the model dtype, each product, then the sum
// (q * cos + rotate_half(q) * sin, every op returning the model dtype).
#include "rf/platform.h"
#include "rf/model_params.h"
#include "rf/model_elem.h"

RF_KERNEL void rope_rotate(RfRopeParams prm) {
    const long long per_token = (long long)prm.heads * prm.streams * prm.pairs;
    const long long total = (long long)prm.tokens * per_token;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long t = e / per_token;
        const int rest = (int)(e % per_token);
        const int h = rest / (prm.streams * prm.pairs);
        const int sp = rest % (prm.streams * prm.pairs);  // stream * pairs + pair
        const int s = sp / prm.pairs, i = sp % prm.pairs;
        const long long seg = t * prm.token_stride + (long long)h * prm.head_dim + s * 2 * prm.pairs;
        const long long a = seg + (prm.interleaved ? 2 * i : i);
        const long long b = seg + (prm.interleaved ? 2 * i + 1 : i + prm.pairs);
        const float c = prm.cos_sin[(t * prm.streams * prm.pairs + sp) * 2];
        const float sn = prm.cos_sin[(t * prm.streams * prm.pairs + sp) * 2 + 1];
        const float x1 = rf_ld(prm.x, a), x2 = rf_ld(prm.x, b);
#if DTYPE == RF_F32
        rf_st(prm.x, a, x1 * c - x2 * sn);
        rf_st(prm.x, b, x2 * c + x1 * sn);
#else
        const float cr = rf_round(c), sr = rf_round(sn);
        rf_st(prm.x, a, rf_round(x1 * cr) + rf_round(-x2 * sr));
        rf_st(prm.x, b, rf_round(x2 * cr) + rf_round(x1 * sr));
#endif
    }
}
