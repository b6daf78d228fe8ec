/* test_pg_adapter.c: the non-blocking libpq adapter (daemon/src/pg.c) on a real uv loop: results
 * and parameters, server errors converted to VL3_E_PG with SQLSTATE, FIFO order, the queue bound,
 * callbacks never inside pg_query(), cancellation on close, retrying an unreachable server with
 * backoff, and a server restart (on a throwaway server of this test's own, started with
 * tests/harness/pg-harness in test_tmpdir()): the in-flight statement fails as retryable, the
 * statements queued during the outage run after reconnection exactly once, in order. Every case
 * ends with uv_loop_close() == 0. */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <unistd.h>
#include <uv.h>

#include "pg.h"
#include "test.h"
#include "vl3/log.h"

static int ad_make_db(const char *name, char *out, size_t len)
{
    char base[512], path[4096];
    snprintf(path, sizeof(path), "%s/pg/conninfo", getenv("VL3_FIXTURE_DIR"));
    FILE *f = fopen(path, "r");
    if (!f || !fgets(base, sizeof(base), f)) {
        if (f)
            fclose(f);
        fprintf(stderr, "no fixture conninfo at %s\n", path);
        return -1;
    }
    fclose(f);
    base[strcspn(base, "\n")] = '\0';
    if (test_sh(NULL, 0, "psql '%s' -XAq -c 'DROP DATABASE IF EXISTS a_%s_%d' -c 'CREATE "
                "DATABASE a_%s_%d' >/dev/null 2>&1",
                base, name, (int)getpid(), name, (int)getpid()) != 0)
        return -1;
    snprintf(out, len, "%s dbname=a_%s_%d", base, name, (int)getpid());
    return 0;
}

static void ad_tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag >= want or timeout_s passes. */
static int ad_run_until(uv_loop_t *loop, const int *flag, int want, double timeout_s)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, ad_tick, 10, 10);
    uint64_t end = uv_hrtime() + (uint64_t)(timeout_s * 1e9);
    while (*flag < want && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag >= want ? 0 : -1;
}

/* Run the loop for ms milliseconds. */
static void ad_run_for(uv_loop_t *loop, int ms)
{
    int never = 0;
    (void)ad_run_until(loop, &never, 1, ms / 1000.0);
}

#define AD_MAX 64

struct ad_rec {
    int n;                 /* callbacks so far */
    int order[AD_MAX];     /* tag of each callback, in call order */
    int code[AD_MAX];
    int retryable[AD_MAX];
    char sqlstate[AD_MAX][6];
    char msg[AD_MAX][256];
    char val[AD_MAX][2][64];
    int in_query;          /* set while inside pg_query(): a callback then is a bug */
    int cb_inside_query;
};

struct ad_tag {
    struct ad_rec *rec;
    int tag;
};

static void ad_cb(void *user, const pg_reply *r)
{
    struct ad_tag *t = user;
    struct ad_rec *rec = t->rec;
    if (rec->in_query)
        rec->cb_inside_query++;
    int i = rec->n++;
    if (i >= AD_MAX)
        return;
    rec->order[i] = t->tag;
    rec->code[i] = r->code;
    rec->retryable[i] = r->retryable;
    memcpy(rec->sqlstate[i], r->sqlstate, 6);
    snprintf(rec->msg[i], sizeof(rec->msg[i]), "%s", r->code < 0 ? r->err->msg : "");
    for (int c = 0; c < 2; c++) {
        const char *v = pg_reply_value(r, 0, c);
        snprintf(rec->val[i][c], sizeof(rec->val[i][c]), "%s", v ? v : "(null)");
    }
}

static int ad_query(pg_conn *pg, struct ad_rec *rec, struct ad_tag *tags, int tag, const char *sql,
                    int n, const char *const *params)
{
    tags[tag].rec = rec;
    tags[tag].tag = tag;
    vl3_error err = {0};
    rec->in_query = 1;
    int r = pg_query(pg, sql, n, params, ad_cb, &tags[tag], &err);
    rec->in_query = 0;
    if (r < 0)
        fprintf(stderr, "pg_query: %s\n", vl3_error_text(&err, r));
    return r;
}

static int ad_closed;
static void ad_on_closed(void *user)
{
    (void)user;
    ad_closed++;
}

static int ad_close(uv_loop_t *loop, pg_conn *pg)
{
    ad_closed = 0;
    pg_conn_close(pg, ad_on_closed, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (ad_closed != 1)
        return -1;
    return uv_loop_close(loop);
}

static pg_conn_options ad_opts(const char *conninfo)
{
    pg_conn_options o = pg_conn_options_default();
    o.conninfo = conninfo;
    o.backoff_min_ms = 50;
    o.backoff_max_ms = 400;
    o.connect_timeout_ms = 3000;
    return o;
}

TEST(pg_adapter_queries)
{
    char ci[1024];
    ASSERT_EQ(ad_make_db("queries", ci, sizeof(ci)), 0);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn_options o = ad_opts(ci);
    o.max_queue = 40;
    pg_conn *pg = NULL;
    vl3_error err = {0};
    ASSERT_OK_E(pg_conn_new(&loop, &o, &pg, &err), &err);
    static struct ad_rec rec;
    static struct ad_tag tags[AD_MAX];
    memset(&rec, 0, sizeof(rec));

    const char *p3[3] = {"40", "2", NULL};
    ASSERT_OK(ad_query(pg, &rec, tags, 0, "SELECT $1::int + $2::int, $3::text IS NULL", 3, p3));
    ASSERT_OK(ad_query(pg, &rec, tags, 1, "SELEC 1", 0, NULL));
    ASSERT_OK(ad_query(pg, &rec, tags, 2, "CREATE TABLE u (id int PRIMARY KEY)", 0, NULL));
    ASSERT_OK(ad_query(pg, &rec, tags, 3, "INSERT INTO u VALUES (1)", 0, NULL));
    ASSERT_OK(ad_query(pg, &rec, tags, 4, "INSERT INTO u VALUES (1)", 0, NULL));
    ASSERT_EQ(rec.n, 0); /* nothing runs inside pg_query() */
    ASSERT_EQ(ad_run_until(&loop, &rec.n, 5, 10.0), 0);
    ASSERT_EQ(pg_conn_state(pg), PG_STATE_CONNECTED);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(rec.order[i], i);
    ASSERT_EQ(rec.code[0], 0);
    ASSERT_STR_EQ(rec.val[0][0], "42");
    ASSERT_STR_EQ(rec.val[0][1], "t");
    ASSERT_EQ(rec.code[1], VL3_E_PG);
    ASSERT_STR_EQ(rec.sqlstate[1], "42601");
    ASSERT_EQ(rec.retryable[1], 0);
    ASSERT_STR_CONTAINS(rec.msg[1], "syntax error");
    ASSERT_NE(rec.msg[1][strlen(rec.msg[1]) - 1], '\n');
    ASSERT_EQ(rec.code[2], 0);
    ASSERT_EQ(rec.code[3], 0);
    ASSERT_EQ(rec.code[4], VL3_E_PG);
    ASSERT_STR_EQ(rec.sqlstate[4], "23505");
    ASSERT_EQ(rec.retryable[4], 0);

    /* FIFO order over many statements, while connected */
    memset(&rec, 0, sizeof(rec));
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", 100 + i);
        const char *p1[1] = {id};
        ASSERT_OK(ad_query(pg, &rec, tags, i, "INSERT INTO u VALUES ($1::int) RETURNING id", 1,
                           p1));
    }
    /* the bound: 40 pending, the 41st is refused */
    ASSERT_EQ(pg_query(pg, "SELECT 1", 0, NULL, NULL, NULL, &err), VL3_E_LIMIT);
    ASSERT_EQ(rec.cb_inside_query, 0);
    ASSERT_EQ(ad_run_until(&loop, &rec.n, 40, 10.0), 0);
    for (int i = 0; i < 40; i++) {
        ASSERT_EQ(rec.order[i], i);
        ASSERT_EQ(rec.code[i], 0);
        ASSERT_EQ(atoi(rec.val[i][0]), 100 + i);
    }
    pg_conn_stats st;
    pg_conn_get_stats(pg, &st);
    ASSERT_EQ(st.connects, 1);
    ASSERT_EQ(st.completed, 3 + 40);
    ASSERT_EQ(st.failed, 2);

    /* close with work pending: every callback once, -ECANCELED */
    memset(&rec, 0, sizeof(rec));
    ASSERT_OK(ad_query(pg, &rec, tags, 0, "SELECT pg_sleep(10)", 0, NULL));
    ASSERT_OK(ad_query(pg, &rec, tags, 1, "SELECT 1", 0, NULL));
    ASSERT_OK(ad_query(pg, &rec, tags, 2, "SELECT 2", 0, NULL));
    ad_run_for(&loop, 100); /* the sleep is now in flight */
    pg_conn_get_stats(pg, &st);
    ASSERT_EQ(st.in_flight, 1);
    ASSERT_EQ(st.queued, 2);
    ASSERT_EQ(ad_close(&loop, pg), 0);
    ASSERT_EQ(rec.n, 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(rec.order[i], i);
        ASSERT_EQ(rec.code[i], -ECANCELED);
    }
    return 0;
}

static int ad_states[PG_STATE_COUNT];
static void ad_on_state(void *user, enum pg_state s)
{
    (void)user;
    ad_states[s]++;
}

TEST(pg_adapter_unreachable_retries)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    vl3_error err = {0};
    pg_conn *pg = NULL;
    /* a syntax error in the conninfo is refused at once */
    pg_conn_options bad = ad_opts("host=127.0.0.1 nonsense");
    ASSERT_EQ(pg_conn_new(&loop, &bad, &pg, &err), VL3_E_PG);
    ASSERT_STR_CONTAINS(err.msg, "invalid PostgreSQL connection string");
    /* closing while the first attempt is in progress leaves nothing behind */
    pg_conn_options quick = ad_opts("host=127.0.0.1 port=1 dbname=x");
    ASSERT_OK_E(pg_conn_new(&loop, &quick, &pg, &err), &err);
    ASSERT_EQ(pg_conn_state(pg), PG_STATE_CONNECTING);
    ASSERT_EQ(ad_close(&loop, pg), 0);
    ASSERT_EQ(uv_loop_init(&loop), 0);
    /* port 1 refuses: the adapter keeps trying with backoff, statements wait; the log gets one
     * WARNING, the other attempts go to DEBUG (stderr captured in a file meanwhile) */
    char logpath[4096], out[8192];
    snprintf(logpath, sizeof(logpath), "%s/unreachable.log", test_tmpdir());
    fflush(stderr);
    int saved = dup(2);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    vl3_log_set_level(VL3_LOG_DEBUG);
    memset(ad_states, 0, sizeof(ad_states));
    pg_conn_options o = ad_opts("host=127.0.0.1 port=1 dbname=x");
    o.on_state = ad_on_state;
    ASSERT_OK_E(pg_conn_new(&loop, &o, &pg, &err), &err);
    static struct ad_rec rec;
    static struct ad_tag tags[4];
    memset(&rec, 0, sizeof(rec));
    ASSERT_OK(ad_query(pg, &rec, tags, 0, "SELECT 1", 0, NULL));
    ad_run_for(&loop, 700);
    vl3_log_set_level(VL3_LOG_INFO);
    dup2(saved, 2);
    close(saved);
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "grep -c '^<4>could not connect to PostgreSQL: .*port 1 failed: Connection "
                      "refused.*retrying in [0-9]*ms host=127.0.0.1 port=1 dbname=x$' %s",
                      logpath),
              0);
    ASSERT_STR_EQ(out, "1\n");
    ASSERT_EQ(test_sh(out, sizeof(out), "grep -c '^<7>could not connect to PostgreSQL' %s",
                      logpath), 0);
    ASSERT_EQ(atoi(out), ad_states[PG_STATE_CONNECTING] - 1);
    ASSERT_EQ(rec.n, 0);
    ASSERT_EQ(pg_conn_state(pg), PG_STATE_DISCONNECTED);
    /* backoff 50, 100, 200, 400 ms (each jittered to [d/2, d]): between 3 and 14 attempts */
    ASSERT_GE(ad_states[PG_STATE_CONNECTING], 3);
    ASSERT_LE(ad_states[PG_STATE_CONNECTING], 14);
    ASSERT_EQ(ad_states[PG_STATE_CONNECTED], 0);
    ASSERT_EQ(ad_close(&loop, pg), 0);
    ASSERT_EQ(rec.n, 1);
    ASSERT_EQ(rec.code[0], -ECANCELED);
    ASSERT_EQ(ad_states[PG_STATE_CLOSING], 1);
    return 0;
}

/* --- restart ---------------------------------------------------------------------------- */

#define RESTART_N 20

struct restart_ctx {
    pg_conn *pg;
    struct ad_rec sleep_rec; /* the statement in flight at the restart */
    struct ad_tag sleep_tag[1];
    struct ad_rec rec; /* statements queued during the outage */
    struct ad_tag tags[RESTART_N];
    int queued_while_down;
    int disconnected;
    int reconnected;
    int restart_exited;
    int64_t restart_status;
};

static struct restart_ctx rc;

static void rc_on_state(void *user, enum pg_state s)
{
    (void)user;
    if (s == PG_STATE_DISCONNECTED && !rc.disconnected) {
        rc.disconnected = 1;
        for (int i = 0; i < RESTART_N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "%d", i);
            const char *p[1] = {id};
            if (ad_query(rc.pg, &rc.rec, rc.tags, i, "INSERT INTO t (id) VALUES ($1::int)", 1,
                         p) == 0 &&
                pg_conn_state(rc.pg) != PG_STATE_CONNECTED)
                rc.queued_while_down++;
        }
    }
    if (s == PG_STATE_CONNECTED && rc.disconnected)
        rc.reconnected++;
}

static void rc_on_exit(uv_process_t *p, int64_t status, int sig)
{
    (void)sig;
    rc.restart_status = status;
    rc.restart_exited = 1;
    uv_close((uv_handle_t *)p, NULL);
}

TEST(pg_adapter_survives_restart)
{
    char dir[4096], ci[1024], out[4096], harness[4096];
    snprintf(dir, sizeof(dir), "%s/pg", test_tmpdir());
    snprintf(harness, sizeof(harness), "%s/tests/harness/pg-harness", test_source_dir());
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s' start '%s' 2>&1", harness, dir), 0);
    char path[4200];
    snprintf(path, sizeof(path), "%s/conninfo", dir);
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    ASSERT(fgets(ci, sizeof(ci), f) != NULL);
    fclose(f);
    ci[strcspn(ci, "\n")] = '\0';
    ASSERT_EQ(test_sh(NULL, 0, "psql '%s' -XAqc 'CREATE TABLE t (id int PRIMARY KEY)' >/dev/null",
                      ci),
              0);

    memset(&rc, 0, sizeof(rc));
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn_options o = ad_opts(ci);
    o.on_state = rc_on_state;
    vl3_error err = {0};
    ASSERT_OK_E(pg_conn_new(&loop, &o, &rc.pg, &err), &err);
    ASSERT_OK(ad_query(rc.pg, &rc.sleep_rec, rc.sleep_tag, 0, "SELECT pg_sleep(30)", 0, NULL));
    ad_run_for(&loop, 300);
    pg_conn_stats st;
    pg_conn_get_stats(rc.pg, &st);
    ASSERT_EQ(st.in_flight, 1);
    ASSERT_EQ(rc.disconnected, 0);

    /* restart the server while the loop runs */
    uv_process_t proc;
    char *args[] = {harness, "restart", dir, NULL};
    uv_process_options_t po = {.exit_cb = rc_on_exit, .file = harness, .args = args};
    ASSERT_EQ(uv_spawn(&loop, &proc, &po), 0);
    ASSERT_EQ(ad_run_until(&loop, &rc.restart_exited, 1, 30.0), 0);
    ASSERT_EQ(rc.restart_status, 0);
    ASSERT_EQ(ad_run_until(&loop, &rc.rec.n, RESTART_N, 20.0), 0);

    /* the in-flight statement failed as retryable (the server's own shutdown message) */
    ASSERT_EQ(rc.sleep_rec.n, 1);
    ASSERT_EQ(rc.sleep_rec.code[0], VL3_E_PG);
    ASSERT_EQ(rc.sleep_rec.retryable[0], 1);
    fprintf(stderr, "in-flight statement failed with: %s [%s]\n", rc.sleep_rec.msg[0],
            rc.sleep_rec.sqlstate[0]);
    /* all queued during the outage, all ran after the reconnect, in order, once */
    ASSERT_EQ(rc.queued_while_down, RESTART_N);
    ASSERT_EQ(rc.reconnected, 1);
    for (int i = 0; i < RESTART_N; i++) {
        ASSERT_EQ(rc.rec.order[i], i);
        ASSERT_EQ(rc.rec.code[i], 0);
    }
    pg_conn_get_stats(rc.pg, &st);
    ASSERT_EQ(st.connects, 2);
    ASSERT_GE(st.disconnects, 1);
    ASSERT_EQ(ad_close(&loop, rc.pg), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "psql '%s' -XAtc 'SELECT count(*), count(DISTINCT id), "
                      "min(id), max(id) FROM t'", ci),
              0);
    ASSERT_STR_EQ(out, "20|20|0|19\n");
    ASSERT_EQ(test_sh(NULL, 0, "'%s' stop '%s'", harness, dir), 0);
    return 0;
}

/* A callback may close the adapter: the rest is cancelled, nothing runs after, the loop closes. */
static pg_conn *cic_pg;
static void cic_close_cb(void *user, const pg_reply *r)
{
    ad_cb(user, r);
    pg_conn_close(cic_pg, ad_on_closed, NULL);
}

TEST(pg_adapter_close_in_callback)
{
    char ci[1024];
    ASSERT_EQ(ad_make_db("closecb", ci, sizeof(ci)), 0);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pg_conn_options o = ad_opts(ci);
    vl3_error err = {0};
    ASSERT_OK_E(pg_conn_new(&loop, &o, &cic_pg, &err), &err);
    static struct ad_rec rec;
    static struct ad_tag tags[3];
    memset(&rec, 0, sizeof(rec));
    for (int i = 0; i < 3; i++) {
        tags[i].rec = &rec;
        tags[i].tag = i;
        ASSERT_OK(pg_query(cic_pg, "SELECT 1", 0, NULL, i == 0 ? cic_close_cb : ad_cb, &tags[i],
                           &err));
    }
    ad_closed = 0;
    uv_run(&loop, UV_RUN_DEFAULT); /* returns when the adapter's handles are closed */
    ASSERT_EQ(ad_closed, 1);
    ASSERT_EQ(rec.n, 3);
    ASSERT_EQ(rec.code[0], 0);
    ASSERT_EQ(rec.code[1], -ECANCELED);
    ASSERT_EQ(rec.code[2], -ECANCELED);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    return 0;
}
