/* metrics.h: vl3d's counters and a Prometheus text-format endpoint (uv_tcp, GET /metrics).
 * Counters are plain fields updated on the loop thread; gauges are read through a callback when
 * a scrape arrives. No locking: everything runs on the loop. */
#ifndef VL3D_METRICS_H
#define VL3D_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vl3/err.h"

enum metrics_stage {
    METRICS_STAGE_DECODE,
    METRICS_STAGE_VISION,
    METRICS_STAGE_PREFILL,
    METRICS_STAGE_GENERATE,
    METRICS_STAGE_JOB,   /* dispatch to done, seen by the daemon */
    METRICS_STAGE_STORE, /* results transaction */
    METRICS_STAGE_COUNT
};

#define METRICS_NBUCKETS 12

struct metrics_hist {
    uint64_t bucket[METRICS_NBUCKETS]; /* cumulative counts are computed when rendering */
    uint64_t count;
    double sum_ms;
};

struct metrics_gauges {
    uint64_t in_flight, queued, workers_busy, workers_alive, kafka_paused, partitions;
    uint64_t jobs_held;     /* jobs held by workers (several per worker with credits) */
    uint64_t jobs_suspects; /* jobs re-run alone after a worker died holding several */
    uint64_t pg_queued, pg_connected;
};

struct metrics {
    uint64_t jobs_consumed, jobs_succeeded, jobs_failed, jobs_retried, jobs_poisoned,
        jobs_dead_lettered, jobs_skipped_done, jobs_abandoned, results_written;
    uint64_t frames_decoded, frames_pruned, tokens_generated;
    uint64_t cache_hits, cache_misses; /* token cache, per answer (RESULT stats.cache) */
    /* answers whose vision-encoder call / some decode step also served other jobs (batching
     * across jobs, from the worker's RESULT stats) */
    uint64_t answers_vision_shared, answers_decode_shared;
    uint64_t worker_restarts, worker_hangs, commits;
    struct metrics_hist stage[METRICS_STAGE_COUNT];
    struct metrics_hist batch_size; /* buckets reused as sizes */
    void (*gauges)(void *user, struct metrics_gauges *ret);
    void *gauges_user;
};

void metrics_observe(struct metrics_hist *h, double ms);
void metrics_observe_batch(struct metrics *m, int64_t batch);

/* Render the exposition text into an owned NUL-terminated buffer. 0 or -ENOMEM. */
int metrics_render(const struct metrics *m, char **ret, size_t *ret_len);

struct metrics_server;
/* Listen on "host:port" (IPv4 or [IPv6]:port). m is borrowed for the server's life. */
int metrics_server_start(uv_loop_t *loop, const char *listen, struct metrics *m,
                         struct metrics_server **ret, vl3_error *reterr);
/* Close the listener and open connections; frees itself in the close callbacks. NULL is ok. */
void metrics_server_stop(struct metrics_server *s);

#endif
