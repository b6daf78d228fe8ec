/* test_llm.c: the Qwen2 decoder (llm.c, ctx.c) on tiny random models against a double-precision
 * implementation of the same layers written here (embedding, RMSNorm, q/k/v with bias, rotate-half
 * RoPE, causal GQA softmax attention, o_proj, SwiGLU, final norm, tied or separate lm_head), and
 * the equivalences the KV cache and batching must keep: chunked prefill = one prefill,
 * prefill-then-decode = full recompute, batched decode = one sequence at a time. Tolerance:
 * relative L2 error of the logits <= 1e-5 (f32 compute against double gives ~1e-7..1e-6). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "model.h"
#include "test.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define REL_L2_TOL 1e-5

int vl3__model_random(const vl3_llm_shape *sh, uint64_t seed, int alias_layers, void **ret_host,
                      vl3_model **ret, vl3_error *reterr);

static vl3_llm_shape tiny_shape(int tied)
{
    return (vl3_llm_shape){.hidden = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                           .head_dim = 16, .intermediate = 96, .vocab = 97,
                           .max_positions = 256, .rope_theta = 10000.f, .rms_eps = 1e-6f,
                           .tied = tied};
}

struct tmodel {
    vl3_model *m;
    void *host;
};

static int tmodel_make(struct tmodel *t, const vl3_llm_shape *sh, uint64_t seed)
{
    vl3_error err = {0};
    int r = vl3__model_random(sh, seed, 0, &t->host, &t->m, &err);
    if (r < 0)
        return r;
    vl3_model_params p = vl3_model_params_default();
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = 2;
    r = vl3__model_backend_init(t->m, &p, &err);
    if (r < 0)
        fprintf(stderr, "backend init: %s\n", vl3_error_text(&err, r));
    return r;
}

static void tmodel_free(struct tmodel *t)
{
    vl3_model_free(t->m);
    free(t->host);
}

/* ---- double-precision reference ---------------------------------------------------------- */

static double bf(const vl3__tensor *t, size_t i)
{
    uint32_t u = (uint32_t)((const uint16_t *)t->data)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void ref_rmsnorm(double *y, const double *x, const vl3__tensor *w, int C, double eps)
{
    double ss = 0;
    for (int i = 0; i < C; i++)
        ss += x[i] * x[i];
    double inv = 1 / sqrt(ss / C + eps);
    for (int i = 0; i < C; i++)
        y[i] = bf(w, i) * x[i] * inv;
}

/* y (out) = W (out, in) x + b */
static void ref_linear(double *y, const double *x, const vl3__tensor *w, const vl3__tensor *b,
                       int in, int out)
{
    for (int o = 0; o < out; o++) {
        double s = b ? bf(b, o) : 0;
        for (int i = 0; i < in; i++)
            s += bf(w, (size_t)o * in + i) * x[i];
        y[o] = s;
    }
}

static void ref_rope(double *v, int nh, int D, int pos, double theta)
{
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < D / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / D), *p = v + h * D;
            double x0 = p[i], x1 = p[i + D / 2];
            p[i] = x0 * cos(a) - x1 * sin(a);
            p[i + D / 2] = x1 * cos(a) + x0 * sin(a);
        }
}

/* Logits (n, V) of every position of ids (no cache: the whole sequence at once). vis_rows (may be
 * NULL): rows (n_vis, C) replacing the embeddings at positions vis_idx. */
static double *ref_forward(const vl3_model *m, const int32_t *ids, int n, const float *vis_rows,
                           const int64_t *vis_idx, int n_vis)
{
    const struct vl3__llm_hparams *hp = &m->llm;
    int C = hp->hidden, H = hp->n_heads, Hkv = hp->n_kv_heads, D = hp->head_dim;
    int I = hp->intermediate, V = hp->vocab, grp = H / Hkv;
    double *x = calloc((size_t)n * C, 8), *xn = malloc(8 * (size_t)C);
    double *q = malloc(8 * (size_t)n * H * D), *k = malloc(8 * (size_t)n * Hkv * D);
    double *v = malloc(8 * (size_t)n * Hkv * D), *att = malloc(8 * (size_t)H * D);
    double *tmp = malloc(8 * (size_t)(C > 2 * I ? C : 2 * I)), *p = malloc(8 * (size_t)n);
    double *g = malloc(8 * (size_t)I), *u = malloc(8 * (size_t)I);
    double *logits = malloc(8 * (size_t)n * V);
    for (int t = 0; t < n; t++)
        for (int c = 0; c < C; c++)
            x[t * C + c] = bf(&m->w.embed, (size_t)ids[t] * C + c);
    for (int j = 0; j < n_vis; j++)
        for (int c = 0; c < C; c++)
            x[vis_idx[j] * C + c] = vis_rows[(size_t)j * C + c];
    for (int l = 0; l < hp->n_layers; l++) {
        const struct vl3__llm_layer *L = &m->w.layers[l];
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xn, x + t * C, &L->attn_norm, C, hp->rms_eps);
            ref_linear(q + t * H * D, xn, &L->wq, &L->bq, C, H * D);
            ref_linear(k + t * Hkv * D, xn, &L->wk, &L->bk, C, Hkv * D);
            ref_linear(v + t * Hkv * D, xn, &L->wv, &L->bv, C, Hkv * D);
            ref_rope(q + t * H * D, H, D, t, hp->rope_theta);
            ref_rope(k + t * Hkv * D, Hkv, D, t, hp->rope_theta);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < H; h++) {
                int kh = h / grp;
                double mx = -INFINITY, z = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += q[(t * H + h) * D + d] * k[(j * Hkv + kh) * D + d];
                    p[j] = s / sqrt(D);
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= t; j++)
                    z += p[j] = exp(p[j] - mx);
                for (int d = 0; d < D; d++) {
                    double s = 0;
                    for (int j = 0; j <= t; j++)
                        s += p[j] / z * v[(j * Hkv + kh) * D + d];
                    att[h * D + d] = s;
                }
            }
            ref_linear(tmp, att, &L->wo, NULL, H * D, C);
            for (int c = 0; c < C; c++)
                x[t * C + c] += tmp[c];
        }
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xn, x + t * C, &L->ffn_norm, C, hp->rms_eps);
            ref_linear(g, xn, &L->w_gate, NULL, C, I);
            ref_linear(u, xn, &L->w_up, NULL, C, I);
            for (int i = 0; i < I; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_linear(tmp, g, &L->w_down, NULL, I, C);
            for (int c = 0; c < C; c++)
                x[t * C + c] += tmp[c];
        }
    }
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(xn, x + t * C, &m->w.norm, C, hp->rms_eps);
        ref_linear(logits + (size_t)t * V, xn, &m->w.lm_head, NULL, C, V);
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(tmp), free(p), free(g),
        free(u);
    return logits;
}

static double rel_l2(const float *got, const double *want, int n)
{
    double e = 0, d = 0;
    for (int i = 0; i < n; i++) {
        e += (got[i] - want[i]) * (got[i] - want[i]);
        d += want[i] * want[i];
    }
    return sqrt(e / d);
}

static double rel_l2_ff(const float *got, const float *want, int n)
{
    double e = 0, d = 0;
    for (int i = 0; i < n; i++) {
        e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        d += (double)want[i] * want[i];
    }
    return sqrt(e / d);
}

static void make_ids(int32_t *ids, int n, int V, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)V);
    }
}

/* ---- cases ------------------------------------------------------------------------------- */

TEST(prefill_matches_reference)
{
    for (int tied = 0; tied < 2; tied++) {
        vl3_llm_shape sh = tiny_shape(tied);
        struct tmodel tm;
        ASSERT_OK(tmodel_make(&tm, &sh, 7 + tied));
        int32_t ids[40];
        make_ids(ids, 40, sh.vocab, 3);
        double *want = ref_forward(tm.m, ids, 40, NULL, NULL, 0);
        /* one chunk, and chunks of 7 (n_batch) */
        for (int nb = 0; nb < 2; nb++) {
            vl3_ctx_params cp = vl3_ctx_params_default();
            cp.n_ctx = 64;
            cp.n_batch = nb ? 7 : 64;
            vl3_ctx *ctx;
            vl3_error err = {0};
            ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
            const float *lg;
            ASSERT_OK_E(vl3_prefill(ctx, 0, ids, 40, NULL, &lg, &err), &err);
            double e = rel_l2(lg, want + 39 * sh.vocab, sh.vocab);
            fprintf(stderr, "tied=%d n_batch=%d rel_l2=%.3g\n", tied, cp.n_batch, e);
            ASSERT(e <= REL_L2_TOL);
            ASSERT_EQ(vl3_ctx_seq_len(ctx, 0), 40);
            /* the first-token logits too (a fresh prefill of one token after reset) */
            vl3_ctx_reset(ctx);
            ASSERT_OK_E(vl3_prefill(ctx, 0, ids, 1, NULL, &lg, &err), &err);
            ASSERT(rel_l2(lg, want, sh.vocab) <= REL_L2_TOL);
            vl3_ctx_free(ctx);
        }
        free(want);
        tmodel_free(&tm);
    }
    return 0;
}

TEST(prefill_then_decode_matches_recompute)
{
    vl3_llm_shape sh = tiny_shape(1);
    sh.rope_theta = 1e6f;
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 11));
    int32_t ids[30];
    make_ids(ids, 30, sh.vocab, 5);
    double *want = ref_forward(tm.m, ids, 30, NULL, NULL, 0);
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 30;
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    const float *lg;
    ASSERT_OK_E(vl3_prefill(ctx, 0, ids, 12, NULL, &lg, &err), &err);
    ASSERT(rel_l2(lg, want + 11 * sh.vocab, sh.vocab) <= REL_L2_TOL);
    int seq = 0;
    for (int t = 12; t < 30; t++) {
        ASSERT_OK_E(vl3_decode_step(ctx, &seq, &ids[t], 1, &lg, &err), &err);
        double e = rel_l2(lg, want + (size_t)t * sh.vocab, sh.vocab);
        if (e > REL_L2_TOL)
            TEST__FAIL("decode position %d: rel_l2 %.3g", t, e);
    }
    /* the cache is full now: one more token is refused and nothing changes */
    int r = vl3_decode_step(ctx, &seq, &ids[0], 1, &lg, &err);
    ASSERT_EQ(r, VL3_E_LIMIT);
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 0), 30);
    vl3_ctx_free(ctx);
    free(want);
    tmodel_free(&tm);
    return 0;
}

TEST(batched_decode_matches_single)
{
    vl3_llm_shape sh = tiny_shape(0);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 13));
    enum { B = 3, STEPS = 6 };
    int plen[B] = {5, 17, 1};
    int32_t prompts[B][17], steps[B][STEPS];
    for (int b = 0; b < B; b++) {
        make_ids(prompts[b], plen[b], sh.vocab, 100 + b);
        make_ids(steps[b], STEPS, sh.vocab, 200 + b);
    }
    vl3_error err = {0};
    /* one at a time: a ctx with one slot per sequence run separately */
    float *single = malloc(sizeof(float) * B * STEPS * sh.vocab);
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 32;
    for (int b = 0; b < B; b++) {
        vl3_ctx *ctx;
        ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
        ASSERT_OK_E(vl3_prefill(ctx, 0, prompts[b], plen[b], NULL, NULL, &err), &err);
        int seq = 0;
        for (int s = 0; s < STEPS; s++) {
            const float *lg;
            ASSERT_OK_E(vl3_decode_step(ctx, &seq, &steps[b][s], 1, &lg, &err), &err);
            memcpy(single + ((size_t)b * STEPS + s) * sh.vocab, lg, sizeof(float) * sh.vocab);
        }
        vl3_ctx_free(ctx);
    }
    /* batched: three slots, the batch order permuted (slot 2, 0, 1) */
    cp.n_seq = B;
    vl3_ctx *ctx;
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    for (int b = 0; b < B; b++)
        ASSERT_OK_E(vl3_prefill(ctx, b, prompts[b], plen[b], NULL, NULL, &err), &err);
    int order[B] = {2, 0, 1};
    for (int s = 0; s < STEPS; s++) {
        int32_t tok[B];
        for (int i = 0; i < B; i++)
            tok[i] = steps[order[i]][s];
        const float *lg;
        ASSERT_OK_E(vl3_decode_step(ctx, order, tok, B, &lg, &err), &err);
        for (int i = 0; i < B; i++) {
            double e = rel_l2_ff(lg + (size_t)i * sh.vocab,
                                 single + ((size_t)order[i] * STEPS + s) * sh.vocab, sh.vocab);
            if (e > REL_L2_TOL)
                TEST__FAIL("step %d seq %d: rel_l2 %.3g", s, order[i], e);
        }
    }
    for (int b = 0; b < B; b++)
        ASSERT_EQ(vl3_ctx_seq_len(ctx, b), plen[b] + STEPS);
    /* a sequence twice in one batch, too many sequences, bad ids are refused */
    int dup[2] = {0, 0};
    int32_t t2[4] = {1, 2, 3, 4};
    ASSERT_EQ(vl3_decode_step(ctx, dup, t2, 2, NULL, &err), -EINVAL);
    int four[4] = {0, 1, 2, 3};
    ASSERT_EQ(vl3_decode_step(ctx, four, t2, 4, NULL, &err), -EINVAL);
    int32_t bad = sh.vocab;
    ASSERT_EQ(vl3_decode_step(ctx, four, &bad, 1, NULL, &err), -EINVAL);
    ASSERT_EQ(vl3_prefill(ctx, 3, t2, 1, NULL, NULL, &err), -EINVAL);
    vl3_ctx_free(ctx);
    free(single);
    tmodel_free(&tm);
    return 0;
}

TEST(visual_rows_replace_embeddings)
{
    vl3_llm_shape sh = tiny_shape(1);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 17));
    int32_t ids[20];
    make_ids(ids, 20, sh.vocab, 9);
    int64_t idx[4] = {2, 3, 9, 19};
    float rows[4 * 64];
    for (int i = 0; i < 4 * 64; i++)
        rows[i] = (float)sin(i * 0.37) * 0.8f;
    double *want = ref_forward(tm.m, ids, 20, rows, idx, 4);
    double *plain = ref_forward(tm.m, ids, 20, NULL, NULL, 0);
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 32;
    cp.n_batch = 8; /* the visual rows straddle chunks */
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    vl3_visual_rows vis = {.rows = rows, .index = idx, .n = 4, .dim = 64};
    const float *lg;
    ASSERT_OK_E(vl3_prefill(ctx, 0, ids, 20, &vis, &lg, &err), &err);
    ASSERT(rel_l2(lg, want + 19 * sh.vocab, sh.vocab) <= REL_L2_TOL);
    ASSERT(rel_l2(lg, plain + 19 * sh.vocab, sh.vocab) > 1e-2); /* the rows did matter */
    /* bad visual rows are refused */
    vl3_ctx_reset(ctx);
    vis.dim = 63;
    ASSERT_EQ(vl3_prefill(ctx, 0, ids, 20, &vis, &lg, &err), -EINVAL);
    vis.dim = 64;
    int64_t badidx[4] = {2, 2, 9, 19};
    vis.index = badidx;
    ASSERT_EQ(vl3_prefill(ctx, 0, ids, 20, &vis, &lg, &err), -EINVAL);
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 0), 0);
    vl3_ctx_free(ctx);
    free(want), free(plain);
    tmodel_free(&tm);
    return 0;
}

/* Shared-prefix KV pages: sequences forked from a prefilled prefix (pages shared, the partly
 * filled last page copied on write) give the reference logits of prefix + their own suffix, and
 * the prefix's pages are held once. */
TEST(fork_shares_prefix_pages)
{
    vl3_llm_shape sh = tiny_shape(1);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 29));
    enum { P = 21, S = 9, B = 3 };
    int32_t ids[B][P + S];
    make_ids(ids[0], P + S, sh.vocab, 41);
    for (int b = 1; b < B; b++) {
        memcpy(ids[b], ids[0], sizeof(int32_t) * P);
        make_ids(ids[b] + P, S, sh.vocab, 50 + b);
    }
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 64;
    cp.n_seq = B;
    cp.page_size = 8; /* the prefix ends inside its third page */
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    int free0 = vl3_ctx_free_pages(ctx);
    ASSERT_EQ(free0, B * 8);
    ASSERT_OK_E(vl3_prefill(ctx, 0, ids[0], P, NULL, NULL, &err), &err);
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0 - 3);
    for (int b = 1; b < B; b++)
        ASSERT_OK(vl3_ctx_seq_fork(ctx, 0, b));
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 2), P);
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0 - 3); /* forks take no pages */
    for (int b = B - 1; b >= 0; b--) { /* the forks first: the source's pages must not change */
        const float *lg;
        ASSERT_OK_E(vl3_prefill(ctx, b, ids[b] + P, S, NULL, &lg, &err), &err);
        double *want = ref_forward(tm.m, ids[b], P + S, NULL, NULL, 0);
        double e = rel_l2(lg, want + (size_t)(P + S - 1) * sh.vocab, sh.vocab);
        free(want);
        if (e > REL_L2_TOL)
            TEST__FAIL("sequence %d after the shared prefix: rel_l2 %.3g", b, e);
    }
    /* 3 shared prefix pages (2 full + the copied third), each sequence 2 own pages (its copy of
     * page 3 and page 4) */
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0 - 2 - B * 2);
    vl3_ctx_reset(ctx);
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0);
    ASSERT_EQ(vl3_ctx_seq_fork(ctx, 0, B), -EINVAL);
    vl3_ctx_free(ctx);
    tmodel_free(&tm);
    return 0;
}

/* A sequence that shares only the first P tokens of another that has gone further (fork, then
 * truncate: what the worker's scheduler does for the tasks of one window) gives the reference
 * logits of prefix + its own suffix; the source is unharmed and the pages past P are not held. */
TEST(fork_truncate_shares_part)
{
    vl3_llm_shape sh = tiny_shape(1);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 37));
    enum { P = 13, S = 9 };
    int32_t a[P + S], b[P + S];
    make_ids(a, P + S, sh.vocab, 71);
    memcpy(b, a, sizeof(int32_t) * P);
    make_ids(b + P, S, sh.vocab, 72);
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 64;
    cp.n_seq = 2;
    cp.page_size = 4; /* P ends inside page 4 of a's 6 */
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    int free0 = vl3_ctx_free_pages(ctx);
    ASSERT_OK_E(vl3_prefill(ctx, 0, a, P + S, NULL, NULL, &err), &err);
    ASSERT_OK(vl3_ctx_seq_fork(ctx, 0, 1));
    ASSERT_EQ(vl3_ctx_seq_truncate(ctx, 1, P + S + 1), -EINVAL);
    ASSERT_OK(vl3_ctx_seq_truncate(ctx, 1, P));
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 1), P);
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0 - 6); /* sequence 1 holds 4 of a's pages */
    const float *lg;
    ASSERT_OK_E(vl3_prefill(ctx, 1, b + P, S, NULL, &lg, &err), &err);
    double *want = ref_forward(tm.m, b, P + S, NULL, NULL, 0);
    double e = rel_l2(lg, want + (size_t)(P + S - 1) * sh.vocab, sh.vocab);
    free(want);
    if (e > REL_L2_TOL)
        TEST__FAIL("after the shared part: rel_l2 %.3g", e);
    /* a's last shared page was copied, not written: a continues as if alone */
    int32_t next = 5, seq = 0;
    ASSERT_OK_E(vl3_decode_step(ctx, &seq, &next, 1, &lg, &err), &err);
    int32_t a2[P + S + 1];
    memcpy(a2, a, sizeof(a));
    a2[P + S] = next;
    want = ref_forward(tm.m, a2, P + S + 1, NULL, NULL, 0);
    e = rel_l2(lg, want + (size_t)(P + S) * sh.vocab, sh.vocab);
    free(want);
    if (e > REL_L2_TOL)
        TEST__FAIL("the source after its sharer wrote: rel_l2 %.3g", e);
    ASSERT_OK(vl3_ctx_seq_truncate(ctx, 0, 0));
    ASSERT_OK(vl3_ctx_seq_truncate(ctx, 1, 0));
    ASSERT_EQ(vl3_ctx_free_pages(ctx), free0);
    vl3_ctx_free(ctx);
    tmodel_free(&tm);
    return 0;
}

/* A mixed batch (a prefill chunk of one sequence beside decode tokens of two others) gives the
 * logits of separate calls. */
TEST(mixed_batch_matches_separate_calls)
{
    vl3_llm_shape sh = tiny_shape(0);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 31));
    int32_t a[12], b[7], c[5];
    make_ids(a, 12, sh.vocab, 61);
    make_ids(b, 7, sh.vocab, 62);
    make_ids(c, 5, sh.vocab, 63);
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 32;
    cp.n_seq = 3;
    cp.page_size = 4;
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    ASSERT_OK_E(vl3_prefill(ctx, 1, b, 6, NULL, NULL, &err), &err);
    ASSERT_OK_E(vl3_prefill(ctx, 2, c, 4, NULL, NULL, &err), &err);
    /* one batch: sequence 2 decodes c[4], sequence 0 prefills a[0..12), sequence 1 decodes b[6] */
    int32_t ids[14];
    ids[0] = c[4];
    memcpy(ids + 1, a, sizeof(a));
    ids[13] = b[6];
    int seqs[3] = {2, 0, 1}, counts[3] = {1, 12, 1};
    vl3_batch bt = {.n_tokens = 14, .ids = ids, .n_seqs = 3, .seq = seqs, .n_seq_tokens = counts};
    const float *lg;
    ASSERT_OK_E(vl3_decode(ctx, &bt, &lg, &err), &err);
    const int32_t *full[3] = {c, a, b};
    int len[3] = {5, 12, 7};
    for (int i = 0; i < 3; i++) {
        double *want = ref_forward(tm.m, full[i], len[i], NULL, NULL, 0);
        double e = rel_l2(lg + (size_t)i * sh.vocab, want + (size_t)(len[i] - 1) * sh.vocab,
                          sh.vocab);
        free(want);
        if (e > REL_L2_TOL)
            TEST__FAIL("run %d (sequence %d): rel_l2 %.3g", i, seqs[i], e);
    }
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 0), 12);
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 1), 7);
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 2), 5);
    /* counts that do not add up, a repeated sequence: refused */
    counts[1] = 11;
    ASSERT_EQ(vl3_decode(ctx, &bt, &lg, &err), -EINVAL);
    counts[1] = 12;
    seqs[2] = 2;
    ASSERT_EQ(vl3_decode(ctx, &bt, &lg, &err), -EINVAL);
    vl3_ctx_free(ctx);
    tmodel_free(&tm);
    return 0;
}

/* A pool smaller than every sequence full at once: a batch that needs more pages than are free
 * is refused with VL3_E_LIMIT and changes nothing; freeing a sequence makes room. */
TEST(kv_pool_exhaustion_refused)
{
    vl3_llm_shape sh = tiny_shape(1);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 37));
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 32;
    cp.n_seq = 3;
    cp.page_size = 8;
    cp.n_pages = 5;
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    int32_t ids[32];
    make_ids(ids, 32, sh.vocab, 71);
    ASSERT_OK_E(vl3_prefill(ctx, 0, ids, 20, NULL, NULL, &err), &err); /* 3 pages */
    ASSERT_EQ(vl3_prefill(ctx, 1, ids, 17, NULL, NULL, &err), VL3_E_LIMIT); /* needs 3 */
    ASSERT_STR_CONTAINS(err.msg, "KV cache is full");
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 1), 0);
    ASSERT_EQ(vl3_ctx_free_pages(ctx), 2);
    ASSERT_OK_E(vl3_prefill(ctx, 1, ids, 16, NULL, NULL, &err), &err); /* exactly 2 */
    ASSERT_OK(vl3_ctx_seq_reset(ctx, 0));
    ASSERT_EQ(vl3_ctx_free_pages(ctx), 3);
    cp.n_pages = 3; /* fewer than one full sequence needs */
    vl3_ctx *bad = NULL;
    ASSERT_EQ(vl3_ctx_new(tm.m, &cp, &bad, &err), -EINVAL);
    vl3_ctx_free(ctx);
    tmodel_free(&tm);
    return 0;
}

TEST(context_limits)
{
    vl3_llm_shape sh = tiny_shape(1);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 19));
    vl3_error err = {0};
    vl3_ctx *ctx = NULL;
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = 1000; /* above the model's 256 positions */
    ASSERT_EQ(vl3_ctx_new(tm.m, &cp, &ctx, &err), -EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "n_ctx");
    cp.n_ctx = 0; /* model-derived */
    cp.n_seq = 0;
    ASSERT_EQ(vl3_ctx_new(tm.m, &cp, &ctx, &err), -EINVAL);
    cp.n_seq = 2;
    ASSERT_OK_E(vl3_ctx_new(tm.m, &cp, &ctx, &err), &err);
    ASSERT_EQ(vl3_ctx_get_params(ctx).n_ctx, 256);
    ASSERT_EQ(vl3_ctx_n_vocab(ctx), 97);
    int32_t ids[257];
    make_ids(ids, 257, 97, 1);
    ASSERT_EQ(vl3_prefill(ctx, 1, ids, 257, NULL, NULL, &err), VL3_E_LIMIT);
    ASSERT_EQ(vl3_ctx_seq_len(ctx, 1), 0);
    ids[5] = -1;
    ASSERT_EQ(vl3_prefill(ctx, 1, ids, 10, NULL, NULL, &err), -EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "out of range");
    vl3_ctx_free(ctx);
    vl3_ctx_free(NULL);
    tmodel_free(&tm);
    return 0;
}

/* Greedy generation = the argmax chain of the reference, stopping on a stop id. */
TEST(generate_greedy_matches_reference)
{
    vl3_llm_shape sh = tiny_shape(0);
    struct tmodel tm;
    ASSERT_OK(tmodel_make(&tm, &sh, 23));
    int32_t seq[40];
    make_ids(seq, 6, sh.vocab, 77);
    int n = 6;
    for (int step = 0; step < 10; step++) { /* reference chain */
        double *lg = ref_forward(tm.m, seq, n, NULL, NULL, 0);
        int best = 0;
        for (int i = 1; i < sh.vocab; i++)
            if (lg[(size_t)(n - 1) * sh.vocab + i] > lg[(size_t)(n - 1) * sh.vocab + best])
                best = i;
        seq[n++] = best;
        free(lg);
    }
    vl3_ctx *ctx;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_ctx_new(tm.m, NULL, &ctx, &err), &err);
    vl3_gen_params gp = vl3_gen_params_from_model(tm.m);
    gp.sampling.greedy = 1;
    gp.sampling.repetition_penalty = 1.0f;
    gp.max_new_tokens = 10;
    gp.n_stop = 0;
    struct {
        int32_t got[16];
        int n;
    } out = {.n = 0};
    vl3_gen_result res;
    ASSERT_OK_E(vl3_generate(ctx, seq, 6, NULL, &gp, NULL, NULL, &res, &err), &err);
    ASSERT_EQ(res.n_generated, 10);
    ASSERT_EQ(res.stopped_by_eos, 0);
    /* again with a callback collecting ids and the 4th reference token as a stop id */
    gp.stop_ids[0] = seq[6 + 3];
    gp.n_stop = 1;
    int first_stop = 3;
    for (int i = 0; i < 3; i++)
        if (seq[6 + i] == gp.stop_ids[0])
            first_stop = i;
    float *plog = malloc(sizeof(float) * sh.vocab);
    gp.prompt_logits = plog;
    ASSERT_OK_E(vl3_generate(ctx, seq, 6, NULL, &gp, NULL, NULL, &res, &err), &err);
    ASSERT_EQ(res.n_generated, first_stop + 1);
    ASSERT_EQ(res.stopped_by_eos, 1);
    double *lg6 = ref_forward(tm.m, seq, 6, NULL, NULL, 0);
    ASSERT(rel_l2(plog, lg6 + 5 * sh.vocab, sh.vocab) <= REL_L2_TOL);
    free(lg6);
    free(plog);
    (void)out;
    vl3_ctx_free(ctx);
    tmodel_free(&tm);
    return 0;
}

/* ---- end to end: `vl3 run --greedy --dump` on tiny checkpoints of both layouts ------------- */

static int read_file_all(const char *path, void **ret, size_t *ret_len)
{
    char *buf;
    size_t len;
    int r = vl3_file_read(path, 1 << 26, &buf, &len, NULL);
    if (r < 0)
        return r;
    *ret = buf;
    *ret_len = len;
    return 0;
}

static int e2e_one(int native, const char *sys_opt, const char *sys_text)
{
    char dir[4096], dump[4096], out[8192];
    snprintf(dir, sizeof(dir), "%s/tiny_%d", test_tmpdir(), native);
    static int n_dumps;
    snprintf(dump, sizeof(dump), "%s/dump_%d_%d", test_tmpdir(), native, n_dumps++);
    vl3_tiny_params tp = vl3_tiny_params_default();
    tp.native = native;
    tp.seed = 31 + native;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_model_write_tiny(dir, &tp, &err), &err);
    const char *question = "What is in the picture? Answer briefly.";
    int max_new = 12;
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "%s/vl3 run --model %s --prompt '%s' --system-prompt '%s' --greedy "
                      "--max-new-tokens %d --threads 1 --dump %s",
                      getenv("VL3_BIN_DIR"), dir, question, sys_opt, max_new, dump),
              0);

    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.backend = VL3_BACKEND_CPU;
    vl3_model *m;
    ASSERT_OK_E(vl3_model_load(&mp, &m, &err), &err);
    ASSERT_EQ(m->w.embed.dtype, VL3__DTYPE_BF16);
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    ASSERT(tok);
    /* the prompt: chat template around the question (spec §7.1), encoded independently */
    char text[1024];
    snprintf(text, sizeof(text), "%s%s%s<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
             sys_text ? "<|im_start|>system\n" : "", sys_text ? sys_text : "",
             sys_text ? "<|im_end|>\n" : "", question);
    int32_t want_ids[512];
    size_t n_want;
    ASSERT_OK_E(vl3_tokenizer_encode(tok, text, strlen(text), want_ids, 512, &n_want, &err),
                &err);
    char path[4200];
    void *ids_b, *lg_b, *gen_b;
    size_t ids_n, lg_n, gen_n;
    snprintf(path, sizeof(path), "%s/input_ids.i32", dump);
    ASSERT_OK(read_file_all(path, &ids_b, &ids_n));
    ASSERT_EQ(ids_n, n_want * 4);
    ASSERT_MEM_EQ(ids_b, want_ids, ids_n);
    /* last-position logits against the double reference */
    int V = m->llm.vocab;
    snprintf(path, sizeof(path), "%s/logits.f32", dump);
    ASSERT_OK(read_file_all(path, &lg_b, &lg_n));
    ASSERT_EQ(lg_n, (size_t)V * 4);
    int n = (int)n_want;
    int32_t seq[600];
    memcpy(seq, want_ids, n_want * 4);
    double *ref = ref_forward(m, seq, n, NULL, NULL, 0);
    double e = rel_l2(lg_b, ref + (size_t)(n - 1) * V, V);
    fprintf(stderr, "native=%d system=%s n_prompt=%d logits rel_l2=%.3g\n", native, sys_opt, n, e);
    ASSERT(e <= REL_L2_TOL);
    free(ref);
    /* greedy chain of the reference, stopping on the generation config's stop ids */
    vl3_gen_params gp = vl3_gen_params_from_model(m);
    int32_t want_gen[64];
    int n_gen = 0;
    for (;;) {
        double *lg = ref_forward(m, seq, n, NULL, NULL, 0);
        int best = 0;
        for (int i = 1; i < V; i++)
            if (lg[(size_t)(n - 1) * V + i] > lg[(size_t)(n - 1) * V + best])
                best = i;
        free(lg);
        want_gen[n_gen++] = best;
        seq[n++] = best;
        int stop = 0;
        for (int i = 0; i < gp.n_stop; i++)
            stop |= best == gp.stop_ids[i];
        if (stop || n_gen == max_new)
            break;
    }
    snprintf(path, sizeof(path), "%s/generated.i32", dump);
    ASSERT_OK(read_file_all(path, &gen_b, &gen_n));
    ASSERT_EQ(gen_n, (size_t)n_gen * 4);
    ASSERT_MEM_EQ(gen_b, want_gen, gen_n);
    /* meta.json names the shapes and counts */
    char *meta;
    size_t meta_n;
    snprintf(path, sizeof(path), "%s/meta.json", dump);
    ASSERT_OK(vl3_file_read(path, 1 << 20, &meta, &meta_n, NULL));
    char expect[64];
    snprintf(expect, sizeof(expect), "\"n_prompt\": %d", (int)n_want);
    ASSERT_STR_CONTAINS(meta, expect);
    snprintf(expect, sizeof(expect), "\"vocab_rows\": %d", V);
    ASSERT_STR_CONTAINS(meta, expect);
    ASSERT_STR_CONTAINS(meta, native ? "\"layout\": \"native\"" : "\"layout\": \"remote\"");
    free(meta), free(ids_b), free(lg_b), free(gen_b);
    vl3_model_free(m);
    return 0;
}

TEST(run_dump_matches_reference)
{
    static const char *damo = "You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful "
                              "assistant to help people understand images and videos.";
    for (int native = 0; native < 2; native++) {
        if (e2e_one(native, "none", NULL))
            return 1;
        if (e2e_one(native, "default", damo))
            return 1;
    }
    if (e2e_one(0, "You are terse.", "You are terse."))
        return 1;
    return 0;
}

TEST(run_usage_errors)
{
    char out[8192];
    const char *bin = getenv("VL3_BIN_DIR");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 run --prompt hi 2>&1", bin), 2);
    ASSERT_STR_CONTAINS(out, "--model");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 run --model x --prompt hi --top-p 2 2>&1", bin),
              2);
    ASSERT_STR_CONTAINS(out, "--top-p");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 run --model x --prompt hi --bogus 2>&1", bin), 2);
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 run --model /nonexistent --prompt hi 2>&1", bin),
              1);
    ASSERT_STR_CONTAINS(out, "could not load model");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 run --help", bin), 0);
    ASSERT_STR_CONTAINS(out, "--system-prompt");
    return 0;
}
