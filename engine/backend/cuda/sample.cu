/* sample.cu: sampling on the device, one block per logits row, with the semantics of the CPU
 * reference (vl3__sample_ref, engine/src/sampler.c; backend.h's struct vl3__sample_row):
 *  1. w = the row with the repetition penalty on its history ids, divided by the temperature
 *     (the same f32 operations as the reference, so w is bit-identical); max of w;
 *  2. top-k: the k-th largest w by radix selection over the order-preserving 32-bit keys of w
 *     (four 8-bit passes; counts in per-warp shared histograms);
 *  3. masses e = exp(w - max) as 2^40 fixed-point integers, so every sum is exact and
 *     independent of the order threads add in (deterministic on a GPU);
 *  4. top-p: radix selection by mass from the smallest key up: the first key whose cumulative
 *     mass exceeds (1 - top_p) * sum is the smallest kept (the reference drops the tail whose
 *     cumulative probability is <= 1 - top_p);
 *  5. draw: t = u * sum; radix selection by mass from the largest key down finds the value
 *     whose cumulative mass passes t, then the lowest id with that value (among equal values the
 *     residual picks the j-th id in ascending order, as the reference's order does).
 * A row whose maximum is -inf (nothing has mass) answers the first maximum, as the reference
 * does. Results differ from the reference only where its double/f32 sums and these exact ones
 * put a boundary on different sides of t or of the top-p threshold (rounding), or where values
 * tie at the top-k / top-p cut (all tied values are kept here). */
#include "sample.cuh"

#include "cuda_common.cuh"

#define SAMPLE_THREADS 512 /* at most 16 warps: the per-warp histograms */
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define RADIX_BINS 256
#define MASS_ONE 1099511627776.0f /* 2^40: e = 1 (the maximum) */

typedef unsigned long long u64;

/* Order-preserving key of a float (larger float, larger key; -0 < +0). */
static __device__ __forceinline__ unsigned f2key(float f)
{
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float key2f(unsigned k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

static __device__ __forceinline__ u64 mass(float w, float mx)
{
    return (u64)(expf(w - mx) * MASS_ONE);
}

struct sample_shared {
    u64 hist[SAMPLE_WARPS][RADIX_BINS];
    u64 t, sum;
    unsigned prefix, key;
    int idx;
};

/* Which element weights the selection: what the key of element i is, and its weight. */
enum sel_mode {
    SEL_COUNT_DESC, /* key ~f2key(w) (largest first), weight 1: top-k */
    SEL_MASS_ASC,   /* key f2key(w) (smallest first), weight e: top-p */
    SEL_MASS_DESC,  /* key ~f2key(w), weight e: the draw */
    SEL_INDEX_EQ,   /* key i, weight 1 where f2key(w) == eq: the j-th id of a tied value */
};

/* Radix selection over the row's candidates (f2key(w) >= lo): the key K, in the mode's key
 * order, with W(key < K) <= t < W(key <= K) (W: the summed weight; t < the candidates' total).
 * Returns K; *ret_rest = t - W(key < K). Called by every thread of the block. */
static __device__ unsigned radix_select(enum sel_mode mode, const float *w, int n, float mx,
                                        unsigned lo, unsigned eq, u64 t, u64 *ret_rest,
                                        struct sample_shared *sh)
{
    const int warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    unsigned prefix = 0;
    if (threadIdx.x == 0)
        sh->t = t;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < n_warps * RADIX_BINS; b += blockDim.x)
            sh->hist[b / RADIX_BINS][b % RADIX_BINS] = 0;
        __syncthreads();
        const unsigned hmask = shift == 24 ? 0u : ~((1u << (shift + 8)) - 1u);
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = w[i];
            const unsigned fk = f2key(v);
            if (fk < lo)
                continue;
            unsigned key;
            u64 wt = 1;
            switch (mode) {
            case SEL_COUNT_DESC:
                key = ~fk;
                break;
            case SEL_MASS_ASC:
                key = fk;
                wt = mass(v, mx);
                break;
            case SEL_MASS_DESC:
                key = ~fk;
                wt = mass(v, mx);
                break;
            default:
                if (fk != eq)
                    continue;
                key = (unsigned)i;
                break;
            }
            if (wt && (key & hmask) == prefix)
                atomicAdd(&sh->hist[warp][(key >> shift) & (RADIX_BINS - 1)], wt);
        }
        __syncthreads();
        for (int b = threadIdx.x; b < RADIX_BINS; b += blockDim.x)
            for (int k = 1; k < n_warps; k++)
                sh->hist[0][b] += sh->hist[k][b];
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 acc = 0, tt = sh->t;
            int b = 0;
            for (; b < RADIX_BINS - 1; b++) {
                if (acc + sh->hist[0][b] > tt)
                    break;
                acc += sh->hist[0][b];
            }
            sh->t = tt - acc;
            sh->prefix = prefix | ((unsigned)b << shift);
        }
        __syncthreads();
        prefix = sh->prefix;
    }
    *ret_rest = sh->t;
    __syncthreads(); /* sh->t and sh->prefix are free again */
    return prefix;
}

/* The candidates' total mass (f2key(w) >= lo), exact. */
static __device__ u64 mass_sum(const float *w, int n, float mx, unsigned lo,
                               struct sample_shared *sh)
{
    if (threadIdx.x == 0)
        sh->sum = 0;
    __syncthreads();
    u64 s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (f2key(w[i]) >= lo)
            s += mass(w[i], mx);
    atomicAdd(&sh->sum, s);
    __syncthreads();
    s = sh->sum;
    __syncthreads();
    return s;
}

/* The lowest i with f2key(w[i]) == key (n if none). */
static __device__ int first_with_key(const float *w, int n, unsigned key,
                                     struct sample_shared *sh)
{
    if (threadIdx.x == 0)
        sh->idx = n;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (f2key(w[i]) == key) {
            atomicMin(&sh->idx, i);
            break; /* this thread's later i are larger */
        }
    __syncthreads();
    const int r = sh->idx;
    __syncthreads();
    return r;
}

__global__ void sample_kernel(int32_t *out, const float *x, float *work, int n,
                              const struct cuda_sample_row *rows, const int32_t *hist)
{
    __shared__ struct sample_shared sh;
    const struct cuda_sample_row p = rows[blockIdx.x];
    const float *xr = x + (size_t)blockIdx.x * n;
    float *w = work + (size_t)blockIdx.x * n;

    /* 1. penalty, temperature, maximum */
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        w[i] = xr[i];
    __syncthreads();
    if (p.repetition_penalty != 1.0f)
        for (int j = threadIdx.x; j < p.n_hist; j += blockDim.x) { /* distinct ids: no races */
            const int id = hist[p.hist_off + j];
            const float v = w[id];
            w[id] = v > 0 ? v / p.repetition_penalty : v * p.repetition_penalty;
        }
    if (threadIdx.x == 0)
        sh.key = 0;
    __syncthreads();
    unsigned mk = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = w[i];
        if (p.temperature != 1.0f)
            w[i] = v = v / p.temperature;
        const unsigned k = f2key(v);
        mk = k > mk ? k : mk;
    }
    atomicMax(&sh.key, mk);
    __syncthreads();
    const unsigned max_key = sh.key;
    __syncthreads();
    const float mx = key2f(max_key);
    if (mx == -INFINITY) { /* no candidate has mass: the first maximum, as the reference */
        const int i = first_with_key(w, n, max_key, &sh);
        if (threadIdx.x == 0)
            out[blockIdx.x] = i < n ? i : 0;
        return;
    }

    /* 2. top-k: candidates are the keys >= the k-th largest */
    unsigned lo = 0;
    u64 rest;
    if (p.top_k > 0 && p.top_k < n)
        lo = ~radix_select(SEL_COUNT_DESC, w, n, mx, 0, 0, (u64)(p.top_k - 1), &rest, &sh);

    /* 3, 4. masses; top-p raises lo to the smallest key whose cumulative mass from below
     * exceeds (1 - top_p) of the total */
    u64 z = mass_sum(w, n, mx, lo, &sh);
    if (p.top_p < 1.0f) {
        const float thr = 1.0f - p.top_p;
        u64 t = (u64)((double)thr * (double)z);
        if (t >= z)
            t = z - 1;
        const unsigned kp = radix_select(SEL_MASS_ASC, w, n, mx, lo, 0, t, &rest, &sh);
        lo = kp > lo ? kp : lo;
        z = mass_sum(w, n, mx, lo, &sh);
    }

    /* 5. the draw: the value whose cumulative mass from the top passes u * z, then the id */
    u64 t = (u64)(p.u * (double)z);
    if (t >= z)
        t = z - 1;
    const unsigned vk = ~radix_select(SEL_MASS_DESC, w, n, mx, lo, 0, t, &rest, &sh);
    const u64 ev = mass(key2f(vk), mx);
    const u64 j = ev ? rest / ev : 0;
    int id;
    if (j == 0) {
        id = first_with_key(w, n, vk, &sh);
    } else { /* the j-th lowest id among those tied at the drawn value */
        u64 r2;
        id = (int)radix_select(SEL_INDEX_EQ, w, n, mx, lo, vk, j, &r2, &sh);
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = id < n ? id : 0;
}

extern "C" int cuda_sample(int32_t *out, const float *x, float *work, int R, int n,
                           const struct cuda_sample_row *rows, const int32_t *hist, void *stream)
{
    if (R <= 0 || n <= 0)
        return 0;
    VL3_LAUNCH(sample_kernel, R, vl3__cuda_threads(n, SAMPLE_THREADS), 0, (cudaStream_t)stream,
               out, x, work, n, rows, hist);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
