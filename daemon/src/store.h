/* store.h: the daemon's PostgreSQL writes, as idempotent SQL over the non-blocking pg adapter,
 * plus the blocking reads behind `vl3 status`.
 *
 * Every write is one SQL statement, hence one transaction, and may be re-issued after a
 * retryable failure (store_outcome.retryable) without duplicating or replacing anything:
 *  - store_job_started() upserts the job row (attempts + 1, status 'running') unless the job is
 *    already 'done', in which case it changes nothing and reports already_done = 1 (the daemon
 *    can skip the work and commit the Kafka offset).
 *  - store_job_done() writes the video row, ALL result rows of the job and status 'done' in one
 *    statement: a job's results become durable atomically, so the daemon commits the Kafka
 *    offset only after its callback reports code 0. If the job was already 'done' (a redelivery
 *    after a crash between the commit to PostgreSQL and the offset commit), nothing is inserted
 *    or replaced and already_done = 1. Result rows also carry ON CONFLICT DO NOTHING on
 *    (job_id, task, question, window_idx): the first complete answer of a job is the one kept,
 *    because the Kafka offset may already reflect it and users may already have read it; a
 *    re-run never silently rewrites history (re-index by enqueueing a new job id).
 *  - store_job_failed() records the reason; it never touches a job that is 'done'.
 * The one non-idempotent detail: re-issuing store_job_started() after a retryable failure whose
 * first try did commit counts one extra attempt (attempts is informational; the daemon's
 * poison-job limit counts attempts itself).
 * Strings passed in are copied before the call returns; callbacks run later on the loop thread,
 * exactly once per call that returned 0. */
#ifndef VL3D_STORE_H
#define VL3D_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "pg.h"
#include "vl3/err.h"

/* Job status values, as stored in jobs.status (CHECK constraint in schema/0001_init.sql). */
#define STORE_STATUS_QUEUED "queued"     /* received from Kafka, not started */
#define STORE_STATUS_RUNNING "running"   /* handed to a worker */
#define STORE_STATUS_RETRYING "retrying" /* an attempt failed; the job will run again */
#define STORE_STATUS_DONE "done"         /* results written */
#define STORE_STATUS_FAILED "failed"     /* given up (bad input, poison, max attempts) */

/* Identity and probe information of a video file. Borrowed during the call. */
typedef struct store_video {
    const char *path;        /* absolute path as the job named it */
    int64_t size;            /* bytes */
    int64_t mtime_s;         /* modification time, seconds since the epoch */
    const char *fingerprint; /* content fingerprint chosen by the worker (hex), or NULL */
    double duration_s;       /* < 0 = unknown */
    int width, height;       /* <= 0 = unknown */
    double fps;              /* <= 0 = unknown */
    const char *codec;       /* e.g. "h264", or NULL */
} store_video;

/* A job as received from Kafka. Borrowed during the call. */
typedef struct store_job {
    const char *job_id; /* unique id (Kafka payload); required */
    const char *topic;  /* source topic, or NULL */
    int32_t partition;  /* -1 = unknown */
    int64_t offset;     /* -1 = unknown */
    const char *path;   /* the video path the job names, or NULL */
    const char *model;  /* model name/revision the job asks for, or NULL */
    const char *worker; /* worker that runs it (e.g. "vl3-worker[0]"), or NULL */
    const char *batch;  /* enqueue batch id (jobs.batch), or NULL */
    double enqueued_at; /* producer timestamp, seconds since the epoch; <= 0 = now() */
} store_job;

/* One answer: one task (caption, qa, ...) over one window of the video. Borrowed. */
typedef struct store_result {
    const char *task;      /* required */
    const char *question;  /* NULL or "" when the task has none */
    int window_idx;        /* 0-based window index (0 for whole-video tasks) */
    double start_s, end_s; /* the window's time range in the video */
    const char *answer;    /* required (may be "") */
    const char *model;     /* NULL = the job's model */
    int prompt_tokens, generated_tokens;         /* < 0 = unknown */
    int visual_tokens_kept, visual_tokens_total; /* after / before DiffFP pruning; < 0 = unknown */
    double vision_ms, prefill_ms, decode_ms, total_ms; /* < 0 = unknown */
    int frames_sampled;       /* frames the model saw for this window; <= 0 = unknown */
    double sample_interval_s; /* window duration / frames_sampled; <= 0 = unknown or image */
    int cache_hit;            /* token cache answered: 1 yes, 0 no (a miss), < 0 not used */
} store_result;

/* The outcome of one store call, valid only during the callback (borrowed). */
typedef struct store_outcome {
    int code;             /* 0, VL3_E_PG, -ECANCELED (see pg_reply) */
    int retryable;        /* re-issuing the same call is safe and may succeed */
    const vl3_error *err; /* never NULL */
    int already_done;     /* the job was 'done' before this call: nothing was written */
    int64_t rows;         /* result rows inserted (store_job_done), else rows changed */
    int attempts;         /* store_job_started: attempts after this one (else 0) */
} store_outcome;

typedef void (*store_cb)(void *user, const store_outcome *out);

/* Record a job as received and waiting ('queued', attempts 0) if it is not known yet; an
 * existing row is left alone (already_done tells whether it is 'done'; rows = 1 when inserted).
 * Optional: store_job_started() creates the row too. Returns like store_job_started(). */
int store_job_queued(pg_conn *pg, const store_job *job, store_cb cb, void *user,
                     vl3_error *reterr);

/* Mark job started: insert or update the job row with status 'running', attempts + 1,
 * started_at = now(), worker and source position. No change when the job is 'done'
 * (already_done = 1). Returns 0 (cb will be called), or an error from pg_query() (cb not
 * called). */
int store_job_started(pg_conn *pg, const store_job *job, store_cb cb, void *user,
                      vl3_error *reterr);

/* Record a finished job: upsert video (may be NULL), insert the n results and set status 'done',
 * finished_at = now(), video_id, in ONE statement. Results with a missing task or answer are
 * refused with -EINVAL before anything is sent. n may be 0. Returns like store_job_started(). */
int store_job_done(pg_conn *pg, const store_job *job, const store_video *video,
                   const store_result *results, size_t n, store_cb cb, void *user,
                   vl3_error *reterr);

/* Record a failed attempt: status 'failed' when permanent, else 'retrying'; last_error = reason;
 * finished_at = now() when permanent. Creates the job row if missing. Never changes a 'done'
 * job (already_done = 1). */
int store_job_failed(pg_conn *pg, const store_job *job, const char *reason, int permanent,
                     store_cb cb, void *user, vl3_error *reterr);

/* --- reads for `vl3 status` (blocking libpq: CLI only, never on the daemon loop) ------------ */

#define STORE_STATUS_MAX_FAILURES 10

typedef struct store_failure {
    char job_id[128];
    char path[512];
    char last_error[512];
    int attempts;
    char finished_at[40]; /* ISO timestamp text */
} store_failure;

typedef struct store_status {
    int64_t count[5];      /* by status: queued, running, retrying, done, failed */
    int64_t done_last_10m; /* jobs finished 'done' in the last 10 minutes */
    double jobs_per_min;   /* done_last_10m / 10 */
    int64_t results;       /* result rows */
    int64_t videos;        /* video rows */
    int nfailures;         /* entries in failures, newest first */
    store_failure failures[STORE_STATUS_MAX_FAILURES];
} store_status;

/* Index of a status name in store_status.count, or -1. */
int store_status_index(const char *status);
/* Name of index i (0..4). */
const char *store_status_name(int i);

/* Connect with conninfo (blocking), read the status, disconnect. Returns 0, VL3_E_PG (server
 * unreachable, schema missing: the message says which) or -ENOMEM. */
int store_status_load(const char *conninfo, store_status *ret_status, vl3_error *reterr);

#endif
