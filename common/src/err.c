/* err.c: vl3_strerror and the vl3_error helpers (see err.h). */
#include "vl3/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const domain_text[] = {
    [-(VL3_E_FORMAT - VL3_E_BASE)] = "invalid file format",
    [-(VL3_E_UNSUPPORTED - VL3_E_BASE)] = "operation not supported",
    [-(VL3_E_CUDA - VL3_E_BASE)] = "CUDA error",
    [-(VL3_E_CUDA_FATAL - VL3_E_BASE)] = "fatal CUDA error",
    [-(VL3_E_KAFKA - VL3_E_BASE)] = "Kafka error",
    [-(VL3_E_PG - VL3_E_BASE)] = "PostgreSQL error",
    [-(VL3_E_DECODE - VL3_E_BASE)] = "media decode error",
    [-(VL3_E_ZSTD - VL3_E_BASE)] = "zstd error",
    [-(VL3_E_PROTO - VL3_E_BASE)] = "protocol error",
    [-(VL3_E_POLICY - VL3_E_BASE)] = "refused by policy",
    [-(VL3_E_LIMIT - VL3_E_BASE)] = "limit exceeded",
    [-(VL3_E_CONFIG - VL3_E_BASE)] = "invalid configuration",
    [-(VL3_E_SHAPE - VL3_E_BASE)] = "tensor shape mismatch",
};

const char *vl3_strerror(int code)
{
    if (code == 0)
        return "success";
    if (code < VL3_E_BASE && code > VL3_E_LAST) {
        const char *s = domain_text[-(code - VL3_E_BASE)];
        return s ? s : "unknown error";
    }
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc strerror is thread-safe for known values */
    return "unknown error";
}

int vl3_error_setv(vl3_error *reterr, int code, const char *fmt, va_list ap)
{
    if (!reterr)
        return code;
    reterr->code = code;
    if (fmt)
        (void)vsnprintf(reterr->msg, sizeof(reterr->msg), fmt, ap);
    else
        (void)snprintf(reterr->msg, sizeof(reterr->msg), "%s", vl3_strerror(code));
    return code;
}

int vl3_error_set(vl3_error *reterr, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vl3_error_setv(reterr, code, fmt, ap);
    va_end(ap);
    return code;
}

int vl3_error_prefix(vl3_error *reterr, const char *fmt, ...)
{
    if (!reterr)
        return 0;
    char prefix[VL3_ERROR_MSG_MAX], old[VL3_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, reterr->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    (void)snprintf(reterr->msg, sizeof(reterr->msg), "%s: %s", prefix, old);
    return reterr->code;
}

const char *vl3_error_text(const vl3_error *err, int code)
{
    if (err && err->code == code && err->msg[0])
        return err->msg;
    return vl3_strerror(code);
}

void vl3__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "<2>assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}
