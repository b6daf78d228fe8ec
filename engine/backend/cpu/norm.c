/* norm.c: RMSNorm per row, accumulated in double so long rows keep f32 accuracy. */
#include <math.h>

#include "cpu_ops.h"

int vl3__cpu_rmsnorm(void *ctx, void *y_, const void *x_, const void *w_, int T, int C, float eps)
{
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_;
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *yr = y + (size_t)t * C;
        double ss = 0;
        for (int c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        float inv = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int c = 0; c < C; c++)
            yr[c] = w[c] * (xr[c] * inv);
    }
    return 0;
}
