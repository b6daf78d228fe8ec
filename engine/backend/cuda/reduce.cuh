/* reduce.cuh: warp and block reductions shared by the kernels (device code, header-only).
 * Block functions need blockDim.x a multiple of 32 (at most 1024) and are called by every
 * thread of the block; the result is returned to all threads. */
#ifndef VL3_CUDA_REDUCE_CUH
#define VL3_CUDA_REDUCE_CUH

#include "cuda_common.cuh"

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* scratch: 32 floats of shared memory, free again when this returns. */
static __device__ __forceinline__ float block_sum(float v, float *scratch)
{
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0)
        scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    /* every warp sums the per-warp totals, so that all threads get the result */
    const unsigned lane = threadIdx.x & 31;
    v = lane < (blockDim.x >> 5) ? scratch[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads(); /* scratch may be reused by the caller's next reduction */
    return v;
}

#endif
