/* engine_model.h: part of the public engine API (included by vl3/engine.h; include that).
 *
 * Checkpoint loading: a VideoLLaMA3 checkpoint directory in either layout (the DAMO hub "remote"
 * layout, model_type videollama3_qwen2, or the transformers-native video_llama_3 layout) with
 * config.json, generation_config.json, preprocessor_config.json (+ processor_config.json),
 * safetensors weights (one model.safetensors or shards listed by model.safetensors.index.json)
 * and tokenizer files. The loaded vl3_model is immutable and may be shared read-only across
 * threads and contexts. */
#ifndef VL3_ENGINE_MODEL_H
#define VL3_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

/* vl3_model, vl3_tokenizer and enum vl3_backend_kind come from vl3/engine.h. */

#ifdef __cplusplus
extern "C" {
#endif

/* How to load a model. Fill with vl3_model_params_default() and change fields. */
typedef struct vl3_model_params {
    const char *dir;                /* checkpoint directory (borrowed during the call) */
    enum vl3_backend_kind backend;  /* default VL3_BACKEND_AUTO (today: the CPU backend) */
    int device;                     /* device index for GPU backends; default 0 */
    int n_threads;                  /* CPU threads; 0 = all online CPUs */
    /* Tokenizer policy: 1 (default) loads the tokenizer from dir; a tokenizer build that answers
     * VL3_E_UNSUPPORTED (the placeholder) is tolerated and the model then has no tokenizer
     * (vl3_model_tokenizer returns NULL, special ids come from config.json). Any other tokenizer
     * error fails the load. 0 skips the tokenizer entirely. */
    int load_tokenizer;
    /* 1 (default): tensors in the checkpoint that the model does not use are an error
     * (VL3_E_FORMAT naming them). 0: they are ignored. */
    int strict;
    /* 1: skip backend initialisation (inspection only: `vl3 model info`, tests). Default 0. */
    int no_backend;
} vl3_model_params;

/* Defaults: backend AUTO, device 0, n_threads 0, load_tokenizer 1, strict 1, no_backend 0. */
vl3_model_params vl3_model_params_default(void);

/* Load a model. Maps the weights (mmap), validates every tensor name, dtype and shape against
 * config.json, resolves special token ids and initialises the backend.
 * Returns 0 and an owned model in *ret (free with vl3_model_free), or:
 *   -EINVAL (bad params), -ENOENT/-errno (missing/unreadable files), VL3_E_FORMAT (malformed
 *   files, missing or unexpected tensors), VL3_E_SHAPE (a tensor shape disagrees with the
 *   config; the message names the tensor, the expected and the found shape), VL3_E_CONFIG
 *   (inconsistent config values), VL3_E_UNSUPPORTED (a config option this engine cannot run).
 * Not thread-safe with respect to the same ret pointer; distinct loads may run concurrently. */
int vl3_model_load(const vl3_model_params *params, vl3_model **ret, vl3_error *reterr);

/* Free a model (NULL allowed). No context may still use it. */
void vl3_model_free(vl3_model *model);

/* The model's tokenizer (borrowed, lives as long as the model), or NULL when the model was
 * loaded without one (see vl3_model_params.load_tokenizer). */
const vl3_tokenizer *vl3_model_tokenizer(const vl3_model *model);

/* Facts about a loaded model. Strings are borrowed from the model (static or model-owned). */
typedef struct vl3_model_info {
    const char *layout;      /* "remote" or "native" */
    const char *model_type;  /* "videollama3_qwen2" or "video_llama_3" */
    const char *dtype;       /* weight dtype as stored: "bf16", "f16", "f32" or "mixed" */
    const char *backend;     /* backend name ("cpu"), or "none" when loaded with no_backend */
    const char *compute;     /* backend and arithmetic: "cpu-f32", "cpu-bf16", "cuda-bf16",
                              * "cuda-emu-bf16" or "none": results are bit-identical only within
                              * one (the token cache keys on it) */
    /* LLM (Qwen2) */
    int llm_hidden, llm_layers, llm_heads, llm_kv_heads, llm_head_dim, llm_intermediate;
    int vocab_rows;          /* embedding rows (151936 for 2B) */
    int max_positions;
    double rope_theta, rms_eps;
    int tied_lm_head;        /* 1 when lm_head shares the embedding */
    /* vision encoder */
    int vision_hidden, vision_layers, vision_heads, vision_intermediate, patch_size;
    int use_token_compression; /* DiffFP on by default */
    /* special ids (-1 when unknown) */
    int id_endoftext, id_im_start, id_im_end, id_image_pad, id_video_pad, id_image;
    int image_token_id;      /* placeholder id images use in this layout (151665 / 151655) */
    int video_token_id;      /* placeholder id video frames use (151665 / 151656) */
    int has_tokenizer;
    /* weights */
    int n_tensors;           /* tensors mapped (a tied lm_head is not counted twice) */
    int n_files;             /* safetensors files */
    int64_t n_params;        /* parameters (elements) */
    int64_t n_bytes;         /* bytes of weight data as stored */
} vl3_model_info;

/* Fill *ret with the model's facts. Returns 0 or -EINVAL. */
int vl3_model_get_info(const vl3_model *model, vl3_model_info *ret);

/* ---- tiny random checkpoints (tests, development) ---- */

/* Parameters of vl3_model_write_tiny. */
typedef struct vl3_tiny_params {
    int native;                /* 0: remote layout, tied lm_head (2B-like); 1: native layout,
                                  separate lm_head (7B-like) */
    uint64_t seed;             /* RNG seed: same parameters give the same bytes */
    const char *tokenizer_dir; /* NULL: a small byte-level BPE of our own; else a Qwen2 tokenizer
                                  directory to copy (vocab.json, merges.txt, added-token files);
                                  the embedding then has 151936 rows (borrowed) */
    int n_shards;              /* 1: model.safetensors; >1: shards + model.safetensors.index.json */
    double std;                /* weight init standard deviation; 0: 0.02 (initializer_range) */
    int full_2b;               /* 1: the 2B's sizes instead of the tiny ones (LLM 1536 wide, 28
                                  layers, 12/2 heads, 8960; vision 1152, 27 layers, 16 heads,
                                  4304): a ~4 GB random checkpoint for benchmarks */
} vl3_tiny_params;

/* Defaults: remote, seed 0, own tokenizer, 1 shard. */
vl3_tiny_params vl3_tiny_params_default(void);

/* Write a complete tiny checkpoint directory (config.json, generation_config.json,
 * preprocessor_config.json, processor_config.json, bf16 safetensors with every tensor of the
 * real architecture, tokenizer files) into out_dir, creating it when needed. Sizes: LLM hidden
 * 64, 2 layers, 4 heads, 2 kv heads, intermediate 128; vision hidden 32, 2 layers, 2 heads,
 * intermediate 64, patch 14. Returns 0, -errno, -EINVAL or VL3_E_FORMAT (bad tokenizer_dir). */
int vl3_model_write_tiny(const char *out_dir, const vl3_tiny_params *params, vl3_error *reterr);

#ifdef __cplusplus
}
#endif

#endif
