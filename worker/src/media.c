/* media.c: the worker's one adapter for FFmpeg (libavformat, libavcodec, libavutil, libswscale).
 *
 * Untrusted bytes come in through our own AVIOContext (an fd opened by paths.c, or memory), so
 * no protocol is opened for the main input; nested opens are limited to the "file" protocol and
 * demuxers that open other files (hls, concat, image2 patterns, dash, ...) are refused unless
 * the configuration lists them. Limits are checked on the demuxer's claims before a decoder is
 * opened, and again on every decoded frame. RGB conversion copies the ffmpeg CLI's scale filter:
 * same-size sws context with SWS_BICUBIC, colour matrix and range from the frame, a 64-byte
 * aligned destination, then the CLI's autorotate (transpose/hflip+vflip) on the RGB bytes. */
#include "media.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "image.h"
#include "vl3/log.h"
#include "vl3/util.h"

#define MEDIA_IO_BUF 65536

struct media_pic {
    AVFrame *frame;
    struct media_frame_info info;
};

struct media_input {
    /* input bytes: an fd or a memory buffer */
    int fd;
    const uint8_t *mem;
    size_t mem_len, mem_pos; /* mem_pos: the read position for fds too */
    int64_t size;
    char name[256];

    struct media_policy policy;
    uint64_t deadline_ns; /* 0 = none */

    AVIOContext *pb;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    int stream;
    int eof_sent;   /* the decoder has been sent its flush packet */
    int64_t frames; /* decoded */
    int64_t packets; /* sent to the decoder */
    int64_t errors;  /* packets the decoder rejected and frames it flagged as damaged */

    media_skip_cb skip_cb;
    void *skip_user;
    int skip_fixed;

    struct SwsContext *sws;
    int sws_w, sws_h, sws_fmt, sws_space, sws_range;
    uint8_t *rgb_tmp; /* aligned conversion target, before rotation */
    int rgb_tmp_stride;

    struct media_info info;
};

void media_policy_default(struct media_policy *p)
{
    *p = (struct media_policy){
        .max_file_size = 64LL << 30,
        .max_duration_ms = 24LL * 3600 * 1000,
        .max_pixels = 67108864,
        .max_frames = 20000000,
        .decode_timeout_ms = 10LL * 60 * 1000,
        .threads = 0,
        .max_decode_errors = 0,
        .formats = NULL,
    };
}

/* FFmpeg's own messages go to our log at debug level (once per process). */
__attribute__((format(printf, 3, 0))) static void av_log_cb(void *avcl, int level,
                                                             const char *fmt, va_list vl)
{
    (void)avcl;
    if (level > AV_LOG_WARNING || VL3_LOG_DEBUG > vl3__log_max_level)
        return;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, vl);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    vl3_log_debug("ffmpeg: %s", line);
}

static void media_log_setup(void)
{
    av_log_set_callback(av_log_cb);
}

/* Once per process, safe when several decode threads open their first input together. */
static void media_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, media_log_setup);
}

/* --- error conversion (the one place AVERROR codes become ours) --------------------------- */

static int av_fail(vl3_error *reterr, int averr, int code, const char *what, const char *name)
{
    char buf[AV_ERROR_MAX_STRING_SIZE] = "";
    av_strerror(averr, buf, sizeof(buf));
    if (averr == AVERROR(ENOMEM))
        code = -ENOMEM;
    return vl3_error_set(reterr, code, "could not %s \"%s\": %s", what, name, buf);
}

static int timeout_fail(const media_input *m, vl3_error *reterr)
{
    return vl3_error_set(reterr, VL3_E_LIMIT,
                         "decoding \"%s\" exceeded the wall-time limit media.decode_timeout "
                         "(%lld ms)",
                         m->name, (long long)m->policy.decode_timeout_ms);
}

static int timed_out(const media_input *m)
{
    return m->deadline_ns && vl3_time_ns() > m->deadline_ns;
}

static int interrupt_cb(void *opaque)
{
    return timed_out(opaque);
}

/* --- custom I/O: reads come from our fd or memory, never from a URL ---------------------- */

static int io_read(void *opaque, uint8_t *buf, int len)
{
    media_input *m = opaque;
    if (m->mem) {
        size_t left = m->mem_len - m->mem_pos;
        size_t n = VL3_MIN((size_t)len, left);
        if (n == 0)
            return AVERROR_EOF;
        memcpy(buf, m->mem + m->mem_pos, n);
        m->mem_pos += n;
        return (int)n;
    }
    /* pread at our own position: clones share the open file description. */
    for (;;) {
        ssize_t n = pread(m->fd, buf, (size_t)len, (off_t)m->mem_pos);
        if (n > 0) {
            m->mem_pos += (size_t)n;
            return (int)n;
        }
        if (n == 0)
            return AVERROR_EOF;
        if (errno != EINTR)
            return AVERROR(errno);
    }
}

static int64_t io_seek(void *opaque, int64_t offset, int whence)
{
    media_input *m = opaque;
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE)
        return m->size;
    int64_t base;
    if (whence == SEEK_SET)
        base = 0;
    else if (whence == SEEK_CUR)
        base = (int64_t)m->mem_pos;
    else if (whence == SEEK_END)
        base = m->size;
    else
        return AVERROR(EINVAL);
    int64_t pos = base + offset;
    if (pos < 0 || (m->mem && pos > m->size))
        return AVERROR(EINVAL);
    m->mem_pos = (size_t)pos;
    return pos;
}

/* --- policy helpers ------------------------------------------------------------------------ */

/* Whether any comma-separated name of `names` appears in comma-separated `list`. */
static int name_listed(const char *names, const char *list)
{
    const char *p = names;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *q = list;
        while (*q) {
            size_t k = strcspn(q, ",");
            if (k == n && k > 0 && strncmp(p, q, n) == 0)
                return 1;
            q += k;
            if (*q == ',')
                q++;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Clockwise rotation the ffmpeg CLI's autorotate applies (0, 90, 180, 270; -1 other angles). */
static int stream_rotation(const AVStream *st)
{
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!sd || size < 9 * sizeof(int32_t))
        return 0;
    double theta = -round(av_display_rotation_get((const int32_t *)sd));
    if (isnan(theta))
        return 0;
    theta -= 360 * floor(theta / 360 + 0.9 / 360);
    if (fabs(theta - 90) < 1.0)
        return 90;
    if (fabs(theta - 180) < 1.0)
        return 180;
    if (fabs(theta - 270) < 1.0)
        return 270;
    if (fabs(theta) > 1.0)
        return -1;
    return 0;
}

static void copy_name(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "?");
    char *comma = strchr(dst, ',');
    if (comma && strncmp(dst, "mov", 3) == 0)
        *comma = '\0';
}

/* --- open ---------------------------------------------------------------------------------- */

static int open_common(media_input *m, vl3_error *reterr)
{
    const struct media_policy *pol = &m->policy;
    const char *formats = pol->formats && *pol->formats ? pol->formats : MEDIA_FORMATS_DEFAULT;
    AVDictionary *opts = NULL;
    const AVInputFormat *ifmt = NULL;
    const AVCodec *codec = NULL;
    int r;

    media_global_init();
    if (pol->decode_timeout_ms > 0 && !m->deadline_ns)
        m->deadline_ns = vl3_time_ns() + (uint64_t)pol->decode_timeout_ms * 1000000ull;
    if (m->size == 0)
        return vl3_error_set(reterr, VL3_E_DECODE, "input \"%s\" is empty", m->name);
    if (pol->max_file_size > 0 && m->size > pol->max_file_size)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "input \"%s\" has %lld bytes, more than media.max_file_size (%lld)",
                             m->name, (long long)m->size, (long long)pol->max_file_size);

    uint8_t *iobuf = av_malloc(MEDIA_IO_BUF);
    if (!iobuf)
        return -ENOMEM;
    m->pb = avio_alloc_context(iobuf, MEDIA_IO_BUF, 0, m, io_read, NULL, io_seek);
    if (!m->pb) {
        av_free(iobuf);
        return -ENOMEM;
    }
    m->fmt = avformat_alloc_context();
    if (!m->fmt)
        return -ENOMEM;
    m->fmt->pb = m->pb;
    m->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    m->fmt->interrupt_callback = (AVIOInterruptCB){interrupt_cb, m};
    m->fmt->protocol_whitelist = av_strdup("file");
    m->fmt->format_whitelist = av_strdup(formats);
    if (!m->fmt->protocol_whitelist || !m->fmt->format_whitelist)
        return -ENOMEM;

    /* Probe first so a refused demuxer gets a message naming it. */
    r = av_probe_input_buffer2(m->pb, &ifmt, m->name, m->fmt, 0, 0);
    /* image2 claims still images by their file extension, but it opens files by name pattern
     * and is never allowed: probe the content alone, which names the one-picture demuxer */
    if (r >= 0 && ifmt && strcmp(ifmt->name, "image2") == 0 && !timed_out(m)) {
        ifmt = NULL; /* the prober returns at once while it holds a format */
        r = av_probe_input_buffer2(m->pb, &ifmt, NULL, m->fmt, 0, 0);
    }
    if (timed_out(m))
        return timeout_fail(m, reterr);
    if (r < 0 || !ifmt)
        return av_fail(reterr, r < 0 ? r : AVERROR_INVALIDDATA, VL3_E_DECODE,
                       "recognise the format of", m->name);
    if (!name_listed(ifmt->name, formats))
        return vl3_error_set(reterr, VL3_E_POLICY,
                             "input \"%s\" needs demuxer \"%s\", which is not allowed "
                             "(media.formats does not list it)",
                             m->name, ifmt->name);

    if (av_dict_set(&opts, "enable_drefs", "0", 0) < 0 ||
        av_dict_set(&opts, "use_absolute_path", "0", 0) < 0 ||
        av_dict_set(&opts, "protocol_whitelist", "file", 0) < 0 ||
        av_dict_set(&opts, "safe", "1", 0) < 0) {
        av_dict_free(&opts);
        return -ENOMEM;
    }
    r = avformat_open_input(&m->fmt, m->name, ifmt, &opts);
    av_dict_free(&opts);
    if (r < 0) {
        if (timed_out(m))
            return timeout_fail(m, reterr);
        return av_fail(reterr, r, VL3_E_DECODE, "open", m->name);
    }
    /* The header's claims, before anything (find_stream_info opens decoders) acts on them. */
    for (unsigned i = 0; i < m->fmt->nb_streams; i++) {
        const AVCodecParameters *cp = m->fmt->streams[i]->codecpar;
        if (cp->codec_type == AVMEDIA_TYPE_VIDEO && pol->max_pixels > 0 &&
            (int64_t)cp->width * cp->height > pol->max_pixels)
            return vl3_error_set(reterr, VL3_E_LIMIT,
                                 "frame size %dx%d of \"%s\" exceeds media.max_pixels (%lld)",
                                 cp->width, cp->height, m->name, (long long)pol->max_pixels);
    }
    /* find_stream_info decodes a frame of each stream to learn what the header did not say
     * (an image demuxer's dimensions): its decoders get media.max_pixels too, so a small PNG
     * claiming 16000x16000 is refused before its 700 MB frame is allocated. */
    AVDictionary **sopts = NULL;
    unsigned ns = m->fmt->nb_streams;
    if (pol->max_pixels > 0 && ns > 0) {
        if (!(sopts = av_calloc(ns, sizeof(*sopts))))
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        for (unsigned i = 0; i < ns; i++)
            (void)av_dict_set_int(&sopts[i], "max_pixels", pol->max_pixels, 0);
    }
    r = avformat_find_stream_info(m->fmt, sopts);
    for (unsigned i = 0; sopts && i < ns; i++)
        av_dict_free(&sopts[i]);
    av_freep(&sopts);
    if (timed_out(m))
        return timeout_fail(m, reterr);
    if (r < 0)
        return av_fail(reterr, r, VL3_E_DECODE, "read stream information of", m->name);

    r = av_find_best_stream(m->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (r < 0) {
        int audio = av_find_best_stream(m->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, NULL, 0) >= 0;
        return vl3_error_set(reterr, VL3_E_DECODE, "input \"%s\" has no video stream%s", m->name,
                             audio ? " (audio only)" : "");
    }
    m->stream = r;
    for (unsigned i = 0; i < m->fmt->nb_streams; i++)
        m->fmt->streams[i]->discard = (int)i == m->stream ? AVDISCARD_DEFAULT : AVDISCARD_ALL;

    AVStream *st = m->fmt->streams[m->stream];
    AVCodecParameters *par = st->codecpar;
    if ((par->width <= 0 || par->height <= 0) && pol->max_pixels > 0)
        return vl3_error_set(reterr, VL3_E_LIMIT, "the frame size of \"%s\" is not in its "
                             "header and its first frame does not decode within "
                             "media.max_pixels (%lld)", m->name, (long long)pol->max_pixels);
    if (par->width <= 0 || par->height <= 0)
        return vl3_error_set(reterr, VL3_E_DECODE, "video stream of \"%s\" has no frame size",
                             m->name);
    if (pol->max_pixels > 0 && (int64_t)par->width * par->height > pol->max_pixels)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "frame size %dx%d of \"%s\" exceeds media.max_pixels (%lld)",
                             par->width, par->height, m->name, (long long)pol->max_pixels);
    if (pol->max_duration_ms > 0 && m->fmt->duration != AV_NOPTS_VALUE &&
        m->fmt->duration / 1000 > pol->max_duration_ms)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "duration %.1f s of \"%s\" exceeds media.max_duration (%lld ms)",
                             (double)m->fmt->duration / AV_TIME_BASE, m->name,
                             (long long)pol->max_duration_ms);
    if (pol->max_frames > 0 && st->nb_frames > pol->max_frames)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "\"%s\" has %lld frames, more than media.max_decoded_frames (%lld)",
                             m->name, (long long)st->nb_frames, (long long)pol->max_frames);

    codec = avcodec_find_decoder(par->codec_id);
    if (!codec)
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "no decoder for codec \"%s\" of \"%s\"",
                             avcodec_get_name(par->codec_id), m->name);
    m->dec = avcodec_alloc_context3(codec);
    if (!m->dec)
        return -ENOMEM;
    r = avcodec_parameters_to_context(m->dec, par);
    if (r < 0)
        return av_fail(reterr, r, VL3_E_DECODE, "configure the decoder of", m->name);
    m->dec->pkt_timebase = st->time_base;
    m->dec->thread_count = pol->threads > 0 ? pol->threads : vl3_cpu_count();
    m->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    if (pol->max_pixels > 0)
        m->dec->max_pixels = pol->max_pixels;
    r = avcodec_open2(m->dec, codec, NULL);
    if (r < 0)
        return av_fail(reterr, r, VL3_E_DECODE, "open the decoder of", m->name);
    m->pkt = av_packet_alloc();
    if (!m->pkt)
        return -ENOMEM;

    struct media_info *in = &m->info;
    int rot = stream_rotation(st);
    in->rotation = rot < 0 ? 0 : rot; /* other angles: shown unrotated (documented) */
    in->coded_width = par->width;
    in->coded_height = par->height;
    in->width = (in->rotation % 180) ? par->height : par->width;
    in->height = (in->rotation % 180) ? par->width : par->height;
    in->tb_num = st->time_base.num;
    in->tb_den = st->time_base.den;
    in->stream_start = st->start_time;
    in->format_start_us = m->fmt->start_time;
    in->duration_us = m->fmt->duration;
    in->fps_num = st->avg_frame_rate.num;
    in->fps_den = st->avg_frame_rate.den;
    in->nb_frames = st->nb_frames;
    in->threads = m->dec->thread_count;
    in->indexed = avformat_index_get_entries_count(st) > 0;
    copy_name(in->format, sizeof(in->format), m->fmt->iformat->name);
    in->is_image = name_listed(m->fmt->iformat->name, MEDIA_IMAGE_FORMATS);
    copy_name(in->codec, sizeof(in->codec), codec->name);
    const char *pf = av_get_pix_fmt_name(par->format);
    snprintf(in->pix_fmt, sizeof(in->pix_fmt), "%s", pf ? pf : "unknown");
    return 0;
}

static int open_finish(media_input *m, const char *name, const struct media_policy *policy,
                       media_input **ret_input, vl3_error *reterr)
{
    snprintf(m->name, sizeof(m->name), "%s", name ? name : "input");
    if (policy)
        m->policy = *policy;
    else
        media_policy_default(&m->policy);
    m->stream = -1;
    int r = open_common(m, reterr);
    if (r < 0) {
        if (r == -ENOMEM)
            vl3_error_set(reterr, r, "out of memory opening \"%s\"", m->name);
        media_close(m);
        return r;
    }
    *ret_input = m;
    return 0;
}

int media_open_fd(int fd, const char *name, const struct media_policy *policy,
                  media_input **ret_input, vl3_error *reterr)
{
    struct stat stbuf;
    if (fd < 0 || !ret_input)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments to media_open_fd");
    if (fstat(fd, &stbuf) < 0) {
        int e = -errno;
        close(fd);
        return vl3_error_set(reterr, e, "could not stat \"%s\": %s", name, strerror(-e));
    }
    if (!S_ISREG(stbuf.st_mode)) {
        close(fd);
        return vl3_error_set(reterr, VL3_E_POLICY, "input \"%s\" is not a regular file", name);
    }
    media_input *m = calloc(1, sizeof(*m));
    if (!m) {
        close(fd);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    m->fd = fd;
    m->size = stbuf.st_size;
    return open_finish(m, name, policy, ret_input, reterr);
}

int media_open_memory(const void *buf, size_t len, const char *name,
                      const struct media_policy *policy, media_input **ret_input,
                      vl3_error *reterr)
{
    if ((!buf && len) || !ret_input)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments to media_open_memory");
    media_input *m = calloc(1, sizeof(*m));
    if (!m)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    static const uint8_t empty[1];
    m->fd = -1;
    m->mem = buf ? buf : empty;
    m->mem_len = len;
    m->size = (int64_t)len;
    return open_finish(m, name, policy, ret_input, reterr);
}

int media_clone(const media_input *m, int threads, media_input **ret_input, vl3_error *reterr)
{
    media_input *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    c->fd = -1;
    if (m->mem) {
        c->mem = m->mem;
        c->mem_len = m->mem_len;
    } else {
        c->fd = fcntl(m->fd, F_DUPFD_CLOEXEC, 0);
        if (c->fd < 0) {
            free(c);
            return vl3_error_set(reterr, -errno, "could not duplicate the descriptor of \"%s\"",
                                 m->name);
        }
    }
    c->size = m->size;
    c->deadline_ns = m->deadline_ns;
    struct media_policy pol = m->policy;
    pol.threads = threads;
    return open_finish(c, m->name, &pol, ret_input, reterr);
}

void media_close(media_input *m)
{
    if (!m)
        return;
    sws_freeContext(m->sws);
    av_free(m->rgb_tmp);
    av_packet_free(&m->pkt);
    avcodec_free_context(&m->dec);
    if (m->fmt) {
        /* With AVFMT_FLAG_CUSTOM_IO the AVIOContext stays ours. */
        avformat_close_input(&m->fmt);
        avformat_free_context(m->fmt);
    }
    if (m->pb) {
        av_freep(&m->pb->buffer);
        avio_context_free(&m->pb);
    }
    if (m->fd >= 0)
        close(m->fd);
    free(m);
}

const struct media_info *media_get_info(const media_input *m)
{
    return &m->info;
}

int64_t media_frames_decoded(const media_input *m)
{
    return m->frames;
}

int64_t media_decode_errors(const media_input *m, int64_t *ret_packets)
{
    if (ret_packets)
        *ret_packets = m->packets;
    return m->errors;
}

/* --- demux, scan, seek ---------------------------------------------------------------------- */

static void packet_info(const media_input *m, const AVPacket *pkt, struct media_packet_info *pi)
{
    (void)m;
    pi->pts = pkt->pts;
    pi->dts = pkt->dts;
    pi->duration = pkt->duration;
    pi->key = !!(pkt->flags & AV_PKT_FLAG_KEY);
    pi->discard = !!(pkt->flags & AV_PKT_FLAG_DISCARD);
}

/* Next packet of the video stream into m->pkt. 1, 0 at EOF, or a negative code. */
static int read_video_packet(media_input *m, vl3_error *reterr)
{
    for (;;) {
        av_packet_unref(m->pkt);
        if (timed_out(m))
            return timeout_fail(m, reterr);
        int r = av_read_frame(m->fmt, m->pkt);
        if (r == AVERROR_EOF)
            return 0;
        if (r < 0) {
            if (timed_out(m))
                return timeout_fail(m, reterr);
            /* Treat read errors after some frames like the CLI: end of input. */
            if (m->frames > 0)
                return 0;
            return av_fail(reterr, r, VL3_E_DECODE, "read", m->name);
        }
        if (m->pkt->stream_index == m->stream)
            return 1;
    }
}

static int seek_to(media_input *m, int64_t pts, vl3_error *reterr)
{
    int r = avformat_seek_file(m->fmt, m->stream, INT64_MIN, pts, pts, 0);
    if (r < 0)
        r = av_seek_frame(m->fmt, m->stream, pts, AVSEEK_FLAG_BACKWARD);
    if (r < 0) {
        if (timed_out(m))
            return timeout_fail(m, reterr);
        return av_fail(reterr, r, VL3_E_DECODE, "seek in", m->name);
    }
    avcodec_flush_buffers(m->dec);
    m->eof_sent = 0;
    return 0;
}

int media_scan(media_input *m, media_scan_cb cb, void *user, vl3_error *reterr)
{
    int r;
    struct media_packet_info pi;
    int64_t n = 0;
    while ((r = read_video_packet(m, reterr)) > 0) {
        if (m->policy.max_frames > 0 && ++n > m->policy.max_frames)
            return vl3_error_set(reterr, VL3_E_LIMIT,
                                 "\"%s\" has more than media.max_decoded_frames (%lld) frames",
                                 m->name, (long long)m->policy.max_frames);
        packet_info(m, m->pkt, &pi);
        r = cb(user, &pi);
        if (r < 0)
            return r;
    }
    av_packet_unref(m->pkt);
    if (r < 0)
        return r;
    return media_rewind(m, reterr);
}

int media_seek(media_input *m, int64_t pts, vl3_error *reterr)
{
    return seek_to(m, pts, reterr);
}

int media_rewind(media_input *m, vl3_error *reterr)
{
    /* Reopen from byte 0: timestamp seeks to the start are unreliable in several demuxers
     * (MPEG-TS lands on a keyframe by dts, byte seeks confuse Matroska), and a reopen costs
     * only the header parse. */
    av_packet_free(&m->pkt);
    avcodec_free_context(&m->dec);
    avformat_close_input(&m->fmt);
    if (m->pb) {
        av_freep(&m->pb->buffer);
        avio_context_free(&m->pb);
    }
    m->mem_pos = 0;
    m->eof_sent = 0;
    int r = open_common(m, reterr);
    if (r == -ENOMEM)
        vl3_error_set(reterr, r, "out of memory reopening \"%s\"", m->name);
    return r;
}

void media_set_skip(media_input *m, media_skip_cb cb, void *user, enum media_skip skip)
{
    m->skip_cb = cb;
    m->skip_user = user;
    m->skip_fixed = skip;
}

/* --- decode -------------------------------------------------------------------------------- */

media_pic *media_pic_new(void)
{
    media_pic *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->frame = av_frame_alloc();
    if (!p->frame) {
        free(p);
        return NULL;
    }
    return p;
}

void media_pic_free(media_pic *p)
{
    if (!p)
        return;
    av_frame_free(&p->frame);
    free(p);
}

void media_pic_move(media_pic *dst, media_pic *src)
{
    av_frame_unref(dst->frame);
    av_frame_move_ref(dst->frame, src->frame);
    dst->info = src->info;
}

int media_pic_filled(const media_pic *p)
{
    return p->frame->buf[0] != NULL;
}

const struct media_frame_info *media_pic_info(const media_pic *p)
{
    return &p->info;
}

static enum AVDiscard to_discard(int skip)
{
    switch (skip) {
    case MEDIA_SKIP_NONREF:
    case MEDIA_SKIP_NONREF_NOLOOP:
        return AVDISCARD_NONREF;
    case MEDIA_SKIP_ALL:
        return AVDISCARD_ALL;
    case MEDIA_SKIP_NONKEY:
        return AVDISCARD_NONKEY;
    default:
        return AVDISCARD_DEFAULT;
    }
}

static int count_error(media_input *m, vl3_error *reterr)
{
    m->errors++;
    if (m->policy.max_decode_errors >= 0 && m->errors > m->policy.max_decode_errors)
        return vl3_error_set(reterr, VL3_E_DECODE,
                             "\"%s\" is damaged: %lld of %lld packets could not be decoded "
                             "(media.max_decode_errors = %lld)",
                             m->name, (long long)m->errors, (long long)m->packets,
                             (long long)m->policy.max_decode_errors);
    return 0;
}

static int check_frame(media_input *m, const AVFrame *f, vl3_error *reterr)
{
    if (m->policy.max_pixels > 0 && (int64_t)f->width * f->height > m->policy.max_pixels)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "frame size %dx%d of \"%s\" exceeds media.max_pixels (%lld)",
                             f->width, f->height, m->name, (long long)m->policy.max_pixels);
    if (f->width != m->info.coded_width || f->height != m->info.coded_height)
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                             "frame size of \"%s\" changes from %dx%d to %dx%d mid-stream",
                             m->name, m->info.coded_width, m->info.coded_height, f->width,
                             f->height);
    if (m->policy.max_frames > 0 && m->frames > m->policy.max_frames)
        return vl3_error_set(reterr, VL3_E_LIMIT,
                             "\"%s\" has more than media.max_decoded_frames (%lld) frames",
                             m->name, (long long)m->policy.max_frames);
    return 0;
}

int media_decode_next(media_input *m, media_pic *pic, vl3_error *reterr)
{
    int r;
    av_frame_unref(pic->frame);
    for (;;) {
        if (timed_out(m))
            return timeout_fail(m, reterr);
        r = avcodec_receive_frame(m->dec, pic->frame);
        if (r == 0) {
            m->frames++;
            r = check_frame(m, pic->frame, reterr);
            if (r < 0) {
                av_frame_unref(pic->frame);
                return r;
            }
            if ((pic->frame->decode_error_flags || (pic->frame->flags & AV_FRAME_FLAG_CORRUPT)) &&
                (r = count_error(m, reterr)) < 0) {
                av_frame_unref(pic->frame);
                return r;
            }
            pic->info.pts = pic->frame->best_effort_timestamp;
            pic->info.duration = pic->frame->pkt_duration;
            pic->info.key = !!pic->frame->key_frame;
            return 1;
        }
        if (r == AVERROR_EOF)
            return 0;
        if (r != AVERROR(EAGAIN))
            return av_fail(reterr, r, VL3_E_DECODE, "decode", m->name);
        if (m->eof_sent)
            return 0;

        r = read_video_packet(m, reterr);
        if (r < 0)
            return r;
        if (r == 0) {
            m->eof_sent = 1;
            r = avcodec_send_packet(m->dec, NULL);
            if (r < 0 && r != AVERROR_EOF)
                return av_fail(reterr, r, VL3_E_DECODE, "decode", m->name);
            continue;
        }
        int skip = m->skip_fixed;
        if (m->skip_cb) {
            struct media_packet_info pi;
            packet_info(m, m->pkt, &pi);
            skip = m->skip_cb(m->skip_user, &pi);
        }
        m->dec->skip_frame = to_discard(skip);
        m->dec->skip_loop_filter =
            skip == MEDIA_SKIP_NONREF_NOLOOP ? AVDISCARD_ALL : AVDISCARD_DEFAULT;
        r = avcodec_send_packet(m->dec, m->pkt);
        av_packet_unref(m->pkt);
        m->packets++;
        if (r < 0 && r != AVERROR(EAGAIN) && (r = count_error(m, reterr)) < 0)
            return r;
        /* Like the CLI, a broken packet is not fatal: the decoder resynchronises. */
        if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_INVALIDDATA) {
            if (r == AVERROR(ENOMEM))
                return av_fail(reterr, r, -ENOMEM, "decode", m->name);
        }
    }
}

/* --- conversion ------------------------------------------------------------------------------ */

/* The colour matrix the CLI's scale filter picks for a frame (vf_scale "auto"). */
static int frame_colorspace(const AVFrame *f)
{
    int cs = f->colorspace;
    if (cs < 1 || cs > 10 || cs == 8)
        cs = AVCOL_SPC_BT470BG;
    return cs;
}

static int ensure_sws(media_input *m, const AVFrame *f, vl3_error *reterr)
{
    int cs = frame_colorspace(f);
    int full = f->color_range == AVCOL_RANGE_JPEG;
    if (m->sws && m->sws_w == f->width && m->sws_h == f->height && m->sws_fmt == f->format &&
        m->sws_space == cs && m->sws_range == full)
        return 0;
    sws_freeContext(m->sws);
    m->sws = sws_getContext(f->width, f->height, f->format, f->width, f->height, AV_PIX_FMT_RGB24,
                            SWS_BICUBIC, NULL, NULL, NULL);
    if (!m->sws) {
        const char *pf = av_get_pix_fmt_name(f->format);
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                             "could not convert pixel format \"%s\" of \"%s\" to rgb24",
                             pf ? pf : "unknown", m->name);
    }
    int *inv_table, *table, in_full, out_full, bri, con, sat;
    if (sws_getColorspaceDetails(m->sws, &inv_table, &in_full, &table, &out_full, &bri, &con,
                                 &sat) >= 0) {
        /* Only YUV inputs carry a matrix; for RGB inputs swscale ignores these. */
        sws_setColorspaceDetails(m->sws, sws_getCoefficients(cs), full, table, out_full, bri, con,
                                 sat);
    }
    m->sws_w = f->width;
    m->sws_h = f->height;
    m->sws_fmt = f->format;
    m->sws_space = cs;
    m->sws_range = full;
    int stride = FFALIGN(f->width * 3, 64);
    av_free(m->rgb_tmp);
    m->rgb_tmp = av_malloc((size_t)stride * (size_t)f->height + 64);
    m->rgb_tmp_stride = stride;
    if (!m->rgb_tmp)
        return vl3_error_set(reterr, -ENOMEM, "out of memory converting \"%s\"", m->name);
    return 0;
}

int media_read_image(media_input *m, struct image_rgb *ret, vl3_error *reterr)
{
    media_pic *pic = media_pic_new();
    if (!pic)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    int r = media_decode_next(m, pic, reterr);
    if (r == 0)
        r = vl3_error_set(reterr, VL3_E_DECODE, "could not decode image \"%s\": no frame",
                          m->name);
    if (r > 0 && (r = image_from_avframe(pic->frame, ret, reterr)) < 0)
        vl3_error_prefix(reterr, "image \"%s\"", m->name);
    media_pic_free(pic);
    return r < 0 ? r : 0;
}

int media_pic_to_rgb(media_input *m, const media_pic *pic, uint8_t *dst, vl3_error *reterr)
{
    const AVFrame *f = pic->frame;
    if (!f->buf[0])
        return vl3_error_set(reterr, -EINVAL, "no picture to convert");
    int r = ensure_sws(m, f, reterr);
    if (r < 0)
        return r;
    uint8_t *planes[4] = {m->rgb_tmp, NULL, NULL, NULL};
    int strides[4] = {m->rgb_tmp_stride, 0, 0, 0};
    r = sws_scale(m->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, planes,
                  strides);
    if (r < 0)
        return av_fail(reterr, r, VL3_E_DECODE, "convert a frame of", m->name);

    const int W = f->width, H = f->height, S = m->rgb_tmp_stride;
    const uint8_t *src = m->rgb_tmp;
    switch (m->info.rotation) {
    case 0:
        for (int y = 0; y < H; y++)
            memcpy(dst + (size_t)y * W * 3, src + (size_t)y * S, (size_t)W * 3);
        break;
    case 180: /* hflip + vflip */
        for (int y = 0; y < H; y++) {
            const uint8_t *s = src + (size_t)(H - 1 - y) * S;
            uint8_t *d = dst + (size_t)y * W * 3;
            for (int x = 0; x < W; x++)
                memcpy(d + 3 * x, s + 3 * (W - 1 - x), 3);
        }
        break;
    case 90: /* transpose=clock: out is H wide, W high; out(x, y) = in(y, H-1-x) */
        for (int y = 0; y < W; y++) {
            uint8_t *d = dst + (size_t)y * H * 3;
            for (int x = 0; x < H; x++)
                memcpy(d + 3 * x, src + (size_t)(H - 1 - x) * S + 3 * (size_t)y, 3);
        }
        break;
    case 270: /* transpose=cclock: out(x, y) = in(W-1-y, x) */
        for (int y = 0; y < W; y++) {
            uint8_t *d = dst + (size_t)y * H * 3;
            for (int x = 0; x < H; x++)
                memcpy(d + 3 * x, src + (size_t)x * S + 3 * (size_t)(W - 1 - y), 3);
        }
        break;
    default:
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "rotation %d", m->info.rotation);
    }
    return 0;
}
