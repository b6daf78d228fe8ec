/* worker_conf.h: vl3-worker's configuration struct and option table. */
#ifndef VL3_WORKER_CONF_H
#define VL3_WORKER_CONF_H

#include <stdint.h>

#include "vl3/conf.h"

struct worker_conf {
    char *model;          /* checkpoint directory */
    char *backend;        /* auto | cpu | cuda | cuda-emu */
    char *precision;      /* auto | bf16 | f32: the CPU backend's arithmetic (VL3_PRECISION) */
    int64_t device;       /* GPU index */
    int64_t threads;      /* CPU threads (0 = all cores) */
    int64_t decode_threads;
    char *roots;          /* colon-separated directories job paths must lie under */
    int64_t max_file_size;
    int64_t max_duration_ms;
    int64_t max_pixels;
    int64_t max_frames;   /* sampled frames per job, all windows together */
    int64_t max_windows;  /* windows per job */
    int64_t max_answers;  /* answers (windows x tasks) per job */
    int64_t decode_timeout_ms;
    int64_t memory_budget;
    char *log_level;
    /* job pipeline and batching (worker*.c) */
    int64_t max_queued_jobs;     /* jobs accepted but not finished; more are refused */
    int64_t max_wall_ms;         /* wall time from a job's arrival to its end */
    int64_t credits;             /* jobs the daemon may send at once (HELLO.credits) */
    int64_t decode_jobs;         /* jobs decoded at once (decode threads of the pipeline) */
    int64_t vision_batch_frames; /* most frames one vision-encoder call takes (across jobs) */
    int64_t vision_batch_wait_ms; /* how long the encoder waits for more frames to batch */
    int64_t max_sequences;       /* generation slots decoded together (continuous batching) */
    int64_t n_ctx;               /* tokens per generation slot (0 = engine default) */
    int64_t max_new_tokens;      /* answer length when a job does not say */
    int64_t seed;                /* sampling seed; -1 = derived from job id, task, window */
    char *task_text[4];          /* instruction overrides per task ("" = built-in) */
    /* media (worker/src/media*.c, sample.c) */
    char *media_formats;           /* demuxers a job may use */
    int64_t max_decoded_frames;    /* frames decoded from one input */
    int64_t max_decode_errors;     /* damaged packets tolerated (-1 = any) */
    int sample_mode;               /* enum sample_mode: exact or fast */
    /* token cache (token_cache.h) */
    char *cache_conninfo;          /* "" = no cache */
    int64_t cache_budget;          /* stored bytes; 0 = no limit */
};

extern const vl3_conf_option worker_conf_table[];

#endif
