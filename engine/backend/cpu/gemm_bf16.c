/* gemm_bf16.c: the bf16-compute matrix product of the CPU backend's bf16 precision mode:
 * y (T, out) [+]= bf16(x) W^T, W (out, in) bf16 as stored, x (T, in) f32 rounded to bf16 (nearest
 * even) as the inputs, f32 accumulation, f32 output -- what the official model computes in
 * torch.bfloat16 on the CPU (oneDNN's AMX / AVX512-BF16 kernels).
 *
 * Paths, picked at run time from cpuid (the build is not -march=native) or forced with the
 * environment variable VL3_CPU_ISA=amx|avx512bf16|avx512|avx2|c (vl3__cpu_set_isa in tests):
 *   - amx: AMX-BF16 tiles for T >= AMX_MIN_T. A tiles are 16 weight rows x 32 k read in place
 *     (tileloadd with the row stride: no repacking of W), B tiles are x packed once per call in
 *     the pair-interleaved layout (16 k pairs x 16 tokens; 16 tokens at a time, transposed in
 *     registers, on the pool's threads), C tiles (16 outputs x 16 tokens) are transposed into y.
 *     Blocks of 32 outputs x 32 tokens (4 C tiles) per k step, the k loop software-pipelined
 *     (amx_job). Single-thread rates and what was tried: docs/benchmarks.md. Linux asks the
 *     process to request the tile state (arch_prctl ARCH_REQ_XCOMP_PERM) before the first tile
 *     instruction; when the kernel refuses, the path is reported unsupported.
 *   - avx512bf16: vdpbf16ps dot products, 4 weight rows x 4 tokens per register block, the W
 *     rows read once per token block straight from the weights (bf16, no widening). It is also
 *     the small-T (decode) kernel of the amx path.
 *   - avx512, avx2, c: the f32 kernels of matmul.c on x rounded to bf16 (exact bf16 products,
 *     f32 sums: the same arithmetic, f32 speed). They keep bf16 mode usable everywhere.
 * Threads (the context's pool, parallel.c) split the output rows in chunks (of blocks of 32 rows
 * for AMX, of 4 otherwise) taken from an atomic counter (gemm_split). For the vision encoder's
 * products the AMX epilogue (store_ct) also adds the bias, and optionally applies the tanh GELU
 * or adds the result to y (vl3__cpu_linear_w16_ex), and several matrices can share one packing
 * of x (vl3__cpu_linear_w16_n). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define GEMM_X86 1
#include "simd_gelu.h"
#include "simd_mask.h"
#include "simd_silu.h"
#include "simd_transpose.h"
#endif

#define MAX_THREADS 64
#define XCHUNK 512     /* token rows converted per pass (the work buffer holds this many) */
#define AMX_MIN_T 16   /* below this the amx path uses the vdpbf16ps kernel */
#define EMU_CHUNK 256  /* token rows rounded per pass on the f32-emulation paths */
#define THREAD_MIN_MACS (1 << 20)
#define AMX_XCHUNK_BYTES (1280 << 10) /* packed x of one k chunk (amx_job), to stay in L2 */
/* Packed x of one pass on the short-k path (every k step of a block against every token block):
 * each 32-row output block reads all of it from L2, with its W rows and y lines passing through
 * the same 2 MiB. At 512 rows x K 1536 (1.5 MB: the LLM's q/k/v, o, gate and up) it spilled:
 * one thread, CPU time, T 2048-7212 x 1536 x 2048-8960, 650-680 GFLOP/s at 512 rows against
 * 830-895 at 256-320 (2026-12-06, docs/benchmarks.md); 391 x 1536 and K 1152 (1.2 MB at 512
 * rows) measured the same either way. K 4304 (the vision fc2) in passes of 96 rows on the short
 * path against 512 on the k-chunked one: 2048 rows 797 against 680 GFLOP/s (medians of 8,
 * one thread); K 8960 in passes of 32-64 rows measured below its k-chunked path. */
#define AMX_X_L2_BYTES (1 << 20)
/* per thread: C tiles parked between k chunks; it sets how many output blocks share one k chunk
 * of packed x from L2 (G = this / (token pairs x 4 KB)). K 8960 (the LLM's down product), one
 * thread, CPU time, medians of 5-6 interleaved rounds: 512 KB against 256 KB 840-926 against
 * 747-815 GFLOP/s at 512 rows, 801-847 against 724-742 at 391, 880 against 776 at 7212; 128 KB
 * lower, 768 KB and 1 MB no better than 512 (2026-12-06) */
#define AMX_PARK_BYTES (512 << 10)
/* k steps (of 32) per chunk on the long-k path: A (16 KB) and B (16 KB) of a block and token
 * pair fit L1 together; one thread, CPU time: 8 steps 830-945 GFLOP/s against 700-800 with
 * chunks sized to L2 (~50 steps); 4, 6, 10, 12, 16 steps measured lower than 8 */
#define AMX_KC_L1 8
/* Software prefetch distances of the streaming kernels (dot_rows_t1, DOT_BLOCK), bytes ahead of
 * the W load on the same row (VL3__CPU_PREFETCH_L1 and _L2, cpu_ops.h). To L1 (_MM_HINT_T0)
 * 2 KiB ahead: decode of the 2B LLM, 2 threads, interleaved runs on one machine: 5.4-6.4
 * tok/s without, 6.2-7.5 at 1 KiB, 7.3-8.6 at 2 KiB, 7.0-8.6 at 3 and 4 KiB; _MM_HINT_T1
 * alone measured below _MM_HINT_T0. The L2 streamer alone keeps too few lines in flight. Both
 * together, a second prefetch to L2 (_MM_HINT_T1) 8 KiB ahead: a 1 GiB matrix on 2 MiB pages,
 * 2 threads, T = 1, best of 8 interleaved passes, six runs: 21.8-25.9 -> 27.4-30.5 GB/s, level
 * with the same two-level prefetch in a plain read loop (27.5-30.5; the 2 KiB prefetch alone:
 * 26.2-30.2); 4, 8 and 16 KiB within run-to-run noise. */
#define T1_PREFETCH VL3__CPU_PREFETCH_L1
#define L2_PREFETCH VL3__CPU_PREFETCH_L2

static const char *const isa_names[VL3__CPU_ISA_COUNT] = {"c", "avx2", "avx512", "avx512bf16",
                                                          "amx"};

const char *vl3__cpu_isa_name(int isa)
{
    return isa >= 0 && isa < VL3__CPU_ISA_COUNT ? isa_names[isa] : "?";
}

int vl3__cpu_isa_parse(const char *s)
{
    for (int i = 0; i < VL3__CPU_ISA_COUNT; i++)
        if (s && strcmp(s, isa_names[i]) == 0)
            return i;
    return -EINVAL;
}

/* ---- probing -------------------------------------------------------------------------------- */

static int isa_ok[VL3__CPU_ISA_COUNT], isa_env = -1, isa_forced = -1;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

#ifdef GEMM_X86
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void isa_probe(void)
{
    isa_ok[VL3__CPU_ISA_C] = 1;
#ifdef GEMM_X86
    unsigned a, b, c, d;
    __builtin_cpu_init();
    isa_ok[VL3__CPU_ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    isa_ok[VL3__CPU_ISA_AVX512] = __builtin_cpu_supports("avx512f") &&
                                  __builtin_cpu_supports("avx512bw");
    if (isa_ok[VL3__CPU_ISA_AVX512] && __get_cpuid_count(7, 1, &a, &b, &c, &d))
        isa_ok[VL3__CPU_ISA_AVX512BF16] = (a >> 5) & 1;
    if (isa_ok[VL3__CPU_ISA_AVX512BF16] && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
        ((d >> 22) & 1) && ((d >> 24) & 1) && __get_cpuid(1, &a, &b, &c, &d) &&
        ((c >> 27) & 1) /* OSXSAVE */ && (xcr0() & (3u << 17)) == (3u << 17))
        /* the kernel must also grant this process the tile data state */
        isa_ok[VL3__CPU_ISA_AMX] =
            syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#endif
    const char *env = getenv("VL3_CPU_ISA");
    int e = env && *env ? vl3__cpu_isa_parse(env) : -1;
    if (e >= 0 && isa_ok[e])
        isa_env = e;
}

int vl3__cpu_isa_supported(int isa)
{
    pthread_once(&isa_once, isa_probe);
    return isa >= 0 && isa < VL3__CPU_ISA_COUNT && isa_ok[isa];
}

void vl3__cpu_set_isa(int isa)
{
    __atomic_store_n(&isa_forced, isa, __ATOMIC_RELAXED);
}

int vl3__cpu_isa(void)
{
    pthread_once(&isa_once, isa_probe);
    int f = __atomic_load_n(&isa_forced, __ATOMIC_RELAXED);
    if (f >= 0 && f < VL3__CPU_ISA_COUNT && isa_ok[f])
        return f;
    if (isa_env >= 0)
        return isa_env;
    for (int i = VL3__CPU_ISA_COUNT - 1; i > 0; i--)
        if (isa_ok[i])
            return i;
    return VL3__CPU_ISA_C;
}

int vl3__cpu_bf16_native(void)
{
    return vl3__cpu_isa_supported(VL3__CPU_ISA_AVX512BF16) ||
           vl3__cpu_isa_supported(VL3__CPU_ISA_AMX);
}

/* ---- rounding x to bf16 --------------------------------------------------------------------- */

static void round_row_c(uint16_t *dst, const float *x, int K, int Kp)
{
    int k = 0;
    for (; k < K; k++)
        dst[k] = vl3__cpu_f32_to_bf16(x[k]);
    for (; k < Kp; k++)
        dst[k] = 0;
}

#ifdef GEMM_X86
/* 16 floats (masked) -> 16 bf16, nearest even, NaN kept quiet (as vl3__cpu_f32_to_bf16). */
__attribute__((target("avx512f,avx512bw"))) static inline __m256i round16(const float *x,
                                                                            __mmask16 m)
{
    __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, x));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb,
                                                   _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

/* 32 values from x (n valid) as 16 dwords of bf16 pairs. */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i round32(const float *x, int n)
{
    __m256i lo = round16(x, vl3__mask16(n)), hi = round16(x + 16, vl3__mask16(n - 16));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

__attribute__((target("avx512f,avx512bw"))) static void round_row_avx512(uint16_t *dst,
                                                                          const float *x, int K,
                                                                          int Kp)
{
    for (int k = 0; k < Kp; k += 32)
        _mm512_storeu_si512((void *)(dst + k), round32(x + k, K - k));
}
#endif

/* Round rows [0, T) of x (T, K) into xb (T, Kp), zero past K. */
static void round_rows(uint16_t *xb, const float *x, int T, int K, int Kp, int isa)
{
    for (int t = 0; t < T; t++) {
#ifdef GEMM_X86
        if (isa >= VL3__CPU_ISA_AVX512) {
            round_row_avx512(xb + (size_t)t * Kp, x + (size_t)t * K, K, Kp);
            continue;
        }
#endif
        (void)isa;
        round_row_c(xb + (size_t)t * Kp, x + (size_t)t * K, K, Kp);
    }
}

/* ---- jobs and threads ----------------------------------------------------------------------- */

struct gemm_job {
    void (*fn)(const struct gemm_job *);
    int o0, o1;         /* output rows of this job */
    int T, K, Kp, out, acc;
    const uint16_t *w;  /* (out, K) bf16 */
    const uint16_t *xb; /* (T, Kp) bf16, or the AMX-packed x */
    float *y;           /* (T, out) */
    uint16_t *scratch;  /* per-thread: AMX edge tiles */
    const float *bias;  /* (out) added in the AMX epilogue, or NULL */
    int gelu;           /* AMX epilogue: the tanh GELU of sum + bias (acc 0) */
    int swiglu;         /* AMX: W holds 2 x out rows (gate, then up); y = silu(gate) * up */
    uint16_t *pk;       /* AMX: instead of y, the next product's packed x (its B tiles, pk_nks
                         * k steps per token block): store_pk */
    int pk_nks;
};

/* One product (or up to MULTI_MAX products of one x on the same rows) split over the threads in
 * chunks of output rows taken from an atomic counter: a thread that runs slower takes fewer
 * chunks. On a shared host one of the two cores ran the same half of a 391 x 1536 x 17920 AMX
 * product in 29 ms while the other took 13 (one job per thread: the call took 29). Task k is one
 * thread's loop over chunks with slot k's scratch; which thread computes a row does not change
 * its bits. */
#define MULTI_MAX 4           /* products of one x in one call */
#define CHUNKS_PER_THREAD 8   /* chunks of each product per thread, at most */

struct gemm_split {
    struct gemm_job proto[MULTI_MAX]; /* the products: o0, o1, scratch set per chunk */
    int n;                            /* products */
    int unit, units;                  /* chunk boundaries are multiples of unit rows */
    int n_chunks;
    char *scratch;                    /* slot k's scratch at k * scratch_bytes (AMX) */
    size_t scratch_bytes;
    int next;                         /* the next chunk (atomic) */
};

static void split_task(void *arg, int k)
{
    struct gemm_split *s = arg;
    int c;
    while ((c = __atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED)) < s->n_chunks) {
        int u0 = (int)((long long)s->units * c / s->n_chunks);
        int u1 = (int)((long long)s->units * (c + 1) / s->n_chunks);
        for (int i = 0; i < s->n; i++) {
            struct gemm_job j = s->proto[i];
            j.o0 = u0 * s->unit;
            j.o1 = u1 * s->unit < j.out ? u1 * s->unit : j.out;
            if (s->scratch)
                j.scratch = (uint16_t *)(s->scratch + (size_t)k * s->scratch_bytes);
            j.fn(&j);
        }
    }
}

/* Run s (proto, n, unit set; every product has proto[0]'s out rows) on nt threads. */
static void split_run(void *ctx, struct gemm_split *s, int nt)
{
    s->units = (s->proto[0].out + s->unit - 1) / s->unit;
    s->n_chunks = nt * CHUNKS_PER_THREAD < s->units ? nt * CHUNKS_PER_THREAD : s->units;
    s->next = 0;
    vl3__cpu_run(ctx, nt, split_task, s);
}

/* ---- AVX512-BF16: vdpbf16ps dot products ---------------------------------------------------- */

#ifdef GEMM_X86
/* out[r][t] = sum_k w[r][k] x[t][k] for RN rows and TN tokens; x zero-padded to Kp. */
#define DOT_BLOCK(RN, TN)                                                                          \
    __attribute__((target("avx512f,avx512bw,avx512bf16"))) static void dot_##RN##_##TN(           \
        const uint16_t *w, size_t ws, const uint16_t *x, size_t xs, int K, float *o, int os)     \
    {                                                                                              \
        __m512 acc[RN][TN];                                                                        \
        _Pragma("GCC unroll 4") for (int r = 0; r < RN; r++)                                       \
            _Pragma("GCC unroll 4") for (int t = 0; t < TN; t++)                                   \
                acc[r][t] = _mm512_setzero_ps();                                                   \
        int kf = K & ~31, k = 0;                                                                   \
        for (; k < kf; k += 32) {                                                                  \
            __m512i wv[RN];                                                                        \
            _Pragma("GCC unroll 4") for (int r = 0; r < RN; r++) {                                 \
                _mm_prefetch((const char *)(w + r * ws + k) + T1_PREFETCH, _MM_HINT_T0);          \
                _mm_prefetch((const char *)(w + r * ws + k) + L2_PREFETCH, _MM_HINT_T1);          \
                wv[r] = _mm512_loadu_si512((const void *)(w + r * ws + k));                        \
            }                                                                                      \
            _Pragma("GCC unroll 4") for (int t = 0; t < TN; t++) {                                 \
                __m512i xv = _mm512_loadu_si512((const void *)(x + t * xs + k));                   \
                _Pragma("GCC unroll 4") for (int r = 0; r < RN; r++)                               \
                    acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv[r], (__m512bh)xv);        \
            }                                                                                      \
        }                                                                                          \
        if (k < K) {                                                                               \
            __mmask32 m = (__mmask32)((1ull << (K - k)) - 1);                                      \
            __m512i wv[RN];                                                                        \
            for (int r = 0; r < RN; r++)                                                           \
                wv[r] = _mm512_maskz_loadu_epi16(m, w + r * ws + k);                               \
            for (int t = 0; t < TN; t++) {                                                         \
                __m512i xv = _mm512_maskz_loadu_epi16(m, x + t * xs + k);                          \
                for (int r = 0; r < RN; r++)                                                       \
                    acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv[r], (__m512bh)xv);        \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < RN; r++)                                                               \
            for (int t = 0; t < TN; t++)                                                           \
                o[t * os + r] = _mm512_reduce_add_ps(acc[r][t]);                                   \
    }
DOT_BLOCK(4, 1)
DOT_BLOCK(4, 2)
DOT_BLOCK(4, 3)
DOT_BLOCK(4, 4)
DOT_BLOCK(1, 1)
DOT_BLOCK(1, 2)
DOT_BLOCK(1, 3)
DOT_BLOCK(1, 4)

typedef void (*dot_fn)(const uint16_t *, size_t, const uint16_t *, size_t, int, float *, int);
static const dot_fn dot4[5] = {NULL, dot_4_1, dot_4_2, dot_4_3, dot_4_4};
static const dot_fn dot1[5] = {NULL, dot_1_1, dot_1_2, dot_1_3, dot_1_4};

/* One token (decode): rows one after another, so W streams from memory as one sequential read
 * (four rows side by side streamed at 12 GB/s from DRAM where one row at a time reached 19.5 on
 * this project's machine); four accumulators over 128 values per step hide the vdpbf16ps
 * latency. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void dot_rows_t1(
    const struct gemm_job *j)
{
    int K = j->K, k128 = K & ~127, kf = K & ~31;
    const uint16_t *x = j->xb;
    for (int o = j->o0; o < j->o1; o++) {
        const uint16_t *w = j->w + (size_t)o * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k < k128; k += 128) {
            /* W's next lines, T1_PREFETCH bytes ahead to L1 and L2_PREFETCH ahead to L2 (rows
             * are contiguous: past this row's end is the next one's start) */
            const char *pf = (const char *)(w + k) + T1_PREFETCH;
            const char *pf2 = (const char *)(w + k) + L2_PREFETCH;
            _mm_prefetch(pf, _MM_HINT_T0);
            _mm_prefetch(pf + 64, _MM_HINT_T0);
            _mm_prefetch(pf + 128, _MM_HINT_T0);
            _mm_prefetch(pf + 192, _MM_HINT_T0);
            _mm_prefetch(pf2, _MM_HINT_T1);
            _mm_prefetch(pf2 + 64, _MM_HINT_T1);
            _mm_prefetch(pf2 + 128, _MM_HINT_T1);
            _mm_prefetch(pf2 + 192, _MM_HINT_T1);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w + k)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(w + k + 32)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(x + k + 32)));
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512((const void *)(w + k + 64)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(x + k + 64)));
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512((const void *)(w + k + 96)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(x + k + 96)));
        }
        for (; k < kf; k += 32)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w + k)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
        if (k < K) {
            __mmask32 m = (__mmask32)((1ull << (K - k)) - 1);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(m, w + k),
                                  (__m512bh)_mm512_maskz_loadu_epi16(m, x + k));
        }
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),
                                                       _mm512_add_ps(a2, a3)));
        j->y[o] = j->acc ? j->y[o] + sum : sum;
    }
}

static void dot_job(const struct gemm_job *j)
{
    if (j->T == 1) {
        dot_rows_t1(j);
        return;
    }
    float o[16];
    for (int r0 = j->o0; r0 < j->o1; r0 += 4) {
        int rn = j->o1 - r0 >= 4 ? 4 : 1;
        for (int t0 = 0; t0 < j->T; t0 += 4) {
            int tn = j->T - t0 < 4 ? j->T - t0 : 4;
            (rn == 4 ? dot4 : dot1)[tn](j->w + (size_t)r0 * j->K, (size_t)j->K,
                                        j->xb + (size_t)t0 * j->Kp, (size_t)j->Kp, j->K, o, 4);
            for (int t = 0; t < tn; t++)
                for (int r = 0; r < rn; r++) {
                    float *y = j->y + (size_t)(t0 + t) * j->out + r0 + r;
                    *y = j->acc ? *y + o[t * 4 + r] : o[t * 4 + r];
                }
        }
        if (rn == 1)
            r0 -= 3; /* one row done: step by one */
    }
}

/* ---- AMX-BF16 tiles ------------------------------------------------------------------------- */

struct tile_config {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};


/* Pack rows [16 tb, 16 tb + 16) of x (tn rows, stride K) as B tiles: per block of 16 tokens, nks
 * tiles of 16 k pairs x 16 tokens (dword (k2, t) = bf16 pair x[t][32s + 2k2 .. +1]): 16 rows
 * rounded to pairs, transposed in registers, stored as 16 contiguous 64-byte rows. Rows past tn
 * are zero. The rounding is vcvtne2ps2bf16 (the AMX path has AVX512-BF16): nearest even as
 * vl3__cpu_f32_to_bf16, NaN quiet, except that it reads denormal inputs as zero (no activation
 * entering a product is below 1.2e-38), in one instruction instead of ~20 integer ones. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void amx_pack_block(
    uint32_t *xp, const float *x, int tn, int K, int nks, int tb)
{
    uint32_t *blk = xp + (size_t)tb * nks * 256;
    for (int s = 0; s < nks; s++) {
        __m512 r[16], t[16];
        __mmask16 m0 = vl3__mask16(K - s * 32), m1 = vl3__mask16(K - s * 32 - 16);
        for (int i = 0; i < 16; i++) {
            int row = tb * 16 + i;
            if (row >= tn) {
                r[i] = _mm512_setzero_ps();
                continue;
            }
            const float *src = x + (size_t)row * K + s * 32;
            r[i] = (__m512)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, src + 16),
                                               _mm512_maskz_loadu_ps(m0, src));
        }
        vl3__transpose16_ps(r, t);
        uint32_t *tile = blk + (size_t)s * 256;
        for (int k2 = 0; k2 < 16; k2++)
            _mm512_store_ps((float *)(tile + k2 * 16), t[k2]);
    }
}

struct pack_job {
    uint32_t *xp;
    const float *x;
    int tn, K, nks, ntb, nt;
};

static void pack_task(void *arg, int k)
{
    const struct pack_job *p = arg;
    for (int tb = p->ntb * k / p->nt; tb < p->ntb * (k + 1) / p->nt; tb++)
        amx_pack_block(p->xp, p->x, p->tn, p->K, p->nks, tb);
}

/* tn rows of x (K wide) packed into xp as B tiles, Kp / 32 k steps per token block and an even
 * number of token blocks (amx_job takes them in pairs; rows past tn zero), on up to nt of the
 * pool's threads */
static void pack_pass(void *ctx, uint16_t *xp, const float *x, int tn, int K, int Kp, int nt)
{
    int ntb = (tn + 15) / 16;
    ntb += ntb & 1;
    struct pack_job pj = {(uint32_t *)xp, x, tn, K, Kp / 32, ntb, nt < ntb ? nt : ntb};
    vl3__cpu_run(ctx, pj.nt, pack_task, &pj);
}

/* y[n][m] (+)= e(c[m][n] (+ bias[m])) for n < tn tokens, m < rows outputs: the C tile (16
 * outputs x 16 tokens, row stride 16) transposed in registers, one masked row store per token.
 * The bias is added to the sum once (the same bits as a copy of it in y that the sum is added
 * to), then e = the tanh GELU (gelu) or nothing, then y's value (acc). With gate (the gate
 * product's C tile of the same outputs and tokens), y = silu(gate) * c instead (no bias, acc or
 * GELU): the SwiGLU of the LLM MLP on the up product's tile. */
__attribute__((target("avx512f,fma"))) static void store_ct(float *y, int ld, const float *c,
                                                            int tn, int rows, int acc,
                                                            const float *bias, int gelu,
                                                            const float *gate)
{
    __m512 r[16], t[16], tg[16];
    if (gate) {
        for (int m = 0; m < 16; m++)
            r[m] = _mm512_loadu_ps(gate + 16 * m);
        vl3__transpose16_ps(r, tg);
    }
    for (int m = 0; m < 16; m++)
        r[m] = _mm512_loadu_ps(c + 16 * m);
    vl3__transpose16_ps(r, t);
    if (gate) {
        __mmask16 mk = vl3__mask16(rows);
        for (int n = 0; n < tn; n++)
            _mm512_mask_storeu_ps(y + (size_t)n * ld, mk, vl3__silu_mul512_ps(tg[n], t[n]));
        return;
    }
    __mmask16 mk = vl3__mask16(rows);
    __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias) : _mm512_setzero_ps();
    for (int n = 0; n < tn; n++) {
        float *yr = y + (size_t)n * ld;
        __m512 v = t[n];
        if (bias)
            v = _mm512_add_ps(v, bv);
        if (gelu)
            v = vl3__gelu_tanh512_ps(v);
        if (acc)
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yr));
        _mm512_mask_storeu_ps(yr, mk, v);
    }
}

/* The four C tiles of one 32 x 32 block, stored in the job's cbuf, waiting to be transposed into
 * y while the next block's tile products run. */
struct amx_pending {
    float *y;          /* y at the block's first token and output */
    const float *bias; /* the bias at the block's first output, or NULL */
    const float *gate; /* swiglu: the gate product's 4 C tiles of the block, or NULL */
    int tn[2], rows[2], live;
    int tb, o0;        /* the block's first token block and output (store_pk) */
};

/* The packed epilogue (job pk): C tile c (16 outputs x 16 tokens, row stride 16) of the block at
 * outputs o0 + 16h and token block tb + half becomes rows 8h .. 8h + 7 of the next product's B
 * tile (token block tb + half, k step o0 / 32) as amx_pack_block lays them out: dword (i, n) =
 * the bf16 pair of e(C[2i][n]) and e(C[2i + 1][n]), e the epilogue (bias, GELU; or the SwiGLU
 * with the gate's tile), rounded by the same instruction as the pack (vcvtneps2bf16, nearest
 * even), outputs past `rows` zero. A C tile's rows are outputs, which are the next product's k,
 * so no transpose and no f32 row of y are needed. */
__attribute__((target("avx512f,avx512bw,avx512bf16,fma"))) static void store_pk(
    uint32_t *dst, const float *c, int rows, const float *bias, int gelu, const float *gate)
{
    for (int i = 0; i < 8; i++) {
        __m512 v[2];
        for (int e = 0; e < 2; e++) {
            int m = 2 * i + e;
            if (m >= rows) {
                v[e] = _mm512_setzero_ps();
                continue;
            }
            __m512 x = _mm512_loadu_ps(c + 16 * m);
            if (gate) {
                x = vl3__silu_mul512_ps(_mm512_loadu_ps(gate + 16 * m), x);
            } else {
                if (bias)
                    x = _mm512_add_ps(x, _mm512_set1_ps(bias[m]));
                if (gelu)
                    x = vl3__gelu_tanh512_ps(x);
            }
            v[e] = x;
        }
        __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v[0]));
        __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v[1]));
        _mm512_storeu_si512((void *)(dst + 16 * i),
                            _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

__attribute__((target("avx512f"))) static void flush_ct(const struct gemm_job *j,
                                                        const float *cbuf,
                                                        struct amx_pending *p)
{
    if (j->pk) {
        for (int c = 0; c < 4; c++) {
            int h = c >> 1, half = c & 1;
            uint32_t *dst = (uint32_t *)j->pk +
                            ((size_t)(p->tb + half) * j->pk_nks + p->o0 / 32) * 256 + 128 * h;
            store_pk(dst, cbuf + 256 * c, p->rows[h], p->bias ? p->bias + 16 * h : NULL, j->gelu,
                     p->gate ? p->gate + 256 * c : NULL);
        }
        p->live = 0;
        return;
    }
    for (int c = 0; c < 4; c++) {
        int h = c >> 1, half = c & 1;
        if (p->tn[half] > 0)
            store_ct(p->y + (size_t)half * 16 * j->out + 16 * h, j->out, cbuf + 256 * c,
                     p->tn[half], p->rows[h], j->acc, p->bias ? p->bias + 16 * h : NULL,
                     j->gelu, p->gate ? p->gate + 256 * c : NULL);
    }
    p->live = 0;
}


/* One job: output blocks of 32 rows [o0, o1) (o0 a multiple of 32) for ntb token blocks.
 * Per block, the k loop is software-pipelined: each A / B tile of the next k step is loaded as
 * soon as the products of this step have read its register (tile registers are not renamed, so
 * loading all four at the top of the step waited for the previous step's products). The
 * previous block's C tiles are transposed into y (flush_ct) after the first k step of the next
 * block is issued, so that the AVX-512 epilogue overlaps tile products instead of following a
 * drained pipeline, and the lines of y the block will write are prefetched for writing during
 * its first 32 k steps (y of a 2B product is 3-14 MB: its stores otherwise missed to L3/DRAM).
 * Software prefetch of the A and B tiles measured no gain (slower when the fill buffers were
 * full) and is not done.
 * scratch: 2 * 16 * Kp bf16 (edge rows) + 2 * 16 * 32 bf16 (k tails) + 4 C tiles (f32). */
#define AMX_TARGET "amx-tile,amx-bf16,avx512f,prfchw"

/* A and B tile sources of one 32-output block: rows of W in place (or padded copies) */
struct amx_block {
    const char *am[2], *at[2];
    long as[2], ats[2];
    int rows[2], o0;
};

static void amx_block_setup(const struct gemm_job *j, struct amx_block *bl, int o0, uint16_t **pad,
                            uint16_t **tail)
{
    int K = j->K, Kp = j->Kp, kfull = K / 32, nks = Kp / 32;
    bl->o0 = o0;
    for (int h = 0; h < 2; h++) {
        int r0 = o0 + 16 * h;
        bl->rows[h] = j->out - r0 < 16 ? (j->out - r0 > 0 ? j->out - r0 : 0) : 16;
        if (bl->rows[h] == 16) {
            bl->am[h] = (const char *)(j->w + (size_t)r0 * K);
            bl->as[h] = (long)K * 2;
            if (kfull < nks) {
                memset(tail[h], 0, 512 * sizeof(uint16_t));
                for (int r = 0; r < 16; r++)
                    memcpy(tail[h] + r * 32, j->w + (size_t)(r0 + r) * K + kfull * 32,
                           (size_t)(K - kfull * 32) * 2);
            }
            bl->at[h] = (const char *)tail[h];
            bl->ats[h] = 64;
        } else {
            memset(pad[h], 0, 16 * (size_t)Kp * 2);
            for (int r = 0; r < bl->rows[h]; r++)
                memcpy(pad[h] + (size_t)r * Kp, j->w + (size_t)(r0 + r) * K, (size_t)K * 2);
            bl->am[h] = (const char *)pad[h];
            bl->as[h] = (long)Kp * 2;
            bl->at[h] = (const char *)(pad[h] + kfull * 32);
            bl->ats[h] = bl->as[h];
        }
    }
}

/* C tiles 0-3 += the k steps [s0, s1) of the block against token blocks tb, tb + 1; the
 * pending block is flushed after the first step, and (yrows) the lines of y rows t0 .. t0 + 31
 * of this block are prefetched for writing over the first 32 steps. */
__attribute__((target(AMX_TARGET))) static inline void amx_steps(
    const struct gemm_job *j, const struct amx_block *bl, const char *b0, const char *b1, int s0,
    int s1, struct amx_pending *pend, const float *cbuf, int t0, int yrows)
{
    const char *am0 = bl->am[0], *am1 = bl->am[1];
    long as0 = bl->as[0], as1 = bl->as[1];
    if (s0 < s1) {
        _tile_loadd(4, am0 + s0 * 64, as0);
        _tile_loadd(6, b0 + (size_t)s0 * 1024, 64);
        _tile_loadd(7, b1 + (size_t)s0 * 1024, 64);
        _tile_loadd(5, am1 + s0 * 64, as1);
    }
    for (int s = s0; s < s1; s++) {
        int i = s - s0;
        if (yrows && !j->pk && i < 32 && t0 + i < j->T) { /* the block's y rows, written later */
            const char *yr = (const char *)(j->y + (size_t)(t0 + i) * j->out + bl->o0);
            _mm_prefetch(yr, _MM_HINT_ET0);
            _mm_prefetch(yr + 64, _MM_HINT_ET0);
            _mm_prefetch(yr + 124, _MM_HINT_ET0);
        }
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (s + 1 < s1) {
            int n = s + 1;
            _tile_loadd(4, am0 + n * 64, as0);
            _tile_dpbf16ps(2, 5, 6);
            _tile_loadd(6, b0 + (size_t)n * 1024, 64);
            _tile_dpbf16ps(3, 5, 7);
            _tile_loadd(7, b1 + (size_t)n * 1024, 64);
            _tile_loadd(5, am1 + n * 64, as1);
        } else {
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        if (i == 0 && pend->live)
            flush_ct(j, cbuf, pend);
    }
}

/* The k tail of a block (K not a multiple of 32): one more step on the padded tail tiles. */
__attribute__((target(AMX_TARGET))) static inline void amx_ktail(const struct gemm_job *j,
                                                                const struct amx_block *bl,
                                                                const char *b0, const char *b1)
{
    int kfull = j->K / 32, nks = j->Kp / 32;
    if (kfull < nks) {
        _tile_loadd(4, bl->at[0], bl->ats[0]);
        _tile_loadd(6, b0 + (size_t)kfull * 1024, 64);
        _tile_loadd(5, bl->at[1], bl->ats[1]);
        _tile_loadd(7, b1 + (size_t)kfull * 1024, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
}

/* A block's products done: the k tail, the pending block flushed (with swiglu it reads the
 * gate tiles of the previous token pair, which dst may be about to overwrite), the C tiles
 * stored to dst (cbuf, or gbuf: the gate's tiles kept for the up product's epilogue). */
__attribute__((target(AMX_TARGET))) static inline void amx_close(
    const struct gemm_job *j, const struct amx_block *bl, const char *b0, const char *b1,
    struct amx_pending *pend, const float *cbuf, float *dst)
{
    amx_ktail(j, bl, b0, b1);
    if (pend->live)
        flush_ct(j, cbuf, pend);
    _tile_stored(0, dst, 64);
    _tile_stored(1, dst + 256, 64);
    _tile_stored(2, dst + 512, 64);
    _tile_stored(3, dst + 768, 64);
}

/* The last k steps of a block: the k tail (K not a multiple of 32), then the C tiles to cbuf,
 * pending until the next block's first step (or the end of the job) transposes them into y. */
__attribute__((target(AMX_TARGET))) static inline void amx_finish(
    const struct gemm_job *j, const struct amx_block *bl, const char *b0, const char *b1,
    struct amx_pending *pend, float *cbuf, int t0)
{
    amx_close(j, bl, b0, b1, pend, cbuf, cbuf);
    pend->y = j->y ? j->y + (size_t)t0 * j->out + bl->o0 : NULL;
    pend->bias = j->bias ? j->bias + bl->o0 : NULL;
    pend->tn[0] = j->T - t0 < 16 ? j->T - t0 : 16;
    pend->tn[1] = j->T - t0 - 16 < 16 ? j->T - t0 - 16 : 16;
    pend->rows[0] = bl->rows[0];
    pend->rows[1] = bl->rows[1];
    pend->tb = t0 / 16;
    pend->o0 = bl->o0;
    pend->live = 1;
}

/* k steps per chunk of amx_job for ntb token blocks: AMX_XCHUNK_BYTES of packed x, at least 8;
 * k ranges up to two chunks run whole (the short-k path) */
static int amx_k_chunk_steps(int ntb)
{
    int cs = (int)(AMX_XCHUNK_BYTES / ((size_t)ntb * 1024));
    return cs < 8 ? 8 : cs;
}

/* Whether a swiglu product of width in fits amx_job: the short-k path for passes of up to per
 * rows (smaller passes only lengthen the chunks) and the up rows' tiles plus the gate's C tiles
 * in the park area. */
static int amx_swiglu_fits(int Kp, int per)
{
    int ntb = (per + 15) / 16;
    ntb += ntb & 1;
    return Kp / 32 <= 2 * amx_k_chunk_steps(ntb) &&
           (size_t)64 * Kp + 2048 + 4096 <= AMX_PARK_BYTES;
}

__attribute__((target(AMX_TARGET))) static void amx_job(const struct gemm_job *j)
{
    struct tile_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
    int K = j->K, Kp = j->Kp, nks = Kp / 32, kfull = K / 32, ntb = (j->T + 15) / 16;
    ntb += ntb & 1;
    uint16_t *pad[2] = {j->scratch, j->scratch + 16 * (size_t)Kp};
    uint16_t *tail[2] = {j->scratch + 32 * (size_t)Kp, j->scratch + 32 * (size_t)Kp + 512};
    float *cbuf = (float *)(j->scratch + 32 * (size_t)Kp + 1024);
    float *cpark = cbuf + 1024; /* AMX_PARK_BYTES: C tiles between k chunks */
    const char *xp = (const char *)j->xb;
    struct amx_pending pend = {0};
    struct amx_block bl, blu;
    /* swiglu (short k only): the up rows' edge and tail tiles and the gate's C tiles in the park
     * area (amx_swiglu_fits) */
    struct gemm_job ju = *j;
    uint16_t *padu[2] = {(uint16_t *)cpark, (uint16_t *)cpark + 16 * (size_t)Kp};
    uint16_t *tailu[2] = {(uint16_t *)cpark + 32 * (size_t)Kp,
                          (uint16_t *)cpark + 32 * (size_t)Kp + 512};
    float *gbuf = (float *)((uint16_t *)cpark + 32 * (size_t)Kp + 1024);
    if (j->swiglu) {
        ju.w = j->w + (size_t)j->out * K;
        pend.gate = gbuf;
    }
    /* k chunks only where x of all tokens is well beyond L2 (AMX_XCHUNK_BYTES per chunk of the
     * would-be L2 size: 391 x 8960 went 650 -> 800 GFLOP/s on one thread); at 1.2-1.5 MB of x
     * (K 1536) the parking of C costs more than it saves. */
    int cs = amx_k_chunk_steps(ntb);
    if (kfull <= 2 * cs) { /* one chunk: per block, every token block over the whole k range */
        for (int o0 = j->o0; o0 < j->o1; o0 += 32) {
            amx_block_setup(j, &bl, o0, pad, tail);
            if (j->swiglu)
                amx_block_setup(&ju, &blu, o0, padu, tailu);
            for (int tb = 0; tb < ntb; tb += 2) {
                const char *b0 = xp + (size_t)tb * nks * 1024, *b1 = b0 + (size_t)nks * 1024;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                amx_steps(j, &bl, b0, b1, 0, kfull, &pend, cbuf, tb * 16, 1);
                if (j->swiglu) { /* gate done: now the up rows of the same block */
                    amx_close(j, &bl, b0, b1, &pend, cbuf, gbuf);
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    amx_steps(j, &blu, b0, b1, 0, kfull, &pend, cbuf, tb * 16, 0);
                }
                amx_finish(j, j->swiglu ? &blu : &bl, b0, b1, &pend, cbuf, tb * 16);
            }
        }
    } else {
        /* long k (down_proj 8960, vision fc2 4304): groups of G blocks; per k chunk of
         * AMX_KC_L1 steps, every block of the group over every token block, the C tiles parked
         * between chunks. x of the chunk is read from L2 by the G blocks instead of the whole x
         * from L3 by every block, and a block's A tiles of the chunk (16 KB) stay in L1 across
         * the token blocks. */
        cs = AMX_KC_L1;
        int npair = ntb / 2;
        int G = (int)(AMX_PARK_BYTES / ((size_t)npair * 4096));
        if (G < 1)
            G = 1;
        for (int og = j->o0; og < j->o1; og += 32 * G) {
            int oe = og + 32 * G < j->o1 ? og + 32 * G : j->o1;
            for (int k0 = 0; k0 < kfull; k0 += cs) {
                int k1 = k0 + cs < kfull ? k0 + cs : kfull, last = k1 == kfull;
                for (int o0 = og; o0 < oe; o0 += 32) {
                    amx_block_setup(j, &bl, o0, pad, tail);
                    for (int tb = 0; tb < ntb; tb += 2) {
                        const char *b0 = xp + (size_t)tb * nks * 1024;
                        const char *b1 = b0 + (size_t)nks * 1024;
                        float *pk = cpark + ((size_t)((o0 - og) / 32) * npair + tb / 2) * 1024;
                        if (k0 == 0) {
                            _tile_zero(0);
                            _tile_zero(1);
                            _tile_zero(2);
                            _tile_zero(3);
                        } else {
                            _tile_loadd(0, pk, 64);
                            _tile_loadd(1, pk + 256, 64);
                            _tile_loadd(2, pk + 512, 64);
                            _tile_loadd(3, pk + 768, 64);
                        }
                        amx_steps(j, &bl, b0, b1, k0, k1, &pend, cbuf, tb * 16, last);
                        if (last) {
                            amx_finish(j, &bl, b0, b1, &pend, cbuf, tb * 16);
                        } else {
                            _tile_stored(0, pk, 64);
                            _tile_stored(1, pk + 256, 64);
                            _tile_stored(2, pk + 512, 64);
                            _tile_stored(3, pk + 768, 64);
                        }
                    }
                }
            }
        }
    }
    if (pend.live)
        flush_ct(j, cbuf, &pend);
    _tile_release();
}
#endif /* GEMM_X86 */

/* ---- entry ---------------------------------------------------------------------------------- */

static int kpad(int in)
{
    return (in + 31) & ~31;
}

/* Token rows per pass of the AMX path: AMX_X_L2_BYTES of packed x where that still gives a pass
 * of at least 96 rows (W is read from L3 once per pass; 96 rows keep amx_job on its short-k
 * path up to K 13,000), XCHUNK otherwise (longer k goes to amx_job's k chunks, which keep their
 * own share of x in L2). K 1152: 448 rows, 1536: 320, 4304: 96, 8960: 512. */
static int amx_rows_per_pass(int Kp)
{
    int n = (int)(AMX_X_L2_BYTES / ((size_t)Kp * 2)) & ~31;
    return n >= 96 && n < XCHUNK ? n : XCHUNK;
}

/* Rows of the pass from t0: `per`, except that no last pass is left with fewer than AMX_MIN_T
 * rows (those would go to the vdpbf16ps kernel): the one before it gives them up. */
static int pass_rows(int T, int t0, int per)
{
    int left = T - t0;
    if (left <= per)
        return left;
    return left - per < AMX_MIN_T ? left - AMX_MIN_T : per;
}

/* Per-thread scratch of amx_job, 64-byte multiples: edge rows and k tails of a block's W, the
 * C tiles, the park area. */
static size_t amx_scratch_bytes(int Kp)
{
    return ((32 * (size_t)Kp + 1024) * 2 + 4096 + AMX_PARK_BYTES + 63) & ~(size_t)63;
}

size_t vl3__cpu_gemm_bf16_work_size(void *ctx, int max_in)
{
    size_t kp = (size_t)kpad(max_in > 0 ? max_in : 0), in = (size_t)(max_in > 0 ? max_in : 0);
    size_t nt = (size_t)vl3__cpu_threads(ctx);
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    size_t native = (size_t)XCHUNK * kp * 2 + 64 +
                    nt * ((32 * kp + 1024) * 2 + 4096 + AMX_PARK_BYTES + 64);
    size_t emu = (size_t)EMU_CHUNK * in * 4 + 64 + vl3__cpu_matmul_f32_work_size(max_in);
    return native > emu ? native : emu;
}

static char *align64(void *p)
{
    return (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static int thread_count(void *ctx, double macs, int units)
{
    int nt = vl3__cpu_threads(ctx);
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if (macs < THREAD_MIN_MACS || nt < 1)
        nt = 1;
    if (nt > units)
        nt = units;
    return nt > 0 ? nt : 1;
}

/* Rows [0, T) of y (T, out) set to b. */
static void fill_bias(float *y, const float *b, int T, int out)
{
    for (int t = 0; t < T; t++)
        memcpy(y + (size_t)t * out, b, sizeof(float) * (size_t)out);
}

/* vl3__cpu_gemm_bf16 with an epilogue: y = x W^T + bias where bias is not NULL: on the AMX path
 * the bias is added in the epilogue (no pass over y), elsewhere copied into y first and
 * accumulated onto; fl(sum + bias) either way. With gelu (acc 0), y = gelu_tanh(sum + bias);
 * with bias and acc, y += (sum + bias): these two only where every row runs on AMX tiles
 * (-ENOTSUP, nothing written, elsewhere). */
static int gemm_bf16(void *ctx, float *y, const float *x, const uint16_t *w, const float *bias,
                     int gelu, int T, int in, int out, int acc, int isa, void *work,
                     size_t work_bytes)
{
    if (T <= 0)
        return T < 0 ? -EINVAL : 0;
    if (!work || work_bytes < vl3__cpu_gemm_bf16_work_size(ctx, in) || (gelu && acc))
        return -EINVAL;
    if (isa < 0 || !vl3__cpu_isa_supported(isa))
        isa = vl3__cpu_isa();
    if (gelu || (bias && acc)) { /* the AMX epilogue only: every pass of rows on tiles */
        if (isa != VL3__CPU_ISA_AMX || T < AMX_MIN_T)
            return -ENOTSUP;
    }
    int Kp = kpad(in);
    if (isa <= VL3__CPU_ISA_AVX512) {
        if (bias) {
            fill_bias(y, bias, T, out);
            acc = 1;
        }
        /* f32 kernels on rounded inputs: exact bf16 x bf16 products, f32 sums */
        float *xr = (float *)align64(work);
        size_t xr_bytes = (size_t)EMU_CHUNK * in * 4;
        char *rest = (char *)xr + xr_bytes;
        size_t rest_bytes = work_bytes - (size_t)(rest - (char *)work);
        for (int t0 = 0; t0 < T; t0 += EMU_CHUNK) {
            int tn = T - t0 < EMU_CHUNK ? T - t0 : EMU_CHUNK;
            const float *xs = x + (size_t)t0 * in;
            for (size_t i = 0; i < (size_t)tn * in; i++)
                xr[i] = vl3__cpu_bf16_to_f32(vl3__cpu_f32_to_bf16(xs[i]));
            int r = vl3__cpu_matmul_f32(ctx, y + (size_t)t0 * out, xr, w, tn, in, out, acc,
                                        isa == VL3__CPU_ISA_AVX512 ? 2 : isa, rest, rest_bytes);
            if (r < 0)
                return r;
        }
        return 0;
    }
#ifdef GEMM_X86
    char *base = align64(work);
    uint16_t *xb = (uint16_t *)base;
    char *thr = base + (size_t)XCHUNK * Kp * 2;
    size_t thr_bytes = amx_scratch_bytes(Kp);
    int per = isa == VL3__CPU_ISA_AMX ? amx_rows_per_pass(Kp) : XCHUNK;
    for (int t0 = 0, tn; t0 < T; t0 += tn) {
        tn = pass_rows(T, t0, per);
        const float *xs = x + (size_t)t0 * in;
        float *ys = y + (size_t)t0 * out;
        struct gemm_split sp = {.n = 1};
        int nt;
        if (isa == VL3__CPU_ISA_AMX && tn >= AMX_MIN_T) {
            nt = thread_count(ctx, (double)tn * in * out, (out + 31) / 32);
            pack_pass(ctx, xb, xs, tn, in, Kp, nt);
            sp.proto[0] = (struct gemm_job){.fn = amx_job, .T = tn, .K = in, .Kp = Kp,
                                            .out = out, .acc = acc, .w = w, .xb = xb, .y = ys,
                                            .bias = bias, .gelu = gelu};
            sp.unit = 32;
            sp.scratch = thr;
            sp.scratch_bytes = thr_bytes;
        } else {
            int acc_c = acc;
            if (bias) {
                fill_bias(ys, bias, tn, out);
                acc_c = 1;
            }
            round_rows(xb, xs, tn, in, Kp, isa);
            nt = thread_count(ctx, (double)tn * in * out, (out + 3) / 4);
            sp.proto[0] = (struct gemm_job){.fn = dot_job, .T = tn, .K = in, .Kp = Kp, .out = out,
                                            .acc = acc_c, .w = w, .xb = xb, .y = ys};
            sp.unit = 4;
        }
        split_run(ctx, &sp, nt);
    }
    return 0;
#else
    return VL3_E_UNSUPPORTED;
#endif
}

#ifdef GEMM_X86
/* The n products of proto (w, out, y at row 0, bias, swiglu set; the same out) on AMX tiles over
 * T >= AMX_MIN_T rows of x: per pass of rows (pass_rows) x rounded and packed once on the pool's
 * threads, then every product's output blocks split over the threads in one dispatch. macs:
 * multiply-adds per row of x, all products together (the thread count). */
static void amx_passes(void *ctx, const float *x, int T, int in, void *work,
                       const struct gemm_job *proto, int n, double macs)
{
    int Kp = kpad(in), per = amx_rows_per_pass(Kp), out = proto[0].out;
    char *base = align64(work);
    uint16_t *xb = (uint16_t *)base;
    for (int t0 = 0, tn; t0 < T; t0 += tn) {
        tn = pass_rows(T, t0, per);
        int nt = thread_count(ctx, macs * tn, (out + 31) / 32);
        pack_pass(ctx, xb, x + (size_t)t0 * in, tn, in, Kp, nt);
        struct gemm_split sp = {.n = n, .unit = 32, .scratch = base + (size_t)XCHUNK * Kp * 2,
                                .scratch_bytes = amx_scratch_bytes(Kp)};
        for (int i = 0; i < n; i++) {
            sp.proto[i] = proto[i];
            sp.proto[i].fn = amx_job;
            sp.proto[i].T = tn;
            sp.proto[i].K = in;
            sp.proto[i].Kp = Kp;
            sp.proto[i].xb = xb;
            sp.proto[i].y = proto[i].y + (size_t)t0 * proto[i].out;
        }
        split_run(ctx, &sp, nt);
    }
}
#endif

/* y[i] = x W[i]^T + b[i] for n matrices of one shape (the vision q, k, v): on AMX, x is rounded
 * and packed once per chunk of rows and every thread takes its share of each matrix's output
 * blocks in one dispatch (one pack and one product dispatch instead of n of each); the same
 * kernel on the same packed x, so the same bits as n calls. Elsewhere n calls. */
static int gemm_bf16_multi(void *ctx, const float *x, int n, const uint16_t *const *w,
                           const float *const *b, float *const *y, int T, int in, int out,
                           void *work, size_t work_bytes)
{
    int isa = vl3__cpu_isa();
    if (n < 1 || n > MULTI_MAX || T < 0 || !work ||
        work_bytes < vl3__cpu_gemm_bf16_work_size(ctx, in))
        return -EINVAL;
#ifdef GEMM_X86
    if (isa == VL3__CPU_ISA_AMX && T >= AMX_MIN_T) { /* every pass on tiles (pass_rows) */
        struct gemm_job proto[MULTI_MAX];
        for (int i = 0; i < n; i++)
            proto[i] = (struct gemm_job){.out = out, .w = w[i], .y = y[i], .bias = b[i]};
        amx_passes(ctx, x, T, in, work, proto, n, (double)in * out * n);
        return 0;
    }
#endif
    for (int i = 0; i < n; i++) {
        int r = gemm_bf16(ctx, y[i], x, w[i], b[i], 0, T, in, out, 0, isa, work, work_bytes);
        if (r < 0)
            return r;
    }
    return 0;
}

int vl3__cpu_gemm_bf16(void *ctx, float *y, const float *x, const uint16_t *w, int T, int in,
                       int out, int acc, int isa, void *work, size_t work_bytes)
{
    return gemm_bf16(ctx, y, x, w, NULL, 0, T, in, out, acc, isa, work, work_bytes);
}

/* out (T, I) = silu(x Wg^T) * (x Wu^T), W (2I, in) the gate rows then the up rows (the LLM's
 * fused gate/up matrix): on AMX tiles, each 32-row block's gate and up products per token pair,
 * the SwiGLU in the up product's epilogue (store_ct), so neither the (T, 2I) product nor a pass
 * over it exists. The same bits as vl3__cpu_gemm_bf16 into (T, 2I) followed by
 * vl3__cpu_silu_mul_fast. -ENOTSUP (nothing written) off the AMX path, below AMX_MIN_T rows, or
 * where the products would take amx_job's k-chunked path (long k). */
int vl3__cpu_gemm_bf16_swiglu(void *ctx, float *out, const float *x, const uint16_t *w, int T,
                              int in, int I, void *work, size_t work_bytes)
{
    if (T < 0 || in <= 0 || I <= 0 || !work ||
        work_bytes < vl3__cpu_gemm_bf16_work_size(ctx, in))
        return -EINVAL;
#ifdef GEMM_X86
    int Kp = kpad(in), per = amx_rows_per_pass(Kp);
    if (vl3__cpu_isa() != VL3__CPU_ISA_AMX || T < AMX_MIN_T || !amx_swiglu_fits(Kp, per))
        return -ENOTSUP;
    struct gemm_job proto = {.out = I, .w = w, .y = out, .swiglu = 1};
    amx_passes(ctx, x, T, in, work, &proto, 1, 2.0 * in * I);
    return 0;
#else
    (void)out, (void)x, (void)w;
    return -ENOTSUP;
#endif
}

/* ---- f32 weights (the vision encoder's): rounded to bf16 per call ---------------------------- */

struct conv_job {
    uint16_t *dst;
    const float *src;
    size_t n;
    int isa;
};

static void conv_task(void *arg, int k)
{
    const struct conv_job *j = (const struct conv_job *)arg + k;
    size_t i = 0;
#ifdef GEMM_X86
    if (j->isa >= VL3__CPU_ISA_AVX512)
        for (; i + 32 <= j->n; i += 32)
            round_row_avx512(j->dst + i, j->src + i, 32, 32);
#endif
    for (; i < j->n; i++)
        j->dst[i] = vl3__cpu_f32_to_bf16(j->src[i]);
}

/* bytes of work for a linear call: the ctx's scratch when free (no page faults per call), else
 * our own (*own, freed by work_release) */
static char *work_acquire(void *ctx, size_t bytes, char **own)
{
    char *buf = vl3__cpu_scratch_acquire(ctx, bytes);
    *own = NULL;
    if (!buf && posix_memalign((void **)own, 64, bytes) == 0)
        buf = *own;
    return buf;
}

static void work_release(void *ctx, char *buf, char *own)
{
    if (own)
        free(own);
    else
        vl3__cpu_scratch_release(ctx, buf);
}

/* ---- two products in a row: an MLP ---------------------------------------------------------- */

/* the scratch slots vl3__cpu_gemm_bf16_mlp carves: one per thread of the pool */
static int mlp_threads(void *ctx)
{
    int nt = vl3__cpu_threads(ctx);
    return nt < 1 ? 1 : nt > MAX_THREADS ? MAX_THREADS : nt;
}

/* Bytes of work for vl3__cpu_gemm_bf16_mlp: packed x of a pass, the threads' scratch, a chunk's
 * intermediate in the second product's packed layout. */
static size_t mlp_work_size(void *ctx, int in, int I)
{
    int Kp = kpad(in), Ip = kpad(I), km = Kp > Ip ? Kp : Ip;
    return (size_t)XCHUNK * Kp * 2 + (size_t)mlp_threads(ctx) * amx_scratch_bytes(km) +
           (size_t)XCHUNK * Ip * 2 + 128;
}

/* y (T, out) += e(x W1^T (+ b1)) W2^T (+ b2), W1 (I, in) (swiglu: (2I, in), gate rows then up
 * rows), W2 (out, I), e the tanh GELU (gelu) or the SwiGLU (swiglu): the vision encoder's MLP
 * (fc1, GELU, fc2 and the residual add) and the LLM's (gate/up, SwiGLU, down and the residual
 * add). Per chunk of rows, the first product's epilogue writes its output straight into the
 * second product's packed x (store_pk) instead of f32 rows of y that
 * the second product would read back and pack: no (T, I) f32 intermediate, no transpose of the
 * first product's C tiles, no pack pass for the second. The same bits as the two products run
 * apart (the same tile sums; the intermediate rounded to bf16 by the same instruction; both
 * products on tiles for every row). -ENOTSUP (nothing written) off AMX, below AMX_MIN_T rows,
 * or where the SwiGLU does not fit amx_job. */
int vl3__cpu_gemm_bf16_mlp(void *ctx, float *y, const float *x, const uint16_t *w1,
                           const float *b1, int act, const uint16_t *w2, const float *b2, int T,
                           int in, int I, int out)
{
    if (T < 0 || in <= 0 || I <= 0 || out <= 0 ||
        (act != VL3__CPU_MLP_GELU && act != VL3__CPU_MLP_SWIGLU) ||
        (act == VL3__CPU_MLP_SWIGLU && b1))
        return -EINVAL;
    if (T == 0)
        return 0;
#ifdef GEMM_X86
    int Kp = kpad(in), Ip = kpad(I), per = amx_rows_per_pass(Kp);
    int swiglu = act == VL3__CPU_MLP_SWIGLU;
    if (vl3__cpu_isa() != VL3__CPU_ISA_AMX || T < AMX_MIN_T ||
        (swiglu && !amx_swiglu_fits(Kp, per)))
        return -ENOTSUP;
    size_t bytes = mlp_work_size(ctx, in, I);
    char *own, *buf = work_acquire(ctx, bytes, &own);
    if (!buf)
        return -ENOMEM;
    char *base = align64(buf);
    uint16_t *xb = (uint16_t *)base;
    int km = Kp > Ip ? Kp : Ip, nks2 = Ip / 32, per2 = amx_rows_per_pass(Ip);
    size_t slot = amx_scratch_bytes(km);
    char *thr = base + (size_t)XCHUNK * Kp * 2;
    uint16_t *pk = (uint16_t *)(thr + slot * (size_t)mlp_threads(ctx));
    /* chunks of the larger of the two products' passes (multiples of 32: the passes inside a
     * chunk start on token blocks of its packed intermediate): K 1152 -> 4304 (vision) in
     * chunks of 448 rows, fc2 in passes of 96; K 1536 -> 8960 (LLM) in chunks of 512, gate/up
     * in passes of 320, down in one pass (its W read once per 512 rows, as apart) */
    int chunk = per > per2 ? per : per2;
    for (int t0 = 0; t0 < T; t0 += chunk) {
        int cn = T - t0 < chunk ? T - t0 : chunk;
        for (int p0 = 0, tn; p0 < cn; p0 += tn) {
            tn = cn - p0 < per ? cn - p0 : per;
            int nt = thread_count(ctx, (double)tn * in * I * (swiglu ? 2 : 1), (I + 31) / 32);
            pack_pass(ctx, xb, x + (size_t)(t0 + p0) * in, tn, in, Kp, nt);
            struct gemm_split sp = {.n = 1, .unit = 32, .scratch = thr, .scratch_bytes = slot};
            sp.proto[0] = (struct gemm_job){.fn = amx_job, .T = tn, .K = in, .Kp = Kp, .out = I,
                                            .w = w1, .xb = xb, .bias = b1,
                                            .gelu = act == VL3__CPU_MLP_GELU, .swiglu = swiglu,
                                            .pk = pk + (size_t)(p0 / 16) * nks2 * 512,
                                            .pk_nks = nks2};
            split_run(ctx, &sp, nt);
        }
        for (int u0 = 0, un; u0 < cn; u0 += un) {
            un = cn - u0 < per2 ? cn - u0 : per2;
            int nt2 = thread_count(ctx, (double)un * I * out, (out + 31) / 32);
            struct gemm_split s2 = {.n = 1, .unit = 32, .scratch = thr, .scratch_bytes = slot};
            s2.proto[0] = (struct gemm_job){.fn = amx_job, .T = un, .K = I, .Kp = Ip, .out = out,
                                            .acc = 1, .w = w2,
                                            .xb = pk + (size_t)(u0 / 16) * nks2 * 512,
                                            .y = y + (size_t)(t0 + u0) * out, .bias = b2};
            split_run(ctx, &s2, nt2);
        }
    }
    work_release(ctx, buf, own);
    return 0;
#else
    (void)y, (void)x, (void)w1, (void)b1, (void)w2, (void)b2;
    return -ENOTSUP;
#endif
}

int vl3__cpu_linear_bf16(void *ctx, const float *x, const float *w, const float *b, float *y,
                         int64_t P, int in, int out)
{
    if (P <= 0)
        return 0;
    if (P > INT32_MAX || in <= 0 || out <= 0)
        return -EINVAL;
    size_t n = (size_t)in * out, wb = vl3__cpu_gemm_bf16_work_size(ctx, in);
    size_t wbytes = (n * 2 + 63) & ~(size_t)63;
    char *own, *buf = work_acquire(ctx, wbytes + wb, &own);
    if (!buf)
        return -ENOMEM;
    uint16_t *wbf = (uint16_t *)buf;
    void *work = buf + wbytes;
    int isa = vl3__cpu_isa(), nt = thread_count(ctx, (double)n * 64, out);
    struct conv_job cj[MAX_THREADS];
    for (int k = 0; k < nt; k++) {
        size_t r0 = (size_t)out * k / nt, r1 = (size_t)out * (k + 1) / nt;
        cj[k] = (struct conv_job){wbf + r0 * in, w + r0 * in, (r1 - r0) * in, isa};
    }
    vl3__cpu_run(ctx, nt, conv_task, cj);
    int r = gemm_bf16(ctx, y, x, wbf, b, 0, (int)P, in, out, 0, -1, work, wb);
    work_release(ctx, buf, own);
    return r;
}

int vl3__cpu_linear_w16_ex(void *ctx, const float *x, const uint16_t *w, const float *b,
                           float *y, int64_t P, int in, int out, int flags)
{
    if (P <= 0)
        return 0;
    if (P > INT32_MAX || in <= 0 || out <= 0 || (flags & ~(VL3__VLIN_ACC | VL3__VLIN_GELU_TANH)))
        return -EINVAL;
    int acc = (flags & VL3__VLIN_ACC) != 0, gelu = (flags & VL3__VLIN_GELU_TANH) != 0;
    if ((acc && gelu) || (acc && !b)) /* not fused (y += x W^T alone: vl3__cpu_gemm_bf16) */
        return -ENOTSUP;
    size_t wb = vl3__cpu_gemm_bf16_work_size(ctx, in);
    char *own, *buf = work_acquire(ctx, wb + 64, &own);
    if (!buf)
        return -ENOMEM;
    int r = gemm_bf16(ctx, y, x, w, b, gelu, (int)P, in, out, acc, -1, buf, wb);
    work_release(ctx, buf, own);
    return r;
}

int vl3__cpu_linear_w16(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                        int64_t P, int in, int out)
{
    return vl3__cpu_linear_w16_ex(ctx, x, w, b, y, P, in, out, 0);
}

int vl3__cpu_linear_w16_n(void *ctx, const float *x, int n, const uint16_t *const *w,
                          const float *const *b, float *const *y, int64_t P, int in, int out)
{
    if (P <= 0)
        return 0;
    if (P > INT32_MAX || in <= 0 || out <= 0 || n < 1 || n > MULTI_MAX)
        return -EINVAL;
    size_t wb = vl3__cpu_gemm_bf16_work_size(ctx, in);
    char *own, *buf = work_acquire(ctx, wb + 64, &own);
    if (!buf)
        return -ENOMEM;
    int r = gemm_bf16_multi(ctx, x, n, w, b, y, (int)P, in, out, buf, wb);
    work_release(ctx, buf, own);
    return r;
}
