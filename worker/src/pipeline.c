/* pipeline.c: the media half of a request (pipeline.h), shared by `vl3 run` and the worker:
 * open, per-window frames and span, preprocessing + DiffFP, the token cache's key and lookup,
 * the batched encoder with the projector per window, and the prompt from a window's visual
 * tokens. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "paths.h"
#include "pipeline.h"
#include "vl3/log.h"
#include "vl3/util.h"

int pipeline_init(struct pipeline *pl, const vl3_model *model, const vl3_vision *v,
                  vl3_error *reterr)
{
    if (!pl || !model || !v)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    memset(pl, 0, sizeof(*pl));
    vl3_mm_params_default(model, &pl->mm);
    vl3_model_info info;
    int rc = vl3_model_get_info(model, &info);
    if (rc < 0)
        return vl3_error_set(reterr, rc, "could not describe the model");
    pl->bf16_input = 1;
    pl->native = strcmp(info.layout, "native") == 0;
    pl->decoder = "ffmpeg-sw";
    pl->compute = info.compute;
    pl->pre_dim = vl3_vision_pre_dim(v);
    pl->hidden = vl3_vision_out_dim(v);
    pl->dtype = vl3_visual_tokens_dtype_of(v);
    return 0;
}

void pipeline_set_threads(struct pipeline *pl, int n_threads)
{
    pl->mm.pre.n_threads = pl->mm.difffp.n_threads = n_threads > 0 ? n_threads : vl3_cpu_count();
}

int pipeline_identify(struct pipeline *pl, const vl3_model *model, vl3_error *reterr)
{
    int rc = vl3_model_vision_identity(model, pl->vision_identity);
    if (rc < 0)
        return vl3_error_set(reterr, rc, "could not identify the model's vision weights");
    return 0;
}

/* ---- open ---------------------------------------------------------------------------------- */

int pipeline_open(const char *roots, const char *path, const struct media_policy *pol,
                  pipeline_fingerprint_fn fingerprint, void *user, char *fp, struct stat *ret_st,
                  int *ret_have_st, media_input **ret, vl3_error *reterr)
{
    int fd = -1, rc;
    if (roots) {
        if ((rc = paths_open(roots, path, &fd, NULL, reterr)) < 0)
            return rc;
    } else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", path, strerror(errno));
    }
    struct stat st;
    int have = fstat(fd, &st) == 0;
    if (ret_st && have)
        *ret_st = st;
    if (ret_have_st)
        *ret_have_st = have;
    if (fp) {
        fp[0] = '\0';
        vl3_error e2 = {0};
        if (!have ||
            (fingerprint ? fingerprint(user, path, fd, &st, fp)
                         : tcache_fingerprint_fd(fd, fp, &e2)) < 0)
            fp[0] = '\0';
    }
    return media_open_fd(fd, path, pol, ret, reterr); /* closes fd on failure */
}

int pipeline_read_image(const struct pipeline *pl, media_input *m, struct image_rgb *ret,
                        vl3_error *reterr)
{
    int rc = media_read_image(m, ret, reterr);
    if (rc == 0 && pl->native) /* transformers' convert_to_rgb */
        image_rgb_composite_white(ret);
    return rc;
}

/* ---- windows -------------------------------------------------------------------------------- */

void pipeline_window_deinit(struct pipeline_window *w)
{
    if (!w)
        return;
    free(w->timestamps);
    vl3_pixel_batch_deinit(&w->batch);
    vl3_token_mask_deinit(&w->mask);
    vl3_visual_tokens_deinit(&w->vt);
    memset(w, 0, sizeof(*w));
}

int pipeline_window_frames(const struct sample_result *sr, int win, vl3_image *views,
                           struct pipeline_window *w)
{
    int n = 0;
    for (size_t i = 0; i < sr->n; i++)
        n += sr->frames[i].window == win;
    if (n == 0)
        return 0;
    double *ts = malloc(sizeof(double) * (size_t)n);
    if (!ts)
        return -ENOMEM;
    n = 0;
    for (size_t i = 0; i < sr->n; i++) {
        if (sr->frames[i].window != win)
            continue;
        views[n] = (vl3_image){sr->frames[i].rgb, sr->width, sr->height, (size_t)sr->width * 3};
        ts[n++] = sr->frames[i].timestamp;
    }
    free(w->timestamps);
    w->timestamps = ts;
    w->n_frames = n;
    w->window = win;
    w->is_image = 0;
    return n;
}

void pipeline_window_span(struct pipeline_window *w, const struct sample_params *sp)
{
    if (w->is_image || w->n_frames <= 0 || !w->timestamps) {
        w->t_start = w->t_end = 0;
        return;
    }
    double lo = w->timestamps[0], hi = w->timestamps[w->n_frames - 1];
    w->t_start = sp->window_s > 0 ? w->window * sp->window_s : lo;
    w->t_end = hi + (double)sp->fps_den / sp->fps_num;
    if (sp->window_s > 0 && w->t_end > (w->window + 1) * sp->window_s)
        w->t_end = (w->window + 1) * sp->window_s;
}

int pipeline_window_prepare(const struct pipeline *pl, struct pipeline_window *w,
                            const vl3_image *frames, vl3_error *reterr)
{
    uint64_t t0 = vl3_time_ns();
    vl3_vision_item item = {frames, w->n_frames, w->is_image ? NULL : w->timestamps,
                            !w->is_image, 0};
    int rc = vl3_vision_preprocess(&pl->mm.pre, &item, 1, &w->batch, reterr);
    if (rc < 0)
        return rc;
    rc = pl->mm.difffp.enabled ? vl3_difffp_mask(&pl->mm.difffp, &w->batch, &w->mask, reterr)
                               : vl3_token_mask_all(&w->batch, &w->mask, reterr);
    if (rc < 0)
        return rc;
    w->preprocess_ms = (double)(vl3_time_ns() - t0) / 1e6;
    return 0;
}

/* ---- the token cache ------------------------------------------------------------------------ */

int pipeline_cache_key(const struct pipeline *pl, const char *content, enum tcache_media media,
                       const struct sample_params *sp, int window, char key[33], char **descr)
{
    if (!pl->vision_identity[0])
        return -EINVAL;
    struct tcache_key_params kp = {pl->vision_identity, content, media,
                                   media == TCACHE_MEDIA_VIDEO ? sp : NULL, window, &pl->mm,
                                   pl->bf16_input, pl->decoder, pl->compute};
    return tcache_key(&kp, key, descr);
}

int pipeline_cache_lookup(const struct pipeline *pl, tcache *tc, const char *key, int is_image,
                          vl3_visual_tokens *ret)
{
    vl3_visual_tokens vt = {0};
    if (tcache_lookup(tc, key, &vt) != 1)
        return 0;
    if (vt.n_items != 1 || vt.dtype != pl->dtype || vt.dim != pl->pre_dim ||
        (is_image && vt.mask.n_frames != 1) || (!is_image && !vt.has_timestamps[0])) {
        /* never used: recomputed */
        vl3_log_warning("token cache entry %s holds %d items of dtype %d and width %d (the "
                        "encoder's rows are %d wide, dtype %d); recomputing", key, vt.n_items,
                        (int)vt.dtype, vt.dim, pl->pre_dim, (int)pl->dtype);
        vl3_visual_tokens_deinit(&vt);
        return 0;
    }
    *ret = vt;
    return 1;
}

int pipeline_window_from_cache(struct pipeline_window *w, int window, int is_image,
                               vl3_visual_tokens *vt)
{
    int n = vt->mask.n_frames;
    double *ts = NULL;
    if (!is_image && !(ts = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1))))
        return -ENOMEM;
    if (ts)
        memcpy(ts, vt->timestamps, sizeof(double) * (size_t)n);
    free(w->timestamps);
    w->timestamps = ts;
    w->window = window;
    w->n_frames = n;
    w->is_image = is_image;
    w->vt = *vt;
    memset(vt, 0, sizeof(*vt));
    w->cached = 1;
    return 0;
}

/* ---- encoder and projector ------------------------------------------------------------------ */

int pipeline_encode(const struct pipeline *pl, vl3_vision *v, struct pipeline_window *const *ws,
                    int n, vl3_error *reterr)
{
    if (!pl || !v || n < 0 || (n > 0 && !ws))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    const vl3_pixel_batch **bs = calloc((size_t)(n > 0 ? n : 1), sizeof(*bs));
    const vl3_token_mask **masks = calloc((size_t)(n > 0 ? n : 1), sizeof(*masks));
    float **pres = calloc((size_t)(n > 0 ? n : 1), sizeof(*pres));
    int rc = 0;
    if (!bs || !masks || !pres) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory for a vision batch of %d windows", n);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        size_t rows = (size_t)(ws[i]->mask.n_kept > 0 ? ws[i]->mask.n_kept : 1);
        bs[i] = &ws[i]->batch;
        masks[i] = &ws[i]->mask;
        if (!(pres[i] = malloc(sizeof(float) * rows * (size_t)pl->pre_dim))) {
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for visual rows");
            goto out;
        }
    }
    uint64_t t0 = vl3_time_ns();
    /* one encoder pass over every window (per-frame attention keeps them independent) */
    if ((rc = vl3_vision_encode_many_pre(v, bs, masks, n, pres, reterr)) < 0)
        goto out;
    /* per window: the visual tokens (rows before the projector, in the pipeline's dtype) and
     * the projector on the same rows, as a cache hit runs it */
    for (int i = 0; i < n && rc == 0; i++) {
        struct pipeline_window *w = ws[i];
        vl3_vision_item item = {NULL, w->n_frames, w->is_image ? NULL : w->timestamps,
                                !w->is_image, 0};
        vl3_visual_tokens vt = {0};
        size_t rows = (size_t)(w->mask.n_kept > 0 ? w->mask.n_kept : 1);
        if ((rc = vl3_visual_tokens_from_parts(&w->batch, &w->mask, &item, 1, pres[i],
                                               pl->pre_dim, pl->dtype, &vt, reterr)) < 0)
            break;
        if (!(vt.visual = malloc(sizeof(float) * rows * (size_t)pl->hidden))) {
            vl3_visual_tokens_deinit(&vt);
            rc = vl3_error_set(reterr, -ENOMEM, "out of memory for visual rows");
            break;
        }
        vt.hidden = pl->hidden;
        if ((rc = vl3_vision_project(v, &w->mask, w->mask.n_tokens, pres[i], vt.visual,
                                     reterr)) < 0) {
            vl3_visual_tokens_deinit(&vt);
            break;
        }
        vl3_visual_tokens_deinit(&w->vt);
        w->vt = vt;
    }
    double ms = (double)(vl3_time_ns() - t0) / 1e6;
    for (int i = 0; i < n; i++)
        ws[i]->encode_ms = ms;
    if (rc < 0)
        for (int i = 0; i < n; i++)
            vl3_visual_tokens_deinit(&ws[i]->vt);
out:
    for (int i = 0; pres && i < n; i++)
        free(pres[i]);
    free(pres);
    free(bs);
    free(masks);
    return rc;
}

int pipeline_window_project(const struct pipeline *pl, vl3_vision *v, struct pipeline_window *w,
                            vl3_error *reterr)
{
    (void)pl;
    uint64_t t0 = vl3_time_ns();
    int rc = vl3_visual_tokens_project(v, &w->vt, reterr);
    w->encode_ms = (double)(vl3_time_ns() - t0) / 1e6;
    return rc;
}

/* ---- hand-off ------------------------------------------------------------------------------- */

int pipeline_prompt(const vl3_prompt_params *pp, const vl3_tokenizer *tok,
                    const vl3_visual_tokens *vt, vl3_prompt *ret, vl3_error *reterr)
{
    if (!vt || vt->n_items < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_vision_item items[8];
    if (vt->n_items > (int)(sizeof(items) / sizeof(items[0])))
        return vl3_error_set(reterr, -EINVAL, "too many visual items (%d)", vt->n_items);
    vl3_visual_tokens_items(vt, items);
    int rc = vl3_prompt_build(pp, tok, items, vt->grids, vt->n_items, &vt->mask, ret, reterr);
    if (rc < 0)
        return rc;
    if (ret->n_visual != vt->n_rows) {
        rc = vl3_error_set(reterr, VL3_E_FORMAT, "the prompt has %lld placeholders for %lld "
                           "visual rows", (long long)ret->n_visual, (long long)vt->n_rows);
        vl3_prompt_deinit(ret);
        return rc;
    }
    return 0;
}
