/* proto.h: the daemon <-> worker protocol (schema/worker-protocol.md is the normative text).
 *
 * vl3d talks to each vl3-worker over the worker's stdin (daemon -> worker) and stdout
 * (worker -> daemon). The stream is a sequence of frames:
 *
 *   offset 0  u8   magic 'V' (0x56)
 *   offset 1  u8   protocol version (VL3_PROTO_VERSION)
 *   offset 2  u8   frame type (enum vl3_proto_type)
 *   offset 3  u8   flags, must be 0 in version 1
 *   offset 4  u32  payload length, big-endian
 *   offset 8  payload: one UTF-8 JSON object (every type but TOKENS, whose payload is opaque)
 *
 * The decoder never trusts a length: the header is checked (magic, version, known type, zero
 * flags, length within the per-type limit) before any payload byte is buffered, so a hostile or
 * broken peer cannot make the reader allocate more than one limit. Any violation is fatal for
 * the stream (the daemon then kills the worker): there is no resynchronisation.
 *
 * Two layers: vl3_proto_reader turns bytes into frames; vl3_proto_msg_parse() turns a frame
 * into a typed message, checking every field's type and size and naming the field in errors.
 * Encoders build frames from typed structs. Nothing here logs or touches the event loop. */
#ifndef VL3_PROTO_H
#define VL3_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#define VL3_PROTO_MAGIC 0x56u
#define VL3_PROTO_VERSION 1u /* the frame header's version byte */
/* Protocol levels a worker may speak (HELLO.proto): 1 = one job at a time; 2 = credits (the
 * worker holds up to HELLO.credits jobs at once, PONG lists them). */
#define VL3_PROTO_LEVEL_MIN 1
#define VL3_PROTO_LEVEL 2
#define VL3_PROTO_MAX_CREDITS 64 /* jobs one worker may hold (also PONG.jobs entries) */
#define VL3_PROTO_HEADER_SIZE 8u
/* Limits (bytes / counts). JSON frames are small; token frames carry a packed visual-token cache. */
#define VL3_PROTO_MAX_JSON (1u << 20)
#define VL3_PROTO_MAX_TOKENS (64u << 20)
#define VL3_PROTO_MAX_ID 256       /* job id length */
#define VL3_PROTO_MAX_PATH 4096    /* input path length */
#define VL3_PROTO_MAX_TEXT 65536   /* question, answer, error message */
#define VL3_PROTO_MAX_TASKS 16

enum vl3_proto_type {
    VL3_PROTO_HELLO = 1,    /* worker -> daemon, first frame: version, identity */
    VL3_PROTO_JOB = 2,      /* daemon -> worker: run one job */
    VL3_PROTO_PROGRESS = 3, /* worker -> daemon: still working on a job (also resets hang timer) */
    VL3_PROTO_RESULT = 4,   /* worker -> daemon: one answer (task x window) */
    VL3_PROTO_DONE = 5,     /* worker -> daemon: every result of the job has been sent */
    VL3_PROTO_ERROR = 6,    /* worker -> daemon: the job (or the worker) failed */
    VL3_PROTO_TOKENS = 7,   /* worker -> daemon: visual-token cache blob (reserved, opaque) */
    VL3_PROTO_PING = 8,     /* daemon -> worker: liveness probe */
    VL3_PROTO_PONG = 9,     /* worker -> daemon: answer to PING */
    VL3_PROTO_TYPE_COUNT
};

enum vl3_task_kind {
    VL3_TASK_CAPTION,
    VL3_TASK_OCR,
    VL3_TASK_CHART_QA, /* needs a question */
    VL3_TASK_QA,       /* needs a question */
    VL3_TASK_KIND_COUNT
};

enum vl3_sampling_mode {
    VL3_SAMPLING_FAST,  /* keyframe-friendly sampling, may skip non-reference frames */
    VL3_SAMPLING_EXACT, /* frames at exactly 1/fps intervals */
    VL3_SAMPLING_MODE_COUNT
};

/* How a job uses the token cache (JOB "cache"; docs/token-cache.md). */
enum vl3_cache_mode {
    VL3_CACHE_USE,     /* default: look up each window, store misses */
    VL3_CACHE_REFRESH, /* recompute every window and replace its entry */
    VL3_CACHE_OFF,     /* neither read nor write */
    VL3_CACHE_MODE_COUNT
};

/* Error codes a worker reports (ERROR.code), stable strings on the wire. */
enum vl3_proto_errcode {
    VL3_PERR_INTERNAL,    /* "internal" */
    VL3_PERR_INPUT,       /* "input": cannot open/read the input */
    VL3_PERR_DECODE,      /* "decode": the media could not be decoded */
    VL3_PERR_UNSUPPORTED, /* "unsupported": a valid request this worker cannot do */
    VL3_PERR_RESOURCE,    /* "resource": out of memory / device busy (retryable) */
    VL3_PERR_DEVICE,      /* "device": GPU fault; the worker will exit with 75 */
    VL3_PERR_PROTOCOL,    /* "protocol": the worker could not understand a frame */
    VL3_PERR_COUNT
};

/* Strings of the enums above; NULL when out of range. *_parse return the value or -EINVAL. */
const char *vl3_task_kind_name(int kind);
int vl3_task_kind_parse(const char *s);
const char *vl3_sampling_mode_name(int mode);
int vl3_sampling_mode_parse(const char *s);
const char *vl3_cache_mode_name(int mode);
int vl3_cache_mode_parse(const char *s);
const char *vl3_proto_type_name(int type);
const char *vl3_proto_errcode_name(int code);
int vl3_proto_errcode_parse(const char *s);

/* ---- typed messages. Strings are borrowed: from the caller's data when encoding, from the
 * vl3_proto_msg's JSON tree when decoding (valid until vl3_proto_msg_free()). ---- */

struct vl3_proto_task {
    int kind;             /* enum vl3_task_kind */
    const char *question; /* NULL for caption/ocr */
};

struct vl3_proto_sampling {
    double fps;         /* > 0 */
    int64_t max_frames; /* >= 1 */
    int mode;           /* enum vl3_sampling_mode */
    double window_s;    /* 0 = the whole input is one window */
};

struct vl3_proto_job {
    const char *job_id;
    const char *input; /* absolute path */
    int ntasks;
    struct vl3_proto_task tasks[VL3_PROTO_MAX_TASKS];
    struct vl3_proto_sampling sampling;
    int64_t max_new_tokens; /* 0 = worker default */
    double temperature;     /* 0 = greedy */
    int attempt;            /* 1-based, informational */
    int cache;              /* enum vl3_cache_mode ("cache", absent = use) */
};

struct vl3_proto_hello {
    int64_t proto;       /* VL3_PROTO_LEVEL_MIN .. VL3_PROTO_LEVEL */
    const char *worker;  /* "vl3-worker 0.1.0" */
    const char *backend; /* "cpu", "cuda", ... */
    int64_t pid;
    int64_t credits; /* jobs the worker takes at once, 1..VL3_PROTO_MAX_CREDITS (proto 2; absent
                      * or proto 1: 1; 0 when encoding = omitted) */
};

struct vl3_proto_progress {
    const char *job_id;
    const char *stage; /* "decode", "vision", "generate", ... */
    int64_t done, total;
};

/* Per-result statistics; every field optional on the wire (absent = 0). */
struct vl3_proto_stats {
    int64_t frames_decoded, frames_pruned, tokens_generated, batch_size;
    double decode_ms, vision_ms, prefill_ms, generate_ms;
    int64_t frames_sampled;   /* frames the model saw for this window (1 for an image) */
    double sample_interval_s; /* window duration / frames_sampled (0 for an image) */
    int cache;                /* token cache: 0 not used (absent), 1 miss, 2 hit ("cache") */
    int64_t tokens_total, tokens_kept; /* visual tokens before / after DiffFP pruning */
    int64_t prompt_tokens;             /* prompt length, visual tokens included */
    int64_t vision_batch_frames;  /* frames in the vision-encoder call that served the window */
    int64_t vision_batch_windows; /* windows (of any jobs) in that call */
    int64_t vision_batch_jobs;    /* distinct jobs in that call */
    int64_t decode_step_jobs;     /* most distinct jobs in one decode step of this answer */
};

struct vl3_proto_result {
    const char *job_id;
    int64_t task;          /* index into the job's tasks */
    int64_t window;        /* 0-based window index */
    double t_start, t_end; /* seconds of the input the window covers */
    const char *answer;
    struct vl3_proto_stats stats;
};

/* What the worker learned about the input file while decoding it (DONE.media, optional; the
 * daemon stores it in the videos table). Zero means unknown for every field but `present`. */
struct vl3_proto_media {
    int present;          /* the DONE frame carries a "media" object */
    int64_t size;         /* bytes (required inside "media") */
    int64_t mtime_s;      /* modification time, seconds since the epoch */
    double duration_s;    /* container duration (0 for still images and when unknown) */
    int64_t width, height; /* displayed size */
    double fps;           /* average frame rate */
    const char *codec;    /* decoder name, e.g. "h264" or "png" */
    const char *fingerprint; /* content hash of the file (token cache), NULL when unknown */
};

struct vl3_proto_done {
    const char *job_id;
    int64_t results; /* how many RESULT frames the job produced */
    struct vl3_proto_media media;
};

struct vl3_proto_error {
    const char *job_id; /* NULL: the worker itself failed */
    int code;           /* enum vl3_proto_errcode */
    int retryable;
    const char *message;
};

struct vl3_proto_ping {
    int64_t seq;
};

struct vl3_proto_pong {
    int64_t seq;
    const char *job_id; /* job being worked on (the oldest held), NULL when idle */
    int njobs;          /* proto 2: every job the worker holds (absent = 0 entries) */
    const char *jobs[VL3_PROTO_MAX_CREDITS];
};

typedef struct vl3_proto_msg {
    int type; /* enum vl3_proto_type */
    json_t *root; /* owned; NULL for TOKENS */
    union {
        struct vl3_proto_hello hello;
        struct vl3_proto_job job;
        struct vl3_proto_progress progress;
        struct vl3_proto_result result;
        struct vl3_proto_done done;
        struct vl3_proto_error error;
        struct vl3_proto_ping ping;
        struct vl3_proto_pong pong;
        struct {
            const uint8_t *data; /* borrowed from the frame */
            size_t len;
        } tokens;
    } u;
} vl3_proto_msg;

/* ---- framing ---- */

typedef struct vl3_proto_frame {
    int type;
    const uint8_t *payload; /* borrowed from the reader: valid until its next call */
    size_t len;
} vl3_proto_frame;

typedef struct vl3_proto_reader {
    uint8_t *buf;
    size_t len, cap, off; /* bytes buffered, allocated, already consumed */
    size_t max_json, max_tokens;
    int broken; /* set after a violation; every later call fails */
} vl3_proto_reader;

/* Set up a reader with the default limits (VL3_PROTO_MAX_JSON / _TOKENS). */
void vl3_proto_reader_init(vl3_proto_reader *r);
/* Release its buffer. Accepts a zeroed or half-used reader. */
void vl3_proto_reader_deinit(vl3_proto_reader *r);
/* Append n bytes (borrowed; copied). Returns 0, -ENOMEM, or VL3_E_PROTO once broken. */
int vl3_proto_reader_feed(vl3_proto_reader *r, const void *data, size_t n);
/* Take the next complete frame. Returns 1 and fills ret (payload borrowed until the next call),
 * 0 when more bytes are needed, or VL3_E_PROTO (bad magic/version/type/flags, length over the
 * limit) after which the reader is broken for good. */
int vl3_proto_reader_next(vl3_proto_reader *r, vl3_proto_frame *ret, vl3_error *reterr);

/* Check one header (8 bytes) against limits; fills *ret_type, *ret_len. Returns 0 or VL3_E_PROTO. */
int vl3_proto_header_check(const uint8_t *hdr, size_t max_json, size_t max_tokens, int *ret_type,
                           size_t *ret_len, vl3_error *reterr);

/* Build a frame of type with payload (borrowed) into a newly allocated buffer (returned owned
 * in *ret, free() it). Returns 0, -EINVAL (bad type) or VL3_E_LIMIT (payload too large). */
int vl3_proto_frame_build(int type, const void *payload, size_t len, uint8_t **ret,
                          size_t *ret_len, vl3_error *reterr);

/* ---- typed layer ---- */

/* Parse a frame into msg (zeroed by the caller or fresh). On success msg owns a JSON tree
 * (release with vl3_proto_msg_free); on failure nothing is held. Returns 0 or VL3_E_PROTO with
 * the offending field named ("field \"tasks[1].question\" must be a string"). Unknown fields are
 * ignored (forward compatibility); missing required fields and wrong types are errors. */
int vl3_proto_msg_parse(const vl3_proto_frame *f, vl3_proto_msg *msg, vl3_error *reterr);
/* Release what msg holds; msg may be zeroed. */
void vl3_proto_msg_free(vl3_proto_msg *msg);

/* Encoders: build the complete frame (header + JSON) into an owned buffer (free()). Inputs are
 * borrowed and validated with the same rules as the decoder, so an encoded frame always parses.
 * Return 0, -ENOMEM, VL3_E_PROTO (invalid field) or VL3_E_LIMIT. */
int vl3_proto_encode_hello(const struct vl3_proto_hello *m, uint8_t **ret, size_t *ret_len,
                           vl3_error *reterr);
int vl3_proto_encode_job(const struct vl3_proto_job *m, uint8_t **ret, size_t *ret_len,
                         vl3_error *reterr);
int vl3_proto_encode_progress(const struct vl3_proto_progress *m, uint8_t **ret,
                              size_t *ret_len, vl3_error *reterr);
int vl3_proto_encode_result(const struct vl3_proto_result *m, uint8_t **ret, size_t *ret_len,
                            vl3_error *reterr);
int vl3_proto_encode_done(const struct vl3_proto_done *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr);
int vl3_proto_encode_error(const struct vl3_proto_error *m, uint8_t **ret, size_t *ret_len,
                           vl3_error *reterr);
int vl3_proto_encode_ping(const struct vl3_proto_ping *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr);
int vl3_proto_encode_pong(const struct vl3_proto_pong *m, uint8_t **ret, size_t *ret_len,
                          vl3_error *reterr);

#endif
