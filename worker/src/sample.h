/* sample.h: frame sampling for one video: which frames the model sees and their timestamps.
 *
 * Exact mode reproduces the official VideoLLaMA3 sampler (spec §5.1): the ffmpeg CLI's
 * `-vf fps=F:round=down` frame choice (including the CLI's start-time offset, end-of-stream
 * rule and constant-frame-rate padding), labels start_time + k/F, and numpy's
 * floor(linspace(0, len-1, max_frames)) subsampling. Fast mode picks the same frames but decodes
 * less (keyframe seeking between far-apart samples, loop filter skipped on frames nobody sees).
 * Both skip decoding frames no other frame refers to unless they are sampled, and stop after the
 * last sampled frame. Optional windows of W seconds sample each stretch of the video on its own
 * (max_frames per window), so long videos are not thinned out to max_frames overall. */
#ifndef VL3_WORKER_SAMPLE_H
#define VL3_WORKER_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "media.h"
#include "vl3/err.h"

enum sample_mode {
    SAMPLE_MODE_EXACT,
    SAMPLE_MODE_FAST,
    SAMPLE_MODE_COUNT,
};

struct sample_params {
    int fps_num, fps_den;  /* sampling rate F = fps_num/fps_den (default 1/1) */
    int64_t max_frames;    /* per window; 0 = keep every sampled frame */
    double window_s;       /* window length in seconds; 0 = the whole video is one window */
    enum sample_mode mode;
    int64_t max_bytes;     /* most bytes of RGB pictures held for the result; 0 = no limit */
    int64_t max_total;     /* most frames kept over all windows; 0 = no limit (checked after
                            * planning, before any frame is decoded for the result) */
    int native;            /* 1: transformers' native VideoLlama3 sampler instead of the official
                            * loader's (see native_select in sample.c); window_s is ignored */
    int64_t native_min_frames; /* native: fewest frames (default 4) */
};

void sample_params_default(struct sample_params *p);
void sample_fps_fraction(double fps, int *num, int *den);

struct sample_frame {
    const uint8_t *rgb; /* width*height*3 bytes, RGB24, inside sample_result.pixels */
    double timestamp;   /* label: start_time + k/F (seconds) */
    int64_t index;      /* k: position among all sampled frames before subsampling */
    int64_t src_pts;    /* the decoded frame's pts (stream time base) */
    int window;         /* window number (0 without windows) */
};

struct sample_result {
    int width, height;           /* displayed size (after rotation) */
    size_t n;                    /* frames kept */
    struct sample_frame *frames; /* n entries */
    uint8_t *pixels;             /* one slab: n distinct pictures may share storage */
    int n_windows;
    int64_t n_sampled;           /* frames the fps rule yields before subsampling */
    int subsampled;              /* 1 if some window held more than max_frames */
    double start_time;           /* stream start_time as ffprobe prints it (seconds) */
    int64_t frames_decoded;      /* statistics */
    int64_t pictures_converted;
    int predicted;               /* 1 if the plan came from packet timestamps (no extra pass) */
    int segments;                /* keyframe segments decoded in parallel (0: one serial pass) */
};

/* Sample m (borrowed; its read position is consumed) into a new result (returned owned; free
 * with sample_result_free). Returns 0 or a negative code with reterr set (media's codes,
 * VL3_E_DECODE for a video without frames, VL3_E_LIMIT (also when more than max_total frames
 * would be kept), -ENOMEM). */
int sample_video(media_input *m, const struct sample_params *p, struct sample_result **ret_result,
                 vl3_error *reterr);
void sample_result_free(struct sample_result *r);

/* numpy: np.linspace(0, len-1, num).astype(int) in float64, into idx[num]. num <= len. */
void sample_linspace_floor(int64_t len, int64_t num, int64_t *idx);

#endif
