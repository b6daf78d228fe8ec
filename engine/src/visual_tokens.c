/* visual_tokens.c: the visual tokens of a window (vl3/visual_tokens.h): building the object from
 * the media half's results, its serialization for the token cache (byte planes + zstd or plain
 * zstd per ~1 MiB chunk, XXH3 checksums) and the model's vision identity for cache keys.
 *
 * Layout of a serialized entry (all integers little-endian):
 *   header, HDR_BYTES:
 *     0 magic "VL3VTOK1"     8 u32 version         12 u32 dtype
 *    16 i64 n_rows          24 u32 dim            28 u32 n_items
 *    32 i64 n_tokens        40 u32 n_frames       44 u32 n_chunks
 *    48 u64 meta_bytes      56 u64 payload_bytes  64 u64 XXH3-64 of the decoded payload
 *    72 u64 XXH3-64 of the stored chunk bytes (a flip that zstd would not notice is caught)
 *    80 u64 XXH3-64 of bytes [0, 80) and the chunk table
 *   chunk table: n_chunks x (u32 codec, u32 raw bytes, u32 stored bytes)
 *   chunks, back to back.
 * The decoded payload is the metadata (chunk 0) followed by the rows (chunks 1..):
 *   per item 32 bytes: i32 t, h, w, merge, resized h, resized w, frames; u8 is_video,
 *   has_timestamps, 2 zero bytes; then i64 n_patches; f64 timestamps[n_frames];
 *   i32 kept_per_frame[n_frames]; i32 total_per_frame[n_frames]; u8 keep[n_tokens]. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "model.h"
#include "vl3/util.h"
#include "vl3/visual_tokens.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the visual tokens format stores host floats: little-endian hosts only"
#endif

#define HDR_BYTES 88
#define TABLE_ENTRY 12
#define ITEM_BYTES 32
#define MAX_ITEMS 4096
#define MAX_FRAMES (1 << 24)
#define MAX_DIM (1 << 16)
#define MAX_CHUNKS (1 << 20)

enum chunk_codec { CODEC_ZSTD = 1, CODEC_PLANES_ZSTD = 2, CODEC_STORED = 3 };

static const char MAGIC[8] = {'V', 'L', '3', 'V', 'T', 'O', 'K', '1'};

static size_t dtype_size(enum vl3_vt_dtype d)
{
    return d == VL3_VT_DTYPE_F32 ? 4 : d == VL3_VT_DTYPE_BF16 ? 2 : 0;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- the object ---------------------------------------------------------------------------- */

void vl3_visual_tokens_deinit(vl3_visual_tokens *vt)
{
    if (!vt)
        return;
    free(vt->grids);
    free(vt->resized_hw);
    free(vt->item_frames);
    free(vt->is_video);
    free(vt->has_timestamps);
    free(vt->timestamps);
    vl3_token_mask_deinit(&vt->mask);
    free(vt->rows);
    free(vt->visual);
    memset(vt, 0, sizeof(*vt));
}

/* Allocate every array of vt for its counts (n_items, mask.n_frames, mask.n_tokens, n_rows,
 * dim, dtype set by the caller). */
static int vt_alloc(vl3_visual_tokens *vt)
{
    size_t ni = (size_t)vt->n_items, nf = (size_t)vt->mask.n_frames;
    size_t rb = (size_t)vt->n_rows * (size_t)vt->dim * dtype_size(vt->dtype);
    vt->grids = calloc(ni ? ni : 1, sizeof(*vt->grids));
    vt->resized_hw = calloc(2 * (ni ? ni : 1), sizeof(int));
    vt->item_frames = calloc(ni ? ni : 1, sizeof(int));
    vt->is_video = calloc(ni ? ni : 1, 1);
    vt->has_timestamps = calloc(ni ? ni : 1, 1);
    vt->timestamps = calloc(nf ? nf : 1, sizeof(double));
    vt->mask.kept_per_frame = calloc(nf ? nf : 1, sizeof(int));
    vt->mask.total_per_frame = calloc(nf ? nf : 1, sizeof(int));
    vt->mask.keep = calloc(vt->mask.n_tokens ? (size_t)vt->mask.n_tokens : 1, 1);
    vt->rows = malloc(rb ? rb : 1);
    if (!vt->grids || !vt->resized_hw || !vt->item_frames || !vt->is_video ||
        !vt->has_timestamps || !vt->timestamps || !vt->mask.kept_per_frame ||
        !vt->mask.total_per_frame || !vt->mask.keep || !vt->rows)
        return -ENOMEM;
    return 0;
}

static uint16_t bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

int vl3_visual_tokens_from_parts(const vl3_pixel_batch *b, const vl3_token_mask *m,
                                 const vl3_vision_item *items, int n_items, const float *rows,
                                 int dim, enum vl3_vt_dtype dtype, vl3_visual_tokens *ret,
                                 vl3_error *reterr)
{
    if (!b || !items || !ret || n_items != b->n_items || n_items < 1 || dim < 1 ||
        (!rows && m && m->n_kept > 0) || (dtype != VL3_VT_DTYPE_F32 && dtype != VL3_VT_DTYPE_BF16))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_visual_tokens vt = {0};
    int64_t n_tok = 0, n_frames = 0;
    for (int i = 0; i < n_items; i++) {
        n_tok += (int64_t)b->grids[i].t * vl3_vision_grid_tokens_per_frame(&b->grids[i]);
        n_frames += items[i].n_frames;
    }
    if (m && (m->n_tokens != n_tok || m->n_frames != n_frames))
        return vl3_error_set(reterr, -EINVAL, "the mask covers %lld tokens of %lld frames, the "
                             "batch has %lld of %lld", (long long)m->n_tokens,
                             (long long)m->n_frames, (long long)n_tok, (long long)n_frames);
    vt.n_items = n_items;
    vt.mask.n_frames = (int)n_frames;
    vt.mask.n_tokens = n_tok;
    vt.dtype = dtype;
    vt.dim = dim;
    vt.n_rows = m ? m->n_kept : n_tok;
    vt.n_patches = b->n_patches;
    if (vt_alloc(&vt) < 0) {
        vl3_visual_tokens_deinit(&vt);
        return vl3_error_set(reterr, -ENOMEM, "out of memory for %lld visual rows",
                             (long long)vt.n_rows);
    }
    int64_t f = 0;
    for (int i = 0; i < n_items; i++) {
        vt.grids[i] = b->grids[i];
        vt.resized_hw[2 * i] = b->resized_hw ? b->resized_hw[2 * i] : 0;
        vt.resized_hw[2 * i + 1] = b->resized_hw ? b->resized_hw[2 * i + 1] : 0;
        vt.item_frames[i] = items[i].n_frames;
        vt.is_video[i] = items[i].is_video != 0;
        vt.has_timestamps[i] = items[i].timestamps != NULL;
        int per = vl3_vision_grid_tokens_per_frame(&b->grids[i]);
        for (int k = 0; k < items[i].n_frames; k++, f++) {
            vt.timestamps[f] = items[i].timestamps ? items[i].timestamps[k] : 0;
            vt.mask.total_per_frame[f] = m ? m->total_per_frame[f] : per;
            vt.mask.kept_per_frame[f] = m ? m->kept_per_frame[f] : per;
        }
    }
    if (m)
        memcpy(vt.mask.keep, m->keep, (size_t)n_tok);
    else
        memset(vt.mask.keep, 1, (size_t)n_tok);
    vt.mask.n_kept = vt.n_rows;
    size_t n = (size_t)vt.n_rows * (size_t)dim;
    if (dtype == VL3_VT_DTYPE_F32 && n > 0) {
        memcpy(vt.rows, rows, n * sizeof(float));
    } else if (dtype == VL3_VT_DTYPE_BF16) {
        uint16_t *h = vt.rows;
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &rows[i], 4);
            if (u & 0xffffu) { /* not a bf16 value: holding it as bf16 would change it */
                vl3_visual_tokens_deinit(&vt);
                return vl3_error_set(reterr, -EINVAL, "row element %zu is not a bf16 value", i);
            }
            h[i] = bf16_bits(rows[i]);
        }
    }
    *ret = vt;
    return 0;
}

int vl3_visual_tokens_from_mm(const vl3_mm_input *mm, const vl3_vision_item *items, int n_items,
                              vl3_visual_tokens *ret, vl3_error *reterr)
{
    if (!mm)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_visual_tokens vt = {0};
    int rc = vl3_visual_tokens_from_parts(&mm->batch, &mm->mask, items, n_items, mm->pre,
                                          mm->pre_dim,
                                          mm->pre_bf16 ? VL3_VT_DTYPE_BF16 : VL3_VT_DTYPE_F32,
                                          &vt, reterr);
    if (rc < 0)
        return rc;
    size_t n = (size_t)(vt.n_rows > 0 ? vt.n_rows : 1) * (size_t)mm->hidden;
    if (!(vt.visual = malloc(n * sizeof(float)))) {
        vl3_visual_tokens_deinit(&vt);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    if (vt.n_rows > 0)
        memcpy(vt.visual, mm->visual, (size_t)vt.n_rows * (size_t)mm->hidden * sizeof(float));
    vt.hidden = mm->hidden;
    *ret = vt;
    return 0;
}

int vl3_visual_tokens_copy(const vl3_visual_tokens *vt, int with_visual, vl3_visual_tokens *ret,
                           vl3_error *reterr)
{
    if (!vt || !ret || vt->n_items < 1 || vt->n_rows < 0 || !dtype_size(vt->dtype))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_visual_tokens c = {0};
    size_t ni = (size_t)vt->n_items, nf = (size_t)vt->mask.n_frames;
    c.n_items = vt->n_items;
    c.mask.n_frames = vt->mask.n_frames;
    c.mask.n_tokens = vt->mask.n_tokens;
    c.mask.n_kept = vt->mask.n_kept;
    c.dtype = vt->dtype;
    c.dim = vt->dim;
    c.n_rows = vt->n_rows;
    c.n_patches = vt->n_patches;
    int rc = vt_alloc(&c);
    if (rc == 0 && with_visual && vt->visual) {
        size_t n = (size_t)(vt->n_rows > 0 ? vt->n_rows : 1) * (size_t)vt->hidden;
        if ((c.visual = malloc(n * sizeof(float))) != NULL) {
            memcpy(c.visual, vt->visual, (size_t)vt->n_rows * (size_t)vt->hidden * sizeof(float));
            c.hidden = vt->hidden;
        } else {
            rc = -ENOMEM;
        }
    }
    if (rc < 0) {
        vl3_visual_tokens_deinit(&c);
        return vl3_error_set(reterr, -ENOMEM, "out of memory for %lld visual rows",
                             (long long)vt->n_rows);
    }
    memcpy(c.grids, vt->grids, ni * sizeof(*c.grids));
    memcpy(c.resized_hw, vt->resized_hw, 2 * ni * sizeof(int));
    memcpy(c.item_frames, vt->item_frames, ni * sizeof(int));
    memcpy(c.is_video, vt->is_video, ni);
    memcpy(c.has_timestamps, vt->has_timestamps, ni);
    memcpy(c.timestamps, vt->timestamps, nf * sizeof(double));
    memcpy(c.mask.kept_per_frame, vt->mask.kept_per_frame, nf * sizeof(int));
    memcpy(c.mask.total_per_frame, vt->mask.total_per_frame, nf * sizeof(int));
    memcpy(c.mask.keep, vt->mask.keep, (size_t)vt->mask.n_tokens);
    memcpy(c.rows, vt->rows, (size_t)vt->n_rows * (size_t)vt->dim * dtype_size(vt->dtype));
    *ret = c;
    return 0;
}

enum vl3_vt_dtype vl3_visual_tokens_dtype_of(const vl3_vision *v)
{
    return vl3_vision_pre_bf16(v) ? VL3_VT_DTYPE_BF16 : VL3_VT_DTYPE_F32;
}

void vl3_visual_tokens_pre_f32(const vl3_visual_tokens *vt, float *out)
{
    size_t n = (size_t)vt->n_rows * (size_t)vt->dim;
    if (vt->dtype == VL3_VT_DTYPE_F32) {
        if (n)
            memcpy(out, vt->rows, n * sizeof(float));
        return;
    }
    const uint16_t *h = vt->rows;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&out[i], &u, 4);
    }
}

int vl3_visual_tokens_project(vl3_vision *v, vl3_visual_tokens *vt, vl3_error *reterr)
{
    if (!v || !vt || vt->n_rows < 0)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (vt->dim != vl3_vision_pre_dim(v) || vt->dtype != vl3_visual_tokens_dtype_of(v))
        return vl3_error_set(reterr, VL3_E_FORMAT, "rows of width %d and dtype %d do not fit "
                             "this projector (width %d, dtype %d)", vt->dim, (int)vt->dtype,
                             vl3_vision_pre_dim(v), (int)vl3_visual_tokens_dtype_of(v));
    int hidden = vl3_vision_out_dim(v);
    size_t rows = (size_t)(vt->n_rows > 0 ? vt->n_rows : 1);
    float *pre = malloc(rows * (size_t)vt->dim * sizeof(float));
    float *out = malloc(rows * (size_t)hidden * sizeof(float));
    int rc;
    if (!pre || !out) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory for %lld visual rows",
                           (long long)vt->n_rows);
        goto out;
    }
    vl3_visual_tokens_pre_f32(vt, pre);
    if ((rc = vl3_vision_project(v, &vt->mask, vt->mask.n_tokens, pre, out, reterr)) < 0)
        goto out;
    free(vt->visual);
    vt->visual = out;
    vt->hidden = hidden;
    out = NULL;
out:
    free(pre);
    free(out);
    return rc;
}

void vl3_visual_tokens_items(const vl3_visual_tokens *vt, vl3_vision_item *ret_items)
{
    int64_t f = 0;
    for (int i = 0; i < vt->n_items; i++) {
        ret_items[i] = (vl3_vision_item){NULL, vt->item_frames[i],
                                         vt->has_timestamps[i] ? vt->timestamps + f : NULL,
                                         vt->is_video[i], vt->grids[i].merge};
        f += vt->item_frames[i];
    }
}

/* ---- serialization ------------------------------------------------------------------------ */

void vl3_vt_encode_params_default(vl3_vt_encode_params *p)
{
    p->level = 3;
    p->codec = VL3_VT_CODEC_AUTO;
    p->chunk_bytes = VL3_VT_CHUNK_BYTES;
}

static size_t meta_size(const vl3_visual_tokens *vt)
{
    return (size_t)vt->n_items * ITEM_BYTES + 8 + (size_t)vt->mask.n_frames * 16 +
           (size_t)vt->mask.n_tokens;
}

static void meta_write(const vl3_visual_tokens *vt, uint8_t *p)
{
    for (int i = 0; i < vt->n_items; i++, p += ITEM_BYTES) {
        const vl3_vision_grid *g = &vt->grids[i];
        int32_t v[7] = {g->t, g->h, g->w, g->merge, vt->resized_hw[2 * i],
                        vt->resized_hw[2 * i + 1], vt->item_frames[i]};
        memcpy(p, v, sizeof(v));
        p[28] = vt->is_video[i];
        p[29] = vt->has_timestamps[i];
        p[30] = p[31] = 0;
    }
    put64(p, (uint64_t)vt->n_patches);
    p += 8;
    size_t nf = (size_t)vt->mask.n_frames;
    memcpy(p, vt->timestamps, nf * 8);
    p += nf * 8;
    for (size_t f = 0; f < nf; f++, p += 4)
        put32(p, (uint32_t)vt->mask.kept_per_frame[f]);
    for (size_t f = 0; f < nf; f++, p += 4)
        put32(p, (uint32_t)vt->mask.total_per_frame[f]);
    memcpy(p, vt->mask.keep, (size_t)vt->mask.n_tokens);
}

/* Split n elements of es bytes into es planes (byte k of every element together). */
static void planes_split(const uint8_t *src, uint8_t *dst, size_t n, size_t es)
{
    for (size_t k = 0; k < es; k++)
        for (size_t i = 0; i < n; i++)
            dst[k * n + i] = src[i * es + k];
}

static void planes_join(const uint8_t *src, uint8_t *dst, size_t n, size_t es)
{
    for (size_t k = 0; k < es; k++)
        for (size_t i = 0; i < n; i++)
            dst[i * es + k] = src[k * n + i];
}

struct enc {
    uint8_t *buf;
    size_t len, cap;
    ZSTD_CCtx *cctx;
    uint8_t *tmp;       /* compressed candidate */
    uint8_t *planes;    /* byte-plane copy of a chunk */
};

static int enc_reserve(struct enc *e, size_t more)
{
    if (e->len + more <= e->cap)
        return 0;
    size_t cap = e->cap ? e->cap : 4096;
    while (cap < e->len + more)
        cap *= 2;
    uint8_t *nb = realloc(e->buf, cap);
    if (!nb)
        return -ENOMEM;
    e->buf = nb;
    e->cap = cap;
    return 0;
}

/* Compress src (n bytes) with zstd into e->tmp; returns the size or 0 on failure. */
static size_t zc(struct enc *e, const void *src, size_t n, int level)
{
    size_t r = ZSTD_compressCCtx(e->cctx, e->tmp, ZSTD_compressBound(n), src, n, level);
    return ZSTD_isError(r) ? 0 : r;
}

/* Append one chunk (src, n raw bytes of elements of es bytes) to e, writing its table entry at
 * tab. */
static int enc_chunk(struct enc *e, size_t tab_off, const uint8_t *src, size_t n, size_t es,
                     const vl3_vt_encode_params *p, vl3_vt_encode_stats *st, int is_rows,
                     vl3_error *reterr)
{
    size_t plain = 0, planes = 0;
    enum vl3_vt_codec codec = is_rows ? p->codec : VL3_VT_CODEC_PLAIN;
    int have = 0;
    size_t best_n = 0;
    uint32_t best_codec = CODEC_STORED;
    if (codec == VL3_VT_CODEC_AUTO || codec == VL3_VT_CODEC_BYTEPLANE) {
        planes_split(src, e->planes, n / es, es);
        if (!(planes = zc(e, e->planes, n, p->level)))
            return vl3_error_set(reterr, VL3_E_ZSTD, "zstd could not compress a chunk");
        /* the candidate goes to the output's end; a smaller plain one replaces it */
        if (enc_reserve(e, planes) < 0)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        memcpy(e->buf + e->len, e->tmp, planes);
        have = 1;
        best_n = planes;
        best_codec = CODEC_PLANES_ZSTD;
    }
    if (codec == VL3_VT_CODEC_AUTO || codec == VL3_VT_CODEC_PLAIN) {
        if (!(plain = zc(e, src, n, p->level)))
            return vl3_error_set(reterr, VL3_E_ZSTD, "zstd could not compress a chunk");
        if (!have || plain < best_n) {
            if (enc_reserve(e, plain) < 0)
                return vl3_error_set(reterr, -ENOMEM, "out of memory");
            memcpy(e->buf + e->len, e->tmp, plain);
            best_n = plain;
            best_codec = CODEC_ZSTD;
        }
    }
    if (best_n >= n) { /* incompressible: store */
        if (enc_reserve(e, n) < 0)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        memcpy(e->buf + e->len, src, n);
        best_n = n;
        best_codec = CODEC_STORED;
    }
    uint8_t *t = e->buf + tab_off;
    put32(t, best_codec);
    put32(t + 4, (uint32_t)n);
    put32(t + 8, (uint32_t)best_n);
    e->len += best_n;
    if (st && is_rows) {
        st->plain_bytes += plain;
        st->byteplane_bytes += planes;
    }
    return 0;
}

int vl3_visual_tokens_encode(const vl3_visual_tokens *vt, const vl3_vt_encode_params *p,
                             uint8_t **ret, size_t *ret_len, vl3_vt_encode_stats *st,
                             vl3_error *reterr)
{
    vl3_vt_encode_params def;
    if (!p) {
        vl3_vt_encode_params_default(&def);
        p = &def;
    }
    size_t es = dtype_size(vt ? vt->dtype : VL3_VT_DTYPE_COUNT);
    if (!vt || !ret || !ret_len || !es || vt->n_items < 1 || vt->dim < 1 || vt->n_rows < 0 ||
        p->codec >= VL3_VT_CODEC_COUNT || p->chunk_bytes < 4096)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_vt_encode_stats s = {0};
    size_t mb = meta_size(vt);
    size_t row_bytes = (size_t)vt->dim * es;
    size_t rows_per_chunk = p->chunk_bytes / row_bytes ? p->chunk_bytes / row_bytes : 1;
    size_t chunk_raw = rows_per_chunk * row_bytes;
    size_t rb = (size_t)vt->n_rows * row_bytes;
    size_t n_chunks = 1 + (rb + chunk_raw - 1) / chunk_raw;
    size_t biggest = chunk_raw > mb ? chunk_raw : mb;
    if (n_chunks > MAX_CHUNKS || chunk_raw > UINT32_MAX / 2 || mb > UINT32_MAX / 2)
        return vl3_error_set(reterr, VL3_E_LIMIT, "visual tokens too large to serialize");
    struct enc e = {0};
    uint8_t *meta = malloc(mb);
    int rc;
    e.cctx = ZSTD_createCCtx();
    e.tmp = malloc(ZSTD_compressBound(biggest));
    e.planes = malloc(biggest);
    if (!meta || !e.cctx || !e.tmp || !e.planes ||
        enc_reserve(&e, HDR_BYTES + n_chunks * TABLE_ENTRY) < 0) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    meta_write(vt, meta);
    e.len = HDR_BYTES + n_chunks * TABLE_ENTRY;
    memset(e.buf, 0, e.len);
    if ((rc = enc_chunk(&e, HDR_BYTES, meta, mb, 1, p, &s, 0, reterr)) < 0)
        goto out;
    const uint8_t *rows = vt->rows;
    for (size_t c = 1, off = 0; c < n_chunks; c++, off += chunk_raw) {
        size_t n = rb - off < chunk_raw ? rb - off : chunk_raw;
        if ((rc = enc_chunk(&e, HDR_BYTES + c * TABLE_ENTRY, rows + off, n, es, p, &s, 1,
                            reterr)) < 0)
            goto out;
    }
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, meta, mb);
    XXH3_64bits_update(xs, rows, rb);
    uint64_t payload_hash = XXH3_64bits_digest(xs);
    uint8_t *h = e.buf;
    memcpy(h, MAGIC, 8);
    put32(h + 8, VL3_VT_FORMAT_VERSION);
    put32(h + 12, (uint32_t)vt->dtype);
    put64(h + 16, (uint64_t)vt->n_rows);
    put32(h + 24, (uint32_t)vt->dim);
    put32(h + 28, (uint32_t)vt->n_items);
    put64(h + 32, (uint64_t)vt->mask.n_tokens);
    put32(h + 40, (uint32_t)vt->mask.n_frames);
    put32(h + 44, (uint32_t)n_chunks);
    put64(h + 48, mb);
    put64(h + 56, mb + rb);
    put64(h + 64, payload_hash);
    size_t data_off = HDR_BYTES + n_chunks * TABLE_ENTRY;
    put64(h + 72, XXH3_64bits(e.buf + data_off, e.len - data_off));
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, h, 80);
    XXH3_64bits_update(xs, h + HDR_BYTES, n_chunks * TABLE_ENTRY);
    put64(h + 80, XXH3_64bits_digest(xs));
    XXH3_freeState(xs);
    s.raw_bytes = mb + rb;
    s.row_bytes = rb;
    s.out_bytes = e.len;
    s.n_chunks = (int)n_chunks;
    if (st)
        *st = s;
    *ret = e.buf;
    *ret_len = e.len;
    e.buf = NULL;
    rc = 0;
out:
    free(e.buf);
    free(e.tmp);
    free(e.planes);
    free(meta);
    ZSTD_freeCCtx(e.cctx);
    return rc;
}

#define CORRUPT(...) vl3_error_set(reterr, VL3_E_FORMAT, "damaged visual tokens: " __VA_ARGS__)

/* Read the metadata (mb bytes at p) into vt, whose counts come from the header. */
static int meta_read(vl3_visual_tokens *vt, const uint8_t *p, size_t mb, vl3_error *reterr)
{
    if (mb != meta_size(vt))
        return CORRUPT("metadata of %zu bytes, expected %zu", mb, meta_size(vt));
    int64_t frames = 0, tokens = 0;
    for (int i = 0; i < vt->n_items; i++, p += ITEM_BYTES) {
        int32_t v[7];
        memcpy(v, p, sizeof(v));
        vl3_vision_grid g = {v[0], v[1], v[2], v[3]};
        if (g.t < 1 || g.h < 1 || g.w < 1 || g.merge < 1 || g.h % g.merge || g.w % g.merge ||
            v[6] < 1 || v[6] > MAX_FRAMES || p[28] > 1 || p[29] > 1)
            return CORRUPT("item %d", i);
        vt->grids[i] = g;
        vt->resized_hw[2 * i] = v[4];
        vt->resized_hw[2 * i + 1] = v[5];
        vt->item_frames[i] = v[6];
        vt->is_video[i] = p[28];
        vt->has_timestamps[i] = p[29];
        frames += v[6];
        tokens += (int64_t)g.t * (g.h / g.merge) * (g.w / g.merge);
    }
    if (frames != vt->mask.n_frames || tokens != vt->mask.n_tokens)
        return CORRUPT("items hold %lld frames and %lld tokens", (long long)frames,
                       (long long)tokens);
    vt->n_patches = (int64_t)get64(p);
    p += 8;
    size_t nf = (size_t)vt->mask.n_frames;
    memcpy(vt->timestamps, p, nf * 8);
    p += nf * 8;
    int64_t kept = 0, total = 0;
    for (size_t f = 0; f < nf; f++, p += 4)
        kept += vt->mask.kept_per_frame[f] = (int32_t)get32(p);
    for (size_t f = 0; f < nf; f++, p += 4)
        total += vt->mask.total_per_frame[f] = (int32_t)get32(p);
    memcpy(vt->mask.keep, p, (size_t)vt->mask.n_tokens);
    int64_t kept_mask = 0;
    for (int64_t t = 0; t < vt->mask.n_tokens; t++) {
        if (vt->mask.keep[t] > 1)
            return CORRUPT("keep mask");
        kept_mask += vt->mask.keep[t];
    }
    if (kept != vt->n_rows || kept_mask != vt->n_rows || total != vt->mask.n_tokens)
        return CORRUPT("%lld rows, %lld kept per frame, %lld in the mask", (long long)vt->n_rows,
                       (long long)kept, (long long)kept_mask);
    vt->mask.n_kept = vt->n_rows;
    return 0;
}

int vl3_visual_tokens_decode(const void *buf, size_t len, vl3_visual_tokens *ret,
                             vl3_error *reterr)
{
    const uint8_t *b = buf;
    if (!b || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    if (len < HDR_BYTES || memcmp(b, MAGIC, 8) != 0)
        return CORRUPT("no header");
    if (get32(b + 8) != VL3_VT_FORMAT_VERSION)
        return vl3_error_set(reterr, VL3_E_FORMAT, "visual tokens of format version %u, this "
                             "build reads %d", get32(b + 8), VL3_VT_FORMAT_VERSION);
    uint32_t n_chunks = get32(b + 44);
    if (n_chunks < 1 || n_chunks > MAX_CHUNKS || len < HDR_BYTES + (size_t)n_chunks * TABLE_ENTRY)
        return CORRUPT("chunk table");
    uint64_t hh;
    XXH3_state_t *xs = XXH3_createState();
    if (!xs)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, b, 80);
    XXH3_64bits_update(xs, b + HDR_BYTES, (size_t)n_chunks * TABLE_ENTRY);
    hh = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    if (hh != get64(b + 80))
        return CORRUPT("header checksum mismatch");
    vl3_visual_tokens vt = {0};
    vt.dtype = (enum vl3_vt_dtype)get32(b + 12);
    vt.n_rows = (int64_t)get64(b + 16);
    vt.dim = (int)get32(b + 24);
    vt.n_items = (int)get32(b + 28);
    vt.mask.n_tokens = (int64_t)get64(b + 32);
    vt.mask.n_frames = (int)get32(b + 40);
    uint64_t mb = get64(b + 48), pb = get64(b + 56), want = get64(b + 64);
    size_t es = dtype_size(vt.dtype);
    if (!es || vt.dim < 1 || vt.dim > MAX_DIM || vt.n_items < 1 || vt.n_items > MAX_ITEMS ||
        vt.mask.n_frames < 1 || vt.mask.n_frames > MAX_FRAMES || vt.n_rows < 0 ||
        vt.mask.n_tokens < vt.n_rows || vt.mask.n_tokens > (int64_t)1 << 40 ||
        pb != mb + (uint64_t)vt.n_rows * (uint64_t)vt.dim * es || pb > (uint64_t)1 << 42)
        return CORRUPT("shape");
    if (mb != meta_size(&vt))
        return CORRUPT("metadata of %llu bytes, expected %zu", (unsigned long long)mb,
                       meta_size(&vt));
    /* the table must add up to the payload and to the buffer, before anything is allocated */
    const uint8_t *tab = b + HDR_BYTES;
    uint64_t raw_sum = 0, stored_sum = 0;
    for (uint32_t c = 0; c < n_chunks; c++) {
        uint32_t codec = get32(tab + 12 * c), raw = get32(tab + 12 * c + 4);
        raw_sum += raw;
        stored_sum += get32(tab + 12 * c + 8);
        if (codec < CODEC_ZSTD || codec > CODEC_STORED || (c == 0 && raw != mb) ||
            (c > 0 && (raw == 0 || raw % es)))
            return CORRUPT("chunk %u", c);
    }
    size_t data_off = HDR_BYTES + (size_t)n_chunks * TABLE_ENTRY;
    if (raw_sum != pb || stored_sum != len - data_off)
        return CORRUPT("chunks hold %llu of %llu bytes", (unsigned long long)raw_sum,
                       (unsigned long long)pb);
    if (XXH3_64bits(b + data_off, len - data_off) != get64(b + 72))
        return CORRUPT("chunk checksum mismatch");
    int rc;
    uint8_t *meta = malloc(mb ? mb : 1), *tmp = NULL;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if ((rc = vt_alloc(&vt)) < 0 || !meta || !dctx) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    size_t biggest = 0;
    for (uint32_t c = 0; c < n_chunks; c++)
        if (get32(tab + 12 * c + 4) > biggest)
            biggest = get32(tab + 12 * c + 4);
    if (!(tmp = malloc(biggest ? biggest : 1))) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    const uint8_t *src = b + data_off;
    uint8_t *rows = vt.rows;
    for (uint32_t c = 0; c < n_chunks; c++) {
        uint32_t codec = get32(tab + 12 * c), raw = get32(tab + 12 * c + 4);
        uint32_t stored = get32(tab + 12 * c + 8);
        uint8_t *dst = c == 0 ? meta : rows;
        if (codec == CODEC_STORED) {
            if (stored != raw) {
                rc = CORRUPT("chunk %u", c);
                goto fail;
            }
            memcpy(dst, src, raw);
        } else {
            uint8_t *to = codec == CODEC_PLANES_ZSTD ? tmp : dst;
            size_t r = ZSTD_decompressDCtx(dctx, to, raw, src, stored);
            if (ZSTD_isError(r) || r != raw) {
                rc = CORRUPT("chunk %u does not decompress to %u bytes", c, raw);
                goto fail;
            }
            if (codec == CODEC_PLANES_ZSTD)
                planes_join(tmp, dst, raw / (c == 0 ? 1 : es), c == 0 ? 1 : es);
        }
        src += stored;
        if (c > 0)
            rows += raw;
    }
    XXH3_state_t *ps = XXH3_createState();
    if (!ps) {
        rc = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    XXH3_64bits_reset(ps);
    XXH3_64bits_update(ps, meta, mb);
    XXH3_64bits_update(ps, vt.rows, pb - mb);
    uint64_t got = XXH3_64bits_digest(ps);
    XXH3_freeState(ps);
    if (got != want) {
        rc = CORRUPT("payload checksum mismatch");
        goto fail;
    }
    if ((rc = meta_read(&vt, meta, mb, reterr)) < 0)
        goto fail;
    free(meta);
    free(tmp);
    ZSTD_freeDCtx(dctx);
    *ret = vt;
    return 0;
fail:
    free(meta);
    free(tmp);
    ZSTD_freeDCtx(dctx);
    vl3_visual_tokens_deinit(&vt);
    return rc;
}

/* ---- the model's vision identity ------------------------------------------------------------ */

static void hash_tensor(XXH3_state_t *s, const vl3__tensor *t)
{
    int32_t d[2 + VL3__MAX_DIMS] = {(int32_t)t->dtype, t->ndim};
    for (int i = 0; i < t->ndim && i < VL3__MAX_DIMS; i++)
        d[2 + i] = (int32_t)t->shape[i];
    XXH3_128bits_update(s, d, sizeof(d));
    if (t->data && t->nbytes)
        XXH3_128bits_update(s, t->data, t->nbytes);
}

int vl3_model_vision_identity(const vl3_model *m, char ret[33])
{
    if (!m || !ret)
        return -EINVAL;
    XXH3_state_t *s = XXH3_createState();
    if (!s)
        return -ENOMEM;
    XXH3_128bits_reset(s);
    int32_t layout = (int32_t)m->layout;
    XXH3_128bits_update(s, "vl3-vision-identity-1", 21);
    XXH3_128bits_update(s, &layout, sizeof(layout));
    /* the vision hyperparameters and the preprocessing settings the model asks for, as the
     * engine resolves them, field by field (no struct padding in the hash) */
    vl3_preprocess_params pp;
    vl3_preprocess_params_from_model(m, &pp);
    const struct vl3__vision_hparams *v = &m->vision;
    int64_t iv[] = {v->hidden, v->n_layers, v->n_heads, v->intermediate, v->patch_size,
                    v->channels, pp.rule, pp.patch_size, pp.image_merge, pp.video_merge,
                    pp.min_tokens, pp.max_tokens, pp.native_image_min_pixels,
                    pp.native_image_max_pixels, pp.native_video_min_pixels,
                    pp.native_video_max_pixels, m->use_token_compression};
    double fv[] = {v->ln_eps, v->rope_theta, pp.rescale, pp.mean[0], pp.mean[1], pp.mean[2],
                   pp.std[0], pp.std[1], pp.std[2]};
    XXH3_128bits_update(s, iv, sizeof(iv));
    XXH3_128bits_update(s, fv, sizeof(fv));
    const struct vl3__weights *w = &m->w;
    hash_tensor(s, &w->patch_w);
    hash_tensor(s, &w->patch_b);
    for (int l = 0; w->vlayers && l < m->vision.n_layers; l++) {
        const struct vl3__vision_layer *L = &w->vlayers[l];
        const vl3__tensor *ts[] = {&L->ln1_w, &L->ln1_b, &L->wq,    &L->bq,    &L->wk,
                                   &L->bk,    &L->wv,    &L->bv,    &L->wo,    &L->bo,
                                   &L->ln2_w, &L->ln2_b, &L->fc1_w, &L->fc1_b, &L->fc2_w,
                                   &L->fc2_b};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
            hash_tensor(s, ts[i]);
    }
    hash_tensor(s, &w->post_ln_w);
    hash_tensor(s, &w->post_ln_b);
    hash_tensor(s, &w->proj_w1);
    hash_tensor(s, &w->proj_b1);
    hash_tensor(s, &w->proj_w2);
    hash_tensor(s, &w->proj_b2);
    XXH128_hash_t h = XXH3_128bits_digest(s);
    XXH3_freeState(s);
    snprintf(ret, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    return 0;
}
