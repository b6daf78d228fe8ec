/* pipeline.h: the media half of a request, one module for `vl3 run` and the worker.
 *
 * Steps (each a function; the worker runs them on its threads, `vl3 run` in a row):
 *   1. open the input (under the media roots for the worker), fingerprint it for the cache;
 *   2. sample the video's windows (sample.h) or read the image;
 *   3. per window: its frames and timestamps (pipeline_window_frames), the stretch it covers
 *      (pipeline_window_span), preprocessing + the DiffFP mask (pipeline_window_prepare);
 *   4. the token cache lookup of the window (pipeline_cache_key, pipeline_cache_lookup: a hit
 *      becomes a window with its visual tokens, pipeline_window_from_cache);
 *   5. the encoder, batched over windows in one call (pipeline_encode: the rows before the
 *      projector, then the projector per window) or, for a hit, the projector alone
 *      (pipeline_window_project);
 *   6. the result: a vl3_visual_tokens per window (pipeline_window.vt), the hand-off to the
 *      prompt + generation half (pipeline_prompt builds a task's prompt from it);
 *   7. the token cache store of a window that missed (tcache_store of its vt).
 * Because both callers go through these functions, the rows, grids, masks and prompts that
 * `vl3 run` and the worker hand to the LLM are the same for the same window by construction.
 * Not thread-safe per object; struct pipeline is read-only once set up. */
#ifndef VL3_WORKER_PIPELINE_H
#define VL3_WORKER_PIPELINE_H

#include <sys/stat.h>

#include "media.h"
#include "sample.h"
#include "token_cache.h"
#include "vl3/engine.h"
#include "vl3/visual_tokens.h"

/* What shapes the visual rows of a request (per process, read-only once set up). */
struct pipeline {
    vl3_mm_params mm;          /* preprocessing, DiffFP, the prompt flavour (user_text unused) */
    int bf16_input;            /* the encoder rounds pixel_values to bf16 (default 1) */
    int native;                /* native layout: transformers' sampler for one window, images
                                * with alpha composited onto white */
    const char *decoder;       /* "ffmpeg-sw" */
    const char *compute;       /* vl3_model_info.compute: the backend and its arithmetic */
    char vision_identity[33];  /* vl3_model_vision_identity ("" until pipeline_identify) */
    int pre_dim, hidden;       /* row widths before / after the projector */
    enum vl3_vt_dtype dtype;   /* the rows before the projector: what the cache holds */
};

/* Defaults for model with the encoder v (borrowed; an encoder or a projector-only one, for its
 * widths and dtype). Returns 0 or < 0 (reterr set). */
int pipeline_init(struct pipeline *pl, const vl3_model *model, const vl3_vision *v,
                  vl3_error *reterr);

/* Resize, patchify and DiffFP over n_threads threads (0 = every CPU); frames are independent,
 * and neither the results nor the cache keys depend on it. */
void pipeline_set_threads(struct pipeline *pl, int n_threads);

/* Compute the model's vision identity for cache keys (reads every vision weight once). */
int pipeline_identify(struct pipeline *pl, const vl3_model *model, vl3_error *reterr);

/* ---- 1. open ------------------------------------------------------------------------------- */

/* Open path (under roots, colon-separated, through paths_open; roots NULL: as given), stat it
 * into *ret_st (ret_have_st says whether fstat worked) and, when fp is not NULL, fingerprint its
 * content into fp through fingerprint (NULL: tcache_fingerprint_fd; a failure leaves fp "" and
 * is logged by the callback), then hand the fd to FFmpeg (media_open_fd) under pol. Returns 0
 * with *ret owned (media_close), or < 0 (reterr set). */
typedef int (*pipeline_fingerprint_fn)(void *user, const char *path, int fd, const struct stat *st,
                                       char ret[TCACHE_FINGERPRINT_LEN]);
int pipeline_open(const char *roots, const char *path, const struct media_policy *pol,
                  pipeline_fingerprint_fn fingerprint, void *user, char *fp, struct stat *ret_st,
                  int *ret_have_st, media_input **ret, vl3_error *reterr);

/* ---- 2. an image ---------------------------------------------------------------------------- */

/* Read the still image of m (opened by pipeline_open) as the model's processor sees it: PIL's
 * convert('RGB'), and for the native layout alpha composited onto white (transformers'
 * convert_to_rgb). Returns 0 with *ret owned (image_rgb_free), or < 0 (reterr set). */
struct image_rgb;
int pipeline_read_image(const struct pipeline *pl, media_input *m, struct image_rgb *ret,
                        vl3_error *reterr);

/* ---- 3. windows ----------------------------------------------------------------------------- */

/* One window (or one image) of a request as it goes through the steps. */
struct pipeline_window {
    int window;             /* window number (0: an image or a video as one window) */
    int n_frames;
    int is_image;           /* a still image: one frame, no timestamps */
    double *timestamps;     /* [n_frames] seconds, owned; NULL for an image */
    double t_start, t_end;  /* the stretch of the video it answers for (pipeline_window_span) */
    vl3_pixel_batch batch;  /* preprocessed (empty for a cache hit) */
    vl3_token_mask mask;    /* DiffFP (moved into vt for a cache hit) */
    vl3_visual_tokens vt;   /* after encoding or from the cache, with its projector rows */
    int cached;             /* vt came from the token cache */
    double preprocess_ms, encode_ms;
};

void pipeline_window_deinit(struct pipeline_window *w);

/* The frames of window win of sr (borrowed) into views (sr->n entries at least; borrowed from sr)
 * and w (timestamps allocated, n_frames, window). Returns the frame count (0: the window has no
 * frames, w untouched) or -ENOMEM. */
int pipeline_window_frames(const struct sample_result *sr, int win, vl3_image *views,
                           struct pipeline_window *w);

/* The stretch of w's video (sp: its sampling): from the window's start (or its first frame
 * without windows) to its last frame plus one sampling interval, within the window. */
void pipeline_window_span(struct pipeline_window *w, const struct sample_params *sp);

/* Preprocess w's frames (borrowed, w->n_frames of them) and compute the DiffFP mask (or a mask
 * keeping all tokens when DiffFP is off). Returns 0 or < 0 (reterr set). */
int pipeline_window_prepare(const struct pipeline *pl, struct pipeline_window *w,
                            const vl3_image *frames, vl3_error *reterr);

/* ---- 4. the token cache -------------------------------------------------------------------- */

/* The key (and its description, owned, when descr is not NULL) of a window of an input whose
 * content fingerprint is content: media image, frames or video (sp and window for a video).
 * Returns 0 or -EINVAL, -ENOMEM. */
int pipeline_cache_key(const struct pipeline *pl, const char *content, enum tcache_media media,
                       const struct sample_params *sp, int window, char key[33], char **descr);

/* Look key up in tc: 1 with *ret a verified entry that fits this pipeline (one item of the
 * encoder's width and dtype, one frame for an image), else 0 (a miss; an entry that does not fit
 * is logged and not used). */
int pipeline_cache_lookup(const struct pipeline *pl, tcache *tc, const char *key, int is_image,
                          vl3_visual_tokens *ret);

/* Make w a window answered by the cache: vt (a lookup's result) is moved into w->vt; its frame
 * count and timestamps are copied into w. Returns 0 or -ENOMEM (vt then still owned by the
 * caller). */
int pipeline_window_from_cache(struct pipeline_window *w, int window, int is_image,
                               vl3_visual_tokens *vt);

/* ---- 5. encoder and projector -------------------------------------------------------------- */

/* Encode n prepared windows (borrowed pointers) in one vision-encoder call with v, then per
 * window the projector, and make each window's vt (its rows before the projector in the
 * pipeline's dtype, and its projector rows). Returns 0 or < 0 (reterr set; no window has a vt
 * then). */
int pipeline_encode(const struct pipeline *pl, vl3_vision *v, struct pipeline_window *const *ws,
                    int n, vl3_error *reterr);

/* A window from the cache: the projector on its cached rows (v: an encoder or a projector-only
 * one), into w->vt.visual. Returns 0 or < 0 (reterr set). */
int pipeline_window_project(const struct pipeline *pl, vl3_vision *v, struct pipeline_window *w,
                            vl3_error *reterr);

/* ---- 6. hand-off: the prompt of a task from a window's visual tokens ----------------------- */

/* Build the prompt (pp: the flavour, system turn and instruction) for vt's items with tok and
 * check it has one placeholder per row. Returns 0 or < 0 (reterr set). */
int pipeline_prompt(const vl3_prompt_params *pp, const vl3_tokenizer *tok,
                    const vl3_visual_tokens *vt, vl3_prompt *ret, vl3_error *reterr);

#endif
