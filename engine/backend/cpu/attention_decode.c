/* attention_decode.c: attention of decode steps over bf16 KV pools (the CPU backend's bf16 mode)
 * on AVX-512, and on AMX tiles where the CPU has them.
 *
 * A sequence with few new queries (n_q < 16: a decode token, a short chunk) reads every cached
 * key and value of its layer once per step, so at long context this is a memory stream: 7k keys
 * of the 2B model are 0.2 GB a token in bf16 (0.4 in f32). The f32 path (attention.c) ran one
 * sgemm per page and a scalar softmax on f32 pools; here the pools stay bf16 and are read once.
 *
 * Work items are (sequence, kv heads, chunk of whole pages of about CHUNK_KEYS keys), split over
 * the context's threads: every kv head of the chunk on AVX-512 (whole slots, read front to back),
 * one on AMX or where the chunks are too few for the threads. An item takes the query vectors of
 * its GQA groups (n_q rows x grp heads each) and leaves (max, sum, O) per query vector; the
 * merge rescales the chunks of a (sequence, kv head) to a common max (the "flash decoding"
 * split-K combine) and writes the output rows.
 * Causality: query i of a sequence sees keys < n_past + i + 1; later keys get p = 0.
 *
 * Three item kernels:
 *   dec_item_hybrid (the default where the CPU has AMX; head dim 128, at most 16 query vectors
 *     per kv head): the scores as dec_item_amx computes them (one TDPBF16PS per 16 keys, K rows
 *     in place as A tiles, q rounded to bf16 as the AMX prefill holds it), the softmax down
 *     the keys with the vectors in the lanes, and O += p V as dec_item (f32 p broadcast from
 *     the score rows, V widened): neither dec_item's per-key FMA chains and horizontal sums nor
 *     dec_item_amx's V staging. Host B, 2026-12-06, bench_decode_attention (2 threads; five
 *     interleaved pairs on a busy host): median 13.1 ms a step against 14.8 on AVX-512, one
 *     thread's CPU time 21.6 against 28.5. In the 2B model its logits differ from the AVX-512
 *     items' by relative L2 ~6e-3 (the rounding of q), the same greedy tokens.
 *   dec_item_amx (AMX-BF16, head dims up to 128, at most 16 query vectors: a decode token of a
 *     group of up to 16 heads; VL3_DECODE_ATTN=amx): the query vectors are the columns of B
 *     tiles, so one TDPBF16PS scores 16 keys against all of them, and the softmax runs down the
 *     keys with the vectors in the lanes; see its comment. q and p in bf16, as the AMX prefill
 *     (attention_amx.c).
 *   dec_item (AVX-512; VL3_DECODE_ATTN=avx512 on a CPU with AMX): per key, the K row widened
 *     bf16 -> f32 (exact) and one FMA chain per query vector, the partial sums of 16 keys
 *     reduced together (hsum16); then the chunk's softmax and O += p V with V rows widened, 64
 *     output values at a time for up to VG query vectors (24 accumulators). q and p stay f32.
 *     At head dims 64 and 128 the rows are widened in the even/odd form (bf16_even /
 *     bf16_odd: two instructions per 32 values).
 * bench_decode_attention (28 layers x 7,212 keys, 2 threads), pairs run back to back as the
 * machine's load came and went (host A): AMX 12.6-15.2 ms a step, AVX-512 14.2-18.5 (12-18%
 * more). Both spend ~100 cycles per key and kv head even with the pools cache-resident; on host
 * B the AVX-512 items were only ~18% faster per key from cache than from memory (2026-12-06,
 * VL3_BENCH_CTX=1025 against 7,213), so their cost is the instructions, not the reads.
 *
 * Memory: items go chunk-major (a chunk's kv heads, then the next chunk) and the threads
 * take them in that order from a shared counter, so the pools are read front to back (and a
 * thread slowed by the rest of the machine takes fewer items). The AVX-512 kernel prefetches
 * rows PREFETCH_KEYS keys ahead (none: 42 ms a step at 7k keys, 16 keys ahead: 30 ms, one
 * thread's CPU time, loaded machine). The AMX kernel measured the same with prefetches 16 to
 * 128 keys ahead (T0/T1/T2 hints); what helped it is issuing, at the top of each 32-key step,
 * prefetches of that step's V lines (read by the staging after the score products) and of the
 * next step's K lines: bench_decode_attention on host B, six interleaved pairs, 18.7-28.4 ms a
 * step (median 22.3) -> 15.9-22.9 (19.5), one thread's CPU time 27-45 (42.4) -> 26-40 (32);
 * without the V reads at all it takes ~25. A variant of the AVX-512 kernel on vdpbf16ps (q and
 * p rounded to bf16) measured slower (36-43 ms) and was dropped: on host B one vdpbf16ps
 * (32 products) issues every 2 cycles where two FMAs (16 each) issue per cycle. On host B,
 * 2026-12-06 (bench_decode_attention, 2 threads): 14.4-15.1 ms a step -> 12.7-13.6 with the
 * even/odd widening -> 11.6-12.6 with every kv head of a chunk in one item (four interleaved
 * pairs against one head per item: 13.4-14.3); a prefetch of the V rows during the K pass
 * (to L1 or L2) measured no better.
 *
 * Numerics: K and V are the bf16 values the pools hold (kv_store rounded them, nearest even);
 * AVX-512: q and p f32, sums f32, exp by vl3__exp512_ps (relative error ~2e-7); AMX: q and p
 * rounded to bf16, f32 sums, 2^x by vl3__exp2_512_ps; hybrid: q rounded to bf16, p f32, f32
 * sums, 2^x by vl3__exp2_512_ps. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "model.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define DEC_X86 1
#include <immintrin.h>

#include "simd_exp.h"
#include "simd_mask.h"
#include "simd_transpose.h"
#endif
/* the AMX items: GCC's tile intrinsics (as attention_amx.c) */
#if defined(DEC_X86) && !defined(__clang__) && __GNUC__ >= 11
#define DEC_AMX 1
#endif

#define CHUNK_KEYS 256 /* keys per item (rounded to whole pages) */
#define VG 6           /* query vectors per pass of the values loop */
#define MAX_D 512
#define PREFETCH_KEYS 16 /* software prefetch distance in keys */
#define MAX_THREADS 64
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

struct dec_item {
    int seq, g0, g1, j0, j1; /* keys [j0, j1) of kv heads [g0, g1) of sequence seq */
    size_t part;             /* offset of its partials: (g1 - g0) x qv x (D + 2) floats */
};

struct dec_run {
    const struct vl3__attn_args *a;
    const struct vl3__attn_seq *seqs;
    struct dec_item *items;
    int n_items;
    float *part;  /* per item and query vector: m, l, o[D] */
    float *S;     /* per thread: struct dec_scratch's arrays, s_per_thread floats */
    size_t s_per_thread;
    int chunk, qv_max, nt, dp;
    int amx;  /* 0, VL3__DEC_AMX (dec_item_amx) or VL3__DEC_HYBRID (dec_item_hybrid) */
    int next; /* the next item to take (atomic) */
};

/* One thread's scratch (64-byte aligned): scores S (qv_max x chunk), key sums T (qv_max x 16
 * vectors), the query vectors q (qv_max x dp), the chunk's row offsets */
struct dec_scratch {
    float *S;
    void *T;
    float *q;
    size_t *rows;
};

/* The AMX items' scratch, per thread (each array 64-byte aligned; nk32 = the chunk rounded up
 * to 32 keys): Q as B tiles (nc x 16 x 16 words of bf16 pairs), S^T (nk32 keys x 16 query
 * vectors, f32), P as A tiles (nk32 / 32 x 16 x 32 bf16), V as B tiles (nk32 / 32 x nj x 16 x
 * 32 bf16), two staged K blocks (2 x 16 x Dp bf16), O (nj x 16 x 16 f32). */
struct amx_scratch {
    uint32_t *qt;
    float *st;
    uint16_t *pt, *vt, *kt;
    float *ot;
};

/* The layout above carved from base (when w is not NULL); returns its size in floats. */
static size_t amx_scratch_carve(float *base, int chunk, int Dp, struct amx_scratch *w)
{
    size_t nk32 = ((size_t)chunk + 31) / 32 * 32;
    size_t qt = 0, st = qt + (size_t)Dp / 32 * 256, pt = st + nk32 * 16, vt = pt + nk32 * 8;
    size_t kt = vt + nk32 * (size_t)Dp / 2, ot = kt + 16 * (size_t)Dp, end = ot + 16 * (size_t)Dp;
    if (w) {
        w->qt = (uint32_t *)(base + qt);
        w->st = base + st;
        w->pt = (uint16_t *)(base + pt);
        w->vt = (uint16_t *)(base + vt);
        w->kt = (uint16_t *)(base + kt);
        w->ot = base + ot;
    }
    return end;
}

#ifdef DEC_X86
/* rows[j] = the element offset of key j0 + j's slot (nk keys) in a pool of slots of kvs
 * values, plus off: one page-table lookup per page rather than a division per key. */
static void chunk_rows(size_t *rows, const int32_t *pages, int j0, int nk, int ps, size_t kvs,
                       size_t off)
{
    for (int j = 0; j < nk;) {
        int k = j0 + j, in_page = ps - k % ps;
        int n = in_page < nk - j ? in_page : nk - j;
        size_t base = ((size_t)pages[k / ps] * ps + (size_t)(k % ps)) * kvs + off;
        for (int t = 0; t < n; t++)
            rows[j + t] = base + (size_t)t * kvs;
        j += n;
    }
}

#define DEC_TARGET "avx512f,avx512bw,avx512vl,avx512dq,fma"

/* 16 bf16 (masked) widened to f32: the bf16 bits are the high half of the f32 bits */
__attribute__((target(DEC_TARGET))) static inline __m512 widen16(const uint16_t *p, __mmask16 m)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* out lane j = the sum of the 16 lanes of v[j] */
__attribute__((target(DEC_TARGET))) static inline __m512 hsum16(const __m512 *v)
{
    __m512 w[8], u[4];
    for (int i = 0; i < 8; i++)
        w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    /* w[i], per 128-bit lane: v[2i] at positions 0, 2 and v[2i+1] at 1, 3 */
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(w[2 * i]), b = _mm512_castps_pd(w[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    /* u[i], per 128-bit lane L: position p holds lane L's partial of v[4i + p] */
    __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44),
                               _mm512_shuffle_f32x4(u[0], u[1], 0xee));
    __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44),
                               _mm512_shuffle_f32x4(u[2], u[3], 0xee));
    return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88),
                         _mm512_shuffle_f32x4(s01, s23, 0xdd));
}

/* Scores of one key (K row kr, nc chunks of 16, widened once into registers) against the qv
 * query vectors of qbuf (rows of nc * 16 floats, zero-padded): T[v * 16 + jj] = the 16 partial
 * sums. Inlined with nc constant where the head dim allows (128: the 2B model), so the widened
 * row stays in registers. */
__attribute__((target(DEC_TARGET), always_inline)) static inline void score_key(
    const float *qbuf, int qv, const uint16_t *kr, int D, int nc, __m512 *T, int jj)
{
    __m512 kf[MAX_D / 16];
    _Pragma("GCC unroll 16") for (int c = 0; c < nc; c++)
        kf[c] = widen16(kr + 16 * c, vl3__mask16(D - 16 * c));
    for (int v = 0; v < qv; v++) {
        const float *q = qbuf + (size_t)v * nc * 16;
        __m512 s0 = _mm512_mul_ps(_mm512_load_ps(q), kf[0]), s1 = _mm512_setzero_ps();
        _Pragma("GCC unroll 16") for (int c = 1; c + 1 < nc; c += 2) {
            s1 = _mm512_fmadd_ps(_mm512_load_ps(q + 16 * c), kf[c], s1);
            s0 = _mm512_fmadd_ps(_mm512_load_ps(q + 16 * c + 16), kf[c + 1], s0);
        }
        if (!(nc & 1))
            s1 = _mm512_fmadd_ps(_mm512_load_ps(q + 16 * (nc - 1)), kf[nc - 1], s1);
        T[v * 16 + jj] = _mm512_add_ps(s0, s1);
    }
}

/* O (64 values from d0, vn <= VG vectors v0 ..) += p V over the chunk's nk keys; inlined with vn
 * constant (VG: the loops unrolled, accumulators in registers) or not */
__attribute__((target(DEC_TARGET), always_inline)) static inline void values_block(
    const float *S, int ld_s, int v0, int vn, const uint16_t *Vp, const size_t *rows, int nk,
    int D, int d0, float *part, int D2)
{
    __m512 acc[VG][4];
    _Pragma("GCC unroll 8") for (int v = 0; v < VG; v++)
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
            acc[v][c] = _mm512_setzero_ps();
    __mmask16 m[4];
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
        m[c] = D - d0 - 16 * c > 0 ? vl3__mask16(D - d0 - 16 * c) : 0;
    for (int j = 0; j < nk; j++) {
        const uint16_t *vr = Vp + rows[j] + d0;
        if (j + PREFETCH_KEYS < nk) /* the row PREFETCH_KEYS keys ahead (file comment) */
            for (int c = 0; c < 2 && d0 + 32 * c < D; c++)
                _mm_prefetch((const char *)(Vp + rows[j + PREFETCH_KEYS] + d0 + 32 * c),
                             _MM_HINT_T0);
        __m512 vf[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
            vf[c] = widen16(vr + 16 * c, m[c]);
        _Pragma("GCC unroll 8") for (int v = 0; v < vn; v++) {
            __m512 p = _mm512_set1_ps(S[(size_t)(v0 + v) * ld_s + j]);
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
                acc[v][c] = _mm512_fmadd_ps(p, vf[c], acc[v][c]);
        }
    }
    for (int v = 0; v < vn; v++) {
        float *o = part + (size_t)(v0 + v) * D2 + 2 + d0;
        for (int c = 0; c < 4; c++)
            if (m[c])
                _mm512_mask_storeu_ps(o + 16 * c, m[c], acc[v][c]);
    }
}

/* The even/odd form (head dims 64 and 128): a 32-value chunk of a bf16 row is one load and
 * two instructions, the even values shifted into the high halves and the odd values masked in
 * place, where widen16 takes a load, a zero extension and a shift per 16 values. The query
 * vectors are stored in that order (per 32 values: 16 even, then 16 odd), and O's accumulators
 * hold it until they are stored. */
__attribute__((target(DEC_TARGET))) static inline __m512 bf16_even(__m512i x)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
}

__attribute__((target(DEC_TARGET))) static inline __m512 bf16_odd(__m512i x)
{
    return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u)));
}

/* score_key in the even/odd form: nc2 chunks of 32 values */
__attribute__((target(DEC_TARGET), always_inline)) static inline void score_key_eo(
    const float *qbuf, int qv, const uint16_t *kr, int nc2, __m512 *T, int jj)
{
    __m512 ke[MAX_D / 32], ko[MAX_D / 32];
    _Pragma("GCC unroll 16") for (int c = 0; c < nc2; c++) {
        __m512i x = _mm512_loadu_si512(kr + 32 * c);
        ke[c] = bf16_even(x);
        ko[c] = bf16_odd(x);
    }
    for (int v = 0; v < qv; v++) {
        const float *q = qbuf + (size_t)v * nc2 * 32;
        __m512 s0 = _mm512_mul_ps(_mm512_load_ps(q), ke[0]);
        __m512 s1 = _mm512_mul_ps(_mm512_load_ps(q + 16), ko[0]);
        _Pragma("GCC unroll 16") for (int c = 1; c < nc2; c++) {
            s0 = _mm512_fmadd_ps(_mm512_load_ps(q + 32 * c), ke[c], s0);
            s1 = _mm512_fmadd_ps(_mm512_load_ps(q + 32 * c + 16), ko[c], s1);
        }
        T[v * 16 + jj] = _mm512_add_ps(s0, s1);
    }
}

/* values_block in the even/odd form: 64 output values from d0 (D a multiple of 64) */
__attribute__((target(DEC_TARGET), always_inline)) static inline void values_block_eo(
    const float *S, size_t sv, size_t sj, int v0, int vn, const uint16_t *Vp, const size_t *rows,
    int nk, int d0, float *part, int D2)
{
    __m512 acc[VG][4];
    _Pragma("GCC unroll 8") for (int v = 0; v < VG; v++)
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
            acc[v][c] = _mm512_setzero_ps();
    for (int j = 0; j < nk; j++) {
        const uint16_t *vr = Vp + rows[j] + d0;
        if (j + PREFETCH_KEYS < nk) /* the row PREFETCH_KEYS keys ahead (file comment) */
            for (int c = 0; c < 2; c++)
                _mm_prefetch((const char *)(Vp + rows[j + PREFETCH_KEYS] + d0 + 32 * c),
                             _MM_HINT_T0);
        __m512i x0 = _mm512_loadu_si512(vr), x1 = _mm512_loadu_si512(vr + 32);
        __m512 vf[4] = {bf16_even(x0), bf16_odd(x0), bf16_even(x1), bf16_odd(x1)};
        _Pragma("GCC unroll 8") for (int v = 0; v < vn; v++) {
            __m512 p = _mm512_set1_ps(S[(size_t)(v0 + v) * sv + (size_t)j * sj]);
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
                acc[v][c] = _mm512_fmadd_ps(p, vf[c], acc[v][c]);
        }
    }
    /* back to the natural order: values 2i and 2i + 1 of a chunk are lane i of even and odd */
    __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int v = 0; v < vn; v++) {
        float *o = part + (size_t)(v0 + v) * D2 + 2 + d0;
        for (int c = 0; c < 2; c++) {
            _mm512_storeu_ps(o + 32 * c, _mm512_permutex2var_ps(acc[v][2 * c], lo,
                                                                acc[v][2 * c + 1]));
            _mm512_storeu_ps(o + 32 * c + 16, _mm512_permutex2var_ps(acc[v][2 * c], hi,
                                                                     acc[v][2 * c + 1]));
        }
    }
}

/* O += p V for the qv vectors from vs over all of D (64 or 128), VG vectors at a time: p of
 * vector v, key j at S[v * sv + j * sj] */
__attribute__((target(DEC_TARGET), always_inline)) static inline void values_eo(
    const float *S, size_t sv, size_t sj, int vs, int qv, const uint16_t *Vg, const size_t *rows,
    int nk, int D, float *part)
{
    for (int v0 = 0; v0 < qv; v0 += VG) {
        int vn = qv - v0 < VG ? qv - v0 : VG;
        for (int d0 = 0; d0 < D; d0 += 64) {
            if (vn == VG)
                values_block_eo(S, sv, sj, vs + v0, VG, Vg, rows, nk, d0, part, D + 2);
            else
                values_block_eo(S, sv, sj, vs + v0, vn, Vg, rows, nk, d0, part, D + 2);
        }
    }
}

/* One item on AVX-512: kv heads [g0, g1) of a chunk of keys. Vector v of the item is vector
 * v % qv (row (v % qv) / grp of the sequence's queries, head (g0 + v / qv) * grp + v % grp) of
 * kv head g0 + v / qv; its partials are at part + v * (D + 2). With every kv head in one item
 * the K pass reads whole slots front to back (a stream the hardware prefetcher follows) and the
 * V passes find the chunk's rows in L2 after the first. */
__attribute__((target(DEC_TARGET))) static void dec_item(const struct dec_run *r,
                                                         const struct dec_item *it,
                                                         struct dec_scratch *w)
{
    const struct vl3__attn_args *a = r->a;
    const struct vl3__attn_seq *sq = &r->seqs[it->seq];
    int D = a->head_dim, grp = a->n_heads / a->n_kv_heads, ps = a->page_size;
    int ng = it->g1 - it->g0, qv = sq->n_q * grp, nk = it->j1 - it->j0, nc = (D + 15) / 16;
    size_t kvs = (size_t)a->n_kv_heads * D;
    const uint16_t *Kp = (const uint16_t *)a->k_pages + (size_t)it->g0 * D;
    const uint16_t *Vp = (const uint16_t *)a->v_pages + (size_t)it->g0 * D;
    float *S = w->S, *part = r->part + it->part;
    __m512 *T = w->T;
    /* the chunk's rows (element offsets of head g0 in the pools, the same slots for K and V)
     * and the bytes of the item's heads in a slot (prefetched ahead) */
    chunk_rows(w->rows, sq->pages, it->j0, nk, ps, kvs, 0);
    int row_bytes = ng * D * 2;
    /* the query vectors, zero-padded to nc * 16 */
    const float *Q = (const float *)a->q + (size_t)sq->q_row * a->q_stride;
    int eo = D == 64 || D == 128; /* the even/odd form (constant chunk counts) */
    __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int v = 0; v < ng * qv; v++) {
        int g = it->g0 + v / qv, lv = v % qv;
        const float *q = Q + (size_t)(lv / grp) * a->q_stride + (size_t)(g * grp + lv % grp) * D;
        float *qb = w->q + (size_t)v * nc * 16;
        for (int c = 0; eo && c < nc; c += 2) {
            __m512 x0 = _mm512_loadu_ps(q + 16 * c), x1 = _mm512_loadu_ps(q + 16 * c + 16);
            _mm512_store_ps(qb + 16 * c, _mm512_permutex2var_ps(x0, ev, x1));
            _mm512_store_ps(qb + 16 * c + 16, _mm512_permutex2var_ps(x0, od, x1));
        }
        for (int c = 0; !eo && c < nc; c++)
            _mm512_store_ps(qb + 16 * c,
                            _mm512_maskz_loadu_ps(vl3__mask16(D - 16 * c), q + 16 * c));
    }
    __m512 scale = _mm512_set1_ps(a->scale);

    /* scores: S[v][j], each key's heads in slot order */
    for (int jb = 0; jb < nk; jb += 16) {
        int nb = nk - jb < 16 ? nk - jb : 16;
        for (int jj = 0; jj < nb; jj++) {
            if (jb + jj + PREFETCH_KEYS < nk) {
                for (int o = 0; o < row_bytes; o += 64)
                    _mm_prefetch((const char *)(Kp + w->rows[jb + jj + PREFETCH_KEYS]) + o,
                                 _MM_HINT_T0);
            }
            for (int gi = 0; gi < ng; gi++) {
                const uint16_t *kr = Kp + w->rows[jb + jj] + (size_t)gi * D;
                const float *qb = w->q + (size_t)gi * qv * nc * 16;
                __m512 *Tg = T + (size_t)gi * qv * 16;
                if (D == 128)
                    score_key_eo(qb, qv, kr, 4, Tg, jj);
                else if (eo)
                    score_key_eo(qb, qv, kr, 2, Tg, jj);
                else
                    score_key(qb, qv, kr, D, nc, Tg, jj);
            }
        }
        for (int jj = nb; jj < 16; jj++)
            for (int v = 0; v < ng * qv; v++)
                T[v * 16 + jj] = _mm512_setzero_ps();
        for (int v = 0; v < ng * qv; v++) {
            __m512 s = _mm512_mul_ps(hsum16(T + v * 16), scale);
            /* keys this query sees in the block: key it->j0 + jb + jj < n_past + i + 1 */
            int lim = sq->n_past + (v % qv) / grp + 1 - it->j0 - jb;
            __mmask16 ok = lim <= 0 ? 0 : vl3__mask16(lim < nb ? lim : nb);
            s = _mm512_mask_blend_ps(ok, _mm512_set1_ps(-INFINITY), s);
            _mm512_mask_storeu_ps(S + (size_t)v * r->chunk + jb, vl3__mask16(nb), s);
        }
    }

    /* softmax of the chunk per query vector: p = exp(s - m) in S, (m, l) into the partials */
    for (int v = 0; v < ng * qv; v++) {
        float *sv = S + (size_t)v * r->chunk, *pv = part + (size_t)v * (D + 2);
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < nk; j += 16)
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY),
                                                        vl3__mask16(nk - j), sv + j));
        float m = _mm512_reduce_max_ps(mx);
        pv[0] = m;
        if (m == -INFINITY) { /* no key of this chunk is visible to the query */
            pv[1] = 0;
            for (int j = 0; j < nk; j++)
                sv[j] = 0;
            continue;
        }
        __m512 sum = _mm512_setzero_ps(), mm = _mm512_set1_ps(m);
        for (int j = 0; j < nk; j += 16) {
            __mmask16 k = vl3__mask16(nk - j);
            __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, sv + j);
            __m512 p = _mm512_maskz_mov_ps(
                _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ),
                vl3__exp512_ps(_mm512_sub_ps(x, mm)));
            _mm512_mask_storeu_ps(sv + j, k, p);
            sum = _mm512_add_ps(sum, p);
        }
        pv[1] = _mm512_reduce_add_ps(sum);
    }

    /* O = p V per kv head, VG query vectors x 64 output values at a time */
    for (int gi = 0; gi < ng; gi++) {
        const uint16_t *Vg = Vp + (size_t)gi * D;
        if (eo) {
            values_eo(S, r->chunk, 1, gi * qv, qv, Vg, w->rows, nk, D, part);
            continue;
        }
        for (int v0 = 0; v0 < qv; v0 += VG) {
            int vn = qv - v0 < VG ? qv - v0 : VG, vs = gi * qv + v0;
            for (int d0 = 0; d0 < D; d0 += 64) {
                if (vn == VG)
                    values_block(S, r->chunk, vs, VG, Vg, w->rows, nk, D, d0, part, D + 2);
                else
                    values_block(S, r->chunk, vs, vn, Vg, w->rows, nk, D, d0, part, D + 2);
            }
        }
    }
}

#ifdef DEC_AMX
#define DEC_AMX_TARGET "amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx512dq,fma"

/* The A tile source of the 16 keys from j0 (K rows x Dp values): the pool's rows in place when
 * the 16 keys are whole, consecutive slots (one page) and D is a multiple of 32; else the rows
 * staged zero-padded in buffer h of x->kt (keys past nk zero). */
__attribute__((target(DEC_AMX_TARGET))) static inline const char *k_block(
    const struct amx_scratch *x, const uint16_t *Kp, const size_t *rows, size_t kvs, int nk,
    int j0, int D, int Dp, int h, long *stride)
{
    int nb = nk - j0 < 16 ? (nk - j0 > 0 ? nk - j0 : 0) : 16;
    if (D % 32 == 0 && nb == 16 && rows[j0 + 15] - rows[j0] == 15 * kvs) {
        *stride = (long)kvs * 2;
        return (const char *)(Kp + rows[j0]);
    }
    uint16_t *kt = x->kt + (size_t)h * 16 * Dp;
    for (int n = 0; n < 16; n++)
        for (int c = 0; c < Dp / 32; c++)
            _mm512_store_si512((void *)(kt + (size_t)n * Dp + 32 * c),
                               n < nb ? _mm512_maskz_loadu_epi16(vl3__mask32(D - 32 * c),
                                                                 Kp + rows[j0 + n] + 32 * c)
                                      : _mm512_setzero_si512());
    *stride = (long)Dp * 2;
    return (const char *)kt;
}

/* Q of kv head g (qv vectors of the sequence's rows from Q) as B tiles in x->qt: dword (r, n)
 * = vector n's bf16 pair 2r, 2r + 1 of chunk c (columns past qv zero); loaded into tiles
 * 4 .. 4 + nc - 1 */
__attribute__((target(DEC_AMX_TARGET))) static void q_tiles(const struct vl3__attn_args *a,
                                                           const float *Q, int qv, int g,
                                                           int nc, const struct amx_scratch *x)
{
    int D = a->head_dim, grp = a->n_heads / a->n_kv_heads;
    for (int c = 0; c < nc; c++) {
        __m512 rr[16], t[16];
        for (int n = 0; n < 16; n++) {
            if (n >= qv) {
                rr[n] = _mm512_setzero_ps();
                continue;
            }
            const float *q = Q + (size_t)(n / grp) * a->q_stride +
                             (size_t)(g * grp + n % grp) * D + 32 * c;
            rr[n] = (__m512)_mm512_cvtne2ps_pbh(
                _mm512_maskz_loadu_ps(vl3__mask16(D - 32 * c - 16), q + 16),
                _mm512_maskz_loadu_ps(vl3__mask16(D - 32 * c), q));
        }
        vl3__transpose16_ps(rr, t);
        for (int i = 0; i < 16; i++)
            _mm512_store_ps((float *)(x->qt + (size_t)c * 256 + i * 16), t[i]);
    }
    _tile_loadd(4, x->qt, 64);
    if (nc > 1)
        _tile_loadd(5, x->qt + 256, 64);
    if (nc > 2)
        _tile_loadd(6, x->qt + 512, 64);
    if (nc > 3)
        _tile_loadd(7, x->qt + 768, 64);
}

/* The score products of the 32 keys from j0: two 16-key blocks (K rows at Kp + rows[], in place
 * or staged by k_block) on C tiles 0 and 1, nc chunks against the Q tiles; scores_store puts
 * them in x->st rows j0 .. j0 + 31 (S^T, 16 floats a key), so that other work can run between
 * the two. */
__attribute__((target(DEC_AMX_TARGET))) static inline void scores_issue(
    const struct amx_scratch *x, const uint16_t *Kp, const size_t *rows, size_t kvs, int nk,
    int j0, int D, int nc)
{
    const char *src[2];
    long stride[2];
    for (int h = 0; h < 2; h++)
        src[h] = k_block(x, Kp, rows, kvs, nk, j0 + 16 * h, D, nc * 32, h, &stride[h]);
    _tile_zero(0);
    _tile_zero(1);
/* D chunk c of both key blocks against query tile TQ (a literal: the tile intrinsics paste
 * their register numbers into the instruction text) */
#define QK_CHUNK(c, TQ)                                                                            \
    do {                                                                                           \
        _tile_loadd(2, src[0] + 64 * (c), stride[0]);                                              \
        _tile_loadd(3, src[1] + 64 * (c), stride[1]);                                              \
        _tile_dpbf16ps(0, 2, TQ);                                                                  \
        _tile_dpbf16ps(1, 3, TQ);                                                                  \
    } while (0)
    QK_CHUNK(0, 4);
    if (nc > 1)
        QK_CHUNK(1, 5);
    if (nc > 2)
        QK_CHUNK(2, 6);
    if (nc > 3)
        QK_CHUNK(3, 7);
#undef QK_CHUNK
}

__attribute__((target(DEC_AMX_TARGET))) static inline void scores_store(
    const struct amx_scratch *x, int j0)
{
    _tile_stored(0, x->st + (size_t)j0 * 16, 64);
    _tile_stored(1, x->st + (size_t)(j0 + 16) * 16, 64);
}

/* Causality in the lanes of S^T: lane n (query vector n of qv, row n / grp of the sequence's
 * queries) sees the chunk's keys j < lane n's limit, i.e. key j0 + j < n_past + n / grp + 1;
 * lanes past qv see none */
__attribute__((target(DEC_AMX_TARGET))) static inline __m512i lane_limits(
    const struct vl3__attn_seq *sq, int grp, int qv, int j0)
{
    int lim[16];
    for (int n = 0; n < 16; n++)
        lim[n] = n < qv ? sq->n_past + n / grp + 1 - j0 : 0;
    return _mm512_loadu_si512(lim);
}

/* S^T's nk rows scaled by ss (scale x log2 e), key j of lane n set to -inf where j >= lim[n]
 * (stored back); returns each lane's maximum */
__attribute__((target(DEC_AMX_TARGET))) static inline __m512 scores_scale_max(
    const struct amx_scratch *x, int nk, __m512i limv, __m512 ss)
{
    __m512 ninf = _mm512_set1_ps(-INFINITY), mx = ninf;
    for (int j = 0; j < nk; j++) {
        __mmask16 vis = _mm512_cmpgt_epi32_mask(limv, _mm512_set1_epi32(j));
        __m512 sv = _mm512_mask_blend_ps(vis, ninf,
                                         _mm512_mul_ps(_mm512_load_ps(x->st + (size_t)j * 16), ss));
        _mm512_store_ps(x->st + (size_t)j * 16, sv);
        mx = _mm512_max_ps(mx, sv);
    }
    return mx;
}

/* One item on AMX tiles, for qv <= 16 query vectors (a decode token of a GQA group of up to 16
 * heads) and head dims up to 128. The query vectors are the 16 columns of B tiles, so one
 * TDPBF16PS scores 16 keys against all of them:
 *   S^T (keys x vectors) = K Q^T: A tiles are 16 K rows x 32 values, loaded in place from the
 *     pool (row stride: the slot size) where 16 keys lie in one page and D is a multiple of 32,
 *     else staged zero-padded; B tiles are Q rounded to bf16 (as the prefill kernel holds it),
 *     its bf16 pairs transposed once per item.
 *   softmax down the keys with the vectors in the lanes: base 2 (scores scaled in f32 by
 *     scale * log2 e), the chunk's max per vector, p = 2^(s - m), sums from the f32 p; p rounded
 *     to bf16 in key pairs and transposed per 32 keys into A tiles (vectors x keys).
 *   O (vectors x Dp) = P V: B tiles of V are key pairs interleaved per 32 values by
 *     vpunpckl/hwd, so a tile's 16 columns are values 8L + i (lo) and 8L + 4 + i (hi) of a
 *     32-value chunk (lane L, i < 4): the output is put back in order when stored. V is staged
 *     while the score tiles of the same keys run, 4 C tiles of O at a time over the chunk.
 * The numerics are the AMX prefill's (attention_amx.c): q, k, v and p in bf16, f32 sums, 2^x
 * from vl3__exp2_512_ps. The max is stored in natural units (times ln 2) for dec_merge. */
__attribute__((target(DEC_AMX_TARGET))) static void dec_item_amx(const struct dec_run *r,
                                                                const struct dec_item *it,
                                                                struct dec_scratch *w,
                                                                const struct amx_scratch *x)
{
    const struct vl3__attn_args *a = r->a;
    const struct vl3__attn_seq *sq = &r->seqs[it->seq];
    int D = a->head_dim, grp = a->n_heads / a->n_kv_heads, g = it->g0, ps = a->page_size;
    int qv = sq->n_q * grp, nk = it->j1 - it->j0, Dp = (D + 31) & ~31, nc = Dp / 32, nj = Dp / 16;
    int nk32 = (nk + 31) / 32;
    size_t kvs = (size_t)a->n_kv_heads * D;
    const uint16_t *Kp = a->k_pages, *Vp = a->v_pages;
    float *part = r->part + it->part;
    chunk_rows(w->rows, sq->pages, it->j0, nk, ps, kvs, (size_t)g * D);
    /* tiles 4 .. 4 + nc - 1: Q; 0, 1: S^T of a key block; 2, 3: K (alternating) */
    q_tiles(a, (const float *)a->q + (size_t)sq->q_row * a->q_stride, qv, g, nc, x);
    /* per step, 32 keys: two 16-key blocks on C tiles 0 and 1 (two chains of nc products) */
    for (int j0 = 0; j0 < nk; j0 += 32) {
        /* this step's V lines and the next step's K lines, issued before this step's score
         * products so that their misses overlap the tile work (see the file comment) */
        for (int j = j0; j < j0 + 32 && j < nk; j++)
            for (int c = 0; c < nc; c++)
                _mm_prefetch((const char *)(Vp + w->rows[j] + 32 * c), _MM_HINT_T0);
        for (int j = j0 + 32; j < j0 + 64 && j < nk; j++)
            for (int c = 0; c < nc; c++)
                _mm_prefetch((const char *)(Kp + w->rows[j] + 32 * c), _MM_HINT_T0);
        scores_issue(x, Kp, w->rows, kvs, nk, j0, D, nc);
        /* meanwhile, V of these keys as B tiles: pair r of the 32-key block, chunk c (zero
         * pairs past the chunk's keys) */
        uint16_t *vblk = x->vt + (size_t)(j0 / 32) * nj * 512;
        for (int rr = 0; rr < 16; rr++) {
            int jp = j0 + 2 * rr;
            uint16_t *dst = vblk + rr * 32;
            for (int c = 0; c < nc; c++) {
                __mmask32 m = vl3__mask32(D - 32 * c);
                __m512i va = jp < nk ? _mm512_maskz_loadu_epi16(m, Vp + w->rows[jp] + 32 * c)
                                     : _mm512_setzero_si512();
                __m512i vb = jp + 1 < nk
                                 ? _mm512_maskz_loadu_epi16(m, Vp + w->rows[jp + 1] + 32 * c)
                                 : _mm512_setzero_si512();
                _mm512_store_si512((void *)(dst + (size_t)(2 * c) * 512),
                                   _mm512_unpacklo_epi16(va, vb));
                _mm512_store_si512((void *)(dst + (size_t)(2 * c + 1) * 512),
                                   _mm512_unpackhi_epi16(va, vb));
            }
        }
        scores_store(x, j0);
    }

    /* softmax down the keys, the vectors in the lanes */
    __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mx = scores_scale_max(x, nk, lane_limits(sq, grp, qv, it->j0),
                                 _mm512_set1_ps(a->scale * LOG2E));
    __mmask16 live = _mm512_cmp_ps_mask(mx, ninf, _CMP_NEQ_OQ);
    __m512 msafe = _mm512_maskz_mov_ps(live, mx), lsum = _mm512_setzero_ps();
    for (int kb = 0; kb < nk32; kb++) {
        __m512 pr[16], t[16];
        for (int rr = 0; rr < 16; rr++) {
            int j = kb * 32 + 2 * rr;
            __m512 p0 = _mm512_setzero_ps(), p1 = p0;
            if (j < nk) {
                __m512 s0 = _mm512_load_ps(x->st + (size_t)j * 16);
                p0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s0, ninf, _CMP_NEQ_OQ),
                                         vl3__exp2_512_ps(_mm512_sub_ps(s0, msafe)));
            }
            if (j + 1 < nk) {
                __m512 s1 = _mm512_load_ps(x->st + (size_t)(j + 1) * 16);
                p1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s1, ninf, _CMP_NEQ_OQ),
                                         vl3__exp2_512_ps(_mm512_sub_ps(s1, msafe)));
            }
            lsum = _mm512_add_ps(lsum, _mm512_add_ps(p0, p1));
            __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(p0));
            __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(p1));
            pr[rr] = (__m512)_mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        }
        vl3__transpose16_ps(pr, t); /* t[n]: vector n's 16 key pairs = an A tile row */
        for (int n = 0; n < 16; n++)
            _mm512_store_ps((float *)(x->pt + (size_t)kb * 512 + n * 32), t[n]);
    }

    /* O = P V, 4 C tiles (64 permuted columns) at a time over the chunk */
    for (int t0 = 0; t0 < nj; t0 += 4) {
        int tn = nj - t0 < 4 ? nj - t0 : 4;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int kb = 0; kb < nk32; kb++) {
            const uint16_t *vb = x->vt + ((size_t)kb * nj + t0) * 512;
            _tile_loadd(4, x->pt + (size_t)kb * 512, 64);
            _tile_loadd(5, vb, 64);
            if (tn > 1)
                _tile_loadd(6, vb + 512, 64);
            _tile_dpbf16ps(0, 4, 5);
            if (tn > 2)
                _tile_loadd(7, vb + 1024, 64);
            if (tn > 1)
                _tile_dpbf16ps(1, 4, 6);
            if (tn > 3)
                _tile_loadd(5, vb + 1536, 64);
            if (tn > 2)
                _tile_dpbf16ps(2, 4, 7);
            if (tn > 3)
                _tile_dpbf16ps(3, 4, 5);
        }
        _tile_stored(0, x->ot + (size_t)t0 * 256, 64);
        if (tn > 1)
            _tile_stored(1, x->ot + (size_t)(t0 + 1) * 256, 64);
        if (tn > 2)
            _tile_stored(2, x->ot + (size_t)(t0 + 2) * 256, 64);
        if (tn > 3)
            _tile_stored(3, x->ot + (size_t)(t0 + 3) * 256, 64);
    }
    /* partials: m (natural units), l, O with its columns back in order */
    float mv[16], lv[16];
    _mm512_storeu_ps(mv, _mm512_mul_ps(mx, _mm512_set1_ps(LN2)));
    _mm512_storeu_ps(lv, lsum);
    __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    __m512i i1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int v = 0; v < qv; v++) {
        float *pv = part + (size_t)v * (D + 2);
        pv[0] = mv[v];
        pv[1] = lv[v];
        for (int c = 0; c < nc; c++) {
            __m512 lo = _mm512_load_ps(x->ot + (size_t)(2 * c) * 256 + v * 16);
            __m512 hi = _mm512_load_ps(x->ot + (size_t)(2 * c + 1) * 256 + v * 16);
            _mm512_mask_storeu_ps(pv + 2 + 32 * c, vl3__mask16(D - 32 * c),
                                  _mm512_permutex2var_ps(lo, i0, hi));
            _mm512_mask_storeu_ps(pv + 2 + 32 * c + 16, vl3__mask16(D - 32 * c - 16),
                                  _mm512_permutex2var_ps(lo, i1, hi));
        }
    }
}

/* One item on AMX tiles and AVX-512 (head dim 128, up to 16 query vectors per kv head, every
 * kv head of the item in turn): the scores as in dec_item_amx (16 keys against all of a head's
 * query vectors in one tile product, K rows in place as A tiles, Q rounded to bf16 as B tiles,
 * S^T keys x vectors), the softmax down the keys with the vectors in the lanes (base 2), p left
 * in S^T in f32, and O += p V as in dec_item (V rows widened, p broadcast from S^T): no V
 * staging and no horizontal sums. */
__attribute__((target(DEC_AMX_TARGET))) static void dec_item_hybrid(const struct dec_run *r,
                                                                   const struct dec_item *it,
                                                                   struct dec_scratch *w,
                                                                   const struct amx_scratch *x)
{
    const struct vl3__attn_args *a = r->a;
    const struct vl3__attn_seq *sq = &r->seqs[it->seq];
    enum { D = 128, NC = 4 };
    int grp = a->n_heads / a->n_kv_heads, qv = sq->n_q * grp, nk = it->j1 - it->j0;
    size_t kvs = (size_t)a->n_kv_heads * D;
    const uint16_t *Kp = (const uint16_t *)a->k_pages + (size_t)it->g0 * D;
    const uint16_t *Vp = (const uint16_t *)a->v_pages + (size_t)it->g0 * D;
    chunk_rows(w->rows, sq->pages, it->j0, nk, a->page_size, kvs, 0);
    const float *Q = (const float *)a->q + (size_t)sq->q_row * a->q_stride;
    __m512i limv = lane_limits(sq, grp, qv, it->j0);
    __m512 ss = _mm512_set1_ps(a->scale * LOG2E), ninf = _mm512_set1_ps(-INFINITY);
    for (int gi = 0; gi < it->g1 - it->g0; gi++) {
        const uint16_t *Kg = Kp + (size_t)gi * D, *Vg = Vp + (size_t)gi * D;
        float *part = r->part + it->part + (size_t)gi * qv * (D + 2);
        q_tiles(a, Q, qv, it->g0 + gi, NC, x);
        for (int j0 = 0; j0 < nk; j0 += 32) {
            for (int j = j0 + 32; j < j0 + 64 && j < nk; j++)
                for (int c = 0; c < NC; c++)
                    _mm_prefetch((const char *)(Kg + w->rows[j] + 32 * c), _MM_HINT_T0);
            scores_issue(x, Kg, w->rows, kvs, nk, j0, D, NC);
            scores_store(x, j0);
        }
        /* softmax down the keys */
        __m512 mx = scores_scale_max(x, nk, limv, ss);
        __mmask16 live = _mm512_cmp_ps_mask(mx, ninf, _CMP_NEQ_OQ);
        __m512 msafe = _mm512_maskz_mov_ps(live, mx), lsum = _mm512_setzero_ps();
        for (int j = 0; j < nk; j++) {
            __m512 sj = _mm512_load_ps(x->st + (size_t)j * 16);
            __m512 p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sj, ninf, _CMP_NEQ_OQ),
                                           vl3__exp2_512_ps(_mm512_sub_ps(sj, msafe)));
            _mm512_store_ps(x->st + (size_t)j * 16, p);
            lsum = _mm512_add_ps(lsum, p);
        }
        /* O = p V: p of vector v, key j at st[j * 16 + v] */
        values_eo(x->st, 1, 16, 0, qv, Vg, w->rows, nk, D, part);
        float mv[16], lv[16];
        _mm512_storeu_ps(mv, _mm512_mul_ps(mx, _mm512_set1_ps(LN2)));
        _mm512_storeu_ps(lv, lsum);
        for (int v = 0; v < qv; v++) {
            part[(size_t)v * (D + 2)] = mv[v];
            part[(size_t)v * (D + 2) + 1] = lv[v];
        }
    }
}
#endif

static void dec_task(void *arg, int k)
{
    struct dec_run *r = arg;
    float *base = r->S + r->s_per_thread * (size_t)k;
    size_t s_n = ((size_t)r->qv_max * r->chunk + 15) & ~(size_t)15;
    size_t q_n = (size_t)r->qv_max * r->dp;
    struct dec_scratch w = {base, (__m512 *)(base + s_n), base + s_n + (size_t)r->qv_max * 256,
                            (size_t *)(base + s_n + (size_t)r->qv_max * 256 + q_n)};
    int i; /* items taken in order from the shared counter: a slower thread takes fewer */
#ifdef DEC_AMX
    if (r->amx) {
        size_t rows_n = ((size_t)r->chunk * 2 + 15) & ~(size_t)15;
        struct amx_scratch x;
        amx_scratch_carve(base + s_n + (size_t)r->qv_max * 256 + q_n + rows_n, r->chunk,
                          (r->a->head_dim + 31) & ~31, &x);
        vl3__cpu_amx_tiles_on();
        while ((i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED)) < r->n_items) {
            const struct dec_item *it = &r->items[i];
            int qv = r->seqs[it->seq].n_q * (r->a->n_heads / r->a->n_kv_heads);
            if (r->amx == VL3__DEC_HYBRID && qv <= 16)
                dec_item_hybrid(r, it, &w, &x);
            else if (r->amx == VL3__DEC_AMX && it->g1 - it->g0 == 1 && qv <= 16)
                dec_item_amx(r, it, &w, &x);
            else
                dec_item(r, it, &w);
        }
        vl3__cpu_amx_tiles_off();
        return;
    }
#endif
    while ((i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED)) < r->n_items)
        dec_item(r, &r->items[i], &w);
}
#endif

static int decode_kernel = -1;

void vl3__cpu_set_decode_kernel(int kernel)
{
    __atomic_store_n(&decode_kernel, kernel, __ATOMIC_RELAXED);
}

#ifdef DEC_AMX
static int decode_kernel_choice(void)
{
    int k = __atomic_load_n(&decode_kernel, __ATOMIC_RELAXED);
    if (k >= 0)
        return k;
    const char *e = getenv("VL3_DECODE_ATTN");
    if (e && strcmp(e, "amx") == 0)
        return VL3__DEC_AMX;
    if (e && strcmp(e, "avx512") == 0)
        return VL3__DEC_AVX512;
    return VL3__DEC_HYBRID;
}
#endif

/* Item it's partials (m, l, O) of vector v (of qv per kv head) of kv head g; NULL when the
 * item does not cover g */
static const float *item_partials(const struct dec_run *r, const struct dec_item *it, int g,
                                  int qv, int v)
{
    if (g < it->g0 || g >= it->g1)
        return NULL;
    return r->part + it->part + ((size_t)(g - it->g0) * qv + v) * (r->a->head_dim + 2);
}

#ifdef DEC_X86
/* The items of one sequence are [i0, i1); those covering kv head g hold its chunks: rescale
 * them to a common max and write the output rows (16 output values a vector: this ran scalar,
 * 1.7-1.9 ms of a 12-14 ms step at 7,212 keys on one thread while the others waited). */
__attribute__((target(DEC_TARGET))) static void dec_merge(const struct dec_run *r, int i0,
                                                          int i1, int g)
{
    const struct vl3__attn_args *a = r->a;
    const struct vl3__attn_seq *sq = &r->seqs[r->items[i0].seq];
    int D = a->head_dim, grp = a->n_heads / a->n_kv_heads, qv = sq->n_q * grp;
    for (int v = 0; v < qv; v++) {
        float m = -INFINITY;
        for (int i = i0; i < i1; i++) {
            const float *pv = item_partials(r, &r->items[i], g, qv, v);
            if (pv && pv[1] > 0 && pv[0] > m)
                m = pv[0];
        }
        int row = sq->q_row + v / grp, h = g * grp + v % grp;
        float *out = (float *)a->out + (size_t)row * a->out_stride + (size_t)h * D;
        double l = 0;
        for (int d = 0; d < D; d += 16)
            _mm512_mask_storeu_ps(out + d, vl3__mask16(D - d), _mm512_setzero_ps());
        for (int i = i0; i < i1; i++) {
            const float *pv = item_partials(r, &r->items[i], g, qv, v);
            if (!pv || !(pv[1] > 0))
                continue;
            float f = expf(pv[0] - m);
            l += (double)pv[1] * f;
            __m512 fv = _mm512_set1_ps(f);
            for (int d = 0; d < D; d += 16) {
                __mmask16 k = vl3__mask16(D - d);
                _mm512_mask_storeu_ps(out + d, k,
                                      _mm512_fmadd_ps(fv, _mm512_maskz_loadu_ps(k, pv + 2 + d),
                                                      _mm512_maskz_loadu_ps(k, out + d)));
            }
        }
        __m512 inv = _mm512_set1_ps(l > 0 ? (float)(1.0 / l) : 0.0f);
        for (int d = 0; d < D; d += 16) {
            __mmask16 k = vl3__mask16(D - d);
            _mm512_mask_storeu_ps(out + d, k,
                                  _mm512_mul_ps(_mm512_maskz_loadu_ps(k, out + d), inv));
        }
    }
}
#endif

#ifdef DEC_X86
/* kv heads per item of a sequence with qv query vectors per kv head: all (whole slots), or one
 * where the chunks are too few for the threads (!whole) and for the AMX items */
static int heads_per_item(int whole, int amx, int qv, int Hkv)
{
    return !whole || (amx == VL3__DEC_AMX && qv <= 16) ? 1 : Hkv;
}
#endif

int vl3__cpu_attention_decode_bf16(void *ctx, const struct vl3__attn_args *a)
{
#ifdef DEC_X86
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim, ps = a->page_size;
    if (a->kv_dtype != VL3__DTYPE_BF16 || H <= 0 || Hkv <= 0 || H % Hkv || D <= 0 || D > MAX_D ||
        ps <= 0 || H / Hkv > 64)
        return -EINVAL;
    if (vl3__cpu_isa() < VL3__CPU_ISA_AVX512)
        return -ENOTSUP;
    int chunk = (CHUNK_KEYS + ps - 1) / ps * ps, grp = H / Hkv, n_chunks = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        const struct vl3__attn_seq *sq = &a->seqs[s];
        if (sq->n_q <= 0 || sq->n_q > 16 || !sq->pages)
            return -EINVAL;
        n_chunks += (sq->n_past + sq->n_q + chunk - 1) / chunk;
    }
    if (n_chunks == 0)
        return 0;
    /* Where the CPU has AMX tiles (and the ISA is not forced below it): the hybrid items at
     * head dim 128 (the default), or the AMX items at head dims up to 128 when asked for
     * (vl3__cpu_set_decode_kernel, VL3_DECODE_ATTN); per sequence, only when its query vectors
     * per kv head fit one tile's 16 columns (else dec_item). Measurements: file comment. */
    int amx = 0;
#ifdef DEC_AMX
    if (vl3__cpu_isa() == VL3__CPU_ISA_AMX && vl3__cpu_amx_available()) {
        int k = decode_kernel_choice();
        if (k == VL3__DEC_AMX && D <= 128)
            amx = VL3__DEC_AMX;
        else if (k == VL3__DEC_HYBRID && D == 128)
            amx = VL3__DEC_HYBRID;
    }
#endif
    int nt = vl3__cpu_threads(ctx);
    nt = nt < 1 ? 1 : nt > MAX_THREADS ? MAX_THREADS : nt;
    /* an AVX-512 item takes every kv head of its chunk (whole slots read front to back: 2B at
     * 7,212 keys, bench_decode_attention, 2 threads, 13 -> 11 ms a step); one head per item
     * where that leaves too few items for the threads, and for the AMX items */
    int whole = n_chunks >= 2 * nt, qv_max = 0, n_items = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        int qv = a->seqs[s].n_q * grp, gs = heads_per_item(whole, amx, qv, Hkv);
        int nc = (a->seqs[s].n_past + a->seqs[s].n_q + chunk - 1) / chunk;
        n_items += nc * (Hkv / gs);
        qv_max = qv * gs > qv_max ? qv * gs : qv_max;
    }
    if (nt > n_items)
        nt = n_items;
    struct dec_item *items = malloc(sizeof(*items) * (size_t)n_items);
    if (!items)
        return -ENOMEM;
    size_t part = 0;
    int n = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        const struct vl3__attn_seq *sq = &a->seqs[s];
        int nk = sq->n_past + sq->n_q, qv = sq->n_q * grp;
        int gs = heads_per_item(whole, amx, qv, Hkv);
        /* chunk-major: a thread's share of the items is a contiguous run of slots, whole rows
         * (every kv head) read back to back, rather than every other 256 bytes of each row */
        for (int j0 = 0; j0 < nk; j0 += chunk)
            for (int g = 0; g < Hkv; g += gs) {
                items[n++] = (struct dec_item){s, g, g + gs, j0,
                                               j0 + chunk < nk ? j0 + chunk : nk, part};
                part += (size_t)gs * qv * (D + 2);
            }
    }
    /* per thread (struct dec_scratch): S, T, q, rows; each a multiple of 16 floats */
    int dp = (D + 15) / 16 * 16;
    size_t s_per = (((size_t)qv_max * chunk + 15) & ~(size_t)15) + (size_t)qv_max * 256 +
                   (size_t)qv_max * dp + (((size_t)chunk * 2 + 15) & ~(size_t)15) +
                   (amx ? amx_scratch_carve(NULL, chunk, (D + 31) & ~31, NULL) : 0);
    size_t need = (part + 16 + s_per * nt) * sizeof(float) + 64;
    char *own = NULL, *buf = a->work;
    if (!buf || a->work_bytes < need) {
        own = malloc(need);
        if (!own) {
            free(items);
            return -ENOMEM;
        }
        buf = own;
    }
    float *base = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    part = (part + 15) & ~(size_t)15;
    struct dec_run r = {a,     a->seqs, items,  n_items, base, base + part,
                        s_per, chunk,   qv_max, nt,      dp,   amx,         0};
    vl3__cpu_run(ctx, nt, dec_task, &r);
    for (int i0 = 0; i0 < n_items;) {
        int i1 = i0 + 1;
        while (i1 < n_items && items[i1].seq == items[i0].seq)
            i1++;
        for (int g = 0; g < Hkv; g++)
            dec_merge(&r, i0, i1, g);
        i0 = i1;
    }
    free(items);
    free(own);
    return 0;
#else
    (void)ctx, (void)a;
    return -ENOTSUP;
#endif
}
