/* visual_tokens.h: the visual tokens of one window (or one image), the hand-off between the media
 * half of a request (decode -> sample -> preprocess -> DiffFP -> encoder + projector) and the
 * prompt + generation half, and its serialized form for the token cache.
 *
 * The object holds what the LLM consumes for the window's visual items, after DiffFP: the
 * pre-projector rows of the kept merged tokens (dtype declared; the cheapest exact form, the
 * projector runs on them in well under 1% of the encoder's time) with the projector rows made
 * from them (visual, not serialized), and everything needed to rebuild
 * the prompt without the media: per item its grid, merge size, resized size, frame count, kind
 * and whether it has timestamps; per frame its timestamp (the "Time X.Xs" labels are a pure
 * function of it, engine/src/prompt.c) and its kept / total tokens; the keep mask.
 *
 * Serialized form ("VL3VTOK1", docs/token-cache.md): a fixed little-endian header (magic,
 * version, dtype, shape, counts, the XXH3-64 of the decoded payload, an XXH3-64 of the header and
 * chunk table), a chunk table, then the chunks. Chunk 0 is the metadata (zstd); the rows follow
 * in chunks of about 1 MiB raw, each compressed independently either as plain zstd or with its
 * bytes split into planes (byte k of every element together) before zstd, whichever is smaller.
 * Decoding verifies every size and both checksums: damaged bytes give an error, never rows.
 * Rows are stored in the host's float layout; the format is little-endian only. */
#ifndef VL3_VISUAL_TOKENS_H
#define VL3_VISUAL_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VL3_VT_FORMAT_VERSION 2 /* 2: pre-projector rows (encoder width), f32 or bf16 */
#define VL3_VT_CHUNK_BYTES (1 << 20) /* raw bytes of rows per chunk */

enum vl3_vt_dtype {
    VL3_VT_DTYPE_F32,  /* f32 pre-projector rows (f32 precision, CUDA) */
    VL3_VT_DTYPE_BF16, /* bf16 pre-projector rows: exact where the projector rounds its input
                        * to bf16 (the CPU's bf16 precision, vl3_vision_pre_bf16) */
    VL3_VT_DTYPE_COUNT
};

typedef struct vl3_visual_tokens {
    int n_items;
    vl3_vision_grid *grids;   /* [n_items] patches (t, h, w) and merge size, owned */
    int *resized_hw;          /* [2 * n_items] pixel size after resize, owned */
    int *item_frames;         /* [n_items] frames of each item, owned */
    uint8_t *is_video;        /* [n_items], owned */
    uint8_t *has_timestamps;  /* [n_items], owned */
    double *timestamps;       /* [mask.n_frames] seconds (0 for items without), owned */
    int64_t n_patches;        /* encoder input patches (statistics only) */
    vl3_token_mask mask;      /* keep mask, kept / total tokens per frame, owned */
    enum vl3_vt_dtype dtype;
    int64_t n_rows;           /* == mask.n_kept */
    int dim;                  /* row width (the encoder's, before the projector) */
    void *rows;               /* (n_rows, dim) of dtype: pre-projector rows, owned, serialized */
    /* what the LLM reads: the projector rows (vl3_visual_tokens_project), not serialized */
    float *visual;            /* (n_rows, hidden), owned; NULL until projected */
    int hidden;
} vl3_visual_tokens;

/* Build the object from the media half's results, copying everything: the batch's grids and
 * sizes (b, borrowed), the mask (m, borrowed; NULL = every token kept), the items' frame counts,
 * kinds and timestamps (items, borrowed [n_items], frames not read) and the pre-projector rows
 * (pre, borrowed, (m->n_kept, dim) f32, held as dtype: for BF16 they must be bf16 values,
 * vl3_vision_pre_bf16, else -EINVAL). visual stays NULL. Returns 0, -EINVAL, -ENOMEM. */
int vl3_visual_tokens_from_parts(const vl3_pixel_batch *b, const vl3_token_mask *m,
                                 const vl3_vision_item *items, int n_items, const float *pre,
                                 int dim, enum vl3_vt_dtype dtype, vl3_visual_tokens *ret,
                                 vl3_error *reterr);

/* The same from a prepared request (vl3_mm_prepare's result and its items), its projector rows
 * copied into visual too. */
int vl3_visual_tokens_from_mm(const vl3_mm_input *mm, const vl3_vision_item *items, int n_items,
                              vl3_visual_tokens *ret, vl3_error *reterr);

/* Items describing vt for vl3_prompt_build (frames NULL, timestamps borrowed from vt):
 * ret_items must hold vt->n_items entries. */
void vl3_visual_tokens_items(const vl3_visual_tokens *vt, vl3_vision_item *ret_items);

/* The pre-projector rows as f32 (bf16 widened exactly) into out (n_rows x dim floats). */
void vl3_visual_tokens_pre_f32(const vl3_visual_tokens *vt, float *out);

/* Run the projector on the object's rows into visual (replacing it) with v (borrowed; an encoder
 * or vl3_vision_new_projector of the model that made the rows). The rows' width and dtype must
 * be v's (else VL3_E_FORMAT): the result is bit-identical to the cold path's projector rows.
 * Returns 0, -EINVAL, -ENOMEM, VL3_E_FORMAT. */
int vl3_visual_tokens_project(vl3_vision *v, vl3_visual_tokens *vt, vl3_error *reterr);

/* The dtype v's pre-projector rows are held in (F32 or BF16). */
enum vl3_vt_dtype vl3_visual_tokens_dtype_of(const vl3_vision *v);

/* A deep copy of vt (borrowed) into *ret, its projector rows (visual) included when with_visual
 * is set. Returns 0, -EINVAL, -ENOMEM. */
int vl3_visual_tokens_copy(const vl3_visual_tokens *vt, int with_visual, vl3_visual_tokens *ret,
                           vl3_error *reterr);

/* Free what the object owns; accepts a zeroed or half-built object. */
void vl3_visual_tokens_deinit(vl3_visual_tokens *vt);

/* ---- serialization ------------------------------------------------------------------------ */

enum vl3_vt_codec {
    VL3_VT_CODEC_AUTO,      /* per chunk the smaller of byte-plane + zstd and plain zstd */
    VL3_VT_CODEC_PLAIN,     /* plain zstd only */
    VL3_VT_CODEC_BYTEPLANE, /* byte planes + zstd only */
    VL3_VT_CODEC_COUNT
};

typedef struct vl3_vt_encode_params {
    int level;               /* zstd level (3) */
    enum vl3_vt_codec codec; /* AUTO */
    size_t chunk_bytes;      /* raw row bytes per chunk (VL3_VT_CHUNK_BYTES); rounded to rows */
} vl3_vt_encode_params;

void vl3_vt_encode_params_default(vl3_vt_encode_params *p);

/* What encoding measured: raw payload bytes (metadata + rows), and the compressed size of the
 * rows both ways where computed (AUTO computes both; 0 where not computed). */
typedef struct vl3_vt_encode_stats {
    size_t raw_bytes;        /* metadata + rows, decoded */
    size_t row_bytes;        /* rows, decoded */
    size_t plain_bytes;      /* rows as plain zstd */
    size_t byteplane_bytes;  /* rows as byte planes + zstd */
    size_t out_bytes;        /* the whole serialized entry */
    int n_chunks;
} vl3_vt_encode_stats;

/* Serialize vt into a malloc'd buffer (*ret, *ret_len; free() it). st may be NULL. Returns 0,
 * -EINVAL, -ENOMEM, VL3_E_ZSTD. */
int vl3_visual_tokens_encode(const vl3_visual_tokens *vt, const vl3_vt_encode_params *p,
                             uint8_t **ret, size_t *ret_len, vl3_vt_encode_stats *st,
                             vl3_error *reterr);

/* Parse and verify a serialized entry (buf borrowed) into *ret (release with
 * vl3_visual_tokens_deinit). Any damage (sizes, checksums, inconsistent counts, another version)
 * returns VL3_E_FORMAT and leaves *ret untouched; -ENOMEM. */
int vl3_visual_tokens_decode(const void *buf, size_t len, vl3_visual_tokens *ret,
                             vl3_error *reterr);

/* ---- identity of what produces the rows ---------------------------------------------------- */

/* A hex XXH3-128 (32 characters + NUL in ret) of everything of the model that shapes the visual
 * rows: the layout, the vision and projector hyperparameters and the bytes, dtypes and shapes of
 * every vision and projector weight, and the preprocessor configuration. Reads every vision
 * weight byte (about 0.1 s per GB): compute once per loaded model. Returns 0 or -EINVAL. */
int vl3_model_vision_identity(const vl3_model *model, char ret[33]);

#ifdef __cplusplus
}
#endif

#endif
