/* log.c: stderr logger with syslog "<N>" prefixes (journald form). One write(2) per line so lines
 * from several threads or processes sharing stderr do not interleave. Control characters in the
 * message (a newline, an escape) are written as \xNN: text that came from a job (a path, an id,
 * a parser's excerpt of a message) can never end the record and forge another one ("\n<0>..."
 * would be an emergency record to journald). */
#include "vl3/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int vl3__log_max_level = VL3_LOG_INFO;
static int log_syslog_prefix = 1;
static int log_timestamps = 0;
static const char *log_ident = NULL;

void vl3_log_set_level(int level)
{
    vl3__log_max_level = level;
}

void vl3_log_set_format(int syslog_prefix, int timestamps)
{
    log_syslog_prefix = syslog_prefix;
    log_timestamps = timestamps;
}

void vl3_log_set_ident(const char *ident)
{
    log_ident = ident;
}

int vl3_log_level_parse(const char *s)
{
    static const char *const names[] = {"emerg", "alert", "crit",  "err",
                                        "warning", "notice", "info", "debug"};
    if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
        return s[0] - '0';
    for (int i = 0; i < 8; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "error") == 0)
        return VL3_LOG_ERR;
    if (strcasecmp(s, "warn") == 0)
        return VL3_LOG_WARNING;
    return -EINVAL;
}

void vl3__log(int level, const char *fmt, ...)
{
    char line[2048];
    size_t n = 0;
    int saved = errno;
    if (log_syslog_prefix)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "<%d>", level);
    if (log_timestamps) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line + n, sizeof(line) - n, "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    if (log_ident)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", log_ident);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (w < 0)
        w = 0;
    if ((size_t)w >= sizeof(msg))
        w = (int)sizeof(msg) - 1;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < w && n < sizeof(line) - 6; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c < 0x20 || c == 0x7f) {
            line[n++] = '\\';
            line[n++] = 'x';
            line[n++] = hex[c >> 4];
            line[n++] = hex[c & 15];
        } else {
            line[n++] = (char)c;
        }
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
    errno = saved;
}
