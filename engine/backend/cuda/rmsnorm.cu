/* rmsnorm.cu: RMSNorm, one block per row; fp32 accumulation as the model specifies (spec §6).
 * One template for f32 and bf16 rows (the weight is f32 on every backend). Its op tests compare
 * against the CPU op (label cuda-emu on the host emulator; label gpu on a device). */
#include "rmsnorm.cuh"

#include "dtype.cuh"

template <typename T>
__global__ void rmsnorm_kernel(T *y, const T *x, const float *w, int cols, float eps)
{
    const T *xr = x + (size_t)blockIdx.x * cols;
    T *yr = y + (size_t)blockIdx.x * cols;
    __shared__ float partial[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = vl3_ld(xr, i);
        s += v * v;
    }
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0)
        partial[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (threadIdx.x == 0)
            partial[0] = s;
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / (float)cols + eps);
    /* every thread has read partial[0] before a later block (or launch) may reuse it */
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        vl3_st(yr, i, w[i] * (vl3_ld(xr, i) * inv));
}

extern "C" int cuda_rmsnorm(float *y, const float *x, const float *w, int rows, int cols,
                            float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    VL3_LAUNCH(rmsnorm_kernel<float>, rows, vl3__cuda_threads(cols, 256), 0, (cudaStream_t)stream,
               y, x, w, cols, eps);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int cuda_rmsnorm_bf16(void *y, const void *x, const float *w, int rows, int cols,
                                 float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    VL3_LAUNCH(rmsnorm_kernel<vl3_bf16>, rows, vl3__cuda_threads(cols, 256), 0,
               (cudaStream_t)stream, (vl3_bf16 *)y, (const vl3_bf16 *)x, w, cols, eps);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
