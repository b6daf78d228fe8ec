/* generate.c: vl3_generate, the prefill + sample + decode loop used by `vl3 run` and the worker,
 * and the generation defaults taken from a model's generation_config.json (spec §8). Sampling
 * goes through vl3_ctx_sample: on a backend with a sampling op (argmax for greedy) the logits
 * never leave the device; only the prompt logits a caller asks for are downloaded. */
#include <errno.h>
#include <string.h>

#include "llm.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define GEN_DEFAULT_MAX_NEW 1024

vl3_gen_params vl3_gen_params_from_model(const vl3_model *model)
{
    vl3_gen_params p;
    memset(&p, 0, sizeof(p));
    p.sampling = vl3_sampler_params_default();
    p.max_new_tokens = GEN_DEFAULT_MAX_NEW;
    if (!model)
        return p;
    const struct vl3__gen_defaults *g = &model->gen;
    p.sampling.greedy = !g->do_sample;
    if (g->temperature > 0)
        p.sampling.temperature = g->temperature;
    if (g->top_k >= 0)
        p.sampling.top_k = g->top_k;
    if (g->top_p > 0 && g->top_p <= 1)
        p.sampling.top_p = g->top_p;
    if (g->repetition_penalty > 0)
        p.sampling.repetition_penalty = g->repetition_penalty;
    for (int i = 0; i < g->n_eos && p.n_stop < VL3_GEN_MAX_STOP; i++)
        p.stop_ids[p.n_stop++] = g->eos_ids[i];
    if (p.n_stop == 0 && model->cfg.eos_id >= 0)
        p.stop_ids[p.n_stop++] = model->cfg.eos_id;
    p.penalize_prompt = model->layout == VL3__LAYOUT_NATIVE;
    return p;
}

int vl3_generate(vl3_ctx *ctx, const int32_t *ids, int n_ids, const vl3_visual_rows *vis,
                 const vl3_gen_params *p, vl3_token_cb cb, void *user, vl3_gen_result *ret_result,
                 vl3_error *reterr)
{
    if (!ctx || !ids || n_ids < 1 || !p)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (p->max_new_tokens < 1 || p->n_stop < 0 || p->n_stop > VL3_GEN_MAX_STOP)
        return vl3_error_set(reterr, -EINVAL, "max_new_tokens must be positive");
    int V = ctx->model->llm.vocab, seq = p->seq, r;
    vl3_gen_result res = {.n_prompt = n_ids};
    vl3_sampler *s = NULL;
    r = vl3_sampler_new(&p->sampling, V, &s, reterr);
    if (r < 0)
        return r;
    if (p->penalize_prompt)
        for (int i = 0; i < n_ids; i++)
            if (ids[i] >= 0 && ids[i] < V)
                (void)vl3_sampler_accept(s, ids[i]);
    if ((r = vl3_ctx_seq_reset(ctx, seq)) < 0) {
        vl3_error_set(reterr, r, "sequence %d out of range", seq);
        goto out;
    }
    const float *logits = NULL;
    double t0 = vl3_time_s();
    int want = p->prompt_logits || p->step_logits;
    if ((r = vl3_prefill(ctx, seq, ids, n_ids, vis, want ? &logits : NULL, reterr)) < 0)
        goto out;
    res.prefill_s = vl3_time_s() - t0;
    if (p->prompt_logits)
        memcpy(p->prompt_logits, logits, (size_t)V * sizeof(float));
    t0 = vl3_time_s();
    for (;;) {
        int32_t id;
        if (p->step_logits)
            memcpy(p->step_logits + (size_t)res.n_generated * (size_t)V, logits,
                   (size_t)V * sizeof(float));
        if ((r = vl3_ctx_sample(ctx, &s, 1, &id, reterr)) < 0)
            goto out;
        (void)vl3_sampler_accept(s, id);
        res.n_generated++;
        int stop = 0;
        for (int i = 0; i < p->n_stop; i++)
            stop |= id == p->stop_ids[i];
        res.stopped_by_eos = stop;
        if (cb && (r = cb(user, id)) != 0) {
            if (r < 0)
                vl3_error_set(reterr, r, "token callback failed");
            else
                r = 0;
            break;
        }
        if (stop || res.n_generated >= p->max_new_tokens ||
            vl3_ctx_seq_len(ctx, seq) >= ctx->n_ctx)
            break;
        if ((r = vl3_decode_step(ctx, &seq, &id, 1, p->step_logits ? &logits : NULL,
                                 reterr)) < 0)
            goto out;
    }
    res.decode_s = vl3_time_s() - t0;
out:
    vl3_sampler_free(s);
    if (r >= 0 && ret_result)
        *ret_result = res;
    return r < 0 ? r : 0;
}
