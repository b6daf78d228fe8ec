/* conf.h: table-driven "key = value" configuration (STYLE B7).
 *
 * Each module describes its options in a static table (name, type, offset into its conf struct,
 * default, bounds, flags). vl3_conf_defaults() fills a struct from the table; vl3_conf_load()
 * parses a file over it, citing file:line and the option name in every error. Lines are
 * `key = value`, `#` starts a comment, values may be double-quoted. Sections are written
 * `[name]` and prefix keys as "name.key". Strings are heap copies owned by the struct:
 * vl3_conf_free_strings() releases them. */
#ifndef VL3_CONF_H
#define VL3_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

enum vl3_conf_type {
    VL3_CONF_BOOL,     /* int: yes/no/true/false/on/off/1/0 */
    VL3_CONF_INT,      /* int64_t within [min, max] */
    VL3_CONF_SIZE,     /* int64_t bytes, suffixes K M G T (powers of 1024) */
    VL3_CONF_DURATION, /* int64_t milliseconds, suffixes ms s m h (bare number = seconds) */
    VL3_CONF_DOUBLE,   /* double within [min, max] */
    VL3_CONF_ENUM,     /* int index into enum_names */
    VL3_CONF_STRING,   /* char * (owned) */
    VL3_CONF_PATH,     /* char * (owned), must be absolute */
    VL3_CONF_TYPE_COUNT
};

enum vl3_conf_flags {
    VL3_CONF_RELOADABLE = 1u << 0, /* applied on SIGHUP */
    VL3_CONF_RESTART = 1u << 1,    /* change logged "requires restart, ignoring" */
    VL3_CONF_SECRET = 1u << 2,     /* never printed */
};

typedef struct vl3_conf_option {
    const char *name;
    enum vl3_conf_type type;
    size_t offset;
    const char *def;            /* default, written as in a file; NULL = zero/NULL */
    double min, max;            /* bounds for INT/SIZE/DURATION/DOUBLE (both 0 = unbounded) */
    const char *const *enum_names; /* NULL-terminated, for ENUM */
    unsigned flags;
    const char *help;           /* one line, used by --help-config and the example file */
} vl3_conf_option;

/* Set every option of the table to its default in conf. Returns 0 or an error (bad default). */
int vl3_conf_defaults(const vl3_conf_option *table, void *conf, vl3_error *reterr);

/* Parse path over conf (already holding defaults). Unknown keys are errors (a typo must not be
 * ignored silently). Returns 0, -errno (file unreadable) or VL3_E_CONFIG with "file:line: ...". */
int vl3_conf_load(const vl3_conf_option *table, void *conf, const char *path, vl3_error *reterr);

/* Set one option from text (used by the file parser and by --set key=value). */
int vl3_conf_set(const vl3_conf_option *table, void *conf, const char *key, const char *value,
                 vl3_error *reterr);

/* Free the strings of conf owned through table. */
void vl3_conf_free_strings(const vl3_conf_option *table, void *conf);

/* Lookup by name; NULL if absent. */
const vl3_conf_option *vl3_conf_find(const vl3_conf_option *table, const char *name);

/* Whether option o has the same value in a and b. */
int vl3_conf_equal(const vl3_conf_option *o, const void *a, const void *b);

/* Value parsers shared with command-line handling. Return 0 or -EINVAL / -ERANGE. */
int vl3_parse_int64(const char *s, int64_t *ret);
int vl3_parse_double(const char *s, double *ret);
int vl3_parse_size(const char *s, int64_t *ret);
int vl3_parse_duration_ms(const char *s, int64_t *ret);
int vl3_parse_bool(const char *s, int *ret);

#endif
