/* fanout.h: jobs over a few short-lived threads, for the preprocessing steps that run outside
 * the backend's thread pool (resize and patchify per frame, DiffFP per frame). */
#ifndef VL3_FANOUT_H
#define VL3_FANOUT_H

/* fn(arg, job, thread) for every job in [0, n_jobs), on min(n_threads, n_jobs) threads (the
 * caller one of them) taking jobs in order from a shared counter; thread is 0 .. threads-1
 * (for per-thread scratch). A thread that cannot be created leaves its share to the others.
 * Returns when every job has run. */
#define VL3__FANOUT_MAX_THREADS 64 /* more are capped to this */

typedef void (*vl3__fanout_fn)(void *arg, int job, int thread);
void vl3__fanout(int n_threads, int n_jobs, vl3__fanout_fn fn, void *arg);

#endif
