/* rmsnorm.cu: RMSNorm, one block per row; fp32 accumulation as the model specifies (spec §6).
 * Its op test compares against the CPU op (label gpu on a device, cuda-emu on the host
 * emulator). */
#include "rmsnorm.cuh"

#include "cuda_common.cuh"

__global__ void rmsnorm_kernel(float *y, const float *x, const float *w, int cols, float eps)
{
    const float *xr = x + (size_t)blockIdx.x * cols;
    float *yr = y + (size_t)blockIdx.x * cols;
    __shared__ float partial[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        s += xr[i] * xr[i];
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
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        yr[i] = w[i] * (xr[i] * inv);
}

extern "C" int cuda_rmsnorm(float *y, const float *x, const float *w, int rows, int cols,
                            float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    VL3_LAUNCH(rmsnorm_kernel, rows, 256, 0, (cudaStream_t)stream, y, x, w, cols, eps);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
