/* norm.c: RMSNorm per row, accumulated in double so long rows keep f32 accuracy; rows split
 * over the context's threads (parallel.c) when there are many. */
#include <math.h>

#include "cpu_ops.h"

struct rms_args {
    float *y;
    const float *x, *w;
    int C;
    float eps;
};

static void rms_rows(void *arg, int64_t t0, int64_t t1)
{
    const struct rms_args *a = arg;
    float *y = a->y;
    const float *x = a->x, *w = a->w;
    int C = a->C;
    float eps = a->eps;
    for (int64_t t = t0; t < t1; t++) {
        const float *xr = x + (size_t)t * C;
        float *yr = y + (size_t)t * C;
        double ss = 0;
        for (int c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        float inv = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int c = 0; c < C; c++)
            yr[c] = w[c] * (xr[c] * inv);
    }
}

int vl3__cpu_rmsnorm(void *ctx, void *y, const void *x, const void *w, int T, int C, float eps)
{
    struct rms_args a = {y, x, w, C, eps};
    vl3__cpu_parallel(ctx, T, 65536 / (C > 0 ? C : 1) + 1, rms_rows, &a);
    return 0;
}
