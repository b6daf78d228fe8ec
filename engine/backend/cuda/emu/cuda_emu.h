/* cuda_emu.h: a host emulation of the CUDA execution model, so that the backend's .cu kernels run
 * (and are tested) on machines without a GPU. A .cu file compiled by the host C++ compiler with
 * -x c++ -DVL3_CUDA_EMU gets from this header what nvcc would provide:
 *
 *  - __global__/__device__/__host__/__forceinline__/__launch_bounds__ as no-ops, __shared__ as
 *    `static __thread` (one block runs at a time per host thread and all its threads are fibers
 *    of that OS thread, so a thread-local static is exactly per-block shared memory, also when
 *    several host threads launch kernels at once; it is NOT cleared between blocks);
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
 *  - nvcuda::wmma 16x16x16 fragments (bf16/f32 -> f32) with a deliberately scrambled element
 *    layout, so that code depending on the hardware's fragment layout breaks here;
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
/* Tests: the n-th kernel launch from now (n >= 1; 0 = off) fails with cudaErrorIllegalAddress,
 * which then sticks for the whole process as on a real device (every later launch, copy,
 * synchronize and cudaGetLastError returns it). The call also clears an earlier sticky error
 * (a fresh device). VL3_CUDA_EMU_FAULT=N arms it from the environment, counting from the
 * process's first launch. */
void vl3_emu_fault_after(long n);
/* Tests: the number of host-to-device and device-to-host copies (cudaMemcpy(Async) of those
 * kinds) and their bytes since the process started, over all threads. */
void vl3_emu_copy_stats(long *ret_h2d, long *ret_d2h, long long *ret_h2d_bytes,
                        long long *ret_d2h_bytes);

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
/* thread-local: kernels launched from several host threads at once (the worker's vision and
 * decode threads) must not share a block's shared memory */
#define __shared__ static __thread
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

/* Bit casts between float and its 32 bits. */
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, sizeof(u));
    return u;
}
static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Math: libm stands in for the device functions (results may differ from the GPU's in the
 * last bits; the op tests' tolerances allow for that). */
static inline float rsqrtf(float x)
{
    return 1.0f / sqrtf(x);
}
/* __expf and __logf: glibc's math.h declares them but current libm exports neither, so they
 * map onto expf and logf here. */
static inline float vl3_emu_expf(float x)
{
    return expf(x);
}
static inline float vl3_emu_logf(float x)
{
    return logf(x);
}
#define __expf vl3_emu_expf
#define __logf vl3_emu_logf
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

/* nvcuda::wmma, 16x16x16 only (bf16 or f32 inputs, f32 accumulator). Each lane holds 8 elements
 * of a fragment; element e of lane l is the matrix element number perm(8l + e) in row-major
 * order, with perm a scrambled permutation unlike any GPU's layout, so that code which touches
 * fragment.x[] assuming a particular hardware layout gives wrong results here. mma_sync is a
 * warp rendezvous: lanes publish their fragments, each computes its own elements, and a second
 * rendezvous keeps the inputs alive until every lane has read them. */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

static inline int vl3_emu_wmma_perm(int k) /* lane-element slot -> row-major index, 0..255 */
{
    return (k * 37 + 11) & 255;
}
static inline int vl3_emu_wmma_slot(int idx) /* the inverse: 37 * 173 = 1 (mod 256) */
{
    return ((idx - 11) * 173) & 255;
}
static inline float vl3_emu_wmma_f(float v)
{
    return v;
}
static inline float vl3_emu_wmma_f(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 fragments only");
    enum { num_elements = 8 };
    T x[num_elements];
};

template <typename Use, typename T, typename L, typename V>
static inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, V v)
{
    for (int e = 0; e < 8; e++)
        f.x[e] = (T)v;
}

static inline int vl3_emu_lane(void)
{
    const struct vl3_emu_coords *c = vl3_emu_cur;
    return (int)((c->thread_idx.z * c->block_dim.y + c->thread_idx.y) * c->block_dim.x +
                 c->thread_idx.x) & 31;
}
static inline int vl3_emu_warp_id(void)
{
    const struct vl3_emu_coords *c = vl3_emu_cur;
    return (int)((c->thread_idx.z * c->block_dim.y + c->thread_idx.y) * c->block_dim.x +
                 c->thread_idx.x) >> 5;
}

template <typename T>
static inline void vl3_emu_wmma_load(T *x, const T *p, unsigned ldm, bool col)
{
    const int l = vl3_emu_lane();
    for (int e = 0; e < 8; e++) {
        const int idx = vl3_emu_wmma_perm(8 * l + e), r = idx >> 4, c = idx & 15;
        x[e] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}
template <typename Use, typename T, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    static_assert(!std::is_same<Use, accumulator>::value, "accumulators need a layout_t");
    vl3_emu_wmma_load(f.x, p, ldm, std::is_same<L, col_major>::value);
}
template <typename T>
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T, void> &f, const T *p,
                                    unsigned ldm, layout_t layout)
{
    vl3_emu_wmma_load(f.x, p, ldm, layout == mem_col_major);
}
template <typename T>
static inline void store_matrix_sync(T *p, const fragment<accumulator, 16, 16, 16, T, void> &f,
                                     unsigned ldm, layout_t layout)
{
    const int l = vl3_emu_lane();
    for (int e = 0; e < 8; e++) {
        const int idx = vl3_emu_wmma_perm(8 * l + e), r = idx >> 4, c = idx & 15;
        if (layout == mem_col_major)
            p[(size_t)c * ldm + r] = f.x[e];
        else
            p[(size_t)r * ldm + c] = f.x[e];
    }
}

/* d = a b + c over the warp. */
template <typename TA, typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float, void> &d,
                            const fragment<matrix_a, 16, 16, 16, TA, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, TA, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float, void> &c)
{
    static const TA *ta[32][32], *tb[32][32]; /* per (warp, lane); one block at a time */
    static const float *tc[32][32];
    const int l = vl3_emu_lane(), w = vl3_emu_warp_id();
    ta[w][l] = a.x;
    tb[w][l] = b.x;
    tc[w][l] = c.x;
    __syncwarp();
    float out[8];
    for (int e = 0; e < 8; e++) {
        const int idx = vl3_emu_wmma_perm(8 * l + e), r = idx >> 4, col = idx & 15;
        const int sc = vl3_emu_wmma_slot(idx);
        float acc = tc[w][sc >> 3][sc & 7];
        for (int k = 0; k < 16; k++) {
            const int sa = vl3_emu_wmma_slot(r * 16 + k), sb = vl3_emu_wmma_slot(k * 16 + col);
            acc += vl3_emu_wmma_f(ta[w][sa >> 3][sa & 7]) * vl3_emu_wmma_f(tb[w][sb >> 3][sb & 7]);
        }
        out[e] = acc;
    }
    __syncwarp();
    for (int e = 0; e < 8; e++)
        d.x[e] = out[e];
}
} /* namespace wmma */
} /* namespace nvcuda */

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
