/* kafka.c: the librdkafka adapter (see kafka.h). The only file that includes rdkafka.h.
 *
 * Loop integration: each handle's queue (consumer queue; producer main queue) writes one byte
 * into its own non-blocking pipe when it goes from empty to non-empty; a uv_poll on the pipe's
 * read end drains the pipe and then serves the queue with zero-timeout polls until it is empty.
 * rd_kafka_poll_set_consumer() forwards the consumer handle's main queue (rebalance, commit and
 * error callbacks) into the consumer queue, so one pipe covers all of them.
 *
 * Commits are batched: kafka_commit() records the latest offset per partition and a 0-delay
 * timer sends one async commit for all of them. Rebalances use the eager or cooperative calls
 * depending on the configured assignor; on_revoke runs before partitions are given up; pause and
 * resume follow the rules at note_paused.
 *
 * Shutdown: kafka_close() starts rd_kafka_consumer_close_queue() (non-blocking leave), keeps
 * serving the queue (pipe + a 50 ms safety timer) until rd_kafka_consumer_closed(), flushes the
 * producer, destroys both handles, closes the uv handles and frees itself when the last close
 * callback ran. */
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vl3/log.h"

#define KAFKA_MAX_PENDING_COMMITS 1024
#define KAFKA_WARN_INTERVAL_NS (30ull * 1000000000ull)

struct pending_commit {
    char *topic;
    int32_t partition;
    int64_t offset;
};

struct kafka {
    uv_loop_t *loop;
    struct kafka_callbacks cb;
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *cq, *pq;
    int cpipe[2], ppipe[2];
    uv_poll_t cpoll, ppoll;
    uv_timer_t commit_timer, close_timer;
    int handles_open;
    int paused, closing, close_done, cooperative;
    char *dlq_topic;
    struct pending_commit pending[KAFKA_MAX_PENDING_COMMITS];
    int npending;
    struct kafka_stats stats;
    uint64_t last_warn_ns;
    rd_kafka_topic_partition_list_t *paused_parts; /* paused by us, not resumed since */
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* one property list feeds both handles: consumer-only properties on the producer are
     * expected, not worth a warning */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "consumer property"))
        level = VL3_LOG_DEBUG;
    /* failures also reach error_cb, which logs them once (rate-limited): librdkafka's own
     * lines stay at INFO, configuration warnings excepted */
    if (strcmp(fac, "CONFWARN") != 0 && level < VL3_LOG_INFO)
        level = VL3_LOG_INFO;
    vl3_log(level < VL3_LOG_WARNING ? VL3_LOG_WARNING : level, "librdkafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct kafka *k = opaque;
    uint64_t t = now_ns();
    int fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    if (fatal || t - k->last_warn_ns > KAFKA_WARN_INTERVAL_NS) {
        k->last_warn_ns = t;
        vl3_log(fatal ? VL3_LOG_ERR : VL3_LOG_WARNING, "kafka error: %s: %s, retrying",
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    } else {
        vl3_log_debug("kafka error: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    }
}

/* Pause state, and two librdkafka 2.0 behaviours it must live with.
 *
 * 1. A partition's application pause flag survives unassign and assign: a partition paused,
 *    revoked, and assigned again comes back paused. kafka_resume must therefore reach every
 *    partition we paused, assigned or not (a resume while a rebalance had taken them all used to
 *    leave them paused for good: the stall of it_rebalance_join_leave). k->paused_parts holds
 *    them; kafka_resume resumes exactly that list.
 * 2. Each pause or resume op bumps the partition's op version, and an op of an older version
 *    still in the partition's queue is then dropped as outdated, FETCH_START included: a pause
 *    or resume that races with the fetch start of a new assignment can leave the partition
 *    assigned but never fetched, with no error (librdkafka issues 2190 and 5591). So no
 *    pause/resume is sent to partitions that do not need it (never a resume of a partition we
 *    did not pause), and a partition assigned while we are paused is paused before
 *    rd_kafka_assign (the call is synchronous: its op is served before the assignment's
 *    FETCH_START is even made). */
static void note_paused(struct kafka *k, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            !rd_kafka_topic_partition_list_find(k->paused_parts, l->elems[i].topic,
                                                l->elems[i].partition))
            rd_kafka_topic_partition_list_add(k->paused_parts, l->elems[i].topic,
                                              l->elems[i].partition);
}

/* Pause the partitions of l (their err set per partition: UNKNOWN_PARTITION where librdkafka
 * has no such partition yet) and remember them. */
static void pause_list(struct kafka *k, rd_kafka_topic_partition_list_t *l)
{
    if (!l || l->cnt == 0)
        return;
    rd_kafka_resp_err_t e = rd_kafka_pause_partitions(k->consumer, l);
    if (e)
        vl3_log_warning("could not pause partitions: %s", rd_kafka_err2str(e));
    note_paused(k, l);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct kafka *k = opaque;
    k->stats.rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            vl3_log_info("partition assigned topic=%s partition=%" PRId32, parts->elems[i].topic,
                         parts->elems[i].partition);
            if (k->cb.on_assign)
                k->cb.on_assign(k->cb.user, parts->elems[i].topic, parts->elems[i].partition);
        }
        /* paused (backpressure or closing): pause before assigning (see note_paused) */
        rd_kafka_topic_partition_list_t *pl =
            k->paused || k->closing ? rd_kafka_topic_partition_list_copy(parts) : NULL;
        pause_list(k, pl); /* a copy: its err fields are set per partition */
        if (k->cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                vl3_log_err("could not assign partitions: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
            if (e)
                vl3_log_err("could not assign partitions: %s", rd_kafka_err2str(e));
        }
        k->stats.assigned += parts->cnt;
        if (pl) { /* partitions librdkafka did not know before the assignment: paused now */
            rd_kafka_topic_partition_list_t *late = rd_kafka_topic_partition_list_new(0);
            for (int i = 0; i < pl->cnt; i++)
                if (pl->elems[i].err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION)
                    rd_kafka_topic_partition_list_add(late, pl->elems[i].topic,
                                                      pl->elems[i].partition);
            pause_list(k, late);
            rd_kafka_topic_partition_list_destroy(late);
            rd_kafka_topic_partition_list_destroy(pl);
        }
    } else {
        for (int i = 0; i < parts->cnt; i++) {
            vl3_log_info("partition revoked topic=%s partition=%" PRId32, parts->elems[i].topic,
                         parts->elems[i].partition);
            if (k->cb.on_revoke)
                k->cb.on_revoke(k->cb.user, parts->elems[i].topic, parts->elems[i].partition);
        }
        /* on_revoke queued final commits: send them while we are still in the generation
         * (librdkafka waits for outstanding commits before it rejoins) */
        kafka_commit_flush(k);
        if (k->cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e)
                rd_kafka_error_destroy(e);
        } else {
            (void)rd_kafka_assign(rk, NULL);
        }
        k->stats.assigned -= parts->cnt;
        if (k->stats.assigned < 0 || !k->cooperative)
            k->stats.assigned = 0;
    }
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    struct kafka *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err) {
        k->stats.commit_failures++;
        vl3_log_warning("could not commit offsets: %s, the next commit will cover them",
                        rd_kafka_err2str(err));
        return;
    }
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        if (offsets->elems[i].err) {
            k->stats.commit_failures++;
            vl3_log_warning("could not commit offset topic=%s partition=%" PRId32
                            " offset=%" PRId64 ": %s",
                            offsets->elems[i].topic, offsets->elems[i].partition,
                            offsets->elems[i].offset, rd_kafka_err2str(offsets->elems[i].err));
        } else {
            vl3_log_debug("committed topic=%s partition=%" PRId32 " offset=%" PRId64,
                          offsets->elems[i].topic, offsets->elems[i].partition,
                          offsets->elems[i].offset);
        }
    }
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka *k = opaque;
    struct {
        kafka_dlq_cb cb;
        void *user;
    } *ctx = m->_private;
    if (m->err)
        k->stats.dlq_failed++;
    else
        k->stats.dlq_produced++;
    if (ctx) {
        if (ctx->cb)
            ctx->cb(ctx->user, m->err ? VL3_E_KAFKA : 0, m->err ? rd_kafka_err2str(m->err) : NULL);
        free(ctx);
    }
}

static void drain_pipe(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void serve_consumer(struct kafka *k)
{
    rd_kafka_message_t *m;
    while (k->consumer && (m = rd_kafka_consumer_poll(k->consumer, 0))) {
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                error_cb(k->consumer, m->err, rd_kafka_message_errstr(m), k);
        } else if (!k->closing) {
            k->stats.consumed++;
            rd_kafka_headers_t *hdrs = NULL;
            if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
                hdrs = NULL;
            struct kafka_msg km = {rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                                   m->payload, m->len, m->key, m->key_len, hdrs};
            if (k->cb.on_message)
                k->cb.on_message(k->cb.user, &km);
        }
        rd_kafka_message_destroy(m);
    }
}

static void finish_close(struct kafka *k);

static void on_cpoll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct kafka *k = h->data;
    drain_pipe(k->cpipe[0]);
    serve_consumer(k);
    if (k->closing && !k->close_done && rd_kafka_consumer_closed(k->consumer))
        finish_close(k);
}

static void on_ppoll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct kafka *k = h->data;
    drain_pipe(k->ppipe[0]);
    if (k->producer)
        while (rd_kafka_poll(k->producer, 0) > 0) {
        }
}

static int set_prop(rd_kafka_conf_t *conf, const char *name, const char *value, vl3_error *reterr)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return vl3_error_set(reterr, VL3_E_CONFIG, "invalid kafka property \"%s\": %s", name,
                             errstr);
    return 0;
}

static int apply_props(rd_kafka_conf_t *conf, const char *const *props, int consumer,
                       vl3_error *reterr)
{
    for (int i = 0; props && props[i]; i++) {
        const char *eq = strchr(props[i], '=');
        if (!eq || eq == props[i])
            return vl3_error_set(reterr, VL3_E_CONFIG, "kafka property \"%s\" is not name=value",
                                 props[i]);
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - props[i]), props[i]);
        char errstr[512];
        rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, name, eq + 1, errstr, sizeof(errstr));
        /* consumer-only properties are ignored for the producer and the other way round */
        if (r == RD_KAFKA_CONF_INVALID ||
            (r == RD_KAFKA_CONF_UNKNOWN && consumer))
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid kafka property \"%s\": %s", name,
                                 errstr);
    }
    return 0;
}

static int make_pipe(int fds[2], vl3_error *reterr)
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return vl3_error_set(reterr, -errno, "could not create pipe: %s", strerror(errno));
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct kafka *k = h->data;
    if (--k->handles_open > 0)
        return;
    for (int i = 0; i < 2; i++) {
        if (k->cpipe[i] >= 0)
            close(k->cpipe[i]);
        if (k->ppipe[i] >= 0)
            close(k->ppipe[i]);
    }
    for (int i = 0; i < k->npending; i++)
        free(k->pending[i].topic);
    void (*cb)(void *) = k->cb.on_closed;
    void *user = k->cb.user;
    free(k->dlq_topic);
    rd_kafka_topic_partition_list_destroy(k->paused_parts);
    free(k);
    if (cb)
        cb(user);
}

static void on_close_timer(uv_timer_t *t);

static void on_commit_timer(uv_timer_t *t)
{
    kafka_commit_flush(t->data);
}

int kafka_new(uv_loop_t *loop, const struct kafka_options *o, const struct kafka_callbacks *cb,
              struct kafka **ret, vl3_error *reterr)
{
    int r = 0;
    char errstr[512];
    rd_kafka_conf_t *cconf = NULL, *pconf = NULL;
    struct kafka *k = calloc(1, sizeof(*k));
    if (!k)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    k->loop = loop;
    k->cb = *cb;
    k->cpipe[0] = k->cpipe[1] = k->ppipe[0] = k->ppipe[1] = -1;
    k->paused_parts = rd_kafka_topic_partition_list_new(4); /* librdkafka aborts on OOM */
    if (!(k->dlq_topic = strdup(o->dlq_topic ? o->dlq_topic : ""))) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    cconf = rd_kafka_conf_new();
    pconf = rd_kafka_conf_new();
    const char *cid = o->client_id ? o->client_id : "vl3d";
    if ((r = set_prop(cconf, "bootstrap.servers", o->brokers, reterr)) < 0 ||
        (r = set_prop(cconf, "group.id", o->group, reterr)) < 0 ||
        (r = set_prop(cconf, "client.id", cid, reterr)) < 0 ||
        (r = set_prop(cconf, "enable.auto.commit", "false", reterr)) < 0 ||
        (r = set_prop(cconf, "enable.auto.offset.store", "false", reterr)) < 0 ||
        (r = set_prop(cconf, "auto.offset.reset", "earliest", reterr)) < 0 ||
        (r = set_prop(pconf, "bootstrap.servers", o->brokers, reterr)) < 0 ||
        (r = set_prop(pconf, "client.id", cid, reterr)) < 0 ||
        (r = set_prop(pconf, "enable.idempotence", "true", reterr)) < 0 ||
        (r = apply_props(cconf, o->properties, 1, reterr)) < 0 ||
        (r = apply_props(pconf, o->properties, 0, reterr)) < 0)
        goto fail;
    /* the two guarantees the exactly-once design rests on cannot be overridden */
    if ((r = set_prop(cconf, "enable.auto.commit", "false", reterr)) < 0 ||
        (r = set_prop(cconf, "enable.auto.offset.store", "false", reterr)) < 0)
        goto fail;
    char assignor[128];
    size_t alen = sizeof(assignor);
    if (rd_kafka_conf_get(cconf, "partition.assignment.strategy", assignor, &alen) ==
            RD_KAFKA_CONF_OK &&
        strstr(assignor, "cooperative"))
        k->cooperative = 1;
    rd_kafka_conf_set_opaque(cconf, k);
    rd_kafka_conf_set_opaque(pconf, k);
    rd_kafka_conf_set_log_cb(cconf, log_cb);
    rd_kafka_conf_set_log_cb(pconf, log_cb);
    rd_kafka_conf_set_error_cb(cconf, error_cb);
    rd_kafka_conf_set_error_cb(pconf, error_cb);
    rd_kafka_conf_set_rebalance_cb(cconf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(cconf, commit_cb);
    rd_kafka_conf_set_dr_msg_cb(pconf, dr_cb);

    if (!(k->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof(errstr)))) {
        r = vl3_error_set(reterr, VL3_E_KAFKA, "could not create kafka consumer: %s", errstr);
        goto fail;
    }
    cconf = NULL;
    if (!(k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof(errstr)))) {
        r = vl3_error_set(reterr, VL3_E_KAFKA, "could not create kafka producer: %s", errstr);
        goto fail;
    }
    pconf = NULL;
    rd_kafka_poll_set_consumer(k->consumer);
    k->cq = rd_kafka_queue_get_consumer(k->consumer);
    k->pq = rd_kafka_queue_get_main(k->producer);
    if ((r = make_pipe(k->cpipe, reterr)) < 0 || (r = make_pipe(k->ppipe, reterr)) < 0)
        goto fail;
    rd_kafka_queue_io_event_enable(k->cq, k->cpipe[1], "c", 1);
    rd_kafka_queue_io_event_enable(k->pq, k->ppipe[1], "p", 1);

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(k->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        r = vl3_error_set(reterr, VL3_E_KAFKA, "could not subscribe to \"%s\": %s", o->topic,
                          rd_kafka_err2str(e));
        goto fail;
    }
    if ((r = uv_poll_init(loop, &k->cpoll, k->cpipe[0])) < 0 ||
        (r = uv_poll_init(loop, &k->ppoll, k->ppipe[0])) < 0) {
        r = vl3_error_set(reterr, r, "could not watch kafka queues: %s", uv_strerror(r));
        goto fail; /* only possible before any handle exists */
    }
    uv_timer_init(loop, &k->commit_timer);
    uv_timer_init(loop, &k->close_timer);
    k->cpoll.data = k->ppoll.data = k->commit_timer.data = k->close_timer.data = k;
    k->handles_open = 4;
    uv_poll_start(&k->cpoll, UV_READABLE, on_cpoll);
    uv_poll_start(&k->ppoll, UV_READABLE, on_ppoll);
    /* messages may already be queued before the pipe was attached */
    uv_timer_start(&k->close_timer, on_close_timer, 0, 0);
    *ret = k;
    vl3_log_info("kafka consumer started brokers=%s topic=%s group=%s", o->brokers, o->topic,
                 o->group);
    return 0;
fail:
    if (cconf)
        rd_kafka_conf_destroy(cconf);
    if (pconf)
        rd_kafka_conf_destroy(pconf);
    if (k->cq)
        rd_kafka_queue_destroy(k->cq);
    if (k->pq)
        rd_kafka_queue_destroy(k->pq);
    if (k->consumer)
        rd_kafka_destroy(k->consumer);
    if (k->producer)
        rd_kafka_destroy(k->producer);
    for (int i = 0; i < 2; i++) {
        if (k->cpipe[i] >= 0)
            close(k->cpipe[i]);
        if (k->ppipe[i] >= 0)
            close(k->ppipe[i]);
    }
    free(k->dlq_topic);
    rd_kafka_topic_partition_list_destroy(k->paused_parts);
    free(k);
    return r;
}

/* Pause the assignment of the moment, or resume every partition we paused (see note_paused). */
static void set_paused(struct kafka *k, int pause)
{
    if (pause) {
        rd_kafka_topic_partition_list_t *l = NULL;
        if (rd_kafka_assignment(k->consumer, &l) == 0 && l) {
            pause_list(k, l);
            rd_kafka_topic_partition_list_destroy(l);
        }
        return;
    }
    if (k->paused_parts->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_resume_partitions(k->consumer, k->paused_parts);
        if (e)
            vl3_log_warning("could not resume partitions: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(k->paused_parts);
    k->paused_parts = rd_kafka_topic_partition_list_new(4);
}

void kafka_pause(struct kafka *k)
{
    if (k->paused)
        return;
    k->paused = 1;
    set_paused(k, 1);
    vl3_log_debug("kafka consumption paused");
}

void kafka_resume(struct kafka *k)
{
    if (!k->paused || k->closing)
        return;
    k->paused = 0;
    set_paused(k, 0);
    vl3_log_debug("kafka consumption resumed");
}

int kafka_paused(const struct kafka *k)
{
    return k->paused;
}

int kafka_commit(struct kafka *k, const char *topic, int32_t partition, int64_t offset)
{
    for (int i = 0; i < k->npending; i++)
        if (k->pending[i].partition == partition && strcmp(k->pending[i].topic, topic) == 0) {
            if (offset > k->pending[i].offset)
                k->pending[i].offset = offset;
            goto sched;
        }
    if (k->npending == KAFKA_MAX_PENDING_COMMITS)
        kafka_commit_flush(k);
    char *t = strdup(topic);
    if (!t)
        return -ENOMEM;
    k->pending[k->npending++] = (struct pending_commit){t, partition, offset};
sched:
    if (!uv_is_active((uv_handle_t *)&k->commit_timer) && !uv_is_closing((uv_handle_t *)&k->commit_timer))
        uv_timer_start(&k->commit_timer, on_commit_timer, 0, 0);
    return 0;
}

void kafka_commit_flush(struct kafka *k)
{
    if (k->npending == 0 || !k->consumer)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(k->npending);
    for (int i = 0; i < k->npending; i++) {
        rd_kafka_topic_partition_list_add(l, k->pending[i].topic, k->pending[i].partition)
            ->offset = k->pending[i].offset;
        vl3_log_debug("committing topic=%s partition=%" PRId32 " offset=%" PRId64,
                      k->pending[i].topic, k->pending[i].partition, k->pending[i].offset);
        free(k->pending[i].topic);
    }
    k->npending = 0;
    rd_kafka_resp_err_t e = rd_kafka_commit(k->consumer, l, 1);
    rd_kafka_topic_partition_list_destroy(l);
    k->stats.commits++;
    if (e) {
        k->stats.commit_failures++;
        vl3_log_warning("could not commit offsets: %s, the next commit will cover them",
                        rd_kafka_err2str(e));
    }
}

void *kafka_headers_copy(const struct kafka_msg *m)
{
    return m && m->headers ? rd_kafka_headers_copy((const rd_kafka_headers_t *)m->headers) : NULL;
}

void kafka_headers_free(void *headers)
{
    if (headers)
        rd_kafka_headers_destroy(headers);
}

int kafka_dlq_produce(struct kafka *k, const struct kafka_msg *orig, const char *reason,
                      kafka_dlq_cb cb, void *user, vl3_error *reterr)
{
    /* orig->headers is an owned copy (kafka_headers_copy) that this call takes, or NULL */
    rd_kafka_headers_t *h = orig->headers ? orig->headers : rd_kafka_headers_new(5);
    struct {
        kafka_dlq_cb cb;
        void *user;
    } *ctx = malloc(sizeof(*ctx));
    if (!ctx || !h) {
        free(ctx);
        if (h)
            rd_kafka_headers_destroy(h);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    ctx->cb = cb;
    ctx->user = user;
    char part[16], off[32], size[32];
    snprintf(part, sizeof(part), "%" PRId32, orig->partition);
    snprintf(off, sizeof(off), "%" PRId64, orig->offset);
    snprintf(size, sizeof(size), "%zu", orig->len);
    size_t len = orig->len;
    (void)rd_kafka_header_add(h, "vl3-error", -1, reason, -1);
    (void)rd_kafka_header_add(h, "vl3-topic", -1, orig->topic, -1);
    (void)rd_kafka_header_add(h, "vl3-partition", -1, part, -1);
    (void)rd_kafka_header_add(h, "vl3-offset", -1, off, -1);
    if (len > KAFKA_DLQ_MAX_PAYLOAD) { /* never too large to dead-letter */
        len = KAFKA_DLQ_MAX_PAYLOAD;
        (void)rd_kafka_header_add(h, "vl3-truncated", -1, "1", -1);
        (void)rd_kafka_header_add(h, "vl3-original-size", -1, size, -1);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->producer, RD_KAFKA_V_TOPIC(k->dlq_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)orig->key, orig->key ? orig->key_len : 0),
        RD_KAFKA_V_VALUE((void *)orig->payload, len), RD_KAFKA_V_HEADERS(h),
        RD_KAFKA_V_OPAQUE(ctx), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(h); /* not taken on failure */
        free(ctx);
        return vl3_error_set(reterr, VL3_E_KAFKA, "could not produce to \"%s\": %s", k->dlq_topic,
                             rd_kafka_err2str(e));
    }
    return 0;
}

void kafka_get_stats(const struct kafka *k, struct kafka_stats *ret)
{
    *ret = k->stats;
}

static void close_handles(struct kafka *k)
{
    uv_close((uv_handle_t *)&k->cpoll, on_handle_closed);
    uv_close((uv_handle_t *)&k->ppoll, on_handle_closed);
    uv_close((uv_handle_t *)&k->commit_timer, on_handle_closed);
    uv_close((uv_handle_t *)&k->close_timer, on_handle_closed);
}

static void finish_close(struct kafka *k)
{
    k->close_done = 1;
    uv_timer_stop(&k->close_timer);
    /* DLQ deliveries were awaited by the daemon before it closed us; this only bounds the wait */
    (void)rd_kafka_flush(k->producer, 2000);
    rd_kafka_queue_io_event_enable(k->cq, -1, NULL, 0);
    rd_kafka_queue_io_event_enable(k->pq, -1, NULL, 0);
    rd_kafka_queue_destroy(k->cq);
    rd_kafka_queue_destroy(k->pq);
    k->cq = k->pq = NULL;
    rd_kafka_destroy(k->consumer);
    rd_kafka_destroy(k->producer);
    k->consumer = k->producer = NULL;
    vl3_log_info("kafka consumer closed");
    close_handles(k);
}

static void on_close_timer(uv_timer_t *t)
{
    struct kafka *k = t->data;
    serve_consumer(k);
    while (k->producer && rd_kafka_poll(k->producer, 0) > 0) {
    }
    if (!k->close_done && rd_kafka_consumer_closed(k->consumer))
        finish_close(k);
}

void kafka_close(struct kafka *k)
{
    if (!k || k->closing)
        return;
    k->closing = 1;
    kafka_commit_flush(k);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(k->consumer, k->cq);
    if (e) {
        vl3_log_warning("could not leave the consumer group cleanly: %s",
                        rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    uv_timer_start(&k->close_timer, on_close_timer, 0, 50);
}

/* ---- blocking producer for the CLI ---- */

struct kafka_producer {
    rd_kafka_t *rk;
    int failed;
    char first_err[256];
};

static void cli_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka_producer *p = opaque;
    if (m->err) {
        if (!p->failed++)
            snprintf(p->first_err, sizeof(p->first_err), "%s", rd_kafka_err2str(m->err));
    }
}

static void quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

int kafka_producer_new(const char *brokers, const char *const *properties,
                       struct kafka_producer **ret, vl3_error *reterr)
{
    int r;
    char errstr[512];
    struct kafka_producer *p = calloc(1, sizeof(*p));
    if (!p)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if ((r = set_prop(conf, "bootstrap.servers", brokers, reterr)) < 0 ||
        (r = set_prop(conf, "client.id", "vl3-enqueue", reterr)) < 0 ||
        (r = set_prop(conf, "enable.idempotence", "true", reterr)) < 0 ||
        (r = set_prop(conf, "message.timeout.ms", "30000", reterr)) < 0 ||
        (r = apply_props(conf, properties, 0, reterr)) < 0) {
        rd_kafka_conf_destroy(conf);
        free(p);
        return r;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, cli_dr_cb);
    rd_kafka_conf_set_log_cb(conf, quiet_log_cb);
    if (!(p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)))) {
        free(p);
        return vl3_error_set(reterr, VL3_E_KAFKA, "could not create kafka producer: %s", errstr);
    }
    *ret = p;
    return 0;
}

int kafka_producer_send(struct kafka_producer *p, const char *topic, const void *key,
                        size_t keylen, const void *payload, size_t len, vl3_error *reterr)
{
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY((void *)key, keylen), RD_KAFKA_V_VALUE((void *)payload, len),
            RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 100);
            continue;
        }
        if (e)
            return vl3_error_set(reterr, VL3_E_KAFKA, "could not produce to \"%s\": %s", topic,
                                 rd_kafka_err2str(e));
        rd_kafka_poll(p->rk, 0);
        return 0;
    }
}

int kafka_producer_flush(struct kafka_producer *p, int timeout_ms, vl3_error *reterr)
{
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return vl3_error_set(reterr, -ETIMEDOUT, "%d messages not acknowledged after %d ms",
                             rd_kafka_outq_len(p->rk), timeout_ms);
    if (p->failed)
        vl3_error_set(reterr, VL3_E_KAFKA, "%d deliveries failed, first: %s", p->failed,
                      p->first_err);
    return p->failed;
}

int kafka_producer_probe(struct kafka_producer *p, const char *topic, int timeout_ms,
                         vl3_error *reterr)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(p->rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(p->rk, 0, t, &md, timeout_ms);
    if (t)
        rd_kafka_topic_destroy(t);
    if (e)
        return vl3_error_set(reterr, VL3_E_KAFKA, "could not reach the kafka brokers: %s",
                             rd_kafka_err2str(e));
    rd_kafka_metadata_destroy(md);
    return 0;
}

void kafka_producer_free(struct kafka_producer *p)
{
    if (!p)
        return;
    rd_kafka_destroy(p->rk);
    free(p);
}
