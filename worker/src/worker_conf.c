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
        "engine backend: auto, cpu, cuda or cuda-emu (CUDA kernels on the host emulator)"),
    OPT("precision", VL3_CONF_STRING, precision, "auto", 0, 0, VL3_CONF_RESTART,
        "CPU arithmetic: auto (bf16 where the CPU has AMX or AVX512-BF16), bf16 or f32 (the "
        "numerical oracle); the VL3_PRECISION environment variable wins when set"),
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
        "most sampled frames per job (all windows together); a job that would sample more is "
        "refused before decoding"),
    OPT("media.max_windows", VL3_CONF_INT, max_windows, "10000", 1, 1e9, VL3_CONF_RESTART,
        "most windows per job; a job that would make more is refused before decoding"),
    OPT("media.max_answers", VL3_CONF_INT, max_answers, "20000", 1, 1e9, VL3_CONF_RESTART,
        "most answers (windows x tasks) per job; a job that would give more is refused"),
    OPT("media.decode_timeout", VL3_CONF_DURATION, decode_timeout_ms, "10min", 1000, 1e9,
        VL3_CONF_RESTART, "wall time allowed to decode one input"),
    OPT("memory_budget", VL3_CONF_SIZE, memory_budget, "8G", 1 << 20, 1e15, VL3_CONF_RESTART,
        "most memory the worker holds for queued frames and activations"),
    OPT("jobs.max_queued", VL3_CONF_INT, max_queued_jobs, "16", 1, 4096, VL3_CONF_RESTART,
        "jobs accepted and not finished; more are refused with a retryable error"),
    OPT("jobs.max_wall", VL3_CONF_DURATION, max_wall_ms, "2h", 1, 1e10, VL3_CONF_RESTART,
        "wall time a job may take from its arrival; then it fails and its memory is freed"),
    OPT("jobs.credits", VL3_CONF_INT, credits, "4", 1, 64, VL3_CONF_RESTART,
        "jobs the daemon may hand this worker at once (its hello's credits; at most "
        "jobs.max_queued); their windows share vision batches and decode steps, 1 = one job at "
        "a time"),
    OPT("jobs.decode_parallel", VL3_CONF_INT, decode_jobs, "2", 1, 256, VL3_CONF_RESTART,
        "jobs decoded at once (each with decode_threads decoder threads)"),
    OPT("batch.vision_frames", VL3_CONF_INT, vision_batch_frames, "256", 1, 1e6, VL3_CONF_RESTART,
        "most frames (of any jobs) one vision-encoder call takes"),
    OPT("batch.vision_wait", VL3_CONF_DURATION, vision_batch_wait_ms, "20ms", 0, 10000,
        VL3_CONF_RESTART, "longest the encoder waits, while nothing generates, for windows of "
        "other jobs to batch with (ends early when the batch is full or no job is decoding)"),
    OPT("batch.max_sequences", VL3_CONF_INT, max_sequences, "8", 1, 1024, VL3_CONF_RESTART,
        "answers generated together (continuous batching slots)"),
    OPT("batch.n_ctx", VL3_CONF_INT, n_ctx, "0", 0, 1 << 20, VL3_CONF_RESTART,
        "tokens per generation slot (0 = the engine default)"),
    OPT("generate.max_new_tokens", VL3_CONF_INT, max_new_tokens, "512", 1, 1 << 20,
        VL3_CONF_RESTART, "answer length limit when a job does not set one"),
    OPT("generate.seed", VL3_CONF_INT, seed, "-1", -1, 9.0e15, VL3_CONF_RESTART,
        "sampling seed of every answer (-1 = derived from the job id, task and window)"),
    OPT("task.caption", VL3_CONF_STRING, task_text[0], "", 0, 0, VL3_CONF_RESTART,
        "instruction override for caption ({media}; empty = built-in)"),
    OPT("task.ocr", VL3_CONF_STRING, task_text[1], "", 0, 0, VL3_CONF_RESTART,
        "instruction override for ocr"),
    OPT("task.chart_qa", VL3_CONF_STRING, task_text[2], "", 0, 0, VL3_CONF_RESTART,
        "instruction override for chart_qa ({question} required)"),
    OPT("task.qa", VL3_CONF_STRING, task_text[3], "", 0, 0, VL3_CONF_RESTART,
        "instruction override for qa ({question} required)"),
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
    {"media.sample_mode", VL3_CONF_ENUM, offsetof(struct worker_conf, sample_mode), "fast", 0, 0,
     sample_mode_names, VL3_CONF_RESTART,
     "exact (the official sampler's frames) or fast (within one frame, decodes less)"},
    OPT("cache.conninfo", VL3_CONF_STRING, cache_conninfo, "", 0, 0, VL3_CONF_RESTART,
        "PostgreSQL connection of the token cache (empty = no cache; docs/token-cache.md)"),
    OPT("cache.budget", VL3_CONF_SIZE, cache_budget, "0", 0, 1e15, VL3_CONF_RESTART,
        "most stored bytes of the token cache; least recently used entries beyond it are "
        "evicted (0 = no limit)"),
    {0},
};
