// Rotary position embedding applied in place to f32 [tokens, heads,
// head_dim] rows. The angles' cos/sin come from a table the host computes in
// f64 for the call's positions (one row per token, shared by every head and
// layer), so no trigonometry runs here and GPU and CPU rotate by the same
// angles. Pairs are (i, i + pairs) (NeoX) or (2i, 2i + 1) (interleaved,
// GPT-J / GLM) within each segment; segment s (GLM 2D: s = 1 is the block
// position stream) covers dims [s * 2 * pairs, (s + 1) * 2 * pairs).
#include "rf/platform.h"
#include "rf/model_params.h"

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
        float* seg = prm.x + t * prm.token_stride + (long long)h * prm.head_dim + s * 2 * prm.pairs;
        const int a = prm.interleaved ? 2 * i : i;
        const int b = prm.interleaved ? 2 * i + 1 : i + prm.pairs;
        const float c = prm.cos_sin[(t * prm.streams * prm.pairs + sp) * 2];
        const float sn = prm.cos_sin[(t * prm.streams * prm.pairs + sp) * 2 + 1];
        const float x1 = seg[a], x2 = seg[b];
        seg[a] = x1 * c - x2 * sn;
        seg[b] = x2 * c + x1 * sn;
    }
}
