/* gemm_cublaslt.c: the device path of struct vl3__gemm_desc (gemm_desc.h) on cuBLASLt, inside
 * libvl3cuda.so only. Every product of the CUDA backend goes through vl3__lt_matmul: the
 * descriptor (column-major layouts, transposes, leading dimensions, epilogue) is the one the host
 * path in gemm_desc.c executes in CI, so only the mapping below is GPU-only code.
 *
 * Mapping: compute type CUBLAS_COMPUTE_32F (f32 accumulation), scale type f32; A, B, C/D layouts
 * from the descriptor's types and leading dimensions; epilogues BIAS / GELU / GELU_BIAS with an
 * f32 bias vector (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE). The first heuristic answer is used with
 * the context's workspace. Errors become VL3_E_CUDA with cuBLASLt's status name. */
#include <cublasLt.h>
#include <stdlib.h>

#include "gemm_desc.h"
#include "vl3/err.h"

struct vl3__lt {
    cublasLtHandle_t h;
    void *workspace; /* device */
    size_t ws_bytes;
};

int vl3__lt_new(size_t ws_bytes, struct vl3__lt **ret, vl3_error *reterr);
void vl3__lt_free(struct vl3__lt *lt);
int vl3__lt_matmul(struct vl3__lt *lt, const struct vl3__gemm_desc *d, const void *A,
                   const void *B, void *C, const float *bias, cudaStream_t stream,
                   vl3_error *reterr);

/* cublasGetStatusName lives in libcublas, which this module does not link (cuBLASLt only): the
 * names of the statuses cuBLASLt returns. */
static const char *lt_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

#define LT_TRY(expr)                                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (expr);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            rc = vl3_error_set(reterr, VL3_E_CUDA, "%s failed: %s", #expr,                         \
                               lt_status_name(s_));                                           \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static cudaDataType_t lt_type(enum vl3__gemm_type t)
{
    return t == VL3__GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static cublasLtEpilogue_t lt_epilogue(enum vl3__gemm_epilogue e)
{
    switch (e) {
    case VL3__GEMM_EPI_BIAS:
        return CUBLASLT_EPILOGUE_BIAS;
    case VL3__GEMM_EPI_GELU:
        return CUBLASLT_EPILOGUE_GELU;
    case VL3__GEMM_EPI_GELU_BIAS:
        return CUBLASLT_EPILOGUE_GELU_BIAS;
    default:
        return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

int vl3__lt_new(size_t ws_bytes, struct vl3__lt **ret, vl3_error *reterr)
{
    int rc = 0;
    struct vl3__lt *lt = calloc(1, sizeof(*lt));
    if (!lt)
        return vl3_error_set(reterr, -12 /* ENOMEM */, "out of memory");
    LT_TRY(cublasLtCreate(&lt->h));
    if (ws_bytes && cudaMalloc(&lt->workspace, ws_bytes) != cudaSuccess) {
        rc = vl3_error_set(reterr, VL3_E_CUDA, "could not allocate the cuBLASLt workspace of "
                           "%zu bytes", ws_bytes);
        goto out;
    }
    lt->ws_bytes = ws_bytes;
    *ret = lt;
    return 0;
out:
    vl3__lt_free(lt);
    return rc;
}

void vl3__lt_free(struct vl3__lt *lt)
{
    if (!lt)
        return;
    if (lt->workspace)
        (void)cudaFree(lt->workspace);
    if (lt->h)
        (void)cublasLtDestroy(lt->h);
    free(lt);
}

int vl3__lt_matmul(struct vl3__lt *lt, const struct vl3__gemm_desc *d, const void *A,
                   const void *B, void *C, const float *bias, cudaStream_t stream,
                   vl3_error *reterr)
{
    if (vl3__gemm_check(d) < 0)
        return vl3_error_set(reterr, -22 /* EINVAL */, "invalid matrix product descriptor");
    int rc = 0;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t ta = d->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = d->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = lt_epilogue(d->epilogue);
    LT_TRY(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (d->epilogue == VL3__GEMM_EPI_BIAS || d->epilogue == VL3__GEMM_EPI_GELU_BIAS) {
        cudaDataType_t bt = CUDA_R_32F;
        LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof(bias)));
        LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                              sizeof(bt)));
    }
    /* stored shapes: A is (m x k) or, transposed, (k x m); B (k x n) or (n x k) */
    LT_TRY(cublasLtMatrixLayoutCreate(&la, lt_type(d->a_type), d->trans_a ? d->k : d->m,
                                      d->trans_a ? d->m : d->k, d->lda));
    LT_TRY(cublasLtMatrixLayoutCreate(&lb, lt_type(d->b_type), d->trans_b ? d->n : d->k,
                                      d->trans_b ? d->k : d->n, d->ldb));
    LT_TRY(cublasLtMatrixLayoutCreate(&lc, lt_type(d->c_type), d->m, d->n, d->ldc));
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &lt->ws_bytes, sizeof(lt->ws_bytes)));
    cublasLtMatmulHeuristicResult_t heur;
    int n_found = 0;
    LT_TRY(cublasLtMatmulAlgoGetHeuristic(lt->h, op, la, lb, lc, lc, pref, 1, &heur, &n_found));
    if (n_found < 1) {
        rc = vl3_error_set(reterr, VL3_E_UNSUPPORTED, "cuBLASLt has no algorithm for a %dx%dx%d "
                           "product with epilogue %d", d->m, d->n, d->k, (int)d->epilogue);
        goto out;
    }
    LT_TRY(cublasLtMatmul(lt->h, op, &d->alpha, A, la, B, lb, &d->beta, C, lc, C, lc,
                          &heur.algo, lt->workspace, lt->ws_bytes, stream));
out:
    if (pref)
        (void)cublasLtMatmulPreferenceDestroy(pref);
    if (lc)
        (void)cublasLtMatrixLayoutDestroy(lc);
    if (lb)
        (void)cublasLtMatrixLayoutDestroy(lb);
    if (la)
        (void)cublasLtMatrixLayoutDestroy(la);
    if (op)
        (void)cublasLtMatmulDescDestroy(op);
    return rc;
}
