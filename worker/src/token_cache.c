/* token_cache.c: the token cache's keys (token_cache.h): the content fingerprint of a file and
 * the key over every parameter that shapes a window's visual rows. The description is a plain
 * "name=value;" text, hashed with XXH3-128; numbers print with %.17g (round-trip exact). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "token_cache.h"
#include "vl3/util.h"

#define TCACHE_KEY_VERSION 2 /* bump when the key's meaning changes (2: pre-projector rows) */

int tcache_fingerprint_fd(int fd, char ret[TCACHE_FINGERPRINT_LEN], vl3_error *reterr)
{
    enum { BUF = 1 << 20 };
    uint8_t *buf = malloc(BUF);
    XXH3_state_t *s = XXH3_createState();
    int rc = 0;
    if (!buf || !s) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    XXH3_128bits_reset(s);
    uint64_t size = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, BUF, (off_t)size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = vl3_error_set(reterr, -errno, "could not read the file to fingerprint it: %s",
                               strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        XXH3_128bits_update(s, buf, (size_t)n);
        size += (uint64_t)n;
    }
    XXH128_hash_t h = XXH3_128bits_digest(s);
    snprintf(ret, TCACHE_FINGERPRINT_LEN, "%016llx%016llx:%llu", (unsigned long long)h.high64,
             (unsigned long long)h.low64, (unsigned long long)size);
out:
    XXH3_freeState(s);
    free(buf);
    return rc;
}

int tcache_key(const struct tcache_key_params *p, char ret_key[33], char **ret_descr)
{
    if (!p || !ret_key || !p->model_identity || !p->content || !p->mm ||
        p->media >= TCACHE_MEDIA_COUNT || (p->media == TCACHE_MEDIA_VIDEO && !p->sp))
        return -EINVAL;
    vl3_strbuf b = {0};
    const vl3_preprocess_params *pre = &p->mm->pre;
    const vl3_difffp_params *d = &p->mm->difffp;
    vl3_strbuf_printf(&b, "vl3-token-cache;key=%d;format=%d;", TCACHE_KEY_VERSION,
                      VL3_VT_FORMAT_VERSION);
    vl3_strbuf_printf(&b, "model=%s;content=%s;", p->model_identity, p->content);
    vl3_strbuf_printf(&b, "flavour=%d;", (int)p->mm->prompt.flavour);
    if (p->media == TCACHE_MEDIA_IMAGE) {
        vl3_strbuf_printf(&b, "media=image;");
    } else if (p->media == TCACHE_MEDIA_FRAMES) {
        vl3_strbuf_printf(&b, "media=frames;");
    } else {
        const struct sample_params *sp = p->sp;
        vl3_strbuf_printf(
            &b, "media=video;sampling=%s;fps=%d/%d;max_frames=%lld;window_s=%.17g;window=%d;",
            sp->mode == SAMPLE_MODE_FAST ? "fast" : "exact", sp->fps_num, sp->fps_den,
            (long long)sp->max_frames, sp->window_s, p->window);
        /* transformers' native frame sampler picks other frames than the official loader's */
        if (sp->native)
            vl3_strbuf_printf(&b, "sampler=native;min_frames=%lld;",
                              (long long)sp->native_min_frames);
    }
    vl3_strbuf_printf(&b,
                      "resize=%d;patch=%d;merge=%d,%d;tokens=%d,%d;pixels=%lld,%lld,%lld,%lld;"
                      "rescale=%.17g;mean=%.9g,%.9g,%.9g;std=%.9g,%.9g,%.9g;",
                      (int)pre->rule, pre->patch_size, pre->image_merge, pre->video_merge,
                      pre->min_tokens, pre->max_tokens, (long long)pre->native_image_min_pixels,
                      (long long)pre->native_image_max_pixels,
                      (long long)pre->native_video_min_pixels,
                      (long long)pre->native_video_max_pixels, pre->rescale, (double)pre->mean[0],
                      (double)pre->mean[1], (double)pre->mean[2], (double)pre->std[0],
                      (double)pre->std[1], (double)pre->std[2]);
    if (d->enabled)
        vl3_strbuf_printf(&b, "difffp=on,%.9g,%d,%s;", (double)d->threshold, d->min_tokens,
                          d->dtype == VL3_DIFFFP_BF16 ? "bf16" : "f32");
    else
        vl3_strbuf_printf(&b, "difffp=off;");
    vl3_strbuf_printf(&b, "input=%s;decoder=%s;backend=%s;", p->bf16_input ? "bf16" : "f32",
                      p->decoder ? p->decoder : "ffmpeg-sw", p->backend ? p->backend : "cpu-f32");
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    XXH128_hash_t h = XXH3_128bits(b.s, b.len);
    snprintf(ret_key, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    if (ret_descr)
        *ret_descr = b.s;
    else
        free(b.s);
    return 0;
}
