/* pg.h: the daemon's non-blocking PostgreSQL adapter (STYLE B2, B8): one libpq connection driven
 * by the libuv loop, a bounded FIFO of statements run one at a time, and reconnection with capped,
 * jittered exponential backoff.
 *
 * No libpq type appears here: results are read through pg_reply, and every libpq failure is
 * converted once, inside pg.c, to VL3_E_PG with PQerrorMessage()/PQresultErrorMessage() minus the
 * trailing newline (libpq's multi-line messages are joined into one line, for the log).
 *
 * Logging: only connection trouble is logged here, where it is handled (retried): "connection
 * to PostgreSQL lost: ..., reconnecting" (WARNING), "could not connect to PostgreSQL: ...,
 * retrying in 250ms" (one WARNING per log_interval_ms, the others DEBUG with a count of the
 * suppressed ones), "connected to PostgreSQL after N failed attempts" (NOTICE). Statement
 * failures are not logged: they go to the statement's callback, whose owner handles them.
 *
 * Lifetime: pg_conn_new() starts connecting at once. Statements may be queued at any time,
 * connected or not; those queued while the server is away run after reconnection, in order.
 * A statement that was sent when the connection broke is reported to its callback with
 * code VL3_E_PG and retryable = 1, and is NOT re-sent by the adapter (it may or may not have
 * committed): the caller decides, and re-issues it only if it is idempotent (store.c's are).
 * pg_conn_close() reports every queued statement with -ECANCELED, closes the uv handles and frees
 * the object once they are closed; after that the loop holds nothing of the adapter.
 *
 * Threading: everything runs on the loop thread; no function may be called from another thread. */
#ifndef VL3D_PG_H
#define VL3D_PG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vl3/err.h"

typedef struct pg_conn pg_conn;

/* The outcome of one statement, valid only during the callback (borrowed). */
typedef struct pg_reply {
    int code;      /* 0 on success; VL3_E_PG (server or connection error); -ECANCELED (the
                    * adapter was closed before the statement completed) */
    int retryable; /* 1 when re-issuing the same statement may succeed: connection lost while it
                    * was in flight, or SQLSTATE class 08 / 40 / 53 / 57P0x; 0 otherwise */
    char sqlstate[6]; /* five-character SQLSTATE of a server error, else "" */
    int nrows;        /* rows returned (0 for commands) */
    int ncols;
    int64_t affected; /* PQcmdTuples as a number (rows inserted/updated), or -1 */
    const vl3_error *err; /* message when code < 0; never NULL */
    const void *res_;     /* internal: the PGresult, or NULL */
} pg_reply;

/* Text of row/col in reply (borrowed, valid during the callback), or NULL for SQL NULL or out of
 * range. */
const char *pg_reply_value(const pg_reply *reply, int row, int col);
/* Column index of name, or -1. */
int pg_reply_col(const pg_reply *reply, const char *name);

/* Whether a statement that failed with SQLSTATE st (NULL = none) may succeed when retried:
 * everything but data exceptions (22), integrity violations (23), unsupported features (0A) and
 * syntax or access-rule errors (42) other than 42501 (insufficient privilege). */
int pg_sqlstate_retryable(const char *st);

/* Called once per statement, on the loop thread. */
typedef void (*pg_query_cb)(void *user, const pg_reply *reply);

enum pg_state {
    PG_STATE_CONNECTING,   /* a connection attempt is in progress */
    PG_STATE_CONNECTED,    /* ready; statements are being sent */
    PG_STATE_DISCONNECTED, /* the server went away or refused; waiting for the backoff timer */
    PG_STATE_CLOSING,      /* pg_conn_close() was called */
    PG_STATE_COUNT
};

/* Called on every state change (for readiness notifications, metrics, tests). */
typedef void (*pg_state_cb)(void *user, enum pg_state state);

typedef struct pg_conn_options {
    const char *conninfo;        /* libpq connection string (borrowed during pg_conn_new) */
    size_t max_queue;            /* statements queued or in flight before pg_query() refuses
                                  * with VL3_E_LIMIT (default 4096) */
    uint64_t backoff_min_ms;     /* first reconnect delay (default 250) */
    uint64_t backoff_max_ms;     /* cap of the doubling delay (default 30000) */
    uint64_t connect_timeout_ms; /* one connection attempt (default 10000) */
    uint64_t log_interval_ms;    /* at most one "could not connect" WARNING per interval; the
                                  * others go to DEBUG (default 60000) */
    pg_state_cb on_state;        /* optional */
    void *state_user;
} pg_conn_options;

/* Defaults for every field (conninfo "dbname=vl3"). */
pg_conn_options pg_conn_options_default(void);

/* Create the adapter on loop and start connecting. Returns 0 and an owned pg_conn in *ret_conn,
 * -EINVAL for bad options, VL3_E_PG if libpq rejects the conninfo string outright (syntax), or
 * -ENOMEM. A server that is down is not an error here: the adapter keeps retrying. loop is
 * retained until the close callback of pg_conn_close() ran. */
int pg_conn_new(uv_loop_t *loop, const pg_conn_options *opts, pg_conn **ret_conn,
                vl3_error *reterr);

/* Queue one SQL statement (a single statement; $1..$n placeholders, text parameters, NULL entries
 * are SQL NULLs). sql and params are copied. cb (may be NULL) is called exactly once, later,
 * never from inside pg_query(). Returns 0, VL3_E_LIMIT when max_queue statements are pending,
 * -ESHUTDOWN after pg_conn_close(), -EINVAL, -ENOMEM. */
int pg_query(pg_conn *conn, const char *sql, int nparams, const char *const *params,
             pg_query_cb cb, void *user, vl3_error *reterr);

/* Current state. */
enum pg_state pg_conn_state(const pg_conn *conn);

typedef struct pg_conn_stats {
    uint64_t queued;      /* waiting to be sent */
    uint64_t in_flight;   /* 0 or 1 */
    uint64_t completed;   /* callbacks called with code 0 */
    uint64_t failed;      /* callbacks called with code < 0 */
    uint64_t connects;    /* successful connections (the first one included) */
    uint64_t disconnects; /* connections lost */
} pg_conn_stats;

void pg_conn_get_stats(const pg_conn *conn, pg_conn_stats *ret_stats);

typedef void (*pg_close_cb)(void *user);

/* Stop: cancel every queued statement (callbacks with -ECANCELED, the in-flight one too, as
 * retryable), close the connection and the uv handles, free conn, then call cb (may be NULL)
 * from the loop. Takes ownership of conn; NULL is a no-op. To finish pending writes first, wait
 * for their callbacks (pg_conn_get_stats().queued + in_flight == 0) before closing. */
void pg_conn_close(pg_conn *conn, pg_close_cb cb, void *user);

/* THE conversion of a libpq message (PQerrorMessage, PQresultErrorMessage) to our form: sets
 * reterr to VL3_E_PG with prefix + the message on one line (whitespace runs, libpq's "\n\t"
 * included, become one space; no trailing newline). Also used by the blocking users of libpq
 * (migrate.c, store.c's status reads). Returns VL3_E_PG. */
int pg_error_set(vl3_error *reterr, const char *prefix, const char *libpq_msg);

/* Human text of a state ("connected"). */
const char *pg_state_name(enum pg_state state);

#endif
