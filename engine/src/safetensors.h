/* safetensors.h: reader and writer of the safetensors format (engine-internal).
 *
 * File layout: 8-byte little-endian header length N, N bytes of JSON header
 * {name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}}, then
 * the data area; offsets are relative to its start. The reader maps each file read-only
 * (mmap, O_CLOEXEC) and checks every header field before any tensor byte is trusted: header
 * length within the file, known dtype, shape product * element size == offset span (with
 * overflow checks), offsets inside the data area, no two tensors overlapping, names unique
 * across all files. A set (vl3__st) holds one file or all shards of a sharded checkpoint
 * (model.safetensors.index.json), each shard opened once. Error messages name the file and the
 * tensor. */
#ifndef VL3_SAFETENSORS_H
#define VL3_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "vl3/err.h"

#define VL3__ST_MAX_DIMS 8
/* Largest header accepted (the reference implementation's limit is 100 MB). */
#define VL3__ST_MAX_HEADER (100u << 20)

struct vl3__st_tensor {
    const char *name;          /* owned by the set */
    enum vl3__dtype dtype;
    int ndim;
    int64_t shape[VL3__ST_MAX_DIMS];
    uint64_t begin, end;       /* data_offsets relative to the file's data area */
    const void *data;          /* points into the mapping */
    size_t nbytes;             /* end - begin */
    int file;                  /* index into the set's files */
    int used;                  /* scratch flag for the loader (unexpected-tensor report) */
};

struct vl3__st_file {
    char *path;                /* owned; as given (used in messages) */
    const char *label;         /* the base name of path, for messages */
    void *map;                 /* mapping (NULL when the set borrows a buffer) */
    size_t size;               /* file size */
    const uint8_t *bytes;      /* start of the file bytes */
    size_t data_off;           /* 8 + header length */
};

typedef struct vl3__st {
    struct vl3__st_file *files;
    int n_files;
    struct vl3__st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *metadata_format;     /* "__metadata__".format of the first file, or NULL */
} vl3__st;

/* Open one safetensors file. Returns owned set via ret. Errors: -errno (open/mmap),
 * VL3_E_FORMAT (any header violation; message: "<file>": tensor "<name>": <what>). */
int vl3__st_open_file(const char *path, vl3__st **ret, vl3_error *reterr);

/* Open a checkpoint directory: model.safetensors.index.json when present (every shard in its
 * weight_map opened once; each listed tensor must be in the shard the map names and every
 * tensor of a shard must be listed), else model.safetensors. */
int vl3__st_open_dir(const char *dir, vl3__st **ret, vl3_error *reterr);

/* Parse a safetensors image held in memory (borrowed; must outlive the set). label names it in
 * messages. Used by the fuzzer and the tests. */
int vl3__st_open_buf(const char *label, const void *buf, size_t len, vl3__st **ret,
                     vl3_error *reterr);

void vl3__st_free(vl3__st *st);

/* Find a tensor by name (binary search), or NULL. */
struct vl3__st_tensor *vl3__st_find(const vl3__st *st, const char *name);

/* Parse a safetensors dtype name ("BF16"); returns the enum or -1. */
int vl3__dtype_parse(const char *name);

/* ---- writer ---- */

struct vl3__st_wtensor {
    const char *name;
    enum vl3__dtype dtype;
    int ndim;
    int64_t shape[VL3__ST_MAX_DIMS];
    const void *data;          /* borrowed; product(shape) * dtype size bytes */
};

/* Write tensors (in the given order, contiguous, header padded with spaces to a multiple of 8,
 * "__metadata__": {"format": "pt"} first) to path. Returns 0, -errno or VL3_E_FORMAT for bad
 * input (duplicate names, dtype). */
int vl3__st_write(const char *path, const struct vl3__st_wtensor *t, size_t n, vl3_error *reterr);

/* Write tensors split into n_shards files model-0000i-of-0000n.safetensors plus
 * model.safetensors.index.json (metadata.total_size, weight_map) in dir. n_shards == 1 writes
 * a single model.safetensors and no index. Tensors keep their order; shards split by bytes. */
int vl3__st_write_sharded(const char *dir, const struct vl3__st_wtensor *t, size_t n,
                          int n_shards, vl3_error *reterr);

#endif
