/* attention.c: causal GQA attention over the paged KV cache, f32, through OpenBLAS; and kv_store,
 * the write of new k/v rows into their pages.
 *
 * One sequence at a time. Scores are computed page by page: the keys of one page are
 * page_size contiguous rows, so Q K^T of a page is one sgemm writing that page's columns of the
 * score block; the softmax runs over the whole row (max-subtracted, f32 exp with a double sum);
 * out = P V accumulates one sgemm per page. A decode step (one query) handles a whole GQA group
 * per sgemm: the group's query heads are contiguous in the row, so they form a (group, D)
 * matrix against the kv head's keys. Prefill goes head by head in blocks of ATTN_QB query rows.
 * The scores live in the caller's scratch (attention_work_size), so nothing is allocated here
 * for f32 pools; bf16 pools (bf16 mode) reach this path only on CPUs without AVX-512 (decode) or
 * AMX (prefill), and are widened per kv head into f32 copies first (allocated per call).
 * In bf16 mode the heads of a sequence are split over the context's threads (one score slice
 * each) and OpenBLAS runs single-threaded; f32 mode keeps one thread here and threaded sgemm.
 * kv_store rounds the new rows to bf16 for bf16 pools. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "model.h"

#define ATTN_QB 64 /* query rows per prefill block: bounds the scratch to QB * n_ctx floats */
#define ATTN_MAX_THREADS 64

static int attn_threads(void *ctx);

size_t vl3__cpu_attention_work_size(void *ctx, int max_q, int n_ctx, int n_heads)
{
    (void)max_q;
    size_t rows = ATTN_QB > n_heads ? ATTN_QB : (size_t)n_heads;
    return rows * (size_t)n_ctx * sizeof(float) * (size_t)attn_threads(ctx);
}

int vl3__cpu_kv_store(void *ctx, void *k_pages, void *v_pages, const void *qkv_, int qkv_stride,
                      int k_off, int v_off, int kv_dim, const void *slots_, int T, int kv_dtype)
{
    (void)ctx;
    const float *qkv = qkv_;
    const int32_t *slots = slots_;
    if (kv_dtype == VL3__DTYPE_BF16) { /* rounded to nearest even, as a bf16 k_proj leaves them */
        uint16_t *K = k_pages, *V = v_pages;
        for (int t = 0; t < T; t++) {
            const float *row = qkv + (size_t)t * qkv_stride;
            size_t dst = (size_t)slots[t] * kv_dim;
            for (int i = 0; i < kv_dim; i++) {
                K[dst + i] = vl3__cpu_f32_to_bf16(row[k_off + i]);
                V[dst + i] = vl3__cpu_f32_to_bf16(row[v_off + i]);
            }
        }
        return 0;
    }
    if (kv_dtype != VL3__DTYPE_F32)
        return -22 /* EINVAL */;
    float *K = k_pages, *V = v_pages;
    for (int t = 0; t < T; t++) {
        const float *row = qkv + (size_t)t * qkv_stride;
        size_t dst = (size_t)slots[t] * kv_dim;
        memcpy(K + dst, row + k_off, sizeof(float) * (size_t)kv_dim);
        memcpy(V + dst, row + v_off, sizeof(float) * (size_t)kv_dim);
    }
    return 0;
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

/* S (m, nk) = scale * Qm (m, D; row stride ldq) K^T over the sequence's pages, kv head g. */
static void scores(float *S, const float *Qm, int ldq, int m, int nk, float scale,
                   const struct vl3__attn_args *a, const int32_t *pages, int g)
{
    int ps = a->page_size, D = a->head_dim, kvs = a->n_kv_heads * D;
    const float *Kp = a->k_pages;
    for (int j0 = 0, bi = 0; j0 < nk; j0 += ps, bi++) {
        int n = nk - j0 < ps ? nk - j0 : ps;
        const float *K = Kp + (size_t)pages[bi] * ps * kvs + (size_t)g * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, D, scale, Qm, ldq, K, kvs,
                    0.0f, S + j0, nk);
    }
}

/* Om (m, D; row stride ldo) = S (m, nk) V over the sequence's pages, kv head g. */
static void weighted(float *Om, int ldo, const float *S, int m, int nk,
                     const struct vl3__attn_args *a, const int32_t *pages, int g)
{
    int ps = a->page_size, D = a->head_dim, kvs = a->n_kv_heads * D;
    const float *Vp = a->v_pages;
    for (int j0 = 0, bi = 0; j0 < nk; j0 += ps, bi++) {
        int n = nk - j0 < ps ? nk - j0 : ps;
        const float *V = Vp + (size_t)pages[bi] * ps * kvs + (size_t)g * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, D, n, 1.0f, S + j0, nk, V, kvs,
                    j0 ? 1.0f : 0.0f, Om, ldo);
    }
}

/* One thread's share of a sequence: query heads [u0, u1) (prefill) or kv heads [u0, u1) (a
 * decode query), scores in its own slice S of the scratch. */
struct attn_job {
    const struct vl3__attn_args *a;
    const struct vl3__attn_seq *sq;
    float *S;
    int u0, u1;
    int *err; /* set on failure (out of memory widening bf16 pools) */
};

/* bf16 pools on this path (CPUs without AVX-512 or AMX): kv head g's first nk keys and values
 * widened into contiguous f32 rows (*ret_a: the same arguments over them as one page of one kv
 * head, *ret_g = 0), so the sgemm code below runs unchanged. */
struct widened {
    float *k, *v;
    struct vl3__attn_args a;
    int32_t page0;
};

static int widen_kv(struct widened *w, const struct vl3__attn_args *a, const int32_t *pages,
                    int g, int nk)
{
    int D = a->head_dim, ps = a->page_size;
    size_t kvs = (size_t)a->n_kv_heads * D;
    if (!w->k) {
        w->k = malloc(sizeof(float) * (size_t)nk * D);
        w->v = malloc(sizeof(float) * (size_t)nk * D);
        if (!w->k || !w->v)
            return -12 /* ENOMEM */;
    }
    const uint16_t *K = a->k_pages, *V = a->v_pages;
    for (int j = 0; j < nk; j++) {
        size_t src = ((size_t)pages[j / ps] * ps + (size_t)(j % ps)) * kvs + (size_t)g * D;
        for (int d = 0; d < D; d++) {
            w->k[(size_t)j * D + d] = vl3__cpu_bf16_to_f32(K[src + d]);
            w->v[(size_t)j * D + d] = vl3__cpu_bf16_to_f32(V[src + d]);
        }
    }
    w->a = *a;
    w->a.k_pages = w->k;
    w->a.v_pages = w->v;
    w->a.n_kv_heads = 1;
    w->a.page_size = nk;
    w->page0 = 0;
    return 0;
}

static void *attn_run(void *arg)
{
    const struct attn_job *j = arg;
    const struct vl3__attn_args *a = j->a;
    const struct vl3__attn_seq *sq = j->sq;
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim, grp = H / Hkv;
    const float *Q = (const float *)a->q + (size_t)sq->q_row * a->q_stride;
    float *O = (float *)a->out + (size_t)sq->q_row * a->out_stride;
    float *S = j->S;
    int bf16 = a->kv_dtype == VL3__DTYPE_BF16, wg = -1, nk_all = sq->n_past + sq->n_q;
    struct widened w = {0};
    if (sq->n_q == 1) {
        int nk = sq->n_past + 1;
        for (int g = j->u0; g < j->u1; g++) {
            const struct vl3__attn_args *ga = a;
            const int32_t *pages = sq->pages;
            int gg = g;
            if (bf16) {
                if (widen_kv(&w, a, sq->pages, g, nk) < 0) {
                    *j->err = -12;
                    break;
                }
                ga = &w.a, pages = &w.page0, gg = 0;
            }
            scores(S, Q + (size_t)g * grp * D, D, grp, nk, a->scale, ga, pages, gg);
            for (int r = 0; r < grp; r++)
                softmax_causal(S + (size_t)r * nk, nk, nk);
            weighted(O + (size_t)g * grp * D, D, S, grp, nk, ga, pages, gg);
        }
        free(w.k), free(w.v);
        return NULL;
    }
    for (int h = j->u0; h < j->u1; h++) {
        int g = h / grp;
        const struct vl3__attn_args *ga = a;
        const int32_t *pages = sq->pages;
        int gg = g;
        if (bf16) {
            if (g != wg && widen_kv(&w, a, sq->pages, g, nk_all) < 0) {
                *j->err = -12;
                break;
            }
            wg = g;
            ga = &w.a, pages = &w.page0, gg = 0;
        }
        for (int i0 = 0; i0 < sq->n_q; i0 += ATTN_QB) {
            int qb = sq->n_q - i0 < ATTN_QB ? sq->n_q - i0 : ATTN_QB;
            int nk = sq->n_past + i0 + qb; /* keys seen by the block's last row */
            scores(S, Q + (size_t)i0 * a->q_stride + (size_t)h * D, a->q_stride, qb, nk,
                   a->scale, ga, pages, gg);
            for (int r = 0; r < qb; r++)
                softmax_causal(S + (size_t)r * nk, sq->n_past + i0 + r + 1, nk);
            weighted(O + (size_t)i0 * a->out_stride + (size_t)h * D, a->out_stride, S, qb,
                     nk, ga, pages, gg);
        }
    }
    free(w.k), free(w.v);
    return NULL;
}

static void attn_task(void *arg, int k)
{
    attn_run((struct attn_job *)arg + k);
}

/* Threads that split a sequence's heads: 1 in f32 mode (OpenBLAS threads each sgemm, the
 * numerics the oracle tests pin), the context's threads in bf16 mode (OpenBLAS runs on one thread
 * there, see backend_cpu.c). */
static int attn_threads(void *ctx)
{
    if (vl3__cpu_precision(ctx) != VL3__CPU_PREC_BF16)
        return 1;
    int nt = vl3__cpu_threads(ctx);
    return nt < 1 ? 1 : nt > ATTN_MAX_THREADS ? ATTN_MAX_THREADS : nt;
}

int vl3__cpu_attention_f32(void *ctx, const struct vl3__attn_args *a)
{
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim;
    if (H <= 0 || Hkv <= 0 || H % Hkv || D <= 0 || a->page_size <= 0)
        return -22 /* EINVAL */;
    int nt_max = attn_threads(ctx);
    for (int si = 0; si < a->n_seqs; si++) {
        const struct vl3__attn_seq *sq = &a->seqs[si];
        size_t slice = (size_t)(ATTN_QB > H ? ATTN_QB : H) * (size_t)(sq->n_past + sq->n_q);
        int units = sq->n_q == 1 ? Hkv : H;
        int nt = nt_max < units ? nt_max : units;
        if (slice * sizeof(float) * (size_t)nt > a->work_bytes || !sq->pages)
            return -22;
        struct attn_job jobs[ATTN_MAX_THREADS];
        int err = 0;
        for (int k = 0; k < nt; k++)
            jobs[k] = (struct attn_job){a, sq, (float *)a->work + slice * (size_t)k,
                                        units * k / nt, units * (k + 1) / nt, &err};
        vl3__cpu_run(ctx, nt, attn_task, jobs);
        if (err)
            return err;
    }
    return 0;
}

#define AMX_MIN_Q 16 /* a sequence with fewer new queries (decode) stays on the f32 path */

/* The paths by pool dtype and CPU:
 *   f32 pools (f32 mode): attention.c's sgemm path, or in bf16 mode prefill chunks on AMX;
 *   bf16 pools (bf16 mode): prefill chunks on AMX, decode tokens on attention_decode.c's kernels
 *   (AMX tiles where present, else AVX-512); without those, the sgemm path on widened copies. */
int vl3__cpu_attention(void *ctx, const struct vl3__attn_args *a)
{
    int bf16_kv = a->kv_dtype == VL3__DTYPE_BF16;
    if (a->kv_dtype != VL3__DTYPE_F32 && !bf16_kv)
        return -22 /* EINVAL */;
    /* the ISA in use (VL3_CPU_ISA or a test may force a fallback) decides, as for the GEMM */
    int amx = vl3__cpu_bf16_mode(ctx) && vl3__cpu_amx_available() &&
              vl3__cpu_isa() == VL3__CPU_ISA_AMX;
    int dec = bf16_kv && vl3__cpu_isa() >= VL3__CPU_ISA_AVX512;
    if (!amx && !dec)
        return vl3__cpu_attention_f32(ctx, a);
    /* prefill chunks on the AMX tiles, decode tokens (memory-bound) on the decode kernel (bf16
     * pools) or the f32 path */
    struct vl3__attn_seq *big = malloc(sizeof(*big) * (size_t)(a->n_seqs + 1));
    struct vl3__attn_seq *small = malloc(sizeof(*small) * (size_t)(a->n_seqs + 1));
    if (!big || !small) {
        free(big), free(small);
        return -12 /* ENOMEM */;
    }
    int nb = 0, ns = 0, rc = 0;
    for (int i = 0; i < a->n_seqs; i++) {
        if (a->seqs[i].n_q >= AMX_MIN_Q)
            big[nb++] = a->seqs[i];
        else
            small[ns++] = a->seqs[i];
    }
    struct vl3__attn_args sub = *a;
    if (nb) {
        sub.seqs = big;
        sub.n_seqs = nb;
        rc = amx ? vl3__cpu_attention_amx(ctx, &sub) : vl3__cpu_attention_f32(ctx, &sub);
    }
    if (rc == 0 && ns) {
        sub.seqs = small;
        sub.n_seqs = ns;
        rc = dec ? vl3__cpu_attention_decode_bf16(ctx, &sub) : vl3__cpu_attention_f32(ctx, &sub);
    }
    free(big), free(small);
    return rc;
}
