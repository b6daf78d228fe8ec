/* silu_mul.cuh: host launchers of the SwiGLU kernel (f32 or bf16 rows). */
#ifndef VL3_CUDA_SILU_MUL_CUH
#define VL3_CUDA_SILU_MUL_CUH

#ifdef __cplusplus
extern "C" {
#endif
/* out[t, i] = silu(gu[t, i]) * gu[t, I + i] for t < T, i < I; gu is (T, 2*I), out (T, I).
 * Device pointers. Returns 0 or -1 (launch failure). */
int cuda_silu_mul(float *out, const float *gu, int T, int I, void *stream);
/* The same on bf16 rows (f32 arithmetic). */
int cuda_silu_mul_bf16(void *out, const void *gu, int T, int I, void *stream);
#ifdef __cplusplus
}
#endif

#endif
