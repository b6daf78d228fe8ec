/* worker_budget.h: the worker's memory budget (memory_budget): bytes reserved for decoded
 * frames, pixel values and visual rows of queued work. A reservation waits while the budget is
 * full (back-pressure on the decode threads) and is refused at once when it could never fit. */
#ifndef VL3_WORKER_BUDGET_H
#define VL3_WORKER_BUDGET_H

#include <pthread.h>
#include <stdint.h>

#include "vl3/err.h"

struct worker_budget {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t total, used, peak;
    int closed;
};

int worker_budget_init(struct worker_budget *b, int64_t total);
void worker_budget_deinit(struct worker_budget *b);
/* Reserve n bytes, waiting for room. Returns 0, VL3_E_LIMIT (n > total: never fits),
 * -ECANCELED (closed while waiting). */
int worker_budget_reserve(struct worker_budget *b, int64_t n, vl3_error *reterr);
/* Account n bytes already allocated, without waiting (the total may be passed by this much). */
void worker_budget_charge(struct worker_budget *b, int64_t n);
/* Wait while the budget is full and *queued (bytes the caller handed on, which their consumer
 * gives back) is above zero. Returns 0, or -ECANCELED once closed. */
int worker_budget_wait_room(struct worker_budget *b, const _Atomic int64_t *queued);
/* Give back n bytes (n <= what the caller holds). */
void worker_budget_release(struct worker_budget *b, int64_t n);
/* Wake every waiter with -ECANCELED. */
void worker_budget_close(struct worker_budget *b);
int64_t worker_budget_used(struct worker_budget *b);
int64_t worker_budget_peak(struct worker_budget *b);

#endif
