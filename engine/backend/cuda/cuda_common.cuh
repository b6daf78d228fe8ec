/* cuda_common.cuh: shared helpers of the CUDA backend: error conversion at the adapter
 * (cudaError_t -> VL3_E_CUDA / VL3_E_CUDA_FATAL with the statement text), launch checks, and the
 * launch macros that let every .cu file also build for the host emulator (emu/cuda_emu.h, with
 * -DVL3_CUDA_EMU): kernels are launched with VL3_LAUNCH, never with <<<>>> directly. */
#ifndef VL3_CUDA_COMMON_CUH
#define VL3_CUDA_COMMON_CUH

#ifdef VL3_CUDA_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime.h>

/* kernel<<<grid, block, shmem, stream>>>(args...) */
#define VL3_LAUNCH(kernel, grid, block, shmem, stream, ...)                                        \
    kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__)
/* The launch's dynamic shared memory as `type *name`. */
#define VL3_DYN_SHARED(type, name)                                                                 \
    extern __shared__ __align__(16) unsigned char name##_raw_[];                                   \
    type *name = reinterpret_cast<type *>(name##_raw_)
#endif

#ifdef __cplusplus
extern "C" {
#endif
#include "vl3/err.h"
#ifdef __cplusplus
}
#endif

/* Threads per block for n independent items: n rounded up to a whole warp, at most max_threads
 * (a multiple of 32), so short rows do not launch idle warps. */
static inline unsigned vl3__cuda_threads(long long n, unsigned max_threads)
{
    long long t = (n + 31) / 32 * 32;
    return t < 32 ? 32u : (t > (long long)max_threads ? max_threads : (unsigned)t);
}

/* Whether err leaves the context unusable (the worker must exit and be restarted). */
static inline int vl3__cuda_is_sticky(cudaError_t err)
{
    return err == cudaErrorIllegalAddress || err == cudaErrorLaunchFailure ||
           err == cudaErrorHardwareStackError || err == cudaErrorIllegalInstruction ||
           err == cudaErrorMisalignedAddress || err == cudaErrorInvalidPc ||
           err == cudaErrorECCUncorrectable;
}

#define VL3_CUDA_TRY(expr, reterr)                                                                 \
    do {                                                                                           \
        cudaError_t e_ = (expr);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return vl3_error_set((reterr), vl3__cuda_is_sticky(e_) ? VL3_E_CUDA_FATAL : VL3_E_CUDA, \
                                 "%s failed at %s:%d: %s", #expr, __FILE__, __LINE__,              \
                                 cudaGetErrorString(e_));                                          \
    } while (0)

#endif
