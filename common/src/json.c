/* json.c: jansson adapters (see json.h). */
#include "vl3/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The whole file is read in one go and parsed from memory: jansson's json_load_file reads it
 * a character at a time through getc. */
int vl3_json_load_file(const char *path, size_t max_bytes, json_t **ret, vl3_error *reterr)
{
    if (!max_bytes)
        max_bytes = 256u << 20;
    FILE *f = fopen(path, "rbe");
    if (!f)
        return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        int e = errno;
        fclose(f);
        return vl3_error_set(reterr, -e, "could not stat \"%s\": %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\" is not a regular file", path);
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        return vl3_error_set(reterr, VL3_E_LIMIT, "\"%s\" is %lld bytes, more than the %zu allowed",
                             path, (long long)st.st_size, max_bytes);
    }
    /* one byte more than the size: a file that grew meanwhile is seen, not cut short */
    size_t cap = (size_t)st.st_size + 1;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    size_t len = fread(buf, 1, cap, f);
    int rd_err = ferror(f);
    fclose(f);
    if (rd_err || len == cap) {
        free(buf);
        return vl3_error_set(reterr, rd_err ? -EIO : -EAGAIN, "could not read \"%s\": %s", path,
                             rd_err ? "read error" : "it grew while being read");
    }
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!j)
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\":%d:%d: invalid JSON: %s", path, je.line,
                             je.column, je.text);
    *ret = j;
    return 0;
}

int vl3_json_load_buf(const char *buf, size_t len, json_t **ret, vl3_error *reterr)
{
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j)
        return vl3_error_set(reterr, VL3_E_FORMAT, "invalid JSON at line %d column %d: %s",
                             je.line, je.column, je.text);
    *ret = j;
    return 0;
}

static int get(const json_t *obj, const char *key, json_t **ret)
{
    if (!json_is_object(obj))
        return -EINVAL;
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return -ENOENT;
    *ret = v;
    return 0;
}

#define TYPE_ERR(type) vl3_error_set(reterr, VL3_E_FORMAT, "field \"%s\" must be " type, key)

int vl3_json_get_string(const json_t *obj, const char *key, const char **ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_string(v))
        return TYPE_ERR("a string");
    *ret = json_string_value(v);
    return 0;
}

int vl3_json_get_int(const json_t *obj, const char *key, int64_t *ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_integer(v))
        return TYPE_ERR("an integer");
    *ret = (int64_t)json_integer_value(v);
    return 0;
}

int vl3_json_get_number(const json_t *obj, const char *key, double *ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_number(v))
        return TYPE_ERR("a number");
    *ret = json_number_value(v);
    return 0;
}

int vl3_json_get_bool(const json_t *obj, const char *key, int *ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_boolean(v))
        return TYPE_ERR("a boolean");
    *ret = json_is_true(v);
    return 0;
}

int vl3_json_get_object(const json_t *obj, const char *key, json_t **ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_object(v))
        return TYPE_ERR("an object");
    *ret = v;
    return 0;
}

int vl3_json_get_array(const json_t *obj, const char *key, json_t **ret, vl3_error *reterr)
{
    json_t *v;
    int r = get(obj, key, &v);
    if (r < 0)
        return r;
    if (!json_is_array(v))
        return TYPE_ERR("an array");
    *ret = v;
    return 0;
}
