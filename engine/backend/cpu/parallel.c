/* parallel.c: the CPU backend's thread pool (one per backend context) and its row-parallel loop
 * for the small ops (norms, RoPE, adds, activations).
 *
 * Why a pool: a decode token runs ~113 matrix products plus attention and small ops; creating and
 * joining threads per call cost tens of microseconds each and ran every product on cold threads.
 * The pool's workers are made once (on first use), spin briefly after each call (the next op of
 * a layer usually follows within microseconds) and then sleep on a condition variable. The
 * calling thread takes part: vl3__cpu_run(ctx, n, fn, arg) runs fn(arg, k) for every k in [0, n)
 * exactly once, the tasks taken in order from an atomic counter by whichever thread is free, and
 * returns when all have run. Results must not depend on which thread runs a task.
 *
 * Sharing: the model (and so the backend context) may be used by several threads at once. One
 * call holds the pool at a time (try-lock); a call that finds it busy (another thread's call, or
 * a task that itself calls vl3__cpu_run) runs its tasks on threads made for the call, as before
 * the pool existed, so nothing waits on another caller and nothing nests into a deadlock.
 *
 * Protocol: the caller writes the job, sets `active` to the worker count and publishes a new
 * generation (release); each worker, on seeing it (acquire), takes tasks until none are left and
 * then decrements `active`. The caller returns only when `active` is 0, so no worker still reads
 * the job when the next one is written. Sleeping workers are woken under the mutex (a worker
 * checks the generation under it before waiting: no lost wake-up); the caller likewise spins,
 * then sleeps until the last worker signals. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "cpu_ops.h"

#define MAX_THREADS 64
#define SPIN_NS 200000 /* how long a worker (or the waiting caller) spins before sleeping */

struct vl3__cpu_pool {
    int n_workers; /* threads made (the caller is one more) */
    int wanted;    /* threads to make on first use */
    pthread_t th[MAX_THREADS];
    pthread_mutex_t run_lock; /* held by the one call that uses the pool */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int sleeping, caller_sleeping; /* under mu */
    unsigned gen;                  /* atomic: bumped per job; workers wait for a new value */
    int stop;                      /* atomic */
    int active;                    /* atomic: workers not yet finished with this generation */
    int next;                      /* atomic: the next task to take */
    /* the job: written by the caller while every worker is idle */
    vl3__cpu_task_fn fn;
    void *arg;
    int n;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void take_tasks(struct vl3__cpu_pool *p, vl3__cpu_task_fn fn, void *arg, int n)
{
    for (;;) {
        int k = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (k >= n)
            break;
        fn(arg, k);
    }
}

/* Spin until *v != old or the spin budget is spent; returns whether it changed. */
static int spin_while_eq(const unsigned *v, unsigned old)
{
    uint64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(v, __ATOMIC_ACQUIRE) != old)
            return 1;
        CPU_RELAX();
        if ((i & 63) == 63) {
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                return 0;
        }
    }
}

static void *worker_main(void *arg)
{
    struct vl3__cpu_pool *p = arg;
    unsigned seen = 0;
    for (;;) {
        if (!spin_while_eq(&p->gen, seen)) {
            pthread_mutex_lock(&p->mu);
            p->sleeping++;
            while (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) == seen &&
                   !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&p->wake, &p->mu);
            p->sleeping--;
            pthread_mutex_unlock(&p->mu);
        }
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
            break;
        seen = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        take_tasks(p, p->fn, p->arg, p->n);
        if (__atomic_sub_fetch(&p->active, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeping)
                pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int vl3__cpu_pool_new(int n_threads, struct vl3__cpu_pool **ret_pool)
{
    struct vl3__cpu_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (n_threads > MAX_THREADS + 1)
        n_threads = MAX_THREADS + 1;
    p->wanted = n_threads > 1 ? n_threads - 1 : 0;
    p->n_workers = -1; /* not started */
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    *ret_pool = p;
    return 0;
}

void vl3__cpu_pool_free(struct vl3__cpu_pool *p)
{
    if (!p)
        return;
    if (p->n_workers > 0) {
        pthread_mutex_lock(&p->mu);
        __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int k = 0; k < p->n_workers; k++)
            pthread_join(p->th[k], NULL);
    }
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_lock);
    free(p);
}

/* ---- the fallback: threads made for the call ------------------------------------------------ */

struct once_job {
    vl3__cpu_task_fn fn;
    void *arg;
    int k;
};

static void *once_main(void *a)
{
    struct once_job *j = a;
    j->fn(j->arg, j->k);
    return NULL;
}

static void run_spawned(int n, vl3__cpu_task_fn fn, void *arg)
{
    struct once_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    int nt = n < MAX_THREADS ? n : MAX_THREADS;
    for (int k = 1; k < nt; k++) {
        jobs[k] = (struct once_job){fn, arg, k};
        started[k] = pthread_create(&th[k], NULL, once_main, &jobs[k]) == 0;
    }
    fn(arg, 0);
    for (int k = nt; k < n; k++)
        fn(arg, k);
    for (int k = 1; k < nt; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            fn(arg, k); /* no thread: its task runs here */
    }
}

void vl3__cpu_run(void *ctx, int n, vl3__cpu_task_fn fn, void *arg)
{
    if (n <= 0)
        return;
    struct vl3__cpu_pool *p = n > 1 ? vl3__cpu_pool_of(ctx) : NULL;
    if (!p || p->wanted == 0) {
        for (int k = 0; k < n; k++)
            fn(arg, k);
        return;
    }
    if (pthread_mutex_trylock(&p->run_lock) != 0) {
        run_spawned(n, fn, arg);
        return;
    }
    if (p->n_workers < 0) { /* first use: make the workers */
        p->n_workers = 0;
        while (p->n_workers < p->wanted &&
               pthread_create(&p->th[p->n_workers], NULL, worker_main, p) == 0)
            p->n_workers++;
    }
    if (p->n_workers == 0) {
        pthread_mutex_unlock(&p->run_lock);
        run_spawned(n, fn, arg);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    __atomic_store_n(&p->next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->active, p->n_workers, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->gen, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&p->mu);
    if (p->sleeping)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    take_tasks(p, fn, arg, n);
    /* wait for the workers: spin, then sleep until the last one signals */
    uint64_t t0 = now_ns();
    for (unsigned i = 0; __atomic_load_n(&p->active, __ATOMIC_ACQUIRE) != 0; i++) {
        CPU_RELAX();
        if ((i & 63) == 63 && now_ns() - t0 > SPIN_NS) {
            pthread_mutex_lock(&p->mu);
            p->caller_sleeping = 1;
            while (__atomic_load_n(&p->active, __ATOMIC_ACQUIRE) != 0)
                pthread_cond_wait(&p->done, &p->mu);
            p->caller_sleeping = 0;
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
    pthread_mutex_unlock(&p->run_lock);
}

/* ---- the row-parallel loop ------------------------------------------------------------------ */

struct range_job {
    vl3__cpu_range_fn fn;
    void *arg;
    int64_t n, nt;
};

static void range_task(void *a, int k)
{
    const struct range_job *j = a;
    j->fn(j->arg, j->n * k / j->nt, j->n * (k + 1) / j->nt);
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
    struct range_job j = {fn, arg, n, nt};
    vl3__cpu_run(ctx, (int)nt, range_task, &j);
}
