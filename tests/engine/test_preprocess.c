/* test_preprocess.c: the image preprocessor (spec §3) against independent references.
 *
 * pil_bit_exact runs tests/engine/pil_ref.py (PIL + numpy, /usr/bin/python3), which generates
 * PNG/WebP/JPEG images (palette, alpha, grey, 1-bit, tiny and huge aspect ratios, up- and
 * down-scaling, a multi-image call, a video, a mixed-merge call) and computes pixel_values the
 * way the official processor does; the C preprocessor must match every float BIT FOR BIT, given
 * the same decoded RGB (PIL's convert('RGB') output). The resize rule is also checked against the
 * spec's worked examples. */
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "preprocess.h"
#include "test.h"
#include "vl3/json.h"
#include "vl3/util.h"

static const char *pil_dir(void)
{
    static char dir[1024];
    if (dir[0])
        return dir;
    snprintf(dir, sizeof(dir), "%s/pilref", test_tmpdir());
    char out[4096];
    int rc = test_sh(out, sizeof(out), "/usr/bin/python3 %s/tests/engine/pil_ref.py %s 2>&1",
                     test_source_dir(), dir);
    if (rc != 0) {
        fprintf(stderr, "pil_ref.py failed (%d): %s\n", rc, out);
        dir[0] = 0;
        return NULL;
    }
    return dir;
}

static int have_pil(void)
{
    return test_sh(NULL, 0, "/usr/bin/python3 -c 'import PIL, numpy' 2>/dev/null") == 0;
}

/* One case: read caseN.json/.rgb/.pv, preprocess, compare. */
static int check_case(const char *dir, int idx, int *ret_patches)
{
    char path[1200];
    json_t *root = NULL, *items = NULL;
    char *rgb = NULL, *pv = NULL;
    size_t rgb_len, pv_len;
    vl3_error err = {0};
    snprintf(path, sizeof(path), "%s/case%d.json", dir, idx);
    ASSERT_OK_E(vl3_json_load_file(path, 1 << 20, &root, &err), &err);
    ASSERT_OK_E(vl3_json_get_array(root, "items", &items, &err), &err);
    snprintf(path, sizeof(path), "%s/case%d.rgb", dir, idx);
    ASSERT_OK_E(vl3_file_read(path, (size_t)1 << 30, &rgb, &rgb_len, &err), &err);
    snprintf(path, sizeof(path), "%s/case%d.pv", dir, idx);
    ASSERT_OK_E(vl3_file_read(path, (size_t)1 << 31, &pv, &pv_len, &err), &err);

    int n = (int)json_array_size(items);
    vl3_vision_item it[8];
    vl3_image frames[8][8];
    int exp_grid[8][3];
    ASSERT(n <= 8);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *o = json_array_get(items, i);
        int64_t w, h, nf, isv, m;
        ASSERT_OK(vl3_json_get_int(o, "w", &w, NULL));
        ASSERT_OK(vl3_json_get_int(o, "h", &h, NULL));
        ASSERT_OK(vl3_json_get_int(o, "frames", &nf, NULL));
        ASSERT_OK(vl3_json_get_int(o, "is_video", &isv, NULL));
        ASSERT_OK(vl3_json_get_int(o, "merge", &m, NULL));
        ASSERT(nf <= 8);
        json_t *g = json_object_get(o, "grid");
        for (int k = 0; k < 3; k++)
            exp_grid[i][k] = (int)json_integer_value(json_array_get(g, k));
        for (int k = 0; k < nf; k++) {
            frames[i][k] = (vl3_image){(const uint8_t *)rgb + off, (int)w, (int)h, (size_t)w * 3};
            off += (size_t)w * h * 3;
        }
        it[i] = (vl3_vision_item){frames[i], (int)nf, NULL, (int)isv, (int)m};
    }
    ASSERT_EQ(off, rgb_len);

    vl3_preprocess_params p;
    vl3_preprocess_params_default(&p);
    vl3_pixel_batch b = {0};
    ASSERT_OK_E(vl3_vision_preprocess(&p, it, n, &b, &err), &err);
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(b.grids[i].t, exp_grid[i][0]);
        ASSERT_EQ(b.grids[i].h, exp_grid[i][1]);
        ASSERT_EQ(b.grids[i].w, exp_grid[i][2]);
    }
    ASSERT_EQ(b.patch_dim, 588);
    ASSERT_EQ((size_t)b.n_patches * 588 * 4, pv_len);
    const float *ref = (const float *)pv;
    int64_t bad = 0, first = -1;
    for (int64_t k = 0; k < b.n_patches * 588; k++)
        if (memcmp(&ref[k], &b.pixel_values[k], 4) != 0) {
            if (first < 0)
                first = k;
            bad++;
        }
    if (bad) {
        fprintf(stderr, "case %d: %lld of %lld values differ; first at patch %lld elem %lld: "
                        "%.9g vs ref %.9g\n",
                idx, (long long)bad, (long long)(b.n_patches * 588), (long long)(first / 588),
                (long long)(first % 588), b.pixel_values[first], ref[first]);
    }
    ASSERT_EQ(bad, 0);
    *ret_patches = (int)b.n_patches;
    vl3_pixel_batch_deinit(&b);
    free(rgb);
    free(pv);
    json_decref(root);
    return 0;
}

TEST(pil_bit_exact)
{
    if (!have_pil())
        SKIP("/usr/bin/python3 with PIL and numpy is not available");
    const char *dir = pil_dir();
    ASSERT(dir != NULL);
    char path[1200], *txt = NULL;
    size_t len;
    snprintf(path, sizeof(path), "%s/cases.txt", dir);
    ASSERT_OK(vl3_file_read(path, 64, &txt, &len, NULL));
    int n = atoi(txt);
    free(txt);
    ASSERT_GE(n, 10);
    for (int i = 0; i < n; i++) {
        int patches = 0;
        if (check_case(dir, i, &patches))
            TEST__FAIL("case %d", i);
        printf("case %d: %d patches bit-exact\n", i, patches);
    }
    return 0;
}

static void sizes_for(const vl3_preprocess_params *p, int w, int h, int frames, int is_video,
                      int *ret_hw, vl3_vision_grid *g)
{
    static uint8_t px[3];
    vl3_image im[256];
    for (int k = 0; k < frames; k++)
        im[k] = (vl3_image){px, w, h, (size_t)w * 3};
    vl3_vision_item it = {im, frames, NULL, is_video, 0};
    ret_hw[0] = ret_hw[1] = -1;
    (void)vl3_vision_target_sizes(p, &it, 1, ret_hw, NULL);
    int m = is_video ? p->video_merge : p->image_merge;
    *g = (vl3_vision_grid){frames, ret_hw[0] / 14, ret_hw[1] / 14, m};
}

TEST(spec_worked_examples)
{
    vl3_preprocess_params p;
    vl3_preprocess_params_default(&p);
    int hw[2];
    vl3_vision_grid g;
    /* §13: 1920x1080 image -> 1918x1078, 77x137 = 10,549 tokens */
    sizes_for(&p, 1920, 1080, 1, 0, hw, &g);
    ASSERT_EQ(hw[0], 1078);
    ASSERT_EQ(hw[1], 1918);
    ASSERT_EQ(g.h * g.w, 10549);
    ASSERT_EQ(vl3_vision_grid_tokens_per_frame(&g), 10549);
    /* §5.4: 1920x1080 x 180 frames -> 336x196 px, 14x24 patches, 84 merged tokens per frame */
    sizes_for(&p, 1920, 1080, 180, 1, hw, &g);
    ASSERT_EQ(hw[0], 196);
    ASSERT_EQ(hw[1], 336);
    ASSERT_EQ(g.h, 14);
    ASSERT_EQ(g.w, 24);
    ASSERT_EQ(vl3_vision_grid_tokens_per_frame(&g), 84);
    ASSERT_EQ(84 * 180, 15120);
    /* 1280x720 x 60 -> 616x336, 264 tokens/frame, 15,840 total */
    sizes_for(&p, 1280, 720, 60, 1, hw, &g);
    ASSERT_EQ(hw[1], 616);
    ASSERT_EQ(hw[0], 336);
    ASSERT_EQ(vl3_vision_grid_tokens_per_frame(&g), 264);
    ASSERT_EQ(vl3_vision_grid_tokens_per_frame(&g) * 60, 15840);
    /* 640x480 x 30 -> 644x476 (slight upscale), 391 tokens/frame */
    sizes_for(&p, 640, 480, 30, 1, hw, &g);
    ASSERT_EQ(hw[1], 644);
    ASSERT_EQ(hw[0], 476);
    ASSERT_EQ(vl3_vision_grid_tokens_per_frame(&g), 391);
    /* native rule: same sora.png answer (§13) */
    p.rule = VL3_RESIZE_NATIVE;
    sizes_for(&p, 1920, 1080, 1, 0, hw, &g);
    ASSERT_EQ(g.h * g.w, 10549);
    return 0;
}

TEST(resize_rule_details)
{
    /* banker's rounding: 21/14 = 1.5 -> 2, 35/14 = 2.5 -> 2, 49/14 = 3.5 -> 4 */
    ASSERT_EQ(vl3__py_round(1.5), 2);
    ASSERT_EQ(vl3__py_round(2.5), 2);
    ASSERT_EQ(vl3__py_round(3.5), 4);
    ASSERT_EQ(vl3__py_round(-0.5), 0);
    int sz[4] = {35, 49, 21, 35}, fr[2] = {1, 1}, out[4];
    vl3__resize_rule_simple(sz, fr, 1, 14, 0, 16384, out);
    ASSERT_EQ(out[0], 28);
    ASSERT_EQ(out[1], 56);
    /* independent min step after the max step: 5x2000 (H=5) -> 0 rows -> repaired by min */
    int thin[2] = {5, 2000};
    vl3__resize_rule_simple(thin, fr, 1, 14, 16, 16384, out);
    ASSERT_EQ(out[0], 14);
    ASSERT_EQ(out[1], 1120);
    /* N divides the budget: two 3000x2000 images share 16384 tokens */
    int two[4] = {2000, 3000, 2000, 3000};
    vl3__resize_rule_simple(two, fr, 2, 14, 16, 16384, out);
    ASSERT_LE((out[0] / 14) * (out[1] / 14) * 2, 16384);
    ASSERT_GT((out[0] / 14) * (out[1] / 14) * 2, 16384 * 9 / 10);
    /* mixed merge: no min clamp, common beta */
    int mix[4] = {1080, 1920, 30, 50}, mf[2] = {180, 1}, fac[2] = {28, 14};
    vl3__resize_rule_mixed(mix, mf, fac, 2, 16384, out);
    ASSERT_EQ(out[0] % 28, 0);
    ASSERT_EQ(out[2], 0); /* the small image collapses: the reference has no guard either */
    /* native: aspect ratio > 200 refused; max(f, .) guard */
    int h, w;
    ASSERT_EQ(vl3__smart_resize(5, 2000, 14, 3136, 3211264, &h, &w), VL3_E_LIMIT);
    ASSERT_OK(vl3__smart_resize(20, 3000, 14, 3136, 3136 * 4, &h, &w));
    ASSERT_EQ(h, 14);
    return 0;
}

TEST(normalisation_table)
{
    vl3_preprocess_params p;
    vl3_preprocess_params_default(&p);
    float lut[256];
    vl3__norm_lut(&p, 0, lut);
    for (int u = 0; u < 256; u++) {
        /* within one float32 ulp of u/127.5 - 1 (the exact value), and of the form the spec gives */
        double exact = u / 127.5 - 1.0;
        ASSERT_NEAR(lut[u], exact, 1.2e-7);
    }
    ASSERT_EQ(lut[0], -1.0f);
    ASSERT_EQ(lut[255], 1.0f);
    return 0;
}

TEST(patch_order_merge2)
{
    /* 56x28 image, merge 2: 2x4 patches; rows come in 2x2 blocks: (0,0),(0,1),(1,0),(1,1),(0,2).. */
    int w = 56, h = 28;
    uint8_t *img = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img[(y * w + x) * 3 + c] = (uint8_t)((y / 14) * 16 + (x / 14) * 4 + c);
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int u = 0; u < 256; u++)
            lut[c][u] = (float)u;
    float *out = malloc(sizeof(float) * 8 * 588);
    vl3__patchify(img, (size_t)w * 3, h, w, 14, 2, (const float(*)[256])lut, out);
    const int exp_rc[8][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}};
    for (int p = 0; p < 8; p++)
        for (int c = 0; c < 3; c++) {
            ASSERT_EQ(out[p * 588 + c * 196], exp_rc[p][0] * 16 + exp_rc[p][1] * 4 + c);
            ASSERT_EQ(out[p * 588 + c * 196 + 195], exp_rc[p][0] * 16 + exp_rc[p][1] * 4 + c);
        }
    free(out);
    free(img);
    return 0;
}

TEST(bad_input)
{
    vl3_preprocess_params p;
    vl3_preprocess_params_default(&p);
    vl3_pixel_batch b = {0};
    vl3_error err = {0};
    uint8_t px[12] = {0};
    vl3_image ok = {px, 2, 2, 6}, zero = {px, 0, 2, 6}, nul = {NULL, 2, 2, 6};
    vl3_image two[2] = {{px, 2, 2, 6}, {px, 1, 2, 6}};
    vl3_vision_item it = {&zero, 1, NULL, 0, 0};
    ASSERT_EQ(vl3_vision_preprocess(&p, &it, 1, &b, &err), -EINVAL);
    it.frames = &nul;
    ASSERT_EQ(vl3_vision_preprocess(&p, &it, 1, &b, &err), -EINVAL);
    it = (vl3_vision_item){two, 2, NULL, 1, 0};
    ASSERT_EQ(vl3_vision_preprocess(&p, &it, 1, &b, &err), -EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "frame 1");
    it = (vl3_vision_item){&ok, 1, NULL, 0, 3};
    ASSERT_EQ(vl3_vision_preprocess(&p, &it, 1, &b, &err), VL3_E_UNSUPPORTED);
    /* a 2x2 image is valid: upscaled to the minimum 16 tokens */
    it = (vl3_vision_item){&ok, 1, NULL, 0, 0};
    ASSERT_OK_E(vl3_vision_preprocess(&p, &it, 1, &b, &err), &err);
    ASSERT_EQ(b.n_patches, 16);
    vl3_pixel_batch_deinit(&b);
    vl3_pixel_batch_deinit(&b); /* idempotent */
    return 0;
}

TEST(resize_rules_match_python)
{
    if (!have_pil())
        SKIP("/usr/bin/python3 with PIL and numpy is not available");
    char dir[1024], path[1200], log[2048];
    snprintf(dir, sizeof(dir), "%s/rules", test_tmpdir());
    if (test_sh(log, sizeof(log), "/usr/bin/python3 %s/tests/engine/pil_ref.py %s rules 2>&1",
                test_source_dir(), dir) != 0)
        TEST__FAIL("pil_ref.py rules failed: %s", log);
    snprintf(path, sizeof(path), "%s/rules.txt", dir);
    char *txt = NULL;
    size_t len;
    ASSERT_OK(vl3_file_read(path, 1 << 24, &txt, &len, NULL));
    int calls = 0;
    for (char *save = NULL, *line = strtok_r(txt, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save), calls++) {
        char rule[16];
        int n, off, sz[6], fr[3], fac[3], exp[6], got[6];
        ASSERT_EQ(sscanf(line, "%15s %d%n", rule, &n, &off), 2);
        char *p = line + off;
        for (int i = 0; i < n; i++) {
            ASSERT_EQ(sscanf(p, "%d %d %d %d%n", &fac[i], &fr[i], &sz[2 * i], &sz[2 * i + 1], &off), 4);
            p += off;
        }
        p = strstr(p, "->") + 2;
        for (int i = 0; i < 2 * n; i++) {
            ASSERT_EQ(sscanf(p, "%d%n", &exp[i], &off), 1);
            p += off;
        }
        if (strcmp(rule, "simple") == 0) {
            vl3__resize_rule_simple(sz, fr, n, fac[0], 16, 16384, got);
        } else if (strcmp(rule, "mixed") == 0) {
            vl3__resize_rule_mixed(sz, fr, fac, n, 16384, got);
        } else {
            for (int i = 0; i < n; i++) {
                int rc = vl3__smart_resize(sz[2 * i], sz[2 * i + 1], fac[i], 3136, 3211264 / fr[i],
                                           &got[2 * i], &got[2 * i + 1]);
                if (rc == VL3_E_LIMIT)
                    got[2 * i] = got[2 * i + 1] = -1;
            }
        }
        for (int i = 0; i < 2 * n; i++)
            if (got[i] != exp[i])
                TEST__FAIL("%s: item %d got %d, python %d", line, i / 2, got[i], exp[i]);
    }
    free(txt);
    ASSERT_EQ(calls, 3000);
    return 0;
}
