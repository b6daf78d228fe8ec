/* test_backend_ops.c: every LLM op of the CPU backend against a straightforward double-precision
 * implementation written here, on seeded random inputs over shapes that include odd sizes, GQA
 * groups, several query blocks and real head sizes. Judged by NMSE and max-abs error with the
 * per-op tolerances of tol_table (f32 results from f32 inputs; sums over up to a few thousand
 * terms give ~1e-6 relative error, so these bounds leave ~10x headroom and would catch any
 * indexing or formula mistake, which gives errors of order 1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "test.h"

static const struct {
    const char *op;
    double nmse, max_abs;
} tol_table[] = {
    {"matmul", 1e-11, 1e-4},   {"rmsnorm", 1e-12, 1e-5},  {"rope", 1e-12, 1e-5},
    {"attention", 1e-11, 1e-5}, {"silu_mul", 1e-12, 1e-6}, {"add", 0, 0},
    {"embed", 0, 0},
};

static const vl3__backend_ops *ops = &vl3__backend_cpu_ops;
static uint64_t rng_state = 42;

static double urand(void) /* U(-1, 1) */
{
    return test_urand(&rng_state);
}

static float *randv(size_t n, double scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(urand() * scale);
    return v;
}

/* Compare got (f32) with want (double); print the first five mismatches past max_abs. */
static int check(const char *op, const float *got, const double *want, size_t n)
{
    double nmse = 0, den = 0, mx = 0;
    size_t i_tol = 0;
    while (strcmp(tol_table[i_tol].op, op) != 0)
        i_tol++;
    int shown = 0;
    for (size_t i = 0; i < n; i++) {
        double e = got[i] - want[i];
        nmse += e * e;
        den += want[i] * want[i];
        if (fabs(e) > mx)
            mx = fabs(e);
        if (fabs(e) > tol_table[i_tol].max_abs && shown < 5) {
            fprintf(stderr, "  %s[%zu]: got %.9g want %.9g\n", op, i, got[i], want[i]);
            shown++;
        }
    }
    nmse = den > 0 ? nmse / den : nmse;
    if (nmse > tol_table[i_tol].nmse || mx > tol_table[i_tol].max_abs) {
        fprintf(stderr, "FAIL %s: nmse %.3g (tol %.3g) max_abs %.3g (tol %.3g) over %zu values\n",
                op, nmse, tol_table[i_tol].nmse, mx, tol_table[i_tol].max_abs, n);
        return 1;
    }
    return 0;
}

static void *cpu_ctx(void)
{
    void *c = NULL;
    if (ops->init(0, 2, &c, NULL) < 0)
        return NULL;
    return c;
}

void vl3__cpu_set_simd(int level);

/* bf16 copy of f32 values (the backend's weight format) and the values it holds, widened. */
static uint16_t *to_weights(void *c, const float *f, size_t n, float *ret_exact)
{
    uint16_t *w = malloc(n * 2);
    if (ops->weight_convert(c, w, f, VL3__DTYPE_F32, n) < 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)w[i] << 16;
        memcpy(&ret_exact[i], &u, 4);
    }
    return w;
}

TEST(matmul)
{
    void *c = cpu_ctx();
    ASSERT(c);
    /* T <= 32 goes through the bf16 kernel (groups of 8 rows) (threads split the rows when T*in*out >= 2^20),
     * larger T through the widened sgemm blocks; in not a multiple of 8/16/32 tests the tails */
    static const int shapes[][3] = {{1, 64, 48},   {1, 129, 33},  {3, 37, 70},  {8, 200, 17}, {19, 45, 23}, {32, 64, 40}, {33, 64, 40},
                                    {9, 37, 300},  {64, 256, 130}, {1, 1100, 1000}, {2, 1536, 700}};
    int levels = 3;
    for (int lv = 0; lv < levels; lv++) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        if ((lv == 2 && !__builtin_cpu_supports("avx512f")) ||
            (lv == 1 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))))
            continue;
#else
        if (lv > 0)
            continue;
#endif
        vl3__cpu_set_simd(lv);
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
            for (int variant = 0; variant < 3; variant++) { /* plain, bias, bias + accumulate */
                int T = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
                float *x = randv((size_t)T * in, 1), *wf = randv((size_t)out * in, 1);
                float *b = randv((size_t)out, 1), *y = randv((size_t)T * out, 1);
                float *we = malloc(sizeof(float) * (size_t)out * in);
                uint16_t *w = to_weights(c, wf, (size_t)out * in, we);
                double *want = malloc(sizeof(double) * T * out);
                size_t wb = ops->matmul_work_size(c, in);
                void *work = malloc(wb);
                for (int t = 0; t < T; t++)
                    for (int o = 0; o < out; o++) {
                        double s = variant == 2 ? y[t * out + o] : 0;
                        if (variant)
                            s += b[o];
                        for (int i = 0; i < in; i++)
                            s += (double)x[t * in + i] * we[(size_t)o * in + i];
                        want[t * out + o] = s;
                    }
                ASSERT_OK(ops->matmul(c, y, x, w, variant ? b : NULL, T, in, out, variant == 2,
                                      work, wb));
                int bad = check("matmul", y, want, (size_t)T * out);
                free(x), free(wf), free(we), free(w), free(b), free(y), free(want), free(work);
                if (bad)
                    TEST__FAIL("matmul simd %d T=%d in=%d out=%d variant %d", lv, T, in, out,
                               variant);
            }
    }
    vl3__cpu_set_simd(-1);
    /* the sgemm path refuses too little scratch */
    float x[33 * 4] = {0}, y[33 * 4];
    uint16_t w[4 * 4] = {0};
    ASSERT(ops->matmul(c, y, x, w, NULL, 33, 4, 4, 0, NULL, 0) < 0);
    ops->free(c);
    return 0;
}

TEST(rmsnorm)
{
    void *c = cpu_ctx();
    static const int shapes[][2] = {{1, 64}, {7, 1536}, {3, 33}};
    for (size_t si = 0; si < 3; si++) {
        int T = shapes[si][0], C = shapes[si][1];
        float *x = randv((size_t)T * C, 3), *w = randv((size_t)C, 1), *y = malloc(4 * T * C);
        double *want = malloc(sizeof(double) * T * C);
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int i = 0; i < C; i++)
                ss += (double)x[t * C + i] * x[t * C + i];
            double inv = 1 / sqrt(ss / C + 1e-6);
            for (int i = 0; i < C; i++)
                want[t * C + i] = w[i] * x[t * C + i] * inv;
        }
        ASSERT_OK(ops->rmsnorm(c, y, x, w, T, C, 1e-6f));
        int bad = check("rmsnorm", y, want, (size_t)T * C);
        /* in place gives the same */
        ASSERT_OK(ops->rmsnorm(c, x, x, w, T, C, 1e-6f));
        ASSERT_MEM_EQ(x, y, 4 * (size_t)T * C);
        free(x), free(w), free(y), free(want);
        ASSERT(!bad);
    }
    ops->free(c);
    return 0;
}

TEST(rope)
{
    void *c = cpu_ctx();
    /* T, stride, heads, D, theta */
    static const struct { int T, stride, heads, D; float theta; } cs[] = {
        {3, 32, 4, 8, 10000.f}, {5, 12 * 128 + 512, 12, 128, 1e6f}, {2, 2 * 128, 2, 128, 1e6f}};
    for (size_t ci = 0; ci < 3; ci++) {
        int T = cs[ci].T, S = cs[ci].stride, NH = cs[ci].heads, D = cs[ci].D;
        float *x = randv((size_t)T * S, 1);
        double *want = malloc(sizeof(double) * T * S);
        int32_t pos[8];
        for (int t = 0; t < T; t++)
            pos[t] = t * 7 + 3 * (int)ci; /* not consecutive, non-zero */
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < S; i++)
                want[t * S + i] = x[t * S + i]; /* untouched beyond the heads */
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < D / 2; i++) {
                    double a = pos[t] * pow(cs[ci].theta, -2.0 * i / D);
                    double x0 = x[t * S + h * D + i], x1 = x[t * S + h * D + i + D / 2];
                    want[t * S + h * D + i] = x0 * cos(a) - x1 * sin(a);
                    want[t * S + h * D + i + D / 2] = x1 * cos(a) + x0 * sin(a);
                }
        }
        ASSERT_OK(ops->rope(c, x, T, S, NH, D, pos, cs[ci].theta));
        int bad = check("rope", x, want, (size_t)T * S);
        free(x), free(want);
        ASSERT(!bad);
    }
    ops->free(c);
    return 0;
}

/* Reference causal GQA attention for one sequence. */
static void attn_ref(double *out, int ostride, const float *q, int qstride, const float *k,
                     const float *v, int n_q, int n_past, int H, int Hkv, int D)
{
    int grp = H / Hkv, kvd = Hkv * D;
    double *p = malloc(sizeof(double) * (n_past + n_q));
    for (int i = 0; i < n_q; i++)
        for (int h = 0; h < H; h++) {
            int g = h / grp, nk = n_past + i + 1;
            double mx = -INFINITY, z = 0;
            for (int j = 0; j < nk; j++) {
                double s = 0;
                for (int d = 0; d < D; d++)
                    s += (double)q[i * qstride + h * D + d] * k[j * kvd + g * D + d];
                p[j] = s / sqrt(D);
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j < nk; j++)
                z += p[j] = exp(p[j] - mx);
            for (int d = 0; d < D; d++) {
                double s = 0;
                for (int j = 0; j < nk; j++)
                    s += p[j] / z * v[j * kvd + g * D + d];
                out[i * ostride + h * D + d] = s;
            }
        }
    free(p);
}

/* A paged pool holding contiguous k and v (n_ctx, kvd) of one or more sequences: the pages of
 * sequence j are a scrambled permutation (so a kernel that assumes contiguous pages fails). */
struct paged {
    float *k, *v;      /* (n_pages, ps, kvd) */
    int32_t *tables;   /* (n_seqs, mp) */
    int ps, mp;
};

static void paged_make(struct paged *pg, float *const *ks, float *const *vs, int n_seqs,
                       int n_ctx, int kvd, int ps)
{
    int mp = (n_ctx + ps - 1) / ps, np = mp * n_seqs;
    pg->ps = ps, pg->mp = mp;
    pg->k = calloc((size_t)np * ps * kvd, sizeof(float));
    pg->v = calloc((size_t)np * ps * kvd, sizeof(float));
    pg->tables = malloc(sizeof(int32_t) * (size_t)np);
    for (int i = 0; i < np; i++)
        pg->tables[i] = (int32_t)((i * 7 + 3) % np); /* 7 is coprime with the sizes used */
    for (int j = 0; j < n_seqs; j++)
        for (int t = 0; t < n_ctx; t++) {
            size_t slot = (size_t)pg->tables[j * mp + t / ps] * ps + t % ps;
            memcpy(pg->k + slot * kvd, ks[j] + (size_t)t * kvd, sizeof(float) * kvd);
            memcpy(pg->v + slot * kvd, vs[j] + (size_t)t * kvd, sizeof(float) * kvd);
        }
}

static void paged_free(struct paged *pg)
{
    free(pg->k), free(pg->v), free(pg->tables);
}

TEST(attention)
{
    void *c = cpu_ctx();
    /* prefill of one sequence (several query blocks, with and without history), then a decode
     * batch of three sequences of different lengths; pages of 16 and 7 tokens */
    static const struct { int H, Hkv, D; } hs[] = {{4, 2, 16}, {6, 2, 8}, {12, 2, 128}};
    for (size_t hi = 0; hi < 3; hi++) {
        for (int ps = 7; ps <= 16; ps += 9) {
            int H = hs[hi].H, Hkv = hs[hi].Hkv, D = hs[hi].D, kvd = Hkv * D, n_ctx = 200;
            int qstride = (H + 2 * Hkv) * D; /* the fused qkv layout */
            size_t work = ops->attention_work_size(c, 150, n_ctx, H);
            float *wk = malloc(work);
            static const int pre[][2] = {{150, 0}, {70, 45}, {1, 0}}; /* n_q, n_past */
            for (int pi = 0; pi < 3; pi++) {
                int nq = pre[pi][0], np = pre[pi][1];
                float *q = randv((size_t)nq * qstride, 1), *k = randv((size_t)n_ctx * kvd, 1);
                float *v = randv((size_t)n_ctx * kvd, 1), *out = malloc(4 * (size_t)nq * H * D);
                double *want = malloc(sizeof(double) * nq * H * D);
                attn_ref(want, H * D, q, qstride, k, v, nq, np, H, Hkv, D);
                struct paged pg;
                paged_make(&pg, &k, &v, 1, n_ctx, kvd, ps);
                struct vl3__attn_seq sq = {.q_row = 0, .n_q = nq, .n_past = np,
                                           .pages = pg.tables};
                struct vl3__attn_args a = {.out = out, .q = q, .q_stride = qstride,
                                           .out_stride = H * D, .n_heads = H, .n_kv_heads = Hkv,
                                           .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                                           .k_pages = pg.k, .v_pages = pg.v, .page_size = ps,
                                           .seqs = &sq, .n_seqs = 1, .work = wk,
                                           .work_bytes = work};
                ASSERT_OK(ops->attention(c, &a));
                int bad = check("attention", out, want, (size_t)nq * H * D);
                paged_free(&pg);
                free(q), free(k), free(v), free(out), free(want);
                if (bad)
                    TEST__FAIL("attention H=%d Hkv=%d D=%d n_q=%d n_past=%d page=%d", H, Hkv, D,
                               nq, np, ps);
            }
            /* decode batch */
            int B = 3, past[3] = {0, 17, 199};
            float *q = randv((size_t)B * qstride, 1), *out = malloc(4 * (size_t)B * H * D);
            float *ks[3], *vs[3];
            double *want = malloc(sizeof(double) * B * H * D);
            for (int b = 0; b < B; b++) {
                ks[b] = randv((size_t)n_ctx * kvd, 1);
                vs[b] = randv((size_t)n_ctx * kvd, 1);
                attn_ref(want + b * H * D, H * D, q + b * qstride, qstride, ks[b], vs[b], 1,
                         past[b], H, Hkv, D);
            }
            struct paged pg;
            paged_make(&pg, ks, vs, B, n_ctx, kvd, ps);
            struct vl3__attn_seq sq[3];
            for (int b = 0; b < B; b++)
                sq[b] = (struct vl3__attn_seq){b, 1, past[b], pg.tables + b * pg.mp};
            struct vl3__attn_args a = {.out = out, .q = q, .q_stride = qstride,
                                       .out_stride = H * D, .n_heads = H, .n_kv_heads = Hkv,
                                       .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                                       .k_pages = pg.k, .v_pages = pg.v, .page_size = ps,
                                       .seqs = sq, .n_seqs = B, .work = wk, .work_bytes = work};
            ASSERT_OK(ops->attention(c, &a));
            int bad = check("attention", out, want, (size_t)B * H * D);
            for (int b = 0; b < B; b++)
                free(ks[b]), free(vs[b]);
            paged_free(&pg);
            free(q), free(out), free(want), free(wk);
            if (bad)
                TEST__FAIL("attention decode batch H=%d page=%d", H, ps);
        }
    }
    /* too little scratch is refused, not overrun */
    float q1[16], k1[16], v1[16], o1[16], w1[4];
    int32_t t1[1] = {0};
    memset(q1, 0, sizeof(q1)), memset(k1, 0, sizeof(k1)), memset(v1, 0, sizeof(v1));
    struct vl3__attn_seq s1 = {0, 1, 0, t1};
    struct vl3__attn_args a1 = {.out = o1, .q = q1, .q_stride = 16, .out_stride = 16,
                                .n_heads = 2, .n_kv_heads = 1, .head_dim = 8, .scale = 1,
                                .k_pages = k1, .v_pages = v1, .page_size = 1,
                                .seqs = &s1, .n_seqs = 1, .work = w1, .work_bytes = 0};
    ASSERT(ops->attention(c, &a1) < 0);
    ops->free(c);
    return 0;
}

TEST(kv_store_scatter_rows)
{
    void *c = cpu_ctx();
    int T = 5, kvd = 6, qs = 20, k_off = 8, v_off = 14, n_slots = 12;
    float *qkv = randv((size_t)T * qs, 1);
    float *K = calloc((size_t)n_slots * kvd, sizeof(float));
    float *V = calloc((size_t)n_slots * kvd, sizeof(float));
    int32_t slots[5] = {11, 0, 5, 6, 3};
    ASSERT_OK(ops->kv_store(c, K, V, qkv, qs, k_off, v_off, kvd, slots, T, VL3__DTYPE_F32));
    for (int t = 0; t < T; t++)
        for (int d = 0; d < kvd; d++) {
            ASSERT(K[slots[t] * kvd + d] == qkv[t * qs + k_off + d]);
            ASSERT(V[slots[t] * kvd + d] == qkv[t * qs + v_off + d]);
        }
    for (int d = 0; d < kvd; d++) /* untouched slot stays zero */
        ASSERT(K[1 * kvd + d] == 0.0f && V[1 * kvd + d] == 0.0f);
    int C = 4;
    float *x = randv((size_t)T * C, 1), *src = randv((size_t)2 * C, 1), before[20];
    memcpy(before, x, sizeof(before));
    int32_t idx[2] = {1, 4};
    ASSERT_OK(ops->scatter_rows(c, x, src, idx, 2, C));
    for (int t = 0; t < T; t++)
        for (int d = 0; d < C; d++) {
            float want = t == 1 ? src[d] : t == 4 ? src[C + d] : before[t * C + d];
            ASSERT(x[t * C + d] == want);
        }
    free(qkv), free(K), free(V), free(x), free(src);
    ops->free(c);
    return 0;
}

TEST(silu_mul_add_embed)
{
    void *c = cpu_ctx();
    int T = 3, I = 37, V = 11, C = 5;
    float *gu = randv((size_t)T * 2 * I, 4), *out = malloc(4 * (size_t)T * I);
    double *want = malloc(sizeof(double) * T * I);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) {
            double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
            want[t * I + i] = g / (1 + exp(-g)) * u;
        }
    ASSERT_OK(ops->silu_mul(c, out, gu, T, I));
    ASSERT(!check("silu_mul", out, want, (size_t)T * I));
    float *a = randv(100, 1), *b = randv(100, 1), y[100];
    double wa[100];
    for (int i = 0; i < 100; i++)
        wa[i] = (double)(a[i] + b[i]); /* one f32 rounding, as the op */
    ASSERT_OK(ops->add(c, y, a, b, 100));
    ASSERT(!check("add", y, wa, 100));
    float *table = randv((size_t)V * C, 1), *exact = malloc(sizeof(float) * V * C), e[4 * 5];
    uint16_t *tw = to_weights(c, table, (size_t)V * C, exact);
    int32_t ids[4] = {10, 0, 3, 10};
    double we[20];
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < C; i++)
            we[t * C + i] = exact[ids[t] * C + i];
    ASSERT_OK(ops->embed(c, e, tw, ids, 4, C));
    ASSERT(!check("embed", e, we, 20));
    free(gu), free(out), free(want), free(a), free(b), free(table), free(exact), free(tw);
    ops->free(c);
    return 0;
}

TEST(argmax_copy_rows)
{
    void *c = cpu_ctx();
    float x[2][6] = {{1, 5, 2, 5, -1, 0}, {-3, -2, -9, -2.5f, -1.5f, -8}};
    int32_t am[2];
    ASSERT_OK(ops->argmax(c, am, x, 2, 6));
    ASSERT_EQ(am[0], 1); /* first of the tied maxima */
    ASSERT_EQ(am[1], 4);
    float src[3][4], dst[3][6];
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 4; i++)
            src[r][i] = (float)(r * 10 + i);
    memset(dst, 0, sizeof(dst));
    ASSERT_OK(ops->copy_rows(c, dst, sizeof(dst[0]), src, sizeof(src[0]), 3, 3 * sizeof(float)));
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 6; i++)
            ASSERT_EQ(dst[r][i], i < 3 ? r * 10 + i : 0);
    ops->free(c);
    return 0;
}

TEST(weight_convert)
{
    void *c = cpu_ctx();
    ASSERT_EQ(ops->weight_dtype(c), VL3__DTYPE_BF16);
    ASSERT_EQ(ops->weight_bytes(c, 10), 20);
    /* bf16 is copied as is */
    uint16_t bf[4] = {0x3f80, 0xc000, 0x3e20, 0x0001}, got[6];
    ASSERT_OK(ops->weight_convert(c, got, bf, VL3__DTYPE_BF16, 4));
    ASSERT_MEM_EQ(got, bf, sizeof(bf));
    /* f16 -> bf16: 1.0, -2.0, 2^-24 (0x3380), +inf, 65504 (rounds to 65536 = 0x4780) */
    uint16_t hf[5] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x7bff};
    uint16_t want_h[5] = {0x3f80, 0xc000, 0x3380, 0x7f80, 0x4780};
    ASSERT_OK(ops->weight_convert(c, got, hf, VL3__DTYPE_F16, 5));
    ASSERT_MEM_EQ(got, want_h, sizeof(want_h));
    /* f32 -> bf16, round to nearest even: 1 + 2^-8 is a tie (rounds down to 1.0), 1 + 3*2^-8
     * a tie rounding up to 1 + 2^-6, 1 + 2^-8 + 2^-20 rounds up; NaN stays NaN */
    float f[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, NAN};
    ASSERT_OK(ops->weight_convert(c, got, f, VL3__DTYPE_F32, 4));
    ASSERT_EQ(got[0], 0x3f80);
    ASSERT_EQ(got[1], 0x3f82);
    ASSERT_EQ(got[2], 0x3f81);
    ASSERT((got[3] & 0x7f80) == 0x7f80 && (got[3] & 0x7f));
    ASSERT(ops->weight_convert(c, got, hf, VL3__DTYPE_I64, 1) < 0);
    ASSERT(ops->supports(c, VL3__OP_ATTENTION, VL3__DTYPE_F32));
    ASSERT(ops->supports(c, VL3__OP_MATMUL, VL3__DTYPE_BF16));
    ASSERT(!ops->supports(c, VL3__OP_MATMUL, VL3__DTYPE_F32));
    ops->free(c);
    return 0;
}
