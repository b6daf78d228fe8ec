/* json.h: small helpers over jansson for reading untrusted JSON with errors that name the field.
 *
 * Every getter returns 0 when the field has the asked type, -ENOENT when it is absent (callers
 * decide whether that is an error) and VL3_E_FORMAT with "field \"a.b\" must be <type>" when it
 * has another type. Values are borrowed from the json_t, which the caller owns. */
#ifndef VL3_JSON_H
#define VL3_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "vl3/err.h"

/* Parse a whole file (size capped at max_bytes; 0 = 256 MiB). Returns owned json_t via ret. */
int vl3_json_load_file(const char *path, size_t max_bytes, json_t **ret, vl3_error *reterr);
/* Parse the bytes of the file at path, already read (errors as vl3_json_load_file's:
 * "path":line:col, duplicate keys refused). */
int vl3_json_load_file_bytes(const char *path, const char *buf, size_t len, json_t **ret,
                             vl3_error *reterr);
/* Parse a buffer that may hold NULs or no terminator. */
int vl3_json_load_buf(const char *buf, size_t len, json_t **ret, vl3_error *reterr);

int vl3_json_get_string(const json_t *obj, const char *key, const char **ret, vl3_error *reterr);
int vl3_json_get_int(const json_t *obj, const char *key, int64_t *ret, vl3_error *reterr);
/* Accepts integers and reals. */
int vl3_json_get_number(const json_t *obj, const char *key, double *ret, vl3_error *reterr);
int vl3_json_get_bool(const json_t *obj, const char *key, int *ret, vl3_error *reterr);
int vl3_json_get_object(const json_t *obj, const char *key, json_t **ret, vl3_error *reterr);
int vl3_json_get_array(const json_t *obj, const char *key, json_t **ret, vl3_error *reterr);

#endif
