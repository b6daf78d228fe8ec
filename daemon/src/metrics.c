/* metrics.c: Prometheus text exposition (version 0.0.4) over a tiny HTTP/1.0 responder.
 * Each connection reads until the end of the request headers (at most 8 KiB), answers with the
 * whole body and closes. Connections are few (one scraper), each owns its handle and is freed
 * in its close callback; the server frees itself when the listener, the sweep timer and every
 * connection are closed. Any local process can connect, so connections are bounded: at most
 * METRICS_MAX_CONNS at once (more are closed as soon as they are accepted), and a sweep timer
 * closes every connection older than METRICS_CONN_TIMEOUT_MS (idle or half-sent requests), so
 * they cannot exhaust the daemon's descriptors. */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/conf.h"
#include "vl3/util.h"

static const double bucket_ms[METRICS_NBUCKETS - 1] = {5,    10,    50,    100,   500,  1000,
                                                       5000, 10000, 30000, 60000, 300000};
static const double batch_le[METRICS_NBUCKETS - 1] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const char *const stage_names[METRICS_STAGE_COUNT] = {"decode",   "vision", "prefill",
                                                             "generate", "job",    "store"};

void metrics_observe(struct metrics_hist *h, double ms)
{
    int i = 0;
    while (i < METRICS_NBUCKETS - 1 && ms > bucket_ms[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ms += ms;
}

void metrics_observe_batch(struct metrics *m, int64_t b)
{
    int i = 0;
    while (i < METRICS_NBUCKETS - 1 && (double)b > batch_le[i])
        i++;
    m->batch_size.bucket[i]++;
    m->batch_size.count++;
    m->batch_size.sum_ms += (double)b;
}

static void counter(vl3_strbuf *b, const char *name, const char *help, uint64_t v)
{
    vl3_strbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                      (unsigned long long)v);
}

static void gauge(vl3_strbuf *b, const char *name, const char *help, uint64_t v)
{
    vl3_strbuf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
                      (unsigned long long)v);
}

static void hist(vl3_strbuf *b, const char *name, const char *label, const struct metrics_hist *h,
                 const double *le, double scale)
{
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cum += h->bucket[i];
        if (i < METRICS_NBUCKETS - 1)
            vl3_strbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label ? label : "",
                              label ? "," : "", le[i] * scale, (unsigned long long)cum);
        else
            vl3_strbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label ? label : "",
                              label ? "," : "", (unsigned long long)cum);
    }
    vl3_strbuf_printf(b, "%s_sum%s%s%s %g\n%s_count%s%s%s %llu\n", name, label ? "{" : "",
                      label ? label : "", label ? "}" : "", h->sum_ms * scale, name,
                      label ? "{" : "", label ? label : "", label ? "}" : "",
                      (unsigned long long)h->count);
}

int metrics_render(const struct metrics *m, char **ret, size_t *ret_len)
{
    vl3_strbuf b = {malloc(8192), 0, 8192, 0};
    if (!b.s)
        return -ENOMEM;
    b.s[0] = 0;
    counter(&b, "vl3_jobs_consumed_total", "Job messages consumed from Kafka.", m->jobs_consumed);
    counter(&b, "vl3_jobs_succeeded_total", "Jobs whose results are durable in PostgreSQL.",
            m->jobs_succeeded);
    counter(&b, "vl3_jobs_failed_total", "Jobs recorded failed (permanent errors, poison).",
            m->jobs_failed);
    counter(&b, "vl3_jobs_retried_total", "Job attempts re-queued after a worker error or crash.",
            m->jobs_retried);
    counter(&b, "vl3_jobs_poisoned_total", "Jobs failed after killing or hanging workers.",
            m->jobs_poisoned);
    counter(&b, "vl3_jobs_dead_lettered_total", "Messages sent to the dead-letter topic.",
            m->jobs_dead_lettered);
    counter(&b, "vl3_jobs_skipped_done_total", "Redelivered jobs already done in PostgreSQL.",
            m->jobs_skipped_done);
    counter(&b, "vl3_jobs_abandoned_total", "Jobs given up after a partition revocation or stop.",
            m->jobs_abandoned);
    counter(&b, "vl3_results_written_total", "Result rows inserted.", m->results_written);
    counter(&b, "vl3_frames_decoded_total", "Frames decoded by the workers.", m->frames_decoded);
    counter(&b, "vl3_frames_pruned_total", "Frames pruned by DiffFP.", m->frames_pruned);
    counter(&b, "vl3_token_cache_hits_total",
            "Answers whose window's visual tokens came from the token cache.", m->cache_hits);
    counter(&b, "vl3_token_cache_misses_total",
            "Answers whose window missed the token cache (computed, then stored).",
            m->cache_misses);
    counter(&b, "vl3_tokens_generated_total", "Tokens generated.", m->tokens_generated);
    counter(&b, "vl3_answers_vision_batch_shared_total",
            "Answers whose vision-encoder call also encoded windows of other jobs.",
            m->answers_vision_shared);
    counter(&b, "vl3_answers_decode_step_shared_total",
            "Answers generated in decode steps shared with other jobs.", m->answers_decode_shared);
    counter(&b, "vl3_worker_restarts_total", "Worker restarts.", m->worker_restarts);
    counter(&b, "vl3_worker_hangs_total", "Workers killed as hung.", m->worker_hangs);
    counter(&b, "vl3_kafka_commits_total", "Offset commit requests.", m->commits);
    if (m->gauges) {
        struct metrics_gauges g = {0};
        m->gauges(m->gauges_user, &g);
        gauge(&b, "vl3_jobs_in_flight", "Jobs taken from Kafka and not yet done.", g.in_flight);
        gauge(&b, "vl3_jobs_queued", "Jobs waiting for a worker.", g.queued);
        gauge(&b, "vl3_workers_busy", "Workers holding at least one job.", g.workers_busy);
        gauge(&b, "vl3_worker_jobs_held", "Jobs held by workers (up to their credits each).",
              g.jobs_held);
        counter(&b, "vl3_jobs_suspected_total",
                "Jobs re-run alone because their worker died holding several.", g.jobs_suspects);
        gauge(&b, "vl3_workers_alive", "Workers that said hello and are running.",
              g.workers_alive);
        gauge(&b, "vl3_kafka_paused", "1 while consumption is paused (backpressure or drain).",
              g.kafka_paused);
        gauge(&b, "vl3_kafka_partitions", "Partitions assigned to this daemon.", g.partitions);
        gauge(&b, "vl3_pg_queue_depth", "Statements queued or in flight to PostgreSQL.",
              g.pg_queued);
        gauge(&b, "vl3_pg_connected", "1 while connected to PostgreSQL.", g.pg_connected);
    }
    vl3_strbuf_printf(&b, "# HELP vl3_stage_seconds Per-stage latency reported by workers and the "
                          "daemon.\n# TYPE vl3_stage_seconds histogram\n");
    for (int s = 0; s < METRICS_STAGE_COUNT; s++) {
        char label[64];
        snprintf(label, sizeof(label), "stage=\"%s\"", stage_names[s]);
        hist(&b, "vl3_stage_seconds", label, &m->stage[s], bucket_ms, 0.001);
    }
    vl3_strbuf_printf(&b, "# HELP vl3_batch_size Engine batch sizes reported by workers.\n"
                          "# TYPE vl3_batch_size histogram\n");
    hist(&b, "vl3_batch_size", NULL, &m->batch_size, batch_le, 1.0);
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    *ret = b.s;
    *ret_len = b.len;
    return 0;
}

/* ---- server ---- */

#define METRICS_MAX_CONNS 64          /* connections at once; a scraper needs one */
#define METRICS_CONN_TIMEOUT_MS 5000  /* a connection lives at most this long */

struct metrics_server {
    uv_tcp_t listener;
    uv_timer_t sweep;
    int n_conns;
    struct metrics *m;
    int handles_open;
    int stopping;
    struct mconn *conns;
};

struct mconn {
    uv_tcp_t tcp;
    uv_write_t wr;
    struct metrics_server *srv;
    struct mconn *next, *prev;
    uint64_t t_accept; /* uv_now at accept */
    char req[8192];
    size_t reqlen;
    char *resp;
    int responded;
};

static void server_release(struct metrics_server *s)
{
    if (--s->handles_open == 0)
        free(s);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct mconn *c = h->data;
    struct metrics_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    free(c->resp);
    free(c);
    server_release(s);
}

static void conn_close(struct mconn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void on_conn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    struct mconn *c = h->data;
    *buf = uv_buf_init(c->req + c->reqlen, (unsigned)(sizeof(c->req) - 1 - c->reqlen));
}

static void respond(struct mconn *c)
{
    c->responded = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    char *body = NULL;
    size_t blen = 0;
    int get = strncmp(c->req, "GET ", 4) == 0;
    const char *status = "200 OK";
    if (!get) {
        status = "405 Method Not Allowed";
    } else if (metrics_render(c->srv->m, &body, &blen) < 0) {
        status = "500 Internal Server Error";
    }
    size_t cap = blen + 256;
    c->resp = malloc(cap);
    if (!c->resp) {
        free(body);
        conn_close(c);
        return;
    }
    int n = snprintf(c->resp, cap,
                     "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, blen);
    if (body)
        memcpy(c->resp + n, body, blen);
    free(body);
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)((size_t)n + blen));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
        conn_close(c);
}

static void on_conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct mconn *c = st->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->reqlen += (size_t)n;
    c->req[c->reqlen] = 0;
    if (!c->responded && (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n") ||
                          c->reqlen >= sizeof(c->req) - 1))
        respond(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct metrics_server *s = l->data;
    if (status < 0 || s->stopping)
        return;
    struct mconn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    c->t_accept = uv_now(l->loop);
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    s->handles_open++;
    s->n_conns++;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0 || s->n_conns > METRICS_MAX_CONNS ||
        uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read) < 0)
        conn_close(c); /* accepted and closed: the backlog does not fill up either */
}

static void on_listener_closed(uv_handle_t *h)
{
    server_release(h->data);
}

/* Close every connection older than METRICS_CONN_TIMEOUT_MS. */
static void on_sweep(uv_timer_t *t)
{
    struct metrics_server *s = t->data;
    uint64_t now = uv_now(t->loop);
    for (struct mconn *c = s->conns; c; c = c->next)
        if (now - c->t_accept >= METRICS_CONN_TIMEOUT_MS)
            conn_close(c);
}

int metrics_server_start(uv_loop_t *loop, const char *listen, struct metrics *m,
                         struct metrics_server **ret, vl3_error *reterr)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host))
        return vl3_error_set(reterr, VL3_E_CONFIG, "invalid \"metrics.listen\" \"%s\": want host:port",
                             listen);
    int64_t port;
    if (vl3_parse_int64(colon + 1, &port) < 0 || port < 0 || port > 65535)
        return vl3_error_set(reterr, VL3_E_CONFIG, "invalid port in \"metrics.listen\" \"%s\"",
                             listen);
    const char *h0 = listen;
    size_t hl = (size_t)(colon - listen);
    if (hl >= 2 && h0[0] == '[' && h0[hl - 1] == ']') {
        h0++;
        hl -= 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)hl, h0);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) < 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) < 0)
        return vl3_error_set(reterr, VL3_E_CONFIG, "invalid address in \"metrics.listen\" \"%s\"",
                             listen);
    struct metrics_server *s = calloc(1, sizeof(*s));
    if (!s)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    s->m = m;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    s->handles_open = 2;
    int r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 16, on_connection);
    if (r < 0) {
        uv_close((uv_handle_t *)&s->sweep, on_listener_closed);
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
        return vl3_error_set(reterr, r, "could not listen on \"%s\": %s", listen, uv_strerror(r));
    }
    (void)uv_timer_start(&s->sweep, on_sweep, METRICS_CONN_TIMEOUT_MS / 5,
                         METRICS_CONN_TIMEOUT_MS / 5);
    *ret = s;
    return 0;
}

void metrics_server_stop(struct metrics_server *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = 1;
    for (struct mconn *c = s->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&s->sweep, on_listener_closed);
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}
