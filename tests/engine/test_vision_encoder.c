/* test_vision_encoder.c: the whole vision encoder (spec §4) on tiny random checkpoints of both
 * layouts (written by vl3_model_write_tiny) against a straightforward double-precision
 * implementation written here from the spec (naive per-frame attention, RoPE from its formula,
 * raster-position 2x2 means, erf GELU projector). Also: batched encoding of several items equals
 * encoding them one by one, the run is deterministic, and the DiffFP mask selects exactly the
 * kept rows of the unpruned output. */
#include <math.h>
#include <string.h>

#include "model.h"
#include "test.h"
#include "vl3/engine.h"

static double tv(const vl3__tensor *t, int64_t i)
{
    const uint8_t *p = t->data;
    if (t->dtype == VL3__DTYPE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t b;
    memcpy(&b, p + 2 * i, 2);
    uint32_t u = (uint32_t)b << 16; /* bf16 (what the tiny writer stores) */
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void lin(const double *x, const vl3__tensor *w, const vl3__tensor *b, double *y, int64_t P,
                int in, int out)
{
    for (int64_t p = 0; p < P; p++)
        for (int o = 0; o < out; o++) {
            double s = b ? tv(b, o) : 0;
            for (int i = 0; i < in; i++)
                s += x[p * in + i] * tv(w, (int64_t)o * in + i);
            y[p * out + o] = s;
        }
}

static void ln(const double *x, const vl3__tensor *w, const vl3__tensor *b, double *y, int64_t P,
               int C)
{
    for (int64_t p = 0; p < P; p++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++)
            m += x[p * C + i];
        m /= C;
        for (int i = 0; i < C; i++)
            v += (x[p * C + i] - m) * (x[p * C + i] - m);
        v /= C;
        for (int i = 0; i < C; i++)
            y[p * C + i] = (x[p * C + i] - m) / sqrt(v + 1e-6) * tv(w, i) + tv(b, i);
    }
}

static void rope(double *x, int r, int c, int H, int D)
{
    int half = D / 2, q = D / 4;
    for (int h = 0; h < H; h++) {
        double *v = x + h * D, o[1024];
        for (int i = 0; i < D; i++) {
            int j = i % half, k = j % q;
            double ang = (j < q ? r : c) * pow(10000.0, -2.0 * k / half);
            double rot = i < half ? -v[i + half] : v[i - half];
            o[i] = v[i] * cos(ang) + rot * sin(ang);
        }
        memcpy(v, o, sizeof(double) * D);
    }
}

/* Reference encoder: returns all merged-token projector rows (n_tok x Dl). */
static double *ref_encode(const vl3_model *m, const vl3_pixel_batch *b, int64_t *ret_ntok)
{
    const struct vl3__weights *w = &m->w;
    int C = m->vision.hidden, H = m->vision.n_heads, D = C / H, I = m->vision.intermediate;
    int K = 588, Dl = m->llm.hidden;
    int64_t P = b->n_patches;
    double *h = calloc(P * C, 8), *x = calloc(P * C, 8), *q = calloc(P * C, 8),
           *k = calloc(P * C, 8), *v = calloc(P * C, 8), *a = calloc(P * C, 8),
           *f = calloc(P * I, 8), *xin = calloc(P * K, 8);
    int *pr = calloc(P, 4), *pc = calloc(P, 4), *blk = calloc(P, 4);
    for (int64_t i = 0; i < P * K; i++) { /* the model's bf16 cast of pixel_values */
        float pv = b->pixel_values[i];
        uint32_t u;
        memcpy(&u, &pv, 4);
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        memcpy(&pv, &u, 4);
        xin[i] = pv;
    }
    int64_t row = 0, fr = 0, ntok = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        for (int t = 0; t < g->t; t++, fr++) {
            for (int p = 0; p < g->h * g->w; p++, row++) {
                /* decode p = ((bh*(w/m) + bw)*m + mh)*m + mw */
                int mm = g->merge, mw = p % mm, mh = (p / mm) % mm, blkid = p / (mm * mm);
                int bw = blkid % (g->w / mm), bh = blkid / (g->w / mm);
                pr[row] = bh * mm + mh;
                pc[row] = bw * mm + mw;
                blk[row] = (int)fr;
            }
            ntok += (g->h / g->merge) * (g->w / g->merge);
        }
    }
    lin(xin, &w->patch_w, &w->patch_b, h, P, K, C);
    for (int l = 0; l < m->vision.n_layers; l++) {
        const struct vl3__vision_layer *L = &w->vlayers[l];
        ln(h, &L->ln1_w, &L->ln1_b, x, P, C);
        lin(x, &L->wq, &L->bq, q, P, C, C);
        lin(x, &L->wk, &L->bk, k, P, C, C);
        lin(x, &L->wv, &L->bv, v, P, C, C);
        for (int64_t p = 0; p < P; p++) {
            rope(q + p * C, pr[p], pc[p], H, D);
            rope(k + p * C, pr[p], pc[p], H, D);
        }
        for (int64_t i = 0; i < P; i++)
            for (int hh = 0; hh < H; hh++) {
                double mx = -1e300, sum = 0, *s = malloc(sizeof(double) * P);
                for (int64_t j = 0; j < P; j++) {
                    s[j] = -INFINITY;
                    if (blk[j] != blk[i])
                        continue;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += q[i * C + hh * D + e] * k[j * C + hh * D + e];
                    s[j] = d / sqrt(D);
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < P; j++)
                    sum += (s[j] = blk[j] == blk[i] ? exp(s[j] - mx) : 0);
                for (int e = 0; e < D; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < P; j++)
                        acc += s[j] / sum * v[j * C + hh * D + e];
                    a[i * C + hh * D + e] = acc;
                }
                free(s);
            }
        lin(a, &L->wo, &L->bo, x, P, C, C);
        for (int64_t i = 0; i < P * C; i++)
            h[i] += x[i];
        ln(h, &L->ln2_w, &L->ln2_b, x, P, C);
        lin(x, &L->fc1_w, &L->fc1_b, f, P, C, I);
        for (int64_t i = 0; i < P * I; i++)
            f[i] = 0.5 * f[i] * (1 + tanh(sqrt(2 / M_PI) * (f[i] + 0.044715 * pow(f[i], 3))));
        lin(f, &L->fc2_w, &L->fc2_b, x, P, I, C);
        for (int64_t i = 0; i < P * C; i++)
            h[i] += x[i];
    }
    ln(h, &w->post_ln_w, &w->post_ln_b, x, P, C);
    /* downsample by raster position: token (frame, r/m, c/m) = mean over its m*m patches */
    double *y = calloc(ntok * C, 8);
    int64_t tok0 = 0;
    row = 0;
    fr = 0;
    for (int i = 0; i < b->n_items; i++) {
        const vl3_vision_grid *g = &b->grids[i];
        int mm = g->merge, tw = g->w / mm;
        for (int t = 0; t < g->t; t++) {
            for (int p = 0; p < g->h * g->w; p++, row++) {
                int64_t tok = tok0 + (pr[row] / mm) * tw + pc[row] / mm;
                for (int c = 0; c < C; c++)
                    y[tok * C + c] += x[row * C + c] / (mm * mm);
            }
            tok0 += (g->h / mm) * tw;
        }
    }
    double *z = calloc(ntok * Dl, 8), *o = calloc(ntok * Dl, 8);
    lin(y, &w->proj_w1, &w->proj_b1, z, ntok, C, Dl);
    for (int64_t i = 0; i < ntok * Dl; i++)
        z[i] = 0.5 * z[i] * (1 + erf(z[i] / sqrt(2.0)));
    lin(z, &w->proj_w2, &w->proj_b2, o, ntok, Dl, Dl);
    free(h), free(x), free(q), free(k), free(v), free(a), free(f), free(xin), free(pr), free(pc);
    free(blk), free(y), free(z);
    *ret_ntok = ntok;
    return o;
}

static vl3_model *tiny(int native)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tiny%d", test_tmpdir(), native);
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.native = native;
    tp.seed = 7 + native;
    vl3_error err = {0};
    if (vl3_model_write_tiny(dir, &tp, &err) < 0) {
        fprintf(stderr, "write tiny: %s\n", err.msg);
        return NULL;
    }
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.no_backend = 1;
    vl3_model *m = NULL;
    if (vl3_model_load(&mp, &m, &err) < 0) {
        fprintf(stderr, "load tiny: %s\n", err.msg);
        return NULL;
    }
    return m;
}

/* Three items: an image (56x42), a 3-frame video (56x56, frame 2 = frame 1) and another image. */
static uint8_t pix_a[42 * 56 * 3], pix_v[3][56 * 56 * 3], pix_c[30 * 70 * 3];
static vl3_image img_a = {pix_a, 56, 42, 168}, img_c = {pix_c, 70, 30, 210};
static vl3_image vid[3] = {{pix_v[0], 56, 56, 168}, {pix_v[1], 56, 56, 168}, {pix_v[2], 56, 56, 168}};
static double vts[3] = {0, 1, 2};

static void fill(void)
{
    uint32_t s = 99;
    for (size_t i = 0; i < sizeof(pix_a); i++)
        pix_a[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    for (size_t i = 0; i < sizeof(pix_c); i++)
        pix_c[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < sizeof(pix_v[0]); i++)
            pix_v[t][i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    memcpy(pix_v[2], pix_v[1], sizeof(pix_v[0]));
    for (int i = 0; i < 300; i++)
        pix_v[2][i] ^= 0x55; /* frame 2 differs from frame 1 only in the top rows */
}

static int check_layout(int native)
{
    fill();
    vl3_model *m = tiny(native);
    ASSERT(m != NULL);
    vl3_error err = {0};
    vl3_vision *v = NULL;
    ASSERT_OK_E(vl3_vision_new(m, 1, &v, &err), &err);
    int Dl = vl3_vision_out_dim(v);
    ASSERT_EQ(Dl, m->llm.hidden);

    vl3_vision_item items[3] = {{&img_a, 1, NULL, 0, 0}, {vid, 3, vts, 1, 0}, {&img_c, 1, NULL, 0, 0}};
    vl3_preprocess_params pp;
    vl3_preprocess_params_from_model(m, &pp);
    vl3_pixel_batch b = {0};
    ASSERT_OK_E(vl3_vision_preprocess(&pp, items, 3, &b, &err), &err);
    int64_t ntok = 0;
    double *ref = ref_encode(m, &b, &ntok);
    float *out = malloc(sizeof(float) * ntok * Dl), *out2 = malloc(sizeof(float) * ntok * Dl);
    ASSERT_OK_E(vl3_vision_encode(v, &b, NULL, out, &err), &err);
    double maxerr = 0, maxref = 0;
    for (int64_t i = 0; i < ntok * Dl; i++) {
        maxerr = fmax(maxerr, fabs(out[i] - ref[i]));
        maxref = fmax(maxref, fabs(ref[i]));
    }
    printf("layout %d: %lld patches, %lld tokens, max |err| %.3g (max |ref| %.3g)\n", native,
           (long long)b.n_patches, (long long)ntok, maxerr, maxref);
    ASSERT(maxref > 1e-3);
    ASSERT_LE(maxerr, 1e-5 * maxref); /* f32 vs double over 2 layers */

    /* without the bf16 input cast the rows differ (the cast is really applied) */
    vl3_vision_set_bf16_input(v, 0);
    ASSERT_OK(vl3_vision_encode(v, &b, NULL, out2, &err));
    vl3_vision_set_bf16_input(v, 1);
    ASSERT(memcmp(out, out2, sizeof(float) * ntok * Dl) != 0);

    /* deterministic */
    ASSERT_OK(vl3_vision_encode(v, &b, NULL, out2, &err));
    ASSERT_MEM_EQ(out, out2, sizeof(float) * ntok * Dl);

    /* batched == one by one (each item preprocessed with the same target size) */
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        vl3_pixel_batch one = b;
        int64_t start = 0, toks = 0;
        for (int j = 0; j < i; j++)
            start += (int64_t)b.grids[j].t * b.grids[j].h * b.grids[j].w;
        one.pixel_values = b.pixel_values + start * b.patch_dim;
        one.n_patches = (int64_t)b.grids[i].t * b.grids[i].h * b.grids[i].w;
        one.n_items = 1;
        one.grids = &b.grids[i];
        toks = (int64_t)b.grids[i].t * vl3_vision_grid_tokens_per_frame(&b.grids[i]);
        ASSERT_OK_E(vl3_vision_encode(v, &one, NULL, out2, &err), &err);
        for (int64_t e = 0; e < toks * Dl; e++)
            ASSERT_NEAR(out2[e], out[off * Dl + e], 1e-5 * (1 + fabs(out[off * Dl + e])));
        off += toks;
    }
    ASSERT_EQ(off, ntok);

    /* DiffFP: the pruned output is exactly the kept rows of the full output */
    vl3_difffp_params dp;
    vl3_difffp_params_default(&dp);
    vl3_token_mask mask = {0};
    ASSERT_OK(vl3_difffp_mask(&dp, &b, &mask, &err));
    ASSERT_LT(mask.n_kept, mask.n_tokens); /* frame 2 of the video loses tokens */
    ASSERT_OK_E(vl3_vision_encode(v, &b, &mask, out2, &err), &err);
    int64_t kept = 0;
    for (int64_t t = 0; t < ntok; t++)
        if (mask.keep[t]) {
            ASSERT_MEM_EQ(out2 + kept * Dl, out + t * Dl, sizeof(float) * Dl);
            kept++;
        }
    ASSERT_EQ(kept, mask.n_kept);

    /* bad input */
    vl3_pixel_batch bad = b;
    bad.n_patches -= 1;
    ASSERT(vl3_vision_encode(v, &bad, NULL, out2, &err) < 0);
    ASSERT_STR_CONTAINS(err.msg, "patches");

    vl3_token_mask_deinit(&mask);
    free(out), free(out2), free(ref);
    vl3_pixel_batch_deinit(&b);
    vl3_vision_free(v);
    vl3_model_free(m);
    return 0;
}

TEST(encoder_tiny_remote_vs_double)
{
    return check_layout(0);
}

TEST(encoder_tiny_native_vs_double)
{
    return check_layout(1);
}
