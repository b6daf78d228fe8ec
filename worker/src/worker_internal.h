/* worker_internal.h: the structures shared by worker.c (reader), worker_decode.c (decode
 * threads) and worker_engine.c (engine thread). Not a public header.
 *
 * Locking: w->lock guards the job list, the job queue, the window queue, every job's counters
 * and answers, and the flags; decode and engine threads hold it only to move things between
 * queues. Engine-owned state (vision, scheduler, lm) is touched by the engine thread only. */
#ifndef VL3_WORKER_INTERNAL_H
#define VL3_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "pipeline.h"
#include "sample.h"
#include "token_cache.h"
#include "vl3/engine.h"
#include "worker.h"
#include "worker_budget.h"
#include "worker_io.h"
#include "worker_lm.h"

struct worker_answer {
    int task, window;
    double t_start, t_end;
    char *answer; /* owned */
    struct worker_stats stats;
};

struct worker_job {
    struct worker_job *next_all; /* w->jobs */
    struct worker_job *next_q;   /* w->jobq */
    char *id, *input;
    int ntasks;
    int kinds[WORKER_MAX_TASKS];      /* enum vl3_task */
    char *questions[WORKER_MAX_TASKS];
    struct sample_params sp;
    int64_t max_new_tokens;
    double temperature;
    int attempt;
    int cache;           /* WORKER_CACHE_* (the job's "cache" field) */
    /* progress, under w->lock */
    int pending;         /* 1 for the decode stage + one per window not yet answered */
    int rc;              /* first failure, 0 if none */
    vl3_error err;
    struct worker_answer *answers; /* [n_answers] */
    int n_answers, cap_answers;
    struct worker_media media; /* the input file, set by the decode stage */
    /* statistics */
    int64_t frames_decoded;
    double decode_ms;
    _Atomic int64_t queued_bytes; /* budget bytes of this job's windows handed to the engine */
    uint64_t t_received_ns;
};

/* One window of one job, preprocessed and waiting for (or done with) the vision encoder. */
struct worker_unit {
    struct worker_unit *next;
    struct worker_job *job;
    struct pipeline_window pw; /* the window through the pipeline's steps (pipeline.h); after
                                * the engine, pw.vt holds its visual tokens */
    int64_t reserved;       /* bytes held in the memory budget */
    int queued;             /* handed to the engine: reserved counts in job->queued_bytes */
    int seqs_left;          /* sequences of this window not finished */
    double vision_ms;
    int vision_batch_frames, vision_batch_units;
    /* token cache: 0 not used, 1 miss (key set: stored after encoding), 2 hit (pw.vt set: only
     * the projector runs) */
    int cache;
    char key[33];
    char *key_descr;        /* owned */
    int vision_batch_jobs; /* distinct jobs in that vision-encoder call */
};

/* The job's use of the token cache (== enum vl3_cache_mode of the protocol). */
enum { WORKER_CACHE_USE, WORKER_CACHE_REFRESH, WORKER_CACHE_OFF };

/* One answer being generated: a window x task. */
struct worker_gen {
    struct worker_seq seq;
    struct worker_unit *unit;
    int task;
    vl3_prompt prompt;
};

struct worker {
    const struct worker_conf *conf;
    const vl3_model *model;
    const vl3_tokenizer *tok;
    struct pipeline pl;         /* the media half's settings (pipeline.h), read-only */
    vl3_task_texts texts;
    struct worker_out out;
    struct worker_budget budget;

    pthread_mutex_t lock;
    pthread_cond_t cond_jobs;   /* decode threads: a job was queued, or stopping */
    pthread_cond_t cond_engine; /* engine thread: a window was queued, or stopping */
    pthread_cond_t cond_idle;   /* reader: a job finished */
    struct worker_job *jobs;    /* accepted, not finished */
    int n_jobs;
    struct worker_job *jobq_head, *jobq_tail; /* waiting for a decode thread */
    struct worker_unit *unitq_head, *unitq_tail; /* waiting for the encoder */
    int unitq_frames;
    int decoding;               /* jobs inside decode threads */
    int sync_ready, budget_ready;
    int stopping;
    int fatal;                  /* a device fault: exit 75 */

    pthread_t *decoders;
    int n_decoders;
    pthread_t engine;
    int engine_started;

    /* token cache (NULL when cache.conninfo is empty); thread-safe */
    tcache *tcache;
    struct worker_cache_writer *cache_writer; /* stores off the engine thread (worker_cache.c) */
    struct worker_fp_memo {     /* content fingerprints by file version, under lock */
        char path[256];
        int64_t dev, ino, size, mtime_ns, ctime_ns;
        char fp[TCACHE_FINGERPRINT_LEN];
    } fp_memo[32];
    int fp_memo_next;

    /* engine thread only */
    vl3_vision *vision;
    struct worker_lm *lm;
    struct worker_sched *sched;
    int64_t vision_calls, vision_frames_max, vision_units_max;
};

/* decode thread body (worker_decode.c) */
void *worker_decode_main(void *arg);
/* engine thread body (worker_engine.c) */
void *worker_engine_main(void *arg);
/* the scheduler's callback (worker_engine.c); user is the worker */
void worker_engine_seq_done(void *user, struct worker_seq *seq);
/* the scheduler's liveness question (worker_engine.c): 0 once the sequence's job failed */
int worker_engine_seq_alive(void *user, const struct worker_seq *seq);

/* Record a failure for job (first one wins). Caller holds w->lock. */
void worker_job_fail_locked(struct worker_job *job, int rc, const vl3_error *err);
/* Fail job if it has run past jobs.max_wall at now (vl3_time_ns); returns 1 if it has failed
 * (for this or any earlier reason). Caller holds w->lock. */
int worker_job_overdue_locked(struct worker *w, struct worker_job *job, uint64_t now);
/* Drop one pending reference of job; at zero the job's frames are sent and it is freed.
 * Caller holds w->lock (released and retaken around the sending). */
void worker_job_unref_locked(struct worker *w, struct worker_job *job);

/* Free a unit (not linked anywhere) and release its budget. */
void worker_unit_free(struct worker *w, struct worker_unit *u);

#endif
