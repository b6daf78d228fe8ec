/* rmsnorm.cuh: host launchers of the RMSNorm kernel (f32 or bf16 rows, f32 weight). */
#ifndef VL3_CUDA_RMSNORM_CUH
#define VL3_CUDA_RMSNORM_CUH

#ifdef __cplusplus
extern "C" {
#endif
/* y[r, :] = w * x[r, :] / sqrt(mean(x[r, :]^2) + eps) for r < rows. Device pointers; y may be x.
 * Returns 0 or -1 (launch failure). */
int cuda_rmsnorm(float *y, const float *x, const float *w, int rows, int cols, float eps,
                 void *stream);
/* The same on bf16 rows (f32 arithmetic, the result rounded to bf16). */
int cuda_rmsnorm_bf16(void *y, const void *x, const float *w, int rows, int cols, float eps,
                      void *stream);
#ifdef __cplusplus
}
#endif

#endif
