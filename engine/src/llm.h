/* llm.h: internal structures of the LLM forward pass shared by model_backend.c (weight upload),
 * ctx.c (contexts, arena), llm.c (forward) and generate.c. Included only inside engine/src.
 *
 * Backend weights: one device slab per model holding every LLM matrix in the backend's weight
 * format and every vector (norm weights, biases) in f32. q/k/v are fused into one (Hq+2Hkv)*D x C
 * matrix with one bias, gate/up into one 2I x C matrix (gate rows first), so a layer is four
 * matrix products. */
#ifndef VL3_LLM_H
#define VL3_LLM_H

#include "backend.h"
#include "model.h"

struct vl3__llm_blayer {
    void *attn_norm; /* (C) f32 */
    void *wqkv;      /* ((H+2Hkv)*D, C) weight format: wq rows, then wk, then wv */
    void *bqkv;      /* ((H+2Hkv)*D) f32 */
    void *wo;        /* (C, H*D) weight format */
    void *ffn_norm;  /* (C) f32 */
    void *w_gu;      /* (2I, C) weight format: gate rows, then up */
    void *w_down;    /* (C, I) weight format */
};

struct vl3__llm_bweights {
    void *slab;      /* the one device allocation (owned) */
    size_t slab_bytes;
    void *embed;     /* (V, C) weight format */
    void *lm_head;   /* (V, C) weight format; == embed when tied */
    void *norm;      /* (C) f32 */
    struct vl3__llm_blayer *layers; /* [L], host array (owned) */
};

/* Convert/upload the LLM weights of m (host views in m->w) into m->backend_weights on m->ops.
 * Returns 0, -ENOMEM, VL3_E_UNSUPPORTED (a dtype the backend cannot convert). */
int vl3__llm_weights_upload(vl3_model *m, vl3_error *reterr);
void vl3__llm_weights_free(vl3_model *m);

/* The context (ctx.c). Device pointers are opaque (see backend.h). */
struct vl3_ctx {
    const vl3_model *model;
    const vl3__backend_ops *ops;
    void *bctx;
    int n_ctx, n_seq, n_batch;
    int rows;          /* activation rows: max(n_batch, n_seq) */
    int qkv_dim;       /* (H + 2 Hkv) * D */
    int kv_dim;        /* Hkv * D */
    size_t asz;        /* bytes per activation element (the backend's act_dtype) */
    int kv_dtype;      /* the KV pools' dtype (the backend's kv_dtype at creation) */
    size_t kvsz;       /* bytes per KV element */
    /* paged KV cache (backend.h): pools (L, n_pages, page_size, kv_dim) in act dtype */
    int page_size, n_pages, max_pages; /* max_pages: block-table entries per sequence */
    /* device arena */
    void *arena;
    size_t arena_bytes;
    void *k_pool, *v_pool;
    void *x;         /* (rows, C) residual stream */
    void *xn;        /* (rows, C) normalised */
    void *qkv;       /* (rows, qkv_dim) */
    void *att;       /* (rows, H*D) */
    void *gu;        /* (rows, 2I) */
    void *act;       /* (rows, I) */
    void *logits;    /* (n_seq, V) f32 */
    void *ids;       /* (rows) int32 */
    void *pos;       /* (rows) int32 */
    void *slots;     /* (rows) int32: pool slot of each new token */
    void *vis;       /* (rows, C) f32 staged visual rows */
    void *vis_idx;   /* (rows) int32 batch rows the visual rows replace */
    void *seqs_dev;  /* (n_seq, 4) int32 attention descriptors */
    void *tables_dev; /* (n_seq, max_pages) int32 block tables of the batch's sequences */
    void *work;      /* attention scratch */
    size_t work_bytes;
    void *mm_work;   /* matmul scratch */
    size_t mm_work_bytes;
    /* host state */
    float *logits_host;          /* (n_seq, V) */
    int n_logits;                /* logits rows of the last forward (device; 0 = none yet) */
    int logits_on_host;          /* whether logits_host holds them too */
    struct vl3__sample_row *samp_rows; /* [n_seq] vl3_ctx_sample's row parameters */
    int32_t *samp_ids;           /* [n_seq] the ids of its rows */
    int32_t *samp_hist;          /* the rows' penalty histories, concatenated (grown) */
    size_t samp_hist_cap;
    int32_t *ids_host, *pos_host, *slots_host, *vis_idx_host; /* (rows) */
    int32_t *seqs_host;           /* (n_seq, 4) */
    int32_t *tables_host;         /* (n_seq, max_pages) batch copy */
    struct vl3__attn_seq *aseqs;  /* [n_seq] */
    int *seq_len;                 /* [n_seq] tokens in each sequence */
    int *seq_pages;               /* [n_seq] pages held by each sequence */
    int32_t *table;               /* (n_seq, max_pages) block table of each sequence */
    int *batch_seq;               /* [n_seq] scratch: sequence of each batch run */
    int *one_host;                /* [n_seq] all 1: token counts of a decode step */
    int *page_ref;                /* [n_pages] sequences holding each page (0 = free) */
    int32_t *free_pages;          /* [n_pages] stack of free pages */
    int n_free;
};

/* One forward over a batch already staged in the ctx: ids_host/pos_host/slots_host (T rows),
 * n_runs sequence runs batch_seq[i] with their rows aseqs[i] (q_row, n_q, n_past, pages), and
 * n_vis visual rows vis_rows (n_vis, C) f32 host replacing the embeddings of rows
 * vis_idx_host[j]. Pages for the new tokens are in place. Stores K/V, advances seq_len and leaves
 * the last row's logits of each run in ctx->logits rows 0..n_runs-1 (device), downloaded to
 * ctx->logits_host when download_logits is set (else they stay on the device for
 * vl3_ctx_sample). */
int vl3__llm_forward(struct vl3_ctx *ctx, int T, int n_runs, const float *vis_rows, int n_vis,
                     int download_logits, vl3_error *reterr);

#endif
