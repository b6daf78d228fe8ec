/* proto.c: the daemon <-> worker frame codec (see vl3/proto.h and schema/worker-protocol.md).
 *
 * The reader checks each 8-byte header before it buffers the payload, so memory is bounded by
 * one frame limit plus one read chunk. The typed layer parses the JSON payload with duplicates
 * rejected and NUL bytes refused, checks every field's type, range and length, and names the
 * field in its error. Encoders reuse the same checks on their input so what we send parses. */
#include "vl3/proto.h"
#include "vl3/sampling_defaults.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[VL3_SAMPLING_MODE_COUNT] = {"fast", "exact"};
static const char *const type_names[VL3_PROTO_TYPE_COUNT] = {
    NULL, "hello", "job", "progress", "result", "done", "error", "tokens", "ping", "pong"};
static const char *const perr_names[VL3_PERR_COUNT] = {
    "internal", "input", "decode", "unsupported", "resource", "device", "protocol"};

static int name_parse(const char *const *names, int n, const char *s)
{
    if (!s)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], s) == 0)
            return i;
    return -EINVAL;
}

const char *vl3_sampling_mode_name(int m)
{
    return m >= 0 && m < VL3_SAMPLING_MODE_COUNT ? mode_names[m] : NULL;
}
int vl3_sampling_mode_parse(const char *s)
{
    return name_parse(mode_names, VL3_SAMPLING_MODE_COUNT, s);
}
static const char *const cache_names[] = {"use", "refresh", "off"};
const char *vl3_cache_mode_name(int m)
{
    return m >= 0 && m < VL3_CACHE_MODE_COUNT ? cache_names[m] : NULL;
}
int vl3_cache_mode_parse(const char *s)
{
    return name_parse(cache_names, VL3_CACHE_MODE_COUNT, s);
}
const char *vl3_proto_type_name(int t)
{
    return t > 0 && t < VL3_PROTO_TYPE_COUNT ? type_names[t] : NULL;
}
const char *vl3_proto_errcode_name(int c)
{
    return c >= 0 && c < VL3_PERR_COUNT ? perr_names[c] : NULL;
}
int vl3_proto_errcode_parse(const char *s)
{
    return name_parse(perr_names, VL3_PERR_COUNT, s);
}

/* ---- framing ---- */

void vl3_proto_reader_init(vl3_proto_reader *r)
{
    memset(r, 0, sizeof(*r));
    r->max_json = VL3_PROTO_MAX_JSON;
    r->max_tokens = VL3_PROTO_MAX_TOKENS;
}

void vl3_proto_reader_deinit(vl3_proto_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = r->off = 0;
}

int vl3_proto_header_check(const uint8_t *h, size_t max_json, size_t max_tokens, int *ret_type,
                           size_t *ret_len, vl3_error *reterr)
{
    if (h[0] != VL3_PROTO_MAGIC)
        return vl3_error_set(reterr, VL3_E_PROTO, "bad frame magic 0x%02x", h[0]);
    if (h[1] != VL3_PROTO_VERSION)
        return vl3_error_set(reterr, VL3_E_PROTO, "unsupported protocol version %u", h[1]);
    if (h[2] == 0 || h[2] >= VL3_PROTO_TYPE_COUNT)
        return vl3_error_set(reterr, VL3_E_PROTO, "unknown frame type %u", h[2]);
    if (h[3] != 0)
        return vl3_error_set(reterr, VL3_E_PROTO, "frame flags 0x%02x set (must be 0)", h[3]);
    size_t len = ((size_t)h[4] << 24) | ((size_t)h[5] << 16) | ((size_t)h[6] << 8) | h[7];
    size_t max = h[2] == VL3_PROTO_TOKENS ? max_tokens : max_json;
    if (len > max)
        return vl3_error_set(reterr, VL3_E_PROTO, "%s frame of %zu bytes exceeds the limit of %zu",
                             type_names[h[2]], len, max);
    *ret_type = h[2];
    *ret_len = len;
    return 0;
}

int vl3_proto_reader_feed(vl3_proto_reader *r, const void *data, size_t n)
{
    if (r->broken)
        return VL3_E_PROTO;
    if (n == 0)
        return 0;
    if (r->off > 0 && r->off == r->len) {
        r->off = r->len = 0;
    } else if (r->off > 0 && r->len + n > r->cap) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb)
            return -ENOMEM;
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    return 0;
}

int vl3_proto_reader_next(vl3_proto_reader *r, vl3_proto_frame *ret, vl3_error *reterr)
{
    if (r->broken)
        return vl3_error_set(reterr, VL3_E_PROTO, "stream already broken");
    size_t avail = r->len - r->off;
    if (avail < VL3_PROTO_HEADER_SIZE)
        return 0;
    int type;
    size_t len;
    int rc = vl3_proto_header_check(r->buf + r->off, r->max_json, r->max_tokens, &type, &len,
                                    reterr);
    if (rc < 0) {
        r->broken = 1;
        return rc;
    }
    if (avail - VL3_PROTO_HEADER_SIZE < len)
        return 0;
    ret->type = type;
    ret->payload = r->buf + r->off + VL3_PROTO_HEADER_SIZE;
    ret->len = len;
    r->off += VL3_PROTO_HEADER_SIZE + len;
    return 1;
}

int vl3_proto_frame_build(int type, const void *payload, size_t len, uint8_t **ret,
                          size_t *ret_len, vl3_error *reterr)
{
    if (type <= 0 || type >= VL3_PROTO_TYPE_COUNT)
        return vl3_error_set(reterr, -EINVAL, "unknown frame type %d", type);
    size_t max = type == VL3_PROTO_TOKENS ? VL3_PROTO_MAX_TOKENS : VL3_PROTO_MAX_JSON;
    if (len > max)
        return vl3_error_set(reterr, VL3_E_LIMIT, "%s frame of %zu bytes exceeds the limit of %zu",
                             type_names[type], len, max);
    uint8_t *b = malloc(VL3_PROTO_HEADER_SIZE + len);
    if (!b)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    b[0] = VL3_PROTO_MAGIC;
    b[1] = VL3_PROTO_VERSION;
    b[2] = (uint8_t)type;
    b[3] = 0;
    b[4] = (uint8_t)(len >> 24);
    b[5] = (uint8_t)(len >> 16);
    b[6] = (uint8_t)(len >> 8);
    b[7] = (uint8_t)len;
    if (len)
        memcpy(b + VL3_PROTO_HEADER_SIZE, payload, len);
    *ret = b;
    *ret_len = VL3_PROTO_HEADER_SIZE + len;
    return 0;
}

/* ---- field checks shared by the decoder and the encoders ---- */

#define PERR(...) vl3_error_set(reterr, VL3_E_PROTO, __VA_ARGS__)

/* String field: required or optional (absent/null -> *ret NULL), at most max bytes, no control
 * characters other than \t\n\r when !multiline is false. */
static int check_text(const char *name, const char *s, size_t slen, size_t max, int id_like,
                      vl3_error *reterr)
{
    if (slen > max)
        return PERR("field \"%s\" is longer than %zu bytes", name, max);
    if (strlen(s) != slen)
        return PERR("field \"%s\" contains a NUL byte", name);
    if (id_like) {
        if (slen == 0)
            return PERR("field \"%s\" must not be empty", name);
        for (size_t i = 0; i < slen; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return PERR("field \"%s\" contains a control character", name);
    }
    return 0;
}

static int get_str(const json_t *o, const char *key, const char *name, int required, size_t max,
                   int id_like, const char **ret, vl3_error *reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return PERR("field \"%s\" is missing", name);
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return PERR("field \"%s\" must be a string", name);
    int r = check_text(name, json_string_value(v), json_string_length(v), max, id_like, reterr);
    if (r < 0)
        return r;
    *ret = json_string_value(v);
    return 0;
}

static int get_i64(const json_t *o, const char *key, const char *name, int required, int64_t min,
                   int64_t max, int64_t *ret, vl3_error *reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return PERR("field \"%s\" is missing", name);
        *ret = 0;
        return 0;
    }
    if (!json_is_integer(v))
        return PERR("field \"%s\" must be an integer", name);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return PERR("field \"%s\" out of range [%lld, %lld]", name, (long long)min,
                    (long long)max);
    *ret = (int64_t)x;
    return 0;
}

static int get_num(const json_t *o, const char *key, const char *name, int required, double min,
                   double max, double *ret, vl3_error *reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return PERR("field \"%s\" is missing", name);
        *ret = 0;
        return 0;
    }
    if (!json_is_number(v))
        return PERR("field \"%s\" must be a number", name);
    double x = json_number_value(v);
    if (!isfinite(x) || x < min || x > max)
        return PERR("field \"%s\" out of range [%g, %g]", name, min, max);
    *ret = x;
    return 0;
}

static int get_bool(const json_t *o, const char *key, const char *name, int *ret,
                    vl3_error *reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return PERR("field \"%s\" is missing", name);
    if (!json_is_boolean(v))
        return PERR("field \"%s\" must be a boolean", name);
    *ret = json_is_true(v);
    return 0;
}

#define I64_MAX_SANE ((int64_t)1 << 53)

static int check_path(const char *name, const char *s, vl3_error *reterr)
{
    if (s[0] != '/')
        return PERR("field \"%s\" must be an absolute path", name);
    return 0;
}

static int parse_sampling(const json_t *o, struct vl3_proto_sampling *s, vl3_error *reterr)
{
    int r;
    if (!json_is_object(o))
        return PERR("field \"sampling\" must be an object");
    if ((r = get_num(o, "fps", "sampling.fps", 1, VL3_SAMPLING_FPS_MIN, VL3_SAMPLING_FPS_MAX,
                     &s->fps, reterr)) < 0 ||
        (r = get_i64(o, "max_frames", "sampling.max_frames", 1, 1, 1000000, &s->max_frames,
                     reterr)) < 0 ||
        (r = get_num(o, "window", "sampling.window", 0, 0, 1e7, &s->window_s, reterr)) < 0)
        return r;
    const char *mode;
    if ((r = get_str(o, "mode", "sampling.mode", 1, 16, 1, &mode, reterr)) < 0)
        return r;
    s->mode = vl3_sampling_mode_parse(mode);
    if (s->mode < 0)
        return PERR("field \"sampling.mode\" must be \"fast\" or \"exact\"");
    return 0;
}

static int parse_job(const json_t *o, struct vl3_proto_job *m, vl3_error *reterr)
{
    int r;
    int64_t attempt;
    if ((r = get_str(o, "job", "job", 1, VL3_PROTO_MAX_ID, 1, &m->job_id, reterr)) < 0 ||
        (r = get_str(o, "input", "input", 1, VL3_PROTO_MAX_PATH, 1, &m->input, reterr)) < 0 ||
        (r = check_path("input", m->input, reterr)) < 0 ||
        (r = get_i64(o, "max_new_tokens", "max_new_tokens", 0, 0, 1 << 20, &m->max_new_tokens,
                     reterr)) < 0 ||
        (r = get_num(o, "temperature", "temperature", 0, 0, 10, &m->temperature, reterr)) < 0 ||
        (r = get_i64(o, "attempt", "attempt", 0, 0, 1000, &attempt, reterr)) < 0)
        return r;
    m->attempt = (int)attempt;
    const char *cache = NULL;
    if ((r = get_str(o, "cache", "cache", 0, 16, 1, &cache, reterr)) < 0)
        return r;
    m->cache = cache ? vl3_cache_mode_parse(cache) : VL3_CACHE_USE;
    if (m->cache < 0)
        return PERR("field \"cache\" must be \"use\", \"refresh\" or \"off\"");
    json_t *tasks = json_object_get(o, "tasks");
    if (!tasks)
        return PERR("field \"tasks\" is missing");
    if (!json_is_array(tasks))
        return PERR("field \"tasks\" must be an array");
    size_t n = json_array_size(tasks);
    if (n == 0 || n > VL3_PROTO_MAX_TASKS)
        return PERR("field \"tasks\" must hold 1 to %d tasks", VL3_PROTO_MAX_TASKS);
    m->ntasks = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tasks, i);
        char name[64];
        const char *kind;
        snprintf(name, sizeof(name), "tasks[%zu]", i);
        if (!json_is_object(t))
            return PERR("field \"%s\" must be an object", name);
        snprintf(name, sizeof(name), "tasks[%zu].kind", i);
        if ((r = get_str(t, "kind", name, 1, 32, 1, &kind, reterr)) < 0)
            return r;
        m->tasks[i].kind = vl3_task_parse(kind);
        if (m->tasks[i].kind < 0)
            return PERR("field \"%s\" has unknown task \"%s\"", name, kind);
        snprintf(name, sizeof(name), "tasks[%zu].question", i);
        int needs_q = m->tasks[i].kind == VL3_TASK_CHART_QA || m->tasks[i].kind == VL3_TASK_QA;
        if ((r = get_str(t, "question", name, needs_q, VL3_PROTO_MAX_TEXT, 0,
                         &m->tasks[i].question, reterr)) < 0)
            return r;
        if (needs_q && !m->tasks[i].question[0])
            return PERR("field \"%s\" must not be empty", name);
    }
    json_t *s = json_object_get(o, "sampling");
    if (!s)
        return PERR("field \"sampling\" is missing");
    return parse_sampling(s, &m->sampling, reterr);
}

static int parse_media(const json_t *o, struct vl3_proto_media *m, vl3_error *reterr)
{
    int r;
    memset(m, 0, sizeof(*m));
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return PERR("field \"media\" must be an object");
    if ((r = get_i64(o, "size", "media.size", 1, 0, I64_MAX_SANE, &m->size, reterr)) < 0 ||
        (r = get_i64(o, "mtime", "media.mtime", 0, 0, I64_MAX_SANE, &m->mtime_s, reterr)) < 0 ||
        (r = get_num(o, "duration", "media.duration", 0, 0, 1e9, &m->duration_s, reterr)) < 0 ||
        (r = get_i64(o, "width", "media.width", 0, 0, 1 << 20, &m->width, reterr)) < 0 ||
        (r = get_i64(o, "height", "media.height", 0, 0, 1 << 20, &m->height, reterr)) < 0 ||
        (r = get_num(o, "fps", "media.fps", 0, 0, 1e6, &m->fps, reterr)) < 0 ||
        (r = get_str(o, "codec", "media.codec", 0, 64, 1, &m->codec, reterr)) < 0 ||
        (r = get_str(o, "fingerprint", "media.fingerprint", 0, 128, 1, &m->fingerprint,
                     reterr)) < 0)
        return r;
    m->present = 1;
    return 0;
}

static int parse_stats(const json_t *o, struct vl3_proto_stats *s, vl3_error *reterr)
{
    int r;
    memset(s, 0, sizeof(*s));
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return PERR("field \"stats\" must be an object");
    if ((r = get_i64(o, "frames_decoded", "stats.frames_decoded", 0, 0, I64_MAX_SANE,
                     &s->frames_decoded, reterr)) < 0 ||
        (r = get_i64(o, "frames_pruned", "stats.frames_pruned", 0, 0, I64_MAX_SANE,
                     &s->frames_pruned, reterr)) < 0 ||
        (r = get_i64(o, "tokens_generated", "stats.tokens_generated", 0, 0, I64_MAX_SANE,
                     &s->tokens_generated, reterr)) < 0 ||
        (r = get_i64(o, "batch_size", "stats.batch_size", 0, 0, 1 << 20, &s->batch_size,
                     reterr)) < 0 ||
        (r = get_num(o, "decode_ms", "stats.decode_ms", 0, 0, 1e12, &s->decode_ms, reterr)) < 0 ||
        (r = get_num(o, "vision_ms", "stats.vision_ms", 0, 0, 1e12, &s->vision_ms, reterr)) < 0 ||
        (r = get_num(o, "prefill_ms", "stats.prefill_ms", 0, 0, 1e12, &s->prefill_ms, reterr)) <
            0 ||
        (r = get_num(o, "generate_ms", "stats.generate_ms", 0, 0, 1e12, &s->generate_ms,
                     reterr)) < 0 ||
        (r = get_i64(o, "frames_sampled", "stats.frames_sampled", 0, 0, I64_MAX_SANE,
                     &s->frames_sampled, reterr)) < 0 ||
        (r = get_num(o, "sample_interval_s", "stats.sample_interval_s", 0, 0, 1e9,
                     &s->sample_interval_s, reterr)) < 0 ||
        (r = get_i64(o, "tokens_total", "stats.tokens_total", 0, 0, I64_MAX_SANE,
                     &s->tokens_total, reterr)) < 0 ||
        (r = get_i64(o, "tokens_kept", "stats.tokens_kept", 0, 0, I64_MAX_SANE, &s->tokens_kept,
                     reterr)) < 0 ||
        (r = get_i64(o, "prompt_tokens", "stats.prompt_tokens", 0, 0, I64_MAX_SANE,
                     &s->prompt_tokens, reterr)) < 0 ||
        (r = get_i64(o, "vision_batch_frames", "stats.vision_batch_frames", 0, 0, I64_MAX_SANE,
                     &s->vision_batch_frames, reterr)) < 0 ||
        (r = get_i64(o, "vision_batch_windows", "stats.vision_batch_windows", 0, 0,
                     I64_MAX_SANE, &s->vision_batch_windows, reterr)) < 0 ||
        (r = get_i64(o, "vision_batch_jobs", "stats.vision_batch_jobs", 0, 0, I64_MAX_SANE,
                     &s->vision_batch_jobs, reterr)) < 0 ||
        (r = get_i64(o, "decode_step_jobs", "stats.decode_step_jobs", 0, 0, I64_MAX_SANE,
                     &s->decode_step_jobs, reterr)) < 0)
        return r;
    const char *cache = NULL;
    if ((r = get_str(o, "cache", "stats.cache", 0, 16, 1, &cache, reterr)) < 0)
        return r;
    if (cache && strcmp(cache, "hit") != 0 && strcmp(cache, "miss") != 0)
        return PERR("field \"stats.cache\" must be \"hit\" or \"miss\"");
    s->cache = !cache ? 0 : strcmp(cache, "hit") == 0 ? 2 : 1;
    return 0;
}

/* PONG.jobs: an array of at most VL3_PROTO_MAX_CREDITS job ids */
static int parse_held(const json_t *a, struct vl3_proto_pong *p, vl3_error *reterr)
{
    p->njobs = 0;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return PERR("field \"jobs\" must be an array");
    if (json_array_size(a) > VL3_PROTO_MAX_CREDITS)
        return PERR("field \"jobs\" holds more than %d ids", VL3_PROTO_MAX_CREDITS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *v = json_array_get(a, i);
        char name[32];
        snprintf(name, sizeof(name), "jobs[%zu]", i);
        if (!json_is_string(v) || json_string_length(v) == 0)
            return PERR("field \"%s\" must be a job id", name);
        int r = check_text(name, json_string_value(v), json_string_length(v), VL3_PROTO_MAX_ID,
                           1, reterr);
        if (r < 0)
            return r;
        p->jobs[p->njobs++] = json_string_value(v);
    }
    return 0;
}

static int parse_payload(int type, const json_t *o, vl3_proto_msg *m, vl3_error *reterr)
{
    int r = 0;
    switch (type) {
    case VL3_PROTO_HELLO: {
        struct vl3_proto_hello *h = &m->u.hello;
        if ((r = get_i64(o, "proto", "proto", 1, 0, 255, &h->proto, reterr)) < 0 ||
            (r = get_str(o, "worker", "worker", 1, 256, 1, &h->worker, reterr)) < 0 ||
            (r = get_str(o, "backend", "backend", 0, 64, 1, &h->backend, reterr)) < 0 ||
            (r = get_i64(o, "pid", "pid", 0, 0, INT32_MAX, &h->pid, reterr)) < 0 ||
            (r = get_i64(o, "credits", "credits", 0, 1, VL3_PROTO_MAX_CREDITS, &h->credits,
                         reterr)) < 0)
            return r;
        if (h->proto < VL3_PROTO_LEVEL_MIN || h->proto > VL3_PROTO_LEVEL)
            return PERR("worker speaks protocol %lld, this side %d to %d", (long long)h->proto,
                        VL3_PROTO_LEVEL_MIN, VL3_PROTO_LEVEL);
        if (h->proto < 2 || !json_object_get(o, "credits"))
            h->credits = 1; /* one job at a time */
        return 0;
    }
    case VL3_PROTO_JOB: return parse_job(o, &m->u.job, reterr);
    case VL3_PROTO_PROGRESS: {
        struct vl3_proto_progress *p = &m->u.progress;
        if ((r = get_str(o, "job", "job", 1, VL3_PROTO_MAX_ID, 1, &p->job_id, reterr)) < 0 ||
            (r = get_str(o, "stage", "stage", 0, 64, 1, &p->stage, reterr)) < 0 ||
            (r = get_i64(o, "done", "done", 0, 0, I64_MAX_SANE, &p->done, reterr)) < 0 ||
            (r = get_i64(o, "total", "total", 0, 0, I64_MAX_SANE, &p->total, reterr)) < 0)
            return r;
        return 0;
    }
    case VL3_PROTO_RESULT: {
        struct vl3_proto_result *p = &m->u.result;
        if ((r = get_str(o, "job", "job", 1, VL3_PROTO_MAX_ID, 1, &p->job_id, reterr)) < 0 ||
            (r = get_i64(o, "task", "task", 1, 0, VL3_PROTO_MAX_TASKS - 1, &p->task, reterr)) <
                0 ||
            (r = get_i64(o, "window", "window", 0, 0, 10000000, &p->window, reterr)) < 0 ||
            (r = get_num(o, "t_start", "t_start", 0, 0, 1e9, &p->t_start, reterr)) < 0 ||
            (r = get_num(o, "t_end", "t_end", 0, 0, 1e9, &p->t_end, reterr)) < 0 ||
            (r = get_str(o, "answer", "answer", 1, VL3_PROTO_MAX_TEXT, 0, &p->answer, reterr)) <
                0)
            return r;
        if (p->t_end < p->t_start)
            return PERR("field \"t_end\" is before \"t_start\"");
        return parse_stats(json_object_get(o, "stats"), &p->stats, reterr);
    }
    case VL3_PROTO_DONE: {
        struct vl3_proto_done *p = &m->u.done;
        if ((r = get_str(o, "job", "job", 1, VL3_PROTO_MAX_ID, 1, &p->job_id, reterr)) < 0 ||
            (r = get_i64(o, "results", "results", 1, 0, 100000000, &p->results, reterr)) < 0)
            return r;
        return parse_media(json_object_get(o, "media"), &p->media, reterr);
    }
    case VL3_PROTO_ERROR: {
        struct vl3_proto_error *p = &m->u.error;
        const char *code;
        if ((r = get_str(o, "job", "job", 0, VL3_PROTO_MAX_ID, 1, &p->job_id, reterr)) < 0 ||
            (r = get_str(o, "code", "code", 1, 32, 1, &code, reterr)) < 0 ||
            (r = get_bool(o, "retryable", "retryable", &p->retryable, reterr)) < 0 ||
            (r = get_str(o, "message", "message", 1, VL3_PROTO_MAX_TEXT, 0, &p->message,
                         reterr)) < 0)
            return r;
        p->code = vl3_proto_errcode_parse(code);
        if (p->code < 0)
            return PERR("field \"code\" has unknown value \"%s\"", code);
        return 0;
    }
    case VL3_PROTO_PING:
        return get_i64(o, "seq", "seq", 1, 0, I64_MAX_SANE, &m->u.ping.seq, reterr);
    case VL3_PROTO_PONG:
        if ((r = get_i64(o, "seq", "seq", 1, 0, I64_MAX_SANE, &m->u.pong.seq, reterr)) < 0 ||
            (r = get_str(o, "job", "job", 0, VL3_PROTO_MAX_ID, 1, &m->u.pong.job_id, reterr)) < 0)
            return r;
        return parse_held(json_object_get(o, "jobs"), &m->u.pong, reterr);
    default: return PERR("unknown frame type %d", type);
    }
}

int vl3_proto_msg_parse(const vl3_proto_frame *f, vl3_proto_msg *msg, vl3_error *reterr)
{
    memset(msg, 0, sizeof(*msg));
    if (f->type <= 0 || f->type >= VL3_PROTO_TYPE_COUNT)
        return PERR("unknown frame type %d", f->type);
    if (f->type == VL3_PROTO_TOKENS) {
        if (f->len > VL3_PROTO_MAX_TOKENS)
            return PERR("tokens frame too large");
        msg->type = f->type;
        msg->u.tokens.data = f->payload;
        msg->u.tokens.len = f->len;
        return 0;
    }
    if (f->len > VL3_PROTO_MAX_JSON)
        return PERR("%s frame too large", type_names[f->type]);
    json_error_t je;
    json_t *root = json_loadb((const char *)f->payload, f->len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return PERR("%s frame: invalid JSON at column %d: %s", type_names[f->type], je.column,
                    je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return PERR("%s frame: payload must be a JSON object", type_names[f->type]);
    }
    int r = parse_payload(f->type, root, msg, reterr);
    if (r < 0) {
        json_decref(root);
        memset(msg, 0, sizeof(*msg));
        return vl3_error_prefix(reterr, "%s frame", type_names[f->type]);
    }
    msg->type = f->type;
    msg->root = root;
    return 0;
}

void vl3_proto_msg_free(vl3_proto_msg *msg)
{
    if (!msg)
        return;
    json_decref(msg->root);
    memset(msg, 0, sizeof(*msg));
}

/* ---- encoders: build JSON, then re-parse with the decoder's rules (cheap, and guarantees that
 * every frame we emit is one the other side accepts). ---- */

static int encode(int type, json_t *o, uint8_t **ret, size_t *ret_len, vl3_error *reterr)
{
    if (!o)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    vl3_proto_frame f = {type, (const uint8_t *)s, strlen(s)};
    vl3_proto_msg m;
    int r = f.len > VL3_PROTO_MAX_JSON
                ? vl3_error_set(reterr, VL3_E_LIMIT, "%s frame too large", type_names[type])
                : vl3_proto_msg_parse(&f, &m, reterr);
    if (r == 0) {
        vl3_proto_msg_free(&m);
        r = vl3_proto_frame_build(type, s, f.len, ret, ret_len, reterr);
    }
    free(s);
    return r;
}

/* json_object_set_new tolerating NULL string values (field then omitted) */
static void set_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

int vl3_proto_encode_hello(const struct vl3_proto_hello *m, uint8_t **ret, size_t *ret_len,
                           vl3_error *reterr)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "proto", json_integer(m->proto));
        set_str(o, "worker", m->worker);
        set_str(o, "backend", m->backend);
        json_object_set_new(o, "pid", json_integer(m->pid));
        if (m->credits)
            json_object_set_new(o, "credits", json_integer(m->credits));
    }
    return encode(VL3_PROTO_HELLO, o, ret, ret_len, reterr);
}

int vl3_proto_encode_job(const struct vl3_proto_job *m, uint8_t **ret, size_t *ret_len,
                         vl3_error *reterr)
{
    if (m->ntasks < 0 || m->ntasks > VL3_PROTO_MAX_TASKS)
        return PERR("field \"tasks\" must hold 1 to %d tasks", VL3_PROTO_MAX_TASKS);
    json_t *o = json_object();
    if (o) {
        set_str(o, "job", m->job_id);
        set_str(o, "input", m->input);
        json_t *tasks = json_array();
        for (int i = 0; i < m->ntasks; i++) {
            json_t *t = json_object();
            const char *kn = vl3_task_name(m->tasks[i].kind);
            json_object_set_new(t, "kind", kn ? json_string(kn) : json_integer(m->tasks[i].kind));
            set_str(t, "question", m->tasks[i].question);
            json_array_append_new(tasks, t);
        }
        json_object_set_new(o, "tasks", tasks);
        json_t *s = json_object();
        json_object_set_new(s, "fps", json_real(m->sampling.fps));
        json_object_set_new(s, "max_frames", json_integer(m->sampling.max_frames));
        const char *mn = vl3_sampling_mode_name(m->sampling.mode);
        json_object_set_new(s, "mode", mn ? json_string(mn) : json_integer(m->sampling.mode));
        json_object_set_new(s, "window", json_real(m->sampling.window_s));
        json_object_set_new(o, "sampling", s);
        if (m->max_new_tokens)
            json_object_set_new(o, "max_new_tokens", json_integer(m->max_new_tokens));
        if (m->temperature != 0)
            json_object_set_new(o, "temperature", json_real(m->temperature));
        if (m->attempt)
            json_object_set_new(o, "attempt", json_integer(m->attempt));
        if (m->cache != VL3_CACHE_USE && vl3_cache_mode_name(m->cache))
            set_str(o, "cache", vl3_cache_mode_name(m->cache));
    }
    return encode(VL3_PROTO_JOB, o, ret, ret_len, reterr);
}

int vl3_proto_encode_progress(const struct vl3_proto_progress *m, uint8_t **ret,
                              size_t *ret_len, vl3_error *reterr)
{
    json_t *o = json_object();
    if (o) {
        set_str(o, "job", m->job_id);
        set_str(o, "stage", m->stage);
        json_object_set_new(o, "done", json_integer(m->done));
        json_object_set_new(o, "total", json_integer(m->total));
    }
    return encode(VL3_PROTO_PROGRESS, o, ret, ret_len, reterr);
}

int vl3_proto_encode_result(const struct vl3_proto_result *m, uint8_t **ret, size_t *ret_len,
                            vl3_error *reterr)
{
    json_t *o = json_object();
    if (o) {
        set_str(o, "job", m->job_id);
        json_object_set_new(o, "task", json_integer(m->task));
        json_object_set_new(o, "window", json_integer(m->window));
        json_object_set_new(o, "t_start", json_real(m->t_start));
        json_object_set_new(o, "t_end", json_real(m->t_end));
        set_str(o, "answer", m->answer);
        const struct vl3_proto_stats *s = &m->stats;
        json_t *st = json_object();
        json_object_set_new(st, "frames_decoded", json_integer(s->frames_decoded));
        json_object_set_new(st, "frames_pruned", json_integer(s->frames_pruned));
        json_object_set_new(st, "tokens_generated", json_integer(s->tokens_generated));
        json_object_set_new(st, "batch_size", json_integer(s->batch_size));
        json_object_set_new(st, "decode_ms", json_real(s->decode_ms));
        json_object_set_new(st, "vision_ms", json_real(s->vision_ms));
        json_object_set_new(st, "prefill_ms", json_real(s->prefill_ms));
        json_object_set_new(st, "generate_ms", json_real(s->generate_ms));
        json_object_set_new(st, "frames_sampled", json_integer(s->frames_sampled));
        json_object_set_new(st, "sample_interval_s", json_real(s->sample_interval_s));
        if (s->cache)
            set_str(st, "cache", s->cache == 2 ? "hit" : "miss");
        const struct {
            const char *k;
            int64_t v;
        } opt[] = {{"tokens_total", s->tokens_total},
                   {"tokens_kept", s->tokens_kept},
                   {"prompt_tokens", s->prompt_tokens},
                   {"vision_batch_frames", s->vision_batch_frames},
                   {"vision_batch_windows", s->vision_batch_windows},
                   {"vision_batch_jobs", s->vision_batch_jobs},
                   {"decode_step_jobs", s->decode_step_jobs}};
        for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++)
            if (opt[i].v)
                json_object_set_new(st, opt[i].k, json_integer(opt[i].v));
        json_object_set_new(o, "stats", st);
    }
    return encode(VL3_PROTO_RESULT, o, ret, ret_len, reterr);
}

int vl3_proto_encode_done(const struct vl3_proto_done *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr)
{
    json_t *o = json_object();
    if (o) {
        set_str(o, "job", m->job_id);
        json_object_set_new(o, "results", json_integer(m->results));
        const struct vl3_proto_media *md = &m->media;
        json_t *mo = md->present ? json_object() : NULL;
        if (mo) {
            json_object_set_new(mo, "size", json_integer(md->size));
            json_object_set_new(mo, "mtime", json_integer(md->mtime_s));
            if (md->duration_s > 0)
                json_object_set_new(mo, "duration", json_real(md->duration_s));
            json_object_set_new(mo, "width", json_integer(md->width));
            json_object_set_new(mo, "height", json_integer(md->height));
            if (md->fps > 0)
                json_object_set_new(mo, "fps", json_real(md->fps));
            set_str(mo, "codec", md->codec);
            set_str(mo, "fingerprint", md->fingerprint);
            json_object_set_new(o, "media", mo);
        }
    }
    return encode(VL3_PROTO_DONE, o, ret, ret_len, reterr);
}

int vl3_proto_encode_error(const struct vl3_proto_error *m, uint8_t **ret, size_t *ret_len,
                           vl3_error *reterr)
{
    const char *cn = vl3_proto_errcode_name(m->code);
    if (!cn)
        return PERR("field \"code\" has unknown value %d", m->code);
    json_t *o = json_object();
    if (o) {
        set_str(o, "job", m->job_id);
        json_object_set_new(o, "code", json_string(cn));
        json_object_set_new(o, "retryable", json_boolean(m->retryable));
        set_str(o, "message", m->message);
    }
    return encode(VL3_PROTO_ERROR, o, ret, ret_len, reterr);
}

int vl3_proto_encode_ping(const struct vl3_proto_ping *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr)
{
    json_t *o = json_object();
    if (o)
        json_object_set_new(o, "seq", json_integer(m->seq));
    return encode(VL3_PROTO_PING, o, ret, ret_len, reterr);
}

int vl3_proto_encode_pong(const struct vl3_proto_pong *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "seq", json_integer(m->seq));
        set_str(o, "job", m->job_id);
        if (m->njobs > 0) {
            json_t *a = json_array();
            for (int i = 0; a && i < m->njobs && i < VL3_PROTO_MAX_CREDITS; i++)
                json_array_append_new(a, json_string(m->jobs[i] ? m->jobs[i] : ""));
            json_object_set_new(o, "jobs", a);
        }
    }
    return encode(VL3_PROTO_PONG, o, ret, ret_len, reterr);
}
