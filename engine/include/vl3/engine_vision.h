/* engine_vision.h: part of the public engine API (included by vl3/engine.h; include that).
 *
 * Engine II, the vision half: decoded RGB images/frames in, LLM-ready pieces out.
 *   1. vl3_vision_preprocess: the AVT resize rule (spec §3.1), a PIL-exact antialiased bicubic
 *      resize on uint8, normalisation and the merge-aware patch order (§3.2) -> pixel_values.
 *   2. vl3_difffp_mask: DiffFP token pruning (§5.5) computed from pixel_values.
 *   3. vl3_vision_encode: the SigLIP-NaViT encoder + downsample + projector (§4) -> projector rows
 *      for the kept merged tokens, in prompt order; in two halves vl3_vision_encode_pre (the
 *      rows before the projector, what the token cache keeps) and vl3_vision_project.
 *   4. vl3_prompt_build: the chat template (§7) with expanded, pruned placeholders -> token ids and
 *      the positions where projector rows replace placeholder embeddings.
 * Everything here is reentrant; objects are not shared between threads unless stated. */
#ifndef VL3_ENGINE_VISION_H
#define VL3_ENGINE_VISION_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"
#include "vl3/tasks.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- inputs --------------------------------------------------------------------------------- */

/* A decoded 8-bit RGB image (R,G,B interleaved per pixel, rows `stride` bytes apart).
 * The pixels are borrowed: the owner keeps them alive while the image is in use. */
typedef struct vl3_image {
    const uint8_t *rgb;
    int width;
    int height;
    size_t stride; /* bytes per row, >= 3 * width */
} vl3_image;

/* One visual item of a request: an image (n_frames = 1, is_video = 0) or a video's sampled
 * frames with their timestamps. All frames of a video must have the same size. */
typedef struct vl3_vision_item {
    const vl3_image *frames;  /* borrowed, [n_frames] */
    int n_frames;
    const double *timestamps; /* borrowed, [n_frames] seconds, or NULL (no "Time" labels) */
    int is_video;
    int merge;                /* 0 = the preprocessor default (image 1, video 2) */
} vl3_vision_item;

/* ---- preprocessing ------------------------------------------------------------------------- */

enum vl3_resize_rule {
    VL3_RESIZE_REMOTE, /* DAMO processor: simple_batched_resize / batched_resize (spec §3.1) */
    VL3_RESIZE_NATIVE, /* transformers smart_resize (per item, if/elif, max(f,.) guard) */
    VL3_RESIZE_RULE_COUNT
};

typedef struct vl3_preprocess_params {
    enum vl3_resize_rule rule;
    int patch_size;  /* 14 */
    int image_merge; /* 1 */
    int video_merge; /* 2 */
    int min_tokens;  /* 16 merged tokens per image/frame (remote rule) */
    int max_tokens;  /* 16384 merged tokens per call (remote rule) */
    /* native rule budgets in pixels: images per image, videos per video (divided by frames) */
    int64_t native_image_min_pixels, native_image_max_pixels; /* 3136, 3211264 */
    int64_t native_video_min_pixels, native_video_max_pixels; /* 100352, 602112 */
    double rescale;  /* 1/255 */
    float mean[3];   /* 0.5 */
    float std[3];    /* 0.5 */
    int n_threads;   /* frames resized and patchified at once (1; the result does not depend
                      * on it) */
} vl3_preprocess_params;

/* Fill p with the released VideoLLaMA3 processor configuration (remote rule). */
void vl3_preprocess_params_default(vl3_preprocess_params *p);

/* The preprocessing parameters a loaded model asks for: its preprocessor_config.json values,
 * and the native rule for native-layout checkpoints. model is borrowed. */
void vl3_preprocess_params_from_model(const vl3_model *model, vl3_preprocess_params *p);

/* Grid of one item in patches (not merged): t frames of h x w patches, merge size. */
typedef struct vl3_vision_grid {
    int t, h, w;
    int merge;
} vl3_vision_grid;

/* Target (height, width) in pixels of every item under p's rule, for one processor call holding
 * all n items (the remote budget is shared by the call's total frame count). ret_hw gets 2*n ints
 * (h0, w0, h1, w1, ...). Returns 0, -EINVAL or VL3_E_LIMIT (native aspect ratio > 200, or a
 * size that cannot be resized). */
int vl3_vision_target_sizes(const vl3_preprocess_params *p, const vl3_vision_item *items, int n,
                            int *ret_hw, vl3_error *reterr);

/* pixel_values for a call: all items' patches concatenated in item order. */
typedef struct vl3_pixel_batch {
    float *pixel_values;      /* (P, K) f32, owned; K = 3 * patch^2 = 588 */
    int64_t n_patches;        /* P */
    int patch_dim;            /* K */
    int n_items;
    vl3_vision_grid *grids;   /* [n_items], owned */
    int *resized_hw;          /* [2 * n_items] pixel size after resize, owned */
} vl3_pixel_batch;

/* Resize (PIL bicubic, bit-exact), normalise and patchify every item. On success *ret is filled
 * (release with vl3_pixel_batch_deinit). Returns 0, -EINVAL, -ENOMEM, VL3_E_LIMIT. */
int vl3_vision_preprocess(const vl3_preprocess_params *p, const vl3_vision_item *items, int n,
                          vl3_pixel_batch *ret, vl3_error *reterr);
/* Free what vl3_vision_preprocess allocated; accepts a zeroed or half-built batch. */
void vl3_pixel_batch_deinit(vl3_pixel_batch *b);

/* Number of merged (LLM) tokens of one frame of a grid: (h/m)*(w/m). */
int vl3_vision_grid_tokens_per_frame(const vl3_vision_grid *g);

/* PIL-compatible antialiased bicubic resize of 8-bit RGB (Pillow Resample.c fixed-point
 * arithmetic, horizontal pass then vertical pass with a uint8 intermediate). dst is ow x oh,
 * rows dst_stride bytes apart. Returns 0, -EINVAL, -ENOMEM. */
int vl3_resize_bicubic_rgb(const vl3_image *src, uint8_t *dst, int ow, int oh, size_t dst_stride);

/* ---- DiffFP (differential frame pruning, spec §5.5) ------------------------------------------ */

enum vl3_difffp_dtype {
    VL3_DIFFFP_F32,  /* default: float32 as the transformers-native processor */
    VL3_DIFFFP_BF16, /* DAMO README path: pixel_values rounded to bf16 first, arithmetic in bf16 */
    VL3_DIFFFP_DTYPE_COUNT
};

typedef struct vl3_difffp_params {
    int enabled;           /* 1 by default (config use_token_compression) */
    float threshold;       /* 0.1; a token is kept when 255*mean|diff| > threshold; 0 keeps all */
    int min_tokens;        /* 1: at least this many tokens (the first ones) per frame */
    enum vl3_difffp_dtype dtype;
    int n_threads;         /* frames compared at once (1; the mask does not depend on it) */
} vl3_difffp_params;

void vl3_difffp_params_default(vl3_difffp_params *p);

/* Keep mask over the merged tokens of a batch: keep[i] for merged token i in batch order (items,
 * frames, merged raster). Images and single-frame videos keep everything. */
typedef struct vl3_token_mask {
    uint8_t *keep;           /* [n_tokens], owned */
    int64_t n_tokens;        /* total merged tokens */
    int64_t n_kept;
    int n_frames;            /* total frames (images count 1) */
    int *kept_per_frame;     /* [n_frames], owned */
    int *total_per_frame;    /* [n_frames], owned */
} vl3_token_mask;

/* Compute the DiffFP mask from pixel_values (before the encoder runs). Returns 0, -ENOMEM. */
int vl3_difffp_mask(const vl3_difffp_params *p, const vl3_pixel_batch *b, vl3_token_mask *ret,
                    vl3_error *reterr);
/* A mask keeping every token (pruning disabled). */
int vl3_token_mask_all(const vl3_pixel_batch *b, vl3_token_mask *ret, vl3_error *reterr);
void vl3_token_mask_deinit(vl3_token_mask *m);

/* ---- prompt building (spec §7) -------------------------------------------------------------- */

enum vl3_prompt_flavour {
    VL3_PROMPT_REMOTE, /* <image> (151665) for images and frames */
    VL3_PROMPT_NATIVE, /* <|image_pad|> / <|video_pad|> */
    VL3_PROMPT_FLAVOUR_COUNT
};

enum vl3_system_mode {
    VL3_SYSTEM_NONE,    /* no system turn (the processor default, evaluation) */
    VL3_SYSTEM_DEFAULT, /* the DAMO default system prompt (README add_system_prompt=True) */
    VL3_SYSTEM_CUSTOM,  /* system_text */
    VL3_SYSTEM_MODE_COUNT
};

/* Tasks (enum vl3_task, their names and vl3_task_needs_question) are the one catalogue of
 * vl3/tasks.h, shared with the protocol; the engine adds their instruction texts. */

/* Per-task instruction texts. Overrides are borrowed strings (NULL = built-in text, see
 * docs/tasks.md and engine/src/tasks.c). A text may contain "{question}" (the request's question)
 * and "{media}" ("image" or "video"). */
typedef struct vl3_task_texts {
    const char *text[VL3_TASK_COUNT];
} vl3_task_texts;

/* The built-in instruction template of a task (never NULL for a valid task). */
const char *vl3_task_default_text(enum vl3_task task);

/* The instruction for a task (override when set, else the built-in text) with {question} and
 * {media} substituted (media: "image" or "video"; NULL = "image"). Returns an owned string in
 * *ret, or -EINVAL (unknown task; task needs a question and none was given; a template names
 * {question} and none was given), -ENOMEM. */
int vl3_task_instruction(enum vl3_task task, const vl3_task_texts *overrides, const char *question,
                         const char *media, char **ret, vl3_error *reterr);

typedef struct vl3_prompt_params {
    enum vl3_prompt_flavour flavour;
    enum vl3_system_mode system;
    const char *system_text;      /* borrowed, for VL3_SYSTEM_CUSTOM */
    const char *user_text;        /* borrowed: the instruction that follows the visual items */
    int add_generation_prompt;    /* 1: append "<|im_start|>assistant\n" */
} vl3_prompt_params;

void vl3_prompt_params_default(vl3_prompt_params *p);

/* A built prompt: the rendered text (placeholders expanded and pruned) for logs and dumps, and the
 * token ids with the positions where projector rows go. */
typedef struct vl3_prompt {
    char *text;              /* owned, NUL-terminated */
    int32_t *ids;            /* owned [n_ids] */
    int64_t n_ids;
    int64_t *visual_pos;     /* owned [n_visual]: positions in ids of the projector rows, in order */
    int64_t n_visual;
} vl3_prompt;

/* Render the template for items (with grids and mask from preprocessing / DiffFP; mask may be NULL
 * for "keep all") and tokenize with tok (borrowed). Text-only prompts pass n_items = 0. Returns
 * 0, -EINVAL, -ENOMEM, VL3_E_FORMAT (placeholder token missing from the tokenizer). */
int vl3_prompt_build(const vl3_prompt_params *p, const vl3_tokenizer *tok,
                     const vl3_vision_item *items, const vl3_vision_grid *grids, int n_items,
                     const vl3_token_mask *mask, vl3_prompt *ret, vl3_error *reterr);
/* Render only the text (no tokenizer needed). Returns an owned string in *ret. */
int vl3_prompt_render(const vl3_prompt_params *p, const vl3_vision_item *items,
                      const vl3_vision_grid *grids, int n_items, const vl3_token_mask *mask,
                      char **ret, vl3_error *reterr);
void vl3_prompt_deinit(vl3_prompt *p);

/* ---- vision encoder (spec §4) ------------------------------------------------------------- */

/* The encoder's compute state bound to a model (f32 copy of the vision weights on the CPU).
 * Created once per model and reused; not thread-safe (one per worker thread). */
typedef struct vl3_vision vl3_vision;

/* Create the encoder for model (borrowed; must outlive the encoder). Returns 0, -ENOMEM,
 * VL3_E_FORMAT (vision weights missing or of the wrong shape). */
int vl3_vision_new(const vl3_model *model, int n_threads, vl3_vision **ret, vl3_error *reterr);
void vl3_vision_free(vl3_vision *v);

/* Whether the encoder rounds pixel_values to bf16 before the patch embedding, as the reference
 * does (the model casts pixel_values to the checkpoint's bf16 dtype). Default 1; 0 feeds the
 * float32 values unchanged. */
void vl3_vision_set_bf16_input(vl3_vision *v, int on);

/* An encoder holding only the projector's weights (for cached pre-projector rows: a token cache
 * hit needs no encoder): only vl3_vision_project and the queries below work on it. */
int vl3_vision_new_projector(const vl3_model *model, vl3_vision **ret, vl3_error *reterr);

/* Hidden width of the projector rows (the LLM hidden size). */
int vl3_vision_out_dim(const vl3_vision *v);

/* Width of the pre-projector rows (the encoder's hidden size, 1,152). */
int vl3_vision_pre_dim(const vl3_vision *v);

/* 1 when the pre-projector rows are bf16 values (the backend's bf16 mode: the projector rounds
 * its input to bf16 anyway, and vl3_vision_encode_pre rounds them the same way itself), so they
 * can be held as bf16 exactly; 0 for f32 rows. */
int vl3_vision_pre_bf16(const vl3_vision *v);

/* The first half of vl3_vision_encode: the encoder and downsample, then the kept merged tokens'
 * rows before the projector (n_kept x pre_dim floats into out, batch order; rounded to bf16 when
 * vl3_vision_pre_bf16). Returns 0, -EINVAL, -ENOMEM. */
int vl3_vision_encode_pre(vl3_vision *v, const vl3_pixel_batch *b, const vl3_token_mask *mask,
                          float *out, vl3_error *reterr);

/* The second half: the projector on one request's pre-projector rows (pre: mask's n_kept rows,
 * or n_tok rows when mask is NULL) into out (as many rows, out_dim wide). The rows are projected
 * at their places among the request's n_tok merged tokens, so rows from vl3_vision_encode_pre or
 * from the token cache give bit-identical results. Returns 0, -EINVAL, -ENOMEM. */
int vl3_vision_project(vl3_vision *v, const vl3_token_mask *mask, int64_t n_tok, const float *pre,
                       float *out, vl3_error *reterr);

/* Encode a batch (every item, every frame, in one variable-length pass with per-frame
 * attention) and write the projector rows of the kept merged tokens (mask may be NULL = all) to
 * out, which must hold n_kept x out_dim floats, in batch order. Returns 0, -EINVAL, -ENOMEM. */
int vl3_vision_encode(vl3_vision *v, const vl3_pixel_batch *b, const vl3_token_mask *mask,
                      float *out, vl3_error *reterr);

/* Encode several requests' batches in ONE encoder pass (the worker batches across jobs; each
 * request was preprocessed on its own since the resize budget is per request). masks[i] may be
 * NULL (keep all); outs[i] receives request i's kept projector rows, projected per request
 * (vl3_vision_project). Returns 0, -EINVAL, -ENOMEM. */
int vl3_vision_encode_many(vl3_vision *v, const vl3_pixel_batch *const *batches,
                           const vl3_token_mask *const *masks, int n, float *const *outs,
                           vl3_error *reterr);

/* The same, up to the pre-projector rows: pres[i] receives request i's kept rows before the
 * projector (n_kept x pre_dim), as vl3_vision_encode_pre writes them. */
int vl3_vision_encode_many_pre(vl3_vision *v, const vl3_pixel_batch *const *batches,
                               const vl3_token_mask *const *masks, int n, float *const *pres,
                               vl3_error *reterr);

/* ---- one multimodal request, end to end (what `vl3 run` and the worker call) ---------------- */

typedef struct vl3_mm_params {
    vl3_preprocess_params pre;   /* fill with vl3_preprocess_params_from_model */
    vl3_difffp_params difffp;
    vl3_prompt_params prompt;    /* prompt.user_text: the instruction (see vl3_task_instruction) */
} vl3_mm_params;

/* Defaults for a model: its preprocessor settings, DiffFP on when the model's
 * use_token_compression is set, the prompt flavour of its layout, no system turn. */
void vl3_mm_params_default(const vl3_model *model, vl3_mm_params *p);

/* Everything the LLM needs for one request: ids, the projector rows and their positions. */
typedef struct vl3_mm_input {
    vl3_pixel_batch batch;       /* pixel_values and grids (kept for dumps) */
    vl3_token_mask mask;         /* DiffFP result (kept/total per frame) */
    vl3_prompt prompt;           /* ids, rendered text, visual positions */
    float *visual;               /* (prompt.n_visual, hidden) projector rows, owned */
    int hidden;
    float *pre;                  /* (mask.n_kept, pre_dim) pre-projector rows, owned */
    int pre_dim;
    int pre_bf16;                /* pre holds bf16 values (vl3_vision_pre_bf16) */
    double t_preprocess, t_encode; /* seconds */
} vl3_mm_input;

/* Preprocess items, compute DiffFP, encode with v (may be NULL when n_items = 0) and build the
 * prompt with tok (NULL: only prompt.text is rendered, no ids). Borrows everything; fills *ret (release with vl3_mm_input_deinit). Returns 0
 * or the first failing step's code. */
int vl3_mm_prepare(vl3_vision *v, const vl3_tokenizer *tok, const vl3_mm_params *p,
                   const vl3_vision_item *items, int n_items, vl3_mm_input *ret,
                   vl3_error *reterr);
void vl3_mm_input_deinit(vl3_mm_input *in);

#ifdef __cplusplus
}
#endif

#endif
