/* cuda_common.cuh: shared helpers of the CUDA backend: error conversion at the adapter
 * (cudaError_t -> VL3_E_CUDA / VL3_E_CUDA_FATAL with the statement text), launch checks. */
#ifndef VL3_CUDA_COMMON_CUH
#define VL3_CUDA_COMMON_CUH

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "vl3/err.h"
#ifdef __cplusplus
}
#endif

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
