/* rope.cuh: host launchers of the rotary embeddings: the LLM's rotate-half RoPE (f32 or bf16,
 * in place) and the vision encoder's 2D RoPE (f32, in place). */
#ifndef VL3_CUDA_ROPE_CUH
#define VL3_CUDA_ROPE_CUH

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* For t < T and each of n_heads heads of D values at x + t*stride + h*D, rotate the pairs
 * (i, i + D/2) by pos[t] * theta^(-2i/D), as vl3__cpu_rope does. x and pos are device pointers.
 * Returns 0, -22 for an odd D, or -1 (launch failure). */
int cuda_rope(float *x, int T, int stride, int n_heads, int D, const int32_t *pos, float theta,
              void *stream);
/* The same on bf16 rows (f32 arithmetic). */
int cuda_rope_bf16(void *x, int T, int stride, int n_heads, int D, const int32_t *pos,
                   float theta, void *stream);
/* The vision 2D RoPE on x (P, H*D) as the vision op rope2d of backend.h (D a multiple of 4).
 * Device pointers. Returns 0, -22 (bad D or P) or -1. */
int cuda_rope2d(float *x, const int32_t *pos_r, const int32_t *pos_c, int64_t P, int H, int D,
                float theta, void *stream);
#ifdef __cplusplus
}
#endif

#endif
