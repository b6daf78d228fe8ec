/* offsets.h: per-partition tracking of in-flight Kafka offsets.
 *
 * Jobs of one partition finish out of order, but Kafka stores one committed offset per
 * partition, meaning "everything below was processed". The tracker records each offset when the
 * message is taken (offsets of one partition arrive increasing) and marks it done when its
 * results are durable (or it went to the dead-letter topic, or failed as poison). The commit
 * point is the contiguous low-water mark: the first offset not yet done, or one past the last
 * offset taken when all are done. Loop-thread only; no locking. */
#ifndef VL3D_OFFSETS_H
#define VL3D_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

struct offsets_entry {
    int64_t offset;
    int done;
};

struct offsets_part {
    char *topic; /* owned */
    int32_t partition;
    struct offsets_entry *ring; /* sorted by offset, a ring buffer of cap entries */
    size_t head, count, cap;
    int64_t next;      /* one past the highest offset added (-1: nothing added yet) */
    int64_t committed; /* last offset committed (-1: none) */
    size_t in_flight;  /* entries not done */
};

struct offsets {
    struct offsets_part *parts;
    size_t nparts, cap;
};

void offsets_init(struct offsets *o);
void offsets_deinit(struct offsets *o);

/* Start tracking topic/partition (after an assignment). Idempotent. 0 or -ENOMEM. */
int offsets_assign(struct offsets *o, const char *topic, int32_t partition);
/* Forget topic/partition (after a revocation): its in-flight entries are dropped. */
void offsets_revoke(struct offsets *o, const char *topic, int32_t partition);

/* Record that offset was taken. Returns 0, -ENOENT (partition not assigned), -EINVAL (offset not
 * above every offset already added: a redelivery the caller must skip) or -ENOMEM. */
int offsets_add(struct offsets *o, const char *topic, int32_t partition, int64_t offset);
/* Mark offset done. Returns 0, -ENOENT (unknown partition or offset), -EALREADY. */
int offsets_done(struct offsets *o, const char *topic, int32_t partition, int64_t offset);

/* The offset to commit (next to process), or -1 when nothing was added or it equals the
 * last committed one. */
int64_t offsets_commit_point(const struct offsets *o, const char *topic, int32_t partition);
/* Record that off was committed. */
void offsets_committed(struct offsets *o, const char *topic, int32_t partition, int64_t off);

/* In-flight (not done) count of one partition, or of all when topic is NULL. */
size_t offsets_in_flight(const struct offsets *o, const char *topic, int32_t partition);

/* Lookup (NULL if not assigned). */
struct offsets_part *offsets_find(const struct offsets *o, const char *topic, int32_t partition);

#endif
