/* elementwise.cuh: host launchers of the small kernels of elementwise.cu. Device pointers; every
 * launcher returns 0, -22 (bad arguments) or -1 (launch failure). */
#ifndef VL3_CUDA_ELEMENTWISE_CUH
#define VL3_CUDA_ELEMENTWISE_CUH

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* y = a + b over n bf16 (resp. f32) elements; y may alias a or b. */
int cuda_add_bf16(void *y, const void *a, const void *b, int64_t n, void *stream);
int cuda_add_f32(float *y, const float *a, const float *b, int64_t n, void *stream);
/* y (bf16) = x (f32) rounded to nearest even, n elements. */
int cuda_f32_to_bf16(void *y, const float *x, int64_t n, void *stream);
/* out (T, C) bf16 = rows ids[t] of the bf16 table (V, C). */
int cuda_embed_bf16(void *out, const void *table, const int32_t *ids, int T, int C,
                    void *stream);
/* dst (bf16) row idx[j] = src (f32) row j rounded to bf16, j < n; rows of C values. */
int cuda_scatter_rows_bf16(void *dst, const float *src, const int32_t *idx, int n, int C,
                           void *stream);
/* For t < T: K pool row slots[t] = qkv[t, k_off:k_off+kv_dim], V likewise from v_off; bf16;
 * row t of qkv starts at t * qkv_stride elements; pool rows are kv_dim elements. */
int cuda_kv_store_bf16(void *k_pages, void *v_pages, const void *qkv, int qkv_stride, int k_off,
                       int v_off, int kv_dim, const int32_t *slots, int T, void *stream);
/* n_rows rows of row_bytes from src (stride src_stride bytes) to dst (dst_stride); rows must not
 * overlap. */
int cuda_copy_rows(void *dst, size_t dst_stride, const void *src, size_t src_stride, int n_rows,
                   size_t row_bytes, void *stream);
/* In place over n f32: tanh GELU (erf_form 0) or exact erf GELU (erf_form 1). */
int cuda_gelu(float *x, int64_t n, int erf_form, void *stream);
/* The vision downsample of one frame (backend.h): m = 1 copies, m = 2 averages 4 rows. */
int cuda_downsample(const float *x, float *y, int gh, int gw, int m, int C, void *stream);
#ifdef __cplusplus
}
#endif

#endif
