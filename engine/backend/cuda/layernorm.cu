/* layernorm.cu: LayerNorm, one block per row, two passes over the row in fp32 (mean, then the
 * variance of x - mean, which keeps precision for rows with a large mean). */
#include "layernorm.cuh"

#include "reduce.cuh"

__global__ void layernorm_kernel(float *y, const float *x, const float *w, const float *b,
                                 int cols, float eps)
{
    __shared__ float scratch[32];
    const float *xr = x + (size_t)blockIdx.x * cols;
    float *yr = y + (size_t)blockIdx.x * cols;
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        s += xr[i];
    const float mean = block_sum(s, scratch) / (float)cols;
    float v = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = xr[i] - mean;
        v += d * d;
    }
    const float inv = rsqrtf(block_sum(v, scratch) / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
}

extern "C" int cuda_layernorm(float *y, const float *x, const float *w, const float *b, int rows,
                              int cols, float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    VL3_LAUNCH(layernorm_kernel, rows, vl3__cuda_threads(cols, 256), 0, (cudaStream_t)stream, y,
               x, w, b, cols, eps);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
