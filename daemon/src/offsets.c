/* offsets.c: the in-flight offset tracker (see offsets.h).
 *
 * Each partition keeps its taken offsets in a ring buffer in increasing order; done entries
 * are popped from the head, so the head is always the low-water mark. Marking done is a binary
 * search over the ring. The number of partitions is small (tens), so they live in a flat array. */
#include "offsets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void offsets_init(struct offsets *o)
{
    memset(o, 0, sizeof(*o));
}

static void part_deinit(struct offsets_part *p)
{
    free(p->topic);
    free(p->ring);
    memset(p, 0, sizeof(*p));
}

void offsets_deinit(struct offsets *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nparts; i++)
        part_deinit(&o->parts[i]);
    free(o->parts);
    memset(o, 0, sizeof(*o));
}

struct offsets_part *offsets_find(const struct offsets *o, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < o->nparts; i++)
        if (o->parts[i].partition == partition && strcmp(o->parts[i].topic, topic) == 0)
            return &o->parts[i];
    return NULL;
}

int offsets_assign(struct offsets *o, const char *topic, int32_t partition)
{
    if (offsets_find(o, topic, partition))
        return 0;
    if (o->nparts == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 8;
        struct offsets_part *np = realloc(o->parts, cap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        o->parts = np;
        o->cap = cap;
    }
    struct offsets_part *p = &o->parts[o->nparts];
    memset(p, 0, sizeof(*p));
    if (!(p->topic = strdup(topic)))
        return -ENOMEM;
    p->partition = partition;
    p->next = -1;
    p->committed = -1;
    o->nparts++;
    return 0;
}

void offsets_revoke(struct offsets *o, const char *topic, int32_t partition)
{
    struct offsets_part *p = offsets_find(o, topic, partition);
    if (!p)
        return;
    part_deinit(p);
    size_t i = (size_t)(p - o->parts);
    memmove(&o->parts[i], &o->parts[i + 1], (o->nparts - i - 1) * sizeof(*p));
    o->nparts--;
}

static struct offsets_entry *at(struct offsets_part *p, size_t i)
{
    return &p->ring[(p->head + i) % p->cap];
}

int offsets_add(struct offsets *o, const char *topic, int32_t partition, int64_t offset)
{
    struct offsets_part *p = offsets_find(o, topic, partition);
    if (!p)
        return -ENOENT;
    if (offset < 0 || (p->next >= 0 && offset < p->next))
        return -EINVAL;
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct offsets_entry *nr = malloc(cap * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        for (size_t i = 0; i < p->count; i++)
            nr[i] = *at(p, i);
        free(p->ring);
        p->ring = nr;
        p->head = 0;
        p->cap = cap;
    }
    *at(p, p->count) = (struct offsets_entry){offset, 0};
    p->count++;
    p->in_flight++;
    p->next = offset + 1;
    return 0;
}

int offsets_done(struct offsets *o, const char *topic, int32_t partition, int64_t offset)
{
    struct offsets_part *p = offsets_find(o, topic, partition);
    if (!p)
        return -ENOENT;
    size_t lo = 0, hi = p->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(p, mid)->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->count || at(p, lo)->offset != offset)
        return -ENOENT;
    if (at(p, lo)->done)
        return -EALREADY;
    at(p, lo)->done = 1;
    p->in_flight--;
    while (p->count > 0 && at(p, 0)->done) {
        p->head = (p->head + 1) % p->cap;
        p->count--;
    }
    return 0;
}

int64_t offsets_commit_point(const struct offsets *o, const char *topic, int32_t partition)
{
    struct offsets_part *p = offsets_find(o, topic, partition);
    if (!p || p->next < 0)
        return -1;
    int64_t point = p->count > 0 ? p->ring[p->head].offset : p->next;
    return point == p->committed ? -1 : point;
}

void offsets_committed(struct offsets *o, const char *topic, int32_t partition, int64_t off)
{
    struct offsets_part *p = offsets_find(o, topic, partition);
    if (p && off > p->committed)
        p->committed = off;
}

size_t offsets_in_flight(const struct offsets *o, const char *topic, int32_t partition)
{
    if (topic) {
        struct offsets_part *p = offsets_find(o, topic, partition);
        return p ? p->in_flight : 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < o->nparts; i++)
        n += o->parts[i].in_flight;
    return n;
}
