/* vision_request.c: one multimodal request end to end on the vision side: preprocess -> DiffFP
 * mask (from pixel_values, before the encoder) -> encoder + projector on the kept tokens ->
 * prompt with the pruned placeholder runs. The result pairs the projector rows with their
 * positions in the token ids, ready for the LLM's embedding replacement (spec §6, §10). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "vl3/util.h"

void vl3_mm_params_default(const vl3_model *model, vl3_mm_params *p)
{
    memset(p, 0, sizeof(*p));
    vl3_preprocess_params_from_model(model, &p->pre);
    vl3_difffp_params_default(&p->difffp);
    vl3_prompt_params_default(&p->prompt);
    if (model) {
        p->difffp.enabled = model->use_token_compression || model->cfg.use_token_compression;
        p->prompt.flavour =
            model->layout == VL3__LAYOUT_NATIVE ? VL3_PROMPT_NATIVE : VL3_PROMPT_REMOTE;
    }
}

void vl3_mm_input_deinit(vl3_mm_input *in)
{
    if (!in)
        return;
    vl3_pixel_batch_deinit(&in->batch);
    vl3_token_mask_deinit(&in->mask);
    vl3_prompt_deinit(&in->prompt);
    free(in->visual);
    memset(in, 0, sizeof(*in));
}

int vl3_mm_prepare(vl3_vision *v, const vl3_tokenizer *tok, const vl3_mm_params *p,
                   const vl3_vision_item *items, int n_items, vl3_mm_input *ret, vl3_error *reterr)
{
    if (!p || !ret || n_items < 0 || (n_items > 0 && (!items || !v)))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_mm_input in = {0};
    int rc;
    double t0 = vl3_time_s();
    if (n_items > 0) {
        if ((rc = vl3_vision_preprocess(&p->pre, items, n_items, &in.batch, reterr)) < 0)
            goto fail;
        if ((rc = vl3_difffp_mask(&p->difffp, &in.batch, &in.mask, reterr)) < 0)
            goto fail;
        in.t_preprocess = vl3_time_s() - t0;
        in.hidden = vl3_vision_out_dim(v);
        size_t n;
        if (vl3_mul_size((size_t)(in.mask.n_kept > 0 ? in.mask.n_kept : 1), (size_t)in.hidden,
                         &n) < 0 ||
            !(in.visual = malloc(n * sizeof(float)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld visual rows",
                               (long long)in.mask.n_kept);
            goto fail;
        }
        t0 = vl3_time_s();
        if ((rc = vl3_vision_encode(v, &in.batch, &in.mask, in.visual, reterr)) < 0)
            goto fail;
        in.t_encode = vl3_time_s() - t0;
    }
    if (tok)
        rc = vl3_prompt_build(&p->prompt, tok, items, n_items ? in.batch.grids : NULL, n_items,
                              n_items ? &in.mask : NULL, &in.prompt, reterr);
    else
        rc = vl3_prompt_render(&p->prompt, items, n_items ? in.batch.grids : NULL, n_items,
                               n_items ? &in.mask : NULL, &in.prompt.text, reterr);
    if (rc < 0)
        goto fail;
    if (tok && n_items > 0 && in.prompt.n_visual != in.mask.n_kept) {
        rc = vl3_error_set(reterr, VL3_E_FORMAT, "the prompt has %lld placeholders for %lld "
                                                 "visual rows",
                           (long long)in.prompt.n_visual, (long long)in.mask.n_kept);
        goto fail;
    }
    *ret = in;
    return 0;
fail:
    vl3_mm_input_deinit(&in);
    return rc;
}
