/* cuda_emu_selftest.cu: kernels that test the CUDA emulator itself (test_cuda_emu.c): a shared
 * memory tree reduction across __syncthreads, warp shuffles and votes, a neighbour exchange with
 * and without its barrier, dynamic shared memory, deadlocking barriers and an out-of-bounds
 * write. Plain CUDA; built for the host emulator only. */
#include <stdint.h>

#include "cuda_common.cuh"
#include "cuda_emu_selftest.h"

#define SELF_THREADS 128

/* out[b] = sum of x[b * 128 .. b * 128 + 127], a shared-memory tree over 128 threads. */
__global__ void self_tree_sum_kernel(float *out, const float *x)
{
    __shared__ float s[SELF_THREADS];
    s[threadIdx.x] = x[blockIdx.x * SELF_THREADS + threadIdx.x];
    __syncthreads();
    for (int h = SELF_THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h)
            s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = s[0];
}

/* Per lane of a 64-thread block: the butterfly sum, shfl_down tree (lane 0), shfl broadcast of
 * lane 5, shfl_up by 1, the ballot of odd values, any(value > 3.5), all(value < 1e9). */
__global__ void self_warp_kernel(float *xor_sum, float *down_sum, float *bcast, float *up,
                                 unsigned *ballot, int *any, int *all, const float *x)
{
    const int t = threadIdx.x;
    float v = x[t], s = v, d = v;
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    for (int o = 16; o > 0; o >>= 1)
        d += __shfl_down_sync(0xffffffffu, d, o);
    xor_sum[t] = s;
    down_sum[t] = d;
    bcast[t] = __shfl_sync(0xffffffffu, v, 5);
    up[t] = __shfl_up_sync(0xffffffffu, v, 1);
    ballot[t] = __ballot_sync(0xffffffffu, ((int)v) & 1);
    any[t] = __any_sync(0xffffffffu, v > 3.5f);
    all[t] = __all_sync(0xffffffffu, v < 1e9f);
}

/* out[t] = x[(t + 1) % n] passed through shared memory; with_barrier = 0 leaves out the
 * __syncthreads between the write and the read (a race the emulator must expose). */
template <int with_barrier> __global__ void self_exchange_kernel(float *out, const float *x)
{
    __shared__ float s[SELF_THREADS];
    const int t = threadIdx.x;
    s[t] = x[t];
    if (with_barrier)
        __syncthreads();
    out[t] = s[(t + 1) % SELF_THREADS];
}

/* the exchange inside one warp, ordered by __syncwarp() */
__global__ void self_warp_exchange_kernel(float *out, const float *x)
{
    __shared__ float s[32];
    const int t = threadIdx.x;
    s[t] = x[t];
    __syncwarp();
    out[t] = s[(t + 1) % 32];
}

/* out = x reversed through blockDim.x floats of dynamic shared memory. */
__global__ void self_dyn_reverse_kernel(float *out, const float *x)
{
    VL3_DYN_SHARED(float, s);
    const int t = threadIdx.x, n = blockDim.x;
    s[n - 1 - t] = x[t];
    __syncthreads();
    out[t] = s[t];
}

/* mode 0: __syncthreads at two different sites; 1: thread 0 returns before the barrier; 2: a
 * full-mask shuffle from half a warp; 3: the well-formed barrier (must not deadlock). */
__global__ void self_deadlock_kernel(float *out, int mode)
{
    const int t = threadIdx.x;
    float v = (float)t;
    if (mode == 0) {
        if (t < 16)
            __syncthreads();
        else
            __syncthreads();
    } else if (mode == 1) {
        if (t == 0)
            return;
        __syncthreads();
    } else if (mode == 2) {
        if (t < 16)
            v = __shfl_xor_sync(0xffffffffu, v, 1);
    } else {
        __syncthreads();
    }
    out[t] = v;
}

/* Per warp w of the block: d_w = a_w b_w + c_w for 16x16 tiles (a row-major bf16, b bf16 in
 * BLayout, c and d row-major f32). With row_scale, the accumulator is then scaled per row through
 * fragment.x[] assuming the sm_80 accumulator layout (row = lane / 4 + 8 * ((e >> 1) & 1)),
 * which the emulator's scrambled layout must break. */
template <typename BLayout>
__global__ void self_wmma_kernel(float *d, const __nv_bfloat16 *a, const __nv_bfloat16 *b,
                                 const float *c, const float *row_scale)
{
    using namespace nvcuda;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a + w * 256, 16);
    wmma::load_matrix_sync(fb, b + w * 256, 16);
    wmma::load_matrix_sync(fc, c + w * 256, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    if (row_scale)
        for (int e = 0; e < fc.num_elements; e++)
            fc.x[e] *= row_scale[lane / 4 + 8 * ((e >> 1) & 1)];
    wmma::store_matrix_sync(d + w * 256, fc, 16, wmma::mem_row_major);
}

/* writes one float past the end of out[n] */
__global__ void self_oob_kernel(float *out, int n)
{
    if ((int)threadIdx.x == 0)
        out[n] = 1.0f;
}


int self_tree_sum(float *out, const float *x, int blocks)
{
    VL3_LAUNCH(self_tree_sum_kernel, blocks, SELF_THREADS, 0, nullptr, out, x);
    return cudaGetLastError();
}

int self_warp(float *xor_sum, float *down_sum, float *bcast, float *up, unsigned *ballot,
              int *any, int *all, const float *x)
{
    VL3_LAUNCH(self_warp_kernel, 1, 64, 0, nullptr, xor_sum, down_sum, bcast, up, ballot, any,
               all, x);
    return cudaGetLastError();
}

int self_exchange(float *out, const float *x, int with_barrier)
{
    if (with_barrier)
        VL3_LAUNCH(self_exchange_kernel<1>, 1, SELF_THREADS, 0, nullptr, out, x);
    else
        VL3_LAUNCH(self_exchange_kernel<0>, 1, SELF_THREADS, 0, nullptr, out, x);
    return cudaGetLastError();
}

int self_warp_exchange(float *out, const float *x)
{
    VL3_LAUNCH(self_warp_exchange_kernel, 1, 32, 0, nullptr, out, x);
    return cudaGetLastError();
}

int self_dyn_reverse(float *out, const float *x, int n)
{
    VL3_LAUNCH(self_dyn_reverse_kernel, 1, n, n * sizeof(float), nullptr, out, x);
    return cudaGetLastError();
}

int self_deadlock(float *out, int mode)
{
    VL3_LAUNCH(self_deadlock_kernel, 1, 64, 0, nullptr, out, mode);
    return cudaGetLastError();
}

int self_wmma(float *d, const uint16_t *a, const uint16_t *b, const float *c, int b_col_major,
              const float *row_scale, int warps)
{
    const __nv_bfloat16 *ab = reinterpret_cast<const __nv_bfloat16 *>(a);
    const __nv_bfloat16 *bb = reinterpret_cast<const __nv_bfloat16 *>(b);
    if (b_col_major)
        VL3_LAUNCH(self_wmma_kernel<nvcuda::wmma::col_major>, 1, 32 * warps, 0, nullptr, d, ab, bb,
                   c, row_scale);
    else
        VL3_LAUNCH(self_wmma_kernel<nvcuda::wmma::row_major>, 1, 32 * warps, 0, nullptr, d, ab, bb,
                   c, row_scale);
    return cudaGetLastError();
}

int self_oob(float *out, int n)
{
    VL3_LAUNCH(self_oob_kernel, 1, 32, 0, nullptr, out, n);
    return cudaGetLastError();
}

int self_launch_bad_config(void)
{
    float *p = nullptr;
    VL3_LAUNCH(self_oob_kernel, 1, 2048, 0, nullptr, p, 0);
    return cudaGetLastError();
}
