/* worker_io.h: the worker's side of the daemon protocol (common/include/vl3/proto.h).
 *
 * Output: whole frames written to one descriptor (stdout) from any thread, one frame at a time
 * under a lock, so frames of different threads never interleave. Input: a frame reader that
 * turns the daemon's bytes into calls (JOB, PING). This header does not include vl3/proto.h:
 * proto.h and the engine header both define VL3_TASK_* enumerators, so the worker keeps every
 * protocol type inside worker_io.c and passes neutral structs across. */
#ifndef VL3_WORKER_IO_H
#define VL3_WORKER_IO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#define WORKER_MAX_TASKS 16   /* == VL3_PROTO_MAX_TASKS (checked in worker_io.c) */
#define WORKER_MAX_CREDITS 64 /* == VL3_PROTO_MAX_CREDITS (checked in worker_io.c) */

struct worker_out {
    int fd;
    pthread_mutex_t lock;
    int broken; /* a write failed (the daemon is gone): later sends fail at once */
};

/* Statistics of one answer: the protocol's RESULT.stats fields. */
struct worker_stats {
    int64_t frames_decoded, frames_pruned, tokens_generated, batch_size;
    double decode_ms, vision_ms, prefill_ms, generate_ms;
    int64_t frames_sampled;   /* frames of the window the model saw (1 for an image) */
    double sample_interval_s; /* window duration / frames_sampled (0 for an image) */
    int64_t tokens_total, tokens_kept; /* visual tokens before / after DiffFP */
    int64_t prompt_tokens;
    int64_t vision_batch_frames;  /* frames in the vision-encoder call that served the window */
    int64_t vision_batch_windows; /* windows (of any jobs) in that call */
    int64_t vision_batch_jobs;    /* distinct jobs in that call */
    int64_t decode_step_jobs;     /* most distinct jobs in one decode step of this answer */
    int cache;                    /* token cache: 0 not used, 1 miss, 2 hit */
};

struct worker_result {
    const char *job_id;
    int task, window;
    double t_start, t_end;
    const char *answer;
    struct worker_stats stats;
};

int worker_out_init(struct worker_out *o, int fd);
void worker_out_deinit(struct worker_out *o);
/* Write buf[len] (borrowed) as one unit. Returns 0 or -errno (EPIPE when the reader is gone). */
int worker_out_write(struct worker_out *o, const uint8_t *buf, size_t len);

/* Encode and send one frame; strings are borrowed. Return 0 or a negative code. */
/* HELLO offering credits jobs at once (1..WORKER_MAX_CREDITS): level 2, or level 1 for one */
int worker_send_hello(struct worker_out *o, const char *version, const char *backend, int64_t pid,
                      int credits);
/* PONG listing the njobs jobs held (oldest first; at most WORKER_MAX_CREDITS are listed) */
int worker_send_pong(struct worker_out *o, int64_t seq, const char *const *jobs, int njobs);
int worker_send_progress(struct worker_out *o, const char *job_id, const char *stage,
                         int64_t done, int64_t total);
/* The input file as the decode stage saw it, sent with DONE (the daemon's videos table). */
struct worker_media {
    int present;     /* 0: nothing known (DONE goes without "media") */
    int64_t size;    /* bytes */
    int64_t mtime_s; /* modification time, seconds since the epoch */
    double duration_s; /* container duration, 0 = unknown or a still image */
    int width, height; /* displayed size */
    double fps;        /* average frame rate, 0 = unknown */
    char codec[32];    /* decoder name */
    char fingerprint[64]; /* content hash (token cache), "" when not computed */
};
int worker_send_done(struct worker_out *o, const char *job_id, int64_t results,
                     const struct worker_media *media /* may be NULL */);
int worker_send_result(struct worker_out *o, const struct worker_result *r);
/* An ERROR for job_id (NULL: the worker itself) from a vl3 code: the protocol's code and
 * retryability come from worker_errcode. *ret_code_name (may be NULL) gets the wire name. */
int worker_send_error(struct worker_out *o, const char *job_id, int code, const char *message,
                      const char **ret_code_name, int *ret_retryable);

/* Error class of a vl3/system code: the protocol's error code name and whether retrying may
 * help. Device faults (VL3_E_CUDA_FATAL) are "device", retryable. */
const char *worker_errcode(int code, int *ret_retryable);

/* ---- input ---- */

struct worker_task_req {
    const char *kind;     /* "caption", "ocr", "chart_qa", "qa" */
    const char *question; /* NULL when none */
};

/* A JOB frame, strings borrowed for the duration of the callback. */
struct worker_job_req {
    const char *job_id, *input;
    int ntasks;
    struct worker_task_req tasks[WORKER_MAX_TASKS];
    double fps;
    int64_t max_frames;
    int fast;        /* sampling mode "fast" */
    double window_s; /* 0 = the whole input is one window */
    int64_t max_new_tokens;
    double temperature;
    int attempt;
    int cache; /* enum vl3_cache_mode: 0 use, 1 refresh, 2 off */
};

struct worker_in_ops {
    void (*on_job)(void *user, const struct worker_job_req *job);
    void (*on_ping)(void *user, int64_t seq);
    void *user;
};

typedef struct worker_in worker_in;

/* A frame reader (returned owned; free with worker_in_free). NULL on OOM. */
worker_in *worker_in_new(void);
void worker_in_free(worker_in *in);
/* Feed bytes (borrowed) and dispatch every complete frame. Returns 0, or VL3_E_PROTO / -ENOMEM
 * (the stream is then broken for good; reterr says why). */
int worker_in_feed(worker_in *in, const void *buf, size_t n, const struct worker_in_ops *ops,
                   vl3_error *reterr);
/* Bytes of an incomplete frame still buffered. */
size_t worker_in_buffered(const worker_in *in);

#endif
