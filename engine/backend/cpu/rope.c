/* rope.c: rotate-half rotary embedding (Qwen2 / HF layout): for each head, pairs (i, i + D/2) are
 * rotated by pos * inv_freq[i], inv_freq[i] = theta^(-2i/D). Like transformers, inv_freq and the
 * angle are computed in f32 (so positions far from 0 round the same way) and cos/sin from that.
 * Rows split over the context's threads (parallel.c) when there are many. */
#include <math.h>

#include "cpu_ops.h"

#define ROPE_MAX_HALF 256 /* head_dim up to 512 */

float vl3__cpu_rope_inv_freq(float theta, int i2, int dim)
{
    float e = (float)i2 / (float)dim;
    return 1.0f / powf(theta, e);
}

struct rope_args {
    float *x;
    const int32_t *pos;
    int stride, n_heads, D;
    const float *inv;
};

static void rope_rows(void *arg, int64_t t0, int64_t t1)
{
    const struct rope_args *ra = arg;
    float *x = ra->x;
    const int32_t *pos = ra->pos;
    const float *inv = ra->inv;
    int stride = ra->stride, n_heads = ra->n_heads, D = ra->D, half = D / 2;
    float c[ROPE_MAX_HALF], s[ROPE_MAX_HALF];
    for (int64_t t = t0; t < t1; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < half; i++) {
            float a = p * inv[i];
            c[i] = cosf(a);
            s[i] = sinf(a);
        }
        float *row = x + (size_t)t * stride;
        for (int h = 0; h < n_heads; h++) {
            float *v = row + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c[i] - x1 * s[i];
                v[i + half] = x1 * c[i] + x0 * s[i];
            }
        }
    }
}

int vl3__cpu_rope(void *ctx, void *x, int T, int stride, int n_heads, int D, const void *pos,
                  float theta)
{
    int half = D / 2;
    float inv[ROPE_MAX_HALF];
    if (D % 2 || half > ROPE_MAX_HALF)
        return -22 /* EINVAL */;
    for (int i = 0; i < half; i++)
        inv[i] = vl3__cpu_rope_inv_freq(theta, 2 * i, D);
    struct rope_args a = {x, pos, stride, n_heads, D, inv};
    vl3__cpu_parallel(ctx, T, 256, rope_rows, &a);
    return 0;
}
