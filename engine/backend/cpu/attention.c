/* attention.c: causal GQA attention over per-sequence KV caches, f32, through OpenBLAS.
 *
 * One sequence at a time. A decode step (one query) handles a whole GQA group per sgemm: the
 * group's query heads are contiguous in the row, so they form a (group, D) matrix against the kv
 * head's keys. Prefill goes head by head in blocks of ATTN_QB query rows: scores (qb, nk) =
 * Q K^T * scale, causal mask, row softmax (max-subtracted, f32 exp with a double sum), then
 * out = P V. The scores live in the caller's scratch (attention_work_size), so nothing is
 * allocated here. */
#include <cblas.h>
#include <math.h>

#include "cpu_ops.h"

#define ATTN_QB 64 /* query rows per prefill block: bounds the scratch to QB * n_ctx floats */

size_t vl3__cpu_attention_work_size(void *ctx, int max_q, int n_ctx, int n_heads)
{
    (void)ctx;
    (void)max_q;
    size_t rows = ATTN_QB > n_heads ? ATTN_QB : (size_t)n_heads;
    return rows * (size_t)n_ctx * sizeof(float);
}

/* Softmax of row[0..n) in place with the scale already applied; entries >= n_valid are zeroed. */
static void softmax_causal(float *row, int n_valid, int n)
{
    float mx = row[0];
    for (int j = 1; j < n_valid; j++)
        if (row[j] > mx)
            mx = row[j];
    double sum = 0;
    for (int j = 0; j < n_valid; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n_valid; j++)
        row[j] *= inv;
    for (int j = n_valid; j < n; j++)
        row[j] = 0.0f;
}

int vl3__cpu_attention(void *ctx, const struct vl3__attn_args *a)
{
    (void)ctx;
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim;
    if (H <= 0 || Hkv <= 0 || H % Hkv || D <= 0)
        return -22 /* EINVAL */;
    int grp = H / Hkv, kvs = Hkv * D;
    float *S = a->work;
    for (int si = 0; si < a->n_seqs; si++) {
        const struct vl3__attn_seq *sq = &a->seqs[si];
        const float *K = sq->k, *V = sq->v;
        const float *Q = (const float *)a->q + (size_t)sq->q_row * a->q_stride;
        float *O = (float *)a->out + (size_t)sq->q_row * a->out_stride;
        if ((size_t)(ATTN_QB > H ? ATTN_QB : H) * (size_t)(sq->n_past + sq->n_q) * sizeof(float) >
            a->work_bytes)
            return -22;
        if (sq->n_q == 1) {
            int nk = sq->n_past + 1;
            for (int g = 0; g < Hkv; g++) {
                const float *qg = Q + (size_t)g * grp * D;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, grp, nk, D, a->scale, qg, D,
                            K + (size_t)g * D, kvs, 0.0f, S, nk);
                for (int r = 0; r < grp; r++)
                    softmax_causal(S + (size_t)r * nk, nk, nk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, grp, D, nk, 1.0f, S, nk,
                            V + (size_t)g * D, kvs, 0.0f, O + (size_t)g * grp * D, D);
            }
            continue;
        }
        for (int h = 0; h < H; h++) {
            int g = h / grp;
            for (int i0 = 0; i0 < sq->n_q; i0 += ATTN_QB) {
                int qb = sq->n_q - i0 < ATTN_QB ? sq->n_q - i0 : ATTN_QB;
                int nk = sq->n_past + i0 + qb; /* keys seen by the block's last row */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, nk, D, a->scale,
                            Q + (size_t)i0 * a->q_stride + (size_t)h * D, a->q_stride,
                            K + (size_t)g * D, kvs, 0.0f, S, nk);
                for (int r = 0; r < qb; r++)
                    softmax_causal(S + (size_t)r * nk, sq->n_past + i0 + r + 1, nk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qb, D, nk, 1.0f, S, nk,
                            V + (size_t)g * D, kvs, 0.0f,
                            O + (size_t)i0 * a->out_stride + (size_t)h * D, a->out_stride);
            }
        }
    }
    return 0;
}
