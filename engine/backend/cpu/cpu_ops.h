/* cpu_ops.h: prototypes of the CPU backend's ops, one .c file per op family in this directory,
 * gathered into the vtable by backend_cpu.c. Internal to engine/backend/cpu. */
#ifndef VL3_CPU_OPS_H
#define VL3_CPU_OPS_H

#include "backend.h"

/* mem.c: memory, transfers, weight conversion */
int vl3__cpu_alloc(void *ctx, size_t nbytes, void **ret_ptr, vl3_error *reterr);
void vl3__cpu_dealloc(void *ctx, void *ptr);
int vl3__cpu_upload(void *ctx, void *dst, const void *src_host, size_t n);
int vl3__cpu_download(void *ctx, void *dst_host, const void *src, size_t n);
int vl3__cpu_synchronize(void *ctx);
int vl3__cpu_weight_dtype(void *ctx);
size_t vl3__cpu_weight_bytes(void *ctx, size_t n);
int vl3__cpu_weight_convert(void *ctx, void *dst, const void *src_host, int src_dtype, size_t n);
float vl3__cpu_bf16_to_f32(uint16_t h);
float vl3__cpu_f16_to_f32(uint16_t h);

/* matmul.c */
int vl3__cpu_matmul(void *ctx, void *y, const void *x, const void *w, const void *b, int T,
                    int in, int out, int accumulate, void *work, size_t work_bytes);
size_t vl3__cpu_matmul_work_size(void *ctx, int max_in);
/* backend op matmul_swiglu: bf16 mode on AMX (vl3__cpu_gemm_bf16_swiglu), else -ENOTSUP */
int vl3__cpu_matmul_swiglu(void *ctx, void *out, const void *x, const void *w_gu, int T, int in,
                           int n_inter, void *work, size_t work_bytes);
/* backend op mlp_swiglu: bf16 mode on AMX (vl3__cpu_gemm_bf16_mlp), else -ENOTSUP */
int vl3__cpu_mlp_swiglu(void *ctx, void *y, const void *x, const void *w_gu, const void *w_down,
                        int T, int in, int n_inter);
/* The f32 product alone (bias folded by the caller; simd 0 = C, 1 = AVX2, 2 = AVX-512) and its
 * scratch: the f32 precision mode, exactly the numerics the oracle tests pin. */
int vl3__cpu_matmul_f32(void *ctx, float *y, const float *x, const uint16_t *w, int T, int in,
                        int out, int acc, int simd, void *work, size_t work_bytes);
size_t vl3__cpu_matmul_f32_work_size(int max_in);

/* Precision modes of the CPU backend (backend_cpu.c): f32 (today's numerics, the oracle) or bf16
 * (x rounded to bf16 before each weight product, f32 accumulation: gemm_bf16.c). Chosen at init
 * from VL3_PRECISION=f32|bf16|auto (auto = bf16 where the CPU has AVX512-BF16 or AMX; unset =
 * f32). */
enum vl3__cpu_precision { VL3__CPU_PREC_F32, VL3__CPU_PREC_BF16 };
int vl3__cpu_precision(void *ctx);
void vl3__cpu_set_precision(void *ctx, int precision);
/* Parse "f32" / "bf16" / "auto" (auto resolved against this CPU); -EINVAL otherwise. */
int vl3__cpu_precision_parse(const char *s);

/* Software prefetch distances of the single-token weight streams, bytes ahead of the load: to
 * L1 and to L2 (the measurements: gemm_bf16.c) */
#define VL3__CPU_PREFETCH_L1 2048
#define VL3__CPU_PREFETCH_L2 8192

/* read_stream.c: read bytes (rounded down to 256) with AVX-512 loads; prefetch 0: none, 1: to
 * L1 VL3__CPU_PREFETCH_L1 ahead, 2: also to L2 VL3__CPU_PREFETCH_L2 ahead. Returns a sum of the
 * 64-bit words (to keep the loads). x86-64 with AVX-512 only: callers check the CPU first. */
uint64_t vl3__cpu_read_stream(const void *p, size_t bytes, int prefetch);

/* gemm_bf16.c: instruction-set paths of the bf16 product */
enum vl3__cpu_isa {
    VL3__CPU_ISA_C,
    VL3__CPU_ISA_AVX2,
    VL3__CPU_ISA_AVX512,
    VL3__CPU_ISA_AVX512BF16,
    VL3__CPU_ISA_AMX,
    VL3__CPU_ISA_COUNT
};
const char *vl3__cpu_isa_name(int isa);
int vl3__cpu_isa_parse(const char *s);
/* Whether this CPU (and kernel, for AMX) can run the path. */
int vl3__cpu_isa_supported(int isa);
/* The path in use: forced by vl3__cpu_set_isa (-1 = not forced), else VL3_CPU_ISA when
 * supported, else the best supported. */
int vl3__cpu_isa(void);
void vl3__cpu_set_isa(int isa);
/* Whether the CPU computes bf16 products natively (AVX512-BF16 or AMX). */
int vl3__cpu_bf16_native(void);
/* y (T, out) [+]= bf16(x) W^T with f32 sums; isa < 0 = vl3__cpu_isa(). work: the size below. */
int vl3__cpu_gemm_bf16(void *ctx, float *y, const float *x, const uint16_t *w, int T, int in,
                       int out, int acc, int isa, void *work, size_t work_bytes);
size_t vl3__cpu_gemm_bf16_work_size(void *ctx, int max_in);
/* out (T, I) = silu(bf16(x) Wg^T) * (bf16(x) Wu^T), W (2I, in) gate rows then up rows, fused on
 * AMX tiles (the bits of the product followed by the SwiGLU pass); -ENOTSUP where it does not
 * apply (then nothing is written). work: vl3__cpu_gemm_bf16_work_size(in). */
int vl3__cpu_gemm_bf16_swiglu(void *ctx, float *out, const float *x, const uint16_t *w, int T,
                              int in, int n_inter, void *work, size_t work_bytes);
/* The vision encoder's linear op in bf16 mode: y (P, out) = bf16(x) bf16(W)^T + b with f32 W
 * (out, in) rounded per call (threads), f32 sums. */
int vl3__cpu_linear_bf16(void *ctx, const float *x, const float *w, const float *b, float *y,
                         int64_t P, int in, int out);
/* The same with W already bf16 (the checkpoint's bytes, used in place: vision ops linear_bf16). */
int vl3__cpu_linear_w16(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                        int64_t P, int in, int out);
/* The same with the consumer fused into the AMX epilogue (vision ops linear_bf16_ex: flags
 * VL3__VLIN_GELU_TANH, or VL3__VLIN_ACC with a bias): -ENOTSUP, nothing written, where any row
 * would not run on AMX tiles. */
int vl3__cpu_linear_w16_ex(void *ctx, const float *x, const uint16_t *w, const float *b,
                           float *y, int64_t P, int in, int out, int flags);
/* Two products in a row, the first one's output handed to the second packed (gemm_bf16.c):
 * y (T, out) += e(x W1^T (+ b1)) W2^T (+ b2), e the tanh GELU (W1 (n_inter, in)) or the
 * SwiGLU (W1 (2 n_inter, in), gate rows then up rows; b1 NULL); W2 (out, n_inter); the same
 * bits as the products apart; -ENOTSUP, nothing written, off AMX or below 16 rows. */
#define VL3__CPU_MLP_GELU 1
#define VL3__CPU_MLP_SWIGLU 2
int vl3__cpu_gemm_bf16_mlp(void *ctx, float *y, const float *x, const uint16_t *w1,
                           const float *b1, int act, const uint16_t *w2, const float *b2, int T,
                           int in, int n_inter, int out);
/* n (1..4) products of one x, W[i] bf16 (out, in), bias b[i] (may be NULL): y[i] = x W[i]^T +
 * b[i], the same bits as n linear_w16 calls; on AMX x is packed once (vision ops
 * linear_bf16_n). */
int vl3__cpu_linear_w16_n(void *ctx, const float *x, int n, const uint16_t *const *w,
                          const float *const *b, float *const *y, int64_t P, int in, int out);

/* backend_cpu.c: the context's thread count; whether it runs in bf16 mode (VL3_PRECISION) */
int vl3__cpu_threads(void *ctx);
/* A ctx-owned scratch of at least nbytes (64-byte aligned), held until released; NULL when ctx
 * is NULL, another caller holds it, or memory is short (then allocate your own). */
void *vl3__cpu_scratch_acquire(void *ctx, size_t nbytes);
void vl3__cpu_scratch_release(void *ctx, void *p);
int vl3__cpu_bf16_mode(void *ctx);
/* Round an f32 to bf16 (nearest even; NaN stays NaN). */
uint16_t vl3__cpu_f32_to_bf16(float f);

/* rope.c: the rotary frequency 1 / theta^(i2 / dim) for the even index i2 = 2i, computed in
 * float32 step by step as the reference builds its inv_freq buffer (transformers Qwen2 and the
 * vision encoder's VisionRotaryEmbedding: 1.0 / (theta ** (arange(0, dim, 2).float() / dim))).
 * A double computation rounds once and differs from it by 1-3 ulp in about half the entries. */
float vl3__cpu_rope_inv_freq(float theta, int i2, int dim);

/* norm.c */
int vl3__cpu_rmsnorm(void *ctx, void *y, const void *x, const void *w, int T, int C, float eps);

/* rope.c */
int vl3__cpu_rope(void *ctx, void *x, int T, int stride, int n_heads, int D, const void *pos,
                  float theta);

/* attention.c: vl3__cpu_attention runs prefill chunks on AMX in bf16 mode where the CPU has it,
 * everything else on the f32 path */
int vl3__cpu_attention(void *ctx, const struct vl3__attn_args *a);
int vl3__cpu_attention_f32(void *ctx, const struct vl3__attn_args *a);
int vl3__cpu_kv_store(void *ctx, void *k_pages, void *v_pages, const void *qkv, int qkv_stride,
                      int k_off, int v_off, int kv_dim, const void *slots, int T, int kv_dtype);
size_t vl3__cpu_attention_work_size(void *ctx, int max_q, int n_ctx, int n_heads);
/* attention_decode.c: sequences of n_q <= 16 over bf16 pools on AVX-512 (-ENOTSUP without),
 * on AMX tiles where present and a GQA group's query vectors fit one tile */
int vl3__cpu_attention_decode_bf16(void *ctx, const struct vl3__attn_args *a);
/* Which kernel runs the decode items on a CPU with AMX (attention_decode.c): VL3__DEC_AVX512,
 * VL3__DEC_AMX or VL3__DEC_HYBRID (scores on tiles, the rest on AVX-512); -1: from
 * VL3_DECODE_ATTN=avx512|amx|hybrid, default hybrid. Without AMX the items run on AVX-512. */
enum { VL3__DEC_AVX512 = 0, VL3__DEC_AMX = 1, VL3__DEC_HYBRID = 2 };
void vl3__cpu_set_decode_kernel(int kernel);

/* attention_amx.c: the same attention (and the vision encoder's block attention) on AMX tiles in
 * bf16 with f32 accumulation. -ENOTSUP when the CPU or kernel lacks AMX-BF16. */
int vl3__cpu_amx_available(void);
int vl3__cpu_attention_amx(void *ctx, const struct vl3__attn_args *a);
int vl3__cpu_attention_blocks_amx(void *ctx, const float *q, const float *k, const float *v,
                                  float *out, const int64_t *cu, int n_blocks, int H, int D);
/* Load this thread's tile configuration (all eight tiles 16 rows x 64 bytes) / release it */
void vl3__cpu_amx_tiles_on(void);
void vl3__cpu_amx_tiles_off(void);
/* Measured TDPBF16PS throughput of n_threads threads in GFLOP/s (0 without AMX): the roof. */
double vl3__cpu_amx_peak_gflops(int n_threads);

/* parallel.c: the context's thread pool. vl3__cpu_run runs fn(arg, k) once for every k in
 * [0, n) on the pool's workers and the calling thread, returning when all have run (a busy pool,
 * e.g. a nested call, runs the tasks on threads made for the call). */
struct vl3__cpu_pool;
typedef void (*vl3__cpu_task_fn)(void *arg, int k);
int vl3__cpu_pool_new(int n_threads, struct vl3__cpu_pool **ret_pool);
void vl3__cpu_pool_free(struct vl3__cpu_pool *pool);
void vl3__cpu_run(void *ctx, int n, vl3__cpu_task_fn fn, void *arg);
/* backend_cpu.c: the context's pool (NULL for a NULL context) */
struct vl3__cpu_pool *vl3__cpu_pool_of(void *ctx);
/* fn(arg, lo, hi) over [0, n) split across the context's threads, at least min_per_thread units
 * each (fewer: inline). Ranges are contiguous and computed as one loop would. */
typedef void (*vl3__cpu_range_fn)(void *arg, int64_t lo, int64_t hi);
void vl3__cpu_parallel(void *ctx, int64_t n, int64_t min_per_thread, vl3__cpu_range_fn fn,
                       void *arg);

/* activations_avx512.c: bf16 mode's tanh GELU and SwiGLU (-ENOTSUP without AVX-512) */
int vl3__cpu_gelu_tanh_fast(void *ctx, float *x, int64_t n);
/* LayerNorm with f32 sums on AVX-512 (bf16 mode; f32 mode sums in double) */
int vl3__cpu_layernorm_fast(void *ctx, const float *x, const float *w, const float *b, float *y,
                            int64_t P, int C, float eps);
int vl3__cpu_silu_mul_fast(void *ctx, float *out, const float *gu, int T, int n_inter);
/* The vision encoder's exact elementwise ops on AVX-512 (the same bits as the scalar loops; both
 * modes): y += x (n values) split over the context's threads, and the rotate-half of H heads of
 * D values in place by cs/sn (D/2 values each). -ENOTSUP without AVX-512. */
int vl3__cpu_vadd_fast(void *ctx, float *y, const float *x, int64_t n);
int vl3__cpu_rotate_half_fast(float *x, const float *cs, const float *sn, int H, int D);

/* elementwise.c: silu_mul, add, embed, argmax, copy_rows */
int vl3__cpu_silu_mul(void *ctx, void *out, const void *gu, int T, int n_inter);
int vl3__cpu_add(void *ctx, void *y, const void *a, const void *b, size_t n);
int vl3__cpu_embed(void *ctx, void *out, const void *table, const void *ids, int T, int C);
int vl3__cpu_argmax(void *ctx, int32_t *ret_host, const void *x, int R, int n);
int vl3__cpu_copy_rows(void *ctx, void *dst, size_t dst_stride, const void *src, size_t src_stride,
                       int n_rows, size_t row_bytes);
int vl3__cpu_scatter_rows(void *ctx, void *dst, const void *src, const void *idx, int n, int C);

#endif
