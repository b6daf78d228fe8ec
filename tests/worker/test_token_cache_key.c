/* test_token_cache_key.c: token cache keys (worker/src/token_cache.c). Every parameter that
 * shapes a window's rows changes the key; the question and task are not in it at all (a
 * vl3_mm_params differing only in the prompt's text gives the same key); the fingerprint follows
 * the file's bytes and size, not its name. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "token_cache.h"

struct fixture {
    vl3_mm_params mm;
    struct sample_params sp;
    struct tcache_key_params kp;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    vl3_preprocess_params_default(&f->mm.pre);
    vl3_difffp_params_default(&f->mm.difffp);
    vl3_prompt_params_default(&f->mm.prompt);
    sample_params_default(&f->sp);
    f->kp = (struct tcache_key_params){"00112233445566778899aabbccddeeff", "abc:10",
                                       TCACHE_MEDIA_VIDEO, &f->sp, 0, &f->mm, 1, "ffmpeg-sw",
                                       "cpu-f32"};
}

static void key_of(struct fixture *f, char key[33])
{
    f->kp.sp = &f->sp;
    f->kp.mm = &f->mm;
    if (tcache_key(&f->kp, key, NULL) < 0)
        strcpy(key, "error");
}

TEST(key_sensitivity)
{
    struct fixture f;
    char base[33], k[33];
    fixture_init(&f);
    key_of(&f, base);
    ASSERT_EQ(strlen(base), 32);
    /* same inputs, same key; question / task text do not enter */
    f.mm.prompt.user_text = "What is the red car doing?";
    f.mm.prompt.system = VL3_SYSTEM_DEFAULT;
    key_of(&f, k);
    ASSERT_STR_EQ(k, base);
#define CHANGED(stmt)                                                                              \
    do {                                                                                           \
        fixture_init(&f);                                                                          \
        stmt;                                                                                      \
        key_of(&f, k);                                                                             \
        if (strcmp(k, base) == 0 || strcmp(k, "error") == 0)                                       \
            TEST__FAIL("changing %s left the key as it was", #stmt);                               \
    } while (0)
    CHANGED(f.kp.model_identity = "00112233445566778899aabbccddeef0");
    CHANGED(f.kp.content = "abc:11");
    CHANGED(f.kp.media = TCACHE_MEDIA_IMAGE);
    CHANGED(f.kp.media = TCACHE_MEDIA_FRAMES);
    CHANGED(f.kp.window = 1);
    CHANGED(f.kp.bf16_input = 0);
    CHANGED(f.kp.decoder = "ffmpeg-cuda");
    CHANGED(f.kp.backend = "cuda-f32");
    CHANGED(f.sp.fps_num = 2);
    CHANGED(f.sp.fps_den = 2);
    CHANGED(f.sp.max_frames = 179);
    CHANGED(f.sp.window_s = 65);
    CHANGED(f.sp.native = 1);
    CHANGED(f.sp.mode = f.sp.mode == SAMPLE_MODE_FAST ? SAMPLE_MODE_EXACT : SAMPLE_MODE_FAST);
    CHANGED(f.mm.pre.rule = VL3_RESIZE_NATIVE);
    CHANGED(f.mm.pre.max_tokens = 1000);
    CHANGED(f.mm.pre.min_tokens = 8);
    CHANGED(f.mm.pre.video_merge = 1);
    CHANGED(f.mm.pre.image_merge = 2);
    CHANGED(f.mm.pre.native_video_max_pixels = 1000);
    CHANGED(f.mm.pre.mean[1] = 0.25f);
    CHANGED(f.mm.pre.std[2] = 0.25f);
    CHANGED(f.mm.difffp.enabled = !f.mm.difffp.enabled);
    CHANGED(f.mm.difffp.threshold = 0.2f);
    CHANGED(f.mm.difffp.dtype = VL3_DIFFFP_BF16);
    CHANGED(f.mm.difffp.min_tokens = 2);
    CHANGED(f.mm.prompt.flavour = VL3_PROMPT_NATIVE);
#undef CHANGED
    /* an image key ignores the sampling parameters */
    fixture_init(&f);
    f.kp.media = TCACHE_MEDIA_IMAGE;
    key_of(&f, base);
    f.sp.fps_num = 5;
    key_of(&f, k);
    ASSERT_STR_EQ(k, base);
    char *descr = NULL;
    ASSERT_OK(tcache_key(&f.kp, k, &descr));
    ASSERT_STR_CONTAINS(descr, "content=abc:10;");
    free(descr);
    return 0;
}

TEST(fingerprint)
{
    char a[256], b[256], c[256];
    snprintf(a, sizeof(a), "%s/fp_a", test_tmpdir());
    snprintf(b, sizeof(b), "%s/fp_b", test_tmpdir());
    snprintf(c, sizeof(c), "%s/fp_c", test_tmpdir());
    ASSERT_EQ(test_sh(NULL, 0, "mkdir -p %s && head -c 3000000 /dev/urandom > %s && cp %s %s && "
                      "/usr/bin/python3 -c \"import sys; d = bytearray(open(sys.argv[1], 'rb').read()); "
                      "d[-1] ^= 1; open(sys.argv[2], 'wb').write(d)\" %s %s",
                      test_tmpdir(), a, a, b, a, c), 0);
    char fa[TCACHE_FINGERPRINT_LEN], fb[TCACHE_FINGERPRINT_LEN], fc[TCACHE_FINGERPRINT_LEN];
    vl3_error err = {0};
    int fd = open(a, O_RDONLY);
    ASSERT_OK(tcache_fingerprint_fd(fd, fa, &err));
    close(fd);
    fd = open(b, O_RDONLY);
    ASSERT_OK(tcache_fingerprint_fd(fd, fb, &err));
    close(fd);
    fd = open(c, O_RDONLY);
    ASSERT_OK(tcache_fingerprint_fd(fd, fc, &err));
    close(fd);
    ASSERT_STR_EQ(fa, fb);                  /* same bytes under another name */
    ASSERT_STR_CONTAINS(fa, ":3000000");
    ASSERT(strcmp(fa, fc) != 0);            /* one byte changed at the end */
    return 0;
}
