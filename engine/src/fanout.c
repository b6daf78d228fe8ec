/* fanout.c: jobs over a few short-lived threads (fanout.h). Thread creation costs tens of
 * microseconds, against milliseconds per job for the callers (a frame's resize). */
#include <pthread.h>

#include "fanout.h"

struct fanout {
    vl3__fanout_fn fn;
    void *arg;
    int n_jobs;
    int next; /* the next job, taken with an atomic increment */
};

struct fanout_thread {
    struct fanout *f;
    int id;
};

static void *fanout_main(void *p)
{
    struct fanout_thread *t = p;
    for (;;) {
        int job = __atomic_fetch_add(&t->f->next, 1, __ATOMIC_RELAXED);
        if (job >= t->f->n_jobs)
            break;
        t->f->fn(t->f->arg, job, t->id);
    }
    return NULL;
}

void vl3__fanout(int n_threads, int n_jobs, vl3__fanout_fn fn, void *arg)
{
    struct fanout f = {fn, arg, n_jobs, 0};
    int nt = n_threads < n_jobs ? n_threads : n_jobs;
    if (nt > VL3__FANOUT_MAX_THREADS)
        nt = VL3__FANOUT_MAX_THREADS;
    if (nt < 1)
        nt = 1;
    pthread_t tid[VL3__FANOUT_MAX_THREADS];
    struct fanout_thread ts[VL3__FANOUT_MAX_THREADS];
    int started[VL3__FANOUT_MAX_THREADS] = {0};
    for (int i = 1; i < nt; i++) {
        ts[i] = (struct fanout_thread){&f, i};
        started[i] = pthread_create(&tid[i], NULL, fanout_main, &ts[i]) == 0;
    }
    ts[0] = (struct fanout_thread){&f, 0};
    fanout_main(&ts[0]);
    for (int i = 1; i < nt; i++)
        if (started[i])
            pthread_join(tid[i], NULL);
}
