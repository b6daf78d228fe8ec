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

/* 2^x on 16 floats, for kernels that fold log2(e) into their scores (attention_amx.c): n =
 * round(x), f = x - n in [-0.5, 0.5], 2^f by the degree-5 Taylor polynomial of e^(f ln 2)
 * (relative error below 2.5e-6, far inside the bf16 rounding of the probabilities that use it),
 * then scalef. No clamping: x is at most a few units above 0 there, and very negative x gives 0
 * through scalef; -inf lanes come out as NaN and must be masked by the caller. 8 instructions
 * where vl3__exp512_ps takes 13. */
__attribute__((target("avx512f,fma"))) static inline __m512 vl3__exp2_512_ps(__m512 x)
{
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.3333558146428443e-3f); /* ln2^5 / 120 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f)); /* ln2^4 / 24 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f)); /* ln2^3 / 6 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f)); /* ln2^2 / 2 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f)); /* ln2 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#endif
