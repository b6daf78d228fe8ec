/* test_pg.c: the PostgreSQL side of vl3d against a real server: migrations (apply, re-apply as a
 * no-op, two concurrent `vl3 db migrate`, a tampered file refused), the idempotent store writes,
 * full-text search and the failed_jobs view, the CLI, and the non-blocking pg.c adapter on a real
 * uv loop, including a server restart (on a throwaway server of its own) during which queued
 * statements wait and then run exactly once.
 *
 * Each case makes its own database in the shared "pg" fixture server, so cases are independent
 * and may run in parallel. Expected values are stated in the test, read back with plain libpq. */
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "migrate.h"
#include "pg.h"
#include "store.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(buf, (int)len, f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* A fresh database named after the case in the fixture server; its conninfo into out. */
static int make_db(const char *name, char *out, size_t len)
{
    char base[512], path[4096];
    snprintf(path, sizeof(path), "%s/pg/conninfo", getenv("VL3_FIXTURE_DIR"));
    if (read_line(path, base, sizeof(base)) < 0) {
        fprintf(stderr, "no fixture conninfo at %s\n", path);
        return -1;
    }
    PGconn *pq = PQconnectdb(base);
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "fixture: %s", PQerrorMessage(pq));
        PQfinish(pq);
        return -1;
    }
    PQclear(PQexec(pq, "SET client_min_messages = warning"));
    char db[128], sql[256];
    snprintf(db, sizeof(db), "t_%s_%d", name, (int)getpid());
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", db);
    PQclear(PQexec(pq, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    PGresult *res = PQexec(pq, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "create database: %s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(pq);
    snprintf(out, len, "%s dbname=%s", base, db); /* the last dbname wins in libpq */
    return ok ? 0 : -1;
}

/* Run sql and copy the first value (or "" / "(null)") into out; returns -1 on error. */
__attribute__((format(printf, 4, 5))) static int sql1(const char *conninfo, char *out, size_t len,
                                                     const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGconn *pq = PQconnectdb(conninfo);
    int r = -1;
    PGresult *res = NULL;
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "sql1 connect: %s", PQerrorMessage(pq));
        goto out;
    }
    res = PQexec(pq, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "sql1 \"%s\": %s", sql, PQresultErrorMessage(res));
        goto out;
    }
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
        snprintf(out, len, "%s", PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    else
        snprintf(out, len, "%s", "");
    r = 0;
out:
    PQclear(res);
    PQfinish(pq);
    return r;
}

static long long sql_count(const char *conninfo, const char *sql)
{
    char v[64];
    if (sql1(conninfo, v, sizeof(v), "%s", sql) < 0)
        return -1;
    return strtoll(v, NULL, 10);
}

static int migrate_db(const char *conninfo, vl3_error *err)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/schema", test_source_dir());
    return migrate_apply(conninfo, dir, NULL, err);
}

/* Number of *.sql migrations in the source tree (counted by the shell, independently). */
static int count_schema_files(void)
{
    char out[64];
    if (test_sh(out, sizeof(out), "ls '%s'/schema/[0-9][0-9][0-9][0-9]_*.sql | wc -l",
                test_source_dir()) != 0)
        return -1;
    return atoi(out);
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag >= want or timeout_s passes. Returns 0 when it got there. */
static int run_until_n(uv_loop_t *loop, const int *flag, int want, double timeout_s)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 20, 20); /* RUN_ONCE returns at least every 20 ms */
    uint64_t end = uv_hrtime() + (uint64_t)(timeout_s * 1e9);
    while (*flag < want && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag >= want ? 0 : -1;
}

static int run_until(uv_loop_t *loop, const int *flag, double timeout_s)
{
    return run_until_n(loop, flag, 1, timeout_s);
}

struct sres {
    int done;
    store_outcome out;
    char msg[VL3_ERROR_MSG_MAX];
};

static void on_s(void *user, const store_outcome *o)
{
    struct sres *s = user;
    s->done++;
    s->out = *o;
    snprintf(s->msg, sizeof(s->msg), "%s", o->code < 0 ? o->err->msg : "");
    s->out.err = NULL;
}

static int closed_flag;
static void on_closed(void *user)
{
    (void)user;
    closed_flag = 1;
}

/* Close conn, drain the loop and require uv_loop_close() == 0. */
static int close_all(uv_loop_t *loop, pg_conn *conn)
{
    closed_flag = 0;
    pg_conn_close(conn, on_closed, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (!closed_flag)
        return -1;
    return uv_loop_close(loop);
}

static int open_conn(uv_loop_t *loop, const char *conninfo, pg_conn **ret)
{
    pg_conn_options o = pg_conn_options_default();
    o.conninfo = conninfo;
    o.backoff_min_ms = 50;
    o.backoff_max_ms = 400;
    o.connect_timeout_ms = 3000;
    vl3_error err = {0};
    int r = pg_conn_new(loop, &o, ret, &err);
    if (r < 0)
        fprintf(stderr, "pg_conn_new: %s\n", vl3_error_text(&err, r));
    return r;
}

/* ---- migrations --------------------------------------------------------------------------- */

TEST(migrate_applies_then_noop)
{
    char ci[1024], v[256], sha[256];
    ASSERT_EQ(make_db("migrate", ci, sizeof(ci)), 0);
    int nfiles = count_schema_files();
    ASSERT_GE(nfiles, 1);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/schema", test_source_dir());
    vl3_error err = {0};
    migrate_report rep;
    ASSERT_OK_E(migrate_apply(ci, dir, &rep, &err), &err);
    ASSERT_EQ(rep.found, nfiles);
    ASSERT_EQ(rep.applied, nfiles);
    ASSERT_EQ(rep.skipped, 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM schema_migrations"), nfiles);
    /* the recorded checksum is the file's SHA-256 (computed here by sha256sum) */
    ASSERT_EQ(test_sh(sha, sizeof(sha), "sha256sum '%s/0001_init.sql' | cut -c1-64", dir), 0);
    sha[strcspn(sha, "\n")] = '\0';
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT checksum FROM schema_migrations WHERE version = 1"),
              0);
    ASSERT_STR_EQ(v, sha);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT name FROM schema_migrations WHERE version = 1"), 0);
    ASSERT_STR_EQ(v, "0001_init");
    /* the objects exist */
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM pg_views WHERE viewname IN ('video_contents', "
                            "'failed_jobs', 'job_progress')"),
              3);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM pg_proc WHERE proname = 'search_answers'"), 1);
    char applied_at[256];
    ASSERT_EQ(sql1(ci, applied_at, sizeof(applied_at),
                   "SELECT applied_at FROM schema_migrations WHERE version = 1"),
              0);
    /* again: nothing applied, nothing changed */
    ASSERT_OK_E(migrate_apply(ci, dir, &rep, &err), &err);
    ASSERT_EQ(rep.applied, 0);
    ASSERT_EQ(rep.skipped, nfiles);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM schema_migrations"), nfiles);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT applied_at FROM schema_migrations WHERE version = 1"),
              0);
    ASSERT_STR_EQ(v, applied_at);
    migrate_entry e[8];
    int n = migrate_list(ci, e, 8, &err);
    ASSERT_EQ(n, nfiles);
    ASSERT_EQ(e[0].version, 1);
    ASSERT_STR_EQ(e[0].checksum, sha);
    return 0;
}

TEST(migrate_concurrent_cli)
{
    char ci[1024], out[8192];
    ASSERT_EQ(make_db("concurrent", ci, sizeof(ci)), 0);
    const char *tmp = test_tmpdir();
    /* a copy of the schema plus a slow migration, so the second migrator really waits */
    ASSERT_EQ(test_sh(NULL, 0,
                      "mkdir -p %s/schema && cp '%s'/schema/*.sql %s/schema/ && "
                      "printf 'SELECT pg_sleep(0.5);\\nCREATE TABLE slow_marker (x int);\\n' > "
                      "%s/schema/9000_slow.sql",
                      tmp, test_source_dir(), tmp, tmp),
              0);
    int nfiles = count_schema_files() + 1;
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "cd %s && m() { '%s/vl3' db migrate --conninfo '%s' --schema-dir "
                      "%s/schema; }; m > out.1 2>&1 & a=$!; m > out.2 2>&1 & b=$!; "
                      "fail=0; wait $a || fail=1; wait $b || fail=1; cat out.1 out.2; exit $fail",
                      tmp, getenv("VL3_BIN_DIR"), ci, tmp),
              0);
    /* exactly one applied everything, the other found it done */
    ASSERT_STR_CONTAINS(out, "applied ");
    ASSERT_STR_CONTAINS(out, "schema is up to date");
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM schema_migrations"), nfiles);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM schema_migrations WHERE version = 9000"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM pg_tables WHERE tablename = 'slow_marker'"), 1);
    return 0;
}

TEST(migrate_refuses_tampered)
{
    char ci[1024], out[4096];
    ASSERT_EQ(make_db("tamper", ci, sizeof(ci)), 0);
    const char *tmp = test_tmpdir();
    ASSERT_EQ(test_sh(NULL, 0, "mkdir -p %s/schema && cp '%s'/schema/*.sql %s/schema/", tmp,
                      test_source_dir(), tmp),
              0);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/schema", tmp);
    vl3_error err = {0};
    ASSERT_OK_E(migrate_apply(ci, dir, NULL, &err), &err);
    /* a changed applied migration, even by a comment, is refused with its name */
    ASSERT_EQ(test_sh(NULL, 0, "echo '-- edited' >> %s/0001_init.sql", dir), 0);
    memset(&err, 0, sizeof(err));
    ASSERT_EQ(migrate_apply(ci, dir, NULL, &err), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "0001_init.sql");
    ASSERT_STR_CONTAINS(err.msg, "changed after it was applied");
    /* the CLI says the same and fails */
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db migrate --conninfo '%s' --schema-dir %s 2>&1",
                      getenv("VL3_BIN_DIR"), ci, dir),
              1);
    ASSERT_STR_CONTAINS(out, "0001_init.sql");
    /* a new migration that fails is rolled back and not recorded */
    ASSERT_EQ(test_sh(NULL, 0,
                      "mkdir -p %s/s2 && cp '%s'/schema/*.sql %s/s2/ && "
                      "printf 'CREATE TABLE half_done (x int);\\nSELECT no_such_function();\\n' > "
                      "%s/s2/9001_broken.sql",
                      tmp, test_source_dir(), tmp, tmp),
              0);
    snprintf(dir, sizeof(dir), "%s/s2", tmp);
    memset(&err, 0, sizeof(err));
    ASSERT_EQ(migrate_apply(ci, dir, NULL, &err), VL3_E_PG);
    ASSERT_STR_CONTAINS(err.msg, "9001_broken.sql");
    ASSERT_STR_CONTAINS(err.msg, "no_such_function");
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'"), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM schema_migrations WHERE version = 9001"), 0);
    /* bad file names are refused */
    ASSERT_EQ(test_sh(NULL, 0, "mkdir -p %s/s3 && touch %s/s3/1_bad.sql", tmp, tmp), 0);
    snprintf(dir, sizeof(dir), "%s/s3", tmp);
    ASSERT_EQ(migrate_apply(ci, dir, NULL, &err), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "1_bad.sql");
    return 0;
}

/* ---- store -------------------------------------------------------------------------------- */

static const store_video test_video = {
    .path = "/archive/street.mp4", .size = 123456789, .mtime_s = 1700000000,
    .fingerprint = "ab12cd34", .duration_s = 20.0, .width = 1280, .height = 720, .fps = 25.0,
    .codec = "h264",
};

static void fill_results(store_result *r, const char *const answers[3])
{
    memset(r, 0, 3 * sizeof(*r));
    for (int i = 0; i < 3; i++) {
        r[i].prompt_tokens = 100 + i;
        r[i].generated_tokens = 20 + i;
        r[i].visual_tokens_kept = 300;
        r[i].visual_tokens_total = 1000;
        r[i].vision_ms = 10;
        r[i].prefill_ms = 20;
        r[i].decode_ms = 30;
        r[i].total_ms = 60;
        r[i].answer = answers[i];
    }
    r[0].task = "caption"; r[0].window_idx = 0; r[0].start_s = 0; r[0].end_s = 10;
    r[1].task = "caption"; r[1].window_idx = 1; r[1].start_s = 10; r[1].end_s = 20;
    r[2].task = "qa"; r[2].question = "Is it night?"; r[2].window_idx = 0; r[2].start_s = 0;
    r[2].end_s = 20;
    r[0].frames_sampled = 10; r[0].sample_interval_s = 1.0; /* every second of the window */
    r[1].frames_sampled = 4; r[1].sample_interval_s = 2.5;  /* a subsampled window */
    /* r[2]: unknown (0) -> NULL */
    /* token cache (0004_token_cache.sql): hit, miss, not used -> true, false, NULL */
    r[0].cache_hit = 1;
    r[1].cache_hit = 0;
    r[2].cache_hit = -1;
}

static int store_call_wait(uv_loop_t *loop, struct sres *s)
{
    int r = run_until(loop, &s->done, 10.0);
    if (s->out.code < 0)
        fprintf(stderr, "store call failed: %s\n", s->msg);
    return r;
}

TEST(store_idempotent_results)
{
    char ci[1024], v[1024];
    ASSERT_EQ(make_db("store", ci, sizeof(ci)), 0);
    vl3_error err = {0};
    ASSERT_OK_E(migrate_db(ci, &err), &err);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn *pg = NULL;
    ASSERT_OK(open_conn(&loop, ci, &pg));

    store_job job = {.job_id = "job-1", .topic = "vl3.jobs", .partition = 2, .offset = 41,
                     .path = test_video.path, .model = "videollama3-2b", .worker = "w0"};
    struct sres s = {0};
    ASSERT_OK_E(store_job_queued(pg, &job, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.rows, 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM jobs WHERE status = 'queued' AND attempts = 0"),
              1);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_queued(pg, &job, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.rows, 0); /* known already: left alone */
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_started(pg, &job, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.attempts, 1);
    ASSERT_EQ(s.out.already_done, 0);

    static const char *const first[3] = {"A red car drives through a snowy street.",
                                         "Two people cross the road with umbrellas.", "No."};
    static const char *const second[3] = {"DIFFERENT", "DIFFERENT", "DIFFERENT"};
    store_result res[3];
    fill_results(res, first);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_done(pg, &job, &test_video, res, 3, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.already_done, 0);
    ASSERT_EQ(s.out.rows, 3);
    /* coverage columns (0002_coverage.sql): stored as given, unknown as NULL */
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE window_idx = 0 AND task = 'caption'"
                            " AND frames_sampled = 10 AND sample_interval_s = 1.0"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE window_idx = 1"
                            " AND frames_sampled = 4 AND sample_interval_s = 2.5"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE task = 'qa'"
                            " AND frames_sampled IS NULL AND sample_interval_s IS NULL"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE window_idx = 0 AND task = "
                            "'caption' AND cache_hit"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE window_idx = 1 AND "
                            "cache_hit = false"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE task = 'qa' AND cache_hit IS "
                            "NULL"), 1);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM videos WHERE fingerprint = 'ab12cd34'"), 1);

    /* redelivery: queued/started again change nothing, done again inserts and replaces
     * nothing */
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_queued(pg, &job, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.rows, 0);
    ASSERT_EQ(s.out.already_done, 1);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_started(pg, &job, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.already_done, 1);
    fill_results(res, second);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_done(pg, &job, &test_video, res, 3, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.already_done, 1);
    ASSERT_EQ(s.out.rows, 0);

    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results"), 3);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results WHERE answer = 'DIFFERENT'"), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM videos"), 1);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT answer FROM video_contents WHERE path = "
                                     "'/archive/street.mp4' AND task = 'caption' AND "
                                     "window_idx = 1"),
              0);
    ASSERT_STR_EQ(v, first[1]);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT question || '|' || answer || '|' || end_s FROM "
                                     "results WHERE task = 'qa'"),
              0);
    ASSERT_STR_EQ(v, "Is it night?|No.|20");
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT status || '|' || attempts || '|' || src_topic || "
                                     "'|' || src_partition || '|' || src_offset || '|' || "
                                     "(finished_at IS NOT NULL) || '|' || (video_id IS NOT NULL) "
                                     "FROM jobs WHERE job_id = 'job-1'"),
              0);
    ASSERT_STR_EQ(v, "done|1|vl3.jobs|2|41|true|true");
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT width || 'x' || height || '@' || fps || ' ' || codec "
                                     "|| ' ' || duration_s || ' ' || size_bytes || ' ' || "
                                     "extract(epoch FROM mtime)::bigint FROM videos"),
              0);
    ASSERT_STR_EQ(v, "1280x720@25 h264 20 123456789 1700000000");
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT sum(prompt_tokens) || ' ' || sum(visual_tokens_kept) "
                                     "|| ' ' || min(model) FROM results"),
              0);
    ASSERT_STR_EQ(v, "303 900 videollama3-2b");

    /* invalid results never reach the server */
    res[1].task = NULL;
    ASSERT_EQ(store_job_done(pg, &job, NULL, res, 3, on_s, &s, &err), -EINVAL);
    ASSERT_EQ(close_all(&loop, pg), 0);
    return 0;
}

TEST(store_failed_jobs_and_search)
{
    char ci[1024], v[1024];
    ASSERT_EQ(make_db("failsearch", ci, sizeof(ci)), 0);
    vl3_error err = {0};
    ASSERT_OK_E(migrate_db(ci, &err), &err);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn *pg = NULL;
    ASSERT_OK(open_conn(&loop, ci, &pg));

    /* job-a: fails for good; job-b: fails once, then succeeds; job-c: done */
    store_job a = {.job_id = "job-a", .path = "/archive/broken.mp4", .partition = -1,
                   .offset = -1};
    store_job b = {.job_id = "job-b", .path = "/archive/flaky.mp4", .partition = -1, .offset = -1};
    struct sres s = {0};
    ASSERT_OK_E(store_job_started(pg, &a, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_failed(pg, &a, "could not decode \"/archive/broken.mp4\": invalid data",
                                 1, on_s, &s, &err),
                &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_failed(pg, &b, "worker exited with status 75", 0, on_s, &s, &err),
                &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM failed_jobs"), 2);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT status FROM failed_jobs WHERE job_id = 'job-b'"), 0);
    ASSERT_STR_EQ(v, "retrying");

    static const char *const ans[3] = {"Several red cars are parked along the harbour.",
                                       "A dog runs on the beach.", "Yes, the lights are on."};
    store_result res[3];
    fill_results(res, ans);
    store_video vid = test_video;
    vid.path = "/archive/flaky.mp4";
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_done(pg, &b, &vid, res, 3, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.code, 0);
    ASSERT_EQ(s.out.rows, 3);
    /* a late failure report for a done job changes nothing */
    memset(&s, 0, sizeof(s));
    ASSERT_OK_E(store_job_failed(pg, &b, "late", 1, on_s, &s, &err), &err);
    ASSERT_EQ(store_call_wait(&loop, &s), 0);
    ASSERT_EQ(s.out.already_done, 1);
    ASSERT_EQ(close_all(&loop, pg), 0);

    /* failed_jobs: only job-a now, with its reason */
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM failed_jobs"), 1);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT job_id || '|' || status || '|' || last_error FROM "
                                     "failed_jobs"),
              0);
    ASSERT_STR_EQ(v, "job-a|failed|could not decode \"/archive/broken.mp4\": invalid data");
    /* search: "car" finds "cars" (stemming) in the flaky video, window 0; a missing word finds
     * nothing; "dog -beach" excludes the dog answer */
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM search_answers('car')"), 1);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT path || '|' || window_idx || '|' || start_s || '|' "
                                     "|| end_s FROM search_answers('car')"),
              0);
    ASSERT_STR_EQ(v, "/archive/flaky.mp4|0|0|10");
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM search_answers('elephant')"), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM search_answers('dog -beach')"), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM search_answers('dog beach')"), 1);
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT headline FROM search_answers('harbour')"), 0);
    ASSERT_STR_CONTAINS(v, "<b>harbour</b>");
    /* the GIN index is usable for the search predicate */
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SET enable_seqscan = off; EXPLAIN SELECT * FROM results "
                                     "WHERE answer_tsv @@ websearch_to_tsquery('english', 'car')"),
              0);
    ASSERT_STR_CONTAINS(v, "Bitmap Heap Scan");
    /* job_progress */
    ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT jobs_total || '|' || done || '|' || failed || '|' || "
                                     "done_last_10min || '|' || jobs_per_min_10min FROM "
                                     "job_progress"),
              0);
    ASSERT_STR_EQ(v, "2|1|1|1|0.10");
    return 0;
}

TEST(cli_status_and_db_status)
{
    char ci[1024], out[8192];
    ASSERT_EQ(make_db("cli", ci, sizeof(ci)), 0);
    const char *bin = getenv("VL3_BIN_DIR");
    /* before migrating: a clear hint */
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' status --conninfo '%s' 2>&1", bin, ci), 1);
    ASSERT_STR_CONTAINS(out, "vl3 db migrate");
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db status --conninfo '%s' 2>&1", bin, ci), 0);
    ASSERT_STR_CONTAINS(out, "no migrations applied");
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db migrate --conninfo '%s' 2>&1", bin, ci), 0);
    ASSERT_STR_CONTAINS(out, "applied ");
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db status --conninfo '%s' 2>&1", bin, ci), 0);
    ASSERT_STR_CONTAINS(out, "0001  0001_init");
    ASSERT_EQ(sql1(ci, out, sizeof(out),
                   "INSERT INTO jobs (job_id, status, finished_at) VALUES "
                   "('j1', 'done', now()), ('j2', 'done', now()), ('j3', 'done', now() - "
                   "interval '1 hour'), ('j4', 'queued', NULL); "
                   "INSERT INTO jobs (job_id, status, attempts, last_error, path, finished_at) "
                   "VALUES ('j5', 'failed', 3, 'worker killed by signal 9', '/v/x.mp4', now())"),
              0);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' status --conninfo '%s' 2>&1", bin, ci), 0);
    ASSERT_STR_CONTAINS(out, "5 total: 1 queued, 0 running, 0 retrying, 3 done, 1 failed");
    ASSERT_STR_CONTAINS(out, "0.20 jobs/min over the last 10 min (2 done)");
    ASSERT_STR_CONTAINS(out, "j5  attempts=3  /v/x.mp4");
    ASSERT_STR_CONTAINS(out, "worker killed by signal 9");
    /* the connection string from a vl3d config file */
    char conf[4200];
    snprintf(conf, sizeof(conf), "%s/vl3d.conf", test_tmpdir());
    FILE *f = fopen(conf, "w");
    ASSERT(f != NULL);
    fprintf(f, "# test\n[pg]\nconninfo = \"%s\"\n", ci);
    fclose(f);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db status -c '%s' 2>&1", bin, conf), 0);
    ASSERT_STR_CONTAINS(out, "0001  0001_init");
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' status -c '%s' --conninfo x 2>&1", bin, conf),
              2);
    /* --watch repeats (at 0 s and 1 s within 1.6 s) */
    ASSERT_EQ(test_sh(out, sizeof(out), "timeout 1.6 '%s/vl3' status -c '%s' --watch 1 2>&1 | "
                      "grep -c '^--- .* (every 1s)$'", bin, conf),
              0);
    ASSERT_STR_EQ(out, "2\n");
    /* unreachable server: exit 1 and libpq's reason */
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "'%s/vl3' status --conninfo 'host=127.0.0.1 port=1 connect_timeout=2' 2>&1",
                      bin),
              1);
    ASSERT_STR_CONTAINS(out, "could not connect to PostgreSQL");
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "'%s/vl3' db migrate --conninfo 'host=127.0.0.1 port=1' 2>&1", bin),
              1);
    ASSERT_STR_CONTAINS(out, "could not connect to PostgreSQL");
    /* usage errors */
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db frobnicate 2>&1", bin), 2);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' status --watch 0 2>&1", bin), 2);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3' db --help", bin), 0);
    ASSERT_STR_CONTAINS(out, "usage: vl3 db migrate");
    return 0;
}

/* Throughput of store_job_done() through the adapter (one statement per job, sent one at a
 * time): 300 jobs of 4 results each, all queued at once. Prints jobs/s; the bound is loose
 * because the test machine is shared. */
#define TP_JOBS 300

static int tp_done, tp_failed;
static void tp_cb(void *user, const store_outcome *o)
{
    (void)user;
    tp_done++;
    if (o->code < 0 || o->rows != 4)
        tp_failed++;
}

TEST(store_done_throughput)
{
    char ci[1024];
    ASSERT_EQ(make_db("throughput", ci, sizeof(ci)), 0);
    vl3_error err = {0};
    ASSERT_OK_E(migrate_db(ci, &err), &err);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn *pg = NULL;
    ASSERT_OK(open_conn(&loop, ci, &pg));
    store_result res[4];
    static const char *const ans[3] = {"a cat", "a dog", "yes"};
    fill_results(res, ans);
    res[3] = res[0];
    res[3].window_idx = 2;
    res[3].start_s = 20;
    res[3].end_s = 30;
    tp_done = tp_failed = 0;
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < TP_JOBS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "tp-%d", i);
        store_job job = {.job_id = id, .partition = 0, .offset = i, .model = "m"};
        store_video vid = test_video;
        vid.path = id;
        ASSERT_OK_E(store_job_done(pg, &job, &vid, res, 4, tp_cb, NULL, &err), &err);
    }
    ASSERT_EQ(run_until_n(&loop, &tp_done, TP_JOBS, 60.0), 0);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    ASSERT_EQ(tp_done, TP_JOBS);
    ASSERT_EQ(tp_failed, 0);
    fprintf(stderr, "store_job_done: %d jobs x 4 results in %.3f s = %.0f jobs/s\n", TP_JOBS, secs,
            TP_JOBS / secs);
    ASSERT_EQ(close_all(&loop, pg), 0);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results"), TP_JOBS * 4);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM jobs WHERE status = 'done'"), TP_JOBS);
    ASSERT_GT(TP_JOBS / secs, 20);
    return 0;
}

/* Two daemons finishing the same job at once (a rebalance): one statement wins, the other finds
 * the job done; one set of answers, never a mix. */
static struct sres conc[2];

TEST(store_concurrent_done)
{
    char ci[1024], v[256];
    ASSERT_EQ(make_db("concdone", ci, sizeof(ci)), 0);
    vl3_error err = {0};
    ASSERT_OK_E(migrate_db(ci, &err), &err);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn *a = NULL, *b = NULL;
    ASSERT_OK(open_conn(&loop, ci, &a));
    ASSERT_OK(open_conn(&loop, ci, &b));
    static const char *const ans_a[3] = {"from A", "from A", "from A"};
    static const char *const ans_b[3] = {"from B", "from B", "from B"};
    store_result ra[3], rb[3];
    fill_results(ra, ans_a);
    fill_results(rb, ans_b);
    store_job job = {.job_id = "job-c", .partition = 0, .offset = 7};
    int total = 0;
    for (int round = 0; round < 5; round++) { /* a few rounds to vary the interleaving */
        char id[32];
        snprintf(id, sizeof(id), "job-c%d", round);
        job.job_id = id;
        memset(conc, 0, sizeof(conc));
        ASSERT_OK_E(store_job_done(a, &job, &test_video, ra, 3, on_s, &conc[0], &err), &err);
        ASSERT_OK_E(store_job_done(b, &job, &test_video, rb, 3, on_s, &conc[1], &err), &err);
        ASSERT_EQ(run_until(&loop, &conc[0].done, 10.0), 0);
        ASSERT_EQ(run_until(&loop, &conc[1].done, 10.0), 0);
        ASSERT_EQ(conc[0].out.code, 0);
        ASSERT_EQ(conc[1].out.code, 0);
        ASSERT_EQ(conc[0].out.already_done + conc[1].out.already_done, 1);
        ASSERT_EQ(conc[0].out.rows + conc[1].out.rows, 3);
        total += 3;
        ASSERT_EQ(sql1(ci, v, sizeof(v), "SELECT count(DISTINCT answer) || '|' || count(*) FROM "
                                         "results WHERE job_id = '%s'", id),
                  0);
        ASSERT_STR_EQ(v, "1|3");
    }
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM results"), total);
    ASSERT_EQ(sql_count(ci, "SELECT count(*) FROM videos"), 1);
    closed_flag = 0;
    pg_conn_close(a, NULL, NULL);
    ASSERT_EQ(close_all(&loop, b), 0);
    return 0;
}
