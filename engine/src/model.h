/* model.h: the engine's internal model representation, shared by the loader (load_*.c), the
 * forward passes (llm.c, vision.c) and the backends.
 *
 * Dimension letters used in shape comments across the engine:
 *   B batch, T tokens (sequence), C model width (LLM hidden D or vision width), H heads,
 *   Hkv key/value heads, D head dim, I MLP intermediate, V vocabulary rows, L layers,
 *   P patches, K = 588 values per 14x14x3 patch.
 * Weights are stored [out, in] row-major as in PyTorch (y = x W^T + b).
 *
 * A vl3__tensor describes bytes that live either in an mmapped safetensors file (host, dtype as
 * stored) or in a backend slab (after upload). The loader fills the host view; the backend's
 * upload step produces the compute view it wants (the CPU backend: f32). */
#ifndef VL3_MODEL_H
#define VL3_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/engine.h"

/* Element types of the safetensors format (the model itself uses BF16/F16/F32 only). */
enum vl3__dtype {
    VL3__DTYPE_F32,
    VL3__DTYPE_F16,
    VL3__DTYPE_BF16,
    VL3__DTYPE_I32,
    VL3__DTYPE_I64,
    VL3__DTYPE_F64,
    VL3__DTYPE_I8,
    VL3__DTYPE_U8,
    VL3__DTYPE_BOOL,
    VL3__DTYPE_I16,
    VL3__DTYPE_U16,
    VL3__DTYPE_U32,
    VL3__DTYPE_U64,
    VL3__DTYPE_F8_E4M3,
    VL3__DTYPE_F8_E5M2,
    VL3__DTYPE_COUNT
};

/* Bytes per element, the safetensors name ("BF16") and our short name ("bf16");
 * defined in safetensors.c. */
size_t vl3__dtype_size(enum vl3__dtype t);
const char *vl3__dtype_st_name(enum vl3__dtype t);
const char *vl3__dtype_name(enum vl3__dtype t);

#define VL3__MAX_DIMS 4

typedef struct vl3__tensor {
    const char *name;      /* checkpoint name (borrowed from the model's string storage) */
    enum vl3__dtype dtype;
    int ndim;
    int64_t shape[VL3__MAX_DIMS];
    const void *data;      /* host bytes (mmapped file or owned), row-major; the loader
                              guarantees alignment to the element size */
    size_t nbytes;
} vl3__tensor;

enum vl3__layout {
    VL3__LAYOUT_REMOTE, /* DAMO hub: videollama3_qwen2, model.vision_encoder.*, model.mm_projector.* */
    VL3__LAYOUT_NATIVE, /* transformers: video_llama_3, model.vision_model.*, model.language_model.* */
    VL3__LAYOUT_COUNT
};

struct vl3__llm_hparams {
    int hidden;            /* C = D_model (1536 for 2B) */
    int n_layers;          /* 28 */
    int n_heads;           /* 12 */
    int n_kv_heads;        /* 2 */
    int head_dim;          /* 128 = hidden / n_heads */
    int intermediate;      /* 8960 */
    int vocab;             /* V embedding rows (151936) */
    int max_positions;     /* 32768 */
    float rms_eps;         /* 1e-6 */
    float rope_theta;      /* 1e6 */
    int tie_embeddings;    /* lm_head shares embed_tokens */
};

/* Hard limits the config parser enforces so that shape arithmetic cannot overflow. */
#define VL3__MAX_HIDDEN (1 << 16)
#define VL3__MAX_LAYERS 512
#define VL3__MAX_VOCAB (1 << 22)
#define VL3__MAX_INTERMEDIATE (1 << 18)

struct vl3__vision_hparams {
    int hidden;            /* 1152 */
    int n_layers;          /* 27 */
    int n_heads;           /* 16 (head dim 72) */
    int intermediate;      /* 4304 */
    int patch_size;        /* 14 */
    int channels;          /* 3 */
    float ln_eps;          /* 1e-6 */
    float rope_theta;      /* 10000 (not in config.json; fixed by the architecture) */
};

/* Everything config.json says (both layouts), as parsed by model_config.c. */
struct vl3__config {
    enum vl3__layout layout;
    struct vl3__llm_hparams llm;
    struct vl3__vision_hparams vision;
    int use_token_compression; /* remote: use_token_compression (default 1); native: 1 */
    int image_token_id;        /* remote image_token_index (151665); native image_token_id */
    int video_token_id;        /* native video_token_id (151656); remote: = image_token_id */
    int bos_id, eos_id;        /* config bos_token_id / eos_token_id (-1 when absent) */
};

/* Preprocessor settings (preprocessor_config.json / processor_config.json). */
struct vl3__preproc {
    int present;           /* 1 when preprocessor_config.json was found (else defaults) */
    int patch_size;        /* 14 */
    int image_merge;       /* 1 */
    int video_merge;       /* 2 */
    int min_tokens;        /* 16 merged tokens */
    int max_tokens;        /* 16384 merged tokens */
    float mean[3], std[3]; /* 0.5 */
    float rescale;         /* 1/255 */
    int resample;          /* 3 = bicubic */
    int do_convert_rgb;    /* 1 */
    int fps;               /* 1 (processor_config.json) */
    int max_frames;        /* 128 (processor default; README/eval use 180) */
    /* native video_preprocessor_config.json: pixel budgets (-1 = the transformers class
     * defaults) and use_token_compression (-1 = not said: config.json decides) */
    int64_t video_min_pixels, video_max_pixels;
    int video_token_compression;
};

/* Generation defaults (generation_config.json; spec section 8 values when the file is absent:
 * do_sample 1, temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.1, eos [151645,
 * 151643], pad 151643, bos 151643). */
struct vl3__gen_defaults {
    int present;           /* 1 when generation_config.json was found */
    int do_sample;
    float temperature, top_p, repetition_penalty;
    int top_k;
    int eos_ids[4];
    int n_eos;
    int pad_id, bos_id;
};

struct vl3__llm_layer {
    vl3__tensor attn_norm;            /* (C) */
    vl3__tensor wq, bq;               /* (H*D, C), (H*D) */
    vl3__tensor wk, bk;               /* (Hkv*D, C), (Hkv*D) */
    vl3__tensor wv, bv;               /* (Hkv*D, C), (Hkv*D) */
    vl3__tensor wo;                   /* (C, H*D), no bias */
    vl3__tensor ffn_norm;             /* (C) */
    vl3__tensor w_gate, w_up;         /* (I, C) */
    vl3__tensor w_down;               /* (C, I) */
};

struct vl3__vision_layer {
    vl3__tensor ln1_w, ln1_b;         /* (C) */
    vl3__tensor wq, bq, wk, bk, wv, bv; /* (C, C), (C) */
    vl3__tensor wo, bo;               /* (C, C), (C) */
    vl3__tensor ln2_w, ln2_b;         /* (C) */
    vl3__tensor fc1_w, fc1_b;         /* (I, C), (I) */
    vl3__tensor fc2_w, fc2_b;         /* (C, I), (C) */
};

struct vl3__weights {
    /* LLM */
    vl3__tensor embed;                /* (V, C) */
    struct vl3__llm_layer *layers;    /* [n_layers] */
    vl3__tensor norm;                 /* (C) */
    vl3__tensor lm_head;              /* (V, C); same data as embed when tied */
    int lm_head_tied;                 /* 1 when lm_head is a copy of the embed view */
    /* vision */
    vl3__tensor patch_w;              /* (Cv, 3, 14, 14) == (Cv, K) */
    vl3__tensor patch_b;              /* (Cv) */
    struct vl3__vision_layer *vlayers; /* [vision n_layers] */
    vl3__tensor post_ln_w, post_ln_b; /* (Cv) */
    /* projector mlp2x_gelu */
    vl3__tensor proj_w1, proj_b1;     /* (C, Cv), (C) */
    vl3__tensor proj_w2, proj_b2;     /* (C, C), (C) */
};

/* Special token ids resolved from the tokenizer and config (-1 when absent). */
struct vl3__special_ids {
    int endoftext;   /* <|endoftext|> 151643 */
    int im_start;    /* <|im_start|> 151644 */
    int im_end;      /* <|im_end|> 151645 */
    int image_pad;   /* <|image_pad|> 151655 (native image placeholder) */
    int video_pad;   /* <|video_pad|> 151656 (native video placeholder) */
    int image;       /* <image> 151665 (remote placeholder for images and frames) */
    int image_token; /* placeholder ids the layout uses for images / video frames: */
    int video_token; /*   remote 151665 / 151665, native 151655 / 151656 (config values) */
};

/* The loaded model: immutable after vl3_model_load, shared read-only by contexts.
 * The loader (model_load.c) owns the layout of `priv` (mmaps, string storage, shard list). */
struct vl3_model {
    enum vl3__layout layout;
    char *dir;                          /* checkpoint directory (owned) */
    struct vl3__config cfg;             /* config.json as parsed (llm/vision copied below) */
    struct vl3__llm_hparams llm;
    struct vl3__vision_hparams vision;
    struct vl3__preproc pre;
    struct vl3__gen_defaults gen;
    struct vl3__special_ids ids;
    int use_token_compression;          /* DiffFP on by default when set */
    struct vl3__weights w;              /* host views (mmapped checkpoint bytes) */
    int host_views_kept;                /* 1: w's bytes live as long as the model (the loader's
                                           mappings), so a backend may use them in place */
    vl3_tokenizer *tokenizer;           /* owned */
    /* backend: the ops, its context, and the backend's compute copy of the weights */
    const struct vl3__backend_ops *ops;
    void *backend_ctx;
    void *backend_weights;              /* owned by the backend (e.g. f32 slab on CPU) */
    void *priv;                         /* loader-private */
};

/* ---- config parsing (model_config.c) ---- */

/* Layout names: "remote"/"native" and model_type "videollama3_qwen2"/"video_llama_3". */
const char *vl3__layout_name(enum vl3__layout l);
const char *vl3__layout_model_type(enum vl3__layout l);

/* Parse <dir>/config.json of either layout into *ret (validated: positive sizes within the
 * VL3__MAX_* limits, heads dividing widths, vision head dim divisible by 4). Errors:
 * -errno, VL3_E_FORMAT (bad JSON or types, naming the file and field), VL3_E_CONFIG
 * (inconsistent values), VL3_E_UNSUPPORTED (rope_scaling, sliding window, other projector or
 * activation). */
int vl3__config_load(const char *dir, struct vl3__config *ret, vl3_error *reterr);
/* Same from a buffer (name is used in messages). */
int vl3__config_parse(const char *name, const char *buf, size_t len, struct vl3__config *ret,
                      vl3_error *reterr);
/* generation_config.json; defaults (section 8) when the file is absent. */
int vl3__gen_defaults_load(const char *dir, struct vl3__gen_defaults *ret, vl3_error *reterr);
void vl3__gen_defaults_init(struct vl3__gen_defaults *g);
/* preprocessor_config.json (+ processor_config.json when present); defaults when absent. */
int vl3__preproc_load(const char *dir, struct vl3__preproc *ret, vl3_error *reterr);
void vl3__preproc_init(struct vl3__preproc *p);

/* ---- backend setup (model_backend.c) ---- */

struct vl3_model_params;
/* Pick the backend for p->backend, create its context in m->ops / m->backend_ctx (and, later,
 * convert/upload the weights into m->backend_weights). Called once at the end of
 * vl3_model_load; undone by vl3__model_backend_free. */
int vl3__model_backend_init(vl3_model *m, const struct vl3_model_params *p, vl3_error *reterr);
void vl3__model_backend_free(vl3_model *m);

#endif
