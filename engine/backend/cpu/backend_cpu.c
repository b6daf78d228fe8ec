/* backend_cpu.c: the plain-C CPU backend (the reference every other backend is checked against).
 * f32 compute; matrix products through OpenBLAS. Ops are added per family in this directory. */
#include "backend.h"
#include "cpu_ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/util.h"

#include <cblas.h>

#include "model.h"

struct cpu_ctx {
    int n_threads;
    int precision; /* enum vl3__cpu_precision */
    /* scratch reused by ops outside the contexts' arenas (the vision encoder's bf16 linear):
     * one holder at a time (try-lock); a second caller allocates its own */
    pthread_mutex_t scratch_lock;
    void *scratch;
    size_t scratch_bytes;
    struct vl3__cpu_pool *pool; /* parallel.c: workers made on first use */
};

struct vl3__cpu_pool *vl3__cpu_pool_of(void *ctx)
{
    return ctx ? ((struct cpu_ctx *)ctx)->pool : NULL;
}

void *vl3__cpu_scratch_acquire(void *ctx, size_t nbytes)
{
    struct cpu_ctx *c = ctx;
    if (!c || pthread_mutex_trylock(&c->scratch_lock) != 0)
        return NULL;
    if (c->scratch_bytes < nbytes) {
        free(c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        if (posix_memalign(&c->scratch, 64, nbytes) != 0) {
            c->scratch = NULL;
            pthread_mutex_unlock(&c->scratch_lock);
            return NULL;
        }
        c->scratch_bytes = nbytes;
    }
    return c->scratch;
}

void vl3__cpu_scratch_release(void *ctx, void *p)
{
    struct cpu_ctx *c = ctx;
    if (c && p && p == c->scratch)
        pthread_mutex_unlock(&c->scratch_lock);
}

int vl3__cpu_precision_parse(const char *s)
{
    if (!s)
        return -EINVAL;
    if (strcmp(s, "f32") == 0)
        return VL3__CPU_PREC_F32;
    if (strcmp(s, "bf16") == 0)
        return VL3__CPU_PREC_BF16;
    if (strcmp(s, "auto") == 0)
        return vl3__cpu_bf16_native() ? VL3__CPU_PREC_BF16 : VL3__CPU_PREC_F32;
    return -EINVAL;
}

int vl3__cpu_precision(void *ctx)
{
    return ctx ? ((struct cpu_ctx *)ctx)->precision : VL3__CPU_PREC_F32;
}

/* OpenBLAS's thread count is process-wide: the last backend created (or switched) sets it. In
 * bf16 mode our own threads split every product and attention (OpenBLAS's idle workers would
 * otherwise spin beside them), so OpenBLAS gets one thread. */
static void set_blas_threads(const struct cpu_ctx *c)
{
    openblas_set_num_threads(c->precision == VL3__CPU_PREC_BF16 ? 1 : c->n_threads);
}

void vl3__cpu_set_precision(void *ctx, int precision)
{
    if (ctx) {
        ((struct cpu_ctx *)ctx)->precision = precision;
        set_blas_threads(ctx);
    }
}

static int cpu_init(int device, int n_threads, void **ret_ctx, vl3_error *reterr)
{
    struct cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -12 /* ENOMEM */, "out of memory");
    pthread_mutex_init(&c->scratch_lock, NULL);
    c->n_threads = n_threads > 0 ? n_threads : vl3_cpu_count();
    const char *prec = getenv("VL3_PRECISION");
    int p = prec && *prec ? vl3__cpu_precision_parse(prec) : VL3__CPU_PREC_F32;
    if (p < 0) {
        free(c);
        return vl3_error_set(reterr, -EINVAL, "invalid VL3_PRECISION \"%s\" (f32, bf16 or auto)",
                             prec);
    }
    c->precision = p;
    if (vl3__cpu_pool_new(c->n_threads, &c->pool) < 0) {
        pthread_mutex_destroy(&c->scratch_lock);
        free(c);
        return vl3_error_set(reterr, -12 /* ENOMEM */, "out of memory");
    }
    set_blas_threads(c);
    *ret_ctx = c;
    return 0;
}

int vl3__cpu_threads(void *ctx)
{
    return ctx ? ((struct cpu_ctx *)ctx)->n_threads : 1;
}

int vl3__cpu_bf16_mode(void *ctx)
{
    return vl3__cpu_precision(ctx) == VL3__CPU_PREC_BF16;
}

static void cpu_free(void *ctx)
{
    struct cpu_ctx *c = ctx;
    if (!c)
        return;
    vl3__cpu_pool_free(c->pool);
    pthread_mutex_destroy(&c->scratch_lock);
    free(c->scratch);
    free(c);
}

static int cpu_device_count(void)
{
    return 1;
}

static int cpu_device_name(int device, char *buf, size_t len)
{
    snprintf(buf, len, "cpu (%d threads)", vl3_cpu_count());
    return 0;
}

/* LLM ops: f32 activations; matmul and embedding weights bf16 (converted at load). Vision ops
 * (vl3__cpu_vision_ops): f32. */
static int cpu_act_dtype(void *ctx)
{
    (void)ctx;
    return VL3__DTYPE_F32;
}

/* KV pools: bf16 in bf16 mode (the official bf16 model's K and V; half the bytes a decode step
 * reads at long context), f32 in f32 mode (the oracle's numerics). */
static int cpu_kv_dtype(void *ctx)
{
    return vl3__cpu_bf16_mode(ctx) ? VL3__DTYPE_BF16 : VL3__DTYPE_F32;
}

static int cpu_supports(void *ctx, enum vl3__op op, int dtype)
{
    (void)ctx;
    if (op == VL3__OP_MATMUL || op == VL3__OP_EMBED)
        return dtype == VL3__DTYPE_BF16;
    if (op >= VL3__OP_VISION_LINEAR && op < VL3__OP_COUNT)
        return dtype == VL3__DTYPE_F32;
    if (op == VL3__OP_SAMPLE)
        return dtype == VL3__DTYPE_F32;
    return op <= VL3__OP_SCATTER_ROWS && dtype == VL3__DTYPE_F32;
}

/* The sample op: the reference arithmetic (vl3__sample_ref, engine/src/sampler.c) per row. */
static int cpu_sample(void *ctx, int32_t *ret_host, const void *x, int R, int n,
                      const struct vl3__sample_row *rows, const int32_t *hist, int n_hist)
{
    (void)ctx;
    if (R <= 0)
        return 0;
    if (!vl3__sample_rows_valid(rows, R, n, n_hist))
        return -EINVAL;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < rows[r].n_hist; i++)
            if (hist[rows[r].hist_off + i] < 0 || hist[rows[r].hist_off + i] >= n)
                return -EINVAL;
    float *work = malloc((size_t)n * sizeof(float));
    int32_t *cand = malloc((size_t)n * sizeof(int32_t));
    if (!work || !cand) {
        free(work);
        free(cand);
        return -ENOMEM;
    }
    for (int r = 0; r < R; r++)
        ret_host[r] = vl3__sample_ref((const float *)x + (size_t)r * n, n, &rows[r],
                                      rows[r].n_hist ? hist + rows[r].hist_off : NULL, work,
                                      cand);
    free(work);
    free(cand);
    return 0;
}

const vl3__backend_ops vl3__backend_cpu_ops = {
    .name = "cpu",
    .abi = VL3__BACKEND_ABI,
    .init = cpu_init,
    .free = cpu_free,
    .device_count = cpu_device_count,
    .device_name = cpu_device_name,
    /* memory and weights (mem.c) */
    .alloc = vl3__cpu_alloc,
    .dealloc = vl3__cpu_dealloc,
    .upload = vl3__cpu_upload,
    .download = vl3__cpu_download,
    .synchronize = vl3__cpu_synchronize,
    .supports = cpu_supports,
    .act_dtype = cpu_act_dtype,
    .kv_dtype = cpu_kv_dtype,
    .weight_dtype = vl3__cpu_weight_dtype,
    .weight_bytes = vl3__cpu_weight_bytes,
    .weight_convert = vl3__cpu_weight_convert,
    /* LLM layer ops */
    .matmul = vl3__cpu_matmul,
    .matmul_work_size = vl3__cpu_matmul_work_size,
    .rmsnorm = vl3__cpu_rmsnorm,
    .rope = vl3__cpu_rope,
    .kv_store = vl3__cpu_kv_store,
    .attention = vl3__cpu_attention,
    .attention_work_size = vl3__cpu_attention_work_size,
    .silu_mul = vl3__cpu_silu_mul,
    .matmul_swiglu = vl3__cpu_matmul_swiglu,
    .mlp_swiglu = vl3__cpu_mlp_swiglu,
    .add = vl3__cpu_add,
    .embed = vl3__cpu_embed,
    .argmax = vl3__cpu_argmax,
    .copy_rows = vl3__cpu_copy_rows,
    .scatter_rows = vl3__cpu_scatter_rows,
    /* vision ops get this backend's context (threads, precision mode) */
    .vision = &vl3__cpu_vision_ops,
    .sample = cpu_sample,
};
