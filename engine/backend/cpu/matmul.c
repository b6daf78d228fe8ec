/* matmul.c: y = x W^T (+ b) (+ y) with bf16 weights and f32 activations.
 *
 * Why bf16 weights on the CPU: a decode step is memory-bound (every weight is
 * read once per token), so the bytes per weight set the speed. Measured on this
 * project's build machine (2 vCPUs of an AVX-512 EPYC, loaded by other jobs),
 * one 17920 x 1536 product (the fused gate/up of the 2B): OpenBLAS sgemv on f32
 * weights 9.8 ms (11 GB/s); the AVX-512 bf16 kernel below 4.3 ms (12.7 GB/s of
 * bf16), i.e. 2.2x faster, and the weights take half the memory (3.1 GB for the
 * 2B LLM instead of 6.2 GB). So:
 *   - T <= SMALL_T rows (decode, batched decode): our kernel reads each bf16
 * weight row once from memory, widens it in registers (bf16 -> f32 is a 16-bit
 * shift) and accumulates the rows of x against it in groups of GROUP_T (the W
 * row stays in L1 between groups); rows of W are split over the context's pool threads
 * for large products. AVX-512, AVX2+FMA and plain C versions, picked at run
 * time (the build is not -march=native).
 *   - larger T (prefill): compute-bound, so OpenBLAS sgemm does the work; W is
 * widened to f32 ROW_BLOCK rows at a time into the caller's scratch
 * (matmul_work_size), and sgemm writes the matching columns of y. The widening
 * costs one pass over W per call, small next to the 2*T*in*out FLOPs for the T
 * this path is used for. */
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "cpu_ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_X86 1
#endif

#define SMALL_T 32 /* rows of x handled by the bf16 kernel (decode batches) */
#define GROUP_T 8  /* rows of x accumulated together against one widened W row \
                    */
#define ROW_BLOCK 256 /* weight rows widened per sgemm call */
#define MAX_THREADS 64
#define THREAD_MIN_MACS                                                        \
  (1 << 20) /* below this a product runs on the calling thread */

/* 0 = plain C, 1 = AVX2+FMA, 2 = AVX-512F; probed once (pthread_once). Tests
 * may force a level with vl3__cpu_set_simd (-1 = back to the probed one). Read
 * with relaxed atomics. */
static int simd_forced = -1, simd_probed;
static pthread_once_t simd_once = PTHREAD_ONCE_INIT;

void vl3__cpu_set_simd(int level);
void vl3__cpu_set_simd(int level) {
  __atomic_store_n(&simd_forced, level, __ATOMIC_RELAXED);
}

static void simd_probe(void) {
  int level = 0;
#ifdef CPU_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    level = 2;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    level = 1;
#endif
  simd_probed = level;
}

static int simd_level(void) {
  int f = __atomic_load_n(&simd_forced, __ATOMIC_RELAXED);
  if (f >= 0)
    return f;
  pthread_once(&simd_once, simd_probe);
  return simd_probed;
}

struct mm_job {
  int o0, o1, T, in, out, acc, simd;
  const uint16_t *w;
  const float *x;
  float *y;
};

static void rows_c(const struct mm_job *j) {
  for (int o = j->o0; o < j->o1; o++) {
    const uint16_t *r = j->w + (size_t)o * j->in;
    for (int t = 0; t < j->T; t++) {
      const float *x = j->x + (size_t)t * j->in;
      float s = 0;
      for (int i = 0; i < j->in; i++)
        s += vl3__cpu_bf16_to_f32(r[i]) * x[i];
      float *y = j->y + (size_t)t * j->out + o;
      *y = j->acc ? *y + s : s;
    }
  }
}

#ifdef CPU_X86
__attribute__((target("avx2,fma"))) static void
rows_avx2(const struct mm_job *j) {
  int in = j->in, n8 = in & ~7;
  for (int o = j->o0; o < j->o1; o++) {
    const uint16_t *r = j->w + (size_t)o * in;
    for (int t0 = 0; t0 < j->T; t0 += GROUP_T) {
      int tn = j->T - t0 < GROUP_T ? j->T - t0 : GROUP_T;
      __m256 acc[GROUP_T];
      for (int t = 0; t < tn; t++)
        acc[t] = _mm256_setzero_ps();
      for (int i = 0; i < n8; i += 8) {
        __m256 w = _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(r + i))),
            16));
        for (int t = 0; t < tn; t++)
          acc[t] = _mm256_fmadd_ps(
              w, _mm256_loadu_ps(j->x + (size_t)(t0 + t) * in + i), acc[t]);
      }
      for (int tt = 0; tt < tn; tt++) {
        int t = t0 + tt;
        __m256 a = acc[tt];
        __m128 h =
            _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        float s = _mm_cvtss_f32(h);
        for (int i = n8; i < in; i++)
          s += vl3__cpu_bf16_to_f32(r[i]) * j->x[(size_t)t * in + i];
        float *y = j->y + (size_t)t * j->out + o;
        *y = j->acc ? *y + s : s;
      }
    }
  }
}

__attribute__((target("avx512f"))) static void
rows_avx512(const struct mm_job *j) {
  int in = j->in, n16 = in & ~15;
  for (int o = j->o0; o < j->o1; o++) {
    const uint16_t *r = j->w + (size_t)o * in;
    if (j->T ==
        1) { /* decode of one sequence: two accumulators to hide FMA latency */
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      int i = 0;
      for (; i + 32 <= n16; i += 32) {
        __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r + i))),
            16));
        __m512 w1 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                  (const __m256i *)(r + i + 16))),
                              16));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(j->x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(j->x + i + 16), a1);
      }
      for (; i < n16; i += 16) {
        __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r + i))),
            16));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(j->x + i), a0);
      }
      float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
      for (i = n16; i < in; i++)
        s += vl3__cpu_bf16_to_f32(r[i]) * j->x[i];
      j->y[o] = j->acc ? j->y[o] + s : s;
      continue;
    }
    for (int t0 = 0; t0 < j->T; t0 += GROUP_T) {
      int tn = j->T - t0 < GROUP_T ? j->T - t0 : GROUP_T;
      __m512 acc[GROUP_T];
      for (int t = 0; t < tn; t++)
        acc[t] = _mm512_setzero_ps();
      for (int i = 0; i < n16; i += 16) {
        __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r + i))),
            16));
        for (int t = 0; t < tn; t++)
          acc[t] = _mm512_fmadd_ps(
              w, _mm512_loadu_ps(j->x + (size_t)(t0 + t) * in + i), acc[t]);
      }
      for (int tt = 0; tt < tn; tt++) {
        int t = t0 + tt;
        float s = _mm512_reduce_add_ps(acc[tt]);
        for (int i = n16; i < in; i++)
          s += vl3__cpu_bf16_to_f32(r[i]) * j->x[(size_t)t * in + i];
        float *y = j->y + (size_t)t * j->out + o;
        *y = j->acc ? *y + s : s;
      }
    }
  }
}
#endif

static void rows_task(void *arg, int k) {
  const struct mm_job *j = (const struct mm_job *)arg + k;
#ifdef CPU_X86
  if (j->simd == 2) {
    rows_avx512(j);
    return;
  }
  if (j->simd == 1) {
    rows_avx2(j);
    return;
  }
#endif
  rows_c(j);
}

size_t vl3__cpu_matmul_f32_work_size(int max_in) {
  return (size_t)ROW_BLOCK * (size_t)(max_in > 0 ? max_in : 0) * sizeof(float);
}

size_t vl3__cpu_matmul_work_size(void *ctx, int max_in) {
  if (vl3__cpu_precision(ctx) == VL3__CPU_PREC_BF16)
    return vl3__cpu_gemm_bf16_work_size(ctx, max_in);
  return vl3__cpu_matmul_f32_work_size(max_in);
}

int vl3__cpu_matmul(void *ctx, void *y_, const void *x_, const void *w_,
                    const void *b_, int T, int in, int out, int accumulate,
                    void *work, size_t work_bytes) {
  float *y = y_;
  const float *x = x_, *b = b_;
  const uint16_t *w = w_;
  if (T == 0)
    return 0;
  if (T < 0 || in <= 0 || out <= 0)
    return -EINVAL;
  int acc = accumulate;
  if (b) { /* fold the bias in first; the products are then accumulated onto it
            */
    for (int t = 0; t < T; t++) {
      float *yr = y + (size_t)t * out;
      if (accumulate)
        for (int o = 0; o < out; o++)
          yr[o] += b[o];
      else
        memcpy(yr, b, (size_t)out * sizeof(float));
    }
    acc = 1;
  }
  if (vl3__cpu_precision(ctx) == VL3__CPU_PREC_BF16)
    return vl3__cpu_gemm_bf16(ctx, y, x, w, T, in, out, acc, -1, work,
                              work_bytes);
  return vl3__cpu_matmul_f32(ctx, y, x, w, T, in, out, acc, simd_level(), work,
                             work_bytes);
}

/* The LLM MLP's gate/up product and SwiGLU in one op: bf16 mode on AMX only
 * (vl3__cpu_gemm_bf16_swiglu); -ENOTSUP elsewhere, and the engine runs matmul
 * and silu_mul. */
int vl3__cpu_matmul_swiglu(void *ctx, void *out, const void *x, const void *w_gu,
                           int T, int in, int n_inter, void *work,
                           size_t work_bytes) {
  if (vl3__cpu_precision(ctx) != VL3__CPU_PREC_BF16)
    return -ENOTSUP;
  return vl3__cpu_gemm_bf16_swiglu(ctx, out, x, w_gu, T, in, n_inter, work,
                                   work_bytes);
}

int vl3__cpu_mlp_swiglu(void *ctx, void *y, const void *x, const void *w_gu,
                        const void *w_down, int T, int in, int n_inter) {
  if (vl3__cpu_precision(ctx) != VL3__CPU_PREC_BF16)
    return -ENOTSUP;
  return vl3__cpu_gemm_bf16_mlp(ctx, y, x, w_gu, NULL, VL3__CPU_MLP_SWIGLU,
                                w_down, NULL, T, in, n_inter, in);
}

/* The f32 product (the f32 precision mode, and the bf16 mode's fallback on
 * rounded inputs): bias already folded into y (acc set); simd 0/1/2. */
int vl3__cpu_matmul_f32(void *ctx, float *y, const float *x, const uint16_t *w,
                        int T, int in, int out, int acc, int simd, void *work,
                        size_t work_bytes) {
  if (T <= SMALL_T) {
    int nt = vl3__cpu_threads(ctx);
    double macs = (double)T * in * out;
    if (nt > MAX_THREADS)
      nt = MAX_THREADS;
    if (macs < THREAD_MIN_MACS || nt < 1)
      nt = 1;
    if (nt > out)
      nt = out;
    struct mm_job jobs[MAX_THREADS];
    for (int k = 0; k < nt; k++)
      jobs[k] = (struct mm_job){.o0 = (int)((long long)out * k / nt),
                                .o1 = (int)((long long)out * (k + 1) / nt),
                                .T = T,
                                .in = in,
                                .out = out,
                                .acc = acc,
                                .simd = simd,
                                .w = w,
                                .x = x,
                                .y = y};
    vl3__cpu_run(ctx, nt, rows_task, jobs);
    return 0;
  }
  if (!work || work_bytes < vl3__cpu_matmul_f32_work_size(in))
    return -EINVAL;
  float *wf = work;
  for (int o0 = 0; o0 < out; o0 += ROW_BLOCK) {
    int rb = out - o0 < ROW_BLOCK ? out - o0 : ROW_BLOCK;
    const uint16_t *src = w + (size_t)o0 * in;
    for (size_t i = 0; i < (size_t)rb * in; i++)
      wf[i] = vl3__cpu_bf16_to_f32(src[i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rb, in, 1.0f, x, in,
                wf, in, acc ? 1.0f : 0.0f, y + o0, out);
  }
  return 0;
}
