/* conf.c: the table-driven "key = value" parser (see conf.h). Errors cite file:line and the
 * option; nothing here logs. Values are parsed with full checking (no atoi). */
#include "vl3/conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int vl3_parse_int64(const char *s, int64_t *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (end == s || *end)
        return -EINVAL;
    *ret = (int64_t)v;
    return 0;
}

int vl3_parse_double(const char *s, double *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    if (end == s || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* number followed by an optional unit from units[] (scale[] gives its multiplier) */
static int parse_scaled(const char *s, const char *const *units, const double *scale,
                        double default_scale, int64_t *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(v) || v < 0)
        return -EINVAL;
    while (*end == ' ')
        end++;
    double mul = default_scale;
    if (*end) {
        int found = 0;
        for (int i = 0; units[i]; i++)
            if (strcasecmp(end, units[i]) == 0) {
                mul = scale[i];
                found = 1;
                break;
            }
        if (!found)
            return -EINVAL;
    }
    double r = v * mul;
    if (r > (double)INT64_MAX)
        return -ERANGE;
    *ret = (int64_t)llround(r);
    return 0;
}

int vl3_parse_size(const char *s, int64_t *ret)
{
    static const char *const units[] = {"b", "k", "kb", "kib", "m", "mb", "mib",
                                        "g", "gb", "gib", "t", "tb", "tib", NULL};
    static const double scale[] = {1, 1024.0, 1024.0, 1024.0, 1048576.0, 1048576.0, 1048576.0,
                                   1073741824.0, 1073741824.0, 1073741824.0,
                                   1099511627776.0, 1099511627776.0, 1099511627776.0};
    return parse_scaled(s, units, scale, 1.0, ret);
}

int vl3_parse_duration_ms(const char *s, int64_t *ret)
{
    static const char *const units[] = {"ms", "s", "sec", "m", "min", "h", NULL};
    static const double scale[] = {1, 1000, 1000, 60000, 60000, 3600000};
    return parse_scaled(s, units, scale, 1000.0, ret);
}

int vl3_parse_bool(const char *s, int *ret)
{
    static const char *const yes[] = {"1", "yes", "true", "on", NULL};
    static const char *const no[] = {"0", "no", "false", "off", NULL};
    for (int i = 0; yes[i]; i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *ret = 1, 0;
    for (int i = 0; no[i]; i++)
        if (strcasecmp(s, no[i]) == 0)
            return *ret = 0, 0;
    return -EINVAL;
}

const vl3_conf_option *vl3_conf_find(const vl3_conf_option *table, const char *name)
{
    for (const vl3_conf_option *o = table; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

static int check_bounds(const vl3_conf_option *o, double v, vl3_error *reterr)
{
    if (o->min == 0 && o->max == 0)
        return 0;
    if (v < o->min || v > o->max)
        return vl3_error_set(reterr, VL3_E_CONFIG, "value of \"%s\" out of range [%g, %g]",
                             o->name, o->min, o->max);
    return 0;
}

static int set_option(const vl3_conf_option *o, void *conf, const char *value, vl3_error *reterr)
{
    char *field = (char *)conf + o->offset;
    int r = 0;
    switch (o->type) {
    case VL3_CONF_BOOL: {
        int b;
        if (vl3_parse_bool(value, &b) < 0)
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid boolean for \"%s\": \"%s\"",
                                 o->name, value);
        *(int *)field = b;
        return 0;
    }
    case VL3_CONF_INT:
    case VL3_CONF_SIZE:
    case VL3_CONF_DURATION: {
        int64_t v;
        r = o->type == VL3_CONF_INT    ? vl3_parse_int64(value, &v)
            : o->type == VL3_CONF_SIZE ? vl3_parse_size(value, &v)
                                       : vl3_parse_duration_ms(value, &v);
        if (r < 0)
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid %s for \"%s\": \"%s\"",
                                 o->type == VL3_CONF_INT    ? "integer"
                                 : o->type == VL3_CONF_SIZE ? "size"
                                                            : "duration",
                                 o->name, value);
        if ((r = check_bounds(o, (double)v, reterr)) < 0)
            return r;
        *(int64_t *)field = v;
        return 0;
    }
    case VL3_CONF_DOUBLE: {
        double v;
        if (vl3_parse_double(value, &v) < 0)
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid number for \"%s\": \"%s\"",
                                 o->name, value);
        if ((r = check_bounds(o, v, reterr)) < 0)
            return r;
        *(double *)field = v;
        return 0;
    }
    case VL3_CONF_ENUM:
        for (int i = 0; o->enum_names[i]; i++)
            if (strcmp(o->enum_names[i], value) == 0) {
                *(int *)field = i;
                return 0;
            }
        return vl3_error_set(reterr, VL3_E_CONFIG, "invalid value for \"%s\": \"%s\"", o->name,
                             value);
    case VL3_CONF_PATH:
        if (value[0] && value[0] != '/')
            return vl3_error_set(reterr, VL3_E_CONFIG, "\"%s\" must be an absolute path: \"%s\"",
                                 o->name, value);
        /* fall through */
    case VL3_CONF_STRING: {
        char *copy = strdup(value);
        if (!copy)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    default:
        VL3_ASSERT(!"bad option type");
    }
    return 0;
}

int vl3_conf_set(const vl3_conf_option *table, void *conf, const char *key, const char *value,
                 vl3_error *reterr)
{
    const vl3_conf_option *o = vl3_conf_find(table, key);
    if (!o)
        return vl3_error_set(reterr, VL3_E_CONFIG, "unknown option \"%s\"", key);
    return set_option(o, conf, value, reterr);
}

int vl3_conf_defaults(const vl3_conf_option *table, void *conf, vl3_error *reterr)
{
    for (const vl3_conf_option *o = table; o->name; o++) {
        char *field = (char *)conf + o->offset;
        if (!o->def) {
            switch (o->type) {
            case VL3_CONF_BOOL:
            case VL3_CONF_ENUM: *(int *)field = 0; break;
            case VL3_CONF_DOUBLE: *(double *)field = 0; break;
            case VL3_CONF_STRING:
            case VL3_CONF_PATH: *(char **)field = NULL; break;
            default: *(int64_t *)field = 0; break;
            }
            continue;
        }
        if (o->type == VL3_CONF_STRING || o->type == VL3_CONF_PATH)
            *(char **)field = NULL;
        int r = set_option(o, conf, o->def, reterr);
        if (r < 0)
            return vl3_error_prefix(reterr, "default");
    }
    return 0;
}

void vl3_conf_free_strings(const vl3_conf_option *table, void *conf)
{
    for (const vl3_conf_option *o = table; o->name; o++)
        if (o->type == VL3_CONF_STRING || o->type == VL3_CONF_PATH) {
            char **p = (char **)((char *)conf + o->offset);
            free(*p);
            *p = NULL;
        }
}

int vl3_conf_equal(const vl3_conf_option *o, const void *a, const void *b)
{
    const char *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;
    switch (o->type) {
    case VL3_CONF_BOOL:
    case VL3_CONF_ENUM: return *(const int *)fa == *(const int *)fb;
    case VL3_CONF_DOUBLE: return *(const double *)fa == *(const double *)fb;
    case VL3_CONF_STRING:
    case VL3_CONF_PATH: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return (!sa && !sb) || (sa && sb && strcmp(sa, sb) == 0);
    }
    default: return *(const int64_t *)fa == *(const int64_t *)fb;
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int vl3_conf_load(const vl3_conf_option *table, void *conf, const char *path, vl3_error *reterr)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return vl3_error_set(reterr, -errno, "could not open configuration file \"%s\": %s", path,
                             strerror(errno));
    char line[4096], section[128] = "", key[256];
    int lineno = 0, r = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            r = vl3_error_set(reterr, VL3_E_CONFIG, "%s:%d: line too long", path, lineno);
            goto out;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] || e - s - 1 >= (long)sizeof(section) || e == s + 1) {
                r = vl3_error_set(reterr, VL3_E_CONFIG, "%s:%d: malformed section header", path,
                                  lineno);
                goto out;
            }
            *e = '\0';
            snprintf(section, sizeof(section), "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            r = vl3_error_set(reterr, VL3_E_CONFIG, "%s:%d: expected \"key = value\"", path,
                              lineno);
            goto out;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = '\0';
            v++;
        } else {
            char *hash = strstr(v, " #"); /* trailing comment on an unquoted value */
            if (hash) {
                *hash = '\0';
                v = trim(v);
            }
        }
        if (section[0])
            snprintf(key, sizeof(key), "%s.%s", section, k);
        else
            snprintf(key, sizeof(key), "%s", k);
        r = vl3_conf_set(table, conf, key, v, reterr);
        if (r < 0) {
            vl3_error_prefix(reterr, "%s:%d", path, lineno);
            goto out;
        }
    }
    if (ferror(f))
        r = vl3_error_set(reterr, -EIO, "could not read configuration file \"%s\"", path);
out:
    fclose(f);
    return r;
}
