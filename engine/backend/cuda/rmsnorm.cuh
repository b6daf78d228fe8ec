/* rmsnorm.cuh: host launcher of the RMSNorm kernel (f32 in/out, f32 weight). */
#ifndef VL3_CUDA_RMSNORM_CUH
#define VL3_CUDA_RMSNORM_CUH

#ifdef __cplusplus
extern "C" {
#endif
/* y[r, :] = w * x[r, :] / sqrt(mean(x[r, :]^2) + eps) for r < rows. Device pointers. */
int cuda_rmsnorm(float *y, const float *x, const float *w, int rows, int cols, float eps,
                 void *stream);
#ifdef __cplusplus
}
#endif

#endif
