/* job.h: a job as consumed from Kafka (schema/job.schema.json, docs/jobs.md).
 *
 * job_parse() validates one message payload: JSON object, known task kinds, typed fields
 * (errors name the field), size limits, input policy. Unknown fields are ignored. A job without
 * an "id" gets one derived from where it was read (topic/partition/offset), so a redelivered
 * message maps to the same job and the idempotent result write dedups it. */
#ifndef VL3D_JOB_H
#define VL3D_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"
#include "vl3/proto.h"

#define JOB_MAX_BYTES_DEFAULT (64 * 1024)
#define JOB_PRIORITY_DEFAULT 5
#define JOB_MAX_BATCH 64 /* bytes of the optional "batch" field */

struct job_policy {
    size_t max_bytes;        /* larger payloads are refused (0 = JOB_MAX_BYTES_DEFAULT) */
    const char *input_roots; /* ':'-separated absolute prefixes the input must lie under; NULL or
                              * "" = any absolute path. Borrowed. */
    int64_t max_frames_cap;  /* sampling.max_frames above this is refused (0 = no cap) */
};

struct job {
    char id[VL3_PROTO_MAX_ID + 1];
    int id_derived;     /* 1 when id came from topic/partition/offset */
    const char *input;  /* borrowed from root */
    const char *batch;  /* enqueue batch id (borrowed from root), or NULL */
    int ntasks;
    struct vl3_proto_task tasks[VL3_PROTO_MAX_TASKS]; /* questions borrowed from root */
    struct vl3_proto_sampling sampling;
    int priority;           /* 0 (lowest) .. 9 */
    int64_t max_new_tokens; /* 0 = worker default */
    double temperature;
    int cache;              /* enum vl3_cache_mode ("cache": use, refresh, off) */
    /* where it came from */
    char *topic; /* owned */
    int32_t partition;
    int64_t offset;
    json_t *root; /* owned */
};

/* Parse payload (borrowed, need not be NUL-terminated) read at topic/partition/offset.
 * Returns 0 and an owned job in *ret (free with job_free), VL3_E_FORMAT (malformed JSON, schema
 * violation; the message names the field), VL3_E_LIMIT (too large) or VL3_E_POLICY (input
 * refused). These three are permanent: such a message belongs in the dead-letter topic. */
int job_parse(const void *payload, size_t len, const char *topic, int32_t partition,
              int64_t offset, const struct job_policy *policy, struct job **ret,
              vl3_error *reterr);

/* The id a message without "id" gets: "<topic>:<partition>:<offset>" (a hash of the topic
 * replaces it when the topic name is long). Writes at most size bytes to buf. */
void job_derive_id(const char *topic, int32_t partition, int64_t offset, char *buf, size_t size);

/* Fill a protocol job request borrowing from j (valid while j lives). */
void job_to_proto(const struct job *j, int attempt, struct vl3_proto_job *ret);

void job_free(struct job *j);

#endif
