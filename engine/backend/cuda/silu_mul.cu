/* silu_mul.cu: SwiGLU, out = silu(gate) * up with gate and up the two halves of each row of the
 * fused gate/up projection; a 2-D grid (column tiles, rows), one element per thread. */
#include "silu_mul.cuh"

#include "cuda_common.cuh"

__global__ void silu_mul_kernel(float *out, const float *gu, int I)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= I)
        return;
    const float *g = gu + (size_t)blockIdx.y * 2 * I;
    const float gv = g[i];
    out[(size_t)blockIdx.y * I + i] = gv / (1.0f + expf(-gv)) * g[I + i];
}

extern "C" int cuda_silu_mul(float *out, const float *gu, int T, int I, void *stream)
{
    if (T <= 0 || I <= 0)
        return 0;
    dim3 grid((unsigned)(I + 255) / 256, (unsigned)T);
    VL3_LAUNCH(silu_mul_kernel, grid, 256, 0, (cudaStream_t)stream, out, gu, I);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
