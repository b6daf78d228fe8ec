/* test_supervise.c: the worker supervisor on a real libuv loop with the fake worker: jobs are
 * answered, a crashing job is re-dispatched then reported poison after max_attempts while the
 * other jobs succeed, a hanging worker is killed after jobs.timeout, a retryable worker error is
 * reported to the caller, and stop leaves nothing on the loop (uv_loop_close() == 0). */
#include <uv.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "supervise.h"
#include "vl3/util.h"
#include "test.h"

/* vl3d ignores SIGPIPE (main.c): a write to the pipe of a worker that just crashed comes back as
 * EPIPE. This binary runs the supervisor in-process, so it sets up the same; without it such a
 * write killed the whole test binary (seen once in CI: supervise_crasher_fails_alone_others_
 * complete, SIGPIPE). */
__attribute__((constructor)) static void ignore_sigpipe_as_vl3d_does(void)
{
    signal(SIGPIPE, SIG_IGN);
}

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

static void submit(struct tjob *j)
{
    j->sv.id = j->id;
    supervise_submit(C.sv, &j->sv);
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
        submit(&jobs[i]);
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
    submit(&jobs[0]);
    submit(&jobs[1]);
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
        submit(&jobs[i]);
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
        submit(&jobs[i]);
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
    submit(&jobs[0]);
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

/* ---- protocol 2: credits ---- */

static size_t max_running; /* most jobs held at once, seen from t_result_running */

static void t_result_running(void *user, struct sv_job *s, const struct vl3_proto_result *r)
{
    struct supervise_stats st;
    supervise_get_stats(C.sv, &st);
    if (st.running > max_running)
        max_running = st.running;
    t_result(user, s, r);
}

static int run_credits(struct tjob *jobs, int n, int workers, int max_attempts, uv_loop_t *loop,
                       void (*on_timer)(uv_timer_t *), uint64_t timer_ms)
{
    char worker[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    memset(&C, 0, sizeof(C));
    max_running = 0;
    C.jobs = jobs;
    C.njobs = n;
    ASSERT_EQ(uv_loop_init(loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = workers,
                                   .max_attempts = max_attempts, .job_timeout_ms = 5000,
                                   .startup_timeout_ms = 5000, .ping_interval_ms = 100,
                                   .stall_timeout_ms = 3000};
    struct supervise_ops ops = {t_encode, t_result_running, t_done,    t_error,
                                t_poison, t_abandoned,      t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(loop, &so, &ops, &C.sv, &e), &e);
    for (int i = 0; i < n; i++)
        submit(&jobs[i]);
    uv_timer_t t;
    if (on_timer) { /* repeats until it closes itself */
        uv_timer_init(loop, &t);
        uv_timer_start(&t, on_timer, timer_ms, timer_ms);
    }
    ASSERT_EQ(uv_run(loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(C.stopped, 1);
    ASSERT_EQ(uv_loop_close(loop), 0);
    return 0;
}

/* One worker offering 4 credits holds 4 jobs at once: 8 jobs of 600 ms each end in about two
 * rounds, not eight, and every answer is right. */
TEST(supervise_credits_hold_several_jobs)
{
    setenv("VL3_FAKE_WORKER_CREDITS", "4", 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "600", 1);
    struct tjob jobs[8];
    char ids[8][16], inputs[8][32];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], sizeof(ids[i]), "c%d", i);
        snprintf(inputs[i], sizeof(inputs[i]), "/m/c%d.mp4", i);
        jobs[i].id = ids[i];
        jobs[i].input = inputs[i];
    }
    uv_loop_t loop;
    uint64_t t0 = uv_hrtime();
    int r = run_credits(jobs, 8, 1, 2, &loop, NULL, 0);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    unsetenv("VL3_FAKE_WORKER_CREDITS");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_OK(r);
    for (int i = 0; i < 8; i++)
        if (jobs[i].done != 1 || jobs[i].results != 2 || jobs[i].sv.attempts != 1)
            TEST__FAIL("job %s: done %d results %d attempts %d", jobs[i].id, jobs[i].done,
                       jobs[i].results, jobs[i].sv.attempts);
    ASSERT_EQ(max_running, 4);
    ASSERT_LT(secs, 8 * 0.6); /* serially it would take 4.8 s */
    return 0;
}

/* kill -9 the worker (the pid the fake worker logged) while it holds several jobs */
static char kill_log[4096];
static int killed_pid;

static void kill_worker_timer(uv_timer_t *t)
{
    if (C.ending || !C.sv) { /* everything ended without the kill: the test fails on killed_pid */
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    struct supervise_stats st;
    supervise_get_stats(C.sv, &st);
    if (st.running < 4)
        return; /* not all four held yet: look again at the next tick */
    char *text = NULL;
    size_t len = 0;
    if (vl3_file_read(kill_log, 1 << 20, &text, &len, NULL) == 0 && len > 0) {
        max_running = st.running; /* held when it is killed */
        killed_pid = atoi(text);
        if (killed_pid > 0)
            kill(killed_pid, SIGKILL);
    }
    free(text);
    if (killed_pid > 0)
        uv_close((uv_handle_t *)t, NULL);
}

/* A worker killed while holding four jobs loses none and blames none: with max_attempts 1 (one
 * charged crash would poison a job), every job is re-run, alone, and done; no kill is counted. */
TEST(supervise_killed_holding_several_blames_none)
{
    snprintf(kill_log, sizeof(kill_log), "%s/kill.log", test_tmpdir());
    unlink(kill_log);
    setenv("VL3_FAKE_WORKER_LOG", kill_log, 1);
    setenv("VL3_FAKE_WORKER_CREDITS", "4", 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "800", 1);
    struct tjob jobs[] = {{.id = "k1", .input = "/m/k1.mp4"}, {.id = "k2", .input = "/m/k2.mp4"},
                          {.id = "k3", .input = "/m/k3.mp4"}, {.id = "k4", .input = "/m/k4.mp4"}};
    uv_loop_t loop;
    killed_pid = 0;
    int r = run_credits(jobs, 4, 1, 1, &loop, kill_worker_timer, 50);
    unsetenv("VL3_FAKE_WORKER_LOG");
    unsetenv("VL3_FAKE_WORKER_CREDITS");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_OK(r);
    ASSERT(killed_pid > 0);
    for (int i = 0; i < 4; i++) {
        struct tjob *j = &jobs[i];
        if (j->done != 1 || j->results != 2 || j->poisoned || j->sv.kills != 0 ||
            j->sv.attempts != 2 || j->sv.shared_deaths != 1)
            TEST__FAIL("job %s: done %d results %d poisoned %d kills %d attempts %d", j->id,
                       j->done, j->results, j->poisoned, j->sv.kills, j->sv.attempts);
    }
    ASSERT_EQ(max_running, 4);
    return 0;
}

/* A job that crashes its worker on every attempt, dispatched with others (credits 4, two
 * workers): the first crash blames nobody, the jobs held with it are re-run and done; the
 * crasher then runs alone and, after max_attempts crashes alone, fails as poison. */
TEST(supervise_crasher_fails_alone_others_complete)
{
    setenv("VL3_FAKE_WORKER_CREDITS", "4", 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "300", 1);
    struct tjob jobs[] = {{.id = "g1", .input = "/m/g1.mp4"},
                          {.id = "crash", .input = "/m/crash.mp4"},
                          {.id = "g2", .input = "/m/g2.mp4"},
                          {.id = "g3", .input = "/m/g3.mp4"},
                          {.id = "g4", .input = "/m/g4.mp4"},
                          {.id = "g5", .input = "/m/g5.mp4"},
                          {.id = "g6", .input = "/m/g6.mp4"}};
    int n = (int)(sizeof(jobs) / sizeof(jobs[0]));
    uv_loop_t loop;
    int r = run_credits(jobs, n, 2, 2, &loop, NULL, 0);
    unsetenv("VL3_FAKE_WORKER_CREDITS");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_OK(r);
    struct tjob *c = &jobs[1];
    ASSERT_EQ(c->poisoned, 1);
    ASSERT_EQ(c->done, 0);
    ASSERT_EQ(c->sv.kills, 2);
    ASSERT_EQ(c->sv.attempts, 3); /* once with others (not charged), twice alone */
    ASSERT_STR_CONTAINS(c->reason, "poison: 2 attempts");
    for (int i = 0; i < n; i++) {
        struct tjob *j = &jobs[i];
        if (j == c)
            continue;
        if (j->done != 1 || j->results != 2 || j->poisoned || j->sv.kills != 0)
            TEST__FAIL("job %s: done %d results %d poisoned %d kills %d", j->id, j->done,
                       j->results, j->poisoned, j->sv.kills);
    }
    return 0;
}

/* ---- devices per slot ---- */

static int run_devices(const char *devices, int device_arg, const char *backend, char **ret_log)
{
    char worker[4096], log[4096];
    snprintf(worker, sizeof(worker), "%s/bin/fake-worker", test_build_dir());
    snprintf(log, sizeof(log), "%s/devices.log", test_tmpdir());
    unlink(log);
    setenv("VL3_FAKE_WORKER_LOG", log, 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "800", 1);
    setenv("CUDA_VISIBLE_DEVICES", "9", 1); /* the daemon's own */
    struct tjob jobs[] = {{.id = "e0", .input = "/m/environ0.mp4"},
                          {.id = "e1", .input = "/m/environ1.mp4"}};
    memset(&C, 0, sizeof(C));
    C.jobs = jobs;
    C.njobs = 2;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = worker, .config = "", .count = 2, .max_attempts = 2,
                                   .job_timeout_ms = 5000, .startup_timeout_ms = 5000,
                                   .ping_interval_ms = 200, .backend = backend,
                                   .devices = devices, .device_arg = device_arg};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    vl3_error e = {0};
    ASSERT_OK_E(supervise_new(&loop, &so, &ops, &C.sv, &e), &e);
    submit(&jobs[0]);
    submit(&jobs[1]);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    unsetenv("VL3_FAKE_WORKER_LOG");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    unsetenv("CUDA_VISIBLE_DEVICES");
    ASSERT_EQ(jobs[0].done + jobs[1].done, 2);
    size_t len = 0;
    ASSERT_OK(vl3_file_read(log, 1 << 20, ret_log, &len, NULL));
    return 0;
}

/* Each worker slot gets its device: from a list as CUDA_VISIBLE_DEVICES (the daemon's own
 * replaced), or the slot index as --device; workers.backend other than auto as --backend; a
 * malformed list is refused. */
TEST(supervise_devices_per_slot)
{
    char *text = NULL;
    ASSERT_OK(run_devices("3,5", 0, "auto", &text));
    int ok = strstr(text, "env CUDA_VISIBLE_DEVICES=3\n") &&
             strstr(text, "env CUDA_VISIBLE_DEVICES=5\n") &&
             !strstr(text, "CUDA_VISIBLE_DEVICES=9") && !strstr(text, "arg --");
    if (!ok)
        TEST__FAIL("env devices: %s", text);
    free(text);
    ASSERT_OK(run_devices("slot", 1, "cuda", &text));
    ok = strstr(text, "arg --device\narg 0\n") && strstr(text, "arg --device\narg 1\n") &&
         strstr(text, "arg --backend\narg cuda\n") && strstr(text, "env CUDA_VISIBLE_DEVICES=9\n");
    if (!ok)
        TEST__FAIL("arg devices: %s", text);
    free(text);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    struct supervise_options so = {.path = "/bin/true", .count = 1, .max_attempts = 1,
                                   .job_timeout_ms = 1000, .devices = "0,,1"};
    struct supervise_ops ops = {t_encode, t_result,    t_done,    t_error,
                                t_poison, t_abandoned, t_stopped, NULL};
    struct supervise *sv = NULL;
    vl3_error e = {0};
    ASSERT_EQ(supervise_new(&loop, &so, &ops, &sv, &e), -EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "workers.devices");
    ASSERT_EQ(uv_loop_close(&loop), 0);
    return 0;
}

/* A level-2 worker whose pongs stop listing a job it was given (it lost it) gets the job back
 * in the queue after three such pongs, uncharged; the worker is kept and the job done on its
 * next attempt; the job held beside it is untouched. */
TEST(supervise_lost_job_requeued)
{
    setenv("VL3_FAKE_WORKER_CREDITS", "4", 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "1500", 1);
    struct tjob jobs[] = {{.id = "lose", .input = "/m/lose.mp4"},
                          {.id = "keep", .input = "/m/keep.mp4"}};
    uv_loop_t loop;
    uint64_t t0 = uv_hrtime();
    int r = run_credits(jobs, 2, 1, 1, &loop, NULL, 0);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    unsetenv("VL3_FAKE_WORKER_CREDITS");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_OK(r);
    ASSERT_EQ(jobs[0].done, 1);
    ASSERT_EQ(jobs[0].results, 2);
    ASSERT_EQ(jobs[0].sv.attempts, 2);
    ASSERT_EQ(jobs[0].sv.kills, 0);
    ASSERT_EQ(jobs[1].done, 1);
    ASSERT_EQ(jobs[1].sv.attempts, 1);
    /* found by pongs (100 ms apart), not by the 3-s stall timer (which would have killed the
     * worker and, the job being alone by then, charged it: kills 1, poison at max_attempts 1) */
    ASSERT_LT(secs, 4.5);
    return 0;
}

/* Priorities still order dispatch with credits: a priority-9 job submitted after four
 * priority-1 jobs is among the first two a 2-credit worker takes (FIFO would give l1, l2). */
TEST(supervise_credits_priority_order)
{
    char log[4096];
    snprintf(log, sizeof(log), "%s/prio.log", test_tmpdir());
    unlink(log);
    setenv("VL3_FAKE_WORKER_LOG", log, 1);
    setenv("VL3_FAKE_WORKER_CREDITS", "2", 1);
    setenv("VL3_FAKE_WORKER_DELAY_MS", "300", 1);
    struct tjob jobs[] = {{.id = "l1", .input = "/m/l1.mp4"}, {.id = "l2", .input = "/m/l2.mp4"},
                          {.id = "l3", .input = "/m/l3.mp4"}, {.id = "l4", .input = "/m/l4.mp4"},
                          {.id = "h", .input = "/m/h.mp4"}};
    for (int i = 0; i < 5; i++)
        jobs[i].sv.priority = i == 4 ? 9 : 1;
    uv_loop_t loop;
    int r = run_credits(jobs, 5, 1, 2, &loop, NULL, 0);
    unsetenv("VL3_FAKE_WORKER_LOG");
    unsetenv("VL3_FAKE_WORKER_CREDITS");
    unsetenv("VL3_FAKE_WORKER_DELAY_MS");
    ASSERT_OK(r);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(jobs[i].done, 1);
    ASSERT_EQ(max_running, 2);
    char *text = NULL;
    size_t len = 0;
    ASSERT_OK(vl3_file_read(log, 1 << 20, &text, &len, NULL));
    /* lines "pid job attempt", in the order the worker took them */
    char first[2][16] = {"", ""};
    const char *p = text;
    for (int k = 0; k < 2 && p && *p; k++) {
        int pid;
        if (sscanf(p, "%d %15s", &pid, first[k]) != 2)
            break;
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    free(text);
    if (strcmp(first[0], "h") != 0 && strcmp(first[1], "h") != 0)
        TEST__FAIL("first jobs taken: %s %s, want h among them", first[0], first[1]);
    return 0;
}
