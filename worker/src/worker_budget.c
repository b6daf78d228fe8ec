/* worker_budget.c: a counting reservation with a condition variable (see worker_budget.h).
 * Waiters are woken on every release; a reservation larger than the whole budget fails at once,
 * so no request can wait forever for room that never comes. */
#include "worker_budget.h"

#include <errno.h>

int worker_budget_init(struct worker_budget *b, int64_t total)
{
    b->total = total;
    b->used = b->peak = 0;
    b->closed = 0;
    int rc = pthread_mutex_init(&b->lock, NULL);
    if (rc)
        return -rc;
    if ((rc = pthread_cond_init(&b->cond, NULL))) {
        pthread_mutex_destroy(&b->lock);
        return -rc;
    }
    return 0;
}

void worker_budget_deinit(struct worker_budget *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
}

int worker_budget_reserve(struct worker_budget *b, int64_t n, vl3_error *reterr)
{
    if (n > b->total)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "input needs %lld bytes of frames, more than memory_budget %lld",
                             (long long)n, (long long)b->total);
    pthread_mutex_lock(&b->lock);
    while (!b->closed && b->used + n > b->total)
        pthread_cond_wait(&b->cond, &b->lock);
    int rc = 0;
    if (b->closed) {
        rc = vl3_error_set(reterr, -ECANCELED, "worker stopping");
    } else {
        b->used += n;
        if (b->used > b->peak)
            b->peak = b->used;
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

void worker_budget_charge(struct worker_budget *b, int64_t n)
{
    pthread_mutex_lock(&b->lock);
    b->used += n;
    if (b->used > b->peak)
        b->peak = b->used;
    pthread_mutex_unlock(&b->lock);
}

int worker_budget_wait_room(struct worker_budget *b, const _Atomic int64_t *queued)
{
    pthread_mutex_lock(&b->lock);
    while (!b->closed && b->used >= b->total && *queued > 0)
        pthread_cond_wait(&b->cond, &b->lock);
    int rc = b->closed ? -ECANCELED : 0;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

void worker_budget_release(struct worker_budget *b, int64_t n)
{
    if (n <= 0)
        return;
    pthread_mutex_lock(&b->lock);
    b->used -= n;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void worker_budget_close(struct worker_budget *b)
{
    pthread_mutex_lock(&b->lock);
    b->closed = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

int64_t worker_budget_used(struct worker_budget *b)
{
    pthread_mutex_lock(&b->lock);
    int64_t u = b->used;
    pthread_mutex_unlock(&b->lock);
    return u;
}

int64_t worker_budget_peak(struct worker_budget *b)
{
    pthread_mutex_lock(&b->lock);
    int64_t p = b->peak;
    pthread_mutex_unlock(&b->lock);
    return p;
}
