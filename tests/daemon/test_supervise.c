/* test_supervise.c: the worker supervisor on a real libuv loop with the fake worker: jobs are
 * answered, a crashing job is re-dispatched then reported poison after max_attempts while the
 * other jobs succeed, a hanging worker is killed after jobs.timeout, a retryable worker error is
 * reported to the caller, and stop leaves nothing on the loop (uv_loop_close() == 0). */
#include <uv.h>

#include <unistd.h>

#include "supervise.h"
#include "vl3/util.h"
#include "test.h"

struct tjob {
    struct sv_job sv; /* first */
    const char *id, *input;
    int results, done, errors, poisoned, abandoned;
    char reason[256];
};

struct ctx {
    struct supervise *sv;
    struct tjob *jobs;
    int njobs, finished, stopped, ending;
};

static struct ctx C;

static int t_encode(void *user, struct sv_job *s, int attempt, uint8_t **buf, size_t *len)
{
    (void)user;
    struct tjob *j = (struct tjob *)s;
    struct vl3_proto_job pj = {.job_id = j->id, .input = j->input, .ntasks = 2,
                               .tasks = {{VL3_TASK_CAPTION, NULL}, {VL3_TASK_QA, "why?"}},
                               .sampling = {1, 4, VL3_SAMPLING_FAST, 0}, .attempt = attempt};
    return vl3_proto_encode_job(&pj, buf, len, NULL);
}

static void finish_one(void)
{
    if (++C.finished == C.njobs && !C.ending) {
        C.ending = 1;
        supervise_stop(C.sv, 2000);
    }
}

static void t_result(void *user, struct sv_job *s, const struct vl3_proto_result *r)
{
    (void)user;
    struct tjob *j = (struct tjob *)s;
    char want[512];
    snprintf(want, sizeof(want), "%s of %s%s w0", r->task == 0 ? "caption" : "qa", j->input,
             r->task == 0 ? "" : " q=why?");
    if (strcmp(r->answer, want) == 0)
        j->results++;
}

static void t_done(void *user, struct sv_job *s, const struct vl3_proto_done *d)
{
    (void)user;
    struct tjob *j = (struct tjob *)s;
    j->done += d->results == 2;
    finish_one();
}

static void t_error(void *user, struct sv_job *s, const struct vl3_proto_error *e)
{
    (void)user;
    struct tjob *j = (struct tjob *)s;
    j->errors++;
    snprintf(j->reason, sizeof(j->reason), "%s", e->message);
    if (e->retryable) { /* the caller decides: retry once, as the daemon does */
        supervise_retry(C.sv, s);
        return;
    }
    finish_one();
}

static void t_poison(void *user, struct sv_job *s, const char *reason)
{
    (void)user;
    struct tjob *j = (struct tjob *)s;
    j->poisoned++;
    snprintf(j->reason, sizeof(j->reason), "%s", reason);
    finish_one();
}

static void t_abandoned(void *user, struct sv_job *s)
{
    (void)user;
    ((struct tjob *)s)->abandoned++;
}

static void t_stopped(void *user)
{
    (void)user;
    C.stopped++;
    C.sv = NULL;
}

TEST(supervise_dispatch_crash_hang_poison)
{
    char worker[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    struct tjob jobs[] = {
        {.id = "a", .input = "/m/a.mp4"},       {.id = "b", .input = "/m/b.mp4"},
        {.id = "crash", .input = "/m/crash.mp4"}, {.id = "c", .input = "/m/c.mp4"},
        {.id = "hang", .input = "/m/hang.mp4"},   {.id = "flaky", .input = "/m/flaky.mp4"},
        {.id = "retry", .input = "/m/retry.mp4"}, {.id = "d", .input = "/m/d.mp4"},
    };
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = (int)(sizeof(jobs) / sizeof(jobs[0]));
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = 2, .max_attempts = 2,
                                   .job_timeout_ms = 800, .startup_timeout_ms = 5000,
                                   .ping_interval_ms = 200};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    for (int i = 0; i < C.njobs; i++) {
        jobs[i].sv.priority = i == 7 ? 9 : 5; /* d jumps the queue */
        supervise_submit(C.sv, &jobs[i].sv);
    }
    uint64_t t0 = uv_hrtime();
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    ASSERT_EQ(C.stopped, 1);
    ASSERT_EQ(uv_loop_close(&loop), 0); /* every handle closed */
    ASSERT_LT(secs, 20);
    for (int i = 0; i < C.njobs; i++) {
        struct tjob *j = &jobs[i];
        if (!strcmp(j->id, "crash") || !strcmp(j->id, "hang")) {
            ASSERT_EQ(j->poisoned, 1);
            ASSERT_EQ(j->done, 0);
            ASSERT_EQ(j->sv.kills, 2);
            ASSERT_STR_CONTAINS(j->reason, "poison: 2 attempts");
            if (!strcmp(j->id, "hang"))
                ASSERT_STR_CONTAINS(j->reason, "hung");
        } else {
            if (j->done != 1 || j->results != 2 || j->poisoned)
                TEST__FAIL("job %s: done %d results %d poisoned %d", j->id, j->done, j->results,
                           j->poisoned);
        }
        ASSERT_EQ(j->abandoned, 0);
    }
    ASSERT_EQ(jobs[5].sv.kills, 1);  /* flaky: killed once, then fine */
    ASSERT_EQ(jobs[6].errors, 1);    /* retry: one retryable error reported, then done */
    ASSERT_EQ(jobs[6].sv.attempts, 2);
    return 0;
}

/* stop while a job runs: its worker gets EOF, finishes, the job ends normally; a queued job is
 * taken back by supervise_cancel; the loop closes */
static int cancel_result = -1;

static void on_stop_timer(uv_timer_t *t)
{
    struct tjob *queued = t->data;
    cancel_result = supervise_cancel(C.sv, &queued->sv);
    supervise_stop(C.sv, 3000);
    uv_close((uv_handle_t *)t, NULL);
}

TEST(supervise_stop_lets_running_job_finish)
{
    char worker[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    setenv("VL3_FAKE_WORKER_DELAY_MS", "600", 1);
    struct tjob jobs[] = {{.id = "r", .input = "/m/r.mp4"}, {.id = "q", .input = "/m/q.mp4"}};
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = 99; /* never stop from finish_one */
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .count = 1, .max_attempts = 2,
                                   .job_timeout_ms = 5000};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    supervise_submit(C.sv, &jobs[0].sv);
    supervise_submit(C.sv, &jobs[1].sv);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &jobs[1];
    uv_timer_start(&t, on_stop_timer, 300, 0);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_EQ(C.stopped, 1);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT_EQ(jobs[0].done, 1);
    ASSERT_EQ(jobs[0].results, 2);
    ASSERT_EQ(cancel_result, 1); /* the queued job was handed back */
    ASSERT_EQ(jobs[1].done + jobs[1].abandoned + jobs[1].poisoned, 0);
    return 0;
}

/* A well-framed RESULT out of the protocol's range (t_start < 0) fails only its job, with the
 * parser's reason, through on_error; the worker is not killed (no kill counted, not poison) and
 * serves the next job. */
TEST(supervise_bad_result_fails_job_not_worker)
{
    char worker[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    struct tjob jobs[] = {{.id = "bad", .input = "/m/badresult.mp4"},
                          {.id = "next", .input = "/m/next.mp4"}};
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = 2;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = 1, .max_attempts = 2,
                                   .job_timeout_ms = 5000, .startup_timeout_ms = 5000,
                                   .ping_interval_ms = 200};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    for (int i = 0; i < C.njobs; i++)
        supervise_submit(C.sv, &jobs[i].sv);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(C.stopped, 1);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT_EQ(jobs[0].errors, 1);
    ASSERT_EQ(jobs[0].poisoned, 0);
    ASSERT_EQ(jobs[0].done, 0);
    ASSERT_EQ(jobs[0].sv.kills, 0);
    ASSERT_EQ(jobs[0].sv.attempts, 1);
    ASSERT_STR_CONTAINS(jobs[0].reason, "t_start");
    ASSERT_EQ(jobs[1].done, 1);
    ASSERT_EQ(jobs[1].results, 2);
    ASSERT_EQ(jobs[1].sv.kills, 0);
    return 0;
}

/* Liveness comes from the job's progress: a worker that answers pings but whose job never
 * progresses is killed after stall_timeout (long before jobs.timeout), on each attempt, and the
 * job ends as poison with a "stalled" reason; a slow job that keeps sending progress frames
 * (3 s, much longer than stall_timeout) is not touched. */
TEST(supervise_stalled_job_killed)
{
    char worker[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    struct tjob jobs[] = {{.id = "stall", .input = "/m/stall.mp4"},
                          {.id = "slow", .input = "/m/slow.mp4"}};
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = 2;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = 2, .max_attempts = 2,
                                   .job_timeout_ms = 60000, .startup_timeout_ms = 5000,
                                   .ping_interval_ms = 200, .stall_timeout_ms = 800};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    for (int i = 0; i < C.njobs; i++)
        supervise_submit(C.sv, &jobs[i].sv);
    uint64_t t0 = uv_hrtime();
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    ASSERT_EQ(C.stopped, 1);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT_LT(secs, 20); /* far below jobs.timeout */
    ASSERT_EQ(jobs[0].poisoned, 1);
    ASSERT_EQ(jobs[0].sv.kills, 2);
    ASSERT_STR_CONTAINS(jobs[0].reason, "stalled");
    ASSERT_EQ(jobs[1].done, 1);
    ASSERT_EQ(jobs[1].sv.kills, 0);
    return 0;
}

/* Workers get a scrubbed environment: the daemon's secrets (PostgreSQL password and password
 * file, Kafka settings, systemd credentials) never reach them; PATH, the VL3_* hooks and the
 * parent pid do. */
TEST(supervise_worker_env_scrubbed)
{
    char worker[4096], log[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    snprintf(log, sizeof(log), "%s/env.log", test_tmpdir());
    setenv("PGPASSWORD", "s3cret-pg", 1);
    setenv("PGPASSFILE", "/etc/secret-pgpass", 1);
    setenv("KAFKA_SASL_PASSWORD", "s3cret-kafka", 1);
    setenv("CREDENTIALS_DIRECTORY", "/run/credentials/vl3d", 1);
    setenv("VL3_FAKE_WORKER_LOG", log, 1);
    struct tjob jobs[] = {{.id = "env", .input = "/m/environ.mp4"}};
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = 1;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = 1, .max_attempts = 2,
                                   .job_timeout_ms = 5000, .startup_timeout_ms = 5000,
                                   .ping_interval_ms = 200};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    supervise_submit(C.sv, &jobs[0].sv);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    unsetenv("PGPASSWORD");
    unsetenv("PGPASSFILE");
    unsetenv("KAFKA_SASL_PASSWORD");
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("VL3_FAKE_WORKER_LOG");
    ASSERT_EQ(jobs[0].done, 1);
    char *text = NULL;
    size_t len = 0;
    ASSERT_OK(vl3_file_read(log, 1 << 20, &text, &len, NULL));
    ASSERT_STR_CONTAINS(text, "env PATH=");
    ASSERT_STR_CONTAINS(text, "env VL3_FAKE_WORKER_LOG=");
    char want[64];
    snprintf(want, sizeof(want), "env VL3_PARENT_PID=%d\n", (int)getpid());
    ASSERT_STR_CONTAINS(text, want);
    int leaked = strstr(text, "PGPASSWORD") || strstr(text, "PGPASSFILE") ||
                 strstr(text, "KAFKA_") || strstr(text, "CREDENTIALS_DIRECTORY");
    free(text);
    ASSERT(!leaked);
    return 0;
}
