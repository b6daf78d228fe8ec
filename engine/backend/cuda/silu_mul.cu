/* silu_mul.cu: SwiGLU, out = silu(gate) * up with gate and up the two halves of each row of the
 * fused gate/up projection; a 2-D grid (column tiles, rows), one element per thread; f32 or bf16
 * rows (f32 arithmetic). */
#include "silu_mul.cuh"

#include "dtype.cuh"

template <typename T> __global__ void silu_mul_kernel(T *out, const T *gu, int I)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= I)
        return;
    const T *g = gu + (size_t)blockIdx.y * 2 * I;
    const float gv = vl3_ld(g, i);
    vl3_st(out, (size_t)blockIdx.y * I + i, gv / (1.0f + expf(-gv)) * vl3_ld(g, (size_t)I + i));
}

extern "C" int cuda_silu_mul(float *out, const float *gu, int T, int I, void *stream)
{
    if (T <= 0 || I <= 0)
        return 0;
    const unsigned nt = vl3__cuda_threads(I, 256);
    dim3 grid((unsigned)(I + nt - 1) / nt, (unsigned)T);
    VL3_LAUNCH(silu_mul_kernel<float>, grid, nt, 0, (cudaStream_t)stream, out, gu, I);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int cuda_silu_mul_bf16(void *out, const void *gu, int T, int I, void *stream)
{
    if (T <= 0 || I <= 0)
        return 0;
    const unsigned nt = vl3__cuda_threads(I, 256);
    dim3 grid((unsigned)(I + nt - 1) / nt, (unsigned)T);
    VL3_LAUNCH(silu_mul_kernel<vl3_bf16>, grid, nt, 0, (cudaStream_t)stream, (vl3_bf16 *)out,
               (const vl3_bf16 *)gu, I);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
