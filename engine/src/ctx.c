/* ctx.c: vl3_ctx: KV cache and activation arena of one stream, sized once at creation.
 *
 * Device arena (one backend allocation): K and V caches (L, n_seq, n_ctx, Hkv*D) f32, token-major
 * so a new token's k/v row is one contiguous copy; the activations of `rows` = max(n_batch, n_seq)
 * tokens (residual x, normalised xn, fused qkv, attention output, fused gate/up, SwiGLU output);
 * the logits of n_seq rows; staged ids and positions; the attention scratch. Host side: the
 * logits copy handed to callers and the small per-sequence bookkeeping. Prefill and decode
 * allocate nothing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "vl3/engine.h"

#define CTX_DEFAULT_N_CTX 8192
#define CTX_MAX_SEQ 4096

vl3_ctx_params vl3_ctx_params_default(void)
{
    return (vl3_ctx_params){.n_ctx = 0, .n_seq = 1, .n_batch = 512};
}

void vl3_ctx_free(vl3_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->ops && ctx->arena)
        ctx->ops->dealloc(ctx->bctx, ctx->arena);
    free(ctx->logits_host);
    free(ctx->ids_host);
    free(ctx->pos_host);
    free(ctx->aseqs);
    free(ctx->seq_len);
    free(ctx->batch_seq);
    free(ctx);
}

int vl3_ctx_new(const vl3_model *model, const vl3_ctx_params *params, vl3_ctx **ret_ctx,
                vl3_error *reterr)
{
    vl3_ctx_params p = params ? *params : vl3_ctx_params_default();
    if (!model || !ret_ctx)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (!model->ops || !model->backend_weights || !model->ops->matmul)
        return vl3_error_set(reterr, -EINVAL,
                             "cannot create a context: the model has no backend weights");
    const struct vl3__llm_hparams *hp = &model->llm;
    int maxpos = hp->max_positions > 0 ? hp->max_positions : CTX_DEFAULT_N_CTX;
    if (p.n_ctx == 0)
        p.n_ctx = maxpos < CTX_DEFAULT_N_CTX ? maxpos : CTX_DEFAULT_N_CTX;
    if (p.n_ctx < 1 || p.n_ctx > maxpos)
        return vl3_error_set(reterr, -EINVAL, "n_ctx %d out of range 1..%d", p.n_ctx, maxpos);
    if (p.n_seq < 1 || p.n_seq > CTX_MAX_SEQ)
        return vl3_error_set(reterr, -EINVAL, "n_seq %d out of range 1..%d", p.n_seq,
                             CTX_MAX_SEQ);
    if (p.n_batch < 1)
        return vl3_error_set(reterr, -EINVAL, "n_batch %d must be positive", p.n_batch);
    if (p.n_batch > p.n_ctx)
        p.n_batch = p.n_ctx;

    int r = -ENOMEM;
    vl3_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    c->model = model;
    c->ops = model->ops;
    c->bctx = model->backend_ctx;
    c->n_ctx = p.n_ctx;
    c->n_seq = p.n_seq;
    c->n_batch = p.n_batch;
    c->rows = p.n_batch > p.n_seq ? p.n_batch : p.n_seq;
    c->kv_dim = hp->n_kv_heads * hp->head_dim;
    c->qkv_dim = (hp->n_heads + 2 * hp->n_kv_heads) * hp->head_dim;

    size_t R = (size_t)c->rows, C = (size_t)hp->hidden, V = (size_t)hp->vocab;
    size_t HD = (size_t)hp->n_heads * hp->head_dim, I = (size_t)hp->intermediate;
    size_t kv_bytes = (size_t)hp->n_layers * c->n_seq * (size_t)c->n_ctx * c->kv_dim * 4;
    c->work_bytes = c->ops->attention_work_size(c->bctx, c->rows, c->n_ctx, hp->n_heads);
    int max_in = hp->intermediate > hp->hidden ? hp->intermediate : hp->hidden;
    if ((int)HD > max_in)
        max_in = (int)HD;
    c->mm_work_bytes = c->ops->matmul_work_size(c->bctx, max_in);
#define A64(n) (((n) + 63) & ~(size_t)63)
    size_t sizes[] = {kv_bytes,         kv_bytes,     R * C * 4,     R * C * 4,
                      R * c->qkv_dim * 4, R * HD * 4, R * 2 * I * 4, R * I * 4,
                      (size_t)c->n_seq * V * 4, R * 4, R * 4,     c->work_bytes, c->mm_work_bytes};
    void **slots[] = {&c->k_cache, &c->v_cache, &c->x,      &c->xn,  &c->qkv, &c->att,
                      &c->gu,      &c->act,     &c->logits, &c->ids, &c->pos, &c->work,
                      &c->mm_work};
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        total += A64(sizes[i]);
    r = c->ops->alloc(c->bctx, total, &c->arena, reterr);
    if (r < 0) {
        vl3_error_prefix(reterr, "could not allocate the context arena (%zu bytes)", total);
        goto fail;
    }
    c->arena_bytes = total;
    char *a = c->arena;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        *slots[i] = a;
        a += A64(sizes[i]);
    }
#undef A64
    c->logits_host = malloc((size_t)c->n_seq * V * sizeof(float));
    c->ids_host = malloc(R * sizeof(int32_t));
    c->pos_host = malloc(R * sizeof(int32_t));
    c->aseqs = calloc((size_t)c->n_seq, sizeof(*c->aseqs));
    c->seq_len = calloc((size_t)c->n_seq, sizeof(int));
    c->batch_seq = calloc((size_t)c->n_seq, sizeof(int));
    if (!c->logits_host || !c->ids_host || !c->pos_host || !c->aseqs || !c->seq_len ||
        !c->batch_seq) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    *ret_ctx = c;
    return 0;
fail:
    vl3_ctx_free(c);
    return r;
}

void vl3_ctx_reset(vl3_ctx *ctx)
{
    if (ctx)
        memset(ctx->seq_len, 0, (size_t)ctx->n_seq * sizeof(int));
}

int vl3_ctx_seq_reset(vl3_ctx *ctx, int seq)
{
    VL3_RETURN_IF(!ctx || seq < 0 || seq >= ctx->n_seq, -EINVAL);
    ctx->seq_len[seq] = 0;
    return 0;
}

int vl3_ctx_seq_len(const vl3_ctx *ctx, int seq)
{
    VL3_RETURN_IF(!ctx || seq < 0 || seq >= ctx->n_seq, -EINVAL);
    return ctx->seq_len[seq];
}

int vl3_ctx_n_vocab(const vl3_ctx *ctx)
{
    VL3_RETURN_IF(!ctx, -EINVAL);
    return ctx->model->llm.vocab;
}

vl3_ctx_params vl3_ctx_get_params(const vl3_ctx *ctx)
{
    return (vl3_ctx_params){.n_ctx = ctx->n_ctx, .n_seq = ctx->n_seq, .n_batch = ctx->n_batch};
}

int vl3_prefill(vl3_ctx *ctx, int seq, const int32_t *ids, int n_ids, const vl3_visual_rows *vis,
                const float **ret_logits, vl3_error *reterr)
{
    if (!ctx || !ids || n_ids < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (seq < 0 || seq >= ctx->n_seq)
        return vl3_error_set(reterr, -EINVAL, "sequence %d out of range 0..%d", seq,
                             ctx->n_seq - 1);
    int V = ctx->model->llm.vocab;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return vl3_error_set(reterr, -EINVAL, "token id %d at %d out of range 0..%d",
                                 (int)ids[i], i, V - 1);
    if (vis && vis->n > 0) {
        if (!vis->rows || !vis->index || vis->dim != ctx->model->llm.hidden)
            return vl3_error_set(reterr, -EINVAL,
                                 "visual rows of width %d do not match the LLM width %d",
                                 vis->dim, ctx->model->llm.hidden);
        for (int j = 0; j < vis->n; j++)
            if (vis->index[j] < 0 || vis->index[j] >= n_ids ||
                (j > 0 && vis->index[j] <= vis->index[j - 1]))
                return vl3_error_set(reterr, -EINVAL,
                                     "visual row %d: index %lld not increasing within 0..%d", j,
                                     (long long)vis->index[j], n_ids - 1);
    }
    if ((long long)ctx->seq_len[seq] + n_ids > ctx->n_ctx)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "prompt of %d tokens does not fit: sequence holds %d of %d", n_ids,
                             ctx->seq_len[seq], ctx->n_ctx);
    int vj = 0;
    for (int t0 = 0; t0 < n_ids; t0 += ctx->n_batch) {
        int T = n_ids - t0 < ctx->n_batch ? n_ids - t0 : ctx->n_batch;
        int base = ctx->seq_len[seq];
        for (int t = 0; t < T; t++) {
            ctx->ids_host[t] = ids[t0 + t];
            ctx->pos_host[t] = base + t;
        }
        ctx->batch_seq[0] = seq;
        ctx->aseqs[0].q_row = 0;
        ctx->aseqs[0].n_q = T;
        /* visual rows of this chunk: indices [t0, t0 + T) */
        int vstart = vj;
        while (vis && vj < vis->n && vis->index[vj] < t0 + T)
            vj++;
        int r = vl3__llm_forward(ctx, T, 1,
                                 vj > vstart ? vis->rows + (size_t)vstart * vis->dim : NULL,
                                 vj > vstart ? vis->index + vstart : NULL, vj - vstart, t0,
                                 reterr);
        if (r < 0)
            return r;
    }
    if (ret_logits)
        *ret_logits = ctx->logits_host;
    return 0;
}

int vl3_decode_step(vl3_ctx *ctx, const int *seqs, const int32_t *ids, int n,
                    const float **ret_logits, vl3_error *reterr)
{
    if (!ctx || !seqs || !ids || n < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (n > ctx->n_seq)
        return vl3_error_set(reterr, -EINVAL, "batch of %d exceeds the context's %d sequences",
                             n, ctx->n_seq);
    int V = ctx->model->llm.vocab;
    for (int i = 0; i < n; i++) {
        int s = seqs[i];
        if (s < 0 || s >= ctx->n_seq)
            return vl3_error_set(reterr, -EINVAL, "sequence %d out of range 0..%d", s,
                                 ctx->n_seq - 1);
        for (int j = 0; j < i; j++)
            if (seqs[j] == s)
                return vl3_error_set(reterr, -EINVAL, "sequence %d appears twice in a batch", s);
        if (ids[i] < 0 || ids[i] >= V)
            return vl3_error_set(reterr, -EINVAL, "token id %d out of range 0..%d", (int)ids[i],
                                 V - 1);
        if (ctx->seq_len[s] + 1 > ctx->n_ctx)
            return vl3_error_set(reterr, VL3_E_LIMIT, "sequence %d is full (%d tokens)", s,
                                 ctx->n_ctx);
    }
    for (int i = 0; i < n; i++) {
        ctx->ids_host[i] = ids[i];
        ctx->pos_host[i] = ctx->seq_len[seqs[i]];
        ctx->batch_seq[i] = seqs[i];
        ctx->aseqs[i].q_row = i;
        ctx->aseqs[i].n_q = 1;
    }
    int r = vl3__llm_forward(ctx, n, n, NULL, NULL, 0, 0, reterr);
    if (r < 0)
        return r;
    if (ret_logits)
        *ret_logits = ctx->logits_host;
    return 0;
}
