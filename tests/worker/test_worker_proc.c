/* test_worker_proc.c: the real vl3-worker process on a tiny random model and generated clips,
 * driven over its stdin/stdout exactly as vl3d drives it.
 *
 * Checked: HELLO first, PING answered while idle and while busy, EOF -> exit 0 after answering;
 * a path outside the media roots and a corrupt file fail their job only (ERROR "input" /
 * "decode", not retryable) and the next job is served; a broken frame -> ERROR without job id
 * and exit 70; jobs beyond jobs.max_queued are refused with a retryable "resource" error;
 * windows of one job and of concurrent jobs share vision-encoder calls (batch sizes in the log
 * and in RESULT stats); with the engine's LLM present, concurrent jobs give the same answers as
 * the same jobs run one at a time, and their decode steps are batched. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "vl3/proto.h"
#include "vl3/util.h"

static char dir[1024];  /* shared fixtures: model, clips */
static char conf_path[1200], log_path[1200];

static int fixtures(void)
{
    snprintf(dir, sizeof(dir), "%s/worker-test", test_build_dir());
    char ready[1100];
    snprintf(ready, sizeof(ready), "%s/ready", dir);
    if (access(ready, F_OK) == 0)
        return 0;
    const char *tmp = test_tmpdir();
    int r = test_sh(NULL, 0,
                    "set -e; d='%s/fx'; mkdir -p \"$d\"; "
                    "'%s/vl3' model tiny --out \"$d/model\" --seed 7 >/dev/null; "
                    "'%s/tools/gen_sample_video.sh' \"$d/a.mp4\" 4 160x120; "
                    "'%s/tools/gen_sample_video.sh' \"$d/b.mp4\" 6 128x96; "
                    "'%s/tools/gen_sample_video.sh' \"$d/c.mp4\" 3 96x96; "
                    "ffmpeg -v error -f lavfi -i testsrc2=s=150x100 -frames:v 1 \"$d/img.png\"; "
                    "ffmpeg -v error -f lavfi -i smptebars=s=90x120 -frames:v 1 \"$d/img.jpg\"; "
                    "head -c 20000 /dev/urandom > \"$d/corrupt.mp4\"; "
                    "printf '\\0\\0\\0\\x20ftypisom' | cat - \"$d/corrupt.mp4\" > \"$d/bad.mp4\"; "
                    "touch \"$d/ready\"; mv -T \"$d\" '%s' 2>/dev/null || true",
                    tmp, getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".", test_source_dir(),
                    test_source_dir(), test_source_dir(), dir);
    if (r != 0)
        return -1;
    return access(ready, F_OK) == 0 ? 0 : -1;
}

static int write_conf(const char *extra)
{
    snprintf(conf_path, sizeof(conf_path), "%s/worker.conf", test_tmpdir());
    snprintf(log_path, sizeof(log_path), "%s/worker.log", test_tmpdir());
    FILE *f = fopen(conf_path, "w");
    if (!f)
        return -1;
    /* extra: section lines ("[x]\n...") go last, top-level keys before the first section */
    int top = extra && extra[0] != '[';
    fprintf(f, "model = %s/model\nbackend = cpu\nthreads = 1\ndecode_threads = 2\n%s\n"
               "[media]\nroots = %s\n[log]\nlevel = info\n%s\n",
            dir, top ? extra : "", dir, extra && !top ? extra : "");
    fclose(f);
    return 0;
}

struct proc {
    pid_t pid;
    int in, out; /* our ends */
    vl3_proto_reader rd;
};

static int spawn(struct proc *p)
{
    int a[2], b[2];
    if (pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
        return -1;
    char bin[1100];
    snprintf(bin, sizeof(bin), "%s/vl3-worker",
             getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".");
    p->pid = fork();
    if (p->pid == 0) {
        dup2(a[0], 0);
        dup2(b[1], 1);
        int lf = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (lf >= 0)
            dup2(lf, 2);
        execl(bin, bin, "--config", conf_path, (char *)NULL);
        _exit(127);
    }
    close(a[0]);
    close(b[1]);
    p->in = a[1];
    p->out = b[0];
    vl3_proto_reader_init(&p->rd);
    signal(SIGPIPE, SIG_IGN);
    return p->pid > 0 ? 0 : -1;
}

/* next message within ms; 1 got one, 0 timeout, -1 EOF/error */
static int next(struct proc *p, vl3_proto_msg *m, int ms)
{
    for (;;) {
        vl3_proto_frame f;
        vl3_error e = {0};
        int r = vl3_proto_reader_next(&p->rd, &f, &e);
        if (r < 0)
            return -1;
        if (r == 1)
            return vl3_proto_msg_parse(&f, m, &e) < 0 ? -1 : 1;
        struct pollfd pf = {p->out, POLLIN, 0};
        if (poll(&pf, 1, ms) <= 0)
            return 0;
        uint8_t buf[65536];
        ssize_t n = read(p->out, buf, sizeof(buf));
        if (n <= 0)
            return -1;
        if (vl3_proto_reader_feed(&p->rd, buf, (size_t)n) < 0)
            return -1;
    }
}

static int send_raw(struct proc *p, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(p->in, b, n);
        if (w < 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int job_mode = VL3_SAMPLING_EXACT;
static int job_cache = VL3_CACHE_USE;
static double job_fps = 1.0, job_max_frames = 8;

static int send_job_t(struct proc *p, const char *id, const char *input, double window, int kinds,
                      double temperature, int max_new)
{
    struct vl3_proto_job j = {0};
    j.job_id = id;
    j.input = input;
    j.ntasks = 0;
    j.tasks[j.ntasks++] = (struct vl3_proto_task){VL3_TASK_CAPTION, NULL};
    if (kinds > 1)
        j.tasks[j.ntasks++] = (struct vl3_proto_task){VL3_TASK_QA, "What moves?"};
    j.sampling = (struct vl3_proto_sampling){job_fps, (int64_t)job_max_frames, job_mode, window};
    j.max_new_tokens = max_new;
    j.temperature = temperature;
    j.attempt = 1;
    j.cache = job_cache;
    uint8_t *b;
    size_t l;
    if (vl3_proto_encode_job(&j, &b, &l, NULL) < 0)
        return -1;
    int r = send_raw(p, b, l);
    free(b);
    return r;
}

static int send_job(struct proc *p, const char *id, const char *input, double window, int kinds)
{
    return send_job_t(p, id, input, window, kinds, 0, 6);
}

static int wait_exit(struct proc *p, int secs)
{
    for (int i = 0; i < secs * 20; i++) {
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    return -1;
}

static void finish(struct proc *p)
{
    close(p->in);
    close(p->out);
    vl3_proto_reader_deinit(&p->rd);
}

/* Outcome of one job: its answers (task, window) or its error. */
#define MAXA 32
struct outcome {
    int got_done, got_error, err_code, err_retry;
    char err_msg[512];
    int n;
    int task[MAXA], window[MAXA];
    char answer[MAXA][512];
    int64_t batch_size[MAXA], vision_windows[MAXA], tokens_kept[MAXA], tokens_total[MAXA];
    int64_t frames_sampled[MAXA];
    double sample_interval[MAXA];
    int cache[MAXA];                 /* stats "cache": 0 absent, 1 miss, 2 hit */
    int64_t frames_decoded[MAXA];
};

static int pongs_busy; /* PONGs naming a job in progress */

/* Read frames until every job in ids[n] has ended; pings are answered inline by the worker,
 * other frames (progress) are ignored. */
static int collect(struct proc *p, const char **ids, int n, struct outcome *out, int secs)
{
    int left = n;
    double deadline = time(NULL) + secs;
    while (left > 0 && time(NULL) < deadline) {
        vl3_proto_msg m;
        int r = next(p, &m, 1000);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        const char *jid = m.type == VL3_PROTO_RESULT ? m.u.result.job_id
                          : m.type == VL3_PROTO_DONE ? m.u.done.job_id
                          : m.type == VL3_PROTO_ERROR ? m.u.error.job_id : NULL;
        if (m.type == VL3_PROTO_PONG && m.u.pong.job_id)
            pongs_busy++;
        int k = -1;
        for (int i = 0; jid && i < n; i++)
            if (strcmp(ids[i], jid) == 0)
                k = i;
        if (k >= 0) {
            struct outcome *o = &out[k];
            if (m.type == VL3_PROTO_RESULT && o->n < MAXA) {
                o->task[o->n] = (int)m.u.result.task;
                o->window[o->n] = (int)m.u.result.window;
                snprintf(o->answer[o->n], sizeof(o->answer[0]), "%s", m.u.result.answer);
                o->batch_size[o->n] = m.u.result.stats.batch_size;
                o->frames_sampled[o->n] = m.u.result.stats.frames_sampled;
                o->sample_interval[o->n] = m.u.result.stats.sample_interval_s;
                o->cache[o->n] = m.u.result.stats.cache;
                o->frames_decoded[o->n] = m.u.result.stats.frames_decoded;
                json_t *st = json_object_get(m.root, "stats");
                o->vision_windows[o->n] = json_integer_value(json_object_get(st, "vision_batch_windows"));
                o->tokens_kept[o->n] = json_integer_value(json_object_get(st, "tokens_kept"));
                o->tokens_total[o->n] = json_integer_value(json_object_get(st, "tokens_total"));
                o->n++;
            } else if (m.type == VL3_PROTO_DONE) {
                o->got_done = 1;
                left--;
            } else if (m.type == VL3_PROTO_ERROR) {
                o->got_error = 1;
                o->err_code = m.u.error.code;
                o->err_retry = m.u.error.retryable;
                snprintf(o->err_msg, sizeof(o->err_msg), "%s", m.u.error.message);
                left--;
            }
        }
        vl3_proto_msg_free(&m);
    }
    return left == 0 ? 0 : -1;
}

static int start(struct proc *p, const char *extra)
{
    if (fixtures() < 0 || write_conf(extra) < 0 || spawn(p) < 0)
        return -1;
    vl3_proto_msg m;
    if (next(p, &m, 60000) != 1)
        return -1;
    int ok = m.type == VL3_PROTO_HELLO && m.u.hello.proto >= 1 && m.u.hello.credits >= 1;
    vl3_proto_msg_free(&m);
    return ok ? 0 : -1;
}

/* Whether the worker could answer (an LLM in this build): a valid job either answers or fails
 * with "unsupported" naming the language model. */
static int llm_missing(const struct outcome *o)
{
    return o->got_error && o->err_code == VL3_PERR_UNSUPPORTED && strstr(o->err_msg, "language model");
}

static int log_has(const char *needle)
{
    return test_sh(NULL, 0, "grep -q -- '%s' '%s'", needle, log_path) == 0;
}

/* Start a throwaway PostgreSQL in directory pg (tests/harness/pg-harness) and migrate it; *ci
 * its conninfo. Returns 0, or -1 when the server did not start; *ret_migrate: the migration's
 * exit status (tests check it once they have stopped the server again). */
static int cache_pg_start(const char *pg, char *ci, size_t ci_len, int *ret_migrate)
{
    char port[32] = "";
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    if (test_sh(port, sizeof(port), "'%s/tests/harness/pg-harness' start '%s' >/dev/null 2>&1 "
                "&& cat '%s/port'", test_source_dir(), pg, pg) != 0)
        return -1;
    port[strcspn(port, "\n")] = '\0';
    snprintf(ci, ci_len, "host=%s port=%s dbname=vl3 user=postgres", pg, port);
    *ret_migrate = test_sh(NULL, 0, "'%s/vl3' db migrate --conninfo '%s' --schema-dir "
                           "'%s/schema' >/dev/null", bin, ci, test_source_dir());
    return 0;
}

static void path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

TEST(proc_hello_ping_eof)
{
    struct proc p;
    ASSERT_OK(start(&p, NULL));
    struct vl3_proto_ping ping = {42};
    uint8_t *b;
    size_t l;
    ASSERT_OK(vl3_proto_encode_ping(&ping, &b, &l, NULL));
    ASSERT_OK(send_raw(&p, b, l));
    free(b);
    vl3_proto_msg m;
    ASSERT_EQ(next(&p, &m, 10000), 1);
    ASSERT_EQ(m.type, VL3_PROTO_PONG);
    ASSERT_EQ(m.u.pong.seq, 42);
    ASSERT(m.u.pong.job_id == NULL);
    vl3_proto_msg_free(&m);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 20), 0);
    ASSERT_EQ(next(&p, &m, 100), -1); /* nothing more, EOF */
    finish(&p);
    return 0;
}

TEST(proc_errors_keep_serving)
{
    struct proc p;
    ASSERT_OK(start(&p, NULL));
    char bad[1200], corrupt[1200], good[1200];
    path(bad, sizeof(bad), "bad.mp4");
    path(corrupt, sizeof(corrupt), "corrupt.mp4");
    path(good, sizeof(good), "a.mp4");
    const char *ids[4] = {"outside", "bad", "corrupt", "good"};
    ASSERT_OK(send_job(&p, "outside", "/etc/hostname", 0, 1));
    ASSERT_OK(send_job(&p, "bad", bad, 0, 1));
    ASSERT_OK(send_job(&p, "corrupt", corrupt, 0, 1));
    ASSERT_OK(send_job(&p, "good", good, 0, 2));
    static struct outcome o[4];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 4, o, 120));
    ASSERT(o[0].got_error && o[0].err_code == VL3_PERR_INPUT && !o[0].err_retry);
    ASSERT_STR_CONTAINS(o[0].err_msg, "/etc/hostname");
    for (int i = 1; i <= 2; i++) {
        ASSERT(o[i].got_error);
        ASSERT(o[i].err_code == VL3_PERR_DECODE || o[i].err_code == VL3_PERR_INPUT);
        ASSERT(!o[i].err_retry);
    }
    if (llm_missing(&o[3])) {
        fprintf(stderr, "note: no LLM in this build; the good job failed after vision: %s\n",
                o[3].err_msg);
        ASSERT(log_has("vision batch windows="));
    } else {
        ASSERT(o[3].got_done);
        ASSERT_EQ(o[3].n, 2); /* caption + qa, one window */
        ASSERT_GT(o[3].tokens_total[0], 0);
        ASSERT_LE(o[3].tokens_kept[0], o[3].tokens_total[0]);
    }
    /* still serving after the failures */
    const char *id2[1] = {"again"};
    ASSERT_OK(send_job(&p, "again", good, 0, 1));
    static struct outcome o2[1];
    memset(o2, 0, sizeof(o2));
    ASSERT_OK(collect(&p, id2, 1, o2, 60));
    ASSERT(o2[0].got_done || llm_missing(&o2[0]));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

TEST(proc_protocol_violation_exits_70)
{
    struct proc p;
    ASSERT_OK(start(&p, NULL));
    const uint8_t junk[8] = {'X', 1, 2, 0, 0, 0, 0, 0};
    ASSERT_OK(send_raw(&p, junk, sizeof(junk)));
    vl3_proto_msg m;
    ASSERT_EQ(next(&p, &m, 10000), 1);
    ASSERT_EQ(m.type, VL3_PROTO_ERROR);
    ASSERT(m.u.error.job_id == NULL);
    ASSERT_EQ(m.u.error.code, VL3_PERR_PROTOCOL);
    ASSERT_STR_CONTAINS(m.u.error.message, "magic");
    vl3_proto_msg_free(&m);
    ASSERT_EQ(wait_exit(&p, 20), 70);
    finish(&p);
    return 0;
}

TEST(proc_busy_refused_retryable)
{
    struct proc p;
    ASSERT_OK(start(&p, "[jobs]\nmax_queued = 1"));
    char a[1200];
    path(a, sizeof(a), "b.mp4");
    /* both frames in one write: the second arrives while the first is decoding */
    ASSERT_OK(send_job(&p, "first", a, 0, 1));
    ASSERT_OK(send_job(&p, "second", a, 0, 1));
    struct vl3_proto_ping ping = {9};
    uint8_t *pb;
    size_t pl;
    ASSERT_OK(vl3_proto_encode_ping(&ping, &pb, &pl, NULL));
    ASSERT_OK(send_raw(&p, pb, pl)); /* answered at once, naming the job in progress */
    free(pb);
    pongs_busy = 0;
    const char *ids[2] = {"first", "second"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    ASSERT(o[1].got_error);
    ASSERT_EQ(o[1].err_code, VL3_PERR_RESOURCE);
    ASSERT_EQ(o[1].err_retry, 1);
    ASSERT(o[0].got_done || llm_missing(&o[0]));
    ASSERT_EQ(pongs_busy, 1);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* Three jobs (one with two windows) sent together: their windows share vision calls. */
TEST(proc_concurrent_jobs_share_vision_batches)
{
    struct proc p;
    ASSERT_OK(start(&p, "[batch]\nvision_wait = 500ms\nvision_frames = 64\nmax_sequences = 8"));
    char a[1200], b[1200], c[1200];
    path(a, sizeof(a), "a.mp4");
    path(b, sizeof(b), "b.mp4");
    path(c, sizeof(c), "c.mp4");
    ASSERT_OK(send_job(&p, "ja", a, 0, 2));
    ASSERT_OK(send_job(&p, "jb", b, 3.0, 2));
    ASSERT_OK(send_job(&p, "jc", c, 0, 2));
    const char *ids[3] = {"ja", "jb", "jc"};
    static struct outcome o[3];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 3, o, 180));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    /* the log shows encoder calls over several windows (4 windows in all, 2 decode threads) */
    ASSERT_EQ(test_sh(NULL, 0, "grep -Eq 'vision batch windows=([2-9]|[1-9][0-9])' '%s'",
                      log_path), 0);
    if (llm_missing(&o[0]))
        return 0;
    for (int i = 0; i < 3; i++)
        ASSERT(o[i].got_done);
    ASSERT_EQ(o[1].n, 4); /* 2 tasks x 2 windows */
    int64_t vis = 0, dec = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < o[i].n; k++) {
            vis = o[i].vision_windows[k] > vis ? o[i].vision_windows[k] : vis;
            dec = o[i].batch_size[k] > dec ? o[i].batch_size[k] : dec;
        }
    ASSERT_GT(vis, 1);
    ASSERT_GT(dec, 1);
    return 0;
}

/* What `vl3 run --model <fixture model> ARGS...` prints (stderr dropped), without the newline
 * that ends its answer, into out[size]. Returns test_sh's exit status. */
static int vl3_run_answer(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int vl3_run_answer(char *out, size_t size, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    int r = test_sh(out, size, "'%s/vl3' run --model '%s/model' %s 2>/dev/null", bin, dir, args);
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n')
        out[n - 1] = 0;
    return r;
}

static int find_answer(const struct outcome *o, int task, int window, const char **ret)
{
    for (int i = 0; i < o->n; i++)
        if (o->task[i] == task && o->window[i] == window) {
            *ret = o->answer[i];
            return 0;
        }
    return -1;
}

/* The same jobs run concurrently (batched) and one at a time give the same greedy answers. */
TEST(proc_batched_answers_equal_serial)
{
    char a[1200], b[1200], c[1200];
    static struct outcome con[3], ser[3];
    memset(con, 0, sizeof(con));
    memset(ser, 0, sizeof(ser));
    const char *ids[3] = {"ja", "jb", "jc"};
    struct proc p;
    ASSERT_OK(start(&p, "[batch]\nvision_wait = 500ms\nmax_sequences = 8"));
    path(a, sizeof(a), "a.mp4");
    path(b, sizeof(b), "b.mp4");
    path(c, sizeof(c), "c.mp4");
    const char *in[3] = {a, b, c};
    double win[3] = {0, 3.0, 0};
    for (int i = 0; i < 3; i++)
        ASSERT_OK(send_job_t(&p, ids[i], in[i], win[i], 2, 0.8, 12));
    ASSERT_OK(collect(&p, ids, 3, con, 180));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    if (llm_missing(&con[0]))
        SKIP("this build has no language model: %s", con[0].err_msg);
    /* the two tasks of a window shared their common prompt prefix (visual rows included) */
    ASSERT(log_has("shared_tokens=[1-9]"));
    ASSERT_OK(start(&p, "[batch]\nvision_wait = 0\nmax_sequences = 1\nvision_frames = 1"));
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(send_job_t(&p, ids[i], in[i], win[i], 2, 0.8, 12));
        ASSERT_OK(collect(&p, &ids[i], 1, &ser[i], 180));
    }
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    for (int i = 0; i < 3; i++) {
        ASSERT(con[i].got_done && ser[i].got_done);
        ASSERT_EQ(con[i].n, ser[i].n);
        for (int k = 0; k < ser[i].n; k++) {
            const char *x;
            ASSERT_EQ(ser[i].batch_size[k], 1);
            ASSERT_OK(find_answer(&con[i], ser[i].task[k], ser[i].window[k], &x));
            ASSERT_STR_EQ(x, ser[i].answer[k]);
        }
    }
    /* sampled answers differ between jobs, so equality above is not trivial */
    ASSERT(strcmp(ser[0].answer[0], ser[2].answer[0]) != 0);
    return 0;
}

/* A job's answer equals `vl3 run` on the same video: greedy, and sampling with one seed. */
TEST(proc_answer_equals_vl3_run)
{
    struct proc p;
    ASSERT_OK(start(&p, "[generate]\nseed = 5"));
    char a[1200], b[1200];
    path(a, sizeof(a), "a.mp4");
    path(b, sizeof(b), "b.mp4");
    const char *ids[3] = {"greedy", "sampled", "windows"};
    static struct outcome o[3];
    memset(o, 0, sizeof(o));
    ASSERT_OK(send_job_t(&p, "greedy", a, 0, 1, 0, 10));
    ASSERT_OK(send_job_t(&p, "sampled", a, 0, 1, 0.8, 16));
    ASSERT_OK(send_job_t(&p, "windows", b, 3.0, 1, 0.8, 8));
    ASSERT_OK(collect(&p, ids, 3, o, 180));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done && o[1].got_done);
    ASSERT_EQ(o[0].n, 1);
    ASSERT_EQ(o[1].n, 1);
    static char want[2][8192];
    const char *args[2] = {"--greedy --max-new-tokens 10",
                           "--temperature 0.8 --seed 5 --max-new-tokens 16"};
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(vl3_run_answer(want[i], sizeof(want[i]),
                                 "--video '%s' --fps 1 --max-frames 8 --task caption %s", a,
                                 args[i]), 0);
        ASSERT_STR_EQ(o[i].answer[0], want[i]);
    }
    /* the sampled answer is real text, not only the whitespace greedy collapses to here */
    ASSERT_LT(strspn(o[1].answer[0], " \t\n"), strlen(o[1].answer[0]));
    /* each window of a windowed job = `vl3 run --window W --window-index k` */
    ASSERT(o[2].got_done);
    ASSERT_EQ(o[2].n, 2);
    for (int k = 0; k < 2; k++) {
        static char wa[8192];
        const char *got;
        ASSERT_OK(find_answer(&o[2], 0, k, &got));
        ASSERT_EQ(vl3_run_answer(wa, sizeof(wa),
                                 "--video '%s' --fps 1 --max-frames 8 --window 3 --window-index %d "
                                 "--task caption --temperature 0.8 --seed 5 --max-new-tokens 8",
                                 b, k), 0);
        ASSERT_STR_EQ(got, wa);
    }
    return 0;
}

/* CLI == worker by construction (both run worker/src/pipeline.c): a windowed video job's windows
 * and an image job give the same visual tokens, byte for byte as the token cache stores them,
 * as `vl3 run --dump` makes them alone (visual_tokens.vtok), and the same greedy answers, in f32
 * and in bf16 precision (bf16 rows there). The worker encodes one window per encoder call here
 * (batch.vision_frames = 1), as vl3 run does, and both use one thread (threads = 1, --threads 1:
 * OpenBLAS rounds differently with another thread count); the worker's entries are found
 * through the keys vl3 run computes (its --cache run hits). */
static int visual_tokens_equal(const char *prec)
{
    char pg[1100], ci[1400], extra[1600];
    snprintf(pg, sizeof(pg), "%s/tcpg4%s", test_tmpdir(), prec);
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    if (fixtures() < 0)
        return 1;
    if (test_sh(NULL, 0, "psql --version >/dev/null 2>&1") != 0)
        SKIP("psql is not available");
    int rc;
    ASSERT_OK(cache_pg_start(pg, ci, sizeof(ci), &rc));
    snprintf(extra, sizeof(extra), "[batch]\nvision_frames = 1\n[cache]\nconninfo = %s", ci);
    char b[1200], img[1200];
    path(b, sizeof(b), "b.mp4");
    path(img, sizeof(img), "img.png");
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    const char *ids[2] = {"win", "img"};
    struct proc p;
    /* the precision of the worker (VL3_PRECISION wins over its option) and of vl3 run */
    char *old_prec = getenv("VL3_PRECISION") ? strdup(getenv("VL3_PRECISION")) : NULL;
    setenv("VL3_PRECISION", prec, 1);
    int ok = rc == 0 && start(&p, extra) == 0;
    if (ok) {
        ok = send_job_t(&p, "win", b, 3.0, 1, 0, 6) == 0 &&
             send_job_t(&p, "img", img, 0, 1, 0, 6) == 0 && collect(&p, ids, 2, o, 180) == 0;
        close(p.in);
        ok = wait_exit(&p, 30) == 0 && ok;
        finish(&p);
    }
    /* vl3 run alone (cold, no cache) and with the cache (a hit on the worker's entry: its key) */
    struct {
        const char *name, *opt, *input, *more;
        int job, window;
    } cases[3] = {
        {"w0", "--video", b, "--fps 1 --max-frames 8 --window 3 --window-index 0", 0, 0},
        {"w1", "--video", b, "--fps 1 --max-frames 8 --window 3 --window-index 1", 0, 1},
        {"im", "--image", img, "", 1, 0},
    };
    static char answers[3][8192], hits[3][1200], cold_md5[3][64], entry_md5[3][64];
    int run_rc[3] = {-1, -1, -1};
    for (int i = 0; ok && i < 3; i++) {
        char args[2048], d0[1200], d1[1200], key[64] = "";
        snprintf(args, sizeof(args), "%s '%s' %s", cases[i].opt, cases[i].input, cases[i].more);
        snprintf(d0, sizeof(d0), "%s/vt_%s_%s_cold", dir, prec, cases[i].name);
        snprintf(d1, sizeof(d1), "%s/vt_%s_%s_hit", dir, prec, cases[i].name);
        run_rc[i] = vl3_run_answer(answers[i], sizeof(answers[i]),
                                   "%s --task caption --greedy --max-new-tokens 6 --threads 1 "
                                   "--dump '%s'", args, d0);
        if (run_rc[i] == 0)
            run_rc[i] = test_sh(NULL, 0, "'%s/vl3' run --model '%s/model' %s --task caption "
                                "--greedy --max-new-tokens 6 --threads 1 --cache '%s' --dump "
                                "'%s' >/dev/null 2>&1", bin, dir, args, ci, d1);
        test_sh(hits[i], sizeof(hits[i]), "grep -o '\"cache\": \"[a-z]*\"' '%s/meta.json'", d1);
        test_sh(key, sizeof(key), "grep -o '\"cache_key\": \"[0-9a-f]*\"' '%s/meta.json' | "
                "cut -d'\"' -f4", d1);
        key[strcspn(key, "\n")] = '\0';
        test_sh(cold_md5[i], sizeof(cold_md5[i]), "md5sum < '%s/visual_tokens.vtok' | cut -c1-32",
                d0);
        /* the worker's entry, kept beside the dumps for a look when they differ */
        test_sh(NULL, 0, "psql -Atqc \"SELECT encode(string_agg(data, ''::bytea ORDER BY seq), "
                "'hex') FROM token_cache_chunks WHERE key = '%s'\" '%s' > '%s/worker.vtok.hex'",
                key, ci, d1);
        test_sh(entry_md5[i], sizeof(entry_md5[i]), "psql -Atqc \"SELECT md5(string_agg(data, "
                "''::bytea ORDER BY seq)) FROM token_cache_chunks WHERE key = '%s'\" '%s'", key,
                ci);
    }
    if (old_prec)
        setenv("VL3_PRECISION", old_prec, 1);
    else
        unsetenv("VL3_PRECISION");
    free(old_prec);
    test_sh(NULL, 0, "'%s/tests/harness/pg-harness' stop '%s' >/dev/null 2>&1", test_source_dir(),
            pg);
    ASSERT_EQ(rc, 0);
    ASSERT(ok);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done && o[1].got_done);
    ASSERT_EQ(o[0].n, 2);
    ASSERT_EQ(o[1].n, 1);
    for (int i = 0; i < 3; i++) {
        const char *got;
        ASSERT_EQ(run_rc[i], 0);
        ASSERT_STR_CONTAINS(hits[i], "\"hit\"");
        ASSERT_EQ(strlen(cold_md5[i]), 33); /* 32 hex digits and a newline */
        if (strcmp(entry_md5[i], cold_md5[i]) != 0)
            TEST__FAIL("case %s: the worker's entry differs from vl3 run's visual tokens",
                       cases[i].name);
        ASSERT_OK(find_answer(&o[cases[i].job], 0, cases[i].window, &got));
        ASSERT_STR_EQ(got, answers[i]);
    }
    /* the three windows' tokens differ from each other (the comparison can fail) */
    ASSERT(strcmp(cold_md5[0], cold_md5[1]) != 0 && strcmp(cold_md5[0], cold_md5[2]) != 0);
    /* the rows are held in the precision's dtype: bf16 in bf16 (2 bytes per element) */
    char d[1200], meta[256] = "";
    snprintf(d, sizeof(d), "%s/vt_%s_w0_cold/visual_tokens.vtok", dir, prec);
    ASSERT_EQ(test_sh(meta, sizeof(meta), "od -An -tu4 -j12 -N4 '%s'", d), 0);
    ASSERT_EQ(atoi(meta), strcmp(prec, "bf16") == 0 ? 1 : 0); /* header: u32 dtype at 12 */
    return 0;
}

TEST(proc_visual_tokens_equal_vl3_run_f32) { return visual_tokens_equal("f32"); }
TEST(proc_visual_tokens_equal_vl3_run_bf16) { return visual_tokens_equal("bf16"); }

/* An image job (PNG, JPEG) is answered as `vl3 run --image` answers: one frame, image prompt. */
TEST(proc_image_answer_equals_vl3_run)
{
    struct proc p;
    ASSERT_OK(start(&p, "[generate]\nseed = 5"));
    char png[1200], jpg[1200];
    path(png, sizeof(png), "img.png");
    path(jpg, sizeof(jpg), "img.jpg");
    const char *ids[2] = {"png", "jpg"}, *in[2] = {png, jpg};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    for (int i = 0; i < 2; i++)
        ASSERT_OK(send_job_t(&p, ids[i], in[i], 0, 2, 0.8, 12));
    ASSERT_OK(collect(&p, ids, 2, o, 180));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    static char want[8192];
    for (int i = 0; i < 2; i++) {
        ASSERT(o[i].got_done);
        ASSERT_EQ(o[i].n, 2);
        static const char *const task[2] = {"--task caption", "--task qa --question 'What moves?'"};
        for (int k = 0; k < 2; k++) {
            const char *got;
            ASSERT_OK(find_answer(&o[i], k, 0, &got));
            ASSERT_EQ(vl3_run_answer(want, sizeof(want),
                                     "--image '%s' %s --temperature 0.8 --seed 5 "
                                     "--max-new-tokens 12", in[i], task[k]), 0);
            ASSERT_STR_EQ(got, want);
        }
    }
    ASSERT(strcmp(o[0].answer[0], o[1].answer[0]) != 0);
    return 0;
}

/* vl3 bench cpu, vl3 side only, with TMPDIR=td on model and clip of the fixtures: its exit
 * status, its output in out */
static int bench_cpu_in(const char *td, const char *model, const char *clip, char *out,
                        size_t size)
{
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    return test_sh(out, size,
                   "TMPDIR='%s' '%s/vl3' bench cpu --model '%s/%s' --video '%s/%s' "
                   "--no-transformers --gen-tokens 2 --threads 1 2>&1",
                   td, bin, dir, model, dir, clip);
}

/* vl3 bench cpu (vl3 side only) on the tiny model leaves nothing in TMPDIR: its dumps of a clip
 * are ~100 MB a run; a run that fails before writing anything leaves nothing either. */
TEST(cli_bench_cpu_removes_its_files)
{
    ASSERT_OK(fixtures());
    char td[1200], out[4096];
    snprintf(td, sizeof(td), "%s/bench-tmp", test_tmpdir());
    ASSERT_EQ(test_sh(NULL, 0, "rm -rf '%s' && mkdir -p '%s'", td, td), 0);
    ASSERT_EQ(bench_cpu_in(td, "model", "c.mp4", out, sizeof(out)), 0);
    ASSERT_STR_CONTAINS(out, "decode tok/s");
    ASSERT_EQ(test_sh(out, sizeof(out), "ls -A '%s'", td), 0);
    ASSERT_STR_EQ(out, "");
    ASSERT(bench_cpu_in(td, "no-such-model", "c.mp4", out, sizeof(out)) != 0);
    ASSERT_STR_CONTAINS(out, "could not load");
    ASSERT_EQ(test_sh(out, sizeof(out), "ls -A '%s'", td), 0);
    ASSERT_STR_EQ(out, "");
    /* a vl3 run that fails (a corrupt clip) keeps its output, in TMPDIR */
    ASSERT(bench_cpu_in(td, "model", "bad.mp4", out, sizeof(out)) != 0);
    ASSERT_STR_CONTAINS(out, "files kept in");
    ASSERT_EQ(test_sh(out, sizeof(out), "ls '%s'/vl3-bench-cpu-*/vl3-bf16.out", td), 0);
    return 0;
}

/* vl3 bench llm on the tiny model: after the timed decode, --gen-tokens more tokens in windows
 * of 8, each against the read passes around it; 20 tokens are 3 windows (8, 8, 4), and the
 * median and range of the windows' ratios are positive and ordered. */
TEST(cli_bench_llm_pairs_decode_windows)
{
    ASSERT_OK(fixtures());
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    static char out[8192];
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "'%s/vl3' bench llm --model '%s/model' --prompt-tokens 4 --gen-tokens 20 "
                      "--threads 1 2>&1", bin, dir), 0);
    ASSERT_STR_CONTAINS(out, "of_floor");
    const char *p = strstr(out, "paired decode: ");
    ASSERT(p != NULL);
    int n = 0;
    ASSERT_EQ(sscanf(p, "paired decode: %d windows of up to 8 tokens", &n), 1);
    ASSERT_EQ(n, 3);
    const char *q = strstr(p, "median ");
    ASSERT(q != NULL);
    double med = 0, lo = 0, hi = 0;
    ASSERT_EQ(sscanf(q, "median %lf%% of its own floor (%lf-%lf%%)", &med, &lo, &hi), 3);
    ASSERT(lo > 0 && lo <= med && med <= hi);
    return 0;
}

/* vl3d (Kafka mock + PostgreSQL) drives this worker end to end (tests/worker/test_worker_e2e.sh). */
TEST(e2e_daemon_drives_real_worker)
{
    if (test_sh(NULL, 0, "command -v kcat >/dev/null && command -v psql >/dev/null") != 0)
        SKIP("kcat or psql missing");
    ASSERT_OK(fixtures());
    int r = test_sh(NULL, 0, "'%s/tests/worker/test_worker_e2e.sh' '%s' '%s' '%s' 1>&2",
                    test_source_dir(), test_build_dir(), test_source_dir(), dir);
    ASSERT_EQ(r, 0);
    return 0;
}

/* A job whose frames could never fit memory_budget is refused; the worker keeps serving. */
TEST(proc_memory_budget_refuses_oversized)
{
    struct proc p;
    ASSERT_OK(start(&p, "memory_budget = 1M"));
    char big[1200], small[1200];
    path(big, sizeof(big), "a.mp4");   /* 160x120: ~1.7 MB of frames and pixel values */
    path(small, sizeof(small), "c.mp4"); /* 96x96, 3 s: under 1 MB */
    const char *ids[2] = {"big", "small"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    ASSERT_OK(send_job(&p, "big", big, 0, 1));
    ASSERT_OK(send_job(&p, "small", small, 0, 1));
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    ASSERT(o[0].got_error);
    ASSERT_STR_CONTAINS(o[0].err_msg, "memory_budget");
    ASSERT_EQ(o[0].err_retry, 0);
    ASSERT(o[1].got_done || llm_missing(&o[1]));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* media.max_frames bounds the frames of a whole job (all windows together): b.mp4 (6 s) in
 * 3-s windows keeps 3 + 3 frames, each window under the limit of 5 but not the job, so it is
 * refused (not retryable, the reason names the counts) before decoding; a.mp4 (4 s) as one window
 * keeps 4 and is answered, each result saying how many frames it saw and how far apart. */
TEST(proc_max_frames_per_job)
{
    struct proc p;
    ASSERT_OK(start(&p, "[media]\nmax_frames = 5"));
    char over[1200], under[1200];
    path(over, sizeof(over), "b.mp4");
    path(under, sizeof(under), "a.mp4");
    const char *ids[2] = {"over", "under"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    ASSERT_OK(send_job(&p, "over", over, 3.0, 1));
    ASSERT_OK(send_job(&p, "under", under, 0, 1));
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    ASSERT(o[0].got_error);
    ASSERT_EQ(o[0].err_code, VL3_PERR_INPUT);
    ASSERT_EQ(o[0].err_retry, 0);
    ASSERT_STR_CONTAINS(o[0].err_msg, "6 frames in 2 windows");
    ASSERT_STR_CONTAINS(o[0].err_msg, "media.max_frames");
    ASSERT(o[1].got_done || llm_missing(&o[1]));
    if (o[1].got_done) {
        ASSERT_EQ(o[1].n, 1);
        ASSERT_EQ(o[1].frames_sampled[0], 4);
        ASSERT_NEAR(o[1].sample_interval[0], 1.0, 1e-9);
    }
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* Fast sampling (keyframe seeks, loop filter skipped on unseen frames: pixels may differ
 * slightly from exact) through the whole worker: each answer equals `vl3 run --sampling fast`
 * on the same window, and the frame counts match the exact job's. */
TEST(proc_fast_sampling_equals_vl3_run)
{
    struct proc p;
    ASSERT_OK(start(&p, "[generate]\nseed = 3"));
    char b[1200];
    path(b, sizeof(b), "b.mp4");
    const char *ids[2] = {"exact", "fast"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    job_mode = VL3_SAMPLING_EXACT;
    ASSERT_OK(send_job_t(&p, "exact", b, 3.0, 2, 0.8, 10));
    job_mode = VL3_SAMPLING_FAST;
    ASSERT_OK(send_job_t(&p, "fast", b, 3.0, 2, 0.8, 10));
    job_mode = VL3_SAMPLING_EXACT;
    ASSERT_OK(collect(&p, ids, 2, o, 180));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done && o[1].got_done);
    ASSERT_EQ(o[0].n, 4);
    ASSERT_EQ(o[1].n, 4);
    for (int k = 0; k < 4; k++) {
        const char *x;
        ASSERT_OK(find_answer(&o[0], o[1].task[k], o[1].window[k], &x));
        ASSERT_EQ(o[1].tokens_total[k], o[0].tokens_total[k]); /* same frames, same sizes */
        static char want[8192];
        ASSERT_EQ(vl3_run_answer(want, sizeof(want),
                                 "--video '%s' --fps 1 --max-frames 8 --sampling fast --window 3 "
                                 "--window-index %d %s --temperature 0.8 --seed 3 "
                                 "--max-new-tokens 10", b, o[1].window[k],
                                 o[1].task[k] == 0 ? "--task caption"
                                                   : "--task qa --question 'What moves?'"), 0);
        ASSERT_STR_EQ(o[1].answer[k], want);
    }
    return 0;
}

/* --check-config validates the worker's options and cites file:line and the option. */
TEST(proc_check_config)
{
    ASSERT_OK(fixtures());
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    char out[4096];
    snprintf(conf_path, sizeof(conf_path), "%s/bad.conf", test_tmpdir());
    FILE *f = fopen(conf_path, "w");
    ASSERT(f != NULL);
    fprintf(f, "model = %s/model\n[batch]\nmax_sequences = 0\n", dir);
    fclose(f);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3-worker' --check-config -c '%s' 2>&1", bin,
                      conf_path), 1);
    ASSERT_STR_CONTAINS(out, "bad.conf:3");
    ASSERT_STR_CONTAINS(out, "max_sequences");
    f = fopen(conf_path, "w");
    ASSERT(f != NULL);
    fprintf(f, "model = %s/model\n[batch]\nmax_sequences = 4\nvision_wait = 5ms\n"
               "[task]\ncaption = Summarise this {media}.\n", dir);
    fclose(f);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3-worker' --check-config -c '%s' 2>&1", bin,
                      conf_path), 0);
    ASSERT_STR_CONTAINS(out, "is valid");
    /* vl3d's --backend / --device per slot are checked too */
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3-worker' --backend cpu --device 3 --check-config "
                      "-c '%s' 2>&1", bin, conf_path), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3-worker' --backend tpu --check-config -c '%s' "
                      "2>&1", bin, conf_path), 1);
    ASSERT_STR_CONTAINS(out, "invalid backend \"tpu\" (--backend)");
    ASSERT_EQ(test_sh(out, sizeof(out), "'%s/vl3-worker' --device x1 --check-config -c '%s' "
                      "2>&1", bin, conf_path), 1);
    ASSERT_STR_CONTAINS(out, "invalid device");
    return 0;
}

/* SIGTERM drains: the accepted job is still answered, a later one refused, then exit 0 while
 * stdin is still open (systemd signals vl3d's whole control group during its drain). */
TEST(proc_sigterm_drains)
{
    struct proc p;
    ASSERT_OK(start(&p, NULL));
    char a[1200];
    path(a, sizeof(a), "a.mp4");
    ASSERT_OK(send_job_t(&p, "before", a, 0, 2, 0.8, 24));
    struct vl3_proto_ping ping = {1};
    uint8_t *pb;
    size_t pl;
    ASSERT_OK(vl3_proto_encode_ping(&ping, &pb, &pl, NULL));
    ASSERT_OK(send_raw(&p, pb, pl));
    free(pb);
    vl3_proto_msg m;
    int busy = 0;
    for (;;) { /* the PONG names the job: it is in progress when the signal comes */
        ASSERT_EQ(next(&p, &m, 10000), 1);
        int t = m.type;
        if (t == VL3_PROTO_PONG)
            busy = m.u.pong.job_id && strcmp(m.u.pong.job_id, "before") == 0;
        vl3_proto_msg_free(&m);
        if (t == VL3_PROTO_PONG)
            break;
    }
    ASSERT(busy);
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    usleep(20000);
    ASSERT_OK(send_job(&p, "after", a, 0, 1));
    const char *ids[2] = {"before", "after"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    ASSERT(o[0].got_done || llm_missing(&o[0]));
    ASSERT(o[1].got_error);
    ASSERT_EQ(o[1].err_code, VL3_PERR_RESOURCE);
    ASSERT_EQ(o[1].err_retry, 1);
    ASSERT_STR_CONTAINS(o[1].err_msg, "stopping");
    ASSERT_EQ(wait_exit(&p, 30), 0); /* stdin still open */
    finish(&p);
    return 0;
}

/* A worker does not outlive its parent (issue 14 item 10): a shell starts it with a FIFO as its
 * stdin (held open by the test, so the worker sees no EOF) and is then killed with SIGKILL; the
 * worker must be gone within 3 s instead of idling (or computing) on. */
TEST(proc_dies_with_parent)
{
    if (fixtures() < 0 || write_conf(NULL) < 0)
        return 1;
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    char fifo[1200], pidf[1200];
    snprintf(fifo, sizeof(fifo), "%s/stdin.fifo", test_tmpdir());
    snprintf(pidf, sizeof(pidf), "%s/worker.pid", test_tmpdir());
    ASSERT(mkfifo(fifo, 0600) == 0);
    int keep = open(fifo, O_RDWR | O_CLOEXEC); /* a writer, so the worker never reads EOF */
    ASSERT(keep >= 0);
    pid_t sh = fork();
    ASSERT(sh >= 0);
    if (sh == 0) {
        execl("/bin/sh", "sh", "-c",
              "\"$0\"/vl3-worker --config \"$1\" < \"$2\" > /dev/null 2>> \"$1.log\" & "
              "echo $! > \"$3\"; wait",
              bin, conf_path, fifo, pidf, (char *)NULL);
        _exit(127);
    }
    pid_t w = 0;
    for (int i = 0; i < 100 && w <= 0; i++) { /* the pid file, then a live worker */
        FILE *f = fopen(pidf, "r");
        if (f) {
            if (fscanf(f, "%d", &w) != 1)
                w = 0;
            fclose(f);
        }
        usleep(50000);
    }
    ASSERT(w > 0);
    usleep(500000); /* past its start-up (model load) */
    ASSERT_EQ(kill(w, 0), 0);
    ASSERT_EQ(kill(sh, SIGKILL), 0);
    (void)waitpid(sh, NULL, 0);
    int gone = 0;
    for (int i = 0; i < 30 && !gone; i++) {
        gone = kill(w, 0) < 0 && errno == ESRCH;
        if (!gone) {
            char st[64];
            snprintf(st, sizeof(st), "/proc/%d/stat", (int)w);
            FILE *f = fopen(st, "r"); /* a zombie waiting for init counts as gone */
            char state = 0;
            if (f) {
                if (fscanf(f, "%*d %*s %c", &state) != 1)
                    state = 0;
                fclose(f);
            }
            gone = state == 'Z';
        }
        if (!gone)
            usleep(100000);
    }
    if (!gone)
        kill(w, SIGKILL);
    close(keep);
    ASSERT(gone);
    return 0;
}

/* sampling.window = 0 means one window over the whole input (issue 14 item 12), however long
 * the input: the 4-s clip gives 1 window at window 0 and 2 at window 2 s. */
TEST(proc_window_zero_is_one_window)
{
    struct proc p;
    if (fixtures() < 0 || start(&p, NULL) < 0)
        return 1;
    char a[1200];
    path(a, sizeof(a), "a.mp4");
    ASSERT_OK(send_job(&p, "w-zero", a, 0, 1));
    ASSERT_OK(send_job(&p, "w-unset", a, 2, 1));
    const char *ids[2] = {"w-zero", "w-unset"};
    struct outcome o[2];
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    finish(&p);
    if (llm_missing(&o[0]))
        SKIP("this build has no LLM");
    ASSERT(o[0].got_done && o[1].got_done);
    ASSERT_EQ(o[0].n, 1);
    ASSERT_EQ(o[1].n, 2);
    return 0;
}

/* The worker's peak resident memory in kB (VmHWM), or -1. */
static long vm_hwm_kb(pid_t pid)
{
    char fn[64], line[256];
    snprintf(fn, sizeof(fn), "/proc/%d/status", (int)pid);
    FILE *f = fopen(fn, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Per-job bounds (issue 14 items 1 and 13): the 162-byte job of 25 fps in windows of 0.04 s on a
 * 2-hour clip is refused before decoding (media.max_windows), as is a job sampling more frames
 * in all its windows than media.max_frames; the worker stays small and serves the next job. */
TEST(proc_job_bounds_refused_up_front)
{
    struct proc p;
    if (fixtures() < 0)
        return 1;
    char a[1200], lng[1200];
    path(a, sizeof(a), "a.mp4");
    snprintf(lng, sizeof(lng), "%s/long.mp4", dir);
    if (access(lng, F_OK) != 0)
        ASSERT_EQ(test_sh(NULL, 0, "ffmpeg -v error -y -stream_loop 1799 -i '%s' -c copy "
                          "'%s.tmp.mp4' && mv '%s.tmp.mp4' '%s'", a, lng, lng, lng), 0);
    ASSERT_OK(start(&p, "[media]\nmax_frames = 100\nmax_windows = 1000"));
    job_fps = 25, job_max_frames = 1;
    uint64_t t0 = vl3_time_ns();
    ASSERT_OK(send_job(&p, "hostile", lng, 0.04, 1));
    job_fps = 1, job_max_frames = 8;
    ASSERT_OK(send_job(&p, "too-many-frames", lng, 60, 1)); /* 120 windows x 8 > 100 */
    ASSERT_OK(send_job(&p, "fine", a, 0, 1));
    const char *ids[3] = {"hostile", "too-many-frames", "fine"};
    static struct outcome o[3];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 3, o, 120));
    double secs = (double)(vl3_time_ns() - t0) / 1e9;
    long hwm = vm_hwm_kb(p.pid);
    ASSERT(o[0].got_error && !o[0].err_retry);
    ASSERT_STR_CONTAINS(o[0].err_msg, "media.max_windows");
    ASSERT(o[1].got_error && !o[1].err_retry);
    ASSERT_STR_CONTAINS(o[1].err_msg, "media.max_frames");
    ASSERT(o[2].got_done || llm_missing(&o[2]));
    fprintf(stderr, "refused in %.2f s, worker VmHWM %ld kB\n", secs, hwm);
    ASSERT(secs < 20);
    ASSERT(hwm > 0 && hwm < 400 * 1024);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* A small image that decodes to a huge frame is refused before its frame is allocated (issue 14
 * item 6): an 8000x8000 PNG (a few hundred kB; 192 MB as RGB) against media.max_pixels 1M. The
 * worker's peak memory stays far below one such frame, and the next job is served. */
TEST(proc_image_pixels_checked_before_decode)
{
    struct proc p;
    if (fixtures() < 0)
        return 1;
    char big[1200], img[1200];
    snprintf(big, sizeof(big), "%s/big.png", dir);
    path(img, sizeof(img), "img.png");
    if (access(big, F_OK) != 0)
        ASSERT_EQ(test_sh(NULL, 0, "ffmpeg -v error -y -f lavfi -i color=c=black:s=8000x8000 "
                          "-frames:v 1 '%s.tmp.png' && mv '%s.tmp.png' '%s'", big, big, big), 0);
    ASSERT_OK(start(&p, "[media]\nmax_pixels = 1000000"));
    ASSERT_OK(send_job(&p, "big", big, 0, 1));
    ASSERT_OK(send_job(&p, "small", img, 0, 1));
    const char *ids[2] = {"big", "small"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    ASSERT_OK(collect(&p, ids, 2, o, 120));
    long hwm = vm_hwm_kb(p.pid);
    fprintf(stderr, "big: %s; worker VmHWM %ld kB\n", o[0].err_msg, hwm);
    ASSERT(o[0].got_error && !o[0].err_retry);
    ASSERT_STR_CONTAINS(o[0].err_msg, "max_pixels");
    ASSERT(o[1].got_done || llm_missing(&o[1]));
    ASSERT(hwm > 0 && hwm < 150 * 1024);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* Generate input name in the fixture dir with ffmpeg args ffargs (once; kept between runs). */
static int gen_input(char *buf, size_t n, const char *name, const char *ffargs)
{
    path(buf, n, name);
    if (access(buf, F_OK) == 0)
        return 0;
    return test_sh(NULL, 0, "ffmpeg -v error -y %s '%s.tmp.%s' && mv '%s.tmp.%s' '%s'", ffargs,
                   buf, strrchr(name, '.') + 1, buf, strrchr(name, '.') + 1, buf);
}

/* The "decoded" log line's numbers for job id: budget peak, memory_budget, largest window, all
 * windows' bytes. */
static int decoded_stats(const char *id, long long *peak, long long *total, long long *wmax,
                         long long *wsum)
{
    char out[512];
    if (test_sh(out, sizeof(out), "grep -o 'decoded job=%s .*' '%s' | tail -1", id, log_path) != 0)
        return -1;
    const char *p = strstr(out, "window_bytes_max=");
    if (!p || sscanf(p, "window_bytes_max=%lld window_bytes_sum=%lld budget_peak=%lld "
                        "memory_budget=%lld", wmax, wsum, peak, total) != 4)
        return -1;
    return 0;
}

/* A job of many windows whose pixel values together pass memory_budget several times completes:
 * the decode thread waits for the engine before preparing more, so the budget's peak stays
 * within memory_budget plus one window. */
TEST(proc_windows_stream_through_budget)
{
    struct proc p;
    ASSERT_OK(start(&p, "memory_budget = 3M"));
    char clip[1200];
    ASSERT_OK(gen_input(clip, sizeof(clip), "w30.mp4",
                        "-f lavfi -i testsrc2=s=160x120:r=5 -t 30 -c:v libx264 -pix_fmt yuv420p"));
    const char *ids[1] = {"many"};
    static struct outcome o[1];
    memset(o, 0, sizeof(o));
    ASSERT_OK(send_job(&p, "many", clip, 1.0, 1));
    ASSERT_OK(collect(&p, ids, 1, o, 240));
    ASSERT(o[0].got_done || llm_missing(&o[0]));
    if (o[0].got_done)
        ASSERT(o[0].n >= 25);
    long long peak, total, wmax, wsum;
    ASSERT_OK(decoded_stats("many", &peak, &total, &wmax, &wsum));
    ASSERT_EQ(total, 3 << 20);
    ASSERT(wsum > 2 * total); /* all windows at once would not fit */
    ASSERT(peak <= total + wmax);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* Windows answered from the token cache stream through the budget too: a job whose windows all
 * hit (a second worker, memory_budget 1M, after a first one stored them) reserves each window's
 * rows (before the projector as cached, after it), read only after waiting for room like
 * decoded windows: its "cached" log line shows windows of reserved bytes summing to more than
 * twice the budget and a peak within the budget plus one window; the answers equal the cold
 * ones. Then one window's entry is damaged: the job that finds every entry listed reads the
 * first windows from the cache, fails to read that one, decodes the input after all and
 * computes only it, with the same answers. */
TEST(proc_cached_windows_stream_through_budget)
{
    char pg[1100], ci[1400], extra[1600], clip[1200];
    snprintf(pg, sizeof(pg), "%s/tcpg3", test_tmpdir());
    if (fixtures() < 0)
        return 1;
    ASSERT_OK(gen_input(clip, sizeof(clip), "w30v.mp4",
                        "-f lavfi -i testsrc2=s=320x240:r=6 -t 30 -c:v libx264 -pix_fmt yuv420p"));
    int rc;
    ASSERT_OK(cache_pg_start(pg, ci, sizeof(ci), &rc));
    static struct outcome o[3];
    memset(o, 0, sizeof(o));
    const char *id1[1] = {"fill"}, *id2[1] = {"again"}, *id3[1] = {"damaged"};
    struct proc p;
    int psql_rc = -1;
    job_fps = 3.0;
    snprintf(extra, sizeof(extra), "[cache]\nconninfo = %s", ci);
    int ok1 = rc == 0 && start(&p, extra) == 0;
    if (ok1) {
        ok1 = send_job(&p, "fill", clip, 2.0, 1) == 0 && collect(&p, id1, 1, &o[0], 240) == 0;
        close(p.in);
        ok1 = wait_exit(&p, 30) == 0 && ok1;
        finish(&p);
    }
    snprintf(extra, sizeof(extra), "memory_budget = 1M\n[cache]\nconninfo = %s", ci);
    int ok2 = ok1 && start(&p, extra) == 0;
    if (ok2) {
        ok2 = send_job(&p, "again", clip, 2.0, 1) == 0 && collect(&p, id2, 1, &o[1], 240) == 0;
        close(p.in);
        ok2 = wait_exit(&p, 30) == 0 && ok2;
        finish(&p);
    }
    /* window 3's entry damaged: it exists, but reading it fails (checksum): the all-hit job is
     * decoded after all (a worker with room for the frames), window 3 computed again, the
     * others still read from the cache */
    char upd[32] = "";
    if (ok2) {
        test_sh(upd, sizeof(upd), "psql -Atqc \"WITH u AS (UPDATE token_cache_chunks SET data = "
                "set_byte(data, length(data) - 3, get_byte(data, length(data) - 3) # 16) WHERE "
                "key = (SELECT key FROM token_cache_entries WHERE descr LIKE "
                "'%%media=video;%%;window=3;%%') RETURNING 1) SELECT count(*) FROM u\" '%s'", ci);
        psql_rc = atoi(upd) == 1 ? 0 : -1; /* one chunk row changed */
    }
    snprintf(extra, sizeof(extra), "[cache]\nconninfo = %s", ci);
    int ok3 = ok2 && psql_rc == 0 && start(&p, extra) == 0;
    if (ok3) {
        ok3 = send_job(&p, "damaged", clip, 2.0, 1) == 0 && collect(&p, id3, 1, &o[2], 240) == 0;
        close(p.in);
        ok3 = wait_exit(&p, 30) == 0 && ok3;
        finish(&p);
    }
    job_fps = 1.0;
    char cached[512] = "";
    int log_rc = test_sh(cached, sizeof(cached), "grep -o 'cached job=again .*' '%s' | tail -1",
                         log_path);
    test_sh(NULL, 0, "'%s/tests/harness/pg-harness' stop '%s' >/dev/null 2>&1", test_source_dir(),
            pg);
    ASSERT_EQ(rc, 0);
    ASSERT(ok1);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(ok2);
    ASSERT_EQ(psql_rc, 0);
    ASSERT(ok3);
    ASSERT(o[0].got_done && o[1].got_done && o[2].got_done);
    ASSERT_EQ(o[0].n, 15);
    ASSERT_EQ(o[1].n, 15);
    ASSERT_EQ(o[2].n, 15);
    for (int k = 0; k < o[0].n; k++) {
        const char *x;
        ASSERT_EQ(o[0].cache[k], 1);
        ASSERT_EQ(o[1].cache[k], 2);
        ASSERT_EQ(o[1].frames_decoded[k], 0);
        ASSERT_OK(find_answer(&o[1], o[0].task[k], o[0].window[k], &x));
        ASSERT_STR_EQ(x, o[0].answer[k]);
        ASSERT_OK(find_answer(&o[2], o[0].task[k], o[0].window[k], &x));
        ASSERT_STR_EQ(x, o[0].answer[k]);
    }
    for (int k = 0; k < o[2].n; k++) {
        ASSERT_EQ(o[2].cache[k], o[2].window[k] == 3 ? 1 : 2);
        if (o[2].window[k] == 3) {
            ASSERT_GT(o[2].frames_decoded[k], 0); /* the input was decoded after all */
        }
    }
    ASSERT(log_has("an entry of job=damaged could not be read; decoding the input"));
    ASSERT_EQ(log_rc, 0);
    long long n, wmax, wsum, peak, total;
    ASSERT_EQ(sscanf(cached, "cached job=again windows=%lld window_bytes_max=%lld "
                     "window_bytes_sum=%lld budget_peak=%lld memory_budget=%lld",
                     &n, &wmax, &wsum, &peak, &total), 5);
    printf("cached job: windows %lld, window bytes max %lld sum %lld, peak %lld, budget %lld\n",
           n, wmax, wsum, peak, total);
    ASSERT_EQ(n, 15);
    ASSERT_EQ(total, 1 << 20);
    ASSERT_GT(wmax, 0);              /* the rows are reserved */
    ASSERT(wsum > 2 * total);        /* all windows at once would not fit */
    ASSERT(peak <= total + wmax);
    return 0;
}

/* The worker runs sandboxed: /proc/<pid>/status shows NoNewPrivs 1 and a seccomp filter
 * (Seccomp 2), and socket(AF_INET) inside it fails with EACCES (VL3_TEST_SOCKET hook). */
TEST(proc_sandboxed_no_network)
{
    setenv("VL3_TEST_SOCKET", "1", 1);
    struct proc p;
    int r = start(&p, NULL);
    unsetenv("VL3_TEST_SOCKET");
    ASSERT_OK(r);
    char st[8192] = {0};
    ASSERT_EQ(test_sh(st, sizeof(st), "grep -E '^(NoNewPrivs|Seccomp):' /proc/%d/status",
                      (int)p.pid), 0);
    ASSERT(strstr(st, "NoNewPrivs:\t1") != NULL);
    ASSERT(strstr(st, "Seccomp:\t2") != NULL);
    ASSERT(log_has("VL3_TEST_SOCKET: socket(AF_INET) Permission denied"));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 20), 0);
    finish(&p);
    return 0;
}

/* A job running past jobs.max_wall fails with a reason saying so; its windows are dropped and
 * the worker answers the next job. */
TEST(proc_job_wall_limit)
{
    struct proc p;
    ASSERT_OK(start(&p, "[jobs]\nmax_wall = 1s"));
    char clip[1200], small[1200];
    ASSERT_OK(gen_input(clip, sizeof(clip), "w30.mp4",
                        "-f lavfi -i testsrc2=s=160x120:r=5 -t 30 -c:v libx264 -pix_fmt yuv420p"));
    path(small, sizeof(small), "c.mp4");
    const char *ids[1] = {"slow"};
    static struct outcome o[2];
    memset(o, 0, sizeof(o));
    /* 30 windows x 2 tasks x up to 2000 tokens: far more than a second on the CPU */
    ASSERT_OK(send_job_t(&p, "slow", clip, 1.0, 2, 0, 2000));
    time_t t0 = time(NULL);
    ASSERT_OK(collect(&p, ids, 1, o, 120));
    if (llm_missing(&o[0])) {
        finish(&p);
        return 0;
    }
    ASSERT(o[0].got_error);
    ASSERT_STR_CONTAINS(o[0].err_msg, "exceeded its time limit");
    ASSERT_STR_CONTAINS(o[0].err_msg, "jobs.max_wall");
    ASSERT(time(NULL) - t0 <= 10);
    const char *id2[1] = {"next"};
    ASSERT_OK(send_job(&p, "next", small, 0, 1));
    ASSERT_OK(collect(&p, id2, 1, &o[1], 60));
    ASSERT(o[1].got_done);
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* The token cache (docs/token-cache.md) on a PostgreSQL of the test's own, reached over its
 * Unix-domain socket (the sandbox refuses network sockets): a windowed video job and an image job
 * miss, store, and give answers; the same jobs again hit every window, decode no frame and give
 * the same answers; cache "off" neither reads nor reports; `vl3 run --cache` finds the worker's
 * entries and answers the same; with PostgreSQL stopped a job still answers (its window a miss). */
TEST(proc_token_cache)
{
    char pg[1100], ci[1400], extra[1600];
    snprintf(pg, sizeof(pg), "%s/tcpg", test_tmpdir());
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    if (fixtures() < 0)
        return 1;
    int rc;
    ASSERT_OK(cache_pg_start(pg, ci, sizeof(ci), &rc));
    snprintf(extra, sizeof(extra), "[cache]\nconninfo = %s", ci);
    static struct outcome o[4], o2[4];
    memset(o, 0, sizeof(o));
    memset(o2, 0, sizeof(o2));
    char b[1200], img[1200];
    path(b, sizeof(b), "b.mp4");
    path(img, sizeof(img), "img.png");
    struct proc p;
    int started = rc == 0 && start(&p, extra) == 0;
    const char *ids1[2] = {"w1", "i1"}, *ids2[3] = {"w2", "i2", "off"};
    int ok1 = started && send_job_t(&p, "w1", b, 3.0, 1, 0, 6) == 0 &&
              send_job_t(&p, "i1", img, 0, 1, 0, 6) == 0 && collect(&p, ids1, 2, o, 180) == 0;
    int ok2 = ok1 && send_job_t(&p, "w2", b, 3.0, 1, 0, 6) == 0 &&
              send_job_t(&p, "i2", img, 0, 1, 0, 6) == 0;
    job_cache = VL3_CACHE_OFF;
    ok2 = ok2 && send_job_t(&p, "off", b, 3.0, 1, 0, 6) == 0 && collect(&p, ids2, 3, o2, 180) == 0;
    job_cache = VL3_CACHE_USE;
    char n_entries[32] = "", hit_answer[8192] = "";
    test_sh(n_entries, sizeof(n_entries), "psql -Atqc 'SELECT count(*) FROM "
            "token_cache_entries' '%s' 2>/dev/null || echo psql-missing", ci);
    int run_rc = test_sh(hit_answer, sizeof(hit_answer),
                         "'%s/vl3' run --model '%s/model' --video '%s' --fps 1 --max-frames 8 "
                         "--window 3 --window-index 1 --task caption --greedy --max-new-tokens 6 "
                         "--cache '%s' 2>&1 >/dev/null | grep '^cache:'", bin, dir, b, ci);
    char ans[8192] = "";
    int ans_rc = vl3_run_answer(ans, sizeof(ans), "--video '%s' --fps 1 --max-frames 8 --window 3 "
                                "--window-index 1 --task caption --greedy --max-new-tokens 6 "
                                "--cache '%s'", b, ci);
    /* one window's entry gone: the input is decoded, window 1 still skips the encoder (hit),
     * window 0 is computed again (miss) and stored; then "refresh" recomputes both */
    char deleted[32] = "";
    test_sh(deleted, sizeof(deleted), "psql -Atqc \"WITH d AS (DELETE FROM token_cache_entries "
            "WHERE descr LIKE '%%media=video;%%;window=0;%%' RETURNING 1) SELECT count(*) FROM "
            "d\" '%s'", ci);
    int del_rc = atoi(deleted) == 1 ? 0 : -1;
    static struct outcome op[2];
    memset(op, 0, sizeof(op));
    const char *idp[1] = {"part"}, *idr[1] = {"ref"};
    int okp = ok2 && send_job_t(&p, "part", b, 3.0, 1, 0, 6) == 0 &&
              collect(&p, idp, 1, &op[0], 180) == 0;
    job_cache = VL3_CACHE_REFRESH;
    int okr = okp && send_job_t(&p, "ref", b, 3.0, 1, 0, 6) == 0 &&
              collect(&p, idr, 1, &op[1], 180) == 0;
    job_cache = VL3_CACHE_USE;
    char n_after[32] = "";
    test_sh(n_after, sizeof(n_after), "psql -Atqc 'SELECT count(*) FROM token_cache_entries' "
            "'%s' 2>/dev/null", ci);
    /* PostgreSQL stops: a job still answers (its windows miss and are not stored) */
    test_sh(NULL, 0, "'%s/tests/harness/pg-harness' stop '%s' >/dev/null 2>&1", test_source_dir(),
            pg);
    static struct outcome od[1];
    memset(od, 0, sizeof(od));
    const char *ids3[1] = {"down"};
    char cpath[1200];
    path(cpath, sizeof(cpath), "c.mp4");
    int ok3 = ok2 && send_job_t(&p, "down", cpath, 0, 1, 0, 6) == 0 &&
              collect(&p, ids3, 1, od, 180) == 0;
    int exit_rc = -1;
    if (started) {
        close(p.in);
        exit_rc = wait_exit(&p, 30);
        finish(&p);
    }
    ASSERT_EQ(rc, 0);
    ASSERT(started);
    ASSERT(ok1);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(ok2);
    ASSERT(o[0].got_done && o[1].got_done && o2[0].got_done && o2[1].got_done && o2[2].got_done);
    ASSERT_EQ(o[0].n, 2);
    ASSERT_EQ(o[1].n, 1);
    for (int j = 0; j < 2; j++) {
        ASSERT_EQ(o2[j].n, o[j].n);
        for (int k = 0; k < o[j].n; k++) {
            const char *x;
            ASSERT_EQ(o[j].cache[k], 1);   /* miss */
            ASSERT_EQ(o2[j].cache[k], 2);  /* hit */
            ASSERT_EQ(o2[j].frames_decoded[k], 0);
            ASSERT_OK(find_answer(&o2[j], o[j].task[k], o[j].window[k], &x));
            ASSERT_STR_EQ(x, o[j].answer[k]);
        }
    }
    ASSERT_EQ(o2[2].n, 2);
    ASSERT_EQ(o2[2].cache[0], 0);
    ASSERT_GT(o2[2].frames_decoded[0], 0);
    if (strcmp(n_entries, "psql-missing\n") != 0) {
        ASSERT_EQ(atoi(n_entries), 4); /* 2 windows, their list, the image */
    }
    ASSERT_EQ(run_rc, 0);
    ASSERT_STR_CONTAINS(hit_answer, "cache: hit");
    ASSERT_EQ(ans_rc, 0);
    const char *w1;
    ASSERT_OK(find_answer(&o[0], 0, 1, &w1));
    ASSERT_STR_EQ(ans, w1);
    ASSERT_EQ(del_rc, 0);
    ASSERT(okp && okr);
    ASSERT(op[0].got_done && op[1].got_done);
    ASSERT_EQ(op[0].n, 2);
    ASSERT_EQ(op[1].n, 2);
    for (int k = 0; k < 2; k++) {
        const char *x, *y;
        ASSERT_OK(find_answer(&op[0], 0, k, &x));
        ASSERT_OK(find_answer(&op[1], 0, k, &y));
        ASSERT_OK(find_answer(&o[0], 0, k, &w1));
        ASSERT_STR_EQ(x, w1);
        ASSERT_STR_EQ(y, w1);
        ASSERT_EQ(op[0].cache[op[0].window[0] == k ? 0 : 1], k == 0 ? 1 : 2);
        ASSERT_EQ(op[1].cache[k], 1); /* refresh: computed again */
    }
    ASSERT_GT(op[0].frames_decoded[0], 0); /* partial: the input was decoded */
    ASSERT_EQ(atoi(n_after), 4);
    ASSERT(ok3);
    ASSERT_EQ(exit_rc, 0);
    ASSERT(od[0].got_done);
    ASSERT_EQ(od[0].n, 1);
    ASSERT_EQ(od[0].cache[0], 1);
    return 0;
}

/* Two worker processes race on the same keys: both get the same windowed job at once, both miss
 * and store; the cache keeps one whole entry per key (2 windows + the window list), both answer
 * the same, and a third job afterwards hits every window. */
TEST(proc_token_cache_two_workers)
{
    char pg[1100], ci[1400], extra[1600];
    snprintf(pg, sizeof(pg), "%s/tcpg2", test_tmpdir());
    if (fixtures() < 0)
        return 1;
    int rc;
    ASSERT_OK(cache_pg_start(pg, ci, sizeof(ci), &rc));
    snprintf(extra, sizeof(extra), "[cache]\nconninfo = %s", ci);
    char b[1200];
    path(b, sizeof(b), "b.mp4");
    static struct outcome o[3];
    memset(o, 0, sizeof(o));
    struct proc p1, p2;
    int s1 = rc == 0 && start(&p1, extra) == 0, s2 = s1 && start(&p2, extra) == 0;
    const char *i1[1] = {"r1"}, *i2[1] = {"r2"}, *i3[1] = {"r3"};
    int ok = s2 && send_job_t(&p1, "r1", b, 3.0, 1, 0, 6) == 0 &&
             send_job_t(&p2, "r2", b, 3.0, 1, 0, 6) == 0 && collect(&p1, i1, 1, &o[0], 180) == 0 &&
             collect(&p2, i2, 1, &o[1], 180) == 0;
    char entries[32] = "", chunks_ok[32] = "";
    test_sh(entries, sizeof(entries), "psql -Atqc 'SELECT count(*) FROM token_cache_entries' "
            "'%s'", ci);
    test_sh(chunks_ok, sizeof(chunks_ok), "psql -Atqc 'SELECT count(*) FROM token_cache_entries "
            "e WHERE n_chunks = (SELECT count(*) FROM token_cache_chunks c WHERE c.key = e.key)' "
            "'%s'", ci);
    int ok3 = ok && send_job_t(&p1, "r3", b, 3.0, 1, 0, 6) == 0 &&
              collect(&p1, i3, 1, &o[2], 180) == 0;
    int e1 = -1, e2 = -1;
    if (s1) {
        close(p1.in);
        e1 = wait_exit(&p1, 30);
        finish(&p1);
    }
    if (s2) {
        close(p2.in);
        e2 = wait_exit(&p2, 30);
        finish(&p2);
    }
    test_sh(NULL, 0, "'%s/tests/harness/pg-harness' stop '%s' >/dev/null 2>&1", test_source_dir(),
            pg);
    ASSERT_EQ(rc, 0);
    ASSERT(s1 && s2);
    ASSERT(ok);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(ok3);
    ASSERT_EQ(e1, 0);
    ASSERT_EQ(e2, 0);
    ASSERT_EQ(atoi(entries), 3);
    ASSERT_EQ(atoi(chunks_ok), 3); /* every entry whole */
    for (int j = 0; j < 3; j++) {
        ASSERT(o[j].got_done);
        ASSERT_EQ(o[j].n, 2);
    }
    for (int k = 0; k < 2; k++) {
        const char *a, *x, *y;
        ASSERT_OK(find_answer(&o[0], 0, k, &a));
        ASSERT_OK(find_answer(&o[1], 0, k, &x));
        ASSERT_OK(find_answer(&o[2], 0, k, &y));
        ASSERT_STR_EQ(x, a);
        ASSERT_STR_EQ(y, a);
        ASSERT_EQ(o[2].cache[k], 2);
    }
    return 0;
}

/* One image job (img.png, caption) on a worker configured with conf, which must say backend
 * cuda-emu in its hello; the outcome in *o, the image's path in png. */
static int emu_image_job(const char *conf, const char *id, double temperature, int max_new,
                         char *png, size_t png_len, struct outcome *o)
{
    struct proc p;
    ASSERT_OK(fixtures());
    ASSERT_OK(write_conf(conf));
    ASSERT_OK(spawn(&p));
    vl3_proto_msg m;
    ASSERT_EQ(next(&p, &m, 60000), 1);
    ASSERT_EQ(m.type, VL3_PROTO_HELLO);
    ASSERT_STR_EQ(m.u.hello.backend, "cuda-emu");
    vl3_proto_msg_free(&m);
    path(png, png_len, "img.png");
    const char *ids[1] = {id};
    memset(o, 0, sizeof(*o));
    ASSERT_OK(send_job_t(&p, id, png, 0, 1, temperature, max_new));
    ASSERT_OK(collect(&p, ids, 1, o, 240));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    return 0;
}

/* backend = cuda-emu: the worker starts on the emulated CUDA backend (the CUDA kernels on the
 * host emulator), says so in HELLO, and answers an image job as `vl3 run --backend cuda-emu`
 * does; `--backend NAME` overrides the setting, an unknown name is a usage error (exit 1). */
TEST(proc_cuda_emu_backend_answers)
{
    char png[1200];
    static struct outcome o[1];
    ASSERT_OK(emu_image_job("backend = cuda-emu", "emu", 0, 8, png, sizeof(png), o));
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done);
    ASSERT_EQ(o[0].n, 1);
    static char want[8192];
    ASSERT_EQ(vl3_run_answer(want, sizeof(want),
                             "--image '%s' --task caption --greedy --max-new-tokens 8 "
                             "--backend cuda-emu", png), 0);
    ASSERT_STR_EQ(o[0].answer[0], want);
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    ASSERT_EQ(test_sh(NULL, 0, "'%s/vl3-worker' --config '%s' --backend nope </dev/null "
                      "2>'%s/bad_backend.log'", bin, conf_path, test_tmpdir()), 1);
    ASSERT_EQ(test_sh(NULL, 0, "grep -q 'invalid backend \"nope\"' '%s/bad_backend.log'",
                      test_tmpdir()), 0);
    return 0;
}

/* A sampled job on backend = cuda-emu: the worker samples on the device (vl3_ctx_sample, the
 * backend's sample op: only ids come back) and its answer equals `vl3 run --backend cuda-emu`
 * with the same temperature and seed (vl3_generate, the same op), token for token. */
TEST(proc_cuda_emu_sampled_answer_equals_vl3_run)
{
    char png[1200];
    static struct outcome o[1];
    ASSERT_OK(emu_image_job("backend = cuda-emu\n[generate]\nseed = 5", "emu_sampled", 0.8, 10,
                            png, sizeof(png), o));
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done);
    ASSERT_EQ(o[0].n, 1);
    static char want[8192], greedy[8192];
    ASSERT_EQ(vl3_run_answer(want, sizeof(want),
                             "--image '%s' --task caption --temperature 0.8 --seed 5 "
                             "--max-new-tokens 10 --backend cuda-emu", png), 0);
    ASSERT_STR_EQ(o[0].answer[0], want);
    /* sampling made a difference (the comparison can fail) */
    ASSERT_EQ(vl3_run_answer(greedy, sizeof(greedy),
                             "--image '%s' --task caption --greedy --max-new-tokens 10 "
                             "--backend cuda-emu", png), 0);
    ASSERT(strcmp(want, greedy) != 0);
    return 0;
}

/* A sticky device fault (the CUDA emulator's injected illegal address at the first kernel
 * launch) fails the job as a device error and ends the worker with exit status 75, so that vl3d
 * restarts it. */
TEST(proc_cuda_emu_device_fault_exits_75)
{
    struct proc p;
    ASSERT_OK(fixtures());
    ASSERT_OK(write_conf("backend = cuda-emu"));
    setenv("VL3_CUDA_EMU_FAULT", "1", 1);
    int r = spawn(&p);
    unsetenv("VL3_CUDA_EMU_FAULT");
    ASSERT_OK(r);
    vl3_proto_msg m;
    ASSERT_EQ(next(&p, &m, 60000), 1);
    ASSERT_EQ(m.type, VL3_PROTO_HELLO);
    vl3_proto_msg_free(&m);
    char png[1200];
    path(png, sizeof(png), "img.png");
    ASSERT_OK(send_job_t(&p, "fault", png, 0, 1, 0, 8));
    int job_err = -1, worker_err = -1;
    for (int i = 0; i < 200 && (job_err < 0 || worker_err < 0); i++) {
        int got = next(&p, &m, 1000);
        if (got < 0)
            break;
        if (got == 0)
            continue;
        if (m.type == VL3_PROTO_ERROR) {
            if (m.u.error.job_id && strcmp(m.u.error.job_id, "fault") == 0)
                job_err = (int)m.u.error.code;
            else if (!m.u.error.job_id)
                worker_err = (int)m.u.error.code;
        }
        vl3_proto_msg_free(&m);
    }
    ASSERT_EQ(job_err, VL3_PERR_DEVICE);
    ASSERT_EQ(worker_err, VL3_PERR_DEVICE);
    ASSERT_EQ(wait_exit(&p, 30), 75);
    finish(&p);
    ASSERT(log_has("device fault"));
    return 0;
}

/* A native-layout model composites an image with alpha onto white, as transformers does (the
 * worker's image path, beside vl3 run's that the oracle golden rgba_qa checks): the worker's
 * answer about an RGBA PNG equals `vl3 run`'s on the same native model, and differs from its
 * answer about the same pixels with alpha dropped (so the composite really changed the input). */
TEST(proc_native_alpha_image_equals_vl3_run)
{
    if (fixtures() < 0)
        return 1;
    const char *bin = getenv("VL3_BIN_DIR") ? getenv("VL3_BIN_DIR") : ".";
    char native[1200], rgba[1200], rgb[1200];
    snprintf(native, sizeof(native), "%s/native", test_tmpdir());
    path(rgba, sizeof(rgba), "alpha.png");
    path(rgb, sizeof(rgb), "alpha_dropped.png");
    ASSERT_EQ(test_sh(NULL, 0, "'%s/vl3' model tiny --layout native --std 0.1 --seed 3 "
                      "--out '%s' >/dev/null", bin, native), 0);
    /* alpha falling from 255 to 0 across the image; the same RGB without alpha beside it */
    ASSERT_EQ(test_sh(NULL, 0, "ffmpeg -v error -y -f lavfi -i testsrc2=s=96x64 -frames:v 1 "
                      "-vf \"format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='255-X*8/3'\" "
                      "'%s' && ffmpeg -v error -y -i '%s' -vf format=rgb24 '%s'",
                      rgba, rgba, rgb), 0);
    struct proc p;
    ASSERT_OK(start(&p, "[generate]\nseed = 5"));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    /* the same worker configuration on the native model */
    ASSERT_EQ(test_sh(NULL, 0, "sed -i 's|^model = .*|model = %s|' '%s'", native, conf_path), 0);
    ASSERT_OK(spawn(&p));
    vl3_proto_msg m;
    ASSERT_EQ(next(&p, &m, 60000), 1);
    ASSERT_EQ(m.type, VL3_PROTO_HELLO);
    vl3_proto_msg_free(&m);
    const char *ids[1] = {"alpha"};
    static struct outcome o[1];
    memset(o, 0, sizeof(o));
    ASSERT_OK(send_job_t(&p, "alpha", rgba, 0, 1, 0, 12));
    ASSERT_OK(collect(&p, ids, 1, o, 120));
    close(p.in);
    ASSERT_EQ(wait_exit(&p, 30), 0);
    finish(&p);
    if (llm_missing(&o[0]))
        SKIP("this build has no language model: %s", o[0].err_msg);
    ASSERT(o[0].got_done);
    const char *got;
    ASSERT_OK(find_answer(&o[0], 0, 0, &got));
    static char want[8192], dropped[8192];
    ASSERT_EQ(test_sh(want, sizeof(want), "'%s/vl3' run --model '%s' --image '%s' --task caption "
                      "--greedy --max-new-tokens 12 2>/dev/null", bin, native, rgba), 0);
    ASSERT_EQ(test_sh(dropped, sizeof(dropped), "'%s/vl3' run --model '%s' --image '%s' --task "
                      "caption --greedy --max-new-tokens 12 2>/dev/null", bin, native, rgb), 0);
    want[strcspn(want, "\n")] = 0;
    dropped[strcspn(dropped, "\n")] = 0;
    ASSERT_STR_EQ(got, want);
    ASSERT(strcmp(want, dropped) != 0);
    return 0;
}
