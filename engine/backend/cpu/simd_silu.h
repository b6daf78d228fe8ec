/* simd_silu.h: the SwiGLU silu(g) * u on 16 floats with AVX-512, shared by the bf16 mode's
 * SwiGLU pass (activations_avx512.c) and the AMX GEMM's fused gate/up epilogue (gemm_bf16.c),
 * so both give the same bits. Include only on x86-64 GCC/clang; callers' target attributes must
 * include avx512f and fma. */
#ifndef VL3_CPU_SIMD_SILU_H
#define VL3_CPU_SIMD_SILU_H

#include <immintrin.h>

#include "simd_exp.h"

/* g / (1 + exp(-g)) * u, exp by vl3__exp512_ps (relative error ~2e-7), a true divide */
__attribute__((target("avx512f,fma"))) static inline __m512 vl3__silu_mul512_ps(__m512 g, __m512 u)
{
    __m512 e = vl3__exp512_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

#endif
