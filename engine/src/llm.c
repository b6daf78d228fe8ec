/* llm.c: the Qwen2 decoder forward pass, written once against the backend vtable (spec §6).
 *
 * Per layer: xn = RMSNorm(x); qkv = xn Wqkv^T + bqkv; RoPE (rotate-half, theta from the config)
 * on the q and k heads at each token's position; k, v rows appended to each sequence's cache;
 * causal GQA attention over the cache; x += att Wo^T; xn = RMSNorm(x); x += (silu(gate) * up)
 * Wdown^T. Then the final RMSNorm and the lm_head on the last row of each sequence only.
 *
 * A batch mixes runs of several sequences: prefill chunks of many tokens and single decode tokens
 * (vl3_decode, ctx.c). The matrix products run once over all rows; the new k/v rows go into the
 * paged KV pool in one kv_store per layer; attention runs once per layer with a descriptor and a
 * block table per run. Everything lives in the ctx arena; nothing is allocated here, and the
 * host waits only for the logits download at the end (skipped when the caller samples on the
 * device with vl3_ctx_sample). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "llm.h"
#include "vl3/engine.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int r_ = (expr);                                                                           \
        if (r_ < 0)                                                                                \
            return vl3_error_set(reterr, r_, "backend op failed: %s", #expr);                      \
    } while (0)

#define MMW ctx->mm_work, ctx->mm_work_bytes

static void *off(void *p, size_t bytes)
{
    return (char *)p + bytes;
}

int vl3__llm_forward(struct vl3_ctx *ctx, int T, int n_runs, const float *vis_rows, int n_vis,
                     int download_logits, vl3_error *reterr)
{
    const vl3__backend_ops *ops = ctx->ops;
    void *b = ctx->bctx;
    const vl3_model *m = ctx->model;
    const struct vl3__llm_hparams *hp = &m->llm;
    const struct vl3__llm_bweights *w = m->backend_weights;
    int C = hp->hidden, H = hp->n_heads, Hkv = hp->n_kv_heads, D = hp->head_dim;
    int I = hp->intermediate, V = hp->vocab, HD = H * D, kvd = ctx->kv_dim, qkvd = ctx->qkv_dim;
    size_t asz = ctx->asz;
    size_t pool_layer = (size_t)ctx->n_pages * ctx->page_size * kvd * ctx->kvsz; /* per layer */
    int mp = ctx->max_pages;

    /* stage the batch: ids, positions, slots, descriptors and block tables (one upload each) */
    for (int i = 0; i < n_runs; i++) {
        const struct vl3__attn_seq *as = &ctx->aseqs[i];
        int32_t *d = ctx->seqs_host + 4 * i;
        d[0] = as->q_row, d[1] = as->n_q, d[2] = as->n_past, d[3] = 0;
        memcpy(ctx->tables_host + (size_t)i * mp, as->pages, sizeof(int32_t) * (size_t)mp);
    }
    TRY(ops->upload(b, ctx->ids, ctx->ids_host, (size_t)T * 4));
    TRY(ops->upload(b, ctx->pos, ctx->pos_host, (size_t)T * 4));
    TRY(ops->upload(b, ctx->slots, ctx->slots_host, (size_t)T * 4));
    TRY(ops->upload(b, ctx->seqs_dev, ctx->seqs_host, (size_t)n_runs * 16));
    TRY(ops->upload(b, ctx->tables_dev, ctx->tables_host, (size_t)n_runs * mp * 4));
    TRY(ops->embed(b, ctx->x, w->embed, ctx->ids, T, C));
    if (n_vis > 0) {
        TRY(ops->upload(b, ctx->vis, vis_rows, (size_t)n_vis * C * 4));
        TRY(ops->upload(b, ctx->vis_idx, ctx->vis_idx_host, (size_t)n_vis * 4));
        TRY(ops->scatter_rows(b, ctx->x, ctx->vis, ctx->vis_idx, n_vis, C));
    }

    for (int l = 0; l < hp->n_layers; l++) {
        const struct vl3__llm_blayer *L = &w->layers[l];
        void *kp = off(ctx->k_pool, (size_t)l * pool_layer);
        void *vp = off(ctx->v_pool, (size_t)l * pool_layer);
        TRY(ops->rmsnorm(b, ctx->xn, ctx->x, L->attn_norm, T, C, hp->rms_eps));
        TRY(ops->matmul(b, ctx->qkv, ctx->xn, L->wqkv, L->bqkv, T, C, qkvd, 0, MMW));
        TRY(ops->rope(b, ctx->qkv, T, qkvd, H, D, ctx->pos, hp->rope_theta));
        TRY(ops->rope(b, off(ctx->qkv, (size_t)HD * asz), T, qkvd, Hkv, D, ctx->pos,
                      hp->rope_theta));
        TRY(ops->kv_store(b, kp, vp, ctx->qkv, qkvd, HD, HD + kvd, kvd, ctx->slots, T,
                          ctx->kv_dtype));
        struct vl3__attn_args aa = {
            .out = ctx->att,
            .q = ctx->qkv,
            .q_stride = qkvd,
            .out_stride = HD,
            .n_heads = H,
            .n_kv_heads = Hkv,
            .head_dim = D,
            .scale = (float)(1.0 / sqrt((double)D)),
            .k_pages = kp,
            .v_pages = vp,
            .page_size = ctx->page_size,
            .kv_dtype = ctx->kv_dtype,
            .seqs = ctx->aseqs,
            .n_seqs = n_runs,
            .seqs_dev = ctx->seqs_dev,
            .tables_dev = ctx->tables_dev,
            .max_pages = mp,
            .work = ctx->work,
            .work_bytes = ctx->work_bytes,
        };
        TRY(ops->attention(b, &aa));
        TRY(ops->matmul(b, ctx->x, ctx->att, L->wo, NULL, T, HD, C, 1, MMW));
        TRY(ops->rmsnorm(b, ctx->xn, ctx->x, L->ffn_norm, T, C, hp->rms_eps));
        /* the whole MLP in one op where the backend offers it for this call (the gate/up
         * output handed to the down product packed), else the gate/up product and SwiGLU fused
         * where offered, else the ops apart */
        int mlp = ops->mlp_swiglu ? ops->mlp_swiglu(b, ctx->x, ctx->xn, L->w_gu, L->w_down, T, C,
                                                    I)
                                  : -ENOTSUP;
        if (mlp != -ENOTSUP) {
            TRY(mlp);
            continue;
        }
        int fused = ops->matmul_swiglu ? ops->matmul_swiglu(b, ctx->act, ctx->xn, L->w_gu, T, C,
                                                            I, MMW)
                                       : -ENOTSUP;
        if (fused == -ENOTSUP) {
            TRY(ops->matmul(b, ctx->gu, ctx->xn, L->w_gu, NULL, T, C, 2 * I, 0, MMW));
            TRY(ops->silu_mul(b, ctx->act, ctx->gu, T, I));
        } else {
            TRY(fused);
        }
        TRY(ops->matmul(b, ctx->x, ctx->act, L->w_down, NULL, T, I, C, 1, MMW));
    }
    for (int i = 0; i < n_runs; i++) {
        const struct vl3__attn_seq *as = &ctx->aseqs[i];
        ctx->seq_len[ctx->batch_seq[i]] += as->n_q;
        int last = as->q_row + as->n_q - 1;
        if (last != i)
            TRY(ops->copy_rows(b, off(ctx->x, (size_t)i * C * asz), 0,
                               off(ctx->x, (size_t)last * C * asz), 0, 1, (size_t)C * asz));
    }
    TRY(ops->rmsnorm(b, ctx->xn, ctx->x, w->norm, n_runs, C, hp->rms_eps));
    /* the logits are f32 on every backend (matmul_f32 where activations are not f32) */
    TRY((ops->matmul_f32 ? ops->matmul_f32 : ops->matmul)(b, ctx->logits, ctx->xn, w->lm_head,
                                                          NULL, n_runs, C, V, 0, MMW));
    ctx->n_logits = n_runs;
    ctx->logits_on_host = 0;
    if (download_logits) {
        TRY(ops->download(b, ctx->logits_host, ctx->logits, (size_t)n_runs * V * 4));
        ctx->logits_on_host = 1;
    }
    return 0;
}
