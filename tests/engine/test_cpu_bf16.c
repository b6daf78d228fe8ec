/* test_cpu_bf16.c: the CPU backend's bf16 precision mode (engine/backend/cpu/gemm_bf16.c).
 *
 * gemm_<isa>: each instruction-set path forced in turn (cases of paths this CPU or kernel cannot
 * run exit 77) through the backend's matmul op in bf16 mode, against a double-precision sum
 * computed here from the same bf16-rounded inputs (x rounded to nearest even, W as stored), over
 * shapes with edge sizes (not multiples of 4/16/32, token counts around the 16/32/512 blocks)
 * and the 2B widths 1536 / 8960 at small row counts; plain, bias, bias + accumulate.
 * Tolerance: |got - want| <= 2e-5 * sum_k |x_k w_k| (+ |y0| + |b|): f32 accumulation of n
 * products in any order errs by ~sqrt(n) * 6e-8 of that sum (<= 6e-6 for n = 8960); an indexing
 * or layout error, or truncating x instead of rounding it, errs by 1e-3 .. 1 of it.
 *
 * tiny_greedy_bf16_vs_f32: a small random Qwen2 model run greedily for 16 steps in f32 mode and
 * in bf16 mode (prefill on the AMX / dot paths, decode on the dot path): the tokens must be
 * equal, except that the chains may part where the f32 top-2 logit gap is smaller than twice the
 * largest logit difference of the two modes at that step (a bf16-sized flip); until then every
 * step's logits agree within relative L2 BF16_REL_L2. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "cpu_ops.h"
#include "llm.h"
#include "model.h"
#include "test.h"
#include "tiny_model.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define GEMM_TOL 2e-5
#define BF16_REL_L2 3e-2

static const vl3__backend_ops *ops = &vl3__backend_cpu_ops;
static uint64_t rng_state = 7;

static double urand(void) /* U(-1, 1) */
{
    return test_urand(&rng_state);
}

static float *randv(size_t n)
{
    return test_urandv(n, &rng_state);
}

static double bf16_value(float f)
{
    return (double)vl3__cpu_bf16_to_f32(vl3__cpu_f32_to_bf16(f));
}

static int gemm_case(int isa)
{
    if (!vl3__cpu_isa_supported(isa))
        SKIP("this CPU cannot run the %s path", vl3__cpu_isa_name(isa));
    static const int shapes[][3] = {
        {1, 64, 48},    {1, 129, 33},   {3, 37, 70},    {4, 31, 5},     {5, 600, 17},
        {15, 100, 33},  {16, 64, 32},   {17, 588, 47},  {31, 1152, 40}, {32, 96, 64},
        {33, 64, 40},   {48, 4304, 70}, {100, 257, 130}, {1, 1536, 1536}, {3, 1536, 8960},
        {2, 8960, 1536}, {40, 1536, 300}, {513, 96, 50}, {600, 33, 20},  {64, 8960, 36},
        {400, 8967, 300}}; /* the last: amx's k-chunked path (x beyond L2), groups, k tail */
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    vl3__cpu_set_isa(isa);
    ASSERT_EQ(vl3__cpu_isa(), isa);
    int fails = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]) && !fails; si++)
        for (int variant = 0; variant < 3 && !fails; variant++) {
            int T = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
            float *x = randv((size_t)T * in), *wf = randv((size_t)out * in);
            float *b = randv((size_t)out), *y = randv((size_t)T * out);
            uint16_t *w = malloc((size_t)out * in * 2);
            ASSERT_OK(ops->weight_convert(c, w, wf, VL3__DTYPE_F32, (size_t)out * in));
            double *want = malloc(sizeof(double) * T * out), *mag = malloc(sizeof(double) * T * out);
            double *xr = malloc(sizeof(double) * T * in);
            double *wd = malloc(sizeof(double) * out * in); /* W's bf16 values, widened once */
            for (size_t i = 0; i < (size_t)T * in; i++)
                xr[i] = bf16_value(x[i]);
            for (size_t i = 0; i < (size_t)out * in; i++)
                wd[i] = vl3__cpu_bf16_to_f32(w[i]);
            /* the double reference of the big shapes (~1e9 products) on a sample: every 5th
             * token and output plus the last 16 of each (the tails), so that the suite's
             * sanitizer build stays within its timeout on a slow machine */
            int sample = (double)T * in * out > 1e8;
            for (int t = 0; t < T; t++)
                for (int o = 0; o < out; o++) {
                    if (sample && ((t % 5 && t < T - 16) || (o % 5 && o < out - 16))) {
                        want[t * out + o] = NAN; /* not checked */
                        continue;
                    }
                    double s = variant == 2 ? y[t * out + o] : 0, m = fabs(s);
                    if (variant) {
                        s += b[o];
                        m += fabs(b[o]);
                    }
                    for (int i = 0; i < in; i++) {
                        double p = xr[(size_t)t * in + i] * wd[(size_t)o * in + i];
                        s += p;
                        m += fabs(p);
                    }
                    want[t * out + o] = s;
                    mag[t * out + o] = m;
                }
            size_t wb = ops->matmul_work_size(c, in);
            void *work = malloc(wb);
            ASSERT_OK(ops->matmul(c, y, x, w, variant ? b : NULL, T, in, out, variant == 2, work,
                                  wb));
            double worst = 0;
            size_t wi = 0;
            for (size_t i = 0; i < (size_t)T * out; i++) {
                if (isnan(want[i]))
                    continue;
                double e = fabs(y[i] - want[i]) / mag[i];
                if (!(e <= worst)) {
                    worst = e;
                    wi = i;
                }
            }
            if (!(worst <= GEMM_TOL)) {
                fprintf(stderr, "FAIL %s T=%d in=%d out=%d variant %d: [%zu] got %.9g want %.9g "
                        "(error %.3g of sum|xw|, tol %.1g)\n", vl3__cpu_isa_name(isa), T, in, out,
                        variant, wi, y[wi], want[wi], worst, GEMM_TOL);
                fails++;
            }
            free(x), free(wf), free(b), free(y), free(w), free(want), free(mag), free(xr);
            free(work), free(wd);
        }
    /* too little scratch is refused */
    float xs[4] = {0}, ys[4];
    uint16_t ws[4] = {0};
    ASSERT(ops->matmul(c, ys, xs, ws, NULL, 1, 4, 1, 0, NULL, 0) < 0);
    vl3__cpu_set_isa(-1);
    ops->free(c);
    return fails ? 1 : 0;
}

TEST(gemm_c) { return gemm_case(VL3__CPU_ISA_C); }
TEST(gemm_avx2) { return gemm_case(VL3__CPU_ISA_AVX2); }
TEST(gemm_avx512) { return gemm_case(VL3__CPU_ISA_AVX512); }
TEST(gemm_avx512bf16) { return gemm_case(VL3__CPU_ISA_AVX512BF16); }
TEST(gemm_amx) { return gemm_case(VL3__CPU_ISA_AMX); }

/* The LLM MLP's gate/up product with the SwiGLU in its epilogue (backend op matmul_swiglu, AMX)
 * gives the bits of matmul into (T, 2I) followed by silu_mul: edge sizes (I 50: a 32-row block
 * of 18, k 100: a k tail; T 17 and 700: token pairs with 1 and 12 rows, passes of 320 + 320 + 60
 * at K 1536) and the 2B width I 8960. It declines (-ENOTSUP, out untouched) below 16 rows, on
 * long k (8960: amx_job's k-chunked path) and in f32 mode; the engine then runs the two ops. */
TEST(matmul_swiglu_equals_matmul_then_silu_mul)
{
    if (!vl3__cpu_isa_supported(VL3__CPU_ISA_AMX))
        SKIP("this CPU cannot run the amx path");
    static const int shapes[][3] = {{17, 100, 50}, {391, 1536, 8960}, {700, 1536, 36},
                                    {64, 96, 64}};
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int T = shapes[si][0], in = shapes[si][1], I = shapes[si][2];
        float *x = randv((size_t)T * in), *wf = randv((size_t)2 * I * in);
        float *gu = malloc(sizeof(float) * T * 2 * I), *want = malloc(sizeof(float) * T * I);
        float *got = malloc(sizeof(float) * T * I);
        uint16_t *w = malloc((size_t)2 * I * in * 2);
        ASSERT_OK(ops->weight_convert(c, w, wf, VL3__DTYPE_F32, (size_t)2 * I * in));
        size_t wb = ops->matmul_work_size(c, in);
        void *work = malloc(wb);
        ASSERT_OK(ops->matmul(c, gu, x, w, NULL, T, in, 2 * I, 0, work, wb));
        ASSERT_OK(ops->silu_mul(c, want, gu, T, I));
        ASSERT_OK(ops->matmul_swiglu(c, got, x, w, T, in, I, work, wb));
        if (memcmp(got, want, sizeof(float) * T * I) != 0) {
            size_t i = 0;
            while (got[i] == want[i])
                i++;
            fprintf(stderr, "FAIL T=%d in=%d I=%d: [%zu] fused %.9g, apart %.9g\n", T, in, I, i,
                    got[i], want[i]);
            return 1;
        }
        double s = 0;
        for (size_t i = 0; i < (size_t)T * I; i++)
            s += fabs(got[i]);
        ASSERT(s > 0 && s == s);
        free(x), free(wf), free(gu), free(want), free(got), free(w), free(work);
    }
    /* declined: too few rows, long k, f32 mode; nothing written */
    int T = 8, in = 8960, I = 40;
    float *x = randv((size_t)512 * in), *wf = randv((size_t)2 * I * in), *out = randv(512 * I);
    float *keep = malloc(sizeof(float) * 512 * I);
    memcpy(keep, out, sizeof(float) * 512 * I);
    uint16_t *w = malloc((size_t)2 * I * in * 2);
    ASSERT_OK(ops->weight_convert(c, w, wf, VL3__DTYPE_F32, (size_t)2 * I * in));
    size_t wb = ops->matmul_work_size(c, in);
    void *work = malloc(wb);
    ASSERT_EQ(ops->matmul_swiglu(c, out, x, w, T, 64, I, work, wb), -ENOTSUP);
    ASSERT_EQ(ops->matmul_swiglu(c, out, x, w, 512, in, I, work, wb), -ENOTSUP);
    vl3__cpu_set_precision(c, VL3__CPU_PREC_F32);
    ASSERT_EQ(ops->matmul_swiglu(c, out, x, w, 512, 64, I, work, ops->matmul_work_size(c, 64)),
              -ENOTSUP);
    ASSERT(memcmp(out, keep, sizeof(float) * 512 * I) == 0);
    free(x), free(wf), free(out), free(keep), free(w), free(work);
    ops->free(c);
    return 0;
}

/* vl3__cpu_gemm_bf16_mlp (the first product's output handed to the second packed) gives the
 * bits of the two products run apart: the vision MLP (fc1 with the GELU, fc2 with the bias and
 * the residual add) and the LLM's (gate/up with the SwiGLU, down added to the residual), on
 * edge sizes (k tails of 16, output widths not multiples of 32, rows crossing the chunks of
 * the first product and the passes of the second) and the 2B widths; below 16 rows and off
 * AMX it declines and writes nothing. */
TEST(gemm_mlp_equals_products_apart)
{
    if (!vl3__cpu_isa_supported(VL3__CPU_ISA_AMX))
        SKIP("this CPU cannot run the amx path");
    /* T, in, n_inter, out, act */
    static const int shapes[][5] = {
        {17, 96, 176, 72, VL3__CPU_MLP_GELU},       {520, 1152, 4304, 1152, VL3__CPU_MLP_GELU},
        {1000, 64, 48, 40, VL3__CPU_MLP_GELU},      {130, 1152, 4304, 1152, VL3__CPU_MLP_GELU},
        {17, 100, 50, 60, VL3__CPU_MLP_SWIGLU},     {391, 1536, 8960, 1536, VL3__CPU_MLP_SWIGLU},
        {700, 1536, 36, 40, VL3__CPU_MLP_SWIGLU},   {64, 96, 64, 96, VL3__CPU_MLP_SWIGLU}};
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int T = shapes[si][0], in = shapes[si][1], I = shapes[si][2], out = shapes[si][3];
        int sw = shapes[si][4] == VL3__CPU_MLP_SWIGLU, r1 = sw ? 2 * I : I;
        float *x = randv((size_t)T * in), *w1f = randv((size_t)r1 * in);
        float *w2f = randv((size_t)out * I), *b1 = sw ? NULL : randv((size_t)I);
        float *b2 = sw ? NULL : randv((size_t)out), *h0 = randv((size_t)T * out);
        float *mid = malloc(sizeof(float) * T * I), *want = malloc(sizeof(float) * T * out);
        float *got = malloc(sizeof(float) * T * out);
        uint16_t *w1 = malloc((size_t)r1 * in * 2), *w2 = malloc((size_t)out * I * 2);
        ASSERT(x && w1f && w2f && h0 && mid && want && got && w1 && w2);
        ASSERT_OK(ops->weight_convert(c, w1, w1f, VL3__DTYPE_F32, (size_t)r1 * in));
        ASSERT_OK(ops->weight_convert(c, w2, w2f, VL3__DTYPE_F32, (size_t)out * I));
        memcpy(want, h0, sizeof(float) * T * out);
        memcpy(got, h0, sizeof(float) * T * out);
        if (sw) {
            size_t wb = ops->matmul_work_size(c, in > I ? in : I);
            void *work = malloc(wb);
            ASSERT_OK(vl3__cpu_gemm_bf16_swiglu(c, mid, x, w1, T, in, I, work, wb));
            ASSERT_OK(vl3__cpu_gemm_bf16(c, want, mid, w2, T, I, out, 1, -1, work, wb));
            free(work);
        } else {
            ASSERT_OK(vl3__cpu_linear_w16_ex(c, x, w1, b1, mid, T, in, I, VL3__VLIN_GELU_TANH));
            ASSERT_OK(vl3__cpu_linear_w16_ex(c, mid, w2, b2, want, T, I, out, VL3__VLIN_ACC));
        }
        ASSERT_OK(vl3__cpu_gemm_bf16_mlp(c, got, x, w1, b1, shapes[si][4], w2, b2, T, in, I,
                                         out));
        if (memcmp(got, want, sizeof(float) * T * out) != 0) {
            size_t i = 0;
            while (got[i] == want[i])
                i++;
            fprintf(stderr, "FAIL T=%d in=%d I=%d out=%d %s: [%zu] fused %.9g, apart %.9g\n", T,
                    in, I, out, sw ? "swiglu" : "gelu", i, got[i], want[i]);
            return 1;
        }
        double d = 0; /* the MLP added something */
        for (size_t i = 0; i < (size_t)T * out; i++)
            d += fabs(got[i] - h0[i]);
        ASSERT(d > 0 && d == d);
        free(x), free(w1f), free(w2f), free(b1), free(b2), free(h0), free(mid), free(want);
        free(got), free(w1), free(w2);
    }
    /* declined, nothing written: too few rows; the ISA forced below AMX */
    int T = 64, in = 96, I = 64, out = 32;
    float *x = randv((size_t)T * in), *w1f = randv((size_t)I * in), *w2f = randv((size_t)out * I);
    float *y = randv((size_t)T * out), *keep = malloc(sizeof(float) * T * out);
    uint16_t *w1 = malloc((size_t)I * in * 2), *w2 = malloc((size_t)out * I * 2);
    ASSERT_OK(ops->weight_convert(c, w1, w1f, VL3__DTYPE_F32, (size_t)I * in));
    ASSERT_OK(ops->weight_convert(c, w2, w2f, VL3__DTYPE_F32, (size_t)out * I));
    memcpy(keep, y, sizeof(float) * T * out);
    ASSERT_EQ(vl3__cpu_gemm_bf16_mlp(c, y, x, w1, NULL, VL3__CPU_MLP_GELU, w2, NULL, 15, in, I,
                                     out),
              -ENOTSUP);
    vl3__cpu_set_isa(VL3__CPU_ISA_AVX512BF16);
    ASSERT_EQ(vl3__cpu_gemm_bf16_mlp(c, y, x, w1, NULL, VL3__CPU_MLP_GELU, w2, NULL, T, in, I,
                                     out),
              -ENOTSUP);
    vl3__cpu_set_isa(-1);
    ASSERT(memcmp(y, keep, sizeof(float) * T * out) == 0);
    free(x), free(w1f), free(w2f), free(y), free(keep), free(w1), free(w2);
    ops->free(c);
    return 0;
}

/* On the AMX path a token row's result does not depend on the rows it is computed with: the
 * product of T rows, cut into passes (gemm_bf16.c amx_rows_per_pass: 320 rows at K 1536, 96
 * at K 4304, 512 at K 96; pass_rows never leaves a last pass under 16 rows, which would go to
 * the vdpbf16ps kernel and sum in another order), gives the bits of the same rows computed 16 at a time, at
 * the start, across a pass boundary and at the end. T 520 x K 96 is 512 + 8 rows in fixed
 * passes of 512 (8 rows off the tiles); 330 x 1536 is 314 + 16; 200 x 4304 is 96 + 88 + 16. */
TEST(gemm_amx_rows_independent_of_passes)
{
    if (!vl3__cpu_isa_supported(VL3__CPU_ISA_AMX))
        SKIP("this CPU cannot run the amx path");
    static const int shapes[][3] = {{520, 96, 50}, {330, 1536, 40}, {700, 1536, 36},
                                    {200, 4304, 40}};
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    vl3__cpu_set_isa(VL3__CPU_ISA_AMX);
    int fails = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int T = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x = randv((size_t)T * in), *wf = randv((size_t)out * in);
        float *y = malloc(sizeof(float) * T * out), *y16 = malloc(sizeof(float) * 16 * out);
        uint16_t *w = malloc((size_t)out * in * 2);
        ASSERT_OK(ops->weight_convert(c, w, wf, VL3__DTYPE_F32, (size_t)out * in));
        size_t wb = ops->matmul_work_size(c, in);
        void *work = malloc(wb);
        ASSERT_OK(ops->matmul(c, y, x, w, NULL, T, in, out, 0, work, wb));
        int starts[] = {0, 88, 312, 504, 632, T - 16};
        for (int k = 0; k < 6; k++) {
            int t0 = starts[k];
            if (t0 + 16 > T)
                continue;
            ASSERT_OK(ops->matmul(c, y16, x + (size_t)t0 * in, w, NULL, 16, in, out, 0, work,
                                  wb));
            if (memcmp(y16, y + (size_t)t0 * out, sizeof(float) * 16 * out) != 0) {
                fprintf(stderr, "FAIL T=%d in=%d out=%d: rows %d..%d differ from the same rows "
                        "alone\n", T, in, out, t0, t0 + 15);
                fails++;
            }
        }
        free(x), free(wf), free(y), free(y16), free(w), free(work);
    }
    vl3__cpu_set_isa(-1);
    ops->free(c);
    return fails ? 1 : 0;
}

/* bf16 rounding of x: nearest even on ties, NaN kept (the f32 values below are exact ties). */
TEST(round_nearest_even)
{
    ASSERT_EQ(vl3__cpu_f32_to_bf16(1.00390625f), 0x3f80);  /* 1 + 2^-8: tie, even down */
    ASSERT_EQ(vl3__cpu_f32_to_bf16(1.01171875f), 0x3f82);  /* 1 + 3*2^-8: tie, even up */
    ASSERT_EQ(vl3__cpu_f32_to_bf16(-1.01171875f), 0xbf82);
    ASSERT((vl3__cpu_f32_to_bf16(NAN) & 0x7fc0) == 0x7fc0);
    return 0;
}

int vl3__model_random(const vl3_llm_shape *sh, uint64_t seed, int alias_layers, void **ret_host,
                      vl3_model **ret, vl3_error *reterr);

static int make_model(vl3_model **ret_m, void **ret_host, int precision)
{
    vl3_llm_shape sh = {.hidden = 256, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                        .head_dim = 64, .intermediate = 704, .vocab = 301,
                        .max_positions = 512, .rope_theta = 10000.f, .rms_eps = 1e-6f,
                        .tied = 1};
    vl3_error err = {0};
    int r = vl3__model_random(&sh, 99, 0, ret_host, ret_m, &err);
    if (r < 0)
        return r;
    vl3_model_params p = vl3_model_params_default();
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = 2;
    r = vl3__model_backend_init(*ret_m, &p, &err);
    if (r < 0)
        return r;
    vl3__cpu_set_precision((*ret_m)->backend_ctx, precision);
    return 0;
}

static int argmax2(const float *v, int n, int *ret_second)
{
    int a = 0, b = -1;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[a]) {
            b = a;
            a = i;
        } else if (b < 0 || v[i] > v[b]) {
            b = i;
        }
    }
    *ret_second = b;
    return a;
}

TEST(tiny_greedy_bf16_vs_f32)
{
    vl3_model *m[2];
    void *host[2];
    vl3_ctx *ctx[2];
    vl3_error err = {0};
    ASSERT_OK(make_model(&m[0], &host[0], VL3__CPU_PREC_F32));
    ASSERT_OK(make_model(&m[1], &host[1], VL3__CPU_PREC_BF16));
    for (int k = 0; k < 2; k++)
        ASSERT_OK_E(vl3_ctx_new(m[k], NULL, &ctx[k], &err), &err);
    int V = 301, n_prompt = 40;
    int32_t prompt[40], tok[2];
    for (int i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((i * 37 + 11) % V);
    float *lg[2];
    for (int k = 0; k < 2; k++)
        lg[k] = malloc(sizeof(float) * V);
    int steps_equal = 0, parted = 0;
    for (int step = 0; step < 16; step++) {
        for (int k = 0; k < 2; k++) {
            const float *l;
            int seq = 0;
            if (step == 0)
                ASSERT_OK_E(vl3_prefill(ctx[k], 0, prompt, n_prompt, NULL, &l, &err), &err);
            else
                ASSERT_OK_E(vl3_decode_step(ctx[k], &seq, &tok[k], 1, &l, &err), &err);
            memcpy(lg[k], l, sizeof(float) * V);
        }
        double num = 0, den = 0, maxd = 0;
        for (int i = 0; i < V; i++) {
            double d = (double)lg[1][i] - lg[0][i];
            num += d * d;
            den += (double)lg[0][i] * lg[0][i];
            if (fabs(d) > maxd)
                maxd = fabs(d);
        }
        double rel = sqrt(num / den);
        if (!(rel <= BF16_REL_L2))
            TEST__FAIL("step %d: logits rel L2 %.3g > %.3g", step, rel, BF16_REL_L2);
        int s0, s1;
        tok[0] = argmax2(lg[0], V, &s0);
        tok[1] = argmax2(lg[1], V, &s1);
        if (step == 0 && rel == 0)
            TEST__FAIL("bf16 mode gave the f32 logits bit for bit: the bf16 path did not run");
        if (tok[0] != tok[1]) {
            double gap = lg[0][tok[0]] - lg[0][s0];
            fprintf(stderr, "step %d: tokens part (%d vs %d), f32 top-2 gap %.3g, max logit "
                    "difference %.3g\n", step, tok[0], tok[1], gap, maxd);
            if (!(gap <= 2 * maxd))
                TEST__FAIL("tokens differ at step %d beyond the bf16 tolerance", step);
            parted = 1;
            break;
        }
        steps_equal++;
    }
    fprintf(stderr, "%d of 16 greedy steps equal%s\n", steps_equal, parted ? " (then parted)" : "");
    for (int k = 0; k < 2; k++) {
        free(lg[k]);
        vl3_ctx_free(ctx[k]);
        vl3_model_free(m[k]);
        free(host[k]);
    }
    return 0;
}

/* The LLM with its MLP in one op (backend op mlp_swiglu: the gate/up output handed to the down
 * product packed) gives the logits of the same model with the MLP's ops apart (mlp_swiglu and
 * matmul_swiglu absent: matmul, silu_mul, matmul), bit for bit, over a 40-token prefill and 4
 * decode steps (those decline: one row); the fused calls are counted (AMX only). */
static int n_mlp_llm;

static int count_mlp_swiglu(void *ctx, void *y, const void *x, const void *w_gu,
                            const void *w_down, int T, int in, int n_inter)
{
    int r = vl3__backend_cpu_ops.mlp_swiglu(ctx, y, x, w_gu, w_down, T, in, n_inter);
    n_mlp_llm += r == 0;
    return r;
}

TEST(llm_mlp_op_equals_ops_apart)
{
    vl3_model *m;
    void *host;
    vl3_error err = {0};
    ASSERT_OK(make_model(&m, &host, VL3__CPU_PREC_BF16));
    const vl3__backend_ops *keep = m->ops;
    vl3__backend_ops fused = *keep, apart = *keep;
    fused.mlp_swiglu = count_mlp_swiglu;
    apart.mlp_swiglu = NULL;
    apart.matmul_swiglu = NULL;
    int V = 301, n_prompt = 40;
    int32_t prompt[40];
    for (int i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((i * 53 + 7) % V);
    float *lg[2][5];
    for (int k = 0; k < 2; k++) {
        m->ops = k ? &apart : &fused;
        vl3_ctx *ctx;
        ASSERT_OK_E(vl3_ctx_new(m, NULL, &ctx, &err), &err);
        int32_t tok = 0;
        for (int step = 0; step < 5; step++) {
            const float *l;
            int seq = 0;
            if (step == 0)
                ASSERT_OK_E(vl3_prefill(ctx, 0, prompt, n_prompt, NULL, &l, &err), &err);
            else
                ASSERT_OK_E(vl3_decode_step(ctx, &seq, &tok, 1, &l, &err), &err);
            lg[k][step] = malloc(sizeof(float) * V);
            memcpy(lg[k][step], l, sizeof(float) * V);
            int s;
            tok = argmax2(l, V, &s);
        }
        vl3_ctx_free(ctx);
    }
    m->ops = keep;
    ASSERT_EQ(n_mlp_llm, vl3__cpu_isa() == VL3__CPU_ISA_AMX ? 2 : 0); /* 2 layers, prefill */
    for (int step = 0; step < 5; step++) {
        if (memcmp(lg[0][step], lg[1][step], sizeof(float) * V) != 0)
            TEST__FAIL("step %d: the logits with the MLP in one op differ from the ops apart",
                       step);
        free(lg[0][step]), free(lg[1][step]);
    }
    vl3_model_free(m);
    free(host);
    return 0;
}

/* ---- timing (skipped unless VL3_BENCH is set) ----------------------------------------------
 * GFLOP/s of each path at the 2B LLM's prefill shapes (T = 391 tokens: a 384x191 text page) and
 * the decode GB/s (T = 1: weight bytes / time) beside f32 mode (matmul.c: OpenBLAS sgemm on
 * widened W for T > 32, the AVX-512 widening kernel for T <= 32) and a plain read of the same
 * matrices (read_pass_task), 2 threads. */
static double bench_one(void *c, int isa, int prec, int T, int in, int out, int reps)
{
    float *x = randv((size_t)T * in), *y = malloc(sizeof(float) * T * out);
    uint16_t *w = malloc((size_t)out * in * 2);
    for (size_t i = 0; i < (size_t)out * in; i++)
        w[i] = vl3__cpu_f32_to_bf16((float)urand() * 0.05f);
    vl3__cpu_set_precision(c, prec);
    vl3__cpu_set_isa(isa);
    size_t wb = ops->matmul_work_size(c, in);
    void *work = malloc(wb);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = vl3_time_s();
        if (ops->matmul(c, y, x, w, NULL, T, in, out, 0, work, wb) < 0)
            return -1;
        double dt = vl3_time_s() - t0;
        best = dt < best ? dt : best;
    }
    free(x), free(y), free(w), free(work);
    vl3__cpu_set_isa(-1);
    return best;
}

/* What the decode rows are measured against: a plain read of the same matrices
 * (vl3__cpu_read_stream with the decode kernels' two prefetches), each matrix split between the
 * same threads. */
struct read_pass {
    uint16_t *const *m;
    int nmat, nt;
    size_t bytes;
    unsigned long long sum[64];
};

static void read_pass_task(void *arg, int k)
{
    struct read_pass *r = arg;
    size_t lo = r->bytes * k / r->nt & ~(size_t)255, hi = r->bytes * (k + 1) / r->nt & ~(size_t)255;
    for (int i = 0; i < r->nmat; i++)
        r->sum[k] += vl3__cpu_read_stream((const char *)r->m[i] + lo, hi - lo, 2);
}

TEST(bench_gemm)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the GEMM paths");
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    static const int shapes[][3] = {{391, 1536, 2048}, {391, 1536, 17920}, {391, 8960, 1536},
                                    {1, 1536, 17920},  {1, 8960, 1536},    {4, 1536, 17920}};
    printf("%-6s %-6s %-6s %-22s %10s %10s %10s\n", "T", "in", "out", "path", "ms", "GFLOP/s",
           "W GB/s");
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int T = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        for (int p = -1; p < VL3__CPU_ISA_COUNT; p++) {
            if (p >= 0 && !vl3__cpu_isa_supported(p))
                continue;
            if (p >= 0 && p < VL3__CPU_ISA_AVX512)
                continue; /* the scalar/AVX2 fallbacks: not interesting on this machine */
            double dt = bench_one(c, p < 0 ? -1 : p, p < 0 ? VL3__CPU_PREC_F32 : VL3__CPU_PREC_BF16,
                                  T, in, out, T > 32 ? 3 : 10);
            char name[32];
            snprintf(name, sizeof(name), "%s", p < 0 ? "f32 mode" : vl3__cpu_isa_name(p));
            if (p >= 0)
                snprintf(name, sizeof(name), "bf16 %s", vl3__cpu_isa_name(p));
            printf("%-6d %-6d %-6d %-22s %10.3f %10.1f %10.2f\n", T, in, out, name, dt * 1e3,
                   2.0 * T * in * out / dt / 1e9, 2.0 * in * out / dt / 1e9);
            fflush(stdout);
        }
    }
    /* the vision encoder's linear op at one image's 378 patches: f32 sgemm, bf16 with the per-call
     * weight rounding, and the bf16 product alone */
    printf("\nvision linear, P = 378\n");
    static const int vshapes[][2] = {{1152, 1152}, {1152, 4304}, {4304, 1152}};
    for (int vi = 0; vi < 3; vi++) {
        int in = vshapes[vi][0], out = vshapes[vi][1], P = 378;
        float *x = randv((size_t)P * in), *w = randv((size_t)out * in), *y = malloc(4 * P * out);
        double tt[2];
        for (int prec = 0; prec < 2; prec++) {
            vl3__cpu_set_precision(c, prec);
            tt[prec] = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = vl3_time_s();
                ASSERT_OK(vl3__cpu_vision_ops.linear(c, x, w, NULL, y, P, in, out));
                double dt = vl3_time_s() - t0;
                tt[prec] = dt < tt[prec] ? dt : tt[prec];
            }
        }
        double gm = bench_one(c, -1, VL3__CPU_PREC_BF16, P, in, out, 3);
        printf("%5d x %5d: f32 %.2f ms, bf16 %.2f ms (product alone %.2f ms)\n", in, out,
               tt[0] * 1e3, tt[1] * 1e3, gm * 1e3);
        free(x), free(w), free(y);
    }
    /* decode: T = 1 over 16 gate/up-sized matrices (880 MB, beyond the L3), each read once per
     * pass as a decode step reads every layer's weights */
    enum { NMAT = 16 };
    int in = 1536, out = 17920;
    uint16_t *wm[NMAT];
    for (int i = 0; i < NMAT; i++) {
        wm[i] = malloc((size_t)out * in * 2);
        if (!wm[i])
            TEST__FAIL("out of memory");
        memset(wm[i], 0x3c, (size_t)out * in * 2);
    }
    float *x = randv(in), *y = malloc(sizeof(float) * out);
    printf("\ndecode T=1, %d x (%d x %d) bf16 = %.0f MB per pass\n", NMAT, out, in,
           NMAT * 2.0 * in * out / 1e6);
    for (int p = -1; p < VL3__CPU_ISA_COUNT; p++) {
        if ((p >= 0 && !vl3__cpu_isa_supported(p)) || (p >= 0 && p < VL3__CPU_ISA_AVX512))
            continue;
        vl3__cpu_set_precision(c, p < 0 ? VL3__CPU_PREC_F32 : VL3__CPU_PREC_BF16);
        vl3__cpu_set_isa(p);
        size_t wb = ops->matmul_work_size(c, in);
        void *work = malloc(wb);
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = vl3_time_s();
            for (int i = 0; i < NMAT; i++)
                ASSERT_OK(ops->matmul(c, y, x, wm[i], NULL, 1, in, out, 0, work, wb));
            double dt = vl3_time_s() - t0;
            best = dt < best ? dt : best;
        }
        printf("%-22s %8.2f ms/pass %8.2f GB/s\n", p < 0 ? "f32 mode" : vl3__cpu_isa_name(p),
               best * 1e3, NMAT * 2.0 * in * out / best / 1e9);
        fflush(stdout);
        free(work);
    }
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        struct read_pass rp = {wm, NMAT, vl3__cpu_threads(c), (size_t)out * in * 2, {0}};
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = vl3_time_s();
            vl3__cpu_run(c, rp.nt, read_pass_task, &rp);
            double dt = vl3_time_s() - t0;
            best = dt < best ? dt : best;
        }
        printf("%-22s %8.2f ms/pass %8.2f GB/s\n", "read loop", best * 1e3,
               NMAT * 2.0 * in * out / best / 1e9);
    }
#endif
    vl3__cpu_set_isa(-1);
    for (int i = 0; i < NMAT; i++)
        free(wm[i]);
    free(x), free(y);
    ops->free(c);
    return 0;
}

/* A decode step's weight products in the 2B model's order (28 x q/k/v, o, gate/up, down, then
 * the lm_head: 3.09 GB, one buffer in 2 MiB pages as the mapped checkpoint is) against one
 * product streaming the same bytes: what the ~113 calls of a step cost over one stream (thread
 * wake-ups, the last chunk of each call, the prefetch restarting), on 1 and 2 threads, wall time,
 * interleaved passes, the median of the ratios and the best of each. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

TEST(bench_decode_products)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the decode step's products");
    enum { L = 28, C = 1536, I = 8960, V = 151936, PASSES = 7 };
    static const int shp[4][2] = {{C, 2048}, {C, C}, {C, 2 * I}, {I, C}};
    size_t per_layer = 0;
    for (int i = 0; i < 4; i++)
        per_layer += (size_t)shp[i][0] * shp[i][1];
    size_t n = per_layer * L + (size_t)V * C, bytes = n * 2;
    size_t huge = (size_t)2 << 20, alloc = (bytes + huge - 1) / huge * huge;
    uint16_t *w = NULL;
    if (posix_memalign((void **)&w, huge, alloc) != 0)
        TEST__FAIL("out of memory");
    (void)madvise(w, alloc, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i++)
        w[i] = (uint16_t)(0x3c00 + (i & 255)); /* bf16 values near 0.008 */
    int rows_all = (int)(n / C);
    float *x = randv(I), *y = malloc(sizeof(float) * (size_t)rows_all);
    printf("decode products, %.2f GB of bf16 weights per pass\n", bytes / 1e9);
    printf("%-8s %12s %12s %12s %14s\n", "threads", "step ms", "one ms", "step GB/s",
           "step / one");
    for (int nt = 1; nt <= 2; nt++) {
        void *c = NULL;
        ASSERT_OK(ops->init(0, nt, &c, NULL));
        vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
        size_t wb = ops->matmul_work_size(c, I);
        void *work = malloc(wb);
        double best_seq = 1e30, best_one = 1e30, ratio[PASSES];
        for (int pass = 0; pass < PASSES; pass++) {
            double t0 = vl3_time_s();
            size_t off = 0;
            for (int l = 0; l < L; l++)
                for (int i = 0; i < 4; i++) {
                    ASSERT_OK(ops->matmul(c, y, x, w + off, NULL, 1, shp[i][0], shp[i][1], 0,
                                          work, wb));
                    off += (size_t)shp[i][0] * shp[i][1];
                }
            ASSERT_OK(ops->matmul(c, y, x, w + off, NULL, 1, C, V, 0, work, wb));
            double t1 = vl3_time_s();
            ASSERT_OK(ops->matmul(c, y, x, w, NULL, 1, C, rows_all, 0, work, wb));
            double t2 = vl3_time_s();
            best_seq = t1 - t0 < best_seq ? t1 - t0 : best_seq;
            best_one = t2 - t1 < best_one ? t2 - t1 : best_one;
            ratio[pass] = (t1 - t0) / (t2 - t1);
        }
        qsort(ratio, PASSES, sizeof(double), cmp_double);
        printf("%-8d %12.2f %12.2f %12.2f %8.3f (%.3f-%.3f)\n", nt, best_seq * 1e3,
               best_one * 1e3, bytes / best_seq / 1e9, ratio[PASSES / 2], ratio[0],
               ratio[PASSES - 1]);
        fflush(stdout);
        /* the products ran: every output of the single stream is a finite, non-zero sum */
        ASSERT(y[0] != 0 && y[0] == y[0] && y[rows_all - 1] != 0);
        free(work);
        ops->free(c);
    }
    free(x), free(y), free(w);
    return 0;
}

/* Prefill of T = 391 tokens (a 384x191 text page) through 4 layers of the 2B LLM shape, random
 * weights, f32 vs bf16 mode: the second and third passes timed (the first touches the arena). */
TEST(bench_prefill)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the prefill");
    vl3_llm_shape sh = vl3_llm_shape_2b();
    sh.n_layers = getenv("VL3_BENCH_LAYERS") ? atoi(getenv("VL3_BENCH_LAYERS")) : 4;
    int T = getenv("VL3_BENCH_TOKENS") ? atoi(getenv("VL3_BENCH_TOKENS")) : 391;
    vl3_model *m;
    void *host;
    vl3_error err = {0};
    ASSERT_OK_E(vl3__model_random(&sh, 5, 1, &host, &m, &err), &err);
    vl3_model_params p = vl3_model_params_default();
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = 2;
    ASSERT_OK_E(vl3__model_backend_init(m, &p, &err), &err);
    int32_t *ids = malloc(sizeof(int32_t) * T);
    for (int i = 0; i < T; i++)
        ids[i] = (i * 7919) % sh.vocab;
    for (int prec = 0; prec < 2; prec++) {
        vl3__cpu_set_precision(m->backend_ctx, prec);
        vl3_ctx *ctx;
        vl3_ctx_params cp = vl3_ctx_params_default();
        cp.n_ctx = T + 8;
        cp.n_batch = T;
        ASSERT_OK_E(vl3_ctx_new(m, &cp, &ctx, &err), &err);
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            vl3_ctx_reset(ctx);
            double t0 = vl3_time_s();
            ASSERT_OK_E(vl3_prefill(ctx, 0, ids, T, NULL, NULL, &err), &err);
            double dt = vl3_time_s() - t0;
            if (rep > 0 && dt < best)
                best = dt;
        }
        printf("prefill %d tokens, %d layers, %s mode: %.3f s (%.1f tokens/s)\n", T, sh.n_layers,
               prec ? "bf16" : "f32", best, T / best);
        fflush(stdout);
        vl3_ctx_free(ctx);
    }
    free(ids);
    vl3_model_free(m);
    free(host);
    return 0;
}

/* A bf16 checkpoint loaded on the CPU backend: the single-tensor matrices (embedding, o_proj,
 * down_proj) and gate+up (adjacent in the file) are used where they lie in the mapping, so the
 * slab holds only what had to be fused or converted (q/k/v, the f32 vectors). */
TEST(weights_mapped_in_place)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/tiny_mapped", test_tmpdir());
    vl3_error err = {0};
    vl3_tiny_params tp = vl3_tiny_params_default();
    ASSERT_OK_E(vl3_model_write_tiny(dir, &tp, &err), &err);
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = 2;
    vl3_model *m;
    ASSERT_OK_E(vl3_model_load(&p, &m, &err), &err);
    const struct vl3__llm_bweights *bw = m->backend_weights;
    ASSERT(bw->embed == m->w.embed.data);
    int n_gu = 0;
    for (int l = 0; l < m->llm.n_layers; l++) {
        const struct vl3__llm_layer *hl = &m->w.layers[l];
        ASSERT(bw->layers[l].wo == hl->wo.data);
        ASSERT(bw->layers[l].w_down == hl->w_down.data);
        if ((const char *)hl->w_gate.data + hl->w_gate.nbytes == hl->w_up.data) {
            ASSERT(bw->layers[l].w_gu == hl->w_gate.data);
            n_gu++;
        } else {
            ASSERT(bw->layers[l].w_gu != hl->w_gate.data);
        }
        ASSERT(bw->layers[l].wqkv != hl->wq.data); /* q, k, v are not adjacent: fused copy */
    }
    fprintf(stderr, "gate+up in place in %d of %d layers; slab %zu bytes\n", n_gu,
            m->llm.n_layers, bw->slab_bytes);
    size_t all = m->w.embed.nbytes;
    for (int l = 0; l < m->llm.n_layers; l++)
        all += m->w.layers[l].wo.nbytes + m->w.layers[l].w_down.nbytes;
    ASSERT(bw->slab_bytes < all); /* the mapped matrices are not in the slab */
    vl3_model_free(m);
    return 0;
}

/* The vision encoder's linear op in bf16 mode (f32 weights rounded per call) against double sums
 * of the rounded x and W plus the bias, at the encoder's widths (patch embedding K = 588, C 1152,
 * I 4304) and odd row counts; same tolerance as the GEMM cases. */
TEST(vision_linear_bf16)
{
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    static const int shapes[][3] = {{37, 588, 1152}, {5, 1152, 1152}, {70, 1152, 4304},
                                    {19, 4304, 1152}, {1, 33, 7}};
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int P = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x = randv((size_t)P * in), *w = randv((size_t)out * in), *b = randv(out);
        float *y = malloc(sizeof(float) * P * out);
        ASSERT_OK(vl3__cpu_vision_ops.linear(c, x, w, b, y, P, in, out));
        double worst = 0;
        for (int p = 0; p < P; p++)
            for (int o = 0; o < out; o++) {
                double s = b[o], m = fabs(b[o]);
                for (int i = 0; i < in; i++) {
                    double t = bf16_value(x[(size_t)p * in + i]) * bf16_value(w[(size_t)o * in + i]);
                    s += t;
                    m += fabs(t);
                }
                double e = fabs(y[(size_t)p * out + o] - s) / m;
                worst = e > worst || e != e ? e : worst;
            }
        free(x), free(w), free(b), free(y);
        if (!(worst <= GEMM_TOL))
            TEST__FAIL("vision linear P=%d in=%d out=%d: error %.3g of sum|xw| (tol %.1g)", P, in,
                       out, worst, GEMM_TOL);
    }
    ops->free(c);
    return 0;
}

/* One thread, CPU time (not wall): the AMX and AVX512-BF16 kernels' own rate, immune to the
 * other jobs of a shared machine (VL3_BENCH; VL3_BENCH_AMX_ONLY=1 times the amx path alone). */
TEST(bench_gemm_cputime)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the GEMM paths");
    void *c = NULL;
    ASSERT_OK(ops->init(0, 1, &c, NULL));
    static const int shapes[][3] = {{391, 1536, 2048}, {391, 1536, 8960}, {391, 8960, 1536},
                                    {378, 1152, 4304}, {378, 4304, 1152}, {512, 1536, 8960},
                                    {512, 8960, 1536}, {1, 1536, 8960}};
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int T = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        /* 64-byte aligned, as the engine's arenas and weight slab are (mem.c) */
        float *x = aligned_alloc(64, ((size_t)T * in * 4 + 63) & ~(size_t)63);
        float *y = aligned_alloc(64, ((size_t)T * out * 4 + 63) & ~(size_t)63);
        uint16_t *w = aligned_alloc(64, ((size_t)out * in * 2 + 63) & ~(size_t)63);
        for (size_t i = 0; i < (size_t)T * in; i++)
            x[i] = (float)urand();
        for (size_t i = 0; i < (size_t)out * in; i++)
            w[i] = vl3__cpu_f32_to_bf16((float)urand() * 0.05f);
        for (int p = -1; p < VL3__CPU_ISA_COUNT; p++) {
            if (p >= 0 && (!vl3__cpu_isa_supported(p) || p < VL3__CPU_ISA_AVX512BF16))
                continue;
            if (getenv("VL3_BENCH_AMX_ONLY") && p != VL3__CPU_ISA_AMX)
                continue;
            vl3__cpu_set_precision(c, p < 0 ? VL3__CPU_PREC_F32 : VL3__CPU_PREC_BF16);
            vl3__cpu_set_isa(p);
            size_t wb = ops->matmul_work_size(c, in);
            void *work = malloc(wb);
            double best = 1e30;
            for (int rep = 0; rep < 4; rep++) {
                struct timespec a, b;
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
                ASSERT_OK(ops->matmul(c, y, x, w, NULL, T, in, out, 0, work, wb));
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
                double dt = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
                best = dt < best ? dt : best;
            }
            printf("T %4d in %5d out %5d %-12s %9.3f ms cpu %8.1f GFLOP/s\n", T, in, out,
                   p < 0 ? "f32 mode" : vl3__cpu_isa_name(p), best * 1e3,
                   2.0 * T * in * out / best / 1e9);
            fflush(stdout);
            free(work);
        }
        free(x), free(y), free(w);
    }
    vl3__cpu_set_isa(-1);
    ops->free(c);
    return 0;
}

/* ---- the backend's thread pool (parallel.c) -------------------------------------------------
 * thread_pool: vl3__cpu_run runs each task exactly once per call (a task run twice or skipped
 * shows in the per-call counts), on more than one thread (tasks that sleep cannot all be taken by
 * the caller), including when a task calls into the same pool (nested: the busy pool falls back
 * to threads made for the call) and when two threads share one context; the same product on 1
 * and on 3 threads gives the same bits (the split is by output rows, each summed as one thread
 * would). */
struct pool_probe {
    int counts[64];
    pthread_t who[64];
    void *ctx;
    int nested;
    long long nested_sum;
};

static void nested_range(void *arg, int64_t lo, int64_t hi)
{
    long long s = 0;
    for (int64_t i = lo; i < hi; i++)
        s += i;
    __atomic_add_fetch((long long *)arg, s, __ATOMIC_RELAXED);
}

static void probe_task(void *arg, int k)
{
    struct pool_probe *p = arg;
    __atomic_add_fetch(&p->counts[k], 1, __ATOMIC_RELAXED);
    p->who[k] = pthread_self();
    if (p->nested) {
        long long s = 0;
        vl3__cpu_parallel(p->ctx, 1000, 10, nested_range, &s);
        __atomic_add_fetch(&p->nested_sum, s, __ATOMIC_RELAXED);
    }
    if (k < 2 && !p->nested) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static int pool_calls(void *c, int calls, int nested, int *ret_threads_seen)
{
    struct pool_probe p;
    int multi = 0;
    for (int i = 0; i < calls; i++) {
        int n = 1 + i % 9;
        memset(&p, 0, sizeof(p));
        p.ctx = c;
        p.nested = nested;
        vl3__cpu_run(c, n, probe_task, &p);
        for (int k = 0; k < 64; k++)
            if (p.counts[k] != (k < n)) {
                fprintf(stderr, "call %d (n %d): task %d ran %d times\n", i, n, k, p.counts[k]);
                return -1;
            }
        if (nested && p.nested_sum != (long long)n * 999 * 1000 / 2) {
            fprintf(stderr, "call %d: nested sum %lld\n", i, p.nested_sum);
            return -1;
        }
        for (int k = 1; k < n; k++)
            multi |= !pthread_equal(p.who[k], p.who[0]);
    }
    if (ret_threads_seen)
        *ret_threads_seen = multi;
    return 0;
}

struct pool_user {
    void *ctx;
    int rc;
};

static void *pool_user_main(void *arg)
{
    struct pool_user *u = arg;
    u->rc = pool_calls(u->ctx, 300, 0, NULL);
    return NULL;
}

TEST(thread_pool)
{
    void *c = NULL;
    ASSERT_OK(ops->init(0, 3, &c, NULL));
    int multi = 0;
    ASSERT_OK(pool_calls(c, 200, 0, &multi));
    ASSERT(multi); /* the 2 ms tasks 0 and 1 ran on different threads at least once */
    ASSERT_OK(pool_calls(c, 50, 1, NULL));
    /* two threads on one context: one holds the pool, the other runs on its own threads */
    struct pool_user u[2] = {{c, -1}, {c, -1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, pool_user_main, &u[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_OK(u[0].rc);
    ASSERT_OK(u[1].rc);
    /* the same product on 1 and 3 threads: identical bits (all paths this CPU runs) */
    void *c1 = NULL;
    ASSERT_OK(ops->init(0, 1, &c1, NULL));
    int T = 100, in = 1536, out = 1000;
    float *x = randv((size_t)T * in), *y1 = malloc(sizeof(float) * T * out);
    float *y3 = malloc(sizeof(float) * T * out);
    uint16_t *w = malloc((size_t)out * in * 2);
    for (size_t i = 0; i < (size_t)out * in; i++)
        w[i] = vl3__cpu_f32_to_bf16((float)urand());
    for (int isa = VL3__CPU_ISA_AVX512BF16; isa < VL3__CPU_ISA_COUNT; isa++) {
        if (!vl3__cpu_isa_supported(isa))
            continue;
        vl3__cpu_set_isa(isa);
        for (int tt = 1; tt <= T; tt += T - 1) { /* one token (decode) and T */
            void *cc[2] = {c1, c};
            float *yy[2] = {y1, y3};
            for (int i = 0; i < 2; i++) {
                vl3__cpu_set_precision(cc[i], VL3__CPU_PREC_BF16);
                size_t wb = ops->matmul_work_size(cc[i], in);
                void *work = malloc(wb);
                memset(yy[i], 0, sizeof(float) * T * out);
                ASSERT_OK(ops->matmul(cc[i], yy[i], x, w, NULL, tt, in, out, 0, work, wb));
                free(work);
            }
            ASSERT(memcmp(y1, y3, sizeof(float) * (size_t)tt * out) == 0);
        }
    }
    vl3__cpu_set_isa(-1);
    free(x), free(y1), free(y3), free(w);
    ops->free(c1);
    ops->free(c);
    /* a context freed before its pool ever started, and one freed right after a call */
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    ops->free(c);
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    ASSERT_OK(pool_calls(c, 3, 0, NULL));
    ops->free(c);
    return 0;
}

/* Cost of one parallel call with trivial tasks: the pool against threads made per call (what
 * every op did before the pool), 2 threads (VL3_BENCH). */
static void noop_task(void *arg, int k)
{
    __atomic_add_fetch((int *)arg + k, 1, __ATOMIC_RELAXED);
}

static void *noop_thread(void *arg)
{
    noop_task(arg, 1);
    return NULL;
}

TEST(bench_pool)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the thread pool");
    void *c = NULL;
    ASSERT_OK(ops->init(0, 2, &c, NULL));
    int cnt[2] = {0, 0}, N = 20000;
    double t0 = vl3_time_s();
    for (int i = 0; i < N; i++)
        vl3__cpu_run(c, 2, noop_task, cnt);
    double tp = (vl3_time_s() - t0) / N;
    t0 = vl3_time_s();
    for (int i = 0; i < N / 10; i++) {
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, noop_thread, cnt), 0);
        noop_task(cnt, 0);
        pthread_join(th, NULL);
    }
    double tc = (vl3_time_s() - t0) / (N / 10);
    ASSERT_EQ(cnt[0], N + N / 10);
    printf("one call of 2 trivial tasks: pool %.2f us, pthread_create + join %.2f us\n", tp * 1e6,
           tc * 1e6);
    ops->free(c);
    /* more threads than cores (8 on this machine's 2): the caller should not wait for workers
     * that get no task */
    ASSERT_OK(ops->init(0, 8, &c, NULL));
    int cnt8[8] = {0};
    t0 = vl3_time_s();
    for (int i = 0; i < N / 10; i++)
        vl3__cpu_run(c, 2, noop_task, cnt8);
    printf("one call of 2 trivial tasks on a pool of 8 threads: %.2f us\n",
           (vl3_time_s() - t0) / (N / 10) * 1e6);
    ASSERT_EQ(cnt8[0], N / 10);
    ops->free(c);
    return 0;
}

/* The vision encoder with its GELU and residual adds fused into the AMX GEMM's epilogue (vision
 * ops linear_bf16_ex), the MLP in one op (fc1's output handed to fc2 packed: linear_bf16_mlp)
 * and q, k, v from one packing of x (linear_bf16_n) gives the bits of the ops run apart (the
 * same vision ops with the three absent): a tiny native checkpoint 48 wide (3 heads of
 * 16, MLP 100: output tails in the 32-wide blocks) in bf16 mode, one batch of an image and a
 * two-frame video (128 patches), one of 520 patches (passes of 504 and 16 rows, both on the
 * tiles) and one of 8 patches (under the tiles' 16 rows: the fused op declines, -ENOTSUP, and the
 * encoder runs the ops apart). The fused calls are counted: they really ran (on the AMX path; on
 * the others every fused call declines). */
static int n_fused;

static int count_ex(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                    int64_t P, int in, int out, int flags)
{
    int r = vl3__cpu_vision_ops.linear_bf16_ex(ctx, x, w, b, y, P, in, out, flags);
    n_fused += r == 0;
    return r;
}

static int n_multi, n_mlp;

static int count_mlp(void *ctx, const float *x, const uint16_t *w1, const float *b1,
                     const uint16_t *w2, const float *b2, float *h, int64_t P, int in, int I)
{
    int r = vl3__cpu_vision_ops.linear_bf16_mlp(ctx, x, w1, b1, w2, b2, h, P, in, I);
    n_mlp += r == 0;
    return r;
}

static int count_n(void *ctx, const float *x, int n, const uint16_t *const *w,
                   const float *const *b, float *const *y, int64_t P, int in, int out)
{
    int r = vl3__cpu_vision_ops.linear_bf16_n(ctx, x, n, w, b, y, P, in, out);
    n_multi += r == 0 && n == 3;
    return r;
}

static int encode_with(vl3_model *m, const struct vl3__vision_ops *vo, const vl3_pixel_batch *b,
                       float *out)
{
    const vl3__backend_ops *keep = m->ops;
    vl3__backend_ops o = *keep;
    o.vision = vo;
    m->ops = &o;
    vl3_vision *v = NULL;
    vl3_error err = {0};
    int r = vl3_vision_new(m, 2, &v, &err);
    if (r == 0)
        r = vl3_vision_encode(v, b, NULL, out, &err);
    if (r < 0)
        fprintf(stderr, "encode: %s\n", err.msg);
    vl3_vision_free(v);
    m->ops = keep;
    return r;
}

TEST(vision_encoder_fused_epilogue_equals_ops_apart)
{
    int amx = vl3__cpu_isa() == VL3__CPU_ISA_AMX; /* else (no AMX, VL3_CPU_ISA) all declined */
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tiny_fused", test_tmpdir());
    struct vl3__tiny_params tp;
    vl3__tiny_params_default(&tp);
    tp.layout = VL3__LAYOUT_NATIVE;
    tp.seed = 5;
    tp.std = 0.2;
    tp.v_hidden = 48;
    tp.v_heads = 3;
    tp.v_intermediate = 100;
    vl3_error err = {0};
    ASSERT_OK_E(vl3__tiny_write(dir, &tp, &err), &err);
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.backend = VL3_BACKEND_CPU;
    mp.n_threads = 2;
    vl3_model *m = NULL;
    ASSERT_OK_E(vl3_model_load(&mp, &m, &err), &err);
    vl3__cpu_set_precision(m->backend_ctx, VL3__CPU_PREC_BF16);
    struct vl3__vision_ops fused = vl3__cpu_vision_ops, apart = vl3__cpu_vision_ops;
    fused.linear_bf16_ex = count_ex;
    fused.linear_bf16_n = count_n;
    fused.linear_bf16_mlp = count_mlp;
    apart.linear_bf16_ex = NULL;
    apart.linear_bf16_n = NULL;
    apart.linear_bf16_mlp = NULL;
    vl3_vision_grid g1[2] = {{1, 8, 10, 2}, {2, 6, 4, 2}}, g2 = {1, 20, 26, 2}, g3 = {1, 2, 4, 2};
    static const int n_items[3] = {2, 1, 1};
    vl3_vision_grid *grids[3] = {g1, &g2, &g3};
    for (int bi = 0; bi < 3; bi++) {
        vl3_pixel_batch b = {0};
        b.patch_dim = 588;
        b.n_items = n_items[bi];
        b.grids = grids[bi];
        int64_t ntok = 0;
        for (int i = 0; i < b.n_items; i++) {
            b.n_patches += (int64_t)b.grids[i].t * b.grids[i].h * b.grids[i].w;
            ntok += (int64_t)b.grids[i].t * vl3_vision_grid_tokens_per_frame(&b.grids[i]);
        }
        b.pixel_values = randv((size_t)b.n_patches * 588);
        size_t n = (size_t)ntok * (size_t)m->llm.hidden;
        float *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
        n_fused = n_multi = n_mlp = 0;
        ASSERT_OK(encode_with(m, &fused, &b, y1));
        ASSERT_OK(encode_with(m, &apart, &b, y2));
        fprintf(stderr, "  %lld patches: %d fused products, %d MLPs in one op\n",
                (long long)b.n_patches, n_fused, n_mlp);
        /* per layer: the attention's residual add fused, and the MLP in one op */
        ASSERT_EQ(n_fused, bi < 2 && amx ? tp.v_layers : 0);
        ASSERT_EQ(n_mlp, bi < 2 && amx ? tp.v_layers : 0);
        ASSERT_EQ(n_multi, tp.v_layers); /* q, k, v in one call (x packed once on AMX) */
        ASSERT(memcmp(y1, y2, sizeof(float) * n) == 0);
        float s = 0;
        for (size_t i = 0; i < n; i++)
            s += fabsf(y1[i]);
        ASSERT(s > 0 && s == s);
        free(y1), free(y2), free(b.pixel_values);
    }
    vl3_model_free(m);
    return 0;
}
