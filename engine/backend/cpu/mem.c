/* mem.c: CPU backend memory: "device" memory is 64-byte aligned host memory, transfers are
 * memcpy, synchronize is a no-op. Matmul and embedding weights are kept in bf16, the dtype of
 * the released checkpoints (copied as is; f32/f16 sources are rounded to nearest even): the
 * decode step is memory-bound and reads half the bytes of f32 (see matmul.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "half.h"
#include "model.h"

#define CPU_ALIGN 64 /* cache line; also AVX-512 friendly */

int vl3__cpu_alloc(void *ctx, size_t nbytes, void **ret_ptr, vl3_error *reterr)
{
    (void)ctx;
    void *p = NULL;
    size_t n = (nbytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (n < nbytes || posix_memalign(&p, CPU_ALIGN, n ? n : CPU_ALIGN) != 0)
        return vl3_error_set(reterr, -ENOMEM, "could not allocate %zu bytes of CPU memory",
                             nbytes);
    *ret_ptr = p;
    return 0;
}

void vl3__cpu_dealloc(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

int vl3__cpu_upload(void *ctx, void *dst, const void *src_host, size_t n)
{
    (void)ctx;
    if (n)
        memmove(dst, src_host, n);
    return 0;
}

int vl3__cpu_download(void *ctx, void *dst_host, const void *src, size_t n)
{
    (void)ctx;
    if (n)
        memmove(dst_host, src, n);
    return 0;
}

int vl3__cpu_synchronize(void *ctx)
{
    (void)ctx;
    return 0;
}

int vl3__cpu_weight_dtype(void *ctx)
{
    (void)ctx;
    return VL3__DTYPE_BF16;
}

size_t vl3__cpu_weight_bytes(void *ctx, size_t n)
{
    (void)ctx;
    return n * sizeof(uint16_t);
}

uint16_t vl3__cpu_f32_to_bf16(float f)
{
    return vl3__f32_to_bf16(f);
}

float vl3__cpu_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float vl3__cpu_f16_to_f32(uint16_t h)
{
    return vl3__half_to_f32(h);
}

int vl3__cpu_weight_convert(void *ctx, void *dst, const void *src_host, int src_dtype, size_t n)
{
    (void)ctx;
    uint16_t *d = dst;
    const uint16_t *h = src_host;
    const float *f = src_host;
    switch (src_dtype) {
    case VL3__DTYPE_F32:
        for (size_t i = 0; i < n; i++)
            d[i] = vl3__cpu_f32_to_bf16(f[i]);
        return 0;
    case VL3__DTYPE_BF16:
        memmove(d, h, n * sizeof(uint16_t));
        return 0;
    case VL3__DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            d[i] = vl3__cpu_f32_to_bf16(vl3__cpu_f16_to_f32(h[i]));
        return 0;
    default:
        return VL3_E_UNSUPPORTED;
    }
}
