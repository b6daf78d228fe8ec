/* vision_request.c: one multimodal request end to end on the vision side: preprocess -> DiffFP
 * mask (from pixel_values, before the encoder) -> encoder (pre-projector rows of the kept tokens,
 * kept in the result for the token cache) -> projector ->
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
        p->difffp.enabled = model->use_token_compression;
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
    free(in->pre);
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
        in.pre_dim = vl3_vision_pre_dim(v);
        in.pre_bf16 = vl3_vision_pre_bf16(v);
        size_t n, npre, rows = (size_t)(in.mask.n_kept > 0 ? in.mask.n_kept : 1);
        if (vl3_mul_size(rows, (size_t)in.hidden, &n) < 0 ||
            vl3_mul_size(rows, (size_t)in.pre_dim, &npre) < 0 ||
            !(in.visual = malloc(n * sizeof(float))) ||
            !(in.pre = malloc(npre * sizeof(float)))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld visual rows",
                               (long long)in.mask.n_kept);
            goto fail;
        }
        t0 = vl3_time_s();
        if ((rc = vl3_vision_encode_pre(v, &in.batch, &in.mask, in.pre, reterr)) < 0 ||
            (rc = vl3_vision_project(v, &in.mask, in.mask.n_tokens, in.pre, in.visual,
                                     reterr)) < 0)
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

int vl3_vision_encode_many_pre(vl3_vision *v, const vl3_pixel_batch *const *batches,
                               const vl3_token_mask *const *masks, int n, float *const *outs,
                               vl3_error *reterr)
{
    if (!v || n < 0 || (n > 0 && (!batches || !outs)))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_pixel_batch all = {0};
    vl3_token_mask mask = {0};
    float *rows = NULL;
    int rc = -ENOMEM, K = 0, n_items = 0;
    int64_t P = 0, n_tok = 0, n_kept = 0;
    for (int i = 0; i < n; i++) {
        const vl3_pixel_batch *b = batches[i];
        if (!b || (K && b->patch_dim != K))
            return vl3_error_set(reterr, -EINVAL, "batch %d is missing or has another patch size",
                                 i);
        K = b->patch_dim;
        P += b->n_patches;
        n_items += b->n_items;
        for (int j = 0; j < b->n_items; j++)
            n_tok += (int64_t)b->grids[j].t * vl3_vision_grid_tokens_per_frame(&b->grids[j]);
    }
    if (P == 0)
        return 0;
    all.patch_dim = K;
    all.n_patches = P;
    all.n_items = n_items;
    all.pixel_values = malloc(sizeof(float) * (size_t)P * (size_t)K);
    all.grids = malloc(sizeof(*all.grids) * (size_t)n_items);
    mask.keep = malloc((size_t)n_tok);
    if (!all.pixel_values || !all.grids || !mask.keep) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    int64_t prow = 0, tok = 0;
    int item = 0;
    for (int i = 0; i < n; i++) {
        const vl3_pixel_batch *b = batches[i];
        const vl3_token_mask *m = masks ? masks[i] : NULL;
        int64_t bt = 0;
        memcpy(all.pixel_values + prow * K, b->pixel_values,
               sizeof(float) * (size_t)b->n_patches * (size_t)K);
        prow += b->n_patches;
        for (int j = 0; j < b->n_items; j++) {
            all.grids[item++] = b->grids[j];
            bt += (int64_t)b->grids[j].t * vl3_vision_grid_tokens_per_frame(&b->grids[j]);
        }
        if (m && m->n_tokens != bt) {
            rc = vl3_error_set(reterr, -EINVAL, "mask %d covers %lld tokens, its batch has %lld",
                               i, (long long)m->n_tokens, (long long)bt);
            goto out;
        }
        if (m)
            memcpy(mask.keep + tok, m->keep, (size_t)bt);
        else
            memset(mask.keep + tok, 1, (size_t)bt);
        tok += bt;
    }
    for (int64_t t = 0; t < n_tok; t++)
        n_kept += mask.keep[t] != 0;
    mask.n_tokens = n_tok;
    mask.n_kept = n_kept;
    int D = vl3_vision_pre_dim(v);
    rows = malloc(sizeof(float) * (size_t)(n_kept > 0 ? n_kept : 1) * (size_t)D);
    if (!rows) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = vl3_vision_encode_pre(v, &all, &mask, rows, reterr)) < 0)
        goto out;
    int64_t r = 0;
    tok = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = 0;
        const vl3_pixel_batch *b = batches[i];
        for (int j = 0; j < b->n_items; j++)
            for (int64_t t = 0;
                 t < (int64_t)b->grids[j].t * vl3_vision_grid_tokens_per_frame(&b->grids[j]); t++)
                k += mask.keep[tok++] != 0;
        if (k > 0)
            memcpy(outs[i], rows + r * D, sizeof(float) * (size_t)k * (size_t)D);
        r += k;
    }
    rc = 0;
out:
    free(rows);
    free(mask.keep);
    free(all.pixel_values);
    free(all.grids);
    return rc;
}

int vl3_vision_encode_many(vl3_vision *v, const vl3_pixel_batch *const *batches,
                           const vl3_token_mask *const *masks, int n, float *const *outs,
                           vl3_error *reterr)
{
    if (!v || n < 0 || (n > 0 && (!batches || !outs)))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    float **pres = calloc((size_t)(n > 0 ? n : 1), sizeof(*pres));
    int64_t *n_tok = calloc((size_t)(n > 0 ? n : 1), sizeof(*n_tok));
    int rc = 0, C = vl3_vision_pre_dim(v);
    if (!pres || !n_tok) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const vl3_pixel_batch *b = batches[i];
        if (!b) {
            rc = vl3_error_set(reterr, -EINVAL, "batch %d is missing", i);
            goto out;
        }
        for (int j = 0; j < b->n_items; j++)
            n_tok[i] += (int64_t)b->grids[j].t * vl3_vision_grid_tokens_per_frame(&b->grids[j]);
        int64_t kept = masks && masks[i] ? masks[i]->n_kept : n_tok[i];
        if (!(pres[i] = malloc(sizeof(float) * (size_t)(kept > 0 ? kept : 1) * (size_t)C))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto out;
        }
    }
    if ((rc = vl3_vision_encode_many_pre(v, batches, masks, n, pres, reterr)) < 0)
        goto out;
    /* the projector per request, as vl3_vision_encode and a token cache hit run it */
    for (int i = 0; i < n && rc == 0; i++)
        if (batches[i]->n_patches > 0)
            rc = vl3_vision_project(v, masks ? masks[i] : NULL, n_tok[i], pres[i], outs[i],
                                    reterr);
out:
    for (int i = 0; pres && i < n; i++)
        free(pres[i]);
    free(pres);
    free(n_tok);
    return rc;
}
