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
 * Protocol: the caller writes the job (fn, arg) and publishes a ticket (generation, task count,
 * next task) with a release store; a thread takes a task by compare-and-swap on the ticket
 * (acquire), so it reads the job only for a task it owns, and the caller does not write the next
 * job before every task of this one is done (`done` counts them). Workers that were asleep or
 * descheduled and took no task are not waited for: on a loaded machine the caller takes the
 * tasks itself and returns. Sleeping workers are woken under the mutex (a worker checks the
 * generation under it before waiting: no lost wake-up); the caller likewise spins, then sleeps
 * until the thread that finishes the last task signals. Workers spin only while the pool has no
 * more threads than online CPUs (spinning beyond that steals the cores that must run the tasks). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "cpu_ops.h"

#define MAX_THREADS 64
#define SPIN_NS 50000 /* how long a worker (or the waiting caller) spins before sleeping */

/* the ticket: generation (32 bits) | task count (16) | next task (16) */
#define T_GEN(t) ((unsigned)((t) >> 32))
#define T_N(t) ((int)(((t) >> 16) & 0xffff))
#define T_NEXT(t) ((int)((t) & 0xffff))
#define MAX_TASKS 0xffff

struct vl3__cpu_pool {
    int n_workers; /* threads made (the caller is one more); -1 before first use */
    int wanted;    /* threads to make on first use */
    int spin;      /* whether waiting threads spin before sleeping */
    pthread_t th[MAX_THREADS];
    pthread_mutex_t run_lock; /* held by the one call that uses the pool */
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cond;
    int sleeping, caller_sleeping; /* under mu */
    uint64_t ticket;               /* atomic */
    unsigned gen;                  /* the caller's generation count (under run_lock) */
    int stop;                      /* atomic */
    int done;                      /* atomic: tasks finished in this generation */
    /* the job: written by the caller before the ticket, stable until every task is done */
    vl3__cpu_task_fn fn;
    void *arg;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Take the next task of generation gen: its index, or -1 when none is left (or the generation
 * has moved on). */
static int claim(struct vl3__cpu_pool *p, unsigned gen)
{
    uint64_t t = __atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE);
    for (;;) {
        if (T_GEN(t) != gen || T_NEXT(t) >= T_N(t))
            return -1;
        if (__atomic_compare_exchange_n(&p->ticket, &t, t + 1, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return T_NEXT(t);
    }
}

/* Run the tasks of generation gen (n of them) that are left; wake a sleeping caller after the
 * last. */
static void take_tasks(struct vl3__cpu_pool *p, unsigned gen, int n)
{
    int k;
    while ((k = claim(p, gen)) >= 0) {
        p->fn(p->arg, k);
        if (__atomic_add_fetch(&p->done, 1, __ATOMIC_ACQ_REL) == n) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeping)
                pthread_cond_signal(&p->done_cond);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Spin until the ticket's generation differs from seen or the spin budget is spent; returns
 * whether it changed. */
static int spin_for_gen(struct vl3__cpu_pool *p, unsigned seen)
{
    uint64_t t0 = 0;
    for (unsigned i = 0; p->spin; i++) {
        if (T_GEN(__atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE)) != seen)
            return 1;
        CPU_RELAX();
        if ((i & 63) == 63) {
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                break;
        }
    }
    return T_GEN(__atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE)) != seen;
}

static void *worker_main(void *arg)
{
    struct vl3__cpu_pool *p = arg;
    unsigned seen = 0;
    for (;;) {
        if (!spin_for_gen(p, seen)) {
            pthread_mutex_lock(&p->mu);
            p->sleeping++;
            while (T_GEN(__atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE)) == seen &&
                   !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&p->wake, &p->mu);
            p->sleeping--;
            pthread_mutex_unlock(&p->mu);
        }
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
            break;
        uint64_t t = __atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE);
        seen = T_GEN(t);
        take_tasks(p, seen, T_N(t));
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
    p->n_workers = -1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    p->spin = cpus <= 0 || n_threads <= cpus;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cond, NULL);
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
    pthread_cond_destroy(&p->done_cond);
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
    if (n > MAX_TASKS || pthread_mutex_trylock(&p->run_lock) != 0) {
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
    unsigned gen = ++p->gen;
    __atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->ticket, ((uint64_t)gen << 32) | ((uint64_t)n << 16), __ATOMIC_RELEASE);
    pthread_mutex_lock(&p->mu);
    if (p->sleeping)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    take_tasks(p, gen, n);
    /* wait for the tasks other threads took: spin, then sleep until the last one signals */
    uint64_t t0 = now_ns();
    for (unsigned i = 0; __atomic_load_n(&p->done, __ATOMIC_ACQUIRE) != n; i++) {
        CPU_RELAX();
        if ((i & 63) == 63 && (!p->spin || now_ns() - t0 > SPIN_NS)) {
            pthread_mutex_lock(&p->mu);
            p->caller_sleeping = 1;
            while (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) != n)
                pthread_cond_wait(&p->done_cond, &p->mu);
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
