/* worker_conf.c: the option table of vl3-worker. */
#include "worker_conf.h"

#include <stddef.h>

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
    {0},
};
