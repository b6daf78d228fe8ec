/* worker_cache.h: the worker's use of the token cache (worker_cache.c). Not a public header. */
#ifndef VL3_WORKER_CACHE_H
#define VL3_WORKER_CACHE_H

#include <sys/stat.h>

#include "worker_internal.h"

/* What the cache holds for one job's input: the listed windows and, per window, a hit. */
struct worker_cache_plan {
    char fp[TCACHE_FINGERPRINT_LEN]; /* content fingerprint of the input */
    int is_image;
    int n_windows;         /* windows listed (0: no list, the input must be decoded) */
    int *windows;          /* [n_windows] window numbers with frames */
    int n;                 /* 1 + the largest listed window */
    int n_hits;            /* listed windows found */
    vl3_visual_tokens *vt; /* [n] cached objects (hit[k]) */
    uint8_t *hit;          /* [n] */
    /* the rows the plan holds count in the worker's memory budget until they become units */
    struct worker_budget *budget;
    int64_t *charged;      /* [n] bytes charged for vt[k] */
    int64_t charged_sum;   /* all of them (the log's cache_bytes) */
    int uncharged;         /* worker_cache_plan_charge(p, 0) in effect */
};

/* The content fingerprint of the open input (fd borrowed; memoized per file version). Returns
 * 0 or < 0 (logged; the cache is then off for the job). */
int worker_cache_fingerprint(struct worker *w, const char *path, int fd, const struct stat *st,
                             char ret[TCACHE_FINGERPRINT_LEN]);

/* Look up the job's window list and windows (none for cache = refresh). The rows of the hits
 * are charged to the memory budget (without waiting: they are already read) until each becomes
 * a unit or the plan is freed. Returns 0 or -ENOMEM; a cache failure is a plan without hits. */
int worker_cache_plan(struct worker *w, const struct worker_job *job, const char *fp,
                      int is_image, struct worker_cache_plan *ret);
void worker_cache_plan_free(struct worker_cache_plan *p);

/* Give back (on = 0) or take again without waiting (on = 1) the budget charge of the entries the
 * plan holds: the decode stage waits for room for the frames of a partly cached input without
 * its own entries in the way (they could never be given back while it waits). */
void worker_cache_plan_charge(struct worker_cache_plan *p, int on);

/* Whether every listed window hit (the input need not be decoded). */
static inline int worker_cache_plan_complete(const struct worker_cache_plan *p)
{
    return p->n_windows > 0 && p->n_hits == p->n_windows;
}

/* A unit for hit window win: the plan's visual tokens moved into its window
 * (pipeline_window_from_cache; cache 2: the engine thread runs the projector only). The unit's
 * reserved bytes are its rows: those before the projector as cached and the f32 projector rows
 * the engine will make (queue it to charge them); the plan's charge for the entry is given back.
 * Returns 0 or -ENOMEM. */
int worker_cache_unit(struct worker *w, struct worker_job *job, struct worker_cache_plan *p,
                      int win, struct worker_unit **ret);

/* Mark u (a window that missed) to be stored after encoding: its key (refresh: the old entry is
 * deleted now). */
void worker_cache_miss(struct worker *w, const struct worker_job *job,
                       const struct worker_cache_plan *p, struct worker_unit *u);

/* Store the list of the windows of a decoded input (wins: the n window indices, in order). */
void worker_cache_store_windows(struct worker *w, const struct worker_job *job,
                                const struct worker_cache_plan *p, const int *wins, int n);

/* After encoding (engine thread): queue a copy of a missed unit's visual tokens (its rows
 * before the projector, vl3_visual_tokens_copy) for the writer thread, the unit's job keeping one pending reference until they are
 * stored (without a writer thread: stored here). */
void worker_cache_store_unit(struct worker *w, struct worker_unit *u);

/* The writer thread (after the cache is opened) and its end (drains the queue first). */
int worker_cache_writer_start(struct worker *w);
void worker_cache_writer_stop(struct worker *w);

#endif
