/* cuda_emu.h: a host emulation of the CUDA execution model, so that the backend's .cu kernels run
 * (and are tested) on machines without a GPU. A .cu file compiled by the host C++ compiler with
 * -x c++ -DVL3_CUDA_EMU gets from this header what nvcc would provide:
 *
 *  - __global__/__device__/__host__/__forceinline__/__launch_bounds__ as no-ops, __shared__ as
 *    `static` (one block runs at a time and all its threads are fibers of one OS thread, so a
 *    static is exactly per-block shared memory; it is NOT cleared between blocks);
 *  - threadIdx/blockIdx/blockDim/gridDim (the current fiber's values), warpSize;
 *  - __syncthreads(): a barrier; every thread of the block runs until it reaches it, then all go
 *    on. A barrier that can never complete (divergent __syncthreads, a thread that returned while
 *    others wait) aborts with a message naming the threads and call sites instead of hanging;
 *  - warp primitives __shfl_sync/__shfl_xor_sync/__shfl_down_sync/__shfl_up_sync,
 *    __ballot_sync/__any_sync/__all_sync: each lane deposits its value and waits until every lane
 *    of the mask has arrived; results are computed for the whole group at once. A mask naming a
 *    lane that does not exist or has exited is reported as a deadlock (undefined on a GPU);
 *  - atomics (trivial: fibers never preempt each other), math (rsqrtf, __expf, __fdividef, ...;
 *    computed with libm, so results differ from the GPU's in the last bits), __nv_bfloat16 with
 *    __float2bfloat16 (round to nearest even) and __bfloat162float;
 *  - VL3_LAUNCH(kernel, grid, block, shmem, stream, args...) (kernel<<<...>>>(args) under nvcc)
 *    and VL3_DYN_SHARED(type, name) for `extern __shared__ type name[]` of shmem bytes;
 *  - the runtime subset the backend uses (cudaMalloc = malloc, so AddressSanitizer sees
 *    out-of-bounds accesses; cudaMemcpy(Async), cudaMemset, streams, cudaGetLastError, ...),
 *    mapped by macros onto vl3_emu_* functions so they never clash with a real libcudart.
 *
 * Blocks run one after another: races between blocks and inter-block ordering are not modelled.
 * Threads of a block are ucontext fibers switched only at barriers and warp primitives, so races
 * between threads inside one barrier interval go unseen too. See docs/cuda-emu.md.
 * The runtime half (C API, usable from C) is cuda_emu.c; the kernel half needs C++. */
#ifndef VL3_CUDA_EMU_H
#define VL3_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#include <string.h>

#include <type_traits>
extern "C" {
#endif

/* ---- runtime API (C) ------------------------------------------------------------------------ */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
    cudaErrorHardwareStackError = 714,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorInvalidPc = 718,
    cudaErrorECCUncorrectable = 214,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

#define cudaStreamNonBlocking 0x01u

typedef struct vl3_emu_stream *cudaStream_t;

struct vl3_emu_dim3 {
    unsigned x, y, z;
};

cudaError_t vl3_emu_cudaMalloc(void **ret_ptr, size_t n);
cudaError_t vl3_emu_cudaFree(void *p);
cudaError_t vl3_emu_cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind);
cudaError_t vl3_emu_cudaMemcpyAsync(void *dst, const void *src, size_t n,
                                    enum cudaMemcpyKind kind, cudaStream_t s);
cudaError_t vl3_emu_cudaMemset(void *p, int value, size_t n);
cudaError_t vl3_emu_cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s);
cudaError_t vl3_emu_cudaStreamCreate(cudaStream_t *ret_s);
cudaError_t vl3_emu_cudaStreamCreateWithFlags(cudaStream_t *ret_s, unsigned flags);
cudaError_t vl3_emu_cudaStreamDestroy(cudaStream_t s);
cudaError_t vl3_emu_cudaStreamSynchronize(cudaStream_t s);
cudaError_t vl3_emu_cudaDeviceSynchronize(void);
cudaError_t vl3_emu_cudaGetLastError(void);
cudaError_t vl3_emu_cudaPeekAtLastError(void);
const char *vl3_emu_cudaGetErrorString(cudaError_t e);
cudaError_t vl3_emu_cudaGetDeviceCount(int *ret_n);
cudaError_t vl3_emu_cudaSetDevice(int device);

#define cudaMalloc vl3_emu_cudaMalloc
#define cudaFree vl3_emu_cudaFree
#define cudaMemcpy vl3_emu_cudaMemcpy
#define cudaMemcpyAsync vl3_emu_cudaMemcpyAsync
#define cudaMemset vl3_emu_cudaMemset
#define cudaMemsetAsync vl3_emu_cudaMemsetAsync
#define cudaStreamCreate vl3_emu_cudaStreamCreate
#define cudaStreamCreateWithFlags vl3_emu_cudaStreamCreateWithFlags
#define cudaStreamDestroy vl3_emu_cudaStreamDestroy
#define cudaStreamSynchronize vl3_emu_cudaStreamSynchronize
#define cudaDeviceSynchronize vl3_emu_cudaDeviceSynchronize
#define cudaGetLastError vl3_emu_cudaGetLastError
#define cudaPeekAtLastError vl3_emu_cudaPeekAtLastError
#define cudaGetErrorString vl3_emu_cudaGetErrorString
#define cudaGetDeviceCount vl3_emu_cudaGetDeviceCount
#define cudaSetDevice vl3_emu_cudaSetDevice

/* ---- execution model (used by the C++ half below) ------------------------------------------- */
enum vl3_emu_warp_op {
    VL3_EMU_SHFL_IDX,
    VL3_EMU_SHFL_XOR,
    VL3_EMU_SHFL_DOWN,
    VL3_EMU_SHFL_UP,
    VL3_EMU_BALLOT,
    VL3_EMU_ANY,
    VL3_EMU_ALL,
};

/* The current fiber's coordinates; valid inside a kernel only. */
struct vl3_emu_coords {
    struct vl3_emu_dim3 thread_idx, block_idx, block_dim, grid_dim;
};
extern __thread const struct vl3_emu_coords *vl3_emu_cur;

/* Run fn(arg) as a kernel: grid blocks one after another, each block's threads as fibers.
 * Sets the last error (cudaErrorInvalidConfiguration) on a bad configuration. */
void vl3_emu_launch(struct vl3_emu_dim3 grid, struct vl3_emu_dim3 block, size_t shmem,
                    cudaStream_t stream, void (*fn)(void *), void *arg);
void vl3_emu_syncthreads(const char *file, int line);
uint64_t vl3_emu_warp(enum vl3_emu_warp_op op, unsigned mask, uint64_t value, int param,
                      int width, const char *file, int line);
/* The launch's dynamic shared memory (shmem bytes, 16-byte aligned, NaN-poisoned per block). */
void *vl3_emu_dyn_shmem(void);

#ifdef __cplusplus
}
#endif

/* ---- the C++ half: what a .cu file sees ----------------------------------------------------- */
#ifdef __cplusplus

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static

struct dim3 : vl3_emu_dim3 {
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : vl3_emu_dim3{x_, y_, z_} {}
};

#define threadIdx (vl3_emu_cur->thread_idx)
#define blockIdx (vl3_emu_cur->block_idx)
#define blockDim (vl3_emu_cur->block_dim)
#define gridDim (vl3_emu_cur->grid_dim)
#define warpSize 32

#define __syncthreads() vl3_emu_syncthreads(__FILE__, __LINE__)

template <typename T> static inline uint64_t vl3_emu_bits(T v)
{
    static_assert(sizeof(T) <= 8, "warp values up to 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> static inline T vl3_emu_unbits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
#define VL3_EMU_SHFL(op, mask, v, p, w)                                                            \
    vl3_emu_unbits<std::remove_cv_t<std::remove_reference_t<decltype(v)>>>(vl3_emu_warp((op), (mask), vl3_emu_bits(v), (p), (w), __FILE__,   \
                                             __LINE__))
#define __shfl_sync(mask, v, src, ...) VL3_EMU_SHFL(VL3_EMU_SHFL_IDX, mask, v, src, VL3_EMU_W(__VA_ARGS__))
#define __shfl_xor_sync(mask, v, m, ...) VL3_EMU_SHFL(VL3_EMU_SHFL_XOR, mask, v, m, VL3_EMU_W(__VA_ARGS__))
#define __shfl_down_sync(mask, v, d, ...) VL3_EMU_SHFL(VL3_EMU_SHFL_DOWN, mask, v, d, VL3_EMU_W(__VA_ARGS__))
#define __shfl_up_sync(mask, v, d, ...) VL3_EMU_SHFL(VL3_EMU_SHFL_UP, mask, v, d, VL3_EMU_W(__VA_ARGS__))
/* the optional width argument (default warpSize) */
#define VL3_EMU_W(...) (32 __VA_OPT__(* 0 + (__VA_ARGS__)))
#define __ballot_sync(mask, pred)                                                                  \
    ((unsigned)vl3_emu_warp(VL3_EMU_BALLOT, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred)                                                                     \
    ((int)vl3_emu_warp(VL3_EMU_ANY, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __syncwarp(...)                                                                            \
    ((void)vl3_emu_warp(VL3_EMU_BALLOT, (0xffffffffu __VA_OPT__(* 0 + (__VA_ARGS__))), 0u, 0, 32,  \
                        __FILE__, __LINE__))
#define __all_sync(mask, pred)                                                                     \
    ((int)vl3_emu_warp(VL3_EMU_ALL, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))

/* Atomics: blocks run one at a time and fibers switch only at barriers, so plain code is atomic. */
template <typename T> static inline T atomicAdd(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> static inline T atomicMax(T *p, T v)
{
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <typename T> static inline T atomicMin(T *p, T v)
{
    T old = *p;
    *p = old < v ? old : v;
    return old;
}
template <typename T> static inline T atomicExch(T *p, T v)
{
    T old = *p;
    *p = v;
    return old;
}
template <typename T> static inline T atomicCAS(T *p, T compare, T v)
{
    T old = *p;
    if (old == compare)
        *p = v;
    return old;
}

/* Math: libm stands in for the device functions (results may differ from the GPU's in the
 * last bits; the op tests' tolerances allow for that). */
static inline float rsqrtf(float x)
{
    return 1.0f / sqrtf(x);
}
/* __expf and __logf: glibc declares and exports them (= expf, logf). */
static inline float __fdividef(float a, float b)
{
    return a / b;
}
static inline float __saturatef(float x)
{
    return x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
}

/* bf16 as cuda_bf16.h names it. */
struct __nv_bfloat16 {
    unsigned short __x;
};
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays a quiet NaN */
        r.__x = (unsigned short)((u >> 16) | 0x40u);
    else
        r.__x = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return r;
}
static inline float __bfloat162float(__nv_bfloat16 h)
{
    uint32_t u = (uint32_t)h.__x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

namespace vl3_emu {
template <typename F> static void tramp(void *p)
{
    (*static_cast<F *>(p))();
}
template <typename F>
static inline void launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t s, F f)
{
    vl3_emu_launch(grid, block, shmem, s, tramp<F>, &f);
}
} /* namespace vl3_emu */

/* The kernel's arguments are copied once into the closure (as kernel parameters are). */
#define VL3_LAUNCH(kernel, grid, block, shmem, stream, ...)                                        \
    vl3_emu::launch((grid), (block), (shmem), (stream), [=]() { kernel(__VA_ARGS__); })
#define VL3_DYN_SHARED(type, name) type *name = static_cast<type *>(vl3_emu_dyn_shmem())

template <typename T> static inline cudaError_t vl3_emu_cudaMalloc(T **ret_ptr, size_t n)
{
    return vl3_emu_cudaMalloc(reinterpret_cast<void **>(ret_ptr), n);
}

#endif /* __cplusplus */

#endif
