/* tiny_model.h: writer of tiny, randomly initialised VideoLLaMA3 checkpoints (engine-internal;
 * the vl3 CLI and the tests use it).
 *
 * The output is a complete checkpoint directory of the real architecture at a tiny size, in
 * either layout, with config files using the real keys, bf16 safetensors holding every tensor
 * of spec section 2, and tokenizer files (a small byte-level BPE of our own, or a copy of a real
 * Qwen2 tokenizer). Bytes are a pure function of the parameters (seeded RNG of our own, no libm
 * in the weight path). */
#ifndef VL3_TINY_MODEL_H
#define VL3_TINY_MODEL_H

#include <stdint.h>

#include "model.h"
#include "vl3/err.h"

struct vl3__tiny_params {
    enum vl3__layout layout;     /* remote: tied lm_head (like 2B); native: separate lm_head (7B) */
    uint64_t seed;
    const char *tokenizer_dir;   /* NULL: build a small BPE; else copy a Qwen2 tokenizer */
    int n_shards;                /* 1: model.safetensors; >1: shards + index.json */
    double std;                  /* init standard deviation (default 0.02) */
    /* LLM */
    int hidden, n_layers, n_heads, n_kv_heads, intermediate;
    double rope_theta;
    /* vision */
    int v_hidden, v_layers, v_heads, v_intermediate, patch_size;
};

/* hidden 64, 2 layers, 4 heads, 2 kv heads (head dim 16), intermediate 128, rope 1e6; vision
 * 32 wide, 2 layers, 2 heads (head dim 16), intermediate 64, patch 14; remote, seed 0, 1 shard. */
void vl3__tiny_params_default(struct vl3__tiny_params *p);

/* Write the checkpoint into out_dir (created if needed; existing files are overwritten).
 * Returns 0, -errno or VL3_E_FORMAT (unreadable --tokenizer files). */
int vl3__tiny_write(const char *out_dir, const struct vl3__tiny_params *p, vl3_error *reterr);

/* Token ids of the written tokenizer (-1 when absent) and the embedding rows to use. */
struct vl3__tiny_tok {
    int endoftext, im_start, im_end, image_pad, video_pad, image;
    int n_ids;      /* highest id + 1 */
    int vocab_rows; /* rows of embed_tokens / lm_head */
};

/* Write tokenizer files into out_dir: a copy of src_dir (vocab.json, merges.txt,
 * tokenizer_config.json, added_tokens.json, special_tokens_map.json; for the remote layout with
 * <image>, <|stream_start|>, <|stream_end|> appended as special added tokens) or, with
 * src_dir == NULL, a small deterministic byte-level BPE of our own. */
int vl3__tiny_tokenizer_write(const char *out_dir, const char *src_dir, enum vl3__layout layout,
                              struct vl3__tiny_tok *ret, vl3_error *reterr);

#endif
