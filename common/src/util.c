/* util.c: see util.h. */
#include "vl3/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t vl3_time_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double vl3_time_s(void)
{
    return (double)vl3_time_ns() * 1e-9;
}

int vl3_mul_size(size_t a, size_t b, size_t *ret)
{
    if (a && b > SIZE_MAX / a)
        return -EOVERFLOW;
    *ret = a * b;
    return 0;
}

int vl3_file_read(const char *path, size_t max_bytes, char **ret_buf, size_t *ret_len,
                  vl3_error *reterr)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", path, strerror(errno));
    struct stat st;
    char *buf = NULL;
    int r = 0;
    if (fstat(fd, &st) < 0) {
        r = vl3_error_set(reterr, -errno, "could not stat \"%s\": %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = vl3_error_set(reterr, -EINVAL, "\"%s\" is not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > max_bytes) {
        r = vl3_error_set(reterr, VL3_E_LIMIT, "\"%s\" is larger than %zu bytes", path, max_bytes);
        goto out;
    }
    size_t len = (size_t)st.st_size, got = 0;
    buf = malloc(len + 1);
    if (!buf) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory reading \"%s\"", path);
        goto out;
    }
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = vl3_error_set(reterr, n < 0 ? -errno : -EIO, "could not read \"%s\"", path);
            goto out;
        }
        got += (size_t)n;
    }
    buf[len] = '\0';
    *ret_buf = buf;
    *ret_len = len;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return r;
}

int vl3_file_write(const char *path, const void *buf, size_t len, vl3_error *reterr)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return vl3_error_set(reterr, -errno, "could not create \"%s\": %s", path, strerror(errno));
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return vl3_error_set(reterr, -e, "could not write \"%s\": %s", path, strerror(e));
        }
        p += n;
        len -= (size_t)n;
    }
    if (close(fd) < 0)
        return vl3_error_set(reterr, -errno, "could not write \"%s\": %s", path, strerror(errno));
    return 0;
}

int vl3_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void vl3_strbuf_printf(vl3_strbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 512;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        if (!b->s)
            ns[0] = '\0';
        b->s = ns;
        b->cap = cap;
    }
}
