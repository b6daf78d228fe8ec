/* elementwise.c: the small LLM ops: SwiGLU (silu(gate) * up), add, embedding gather (bf16 table),
 * row argmax, strided row copies and the visual-row scatter. The add splits over the context's
 * threads (parallel.c), the SwiGLU does in bf16 mode (activations_avx512.c); the rest are a small
 * share of the time next to the matrix products. */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

int vl3__cpu_silu_mul(void *ctx, void *out_, const void *gu_, int T, int n_inter)
{
    float *out = out_;
    const float *gu = gu_;
    if (vl3__cpu_bf16_mode(ctx) && vl3__cpu_silu_mul_fast(ctx, out, gu, T, n_inter) == 0)
        return 0;
    for (int t = 0; t < T; t++) {
        const float *g = gu + (size_t)t * 2 * n_inter, *u = g + n_inter;
        float *o = out + (size_t)t * n_inter;
        for (int i = 0; i < n_inter; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
    return 0;
}

struct add_args {
    float *y;
    const float *a, *b;
};

static void add_range(void *arg, int64_t lo, int64_t hi)
{
    const struct add_args *p = arg;
    for (int64_t i = lo; i < hi; i++)
        p->y[i] = p->a[i] + p->b[i];
}

int vl3__cpu_add(void *ctx, void *y, const void *a, const void *b, size_t n)
{
    struct add_args p = {y, a, b};
    vl3__cpu_parallel(ctx, (int64_t)n, 1 << 18, add_range, &p);
    return 0;
}

int vl3__cpu_embed(void *ctx, void *out_, const void *table_, const void *ids_, int T, int C)
{
    (void)ctx;
    float *out = out_;
    const uint16_t *table = table_; /* bf16 weight format */
    const int32_t *ids = ids_;
    for (int t = 0; t < T; t++) {
        const uint16_t *row = table + (size_t)ids[t] * C;
        for (int c = 0; c < C; c++)
            out[(size_t)t * C + c] = vl3__cpu_bf16_to_f32(row[c]);
    }
    return 0;
}

int vl3__cpu_argmax(void *ctx, int32_t *ret_host, const void *x_, int R, int n)
{
    (void)ctx;
    const float *x = x_;
    for (int r = 0; r < R; r++) {
        const float *row = x + (size_t)r * n;
        int best = 0;
        for (int i = 1; i < n; i++)
            if (row[i] > row[best])
                best = i;
        ret_host[r] = best;
    }
    return 0;
}

int vl3__cpu_copy_rows(void *ctx, void *dst_, size_t dst_stride, const void *src_,
                       size_t src_stride, int n_rows, size_t row_bytes)
{
    (void)ctx;
    char *dst = dst_;
    const char *src = src_;
    for (int r = 0; r < n_rows; r++)
        memmove(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride, row_bytes);
    return 0;
}

int vl3__cpu_scatter_rows(void *ctx, void *dst_, const void *src_, const void *idx_, int n, int C)
{
    (void)ctx;
    float *dst = dst_;
    const float *src = src_;
    const int32_t *idx = idx_;
    for (int j = 0; j < n; j++)
        memcpy(dst + (size_t)idx[j] * C, src + (size_t)j * C, sizeof(float) * (size_t)C);
    return 0;
}
