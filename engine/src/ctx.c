/* ctx.c: vl3_ctx: the paged KV cache and activation arena of one stream, sized once at creation,
 * and the batch entry points (vl3_decode; vl3_prefill and vl3_decode_step on top of it).
 *
 * Device arena (one backend allocation): the K and V page pools (L, n_pages, page_size, Hkv*D) in
 * the backend's activation dtype; the activations of `rows` = max(n_batch, n_seq) tokens
 * (residual x, normalised xn, fused qkv, attention output, fused gate/up, SwiGLU output); the
 * logits of n_seq rows; staged ids, positions, KV slots, visual rows, attention descriptors and
 * block tables; the attention and matmul scratch. Host side: the logits copy handed to callers,
 * each sequence's block table and the page pool's reference counts and free list.
 *
 * Pages: a sequence holds ceil(len / page_size) pages. vl3_ctx_seq_fork lets another sequence
 * share them (the tasks of one window share the visual prefix, prefilled once); a shared page is
 * never written: appending to a sequence whose last page is shared and partly filled first copies
 * that page (copy on write). Pages return to the pool when their last holder is reset. A batch
 * takes every page it needs before running, or fails with VL3_E_LIMIT leaving the ctx unchanged.
 * Prefill and decode allocate no memory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "vl3/engine.h"

#define CTX_DEFAULT_N_CTX 8192
#define CTX_MAX_SEQ 4096
#define CTX_DEFAULT_PAGE 256 /* tokens per KV page: the CPU runs one sgemm per page and kv head, so
                              * pages must be large enough for the call overhead not to matter in
                              * decode (a 7k-token prompt: 28 pages) */

vl3_ctx_params vl3_ctx_params_default(void)
{
    return (vl3_ctx_params){.n_ctx = 0, .n_seq = 1, .n_batch = 512, .page_size = 0, .n_pages = 0};
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
    free(ctx->slots_host);
    free(ctx->vis_idx_host);
    free(ctx->seqs_host);
    free(ctx->tables_host);
    free(ctx->aseqs);
    free(ctx->seq_len);
    free(ctx->seq_pages);
    free(ctx->table);
    free(ctx->batch_seq);
    free(ctx->one_host);
    free(ctx->page_ref);
    free(ctx->free_pages);
    free(ctx->samp_rows);
    free(ctx->samp_ids);
    free(ctx->samp_hist);
    free(ctx);
}

int vl3_ctx_new(const vl3_model *model, const vl3_ctx_params *params, vl3_ctx **ret_ctx,
                vl3_error *reterr)
{
    vl3_ctx_params p = params ? *params : vl3_ctx_params_default();
    if (!model || !ret_ctx)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (!model->ops || !model->backend_weights || !model->ops->matmul || !model->ops->kv_store ||
        !model->ops->act_dtype)
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
    if (p.page_size == 0)
        p.page_size = p.n_ctx < CTX_DEFAULT_PAGE ? p.n_ctx : CTX_DEFAULT_PAGE;
    if (p.page_size < 1 || p.page_size > 4096)
        return vl3_error_set(reterr, -EINVAL, "page_size %d out of range 1..4096", p.page_size);
    int max_pages = (p.n_ctx + p.page_size - 1) / p.page_size;
    if (p.n_pages == 0)
        p.n_pages = max_pages * p.n_seq; /* every sequence full at once */
    if (p.n_pages < max_pages || p.n_pages > (1 << 24))
        return vl3_error_set(reterr, -EINVAL, "n_pages %d out of range %d..%d (one full "
                             "sequence needs %d pages)", p.n_pages, max_pages, 1 << 24, max_pages);

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
    c->page_size = p.page_size;
    c->n_pages = p.n_pages;
    c->max_pages = max_pages;
    c->rows = p.n_batch > p.n_seq ? p.n_batch : p.n_seq;
    c->kv_dim = hp->n_kv_heads * hp->head_dim;
    c->qkv_dim = (hp->n_heads + 2 * hp->n_kv_heads) * hp->head_dim;
    c->asz = vl3__dtype_size((enum vl3__dtype)c->ops->act_dtype(c->bctx));
    c->kv_dtype = c->ops->kv_dtype ? c->ops->kv_dtype(c->bctx) : c->ops->act_dtype(c->bctx);
    c->kvsz = vl3__dtype_size((enum vl3__dtype)c->kv_dtype);

    size_t R = (size_t)c->rows, C = (size_t)hp->hidden, V = (size_t)hp->vocab, A = c->asz;
    size_t HD = (size_t)hp->n_heads * hp->head_dim, I = (size_t)hp->intermediate;
    size_t S = (size_t)c->n_seq, MP = (size_t)max_pages;
    size_t kv_bytes = (size_t)hp->n_layers * c->n_pages * (size_t)c->page_size * c->kv_dim *
                      c->kvsz;
    c->work_bytes = c->ops->attention_work_size(c->bctx, c->rows, c->n_ctx, hp->n_heads);
    int max_in = hp->intermediate > hp->hidden ? hp->intermediate : hp->hidden;
    if ((int)HD > max_in)
        max_in = (int)HD;
    c->mm_work_bytes = c->ops->matmul_work_size(c->bctx, max_in);
#define A64(n) (((n) + 63) & ~(size_t)63)
    size_t sizes[] = {kv_bytes,      kv_bytes,      R * C * A,        R * C * A,
                      R * c->qkv_dim * A, R * HD * A, R * 2 * I * A, R * I * A,
                      S * V * 4,     R * 4,         R * 4,            R * 4,
                      R * C * 4,     R * 4,         S * 16,           S * MP * 4,
                      c->work_bytes, c->mm_work_bytes};
    void **slots[] = {&c->k_pool, &c->v_pool,   &c->x,        &c->xn,      &c->qkv,
                      &c->att,    &c->gu,       &c->act,      &c->logits,  &c->ids,
                      &c->pos,    &c->slots,    &c->vis,      &c->vis_idx, &c->seqs_dev,
                      &c->tables_dev, &c->work, &c->mm_work};
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        total += A64(sizes[i]);
    r = c->ops->alloc(c->bctx, total, &c->arena, reterr);
    if (r < 0) {
        vl3_error_prefix(reterr, "could not allocate the context arena (%zu bytes: KV pool %zu "
                         "bytes for %d pages of %d tokens)", total, 2 * kv_bytes, c->n_pages,
                         c->page_size);
        goto fail;
    }
    c->arena_bytes = total;
    char *a = c->arena;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        *slots[i] = a;
        a += A64(sizes[i]);
    }
#undef A64
    c->logits_host = malloc(S * V * sizeof(float));
    c->ids_host = malloc(R * sizeof(int32_t));
    c->pos_host = malloc(R * sizeof(int32_t));
    c->slots_host = malloc(R * sizeof(int32_t));
    c->vis_idx_host = malloc(R * sizeof(int32_t));
    c->seqs_host = malloc(S * 4 * sizeof(int32_t));
    c->tables_host = calloc(S * MP, sizeof(int32_t));
    c->aseqs = calloc(S, sizeof(*c->aseqs));
    c->seq_len = calloc(S, sizeof(int));
    c->seq_pages = calloc(S, sizeof(int));
    c->table = calloc(S * MP, sizeof(int32_t));
    c->batch_seq = calloc(S, sizeof(int));
    c->one_host = calloc(S, sizeof(int));
    c->page_ref = calloc((size_t)c->n_pages, sizeof(int));
    c->free_pages = malloc((size_t)c->n_pages * sizeof(int32_t));
    c->samp_rows = calloc(S, sizeof(*c->samp_rows));
    c->samp_ids = calloc(S, sizeof(int32_t));
    if (!c->samp_rows || !c->samp_ids ||
        !c->logits_host || !c->ids_host || !c->pos_host || !c->slots_host || !c->vis_idx_host ||
        !c->seqs_host || !c->tables_host || !c->aseqs || !c->seq_len || !c->seq_pages ||
        !c->table || !c->batch_seq || !c->one_host || !c->page_ref || !c->free_pages) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_pages; i++) /* page 0 on top: low pages are used first */
        c->free_pages[i] = c->n_pages - 1 - i;
    c->n_free = c->n_pages;
    *ret_ctx = c;
    return 0;
fail:
    vl3_ctx_free(c);
    return r;
}

/* Give back every page of sequence s. */
static void seq_release(vl3_ctx *ctx, int s)
{
    int32_t *t = ctx->table + (size_t)s * ctx->max_pages;
    for (int i = 0; i < ctx->seq_pages[s]; i++)
        if (--ctx->page_ref[t[i]] == 0)
            ctx->free_pages[ctx->n_free++] = t[i];
    ctx->seq_pages[s] = 0;
    ctx->seq_len[s] = 0;
}

void vl3_ctx_reset(vl3_ctx *ctx)
{
    if (!ctx)
        return;
    for (int s = 0; s < ctx->n_seq; s++)
        seq_release(ctx, s);
}

int vl3_ctx_seq_reset(vl3_ctx *ctx, int seq)
{
    VL3_RETURN_IF(!ctx || seq < 0 || seq >= ctx->n_seq, -EINVAL);
    seq_release(ctx, seq);
    return 0;
}

int vl3_ctx_seq_fork(vl3_ctx *ctx, int src, int dst)
{
    VL3_RETURN_IF(!ctx || src < 0 || src >= ctx->n_seq || dst < 0 || dst >= ctx->n_seq, -EINVAL);
    if (src == dst)
        return 0;
    seq_release(ctx, dst);
    int mp = ctx->max_pages;
    for (int i = 0; i < ctx->seq_pages[src]; i++) {
        int32_t pg = ctx->table[(size_t)src * mp + i];
        ctx->table[(size_t)dst * mp + i] = pg;
        ctx->page_ref[pg]++;
    }
    ctx->seq_pages[dst] = ctx->seq_pages[src];
    ctx->seq_len[dst] = ctx->seq_len[src];
    return 0;
}

int vl3_ctx_seq_truncate(vl3_ctx *ctx, int seq, int len)
{
    VL3_RETURN_IF(!ctx || seq < 0 || seq >= ctx->n_seq || len < 0 || len > ctx->seq_len[seq],
                  -EINVAL);
    int keep = (len + ctx->page_size - 1) / ctx->page_size;
    int32_t *t = ctx->table + (size_t)seq * ctx->max_pages;
    for (int i = keep; i < ctx->seq_pages[seq]; i++)
        if (--ctx->page_ref[t[i]] == 0)
            ctx->free_pages[ctx->n_free++] = t[i];
    /* a kept, partly filled last page that is shared is copied before the next append
     * (seq_grow); one held alone is simply overwritten past len */
    ctx->seq_pages[seq] = keep;
    ctx->seq_len[seq] = len;
    return 0;
}

int vl3_ctx_seq_len(const vl3_ctx *ctx, int seq)
{
    VL3_RETURN_IF(!ctx || seq < 0 || seq >= ctx->n_seq, -EINVAL);
    return ctx->seq_len[seq];
}

int vl3_ctx_free_pages(const vl3_ctx *ctx)
{
    VL3_RETURN_IF(!ctx, -EINVAL);
    return ctx->n_free;
}

int vl3_ctx_n_vocab(const vl3_ctx *ctx)
{
    VL3_RETURN_IF(!ctx, -EINVAL);
    return ctx->model->llm.vocab;
}

vl3_ctx_params vl3_ctx_get_params(const vl3_ctx *ctx)
{
    return (vl3_ctx_params){.n_ctx = ctx->n_ctx, .n_seq = ctx->n_seq, .n_batch = ctx->n_batch,
                            .page_size = ctx->page_size, .n_pages = ctx->n_pages};
}

/* Pages a run of n tokens appended to sequence s needs (new blocks, plus one copy when its last
 * page is shared and partly filled). */
static int pages_needed(const vl3_ctx *ctx, int s, int n)
{
    int ps = ctx->page_size, len = ctx->seq_len[s];
    int need = (len + n + ps - 1) / ps - ctx->seq_pages[s];
    if (len % ps && ctx->page_ref[ctx->table[(size_t)s * ctx->max_pages + len / ps]] > 1)
        need++;
    return need;
}

/* Make sequence s own writable pages for tokens [len, len + n): copy a shared partial last page,
 * take new pages. The caller checked there are enough free pages. */
static int seq_grow(vl3_ctx *ctx, int s, int n, vl3_error *reterr)
{
    int ps = ctx->page_size, len = ctx->seq_len[s];
    int32_t *t = ctx->table + (size_t)s * ctx->max_pages;
    if (len % ps && ctx->page_ref[t[len / ps]] > 1) {
        int32_t old = t[len / ps], pg = ctx->free_pages[--ctx->n_free];
        size_t page_bytes = (size_t)ps * ctx->kv_dim * ctx->kvsz;
        size_t layer_bytes = (size_t)ctx->n_pages * page_bytes;
        for (int l = 0; l < ctx->model->llm.n_layers; l++)
            for (int kv = 0; kv < 2; kv++) {
                char *pool = (char *)(kv ? ctx->v_pool : ctx->k_pool) + (size_t)l * layer_bytes;
                int r = ctx->ops->copy_rows(ctx->bctx, pool + (size_t)pg * page_bytes, 0,
                                            pool + (size_t)old * page_bytes, 0, 1,
                                            (size_t)(len % ps) * ctx->kv_dim * ctx->kvsz);
                if (r < 0)
                    return vl3_error_set(reterr, r, "could not copy a shared KV page");
            }
        ctx->page_ref[old]--;
        ctx->page_ref[pg] = 1;
        t[len / ps] = pg;
    }
    while (ctx->seq_pages[s] * ps < len + n) {
        int32_t pg = ctx->free_pages[--ctx->n_free];
        ctx->page_ref[pg] = 1;
        t[ctx->seq_pages[s]++] = pg;
    }
    return 0;
}

int vl3_decode(vl3_ctx *ctx, const vl3_batch *b, const float **ret_logits, vl3_error *reterr)
{
    if (!ctx || !b || b->n_tokens < 1 || !b->ids || b->n_seqs < 1 || !b->seq || !b->n_seq_tokens)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int T = b->n_tokens, V = ctx->model->llm.vocab, C = ctx->model->llm.hidden;
    int n_runs = b->n_seqs;
    if (T > ctx->rows)
        return vl3_error_set(reterr, -EINVAL, "batch of %d tokens exceeds the context's %d rows",
                             T, ctx->rows);
    if (n_runs > ctx->n_seq)
        return vl3_error_set(reterr, -EINVAL, "batch of %d sequences exceeds the context's %d",
                             n_runs, ctx->n_seq);
    for (int t = 0; t < T; t++)
        if (b->ids[t] < 0 || b->ids[t] >= V)
            return vl3_error_set(reterr, -EINVAL, "token id %d at %d out of range 0..%d",
                                 (int)b->ids[t], t, V - 1);
    int row = 0, need = 0;
    for (int i = 0; i < n_runs; i++) {
        int s = b->seq[i], n = b->n_seq_tokens[i];
        if (s < 0 || s >= ctx->n_seq)
            return vl3_error_set(reterr, -EINVAL, "sequence %d out of range 0..%d", s,
                                 ctx->n_seq - 1);
        if (n < 1 || n > T - row)
            return vl3_error_set(reterr, -EINVAL, "sequence %d: %d tokens do not fit the batch",
                                 s, n);
        for (int j = 0; j < i; j++)
            if (b->seq[j] == s)
                return vl3_error_set(reterr, -EINVAL, "sequence %d appears twice in a batch", s);
        if ((long long)ctx->seq_len[s] + n > ctx->n_ctx)
            return vl3_error_set(reterr, VL3_E_LIMIT,
                                 "%d tokens do not fit: sequence %d holds %d of %d", n, s,
                                 ctx->seq_len[s], ctx->n_ctx);
        need += pages_needed(ctx, s, n);
        row += n;
    }
    if (row != T)
        return vl3_error_set(reterr, -EINVAL, "the sequences hold %d tokens, the batch %d", row,
                             T);
    if (need > ctx->n_free)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "the KV cache is full: the batch needs %d pages, %d of %d are free",
                             need, ctx->n_free, ctx->n_pages);
    if (b->n_visual > 0) {
        if (!b->visual || !b->visual_index || b->visual_dim != C || b->n_visual > T)
            return vl3_error_set(reterr, -EINVAL,
                                 "visual rows of width %d do not match the LLM width %d",
                                 b->visual_dim, C);
        for (int j = 0; j < b->n_visual; j++) {
            if (b->visual_index[j] < 0 || b->visual_index[j] >= T ||
                (j > 0 && b->visual_index[j] <= b->visual_index[j - 1]))
                return vl3_error_set(reterr, -EINVAL,
                                     "visual row %d: index %d not increasing within 0..%d", j,
                                     (int)b->visual_index[j], T - 1);
            ctx->vis_idx_host[j] = b->visual_index[j];
        }
    }
    /* nothing can fail from here on but the backend: take the pages and stage the rows */
    int ps = ctx->page_size, r;
    row = 0;
    for (int i = 0; i < n_runs; i++) {
        struct vl3__attn_seq *as = &ctx->aseqs[i];
        int s = b->seq[i];
        ctx->batch_seq[i] = s;
        as->q_row = row;
        as->n_q = b->n_seq_tokens[i];
        if ((r = seq_grow(ctx, s, as->n_q, reterr)) < 0)
            return r;
        const int32_t *tb = ctx->table + (size_t)s * ctx->max_pages;
        as->n_past = ctx->seq_len[s];
        as->pages = tb;
        for (int k = 0; k < as->n_q; k++) {
            int t = row + k, p = as->n_past + k;
            ctx->ids_host[t] = b->ids[t];
            ctx->pos_host[t] = p;
            ctx->slots_host[t] = tb[p / ps] * ps + p % ps;
        }
        row += as->n_q;
    }
    if ((r = vl3__llm_forward(ctx, T, n_runs, b->visual, b->n_visual, ret_logits != NULL,
                              reterr)) < 0)
        return r;
    if (ret_logits)
        *ret_logits = ctx->logits_host;
    return 0;
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
    int need = pages_needed(ctx, seq, n_ids);
    if (need > ctx->n_free)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "the KV cache is full: the prompt needs %d pages, %d of %d are free",
                             need, ctx->n_free, ctx->n_pages);
    int vj = 0;
    for (int t0 = 0; t0 < n_ids; t0 += ctx->n_batch) {
        int T = n_ids - t0 < ctx->n_batch ? n_ids - t0 : ctx->n_batch;
        /* this chunk's visual rows (indices [t0, t0 + T)), made chunk-relative in the staging
         * array vl3_decode copies them to anyway */
        int vstart = vj;
        while (vis && vj < vis->n && vis->index[vj] < t0 + T) {
            ctx->vis_idx_host[vj - vstart] = (int32_t)(vis->index[vj] - t0);
            vj++;
        }
        int n_vis = vj - vstart;
        vl3_batch b = {
            .n_tokens = T,
            .ids = ids + t0,
            .n_seqs = 1,
            .seq = &seq,
            .n_seq_tokens = &T,
            .visual = n_vis ? vis->rows + (size_t)vstart * vis->dim : NULL,
            .visual_index = n_vis ? ctx->vis_idx_host : NULL,
            .n_visual = n_vis,
            .visual_dim = vis ? vis->dim : 0,
        };
        int r = vl3_decode(ctx, &b, ret_logits, reterr);
        if (r < 0)
            return r;
    }
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
    for (int i = 0; i < n; i++)
        ctx->one_host[i] = 1;
    vl3_batch b = {.n_tokens = n, .ids = ids, .n_seqs = n, .seq = seqs,
                   .n_seq_tokens = ctx->one_host};
    return vl3_decode(ctx, &b, ret_logits, reterr);
}
