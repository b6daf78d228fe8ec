/* test_job.c: Kafka job messages: valid jobs with defaults, malformed JSON, wrong types naming
 * the field, unknown fields ignored, deterministic derived ids, size and policy limits. */
#include "job.h"
#include "test.h"
#include "vl3/util.h"

static int parse(const char *s, struct job **j, vl3_error *e)
{
    return job_parse(s, strlen(s), "vl3.jobs", 3, 1234, NULL, j, e);
}

TEST(job_valid_full)
{
    const char *s = "{\"id\":\"clip-7\",\"input\":\"/archive/a.mp4\",\"tasks\":[\"caption\","
                    "{\"kind\":\"qa\",\"question\":\"who?\"},{\"kind\":\"ocr\"}],"
                    "\"sampling\":{\"fps\":2,\"max_frames\":16,\"mode\":\"exact\",\"window\":10},"
                    "\"priority\":8,\"limits\":{\"max_new_tokens\":50,\"temperature\":0.5},"
                    "\"x-producer\":{\"anything\":[1,2,3]}}";
    struct job *j = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(parse(s, &j, &e), &e);
    ASSERT_STR_EQ(j->id, "clip-7");
    ASSERT_EQ(j->id_derived, 0);
    ASSERT_STR_EQ(j->input, "/archive/a.mp4");
    ASSERT_EQ(j->ntasks, 3);
    ASSERT_EQ(j->tasks[0].kind, VL3_TASK_CAPTION);
    ASSERT_EQ(j->tasks[1].kind, VL3_TASK_QA);
    ASSERT_STR_EQ(j->tasks[1].question, "who?");
    ASSERT_EQ(j->tasks[2].kind, VL3_TASK_OCR);
    ASSERT_NEAR(j->sampling.fps, 2, 0);
    ASSERT_EQ(j->sampling.max_frames, 16);
    ASSERT_EQ(j->sampling.mode, VL3_SAMPLING_EXACT);
    ASSERT_NEAR(j->sampling.window_s, 10, 0);
    ASSERT_EQ(j->priority, 8);
    ASSERT_EQ(j->max_new_tokens, 50);
    ASSERT_NEAR(j->temperature, 0.5, 0);
    ASSERT_EQ(j->partition, 3);
    ASSERT_EQ(j->offset, 1234);
    /* converts into a protocol job that the codec accepts */
    struct vl3_proto_job pj;
    job_to_proto(j, 1, &pj);
    uint8_t *buf;
    size_t len;
    ASSERT_OK_E(vl3_proto_encode_job(&pj, &buf, &len, &e), &e);
    free(buf);
    job_free(j);
    return 0;
}

TEST(job_defaults_and_derived_id)
{
    struct job *a = NULL, *b = NULL;
    vl3_error e = {0};
    const char *s = "{\"input\":\"/v.mkv\",\"tasks\":[\"ocr\"]}";
    ASSERT_OK_E(parse(s, &a, &e), &e);
    ASSERT_OK_E(parse(s, &b, &e), &e);
    ASSERT_STR_EQ(a->id, "vl3.jobs:3:1234");
    ASSERT_EQ(a->id_derived, 1);
    ASSERT_STR_EQ(a->id, b->id); /* same place, same id: redeliveries dedup */
    ASSERT_NEAR(a->sampling.fps, 1.0, 0);
    ASSERT_EQ(a->sampling.max_frames, 180);
    ASSERT_NEAR(a->sampling.window_s, 180.0, 0); /* windows of max_frames / fps seconds */
    ASSERT_EQ(a->sampling.mode, VL3_SAMPLING_FAST);
    ASSERT_EQ(a->priority, JOB_PRIORITY_DEFAULT);
    job_free(a);
    job_free(b);
    /* window absent: max_frames / fps; window 0 stays 0 (one window over the whole video) */
    ASSERT_OK_E(parse("{\"input\":\"/v\",\"tasks\":[\"ocr\"],\"sampling\":{\"fps\":2,"
                      "\"max_frames\":30}}", &a, &e), &e);
    ASSERT_NEAR(a->sampling.window_s, 15.0, 1e-12);
    job_free(a);
    ASSERT_OK_E(parse("{\"input\":\"/v\",\"tasks\":[\"ocr\"],\"sampling\":{\"window\":0}}",
                      &a, &e), &e);
    ASSERT_NEAR(a->sampling.window_s, 0.0, 0);
    ASSERT_EQ(a->sampling.max_frames, 180);
    job_free(a);
    char id1[300], id2[300], id3[300];
    job_derive_id("t", 0, 5, id1, sizeof(id1));
    job_derive_id("t", 0, 6, id2, sizeof(id2));
    ASSERT(strcmp(id1, id2) != 0);
    char longtopic[200];
    memset(longtopic, 'x', sizeof(longtopic) - 1);
    longtopic[199] = 0;
    job_derive_id(longtopic, 1, 2, id3, sizeof(id3));
    ASSERT_LE(strlen(id3), VL3_PROTO_MAX_ID);
    job_derive_id(longtopic, 1, 2, id1, sizeof(id1));
    ASSERT_STR_EQ(id1, id3);
    return 0;
}

TEST(job_rejects_with_field_named)
{
    struct {
        const char *json;
        int code;
        const char *want;
    } cases[] = {
        {"{\"input\":", VL3_E_FORMAT, "invalid JSON"},
        {"", VL3_E_FORMAT, "invalid JSON"},
        {"[]", VL3_E_FORMAT, "JSON object"},
        {"{\"tasks\":[\"ocr\"]}", VL3_E_FORMAT, "field \"input\" is missing"},
        {"{\"input\":7,\"tasks\":[\"ocr\"]}", VL3_E_FORMAT, "field \"input\" must be a string"},
        {"{\"input\":\"rel.mp4\",\"tasks\":[\"ocr\"]}", VL3_E_FORMAT, "absolute path"},
        {"{\"input\":\"/a\"}", VL3_E_FORMAT, "field \"tasks\" is missing"},
        {"{\"input\":\"/a\",\"tasks\":\"ocr\"}", VL3_E_FORMAT, "field \"tasks\" must be an array"},
        {"{\"input\":\"/a\",\"tasks\":[]}", VL3_E_FORMAT, "must not be empty"},
        {"{\"input\":\"/a\",\"tasks\":[\"juggle\"]}", VL3_E_FORMAT, "unknown task \"juggle\""},
        {"{\"input\":\"/a\",\"tasks\":[3]}", VL3_E_FORMAT, "field \"tasks[0]\""},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\",{\"kind\":\"qa\"}]}", VL3_E_FORMAT,
         "field \"tasks[1].question\" is required"},
        {"{\"input\":\"/a\",\"tasks\":[{\"kind\":\"qa\",\"question\":1}]}", VL3_E_FORMAT,
         "field \"tasks[0].question\" must be a string"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"sampling\":{\"fps\":\"fast\"}}", VL3_E_FORMAT,
         "field \"sampling.fps\" must be a number"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"sampling\":{\"max_frames\":1.5}}", VL3_E_FORMAT,
         "field \"sampling.max_frames\" must be an integer"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"sampling\":{\"fps\":0}}", VL3_E_FORMAT,
         "sampling.fps"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"sampling\":{\"mode\":\"slow\"}}", VL3_E_FORMAT,
         "sampling.mode"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"sampling\":[]}", VL3_E_FORMAT,
         "field \"sampling\" must be an object"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"priority\":\"high\"}", VL3_E_FORMAT,
         "field \"priority\" must be an integer"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"priority\":10}", VL3_E_FORMAT, "priority"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"id\":\"\"}", VL3_E_FORMAT, "field \"id\""},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"id\":3}", VL3_E_FORMAT,
         "field \"id\" must be a string"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"limits\":{\"max_new_tokens\":\"9\"}}",
         VL3_E_FORMAT, "limits.max_new_tokens"},
        {"{\"input\":\"/a/../etc/passwd\",\"tasks\":[\"ocr\"]}", VL3_E_POLICY, ".."},
        {"{\"input\":\"/a\",\"input\":\"/b\",\"tasks\":[\"ocr\"]}", VL3_E_FORMAT, "duplicate"},
        /* issue 14: control characters in input (journal forgery), derived-id namespace */
        {"{\"input\":\"/m/a\\n<0>forged.mp4\",\"tasks\":[\"ocr\"]}", VL3_E_FORMAT,
         "field \"input\" must not contain control characters"},
        {"{\"input\":\"/m/a\\u001b[2J.mp4\",\"tasks\":[\"ocr\"]}", VL3_E_FORMAT,
         "control characters"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"id\":\"vl3.jobs:3:1240\"}", VL3_E_FORMAT,
         "reserved"},
        {"{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"id\":\"a:b:0:7\"}", VL3_E_FORMAT,
         "reserved"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct job *j = NULL;
        vl3_error e = {0};
        int r = parse(cases[i].json, &j, &e);
        if (r != cases[i].code)
            TEST__FAIL("case %zu (%s): got %d (%s), want %d", i, cases[i].json, r, e.msg,
                       cases[i].code);
        if (!strstr(e.msg, cases[i].want))
            TEST__FAIL("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].want);
        ASSERT(j == NULL);
    }
    return 0;
}

/* ids that only resemble the derived form stay allowed */
TEST(job_explicit_ids_outside_the_derived_namespace)
{
    static const char *ok[] = {"x:1", "x:1:y", ":1:2", "x::2", "x:1:", "clip-7", "a:b:c"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char json[200];
        snprintf(json, sizeof(json), "{\"input\":\"/a\",\"tasks\":[\"ocr\"],\"id\":\"%s\"}", ok[i]);
        struct job *j = NULL;
        vl3_error e = {0};
        int r = parse(json, &j, &e);
        if (r != 0)
            TEST__FAIL("id \"%s\" refused: %s", ok[i], e.msg);
        ASSERT_STR_EQ(j->id, ok[i]);
        job_free(j);
    }
    /* the derived id of this message keeps its form */
    struct job *j = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(parse("{\"input\":\"/a\",\"tasks\":[\"ocr\"]}", &j, &e), &e);
    ASSERT_STR_EQ(j->id, "vl3.jobs:3:1234");
    job_free(j);
    return 0;
}

TEST(job_policy_limits)
{
    struct job_policy pol = {.max_bytes = 100, .input_roots = "/archive:/mnt/media/",
                             .max_frames_cap = 128};
    struct job *j = NULL;
    vl3_error e = {0};
    const char *ok = "{\"input\":\"/mnt/media/x.mp4\",\"tasks\":[\"ocr\"]}";
    ASSERT_OK_E(job_parse(ok, strlen(ok), "t", 0, 0, &pol, &j, &e), &e);
    job_free(j);
    j = NULL;
    const char *out = "{\"input\":\"/archived/x.mp4\",\"tasks\":[\"ocr\"]}"; /* prefix trap */
    ASSERT_EQ(job_parse(out, strlen(out), "t", 0, 0, &pol, &j, &e), VL3_E_POLICY);
    ASSERT_STR_CONTAINS(e.msg, "outside the allowed roots");
    const char *many = "{\"input\":\"/archive/x\",\"tasks\":[\"ocr\"],\"sampling\":{\"max_frames\":"
                       "999}}";
    ASSERT_EQ(job_parse(many, strlen(many), "t", 0, 0, &pol, &j, &e), VL3_E_POLICY);
    char big[200];
    memset(big, ' ', sizeof(big));
    ASSERT_EQ(job_parse(big, sizeof(big), "t", 0, 0, &pol, &j, &e), VL3_E_LIMIT);
    ASSERT(j == NULL);
    return 0;
}

/* the documented examples: valid ones parse, invalid-*.json fail naming the field */
TEST(job_schema_examples)
{
    static const struct {
        const char *file;
        int code;
        const char *want; /* substring of the error, or of the id */
    } ex[] = {
        {"caption-ocr.json", 0, "t:0:7"},
        {"qa-windows.json", 0, "lecture-17-q1"},
        {"image.json", 0, "scan-0042"},
        {"invalid-wrong-type.json", VL3_E_FORMAT, "field \"sampling.fps\" must be a number"},
        {"invalid-missing-question.json", VL3_E_FORMAT, "field \"tasks[0].question\" is required"},
    };
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        char path[4096], *buf = NULL;
        size_t len;
        snprintf(path, sizeof(path), "%s/schema/examples/%s", test_source_dir(), ex[i].file);
        vl3_error e = {0};
        ASSERT_OK_E(vl3_file_read(path, 1 << 20, &buf, &len, &e), &e);
        struct job *j = NULL;
        int r = job_parse(buf, len, "t", 0, 7, NULL, &j, &e);
        free(buf);
        if (r != ex[i].code)
            TEST__FAIL("%s: got %d (%s), want %d", ex[i].file, r, e.msg, ex[i].code);
        if (r == 0) {
            ASSERT_STR_EQ(j->id, ex[i].want);
            job_free(j);
        } else {
            ASSERT_STR_CONTAINS(e.msg, ex[i].want);
        }
    }
    return 0;
}

TEST(job_batch_field)
{
    struct job *j = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(parse("{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"],\"batch\":\"b20261205T1-7\"}", &j,
                      &e),
                &e);
    ASSERT_STR_EQ(j->batch, "b20261205T1-7");
    job_free(j);
    j = NULL;
    ASSERT_OK_E(parse("{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"]}", &j, &e), &e);
    ASSERT_EQ(j->batch == NULL, 1);
    job_free(j);
    j = NULL;
    static const char *const bad[] = {
        "{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"],\"batch\":\"\"}",
        "{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"],\"batch\":7}",
        "{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"],\"batch\":\"a\\nb\"}",
        ("{\"input\":\"/v.mp4\",\"tasks\":[\"ocr\"],\"batch\":"
         "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        ASSERT_EQ(parse(bad[i], &j, &e), VL3_E_FORMAT);
        ASSERT_STR_CONTAINS(e.msg, "batch");
    }
    return 0;
}

/* "cache": use (default), refresh, off; anything else is refused naming the field; the mode
 * reaches the worker's JOB frame. */
TEST(job_cache_field)
{
    const char *modes[3] = {"use", "refresh", "off"};
    vl3_error e = {0};
    struct job *j = NULL;
    struct vl3_proto_job p;
    ASSERT_OK_E(parse("{\"input\":\"/m/a.mp4\",\"tasks\":[{\"kind\":\"caption\"}]}", &j, &e), &e);
    ASSERT_EQ(j->cache, VL3_CACHE_USE);
    job_free(j);
    for (int i = 0; i < 3; i++) {
        char s[256];
        snprintf(s, sizeof(s), "{\"input\":\"/m/a.mp4\",\"tasks\":[{\"kind\":\"caption\"}],"
                               "\"cache\":\"%s\"}", modes[i]);
        ASSERT_OK_E(parse(s, &j, &e), &e);
        ASSERT_EQ(j->cache, i);
        job_to_proto(j, 1, &p);
        ASSERT_EQ(p.cache, i);
        job_free(j);
    }
    ASSERT_EQ(parse("{\"input\":\"/m/a.mp4\",\"tasks\":[{\"kind\":\"caption\"}],\"cache\":\"yes\"}",
                    &j, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "cache");
    ASSERT_EQ(parse("{\"input\":\"/m/a.mp4\",\"tasks\":[{\"kind\":\"caption\"}],\"cache\":1}", &j,
                    &e), VL3_E_FORMAT);
    return 0;
}
