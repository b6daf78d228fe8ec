/* ops_vision.c: CPU (f32) implementations of the vision encoder ops (backend.h, vision section).
 *
 * These are the reference the CUDA vision ops will be checked against. Matrix products go through
 * OpenBLAS (cblas_sgemm), in bf16 mode the bf16 GEMM (gemm_bf16.c, weights rounded per call);
 * norms, RoPE and adds are row loops split over the context's threads (parallel.c; results do
 * not depend on the split). In bf16 mode attention runs on AMX tiles (attention_amx.c) and the
 * tanh GELU on AVX-512 (activations_avx512.c); with bf16 matrices the products add their bias,
 * and optionally the GELU or the residual add (linear_bf16_ex), where the AMX GEMM stores its
 * tiles, and q, k, v share one packing of x (linear_bf16_n). RoPE takes cos / sin from a table
 * of the distinct positions and rotates on AVX-512, the add runs on AVX-512: the same bits as
 * the scalar loops, in both modes. The f32 attention runs per block (one image or
 * one video frame, cu_seqlens) and per head: scores = q k^T (sgemm over strided head slices),
 * row softmax in float with max subtraction, then scores v (sgemm), in chunks of query rows.
 * Scratch for one chunk's scores is allocated per call (the encoder is not on the decode hot
 * path). */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_ops.h"

static int cpu_linear(void *ctx, const float *x, const float *w, const float *b, float *y,
                      int64_t P, int in, int out)
{
    if (P <= 0)
        return 0;
    if (vl3__cpu_bf16_mode(ctx))
        return vl3__cpu_linear_bf16(ctx, x, w, b, y, P, in, out);
    if (b) {
        for (int64_t p = 0; p < P; p++)
            memcpy(y + p * out, b, sizeof(float) * (size_t)out);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)P, out, in, 1.0f, x, in, w, in,
                b ? 1.0f : 0.0f, y, out);
    return 0;
}

/* linear_bf16 with its GELU or residual add in the AMX epilogue. The GELU is then the one of
 * the bf16 mode's gelu_tanh (simd_gelu.h, the same bits); f32 mode keeps its libm GELU apart. */
static int cpu_linear_bf16_ex(void *ctx, const float *x, const uint16_t *w, const float *b,
                              float *y, int64_t P, int in, int out, int flags)
{
    if ((flags & VL3__VLIN_GELU_TANH) && !vl3__cpu_bf16_mode(ctx))
        return -ENOTSUP;
    return vl3__cpu_linear_w16_ex(ctx, x, w, b, y, P, in, out, flags);
}

struct ln_args {
    const float *x, *w, *b;
    float *y;
    int C;
    float eps;
};

static void ln_rows(void *arg, int64_t p0, int64_t p1)
{
    const struct ln_args *a = arg;
    const float *x = a->x, *w = a->w, *b = a->b;
    float *y = a->y;
    int C = a->C;
    for (int64_t p = p0; p < p1; p++) {
        const float *xr = x + p * C;
        float *yr = y + p * C;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < C; i++)
            mean += xr[i];
        mean /= C;
        for (int i = 0; i < C; i++) {
            double d = xr[i] - mean;
            var += d * d;
        }
        var /= C;
        float inv = (float)(1.0 / sqrt(var + a->eps)), m = (float)mean;
        for (int i = 0; i < C; i++)
            yr[i] = (xr[i] - m) * inv * w[i] + b[i];
    }
}

static int cpu_layernorm(void *ctx, const float *x, const float *w, const float *b, float *y,
                         int64_t P, int C, float eps)
{
    if (vl3__cpu_bf16_mode(ctx) && vl3__cpu_layernorm_fast(ctx, x, w, b, y, P, C, eps) == 0)
        return 0;
    struct ln_args a = {x, w, b, y, C, eps};
    vl3__cpu_parallel(ctx, P, 65536 / (C > 0 ? C : 1) + 1, ln_rows, &a);
    return 0;
}

struct rope2d_args {
    float *x;
    const int32_t *pos_r, *pos_c;
    int H, D;
    const float *inv;
    /* cos / sin of every row position 0..nr-1 (q values each) then every column position
     * 0..nc-1: positions repeat across rows (a 14 x 27 grid has 41 distinct ones for 378 rows),
     * so each angle's cosf / sinf runs once per call instead of once per row. NULL: per row. */
    const float *tc, *ts;
    int nr;
};

static void rope2d_rows(void *arg, int64_t p0, int64_t p1)
{
    const struct rope2d_args *ra = arg;
    int D = ra->D, H = ra->H, q = D / 4, half = D / 2;
    const float *inv = ra->inv;
    for (int64_t p = p0; p < p1; p++) {
        float cs[512], sn[512];
        if (ra->tc) {
            size_t r = (size_t)ra->pos_r[p] * q, c = ((size_t)ra->nr + ra->pos_c[p]) * q;
            memcpy(cs, ra->tc + r, sizeof(float) * (size_t)q);
            memcpy(sn, ra->ts + r, sizeof(float) * (size_t)q);
            memcpy(cs + q, ra->tc + c, sizeof(float) * (size_t)q);
            memcpy(sn + q, ra->ts + c, sizeof(float) * (size_t)q);
        } else {
            for (int k = 0; k < q; k++) {
                /* angles in float32 as the reference (fp32 freqs * positions) */
                float ar = (float)ra->pos_r[p] * inv[k], ac = (float)ra->pos_c[p] * inv[k];
                cs[k] = cosf(ar);
                sn[k] = sinf(ar);
                cs[q + k] = cosf(ac);
                sn[q + k] = sinf(ac);
            }
        }
        float *row = ra->x + p * H * D;
        if (vl3__cpu_rotate_half_fast(row, cs, sn, H, D) == 0)
            continue;
        for (int h = 0; h < H; h++) {
            float *v = row + h * D;
            for (int i = 0; i < half; i++) {
                float a = v[i], bb = v[i + half];
                v[i] = a * cs[i] - bb * sn[i];
                v[i + half] = bb * cs[i] + a * sn[i];
            }
        }
    }
}

#define ROPE_TABLE_MAX 65536 /* positions beyond which the angles are computed per row */

static int cpu_rope2d(void *ctx, float *x, const int32_t *pos_r, const int32_t *pos_c, int64_t P,
                      int H, int D, float theta)
{
    if (D % 4 != 0 || D > 1024)
        return -EINVAL;
    int q = D / 4, half = D / 2;
    float inv[256]; /* the reference's float32 inv_freq over the D/2 rotary dims */
    for (int k = 0; k < q; k++)
        inv[k] = vl3__cpu_rope_inv_freq(theta, 2 * k, half);
    int64_t mr = -1, mc = -1;
    int ok = 1;
    for (int64_t p = 0; p < P && ok; p++) {
        ok = pos_r[p] >= 0 && pos_c[p] >= 0 && pos_r[p] < ROPE_TABLE_MAX &&
             pos_c[p] < ROPE_TABLE_MAX;
        mr = pos_r[p] > mr ? pos_r[p] : mr;
        mc = pos_c[p] > mc ? pos_c[p] : mc;
    }
    float *tab = NULL;
    size_t n = ok && P > 0 ? (size_t)(mr + 1 + mc + 1) * (size_t)q : 0;
    if (n && n < (size_t)P * 2 * q && (tab = malloc(sizeof(float) * 2 * n))) {
        for (int64_t t = 0; t <= mr + 1 + mc; t++) {
            float pos = (float)(t <= mr ? t : t - mr - 1);
            for (int k = 0; k < q; k++) {
                float a = pos * inv[k]; /* as per row: position (float) times inv_freq */
                tab[t * q + k] = cosf(a);
                tab[n + t * q + k] = sinf(a);
            }
        }
    }
    struct rope2d_args a = {x, pos_r, pos_c, H, D, inv, tab, tab ? tab + n : NULL, (int)(mr + 1)};
    vl3__cpu_parallel(ctx, P, 65536 / (H * D) + 1, rope2d_rows, &a);
    free(tab);
    return 0;
}

/* Query rows per chunk: bounds the score scratch to ATTN_ROWS x block length (a 1080p image is
 * one block of 10,549 patches; a full score matrix would take 445 MB). */
#define ATTN_ROWS 128

static int cpu_attention_blocks(void *ctx, const float *q, const float *k, const float *v,
                                float *out, const int64_t *cu, int n_blocks, int H, int D)
{
    if (vl3__cpu_bf16_mode(ctx) && vl3__cpu_amx_available())
        return vl3__cpu_attention_blocks_amx(ctx, q, k, v, out, cu, n_blocks, H, D);
    int64_t maxn = 0;
    for (int bi = 0; bi < n_blocks; bi++) {
        if (cu[bi + 1] < cu[bi])
            return -EINVAL;
        if (cu[bi + 1] - cu[bi] > maxn)
            maxn = cu[bi + 1] - cu[bi];
    }
    if (maxn == 0)
        return 0;
    float *s = malloc(sizeof(float) * (size_t)(maxn < ATTN_ROWS ? maxn : ATTN_ROWS) * (size_t)maxn);
    if (!s)
        return -ENOMEM;
    int ld = H * D;
    float scale = 1.0f / sqrtf((float)D);
    for (int bi = 0; bi < n_blocks; bi++) {
        int64_t r0 = cu[bi];
        int n = (int)(cu[bi + 1] - r0);
        for (int h = 0; h < H; h++) {
            const float *kh = k + r0 * ld + h * D, *vh = v + r0 * ld + h * D;
            for (int i0 = 0; i0 < n; i0 += ATTN_ROWS) {
                int R = n - i0 < ATTN_ROWS ? n - i0 : ATTN_ROWS;
                const float *qh = q + (r0 + i0) * ld + h * D;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, n, D, scale, qh, ld, kh,
                            ld, 0.0f, s, n);
                for (int i = 0; i < R; i++) {
                    float *row = s + (size_t)i * n, mx = row[0];
                    for (int j = 1; j < n; j++)
                        mx = row[j] > mx ? row[j] : mx;
                    float sum = 0.0f;
                    for (int j = 0; j < n; j++) {
                        row[j] = expf(row[j] - mx);
                        sum += row[j];
                    }
                    float invs = 1.0f / sum;
                    for (int j = 0; j < n; j++)
                        row[j] *= invs;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, D, n, 1.0f, s, n, vh, ld,
                            0.0f, out + (r0 + i0) * ld + h * D, ld);
            }
        }
    }
    free(s);
    return 0;
}

static int cpu_gelu_tanh(void *ctx, float *x, int64_t n)
{
    if (vl3__cpu_bf16_mode(ctx) && vl3__cpu_gelu_tanh_fast(ctx, x, n) == 0)
        return 0;
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    return 0;
}

static void gelu_erf_range(void *arg, int64_t lo, int64_t hi)
{
    float *x = arg;
    for (int64_t i = lo; i < hi; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

/* The projector's GELU: libm erff per value (both modes), the values split over the threads. */
static int cpu_gelu_erf(void *ctx, float *x, int64_t n)
{
    vl3__cpu_parallel(ctx, n, 16384, gelu_erf_range, x);
    return 0;
}

struct vadd_args {
    float *y;
    const float *x;
};

static void vadd_range(void *arg, int64_t lo, int64_t hi)
{
    const struct vadd_args *a = arg;
    for (int64_t i = lo; i < hi; i++)
        a->y[i] += a->x[i];
}

static int cpu_add(void *ctx, float *y, const float *x, int64_t n)
{
    if (vl3__cpu_vadd_fast(ctx, y, x, n) == 0)
        return 0;
    struct vadd_args a = {y, x};
    vl3__cpu_parallel(ctx, n, 1 << 18, vadd_range, &a);
    return 0;
}

struct down_args {
    const float *x;
    float *y;
    int C;
};

static void down_rows(void *arg, int64_t t0, int64_t t1)
{
    const struct down_args *d = arg;
    int C = d->C;
    for (int64_t t = t0; t < t1; t++) {
        const float *a = d->x + t * 4 * C;
        float *o = d->y + t * C;
        for (int i = 0; i < C; i++)
            o[i] = ((a[i] + a[C + i]) + (a[2 * C + i] + a[3 * C + i])) * 0.25f;
    }
}

static int cpu_downsample(void *ctx, const float *x, float *y, int gh, int gw, int m, int C)
{
    if (m == 1) {
        memcpy(y, x, sizeof(float) * (size_t)gh * gw * C);
        return 0;
    }
    if (m != 2 || gh % 2 || gw % 2)
        return -EINVAL;
    /* merged rows split over the threads (each its own 4 input rows) */
    struct down_args d = {x, y, C};
    vl3__cpu_parallel(ctx, (int64_t)(gh / 2) * (gw / 2), 65536 / (4 * (C > 0 ? C : 1)) + 1,
                      down_rows, &d);
    return 0;
}

/* The MLP into the residual with fc1's output handed to fc2 packed (vl3__cpu_gemm_bf16_mlp):
 * bf16 mode only, as the GELU epilogue above. */
static int cpu_linear_bf16_mlp(void *ctx, const float *x, const uint16_t *w1, const float *b1,
                               const uint16_t *w2, const float *b2, float *h, int64_t P, int in,
                               int n_inter)
{
    if (!vl3__cpu_bf16_mode(ctx) || P > INT32_MAX)
        return -ENOTSUP;
    return vl3__cpu_gemm_bf16_mlp(ctx, h, x, w1, b1, VL3__CPU_MLP_GELU, w2, b2, (int)P, in,
                                  n_inter, in);
}

const struct vl3__vision_ops vl3__cpu_vision_ops = {
    .linear = cpu_linear,
    .layernorm = cpu_layernorm,
    .rope2d = cpu_rope2d,
    .attention_blocks = cpu_attention_blocks,
    .gelu_tanh = cpu_gelu_tanh,
    .gelu_erf = cpu_gelu_erf,
    .add = cpu_add,
    .downsample = cpu_downsample,
    .wants_bf16_weights = vl3__cpu_bf16_mode,
    .linear_bf16 = vl3__cpu_linear_w16,
    .linear_bf16_ex = cpu_linear_bf16_ex,
    .linear_bf16_n = vl3__cpu_linear_w16_n,
    .linear_bf16_mlp = cpu_linear_bf16_mlp,
};
