/* kafka.h: vl3d's Kafka adapter (the only file that includes rdkafka.h is kafka.c).
 *
 * Consumer: a consumer group with enable.auto.commit=false and enable.auto.offset.store=false;
 * the daemon commits explicit offsets (the low-water mark of offsets.c) only after results are
 * durable. librdkafka runs its own threads; it signals "queue became non-empty" through
 * rd_kafka_queue_io_event_enable() into a pipe watched by uv_poll, and the poll callback drains
 * the queue with zero-timeout polls, so the loop never blocks inside librdkafka. Callbacks below
 * all run on the loop thread, from that drain.
 *
 * Producer: a second handle (idempotent) for the dead-letter topic, integrated the same way;
 * its delivery reports come back through kafka_dlq_cb.
 *
 * Properties: every "name=value" of kafka_options.properties is passed to both handles after
 * our defaults (so SASL/SSL and tuning come from configuration). */
#ifndef VL3D_KAFKA_H
#define VL3D_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vl3/err.h"

struct kafka;

struct kafka_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *payload; /* borrowed for the duration of the callback */
    size_t len;
    const void *key;     /* the message key (NULL when none), borrowed like payload */
    size_t key_len;
    void *headers;       /* the message's headers, opaque to callers: borrowed during the
                            callback; kafka_headers_copy keeps them longer */
};

/* An owned copy of a message's headers (NULL when it has none or on out of memory), for a dead
 * letter produced after the consume callback returned; release with kafka_headers_free unless
 * passed to kafka_dlq_produce, which takes it. */
void *kafka_headers_copy(const struct kafka_msg *m);
void kafka_headers_free(void *headers);

/* Dead letters carry at most this many payload bytes (the producer's message.max.bytes is 1 MB,
 * less room for the key and headers); a longer payload is cut and the record gets the headers
 * vl3-truncated=1 and vl3-original-size=<bytes>. */
#define KAFKA_DLQ_MAX_PAYLOAD (900 * 1000)

struct kafka_callbacks {
    /* A message was consumed. The daemon must eventually mark its offset done. */
    void (*on_message)(void *user, const struct kafka_msg *m);
    /* Partitions were assigned / are being revoked (called before librdkafka lets go). */
    void (*on_assign)(void *user, const char *topic, int32_t partition);
    void (*on_revoke)(void *user, const char *topic, int32_t partition);
    /* The close started by kafka_close() finished; the loop holds no handle of the adapter. */
    void (*on_closed)(void *user);
    void *user;
};

struct kafka_options {
    const char *brokers, *topic, *group, *dlq_topic; /* borrowed during kafka_new */
    const char *const *properties; /* NULL-terminated "name=value" list (borrowed), may be NULL */
    const char *client_id;
};

/* Create consumer and DLQ producer, subscribe, start watching their queues. Returns 0 and an
 * owned adapter, or VL3_E_KAFKA / VL3_E_CONFIG (a bad property: the message names it). */
int kafka_new(uv_loop_t *loop, const struct kafka_options *opts, const struct kafka_callbacks *cb,
              struct kafka **ret, vl3_error *reterr);

/* Pause / resume fetching from every assigned partition (backpressure, drain). Idempotent. */
void kafka_pause(struct kafka *k);
void kafka_resume(struct kafka *k);
int kafka_paused(const struct kafka *k);

/* Asynchronously commit offset (the next offset to consume) for topic/partition. Several calls
 * before the loop iterates are batched into one commit request. Returns 0 or VL3_E_KAFKA. */
int kafka_commit(struct kafka *k, const char *topic, int32_t partition, int64_t offset);
/* Send the batched commits now (also done by a 0-delay timer after kafka_commit). */
void kafka_commit_flush(struct kafka *k);

/* Produce the original message to the dead-letter topic with headers vl3-error (reason),
 * vl3-topic, vl3-partition, vl3-offset. cb(user, code) runs once on delivery (0) or failure.
 * Returns 0 or VL3_E_KAFKA (cb then not called). */
typedef void (*kafka_dlq_cb)(void *user, int code, const char *errtext);
int kafka_dlq_produce(struct kafka *k, const struct kafka_msg *orig, const char *reason,
                      kafka_dlq_cb cb, void *user, vl3_error *reterr);

/* Counters for metrics. */
struct kafka_stats {
    uint64_t consumed, commits, commit_failures, dlq_produced, dlq_failed, rebalances;
    int assigned;
};
void kafka_get_stats(const struct kafka *k, struct kafka_stats *ret);

/* Leave the group (revoking partitions through on_revoke), flush the DLQ producer, close the
 * uv handles and free k; on_closed runs at the end. NULL is a no-op. */
void kafka_close(struct kafka *k);

/* ---- a blocking producer for the CLI (vl3 enqueue) ---- */
struct kafka_producer;
int kafka_producer_new(const char *brokers, const char *const *properties,
                       struct kafka_producer **ret, vl3_error *reterr);
/* Queue one message (payload copied). Returns 0 or VL3_E_KAFKA. Serves delivery reports. */
int kafka_producer_send(struct kafka_producer *p, const char *topic, const void *key,
                        size_t keylen, const void *payload, size_t len, vl3_error *reterr);
/* Wait up to timeout_ms for every queued message to be acknowledged. Returns the number of
 * failed deliveries (>= 0; the first error text in reterr) or -ETIMEDOUT. */
int kafka_producer_flush(struct kafka_producer *p, int timeout_ms, vl3_error *reterr);
/* Probe the brokers (metadata request). Returns 0 or VL3_E_KAFKA with the reason. */
int kafka_producer_probe(struct kafka_producer *p, const char *topic, int timeout_ms,
                         vl3_error *reterr);
void kafka_producer_free(struct kafka_producer *p);

#endif
