/* backend_cuda.c: the CUDA backend's vtable, built twice from this one file:
 *  - into libvl3cuda.so (nvcc toolchain, real CUDA runtime, matrix products on cuBLASLt through
 *    gemm_cublaslt.c), exported as vl3_cuda_backend_ops() and loaded with dlopen;
 *  - with -DVL3_CUDA_EMU into libvl3cuda_emu (linked into the engine) as the "cuda-emu" backend
 *    vl3__backend_cuda_emu_ops: the same kernels compiled for the host against the CUDA
 *    emulator (emu/cuda_emu.h, docs/cuda-emu.md), device memory = host memory, matrix products
 *    on the host execution path of the same gemm descriptors (gemm_desc.c).
 * The only C file that calls the extern "C" launchers of *.cuh.
 *
 * dtypes: LLM activations and the paged KV cache bf16; matmul/embedding weights bf16; norm
 * weights and biases f32; matmul accumulates in f32 (cuBLASLt CUBLAS_COMPUTE_32F, or the host
 * path's f32 sum); logits (matmul_f32) and the input of argmax and sample f32. The vision
 * encoder's activations are f32 in device memory, its matrices bf16 (see the vision section).
 * A machine without a driver reports 0 devices (cudaGetDeviceCount fails with error 35). */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef VL3_CUDA_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif

#include "argmax.cuh"
#include "attention.cuh"
#include "backend.h"
#include "elementwise.cuh"
#include "gemm_desc.h"
#include "half.h"
#include "layernorm.cuh"
#include "model.h"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sample.cuh"
#include "silu_mul.cuh"
#include "vl3/log.h"

#ifndef VL3_CUDA_EMU
/* gemm_cublaslt.c */
struct vl3__lt;
int vl3__lt_new(size_t ws_bytes, struct vl3__lt **ret, vl3_error *reterr);
void vl3__lt_free(struct vl3__lt *lt);
int vl3__lt_matmul(struct vl3__lt *lt, const struct vl3__gemm_desc *d, const void *A,
                   const void *B, void *C, const float *bias, cudaStream_t stream,
                   vl3_error *reterr);
#define LT_WORKSPACE (32u << 20) /* cuBLASLt workspace: 32 MiB, as NVIDIA suggests for Hopper */
#endif

#define CONVERT_CHUNK (1u << 22) /* elements converted per host staging buffer */
#define VISION_STAGES 2            /* device buffers of the vision ops (ST_X16, ST_CU) */

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    int32_t *argmax_dev; /* device scratch for argmax results */
    int argmax_cap;
    void *sample_dev; /* the sample op's device scratch: ids, row parameters, histories, rows */
    size_t sample_cap;
    pthread_mutex_t vision_lock; /* the vision ops' buffers */
    void *stage[VISION_STAGES];
    size_t stage_cap[VISION_STAGES];
    int64_t *cu_host; /* what stage[ST_CU] holds (cu_bytes; 0 = nothing) */
    size_t cu_bytes;
#ifndef VL3_CUDA_EMU
    struct vl3__lt *lt;
#endif
};

/* cudaError_t -> 0 or a negative code; a sticky error (the context is lost) is VL3_E_CUDA_FATAL. */
static int cu_rc(cudaError_t e)
{
    if (e == cudaSuccess)
        return 0;
    if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure ||
        e == cudaErrorHardwareStackError || e == cudaErrorIllegalInstruction ||
        e == cudaErrorMisalignedAddress || e == cudaErrorInvalidPc ||
        e == cudaErrorECCUncorrectable)
        return VL3_E_CUDA_FATAL;
    return VL3_E_CUDA;
}

/* A launcher's answer: -1 (launch failure) becomes the runtime's error. */
static int k_rc(int r)
{
    if (r == -1) {
        int e = cu_rc(cudaGetLastError());
        return e < 0 ? e : VL3_E_CUDA;
    }
    return r;
}

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
#ifdef VL3_CUDA_EMU
    (void)device;
    snprintf(buf, len, "cuda-emu (host emulation of the CUDA execution model)");
    return 0;
#else
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess)
        return VL3_E_CUDA;
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
#endif
}

static void cuda_free(void *ctx)
{
    struct cuda_ctx *c = ctx;
    if (!c)
        return;
#ifndef VL3_CUDA_EMU
    vl3__lt_free(c->lt);
#endif
    if (c->argmax_dev)
        (void)cudaFree(c->argmax_dev);
    if (c->sample_dev)
        (void)cudaFree(c->sample_dev);
    for (int i = 0; i < VISION_STAGES; i++)
        if (c->stage[i])
            (void)cudaFree(c->stage[i]);
    free(c->cu_host);
    pthread_mutex_destroy(&c->vision_lock);
    if (c->stream)
        (void)cudaStreamDestroy(c->stream);
    free(c);
}

static int cuda_init(int device, int n_threads, void **ret_ctx, vl3_error *reterr)
{
    (void)n_threads;
    if (device < 0 || cuda_device_count() <= device)
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "CUDA device %d not present", device);
    struct cuda_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    c->device = device;
    pthread_mutex_init(&c->vision_lock, NULL);
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cuda_free(c);
        return vl3_error_set(reterr, cu_rc(e), "could not initialise CUDA device %d: %s", device,
                             cudaGetErrorString(e));
    }
#ifndef VL3_CUDA_EMU
    int r = vl3__lt_new(LT_WORKSPACE, &c->lt, reterr);
    if (r < 0) {
        cuda_free(c);
        return r;
    }
#endif
    *ret_ctx = c;
    return 0;
}

/* ---- memory and weights ---------------------------------------------------------------------- */

static int cuda_alloc(void *ctx, size_t nbytes, void **ret_ptr, vl3_error *reterr)
{
    (void)ctx;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, nbytes ? nbytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return vl3_error_set(reterr, -ENOMEM, "could not allocate %zu bytes of CUDA device "
                             "memory: %s", nbytes, cudaGetErrorString(e));
    }
    *ret_ptr = p;
    return 0;
}

static void cuda_dealloc(void *ctx, void *ptr)
{
    (void)ctx;
    if (ptr)
        (void)cudaFree(ptr);
}

static int cuda_upload(void *ctx, void *dst, const void *src_host, size_t n)
{
    struct cuda_ctx *c = ctx;
    if (!n)
        return 0;
    /* The caller may reuse src_host as soon as we return. From pageable memory (every host
     * buffer of the engine: malloc, mmap) cudaMemcpyAsync returns only once the source bytes
     * are staged into pinned memory or copied (CUDA's "API synchronization behavior"), so no
     * stream wait is needed here. Pinned host buffers would need one. */
    return cu_rc(cudaMemcpyAsync(dst, src_host, n, cudaMemcpyHostToDevice, c->stream));
}

static int cuda_download(void *ctx, void *dst_host, const void *src, size_t n)
{
    struct cuda_ctx *c = ctx;
    if (!n)
        return 0;
    int r = cu_rc(cudaMemcpyAsync(dst_host, src, n, cudaMemcpyDeviceToHost, c->stream));
    return r < 0 ? r : cu_rc(cudaStreamSynchronize(c->stream));
}

static int cuda_synchronize(void *ctx)
{
    struct cuda_ctx *c = ctx;
    return cu_rc(cudaStreamSynchronize(c->stream));
}

static int cuda_act_dtype(void *ctx)
{
    (void)ctx;
    return VL3__DTYPE_BF16;
}

static int cuda_weight_dtype(void *ctx)
{
    (void)ctx;
    return VL3__DTYPE_BF16;
}

static size_t cuda_weight_bytes(void *ctx, size_t n)
{
    (void)ctx;
    return n * sizeof(uint16_t);
}

/* Checkpoint bytes (f32, f16 or bf16) -> bf16 in device memory, through a host staging buffer
 * of CONVERT_CHUNK elements (bf16 sources are uploaded as they are). */
static int cuda_weight_convert(void *ctx, void *dst, const void *src_host, int src_dtype,
                               size_t n)
{
    if (src_dtype == VL3__DTYPE_BF16)
        return cuda_upload(ctx, dst, src_host, n * sizeof(uint16_t));
    if (src_dtype != VL3__DTYPE_F32 && src_dtype != VL3__DTYPE_F16)
        return VL3_E_UNSUPPORTED;
    size_t chunk = n < CONVERT_CHUNK ? n : CONVERT_CHUNK;
    uint16_t *tmp = malloc((chunk ? chunk : 1) * sizeof(uint16_t));
    if (!tmp)
        return -ENOMEM;
    int r = 0;
    for (size_t i0 = 0; i0 < n && r == 0; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        for (size_t i = 0; i < m; i++)
            tmp[i] = vl3__f32_to_bf16(src_dtype == VL3__DTYPE_F32
                                          ? ((const float *)src_host)[i0 + i]
                                          : vl3__half_to_f32(((const uint16_t *)src_host)[i0 + i]));
        r = cuda_upload(ctx, (char *)dst + i0 * sizeof(uint16_t), tmp, m * sizeof(uint16_t));
    }
    free(tmp);
    return r;
}

static int cuda_supports(void *ctx, enum vl3__op op, int dtype)
{
    (void)ctx;
    if (op == VL3__OP_MATMUL || op == VL3__OP_EMBED)
        return dtype == VL3__DTYPE_BF16;
    if (op >= VL3__OP_VISION_LINEAR && op < VL3__OP_COUNT)
        return dtype == VL3__DTYPE_F32;
    if (op == VL3__OP_ARGMAX || op == VL3__OP_SAMPLE)
        return dtype == VL3__DTYPE_F32;
    return op <= VL3__OP_SCATTER_ROWS && dtype == VL3__DTYPE_BF16;
}

/* ---- matrix products ------------------------------------------------------------------------- */

static int run_gemm(struct cuda_ctx *c, const struct vl3__gemm_desc *d, const void *A,
                    const void *B, void *C, const float *bias)
{
#ifdef VL3_CUDA_EMU
    (void)c;
    return vl3__gemm_host(d, A, B, C, bias);
#else
    vl3_error err = {0};
    int r = vl3__lt_matmul(c->lt, d, A, B, C, bias, c->stream, &err);
    if (r < 0) /* the vtable has no error text: log cuBLASLt's */
        vl3_log_err("CUDA backend: %dx%dx%d matrix product failed: %s", d->m, d->n, d->k,
                    err.msg);
    return r;
#endif
}

static int linear(struct cuda_ctx *c, void *y, const void *x, const void *w, const float *b,
                  int T, int in, int out, int accumulate, enum vl3__gemm_type io_type,
                  enum vl3__gemm_type w_type, enum vl3__gemm_type y_type)
{
    if (T <= 0)
        return 0;
    struct vl3__gemm_desc d;
    int r = vl3__gemm_plan_linear(&d, T, in, out, accumulate,
                                  b ? VL3__GEMM_EPI_BIAS : VL3__GEMM_EPI_NONE, w_type, io_type,
                                  y_type);
    return r < 0 ? r : run_gemm(c, &d, w, x, y, b);
}

static int cuda_matmul(void *ctx, void *y, const void *x, const void *w, const void *b, int T,
                       int in, int out, int accumulate, void *work, size_t work_bytes)
{
    (void)work, (void)work_bytes;
    return linear(ctx, y, x, w, b, T, in, out, accumulate, VL3__GEMM_BF16, VL3__GEMM_BF16,
                  VL3__GEMM_BF16);
}

/* As matmul with an f32 y (the logits). */
static int cuda_matmul_f32(void *ctx, void *y, const void *x, const void *w, const void *b, int T,
                           int in, int out, int accumulate, void *work, size_t work_bytes)
{
    (void)work, (void)work_bytes;
    return linear(ctx, y, x, w, b, T, in, out, accumulate, VL3__GEMM_BF16, VL3__GEMM_BF16,
                  VL3__GEMM_F32);
}

static size_t cuda_matmul_work_size(void *ctx, int max_in)
{
    (void)ctx, (void)max_in;
    return 0; /* cuBLASLt's workspace belongs to the context */
}

/* ---- LLM layer ops --------------------------------------------------------------------------- */

static int cuda_rmsnorm_op(void *ctx, void *y, const void *x, const void *w, int T, int C,
                           float eps)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_rmsnorm_bf16(y, x, w, T, C, eps, c->stream));
}

static int cuda_rope_op(void *ctx, void *x, int T, int stride, int n_heads, int D, const void *pos,
                        float theta)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_rope_bf16(x, T, stride, n_heads, D, pos, theta, c->stream));
}

static int cuda_kv_store_op(void *ctx, void *k_pages, void *v_pages, const void *qkv,
                            int qkv_stride, int k_off, int v_off, int kv_dim, const void *slots,
                            int T, int kv_dtype)
{
    struct cuda_ctx *c = ctx;
    if (kv_dtype != VL3__DTYPE_BF16)
        return -EINVAL; /* the pools are bf16 here (kv_dtype is act_dtype) */
    return k_rc(cuda_kv_store_bf16(k_pages, v_pages, qkv, qkv_stride, k_off, v_off, kv_dim, slots,
                                   T, c->stream));
}

static int cuda_attention_op(void *ctx, const struct vl3__attn_args *a)
{
    struct cuda_ctx *c = ctx;
    if (!a->seqs_dev || !a->tables_dev || a->kv_dtype != VL3__DTYPE_BF16)
        return -EINVAL;
    int n_rows = 0, max_keys = 0;
    for (int i = 0; i < a->n_seqs; i++) {
        const struct vl3__attn_seq *s = &a->seqs[i];
        if (s->q_row + s->n_q > n_rows)
            n_rows = s->q_row + s->n_q;
        if (s->n_past + s->n_q > max_keys)
            max_keys = s->n_past + s->n_q;
    }
    return k_rc(cuda_attention_paged_bf16(a->out, a->q, a->q_stride, a->out_stride, a->n_heads,
                                          a->n_kv_heads, a->head_dim, a->scale, a->k_pages,
                                          a->v_pages, a->page_size, a->seqs_dev, a->tables_dev,
                                          a->max_pages, a->n_seqs, n_rows, max_keys,
                                          c->stream));
}

static size_t cuda_attention_work_size(void *ctx, int max_q, int n_ctx, int n_heads)
{
    (void)ctx, (void)max_q, (void)n_ctx, (void)n_heads;
    return 0; /* flash style: no score matrix */
}

static int cuda_scatter_rows_op(void *ctx, void *dst, const void *src, const void *idx, int n,
                                int C)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_scatter_rows_bf16(dst, src, idx, n, C, c->stream));
}

static int cuda_silu_mul_op(void *ctx, void *out, const void *gu, int T, int n_inter)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_silu_mul_bf16(out, gu, T, n_inter, c->stream));
}

static int cuda_add_op(void *ctx, void *y, const void *a, const void *b, size_t n)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_add_bf16(y, a, b, (int64_t)n, c->stream));
}

static int cuda_embed_op(void *ctx, void *out, const void *table, const void *ids, int T, int C)
{
    struct cuda_ctx *c = ctx;
    return k_rc(cuda_embed_bf16(out, table, ids, T, C, c->stream));
}

static int cuda_argmax_op(void *ctx, int32_t *ret_host, const void *x, int R, int n)
{
    struct cuda_ctx *c = ctx;
    if (R <= 0)
        return 0;
    if (R > c->argmax_cap) {
        if (c->argmax_dev)
            (void)cudaFree(c->argmax_dev);
        c->argmax_dev = NULL;
        c->argmax_cap = 0;
        int r = cu_rc(cudaMalloc((void **)&c->argmax_dev, (size_t)R * sizeof(int32_t)));
        if (r < 0)
            return r;
        c->argmax_cap = R;
    }
    int r = k_rc(cuda_argmax(c->argmax_dev, x, R, n, c->stream));
    return r < 0 ? r : cuda_download(ctx, ret_host, c->argmax_dev, (size_t)R * sizeof(int32_t));
}

/* The kernel reads the rows as struct cuda_sample_row: the same layout. */
_Static_assert(sizeof(struct cuda_sample_row) == sizeof(struct vl3__sample_row) &&
                   offsetof(struct cuda_sample_row, temperature) ==
                       offsetof(struct vl3__sample_row, temperature) &&
                   offsetof(struct cuda_sample_row, top_k) ==
                       offsetof(struct vl3__sample_row, top_k) &&
                   offsetof(struct cuda_sample_row, n_hist) ==
                       offsetof(struct vl3__sample_row, n_hist),
               "struct cuda_sample_row must match struct vl3__sample_row");

#define SAMPLE_ALIGN(n) (((n) + 255) & ~(size_t)255)

/* Upload the row parameters and histories into the context's scratch (grown as needed), sample
 * on the device, download the R ids: the only device-to-host traffic. */
static int cuda_sample_op(void *ctx, int32_t *ret_host, const void *x, int R, int n,
                          const struct vl3__sample_row *rows, const int32_t *hist, int n_hist)
{
    struct cuda_ctx *c = ctx;
    if (R <= 0)
        return 0;
    if (!vl3__sample_rows_valid(rows, R, n, n_hist))
        return -EINVAL;
    for (int r = 0; r < R; r++) /* the kernel indexes the row with these ids */
        for (int i = 0; i < rows[r].n_hist; i++)
            if (hist[rows[r].hist_off + i] < 0 || hist[rows[r].hist_off + i] >= n)
                return -EINVAL;
    size_t b_ids = SAMPLE_ALIGN((size_t)R * 4), b_rows = SAMPLE_ALIGN((size_t)R * sizeof(*rows));
    size_t b_hist = SAMPLE_ALIGN((size_t)n_hist * 4), b_work = (size_t)R * n * 4;
    size_t need = b_ids + b_rows + b_hist + b_work;
    if (need > c->sample_cap) {
        if (c->sample_dev)
            (void)cudaFree(c->sample_dev);
        c->sample_dev = NULL;
        c->sample_cap = 0;
        int r = cu_rc(cudaMalloc(&c->sample_dev, need));
        if (r < 0) {
            (void)cudaGetLastError();
            return -ENOMEM;
        }
        c->sample_cap = need;
    }
    char *d = c->sample_dev;
    int32_t *d_ids = (int32_t *)d;
    struct cuda_sample_row *d_rows = (struct cuda_sample_row *)(d + b_ids);
    int32_t *d_hist = (int32_t *)(d + b_ids + b_rows);
    float *d_work = (float *)(d + b_ids + b_rows + b_hist);
    int r = cuda_upload(ctx, d_rows, rows, (size_t)R * sizeof(*rows));
    if (r == 0)
        r = cuda_upload(ctx, d_hist, hist, (size_t)n_hist * 4);
    if (r == 0)
        r = k_rc(cuda_sample(d_ids, x, d_work, R, n, d_rows, d_hist, c->stream));
    return r < 0 ? r : cuda_download(ctx, ret_host, d_ids, (size_t)R * sizeof(int32_t));
}

static int cuda_copy_rows_op(void *ctx, void *dst, size_t dst_stride, const void *src,
                             size_t src_stride, int n_rows, size_t row_bytes)
{
    struct cuda_ctx *c = ctx;
    if (n_rows > 1 && (!dst_stride || !src_stride)) /* stride 0 only makes sense for one row */
        return -EINVAL;
    return k_rc(cuda_copy_rows(dst, dst_stride, src, src_stride, n_rows, row_bytes, c->stream));
}

/* ---- vision ops (f32 activations in device memory) ---------------------------------------------
 * vision.c keeps the encoder in backend memory (struct vl3__vision_ops: device_memory): weights
 * uploaded once in bf16 (wants_bf16_weights), the pixel batch once per encode, activations on the
 * device through all layers. The ops launch kernels on device pointers; a product rounds its f32
 * input to bf16 in a scratch buffer of the context (bf16 x bf16, f32 sums and output, as the
 * reference model's bf16 linear layers; vision_lock guards the buffer), and attention_blocks
 * keeps a device copy of the cu_seqlens array, uploaded only when it changes (once per encode,
 * not per layer). */

/* The context's device buffer i of at least n bytes (contents undefined), or NULL. */
static void *stage(struct cuda_ctx *c, int i, size_t n)
{
    if (n > c->stage_cap[i]) {
        if (c->stage[i])
            (void)cudaFree(c->stage[i]);
        c->stage[i] = NULL;
        c->stage_cap[i] = 0;
        size_t cap = n < (1u << 20) ? (1u << 20) : n;
        if (cudaMalloc(&c->stage[i], cap) != cudaSuccess) {
            (void)cudaGetLastError();
            return NULL;
        }
        c->stage_cap[i] = cap;
    }
    return c->stage[i];
}

enum { ST_X16, ST_CU }; /* < VISION_STAGES */

static int v_linear(void *ctx, const float *x, const float *w, const float *b, float *y,
                    int64_t P, int in, int out)
{
    if (P > 0x7fffffff || P < 0 || in <= 0 || out <= 0)
        return -EINVAL;
    return linear(ctx, y, x, w, b, (int)P, in, out, 0, VL3__GEMM_F32, VL3__GEMM_F32,
                  VL3__GEMM_F32);
}

static int v_wants_bf16_weights(void *ctx)
{
    (void)ctx;
    return 1;
}

static int v_linear_bf16(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                         int64_t P, int in, int out)
{
    struct cuda_ctx *c = ctx;
    if (P > 0x7fffffff || P < 0 || in <= 0 || out <= 0)
        return -EINVAL;
    if (P == 0)
        return 0;
    pthread_mutex_lock(&c->vision_lock);
    void *x16 = stage(c, ST_X16, (size_t)P * in * 2);
    int r = x16 ? k_rc(cuda_f32_to_bf16(x16, x, P * in, c->stream)) : -ENOMEM;
    if (r == 0)
        r = linear(c, y, x16, w, b, (int)P, in, out, 0, VL3__GEMM_BF16, VL3__GEMM_BF16,
                   VL3__GEMM_F32);
    pthread_mutex_unlock(&c->vision_lock);
    return r;
}

static int v_layernorm(void *ctx, const float *x, const float *w, const float *b, float *y,
                       int64_t P, int C, float eps)
{
    struct cuda_ctx *c = ctx;
    if (P > 0x7fffffff || P < 0 || C <= 0)
        return -EINVAL;
    return k_rc(cuda_layernorm(y, x, w, b, (int)P, C, eps, c->stream));
}

static int v_rope2d(void *ctx, float *x, const int32_t *pos_r, const int32_t *pos_c, int64_t P,
                    int H, int D, float theta)
{
    struct cuda_ctx *c = ctx;
    if (P < 0 || H < 0 || D <= 0)
        return -EINVAL;
    if (P == 0 || H == 0)
        return 0;
    return k_rc(cuda_rope2d(x, pos_r, pos_c, P, H, D, theta, c->stream));
}

static int v_attention_blocks(void *ctx, const float *q, const float *k, const float *v,
                              float *out, const int64_t *cu, int n_blocks, int H, int D)
{
    struct cuda_ctx *c = ctx;
    if (n_blocks <= 0)
        return 0;
    if (cu[0] != 0)
        return -EINVAL;
    for (int i = 0; i < n_blocks; i++)
        if (cu[i + 1] < cu[i])
            return -EINVAL;
    int64_t P = cu[n_blocks];
    if (P == 0)
        return 0;
    size_t nb = sizeof(int64_t) * (size_t)(n_blocks + 1);
    int r = 0;
    pthread_mutex_lock(&c->vision_lock);
    void *dcu = c->stage[ST_CU];
    if (nb != c->cu_bytes || memcmp(c->cu_host, cu, nb) != 0) { /* a new batch: upload once */
        int64_t *h = realloc(c->cu_host, nb);
        dcu = h ? stage(c, ST_CU, nb) : NULL;
        if (h)
            c->cu_host = h;
        c->cu_bytes = 0;
        if (!dcu)
            r = -ENOMEM;
        else if ((r = cuda_upload(c, dcu, cu, nb)) == 0) {
            memcpy(c->cu_host, cu, nb);
            c->cu_bytes = nb;
        }
    }
    if (r == 0)
        r = k_rc(cuda_attention_blocks(q, k, v, out, dcu, cu, n_blocks, P, H, D, c->stream));
    pthread_mutex_unlock(&c->vision_lock);
    return r;
}

static int v_gelu(void *ctx, float *x, int64_t n, int erf_form)
{
    struct cuda_ctx *c = ctx;
    return n <= 0 ? 0 : k_rc(cuda_gelu(x, n, erf_form, c->stream));
}

static int v_gelu_tanh(void *ctx, float *x, int64_t n)
{
    return v_gelu(ctx, x, n, 0);
}

static int v_gelu_erf(void *ctx, float *x, int64_t n)
{
    return v_gelu(ctx, x, n, 1);
}

static int v_add(void *ctx, float *y, const float *x, int64_t n)
{
    struct cuda_ctx *c = ctx;
    return n <= 0 ? 0 : k_rc(cuda_add_f32(y, y, x, n, c->stream));
}

static int v_downsample(void *ctx, const float *x, float *y, int gh, int gw, int m, int C)
{
    struct cuda_ctx *c = ctx;
    if (gh <= 0 || gw <= 0 || C <= 0)
        return 0;
    if (m != 1 && (m != 2 || gh % 2 || gw % 2))
        return -EINVAL;
    return k_rc(cuda_downsample(x, y, gh, gw, m, C, c->stream));
}

static const struct vl3__vision_ops cuda_vision_ops = {
    .linear = v_linear,
    .layernorm = v_layernorm,
    .rope2d = v_rope2d,
    .attention_blocks = v_attention_blocks,
    .gelu_tanh = v_gelu_tanh,
    .gelu_erf = v_gelu_erf,
    .add = v_add,
    .downsample = v_downsample,
    .wants_bf16_weights = v_wants_bf16_weights,
    .linear_bf16 = v_linear_bf16,
    .device_memory = 1,
};

#ifdef VL3_CUDA_EMU
const vl3__backend_ops vl3__backend_cuda_emu_ops = {
    .name = "cuda-emu",
#else
static const vl3__backend_ops cuda_ops = {
    .name = "cuda",
#endif
    .abi = VL3__BACKEND_ABI,
    .init = cuda_init,
    .free = cuda_free,
    .device_count = cuda_device_count,
    .device_name = cuda_device_name,
    .alloc = cuda_alloc,
    .dealloc = cuda_dealloc,
    .upload = cuda_upload,
    .download = cuda_download,
    .synchronize = cuda_synchronize,
    .supports = cuda_supports,
    .act_dtype = cuda_act_dtype,
    .weight_dtype = cuda_weight_dtype,
    .weight_bytes = cuda_weight_bytes,
    .weight_convert = cuda_weight_convert,
    .matmul = cuda_matmul,
    .matmul_work_size = cuda_matmul_work_size,
    .rmsnorm = cuda_rmsnorm_op,
    .rope = cuda_rope_op,
    .kv_store = cuda_kv_store_op,
    .attention = cuda_attention_op,
    .attention_work_size = cuda_attention_work_size,
    .scatter_rows = cuda_scatter_rows_op,
    .silu_mul = cuda_silu_mul_op,
    .add = cuda_add_op,
    .embed = cuda_embed_op,
    .argmax = cuda_argmax_op,
    .copy_rows = cuda_copy_rows_op,
    .vision = &cuda_vision_ops,
    .matmul_f32 = cuda_matmul_f32,
    .sample = cuda_sample_op,
};

#ifndef VL3_CUDA_EMU
__attribute__((visibility("default"))) const vl3__backend_ops *vl3_cuda_backend_ops(void);
const vl3__backend_ops *vl3_cuda_backend_ops(void)
{
    return &cuda_ops;
}
#endif
