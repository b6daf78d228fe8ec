/* rope.cu: rotate-half RoPE (Qwen2 / HF layout), one block per token, one thread per (head,
 * pair), on f32 or bf16 rows; and the vision encoder's 2D RoPE (f32). The inverse frequency is
 * computed in float32 step by step as the CPU op and the reference do
 * (1 / theta^(float(2i) / float(dim))), and the angle pos * inv_freq in float32. */
#include "rope.cuh"

#include "dtype.cuh"

template <typename T>
__global__ void rope_kernel(T *x, int stride, int n_heads, int D, const int32_t *pos, float theta)
{
    const int half = D / 2;
    T *row = x + (size_t)blockIdx.x * stride;
    const float p = (float)pos[blockIdx.x];
    for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
        const int h = j / half, i = j - h * half;
        const float e = (float)(2 * i) / (float)D;
        const float inv = 1.0f / powf(theta, e);
        const float a = p * inv;
        const float c = cosf(a), s = sinf(a);
        T *v = row + (size_t)h * D;
        const float x0 = vl3_ld(v, i), x1 = vl3_ld(v, i + half);
        vl3_st(v, i, x0 * c - x1 * s);
        vl3_st(v, i + half, x1 * c + x0 * s);
    }
}

extern "C" int cuda_rope(float *x, int T, int stride, int n_heads, int D, const int32_t *pos,
                         float theta, void *stream)
{
    if (D % 2)
        return -22;
    if (T <= 0 || n_heads <= 0 || D <= 0)
        return 0;
    VL3_LAUNCH(rope_kernel<float>, T, vl3__cuda_threads((long long)n_heads * D / 2, 128), 0,
               (cudaStream_t)stream, x, stride, n_heads, D, pos, theta);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int cuda_rope_bf16(void *x, int T, int stride, int n_heads, int D, const int32_t *pos,
                              float theta, void *stream)
{
    if (D % 2)
        return -22;
    if (T <= 0 || n_heads <= 0 || D <= 0)
        return 0;
    VL3_LAUNCH(rope_kernel<vl3_bf16>, T, vl3__cuda_threads((long long)n_heads * D / 2, 128), 0,
               (cudaStream_t)stream, (vl3_bf16 *)x, stride, n_heads, D, pos, theta);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* 2D RoPE: the D/2 rotary angles of a row are D/4 row-position then D/4 column-position angles
 * with inv[k] = 1 / theta^(float(2k) / float(D/2)); pairs (i, i + D/2) rotate by angle i. */
__global__ void rope2d_kernel(float *x, const int32_t *pos_r, const int32_t *pos_c, int H, int D,
                              float theta)
{
    const int half = D / 2, q = D / 4;
    const size_t p = blockIdx.x;
    float *row = x + p * (size_t)H * D;
    for (int j = threadIdx.x; j < H * half; j += blockDim.x) {
        const int h = j / half, i = j - h * half;
        const int k = i < q ? i : i - q;
        const float inv = 1.0f / powf(theta, (float)(2 * k) / (float)half);
        const float a = (float)(i < q ? pos_r[p] : pos_c[p]) * inv;
        const float c = cosf(a), s = sinf(a);
        float *v = row + (size_t)h * D;
        const float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

extern "C" int cuda_rope2d(float *x, const int32_t *pos_r, const int32_t *pos_c, int64_t P, int H,
                           int D, float theta, void *stream)
{
    if (D % 4 || D <= 0 || P < 0 || P > 0x7fffffff)
        return -22;
    if (P == 0 || H <= 0)
        return 0;
    VL3_LAUNCH(rope2d_kernel, (unsigned)P, vl3__cuda_threads((long long)H * D / 2, 128), 0,
               (cudaStream_t)stream, x, pos_r, pos_c, H, D, theta);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
