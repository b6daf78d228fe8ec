/* difffp.c: DiffFP, the differential frame pruner (spec §5.5, §16).
 *
 * Works on pixel_values (before the encoder runs). For a video item with t > 1 frames and merge
 * m, the rows of frame ti are viewed as (gh/m)*(gw/m) merged tokens of m*m*588 values (the patch
 * order is merge-block-major, so a merged token's patches are consecutive rows). A token of frame
 * ti >= 1 is kept when 255 * mean|P[ti][k] - P[ti-1][k]| > threshold (comparison with the previous
 * frame's pixels, not with the last kept token); frame 0 is kept whole; a frame that keeps fewer
 * than min_tokens tokens gets its first min_tokens forced on. Images and single-frame videos keep
 * everything.
 *
 * Arithmetic: the default (VL3_DIFFFP_F32) follows the transformers-native processor: float32
 * differences, the mean accumulated in double and rounded to float32 (torch's float32 reduction
 * order cannot be reproduced exactly; the two agree to ~1e-7 relative), times 255 in float32.
 * VL3_DIFFFP_BF16 follows the DAMO README path where pixel_values were cast to bf16: inputs rounded
 * to bf16, the difference rounded to bf16, the mean rounded to bf16, the product by 255 rounded to
 * bf16, compared with the threshold rounded to bf16 (torch compares a bf16 tensor with a Python
 * scalar in bf16). threshold <= 0 disables pruning. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "vl3/engine.h"

void vl3_difffp_params_default(vl3_difffp_params *p)
{
    memset(p, 0, sizeof(*p));
    p->enabled = 1;
    p->threshold = 0.1f;
    p->min_tokens = 1;
    p->dtype = VL3_DIFFFP_F32;
}

/* Round a float to bf16 (round to nearest even), returned as float. */
static float bf16r(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) /* inf/nan unchanged */
        return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static int mask_alloc(const vl3_pixel_batch *b, vl3_token_mask *m, vl3_error *reterr)
{
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        m->n_tokens += (int64_t)g->t * vl3_vision_grid_tokens_per_frame(g);
        m->n_frames += g->t;
    }
    m->keep = malloc((size_t)(m->n_tokens > 0 ? m->n_tokens : 1));
    m->kept_per_frame = calloc((size_t)(m->n_frames > 0 ? m->n_frames : 1), sizeof(int));
    m->total_per_frame = calloc((size_t)(m->n_frames > 0 ? m->n_frames : 1), sizeof(int));
    if (!m->keep || !m->kept_per_frame || !m->total_per_frame) {
        vl3_token_mask_deinit(m);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    return 0;
}

void vl3_token_mask_deinit(vl3_token_mask *m)
{
    if (!m)
        return;
    free(m->keep);
    free(m->kept_per_frame);
    free(m->total_per_frame);
    memset(m, 0, sizeof(*m));
}

static void finish_counts(const vl3_pixel_batch *b, vl3_token_mask *m)
{
    int64_t tok = 0;
    int fr = 0;
    m->n_kept = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        int n = vl3_vision_grid_tokens_per_frame(g);
        for (int t = 0; t < g->t; t++, fr++) {
            int kept = 0;
            for (int k = 0; k < n; k++)
                kept += m->keep[tok + k] != 0;
            m->kept_per_frame[fr] = kept;
            m->total_per_frame[fr] = n;
            m->n_kept += kept;
            tok += n;
        }
    }
}

int vl3_token_mask_all(const vl3_pixel_batch *b, vl3_token_mask *ret, vl3_error *reterr)
{
    if (!b || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int rc = mask_alloc(b, ret, reterr);
    if (rc < 0)
        return rc;
    memset(ret->keep, 1, (size_t)ret->n_tokens);
    finish_counts(b, ret);
    return 0;
}

/* 255 * mean |a - b| over n values, in the chosen arithmetic. */
static float token_diff(const float *a, const float *b, int n, enum vl3_difffp_dtype dt)
{
    double s = 0.0;
    if (dt == VL3_DIFFFP_BF16) {
        for (int i = 0; i < n; i++)
            s += fabsf(bf16r(bf16r(a[i]) - bf16r(b[i])));
        return bf16r(bf16r((float)(s / n)) * 255.0f);
    }
    for (int i = 0; i < n; i++)
        s += fabsf(a[i] - b[i]);
    return (float)(s / n) * 255.0f;
}

/* Frame t >= 1 of an item against frame t - 1: its n merged tokens of vals values. */
struct frame_cmp {
    const float *cur, *prev;
    uint8_t *keep;
    int n, vals;
};

struct difffp_run {
    const vl3_difffp_params *p;
    const struct frame_cmp *frames;
    float thr;
};

static void frame_task(void *arg, int j, int thread)
{
    (void)thread;
    const struct difffp_run *r = arg;
    const struct frame_cmp *f = &r->frames[j];
    int kept = 0;
    for (int k = 0; k < f->n; k++) {
        float d = token_diff(f->cur + (size_t)k * f->vals, f->prev + (size_t)k * f->vals,
                             f->vals, r->p->dtype);
        f->keep[k] = d > r->thr;
        kept += f->keep[k];
    }
    if (kept < r->p->min_tokens)
        for (int k = 0; k < r->p->min_tokens && k < f->n; k++)
            f->keep[k] = 1;
}

int vl3_difffp_mask(const vl3_difffp_params *p, const vl3_pixel_batch *b, vl3_token_mask *ret,
                    vl3_error *reterr)
{
    if (!p || !b || !ret || (b->n_patches > 0 && !b->pixel_values))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (!p->enabled || !(p->threshold > 0.0f))
        return vl3_token_mask_all(b, ret, reterr);
    int rc = mask_alloc(b, ret, reterr);
    if (rc < 0)
        return rc;
    float thr = p->dtype == VL3_DIFFFP_BF16 ? bf16r(p->threshold) : p->threshold;
    int n_frames = 0;
    for (int i = 0; i < b->n_items; i++)
        n_frames += b->grids[i].t;
    struct frame_cmp *frames = malloc(sizeof(*frames) * (size_t)(n_frames > 0 ? n_frames : 1));
    if (!frames) {
        vl3_token_mask_deinit(ret);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    /* frame 0 of an item keeps everything; every later frame is a job (its own keep bytes) */
    int64_t tok = 0, row = 0;
    int nf = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        int n = vl3_vision_grid_tokens_per_frame(g);
        int vals = g->merge * g->merge * b->patch_dim; /* values per merged token */
        size_t frame_vals = (size_t)g->h * g->w * b->patch_dim;
        const float *base = b->pixel_values + (size_t)row * b->patch_dim;
        for (int t = 0; t < g->t; t++) {
            uint8_t *keep = ret->keep + tok + (int64_t)t * n;
            if (t == 0) {
                memset(keep, 1, (size_t)n);
                continue;
            }
            const float *cur = base + (size_t)t * frame_vals;
            frames[nf++] = (struct frame_cmp){cur, cur - frame_vals, keep, n, vals};
        }
        tok += (int64_t)g->t * n;
        row += (int64_t)g->t * g->h * g->w;
    }
    struct difffp_run run = {p, frames, thr};
    vl3__fanout(p->n_threads > 1 ? p->n_threads : 1, nf, frame_task, &run);
    free(frames);
    finish_counts(b, ret);
    return 0;
}
