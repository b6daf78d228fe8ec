/* llm.c: the Qwen2 decoder forward pass, written once against the backend vtable (spec §6).
 *
 * Per layer: xn = RMSNorm(x); qkv = xn Wqkv^T + bqkv; RoPE (rotate-half, theta from the config)
 * on the q and k heads at each token's position; k, v rows appended to each sequence's cache;
 * causal GQA attention over the cache; x += att Wo^T; xn = RMSNorm(x); x += (silu(gate) * up)
 * Wdown^T. Then the final RMSNorm and the lm_head on the last row of each sequence only.
 *
 * A batch is either one sequence's chunk of T prompt tokens (prefill) or one token of each of B
 * sequences (decode): the matrix products run once over all rows, attention once per layer with a
 * descriptor per sequence. Everything lives in the ctx arena; nothing is allocated here. */
#include <errno.h>
#include <math.h>

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

int vl3__llm_forward(struct vl3_ctx *ctx, int T, int n_seqs, const float *vis_data,
                     const int64_t *vis_rows, int n_vis, int64_t vis_off, vl3_error *reterr)
{
    const vl3__backend_ops *ops = ctx->ops;
    void *b = ctx->bctx;
    const vl3_model *m = ctx->model;
    const struct vl3__llm_hparams *hp = &m->llm;
    const struct vl3__llm_bweights *w = m->backend_weights;
    int C = hp->hidden, H = hp->n_heads, Hkv = hp->n_kv_heads, D = hp->head_dim;
    int I = hp->intermediate, V = hp->vocab, HD = H * D, kvd = ctx->kv_dim, qkvd = ctx->qkv_dim;
    size_t cache_seq = (size_t)ctx->n_ctx * kvd * 4;             /* bytes of one slot */
    size_t cache_layer = cache_seq * (size_t)ctx->n_seq;         /* bytes of one layer */

    TRY(ops->upload(b, ctx->ids, ctx->ids_host, (size_t)T * 4));
    TRY(ops->upload(b, ctx->pos, ctx->pos_host, (size_t)T * 4));
    TRY(ops->embed(b, ctx->x, w->embed, ctx->ids, T, C));
    for (int j = 0; j < n_vis; j++)
        TRY(ops->upload(b, off(ctx->x, (size_t)(vis_rows[j] - vis_off) * C * 4),
                        vis_data + (size_t)j * C, (size_t)C * 4));

    for (int l = 0; l < hp->n_layers; l++) {
        const struct vl3__llm_blayer *L = &w->layers[l];
        void *kc = off(ctx->k_cache, (size_t)l * cache_layer);
        void *vc = off(ctx->v_cache, (size_t)l * cache_layer);
        TRY(ops->rmsnorm(b, ctx->xn, ctx->x, L->attn_norm, T, C, hp->rms_eps));
        TRY(ops->matmul(b, ctx->qkv, ctx->xn, L->wqkv, L->bqkv, T, C, qkvd, 0, MMW));
        TRY(ops->rope(b, ctx->qkv, T, qkvd, H, D, ctx->pos, hp->rope_theta));
        TRY(ops->rope(b, off(ctx->qkv, (size_t)HD * 4), T, qkvd, Hkv, D, ctx->pos,
                      hp->rope_theta));
        for (int i = 0; i < n_seqs; i++) {
            struct vl3__attn_seq *as = &ctx->aseqs[i];
            int s = ctx->batch_seq[i], past = ctx->seq_len[s];
            size_t dst = (size_t)s * cache_seq + (size_t)past * kvd * 4;
            size_t src = (size_t)as->q_row * qkvd * 4;
            TRY(ops->copy_rows(b, off(kc, dst), (size_t)kvd * 4, off(ctx->qkv, src + (size_t)HD * 4),
                               (size_t)qkvd * 4, as->n_q, (size_t)kvd * 4));
            TRY(ops->copy_rows(b, off(vc, dst), (size_t)kvd * 4,
                               off(ctx->qkv, src + (size_t)(HD + kvd) * 4), (size_t)qkvd * 4,
                               as->n_q, (size_t)kvd * 4));
            as->n_past = past;
            as->k = off(kc, (size_t)s * cache_seq);
            as->v = off(vc, (size_t)s * cache_seq);
        }
        struct vl3__attn_args aa = {
            .out = ctx->att,
            .q = ctx->qkv,
            .q_stride = qkvd,
            .out_stride = HD,
            .n_heads = H,
            .n_kv_heads = Hkv,
            .head_dim = D,
            .scale = (float)(1.0 / sqrt((double)D)),
            .seqs = ctx->aseqs,
            .n_seqs = n_seqs,
            .work = ctx->work,
            .work_bytes = ctx->work_bytes,
        };
        TRY(ops->attention(b, &aa));
        TRY(ops->matmul(b, ctx->x, ctx->att, L->wo, NULL, T, HD, C, 1, MMW));
        TRY(ops->rmsnorm(b, ctx->xn, ctx->x, L->ffn_norm, T, C, hp->rms_eps));
        TRY(ops->matmul(b, ctx->gu, ctx->xn, L->w_gu, NULL, T, C, 2 * I, 0, MMW));
        TRY(ops->silu_mul(b, ctx->act, ctx->gu, T, I));
        TRY(ops->matmul(b, ctx->x, ctx->act, L->w_down, NULL, T, I, C, 1, MMW));
    }
    for (int i = 0; i < n_seqs; i++) {
        const struct vl3__attn_seq *as = &ctx->aseqs[i];
        ctx->seq_len[ctx->batch_seq[i]] += as->n_q;
        int last = as->q_row + as->n_q - 1;
        if (last != i)
            TRY(ops->copy_rows(b, off(ctx->x, (size_t)i * C * 4), 0,
                               off(ctx->x, (size_t)last * C * 4), 0, 1, (size_t)C * 4));
    }
    TRY(ops->rmsnorm(b, ctx->xn, ctx->x, w->norm, n_seqs, C, hp->rms_eps));
    TRY(ops->matmul(b, ctx->logits, ctx->xn, w->lm_head, NULL, n_seqs, C, V, 0, MMW));
    TRY(ops->download(b, ctx->logits_host, ctx->logits, (size_t)n_seqs * V * 4));
    return 0;
}
