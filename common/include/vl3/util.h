/* util.h: tiny shared helpers: monotonic time, checked allocation sizes, whole-file reads. */
#ifndef VL3_UTIL_H
#define VL3_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#define VL3_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VL3_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VL3_MAX(a, b) ((a) > (b) ? (a) : (b))
#define VL3_FREE(p)                                                                                \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

/* Monotonic clock in nanoseconds / seconds. */
uint64_t vl3_time_ns(void);
double vl3_time_s(void);

/* a*b into *ret, or -EOVERFLOW. */
int vl3_mul_size(size_t a, size_t b, size_t *ret);

/* Read a whole file (at most max_bytes) into a NUL-terminated owned buffer. */
int vl3_file_read(const char *path, size_t max_bytes, char **ret_buf, size_t *ret_len,
                  vl3_error *reterr);
/* Write len bytes to path atomically enough for tests and dumps (open/write/close). */
int vl3_file_write(const char *path, const void *buf, size_t len, vl3_error *reterr);

/* Number of online CPUs (>= 1). */
int vl3_cpu_count(void);

/* A growable NUL-terminated text buffer: zero-initialise, append with vl3_strbuf_printf, take s
 * (owned, free it). After an allocation failure oom is set, s keeps what it held and further
 * appends do nothing. */
typedef struct vl3_strbuf {
    char *s;
    size_t len, cap;
    int oom;
} vl3_strbuf;
void vl3_strbuf_printf(vl3_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
