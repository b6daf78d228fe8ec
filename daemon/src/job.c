/* job.c: parsing and validating Kafka job messages (see job.h, schema/job.schema.json).
 *
 * The payload is untrusted: size is checked before parsing, duplicates and NUL bytes are
 * rejected by the JSON parser, each known field is type-checked through vl3/json.h (errors name
 * the field) and range-checked; unknown fields are ignored so producers can add metadata. */
#include "job.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/json.h"
#include "vl3/sampling_defaults.h"

#define FERR(...) vl3_error_set(reterr, VL3_E_FORMAT, __VA_ARGS__)

void job_derive_id(const char *topic, int32_t partition, int64_t offset, char *buf, size_t size)
{
    if (strlen(topic) <= 128) {
        snprintf(buf, size, "%s:%" PRId32 ":%" PRId64, topic, partition, offset);
        return;
    }
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)topic; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    snprintf(buf, size, "t%016" PRIx64 ":%" PRId32 ":%" PRId64, h, partition, offset);
}

static int id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VL3_PROTO_MAX_ID)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Whether an explicit id looks like a derived one ("<topic>:<partition>:<offset>", both numbers
 * decimal): such an id could be taken by a later message's derived id, whose job would then be
 * computed and discarded as already done, so explicit ids of that form are refused. */
static int id_is_derived_form(const char *s)
{
    const char *c2 = strrchr(s, ':');
    if (!c2 || c2 == s || !c2[1])
        return 0;
    const char *c1 = c2 - 1;
    while (c1 > s && *c1 != ':')
        c1--;
    if (*c1 != ':' || c1 == s || c1 + 1 == c2)
        return 0;
    for (const char *p = c1 + 1; p < c2; p++)
        if (*p < '0' || *p > '9')
            return 0;
    for (const char *p = c2 + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

static int input_allowed(const char *input, const char *roots)
{
    if (!roots || !*roots)
        return 1;
    const char *p = roots;
    while (*p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n > 1 && p[n - 1] == '/')
            n--;
        if (n > 0 && strncmp(input, p, n) == 0 && (input[n] == '/' || (n == 1 && p[0] == '/')))
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

static int parse_tasks(json_t *arr, struct job *j, vl3_error *reterr)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return FERR("field \"tasks\" must not be empty");
    if (n > VL3_PROTO_MAX_TASKS)
        return FERR("field \"tasks\" has %zu entries, at most %d allowed", n,
                    VL3_PROTO_MAX_TASKS);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        const char *kind = NULL, *question = NULL;
        if (json_is_string(t)) {
            kind = json_string_value(t);
        } else if (json_is_object(t)) {
            vl3_error e = {0};
            int r = vl3_json_get_string(t, "kind", &kind, &e);
            if (r == -ENOENT)
                return FERR("field \"tasks[%zu].kind\" is missing", i);
            if (r < 0)
                return FERR("field \"tasks[%zu].kind\" must be a string", i);
            r = vl3_json_get_string(t, "question", &question, &e);
            if (r < 0 && r != -ENOENT)
                return FERR("field \"tasks[%zu].question\" must be a string", i);
        } else {
            return FERR("field \"tasks[%zu]\" must be a string or an object", i);
        }
        int k = vl3_task_kind_parse(kind);
        if (k < 0)
            return FERR("field \"tasks[%zu]\" has unknown task \"%s\" (caption, ocr, chart_qa, qa)",
                        i, kind);
        int needs_q = k == VL3_TASK_CHART_QA || k == VL3_TASK_QA;
        if (needs_q && (!question || !*question))
            return FERR("field \"tasks[%zu].question\" is required for task \"%s\"", i, kind);
        if (question && strlen(question) > VL3_PROTO_MAX_TEXT)
            return FERR("field \"tasks[%zu].question\" is longer than %d bytes", i,
                        VL3_PROTO_MAX_TEXT);
        j->tasks[i].kind = k;
        j->tasks[i].question = needs_q ? question : NULL;
    }
    j->ntasks = (int)n;
    return 0;
}

static int parse_sampling(json_t *s, struct job *j, const struct job_policy *pol,
                          vl3_error *reterr)
{
    char name[64];
    int64_t mf = j->sampling.max_frames;
    double window = 0;
    int have_window = s && json_object_get(s, "window") != NULL; /* absent: max_frames / fps */
    const char *mode = NULL;
    vl3_error e = {0};
#define NAMED(call, field)                                                                         \
    do {                                                                                           \
        int r_ = (call);                                                                           \
        if (r_ < 0 && r_ != -ENOENT) {                                                             \
            const char *m_ = strstr(e.msg, "must be ");                                            \
            snprintf(name, sizeof(name), "sampling.%s", field);                                    \
            return FERR("field \"%s\" %s", name, m_ ? m_ : "has the wrong type");                 \
        }                                                                                          \
    } while (0)
    NAMED(vl3_json_get_number(s, "fps", &j->sampling.fps, &e), "fps");
    NAMED(vl3_json_get_int(s, "max_frames", &mf, &e), "max_frames");
    NAMED(vl3_json_get_string(s, "mode", &mode, &e), "mode");
    NAMED(vl3_json_get_number(s, "window", &window, &e), "window");
#undef NAMED
    if (!(j->sampling.fps > 0 && j->sampling.fps <= 1000))
        return FERR("field \"sampling.fps\" must be in (0, 1000]");
    if (mf < 1 || mf > 1000000)
        return FERR("field \"sampling.max_frames\" must be in [1, 1000000]");
    if (pol && pol->max_frames_cap > 0 && mf > pol->max_frames_cap)
        return vl3_error_set(reterr, VL3_E_POLICY,
                             "field \"sampling.max_frames\" is %" PRId64 ", above the limit %" PRId64,
                             mf, pol->max_frames_cap);
    j->sampling.max_frames = mf;
    if (mode) {
        int m = vl3_sampling_mode_parse(mode);
        if (m < 0)
            return FERR("field \"sampling.mode\" must be \"fast\" or \"exact\"");
        j->sampling.mode = m;
    }
    if (!have_window)
        window = vl3_sampling_window_default(j->sampling.fps, mf);
    else if (!(window >= 0 && window <= 1e7))
        return FERR("field \"sampling.window\" must be in [0, 10000000] seconds");
    j->sampling.window_s = window;
    return 0;
}

int job_parse(const void *payload, size_t len, const char *topic, int32_t partition,
              int64_t offset, const struct job_policy *pol, struct job **ret, vl3_error *reterr)
{
    size_t max = pol && pol->max_bytes ? pol->max_bytes : JOB_MAX_BYTES_DEFAULT;
    if (len > max)
        return vl3_error_set(reterr, VL3_E_LIMIT, "message of %zu bytes exceeds the limit of %zu",
                             len, max);
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    int r;
    j->partition = partition;
    j->offset = offset;
    j->priority = JOB_PRIORITY_DEFAULT;
    j->sampling = (struct vl3_proto_sampling){.fps = VL3_SAMPLING_FPS_DEFAULT,
                                              .max_frames = VL3_SAMPLING_MAX_FRAMES_DEFAULT,
                                              .mode = VL3_SAMPLING_FAST, .window_s = 0};
    if (!(j->topic = strdup(topic ? topic : ""))) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    json_error_t je;
    j->root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &je);
    if (!j->root) {
        r = FERR("invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        goto fail;
    }
    if (!json_is_object(j->root)) {
        r = FERR("a job must be a JSON object");
        goto fail;
    }
    const char *id = NULL;
    r = vl3_json_get_string(j->root, "id", &id, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    if (id) {
        if (!id_ok(id)) {
            r = FERR("field \"id\" must be 1 to %d printable bytes", VL3_PROTO_MAX_ID);
            goto fail;
        }
        if (id_is_derived_form(id)) {
            r = FERR("field \"id\" has the form \"<topic>:<partition>:<offset>\" reserved for "
                     "the ids of messages without one");
            goto fail;
        }
        snprintf(j->id, sizeof(j->id), "%s", id);
    } else {
        job_derive_id(j->topic, partition, offset, j->id, sizeof(j->id));
        j->id_derived = 1;
    }
    r = vl3_json_get_string(j->root, "batch", &j->batch, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    if (j->batch && (!id_ok(j->batch) || strlen(j->batch) > JOB_MAX_BATCH)) {
        r = FERR("field \"batch\" must be 1 to %d printable bytes", JOB_MAX_BATCH);
        goto fail;
    }
    r = vl3_json_get_string(j->root, "input", &j->input, reterr);
    if (r == -ENOENT) {
        r = FERR("field \"input\" is missing");
        goto fail;
    }
    if (r < 0)
        goto fail;
    if (!id_ok(j->input)) {
        r = FERR("field \"input\" must not contain control characters");
        goto fail;
    }
    if (j->input[0] != '/' || strlen(j->input) > VL3_PROTO_MAX_PATH) {
        r = FERR("field \"input\" must be an absolute path of at most %d bytes",
                 VL3_PROTO_MAX_PATH);
        goto fail;
    }
    if (strstr(j->input, "/../") || (strlen(j->input) >= 3 &&
                                     strcmp(j->input + strlen(j->input) - 3, "/..") == 0)) {
        r = vl3_error_set(reterr, VL3_E_POLICY, "input \"%s\" contains \"..\"", j->input);
        goto fail;
    }
    if (!input_allowed(j->input, pol ? pol->input_roots : NULL)) {
        r = vl3_error_set(reterr, VL3_E_POLICY, "input \"%s\" is outside the allowed roots",
                          j->input);
        goto fail;
    }
    json_t *tasks;
    r = vl3_json_get_array(j->root, "tasks", &tasks, reterr);
    if (r == -ENOENT) {
        r = FERR("field \"tasks\" is missing");
        goto fail;
    }
    if (r < 0 || (r = parse_tasks(tasks, j, reterr)) < 0)
        goto fail;
    json_t *s;
    r = vl3_json_get_object(j->root, "sampling", &s, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    if (r == 0 && (r = parse_sampling(s, j, pol, reterr)) < 0)
        goto fail;
    if (r == -ENOENT) /* default sampling: windows of max_frames / fps seconds */
        j->sampling.window_s = vl3_sampling_window_default(j->sampling.fps,
                                                           j->sampling.max_frames);
    int64_t prio = JOB_PRIORITY_DEFAULT;
    r = vl3_json_get_int(j->root, "priority", &prio, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    if (prio < 0 || prio > 9) {
        r = FERR("field \"priority\" must be in [0, 9]");
        goto fail;
    }
    j->priority = (int)prio;
    const char *cache = NULL;
    r = vl3_json_get_string(j->root, "cache", &cache, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    j->cache = r == -ENOENT ? VL3_CACHE_USE : vl3_cache_mode_parse(cache);
    if (j->cache < 0) {
        r = FERR("field \"cache\" must be \"use\", \"refresh\" or \"off\"");
        goto fail;
    }
    json_t *lim;
    r = vl3_json_get_object(j->root, "limits", &lim, reterr);
    if (r < 0 && r != -ENOENT)
        goto fail;
    if (r == 0) {
        vl3_error e = {0};
        r = vl3_json_get_int(lim, "max_new_tokens", &j->max_new_tokens, &e);
        if (r < 0 && r != -ENOENT) {
            r = FERR("field \"limits.max_new_tokens\" must be an integer");
            goto fail;
        }
        if (j->max_new_tokens < 0 || j->max_new_tokens > 1 << 20) {
            r = FERR("field \"limits.max_new_tokens\" must be in [0, 1048576]");
            goto fail;
        }
        r = vl3_json_get_number(lim, "temperature", &j->temperature, &e);
        if (r < 0 && r != -ENOENT) {
            r = FERR("field \"limits.temperature\" must be a number");
            goto fail;
        }
        if (!(j->temperature >= 0 && j->temperature <= 10)) {
            r = FERR("field \"limits.temperature\" must be in [0, 10]");
            goto fail;
        }
    }
    *ret = j;
    return 0;
fail:
    job_free(j);
    return r;
}

void job_to_proto(const struct job *j, int attempt, struct vl3_proto_job *p)
{
    memset(p, 0, sizeof(*p));
    p->job_id = j->id;
    p->input = j->input;
    p->ntasks = j->ntasks;
    memcpy(p->tasks, j->tasks, sizeof(p->tasks));
    p->sampling = j->sampling;
    p->max_new_tokens = j->max_new_tokens;
    p->temperature = j->temperature;
    p->attempt = attempt;
    p->cache = j->cache;
}

void job_free(struct job *j)
{
    if (!j)
        return;
    json_decref(j->root);
    free(j->topic);
    free(j);
}
