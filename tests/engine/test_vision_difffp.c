/* test_vision_difffp.c: DiffFP (spec §5.5) against the numpy reference tests/engine/difffp_ref.py
 * on a synthetic video whose tokens change by sums of |delta u| just below (117) and just above
 * (118) the 0.1 threshold, an unchanged frame (forced token 0) and a fully changed frame; both
 * the float32 default and the bf16 option; preprocessing and DiffFP on 3 threads there. And the
 * frames split over threads give the same pixel values and mask as one thread. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define W 112
#define H 112
#define T 5

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* add `total` grey levels of change spread over the 28x28 block (bx, by) of frame f */
static void perturb(uint8_t *f, int bx, int by, int total)
{
    for (int i = 0; total > 0; i++) {
        int x = bx * 28 + (i % 28), y = by * 28 + (i / 28) % 28, c = (i / 784) % 3;
        uint8_t *p = &f[(y * W + x) * 3 + c];
        if (*p < 250) {
            *p += 1;
            total--;
        } else if (*p > 5) {
            *p -= 1;
            total--;
        }
    }
}

static int run_case(enum vl3_difffp_dtype dt, int *ret_kept)
{
    static uint8_t frames[T][W * H * 3];
    for (int i = 0; i < W * H * 3; i++)
        frames[0][i] = (uint8_t)(rnd() & 255);
    memcpy(frames[1], frames[0], sizeof(frames[0]));
    perturb(frames[1], 1, 0, 117); /* dropped: 255*mean|dv| = 0.0995 */
    perturb(frames[1], 1, 1, 118); /* kept: 0.1003 */
    perturb(frames[1], 2, 2, 5000);
    memcpy(frames[2], frames[1], sizeof(frames[0])); /* nothing changes: token 0 forced */
    for (int i = 0; i < W * H * 3; i++)
        frames[3][i] = (uint8_t)(rnd() & 255);
    memcpy(frames[4], frames[3], sizeof(frames[0]));
    perturb(frames[4], 3, 3, 400);

    vl3_image im[T];
    for (int t = 0; t < T; t++)
        im[t] = (vl3_image){frames[t], W, H, W * 3};
    vl3_vision_item it = {im, T, NULL, 1, 0};
    vl3_preprocess_params pp;
    vl3_preprocess_params_default(&pp);
    pp.n_threads = 3;
    vl3_pixel_batch b = {0};
    vl3_error err = {0};
    ASSERT_OK_E(vl3_vision_preprocess(&pp, &it, 1, &b, &err), &err);
    ASSERT_EQ(b.grids[0].h, 8);
    ASSERT_EQ(b.grids[0].w, 8);

    vl3_difffp_params dp;
    vl3_difffp_params_default(&dp);
    dp.dtype = dt;
    dp.n_threads = 3;
    vl3_token_mask m = {0};
    ASSERT_OK_E(vl3_difffp_mask(&dp, &b, &m, &err), &err);
    ASSERT_EQ(m.n_tokens, T * 16);
    ASSERT_EQ(m.n_frames, T);

    char pv[1024], out[1024], log[4096];
    snprintf(pv, sizeof(pv), "%s/difffp.pv", test_tmpdir());
    snprintf(out, sizeof(out), "%s/difffp.mask", test_tmpdir());
    ASSERT_OK(vl3_file_write(pv, b.pixel_values, (size_t)b.n_patches * 588 * 4, NULL));
    int rc = test_sh(log, sizeof(log), "/usr/bin/python3 %s/tests/engine/difffp_ref.py %s %d 8 8 2 0.1 %s %s 2>&1",
                     test_source_dir(), pv, T, dt == VL3_DIFFFP_BF16 ? "bf16" : "f32", out);
    if (rc != 0)
        TEST__FAIL("difffp_ref.py failed: %s", log);
    char *ref = NULL;
    size_t len;
    ASSERT_OK(vl3_file_read(out, 1 << 20, &ref, &len, NULL));
    ASSERT_EQ(len, (size_t)m.n_tokens);
    for (int64_t k = 0; k < m.n_tokens; k++)
        if (ref[k] != m.keep[k])
            TEST__FAIL("token %lld: keep %d vs reference %d", (long long)k, m.keep[k], ref[k]);
    for (int t = 0; t < T; t++)
        ret_kept[t] = m.kept_per_frame[t];
    free(ref);
    vl3_token_mask_deinit(&m);
    vl3_pixel_batch_deinit(&b);
    return 0;
}

TEST(difffp_f32_matches_numpy)
{
    if (test_sh(NULL, 0, "/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
        SKIP("/usr/bin/python3 with numpy is not available");
    int kept[T];
    if (run_case(VL3_DIFFFP_F32, kept))
        return 1;
    /* the 117-level token is dropped, the 118-level and the big one kept */
    const int exp[T] = {16, 2, 1, 16, 1};
    for (int t = 0; t < T; t++)
        ASSERT_EQ(kept[t], exp[t]);
    return 0;
}

TEST(difffp_bf16_matches_numpy)
{
    if (test_sh(NULL, 0, "/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
        SKIP("/usr/bin/python3 with numpy is not available");
    int kept[T];
    if (run_case(VL3_DIFFFP_BF16, kept))
        return 1;
    ASSERT_EQ(kept[0], 16);
    ASSERT_EQ(kept[2], 1);
    return 0;
}

TEST(difffp_disabled_and_images)
{
    uint8_t px[28 * 28 * 3] = {0};
    vl3_image im[3] = {{px, 28, 28, 84}, {px, 28, 28, 84}, {px, 28, 28, 84}};
    vl3_vision_item items[2] = {{im, 3, NULL, 1, 0}, {im, 1, NULL, 0, 0}};
    vl3_preprocess_params pp;
    vl3_preprocess_params_default(&pp);
    vl3_pixel_batch b = {0};
    ASSERT_OK(vl3_vision_preprocess(&pp, items, 2, &b, NULL));
    vl3_difffp_params dp;
    vl3_difffp_params_default(&dp);
    vl3_token_mask m = {0};
    ASSERT_OK(vl3_difffp_mask(&dp, &b, &m, NULL));
    int vt = vl3_vision_grid_tokens_per_frame(&b.grids[0]);
    int it = vl3_vision_grid_tokens_per_frame(&b.grids[1]);
    ASSERT_EQ(m.n_frames, 4);
    ASSERT_EQ(m.kept_per_frame[0], vt);
    ASSERT_EQ(m.kept_per_frame[1], 1); /* identical frames keep token 0 only */
    ASSERT_EQ(m.keep[vt], 1);
    ASSERT_EQ(m.kept_per_frame[2], 1);
    ASSERT_EQ(m.kept_per_frame[3], it); /* the image is never pruned */
    ASSERT_EQ(m.n_kept, vt + 2 + it);
    vl3_token_mask_deinit(&m);
    dp.threshold = 0; /* 0 disables pruning */
    ASSERT_OK(vl3_difffp_mask(&dp, &b, &m, NULL));
    ASSERT_EQ(m.n_kept, m.n_tokens);
    vl3_token_mask_deinit(&m);
    vl3_pixel_batch_deinit(&b);
    return 0;
}

/* Two videos of 7 and 3 frames of different sizes and an image, preprocessed and pruned with 1
 * and with 3 threads: the same pixel values and keep mask, byte for byte. */
TEST(preprocess_and_difffp_threads_equal_one)
{
    enum { NF = 11 };
    static const int ws[3] = {150, 90, 64}, hs[3] = {100, 120, 64}, nfr[3] = {7, 3, 1};
    uint8_t *px[NF];
    vl3_image im[NF];
    int f = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < nfr[i]; k++, f++) {
            px[f] = malloc((size_t)ws[i] * hs[i] * 3);
            for (int j = 0; j < ws[i] * hs[i] * 3; j++) /* the left third changes, the rest not */
                px[f][j] = (uint8_t)(k > 0 && (j / 3) % ws[i] >= ws[i] / 3 ? px[f - 1][j]
                                                                           : rnd() & 255);
            im[f] = (vl3_image){px[f], ws[i], hs[i], ws[i] * 3};
        }
    vl3_vision_item items[3] = {
        {im, 7, NULL, 1, 0}, {im + 7, 3, NULL, 1, 0}, {im + 10, 1, NULL, 0, 0}};
    vl3_pixel_batch b[2] = {{0}, {0}};
    vl3_token_mask m[2] = {{0}, {0}};
    vl3_error err = {0};
    for (int r = 0; r < 2; r++) {
        vl3_preprocess_params pp;
        vl3_preprocess_params_default(&pp);
        pp.n_threads = r ? 3 : 1;
        ASSERT_OK_E(vl3_vision_preprocess(&pp, items, 3, &b[r], &err), &err);
        vl3_difffp_params dp;
        vl3_difffp_params_default(&dp);
        dp.n_threads = pp.n_threads;
        ASSERT_OK_E(vl3_difffp_mask(&dp, &b[r], &m[r], &err), &err);
    }
    ASSERT_EQ(b[0].n_patches, b[1].n_patches);
    ASSERT(memcmp(b[0].pixel_values, b[1].pixel_values,
                  sizeof(float) * (size_t)b[0].n_patches * b[0].patch_dim) == 0);
    ASSERT_EQ(m[0].n_tokens, m[1].n_tokens);
    ASSERT(memcmp(m[0].keep, m[1].keep, (size_t)m[0].n_tokens) == 0);
    int64_t kept = 0;
    for (int64_t k = 0; k < m[0].n_tokens; k++)
        kept += m[0].keep[k];
    ASSERT(kept > 0 && kept < m[0].n_tokens); /* some tokens pruned, some kept */
    for (int r = 0; r < 2; r++) {
        vl3_token_mask_deinit(&m[r]);
        vl3_pixel_batch_deinit(&b[r]);
    }
    for (f = 0; f < NF; f++)
        free(px[f]);
    return 0;
}
