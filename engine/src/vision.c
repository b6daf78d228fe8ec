/* vision.c: the vision encoder forward (spec §4), written once against the vision ops of the
 * backend vtable (backend.h), over a whole batch of items at once.
 *
 * Input: pixel_values (P, 588) of any number of images and video frames (several requests may be
 * batched), their grids and merge sizes. Steps: patch embedding (a Linear on the flattened 14x14x3
 * patch), per-token 2D RoPE positions from the true patch row/column (the rows are in merge-block
 * order), cu_seqlens with one block per image and per video frame (no attention across frames),
 * L pre-LN layers, post LayerNorm, per-frame downsample (identity for m = 1, 2x2 mean for m = 2),
 * the rows DiffFP keeps are gathered (vl3_vision_encode_pre: the "pre-projector rows", C wide, what
 * the token cache stores), then the projector Linear -> erf GELU -> Linear (vl3_vision_project).
 * The projector runs on every merged token of the request, the kept rows at their places and the
 * pruned ones zero: the projector is ~0.3% of the encoder's FLOPs, and this keeps each kept row
 * bit for bit the row of an unpruned call, from the encoder or from cached rows alike (BLAS
 * kernels, OpenBLAS's Haswell sgemm or the bf16 GEMM's AMX / vdpbf16ps paths, may round a row
 * differently when the number of rows or its position changes, never because of another row).
 *
 * Pre-projector rows in the CPU's bf16 mode: the projector's first linear rounds its input rows to
 * bf16 (nearest even) anyway, so vl3_vision_encode_pre rounds them itself (explicitly, the same
 * rounding) and reports them as bf16-exact (vl3_vision_pre_bf16): storing them as bf16 loses
 * nothing. In f32 mode they are the f32 rows as they are.
 *
 * Input: pixel_values are rounded to bf16 first by default, as the reference model casts them
 * to its bf16 dtype before the encoder (vl3_vision_set_bf16_input).
 *
 * Weights: the encoder keeps an f32 copy of the vision and projector weights (converted from the
 * checkpoint's bf16/f16/f32) in one slab. The CPU backend computes in f32, not in the reference's
 * bf16 (a documented numeric difference). Scratch activations are sized by the batch: on the
 * host one block kept between calls up to ARENA_KEEP_MAX (then per call), on a device per call.
 *
 * Fused steps (optional vision ops; the CPU's bf16 mode has them): q, k, v from one preparation
 * of x (linear_bf16_n), the MLP's tanh GELU and both residual adds in the product's epilogue
 * (linear_bf16_ex). Backends without them, and shapes they decline, run the ops apart: the same
 * numerics either way.
 *
 * Memory: where the vision ops work on device memory (ops->device_memory: the CUDA backend), the
 * encoder lives there. vision_new converts the matrices into the backend's weight format (bf16)
 * in one device allocation and uploads the vectors (f32) in another; encode allocates the
 * activations through the backend, uploads the pixel batch and the RoPE positions once, keeps
 * every activation on the device through all layers, and downloads the merged rows once (the
 * pre-projector rows are gathered, and bf16-rounded, on the host: they are what the token cache
 * stores); the projector uploads its rows once and downloads its result once. Elsewhere (the
 * CPU) everything is host memory, as the same code with memcpy. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "preprocess.h"
#include "vl3/util.h"

/* A weight matrix: an f32 copy in the slab, or (when the backend wants them, the CPU's bf16 mode)
 * the checkpoint's bf16 bytes used in place. */
struct vmat {
    const float *f;
    const uint16_t *h;
};

struct vlayer {
    float *ln1_w, *ln1_b, *bq, *bk, *bv, *bo, *ln2_w, *ln2_b;
    float *fc1_b, *fc2_b;
    struct vmat wq, wk, wv, wo, fc1_w, fc2_w;
};

struct vl3_vision {
    const vl3_model *model;
    const struct vl3__vision_ops *ops;
    void *ops_ctx;
    const vl3__backend_ops *dev; /* the backend's memory ops when ops->device_memory, else NULL */
    void *dvec;                  /* device: the slab's copy (take() answers addresses in it) */
    void *dmat;                  /* device: the matrices in the backend's weight format */
    size_t dmat_used, dmat_cap;  /* bytes */
    int C, L, H, D, I, K, out_dim;
    int bf16_input; /* round pixel_values to bf16 first (reference behaviour) */
    int pre_bf16;   /* the projector's first linear rounds its input to bf16 (CPU bf16 mode) */
    int proj_only;  /* only the projector's weights (vl3_vision_new_projector) */
    float eps, theta;
    float *slab;
    size_t slab_used, slab_cap;
    int w16; /* matrices kept in bf16 (ops->linear_bf16) where the checkpoint has them so */
    float *patch_b, *post_w, *post_b, *p1_b, *p2_b;
    struct vmat patch_w, p1_w, p2_w;
    struct vlayer *layers;
    float *arena;        /* host: the encode's activations, kept between calls (grow-only) */
    size_t arena_floats;
};

/* The host encoder keeps its activations (five P x C rows, P x I, P x K pixels: 16 MB for one
 * 378-patch image) between calls when they fit this: glibc maps a block this size afresh per
 * call, and its ~4,000 pages were faulted in and zeroed again by every encode (measured: 20k
 * minor faults on the first encode of a process, 3.9-4.5k on each later one). Larger batches
 * (long clips) allocate per call as before, so the memory held stays bounded. */
#define ARENA_KEEP_MAX ((size_t)256 << 20)

void vl3_preprocess_params_from_model(const vl3_model *model, vl3_preprocess_params *p)
{
    vl3_preprocess_params_default(p);
    if (!model)
        return;
    const struct vl3__preproc *pre = &model->pre;
    if (pre->patch_size > 0)
        p->patch_size = pre->patch_size;
    if (pre->image_merge > 0)
        p->image_merge = pre->image_merge;
    if (pre->video_merge > 0)
        p->video_merge = pre->video_merge;
    if (pre->min_tokens > 0)
        p->min_tokens = pre->min_tokens;
    if (pre->max_tokens > 0)
        p->max_tokens = pre->max_tokens;
    for (int c = 0; c < 3; c++) {
        p->mean[c] = pre->mean[c];
        p->std[c] = pre->std[c] > 0 ? pre->std[c] : 0.5f;
    }
    /* the loader keeps rescale as float; the processor multiplies by the double 1/255 */
    if (pre->rescale > 0)
        p->rescale = fabs(pre->rescale - 1.0 / 255.0) < 1e-9 ? 1.0 / 255.0 : (double)pre->rescale;
    if (model->layout == VL3__LAYOUT_NATIVE) {
        int64_t f = (int64_t)p->patch_size * p->image_merge;
        p->rule = VL3_RESIZE_NATIVE;
        p->native_image_min_pixels = (int64_t)p->min_tokens * f * f;
        p->native_image_max_pixels = (int64_t)p->max_tokens * f * f;
        if (pre->video_min_pixels >= 0)
            p->native_video_min_pixels = pre->video_min_pixels;
        if (pre->video_max_pixels >= 0)
            p->native_video_max_pixels = pre->video_max_pixels;
    }
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal */
            float f = (float)man / 1024.0f / 16384.0f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Elements of t's shape (0 without data). */
static int64_t numel(const vl3__tensor *t)
{
    int64_t n = t->data ? 1 : 0;
    for (int i = 0; n && i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Copy tensor t (n elements expected) into the slab as f32; returns the copy or NULL. */
static float *take(struct vl3_vision *v, const vl3__tensor *t, int64_t n, vl3_error *reterr,
                   int *rc)
{
    if (*rc < 0)
        return NULL;
    int64_t have = numel(t);
    if (!t->data || have != n) {
        *rc = vl3_error_set(reterr, VL3_E_FORMAT, "vision tensor \"%s\" is missing or has %lld "
                                                  "elements, expected %lld",
                            t->name ? t->name : "?", (long long)have, (long long)n);
        return NULL;
    }
    if (v->slab_used + (size_t)n > v->slab_cap) {
        *rc = vl3_error_set(reterr, VL3_E_FORMAT, "vision weights exceed the expected size");
        return NULL;
    }
    float *dst = v->slab + v->slab_used;
    float *ret = v->dev ? (float *)((char *)v->dvec + v->slab_used * sizeof(float)) : dst;
    v->slab_used += (size_t)n;
    const uint8_t *src = t->data;
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case VL3__DTYPE_F32:
            memcpy(&dst[i], src + 4 * i, 4);
            break;
        case VL3__DTYPE_BF16: {
            uint16_t b;
            memcpy(&b, src + 2 * i, 2);
            uint32_t u = (uint32_t)b << 16;
            memcpy(&dst[i], &u, 4);
            break;
        }
        case VL3__DTYPE_F16: {
            uint16_t b;
            memcpy(&b, src + 2 * i, 2);
            dst[i] = half_to_float(b);
            break;
        }
        default:
            *rc = vl3_error_set(reterr, VL3_E_FORMAT, "vision tensor \"%s\" has dtype %s",
                                t->name ? t->name : "?", vl3__dtype_name(t->dtype));
            return NULL;
        }
    }
    return ret; /* device: uploaded with the whole slab at the end of vl3_vision_new */
}

#define DMAT_ALIGN 256 /* bytes between device matrices */

/* A matrix of n elements: the checkpoint's bf16 bytes in place when the backend wants them,
 * else an f32 copy in the slab. */
static struct vmat mat(struct vl3_vision *v, const vl3__tensor *t, int64_t n, vl3_error *reterr,
                       int *rc)
{
    struct vmat m = {NULL, NULL};
    if (*rc == 0 && v->dev && v->w16) { /* converted into the backend's weight format */
        int64_t have = numel(t);
        size_t bytes = v->dev->weight_bytes(v->ops_ctx, (size_t)n);
        if (!t->data || have != n) {
            *rc = vl3_error_set(reterr, VL3_E_FORMAT, "vision tensor \"%s\" is missing or has "
                                "%lld elements, expected %lld", t->name ? t->name : "?",
                                (long long)have, (long long)n);
            return m;
        }
        if (v->dmat_used + bytes > v->dmat_cap) {
            *rc = vl3_error_set(reterr, VL3_E_FORMAT, "vision weights exceed the expected size");
            return m;
        }
        void *dst = (char *)v->dmat + v->dmat_used;
        int r = v->dev->weight_convert(v->ops_ctx, dst, t->data, t->dtype, (size_t)n);
        if (r < 0) {
            *rc = vl3_error_set(reterr, r, "could not convert vision tensor \"%s\" (%s) into "
                                "the backend's weight format", t->name ? t->name : "?",
                                vl3__dtype_name(t->dtype));
            return m;
        }
        v->dmat_used += (bytes + DMAT_ALIGN - 1) / DMAT_ALIGN * DMAT_ALIGN;
        m.h = dst;
        return m;
    }
    if (*rc == 0 && v->w16 && t->dtype == VL3__DTYPE_BF16 && t->data && numel(t) == n) {
        m.h = t->data;
        return m;
    }
    m.f = take(v, t, n, reterr, rc);
    return m;
}

/* y = x W^T + b through the matrix's form. */
static int lin(const struct vl3_vision *v, const float *x, const struct vmat *w, const float *b,
               float *y, int64_t P, int in, int out)
{
    if (w->h)
        return v->ops->linear_bf16(v->ops_ctx, x, w->h, b, y, P, in, out);
    return v->ops->linear(v->ops_ctx, x, w->f, b, y, P, in, out);
}

/* y = gelu_tanh(x W^T + b): in the product's epilogue where the backend fuses it (the same
 * numerics), else the two ops. */
static int lin_gelu(const struct vl3_vision *v, const float *x, const struct vmat *w,
                    const float *b, float *y, int64_t P, int in, int out)
{
    if (w->h && v->ops->linear_bf16_ex) {
        int r = v->ops->linear_bf16_ex(v->ops_ctx, x, w->h, b, y, P, in, out,
                                       VL3__VLIN_GELU_TANH);
        if (r != -ENOTSUP)
            return r;
    }
    int r = lin(v, x, w, b, y, P, in, out);
    return r < 0 ? r : v->ops->gelu_tanh(v->ops_ctx, y, P * out);
}

/* h += x W^T + b (the residual add): in the product's epilogue where the backend fuses it (the
 * same numerics), else the product into tmp (P, out) and the add. */
static int lin_add(const struct vl3_vision *v, const float *x, const struct vmat *w,
                   const float *b, float *h, float *tmp, int64_t P, int in, int out)
{
    if (w->h && b && v->ops->linear_bf16_ex) {
        int r = v->ops->linear_bf16_ex(v->ops_ctx, x, w->h, b, h, P, in, out, VL3__VLIN_ACC);
        if (r != -ENOTSUP)
            return r;
    }
    int r = lin(v, x, w, b, tmp, P, in, out);
    return r < 0 ? r : v->ops->add(v->ops_ctx, h, tmp, P * out);
}

/* h += gelu_tanh(x W1^T + b1) W2^T + b2 (the MLP and its residual add): in one op where the
 * backend has it (fc1's output handed to fc2 packed; the same numerics), else fc1 into mid and
 * fc2 added to h (tmp: its scratch when not fused). */
static int lin_mlp(const struct vl3_vision *v, const float *x, const struct vlayer *ly, float *h,
                   float *mid, float *tmp, int64_t P)
{
    int C = v->C, I = v->I;
    if (ly->fc1_w.h && ly->fc2_w.h && v->ops->linear_bf16_mlp) {
        int r = v->ops->linear_bf16_mlp(v->ops_ctx, x, ly->fc1_w.h, ly->fc1_b, ly->fc2_w.h,
                                        ly->fc2_b, h, P, C, I);
        if (r != -ENOTSUP)
            return r;
    }
    int r = lin_gelu(v, x, &ly->fc1_w, ly->fc1_b, mid, P, C, I);
    return r < 0 ? r : lin_add(v, mid, &ly->fc2_w, ly->fc2_b, h, tmp, P, I, C);
}

/* q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv: in one call where the backend has it (x
 * prepared once; the same numerics), else three. */
static int lin_qkv(const struct vl3_vision *v, const float *x, const struct vlayer *ly, float *q,
                   float *k, float *vv, int64_t P)
{
    int C = v->C;
    if (ly->wq.h && ly->wk.h && ly->wv.h && v->ops->linear_bf16_n) {
        const uint16_t *w[3] = {ly->wq.h, ly->wk.h, ly->wv.h};
        const float *b[3] = {ly->bq, ly->bk, ly->bv};
        float *y[3] = {q, k, vv};
        return v->ops->linear_bf16_n(v->ops_ctx, x, 3, w, b, y, P, C, C);
    }
    int r = lin(v, x, &ly->wq, ly->bq, q, P, C, C);
    if (r == 0)
        r = lin(v, x, &ly->wk, ly->bk, k, P, C, C);
    return r < 0 ? r : lin(v, x, &ly->wv, ly->bv, vv, P, C, C);
}

static int vision_new(const vl3_model *model, int proj_only, vl3_vision **ret, vl3_error *reterr)
{
    if (!model || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    const struct vl3__vision_hparams *hp = &model->vision;
    if (hp->hidden <= 0 || hp->n_heads <= 0 || hp->hidden % hp->n_heads ||
        (hp->hidden / hp->n_heads) % 4 || hp->n_layers <= 0 || !model->w.vlayers)
        return vl3_error_set(reterr, VL3_E_FORMAT, "the model has no usable vision encoder");
    vl3_vision *v = calloc(1, sizeof(*v));
    if (!v)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    v->model = model;
    v->ops = model->ops && model->ops->vision ? model->ops->vision : &vl3__cpu_vision_ops;
    v->ops_ctx = model->ops && model->ops->vision ? model->backend_ctx : NULL;
    v->C = hp->hidden;
    v->L = hp->n_layers;
    v->H = hp->n_heads;
    v->D = hp->hidden / hp->n_heads;
    v->I = hp->intermediate;
    v->K = hp->channels * hp->patch_size * hp->patch_size;
    v->eps = hp->ln_eps > 0 ? hp->ln_eps : 1e-6f;
    v->theta = hp->rope_theta > 0 ? hp->rope_theta : 10000.0f;
    v->out_dim = model->llm.hidden;
    v->bf16_input = 1;
    v->w16 = v->ops->linear_bf16 && v->ops->wants_bf16_weights &&
             v->ops->wants_bf16_weights(v->ops_ctx);
    /* the backend's bf16 mode: every vision linear (bf16 or f32 matrix) rounds its input rows to
     * bf16, the projector's first one included */
    v->pre_bf16 = v->ops->wants_bf16_weights && v->ops->wants_bf16_weights(v->ops_ctx);
    v->proj_only = proj_only;
    int rc = 0;
    if (v->ops->device_memory) {
        v->dev = model->ops;
        if (v->w16 && v->dev->weight_dtype(v->ops_ctx) != VL3__DTYPE_BF16) {
            rc = vl3_error_set(reterr, VL3_E_UNSUPPORTED, "backend %s keeps weights in %s, its "
                               "vision ops want bf16", v->dev->name,
                               vl3__dtype_name(v->dev->weight_dtype(v->ops_ctx)));
            goto fail;
        }
    }
    int64_t C = v->C, I = v->I, Dl = v->out_dim;
    int64_t mats = Dl * C + Dl * Dl, vecs = 2 * Dl; /* the projector's */
    if (!proj_only) {
        mats += C * v->K + v->L * (4 * C * C + 2 * C * I);
        vecs += C + v->L * (9 * C + I) + 2 * C;
    }
    int dmats = v->dev && v->w16; /* matrices straight into device memory, not in the slab */
    v->slab_cap = (size_t)(vecs + (dmats ? 0 : mats));
    v->slab = malloc(sizeof(float) * v->slab_cap);
    v->layers = calloc((size_t)v->L, sizeof(*v->layers));
    if (!v->slab || !v->layers) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory for the vision weights");
        goto fail;
    }
    if (v->dev) {
        size_t vb = sizeof(float) * v->slab_cap;
        if ((rc = v->dev->alloc(v->ops_ctx, vb, &v->dvec, reterr)) < 0) {
            vl3_error_prefix(reterr, "vision weights (%zu bytes of vectors)", vb);
            goto fail;
        }
        if (dmats) {
            v->dmat_cap = v->dev->weight_bytes(v->ops_ctx, (size_t)mats) +
                          (size_t)(6 * v->L + 3) * DMAT_ALIGN;
            if ((rc = v->dev->alloc(v->ops_ctx, v->dmat_cap, &v->dmat, reterr)) < 0) {
                vl3_error_prefix(reterr, "vision weights (%zu bytes of matrices)", v->dmat_cap);
                goto fail;
            }
        }
    }
    const struct vl3__weights *w = &model->w;
    if (proj_only)
        goto projector;
    v->patch_w = mat(v, &w->patch_w, C * v->K, reterr, &rc);
    v->patch_b = take(v, &w->patch_b, C, reterr, &rc);
    for (int l = 0; l < v->L; l++) {
        const struct vl3__vision_layer *s = &w->vlayers[l];
        struct vlayer *d = &v->layers[l];
        d->ln1_w = take(v, &s->ln1_w, C, reterr, &rc);
        d->ln1_b = take(v, &s->ln1_b, C, reterr, &rc);
        d->wq = mat(v, &s->wq, C * C, reterr, &rc);
        d->bq = take(v, &s->bq, C, reterr, &rc);
        d->wk = mat(v, &s->wk, C * C, reterr, &rc);
        d->bk = take(v, &s->bk, C, reterr, &rc);
        d->wv = mat(v, &s->wv, C * C, reterr, &rc);
        d->bv = take(v, &s->bv, C, reterr, &rc);
        d->wo = mat(v, &s->wo, C * C, reterr, &rc);
        d->bo = take(v, &s->bo, C, reterr, &rc);
        d->ln2_w = take(v, &s->ln2_w, C, reterr, &rc);
        d->ln2_b = take(v, &s->ln2_b, C, reterr, &rc);
        d->fc1_w = mat(v, &s->fc1_w, I * C, reterr, &rc);
        d->fc1_b = take(v, &s->fc1_b, I, reterr, &rc);
        d->fc2_w = mat(v, &s->fc2_w, C * I, reterr, &rc);
        d->fc2_b = take(v, &s->fc2_b, C, reterr, &rc);
    }
    v->post_w = take(v, &w->post_ln_w, C, reterr, &rc);
    v->post_b = take(v, &w->post_ln_b, C, reterr, &rc);
projector:
    v->p1_w = mat(v, &w->proj_w1, Dl * C, reterr, &rc);
    v->p1_b = take(v, &w->proj_b1, Dl, reterr, &rc);
    v->p2_w = mat(v, &w->proj_w2, Dl * Dl, reterr, &rc);
    v->p2_b = take(v, &w->proj_b2, Dl, reterr, &rc);
    if (rc < 0)
        goto fail;
    if (v->dev) { /* the vectors (and f32 matrices) in one upload; the host slab is not needed */
        if ((rc = v->dev->upload(v->ops_ctx, v->dvec, v->slab, v->slab_used * sizeof(float))) <
            0) {
            vl3_error_set(reterr, rc, "could not upload the vision weights");
            goto fail;
        }
        free(v->slab);
        v->slab = NULL;
    }
    *ret = v;
    return 0;
fail:
    vl3_vision_free(v);
    return rc;
}

int vl3_vision_new(const vl3_model *model, int n_threads, vl3_vision **ret, vl3_error *reterr)
{
    (void)n_threads; /* OpenBLAS uses its own thread pool (OPENBLAS_NUM_THREADS) */
    return vision_new(model, 0, ret, reterr);
}

int vl3_vision_new_projector(const vl3_model *model, vl3_vision **ret, vl3_error *reterr)
{
    return vision_new(model, 1, ret, reterr);
}

void vl3_vision_free(vl3_vision *v)
{
    if (!v)
        return;
    if (v->dev) {
        v->dev->dealloc(v->ops_ctx, v->dvec);
        v->dev->dealloc(v->ops_ctx, v->dmat);
    }
    free(v->slab);
    free(v->layers);
    free(v->arena);
    free(v);
}

void vl3_vision_set_bf16_input(vl3_vision *v, int on)
{
    if (v)
        v->bf16_input = on != 0;
}

/* Round to the nearest bf16 (ties to even), as torch's float32 -> bfloat16 cast. */
static float round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

int vl3_vision_out_dim(const vl3_vision *v)
{
    return v ? v->out_dim : -EINVAL;
}

/* n floats of host scratch (64-byte aligned) from the kept block, grown when it is too small and
 * the result is at most ARENA_KEEP_MAX; larger requests get their own block in *ret_own (the
 * caller frees it). NULL when out of memory. Host encoders only (v->dev NULL). */
static float *arena_get(struct vl3_vision *v, size_t n, float **ret_own)
{
    *ret_own = NULL;
    if (n <= v->arena_floats)
        return v->arena;
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, sizeof(float) * (n ? n : 1)) != 0)
        return NULL;
    if (sizeof(float) * n > ARENA_KEEP_MAX)
        return *ret_own = p;
    free(v->arena);
    v->arena = p;
    v->arena_floats = n;
    return p;
}

/* The encoder's memory: the backend's device memory, or the host's (the same code, memcpy). */
static int buf_alloc(const struct vl3_vision *v, size_t bytes, void **ret, vl3_error *reterr)
{
    *ret = NULL;
    if (v->dev) {
        int r = v->dev->alloc(v->ops_ctx, bytes, ret, reterr);
        if (r < 0)
            vl3_error_prefix(reterr, "vision encoder activations");
        return r;
    }
    if (!(*ret = malloc(bytes ? bytes : 1)))
        return vl3_error_set(reterr, -ENOMEM, "out of memory for %zu bytes of vision encoder "
                             "activations", bytes);
    return 0;
}

static void buf_free(const struct vl3_vision *v, void *p)
{
    if (v->dev)
        v->dev->dealloc(v->ops_ctx, p);
    else
        free(p);
}

static int to_buf(const struct vl3_vision *v, void *dst, const void *src, size_t n,
                  vl3_error *reterr)
{
    if (!v->dev) {
        memcpy(dst, src, n);
        return 0;
    }
    int r = v->dev->upload(v->ops_ctx, dst, src, n);
    return r < 0 ? vl3_error_set(reterr, r, "could not upload %zu bytes to the vision encoder", n)
                 : 0;
}

static int from_buf(const struct vl3_vision *v, void *dst, const void *src, size_t n,
                    vl3_error *reterr)
{
    if (!v->dev) {
        memcpy(dst, src, n);
        return 0;
    }
    int r = v->dev->download(v->ops_ctx, dst, src, n);
    return r < 0 ? vl3_error_set(reterr, r, "could not download the vision encoder's rows") : 0;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) < 0)                                                                        \
            goto out;                                                                              \
    } while (0)

/* Check b (and mask) against the encoder; counts of frames and merged tokens. */
static int check_batch(const vl3_vision *v, const vl3_pixel_batch *b, const vl3_token_mask *mask,
                       int64_t *ret_frames, int64_t *ret_tok, vl3_error *reterr)
{
    if (b->patch_dim != v->K)
        return vl3_error_set(reterr, -EINVAL, "pixel_values have %d values per patch, the encoder "
                                              "expects %d",
                             b->patch_dim, v->K);
    int64_t n_frames = 0, n_tok = 0, check = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        if (g->t <= 0 || g->h <= 0 || g->w <= 0 || g->merge <= 0 || g->h % g->merge ||
            g->w % g->merge)
            return vl3_error_set(reterr, -EINVAL, "invalid grid for item %d", i);
        n_frames += g->t;
        n_tok += (int64_t)g->t * vl3_vision_grid_tokens_per_frame(g);
        check += (int64_t)g->t * g->h * g->w;
    }
    if (check != b->n_patches)
        return vl3_error_set(reterr, -EINVAL, "grids cover %lld patches, pixel_values hold %lld",
                             (long long)check, (long long)b->n_patches);
    if (mask && mask->n_tokens != n_tok)
        return vl3_error_set(reterr, -EINVAL, "token mask covers %lld tokens, the batch has %lld",
                             (long long)mask->n_tokens, (long long)n_tok);
    *ret_frames = n_frames;
    *ret_tok = n_tok;
    return 0;
}

int vl3_vision_pre_dim(const vl3_vision *v)
{
    return v ? v->C : -EINVAL;
}

int vl3_vision_pre_bf16(const vl3_vision *v)
{
    return v ? v->pre_bf16 : 0;
}

int vl3_vision_encode_pre(vl3_vision *v, const vl3_pixel_batch *b, const vl3_token_mask *mask,
                          float *out, vl3_error *reterr)
{
    if (!v || !b || !out || (b->n_patches > 0 && !b->pixel_values))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (v->proj_only)
        return vl3_error_set(reterr, -EINVAL, "this encoder holds only the projector");
    const struct vl3__vision_ops *op = v->ops;
    void *cx = v->ops_ctx;
    int64_t P = b->n_patches, n_frames = 0, n_tok = 0;
    int rc = check_batch(v, b, mask, &n_frames, &n_tok, reterr);
    if (rc < 0)
        return rc;
    int64_t n_kept = mask ? mask->n_kept : n_tok;
    if (P == 0)
        return 0;

    rc = -ENOMEM;
    const int64_t C = v->C, I = v->I;
    float *h = NULL, *x = NULL, *q = NULL, *k = NULL, *vv = NULL, *mlp = NULL, *pix = NULL;
    float *hbuf = NULL, *block = NULL; /* block: this call's activations when not kept */
    int32_t *dpr = NULL, *dpc = NULL;
    int32_t *pr = malloc(sizeof(int32_t) * (size_t)P), *pc = malloc(sizeof(int32_t) * (size_t)P);
    int64_t *cu = malloc(sizeof(int64_t) * (size_t)(n_frames + 1));
    if (!pr || !pc || !cu) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld patches", (long long)P);
        goto out;
    }
    int want_pix = v->bf16_input || v->dev; /* the device needs its copy of the pixels anyway */
    if (!v->dev) { /* host: one block of 64-byte aligned parts, kept when small enough */
        size_t n_c = ((size_t)(P * C) + 15) & ~(size_t)15;
        size_t n_i = ((size_t)(P * I) + 15) & ~(size_t)15;
        size_t n_k = want_pix ? ((size_t)(P * v->K) + 15) & ~(size_t)15 : 0;
        size_t need = 5 * n_c + n_i + n_k;
        float *base = arena_get(v, need, &block);
        if (!base) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %zu bytes of vision encoder "
                               "activations", sizeof(float) * need);
            goto out;
        }
        h = base, x = h + n_c, q = x + n_c, k = q + n_c, vv = k + n_c, mlp = vv + n_c;
        pix = want_pix ? mlp + n_i : NULL;
    } else {
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * C), (void **)&h, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * C), (void **)&x, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * C), (void **)&q, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * C), (void **)&k, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * C), (void **)&vv, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(P * I), (void **)&mlp, reterr));
        if (want_pix)
            TRY(buf_alloc(v, sizeof(float) * (size_t)(P * v->K), (void **)&pix, reterr));
    }
    /* positions (true row/column of each row in merge-block order) and per-frame blocks */
    int64_t row = 0, fr = 0;
    cu[0] = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        int m = g->merge;
        for (int t = 0; t < g->t; t++) {
            for (int bh = 0; bh < g->h / m; bh++)
                for (int bw = 0; bw < g->w / m; bw++)
                    for (int mh = 0; mh < m; mh++)
                        for (int mw = 0; mw < m; mw++, row++) {
                            pr[row] = bh * m + mh;
                            pc[row] = bw * m + mw;
                        }
            cu[fr + 1] = cu[fr] + (int64_t)g->h * g->w;
            fr++;
        }
    }
    dpr = pr, dpc = pc;
    if (v->dev) { /* the positions, once per encode (cu stays host memory: backend.h) */
        dpr = dpc = NULL;
        TRY(buf_alloc(v, sizeof(int32_t) * (size_t)P, (void **)&dpr, reterr));
        TRY(buf_alloc(v, sizeof(int32_t) * (size_t)P, (void **)&dpc, reterr));
        TRY(to_buf(v, dpr, pr, sizeof(int32_t) * (size_t)P, reterr));
        TRY(to_buf(v, dpc, pc, sizeof(int32_t) * (size_t)P, reterr));
    }

    const float *input = b->pixel_values;
    if (pix) { /* rounded (or as they are) into the encoder's memory, in one upload */
        float *hp = pix;
        if (v->dev && !(hp = hbuf = malloc(sizeof(float) * (size_t)(P * v->K)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld patches", (long long)P);
            goto out;
        }
        for (int64_t i = 0; i < P * v->K; i++)
            hp[i] = v->bf16_input ? round_bf16(b->pixel_values[i]) : b->pixel_values[i];
        if (v->dev)
            TRY(to_buf(v, pix, hbuf, sizeof(float) * (size_t)(P * v->K), reterr));
        free(hbuf);
        hbuf = NULL;
        input = pix;
    }
    TRY(lin(v, input, &v->patch_w, v->patch_b, h, P, v->K, (int)C));
    for (int l = 0; l < v->L; l++) {
        const struct vlayer *ly = &v->layers[l];
        TRY(op->layernorm(cx, h, ly->ln1_w, ly->ln1_b, x, P, (int)C, v->eps));
        TRY(lin_qkv(v, x, ly, q, k, vv, P));
        TRY(op->rope2d(cx, q, dpr, dpc, P, v->H, v->D, v->theta));
        TRY(op->rope2d(cx, k, dpr, dpc, P, v->H, v->D, v->theta));
        TRY(op->attention_blocks(cx, q, k, vv, x, cu, (int)n_frames, v->H, v->D));
        TRY(lin_add(v, x, &ly->wo, ly->bo, h, q, P, (int)C, (int)C));
        TRY(op->layernorm(cx, h, ly->ln2_w, ly->ln2_b, x, P, (int)C, v->eps));
        TRY(lin_mlp(v, x, ly, h, mlp, q, P));
    }
    TRY(op->layernorm(cx, h, v->post_w, v->post_b, x, P, (int)C, v->eps));

    /* downsample frame by frame into h (n_tok rows) */
    row = 0;
    int64_t tok = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        for (int t = 0; t < g->t; t++) {
            TRY(op->downsample(cx, x + row * C, h + tok * C, g->h, g->w, g->merge, (int)C));
            row += (int64_t)g->h * g->w;
            tok += vl3_vision_grid_tokens_per_frame(g);
        }
    }
    /* the kept rows (from the device in one download), rounded to bf16 where the projector's
     * first linear rounds its input (the rows handed out are then exactly what the projector
     * consumes: bf16 rows are exact) */
    const float *hrows = h;
    if (v->dev) {
        if (!(hbuf = malloc(sizeof(float) * (size_t)(n_tok * C)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto out;
        }
        TRY(from_buf(v, hbuf, h, sizeof(float) * (size_t)(n_tok * C), reterr));
        hrows = hbuf;
    }
    int64_t kept = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        if (mask && !mask->keep[t])
            continue;
        if (kept++ >= n_kept)
            break;
        float *dst = out + (kept - 1) * C;
        const float *src = hrows + t * C;
        if (v->pre_bf16)
            for (int64_t c = 0; c < C; c++)
                dst[c] = round_bf16(src[c]);
        else
            memcpy(dst, src, sizeof(float) * (size_t)C);
    }
    if (kept != n_kept) {
        rc = vl3_error_set(reterr, -EINVAL, "token mask keeps %lld tokens, it says %lld",
                           (long long)kept, (long long)n_kept);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0 && reterr && reterr->code != rc)
        vl3_error_set(reterr, rc, "vision encoder failed: %s", vl3_strerror(rc));
    free(block);
    if (v->dev) {
        buf_free(v, pix);
        buf_free(v, h);
        buf_free(v, x);
        buf_free(v, q);
        buf_free(v, k);
        buf_free(v, vv);
        buf_free(v, mlp);
        buf_free(v, dpr);
        buf_free(v, dpc);
    }
    free(hbuf);
    free(pr);
    free(pc);
    free(cu);
    return rc;
}

int vl3_vision_project(vl3_vision *v, const vl3_token_mask *mask, int64_t n_tok, const float *pre,
                       float *out, vl3_error *reterr)
{
    if (!v || n_tok < 0 || (n_tok > 0 && (!pre || !out)) || (mask && mask->n_tokens != n_tok))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (n_tok == 0)
        return 0;
    const struct vl3__vision_ops *op = v->ops;
    void *cx = v->ops_ctx;
    const int64_t C = v->C, Dl = v->out_dim;
    int64_t n_kept = mask ? mask->n_kept : n_tok;
    int rc = -ENOMEM;
    float *all = NULL, *rows = NULL, *xd = NULL, *z = NULL, *y = NULL, *block = NULL;
    /* every merged token's row at its place (pruned ones zero): each kept row is then computed
     * exactly as in a call without pruning -- rows of a product are independent, but kernels
     * may round a row differently when the number of rows or its position changes */
    const float *x = pre;
    if (mask) {
        if (!(all = calloc((size_t)(n_tok * C), sizeof(float)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto out;
        }
        int64_t kept = 0;
        for (int64_t t = 0; t < n_tok; t++)
            if (mask->keep[t] && kept++ < n_kept)
                memcpy(all + t * C, pre + (kept - 1) * C, sizeof(float) * (size_t)C);
        if (kept != n_kept) {
            rc = vl3_error_set(reterr, -EINVAL, "token mask keeps %lld tokens, it says %lld",
                               (long long)kept, (long long)n_kept);
            goto out;
        }
        x = all;
    }
    /* the encoder's memory: on a device, the rows go up once and the result comes down once */
    if (v->dev) {
        TRY(buf_alloc(v, sizeof(float) * (size_t)(n_tok * C), (void **)&xd, reterr));
        TRY(to_buf(v, xd, x, sizeof(float) * (size_t)(n_tok * C), reterr));
        x = xd;
    }
    if (!v->dev) { /* host: z (and y) in the kept block, free between the encoder's calls */
        size_t n_z = ((size_t)(n_tok * Dl) + 15) & ~(size_t)15;
        if (!(z = arena_get(v, mask ? 2 * n_z : n_z, &block))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto out;
        }
        y = mask ? z + n_z : NULL;
    } else {
        TRY(buf_alloc(v, sizeof(float) * (size_t)(n_tok * Dl), (void **)&z, reterr));
        TRY(buf_alloc(v, sizeof(float) * (size_t)(n_tok * Dl), (void **)&y, reterr));
    }
    float *dst = mask || v->dev ? y : out;
    TRY(lin(v, x, &v->p1_w, v->p1_b, z, n_tok, (int)C, (int)Dl));
    TRY(op->gelu_erf(cx, z, n_tok * Dl));
    TRY(lin(v, z, &v->p2_w, v->p2_b, dst, n_tok, (int)Dl, (int)Dl));
    const float *res = dst;
    if (v->dev) {
        float *h = out;
        if (mask && !(h = rows = malloc(sizeof(float) * (size_t)(n_tok * Dl)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto out;
        }
        TRY(from_buf(v, h, y, sizeof(float) * (size_t)(n_tok * Dl), reterr));
        res = h;
    }
    if (mask) {
        int64_t kept = 0;
        for (int64_t t = 0; t < n_tok; t++)
            if (mask->keep[t])
                memcpy(out + (kept++) * Dl, res + t * Dl, sizeof(float) * (size_t)Dl);
    }
    rc = 0;
out:
    if (rc < 0 && reterr && reterr->code != rc)
        vl3_error_set(reterr, rc, "vision projector failed: %s", vl3_strerror(rc));
    free(all);
    free(rows);
    free(block);
    if (v->dev) {
        buf_free(v, xd);
        buf_free(v, z);
        buf_free(v, y);
    }
    return rc;
}

int vl3_vision_encode(vl3_vision *v, const vl3_pixel_batch *b, const vl3_token_mask *mask,
                      float *out, vl3_error *reterr)
{
    if (!v || !b || !out || (b->n_patches > 0 && !b->pixel_values))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int64_t n_frames = 0, n_tok = 0;
    int rc = check_batch(v, b, mask, &n_frames, &n_tok, reterr);
    if (rc < 0 || b->n_patches == 0)
        return rc;
    int64_t n_kept = mask ? mask->n_kept : n_tok;
    float *pre = malloc(sizeof(float) * (size_t)((n_kept > 0 ? n_kept : 1) * v->C));
    if (!pre)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    rc = vl3_vision_encode_pre(v, b, mask, pre, reterr);
    if (rc == 0)
        rc = vl3_vision_project(v, mask, n_tok, pre, out, reterr);
    free(pre);
    return rc;
}
