/* worker_lm.h: the language model as the worker's scheduler sees it, and the continuous-batching
 * scheduler over it.
 *
 * A worker_lm has n_slots sequence slots. begin() prepares a slot for a sequence (empty, or
 * sharing the first tokens of another slot's KV cache); batch() runs one forward over runs of
 * several slots -- prompt chunks and single decode tokens mixed -- and samples the next token of
 * the runs that ask for it. The real implementation (worker_lm_engine.c) sits on vl3_ctx
 * sequence slots, vl3_ctx_seq_fork/truncate and vl3_decode; tests plug in a fake with the same
 * contract.
 *
 * The scheduler (worker_sched_*) keeps a FIFO of waiting sequences and the slots' sequences.
 * Each worker_sched_step() lets waiting sequences join free slots, then runs ONE batch: a token
 * for every decoding sequence, and prompt chunks of the sequences being prefilled in the room
 * left (n_batch tokens a batch), so admitting a long prompt never stalls the running decodes for
 * a whole prefill (continuous batching with chunked prefill). A sequence whose prompt starts like
 * an admitted one's (the same ids and the same visual rows: the tasks of one window) shares that
 * prefix's KV pages and prefills only the rest; it waits, holding its slot, until the other has
 * prefilled the prefix. Stop rules match vl3_generate: a stop id (kept out of the answer), the
 * sequence's max_new_tokens, or the slot's n_ctx. Single-threaded: one thread owns a scheduler. */
#ifndef VL3_WORKER_LM_H
#define VL3_WORKER_LM_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/engine.h"
#include "vl3/err.h"

#define WORKER_LM_MAX_STOP 8

/* One generation request and, once finished, its outcome. */
struct worker_seq {
    /* request (borrowed by the scheduler until the sequence finished) */
    const int32_t *ids;
    int n_ids;
    const float *visual;        /* (n_visual, visual_dim) projector rows, or NULL */
    const int64_t *visual_pos;  /* (n_visual) positions in ids, increasing */
    int n_visual, visual_dim;
    int max_new_tokens;         /* > 0 */
    float temperature;          /* 0 = greedy */
    uint64_t seed;
    void *user;
    const void *group; /* sequences with the same group belong together (one job's), or NULL */
    /* outcome, filled by the scheduler */
    int32_t *out;       /* generated ids (stop id excluded), owned by the scheduler until finish */
    int n_out;
    int stopped_by_eos;
    int rc;             /* 0, or the error that ended the sequence */
    vl3_error err;
    int max_batch;      /* most sequences in one batch the sequence took part in */
    int max_groups;     /* most distinct groups (jobs) in one batch it took part in */
    int shared_tokens;  /* prompt tokens whose KV it shared with another sequence */
    double prefill_ms, generate_ms;
    /* scheduler state */
    struct worker_seq *next;
    int slot;
    int n_done;                    /* prompt tokens in its KV cache */
    int begun;                     /* begin() done: its slot holds its KV */
    struct worker_seq *share_from; /* waiting to share share_len tokens of this one's prompt */
    int share_len;
    int32_t last;
    uint64_t t_start_ns;
};

/* One run of a batch: n tokens appended to a slot, the prompt (or generated) positions
 * pos0 .. pos0 + n - 1 of its sequence. */
struct worker_lm_run {
    int slot;
    const int32_t *ids;
    int n, pos0;
    const float *visual;       /* (n_visual, visual_dim) rows replacing the embeddings of ... */
    const int64_t *visual_pos; /* ... these positions, in [pos0, pos0 + n), increasing */
    int n_visual, visual_dim;
    int sample;                /* sample the slot's next token from the run's last logits */
};

struct worker_lm_ops {
    /* Prepare slot for seq: its KV empty, or (src >= 0) holding the first share_len tokens of
     * slot src's (the same prompt tokens); its sampler set up for seq (greedy when its
     * temperature is 0; the prompt ids in its repetition-penalty history when the model says
     * so). Returns 0 or a negative code. */
    int (*begin)(void *impl, int slot, const struct worker_seq *seq, int src, int share_len,
                 vl3_error *reterr);
    /* Run one batch of runs of distinct slots in one forward; for each run with sample set,
     * ret_ids[k] = the token sampled for runs[k].slot (and taken into its history). Returns 0 or
     * a negative code (every sequence of the batch is then failed). */
    int (*batch)(void *impl, const struct worker_lm_run *runs, int n_runs, int32_t *ret_ids,
                 vl3_error *reterr);
    void (*free)(void *impl);
};

struct worker_lm {
    const struct worker_lm_ops *ops;
    void *impl;
    int n_slots;
    int n_ctx;      /* tokens per slot (0 = unbounded) */
    int n_batch;    /* most tokens in one batch (0 = unbounded); >= n_slots */
    int32_t stop_ids[WORKER_LM_MAX_STOP];
    int n_stop;
};

/* The engine-backed model: a vl3_ctx with n_slots sequences over model (borrowed; must outlive
 * the lm) and per-slot samplers configured from the model's generation config (greedy when a
 * sequence's temperature is 0). n_ctx 0 = engine default. Returns 0, -ENOMEM, the engine's
 * codes, or VL3_E_UNSUPPORTED when this build has no LLM. *ret is owned (worker_lm_free). */
int worker_lm_engine_new(const vl3_model *model, int n_slots, int n_ctx, struct worker_lm **ret,
                         vl3_error *reterr);
/* Free an lm (NULL is a no-op). */
void worker_lm_free(struct worker_lm *lm);

struct worker_sched;

/* Called once per finished sequence (seq->rc tells success); the scheduler no longer touches
 * seq afterwards except through the callback's return. seq->out stays valid until the callback
 * returns, then is freed by the scheduler. */
typedef void (*worker_seq_done_cb)(void *user, struct worker_seq *seq);

/* Create a scheduler over lm (borrowed). Returns 0, -ENOMEM. */
int worker_sched_new(struct worker_lm *lm, worker_seq_done_cb done, void *user,
                     struct worker_sched **ret);
void worker_sched_free(struct worker_sched *s);

/* Asked before each decode step for every active sequence (same user as the done callback):
 * returning 0 ends the sequence at once with rc -ECANCELED (its job failed elsewhere). */
typedef int (*worker_seq_alive_cb)(void *user, const struct worker_seq *seq);
void worker_sched_set_alive(struct worker_sched *s, worker_seq_alive_cb alive);

/* Queue seq (borrowed until its done callback). Allocates its output buffer. 0, -ENOMEM, -EINVAL. */
int worker_sched_submit(struct worker_sched *s, struct worker_seq *seq);

/* Admit waiting sequences into free slots, then one batch (decode tokens and prompt chunks).
 * Finished sequences are reported through the callback. Returns the number of sequences still waiting or active
 * (0 = idle), or VL3_E_CUDA_FATAL after a sticky device error (every sequence then failed). */
int worker_sched_step(struct worker_sched *s);

/* Sequences waiting or active. */
int worker_sched_pending(const struct worker_sched *s);

struct worker_sched_stats {
    int64_t steps, tokens, prefills;
    int64_t prompt_tokens;  /* prompt tokens of the sequences admitted */
    int64_t shared_tokens;  /* of which shared with another sequence (not computed again) */
    int64_t mixed_steps;    /* batches with prompt chunks beside decode tokens */
    int max_batch;          /* most sequences in one batch */
};
void worker_sched_get_stats(const struct worker_sched *s, struct worker_sched_stats *ret);

#endif
