/* pg.c: the non-blocking libpq adapter on the libuv loop (STYLE B8).
 *
 * Design: one PGconn, driven by a uv_poll_t on PQsocket(). Connecting uses PQconnectStart() and
 * PQconnectPoll(), with the poll direction libpq asks for and a timer for the attempt's timeout
 * (libpq does not enforce connect_timeout in non-blocking mode). Statements wait in a FIFO and
 * are sent one at a time with PQsendQueryParams(); PQflush() decides whether to also wait for
 * writability; PQconsumeInput()/PQisBusy()/PQgetResult() collect the result, and the statement's
 * callback runs when PQgetResult() returns NULL.
 *
 * When the connection breaks (read/write error, EOF, PQstatus() == CONNECTION_BAD) the in-flight
 * statement completes with a retryable VL3_E_PG, the PGconn is finished and a reconnect is
 * scheduled: the first at once, then after min * 2^n ms capped at max, each delay drawn uniformly
 * from [d/2, d] so a fleet of daemons does not reconnect in lockstep. Queued statements stay queued
 * and run after the reconnect. "could not connect" lines are rate-limited to one WARNING per
 * log_interval_ms; the rest go to DEBUG and are counted in the next WARNING.
 *
 * Handles: a timer for connect timeout/backoff, a zero-delay "kick" timer that starts sending on
 * the next loop turn (so callbacks never run inside pg_query()), and a heap-allocated poll wrapper
 * per socket (libpq may change sockets while connecting). The object frees itself when its count
 * of open handles drops to 0 after pg_conn_close(). A user callback may call pg_conn_close(): every
 * path that calls user code re-checks `closing` afterwards. */
#include "pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vl3/log.h"

struct stmt {
    struct stmt *next;
    char *sql;
    int nparams;
    char **params;
    pg_query_cb cb;
    void *user;
};

struct poll_wrap {
    uv_poll_t handle;
    pg_conn *owner;
    int fd;
    int events;
};

struct pg_conn {
    uv_loop_t *loop;
    pg_conn_options opts;
    char *conninfo;
    PGconn *pq;
    struct poll_wrap *poll;
    uv_timer_t timer; /* connect timeout (CONNECTING) or backoff (DISCONNECTED) */
    uv_timer_t kick;  /* zero-delay: send the next statement on the next loop turn */
    int open_handles;
    enum pg_state state;
    int closing;
    pg_close_cb close_cb;
    void *close_user;

    struct stmt *head, *tail;
    size_t nqueued;
    struct stmt *inflight;
    PGresult *result; /* the in-flight statement's result kept so far */

    unsigned failures; /* consecutive failed connection attempts */
    int ever_connected;
    uint64_t last_warn_ms;
    int warned;
    unsigned suppressed;
    unsigned seed;
    pg_conn_stats stats;
};

static void on_poll(uv_poll_t *h, int status, int events);
static void connect_start(pg_conn *c);

const char *pg_state_name(enum pg_state state)
{
    switch (state) {
    case PG_STATE_CONNECTING: return "connecting";
    case PG_STATE_CONNECTED: return "connected";
    case PG_STATE_DISCONNECTED: return "disconnected";
    case PG_STATE_CLOSING: return "closing";
    default: return "unknown";
    }
}

pg_conn_options pg_conn_options_default(void)
{
    return (pg_conn_options){
        .conninfo = "dbname=vl3",
        .max_queue = 4096,
        .backoff_min_ms = 250,
        .backoff_max_ms = 30000,
        .connect_timeout_ms = 10000,
        .log_interval_ms = 60000,
    };
}

/* libpq messages end in "\n" and may span lines ("...failed: Connection refused\n\tIs the server
 * running..."); ours are single lines without the newline, so every run of whitespace becomes
 * one space. */
int pg_error_set(vl3_error *err, const char *prefix, const char *msg)
{
    char flat[VL3_ERROR_MSG_MAX];
    size_t n = 0;
    int space = 0;
    for (const char *p = msg ? msg : ""; *p && n + 1 < sizeof(flat); p++) {
        if (*p == '\n' || *p == '\t' || *p == ' ' || *p == '\r') {
            space = 1;
            continue;
        }
        if (space && n > 0)
            flat[n++] = ' ';
        space = 0;
        if (n + 1 < sizeof(flat))
            flat[n++] = *p;
    }
    flat[n] = '\0';
    return vl3_error_set(err, VL3_E_PG, "%s%s", prefix ? prefix : "",
                         n ? flat : "unknown libpq error");
}

static void set_pq_error(vl3_error *err, const char *prefix, const char *msg)
{
    (void)pg_error_set(err, prefix, msg);
}

/* "250ms" or "2.5s", for log lines. */
static const char *fmt_delay(char *buf, size_t len, uint64_t ms)
{
    if (ms < 1000)
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    else
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    return buf;
}

/* The stable key=value tail of log lines (STYLE B6): where we connect(ed). */
static const char *where(const pg_conn *c, char *buf, size_t len)
{
    const char *host = c->pq ? PQhost(c->pq) : NULL;
    const char *port = c->pq ? PQport(c->pq) : NULL;
    const char *db = c->pq ? PQdb(c->pq) : NULL;
    snprintf(buf, len, "host=%s port=%s dbname=%s", host && *host ? host : "-",
             port && *port ? port : "-", db && *db ? db : "-");
    return buf;
}

static void stmt_free(struct stmt *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nparams; i++)
        free(s->params[i]);
    free(s->params);
    free(s->sql);
    free(s);
}

static void set_state(pg_conn *c, enum pg_state st)
{
    if (c->state == st)
        return;
    c->state = st;
    if (c->opts.on_state)
        c->opts.on_state(c->opts.state_user, st);
}

static void conn_release(pg_conn *c)
{
    if (c->open_handles > 0)
        return;
    pg_close_cb cb = c->close_cb;
    void *user = c->close_user;
    free(c->conninfo);
    free(c);
    if (cb)
        cb(user);
}

static void on_timer_closed(uv_handle_t *h)
{
    pg_conn *c = h->data;
    c->open_handles--;
    if (c->closing)
        conn_release(c);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct poll_wrap *w = h->data;
    pg_conn *c = w->owner;
    free(w);
    c->open_handles--;
    if (c->closing)
        conn_release(c);
}

/* Stop watching the current socket (before PQfinish closes it). */
static void poll_drop(pg_conn *c)
{
    if (!c->poll)
        return;
    uv_close((uv_handle_t *)&c->poll->handle, on_poll_closed);
    c->poll = NULL;
}

/* Watch fd for events; a new fd gets a new handle. Returns 0 or a uv error. */
static int poll_watch(pg_conn *c, int fd, int events)
{
    if (c->poll && c->poll->fd != fd)
        poll_drop(c);
    if (!c->poll) {
        struct poll_wrap *w = calloc(1, sizeof(*w));
        if (!w)
            return UV_ENOMEM;
        int r = uv_poll_init(c->loop, &w->handle, fd);
        if (r < 0) {
            free(w);
            return r;
        }
        w->owner = c;
        w->fd = fd;
        w->handle.data = w;
        c->open_handles++;
        c->poll = w;
    }
    if (c->poll->events == events)
        return 0;
    c->poll->events = events;
    return uv_poll_start(&c->poll->handle, events, on_poll);
}

/* Finish the PGconn (its socket unwatched first). */
static void pq_drop(pg_conn *c)
{
    poll_drop(c);
    if (c->pq) {
        PQfinish(c->pq);
        c->pq = NULL;
    }
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
}

/* Only errors that retrying the same statement can never fix are permanent: the data itself
 * (class 22, data exception: an answer PostgreSQL cannot store), an integrity violation (23),
 * an unsupported feature (0A) and a statement the schema does not match (42, syntax or access
 * rule) except 42501 (insufficient privilege: an operator can grant it). Everything else, read-only
 * transactions (25006: failover to a standby, a disk-full read-only switch), a cancelled
 * statement (57014), a lock not available (55P03), connection and resource errors, waits and
 * retries with backoff, the answers kept. */
int pg_sqlstate_retryable(const char *st)
{
    if (!st || strlen(st) != 5)
        return 1; /* no SQLSTATE: a client-side or connection failure */
    if (strcmp(st, "42501") == 0)
        return 1;
    return !(strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 ||
             strncmp(st, "0A", 2) == 0 || strncmp(st, "42", 2) == 0);
}

/* Call a statement's callback with reply and free the statement. */
static void stmt_finish(pg_conn *c, struct stmt *s, pg_reply *reply)
{
    if (reply->code == 0)
        c->stats.completed++;
    else
        c->stats.failed++;
    if (s->cb)
        s->cb(s->user, reply);
    stmt_free(s);
}

/* Complete a statement without a result (connection lost, closed). */
static void stmt_fail(pg_conn *c, struct stmt *s, int code, int retryable, const vl3_error *err)
{
    pg_reply reply = {.code = code, .retryable = retryable, .affected = -1, .err = err};
    stmt_finish(c, s, &reply);
}

/* The in-flight statement got all its results (PQgetResult returned NULL). */
static void inflight_complete(pg_conn *c)
{
    struct stmt *s = c->inflight;
    PGresult *res = c->result;
    vl3_error err = {0};
    pg_reply reply = {.affected = -1, .err = &err};
    c->inflight = NULL;
    c->result = NULL;
    if (!res) {
        set_pq_error(&err, "connection to PostgreSQL lost: ", c->pq ? PQerrorMessage(c->pq) : NULL);
        reply.code = VL3_E_PG;
        reply.retryable = 1;
    } else {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            const char *ct = PQcmdTuples(res);
            reply.nrows = PQntuples(res);
            reply.ncols = PQnfields(res);
            reply.affected = ct && *ct ? strtoll(ct, NULL, 10) : -1;
            reply.res_ = res;
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            set_pq_error(&err, "", PQresultErrorMessage(res));
            reply.code = VL3_E_PG;
            if (state)
                snprintf(reply.sqlstate, sizeof(reply.sqlstate), "%s", state);
            reply.retryable = pg_sqlstate_retryable(state) || !c->pq ||
                              PQstatus(c->pq) == CONNECTION_BAD;
        }
    }
    stmt_finish(c, s, &reply);
    PQclear(res);
}

static uint64_t backoff_delay(pg_conn *c)
{
    if (c->failures == 0)
        return 0;
    uint64_t d = c->opts.backoff_min_ms;
    for (unsigned i = 1; i < c->failures && d < c->opts.backoff_max_ms; i++)
        d *= 2;
    if (d > c->opts.backoff_max_ms)
        d = c->opts.backoff_max_ms;
    /* jitter: uniform in [d/2, d] */
    uint64_t half = d / 2;
    return half + (uint64_t)rand_r(&c->seed) % (d - half + 1);
}

static void attempt_failed(pg_conn *c, const char *msg);

static void on_timer(uv_timer_t *t)
{
    pg_conn *c = t->data;
    if (c->closing)
        return;
    if (c->state == PG_STATE_DISCONNECTED) {
        connect_start(c);
    } else if (c->state == PG_STATE_CONNECTING) {
        char msg[64];
        snprintf(msg, sizeof(msg), "timeout expired after %llums",
                 (unsigned long long)c->opts.connect_timeout_ms);
        attempt_failed(c, msg);
    }
}

static void attempt_failed(pg_conn *c, const char *msg)
{
    vl3_error err = {0};
    char w[256];
    set_pq_error(&err, "", msg);
    where(c, w, sizeof(w));
    uv_timer_stop(&c->timer);
    pq_drop(c);
    c->failures++;
    uint64_t delay = backoff_delay(c);
    uint64_t now = uv_now(c->loop);
    char d[32];
    fmt_delay(d, sizeof(d), delay);
    if (!c->warned || now - c->last_warn_ms >= c->opts.log_interval_ms) {
        if (c->suppressed)
            vl3_log_warning("could not connect to PostgreSQL: %s, retrying in %s (%u similar "
                            "messages suppressed) %s",
                            err.msg, d, c->suppressed, w);
        else
            vl3_log_warning("could not connect to PostgreSQL: %s, retrying in %s %s", err.msg, d,
                            w);
        c->warned = 1;
        c->last_warn_ms = now;
        c->suppressed = 0;
    } else {
        c->suppressed++;
        vl3_log_debug("could not connect to PostgreSQL: %s, retrying in %s %s", err.msg, d, w);
    }
    set_state(c, PG_STATE_DISCONNECTED);
    uv_timer_start(&c->timer, on_timer, delay, 0);
}

/* An established connection broke: fail the in-flight statement (retryable; with the server's
 * own error when one arrived, e.g. "terminating connection due to administrator command") and
 * reconnect at once; later attempts back off. */
static void conn_lost(pg_conn *c, const char *msg)
{
    vl3_error lost = {0}, stmt_err = {0};
    char sqlstate[6] = "";
    set_pq_error(&lost, "connection to PostgreSQL lost: ", msg);
    c->stats.disconnects++;
    char w[256];
    vl3_log_warning("%s, reconnecting %s", lost.msg, where(c, w, sizeof(w)));
    struct stmt *s = c->inflight;
    c->inflight = NULL;
    if (s && c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
        const char *st = PQresultErrorField(c->result, PG_DIAG_SQLSTATE);
        set_pq_error(&stmt_err, "", PQresultErrorMessage(c->result));
        if (st)
            snprintf(sqlstate, sizeof(sqlstate), "%s", st);
    } else {
        stmt_err = lost;
    }
    pq_drop(c);
    set_state(c, PG_STATE_DISCONNECTED);
    c->failures = 0;
    c->warned = 0;
    if (!c->closing)
        uv_timer_start(&c->timer, on_timer, 0, 0);
    if (s) {
        pg_reply reply = {.code = VL3_E_PG, .retryable = 1, .affected = -1, .err = &stmt_err};
        memcpy(reply.sqlstate, sqlstate, sizeof(sqlstate));
        stmt_finish(c, s, &reply);
    }
}

static void on_kick(uv_timer_t *t);

/* Send the next queued statement if connected and idle. */
static void pump(pg_conn *c)
{
    if (c->closing || c->state != PG_STATE_CONNECTED || c->inflight || !c->head)
        return;
    struct stmt *s = c->head;
    c->head = s->next;
    if (!c->head)
        c->tail = NULL;
    c->nqueued--;
    s->next = NULL;
    c->inflight = s;
    if (!PQsendQueryParams(c->pq, s->sql, s->nparams, NULL, (const char *const *)s->params, NULL,
                           NULL, 0)) {
        if (PQstatus(c->pq) == CONNECTION_BAD) {
            conn_lost(c, PQerrorMessage(c->pq));
            return;
        }
        /* refused without losing the connection (e.g. too many parameters) */
        vl3_error err = {0};
        set_pq_error(&err, "", PQerrorMessage(c->pq));
        c->inflight = NULL;
        stmt_fail(c, s, VL3_E_PG, 0, &err);
        if (!c->closing)
            uv_timer_start(&c->kick, on_kick, 0, 0);
        return;
    }
    int r = PQflush(c->pq);
    if (r < 0) {
        conn_lost(c, PQerrorMessage(c->pq));
        return;
    }
    r = poll_watch(c, PQsocket(c->pq), r == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    if (r < 0)
        conn_lost(c, uv_strerror(r));
}

static void on_kick(uv_timer_t *t)
{
    pump(t->data);
}

static void connected(pg_conn *c)
{
    uv_timer_stop(&c->timer);
    if (PQsetnonblocking(c->pq, 1) != 0) {
        attempt_failed(c, PQerrorMessage(c->pq));
        return;
    }
    char w[256];
    where(c, w, sizeof(w));
    if (c->ever_connected || c->failures > 0)
        vl3_log_notice("connected to PostgreSQL after %u failed attempts %s", c->failures, w);
    else
        vl3_log_info("connected to PostgreSQL %s", w);
    c->ever_connected = 1;
    c->failures = 0;
    c->warned = 0;
    c->suppressed = 0;
    c->stats.connects++;
    int r = poll_watch(c, PQsocket(c->pq), UV_READABLE);
    if (r < 0) {
        attempt_failed(c, uv_strerror(r));
        return;
    }
    set_state(c, PG_STATE_CONNECTED);
    if (!c->closing)
        pump(c);
}

/* Advance PQconnectPoll and watch the direction it asks for. */
static void connect_step(pg_conn *c)
{
    PostgresPollingStatusType st;
    /* libpq may close a failed socket and move to the next address inside one call; it then
     * has no socket to wait on, so poll it again at once (bounded: a few addresses at most) */
    for (int i = 0;; i++) {
        st = PQconnectPoll(c->pq);
        if ((st != PGRES_POLLING_READING && st != PGRES_POLLING_WRITING) ||
            PQsocket(c->pq) >= 0 || i >= 64)
            break;
    }
    int r;
    switch (st) {
    case PGRES_POLLING_READING:
        r = poll_watch(c, PQsocket(c->pq), UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        r = poll_watch(c, PQsocket(c->pq), UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        connected(c);
        return;
    default:
        attempt_failed(c, PQerrorMessage(c->pq));
        return;
    }
    if (r < 0)
        attempt_failed(c, uv_strerror(r));
}

static void notice_processor(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && message[n - 1] == '\n')
        n--;
    vl3_log_debug("PostgreSQL: %.*s", (int)n, message);
}

static void connect_start(pg_conn *c)
{
    set_state(c, PG_STATE_CONNECTING);
    if (c->closing) /* the state callback closed the adapter */
        return;
    c->pq = PQconnectStart(c->conninfo);
    if (!c->pq) {
        attempt_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        attempt_failed(c, PQerrorMessage(c->pq));
        return;
    }
    PQsetNoticeProcessor(c->pq, notice_processor, NULL);
    uv_timer_start(&c->timer, on_timer, c->opts.connect_timeout_ms, 0);
    if (PQsocket(c->pq) < 0) { /* the first address already failed: ask libpq what next */
        connect_step(c);
        return;
    }
    /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    int r = poll_watch(c, PQsocket(c->pq), UV_WRITABLE);
    if (r < 0)
        attempt_failed(c, uv_strerror(r));
}

/* Collect results of the in-flight statement; detect a broken idle connection. */
static void read_results(pg_conn *c)
{
    if (!PQconsumeInput(c->pq)) {
        if (c->inflight) {
            /* collect what arrived (often the server's FATAL message) before giving up */
            PGresult *res;
            while (!PQisBusy(c->pq) && (res = PQgetResult(c->pq)) != NULL) {
                if (!c->result || PQresultStatus(res) == PGRES_FATAL_ERROR) {
                    PQclear(c->result);
                    c->result = res;
                } else {
                    PQclear(res);
                }
            }
        }
        conn_lost(c, PQerrorMessage(c->pq));
        return;
    }
    while (c->inflight && !PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (!res) {
            inflight_complete(c);
            if (c->closing)
                return;
            continue;
        }
        if (!c->result) {
            c->result = res;
        } else if (PQresultStatus(res) == PGRES_FATAL_ERROR &&
                   PQresultStatus(c->result) != PGRES_FATAL_ERROR) {
            PQclear(c->result);
            c->result = res;
        } else {
            PQclear(res);
        }
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->pq));
        return;
    }
    if (!c->inflight) {
        PGnotify *n; /* nothing LISTENs; drop anything unexpected */
        while ((n = PQnotifies(c->pq)) != NULL)
            PQfreemem(n);
        pump(c);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct poll_wrap *w = h->data;
    pg_conn *c = w->owner;
    if (c->closing || c->poll != w)
        return;
    if (status < 0) {
        /* libuv reports POLLERR as UV_EBADF and stops the handle; libpq finds the real error
         * (SO_ERROR, a read failure) when asked, so ask it */
        w->events = 0;
        events = UV_READABLE | UV_WRITABLE;
    }
    if (c->state == PG_STATE_CONNECTING) {
        connect_step(c);
        return;
    }
    if (c->state != PG_STATE_CONNECTED)
        return;
    if (status < 0) {
        read_results(c);
        if (!c->closing && c->state == PG_STATE_CONNECTED && c->poll == w)
            conn_lost(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int r = PQflush(c->pq);
        if (r < 0) {
            conn_lost(c, PQerrorMessage(c->pq));
            return;
        }
        if (r == 0) {
            r = poll_watch(c, PQsocket(c->pq), UV_READABLE);
            if (r < 0) {
                conn_lost(c, uv_strerror(r));
                return;
            }
        }
    }
    if (events & UV_READABLE)
        read_results(c);
}

int pg_conn_new(uv_loop_t *loop, const pg_conn_options *opts, pg_conn **ret_conn,
                vl3_error *reterr)
{
    VL3_RETURN_IF(!loop || !opts || !ret_conn, -EINVAL);
    if (!opts->conninfo)
        return vl3_error_set(reterr, -EINVAL, "no PostgreSQL connection string");
    if (opts->max_queue == 0 || opts->backoff_min_ms == 0 ||
        opts->backoff_max_ms < opts->backoff_min_ms || opts->connect_timeout_ms == 0)
        return vl3_error_set(reterr, -EINVAL, "invalid PostgreSQL adapter options");
    /* a syntax error in the string is permanent: report it now rather than retry forever */
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(opts->conninfo, &perr);
    if (!parsed) {
        int r;
        if (perr) {
            vl3_error tmp = {0};
            set_pq_error(&tmp, "", perr);
            r = vl3_error_set(reterr, VL3_E_PG, "invalid PostgreSQL connection string: %s",
                              tmp.msg);
            PQfreemem(perr);
        } else {
            r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        }
        return r;
    }
    PQconninfoFree(parsed);

    pg_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    c->conninfo = strdup(opts->conninfo);
    if (!c->conninfo) {
        free(c);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    c->loop = loop;
    c->opts = *opts;
    c->opts.conninfo = c->conninfo;
    c->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)c;
    c->state = PG_STATE_DISCONNECTED;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(loop, &c->kick);
    c->kick.data = c;
    c->open_handles = 2;
    connect_start(c);
    *ret_conn = c;
    return 0;
}

int pg_query(pg_conn *c, const char *sql, int nparams, const char *const *params, pg_query_cb cb,
             void *user, vl3_error *reterr)
{
    VL3_RETURN_IF(!c || !sql || nparams < 0 || (nparams > 0 && !params), -EINVAL);
    if (c->closing)
        return vl3_error_set(reterr, -ESHUTDOWN, "PostgreSQL connection is closing");
    if (c->nqueued + (c->inflight ? 1 : 0) >= c->opts.max_queue)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "PostgreSQL statement queue is full (%zu statements)",
                             c->opts.max_queue);
    struct stmt *s = calloc(1, sizeof(*s));
    if (!s)
        goto oom;
    s->sql = strdup(sql);
    if (!s->sql)
        goto oom;
    if (nparams > 0) {
        s->params = calloc((size_t)nparams, sizeof(char *));
        if (!s->params)
            goto oom;
        s->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (params[i] && !(s->params[i] = strdup(params[i])))
                goto oom;
        }
    }
    s->cb = cb;
    s->user = user;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nqueued++;
    if (c->state == PG_STATE_CONNECTED && !c->inflight)
        uv_timer_start(&c->kick, on_kick, 0, 0);
    return 0;
oom:
    stmt_free(s);
    return vl3_error_set(reterr, -ENOMEM, "out of memory");
}

enum pg_state pg_conn_state(const pg_conn *c)
{
    return c->state;
}

void pg_conn_get_stats(const pg_conn *c, pg_conn_stats *ret)
{
    *ret = c->stats;
    ret->queued = c->nqueued;
    ret->in_flight = c->inflight ? 1 : 0;
}

void pg_conn_close(pg_conn *c, pg_close_cb cb, void *user)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_user = user;
    set_state(c, PG_STATE_CLOSING);
    vl3_error err = {0};
    vl3_error_set(&err, -ECANCELED, "PostgreSQL connection closed before the statement completed");
    struct stmt *s = c->inflight;
    c->inflight = NULL;
    pq_drop(c);
    if (s)
        stmt_fail(c, s, -ECANCELED, 1, &err);
    while (c->head) {
        s = c->head;
        c->head = s->next;
        c->nqueued--;
        stmt_fail(c, s, -ECANCELED, 1, &err);
    }
    c->tail = NULL;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    uv_close((uv_handle_t *)&c->kick, on_timer_closed);
}

const char *pg_reply_value(const pg_reply *reply, int row, int col)
{
    const PGresult *res = reply ? reply->res_ : NULL;
    if (!res || row < 0 || col < 0 || row >= reply->nrows || col >= reply->ncols)
        return NULL;
    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

int pg_reply_col(const pg_reply *reply, const char *name)
{
    const PGresult *res = reply ? reply->res_ : NULL;
    if (!res || !name)
        return -1;
    return PQfnumber(res, name);
}
