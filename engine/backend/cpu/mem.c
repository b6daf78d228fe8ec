/* mem.c: CPU backend memory: "device" memory is 64-byte aligned host memory (2 MiB-aligned and
 * advised for transparent huge pages from HUGE_MIN bytes: see vl3__cpu_alloc), transfers are
 * memcpy, synchronize is a no-op. Matmul and embedding weights are kept in bf16, the dtype of
 * the released checkpoints (copied as is; f32/f16 sources are rounded to nearest even): the
 * decode step is memory-bound and reads half the bytes of f32 (see matmul.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu_ops.h"
#include "half.h"
#include "model.h"

#define CPU_ALIGN 64 /* cache line; also AVX-512 friendly */
#define HUGE_ALIGN (2ul << 20)
#define HUGE_MIN (4ul << 20)

/* Buffers of HUGE_MIN bytes or more (the KV pools, the activations of a long prefill or a
 * clip's vision pass) start on a 2 MiB boundary and are advised for transparent huge pages (the
 * system's default here is "madvise"): they are streamed whole, and with 4 KiB pages every 4 KiB
 * costs a page walk and stops the L2 streamer. Reading 28 layers of 7k keys of K and V in the
 * decode kernel's order went 22-24 -> 29-30 GB/s (whole rows, 2 threads, this project's
 * machine). The advice is only advice: where the kernel gives none, the memory is the same. */
int vl3__cpu_alloc(void *ctx, size_t nbytes, void **ret_ptr, vl3_error *reterr)
{
    (void)ctx;
    void *p = NULL;
    int huge = nbytes >= HUGE_MIN;
    size_t align = huge ? HUGE_ALIGN : CPU_ALIGN;
    size_t n = (nbytes + align - 1) / align * align;
    if (n < nbytes || posix_memalign(&p, align, n ? n : align) != 0)
        return vl3_error_set(reterr, -ENOMEM, "could not allocate %zu bytes of CPU memory",
                             nbytes);
#ifdef MADV_HUGEPAGE
    if (huge)
        (void)madvise(p, n, MADV_HUGEPAGE);
#endif
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
