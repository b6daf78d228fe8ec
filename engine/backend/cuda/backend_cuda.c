/* backend_cuda.c: the CUDA backend's vtable, exported from libvl3cuda.so as
 * vl3_cuda_backend_ops(). The only C file that calls the extern "C" launchers of *.cuh.
 * A machine without a driver reports 0 devices (cudaGetDeviceCount fails with error 35). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"

struct cuda_ctx {
    int device;
    cudaStream_t stream;
};

static int cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the "no driver" error */
        return 0;
    }
    return n;
}

static int cuda_device_name(int device, char *buf, size_t len)
{
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess)
        return VL3_E_CUDA;
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

static int cuda_init(int device, int n_threads, void **ret_ctx, vl3_error *reterr)
{
    if (cuda_device_count() <= device)
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "CUDA device %d not present", device);
    struct cuda_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -12, "out of memory");
    c->device = device;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(c);
        return vl3_error_set(reterr, VL3_E_CUDA, "could not initialise CUDA device %d: %s", device,
                             cudaGetErrorString(e));
    }
    *ret_ctx = c;
    return 0;
}

static void cuda_free(void *ctx)
{
    struct cuda_ctx *c = ctx;
    if (!c)
        return;
    if (c->stream)
        (void)cudaStreamDestroy(c->stream);
    free(c);
}

static const vl3__backend_ops cuda_ops = {
    .name = "cuda",
    .abi = VL3__BACKEND_ABI,
    .init = cuda_init,
    .free = cuda_free,
    .device_count = cuda_device_count,
    .device_name = cuda_device_name,
};

__attribute__((visibility("default"))) const vl3__backend_ops *vl3_cuda_backend_ops(void);
const vl3__backend_ops *vl3_cuda_backend_ops(void)
{
    return &cuda_ops;
}
