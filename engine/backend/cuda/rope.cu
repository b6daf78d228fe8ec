/* rope.cu: rotate-half RoPE (Qwen2 / HF layout), one block per token, one thread per (head,
 * pair). The inverse frequency is computed in float32 step by step as the CPU op and the
 * reference do (1 / theta^(float(2i) / float(D))), and the angle pos * inv_freq in float32. */
#include "rope.cuh"

#include "cuda_common.cuh"

__global__ void rope_kernel(float *x, int stride, int n_heads, int D, const int32_t *pos,
                            float theta)
{
    const int half = D / 2;
    float *row = x + (size_t)blockIdx.x * stride;
    const float p = (float)pos[blockIdx.x];
    for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
        const int h = j / half, i = j - h * half;
        const float e = (float)(2 * i) / (float)D;
        const float inv = 1.0f / powf(theta, e);
        const float a = p * inv;
        const float c = cosf(a), s = sinf(a);
        float *v = row + (size_t)h * D;
        const float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

extern "C" int cuda_rope(float *x, int T, int stride, int n_heads, int D, const int32_t *pos,
                         float theta, void *stream)
{
    if (D % 2)
        return -22;
    if (T <= 0 || n_heads <= 0 || D <= 0)
        return 0;
    VL3_LAUNCH(rope_kernel, T, 128, 0, (cudaStream_t)stream, x, stride, n_heads, D, pos, theta);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
