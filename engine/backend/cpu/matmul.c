/* matmul.c: y = x W^T (+ b) (+ y) with f32 weights through OpenBLAS: sgemv for one row (the
 * decode step of one sequence, memory-bound), sgemm otherwise. OpenBLAS's own threads do the
 * parallel work (their count is set by backend_cpu.c). */
#include <cblas.h>

#include "cpu_ops.h"

int vl3__cpu_matmul(void *ctx, void *y_, const void *x_, const void *w_, const void *b_, int T,
                    int in, int out, int accumulate)
{
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_, *b = b_;
    float beta = accumulate ? 1.0f : 0.0f;
    if (T <= 0 || in <= 0 || out <= 0)
        return T == 0 ? 0 : -22 /* EINVAL */;
    if (b) { /* fold the bias in first so the BLAS call adds the product with beta = 1 */
        for (int t = 0; t < T; t++) {
            float *yr = y + (size_t)t * out;
            if (accumulate)
                for (int o = 0; o < out; o++)
                    yr[o] += b[o];
            else
                for (int o = 0; o < out; o++)
                    yr[o] = b[o];
        }
        beta = 1.0f;
    }
    if (T == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w, in, x, 1, beta, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, w, in, beta,
                    y, out);
    return 0;
}
