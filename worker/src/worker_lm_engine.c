/* worker_lm_engine.c: the worker_lm contract on the engine's LLM API: one vl3_ctx whose
 * sequences are the slots; begin() empties a slot or shares another's prompt prefix
 * (vl3_ctx_seq_fork + vl3_ctx_seq_truncate: the prefix's KV pages are shared, not computed
 * again); batch() packs the runs into one vl3_batch (prompt chunks, decode tokens, the visual
 * rows of the chunks staged in one buffer) for vl3_decode; one vl3_sampler per slot, created
 * from the model's generation config when a sequence begins (greedy when its temperature is 0).
 * Sampling follows vl3_generate: the first token is sampled from the prompt's last logits, and
 * every sampled id joins the repetition-penalty history (prompt ids too when the layout says so).
 * Sampling goes through vl3_ctx_sample: on a backend with a sampling op the logits stay on the
 * device and only the ids come back.
 * Builds without the LLM API (engine_llm.h without vl3_generate) answer VL3_E_UNSUPPORTED. */
#include "worker_lm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef VL3_GEN_MAX_STOP

struct lm_engine {
    vl3_ctx *ctx;
    const vl3_model *model;
    vl3_gen_params gen;
    vl3_sampler **samp; /* [n_slots] */
    int n_slots, n_vocab, rows;
    /* one batch, packed: ids, runs, visual rows and their batch indices */
    int32_t *ids, *vis_index;
    int *seqs, *counts;
    vl3_sampler **row_samp; /* [n_slots] the batch's samplers by run (NULL: not sampled) */
    float *vis;
    size_t vis_cap; /* floats */
};

static int eng_begin(void *impl, int slot, const struct worker_seq *q, int src, int share_len,
                     vl3_error *reterr)
{
    struct lm_engine *e = impl;
    vl3_sampler_params sp = e->gen.sampling;
    if (q->temperature <= 0) { /* greedy as `vl3 run --greedy`: argmax, no penalty */
        sp.greedy = 1;
        sp.repetition_penalty = 1.0f;
    } else {
        sp.greedy = 0;
        sp.temperature = q->temperature;
    }
    sp.seed = q->seed;
    vl3_sampler_free(e->samp[slot]);
    e->samp[slot] = NULL;
    int rc = vl3_sampler_new(&sp, e->n_vocab, &e->samp[slot], reterr);
    if (rc < 0)
        return rc;
    if (src >= 0)
        rc = vl3_ctx_seq_fork(e->ctx, src, slot);
    else
        rc = vl3_ctx_seq_reset(e->ctx, slot);
    if (rc == 0 && src >= 0)
        rc = vl3_ctx_seq_truncate(e->ctx, slot, share_len);
    if (rc < 0)
        return vl3_error_set(reterr, rc, "cannot prepare sequence %d (from %d, %d tokens)", slot,
                             src, share_len);
    if (e->gen.penalize_prompt)
        for (int i = 0; i < q->n_ids; i++)
            (void)vl3_sampler_accept(e->samp[slot], q->ids[i]);
    return 0;
}

static int eng_batch(void *impl, const struct worker_lm_run *runs, int n_runs, int32_t *ret_ids,
                     vl3_error *reterr)
{
    struct lm_engine *e = impl;
    int T = 0, n_vis = 0, dim = 0;
    for (int k = 0; k < n_runs; k++) {
        const struct worker_lm_run *r = &runs[k];
        if (r->n < 1 || T + r->n > e->rows || k >= e->n_slots ||
            (r->n_visual > 0 && dim && r->visual_dim != dim))
            return vl3_error_set(reterr, -EINVAL, "invalid batch");
        memcpy(e->ids + T, r->ids, sizeof(int32_t) * (size_t)r->n);
        e->seqs[k] = r->slot;
        e->counts[k] = r->n;
        if (r->n_visual > 0) {
            dim = r->visual_dim;
            size_t need = (size_t)(n_vis + r->n_visual) * (size_t)dim;
            if (need > e->vis_cap) {
                size_t cap = (size_t)e->rows * (size_t)dim; /* at most one row per token */
                float *nv = realloc(e->vis, sizeof(float) * (cap > need ? cap : need));
                if (!nv)
                    return vl3_error_set(reterr, -ENOMEM, "out of memory");
                e->vis = nv;
                e->vis_cap = cap > need ? cap : need;
            }
            memcpy(e->vis + (size_t)n_vis * (size_t)dim, r->visual,
                   sizeof(float) * (size_t)r->n_visual * (size_t)dim);
            for (int v = 0; v < r->n_visual; v++)
                e->vis_index[n_vis + v] = T + (int32_t)(r->visual_pos[v] - r->pos0);
            n_vis += r->n_visual;
        }
        T += r->n;
    }
    vl3_batch b = {.n_tokens = T, .ids = e->ids, .n_seqs = n_runs, .seq = e->seqs,
                   .n_seq_tokens = e->counts, .visual = n_vis ? e->vis : NULL,
                   .visual_index = n_vis ? e->vis_index : NULL, .n_visual = n_vis,
                   .visual_dim = dim};
    int rc = vl3_decode(e->ctx, &b, NULL, reterr), any = 0;
    if (rc < 0)
        return rc;
    for (int k = 0; k < n_runs; k++) {
        e->row_samp[k] = runs[k].sample ? e->samp[runs[k].slot] : NULL;
        any |= runs[k].sample;
    }
    if (any && (rc = vl3_ctx_sample(e->ctx, e->row_samp, n_runs, ret_ids, reterr)) < 0)
        return rc;
    for (int k = 0; k < n_runs; k++)
        if (e->row_samp[k])
            (void)vl3_sampler_accept(e->row_samp[k], ret_ids[k]);
    return 0;
}

static void eng_free(void *impl)
{
    struct lm_engine *e = impl;
    if (!e)
        return;
    for (int i = 0; e->samp && i < e->n_slots; i++)
        vl3_sampler_free(e->samp[i]);
    free(e->samp);
    free(e->ids), free(e->vis_index), free(e->seqs), free(e->counts), free(e->vis);
    free(e->row_samp);
    vl3_ctx_free(e->ctx);
    free(e);
}

static const struct worker_lm_ops eng_ops = {eng_begin, eng_batch, eng_free};

int worker_lm_engine_new(const vl3_model *model, int n_slots, int n_ctx, struct worker_lm **ret,
                         vl3_error *reterr)
{
    if (!model || n_slots <= 0 || n_ctx < 0)
        return vl3_error_set(reterr, -EINVAL, "invalid language model parameters");
    int rc = -ENOMEM;
    struct worker_lm *lm = calloc(1, sizeof(*lm));
    struct lm_engine *e = calloc(1, sizeof(*e));
    if (!lm || !e)
        goto fail;
    e->model = model;
    e->n_slots = n_slots;
    e->gen = vl3_gen_params_from_model(model);
    if (!(e->samp = calloc((size_t)n_slots, sizeof(*e->samp))))
        goto fail;
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_seq = n_slots;
    cp.n_ctx = n_ctx;
    if ((rc = vl3_ctx_new(model, &cp, &e->ctx, reterr)) < 0)
        goto fail_quiet;
    e->n_vocab = vl3_ctx_n_vocab(e->ctx);
    vl3_ctx_params got = vl3_ctx_get_params(e->ctx);
    e->rows = got.n_batch > n_slots ? got.n_batch : n_slots; /* vl3_decode's most tokens */
    e->ids = malloc(sizeof(int32_t) * (size_t)e->rows);
    e->vis_index = malloc(sizeof(int32_t) * (size_t)e->rows);
    e->seqs = malloc(sizeof(int) * (size_t)n_slots);
    e->counts = malloc(sizeof(int) * (size_t)n_slots);
    e->row_samp = calloc((size_t)n_slots, sizeof(*e->row_samp));
    if (!e->ids || !e->vis_index || !e->seqs || !e->counts || !e->row_samp) {
        rc = -ENOMEM;
        goto fail;
    }
    lm->ops = &eng_ops;
    lm->impl = e;
    lm->n_slots = n_slots;
    lm->n_ctx = got.n_ctx;
    lm->n_batch = e->rows;
    lm->n_stop = e->gen.n_stop < WORKER_LM_MAX_STOP ? e->gen.n_stop : WORKER_LM_MAX_STOP;
    memcpy(lm->stop_ids, e->gen.stop_ids, sizeof(int32_t) * (size_t)lm->n_stop);
    *ret = lm;
    return 0;
fail:
    vl3_error_set(reterr, rc, "out of memory for the language model state");
fail_quiet:
    eng_free(e);
    free(lm);
    return rc;
}

#else

int worker_lm_engine_new(const vl3_model *model, int n_slots, int n_ctx, struct worker_lm **ret,
                         vl3_error *reterr)
{
    (void)model;
    (void)n_slots;
    (void)n_ctx;
    (void)ret;
    return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                         "this build has no language model (engine LLM API missing)");
}

#endif

void worker_lm_free(struct worker_lm *lm)
{
    if (!lm)
        return;
    if (lm->ops && lm->ops->free)
        lm->ops->free(lm->impl);
    free(lm);
}
