/* fake_worker.c: a stand-in for vl3-worker that speaks the worker protocol, for daemon tests
 * only (never installed). It answers each job with deterministic results derived from the job:
 * for task i and window w the answer is "<kind> of <input>[ q=<question>] w<w>" (two windows when
 * sampling.window > 0, else one). Knobs, from the input path:
 *   "crash" in the name: SIGKILL itself on every attempt (a poison video)
 *   "hang":  stop reading and answering (not even pings) until killed
 *   "fail":  answer ERROR code "decode", not retryable
 *   "retry": answer ERROR code "resource", retryable, on attempt 1; results afterwards
 *   "flaky": SIGKILL itself on attempt 1, results afterwards
 *   "slow":  take 3 s, sending PROGRESS and answering pings meanwhile
 *   "stall": answer pings for ever but never progress (a worker stuck in compute)
 *   "badresult": first send a well-framed RESULT with t_start < 0 (out of the protocol's range),
 *            then the normal results
 *   "lose":  on attempt 1, drop the job silently (never answered, not listed in pongs)
 * and from the environment: VL3_FAKE_WORKER_DELAY_MS (time per job, default 0; pings answered),
 * VL3_FAKE_WORKER_LOG (append "pid job attempt" lines, to count executions),
 * VL3_FAKE_WORKER_CREDITS (N > 1: say protocol 2 with N credits and hold up to N jobs at once,
 * each on its own clock; absent or 1: protocol 1, one job at a time). With a delay, "crash" and
 * "flaky" die when their time is up rather than at once, taking the other held jobs down too.
 * It is one loop: read frames, answer pings at once (listing the jobs held), send PROGRESS for
 * each held job every 200 ms, answer each job when its time is up. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vl3/proto.h"

#define MAX_HELD VL3_PROTO_MAX_CREDITS

struct held {
    vl3_proto_msg m; /* the JOB frame (owns the strings) */
    double due;      /* when it is answered (ms, monotonic) */
};

static vl3_proto_reader rd;
static int g_argc; /* logged with the environment */
static char **g_argv;
static int eof_seen; /* stdin closed: finish the held jobs, then exit (the protocol's stop) */
static struct held held[MAX_HELD];
static int nheld;

static void write_all(const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            exit(1);
        }
        b += w;
        n -= (size_t)w;
    }
}

/* the pointers are read after the encoder ran (argument evaluation order is unspecified) */
static void send_and_free(int r, uint8_t **buf, size_t *len)
{
    if (r < 0)
        exit(70);
    write_all(*buf, *len);
    free(*buf);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void log_exec(const struct vl3_proto_job *j)
{
    const char *log = getenv("VL3_FAKE_WORKER_LOG");
    if (log && *log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%d %s %d\n", (int)getpid(), j->job_id, j->attempt);
            fclose(f);
        }
    }
}

static void send_error(const char *job, int code, int retryable, const char *msg)
{
    uint8_t *b;
    size_t l;
    struct vl3_proto_error e = {job, code, retryable, msg};
    send_and_free(vl3_proto_encode_error(&e, &b, &l, NULL), &b, &l);
}

/* every result of j, then DONE */
static void answer(const struct vl3_proto_job *j)
{
    const char *in = j->input;
    uint8_t *b;
    size_t l;
    if (strstr(in, "badresult")) {
        char bad[512];
        int bl = snprintf(bad, sizeof(bad), "{\"job\": \"%s\", \"task\": 0, \"window\": 0, "
                          "\"t_start\": -5.0, \"t_end\": 1.0, \"answer\": \"x\"}", j->job_id);
        send_and_free(vl3_proto_frame_build(VL3_PROTO_RESULT, bad, (size_t)bl, &b, &l, NULL), &b,
                      &l);
    }
    /* every input is a made-up video: windows of W seconds cut it in ceil(duration / W) */
    /* VL3_FAKE_WORKER_DURATION: the made-up video's length in seconds (default 10) */
    const char *denv = getenv("VL3_FAKE_WORKER_DURATION");
    double W = j->sampling.window_s, dur = denv && atof(denv) > 0 ? atof(denv) : 10;
    int windows = W > 0 && W < dur ? (int)ceil(dur / W) : 1;
    if (windows > 16)
        windows = 16;
    int n = 0;
    for (int t = 0; t < j->ntasks; t++)
        for (int w = 0; w < windows; w++) {
            char text[8192];
            const char *q = j->tasks[t].question;
            snprintf(text, sizeof(text), "%s of %s%s%s w%d", vl3_task_name(j->tasks[t].kind),
                     in, q ? " q=" : "", q ? q : "", w);
            double t0 = windows > 1 ? w * W : 0, t1 = windows > 1 ? (w + 1) * W : dur;
            if (t1 > dur)
                t1 = dur;
            int64_t fs = (int64_t)ceil((t1 - t0) * j->sampling.fps); /* frames in the window */
            if (fs > j->sampling.max_frames)
                fs = j->sampling.max_frames;
            if (fs < 1)
                fs = 1;
            struct vl3_proto_result r = {j->job_id, t, w, t0, t1, text, {0}};
            r.stats = (struct vl3_proto_stats){.frames_decoded = j->sampling.max_frames,
                                               .frames_pruned = 1, .tokens_generated = 5,
                                               .batch_size = 1, .decode_ms = 2.0,
                                               .vision_ms = 3.0, .prefill_ms = 4.0,
                                               .generate_ms = 5.0, .frames_sampled = fs,
                                               .sample_interval_s = (t1 - t0) / (double)fs};
            /* made-up token counts the tests recompute: 16 visual tokens a frame, 10 kept,
             * a prompt of the kept tokens plus 20 + task */
            r.stats.tokens_total = 16 * fs;
            r.stats.tokens_kept = 10 * fs;
            r.stats.prompt_tokens = 10 * fs + 20 + t;
            send_and_free(vl3_proto_encode_result(&r, &b, &l, NULL), &b, &l);
            n++;
        }
    struct vl3_proto_done dn = {j->job_id, n, {0}}; /* no media: the paths are made up */
    send_and_free(vl3_proto_encode_done(&dn, &b, &l, NULL), &b, &l);
}

/* a JOB arrived: behaviours that act at once, else hold it until it is due */
static void accept_job(vl3_proto_msg *m)
{
    const struct vl3_proto_job *j = &m->u.job;
    const char *in = j->input;
    log_exec(j);
    const char *d = getenv("VL3_FAKE_WORKER_DELAY_MS");
    double delay = d ? atof(d) : 0;
    if ((strstr(in, "crash") || (strstr(in, "flaky") && j->attempt <= 1)) && delay <= 0)
        raise(SIGKILL);
    if (strstr(in, "hang"))
        for (;;)
            pause();
    if (strstr(in, "environ")) { /* append our environment and arguments to the log */
        const char *lg = getenv("VL3_FAKE_WORKER_LOG");
        FILE *f = lg ? fopen(lg, "a") : NULL;
        extern char **environ;
        for (char **e = environ; f && *e; e++)
            fprintf(f, "env %s\n", *e);
        for (int i = 1; f && i < g_argc; i++)
            fprintf(f, "arg %s\n", g_argv[i]);
        if (f)
            fclose(f);
    }
    if (strstr(in, "fail")) {
        send_error(j->job_id, VL3_PERR_DECODE, 0, "could not decode (fake)");
        vl3_proto_msg_free(m);
        return;
    }
    if (strstr(in, "retry") && j->attempt <= 1) {
        send_error(j->job_id, VL3_PERR_RESOURCE, 1, "out of memory (fake)");
        vl3_proto_msg_free(m);
        return;
    }
    if (strstr(in, "lose") && j->attempt <= 1) {
        vl3_proto_msg_free(m);
        return;
    }
    if (nheld == MAX_HELD) {
        send_error(j->job_id, VL3_PERR_RESOURCE, 1, "too many jobs held (fake)");
        vl3_proto_msg_free(m);
        return;
    }
    if (strstr(in, "slow"))
        delay += 3000;
    held[nheld].m = *m; /* takes the JSON tree */
    held[nheld].due = strstr(in, "stall") ? 1e300 : now_ms() + delay;
    nheld++;
    memset(m, 0, sizeof(*m));
}

static void answer_ping(int64_t seq)
{
    struct vl3_proto_pong pg = {seq, nheld ? held[0].m.u.job.job_id : NULL, 0, {0}};
    for (int i = 0; i < nheld; i++)
        pg.jobs[pg.njobs++] = held[i].m.u.job.job_id;
    uint8_t *b;
    size_t l;
    send_and_free(vl3_proto_encode_pong(&pg, &b, &l, NULL), &b, &l);
}

/* read what is there (waiting up to ms) and handle every complete frame */
static void pump(int ms)
{
    if (eof_seen) {
        if (ms > 0)
            (void)poll(NULL, 0, ms);
        return;
    }
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0)
        return;
    uint8_t buf[65536];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n == 0) {
        eof_seen = 1;
        return;
    }
    if (n < 0)
        return;
    if (vl3_proto_reader_feed(&rd, buf, (size_t)n) < 0)
        exit(70);
    vl3_proto_frame f;
    vl3_error e = {0};
    int r;
    while ((r = vl3_proto_reader_next(&rd, &f, &e)) == 1) {
        vl3_proto_msg m;
        if (vl3_proto_msg_parse(&f, &m, &e) < 0) {
            fprintf(stderr, "fake-worker: %s\n", e.msg);
            exit(70);
        }
        if (m.type == VL3_PROTO_PING)
            answer_ping(m.u.ping.seq);
        else if (m.type == VL3_PROTO_JOB)
            accept_job(&m);
        vl3_proto_msg_free(&m);
    }
    if (r < 0) {
        fprintf(stderr, "fake-worker: %s\n", e.msg);
        exit(70);
    }
}

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    signal(SIGPIPE, SIG_IGN);
    vl3_proto_reader_init(&rd);
    const char *ce = getenv("VL3_FAKE_WORKER_CREDITS");
    int credits = ce ? atoi(ce) : 1;
    if (credits < 1)
        credits = 1;
    if (credits > MAX_HELD)
        credits = MAX_HELD;
    struct vl3_proto_hello h = {credits > 1 ? 2 : 1, "fake-worker 1", "none", getpid(),
                                credits > 1 ? credits : 0};
    uint8_t *b;
    size_t l;
    send_and_free(vl3_proto_encode_hello(&h, &b, &l, NULL), &b, &l);
    double next_progress = now_ms() + 200;
    while (!eof_seen || nheld > 0) {
        double now = now_ms(), wake = next_progress;
        for (int i = 0; i < nheld; i++)
            if (held[i].due < wake)
                wake = held[i].due;
        pump(nheld == 0 && !eof_seen ? -1 : wake > now ? (int)(wake - now) + 1 : 0);
        now = now_ms();
        for (int i = 0; i < nheld;) {
            if (held[i].due > now) {
                i++;
                continue;
            }
            const struct vl3_proto_job *j = &held[i].m.u.job;
            if (strstr(j->input, "crash") || (strstr(j->input, "flaky") && j->attempt <= 1))
                raise(SIGKILL); /* with the other jobs held */
            answer(j);
            vl3_proto_msg_free(&held[i].m);
            memmove(&held[i], &held[i + 1], sizeof(held[0]) * (size_t)(nheld - i - 1));
            nheld--; /* the oldest stays first */
        }
        if (now >= next_progress) {
            next_progress = now + 200;
            for (int i = 0; i < nheld; i++) {
                if (strstr(held[i].m.u.job.input, "stall"))
                    continue; /* answers pings for ever, never progresses */
                struct vl3_proto_progress p = {held[i].m.u.job.job_id, "generate", 1, 2};
                send_and_free(vl3_proto_encode_progress(&p, &b, &l, NULL), &b, &l);
            }
        }
    }
    vl3_proto_reader_deinit(&rd);
    return 0;
}
