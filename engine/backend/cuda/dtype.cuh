/* dtype.cuh: element loads and stores in f32 or bf16 (device code, header-only), so that one
 * kernel template serves the f32 ops (the vision encoder, the CPU-compatible tests) and the
 * bf16 activations of the LLM. Arithmetic is always f32; a bf16 store rounds to nearest even. */
#ifndef VL3_CUDA_DTYPE_CUH
#define VL3_CUDA_DTYPE_CUH

#include "cuda_common.cuh"

#ifndef VL3_CUDA_EMU
#include <cuda_bf16.h>
#endif

typedef __nv_bfloat16 vl3_bf16;

static __device__ __forceinline__ float vl3_ld(const float *p, size_t i)
{
    return p[i];
}

static __device__ __forceinline__ float vl3_ld(const vl3_bf16 *p, size_t i)
{
    return __bfloat162float(p[i]);
}

static __device__ __forceinline__ void vl3_st(float *p, size_t i, float v)
{
    p[i] = v;
}

static __device__ __forceinline__ void vl3_st(vl3_bf16 *p, size_t i, float v)
{
    p[i] = __float2bfloat16(v);
}

#endif
