/* log.h: the one logger. Syslog levels; lines go to stderr with a "<N>" prefix that journald turns
 * into a priority. vl3_log() checks the level before evaluating its arguments. Library code
 * (common, engine) never logs above DEBUG. */
#ifndef VL3_LOG_H
#define VL3_LOG_H

enum vl3_log_level {
    VL3_LOG_ERR = 3,
    VL3_LOG_WARNING = 4,
    VL3_LOG_NOTICE = 5,
    VL3_LOG_INFO = 6,
    VL3_LOG_DEBUG = 7,
};

extern int vl3__log_max_level;

/* Set the most verbose level printed (default INFO). */
void vl3_log_set_level(int level);
/* Parse "err|warning|notice|info|debug" (or a digit). Returns level or -EINVAL. */
int vl3_log_level_parse(const char *s);
/* Whether to prefix lines with "<N>" (default on) and with a timestamp (default off). */
void vl3_log_set_format(int syslog_prefix, int timestamps);
/* Prefix every line with "ident: " (e.g. "vl3-worker[3]"); borrows ident for the process life. */
void vl3_log_set_ident(const char *ident);

void vl3__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define vl3_log(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) <= vl3__log_max_level)                                                         \
            vl3__log((level), __VA_ARGS__);                                                        \
    } while (0)

#define vl3_log_err(...) vl3_log(VL3_LOG_ERR, __VA_ARGS__)
#define vl3_log_warning(...) vl3_log(VL3_LOG_WARNING, __VA_ARGS__)
#define vl3_log_notice(...) vl3_log(VL3_LOG_NOTICE, __VA_ARGS__)
#define vl3_log_info(...) vl3_log(VL3_LOG_INFO, __VA_ARGS__)
#define vl3_log_debug(...) vl3_log(VL3_LOG_DEBUG, __VA_ARGS__)

#endif
