/* parallel.c: the CPU backend's row-parallel loop for its small ops (norms, RoPE, adds,
 * activations): [0, n) cut into one contiguous range per thread, threads made per call.
 *
 * Why per-call threads and not a pool: the ops that use this run for milliseconds on the sizes
 * where it splits (at least min_per_thread units per thread; smaller calls run inline), so the
 * ~20 us of pthread_create per thread is under 1%, and nothing outlives a call. Each range is
 * computed exactly as the single-threaded loop would, so results do not depend on the thread
 * count. */
#include <pthread.h>

#include "cpu_ops.h"

#define MAX_THREADS 64

struct range_job {
    vl3__cpu_range_fn fn;
    void *arg;
    int64_t lo, hi;
};

static void *range_run(void *p)
{
    struct range_job *j = p;
    j->fn(j->arg, j->lo, j->hi);
    return NULL;
}

void vl3__cpu_parallel(void *ctx, int64_t n, int64_t min_per_thread, vl3__cpu_range_fn fn,
                       void *arg)
{
    if (n <= 0)
        return;
    int64_t nt = vl3__cpu_threads(ctx);
    if (min_per_thread < 1)
        min_per_thread = 1;
    if (nt > n / min_per_thread)
        nt = n / min_per_thread;
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if (nt <= 1) {
        fn(arg, 0, n);
        return;
    }
    struct range_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct range_job){fn, arg, n * k / nt, n * (k + 1) / nt};
        if (k > 0)
            started[k] = pthread_create(&th[k], NULL, range_run, &jobs[k]) == 0;
    }
    range_run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            range_run(&jobs[k]); /* no thread: its range runs here */
    }
}
