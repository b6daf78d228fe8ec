/* elementwise.cu: the small kernels of the CUDA backend: residual add (bf16 LLM rows, f32 vision
 * rows), embedding gather from the bf16 table, the visual-row scatter (f32 rows converted into
 * bf16 activations), kv_store into the paged pools, strided row copies, the tanh and erf GELUs
 * and the 2x2 spatial downsample of the vision encoder, and the f32 -> bf16 rounding of the
 * vision activations before a product with bf16 matrices. Element-wise kernels use grid-stride
 * loops over at most ELT_MAX_BLOCKS blocks of ELT_THREADS threads. */
#include "elementwise.cuh"

#include "dtype.cuh"

#define ELT_THREADS 256
#define ELT_MAX_BLOCKS 4096

static unsigned elt_blocks(int64_t n)
{
    int64_t b = (n + ELT_THREADS - 1) / ELT_THREADS;
    return (unsigned)(b < ELT_MAX_BLOCKS ? (b > 0 ? b : 1) : ELT_MAX_BLOCKS);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

#define LAUNCH_OK() (cudaGetLastError() == cudaSuccess ? 0 : -1)

template <typename T> __global__ void add_kernel(T *y, const T *a, const T *b, int64_t n)
{
    GRID_STRIDE(i, n)
    vl3_st(y, i, vl3_ld(a, i) + vl3_ld(b, i));
}

extern "C" int cuda_add_bf16(void *y, const void *a, const void *b, int64_t n, void *stream)
{
    if (n <= 0)
        return 0;
    VL3_LAUNCH(add_kernel<vl3_bf16>, elt_blocks(n), ELT_THREADS, 0, (cudaStream_t)stream,
               (vl3_bf16 *)y, (const vl3_bf16 *)a, (const vl3_bf16 *)b, n);
    return LAUNCH_OK();
}

extern "C" int cuda_add_f32(float *y, const float *a, const float *b, int64_t n, void *stream)
{
    if (n <= 0)
        return 0;
    VL3_LAUNCH(add_kernel<float>, elt_blocks(n), ELT_THREADS, 0, (cudaStream_t)stream, y, a, b,
               n);
    return LAUNCH_OK();
}

__global__ void f32_to_bf16_kernel(vl3_bf16 *y, const float *x, int64_t n)
{
    GRID_STRIDE(i, n)
    vl3_st(y, i, x[i]);
}

extern "C" int cuda_f32_to_bf16(void *y, const float *x, int64_t n, void *stream)
{
    if (n <= 0)
        return 0;
    VL3_LAUNCH(f32_to_bf16_kernel, elt_blocks(n), ELT_THREADS, 0, (cudaStream_t)stream,
               (vl3_bf16 *)y, x, n);
    return LAUNCH_OK();
}

/* One block row per token (blockIdx.y), columns over blockIdx.x tiles. */
template <typename T>
__global__ void embed_kernel(T *out, const vl3_bf16 *table, const int32_t *ids, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    const size_t t = blockIdx.y;
    vl3_st(out, t * C + c, vl3_ld(table, (size_t)ids[t] * C + c));
}

extern "C" int cuda_embed_bf16(void *out, const void *table, const int32_t *ids, int T, int C,
                               void *stream)
{
    if (T <= 0 || C <= 0)
        return 0;
    const unsigned nt = vl3__cuda_threads(C, ELT_THREADS);
    dim3 grid((unsigned)(C + nt - 1) / nt, (unsigned)T);
    VL3_LAUNCH(embed_kernel<vl3_bf16>, grid, nt, 0, (cudaStream_t)stream,
               (vl3_bf16 *)out, (const vl3_bf16 *)table, ids, C);
    return LAUNCH_OK();
}

__global__ void scatter_rows_kernel(vl3_bf16 *dst, const float *src, const int32_t *idx, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    const size_t j = blockIdx.y;
    vl3_st(dst, (size_t)idx[j] * C + c, src[j * C + c]);
}

extern "C" int cuda_scatter_rows_bf16(void *dst, const float *src, const int32_t *idx, int n,
                                      int C, void *stream)
{
    if (n <= 0 || C <= 0)
        return 0;
    const unsigned nt = vl3__cuda_threads(C, ELT_THREADS);
    dim3 grid((unsigned)(C + nt - 1) / nt, (unsigned)n);
    VL3_LAUNCH(scatter_rows_kernel, grid, nt, 0, (cudaStream_t)stream, (vl3_bf16 *)dst,
               src, idx, C);
    return LAUNCH_OK();
}

/* One block per token: its k and v slices go to pool row slots[t]. */
template <typename T>
__global__ void kv_store_kernel(T *K, T *V, const T *qkv, int qkv_stride, int k_off, int v_off,
                                int kv_dim, const int32_t *slots)
{
    const T *row = qkv + (size_t)blockIdx.x * qkv_stride;
    const size_t dst = (size_t)slots[blockIdx.x] * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        K[dst + i] = row[k_off + i];
        V[dst + i] = row[v_off + i];
    }
}

extern "C" int cuda_kv_store_bf16(void *k_pages, void *v_pages, const void *qkv, int qkv_stride,
                                  int k_off, int v_off, int kv_dim, const int32_t *slots, int T,
                                  void *stream)
{
    if (T <= 0 || kv_dim <= 0)
        return 0;
    VL3_LAUNCH(kv_store_kernel<vl3_bf16>, (unsigned)T, vl3__cuda_threads(kv_dim, 128), 0,
               (cudaStream_t)stream,
               (vl3_bf16 *)k_pages, (vl3_bf16 *)v_pages, (const vl3_bf16 *)qkv, qkv_stride,
               k_off, v_off, kv_dim, slots);
    return LAUNCH_OK();
}

/* One block per row; 4-byte words when pointers, strides and length allow, else bytes. */
template <typename W>
__global__ void copy_rows_kernel(char *dst, size_t dst_stride, const char *src, size_t src_stride,
                                 size_t n_words)
{
    W *d = (W *)(dst + (size_t)blockIdx.x * dst_stride);
    const W *s = (const W *)(src + (size_t)blockIdx.x * src_stride);
    for (size_t i = threadIdx.x; i < n_words; i += blockDim.x)
        d[i] = s[i];
}

extern "C" int cuda_copy_rows(void *dst, size_t dst_stride, const void *src, size_t src_stride,
                              int n_rows, size_t row_bytes, void *stream)
{
    if (n_rows <= 0 || row_bytes == 0)
        return 0;
    uintptr_t a = (uintptr_t)dst | (uintptr_t)src | dst_stride | src_stride | row_bytes;
    if (a % 4 == 0)
        VL3_LAUNCH(copy_rows_kernel<uint32_t>, (unsigned)n_rows,
                   vl3__cuda_threads((long long)(row_bytes / 4), 256), 0, (cudaStream_t)stream,
                   (char *)dst, dst_stride, (const char *)src, src_stride, row_bytes / 4);
    else
        VL3_LAUNCH(copy_rows_kernel<unsigned char>, (unsigned)n_rows,
                   vl3__cuda_threads((long long)row_bytes, 256), 0,
                   (cudaStream_t)stream, (char *)dst, dst_stride, (const char *)src, src_stride,
                   row_bytes);
    return LAUNCH_OK();
}

__global__ void gelu_tanh_kernel(float *x, int64_t n)
{
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    GRID_STRIDE(i, n)
    {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
}

__global__ void gelu_erf_kernel(float *x, int64_t n)
{
    GRID_STRIDE(i, n)
    x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

extern "C" int cuda_gelu(float *x, int64_t n, int erf_form, void *stream)
{
    if (n <= 0)
        return 0;
    if (erf_form)
        VL3_LAUNCH(gelu_erf_kernel, elt_blocks(n), ELT_THREADS, 0, (cudaStream_t)stream, x, n);
    else
        VL3_LAUNCH(gelu_tanh_kernel, elt_blocks(n), ELT_THREADS, 0, (cudaStream_t)stream, x, n);
    return LAUNCH_OK();
}

/* Output row t averages input rows 4t..4t+3 (one merge block in merge-block order), summed in
 * the CPU op's order. */
__global__ void downsample2_kernel(const float *x, float *y, int64_t n_out, int C)
{
    GRID_STRIDE(i, n_out * C)
    {
        const int64_t t = i / C, c = i - t * C;
        const float *a = x + t * 4 * C + c;
        y[i] = ((a[0] + a[C]) + (a[2 * (int64_t)C] + a[3 * (int64_t)C])) * 0.25f;
    }
}

extern "C" int cuda_downsample(const float *x, float *y, int gh, int gw, int m, int C,
                               void *stream)
{
    if (gh <= 0 || gw <= 0 || C <= 0)
        return 0;
    if (m == 1)
        return cuda_copy_rows(y, 0, x, 0, 1, sizeof(float) * (size_t)gh * gw * C, stream);
    if (m != 2 || gh % 2 || gw % 2)
        return -22;
    int64_t n_out = (int64_t)(gh / 2) * (gw / 2);
    VL3_LAUNCH(downsample2_kernel, elt_blocks(n_out * C), ELT_THREADS, 0, (cudaStream_t)stream,
               x, y, n_out, C);
    return LAUNCH_OK();
}
