/* worker_io.c: frame input and output for vl3-worker (see worker_io.h).
 *
 * Every output frame is built completely in memory with the proto.h encoders, then written with
 * one locked loop of write(2), so a frame is never split by another thread's frame. A failed
 * write marks the output broken: the daemon has gone away, and the reader sees EOF and exits. */
#include "worker_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "vl3/proto.h"

_Static_assert(WORKER_MAX_TASKS == VL3_PROTO_MAX_TASKS, "task limit differs from the protocol");
_Static_assert(WORKER_MAX_CREDITS == VL3_PROTO_MAX_CREDITS,
               "credit limit differs from the protocol");

int worker_out_init(struct worker_out *o, int fd)
{
    memset(o, 0, sizeof(*o));
    o->fd = fd;
    return -pthread_mutex_init(&o->lock, NULL);
}

void worker_out_deinit(struct worker_out *o)
{
    if (o)
        pthread_mutex_destroy(&o->lock);
}

int worker_out_write(struct worker_out *o, const uint8_t *buf, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&o->lock);
    if (o->broken) {
        rc = -EPIPE;
        goto out;
    }
    while (len > 0) {
        ssize_t w = write(o->fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            o->broken = 1;
            goto out;
        }
        buf += w;
        len -= (size_t)w;
    }
out:
    pthread_mutex_unlock(&o->lock);
    return rc;
}

static int send_built(struct worker_out *o, int rc, uint8_t *buf, size_t len)
{
    if (rc < 0)
        return rc;
    rc = worker_out_write(o, buf, len);
    free(buf);
    return rc;
}

int worker_send_hello(struct worker_out *o, const char *version, const char *backend, int64_t pid,
                      int credits)
{
    /* one credit: a level-1 hello, which a daemon that predates credits also accepts */
    struct vl3_proto_hello m = {credits > 1 ? VL3_PROTO_LEVEL : 1, version, backend, pid,
                                credits > 1 ? credits : 0};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_hello(&m, &buf, &len, NULL); /* before reading buf/len */
    return send_built(o, rc, buf, len);
}

int worker_send_pong(struct worker_out *o, int64_t seq, const char *const *jobs, int njobs)
{
    struct vl3_proto_pong m = {seq, njobs > 0 ? jobs[0] : NULL, 0, {0}};
    for (int i = 0; i < njobs && i < VL3_PROTO_MAX_CREDITS; i++)
        m.jobs[m.njobs++] = jobs[i];
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_pong(&m, &buf, &len, NULL); /* before reading buf/len */
    return send_built(o, rc, buf, len);
}

int worker_send_progress(struct worker_out *o, const char *job_id, const char *stage,
                         int64_t done, int64_t total)
{
    struct vl3_proto_progress m = {job_id, stage, done, total};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_progress(&m, &buf, &len, NULL); /* before reading buf/len */
    return send_built(o, rc, buf, len);
}

int worker_send_done(struct worker_out *o, const char *job_id, int64_t results,
                     const struct worker_media *media)
{
    struct vl3_proto_done m = {job_id, results, {0}};
    if (media && media->present)
        m.media = (struct vl3_proto_media){1, media->size, media->mtime_s, media->duration_s,
                                           media->width, media->height, media->fps,
                                           media->codec[0] ? media->codec : NULL,
                                           media->fingerprint[0] ? media->fingerprint : NULL};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_done(&m, &buf, &len, NULL); /* before reading buf/len */
    return send_built(o, rc, buf, len);
}

/* The text the protocol allows: at most VL3_PROTO_MAX_TEXT bytes, cut at a UTF-8 character
 * boundary. Returns text itself or a truncated copy in *ret_owned (freed by the caller; NULL when
 * no copy was needed or memory ran out, then text is returned cut at nothing: the encoder will
 * refuse it). */
static const char *fit_text(const char *text, char **ret_owned)
{
    *ret_owned = NULL;
    size_t n = text ? strlen(text) : 0;
    if (n <= VL3_PROTO_MAX_TEXT)
        return text;
    size_t cut = VL3_PROTO_MAX_TEXT;
    while (cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
        cut--; /* text[cut] starts a character: keep the bytes before it */
    char *c = malloc(cut + 1);
    if (!c)
        return text;
    memcpy(c, text, cut);
    c[cut] = '\0';
    *ret_owned = c;
    return c;
}

int worker_send_result(struct worker_out *o, const struct worker_result *r)
{
    const struct worker_stats *s = &r->stats;
    /* Only what the protocol allows (schema/worker-protocol.md): times >= 0 and in order (an
     * MPEG-TS may start at a negative timestamp), an answer of at most VL3_PROTO_MAX_TEXT bytes
     * (limits.max_new_tokens allows longer ones; the stored answer is cut). */
    double t0 = r->t_start > 0 ? r->t_start : 0, t1 = r->t_end > t0 ? r->t_end : t0;
    char *cut = NULL;
    const char *answer = fit_text(r->answer, &cut);
    struct vl3_proto_result m = {r->job_id, r->task, r->window, t0, t1, answer, {0}};
    m.stats = (struct vl3_proto_stats){.frames_decoded = s->frames_decoded,
                                       .frames_pruned = s->frames_pruned,
                                       .tokens_generated = s->tokens_generated,
                                       .batch_size = s->batch_size,
                                       .decode_ms = s->decode_ms,
                                       .vision_ms = s->vision_ms,
                                       .prefill_ms = s->prefill_ms,
                                       .generate_ms = s->generate_ms,
                                       .frames_sampled = s->frames_sampled,
                                       .sample_interval_s = s->sample_interval_s,
                                       .tokens_total = s->tokens_total,
                                       .tokens_kept = s->tokens_kept,
                                       .prompt_tokens = s->prompt_tokens,
                                       .vision_batch_frames = s->vision_batch_frames,
                                       .vision_batch_windows = s->vision_batch_windows,
                                       .vision_batch_jobs = s->vision_batch_jobs,
                                       .decode_step_jobs = s->decode_step_jobs,
                                       .cache = s->cache};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_result(&m, &buf, &len, NULL); /* before reading buf/len */
    free(cut);
    return send_built(o, rc, buf, len);
}

static int errcode(int code, int *ret_retryable)
{
    int retry = 0, e;
    switch (code) {
    case VL3_E_POLICY:
    case VL3_E_LIMIT:
    case -EINVAL:
    case -ENOENT:
    case -EACCES:
    case -ENOTDIR:
    case -ELOOP:
    case -EISDIR:
    case -ENAMETOOLONG: e = VL3_PERR_INPUT; break;
    case -EIO: e = VL3_PERR_INPUT, retry = 1; break;
    case VL3_E_DECODE: e = VL3_PERR_DECODE; break;
    case VL3_E_UNSUPPORTED: e = VL3_PERR_UNSUPPORTED; break;
    case -ENOMEM:
    case -EAGAIN:
    case -EBUSY: e = VL3_PERR_RESOURCE, retry = 1; break;
    case VL3_E_CUDA:
    case VL3_E_CUDA_FATAL: e = VL3_PERR_DEVICE, retry = 1; break;
    case VL3_E_PROTO: e = VL3_PERR_PROTOCOL; break;
    default: e = VL3_PERR_INTERNAL; break;
    }
    if (ret_retryable)
        *ret_retryable = retry;
    return e;
}

const char *worker_errcode(int code, int *ret_retryable)
{
    return vl3_proto_errcode_name(errcode(code, ret_retryable));
}

int worker_send_error(struct worker_out *o, const char *job_id, int code, const char *message,
                      const char **ret_code_name, int *ret_retryable)
{
    int retry = 0;
    char *cut = NULL;
    struct vl3_proto_error m = {job_id, errcode(code, &retry), 0, fit_text(message, &cut)};
    m.retryable = retry;
    if (ret_code_name)
        *ret_code_name = vl3_proto_errcode_name(m.code);
    if (ret_retryable)
        *ret_retryable = retry;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vl3_proto_encode_error(&m, &buf, &len, NULL); /* before reading buf/len */
    free(cut);
    return send_built(o, rc, buf, len);
}

/* ---- input ---- */

struct worker_in {
    vl3_proto_reader rd;
};

worker_in *worker_in_new(void)
{
    worker_in *in = malloc(sizeof(*in));
    if (in)
        vl3_proto_reader_init(&in->rd);
    return in;
}

void worker_in_free(worker_in *in)
{
    if (!in)
        return;
    vl3_proto_reader_deinit(&in->rd);
    free(in);
}

size_t worker_in_buffered(const worker_in *in)
{
    return in->rd.len - in->rd.off;
}

int worker_in_feed(worker_in *in, const void *buf, size_t n, const struct worker_in_ops *ops,
                   vl3_error *reterr)
{
    int r = vl3_proto_reader_feed(&in->rd, buf, n);
    if (r < 0)
        return vl3_error_set(reterr, r, "could not buffer a frame");
    vl3_proto_frame f;
    while ((r = vl3_proto_reader_next(&in->rd, &f, reterr)) == 1) {
        vl3_proto_msg m;
        if ((r = vl3_proto_msg_parse(&f, &m, reterr)) < 0) {
            in->rd.broken = 1;
            return r;
        }
        if (m.type == VL3_PROTO_PING) {
            ops->on_ping(ops->user, m.u.ping.seq);
        } else if (m.type == VL3_PROTO_JOB) {
            const struct vl3_proto_job *j = &m.u.job;
            struct worker_job_req q = {0};
            q.job_id = j->job_id;
            q.input = j->input;
            q.ntasks = j->ntasks;
            for (int i = 0; i < j->ntasks; i++) {
                q.tasks[i].kind = vl3_task_kind_name(j->tasks[i].kind);
                q.tasks[i].question = j->tasks[i].question;
            }
            q.fps = j->sampling.fps;
            q.max_frames = j->sampling.max_frames;
            q.fast = j->sampling.mode == VL3_SAMPLING_FAST;
            q.window_s = j->sampling.window_s;
            q.max_new_tokens = j->max_new_tokens;
            q.temperature = j->temperature;
            q.attempt = j->attempt;
            q.cache = j->cache;
            ops->on_job(ops->user, &q);
        } else {
            r = vl3_error_set(reterr, VL3_E_PROTO, "unexpected %s frame from the daemon",
                              vl3_proto_type_name(m.type));
            vl3_proto_msg_free(&m);
            in->rd.broken = 1;
            return r;
        }
        vl3_proto_msg_free(&m);
    }
    return r < 0 ? r : 0;
}
