/* supervise.h: the vl3-worker processes of vl3d (uv_spawn, framed stdin/stdout protocol).
 *
 * The supervisor keeps workers.count workers running and dispatches queued jobs (highest
 * priority first, FIFO within a priority) to them. Each worker holds up to its credits jobs at
 * once (HELLO.credits of protocol 2, capped by options.credits; 1 for a protocol-1 worker); a
 * job goes to the ready worker holding the fewest. It watches them:
 *  - a worker that exits or is killed is restarted with exponential backoff (100 ms doubling to
 *    30 s, reset after a job completed or 30 s of life). Its jobs are re-queued first in line.
 *    Crash attribution: if it held one job, that job is charged (kills + 1) and reported poison
 *    (on_poison) once it has killed or hung jobs.max_attempts workers; if it held several, none
 *    is charged: each becomes a suspect whose next attempt runs alone (a worker holding a suspect
 *    gets no other job, and a suspect waits for an empty worker, holding back the jobs queued
 *    after it so that it cannot starve);
 *  - a worker that sends no frame at all for jobs.timeout while holding jobs (silent as a
 *    whole), or does not say hello within the startup timeout, is hung: SIGKILL, then as above;
 *  - a held job whose own hang timer runs out (no progress, tokens or result frame of that job
 *    for stall_timeout, the timer restarting whenever another job of the worker ends) gets its
 *    worker killed as stalled, then as above;
 *  - a protocol violation kills the worker too (the stream cannot be resynchronised).
 * Jobs are owned by the caller, which embeds struct sv_job in its own record; every job
 * submitted ends in exactly one of on_done, on_error, on_poison, on_abandoned (after
 * supervise_cancel of a running job), or is handed back by supervise_cancel returning 1.
 * Loop-thread only. */
#ifndef VL3D_SUPERVISE_H
#define VL3D_SUPERVISE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vl3/err.h"
#include "vl3/proto.h"

enum sv_job_state { SV_JOB_NEW, SV_JOB_QUEUED, SV_JOB_RUNNING, SV_JOB_FINISHED };

struct sv_worker;

struct sv_job {
    const char *id;             /* the job id frames name (borrowed; set before submit) */
    struct sv_job *next, *prev; /* queue links (internal) */
    int priority;               /* 0..9, higher first */
    int attempts;               /* dispatches so far */
    int kills;                  /* attempts that ended with the worker killed, crashed or hung */
    int state;                  /* enum sv_job_state */
    int cancelled;
    int suspect; /* held by a worker that died holding several jobs: the next attempt is alone */
    int shared_deaths; /* attempts that ended so (not charged: not counted as attempts either) */
    uint64_t dispatched_ns;
    struct sv_worker *worker;
};

struct supervise_ops {
    /* Build the JOB frame for attempt (1-based) of j: an owned buffer (free()). 0 or < 0. */
    int (*encode)(void *user, struct sv_job *j, int attempt, uint8_t **buf, size_t *len);
    void (*on_result)(void *user, struct sv_job *j, const struct vl3_proto_result *r);
    void (*on_done)(void *user, struct sv_job *j, const struct vl3_proto_done *d);
    /* the worker reported an error for j; j is no longer running. Retry is the caller's call. */
    void (*on_error)(void *user, struct sv_job *j, const struct vl3_proto_error *e);
    void (*on_poison)(void *user, struct sv_job *j, const char *reason);
    void (*on_abandoned)(void *user, struct sv_job *j); /* a cancelled running job ended */
    void (*on_stopped)(void *user);                      /* supervise_stop finished */
    void *user;
};

struct supervise_options {
    const char *path;   /* worker executable (borrowed for the supervisor's life) */
    const char *config; /* passed as --config when non-empty (borrowed likewise) */
    int count;
    int max_attempts;
    uint64_t job_timeout_ms;
    uint64_t startup_timeout_ms; /* hello deadline (0 = 120 s) */
    uint64_t ping_interval_ms;   /* 0 = 5 s */
    /* a busy worker whose job sent no progress (progress, tokens, result) for this long is
     * killed as stalled, even if it answers pings (0 = off) */
    uint64_t stall_timeout_ms;
    int credits; /* most jobs one worker holds (0 = what its HELLO offers) */
    const char *backend; /* passed as --backend when non-empty and not "auto" (borrowed) */
    /* device of each slot: NULL/"" = none, "slot" = the slot index, or a comma-separated list of
     * GPU indices (slot i gets entry i mod n); borrowed. Given as CUDA_VISIBLE_DEVICES (replacing
     * the daemon's own), or as --device when device_arg is set. */
    const char *devices;
    int device_arg;
};

struct supervise_stats {
    uint64_t spawned, exited, killed_hung, restarts, dispatched, poisoned, proto_errors;
    uint64_t suspects; /* jobs re-queued to run alone after their worker died holding several */
    uint64_t lost;     /* jobs re-queued because their worker's pongs stopped listing them */
    size_t queued, busy, alive; /* busy: workers holding at least one job */
    size_t running;             /* jobs held by workers */
};

struct supervise;

/* Start count workers. Returns 0 and an owned supervisor, -EINVAL, -ENOMEM. Spawn failures are
 * not errors here: they are retried with backoff and logged. */
int supervise_new(uv_loop_t *loop, const struct supervise_options *opts,
                  const struct supervise_ops *ops, struct supervise **ret, vl3_error *reterr);

/* Queue j (borrowed until it ends, see above). */
void supervise_submit(struct supervise *sv, struct sv_job *j);
/* Re-queue j after a retryable worker error (counts as an attempt, not a kill). */
void supervise_retry(struct supervise *sv, struct sv_job *j);
/* Cancel j: returns 1 if it was queued (removed, no callback will come), 0 if it is running
 * (its results will be dropped and on_abandoned called when it ends). */
int supervise_cancel(struct supervise *sv, struct sv_job *j);

/* Reloadable limits. */
void supervise_set_limits(struct supervise *sv, int max_attempts, uint64_t job_timeout_ms);

void supervise_get_stats(const struct supervise *sv, struct supervise_stats *ret);

/* Stop: queued jobs stay queued (the caller cancels them), workers get EOF on stdin (they exit
 * after their current job), are SIGKILLed after grace_ms, handles are closed, the supervisor
 * frees itself and on_stopped runs. Running jobs not finished by then end in on_abandoned. */
void supervise_stop(struct supervise *sv, uint64_t grace_ms);

#endif
