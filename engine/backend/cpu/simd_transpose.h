/* simd_transpose.h: the 16 x 16 transpose of 32-bit words in AVX-512 registers, shared by the
 * AMX GEMM (x packing, C tiles into y: gemm_bf16.c) and the vision attention's key packing
 * (attention_amx.c). Include only on x86-64 GCC/clang; callers' target attributes must include
 * avx512f. */
#ifndef VL3_CPU_SIMD_TRANSPOSE_H
#define VL3_CPU_SIMD_TRANSPOSE_H

#include <immintrin.h>

/* The 16 x 16 transpose of 32-bit words in registers: t[n] lane m = r[m] lane n (unpack 32/64-bit,
 * then two 128-bit lane shuffles); r is clobbered. */
__attribute__((target("avx512f"))) static inline void vl3__transpose16_ps(__m512 r[16],
                                                                        __m512 t[16])
{
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 4; q++) { /* s[4q + j] lane L: column 4L + j, rows 4q .. 4q + 3 */
        __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 2]);
        __m512d c2 = _mm512_castps_pd(t[4 * q + 1]), d = _mm512_castps_pd(t[4 * q + 3]);
        r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c2, d));
        r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c2, d));
    }
    for (int jj = 0; jj < 4; jj++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[jj], r[4 + jj], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(r[jj], r[4 + jj], 0xee);
        __m512 w0 = _mm512_shuffle_f32x4(r[8 + jj], r[12 + jj], 0x44);
        __m512 w1 = _mm512_shuffle_f32x4(r[8 + jj], r[12 + jj], 0xee);
        t[jj] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        t[4 + jj] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        t[8 + jj] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        t[12 + jj] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

#endif
