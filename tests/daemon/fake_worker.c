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
 * and from the environment: VL3_FAKE_WORKER_DELAY_MS (time per job, default 0; pings answered),
 * VL3_FAKE_WORKER_LOG (append "pid job attempt" lines, to count executions). */
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

static vl3_proto_reader rd;
static int eof_seen; /* stdin closed: finish the current job, then exit (the protocol's stop) */

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

/* read whatever is there (waiting up to ms), answer pings; returns 0 at EOF */
static int pump(int ms, const char *busy_job)
{
    if (eof_seen) {
        if (ms > 0)
            (void)poll(NULL, 0, ms);
        return 0;
    }
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    int r = poll(&p, 1, ms);
    if (r <= 0)
        return 1;
    uint8_t buf[65536];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n == 0) {
        eof_seen = 1;
        return 0;
    }
    if (n < 0)
        return errno == EINTR || errno == EAGAIN;
    if (vl3_proto_reader_feed(&rd, buf, (size_t)n) < 0)
        exit(70);
    (void)busy_job;
    return 1;
}

/* take the next frame if complete; answer pings inline (they never reach the caller) */
static int next_msg(vl3_proto_msg *m, const char *busy_job)
{
    vl3_proto_frame f;
    vl3_error e = {0};
    for (;;) {
        int r = vl3_proto_reader_next(&rd, &f, &e);
        if (r < 0) {
            fprintf(stderr, "fake-worker: %s\n", e.msg);
            exit(70);
        }
        if (r == 0)
            return 0;
        if (vl3_proto_msg_parse(&f, m, &e) < 0) {
            fprintf(stderr, "fake-worker: %s\n", e.msg);
            exit(70);
        }
        if (m->type == VL3_PROTO_PING) {
            struct vl3_proto_pong pg = {m->u.ping.seq, busy_job};
            uint8_t *b;
            size_t l;
            send_and_free(vl3_proto_encode_pong(&pg, &b, &l, NULL), &b, &l);
            vl3_proto_msg_free(m);
            continue;
        }
        return 1;
    }
}

static int no_progress; /* "stall": answer pings, send no progress */

static void busy_wait(double ms, const char *job)
{
    double end = now_ms() + ms;
    vl3_proto_msg m;
    while (now_ms() < end) {
        double left = end - now_ms();
        (void)pump(left > 200 ? 200 : (int)left + 1, job);
        /* frames other than pings while busy are not expected from the daemon; keep them */
        while (rd.len - rd.off >= VL3_PROTO_HEADER_SIZE) {
            /* peek: only consume pings, leave a job for later */
            if (rd.buf[rd.off + 2] != VL3_PROTO_PING)
                break;
            if (!next_msg(&m, job))
                break;
            vl3_proto_msg_free(&m); /* unreachable: pings are answered inside */
        }
        if (no_progress)
            continue;
        struct vl3_proto_progress p = {job, "generate", 1, 2};
        uint8_t *b;
        size_t l;
        send_and_free(vl3_proto_encode_progress(&p, &b, &l, NULL), &b, &l);
    }
}

static void run_job(const struct vl3_proto_job *j)
{
    const char *in = j->input;
    const char *log = getenv("VL3_FAKE_WORKER_LOG");
    if (log && *log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%d %s %d\n", (int)getpid(), j->job_id, j->attempt);
            fclose(f);
        }
    }
    if (strstr(in, "crash") || (strstr(in, "flaky") && j->attempt <= 1))
        raise(SIGKILL);
    if (strstr(in, "hang"))
        for (;;)
            pause();
    if (strstr(in, "environ")) { /* append our environment, one variable a line, to the log */
        const char *lg = getenv("VL3_FAKE_WORKER_LOG");
        FILE *f = lg ? fopen(lg, "a") : NULL;
        extern char **environ;
        for (char **e = environ; f && *e; e++)
            fprintf(f, "env %s\n", *e);
        if (f)
            fclose(f);
    }
    if (strstr(in, "stall")) {
        no_progress = 1;
        busy_wait(1e12, j->job_id);
    }
    uint8_t *b;
    size_t l;
    if (strstr(in, "fail")) {
        struct vl3_proto_error e = {j->job_id, VL3_PERR_DECODE, 0, "could not decode (fake)"};
        send_and_free(vl3_proto_encode_error(&e, &b, &l, NULL), &b, &l);
        return;
    }
    if (strstr(in, "retry") && j->attempt <= 1) {
        struct vl3_proto_error e = {j->job_id, VL3_PERR_RESOURCE, 1, "out of memory (fake)"};
        send_and_free(vl3_proto_encode_error(&e, &b, &l, NULL), &b, &l);
        return;
    }
    const char *d = getenv("VL3_FAKE_WORKER_DELAY_MS");
    double delay = d ? atof(d) : 0;
    if (strstr(in, "slow"))
        delay += 3000;
    if (delay > 0)
        busy_wait(delay, j->job_id);
    if (strstr(in, "badresult")) {
        char bad[512];
        int bl = snprintf(bad, sizeof(bad), "{\"job\": \"%s\", \"task\": 0, \"window\": 0, "
                          "\"t_start\": -5.0, \"t_end\": 1.0, \"answer\": \"x\"}", j->job_id);
        send_and_free(vl3_proto_frame_build(VL3_PROTO_RESULT, bad, (size_t)bl, &b, &l, NULL), &b,
                      &l);
    }
    /* every input is a made-up 10-s video: windows of W seconds cut it in ceil(10 / W) */
    /* VL3_FAKE_WORKER_DURATION: the made-up video's length in seconds (default 10) */
    const char *denv = getenv("VL3_FAKE_WORKER_DURATION");
    double W = j->sampling.window_s, dur = denv && atof(denv) > 0 ? atof(denv) : 10;
    int windows = W > 0 && W < dur ? (int)ceil(dur / W) : 1;
    if (windows > 16)
        windows = 16;
    int n = 0;
    for (int t = 0; t < j->ntasks; t++)
        for (int w = 0; w < windows; w++) {
            char answer[8192];
            const char *q = j->tasks[t].question;
            snprintf(answer, sizeof(answer), "%s of %s%s%s w%d", vl3_task_kind_name(j->tasks[t].kind),
                     in, q ? " q=" : "", q ? q : "", w);
            double t0 = windows > 1 ? w * W : 0, t1 = windows > 1 ? (w + 1) * W : dur;
            if (t1 > dur)
                t1 = dur;
            int64_t fs = (int64_t)ceil((t1 - t0) * j->sampling.fps); /* frames in the window */
            if (fs > j->sampling.max_frames)
                fs = j->sampling.max_frames;
            if (fs < 1)
                fs = 1;
            struct vl3_proto_result r = {j->job_id, t, w, t0, t1, answer,
                                         {j->sampling.max_frames, 1, 5, 1, 2.0, 3.0, 4.0, 5.0,
                                          fs, (t1 - t0) / (double)fs, 0}};
            send_and_free(vl3_proto_encode_result(&r, &b, &l, NULL), &b, &l);
            n++;
        }
    struct vl3_proto_done dn = {j->job_id, n, {0}}; /* no media: the paths are made up */
    send_and_free(vl3_proto_encode_done(&dn, &b, &l, NULL), &b, &l);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    vl3_proto_reader_init(&rd);
    struct vl3_proto_hello h = {VL3_PROTO_VERSION, "fake-worker 1", "none", getpid()};
    uint8_t *b;
    size_t l;
    send_and_free(vl3_proto_encode_hello(&h, &b, &l, NULL), &b, &l);
    for (;;) {
        vl3_proto_msg m;
        while (next_msg(&m, NULL)) {
            if (m.type == VL3_PROTO_JOB)
                run_job(&m.u.job);
            vl3_proto_msg_free(&m);
        }
        if (!pump(-1, NULL))
            break;
    }
    vl3_proto_reader_deinit(&rd);
    return 0;
}
