/* test_visual_tokens.c: the visual tokens object and its serialization (vl3/visual_tokens.h).
 * Round trips are bit-exact for every codec and chunk size; every single flipped byte and every
 * truncation of an entry is refused (VL3_E_FORMAT), never decoded into rows; an entry made from
 * a real request on a tiny model rebuilds the same prompt ids without the media and, projected,
 * the cold path's rows bit for bit in f32 and bf16 precision; bf16 rows are exact; the vision
 * identity is stable across directories and changes with the weights and the layout. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "vl3/engine.h"
#include "vl3/visual_tokens.h"

/* A synthetic window: an image (grid 1x4x4, merge 1) and a 5-frame video (grid 5x4x6, merge 2),
 * rows of dim 48 that look like projector outputs (small floats with shared exponents). */
static int make_vt(vl3_visual_tokens *ret, int64_t n_extra_frames)
{
    static vl3_vision_grid grids[2] = {{1, 4, 4, 1}, {5, 4, 6, 2}};
    int nvf = 5 + (int)n_extra_frames;
    grids[1].t = nvf;
    int hw[4] = {56, 56, 56, 84};
    vl3_pixel_batch b = {NULL, 16 + 24 * nvf, 588, 2, grids, hw};
    double ts[64];
    for (int i = 0; i < nvf; i++)
        ts[i] = 0.5 + i * 1.25;
    vl3_image dummy = {0};
    vl3_vision_item items[2] = {{&dummy, 1, NULL, 0, 0}, {&dummy, nvf, ts, 1, 0}};
    int n_frames = 1 + nvf;
    int64_t n_tok = 16 + 6 * nvf;
    uint8_t keep[512];
    int kept[65], total[65];
    uint32_t s = 7;
    int64_t t = 0, n_kept = 0;
    for (int f = 0; f < n_frames; f++) {
        int per = f == 0 ? 16 : 6;
        kept[f] = 0;
        total[f] = per;
        for (int k = 0; k < per; k++, t++) {
            keep[t] = f < 2 || k == 0 || ((s = s * 1103515245u + 12345u) >> 28) & 1;
            kept[f] += keep[t];
            n_kept += keep[t];
        }
    }
    vl3_token_mask m = {keep, n_tok, n_kept, n_frames, kept, total};
    int dim = 48;
    float *rows = malloc(sizeof(float) * (size_t)(n_kept * dim));
    for (int64_t i = 0; i < n_kept * dim; i++) {
        s = s * 1103515245u + 12345u;
        rows[i] = ((float)(s >> 9) / (float)(1 << 23) - 0.5f) * 0.25f;
    }
    vl3_error err = {0};
    int rc = vl3_visual_tokens_from_parts(&b, &m, items, 2, rows, dim, VL3_VT_DTYPE_F32, ret,
                                          &err);
    free(rows);
    return rc;
}

static int vt_equal(const vl3_visual_tokens *a, const vl3_visual_tokens *b)
{
    ASSERT_EQ(a->n_items, b->n_items);
    ASSERT_EQ(a->dtype, b->dtype);
    ASSERT_EQ(a->n_rows, b->n_rows);
    ASSERT_EQ(a->dim, b->dim);
    ASSERT_EQ(a->n_patches, b->n_patches);
    ASSERT_EQ(a->mask.n_tokens, b->mask.n_tokens);
    ASSERT_EQ(a->mask.n_kept, b->mask.n_kept);
    ASSERT_EQ(a->mask.n_frames, b->mask.n_frames);
    ASSERT_MEM_EQ(a->grids, b->grids, sizeof(*a->grids) * a->n_items);
    ASSERT_MEM_EQ(a->resized_hw, b->resized_hw, sizeof(int) * 2 * a->n_items);
    ASSERT_MEM_EQ(a->item_frames, b->item_frames, sizeof(int) * a->n_items);
    ASSERT_MEM_EQ(a->is_video, b->is_video, a->n_items);
    ASSERT_MEM_EQ(a->has_timestamps, b->has_timestamps, a->n_items);
    ASSERT_MEM_EQ(a->timestamps, b->timestamps, sizeof(double) * a->mask.n_frames);
    ASSERT_MEM_EQ(a->mask.keep, b->mask.keep, a->mask.n_tokens);
    ASSERT_MEM_EQ(a->mask.kept_per_frame, b->mask.kept_per_frame, sizeof(int) * a->mask.n_frames);
    ASSERT_MEM_EQ(a->mask.total_per_frame, b->mask.total_per_frame,
                  sizeof(int) * a->mask.n_frames);
    ASSERT_MEM_EQ(a->rows, b->rows, sizeof(float) * a->n_rows * a->dim);
    return 0;
}

TEST(vt_roundtrip)
{
    vl3_visual_tokens vt = {0};
    ASSERT_OK(make_vt(&vt, 40)); /* 45 frames: several chunks at 4 KiB */
    ASSERT_GT(vt.n_rows, 100);
    vl3_error err = {0};
    size_t chunks[] = {4096, 1 << 20};
    for (int codec = 0; codec < VL3_VT_CODEC_COUNT; codec++)
        for (int c = 0; c < 2; c++) {
            vl3_vt_encode_params p;
            vl3_vt_encode_params_default(&p);
            p.codec = (enum vl3_vt_codec)codec;
            p.chunk_bytes = chunks[c];
            uint8_t *buf = NULL;
            size_t len = 0;
            vl3_vt_encode_stats st;
            ASSERT_OK_E(vl3_visual_tokens_encode(&vt, &p, &buf, &len, &st, &err), &err);
            ASSERT_EQ(st.out_bytes, len);
            ASSERT_EQ(st.row_bytes, (size_t)vt.n_rows * vt.dim * 4);
            if (c == 0) {
                ASSERT_GT(st.n_chunks, 3);
            } else {
                ASSERT_EQ(st.n_chunks, 2);
            }
            if (codec == VL3_VT_CODEC_AUTO) {
                ASSERT_GT(st.plain_bytes, 0);
                ASSERT_GT(st.byteplane_bytes, 0);
            }
            vl3_visual_tokens back = {0};
            ASSERT_OK_E(vl3_visual_tokens_decode(buf, len, &back, &err), &err);
            if (vt_equal(&vt, &back))
                return 1;
            /* a second encoding of the decoded object is byte-identical */
            uint8_t *buf2 = NULL;
            size_t len2 = 0;
            ASSERT_OK(vl3_visual_tokens_encode(&back, &p, &buf2, &len2, NULL, &err));
            ASSERT_EQ(len2, len);
            ASSERT_MEM_EQ(buf2, buf, len);
            free(buf2);
            vl3_visual_tokens_deinit(&back);
            free(buf);
        }
    vl3_visual_tokens_deinit(&vt);
    return 0;
}

TEST(vt_corruption)
{
    vl3_visual_tokens vt = {0};
    ASSERT_OK(make_vt(&vt, 10));
    vl3_error err = {0};
    vl3_vt_encode_params p;
    vl3_vt_encode_params_default(&p);
    p.chunk_bytes = 4096;
    uint8_t *buf = NULL;
    size_t len = 0;
    ASSERT_OK(vl3_visual_tokens_encode(&vt, &p, &buf, &len, NULL, &err));
    /* every byte of the entry, flipped one at a time: always an error, never rows */
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit += 7) {
            buf[i] ^= (uint8_t)(1u << bit);
            vl3_visual_tokens back = {0};
            int rc = vl3_visual_tokens_decode(buf, len, &back, &err);
            buf[i] ^= (uint8_t)(1u << bit);
            if (rc != VL3_E_FORMAT)
                TEST__FAIL("byte %zu bit %d flipped: decode returned %d", i, bit, rc);
            ASSERT(back.rows == NULL);
        }
    /* every truncation, and a trailing extra byte */
    for (size_t n = 0; n < len; n++) {
        vl3_visual_tokens back = {0};
        ASSERT_EQ(vl3_visual_tokens_decode(buf, n, &back, &err), VL3_E_FORMAT);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    vl3_visual_tokens back = {0};
    ASSERT_EQ(vl3_visual_tokens_decode(longer, len + 1, &back, &err), VL3_E_FORMAT);
    /* intact: decodes */
    ASSERT_OK(vl3_visual_tokens_decode(buf, len, &back, &err));
    vl3_visual_tokens_deinit(&back);
    free(longer);
    free(buf);
    vl3_visual_tokens_deinit(&vt);
    return 0;
}

/* Rows of bf16-representable values (as a bf16 model holds them): byte planes win clearly,
 * because the two low bytes of every f32 are zero. */
TEST(vt_byteplane_wins_on_bf16_rows)
{
    vl3_visual_tokens vt = {0};
    ASSERT_OK(make_vt(&vt, 40));
    uint32_t *u = vt.rows;
    for (int64_t i = 0; i < vt.n_rows * vt.dim; i++)
        u[i] &= 0xffff0000u;
    vl3_error err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    vl3_vt_encode_stats st;
    ASSERT_OK(vl3_visual_tokens_encode(&vt, NULL, &buf, &len, &st, &err));
    ASSERT_LT(st.byteplane_bytes, st.plain_bytes);
    ASSERT_LT(st.byteplane_bytes * 2, st.row_bytes + 64);
    ASSERT_LT(len, st.raw_bytes);
    vl3_visual_tokens back = {0};
    ASSERT_OK(vl3_visual_tokens_decode(buf, len, &back, &err));
    ASSERT_MEM_EQ(back.rows, vt.rows, (size_t)vt.n_rows * vt.dim * 4);
    vl3_visual_tokens_deinit(&back);
    free(buf);
    vl3_visual_tokens_deinit(&vt);
    return 0;
}

TEST(vt_bad_arguments)
{
    vl3_visual_tokens vt = {0};
    vl3_error err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    ASSERT_EQ(vl3_visual_tokens_encode(&vt, NULL, &buf, &len, NULL, &err), -EINVAL);
    ASSERT_EQ(vl3_visual_tokens_decode(NULL, 0, &vt, &err), -EINVAL);
    ASSERT_EQ(vl3_visual_tokens_decode("VL3VTOK1", 8, &vt, &err), VL3_E_FORMAT);
    vl3_visual_tokens_deinit(NULL);
    vl3_visual_tokens_deinit(&vt);
    return 0;
}

static vl3_model *load_tiny_prec(const char *name, uint64_t seed, int native, const char *prec)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", test_tmpdir(), name);
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.native = native;
    tp.seed = seed;
    vl3_error err = {0};
    if (vl3_model_write_tiny(dir, &tp, &err) < 0)
        return NULL;
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.no_backend = prec == NULL;
    if (prec)
        setenv("VL3_PRECISION", prec, 1);
    vl3_model *m = NULL;
    return vl3_model_load(&mp, &m, &err) < 0 ? NULL : m;
}

static vl3_model *load_tiny(const char *name, uint64_t seed, int native)
{
    return load_tiny_prec(name, seed, native, NULL);
}

/* A real request on a tiny model in a precision (f32 or bf16 backend): the decoded object
 * rebuilds the same prompt (ids, text, positions) with no media, and carries the same
 * pre-projector rows (bf16 in bf16 precision, f32 in f32); projected again (by the encoder or by
 * a projector-only one) they give the cold path's projector rows bit for bit. */
static int real_request(int native, const char *prec)
{
    static uint8_t px[3][84 * 112 * 3];
    uint32_t s = 11;
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < sizeof(px[0]); i++)
            px[t][i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 23);
    memcpy(px[2], px[1], sizeof(px[0]));
    char name[64];
    snprintf(name, sizeof(name), "vt%c%s", native ? 'n' : 'r', prec);
    vl3_model *m = load_tiny_prec(name, 3, native, prec);
    ASSERT(m != NULL);
    int bf16 = strcmp(prec, "bf16") == 0;
    vl3_error err = {0};
    vl3_vision *v = NULL;
    ASSERT_OK_E(vl3_vision_new(m, 1, &v, &err), &err);
    vl3_image fr[3] = {{px[0], 112, 84, 336}, {px[1], 112, 84, 336}, {px[2], 112, 84, 336}};
    double ts[3] = {0.0, 1.0, 2.0};
    vl3_vision_item item = {fr, 3, ts, 1, 0};
    vl3_mm_params p;
    vl3_mm_params_default(m, &p);
    p.prompt.user_text = "What happens?";
    p.prompt.add_generation_prompt = 1;
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    vl3_mm_input mm = {0};
    ASSERT_OK_E(vl3_mm_prepare(v, tok, &p, &item, 1, &mm, &err), &err);
    ASSERT_LT(mm.mask.n_kept, mm.mask.n_tokens); /* DiffFP pruned the repeated frame */
    vl3_visual_tokens vt = {0}, back = {0};
    ASSERT_OK_E(vl3_visual_tokens_from_mm(&mm, &item, 1, &vt, &err), &err);
    uint8_t *buf = NULL;
    size_t len = 0;
    ASSERT_OK(vl3_visual_tokens_encode(&vt, NULL, &buf, &len, NULL, &err));
    ASSERT_OK_E(vl3_visual_tokens_decode(buf, len, &back, &err), &err);
    vl3_vision_item it;
    vl3_visual_tokens_items(&back, &it);
    vl3_prompt pr = {0};
    ASSERT_OK_E(vl3_prompt_build(&p.prompt, tok, &it, back.grids, 1, &back.mask, &pr, &err),
                &err);
    ASSERT_EQ(pr.n_ids, mm.prompt.n_ids);
    ASSERT_MEM_EQ(pr.ids, mm.prompt.ids, sizeof(int32_t) * pr.n_ids);
    ASSERT_EQ(pr.n_visual, mm.prompt.n_visual);
    ASSERT_MEM_EQ(pr.visual_pos, mm.prompt.visual_pos, sizeof(int64_t) * pr.n_visual);
    ASSERT_STR_EQ(pr.text, mm.prompt.text);
    ASSERT_STR_CONTAINS(pr.text, "Time 2.0s");
    /* the rows before the projector, 32 wide (the tiny encoder), in the precision's dtype */
    ASSERT_EQ(vl3_vision_pre_bf16(v), bf16);
    ASSERT_EQ(mm.pre_bf16, bf16);
    ASSERT_EQ(back.dim, vl3_vision_pre_dim(v));
    ASSERT_EQ(back.dim, 32);
    ASSERT_EQ(back.dtype, bf16 ? VL3_VT_DTYPE_BF16 : VL3_VT_DTYPE_F32);
    ASSERT(back.visual == NULL); /* not serialized */
    float *pre = malloc(sizeof(float) * back.n_rows * back.dim);
    vl3_visual_tokens_pre_f32(&back, pre);
    ASSERT_MEM_EQ(pre, mm.pre, sizeof(float) * back.n_rows * back.dim);
    if (bf16) { /* the encoder rounded them: every value is a bf16 */
        uint32_t low = 0;
        for (int64_t i = 0; i < back.n_rows * back.dim; i++) {
            uint32_t u;
            memcpy(&u, &pre[i], 4);
            low |= u & 0xffffu;
        }
        ASSERT_EQ(low, 0);
    }
    free(pre);
    /* projected: the cold path's rows, bit for bit, by the encoder and by the projector alone */
    ASSERT_OK_E(vl3_visual_tokens_project(v, &back, &err), &err);
    ASSERT_EQ(back.hidden, mm.hidden);
    ASSERT_MEM_EQ(back.visual, mm.visual, sizeof(float) * back.n_rows * mm.hidden);
    ASSERT_MEM_EQ(vt.visual, mm.visual, sizeof(float) * back.n_rows * mm.hidden);
    vl3_vision *pj = NULL;
    ASSERT_OK_E(vl3_vision_new_projector(m, &pj, &err), &err);
    memset(back.visual, 0, sizeof(float) * back.n_rows * mm.hidden);
    ASSERT_OK_E(vl3_visual_tokens_project(pj, &back, &err), &err);
    ASSERT_MEM_EQ(back.visual, mm.visual, sizeof(float) * back.n_rows * mm.hidden);
    float one_row[32];
    ASSERT(vl3_vision_encode_pre(pj, &mm.batch, &mm.mask, one_row, &err) < 0); /* no encoder */
    vl3_vision_free(pj);
    /* rows of the other dtype do not fit this projector */
    back.dtype = bf16 ? VL3_VT_DTYPE_F32 : VL3_VT_DTYPE_BF16;
    ASSERT_EQ(vl3_visual_tokens_project(v, &back, &err), VL3_E_FORMAT);
    back.dtype = bf16 ? VL3_VT_DTYPE_BF16 : VL3_VT_DTYPE_F32;
    vl3_prompt_deinit(&pr);
    vl3_visual_tokens_deinit(&back);
    vl3_visual_tokens_deinit(&vt);
    free(buf);
    vl3_mm_input_deinit(&mm);
    vl3_vision_free(v);
    vl3_model_free(m);
    return 0;
}

TEST(vt_real_request_remote_f32) { return real_request(0, "f32"); }
TEST(vt_real_request_native_f32) { return real_request(1, "f32"); }
TEST(vt_real_request_remote_bf16) { return real_request(0, "bf16"); }
TEST(vt_real_request_native_bf16) { return real_request(1, "bf16"); }

/* bf16 rows: held as bf16 only when they are bf16 values; the round trip is exact. */
TEST(vt_bf16_rows)
{
    vl3_vision_grid g = {2, 4, 4, 2};
    int hw[2] = {56, 56};
    vl3_pixel_batch b = {NULL, 32, 588, 1, &g, hw};
    double ts[2] = {0, 1};
    vl3_image dummy = {0};
    vl3_vision_item item = {&dummy, 2, ts, 1, 0};
    float rows[8 * 24];
    uint32_t s = 5;
    for (int i = 0; i < 8 * 24; i++) {
        s = s * 1103515245u + 12345u;
        uint32_t u = s & 0xffff0000u;
        memcpy(&rows[i], &u, 4);
        if (!isfinite(rows[i]))
            rows[i] = 1.5f;
    }
    vl3_visual_tokens vt = {0}, back = {0};
    vl3_error err = {0};
    ASSERT_OK_E(vl3_visual_tokens_from_parts(&b, NULL, &item, 1, rows, 24, VL3_VT_DTYPE_BF16,
                                             &vt, &err), &err);
    ASSERT_EQ(vt.n_rows, 8);
    uint8_t *buf = NULL;
    size_t len = 0;
    vl3_vt_encode_stats st;
    ASSERT_OK(vl3_visual_tokens_encode(&vt, NULL, &buf, &len, &st, &err));
    ASSERT_EQ(st.row_bytes, (size_t)8 * 24 * 2); /* two bytes per element */
    ASSERT_OK_E(vl3_visual_tokens_decode(buf, len, &back, &err), &err);
    ASSERT_EQ(back.dtype, VL3_VT_DTYPE_BF16);
    float out[8 * 24];
    vl3_visual_tokens_pre_f32(&back, out);
    ASSERT_MEM_EQ(out, rows, sizeof(rows));
    vl3_visual_tokens_deinit(&back);
    vl3_visual_tokens_deinit(&vt);
    free(buf);
    /* a value that is not a bf16 is refused, not rounded */
    rows[77] = 1.0f + 1.0f / 1024.0f / 1024.0f;
    ASSERT_EQ(vl3_visual_tokens_from_parts(&b, NULL, &item, 1, rows, 24, VL3_VT_DTYPE_BF16, &vt,
                                           &err), -EINVAL);
    return 0;
}

TEST(vt_vision_identity)
{
    vl3_model *a = load_tiny("ida", 3, 0), *a2 = load_tiny("ida2", 3, 0);
    vl3_model *b = load_tiny("idb", 4, 0), *n = load_tiny("idn", 3, 1);
    ASSERT(a && a2 && b && n);
    char ha[33], ha2[33], hb[33], hn[33];
    ASSERT_OK(vl3_model_vision_identity(a, ha));
    ASSERT_OK(vl3_model_vision_identity(a2, ha2));
    ASSERT_OK(vl3_model_vision_identity(b, hb));
    ASSERT_OK(vl3_model_vision_identity(n, hn));
    ASSERT_EQ(strlen(ha), 32);
    ASSERT_STR_EQ(ha, ha2);         /* same bytes in another directory: same identity */
    ASSERT(strcmp(ha, hb) != 0);    /* other weights */
    ASSERT(strcmp(ha, hn) != 0);    /* other layout */
    vl3_model_free(a);
    vl3_model_free(a2);
    vl3_model_free(b);
    vl3_model_free(n);
    return 0;
}
