/* token_cache_pg.c: the token cache's store in PostgreSQL (token_cache.h,
 * schema/0004_token_cache.sql), over a blocking libpq connection of its own (the worker's decode
 * and engine threads, or `vl3 run`, call it; never an event loop).
 *
 * A lookup reads the entry and its chunks in one statement (one snapshot), joins the chunks and
 * decodes them outside the lock; a damaged entry is deleted and counted. A store serializes the
 * rows outside the lock, then inserts the entry (ON CONFLICT DO NOTHING: of two writers of one
 * key the second inserts nothing) and its ~1 MB chunks in one transaction, then evicts the least
 * recently used entries beyond the budget in one statement. Any server failure is logged, counted
 * and read as a miss; the connection is remade at most every RETRY_NS. */
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "token_cache.h"
#include "vl3/log.h"
#include "vl3/util.h"

#define RETRY_NS (5ull * 1000000000ull)
#define PIECE_BYTES (1 << 20) /* bytes per token_cache_chunks row */

struct tcache {
    pthread_mutex_t lock;
    char *conninfo;
    int64_t budget;
    PGconn *pq;
    uint64_t next_try_ns;
    int down_logged;
    struct tcache_stats st;
};

int tcache_open(const char *conninfo, int64_t budget_bytes, tcache **ret, vl3_error *reterr)
{
    if (!conninfo || !ret || budget_bytes < 0)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    tcache *tc = calloc(1, sizeof(*tc));
    if (!tc || !(tc->conninfo = strdup(conninfo))) {
        free(tc);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    pthread_mutex_init(&tc->lock, NULL);
    tc->budget = budget_bytes;
    *ret = tc;
    return 0;
}

void tcache_close(tcache *tc)
{
    if (!tc)
        return;
    PQfinish(tc->pq);
    pthread_mutex_destroy(&tc->lock);
    free(tc->conninfo);
    free(tc);
}

void tcache_get_stats(tcache *tc, struct tcache_stats *ret)
{
    pthread_mutex_lock(&tc->lock);
    *ret = tc->st;
    pthread_mutex_unlock(&tc->lock);
}

/* The connection, made or remade as needed; NULL while the server is unreachable. Caller holds
 * the lock. */
static PGconn *conn(tcache *tc)
{
    if (tc->pq && PQstatus(tc->pq) == CONNECTION_OK)
        return tc->pq;
    uint64_t now = vl3_time_ns();
    if (tc->pq) {
        PQfinish(tc->pq);
        tc->pq = NULL;
    } else if (now < tc->next_try_ns) {
        return NULL;
    }
    const char *const keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *const vals[] = {tc->conninfo, "3", "vl3-token-cache", NULL};
    PGconn *pq = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pq) != CONNECTION_OK) {
        if (!tc->down_logged)
            vl3_log_warning("token cache: could not connect to the server, reading misses: %s",
                            pq ? PQerrorMessage(pq) : "out of memory");
        tc->down_logged = 1;
        tc->st.errors++;
        PQfinish(pq);
        tc->next_try_ns = now + RETRY_NS;
        return NULL;
    }
    PQclear(PQexec(pq, "SET statement_timeout = '30s'; SET client_min_messages = warning"));
    if (tc->down_logged)
        vl3_log_notice("token cache: connected to the server again");
    tc->down_logged = 0;
    tc->pq = pq;
    return pq;
}

int tcache_ping(tcache *tc)
{
    pthread_mutex_lock(&tc->lock);
    int ok = conn(tc) != NULL;
    pthread_mutex_unlock(&tc->lock);
    return ok;
}

/* Log a failed statement once, count it, and drop a broken connection. Caller holds the lock. */
static void failed(tcache *tc, const char *what, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    tc->st.errors++;
    if (state && strcmp(state, "42P01") == 0)
        vl3_log_warning("token cache: %s: the cache tables are missing (run vl3 db migrate)",
                        what);
    else
        vl3_log_warning("token cache: %s failed: %s", what,
                        res ? PQresultErrorMessage(res) : PQerrorMessage(tc->pq));
    if (tc->pq && PQstatus(tc->pq) != CONNECTION_OK) {
        PQfinish(tc->pq);
        tc->pq = NULL;
        tc->next_try_ns = vl3_time_ns() + RETRY_NS;
    }
}

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint8_t)p[i];
    return (int64_t)v;
}

static int32_t be32(const char *p)
{
    return (int32_t)((uint32_t)(uint8_t)p[0] << 24 | (uint32_t)(uint8_t)p[1] << 16 |
                     (uint32_t)(uint8_t)p[2] << 8 | (uint32_t)(uint8_t)p[3]);
}

static void bump_counter(PGconn *pq, const char *name, int64_t n)
{
    char nb[32];
    snprintf(nb, sizeof(nb), "%lld", (long long)n);
    const char *p[2] = {name, nb};
    PQclear(PQexecParams(pq, "UPDATE token_cache_counters SET value = value + $2::bigint "
                             "WHERE name = $1", 2, NULL, p, NULL, NULL, 0));
}

/* Delete a damaged entry and count it. Caller holds the lock. */
static void drop_corrupt(tcache *tc, const char *key, const char *why)
{
    tc->st.corrupt++;
    vl3_log_warning("token cache: entry %s is damaged (%s): deleted, recomputing", key, why);
    PGconn *pq = conn(tc);
    if (!pq)
        return;
    const char *p[1] = {key};
    PGresult *res = PQexecParams(pq, "DELETE FROM token_cache_entries WHERE key = $1", 1, NULL,
                                 p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        failed(tc, "deleting a damaged entry", res);
    else
        bump_counter(pq, "corrupt", 1);
    PQclear(res);
}

/* Read key's stored bytes into *ret_blob (owned). 1 found, 0 absent or failed (counted as a miss
 * by the caller). A structurally damaged entry (chunk rows) is deleted here. Caller holds the
 * lock. */
static int get_blob(tcache *tc, const char *key, uint8_t **ret_blob, size_t *ret_len)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    PGconn *pq = conn(tc);
    if (!pq)
        return 0;
    const char *p[1] = {key};
    PGresult *res = PQexecParams(pq,
                                 "SELECT e.bytes, e.n_chunks, c.seq, c.data "
                                 "FROM token_cache_entries e "
                                 "JOIN token_cache_chunks c USING (key) "
                                 "WHERE e.key = $1 ORDER BY c.seq",
                                 1, NULL, p, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        failed(tc, "looking up an entry", res);
        PQclear(res);
        return 0;
    }
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        return 0;
    }
    int64_t bytes = be64(PQgetvalue(res, 0, 0));
    int64_t n_chunks = be32(PQgetvalue(res, 0, 1));
    const char *why = NULL;
    if (n_chunks != n || bytes <= 0 || bytes > ((int64_t)1 << 40)) {
        why = "chunk count";
    } else if (!(blob = malloc((size_t)bytes))) {
        PQclear(res);
        tc->st.errors++;
        vl3_log_warning("token cache: out of memory for an entry of %lld bytes", (long long)bytes);
        return 0;
    } else {
        for (int i = 0; i < n && !why; i++) {
            int32_t seq = be32(PQgetvalue(res, i, 2));
            size_t dl = (size_t)PQgetlength(res, i, 3);
            if (seq != i || len + dl > (size_t)bytes)
                why = "chunk sequence";
            else
                memcpy(blob + len, PQgetvalue(res, i, 3), dl), len += dl;
        }
        if (!why && len != (size_t)bytes)
            why = "entry size";
    }
    PQclear(res);
    if (why) {
        free(blob);
        drop_corrupt(tc, key, why);
        return 0;
    }
    *ret_blob = blob;
    *ret_len = len;
    return 1;
}

/* Mark key used (LRU). Caller holds the lock. */
static void touch(tcache *tc, const char *key)
{
    PGconn *pq = conn(tc);
    if (!pq)
        return;
    const char *p[1] = {key};
    PGresult *u = PQexecParams(pq, "UPDATE token_cache_entries SET last_used = now(), "
                                   "hits = hits + 1 WHERE key = $1",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(u) != PGRES_COMMAND_OK)
        failed(tc, "marking an entry used", u);
    PQclear(u);
}

int tcache_lookup(tcache *tc, const char *key, vl3_visual_tokens *ret)
{
    if (!tc || !key || !ret)
        return 0;
    uint8_t *blob = NULL;
    size_t len = 0;
    pthread_mutex_lock(&tc->lock);
    if (!get_blob(tc, key, &blob, &len))
        goto miss;
    pthread_mutex_unlock(&tc->lock);

    vl3_error err = {0};
    vl3_visual_tokens vt = {0};
    int rc = vl3_visual_tokens_decode(blob, len, &vt, &err);
    pthread_mutex_lock(&tc->lock);
    if (rc < 0) {
        drop_corrupt(tc, key, vl3_error_text(&err, rc));
        goto miss;
    }
    tc->st.hits++;
    tc->st.bytes_read += (int64_t)len;
    tc->st.raw_read += (int64_t)vt.n_rows * vt.dim * (vt.dtype == VL3_VT_DTYPE_BF16 ? 2 : 4);
    touch(tc, key);
    pthread_mutex_unlock(&tc->lock);
    free(blob);
    *ret = vt;
    return 1;
miss:
    tc->st.misses++;
    pthread_mutex_unlock(&tc->lock);
    free(blob);
    return 0;
}

int tcache_get_blob(tcache *tc, const char *key, uint8_t **ret, size_t *ret_len)
{
    if (!tc || !key || !ret || !ret_len)
        return 0;
    pthread_mutex_lock(&tc->lock);
    int found = get_blob(tc, key, ret, ret_len);
    if (found)
        touch(tc, key);
    pthread_mutex_unlock(&tc->lock);
    return found;
}

/* The caller found the blob of key damaged: delete and count it. */
void tcache_drop_damaged(tcache *tc, const char *key, const char *why)
{
    if (!tc || !key)
        return;
    pthread_mutex_lock(&tc->lock);
    drop_corrupt(tc, key, why);
    pthread_mutex_unlock(&tc->lock);
}

static int exec_ok(tcache *tc, const char *what, PGresult *res, ExecStatusType want)
{
    if (PQresultStatus(res) == want) {
        PQclear(res);
        return 1;
    }
    failed(tc, what, res);
    PQclear(res);
    return 0;
}

/* Evict least recently used entries beyond the budget. Caller holds the lock. */
static void evict(tcache *tc, PGconn *pq)
{
    char b[32];
    snprintf(b, sizeof(b), "%lld", (long long)tc->budget);
    const char *p[1] = {b};
    PGresult *res = PQexecParams(
        pq,
        "WITH ranked AS (SELECT key, sum(bytes) OVER (ORDER BY last_used DESC, key DESC) AS upto "
        "                  FROM token_cache_entries) "
        "DELETE FROM token_cache_entries e USING ranked r "
        " WHERE e.key = r.key AND r.upto > $1::bigint RETURNING e.key",
        1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        failed(tc, "evicting entries", res);
    } else if (PQntuples(res) > 0) {
        tc->st.evictions += PQntuples(res);
        bump_counter(pq, "evictions", PQntuples(res));
        vl3_log_info("token cache: evicted %d entries beyond the budget of %lld bytes",
                     PQntuples(res), (long long)tc->budget);
    }
    PQclear(res);
}

/* Store blob under key, then evict beyond the budget. 1 stored, 0 not. raw_bytes and n_rows
 * describe the decoded entry. */
static int put_blob(tcache *tc, const char *key, const char *descr, const uint8_t *blob,
                    size_t len, size_t raw_bytes, int64_t n_rows)
{
    int stored = 0;
    pthread_mutex_lock(&tc->lock);
    if (tc->budget > 0 && (int64_t)len > tc->budget) {
        vl3_log_info("token cache: an entry of %zu bytes exceeds the budget of %lld bytes; not "
                     "stored", len, (long long)tc->budget);
        goto out;
    }
    PGconn *pq = conn(tc);
    if (!pq)
        goto out;
    if (!exec_ok(tc, "starting a transaction", PQexec(pq, "BEGIN"), PGRES_COMMAND_OK))
        goto out;
    int n_pieces = (int)((len + PIECE_BYTES - 1) / PIECE_BYTES);
    char sb[32], rb[32], nb[16], nr[32];
    snprintf(sb, sizeof(sb), "%zu", len);
    snprintf(rb, sizeof(rb), "%zu", raw_bytes);
    snprintf(nb, sizeof(nb), "%d", n_pieces);
    snprintf(nr, sizeof(nr), "%lld", (long long)n_rows);
    const char *ep[6] = {key, descr ? descr : "", sb, rb, nb, nr};
    PGresult *res = PQexecParams(pq,
                                 "INSERT INTO token_cache_entries "
                                 "(key, descr, bytes, raw_bytes, n_chunks, n_rows) "
                                 "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
                                 6, NULL, ep, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        failed(tc, "storing an entry", res);
        PQclear(res);
        goto rollback;
    }
    int inserted = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!inserted) /* another writer stored this key first */
        goto rollback;
    for (int i = 0; i < n_pieces; i++) {
        char seq[16];
        snprintf(seq, sizeof(seq), "%d", i);
        size_t off = (size_t)i * PIECE_BYTES, n = len - off < PIECE_BYTES ? len - off : PIECE_BYTES;
        const char *cp[3] = {key, seq, (const char *)blob + off};
        int lens[3] = {0, 0, (int)n}, fmts[3] = {0, 0, 1};
        res = PQexecParams(pq, "INSERT INTO token_cache_chunks (key, seq, data) "
                               "VALUES ($1, $2, $3)", 3, NULL, cp, lens, fmts, 0);
        if (!exec_ok(tc, "storing a chunk", res, PGRES_COMMAND_OK))
            goto rollback;
    }
    if (!exec_ok(tc, "committing an entry", PQexec(pq, "COMMIT"), PGRES_COMMAND_OK))
        goto out;
    stored = 1;
    tc->st.stores++;
    tc->st.bytes_written += (int64_t)len;
    tc->st.raw_written += (int64_t)raw_bytes;
    if (tc->budget > 0)
        evict(tc, pq);
    goto out;
rollback:
    if (tc->pq)
        PQclear(PQexec(tc->pq, "ROLLBACK"));
out:
    pthread_mutex_unlock(&tc->lock);
    return stored;
}

int tcache_store(tcache *tc, const char *key, const char *descr, const vl3_visual_tokens *vt)
{
    if (!tc || !key || !vt)
        return 0;
    uint8_t *blob = NULL;
    size_t len = 0;
    vl3_vt_encode_stats st;
    vl3_error err = {0};
    int rc = vl3_visual_tokens_encode(vt, NULL, &blob, &len, &st, &err);
    if (rc < 0) {
        vl3_log_warning("token cache: could not serialize the visual tokens: %s",
                        vl3_error_text(&err, rc));
        return 0;
    }
    int stored = put_blob(tc, key, descr, blob, len, st.row_bytes, vt->n_rows);
    free(blob);
    return stored;
}

int tcache_put_blob(tcache *tc, const char *key, const char *descr, const uint8_t *blob,
                    size_t len)
{
    if (!tc || !key || !blob || !len)
        return 0;
    return put_blob(tc, key, descr, blob, len, len, 0);
}

int tcache_forget(tcache *tc, const char *key)
{
    if (!tc || !key)
        return 0;
    pthread_mutex_lock(&tc->lock);
    PGconn *pq = conn(tc);
    if (pq) {
        const char *p[1] = {key};
        exec_ok(tc, "deleting an entry",
                PQexecParams(pq, "DELETE FROM token_cache_entries WHERE key = $1", 1, NULL, p,
                             NULL, NULL, 0),
                PGRES_COMMAND_OK);
    }
    pthread_mutex_unlock(&tc->lock);
    return 0;
}
