/* media.h: the worker's FFmpeg adapter (the only file that includes libav* headers).
 *
 * It opens one untrusted input under a strict policy (no network or nested-file demuxers, limits
 * on size, duration, pixels, frames and wall time), demuxes and decodes its video stream with
 * threads, and converts chosen pictures to RGB24 exactly as the ffmpeg CLI does (swscale,
 * bicubic flags, the frame's colour matrix and range; display-matrix rotation applied like the
 * CLI's autorotate). The frame-choosing logic lives in sample.c; it sees only the types below.
 *
 * Timestamps are in the video stream's time base as the decoder reports them
 * (best_effort_timestamp), before the CLI's start-time offset (sample.c applies that). */
#ifndef VL3_WORKER_MEDIA_H
#define VL3_WORKER_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#define MEDIA_NOPTS INT64_MIN

/* Still-image demuxers: each reads one picture from the input it is given (unlike image2, which
 * opens files by name pattern). An input they recognise is an image job (media_info.is_image). */
#define MEDIA_IMAGE_FORMATS "png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe"

/* The default demuxers a job may use: single-file containers that never open other files. */
#define MEDIA_FORMATS_DEFAULT                                                                      \
    "mov,matroska,avi,mpegts,mpeg,flv,ogg,ivf,asf,nut,yuv4mpegpipe,h264,hevc,m4v,obu," \
    MEDIA_IMAGE_FORMATS

struct media_policy {
    int64_t max_file_size;      /* bytes; 0 = no limit */
    int64_t max_duration_ms;    /* container duration; 0 = no limit */
    int64_t max_pixels;         /* width*height of the coded frame; 0 = no limit */
    int64_t max_frames;         /* frames decoded from one input; 0 = no limit */
    int64_t decode_timeout_ms;  /* wall time from open to close; 0 = no limit */
    int threads;                /* decoder threads; 0 = one per online CPU */
    int64_t max_decode_errors;  /* damaged packets/frames tolerated; -1 = any (like the CLI) */
    const char *formats;        /* comma-separated demuxer names allowed (borrowed); NULL = default */
};

/* Fill *p with the defaults (the worker's configuration defaults). */
void media_policy_default(struct media_policy *p);

struct media_info {
    int width, height;             /* displayed size: after rotation */
    int coded_width, coded_height; /* decoder's size */
    int rotation;                  /* clockwise degrees applied to frames: 0, 90, 180, 270 */
    int tb_num, tb_den;            /* video stream time base */
    int64_t stream_start;          /* stream start_time in the time base, or MEDIA_NOPTS */
    int64_t format_start_us;       /* container start_time in microseconds, or MEDIA_NOPTS */
    int64_t duration_us;           /* container duration in microseconds, or MEDIA_NOPTS */
    int fps_num, fps_den;          /* average frame rate (0/0 if unknown) */
    int64_t nb_frames;             /* frame count from the header, 0 if unknown */
    int threads;                   /* decoder threads in use */
    int indexed;                   /* the demuxer has a seek index (keyframe seeks are cheap) */
    int is_image;                  /* a still image (demuxer in MEDIA_IMAGE_FORMATS) */
    char format[32];               /* demuxer name */
    char codec[32];                /* decoder name */
    char pix_fmt[32];              /* decoded pixel format */
};

/* One video packet as demuxed, for media_scan() and the skip callback. */
struct media_packet_info {
    int64_t pts, dts;  /* stream time base, MEDIA_NOPTS if absent */
    int64_t duration;  /* stream time base, 0 if unknown */
    int key;           /* keyframe flag */
    int discard;       /* the demuxer marked it to be decoded but not shown (edit lists) */
};

/* A decoded frame's timing. */
struct media_frame_info {
    int64_t pts;      /* best_effort_timestamp, stream time base, MEDIA_NOPTS if none */
    int64_t duration; /* stream time base, 0 if unknown */
    int key;
};

enum media_skip {
    MEDIA_SKIP_NONE,   /* decode everything */
    MEDIA_SKIP_NONREF, /* drop frames no other frame refers to */
    MEDIA_SKIP_NONKEY, /* decode keyframes only */
    MEDIA_SKIP_NONREF_NOLOOP, /* NONREF, and skip the loop filter of the frames decoded */
    MEDIA_SKIP_ALL,    /* do not decode this packet at all */
    MEDIA_SKIP_COUNT,
};

/* Decides how to decode one packet (enum media_skip). */
typedef int (*media_skip_cb)(void *user, const struct media_packet_info *pkt);
/* Receives each video packet during media_scan(); a negative return stops the scan with it. */
typedef int (*media_scan_cb)(void *user, const struct media_packet_info *pkt);

typedef struct media_input media_input;
typedef struct media_pic media_pic;

/* Open fd (takes ownership: closed by media_close(), also on failure). name is used in messages
 * and for probing by extension (borrowed). Checks the policy before any decoder opens.
 * Returns 0, -ENOMEM, VL3_E_POLICY (refused demuxer, not a regular file), VL3_E_LIMIT (a limit
 * named in the message), VL3_E_DECODE (empty, audio-only, unreadable), VL3_E_UNSUPPORTED. */
int media_open_fd(int fd, const char *name, const struct media_policy *policy,
                  media_input **ret_input, vl3_error *reterr);
/* Same, reading from memory (borrowed for the input's lifetime; for the fuzzer and tests). */
int media_open_memory(const void *buf, size_t len, const char *name,
                      const struct media_policy *policy, media_input **ret_input,
                      vl3_error *reterr);
/* A second, independent reader of the same input (for decoding segments in parallel), with
 * `threads` decoder threads and the same limits and deadline. Returns as media_open_fd. */
int media_clone(const media_input *m, int threads, media_input **ret_input, vl3_error *reterr);

/* Close and free; NULL is a no-op. */
void media_close(media_input *m);

/* The input's description (borrowed, valid until media_close). */
const struct media_info *media_get_info(const media_input *m);

/* Read every video packet without decoding, calling cb for each, then seek back to the start.
 * Returns 0 or a negative code (cb's, VL3_E_LIMIT for the timeout, VL3_E_DECODE). */
int media_scan(media_input *m, media_scan_cb cb, void *user, vl3_error *reterr);

/* Choose per packet how to decode from now on (cb NULL: decode everything at `skip`). */
void media_set_skip(media_input *m, media_skip_cb cb, void *user, enum media_skip skip);

/* Seek to the keyframe at or before pts (stream time base) and flush the decoder.
 * Returns 0 or VL3_E_DECODE. */
int media_seek(media_input *m, int64_t pts, vl3_error *reterr);

/* Go back to the first packet and flush the decoder. Returns 0 or VL3_E_DECODE. */
int media_rewind(media_input *m, vl3_error *reterr);

/* Picture holders: a decoded frame kept by reference (no copy). */
media_pic *media_pic_new(void);
void media_pic_free(media_pic *p);
/* Move src's picture into dst (dst's old picture released; src left empty). */
void media_pic_move(media_pic *dst, media_pic *src);
/* Whether p holds a picture. */
int media_pic_filled(const media_pic *p);
/* The picture's timing (borrowed pointer into p). */
const struct media_frame_info *media_pic_info(const media_pic *p);

/* Decode the next frame in output order into pic (its old picture released).
 * Returns 1 with a frame, 0 at the end of the stream, or a negative code (VL3_E_DECODE,
 * VL3_E_LIMIT: frame size, frame count or time limit). */
int media_decode_next(media_input *m, media_pic *pic, vl3_error *reterr);

/* Convert pic to tightly packed RGB24 at the displayed size (info.width x info.height, rotation
 * applied) into dst, which holds width*height*3 bytes (borrowed). Returns 0 or a negative code. */
int media_pic_to_rgb(media_input *m, const media_pic *pic, uint8_t *dst, vl3_error *reterr);

/* Decode the first frame of a still image (media_info.is_image) and convert it as PIL's
 * convert('RGB') would (image.h) into *ret (owned; image_rgb_free). Returns 0, VL3_E_DECODE (no
 * frame), VL3_E_UNSUPPORTED (pixel format), VL3_E_LIMIT, -ENOMEM. */
struct image_rgb;
int media_read_image(media_input *m, struct image_rgb *ret, vl3_error *reterr);

/* Frames decoded so far and pictures converted so far (statistics). */
int64_t media_frames_decoded(const media_input *m);
/* Packets the decoder rejected plus frames it flagged as damaged; *ret_packets (may be NULL)
 * gets the packets sent so far. */
int64_t media_decode_errors(const media_input *m, int64_t *ret_packets);

#endif
