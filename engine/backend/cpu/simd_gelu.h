/* simd_gelu.h: the tanh GELU on 16 floats with AVX-512, shared by the bf16 mode's GELU pass
 * (activations_avx512.c) and the AMX GEMM's fused epilogue (gemm_bf16.c), so both give the same
 * bits. Include only on x86-64 GCC/clang; callers' target attributes must include avx512f and
 * fma. */
#ifndef VL3_CPU_SIMD_GELU_H
#define VL3_CPU_SIMD_GELU_H

#include <immintrin.h>

#include "simd_exp.h"

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3):
 * one exp and a reciprocal (rcp14 and one Newton step, relative error ~2^-28 before rounding)
 * instead of the tanh quotient and its divide (vdivps is the slowest instruction here). Large
 * negative x: exp's input is clamped at 88, the reciprocal of 1.7e38 is 0 or a denormal, and the
 * result 0 or tiny, as the reference's 1 + tanh(u) = 0 in float. NaN stays NaN. */
__attribute__((target("avx512f,fma"))) static inline __m512 vl3__gelu_tanh512_ps(__m512 v)
{
    /* -2u = v (a + b v^2) */
    const __m512 a = _mm512_set1_ps(-2.0f * 0.7978845608028654f),
                 b = _mm512_set1_ps(-2.0f * 0.7978845608028654f * 0.044715f);
    __m512 z = _mm512_mul_ps(v, _mm512_fmadd_ps(_mm512_mul_ps(v, v), b, a));
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), vl3__exp512_ps(z));
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(v, r);
}

#endif
