/* test_vision_prompt.c: prompt building (spec §7) against the rendered examples of §7.1 verbatim,
 * placeholder expansion and pruning, the native flavour, tasks, and (when the real Qwen2.5
 * tokenizer in ../shared/data loads) the token ids of the native integration test (§7.2). */
#include <errno.h>
#include <string.h>

#include "test.h"
#include "vl3/engine.h"
#include "vl3/util.h"

static uint8_t px[3];

TEST(prompt_examples_verbatim)
{
    vl3_image im[3] = {{px, 1, 1, 3}, {px, 1, 1, 3}, {px, 1, 1, 3}};
    double ts[3] = {0, 1, 2};
    vl3_vision_item vid = {im, 3, ts, 1, 0};
    vl3_vision_grid vg = {3, 2, 2, 2}; /* one merged token per frame: as the unexpanded template */
    vl3_prompt_params p;
    vl3_prompt_params_default(&p);
    p.system = VL3_SYSTEM_CUSTOM;
    p.system_text = "You are a helpful assistant.";
    p.user_text = "What is the cat doing?";
    char *s = NULL;
    ASSERT_OK(vl3_prompt_render(&p, &vid, &vg, 1, NULL, &s, NULL));
    ASSERT_STR_EQ(s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                     "Time 0.0s:<image>,Time 1.0s:<image>,Time 2.0s:<image>\nWhat is the cat "
                     "doing?<|im_end|>\n<|im_start|>assistant\n");
    free(s);

    vl3_vision_item img = {im, 1, NULL, 0, 0};
    vl3_vision_grid ig = {1, 1, 1, 1};
    p.system = VL3_SYSTEM_DEFAULT;
    p.user_text = "Describe the image.";
    ASSERT_OK(vl3_prompt_render(&p, &img, &ig, 1, NULL, &s, NULL));
    ASSERT_STR_EQ(s, "<|im_start|>system\nYou are VideoLLaMA3 created by Alibaba DAMO Academy, a "
                     "helpful assistant to help people understand images and videos.<|im_end|>\n"
                     "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n"
                     "<|im_start|>assistant\n");
    free(s);
    p.system = VL3_SYSTEM_NONE;
    ASSERT_OK(vl3_prompt_render(&p, &img, &ig, 1, NULL, &s, NULL));
    ASSERT_STR_EQ(s, "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n"
                     "<|im_start|>assistant\n");
    free(s);
    /* text-only: same template */
    ASSERT_OK(vl3_prompt_render(&p, NULL, NULL, 0, NULL, &s, NULL));
    ASSERT_STR_EQ(s, "<|im_start|>user\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    return 0;
}

/* Frame labels round as the references do (independent check with Debian's numpy): remote =
 * Jinja round(1) | string on numpy float64 timestamps; native = Python's "{:.1f}". Ties at the
 * second decimal tell them apart. */
TEST(prompt_timestamp_rounding)
{
    static const double ts[] = {0.05, 0.15, 0.25, 0.35, 1.05, 2.45, 12.35, 10.0 / 3, 7.0, 0.0};
    enum { N = sizeof(ts) / sizeof(ts[0]) };
    char want[2][1024], cmd[2048];
    int off = snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c 'import numpy as np; t=[");
    for (int i = 0; i < N; i++)
        off += snprintf(cmd + off, sizeof(cmd) - (size_t)off, "%.17g,", ts[i]);
    snprintf(cmd + off, sizeof(cmd) - (size_t)off,
             "]; print(\",\".join(\"Time \"+str(round(np.float64(x),1))+\"s:<image>\" for x in t));"
             " print(\",\".join(\"Time {:.1f}s:<|video_pad|>\".format(x) for x in t))' 2>/dev/null");
    char out[2048];
    if (test_sh(out, sizeof(out), "%s", cmd) != 0)
        SKIP("/usr/bin/python3 with numpy is not available");
    char *nl = strchr(out, '\n');
    ASSERT(nl != NULL);
    *nl = 0;
    snprintf(want[0], sizeof(want[0]), "%s\n", out);
    snprintf(want[1], sizeof(want[1]), "%s", nl + 1);
    vl3_image im[N];
    for (int i = 0; i < N; i++)
        im[i] = (vl3_image){px, 1, 1, 3};
    vl3_vision_item vid = {im, N, ts, 1, 0};
    vl3_vision_grid vg = {N, 2, 2, 2};
    for (int native = 0; native < 2; native++) {
        vl3_prompt_params p;
        vl3_prompt_params_default(&p);
        p.flavour = native ? VL3_PROMPT_NATIVE : VL3_PROMPT_REMOTE;
        char *s = NULL;
        ASSERT_OK(vl3_prompt_render(&p, &vid, &vg, 1, NULL, &s, NULL));
        ASSERT_STR_CONTAINS(s, want[native]);
        free(s);
    }
    ASSERT(strcmp(want[0], want[1]) != 0); /* the ties do differ between the two */
    return 0;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

TEST(prompt_expansion_and_pruning)
{
    vl3_image im[2] = {{px, 1, 1, 3}, {px, 1, 1, 3}};
    double ts[2] = {12.5, 13.25};
    vl3_vision_item items[2] = {{im, 2, ts, 1, 0}, {im, 1, NULL, 0, 0}};
    vl3_vision_grid g[2] = {{2, 4, 6, 2}, {1, 2, 3, 1}}; /* 6 tokens per frame; 6 for the image */
    int kept[3] = {6, 2, 6}, total[3] = {6, 6, 6};
    uint8_t keep[18] = {0};
    vl3_token_mask m = {keep, 18, 14, 3, kept, total};
    vl3_prompt_params p;
    vl3_prompt_params_default(&p);
    p.user_text = "Q";
    char *s = NULL;
    ASSERT_OK(vl3_prompt_render(&p, items, g, 2, &m, &s, NULL));
    ASSERT_EQ(count(s, "<image>"), 14);
    ASSERT_STR_CONTAINS(s, "user\nTime 12.5s:<image><image><image><image><image><image>,"
                           "Time 13.2s:<image><image>\n<image><image><image><image><image>"
                           "<image>\nQ<|im_end|>");
    free(s);
    /* native flavour: image_pad / video_pad */
    p.flavour = VL3_PROMPT_NATIVE;
    ASSERT_OK(vl3_prompt_render(&p, items, g, 2, &m, &s, NULL));
    ASSERT_EQ(count(s, "<|video_pad|>"), 8);
    ASSERT_EQ(count(s, "<|image_pad|>"), 6);
    ASSERT_EQ(count(s, "<image>"), 0);
    free(s);
    /* a timestamped image: "Time X.Xs: " in the remote template only */
    double its = 7.5;
    vl3_vision_item timg = {im, 1, &its, 0, 0};
    p.flavour = VL3_PROMPT_REMOTE;
    ASSERT_OK(vl3_prompt_render(&p, &timg, &g[1], 1, NULL, &s, NULL));
    ASSERT_STR_CONTAINS(s, "user\nTime 7.5s: <image><image>");
    free(s);
    p.flavour = VL3_PROMPT_NATIVE;
    ASSERT_OK(vl3_prompt_render(&p, &timg, &g[1], 1, NULL, &s, NULL));
    ASSERT_STR_CONTAINS(s, "user\n<|image_pad|><|image_pad|>");
    ASSERT_EQ(count(s, "Time"), 0);
    free(s);
    /* a mask for another frame count is refused */
    m.n_frames = 2;
    vl3_error err = {0};
    ASSERT_EQ(vl3_prompt_render(&p, items, g, 2, &m, &s, &err), -EINVAL);
    p.system = VL3_SYSTEM_CUSTOM;
    p.system_text = NULL;
    ASSERT_EQ(vl3_prompt_render(&p, NULL, NULL, 0, NULL, &s, &err), -EINVAL);
    return 0;
}

TEST(tasks_table)
{
    char *s = NULL;
    vl3_error err = {0};
    ASSERT_EQ(vl3_task_parse("caption"), VL3_TASK_CAPTION);
    ASSERT_EQ(vl3_task_parse("chart_qa"), VL3_TASK_CHART_QA);
    ASSERT_EQ(vl3_task_parse("nope"), -EINVAL);
    ASSERT_STR_EQ(vl3_task_name(VL3_TASK_OCR), "ocr");
    ASSERT_OK(vl3_task_instruction(VL3_TASK_CAPTION, NULL, NULL, "video", &s, &err));
    ASSERT_STR_EQ(s, "Describe this video in detail.");
    free(s);
    ASSERT_EQ(vl3_task_instruction(VL3_TASK_CHART_QA, NULL, NULL, NULL, &s, &err), -EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "needs a question");
    ASSERT_OK(vl3_task_instruction(VL3_TASK_CHART_QA, NULL, "What is the peak?", NULL, &s, &err));
    ASSERT_STR_EQ(s, "What is the peak?\nAnswer the question using a single word or phrase.");
    free(s);
    ASSERT_OK(vl3_task_instruction(VL3_TASK_QA, NULL, "Why?", NULL, &s, &err));
    ASSERT_STR_EQ(s, "Why?");
    free(s);
    vl3_task_texts ov = {{0}};
    ov.text[VL3_TASK_OCR] = "Transcribe the {media}: {question}";
    ASSERT_OK(vl3_task_instruction(VL3_TASK_OCR, &ov, "all of it", "image", &s, &err));
    ASSERT_STR_EQ(s, "Transcribe the image: all of it");
    free(s);
    ASSERT_EQ(vl3_task_instruction(VL3_TASK_OCR, &ov, NULL, "image", &s, &err), -EINVAL);
    /* the documented table matches the code */
    char path[1024], *doc = NULL;
    size_t len;
    snprintf(path, sizeof(path), "%s/docs/tasks.md", test_source_dir());
    ASSERT_OK(vl3_file_read(path, 1 << 20, &doc, &len, NULL));
    for (int t = 0; t < VL3_TASK_COUNT; t++) {
        char line[512];
        const char *txt = vl3_task_default_text(t);
        if (strchr(txt, '\n'))
            continue;
        snprintf(line, sizeof(line), "`%s`", txt);
        ASSERT_STR_CONTAINS(doc, line);
    }
    free(doc);
    return 0;
}

TEST(prompt_ids_native_sora)
{
    const char *shared = test_shared_dir();
    if (!shared)
        SKIP("../shared/data is absent");
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/data/qwen2.5-tokenizer", shared);
    vl3_tokenizer *tok = NULL;
    vl3_error err = {0};
    if (vl3_tokenizer_load(dir, &tok, &err) < 0)
        SKIP("tokenizer not available in this build: %s", err.msg);
    int32_t probe[8];
    size_t n = 0;
    if (vl3_tokenizer_encode(tok, "Hello world", 11, probe, 8, &n, &err) < 0 || n != 2 ||
        probe[0] != 9707) {
        vl3_tokenizer_free(tok);
        SKIP("tokenizer is a placeholder in this build");
    }
    vl3_image im = {px, 1920, 1080, 5760};
    vl3_vision_item img = {&im, 1, NULL, 0, 0};
    vl3_vision_grid g = {1, 77, 137, 1};
    vl3_prompt_params p;
    vl3_prompt_params_default(&p);
    p.flavour = VL3_PROMPT_NATIVE;
    p.user_text = "Describe the image.";
    vl3_prompt pr = {0};
    ASSERT_OK_E(vl3_prompt_build(&p, tok, &img, &g, 1, NULL, &pr, &err), &err);
    const int32_t head[3] = {151644, 872, 198};
    const int32_t tail[10] = {198, 74785, 279, 2168, 13, 151645, 198, 151644, 77091, 198};
    ASSERT_EQ(pr.n_ids, 3 + 10549 + 10);
    ASSERT_EQ(pr.n_visual, 10549);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(pr.ids[i], head[i]);
    for (int i = 0; i < 10549; i++) {
        ASSERT_EQ(pr.ids[3 + i], 151655);
        ASSERT_EQ(pr.visual_pos[i], 3 + i);
    }
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(pr.ids[3 + 10549 + i], tail[i]);
    vl3_prompt_deinit(&pr);
    /* remote flavour: <image> is not in the plain Qwen2.5 tokenizer -> clear error */
    p.flavour = VL3_PROMPT_REMOTE;
    int rc = vl3_prompt_build(&p, tok, &img, &g, 1, NULL, &pr, &err);
    if (vl3_tokenizer_token_id(tok, "<image>") < 0) {
        ASSERT_EQ(rc, VL3_E_FORMAT);
        ASSERT_STR_CONTAINS(err.msg, "<image>");
    } else {
        ASSERT_OK(rc);
        vl3_prompt_deinit(&pr);
    }
    vl3_tokenizer_free(tok);
    return 0;
}

TEST(prompt_ids_remote_readme)
{
    const char *shared = test_shared_dir();
    if (!shared)
        SKIP("../shared/data is absent");
    char tokdir[1024], dir[1024];
    snprintf(tokdir, sizeof(tokdir), "%s/data/qwen2.5-tokenizer", shared);
    snprintf(dir, sizeof(dir), "%s/tinyq", test_tmpdir());
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.tokenizer_dir = tokdir;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_model_write_tiny(dir, &tp, &err), &err);
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.no_backend = 1;
    vl3_model *m = NULL;
    ASSERT_OK_E(vl3_model_load(&mp, &m, &err), &err);
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    if (!tok)
        SKIP("tokenizer not available in this build");
    /* the data README's pair: one <image> (grid 1x1), remote flavour, no system turn */
    vl3_image im = {px, 1, 1, 3};
    vl3_vision_item img = {&im, 1, NULL, 0, 0};
    vl3_vision_grid g = {1, 1, 1, 1};
    vl3_prompt_params p;
    vl3_prompt_params_default(&p);
    p.user_text = "What is in the video?";
    vl3_prompt pr = {0};
    ASSERT_OK_E(vl3_prompt_build(&p, tok, &img, &g, 1, NULL, &pr, &err), &err);
    const int32_t exp[] = {151644, 872, 198, 151665, 198, 3838, 374, 304,
                           279,    2766, 30, 151645, 198, 151644, 77091, 198};
    ASSERT_EQ(pr.n_ids, (int64_t)VL3_ARRAY_SIZE(exp));
    for (size_t i = 0; i < VL3_ARRAY_SIZE(exp); i++)
        ASSERT_EQ(pr.ids[i], exp[i]);
    ASSERT_EQ(pr.n_visual, 1);
    ASSERT_EQ(pr.visual_pos[0], 3);
    vl3_prompt_deinit(&pr);
    /* video: "Time 0.0s:" + 2 tokens + "," + "Time 1.0s:" + 1 token (pruned) + "\n" */
    vl3_image fr[2] = {{px, 1, 1, 3}, {px, 1, 1, 3}};
    double ts[2] = {0, 1};
    vl3_vision_item vid = {fr, 2, ts, 1, 0};
    vl3_vision_grid vg = {2, 2, 4, 2};
    int kept[2] = {2, 1}, total[2] = {2, 2};
    uint8_t keep[4] = {1, 1, 1, 0};
    vl3_token_mask mask = {keep, 4, 3, 2, kept, total};
    ASSERT_OK_E(vl3_prompt_build(&p, tok, &vid, &vg, 1, &mask, &pr, &err), &err);
    ASSERT_EQ(pr.n_visual, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(pr.ids[pr.visual_pos[i]], 151665);
    ASSERT_EQ(pr.visual_pos[1], pr.visual_pos[0] + 1);
    ASSERT_GT(pr.visual_pos[2], pr.visual_pos[1] + 2); /* ",Time 1.0s:" in between */
    /* ids equal tokenizing the rendered text in one piece */
    int32_t *whole = malloc(sizeof(int32_t) * 4096);
    size_t n = 0;
    ASSERT_OK(vl3_tokenizer_encode(tok, pr.text, strlen(pr.text), whole, 4096, &n, &err));
    ASSERT_EQ((int64_t)n, pr.n_ids);
    ASSERT_MEM_EQ(whole, pr.ids, n * sizeof(int32_t));
    vl3_prompt_deinit(&pr);
    /* texts that merge with the template's own text ("user\n" + "\nHi" holds "\n\n" = 271):
     * still the ids of the whole rendered text, with and without visual items */
    static const char *const texts[] = {"\nHi", "\n\n  spaced out  \n", " leading", "\r\nx"};
    for (size_t i = 0; i < VL3_ARRAY_SIZE(texts); i++)
        for (int with_video = 0; with_video < 2; with_video++) {
            p.user_text = texts[i];
            p.system = VL3_SYSTEM_CUSTOM;
            p.system_text = texts[(i + 1) % VL3_ARRAY_SIZE(texts)];
            ASSERT_OK_E(vl3_prompt_build(&p, tok, with_video ? &vid : NULL, with_video ? &vg : NULL,
                                         with_video, with_video ? &mask : NULL, &pr, &err),
                        &err);
            ASSERT_OK(vl3_tokenizer_encode(tok, pr.text, strlen(pr.text), whole, 4096, &n, &err));
            ASSERT_EQ((int64_t)n, pr.n_ids);
            ASSERT_MEM_EQ(whole, pr.ids, n * sizeof(int32_t));
            vl3_prompt_deinit(&pr);
        }
    free(whole);
    vl3_model_free(m);
    return 0;
}
