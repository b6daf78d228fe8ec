/* argmax.cu: per-row argmax, one block per row. Each thread scans a strided slice keeping its
 * first maximum; (value, index) pairs are then reduced with shuffles inside each warp and across
 * the warps through shared memory, the smaller index winning ties, so the first maximum of the
 * row wins as in the CPU op. */
#include "argmax.cuh"

#include "cuda_common.cuh"

#define ARGMAX_THREADS 256

/* Whether (v, i) beats (bv, bi): larger, or equal with a smaller index. */
static __device__ __forceinline__ bool argmax_better(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

static __device__ __forceinline__ void argmax_warp(float *v, int *i)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *i, o);
        if (argmax_better(ov, oi, *v, *i)) {
            *v = ov;
            *i = oi;
        }
    }
}

__global__ void argmax_kernel(int32_t *out, const float *x, int n)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *row = x + (size_t)blockIdx.x * n;
    float bv = -INFINITY;
    int bi = n; /* "none": loses every tie */
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (row[i] > bv || bi == n) {
            bv = row[i];
            bi = i;
        }
    argmax_warp(&bv, &bi);
    if ((threadIdx.x & 31) == 0) {
        sv[threadIdx.x >> 5] = bv;
        si[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        const bool have = threadIdx.x < (blockDim.x >> 5);
        bv = have ? sv[threadIdx.x] : -INFINITY;
        bi = have ? si[threadIdx.x] : n;
        argmax_warp(&bv, &bi);
        if (threadIdx.x == 0)
            out[blockIdx.x] = bi < n ? bi : 0;
    }
}

extern "C" int cuda_argmax(int32_t *out, const float *x, int R, int n, void *stream)
{
    if (R <= 0 || n <= 0)
        return 0;
    VL3_LAUNCH(argmax_kernel, R, ARGMAX_THREADS, 0, (cudaStream_t)stream, out, x, n);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
