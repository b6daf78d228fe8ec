/* simd_exp.h: exp and 2^x on 16 floats with AVX-512, shared by the bf16 mode's kernels
 * (attention_amx.c, attention_decode.c, activations_avx512.c). exp: x = n ln2 + r (ln2 split in
 * two for exact range reduction), a degree-6 polynomial of r, 2^n by scalef: relative error
 * about 2e-7 over [-87, 88] (inputs clamped there; exp(-87) stands for 0 where callers mask).
 * Include only on x86-64 GCC/clang; callers' target attributes must include avx512f and fma. */
#ifndef VL3_CPU_SIMD_EXP_H
#define VL3_CPU_SIMD_EXP_H

#include <immintrin.h>

__attribute__((target("avx512f,fma"))) static inline __m512 vl3__exp512_ps(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 2^x on 16 floats, for kernels that fold log2(e) into their scores (attention_amx.c,
 * attention_decode.c): f = x - floor(x) in [0, 1) in one vreduceps, 2^f by a degree-4 polynomial
 * fitted for least maximum relative error on [0, 1) (2.7e-6 in f32 arithmetic, test
 * exp2_polynomial; far inside the bf16 rounding of the probabilities that use it), then scalef,
 * which takes floor(x) itself. No clamping: x is at most a few units above 0 there, and very
 * negative x gives 0 through scalef; -inf lanes must be masked by the caller. 6 instructions
 * where vl3__exp512_ps takes 13. Callers' targets must also include avx512dq. */
__attribute__((target("avx512f,avx512dq,fma"))) static inline __m512 vl3__exp2_512_ps(__m512 x)
{
    __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_set1_ps(1.3534121215343475e-2f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.2011482417583466e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4144279956817627e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9300383329391479e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000026226043701f));
    return _mm512_scalef_ps(p, x);
}

#endif
