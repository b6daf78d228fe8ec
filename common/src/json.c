/* json.c: jansson adapters (see json.h). */
#include "vl3/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/util.h"

/* The whole file is read in one go (vl3_file_read) and parsed from memory: jansson's
 * json_load_file reads it a character at a time through getc. */
int vl3_json_load_file(const char *path, size_t max_bytes, json_t **ret, vl3_error *reterr)
{
    char *buf = NULL;
    size_t len = 0;
    int r = vl3_file_read(path, max_bytes ? max_bytes : 256u << 20, &buf, &len, reterr);
    if (r < 0)
        return r;
    r = vl3_json_load_file_bytes(path, buf, len, ret, reterr);
    free(buf);
    return r;
}

int vl3_json_load_file_bytes(const char *path, const char *buf, size_t len, json_t **ret,
                             vl3_error *reterr)
{
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
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
