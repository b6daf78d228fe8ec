/* test_gemm_desc.c: the CUDA backend's matrix-product descriptor (engine/backend/cuda/
 * gemm_desc.h) and its host execution path, which follows cuBLASLt's column-major semantics.
 * References are written here in double precision from the logical matrices op(A), op(B); the
 * stored operands are padded past their leading dimension with NaN, so a descriptor or an
 * execution path that reads the wrong element (a swapped transpose or leading dimension) gives
 * NaN, not a near miss. The linear-layer plan is also checked against the CPU backend's matmul
 * (the oracle of every backend). Tolerances: f32 accumulation over k <= 1536 terms of values in
 * (-1, 1): max abs error 1e-4 (bf16 operands are exact in f32). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda/gemm_desc.h"
#include "model.h"
#include "test.h"

static uint64_t rng = 7;

static float urand(void)
{
    return (float)test_urand(&rng);
}

static uint16_t to_bf16(float f) /* truncation is enough to make an exact bf16 value */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Store the logical (rows x cols) matrix L (row-major, double) column-major with leading
 * dimension ld, transposed when trans (stored = L^T), padding NaN. Returns f32 or bf16 bytes. */
static void *store_op(const double *L, int rows, int cols, int trans, int ld, int bf16)
{
    int srows = trans ? cols : rows, scols = trans ? rows : cols;
    size_t n = (size_t)ld * scols;
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        f[i] = NAN;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int sr = trans ? c : r, sc = trans ? r : c;
            f[(size_t)sc * ld + sr] = (float)L[(size_t)r * cols + c];
        }
    (void)srows;
    if (!bf16)
        return f;
    uint16_t *h = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++)
        h[i] = to_bf16(f[i]);
    free(f);
    return h;
}

/* v with its low 16 bits dropped: an exact bf16 value. (Not inlined: GCC 12 -O2 dropped the
 * rounding when this was written inline in logical()'s loop.) */
__attribute__((noinline)) static float bf16_trunc(float v)
{
    volatile uint32_t u;
    memcpy((void *)&u, &v, 4);
    u &= 0xffff0000u;
    uint32_t w = u;
    memcpy(&v, &w, 4);
    return v;
}

static double *logical(int rows, int cols, int bf16)
{
    double *L = malloc(sizeof(double) * (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++) {
        float v = urand();
        L[i] = bf16 ? bf16_trunc(v) : v;
    }
    return L;
}

TEST(host_gemm_transposes_and_leading_dims)
{
    static const struct { int m, n, k; } sz[] = {{1, 1, 1}, {3, 5, 7}, {17, 2, 33}, {8, 16, 64}};
    for (size_t si = 0; si < sizeof(sz) / sizeof(sz[0]); si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bf = 0; bf < 2; bf++) {
                    int m = sz[si].m, n = sz[si].n, k = sz[si].k;
                    struct vl3__gemm_desc d = {
                        .m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb,
                        .lda = (ta ? k : m) + 3, .ldb = (tb ? n : k) + 1, .ldc = m + 2,
                        .a_type = bf ? VL3__GEMM_BF16 : VL3__GEMM_F32,
                        .b_type = VL3__GEMM_F32, .c_type = VL3__GEMM_F32,
                        .epilogue = VL3__GEMM_EPI_BIAS, .alpha = 0.5f, .beta = 1.0f};
                    double *LA = logical(m, k, bf), *LB = logical(k, n, 0);
                    double *LC = logical(m, n, 0), *bias_d = logical(m, 1, 0);
                    void *A = store_op(LA, m, k, ta, d.lda, bf);
                    void *B = store_op(LB, k, n, tb, d.ldb, 0);
                    float *C = store_op(LC, m, n, 0, d.ldc, 0);
                    float *bias = malloc(sizeof(float) * m);
                    for (int i = 0; i < m; i++)
                        bias[i] = (float)bias_d[i];
                    ASSERT_OK(vl3__gemm_host(&d, A, B, C, bias));
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int p = 0; p < k; p++)
                                s += LA[i * k + p] * LB[p * n + j];
                            double want = 0.5 * s + LC[i * n + j] + bias_d[i];
                            double got = C[(size_t)j * d.ldc + i];
                            if (!(fabs(got - want) <= 1e-4))
                                TEST__FAIL("m=%d n=%d k=%d ta=%d tb=%d bf16=%d: D[%d,%d] = %.7g, "
                                           "want %.7g", m, n, k, ta, tb, bf, i, j, got, want);
                        }
                    for (int j = 0; j < n; j++) /* the padding rows of C are untouched */
                        for (int i = m; i < d.ldc; i++)
                            ASSERT(isnan(C[(size_t)j * d.ldc + i]));
                    free(LA), free(LB), free(LC), free(bias_d), free(A), free(B), free(C);
                    free(bias);
                }
    return 0;
}

TEST(host_gemm_epilogues_and_bf16_output)
{
    int m = 6, n = 4, k = 9;
    struct vl3__gemm_desc d;
    ASSERT_OK(vl3__gemm_plan_linear(&d, n, k, m, 0, VL3__GEMM_EPI_GELU_BIAS, VL3__GEMM_F32,
                                    VL3__GEMM_F32, VL3__GEMM_BF16));
    float W[6 * 9], x[4 * 9], b[6];
    for (int i = 0; i < 54; i++)
        W[i] = urand() * 2;
    for (int i = 0; i < 36; i++)
        x[i] = urand() * 2;
    for (int i = 0; i < 6; i++)
        b[i] = urand();
    uint16_t y[4 * 6];
    ASSERT_OK(vl3__gemm_host(&d, W, x, y, b));
    for (int t = 0; t < n; t++)
        for (int o = 0; o < m; o++) {
            double s = b[o];
            for (int i = 0; i < k; i++)
                s += (double)W[o * k + i] * x[t * k + i];
            double g = 0.5 * s * (1 + tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
            double got = from_bf16(y[t * m + o]);
            /* bf16 keeps 8 bits: relative error <= 2^-8 */
            if (!(fabs(got - g) <= fabs(g) * 0x1p-8 + 1e-6))
                TEST__FAIL("gelu_bias y[%d,%d] = %.6g, want %.6g", t, o, got, g);
        }
    /* the GELU itself: known points */
    ASSERT(fabsf(vl3__gemm_gelu_tanh(0.0f)) == 0.0f);
    ASSERT(fabsf(vl3__gemm_gelu_tanh(1.0f) - 0.8411920f) < 1e-6f);
    ASSERT(fabsf(vl3__gemm_gelu_tanh(-3.0f) + 0.0036373f) < 1e-6f);
    /* a bias epilogue without a bias, and leading dimensions too small, are refused */
    ASSERT_EQ(vl3__gemm_host(&d, W, x, y, NULL), -22);
    d.lda = k - 1;
    ASSERT_EQ(vl3__gemm_check(&d), -22);
    ASSERT_EQ(vl3__gemm_plan_linear(&d, 0, k, m, 0, VL3__GEMM_EPI_NONE, VL3__GEMM_F32,
                                    VL3__GEMM_F32, VL3__GEMM_F32), -22);
    return 0;
}

/* The linear-layer plan computes what the CPU backend's matmul computes: y = x W^T + b (+ y),
 * W bf16 (out, in) row-major, x and y f32 row-major, at real widths. */
TEST(linear_plan_matches_cpu_matmul)
{
    static const struct { int T, in, out; } sz[] = {{1, 5, 3}, {7, 33, 17}, {3, 1536, 40},
                                                    {2, 1152, 72}, {33, 64, 9}};
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 1, &c, NULL));
    for (size_t si = 0; si < sizeof(sz) / sizeof(sz[0]); si++)
        for (int acc = 0; acc < 2; acc++) {
            int T = sz[si].T, in = sz[si].in, out = sz[si].out;
            uint16_t *W = malloc(sizeof(uint16_t) * (size_t)out * in);
            float *x = malloc(sizeof(float) * (size_t)T * in), *b = malloc(sizeof(float) * out);
            float *y_cpu = malloc(sizeof(float) * (size_t)T * out);
            float *y_lt = malloc(sizeof(float) * (size_t)T * out);
            for (int i = 0; i < out * in; i++)
                W[i] = to_bf16(urand());
            for (int i = 0; i < T * in; i++)
                x[i] = urand();
            for (int i = 0; i < out; i++)
                b[i] = urand();
            for (int i = 0; i < T * out; i++)
                y_cpu[i] = y_lt[i] = urand();
            size_t wb = vl3__backend_cpu_ops.matmul_work_size(c, in);
            void *work = malloc(wb);
            ASSERT_OK(vl3__backend_cpu_ops.matmul(c, y_cpu, x, W, b, T, in, out, acc, work, wb));
            struct vl3__gemm_desc d;
            ASSERT_OK(vl3__gemm_plan_linear(&d, T, in, out, acc, VL3__GEMM_EPI_BIAS,
                                            VL3__GEMM_BF16, VL3__GEMM_F32, VL3__GEMM_F32));
            ASSERT_OK(vl3__gemm_host(&d, W, x, y_lt, b));
            for (int i = 0; i < T * out; i++)
                if (!(fabsf(y_cpu[i] - y_lt[i]) <= 1e-4f))
                    TEST__FAIL("T=%d in=%d out=%d acc=%d: y[%d] cpu %.7g plan %.7g", T, in, out,
                               acc, i, y_cpu[i], y_lt[i]);
            free(W), free(x), free(b), free(y_cpu), free(y_lt), free(work);
        }
    vl3__backend_cpu_ops.free(c);
    return 0;
}
