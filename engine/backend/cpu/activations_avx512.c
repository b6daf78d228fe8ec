/* activations_avx512.c: the tanh GELU of the vision MLP, the SwiGLU of the LLM MLP and the vision
 * LayerNorm (f32 sums) on AVX-512, split over the context's threads, for the CPU backend's bf16
 * mode.
 *
 * Why: the scalar versions (libm tanhf / expf, one thread) cost about 7 ns and 2.5 ns per value
 * here; a 16-frame clip applies the GELU to 28k patches x 4304 x 27 layers = 3.3e9 values (over
 * 20 s) and the SwiGLU to 7k tokens x 8960 x 28 layers = 1.8e9. Here exp is a degree-6
 * polynomial after range reduction (relative error about 2e-7) and tanh(u) = sign(u) (1 - e) /
 * (1 + e) with e = exp(-2|u|): the GELU's error is absolute, below 1e-7 of |x|, so it is far
 * inside the bf16 rounding this mode already accepts. The f32 mode keeps the libm versions. */
#include <errno.h>
#include <math.h>
#include <stdint.h>

#include "cpu_ops.h"

#define MIN_PER_THREAD 65536 /* values below which a call stays on one thread */

#if defined(__x86_64__) && defined(__GNUC__)
#define ACT_BUILD 1
#include <immintrin.h>

#include "simd_exp.h"
#define ACT_TARGET "avx512f,avx512bw,fma" /* what the ISA probe checks (gemm_bf16.c) */

__attribute__((target(ACT_TARGET))) static inline __m512 gelu_tanh_ps(__m512 v)
{
    const __m512 c = _mm512_set1_ps(0.7978845608028654f), k = _mm512_set1_ps(0.044715f);
    __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, v), _mm512_mul_ps(v, v), v));
    __m512 au = _mm512_abs_ps(u);
    __m512 e = vl3__exp512_ps(_mm512_mul_ps(au, _mm512_set1_ps(-2.0f)));
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    /* sign of u onto t */
    t = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(t),
        _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32((int)0x80000000u))));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, t));
}

__attribute__((target(ACT_TARGET))) static void gelu_range(float *x, int64_t lo, int64_t hi)
{
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16)
        _mm512_storeu_ps(x + i, gelu_tanh_ps(_mm512_loadu_ps(x + i)));
    if (i < hi) {
        __mmask16 m = (__mmask16)((1u << (hi - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, gelu_tanh_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* out (T, I) = silu(g) * u for the rows [t0, t1) of gu (T, 2I) */
__attribute__((target(ACT_TARGET))) static void silu_rows(float *out, const float *gu, int I,
                                                         int64_t t0, int64_t t1)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t t = t0; t < t1; t++) {
        const float *g = gu + t * 2 * I, *u = g + I;
        float *o = out + t * I;
        int i = 0;
        for (; i + 16 <= I; i += 16) {
            __m512 gv = _mm512_loadu_ps(g + i);
            __m512 s = _mm512_div_ps(gv, _mm512_add_ps(one, vl3__exp512_ps(_mm512_sub_ps(
                                                                 _mm512_setzero_ps(), gv))));
            _mm512_storeu_ps(o + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
        }
        for (; i < I; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

struct act_args {
    float *x;
    const float *gu;
    int I;
};

static void gelu_part(void *arg, int64_t lo, int64_t hi)
{
    gelu_range(((struct act_args *)arg)->x, lo, hi);
}

static void silu_part(void *arg, int64_t lo, int64_t hi)
{
    struct act_args *a = arg;
    silu_rows(a->x, a->gu, a->I, lo, hi);
}

/* LayerNorm rows [p0, p1): f32 sums on AVX-512 (the f32 mode accumulates in double) */
struct ln_args {
    const float *x, *w, *b;
    float *y;
    int C;
    float eps;
};

__attribute__((target(ACT_TARGET))) static void ln_part(void *arg, int64_t p0, int64_t p1)
{
    const struct ln_args *a = arg;
    int C = a->C, C16 = C & ~15;
    __mmask16 tail = (__mmask16)((1u << (C - C16)) - 1);
    for (int64_t p = p0; p < p1; p++) {
        const float *x = a->x + p * C;
        float *y = a->y + p * C;
        __m512 s = _mm512_setzero_ps();
        for (int i = 0; i < C16; i += 16)
            s = _mm512_add_ps(s, _mm512_loadu_ps(x + i));
        if (tail)
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail, x + C16));
        float mean = _mm512_reduce_add_ps(s) / (float)C;
        __m512 mv = _mm512_set1_ps(mean), q = _mm512_setzero_ps();
        for (int i = 0; i < C16; i += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
            q = _mm512_fmadd_ps(d, d, q);
        }
        if (tail) {
            __m512 d = _mm512_maskz_sub_ps(tail, _mm512_maskz_loadu_ps(tail, x + C16), mv);
            q = _mm512_fmadd_ps(d, d, q);
        }
        float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(q) / (float)C + a->eps);
        __m512 iv = _mm512_set1_ps(inv);
        for (int i = 0; i < C16; i += 16) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv), iv);
            _mm512_storeu_ps(y + i, _mm512_fmadd_ps(d, _mm512_loadu_ps(a->w + i),
                                                    _mm512_loadu_ps(a->b + i)));
        }
        if (tail) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + C16), mv), iv);
            _mm512_mask_storeu_ps(y + C16, tail,
                                  _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(tail, a->w + C16),
                                                  _mm512_maskz_loadu_ps(tail, a->b + C16)));
        }
    }
}
#endif

int vl3__cpu_layernorm_fast(void *ctx, const float *x, const float *w, const float *b, float *y,
                            int64_t P, int C, float eps)
{
#ifdef ACT_BUILD
    if (vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512) && C > 0) {
        struct ln_args a = {x, w, b, y, C, eps};
        vl3__cpu_parallel(ctx, P, 65536 / C + 1, ln_part, &a);
        return 0;
    }
#endif
    (void)ctx, (void)x, (void)w, (void)b, (void)y, (void)P, (void)C, (void)eps;
    return -ENOTSUP;
}

int vl3__cpu_gelu_tanh_fast(void *ctx, float *x, int64_t n)
{
#ifdef ACT_BUILD
    if (vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512)) {
        struct act_args a = {x, NULL, 0};
        vl3__cpu_parallel(ctx, n, MIN_PER_THREAD, gelu_part, &a);
        return 0;
    }
#endif
    (void)ctx, (void)x, (void)n;
    return -ENOTSUP;
}

int vl3__cpu_silu_mul_fast(void *ctx, float *out, const float *gu, int T, int n_inter)
{
#ifdef ACT_BUILD
    if (vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512)) {
        struct act_args a = {out, gu, n_inter};
        vl3__cpu_parallel(ctx, T, MIN_PER_THREAD / (n_inter > 0 ? n_inter : 1) + 1, silu_part, &a);
        return 0;
    }
#endif
    (void)ctx, (void)out, (void)gu, (void)T, (void)n_inter;
    return -ENOTSUP;
}
