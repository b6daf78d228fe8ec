/* test_proto.c: the daemon <-> worker frame codec: round trips of every typed message, a stream
 * split at every byte boundary, and hostile input (truncated, oversized, bad header, garbage,
 * wrong field types) that must give VL3_E_PROTO naming the problem, never a crash. */
#include "test.h"
#include "vl3/proto.h"

static int feed_all(vl3_proto_reader *r, const uint8_t *b, size_t n, vl3_proto_frame *f,
                    vl3_error *e)
{
    int rc = vl3_proto_reader_feed(r, b, n);
    if (rc < 0)
        return rc;
    return vl3_proto_reader_next(r, f, e);
}

TEST(proto_job_roundtrip)
{
    struct vl3_proto_job j = {
        .job_id = "job-1", .input = "/data/a b.mp4", .ntasks = 3,
        .tasks = {{VL3_TASK_CAPTION, NULL}, {VL3_TASK_QA, "what colour is the car?"},
                  {VL3_TASK_CHART_QA, "max value?"}},
        .sampling = {.fps = 0.5, .max_frames = 32, .mode = VL3_SAMPLING_EXACT, .window_s = 30},
        .max_new_tokens = 77, .temperature = 0.25, .attempt = 2, .cache = VL3_CACHE_REFRESH};
    uint8_t *buf;
    size_t len;
    vl3_error e = {0};
    ASSERT_OK_E(vl3_proto_encode_job(&j, &buf, &len, &e), &e);
    ASSERT_EQ(buf[0], 'V');
    ASSERT_EQ(buf[1], VL3_PROTO_VERSION);
    ASSERT_EQ(buf[2], VL3_PROTO_JOB);
    ASSERT_EQ(((size_t)buf[4] << 24 | (size_t)buf[5] << 16 | (size_t)buf[6] << 8 | buf[7]),
              len - 8);
    vl3_proto_reader r;
    vl3_proto_reader_init(&r);
    vl3_proto_frame f;
    ASSERT_EQ(feed_all(&r, buf, len, &f, &e), 1);
    vl3_proto_msg m;
    ASSERT_OK_E(vl3_proto_msg_parse(&f, &m, &e), &e);
    ASSERT_EQ(m.type, VL3_PROTO_JOB);
    ASSERT_STR_EQ(m.u.job.job_id, "job-1");
    ASSERT_STR_EQ(m.u.job.input, "/data/a b.mp4");
    ASSERT_EQ(m.u.job.ntasks, 3);
    ASSERT_EQ(m.u.job.tasks[1].kind, VL3_TASK_QA);
    ASSERT_STR_EQ(m.u.job.tasks[1].question, "what colour is the car?");
    ASSERT(m.u.job.tasks[0].question == NULL);
    ASSERT_NEAR(m.u.job.sampling.fps, 0.5, 0);
    ASSERT_EQ(m.u.job.sampling.max_frames, 32);
    ASSERT_EQ(m.u.job.sampling.mode, VL3_SAMPLING_EXACT);
    ASSERT_NEAR(m.u.job.sampling.window_s, 30, 0);
    ASSERT_EQ(m.u.job.max_new_tokens, 77);
    ASSERT_NEAR(m.u.job.temperature, 0.25, 0);
    ASSERT_EQ(m.u.job.attempt, 2);
    ASSERT_EQ(m.u.job.cache, VL3_CACHE_REFRESH);
    vl3_proto_msg_free(&m);
    ASSERT_EQ(vl3_proto_reader_next(&r, &f, &e), 0); /* nothing left */
    vl3_proto_reader_deinit(&r);
    free(buf);
    return 0;
}

/* several frames of every worker->daemon type, fed one byte at a time */
TEST(proto_stream_bytewise)
{
    vl3_error e = {0};
    uint8_t *parts[6];
    size_t lens[6], total = 0;
    struct vl3_proto_hello h = {VL3_PROTO_LEVEL, "fake 1", "cpu", 42, 4};
    struct vl3_proto_progress p = {"j", "decode", 3, 10};
    struct vl3_proto_result res = {"j", 1, 4, 10.0, 20.5, "a dog on a \"sofa\"\n", {0}};
    res.stats = (struct vl3_proto_stats){.frames_decoded = 7, .frames_pruned = 3,
                                         .tokens_generated = 12, .batch_size = 2,
                                         .decode_ms = 1.5, .vision_ms = 2.5, .prefill_ms = 3.5,
                                         .generate_ms = 4.5, .frames_sampled = 41,
                                         .sample_interval_s = 0.25};
    res.stats.cache = 2;
    struct vl3_proto_done d = {"j", 5, {1, 123456, 1700000000, 12.5, 320, 240, 29.97, "h264",
                                        "0123abcd:123456"}};
    struct vl3_proto_error er = {"j", VL3_PERR_DECODE, 0, "could not decode"};
    struct vl3_proto_pong pg = {99, "j", 2, {"j", "k"}};
    res.stats.tokens_total = 640;
    res.stats.tokens_kept = 410;
    res.stats.prompt_tokens = 437;
    res.stats.vision_batch_jobs = 3;
    res.stats.decode_step_jobs = 2;
    ASSERT_OK_E(vl3_proto_encode_hello(&h, &parts[0], &lens[0], &e), &e);
    ASSERT_OK_E(vl3_proto_encode_progress(&p, &parts[1], &lens[1], &e), &e);
    ASSERT_OK_E(vl3_proto_encode_result(&res, &parts[2], &lens[2], &e), &e);
    ASSERT_OK_E(vl3_proto_encode_done(&d, &parts[3], &lens[3], &e), &e);
    ASSERT_OK_E(vl3_proto_encode_error(&er, &parts[4], &lens[4], &e), &e);
    ASSERT_OK_E(vl3_proto_encode_pong(&pg, &parts[5], &lens[5], &e), &e);
    uint8_t all[8192];
    for (int i = 0; i < 6; i++) {
        ASSERT_LE(total + lens[i], sizeof(all));
        memcpy(all + total, parts[i], lens[i]);
        total += lens[i];
        free(parts[i]);
    }
    vl3_proto_reader r;
    vl3_proto_reader_init(&r);
    int got = 0;
    for (size_t i = 0; i < total; i++) {
        ASSERT_OK(vl3_proto_reader_feed(&r, all + i, 1));
        vl3_proto_frame f;
        int rc;
        while ((rc = vl3_proto_reader_next(&r, &f, &e)) == 1) {
            vl3_proto_msg m;
            ASSERT_OK_E(vl3_proto_msg_parse(&f, &m, &e), &e);
            switch (got) {
            case 0:
                ASSERT_EQ(m.type, VL3_PROTO_HELLO);
                ASSERT_STR_EQ(m.u.hello.worker, "fake 1");
                ASSERT_EQ(m.u.hello.pid, 42);
                ASSERT_EQ(m.u.hello.proto, 2);
                ASSERT_EQ(m.u.hello.credits, 4);
                break;
            case 1:
                ASSERT_EQ(m.type, VL3_PROTO_PROGRESS);
                ASSERT_EQ(m.u.progress.done, 3);
                ASSERT_EQ(m.u.progress.total, 10);
                break;
            case 2:
                ASSERT_EQ(m.type, VL3_PROTO_RESULT);
                ASSERT_STR_EQ(m.u.result.answer, "a dog on a \"sofa\"\n");
                ASSERT_EQ(m.u.result.task, 1);
                ASSERT_EQ(m.u.result.window, 4);
                ASSERT_NEAR(m.u.result.t_end, 20.5, 0);
                ASSERT_EQ(m.u.result.stats.frames_decoded, 7);
                ASSERT_EQ(m.u.result.stats.tokens_generated, 12);
                ASSERT_NEAR(m.u.result.stats.generate_ms, 4.5, 0);
                ASSERT_EQ(m.u.result.stats.frames_sampled, 41);
                ASSERT_NEAR(m.u.result.stats.sample_interval_s, 0.25, 0);
                ASSERT_EQ(m.u.result.stats.cache, 2); /* "hit" */
                ASSERT_EQ(m.u.result.stats.tokens_total, 640);
                ASSERT_EQ(m.u.result.stats.tokens_kept, 410);
                ASSERT_EQ(m.u.result.stats.prompt_tokens, 437);
                ASSERT_EQ(m.u.result.stats.vision_batch_jobs, 3);
                ASSERT_EQ(m.u.result.stats.decode_step_jobs, 2);
                ASSERT_EQ(m.u.result.stats.vision_batch_windows, 0); /* absent = 0 */
                break;
            case 3:
                ASSERT_EQ(m.type, VL3_PROTO_DONE);
                ASSERT_EQ(m.u.done.results, 5);
                ASSERT(m.u.done.media.present);
                ASSERT_EQ(m.u.done.media.size, 123456);
                ASSERT_EQ(m.u.done.media.mtime_s, 1700000000);
                ASSERT_NEAR(m.u.done.media.duration_s, 12.5, 0);
                ASSERT_EQ(m.u.done.media.width, 320);
                ASSERT_EQ(m.u.done.media.height, 240);
                ASSERT_NEAR(m.u.done.media.fps, 29.97, 0);
                ASSERT_STR_EQ(m.u.done.media.codec, "h264");
                ASSERT_STR_EQ(m.u.done.media.fingerprint, "0123abcd:123456");
                break;
            case 4:
                ASSERT_EQ(m.type, VL3_PROTO_ERROR);
                ASSERT_EQ(m.u.error.code, VL3_PERR_DECODE);
                ASSERT_EQ(m.u.error.retryable, 0);
                ASSERT_STR_EQ(m.u.error.message, "could not decode");
                break;
            case 5:
                ASSERT_EQ(m.type, VL3_PROTO_PONG);
                ASSERT_EQ(m.u.pong.seq, 99);
                ASSERT_STR_EQ(m.u.pong.job_id, "j");
                ASSERT_EQ(m.u.pong.njobs, 2);
                ASSERT_STR_EQ(m.u.pong.jobs[1], "k");
                break;
            }
            got++;
            vl3_proto_msg_free(&m);
        }
        ASSERT_OK(rc);
    }
    ASSERT_EQ(got, 6);
    vl3_proto_reader_deinit(&r);
    return 0;
}

static void hdr(uint8_t *b, uint8_t magic, uint8_t ver, uint8_t type, uint8_t flags, uint32_t len)
{
    b[0] = magic, b[1] = ver, b[2] = type, b[3] = flags;
    b[4] = (uint8_t)(len >> 24), b[5] = (uint8_t)(len >> 16), b[6] = (uint8_t)(len >> 8),
    b[7] = (uint8_t)len;
}

TEST(proto_bad_headers)
{
    struct {
        uint8_t magic, ver, type, flags;
        uint32_t len;
        const char *want;
    } cases[] = {
        {'X', 1, 2, 0, 2, "magic"},
        {'V', 2, 2, 0, 2, "version"},
        {'V', 1, 0, 0, 2, "unknown frame type"},
        {'V', 1, VL3_PROTO_TYPE_COUNT, 0, 2, "unknown frame type"},
        {'V', 1, 2, 1, 2, "flags"},
        {'V', 1, VL3_PROTO_JOB, 0, VL3_PROTO_MAX_JSON + 1, "exceeds the limit"},
        {'V', 1, VL3_PROTO_TOKENS, 0, VL3_PROTO_MAX_TOKENS + 1, "exceeds the limit"},
        {'V', 1, VL3_PROTO_PING, 0, 0xffffffffu, "exceeds the limit"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t b[8];
        hdr(b, cases[i].magic, cases[i].ver, cases[i].type, cases[i].flags, cases[i].len);
        vl3_proto_reader r;
        vl3_proto_reader_init(&r);
        vl3_proto_frame f;
        vl3_error e = {0};
        ASSERT_EQ(feed_all(&r, b, 8, &f, &e), VL3_E_PROTO);
        ASSERT_STR_CONTAINS(e.msg, cases[i].want);
        /* broken for good: more bytes are refused */
        ASSERT_EQ(vl3_proto_reader_feed(&r, b, 8), VL3_E_PROTO);
        /* the oversized header did not make the reader allocate the claimed length */
        ASSERT_LE(r.cap, 4096);
        vl3_proto_reader_deinit(&r);
    }
    return 0;
}

TEST(proto_truncated_waits)
{
    struct vl3_proto_ping p = {7};
    uint8_t *buf;
    size_t len;
    vl3_error e = {0};
    ASSERT_OK(vl3_proto_encode_ping(&p, &buf, &len, &e));
    for (size_t cut = 0; cut < len; cut++) {
        vl3_proto_reader r;
        vl3_proto_reader_init(&r);
        vl3_proto_frame f;
        ASSERT_EQ(feed_all(&r, buf, cut, &f, &e), 0); /* incomplete: needs more, not an error */
        ASSERT_EQ(feed_all(&r, buf + cut, len - cut, &f, &e), 1);
        ASSERT_EQ(f.type, VL3_PROTO_PING);
        vl3_proto_reader_deinit(&r);
    }
    free(buf);
    return 0;
}

static int parse_json(int type, const char *json, vl3_error *e)
{
    vl3_proto_frame f = {type, (const uint8_t *)json, strlen(json)};
    vl3_proto_msg m;
    int r = vl3_proto_msg_parse(&f, &m, e);
    vl3_proto_msg_free(&m);
    return r;
}

TEST(proto_bad_payloads)
{
    struct {
        int type;
        const char *json, *want;
    } cases[] = {
        {VL3_PROTO_JOB, "{", "invalid JSON"},
        {VL3_PROTO_JOB, "[1,2]", "must be a JSON object"},
        {VL3_PROTO_JOB, "\x01\x02garbage", "invalid JSON"},
        {VL3_PROTO_JOB, "{\"job\":\"a\",\"job\":\"b\"}", "invalid JSON"}, /* duplicate key */
        {VL3_PROTO_JOB, "{\"input\":\"/x\"}", "field \"job\" is missing"},
        {VL3_PROTO_JOB, "{\"job\":5,\"input\":\"/x\"}", "field \"job\" must be a string"},
        {VL3_PROTO_JOB, "{\"job\":\"a\",\"input\":\"rel\",\"tasks\":[]}", "absolute path"},
        {VL3_PROTO_JOB, "{\"job\":\"a\\u0000b\",\"input\":\"/x\"}", "invalid JSON"},
        {VL3_PROTO_JOB, "{\"job\":\"a\",\"input\":\"/x\",\"tasks\":[]}", "1 to 16 tasks"},
        {VL3_PROTO_JOB, "{\"job\":\"a\",\"input\":\"/x\",\"tasks\":[{\"kind\":\"qa\"}]}",
         "field \"tasks[0].question\" is missing"},
        {VL3_PROTO_JOB, "{\"job\":\"a\",\"input\":\"/x\",\"tasks\":[{\"kind\":\"dance\"}]}",
         "unknown task"},
        {VL3_PROTO_JOB,
         "{\"job\":\"a\",\"input\":\"/x\",\"tasks\":[{\"kind\":\"ocr\"}],\"sampling\":{\"fps\":"
         "\"1\",\"max_frames\":1,\"mode\":\"fast\"}}",
         "field \"sampling.fps\" must be a number"},
        {VL3_PROTO_JOB,
         "{\"job\":\"a\",\"input\":\"/x\",\"tasks\":[{\"kind\":\"ocr\"}],\"sampling\":{\"fps\":"
         "1,\"max_frames\":0,\"mode\":\"fast\"}}",
         "sampling.max_frames\" out of range"},
        {VL3_PROTO_HELLO, "{\"proto\":3,\"worker\":\"w\"}", "protocol 3"},
        {VL3_PROTO_HELLO, "{\"proto\":2,\"worker\":\"w\",\"credits\":0}", "credits"},
        {VL3_PROTO_PONG, "{\"seq\":1,\"jobs\":[\"a\",7]}", "jobs[1]"},
        {VL3_PROTO_RESULT, "{\"job\":\"j\",\"task\":99,\"answer\":\"x\"}",
         "field \"task\" out of range"},
        {VL3_PROTO_RESULT, "{\"job\":\"j\",\"task\":0,\"answer\":\"x\",\"stats\":{\"batch_size\":"
                           "-1}}",
         "stats.batch_size"},
        {VL3_PROTO_RESULT, "{\"job\":\"j\",\"task\":0,\"answer\":\"x\",\"stats\":{\"tokens_kept\":"
                           "\"5\"}}",
         "field \"stats.tokens_kept\" must be an integer"},
        {VL3_PROTO_RESULT, "{\"job\":\"j\",\"task\":0,\"answer\":\"x\",\"t_start\":5,\"t_end\":1}",
         "before"},
        {VL3_PROTO_ERROR, "{\"code\":\"weird\",\"retryable\":true,\"message\":\"m\"}",
         "unknown value"},
        {VL3_PROTO_ERROR, "{\"code\":\"decode\",\"retryable\":1,\"message\":\"m\"}",
         "field \"retryable\" must be a boolean"},
        {VL3_PROTO_DONE, "{\"job\":\"j\",\"results\":1,\"media\":[]}",
         "field \"media\" must be an object"},
        {VL3_PROTO_DONE, "{\"job\":\"j\",\"results\":1,\"media\":{\"width\":2}}",
         "field \"media.size\" is missing"},
        {VL3_PROTO_DONE, "{\"job\":\"j\",\"results\":1,\"media\":{\"size\":-1}}",
         "media.size\" out of range"},
        {VL3_PROTO_DONE, "{\"job\":\"j\",\"results\":1,\"media\":{\"size\":1,\"codec\":7}}",
         "field \"media.codec\" must be a string"},
        {VL3_PROTO_PING, "{\"seq\":1.5}", "field \"seq\" must be an integer"},
        {VL3_PROTO_PONG, "{}", "field \"seq\" is missing"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vl3_error e = {0};
        int r = parse_json(cases[i].type, cases[i].json, &e);
        if (r != VL3_E_PROTO)
            TEST__FAIL("case %zu (%s): got %d, want VL3_E_PROTO", i, cases[i].json, r);
        if (!strstr(e.msg, cases[i].want))
            TEST__FAIL("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].want);
    }
    /* a level-1 hello takes one job at a time, whatever it says about credits */
    const char *v1 = "{\"proto\":1,\"worker\":\"w\",\"credits\":8}";
    vl3_proto_frame f = {VL3_PROTO_HELLO, (const uint8_t *)v1, strlen(v1)};
    vl3_proto_msg hm;
    vl3_error he = {0};
    ASSERT_OK_E(vl3_proto_msg_parse(&f, &hm, &he), &he);
    ASSERT_EQ(hm.u.hello.credits, 1);
    vl3_proto_msg_free(&hm);
    /* unknown fields are ignored */
    vl3_error e = {0};
    ASSERT_OK_E(parse_json(VL3_PROTO_PONG, "{\"seq\":1,\"future\":{\"x\":[1,2]}}", &e), &e);
    return 0;
}

TEST(proto_encoder_refuses_invalid)
{
    uint8_t *buf = NULL;
    size_t len;
    vl3_error e = {0};
    struct vl3_proto_job j = {.job_id = "a", .input = "relative.mp4", .ntasks = 1,
                              .tasks = {{VL3_TASK_CAPTION, NULL}},
                              .sampling = {1, 8, VL3_SAMPLING_FAST, 0}};
    ASSERT_EQ(vl3_proto_encode_job(&j, &buf, &len, &e), VL3_E_PROTO);
    ASSERT(buf == NULL);
    j.input = "/ok.mp4";
    j.tasks[0].kind = VL3_TASK_QA; /* question missing */
    ASSERT_EQ(vl3_proto_encode_job(&j, &buf, &len, &e), VL3_E_PROTO);
    ASSERT_EQ(vl3_proto_frame_build(VL3_PROTO_TOKENS, "", VL3_PROTO_MAX_TOKENS + 1u, &buf, &len,
                                    &e),
              VL3_E_LIMIT);
    /* tokens frames pass through opaque */
    uint8_t blob[300];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 7);
    ASSERT_OK(vl3_proto_frame_build(VL3_PROTO_TOKENS, blob, sizeof(blob), &buf, &len, &e));
    vl3_proto_reader r;
    vl3_proto_reader_init(&r);
    vl3_proto_frame f;
    ASSERT_EQ(feed_all(&r, buf, len, &f, &e), 1);
    vl3_proto_msg m;
    ASSERT_OK(vl3_proto_msg_parse(&f, &m, &e));
    ASSERT_EQ(m.u.tokens.len, sizeof(blob));
    ASSERT_MEM_EQ(m.u.tokens.data, blob, sizeof(blob));
    vl3_proto_msg_free(&m);
    vl3_proto_reader_deinit(&r);
    free(buf);
    return 0;
}

/* deterministic pseudo-random garbage never crashes and never yields a frame with a bad type */
TEST(proto_random_garbage)
{
    uint64_t s = 12345;
    for (int round = 0; round < 2000; round++) {
        uint8_t b[64];
        for (size_t i = 0; i < sizeof(b); i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            b[i] = (uint8_t)(s >> 56);
        }
        if (round % 2) { /* a plausible header with random payload */
            hdr(b, 'V', 1, (uint8_t)(1 + round % 9), 0, 56);
        }
        vl3_proto_reader r;
        vl3_proto_reader_init(&r);
        vl3_proto_frame f;
        vl3_error e = {0};
        int rc = feed_all(&r, b, sizeof(b), &f, &e);
        if (round % 2) {
            ASSERT_EQ(rc, 1);
            vl3_proto_msg m;
            int pr = vl3_proto_msg_parse(&f, &m, &e);
            if (f.type != VL3_PROTO_TOKENS)
                ASSERT_EQ(pr, VL3_E_PROTO);
            vl3_proto_msg_free(&m);
        } else {
            ASSERT(rc == 0 || rc == 1 || rc == VL3_E_PROTO);
        }
        vl3_proto_reader_deinit(&r);
    }
    return 0;
}
