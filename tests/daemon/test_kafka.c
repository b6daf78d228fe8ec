/* test_kafka.c: the Kafka adapter (kafka.c) on a real libuv loop against librdkafka's mock cluster
 * in this process. A consumer paused (backpressure) is made to rebalance by a Heartbeat error; it
 * is resumed while its partitions are revoked and not yet assigned again (what the daemon does
 * when the jobs of revoked partitions finish during a rebalance). librdkafka keeps a partition's
 * pause flag across unassign and assign, so the partitions must come back resumed by the adapter:
 * every message is consumed again after the assignment (nothing was committed). A consumer that
 * never pauses sends librdkafka no pause or resume at all (librdkafka's debug log shows each
 * one): a resume racing with an assignment's fetch start makes that fetch start outdated and the
 * partition is never fetched (librdkafka issues 2190, 5591; it_postgres_restart once stalled so
 * with one partition unread while the adapter resumed every new assignment). */
#include <uv.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka.h"
#include "test.h"
#include "vl3/log.h"
#include "vl3/util.h"

#define NPART 2
#define PER_PART 10
#define API_HEARTBEAT 12 /* Kafka protocol ApiKey */

struct ctx {
    struct kafka *k;
    int assigned, revoked, closed, reassigned, no_pause;
    int msgs[NPART], after[NPART];
};

static struct ctx C;

static void t_message(void *user, const struct kafka_msg *m)
{
    (void)user;
    if (m->partition < 0 || m->partition >= NPART)
        return;
    C.msgs[m->partition]++;
    if (C.reassigned)
        C.after[m->partition]++;
    else if (!kafka_paused(C.k) && !C.no_pause)
        kafka_pause(C.k); /* as the daemon at kafka.max_in_flight = 1 */
}

static void t_assign(void *user, const char *topic, int32_t partition)
{
    (void)user;
    (void)topic;
    (void)partition;
    C.assigned++;
    if (C.revoked > 0)
        C.reassigned = 1;
}

static void t_revoke(void *user, const char *topic, int32_t partition)
{
    (void)user;
    (void)topic;
    (void)partition;
    C.revoked++;
}

static void t_closed(void *user)
{
    (void)user;
    C.closed = 1;
}

/* ---- running the loop until a condition holds ---- */

static uv_timer_t tick;
static int (*w_cond)(void);
static uint64_t w_deadline;
static int w_met;

static void on_tick(uv_timer_t *t)
{
    if (w_cond()) {
        w_met = 1;
        uv_stop(t->loop);
    } else if (uv_now(t->loop) >= w_deadline) {
        uv_stop(t->loop);
    }
}

static int wait_for(uv_loop_t *loop, int (*cond)(void), uint64_t ms)
{
    w_cond = cond;
    w_met = 0;
    uv_update_time(loop);
    w_deadline = uv_now(loop) + ms;
    uv_timer_start(&tick, on_tick, 0, 10);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    return w_met;
}

static int total(const int *n)
{
    int s = 0;
    for (int i = 0; i < NPART; i++)
        s += n[i];
    return s;
}

static int first_taken(void)
{
    return C.assigned == NPART && kafka_paused(C.k) && total(C.msgs) > 0;
}

static int all_revoked(void)
{
    return C.revoked == NPART;
}

static int all_reassigned(void)
{
    return C.assigned == 2 * NPART;
}

static int all_consumed_again(void)
{
    for (int i = 0; i < NPART; i++)
        if (C.after[i] < PER_PART)
            return 0;
    return 1;
}

static int all_consumed(void)
{
    return total(C.msgs) == NPART * PER_PART;
}

static int never(void)
{
    return 0;
}

static int is_closed(void)
{
    return C.closed;
}

static int produce_all(const char *bootstraps)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!p) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    int r = 0;
    for (int part = 0; part < NPART && r == 0; part++)
        for (int i = 0; i < PER_PART && r == 0; i++)
            if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("t"), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_VALUE("{}", 2),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END))
                r = -1;
    if (r == 0 && rd_kafka_flush(p, 10000))
        r = -1;
    rd_kafka_destroy(p);
    return r;
}

/* A one-broker mock cluster with topic "t" (NPART partitions) holding produce_all's messages. */
static int start_mock(rd_kafka_t **ret_rk, rd_kafka_mock_cluster_t **ret_mc)
{
    char errstr[256];
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    /* the mock cluster's own handle has no brokers to talk to: no notice about that */
    if (rd_kafka_conf_set(mconf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return -1;
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, errstr, sizeof(errstr));
    if (!mrk)
        return -1;
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    if (!mc || rd_kafka_mock_topic_create(mc, "t", NPART, 1) != 0 ||
        produce_all(rd_kafka_mock_cluster_bootstraps(mc)) != 0) {
        if (mc)
            rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(mrk);
        return -1;
    }
    *ret_rk = mrk;
    *ret_mc = mc;
    return 0;
}

TEST(kafka_partitions_resumed_while_revoked_come_back_resumed)
{
    rd_kafka_t *mrk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    ASSERT_EQ(start_mock(&mrk, &mc), 0);
    const char *boot = rd_kafka_mock_cluster_bootstraps(mc);

    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ASSERT_EQ(uv_timer_init(&loop, &tick), 0);
    memset(&C, 0, sizeof(C));
    /* the mock coordinator waits session.timeout.ms - 1 s for members to rejoin: a 2 s window
     * with the partitions revoked */
    const char *props[] = {"session.timeout.ms=3000", "heartbeat.interval.ms=200", NULL};
    struct kafka_options o = {.brokers = boot, .topic = "t", .group = "g", .dlq_topic = "dlq",
                              .properties = props, .client_id = "test-kafka"};
    struct kafka_callbacks cb = {.on_message = t_message, .on_assign = t_assign,
                                 .on_revoke = t_revoke, .on_closed = t_closed, .user = NULL};
    vl3_error e = {0};
    ASSERT_OK_E(kafka_new(&loop, &o, &cb, &C.k, &e), &e);

    ASSERT(wait_for(&loop, first_taken, 20000));
    /* paused after the first message: the rest of the partitions stay unconsumed */
    (void)wait_for(&loop, never, 500);
    ASSERT_LT(total(C.msgs), NPART * PER_PART);
    int before = total(C.msgs);

    /* the next heartbeat fails: the consumer revokes everything and rejoins */
    rd_kafka_mock_push_request_errors(mc, API_HEARTBEAT, 1,
                                      RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    ASSERT(wait_for(&loop, all_revoked, 10000));
    ASSERT_EQ(C.assigned, NPART); /* not assigned again yet */
    kafka_resume(C.k);            /* nothing assigned: only our state changes */
    ASSERT(!kafka_paused(C.k));
    ASSERT(wait_for(&loop, all_reassigned, 15000));
    /* nothing was committed: both partitions are read again from the start */
    int again = wait_for(&loop, all_consumed_again, 10000);
    fprintf(stderr, "consumed %d before the rebalance, %d and %d from the partitions after\n",
            before, C.after[0], C.after[1]);
    ASSERT(again);

    kafka_close(C.k);
    ASSERT(wait_for(&loop, is_closed, 15000));
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    return 0;
}

TEST(kafka_consumer_never_paused_sends_no_resume)
{
    rd_kafka_t *mrk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    ASSERT_EQ(start_mock(&mrk, &mc), 0);
    const char *boot = rd_kafka_mock_cluster_bootstraps(mc);

    /* the adapter logs librdkafka's debug lines (facility topic: every pause and resume) */
    char logpath[] = "/tmp/vl3-test-kafka-XXXXXX";
    int lfd = mkstemp(logpath);
    ASSERT(lfd >= 0);
    fflush(stderr);
    int saved = dup(2);
    ASSERT(saved >= 0 && dup2(lfd, 2) == 2);
    vl3_log_set_level(VL3_LOG_DEBUG);

    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ASSERT_EQ(uv_timer_init(&loop, &tick), 0);
    memset(&C, 0, sizeof(C));
    C.no_pause = 1;
    const char *props[] = {"debug=topic", NULL};
    struct kafka_options o = {.brokers = boot, .topic = "t", .group = "g2", .dlq_topic = "dlq",
                              .properties = props, .client_id = "test-kafka"};
    struct kafka_callbacks cb = {.on_message = t_message, .on_assign = t_assign,
                                 .on_revoke = t_revoke, .on_closed = t_closed, .user = NULL};
    vl3_error e = {0};
    int ok = kafka_new(&loop, &o, &cb, &C.k, &e) == 0;
    int consumed = ok && wait_for(&loop, all_consumed, 20000);
    if (ok) {
        kafka_close(C.k);
        (void)wait_for(&loop, is_closed, 15000);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    vl3_log_set_level(VL3_LOG_INFO);
    ASSERT(ok);
    ASSERT(consumed);
    ASSERT_EQ(uv_loop_close(&loop), 0);

    char *buf = NULL;
    size_t len = 0;
    ASSERT_OK_E(vl3_file_read(logpath, 64u << 20, &buf, &len, &e), &e);
    unlink(logpath);
    close(lfd);
    /* librdkafka 2.0: "Application pausing|resuming N partition(s)" for each call */
    int n_app = 0;
    for (const char *q = buf; (q = strstr(q, "Application ")); q++)
        if (strncmp(q + 12, "resuming", 8) == 0 || strncmp(q + 12, "pausing", 7) == 0)
            n_app++;
    int saw_debug = strstr(buf, "librdkafka") != NULL;
    free(buf);
    fprintf(stderr, "%d pause/resume calls in librdkafka's log\n", n_app);
    ASSERT(saw_debug); /* the log was captured at all */
    ASSERT_EQ(n_app, 0);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    return 0;
}
