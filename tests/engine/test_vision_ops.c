/* test_vision_ops.c: the CPU vision ops (backend.h vision section) against straightforward
 * double-precision implementations written here: linear, LayerNorm, 2D RoPE (D = 72 as the real
 * model and D = 16 as the tiny models), block-diagonal attention, both GELUs, and the 2x2
 * downsample = bilinear resize to half size with align_corners=False computed the long way.
 * Tolerances are relative to the values' scale and stated per op. */
#include <math.h>
#include <string.h>

#include "backend.h"
#include "test.h"

static const struct vl3__vision_ops *ops = &vl3__cpu_vision_ops;

static uint64_t seed = 88172645463325252ull;
static double urand(void) /* [-1, 1) */
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (double)(seed >> 11) / (double)(1ull << 52) - 1.0;
}
static float *rand_vec(size_t n, double scale)
{
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(urand() * scale);
    return v;
}

TEST(op_linear)
{
    int P = 37, in = 588, out = 45;
    float *x = rand_vec((size_t)P * in, 1), *w = rand_vec((size_t)out * in, 0.1),
          *b = rand_vec(out, 1), *y = calloc((size_t)P * out, 4), *y2 = calloc((size_t)P * out, 4);
    ASSERT_OK(ops->linear(NULL, x, w, b, y, P, in, out));
    ASSERT_OK(ops->linear(NULL, x, w, NULL, y2, P, in, out));
    for (int p = 0; p < P; p++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < in; i++)
                s += (double)x[p * in + i] * w[o * in + i];
            ASSERT_NEAR(y[p * out + o], s + b[o], 1e-4);
            ASSERT_NEAR(y2[p * out + o], s, 1e-4);
        }
    free(x), free(w), free(b), free(y), free(y2);
    return 0;
}

TEST(op_layernorm)
{
    int P = 9, C = 1152;
    float *x = rand_vec((size_t)P * C, 3), *w = rand_vec(C, 1), *b = rand_vec(C, 1),
          *y = malloc(sizeof(float) * P * C);
    for (int i = 0; i < C; i++)
        x[i] += 100.0f; /* a large mean must not hurt */
    ASSERT_OK(ops->layernorm(NULL, x, w, b, y, P, C, 1e-6f));
    for (int p = 0; p < P; p++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++)
            m += x[p * C + i];
        m /= C;
        for (int i = 0; i < C; i++)
            v += (x[p * C + i] - m) * (x[p * C + i] - m);
        v /= C;
        for (int i = 0; i < C; i++) {
            double r = (x[p * C + i] - m) / sqrt(v + 1e-6) * w[i] + b[i];
            ASSERT_NEAR(y[p * C + i], r, 2e-5 * (1 + fabs(r)));
        }
    }
    /* in place */
    ASSERT_OK(ops->layernorm(NULL, x, w, b, x, P, C, 1e-6f));
    ASSERT_MEM_EQ(x, y, sizeof(float) * P * C);
    free(x), free(w), free(b), free(y);
    return 0;
}

/* Reference 2D RoPE, written from the spec's description: the rotary module has dim = D/2 and
 * inv_freq[k] = theta^(-2k/(D/2)), k < D/4; the angle vector is (row*inv, col*inv) (D/2 values),
 * duplicated to D (cat(emb, emb)), and x*cos + rotate_half(x)*sin with rotate_half(x) =
 * (-x2, x1) for x = (x1, x2). */
static int check_rope(int D, int H, int maxpos)
{
    int P = 50;
    float *x = rand_vec((size_t)P * H * D, 2);
    double *ref = malloc(sizeof(double) * P * H * D);
    int32_t *r = malloc(4 * P), *c = malloc(4 * P);
    for (int p = 0; p < P; p++) {
        r[p] = (p * 7) % maxpos;
        c[p] = (p * 13 + 3) % maxpos;
    }
    int half = D / 2, quarter = D / 4;
    for (int p = 0; p < P; p++)
        for (int h = 0; h < H; h++) {
            const float *v = x + (p * H + h) * D;
            double emb[2048];
            for (int i = 0; i < half; i++) {
                int k = i % quarter;
                double inv = 1.0 / pow(10000.0, (2.0 * k) / half);
                emb[i] = emb[i + half] = (i < quarter ? r[p] : c[p]) * inv;
            }
            for (int i = 0; i < D; i++) {
                double rot = i < half ? -(double)v[i + half] : (double)v[i - half];
                ref[(p * H + h) * D + i] = v[i] * cos(emb[i]) + rot * sin(emb[i]);
            }
        }
    ASSERT_OK(ops->rope2d(NULL, x, r, c, P, H, D, 10000.0f));
    for (int i = 0; i < P * H * D; i++)
        ASSERT_NEAR(x[i], ref[i], 2e-5 * (1 + maxpos / 16.0));
    free(x), free(ref), free(r), free(c);
    return 0;
}

TEST(op_rope2d)
{
    ASSERT_EQ(check_rope(72, 2, 140), 0); /* the real model: 18 row + 18 column frequencies */
    ASSERT_EQ(check_rope(16, 3, 40), 0);  /* tiny models */
    /* position (0, 0) is the identity */
    float v[16], w[16];
    for (int i = 0; i < 16; i++)
        v[i] = w[i] = (float)i;
    int32_t z = 0;
    ASSERT_OK(ops->rope2d(NULL, v, &z, &z, 1, 1, 16, 10000.0f));
    ASSERT_MEM_EQ(v, w, sizeof(v));
    ASSERT(ops->rope2d(NULL, v, &z, &z, 1, 1, 18, 10000.0f) < 0); /* D not a multiple of 4 */
    return 0;
}

TEST(op_attention_blocks)
{
    int H = 3, D = 8, ld = H * D;
    int64_t cu[5] = {0, 5, 5, 12, 312}; /* an empty block and one above the 128-row chunk */
    int P = 312;
    float *q = rand_vec((size_t)P * ld, 2), *k = rand_vec((size_t)P * ld, 2),
          *v = rand_vec((size_t)P * ld, 1), *o = malloc(sizeof(float) * P * ld);
    ASSERT_OK(ops->attention_blocks(NULL, q, k, v, o, cu, 4, H, D));
    for (int b = 0; b < 4; b++)
        for (int64_t i = cu[b]; i < cu[b + 1]; i++)
            for (int h = 0; h < H; h++) {
                double s[512], mx = -1e300, sum = 0;
                for (int64_t j = cu[b]; j < cu[b + 1]; j++) {
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)q[i * ld + h * D + e] * k[j * ld + h * D + e];
                    s[j - cu[b]] = d / sqrt((double)D);
                    mx = fmax(mx, s[j - cu[b]]);
                }
                for (int64_t j = cu[b]; j < cu[b + 1]; j++)
                    sum += (s[j - cu[b]] = exp(s[j - cu[b]] - mx));
                for (int e = 0; e < D; e++) {
                    double acc = 0;
                    for (int64_t j = cu[b]; j < cu[b + 1]; j++)
                        acc += s[j - cu[b]] / sum * v[j * ld + h * D + e];
                    ASSERT_NEAR(o[i * ld + h * D + e], acc, 2e-6);
                }
            }
    /* no leak across blocks: changing block 3's keys/values leaves block 0 unchanged */
    float *o2 = malloc(sizeof(float) * P * ld);
    for (int i = 12 * ld; i < P * ld; i++)
        k[i] += 1.0f, v[i] -= 2.0f;
    ASSERT_OK(ops->attention_blocks(NULL, q, k, v, o2, cu, 4, H, D));
    ASSERT_MEM_EQ(o, o2, sizeof(float) * 12 * ld);
    free(q), free(k), free(v), free(o), free(o2);
    return 0;
}

TEST(op_gelus)
{
    int n = 2001;
    float *a = malloc(4 * n), *b = malloc(4 * n);
    for (int i = 0; i < n; i++)
        a[i] = b[i] = (float)(-10.0 + 20.0 * i / (n - 1));
    ASSERT_OK(ops->gelu_tanh(NULL, a, n));
    ASSERT_OK(ops->gelu_erf(NULL, b, n));
    double maxdiff = 0;
    for (int i = 0; i < n; i++) {
        double x = -10.0 + 20.0 * i / (n - 1);
        x = (float)x;
        double t = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        double e = 0.5 * x * (1 + erf(x / sqrt(2.0)));
        ASSERT_NEAR(a[i], t, 1e-6 * (1 + fabs(t)));
        ASSERT_NEAR(b[i], e, 1e-6 * (1 + fabs(e)));
        maxdiff = fmax(maxdiff, fabs(t - e));
    }
    ASSERT(maxdiff > 1e-4); /* the two GELUs really differ (so a swap would be caught) */
    free(a), free(b);
    return 0;
}

/* bilinear resize of a (gh, gw, C) raster map to (oh, ow), align_corners = False, PyTorch
 * convention: src = (dst + 0.5) * in/out - 0.5 clamped at 0, neighbours clamped at the edge. */
static void bilinear_ref(const double *in, int gh, int gw, int C, int oh, int ow, double *out)
{
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            double sy = fmax((y + 0.5) * gh / oh - 0.5, 0), sx = fmax((x + 0.5) * gw / ow - 0.5, 0);
            int y0 = (int)floor(sy), x0 = (int)floor(sx);
            int y1 = y0 + 1 < gh ? y0 + 1 : gh - 1, x1 = x0 + 1 < gw ? x0 + 1 : gw - 1;
            double ly = sy - y0, lx = sx - x0;
            for (int c = 0; c < C; c++)
                out[(y * ow + x) * C + c] =
                    (1 - ly) * ((1 - lx) * in[(y0 * gw + x0) * C + c] + lx * in[(y0 * gw + x1) * C + c]) +
                    ly * ((1 - lx) * in[(y1 * gw + x0) * C + c] + lx * in[(y1 * gw + x1) * C + c]);
        }
}

TEST(op_downsample)
{
    int gh = 6, gw = 8, C = 5;
    float *x = rand_vec((size_t)gh * gw * C, 3); /* merge-block order, m = 2 */
    double *raster = malloc(sizeof(double) * gh * gw * C), *ref = malloc(sizeof(double) * gh * gw * C);
    int row = 0;
    for (int bh = 0; bh < gh / 2; bh++)
        for (int bw = 0; bw < gw / 2; bw++)
            for (int mh = 0; mh < 2; mh++)
                for (int mw = 0; mw < 2; mw++, row++)
                    for (int c = 0; c < C; c++)
                        raster[((bh * 2 + mh) * gw + bw * 2 + mw) * C + c] = x[row * C + c];
    bilinear_ref(raster, gh, gw, C, gh / 2, gw / 2, ref);
    float *y = malloc(sizeof(float) * gh * gw * C);
    ASSERT_OK(ops->downsample(NULL, x, y, gh, gw, 2, C));
    for (int i = 0; i < gh / 2 * gw / 2 * C; i++)
        ASSERT_NEAR(y[i], ref[i], 1e-6);
    /* m = 1: identity (bilinear to the same size) */
    ASSERT_OK(ops->downsample(NULL, x, y, gh, gw, 1, C));
    ASSERT_MEM_EQ(x, y, sizeof(float) * gh * gw * C);
    ASSERT(ops->downsample(NULL, x, y, 5, 4, 2, C) < 0);
    free(x), free(raster), free(ref), free(y);
    return 0;
}
