/* attention.cuh: host launchers of the flash-style attention kernels (attention.cu). Device
 * pointers unless said otherwise; each returns 0, -22 (bad arguments) or -1 (launch failure). */
#ifndef VL3_CUDA_ATTENTION_CUH
#define VL3_CUDA_ATTENTION_CUH

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Causal GQA attention of backend.h's attention op on bf16 rows and pools: seqs_dev (n_seqs, 4)
 * int32 {q_row, n_q, n_past, 0}, tables_dev (n_seqs, max_pages) int32 block tables; n_rows: the
 * number of query rows to cover (max q_row + n_q); max_keys: the longest row's key count
 * (max n_past + n_q; sizes the blocks). head_dim <= 256. */
int cuda_attention_paged_bf16(void *out, const void *q, int q_stride, int out_stride,
                              int n_heads, int n_kv_heads, int D, float scale,
                              const void *k_pages, const void *v_pages, int page_size,
                              const int32_t *seqs_dev, const int32_t *tables_dev, int max_pages,
                              int n_seqs, int n_rows, int max_keys, void *stream);
/* The vision op attention_blocks (f32; q, k, v, out (P, H*D); cu (n_blocks + 1) row offsets
 * covering rows 0..P, ascending, in device memory, and the same in host memory as cu_host),
 * scale 1/sqrt(D). */
int cuda_attention_blocks(const float *q, const float *k, const float *v, float *out,
                          const int64_t *cu, const int64_t *cu_host, int n_blocks, int64_t P,
                          int H, int D, void *stream);
#ifdef __cplusplus
}
#endif

#endif
