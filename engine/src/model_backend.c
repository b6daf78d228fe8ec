/* model_backend.c: backend setup at the end of vl3_model_load: pick the backend, create its
 * context, and convert/upload the LLM weights into one device slab (struct vl3__llm_bweights,
 * llm.h). The vision encoder keeps its own copy (vision.c).
 *
 * On the CPU the matrices stay bf16 (the checkpoint dtype: used in place in the loader's
 * mappings where the parts of a fused matrix lie contiguous, else copied; f32/f16 sources are
 * rounded) and the vectors become f32: see engine/backend/cpu/matmul.c for the measurement
 * behind that choice (the decode step is memory-bound; bf16 halves its bytes). AUTO means CUDA
 * when libvl3cuda.so loads and sees the device, else the CPU; CUDA_EMU is the CUDA backend's
 * kernels on the host emulator (vl3__backend_cuda_emu_ops, always linked). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "half.h"
#include "llm.h"
#include "model.h"

static int64_t numel(const vl3__tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static float half_to_f32(uint16_t h, int bf16)
{
    if (!bf16)
        return vl3__half_to_f32(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Upload an f32 copy of a small tensor (norm weight, bias) to dst. */
static int put_vector(const vl3__backend_ops *ops, void *bctx, void *dst, const vl3__tensor *t,
                      vl3_error *reterr)
{
    int64_t n = numel(t);
    float *tmp = malloc((size_t)n * sizeof(float));
    if (!tmp)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    const uint16_t *h = t->data;
    switch (t->dtype) {
    case VL3__DTYPE_F32:
        memcpy(tmp, t->data, (size_t)n * sizeof(float));
        break;
    case VL3__DTYPE_BF16:
    case VL3__DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            tmp[i] = half_to_f32(h[i], t->dtype == VL3__DTYPE_BF16);
        break;
    default:
        free(tmp);
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "cannot convert tensor \"%s\" of dtype %d",
                             t->name ? t->name : "?", (int)t->dtype);
    }
    int r = ops->upload(bctx, dst, tmp, (size_t)n * sizeof(float));
    free(tmp);
    return r < 0 ? vl3_error_set(reterr, r, "could not upload tensor \"%s\"",
                                 t->name ? t->name : "?")
                 : 0;
}

static int put_matrix(const vl3__backend_ops *ops, void *bctx, void *dst, const vl3__tensor *t,
                      vl3_error *reterr)
{
    int r = ops->weight_convert(bctx, dst, t->data, (int)t->dtype, (size_t)numel(t));
    return r < 0 ? vl3_error_set(reterr, r, "could not convert tensor \"%s\"",
                                 t->name ? t->name : "?")
                 : 0;
}

/* Whether the matrix made of t0 (then t1, t2 right after it in memory, when given) can be used
 * where it lies: the backend keeps weights in host memory in the tensors' dtype (the CPU backend
 * and bf16 checkpoints), the bytes live as long as the model (the loader's mappings), and the
 * parts are contiguous. Such matrices are neither copied nor converted: a 2B checkpoint in the
 * page cache loads without reading its 3 GB. */
static int in_place(const vl3_model *m, const vl3__tensor *t0, const vl3__tensor *t1,
                    const vl3__tensor *t2)
{
    if (!m->host_views_kept || m->ops != &vl3__backend_cpu_ops ||
        m->ops->weight_dtype(m->backend_ctx) != VL3__DTYPE_BF16)
        return 0;
    const vl3__tensor *t[3] = {t0, t1, t2};
    for (int i = 0; i < 3 && t[i]; i++) {
        if (t[i]->dtype != VL3__DTYPE_BF16 || !t[i]->data)
            return 0;
        if (i > 0 && (const char *)t[i - 1]->data + t[i - 1]->nbytes != t[i]->data)
            return 0;
    }
    return 1;
}

int vl3__llm_weights_upload(vl3_model *m, vl3_error *reterr)
{
    const vl3__backend_ops *ops = m->ops;
    void *bctx = m->backend_ctx;
    const struct vl3__llm_hparams *hp = &m->llm;
    size_t C = (size_t)hp->hidden, D = (size_t)hp->head_dim, I = (size_t)hp->intermediate;
    size_t V = (size_t)hp->vocab, L = (size_t)hp->n_layers;
    size_t qkv = ((size_t)hp->n_heads + 2 * (size_t)hp->n_kv_heads) * D, hd = hp->n_heads * D;
    int tied = m->w.lm_head_tied || hp->tie_embeddings || m->w.lm_head.data == m->w.embed.data;
    int r;
    struct vl3__llm_bweights *bw = calloc(1, sizeof(*bw));
    if (!bw)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    bw->layers = calloc(L ? L : 1, sizeof(*bw->layers));
    if (!bw->layers) {
        free(bw);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    /* Layout: matrices first (weight format), then f32 vectors; every piece 64-byte aligned.
     * Matrices used in place (mapped_views) take no slab space. */
#define ALIGN_UP(n) (((n) + 63) & ~(size_t)63)
#define MAT_BYTES(inplace, n) ((inplace) ? 0 : ALIGN_UP(ops->weight_bytes(bctx, (n))))
    size_t total = MAT_BYTES(in_place(m, &m->w.embed, NULL, NULL), V * C) +
                   (tied ? 0 : MAT_BYTES(in_place(m, &m->w.lm_head, NULL, NULL), V * C)) +
                   ALIGN_UP(C * 4);
    for (size_t l = 0; l < L; l++) {
        const struct vl3__llm_layer *hl = &m->w.layers[l];
        total += MAT_BYTES(in_place(m, &hl->wq, &hl->wk, &hl->wv), qkv * C) +
                 MAT_BYTES(in_place(m, &hl->wo, NULL, NULL), C * hd) +
                 MAT_BYTES(in_place(m, &hl->w_gate, &hl->w_up, NULL), 2 * I * C) +
                 MAT_BYTES(in_place(m, &hl->w_down, NULL, NULL), C * I) + ALIGN_UP(C * 4) * 2 +
                 ALIGN_UP(qkv * 4);
    }
    r = ops->alloc(bctx, total, &bw->slab, reterr);
    if (r < 0) {
        vl3_error_prefix(reterr, "could not allocate the LLM weights (%zu bytes on the %s backend)",
                         total, ops->name);
        goto fail;
    }
    bw->slab_bytes = total;
    char *p = bw->slab;
#define TAKE(dst, nbytes)                                                                          \
    do {                                                                                           \
        (dst) = p;                                                                                 \
        p += ALIGN_UP(nbytes);                                                                     \
    } while (0)
/* dst = the first tensor's bytes when in place, else a slab piece */
#define PLACE(dst, nbytes, t0, t1, t2)                                                             \
    do {                                                                                           \
        if (in_place(m, (t0), (t1), (t2)))                                                         \
            (dst) = (void *)(t0)->data;                                                            \
        else                                                                                       \
            TAKE(dst, ops->weight_bytes(bctx, (nbytes)));                                          \
    } while (0)
    PLACE(bw->embed, V * C, &m->w.embed, NULL, NULL);
    if (bw->embed != m->w.embed.data &&
        (r = put_matrix(ops, bctx, bw->embed, &m->w.embed, reterr)) < 0)
        goto fail;
    if (tied) {
        bw->lm_head = bw->embed;
    } else {
        PLACE(bw->lm_head, V * C, &m->w.lm_head, NULL, NULL);
        if (bw->lm_head != m->w.lm_head.data &&
            (r = put_matrix(ops, bctx, bw->lm_head, &m->w.lm_head, reterr)) < 0)
            goto fail;
    }
    for (size_t l = 0; l < L; l++) {
        const struct vl3__llm_layer *hl = &m->w.layers[l];
        struct vl3__llm_blayer *bl = &bw->layers[l];
        PLACE(bl->wqkv, qkv * C, &hl->wq, &hl->wk, &hl->wv);
        PLACE(bl->wo, C * hd, &hl->wo, NULL, NULL);
        PLACE(bl->w_gu, 2 * I * C, &hl->w_gate, &hl->w_up, NULL);
        PLACE(bl->w_down, C * I, &hl->w_down, NULL, NULL);
        size_t q_b = ops->weight_bytes(bctx, hd * C);
        size_t k_b = ops->weight_bytes(bctx, (size_t)hp->n_kv_heads * D * C);
        size_t g_b = ops->weight_bytes(bctx, I * C);
        if ((bl->wqkv != hl->wq.data &&
             ((r = put_matrix(ops, bctx, bl->wqkv, &hl->wq, reterr)) < 0 ||
              (r = put_matrix(ops, bctx, (char *)bl->wqkv + q_b, &hl->wk, reterr)) < 0 ||
              (r = put_matrix(ops, bctx, (char *)bl->wqkv + q_b + k_b, &hl->wv, reterr)) < 0)) ||
            (bl->wo != hl->wo.data && (r = put_matrix(ops, bctx, bl->wo, &hl->wo, reterr)) < 0) ||
            (bl->w_gu != hl->w_gate.data &&
             ((r = put_matrix(ops, bctx, bl->w_gu, &hl->w_gate, reterr)) < 0 ||
              (r = put_matrix(ops, bctx, (char *)bl->w_gu + g_b, &hl->w_up, reterr)) < 0)) ||
            (bl->w_down != hl->w_down.data &&
             (r = put_matrix(ops, bctx, bl->w_down, &hl->w_down, reterr)) < 0))
            goto fail;
        TAKE(bl->attn_norm, C * 4);
        TAKE(bl->ffn_norm, C * 4);
        TAKE(bl->bqkv, qkv * 4);
        size_t qn = hd * 4, kn = (size_t)hp->n_kv_heads * D * 4;
        if ((r = put_vector(ops, bctx, bl->attn_norm, &hl->attn_norm, reterr)) < 0 ||
            (r = put_vector(ops, bctx, bl->ffn_norm, &hl->ffn_norm, reterr)) < 0 ||
            (r = put_vector(ops, bctx, bl->bqkv, &hl->bq, reterr)) < 0 ||
            (r = put_vector(ops, bctx, (char *)bl->bqkv + qn, &hl->bk, reterr)) < 0 ||
            (r = put_vector(ops, bctx, (char *)bl->bqkv + qn + kn, &hl->bv, reterr)) < 0)
            goto fail;
    }
    TAKE(bw->norm, C * 4);
    if ((r = put_vector(ops, bctx, bw->norm, &m->w.norm, reterr)) < 0)
        goto fail;
#undef PLACE
#undef TAKE
#undef MAT_BYTES
#undef ALIGN_UP
    m->backend_weights = bw;
    return 0;
fail:
    ops->dealloc(bctx, bw->slab);
    free(bw->layers);
    free(bw);
    return r;
}

void vl3__llm_weights_free(vl3_model *m)
{
    struct vl3__llm_bweights *bw = m->backend_weights;
    if (!bw)
        return;
    if (m->ops && m->backend_ctx)
        m->ops->dealloc(m->backend_ctx, bw->slab);
    free(bw->layers);
    free(bw);
    m->backend_weights = NULL;
}

int vl3__model_backend_init(vl3_model *m, const vl3_model_params *p, vl3_error *reterr)
{
    const vl3__backend_ops *ops;
    vl3_error why = {0};
    switch (p->backend) {
    case VL3_BACKEND_AUTO:
        /* CUDA when the module loads and sees a device, else the CPU */
        ops = vl3__backend_cuda_load(&why);
        if (!ops || ops->device_count() <= p->device)
            ops = &vl3__backend_cpu_ops;
        break;
    case VL3_BACKEND_CPU:
        ops = &vl3__backend_cpu_ops;
        break;
    case VL3_BACKEND_CUDA:
        ops = vl3__backend_cuda_load(&why);
        if (!ops)
            return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "the CUDA backend is not available: "
                                 "%s", why.msg);
        break;
    case VL3_BACKEND_CUDA_EMU:
        ops = &vl3__backend_cuda_emu_ops;
        break;
    default:
        return vl3_error_set(reterr, -EINVAL, "unknown backend kind %d", (int)p->backend);
    }
    void *ctx = NULL;
    int r = ops->init(p->device, p->n_threads, &ctx, reterr);
    if (r < 0)
        return r;
    m->ops = ops;
    m->backend_ctx = ctx;
    r = vl3__llm_weights_upload(m, reterr);
    if (r < 0) {
        vl3__model_backend_free(m);
        return r;
    }
    return 0;
}

void vl3__model_backend_free(vl3_model *m)
{
    vl3__llm_weights_free(m);
    if (m->ops && m->backend_ctx)
        m->ops->free(m->backend_ctx);
    m->backend_ctx = NULL;
    m->ops = NULL;
}
