/* engine_llm.h: part of the public engine API (included by vl3/engine.h; include that).
 *
 * Contexts (KV cache + activation arena), prefill / batched decode, sampling, generation.
 *
 * A vl3_ctx holds n_seq independent sequences ("slots"), each with its own KV cache of n_ctx
 * tokens. vl3_prefill appends tokens to one slot; vl3_decode_step advances several slots by one
 * token each in one set of matrix products (the worker's continuous batching builds on it). All
 * memory is allocated by vl3_ctx_new; prefill and decode allocate nothing.
 *
 * Thread-safety: a vl3_ctx (and a vl3_sampler) is used by one thread at a time; several contexts
 * may share one model from different threads. Pointers returned by a ctx (logits) are borrowed and
 * valid until the next call on that ctx. */
#ifndef VL3_ENGINE_LLM_H
#define VL3_ENGINE_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl3_model vl3_model;
typedef struct vl3_ctx vl3_ctx;
typedef struct vl3_sampler vl3_sampler;

/* ---- contexts ------------------------------------------------------------------------------ */

typedef struct vl3_ctx_params {
    int n_ctx;   /* tokens per sequence (KV cache rows per slot); 0 = min(8192, model max) */
    int n_seq;   /* sequences (KV slots) in the context; also the largest decode batch */
    int n_batch; /* most tokens one forward processes at once (longer prompts are processed in
                    chunks of n_batch); sizes the activation arena */
    int page_size; /* tokens per KV-cache page; 0 = min(256, n_ctx) */
    int n_pages;   /* pages in the KV pool shared by all sequences; 0 = enough for every
                      sequence to hold n_ctx tokens at once */
} vl3_ctx_params;

/* n_ctx 0 (model-derived), n_seq 1, n_batch 512, page_size 256, n_pages 0. */
vl3_ctx_params vl3_ctx_params_default(void);

/* Create a context over model (borrowed: it must outlive the ctx). params may be NULL (defaults).
 * Allocates the KV cache and the activation arena once, on the model's backend.
 * Returns 0, -EINVAL (bad params), -ENOMEM, or a backend error; *ret_ctx is owned by the caller. */
int vl3_ctx_new(const vl3_model *model, const vl3_ctx_params *params, vl3_ctx **ret_ctx,
                vl3_error *reterr);
/* Free a context (NULL is a no-op). */
void vl3_ctx_free(vl3_ctx *ctx);
/* Empty every sequence of the context (no memory is released). */
void vl3_ctx_reset(vl3_ctx *ctx);
/* Empty one sequence (its KV pages go back to the pool). Returns 0 or -EINVAL for a bad slot. */
int vl3_ctx_seq_reset(vl3_ctx *ctx, int seq);
/* Make sequence dst a copy of sequence src (dst is emptied first) that shares src's KV pages: a
 * common prefix (the visual tokens of a window asked several questions) is prefilled once.
 * Appending to either copies a shared, partly filled last page first. Returns 0 or -EINVAL. */
int vl3_ctx_seq_fork(vl3_ctx *ctx, int src, int dst);
/* Keep the first len tokens of sequence seq (0 <= len <= its length): pages past them go back to
 * the pool (or to their other holders). With vl3_ctx_seq_fork it shares the first len tokens of
 * another sequence that has gone further. Returns 0 or -EINVAL. */
int vl3_ctx_seq_truncate(vl3_ctx *ctx, int seq, int len);
/* Free pages in the KV pool. */
int vl3_ctx_free_pages(const vl3_ctx *ctx);
/* Tokens held by sequence seq (its next position), or -EINVAL. */
int vl3_ctx_seq_len(const vl3_ctx *ctx, int seq);
/* Rows of a logits vector (the model's embedding rows V; larger than the tokenizer vocabulary). */
int vl3_ctx_n_vocab(const vl3_ctx *ctx);
/* The params the context was created with (n_ctx resolved). */
vl3_ctx_params vl3_ctx_get_params(const vl3_ctx *ctx);

/* Visual embeddings that replace the embedding rows of some prompt positions (spec §6). */
typedef struct vl3_visual_rows {
    const float *rows;    /* (n, dim) f32 host memory, borrowed; dim must equal the LLM width */
    const int64_t *index; /* (n) indices into the ids of the vl3_prefill call, strictly increasing
                             (vl3_prompt.visual_pos fits as is) */
    int n;
    int dim;
} vl3_visual_rows;

/* Append n_ids tokens to sequence seq (positions continue after its current length) and run them
 * through the model. vis (may be NULL) replaces the embeddings of the listed positions.
 * *ret_logits (may be NULL) receives the logits of the last token, (V) f32, borrowed from the ctx
 * until its next call. Returns 0; -EINVAL (bad seq, ids out of range, bad vis); VL3_E_LIMIT
 * (the sequence would exceed n_ctx; the ctx is unchanged); backend errors. */
int vl3_prefill(vl3_ctx *ctx, int seq, const int32_t *ids, int n_ids, const vl3_visual_rows *vis,
                const float **ret_logits, vl3_error *reterr);

/* A batch in the style of llama.cpp's llama_batch: runs of tokens of several sequences (prefill
 * chunks and single decode tokens mixed), so admitting a prompt does not stall running decodes. */
typedef struct vl3_batch {
    int n_tokens;               /* total tokens, <= max(n_batch, n_seq) of the ctx */
    const int32_t *ids;         /* [n_tokens]: the runs one after another */
    int n_seqs;                 /* runs */
    const int *seq;             /* [n_seqs] distinct sequences */
    const int *n_seq_tokens;    /* [n_seqs] tokens of each run (>= 1), appended to that sequence */
    const float *visual;        /* (n_visual, visual_dim) f32 host rows, or NULL */
    const int32_t *visual_index; /* [n_visual] batch token indices they replace, increasing */
    int n_visual;
    int visual_dim;             /* the LLM width */
} vl3_batch;

/* Run one batch. *ret_logits (may be NULL): (n_seqs, V) f32, row i the logits of run i's last
 * token, borrowed until the next call. Returns 0; -EINVAL (bad batch); VL3_E_LIMIT (a sequence
 * would exceed n_ctx, or the KV pool has too few free pages; the ctx is unchanged); backend
 * errors. */
int vl3_decode(vl3_ctx *ctx, const vl3_batch *b, const float **ret_logits, vl3_error *reterr);

/* Advance n distinct sequences seqs[i] by one token ids[i] each, in one batch (n <= n_seq).
 * *ret_logits (may be NULL): (n, V) f32, row i for seqs[i], borrowed until the next call.
 * Returns as vl3_prefill. */
int vl3_decode_step(vl3_ctx *ctx, const int *seqs, const int32_t *ids, int n,
                    const float **ret_logits, vl3_error *reterr);

/* ---- sampling ------------------------------------------------------------------------------ */

/* HuggingFace semantics. Order: repetition penalty (for every distinct id in the tracked history:
 * logit/p if logit > 0 else logit*p), then temperature, top-k, top-p, then a draw from the
 * softmax; greedy = argmax after the repetition penalty. */
typedef struct vl3_sampler_params {
    int greedy;               /* 1: argmax (temperature/top-k/top-p ignored) */
    float temperature;        /* > 0 */
    int top_k;                /* 0 = off */
    float top_p;              /* (0, 1]; 1 = off */
    float repetition_penalty; /* 1 = off; > 0 */
    uint64_t seed;            /* RNG seed (xoshiro256** seeded by splitmix64) */
} vl3_sampler_params;

/* transformers' GenerationConfig defaults: sampling, temperature 1, top_k 50, top_p 1,
 * repetition_penalty 1, seed 0. */
vl3_sampler_params vl3_sampler_params_default(void);

/* Create a sampler for logits of n_vocab rows. Returns 0, -EINVAL (bad params), -ENOMEM;
 * *ret is owned by the caller. */
int vl3_sampler_new(const vl3_sampler_params *params, int n_vocab, vl3_sampler **ret,
                    vl3_error *reterr);
void vl3_sampler_free(vl3_sampler *s);
/* Forget the history and reseed the RNG from the params' seed. */
void vl3_sampler_reset(vl3_sampler *s);
/* Add id to the repetition-penalty history. Returns 0 or -EINVAL (out of range). */
int vl3_sampler_accept(vl3_sampler *s, int32_t id);
/* Pick the next id from logits (n_vocab f32, borrowed, not modified). Allocates nothing. */
int vl3_sampler_sample(vl3_sampler *s, const float *logits, int32_t *ret_id, vl3_error *reterr);
/* Sample ret_ids[i] with samplers[i] (i < n) from logits row i of the last vl3_prefill /
 * vl3_decode / vl3_decode_step on ctx (n at most its rows), as vl3_sampler_sample would from
 * those logits (each non-greedy sampler draws one uniform); a NULL samplers[i] skips row i
 * (ret_ids[i] untouched). On a backend with a sampling op the
 * logits stay on the device and only the n ids come back (pass ret_logits NULL to those calls to
 * skip their logits download); elsewhere they are downloaded if not already. The ids are not
 * accepted into the samplers' histories. Returns 0, -EINVAL, backend errors. */
int vl3_ctx_sample(vl3_ctx *ctx, vl3_sampler *const *samplers, int n, int32_t *ret_ids,
                   vl3_error *reterr);

/* ---- generation ---------------------------------------------------------------------------- */

#define VL3_GEN_MAX_STOP 8

typedef struct vl3_gen_params {
    vl3_sampler_params sampling;
    int max_new_tokens;              /* > 0 */
    int32_t stop_ids[VL3_GEN_MAX_STOP]; /* generation stops after emitting one of these */
    int n_stop;
    int penalize_prompt;             /* repetition penalty history includes the prompt ids
                                        (native transformers) or only generated ids (remote) */
    int seq;                         /* the ctx sequence to use (reset first by vl3_generate) */
    float *prompt_logits;            /* if non-NULL: receives the last prompt position's logits,
                                        (V) f32, caller-owned */
    float *step_logits;              /* if non-NULL: row i receives the logits token i was
                                        sampled from (row 0 = the prompt's last position),
                                        (max_new_tokens, V) f32, caller-owned */
} vl3_gen_params;

/* Defaults from the model's generation config (do_sample, temperature, top_k, top_p,
 * repetition_penalty, eos ids) and its layout (penalize_prompt = native); max_new_tokens 1024.
 * model borrowed. */
vl3_gen_params vl3_gen_params_from_model(const vl3_model *model);

/* Called with each generated id (the stop id included when one ends generation). Return nonzero
 * to stop early. */
typedef int (*vl3_token_cb)(void *user, int32_t id);

typedef struct vl3_gen_result {
    int n_prompt;       /* prompt tokens */
    int n_generated;    /* tokens passed to the callback */
    int stopped_by_eos; /* ended on a stop id */
    double prefill_s, decode_s;
} vl3_gen_result;

/* Reset sequence p->seq of ctx, prefill ids (with vis as in vl3_prefill), then sample and decode
 * until a stop id, max_new_tokens, the ctx's n_ctx, or the callback asks to stop. Allocates only
 * the sampler (once, before the first forward). ret_result may be NULL.
 * Returns 0 or an error of vl3_prefill / vl3_decode_step / the callback's negative value. */
int vl3_generate(vl3_ctx *ctx, const int32_t *ids, int n_ids, const vl3_visual_rows *vis,
                 const vl3_gen_params *p, vl3_token_cb cb, void *user, vl3_gen_result *ret_result,
                 vl3_error *reterr);

/* ---- random-weight models (benchmarks, tests) --------------------------------------------- */

/* The LLM shape of a random model. */
typedef struct vl3_llm_shape {
    int hidden, n_layers, n_heads, n_kv_heads, head_dim, intermediate, vocab, max_positions;
    float rope_theta, rms_eps;
    int tied; /* lm_head shares the embedding */
} vl3_llm_shape;

/* The VideoLLaMA3-2B LLM (Qwen2.5-1.5B) shape: 1536 wide, 28 layers, 12/2 heads, 8960, 151936
 * rows, tied. */
vl3_llm_shape vl3_llm_shape_2b(void);

/* An LLM-only model with random bf16 weights (uniform, scaled by 1/sqrt(fan-in)) converted for
 * the CPU backend with n_threads threads (0 = all CPUs). Every layer gets the same random values
 * (the host copy holds the embedding and one layer), which changes nothing for timing. No
 * tokenizer, no vision weights. Returns 0, -EINVAL, -ENOMEM; *ret owned (vl3_model_free). */
int vl3_model_new_random(const vl3_llm_shape *shape, uint64_t seed, int n_threads, vl3_model **ret,
                         vl3_error *reterr);

#ifdef __cplusplus
}
#endif

#endif
