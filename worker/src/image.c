/* image.c: image files and decoded frames -> RGB24 matching PIL's convert('RGB').
 *
 * Decoding goes through the worker's media adapter (media.c) under the image policy: only the
 * still-image demuxers of MEDIA_IMAGE_FORMATS (png, jpeg, webp, bmp, tiff; format probed from the
 * content, the file read through its descriptor, so the same path serves untrusted job inputs);
 * the first frame is taken. Conversion to RGB:
 *   - RGB24 / RGBA / BGRA / ARGB / ABGR / RGB0...: copy R, G, B (alpha dropped, no compositing:
 *     PIL's RGBA->RGB also just drops alpha); the alpha plane is kept beside them for the native
 *     flavour, which composites onto white (image_rgb_composite_white);
 *   - PAL8: palette expanded (palette alpha ignored, as PIL's P->RGB);
 *   - GRAY8 and YA8 (PIL "L"/"LA"): grey replicated into R, G, B (YA8's alpha kept too);
 *   - MONOBLACK / MONOWHITE (PIL "1"): 0 or 255;
 *   - RGB48 / RGBA64 (16-bit PNG): the high byte, as PIL's 16-bit RGB unpacker;
 *   - GRAY16 (PIL mode "I" for 16-bit grey PNG): value clamped to 0..255, as PIL's I->RGB;
 *   - YUV and anything else: libswscale at the same size with bilinear full-resolution chroma,
 *     accurate rounding, centred chroma siting and full range for yuvj*, measured closest to
 *     libjpeg/libwebp. (Video frames are converted by media.c as the ffmpeg CLI does.)
 * JPEG and lossy WebP are therefore NOT bit-exact with PIL: libjpeg / libwebp use their own
 * (fancy) chroma upsampling and fixed-point YCbCr->RGB, FFmpeg's decoders output YUV that swscale
 * converts; tests bound the difference instead.
 *
 * Also here: frame sequences given as still images (image_frames_list, see image.h). */
#include "image.h"

#include <ctype.h>
#include <fcntl.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "media.h"
#include "vl3/util.h"

void image_rgb_free(image_rgb *im)
{
    if (!im)
        return;
    free(im->data);
    free(im->alpha);
    memset(im, 0, sizeof(*im));
}

void image_rgb_composite_white(image_rgb *im)
{
    if (!im->alpha)
        return;
    /* PIL AlphaComposite.c with dst = opaque white: outa255 = 255 * 255, so coef1 = a << 7 and
     * coef2 = (255 - a) << 7 exactly; out = SHIFTFORDIV255(c * coef1 + 255 * coef2 + (0x80 << 7))
     * >> 7, SHIFTFORDIV255(x) = ((x >> 8) + x) >> 8 */
    for (int y = 0; y < im->height; y++) {
        uint8_t *d = im->data + (size_t)y * im->stride;
        const uint8_t *al = im->alpha + (size_t)y * im->width;
        for (int x = 0; x < im->width; x++, d += 3) {
            uint32_t a = al[x], coef1 = a << 7, coef2 = (255 - a) << 7;
            for (int c = 0; c < 3; c++) {
                uint32_t t = d[c] * coef1 + 255 * coef2 + (0x80 << 7);
                d[c] = (uint8_t)((((t >> 8) + t) >> 8) >> 7);
            }
        }
    }
    free(im->alpha);
    im->alpha = NULL;
}

vl3_image image_rgb_view(const image_rgb *im)
{
    vl3_image v = {im->data, im->width, im->height, im->stride};
    return v;
}

static int alloc_rgb(image_rgb *im, int w, int h)
{
    im->width = w;
    im->height = h;
    im->stride = (size_t)w * 3;
    im->data = malloc(im->stride * (size_t)h);
    return im->data ? 0 : -ENOMEM;
}

static uint16_t rd16(const uint8_t *p, int be)
{
    return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

/* Exact conversions; returns 1 when handled, 0 when the format needs swscale, -ENOMEM. */
static int convert_exact(const AVFrame *f, image_rgb *im)
{
    enum AVPixelFormat fmt = f->format;
    int w = f->width, h = f->height;
    int ri = -1, gi = -1, bi = -1, ai = -1, bpp = 0;
    switch (fmt) {
    case AV_PIX_FMT_RGB24: ri = 0, gi = 1, bi = 2, bpp = 3; break;
    case AV_PIX_FMT_BGR24: ri = 2, gi = 1, bi = 0, bpp = 3; break;
    case AV_PIX_FMT_RGBA: ai = 3; /* fall through */
    case AV_PIX_FMT_RGB0: ri = 0, gi = 1, bi = 2, bpp = 4; break;
    case AV_PIX_FMT_BGRA: ai = 3; /* fall through */
    case AV_PIX_FMT_BGR0: ri = 2, gi = 1, bi = 0, bpp = 4; break;
    case AV_PIX_FMT_ARGB: ai = 0; /* fall through */
    case AV_PIX_FMT_0RGB: ri = 1, gi = 2, bi = 3, bpp = 4; break;
    case AV_PIX_FMT_ABGR: ai = 0; /* fall through */
    case AV_PIX_FMT_0BGR: ri = 3, gi = 2, bi = 1, bpp = 4; break;
    case AV_PIX_FMT_YA8: ai = 1; break;
    default: break;
    }
    if (ai >= 0 && !(im->alpha = malloc((size_t)w * (size_t)h)))
        return -ENOMEM;
    for (int y = 0; y < h; y++) {
        const uint8_t *s = f->data[0] + (ptrdiff_t)y * f->linesize[0];
        uint8_t *d = im->data + (size_t)y * im->stride;
        uint8_t *al = im->alpha ? im->alpha + (size_t)y * w : NULL;
        if (bpp) {
            for (int x = 0; x < w; x++, s += bpp, d += 3) {
                d[0] = s[ri], d[1] = s[gi], d[2] = s[bi];
                if (al)
                    al[x] = s[ai];
            }
            continue;
        }
        switch (fmt) {
        case AV_PIX_FMT_PAL8: {
            const uint32_t *pal = (const uint32_t *)f->data[1]; /* native-endian ARGB */
            for (int x = 0; x < w; x++, d += 3) {
                uint32_t c = pal[s[x]];
                d[0] = (uint8_t)(c >> 16), d[1] = (uint8_t)(c >> 8), d[2] = (uint8_t)c;
            }
            break;
        }
        case AV_PIX_FMT_GRAY8:
            for (int x = 0; x < w; x++, d += 3)
                d[0] = d[1] = d[2] = s[x];
            break;
        case AV_PIX_FMT_YA8:
            for (int x = 0; x < w; x++, d += 3) {
                d[0] = d[1] = d[2] = s[2 * x];
                al[x] = s[2 * x + 1];
            }
            break;
        case AV_PIX_FMT_MONOBLACK:
        case AV_PIX_FMT_MONOWHITE:
            for (int x = 0; x < w; x++, d += 3) {
                int bit = (s[x >> 3] >> (7 - (x & 7))) & 1;
                if (fmt == AV_PIX_FMT_MONOWHITE)
                    bit = !bit;
                d[0] = d[1] = d[2] = bit ? 255 : 0;
            }
            break;
        case AV_PIX_FMT_RGB48BE: case AV_PIX_FMT_RGB48LE:
        case AV_PIX_FMT_RGBA64BE: case AV_PIX_FMT_RGBA64LE: {
            int be = fmt == AV_PIX_FMT_RGB48BE || fmt == AV_PIX_FMT_RGBA64BE;
            int step = (fmt == AV_PIX_FMT_RGB48BE || fmt == AV_PIX_FMT_RGB48LE) ? 6 : 8;
            for (int x = 0; x < w; x++, s += step, d += 3)
                for (int c = 0; c < 3; c++)
                    d[c] = (uint8_t)(rd16(s + 2 * c, be) >> 8);
            break;
        }
        case AV_PIX_FMT_GRAY16BE: case AV_PIX_FMT_GRAY16LE: {
            int be = fmt == AV_PIX_FMT_GRAY16BE;
            for (int x = 0; x < w; x++, d += 3) {
                unsigned v = rd16(s + 2 * x, be);
                d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
            }
            break;
        }
        default:
            return 0;
        }
    }
    return 1;
}

/* The yuvj* formats are their yuv* twins with full range. */
static enum AVPixelFormat unj(enum AVPixelFormat f, int *full)
{
    *full = 1;
    switch (f) {
    case AV_PIX_FMT_YUVJ420P: return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: return AV_PIX_FMT_YUV411P;
    default: *full = 0; return f;
    }
}

int image_from_avframe(const AVFrame *f, image_rgb *ret, vl3_error *reterr)
{
    image_rgb im = {0};
    if (!f || !ret || f->width <= 0 || f->height <= 0)
        return vl3_error_set(reterr, -EINVAL, "invalid frame");
    if (alloc_rgb(&im, f->width, f->height) < 0)
        return vl3_error_set(reterr, -ENOMEM, "out of memory for a %dx%d image", f->width,
                             f->height);
    int exact = convert_exact(f, &im);
    if (exact < 0) {
        image_rgb_free(&im);
        return vl3_error_set(reterr, -ENOMEM, "out of memory for a %dx%d image", f->width,
                             f->height);
    }
    if (exact) {
        *ret = im;
        return 0;
    }
    int full = 0;
    enum AVPixelFormat src = unj(f->format, &full);
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(src);
    /* centred chroma (JPEG, WebP) only means something for subsampled planes */
    int hpos = desc && desc->log2_chroma_w ? 128 : 0, vpos = desc && desc->log2_chroma_h ? 128 : 0;
    struct SwsContext *sws = sws_alloc_context();
    if (sws && (av_opt_set_int(sws, "srcw", f->width, 0) < 0 ||
                av_opt_set_int(sws, "srch", f->height, 0) < 0 ||
                av_opt_set_int(sws, "src_format", src, 0) < 0 ||
                av_opt_set_int(sws, "dstw", f->width, 0) < 0 ||
                av_opt_set_int(sws, "dsth", f->height, 0) < 0 ||
                av_opt_set_int(sws, "dst_format", AV_PIX_FMT_RGB24, 0) < 0 ||
                av_opt_set_int(sws, "sws_flags", SWS_BILINEAR | SWS_ACCURATE_RND |
                               SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP, 0) < 0 ||
                av_opt_set_int(sws, "src_range", full, 0) < 0 ||
                av_opt_set_int(sws, "src_h_chr_pos", hpos, 0) < 0 ||
                av_opt_set_int(sws, "src_v_chr_pos", vpos, 0) < 0 ||
                sws_init_context(sws, NULL, NULL) < 0)) {
        sws_freeContext(sws);
        sws = NULL;
    }
    if (!sws) {
        const char *name = av_get_pix_fmt_name(f->format);
        image_rgb_free(&im);
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "cannot convert pixel format \"%s\" to RGB",
                             name ? name : "unknown");
    }
    uint8_t *dst[4] = {im.data, NULL, NULL, NULL};
    int dst_ls[4] = {(int)im.stride, 0, 0, 0};
    sws_scale(sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, dst_ls);
    sws_freeContext(sws);
    *ret = im;
    return 0;
}

int image_load(const char *path, int64_t max_pixels, image_rgb *ret, vl3_error *reterr)
{
    if (!path || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vl3_error_set(reterr, -errno, "could not open image \"%s\": %s", path,
                             strerror(errno));
    struct media_policy pol;
    media_policy_default(&pol);
    pol.formats = MEDIA_IMAGE_FORMATS;
    pol.max_pixels = max_pixels;
    pol.threads = 1;
    media_input *m = NULL;
    int r = media_open_fd(fd, path, &pol, &m, reterr); /* fd closed by media_close */
    if (r == 0)
        r = media_read_image(m, ret, reterr);
    media_close(m);
    return r;
}

/* ---- frame sequences from still images ---- */

void image_frames_free(image_frames *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->paths[i]);
    free(f->paths);
    free(f->timestamps);
    memset(f, 0, sizeof(*f));
}

static int is_image_name(const char *n)
{
    const char *dot = strrchr(n, '.');
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};
    if (!dot || n[0] == '.')
        return 0;
    for (size_t i = 0; i < VL3_ARRAY_SIZE(ext); i++)
        if (strcasecmp(dot, ext[i]) == 0)
            return 1;
    return 0;
}

/* The last number of the stem ("frame_12.5" -> 12.5); 0 when there is none. */
static int name_time(const char *name, double *ret)
{
    const char *dot = strrchr(name, '.');
    size_t len = (size_t)(dot - name);
    size_t e = len;
    while (e > 0 && !isdigit((unsigned char)name[e - 1]))
        e--;
    if (e == 0)
        return 0;
    size_t s = e;
    while (s > 0 && (isdigit((unsigned char)name[s - 1]) ||
                     (name[s - 1] == '.' && s >= 2 && isdigit((unsigned char)name[s - 2]))))
        s--;
    char buf[64];
    if (e - s >= sizeof(buf))
        return 0;
    memcpy(buf, name + s, e - s);
    buf[e - s] = 0;
    char *end;
    *ret = strtod(buf, &end);
    return *end == 0;
}

static int push(image_frames *f, int *cap, const char *path, double ts)
{
    if (f->n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        char **np = realloc(f->paths, sizeof(char *) * (size_t)nc);
        if (!np)
            return -ENOMEM;
        f->paths = np;
        double *nt = realloc(f->timestamps, sizeof(double) * (size_t)nc);
        if (!nt)
            return -ENOMEM;
        f->timestamps = nt;
        *cap = nc;
    }
    if (!(f->paths[f->n] = strdup(path)))
        return -ENOMEM;
    f->timestamps[f->n++] = ts;
    return 0;
}

static void sort_frames(image_frames *f, int by_name)
{
    for (int i = 1; i < f->n; i++) /* insertion sort: stable, small n */
        for (int j = i; j > 0; j--) {
            int sw = by_name ? strcmp(f->paths[j - 1], f->paths[j]) > 0
                             : f->timestamps[j - 1] > f->timestamps[j];
            if (!sw)
                break;
            char *p = f->paths[j];
            f->paths[j] = f->paths[j - 1];
            f->paths[j - 1] = p;
            double t = f->timestamps[j];
            f->timestamps[j] = f->timestamps[j - 1];
            f->timestamps[j - 1] = t;
        }
}

int image_frames_list(const char *path, int max_frames, image_frames *ret, vl3_error *reterr)
{
    image_frames f = {0};
    int cap = 0, rc = 0;
    struct stat st;
    char full[4096];
    if (!path || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (stat(path, &st) < 0)
        return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", path,
                                 strerror(errno));
        int all_named = 1;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!is_image_name(de->d_name))
                continue;
            double ts = 0;
            if (!name_time(de->d_name, &ts))
                all_named = 0;
            snprintf(full, sizeof(full), "%s/%s", path, de->d_name);
            if ((rc = push(&f, &cap, full, ts)) < 0)
                break;
        }
        closedir(d);
        if (rc < 0)
            goto fail_oom;
        sort_frames(&f, !all_named);
        if (!all_named)
            for (int i = 0; i < f.n; i++)
                f.timestamps[i] = i;
    } else {
        char *buf = NULL;
        size_t len;
        if ((rc = vl3_file_read(path, 16 << 20, &buf, &len, reterr)) < 0)
            return rc;
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(dir, sizeof(dir), ".");
        int lineno = 0;
        for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            lineno++;
            char *hash = strchr(line, '#');
            if (hash)
                *hash = 0;
            char p[2048], extra[8];
            double ts;
            int k = sscanf(line, "%2047s %lf %7s", p, &ts, extra);
            if (k <= 0)
                continue;
            if (k != 2) {
                free(buf);
                image_frames_free(&f);
                return vl3_error_set(reterr, VL3_E_FORMAT,
                                     "\"%s\" line %d: expected \"path timestamp\"", path, lineno);
            }
            if (p[0] == '/')
                snprintf(full, sizeof(full), "%s", p);
            else
                snprintf(full, sizeof(full), "%s/%s", dir, p);
            if ((rc = push(&f, &cap, full, ts)) < 0) {
                free(buf);
                goto fail_oom;
            }
        }
        free(buf);
        sort_frames(&f, 0);
    }
    if (f.n == 0)
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\" names no frames", path);
    if (max_frames > 0 && f.n > max_frames) {
        int n = f.n;
        image_frames_free(&f);
        return vl3_error_set(reterr, VL3_E_LIMIT, "\"%s\" has %d frames, the limit is %d", path,
                             n, max_frames);
    }
    *ret = f;
    return 0;
fail_oom:
    image_frames_free(&f);
    return vl3_error_set(reterr, -ENOMEM, "out of memory");
}
