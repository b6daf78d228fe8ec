/* gemm_desc.h: one description of a matrix product for the CUDA backend, shared by the cuBLASLt
 * path (gemm_cublaslt.c, in libvl3cuda.so) and a host execution path (gemm_desc.c) that follows
 * cuBLASLt's documented semantics, so layout mistakes (transposes, leading dimensions, epilogues)
 * show in CI on machines without a GPU.
 *
 * Semantics (cuBLASLt, column-major): D (m x n) = epilogue(alpha * op(A) op(B) + beta * C + bias)
 * with op(A) (m x k), op(B) (k x n); A stored column-major with leading dimension lda (lda >= rows
 * of the stored A: m when not transposed, k when transposed), likewise B; C and D share ldc. bias
 * (m) is broadcast over the columns and added before the epilogue's activation. Inputs bf16 or f32,
 * accumulation and C/D f32 or bf16 (rounded to nearest even on store), as cuBLASLt computes with
 * CUBLAS_COMPUTE_32F. */
#ifndef VL3_GEMM_DESC_H
#define VL3_GEMM_DESC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vl3__gemm_type { VL3__GEMM_F32, VL3__GEMM_BF16, VL3__GEMM_TYPE_COUNT };

enum vl3__gemm_epilogue {
    VL3__GEMM_EPI_NONE,      /* CUBLASLT_EPILOGUE_DEFAULT */
    VL3__GEMM_EPI_BIAS,      /* CUBLASLT_EPILOGUE_BIAS */
    VL3__GEMM_EPI_GELU,      /* CUBLASLT_EPILOGUE_GELU (tanh approximation) */
    VL3__GEMM_EPI_GELU_BIAS, /* CUBLASLT_EPILOGUE_GELU_BIAS */
    VL3__GEMM_EPI_COUNT
};

struct vl3__gemm_desc {
    int m, n, k;
    int trans_a, trans_b;   /* 1 = op(X) = X^T */
    int lda, ldb, ldc;
    enum vl3__gemm_type a_type, b_type, c_type; /* c_type is the type of C and D */
    enum vl3__gemm_epilogue epilogue;
    float alpha, beta;
};

/* The descriptor of the model's linear layer in row-major terms: y (T, out) = x (T, in) W^T
 * (+ b) (+ y when accumulate), W (out, in) row-major as checkpoints store it. In column-major
 * terms y^T = W x^T: m = out, n = T, k = in, A = W with op T (lda = in), B = x (ldb = in),
 * D = y (ldc = out). Returns 0 or -EINVAL. */
int vl3__gemm_plan_linear(struct vl3__gemm_desc *d, int T, int in, int out, int accumulate,
                          enum vl3__gemm_epilogue epi, enum vl3__gemm_type w_type,
                          enum vl3__gemm_type x_type, enum vl3__gemm_type y_type);

/* Check a descriptor (positive sizes, leading dimensions large enough). Returns 0 or -EINVAL. */
int vl3__gemm_check(const struct vl3__gemm_desc *d);

/* Run d on the host: D = epilogue(alpha op(A) op(B) + beta C + bias) with D written over C
 * (cuBLASLt's in-place use, C == D). bias (m) f32 or NULL when the epilogue has none.
 * Returns 0 or -EINVAL. */
int vl3__gemm_host(const struct vl3__gemm_desc *d, const void *A, const void *B, void *C,
                   const float *bias);

/* The tanh GELU of cuBLASLt's epilogue and of the vision MLP (gelu_pytorch_tanh). */
float vl3__gemm_gelu_tanh(float x);

#ifdef __cplusplus
}
#endif

#endif
