/* worker_lm.h: the language model as the worker's scheduler sees it, and the continuous-batching
 * scheduler over it.
 *
 * A worker_lm has n_slots sequence slots. start() prefills one slot with a prompt (and its
 * visual rows) and samples the first token; step() advances several slots by one token each in
 * one batched forward. The real implementation (worker_lm_engine.c) sits on vl3_ctx sequence
 * slots, vl3_prefill and vl3_decode_step; tests plug in a fake with the same contract.
 *
 * The scheduler (worker_sched_*) keeps a FIFO of waiting sequences and the slots' sequences.
 * Each worker_sched_step() first lets waiting sequences join free slots (prefill), then runs one
 * batched decode step over every active slot, so new prompts join while others decode
 * (continuous batching). Stop rules match vl3_generate: a stop id (kept out of the answer), the
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
    /* request (borrowed by the scheduler until the sequence finished; visual rows only until
     * it started, see visual_done) */
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
    int max_batch;      /* largest decode step the sequence took part in */
    int max_groups;     /* most distinct groups (jobs) in one decode step it took part in */
    double prefill_ms, generate_ms;
    /* scheduler links */
    struct worker_seq *next;
    int slot;
    int32_t last;
    uint64_t t_start_ns;
};

struct worker_lm_ops {
    /* Reset slot and prefill seq's prompt (with its visual rows); sample the first token into
     * *ret_id. Returns 0 or a negative code. */
    int (*start)(void *impl, int slot, const struct worker_seq *seq, int32_t *ret_id,
                 vl3_error *reterr);
    /* Feed ids[i] to slots[i] (n distinct slots) in one batch and sample each slot's next token
     * into ret_ids[i]. Returns 0 or a negative code (every slot of the step is then failed). */
    int (*step)(void *impl, const int *slots, const int32_t *ids, int n, int32_t *ret_ids,
                vl3_error *reterr);
    void (*free)(void *impl);
};

struct worker_lm {
    const struct worker_lm_ops *ops;
    void *impl;
    int n_slots;
    int n_ctx;      /* tokens per slot */
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

/* Admit waiting sequences into free slots, then one batched decode step. Finished sequences
 * are reported through the callback. Returns the number of sequences still waiting or active
 * (0 = idle), or VL3_E_CUDA_FATAL after a sticky device error (every sequence then failed). */
int worker_sched_step(struct worker_sched *s);

/* Sequences waiting or active. */
int worker_sched_pending(const struct worker_sched *s);

struct worker_sched_stats {
    int64_t steps, tokens, prefills;
    int max_batch;
};
void worker_sched_get_stats(const struct worker_sched *s, struct worker_sched_stats *ret);

#endif
