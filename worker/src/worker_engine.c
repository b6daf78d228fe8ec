/* worker_engine.c: the engine thread. It owns the vision encoder and the generation scheduler.
 * Each turn it takes queued windows (of any jobs) up to batch.vision_frames frames, waiting up to
 * batch.vision_wait for more while decode threads are busy and nothing is generating, encodes
 * them in ONE vision-encoder call (vl3_vision_encode_many; per-frame attention keeps windows
 * independent), builds one prompt per window x task, submits them to the scheduler, and runs one
 * scheduler step (new prompts join, every active sequence advances by one token). Finished
 * answers are attached to their job; a job's last answer sends its frames. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vl3/log.h"
#include "vl3/util.h"
#include "worker_cache.h"
#include "worker_internal.h"

static uint64_t seed_of(const char *s, int task, int window)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ^ ((uint64_t)task << 32) ^ (uint64_t)window;
}

/* Take windows for one encoder call. Caller holds the lock. */
static struct worker_unit *take_units(struct worker *w, int *ret_frames)
{
    int64_t maxf = w->conf->vision_batch_frames;
    struct worker_unit *head = NULL, **tail = &head;
    int frames = 0;
    while (w->unitq_head) {
        struct worker_unit *u = w->unitq_head;
        if (head && frames + u->pw.n_frames > maxf)
            break;
        w->unitq_head = u->next;
        if (!w->unitq_head)
            w->unitq_tail = NULL;
        w->unitq_frames -= u->pw.n_frames;
        u->next = NULL;
        *tail = u;
        tail = &u->next;
        frames += u->pw.n_frames;
    }
    *ret_frames = frames;
    return head;
}

/* Whether the engine should hold its queued windows for more: nothing generates meanwhile, the
 * batch is not full, and a decode thread is still making frames (or a job waits for one). */
static int batch_can_grow_locked(const struct worker *w, int busy)
{
    return w->unitq_head && !busy && !w->stopping &&
           w->unitq_frames < w->conf->vision_batch_frames &&
           (w->decoding > 0 || w->jobq_head);
}

/* The batching window: wait up to ms for more windows, until the batch is full or no decode
 * thread can add to it. One wake-up is not enough: a decode thread signals when it queues a
 * window and again when its job ends, so a single wait would end at the first window. */
static void batch_window_locked(struct worker *w, int busy, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (batch_can_grow_locked(w, busy))
        if (pthread_cond_timedwait(&w->cond_engine, &w->lock, &ts) == ETIMEDOUT)
            break;
}

/* Encode every unit in one vision-encoder call (the pipeline's encode step: the rows before the
 * projector, batched by the engine, then the projector per window) into its visual tokens. */
static int encode_units(struct worker *w, struct worker_unit *units, int n, int frames,
                        vl3_error *err)
{
    struct pipeline_window **ws = malloc(sizeof(*ws) * (size_t)n);
    uint64_t t0 = vl3_time_ns();
    int rc, i = 0;
    if (!ws) {
        rc = vl3_error_set(err, -ENOMEM, "out of memory for a vision batch of %d frames", frames);
    } else {
        for (struct worker_unit *u = units; u; u = u->next, i++)
            ws[i] = &u->pw;
        rc = pipeline_encode(&w->pl, w->vision, ws, n, err);
    }
    free(ws);
    double ms = (double)(vl3_time_ns() - t0) / 1e6;
    w->vision_calls++;
    if (frames > w->vision_frames_max)
        w->vision_frames_max = frames;
    if (n > w->vision_units_max)
        w->vision_units_max = n;
    int jobs = 0; /* distinct jobs among the windows */
    for (struct worker_unit *u = units; u; u = u->next) {
        int seen = 0;
        for (struct worker_unit *v = units; v != u && !seen; v = v->next)
            seen = v->job == u->job;
        jobs += !seen;
    }
    vl3_log_info("vision batch windows=%d jobs=%d frames=%d ms=%.1f", n, jobs, frames, ms);
    for (struct worker_unit *u = units; u; u = u->next) {
        u->vision_batch_jobs = jobs;
        u->vision_ms = ms;
        u->vision_batch_frames = frames;
        u->vision_batch_units = n;
    }
    return rc;
}

static int submit_prompts(struct worker *w, struct worker_unit *u, vl3_error *err)
{
    struct worker_job *job = u->job;
    if (!w->lm)
        return vl3_error_set(err, VL3_E_UNSUPPORTED,
                             "this worker has no language model to answer with");
    struct worker_gen **gens = calloc((size_t)job->ntasks, sizeof(*gens));
    if (!gens)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    int rc = 0, t;
    for (t = 0; t < job->ntasks; t++) {
        struct worker_gen *g = gens[t] = calloc(1, sizeof(*g));
        char *text = NULL;
        if (!g) {
            rc = vl3_error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        g->unit = u;
        g->task = t;
        if ((rc = vl3_task_instruction((enum vl3_task)job->kinds[t], &w->texts,
                                       job->questions[t], u->pw.is_image ? "image" : "video",
                                       &text, err)) < 0)
            goto fail;
        /* the hand-off: the prompt from the window's visual tokens, as vl3 run builds it */
        vl3_prompt_params pp = w->pl.mm.prompt;
        pp.user_text = text;
        rc = pipeline_prompt(&pp, w->tok, &u->pw.vt, &g->prompt, err);
        free(text);
        if (rc < 0)
            goto fail;
        struct worker_seq *q = &g->seq;
        q->ids = g->prompt.ids;
        q->n_ids = (int)g->prompt.n_ids;
        q->visual = u->pw.vt.visual;
        q->visual_pos = g->prompt.visual_pos;
        q->n_visual = (int)g->prompt.n_visual;
        q->visual_dim = u->pw.vt.hidden;
        q->max_new_tokens = (int)(job->max_new_tokens > 0 ? job->max_new_tokens
                                                          : w->conf->max_new_tokens);
        q->temperature = (float)job->temperature;
        q->seed = w->conf->seed >= 0 ? (uint64_t)w->conf->seed : seed_of(job->id, t, u->pw.window);
        q->user = g;
        q->group = job;
    }
    for (t = 0; t < job->ntasks; t++) {
        if ((rc = worker_sched_submit(w->sched, &gens[t]->seq)) < 0) {
            /* the ones already submitted finish normally; fail the rest */
            vl3_error_set(err, rc, "could not queue an answer");
            for (int k = t; k < job->ntasks; k++) {
                vl3_prompt_deinit(&gens[k]->prompt);
                free(gens[k]);
            }
            u->seqs_left = t;
            free(gens);
            return rc;
        }
    }
    u->seqs_left = job->ntasks;
    free(gens);
    return 0;
fail:
    for (int k = 0; k < job->ntasks; k++)
        if (gens[k]) {
            vl3_prompt_deinit(&gens[k]->prompt);
            free(gens[k]);
        }
    free(gens);
    return rc;
}

static int count_pruned_frames(const vl3_token_mask *m)
{
    int n = 0;
    for (int i = 0; i < m->n_frames; i++)
        n += m->kept_per_frame[i] < m->total_per_frame[i];
    return n;
}

/* Scheduler callback: one answer is finished (or failed). */
void worker_engine_seq_done(void *user, struct worker_seq *q)
{
    struct worker *w = user;
    struct worker_gen *g = q->user;
    struct worker_unit *u = g->unit;
    struct worker_job *job = u->job;
    char *text = NULL;
    size_t len = 0;
    vl3_error err = {0};
    int rc = q->rc;
    if (rc < 0) {
        err = q->err;
    } else if ((rc = vl3_tokenizer_decode(w->tok, q->out, (size_t)q->n_out, 1, NULL, 0, &len,
                                          &err)) >= 0) {
        if (!(text = malloc(len + 1)))
            rc = vl3_error_set(&err, -ENOMEM, "out of memory");
        else
            rc = vl3_tokenizer_decode(w->tok, q->out, (size_t)q->n_out, 1, text, len + 1, &len,
                                      &err);
    }
    pthread_mutex_lock(&w->lock);
    if (rc < 0) {
        if (rc == VL3_E_CUDA_FATAL)
            w->fatal = 1;
        worker_job_fail_locked(job, rc, &err);
    } else if (!job->rc) {
        if (job->n_answers == job->cap_answers) {
            int cap = job->cap_answers ? 2 * job->cap_answers : 8;
            struct worker_answer *na = realloc(job->answers, sizeof(*na) * (size_t)cap);
            if (!na) {
                vl3_error_set(&err, -ENOMEM, "out of memory");
                worker_job_fail_locked(job, -ENOMEM, &err);
                goto unlock;
            }
            job->answers = na;
            job->cap_answers = cap;
        }
        struct worker_answer *a = &job->answers[job->n_answers++];
        memset(a, 0, sizeof(*a));
        a->task = g->task;
        a->window = u->pw.window;
        a->t_start = u->pw.t_start;
        a->t_end = u->pw.t_end;
        a->answer = text;
        text = NULL;
        const struct pipeline_window *pw = &u->pw;
        a->stats = (struct worker_stats){job->frames_decoded, count_pruned_frames(&pw->vt.mask),
                                         q->n_out, q->max_batch, job->decode_ms, u->vision_ms,
                                         q->prefill_ms, q->generate_ms, pw->n_frames,
                                         pw->is_image || pw->n_frames <= 0
                                             ? 0
                                             : (pw->t_end - pw->t_start) / pw->n_frames,
                                         pw->vt.mask.n_tokens, pw->vt.mask.n_kept, q->n_ids,
                                         u->vision_batch_frames, u->vision_batch_units,
                                         u->vision_batch_jobs, q->max_groups, u->cache};
        vl3_log_info("answered job=%s task=%d window=%d prompt_tokens=%d shared_tokens=%d "
                     "generated=%d decode_batch=%d vision_batch_frames=%d "
                     "vision_batch_windows=%d tokens_kept=%lld/%lld",
                     job->id, g->task, pw->window, q->n_ids, q->shared_tokens, q->n_out,
                     q->max_batch, u->vision_batch_frames, u->vision_batch_units,
                     (long long)pw->vt.mask.n_kept, (long long)pw->vt.mask.n_tokens);
    }
unlock:
    free(text);
    vl3_prompt_deinit(&g->prompt);
    free(g);
    if (--u->seqs_left == 0) {
        worker_unit_free(w, u);
        worker_job_unref_locked(w, job);
    }
    pthread_mutex_unlock(&w->lock);
}

int worker_engine_seq_alive(void *user, const struct worker_seq *q)
{
    struct worker *w = user;
    const struct worker_gen *g = q->user;
    /* the decode thread (a later window failed) and the time limit write job->rc too */
    pthread_mutex_lock(&w->lock);
    int alive = g->unit->job->rc == 0;
    pthread_mutex_unlock(&w->lock);
    return alive;
}

/* A window the token cache answered: only the projector, on its cached rows (pipeline step). */
static int project_cached(struct worker *w, struct worker_unit *u, vl3_error *err)
{
    int rc = pipeline_window_project(&w->pl, w->vision, &u->pw, err);
    u->vision_ms = u->pw.encode_ms;
    return rc;
}

/* Encode and submit a set of units; units whose job failed are dropped. Units the token cache
 * answered (cache 2: pre-projector rows already there) skip the encoder and run the projector
 * only; the encoded ones that missed are stored. */
static void process_units(struct worker *w, struct worker_unit *units, int frames)
{
    struct worker_unit *todo = NULL, **tt = &todo, *hits = NULL, **ht = &hits;
    int n = 0;
    while (units) {
        struct worker_unit *u = units;
        units = u->next;
        u->next = NULL;
        if (u->cache == 2) {
            frames -= u->pw.n_frames;
            *ht = u;
            ht = &u->next;
        } else {
            *tt = u;
            tt = &u->next;
            n++;
        }
    }
    vl3_error err = {0};
    int rc = todo ? encode_units(w, todo, n, frames, &err) : 0;
    if (rc == 0)
        for (struct worker_unit *u = todo; u; u = u->next)
            worker_cache_store_unit(w, u);
    /* the hits go last: they never see an encoder failure */
    *tt = hits;
    units = todo ? todo : hits;
    int n_todo = n;
    while (units) {
        struct worker_unit *u = units;
        units = u->next;
        u->next = NULL;
        vl3_error e2 = err;
        int r = n_todo-- > 0 ? rc : 0;
        if (r == 0 && u->cache == 2) {
            e2 = (vl3_error){0};
            r = project_cached(w, u, &e2);
        }
        if (r == 0) {
            (void)worker_send_progress(&w->out, u->job->id, "generate", 0, u->job->ntasks);
            r = submit_prompts(w, u, &e2);
        }
        pthread_mutex_lock(&w->lock);
        if (r < 0) {
            if (r == VL3_E_CUDA_FATAL)
                w->fatal = 1;
            worker_job_fail_locked(u->job, r, &e2);
        }
        if (u->seqs_left == 0) { /* else its sequences free it when they finish */
            struct worker_job *job = u->job;
            worker_unit_free(w, u);
            worker_job_unref_locked(w, job);
        }
        pthread_mutex_unlock(&w->lock);
    }
}

static int sched_pending(const struct worker *w)
{
    return w->sched ? worker_sched_pending(w->sched) : 0;
}

void *worker_engine_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        int busy = sched_pending(w) > 0;
        pthread_mutex_lock(&w->lock);
        while (!w->unitq_head && !busy && !w->stopping)
            pthread_cond_wait(&w->cond_engine, &w->lock);
        if (w->stopping && !w->unitq_head && !busy) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        /* jobs past jobs.max_wall fail: their queued windows are dropped below, their
         * sequences cancelled by the scheduler (worker_engine_seq_alive) */
        uint64_t now = vl3_time_ns();
        for (struct worker_job *j = w->jobs; j; j = j->next_all)
            (void)worker_job_overdue_locked(w, j, now);
        /* batching window: nothing to decode meanwhile, more frames are on their way */
        if (w->conf->vision_batch_wait_ms > 0)
            batch_window_locked(w, busy, w->conf->vision_batch_wait_ms);
        int frames = 0;
        struct worker_unit *units = take_units(w, &frames);
        /* drop windows of jobs that already failed */
        struct worker_unit *keep = NULL, **kt = &keep;
        while (units) {
            struct worker_unit *u = units;
            units = u->next;
            u->next = NULL;
            if (u->job->rc) {
                frames -= u->pw.n_frames;
                struct worker_job *job = u->job;
                worker_unit_free(w, u);
                worker_job_unref_locked(w, job);
            } else {
                *kt = u;
                kt = &u->next;
            }
        }
        pthread_mutex_unlock(&w->lock);
        if (keep)
            process_units(w, keep, frames);
        if (sched_pending(w) > 0) {
            int rc = worker_sched_step(w->sched);
            if (rc == VL3_E_CUDA_FATAL) {
                pthread_mutex_lock(&w->lock);
                w->fatal = 1;
                pthread_mutex_unlock(&w->lock);
            }
        }
    }
    return NULL;
}
