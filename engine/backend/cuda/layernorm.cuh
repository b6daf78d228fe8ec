/* layernorm.cuh: host launcher of LayerNorm (f32 in/out, f32 weight and bias). */
#ifndef VL3_CUDA_LAYERNORM_CUH
#define VL3_CUDA_LAYERNORM_CUH

#ifdef __cplusplus
extern "C" {
#endif
/* y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b for r < rows (biased variance), as the
 * vision encoder's CPU layernorm. Device pointers. Returns 0 or -1 (launch failure). */
int cuda_layernorm(float *y, const float *x, const float *w, const float *b, int rows, int cols,
                   float eps, void *stream);
#ifdef __cplusplus
}
#endif

#endif
