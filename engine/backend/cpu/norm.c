/* norm.c: RMSNorm per row, rows split over the context's threads (parallel.c) when there are
 * many. f32 mode accumulates the squares in double so long rows keep f32 accuracy (the oracle's
 * numerics); bf16 mode sums them in f32 on AVX-512, four accumulators of 16 lanes, as the
 * official bf16 model computes its variance in float32 (the double chain cost about 4.5% of a
 * 391-token prefill here, 1% after). */
#include <math.h>

#include "cpu_ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define NORM_X86 1
#include <immintrin.h>
#endif

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

#ifdef NORM_X86
__attribute__((target("avx512f,fma"))) static void rms_rows_avx512(void *arg, int64_t t0,
                                                                    int64_t t1)
{
    const struct rms_args *a = arg;
    int C = a->C, C64 = C & ~63, C16 = C & ~15;
    __mmask16 tail = (__mmask16)((1u << (C - C16)) - 1);
    for (int64_t t = t0; t < t1; t++) {
        const float *x = a->x + (size_t)t * C;
        float *y = a->y + (size_t)t * C;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        int c = 0;
        for (; c < C64; c += 64) {
            __m512 v0 = _mm512_loadu_ps(x + c), v1 = _mm512_loadu_ps(x + c + 16);
            __m512 v2 = _mm512_loadu_ps(x + c + 32), v3 = _mm512_loadu_ps(x + c + 48);
            s0 = _mm512_fmadd_ps(v0, v0, s0);
            s1 = _mm512_fmadd_ps(v1, v1, s1);
            s2 = _mm512_fmadd_ps(v2, v2, s2);
            s3 = _mm512_fmadd_ps(v3, v3, s3);
        }
        for (; c < C16; c += 16) {
            __m512 v = _mm512_loadu_ps(x + c);
            s0 = _mm512_fmadd_ps(v, v, s0);
        }
        if (tail) {
            __m512 v = _mm512_maskz_loadu_ps(tail, x + C16);
            s1 = _mm512_fmadd_ps(v, v, s1);
        }
        float ss =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(ss / (float)C + a->eps));
        for (c = 0; c < C16; c += 16)
            _mm512_storeu_ps(y + c, _mm512_mul_ps(_mm512_loadu_ps(a->w + c),
                                                  _mm512_mul_ps(_mm512_loadu_ps(x + c), inv)));
        if (tail)
            _mm512_mask_storeu_ps(y + C16, tail,
                                  _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, a->w + C16),
                                                _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + C16),
                                                              inv)));
    }
}
#endif

int vl3__cpu_rmsnorm(void *ctx, void *y, const void *x, const void *w, int T, int C, float eps)
{
    struct rms_args a = {y, x, w, C, eps};
    vl3__cpu_range_fn fn = rms_rows;
#ifdef NORM_X86
    if (vl3__cpu_bf16_mode(ctx) && vl3__cpu_isa() >= VL3__CPU_ISA_AVX512)
        fn = rms_rows_avx512;
#endif
    vl3__cpu_parallel(ctx, T, 65536 / (C > 0 ? C : 1) + 1, fn, &a);
    return 0;
}
