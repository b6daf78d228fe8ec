/* attention_amx.c: attention in the flash style on Intel AMX tiles, bf16 inputs with f32
 * accumulation, for the CPU backend's bf16 mode: causal GQA prefill over the paged KV cache and
 * the vision encoder's block-diagonal attention.
 *
 * Why: attention is a quarter of the FLOPs of a 16-frame clip (7k-token prefill, 28k-patch vision
 * pass); the f32 path (attention.c: OpenBLAS sgemm on a score block, scalar expf) runs it at a few
 * tens of GFLOP/s. Here, per head and block of 32 queries, keys go by blocks of 32: S = Q K^T on
 * four 16x16 f32 accumulator tiles (TDPBF16PS over the head dim in chunks of 32), an online
 * softmax on AVX-512 (running max and sum per row; the max moves only when a score passes it by
 * MAX_SLACK, and only then is the output rescaled),
 * and O += P V on tiles; no score matrix beyond one 32x32 block ever exists. Q, K and V are
 * rounded to bf16 (nearest even), as the official bf16 model holds them, and the scores scaled
 * in f32 by 1/sqrt(D) (as its attention does) times log2(e) (base 2, see LOG2E); P is rounded to
 * bf16 before P V, as a bf16 flash kernel does. The head dim is padded with zeros to a multiple
 * of 32 for Q K^T (72 -> 96 for the vision encoder, 128 stays) and to a multiple of 16 for P V
 * (72 -> 80: five column slices, not six).
 *
 * Layouts (TDPBF16PS: C[m][n] += sum_k A[m][2k..2k+1] . B[k][2n..2n+1], B rows hold bf16 pairs):
 *   Q   (rows, Dp) bf16 row-major: an A tile is 16 rows x 32 values of a head-dim chunk.
 *   K   per 16 keys and head-dim chunk c: tile row r, pair n = key n's values 2r, 2r+1 of chunk
 *       c (a 16x16 transpose of 32-bit words), so the B tile gives Q K^T directly.
 *   V   per 32 keys and 16 output columns j (j < ceil(D / 16)): tile row r, pair n =
 *       (V[2r][16j+n], V[2r+1][16j+n]).
 *   P   (32, 32) bf16 row-major: two A tiles.
 *   O   (32, Dp) f32 row-major in L1: loaded, accumulated and stored as C tiles per key block.
 * Keys past the end and, in causal mode, keys after a query's position are masked to -inf; padded
 * query rows are computed and dropped.
 *
 * Threads: the (head, query block) items of one call are shared by the context's threads through
 * an atomic counter; K and V are packed once per kv head (LLM) or per item (vision). Linux lends
 * the tile state only after arch_prctl(ARCH_REQ_XCOMP_PERM), which the shared cpuid probe of
 * gemm_bf16.c requests; each thread loads the tile configuration and releases the tiles when
 * done. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "model.h"
#include "vl3/util.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define AMX_BUILD 1
#include <immintrin.h>

#include "simd_exp.h"
#include "simd_mask.h"
#include "simd_transpose.h"
#endif

#define QB 32           /* queries per block (two tile rows of 16) */
#define KB 32           /* keys per block */
#define MAX_SLACK 8.0f  /* how far a score may pass the running max before the max moves */
/* Scores are kept in base 2: log2(e) is folded into their f32 scale, so the softmax's exp is
 * 2^(s - m) (vl3__exp2_512_ps, 6 instructions instead of 13: the softmax is a third of this
 * kernel's time at head dim 128 and more at 72); the probabilities are the same up to rounding. */
#define LOG2E 1.4426950408889634f
#define MAX_THREADS 64

#ifdef AMX_BUILD
static inline size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

#define AMX_TARGET "amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx512dq,fma"
#endif

/* AMX-BF16 with AVX512-BF16, the OS's tile state and the kernel's permission for this process:
 * the probe of the bf16 matrix products (gemm_bf16.c), done once for both. */
int vl3__cpu_amx_available(void)
{
#ifdef AMX_BUILD
    return vl3__cpu_isa_supported(VL3__CPU_ISA_AMX);
#else
    return 0;
#endif
}

#ifdef AMX_BUILD

/* The 64-byte tile configuration (palette 1): all eight tiles 16 rows x 64 bytes. */
struct tile_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64)));

/* A static constant: GCC's _tile_loadconfig names only the first bytes of its operand, so a
 * configuration built on the stack can have its stores dropped as dead. */
static const struct tile_cfg tile_cfg_all = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

__attribute__((target(AMX_TARGET))) static void tiles_on(void)
{
    _tile_loadconfig(&tile_cfg_all);
}

__attribute__((target(AMX_TARGET))) static void tiles_off(void)
{
    _tile_release();
}
#endif

/* The configuration above for this thread (every tile 16 x 64 bytes), and its release: for the
 * other AMX kernels of the backend (attention_decode.c) */
void vl3__cpu_amx_tiles_on(void)
{
#ifdef AMX_BUILD
    tiles_on();
#endif
}

void vl3__cpu_amx_tiles_off(void)
{
#ifdef AMX_BUILD
    tiles_off();
#endif
}

#ifdef AMX_BUILD


/* f32 row of n (<= Dp) values times scale -> bf16 row of Dp (zero padded; Dp a multiple of
 * 16): masked loads, so the padding costs no scalar loop. */
__attribute__((target(AMX_TARGET))) static void row_to_bf16(uint16_t *dst, const float *src,
                                                           int n, int Dp, float scale)
{
    __m512 s = _mm512_set1_ps(scale);
    for (int i = 0; i < Dp; i += 16) {
        int r = n - i;
        __mmask16 m = r >= 16 ? 0xffff : r <= 0 ? 0 : (__mmask16)((1u << r) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + i), s));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)h);
    }
}

/* One head's block of QB queries starting at query q0 of nq (packed Q of the block, QB x Dp
 * bf16, scaled), nk keys in the packed K and V tiles. Query i sits at position q_pos0 + i; in
 * causal mode it sees keys 0..q_pos0 + i. Writes out rows q0 + i < nq, D values each, row stride
 * ldo floats. */
struct head_args {
    const uint16_t *q;  /* the block's packed queries */
    const uint32_t *kp; /* [nk16][Dp/32][16][16] */
    const uint16_t *vp; /* [nk32][Dp/16][16][32] */
    int nq, nk, D, Dp, causal, q_pos0;
    float sscale; /* applied to Q K^T in f32: 1/sqrt(D) times log2(e) (scores in base 2) */
    float *out;
    size_t ldo;
};

#define SB (2 * KB) /* keys per softmax step: two key blocks of Q K^T, one P V pass */

struct block_scratch {
    float S[QB * SB] __attribute__((aligned(64)));
    uint16_t P[QB * SB] __attribute__((aligned(64)));
    float l[QB][16] __attribute__((aligned(64))); /* per row: 16 partial sums of P */
    float m[QB];
};

/* One row of a step's online softmax: scores S[i][0, 64) (raw Q K^T; lanes [0, nv) visible when
 * masked), times the scale, against the running max; P[i] = 2^(s - m) rounded to bf16, the row's
 * partial sums and, when the max moves, its O row (nj slices of 16) rescaled. */
__attribute__((target(AMX_TARGET), always_inline)) static inline void softmax_row(
    struct block_scratch *sc, int i, int nv, int masked, float sscale, float *o, int nj)
{
    const __m512 ss = _mm512_set1_ps(sscale);
    __m512 sv[4];
    __mmask16 mk[4] = {0xffff, 0xffff, 0xffff, 0xffff};
    _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {
        sv[q] = _mm512_loadu_ps(sc->S + i * SB + 16 * q);
        if (masked) {
            int n = nv - 16 * q;
            mk[q] = n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
            sv[q] = _mm512_mask_blend_ps(mk[q], _mm512_set1_ps(-INFINITY), sv[q]);
        }
    }
    /* the running max moves only when a score passes it by MAX_SLACK (exp(s - m) stays below
     * e^MAX_SLACK, far inside f32 and bf16), so most rows skip the horizontal max; the scale
     * (positive) is applied to the max and fused into s * scale - m below */
    float mold = sc->m[i], mnew = mold;
    __m512 smax = _mm512_mul_ps(
        _mm512_max_ps(_mm512_max_ps(sv[0], sv[1]), _mm512_max_ps(sv[2], sv[3])), ss);
    if (mold == -INFINITY ||
        _mm512_cmp_ps_mask(smax, _mm512_set1_ps(mold + MAX_SLACK), _CMP_GT_OQ)) {
        float bmax = _mm512_reduce_max_ps(smax);
        mnew = bmax > mold ? bmax : mold;
    }
    __m512 pv[4];
    if (mnew == -INFINITY) {
        pv[0] = pv[1] = pv[2] = pv[3] = _mm512_setzero_ps();
    } else {
        __m512 mv = _mm512_set1_ps(mnew);
        _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {
            pv[q] = vl3__exp2_512_ps(_mm512_fmsub_ps(sv[q], ss, mv));
            if (masked)
                pv[q] = _mm512_maskz_mov_ps(mk[q], pv[q]);
        }
    }
    /* P rounded to bf16 for P V; the row sum from the f32 values, as torch's CPU flash attention
     * sums them before its bf16 product, kept as 16 partial sums (one horizontal add per row at
     * the end) */
    __m512 lv = _mm512_load_ps(sc->l[i]);
    __m512 rs = _mm512_add_ps(_mm512_add_ps(pv[0], pv[1]), _mm512_add_ps(pv[2], pv[3]));
    _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
        __m512bh pb = _mm512_cvtne2ps_pbh(pv[2 * q + 1], pv[2 * q]);
        _mm512_storeu_si512(sc->P + i * SB + 32 * q, (__m512i)pb);
    }
    if (mnew > mold && mold != -INFINITY) {
        __m512 av = _mm512_set1_ps(exp2f(mold - mnew));
        lv = _mm512_mul_ps(lv, av);
        for (int d = 0; d < 16 * nj; d += 16)
            _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), av));
    }
    sc->m[i] = mnew;
    _mm512_store_ps(sc->l[i], _mm512_add_ps(lv, rs));
}

/* Per step of SB = 64 keys (two 32-key blocks of S = Q K^T on four C tiles each, stored to S),
 * one online-softmax pass per row over the 64 scores and one O += P V pass in which each O tile
 * is loaded and stored once for both key blocks (two P tiles per row half, two V tiles): the O
 * round trip through L1 and the per-row max check cost half of what one per 32 keys did. */
__attribute__((target(AMX_TARGET))) static void head_block(const struct head_args *h, int q0,
                                                          float *O, struct block_scratch *sc)
{
    const int Dp = h->Dp, nc = Dp / 32, nj = (h->D + 15) / 16;
    const size_t qstride = (size_t)Dp * 2, ostride = (size_t)Dp * 4;
    const uint16_t *Q = h->q;
    memset(O, 0, sizeof(float) * QB * (size_t)Dp);
    for (int i = 0; i < QB; i++) {
        sc->m[i] = -INFINITY;
        memset(sc->l[i], 0, sizeof(sc->l[i]));
    }
    int kend = h->nk;
    if (h->causal) {
        int last = h->q_pos0 + q0 + QB - 1 + 1; /* keys the block's last row sees */
        if (last < kend)
            kend = last;
    }
    for (int k0 = 0; k0 < kend; k0 += SB) {
        int nh = k0 + KB < kend ? 2 : 1; /* key blocks of this step (packed K/V hold them) */
        /* S = Q K^T for 32 queries x 32 keys, per key block */
        for (int hb = 0; hb < nh; hb++) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const uint32_t *K0 = h->kp + (size_t)((k0 + hb * KB) / 16) * nc * 256;
            const uint32_t *K1 = K0 + (size_t)nc * 256;
            for (int c = 0; c < nc; c++) {
                _tile_loadd(4, Q + c * 32, qstride);
                _tile_loadd(5, Q + 16 * (size_t)Dp + c * 32, qstride);
                _tile_loadd(6, K0 + (size_t)c * 256, 64);
                _tile_loadd(7, K1 + (size_t)c * 256, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            float *S = sc->S + hb * KB;
            _tile_stored(0, S, SB * 4);
            _tile_stored(1, S + 16, SB * 4);
            _tile_stored(2, S + 16 * SB, SB * 4);
            _tile_stored(3, S + 16 * SB + 16, SB * 4);
        }
        /* online softmax, row by row; a step whose keys every row sees (every step but the
         * last of a vision item, those left of the diagonal in a causal prefill) skips the
         * masks */
        int lim0 = h->nk; /* keys row 0 sees; later rows see at least as many */
        if (h->causal && h->q_pos0 + q0 + 1 < lim0)
            lim0 = h->q_pos0 + q0 + 1;
        if (nh == 2 && lim0 >= k0 + SB) {
            for (int i = 0; i < QB; i++)
                softmax_row(sc, i, SB, 0, h->sscale, O + (size_t)i * Dp, nj);
        } else {
            for (int i = 0; i < QB; i++) {
                int lim = h->nk; /* keys < lim are visible to this row */
                if (h->causal && h->q_pos0 + q0 + i + 1 < lim)
                    lim = h->q_pos0 + q0 + i + 1;
                if (lim > k0 + nh * KB)
                    lim = k0 + nh * KB; /* a single-block step: S's second half is stale */
                softmax_row(sc, i, lim - k0, 1, h->sscale, O + (size_t)i * Dp, nj);
            }
        }
        /* O += P V: tiles 4/5 P rows 0-15/16-31 of the first key block, 2/3 of the second */
        _tile_loadd(4, sc->P, SB * 2);
        _tile_loadd(5, sc->P + 16 * SB, SB * 2);
        const uint16_t *V = h->vp + (size_t)(k0 / KB) * nj * 512;
        if (nh == 2) {
            _tile_loadd(2, sc->P + KB, SB * 2);
            _tile_loadd(3, sc->P + 16 * SB + KB, SB * 2);
            const uint16_t *V1 = V + (size_t)nj * 512;
            for (int j = 0; j < nj; j++) {
                _tile_loadd(0, O + j * 16, ostride);
                _tile_loadd(1, O + 16 * (size_t)Dp + j * 16, ostride);
                _tile_loadd(6, V + (size_t)j * 512, 64);
                _tile_loadd(7, V1 + (size_t)j * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 5, 6);
                _tile_dpbf16ps(0, 2, 7);
                _tile_dpbf16ps(1, 3, 7);
                _tile_stored(0, O + j * 16, ostride);
                _tile_stored(1, O + 16 * (size_t)Dp + j * 16, ostride);
            }
        } else {
            for (int j = 0; j < nj; j++) {
                _tile_loadd(0, O + j * 16, ostride);
                _tile_loadd(1, O + 16 * (size_t)Dp + j * 16, ostride);
                _tile_loadd(6, V + (size_t)j * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 5, 6);
                _tile_stored(0, O + j * 16, ostride);
                _tile_stored(1, O + 16 * (size_t)Dp + j * 16, ostride);
            }
        }
    }
    int rows = h->nq - q0 < QB ? h->nq - q0 : QB;
    for (int i = 0; i < rows; i++) {
        float l = _mm512_reduce_add_ps(_mm512_load_ps(sc->l[i]));
        __m512 inv = _mm512_set1_ps(l > 0 ? 1.0f / l : 0.0f);
        float *dst = h->out + (size_t)(q0 + i) * h->ldo;
        const float *o = O + (size_t)i * Dp;
        for (int d = 0; d < h->D; d += 16) {
            __mmask16 m = h->D - d >= 16 ? 0xffff : (__mmask16)((1u << (h->D - d)) - 1);
            _mm512_mask_storeu_ps(dst + d, m, _mm512_mul_ps(_mm512_loadu_ps(o + d), inv));
        }
    }
}

struct kv_src {
    const void *k, *v;      /* base pointers: f32 rows, or bf16 rows when bf16 */
    size_t stride;          /* elements between consecutive keys (contiguous case) */
    const int32_t *pages;   /* paged case: block table (NULL = contiguous) */
    int page_size;
    int bf16;               /* rows already bf16 (the KV pools of bf16 mode) */
};

static inline size_t key_off(const struct kv_src *s, int j)
{
    if (!s->pages)
        return (size_t)j * s->stride;
    size_t slot = (size_t)s->pages[j / s->page_size] * s->page_size + (size_t)(j % s->page_size);
    return slot * s->stride;
}

/* n (<= 32) values at element off of base as bf16 words (zeros past n): loaded as they are from
 * bf16 rows, rounded to nearest even from f32 rows (as row_to_bf16 rounds) */
__attribute__((target(AMX_TARGET))) static inline __m512i kv_load32(const struct kv_src *s,
                                                                   const void *base, size_t off,
                                                                   int n)
{
    if (s->bf16)
        return _mm512_maskz_loadu_epi16(vl3__mask32(n), (const uint16_t *)base + off);
    const float *f = (const float *)base + off;
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(vl3__mask16(n - 16), f + 16),
                                        _mm512_maskz_loadu_ps(vl3__mask16(n), f));
}

/* the same for n (<= 16) values */
__attribute__((target(AMX_TARGET))) static inline __m256i kv_load16(const struct kv_src *s,
                                                                   const void *base, size_t off,
                                                                   int n)
{
    if (s->bf16)
        return _mm256_maskz_loadu_epi16(vl3__mask16(n), (const uint16_t *)base + off);
    const float *f = (const float *)base + off;
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(vl3__mask16(n), f));
}

/* Pack nk keys (rows of D values at key_off(j): f32 rows rounded to bf16, or the bf16 pools'
 * rows as they are) into the K and V tile layouts, zero padded to multiples of 32 keys and Dp
 * values, in registers: per 16 keys and head-dim chunk, 16 rows of 32 values and one 16 x 16
 * transpose of their 32-bit words (K); per 32 keys and 16 columns, key pairs interleaved by
 * widening and shifting (V). The vision encoder's items (contiguous f32 rows) and the LLM's
 * sequences (paged rows, f32 or bf16) share it. */
__attribute__((target(AMX_TARGET))) static void pack_kv(const struct kv_src *s, int nk, int D,
                                                       int Dp, uint32_t *kp, uint16_t *vp)
{
    int nk32 = (int)round_up((size_t)nk, KB), nc = Dp / 32, nj = (D + 15) / 16;
    for (int kt = 0; kt < nk32 / 16; kt++) {
        size_t off[16];
        for (int n = 0; n < 16; n++)
            off[n] = kt * 16 + n < nk ? key_off(s, kt * 16 + n) : 0;
        for (int c = 0; c < nc; c++) {
            __m512 rows[16], t[16];
            for (int n = 0; n < 16; n++)
                rows[n] = kt * 16 + n < nk
                              ? (__m512)kv_load32(s, s->k, off[n] + 32 * c, D - 32 * c)
                              : _mm512_setzero_ps();
            vl3__transpose16_ps(rows, t);
            uint32_t *tile = kp + ((size_t)kt * nc + c) * 256;
            for (int r = 0; r < 16; r++)
                _mm512_storeu_ps((float *)(tile + r * 16), t[r]);
        }
    }
    for (int kb = 0; kb < nk32 / KB; kb++)
        for (int r = 0; r < 16; r++) {
            int j = kb * KB + 2 * r;
            size_t oa = j < nk ? key_off(s, j) : 0, ob = j + 1 < nk ? key_off(s, j + 1) : 0;
            for (int jj = 0; jj < nj; jj++) {
                int n = D - 16 * jj;
                __m256i a = j < nk ? kv_load16(s, s->v, oa + 16 * jj, n) : _mm256_setzero_si256();
                __m256i b = j + 1 < nk ? kv_load16(s, s->v, ob + 16 * jj, n)
                                       : _mm256_setzero_si256();
                __m512i lo = _mm512_cvtepu16_epi32(a), hi = _mm512_cvtepu16_epi32(b);
                _mm512_storeu_si512((void *)(vp + ((size_t)kb * nj + jj) * 512 + r * 32),
                                    _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        }
}

/* ---- the parallel driver ---- */

struct item {
    int seq, head, q0; /* q0 < 0: a packing item for kv head `head` of sequence seq */
};

struct run {
    /* LLM */
    const struct vl3__attn_args *a;
    /* vision */
    const float *vq, *vk, *vv;
    float *vout;
    const int64_t *cu;
    int vision, D, Dp, ld;
    /* shared */
    struct item *items;
    int n_items, n_pack;
    uint32_t **kp;  /* per (seq, kv head) packed K (LLM) */
    uint16_t **vp;
    int err;
    size_t max_keys;
};

/* Per-thread buffers: packed Q for one block (QB x Dp), O (QB x Dp f32), block scratch, and for
 * the vision path packed K/V of one item. */
struct tls {
    uint16_t *q;
    float *o;
    struct block_scratch *sc;
    uint32_t *kp;
    uint16_t *vp;
};

static void tls_free(struct tls *t)
{
    free(t->q);
    free(t->o);
    free(t->sc);
    free(t->kp);
    free(t->vp);
}

static int tls_alloc(struct tls *t, int Dp, size_t max_keys, int vision)
{
    memset(t, 0, sizeof(*t));
    size_t nk32 = round_up(max_keys ? max_keys : 1, KB);
    t->q = aligned_alloc(64, round_up(sizeof(uint16_t) * QB * (size_t)Dp, 64));
    t->o = aligned_alloc(64, round_up(sizeof(float) * QB * (size_t)Dp, 64));
    t->sc = aligned_alloc(64, round_up(sizeof(struct block_scratch), 64));
    if (vision) {
        t->kp = aligned_alloc(64, round_up(sizeof(uint16_t) * nk32 * (size_t)Dp, 64));
        t->vp = aligned_alloc(64, round_up(sizeof(uint16_t) * nk32 * (size_t)Dp, 64));
    }
    if (!t->q || !t->o || !t->sc || (vision && (!t->kp || !t->vp))) {
        tls_free(t);
        return -ENOMEM;
    }
    return 0;
}

__attribute__((target(AMX_TARGET))) static void run_llm_item(struct run *r, struct tls *t,
                                                            const struct item *it)
{
    const struct vl3__attn_args *a = r->a;
    const struct vl3__attn_seq *sq = &a->seqs[it->seq];
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim, Dp = r->Dp, grp = H / Hkv;
    int nk = sq->n_past + sq->n_q;
    if (it->q0 < 0) { /* pack this sequence's kv head */
        int g = it->head;
        int bf = a->kv_dtype == VL3__DTYPE_BF16;
        size_t esz = bf ? 2 : 4;
        struct kv_src s = {(const char *)a->k_pages + esz * g * D,
                           (const char *)a->v_pages + esz * g * D, (size_t)Hkv * D, sq->pages,
                           a->page_size, bf};
        pack_kv(&s, nk, D, Dp, r->kp[it->seq * Hkv + g], r->vp[it->seq * Hkv + g]);
        return;
    }
    int h = it->head, g = h / grp;
    const float *Q = (const float *)a->q + (size_t)sq->q_row * a->q_stride + (size_t)h * D;
    int rows = sq->n_q - it->q0 < QB ? sq->n_q - it->q0 : QB;
    for (int i = 0; i < QB; i++) {
        if (i < rows)
            row_to_bf16(t->q + (size_t)i * Dp, Q + (size_t)(it->q0 + i) * a->q_stride, D, Dp,
                        1.0f);
        else
            memset(t->q + (size_t)i * Dp, 0, sizeof(uint16_t) * (size_t)Dp);
    }
    struct head_args ha = {t->q, r->kp[it->seq * Hkv + g],
                           r->vp[it->seq * Hkv + g], sq->n_q, nk, D, Dp, 1, sq->n_past,
                           a->scale * LOG2E,
                           (float *)a->out + (size_t)sq->q_row * a->out_stride + (size_t)h * D,
                           (size_t)a->out_stride};
    head_block(&ha, it->q0, t->o, t->sc);
}

__attribute__((target(AMX_TARGET))) static void run_vision_item(struct run *r, struct tls *t,
                                                               const struct item *it)
{
    int b = it->seq, h = it->head, D = r->D, Dp = r->Dp;
    int64_t r0 = r->cu[b];
    int n = (int)(r->cu[b + 1] - r0);
    if (it->q0 == 0) { /* the first query block of an item packs its keys (items run in order) */
        struct kv_src s = {r->vk + (size_t)r0 * r->ld + (size_t)h * D,
                           r->vv + (size_t)r0 * r->ld + (size_t)h * D, (size_t)r->ld, NULL, 0, 0};
        pack_kv(&s, n, D, Dp, t->kp, t->vp);
    }
    float sscale = 1.0f / sqrtf((float)D) * LOG2E;
    const float *Q = r->vq + (size_t)r0 * r->ld + (size_t)h * D;
    for (int q0 = it->q0; q0 < n; q0 += QB) {
        int rows = n - q0 < QB ? n - q0 : QB;
        for (int i = 0; i < QB; i++) {
            if (i < rows)
                row_to_bf16(t->q + (size_t)i * Dp, Q + (size_t)(q0 + i) * r->ld, D, Dp, 1.0f);
            else
                memset(t->q + (size_t)i * Dp, 0, sizeof(uint16_t) * (size_t)Dp);
        }
        struct head_args ha = {t->q, t->kp, t->vp, n, n, D, Dp, 0, 0, sscale,
                               r->vout + (size_t)r0 * r->ld + (size_t)h * D, (size_t)r->ld};
        head_block(&ha, q0, t->o, t->sc);
    }
}

/* One thread's share of items [lo, hi): taken one at a time from the shared counter. */
struct phase {
    struct run *r;
    int lo, hi;
    int next;
};

static void *phase_main(void *arg)
{
    struct phase *ph = arg;
    struct run *r = ph->r;
    struct tls t;
    if (tls_alloc(&t, r->Dp, r->max_keys, r->vision) < 0) {
        __atomic_store_n(&r->err, -ENOMEM, __ATOMIC_RELAXED);
        return NULL;
    }
    tiles_on();
    for (;;) {
        int i = ph->lo + __atomic_fetch_add(&ph->next, 1, __ATOMIC_RELAXED);
        if (i >= ph->hi)
            break;
        if (r->vision)
            run_vision_item(r, &t, &r->items[i]);
        else
            run_llm_item(r, &t, &r->items[i]);
    }
    tiles_off();
    tls_free(&t);
    return NULL;
}

static void phase_task(void *arg, int k)
{
    (void)k;
    phase_main(arg);
}

/* Run items [lo, hi) on up to n_threads threads of the context's pool (the calling thread is one
 * of them). */
static int run_phase(void *ctx, struct run *r, int lo, int hi, int n_threads)
{
    struct phase ph = {r, lo, hi, 0};
    if (n_threads > hi - lo)
        n_threads = hi - lo;
    if (n_threads > MAX_THREADS)
        n_threads = MAX_THREADS;
    vl3__cpu_run(ctx, n_threads, phase_task, &ph);
    return __atomic_load_n(&r->err, __ATOMIC_RELAXED);
}

#endif /* AMX_BUILD */

int vl3__cpu_attention_amx(void *ctx, const struct vl3__attn_args *a)
{
#ifdef AMX_BUILD
    if (!vl3__cpu_amx_available())
        return -ENOTSUP;
    int H = a->n_heads, Hkv = a->n_kv_heads, D = a->head_dim;
    if (H <= 0 || Hkv <= 0 || H % Hkv || D <= 0 || a->page_size <= 0 ||
        (a->kv_dtype != VL3__DTYPE_F32 && a->kv_dtype != VL3__DTYPE_BF16))
        return -EINVAL;
    int Dp = (int)round_up((size_t)D, 32);
    struct run r = {0};
    r.a = a;
    r.D = D;
    r.Dp = Dp;
    int n_items = 0;
    size_t max_keys = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        const struct vl3__attn_seq *sq = &a->seqs[s];
        if (!sq->pages || sq->n_q < 0 || sq->n_past < 0)
            return -EINVAL;
        size_t nk = (size_t)sq->n_past + (size_t)sq->n_q;
        if (nk > max_keys)
            max_keys = nk;
        n_items += Hkv + H * (int)((sq->n_q + QB - 1) / QB);
    }
    r.max_keys = max_keys;
    int rc = -ENOMEM;
    r.items = malloc(sizeof(*r.items) * (size_t)(n_items ? n_items : 1));
    r.kp = calloc((size_t)a->n_seqs * Hkv + 1, sizeof(*r.kp));
    r.vp = calloc((size_t)a->n_seqs * Hkv + 1, sizeof(*r.vp));
    if (!r.items || !r.kp || !r.vp)
        goto out;
    for (int s = 0; s < a->n_seqs; s++) {
        const struct vl3__attn_seq *sq = &a->seqs[s];
        size_t nk32 = round_up((size_t)sq->n_past + (size_t)sq->n_q, KB);
        for (int g = 0; g < Hkv; g++) {
            size_t bytes = round_up(sizeof(uint16_t) * (nk32 ? nk32 : KB) * (size_t)Dp, 64);
            r.kp[s * Hkv + g] = aligned_alloc(64, bytes);
            r.vp[s * Hkv + g] = aligned_alloc(64, bytes);
            if (!r.kp[s * Hkv + g] || !r.vp[s * Hkv + g])
                goto out;
            r.items[r.n_pack++] = (struct item){s, g, -1};
        }
    }
    r.n_items = 0;
    for (int s = 0; s < a->n_seqs; s++)
        for (int h = 0; h < H; h++)
            for (int q0 = 0; q0 < a->seqs[s].n_q; q0 += QB)
                r.items[r.n_pack + r.n_items++] = (struct item){s, h, q0};
    /* pack every kv head first, then the query blocks read them */
    rc = run_phase(ctx, &r, 0, r.n_pack, vl3__cpu_threads(ctx));
    if (rc == 0)
        rc = run_phase(ctx, &r, r.n_pack, r.n_pack + r.n_items, vl3__cpu_threads(ctx));
out:
    if (r.kp)
        for (int i = 0; i < a->n_seqs * Hkv; i++) {
            free(r.kp[i]);
            free(r.vp[i]);
        }
    free(r.kp);
    free(r.vp);
    free(r.items);
    return rc;
#else
    (void)ctx;
    (void)a;
    return -ENOTSUP;
#endif
}

int vl3__cpu_attention_blocks_amx(void *ctx, const float *q, const float *k, const float *v,
                                  float *out, const int64_t *cu, int n_blocks, int H, int D)
{
#ifdef AMX_BUILD
    if (!vl3__cpu_amx_available())
        return -ENOTSUP;
    if (H <= 0 || D <= 0 || n_blocks < 0)
        return -EINVAL;
    struct run r = {0};
    r.vision = 1;
    r.vq = q;
    r.vk = k;
    r.vv = v;
    r.vout = out;
    r.cu = cu;
    r.D = D;
    r.Dp = (int)round_up((size_t)D, 32);
    r.ld = H * D;
    for (int b = 0; b < n_blocks; b++) {
        if (cu[b + 1] < cu[b] || cu[b + 1] - cu[b] > (1 << 30))
            return -EINVAL;
        if ((size_t)(cu[b + 1] - cu[b]) > r.max_keys)
            r.max_keys = (size_t)(cu[b + 1] - cu[b]);
    }
    /* one item per (block, head): its keys are packed once by the thread that takes it */
    r.items = malloc(sizeof(*r.items) * ((size_t)n_blocks * H + 1));
    if (!r.items)
        return -ENOMEM;
    for (int b = 0; b < n_blocks; b++)
        if (cu[b + 1] > cu[b])
            for (int h = 0; h < H; h++)
                r.items[r.n_items++] = (struct item){b, h, 0};
    int rc = run_phase(ctx, &r, 0, r.n_items, vl3__cpu_threads(ctx));
    free(r.items);
    return rc;
#else
    (void)ctx, (void)q, (void)k, (void)v, (void)out, (void)cu, (void)n_blocks, (void)H, (void)D;
    return -ENOTSUP;
#endif
}

/* ---- the machine's limit: TDPBF16PS throughput ---- */

#ifdef AMX_BUILD
struct peak_job {
    long iters;
    double seconds;
};

__attribute__((target(AMX_TARGET))) static void *peak_main(void *arg)
{
    struct peak_job *j = arg;
    static const uint16_t zero[16 * 32] __attribute__((aligned(64)));
    tiles_on();
    _tile_loadd(4, zero, 64);
    _tile_loadd(5, zero, 64);
    _tile_loadd(6, zero, 64);
    _tile_loadd(7, zero, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    double t0 = vl3_time_s();
    for (long i = 0; i < j->iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    j->seconds = vl3_time_s() - t0;
    tiles_off();
    return NULL;
}
#endif

double vl3__cpu_amx_peak_gflops(int n_threads)
{
#ifdef AMX_BUILD
    if (!vl3__cpu_amx_available())
        return 0;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > MAX_THREADS)
        n_threads = MAX_THREADS;
    struct peak_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int ok[MAX_THREADS] = {0};
    for (int k = 0; k < n_threads; k++) {
        jobs[k] = (struct peak_job){2000000, 0};
        ok[k] = pthread_create(&th[k], NULL, peak_main, &jobs[k]) == 0;
    }
    double flops = 0, worst = 0;
    for (int k = 0; k < n_threads; k++)
        if (ok[k]) {
            pthread_join(th[k], NULL);
            flops += 4.0 * jobs[k].iters * 16 * 16 * 32 * 2;
            worst = jobs[k].seconds > worst ? jobs[k].seconds : worst;
        }
    return worst > 0 ? flops / worst / 1e9 : 0;
#else
    (void)n_threads;
    return 0;
#endif
}
