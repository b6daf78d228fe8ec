/* sampling_defaults.h: the one set of video sampling defaults (the official VideoLLaMA3 values:
 * 1 frame per second, at most 180 frames per window). Used by the job parser (daemon), `vl3
 * enqueue`, `vl3 run`, the worker's sampler and documented in docs/jobs.md and
 * schema/job.schema.json.
 *
 * A job that does not set sampling.window is cut into windows of max_frames / fps seconds, so
 * at the default rate every window keeps all its frames and a long video is covered end to end
 * (one result per task and window). sampling.window = 0 means one window over the whole video,
 * uniformly subsampled to max_frames as the official code does. */
#ifndef VL3_SAMPLING_DEFAULTS_H
#define VL3_SAMPLING_DEFAULTS_H

#include <stdint.h>

#define VL3_SAMPLING_FPS_DEFAULT 1.0        /* frames sampled per second of video */
#define VL3_SAMPLING_MAX_FRAMES_DEFAULT 180 /* most frames kept per window */
#define VL3_SAMPLING_FPS_MIN 1e-6           /* the rates a job (sampling.fps) and vl3 run take */
#define VL3_SAMPLING_FPS_MAX 1000.0

/* The window length (seconds) of a job that sets none: max_frames / fps. */
static inline double vl3_sampling_window_default(double fps, int64_t max_frames)
{
    return fps > 0 ? (double)max_frames / fps : 0;
}

#endif
