/* store.c: the daemon's idempotent writes (one SQL statement each, so one transaction each) over
 * the pg adapter, and the blocking status reads of `vl3 status`.
 *
 * store_job_done() sends the whole job in one statement: a CTE upserts the video, moves the job
 * to 'done' only if it was not 'done' yet, and inserts the result rows (passed as one jsonb array
 * built with jansson) only for a job that this very statement moved to 'done', with ON CONFLICT
 * DO NOTHING as a second guard. Foreign keys are checked at the end of the statement, so the job
 * row inserted by the CTE satisfies results.job_id. See store.h for why a redelivery keeps the
 * first answers. */
#include "store.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct call {
    store_cb cb;
    void *user;
    int kind; /* CALL_* */
};

enum { CALL_QUEUED, CALL_STARTED, CALL_DONE, CALL_FAILED };

static const char *const status_names[] = {"queued", "running", "retrying", "done", "failed"};

int store_status_index(const char *status)
{
    for (int i = 0; i < 5; i++)
        if (status && strcmp(status, status_names[i]) == 0)
            return i;
    return -1;
}

const char *store_status_name(int i)
{
    return i >= 0 && i < 5 ? status_names[i] : "unknown";
}

static void on_reply(void *user, const pg_reply *reply)
{
    struct call *call = user;
    store_outcome out = {
        .code = reply->code,
        .retryable = reply->retryable,
        .err = reply->err,
    };
    if (reply->code == 0) {
        if (call->kind == CALL_DONE) {
            const char *updated = pg_reply_value(reply, 0, 0);
            const char *inserted = pg_reply_value(reply, 0, 1);
            out.already_done = updated && strcmp(updated, "0") == 0;
            out.rows = inserted ? strtoll(inserted, NULL, 10) : 0;
        } else if (call->kind == CALL_QUEUED) {
            const char *inserted = pg_reply_value(reply, 0, 0);
            const char *done = pg_reply_value(reply, 0, 1);
            out.rows = inserted && strcmp(inserted, "t") == 0;
            out.already_done = done && strcmp(done, "t") == 0;
        } else {
            out.already_done = reply->nrows == 0;
            out.rows = reply->nrows;
            const char *a = pg_reply_value(reply, 0, 0);
            if (call->kind == CALL_STARTED && a)
                out.attempts = (int)strtol(a, NULL, 10);
        }
    }
    if (call->cb)
        call->cb(call->user, &out);
    free(call);
}

static int send_call(pg_conn *pg, int kind, const char *sql, int n, const char *const *params,
                     store_cb cb, void *user, vl3_error *reterr)
{
    struct call *call = calloc(1, sizeof(*call));
    if (!call)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    call->cb = cb;
    call->user = user;
    call->kind = kind;
    int r = pg_query(pg, sql, n, params, on_reply, call, reterr);
    if (r < 0)
        free(call);
    return r;
}

/* Text forms of numbers, NULL for "unknown" (negative) values. */
struct numbuf {
    char b[8][32];
    int n;
};

static const char *num_i64(struct numbuf *nb, int64_t v, int64_t unknown_below)
{
    if (v < unknown_below)
        return NULL;
    char *p = nb->b[nb->n++];
    snprintf(p, 32, "%lld", (long long)v);
    return p;
}

static const char *num_f(struct numbuf *nb, double v)
{
    if (!(v > 0) || !isfinite(v))
        return NULL;
    char *p = nb->b[nb->n++];
    snprintf(p, 32, "%.17g", v);
    return p;
}

static const char *num_nonneg(struct numbuf *nb, double v)
{
    if (!(v >= 0) || !isfinite(v))
        return NULL;
    char *p = nb->b[nb->n++];
    snprintf(p, 32, "%.17g", v);
    return p;
}

static const char *empty_null(const char *s)
{
    return s && *s ? s : NULL;
}

#define JOB_COLS "job_id, path, src_topic, src_partition, src_offset, model, worker"

static const char sql_started[] =
    "INSERT INTO jobs AS j (" JOB_COLS ", status, attempts, enqueued_at, started_at, batch) "
    "VALUES ($1, $2, $3, $4::integer, $5::bigint, $6, $7, 'running', 1, "
    "        COALESCE(to_timestamp($8::double precision), now()), now(), $9) "
    "ON CONFLICT (job_id) DO UPDATE SET status = 'running', attempts = j.attempts + 1, "
    "    started_at = now(), finished_at = NULL, updated_at = now(), "
    "    worker = COALESCE(EXCLUDED.worker, j.worker), path = COALESCE(EXCLUDED.path, j.path), "
    "    src_topic = COALESCE(EXCLUDED.src_topic, j.src_topic), "
    "    src_partition = COALESCE(EXCLUDED.src_partition, j.src_partition), "
    "    src_offset = COALESCE(EXCLUDED.src_offset, j.src_offset), "
    "    model = COALESCE(EXCLUDED.model, j.model), batch = COALESCE(EXCLUDED.batch, j.batch) "
    "WHERE j.status <> 'done' "
    "RETURNING attempts";

/* Fill the 8 job parameters; returns the count. */
static int job_params(const store_job *job, struct numbuf *nb, const char **p)
{
    p[0] = job->job_id;
    p[1] = empty_null(job->path);
    p[2] = empty_null(job->topic);
    p[3] = num_i64(nb, job->partition, 0);
    p[4] = num_i64(nb, job->offset, 0);
    p[5] = empty_null(job->model);
    p[6] = empty_null(job->worker);
    p[7] = num_f(nb, job->enqueued_at);
    return 8;
}

static int check_job(const store_job *job, vl3_error *reterr)
{
    if (!job || !job->job_id || !*job->job_id)
        return vl3_error_set(reterr, -EINVAL, "job without an id");
    return 0;
}

int store_job_started(pg_conn *pg, const store_job *job, store_cb cb, void *user,
                      vl3_error *reterr)
{
    VL3_RETURN_IF(!pg, -EINVAL);
    int r = check_job(job, reterr);
    if (r < 0)
        return r;
    struct numbuf nb = {0};
    const char *p[9];
    int n = job_params(job, &nb, p);
    p[n++] = empty_null(job->batch);
    return send_call(pg, CALL_STARTED, sql_started, n, p, cb, user, reterr);
}

static const char sql_queued[] =
    "WITH ins AS ("
    "  INSERT INTO jobs (" JOB_COLS ", status, attempts, enqueued_at) "
    "  VALUES ($1, $2, $3, $4::integer, $5::bigint, $6, $7, 'queued', 0, "
    "          COALESCE(to_timestamp($8::double precision), now())) "
    "  ON CONFLICT (job_id) DO NOTHING RETURNING 1"
    ") "
    "SELECT EXISTS (SELECT 1 FROM ins), "
    "       EXISTS (SELECT 1 FROM jobs WHERE job_id = $1 AND status = 'done')";

int store_job_queued(pg_conn *pg, const store_job *job, store_cb cb, void *user,
                     vl3_error *reterr)
{
    VL3_RETURN_IF(!pg, -EINVAL);
    int r = check_job(job, reterr);
    if (r < 0)
        return r;
    struct numbuf nb = {0};
    const char *p[8];
    int n = job_params(job, &nb, p);
    return send_call(pg, CALL_QUEUED, sql_queued, n, p, cb, user, reterr);
}

static const char sql_failed[] =
    "INSERT INTO jobs AS j (" JOB_COLS ", status, attempts, enqueued_at, last_error, finished_at,"
    "                       batch) "
    "VALUES ($1, $2, $3, $4::integer, $5::bigint, $6, $7, "
    "        CASE WHEN $10::boolean THEN 'failed' ELSE 'retrying' END, 1, "
    "        COALESCE(to_timestamp($8::double precision), now()), $9, "
    "        CASE WHEN $10::boolean THEN now() END, $11) "
    "ON CONFLICT (job_id) DO UPDATE SET status = EXCLUDED.status, "
    "    last_error = EXCLUDED.last_error, "
    "    finished_at = EXCLUDED.finished_at, updated_at = now(), "
    "    worker = COALESCE(EXCLUDED.worker, j.worker), path = COALESCE(EXCLUDED.path, j.path) "
    "WHERE j.status <> 'done' "
    "RETURNING attempts";

int store_job_failed(pg_conn *pg, const store_job *job, const char *reason, int permanent,
                     store_cb cb, void *user, vl3_error *reterr)
{
    VL3_RETURN_IF(!pg, -EINVAL);
    int r = check_job(job, reterr);
    if (r < 0)
        return r;
    struct numbuf nb = {0};
    const char *p[11];
    job_params(job, &nb, p);
    p[8] = reason && *reason ? reason : "unknown error";
    p[9] = permanent ? "true" : "false";
    p[10] = empty_null(job->batch);
    return send_call(pg, CALL_FAILED, sql_failed, 11, p, cb, user, reterr);
}

static const char sql_done[] =
    "WITH v AS ("
    "  INSERT INTO videos AS v (path, size_bytes, mtime, fingerprint, duration_s, width, height,"
    "                           fps, codec, probed_at)"
    "  SELECT $9::text, $10::bigint, to_timestamp($11::double precision), $12::text,"
    "         $13::double precision, $14::integer, $15::integer, $16::double precision,"
    "         $17::text, now()"
    "  WHERE $9::text IS NOT NULL"
    "    AND NOT EXISTS (SELECT 1 FROM jobs WHERE job_id = $1::text AND status = 'done')"
    "  ON CONFLICT (path, size_bytes, mtime) DO UPDATE SET"
    "    fingerprint = COALESCE(EXCLUDED.fingerprint, v.fingerprint),"
    "    duration_s = COALESCE(EXCLUDED.duration_s, v.duration_s),"
    "    width = COALESCE(EXCLUDED.width, v.width), height = COALESCE(EXCLUDED.height, v.height),"
    "    fps = COALESCE(EXCLUDED.fps, v.fps), codec = COALESCE(EXCLUDED.codec, v.codec),"
    "    probed_at = now()"
    "  RETURNING video_id"
    "), j AS ("
    "  INSERT INTO jobs AS j (" JOB_COLS ", status, attempts, enqueued_at, started_at,"
    "                         finished_at, video_id)"
    "  VALUES ($1, $2, $3, $4::integer, $5::bigint, $6, $7, 'done', 1,"
    "          COALESCE(to_timestamp($8::double precision), now()), now(), now(),"
    "          (SELECT video_id FROM v))"
    "  ON CONFLICT (job_id) DO UPDATE SET status = 'done', finished_at = now(), updated_at = now(),"
    "    last_error = NULL, video_id = COALESCE(EXCLUDED.video_id, j.video_id),"
    "    worker = COALESCE(EXCLUDED.worker, j.worker), path = COALESCE(EXCLUDED.path, j.path),"
    "    model = COALESCE(EXCLUDED.model, j.model)"
    "  WHERE j.status <> 'done'"
    "  RETURNING job_id, video_id, model"
    "), r AS ("
    "  INSERT INTO results (job_id, video_id, task, question, window_idx, start_s, end_s, answer,"
    "                       model, prompt_tokens, generated_tokens, visual_tokens_kept,"
    "                       visual_tokens_total, vision_ms, prefill_ms, decode_ms, total_ms,"
    "                       frames_sampled, sample_interval_s, cache_hit)"
    "  SELECT j.job_id, j.video_id, x.task, COALESCE(x.question, ''), x.window_idx, x.start_s,"
    "         x.end_s, x.answer, COALESCE(x.model, j.model), x.prompt_tokens, x.generated_tokens,"
    "         x.visual_tokens_kept, x.visual_tokens_total, x.vision_ms, x.prefill_ms,"
    "         x.decode_ms, x.total_ms, x.frames_sampled, x.sample_interval_s, x.cache_hit"
    "  FROM j CROSS JOIN jsonb_to_recordset($18::jsonb) AS x(task text, question text,"
    "       window_idx integer, start_s double precision, end_s double precision, answer text,"
    "       model text, prompt_tokens integer, generated_tokens integer,"
    "       visual_tokens_kept integer, visual_tokens_total integer,"
    "       vision_ms double precision, prefill_ms double precision,"
    "       decode_ms double precision, total_ms double precision, frames_sampled integer,"
    "       sample_interval_s double precision, cache_hit boolean)"
    "  ON CONFLICT (job_id, task, question, window_idx) DO NOTHING"
    "  RETURNING 1"
    ")"
    "SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM r)";

static json_t *jnum_int(int v)
{
    return v < 0 ? json_null() : json_integer(v);
}

static json_t *jnum_real(double v)
{
    return (v < 0 || !isfinite(v)) ? json_null() : json_real(v);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The results as a jsonb array text (owned). */
static int results_json(const store_result *res, size_t n, char **ret, vl3_error *reterr)
{
    json_t *arr = json_array();
    if (!arr)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const store_result *x = &res[i];
        if (!x->task || !*x->task || !x->answer) {
            json_decref(arr);
            return vl3_error_set(reterr, -EINVAL, "result %zu has no %s", i,
                                 !x->answer ? "answer" : "task");
        }
        if (x->window_idx < 0 || !(x->start_s >= 0) || !(x->end_s >= x->start_s)) {
            json_decref(arr);
            return vl3_error_set(reterr, -EINVAL,
                                 "result %zu has an invalid window (%d, %g..%g s)", i,
                                 x->window_idx, x->start_s, x->end_s);
        }
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o) < 0)
            goto oom;
        /* json_string() refuses invalid UTF-8: the worker's text must be valid */
        json_t *answer = json_string(x->answer);
        if (!answer) {
            json_decref(arr);
            return vl3_error_set(reterr, -EINVAL, "result %zu: answer is not valid UTF-8", i);
        }
        if (json_object_set_new(o, "answer", answer) < 0 ||
            json_object_set_new(o, "task", jstr(x->task)) < 0 ||
            json_object_set_new(o, "question", jstr(x->question ? x->question : "")) < 0 ||
            json_object_set_new(o, "window_idx", json_integer(x->window_idx)) < 0 ||
            json_object_set_new(o, "start_s", json_real(x->start_s)) < 0 ||
            json_object_set_new(o, "end_s", json_real(x->end_s)) < 0 ||
            json_object_set_new(o, "model", jstr(empty_null(x->model))) < 0 ||
            json_object_set_new(o, "prompt_tokens", jnum_int(x->prompt_tokens)) < 0 ||
            json_object_set_new(o, "generated_tokens", jnum_int(x->generated_tokens)) < 0 ||
            json_object_set_new(o, "visual_tokens_kept", jnum_int(x->visual_tokens_kept)) < 0 ||
            json_object_set_new(o, "visual_tokens_total", jnum_int(x->visual_tokens_total)) < 0 ||
            json_object_set_new(o, "vision_ms", jnum_real(x->vision_ms)) < 0 ||
            json_object_set_new(o, "prefill_ms", jnum_real(x->prefill_ms)) < 0 ||
            json_object_set_new(o, "decode_ms", jnum_real(x->decode_ms)) < 0 ||
            json_object_set_new(o, "total_ms", jnum_real(x->total_ms)) < 0 ||
            json_object_set_new(o, "frames_sampled",
                                x->frames_sampled > 0 ? json_integer(x->frames_sampled)
                                                      : json_null()) < 0 ||
            json_object_set_new(o, "sample_interval_s",
                                x->sample_interval_s > 0 ? jnum_real(x->sample_interval_s)
                                                         : json_null()) < 0 ||
            json_object_set_new(o, "cache_hit",
                                x->cache_hit < 0 ? json_null() : json_boolean(x->cache_hit)) < 0)
            goto oom;
    }
    *ret = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!*ret)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    return 0;
oom:
    json_decref(arr);
    return vl3_error_set(reterr, -ENOMEM, "out of memory");
}

int store_job_done(pg_conn *pg, const store_job *job, const store_video *video,
                   const store_result *results, size_t n, store_cb cb, void *user,
                   vl3_error *reterr)
{
    VL3_RETURN_IF(!pg || (n > 0 && !results), -EINVAL);
    int r = check_job(job, reterr);
    if (r < 0)
        return r;
    if (video && (!video->path || !*video->path || video->size < 0))
        return vl3_error_set(reterr, -EINVAL, "video without a path or size");
    char *json = NULL;
    r = results_json(results, n, &json, reterr);
    if (r < 0)
        return r;
    struct numbuf nb = {0};
    char mtime[32] = "", size[32] = "";
    const char *p[18];
    job_params(job, &nb, p);
    if (video) {
        snprintf(size, sizeof(size), "%lld", (long long)video->size);
        snprintf(mtime, sizeof(mtime), "%lld", (long long)video->mtime_s);
    }
    p[8] = video ? video->path : NULL;
    p[9] = video ? size : NULL;
    p[10] = video ? mtime : NULL;
    p[11] = video ? empty_null(video->fingerprint) : NULL;
    p[12] = video ? num_nonneg(&nb, video->duration_s) : NULL;
    p[13] = video ? num_i64(&nb, video->width, 1) : NULL;
    p[14] = video ? num_i64(&nb, video->height, 1) : NULL;
    p[15] = video ? num_f(&nb, video->fps) : NULL;
    p[16] = video ? empty_null(video->codec) : NULL;
    p[17] = json;
    r = send_call(pg, CALL_DONE, sql_done, 18, p, cb, user, reterr);
    free(json);
    return r;
}

/* --- blocking reads for `vl3 status` -------------------------------------------------------- */

static int pq_fail(vl3_error *reterr, const char *what, const char *msg)
{
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%s: ", what);
    return pg_error_set(reterr, prefix, msg);
}

static const char sql_status_counts[] = "SELECT status, count(*) FROM jobs GROUP BY status";
static const char sql_status_rate[] =
    "SELECT count(*) FILTER (WHERE status = 'done' AND finished_at > now() - interval '10 min'),"
    "       (SELECT count(*) FROM results), (SELECT count(*) FROM videos) FROM jobs";
static const char sql_status_failures[] =
    "SELECT job_id, COALESCE(path, ''), COALESCE(last_error, ''), attempts,"
    "       COALESCE(to_char(COALESCE(finished_at, updated_at), 'YYYY-MM-DD HH24:MI:SS TZ'), '')"
    "  FROM jobs WHERE status IN ('failed', 'retrying')"
    "  ORDER BY COALESCE(finished_at, updated_at) DESC LIMIT 10";

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

int store_status_load(const char *conninfo, store_status *ret, vl3_error *reterr)
{
    VL3_RETURN_IF(!conninfo || !ret, -EINVAL);
    int r = 0;
    PGresult *res = NULL;
    PGconn *pq = PQconnectdb(conninfo);
    if (!pq)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    if (PQstatus(pq) != CONNECTION_OK) {
        r = pq_fail(reterr, "could not connect to PostgreSQL", PQerrorMessage(pq));
        goto out;
    }
    store_status st;
    memset(&st, 0, sizeof(st));
    res = PQexec(pq, sql_status_counts);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        r = pq_fail(reterr, "could not read job counts (run \"vl3 db migrate\"?)",
                    PQresultErrorMessage(res));
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        int k = store_status_index(PQgetvalue(res, i, 0));
        if (k >= 0)
            st.count[k] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    res = PQexec(pq, sql_status_rate);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        r = pq_fail(reterr, "could not read throughput", PQresultErrorMessage(res));
        goto out;
    }
    st.done_last_10m = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    st.jobs_per_min = (double)st.done_last_10m / 10.0;
    st.results = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    st.videos = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    res = PQexec(pq, sql_status_failures);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        r = pq_fail(reterr, "could not read failures", PQresultErrorMessage(res));
        goto out;
    }
    for (int i = 0; i < PQntuples(res) && i < STORE_STATUS_MAX_FAILURES; i++) {
        store_failure *f = &st.failures[st.nfailures++];
        copy_str(f->job_id, sizeof(f->job_id), PQgetvalue(res, i, 0));
        copy_str(f->path, sizeof(f->path), PQgetvalue(res, i, 1));
        copy_str(f->last_error, sizeof(f->last_error), PQgetvalue(res, i, 2));
        f->attempts = (int)strtol(PQgetvalue(res, i, 3), NULL, 10);
        copy_str(f->finished_at, sizeof(f->finished_at), PQgetvalue(res, i, 4));
    }
    *ret = st;
out:
    PQclear(res);
    PQfinish(pq);
    return r;
}
