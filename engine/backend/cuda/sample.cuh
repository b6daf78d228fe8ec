/* sample.cuh: host launcher of the per-row sampling kernel (top-k, top-p, temperature and
 * repetition penalty on f32 logits; one id per row out). */
#ifndef VL3_CUDA_SAMPLE_CUH
#define VL3_CUDA_SAMPLE_CUH

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* One row's parameters, laid out as struct vl3__sample_row of backend.h (backend_cuda.c checks
 * the layout). */
struct cuda_sample_row {
    double u;
    float temperature, top_p, repetition_penalty;
    int32_t top_k, hist_off, n_hist;
};

/* out[r] = the id drawn from row r of x (R, n) f32 with rows[r] (device), penalty histories in
 * hist (device); work: (R, n) f32 device scratch. Returns 0 or -1 (launch failure). */
int cuda_sample(int32_t *out, const float *x, float *work, int R, int n,
                const struct cuda_sample_row *rows, const int32_t *hist, void *stream);
#ifdef __cplusplus
}
#endif

#endif
