/* test_worker_io.c: the worker's protocol I/O (worker_io.c): frames it writes parse with the
 * daemon's decoder (vl3/proto.h) and carry the extra statistics; error classes map to the
 * protocol's codes and retry flags; the frame reader dispatches JOB and PING frames fed a byte
 * at a time and refuses frames a daemon never sends. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "test.h"
#include "vl3/proto.h"
#include "worker_io.h"

/* read every frame from fd into msgs (up to n); returns the count */
static int read_frames(int fd, vl3_proto_msg *msgs, int n)
{
    vl3_proto_reader rd;
    vl3_proto_reader_init(&rd);
    uint8_t buf[4096];
    ssize_t k;
    while ((k = read(fd, buf, sizeof(buf))) > 0)
        vl3_proto_reader_feed(&rd, buf, (size_t)k);
    int got = 0;
    vl3_proto_frame f;
    while (got < n && vl3_proto_reader_next(&rd, &f, NULL) == 1)
        if (vl3_proto_msg_parse(&f, &msgs[got], NULL) == 0)
            got++;
    vl3_proto_reader_deinit(&rd);
    return got;
}

TEST(io_frames_parse_with_extra_stats)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct worker_out o;
    ASSERT_OK(worker_out_init(&o, p[1]));
    ASSERT_OK(worker_send_hello(&o, "vl3-worker test", "cpu", 1234, 6));
    struct worker_result r = {"job-1", 1, 2, 3.0, 6.0, "a cat",
                              {10, 2, 7, 4, 1.5, 2.5, 3.5, 4.5, 3, 1.0, 96, 72, 133, 13, 3, 2, 2, 1}};
    ASSERT_OK(worker_send_result(&o, &r));
    struct worker_media md = {1, 4096, 1700000000, 0, 150, 100, 0, "png", "ab12:4096"}; /* image */
    ASSERT_OK(worker_send_done(&o, "job-1", 1, &md));
    const char *code = NULL;
    int retry = -1;
    ASSERT_OK(worker_send_error(&o, "job-2", VL3_E_DECODE, "could not decode", &code, &retry));
    ASSERT_STR_EQ(code, "decode");
    ASSERT_EQ(retry, 0);
    const char *held[] = {"job-3", "job-4"};
    ASSERT_OK(worker_send_pong(&o, 5, held, 2));
    close(p[1]);
    vl3_proto_msg m[8];
    ASSERT_EQ(read_frames(p[0], m, 8), 5);
    close(p[0]);
    ASSERT_EQ(m[0].type, VL3_PROTO_HELLO);
    ASSERT_EQ(m[0].u.hello.proto, VL3_PROTO_LEVEL);
    ASSERT_EQ(m[0].u.hello.credits, 6);
    ASSERT_EQ(m[0].u.hello.pid, 1234);
    ASSERT_EQ(m[1].type, VL3_PROTO_RESULT);
    ASSERT_STR_EQ(m[1].u.result.job_id, "job-1");
    ASSERT_EQ(m[1].u.result.task, 1);
    ASSERT_EQ(m[1].u.result.window, 2);
    ASSERT_STR_EQ(m[1].u.result.answer, "a cat");
    ASSERT_EQ(m[1].u.result.stats.frames_decoded, 10);
    ASSERT_EQ(m[1].u.result.stats.frames_pruned, 2);
    ASSERT_EQ(m[1].u.result.stats.tokens_generated, 7);
    ASSERT_EQ(m[1].u.result.stats.batch_size, 4);
    ASSERT_NEAR(m[1].u.result.stats.generate_ms, 4.5, 1e-12);
    ASSERT_EQ(m[1].u.result.stats.frames_sampled, 3);
    ASSERT_NEAR(m[1].u.result.stats.sample_interval_s, 1.0, 0);
    ASSERT_EQ(m[1].u.result.stats.cache, 1); /* "miss" */
    json_t *st = json_object_get(m[1].root, "stats");
    ASSERT_EQ(json_integer_value(json_object_get(st, "tokens_total")), 96);
    ASSERT_EQ(json_integer_value(json_object_get(st, "tokens_kept")), 72);
    ASSERT_EQ(json_integer_value(json_object_get(st, "prompt_tokens")), 133);
    ASSERT_EQ(json_integer_value(json_object_get(st, "vision_batch_frames")), 13);
    ASSERT_EQ(json_integer_value(json_object_get(st, "vision_batch_windows")), 3);
    ASSERT_EQ(m[1].u.result.stats.tokens_kept, 72);
    ASSERT_EQ(m[1].u.result.stats.prompt_tokens, 133);
    ASSERT_EQ(m[1].u.result.stats.vision_batch_jobs, 2);
    ASSERT_EQ(m[1].u.result.stats.decode_step_jobs, 2);
    ASSERT_EQ(m[2].type, VL3_PROTO_DONE);
    ASSERT_EQ(m[2].u.done.results, 1);
    ASSERT(m[2].u.done.media.present);
    ASSERT_EQ(m[2].u.done.media.size, 4096);
    ASSERT_EQ(m[2].u.done.media.width, 150);
    ASSERT_STR_EQ(m[2].u.done.media.codec, "png");
    ASSERT_STR_EQ(m[2].u.done.media.fingerprint, "ab12:4096");
    ASSERT(json_object_get(json_object_get(m[2].root, "media"), "duration") == NULL);
    ASSERT_EQ(m[3].type, VL3_PROTO_ERROR);
    ASSERT_EQ(m[3].u.error.code, VL3_PERR_DECODE);
    ASSERT_EQ(m[3].u.error.retryable, 0);
    ASSERT_EQ(m[4].type, VL3_PROTO_PONG);
    ASSERT_STR_EQ(m[4].u.pong.job_id, "job-3");
    ASSERT_EQ(m[4].u.pong.njobs, 2);
    ASSERT_STR_EQ(m[4].u.pong.jobs[1], "job-4");
    /* one credit: a level-1 hello */
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct worker_out o1;
    ASSERT_OK(worker_out_init(&o1, p[1]));
    ASSERT_OK(worker_send_hello(&o1, "vl3-worker test", "cpu", 1234, 1));
    close(p[1]);
    vl3_proto_msg h1;
    ASSERT_EQ(read_frames(p[0], &h1, 1), 1);
    close(p[0]);
    ASSERT_EQ(h1.u.hello.proto, 1);
    ASSERT_EQ(h1.u.hello.credits, 1);
    ASSERT(json_object_get(h1.root, "credits") == NULL);
    vl3_proto_msg_free(&h1);
    worker_out_deinit(&o1);
    for (int i = 0; i < 5; i++)
        vl3_proto_msg_free(&m[i]);
    worker_out_deinit(&o);
    return 0;
}

/* The worker sends only what the protocol allows (issue 14 item 7): a window of an MPEG-TS that
 * starts at a negative timestamp is clamped to t >= 0, and an answer over the 64 KiB text limit
 * is cut at a character boundary instead of the frame being refused (or the daemon killing the
 * worker as a protocol violator). */
TEST(io_result_fits_the_protocol)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct worker_out o;
    ASSERT_OK(worker_out_init(&o, p[1]));
    ASSERT(fcntl(p[1], F_SETPIPE_SZ, 1 << 20) > 0); /* the frames fit before we read them */
    size_t n = VL3_PROTO_MAX_TEXT + 1001; /* "é" is 2 bytes: the cut must not split one */
    char *big = malloc(n + 1);
    ASSERT(big != NULL);
    big[0] = 'x';
    for (size_t i = 1; i + 1 < n; i += 2)
        big[i] = (char)0xc3, big[i + 1] = (char)0xa9;
    big[n] = '\0';
    struct worker_result r = {"job-ts", 0, 0, -10.0, -8.5, big, {0}};
    ASSERT_OK(worker_send_result(&o, &r));
    struct worker_result r2 = {"job-ts", 0, 1, -0.5, 1.5, "ok", {0}};
    ASSERT_OK(worker_send_result(&o, &r2));
    close(p[1]);
    vl3_proto_msg m[2];
    ASSERT_EQ(read_frames(p[0], m, 2), 2);
    close(p[0]);
    ASSERT_NEAR(m[0].u.result.t_start, 0, 0);
    ASSERT_NEAR(m[0].u.result.t_end, 0, 0);
    size_t got = strlen(m[0].u.result.answer);
    ASSERT_LE(got, VL3_PROTO_MAX_TEXT);
    ASSERT_GT(got, VL3_PROTO_MAX_TEXT - 2);
    ASSERT_MEM_EQ(m[0].u.result.answer, big, got);
    ASSERT_EQ(got % 2, 1); /* 'x' + whole 2-byte characters */
    ASSERT_NEAR(m[1].u.result.t_start, 0, 0);
    ASSERT_NEAR(m[1].u.result.t_end, 1.5, 0);
    for (int i = 0; i < 2; i++)
        vl3_proto_msg_free(&m[i]);
    free(big);
    worker_out_deinit(&o);
    return 0;
}

TEST(io_error_classes)
{
    static const struct {
        int code;
        const char *name;
        int retry;
    } cases[] = {
        {VL3_E_POLICY, "input", 0},       {VL3_E_LIMIT, "input", 0},
        {-ENOENT, "input", 0},            {-EIO, "input", 1},
        {VL3_E_DECODE, "decode", 0},      {VL3_E_UNSUPPORTED, "unsupported", 0},
        {-ENOMEM, "resource", 1},         {-EBUSY, "resource", 1},
        {VL3_E_CUDA_FATAL, "device", 1},  {VL3_E_PROTO, "protocol", 0},
        {VL3_E_FORMAT, "internal", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int retry = -1;
        ASSERT_STR_EQ(worker_errcode(cases[i].code, &retry), cases[i].name);
        ASSERT_EQ(retry, cases[i].retry);
    }
    return 0;
}

struct seen {
    int jobs, pings;
    int64_t last_ping;
    char id[64], input[256], q[64];
    int ntasks, fast;
    double fps, window;
};

static void on_job(void *user, const struct worker_job_req *j)
{
    struct seen *s = user;
    s->jobs++;
    snprintf(s->id, sizeof(s->id), "%s", j->job_id);
    snprintf(s->input, sizeof(s->input), "%s", j->input);
    s->ntasks = j->ntasks;
    snprintf(s->q, sizeof(s->q), "%s|%s", j->tasks[0].kind,
             j->tasks[1].question ? j->tasks[1].question : "");
    s->fast = j->fast;
    s->fps = j->fps;
    s->window = j->window_s;
}

static void on_ping(void *user, int64_t seq)
{
    struct seen *s = user;
    s->pings++;
    s->last_ping = seq;
}

TEST(io_reader_dispatch_and_refuse)
{
    struct vl3_proto_job j = {0};
    j.job_id = "j7";
    j.input = "/srv/media/x.mp4";
    j.ntasks = 2;
    j.tasks[0] = (struct vl3_proto_task){VL3_TASK_OCR, NULL};
    j.tasks[1] = (struct vl3_proto_task){VL3_TASK_QA, "why?"};
    j.sampling = (struct vl3_proto_sampling){0.5, 16, VL3_SAMPLING_FAST, 30};
    uint8_t *b1, *b2, *b3;
    size_t l1, l2, l3;
    ASSERT_OK(vl3_proto_encode_job(&j, &b1, &l1, NULL));
    struct vl3_proto_ping pg = {77};
    ASSERT_OK(vl3_proto_encode_ping(&pg, &b2, &l2, NULL));
    struct vl3_proto_done dn = {"j7", 0, {0}};
    ASSERT_OK(vl3_proto_encode_done(&dn, &b3, &l3, NULL));
    struct seen s = {0};
    const struct worker_in_ops ops = {on_job, on_ping, &s};
    worker_in *in = worker_in_new();
    ASSERT(in != NULL);
    vl3_error err = {0};
    for (size_t i = 0; i < l1; i++) /* one byte at a time */
        ASSERT_OK(worker_in_feed(in, b1 + i, 1, &ops, &err));
    ASSERT_EQ(s.jobs, 1);
    ASSERT_EQ(worker_in_buffered(in), 0);
    ASSERT_OK(worker_in_feed(in, b2, l2, &ops, &err));
    ASSERT_EQ(s.pings, 1);
    ASSERT_EQ(s.last_ping, 77);
    ASSERT_STR_EQ(s.id, "j7");
    ASSERT_STR_EQ(s.input, "/srv/media/x.mp4");
    ASSERT_EQ(s.ntasks, 2);
    ASSERT_STR_EQ(s.q, "ocr|why?");
    ASSERT_EQ(s.fast, 1);
    ASSERT_NEAR(s.fps, 0.5, 0);
    ASSERT_NEAR(s.window, 30, 0);
    /* a DONE frame is the worker's to send: a violation, and the stream stays broken */
    ASSERT_EQ(worker_in_feed(in, b3, l3, &ops, &err), VL3_E_PROTO);
    ASSERT_STR_CONTAINS(err.msg, "unexpected done frame");
    ASSERT(worker_in_feed(in, b2, l2, &ops, &err) < 0);
    ASSERT_EQ(s.pings, 1);
    worker_in_free(in);
    free(b1);
    free(b2);
    free(b3);
    return 0;
}
