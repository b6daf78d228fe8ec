/* test_vision_e2e.c: the vision half of a request end to end (vl3_mm_prepare) on tiny models of
 * both layouts: an image and a video whose last frame repeats the previous one. Checks the
 * DiffFP statistics, that the visual rows equal the encoder's rows for the kept tokens, that the
 * prompt carries exactly one placeholder per visual row (in the layout's flavour), determinism,
 * and that preparing two requests in one batch gives the same rows as preparing them apart. */
#include <math.h>
#include <string.h>

#include "test.h"
#include "vl3/engine.h"

static uint8_t img_px[60 * 80 * 3], vid_px[3][112 * 112 * 3];

static vl3_model *load_tiny(int native)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/e2e%d", test_tmpdir(), native);
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.native = native;
    tp.seed = 3;
    vl3_error err = {0};
    if (vl3_model_write_tiny(dir, &tp, &err) < 0)
        return NULL;
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.no_backend = 1;
    vl3_model *m = NULL;
    return vl3_model_load(&mp, &m, &err) < 0 ? NULL : m;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int run(int native)
{
    uint32_t s = 5;
    for (size_t i = 0; i < sizeof(img_px); i++)
        img_px[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 23);
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < sizeof(vid_px[0]); i++)
            vid_px[t][i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 23);
    memcpy(vid_px[2], vid_px[1], sizeof(vid_px[0]));
    vl3_model *m = load_tiny(native);
    ASSERT(m != NULL);
    vl3_error err = {0};
    vl3_vision *v = NULL;
    ASSERT_OK_E(vl3_vision_new(m, 0, &v, &err), &err);
    vl3_image img = {img_px, 80, 60, 240};
    vl3_image vid[3] = {{vid_px[0], 112, 112, 336}, {vid_px[1], 112, 112, 336}, {vid_px[2], 112, 112, 336}};
    double ts[3] = {0.0, 1.0, 2.0};
    vl3_vision_item items[2] = {{&img, 1, NULL, 0, 0}, {vid, 3, ts, 1, 0}};
    vl3_mm_params p;
    vl3_mm_params_default(m, &p);
    ASSERT_EQ(p.prompt.flavour, native ? VL3_PROMPT_NATIVE : VL3_PROMPT_REMOTE);
    ASSERT(p.difffp.enabled);
    p.prompt.user_text = "Describe.";
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    vl3_mm_input a = {0}, b = {0};
    ASSERT_OK_E(vl3_mm_prepare(v, tok, &p, items, 2, &a, &err), &err);
    ASSERT_OK_E(vl3_mm_prepare(v, tok, &p, items, 2, &b, &err), &err);
    /* DiffFP: image whole, video frame 0 whole, frame 2 (a repeat) keeps token 0 only */
    ASSERT_EQ(a.mask.n_frames, 4);
    ASSERT_EQ(a.mask.kept_per_frame[0], a.mask.total_per_frame[0]);
    ASSERT_EQ(a.mask.kept_per_frame[1], a.mask.total_per_frame[1]);
    ASSERT_EQ(a.mask.kept_per_frame[3], 1);
    int64_t nk = a.mask.n_kept;
    ASSERT_MEM_EQ(a.visual, b.visual, sizeof(float) * nk * a.hidden); /* deterministic */
    /* rows = encoder rows of the kept tokens */
    float *full = malloc(sizeof(float) * a.mask.n_tokens * a.hidden);
    ASSERT_OK(vl3_vision_encode(v, &a.batch, NULL, full, &err));
    for (int64_t t = 0, k = 0; t < a.mask.n_tokens; t++)
        if (a.mask.keep[t])
            ASSERT_MEM_EQ(a.visual + (k++) * a.hidden, full + t * a.hidden, sizeof(float) * a.hidden);
    /* prompt: one placeholder per visual row */
    if (native) {
        ASSERT_EQ(count(a.prompt.text, "<|image_pad|>") + count(a.prompt.text, "<|video_pad|>"), nk);
    } else {
        ASSERT_EQ(count(a.prompt.text, "<image>"), nk);
    }
    ASSERT_STR_CONTAINS(a.prompt.text, "Time 2.0s:");
    if (tok) {
        ASSERT_EQ(a.prompt.n_visual, nk);
    }
    /* two requests in one batch == apart (the worker batches across jobs) */
    vl3_mm_input one = {0};
    ASSERT_OK_E(vl3_mm_prepare(v, tok, &p, &items[1], 1, &one, &err), &err);
    /* far below the budget and at the 16-token minimum: the video gets the same size alone
     * (remote: mixed-merge rounding in the pair, simple rule alone) */
    ASSERT_EQ(one.batch.grids[0].h, a.batch.grids[1].h);
    ASSERT_EQ(one.batch.grids[0].w, a.batch.grids[1].w);
    int64_t off = a.mask.kept_per_frame[0];
    ASSERT_EQ(one.mask.n_kept, nk - off);
    for (int64_t i = 0; i < one.mask.n_kept * a.hidden; i++)
        ASSERT_NEAR(one.visual[i], a.visual[off * a.hidden + i], 1e-5);
    /* encode_many: the two requests (pair, video alone) in one pass == separately */
    {
        const vl3_pixel_batch *bs[2] = {&a.batch, &one.batch};
        const vl3_token_mask *ms[2] = {&a.mask, NULL};
        int64_t n1 = one.mask.n_tokens;
        float *o0 = malloc(sizeof(float) * nk * a.hidden), *o1 = malloc(sizeof(float) * n1 * a.hidden);
        float *outs[2] = {o0, o1};
        ASSERT_OK_E(vl3_vision_encode_many(v, bs, ms, 2, outs, &err), &err);
        for (int64_t i = 0; i < nk * a.hidden; i++)
            ASSERT_NEAR(o0[i], a.visual[i], 1e-5);
        float *o1ref = malloc(sizeof(float) * n1 * a.hidden);
        ASSERT_OK(vl3_vision_encode(v, &one.batch, NULL, o1ref, &err));
        for (int64_t i = 0; i < n1 * a.hidden; i++)
            ASSERT_NEAR(o1[i], o1ref[i], 1e-5);
        free(o0), free(o1), free(o1ref);
    }
    vl3_mm_input_deinit(&one);
    free(full);
    vl3_mm_input_deinit(&a);
    vl3_mm_input_deinit(&b);
    /* text only */
    ASSERT_OK_E(vl3_mm_prepare(NULL, tok, &p, NULL, 0, &a, &err), &err);
    ASSERT_STR_EQ(a.prompt.text, "<|im_start|>user\nDescribe.<|im_end|>\n<|im_start|>assistant\n");
    vl3_mm_input_deinit(&a);
    vl3_vision_free(v);
    vl3_model_free(m);
    return 0;
}

TEST(e2e_tiny_remote)
{
    return run(0);
}

TEST(e2e_tiny_native)
{
    return run(1);
}

/* Full multimodal generation on a tiny checkpoint with its backend: image + video frames ->
 * vl3_mm_prepare -> vl3_generate (greedy). Deterministic, and the visual rows matter (replacing
 * them by zeros changes the prompt logits). */
static int gen_once(vl3_ctx *ctx, const vl3_model *m, const vl3_mm_input *in, const float *rows,
                    float *logits)
{
    vl3_visual_rows vis = {rows, in->prompt.visual_pos, (int)in->prompt.n_visual, in->hidden};
    vl3_gen_params gp = vl3_gen_params_from_model(m);
    gp.sampling.greedy = 1;
    gp.sampling.repetition_penalty = 1.0f;
    gp.max_new_tokens = 6;
    gp.prompt_logits = logits;
    vl3_error err = {0};
    int rc = vl3_generate(ctx, in->prompt.ids, (int)in->prompt.n_ids, &vis, &gp, NULL, NULL, NULL,
                          &err);
    if (rc < 0)
        fprintf(stderr, "generate: %s\n", err.msg);
    return rc;
}

static int gen_layout(int native)
{
    vl3_model *m = NULL;
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/gen%d", test_tmpdir(), native);
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.native = native;
    tp.seed = 11;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_model_write_tiny(dir, &tp, &err), &err);
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.backend = VL3_BACKEND_CPU;
    ASSERT_OK_E(vl3_model_load(&mp, &m, &err), &err);
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    if (!tok)
        SKIP("no tokenizer in this build");
    vl3_vision *v = NULL;
    ASSERT_OK_E(vl3_vision_new(m, 0, &v, &err), &err);
    uint32_t s = 9;
    for (size_t i = 0; i < sizeof(img_px); i++)
        img_px[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 23);
    vl3_image img = {img_px, 80, 60, 240};
    vl3_vision_item item = {&img, 1, NULL, 0, 0};
    vl3_mm_params p;
    vl3_mm_params_default(m, &p);
    p.prompt.user_text = "Describe this image in detail.";
    vl3_mm_input in = {0};
    ASSERT_OK_E(vl3_mm_prepare(v, tok, &p, &item, 1, &in, &err), &err);
    ASSERT_EQ(in.prompt.n_visual, in.mask.n_kept);
    vl3_ctx *ctx = NULL;
    ASSERT_OK_E(vl3_ctx_new(m, NULL, &ctx, &err), &err);
    int V = vl3_ctx_n_vocab(ctx);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V),
          *l3 = malloc(sizeof(float) * V);
    ASSERT_OK(gen_once(ctx, m, &in, in.visual, l1));
    ASSERT_OK(gen_once(ctx, m, &in, in.visual, l2));
    ASSERT_MEM_EQ(l1, l2, sizeof(float) * V); /* deterministic */
    float *zeros = calloc((size_t)in.prompt.n_visual * in.hidden, sizeof(float));
    ASSERT_OK(gen_once(ctx, m, &in, zeros, l3));
    double diff = 0;
    for (int i = 0; i < V; i++)
        diff += fabs(l1[i] - l3[i]);
    ASSERT(diff > 1e-6); /* the visual rows reach the LLM */
    free(zeros), free(l1), free(l2), free(l3);
    vl3_ctx_free(ctx);
    vl3_mm_input_deinit(&in);
    vl3_vision_free(v);
    vl3_model_free(m);
    return 0;
}

TEST(e2e_generate_tiny_remote)
{
    return gen_layout(0);
}

TEST(e2e_generate_tiny_native)
{
    return gen_layout(1);
}
