/* test_vision_image.c: image decoding (worker/src/image.c, FFmpeg) against PIL's
 * Image.open(p).convert('RGB') (tests/engine/pil_ref.py): bit-exact for PNG (RGB, RGBA, palette,
 * palette with transparency, grey, grey+alpha, 1-bit, 16-bit grey) and lossless WebP; within a
 * stated tolerance for JPEG and lossy WebP, where libjpeg/libwebp and FFmpeg+swscale differ in
 * chroma upsampling and YCbCr->RGB rounding. Bad files get clear errors. */
#include <errno.h>
#include <string.h>

#include "image.h"
#include "test.h"
#include "vl3/util.h"

TEST(decode_matches_pil)
{
    if (test_sh(NULL, 0, "/usr/bin/python3 -c 'import PIL, numpy' 2>/dev/null") != 0)
        SKIP("/usr/bin/python3 with PIL and numpy is not available");
    char dir[1024], log[4096];
    snprintf(dir, sizeof(dir), "%s/img", test_tmpdir());
    if (test_sh(log, sizeof(log), "/usr/bin/python3 %s/tests/engine/pil_ref.py %s images 2>&1",
                test_source_dir(), dir) != 0)
        TEST__FAIL("pil_ref.py failed: %s", log);
    char path[1200], *list = NULL;
    size_t len;
    snprintf(path, sizeof(path), "%s/images.txt", dir);
    ASSERT_OK(vl3_file_read(path, 1 << 20, &list, &len, NULL));
    int n_exact = 0, n_lossy = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char name[256];
        int w, h;
        ASSERT_EQ(sscanf(line, "%255s %d %d", name, &w, &h), 3);
        image_rgb im = {0};
        vl3_error err = {0};
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        ASSERT_OK_E(image_load(path, 0, &im, &err), &err);
        ASSERT_EQ(im.width, w);
        ASSERT_EQ(im.height, h);
        char *ref = NULL;
        size_t rl;
        snprintf(path, sizeof(path), "%s/%s.rgb", dir, name);
        ASSERT_OK(vl3_file_read(path, (size_t)1 << 30, &ref, &rl, NULL));
        ASSERT_EQ(rl, (size_t)w * h * 3);
        int64_t bad = 0, sum = 0, maxd = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w * 3; x++) {
                int d = abs((int)im.data[(size_t)y * im.stride + x] -
                            (int)(uint8_t)ref[(size_t)y * w * 3 + x]);
                bad += d != 0;
                sum += d;
                maxd = d > maxd ? d : maxd;
            }
        int lossy = strstr(name, "photo.jpg") || strstr(name, "lossy");
        int near = strstr(name, "photo444.jpg") != NULL;
        double mean = (double)sum / ((double)w * h * 3);
        printf("%-14s %4dx%-4d differing %lld, mean |d| %.3f, max |d| %lld%s\n", name, w, h,
               (long long)bad, mean, (long long)maxd, lossy ? " (lossy: tolerance)" : "");
        if (near) {
            /* 4:4:4 JPEG: only IDCT / YCbCr rounding differ: max |d| <= 4 */
            ASSERT_LE(maxd, 4);
            ASSERT(mean <= 0.2);
            n_lossy++;
        } else if (lossy) {
            /* 4:2:0 chroma (JPEG, lossy WebP): the upsampling filters differ; the test images
             * have sharp saturated lines, the worst case (measured mean 5.2 / 4.7): mean <= 8 */
            ASSERT(mean <= 8.0);
            n_lossy++;
        } else {
            ASSERT_EQ(bad, 0);
            n_exact++;
        }
        free(ref);
        image_rgb_free(&im);
    }
    free(list);
    ASSERT_GE(n_exact, 11);
    ASSERT_EQ(n_lossy, 3);
    return 0;
}

TEST(decode_errors)
{
    image_rgb im = {0};
    vl3_error err = {0};
    char path[1024];
    ASSERT_EQ(image_load("/nonexistent/x.png", 0, &im, &err), -ENOENT);
    ASSERT_STR_CONTAINS(err.msg, "x.png");
    snprintf(path, sizeof(path), "%s/garbage.png", test_tmpdir());
    ASSERT_OK(vl3_file_write(path, "not an image at all", 19, NULL));
    ASSERT(image_load(path, 0, &im, &err) < 0);
    ASSERT_STR_CONTAINS(err.msg, "garbage.png");
    /* a real PNG above the pixel limit */
    snprintf(path, sizeof(path), "%s/lim.png", test_tmpdir());
    if (test_sh(NULL, 0, "ffmpeg -v error -f lavfi -i color=red:s=64x64 -frames:v 1 -y %s", path) != 0)
        SKIP("ffmpeg CLI is not available");
    ASSERT_EQ(image_load(path, 1000, &im, &err), VL3_E_LIMIT);
    ASSERT_OK_E(image_load(path, 4096, &im, &err), &err);
    ASSERT_GE(im.data[0], 250); /* lavfi's red went through yuv420p before the PNG encoder */
    ASSERT_LE(im.data[1], 5);
    image_rgb_free(&im);
    return 0;
}

TEST(frames_list)
{
    char dir[1024], path[1200];
    snprintf(dir, sizeof(dir), "%s/frames", test_tmpdir());
    ASSERT_EQ(test_sh(NULL, 0, "mkdir -p %s && touch %s/frame_12.5.png %s/frame_2.png "
                               "%s/frame_0.0.jpg %s/notes.txt",
                      dir, dir, dir, dir, dir), 0);
    image_frames f = {0};
    vl3_error err = {0};
    ASSERT_OK_E(image_frames_list(dir, 0, &f, &err), &err);
    ASSERT_EQ(f.n, 3);
    ASSERT_NEAR(f.timestamps[0], 0.0, 0);
    ASSERT_NEAR(f.timestamps[1], 2.0, 0);
    ASSERT_NEAR(f.timestamps[2], 12.5, 0);
    ASSERT_STR_CONTAINS(f.paths[2], "frame_12.5.png");
    image_frames_free(&f);
    ASSERT_EQ(image_frames_list(dir, 2, &f, &err), VL3_E_LIMIT);
    /* list file, relative paths, comments, sorted by time */
    snprintf(path, sizeof(path), "%s/list.txt", dir);
    const char *txt = "# frames\nframe_2.png 7.25\n\n/abs/x.png 1.5 # comment\n";
    ASSERT_OK(vl3_file_write(path, txt, strlen(txt), NULL));
    ASSERT_OK_E(image_frames_list(path, 0, &f, &err), &err);
    ASSERT_EQ(f.n, 2);
    ASSERT_STR_EQ(f.paths[0], "/abs/x.png");
    ASSERT_NEAR(f.timestamps[1], 7.25, 0);
    ASSERT_STR_CONTAINS(f.paths[1], "/frames/frame_2.png");
    image_frames_free(&f);
    ASSERT_OK(vl3_file_write(path, "a.png\n", 6, NULL));
    ASSERT_EQ(image_frames_list(path, 0, &f, &err), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "line 1");
    ASSERT(image_frames_list("/nonexistent/dir", 0, &f, &err) < 0);
    return 0;
}
