/* preprocess_resize.c: PIL-compatible antialiased bicubic resize of 8-bit RGB, and the ATen
 * (torchvision) variant for the native layout.
 *
 * Reproduces Pillow's fixed-point 8-bit resampler (libImaging/Resample.c, as used by
 * Image.resize(size, BICUBIC) without a box or reducing_gap) bit for bit:
 *   - per output sample, the filter support is 2 * max(1, in/out) input pixels around the centre
 *     in + (x + 0.5) * scale; window bounds are (int)(centre -/+ support + 0.5) clamped to the image;
 *   - weights are the a = -0.5 cubic evaluated at (i - centre + 0.5) / max(1, scale), normalised
 *     to sum 1 in double, then quantised to fixed point with 22 fractional bits (32 - 8 - 2),
 *     rounding half away from zero;
 *   - a pass accumulates in int starting from 1 << 21 (round half up), then shifts right by 22 and
 *     clamps to 0..255;
 *   - horizontal pass first (only over the rows the vertical pass reads), into a uint8
 *     intermediate, then the vertical pass; a pass is skipped when its size does not change.
 * ATen's uint8 antialiased bicubic (torch >= 2.1, what torchvision's resize runs on uint8 CPU
 * tensors) follows the same scheme with three differences: the scale in/out in double, the
 * cubic's outer branch written ((a x - 5a) x + 8a) x - 4a, and int16 weights whose precision is
 * chosen per axis (the most bits < 22 for which 2 * the largest weight rounds below 2^15), so
 * sums start at 1 << (prec - 1) and shift by prec. Checked against torch by the oracle goldens. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "vl3/engine.h"

#define PREC_BITS (32 - 8 - 2)

static double cubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Coefficients of one pass: for each output index, window start, window length and ksize
 * fixed-point weights. Returns ksize, or 0 on allocation failure. */
/* ATen's Keys cubic (a = -0.5) as HelperInterpCubic::aa_filter writes it: the outer branch has a
 * different operation order from Pillow's, which can move a weight by one ulp. */
static double cubic_aten(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0)
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

static int coeffs(int in_size, int out_size, int aten, int **ret_bounds, int32_t **ret_kk,
                  int *ret_prec)
{
    /* Pillow computes the box extent in float; whole-image boxes are exact integers. */
    double scale = aten ? (double)in_size / (double)out_size
                        : (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    int32_t *kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)out_size);
    double *w = malloc(sizeof(double) * (size_t)ksize * (aten ? (size_t)out_size : 1));
    if (!bounds || !kk || !w) {
        free(bounds);
        free(kk);
        free(w);
        return 0;
    }
    double wt_max = 0.0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (aten) { /* normalised double weights, quantised below with the axis's precision */
            double *wa = w + (size_t)xx * ksize;
            if (xmax > ksize)
                xmax = ksize;
            for (int x = 0; x < xmax; x++) {
                wa[x] = cubic_aten((x + xmin - center + 0.5) * ss);
                ww += wa[x];
            }
            for (int x = 0; x < ksize; x++) {
                wa[x] = x >= xmax ? 0.0 : ww != 0.0 ? wa[x] / ww : wa[x];
                if (wa[x] > wt_max)
                    wt_max = wa[x];
            }
            bounds[2 * xx] = xmin;
            bounds[2 * xx + 1] = xmax;
            continue;
        }
        for (int x = 0; x < xmax; x++) {
            w[x] = cubic((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < ksize; x++) {
            double k = 0.0;
            if (x < xmax)
                k = ww != 0.0 ? w[x] / ww : w[x];
            kk[(size_t)xx * ksize + x] = k < 0 ? (int32_t)(-0.5 + k * (1 << PREC_BITS))
                                               : (int32_t)(0.5 + k * (1 << PREC_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    int prec = PREC_BITS;
    if (aten) {
        /* _compute_index_ranges_int16_weights: the most bits (< 22) at which the axis's
         * largest weight, doubled, still rounds below 2^15; round half away from zero */
        for (prec = 0; prec < 22; prec++)
            if ((int)(0.5 + wt_max * (double)(1 << (prec + 1))) >= (1 << 15))
                break;
        for (size_t i = 0; i < (size_t)out_size * ksize; i++) {
            double v = w[i] * (double)(1 << prec);
            kk[i] = (int16_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
    }
    free(w);
    *ret_bounds = bounds;
    *ret_kk = kk;
    *ret_prec = prec;
    return ksize;
}

static inline uint8_t clip8(int v, int prec)
{
    v >>= prec; /* arithmetic shift, as Pillow and ATen (gcc/clang on every target we build) */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

int vl3_resize_bicubic_rgb(const vl3_image *src, uint8_t *dst, int ow, int oh, size_t dst_stride)
{
    return vl3__resize_bicubic_rgb_ex(src, dst, ow, oh, dst_stride, 0);
}

int vl3__resize_bicubic_rgb_ex(const vl3_image *src, uint8_t *dst, int ow, int oh,
                               size_t dst_stride, int aten)
{
    if (!src || !src->rgb || !dst || src->width <= 0 || src->height <= 0 || ow <= 0 || oh <= 0 ||
        src->stride < (size_t)src->width * 3 || dst_stride < (size_t)ow * 3)
        return -EINVAL;
    int iw = src->width, ih = src->height;
    int need_h = ow != iw, need_v = oh != ih;
    int rc = -ENOMEM;
    int *bv = NULL, *bh = NULL;
    int32_t *kv = NULL, *kh = NULL;
    uint8_t *tmp = NULL;
    int *acc = NULL;

    if (!need_h && !need_v) {
        for (int y = 0; y < ih; y++)
            memcpy(dst + (size_t)y * dst_stride, src->rgb + (size_t)y * src->stride, (size_t)iw * 3);
        return 0;
    }
    int pv = 0, ph = 0;
    int ksv = coeffs(ih, oh, aten, &bv, &kv, &pv);
    if (!ksv)
        goto out;
    int y_first = bv[0], y_last = bv[2 * (oh - 1)] + bv[2 * (oh - 1) + 1];

    const uint8_t *vin = src->rgb; /* the vertical pass's input, rows from y_first */
    size_t vstride = src->stride;
    int vy0 = 0;                   /* row of vin that corresponds to source row y_first */
    if (need_h) {
        int ksh = coeffs(iw, ow, aten, &bh, &kh, &ph);
        if (!ksh)
            goto out;
        int rows = y_last - y_first;
        tmp = malloc((size_t)rows * (size_t)ow * 3);
        if (!tmp)
            goto out;
        for (int y = 0; y < rows; y++) {
            const uint8_t *row = src->rgb + (size_t)(y + y_first) * src->stride;
            uint8_t *o = tmp + (size_t)y * ow * 3;
            for (int xx = 0; xx < ow; xx++) {
                int xmin = bh[2 * xx], xmax = bh[2 * xx + 1];
                const int32_t *k = kh + (size_t)xx * ksh;
                int s0 = ph > 0 ? 1 << (ph - 1) : 0, s1 = s0, s2 = s0;
                const uint8_t *p = row + (size_t)xmin * 3;
                for (int x = 0; x < xmax; x++) {
                    s0 += p[3 * x] * k[x];
                    s1 += p[3 * x + 1] * k[x];
                    s2 += p[3 * x + 2] * k[x];
                }
                o[3 * xx] = clip8(s0, ph);
                o[3 * xx + 1] = clip8(s1, ph);
                o[3 * xx + 2] = clip8(s2, ph);
            }
        }
        vin = tmp;
        vstride = (size_t)ow * 3;
        vy0 = y_first;
    }
    if (need_v) {
        int n = (need_h ? ow : iw) * 3;
        acc = malloc(sizeof(int) * (size_t)n);
        if (!acc)
            goto out;
        /* integer sums are order-independent, so accumulate row by row (cache friendly) */
        for (int yy = 0; yy < oh; yy++) {
            int ymin = bv[2 * yy] - vy0, ymax = bv[2 * yy + 1];
            const int32_t *k = kv + (size_t)yy * ksv;
            uint8_t *o = dst + (size_t)yy * dst_stride;
            for (int xx = 0; xx < n; xx++)
                acc[xx] = pv > 0 ? 1 << (pv - 1) : 0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *row = vin + (size_t)(y + ymin) * vstride;
                int ky = k[y];
                for (int xx = 0; xx < n; xx++)
                    acc[xx] += row[xx] * ky;
            }
            for (int xx = 0; xx < n; xx++)
                o[xx] = clip8(acc[xx], pv);
        }
    } else {
        /* horizontal only: y_first = 0 and rows = ih since the vertical bounds are identity */
        for (int y = 0; y < oh; y++)
            memcpy(dst + (size_t)y * dst_stride, vin + (size_t)(y + y_first - vy0) * vstride,
                   (size_t)ow * 3);
    }
    rc = 0;
out:
    free(acc);
    free(tmp);
    free(bv);
    free(kv);
    free(bh);
    free(kh);
    return rc;
}
