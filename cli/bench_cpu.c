/* bench_cpu.c: the CPU's limits that the benchmarks measure against: the memory read bandwidth
 * (bench_read_bandwidth, used by `vl3 bench llm` for its decode floor and by `vl3 bench cpu`).
 *
 * The read bandwidth is the highest of several honest ways of streaming a buffer much larger
 * than the caches: 64-bit scalar sums (what the floor used before), AVX-512 loads into four
 * accumulators, and the same with software prefetch 2 KB ahead; each with n threads over
 * disjoint slices, best of BW_REPS passes. A decode step reads its weights the same way (one
 * pass, all threads), so the best of these is the bound a decode kernel can approach. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define BW_X86 1
#endif

#include "cli.h"
#include "vl3/util.h"

#define BW_REPS 3
#define BW_MAX_THREADS 64

struct bw_job {
    const uint64_t *p;
    size_t n; /* uint64 words, a multiple of 32 */
    int method;
    uint64_t sum;
};

static void read_scalar(struct bw_job *j)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->p[i];
        s1 += j->p[i + 1];
        s2 += j->p[i + 2];
        s3 += j->p[i + 3];
    }
    j->sum = s0 ^ s1 ^ s2 ^ s3;
}

#ifdef BW_X86
__attribute__((target("avx512f"))) static void read_avx512(struct bw_job *j, int prefetch)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const char *p = (const char *)j->p;
    size_t bytes = j->n * 8;
    for (size_t i = 0; i + 256 <= bytes; i += 256) {
        if (prefetch) {
            _mm_prefetch(p + i + 2048, _MM_HINT_T0);
            _mm_prefetch(p + i + 2048 + 64, _MM_HINT_T0);
            _mm_prefetch(p + i + 2048 + 128, _MM_HINT_T0);
            _mm_prefetch(p + i + 2048 + 192, _MM_HINT_T0);
        }
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 64)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 128)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    j->sum = (uint64_t)_mm512_reduce_add_epi64(s);
}
#endif

static void *bw_run(void *arg)
{
    struct bw_job *j = arg;
#ifdef BW_X86
    if (j->method > 0) {
        read_avx512(j, j->method == 2);
        return NULL;
    }
#endif
    read_scalar(j);
    return NULL;
}

static const char *const method_names[3] = {"scalar 64-bit sums", "AVX-512 loads",
                                            "AVX-512 loads + prefetch"};

double bench_read_bandwidth(int n_threads, unsigned long bytes, const char **ret_method)
{
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > BW_MAX_THREADS)
        n_threads = BW_MAX_THREADS;
    size_t words_per = bytes / 8 / (size_t)n_threads / 32 * 32;
    uint64_t *buf = NULL;
    if (words_per == 0 || posix_memalign((void **)&buf, 64, words_per * 8 * n_threads) != 0)
        return 0;
    memset(buf, 1, words_per * 8 * n_threads);
    int n_methods = 1;
#ifdef BW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        n_methods = 3;
#endif
    double best = 0;
    int best_m = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < BW_REPS; rep++)
        for (int m = 0; m < n_methods; m++) {
            pthread_t th[BW_MAX_THREADS];
            int started[BW_MAX_THREADS] = {0};
            struct bw_job jobs[BW_MAX_THREADS];
            double t0 = vl3_time_s();
            for (int i = 0; i < n_threads; i++) {
                jobs[i] = (struct bw_job){buf + words_per * i, words_per, m, 0};
                if (i > 0)
                    started[i] = pthread_create(&th[i], NULL, bw_run, &jobs[i]) == 0;
            }
            bw_run(&jobs[0]);
            for (int i = 1; i < n_threads; i++) {
                if (started[i])
                    pthread_join(th[i], NULL);
                else
                    bw_run(&jobs[i]);
            }
            double dt = vl3_time_s() - t0;
            for (int i = 0; i < n_threads; i++)
                sink ^= jobs[i].sum;
            double bw = (double)(words_per * 8 * n_threads) / dt;
            if (bw > best) {
                best = bw;
                best_m = m;
            }
        }
    (void)sink;
    free(buf);
    if (ret_method)
        *ret_method = method_names[best_m];
    return best;
}
