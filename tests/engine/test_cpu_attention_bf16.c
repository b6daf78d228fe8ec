/* test_cpu_attention_bf16.c: attention and activations of the CPU backend's bf16 mode
 * (VL3_PRECISION=bf16).
 *
 * 1. The AMX attention kernels (engine/backend/cpu/attention_amx.c) against a double-precision
 * attention written here on the same bf16-rounded inputs (q, k, v rounded to nearest even, as
 * the kernel rounds them; the scale applied to the scores).
 * Tolerance: the kernel also rounds the softmax weights P to bf16 (relative error up to 2^-9 per
 * weight) before P V; over random U(-1, 1) inputs that gives an NMSE near 1e-6 and max-abs
 * errors near 1.3e-3 (measured here). The bounds below (NMSE 1e-5, max-abs 5e-3) leave room for
 * unlucky draws and still fail any indexing, masking or rescaling mistake, whose errors are of
 * order 0.1 to 1. Shapes: causal prefill with and without history, several sequences in one call
 * (mixed prefill chunks and decode tokens), pages of 7 and 16 tokens, GQA groups, head dims 16,
 * 72 (padded to 96) and 128, query and key counts not multiples of 32; the vision encoder's
 * block-diagonal attention with blocks of 1, 31, 33 and 200 rows. Skipped (77) without AMX.
 *
 * 2. The AVX-512 tanh GELU and SwiGLU (activations_avx512.c) against double tanh / exp over
 * values from -100 to 100 (zero, tiny, saturated), lengths not multiples of 16, on two threads:
 * absolute error within 1e-6 * (1 + |x|) (GELU) and relative 1e-6 (SiLU), about 10x what the
 * polynomials give.
 *
 * 3. `vl3 run` on a tiny native model (std 0.1) over a 16-frame clip in bf16 mode against f32
 * mode: greedy tokens identical, logits within rel-L2 2e-2 (measured 4e-4 with bf16 attention
 * alone, 3.6e-3 with the bf16 matrix products too, which round every activation entering a
 * weight product; on these shapes a wrong mask or scale moves the logits by order 1).
 *
 * 4. The row-parallel small ops (rmsnorm, rope, add; layernorm, rope2d, vision add) give the same
 * bits on 1 and 3 threads; the vision rope2d and add give the bits of the plain float loops, and
 * the bias of the vision products (added in the GEMM epilogue) gives sum + b bit for bit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cpu_ops.h"
#include "model.h"
#include "test.h"
#include "vl3/util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "simd_exp.h"
#define HAVE_SIMD_EXP 1
#endif

#define TOL_NMSE 1e-5
#define TOL_MAX_ABS 5e-3

static uint64_t rng_state = 7;

static double urand(void) /* U(-1, 1) */
{
    return test_urand(&rng_state);
}

static float *randv(size_t n)
{
    return test_urandv(n, &rng_state);
}

/* f32 -> bf16 -> f32, nearest even (a noinline function: see the bf16 note in STYLE's tests) */
__attribute__((noinline)) static double bf(float f)
{
    return vl3__cpu_bf16_to_f32(vl3__cpu_f32_to_bf16(f));
}

/* Reference attention of one head over keys 0..nk-1 for query q (D values): k, v rows at
 * stride ld; causal limit lim keys. k and v are rounded to bf16; q too where round_q (the AMX
 * kernels round it and scale the scores in f32; the decode kernel keeps q in f32). */
static void head_ref_q(double *out, const float *q, float scale, const float *k, const float *v,
                       size_t ld, int lim, int D, int round_q)
{
    double *p = malloc(sizeof(double) * (size_t)(lim > 0 ? lim : 1)), mx = -INFINITY, z = 0;
    for (int j = 0; j < lim; j++) {
        double s = 0;
        for (int d = 0; d < D; d++)
            s += (round_q ? bf(q[d]) * scale : (double)q[d] * scale) * bf(k[(size_t)j * ld + d]);
        p[j] = s;
        mx = s > mx ? s : mx;
    }
    for (int j = 0; j < lim; j++)
        z += p[j] = exp(p[j] - mx);
    for (int d = 0; d < D; d++) {
        double s = 0;
        for (int j = 0; j < lim; j++)
            s += p[j] / z * bf(v[(size_t)j * ld + d]);
        out[d] = s;
    }
    free(p);
}

static void head_ref(double *out, const float *q, float scale, const float *k, const float *v,
                     size_t ld, int lim, int D)
{
    head_ref_q(out, q, scale, k, v, ld, lim, D, 1);
}

static int check_tol(const char *what, const float *got, const double *want, size_t n,
                     double tol_nmse, double tol_max_abs)
{
    double e2 = 0, w2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = got[i] - want[i];
        e2 += e * e;
        w2 += want[i] * want[i];
        mx = fabs(e) > mx ? fabs(e) : mx;
    }
    double nmse = w2 > 0 ? e2 / w2 : e2;
    fprintf(stderr, "  %s: nmse %.3g max_abs %.3g over %zu values\n", what, nmse, mx, n);
    return !(nmse <= tol_nmse && mx <= tol_max_abs);
}

static int check(const char *what, const float *got, const double *want, size_t n)
{
    return check_tol(what, got, want, n, TOL_NMSE, TOL_MAX_ABS);
}

TEST(amx_llm_attention_paged)
{
    if (!vl3__cpu_amx_available())
        SKIP("no AMX-BF16 on this CPU (or the kernel refused the tile state)");
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    static const struct { int H, Hkv, D; } hs[] = {{4, 2, 16}, {6, 2, 72}, {12, 2, 128}};
    /* qscale 24: scores spread over tens, so the running max moves past its slack across key
     * blocks and the rescaling is exercised */
    for (int qscale = 1; qscale <= 24; qscale += 23)
    for (size_t hi = 0; hi < sizeof(hs) / sizeof(hs[0]); hi++)
        for (int ps = 7; ps <= 16; ps += 9) {
            int H = hs[hi].H, Hkv = hs[hi].Hkv, D = hs[hi].D, kvd = Hkv * D, grp = H / Hkv;
            int qstride = (H + 2 * Hkv) * D;
            /* four sequences in one call: long prefill, prefill after history, decode, decode
             * at the start */
            enum { NS = 4 };
            static const int nq[NS] = {150, 37, 1, 1}, np[NS] = {0, 45, 90, 0};
            int T = 0, mp = 0;
            for (int s = 0; s < NS; s++) {
                T += nq[s];
                int pages = (nq[s] + np[s] + ps - 1) / ps;
                mp = pages > mp ? pages : mp;
            }
            int n_pages = mp * NS;
            float *kpool = calloc((size_t)n_pages * ps * kvd, sizeof(float));
            float *vpool = calloc((size_t)n_pages * ps * kvd, sizeof(float));
            int32_t *tables = malloc(sizeof(int32_t) * (size_t)n_pages);
            for (int i = 0; i < n_pages; i++)
                tables[i] = (int32_t)((i * 7 + 3) % n_pages); /* scrambled pages */
            float *q = randv((size_t)T * qstride), *out = calloc((size_t)T * H * D, 4);
            for (size_t i = 0; i < (size_t)T * qstride; i++)
                q[i] *= (float)qscale;
            double *want = malloc(sizeof(double) * (size_t)T * H * D);
            struct vl3__attn_seq sq[NS];
            int row = 0;
            float scale = 1.0f / sqrtf((float)D);
            for (int s = 0; s < NS; s++) {
                int nk = nq[s] + np[s];
                float *k = randv((size_t)nk * kvd), *v = randv((size_t)nk * kvd);
                for (int t = 0; t < nk; t++) {
                    size_t slot = (size_t)tables[s * mp + t / ps] * ps + t % ps;
                    memcpy(kpool + slot * kvd, k + (size_t)t * kvd, sizeof(float) * kvd);
                    memcpy(vpool + slot * kvd, v + (size_t)t * kvd, sizeof(float) * kvd);
                }
                for (int i = 0; i < nq[s]; i++)
                    for (int h = 0; h < H; h++)
                        head_ref(want + (size_t)(row + i) * H * D + h * D,
                                 q + (size_t)(row + i) * qstride + h * D, scale,
                                 k + (h / grp) * D, v + (h / grp) * D, kvd, np[s] + i + 1, D);
                sq[s] = (struct vl3__attn_seq){row, nq[s], np[s], tables + s * mp};
                row += nq[s];
                free(k), free(v);
            }
            struct vl3__attn_args a = {.out = out, .q = q, .q_stride = qstride,
                                       .out_stride = H * D, .n_heads = H, .n_kv_heads = Hkv,
                                       .head_dim = D, .scale = scale, .k_pages = kpool,
                                       .v_pages = vpool, .page_size = ps, .seqs = sq,
                                       .n_seqs = NS};
            ASSERT_OK(vl3__cpu_attention_amx(c, &a));
            char what[96];
            snprintf(what, sizeof(what), "llm H=%d Hkv=%d D=%d page=%d qscale=%d", H, Hkv, D, ps,
                     qscale);
            int bad = check(what, out, want, (size_t)T * H * D);
            free(kpool), free(vpool), free(tables), free(q), free(out), free(want);
            if (bad)
                TEST__FAIL("%s: beyond nmse %g / max_abs %g", what, TOL_NMSE, TOL_MAX_ABS);
        }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* 5. bf16 KV pools (bf16 mode): the decode kernel (attention_decode.c: sequences of n_q < 16,
 * f32 q, split-K chunks merged) against head_ref_q on the pools' bf16 values with q unrounded:
 * f32 sums and a 2e-7 exp give NMSE ~1e-13 here, so the bounds are tight (NMSE 1e-9, max-abs
 * 1e-5). In the same call through the dispatcher, prefill chunks go to AMX (where present: the
 * AMX bounds and rounded q); the same call with the ISA forced to AVX2 takes the f32 path on
 * widened copies (bounds of the decode kernel). Shapes: head dims 16, 40 (a masked tail), 72
 * and 128, GQA groups 1 to 6, pages of 7 and 16 tokens, histories past several 256-key chunks,
 * decode at position 0, short chunks (n_q 5 and 15) whose causal limit cuts a chunk. */
#define TOL_DEC_NMSE 1e-9
#define TOL_DEC_MAX_ABS 1e-5

TEST(decode_attention_bf16_pools)
{
    void *c2 = NULL, *c8 = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c2, NULL));
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 8, &c8, NULL));
    vl3__cpu_set_precision(c2, VL3__CPU_PREC_BF16);
    vl3__cpu_set_precision(c8, VL3__CPU_PREC_BF16);
    int have_dec = vl3__cpu_isa() >= VL3__CPU_ISA_AVX512, have_amx = vl3__cpu_amx_available();
    /* D 64 and 128: the decode items' even/odd form; 16, 40, 72: the widened form */
    static const struct { int H, Hkv, D; } hs[] = {{4, 2, 16}, {3, 3, 40}, {8, 2, 64},
                                                   {6, 2, 72}, {12, 2, 128}};
    enum { NS = 6 }; /* n_q 2: two query rows in one hybrid item at H 12 / Hkv 2 (12 vectors) */
    static const int nq[NS] = {1, 1, 2, 5, 15, 40}, np[NS] = {0, 300, 601, 259, 20, 30};
    /* forced 0: the CPU's own paths (decode items hybrid at D 128 where the CPU has AMX, else
     * on AVX-512); 1: the ISA forced to AVX2 (widened copies); 2: forced to AVX-512; 3: decode
     * items on AMX tiles where the CPU has them; 4: the AVX-512 items on 8 threads, where the
     * 10 chunks are fewer than twice the threads, so that each item takes one kv head instead
     * of all; 5: as 0 on 8 threads (one-head hybrid items) */
    static const int kernel[6] = {VL3__DEC_HYBRID, VL3__DEC_HYBRID, VL3__DEC_HYBRID,
                                  VL3__DEC_AMX,    VL3__DEC_AVX512, VL3__DEC_HYBRID};
    for (int forced = 0; forced < 6; forced++)
    for (size_t hi = 0; hi < sizeof(hs) / sizeof(hs[0]); hi++)
        for (int ps = 7; ps <= 16; ps += 9) {
            if (forced != 1 && !have_dec)
                continue;
            void *c = forced >= 4 ? c8 : c2;
            int H = hs[hi].H, Hkv = hs[hi].Hkv, D = hs[hi].D, kvd = Hkv * D, grp = H / Hkv;
            int qstride = (H + 2 * Hkv) * D, T = 0, mp = 0;
            for (int s = 0; s < NS; s++) {
                T += nq[s];
                int pages = (nq[s] + np[s] + ps - 1) / ps;
                mp = pages > mp ? pages : mp;
            }
            int n_pages = mp * NS;
            uint16_t *kpool = calloc((size_t)n_pages * ps * kvd, 2);
            uint16_t *vpool = calloc((size_t)n_pages * ps * kvd, 2);
            int32_t *tables = malloc(sizeof(int32_t) * (size_t)n_pages);
            for (int i = 0; i < n_pages; i++)
                tables[i] = (int32_t)((i * 7 + 3) % n_pages);
            float *q = randv((size_t)T * qstride), *out = calloc((size_t)T * H * D, 4);
            for (size_t i = 0; i < (size_t)T * qstride; i++)
                q[i] *= 8.0f; /* scores spread over units: the chunk maxima differ */
            double *want = malloc(sizeof(double) * (size_t)T * H * D);
            struct vl3__attn_seq sq[NS];
            int row = 0, cls[NS]; /* 0: decode items, 1: AMX, 2: hybrid decode items */
            float scale = 1.0f / sqrtf((float)D);
            for (int s = 0; s < NS; s++) {
                int nk = nq[s] + np[s];
                float *k = randv((size_t)nk * kvd), *v = randv((size_t)nk * kvd);
                for (int t = 0; t < nk; t++) {
                    size_t slot = (size_t)tables[s * mp + t / ps] * ps + t % ps;
                    for (int i = 0; i < kvd; i++) {
                        kpool[slot * kvd + i] = vl3__cpu_f32_to_bf16(k[(size_t)t * kvd + i]);
                        vpool[slot * kvd + i] = vl3__cpu_f32_to_bf16(v[(size_t)t * kvd + i]);
                    }
                }
                /* on AMX when the CPU has it (q rounded there): n_q >= 16 (prefill), and
                 * decode sequences whose n_q x group query vectors fit a tile (16) at head
                 * dims up to 128; hybrid (q rounded, p not): the same decode sequences at
                 * D 128 where that kernel is the choice */
                int tiles = forced != 1 && forced != 2 && have_amx, fit = nq[s] * grp <= 16;
                cls[s] = tiles && (nq[s] >= 16 || (forced == 3 && fit && D <= 128))    ? 1
                         : tiles && kernel[forced] == VL3__DEC_HYBRID && fit && D == 128 ? 2
                                                                                         : 0;
                for (int i = 0; i < nq[s]; i++)
                    for (int h = 0; h < H; h++)
                        head_ref_q(want + (size_t)(row + i) * H * D + h * D,
                                   q + (size_t)(row + i) * qstride + h * D, scale,
                                   k + (h / grp) * D, v + (h / grp) * D, kvd, np[s] + i + 1, D,
                                   cls[s] != 0);
                sq[s] = (struct vl3__attn_seq){row, nq[s], np[s], tables + s * mp};
                row += nq[s];
                free(k), free(v);
            }
            size_t wb = vl3__cpu_attention_work_size(c, T, 700, H);
            void *work = malloc(wb);
            struct vl3__attn_args a = {.out = out, .q = q, .q_stride = qstride,
                                       .out_stride = H * D, .n_heads = H, .n_kv_heads = Hkv,
                                       .head_dim = D, .scale = scale, .k_pages = kpool,
                                       .v_pages = vpool, .page_size = ps,
                                       .kv_dtype = VL3__DTYPE_BF16, .seqs = sq, .n_seqs = NS,
                                       .work = work, .work_bytes = wb};
            vl3__cpu_set_isa(forced == 1 ? VL3__CPU_ISA_AVX2
                             : forced == 2 ? VL3__CPU_ISA_AVX512 : -1);
            vl3__cpu_set_decode_kernel(kernel[forced]);
            int rc = vl3__cpu_attention(c, &a);
            vl3__cpu_set_isa(-1);
            vl3__cpu_set_decode_kernel(-1);
            ASSERT_OK(rc);
            int bad = 0;
            row = 0;
            for (int s = 0; s < NS; s++) {
                char what[128];
                snprintf(what, sizeof(what), "%s H=%d Hkv=%d D=%d page=%d n_q=%d n_past=%d",
                         forced == 1  ? "widened (avx2)"
                         : cls[s] == 1 ? "amx"
                         : cls[s] == 2 ? "hybrid"
                                       : "decode",
                         H, Hkv, D, ps, nq[s], np[s]);
                size_t o = (size_t)row * H * D, n = (size_t)nq[s] * H * D;
                bad |= cls[s] == 1 ? check(what, out + o, want + o, n)
                                   : check_tol(what, out + o, want + o, n, TOL_DEC_NMSE,
                                               TOL_DEC_MAX_ABS);
                row += nq[s];
            }
            free(kpool), free(vpool), free(tables), free(q), free(out), free(want), free(work);
            if (bad)
                TEST__FAIL("H=%d Hkv=%d D=%d page=%d: beyond the bounds", H, Hkv, D, ps);
        }
    vl3__backend_cpu_ops.free(c2);
    vl3__backend_cpu_ops.free(c8);
    return 0;
}

/* The AMX prefill over bf16 pools (pack_kv loading the rows as they are) against the same call
 * over f32 pools holding the same bf16 values (pack_kv rounding them): the tiles must be the
 * same, so the outputs are equal bit for bit. Head dims 72 (padded to 96) and 128,
 * pages of 7, a history that is not a multiple of 32 keys. */
TEST(amx_bf16_pools_pack_equals_f32_pools)
{
    if (!vl3__cpu_amx_available())
        SKIP("no AMX-BF16 on this CPU (or the kernel refused the tile state)");
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    static const int Ds[2] = {72, 128};
    for (int di = 0; di < 2; di++) {
        int H = 6, Hkv = 2, D = Ds[di], kvd = Hkv * D, ps = 7, nq = 40, np = 45, nk = nq + np;
        int qstride = (H + 2 * Hkv) * D, n_pages = (nk + ps - 1) / ps;
        size_t nel = (size_t)n_pages * ps * kvd;
        float *kf = randv(nel), *vf = randv(nel), *q = randv((size_t)nq * qstride);
        uint16_t *kb = malloc(nel * 2), *vb = malloc(nel * 2);
        for (size_t i = 0; i < nel; i++) {
            kb[i] = vl3__cpu_f32_to_bf16(kf[i]), vb[i] = vl3__cpu_f32_to_bf16(vf[i]);
            kf[i] = vl3__cpu_bf16_to_f32(kb[i]), vf[i] = vl3__cpu_bf16_to_f32(vb[i]);
        }
        int32_t *table = malloc(sizeof(int32_t) * (size_t)n_pages);
        for (int i = 0; i < n_pages; i++)
            table[i] = (int32_t)((i * 5 + 2) % n_pages);
        float *out[2];
        struct vl3__attn_seq sq = {0, nq, np, table};
        for (int bf = 0; bf < 2; bf++) {
            out[bf] = calloc((size_t)nq * H * D, 4);
            struct vl3__attn_args a = {.out = out[bf], .q = q, .q_stride = qstride,
                                       .out_stride = H * D, .n_heads = H, .n_kv_heads = Hkv,
                                       .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                                       .k_pages = bf ? (void *)kb : (void *)kf,
                                       .v_pages = bf ? (void *)vb : (void *)vf, .page_size = ps,
                                       .kv_dtype = bf ? VL3__DTYPE_BF16 : VL3__DTYPE_F32,
                                       .seqs = &sq, .n_seqs = 1};
            ASSERT_OK(vl3__cpu_attention_amx(c, &a));
        }
        int same = memcmp(out[0], out[1], sizeof(float) * (size_t)nq * H * D) == 0;
        fprintf(stderr, "  D=%d: bf16 pools %s f32 pools\n", D, same ? "==" : "!=");
        free(kf), free(vf), free(q), free(kb), free(vb), free(table), free(out[0]), free(out[1]);
        ASSERT(same);
    }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

TEST(amx_vision_attention_blocks)
{
    if (!vl3__cpu_amx_available())
        SKIP("no AMX-BF16 on this CPU (or the kernel refused the tile state)");
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    static const struct { int H, D; } hs[] = {{2, 16}, {16, 72}};
    static const int64_t cu[] = {0, 1, 32, 65, 265, 265}; /* blocks of 1, 31, 33, 200, 0 rows */
    int nb = 5, P = (int)cu[nb];
    for (size_t hi = 0; hi < sizeof(hs) / sizeof(hs[0]); hi++) {
        int H = hs[hi].H, D = hs[hi].D, ld = H * D;
        float *q = randv((size_t)P * ld), *k = randv((size_t)P * ld), *v = randv((size_t)P * ld);
        float *out = calloc((size_t)P * ld, 4);
        double *want = malloc(sizeof(double) * (size_t)P * ld);
        float scale = 1.0f / sqrtf((float)D);
        for (int b = 0; b < nb; b++)
            for (int64_t i = cu[b]; i < cu[b + 1]; i++)
                for (int h = 0; h < H; h++)
                    head_ref(want + i * ld + h * D, q + i * ld + h * D, scale,
                             k + cu[b] * ld + h * D, v + cu[b] * ld + h * D, (size_t)ld,
                             (int)(cu[b + 1] - cu[b]), D);
        ASSERT_OK(vl3__cpu_attention_blocks_amx(c, q, k, v, out, cu, nb, H, D));
        char what[64];
        snprintf(what, sizeof(what), "vision H=%d D=%d", H, D);
        int bad = check(what, out, want, (size_t)P * ld);
        free(q), free(k), free(v), free(out), free(want);
        if (bad)
            TEST__FAIL("%s: beyond nmse %g / max_abs %g", what, TOL_NMSE, TOL_MAX_ABS);
    }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

TEST(fast_gelu_tanh_and_silu_mul)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    int n = 200003; /* odd: a masked tail; large enough for two threads */
    float *x = malloc(sizeof(float) * n), *orig = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) {
        double u = urand();
        orig[i] = (float)(i % 7 == 0 ? u * 100 : i % 7 == 1 ? u * 1e-4 : i % 11 == 0 ? 0 : u * 6);
        x[i] = orig[i];
    }
    int rc = vl3__cpu_gelu_tanh_fast(c, x, n);
    if (rc == -ENOTSUP) {
        free(x), free(orig);
        vl3__backend_cpu_ops.free(c);
        SKIP("no AVX-512 on this CPU");
    }
    ASSERT_OK(rc);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double v = orig[i];
        double want = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        double e = fabs(x[i] - want) / (1 + fabs(v));
        worst = e > worst ? e : worst;
    }
    fprintf(stderr, "  gelu_tanh: worst |err| / (1 + |x|) = %.3g\n", worst);
    ASSERT(worst <= 1e-6);
    /* SwiGLU: T rows of gate | up, I = 8960 + 5 (the 2B width and a tail) */
    int T = 9, I = 8965;
    float *gu = malloc(sizeof(float) * (size_t)T * 2 * I), *out = malloc(sizeof(float) * (size_t)T * I);
    for (size_t i = 0; i < (size_t)T * 2 * I; i++)
        gu[i] = (float)(urand() * (i % 5 == 0 ? 90 : 8));
    ASSERT_OK(vl3__cpu_silu_mul_fast(c, out, gu, T, I));
    worst = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) {
            double g = gu[(size_t)t * 2 * I + i], u = gu[(size_t)t * 2 * I + I + i];
            double want = g / (1 + exp(-g)) * u, got = out[(size_t)t * I + i];
            double e = fabs(got - want) / (fabs(want) + 1e-30);
            if (fabs(want) > 1e-30)
                worst = e > worst ? e : worst;
        }
    fprintf(stderr, "  silu_mul: worst relative error %.3g\n", worst);
    ASSERT(worst <= 1e-6);
    free(x), free(orig), free(gu), free(out);
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* Read a whole binary file of n_elem 4-byte values. */
static void *read_all(const char *dir, const char *name, size_t *ret_n)
{
    char path[1200];
    char *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (vl3_file_read(path, (size_t)1 << 30, &buf, &len, NULL) < 0)
        return NULL;
    *ret_n = len / 4;
    return buf;
}

TEST(run_bf16_mode_matches_f32_mode)
{
    if (!vl3__cpu_amx_available())
        SKIP("no AMX-BF16 on this CPU: bf16 mode's attention is the f32 path");
    const char *bin = getenv("VL3_BIN_DIR"), *shared = test_shared_dir(), *tmp = test_tmpdir();
    if (!bin || !shared)
        SKIP("VL3_BIN_DIR or ../shared missing");
    ASSERT_EQ(test_sh(NULL, 0, "'%s/vl3' model tiny --out '%s/m' --layout native --std 0.1 "
                      "--tokenizer '%s/data/qwen2.5-tokenizer' >/dev/null", bin, tmp, shared), 0);
    for (int mode = 0; mode < 2; mode++)
        ASSERT_EQ(test_sh(NULL, 0, "VL3_PRECISION=%s '%s/vl3' run --model '%s/m' --video "
                          "'%s/data/media/frog.mp4' --max-frames 16 --task caption --greedy "
                          "--max-new-tokens 16 --dump '%s/d%d' >/dev/null 2>&1",
                          mode ? "bf16" : "f32", bin, tmp, shared, tmp, mode), 0);
    char d0[1100], d1[1100];
    snprintf(d0, sizeof(d0), "%s/d0", tmp);
    snprintf(d1, sizeof(d1), "%s/d1", tmp);
    size_t n0, n1, g0, g1;
    float *l0 = read_all(d0, "logits.f32", &n0), *l1 = read_all(d1, "logits.f32", &n1);
    int32_t *t0 = read_all(d0, "generated.i32", &g0), *t1 = read_all(d1, "generated.i32", &g1);
    ASSERT(l0 && l1 && t0 && t1);
    ASSERT_EQ(n0, n1);
    ASSERT_EQ(g0, g1);
    ASSERT_GT(g0, 0);
    for (size_t i = 0; i < g0; i++)
        ASSERT_EQ(t0[i], t1[i]);
    double e2 = 0, w2 = 0;
    for (size_t i = 0; i < n0; i++) {
        e2 += ((double)l1[i] - l0[i]) * ((double)l1[i] - l0[i]);
        w2 += (double)l0[i] * l0[i];
    }
    double rel = sqrt(e2 / w2);
    fprintf(stderr, "  bf16 vs f32 mode: logits rel-L2 %.3g over %zu, %zu tokens equal\n", rel, n0,
            g0);
    ASSERT(rel <= 2e-2);
    ASSERT(rel > 0); /* bf16 mode really ran a different path */
    free(l0), free(l1), free(t0), free(t1);
    return 0;
}

/* The row-parallel small ops (parallel.c) give bit-identical results on 1 and 3 threads, at
 * sizes large enough to split: rmsnorm, rope, add (LLM), layernorm, rope2d, add, downsample
 * (vision). */
TEST(row_parallel_ops_equal_single_thread)
{
    void *c1 = NULL, *c3 = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 1, &c1, NULL));
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 3, &c3, NULL));
    const struct vl3__vision_ops *vo = &vl3__cpu_vision_ops;
    int T = 1001, C = 1536, D = 128, H = 12;
    size_t n = (size_t)T * C;
    float *x = randv(n), *w = randv(C), *b = randv(C), *y1 = malloc(4 * n), *y3 = malloc(4 * n);
    int32_t *pos = malloc(sizeof(int32_t) * T), *pc = malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++)
        pos[t] = t * 3 + 1, pc[t] = t % 37;
    /* rmsnorm */
    ASSERT_OK(vl3__backend_cpu_ops.rmsnorm(c1, y1, x, w, T, C, 1e-6f));
    ASSERT_OK(vl3__backend_cpu_ops.rmsnorm(c3, y3, x, w, T, C, 1e-6f));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    /* rope on 12 heads of 128 */
    memcpy(y1, x, 4 * n), memcpy(y3, x, 4 * n);
    ASSERT_OK(vl3__backend_cpu_ops.rope(c1, y1, T, C, H, D, pos, 1e6f));
    ASSERT_OK(vl3__backend_cpu_ops.rope(c3, y3, T, C, H, D, pos, 1e6f));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    ASSERT(memcmp(y1, x, 4 * n) != 0);
    /* add */
    ASSERT_OK(vl3__backend_cpu_ops.add(c1, y1, x, y1, n));
    ASSERT_OK(vl3__backend_cpu_ops.add(c3, y3, x, y3, n));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    /* vision: layernorm, rope2d (16 heads of 96), add */
    ASSERT_OK(vo->layernorm(c1, x, w, b, y1, T, C, 1e-6f));
    ASSERT_OK(vo->layernorm(c3, x, w, b, y3, T, C, 1e-6f));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    ASSERT_OK(vo->rope2d(c1, y1, pos, pc, T, 16, 96, 1e4f));
    ASSERT_OK(vo->rope2d(c3, y3, pos, pc, T, 16, 96, 1e4f));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    ASSERT_OK(vo->add(c1, y1, x, (int64_t)n));
    ASSERT_OK(vo->add(c3, y3, x, (int64_t)n));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    /* the 2x2 downsample of a 26 x 38 frame (988 rows of the 1001): 247 merged rows */
    memset(y1, 0, 4 * n), memset(y3, 0, 4 * n);
    ASSERT_OK(vo->downsample(c1, x, y1, 26, 38, 2, C));
    ASSERT_OK(vo->downsample(c3, x, y3, 26, 38, 2, C));
    ASSERT(memcmp(y1, y3, 4 * n) == 0);
    ASSERT(y1[(size_t)246 * C + 7] == ((x[(size_t)984 * C + 7] + x[(size_t)985 * C + 7]) +
                                       (x[(size_t)986 * C + 7] + x[(size_t)987 * C + 7])) * 0.25f);
    free(x), free(w), free(b), free(y1), free(y3), free(pos), free(pc);
    vl3__backend_cpu_ops.free(c1);
    vl3__backend_cpu_ops.free(c3);
    return 0;
}

/* The vision encoder's product with bf16 matrices used in place (vision ops linear_bf16, the
 * checkpoint's bytes) gives the same bits as the product that rounds an f32 copy of the same
 * values per call (linear with f32 weights in bf16 mode): the in-place path changes where the
 * weights live, not the arithmetic. */
TEST(vision_linear_bf16_in_place_equals_rounded_copy)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    const struct vl3__vision_ops *vo = &vl3__cpu_vision_ops;
    ASSERT(vo->wants_bf16_weights && vo->wants_bf16_weights(c));
    int P = 77, in = 1152, out = 4304 / 4 + 3;
    float *x = randv((size_t)P * in), *wf = randv((size_t)out * in), *b = randv(out);
    uint16_t *wh = malloc(sizeof(uint16_t) * (size_t)out * in);
    for (size_t i = 0; i < (size_t)out * in; i++) {
        wh[i] = vl3__cpu_f32_to_bf16(wf[i]);
        wf[i] = vl3__cpu_bf16_to_f32(wh[i]); /* the same values in f32 */
    }
    float *y1 = malloc(sizeof(float) * (size_t)P * out), *y2 = malloc(sizeof(float) * (size_t)P * out);
    ASSERT_OK(vo->linear(c, x, wf, b, y1, P, in, out));
    ASSERT_OK(vo->linear_bf16(c, x, wh, b, y2, P, in, out));
    ASSERT(memcmp(y1, y2, sizeof(float) * (size_t)P * out) == 0);
    /* and not the f32 mode's product (which does not round x): the bf16 path really ran */
    vl3__cpu_set_precision(c, VL3__CPU_PREC_F32);
    ASSERT(!vo->wants_bf16_weights(c));
    ASSERT_OK(vo->linear(c, x, wf, b, y1, P, in, out));
    ASSERT(memcmp(y1, y2, sizeof(float) * (size_t)P * out) != 0);
    free(x), free(wf), free(b), free(wh), free(y1), free(y2);
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* The bias of the bf16 vision products is added in the AMX GEMM's epilogue (elsewhere copied into
 * y and accumulated onto): either way each output must be fl(sum + b), bit for bit the product
 * without bias plus b in float, on the native paths this CPU has (forced in turn; the f32
 * emulation paths add partial sums to y per k block, so their bias rounds differently), at
 * shapes with output and row tails, a chunk past 512 rows whose last 8 rows take the vdpbf16ps
 * path, and a 5-row product (vdpbf16ps only). */
__attribute__((noinline)) static float add_f32(float a, float b)
{
    volatile float s = a + b;
    return s;
}

TEST(vision_linear_bias_is_sum_plus_bias)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    const struct vl3__vision_ops *vo = &vl3__cpu_vision_ops;
    static const int shapes[][3] = {{378, 1152, 1152}, {37, 588, 45}, {520, 100, 77}, {5, 64, 33}};
    static const int isas[] = {VL3__CPU_ISA_AMX, VL3__CPU_ISA_AVX512BF16};
    int ran = 0;
    for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
        if (!vl3__cpu_isa_supported(isas[ii]))
            continue;
        vl3__cpu_set_isa(isas[ii]);
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
            int P = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
            float *x = randv((size_t)P * in), *b = randv(out);
            uint16_t *w = malloc(sizeof(uint16_t) * (size_t)out * in);
            for (size_t i = 0; i < (size_t)out * in; i++)
                w[i] = vl3__cpu_f32_to_bf16((float)urand() * 0.1f);
            float *y = malloc(sizeof(float) * (size_t)P * out);
            float *y0 = malloc(sizeof(float) * (size_t)P * out);
            ASSERT_OK(vo->linear_bf16(c, x, w, b, y, P, in, out));
            ASSERT_OK(vo->linear_bf16(c, x, w, NULL, y0, P, in, out));
            int differ = 0;
            for (int p = 0; p < P; p++)
                for (int o = 0; o < out; o++) {
                    float want = add_f32(y0[(size_t)p * out + o], b[o]);
                    if (memcmp(&y[(size_t)p * out + o], &want, 4) != 0)
                        TEST__FAIL("%s P=%d in=%d out=%d: y[%d][%d] = %.9g, sum + b = %.9g",
                                   vl3__cpu_isa_name(isas[ii]), P, in, out, p, o,
                                   y[(size_t)p * out + o], want);
                    differ |= y[(size_t)p * out + o] != y0[(size_t)p * out + o];
                }
            ASSERT(differ); /* the bias was added */
            free(x), free(b), free(w), free(y), free(y0);
        }
        ran++;
    }
    vl3__cpu_set_isa(-1);
    vl3__backend_cpu_ops.free(c);
    if (!ran)
        SKIP("no AMX or AVX512-BF16 on this CPU");
    return 0;
}

/* The vision rope2d (cos / sin from a table of the distinct positions, rotation on AVX-512) and
 * add give exactly the bits of the straightforward float loops: per row and frequency
 * cosf / sinf of (float)pos * inv_freq, each product and difference rounded once. Head dims 72
 * (the real model: 36 rotated pairs, a masked tail) and 16; positions of a 14 x 27 grid, a few
 * rows (per-row angles: the table would not be smaller) and positions past the table's range. */
__attribute__((noinline)) static float mul_f32(float a, float b)
{
    volatile float s = a * b;
    return s;
}

static int rope2d_case(void *c, int P, int H, int D, int big)
{
    int q = D / 4, half = D / 2;
    size_t n = (size_t)P * H * D;
    float *x = randv(n), *want = malloc(sizeof(float) * n), inv[64];
    int32_t *pr = malloc(sizeof(int32_t) * P), *pc = malloc(sizeof(int32_t) * P);
    for (int p = 0; p < P; p++) {
        pr[p] = p / 27 + (big ? 70000 : 0);
        pc[p] = p % 27;
    }
    for (int k = 0; k < q; k++)
        inv[k] = vl3__cpu_rope_inv_freq(1e4f, 2 * k, half);
    for (int p = 0; p < P; p++) {
        float cs[64], sn[64];
        for (int k = 0; k < q; k++) {
            float ar = mul_f32((float)pr[p], inv[k]), ac = mul_f32((float)pc[p], inv[k]);
            cs[k] = cosf(ar), sn[k] = sinf(ar), cs[q + k] = cosf(ac), sn[q + k] = sinf(ac);
        }
        for (int h = 0; h < H; h++) {
            const float *v = x + ((size_t)p * H + h) * D;
            float *o = want + ((size_t)p * H + h) * D;
            for (int i = 0; i < half; i++) {
                o[i] = add_f32(mul_f32(v[i], cs[i]), -mul_f32(v[i + half], sn[i]));
                o[i + half] = add_f32(mul_f32(v[i + half], cs[i]), mul_f32(v[i], sn[i]));
            }
        }
    }
    ASSERT_OK(vl3__cpu_vision_ops.rope2d(c, x, pr, pc, P, H, D, 1e4f));
    for (size_t i = 0; i < n; i++)
        if (memcmp(&x[i], &want[i], 4) != 0)
            TEST__FAIL("rope2d P=%d H=%d D=%d big=%d: value %zu = %.9g, want %.9g", P, H, D, big,
                       i, x[i], want[i]);
    /* add: y += x on two threads, the float sums */
    float *y = randv(n);
    for (size_t i = 0; i < n; i++)
        want[i] = add_f32(y[i], x[i]);
    ASSERT_OK(vl3__cpu_vision_ops.add(c, y, x, (int64_t)n));
    ASSERT(memcmp(y, want, sizeof(float) * n) == 0);
    free(x), free(want), free(pr), free(pc), free(y);
    return 0;
}

TEST(vision_rope2d_and_add_exact)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    for (int prec = 0; prec < 2; prec++) {
        vl3__cpu_set_precision(c, prec ? VL3__CPU_PREC_BF16 : VL3__CPU_PREC_F32);
        ASSERT_EQ(rope2d_case(c, 378, 16, 72, 0), 0);
        ASSERT_EQ(rope2d_case(c, 378, 3, 16, 0), 0);
        ASSERT_EQ(rope2d_case(c, 3, 16, 72, 0), 0);
        ASSERT_EQ(rope2d_case(c, 100, 2, 72, 1), 0);
    }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* bf16 mode's LayerNorm (f32 sums on AVX-512) against a double LayerNorm: rows of the vision
 * width 1152 and an odd 37, values with an offset (mean far from 0, as residual streams have);
 * max abs error within 2e-5 of outputs of order 1 (measured ~1e-6). */
TEST(fast_layernorm)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    static const int Cs[2] = {1152, 37};
    for (int ci = 0; ci < 2; ci++) {
        int C = Cs[ci], P = 301;
        float *x = randv((size_t)P * C), *w = randv(C), *b = randv(C);
        float *y = malloc(sizeof(float) * (size_t)P * C);
        for (size_t i = 0; i < (size_t)P * C; i++)
            x[i] = x[i] * 3 + 20;
        int rc = vl3__cpu_layernorm_fast(c, x, w, b, y, P, C, 1e-6f);
        if (rc == -ENOTSUP) {
            free(x), free(w), free(b), free(y);
            vl3__backend_cpu_ops.free(c);
            SKIP("no AVX-512 on this CPU");
        }
        ASSERT_OK(rc);
        double worst = 0;
        for (int p = 0; p < P; p++) {
            double m = 0, v = 0;
            for (int i = 0; i < C; i++)
                m += x[(size_t)p * C + i];
            m /= C;
            for (int i = 0; i < C; i++)
                v += (x[(size_t)p * C + i] - m) * (x[(size_t)p * C + i] - m);
            v /= C;
            for (int i = 0; i < C; i++) {
                double want = (x[(size_t)p * C + i] - m) / sqrt(v + 1e-6) * w[i] + b[i];
                double e = fabs(y[(size_t)p * C + i] - want);
                worst = e > worst ? e : worst;
            }
        }
        fprintf(stderr, "  layernorm C=%d: max abs error %.3g\n", C, worst);
        ASSERT(worst <= 2e-5);
        free(x), free(w), free(b), free(y);
    }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* bf16 mode's RMSNorm (norm.c: f32 sums on AVX-512, as the official bf16 model's float32
 * variance) against double sums: relative error within 1e-6 of the largest output (measured
 * about 1e-7); C 1536 (the 2B LLM) and 37 (a masked tail), rows with a mean far from zero. */
TEST(fast_rmsnorm)
{
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c, NULL));
    vl3__cpu_set_precision(c, VL3__CPU_PREC_BF16);
    if (vl3__cpu_isa() < VL3__CPU_ISA_AVX512) {
        vl3__backend_cpu_ops.free(c);
        SKIP("no AVX-512 on this CPU (bf16 mode keeps the double sums)");
    }
    static const int Cs[2] = {1536, 37};
    for (int ci = 0; ci < 2; ci++) {
        int C = Cs[ci], T = 301;
        float *x = randv((size_t)T * C), *w = randv(C), *y = malloc(sizeof(float) * T * C);
        for (size_t i = 0; i < (size_t)T * C; i++)
            x[i] = x[i] * 3 + 20;
        ASSERT_OK(vl3__backend_cpu_ops.rmsnorm(c, y, x, w, T, C, 1e-6f));
        double worst = 0, big = 0;
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int i = 0; i < C; i++)
                ss += (double)x[(size_t)t * C + i] * x[(size_t)t * C + i];
            double inv = 1 / sqrt(ss / C + 1e-6);
            for (int i = 0; i < C; i++) {
                double want = x[(size_t)t * C + i] * inv * w[i];
                worst = fmax(worst, fabs(y[(size_t)t * C + i] - want));
                big = fmax(big, fabs(want));
            }
        }
        fprintf(stderr, "  rmsnorm C=%d: max abs error %.3g of max %.3g\n", C, worst, big);
        ASSERT(worst <= 1e-6 * big);
        free(x), free(w), free(y);
    }
    vl3__backend_cpu_ops.free(c);
    return 0;
}

#ifdef HAVE_SIMD_EXP
/* 2^x of the attention kernels (simd_exp.h) against exp2 in double: relative error within its
 * stated 2.7e-6 (bound 3e-6) over [-60, 9], on a grid that hits integers, halves and values just
 * below them (the floor in vreduceps / scalef), and 0 far below. */
__attribute__((target("avx512f,avx512dq,fma"))) static double exp2_max_rel(const float *x, int n,
                                                                         float *y)
{
    for (int i = 0; i < n; i += 16)
        _mm512_storeu_ps(y + i, vl3__exp2_512_ps(_mm512_loadu_ps(x + i)));
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double ref = exp2((double)x[i]), e = fabs((double)y[i] - ref) / ref;
        worst = e > worst ? e : worst;
    }
    return worst;
}

__attribute__((target("avx512f,avx512dq,fma"))) static float exp2_one(float x)
{
    float y[16];
    _mm512_storeu_ps(y, vl3__exp2_512_ps(_mm512_set1_ps(x)));
    return y[0];
}

TEST(exp2_polynomial)
{
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq"))
        SKIP("no AVX-512 DQ on this CPU");
    enum { N = 69 * 4096 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    ASSERT(x && y);
    for (int i = 0; i < N; i++)
        x[i] = -60.0f + (float)i / 4096.0f; /* exact: steps of 2^-12 */
    x[100] = nextafterf(-3.0f, -INFINITY), x[101] = nextafterf(0.0f, -INFINITY);
    x[102] = nextafterf(1.0f, 0.0f), x[103] = -0.0f;
    double worst = exp2_max_rel(x, N, y);
    printf("max relative error over [-60, 9): %.3g\n", worst);
    ASSERT(worst < 3e-6);
    ASSERT(exp2_one(-200.0f) < 1e-45f && exp2_one(-1e30f) == 0.0f);
    free(x), free(y);
    return 0;
}
#endif

/* One thread, CPU time (immune to the other jobs of a shared machine): the AMX flash kernels at
 * the 2B sizes, an LLM layer's causal prefill of 2048 tokens (12 heads, 2 kv heads, D 128, one
 * sequence on pages of 256) and a vision layer over 4 frames of 1764 patches (16 heads, D 72);
 * FLOPs 4 x H x D per visible (query, key) pair (VL3_BENCH). */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

TEST(bench_attention_cputime)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the AMX attention");
    if (!vl3__cpu_amx_available())
        SKIP("no AMX-BF16 on this CPU (or the kernel refused the tile state)");
    void *c = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 1, &c, NULL));
    int n = 2048, H = 12, Hkv = 2, D = 128, ps = 256, kvd = Hkv * D, qs = (H + 2 * Hkv) * D;
    int pages = (n + ps - 1) / ps;
    float *kpool = randv((size_t)pages * ps * kvd), *vpool = randv((size_t)pages * ps * kvd);
    float *q = randv((size_t)n * qs), *out = malloc(sizeof(float) * (size_t)n * H * D);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)pages);
    for (int i = 0; i < pages; i++)
        table[i] = i;
    struct vl3__attn_seq sq = {0, n, 0, table};
    struct vl3__attn_args a = {.out = out, .q = q, .q_stride = qs, .out_stride = H * D,
                               .n_heads = H, .n_kv_heads = Hkv, .head_dim = D,
                               .scale = 1.0f / sqrtf((float)D), .k_pages = kpool,
                               .v_pages = vpool, .page_size = ps, .seqs = &sq, .n_seqs = 1};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = thread_cpu_s();
        ASSERT_OK(vl3__cpu_attention_amx(c, &a));
        double dt = thread_cpu_s() - t0;
        best = dt < best ? dt : best;
    }
    /* the tile unit's rate moves with the machine's other tenants (2x within minutes on host
     * B): each figure is printed against the one-thread TDPBF16PS rate measured after it */
    double roof = vl3__cpu_amx_peak_gflops(1);
    double gf = 4.0 * H * D * ((double)n * (n + 1) / 2) / best / 1e9;
    printf("llm prefill %d tokens: %.2f ms cpu, %.0f GFLOP/s = %.1f%% of the roof (%.0f)\n", n,
           best * 1e3, gf, 100 * gf / roof, roof);
    free(kpool), free(vpool), free(q), free(out), free(table);
    int nb = 4, np = 1764, VH = 16, VD = 72, ld = VH * VD;
    int64_t cu[5];
    for (int b = 0; b <= nb; b++)
        cu[b] = (int64_t)b * np;
    float *vq = randv((size_t)nb * np * ld), *vk = randv((size_t)nb * np * ld);
    float *vv = randv((size_t)nb * np * ld), *vo = malloc(sizeof(float) * (size_t)nb * np * ld);
    best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = thread_cpu_s();
        ASSERT_OK(vl3__cpu_attention_blocks_amx(c, vq, vk, vv, vo, cu, nb, VH, VD));
        double dt = thread_cpu_s() - t0;
        best = dt < best ? dt : best;
    }
    roof = vl3__cpu_amx_peak_gflops(1);
    gf = 4.0 * VH * VD * (double)nb * np * np / best / 1e9;
    printf("vision %d x %d patches: %.2f ms cpu, %.0f GFLOP/s = %.1f%% of the roof (%.0f)\n", nb,
           np, best * 1e3, gf, 100 * gf / roof, roof);
    free(vq), free(vk), free(vv), free(vo);
    vl3__backend_cpu_ops.free(c);
    return 0;
}

/* A decode step's attention at long context: one query per layer over n_past keys in 28 layers'
 * pools (the 2B model's shapes, beyond the caches), the f32 pools on the sgemm path (before) and
 * bf16 pools on the decode kernel; 2 threads in wall time (a decode step waits for both) and 1
 * thread in CPU time (immune to other jobs' preemption), best of 5 steps; the bytes of K and V
 * read per step against that time. */
TEST(bench_decode_attention)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to time the decode attention");
    void *c2 = NULL, *c1 = NULL;
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 2, &c2, NULL));
    ASSERT_OK(vl3__backend_cpu_ops.init(0, 1, &c1, NULL));
    enum { L = 28 };
    int np = 7212, H = 12, Hkv = 2, D = 128, ps = 256, kvd = Hkv * D, qs = (H + 2 * Hkv) * D;
    const char *ctxs = getenv("VL3_BENCH_CTX"); /* another context length (e.g. cache-resident) */
    if (ctxs && atoi(ctxs) > 0)
        np = atoi(ctxs) - 1;
    int pages = (np + 1 + ps - 1) / ps;
    size_t nel = (size_t)pages * ps * kvd;
    int32_t *table = malloc(sizeof(int32_t) * (size_t)pages);
    for (int i = 0; i < pages; i++)
        table[i] = i;
    float *q = randv((size_t)qs), *out = malloc(sizeof(float) * (size_t)H * D);
    struct vl3__attn_seq sq = {0, 1, np, table};
    /* bf16 mode both times: f32 pools is what bf16 mode kept before (the sgemm path with the kv
     * heads split over the threads) */
    vl3__cpu_set_precision(c2, VL3__CPU_PREC_BF16);
    vl3__cpu_set_precision(c1, VL3__CPU_PREC_BF16);
    size_t wb = vl3__cpu_attention_work_size(c2, 1, np + 1, H);
    void *work = malloc(wb);
    size_t flush_bytes = (size_t)1 << 30;
    char *flush = malloc(flush_bytes);
    ASSERT(flush != NULL);
    memset(flush, 1, flush_bytes);
    uint64_t flush_sum = 0;
    printf("decode attention, %d layers x %d keys, H %d Hkv %d D %d\n", L, np + 1, H, Hkv, D);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        size_t esz = bf16 ? 2 : 4;
        void *kp[L], *vp[L];
        for (int l = 0; l < L; l++) {
            /* the backend's allocator, as the engine's KV pools */
            ASSERT_OK(vl3__cpu_alloc(c2, nel * esz, &kp[l], NULL));
            ASSERT_OK(vl3__cpu_alloc(c2, nel * esz, &vp[l], NULL));
            for (size_t i = 0; i < nel; i++) {
                float k = (float)urand(), v = (float)urand();
                if (bf16) {
                    ((uint16_t *)kp[l])[i] = vl3__cpu_f32_to_bf16(k);
                    ((uint16_t *)vp[l])[i] = vl3__cpu_f32_to_bf16(v);
                } else {
                    ((float *)kp[l])[i] = k, ((float *)vp[l])[i] = v;
                }
            }
        }
        /* rounds: 2 threads (wall), 1 thread (its CPU time), 2 threads after a read of 1 GiB
         * (the pools out of the cache, as in the model, where 3 GB of weights pass between two
         * steps) */
        double best[3] = {1e30, 1e30, 1e30};
        for (int r = 0; r < 15; r++) {
            int kind = r % 3;
            void *c = kind == 1 ? c1 : c2;
            if (kind == 2)
                flush_sum += vl3__cpu_read_stream(flush, flush_bytes, 1);
            double t0 = kind == 1 ? thread_cpu_s() : vl3_time_s();
            for (int l = 0; l < L; l++) {
                struct vl3__attn_args a = {
                    .out = out, .q = q, .q_stride = qs, .out_stride = H * D, .n_heads = H,
                    .n_kv_heads = Hkv, .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                    .k_pages = kp[l], .v_pages = vp[l], .page_size = ps,
                    .kv_dtype = bf16 ? VL3__DTYPE_BF16 : VL3__DTYPE_F32, .seqs = &sq, .n_seqs = 1,
                    .work = work, .work_bytes = wb};
                ASSERT_OK(vl3__cpu_attention(c, &a));
            }
            double dt = (kind == 1 ? thread_cpu_s() : vl3_time_s()) - t0;
            best[kind] = dt < best[kind] ? dt : best[kind];
        }
        double bytes = 2.0 * L * (np + 1) * kvd * esz;
        static const char *kinds[3] = {"2 threads, wall", "1 thread, cpu  ", "2 threads, cold"};
        for (int t = 0; t < 3; t++)
            printf("  %-28s %s %8.2f ms/step  %6.1f MB read  %6.2f GB/s\n",
                   bf16 ? "bf16 pools, decode kernel" : "f32 pools, sgemm path", kinds[t],
                   best[t] * 1e3, bytes / 1e6, bytes / best[t] / 1e9);
        for (int l = 0; l < L; l++)
            vl3__cpu_dealloc(c2, kp[l]), vl3__cpu_dealloc(c2, vp[l]);
    }
    printf("  (cache flush: %zu MiB read, sum %llu)\n", flush_bytes >> 20,
           (unsigned long long)flush_sum);
    free(q), free(out), free(table), free(work), free(flush);
    vl3__backend_cpu_ops.free(c1);
    vl3__backend_cpu_ops.free(c2);
    return 0;
}
