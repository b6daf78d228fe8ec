/* worker.c: vl3-worker's protocol loop and job bookkeeping (see worker.h for the threads).
 *
 * The reader thread (worker_run's caller) never runs inference: it parses frames, answers PING
 * at once with the oldest job in progress, admits JOB frames into the bounded job list and
 * queue, and on EOF waits until every accepted job has been answered before stopping the
 * threads. A protocol violation (bad frame, unexpected type) is fatal for the stream: an ERROR
 * without job id is sent and worker_run returns WORKER_EXIT_SOFTWARE. A device fault reported by
 * the engine makes it return WORKER_EXIT_TEMPFAIL after failing the jobs it touched. */
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vl3/log.h"
#include "vl3/util.h"
#include "media_conf.h"
#include "worker_cache.h"
#include "worker_internal.h"

#define READ_CHUNK 65536
#define POLL_MS 200

/* set from a signal handler (worker_request_stop); read by the reader loop */
static volatile sig_atomic_t stop_requested;

void worker_request_stop(void)
{
    stop_requested = 1;
}

/* ---- jobs ---- */

static void job_free(struct worker_job *j)
{
    if (!j)
        return;
    for (int i = 0; i < j->n_answers; i++)
        free(j->answers[i].answer);
    free(j->answers);
    for (int i = 0; i < j->ntasks; i++)
        free(j->questions[i]);
    free(j->id);
    free(j->input);
    free(j);
}

void worker_unit_free(struct worker *w, struct worker_unit *u)
{
    if (!u)
        return;
    if (u->queued)
        u->job->queued_bytes -= u->reserved; /* before the release wakes the decode thread */
    worker_budget_release(&w->budget, u->reserved);
    pipeline_window_deinit(&u->pw);
    free(u->key_descr);
    free(u);
}

void worker_job_fail_locked(struct worker_job *job, int rc, const vl3_error *err)
{
    if (job->rc)
        return;
    job->rc = rc;
    job->err = *err;
    if (!job->err.msg[0])
        vl3_error_set(&job->err, rc, "%s", vl3_strerror(rc));
}

int worker_job_overdue_locked(struct worker *w, struct worker_job *job, uint64_t now)
{
    if (job->rc)
        return 1;
    uint64_t limit_ns = (uint64_t)w->conf->max_wall_ms * 1000000ull;
    if (now - job->t_received_ns <= limit_ns)
        return 0;
    vl3_error err = {0};
    vl3_error_set(&err, VL3_E_LIMIT, "job exceeded its time limit (jobs.max_wall %lld ms)",
                  (long long)w->conf->max_wall_ms);
    worker_job_fail_locked(job, VL3_E_LIMIT, &err);
    return 1;
}

static int answer_cmp(const void *a, const void *b)
{
    const struct worker_answer *x = a, *y = b;
    if (x->task != y->task)
        return x->task - y->task;
    return x->window - y->window;
}

/* Send the job's outcome. Called without the lock; the job is no longer reachable. */
static void job_send(struct worker *w, struct worker_job *j)
{
    double total_ms = (double)(vl3_time_ns() - j->t_received_ns) / 1e6;
    if (j->rc) {
        int retry = 0;
        const char *code = NULL;
        (void)worker_send_error(&w->out, j->id, j->rc, j->err.msg, &code, &retry);
        vl3_log_warning("job failed job=%s code=%s retryable=%d: %s", j->id, code, retry,
                        j->err.msg);
        return;
    }
    qsort(j->answers, (size_t)j->n_answers, sizeof(*j->answers), answer_cmp);
    for (int i = 0; i < j->n_answers; i++) {
        struct worker_answer *a = &j->answers[i];
        struct worker_result r = {j->id, a->task, a->window, a->t_start, a->t_end, a->answer,
                                  a->stats};
        (void)worker_send_result(&w->out, &r);
    }
    (void)worker_send_done(&w->out, j->id, j->n_answers, &j->media);
    vl3_log_info("job done job=%s results=%d frames_decoded=%lld ms=%.1f", j->id, j->n_answers,
                 (long long)j->frames_decoded, total_ms);
}

void worker_job_unref_locked(struct worker *w, struct worker_job *job)
{
    if (--job->pending > 0)
        return;
    for (struct worker_job **p = &w->jobs; *p; p = &(*p)->next_all)
        if (*p == job) {
            *p = job->next_all;
            break;
        }
    w->n_jobs--;
    pthread_mutex_unlock(&w->lock);
    job_send(w, job);
    job_free(job);
    pthread_mutex_lock(&w->lock);
    pthread_cond_broadcast(&w->cond_idle);
}

static int job_from_msg(struct worker *w, const struct worker_job_req *m, struct worker_job **ret,
                        vl3_error *err)
{
    struct worker_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->id = strdup(m->job_id)) || !(j->input = strdup(m->input))) {
        job_free(j);
        return vl3_error_set(err, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < m->ntasks; i++) {
        int k = vl3_task_parse(m->tasks[i].kind);
        if (k < 0) {
            job_free(j);
            return vl3_error_set(err, VL3_E_UNSUPPORTED, "task %d is not supported", i);
        }
        j->kinds[i] = k;
        if (m->tasks[i].question && !(j->questions[i] = strdup(m->tasks[i].question))) {
            job_free(j);
            return vl3_error_set(err, -ENOMEM, "out of memory");
        }
        j->ntasks = i + 1;
        if (vl3_task_needs_question((enum vl3_task)k) && !m->tasks[i].question) {
            job_free(j);
            return vl3_error_set(err, -EINVAL, "task \"%s\" needs a question",
                                 vl3_task_name((enum vl3_task)k));
        }
    }
    if (m->ntasks == 0) {
        job_free(j);
        return vl3_error_set(err, -EINVAL, "job has no tasks");
    }
    media_conf_sample_params(w->conf, &j->sp); /* media.max_frames per job, memory budget */
    sample_fps_fraction(m->fps, &j->sp.fps_num, &j->sp.fps_den);
    j->sp.max_frames = m->max_frames; /* per window */
    j->sp.window_s = m->window_s;     /* 0 = one window over the whole video */
    j->sp.mode = m->fast ? SAMPLE_MODE_FAST : SAMPLE_MODE_EXACT;
    /* a native-layout model's one-window job samples as transformers' processor (vl3 run too) */
    j->sp.native = w->pl.native && j->sp.window_s <= 0;
    j->max_new_tokens = m->max_new_tokens;
    j->temperature = m->temperature;
    j->attempt = m->attempt;
    j->cache = m->cache;
    j->pending = 1;
    j->t_received_ns = vl3_time_ns();
    *ret = j;
    return 0;
}

/* Admit one JOB (reader thread). */
static void admit_job(void *user, const struct worker_job_req *m)
{
    struct worker *w = user;
    vl3_error err = {0};
    struct worker_job *j = NULL;
    int rc = 0;
    int retry = 0;
    pthread_mutex_lock(&w->lock);
    int n = w->n_jobs, dup = 0;
    for (struct worker_job *p = w->jobs; p; p = p->next_all)
        dup |= strcmp(p->id, m->job_id) == 0;
    pthread_mutex_unlock(&w->lock);
    if (stop_requested) {
        rc = vl3_error_set(&err, -EBUSY, "worker stopping");
    } else if (dup) {
        rc = vl3_error_set(&err, -EINVAL, "job \"%s\" is already in progress", m->job_id);
    } else if (n >= w->conf->max_queued_jobs) {
        rc = vl3_error_set(&err, -EBUSY, "worker busy: %d jobs in progress (jobs.max_queued)", n);
    } else {
        rc = job_from_msg(w, m, &j, &err);
    }
    if (rc < 0) {
        const char *code = NULL;
        (void)worker_send_error(&w->out, m->job_id, rc, err.msg, &code, &retry);
        vl3_log_warning("refused job=%s code=%s retryable=%d: %s", m->job_id, code, retry,
                        err.msg);
        return;
    }
    vl3_log_info("accepted job=%s input=\"%s\" tasks=%d attempt=%d", j->id, j->input, j->ntasks,
                 j->attempt);
    /* Test hook: VL3_TEST_CRASH_INPUT=TEXT makes the worker die (SIGKILL, as a crash would end
     * it) on accepting a job whose input contains TEXT, with the jobs it holds (a poison video) */
    const char *crash = getenv("VL3_TEST_CRASH_INPUT");
    if (crash && crash[0] && strstr(j->input, crash)) {
        vl3_log_warning("VL3_TEST_CRASH_INPUT: dying on job=%s", j->id);
        raise(SIGKILL);
    }
    pthread_mutex_lock(&w->lock);
    j->next_all = w->jobs;
    w->jobs = j;
    w->n_jobs++;
    if (w->jobq_tail)
        w->jobq_tail->next_q = j;
    else
        w->jobq_head = j;
    w->jobq_tail = j;
    pthread_cond_signal(&w->cond_jobs);
    pthread_mutex_unlock(&w->lock);
}

/* PONG listing the jobs held, oldest first (copies: the list changes once the lock is gone) */
static void answer_ping(void *user, int64_t seq)
{
    struct worker *w = user;
    char *ids[WORKER_MAX_CREDITS];
    int n = 0;
    pthread_mutex_lock(&w->lock);
    for (const struct worker_job *p = w->jobs; p; p = p->next_all) {
        if (n == WORKER_MAX_CREDITS)
            free(ids[--n]); /* the list is newest first: keep the oldest */
        memmove(ids + 1, ids, sizeof(ids[0]) * (size_t)n);
        if ((ids[0] = strdup(p->id)) != NULL)
            n++;
        else
            memmove(ids, ids + 1, sizeof(ids[0]) * (size_t)n);
    }
    pthread_mutex_unlock(&w->lock);
    (void)worker_send_pong(&w->out, seq, (const char *const *)ids, n);
    for (int i = 0; i < n; i++)
        free(ids[i]);
}

/* ---- lifecycle ---- */

int worker_new(const struct worker_conf *conf, const vl3_model *model, struct worker **ret,
               vl3_error *reterr)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    w->conf = conf;
    w->model = model;
    w->tok = vl3_model_tokenizer(model);
    w->out.fd = -1;
    int rc;
    if (!w->tok) {
        rc = vl3_error_set(reterr, VL3_E_FORMAT, "model \"%s\" has no tokenizer", conf->model);
        goto fail;
    }
    for (int t = 0; t < VL3_TASK_COUNT && t < 4; t++)
        w->texts.text[t] = conf->task_text[t] && conf->task_text[t][0] ? conf->task_text[t] : NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond_jobs, NULL);
    pthread_cond_init(&w->cond_engine, NULL);
    pthread_cond_init(&w->cond_idle, NULL);
    w->sync_ready = 1;
    if ((rc = worker_budget_init(&w->budget, conf->memory_budget)) < 0) {
        vl3_error_set(reterr, rc, "could not set up the memory budget");
        goto fail;
    }
    w->budget_ready = 1;
    if ((rc = vl3_vision_new(model, (int)conf->threads, &w->vision, reterr)) < 0)
        goto fail;
    if ((rc = pipeline_init(&w->pl, model, w->vision, reterr)) < 0)
        goto fail;
    pipeline_set_threads(&w->pl, (int)conf->threads); /* short bursts beside inference */
    if (conf->cache_conninfo && conf->cache_conninfo[0] &&
        ((rc = pipeline_identify(&w->pl, model, reterr)) < 0 ||
         (rc = tcache_open(conf->cache_conninfo, conf->cache_budget, &w->tcache, reterr)) < 0))
        goto fail;
    if (w->tcache && (rc = worker_cache_writer_start(w)) < 0) {
        vl3_error_set(reterr, rc, "could not start the token cache writer");
        goto fail;
    }
    if (w->tcache && !tcache_ping(w->tcache))
        vl3_log_warning("the token cache is unreachable; jobs run without it until it answers "
                        "(the worker's sandbox allows Unix-domain sockets only: give "
                        "cache.conninfo a host that is a socket directory)");
    vl3_error lmerr = {0};
    rc = worker_lm_engine_new(model, (int)conf->max_sequences, (int)conf->n_ctx, &w->lm, &lmerr);
    if (rc == VL3_E_UNSUPPORTED) {
        vl3_log_warning("%s: jobs will fail after vision", lmerr.msg);
    } else if (rc < 0) {
        *reterr = lmerr;
        goto fail;
    } else if ((rc = worker_sched_new(w->lm, worker_engine_seq_done, w, &w->sched)) < 0) {
        vl3_error_set(reterr, rc, "out of memory for the scheduler");
        goto fail;
    }
    if (w->sched)
        worker_sched_set_alive(w->sched, worker_engine_seq_alive);
    *ret = w;
    return 0;
fail:
    worker_free(w);
    return rc;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    worker_sched_free(w->sched);
    worker_lm_free(w->lm);
    vl3_vision_free(w->vision);
    worker_cache_writer_stop(w);
    if (w->tcache) {
        struct tcache_stats st;
        tcache_get_stats(w->tcache, &st);
        vl3_log_info("token cache hits=%lld misses=%lld stores=%lld bytes_read=%lld "
                     "bytes_written=%lld evictions=%lld corrupt=%lld errors=%lld",
                     (long long)st.hits, (long long)st.misses, (long long)st.stores,
                     (long long)st.bytes_read, (long long)st.bytes_written,
                     (long long)st.evictions, (long long)st.corrupt, (long long)st.errors);
        tcache_close(w->tcache);
    }
    free(w->decoders);
    if (w->budget_ready)
        worker_budget_deinit(&w->budget);
    if (w->sync_ready) {
        pthread_cond_destroy(&w->cond_idle);
        pthread_cond_destroy(&w->cond_engine);
        pthread_cond_destroy(&w->cond_jobs);
        pthread_mutex_destroy(&w->lock);
    }
    free(w);
}

static int start_threads(struct worker *w)
{
    int n = (int)w->conf->decode_jobs;
    if (!(w->decoders = calloc((size_t)n, sizeof(pthread_t))))
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&w->decoders[i], NULL, worker_decode_main, w);
        if (rc)
            return -rc;
        w->n_decoders++;
    }
    int rc = pthread_create(&w->engine, NULL, worker_engine_main, w);
    if (rc)
        return -rc;
    w->engine_started = 1;
    vl3_log_info("worker started decode_jobs=%d max_sequences=%lld vision_batch_frames=%lld "
                 "memory_budget=%lld",
                 n, (long long)w->conf->max_sequences, (long long)w->conf->vision_batch_frames,
                 (long long)w->conf->memory_budget);
    return 0;
}

static void stop_threads(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cond_jobs);
    pthread_cond_broadcast(&w->cond_engine);
    pthread_mutex_unlock(&w->lock);
    worker_budget_close(&w->budget);
    for (int i = 0; i < w->n_decoders; i++)
        pthread_join(w->decoders[i], NULL);
    w->n_decoders = 0;
    if (w->engine_started)
        pthread_join(w->engine, NULL);
    w->engine_started = 0;
}

int worker_run(struct worker *w, int in_fd, int out_fd)
{
    int status = WORKER_EXIT_OK;
    uint8_t *buf = malloc(READ_CHUNK);
    worker_in *in = worker_in_new();
    const struct worker_in_ops ops = {admit_job, answer_ping, w};
    if (!buf || !in || worker_out_init(&w->out, out_fd) < 0) {
        free(buf);
        worker_in_free(in);
        return WORKER_EXIT_SOFTWARE;
    }
    vl3_model_info mi = {0};
    (void)vl3_model_get_info(w->model, &mi);
    if (start_threads(w) < 0 ||
        worker_send_hello(&w->out, "vl3-worker " VL3_VERSION, mi.backend ? mi.backend : "cpu",
                          (int64_t)getpid(),
                          (int)(w->conf->credits < w->conf->max_queued_jobs
                                    ? w->conf->credits
                                    : w->conf->max_queued_jobs)) < 0) {
        status = WORKER_EXIT_SOFTWARE;
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&w->lock);
        int fatal = w->fatal;
        pthread_mutex_unlock(&w->lock);
        if (fatal) {
            status = WORKER_EXIT_TEMPFAIL;
            break;
        }
        if (stop_requested) {
            pthread_mutex_lock(&w->lock);
            int left = w->n_jobs;
            pthread_mutex_unlock(&w->lock);
            if (left == 0) {
                vl3_log_info("stop requested and every accepted job answered, exiting");
                break;
            }
        }
        struct pollfd p = {in_fd, POLLIN, 0};
        int pr = poll(&p, 1, POLL_MS);
        if (pr < 0 && errno != EINTR) {
            status = WORKER_EXIT_SOFTWARE;
            break;
        }
        if (pr <= 0)
            continue;
        ssize_t n = read(in_fd, buf, READ_CHUNK);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            vl3_log_err("could not read the daemon's frames: %s", strerror(errno));
            status = WORKER_EXIT_SOFTWARE;
            break;
        }
        if (n == 0) { /* EOF: finish what was accepted, then stop */
            pthread_mutex_lock(&w->lock);
            while (w->n_jobs > 0 && !w->fatal)
                pthread_cond_wait(&w->cond_idle, &w->lock);
            if (w->fatal)
                status = WORKER_EXIT_TEMPFAIL;
            pthread_mutex_unlock(&w->lock);
            if (worker_in_buffered(in) > 0)
                vl3_log_warning("stdin closed inside a frame (%zu bytes), ignoring",
                                worker_in_buffered(in));
            break;
        }
        vl3_error err = {0};
        if (worker_in_feed(in, buf, (size_t)n, &ops, &err) < 0) {
            vl3_log_err("protocol violation, stopping: %s", err.msg);
            (void)worker_send_error(&w->out, NULL, VL3_E_PROTO, err.msg, NULL, NULL);
            status = WORKER_EXIT_SOFTWARE;
            break;
        }
    }
out:
    if (status == WORKER_EXIT_OK) {
        stop_threads(w);
    } else if (status == WORKER_EXIT_TEMPFAIL) {
        vl3_log_err("device fault, exiting for a restart");
        (void)worker_send_error(&w->out, NULL, VL3_E_CUDA_FATAL, "device fault; the worker exits",
                                NULL, NULL);
    }
    /* on failures the threads may be inside inference: the process exits without joining */
    worker_in_free(in);
    free(buf);
    return status;
}
