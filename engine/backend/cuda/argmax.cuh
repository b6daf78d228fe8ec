/* argmax.cuh: host launcher of the per-row argmax (f32 in, int32 out). */
#ifndef VL3_CUDA_ARGMAX_CUH
#define VL3_CUDA_ARGMAX_CUH

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* out[r] = the index of the largest x[r, i], i < n, the first one on ties, for r < R.
 * Device pointers. Returns 0 or -1 (launch failure). */
int cuda_argmax(int32_t *out, const float *x, int R, int n, void *stream);
#ifdef __cplusplus
}
#endif

#endif
