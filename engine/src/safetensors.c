/* safetensors.c: the safetensors reader (see safetensors.h for the format and the checks).
 *
 * Design: each file is mmapped read-only once; its JSON header is parsed with jansson
 * (duplicate keys rejected) and every tensor entry is validated against the file before it is
 * appended to the set. After all files are read the tensors are sorted by name so that lookups
 * are binary searches and duplicate names across shards are found. Nothing here trusts a
 * number from the file before checking it; all size arithmetic is overflow-checked. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vl3/json.h"

static const struct {
    const char *st_name, *name;
    size_t size;
} dtypes[VL3__DTYPE_COUNT] = {
    [VL3__DTYPE_F32] = {"F32", "f32", 4},         [VL3__DTYPE_F16] = {"F16", "f16", 2},
    [VL3__DTYPE_BF16] = {"BF16", "bf16", 2},      [VL3__DTYPE_I32] = {"I32", "i32", 4},
    [VL3__DTYPE_I64] = {"I64", "i64", 8},         [VL3__DTYPE_F64] = {"F64", "f64", 8},
    [VL3__DTYPE_I8] = {"I8", "i8", 1},            [VL3__DTYPE_U8] = {"U8", "u8", 1},
    [VL3__DTYPE_BOOL] = {"BOOL", "bool", 1},      [VL3__DTYPE_I16] = {"I16", "i16", 2},
    [VL3__DTYPE_U16] = {"U16", "u16", 2},         [VL3__DTYPE_U32] = {"U32", "u32", 4},
    [VL3__DTYPE_U64] = {"U64", "u64", 8},         [VL3__DTYPE_F8_E4M3] = {"F8_E4M3", "f8e4m3", 1},
    [VL3__DTYPE_F8_E5M2] = {"F8_E5M2", "f8e5m2", 1},
};

size_t vl3__dtype_size(enum vl3__dtype t)
{
    return (unsigned)t < VL3__DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *vl3__dtype_st_name(enum vl3__dtype t)
{
    return (unsigned)t < VL3__DTYPE_COUNT ? dtypes[t].st_name : "?";
}

const char *vl3__dtype_name(enum vl3__dtype t)
{
    return (unsigned)t < VL3__DTYPE_COUNT ? dtypes[t].name : "?";
}

int vl3__dtype_parse(const char *name)
{
    for (int i = 0; i < VL3__DTYPE_COUNT; i++)
        if (strcmp(name, dtypes[i].st_name) == 0)
            return i;
    return -1;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

void vl3__st_free(vl3__st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    free(st->metadata_format);
    free(st);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct vl3__st_tensor *)a)->name, ((const struct vl3__st_tensor *)b)->name);
}

struct span {
    uint64_t begin, end;
    const char *name;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

#define FERR(code, ...) vl3_error_set(reterr, code, __VA_ARGS__)

/* Validate one header entry and fill *t (name not yet set). */
static int parse_entry(const struct vl3__st_file *f, const char *name, json_t *v, size_t data_len,
                       struct vl3__st_tensor *t, vl3_error *reterr)
{
    const char *lab = f->label;
    if (!json_is_object(v))
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": entry must be an object", lab, name);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": unknown field \"%s\"", lab, name,
                        key);
    }
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": \"dtype\" must be a string", lab, name);
    int dt = vl3__dtype_parse(json_string_value(jd));
    if (dt < 0)
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": unknown dtype \"%.32s\"", lab, name,
                    json_string_value(jd));
    if (!json_is_array(js))
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": \"shape\" must be an array", lab, name);
    size_t nd = json_array_size(js);
    if (nd > VL3__ST_MAX_DIMS)
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": %zu dimensions, at most %d supported",
                    lab, name, nd, VL3__ST_MAX_DIMS);
    uint64_t count = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return FERR(VL3_E_FORMAT,
                        "\"%s\": tensor \"%s\": shape[%zu] must be a non-negative integer", lab,
                        name, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(count, (uint64_t)t->shape[i], &count))
            overflow = 1;
    }
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(count, (uint64_t)dtypes[dt].size, &nbytes))
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": shape size overflows", lab, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1)) ||
        json_integer_value(json_array_get(jo, 0)) < 0 ||
        json_integer_value(json_array_get(jo, 1)) < 0)
        return FERR(VL3_E_FORMAT,
                    "\"%s\": tensor \"%s\": \"data_offsets\" must be two non-negative integers",
                    lab, name);
    uint64_t b = (uint64_t)json_integer_value(json_array_get(jo, 0));
    uint64_t e = (uint64_t)json_integer_value(json_array_get(jo, 1));
    if (b > e)
        return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": data_offsets [%llu, %llu) are reversed",
                    lab, name, (unsigned long long)b, (unsigned long long)e);
    if (e > data_len)
        return FERR(VL3_E_FORMAT,
                    "\"%s\": tensor \"%s\": data_offsets [%llu, %llu) exceed the file (%zu bytes "
                    "of data)",
                    lab, name, (unsigned long long)b, (unsigned long long)e, data_len);
    if (e - b != nbytes)
        return FERR(VL3_E_FORMAT,
                    "\"%s\": tensor \"%s\": data_offsets span %llu bytes but shape and dtype %s "
                    "need %llu",
                    lab, name, (unsigned long long)(e - b), dtypes[dt].st_name,
                    (unsigned long long)nbytes);
    t->dtype = (enum vl3__dtype)dt;
    t->ndim = (int)nd;
    t->begin = b;
    t->end = e;
    t->nbytes = (size_t)(e - b);
    t->data = f->bytes + f->data_off + b;
    return 0;
}

/* Parse the header of file fi (already mapped) and append its tensors to st. */
static int parse_file(vl3__st *st, int fi, vl3_error *reterr)
{
    struct vl3__st_file *f = &st->files[fi];
    const char *lab = f->label;
    json_t *root = NULL;
    struct span *spans = NULL;
    int r = 0;

    if (f->size < 8)
        return FERR(VL3_E_FORMAT, "\"%s\": file too short for a safetensors header (%zu bytes)",
                    lab, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | f->bytes[i];
    if (n > f->size - 8)
        return FERR(VL3_E_FORMAT, "\"%s\": header length %llu exceeds the file (%zu bytes)", lab,
                    (unsigned long long)n, f->size);
    if (n > VL3__ST_MAX_HEADER)
        return FERR(VL3_E_FORMAT, "\"%s\": header length %llu exceeds the %u allowed", lab,
                    (unsigned long long)n, VL3__ST_MAX_HEADER);
    if (n < 2 || f->bytes[8] != '{')
        return FERR(VL3_E_FORMAT, "\"%s\": header is not a JSON object", lab);
    f->data_off = 8 + (size_t)n;
    size_t data_len = f->size - f->data_off;

    json_error_t je;
    root = json_loadb((const char *)f->bytes + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        r = FERR(VL3_E_FORMAT, "\"%s\": invalid JSON header at column %d: %s", lab, je.column,
                 je.text);
        goto out;
    }
    if (!json_is_object(root)) {
        r = FERR(VL3_E_FORMAT, "\"%s\": header is not a JSON object", lab);
        goto out;
    }
    size_t cnt = json_object_size(root);
    size_t newn;
    if (__builtin_add_overflow(st->n_tensors, cnt, &newn)) {
        r = FERR(-EOVERFLOW, "\"%s\": too many tensors", lab);
        goto out;
    }
    struct vl3__st_tensor *nt = realloc(st->tensors, (newn ? newn : 1) * sizeof(*nt));
    spans = calloc(cnt ? cnt : 1, sizeof(*spans));
    if (!nt || !spans) {
        if (nt)
            st->tensors = nt;
        r = FERR(-ENOMEM, "out of memory");
        goto out;
    }
    st->tensors = nt;
    size_t ns = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                r = FERR(VL3_E_FORMAT, "\"%s\": \"__metadata__\" must be an object", lab);
                goto out;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    r = FERR(VL3_E_FORMAT, "\"%s\": \"__metadata__\".\"%s\" must be a string",
                             lab, mk);
                    goto out;
                }
                if (strcmp(mk, "format") == 0 && !st->metadata_format) {
                    st->metadata_format = strdup(json_string_value(mv));
                    if (!st->metadata_format) {
                        r = FERR(-ENOMEM, "out of memory");
                        goto out;
                    }
                }
            }
            continue;
        }
        struct vl3__st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof(*t));
        r = parse_entry(f, key, v, data_len, t, reterr);
        if (r < 0)
            goto out;
        t->name = strdup(key);
        if (!t->name) {
            r = FERR(-ENOMEM, "out of memory");
            goto out;
        }
        t->file = fi;
        st->n_tensors++;
        spans[ns++] = (struct span){t->begin, t->end, t->name};
    }
    /* no two non-empty tensors may share bytes */
    qsort(spans, ns, sizeof(*spans), cmp_span);
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < ns; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (prev && spans[i].begin < prev_end) {
            r = FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": data_offsets [%llu, %llu) overlap tensor \"%s\"",
                     lab, spans[i].name, (unsigned long long)spans[i].begin,
                     (unsigned long long)spans[i].end, prev);
            goto out;
        }
        prev_end = spans[i].end;
        prev = spans[i].name;
    }
out:
    free(spans);
    json_decref(root);
    return r;
}

static int add_file(vl3__st *st, const char *path, vl3_error *reterr)
{
    struct vl3__st_file *nf = realloc(st->files, (size_t)(st->n_files + 1) * sizeof(*nf));
    if (!nf)
        return FERR(-ENOMEM, "out of memory");
    st->files = nf;
    struct vl3__st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof(*f));
    f->path = strdup(path);
    if (!f->path)
        return FERR(-ENOMEM, "out of memory");
    f->label = base_name(f->path);
    st->n_files++;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FERR(-errno, "could not open \"%s\": %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return FERR(-e, "could not stat \"%s\": %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return FERR(VL3_E_FORMAT, "\"%s\" is not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size >= 8) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return FERR(-e, "could not map \"%s\": %s", path, strerror(e));
        }
        /* Huge pages for the weights where the kernel can: the page cache that faults through a
         * MADV_HUGEPAGE mapping is read in 2 MiB folios, mapped by one PMD each (ext4, Linux
         * 6.18: 4.3 of 4.4 GB PMD-mapped, against 0.45 for folios the cache got from writes or
         * read()), which spares a decode step's weight stream most of its TLB misses (2B
         * decode 85-86% -> 89-98% of the read-probe floor, docs/benchmarks.md). Folios already
         * cached stay as they are; an unsupported advice is no error. */
        (void)madvise(m, f->size, MADV_HUGEPAGE);
        f->map = m;
        f->bytes = m;
    } else {
        static const uint8_t empty[8];
        f->bytes = empty;
    }
    close(fd);
    return parse_file(st, st->n_files - 1, reterr);
}

/* Sort by name and refuse duplicates (across files). */
static int finish(vl3__st *st, vl3_error *reterr)
{
    if (st->n_tensors)
        qsort(st->tensors, st->n_tensors, sizeof(*st->tensors), cmp_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": also present in \"%s\"",
                        st->files[st->tensors[i].file].label, st->tensors[i].name,
                        st->files[st->tensors[i - 1].file].label);
    return 0;
}

int vl3__st_open_file(const char *path, vl3__st **ret, vl3_error *reterr)
{
    VL3_RETURN_IF(!path || !ret, -EINVAL);
    vl3__st *st = calloc(1, sizeof(*st));
    if (!st)
        return FERR(-ENOMEM, "out of memory");
    int r = add_file(st, path, reterr);
    if (r >= 0)
        r = finish(st, reterr);
    if (r < 0) {
        vl3__st_free(st);
        return r;
    }
    *ret = st;
    return 0;
}

int vl3__st_open_buf(const char *label, const void *buf, size_t len, vl3__st **ret,
                     vl3_error *reterr)
{
    VL3_RETURN_IF(!label || (!buf && len) || !ret, -EINVAL);
    static const uint8_t empty[8];
    vl3__st *st = calloc(1, sizeof(*st));
    struct vl3__st_file *f = calloc(1, sizeof(*f));
    if (!st || !f) {
        free(st);
        free(f);
        return FERR(-ENOMEM, "out of memory");
    }
    st->files = f;
    st->n_files = 1;
    f->path = strdup(label);
    if (!f->path) {
        vl3__st_free(st);
        return FERR(-ENOMEM, "out of memory");
    }
    f->label = base_name(f->path);
    f->bytes = buf ? buf : empty;
    f->size = len;
    int r = parse_file(st, 0, reterr);
    if (r >= 0)
        r = finish(st, reterr);
    if (r < 0) {
        vl3__st_free(st);
        return r;
    }
    *ret = st;
    return 0;
}

static int open_index(vl3__st *st, const char *dir, const char *index_path, vl3_error *reterr)
{
    json_t *root = NULL, *wm = NULL;
    char path[PATH_MAX];
    int r = vl3_json_load_file(index_path, 64u << 20, &root, reterr);
    if (r < 0)
        return r;
    r = vl3_json_get_object(root, "weight_map", &wm, reterr);
    if (r == -ENOENT)
        r = FERR(VL3_E_FORMAT, "\"%s\": field \"weight_map\" is missing", index_path);
    if (r < 0) {
        if (r == VL3_E_FORMAT)
            vl3_error_prefix(reterr, "\"%s\"", index_path);
        goto out;
    }
    /* open each distinct shard once, in order of first appearance */
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v)
    {
        if (!json_is_string(v)) {
            r = FERR(VL3_E_FORMAT, "\"%s\": weight_map entry \"%s\" must be a string",
                     index_path, key);
            goto out;
        }
        const char *shard = json_string_value(v);
        if (!*shard || strchr(shard, '/') || strcmp(shard, "..") == 0 || strcmp(shard, ".") == 0) {
            r = FERR(VL3_E_FORMAT, "\"%s\": weight_map entry \"%s\": \"%s\" is not a file name in "
                                   "the checkpoint directory",
                     index_path, key, shard);
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < st->n_files && !seen; i++)
            seen = strcmp(st->files[i].label, shard) == 0;
        if (seen)
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, shard) >= sizeof(path)) {
            r = FERR(-ENAMETOOLONG, "path of shard \"%s\" is too long", shard);
            goto out;
        }
        r = add_file(st, path, reterr);
        if (r < 0)
            goto out;
    }
    r = finish(st, reterr);
    if (r < 0)
        goto out;
    /* every listed tensor is in the named shard; every shard tensor is listed */
    json_object_foreach(wm, key, v)
    {
        struct vl3__st_tensor *t = vl3__st_find(st, key);
        if (!t) {
            r = FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": listed in the index but not found in \"%s\"",
                     index_path, key, json_string_value(v));
            goto out;
        }
        if (strcmp(st->files[t->file].label, json_string_value(v)) != 0) {
            r = FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": index names \"%s\" but it is in \"%s\"",
                     index_path, key, json_string_value(v), st->files[t->file].label);
            goto out;
        }
    }
    if (json_object_size(wm) != st->n_tensors) {
        for (size_t i = 0; i < st->n_tensors; i++)
            if (!json_object_get(wm, st->tensors[i].name)) {
                r = FERR(VL3_E_FORMAT, "\"%s\": tensor \"%s\": not listed in \"%s\"",
                         st->files[st->tensors[i].file].label, st->tensors[i].name, index_path);
                goto out;
            }
    }
out:
    json_decref(root);
    return r;
}

int vl3__st_open_dir(const char *dir, vl3__st **ret, vl3_error *reterr)
{
    VL3_RETURN_IF(!dir || !ret, -EINVAL);
    char path[PATH_MAX];
    int r;
    if ((size_t)snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir) >=
        sizeof(path))
        return FERR(-ENAMETOOLONG, "checkpoint path \"%s\" is too long", dir);
    if (access(path, F_OK) == 0) {
        vl3__st *st = calloc(1, sizeof(*st));
        if (!st)
            return FERR(-ENOMEM, "out of memory");
        r = open_index(st, dir, path, reterr);
        if (r < 0) {
            vl3__st_free(st);
            return r;
        }
        *ret = st;
        return 0;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (access(path, F_OK) != 0)
        return FERR(-ENOENT, "no model.safetensors or model.safetensors.index.json in \"%s\"",
                    dir);
    return vl3__st_open_file(path, ret, reterr);
}

struct vl3__st_tensor *vl3__st_find(const vl3__st *st, const char *name)
{
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0)
            return &st->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
