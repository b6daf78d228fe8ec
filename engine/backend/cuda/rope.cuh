/* rope.cuh: host launcher of the rotate-half rotary embedding (f32, in place). */
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
#ifdef __cplusplus
}
#endif

#endif
