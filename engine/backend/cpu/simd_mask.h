/* simd_mask.h: AVX-512 lane masks for the first n lanes (n clamped to [0, 16] or [0, 32]), shared
 * by the bf16 mode's kernels for their row tails (gemm_bf16.c, attention_amx.c,
 * attention_decode.c). Include only on x86-64 GCC/clang. */
#ifndef VL3_CPU_SIMD_MASK_H
#define VL3_CPU_SIMD_MASK_H

#include <immintrin.h>

static inline __mmask16 vl3__mask16(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

static inline __mmask32 vl3__mask32(int n)
{
    return n >= 32 ? (__mmask32)0xffffffffu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1);
}

#endif
