/* supervise.c: worker processes, job dispatch and hang/crash handling (see supervise.h).
 *
 * Each worker slot is permanent and owns a restart timer and the jobs its incarnation holds
 * (held[], oldest first; a job is found by the id its frames name). Each incarnation owns a
 * uv_process_t
 * and two pipes, counted in inc_handles, and the slot is only respawned once all three are
 * closed. The supervisor owns one tick timer (hang detection, pings). Stop closes everything
 * and the supervisor frees itself when its last handle's close callback ran. */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vl3/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define STABLE_LIFE_NS (30ull * 1000000000ull)
#define READ_CHUNK 65536
#define MAX_ENV 128
#define LOST_PONGS 3 /* consecutive pongs not listing a held job: the worker lost it */

extern char **environ;

/* Whether a variable of the daemon's environment may pass to a worker: only what the engine,
 * FFmpeg and the C library need, and the VL3_* test hooks; never the daemon's credentials
 * (PGPASSWORD, PGPASSFILE, KAFKA_*, CREDENTIALS_DIRECTORY, ...). */
static int env_allowed(const char *kv)
{
    if (strncmp(kv, "VL3_PARENT_PID=", 15) == 0)
        return 0; /* set for each spawn */
    static const char *const exact[] = {"PATH=", "LANG=", "TZ=", "CUDA_VISIBLE_DEVICES=",
                                        "HOME=", "TMPDIR="};
    static const char *const prefix[] = {"LC_", "OPENBLAS_", "OMP_", "VL3_"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (strncmp(kv, exact[i], strlen(exact[i])) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++)
        if (strncmp(kv, prefix[i], strlen(prefix[i])) == 0)
            return 1;
    return 0;
}

enum sv_worker_state { W_DOWN, W_STARTING, W_READY, W_EXITING };

/* one job a worker holds */
struct sv_held {
    struct sv_job *j;
    uint64_t progress_ns; /* dispatch, or its last progress/tokens/result frame (hang timer) */
    int64_t ping_seq;     /* pings sent before the dispatch: later pongs should list it */
    int missing;          /* later pongs that did not list it */
    /* a RESULT of this job was well framed but out of range: the job fails with this reason
     * when it ends; the stream is still in sync, so the worker is kept */
    char bad[256];
};

struct sv_worker {
    struct supervise *sv;
    int idx;
    char device[16]; /* its slot's device ("" = none given) */
    int state;
    uv_process_t proc;
    uv_pipe_t in, out; /* our ends: we write to in (child's stdin), read from out */
    uv_timer_t restart_timer;
    int inc_handles; /* proc/in/out handles of the current incarnation still open */
    int proc_exited;
    int in_closed;
    vl3_proto_reader rd;
    int proto;   /* HELLO.proto */
    int credits; /* jobs it takes at once */
    int nheld;   /* held[0..nheld), oldest first */
    struct sv_held held[VL3_PROTO_MAX_CREDITS];
    uint64_t started_ns, last_frame_ns, last_ping_ns;
    int64_t ping_seq;
    uint64_t backoff_ms;
    int kill_reason; /* 0 none, 1 hung, 2 protocol, 3 stop, 4 stalled */
    int completed_jobs;
    int pid;
};

struct supervise {
    uv_loop_t *loop;
    struct supervise_options opts;
    struct supervise_ops ops;
    struct sv_worker *w;
    struct sv_job *qhead, *qtail;
    uv_timer_t tick, stop_timer;
    int handles_open; /* tick + stop_timer + restart timers + incarnation handles */
    int stopping;
    struct supervise_stats st;
};

struct write_req {
    uv_write_t req;
    uint8_t *buf;
};

static void spawn_worker(struct sv_worker *w);
static void on_restart_timer(uv_timer_t *t);
static void maybe_finish_stop(struct supervise *sv);

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

/* ---- queue ---- */

static void q_remove(struct supervise *sv, struct sv_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        sv->qhead = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        sv->qtail = j->prev;
    j->next = j->prev = NULL;
    sv->st.queued--;
}

/* insert after the last job of priority >= j's (front = 1: before the first of equal priority) */
static void q_insert(struct supervise *sv, struct sv_job *j, int front)
{
    struct sv_job *after = NULL;
    for (struct sv_job *p = sv->qhead; p; p = p->next) {
        if (p->priority > j->priority || (!front && p->priority == j->priority))
            after = p;
        else
            break;
    }
    j->prev = after;
    j->next = after ? after->next : sv->qhead;
    if (j->next)
        j->next->prev = j;
    else
        sv->qtail = j;
    if (after)
        after->next = j;
    else
        sv->qhead = j;
    j->state = SV_JOB_QUEUED;
    sv->st.queued++;
}

/* ---- writing frames ---- */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    if (status < 0 && status != UV_ECANCELED)
        vl3_log_debug("could not write to worker: %s", uv_strerror(status));
    free(wr->buf);
    free(wr);
}

static int send_frame(struct sv_worker *w, uint8_t *buf, size_t len)
{
    if (w->in_closed || uv_is_closing((uv_handle_t *)&w->in)) {
        free(buf);
        return -EPIPE;
    }
    struct write_req *wr = malloc(sizeof(*wr));
    if (!wr) {
        free(buf);
        return -ENOMEM;
    }
    wr->buf = buf;
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    int r = uv_write(&wr->req, (uv_stream_t *)&w->in, &b, 1, on_write);
    if (r < 0) {
        free(buf);
        free(wr);
    }
    return r;
}

static void kill_worker(struct sv_worker *w, int reason)
{
    if (w->proc_exited || w->state == W_DOWN)
        return;
    if (!w->kill_reason)
        w->kill_reason = reason;
    (void)uv_process_kill(&w->proc, SIGKILL);
}

/* ---- dispatch ---- */

static int holds_suspect(const struct sv_worker *w)
{
    for (int i = 0; i < w->nheld; i++)
        if (w->held[i].j->suspect)
            return 1;
    return 0;
}

/* the ready worker with a free credit holding the fewest jobs that may take j, or NULL: a suspect
 * runs alone, and a worker holding a suspect takes nothing else */
static struct sv_worker *pick_worker(struct supervise *sv, const struct sv_job *j)
{
    struct sv_worker *best = NULL;
    for (int i = 0; i < sv->opts.count; i++) {
        struct sv_worker *w = &sv->w[i];
        if (w->state != W_READY || w->kill_reason || w->nheld >= w->credits)
            continue;
        if (w->nheld > 0 && (j->suspect || holds_suspect(w)))
            continue;
        if (!best || w->nheld < best->nheld)
            best = w;
    }
    return best;
}

static void dispatch(struct supervise *sv)
{
    if (sv->stopping)
        return;
    struct sv_job *j;
    while ((j = sv->qhead) != NULL) {
        /* the head goes first: when it cannot be placed (every worker full, or a suspect waiting
         * for an empty worker), the jobs behind it wait too, so a suspect is never starved */
        struct sv_worker *w = pick_worker(sv, j);
        if (!w)
            return;
        q_remove(sv, j);
        uint8_t *buf;
        size_t len;
        j->attempts++;
        int r = sv->ops.encode(sv->ops.user, j, j->attempts, &buf, &len);
        if (r < 0) {
            /* cannot happen for a job that parsed; treat as permanent for the job */
            j->state = SV_JOB_FINISHED;
            sv->ops.on_poison(sv->ops.user, j, "could not encode the job request");
            continue;
        }
        j->state = SV_JOB_RUNNING;
        j->worker = w;
        j->dispatched_ns = now_ns();
        struct sv_held *h = &w->held[w->nheld++];
        memset(h, 0, sizeof(*h));
        h->j = j;
        h->progress_ns = j->dispatched_ns;
        h->ping_seq = w->ping_seq;
        if (w->nheld == 1)
            w->last_frame_ns = j->dispatched_ns; /* the silence timer starts with the first job */
        sv->st.dispatched++;
        sv->st.running++;
        if (j->suspect)
            vl3_log_info("dispatching suspect job=%s alone worker=%d attempt=%d", j->id, w->idx,
                         j->attempts);
        if (send_frame(w, buf, len) < 0)
            kill_worker(w, 2);
    }
}

static struct sv_held *find_held(struct sv_worker *w, const char *id)
{
    for (int i = 0; id && i < w->nheld; i++)
        if (strcmp(w->held[i].j->id, id) == 0)
            return &w->held[i];
    return NULL;
}

/* h's job left its worker (finished one way or another); returns it */
static struct sv_job *detach_held(struct sv_worker *w, struct sv_held *h)
{
    struct sv_job *j = h->j;
    int i = (int)(h - w->held);
    memmove(&w->held[i], &w->held[i + 1], sizeof(w->held[0]) * (size_t)(w->nheld - i - 1));
    w->nheld--;
    j->worker = NULL;
    w->sv->st.running--;
    return j;
}

static void job_finished_ok(struct sv_worker *w)
{
    w->completed_jobs++;
    w->backoff_ms = 0;
    /* the worker moved on: the jobs waiting behind the one that ended start their hang timers
     * afresh (a job queued inside the worker makes no progress of its own) */
    uint64_t now = now_ns();
    for (int i = 0; i < w->nheld; i++)
        w->held[i].progress_ns = now;
}

/* ---- reading frames ---- */

/* a PONG answering a ping sent after a job's dispatch should list it (protocol 2) */
static void check_pong(struct sv_worker *w, const struct vl3_proto_pong *p)
{
    struct supervise *sv = w->sv;
    if (w->proto < 2)
        return;
    int lost = 0;
    for (int i = 0; i < w->nheld;) {
        struct sv_held *h = &w->held[i];
        int listed = p->seq <= h->ping_seq; /* the ping went out before the job */
        for (int k = 0; k < p->njobs && !listed; k++)
            listed = strcmp(p->jobs[k], h->j->id) == 0;
        if (listed || ++h->missing < LOST_PONGS) {
            h->missing = listed ? 0 : h->missing;
            i++;
            continue;
        }
        /* A DONE may trail one pong sent after the worker let go of the job, not three: the
         * worker lost it. Not the job's fault: it runs again, uncharged; the worker stays. */
        struct sv_job *j = detach_held(w, h);
        vl3_log_warning("worker lost job=%s: %d pongs did not list it worker=%d pid=%d, "
                        "re-queueing it",
                        j->id, LOST_PONGS, w->idx, w->pid);
        sv->st.lost++;
        lost++;
        if (j->cancelled) {
            j->state = SV_JOB_FINISHED;
            sv->ops.on_abandoned(sv->ops.user, j);
        } else {
            q_insert(sv, j, 1);
        }
    }
    if (lost)
        dispatch(sv);
}

static void handle_msg(struct sv_worker *w, const vl3_proto_msg *m)
{
    struct supervise *sv = w->sv;
    const char *jid = NULL;
    switch (m->type) {
    case VL3_PROTO_HELLO:
        if (w->state == W_STARTING) {
            w->proto = (int)m->u.hello.proto;
            w->credits = (int)m->u.hello.credits;
            if (sv->opts.credits > 0 && w->credits > sv->opts.credits)
                w->credits = sv->opts.credits;
            if (w->credits < 1)
                w->credits = 1;
            vl3_log_info("worker ready worker=%d pid=%d version=\"%s\" backend=%s proto=%d "
                         "credits=%d",
                         w->idx, w->pid, m->u.hello.worker,
                         m->u.hello.backend ? m->u.hello.backend : "?", w->proto, w->credits);
            w->state = W_READY;
            dispatch(sv);
        }
        return;
    case VL3_PROTO_PONG: check_pong(w, &m->u.pong); return; /* activity (last_frame_ns) */
    case VL3_PROTO_PROGRESS: jid = m->u.progress.job_id; break;
    case VL3_PROTO_TOKENS: /* opaque: no job id; it credits a worker's only job */
        if (w->nheld == 1)
            w->held[0].progress_ns = now_ns();
        return;
    case VL3_PROTO_RESULT: jid = m->u.result.job_id; break;
    case VL3_PROTO_DONE: jid = m->u.done.job_id; break;
    case VL3_PROTO_ERROR:
        jid = m->u.error.job_id;
        if (!jid) {
            vl3_log_err("worker failed worker=%d pid=%d code=%s: %s", w->idx, w->pid,
                        vl3_proto_errcode_name(m->u.error.code), m->u.error.message);
            return; /* it is expected to exit; exit handling re-queues its jobs */
        }
        break;
    default:
        vl3_log_err("worker sent unexpected %s frame worker=%d, killing it",
                    vl3_proto_type_name(m->type), w->idx);
        sv->st.proto_errors++;
        kill_worker(w, 2);
        return;
    }
    struct sv_held *h = find_held(w, jid);
    if (!h) {
        vl3_log_warning("worker sent %s for job=%s it does not hold worker=%d, ignoring",
                        vl3_proto_type_name(m->type), jid, w->idx);
        return;
    }
    struct sv_job *j = h->j;
    if (m->type == VL3_PROTO_PROGRESS) {
        h->progress_ns = now_ns();
        return;
    }
    if (m->type == VL3_PROTO_RESULT) {
        h->progress_ns = now_ns();
        if (!j->cancelled && !h->bad[0])
            sv->ops.on_result(sv->ops.user, j, &m->u.result);
        return;
    }
    char bad[sizeof(h->bad)];
    snprintf(bad, sizeof(bad), "%s", h->bad);
    detach_held(w, h);
    j->state = SV_JOB_FINISHED;
    j->suspect = 0; /* this attempt ended without a crash */
    job_finished_ok(w);
    if (j->cancelled) {
        sv->ops.on_abandoned(sv->ops.user, j);
    } else if (bad[0]) {
        struct vl3_proto_error e = {"", VL3_PERR_INTERNAL, 0, bad};
        sv->ops.on_error(sv->ops.user, j, &e);
    } else if (m->type == VL3_PROTO_DONE)
        sv->ops.on_done(sv->ops.user, j, &m->u.done);
    else
        sv->ops.on_error(sv->ops.user, j, &m->u.error);
    dispatch(sv);
}

/* The held job a RESULT frame names, from its raw JSON (the frame did not parse), or NULL. */
static struct sv_held *held_of_raw(struct sv_worker *w, const vl3_proto_frame *f)
{
    json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
    struct sv_held *h = find_held(w, json_string_value(json_object_get(o, "job")));
    json_decref(o);
    return h;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char chunk[READ_CHUNK]; /* loop thread only; consumed before the next read */
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct sv_worker *w = s->data;
    if (n < 0) {
        if (n != UV_EOF)
            vl3_log_debug("could not read from worker=%d: %s", w->idx, uv_strerror((int)n));
        uv_read_stop(s);
        return; /* the exit callback does the rest */
    }
    if (n == 0)
        return;
    vl3_error e = {0};
    if (vl3_proto_reader_feed(&w->rd, buf->base, (size_t)n) < 0) {
        uv_read_stop(s);
        return;
    }
    vl3_proto_frame f;
    int r;
    while ((r = vl3_proto_reader_next(&w->rd, &f, &e)) == 1) {
        w->last_frame_ns = now_ns();
        vl3_proto_msg m;
        if (vl3_proto_msg_parse(&f, &m, &e) < 0) {
            struct sv_held *h = f.type == VL3_PROTO_RESULT ? held_of_raw(w, &f) : NULL;
            if (h) {
                /* one job's answer out of range: fail that job with the reason, keep the worker */
                vl3_log_warning("worker sent an invalid result job=%s worker=%d pid=%d: %s",
                                h->j->id, w->idx, w->pid, e.msg);
                if (!h->bad[0])
                    snprintf(h->bad, sizeof(h->bad), "worker sent an invalid result: %s", e.msg);
                continue;
            }
            r = VL3_E_PROTO;
            break;
        }
        handle_msg(w, &m);
        vl3_proto_msg_free(&m);
        if (w->kill_reason)
            return;
    }
    if (r < 0) {
        w->sv->st.proto_errors++;
        vl3_log_err("worker protocol violation worker=%d pid=%d: %s, killing it", w->idx, w->pid,
                    e.msg);
        uv_read_stop(s);
        kill_worker(w, 2);
    }
}

/* ---- lifecycle ---- */

static void on_inc_closed(uv_handle_t *h)
{
    struct sv_worker *w = h->data;
    struct supervise *sv = w->sv;
    sv->handles_open--;
    if (--w->inc_handles > 0)
        return;
    vl3_proto_reader_deinit(&w->rd);
    w->state = W_DOWN;
    if (sv->stopping) {
        maybe_finish_stop(sv);
        return;
    }
    /* backoff: doubling from 100 ms unless the incarnation proved stable */
    if (w->completed_jobs > 0 || now_ns() - w->started_ns > STABLE_LIFE_NS)
        w->backoff_ms = 0;
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (w->backoff_ms > BACKOFF_MAX_MS)
        w->backoff_ms = BACKOFF_MAX_MS;
    sv->st.restarts++;
    vl3_log_info("restarting worker=%d in %llums", w->idx, (unsigned long long)w->backoff_ms);
    uv_timer_start(&w->restart_timer, on_restart_timer, w->backoff_ms, 0);
}

static void on_restart_timer(uv_timer_t *t)
{
    struct sv_worker *w = t->data;
    if (!w->sv->stopping)
        spawn_worker(w);
}

static void close_incarnation(struct sv_worker *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->in))
        uv_close((uv_handle_t *)&w->in, on_inc_closed);
    if (!uv_is_closing((uv_handle_t *)&w->out))
        uv_close((uv_handle_t *)&w->out, on_inc_closed);
    if (!uv_is_closing((uv_handle_t *)&w->proc))
        uv_close((uv_handle_t *)&w->proc, on_inc_closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct sv_worker *w = p->data;
    struct supervise *sv = w->sv;
    w->proc_exited = 1;
    sv->st.exited++;
    int level = sv->stopping && status == 0 ? VL3_LOG_INFO : VL3_LOG_WARNING;
    vl3_log(level, "worker exited worker=%d pid=%d status=%lld signal=%d%s", w->idx, w->pid,
            (long long)status, sig,
            w->kill_reason == 1   ? " (hung)"
            : w->kill_reason == 2 ? " (protocol)"
            : w->kill_reason == 4 ? " (stalled)"
                                  : "");
    /* crash attribution: alone, the job is charged; with others, all become suspects */
    int n = w->nheld, alone = n == 1;
    const char *how = w->kill_reason == 1   ? "hung"
                      : w->kill_reason == 4 ? "stalled"
                                            : "killed or crashed";
    for (int i = n - 1; i >= 0; i--) { /* from the newest: re-queued in front, oldest first */
        struct sv_job *j = detach_held(w, &w->held[i]);
        if (j->cancelled || sv->stopping) {
            j->state = SV_JOB_FINISHED;
            j->cancelled = 1;
            sv->ops.on_abandoned(sv->ops.user, j);
        } else if (!alone) {
            j->suspect = 1;
            j->shared_deaths++;
            sv->st.suspects++;
            vl3_log_warning("job=%s held with %d others by a worker that %s: it runs alone next",
                            j->id, n - 1, how);
            q_insert(sv, j, 1);
        } else if (++j->kills >= sv->opts.max_attempts) {
            char reason[192];
            snprintf(reason, sizeof(reason),
                     "poison: %d attempts ended with the worker %s (last: status %lld signal %d)",
                     j->kills, how, (long long)status, sig);
            sv->st.poisoned++;
            j->state = SV_JOB_FINISHED;
            sv->ops.on_poison(sv->ops.user, j, reason);
        } else {
            q_insert(sv, j, 1);
        }
    }
    w->state = W_EXITING;
    close_incarnation(w);
    dispatch(sv);
}

static void spawn_worker(struct sv_worker *w)
{
    struct supervise *sv = w->sv;
    char *args[9];
    int n = 0;
    args[n++] = (char *)sv->opts.path;
    if (sv->opts.config && sv->opts.config[0]) {
        args[n++] = "--config";
        args[n++] = (char *)sv->opts.config;
    }
    if (sv->opts.backend && sv->opts.backend[0] && strcmp(sv->opts.backend, "auto") != 0) {
        args[n++] = "--backend";
        args[n++] = (char *)sv->opts.backend;
    }
    int dev_env = w->device[0] && !sv->opts.device_arg;
    if (w->device[0] && sv->opts.device_arg) {
        args[n++] = "--device";
        args[n++] = w->device;
    }
    args[n] = NULL;
    uv_pipe_init(sv->loop, &w->in, 0);
    uv_pipe_init(sv->loop, &w->out, 0);
    w->in.data = w->out.data = w->proc.data = w;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&w->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&w->out;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    char *env[MAX_ENV + 3];
    int ne = 0;
    char cvd[48]; /* the slot's device, replacing the daemon's own CUDA_VISIBLE_DEVICES */
    snprintf(cvd, sizeof(cvd), "CUDA_VISIBLE_DEVICES=%s", w->device);
    if (dev_env)
        env[ne++] = cvd;
    for (char **e = environ; e && *e && ne < MAX_ENV; e++)
        if (env_allowed(*e) && !(dev_env && strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) == 0))
            env[ne++] = *e;
    char ppid[32]; /* lets the worker check it was not reparented before its prctl */
    snprintf(ppid, sizeof(ppid), "VL3_PARENT_PID=%d", (int)getpid());
    env[ne++] = ppid;
    env[ne] = NULL;
    uv_process_options_t po = {0};
    po.file = sv->opts.path;
    po.args = args;
    po.env = env;
    po.exit_cb = on_exit_cb;
    po.stdio_count = 3;
    po.stdio = stdio;
    w->proc_exited = 0;
    w->in_closed = 0;
    w->kill_reason = 0;
    w->completed_jobs = 0;
    w->nheld = 0;
    w->proto = 1;
    w->credits = 1;
    w->ping_seq = 0;
    vl3_proto_reader_init(&w->rd);
    w->started_ns = w->last_frame_ns = w->last_ping_ns = now_ns();
    sv->st.spawned++;
    int r = uv_spawn(sv->loop, &w->proc, &po);
    w->inc_handles = 3;
    sv->handles_open += 3;
    if (r < 0) {
        vl3_log_err("could not start worker \"%s\" worker=%d: %s", sv->opts.path, w->idx,
                    uv_strerror(r));
        /* libuv initialised the process handle even on failure: close all three */
        w->proc_exited = 1;
        w->state = W_EXITING;
        close_incarnation(w);
        return;
    }
    w->pid = w->proc.pid;
    w->state = W_STARTING;
    vl3_log_info("worker started worker=%d pid=%d%s%s", w->idx, w->pid,
                 w->device[0] ? " device=" : "", w->device);
    uv_read_start((uv_stream_t *)&w->out, on_alloc, on_read);
}

/* the first held job whose hang timer ran out, or NULL */
static const struct sv_held *stalled(const struct supervise *sv, const struct sv_worker *w,
                                     uint64_t now)
{
    if (!sv->opts.stall_timeout_ms)
        return NULL;
    for (int i = 0; i < w->nheld; i++)
        if (now - w->held[i].progress_ns > sv->opts.stall_timeout_ms * 1000000ull)
            return &w->held[i];
    return NULL;
}

static void on_tick(uv_timer_t *t)
{
    struct supervise *sv = t->data;
    uint64_t now = now_ns();
    uint64_t startup_ns = (sv->opts.startup_timeout_ms ? sv->opts.startup_timeout_ms : 120000) *
                          1000000ull;
    uint64_t ping_ns = (sv->opts.ping_interval_ms ? sv->opts.ping_interval_ms : 5000) * 1000000ull;
    uint64_t hang_ns = sv->opts.job_timeout_ms * 1000000ull;
    const struct sv_held *st;
    for (int i = 0; i < sv->opts.count; i++) {
        struct sv_worker *w = &sv->w[i];
        if (w->proc_exited || w->kill_reason)
            continue;
        if (w->state == W_STARTING && now - w->started_ns > startup_ns) {
            vl3_log_err("worker did not say hello within %llums worker=%d pid=%d, killing it",
                        (unsigned long long)(startup_ns / 1000000), w->idx, w->pid);
            kill_worker(w, 1);
            sv->st.killed_hung++;
        } else if (w->state == W_READY && w->nheld > 0 && now - w->last_frame_ns > hang_ns) {
            vl3_log_err("worker hung: no frame for %llums while holding %d jobs (oldest job=%s) "
                        "worker=%d pid=%d, killing it",
                        (unsigned long long)(hang_ns / 1000000), w->nheld, w->held[0].j->id,
                        w->idx, w->pid);
            kill_worker(w, 1);
            sv->st.killed_hung++;
        } else if (w->state == W_READY && (st = stalled(sv, w, now)) != NULL) {
            vl3_log_err("worker stalled: job=%s made no progress for %llums though the worker "
                        "answers pings worker=%d pid=%d job_attempt=%d jobs_held=%d, killing it",
                        st->j->id, (unsigned long long)sv->opts.stall_timeout_ms, w->idx, w->pid,
                        st->j->attempts, w->nheld);
            kill_worker(w, 4);
            sv->st.killed_hung++;
        } else if (w->state == W_READY && now - w->last_ping_ns > ping_ns) {
            w->last_ping_ns = now;
            struct vl3_proto_ping p = {++w->ping_seq};
            uint8_t *buf;
            size_t len;
            if (vl3_proto_encode_ping(&p, &buf, &len, NULL) == 0)
                (void)send_frame(w, buf, len);
        }
    }
}

/* The device of slot idx from the devices setting (see supervise_options) into buf. 0, or
 * -EINVAL when the setting is malformed. */
static int slot_device(const char *devices, int idx, char *buf, size_t size)
{
    buf[0] = '\0';
    if (!devices || !devices[0])
        return 0;
    if (strcmp(devices, "slot") == 0) {
        snprintf(buf, size, "%d", idx);
        return 0;
    }
    int n = 0;
    for (const char *p = devices;; p++) { /* count and check: digits separated by commas */
        size_t len = strspn(p, "0123456789");
        if (len == 0 || len > 4 || (p[len] != ',' && p[len] != '\0'))
            return -EINVAL;
        n++;
        p += len;
        if (!*p)
            break;
    }
    const char *p = devices;
    for (int i = 0; i < idx % n; i++)
        p = strchr(p, ',') + 1;
    snprintf(buf, size, "%.*s", (int)strspn(p, "0123456789"), p);
    return 0;
}

int supervise_new(uv_loop_t *loop, const struct supervise_options *opts,
                  const struct supervise_ops *ops, struct supervise **ret, vl3_error *reterr)
{
    if (opts->count < 1 || !opts->path || opts->max_attempts < 1 || !opts->job_timeout_ms)
        return vl3_error_set(reterr, -EINVAL, "invalid worker options");
    char dev[16];
    if (slot_device(opts->devices, 0, dev, sizeof(dev)) < 0)
        return vl3_error_set(reterr, -EINVAL,
                             "invalid workers.devices \"%s\": want \"slot\" or GPU indices "
                             "separated by commas",
                             opts->devices);
    struct supervise *sv = calloc(1, sizeof(*sv));
    if (!sv || !(sv->w = calloc((size_t)opts->count, sizeof(*sv->w)))) {
        free(sv);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    sv->loop = loop;
    sv->opts = *opts;
    sv->ops = *ops;
    uv_timer_init(loop, &sv->tick);
    uv_timer_init(loop, &sv->stop_timer);
    sv->tick.data = sv->stop_timer.data = sv;
    sv->handles_open = 2;
    uint64_t tick_ms = opts->job_timeout_ms / 4; /* also pings: not slower than ping_interval */
    if (opts->ping_interval_ms && tick_ms > opts->ping_interval_ms)
        tick_ms = opts->ping_interval_ms;
    if (tick_ms > 1000)
        tick_ms = 1000;
    if (tick_ms < 50)
        tick_ms = 50;
    uv_timer_start(&sv->tick, on_tick, tick_ms, tick_ms);
    for (int i = 0; i < opts->count; i++) {
        struct sv_worker *w = &sv->w[i];
        w->sv = sv;
        w->idx = i;
        (void)slot_device(opts->devices, i, w->device, sizeof(w->device));
        uv_timer_init(loop, &w->restart_timer);
        w->restart_timer.data = w;
        sv->handles_open++;
        spawn_worker(w);
    }
    *ret = sv;
    return 0;
}

void supervise_submit(struct supervise *sv, struct sv_job *j)
{
    j->cancelled = 0;
    j->suspect = 0;
    j->shared_deaths = 0;
    q_insert(sv, j, 0);
    dispatch(sv);
}

void supervise_retry(struct supervise *sv, struct sv_job *j)
{
    q_insert(sv, j, 1);
    dispatch(sv);
}

int supervise_cancel(struct supervise *sv, struct sv_job *j)
{
    if (j->state == SV_JOB_QUEUED) {
        q_remove(sv, j);
        j->state = SV_JOB_FINISHED;
        return 1;
    }
    if (j->state == SV_JOB_RUNNING) {
        j->cancelled = 1;
        return 0;
    }
    return 1;
}

void supervise_set_limits(struct supervise *sv, int max_attempts, uint64_t job_timeout_ms)
{
    sv->opts.max_attempts = max_attempts;
    sv->opts.job_timeout_ms = job_timeout_ms;
}

void supervise_get_stats(const struct supervise *sv, struct supervise_stats *ret)
{
    *ret = sv->st;
    ret->alive = ret->busy = 0;
    for (int i = 0; i < sv->opts.count; i++) {
        ret->alive += sv->w[i].state == W_READY;
        ret->busy += sv->w[i].state == W_READY && sv->w[i].nheld > 0;
    }
}

static void sv_handle_closed(struct supervise *sv)
{
    if (--sv->handles_open > 0)
        return;
    void (*cb)(void *) = sv->ops.on_stopped;
    void *user = sv->ops.user;
    free(sv->w);
    free(sv);
    if (cb)
        cb(user);
}

static void on_sv_closed(uv_handle_t *h)
{
    sv_handle_closed(h->data);
}

static void on_restart_timer_closed(uv_handle_t *h)
{
    sv_handle_closed(((struct sv_worker *)h->data)->sv);
}

static void maybe_finish_stop(struct supervise *sv)
{
    for (int i = 0; i < sv->opts.count; i++)
        if (sv->w[i].inc_handles > 0)
            return;
    if (uv_is_closing((uv_handle_t *)&sv->tick))
        return;
    uv_close((uv_handle_t *)&sv->tick, on_sv_closed);
    uv_close((uv_handle_t *)&sv->stop_timer, on_sv_closed);
    for (int i = 0; i < sv->opts.count; i++)
        uv_close((uv_handle_t *)&sv->w[i].restart_timer, on_restart_timer_closed);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct supervise *sv = t->data;
    for (int i = 0; i < sv->opts.count; i++)
        if (!sv->w[i].proc_exited && sv->w[i].inc_handles > 0) {
            vl3_log_warning("worker did not stop in time worker=%d pid=%d, killing it", i,
                            sv->w[i].pid);
            kill_worker(&sv->w[i], 3);
        }
}

void supervise_stop(struct supervise *sv, uint64_t grace_ms)
{
    if (sv->stopping)
        return;
    sv->stopping = 1;
    uv_timer_stop(&sv->tick);
    for (int i = 0; i < sv->opts.count; i++) {
        struct sv_worker *w = &sv->w[i];
        uv_timer_stop(&w->restart_timer);
        if (w->inc_handles > 0 && !w->in_closed && !uv_is_closing((uv_handle_t *)&w->in)) {
            w->in_closed = 1;
            uv_close((uv_handle_t *)&w->in, on_inc_closed); /* EOF on the worker's stdin */
        }
    }
    uv_timer_start(&sv->stop_timer, on_stop_timer, grace_ms, 0);
    maybe_finish_stop(sv);
}
