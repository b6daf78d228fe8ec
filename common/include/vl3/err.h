/* err.h: the project's error codes and the one code->text function.
 *
 * 0 is success. Failures are negative: -errno for system conditions, or a VL3_E_* value (below
 * -10000) for domain conditions. Context travels in a caller-owned struct vl3_error filled by
 * vl3_error_set(), which returns the code so `return vl3_error_set(err, code, ...)` records and
 * propagates in one statement. A NULL reterr is allowed everywhere. */
#ifndef VL3_ERR_H
#define VL3_ERR_H

#include <stdarg.h>
#include <stddef.h>

enum vl3_errcode {
    VL3_E_BASE = -10000,
    VL3_E_FORMAT = -10001,      /* bad model, fixture, config or payload bytes */
    VL3_E_UNSUPPORTED = -10002, /* valid request this build/backend cannot do */
    VL3_E_CUDA = -10003,        /* recoverable CUDA failure */
    VL3_E_CUDA_FATAL = -10004,  /* sticky CUDA failure: the context is poisoned */
    VL3_E_KAFKA = -10005,
    VL3_E_PG = -10006,
    VL3_E_DECODE = -10007, /* media could not be decoded */
    VL3_E_ZSTD = -10008,
    VL3_E_PROTO = -10009,  /* daemon<->worker protocol violation */
    VL3_E_POLICY = -10010, /* input refused by policy (path, size, protocol) */
    VL3_E_LIMIT = -10011,  /* a configured limit was exceeded */
    VL3_E_CONFIG = -10012, /* invalid configuration */
    VL3_E_SHAPE = -10013,  /* tensor shape does not match the configuration */
    VL3_E_LAST = -10014,
};

#define VL3_ERROR_MSG_MAX 512

typedef struct vl3_error {
    int code;
    char msg[VL3_ERROR_MSG_MAX];
} vl3_error;

/* Text for any code of either range. Never NULL; unknown codes give "unknown error". */
const char *vl3_strerror(int code);

/* Record code and a printf-style message in reterr (which may be NULL). Returns code. */
int vl3_error_set(vl3_error *reterr, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vl3_error_setv(vl3_error *reterr, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Prefix an existing message with more context ("loading \"x\": <old>"). Returns reterr->code. */
int vl3_error_prefix(vl3_error *reterr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message if one was recorded, else vl3_strerror(code). */
const char *vl3_error_text(const vl3_error *err, int code);

#define VL3_RETURN_IF(cond, code)                                                                  \
    do {                                                                                           \
        if (cond)                                                                                  \
            return (code);                                                                         \
    } while (0)

void vl3__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
/* Programmer errors only; always on. */
#define VL3_ASSERT(x)                                                                              \
    do {                                                                                           \
        if (!(x))                                                                                  \
            vl3__assert_fail(#x, __FILE__, __LINE__);                                              \
    } while (0)

#endif
