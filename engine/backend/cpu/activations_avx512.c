/* activations_avx512.c: the tanh GELU of the vision MLP, the SwiGLU of the LLM MLP and the vision
 * LayerNorm (f32 sums) on AVX-512, split over the context's threads, for the CPU backend's bf16
 * mode.
 *
 * Why: the scalar versions (libm tanhf / expf, one thread) cost about 7 ns and 2.5 ns per value
 * here; a 16-frame clip applies the GELU to 28k patches x 4304 x 27 layers = 3.3e9 values (over
 * 20 s) and the SwiGLU to 7k tokens x 8960 x 28 layers = 1.8e9. Here exp is a degree-6
 * polynomial after range reduction (relative error about 2e-7) and the GELU is x / (1 + exp(-2u)):
 * its error is below 1e-6 of 1 + |x|, far inside the bf16 rounding this mode already accepts.
 * The f32 mode keeps the libm versions.
 *
 * Also here: the vision encoder's exact elementwise kernels (residual add, the 2D RoPE's
 * rotation), the same bits as the scalar loops, so both modes use them. */
#include <errno.h>
#include <math.h>
#include <stdint.h>

#include "cpu_ops.h"

#define MIN_PER_THREAD 65536 /* values below which a call stays on one thread */

#if defined(__x86_64__) && defined(__GNUC__)
#define ACT_BUILD 1
#include <immintrin.h>

#include "simd_exp.h"
#include "simd_gelu.h"
#include "simd_silu.h"
#define ACT_TARGET "avx512f,avx512bw,fma" /* what the ISA probe checks (gemm_bf16.c) */

__attribute__((target(ACT_TARGET))) static void gelu_range(float *x, int64_t lo, int64_t hi)
{
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16)
        _mm512_storeu_ps(x + i, vl3__gelu_tanh512_ps(_mm512_loadu_ps(x + i)));
    if (i < hi) {
        __mmask16 m = (__mmask16)((1u << (hi - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, vl3__gelu_tanh512_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* out (T, I) = silu(g) * u for the rows [t0, t1) of gu (T, 2I); a row's tail of I % 16 values
 * with masked loads, so every value has the bits of the AMX product's fused epilogue */
__attribute__((target(ACT_TARGET))) static void silu_rows(float *out, const float *gu, int I,
                                                         int64_t t0, int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) {
        const float *g = gu + t * 2 * I, *u = g + I;
        float *o = out + t * I;
        int i = 0;
        for (; i + 16 <= I; i += 16)
            _mm512_storeu_ps(o + i, vl3__silu_mul512_ps(_mm512_loadu_ps(g + i),
                                                        _mm512_loadu_ps(u + i)));
        if (i < I) {
            __mmask16 m = (__mmask16)((1u << (I - i)) - 1);
            _mm512_mask_storeu_ps(o + i, m, vl3__silu_mul512_ps(_mm512_maskz_loadu_ps(m, g + i),
                                                                _mm512_maskz_loadu_ps(m, u + i)));
        }
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

/* ---- the vision encoder's exact elementwise kernels (residual add, RoPE rotation):
 * one rounding per operation as the scalar loops, so the results are the same bits ---- */

struct vadd_args {
    float *y;
    const float *x;
};

/* y[i] += x[i] for i in [lo, hi) */
__attribute__((target(ACT_TARGET))) static void vadd_part(void *arg, int64_t lo, int64_t hi)
{
    const struct vadd_args *a = arg;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16)
        _mm512_storeu_ps(a->y + i, _mm512_add_ps(_mm512_loadu_ps(a->y + i),
                                                 _mm512_loadu_ps(a->x + i)));
    if (i < hi) {
        __mmask16 m = (__mmask16)((1u << (hi - i)) - 1);
        _mm512_mask_storeu_ps(a->y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a->y + i),
                                                         _mm512_maskz_loadu_ps(m, a->x + i)));
    }
}

/* The rotation of 16 (masked) pairs: lo' = lo cs - hi sn, hi' = hi cs + lo sn. The _round
 * intrinsics are builtins the compiler never contracts into FMAs: each product and sum rounds
 * once, as the scalar loop compiled without FMA. */
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
__attribute__((target(ACT_TARGET))) static inline void rot16(float *lo, float *hi,
                                                            const float *cs, const float *sn,
                                                            __mmask16 m)
{
    __m512 a = _mm512_maskz_loadu_ps(m, lo), b = _mm512_maskz_loadu_ps(m, hi);
    __m512 c = _mm512_maskz_loadu_ps(m, cs), s = _mm512_maskz_loadu_ps(m, sn);
    __m512 na = _mm512_sub_round_ps(_mm512_mul_round_ps(a, c, RNE), _mm512_mul_round_ps(b, s, RNE),
                                    RNE);
    __m512 nb = _mm512_add_round_ps(_mm512_mul_round_ps(b, c, RNE), _mm512_mul_round_ps(a, s, RNE),
                                    RNE);
    _mm512_mask_storeu_ps(lo, m, na);
    _mm512_mask_storeu_ps(hi, m, nb);
}

__attribute__((target(ACT_TARGET))) static void rotate_heads(float *x, const float *cs,
                                                            const float *sn, int H, int D)
{
    int half = D / 2, h16 = half & ~15;
    __mmask16 tail = (__mmask16)((1u << (half - h16)) - 1);
    for (int h = 0; h < H; h++) {
        float *v = x + (size_t)h * D;
        for (int i = 0; i < h16; i += 16)
            rot16(v + i, v + half + i, cs + i, sn + i, 0xffff);
        if (tail)
            rot16(v + h16, v + half + h16, cs + h16, sn + h16, tail);
    }
}
#endif

int vl3__cpu_vadd_fast(void *ctx, float *y, const float *x, int64_t n)
{
#ifdef ACT_BUILD
    if (vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512)) {
        struct vadd_args a = {y, x};
        vl3__cpu_parallel(ctx, n, MIN_PER_THREAD, vadd_part, &a);
        return 0;
    }
#endif
    (void)ctx, (void)y, (void)x, (void)n;
    return -ENOTSUP;
}

int vl3__cpu_rotate_half_fast(float *x, const float *cs, const float *sn, int H, int D)
{
#ifdef ACT_BUILD
    if (vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512)) {
        rotate_heads(x, cs, sn, H, D);
        return 0;
    }
#endif
    (void)x, (void)cs, (void)sn, (void)H, (void)D;
    return -ENOTSUP;
}

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
