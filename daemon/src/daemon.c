/* daemon.c: vl3d's top-level object and the job state machine (see daemon.h).
 *
 * Everything runs on the loop thread. Subsystems get only what they need through callbacks;
 * struct vl3d is the one owner. Each job taken from Kafka is a struct djob on the in-flight list
 * until its outcome is durable (then its offset is marked done in offsets.c) or it is given up
 * (partition revoked, stop): then its offset is never marked done, and Kafka redelivers it.
 *
 * PostgreSQL steps (start, results, failure) are retried with backoff while the database is
 * away; results stay in memory meanwhile (bounded by kafka.max_in_flight, which pauses the
 * consumer). Revoked partitions: queued jobs are dropped, running ones abandoned (their results
 * are discarded when the worker finishes); the new owner redoes them and the idempotent writes
 * keep one answer. Stop: pause, hand back queued jobs, wait up to shutdown_timeout for running
 * ones, commit, close Kafka, stop workers, close PostgreSQL, close our handles. */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "kafka.h"
#include "metrics.h"
#include "migrate.h"
#include "notify.h"
#include "offsets.h"
#include "pg.h"
#include "store.h"
#include "supervise.h"
#include "vl3/log.h"

#define RETRY_MIN_MS 250
#define RETRY_MAX_MS 10000
#define STORE_GIVEUP_NONRETRYABLE 5
#define SUPERVISE_GRACE_MS 5000

enum dj_state {
    DJ_STARTING, /* store_job_started in flight */
    DJ_WORKING,  /* in the supervisor (queued or running) */
    DJ_STORING,  /* store_job_done in flight */
    DJ_FAILING,  /* store_job_failed in flight */
    DJ_WAIT,     /* waiting for the retry timer to redo the PostgreSQL step */
};

struct djob {
    struct sv_job sv; /* first: the supervisor's view */
    struct vl3d *d;
    struct djob *next, *prev; /* in-flight list */
    struct job *job;
    int state, wait_step; /* wait_step: the dj_state to redo after DJ_WAIT */
    int orphaned;         /* partition revoked or stopping: do not write, do not mark done */
    int pg_pending;       /* a store call is in flight */
    int sv_active;        /* submitted and not yet ended in the supervisor */
    struct store_result *res;
    char **strs; /* owned answer copies, one per res */
    size_t nres, capres;
    char *fail_reason;
    int has_video;       /* the worker described the input (DONE.media) */
    store_video video;   /* path borrowed from job, codec owned */
    int retries;
    uint64_t retry_at_ns, retry_ms;
    uint64_t taken_ns, dispatched_ns, store_ns;
};

struct dlq_item {
    struct vl3d *d;
    struct dlq_item *next, *prev;
    char *topic;
    int32_t partition;
    int64_t offset;
    void *payload;
    size_t len;
    void *key;     /* the original key (NULL = none) */
    size_t key_len;
    void *headers; /* the original headers (owned copy, kafka_headers_copy), or NULL */
    char *reason;
    int orphaned;
};

struct vl3d {
    uv_loop_t *loop;
    struct daemon_conf conf;
    const char *conf_path;
    struct kafka *kafka;
    pg_conn *pg;
    struct supervise *sv;
    struct metrics_server *msrv;
    struct metrics m;
    struct offsets offsets;
    struct djob *jobs; /* in-flight list */
    size_t njobs;
    struct dlq_item *dlq;
    size_t ndlq;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t retry_timer, commit_timer, drain_timer, watchdog_timer, status_timer;
    int handles_open;
    int draining, drain_done, kafka_closed, sv_stopped, pg_closed, closed;
    int sigints, exit_code, hard_exit;
    int pg_connected;
    int ready;
    uint64_t seen_commit_failures;
};

static void job_step(struct djob *dj);
static void maybe_drain_done(struct vl3d *d);
static void maybe_backpressure(struct vl3d *d);

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

/* ---- in-flight bookkeeping ---- */

static void dj_clear_results(struct djob *dj)
{
    for (size_t i = 0; i < dj->nres; i++)
        free(dj->strs[i]);
    dj->nres = 0;
}

static void dj_free(struct djob *dj)
{
    struct vl3d *d = dj->d;
    vl3_log_debug("job released job=%s state=%d sv_state=%d orphaned=%d", dj->job->id, dj->state,
                  dj->sv.state, dj->orphaned);
    if (dj->prev)
        dj->prev->next = dj->next;
    else
        d->jobs = dj->next;
    if (dj->next)
        dj->next->prev = dj->prev;
    d->njobs--;
    dj_clear_results(dj);
    free(dj->res);
    free(dj->strs);
    free(dj->fail_reason);
    free((char *)dj->video.codec);
    free((char *)dj->video.fingerprint);
    job_free(dj->job);
    free(dj);
    maybe_backpressure(d);
    maybe_drain_done(d);
}

static void commit_partition(struct vl3d *d, const char *topic, int32_t partition)
{
    int64_t point = offsets_commit_point(&d->offsets, topic, partition);
    if (point < 0 || !d->kafka)
        return;
    if (kafka_commit(d->kafka, topic, partition, point) == 0) {
        offsets_committed(&d->offsets, topic, partition, point);
        d->m.commits++;
    }
}

static void commit_all(struct vl3d *d)
{
    if (d->kafka) {
        /* a commit failed since the last round: send every partition's point again (commits are
         * only marked sent, so without this an unchanged point would never be retried) */
        struct kafka_stats ks;
        kafka_get_stats(d->kafka, &ks);
        if (ks.commit_failures != d->seen_commit_failures) {
            d->seen_commit_failures = ks.commit_failures;
            for (size_t i = 0; i < d->offsets.nparts; i++)
                d->offsets.parts[i].committed = -1;
        }
    }
    for (size_t i = 0; i < d->offsets.nparts; i++)
        commit_partition(d, d->offsets.parts[i].topic, d->offsets.parts[i].partition);
}

/* the outcome of the message at topic/partition/offset is durable */
static void offset_done(struct vl3d *d, const char *topic, int32_t partition, int64_t offset)
{
    int r = offsets_done(&d->offsets, topic, partition, offset);
    if (r < 0)
        vl3_log_debug("offset not tracked topic=%s partition=%" PRId32 " offset=%" PRId64 ": %s",
                      topic, partition, offset, vl3_strerror(r));
    if (d->conf.commit_interval_ms == 0)
        commit_partition(d, topic, partition);
}

static void dj_complete(struct djob *dj)
{
    if (!dj->orphaned)
        offset_done(dj->d, dj->job->topic, dj->job->partition, dj->job->offset);
    dj_free(dj);
}

static void maybe_backpressure(struct vl3d *d)
{
    if (!d->kafka || d->draining)
        return;
    size_t in_flight = offsets_in_flight(&d->offsets, NULL, 0);
    size_t max = (size_t)d->conf.max_in_flight;
    if (!kafka_paused(d->kafka) && in_flight >= max) {
        vl3_log_info("pausing consumption: %zu jobs in flight (kafka.max_in_flight %zu)",
                     in_flight, max);
        kafka_pause(d->kafka);
    } else if (kafka_paused(d->kafka) && in_flight < (max * 3 + 3) / 4) {
        vl3_log_info("resuming consumption: %zu jobs in flight", in_flight);
        kafka_resume(d->kafka);
    }
}

static void schedule_retry(struct djob *dj, int step)
{
    dj->state = DJ_WAIT;
    dj->wait_step = step;
    dj->retry_ms = dj->retry_ms ? dj->retry_ms * 2 : RETRY_MIN_MS;
    if (dj->retry_ms > RETRY_MAX_MS)
        dj->retry_ms = RETRY_MAX_MS;
    dj->retry_at_ns = now_ns() + dj->retry_ms * 1000000ull;
}

static store_job dj_store_job(const struct djob *dj)
{
    store_job sj = {.job_id = dj->job->id,
                    .topic = dj->job->topic,
                    .partition = dj->job->partition,
                    .offset = dj->job->offset,
                    .path = dj->job->input,
                    .model = NULL,
                    .worker = NULL,
                    .batch = dj->job->batch,
                    .enqueued_at = 0};
    return sj;
}

/* ---- PostgreSQL steps ---- */

static void on_failed_stored(void *user, const store_outcome *o)
{
    struct djob *dj = user;
    struct vl3d *d = dj->d;
    dj->pg_pending = 0;
    if (dj->orphaned) {
        dj_free(dj);
        return;
    }
    if (o->code < 0) {
        vl3_log_warning("could not record failure job=%s: %s, retrying", dj->job->id,
                        vl3_error_text(o->err, o->code));
        schedule_retry(dj, DJ_FAILING);
        return;
    }
    d->m.jobs_failed++;
    vl3_log_notice("job failed job=%s topic=%s partition=%" PRId32 " offset=%" PRId64 ": %s",
                   dj->job->id, dj->job->topic, dj->job->partition, dj->job->offset,
                   dj->fail_reason);
    dj_complete(dj);
}

static void fail_job(struct djob *dj, const char *reason)
{
    if (reason != dj->fail_reason) {
        free(dj->fail_reason);
        dj->fail_reason = strdup(reason ? reason : "failed");
    }
    dj->state = DJ_FAILING;
    job_step(dj);
}

static void on_done_stored(void *user, const store_outcome *o)
{
    struct djob *dj = user;
    struct vl3d *d = dj->d;
    dj->pg_pending = 0;
    if (dj->orphaned) {
        dj_free(dj);
        return;
    }
    if (o->code < 0) {
        dj->retries++;
        if (!o->retryable && dj->retries >= STORE_GIVEUP_NONRETRYABLE) {
            char reason[VL3_ERROR_MSG_MAX + 64];
            snprintf(reason, sizeof(reason), "could not store results: %s",
                     vl3_error_text(o->err, o->code));
            fail_job(dj, reason);
            return;
        }
        vl3_log_warning("could not store results job=%s: %s, retrying", dj->job->id,
                        vl3_error_text(o->err, o->code));
        schedule_retry(dj, DJ_STORING);
        return;
    }
    metrics_observe(&d->m.stage[METRICS_STAGE_STORE], (double)(now_ns() - dj->store_ns) / 1e6);
    if (o->already_done) {
        d->m.jobs_skipped_done++;
    } else {
        d->m.jobs_succeeded++;
        d->m.results_written += (uint64_t)(o->rows > 0 ? o->rows : 0);
    }
    vl3_log_info("job done job=%s topic=%s partition=%" PRId32 " offset=%" PRId64
                 " results=%zu%s",
                 dj->job->id, dj->job->topic, dj->job->partition, dj->job->offset, dj->nres,
                 o->already_done ? " (already done)" : "");
    dj_complete(dj);
}

static void on_started_stored(void *user, const store_outcome *o)
{
    struct djob *dj = user;
    struct vl3d *d = dj->d;
    dj->pg_pending = 0;
    if (dj->orphaned) {
        dj_free(dj);
        return;
    }
    if (o->code < 0) {
        vl3_log_warning("could not record job start job=%s: %s, retrying", dj->job->id,
                        vl3_error_text(o->err, o->code));
        schedule_retry(dj, DJ_STARTING);
        return;
    }
    dj->retry_ms = 0;
    if (o->already_done) {
        d->m.jobs_skipped_done++;
        vl3_log_info("job already done, skipping job=%s topic=%s partition=%" PRId32
                     " offset=%" PRId64,
                     dj->job->id, dj->job->topic, dj->job->partition, dj->job->offset);
        dj_complete(dj);
        return;
    }
    if (d->draining) { /* stop began meanwhile: hand it back */
        dj->orphaned = 1;
        dj_free(dj);
        return;
    }
    dj->state = DJ_WORKING;
    dj->sv.priority = dj->job->priority;
    dj->sv.id = dj->job->id;
    dj->sv_active = 1;
    supervise_submit(d->sv, &dj->sv);
}

/* issue the PostgreSQL call of dj's current state */
static void job_step(struct djob *dj)
{
    struct vl3d *d = dj->d;
    vl3_error e = {0};
    store_job sj = dj_store_job(dj);
    int r = 0;
    dj->pg_pending = 1;
    switch (dj->state) {
    case DJ_STARTING: r = store_job_started(d->pg, &sj, on_started_stored, dj, &e); break;
    case DJ_STORING:
        dj->store_ns = now_ns();
        r = store_job_done(d->pg, &sj, dj->has_video ? &dj->video : NULL, dj->res, dj->nres,
                           on_done_stored, dj, &e);
        break;
    case DJ_FAILING:
        r = store_job_failed(d->pg, &sj, dj->fail_reason, 1, on_failed_stored, dj, &e);
        break;
    default: dj->pg_pending = 0; return;
    }
    if (r < 0) {
        dj->pg_pending = 0;
        vl3_log_warning("could not queue statement job=%s: %s, retrying", dj->job->id,
                        vl3_error_text(&e, r));
        schedule_retry(dj, dj->state);
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct vl3d *d = t->data;
    uint64_t now = now_ns();
    for (struct djob *dj = d->jobs, *next; dj; dj = next) {
        next = dj->next;
        if (dj->state != DJ_WAIT || dj->retry_at_ns > now)
            continue;
        if (dj->orphaned) {
            dj_free(dj);
            continue;
        }
        dj->state = dj->wait_step;
        job_step(dj);
    }
}

/* ---- supervisor callbacks ---- */

static int sv_encode(void *user, struct sv_job *s, int attempt, uint8_t **buf, size_t *len)
{
    (void)user;
    struct djob *dj = (struct djob *)s;
    struct vl3_proto_job pj;
    job_to_proto(dj->job, attempt, &pj);
    dj->dispatched_ns = now_ns();
    dj_clear_results(dj);
    vl3_error e = {0};
    int r = vl3_proto_encode_job(&pj, buf, len, &e);
    if (r < 0)
        vl3_log_err("could not encode job=%s: %s", dj->job->id, e.msg);
    else
        vl3_log_debug("dispatching job=%s attempt=%d", dj->job->id, attempt);
    return r;
}

static void sv_result(void *user, struct sv_job *s, const struct vl3_proto_result *r)
{
    struct vl3d *d = user;
    struct djob *dj = (struct djob *)s;
    if (r->task >= dj->job->ntasks || strcmp(r->job_id, dj->job->id) != 0) {
        vl3_log_warning("worker sent a result for task %" PRId64 " of job=%s (expected job=%s), "
                        "ignoring",
                        r->task, r->job_id, dj->job->id);
        return;
    }
    for (size_t i = 0; i < dj->nres; i++) /* one answer per (task, window) */
        if (dj->res[i].window_idx == (int)r->window &&
            strcmp(dj->res[i].task, vl3_task_name(dj->job->tasks[r->task].kind)) == 0 &&
            dj->res[i].question == dj->job->tasks[r->task].question)
            return;
    if (dj->nres == dj->capres) {
        size_t cap = dj->capres ? dj->capres * 2 : 4;
        struct store_result *nr = realloc(dj->res, cap * sizeof(*nr));
        if (!nr)
            return;
        dj->res = nr;
        char **ns = realloc(dj->strs, cap * sizeof(*ns));
        if (!ns)
            return;
        dj->strs = ns;
        dj->capres = cap;
    }
    char *answer = strdup(r->answer);
    if (!answer)
        return;
    const struct vl3_proto_stats *st = &r->stats;
    dj->strs[dj->nres] = answer;
    dj->res[dj->nres] = (store_result){
        .task = vl3_task_name(dj->job->tasks[r->task].kind),
        .question = dj->job->tasks[r->task].question,
        .window_idx = (int)r->window,
        .start_s = r->t_start,
        .end_s = r->t_end,
        .answer = answer,
        .model = NULL,
        .prompt_tokens = st->prompt_tokens > 0 && st->prompt_tokens < INT_MAX
                             ? (int)st->prompt_tokens
                             : -1,
        .generated_tokens = (int)(st->tokens_generated < INT_MAX ? st->tokens_generated : -1),
        /* 0 of 0 is an old worker that did not say: unknown */
        .visual_tokens_kept = st->tokens_total > 0 && st->tokens_total < INT_MAX
                                  ? (int)st->tokens_kept
                                  : -1,
        .visual_tokens_total = st->tokens_total > 0 && st->tokens_total < INT_MAX
                                   ? (int)st->tokens_total
                                   : -1,
        .vision_ms = st->vision_ms,
        .prefill_ms = st->prefill_ms,
        .decode_ms = st->generate_ms,
        .total_ms = st->decode_ms + st->vision_ms + st->prefill_ms + st->generate_ms,
        .frames_sampled = (int)(st->frames_sampled < INT_MAX ? st->frames_sampled : -1),
        .sample_interval_s = st->sample_interval_s,
        .cache_hit = st->cache == 2 ? 1 : st->cache == 1 ? 0 : -1,
    };
    dj->nres++;
    d->m.frames_decoded += (uint64_t)st->frames_decoded;
    d->m.frames_pruned += (uint64_t)st->frames_pruned;
    d->m.cache_hits += st->cache == 2;
    d->m.cache_misses += st->cache == 1;
    d->m.tokens_generated += (uint64_t)st->tokens_generated;
    d->m.answers_vision_shared += st->vision_batch_jobs > 1;
    d->m.answers_decode_shared += st->decode_step_jobs > 1;
    metrics_observe(&d->m.stage[METRICS_STAGE_DECODE], st->decode_ms);
    metrics_observe(&d->m.stage[METRICS_STAGE_VISION], st->vision_ms);
    metrics_observe(&d->m.stage[METRICS_STAGE_PREFILL], st->prefill_ms);
    metrics_observe(&d->m.stage[METRICS_STAGE_GENERATE], st->generate_ms);
    if (st->batch_size > 0)
        metrics_observe_batch(&d->m, st->batch_size);
}

static void sv_done(void *user, struct sv_job *s, const struct vl3_proto_done *dn)
{
    struct vl3d *d = user;
    struct djob *dj = (struct djob *)s;
    dj->sv_active = 0;
    metrics_observe(&d->m.stage[METRICS_STAGE_JOB], (double)(now_ns() - dj->dispatched_ns) / 1e6);
    if (dn->results != (int64_t)dj->nres)
        vl3_log_warning("worker announced %" PRId64 " results, received %zu job=%s", dn->results,
                        dj->nres, dj->job->id);
    const struct vl3_proto_media *md = &dn->media;
    free((char *)dj->video.codec);
    free((char *)dj->video.fingerprint);
    dj->has_video = md->present;
    dj->video = (store_video){
        .path = dj->job->input,
        .size = md->size,
        .mtime_s = md->mtime_s,
        .duration_s = md->duration_s > 0 ? md->duration_s : -1,
        .width = (int)md->width,
        .height = (int)md->height,
        .fps = md->fps,
        .codec = md->present && md->codec ? strdup(md->codec) : NULL, /* NULL on OOM: unknown */
        .fingerprint = md->present && md->fingerprint ? strdup(md->fingerprint) : NULL,
    };
    dj->retry_ms = 0;
    dj->retries = 0;
    dj->state = DJ_STORING;
    job_step(dj);
}

static void sv_error(void *user, struct sv_job *s, const struct vl3_proto_error *e)
{
    struct vl3d *d = user;
    struct djob *dj = (struct djob *)s;
    dj->sv_active = 0;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s: %s", vl3_proto_errcode_name(e->code), e->message);
    /* attempts cut short by a worker that died holding it with others were not its fault */
    int attempts = dj->sv.attempts - dj->sv.shared_deaths;
    if (e->retryable && attempts < d->conf.max_attempts && !d->draining) {
        d->m.jobs_retried++;
        vl3_log_warning("job attempt failed job=%s attempt=%d: %s, retrying", dj->job->id,
                        dj->sv.attempts, reason);
        dj->sv_active = 1;
        supervise_retry(d->sv, &dj->sv);
        return;
    }
    if (e->retryable && d->draining) { /* hand it back rather than fail it */
        dj->orphaned = 1;
        dj_free(dj);
        return;
    }
    fail_job(dj, reason);
}

static void sv_poison(void *user, struct sv_job *s, const char *reason)
{
    struct vl3d *d = user;
    struct djob *dj = (struct djob *)s;
    dj->sv_active = 0;
    d->m.jobs_poisoned++;
    vl3_log_err("poison job job=%s input=\"%s\" topic=%s partition=%" PRId32 " offset=%" PRId64
                ": %s",
                dj->job->id, dj->job->input, dj->job->topic, dj->job->partition, dj->job->offset,
                reason);
    fail_job(dj, reason);
}

static void sv_abandoned(void *user, struct sv_job *s)
{
    struct vl3d *d = user;
    struct djob *dj = (struct djob *)s;
    dj->sv_active = 0;
    d->m.jobs_abandoned++;
    dj->orphaned = 1;
    dj_free(dj);
}

static void close_pg_if_ready(struct vl3d *d);

static void sv_stopped(void *user)
{
    struct vl3d *d = user;
    d->sv = NULL;
    d->sv_stopped = 1;
    vl3_log_info("workers stopped");
    close_pg_if_ready(d);
}

/* ---- kafka callbacks ---- */

static void dlq_free(struct dlq_item *q)
{
    struct vl3d *d = q->d;
    if (q->prev)
        q->prev->next = q->next;
    else
        d->dlq = q->next;
    if (q->next)
        q->next->prev = q->prev;
    d->ndlq--;
    free(q->topic);
    free(q->payload);
    free(q->key);
    kafka_headers_free(q->headers);
    free(q->reason);
    free(q);
    maybe_backpressure(d);
    maybe_drain_done(d);
}

static void dlq_send(struct dlq_item *q);

static void on_dlq_delivered(void *user, int code, const char *errtext)
{
    struct dlq_item *q = user;
    struct vl3d *d = q->d;
    if (code < 0 && !q->orphaned && d->kafka && !d->kafka_closed) {
        vl3_log_warning("could not deliver to the dead-letter topic topic=%s partition=%" PRId32
                        " offset=%" PRId64 ": %s, retrying",
                        q->topic, q->partition, q->offset, errtext ? errtext : "?");
        dlq_send(q);
        return;
    }
    if (code == 0 && !q->orphaned) {
        d->m.jobs_dead_lettered++;
        offset_done(d, q->topic, q->partition, q->offset);
    }
    dlq_free(q);
}

static void dlq_send(struct dlq_item *q)
{
    /* the headers copy is handed to the producer; each retry sends a fresh copy */
    struct kafka_msg orig = {q->topic, q->partition, q->offset, q->payload, q->len, q->key,
                             q->key_len, q->headers};
    struct kafka_msg km = orig;
    km.headers = kafka_headers_copy(&orig);
    vl3_error e = {0};
    if (kafka_dlq_produce(q->d->kafka, &km, q->reason, on_dlq_delivered, q, &e) < 0) {
        vl3_log_err("%s topic=%s partition=%" PRId32 " offset=%" PRId64, e.msg, q->topic,
                    q->partition, q->offset);
        q->orphaned = 1; /* not marked done: redelivered after a restart */
        dlq_free(q);
    }
}

static void on_message(void *user, const struct kafka_msg *m)
{
    struct vl3d *d = user;
    if (d->draining)
        return; /* not taken: redelivered to whoever consumes next */
    int r = offsets_add(&d->offsets, m->topic, m->partition, m->offset);
    if (r == -EINVAL || r == -ENOENT) {
        vl3_log_debug("skipping redelivered or unassigned message topic=%s partition=%" PRId32
                      " offset=%" PRId64,
                      m->topic, m->partition, m->offset);
        return;
    }
    if (r < 0) {
        vl3_log_err("could not track offset: %s", vl3_strerror(r));
        return;
    }
    d->m.jobs_consumed++;
    struct job_policy pol = {.max_bytes = (size_t)d->conf.max_message_bytes,
                             .input_roots = d->conf.input_roots,
                             .max_frames_cap = d->conf.max_frames_cap};
    struct job *job = NULL;
    vl3_error e = {0};
    r = job_parse(m->payload, m->len, m->topic, m->partition, m->offset, &pol, &job, &e);
    if (r == VL3_E_FORMAT || r == VL3_E_LIMIT || r == VL3_E_POLICY) {
        vl3_log_warning("bad job message topic=%s partition=%" PRId32 " offset=%" PRId64
                        ": %s, sending it to the dead-letter topic",
                        m->topic, m->partition, m->offset, e.msg);
        struct dlq_item *q = calloc(1, sizeof(*q));
        if (q) {
            q->d = d;
            q->topic = strdup(m->topic);
            q->payload = malloc(m->len ? m->len : 1);
            q->reason = strdup(e.msg);
            if (m->key && (q->key = malloc(m->key_len ? m->key_len : 1)))
                memcpy(q->key, m->key, m->key_len);
            q->key_len = m->key_len;
            q->headers = kafka_headers_copy(m);
            if (!q->topic || !q->payload || !q->reason || (m->key && !q->key) ||
                (m->headers && !q->headers)) {
                free(q->topic);
                free(q->payload);
                free(q->key);
                kafka_headers_free(q->headers);
                free(q->reason);
                free(q);
                q = NULL;
            }
        }
        if (!q) {
            vl3_log_err("out of memory for the dead-letter message offset=%" PRId64, m->offset);
            return;
        }
        if (m->len)
            memcpy(q->payload, m->payload, m->len);
        q->len = m->len;
        q->partition = m->partition;
        q->offset = m->offset;
        q->next = d->dlq;
        if (d->dlq)
            d->dlq->prev = q;
        d->dlq = q;
        d->ndlq++;
        dlq_send(q);
        maybe_backpressure(d);
        return;
    }
    if (r < 0) {
        vl3_log_err("could not parse job topic=%s partition=%" PRId32 " offset=%" PRId64 ": %s",
                    m->topic, m->partition, m->offset, e.msg);
        return; /* out of memory: not marked done, redelivered later */
    }
    struct djob *dj = calloc(1, sizeof(*dj));
    if (!dj) {
        job_free(job);
        return;
    }
    dj->d = d;
    dj->job = job;
    dj->taken_ns = now_ns();
    dj->next = d->jobs;
    if (d->jobs)
        d->jobs->prev = dj;
    d->jobs = dj;
    d->njobs++;
    vl3_log_debug("job taken job=%s topic=%s partition=%" PRId32 " offset=%" PRId64, job->id,
                  m->topic, m->partition, m->offset);
    dj->state = DJ_STARTING;
    job_step(dj);
    maybe_backpressure(d);
}

static void on_assign(void *user, const char *topic, int32_t partition)
{
    struct vl3d *d = user;
    if (offsets_assign(&d->offsets, topic, partition) < 0)
        vl3_log_err("out of memory tracking topic=%s partition=%" PRId32, topic, partition);
}

static void on_revoke(void *user, const char *topic, int32_t partition)
{
    struct vl3d *d = user;
    commit_partition(d, topic, partition); /* what is done, while we still own it */
    size_t dropped = 0;
    for (struct djob *dj = d->jobs, *next; dj; dj = next) {
        next = dj->next;
        if (dj->orphaned || dj->job->partition != partition || strcmp(dj->job->topic, topic))
            continue;
        dj->orphaned = 1;
        dropped++;
        if (dj->state == DJ_WORKING && dj->sv_active && d->sv) {
            if (supervise_cancel(d->sv, &dj->sv) == 1) {
                dj->sv_active = 0;
                dj_free(dj);
            } /* else: running, on_abandoned frees it */
        } else if (dj->state == DJ_WAIT || (!dj->pg_pending && !dj->sv_active)) {
            dj_free(dj);
        } /* else: a PostgreSQL call is in flight; its callback frees it */
    }
    for (struct dlq_item *q = d->dlq; q; q = q->next)
        if (q->partition == partition && strcmp(q->topic, topic) == 0)
            q->orphaned = 1;
    if (dropped)
        vl3_log_info("abandoning %zu in-flight jobs of revoked topic=%s partition=%" PRId32,
                     dropped, topic, partition);
    d->m.jobs_abandoned += dropped;
    offsets_revoke(&d->offsets, topic, partition);
    /* the in-flight count just lost this partition's entries: jobs freed above were weighed
     * before that, and when none is left to finish later nothing else would resume us */
    maybe_backpressure(d);
}

/* ---- shutdown ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct vl3d *d = h->data;
    if (--d->handles_open == 0) {
        d->closed = 1;
        vl3_log_notice("vl3d stopped");
    }
}

static void close_own_handles(struct vl3d *d)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&d->sigterm,     (uv_handle_t *)&d->sigint,
                         (uv_handle_t *)&d->sighup,      (uv_handle_t *)&d->retry_timer,
                         (uv_handle_t *)&d->commit_timer, (uv_handle_t *)&d->drain_timer,
                         (uv_handle_t *)&d->watchdog_timer, (uv_handle_t *)&d->status_timer};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], on_handle_closed);
    metrics_server_stop(d->msrv);
    d->msrv = NULL;
}

static void on_pg_closed(void *user)
{
    struct vl3d *d = user;
    d->pg = NULL;
    d->pg_closed = 1;
    vl3_log_info("postgresql connection closed");
    /* leftovers: jobs waiting for a retry, dead-letter messages never acknowledged; all are
     * orphans by now (their offsets were not marked done) */
    while (d->jobs)
        dj_free(d->jobs);
    while (d->dlq)
        dlq_free(d->dlq);
    if (d->handles_open)
        close_own_handles(d);
    else
        d->closed = 1;
}

static void close_pg_if_ready(struct vl3d *d)
{
    if (!d->kafka_closed || !d->sv_stopped || d->pg_closed || !d->pg)
        return;
    /* every job was completed, handed back or abandoned by now; outstanding writes (only after
     * a drain timeout) are cancelled, their offsets stay uncommitted */
    pg_conn_close(d->pg, on_pg_closed, d);
}

static void on_kafka_closed(void *user)
{
    struct vl3d *d = user;
    d->kafka = NULL;
    d->kafka_closed = 1;
    close_pg_if_ready(d);
}

static void finish_drain(struct vl3d *d)
{
    if (d->drain_done)
        return;
    d->drain_done = 1;
    uv_timer_stop(&d->drain_timer);
    /* any job still in flight is handed back: its offset is not marked done */
    for (struct djob *dj = d->jobs; dj; dj = dj->next)
        dj->orphaned = 1;
    for (struct dlq_item *q = d->dlq; q; q = q->next)
        q->orphaned = 1;
    commit_all(d);
    vl3_log_info("stopping: committed offsets, closing the consumer and the workers");
    notify_status("stopping: closing");
    if (d->kafka)
        kafka_close(d->kafka);
    else
        d->kafka_closed = 1;
    if (d->sv)
        supervise_stop(d->sv, SUPERVISE_GRACE_MS);
    else
        d->sv_stopped = 1;
    close_pg_if_ready(d);
}

static void maybe_drain_done(struct vl3d *d)
{
    if (!d->draining || d->drain_done)
        return;
    for (struct djob *dj = d->jobs; dj; dj = dj->next)
        if (!dj->orphaned) {
            vl3_log_debug("drain: waiting for job=%s state=%d", dj->job->id, dj->state);
            return;
        }
    if (d->ndlq > 0)
        return;
    /* only orphans left: jobs whose PostgreSQL call or worker has yet to report; they no longer
     * matter for the offsets */
    finish_drain(d);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct vl3d *d = t->data;
    vl3_log_warning("shutdown timeout: %zu jobs still in flight, handing them back", d->njobs);
    finish_drain(d);
}

void vl3d_stop(struct vl3d *d)
{
    if (d->draining)
        return;
    d->draining = 1;
    notify_stopping();
    notify_status("stopping: draining %zu jobs", d->njobs);
    vl3_log_notice("stopping: draining %zu in-flight jobs (shutdown_timeout %" PRId64 "ms)",
                   d->njobs, d->conf.shutdown_timeout_ms);
    if (d->kafka)
        kafka_pause(d->kafka);
    uv_timer_stop(&d->watchdog_timer);
    /* queued (not yet running) jobs are handed back to Kafka */
    for (struct djob *dj = d->jobs, *next; dj; dj = next) {
        next = dj->next;
        /* only queued ones: supervise_cancel() on a running job would discard its results */
        if (dj->state == DJ_WORKING && dj->sv_active && d->sv && dj->sv.state == SV_JOB_QUEUED &&
            supervise_cancel(d->sv, &dj->sv) == 1) {
            dj->sv_active = 0;
            dj->orphaned = 1;
            dj_free(dj);
        } else if (dj->state == DJ_WAIT && dj->wait_step == DJ_STARTING) {
            dj->orphaned = 1;
            dj_free(dj);
        }
    }
    uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)d->conf.shutdown_timeout_ms, 0);
    maybe_drain_done(d);
}

/* ---- signals, reload, timers ---- */

static void apply_reload(struct vl3d *d, struct daemon_conf *nc)
{
    for (const vl3_conf_option *o = daemon_conf_table; o->name; o++) {
        if (vl3_conf_equal(o, &d->conf, nc))
            continue;
        if (o->flags & VL3_CONF_RESTART) {
            vl3_log_warning("changing \"%s\" requires restart, ignoring", o->name);
            /* keep the running value: swap it into the new struct */
            char *a = (char *)&d->conf + o->offset, *b = (char *)nc + o->offset;
            size_t sz = o->type == VL3_CONF_STRING || o->type == VL3_CONF_PATH ? sizeof(char *)
                        : o->type == VL3_CONF_BOOL || o->type == VL3_CONF_ENUM ? sizeof(int)
                        : o->type == VL3_CONF_DOUBLE                           ? sizeof(double)
                                                                               : sizeof(int64_t);
            char tmp[sizeof(int64_t) > sizeof(char *) ? sizeof(int64_t) : sizeof(char *)];
            memcpy(tmp, a, sz);
            memcpy(a, b, sz);
            memcpy(b, tmp, sz);
        } else {
            vl3_log_notice("reloaded \"%s\"", o->name);
        }
    }
    char **props = d->conf.kafka_props; /* restart-only too */
    d->conf.kafka_props = nc->kafka_props;
    nc->kafka_props = props;
    struct daemon_conf old = d->conf;
    d->conf = *nc;
    *nc = old;
    daemon_conf_free(nc);
    int lvl = vl3_log_level_parse(d->conf.log_level);
    if (lvl >= 0)
        vl3_log_set_level(lvl);
    if (d->sv)
        supervise_set_limits(d->sv, (int)d->conf.max_attempts,
                             (uint64_t)d->conf.job_timeout_ms);
    maybe_backpressure(d);
}

static void on_commit_timer(uv_timer_t *t);

static void reload(struct vl3d *d)
{
    notify_reloading();
    struct daemon_conf nc;
    vl3_error e = {0};
    int r = daemon_conf_load(&nc, d->conf_path, &e);
    if (r == 0 && vl3_log_level_parse(nc.log_level) < 0) {
        r = vl3_error_set(&e, VL3_E_CONFIG, "invalid \"log.level\": \"%s\"", nc.log_level);
        daemon_conf_free(&nc);
    }
    if (r < 0) {
        vl3_log_err("could not reload configuration, keeping the old one: %s",
                    vl3_error_text(&e, r));
    } else {
        apply_reload(d, &nc);
        uint64_t ci = (uint64_t)(d->conf.commit_interval_ms ? d->conf.commit_interval_ms : 1000);
        uv_timer_start(&d->commit_timer, on_commit_timer, ci, ci);
        vl3_log_notice("configuration reloaded from \"%s\"", d->conf_path);
    }
    notify_ready("running");
}

static void on_signal(uv_signal_t *h, int sig)
{
    struct vl3d *d = h->data;
    if (sig == SIGHUP) {
        reload(d);
        return;
    }
    if (sig == SIGINT && ++d->sigints >= 2) {
        vl3_log_warning("second interrupt, exiting immediately");
        d->hard_exit = 1;
        d->exit_code = 130;
        uv_stop(d->loop);
        return;
    }
    vl3_log_notice("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    vl3d_stop(d);
}

static void on_commit_timer(uv_timer_t *t)
{
    commit_all(t->data);
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    notify_watchdog();
}

static void gauges(void *user, struct metrics_gauges *g)
{
    struct vl3d *d = user;
    g->in_flight = offsets_in_flight(&d->offsets, NULL, 0);
    if (d->sv) {
        struct supervise_stats st;
        supervise_get_stats(d->sv, &st);
        g->queued = st.queued;
        g->workers_busy = st.busy;
        g->workers_alive = st.alive;
        g->jobs_held = st.running;
        g->jobs_suspects = st.suspects;
        d->m.worker_restarts = st.restarts;
        d->m.worker_hangs = st.killed_hung;
    }
    g->kafka_paused = d->kafka ? (uint64_t)kafka_paused(d->kafka) : 0;
    g->partitions = d->offsets.nparts;
    if (d->pg) {
        pg_conn_stats ps;
        pg_conn_get_stats(d->pg, &ps);
        g->pg_queued = ps.queued + ps.in_flight;
        g->pg_connected = pg_conn_state(d->pg) == PG_STATE_CONNECTED;
    }
}

static void on_status_timer(uv_timer_t *t)
{
    struct vl3d *d = t->data;
    notify_status("%zu jobs in flight, %llu done, %llu failed, %zu partitions, postgresql %s",
                  d->njobs, (unsigned long long)d->m.jobs_succeeded,
                  (unsigned long long)d->m.jobs_failed, d->offsets.nparts,
                  d->pg ? pg_state_name(pg_conn_state(d->pg)) : "closed");
}

static void on_pg_state(void *user, enum pg_state st)
{
    struct vl3d *d = user;
    if (st == PG_STATE_CONNECTED) {
        d->pg_connected = 1;
        vl3_log_info("postgresql connected");
    } else if (st == PG_STATE_DISCONNECTED && d->pg_connected) {
        d->pg_connected = 0;
        vl3_log_warning("postgresql connection lost, reconnecting");
    }
}

int vl3d_start(uv_loop_t *loop, struct daemon_conf *conf, const char *conf_path,
               struct vl3d **ret, vl3_error *reterr)
{
    int r;
    struct vl3d *d = calloc(1, sizeof(*d));
    if (!d)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    d->loop = loop;
    d->conf = *conf;
    memset(conf, 0, sizeof(*conf));
    d->conf_path = conf_path;
    offsets_init(&d->offsets);
    int lvl = vl3_log_level_parse(d->conf.log_level);
    if (lvl < 0) {
        r = vl3_error_set(reterr, VL3_E_CONFIG, "invalid \"log.level\": \"%s\"", d->conf.log_level);
        goto fail;
    }
    vl3_log_set_level(lvl);

    if (d->conf.migrate_on_start) {
        char dir[4096];
        migrate_report rep;
        const char *env = getenv("VL3_SCHEMA_DIR");
        if (env && *env)
            snprintf(dir, sizeof(dir), "%s", env);
        else if ((r = migrate_default_dir(dir, sizeof(dir))) < 0) {
            r = vl3_error_set(reterr, r, "could not find the schema directory: %s",
                              vl3_strerror(r));
            goto fail;
        }
        if ((r = migrate_apply(d->conf.pg_conninfo, dir, &rep, reterr)) < 0) {
            vl3_error_prefix(reterr, "could not apply migrations from \"%s\"", dir);
            goto fail;
        }
        vl3_log_info("schema at version %d (%d migrations applied now)", rep.last_version,
                     rep.applied);
    }

    pg_conn_options po = pg_conn_options_default();
    po.conninfo = d->conf.pg_conninfo;
    po.on_state = on_pg_state;
    po.state_user = d;
    if ((r = pg_conn_new(loop, &po, &d->pg, reterr)) < 0)
        goto fail;

    struct supervise_options so = {.path = d->conf.worker_path,
                                   .config = d->conf.worker_config,
                                   .count = (int)d->conf.workers,
                                   .max_attempts = (int)d->conf.max_attempts,
                                   .job_timeout_ms = (uint64_t)d->conf.job_timeout_ms,
                                   .stall_timeout_ms = (uint64_t)d->conf.stall_timeout_ms,
                                   .startup_timeout_ms = (uint64_t)d->conf.startup_timeout_ms,
                                   .ping_interval_ms = (uint64_t)d->conf.ping_interval_ms,
                                   .credits = (int)d->conf.worker_credits,
                                   .backend = d->conf.worker_backend,
                                   .devices = d->conf.worker_devices,
                                   .device_arg = d->conf.worker_device_via == DAEMON_DEVICE_ARG};
    struct supervise_ops sops = {sv_encode, sv_result,    sv_done,    sv_error,
                                 sv_poison, sv_abandoned, sv_stopped, d};
    if ((r = supervise_new(loop, &so, &sops, &d->sv, reterr)) < 0)
        goto fail_pg;

    struct kafka_options ko = {.brokers = d->conf.kafka_brokers,
                               .topic = d->conf.kafka_topic,
                               .group = d->conf.kafka_group,
                               .dlq_topic = d->conf.kafka_dlq_topic,
                               .properties = (const char *const *)d->conf.kafka_props,
                               .client_id = "vl3d"};
    struct kafka_callbacks kcb = {on_message, on_assign, on_revoke, on_kafka_closed, d};
    if ((r = kafka_new(loop, &ko, &kcb, &d->kafka, reterr)) < 0)
        goto fail_sv;

    d->m.gauges = gauges;
    d->m.gauges_user = d;
    if (d->conf.metrics_listen && d->conf.metrics_listen[0]) {
        vl3_error me = {0};
        int mr = metrics_server_start(loop, d->conf.metrics_listen, &d->m, &d->msrv, &me);
        if (mr < 0) /* metrics are not worth refusing to work: log and go on */
            vl3_log_err("%s, metrics disabled", me.msg);
        else
            vl3_log_info("metrics on http://%s/metrics", d->conf.metrics_listen);
    }

    uv_signal_init(loop, &d->sigterm);
    uv_signal_init(loop, &d->sigint);
    uv_signal_init(loop, &d->sighup);
    uv_timer_init(loop, &d->retry_timer);
    uv_timer_init(loop, &d->commit_timer);
    uv_timer_init(loop, &d->drain_timer);
    uv_timer_init(loop, &d->watchdog_timer);
    uv_timer_init(loop, &d->status_timer);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    d->retry_timer.data = d->commit_timer.data = d->drain_timer.data = d;
    d->watchdog_timer.data = d->status_timer.data = d;
    d->handles_open = 8;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_start(&d->sighup, on_signal, SIGHUP);
    uv_timer_start(&d->retry_timer, on_retry_timer, RETRY_MIN_MS / 2, RETRY_MIN_MS / 2);
    uint64_t ci = (uint64_t)(d->conf.commit_interval_ms ? d->conf.commit_interval_ms : 1000);
    uv_timer_start(&d->commit_timer, on_commit_timer, ci, ci);
    uint64_t wd = notify_watchdog_interval_ms();
    if (wd)
        uv_timer_start(&d->watchdog_timer, on_watchdog, 0, wd);
    uv_timer_start(&d->status_timer, on_status_timer, 10000, 10000);
    notify_ready("running");
    vl3_log_notice("vl3d %s started workers=%" PRId64 " topic=%s group=%s", VL3_VERSION,
                   d->conf.workers, d->conf.kafka_topic, d->conf.kafka_group);
    *ret = d;
    return 0;

fail_sv:
    /* the supervisor and pg are live on the loop: stop them and let the loop run their closes */
    d->kafka_closed = 1;
    d->draining = d->drain_done = 1;
    d->exit_code = 1;
    supervise_stop(d->sv, 0); /* sv_stopped then closes pg, on_pg_closed marks d closed */
    *ret = d;
    return r;
fail_pg:
    d->kafka_closed = d->sv_stopped = 1;
    d->draining = d->drain_done = 1;
    d->exit_code = 1;
    pg_conn_close(d->pg, on_pg_closed, d);
    *ret = d;
    return r;
fail:
    daemon_conf_free(&d->conf);
    offsets_deinit(&d->offsets);
    free(d);
    return r;
}

int vl3d_finish(struct vl3d *d)
{
    if (!d)
        return 1;
    int code = d->exit_code;
    if (d->hard_exit)
        return code;
    offsets_deinit(&d->offsets);
    daemon_conf_free(&d->conf);
    free(d);
    return code;
}
