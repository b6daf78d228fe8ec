/* token_cache.h: the token cache (docs/token-cache.md): the visual tokens of a window
 * (vl3/visual_tokens.h), serialized and compressed, in PostgreSQL (schema/0004_token_cache.sql),
 * looked up before decoding a window and stored after encoding it.
 *
 * The cache is an optimisation: every failure (server down or slow, missing tables, a full
 * budget, a damaged entry) is logged once and reads as a miss; nothing here fails a request.
 * A damaged entry (checksum) is deleted and counted, never used.
 *
 * Keys: a wrong hit is worse than a miss. tcache_key() hashes the description of everything that
 * shapes the rows: media content (XXH3-128 of the file's bytes and its size), model identity
 * (vl3_model_vision_identity), the media kind, sampling (mode, fps, max_frames, window length
 * and index), preprocessing (rule, patch, merges, token and pixel budgets, mean/std/rescale),
 * DiffFP (on/off, threshold, minimum, arithmetic), the encoder's input rounding, the decoder,
 * the backend and dtype of the rows, and the format version. The question and the task are not
 * part of it: they only change the text after the media. */
#ifndef VL3_TOKEN_CACHE_H
#define VL3_TOKEN_CACHE_H

#include <stdint.h>

#include "sample.h"
#include "vl3/engine.h"
#include "vl3/visual_tokens.h"

/* ---- keys ------------------------------------------------------------------------------------ */

/* Content identity of an open file: "<hex XXH3-128>:<size>" (at most 64 bytes with NUL). Reads
 * the whole file from offset 0 with pread (the descriptor's offset is not moved). Returns 0 or
 * -errno. */
#define TCACHE_FINGERPRINT_LEN 64
int tcache_fingerprint_fd(int fd, char ret[TCACHE_FINGERPRINT_LEN], vl3_error *reterr);

enum tcache_media {
    TCACHE_MEDIA_IMAGE,
    TCACHE_MEDIA_VIDEO,
    TCACHE_MEDIA_FRAMES, /* a frame sequence (vl3 run --frames): content covers every file */
    TCACHE_MEDIA_COUNT
};

struct tcache_key_params {
    const char *model_identity;      /* vl3_model_vision_identity, borrowed */
    const char *content;             /* tcache_fingerprint_fd, borrowed */
    enum tcache_media media;
    const struct sample_params *sp;  /* video: sampling (borrowed); NULL for an image */
    int window;                      /* video: window index (0 without windows) */
    const vl3_mm_params *mm;         /* preprocessing, DiffFP, prompt flavour (borrowed) */
    int bf16_input;                  /* the encoder rounds pixel values to bf16 */
    const char *decoder;             /* "ffmpeg-sw" */
    const char *backend;             /* backend and row dtype, e.g. "cpu-f32" */
};

/* The key (hex XXH3-128, 33 bytes with NUL) and, when ret_descr is not NULL, the description it
 * hashes (owned; free()). Returns 0, -EINVAL, -ENOMEM. */
int tcache_key(const struct tcache_key_params *p, char ret_key[33], char **ret_descr);

/* ---- the store --------------------------------------------------------------------------------- */

typedef struct tcache tcache;

struct tcache_stats {
    int64_t hits, misses;
    int64_t bytes_read, bytes_written;  /* stored (compressed) bytes */
    int64_t raw_read, raw_written;      /* decoded bytes */
    int64_t stores;                     /* entries written by this process */
    int64_t evictions;                  /* entries this process evicted */
    int64_t corrupt;                    /* damaged entries found and deleted */
    int64_t errors;                     /* server or SQL failures (each read as a miss) */
};

/* Open the cache on conninfo (copied) with a size budget in stored bytes (0 = no limit). The
 * connection is made lazily and remade after failures (at most every retry_ms). Never fails for
 * the server's sake; returns 0, -EINVAL or -ENOMEM. Thread-safe: calls are serialized. */
int tcache_open(const char *conninfo, int64_t budget_bytes, tcache **ret, vl3_error *reterr);
void tcache_close(tcache *tc);

/* Look key up. 1: a verified entry was decoded into *ret (release with
 * vl3_visual_tokens_deinit); 0: a miss (absent, damaged, or the server failed; logged). */
int tcache_lookup(tcache *tc, const char *key, vl3_visual_tokens *ret);

/* Whether an entry is stored under key (1) or not, or the server failed (0; logged). Reads no
 * chunk and checks nothing: tcache_lookup may still miss (damaged, evicted meanwhile). */
int tcache_exists(tcache *tc, const char *key);

/* Serialize vt and store it under key (descr: the key's description, may be NULL), then evict
 * least recently used entries while the total exceeds the budget. 1: stored; 0: not stored (an
 * entry exists already, it alone exceeds the budget, or the server failed; logged). */
int tcache_store(tcache *tc, const char *key, const char *descr, const vl3_visual_tokens *vt);

/* Small opaque values (the worker's window lists): stored bytes as they are, the caller checks
 * them. get: 1 found (*ret owned), 0 miss; put: 1 stored, 0 not. A caller that finds a value
 * damaged deletes it with tcache_drop_damaged (logged and counted). */
int tcache_get_blob(tcache *tc, const char *key, uint8_t **ret, size_t *ret_len);
int tcache_put_blob(tcache *tc, const char *key, const char *descr, const uint8_t *blob,
                    size_t len);
void tcache_drop_damaged(tcache *tc, const char *key, const char *why);

/* Delete one entry (refresh). 0, or 0 after logging a failure. */
int tcache_forget(tcache *tc, const char *key);

void tcache_get_stats(tcache *tc, struct tcache_stats *ret);

/* Connect now if not connected: 1 connected, 0 not (logged). */
int tcache_ping(tcache *tc);

#endif
