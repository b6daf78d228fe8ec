/* worker_conf.c: the option table of vl3-worker. */
#include "worker_conf.h"

#include <stddef.h>

#include "media.h"

static const char *const sample_mode_names[] = {"exact", "fast", NULL};

#define OPT(name, type, field, def, min, max, flags, help)                                         \
    {name, type, offsetof(struct worker_conf, field), def, min, max, NULL, flags, help}

const vl3_conf_option worker_conf_table[] = {
    OPT("model", VL3_CONF_STRING, model, "", 0, 0, VL3_CONF_RESTART, "model checkpoint directory"),
    OPT("backend", VL3_CONF_STRING, backend, "auto", 0, 0, VL3_CONF_RESTART,
        "engine backend: auto, cpu or cuda"),
    OPT("device", VL3_CONF_INT, device, "0", 0, 64, VL3_CONF_RESTART, "GPU index"),
    OPT("threads", VL3_CONF_INT, threads, "0", 0, 1024, VL3_CONF_RESTART,
        "CPU inference threads (0 = all cores)"),
    OPT("decode_threads", VL3_CONF_INT, decode_threads, "0", 0, 256, VL3_CONF_RESTART,
        "decoder threads (0 = sized to the machine)"),
    OPT("media.roots", VL3_CONF_STRING, roots, "/srv/media", 0, 0, VL3_CONF_RESTART,
        "colon-separated directories that job paths must lie under"),
    OPT("media.max_file_size", VL3_CONF_SIZE, max_file_size, "64G", 1, 1e15, VL3_CONF_RESTART,
        "largest input file"),
    OPT("media.max_duration", VL3_CONF_DURATION, max_duration_ms, "24h", 1, 1e10,
        VL3_CONF_RESTART, "longest input video"),
    OPT("media.max_pixels", VL3_CONF_INT, max_pixels, "67108864", 1, 1e10, VL3_CONF_RESTART,
        "largest frame (width x height) accepted"),
    OPT("media.max_frames", VL3_CONF_INT, max_frames, "100000", 1, 1e9, VL3_CONF_RESTART,
        "most sampled frames per job"),
    OPT("media.decode_timeout", VL3_CONF_DURATION, decode_timeout_ms, "10min", 1000, 1e9,
        VL3_CONF_RESTART, "wall time allowed to decode one input"),
    OPT("memory_budget", VL3_CONF_SIZE, memory_budget, "8G", 1 << 20, 1e15, VL3_CONF_RESTART,
        "most memory the worker holds for queued frames and activations"),
    OPT("log.level", VL3_CONF_STRING, log_level, "info", 0, 0, VL3_CONF_RESTART,
        "err, warning, notice, info or debug"),
    /* media */
    {"media.formats", VL3_CONF_STRING, offsetof(struct worker_conf, media_formats),
     MEDIA_FORMATS_DEFAULT, 0, 0, NULL, VL3_CONF_RESTART,
     "comma-separated demuxers a job may use (never add hls, concat, image2, dash)"},
    OPT("media.max_decoded_frames", VL3_CONF_INT, max_decoded_frames, "20000000", 1, 1e12,
        VL3_CONF_RESTART, "most frames decoded from one input"),
    OPT("media.max_decode_errors", VL3_CONF_INT, max_decode_errors, "0", -1, 1e9,
        VL3_CONF_RESTART, "damaged packets tolerated per input (-1 = any, like the ffmpeg CLI)"),
    OPT("media.fps", VL3_CONF_DOUBLE, sample_fps, "1", 0.001, 1000, VL3_CONF_RESTART,
        "default sampling rate in frames per second"),
    OPT("media.frames_per_window", VL3_CONF_INT, frames_per_window, "180", 1, 1e6,
        VL3_CONF_RESTART, "default most frames kept per window (uniformly subsampled)"),
    OPT("media.window", VL3_CONF_DURATION, window_ms, "180s", 0, 1e10, VL3_CONF_RESTART,
        "default window length, each sampled on its own (0 = the whole video at once)"),
    {"media.sample_mode", VL3_CONF_ENUM, offsetof(struct worker_conf, sample_mode), "fast", 0, 0,
     sample_mode_names, VL3_CONF_RESTART,
     "exact (the official sampler's frames) or fast (within one frame, decodes less)"},
    {0},
};
