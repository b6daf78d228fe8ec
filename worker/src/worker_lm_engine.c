/* worker_lm_engine.c: the worker_lm contract on the engine's LLM API: one vl3_ctx whose
 * sequences are the slots, vl3_prefill for start (visual rows replace the placeholder
 * embeddings), vl3_decode_step for a batched step, one vl3_sampler per slot created from the
 * model's generation config when a sequence starts (greedy when its temperature is 0).
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
    vl3_sampler **row_samp; /* [n_slots] a step's samplers in batch order */
    int n_slots, n_vocab;
};

static int eng_start(void *impl, int slot, const struct worker_seq *q, int32_t *ret_id,
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
    if ((rc = vl3_ctx_seq_reset(e->ctx, slot)) < 0)
        return vl3_error_set(reterr, rc, "cannot reset sequence %d", slot);
    vl3_visual_rows vis = {q->visual, q->visual_pos, q->n_visual, q->visual_dim};
    rc = vl3_prefill(e->ctx, slot, q->ids, q->n_ids, q->n_visual > 0 ? &vis : NULL, NULL,
                     reterr);
    if (rc < 0)
        return rc;
    if (e->gen.penalize_prompt)
        for (int i = 0; i < q->n_ids; i++)
            (void)vl3_sampler_accept(e->samp[slot], q->ids[i]);
    int32_t id;
    if ((rc = vl3_ctx_sample(e->ctx, &e->samp[slot], 1, &id, reterr)) < 0)
        return rc;
    (void)vl3_sampler_accept(e->samp[slot], id);
    *ret_id = id;
    return 0;
}

static int eng_step(void *impl, const int *slots, const int32_t *ids, int n, int32_t *ret_ids,
                    vl3_error *reterr)
{
    struct lm_engine *e = impl;
    int rc = vl3_decode_step(e->ctx, slots, ids, n, NULL, reterr);
    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++)
        e->row_samp[i] = e->samp[slots[i]];
    if ((rc = vl3_ctx_sample(e->ctx, e->row_samp, n, ret_ids, reterr)) < 0)
        return rc;
    for (int i = 0; i < n; i++)
        (void)vl3_sampler_accept(e->row_samp[i], ret_ids[i]);
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
    free(e->row_samp);
    vl3_ctx_free(e->ctx);
    free(e);
}

static const struct worker_lm_ops eng_ops = {eng_start, eng_step, eng_free};

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
    if (!(e->samp = calloc((size_t)n_slots, sizeof(*e->samp))) ||
        !(e->row_samp = calloc((size_t)n_slots, sizeof(*e->row_samp))))
        goto fail;
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_seq = n_slots;
    cp.n_ctx = n_ctx;
    if ((rc = vl3_ctx_new(model, &cp, &e->ctx, reterr)) < 0)
        goto fail_quiet;
    e->n_vocab = vl3_ctx_n_vocab(e->ctx);
    lm->ops = &eng_ops;
    lm->impl = e;
    lm->n_slots = n_slots;
    lm->n_ctx = vl3_ctx_get_params(e->ctx).n_ctx;
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
