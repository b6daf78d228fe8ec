/* read_stream.c: a plain streaming read with AVX-512 loads and the single-token kernels'
 * software prefetches (gemm_bf16.c): the yardstick those kernels are measured against. The
 * bandwidth probe behind the decode floor of `vl3 bench llm` and `vl3 bench cpu` and the read
 * row of test-cpu-bf16's bench_gemm both call it, so the floor and the side-by-side read memory
 * the same way. */
#include "cpu_ops.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) uint64_t vl3__cpu_read_stream(const void *p, size_t bytes,
                                                                 int prefetch)
{
    const char *b = p;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 256 <= bytes; i += 256) {
        if (prefetch > 0)
            for (int l = 0; l < 256; l += 64)
                _mm_prefetch(b + i + VL3__CPU_PREFETCH_L1 + l, _MM_HINT_T0);
        if (prefetch > 1)
            for (int l = 0; l < 256; l += 64)
                _mm_prefetch(b + i + VL3__CPU_PREFETCH_L2 + l, _MM_HINT_T1);
        a0 = _mm512_add_epi64(a0, _mm512_loadu_si512((const void *)(b + i)));
        a1 = _mm512_add_epi64(a1, _mm512_loadu_si512((const void *)(b + i + 64)));
        a2 = _mm512_add_epi64(a2, _mm512_loadu_si512((const void *)(b + i + 128)));
        a3 = _mm512_add_epi64(a3, _mm512_loadu_si512((const void *)(b + i + 192)));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}
#else
uint64_t vl3__cpu_read_stream(const void *p, size_t bytes, int prefetch)
{
    (void)p, (void)bytes, (void)prefetch;
    return 0; /* callers check for AVX-512 first */
}
#endif
