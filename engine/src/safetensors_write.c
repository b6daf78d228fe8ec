/* safetensors_write.c: the safetensors writer, for tiny models and tests.
 *
 * Writes the header as compact JSON in the caller's tensor order ("__metadata__" first, as the
 * Python library does), padded with spaces to a multiple of 8 so that the data area is 8-byte
 * aligned, then the tensor bytes back to back. The sharded variant splits the list into files
 * named like the Hugging Face ones and writes model.safetensors.index.json. Output is a pure
 * function of the input (deterministic bytes). */
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FERR(code, ...) vl3_error_set(reterr, code, __VA_ARGS__)

static int tensor_bytes(const struct vl3__st_wtensor *t, size_t *ret, vl3_error *reterr)
{
    if ((unsigned)t->dtype >= VL3__DTYPE_COUNT || t->ndim < 0 || t->ndim > VL3__ST_MAX_DIMS)
        return FERR(-EINVAL, "tensor \"%s\": bad dtype or rank", t->name);
    size_t n = vl3__dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0 || __builtin_mul_overflow(n, (size_t)t->shape[i], &n))
            return FERR(-EOVERFLOW, "tensor \"%s\": bad shape", t->name);
    *ret = n;
    return 0;
}

/* Build the header JSON text (owned, NUL-terminated) for tensors t[0..n). */
static int build_header(const struct vl3__st_wtensor *t, size_t n, char **ret, uint64_t *ret_total,
                        vl3_error *reterr)
{
    json_t *root = json_object(), *meta = json_object();
    int r = 0;
    uint64_t off = 0;
    if (!root || !meta) {
        json_decref(meta);
        r = FERR(-ENOMEM, "out of memory");
        goto out;
    }
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    for (size_t i = 0; i < n; i++) {
        size_t nb;
        r = tensor_bytes(&t[i], &nb, reterr);
        if (r < 0)
            goto out;
        if (json_object_get(root, t[i].name)) {
            r = FERR(VL3_E_FORMAT, "tensor \"%s\" is listed twice", t[i].name);
            goto out;
        }
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        if (!e || !shape || !offs) {
            json_decref(e);
            json_decref(shape);
            json_decref(offs);
            r = FERR(-ENOMEM, "out of memory");
            goto out;
        }
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        json_object_set_new(e, "dtype", json_string(vl3__dtype_st_name(t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        if (json_object_set_new(root, t[i].name, e) < 0) {
            r = FERR(-ENOMEM, "out of memory");
            goto out;
        }
        off += nb;
    }
    *ret = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*ret)
        r = FERR(-ENOMEM, "out of memory");
    *ret_total = off;
out:
    json_decref(root);
    return r;
}

int vl3__st_write(const char *path, const struct vl3__st_wtensor *t, size_t n, vl3_error *reterr)
{
    VL3_RETURN_IF(!path || (!t && n), -EINVAL);
    char *hdr = NULL;
    uint64_t total = 0;
    FILE *f = NULL;
    int r = build_header(t, n, &hdr, &total, reterr);
    if (r < 0)
        return r;
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    f = fopen(path, "wbe");
    if (!f) {
        r = FERR(-errno, "could not create \"%s\": %s", path, strerror(errno));
        goto out;
    }
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = hl; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++) {
        size_t nb;
        (void)tensor_bytes(&t[i], &nb, NULL);
        ok = !nb || fwrite(t[i].data, 1, nb, f) == nb;
    }
    if (!ok) {
        r = FERR(-EIO, "could not write \"%s\": %s", path, strerror(errno));
        goto out;
    }
out:
    if (f && fclose(f) != 0 && r == 0)
        r = FERR(-EIO, "could not write \"%s\": %s", path, strerror(errno));
    free(hdr);
    return r;
}

int vl3__st_write_sharded(const char *dir, const struct vl3__st_wtensor *t, size_t n,
                          int n_shards, vl3_error *reterr)
{
    VL3_RETURN_IF(!dir || (!t && n) || n_shards < 1 || n_shards > 99999, -EINVAL);
    char path[PATH_MAX], shard[64];
    if (n_shards == 1) {
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        return vl3__st_write(path, t, n, reterr);
    }
    if ((size_t)n_shards > n)
        return FERR(-EINVAL, "cannot split %zu tensors into %d shards", n, n_shards);
    int r = 0;
    json_t *index = json_object(), *wm = json_object(), *meta = json_object();
    if (!index || !wm || !meta) {
        json_decref(wm);
        json_decref(meta);
        r = FERR(-ENOMEM, "out of memory");
        goto out;
    }
    json_object_set_new(index, "metadata", meta);
    json_object_set_new(index, "weight_map", wm);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nb;
        r = tensor_bytes(&t[i], &nb, reterr);
        if (r < 0)
            goto out;
        total += nb;
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    /* greedy split by bytes: shard k ends once the running total passes (k+1)/n of the bytes,
     * while leaving at least one tensor for every remaining shard */
    size_t start = 0;
    uint64_t run = 0;
    for (int k = 0; k < n_shards; k++) {
        size_t end = start;
        uint64_t target = total / (uint64_t)n_shards * (uint64_t)(k + 1);
        if (k == n_shards - 1) {
            end = n;
        } else {
            do {
                size_t nb;
                (void)tensor_bytes(&t[end], &nb, NULL);
                run += nb;
                end++;
            } while (end < n - (size_t)(n_shards - 1 - k) && run < target);
        }
        snprintf(shard, sizeof(shard), "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, shard) >= sizeof(path)) {
            r = FERR(-ENAMETOOLONG, "directory name \"%s\" is too long", dir);
            goto out;
        }
        r = vl3__st_write(path, t + start, end - start, reterr);
        if (r < 0)
            goto out;
        for (size_t i = start; i < end; i++)
            json_object_set_new(wm, t[i].name, json_string(shard));
        start = end;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    if (json_dump_file(index, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        r = FERR(-EIO, "could not write \"%s\"", path);
out:
    json_decref(index);
    return r;
}
