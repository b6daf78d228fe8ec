/* gemm_desc.c: the matrix-product descriptor's planner and its host execution path (see
 * gemm_desc.h). The host path is a plain triple loop with f32 accumulation, written from
 * cuBLASLt's documented column-major semantics rather than from our own row-major habits, so a
 * descriptor that is wrong for cuBLASLt is wrong here too. It is the emulated backend's matmul and
 * the reference the device path is compared with on a GPU. */
#include "gemm_desc.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static float load(enum vl3__gemm_type t, const void *p, size_t i)
{
    if (t == VL3__GEMM_F32)
        return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void store(enum vl3__gemm_type t, void *p, size_t i, float f)
{
    if (t == VL3__GEMM_F32) {
        ((float *)p)[i] = f;
        return;
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        u |= 0x400000u; /* NaN stays a (quiet) NaN */
    else
        u += 0x7fffu + ((u >> 16) & 1u); /* nearest even */
    ((uint16_t *)p)[i] = (uint16_t)(u >> 16);
}

float vl3__gemm_gelu_tanh(float x)
{
    const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

int vl3__gemm_check(const struct vl3__gemm_desc *d)
{
    if (!d || d->m <= 0 || d->n <= 0 || d->k <= 0 || d->a_type >= VL3__GEMM_TYPE_COUNT ||
        d->b_type >= VL3__GEMM_TYPE_COUNT || d->c_type >= VL3__GEMM_TYPE_COUNT ||
        d->epilogue >= VL3__GEMM_EPI_COUNT)
        return -EINVAL;
    int a_rows = d->trans_a ? d->k : d->m, b_rows = d->trans_b ? d->n : d->k;
    if (d->lda < a_rows || d->ldb < b_rows || d->ldc < d->m)
        return -EINVAL;
    return 0;
}

int vl3__gemm_plan_linear(struct vl3__gemm_desc *d, int T, int in, int out, int accumulate,
                          enum vl3__gemm_epilogue epi, enum vl3__gemm_type w_type,
                          enum vl3__gemm_type x_type, enum vl3__gemm_type y_type)
{
    if (!d || T <= 0 || in <= 0 || out <= 0)
        return -EINVAL;
    *d = (struct vl3__gemm_desc){
        .m = out, .n = T, .k = in,
        .trans_a = 1, .trans_b = 0,
        .lda = in, .ldb = in, .ldc = out,
        .a_type = w_type, .b_type = x_type, .c_type = y_type,
        .epilogue = epi,
        .alpha = 1.0f, .beta = accumulate ? 1.0f : 0.0f,
    };
    return vl3__gemm_check(d);
}

int vl3__gemm_host(const struct vl3__gemm_desc *d, const void *A, const void *B, void *C,
                   const float *bias)
{
    if (vl3__gemm_check(d) < 0 || !A || !B || !C)
        return -EINVAL;
    int has_bias = d->epilogue == VL3__GEMM_EPI_BIAS || d->epilogue == VL3__GEMM_EPI_GELU_BIAS;
    int gelu = d->epilogue == VL3__GEMM_EPI_GELU || d->epilogue == VL3__GEMM_EPI_GELU_BIAS;
    if (has_bias && !bias)
        return -EINVAL;
    for (int j = 0; j < d->n; j++)
        for (int i = 0; i < d->m; i++) {
            float acc = 0.0f;
            for (int p = 0; p < d->k; p++) {
                /* op(A)[i, p] and op(B)[p, j], column-major storage */
                size_t ai = d->trans_a ? (size_t)i * d->lda + p : (size_t)p * d->lda + i;
                size_t bi = d->trans_b ? (size_t)p * d->ldb + j : (size_t)j * d->ldb + p;
                acc += load(d->a_type, A, ai) * load(d->b_type, B, bi);
            }
            size_t ci = (size_t)j * d->ldc + i;
            float v = d->alpha * acc;
            if (d->beta != 0.0f)
                v += d->beta * load(d->c_type, C, ci);
            if (has_bias)
                v += bias[i];
            if (gelu)
                v = vl3__gemm_gelu_tanh(v);
            store(d->c_type, C, ci, v);
        }
    return 0;
}
