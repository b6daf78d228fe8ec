/* attention.cu: attention in the flash style (online softmax; no score matrix in memory):
 *  - the LLM's causal GQA attention over the paged bf16 KV cache, prefill chunks and decode
 *    tokens of many sequences in one launch (descriptors and block tables in device memory);
 *  - the vision encoder's non-causal attention over cu_seqlens blocks (f32, one block of rows
 *    per frame or image).
 *
 * One CUDA block per (query row, head), up to ATT_WARPS warps (fewer for short rows). The
 * query (pre-scaled) sits in shared memory. Each warp takes tiles of 32 keys in turn (tile w,
 * w + n_warps, ...); lane i scores key base + i against the query, the warp's running maximum
 * and sum are updated (online softmax), the tile's probabilities go through shared memory, and
 * each lane accumulates the output dims lane, lane + 32, ... over the tile's V rows. At the end
 * the warps' partial states (max, sum, output) are merged through shared memory. Head dims up
 * to 32 * ATT_MAXR.
 *
 * This is the correctness-first kernel (key reads are one row per lane, not coalesced across
 * lanes); a tensor-core (wmma) version tiled over query rows is the next step for prefill. */
#include "attention.cuh"

#include "dtype.cuh"

#define ATT_WARPS 4 /* at most; fewer when the longest row has fewer keys (att_threads) */
#define ATT_MAXR 8 /* head_dim <= 256 */

/* Key j of a paged sequence: the element offset of its kv-head slice in the pool. */
struct paged_keys {
    const int32_t *pages;
    int page_size, kv_stride, head_off;
    __device__ size_t operator()(int j) const
    {
        const int p = pages[j / page_size];
        return ((size_t)p * page_size + (size_t)(j % page_size)) * kv_stride + head_off;
    }
};

/* Key j of a vision block: row r0 + j of k / v (P, H*D). */
struct block_keys {
    int64_t r0;
    int stride, head_off;
    __device__ size_t operator()(int j) const
    {
        return (size_t)(r0 + j) * stride + head_off;
    }
};

static size_t att_shmem(int D)
{
    return sizeof(float) * ((size_t)D + ATT_WARPS * 32 + (size_t)ATT_WARPS * D + 2 * ATT_WARPS);
}

/* One warp per 32 keys of the longest row, at most ATT_WARPS. */
static unsigned att_threads(int64_t max_keys)
{
    int64_t w = (max_keys + 31) / 32;
    return 32u * (unsigned)(w < 1 ? 1 : (w > ATT_WARPS ? ATT_WARPS : w));
}

static __device__ __forceinline__ float att_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ __forceinline__ float att_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* out_row[0..D) = softmax(scale q . k_j, j < n_keys) V over the keys that addr locates in K, V.
 * Called by every thread of the block (n_keys >= 1). */
template <typename T, typename Addr>
static __device__ void att_row(T *out_row, const T *q_row, const T *K, const T *V, Addr addr,
                               int n_keys, int D, float scale)
{
    VL3_DYN_SHARED(float, sh);
    float *qs = sh;                       /* D */
    float *ps = qs + D;                   /* ATT_WARPS x 32 probabilities */
    float *accs = ps + ATT_WARPS * 32;    /* ATT_WARPS x D partial outputs */
    float *ms = accs + ATT_WARPS * D;     /* ATT_WARPS maxima */
    float *ls = ms + ATT_WARPS;           /* ATT_WARPS sums */
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        qs[d] = vl3_ld(q_row, d) * scale;
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float m = -INFINITY, l = 0.f, acc[ATT_MAXR];
    for (int r = 0; r < ATT_MAXR; r++)
        acc[r] = 0.f;
    float *pw = ps + warp * 32;
    for (int base = warp * 32; base < n_keys; base += n_warps * 32) {
        const int j = base + lane;
        float s = -INFINITY;
        if (j < n_keys) {
            const size_t o = addr(j);
            float dot = 0.f;
            for (int d = 0; d < D; d++)
                dot += qs[d] * vl3_ld(K, o + d);
            s = dot;
        }
        const float m_new = fmaxf(m, att_warp_max(s)); /* finite: key `base` exists */
        const float corr = __expf(m - m_new);          /* 0 on the first tile */
        const float p = j < n_keys ? __expf(s - m_new) : 0.f;
        l = l * corr + p;
        pw[lane] = p;
        __syncwarp();
        const int nv = n_keys - base < 32 ? n_keys - base : 32;
        for (int r = 0; r < ATT_MAXR; r++)
            acc[r] *= corr;
        for (int jj = 0; jj < nv; jj++) {
            const float pj = pw[jj];
            const size_t o = addr(base + jj);
            for (int r = 0; r < ATT_MAXR; r++) {
                const int d = lane + 32 * r;
                if (d < D)
                    acc[r] += pj * vl3_ld(V, o + d);
            }
        }
        __syncwarp(); /* pw is rewritten by the next tile */
        m = m_new;
    }
    l = att_warp_sum(l);
    if (lane == 0) {
        ms[warp] = m;
        ls[warp] = l;
    }
    for (int r = 0; r < ATT_MAXR; r++) {
        const int d = lane + 32 * r;
        if (d < D)
            accs[warp * D + d] = acc[r];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < n_warps; w++)
        M = fmaxf(M, ms[w]);
    float L = 0.f;
    for (int w = 0; w < n_warps; w++)
        if (ms[w] > -INFINITY)
            L += ls[w] * __expf(ms[w] - M);
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < n_warps; w++)
            if (ms[w] > -INFINITY)
                o += accs[w * D + d] * __expf(ms[w] - M);
        vl3_st(out_row, d, o * inv);
    }
}

/* grid (query rows, heads). seqs: (n_seqs, 4) {q_row, n_q, n_past, 0}; tables (n_seqs,
 * max_pages). A row that belongs to no sequence is left alone. */
__global__ void attention_paged_kernel(vl3_bf16 *out, const vl3_bf16 *q, int q_stride,
                                       int out_stride, int H, int Hkv, int D, float scale,
                                       const vl3_bf16 *K, const vl3_bf16 *V, int page_size,
                                       const int32_t *seqs, const int32_t *tables, int max_pages,
                                       int n_seqs)
{
    const int row = blockIdx.x, h = blockIdx.y;
    int s = 0;
    while (s < n_seqs && !(row >= seqs[4 * s] && row < seqs[4 * s] + seqs[4 * s + 1]))
        s++;
    if (s == n_seqs)
        return; /* uniform over the block: no barrier is skipped by part of it */
    const int i = row - seqs[4 * s], n_keys = seqs[4 * s + 2] + i + 1;
    const int g = h / (H / Hkv);
    paged_keys addr = {tables + (size_t)s * max_pages, page_size, Hkv * D, g * D};
    att_row(out + (size_t)row * out_stride + (size_t)h * D, q + (size_t)row * q_stride +
            (size_t)h * D, K, V, addr, n_keys, D, scale);
}

extern "C" int cuda_attention_paged_bf16(void *out, const void *q, int q_stride, int out_stride,
                                         int n_heads, int n_kv_heads, int D, float scale,
                                         const void *k_pages, const void *v_pages, int page_size,
                                         const int32_t *seqs_dev, const int32_t *tables_dev,
                                         int max_pages, int n_seqs, int n_rows, int max_keys,
                                         void *stream)
{
    if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || D <= 0 ||
        D > 32 * ATT_MAXR || page_size <= 0 || max_pages <= 0)
        return -22;
    if (n_rows <= 0 || n_seqs <= 0)
        return 0;
    dim3 grid((unsigned)n_rows, (unsigned)n_heads);
    VL3_LAUNCH(attention_paged_kernel, grid, att_threads(max_keys), att_shmem(D),
               (cudaStream_t)stream,
               (vl3_bf16 *)out, (const vl3_bf16 *)q, q_stride, out_stride, n_heads, n_kv_heads,
               D, scale, (const vl3_bf16 *)k_pages, (const vl3_bf16 *)v_pages, page_size,
               seqs_dev, tables_dev, max_pages, n_seqs);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* grid (patch rows, heads); cu (n_blocks + 1) row offsets, found by binary search. */
__global__ void attention_blocks_kernel(const float *q, const float *k, const float *v,
                                        float *out, const int64_t *cu, int n_blocks, int H, int D,
                                        float scale)
{
    const int64_t row = blockIdx.x;
    const int h = blockIdx.y;
    int lo = 0, hi = n_blocks; /* the block b with cu[b] <= row < cu[b + 1] */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (cu[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    const int64_t r0 = cu[lo];
    const int n = (int)(cu[lo + 1] - r0);
    const int stride = H * D;
    block_keys addr = {r0, stride, h * D};
    att_row(out + row * stride + (size_t)h * D, q + row * stride + (size_t)h * D, k, v, addr, n, D,
            scale);
}

extern "C" int cuda_attention_blocks(const float *q, const float *k, const float *v, float *out,
                                     const int64_t *cu, const int64_t *cu_host, int n_blocks,
                                     int64_t P, int H, int D, void *stream)
{
    if (H <= 0 || D <= 0 || D > 32 * ATT_MAXR || n_blocks < 0 || P < 0 || P > 0x7fffffff)
        return -22;
    if (P == 0 || n_blocks == 0)
        return 0;
    int64_t max_keys = 0;
    for (int b = 0; b < n_blocks; b++)
        if (cu_host[b + 1] - cu_host[b] > max_keys)
            max_keys = cu_host[b + 1] - cu_host[b];
    dim3 grid((unsigned)P, (unsigned)H);
    VL3_LAUNCH(attention_blocks_kernel, grid, att_threads(max_keys), att_shmem(D),
               (cudaStream_t)stream, q, k, v, out, cu, n_blocks, H, D, 1.0f / sqrtf((float)D));
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
