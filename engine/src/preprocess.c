/* preprocess.c: images/frames -> pixel_values (spec §3): the resize rule, the PIL-exact resize
 * (preprocess_resize.c), normalisation and the merge-aware patch order.
 *
 * Resize rules (the arithmetic follows the Python processors literally, in double precision,
 * since the token count depends on it):
 *   remote, one merge size in the call: simple_batched_resize (banker's rounding, the merged-token
 *   budget divided by the call's total frame count N with integer floor, then an independent
 *   min-pixels step); remote, mixed merge sizes: batched_resize (one common beta, no min clamp);
 *   native: smart_resize per item (if/elif, max(f, .) guard, aspect ratio <= 200), with the video
 *   budget divided by the frame count.
 * Normalisation reproduces transformers: float32(u * rescale computed in float64), then
 * (x - mean) / std in float32 (a 256-entry table per channel). For mean = std = 0.5 this is
 * u/127.5 - 1 up to float32 rounding. */
#include "preprocess.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "vl3/util.h"

void vl3_preprocess_params_default(vl3_preprocess_params *p)
{
    memset(p, 0, sizeof(*p));
    p->rule = VL3_RESIZE_REMOTE;
    p->patch_size = 14;
    p->image_merge = 1;
    p->video_merge = 2;
    p->min_tokens = 16;
    p->max_tokens = 16384;
    p->native_image_min_pixels = 16 * 14 * 14;        /* 3136 (shortest_edge) */
    p->native_image_max_pixels = 16384LL * 14 * 14;   /* 3,211,264 (HF-format checkpoints) */
    /* native video: the transformers class defaults (the checkpoint's
     * video_preprocessor_config.json values are UNVERIFIED, spec §3.1) */
    p->native_video_min_pixels = 128 * 28 * 28;       /* 100,352 */
    p->native_video_max_pixels = 768 * 28 * 28;       /* 602,112, divided by the frame count */
    p->rescale = 1.0 / 255.0;
    for (int c = 0; c < 3; c++)
        p->mean[c] = p->std[c] = 0.5f;
}

double vl3__py_round(double x)
{
    /* nearbyint rounds half to even in the default FE_TONEAREST mode, like Python's round. */
    return nearbyint(x);
}

void vl3__resize_rule_simple(const int *sizes_hw, const int *frames, int n, int factor,
                             int64_t min_tokens, int64_t max_tokens, int *ret_hw)
{
    int64_t f = factor;
    int64_t min_pixels = min_tokens * f * f, max_pixels = max_tokens * f * f;
    int64_t n_frames = 0;
    for (int i = 0; i < n; i++)
        n_frames += frames[i];
    int64_t budget = max_pixels / (n_frames > 0 ? n_frames : 1);
    for (int i = 0; i < n; i++) {
        double H = sizes_hw[2 * i], W = sizes_hw[2 * i + 1];
        int64_t h = (int64_t)vl3__py_round(H / (double)f) * f;
        int64_t w = (int64_t)vl3__py_round(W / (double)f) * f;
        if (h * w > budget) {
            double beta = sqrt((H * W) / (double)budget);
            h = (int64_t)floor(H / beta / (double)f) * f;
            w = (int64_t)floor(W / beta / (double)f) * f;
        }
        if (h * w < min_pixels) { /* independent of the branch above */
            double beta = sqrt((double)min_pixels / (H * W));
            h = (int64_t)ceil(H * beta / (double)f) * f;
            w = (int64_t)ceil(W * beta / (double)f) * f;
        }
        ret_hw[2 * i] = (int)h;
        ret_hw[2 * i + 1] = (int)w;
    }
}

void vl3__resize_rule_mixed(const int *sizes_hw, const int *frames, const int *factors, int n,
                            int64_t max_tokens, int *ret_hw)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        double f = factors[i];
        total += (int64_t)frames[i] * (int64_t)ceil(sizes_hw[2 * i] / f) *
                 (int64_t)ceil(sizes_hw[2 * i + 1] / f);
    }
    for (int i = 0; i < n; i++) {
        double H = sizes_hw[2 * i], W = sizes_hw[2 * i + 1];
        int64_t f = factors[i];
        int64_t h, w;
        if (total > max_tokens) {
            double beta = sqrt((double)total / (double)max_tokens);
            h = (int64_t)floor(H / beta / (double)f) * f;
            w = (int64_t)floor(W / beta / (double)f) * f;
        } else {
            h = (int64_t)vl3__py_round(H / (double)f) * f;
            w = (int64_t)vl3__py_round(W / (double)f) * f;
        }
        ret_hw[2 * i] = (int)h;
        ret_hw[2 * i + 1] = (int)w;
    }
}

int vl3__smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                      int *ret_h, int *ret_w)
{
    double H = height, W = width;
    int64_t f = factor;
    if (height <= 0 || width <= 0)
        return -EINVAL;
    if (VL3_MAX(H, W) / VL3_MIN(H, W) > 200)
        return VL3_E_LIMIT;
    int64_t h = (int64_t)vl3__py_round(H / (double)f) * f;
    int64_t w = (int64_t)vl3__py_round(W / (double)f) * f;
    if (h * w > max_pixels) {
        double beta = sqrt((H * W) / (double)max_pixels);
        h = VL3_MAX(f, (int64_t)floor(H / beta / (double)f) * f);
        w = VL3_MAX(f, (int64_t)floor(W / beta / (double)f) * f);
    } else if (h * w < min_pixels) {
        double beta = sqrt((double)min_pixels / (H * W));
        h = (int64_t)ceil(H * beta / (double)f) * f;
        w = (int64_t)ceil(W * beta / (double)f) * f;
    }
    *ret_h = (int)h;
    *ret_w = (int)w;
    return 0;
}

static int item_merge(const vl3_preprocess_params *p, const vl3_vision_item *it)
{
    if (it->merge > 0)
        return it->merge;
    return it->is_video ? p->video_merge : p->image_merge;
}

static int check_items(const vl3_preprocess_params *p, const vl3_vision_item *items, int n,
                       vl3_error *reterr)
{
    if (!p || p->patch_size <= 0 || p->image_merge <= 0 || p->video_merge <= 0)
        return vl3_error_set(reterr, -EINVAL, "invalid preprocessing parameters");
    if (n < 0 || (n > 0 && !items))
        return vl3_error_set(reterr, -EINVAL, "invalid item list");
    for (int i = 0; i < n; i++) {
        const vl3_vision_item *it = &items[i];
        if (it->n_frames <= 0 || !it->frames)
            return vl3_error_set(reterr, -EINVAL, "item %d has no frames", i);
        if (!it->is_video && it->n_frames != 1)
            return vl3_error_set(reterr, -EINVAL, "image item %d has %d frames", i, it->n_frames);
        int m = item_merge(p, it);
        if (m != 1 && m != 2)
            return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "merge size %d is not supported", m);
        for (int k = 0; k < it->n_frames; k++) {
            const vl3_image *im = &it->frames[k];
            if (!im->rgb || im->width <= 0 || im->height <= 0 ||
                im->stride < (size_t)im->width * 3)
                return vl3_error_set(reterr, -EINVAL, "item %d frame %d is not a valid image", i,
                                     k);
            if (im->width != it->frames[0].width || im->height != it->frames[0].height)
                return vl3_error_set(reterr, -EINVAL,
                                     "item %d frame %d is %dx%d, expected %dx%d like frame 0", i, k,
                                     im->width, im->height, it->frames[0].width,
                                     it->frames[0].height);
        }
    }
    return 0;
}

int vl3_vision_target_sizes(const vl3_preprocess_params *p, const vl3_vision_item *items, int n,
                            int *ret_hw, vl3_error *reterr)
{
    int rc = check_items(p, items, n, reterr);
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    int *sizes = malloc(sizeof(int) * 2 * (size_t)n);
    int *frames = malloc(sizeof(int) * (size_t)n);
    int *factors = malloc(sizeof(int) * (size_t)n);
    if (!sizes || !frames || !factors) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    int same = 1;
    for (int i = 0; i < n; i++) {
        sizes[2 * i] = items[i].frames[0].height;
        sizes[2 * i + 1] = items[i].frames[0].width;
        frames[i] = items[i].n_frames;
        factors[i] = p->patch_size * item_merge(p, &items[i]);
        if (factors[i] != factors[0])
            same = 0;
    }
    if (p->rule == VL3_RESIZE_REMOTE) {
        if (same)
            vl3__resize_rule_simple(sizes, frames, n, factors[0], p->min_tokens, p->max_tokens,
                                    ret_hw);
        else
            vl3__resize_rule_mixed(sizes, frames, factors, n, p->max_tokens, ret_hw);
    } else if (p->rule == VL3_RESIZE_NATIVE) {
        for (int i = 0; i < n; i++) {
            int64_t mn = items[i].is_video ? p->native_video_min_pixels : p->native_image_min_pixels;
            int64_t mx = items[i].is_video ? p->native_video_max_pixels / items[i].n_frames
                                           : p->native_image_max_pixels;
            rc = vl3__smart_resize(sizes[2 * i], sizes[2 * i + 1], factors[i], mn, mx,
                                   &ret_hw[2 * i], &ret_hw[2 * i + 1]);
            if (rc < 0) {
                rc = vl3_error_set(reterr, rc, "cannot resize item %d (%dx%d): aspect ratio above 200",
                                   i, sizes[2 * i + 1], sizes[2 * i]);
                goto out;
            }
        }
    } else {
        rc = vl3_error_set(reterr, -EINVAL, "unknown resize rule %d", (int)p->rule);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (ret_hw[2 * i] <= 0 || ret_hw[2 * i + 1] <= 0) {
            rc = vl3_error_set(reterr, VL3_E_LIMIT,
                               "cannot resize item %d (%dx%d): the target size is empty", i,
                               sizes[2 * i + 1], sizes[2 * i]);
            goto out;
        }
    rc = 0;
out:
    free(sizes);
    free(frames);
    free(factors);
    return rc;
}

void vl3__norm_lut(const vl3_preprocess_params *p, int c, float lut[256])
{
    float mean = p->mean[c], std = p->std[c];
    if (p->rule == VL3_RESIZE_NATIVE) {
        /* transformers' fast processors fuse rescale into normalize: mean and std become
         * float32 tensors times 1/rescale, then (u - mean') / std' in float32. Equal to the
         * two-step table after bf16 rounding, not always before (DiffFP works in float32). */
        volatile float m = (float)(mean * (float)(1.0 / p->rescale));
        volatile float s = (float)(std * (float)(1.0 / p->rescale));
        for (int u = 0; u < 256; u++) {
            volatile float d = (float)u - m;
            lut[u] = d / s;
        }
        return;
    }
    for (int u = 0; u < 256; u++) {
        volatile float x = (float)((double)u * p->rescale); /* float64 multiply, cast */
        volatile float d = x - mean;                        /* float32 arithmetic */
        lut[u] = d / std;
    }
}

void vl3__patchify(const uint8_t *rgb, size_t stride, int h, int w, int patch, int merge,
                   const float lut[3][256], float *out)
{
    int gh = h / patch, gw = w / patch, K = 3 * patch * patch;
    int64_t row = 0;
    for (int bh = 0; bh < gh / merge; bh++)
        for (int bw = 0; bw < gw / merge; bw++)
            for (int mh = 0; mh < merge; mh++)
                for (int mw = 0; mw < merge; mw++, row++) {
                    int r = bh * merge + mh, cc = bw * merge + mw;
                    float *o = out + row * K;
                    for (int ch = 0; ch < 3; ch++)
                        for (int dy = 0; dy < patch; dy++) {
                            const uint8_t *src = rgb + (size_t)(r * patch + dy) * stride +
                                                 (size_t)(cc * patch) * 3 + ch;
                            float *od = o + (ch * patch + dy) * patch;
                            for (int dx = 0; dx < patch; dx++)
                                od[dx] = lut[ch][src[3 * dx]];
                        }
                }
}

int vl3_vision_grid_tokens_per_frame(const vl3_vision_grid *g)
{
    return (g->h / g->merge) * (g->w / g->merge);
}

void vl3_pixel_batch_deinit(vl3_pixel_batch *b)
{
    if (!b)
        return;
    free(b->pixel_values);
    free(b->grids);
    free(b->resized_hw);
    memset(b, 0, sizeof(*b));
}

/* One frame of the batch: its resize into the thread's buffer and its patches at out. */
struct frame_job {
    const vl3_image *src;
    float *out;
    int item, frame;
};

struct frames_run {
    const vl3_preprocess_params *p;
    const vl3_pixel_batch *b;
    const struct frame_job *jobs;
    uint8_t **bufs; /* per thread, max_px * 3 */
    const float (*lut)[256];
    int rc, rc_job; /* the first failure (rc < 0) and its job */
};

static void frame_task(void *arg, int j, int thread)
{
    struct frames_run *fr = arg;
    const struct frame_job *job = &fr->jobs[j];
    const vl3_vision_grid *g = &fr->b->grids[job->item];
    int h = fr->b->resized_hw[2 * job->item], w = fr->b->resized_hw[2 * job->item + 1];
    /* native: transformers 5 resizes with torchvision (ATen's uint8 kernel) */
    int rc = vl3__resize_bicubic_rgb_ex(job->src, fr->bufs[thread], w, h, (size_t)w * 3,
                                        fr->p->rule == VL3_RESIZE_NATIVE);
    if (rc < 0) {
        int none = 0;
        if (__atomic_compare_exchange_n(&fr->rc, &none, rc, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            fr->rc_job = j;
        return;
    }
    vl3__patchify(fr->bufs[thread], (size_t)w * 3, h, w, fr->p->patch_size, g->merge, fr->lut,
                  job->out);
}

int vl3_vision_preprocess(const vl3_preprocess_params *p, const vl3_vision_item *items, int n,
                          vl3_pixel_batch *ret, vl3_error *reterr)
{
    vl3_pixel_batch b = {0};
    uint8_t *bufs[VL3__FANOUT_MAX_THREADS] = {0};
    struct frame_job *jobs = NULL;
    float lut[3][256];
    int rc, nt = p && p->n_threads > 1 ? VL3_MIN(p->n_threads, VL3__FANOUT_MAX_THREADS) : 1;
    if (!ret || !p || p->patch_size <= 0)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    b.n_items = n;
    b.patch_dim = 3 * p->patch_size * p->patch_size;
    b.grids = calloc((size_t)VL3_MAX(n, 1), sizeof(*b.grids));
    b.resized_hw = calloc((size_t)VL3_MAX(n, 1) * 2, sizeof(int));
    if (!b.grids || !b.resized_hw) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = vl3_vision_target_sizes(p, items, n, b.resized_hw, reterr);
    if (rc < 0)
        goto fail;
    size_t max_px = 0;
    for (int i = 0; i < n; i++) {
        int h = b.resized_hw[2 * i], w = b.resized_hw[2 * i + 1];
        vl3_vision_grid *g = &b.grids[i];
        g->t = items[i].n_frames;
        g->h = h / p->patch_size;
        g->w = w / p->patch_size;
        g->merge = item_merge(p, &items[i]);
        b.n_patches += (int64_t)g->t * g->h * g->w;
        if ((size_t)h * (size_t)w > max_px)
            max_px = (size_t)h * (size_t)w;
    }
    size_t nvals;
    if (vl3_mul_size((size_t)b.n_patches, (size_t)b.patch_dim, &nvals) < 0 ||
        nvals > ((size_t)1 << 40) / sizeof(float)) {
        rc = vl3_error_set(reterr, VL3_E_LIMIT, "too many patches (%lld)", (long long)b.n_patches);
        goto fail;
    }
    int n_jobs = 0;
    for (int i = 0; i < n; i++)
        n_jobs += items[i].n_frames;
    if (nt > n_jobs)
        nt = VL3_MAX(n_jobs, 1);
    b.pixel_values = malloc(VL3_MAX(nvals, 1) * sizeof(float));
    jobs = malloc(sizeof(*jobs) * (size_t)VL3_MAX(n_jobs, 1));
    int bufs_ok = 1;
    for (int t = 0; t < nt; t++)
        bufs_ok &= (bufs[t] = malloc(VL3_MAX(max_px, 1) * 3)) != NULL;
    if (!b.pixel_values || !jobs || !bufs_ok) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld patches",
                           (long long)b.n_patches);
        goto fail;
    }
    for (int c = 0; c < 3; c++)
        vl3__norm_lut(p, c, lut[c]);
    /* every frame is a job (its rows of pixel_values are its own), over nt threads */
    float *out = b.pixel_values;
    int j = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < items[i].n_frames; k++, j++) {
            jobs[j] = (struct frame_job){&items[i].frames[k], out, i, k};
            out += (size_t)b.grids[i].h * b.grids[i].w * b.patch_dim;
        }
    struct frames_run fr = {p, &b, jobs, bufs, (const float(*)[256])lut, 0, 0};
    vl3__fanout(nt, n_jobs, frame_task, &fr);
    if (fr.rc < 0) {
        rc = vl3_error_set(reterr, fr.rc, "could not resize item %d frame %d",
                           jobs[fr.rc_job].item, jobs[fr.rc_job].frame);
        goto fail;
    }
    for (int t = 0; t < nt; t++)
        free(bufs[t]);
    free(jobs);
    *ret = b;
    return 0;
fail:
    for (int t = 0; t < nt; t++)
        free(bufs[t]);
    free(jobs);
    vl3_pixel_batch_deinit(&b);
    return rc;
}
